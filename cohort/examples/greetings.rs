//! A locator greets every newcomer the moment it sees it in its view, written from the
//! `cohort` crate docs alone: `cargo run -p cohort --example greetings [ROUNDS]`.
//!
//! ```text
//! locator ── watches its view ──► a newcomer appears ──► send Greeting (High) at once
//! newcomer: Member::builder ─► subscribe::<Greeting> ─► start ─► recv ─► leave
//! ```
//!
//! Each round starts two members, which subscribe on their builders before they join,
//! waits for both greetings and makes both leave; the default of 50 rounds is 100
//! greetings. Then it checks the two ways a message could be lost without a word: a
//! message under a tag nobody subscribed to (the sender must hear of it), and a first
//! datagram to a member (delivered, or the outcome says it was not sent).

use std::collections::HashSet;
use std::error::Error;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use cohort::certs::{CertificateAuthority, MemberRequest};
use cohort::{
    Member, MemberConfig, MemberId, MemberKind, MembershipEvent, Message, Priority, Tag,
    TlsSettings,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// What the locator says to a newcomer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Greeting {
    /// The newcomer's name.
    pub(crate) to: String,
}

impl Message for Greeting {
    const TAG: Tag = Tag::from_name("examples/greetings/greeting");
}

/// A type the members never subscribe to.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Unheard;

impl Message for Unheard {
    const TAG: Tag = Tag::from_name("examples/greetings/unheard");
}

/// How long any one step may take before the run fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// What a run saw.
#[derive(Debug)]
pub(crate) struct Report {
    /// Newcomers started.
    pub(crate) newcomers: usize,
    /// Greetings the newcomers received.
    pub(crate) greeted: usize,
    /// The tag the sender was told nobody took, and by whom.
    pub(crate) undelivered: (MemberId, Tag),
    /// The first datagram: `true` if received, `false` if its outcome said not sent.
    pub(crate) datagram_received: bool,
}

/// Runs `rounds` rounds of two newcomers each, then the two checks.
pub(crate) async fn run(rounds: usize) -> Result<Report, Box<dyn Error>> {
    let ca = CertificateAuthority::ephemeral()?;
    let tls = |name: &str| -> Result<TlsSettings, Box<dyn Error>> {
        let request =
            MemberRequest::new(name, Duration::from_secs(3600)).ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let issued = ca.issue(&request)?;
        Ok(TlsSettings::from_pem(
            ca.certificate_pem(),
            issued.certificate_pem,
            issued.private_key_pem,
        ))
    };

    let mut config = MemberConfig::new(tls("locator")?);
    config.identity.name = "locator".into();
    config.identity.kind = MemberKind::Locator;
    let locator = Member::start(config).await?;
    let greeter = tokio::spawn(greet_newcomers(locator.clone()));

    let mut greeted = 0;
    let mut newcomers = 0;
    for round in 0..rounds {
        let mut members = Vec::new();
        for n in 0..2 {
            let name = format!("member-{round}-{n}");
            let mut config = MemberConfig::new(tls(&name)?);
            config.identity.name = name.clone();
            config.locators = vec![locator.address()];
            let mut builder = Member::builder(config);
            let greetings = builder.subscribe::<Greeting>()?;
            members.push((name, greetings, builder.start().await?));
            newcomers += 1;
        }
        for (name, greetings, _) in &mut members {
            let greeting = tokio::time::timeout(PATIENCE, greetings.recv())
                .await
                .map_err(|_| format!("{name} heard no greeting"))?
                .ok_or("the subscription ended")?;
            if greeting.message.to == *name {
                greeted += 1;
            }
        }
        for (name, _, member) in members {
            if !member.leave().await {
                return Err(format!("{name}'s leave was not confirmed in time").into());
            }
        }
    }
    greeter.abort();

    // Two members that subscribe to nothing of Unheard's.
    let mut config = MemberConfig::new(tls("quiet")?);
    config.identity.name = "quiet".into();
    config.locators = vec![locator.address()];
    let mut builder = Member::builder(config);
    let mut datagrams = builder.subscribe::<Greeting>()?;
    let quiet = builder.start().await?;

    let mut events = locator.events();
    let outcome = locator.send(&Unheard, Priority::Normal, std::slice::from_ref(quiet.id()))?;
    if !outcome.is_complete() {
        return Err(format!("the unheard message was not queued: {outcome:?}").into());
    }
    let undelivered = tokio::time::timeout(PATIENCE, async {
        loop {
            match events.recv().await {
                Ok(MembershipEvent::Undelivered { member, tag, .. }) => return Ok((member, tag)),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Err("events ended"),
            }
        }
    })
    .await
    .map_err(|_| "the sender never heard that nobody took its message")??;

    // A first datagram from a member that has no connection to `quiet` yet.
    let mut config = MemberConfig::new(tls("late")?);
    config.identity.name = "late".into();
    config.locators = vec![locator.address()];
    let late = Member::start(config).await?;
    let outcome = late.send_datagram(
        &Greeting { to: "quiet".into() },
        std::slice::from_ref(quiet.id()),
    )?;
    let datagram_received = if outcome.not_sent.contains(quiet.id()) {
        false
    } else {
        tokio::time::timeout(PATIENCE, datagrams.recv())
            .await
            .map_err(|_| format!("a datagram said sent was never received: {outcome:?}"))?
            .is_some()
    };

    for (name, member) in [("late", late), ("quiet", quiet), ("locator", locator)] {
        if !member.leave().await {
            return Err(format!("{name}'s leave was not confirmed in time").into());
        }
    }
    Ok(Report {
        newcomers,
        greeted,
        undelivered,
        datagram_received,
    })
}

/// Greets each member the moment it first appears in the locator's view.
async fn greet_newcomers(locator: Member) {
    let mut views = locator.watch_view();
    let mut seen: HashSet<MemberId> = HashSet::new();
    loop {
        let view = views.borrow_and_update().clone();
        for member in view.members() {
            if member != locator.id() && seen.insert(member.clone()) {
                let greeting = Greeting {
                    to: member.name().to_owned(),
                };
                match locator.send(&greeting, Priority::High, std::slice::from_ref(member)) {
                    Ok(outcome) if outcome.is_complete() => {}
                    Ok(outcome) => eprintln!("greeting {member} not accepted: {outcome:?}"),
                    Err(error) => eprintln!("greeting {member} failed: {error}"),
                }
            }
        }
        if views.changed().await.is_err() {
            return;
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let rounds = match std::env::args().nth(1) {
        Some(rounds) => rounds
            .parse()
            .map_err(|e| format!("ROUNDS must be a count: {e}"))?,
        None => 50,
    };
    let report = run(rounds).await?;
    println!(
        "{} of {} newcomers greeted; an unheard message to {} reported as undelivered (tag {}); first datagram {}",
        report.greeted,
        report.newcomers,
        report.undelivered.0.name(),
        report.undelivered.1,
        if report.datagram_received {
            "received"
        } else {
            "reported as not sent"
        },
    );
    if report.greeted != report.newcomers {
        return Err("a newcomer missed its greeting".into());
    }
    Ok(())
}
