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
//! joined at once: `max_reassembly_bytes`, at most `max_message_bytes` of it per sender).
//!
//! ```text
//! first fragment of a message, next in order ─► ReassemblyPool::reserve(whole message)
//!    granted ─► joined; completes as its fragments arrive, memory given back
//!    refused ─► the stream stops before it: not consumed, so not acknowledged (the sender
//!               resends it); fragments behind it are held (window) ─► ReceiveStream::resume
//!               once a message completes or a stream goes: first come, first served
//! ```
//!
//! So no message is skipped for want of memory: what is acknowledged is delivered.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
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
    /// The stream stopped before a message's first fragment: joining it needs more of the
    /// reassembly memory than is free now (or than its sender's share has left). That
    /// fragment is kept, unacknowledged, and the stream goes on once there is room.
    pub(crate) over_budget: u64,
    /// The fragment was too far ahead of the window: dropped unacknowledged.
    pub(crate) dropped: bool,
    /// Fragments were taken in order (what is acknowledged moved on).
    pub(crate) consumed: bool,
    /// A fragment did not fit the message being joined (the sender numbers fragments of
    /// a message consecutively, and cuts all but the last as long as the first, so only a
    /// broken or confused sender does this): that message is lost. Counted and reported,
    /// never silent.
    pub(crate) broken: bool,
}

/// The memory of partly joined messages, shared by every receiving stream of a member.
///
/// A message is given all the memory it can need when its first fragment is taken in, or
/// it waits: so a message once started always completes as its fragments arrive, and no
/// message is ever skipped for want of memory. Messages that wait are served first come,
/// first served (a large one is not overtaken for ever by small ones), and one sender's
/// streams together hold at most its [`SenderShare`], so one member cannot take all of it.
#[derive(Clone, Debug)]
pub(crate) struct ReassemblyPool {
    state: Arc<Mutex<PoolState>>,
}

#[derive(Debug)]
struct PoolState {
    used: usize,
    max: usize,
    /// Streams waiting for room in the pool, by id, in the order they started waiting.
    waiting: VecDeque<u64>,
    /// Streams stopped before a first fragment, for the pool or for their sender's share.
    blocked: usize,
    next_id: u64,
}

impl ReassemblyPool {
    pub(crate) fn new(max: usize) -> Self {
        ReassemblyPool {
            state: Arc::new(Mutex::new(PoolState {
                used: 0,
                max,
                waiting: VecDeque::new(),
                blocked: 0,
                next_id: 0,
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes reserved now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.state().used
    }

    /// How many receiving streams wait for memory: while any does, their owner should
    /// call [`ReceiveStream::resume`] on them after anything that may have freed some.
    pub(crate) fn blocked(&self) -> usize {
        self.state().blocked
    }

    fn stream_id(&self) -> u64 {
        let mut state = self.state();
        state.next_id += 1;
        state.next_id
    }

    /// `bytes` for stream `id`, whose sender holds `share`, or `None`: then the stream
    /// waits (in line for the pool, unless its own sender's share is what is short).
    fn reserve(&self, id: u64, share: &SenderShare, bytes: usize) -> Option<Reservation> {
        let mut state = self.state();
        if share.used.load(Ordering::Relaxed) + bytes > share.max {
            // Its own sender's other messages are in the way: they complete without help
            // from anyone else, so this one does not hold up the line meanwhile.
            state.waiting.retain(|waiting| *waiting != id);
            return None;
        }
        let turn = state.waiting.front().is_none_or(|first| *first == id);
        if turn && state.used + bytes <= state.max {
            state.used += bytes;
            if state.waiting.front() == Some(&id) {
                state.waiting.pop_front();
            }
            share.used.fetch_add(bytes, Ordering::Relaxed);
            return Some(Reservation {
                pool: self.clone(),
                share: share.clone(),
                bytes,
            });
        }
        if !state.waiting.contains(&id) {
            state.waiting.push_back(id);
        }
        None
    }

    fn set_blocked(&self, id: u64, blocked: bool) {
        let mut state = self.state();
        if blocked {
            state.blocked += 1;
        } else {
            state.blocked -= 1;
            state.waiting.retain(|waiting| *waiting != id);
        }
    }
}

/// What one sender's receiving streams may hold of the pool together: at most
/// `max_message_bytes`, one largest message being joined at a time.
#[derive(Clone, Debug)]
pub(crate) struct SenderShare {
    used: Arc<AtomicUsize>,
    max: usize,
}

impl SenderShare {
    pub(crate) fn new(max: usize) -> Self {
        SenderShare {
            used: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }
}

/// What one message being joined holds of the pool and of its sender's share; given back
/// when dropped.
#[derive(Debug)]
struct Reservation {
    pool: ReassemblyPool,
    share: SenderShare,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pool.state().used -= self.bytes;
        self.share.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// How a message starts, decided at its first fragment.
enum Start {
    /// One fragment: handed on as it is, no memory taken.
    Single,
    /// Certainly over `max_message_bytes`: its fragments are consumed and thrown away.
    Oversized,
    /// Joined into memory reserved for the whole message.
    Join(Reservation),
}

/// A message being joined from its fragments.
struct Partial {
    tag: u32,
    fragments: u32,
    next: u32,
    bytes: BytesMut,
    /// Its share of the pool, as large as the whole message can be (`None` once skipping).
    reserved: Option<Reservation>,
    /// Too large or broken: its fragments are consumed and thrown away.
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
    share: SenderShare,
    /// This stream's place in the pool's line.
    id: u64,
    /// Stopped before the next fragment (a first one), waiting for memory.
    blocked: bool,
}

impl ReceiveStream {
    pub(crate) fn new(
        window: usize,
        max_message_bytes: usize,
        pool: ReassemblyPool,
        share: SenderShare,
    ) -> Self {
        ReceiveStream {
            delivered: 0,
            held: BTreeMap::new(),
            partial: None,
            window: window.max(1) as u64,
            max_message_bytes,
            id: pool.stream_id(),
            pool,
            share,
            blocked: false,
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
        self.advance(&mut received);
        received
    }

    /// True while stopped before a first fragment, waiting for memory.
    pub(crate) fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Goes on from where the stream stopped for memory, if there is room now.
    pub(crate) fn resume(&mut self) -> Received {
        let mut received = Received::default();
        if self.blocked {
            self.advance(&mut received);
        }
        received
    }

    /// Forgets what is held and being joined (its sender left), giving the memory back.
    /// What was delivered stays delivered.
    pub(crate) fn clear(&mut self) {
        self.held.clear();
        self.partial = None;
        self.unblock();
    }

    fn unblock(&mut self) {
        if self.blocked {
            self.blocked = false;
            self.pool.set_blocked(self.id, false);
        }
    }

    /// Takes in held fragments in order, stopping before a first fragment whose message
    /// cannot get its memory yet.
    fn advance(&mut self, received: &mut Received) {
        while let Some(next) = self.held.get(&(self.delivered + 1)) {
            let start = if next.fragment == 0 {
                match self.start(next.fragments, next.payload.len()) {
                    Some(start) => Some(start),
                    None => {
                        if !self.blocked {
                            self.blocked = true;
                            self.pool.set_blocked(self.id, true);
                            received.over_budget += 1;
                        }
                        return;
                    }
                }
            } else {
                None
            };
            let Some(next) = self.held.remove(&(self.delivered + 1)) else {
                break;
            };
            self.delivered += 1;
            received.consumed = true;
            self.join(next, start, received);
        }
        self.unblock();
    }

    /// How a message of `fragments` whose first fragment has `first` bytes starts, or
    /// `None` if the memory it needs is not to be had now.
    fn start(&self, fragments: u32, first: usize) -> Option<Start> {
        let fragments = fragments as usize;
        if fragments <= 1 {
            return Some(Start::Single);
        }
        // Every fragment but the last is as long as the first, and the last holds at least
        // a byte (only an empty message has an empty fragment, and it has one fragment).
        let at_least = (fragments - 1).saturating_mul(first).saturating_add(1);
        if fragments > self.max_message_bytes.max(1) || at_least > self.max_message_bytes {
            return Some(Start::Oversized);
        }
        let at_most = fragments.saturating_mul(first).min(self.max_message_bytes);
        self.pool
            .reserve(self.id, &self.share, at_most)
            .map(Start::Join)
    }

    fn join(&mut self, fragment: Fragment, start: Option<Start>, received: &mut Received) {
        if let Some(start) = start {
            if self.partial.is_some() {
                // A new message before the last one was complete.
                received.broken = true;
            }
            let (bytes, reserved, skipping) = match start {
                Start::Single => (BytesMut::new(), None, false),
                Start::Oversized => {
                    received.oversized += 1;
                    (BytesMut::new(), None, true)
                }
                Start::Join(reservation) => (
                    BytesMut::with_capacity(reservation.bytes),
                    Some(reservation),
                    false,
                ),
            };
            self.partial = Some(Partial {
                tag: fragment.tag,
                fragments: fragment.fragments,
                next: 0,
                bytes,
                reserved,
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
            let length = partial.bytes.len() + fragment.payload.len();
            let room = partial.reserved.as_ref().map_or(0, |r| r.bytes);
            if length > self.max_message_bytes {
                partial.skipping = true;
                partial.bytes = BytesMut::new();
                partial.reserved = None;
                received.oversized += 1;
            } else if partial.fragments == 1 {
                // The common case: no copy.
                received.messages.push((fragment.tag, fragment.payload));
                self.partial = None;
                return;
            } else if length > room {
                // A fragment longer than the first: not how messages are cut.
                partial.skipping = true;
                partial.bytes = BytesMut::new();
                partial.reserved = None;
                received.broken = true;
            } else {
                partial.bytes.extend_from_slice(&fragment.payload);
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

impl Drop for ReceiveStream {
    fn drop(&mut self) {
        self.unblock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lossy, reordering link between one sender and one receiver, driven to completion.
    fn run(messages: &[Bytes], loss_every: usize, window: usize) -> (Vec<Bytes>, u64) {
        let mut sender = SendStream::new(window, usize::MAX);
        let mut receiver = ReceiveStream::new(
            window,
            1 << 20,
            ReassemblyPool::new(usize::MAX),
            SenderShare::new(usize::MAX),
        );
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
                if loss_every > 0 && sent.is_multiple_of(loss_every) {
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
        let mut receiver = stream(&ReassemblyPool::new(usize::MAX), 1000);
        receiver.window = 4;
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
        let mut receiver = stream(&ReassemblyPool::new(usize::MAX), 250);
        receiver.window = 1000;
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
    /// A receiving stream with its own sender's share, unbounded.
    fn stream(pool: &ReassemblyPool, max_message: usize) -> ReceiveStream {
        ReceiveStream::new(64, max_message, pool.clone(), SenderShare::new(usize::MAX))
    }

    /// Fragment `index` of a two-fragment message numbered `seq`, `len` bytes long.
    fn one_of_two(seq: u64, index: u32, len: usize) -> Fragment {
        Fragment {
            seq,
            fragment: index,
            fragments: 2,
            tag: 7,
            payload: Bytes::from(vec![index as u8; len]),
        }
    }

    fn two_of_40(seq: u64, index: u32) -> Fragment {
        one_of_two(seq, index, 40)
    }

    #[test]
    fn a_message_waits_for_memory_and_nothing_acknowledged_is_lost() {
        let pool = ReassemblyPool::new(100);
        let (mut a, mut b) = (stream(&pool, 1000), stream(&pool, 1000));
        // a's first fragment takes the memory for all of a's message (2 x 40).
        assert!(a.on_data(two_of_40(1, 0)).consumed);
        assert_eq!(pool.used(), 80);
        // b's would take the pool to 160 of 100: b stops before it, unacknowledged, and
        // keeps what arrives behind it.
        let waiting = b.on_data(two_of_40(1, 0));
        assert_eq!((waiting.consumed, waiting.over_budget), (false, 1));
        assert!(b.is_blocked() && pool.blocked() == 1);
        assert!(b.on_data(two_of_40(2, 1)).messages.is_empty());
        assert_eq!(
            b.ack(),
            (0, 0b1),
            "only the fragment behind is acknowledged"
        );
        assert!(b.resume().messages.is_empty(), "still no room");
        // a's message completes and gives its memory back; b goes on from where it stopped.
        let done = a.on_data(two_of_40(2, 1));
        assert_eq!(done.messages[0].1.len(), 80);
        assert_eq!(pool.used(), 0);
        let resumed = b.resume();
        assert!(resumed.consumed);
        assert_eq!(resumed.messages.len(), 1);
        assert_eq!(b.ack(), (2, 0));
        assert!(!b.is_blocked() && pool.blocked() == 0);
        // A stream dropped halfway gives its memory back.
        a.on_data(two_of_40(3, 0));
        assert_eq!(pool.used(), 80);
        drop(a);
        assert_eq!(pool.used(), 0);
    }

    #[test]
    fn messages_waiting_for_memory_are_served_in_turn() {
        let pool = ReassemblyPool::new(100);
        let (mut a, mut big, mut small) = (
            stream(&pool, 1000),
            stream(&pool, 1000),
            stream(&pool, 1000),
        );
        a.on_data(two_of_40(1, 0));
        // big needs 100 (2 x 50) and waits; small (2 x 10) would fit, but comes after it.
        assert_eq!(big.on_data(one_of_two(1, 0, 50)).over_budget, 1);
        assert_eq!(
            small.on_data(one_of_two(1, 0, 10)).over_budget,
            1,
            "not ahead of the one waiting"
        );
        a.on_data(two_of_40(2, 1));
        assert!(
            small.resume().over_budget == 0 && small.is_blocked(),
            "big is first"
        );
        assert!(big.resume().consumed);
        assert_eq!(pool.used(), 100);
    }

    #[test]
    fn one_sender_holds_at_most_its_share() {
        let pool = ReassemblyPool::new(1000);
        let share = SenderShare::new(100);
        let mut high = ReceiveStream::new(64, 100, pool.clone(), share.clone());
        let mut normal = ReceiveStream::new(64, 100, pool.clone(), share);
        let mut other = stream(&pool, 100);
        high.on_data(two_of_40(1, 0));
        // The same sender's second message waits for its first, though the pool has room;
        // another sender's does not.
        assert_eq!(normal.on_data(two_of_40(1, 0)).over_budget, 1);
        assert!(other.on_data(two_of_40(1, 0)).consumed);
        high.on_data(two_of_40(2, 1));
        assert!(normal.resume().consumed);
        assert_eq!(pool.used(), 160);
    }

    #[test]
    fn a_message_certainly_too_large_is_skipped_without_taking_memory() {
        let pool = ReassemblyPool::new(1000);
        let mut receiver = stream(&pool, 50);
        let fragment = |seq: u64, index: u32| Fragment {
            seq,
            fragment: index,
            fragments: 3,
            tag: 7,
            payload: Bytes::from(vec![1u8; 40]),
        };
        // At least 81 bytes (two of 40 and one more) is over max_message_bytes (50).
        assert_eq!(receiver.on_data(fragment(1, 0)).oversized, 1);
        assert_eq!(pool.used(), 0);
        assert!(receiver.on_data(fragment(2, 1)).messages.is_empty());
        assert!(receiver.on_data(fragment(3, 2)).messages.is_empty());
        let after = Fragment {
            fragments: 2,
            payload: Bytes::from(vec![1u8; 20]),
            ..fragment(4, 0)
        };
        assert!(receiver.on_data(after).consumed, "the stream goes on");
        let last = Fragment {
            fragments: 2,
            payload: Bytes::from(vec![1u8; 20]),
            ..fragment(5, 1)
        };
        assert_eq!(receiver.on_data(last).messages.len(), 1);
    }

    #[test]
    fn a_fragment_longer_than_its_first_breaks_only_its_message() {
        let pool = ReassemblyPool::new(1000);
        let mut receiver = stream(&pool, 1000);
        receiver.on_data(two_of_40(1, 0));
        let long = Fragment {
            payload: Bytes::from(vec![1u8; 41]),
            ..two_of_40(2, 1)
        };
        let received = receiver.on_data(long);
        assert!(received.broken && received.messages.is_empty());
        assert_eq!(pool.used(), 0);
    }
}
