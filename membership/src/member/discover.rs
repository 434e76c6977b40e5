//! Discovery rounds on the network: ask every target at once, let
//! [`discovery::decide`](crate::discovery::decide) judge the answers, repeat until it says
//! what to do or the join timeout passes.

use std::net::SocketAddr;
use std::time::Duration;

use cohort_transport::{MemberId, QueryError, View};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::transport::Transport;
use crate::discovery::{Decision, decide};
use crate::messages::{DiscoveryAnswer, FindCoordinator};

/// Why discovery found nothing to join.
pub(super) enum Failure {
    /// Nobody answered with a cluster: the last failure seen, if any.
    Silence(Option<String>),
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
/// `deadline`. A refusal ends it at once: a member that refuses this protocol for good
/// will not change its mind.
pub(super) async fn run(
    messenger: &Transport,
    me: &MemberId,
    targets: &[SocketAddr],
    (interval, limit): (Duration, Duration),
    deadline: Instant,
) -> Result<Found, Failure> {
    let mut last_error = None;
    for round in 0u32.. {
        let started = Instant::now();
        let answers = ask_all(messenger, me, targets, (limit, deadline), &mut last_error).await?;
        match decide(me, round, &answers) {
            Decision::Join { coordinator } => return Ok(Found::Cluster(coordinator)),
            Decision::Found => return Ok(Found::Nothing),
            Decision::Wait => {}
        }
        let next = started + interval;
        if next >= deadline {
            break;
        }
        tokio::time::sleep_until(next).await;
    }
    Err(Failure::Silence(last_error))
}

async fn ask_all(
    messenger: &Transport,
    me: &MemberId,
    targets: &[SocketAddr],
    (limit, deadline): (Duration, Instant),
    last_error: &mut Option<String>,
) -> Result<Vec<DiscoveryAnswer>, Failure> {
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
    let mut answers = Vec::new();
    while let Some(joined) = asking.join_next().await {
        match joined {
            Ok((_, Ok(Ok(answer)))) => answers.push(answer),
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
    Ok(answers)
}
