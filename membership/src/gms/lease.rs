//! The coordinator lease: how a member that coordinates comes to *believe* it does, so that
//! at most one member at a time believes it coordinates a given view id.
//!
//! ```text
//! asker (coordinating view N), every lease_interval:
//!   records s = its send time ──LeaseRequest{N, seq}──► every other member of view N
//!   counts itself if its own grant slot is free (or already its own)
//! grantor m (installed view N, asker in it, no live grant to another member):
//!   granted_to = (asker, receipt + lease_duration) ──LeaseGrant{N, seq}──► asker
//! asker: grants for one seq from a weighted majority of view N
//!   ──► holds view N until max(s_seq + lease_duration) over such seqs
//! Gms::is_coordinator(now) = coordinating, not outbid, and holding view N past now
//! ```
//!
//! Why two members never hold view N at once: each holds it only with grants from a
//! weighted majority of view N, and two such majorities share a member m. The asker's lease
//! runs from its send time s, which comes before m's receipt r, so it ends no later than
//! m's grant (s + d ≤ r + d) if clocks run at the same rate; their values need not agree.
//! While a grant to one asker is live, m grants no other (a grant to the same asker is
//! renewed), so the two leases would need m's two grants to overlap. A member paused or
//! cut off keeps no stale belief: the lease is compared with the time of each question,
//! and requests that reach a grantor late are granted from when they arrive.
//!
//! Requests and grants are datagrams: a round costs one packet each way and the QUIC
//! acknowledgements, instead of reliable frames and their acknowledgements at both layers
//! (the lease was most of an idle cluster's traffic beside the heartbeats). A lost one
//! costs one grant of one round: a request that no majority granted is asked again
//! (a new `seq`) a quarter interval later, and only a round that a majority granted puts
//! the next one a full interval off. Losing messages cannot break the rule above, which
//! holds whatever is lost.
//!
//! Belief is all a lease decides. The view changes themselves are decided by ballots and
//! quorums (`vote.rs`, `quorum.rs`), leases or not.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use cohort_transport::{View, ViewId};
use uuid::Uuid;

use super::quorum::{Quorum, Tally, Weights};

/// A request no majority granted is asked again after this fraction of the interval.
const RETRY_FRACTION: u32 = 4;

/// One request this member sent, while a lease from it could still be running.
#[derive(Debug)]
struct Asked {
    seq: u64,
    view: ViewId,
    /// When it was sent: a lease it wins runs from here.
    sent: Instant,
    granted: Tally,
}

/// Both sides of the lease for one member: the leases it asks for, and the one grant it may
/// have given. See the module docs.
#[derive(Debug)]
pub(crate) struct Lease {
    interval: Duration,
    duration: Duration,
    seq: u64,
    /// When the next request is due while this member coordinates.
    next_request: Option<Instant>,
    /// The quorum weights of the view asked about (kept: grants arrive one by one).
    weights: Option<(ViewId, Weights)>,
    /// Requests sent within the last lease duration, oldest first.
    asked: VecDeque<Asked>,
    /// The lease held: for which view, and until when.
    held: Option<(ViewId, Instant)>,
    /// The member this one granted a lease to (perhaps itself), and until when.
    granted: Option<(Uuid, Instant)>,
}

impl Lease {
    pub(crate) fn new(interval: Duration, duration: Duration) -> Self {
        Lease {
            interval,
            duration,
            seq: 0,
            next_request: None,
            weights: None,
            asked: VecDeque::new(),
            held: None,
            granted: None,
        }
    }

    /// True if a request is due at `now` (or none was sent since this member began to
    /// coordinate).
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.next_request.is_none_or(|at| now >= at)
    }

    /// When the next request is due, once one has been sent.
    pub(crate) fn next_request(&self) -> Option<Instant> {
        self.next_request
    }

    /// This member does not coordinate: it asks for nothing, and answers still in flight
    /// count for nothing. What it granted others stands.
    pub(crate) fn stop_asking(&mut self) {
        self.next_request = None;
        self.asked.clear();
        self.held = None;
    }

    /// A new request from `me`, coordinating `view`, at `now`: its number, after `me` gave
    /// itself its own grant if it could. Returns the request's number.
    pub(crate) fn request(&mut self, now: Instant, me: Uuid, view: &View) -> u64 {
        let duration = self.duration;
        self.asked.retain(|a| a.sent + duration > now);
        // Asked again soon unless a majority grants this one (see `granted_by`): requests
        // and grants travel as datagrams, and one lost round must not cost the lease.
        self.next_request = Some(now + self.interval / RETRY_FRACTION);
        if self.weights.as_ref().is_none_or(|(id, _)| *id != view.id()) {
            self.weights = Some((view.id(), Quorum::new(view).weights()));
        }
        self.seq += 1;
        let mut asked = Asked {
            seq: self.seq,
            view: view.id(),
            sent: now,
            granted: Tally::default(),
        };
        // The asker's own vote obeys the same rule as everyone's: it may have granted
        // another member (the coordinator it took over from, which may be alive).
        if self.grant(now, me)
            && let Some((_, weights)) = &self.weights
            && asked.granted.add(weights, me)
        {
            self.hold(asked.view, asked.sent);
            self.next_request = Some(now + self.interval);
        }
        self.asked.push_back(asked);
        self.seq
    }

    /// `from` granted request `seq` for view `view_id`; `installed` is this member's view.
    pub(crate) fn granted_by(&mut self, installed: ViewId, from: Uuid, view_id: ViewId, seq: u64) {
        if view_id != installed {
            return;
        }
        let Some((_, weights)) = self.weights.as_ref().filter(|(id, _)| *id == view_id) else {
            return;
        };
        let Some(asked) = self
            .asked
            .iter_mut()
            .find(|a| a.seq == seq && a.view == view_id)
        else {
            return;
        };
        if asked.granted.add(weights, from) {
            let (view, sent) = (asked.view, asked.sent);
            self.hold(view, sent);
            if seq == self.seq {
                // The latest round succeeded: the next is a full interval after it.
                self.next_request = Some(sent + self.interval);
            }
        }
    }

    /// Grants `asker` a lease from `now` unless a grant to another member is still live;
    /// true if granted (a grant to the same asker is extended).
    pub(crate) fn grant(&mut self, now: Instant, asker: Uuid) -> bool {
        let until = now + self.duration;
        match self.granted {
            Some((holder, end)) if holder != asker && end > now => false,
            Some((holder, end)) if holder == asker => {
                self.granted = Some((asker, end.max(until)));
                true
            }
            _ => {
                self.granted = Some((asker, until));
                true
            }
        }
    }

    /// Until when this member holds a lease for view `view_id`, if it holds one at all
    /// (perhaps already over).
    pub(crate) fn held_until(&self, view_id: ViewId) -> Option<Instant> {
        self.held
            .filter(|(view, _)| *view == view_id)
            .map(|(_, until)| until)
    }

    /// The grant this member gave, for the reports.
    pub(crate) fn granted_to(&self) -> Option<(Uuid, Instant)> {
        self.granted
    }

    /// A majority granted a request for `view` sent at `sent`.
    fn hold(&mut self, view: ViewId, sent: Instant) {
        let until = sent + self.duration;
        self.held = match self.held {
            Some((held, end)) if held == view => Some((view, end.max(until))),
            _ => Some((view, until)),
        };
    }
}

#[cfg(test)]
mod tests {
    use cohort_transport::{MemberId, MemberKind};

    use super::*;

    fn member(port: u16) -> MemberId {
        let address = format!("127.0.0.1:{port}").parse().expect("literal");
        MemberId::new(format!("m{port}"), address, MemberKind::Member)
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_lease_runs_from_the_request_and_needs_a_majority() {
        let (a, b, c) = (member(1), member(2), member(3));
        let view = View::new(ViewId(4), [a.clone(), b.clone(), c.clone()]);
        let t0 = Instant::now();
        let mut lease = Lease::new(SECOND / 3, SECOND);
        let seq = lease.request(t0, a.uuid(), &view);
        // Its own grant weighs 15 of 35: not enough.
        assert_eq!(lease.held_until(ViewId(4)), None);
        // A grant for another view or another request counts for nothing.
        lease.granted_by(ViewId(4), b.uuid(), ViewId(3), seq);
        lease.granted_by(ViewId(4), b.uuid(), ViewId(4), seq + 1);
        assert_eq!(lease.held_until(ViewId(4)), None);
        // A grant arriving late still dates from the request.
        lease.granted_by(ViewId(4), b.uuid(), ViewId(4), seq);
        assert_eq!(lease.held_until(ViewId(4)), Some(t0 + SECOND));
        assert_eq!(lease.held_until(ViewId(5)), None);
        // Renewed: the later request extends it.
        let t1 = t0 + SECOND / 3;
        let seq = lease.request(t1, a.uuid(), &view);
        lease.granted_by(ViewId(4), c.uuid(), ViewId(4), seq);
        assert_eq!(lease.held_until(ViewId(4)), Some(t1 + SECOND));
        lease.stop_asking();
        assert_eq!(lease.held_until(ViewId(4)), None);
    }

    #[test]
    fn a_round_no_majority_granted_is_asked_again_soon_and_a_granted_one_an_interval_later() {
        let (a, b, c) = (member(1), member(2), member(3));
        let view = View::new(ViewId(4), [a.clone(), b.clone(), c.clone()]);
        let t0 = Instant::now();
        let interval = SECOND / 2;
        let mut lease = Lease::new(interval, SECOND);
        let first = lease.request(t0, a.uuid(), &view);
        // Its grants were lost: asked again a quarter interval later.
        assert_eq!(lease.next_request(), Some(t0 + interval / RETRY_FRACTION));
        assert!(!lease.due(t0 + interval / RETRY_FRACTION - SECOND / 1000));
        let t1 = t0 + interval / RETRY_FRACTION;
        assert!(lease.due(t1));
        let second = lease.request(t1, a.uuid(), &view);
        assert_ne!(first, second);
        // A late grant of the first round still counts, from its own send time, but the
        // round still running decides when to ask next.
        lease.granted_by(ViewId(4), b.uuid(), ViewId(4), first);
        assert_eq!(lease.held_until(ViewId(4)), Some(t0 + SECOND));
        assert_eq!(lease.next_request(), Some(t1 + interval / RETRY_FRACTION));
        // The latest round granted: the next one is a full interval after it.
        lease.granted_by(ViewId(4), c.uuid(), ViewId(4), second);
        assert_eq!(lease.held_until(ViewId(4)), Some(t1 + SECOND));
        assert_eq!(lease.next_request(), Some(t1 + interval));
    }

    #[test]
    fn a_grant_excludes_every_other_asker_until_it_ends() {
        let (a, b) = (member(1), member(2));
        let t0 = Instant::now();
        let mut lease = Lease::new(SECOND / 3, SECOND);
        assert!(lease.grant(t0, a.uuid()));
        assert!(!lease.grant(t0 + SECOND / 2, b.uuid()));
        // Renewed for a, so b waits for the renewal to end too.
        assert!(lease.grant(t0 + SECOND / 2, a.uuid()));
        assert!(!lease.grant(t0 + SECOND, b.uuid()));
        assert!(lease.grant(t0 + SECOND * 3 / 2, b.uuid()));
        // The asker's own vote: not while it granted another.
        let view = View::new(ViewId(1), [a.clone()]);
        lease.request(t0 + SECOND * 2, a.uuid(), &view);
        assert_eq!(lease.held_until(ViewId(1)), None);
        lease.request(t0 + SECOND * 3, a.uuid(), &view);
        assert_eq!(lease.held_until(ViewId(1)), Some(t0 + SECOND * 4));
    }
}
