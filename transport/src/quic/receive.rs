//! The receive side of reliability, per sender: for each priority, the last sequence
//! number handed to a subscriber. The counterpart of [`super::queue::SendWindow`], and plain
//! data like it (no I/O, no clock, no locks), driven by the connection's readers:
//!
//! ```text
//! frame seq ──check──► Next ──(planned in a ReceiveCursor)──► handed to the subscriber ──commit──► delivered
//!                  └─► Duplicate (dropped; acknowledged again) or Gap (the peer is broken)
//! ```
//!
//! A reader checks a whole batch of frames before handing any of them over, so it plans on
//! a [`ReceiveCursor`] (a copy of one priority's position that advances as frames are
//! accepted) and commits to the window only what a subscriber has. A reader cancelled
//! between the two (its connection replaced) leaves the uncommitted frames to be resent on
//! the next connection, where they are then the next ones again, and are not delivered
//! twice: the window only moves on a commit.

use crate::priority::Priority;

/// What a received sequence number means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// The next one: deliver it.
    Next,
    /// Already delivered: drop it.
    Duplicate,
    /// Later than the next one: frames were lost on an earlier connection.
    Gap {
        /// The sequence number that was due.
        expected: u64,
    },
}

/// Per priority, the last sequence number delivered from one sender.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ReceiveWindow {
    delivered: [u64; 4],
}

impl ReceiveWindow {
    /// A window that goes on from what a forgotten peer of the same sender left behind.
    pub(crate) fn resume(delivered: [u64; 4]) -> Self {
        ReceiveWindow { delivered }
    }

    /// Per priority, the last sequence number delivered (what an acknowledgement and a
    /// Hello carry).
    pub(crate) fn delivered(&self) -> [u64; 4] {
        self.delivered
    }

    /// A cursor for checking a batch of `priority`'s frames, starting at what was delivered.
    pub(crate) fn cursor(&self, priority: Priority) -> ReceiveCursor {
        ReceiveCursor {
            last: self.delivered[priority.index()],
        }
    }

    /// Records everything of `priority` up to `seq` delivered. A position never moves back:
    /// committing an older one (a stale reader) changes nothing.
    pub(crate) fn commit(&mut self, priority: Priority, seq: u64) {
        let delivered = &mut self.delivered[priority.index()];
        *delivered = (*delivered).max(seq);
    }
}

/// One priority's position while a reader plans a batch: what the next frame must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReceiveCursor {
    last: u64,
}

impl ReceiveCursor {
    /// What `seq` means after the frames accepted so far; a `Next` frame is accepted (the
    /// cursor moves past it).
    pub(crate) fn accept(&mut self, seq: u64) -> Received {
        if seq <= self.last {
            Received::Duplicate
        } else if seq == self.last + 1 {
            self.last = seq;
            Received::Next
        } else {
            Received::Gap {
                expected: self.last + 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_next_once_then_duplicates_and_a_jump_is_a_gap() {
        let mut window = ReceiveWindow::default();
        let mut cursor = window.cursor(Priority::High);
        assert_eq!(cursor.accept(1), Received::Next);
        assert_eq!(cursor.accept(2), Received::Next);
        assert_eq!(cursor.accept(2), Received::Duplicate);
        assert_eq!(cursor.accept(4), Received::Gap { expected: 3 });
        // Nothing is delivered until committed: a new cursor starts where the window is.
        assert_eq!(window.cursor(Priority::High).accept(1), Received::Next);
        window.commit(Priority::High, 2);
        let mut cursor = window.cursor(Priority::High);
        assert_eq!(cursor.accept(1), Received::Duplicate);
        assert_eq!(cursor.accept(3), Received::Next);
        // Priorities are independent.
        assert_eq!(window.cursor(Priority::Normal).accept(1), Received::Next);
        assert_eq!(window.delivered(), [0, 2, 0, 0]);
    }

    #[test]
    fn a_stale_commit_never_moves_a_position_back() {
        let mut window = ReceiveWindow::resume([5, 0, 0, 0]);
        window.commit(Priority::Control, 3);
        assert_eq!(window.delivered(), [5, 0, 0, 0]);
        assert_eq!(
            window.cursor(Priority::Control).accept(7),
            Received::Gap { expected: 6 }
        );
    }
}
