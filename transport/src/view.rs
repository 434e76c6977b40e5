//! Membership views: the ordered list of members everyone agrees on.
//!
//! A view lists members oldest first. The coordinator (which admits and removes members)
//! is the oldest eligible member: the oldest locator if the view has one, else the oldest
//! non-admin member. The elder (for distributed locking) is the oldest non-admin member.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::member::{MemberId, MemberKind};

/// A view's number. Views are installed in increasing id order.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct ViewId(pub u64);

impl fmt::Display for ViewId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One membership view. Cheap to clone (shared). Two views are equal if they have the same
/// id and the same members (by uuid) in the same order.
///
/// Membership tests are O(1): a view keeps the place of each uuid beside the list, since
/// `Gms` asks "is this sender a member?" of every message, and with 10,000 members a linear
/// scan was most of the work of a view change. On the wire a view is its id and its member
/// list only; a decoded view is rebuilt by [`View::new`], so a list that names
/// a member twice keeps its first place there too.
#[derive(Clone, Serialize, Deserialize)]
#[serde(from = "ViewWire", into = "ViewWire")]
pub struct View {
    id: ViewId,
    members: Arc<[MemberId]>,
    /// The index in `members` of each member's uuid.
    places: Arc<HashMap<Uuid, usize>>,
    /// The indices in `members` of the locators, oldest first: finding the coordinator
    /// must not scan a view of 10,000 members that holds no locator.
    locators: Arc<[usize]>,
}

/// A view as it is encoded: the fields `View` had before it kept an index, in the same order,
/// so the bytes are unchanged.
#[derive(Serialize, Deserialize)]
struct ViewWire {
    id: ViewId,
    members: Vec<MemberId>,
}

impl From<ViewWire> for View {
    fn from(wire: ViewWire) -> Self {
        View::new(wire.id, wire.members)
    }
}

impl From<View> for ViewWire {
    fn from(view: View) -> Self {
        ViewWire {
            id: view.id,
            members: view.members.to_vec(),
        }
    }
}

impl PartialEq for View {
    fn eq(&self, other: &Self) -> bool {
        // `MemberId`s are equal by uuid; the index follows from the list.
        self.id == other.id && self.members == other.members
    }
}

impl Eq for View {}

impl View {
    /// A view with these members, oldest first. A member listed twice keeps its first place.
    pub fn new(id: ViewId, members: impl IntoIterator<Item = MemberId>) -> Self {
        let mut places = HashMap::new();
        let members: Vec<MemberId> = members
            .into_iter()
            .filter(|m| {
                let next = places.len();
                match places.entry(m.uuid()) {
                    Entry::Occupied(_) => false,
                    Entry::Vacant(slot) => {
                        slot.insert(next);
                        true
                    }
                }
            })
            .collect();
        let locators: Vec<usize> = members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.kind() == MemberKind::Locator)
            .map(|(place, _)| place)
            .collect();
        View {
            id,
            members: members.into(),
            places: Arc::new(places),
            locators: locators.into(),
        }
    }

    /// The empty view a messenger starts with (id 0).
    pub fn empty() -> Self {
        View::new(ViewId(0), [])
    }

    /// This view's id.
    pub fn id(&self) -> ViewId {
        self.id
    }

    /// The members, oldest first.
    pub fn members(&self) -> &[MemberId] {
        &self.members
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True if the view has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// True if the member with this uuid is in the view.
    pub fn contains_uuid(&self, uuid: Uuid) -> bool {
        self.places.contains_key(&uuid)
    }

    /// True if the member is in the view.
    pub fn contains(&self, member: &MemberId) -> bool {
        self.contains_uuid(member.uuid())
    }

    /// The view's entry for a uuid.
    pub fn member(&self, uuid: Uuid) -> Option<&MemberId> {
        self.places.get(&uuid).map(|&place| &self.members[place])
    }

    /// The oldest eligible member: the oldest locator, else the oldest non-admin member.
    pub fn coordinator(&self) -> Option<&MemberId> {
        self.coordinator_among(|_| true)
    }

    /// The member that would coordinate if only the members `keep` accepts were left: what
    /// [`View::coordinator`] becomes once suspected or crashed members are gone.
    pub fn coordinator_among(&self, keep: impl Fn(&MemberId) -> bool) -> Option<&MemberId> {
        self.locators
            .iter()
            .map(|&place| &self.members[place])
            .find(|m| keep(m))
            .or_else(|| {
                self.members
                    .iter()
                    .filter(|m| keep(m))
                    .find(|m| m.kind() != MemberKind::Admin)
            })
    }

    /// The oldest non-admin member.
    pub fn elder(&self) -> Option<&MemberId> {
        self.members.iter().find(|m| m.kind() != MemberKind::Admin)
    }
}

impl fmt::Debug for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("View")
            .field("id", &self.id)
            .field("members", &self.members)
            .finish()
    }
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "view {} [", self.id)?;
        for (i, m) in self.members.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{m}")?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, kind: MemberKind) -> MemberId {
        MemberId::new(name, "127.0.0.1:1".parse().expect("literal"), kind)
    }

    #[test]
    fn coordinator_prefers_oldest_locator_and_elder_skips_admins() {
        let admin = member("admin", MemberKind::Admin);
        let m1 = member("m1", MemberKind::Member);
        let loc = member("loc", MemberKind::Locator);
        let v = View::new(ViewId(3), [admin.clone(), m1.clone(), loc.clone()]);
        assert_eq!(v.coordinator(), Some(&loc));
        assert_eq!(v.elder(), Some(&m1));
        let no_locator = View::new(ViewId(4), [admin.clone(), m1.clone()]);
        assert_eq!(no_locator.coordinator(), Some(&m1));
        assert_eq!(View::new(ViewId(5), [admin]).coordinator(), None);
    }

    #[test]
    fn duplicates_keep_first_place() {
        let a = member("a", MemberKind::Member);
        let b = member("b", MemberKind::Member);
        let v = View::new(ViewId(1), [a.clone(), b.clone(), a.clone()]);
        assert_eq!(v.members(), &[a, b]);
        assert_eq!(format!("{v}"), "view 1 [a, b]");
    }
}
