//! Property tests of the two halves of reliability together: a [`SendWindow`] and a
//! [`ReceiveWindow`] joined by a connection that may be lost at any step, driven by random
//! sequences of operations (as quinn fuzzes its stream operations).
//!
//! The connection carries, per priority, the frames written and not yet read, and the
//! acknowledgements sent and not yet applied; losing it drops both, as a dead QUIC
//! connection does, and the next one starts with `SendWindow::restart` from the receiver's
//! positions, as a Hello says them. A reader may also be cut off after planning frames and
//! before handing them over (its connection replaced mid-delivery), or go on delivering
//! from the old connection after the receiver's Hello on the new one said less. After
//! every step:
//!
//! - each priority's messages were delivered exactly once, in the order they were
//!   accepted (the delivered ones are a prefix of the accepted ones), and no gap was seen;
//! - the send window accounts exactly the bytes of accepted messages not yet acknowledged,
//!   and never more than its bound;
//! - Bulk never has more than its in-flight cap written and unacknowledged, beyond a
//!   single frame.
//!
//! At the end the connection is left alone until nothing is pending: everything accepted
//! is delivered and the send window is empty.

use std::collections::VecDeque;

use bytes::Bytes;
use proptest::prelude::*;

use super::queue::{OutFrame, SendWindow};
use super::receive::{ReceiveWindow, Received};
use crate::message::Tag;
use crate::priority::Priority;

const LIMIT: usize = 4096;
const BULK_IN_FLIGHT: usize = 600;
const TAG: Tag = Tag(0x1_0000);

#[derive(Clone, Debug)]
enum Op {
    /// The application sends a message of this many payload bytes (at least 8).
    Push(Priority, usize),
    /// A writer takes a batch of up to this many bytes and writes it.
    Write(Priority, usize),
    /// The reader reads up to this many frames and delivers what is next.
    Read(Priority, usize),
    /// The reader reads and plans up to this many frames, then its connection is replaced
    /// before it hands them over.
    ReadCutOff(Priority, usize),
    /// The receiver sends an acknowledgement of what it delivered.
    SendAck,
    /// The oldest acknowledgement in flight arrives.
    ApplyAck,
    /// The connection dies; the next one restarts from the receiver's positions.
    Lose,
    /// The receiver dials a new connection (its Hello says what it delivered), while the
    /// reader of the old one still delivers up to this many frames of the priority before
    /// it is retired: the new connection resends those, and they arrive as duplicates.
    LoseLate(Priority, usize),
}

fn priority() -> impl Strategy<Value = Priority> {
    prop::sample::select(Priority::ALL.to_vec())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (priority(), 8usize..400).prop_map(|(p, n)| Op::Push(p, n)),
        3 => (priority(), 1usize..1500).prop_map(|(p, n)| Op::Write(p, n)),
        3 => (priority(), 1usize..6).prop_map(|(p, n)| Op::Read(p, n)),
        1 => (priority(), 1usize..6).prop_map(|(p, n)| Op::ReadCutOff(p, n)),
        2 => Just(Op::SendAck),
        2 => Just(Op::ApplyAck),
        1 => Just(Op::Lose),
        1 => (priority(), 1usize..6).prop_map(|(p, n)| Op::LoseLate(p, n)),
    ]
}

/// A message as the test knows it: its sequence number, identity and size on the wire.
struct Accepted {
    seq: u64,
    id: u64,
    wire_len: usize,
}

#[derive(Default)]
struct Model {
    send: Option<SendWindow>,
    receive: ReceiveWindow,
    /// Per priority, the frames written on the current connection and not yet read.
    streams: [VecDeque<OutFrame>; 4],
    /// Acknowledgements sent on the current connection and not yet applied.
    acks: VecDeque<[u64; 4]>,
    /// Per priority, what the send window accepted, in order.
    accepted: [Vec<Accepted>; 4],
    /// Per priority, the identities delivered to the subscriber, in order.
    delivered: [Vec<u64>; 4],
    /// Per priority, the highest position the sender has learnt was delivered.
    acked: [u64; 4],
    /// Bulk frames written on the current connection and not yet acknowledged: their
    /// sequence numbers and sizes.
    bulk_written: Vec<(u64, usize)>,
    next_id: u64,
}

impl Model {
    fn new() -> Self {
        Model {
            send: Some(SendWindow::new(LIMIT, BULK_IN_FLIGHT)),
            ..Model::default()
        }
    }

    fn send(&mut self) -> &mut SendWindow {
        self.send.as_mut().expect("made in new")
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Push(priority, len) => {
                let id = self.next_id;
                self.next_id += 1;
                let mut payload = vec![0u8; len];
                payload[..8].copy_from_slice(&id.to_le_bytes());
                let payload = Bytes::from(payload);
                if let Ok(seq) = self.send().push(priority, TAG, payload) {
                    let wire_len = crate::wire::data_frame_len(seq, TAG, len);
                    self.accepted[priority.index()].push(Accepted { seq, id, wire_len });
                }
            }
            Op::Write(priority, max_bytes) => {
                if let Some(batch) = self.send().take_batch(priority, max_bytes) {
                    if priority == Priority::Bulk {
                        for frame in &batch.frames {
                            self.bulk_written.push((frame.seq, frame.wire_len()));
                        }
                    }
                    self.streams[priority.index()].extend(batch.frames);
                }
            }
            Op::Read(priority, count) => {
                let mut cursor = self.receive.cursor(priority);
                for _ in 0..count {
                    let Some(frame) = self.streams[priority.index()].pop_front() else {
                        break;
                    };
                    match cursor.accept(frame.seq) {
                        Received::Next => {
                            let mut id = [0u8; 8];
                            id.copy_from_slice(&frame.payload[..8]);
                            self.delivered[priority.index()].push(u64::from_le_bytes(id));
                            self.receive.commit(priority, frame.seq);
                        }
                        Received::Duplicate => {}
                        Received::Gap { expected } => {
                            return Err(TestCaseError::fail(format!(
                                "{priority}: frame {} where {expected} was next",
                                frame.seq
                            )));
                        }
                    }
                }
            }
            Op::ReadCutOff(priority, count) => {
                let mut cursor = self.receive.cursor(priority);
                for _ in 0..count {
                    let Some(frame) = self.streams[priority.index()].pop_front() else {
                        break;
                    };
                    if let Received::Gap { expected } = cursor.accept(frame.seq) {
                        return Err(TestCaseError::fail(format!(
                            "{priority}: frame {} where {expected} was next",
                            frame.seq
                        )));
                    }
                }
                self.lose(self.receive.delivered());
            }
            Op::LoseLate(priority, count) => {
                let hello = self.receive.delivered();
                self.apply(&Op::Read(priority, count))?;
                self.lose(hello);
            }
            Op::SendAck => self.acks.push_back(self.receive.delivered()),
            Op::ApplyAck => {
                if let Some(delivered) = self.acks.pop_front() {
                    self.ack(delivered);
                }
            }
            Op::Lose => self.lose(self.receive.delivered()),
        }
        Ok(())
    }

    fn ack(&mut self, delivered: [u64; 4]) {
        for priority in Priority::ALL {
            let upto = delivered[priority.index()];
            self.send().ack(priority, upto);
            let acked = &mut self.acked[priority.index()];
            *acked = (*acked).max(upto);
        }
        let bulk_acked = self.acked[Priority::Bulk.index()];
        self.bulk_written.retain(|(seq, _)| *seq > bulk_acked);
    }

    /// The connection is gone; the next one starts from `delivered`, what the receiver's
    /// Hello said.
    fn lose(&mut self, delivered: [u64; 4]) {
        self.streams = Default::default();
        self.acks.clear();
        self.bulk_written.clear();
        assert!(self.send().plausible(delivered), "{delivered:?}");
        self.send().restart(delivered);
        for priority in Priority::ALL {
            let acked = &mut self.acked[priority.index()];
            *acked = (*acked).max(delivered[priority.index()]);
        }
    }

    fn check(&mut self) -> Result<(), TestCaseError> {
        let mut expected_bytes = 0;
        for priority in Priority::ALL {
            let i = priority.index();
            let accepted: Vec<u64> = self.accepted[i].iter().map(|a| a.id).collect();
            prop_assert!(
                accepted.starts_with(&self.delivered[i]),
                "{priority}: delivered {:?} is not a prefix of accepted {:?}",
                self.delivered[i],
                accepted
            );
            expected_bytes += self.accepted[i]
                .iter()
                .filter(|a| a.seq > self.acked[i])
                .map(|a| a.wire_len)
                .sum::<usize>();
        }
        let accounted = self.send().accounted_bytes();
        prop_assert_eq!(accounted, expected_bytes);
        prop_assert!(
            accounted <= LIMIT,
            "{} bytes held over a bound of {}",
            accounted,
            LIMIT
        );
        let in_flight: usize = self.bulk_written.iter().map(|(_, len)| len).sum();
        prop_assert!(
            in_flight <= BULK_IN_FLIGHT || self.bulk_written.len() == 1,
            "bulk has {} bytes in {} frames in flight",
            in_flight,
            self.bulk_written.len()
        );
        Ok(())
    }

    /// Lets the connection run undisturbed until nothing is pending.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..10_000 {
            if self.send().is_empty() {
                return Ok(());
            }
            for priority in Priority::ALL {
                self.apply(&Op::Write(priority, 1500))?;
                self.apply(&Op::Read(priority, usize::MAX))?;
            }
            self.apply(&Op::SendAck)?;
            self.apply(&Op::ApplyAck)?;
            self.check()?;
        }
        Err(TestCaseError::fail("the windows never settled"))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_accepted_message_is_delivered_once_in_order_across_lost_connections(
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let mut model = Model::new();
        for op in &ops {
            model.apply(op)?;
            model.check()?;
        }
        model.settle()?;
        for priority in Priority::ALL {
            let i = priority.index();
            prop_assert_eq!(model.delivered[i].len(), model.accepted[i].len(), "{}", priority);
        }
    }
}
