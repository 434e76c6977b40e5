//! The membership protocol alone, in virtual time: [`Sim`] runs `Gms` instances on a
//! simulated network with seeded latency, and invariants are checked at every step.

use std::sync::Arc;
use std::time::Duration;

use cohort_membership::{
    AllowAll, Authenticator, Credentials, Gms, GmsConfig, JoinRejection, MembershipEvent,
    SharedSecret,
};
use cohort_tests::gms_sim::Sim;
use cohort_transport::{MemberId, MemberKind, ProtocolVersion, ViewId};

#[test]
fn a_thousand_members_join_and_leave_in_batches_with_every_invariant_held() {
    let mut sim = Sim::new(42);
    let allow: Arc<dyn Authenticator> = Arc::new(AllowAll);
    let founder = sim.add("m0", MemberKind::Member, allow.clone());
    sim.founder(founder);
    const BATCH: usize = 100;
    const TOTAL: usize = 1000;
    let mut formation_views = 0;
    while sim.members.len() < TOTAL {
        let coordinator = sim.coordinator();
        let first = sim.members.len();
        let batch: Vec<usize> = (first..(first + BATCH).min(TOTAL))
            .map(|k| sim.add(&format!("m{k}"), MemberKind::Member, allow.clone()))
            .collect();
        let before = sim.invariants.len();
        for &i in &batch {
            sim.join(i, coordinator, Credentials::default());
        }
        sim.run_until("the batch joins", Duration::from_secs(60), |s| {
            batch.iter().all(|i| s.members[*i].is_member())
        });
        formation_views += sim.invariants.len() - before;
    }
    let size = sim.members.len();
    assert!(size >= TOTAL);
    // Let the last installs reach everyone, then every member holds the same view.
    sim.run_until(
        "every member has the full view",
        Duration::from_secs(10),
        |s| {
            s.members
                .iter()
                .all(|m| m.view().is_some_and(|v| v.len() == size))
        },
    );
    let ids: std::collections::HashSet<ViewId> = sim
        .members
        .iter()
        .filter_map(|m| m.view().map(|v| v.id()))
        .collect();
    assert_eq!(ids.len(), 1, "one view everywhere");
    println!(
        "formed {size} members: {formation_views} views, {:.1} messages per member, {:?} virtual",
        sim.messages_sent as f64 / size as f64,
        sim.now
    );

    // Leave in batches, never the coordinator of the moment.
    let mut present: Vec<usize> = (0..size).collect();
    while present.len() > BATCH {
        let coordinator = sim.coordinator();
        let leaving: Vec<usize> = present
            .iter()
            .copied()
            .filter(|i| *i != coordinator)
            .take(BATCH)
            .collect();
        for &i in &leaving {
            sim.leave(i);
        }
        sim.run_until("the batch leaves", Duration::from_secs(60), |s| {
            leaving.iter().all(|i| !s.members[*i].is_member())
        });
        present.retain(|i| !leaving.contains(i));
        for &i in &leaving {
            assert!(
                sim.events_of(i).any(|e| *e == MembershipEvent::Left),
                "member {i} left gracefully"
            );
        }
    }
    sim.run_until("the rest agree", Duration::from_secs(10), |s| {
        present.iter().all(|i| {
            s.members[*i]
                .view()
                .is_some_and(|v| v.len() == present.len())
        })
    });
    println!(
        "{} views installed in all, {} messages",
        sim.invariants.len(),
        sim.messages_sent
    );
    // The coordinator lease is counted apart: a request and a grant per member every
    // lease interval, whatever happens to the membership.
    println!(
        "{} lease messages, {:.1} per member per second of {:?} virtual",
        sim.lease_messages_sent,
        sim.lease_messages_sent as f64 / size as f64 / sim.now.as_secs_f64(),
        sim.now
    );
}

#[test]
fn the_coordinator_leaves_and_the_next_oldest_takes_over() {
    let mut sim = Sim::new(7);
    let allow: Arc<dyn Authenticator> = Arc::new(AllowAll);
    let members = sim.form(5, &allow);
    let elder_before = sim.members[members[1]]
        .view()
        .and_then(|v| v.elder().cloned());
    assert_eq!(
        elder_before,
        Some(sim.id(members[0])),
        "the oldest is the elder"
    );
    sim.leave(members[0]);
    sim.run_until("the coordinator is out", Duration::from_secs(30), |s| {
        !s.members[members[0]].is_member()
            && members[1..]
                .iter()
                .all(|i| s.members[*i].view().is_some_and(|v| v.len() == 4))
    });
    let view = sim.members[members[2]].view().expect("view").clone();
    assert_eq!(
        view.coordinator(),
        Some(&sim.id(members[1])),
        "the next oldest coordinates"
    );
    assert_eq!(view.elder(), Some(&sim.id(members[1])), "and is the elder");
    assert!(
        sim.events_of(members[0])
            .any(|e| *e == MembershipEvent::Left)
    );
    // The new coordinator admits the next joiner.
    let late = sim.add("late", MemberKind::Member, allow);
    sim.join(late, members[1], Credentials::default());
    sim.run_until("the late member joins", Duration::from_secs(30), |s| {
        s.members[late].is_member()
    });
}

#[test]
fn wrong_credentials_older_versions_and_taken_names_are_refused_with_reasons() {
    let mut sim = Sim::new(9);
    let auth: Arc<dyn Authenticator> = Arc::new(SharedSecret::secret("s3cret"));
    let coordinator = sim.add("c", MemberKind::Locator, auth.clone());
    sim.founder(coordinator);
    let good = Credentials::default().with(SharedSecret::SECRET, "s3cret");
    let bad = sim.add("intruder", MemberKind::Member, auth.clone());
    sim.join(
        bad,
        coordinator,
        Credentials::default().with(SharedSecret::SECRET, "guess"),
    );
    let dup = sim.add("c", MemberKind::Member, auth.clone());
    sim.join(dup, coordinator, good.clone());
    sim.run_until("both refused", Duration::from_secs(30), |s| {
        [bad, dup].iter().all(|i| {
            s.events_of(*i)
                .any(|e| matches!(e, MembershipEvent::JoinRejected { .. }))
        })
    });
    assert_eq!(
        rejection(&sim, bad),
        Some(JoinRejection::Authentication(
            "the shared secret does not match".into()
        ))
    );
    assert_eq!(
        rejection(&sim, dup),
        Some(JoinRejection::NameInUse("c".into()))
    );

    // Version gating: once a newer member is in, an older one is refused, both versions named.
    let newer = sim.add("newer", MemberKind::Member, auth.clone());
    let newer_id = sim.members[newer]
        .me()
        .clone()
        .with_version(ProtocolVersion(3));
    sim.members[newer] = Gms::new(newer_id, GmsConfig::default(), auth.clone());
    sim.index.insert(sim.members[newer].me().uuid(), newer);
    sim.join(newer, coordinator, good.clone());
    sim.run_until("the newer member joins", Duration::from_secs(30), |s| {
        s.members[newer].is_member()
    });
    let old = sim.add("old", MemberKind::Member, auth);
    sim.join(old, coordinator, good);
    sim.run_until(
        "the older member is refused",
        Duration::from_secs(30),
        |s| {
            s.events_of(old)
                .any(|e| matches!(e, MembershipEvent::JoinRejected { .. }))
        },
    );
    assert_eq!(
        rejection(&sim, old),
        Some(JoinRejection::VersionRefused {
            joining: ProtocolVersion(2),
            cluster: ProtocolVersion(3)
        })
    );
    assert!(!sim.invariants.ever_member(sim.members[bad].me().uuid()));
    assert!(!sim.invariants.ever_member(sim.members[old].me().uuid()));
}

#[test]
fn a_member_that_never_accepts_is_checked_and_removed_after_the_view_it_was_silent_in() {
    let mut sim = Sim::new(3);
    let allow: Arc<dyn Authenticator> = Arc::new(AllowAll);
    let members = sim.form(4, &allow);
    // m3 dies silently; then a new member joins, so a view change needs m3's ack.
    sim.dead[members[3]] = true;
    let joiner = sim.add("joiner", MemberKind::Member, allow);
    sim.join(joiner, members[0], Credentials::default());
    sim.run_until(
        "the joiner is admitted without the dead member",
        Duration::from_secs(30),
        |s| s.members[joiner].is_member(),
    );
    // The majority accepted the view with the joiner: it is decided at the prepare timeout
    // with the silent member still in, which is then checked and removed in the next view.
    let live = [members[0], members[1], members[2], joiner];
    sim.run_until(
        "every live member installs a view with the joiner, without the dead member",
        Duration::from_secs(30),
        |s| {
            live.iter().all(|i| {
                s.members[*i].view().is_some_and(|v| {
                    v.contains(s.members[joiner].me()) && !v.contains(s.members[members[3]].me())
                })
            })
        },
    );
    let view = sim.members[members[0]].view().expect("view").clone();
    assert!(
        !view.contains(&sim.id(members[3])),
        "the silent member was left out"
    );
    assert!(view.contains(&sim.id(joiner)));
    let crashed = sim.events_of(members[1]).any(|e| {
        matches!(e, MembershipEvent::ViewInstalled { crashed, .. } if crashed.contains(&sim.id(members[3])))
    });
    assert!(crashed, "members learn it was removed as crashed");
}

fn rejection(sim: &Sim, i: usize) -> Option<JoinRejection> {
    sim.events_of(i).find_map(|e| match e {
        MembershipEvent::JoinRejected { reason, .. } => Some(reason.clone()),
        _ => None,
    })
}

#[test]
fn a_locator_joining_takes_over_and_a_pending_joiner_is_redirected_to_it() {
    let mut sim = Sim::new(5);
    let allow: Arc<dyn Authenticator> = Arc::new(AllowAll);
    let first = sim.add("first", MemberKind::Member, allow.clone());
    let locator = sim.add("locator", MemberKind::Locator, allow.clone());
    let joiner = sim.add("joiner", MemberKind::Member, allow);
    sim.founder(first);
    sim.join(locator, first, Credentials::default());
    // The joiner asks while the locator's admission is being prepared.
    sim.run_until(
        "the locator's view is prepared",
        Duration::from_secs(30),
        |s| s.members[locator].prepared().is_some(),
    );
    sim.join(joiner, first, Credentials::default());
    sim.run_until(
        "the joiner is admitted by the locator",
        Duration::from_secs(30),
        |s| s.members[joiner].is_member(),
    );
    let view = sim.members[joiner].view().expect("view").clone();
    assert_eq!(
        view.coordinator(),
        Some(&sim.id(locator)),
        "the oldest locator coordinates"
    );
    assert_eq!(view.len(), 3);
    // Nobody is left with a deadline in the past (a driver would spin on it).
    let now = sim.at();
    for gms in &sim.members {
        assert!(
            gms.poll_timeout().is_none_or(|t| t > now),
            "{gms:?} has a stale deadline"
        );
    }
}

#[test]
fn crashed_members_and_a_crashed_coordinator_are_found_checked_and_removed() {
    let mut sim = Sim::new(11);
    let allow: Arc<dyn Authenticator> = Arc::new(AllowAll);
    let members = sim.form(8, &allow);
    let agreed_without = |s: &Sim, live: &[usize], gone: &MemberId| {
        let views: Vec<_> = live.iter().filter_map(|&i| s.members[i].view()).collect();
        views.len() == live.len()
            && views
                .iter()
                .all(|v| !v.contains(gone) && v.id() == views[0].id())
    };

    // Heartbeats flow for a while (a neighbour never heard from gets a longer grace).
    let settled = sim.now + Duration::from_secs(1);
    sim.run_until("heartbeats flow", Duration::from_secs(2), |s| {
        s.now >= settled
    });

    // An ordinary member dies silently: only its ring neighbours notice, the coordinator
    // checks it and removes it.
    let victim = members[5];
    sim.dead[victim] = true;
    let gone = sim.id(victim);
    let live: Vec<usize> = members.iter().copied().filter(|&i| i != victim).collect();
    let started = sim.now;
    sim.run_until("the dead member is removed", Duration::from_secs(10), |s| {
        agreed_without(s, &live, &gone)
    });
    let took = sim.now - started;
    assert!(
        took < Duration::from_secs(3),
        "took {took:?} of virtual time"
    );

    // Then the coordinator: its successor checks it and installs the view.
    let coordinator = sim.coordinator();
    let before = sim.members[coordinator].view().expect("view").clone();
    let gone = sim.id(coordinator);
    let successor = before
        .coordinator_among(|m| *m != gone)
        .cloned()
        .expect("a successor");
    sim.dead[coordinator] = true;
    let live: Vec<usize> = live.into_iter().filter(|&i| i != coordinator).collect();
    sim.run_until(
        "the dead coordinator is removed",
        Duration::from_secs(10),
        |s| agreed_without(s, &live, &gone),
    );
    let view = sim.members[live[0]].view().expect("view").clone();
    assert_eq!(view.len(), 6);
    assert_eq!(
        view.coordinator(),
        Some(&successor),
        "the next oldest took over"
    );
    let crashed_events = sim
        .events_of(live[1])
        .filter(
            |e| matches!(e, MembershipEvent::ViewInstalled { crashed, .. } if !crashed.is_empty()),
        )
        .count();
    assert_eq!(crashed_events, 2, "two view changes, each with one crash");
}
