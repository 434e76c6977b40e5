//! Weights and weighted majorities: whose agreement decides a view change, and when one
//! side of a partition has lost its quorum.
//!
//! A view change is decided only once members holding a strict majority of the base view's
//! *quorum weight* accepted it. Any fixed rule that gives every member of a view a weight,
//! computed from the view alone, makes a safe quorum system: two strict majorities of one
//! view always share a member, so two sides of a partition, or an old and a new
//! coordinator, can never both decide. The quorum weight is Geode's partition weight
//! (locator 3, admin 0, member 10, and 5 more for the lead member, plus the member's own
//! adjustment), with one change: in a view of three or more members that carry weight, no
//! member outweighs all the others together, since that member's crash would leave the rest
//! unable to decide anything. (With the plain weights, a locator and two members lose their
//! quorum when the lead member crashes: 13 of 28.)
//!
//! A member proven dead (its port refused a final check) is not left out of the total. It
//! would be tempting, since it can never vote again, but the proposal it may have accepted
//! before it died is then lost: with a, b, c, d of seven members deciding a view and a, b, c
//! dying, a majority of the rest could decide another view while d, alive, holds the first.

use std::collections::{HashMap, HashSet};

use cohort_transport::{MemberId, MemberKind, View};
use uuid::Uuid;

/// Geode's weight of `member` when `lead` is the view's lead member (its oldest member of
/// kind Member): locator 3, admin 0, member 10, and 5 more for the lead, plus the member's
/// own adjustment, never below zero.
fn partition_weight(member: &MemberId, lead: Option<Uuid>) -> i64 {
    let base = match member.kind() {
        MemberKind::Locator => 3,
        MemberKind::Admin => 0,
        MemberKind::Member => 10,
    };
    let bonus = if lead == Some(member.uuid()) { 5 } else { 0 };
    (base + bonus + i64::from(member.attributes().weight_adjustment)).max(0)
}

/// The members of one view whose votes decide its successor, with their quorum weights.
pub(crate) struct Quorum<'a> {
    view: &'a View,
    /// Quorum weight by member, in view order.
    weights: Vec<(Uuid, i64)>,
}

impl<'a> Quorum<'a> {
    /// The voters of `view` and their quorum weights (see the module docs).
    pub(crate) fn new(view: &'a View) -> Self {
        let lead = view
            .members()
            .iter()
            .find(|m| m.kind() == MemberKind::Member)
            .map(MemberId::uuid);
        let mut weights: Vec<(Uuid, i64)> = view
            .members()
            .iter()
            .map(|m| (m.uuid(), partition_weight(m, lead)))
            .collect();
        let total: i64 = weights.iter().map(|(_, w)| w).sum();
        let weighty = weights.iter().filter(|(_, w)| *w > 0).count();
        if weighty >= 3 {
            // Only one member can outweigh all the others together; it is capped just
            // below their sum, so it cannot decide alone and they can decide without it.
            for (_, weight) in &mut weights {
                *weight = (*weight).min(total - *weight - 1);
            }
        }
        Quorum { view, weights }
    }

    /// The total quorum weight of the members in `of` (all members when `of` is `None`),
    /// and how many they are.
    fn weigh(&self, of: Option<&HashSet<Uuid>>) -> (i64, usize) {
        self.weights
            .iter()
            .filter(|(uuid, _)| of.is_none_or(|set| set.contains(uuid)))
            .fold((0, 0), |(sum, heads), (_, weight)| {
                (sum + weight, heads + 1)
            })
    }

    /// The quorum weight of the whole view.
    pub(crate) fn total(&self) -> i64 {
        self.weigh(None).0
    }

    /// True if the members in `agreed` hold a strict majority of the view's quorum weight.
    /// Where every member weighs nothing (a view of admins), heads are counted.
    pub(crate) fn is_majority(&self, agreed: &HashSet<Uuid>) -> bool {
        let (total, heads) = self.weigh(None);
        let (yes, yes_heads) = self.weigh(Some(agreed));
        if total == 0 {
            return heads > 0 && yes_heads * 2 > heads;
        }
        yes * 2 > total
    }

    /// The quorum weight of every member, for a [`Tally`] that grows one member at a time.
    pub(crate) fn weights(&self) -> Weights {
        let (total, heads) = self.weigh(None);
        Weights {
            of: self.weights.iter().copied().collect(),
            total,
            heads,
        }
    }

    /// Why this side has lost its quorum, if removing `crashed` (members found dead by
    /// final checks, which a partition looks like) leaves the rest without a strict
    /// majority.
    pub(crate) fn lost_to(&self, crashed: &[MemberId]) -> Option<String> {
        let gone: HashSet<Uuid> = crashed.iter().map(MemberId::uuid).collect();
        let rest: HashSet<Uuid> = self
            .weights
            .iter()
            .map(|(uuid, _)| *uuid)
            .filter(|u| !gone.contains(u))
            .collect();
        if self.is_majority(&rest) {
            return None;
        }
        let (total, _) = self.weigh(None);
        let (lost, _) = self.weigh(Some(&gone));
        Some(format!(
            "network partition: {} unreachable members of view {} weigh {lost} of its {total}; \
             this side no longer holds a quorum",
            crashed.len(),
            self.view.id()
        ))
    }
}

/// A view's quorum weights by member, kept to weigh answers as they come in: one lookup per
/// answer instead of a pass over the view (a coordinator of 10,000 members gets that many
/// lease grants per lease interval).
#[derive(Debug)]
pub(crate) struct Weights {
    of: HashMap<Uuid, i64>,
    total: i64,
    heads: usize,
}

/// The members counted so far towards a weighted majority of one view, and their weight:
/// the same rule as [`Quorum::is_majority`], one member at a time.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    counted: HashSet<Uuid>,
    weight: i64,
}

impl Tally {
    /// Counts `member` (once; a stranger to the view counts nothing) and says whether the
    /// members counted hold a strict majority of the view's weight (of its heads, where
    /// every member weighs nothing).
    pub(crate) fn add(&mut self, weights: &Weights, member: Uuid) -> bool {
        if let Some(weight) = weights.of.get(&member)
            && self.counted.insert(member)
        {
            self.weight += weight;
        }
        if weights.total == 0 {
            return weights.heads > 0 && self.counted.len() * 2 > weights.heads;
        }
        self.weight * 2 > weights.total
    }
}

#[cfg(test)]
mod tests {
    use cohort_transport::ViewId;

    use super::*;

    fn member(port: u16, kind: MemberKind) -> MemberId {
        let address = format!("127.0.0.1:{port}").parse().expect("literal");
        MemberId::new(format!("m{port}"), address, kind)
    }

    fn set(members: &[&MemberId]) -> HashSet<Uuid> {
        members.iter().map(|m| m.uuid()).collect()
    }

    #[test]
    fn a_locator_and_two_members_survive_any_one_crash_and_no_one_decides_alone() {
        let locator = member(1, MemberKind::Locator);
        let lead = member(2, MemberKind::Member);
        let other = member(3, MemberKind::Member);
        let view = View::new(ViewId(3), [locator.clone(), lead.clone(), other.clone()]);
        let quorum = Quorum::new(&view);
        // Plain weights 3 + 15 + 10: the lead alone would hold 15 of 28. Capped at 12 of 25.
        assert!(quorum.is_majority(&set(&[&locator, &other])));
        assert!(quorum.is_majority(&set(&[&locator, &lead])));
        assert!(quorum.is_majority(&set(&[&lead, &other])));
        for alone in [&locator, &lead, &other] {
            assert!(!quorum.is_majority(&set(&[alone])), "{alone:?} alone");
        }
        assert!(quorum.lost_to(std::slice::from_ref(&lead)).is_none());
        let reason = quorum
            .lost_to(&[lead.clone(), other.clone()])
            .expect("lost");
        assert!(reason.contains("weigh 22 of its 25"), "{reason}");
    }

    #[test]
    fn half_is_not_a_majority_two_members_follow_the_lead_and_admins_count_by_heads() {
        let a = member(1, MemberKind::Member);
        let b = member(2, MemberKind::Member);
        let c = member(3, MemberKind::Member);
        let d = member(4, MemberKind::Member);
        // a is the lead (15); b, c, d weigh 10: 45 in all, nobody capped.
        let view = View::new(ViewId(2), [a.clone(), b.clone(), c.clone(), d.clone()]);
        let quorum = Quorum::new(&view);
        assert!(quorum.is_majority(&set(&[&a, &b])), "25 of 45");
        assert!(!quorum.is_majority(&set(&[&c, &d])), "20 of 45");
        // Two members: one of them has to win a split, and it is the lead (Geode's rule).
        let pair = View::new(ViewId(2), [a.clone(), b.clone()]);
        assert!(Quorum::new(&pair).is_majority(&set(&[&a])));
        assert!(!Quorum::new(&pair).is_majority(&set(&[&b])));
        let admins = View::new(
            ViewId(2),
            [member(5, MemberKind::Admin), member(6, MemberKind::Admin)],
        );
        let one: HashSet<Uuid> = [admins.members()[0].uuid()].into();
        assert!(!Quorum::new(&admins).is_majority(&one), "1 of 2 heads");
    }

    #[test]
    fn a_tally_reaches_a_majority_exactly_when_the_set_does() {
        let locator = member(1, MemberKind::Locator);
        let lead = member(2, MemberKind::Member);
        let other = member(3, MemberKind::Member);
        let admin = member(4, MemberKind::Admin);
        let view = View::new(
            ViewId(3),
            [locator.clone(), lead.clone(), other.clone(), admin.clone()],
        );
        let quorum = Quorum::new(&view);
        let weights = quorum.weights();
        let stranger = member(9, MemberKind::Member);
        for order in [
            [&admin, &locator, &stranger, &other],
            [&lead, &admin, &admin, &other],
            [&stranger, &other, &lead, &locator],
        ] {
            let mut tally = Tally::default();
            let mut seen = HashSet::new();
            for m in order {
                seen.insert(m.uuid());
                assert_eq!(
                    tally.add(&weights, m.uuid()),
                    quorum.is_majority(&seen),
                    "{seen:?}"
                );
            }
        }
        let admins = View::new(
            ViewId(2),
            [member(5, MemberKind::Admin), member(6, MemberKind::Admin)],
        );
        let weights = Quorum::new(&admins).weights();
        let mut tally = Tally::default();
        assert!(
            !tally.add(&weights, admins.members()[0].uuid()),
            "1 of 2 heads"
        );
        assert!(
            tally.add(&weights, admins.members()[1].uuid()),
            "2 of 2 heads"
        );
    }
}
