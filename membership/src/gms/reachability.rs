//! Two stages of failure: a member that does not answer its final check is first
//! *unreachable*, a reversible flag with an event, and *removed* only once it stayed so for
//! the removal timeout (ARCHITECTURE.md, "Unreachable, then removed").
//!
//! ```text
//! checker: final check NoAnswer ─► found (since = now) ─► notice {unreachable} to the view
//!            │ every recheck interval: Output::Check again
//!            ├─ Alive ─────────────────► forgotten ─► notice {reachable} to the view
//!            ├─ Refused / Out ─────────► removed at once (positive evidence of death)
//!            └─ NoAnswer, since + removal_timeout passed ─► removed
//! every member: notice from a member of its view ─► flagged / unflagged, with an event
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
}

/// A member the checker found unreachable.
#[derive(Debug)]
struct Found {
    member: MemberId,
    /// When its first final check went unanswered.
    since: Instant,
    /// When to check it again; `None` while a check runs.
    recheck_at: Option<Instant>,
}

/// The checker's findings and every member's flags. See the module docs.
#[derive(Debug)]
pub(crate) struct Reachability {
    removal_timeout: Duration,
    recheck_interval: Duration,
    /// At the checker: members whose final check went unanswered, not removed yet.
    found: HashMap<Uuid, Found>,
    /// At every member: members reported unreachable, with when the report came.
    flagged: HashMap<Uuid, (MemberId, Instant)>,
}

impl Reachability {
    /// Findings kept for `removal_timeout`, checked again every `recheck_interval`.
    pub(crate) fn new(removal_timeout: Duration, recheck_interval: Duration) -> Self {
        Reachability {
            removal_timeout,
            recheck_interval,
            found: HashMap::new(),
            flagged: HashMap::new(),
        }
    }

    /// How long a member may stay unreachable before it is removed.
    pub(crate) fn removal_timeout(&self) -> Duration {
        self.removal_timeout
    }

    /// The checker's final check of `member` went unanswered at `now`.
    pub(crate) fn check_failed(&mut self, now: Instant, member: &MemberId) -> AfterSilence {
        if self.removal_timeout.is_zero() {
            return AfterSilence::Remove;
        }
        match self.found.get_mut(&member.uuid()) {
            Some(found) if now.saturating_duration_since(found.since) >= self.removal_timeout => {
                self.found.remove(&member.uuid());
                AfterSilence::Remove
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
                        since: now,
                        recheck_at: Some(now + self.recheck_interval),
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

    /// When the next finding is due for another check.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.found.values().filter_map(|f| f.recheck_at).min()
    }

    /// Records the report that `member` is unreachable; true if it was not flagged yet.
    pub(crate) fn flag(&mut self, now: Instant, member: &MemberId) -> bool {
        self.flagged
            .insert(member.uuid(), (member.clone(), now))
            .is_none()
    }

    /// Drops the flag of `member`; true if it was flagged.
    pub(crate) fn unflag(&mut self, uuid: Uuid) -> bool {
        self.flagged.remove(&uuid).is_some()
    }

    /// True if `uuid` was reported unreachable within `patience` of `now`: its suspicion
    /// is in the checker's hands, not waiting for a checker.
    pub(crate) fn reported_within(&self, uuid: Uuid, now: Instant, patience: Duration) -> bool {
        self.flagged
            .get(&uuid)
            .is_some_and(|(_, at)| now.saturating_duration_since(*at) <= patience)
    }

    /// The members flagged unreachable, in no particular order.
    pub(crate) fn flagged(&self) -> impl Iterator<Item = &MemberId> {
        self.flagged.values().map(|(member, _)| member)
    }

    /// A view installed: findings and flags of members it no longer holds are dropped.
    pub(crate) fn view_installed(&mut self, view: &View) {
        self.found.retain(|uuid, _| view.contains_uuid(*uuid));
        self.flagged.retain(|uuid, _| view.contains_uuid(*uuid));
    }

    /// This member stopped checking (another member checks now): its findings go.
    pub(crate) fn stop_checking(&mut self) {
        self.found.clear();
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
            r.check_failed(Instant::now(), &member(1)),
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
            r.check_failed(t0, &m),
            AfterSilence::Unreachable { newly: true }
        );
        assert_eq!(r.poll_timeout(), Some(t0 + interval));
        assert!(r.due(t0).is_empty());
        assert_eq!(r.due(t0 + interval), vec![m.clone()]);
        assert_eq!(r.poll_timeout(), None, "being checked: not due again");
        let t1 = t0 + interval * 2;
        assert_eq!(
            r.check_failed(t1, &m),
            AfterSilence::Unreachable { newly: false }
        );
        assert_eq!(r.check_failed(t0 + timeout, &m), AfterSilence::Remove);
        assert!(!r.is_found(m.uuid()));
    }

    #[test]
    fn a_member_heard_from_again_starts_over() {
        let mut r = Reachability::new(Duration::from_secs(4), Duration::from_millis(500));
        let (t0, m) = (Instant::now(), member(1));
        let _ = r.check_failed(t0, &m);
        assert!(r.forget(&m));
        assert_eq!(
            r.check_failed(t0 + Duration::from_secs(5), &m),
            AfterSilence::Unreachable { newly: true },
            "the removal timeout counts from the new silence"
        );
    }

    #[test]
    fn flags_follow_the_view() {
        let mut r = Reachability::new(Duration::from_secs(4), Duration::from_millis(500));
        let (now, m, n) = (Instant::now(), member(1), member(2));
        assert!(r.flag(now, &m));
        assert!(!r.flag(now, &m), "flagged once");
        assert!(r.flag(now, &n));
        assert!(r.reported_within(
            m.uuid(),
            now + Duration::from_secs(1),
            Duration::from_secs(1)
        ));
        assert!(!r.reported_within(
            m.uuid(),
            now + Duration::from_secs(2),
            Duration::from_secs(1)
        ));
        let view = View::new(cohort_transport::ViewId(2), vec![n.clone()]);
        r.view_installed(&view);
        assert_eq!(r.flagged().cloned().collect::<Vec<_>>(), vec![n.clone()]);
        assert!(r.unflag(n.uuid()));
        assert!(!r.unflag(n.uuid()));
    }
}
