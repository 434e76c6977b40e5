//! One reliable stream of the legacy protocol (one per peer and priority), sans-IO: the
//! sender's and the receiver's halves as plain state machines with the time passed in.
//!
//! ```text
//! SendStream::push(tag, payload) ─► split into fragments, one sequence number each,
//!                                   queued (bounded in bytes)
//! SendStream::due(now) ─► retransmissions whose timer ran out (timer doubles each time),
//!                         then new fragments while fewer than `window` are in flight
//! ReceiveStream::on_data ─► duplicate? (ack again) ─► held until in order (at most
//!                           `window` ahead) ─► fragments joined ─► complete messages out
//! ReceiveStream::ack ─► Ack{delivered, beyond} ─► SendStream::on_ack: in-order and
//!                       selectively acknowledged fragments released, round trip sampled
//! ```
//!
//! Memory is bounded on both sides: the sender by `max_queued_bytes`, the receiver by the
//! window (fragments held out of order), `max_message_bytes` (a message being joined) and,
//! across every receiving stream of a member, the [`ReassemblyPool`] (all messages being
//! joined at once: `max_reassembly_bytes`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

/// The least and most a retransmission timer runs.
const MIN_RTO: Duration = Duration::from_millis(20);
const MAX_RTO: Duration = Duration::from_secs(1);
/// The first retransmission timer, before any round trip was measured.
const INITIAL_RTO: Duration = Duration::from_millis(100);

/// One fragment of a message, as it travels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fragment {
    pub(crate) seq: u64,
    pub(crate) fragment: u32,
    pub(crate) fragments: u32,
    pub(crate) tag: u32,
    pub(crate) payload: Bytes,
}

struct InFlight {
    fragment: Fragment,
    sent_at: Instant,
    resend_at: Instant,
    rto: Duration,
    resent: bool,
    /// Already resent early because later fragments were acknowledged before it.
    fast_resent: bool,
}

/// Why a message was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The stream already holds this many bytes, and the bound is this.
    Full { queued: usize, max: usize },
    /// The message needs more fragments than a sequence of `u32` can number.
    TooLarge,
}

/// The sending half.
pub(crate) struct SendStream {
    next_seq: u64,
    queue: VecDeque<Fragment>,
    in_flight: BTreeMap<u64, InFlight>,
    /// Payload bytes queued or in flight.
    bytes: usize,
    max_queued_bytes: usize,
    window: usize,
    srtt: Option<Duration>,
    rttvar: Duration,
    /// Fragments sent again after their timer ran out.
    pub(crate) resent: u64,
}

impl SendStream {
    pub(crate) fn new(window: usize, max_queued_bytes: usize) -> Self {
        SendStream {
            next_seq: 1,
            queue: VecDeque::new(),
            in_flight: BTreeMap::new(),
            bytes: 0,
            max_queued_bytes,
            window: window.max(1),
            srtt: None,
            rttvar: Duration::ZERO,
            resent: 0,
        }
    }

    /// Queues a message, split into fragments of at most `max_fragment` bytes.
    pub(crate) fn push(
        &mut self,
        tag: u32,
        payload: Bytes,
        max_fragment: usize,
    ) -> Result<(), PushError> {
        if self.bytes > 0 && self.bytes + payload.len() > self.max_queued_bytes {
            return Err(PushError::Full {
                queued: self.bytes,
                max: self.max_queued_bytes,
            });
        }
        let max_fragment = max_fragment.max(1);
        let fragments = payload.len().div_ceil(max_fragment).max(1);
        let fragments = u32::try_from(fragments).map_err(|_| PushError::TooLarge)?;
        self.bytes += payload.len();
        for fragment in 0..fragments {
            let start = fragment as usize * max_fragment;
            let end = (start + max_fragment).min(payload.len());
            self.queue.push_back(Fragment {
                seq: self.next_seq,
                fragment,
                fragments,
                tag,
                payload: payload.slice(start..end),
            });
            self.next_seq += 1;
        }
        Ok(())
    }

    /// True when everything pushed has been acknowledged.
    pub(crate) fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.in_flight.is_empty()
    }

    /// The fragments to send now: expired ones again, then new ones while the window has
    /// room.
    pub(crate) fn due(&mut self, now: Instant, out: &mut Vec<Fragment>) {
        for flight in self.in_flight.values_mut() {
            if flight.resend_at <= now {
                flight.rto = (flight.rto * 2).min(MAX_RTO);
                flight.resend_at = now + flight.rto;
                flight.resent = true;
                self.resent += 1;
                out.push(flight.fragment.clone());
            }
        }
        let rto = self.rto();
        // New fragments stay within `window` of the oldest unacknowledged one, which is
        // how far ahead the receiver holds them (selectively acknowledged fragments leave
        // `in_flight` before the receiver's window moves past them).
        while let Some(front) = self.queue.front() {
            let oldest = self.in_flight.keys().next().copied().unwrap_or(front.seq);
            if front.seq >= oldest + self.window as u64 {
                break;
            }
            let Some(fragment) = self.queue.pop_front() else {
                break;
            };
            out.push(fragment.clone());
            self.in_flight.insert(
                fragment.seq,
                InFlight {
                    fragment,
                    sent_at: now,
                    resend_at: now + rto,
                    rto,
                    resent: false,
                    fast_resent: false,
                },
            );
        }
    }

    /// When [`SendStream::due`] next has something to resend (new fragments wait for
    /// acknowledgements, not for time).
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.in_flight.values().map(|f| f.resend_at).min()
    }

    /// The receiver delivered everything up to `delivered` and holds `delivered + 2 + i`
    /// for each bit i of `beyond`.
    pub(crate) fn on_ack(&mut self, delivered: u64, beyond: u64, now: Instant) {
        let mut acked: Vec<u64> = self
            .in_flight
            .range(..=delivered)
            .map(|(s, _)| *s)
            .collect();
        for bit in 0..64 {
            if beyond & (1 << bit) != 0 {
                let seq = delivered.saturating_add(2 + bit);
                if self.in_flight.contains_key(&seq) {
                    acked.push(seq);
                }
            }
        }
        let highest = acked.iter().copied().max();
        for seq in acked {
            if let Some(flight) = self.in_flight.remove(&seq) {
                self.bytes = self.bytes.saturating_sub(flight.fragment.payload.len());
                // Karn: only fragments sent once time the round trip.
                if !flight.resent {
                    self.sample(now.saturating_duration_since(flight.sent_at));
                }
            }
        }
        // Fast resend: a fragment still unacknowledged while later ones were received was
        // most likely lost; resend it now (once) rather than at its timer, which would
        // hold the receiver's whole window up.
        let Some(highest) = highest else {
            return;
        };
        let settle = self.srtt.unwrap_or(MIN_RTO) / 2;
        for flight in self.in_flight.range_mut(..highest).map(|(_, f)| f) {
            if !flight.fast_resent && now.saturating_duration_since(flight.sent_at) >= settle {
                flight.fast_resent = true;
                flight.resend_at = now;
            }
        }
    }

    fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    fn rto(&self) -> Duration {
        match self.srtt {
            None => INITIAL_RTO,
            Some(srtt) => (srtt + self.rttvar * 4).clamp(MIN_RTO, MAX_RTO),
        }
    }
}

/// What the receiving half did with a fragment.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Received {
    /// Messages now complete, in order: (tag, payload).
    pub(crate) messages: Vec<(u32, Bytes)>,
    /// The fragment had been received before.
    pub(crate) duplicate: bool,
    /// Messages over `max_message_bytes`, skipped.
    pub(crate) oversized: u64,
    /// Messages skipped because joining them would have taken the member's reassembly
    /// memory over `max_reassembly_bytes`.
    pub(crate) over_budget: u64,
    /// The fragment was too far ahead of the window: dropped unacknowledged.
    pub(crate) dropped: bool,
    /// Fragments were taken in order (what is acknowledged moved on).
    pub(crate) consumed: bool,
    /// A fragment did not fit the message being joined (the sender numbers fragments of
    /// a message consecutively, so only a broken or confused sender does this): that
    /// message is lost. Counted and reported, never silent.
    pub(crate) broken: bool,
}

/// The bytes of partly joined messages, shared by every receiving stream of a member:
/// a message that would take it over its limit is skipped (its sender's stream goes on).
#[derive(Clone, Debug)]
pub(crate) struct ReassemblyPool {
    used: Arc<AtomicUsize>,
    max: usize,
}

impl ReassemblyPool {
    pub(crate) fn new(max: usize) -> Self {
        ReassemblyPool {
            used: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// Bytes reserved now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn reserve(&self) -> Reservation {
        Reservation {
            pool: self.clone(),
            bytes: 0,
        }
    }
}

/// What one message being joined holds of the pool; given back when dropped.
#[derive(Debug)]
struct Reservation {
    pool: ReassemblyPool,
    bytes: usize,
}

impl Reservation {
    /// Takes `more` bytes, or nothing if the pool would go over its limit.
    fn grow(&mut self, more: usize) -> bool {
        let max = self.pool.max;
        let taken = self
            .pool
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(more).filter(|total| *total <= max)
            });
        if taken.is_ok() {
            self.bytes += more;
        }
        taken.is_ok()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pool.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A message being joined from its fragments.
struct Partial {
    tag: u32,
    fragments: u32,
    next: u32,
    bytes: BytesMut,
    /// Its share of the pool, as large as `bytes`.
    reserved: Reservation,
    /// Too large: its fragments are consumed and thrown away.
    skipping: bool,
}

/// The receiving half.
pub(crate) struct ReceiveStream {
    delivered: u64,
    held: BTreeMap<u64, Fragment>,
    partial: Option<Partial>,
    window: u64,
    max_message_bytes: usize,
    pool: ReassemblyPool,
}

impl ReceiveStream {
    pub(crate) fn new(window: usize, max_message_bytes: usize, pool: ReassemblyPool) -> Self {
        ReceiveStream {
            delivered: 0,
            held: BTreeMap::new(),
            partial: None,
            window: window.max(1) as u64,
            max_message_bytes,
            pool,
        }
    }

    /// Takes one fragment in.
    pub(crate) fn on_data(&mut self, fragment: Fragment) -> Received {
        let mut received = Received::default();
        if fragment.seq <= self.delivered || self.held.contains_key(&fragment.seq) {
            received.duplicate = true;
            return received;
        }
        if fragment.seq > self.delivered + self.window {
            received.dropped = true;
            return received;
        }
        self.held.insert(fragment.seq, fragment);
        while let Some(next) = self.held.remove(&(self.delivered + 1)) {
            self.delivered += 1;
            received.consumed = true;
            self.join(next, &mut received);
        }
        received
    }

    fn join(&mut self, fragment: Fragment, received: &mut Received) {
        if fragment.fragment == 0 {
            if self.partial.is_some() {
                // A new message before the last one was complete.
                received.broken = true;
            }
            // Every fragment carries at least one byte (the last may carry none only for an
            // empty message, which has one fragment).
            let skipping = fragment.fragments as usize > self.max_message_bytes.max(1);
            if skipping {
                received.oversized += 1;
            }
            self.partial = Some(Partial {
                tag: fragment.tag,
                fragments: fragment.fragments,
                next: 0,
                bytes: BytesMut::new(),
                reserved: self.pool.reserve(),
                skipping,
            });
        }
        let Some(partial) = &mut self.partial else {
            received.broken = true;
            return;
        };
        if fragment.fragment != partial.next
            || fragment.fragments != partial.fragments
            || fragment.tag != partial.tag
        {
            received.broken = true;
            self.partial = None;
            return;
        }
        partial.next += 1;
        if !partial.skipping {
            if partial.bytes.len() + fragment.payload.len() > self.max_message_bytes {
                partial.skipping = true;
                partial.bytes = BytesMut::new();
                partial.reserved = self.pool.reserve();
                received.oversized += 1;
            } else if partial.fragments == 1 {
                // The common case: no copy.
                received.messages.push((fragment.tag, fragment.payload));
                self.partial = None;
                return;
            } else if partial.reserved.grow(fragment.payload.len()) {
                partial.bytes.extend_from_slice(&fragment.payload);
            } else {
                partial.skipping = true;
                partial.bytes = BytesMut::new();
                partial.reserved = self.pool.reserve();
                received.over_budget += 1;
            }
        }
        if partial.next == partial.fragments {
            let done = self.partial.take().expect("present");
            if !done.skipping {
                received.messages.push((done.tag, done.bytes.freeze()));
            }
        }
    }

    /// The acknowledgement describing what this side holds: (delivered, beyond).
    pub(crate) fn ack(&self) -> (u64, u64) {
        let mut beyond = 0u64;
        for seq in self.held.keys() {
            let offset = seq - self.delivered;
            if (2..66).contains(&offset) {
                beyond |= 1 << (offset - 2);
            }
        }
        (self.delivered, beyond)
    }

    /// Bytes held for messages not yet complete.
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> usize {
        self.held.values().map(|f| f.payload.len()).sum::<usize>()
            + self.partial.as_ref().map_or(0, |p| p.bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lossy, reordering link between one sender and one receiver, driven to completion.
    fn run(messages: &[Bytes], loss_every: usize, window: usize) -> (Vec<Bytes>, u64) {
        let mut sender = SendStream::new(window, usize::MAX);
        let mut receiver = ReceiveStream::new(window, 1 << 20, ReassemblyPool::new(usize::MAX));
        for m in messages {
            sender.push(7, m.clone(), 100).expect("room");
        }
        let mut now = Instant::now();
        let mut delivered = Vec::new();
        let mut sent = 0usize;
        for _ in 0..100_000 {
            let mut out = Vec::new();
            sender.due(now, &mut out);
            // Deliver in reverse (reordering), dropping every `loss_every`-th.
            for fragment in out.into_iter().rev() {
                sent += 1;
                if loss_every > 0 && sent % loss_every == 0 {
                    continue;
                }
                let received = receiver.on_data(fragment);
                delivered.extend(received.messages.into_iter().map(|(_, p)| p));
            }
            let (acked, beyond) = receiver.ack();
            sender.on_ack(acked, beyond, now);
            if sender.is_idle() {
                break;
            }
            now = sender
                .next_timeout()
                .unwrap_or(now)
                .max(now + Duration::from_millis(1));
        }
        (delivered, sender.resent)
    }

    fn messages(n: usize) -> Vec<Bytes> {
        (0..n)
            .map(|i| Bytes::from(vec![(i % 251) as u8; 1 + (i * 37) % 350]))
            .collect()
    }

    #[test]
    fn everything_arrives_once_and_in_order_over_loss_and_reordering() {
        let sent = messages(500);
        let (delivered, resent) = run(&sent, 5, 32);
        assert_eq!(delivered, sent);
        assert!(resent > 0, "losses were repaired by resending");
        let (clean, resent) = run(&sent, 0, 32);
        assert_eq!(clean, sent);
        assert_eq!(resent, 0);
    }

    #[test]
    fn a_large_message_is_split_and_joined_intact() {
        let big = Bytes::from((0..200_000u32).map(|i| (i % 253) as u8).collect::<Vec<_>>());
        let (delivered, _) = run(&[big.clone(), Bytes::from_static(b"after")], 7, 64);
        assert_eq!(delivered.len(), 2);
        assert_eq!(delivered[0], big);
        assert_eq!(&delivered[1][..], b"after");
    }

    #[test]
    fn duplicates_are_recognised_and_far_ahead_fragments_dropped() {
        let mut receiver = ReceiveStream::new(4, 1000, ReassemblyPool::new(usize::MAX));
        let fragment = |seq| Fragment {
            seq,
            fragment: 0,
            fragments: 1,
            tag: 1,
            payload: Bytes::from_static(b"x"),
        };
        assert_eq!(receiver.on_data(fragment(1)).messages.len(), 1);
        assert!(receiver.on_data(fragment(1)).duplicate);
        assert!(receiver.on_data(fragment(6)).dropped, "beyond the window");
        assert!(receiver.on_data(fragment(3)).messages.is_empty(), "held");
        assert_eq!(receiver.ack(), (1, 0b1));
        assert!(receiver.on_data(fragment(3)).duplicate);
        assert_eq!(receiver.on_data(fragment(2)).messages.len(), 2);
        assert_eq!(receiver.ack(), (3, 0));
    }

    #[test]
    fn an_oversized_message_is_skipped_and_the_stream_goes_on() {
        let mut sender = SendStream::new(1000, usize::MAX);
        let mut receiver = ReceiveStream::new(1000, 250, ReassemblyPool::new(usize::MAX));
        sender
            .push(1, Bytes::from(vec![1u8; 1000]), 100)
            .expect("room");
        sender
            .push(2, Bytes::from_static(b"small"), 100)
            .expect("room");
        let mut out = Vec::new();
        sender.due(Instant::now(), &mut out);
        let mut messages = Vec::new();
        let mut oversized = 0;
        for fragment in out {
            let received = receiver.on_data(fragment);
            oversized += received.oversized;
            messages.extend(received.messages);
        }
        assert_eq!(oversized, 1);
        assert_eq!(messages, vec![(2, Bytes::from_static(b"small"))]);
        assert!(receiver.held_bytes() <= 250);
    }

    #[test]
    fn the_send_queue_is_bounded_in_bytes() {
        let mut sender = SendStream::new(4, 1000);
        sender
            .push(1, Bytes::from(vec![0u8; 600]), 100)
            .expect("room");
        assert_eq!(
            sender.push(1, Bytes::from(vec![0u8; 600]), 100),
            Err(PushError::Full {
                queued: 600,
                max: 1000
            })
        );
        // One message larger than the bound still goes when the stream is empty.
        let mut empty = SendStream::new(4, 10);
        assert!(empty.push(1, Bytes::from(vec![0u8; 600]), 100).is_ok());
    }
    #[test]
    fn messages_being_joined_share_one_memory_bound() {
        let pool = ReassemblyPool::new(100);
        let mut a = ReceiveStream::new(64, 1000, pool.clone());
        let mut b = ReceiveStream::new(64, 1000, pool.clone());
        let fragment = |seq: u64, index: u32| Fragment {
            seq,
            fragment: index,
            fragments: 2,
            tag: 7,
            payload: Bytes::from(vec![index as u8; 40]),
        };
        assert!(a.on_data(fragment(1, 0)).messages.is_empty());
        assert_eq!(pool.used(), 40);
        assert!(b.on_data(fragment(1, 0)).messages.is_empty());
        assert_eq!(pool.used(), 80);
        // b's second fragment would take the pool to 120 of 100: b's message is skipped,
        // and what it held is given back.
        let skipped = b.on_data(fragment(2, 1));
        assert_eq!((skipped.messages.len(), skipped.over_budget), (0, 1));
        assert_eq!(pool.used(), 40);
        // a's message still fits and completes; the pool is empty again.
        let done = a.on_data(fragment(2, 1));
        assert_eq!(done.messages.len(), 1);
        assert_eq!(done.messages[0].1.len(), 80);
        assert_eq!(pool.used(), 0);
        // b's stream goes on: its next message arrives whole.
        b.on_data(fragment(3, 0));
        let next = b.on_data(fragment(4, 1));
        assert_eq!(next.messages.len(), 1);
        // A stream dropped halfway gives its share back.
        a.on_data(fragment(3, 0));
        assert_eq!(pool.used(), 40);
        drop(a);
        assert_eq!(pool.used(), 0);
    }
    #[test]
    fn a_message_skipped_as_oversized_gives_its_share_back_at_once() {
        let pool = ReassemblyPool::new(1000);
        let mut receiver = ReceiveStream::new(64, 50, pool.clone());
        let fragment = |seq: u64, index: u32| Fragment {
            seq,
            fragment: index,
            fragments: 3,
            tag: 7,
            payload: Bytes::from(vec![1u8; 40]),
        };
        receiver.on_data(fragment(1, 0));
        assert_eq!(pool.used(), 40);
        // 80 bytes would be over max_message_bytes (50): skipped, its bytes released
        // before its last fragment arrives.
        assert_eq!(receiver.on_data(fragment(2, 1)).oversized, 1);
        assert_eq!(pool.used(), 0);
        assert!(receiver.on_data(fragment(3, 2)).messages.is_empty());
        assert_eq!(pool.used(), 0);
    }
}
