//! [`Round`]: one attempt of this member to decide the view after its installed one (the
//! proposer of single-decree Paxos).
//!
//! ```text
//! round 0 (the base view's coordinator, first try) ──────────────┐
//! round ≥ 1: Collecting ── promises from a weighted majority ──► Proposing ── accepts from a
//!   the highest-ballot proposal any of them accepted is adopted  │   weighted majority, and
//!   (it may have been decided); else this member's own changes ──┘   every member of the new
//!                                                                    view or the deadline ──► Decide
//! ```
//!
//! A round remembers the changes of its own that it carries (joiners, leavers, crashed), so
//! that a round that fails, is outbid, or adopts another proposal hands them back to be
//! proposed again.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use cohort_transport::{MemberId, View};
use uuid::Uuid;

use crate::messages::{Ballot, Proposal};

/// Where a round stands.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Phase 1: promises so far, with what each promiser had accepted.
    Collecting {
        promises: HashMap<Uuid, Option<(Ballot, Proposal)>>,
    },
    /// Phase 2: the proposal and who accepted it so far.
    Proposing {
        proposal: Proposal,
        accepted: HashSet<Uuid>,
        /// True if the proposal is another proposer's, found in phase 1.
        adopted: bool,
    },
}

/// One attempt to decide the change from `base`.
#[derive(Debug)]
pub(crate) struct Round {
    /// The installed view the change starts from; its members vote.
    pub(crate) base: View,
    pub(crate) ballot: Ballot,
    pub(crate) phase: Phase,
    /// When the round gives up (or, with a majority but someone silent, decides anyway).
    pub(crate) deadline: Instant,
    /// This member's own changes, handed back if they do not get decided in this round.
    pub(crate) joiners: Vec<MemberId>,
    pub(crate) leaving: Vec<MemberId>,
    pub(crate) crashed: Vec<MemberId>,
}

impl Round {
    /// The proposal being voted on, once in phase 2.
    pub(crate) fn proposal(&self) -> Option<&Proposal> {
        match &self.phase {
            Phase::Proposing { proposal, .. } => Some(proposal),
            Phase::Collecting { .. } => None,
        }
    }

    /// True if `member` takes part: a voter of the base view, or new in the proposal.
    pub(crate) fn involves(&self, member: &MemberId) -> bool {
        self.base.contains(member)
            || self.proposal().is_some_and(|p| p.view.contains(member))
            || self.joiners.contains(member)
    }

    /// The members of the base view that have not answered this round's current phase.
    pub(crate) fn silent(&self) -> Vec<MemberId> {
        let answered = |uuid: Uuid| match &self.phase {
            Phase::Collecting { promises } => promises.contains_key(&uuid),
            Phase::Proposing { accepted, .. } => accepted.contains(&uuid),
        };
        let mut silent: Vec<MemberId> = self
            .base
            .members()
            .iter()
            .filter(|m| m.uuid() != self.ballot.proposer && !answered(m.uuid()))
            .cloned()
            .collect();
        if let Phase::Proposing {
            proposal, accepted, ..
        } = &self.phase
        {
            silent.extend(
                proposal
                    .view
                    .members()
                    .iter()
                    .filter(|m| !self.base.contains(m) && !accepted.contains(&m.uuid()))
                    .cloned(),
            );
        }
        silent
    }
}
