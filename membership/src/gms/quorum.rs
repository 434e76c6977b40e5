//! Weights and weighted majorities: whose agreement installs a view, and when one side of a
//! partition has lost its quorum.
//!
//! Every member of a view has a weight (locator 3, admin 0, member 10, and 5 more for the
//! lead member, plus its own adjustment). A view change installs only once members holding
//! a strict majority of the base view's weight accepted it, so two sides of a partition, or
//! an old and a new coordinator, can never both install. Members proven dead (their port
//! refused a final check: no process listens there, so they can never vote again) are left
//! out of the total: a cluster of one locator and two members survives the crash of any one
//! of them when the crash is proven, though not when it only goes silent, which a partition
//! looks like.

use std::collections::HashSet;

use cohort_transport::{MemberId, MemberKind, View};
use uuid::Uuid;

/// The weight of `member` when `lead` is the view's lead member (its oldest member of kind
/// Member): locator 3, admin 0, member 10, and 5 more for the lead, plus the member's own
/// adjustment, never below zero.
fn weight(member: &MemberId, lead: Option<Uuid>) -> i64 {
    let base = match member.kind() {
        MemberKind::Locator => 3,
        MemberKind::Admin => 0,
        MemberKind::Member => 10,
    };
    let bonus = if lead == Some(member.uuid()) { 5 } else { 0 };
    (base + bonus + i64::from(member.attributes().weight_adjustment)).max(0)
}

/// The members of one view whose votes decide its successor.
pub(crate) struct Quorum<'a> {
    view: &'a View,
    proven_dead: &'a HashSet<Uuid>,
    lead: Option<Uuid>,
}

impl<'a> Quorum<'a> {
    /// The voters of `view`, less those in `proven_dead`.
    pub(crate) fn new(view: &'a View, proven_dead: &'a HashSet<Uuid>) -> Self {
        let lead = view
            .members()
            .iter()
            .find(|m| m.kind() == MemberKind::Member)
            .map(MemberId::uuid);
        Quorum {
            view,
            proven_dead,
            lead,
        }
    }

    fn voters(&self) -> impl Iterator<Item = &'a MemberId> + '_ {
        self.view
            .members()
            .iter()
            .filter(|m| !self.proven_dead.contains(&m.uuid()))
    }

    /// The total weight of the voters in `of` (all voters when `of` is `None`).
    fn weigh(&self, of: Option<&HashSet<Uuid>>) -> (i64, usize) {
        self.voters()
            .filter(|m| of.is_none_or(|set| set.contains(&m.uuid())))
            .fold((0, 0), |(weight_sum, heads), m| {
                (weight_sum + weight(m, self.lead), heads + 1)
            })
    }

    /// True if the members in `agreed` hold a strict majority of the weight of the view's
    /// voters. Where every voter weighs nothing (a view of admins), heads are counted.
    pub(crate) fn is_majority(&self, agreed: &HashSet<Uuid>) -> bool {
        let (total, heads) = self.weigh(None);
        let (yes, yes_heads) = self.weigh(Some(agreed));
        if total == 0 {
            return heads > 0 && yes_heads * 2 > heads;
        }
        yes * 2 > total
    }

    /// Why this side has lost its quorum, if removing `crashed` (found dead by final
    /// checks that were not answered, so perhaps only cut off) leaves the rest of the
    /// voters with no strict majority.
    pub(crate) fn lost_to(&self, crashed: &[MemberId]) -> Option<String> {
        let gone: HashSet<Uuid> = crashed.iter().map(MemberId::uuid).collect();
        let rest: HashSet<Uuid> = self
            .voters()
            .map(MemberId::uuid)
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

#[cfg(test)]
mod tests {
    use cohort_transport::ViewId;

    use super::*;

    fn member(port: u16, kind: MemberKind) -> MemberId {
        let address = format!("127.0.0.1:{port}").parse().expect("literal");
        MemberId::new(format!("m{port}"), address, kind)
    }

    #[test]
    fn a_locator_and_two_members_survive_a_proven_crash_of_the_lead_but_not_its_silence() {
        let locator = member(1, MemberKind::Locator);
        let lead = member(2, MemberKind::Member);
        let other = member(3, MemberKind::Member);
        let view = View::new(ViewId(3), [locator.clone(), lead.clone(), other.clone()]);
        let survivors: HashSet<Uuid> = [locator.uuid(), other.uuid()].into();
        let nobody = HashSet::new();
        // 3 + 10 of 28: silence could be a partition, so no quorum.
        assert!(!Quorum::new(&view, &nobody).is_majority(&survivors));
        assert!(
            Quorum::new(&view, &nobody)
                .lost_to(std::slice::from_ref(&lead))
                .is_some()
        );
        // Its port refused the check: it can never vote again, 13 of 13.
        let proven: HashSet<Uuid> = [lead.uuid()].into();
        assert!(Quorum::new(&view, &proven).is_majority(&survivors));
        assert!(Quorum::new(&view, &proven).lost_to(&[]).is_none());
    }

    #[test]
    fn half_is_not_a_majority_and_admins_count_by_heads() {
        let a = member(1, MemberKind::Member);
        let b = member(2, MemberKind::Member);
        let c = member(3, MemberKind::Member);
        let d = member(4, MemberKind::Member);
        // a is the lead (15); b, c, d weigh 10: 45 in all.
        let view = View::new(ViewId(2), [a.clone(), b.clone(), c.clone(), d.clone()]);
        let nobody = HashSet::new();
        let quorum = Quorum::new(&view, &nobody);
        assert!(quorum.is_majority(&[a.uuid(), b.uuid()].into()), "25 of 45");
        assert!(
            !quorum.is_majority(&[c.uuid(), d.uuid()].into()),
            "20 of 45"
        );
        let admins = View::new(
            ViewId(2),
            [member(5, MemberKind::Admin), member(6, MemberKind::Admin)],
        );
        let one: HashSet<Uuid> = [admins.members()[0].uuid()].into();
        assert!(
            !Quorum::new(&admins, &nobody).is_majority(&one),
            "1 of 2 heads"
        );
    }
}
