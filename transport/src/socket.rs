//! The member's one UDP socket, shared by QUIC and (later) the legacy protocol.
//!
//! `CohortSocket` wraps quinn's tokio socket and implements quinn's `AsyncUdpSocket`, so
//! every datagram in or out passes through it:
//!
//! ```text
//! kernel ─► inner.poll_recv ─► classify each segment ─┬─► KNOCK (one byte) ─► counted, dropped
//!                                (by `stride` under GRO) ├─► QUIC (fixed bit 0x40 set) ─► quinn
//!                                                        └─► legacy (0x40 clear) ─► LegacyPort (if attached)
//! quinn, LegacyPort::send, knock ─► fault rules (blackhole, drop, duplicate, delay, reorder)
//!                        ─► inner.try_send ─► kernel
//! ```
//!
//! [`LegacyPort`] is the legacy protocol's share of the socket: attached to a QUIC
//! messenger's socket (quinn's endpoint drives the receiving, the legacy segments are
//! handed over), or bound alone for a member that speaks only the legacy protocol (a task
//! of its own drives the receiving, and QUIC packets are counted and dropped). A full
//! hand-over queue drops legacy datagrams (counted), never QUIC ones: the legacy protocol
//! resends.
//!
//! QUIC packets always have the fixed bit set because every cohort endpoint is configured
//! with `grease_quic_bit(false)`; a legacy packet's first byte has 0x40 and 0x80 clear.
//!
//! It is also the fault-injection seam for tests ([`SocketFaults`]): rules are checked per
//! datagram, so they work the same whatever the connection state above. Errors that the
//! kernel reports on receive for an earlier send (ICMP-driven `ECONNREFUSED` and friends)
//! are absorbed here, because any error returned from `poll_recv` stops quinn's endpoint.
//!
//! [`SocketStats`] counts what passes: datagrams that were not QUIC, receive errors
//! absorbed, unreachable errors reported (see `crate::unreachable`), and the bytes and
//! datagrams handed to the kernel (every GSO segment and every copy the fault rules make,
//! none that they drop), for measuring a member's traffic.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
pub use quinn::AsyncUdpSocket;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{Runtime, TokioRuntime, UdpPoller};
use tokio::sync::mpsc;

use crate::sync::{lock, read, write};
use crate::unreachable::UnreachableReports;
use crate::wire::KNOCK;

/// Receive errors absorbed in one `poll_recv` call before yielding to the scheduler.
const MAX_ABSORBED_ERRORS: usize = 64;
/// Legacy datagrams waiting for the legacy protocol; more are dropped (and counted).
const LEGACY_QUEUE: usize = 4096;
/// Receive buffers of a legacy-only socket, each large enough for a coalesced batch.
const LEGACY_RECV_BUFFERS: usize = 4;
const LEGACY_RECV_BUFFER_BYTES: usize = 65_536;

/// Binds a UDP socket with the given kernel buffer sizes (the kernel may cap them).
pub(crate) fn bind_udp(addr: SocketAddr, buffer_bytes: usize) -> io::Result<std::net::UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Larger buffers keep handshake storms and bulk bursts from overflowing the kernel queue.
    // Failure to enlarge is not fatal: the kernel's default still works, only slower.
    if let Err(error) = socket.set_recv_buffer_size(buffer_bytes) {
        tracing::debug!(%error, "could not set the UDP receive buffer size");
    }
    if let Err(error) = socket.set_send_buffer_size(buffer_bytes) {
        tracing::debug!(%error, "could not set the UDP send buffer size");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Fault rules applied to one member's socket. Cheap to clone; all clones share the rules.
#[derive(Clone, Default)]
pub struct SocketFaults {
    state: Arc<FaultState>,
}

#[derive(Default)]
struct FaultState {
    active: AtomicBool,
    /// Checked by the messenger, not the socket: QUIC datagrams cannot be told apart from
    /// other QUIC packets once encrypted.
    drop_datagrams: AtomicBool,
    rules: RwLock<FaultRules>,
    rng: Mutex<u64>,
    dropped: AtomicU64,
}

#[derive(Clone, Debug, Default)]
struct FaultRules {
    isolated: bool,
    blocked_to: HashSet<SocketAddr>,
    blocked_from: HashSet<SocketAddr>,
    forged_unreachable: HashSet<SocketAddr>,
    handshakes_blocked: bool,
    drop_outgoing: f64,
    duplicate_outgoing: f64,
    delay: Duration,
    jitter: Duration,
    reorder_outgoing: f64,
    reorder_delay: Duration,
}

impl FaultRules {
    fn is_empty(&self) -> bool {
        !self.isolated
            && self.blocked_to.is_empty()
            && self.blocked_from.is_empty()
            && self.forged_unreachable.is_empty()
            && !self.handshakes_blocked
            && self.drop_outgoing <= 0.0
            && self.duplicate_outgoing <= 0.0
            && self.delay.is_zero()
            && self.jitter.is_zero()
            && self.reorder_outgoing <= 0.0
    }
}

/// What the rules decided for one outgoing datagram.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Fate {
    /// Copies to send: 0 (dropped), 1, or 2 (duplicated).
    copies: u8,
    /// How long to hold it back first.
    delay: Duration,
}

impl SocketFaults {
    /// Drops every datagram this socket sends to `addr` until healed.
    pub fn block_to(&self, addr: SocketAddr) {
        self.update(|r| {
            r.blocked_to.insert(addr);
        });
    }

    /// Drops every datagram this socket receives from `addr` until healed.
    pub fn block_from(&self, addr: SocketAddr) {
        self.update(|r| {
            r.blocked_from.insert(addr);
        });
    }

    /// Drops every QUIC long-header packet (the handshake's: Initial, 0-RTT, Handshake)
    /// this socket receives, until healed: no new connection to it comes up, while the
    /// packets of established connections (short headers) still arrive.
    pub fn block_handshakes(&self) {
        self.update(|r| r.handshakes_blocked = true);
    }

    /// Blocks both directions between this socket and `addr`.
    pub fn blackhole(&self, addr: SocketAddr) {
        self.update(|r| {
            r.blocked_to.insert(addr);
            r.blocked_from.insert(addr);
        });
    }

    /// Drops every datagram in both directions, whoever the other side is, until healed:
    /// the member looks crashed to everyone (a test's kill without goodbye).
    pub fn isolate(&self) {
        self.update(|r| r.isolated = true);
    }

    /// Answers every datagram this socket sends to `addr` with a forged "ICMP port
    /// unreachable" report, as an attacker (or a confused router) could, while the datagram
    /// itself still goes out: the destination looks dead to the hint and alive to its
    /// answers.
    pub fn forge_unreachable(&self, addr: SocketAddr) {
        self.update(|r| {
            r.forged_unreachable.insert(addr);
        });
    }

    /// Drops every unreliable message (QUIC datagram) this member sends, while its streams
    /// keep working: datagrams are the first thing a congested connection loses.
    pub fn drop_quic_datagrams(&self, drop: bool) {
        self.state.drop_datagrams.store(drop, Ordering::Release);
    }

    /// True while [`SocketFaults::drop_quic_datagrams`] is on.
    pub fn drops_datagrams(&self) -> bool {
        self.state.drop_datagrams.load(Ordering::Acquire)
    }

    /// Drops each outgoing datagram with probability `fraction` (clamped to 0..=1).
    pub fn drop_outgoing(&self, fraction: f64) {
        let fraction = unit(fraction);
        self.update(|r| r.drop_outgoing = fraction);
    }

    /// Sends each outgoing datagram twice with probability `fraction`.
    pub fn duplicate_outgoing(&self, fraction: f64) {
        let fraction = unit(fraction);
        self.update(|r| r.duplicate_outgoing = fraction);
    }

    /// Holds every outgoing datagram back for `delay` plus a random share of `jitter`.
    pub fn delay_outgoing(&self, delay: Duration, jitter: Duration) {
        self.update(|r| {
            r.delay = delay;
            r.jitter = jitter;
        });
    }

    /// Holds each outgoing datagram back by an extra `by` with probability `fraction`, so
    /// that later datagrams overtake it.
    pub fn reorder_outgoing(&self, fraction: f64, by: Duration) {
        let fraction = unit(fraction);
        self.update(|r| {
            r.reorder_outgoing = fraction;
            r.reorder_delay = by;
        });
    }

    /// Seeds the random choices of [`SocketFaults::drop_outgoing`], for repeatable runs.
    pub fn seed(&self, seed: u64) {
        *lock(&self.state.rng) = seed | 1;
    }

    /// Removes every rule.
    pub fn heal(&self) {
        self.state.drop_datagrams.store(false, Ordering::Release);
        self.update(|r| *r = FaultRules::default());
    }

    /// Datagrams dropped by the rules so far.
    pub fn dropped(&self) -> u64 {
        self.state.dropped.load(Ordering::Relaxed)
    }

    fn update(&self, change: impl FnOnce(&mut FaultRules)) {
        let mut rules = write(&self.state.rules);
        change(&mut rules);
        self.state
            .active
            .store(!rules.is_empty(), Ordering::Release);
    }

    fn active(&self) -> bool {
        self.state.active.load(Ordering::Acquire)
    }

    fn rules(&self) -> FaultRules {
        read(&self.state.rules).clone()
    }

    fn fate(&self, rules: &FaultRules, to: SocketAddr) -> Fate {
        let chance = |p: f64| p > 0.0 && self.random_unit() < p;
        if rules.isolated || rules.blocked_to.contains(&to) || chance(rules.drop_outgoing) {
            self.state.dropped.fetch_add(1, Ordering::Relaxed);
            return Fate {
                copies: 0,
                delay: Duration::ZERO,
            };
        }
        let copies = if chance(rules.duplicate_outgoing) {
            2
        } else {
            1
        };
        let mut delay = rules.delay;
        if !rules.jitter.is_zero() {
            delay += rules.jitter.mul_f64(self.random_unit());
        }
        if chance(rules.reorder_outgoing) {
            delay += rules.reorder_delay;
        }
        Fate { copies, delay }
    }

    fn random_unit(&self) -> f64 {
        // xorshift64*: a tiny, seedable generator; fault decisions need no cryptographic
        // quality, only repeatability under a seed.
        let mut state = lock(&self.state.rng);
        if *state == 0 {
            *state = 0x9E37_79B9_7F4A_7C15;
        }
        let mut x = *state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *state = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl fmt::Debug for SocketFaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketFaults")
            .field("rules", &self.rules())
            .field("dropped", &self.dropped())
            .finish()
    }
}

/// Counters of the shared socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketStats {
    /// Received datagrams that were not QUIC (legacy protocol or garbage).
    pub non_quic_received: u64,
    /// Of those, dropped because no legacy protocol was attached or its queue was full.
    pub legacy_dropped: u64,
    /// QUIC packets received by a socket that speaks only the legacy protocol: dropped.
    pub quic_dropped: u64,
    /// Receive errors absorbed (ICMP-driven errors reported by the kernel).
    pub receive_errors_absorbed: u64,
    /// Unreachable errors (ICMP port or host unreachable, and forged ones) about
    /// destinations this socket sent to.
    pub unreachable_errors: u64,
    /// UDP payload bytes handed to the kernel (QUIC headers included, UDP/IP headers not).
    pub bytes_sent: u64,
    /// Datagrams handed to the kernel, counting each segment of a GSO batch.
    pub datagrams_sent: u64,
    /// Knocks received ([`crate::wire::KNOCK`]): counted and dropped, never handed to
    /// QUIC or the legacy protocol.
    pub knocks_received: u64,
}

/// What went out to the kernel; shared with the tasks that send delayed copies.
#[derive(Debug, Default)]
struct SentCounters {
    bytes: AtomicU64,
    datagrams: AtomicU64,
}

impl SentCounters {
    /// Counts a transmit the inner socket accepted: its contents are `segment_size`-long
    /// datagrams (the last may be shorter), or one datagram without GSO.
    fn record(&self, transmit: &Transmit<'_>) {
        let len = transmit.contents.len();
        let datagrams = match transmit.segment_size {
            Some(segment) if segment > 0 => len.div_ceil(segment),
            _ => 1,
        };
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
        self.datagrams
            .fetch_add(datagrams as u64, Ordering::Relaxed);
    }
}

/// quinn's socket, wrapped to split protocols and inject faults.
pub(crate) struct CohortSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    faults: SocketFaults,
    non_quic_received: AtomicU64,
    legacy_dropped: AtomicU64,
    quic_dropped: AtomicU64,
    receive_errors_absorbed: AtomicU64,
    knocks_received: AtomicU64,
    sent: Arc<SentCounters>,
    unreachable: Arc<UnreachableReports>,
    /// Where legacy datagrams go, once a [`LegacyPort`] is attached.
    legacy: OnceLock<mpsc::Sender<(SocketAddr, Bytes)>>,
}

impl CohortSocket {
    pub(crate) fn new(
        inner: Arc<dyn AsyncUdpSocket>,
        faults: SocketFaults,
        unreachable: Arc<UnreachableReports>,
    ) -> Self {
        CohortSocket {
            inner,
            faults,
            non_quic_received: AtomicU64::new(0),
            legacy_dropped: AtomicU64::new(0),
            quic_dropped: AtomicU64::new(0),
            receive_errors_absorbed: AtomicU64::new(0),
            knocks_received: AtomicU64::new(0),
            sent: Arc::default(),
            unreachable,
            legacy: OnceLock::new(),
        }
    }

    /// Hands legacy datagrams to a new [`LegacyPort`] from now on; `None` if one was
    /// attached already.
    pub(crate) fn attach_legacy(self: &Arc<Self>) -> Option<LegacyPort> {
        let (tx, inbound) = mpsc::channel(LEGACY_QUEUE);
        self.legacy.set(tx).ok()?;
        Some(LegacyPort {
            socket: self.clone(),
            inbound,
            receiver: None,
        })
    }

    pub(crate) fn stats(&self) -> SocketStats {
        SocketStats {
            non_quic_received: self.non_quic_received.load(Ordering::Relaxed),
            legacy_dropped: self.legacy_dropped.load(Ordering::Relaxed),
            quic_dropped: self.quic_dropped.load(Ordering::Relaxed),
            receive_errors_absorbed: self.receive_errors_absorbed.load(Ordering::Relaxed),
            unreachable_errors: self.unreachable.received(),
            bytes_sent: self.sent.bytes.load(Ordering::Relaxed),
            datagrams_sent: self.sent.datagrams.load(Ordering::Relaxed),
            knocks_received: self.knocks_received.load(Ordering::Relaxed),
        }
    }

    /// Sends a [`KNOCK`] to `to` through the fault rules, without waiting: a socket that
    /// cannot take it now loses it, as the network could.
    pub(crate) fn knock(&self, to: SocketAddr) -> io::Result<()> {
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents: &KNOCK,
            segment_size: None,
            src_ip: None,
        };
        match AsyncUdpSocket::try_send(self, &transmit) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }

    /// Keeps only the QUIC segments that the fault rules let through, compacting the kept
    /// buffers to the front. Returns how many buffers remain.
    fn filter(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta], n: usize) -> usize {
        let rules = self.faults.active().then(|| self.faults.rules());
        let mut kept = 0;
        for i in 0..n {
            let m = meta[i];
            // The header form bit: set on long headers, which only handshakes use.
            let long_header = bufs[i].first().is_some_and(|b| b & 0x80 != 0);
            if rules.as_ref().is_some_and(|r| {
                r.isolated
                    || r.blocked_from.contains(&m.addr)
                    || (r.handshakes_blocked && long_header)
            }) {
                self.faults.state.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let len = self.keep_quic_segments(&mut bufs[i], m.len, m.stride, m.addr);
            if len == 0 {
                continue;
            }
            if kept != i {
                let (front, back) = bufs.split_at_mut(i);
                front[kept][..len].copy_from_slice(&back[0][..len]);
            }
            meta[kept] = RecvMeta { len, ..m };
            kept += 1;
        }
        kept
    }

    /// Within one buffer of `len` bytes holding segments of `stride` bytes (the last may be
    /// shorter), moves the QUIC segments to the front. Every segment but the last kept one
    /// is still `stride` long, which is what quinn expects of a GRO buffer.
    fn keep_quic_segments(
        &self,
        buf: &mut [u8],
        len: usize,
        stride: usize,
        from: SocketAddr,
    ) -> usize {
        let stride = if stride == 0 { len } else { stride };
        let mut write = 0;
        let mut read = 0;
        while read < len {
            let end = (read + stride).min(len);
            if buf[read..end] == KNOCK {
                self.knocks_received.fetch_add(1, Ordering::Relaxed);
            } else if buf[read] & 0x40 != 0 {
                if write != read {
                    buf.copy_within(read..end, write);
                }
                write += end - read;
            } else {
                self.non_quic_received.fetch_add(1, Ordering::Relaxed);
                self.hand_to_legacy(from, &buf[read..end]);
            }
            read = end;
        }
        write
    }

    fn hand_to_legacy(&self, from: SocketAddr, datagram: &[u8]) {
        let handed = self.legacy.get().is_some_and(|tx| {
            tx.try_send((from, Bytes::copy_from_slice(datagram)))
                .is_ok()
        });
        if !handed {
            self.legacy_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Applies the fault rules to each datagram (segment) of a transmit.
    fn send_with_faults(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let rules = self.faults.rules();
        if rules.forged_unreachable.contains(&transmit.destination) {
            self.unreachable
                .report(transmit.destination, "forged ICMP port unreachable");
        }
        let segment = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        let mut sent_any = false;
        for chunk in transmit.contents.chunks(segment) {
            let fate = self.faults.fate(&rules, transmit.destination);
            for _ in 0..fate.copies {
                if !fate.delay.is_zero() {
                    self.send_later(transmit, chunk, fate.delay);
                    sent_any = true;
                    continue;
                }
                let single = Transmit {
                    destination: transmit.destination,
                    ecn: transmit.ecn,
                    contents: chunk,
                    segment_size: None,
                    src_ip: transmit.src_ip,
                };
                match self.inner.try_send(&single) {
                    Ok(()) => {
                        self.sent.record(&single);
                        sent_any = true;
                    }
                    // Only report WouldBlock before anything went out, so quinn's retry
                    // never duplicates segments; a later block is ordinary loss.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && !sent_any => return Err(e),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Sends a copy of `contents` after `delay` from a timer task. A socket that is not
    /// writable at that moment loses it, as a congested network would.
    fn send_later(&self, transmit: &Transmit<'_>, contents: &[u8], delay: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (inner, sent) = (self.inner.clone(), self.sent.clone());
        let contents = contents.to_vec();
        let (destination, ecn, src_ip) = (transmit.destination, transmit.ecn, transmit.src_ip);
        runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            let transmit = Transmit {
                destination,
                ecn,
                contents: &contents,
                segment_size: None,
                src_ip,
            };
            if inner.try_send(&transmit).is_ok() {
                sent.record(&transmit);
            }
        });
    }
}

impl fmt::Debug for CohortSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CohortSocket")
            .field("local_addr", &self.inner.local_addr().ok())
            .field("stats", &self.stats())
            .finish()
    }
}

impl AsyncUdpSocket for CohortSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        if self.faults.active() {
            self.send_with_faults(transmit)
        } else {
            let result = self.inner.try_send(transmit);
            if result.is_ok() {
                self.sent.record(transmit);
            }
            result
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut absorbed = 0;
        loop {
            match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(n)) => {
                    let kept = self.filter(bufs, meta, n);
                    if kept > 0 {
                        return Poll::Ready(Ok(kept));
                    }
                }
                Poll::Ready(Err(error)) if is_transient(&error) => {
                    self.receive_errors_absorbed.fetch_add(1, Ordering::Relaxed);
                    absorbed += 1;
                    if absorbed >= MAX_ABSORBED_ERRORS {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// The sending half of a [`LegacyPort`]; cheap to clone.
#[derive(Clone)]
pub struct LegacySender {
    socket: Arc<CohortSocket>,
}

impl LegacySender {
    /// The address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends one datagram through the socket's fault rules, without waiting: a socket that
    /// cannot take it now loses it, as the network could (the legacy protocol resends).
    pub fn send(&self, to: SocketAddr, datagram: &[u8]) -> io::Result<()> {
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents: datagram,
            segment_size: None,
            src_ip: None,
        };
        match self.socket.try_send(&transmit) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }

    /// The socket's fault rules (shared with QUIC when the socket is shared).
    pub fn faults(&self) -> &SocketFaults {
        &self.socket.faults
    }

    /// The socket's counters.
    pub fn stats(&self) -> SocketStats {
        self.socket.stats()
    }
}

impl fmt::Debug for LegacySender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LegacySender")
            .field("socket", &self.socket)
            .finish()
    }
}

/// The legacy protocol's share of a member's UDP socket (see the module docs).
pub struct LegacyPort {
    socket: Arc<CohortSocket>,
    inbound: mpsc::Receiver<(SocketAddr, Bytes)>,
    /// The receiving task of a socket bound for the legacy protocol alone.
    receiver: Option<tokio::task::JoinHandle<()>>,
}

impl LegacyPort {
    /// Binds a UDP socket for the legacy protocol alone (a member that does not speak
    /// QUIC), with kernel buffers of `buffer_bytes`. Must be called within a Tokio runtime.
    pub fn bind(addr: SocketAddr, buffer_bytes: usize) -> io::Result<LegacyPort> {
        let udp = bind_udp(addr, buffer_bytes)?;
        LegacyPort::with_socket(TokioRuntime.wrap_udp_socket(udp)?)
    }

    /// Like [`LegacyPort::bind`] on a socket the caller provides: for simulated networks.
    /// It still passes through cohort's wrapper, so fault injection works the same.
    pub fn with_socket(wrapped: Arc<dyn AsyncUdpSocket>) -> io::Result<LegacyPort> {
        let (events, _) = tokio::sync::broadcast::channel(1);
        let unreachable = Arc::new(UnreachableReports::new(events));
        let socket = Arc::new(CohortSocket::new(
            wrapped,
            SocketFaults::default(),
            unreachable,
        ));
        let mut port = socket
            .attach_legacy()
            .ok_or_else(|| io::Error::other("legacy port attached twice"))?;
        port.receiver = Some(tokio::spawn(receive_alone(socket)));
        Ok(port)
    }

    /// The task receiving for a socket bound alone, for an owner that wants to stop it and
    /// wait until it has (so that the port is free when shutdown returns); dropping the
    /// port otherwise stops it, a moment later.
    pub fn take_receiver(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        self.receiver.take()
    }

    /// A sending half, for as many tasks as need one.
    pub fn sender(&self) -> LegacySender {
        LegacySender {
            socket: self.socket.clone(),
        }
    }

    /// The next legacy datagram and its source; `None` once the socket is gone.
    pub async fn recv(&mut self) -> Option<(SocketAddr, Bytes)> {
        self.inbound.recv().await
    }

    /// A legacy datagram already waiting, if any.
    pub fn try_recv(&mut self) -> Option<(SocketAddr, Bytes)> {
        self.inbound.try_recv().ok()
    }
}

impl Drop for LegacyPort {
    fn drop(&mut self) {
        if let Some(receiver) = self.receiver.take() {
            receiver.abort();
        }
    }
}

impl fmt::Debug for LegacyPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LegacyPort")
            .field("socket", &self.socket)
            .finish()
    }
}

/// Drives the receiving of a legacy-only socket: the wrapper hands legacy segments over
/// while it classifies; what it returns is QUIC, which nobody here speaks.
async fn receive_alone(socket: Arc<CohortSocket>) {
    let mut storage = vec![vec![0u8; LEGACY_RECV_BUFFER_BYTES]; LEGACY_RECV_BUFFERS];
    let mut meta = [RecvMeta::default(); LEGACY_RECV_BUFFERS];
    loop {
        let mut bufs: Vec<IoSliceMut<'_>> =
            storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let received = std::future::poll_fn(|cx| socket.poll_recv(cx, &mut bufs, &mut meta)).await;
        match received {
            Ok(quic) => {
                socket
                    .quic_dropped
                    .fetch_add(quic as u64, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::warn!(%error, "the legacy socket stopped receiving");
                return;
            }
        }
    }
}

fn unit(fraction: f64) -> f64 {
    if fraction.is_nan() {
        0.0
    } else {
        fraction.clamp(0.0, 1.0)
    }
}

fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket() -> CohortSocket {
        struct Nothing;
        impl fmt::Debug for Nothing {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("Nothing")
            }
        }
        impl AsyncUdpSocket for Nothing {
            fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
                unimplemented!("not used by these tests")
            }
            fn try_send(&self, _: &Transmit<'_>) -> io::Result<()> {
                Ok(())
            }
            fn poll_recv(
                &self,
                _: &mut Context<'_>,
                _: &mut [IoSliceMut<'_>],
                _: &mut [RecvMeta],
            ) -> Poll<io::Result<usize>> {
                Poll::Pending
            }
            fn local_addr(&self) -> io::Result<SocketAddr> {
                Ok("127.0.0.1:1".parse().expect("literal"))
            }
        }
        let (events, _) = tokio::sync::broadcast::channel(4);
        CohortSocket::new(
            Arc::new(Nothing),
            SocketFaults::default(),
            Arc::new(UnreachableReports::new(events)),
        )
    }

    #[test]
    fn gro_buffer_keeps_only_quic_segments_in_stride_shape() {
        let s = socket();
        // Four segments of stride 4, the last one short: QUIC, legacy, QUIC, QUIC(short).
        let mut buf = vec![0x40, 1, 1, 1, 0x01, 2, 2, 2, 0xc0, 3, 3, 3, 0x41, 4];
        let len = buf.len();
        let from: SocketAddr = "127.0.0.1:9".parse().expect("literal");
        let kept = s.keep_quic_segments(&mut buf, len, 4, from);
        assert_eq!(kept, 10);
        assert_eq!(&buf[..kept], &[0x40, 1, 1, 1, 0xc0, 3, 3, 3, 0x41, 4]);
        assert_eq!(s.stats().non_quic_received, 1);
    }

    #[test]
    fn buffers_left_empty_are_compacted_away() {
        let s = socket();
        let mut a = vec![0x00u8; 8];
        let mut b = vec![0x45u8, 9, 9, 0, 0, 0, 0, 0];
        let addr: SocketAddr = "127.0.0.1:2".parse().expect("literal");
        let mut meta = [RecvMeta::default(), RecvMeta::default()];
        meta[0] = RecvMeta {
            addr,
            len: 3,
            stride: 3,
            ..meta[0]
        };
        meta[1] = RecvMeta {
            addr,
            len: 3,
            stride: 3,
            ..meta[1]
        };
        let mut bufs = [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)];
        assert_eq!(s.filter(&mut bufs, &mut meta, 2), 1);
        assert_eq!(meta[0].len, 3);
        assert_eq!(&bufs[0][..3], &[0x45, 9, 9]);
    }

    #[test]
    fn sent_bytes_count_every_segment_and_copy_but_no_drop() {
        let s = socket();
        let to: SocketAddr = "127.0.0.1:4".parse().expect("literal");
        let contents = [0x40u8; 10];
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents: &contents,
            segment_size: Some(4),
            src_ip: None,
        };
        s.try_send(&transmit).expect("sent");
        assert_eq!((s.stats().bytes_sent, s.stats().datagrams_sent), (10, 3));
        s.faults.duplicate_outgoing(1.0);
        s.try_send(&transmit).expect("sent twice");
        assert_eq!((s.stats().bytes_sent, s.stats().datagrams_sent), (30, 9));
        s.faults.block_to(to);
        s.try_send(&transmit).expect("dropped quietly");
        assert_eq!(s.stats().bytes_sent, 30);
    }

    #[test]
    fn blocked_sources_and_seeded_drops() {
        let s = socket();
        let from: SocketAddr = "127.0.0.1:3".parse().expect("literal");
        s.faults.block_from(from);
        let mut a = vec![0x40u8; 4];
        let mut meta = [RecvMeta {
            addr: from,
            len: 4,
            stride: 4,
            ..RecvMeta::default()
        }];
        let mut bufs = [IoSliceMut::new(&mut a)];
        assert_eq!(s.filter(&mut bufs, &mut meta, 1), 0);
        s.faults.heal();
        assert!(!s.faults.active());

        let run = |seed| {
            let faults = SocketFaults::default();
            faults.seed(seed);
            faults.drop_outgoing(0.2);
            faults.duplicate_outgoing(0.1);
            faults.reorder_outgoing(0.1, Duration::from_millis(30));
            faults.delay_outgoing(Duration::from_millis(5), Duration::from_millis(10));
            let rules = faults.rules();
            (0..1000)
                .map(|_| faults.fate(&rules, from))
                .collect::<Vec<_>>()
        };
        let fates = run(7);
        assert_eq!(fates, run(7), "same seed, same fates");
        let dropped = fates.iter().filter(|f| f.copies == 0).count();
        let doubled = fates.iter().filter(|f| f.copies == 2).count();
        let reordered = fates
            .iter()
            .filter(|f| f.delay >= Duration::from_millis(35))
            .count();
        assert!(
            (120..280).contains(&dropped),
            "about 20% dropped, got {dropped}"
        );
        assert!(
            (40..130).contains(&doubled),
            "about 10% of the rest doubled, got {doubled}"
        );
        assert!(
            (40..130).contains(&reordered),
            "about 10% held back, got {reordered}"
        );
        let sent = fates.iter().filter(|f| f.copies > 0);
        assert!(
            sent.clone().all(|f| f.delay >= Duration::from_millis(5)),
            "every datagram delayed"
        );
    }
}
