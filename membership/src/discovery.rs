//! Discovery: deciding, from what locators answered, whom to join or whether to found the
//! cluster. Pure functions over the answers of one round; `Member` asks and acts.
//!
//! ```text
//! every `discovery_interval`: FindCoordinator ─► each locator (and each member of a
//!   persisted view) ─► answers ─► decide ─┬─► Join(coordinator of the newest view)
//!                                          ├─► Found (a locator, see below)
//!                                          └─► Wait (ask again)
//! ```
//!
//! Locators started at the same moment must agree on one founder, or the cluster starts
//! split. The rule: when no answer carries a view, the locator with the smallest address
//! (then uuid) among itself and the view-less locators that answered founds the cluster;
//! the others wait and join it on a later round. A locator only founds from its second
//! round on, so that every locator started at the same moment has bound its socket (and
//! answers) before anyone decides; a locator that answered nobody in the first round
//! would otherwise count itself alone.

use cohort_transport::{MemberId, MemberKind};

use crate::messages::DiscoveryAnswer;

/// What a starting member should do after one round of discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Ask this coordinator to be admitted.
    Join {
        /// The coordinator of the newest view any answer carried.
        coordinator: MemberId,
    },
    /// Start the cluster alone (locators only).
    Found,
    /// Ask again after the discovery interval.
    Wait,
}

/// Decides after round `round` (counted from 0), given the answers that round received.
pub fn decide(me: &MemberId, round: u32, answers: &[DiscoveryAnswer]) -> Decision {
    let newest = answers
        .iter()
        .filter_map(|a| a.view.as_ref())
        .filter(|v| !v.contains(me))
        .filter_map(|v| v.coordinator().map(|c| (v.id(), c)))
        // A coordinator at this member's own address is its previous incarnation, which is
        // gone: joining through it cannot work (failure detection will replace it).
        .filter(|(_, c)| c.address() != me.address())
        .max_by_key(|(id, _)| *id);
    if let Some((_, coordinator)) = newest {
        return Decision::Join {
            coordinator: coordinator.clone(),
        };
    }
    if me.kind() != MemberKind::Locator || round == 0 {
        return Decision::Wait;
    }
    let rank = |m: &MemberId| (m.address(), m.uuid());
    let first = answers
        .iter()
        .filter(|a| a.view.is_none() && a.responder.kind() == MemberKind::Locator)
        .map(|a| &a.responder)
        .chain(std::iter::once(me))
        .min_by_key(|m| rank(m));
    if first == Some(me) {
        Decision::Found
    } else {
        Decision::Wait
    }
}

#[cfg(test)]
mod tests {
    use cohort_transport::{View, ViewId};

    use super::*;

    fn member(port: u16, kind: MemberKind) -> MemberId {
        MemberId::new(
            format!("m{port}"),
            format!("127.0.0.1:{port}").parse().expect("literal"),
            kind,
        )
    }

    fn starting(responder: &MemberId) -> DiscoveryAnswer {
        DiscoveryAnswer {
            responder: responder.clone(),
            view: None,
        }
    }

    #[test]
    fn the_smallest_locator_founds_and_only_from_the_second_round() {
        let (a, b, c) = (
            member(1, MemberKind::Locator),
            member(2, MemberKind::Locator),
            member(3, MemberKind::Locator),
        );
        let answers_to_a = [starting(&b), starting(&c)];
        assert_eq!(decide(&a, 0, &answers_to_a), Decision::Wait);
        assert_eq!(decide(&a, 1, &answers_to_a), Decision::Found);
        assert_eq!(decide(&b, 1, &[starting(&a), starting(&c)]), Decision::Wait);
        assert_eq!(decide(&c, 5, &[starting(&a)]), Decision::Wait);
        // Alone (the others unreachable): found.
        assert_eq!(decide(&b, 1, &[]), Decision::Found);
    }

    #[test]
    fn any_view_wins_over_founding_and_the_newest_view_is_joined() {
        let (a, b) = (
            member(1, MemberKind::Locator),
            member(2, MemberKind::Locator),
        );
        let x = member(9, MemberKind::Member);
        let old = View::new(ViewId(3), [x.clone()]);
        let new = View::new(ViewId(7), [b.clone(), x.clone()]);
        let answers = [
            DiscoveryAnswer {
                responder: x.clone(),
                view: Some(old),
            },
            DiscoveryAnswer {
                responder: b.clone(),
                view: Some(new),
            },
        ];
        assert_eq!(
            decide(&a, 4, &answers),
            Decision::Join {
                coordinator: b.clone()
            }
        );
    }

    #[test]
    fn a_view_coordinated_by_my_previous_incarnation_is_not_joined() {
        let me = member(1, MemberKind::Locator);
        let previous = member(1, MemberKind::Locator);
        let x = member(9, MemberKind::Member);
        let answers = [DiscoveryAnswer {
            responder: x.clone(),
            view: Some(View::new(ViewId(4), [previous, x])),
        }];
        assert_eq!(decide(&me, 0, &answers), Decision::Wait);
    }

    #[test]
    fn ordinary_members_never_found() {
        let m = member(1, MemberKind::Member);
        let l = member(2, MemberKind::Locator);
        assert_eq!(decide(&m, 9, &[]), Decision::Wait);
        assert_eq!(decide(&m, 9, &[starting(&l)]), Decision::Wait);
    }
}
