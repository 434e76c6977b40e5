//! The safety invariants of view installation, checked at every `ViewInstalled` event by
//! whoever installs: [`Invariants::installed`]. Shared by [`Chaos`](super::Chaos) and
//! [`gms_sim`](crate::gms_sim).
//!
//! 1. Every member that installs view id N installs the same members, in the same order.
//! 2. Each member's installed view ids strictly grow.
//! 3. Once an installed view B left out a member that an earlier installed view held, no
//!    view with an id above B holds it again. Member ids are never reused (a restarted
//!    process is a new uuid), so a member that reappears was never really out: a view
//!    change was lost, or two were made from one base. Checked over the installs of
//!    everyone, in id order, whatever order they happened in: a presence, a gap, and a
//!    presence again among the installed ids of one member is the violation.
//!
//! The other invariants ([`Invariant`]) are about the members' state rather than one
//! install, and are checked by the simulation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use cohort_transport::{MemberId, View, ViewId};
use uuid::Uuid;

/// Which property a run broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invariant {
    /// 1: every member that installs view id N installs the same members.
    OneViewPerId,
    /// 2: each member's installed view ids strictly grow.
    IdsGrow,
    /// 3: no member appears in a view after a view that removed it.
    NoReturn,
    /// 4: at most one live, unpaused member with installed view id N reports
    /// `is_coordinator(now)` (fatal with `ChaosConfig::strict_coordinators`, the default).
    OneCoordinator,
    /// 5, after healing: every removed member stops believing it is in.
    RemovedLearnOut,
    /// 6, after healing: the live members that are members hold one view, made of exactly
    /// them; every pending leave has installed; every live joiner is in, refused or timed
    /// out.
    OneViewAfterHeal,
    /// A scripted wait that did not end within its bound of virtual time.
    Deadline,
    /// A scenario's own expectation.
    Expectation,
    /// Many steps at one instant of virtual time: something re-arms a deadline in the past
    /// without making progress (a driver would spin on it).
    Spin,
}

impl Invariant {
    /// The invariant's number in the module docs, if it is one of the six.
    pub fn number(self) -> Option<u32> {
        match self {
            Invariant::OneViewPerId => Some(1),
            Invariant::IdsGrow => Some(2),
            Invariant::NoReturn => Some(3),
            Invariant::OneCoordinator => Some(4),
            Invariant::RemovedLearnOut => Some(5),
            Invariant::OneViewAfterHeal => Some(6),
            Invariant::Deadline | Invariant::Expectation | Invariant::Spin => None,
        }
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            Invariant::OneViewPerId => "one set of members per view id",
            Invariant::IdsGrow => "each member's view ids grow",
            Invariant::NoReturn => "no member returns after a view removed it",
            Invariant::OneCoordinator => "one coordinator per view id",
            Invariant::RemovedLearnOut => "removed members learn they are out",
            Invariant::OneViewAfterHeal => "one view after healing",
            Invariant::Deadline => "a scripted wait ran out",
            Invariant::Expectation => "a scenario's expectation",
            Invariant::Spin => "no spinning at one instant",
        };
        match self.number() {
            Some(n) => write!(f, "invariant {n} ({what})"),
            None => f.write_str(what),
        }
    }
}

/// A broken invariant and what broke it, for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which one.
    pub invariant: Invariant,
    /// The members and views involved.
    pub detail: String,
}

impl Violation {
    /// A violation of `invariant`.
    pub fn new(invariant: Invariant, detail: impl Into<String>) -> Self {
        Violation {
            invariant,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

/// The first install of one view id.
#[derive(Debug)]
struct FirstInstall {
    members: Vec<Uuid>,
    /// Who installed it first, for the reports.
    by: String,
}

/// Invariants 1 to 3 over every install seen. See the module docs.
#[derive(Debug, Default)]
pub struct Invariants {
    views: BTreeMap<ViewId, FirstInstall>,
    /// Each installer's last installed view id.
    last: HashMap<Uuid, ViewId>,
    /// For every member some installed view held: the ids of those views. Ordered, so the
    /// first violation found does not depend on hashing.
    present: BTreeMap<Uuid, BTreeSet<ViewId>>,
    names: HashMap<Uuid, String>,
}

impl Invariants {
    /// No installs yet.
    pub fn new() -> Self {
        Invariants::default()
    }

    /// `installer` installed `view`; `how` says how, if known (for the reports, e.g. "on a
    /// message from m1"). Checks invariants 1 to 3.
    pub fn installed(
        &mut self,
        installer: &MemberId,
        how: &str,
        view: &View,
    ) -> Result<(), Violation> {
        let by = match how {
            "" => installer.name().to_owned(),
            how => format!("{} {how}", installer.name()),
        };
        // Every installer of a view compares against its first installation: O(members),
        // without allocating, since with 10,000 members each view is installed 10,000 times.
        let first = self.views.get(&view.id());
        if let Some(first) = first.filter(|first| {
            !first
                .members
                .iter()
                .copied()
                .eq(view.members().iter().map(MemberId::uuid))
        }) {
            let members: Vec<Uuid> = view.members().iter().map(MemberId::uuid).collect();
            return Err(Violation::new(
                Invariant::OneViewPerId,
                format!(
                    "{by} installed view {} as {}, but {} installed it as {}",
                    view.id(),
                    self.list(&members),
                    first.by,
                    self.list(&first.members)
                ),
            ));
        }
        let last = self.last.insert(installer.uuid(), view.id());
        if let Some(last) = last.filter(|last| *last >= view.id()) {
            return Err(Violation::new(
                Invariant::IdsGrow,
                format!("{by} installed view {} after view {last}", view.id()),
            ));
        }
        self.names
            .entry(installer.uuid())
            .or_insert_with(|| installer.name().to_owned());
        if first.is_some() {
            // Same members as before: nothing new for invariant 3, and no new name.
            return Ok(());
        }
        for member in view.members() {
            self.names
                .entry(member.uuid())
                .or_insert_with(|| member.name().to_owned());
        }
        let members: Vec<Uuid> = view.members().iter().map(MemberId::uuid).collect();
        for uuid in &members {
            self.present.entry(*uuid).or_default().insert(view.id());
        }
        self.views.insert(view.id(), FirstInstall { members, by });
        self.no_return(view.id())
    }

    /// Invariant 3, once the first install of view `id` is recorded: a member's
    /// installed ids must be consecutive among all installed ids, from its first to its
    /// last. Checked incrementally (the invariant held before): a member of the new view
    /// must have no installed view between its neighbouring ids and `id`, and the new view
    /// must not fall strictly inside the span of a member it leaves out.
    fn no_return(&self, id: ViewId) -> Result<(), Violation> {
        for uuid in &self.views[&id].members {
            let ids = &self.present[uuid];
            if let Some(&before) = ids.range(..id).next_back()
                && let Some((&gap, _)) = self.views.range(before..id).nth(1)
            {
                return Err(self.returned(*uuid, before, gap, id));
            }
            if let Some(&after) = ids.range(id..).nth(1)
                && let Some((&gap, _)) = self.views.range(id..after).nth(1)
            {
                return Err(self.returned(*uuid, id, gap, after));
            }
        }
        for (uuid, ids) in &self.present {
            if ids.contains(&id) {
                continue;
            }
            if let (Some(&before), Some(&after)) =
                (ids.range(..id).next_back(), ids.range(id..).next())
            {
                return Err(self.returned(*uuid, before, id, after));
            }
        }
        Ok(())
    }

    /// The violation of invariant 3 by `uuid`: in `before`, out of `gap`, back in `after`.
    fn returned(&self, uuid: Uuid, before: ViewId, gap: ViewId, after: ViewId) -> Violation {
        Violation::new(
            Invariant::NoReturn,
            format!(
                "{} was in view {before} ({}), left out of view {gap} ({}), and is back in view {after} ({})",
                self.name(uuid),
                self.views[&before].by,
                self.views[&gap].by,
                self.views[&after].by,
            ),
        )
    }

    /// How many distinct view ids have been installed.
    pub fn len(&self) -> usize {
        self.views.len()
    }

    /// True before the first install.
    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }

    /// True if some installed view held `uuid`.
    pub fn ever_member(&self, uuid: Uuid) -> bool {
        self.present.contains_key(&uuid)
    }

    /// The members of installed view `id`, as its first installer saw it.
    pub fn members_of(&self, id: ViewId) -> Option<&[Uuid]> {
        self.views.get(&id).map(|v| v.members.as_slice())
    }

    /// The newest installed view id.
    pub fn newest(&self) -> Option<ViewId> {
        self.views.keys().next_back().copied()
    }

    fn name(&self, uuid: Uuid) -> String {
        self.names
            .get(&uuid)
            .cloned()
            .unwrap_or_else(|| uuid.to_string())
    }

    fn list(&self, members: &[Uuid]) -> String {
        let names: Vec<String> = members.iter().map(|u| self.name(*u)).collect();
        format!("[{}]", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use cohort_transport::MemberKind;

    use super::*;

    fn members(n: u16) -> Vec<MemberId> {
        (0..n)
            .map(|i| {
                let address = format!("127.0.0.1:{}", 1000 + i).parse().expect("literal");
                MemberId::new(format!("m{i}"), address, MemberKind::Member)
            })
            .collect()
    }

    fn view(id: u64, of: &[&MemberId]) -> View {
        View::new(ViewId(id), of.iter().map(|m| (*m).clone()))
    }

    #[test]
    fn two_sets_of_members_under_one_id_and_a_shrinking_id_are_caught() {
        let m = members(3);
        let mut checks = Invariants::new();
        checks
            .installed(&m[0], "", &view(1, &[&m[0], &m[1]]))
            .expect("first");
        checks
            .installed(&m[1], "", &view(1, &[&m[0], &m[1]]))
            .expect("same");
        let split = checks.installed(&m[2], "", &view(1, &[&m[0], &m[2]]));
        assert_eq!(split.map_err(|v| v.invariant), Err(Invariant::OneViewPerId));
        checks
            .installed(&m[0], "", &view(3, &[&m[0], &m[1]]))
            .expect("newer");
        let back = checks.installed(&m[0], "", &view(2, &[&m[0], &m[1]]));
        assert_eq!(back.map_err(|v| v.invariant), Err(Invariant::IdsGrow));
    }

    #[test]
    fn a_member_back_after_a_view_without_it_is_caught_in_any_install_order() {
        let m = members(3);
        // In order: in view 1, out of view 2, back in view 3.
        let mut checks = Invariants::new();
        checks
            .installed(&m[0], "", &view(1, &[&m[0], &m[1], &m[2]]))
            .expect("1");
        checks
            .installed(&m[0], "", &view(2, &[&m[0], &m[1]]))
            .expect("2");
        let back = checks.installed(&m[1], "", &view(3, &[&m[0], &m[1], &m[2]]));
        assert_eq!(back.map_err(|v| v.invariant), Err(Invariant::NoReturn));
        // The view without it installed last, between the two with it.
        let mut checks = Invariants::new();
        checks
            .installed(&m[0], "", &view(1, &[&m[0], &m[1], &m[2]]))
            .expect("1");
        checks
            .installed(&m[1], "", &view(3, &[&m[0], &m[1], &m[2]]))
            .expect("3");
        let gap = checks.installed(&m[0], "", &view(2, &[&m[0], &m[1]]));
        assert_eq!(gap.map_err(|v| v.invariant), Err(Invariant::NoReturn));
        // Ids skipped by the protocol are no gap, and leaving for good is fine.
        let mut checks = Invariants::new();
        checks
            .installed(&m[0], "", &view(1, &[&m[0], &m[1], &m[2]]))
            .expect("1");
        checks
            .installed(&m[0], "", &view(4, &[&m[0], &m[1], &m[2]]))
            .expect("4");
        checks
            .installed(&m[0], "", &view(5, &[&m[0], &m[1]]))
            .expect("5");
        checks.installed(&m[1], "", &view(6, &[&m[1]])).expect("6");
        assert!(checks.ever_member(m[2].uuid()));
        assert_eq!(checks.len(), 4);
    }
}
