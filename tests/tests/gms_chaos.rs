//! The membership protocol under injected faults ([`cohort_tests::chaos`]): one scenario
//! per known way to break a view change, then random schedules by the thousand. Every
//! invariant is checked after every step; a failure prints its seed, plan, the faults as
//! carried out and the last steps, and `COHORT_CHAOS_SEED=<seed>` replays one seed with
//! `replay_one_seed`.

use std::cell::Cell;
use std::ops::Range;
use std::time::Duration;

use cohort_membership::{GmsConfig, MembershipEvent};
use cohort_tests::chaos::{
    Action, Chaos, ChaosConfig, Death, Failure, Invariant, LostClass, Reach, run_seed,
    run_seed_with, sweep, sweep_with,
};
use cohort_transport::{MemberId, MemberKind};

const MEMBER: MemberKind = MemberKind::Member;

fn member_timeout() -> Duration {
    GmsConfig::default().member_timeout
}

/// True if every live member of `among` holds one view, and it leaves out `gone`.
fn agreed_without(chaos: &Chaos, among: &[usize], gone: &MemberId) -> bool {
    let live: Vec<usize> = among
        .iter()
        .copied()
        .filter(|i| chaos.is_live(*i))
        .collect();
    let Some(first) = live.first().and_then(|i| chaos.gms(*i).view()) else {
        return false;
    };
    !first.contains(gone) && live.iter().all(|i| chaos.gms(*i).view() == Some(first))
}

/// Heals, then waits (bounded) until the live members settle in one view (invariants 5
/// and 6).
fn heal_and_settle(chaos: &mut Chaos, limit: Duration) -> Result<(), Failure> {
    chaos.heal();
    let outcome = chaos.run_until("settled after healing", limit, |c| c.settled().is_ok());
    match (outcome, chaos.settled()) {
        (Ok(_), _) => Ok(()),
        // Out of time: what is not settled says more than the deadline.
        (Err(failure), Err(violation)) if failure.invariant() == Invariant::Deadline => {
            Err(chaos.failure(violation))
        }
        (Err(failure), _) => Err(failure),
    }
}

/// a. The coordinator prepares a view admitting a joiner, which dies before it answers: a
/// round must not wait on it for ever. A leave asked after the prepare timeout completes
/// within two member timeouts, and a crash after it is still removed.
#[test]
fn a_joiner_dying_in_a_prepared_view_does_not_block_later_leaves_and_removals()
-> Result<(), Failure> {
    let mut chaos = Chaos::new(0xa1);
    let members = chaos.form(&[MEMBER; 5])?;
    let coordinator = chaos.coordinator().expect("a coordinator");
    let joiner = chaos.add("joiner", MEMBER);
    let id = chaos.id(joiner);
    chaos.after_sending(
        coordinator,
        "its first message to the joiner",
        move |_, to| to.contains(&id),
        Reach::Fraction(1.0),
        Action::Crash(joiner),
    );
    chaos.join(joiner, coordinator)?;
    chaos.run_until("the joiner dies", Duration::from_secs(5), |c| {
        c.is_crashed(joiner)
    })?;
    chaos.run_for(GmsConfig::default().prepare_timeout + member_timeout())?;

    let leaver = members[3];
    let others: Vec<usize> = members.iter().copied().filter(|i| *i != leaver).collect();
    chaos.leave(leaver)?;
    let gone = chaos.id(leaver);
    chaos.run_until(
        "the leave installs at every other member",
        member_timeout() * 2,
        |c| agreed_without(c, &others, &gone),
    )?;

    let victim = members[4];
    let rest: Vec<usize> = others.iter().copied().filter(|i| *i != victim).collect();
    chaos.crash_with(victim, Death::HostDown);
    let gone = chaos.id(victim);
    chaos.run_until(
        "the crashed member is removed",
        member_timeout() * 10,
        |c| agreed_without(c, &rest, &gone),
    )?;
    Ok(())
}

/// b. A member asks to leave, and the coordinator pauses for three member timeouts right
/// after proposing the view without it; its successor takes over. When the old
/// coordinator wakes, the acknowledgements held meanwhile arrive late: one view per id
/// everywhere, the leaver never back once a view went without it, and the old
/// coordinator ends up out or agreeing with the others.
#[test]
fn a_coordinator_paused_mid_round_wakes_to_a_successor_without_splitting_views()
-> Result<(), Failure> {
    let mut chaos = Chaos::new(0xb0);
    let members = chaos.form(&[MEMBER; 5])?;
    let coordinator = chaos.coordinator().expect("a coordinator");
    let successor = chaos.successor().expect("a successor");
    let leaver = *members
        .iter()
        .find(|i| ![coordinator, successor].contains(i))
        .expect("a third member");
    chaos.after_sending(
        coordinator,
        "its first broadcast after the leave",
        |_, to| to.len() >= 2,
        Reach::Fraction(1.0),
        Action::Pause(coordinator, member_timeout() * 3),
    );
    chaos.leave(leaver)?;
    chaos.run_until("the coordinator pauses", Duration::from_secs(5), |c| {
        !c.is_running(coordinator)
    })?;
    chaos.run_until("the old coordinator wakes", member_timeout() * 4, |c| {
        c.is_running(coordinator)
    })?;
    heal_and_settle(&mut chaos, Duration::from_secs(40))?;
    let agreeing = chaos.gms(coordinator).view() == chaos.gms(successor).view();
    chaos.expect(
        !chaos.gms(coordinator).is_member() || agreeing,
        "the old coordinator is out, or agrees with the others",
    )
}

/// c. In a cluster of seven only the link between the coordinator and its successor is
/// cut, both ways: each can take the other for dead, but the five members that hear both
/// must not let them install two different views under one id.
#[test]
fn a_cut_between_coordinator_and_successor_alone_does_not_split_a_view_id() -> Result<(), Failure> {
    let mut chaos = Chaos::new(0xc3);
    chaos.form(&[MEMBER; 7])?;
    let coordinator = chaos.coordinator().expect("a coordinator");
    let successor = chaos.successor().expect("a successor");
    let cut = chaos.cut_both(coordinator, successor);
    chaos.run_for(member_timeout() * 8)?;
    chaos.lift(cut);
    heal_and_settle(&mut chaos, Duration::from_secs(40))
}

/// l. In a cluster of seven only the link between the coordinator and its successor is
/// cut, both ways: the successor takes the coordinator for dead and takes over while the
/// coordinator, alive and heard by everyone else, still coordinates. With invariant 4
/// fatal, at no step do two running members believe they coordinate one view id; and the
/// belief does not stay empty: a member of a newer view comes to believe it coordinates.
#[test]
fn a_coordinator_and_its_successor_cut_apart_never_both_believe_they_coordinate()
-> Result<(), Failure> {
    let config = ChaosConfig {
        strict_coordinators: true,
        ..ChaosConfig::default()
    };
    let mut chaos = Chaos::with_config(0x1ea5e, config);
    chaos.form(&[MEMBER; 7])?;
    let coordinator = chaos.coordinator().expect("a coordinator");
    let successor = chaos.successor().expect("a successor");
    let formed = chaos.newest_view().expect("a view").id();
    let cut = chaos.cut_both(coordinator, successor);
    chaos.run_until(
        "a member of a newer view believes it coordinates",
        member_timeout() * 10,
        |c| {
            (0..c.len()).any(|i| {
                c.is_running(i)
                    && c.gms(i).is_coordinator(c.at())
                    && c.gms(i).view().is_some_and(|v| v.id() > formed)
            })
        },
    )?;
    chaos.run_for(member_timeout() * 4)?;
    chaos.lift(cut);
    heal_and_settle(&mut chaos, Duration::from_secs(40))
}

/// d. In a cluster of seven, a member cut off both ways for five seconds is removed by
/// the others (too few escalations for it to find the others all dead itself); once the
/// links heal it learns that it is out, within five member timeouts.
#[test]
fn a_member_removed_while_cut_off_learns_it_is_out_after_healing() -> Result<(), Failure> {
    let mut chaos = Chaos::new(0xd4);
    let members = chaos.form(&[MEMBER; 7])?;
    let outcast = members[3];
    let rest: Vec<usize> = members.iter().copied().filter(|i| *i != outcast).collect();
    let gone = chaos.id(outcast);
    let isolated = chaos.isolate(outcast);
    let cut_at = chaos.now();
    chaos.run_until("the others remove it", Duration::from_secs(5), |c| {
        agreed_without(c, &rest, &gone)
    })?;
    chaos.run_for((cut_at + Duration::from_secs(5)).saturating_sub(chaos.now()))?;
    chaos.lift(isolated);
    chaos.run_until(
        "the removed member learns it is out",
        member_timeout() * 5,
        |c| !c.gms(outcast).is_member(),
    )?;
    heal_and_settle(&mut chaos, Duration::from_secs(40))
}

/// e. A member leaves; the coordinator crashes right after sending the view without it
/// (its second broadcast after the leave: the proposal, then the decision), which
/// reaches neither its successor nor the leaver. The successor must carry on from that
/// view: the leaver, still waiting for its leave, never appears in a later view.
#[test]
fn a_view_delivered_to_some_before_its_coordinator_crashed_is_not_undone() -> Result<(), Failure> {
    let mut chaos = Chaos::new(0xe5);
    let members = chaos.form(&[MEMBER; 5])?;
    let view = chaos.newest_view().expect("a view");
    let coordinator = chaos.coordinator().expect("a coordinator");
    let successor = chaos.successor().expect("a successor");
    let last = view.members().last().expect("members");
    let leaver = chaos.index_of(last).expect("a known member");
    let reached: Vec<usize> = members
        .iter()
        .copied()
        .filter(|i| ![coordinator, successor, leaver].contains(i))
        .collect();
    let broadcasts = Cell::new(0);
    chaos.after_sending(
        coordinator,
        "its second broadcast after the leave",
        move |_, to| {
            broadcasts.set(broadcasts.get() + usize::from(to.len() >= 2));
            to.len() >= 2 && broadcasts.get() == 2
        },
        Reach::Only(reached),
        Action::Crash(coordinator),
    );
    chaos.leave(leaver)?;
    chaos.run_until("the coordinator crashes", Duration::from_secs(5), |c| {
        c.is_crashed(coordinator)
    })?;
    let gone = chaos.id(leaver);
    let survivors: Vec<usize> = members
        .iter()
        .copied()
        .filter(|i| ![coordinator, leaver].contains(i))
        .collect();
    chaos.run_until(
        "the survivors agree on a view without the leaver",
        Duration::from_secs(20),
        |c| agreed_without(c, &survivors, &gone),
    )?;
    heal_and_settle(&mut chaos, Duration::from_secs(40))
}

/// f. One locator and two members; the lead member (weight 15 of 28) crashes with its
/// host up, so every final check of it is refused: that is proof of death, not a
/// partition, and the two survivors install the view without it instead of shutting
/// down.
#[test]
fn a_refused_lead_member_is_removed_without_forcing_the_survivors_out() -> Result<(), Failure> {
    let mut chaos = Chaos::new(0xf6);
    let members = chaos.form(&[MemberKind::Locator, MEMBER, MEMBER])?;
    let view = chaos.newest_view().expect("a view");
    let lead = view
        .members()
        .iter()
        .find(|m| m.kind() == MEMBER)
        .and_then(|m| chaos.index_of(m))
        .expect("a lead member");
    let survivors: Vec<usize> = members.iter().copied().filter(|i| *i != lead).collect();
    chaos.crash_with(lead, Death::PortClosed);
    let gone = chaos.id(lead);
    chaos.run_until(
        "the survivors install a view without the lead member",
        member_timeout() * 10,
        |c| agreed_without(c, &survivors, &gone) && survivors.iter().all(|i| c.is_live(*i)),
    )?;
    let forced = survivors.iter().any(|i| {
        chaos
            .events_of(*i)
            .any(|e| matches!(e, MembershipEvent::ForcedDisconnect { .. }))
    });
    chaos.expect(!forced, "no survivor was forced out")
}

/// g. Findings of final checks outlive the faults that caused them. In a cluster of seven
/// (75 of weight), two members are cut off for two seconds, long enough for the
/// coordinator to find them dead (20) and propose the view without them; as it does, two
/// more pause for three seconds, so that the round cannot gather a majority and fails at
/// its deadline, and they are found dead too (20 more). By then the cut has ended: the
/// coordinator and the four members it reaches hold 55 of 75. Its findings of 40 must not
/// shut that side down (chaos seed 84 lost its cluster so): they are checked again first,
/// and the coordinator and the two members never cut off or paused stay in the cluster.
/// (The two cut off may still be removed: two members accepted the view without them
/// before the cut ended, so a later round must carry it on.)
#[test]
fn findings_from_before_a_cut_ended_do_not_shut_down_a_side_that_holds_a_quorum()
-> Result<(), Failure> {
    let mut chaos = Chaos::new(0x97);
    let members = chaos.form(&[MEMBER; 7])?;
    let coordinator = chaos.coordinator().expect("a coordinator");
    let view = chaos.newest_view().expect("a view");
    let order: Vec<usize> = view
        .members()
        .iter()
        .filter_map(|m| chaos.index_of(m))
        .collect();
    assert_eq!(order[0], coordinator, "the lead member coordinates");
    let (paused, cut) = ([order[1], order[2]], [order[5], order[6]]);
    let rest: Vec<usize> = members
        .iter()
        .copied()
        .filter(|i| !cut.contains(i))
        .collect();
    let partition = chaos.partition(&[cut.to_vec(), rest]);
    chaos.lift_after(partition, Duration::from_secs(2));
    for i in paused {
        chaos.when(
            "the coordinator holds a prepared view",
            move |c| c.gms(coordinator).prepared().is_some(),
            Action::Pause(i, Duration::from_secs(3)),
        );
    }
    chaos.run_for(Duration::from_secs(6))?;
    heal_and_settle(&mut chaos, Duration::from_secs(40))?;
    let shut_down: Vec<&str> = members
        .iter()
        .copied()
        .filter(|i| {
            chaos.events_of(*i).any(|e| {
                matches!(e, MembershipEvent::ForcedDisconnect { reason }
                    if reason.starts_with("network partition"))
            })
        })
        .map(|i| chaos.name(i))
        .collect();
    chaos.expect(
        shut_down.is_empty(),
        format!("nobody shuts down for a partition, but {shut_down:?} did"),
    )?;
    let untouched = [order[0], order[3], order[4]];
    chaos.expect(
        untouched.iter().all(|i| chaos.gms(*i).is_member()),
        "the coordinator and the two members never cut off or paused stay in the cluster",
    )
}

/// Seeds whose cluster was lost, every member shut down, although the side that gave up
/// held a reachable majority: its partition check counted findings of final checks that
/// were stale. 84: members found unanswering during a cut that had ended, handed back by a
/// round that failed; 92: a coordinator found dead while paused, whose decision the checker
/// then installed; 1816: a member that gave up 0.8 s after healing, with a reachable
/// majority. (266 was pinned here first; since heartbeats moved to a quarter of the member
/// timeout its schedule gives up 86 ms after healing on findings of a cut that was real,
/// with or without the fix, so it no longer tests it.)
#[test]
fn seeds_that_lost_their_cluster_to_stale_findings_keep_it() -> Result<(), Failure> {
    keep_their_cluster(&[84, 92, 1816])
}

/// Seeds whose members shut down for a partition that had ended: the question of a catch-up
/// (to every other member of the view) was lost to a cut, and the patience ran out on that
/// one question although the cut ended within it (995, 2739 and 2974 after healing, with a
/// majority live and reachable; 186 during other faults). The silent are now asked
/// again within the patience.
#[test]
fn seeds_that_lost_their_cluster_to_one_unanswered_question_keep_it() -> Result<(), Failure> {
    keep_their_cluster(&[995, 2739, 2974, 186])
}

/// Runs each of `seeds` and fails, with how each member ended, unless it kept its cluster.
fn keep_their_cluster(seeds: &[u64]) -> Result<(), Failure> {
    for &seed in seeds {
        let report = run_seed(seed)?;
        assert!(
            !report.cluster_lost,
            "seed {seed} lost its cluster: {:#?}",
            report.fates
        );
    }
    Ok(())
}

/// Runs `seeds` and fails with a summary (and the first failure in full) if any broke an
/// invariant.
fn random_schedules(seeds: Range<u64>) {
    random_schedules_in(seeds, &ChaosConfig::default());
}

/// [`random_schedules`] in a world configured by `config`.
fn random_schedules_in(seeds: Range<u64>, config: &ChaosConfig) {
    let outcome = sweep_with(seeds, config);
    println!("{}", outcome.summary());
    if let Some(first) = &outcome.first_failure {
        eprintln!("first failure:\n{first}");
    }
    assert!(outcome.failures.is_empty(), "{}", outcome.summary());
}

// 2,000 seeds in four tests, so that they run in parallel.

/// Two-stage schedules that never converged after healing: 2789, a crashed coordinator
/// whose checker stopped checking before the removal timeout and kept its findings to
/// itself; 197, members that took another member's reports for their checker's and never
/// escalated to a checker that had left.
#[test]
fn two_stage_seeds_whose_findings_were_lost_with_a_change_of_checker_converge() {
    for seed in [2789, 197] {
        if let Err(failure) = run_seed_with(seed, &ChaosConfig::two_stage()) {
            panic!("{failure}");
        }
    }
}

/// Two-stage schedules whose members stayed behind the newest view for good, each failed
/// before its fix. 2809 and 4740: the member in line to coordinate the newest view had
/// missed it (and the one before), so nobody coordinated it once its coordinator died; the
/// next in line takes over now. 13335, 2814, 3863, 9567, 10494, 11497 and 28335: members
/// that missed a view while cut off could not catch up, because the members of their older
/// view that had moved on no longer held a weighted majority of it (some had died or left
/// since); the coordinator of the newest view now makes one more view change, which they
/// vote on and install. In 28335 a member removed meanwhile was never told it was out.
/// One-stage seed 21020 failed while a member behind was passed over as the checker too:
/// the suspects it had been told of were checked by nobody. 43780: the member in line after
/// a crashed coordinator held view 2 of 4 and was the checker; the members that escalated
/// to it found it alive every time, so the crashed members stayed; a member whose own final
/// check finds the checker behind now checks in its place. 34403 and 87726, since
/// heartbeats go one way round the ring: a member that missed the view a newcomer joined in
/// heard only from that newcomer, its predecessor in the newest view, and took no notice of
/// a member outside its own view; a newer view id from anyone now makes it catch up.
#[test]
fn two_stage_seeds_whose_members_stayed_behind_converge() {
    for seed in [
        2809, 4740, 13335, 2814, 3863, 9567, 10494, 11497, 28335, 43780, 34403, 87726,
    ] {
        if let Err(failure) = run_seed_with(seed, &ChaosConfig::two_stage()) {
            panic!("{failure}");
        }
    }
    if let Err(failure) = run_seed(21020) {
        panic!("{failure}");
    }
}

/// The first 500 schedules again with the protocol's default removal timeout: a member
/// whose final check goes unanswered is unreachable first and removed only if it stays so.
#[test]
fn random_schedules_with_two_stages_0_to_500() {
    random_schedules_in(0..500, &ChaosConfig::two_stage());
}

#[test]
fn random_schedules_0_to_500() {
    random_schedules(0..500);
}

#[test]
fn random_schedules_500_to_1000() {
    random_schedules(500..1000);
}

#[test]
fn random_schedules_1000_to_1500() {
    random_schedules(1000..1500);
}

#[test]
fn random_schedules_1500_to_2000() {
    random_schedules(1500..2000);
}

/// `COHORT_CHAOS_SEED=<seed>` replays that seed, printing its report or its failure;
/// without it there is nothing to do. `COHORT_CHAOS_TWO_STAGE=1` replays it with the
/// default removal timeout.
#[test]
fn replay_one_seed() -> Result<(), Failure> {
    let Ok(seed) = std::env::var("COHORT_CHAOS_SEED") else {
        println!("set COHORT_CHAOS_SEED to replay one seed");
        return Ok(());
    };
    let seed: u64 = seed.trim().parse().expect("COHORT_CHAOS_SEED is a number");
    let report = match std::env::var_os("COHORT_CHAOS_TWO_STAGE") {
        Some(_) => run_seed_with(seed, &ChaosConfig::two_stage())?,
        None => run_seed(seed)?,
    };
    for line in &report.log {
        println!("{line}");
    }
    println!("{report:#?}");
    Ok(())
}

/// `COHORT_CHAOS_SEEDS=<from>..<to>` as two halves, one per thread; `None` (said) if unset.
fn seed_halves() -> Option<[Range<u64>; 2]> {
    let Ok(range) = std::env::var("COHORT_CHAOS_SEEDS") else {
        println!("set COHORT_CHAOS_SEEDS to <from>..<to>");
        return None;
    };
    let (from, to) = range.trim().split_once("..").expect("<from>..<to>");
    let from: u64 = from.parse().expect("a number");
    let to: u64 = to.parse().expect("a number");
    let middle = from + (to.saturating_sub(from)) / 2;
    Some([from..middle, middle..to])
}

/// `COHORT_CHAOS_SEEDS=<from>..<to>` runs that range of seeds on two threads and lists every
/// failing seed with what it broke (for grouping failures by cause); without it there is
/// nothing to do. `COHORT_CHAOS_TWO_STAGE=1` runs them with the default removal timeout
/// ([`ChaosConfig::two_stage`]). For a release build: `cargo test --release -p
/// cohort-tests --test gms_chaos -- --ignored sweep_a_range_of_seeds --nocapture`.
#[test]
#[ignore = "a sweep of a range of seeds given in COHORT_CHAOS_SEEDS"]
fn sweep_a_range_of_seeds() {
    let Some(halves) = seed_halves() else {
        return;
    };
    let config = match std::env::var_os("COHORT_CHAOS_TWO_STAGE") {
        Some(_) => ChaosConfig::two_stage(),
        None => ChaosConfig::default(),
    };
    std::thread::scope(|scope| {
        let halves = halves.map(|seeds| scope.spawn(|| sweep_with(seeds, &config)));
        for half in halves {
            let outcome = half.join().expect("a sweep thread finished");
            println!("{}", outcome.summary());
            for (seed, violation) in &outcome.failures {
                println!("seed {seed}: {violation}");
            }
        }
    });
}

/// `COHORT_CHAOS_SEEDS=<from>..<to>` runs that range of seeds on two threads and lists every
/// run that ended with the cluster lost: its seed, why ([`LostClass`]), and how each member
/// ended (crashed, or stopped and how it stood then: the weight of its view that was live,
/// reachable, crashed, stopped). Without it there is nothing to do. For a release build:
/// `cargo test --release -p cohort-tests --test gms_chaos -- --ignored
/// lost_clusters_in_a_range_of_seeds --nocapture`.
#[test]
#[ignore = "a sweep of a range of seeds given in COHORT_CHAOS_SEEDS"]
fn lost_clusters_in_a_range_of_seeds() {
    let Some(halves) = seed_halves() else {
        return;
    };
    let mut by_class: std::collections::BTreeMap<LostClass, Vec<u64>> = Default::default();
    std::thread::scope(|scope| {
        let halves = halves.map(|seeds| scope.spawn(|| sweep(seeds)));
        for half in halves {
            let outcome = half.join().expect("a sweep thread finished");
            println!("{}", outcome.summary());
            for (seed, class, fates) in &outcome.lost {
                println!("seed {seed}: cluster lost, {class:?}");
                for fate in fates {
                    println!("  {fate}");
                }
                by_class.entry(*class).or_default().push(*seed);
            }
        }
    });
    for (class, seeds) in &by_class {
        let some: Vec<String> = seeds.iter().take(12).map(u64::to_string).collect();
        println!("{class:?}: {} (seeds {}…)", seeds.len(), some.join(", "));
    }
}

/// The same seed gives the same run, whatever order `Gms` emits its outputs in (only the
/// order of members inside a message's list may differ, which the comparison leaves out).
#[test]
fn a_seed_replays_exactly() {
    let outcome = |seed: u64| match run_seed(seed) {
        Ok(report) => format!("{report:?}"),
        Err(failure) => format!(
            "{:?} {} {:?}",
            failure.at(),
            failure.violation(),
            failure.log()
        ),
    };
    for seed in [3, 11, 12] {
        assert_eq!(
            outcome(seed),
            outcome(seed),
            "seed {seed} ran differently twice"
        );
    }
}

/// 100,000 seeds, on two threads: `cargo test --release -p cohort-tests --test gms_chaos
/// -- --ignored soak` (CI runs this one; the two-stage soak below still fails on seed
/// 43780 and runs by hand). It fails on any broken invariant, agreement (invariants 1-3)
/// and liveness after healing (invariants 5 and 6) alike, as the 2,000 schedules of the
/// plain tests do; each failing seed is listed to replay.
#[test]
#[ignore = "a soak of 100,000 seeds, for a release build"]
fn soak_100_000_random_schedules() {
    soak(&ChaosConfig::default());
}

/// The same 100,000 seeds with the protocol's default removal timeout (two stages).
#[test]
#[ignore = "a soak of 100,000 seeds, for a release build"]
fn soak_100_000_random_schedules_with_two_stages() {
    soak(&ChaosConfig::two_stage());
}

/// Seeds 0..100,000 in `config`'s world, on two threads; fails listing every seed that
/// broke an invariant.
fn soak(config: &ChaosConfig) {
    std::thread::scope(|scope| {
        let halves = [0..50_000, 50_000..100_000]
            .map(|seeds| scope.spawn(move || sweep_with(seeds, config)));
        let mut broken = Vec::new();
        for half in halves {
            let outcome = half.join().expect("a soak thread finished");
            println!("{}", outcome.summary());
            if let Some(first) = &outcome.first_failure {
                eprintln!("first failure:\n{first}");
            }
            broken.extend(
                outcome
                    .failures
                    .iter()
                    .map(|(seed, violation)| format!("seed {seed}: {violation}")),
            );
        }
        assert!(broken.is_empty(), "invariants broken: {broken:#?}");
    });
}

/// Seeds that found defects of protocol 2 while it was written, each replayed as a plain
/// test (each failed before its fix): 1661, agreement broken by leaving proven-dead
/// members out of the quorum; 67 and 210, removed members that never learned it (no hint to
/// non-members, no lone answer once the majority stayed silent); 1184 and 1817, members
/// stuck behind their own vote; 1678, a decision that did not complete everywhere; 51975, a
/// removed member admitted again from a stale join request; 1671, a checker that did not
/// coordinate keeping its finding to itself; 2577, a member that had voted on the next base
/// forgetting its vote on its installed one, so that a decision whose only installers died
/// could not be found again; 13090, members that accepted a decided proposal under a later
/// ballot refusing the decision made under the earlier one; 34624 and 52518, the members of
/// a majority that accepted a decision which reached only a minority, each waiting in its
/// catch-up for the others to have installed it.
#[test]
fn seeds_that_found_defects_of_protocol_2_hold_every_invariant() -> Result<(), Failure> {
    for seed in [
        1661, 67, 210, 1184, 1817, 1678, 51975, 1671, 2577, 13090, 34624, 52518,
    ] {
        run_seed(seed)?;
    }
    Ok(())
}
