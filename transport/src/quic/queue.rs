//! Per-destination send queues: one FIFO per priority, bounded in bytes together.
//!
//! `send` pushes here under a short lock and never waits; the destination's writer tasks
//! take batches out. Sequence numbers are assigned at push time, per priority, starting at
//! 1, so the order a message was accepted in is the order it is delivered in. Bytes stay
//! accounted until the writer reports the batch written ([`SendQueues::release`]), so the
//! bound covers what is queued plus what is being written.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::message::Tag;
use crate::priority::Priority;
use crate::wire;

/// One message waiting to be written.
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

/// A batch taken for writing, with the bytes it holds in the account.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) frames: Vec<OutFrame>,
    pub(crate) bytes: usize,
}

/// The queue was over its bound; the message was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OverBound {
    pub(crate) queued_bytes: usize,
}

#[derive(Debug)]
pub(crate) struct SendQueues {
    queues: [VecDeque<OutFrame>; 4],
    next_seq: [u64; 4],
    accounted_bytes: usize,
    limit: usize,
}

impl SendQueues {
    pub(crate) fn new(limit: usize) -> Self {
        SendQueues {
            queues: Default::default(),
            next_seq: [1; 4],
            accounted_bytes: 0,
            limit,
        }
    }

    /// Queues a message, or refuses it if the account would exceed the bound. An empty
    /// account always takes one message, so a message up to the frame limit can always go.
    pub(crate) fn push(
        &mut self,
        priority: Priority,
        tag: Tag,
        payload: Bytes,
    ) -> Result<u64, OverBound> {
        let i = priority.index();
        let frame = OutFrame {
            seq: self.next_seq[i],
            tag,
            payload,
        };
        let len = frame.wire_len();
        if self.accounted_bytes > 0 && self.accounted_bytes + len > self.limit {
            return Err(OverBound {
                queued_bytes: self.accounted_bytes,
            });
        }
        let seq = frame.seq;
        self.next_seq[i] += 1;
        self.accounted_bytes += len;
        self.queues[i].push_back(frame);
        Ok(seq)
    }

    /// Takes frames of one priority, oldest first, up to `max_bytes` (at least one frame).
    pub(crate) fn take_batch(&mut self, priority: Priority, max_bytes: usize) -> Option<Batch> {
        let queue = &mut self.queues[priority.index()];
        let mut frames = Vec::new();
        let mut bytes = 0;
        while let Some(front) = queue.front() {
            let len = front.wire_len();
            if !frames.is_empty() && bytes + len > max_bytes {
                break;
            }
            bytes += len;
            frames.extend(queue.pop_front());
        }
        (!frames.is_empty()).then_some(Batch { frames, bytes })
    }

    /// Gives back the account of a written batch.
    pub(crate) fn release(&mut self, bytes: usize) {
        self.accounted_bytes = self.accounted_bytes.saturating_sub(bytes);
    }

    /// Drops everything queued (the destination left the view).
    pub(crate) fn clear(&mut self) {
        for queue in &mut self.queues {
            queue.clear();
        }
        self.accounted_bytes = 0;
    }

    #[cfg(test)]
    pub(crate) fn has_queued(&self, priority: Priority) -> bool {
        !self.queues[priority.index()].is_empty()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queues.iter().all(VecDeque::is_empty)
    }

    pub(crate) fn queued_frames(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
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

    #[test]
    fn sequence_numbers_are_per_priority_and_start_at_one() {
        let mut q = SendQueues::new(1 << 20);
        assert_eq!(q.push(Priority::High, Tag(1), payload(1)), Ok(1));
        assert_eq!(q.push(Priority::High, Tag(1), payload(1)), Ok(2));
        assert_eq!(q.push(Priority::Bulk, Tag(1), payload(1)), Ok(1));
        let batch = q.take_batch(Priority::High, usize::MAX).expect("queued");
        let seqs: Vec<u64> = batch.frames.iter().map(|f| f.seq).collect();
        assert_eq!(seqs, [1, 2]);
        assert!(!q.has_queued(Priority::High));
        assert!(q.has_queued(Priority::Bulk));
    }

    #[test]
    fn bound_refuses_without_losing_accepted_messages() {
        let mut q = SendQueues::new(100);
        let mut accepted = 0;
        let refused = loop {
            match q.push(Priority::Normal, Tag(1), payload(20)) {
                Ok(_) => accepted += 1,
                Err(e) => break e,
            }
        };
        assert!(refused.queued_bytes <= 100);
        assert_eq!(q.queued_frames(), accepted);
        // A refused message does not consume a sequence number.
        let batch = q.take_batch(Priority::Normal, usize::MAX).expect("queued");
        assert_eq!(batch.frames.last().map(|f| f.seq), Some(accepted as u64));
        // Taken but not yet released still counts: the writer holds it.
        assert!(q.push(Priority::Normal, Tag(1), payload(20)).is_err());
        q.release(batch.bytes);
        assert_eq!(
            q.push(Priority::Normal, Tag(1), payload(20)),
            Ok(accepted as u64 + 1)
        );
    }

    #[test]
    fn an_empty_queue_takes_one_oversized_message_and_batches_respect_size() {
        let mut q = SendQueues::new(100);
        assert_eq!(q.push(Priority::Bulk, Tag(1), payload(1000)), Ok(1));
        assert!(q.push(Priority::Bulk, Tag(1), payload(1)).is_err());
        q.clear();
        assert_eq!(q.accounted_bytes(), 0);
        let mut q = SendQueues::new(1 << 20);
        for _ in 0..10 {
            q.push(Priority::Normal, Tag(1), payload(100))
                .expect("room");
        }
        let first = q.take_batch(Priority::Normal, 250).expect("queued");
        assert_eq!(first.frames.len(), 2);
        assert_eq!(q.queued_frames(), 8);
    }
}
