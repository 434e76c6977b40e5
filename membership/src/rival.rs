//! Rival clusters: two clusters formed from one set of locators (founders that could not
//! hear each other at start, see ARCHITECTURE.md) find each other and become one. Founding
//! makes this rare; this is what ends it when it happens anyway.
//!
//! ```text
//! Driver, every RIVAL_PROBE_INTERVAL, while it coordinates (lease held):
//!   FindCoordinator ─► each configured locator whose address is not in its view
//!   ─► DiscoveryAnswer{view} ─► yields_to(own view, answered view)
//!        ├─► None: the same cluster (views share a member), no view, or this one ranks first
//!        └─► Some(reason) ─► Gms::dissolve: the coordinator's partition notice to every
//!            member, each ForcedDisconnect(reason) ─► auto-reconnect joins the other cluster
//! ```
//!
//! Which cluster yields is decided by a rank both coordinators compute alike: the greater
//! quorum weight wins, then more members, then the coordinator with the smaller address
//! (then uuid). The views compared are each coordinator's own and the other's answer, so
//! both yielding at once needs both views to change within one probe; the one that yields
//! loses nothing but its uuids, as any member forced out does.

use std::cmp::Ordering;
use std::collections::HashSet;

use cohort_transport::{MemberId, View};
use uuid::Uuid;

use crate::gms::quorum::Quorum;

/// How often a coordinator asks the configured locators outside its view, in member
/// timeouts. Nothing is sent while every configured locator is in the view.
pub(crate) const RIVAL_PROBE_MEMBER_TIMEOUTS: u32 = 5;

/// Why the cluster of `own` must yield to the cluster of `answered` (a view that a
/// configured locator outside `own` answered with), or `None` if it need not: the answer
/// carries no view, shares a member with `own` (one cluster, seen at two moments: a member
/// removed from it, or one that joined since), or ranks below it.
pub(crate) fn yields_to(own: &View, answered: Option<&View>) -> Option<String> {
    let rival = answered.filter(|v| !v.is_empty())?;
    let ours: HashSet<Uuid> = own.members().iter().map(MemberId::uuid).collect();
    if rival.members().iter().any(|m| ours.contains(&m.uuid())) {
        return None;
    }
    if rank(rival).cmp(&rank(own)) != Ordering::Greater {
        return None;
    }
    let coordinator = rival
        .coordinator()
        .map_or_else(|| "nobody".to_owned(), |c| format!("{c:?}"));
    Some(format!(
        "another cluster formed from the same locators: its view {} ({} member(s), quorum \
         weight {}, coordinated by {coordinator}) ranks above this one's view {} ({} \
         member(s), weight {}); this cluster yields and its members join that one",
        rival.id(),
        rival.len(),
        weight(rival),
        own.id(),
        own.len(),
        weight(own),
    ))
}

/// The order in which clusters win: greater weight, then more members, then the smaller
/// coordinator (so `Reverse` of its address and uuid).
fn rank(
    view: &View,
) -> (
    i64,
    usize,
    std::cmp::Reverse<Option<(std::net::SocketAddr, Uuid)>>,
) {
    let coordinator = view.coordinator().map(|c| (c.address(), c.uuid()));
    (weight(view), view.len(), std::cmp::Reverse(coordinator))
}

fn weight(view: &View) -> i64 {
    Quorum::new(view).total()
}

#[cfg(test)]
mod tests {
    use cohort_transport::{MemberKind, ViewId};

    use super::*;

    fn member(name: &str, port: u16, kind: MemberKind) -> MemberId {
        MemberId::new(name, ([127, 0, 0, 1], port).into(), kind)
    }

    fn view(id: u64, members: &[&MemberId]) -> View {
        View::new(ViewId(id), members.iter().map(|m| (*m).clone()))
    }

    #[test]
    fn the_lighter_cluster_yields_and_the_heavier_does_not() {
        let a = member("a", 1, MemberKind::Locator);
        let b = member("b", 2, MemberKind::Locator);
        let c = member("c", 3, MemberKind::Locator);
        let heavy = view(3, &[&a, &c]);
        let light = view(1, &[&b]);
        let reason = yields_to(&light, Some(&heavy)).expect("the lighter yields");
        assert!(reason.contains("view 3 (2 member(s)"), "{reason}");
        assert_eq!(yields_to(&heavy, Some(&light)), None);
    }

    #[test]
    fn between_equals_the_cluster_of_the_smaller_coordinator_stays() {
        let a = member("a", 1, MemberKind::Locator);
        let b = member("b", 2, MemberKind::Locator);
        let first = view(7, &[&a]);
        let second = view(2, &[&b]);
        assert!(yields_to(&second, Some(&first)).is_some());
        assert_eq!(yields_to(&first, Some(&second)), None);
    }

    #[test]
    fn views_sharing_a_member_are_one_cluster() {
        let a = member("a", 1, MemberKind::Locator);
        let b = member("b", 2, MemberKind::Locator);
        let c = member("c", 3, MemberKind::Locator);
        // b was removed from a's cluster while cut off and still holds the old view.
        let stale = view(4, &[&a, &b, &c]);
        let current = view(5, &[&a]);
        assert_eq!(yields_to(&current, Some(&stale)), None);
        assert_eq!(yields_to(&current, None), None);
        assert_eq!(yields_to(&current, Some(&View::empty())), None);
    }
}
