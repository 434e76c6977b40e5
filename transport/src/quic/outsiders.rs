//! Peers of members outside the view: how many there may be, when they are forgotten,
//! and what is remembered of them.
//!
//! Anyone with a certificate from the cluster CA can say Hello, and the membership layer
//! talks to joiners before they are in a view, so such peers exist; but nothing else
//! bounds them. Three rules do:
//!
//! ```text
//! Hello / send_outside_view for a new uuid outside the view
//!   ─► Inner::peer_for: max_peers_outside_view reached? ─► refused (TOO_MANY_CONNECTIONS)
//! every outside_view_peer_timeout / 4 ─► Inner::forget_quiet_outsiders:
//!   outside the view, neither heard nor in the view for outside_view_peer_timeout?
//!   ─► removed from the table, driver stopped (connection closed RESET, queues dropped)
//!   ─► Positions remembered (bounded), unless the peer never exchanged a frame
//! the member is heard of again ─► Inner::peer_for resumes its Positions
//! a dial to a member outside the view ─► one of max_dials_outside_view permits first
//! ```
//!
//! Remembering the positions is what makes forgetting safe: the other side still has its
//! own peer, with its sequence numbers, and a fresh peer here would take its frames for a
//! gap and ours would look like duplicates to it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::peer::{Positions, Stop};
use super::{Inner, PeerEntry};
use crate::sync::{lock, read};
use crate::wire::CloseCode;

/// Forgotten peers whose positions are remembered; beyond it the oldest go (talking to
/// one of those again starts from scratch, as with a new member).
const FORGOTTEN_MEMORY: usize = 10_000;
/// How long forgetting waits for a peer's driver to close its connection.
const DRIVER_STOP_WAIT: Duration = Duration::from_secs(1);

/// Why there is no peer for a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoPeer {
    /// The messenger is shutting down.
    Closing,
    /// The member left the view.
    Departed,
    /// `max_peers_outside_view` peers outside the view exist already.
    Full,
    /// The member's peer is being forgotten right now; it can be had again in a moment.
    BeingForgotten,
}

/// The positions of forgotten peers, oldest first, and the peers being forgotten.
#[derive(Default)]
pub(crate) struct Forgotten {
    positions: HashMap<Uuid, (u64, Positions)>,
    order: VecDeque<(Uuid, u64)>,
    next_generation: u64,
    in_progress: HashSet<Uuid>,
}

impl Forgotten {
    /// The positions `uuid` left behind, if they are remembered; `Err` while its peer is
    /// being forgotten.
    pub(crate) fn resume(&mut self, uuid: Uuid) -> Result<Option<Positions>, NoPeer> {
        if self.in_progress.contains(&uuid) {
            return Err(NoPeer::BeingForgotten);
        }
        Ok(self.positions.remove(&uuid).map(|(_, positions)| positions))
    }

    fn remember(&mut self, uuid: Uuid, positions: Positions) {
        let generation = self.next_generation;
        self.next_generation += 1;
        self.positions.insert(uuid, (generation, positions));
        self.order.push_back((uuid, generation));
        while self.order.len() > FORGOTTEN_MEMORY {
            let Some((oldest, generation)) = self.order.pop_front() else {
                break;
            };
            // Only if it was not resumed and forgotten again since.
            if self
                .positions
                .get(&oldest)
                .is_some_and(|(g, _)| *g == generation)
            {
                self.positions.remove(&oldest);
            }
        }
    }
}

/// How often quiet peers are looked for: often enough that one is forgotten within a
/// quarter of the timeout after it is due.
pub(crate) fn sweep_period(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Forgets quiet peers outside the view until the messenger is gone.
pub(crate) async fn forget_quiet_outsiders(inner: Weak<Inner>) {
    let period = match inner.upgrade() {
        Some(inner) => sweep_period(inner.shared.config.outside_view_peer_timeout),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.forget_quiet_outsiders().await;
    }
}

impl Inner {
    /// Removes the peers outside the view that have been quiet for
    /// `outside_view_peer_timeout`, stops them and remembers their positions.
    async fn forget_quiet_outsiders(self: Arc<Self>) {
        let timeout = self.shared.config.outside_view_peer_timeout;
        let now = Instant::now();
        let quiet: Vec<(Uuid, PeerEntry)> = {
            let mut peers = lock(&self.peers);
            let admitted = read(&self.shared.admitted);
            let mut forgotten = lock(&self.forgotten);
            let due: Vec<Uuid> = peers
                .iter()
                .filter(|(uuid, entry)| {
                    if admitted.members.contains(uuid) {
                        entry.peer.seen_in_view();
                        return false;
                    }
                    now.saturating_duration_since(entry.peer.quiet_since()) >= timeout
                })
                .map(|(uuid, _)| *uuid)
                .collect();
            due.into_iter()
                .filter_map(|uuid| {
                    let entry = peers.remove(&uuid)?;
                    forgotten.in_progress.insert(uuid);
                    Some((uuid, entry))
                })
                .collect()
        };
        for (uuid, entry) in quiet {
            tracing::debug!(member = %entry.peer.member(), "forgetting a quiet peer outside the view");
            entry.peer.stop(Stop::Abort(CloseCode::Reset));
            // Its readers and writers end with the driver: only then are the positions final.
            let _ = tokio::time::timeout(DRIVER_STOP_WAIT, entry.driver).await;
            let positions = entry.peer.positions();
            let mut forgotten = lock(&self.forgotten);
            forgotten.in_progress.remove(&uuid);
            if !positions.is_fresh() {
                forgotten.remember(uuid, positions);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_positions_go_first_and_a_resumed_peer_is_not_lost_to_its_old_place() {
        let mut forgotten = Forgotten::default();
        let first = Uuid::from_u128(1);
        forgotten.remember(first, Positions::default());
        assert_eq!(forgotten.resume(first), Ok(Some(Positions::default())));
        forgotten.remember(first, Positions::default());
        // The first place of `first` in the order is stale: evicting it keeps the second.
        for n in 2..=FORGOTTEN_MEMORY as u128 {
            forgotten.remember(Uuid::from_u128(n), Positions::default());
        }
        assert!(forgotten.positions.contains_key(&first));
        assert_eq!(forgotten.positions.len(), FORGOTTEN_MEMORY);
        forgotten.remember(Uuid::from_u128(u128::MAX), Positions::default());
        assert!(forgotten.positions.len() <= FORGOTTEN_MEMORY);
        forgotten.in_progress.insert(first);
        assert_eq!(forgotten.resume(first), Err(NoPeer::BeingForgotten));
    }
}
