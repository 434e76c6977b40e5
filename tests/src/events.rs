//! [`EventLog`]: the membership events of a cluster's nodes, collected as a test goes, to
//! look at afterwards (who saw what crash, whether any view id named two memberships).
//!
//! ```text
//! EventLog::new(cluster) ─► one events() receiver per running node
//! collect() ─► drains every receiver into (node name, event), oldest first
//!           ─► assert_one_membership_per_view_id, or the test's own reading
//! ```

use std::collections::BTreeMap;

use cohort_membership::MembershipEvent;
use cohort_transport::{MemberId, ViewId};
use tokio::sync::broadcast;

use crate::Cluster;

/// Every membership event of the nodes running when it was made, from then on.
pub struct EventLog {
    receivers: Vec<(String, broadcast::Receiver<MembershipEvent>)>,
    seen: Vec<(String, MembershipEvent)>,
}

impl EventLog {
    /// Watches every running node of `cluster` from now on.
    pub fn new(cluster: &Cluster) -> EventLog {
        let receivers = cluster
            .running()
            .into_iter()
            .map(|name| {
                let events = cluster.member(&name).events();
                (name, events)
            })
            .collect();
        EventLog {
            receivers,
            seen: Vec::new(),
        }
    }

    /// Takes in what arrived so far, and returns everything, by node. Panics if a node's
    /// events lagged: the log would miss some.
    pub fn collect(&mut self) -> &[(String, MembershipEvent)] {
        for (name, receiver) in &mut self.receivers {
            loop {
                match receiver.try_recv() {
                    Ok(event) => self.seen.push((name.clone(), event)),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                        panic!("{name}'s events lagged by {n}: the log would miss some")
                    }
                    Err(_) => break,
                }
            }
        }
        &self.seen
    }

    /// Panics if two nodes installed different memberships under one view id; returns how
    /// many view ids were seen.
    pub fn assert_one_membership_per_view_id(&mut self) -> usize {
        let mut by_id: BTreeMap<ViewId, (String, Vec<MemberId>)> = BTreeMap::new();
        for (name, event) in self.collect() {
            let MembershipEvent::ViewInstalled { view, .. } = event else {
                continue;
            };
            let members = view.members().to_vec();
            match by_id.get(&view.id()) {
                Some((first, theirs)) => assert!(
                    same_members(theirs, &members),
                    "view {} is {theirs:?} at {first} and {members:?} at {name}",
                    view.id()
                ),
                None => {
                    by_id.insert(view.id(), (name.clone(), members));
                }
            }
        }
        by_id.len()
    }
}

/// Same members (uuids, which is what identity is) in the same order.
fn same_members(a: &[MemberId], b: &[MemberId]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.uuid() == y.uuid())
}
