//! [`Vote`]: one member's side of deciding the view after its installed one (the acceptor
//! of single-decree Paxos, one decree per base view).
//!
//! ```text
//! Collect{base, ballot}  ─► promise: nothing lower accepted for base from now on ─► Promise{accepted}
//! Propose{base, ballot}  ─► accept unless a higher ballot was promised           ─► Accept
//! anything for a base older than the installed view                             ─► Reject{installed}
//! ```
//!
//! A message for a newer base than the installed view is voted on as well: a proposal for
//! base k exists only once view k was decided, and a member behind its cluster (it missed
//! view k's decision) may so vote on base k before it installs view k, which is safe: what a
//! vote promises depends on no view. What it promised and accepted for the older bases it
//! has not seen decided is kept, per base, until it installs a newer view: those decrees
//! are decided, but the members still on them may need this member's acceptance to learn
//! their value. (Forgetting it broke liveness, chaos seed 2577: the one member of the
//! majority that had voted ahead refused the successor's phase 1 for the base everyone else
//! was still on, as stale, and the decision made there, whose only installers had died,
//! could never be found again. Geode's members likewise keep their prepared view until they
//! install a newer one, and answer a new coordinator's view query with it.)

use std::collections::BTreeMap;

use cohort_transport::ViewId;

use crate::messages::{Ballot, Proposal};

/// Why a vote was refused, for the proposer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The base is older than what this member has installed.
    Stale,
    /// A higher ballot was promised for this base.
    Outbid(Ballot),
}

/// One acceptor's state for the change from one base view.
#[derive(Clone, Debug, Default)]
struct Decree {
    promised: Option<Ballot>,
    accepted: Option<(Ballot, Proposal)>,
}

/// The state of one member's votes on the changes from its installed view and from any
/// newer base it was asked about.
#[derive(Debug)]
pub(crate) struct Vote {
    /// The installed view: older bases are refused.
    installed: ViewId,
    /// Per base, from the installed view on.
    decrees: BTreeMap<ViewId, Decree>,
}

impl Vote {
    /// No vote yet on the change from `base`.
    pub(crate) fn new(base: ViewId) -> Self {
        Vote {
            installed: base,
            decrees: BTreeMap::new(),
        }
    }

    /// The newest base voted on (the installed view if none newer).
    pub(crate) fn base(&self) -> ViewId {
        self.decrees
            .keys()
            .next_back()
            .copied()
            .unwrap_or(self.installed)
            .max(self.installed)
    }

    fn newest(&self) -> Option<&Decree> {
        self.decrees.get(&self.base())
    }

    /// The highest ballot promised for the newest base.
    pub(crate) fn promised(&self) -> Option<Ballot> {
        self.newest().and_then(|d| d.promised)
    }

    /// The proposal accepted for the newest base, with its ballot.
    pub(crate) fn accepted(&self) -> Option<&(Ballot, Proposal)> {
        self.newest().and_then(|d| d.accepted.as_ref())
    }

    /// The highest ballot promised for `base`.
    pub(crate) fn promised_for(&self, base: ViewId) -> Option<Ballot> {
        self.decrees.get(&base).and_then(|d| d.promised)
    }

    /// The proposal accepted for `base`, with its ballot.
    pub(crate) fn accepted_for(&self, base: ViewId) -> Option<&(Ballot, Proposal)> {
        self.decrees.get(&base).and_then(|d| d.accepted.as_ref())
    }

    /// View `view` was installed: votes on older bases are over.
    pub(crate) fn installed(&mut self, view: ViewId) {
        if view > self.installed {
            self.installed = view;
            self.decrees.retain(|base, _| *base >= view);
        }
    }

    /// The decree of `base`, or a refusal of a base already left behind.
    fn on_base(&mut self, base: ViewId) -> Result<&mut Decree, Refusal> {
        if base < self.installed {
            return Err(Refusal::Stale);
        }
        Ok(self.decrees.entry(base).or_default())
    }

    /// Phase 1: promises `ballot` for `base` and returns what was accepted for it.
    pub(crate) fn collect(
        &mut self,
        base: ViewId,
        ballot: Ballot,
    ) -> Result<Option<(Ballot, Proposal)>, Refusal> {
        let decree = self.on_base(base)?;
        match decree.promised {
            Some(promised) if promised > ballot => Err(Refusal::Outbid(promised)),
            _ => {
                decree.promised = Some(ballot);
                Ok(decree.accepted.clone())
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
        let decree = self.on_base(base)?;
        match decree.promised {
            Some(promised) if promised > ballot => Err(Refusal::Outbid(promised)),
            _ => {
                decree.promised = Some(ballot);
                decree.accepted = Some((ballot, proposal));
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
    fn a_newer_base_keeps_the_vote_on_the_installed_one_until_a_newer_view_installs() {
        let mut vote = Vote::new(ViewId(4));
        vote.propose(ViewId(4), ballot(3, 9), proposal(5))
            .expect("accepted");
        // Base 6 exists only once 5 was decided; this member missed it and votes ahead.
        assert_eq!(vote.collect(ViewId(6), ballot(0, 1)), Ok(None));
        assert_eq!(vote.base(), ViewId(6));
        // The members still on base 4 may need what it accepted there.
        assert_eq!(
            vote.collect(ViewId(4), ballot(5, 2)),
            Ok(Some((ballot(3, 9), proposal(5))))
        );
        assert_eq!(
            vote.propose(ViewId(4), ballot(4, 9), proposal(5)),
            Err(Refusal::Outbid(ballot(5, 2)))
        );
        assert_eq!(
            vote.accepted_for(ViewId(4)),
            Some(&(ballot(3, 9), proposal(5)))
        );
        vote.installed(ViewId(5));
        assert_eq!(
            vote.propose(ViewId(4), ballot(9, 9), proposal(5)),
            Err(Refusal::Stale)
        );
        assert_eq!(vote.base(), ViewId(6), "the vote on base 6 stays");
        assert_eq!(vote.promised(), Some(ballot(0, 1)));
    }
}
