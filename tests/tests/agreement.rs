//! The agreement scenarios of the membership protocol on the real stack (QUIC on loopback,
//! faults injected at the sockets): a member cut off and removed, a partition, a joiner that
//! dies mid-join, a stalled coordinator. Each checks that every view id names one
//! membership wherever it was installed, and that members forced out come back by
//! themselves (auto-reconnect) once the network lets them.

use std::time::Duration;

use cohort_membership::{MembershipEvent, Standing, ViewCheck};
use cohort_tests::events::EventLog;
use cohort_tests::{Cluster, Numbered, PATIENCE, init_tracing, receive};
use cohort_transport::{MemberId, MemberKind, Priority, SendError, TransportEvent};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// The default member timeout, which every cluster here uses.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a member that can reach the cluster again may take to be back in its view:
/// the reconnect's longest backoff step (3 s) plus a join, with room for a loaded machine.
const BACK_WITHIN: Duration = Duration::from_secs(12);

/// Waits (bounded) for the first event on `events` that `pick` maps to something.
async fn next_event<T>(
    events: &mut broadcast::Receiver<MembershipEvent>,
    what: &str,
    limit: Duration,
    mut pick: impl FnMut(&MembershipEvent) -> Option<T>,
) -> T {
    let found = tokio::time::timeout(limit, async {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(found) = pick(&event) {
                        return found;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("events ended before {what}"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {what} within {limit:?}"))
}

fn forced_out(event: &MembershipEvent) -> Option<String> {
    match event {
        MembershipEvent::ForcedDisconnect { reason } => Some(reason.clone()),
        _ => None,
    }
}

fn reconnected(event: &MembershipEvent) -> Option<(MemberId, MemberId, String)> {
    match event {
        MembershipEvent::Reconnected { old, new, reason } => {
            Some((old.clone(), new.clone(), reason.clone()))
        }
        _ => None,
    }
}

/// Waits (bounded) until heartbeats flow between every running node and its ring
/// neighbours (the members that watch it): a member never heard from gets five member
/// timeouts of grace (its connection may still be queued), and these scenarios are about
/// the ordinary case.
async fn heartbeats_flowing(cluster: &Cluster) {
    for name in cluster.running() {
        if let Err(error) = cluster.heartbeats_flowing(&name, PATIENCE).await {
            panic!("{error}");
        }
    }
}

/// Waits (bounded) until none of `names` has `gone` in its view.
async fn until_removed(cluster: &Cluster, names: &[&str], gone: &MemberId, limit: Duration) {
    let deadline = Instant::now() + limit;
    while names
        .iter()
        .any(|n| cluster.member(n).view().contains(gone))
    {
        assert!(
            Instant::now() < deadline,
            "{gone:?} still in a view of {names:?} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Checks that `new` replaced `old`: a new uuid, the same name and address, and that the
/// member now answers to it.
fn assert_replaced(cluster: &Cluster, name: &str, old: &MemberId, new: &MemberId) {
    assert_ne!(old.uuid(), new.uuid(), "a new member, not the old one");
    assert_eq!(new.name(), old.name());
    assert_eq!(new.address(), old.address(), "the same address");
    let member = cluster.member(name);
    assert_eq!(member.id(), new, "Member::id is the current incarnation");
    assert_eq!(member.messenger().local_member(), new);
    assert!(member.is_active());
    assert!(member.reconnects() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_and_removed_is_told_it_is_out_and_rejoins_by_itself() {
    init_tracing();
    // One stage (the lan-fast preset's removal timeout): removed at the first unanswered
    // check, so that the fault need last only that long.
    let mut cluster = Cluster::tuned(1, |config| config.removal_timeout = Duration::ZERO);
    cluster.start(4).await;
    cluster.agreed_view(5, PATIENCE).await;
    heartbeats_flowing(&cluster).await;
    let mut log = EventLog::new(&cluster);
    let victim = "member-3";
    let old = cluster.member(victim).id().clone();
    let mut events = cluster.member(victim).events();
    let mut inbox = cluster
        .member(victim)
        .subscribe::<Numbered>()
        .expect("subscribe");
    let others = ["locator-1", "member-1", "member-2", "member-4"];

    // Everything between it and the others is dropped, both ways, at the others' sockets:
    // the cut holds whatever messenger the victim runs.
    let isolation = Duration::from_secs(5);
    let cut = Instant::now();
    cluster.cut_off(victim);
    until_removed(&cluster, &others, &old, isolation).await;
    let removed = cut.elapsed();
    // The scenario: it stays cut off this long, whatever it does meanwhile.
    tokio::time::sleep_until(cut + isolation).await;
    cluster.heal_all();
    let healed = Instant::now();

    let reason = next_event(&mut events, "forced disconnect", PATIENCE, forced_out).await;
    let (was, new, why) = next_event(&mut events, "reconnect", BACK_WITHIN, reconnected).await;
    let back = healed.elapsed();
    assert_eq!(was, old);
    assert_eq!(why, reason, "Reconnected says why it was forced out");
    let view = cluster.agreed_view(5, BACK_WITHIN).await;
    assert!(view.contains(&new) && !view.contains(&old), "{view}");
    assert_replaced(&cluster, victim, &old, &new);
    println!(
        "removed {removed:?} after the cut; forced out ({reason}); back {back:?} after the heal"
    );

    // Checked at its address, the process answers for each of its identities: the old one
    // is out for good, the new one a member of the view.
    let checker = cluster.member("member-1");
    for (asked, standing) in [(&old, Standing::Out), (&new, Standing::Member)] {
        let query = ViewCheck {
            uuid: asked.uuid(),
            checker: checker.id().clone(),
            view_id: view.id(),
        };
        let answer = checker
            .messenger()
            .query_within(new.address(), &query, PATIENCE)
            .await
            .expect("the reconnected member answers");
        assert_eq!(
            (answer.uuid, answer.view_id, answer.standing),
            (asked.uuid(), view.id(), standing)
        );
    }

    // The subscription made before carries over: messages to the new member reach it, and
    // it can send.
    let _ = cluster
        .member("member-1")
        .send(
            &Numbered::new("member-1", "after", 0, 8),
            Priority::Normal,
            std::slice::from_ref(&new),
        )
        .expect("send to the new member");
    let got = receive(&mut inbox, 1, PATIENCE).await;
    assert_eq!(got[0].message.sender, "member-1");
    let mut theirs = cluster
        .member("member-1")
        .subscribe::<Numbered>()
        .expect("subscribe");
    let to = cluster.member("member-1").id().clone();
    let outcome = cluster
        .member(victim)
        .send(&Numbered::new(victim, "back", 0, 8), Priority::High, &[to])
        .expect("the reconnected member sends");
    assert!(outcome.is_complete(), "{outcome:?}");
    receive(&mut theirs, 1, PATIENCE).await;
    let ids = log.assert_one_membership_per_view_id();
    assert!(ids >= 2, "views were installed ({ids})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_cut_off_by_a_partition_shuts_down_and_rejoins_once_it_heals() {
    init_tracing();
    let mut cluster = Cluster::new(1);
    cluster.start(0).await;
    // One at a time, so that member-1 is the oldest member (the lead, weight 15).
    for i in 1..=6 {
        let config = cluster.config(&format!("member-{i}"), MemberKind::Member);
        cluster.add(config).await.expect("member starts");
    }
    cluster.agreed_view(7, PATIENCE).await;
    heartbeats_flowing(&cluster).await;
    let mut log = EventLog::new(&cluster);
    // Locator 3 + lead 15 + 10 + 10 = 38 of 68: the side of four keeps its quorum.
    let majority = ["locator-1", "member-1", "member-2", "member-3"];
    let minority = ["member-4", "member-5", "member-6"];
    let olds: Vec<MemberId> = minority
        .iter()
        .map(|n| cluster.member(n).id().clone())
        .collect();
    let mut events: Vec<_> = minority
        .iter()
        .map(|n| cluster.member(n).events())
        .collect();

    let cut = Instant::now();
    cluster.partition(&majority, &minority);
    let view = cluster.agreed_view_of(&majority, PATIENCE).await;
    let decided = cut.elapsed();
    for old in &olds {
        assert!(!view.contains(old));
    }
    for (name, events) in minority.iter().zip(&mut events) {
        let reason = next_event(events, "forced disconnect", PATIENCE, forced_out).await;
        println!("{name} forced out: {reason}");
        assert!(!cluster.member(name).is_active());
    }
    let shut = cut.elapsed();
    cluster.heal_all();
    let healed = Instant::now();
    for ((name, events), old) in minority.iter().zip(&mut events).zip(&olds) {
        let (was, new, _) = next_event(events, "reconnect", BACK_WITHIN, reconnected).await;
        assert_eq!(&was, old);
        assert_replaced(&cluster, name, old, &new);
    }
    let view = cluster.agreed_view(7, BACK_WITHIN).await;
    println!(
        "majority's view {decided:?} after the cut, minority out by {shut:?}, one view of \
         seven {:?} after the heal: {view}",
        healed.elapsed()
    );
    for old in &olds {
        assert!(!view.contains(old));
    }
    log.assert_one_membership_per_view_id();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_that_dies_after_asking_does_not_hold_up_a_later_leave() {
    init_tracing();
    let mut cluster = Cluster::new(1);
    cluster.start(3).await;
    cluster.agreed_view(4, PATIENCE).await;
    let mut log = EventLog::new(&cluster);
    let coordinator = cluster.member("locator-1").messenger();
    let mut transport = coordinator.events();

    let joiner = cluster.spawn_joiner(cluster.config("joiner", MemberKind::Member));
    // Its join request is the first thing it sends the coordinator over a connection (the
    // discovery query before has a connection of its own, with no peer behind it).
    let asking = tokio::time::timeout(PATIENCE, async {
        loop {
            match transport.recv().await {
                Ok(TransportEvent::PeerConnected { member, .. }) if member.name() == "joiner" => {
                    return member;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the coordinator stopped"),
            }
        }
    })
    .await
    .expect("the joiner connects to the coordinator");
    let control = Priority::Control.index();
    cohort_tests::wait_until("the join request arrives", PATIENCE, || {
        coordinator
            .peer_stats(&asking)
            .is_some_and(|s| s.frames_received[control] > 0)
    })
    .await;
    joiner.end().await;

    let leaving = Instant::now();
    let confirmed = cluster.leave("member-2").await;
    let took = leaving.elapsed();
    println!("leave confirmed {confirmed} after {took:?} (member timeout {MEMBER_TIMEOUT:?})");
    assert!(confirmed, "the leave completed");
    // The round that names the dead joiner is decided once the members accepted and the
    // joiner's grace (half a member timeout) ran out; the leave follows in the next round.
    let bound = MEMBER_TIMEOUT * 2;
    assert!(
        took <= bound,
        "the leave took {took:?}: over twice the member timeout ({bound:?})"
    );
    let view = cluster.agreed_view(3, PATIENCE).await;
    assert!(!view.contains(&asking), "the dead joiner is not in {view}");
    log.assert_one_membership_per_view_id();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_coordinator_is_replaced_told_it_is_out_and_rejoins() {
    init_tracing();
    // One stage (the lan-fast preset's removal timeout): removed at the first unanswered
    // check, so that the fault need last only that long.
    let mut cluster = Cluster::tuned(1, |config| config.removal_timeout = Duration::ZERO);
    // The coordinator runs on a runtime of its own, so that it alone can be stalled.
    cluster
        .add_on_own_runtime(cluster.config("locator-1", MemberKind::Locator))
        .await
        .expect("the locator starts");
    let configs = (1..=4)
        .map(|i| cluster.config(&format!("member-{i}"), MemberKind::Member))
        .collect();
    for (name, outcome) in cluster.start_all(configs).await {
        outcome.unwrap_or_else(|e| panic!("{name} did not start: {e}"));
    }
    let view = cluster.agreed_view(5, PATIENCE).await;
    heartbeats_flowing(&cluster).await;
    let old = cluster.member("locator-1").id().clone();
    assert_eq!(view.coordinator(), Some(&old));
    let mut log = EventLog::new(&cluster);
    let mut events = cluster.member("locator-1").events();
    let others = ["member-1", "member-2", "member-3", "member-4"];

    let stalled = Instant::now();
    cluster.stall("locator-1", MEMBER_TIMEOUT * 3);
    until_removed(&cluster, &others, &old, MEMBER_TIMEOUT * 3).await;
    let replaced = stalled.elapsed();
    let theirs = cluster.agreed_view_of(&others, PATIENCE).await;
    let successor = theirs.coordinator().cloned().expect("a coordinator");
    assert_ne!(successor, old);

    let reason = next_event(&mut events, "forced disconnect", PATIENCE, forced_out).await;
    let (was, new, _) = next_event(&mut events, "reconnect", BACK_WITHIN, reconnected).await;
    assert_eq!(was, old);
    let view = cluster.agreed_view(5, BACK_WITHIN).await;
    assert_replaced(&cluster, "locator-1", &old, &new);
    println!(
        "removed {replaced:?} into the stall, {} took over; the old coordinator was told \
         ({reason}) and is back as {} after {:?}: {view}",
        successor.name(),
        new.uuid(),
        stalled.elapsed()
    );
    log.assert_one_membership_per_view_id();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auto_reconnect_off_a_member_forced_out_stays_out() {
    init_tracing();
    let mut cluster = Cluster::new(1);
    cluster.start(2).await;
    let mut config = cluster.config("loner", MemberKind::Member);
    config.auto_reconnect = false;
    cluster.add(config).await.expect("loner starts");
    cluster.agreed_view(4, PATIENCE).await;
    heartbeats_flowing(&cluster).await;
    let old = cluster.member("loner").id().clone();
    let mut events = cluster.member("loner").events();
    let mut inbox = cluster
        .member("loner")
        .subscribe::<Numbered>()
        .expect("subscribe");
    let mut log = EventLog::new(&cluster);

    cluster.cut_off("loner");
    let reason = next_event(&mut events, "forced disconnect", PATIENCE, forced_out).await;
    cluster.heal_all();
    // As before auto-reconnect: the messenger is shut down, subscriptions end, sends fail.
    let ended = tokio::time::timeout(PATIENCE, inbox.recv()).await;
    assert!(
        matches!(ended, Ok(None)),
        "the subscription ends once forced out"
    );
    let to = cluster.member("member-1").id().clone();
    let sent =
        cluster
            .member("loner")
            .send(&Numbered::new("loner", "s", 0, 8), Priority::Normal, &[to]);
    assert!(matches!(sent, Err(SendError::Shutdown)), "{sent:?}");
    // Well past the first reconnect attempts it would have made (0.3 s, then 0.6 s).
    let window = Duration::from_secs(2);
    let quiet = tokio::time::timeout(window, async {
        loop {
            if let Ok(MembershipEvent::Reconnected { .. }) | Err(_) = events.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "no reconnect with auto_reconnect off");
    let member = cluster.member("loner");
    assert!(!member.is_active());
    assert_eq!(member.id(), &old, "still the member that was forced out");
    assert_eq!(member.reconnects(), 0);
    println!("forced out ({reason}) and stayed out");
    let view = cluster
        .agreed_view_of(&["locator-1", "member-1", "member-2"], PATIENCE)
        .await;
    assert!(!view.contains(&old));
    log.assert_one_membership_per_view_id();
}
