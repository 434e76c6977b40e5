//! Discovery rounds on the network: ask every target at once, hand the answers (each with
//! the address asked) to [`Discovery::decide`](crate::discovery::Discovery::decide), repeat
//! until it says what to do or the join timeout passes. The founding rule itself lives in
//! [`discovery`](crate::discovery); this file only does the asking and the waiting.
//!
//! ```text
//! run ─► Discovery::new(me, electorate) ─► loop every `interval`:
//!          ask_all(targets, each bounded by `limit` and the deadline) ─► Vec<Heard>
//!          ─► decide ─► Join ─► Found::Cluster | Found ─► Found::Nothing | Wait(reason)
//!        deadline ─► Failure::Unfounded(the last founding reason), else Silence(last error)
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use cohort_transport::{MemberId, QueryError, View};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::discovery::{Decision, Discovery, Heard, NoFounding};
use crate::messages::FindCoordinator;
use cohort_transport::Messenger;

/// Why discovery found nothing to join.
pub(super) enum Failure {
    /// Nobody answered with a cluster: the last failure seen, if any.
    Silence(Option<String>),
    /// A locator heard of no cluster and could not justify founding one.
    Unfounded(NoFounding),
    /// A member refused this member's protocol for good.
    Refused { by: SocketAddr, reason: String },
}

/// What discovery found.
pub(super) enum Found {
    /// A cluster: join through this coordinator.
    Cluster(MemberId),
    /// No cluster, and this locator is the one to found it.
    Nothing,
}

/// Whom to ask: the configured locators, then the members of a persisted view (a restarted
/// locator finds the cluster through them when no other locator is up), never this member.
pub(super) fn targets(
    locators: &[SocketAddr],
    persisted: Option<&View>,
    me: &MemberId,
) -> Vec<SocketAddr> {
    let mut targets: Vec<SocketAddr> = Vec::new();
    let remembered = persisted
        .into_iter()
        .flat_map(|v| v.members().iter().map(MemberId::address));
    for address in locators.iter().copied().chain(remembered) {
        if address != me.address() && !targets.contains(&address) {
            targets.push(address);
        }
    }
    targets
}

/// Asks `targets` every `interval` (each query bounded by `limit`) until a decision or
/// `deadline`; `locators` (as configured) are the electorate whose answers count towards
/// founding. A refusal ends it at once: a member that refuses this protocol for good will
/// not change its mind.
pub(super) async fn run(
    messenger: &Messenger,
    me: &MemberId,
    locators: &[SocketAddr],
    targets: &[SocketAddr],
    (interval, limit): (Duration, Duration),
    deadline: Instant,
) -> Result<Found, Failure> {
    let mut discovery = Discovery::new(me.clone(), locators);
    let mut last_error = None;
    let mut unfounded: Option<NoFounding> = None;
    loop {
        let started = Instant::now();
        let heard = ask_all(messenger, me, targets, (limit, deadline), &mut last_error).await?;
        match discovery.decide(&heard) {
            Decision::Join { coordinator } => return Ok(Found::Cluster(coordinator)),
            Decision::Found => return Ok(Found::Nothing),
            Decision::Wait(reason) => {
                if let Some(reason) = &reason
                    && unfounded.as_ref() != Some(reason)
                {
                    tracing::info!(%reason, "not founding the cluster (yet)");
                }
                unfounded = reason.or(unfounded);
            }
        }
        let next = started + interval;
        if next >= deadline {
            break;
        }
        tokio::time::sleep_until(next).await;
    }
    // Why no cluster was founded says more than the last network error: the operator's
    // remedy is to start more locators, not to look for a broken link.
    Err(match unfounded {
        Some(reason) => Failure::Unfounded(reason),
        None => Failure::Silence(last_error),
    })
}

async fn ask_all(
    messenger: &Messenger,
    me: &MemberId,
    targets: &[SocketAddr],
    (limit, deadline): (Duration, Instant),
    last_error: &mut Option<String>,
) -> Result<Vec<Heard>, Failure> {
    let mut asking = JoinSet::new();
    for &address in targets {
        let messenger = messenger.clone();
        let query = FindCoordinator { asker: me.clone() };
        asking.spawn(async move {
            let answer =
                tokio::time::timeout_at(deadline, messenger.query_within(address, &query, limit))
                    .await;
            (address, answer)
        });
    }
    let mut heard = Vec::new();
    while let Some(joined) = asking.join_next().await {
        match joined {
            Ok((asked, Ok(Ok(answer)))) => heard.push(Heard { asked, answer }),
            Ok((_, Ok(Err(QueryError::Refused { address, reason })))) => {
                return Err(Failure::Refused {
                    by: address,
                    reason,
                });
            }
            Ok((address, Ok(Err(error)))) => {
                tracing::debug!(%address, %error, "discovery query failed");
                *last_error = Some(error.to_string());
            }
            Ok((address, Err(_))) => {
                *last_error = Some(format!("no answer from {address} before the join timeout"));
            }
            Err(error) => *last_error = Some(error.to_string()),
        }
    }
    Ok(heard)
}
