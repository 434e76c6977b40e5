//! Membership on real QUIC over loopback: locators, concurrent joins, leave, elder,
//! credentials, version gating, locator restart. Every wait is a bounded condition.

use std::sync::Arc;
use std::time::Duration;

use cohort_membership::{MembershipEvent, SharedSecret, StartError};
use cohort_tests::cluster::same_view;
use cohort_tests::{Cluster, PATIENCE, init_tracing};
use cohort_transport::{MemberKind, Priority, ProtocolVersion};

/// Starts `locators` and `members` at once and checks the view they agree on.
async fn start_and_agree(locators: usize, members: usize) -> Cluster {
    let mut cluster = Cluster::new(locators);
    cluster.start(members).await;
    let view = cluster.agreed_view(locators + members, PATIENCE).await;
    let coordinator = view.coordinator().expect("a coordinator");
    assert_eq!(
        coordinator.kind(),
        MemberKind::Locator,
        "a locator coordinates: {view}"
    );
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_locators_and_twenty_members_started_together_agree_on_one_view() {
    init_tracing();
    let cluster = start_and_agree(2, 20).await;
    let view = cluster.member("member-7").view();
    for name in cluster.running() {
        assert!(same_view(&cluster.member(&name).view(), &view), "{name}");
        assert!(
            view.contains(cluster.member(&name).id()),
            "{name} in the view"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_locators_started_at_the_same_instant_found_one_cluster() {
    init_tracing();
    let cluster = start_and_agree(3, 0).await;
    let view = cluster.member("locator-1").view();
    // One founder: the view history starts at one view, and every locator is in it.
    assert_eq!(view.len(), 3);
    let coordinators: Vec<_> = cluster
        .running()
        .iter()
        .map(|name| cluster.member(name).view().coordinator().cloned())
        .collect();
    assert!(
        coordinators.windows(2).all(|w| w[0] == w[1]),
        "{coordinators:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_members_started_together_are_in_one_view_within_the_join_timeout() {
    init_tracing();
    let mut cluster = Cluster::new(1);
    let started = tokio::time::Instant::now();
    cluster.start(50).await;
    let join_timeout = cluster.config("probe", MemberKind::Member).join_timeout;
    cluster.agreed_view(51, join_timeout).await;
    let took = started.elapsed();
    assert!(took < join_timeout, "{took:?} is over the join timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_and_the_coordinator_leave_gracefully_and_messages_flow() {
    init_tracing();
    let mut cluster = start_and_agree(2, 3).await;
    let before = cluster.member("member-1").view();
    let mut events = cluster.member("member-2").events();

    // Messages between members of the view.
    let mut inbox = cluster
        .member("member-2")
        .subscribe::<cohort_tests::Numbered>()
        .expect("subscribe");
    let to = cluster.member("member-2").id().clone();
    let outcome = cluster
        .member("member-1")
        .send(
            &cohort_tests::Numbered::new("member-1", "s", 0, 8),
            Priority::Normal,
            &[to],
        )
        .expect("send");
    assert!(outcome.is_complete());
    cohort_tests::receive(&mut inbox, 1, PATIENCE).await;

    let leaver = cluster.member("member-3").id().clone();
    assert!(
        cluster.leave("member-3").await,
        "member-3's leave confirmed"
    );
    let view = cluster.agreed_view(4, PATIENCE).await;
    assert!(!view.contains(&leaver));
    assert!(view.id() > before.id());
    let event = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok(MembershipEvent::ViewInstalled { left, crashed, .. }) = events.recv().await
                && left.contains(&leaver)
            {
                return crashed;
            }
        }
    })
    .await
    .expect("member-2 hears that member-3 left");
    assert!(event.is_empty(), "a leave is not a crash");

    // The coordinator (a locator) leaves: the other locator takes over without failure
    // detection.
    let coordinator = view.coordinator().cloned().expect("coordinator");
    let other = other_locator(coordinator.name());
    assert!(cluster.leave(coordinator.name()).await);
    let view = cluster.agreed_view(3, PATIENCE).await;
    assert!(!view.contains(&coordinator));
    assert_eq!(view.coordinator().map(|c| c.name()), Some(other));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_elder_moves_to_the_next_oldest_non_admin_member_when_it_leaves() {
    init_tracing();
    let mut cluster = Cluster::new(1);
    cluster.start(0).await;
    // An admin joins first: never elder.
    cluster
        .add(cluster.config("admin", MemberKind::Admin))
        .await
        .expect("admin starts");
    for name in ["first", "second", "third"] {
        cluster
            .add(cluster.config(name, MemberKind::Member))
            .await
            .expect("member starts");
    }
    let view = cluster.agreed_view(5, PATIENCE).await;
    // The locator is the oldest non-admin member, so it is the elder; after it leaves, the
    // admin is skipped and "first" is.
    assert_eq!(view.elder().map(|e| e.name()), Some("locator-1"));
    assert!(cluster.leave("locator-1").await);
    let view = cluster.agreed_view(4, PATIENCE).await;
    assert_eq!(view.elder().map(|e| e.name()), Some("first"));
    assert!(cluster.leave("first").await);
    let view = cluster.agreed_view(3, PATIENCE).await;
    assert_eq!(view.elder().map(|e| e.name()), Some("second"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_with_the_coordinators_reason() {
    init_tracing();
    let mut cluster = Cluster::tuned(1, |config| {
        config.authenticator = Arc::new(SharedSecret::secret("open sesame"));
        config.credentials = config
            .credentials
            .clone()
            .with(SharedSecret::SECRET, "open sesame");
    });
    cluster.start(2).await;
    let mut intruder = cluster.config("intruder", MemberKind::Member);
    intruder.credentials = Default::default();
    intruder.credentials = intruder.credentials.with(SharedSecret::SECRET, "guess");
    let error = cluster.add(intruder).await.expect_err("refused");
    match &error {
        StartError::AuthenticationFailed {
            coordinator,
            reason,
        } => {
            assert_eq!(coordinator.name(), "locator-1");
            assert!(!reason.is_empty());
        }
        other => panic!("expected an authentication error, got {other}"),
    }
    assert!(
        error.to_string().contains("authentication failed"),
        "{error}"
    );
    let view = cluster.agreed_view(3, PATIENCE).await;
    assert!(view.members().iter().all(|m| m.name() != "intruder"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_version_is_refused_once_a_newer_one_has_joined() {
    init_tracing();
    let mut cluster = Cluster::new(1);
    cluster.start(1).await;
    let mut newer = cluster.config("newer", MemberKind::Member);
    newer.identity.version = ProtocolVersion(3);
    cluster.add(newer).await.expect("a newer version joins");
    let error = cluster
        .add(cluster.config("older", MemberKind::Member))
        .await
        .expect_err("refused");
    match &error {
        StartError::VersionRefused { joining, cluster } => {
            assert_eq!(
                (*joining, *cluster),
                (ProtocolVersion(2), ProtocolVersion(3))
            );
        }
        other => panic!("expected a version refusal, got {other}"),
    }
    let text = error.to_string();
    assert!(text.contains("v2") && text.contains("v3"), "{text}");
    cluster.agreed_view(3, PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_locator_finds_the_cluster_from_its_persisted_view() {
    init_tracing();
    let mut cluster = start_and_agree(2, 3).await;
    // The locator that does not coordinate: a crashed coordinator is failure detection's
    // business.
    let view = cluster.member("member-1").view();
    let coordinator = view.coordinator().expect("coordinator").name().to_owned();
    let name = other_locator(&coordinator);
    let old = cluster.member(name).id().clone();
    cluster.kill(name).await;
    // Restarted knowing no locator but itself: only its persisted view can lead it back.
    let mut config = cluster.config(name, MemberKind::Locator);
    config.locators = vec![config.identity.bind];
    let restarted = cluster
        .restart_with(name, config)
        .await
        .expect("the locator finds the cluster again")
        .id()
        .clone();
    assert_ne!(restarted, old);
    let view = cluster.agreed_view(5, PATIENCE).await;
    assert!(view.contains(&restarted) && !view.contains(&old), "{view}");

    // It answers discovery: a member that knows only it joins through it.
    let mut config = cluster.config("late", MemberKind::Member);
    config.locators = vec![cluster.member(name).address()];
    cluster
        .add(config)
        .await
        .expect("joins through the restarted locator");
    let view = cluster.agreed_view(6, PATIENCE).await;
    assert_eq!(
        view.coordinator().map(|c| c.name()),
        Some(coordinator.as_str())
    );
}

/// In a two-locator cluster, the locator that is not `name`.
fn other_locator(name: &str) -> &'static str {
    match name {
        "locator-1" => "locator-2",
        _ => "locator-1",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_no_reachable_locator_gives_up_after_the_join_timeout() {
    init_tracing();
    let cluster = Cluster::tuned(1, |config| config.join_timeout = Duration::from_secs(2));
    let error = cohort_membership::Member::start(cluster.config("lonely", MemberKind::Member))
        .await
        .expect_err("no locator runs");
    assert!(matches!(error, StartError::NoLocator { .. }), "{error}");
    assert!(
        error.to_string().contains("no locator reachable"),
        "{error}"
    );
}

/// A connection storm: hundreds of members start at the same moment on one machine, each
/// running discovery queries and a mutual-TLS handshake with the coordinator. Run by CI
/// (`cargo test -- --ignored`).
///
/// All 502 members share this process's two runtime threads, so every one of them sees its
/// own timers run late (hundreds of "paused" ticks per second in a debug build): a load no
/// member process of its own ever has. The member timeout is raised to 10 s so that this
/// tests the join storm, not failure detection on a runtime 500 times oversubscribed. On a
/// machine whose cores are also busy with other work, the storm takes minutes rather than
/// the usual 15-25 s (each join is a round of protocol 2, decided by a majority of runtimes
/// that are all late): the join timeout and the wait for one view leave room for that.
///
/// Not run by CI at the moment: on two cores it has ended in one view in 31 s and failed
/// to admit a member within 240 s on the same tree, and why is not understood yet (join
/// starvation under an oversubscribed runtime). CI runs the 200-member storm below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: a few hundred members on one machine"]
async fn five_hundred_members_started_at_once_end_in_one_view() {
    storm(500).await;
}

/// The same storm with 200 members (202 nodes), which CI runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: a few hundred members on one machine"]
async fn two_hundred_members_started_at_once_end_in_one_view() {
    storm(200).await;
}

async fn storm(members: usize) {
    init_tracing();
    let mut cluster = Cluster::tuned(2, |config| {
        config.join_timeout = Duration::from_secs(240);
        config.member_timeout = Duration::from_secs(10);
    });
    let started = tokio::time::Instant::now();
    cluster.start(members).await;
    let view = cluster
        .agreed_view(members + 2, Duration::from_secs(180))
        .await;
    println!(
        "{} nodes in view {} after {:?}",
        members + 2,
        view.id(),
        started.elapsed()
    );
}
