//! Final checks on the real stack (QUIC on loopback): what a suspect's answer to a
//! `ViewCheck` tells its checker, and what the checker's query tells the suspect.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use cohort_membership::{MembershipEvent, Standing, ViewCheck, ViewCheckAnswer};
use cohort_tests::{Blob, Cluster, PATIENCE, TestCa, init_tracing, spawn_with, wait_until};
use cohort_transport::{MemberId, MemberKind, Message, Query, QueryError, QuicConfig, Tag, View};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspect_that_answers_it_is_out_is_removed() {
    init_tracing();
    let mut cluster = Cluster::new(1);
    cluster.start(1).await;
    let mut config = cluster.config("member-2", MemberKind::Member);
    config.auto_reconnect = false;
    cluster.add(config).await.expect("member-2 starts");
    let view = cluster.agreed_view(3, PATIENCE).await;
    let suspect = cluster.member("member-2");
    let old = suspect.id().clone();

    // Its answer is what a process says of an identity of its that is out (one forced out
    // and back as a new member answers so for the old one), while its `Gms` still counts
    // itself in: the checker must go by the answer. Its heartbeats stop, so that no sign
    // of life settles the check before the answer does.
    let (uuid, view_id) = (old.uuid(), view.id());
    suspect
        .messenger()
        .serve::<ViewCheck>(move |_, _| ViewCheckAnswer {
            uuid,
            view_id,
            standing: Standing::Out,
        });
    suspect.messenger().faults().drop_quic_datagrams(true);
    let checker = cluster.member("locator-1");
    let before = checker.stats();
    checker.suspect(&old, "the test suspects it").await;

    let view = cluster
        .agreed_view_of(&["locator-1", "member-1"], PATIENCE)
        .await;
    assert!(!view.contains(&old), "{view}");
    let after = checker.stats();
    assert_eq!(after.final_checks_out, before.final_checks_out + 1);
    assert_eq!(
        after.final_checks_failed, before.final_checks_failed,
        "an answer, not a silence"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_while_cut_off_learns_of_it_from_a_check_naming_a_newer_view() {
    init_tracing();
    let mut cluster = Cluster::new(1);
    cluster.start(2).await;
    // Cut off without partition detection, it would stay in its view for ever: nothing
    // reaches it, and it decides nothing alone. Its longer member timeout gives its
    // catch-up (two member timeouts of patience) time to hear back once the cut heals, as
    // QUIC's retransmissions back off while the cut lasts.
    let mut config = cluster.config("member-3", MemberKind::Member);
    config.partition_detection = false;
    config.auto_reconnect = false;
    config.member_timeout *= 3;
    cluster.add(config).await.expect("member-3 starts");
    let view = cluster.agreed_view(4, PATIENCE).await;
    let cut = cluster.member("member-3");
    let old = cut.id().clone();
    let mut events = cut.events();
    // Heartbeats flow between it and its ring neighbours (its watchers), so that they
    // suspect it within one member timeout: a member never heard from gets five.
    if let Err(error) = cluster.heartbeats_flowing("member-3", PATIENCE).await {
        panic!("{error}");
    }

    cluster.cut_off("member-3");
    let others = ["locator-1", "member-1", "member-2"];
    let newer = cluster.agreed_view_of(&others, PATIENCE).await;
    assert!(newer.id() > view.id() && !newer.contains(&old), "{newer}");
    let cut = cluster.member("member-3");
    assert!(
        cut.is_active() && cut.view().contains(&old),
        "it does not know"
    );
    let asked_before = cut.stats().catch_ups;

    // The check a member of a newer view asks, from an address the cut leaves open: the
    // checker is a member of the old view too, so its view id is a sign worth asking about.
    let tls = cluster
        .config("checker", MemberKind::Member)
        .tls
        .load()
        .expect("the cluster's TLS");
    let asker = spawn_with(&tls, "checker", QuicConfig::default());
    let query = ViewCheck {
        uuid: old.uuid(),
        checker: cluster.member("member-1").id().clone(),
        view_id: newer.id(),
    };
    let answer = asker
        .query_within(old.address(), &query, PATIENCE)
        .await
        .expect("the cut-off member answers");
    assert_eq!(
        (answer.uuid, answer.view_id, answer.standing),
        (old.uuid(), view.id(), Standing::Member)
    );
    wait_until(
        "the checked member asks its view for newer ones",
        PATIENCE,
        || cluster.member("member-3").stats().catch_ups > asked_before,
    )
    .await;

    // Once the cut heals, its view's members tell it (or refuse it) and it is out.
    cluster.heal_all();
    let reason = tokio::time::timeout(PATIENCE, async {
        loop {
            match events.recv().await {
                Ok(MembershipEvent::ForcedDisconnect { reason }) => return reason,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("events ended"),
            }
        }
    })
    .await
    .expect("member-3 learns that it is out");
    assert!(reason.contains("removed"), "{reason}");
    println!("forced out: {reason}");
    asker.shutdown().await;
}

/// A bridge asks a member of protocol 2 over QUIC alone: an older build's "not served" then
/// comes at once, leaving the checker its final-check timeout for the `FinalCheck`
/// fallback. Asked over both protocols, the answer waited for the legacy side to give up
/// first (the whole timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_hears_at_once_that_a_quic_member_does_not_serve_the_view_check() {
    use cohort_legacy_udp::LegacyConfig;
    use cohort_membership::FinalCheck;
    use cohort_transport::ViewId;
    use tokio::time::Instant;

    init_tracing();
    let ca = cohort_tests::TestCa::new();
    // An older build: it serves FinalCheck only.
    let older = cohort_tests::spawn_member(&ca, "older");
    let uuid = older.local_member().uuid();
    older.serve::<FinalCheck>(move |_, _| uuid);
    let identity = cohort_transport::Identity::named("bridge");
    let (quic, tls) = (QuicConfig::default(), ca.tls("bridge"));
    let bridge = cohort_legacy_udp::bridge(&identity, quic, &tls, LegacyConfig::default())
        .expect("a bridge");
    let suspect = older.local_member().clone();
    let query = ViewCheck {
        uuid,
        checker: bridge.local_member().clone(),
        view_id: ViewId(2),
    };
    let limit = std::time::Duration::from_millis(400);
    let started = Instant::now();
    let answer = bridge.query_member_within(&suspect, &query, limit).await;
    let took = started.elapsed();
    assert!(
        matches!(answer, Err(QueryError::NotServed { .. })),
        "{answer:?}"
    );
    assert!(took < limit / 2, "not served, said after {took:?}");
    let answer = bridge
        .query_member_within(&suspect, &FinalCheck { uuid }, limit)
        .await;
    assert_eq!(answer.ok(), Some(uuid), "the fallback is answered");
    bridge.shutdown().await;
    older.shutdown().await;
}

/// An application that suspects a healthy member on every slow reply: 200 suspicions in a
/// row, 10 ms apart, at the checker. Before, each started a final check once the last one
/// had passed; after 20 the suspect's query rate limiter refused the checker, a refusal
/// counted as a crash, and the healthy member was removed. Now a check that passed settles
/// suspicions for half a member timeout, and a refusal by the rate limiter is no evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_suspicions_of_a_healthy_member_does_not_remove_it() {
    init_tracing();
    let mut cluster = Cluster::new(1);
    cluster.start(2).await;
    cluster.agreed_view(3, PATIENCE).await;
    let healthy = cluster.member("member-2").id().clone();
    let checker = cluster.member("locator-1");
    let before = checker.stats();
    let burst = std::time::Instant::now();
    for n in 0..200 {
        checker
            .suspect(&healthy, format!("slow reply number {n}"))
            .await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let burst = burst.elapsed();
    // Every check begun has ended.
    wait_until("the checks end", PATIENCE, || {
        let s = checker.stats();
        s.final_checks == s.final_checks_passed + s.final_checks_failed + s.final_checks_out
    })
    .await;
    let after = checker.stats();
    let checks = after.final_checks - before.final_checks;
    println!("200 suspicions over {burst:?}: {checks} final checks");
    assert_eq!(
        after.final_checks_failed + after.final_checks_out,
        before.final_checks_failed + before.final_checks_out,
        "no check failed"
    );
    assert_eq!(after.members_removed, before.members_removed);
    let view = cluster.agreed_view(3, PATIENCE).await;
    assert!(view.contains(&healthy), "{view}");
    // At most one check per half member timeout, and one more for the edges.
    let spacing = cluster
        .config("member-3", MemberKind::Member)
        .member_timeout
        / 2;
    let most = (burst.as_secs_f64() / spacing.as_secs_f64()).ceil() as u64 + 1;
    assert!(
        checks <= most,
        "{checks} checks in {burst:?}, at most {most}"
    );
}

/// A query no member serves: it only holds a dial permit at a socket that never answers.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct NobodyAnswers;

impl Message for NobodyAnswers {
    const TAG: Tag = Tag(0xfe21);
}

impl Query for NobodyAnswers {
    type Answer = ();
}

/// Forged ICMP errors about a live member while its checker has all eight of its dial
/// permits (the default) taken by handshakes to sockets that never answer: the errors
/// raise a suspicion, and the final check waits its turn without counting them as
/// refusals of its own datagrams. Before, the refusal grace started while the check waited
/// for a permit, and the check gave the live member up as refused (proof of death) before
/// it had sent anything. Meanwhile the link is cut too (as in a route flap), so that no
/// sign of life settles the check before the query does; it heals before the check dials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_errors_while_the_checker_has_eight_dials_in_flight_remove_nobody() {
    init_tracing();
    let mut cluster = Cluster::new(1);
    cluster.start(3).await;
    let view = cluster.agreed_view(4, PATIENCE).await;
    let checker = cluster.member("locator-1");
    let target = cluster.member("member-2").id().clone();
    let dials = cluster
        .config("locator-1", MemberKind::Locator)
        .transport
        .max_concurrent_dials
        .get();
    assert_eq!(dials, 8, "the default");
    let before = checker.stats();

    // Every permit held by a query to a silent socket; a datagram of each arriving there
    // shows that it dials, holding its permit.
    let held = Duration::from_secs(4);
    let mut blockers = Vec::new();
    for _ in 0..dials {
        let silent = UdpSocket::bind("127.0.0.1:0").expect("bind a silent socket");
        let address = silent.local_addr().expect("its address");
        let asking = {
            let messenger = checker.messenger().clone();
            tokio::spawn(async move { messenger.query_within(address, &NobodyAnswers, held).await })
        };
        silent
            .set_read_timeout(Some(PATIENCE))
            .expect("a read timeout");
        let silent = tokio::task::spawn_blocking(move || {
            let mut buffer = [0u8; 2048];
            silent.recv_from(&mut buffer).map(|_| silent)
        })
        .await
        .expect("the read ends")
        .expect("the blocking query dials the silent socket");
        blockers.push((asking, silent));
    }

    // Every datagram the checker sends the target is answered by a forged error and
    // dropped; datagrams go to it all the while, so that errors keep coming while the
    // check waits its turn.
    let faults = checker.messenger().faults().clone();
    faults.blackhole(target.address());
    faults.forge_unreachable(target.address());
    let to = vec![target.clone()];
    let pings = {
        let messenger = checker.messenger().clone();
        tokio::spawn(async move {
            for n in 0..400u64 {
                let blob = Blob {
                    data: n.to_le_bytes().to_vec().into(),
                };
                let _ = messenger.send_datagram(&blob, &to);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    wait_until("the forged errors raise a suspicion", PATIENCE, || {
        checker.stats().unreachable_suspicions > before.unreachable_suspicions
    })
    .await;
    // The errors go on for several refusal graces (50 ms) while the check waits; the
    // outage is the fault itself, not a wait for a condition.
    tokio::time::sleep(Duration::from_millis(300)).await;
    faults.heal();
    assert!(
        blockers.iter().all(|(asking, _)| !asking.is_finished()),
        "the permits were still held when the faults healed"
    );
    for (asking, _silent) in blockers {
        let answer = asking.await.expect("the blocking query ends");
        assert!(
            answer.is_err(),
            "nobody answers at a silent socket: {answer:?}"
        );
    }
    wait_until("the check ends", PATIENCE, || {
        let s = checker.stats();
        s.final_checks > before.final_checks
            && s.final_checks == s.final_checks_passed + s.final_checks_failed + s.final_checks_out
    })
    .await;
    pings.abort();
    let after = checker.stats();
    assert!(
        after.final_checks_passed > before.final_checks_passed,
        "the check passed: {after:?}"
    );
    assert_eq!(
        after.members_removed, before.members_removed,
        "nobody removed"
    );
    let now = cluster.agreed_view(4, PATIENCE).await;
    assert_eq!(now.id(), view.id(), "no view change at all");
}

/// A final check of a member that no fresh handshake reaches (every handshake packet it
/// receives is lost) passes over the connection that already works: the heartbeats the
/// check sends on it are acknowledged by the suspect's runtime. Before, the check was the
/// fresh handshake alone, and it failed unless some other sign of life happened to arrive
/// within its 400 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_passes_over_the_existing_connection_when_handshakes_are_lost() {
    init_tracing();
    let mut cluster = Cluster::new(1);
    cluster.start(3).await;
    let view = cluster.agreed_view(4, PATIENCE).await;
    let checker = cluster.member("locator-1");
    let target = not_a_neighbour_of_the_checker(&view, checker.id());
    let suspect = cluster.member(target.name());
    between_lease_exchanges(&cluster, &target).await;
    suspect.messenger().faults().block_handshakes();
    let before = checker.stats();
    checker.suspect(&target, "the test suspects it").await;
    wait_until("the check ends", PATIENCE, || {
        let s = checker.stats();
        s.final_checks > before.final_checks
            && s.final_checks == s.final_checks_passed + s.final_checks_failed + s.final_checks_out
    })
    .await;
    suspect.messenger().faults().heal();
    let after = checker.stats();
    assert_eq!(
        after.final_checks_passed,
        before.final_checks_passed + 1,
        "the check passed: {after:?}"
    );
    assert_eq!(
        after.members_removed, before.members_removed,
        "nobody removed"
    );
    let now = cluster.agreed_view(4, PATIENCE).await;
    assert_eq!(now.id(), view.id(), "no view change at all");
}

/// A member of `view` two places after `checker`: not its ring neighbour, so no heartbeat
/// of its own (or acknowledgement of the checker's) settles a check of it.
fn not_a_neighbour_of_the_checker(view: &View, checker: &MemberId) -> MemberId {
    let members = view.members();
    let at = members
        .iter()
        .position(|m| m == checker)
        .expect("in its view");
    members[(at + 2) % members.len()].clone()
}

/// Waits for a moment between two lease exchanges of `member` with the coordinator
/// (locator-1, which asks every 1.5 s), so that nothing else from it arrives at the
/// coordinator while a check runs: quiet, then its next grant, then quiet again.
async fn between_lease_exchanges(cluster: &Cluster, member: &MemberId) {
    let checker = cluster.member("locator-1");
    let quiet_for = |least: Duration| {
        checker
            .messenger()
            .last_heard(member)
            .is_some_and(|at| at.elapsed() >= least)
    };
    wait_until("a quiet moment", PATIENCE, || {
        quiet_for(Duration::from_millis(300))
    })
    .await;
    wait_until("its next lease grant", PATIENCE, || {
        !quiet_for(Duration::from_millis(300))
    })
    .await;
    wait_until("quiet again", PATIENCE, || {
        quiet_for(Duration::from_millis(50))
    })
    .await;
}

/// A final check of a member behind a slow link (its datagrams take 500 ms, more than the
/// 400 ms check timeout of the default preset) waits for as many round trips as a
/// handshake and an answer need on that link, measured on the connection it has: it
/// passes. Before, the check timeout was fixed, and such a member failed every check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_of_a_member_behind_a_slow_link_waits_for_its_round_trips() {
    init_tracing();
    let mut cluster = Cluster::new(1);
    cluster.start(3).await;
    let view = cluster.agreed_view(4, PATIENCE).await;
    let checker = cluster.member("locator-1");
    let target = not_a_neighbour_of_the_checker(&view, checker.id());
    let suspect = cluster.member(target.name());
    suspect
        .messenger()
        .faults()
        .delay_outgoing(Duration::from_millis(500), Duration::ZERO);
    // The connection's estimate has moved well towards the slow round trip (it moves by an
    // eighth of each sample).
    wait_until("the round trip is measured", PATIENCE, || {
        checker
            .messenger()
            .peer_stats(&target)
            .and_then(|s| s.rtt)
            .is_some_and(|rtt| rtt >= Duration::from_millis(200))
    })
    .await;
    between_lease_exchanges(&cluster, &target).await;
    let before = checker.stats();
    checker.suspect(&target, "the test suspects it").await;
    wait_until("the check ends", PATIENCE, || {
        let s = checker.stats();
        s.final_checks > before.final_checks
            && s.final_checks == s.final_checks_passed + s.final_checks_failed + s.final_checks_out
    })
    .await;
    suspect.messenger().faults().heal();
    let after = checker.stats();
    assert_eq!(
        after.final_checks_passed,
        before.final_checks_passed + 1,
        "the check passed: {after:?}"
    );
    assert_eq!(
        after.members_removed, before.members_removed,
        "nobody removed"
    );
}

#[derive(Debug, Serialize, Deserialize)]
struct StillThere;

impl Message for StillThere {
    const TAG: Tag = Tag(0xfe12);
}

impl Query for StillThere {
    type Answer = u8;
}

/// The default final-check timeout.
const CHECK: Duration = Duration::from_millis(400);

/// A final check's fresh handshake whose first datagram is lost (the suspect's socket
/// drops the first handshake packet it receives, then nothing): at the LAN presets'
/// initial RTT of 30 ms the handshake sends it again after about 90 ms and the check is
/// answered well within its 400 ms; at quinn's default of 333 ms the datagram goes again
/// only after about a second, when the check has long given up. Before the presets set it,
/// every check that lost its first datagram failed so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_whose_first_handshake_datagram_is_lost_is_answered_in_time_at_a_lan_initial_rtt() {
    init_tracing();
    let ca = TestCa::new();
    let lan = first_datagram_lost(&ca, Duration::from_millis(30)).await;
    let took = lan.expect("answered within the check at a 30 ms initial RTT");
    println!("first handshake datagram lost, 30 ms initial RTT: answered after {took:?}");
    assert!(took < CHECK, "{took:?}");
    let default = first_datagram_lost(&ca, Duration::from_millis(333)).await;
    assert!(
        matches!(default, Err(QueryError::Timeout(_))),
        "at quinn's default initial RTT the resend comes after the check: {default:?}"
    );
}

/// Asks a fresh member within [`CHECK`] from an asker whose connections assume
/// `initial_rtt`, with the first handshake datagram the member receives dropped; how long
/// the answer took, or why there was none.
async fn first_datagram_lost(ca: &TestCa, initial_rtt: Duration) -> Result<Duration, QueryError> {
    let suspect = spawn_with(&ca.tls("suspect"), "suspect", QuicConfig::default());
    suspect.serve::<StillThere>(|_, _| 7);
    let asker = spawn_with(
        &ca.tls("checker"),
        "checker",
        QuicConfig {
            initial_rtt,
            ..QuicConfig::default()
        },
    );
    let faults = suspect.faults().clone();
    faults.block_handshakes();
    let healer = tokio::spawn(async move {
        // Lifted as soon as one packet was dropped: only the first is lost.
        wait_until("the first handshake datagram dropped", PATIENCE, || {
            faults.dropped() > 0
        })
        .await;
        faults.heal();
    });
    let started = Instant::now();
    let answer = asker
        .query_within(suspect.local_member().address(), &StillThere, CHECK)
        .await;
    let took = started.elapsed();
    healer.await.expect("the healer ends");
    answer.map(|seven| {
        assert_eq!(seven, 7);
        took
    })
}
