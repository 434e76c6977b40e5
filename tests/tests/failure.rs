//! Failure detection on real QUIC over loopback: crashes, coordinator succession, busy and
//! paused members that must stay, application suspicion, and network partitions.

use std::collections::HashSet;
use std::time::Duration;

use cohort_membership::{MembershipEvent, Preset};
use cohort_tests::events::EventLog;
use cohort_tests::{Cluster, PATIENCE, init_tracing};
use cohort_transport::{MemberId, MemberKind};
use tokio::time::Instant;

/// What the tests here read from an [`EventLog`].
trait Readings {
    /// Suspicions of `member` reported by anyone.
    fn suspicions_of(&mut self, member: &MemberId) -> usize;
    /// Every removal as crashed and every forced disconnect, for people.
    fn removals(&mut self) -> Vec<String>;
}

impl Readings for EventLog {
    fn suspicions_of(&mut self, member: &MemberId) -> usize {
        self.collect()
            .iter()
            .filter(|(_, e)| matches!(e, MembershipEvent::Suspect { member: m, .. } if m == member))
            .count()
    }

    fn removals(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, event) in self.collect() {
            match event {
                MembershipEvent::ViewInstalled { crashed, .. } if !crashed.is_empty() => {
                    out.push(format!("{name} saw {crashed:?} crash"));
                }
                MembershipEvent::ForcedDisconnect { reason } => {
                    out.push(format!("{name} forced out: {reason}"));
                }
                _ => {}
            }
        }
        out
    }
}

/// Waits until heartbeats flow between `name` and its ring neighbours (the members that
/// watch it): a member never heard from gets a longer grace (its connection may still be
/// queued), and these tests measure the ordinary case.
async fn heartbeats_flowing(cluster: &Cluster, name: &str) {
    if let Err(error) = cluster.heartbeats_flowing(name, PATIENCE).await {
        panic!("{error}");
    }
}

fn member_timeout(cluster: &Cluster) -> Duration {
    cluster.config("probe", MemberKind::Member).member_timeout
}

/// Waits until every named node holds a view without `gone`; returns how long it took.
async fn until_removed(
    cluster: &Cluster,
    names: &[String],
    gone: &MemberId,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        if names
            .iter()
            .all(|n| !cluster.member(n).view().contains(gone))
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{gone:?} still in some view after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_gone_silent_is_unreachable_at_every_survivor_then_removed_after_the_removal_timeout()
 {
    init_tracing();
    let mut cluster = Cluster::new(2);
    cluster.start(18).await;
    cluster.agreed_view(20, PATIENCE).await;
    let timeout = member_timeout(&cluster);
    let removal = cluster.config("probe", MemberKind::Member).removal_timeout;
    let victim = cluster.member("member-9").id().clone();
    heartbeats_flowing(&cluster, "member-9").await;
    let mut log = EventLog::new(&cluster);
    // Its port stays open and nothing answers: no ICMP, the heartbeat path alone.
    cluster.faults("member-9").isolate();
    let isolated = Instant::now();
    let survivors: Vec<String> = cluster
        .running()
        .into_iter()
        .filter(|n| n != "member-9")
        .collect();
    // First the reversible stage, at every survivor, with the victim still in the view.
    loop {
        let told: HashSet<&str> = log
            .collect()
            .iter()
            .filter(
                |(_, e)| matches!(e, MembershipEvent::Unreachable { member } if *member == victim),
            )
            .map(|(name, _)| name.as_str())
            .collect();
        if survivors.iter().all(|n| told.contains(n.as_str())) {
            break;
        }
        assert!(
            isolated.elapsed() < timeout * 3,
            "told it is unreachable after {:?}: {told:?}",
            isolated.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let unreachable = isolated.elapsed();
    for name in &survivors {
        let member = cluster.member(name);
        assert!(member.view().contains(&victim), "{name} removed it already");
        assert_eq!(member.unreachable(), vec![victim.clone()], "{name}");
    }
    // Then the removal, once the removal timeout passed.
    let took = until_removed(
        &cluster,
        &survivors,
        &victim,
        timeout * 3 + removal + timeout,
    )
    .await;
    let removed = isolated.elapsed();
    println!(
        "silence to unreachable at every survivor: {unreachable:?}, to removal: {removed:?} \
         (member timeout {timeout:?}, removal timeout {removal:?})"
    );
    assert!(unreachable + took >= removal, "removed after {removed:?}");
    let names: Vec<&str> = survivors.iter().map(String::as_str).collect();
    let view = cluster.agreed_view_of(&names, PATIENCE).await;
    assert!(!view.contains(&victim));
    assert!(
        cluster.member("member-1").unreachable().is_empty(),
        "the flag went with it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_lan_fast_preset_a_member_gone_silent_is_removed_within_three_member_timeouts() {
    init_tracing();
    let mut cluster = Cluster::tuned(2, |config| {
        *config = config.clone().with_preset(Preset::LanFast);
    });
    cluster.start(18).await;
    cluster.agreed_view(20, PATIENCE).await;
    let timeout = member_timeout(&cluster);
    let victim = cluster.member("member-9").id().clone();
    heartbeats_flowing(&cluster, "member-9").await;
    cluster.faults("member-9").isolate();
    let survivors: Vec<String> = cluster
        .running()
        .into_iter()
        .filter(|n| n != "member-9")
        .collect();
    let took = until_removed(&cluster, &survivors, &victim, timeout * 3).await;
    println!("silence to removal at every survivor: {took:?} (member timeout {timeout:?})");
    let names: Vec<&str> = survivors.iter().map(String::as_str).collect();
    let view = cluster.agreed_view_of(&names, PATIENCE).await;
    assert!(!view.contains(&victim));
}

/// Starts a cluster of one locator, `members` members and `on_own_runtime` (a node whose
/// process can end), with a member timeout of five seconds: longer than these tests allow
/// for removal, so only a closed port can explain a fast one.
async fn cluster_with_slow_timeout(members: usize, on_own_runtime: &str) -> Cluster {
    let mut cluster = Cluster::tuned(1, |config| config.member_timeout = Duration::from_secs(5));
    cluster.start(members).await;
    cluster
        .add_on_own_runtime(cluster.config(on_own_runtime, MemberKind::Member))
        .await
        .expect("the node starts");
    cluster.agreed_view(members + 2, PATIENCE).await;
    heartbeats_flowing(&cluster, on_own_runtime).await;
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_process_ends_is_removed_well_inside_the_member_timeout() {
    init_tracing();
    let mut cluster = cluster_with_slow_timeout(5, "doomed").await;
    let timeout = member_timeout(&cluster);
    let victim = cluster.member("doomed").id().clone();
    let mut recorder = EventLog::new(&cluster);
    cluster.end_process("doomed").await;
    let survivors = cluster.running();
    // Its predecessor's heartbeats go out every fifth of the member timeout and are refused
    // at once.
    let took = until_removed(&cluster, &survivors, &victim, timeout / 2).await;
    println!("process end to removal at every survivor: {took:?} (member timeout {timeout:?})");
    let suspected_for_icmp = recorder.collect().iter().any(|(_, e)| {
        matches!(e, MembershipEvent::Suspect { member, reason }
            if *member == victim && reason.contains("ICMP port unreachable"))
    });
    assert!(suspected_for_icmp, "suspected because its port refused");
    let hinted: u64 = survivors
        .iter()
        .map(|n| cluster.member(n).stats().unreachable_suspicions)
        .sum();
    assert!(hinted >= 1);
    // The port really is closed: it can be bound again.
    std::net::UdpSocket::bind(victim.address()).expect("the ended process's port is free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_unreachable_errors_about_a_live_member_leave_it_in_the_view() {
    init_tracing();
    let cluster = cluster_with_slow_timeout(4, "target").await;
    let view = cluster.agreed_view(6, PATIENCE).await;
    let target = cluster.member("target").id().clone();
    let mut recorder = EventLog::new(&cluster);
    // Every datagram any other member sends to it is answered by a forged ICMP error, the
    // final checks' datagrams included.
    for name in cluster.running().iter().filter(|n| *n != "target") {
        cluster.faults(name).forge_unreachable(target.address());
    }
    let timeout = member_timeout(&cluster);
    // Long enough for a suspicion, a check, and a second round once the first clearing's
    // window (twice the member timeout) has passed.
    let deadline = Instant::now() + timeout * 3;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(recorder.removals().is_empty(), "{:?}", recorder.removals());
    }
    assert!(
        recorder.suspicions_of(&target) >= 2,
        "the forged errors raised suspicions, every one cleared by a final check"
    );
    let now = cluster.agreed_view(6, PATIENCE).await;
    assert_eq!(now.id(), view.id(), "no view change at all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_killed_its_successor_installs_the_view_and_all_agree() {
    init_tracing();
    let mut cluster = Cluster::new(2);
    cluster.start(6).await;
    let view = cluster.agreed_view(8, PATIENCE).await;
    let coordinator = view.coordinator().cloned().expect("coordinator");
    let successor = view
        .coordinator_among(|m| *m != coordinator)
        .cloned()
        .expect("a successor");
    heartbeats_flowing(&cluster, coordinator.name()).await;
    cluster.kill(coordinator.name()).await;
    let survivors = cluster.running();
    until_removed(
        &cluster,
        &survivors,
        &coordinator,
        member_timeout(&cluster) * 3,
    )
    .await;
    let view = cluster.agreed_view(7, PATIENCE).await;
    assert_eq!(view.coordinator(), Some(&successor), "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_datagrams_are_all_dropped_is_checked_but_never_removed() {
    init_tracing();
    let mut cluster = Cluster::new(1);
    cluster.start(4).await;
    let view = cluster.agreed_view(5, PATIENCE).await;
    let mut recorder = EventLog::new(&cluster);
    let quiet = cluster.member("member-2").id().clone();
    cluster.faults("member-2").drop_quic_datagrams(true);
    // Heartbeats gone: it is suspected again and again, and each final check over a fresh
    // connection finds it alive.
    let timeout = member_timeout(&cluster);
    let started = Instant::now();
    while started.elapsed() < timeout * 8 {
        tokio::time::sleep(timeout / 4).await;
        assert!(recorder.removals().is_empty(), "{:?}", recorder.removals());
    }
    assert!(
        recorder.suspicions_of(&quiet) > 0,
        "its silence was noticed (so the final check is what kept it)"
    );
    let now = cluster.agreed_view(5, PATIENCE).await;
    assert_eq!(now.id(), view.id(), "no view change at all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_paused_for_half_the_member_timeout_stays_and_suspects_nobody() {
    init_tracing();
    let mut cluster = Cluster::new(1);
    cluster.start(3).await;
    cluster
        .add_on_own_runtime(cluster.config("sleeper", MemberKind::Member))
        .await
        .expect("sleeper starts");
    let view = cluster.agreed_view(5, PATIENCE).await;
    let mut recorder = EventLog::new(&cluster);
    let timeout = member_timeout(&cluster);
    for _ in 0..3 {
        cluster.stall("sleeper", timeout / 2);
        tokio::time::sleep(timeout * 2).await;
    }
    let suspicions: Vec<_> = recorder
        .collect()
        .iter()
        .filter(|(_, e)| matches!(e, MembershipEvent::Suspect { .. }))
        .cloned()
        .collect();
    assert!(
        suspicions.is_empty(),
        "nobody was suspected: {suspicions:?}"
    );
    assert!(recorder.removals().is_empty());
    assert_eq!(cluster.agreed_view(5, PATIENCE).await.id(), view.id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_suspicion_keeps_a_healthy_member_and_removes_a_blackholed_one() {
    init_tracing();
    // A member timeout far beyond the test: only the application's suspicion can act.
    let mut cluster = Cluster::tuned(1, |config| config.member_timeout = Duration::from_secs(60));
    cluster.start(4).await;
    let view = cluster.agreed_view(5, PATIENCE).await;
    let mut recorder = EventLog::new(&cluster);

    let healthy = cluster.member("member-3").id().clone();
    cluster
        .member("member-1")
        .suspect(&healthy, "the application finds it slow")
        .await;
    // The coordinator (the checker) hears it and runs the final check.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let heard = recorder.collect().iter().any(|(name, e)| {
            name == "locator-1"
                && matches!(e, MembershipEvent::Suspect { member, .. } if *member == healthy)
        });
        if heard {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the coordinator hears the suspicion"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The check passes: give it ample time to have gone wrong, then look.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(recorder.removals().is_empty(), "{:?}", recorder.removals());
    assert_eq!(cluster.agreed_view(5, PATIENCE).await.id(), view.id());

    let sick = cluster.member("member-4").id().clone();
    cluster.faults("member-4").isolate();
    cluster
        .member("member-2")
        .suspect(&sick, "requests to it time out")
        .await;
    let others: Vec<String> = cluster
        .running()
        .into_iter()
        .filter(|n| n != "member-4")
        .collect();
    until_removed(&cluster, &others, &sick, PATIENCE).await;
}

/// Weights: locator 3, lead member (the oldest member) 15, other members 10. With one
/// locator and members 1-4 the total is 58.
async fn partition_case(majority: &[&str], minority: &[&str]) {
    init_tracing();
    let mut cluster = Cluster::new(1);
    cluster.start(0).await;
    // One at a time, so that member-1 is the oldest member: the lead member.
    for i in 1..=4 {
        let config = cluster.config(&format!("member-{i}"), MemberKind::Member);
        cluster.add(config).await.expect("member starts");
    }
    let view = cluster.agreed_view(5, PATIENCE).await;
    let lead = view
        .members()
        .iter()
        .find(|m| m.kind() == MemberKind::Member);
    assert_eq!(lead.map(|m| m.name()), Some("member-1"));
    let mut minority_events: Vec<_> = minority
        .iter()
        .map(|n| (n.to_string(), cluster.member(n).events()))
        .collect();
    cluster.partition(majority, minority);
    let view = cluster.agreed_view_of(majority, PATIENCE).await;
    for m in minority {
        assert!(!view.contains(cluster.member(m).id()));
    }
    for (name, events) in &mut minority_events {
        let reason = tokio::time::timeout(PATIENCE, async {
            loop {
                match events.recv().await {
                    Ok(MembershipEvent::ForcedDisconnect { reason }) => return reason,
                    Ok(_) => {}
                    Err(error) => panic!("{name}'s events ended: {error}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{name} was never forced out"));
        assert!(reason.contains("network partition"), "{name}: {reason}");
        assert!(!cluster.member(name).is_active());
    }
    for name in majority {
        assert!(cluster.member(name).is_active(), "{name} carries on");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_leaves_the_side_with_quorum_running_and_shuts_the_other_down() {
    // Locator 3 + lead 15 + member-2 10 = 28 of 48: the coordinator keeps quorum.
    partition_case(
        &["locator-1", "member-1", "member-2"],
        &["member-3", "member-4"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_with_the_coordinator_on_the_minority_side_shuts_that_side_down() {
    // Locator 3 + lead 15 = 18 of 48: the coordinator's side lost quorum.
    partition_case(
        &["member-2", "member-3", "member-4"],
        &["locator-1", "member-1"],
    )
    .await;
}

/// Ten members for five minutes with both cores kept busy by other threads: nobody is
/// suspected out of the cluster. Run by CI (`cargo test -- --ignored`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "five minutes long"]
async fn ten_members_under_a_cpu_hog_for_five_minutes_see_no_false_removal() {
    init_tracing();
    let mut cluster = Cluster::new(1);
    cluster.start(9).await;
    let view = cluster.agreed_view(10, PATIENCE).await;
    let mut recorder = EventLog::new(&cluster);
    let length = Duration::from_secs(300);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let mut x: u64 = 1;
                // Bounded: stops when told, or after the test's length plus a margin.
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && started.elapsed() < length + Duration::from_secs(60)
                {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    std::hint::black_box(x);
                }
            })
        })
        .collect();
    let started = Instant::now();
    while started.elapsed() < length {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let removals = recorder.removals();
        assert!(
            removals.is_empty(),
            "false removal after {:?}: {removals:?}",
            started.elapsed()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for hog in hogs {
        hog.join().expect("hog thread");
    }
    let suspicions = recorder
        .collect()
        .iter()
        .filter(|(_, e)| matches!(e, MembershipEvent::Suspect { .. }))
        .count();
    println!("five minutes under load: {suspicions} suspicion events, 0 removals");
    assert_eq!(cluster.agreed_view(10, PATIENCE).await.id(), view.id());
}
