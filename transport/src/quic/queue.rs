//! The send side of reliability, per destination: one lane per priority holding what is
//! queued and what was written but not yet acknowledged, bounded in bytes together.
//!
//! This is plain data (no I/O, no clock), driven by the peer's tasks:
//!
//! ```text
//! push ──► queued ──take──► unacked ──ack(upto)──► released
//!                  ◄──restart(peer's delivered)── unacked beyond what the peer delivered
//! ```
//!
//! Sequence numbers are assigned at push time, per priority, starting at 1, so the order a
//! message was accepted in is the order it is delivered in. A frame stays in the account
//! until the peer acknowledges delivering it: the bound covers everything this member
//! holds for the destination, and a connection that dies loses nothing, because a new
//! connection resends what the peer's Hello says it has not delivered. A lane may also cap
//! its unacknowledged bytes (Bulk does), so a bulk transfer cannot fill the connection's
//! buffers ahead of urgent traffic.
//!
//! A peer outside the view that is forgotten leaves its [`Numbering`] behind. A window
//! resumed from it numbers new frames from what the peer acknowledged, and its first
//! restart moves them past whatever the peer says it delivered (frames the forgotten
//! window wrote but never saw acknowledged may have arrived), so that the peer sees
//! neither a duplicate nor a gap.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::message::Tag;
use crate::priority::Priority;
use crate::wire;

/// One message waiting to be written or acknowledged.
#[derive(Clone, Debug)]
pub(crate) struct OutFrame {
    pub(crate) seq: u64,
    pub(crate) tag: Tag,
    pub(crate) payload: Bytes,
}

impl OutFrame {
    pub(crate) fn wire_len(&self) -> usize {
        wire::data_frame_len(self.seq, self.tag, self.payload.len())
    }
}

/// How many frames, and bytes on the wire, one [`SendWindow::take`] moved to
/// unacknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Taken {
    pub(crate) frames: usize,
    pub(crate) bytes: usize,
}

/// Frames taken for one write, as the tests look at them.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) frames: Vec<OutFrame>,
    pub(crate) bytes: usize,
}

/// The window was over its bound; the message was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OverBound {
    pub(crate) queued_bytes: usize,
}

/// One lane's sequence numbers, kept when its window is forgotten.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Numbering {
    /// The highest sequence number the peer acknowledged delivering.
    pub(crate) acked: u64,
    /// The highest sequence number ever given to a frame.
    pub(crate) highest: u64,
}

#[derive(Debug)]
struct Lane {
    next_seq: u64,
    /// The highest sequence number the peer acknowledged delivering.
    acked: u64,
    /// Resumed from a forgotten window: numbers up to this one were given out before,
    /// and the peer may have delivered any of them. Zero once the first restart has
    /// moved the queued frames past what the peer delivered.
    reused_upto: u64,
    queued: VecDeque<OutFrame>,
    unacked: VecDeque<OutFrame>,
    unacked_bytes: usize,
    in_flight_limit: usize,
}

impl Lane {
    fn new(in_flight_limit: usize, resumed: Numbering) -> Self {
        Lane {
            next_seq: resumed.acked + 1,
            acked: resumed.acked,
            reused_upto: resumed.highest,
            queued: VecDeque::new(),
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            in_flight_limit,
        }
    }

    fn numbering(&self) -> Numbering {
        Numbering {
            acked: self.acked,
            highest: (self.next_seq - 1).max(self.reused_upto),
        }
    }
}

#[derive(Debug)]
pub(crate) struct SendWindow {
    lanes: [Lane; 4],
    accounted_bytes: usize,
    limit: usize,
}

impl SendWindow {
    /// A window holding at most `limit` bytes, with Bulk's unacknowledged bytes capped at
    /// `bulk_in_flight`.
    #[cfg(test)]
    pub(crate) fn new(limit: usize, bulk_in_flight: usize) -> Self {
        Self::resume(limit, bulk_in_flight, [Numbering::default(); 4])
    }

    /// A window for a peer forgotten earlier, numbering on from what it left behind.
    pub(crate) fn resume(limit: usize, bulk_in_flight: usize, numbering: [Numbering; 4]) -> Self {
        SendWindow {
            lanes: Priority::ALL.map(|p| {
                let in_flight_limit = match p {
                    Priority::Bulk => bulk_in_flight,
                    _ => usize::MAX,
                };
                Lane::new(in_flight_limit, numbering[p.index()])
            }),
            accounted_bytes: 0,
            limit,
        }
    }

    /// Per priority, what a window resumed later must know.
    pub(crate) fn numbering(&self) -> [Numbering; 4] {
        self.lanes.each_ref().map(Lane::numbering)
    }

    /// Queues a message, or refuses it if the account would exceed the bound. An empty
    /// account always takes one message, so a message up to the frame limit can always go.
    pub(crate) fn push(
        &mut self,
        priority: Priority,
        tag: Tag,
        payload: Bytes,
    ) -> Result<u64, OverBound> {
        let lane = &mut self.lanes[priority.index()];
        let frame = OutFrame {
            seq: lane.next_seq,
            tag,
            payload,
        };
        let len = frame.wire_len();
        if self.accounted_bytes > 0 && self.accounted_bytes + len > self.limit {
            return Err(OverBound {
                queued_bytes: self.accounted_bytes,
            });
        }
        lane.next_seq += 1;
        self.accounted_bytes += len;
        let seq = frame.seq;
        lane.queued.push_back(frame);
        Ok(seq)
    }

    /// Takes queued frames of one priority, oldest first, up to `max_bytes` and the lane's
    /// in-flight cap (at least one frame when nothing is in flight), showing each to `write`
    /// (which encodes it: nothing is copied or cloned here). They stay accounted, as
    /// unacknowledged, until [`SendWindow::ack`].
    pub(crate) fn take(
        &mut self,
        priority: Priority,
        max_bytes: usize,
        mut write: impl FnMut(&OutFrame),
    ) -> Option<Taken> {
        let lane = &mut self.lanes[priority.index()];
        let mut taken = Taken {
            frames: 0,
            bytes: 0,
        };
        while let Some(front) = lane.queued.front() {
            let len = front.wire_len();
            let nothing_in_flight = taken.frames == 0 && lane.unacked.is_empty();
            let over_batch = taken.frames > 0 && taken.bytes + len > max_bytes;
            let over_flight = lane.unacked_bytes + len > lane.in_flight_limit;
            if over_batch || (over_flight && !nothing_in_flight) {
                break;
            }
            taken.frames += 1;
            taken.bytes += len;
            lane.unacked_bytes += len;
            if let Some(frame) = lane.queued.pop_front() {
                write(&frame);
                lane.unacked.push_back(frame);
            }
        }
        (taken.frames > 0).then_some(taken)
    }

    /// [`SendWindow::take`], keeping copies of the frames taken.
    #[cfg(test)]
    pub(crate) fn take_batch(&mut self, priority: Priority, max_bytes: usize) -> Option<Batch> {
        let mut frames = Vec::new();
        let taken = self.take(priority, max_bytes, |frame| frames.push(frame.clone()))?;
        Some(Batch {
            frames,
            bytes: taken.bytes,
        })
    }

    /// The peer delivered everything of `priority` up to `upto`: forget it, whether it
    /// is awaiting an acknowledgement or was queued again for resending. Returns the bytes
    /// released. Acknowledgements of frames never sent are ignored.
    pub(crate) fn ack(&mut self, priority: Priority, upto: u64) -> usize {
        let lane = &mut self.lanes[priority.index()];
        let mut in_flight = 0;
        while lane.unacked.front().is_some_and(|f| f.seq <= upto) {
            if let Some(frame) = lane.unacked.pop_front() {
                in_flight += frame.wire_len();
            }
        }
        let mut requeued = 0;
        if lane.unacked.is_empty() {
            while lane.queued.front().is_some_and(|f| f.seq <= upto) {
                if let Some(frame) = lane.queued.pop_front() {
                    requeued += frame.wire_len();
                }
            }
        }
        lane.unacked_bytes -= in_flight;
        lane.acked = lane.acked.max(upto.min(lane.next_seq - 1));
        self.accounted_bytes -= in_flight + requeued;
        in_flight + requeued
    }

    /// True if `delivered` claims nothing beyond what was sent on each priority (by this
    /// window or the forgotten one it resumed).
    pub(crate) fn plausible(&self, delivered: [u64; 4]) -> bool {
        self.lanes
            .iter()
            .zip(delivered)
            .all(|(lane, position)| position <= lane.numbering().highest)
    }

    /// A new connection: the peer has delivered up to `delivered` per priority. Forgets
    /// what it delivered and queues the rest of the unacknowledged frames again, ahead of
    /// anything newer. Returns how many frames will be resent.
    pub(crate) fn restart(&mut self, delivered: [u64; 4]) -> usize {
        let mut resent = 0;
        for priority in Priority::ALL {
            if self.lanes[priority.index()].reused_upto > 0 {
                self.renumber_after(priority, delivered[priority.index()]);
                continue;
            }
            self.ack(priority, delivered[priority.index()]);
            let lane = &mut self.lanes[priority.index()];
            resent += lane.unacked.len();
            lane.unacked_bytes = 0;
            while let Some(frame) = lane.unacked.pop_back() {
                lane.queued.push_front(frame);
            }
        }
        resent
    }

    /// The first restart of a resumed lane: the peer delivered up to `delivered` (at least
    /// what it acknowledged), so the frames queued since resuming take the numbers after
    /// it. Nothing of a resumed lane was written before its first restart.
    fn renumber_after(&mut self, priority: Priority, delivered: u64) {
        let lane = &mut self.lanes[priority.index()];
        let base = delivered.max(lane.acked);
        let mut accounted = self.accounted_bytes;
        for (frame, seq) in lane.queued.iter_mut().zip(base + 1..) {
            accounted -= frame.wire_len();
            frame.seq = seq;
            accounted += frame.wire_len();
        }
        lane.next_seq = base + 1 + lane.queued.len() as u64;
        lane.acked = base;
        lane.reused_upto = 0;
        self.accounted_bytes = accounted;
    }

    /// Drops everything (the destination left the view).
    pub(crate) fn clear(&mut self) {
        for lane in &mut self.lanes {
            lane.queued.clear();
            lane.unacked.clear();
            lane.unacked_bytes = 0;
        }
        self.accounted_bytes = 0;
    }

    /// True if frames of `priority` wait to be written.
    pub(crate) fn has_queued(&self, priority: Priority) -> bool {
        !self.lanes[priority.index()].queued.is_empty()
    }

    /// True if nothing is queued or unacknowledged.
    pub(crate) fn is_empty(&self) -> bool {
        self.accounted_bytes == 0
    }

    pub(crate) fn queued_frames(&self) -> usize {
        self.lanes.iter().map(|l| l.queued.len()).sum()
    }

    pub(crate) fn unacked_frames(&self) -> usize {
        self.lanes.iter().map(|l| l.unacked.len()).sum()
    }

    pub(crate) fn accounted_bytes(&self) -> usize {
        self.accounted_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    fn seqs(batch: &Batch) -> Vec<u64> {
        batch.frames.iter().map(|f| f.seq).collect()
    }

    #[test]
    fn sequence_numbers_are_per_priority_and_start_at_one() {
        let mut w = SendWindow::new(1 << 20, usize::MAX);
        assert_eq!(w.push(Priority::High, Tag(1), payload(1)), Ok(1));
        assert_eq!(w.push(Priority::High, Tag(1), payload(1)), Ok(2));
        assert_eq!(w.push(Priority::Bulk, Tag(1), payload(1)), Ok(1));
        let batch = w.take_batch(Priority::High, usize::MAX).expect("queued");
        assert_eq!(seqs(&batch), [1, 2]);
        assert!(!w.has_queued(Priority::High));
        assert!(w.has_queued(Priority::Bulk));
    }

    #[test]
    fn bytes_stay_accounted_until_acknowledged() {
        let mut w = SendWindow::new(100, usize::MAX);
        let mut accepted = 0;
        let refused = loop {
            match w.push(Priority::Normal, Tag(1), payload(20)) {
                Ok(_) => accepted += 1,
                Err(e) => break e,
            }
        };
        assert!(refused.queued_bytes <= 100);
        let batch = w.take_batch(Priority::Normal, usize::MAX).expect("queued");
        assert_eq!(batch.frames.len(), accepted);
        // Written but not acknowledged still counts.
        assert!(w.push(Priority::Normal, Tag(1), payload(20)).is_err());
        assert_eq!(w.ack(Priority::Normal, 1), batch.bytes / accepted);
        // A refused message consumed no sequence number.
        assert_eq!(
            w.push(Priority::Normal, Tag(1), payload(20)),
            Ok(accepted as u64 + 1)
        );
        // Acks beyond what was sent, or repeated, change nothing.
        w.ack(Priority::Normal, 1);
        w.ack(Priority::Bulk, 99);
        assert_eq!(w.unacked_frames(), accepted - 1);
    }

    #[test]
    fn restart_resends_exactly_what_the_peer_did_not_deliver_in_order() {
        let mut w = SendWindow::new(1 << 20, usize::MAX);
        for _ in 0..6 {
            w.push(Priority::Normal, Tag(1), payload(10)).expect("room");
        }
        let first = w.take_batch(Priority::Normal, 36).expect("queued"); // 18 bytes a frame
        assert_eq!(seqs(&first), [1, 2]);
        let second = w.take_batch(Priority::Normal, 36).expect("queued");
        assert_eq!(seqs(&second), [3, 4]);
        w.ack(Priority::Normal, 1);
        // The connection died; the peer's Hello says it delivered up to 2.
        assert_eq!(w.restart([0, 0, 2, 0]), 2);
        let again = w.take_batch(Priority::Normal, usize::MAX).expect("queued");
        assert_eq!(seqs(&again), [3, 4, 5, 6]);
        assert_eq!(w.queued_frames(), 0);
        w.ack(Priority::Normal, 6);
        assert!(w.is_empty());
        assert!(w.plausible([0, 0, 6, 0]) && !w.plausible([0, 0, 7, 0]));
    }

    #[test]
    fn a_resumed_window_numbers_on_past_whatever_the_peer_delivered() {
        let mut w = SendWindow::new(1 << 20, usize::MAX);
        for _ in 0..5 {
            w.push(Priority::Control, Tag(1), payload(10))
                .expect("room");
        }
        w.take_batch(Priority::Control, usize::MAX).expect("queued");
        w.ack(Priority::Control, 2);
        // Forgotten with 3 to 5 written but unacknowledged, then resumed.
        let left = w.numbering();
        assert_eq!(
            left[0],
            Numbering {
                acked: 2,
                highest: 5
            }
        );
        for (delivered, first) in [(2, 3), (4, 5), (5, 6)] {
            let mut resumed = SendWindow::resume(1 << 20, usize::MAX, left);
            resumed
                .push(Priority::Control, Tag(1), payload(10))
                .expect("room");
            resumed
                .push(Priority::Control, Tag(1), payload(10))
                .expect("room");
            assert!(resumed.plausible([delivered, 0, 0, 0]));
            assert!(!resumed.plausible([6, 0, 0, 0]), "never given out");
            assert_eq!(resumed.restart([delivered, 0, 0, 0]), 0);
            let batch = resumed
                .take_batch(Priority::Control, usize::MAX)
                .expect("queued");
            assert_eq!(seqs(&batch), [first, first + 1], "delivered {delivered}");
            // Renumbered once only: later restarts resend as usual.
            assert_eq!(resumed.restart([first, 0, 0, 0]), 1);
            resumed.ack(Priority::Control, first + 1);
            assert!(resumed.is_empty());
        }
    }

    #[test]
    fn an_ack_also_releases_frames_queued_again_for_resending() {
        let mut w = SendWindow::new(1 << 20, usize::MAX);
        for _ in 0..3 {
            w.push(Priority::High, Tag(1), payload(10)).expect("room");
        }
        w.take_batch(Priority::High, usize::MAX).expect("queued");
        assert_eq!(w.restart([0; 4]), 3);
        // The peer had in fact delivered the first two (its ack crossed the restart).
        w.ack(Priority::High, 2);
        assert_eq!(
            seqs(&w.take_batch(Priority::High, usize::MAX).expect("one left")),
            [3]
        );
        w.ack(Priority::High, 3);
        assert!(w.is_empty());
    }

    #[test]
    fn in_flight_cap_holds_bulk_but_always_lets_one_frame_go() {
        let mut w = SendWindow::new(1 << 30, 100);
        w.push(Priority::Bulk, Tag(1), payload(1000)).expect("room");
        w.push(Priority::Bulk, Tag(1), payload(10)).expect("room");
        let big = w
            .take_batch(Priority::Bulk, usize::MAX)
            .expect("one frame always goes");
        assert_eq!(seqs(&big), [1]);
        assert!(
            w.take_batch(Priority::Bulk, usize::MAX).is_none(),
            "held until acked"
        );
        w.ack(Priority::Bulk, 1);
        assert_eq!(
            seqs(&w.take_batch(Priority::Bulk, usize::MAX).expect("now")),
            [2]
        );
        // Other priorities are not capped.
        for _ in 0..50 {
            w.push(Priority::High, Tag(1), payload(10)).expect("room");
        }
        assert_eq!(
            w.take_batch(Priority::High, usize::MAX)
                .expect("all")
                .frames
                .len(),
            50
        );
        w.clear();
        assert!(w.is_empty());
    }
}
