//! [`Vote`]: one member's side of deciding the view after its installed one (the acceptor
//! of single-decree Paxos, one decree per base view).
//!
//! ```text
//! Collect{base, ballot}  ─► promise: nothing lower accepted for base from now on ─► Promise{accepted}
//! Propose{base, ballot}  ─► accept unless a higher ballot was promised           ─► Accept
//! anything for a base older than the installed view                             ─► Reject{installed}
//! ```
//!
//! A message for a newer base than the one voted on resets the vote: a proposal for base k
//! exists only once view k was decided, so nothing older can be decided any more. A member
//! behind its cluster (it missed view k's decision) may so vote on base k before it installs
//! view k, which is safe: what a vote promises depends on no view.

use cohort_transport::ViewId;

use crate::messages::{Ballot, Proposal};

/// Why a vote was refused, for the proposer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The base is older than what this member has installed or voted on.
    Stale,
    /// A higher ballot was promised for this base.
    Outbid(Ballot),
}

/// The state of one member's vote on the change from one base view.
#[derive(Debug)]
pub(crate) struct Vote {
    base: ViewId,
    promised: Option<Ballot>,
    accepted: Option<(Ballot, Proposal)>,
}

impl Vote {
    /// No vote yet on the change from `base`.
    pub(crate) fn new(base: ViewId) -> Self {
        Vote {
            base,
            promised: None,
            accepted: None,
        }
    }

    /// The base view voted on.
    pub(crate) fn base(&self) -> ViewId {
        self.base
    }

    /// The highest ballot promised for the base.
    pub(crate) fn promised(&self) -> Option<Ballot> {
        self.promised
    }

    /// The proposal accepted for the base, with its ballot.
    pub(crate) fn accepted(&self) -> Option<&(Ballot, Proposal)> {
        self.accepted.as_ref()
    }

    /// A view newer than the base was installed: vote on the change from it from now on.
    pub(crate) fn installed(&mut self, view: ViewId) {
        if view > self.base {
            *self = Vote::new(view);
        }
    }

    /// Brings the vote to `base`, or refuses a base already left behind.
    fn on_base(&mut self, base: ViewId) -> Result<(), Refusal> {
        if base < self.base {
            return Err(Refusal::Stale);
        }
        self.installed(base);
        Ok(())
    }

    /// Phase 1: promises `ballot` for `base` and returns what was accepted for it.
    pub(crate) fn collect(
        &mut self,
        base: ViewId,
        ballot: Ballot,
    ) -> Result<Option<(Ballot, Proposal)>, Refusal> {
        self.on_base(base)?;
        match self.promised {
            Some(promised) if promised > ballot => Err(Refusal::Outbid(promised)),
            _ => {
                self.promised = Some(ballot);
                Ok(self.accepted.clone())
            }
        }
    }

    /// Phase 2: accepts `proposal` under `ballot` for `base`.
    pub(crate) fn propose(
        &mut self,
        base: ViewId,
        ballot: Ballot,
        proposal: Proposal,
    ) -> Result<(), Refusal> {
        self.on_base(base)?;
        match self.promised {
            Some(promised) if promised > ballot => Err(Refusal::Outbid(promised)),
            _ => {
                self.promised = Some(ballot);
                self.accepted = Some((ballot, proposal));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cohort_transport::View;
    use uuid::Uuid;

    use super::*;

    fn ballot(round: u32, proposer: u128) -> Ballot {
        Ballot {
            round,
            proposer: Uuid::from_u128(proposer),
        }
    }

    fn proposal(id: u64) -> Proposal {
        Proposal {
            view: View::new(ViewId(id), []),
            left: Vec::new(),
            crashed: Vec::new(),
        }
    }

    #[test]
    fn a_promise_shuts_out_lower_ballots_and_reports_what_was_accepted() {
        let mut vote = Vote::new(ViewId(4));
        // The base coordinator's round 0 needs no promise.
        assert_eq!(vote.propose(ViewId(4), ballot(0, 1), proposal(5)), Ok(()));
        // A successor collects: it learns what was accepted, and round 0 is shut out.
        let accepted = vote.collect(ViewId(4), ballot(1, 2)).expect("promised");
        assert_eq!(accepted, Some((ballot(0, 1), proposal(5))));
        assert_eq!(
            vote.propose(ViewId(4), ballot(0, 1), proposal(5)),
            Err(Refusal::Outbid(ballot(1, 2)))
        );
        // The same round from a larger uuid outbids too; a duplicate is promised again.
        assert_eq!(
            vote.collect(ViewId(4), ballot(1, 1)),
            Err(Refusal::Outbid(ballot(1, 2)))
        );
        assert!(vote.collect(ViewId(4), ballot(1, 2)).is_ok());
        assert_eq!(vote.propose(ViewId(4), ballot(1, 2), proposal(5)), Ok(()));
    }

    #[test]
    fn a_newer_base_resets_the_vote_and_an_older_one_is_refused() {
        let mut vote = Vote::new(ViewId(4));
        vote.collect(ViewId(4), ballot(3, 9)).expect("promised");
        // Base 6 exists only once 5 was decided: the vote on base 4 is over.
        assert_eq!(vote.collect(ViewId(6), ballot(0, 1)), Ok(None));
        assert_eq!(vote.base(), ViewId(6));
        assert_eq!(
            vote.propose(ViewId(4), ballot(9, 9), proposal(5)),
            Err(Refusal::Stale)
        );
        vote.installed(ViewId(5));
        assert_eq!(
            vote.base(),
            ViewId(6),
            "installing an older view changes nothing"
        );
    }
}
