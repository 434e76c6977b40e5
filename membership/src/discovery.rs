//! Discovery: deciding, from what a starting member heard, whom to join or whether to found
//! the cluster. [`Discovery`] is a sans-IO state machine over rounds of answers; `Member`
//! asks (`member/discover.rs`) and acts.
//!
//! ```text
//! Discovery::new(me, configured locators) ─► electorate = configured locators ∪ me (a locator)
//! every `discovery_interval`: FindCoordinator ─► each configured locator and each member of
//!   a persisted view ─► answers, each with the address asked ─► Discovery::decide
//!       ├─► Join(coordinator of the newest view any answer carried)
//!       ├─► Found (a locator with a majority of its electorate behind it, see below)
//!       └─► Wait(why not founding) ─► ask again, until the join timeout
//! ```
//!
//! # Founding
//!
//! A locator founds the cluster only when it can justify it, so that locators cut off from
//! each other never found two clusters that nothing merges:
//!
//! - **No view.** No answer carries a view this member could join (any such view wins).
//! - **Majority.** A strict majority of its *electorate* answered this round without a view,
//!   itself included. The electorate is the set of distinct addresses in the member's
//!   configured `locators`, plus its own address (once, whether or not it lists itself); an
//!   address that answers with this very member's uuid is this member under another name
//!   and is dropped from the electorate. A locator that lists no other locator has an
//!   electorate of one and founds alone: a one-locator cluster, chosen by configuration.
//! - **Founder.** It has the smallest address (then uuid) among itself and every locator of
//!   its electorate that has answered without a view *during this start*, not only this
//!   round: a locator once heard starting is the founder to wait for, even if its answer
//!   is lost in a later round, so that a lost answer cannot make a second founder. If that
//!   locator dies before founding, this start fails after its join timeout and a restart
//!   starts afresh.
//! - **Not the first round.** Locators started at the same moment have all bound their
//!   sockets (and answer) before anyone decides.
//!
//! Only the configured locators vote. Members of a persisted view are asked because a
//! view they answer with leads a restarted locator back into its cluster; one that answers
//! without a view proves nothing about where the other locators are, so it neither counts
//! towards a majority nor is waited for as founder. Two majorities of one electorate always
//! share a locator, so with every locator configured alike and every locator hearing every
//! other, at most one founds (see ARCHITECTURE.md for what remains).

use std::net::SocketAddr;

use cohort_transport::{MemberId, MemberKind};

use crate::messages::DiscoveryAnswer;

/// One answer, with the address that was asked (the address as configured, which is what
/// the electorate is made of; the answerer's own idea of its address may differ).
#[derive(Clone, Debug)]
pub(crate) struct Heard {
    /// The address the query went to.
    pub asked: SocketAddr,
    /// What came back.
    pub answer: DiscoveryAnswer,
}

/// What a starting member should do after one round of discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Ask this coordinator to be admitted.
    Join {
        /// The coordinator of the newest view any answer carried.
        coordinator: MemberId,
    },
    /// Start the cluster alone (locators only).
    Found,
    /// Ask again after the discovery interval. For a locator past its first round, why it
    /// does not found; `None` for a member (only locators found) or in the first round.
    Wait(Option<NoFounding>),
}

/// Why a locator that heard of no cluster did not found one. An operator's remedy: start a
/// majority of the configured locators (they find each other and one founds), or, for a
/// cluster of one locator, configure that locator with no other locator.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoFounding {
    /// Fewer than a strict majority of the configured locators answered without a view.
    #[error(
        "only {} of the {} configured locators (this one included) answered without a view, \
         and none with a view to join: founding needs {}, so that a minority cut off from \
         the others never founds a second cluster (not answering, or in a view this locator \
         cannot join: {missing:?}); start at least {} of the locators, or configure no other \
         locator for a deliberate one-locator cluster",
        .answered.len(),
        .answered.len() + .missing.len(),
        majority(.answered.len() + .missing.len()),
        majority(.answered.len() + .missing.len())
    )]
    NoMajority {
        /// The locators that answered without a view, this one first.
        answered: Vec<SocketAddr>,
        /// The other configured locators: silent, or in a view this member cannot join.
        missing: Vec<SocketAddr>,
    },
    /// A locator with a smaller address answered without a view: it is the one to found,
    /// and no view of it came.
    #[error(
        "the locator {founder:?} (the smallest address among the locators that answered \
         without a view) is the one to found the cluster, and no view came from it; check \
         that locator, then start this one again"
    )]
    Deferred {
        /// The locator waited for.
        founder: MemberId,
    },
}

/// A strict majority of `n` voters.
fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// The decisions of one member's discovery, round after round. Holds what must outlive a
/// round: the electorate (which shrinks when an alias of this member answers) and the
/// founder this locator has decided to wait for.
#[derive(Clone, Debug)]
pub(crate) struct Discovery {
    me: MemberId,
    electorate: Vec<SocketAddr>,
    round: u32,
    /// The smallest locator of the electorate heard starting (no view) below this one.
    founder: Option<MemberId>,
}

impl Discovery {
    /// Discovery for `me`, configured with `locators` (the configured list as given; it may
    /// name `me`).
    pub(crate) fn new(me: MemberId, locators: &[SocketAddr]) -> Discovery {
        let mut electorate = Vec::new();
        let own = (me.kind() == MemberKind::Locator).then(|| me.address());
        for address in own.into_iter().chain(locators.iter().copied()) {
            if !electorate.contains(&address) {
                electorate.push(address);
            }
        }
        Discovery {
            me,
            electorate,
            round: 0,
            founder: None,
        }
    }

    /// The distinct addresses whose answers count towards founding, this member's first
    /// (for a locator).
    #[cfg(test)]
    fn electorate(&self) -> &[SocketAddr] {
        &self.electorate
    }

    /// Decides after one round, given the answers it received (each target asked once).
    pub(crate) fn decide(&mut self, heard: &[Heard]) -> Decision {
        let round = self.round;
        self.round = self.round.saturating_add(1);
        let me = &self.me;
        if let Some(coordinator) = newest_coordinator(me, heard) {
            return Decision::Join { coordinator };
        }
        if me.kind() != MemberKind::Locator {
            return Decision::Wait(None);
        }
        // This member answering under another configured address: one voter, not two.
        for h in heard {
            if h.answer.responder == *me && h.asked != me.address() {
                self.electorate.retain(|a| *a != h.asked);
            }
        }
        let voters: Vec<&Heard> = heard
            .iter()
            .filter(|h| {
                let responder = &h.answer.responder;
                h.answer.view.is_none()
                    && responder.kind() == MemberKind::Locator
                    && *responder != *me
                    && responder.address() != me.address()
                    && h.asked != me.address()
                    && self.electorate.contains(&h.asked)
            })
            .collect();
        let rank = |m: &MemberId| (m.address(), m.uuid());
        // Remembered across rounds (see the module docs): the founder only ever gets smaller.
        for voter in &voters {
            let responder = &voter.answer.responder;
            if rank(responder) < rank(me)
                && self
                    .founder
                    .as_ref()
                    .is_none_or(|f| rank(responder) < rank(f))
            {
                self.founder = Some(responder.clone());
            }
        }
        if round == 0 {
            return Decision::Wait(None);
        }
        let mut answered = vec![me.address()];
        answered.extend(
            self.electorate
                .iter()
                .copied()
                .filter(|a| voters.iter().any(|v| v.asked == *a)),
        );
        if answered.len() < majority(self.electorate.len()) {
            let missing = self
                .electorate
                .iter()
                .copied()
                .filter(|a| !answered.contains(a))
                .collect();
            return Decision::Wait(Some(NoFounding::NoMajority { answered, missing }));
        }
        match &self.founder {
            Some(founder) => Decision::Wait(Some(NoFounding::Deferred {
                founder: founder.clone(),
            })),
            None => Decision::Found,
        }
    }
}

/// The coordinator of the newest view `me` can join, if any answer carries one.
fn newest_coordinator(me: &MemberId, heard: &[Heard]) -> Option<MemberId> {
    heard
        .iter()
        .filter_map(|h| h.answer.view.as_ref())
        .filter(|v| !v.contains(me))
        .filter_map(|v| v.coordinator().map(|c| (v.id(), c)))
        // A coordinator at this member's own address is its previous incarnation, which is
        // gone: joining through it cannot work (failure detection will replace it).
        .filter(|(_, c)| c.address() != me.address())
        .max_by_key(|(id, _)| *id)
        .map(|(_, c)| c.clone())
}

#[cfg(test)]
mod tests {
    use cohort_transport::{View, ViewId};

    use super::*;

    fn address(port: u16) -> SocketAddr {
        format!("127.0.0.1:{port}").parse().expect("literal")
    }

    fn member(port: u16, kind: MemberKind) -> MemberId {
        MemberId::new(format!("m{port}"), address(port), kind)
    }

    fn locator(port: u16) -> MemberId {
        member(port, MemberKind::Locator)
    }

    /// `responder` answered at its own address, still starting.
    fn starting(responder: &MemberId) -> Heard {
        Heard {
            asked: responder.address(),
            answer: DiscoveryAnswer {
                responder: responder.clone(),
                view: None,
            },
        }
    }

    /// `responder` answered at its own address with `view`.
    fn in_view(responder: &MemberId, view: &View) -> Heard {
        Heard {
            asked: responder.address(),
            answer: DiscoveryAnswer {
                responder: responder.clone(),
                view: Some(view.clone()),
            },
        }
    }

    fn addresses(members: &[&MemberId]) -> Vec<SocketAddr> {
        members.iter().map(|m| m.address()).collect()
    }

    /// Runs `rounds` identical rounds and returns the last decision.
    fn after(discovery: &mut Discovery, rounds: usize, heard: &[Heard]) -> Decision {
        let mut last = Decision::Wait(None);
        for _ in 0..rounds {
            last = discovery.decide(heard);
        }
        last
    }

    fn no_majority(answered: &[&MemberId], missing: &[&MemberId]) -> Decision {
        Decision::Wait(Some(NoFounding::NoMajority {
            answered: addresses(answered),
            missing: addresses(missing),
        }))
    }

    #[test]
    fn three_locators_started_together_agree_on_the_smallest_from_the_second_round() {
        let (a, b, c) = (locator(1), locator(2), locator(3));
        let all = addresses(&[&a, &b, &c]);
        let mut da = Discovery::new(a.clone(), &all);
        let mut db = Discovery::new(b.clone(), &all);
        let mut dc = Discovery::new(c.clone(), &all);
        // Round 0: nobody founds, even with everyone heard.
        assert_eq!(
            da.decide(&[starting(&b), starting(&c)]),
            Decision::Wait(None)
        );
        assert_eq!(
            db.decide(&[starting(&a), starting(&c)]),
            Decision::Wait(None)
        );
        assert_eq!(
            dc.decide(&[starting(&a), starting(&b)]),
            Decision::Wait(None)
        );
        // Round 1: only the smallest founds.
        assert_eq!(da.decide(&[starting(&b), starting(&c)]), Decision::Found);
        let deferred = Decision::Wait(Some(NoFounding::Deferred { founder: a.clone() }));
        assert_eq!(db.decide(&[starting(&a), starting(&c)]), deferred);
        assert_eq!(dc.decide(&[starting(&a), starting(&b)]), deferred);
        // Round 2: the others see its view and join it.
        let view = View::new(ViewId(1), [a.clone()]);
        assert_eq!(
            db.decide(&[in_view(&a, &view), starting(&c)]),
            Decision::Join {
                coordinator: a.clone()
            }
        );
    }

    #[test]
    fn a_locator_that_lists_itself_counts_once() {
        let (a, b, c) = (locator(1), locator(2), locator(3));
        let listed = Discovery::new(a.clone(), &addresses(&[&a, &b, &c, &b]));
        let unlisted = Discovery::new(a.clone(), &addresses(&[&b, &c]));
        assert_eq!(listed.electorate(), addresses(&[&a, &b, &c]).as_slice());
        assert_eq!(listed.electorate(), unlisted.electorate());
    }

    #[test]
    fn a_locator_restarting_alone_while_the_others_are_down_never_founds() {
        let (a, b, c) = (locator(1), locator(2), locator(3));
        // Every position: the smallest, the middle, the largest address.
        for me in [&a, &b, &c] {
            let others: Vec<&MemberId> = [&a, &b, &c].into_iter().filter(|m| *m != me).collect();
            let mut d = Discovery::new(me.clone(), &addresses(&[&a, &b, &c]));
            assert_eq!(d.decide(&[]), Decision::Wait(None));
            for _ in 0..100 {
                assert_eq!(d.decide(&[]), no_majority(&[me], &others));
            }
        }
    }

    #[test]
    fn two_of_three_found_one_cluster_whichever_is_down() {
        let (a, b, c) = (locator(1), locator(2), locator(3));
        let all = addresses(&[&a, &b, &c]);
        for (x, y, down) in [(&a, &b, &c), (&a, &c, &b), (&b, &c, &a)] {
            let mut dx = Discovery::new(x.clone(), &all);
            let mut dy = Discovery::new(y.clone(), &all);
            assert_eq!(
                after(&mut dx, 2, &[starting(y)]),
                Decision::Found,
                "{down:?} down"
            );
            assert_eq!(
                after(&mut dy, 2, &[starting(x)]),
                Decision::Wait(Some(NoFounding::Deferred { founder: x.clone() })),
                "{down:?} down"
            );
        }
    }

    #[test]
    fn one_of_two_must_not_found() {
        let (a, b) = (locator(1), locator(2));
        for (me, other) in [(&a, &b), (&b, &a)] {
            let mut d = Discovery::new(me.clone(), &addresses(&[&a, &b]));
            assert_eq!(after(&mut d, 10, &[]), no_majority(&[me], &[other]));
        }
        // Both up: the smaller founds.
        let mut d = Discovery::new(a.clone(), &addresses(&[&a, &b]));
        assert_eq!(after(&mut d, 2, &[starting(&b)]), Decision::Found);
    }

    #[test]
    fn majorities_of_larger_electorates() {
        let l: Vec<MemberId> = (1..=5).map(locator).collect();
        let all = addresses(&l.iter().collect::<Vec<_>>());
        // 2 of 5 (this one included): no.
        let mut d = Discovery::new(l[0].clone(), &all);
        assert!(matches!(
            after(&mut d, 3, &[starting(&l[3])]),
            Decision::Wait(Some(NoFounding::NoMajority { .. }))
        ));
        // 3 of 5: yes.
        let mut d = Discovery::new(l[0].clone(), &all);
        assert_eq!(
            after(&mut d, 3, &[starting(&l[3]), starting(&l[4])]),
            Decision::Found
        );
        // 2 of 4: no (a tie is not a majority); 3 of 4: yes.
        let four = &all[..4];
        let mut d = Discovery::new(l[0].clone(), four);
        assert!(matches!(
            after(&mut d, 3, &[starting(&l[1])]),
            Decision::Wait(Some(NoFounding::NoMajority { .. }))
        ));
        let mut d = Discovery::new(l[0].clone(), four);
        assert_eq!(
            after(&mut d, 3, &[starting(&l[1]), starting(&l[2])]),
            Decision::Found
        );
    }

    #[test]
    fn a_one_locator_cluster_founds_alone_from_the_second_round() {
        let a = locator(1);
        for configured in [vec![], vec![a.address()]] {
            let mut d = Discovery::new(a.clone(), &configured);
            assert_eq!(d.decide(&[]), Decision::Wait(None));
            assert_eq!(d.decide(&[]), Decision::Found);
        }
    }

    #[test]
    fn a_founder_once_heard_is_waited_for_even_when_its_answer_is_lost() {
        let (a, b, c) = (locator(1), locator(2), locator(3));
        let mut db = Discovery::new(b.clone(), &addresses(&[&a, &b, &c]));
        assert_eq!(
            db.decide(&[starting(&a), starting(&c)]),
            Decision::Wait(None)
        );
        // A's answer lost: B still has a majority with C, but A may be founding.
        let deferred = Decision::Wait(Some(NoFounding::Deferred { founder: a.clone() }));
        assert_eq!(after(&mut db, 5, &[starting(&c)]), deferred);
        // A's view arrives: join it.
        let view = View::new(ViewId(1), [a.clone()]);
        assert_eq!(
            db.decide(&[in_view(&a, &view)]),
            Decision::Join {
                coordinator: a.clone()
            }
        );
    }

    #[test]
    fn any_joinable_view_wins_over_founding_and_the_newest_view_is_joined() {
        let (a, b) = (locator(1), locator(2));
        let x = member(9, MemberKind::Member);
        let old = View::new(ViewId(3), [x.clone()]);
        let new = View::new(ViewId(7), [b.clone(), x.clone()]);
        let mut d = Discovery::new(a.clone(), &addresses(&[&a, &b]));
        // Even in the first round, and without any majority.
        assert_eq!(
            d.decide(&[in_view(&x, &old), in_view(&b, &new)]),
            Decision::Join {
                coordinator: b.clone()
            }
        );
    }

    #[test]
    fn a_view_coordinated_by_my_previous_incarnation_is_not_joined_and_is_no_vote() {
        let (me, b, c) = (locator(1), locator(2), locator(3));
        let previous = locator(1);
        let view = View::new(ViewId(4), [previous, b.clone(), c.clone()]);
        let mut d = Discovery::new(me.clone(), &addresses(&[&me, &b, &c]));
        // The others are still in the old cluster (failure detection has not replaced my
        // previous incarnation yet): no join, and no founding either.
        let heard = [in_view(&b, &view), in_view(&c, &view)];
        assert_eq!(d.decide(&heard), Decision::Wait(None));
        assert_eq!(d.decide(&heard), no_majority(&[&me], &[&b, &c]));
        // Once they have moved on to a view coordinated by b: join it.
        let next = View::new(ViewId(5), [b.clone(), c.clone()]);
        assert_eq!(
            d.decide(&[in_view(&b, &next), in_view(&c, &next)]),
            Decision::Join {
                coordinator: b.clone()
            }
        );
    }

    #[test]
    fn a_persisted_view_leads_back_to_the_cluster_without_a_majority() {
        let (a, b, c) = (locator(1), locator(2), locator(3));
        let (x, y) = (member(8, MemberKind::Member), member(9, MemberKind::Member));
        // The other locators are down; members of the persisted view still run the cluster.
        let view = View::new(ViewId(12), [x.clone(), y.clone()]);
        let mut d = Discovery::new(a.clone(), &addresses(&[&a, &b, &c]));
        assert_eq!(
            d.decide(&[in_view(&x, &view), in_view(&y, &view)]),
            Decision::Join { coordinator: x }
        );
    }

    #[test]
    fn a_stale_persisted_view_does_not_make_a_minority_found() {
        let (a, b, c) = (locator(1), locator(2), locator(3));
        // The persisted view lists members and a locator that is no longer configured: all
        // of them answer still starting (a stale view: that cluster is gone).
        let x = member(8, MemberKind::Member);
        let old_locator = locator(7);
        let heard = [starting(&x), starting(&old_locator)];
        let mut d = Discovery::new(a.clone(), &addresses(&[&a, &b, &c]));
        assert_eq!(after(&mut d, 10, &heard), no_majority(&[&a], &[&b, &c]));
        // Nor does a starting locator outside the electorate stop a majority from founding.
        let mut d = Discovery::new(a.clone(), &addresses(&[&a, &b, &c]));
        let smaller = locator(0);
        assert_eq!(
            after(&mut d, 2, &[starting(&smaller), starting(&b)]),
            Decision::Found
        );
        // And a member (not a locator) answering at a configured locator's address is no
        // vote.
        let impostor = member(2, MemberKind::Member);
        let mut d = Discovery::new(a.clone(), &addresses(&[&a, &b, &c]));
        assert_eq!(
            after(&mut d, 2, &[starting(&impostor)]),
            no_majority(&[&a], &[&b, &c])
        );
    }

    #[test]
    fn this_locator_listed_under_another_address_is_one_voter() {
        let a = locator(1);
        let b = locator(2);
        // Listed as 127.0.0.1:11 too (say, another interface): that address answers with
        // this member's own uuid.
        let alias = address(11);
        let mut d = Discovery::new(a.clone(), &[alias, b.address()]);
        assert_eq!(d.electorate().len(), 3);
        let myself = Heard {
            asked: alias,
            answer: DiscoveryAnswer {
                responder: a.clone(),
                view: None,
            },
        };
        assert_eq!(
            d.decide(std::slice::from_ref(&myself)),
            Decision::Wait(None)
        );
        // Alone of {a, b}: no majority, although two of three addresses "answered".
        assert_eq!(after(&mut d, 3, &[myself]), no_majority(&[&a], &[&b]));
        assert_eq!(d.electorate(), addresses(&[&a, &b]).as_slice());
    }

    #[test]
    fn ordinary_members_never_found() {
        let m = member(1, MemberKind::Member);
        let l = locator(2);
        let mut d = Discovery::new(m.clone(), &[l.address()]);
        assert_eq!(after(&mut d, 9, &[]), Decision::Wait(None));
        assert_eq!(after(&mut d, 9, &[starting(&l)]), Decision::Wait(None));
        let mut alone = Discovery::new(m, &[]);
        assert_eq!(after(&mut alone, 9, &[]), Decision::Wait(None));
    }

    #[test]
    fn the_reason_names_how_many_of_how_many_answered_and_what_to_do() {
        let (a, b, c) = (locator(1), locator(2), locator(3));
        let mut d = Discovery::new(a.clone(), &addresses(&[&a, &b, &c]));
        let Decision::Wait(Some(reason)) = after(&mut d, 2, &[]) else {
            panic!("no reason given");
        };
        let text = reason.to_string();
        assert!(
            text.contains("only 1 of the 3 configured locators"),
            "{text}"
        );
        assert!(text.contains("founding needs 2"), "{text}");
        assert!(text.contains("start at least 2 of the locators"), "{text}");
        assert!(text.contains("127.0.0.1:2"), "{text}");
    }
}
