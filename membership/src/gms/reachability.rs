//! Two stages of failure: a member that does not answer its final check is first
//! *unreachable*, a reversible flag with an event, and *removed* only once it stayed so for
//! the removal timeout (ARCHITECTURE.md, "Unreachable, then removed").
//!
//! ```text
//! checker: final check NoAnswer ─► found (since = now) ─► Notice {unreachable} to the view
//!            │ every recheck interval: Output::Check again
//!            ├─ Alive ─────────────────► forgotten ─► Notice {reachable} to the view
//!            ├─ Refused / Out ─────────► removed at once (positive evidence of death)
//!            └─ NoAnswer, since + removal_timeout passed ─► probe: ProbeRequest to a few
//!                 other members, each runs its own check (Output::Probe)
//!                 ├─ any answers reached ─► a link problem: stays, since = now, Notice
//!                 │                         {reachable}; probed again a removal timeout on
//!                 └─ none within the probe's patience (or no one to ask) ─► removed
//! every member: Notice from a member of its view ─► flagged / unflagged, with an event
//! ```
//!
//! A removal timeout of zero is the one-stage behaviour: a check without an answer removes.
//! The flag is each member's own knowledge, not part of the agreed view: it changes without
//! a view change and is dropped with the member when a view without it installs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cohort_transport::{MemberId, View};
use uuid::Uuid;

/// What a failed final check (no answer) leads to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AfterSilence {
    /// Remove the member now: the removal timeout is zero, or it has passed.
    Remove,
    /// Keep it and check again later; `newly` if it was reachable until now.
    Unreachable {
        /// True the first time: the members of the view are told.
        newly: bool,
    },
    /// The removal timeout passed: ask others to probe it before removing it.
    TimedOut,
}

/// What a probe answer leads to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ProbeVerdict {
    /// Not an answer this member waits for.
    Ignored,
    /// Another member reached it: the link from the checker failed, not the member.
    Reached,
    /// Every member asked said it did not reach it.
    NoneReached,
    /// Others have still to answer.
    Pending,
}

/// The members asked to probe a finding, and until when they may answer.
#[derive(Debug)]
struct Probe {
    asked: Vec<Uuid>,
    deadline: Instant,
}

/// A member the checker found unreachable.
#[derive(Debug)]
struct Found {
    member: MemberId,
    /// Since when it has been silent (its first unanswered check counts from when its
    /// silence began), or since another member last reached it for a probe.
    since: Instant,
    /// When to check it again; `None` while a check runs.
    recheck_at: Option<Instant>,
    /// The indirect probe under way, once the removal timeout passed.
    probe: Option<Probe>,
}

/// The checker's findings and every member's flags. See the module docs.
#[derive(Debug)]
pub(crate) struct Reachability {
    removal_timeout: Duration,
    recheck_interval: Duration,
    /// At the checker: members whose final check went unanswered, not removed yet.
    found: HashMap<Uuid, Found>,
    /// At every member: members reported unreachable, with when the latest report came
    /// and from whom (the member whose check found it).
    flagged: HashMap<Uuid, (MemberId, Instant, Uuid)>,
    /// Probes this member runs for checkers: (asker, member) with the view the request
    /// named. One at a time per pair, so that repeated requests cost one check.
    helping: HashMap<(Uuid, Uuid), cohort_transport::ViewId>,
}

impl Reachability {
    /// Findings kept for `removal_timeout`, checked again every `recheck_interval`.
    pub(crate) fn new(removal_timeout: Duration, recheck_interval: Duration) -> Self {
        Reachability {
            removal_timeout,
            recheck_interval,
            found: HashMap::new(),
            flagged: HashMap::new(),
            helping: HashMap::new(),
        }
    }

    /// How long a member may stay unreachable before it is removed.
    pub(crate) fn removal_timeout(&self) -> Duration {
        self.removal_timeout
    }

    /// The checker's final check of `member` went unanswered at `now`; it has been silent
    /// since `silent_since` (at most `now`), from which a first finding's removal timeout
    /// counts.
    pub(crate) fn check_failed(
        &mut self,
        now: Instant,
        member: &MemberId,
        silent_since: Instant,
    ) -> AfterSilence {
        if self.removal_timeout.is_zero() {
            return AfterSilence::Remove;
        }
        match self.found.get_mut(&member.uuid()) {
            Some(found) if found.probe.is_some() => {
                found.recheck_at = Some(now + self.recheck_interval);
                AfterSilence::Unreachable { newly: false }
            }
            Some(found) if now.saturating_duration_since(found.since) >= self.removal_timeout => {
                found.recheck_at = Some(now + self.recheck_interval);
                AfterSilence::TimedOut
            }
            Some(found) => {
                found.recheck_at = Some(now + self.recheck_interval);
                AfterSilence::Unreachable { newly: false }
            }
            None => {
                self.found.insert(
                    member.uuid(),
                    Found {
                        member: member.clone(),
                        since: silent_since.min(now),
                        recheck_at: Some(now + self.recheck_interval),
                        probe: None,
                    },
                );
                AfterSilence::Unreachable { newly: true }
            }
        }
    }

    /// The checker heard from `member` (its check passed), or removes it on positive
    /// evidence: it is no longer a finding. True if it was one.
    pub(crate) fn forget(&mut self, member: &MemberId) -> bool {
        self.found.remove(&member.uuid()).is_some()
    }

    /// True if the checker holds `member` unreachable.
    pub(crate) fn is_found(&self, uuid: Uuid) -> bool {
        self.found.contains_key(&uuid)
    }

    /// The members in `asked` probe `member` for this checker until `deadline`.
    pub(crate) fn start_probe(&mut self, member: &MemberId, asked: Vec<Uuid>, deadline: Instant) {
        if let Some(found) = self.found.get_mut(&member.uuid()) {
            found.probe = Some(Probe { asked, deadline });
        }
    }

    /// `from` answered the probe of `member`.
    pub(crate) fn probe_answered(
        &mut self,
        now: Instant,
        member: Uuid,
        from: Uuid,
        reached: bool,
    ) -> ProbeVerdict {
        let Some(found) = self.found.get_mut(&member) else {
            return ProbeVerdict::Ignored;
        };
        let Some(probe) = found.probe.as_mut().filter(|p| p.asked.contains(&from)) else {
            return ProbeVerdict::Ignored;
        };
        if reached {
            // It stays, still a finding (the checker cannot reach it, and no new notice
            // goes out): a new silence of a removal timeout before the next probe.
            found.probe = None;
            found.since = now;
            return ProbeVerdict::Reached;
        }
        probe.asked.retain(|uuid| *uuid != from);
        if probe.asked.is_empty() {
            ProbeVerdict::NoneReached
        } else {
            ProbeVerdict::Pending
        }
    }

    /// Findings silent for the removal timeout at `now` with no probe under way: the
    /// checker asks others to probe them now, not at the next unanswered recheck, so that
    /// removal comes within a probe's time of the removal timeout.
    pub(crate) fn timed_out(&self, now: Instant) -> Vec<MemberId> {
        self.found
            .values()
            .filter(|f| f.probe.is_none() && now >= f.since + self.removal_timeout)
            .map(|f| f.member.clone())
            .collect()
    }

    /// Findings whose probe ran out of time at `now` with nobody reaching them.
    pub(crate) fn expired_probes(&self, now: Instant) -> Vec<MemberId> {
        self.found
            .values()
            .filter(|f| f.probe.as_ref().is_some_and(|p| now >= p.deadline))
            .map(|f| f.member.clone())
            .collect()
    }

    /// Records that this member probes `member` for `asker` (view `view_id`); false if it
    /// does already.
    pub(crate) fn help(
        &mut self,
        asker: Uuid,
        member: Uuid,
        view_id: cohort_transport::ViewId,
    ) -> bool {
        self.helping.insert((asker, member), view_id).is_none()
    }

    /// The probe of `member` for `asker` ended: the view its request named, if it was one.
    pub(crate) fn helped(&mut self, asker: Uuid, member: Uuid) -> Option<cohort_transport::ViewId> {
        self.helping.remove(&(asker, member))
    }

    /// Findings due for another check at `now`; each is marked as being checked.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<MemberId> {
        let mut due = Vec::new();
        for found in self.found.values_mut() {
            if found.recheck_at.is_some_and(|at| now >= at) {
                found.recheck_at = None;
                due.push(found.member.clone());
            }
        }
        due
    }

    /// When the next finding is due for another check, a probe, or the end of one.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let probes = self.found.values().map(|f| match &f.probe {
            Some(probe) => probe.deadline,
            None => f.since + self.removal_timeout,
        });
        self.found
            .values()
            .filter_map(|f| f.recheck_at)
            .chain(probes)
            .min()
    }

    /// Records `by`'s report that `member` is unreachable; true if it was not flagged yet.
    pub(crate) fn flag(&mut self, now: Instant, member: &MemberId, by: Uuid) -> bool {
        self.flagged
            .insert(member.uuid(), (member.clone(), now, by))
            .is_none()
    }

    /// Drops the flag of `member`; true if it was flagged.
    pub(crate) fn unflag(&mut self, uuid: Uuid) -> bool {
        self.flagged.remove(&uuid).is_some()
    }

    /// True if `by` reported `uuid` unreachable within `patience` of `now`: its suspicion
    /// is in `by`'s hands, not waiting for a checker.
    pub(crate) fn reported_by_within(
        &self,
        uuid: Uuid,
        by: Uuid,
        now: Instant,
        patience: Duration,
    ) -> bool {
        self.flagged.get(&uuid).is_some_and(|(_, at, reporter)| {
            *reporter == by && now.saturating_duration_since(*at) <= patience
        })
    }

    /// The members flagged unreachable, in no particular order.
    pub(crate) fn flagged(&self) -> impl Iterator<Item = &MemberId> {
        self.flagged.values().map(|(member, _, _)| member)
    }

    /// A view installed: findings and flags of members it no longer holds are dropped.
    pub(crate) fn view_installed(&mut self, view: &View) {
        self.found.retain(|uuid, _| view.contains_uuid(*uuid));
        self.flagged.retain(|uuid, _| view.contains_uuid(*uuid));
    }

    /// This member stopped checking (another member checks now): its findings go, and are
    /// returned.
    pub(crate) fn stop_checking(&mut self) -> Vec<MemberId> {
        self.found.drain().map(|(_, f)| f.member).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_transport::MemberKind;

    fn member(port: u16) -> MemberId {
        MemberId::new(
            format!("m{port}"),
            ([127, 0, 0, 1], port).into(),
            MemberKind::Member,
        )
    }

    #[test]
    fn a_zero_removal_timeout_removes_at_the_first_failed_check() {
        let mut r = Reachability::new(Duration::ZERO, Duration::from_millis(500));
        assert_eq!(
            r.check_failed(Instant::now(), &member(1), Instant::now()),
            AfterSilence::Remove
        );
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn a_silent_member_is_unreachable_until_the_removal_timeout_then_removed() {
        let (timeout, interval) = (Duration::from_secs(4), Duration::from_millis(500));
        let mut r = Reachability::new(timeout, interval);
        let (t0, m) = (Instant::now(), member(1));
        assert_eq!(
            r.check_failed(t0, &m, t0),
            AfterSilence::Unreachable { newly: true }
        );
        assert_eq!(r.poll_timeout(), Some(t0 + interval));
        assert!(r.due(t0).is_empty());
        assert_eq!(r.due(t0 + interval), vec![m.clone()]);
        assert_eq!(
            r.poll_timeout(),
            Some(t0 + timeout),
            "being checked: due next for a probe"
        );
        let t1 = t0 + interval * 2;
        assert_eq!(
            r.check_failed(t1, &m, t1),
            AfterSilence::Unreachable { newly: false }
        );
        assert_eq!(
            r.check_failed(t0 + timeout, &m, t0 + timeout),
            AfterSilence::TimedOut
        );
        assert!(r.is_found(m.uuid()), "kept while others probe it");
    }

    #[test]
    fn the_removal_timeout_counts_from_the_silence_and_its_end_is_a_timer() {
        let (timeout, interval) = (Duration::from_secs(4), Duration::from_millis(500));
        let mut r = Reachability::new(timeout, interval);
        let (t0, m) = (Instant::now(), member(1));
        // Silent since t0, found unreachable 1.4 s later.
        let found_at = t0 + Duration::from_millis(1400);
        assert_eq!(
            r.check_failed(found_at, &m, t0),
            AfterSilence::Unreachable { newly: true }
        );
        assert!(
            r.timed_out(t0 + timeout - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(r.timed_out(t0 + timeout), vec![m.clone()]);
        // Once a probe runs, its deadline is the timer, and it is not timed out again.
        let deadline = t0 + timeout + Duration::from_secs(1);
        r.start_probe(&m, vec![member(2).uuid()], deadline);
        assert!(r.timed_out(t0 + timeout).is_empty());
        let _ = r.due(found_at + interval);
        assert_eq!(r.poll_timeout(), Some(deadline));
        // A silence said to begin after the check counts from the check.
        let n = member(3);
        let _ = r.check_failed(found_at, &n, found_at + timeout);
        assert_eq!(r.timed_out(found_at + timeout), vec![n.clone()]);
    }

    #[test]
    fn a_probe_that_reaches_the_member_keeps_it_and_one_that_reaches_nobody_does_not() {
        let (timeout, interval) = (Duration::from_secs(4), Duration::from_millis(500));
        let mut r = Reachability::new(timeout, interval);
        let (t0, m) = (Instant::now(), member(1));
        let (a, b, stranger) = (member(2).uuid(), member(3).uuid(), member(4).uuid());
        let _ = r.check_failed(t0, &m, t0);
        let t1 = t0 + timeout;
        assert_eq!(r.check_failed(t1, &m, t1), AfterSilence::TimedOut);
        let deadline = t1 + Duration::from_secs(1);
        r.start_probe(&m, vec![a, b], deadline);
        assert_eq!(
            r.check_failed(t1 + interval, &m, t1 + interval),
            AfterSilence::Unreachable { newly: false },
            "the probe decides, not the next check"
        );
        assert!(r.poll_timeout().is_some_and(|at| at <= deadline));
        assert_eq!(
            r.probe_answered(t1, m.uuid(), stranger, true),
            ProbeVerdict::Ignored
        );
        assert_eq!(
            r.probe_answered(t1, m.uuid(), a, false),
            ProbeVerdict::Pending
        );
        assert_eq!(
            r.probe_answered(t1, m.uuid(), a, false),
            ProbeVerdict::Ignored,
            "once"
        );
        assert_eq!(
            r.probe_answered(t1, m.uuid(), b, true),
            ProbeVerdict::Reached
        );
        assert!(r.is_found(m.uuid()), "still a finding of the checker");
        assert!(r.expired_probes(deadline).is_empty(), "the probe is over");
        // A new silence of a removal timeout before the next probe.
        assert_eq!(
            r.check_failed(t1 + interval, &m, t1 + interval),
            AfterSilence::Unreachable { newly: false }
        );
        assert_eq!(
            r.check_failed(t1 + timeout, &m, t1 + timeout),
            AfterSilence::TimedOut
        );
        let deadline = t1 + timeout + Duration::from_secs(1);
        r.start_probe(&m, vec![a], deadline);
        assert_eq!(
            r.probe_answered(t1, m.uuid(), a, false),
            ProbeVerdict::NoneReached
        );
        let (mut other, n) = (Reachability::new(timeout, interval), member(5));
        let _ = other.check_failed(t0, &n, t0);
        let _ = other.check_failed(t1, &n, t1);
        other.start_probe(&n, vec![a], deadline);
        assert!(
            other
                .expired_probes(deadline - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(other.expired_probes(deadline), vec![n]);
    }

    #[test]
    fn a_probe_is_run_once_per_asker_and_member() {
        let mut r = Reachability::new(Duration::from_secs(4), Duration::from_millis(500));
        let (asker, m) = (member(1).uuid(), member(2).uuid());
        let view = cohort_transport::ViewId(3);
        assert!(r.help(asker, m, view));
        assert!(!r.help(asker, m, view));
        assert_eq!(r.helped(asker, m), Some(view));
        assert_eq!(r.helped(asker, m), None);
    }

    #[test]
    fn a_member_heard_from_again_starts_over() {
        let mut r = Reachability::new(Duration::from_secs(4), Duration::from_millis(500));
        let (t0, m) = (Instant::now(), member(1));
        let _ = r.check_failed(t0, &m, t0);
        assert!(r.forget(&m));
        assert_eq!(
            r.check_failed(t0 + Duration::from_secs(5), &m, t0 + Duration::from_secs(5)),
            AfterSilence::Unreachable { newly: true },
            "the removal timeout counts from the new silence"
        );
    }

    #[test]
    fn flags_follow_the_view() {
        let mut r = Reachability::new(Duration::from_secs(4), Duration::from_millis(500));
        let (now, m, n, by) = (Instant::now(), member(1), member(2), member(3));
        assert!(r.flag(now, &m, by.uuid()));
        assert!(!r.flag(now, &m, by.uuid()), "flagged once");
        assert!(r.flag(now, &n, by.uuid()));
        let second = Duration::from_secs(1);
        assert!(r.reported_by_within(m.uuid(), by.uuid(), now + second, second));
        assert!(!r.reported_by_within(m.uuid(), by.uuid(), now + second * 2, second));
        assert!(
            !r.reported_by_within(m.uuid(), n.uuid(), now, second),
            "reported by another"
        );
        let view = View::new(cohort_transport::ViewId(2), vec![n.clone()]);
        r.view_installed(&view);
        assert_eq!(r.flagged().cloned().collect::<Vec<_>>(), vec![n.clone()]);
        assert!(r.unflag(n.uuid()));
        assert!(!r.unflag(n.uuid()));
    }
}
