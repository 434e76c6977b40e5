//! Transport figures: cohort's messenger against raw quinn and a TCP+TLS messenger, all in
//! this process, over loopback, with real mutual TLS 1.3 (rustls with ring), two members per
//! pair and one shared 2-worker runtime (the whole suite runs as a task on it, so measuring
//! code competes for the same two workers as the transports).
//!
//! # What is compared
//!
//! - **cohort**: two [`Messenger`]s with default settings in one view. A message is a typed
//!   value encoded with postcard, queued per destination, packed by a writer task onto its
//!   priority's stream with cohort's frame header (sequence number and tag), acknowledged by
//!   the receiver at application level, checked for order, decoded and handed to a
//!   [`Subscription`].
//! - **quinn** ([`crate::raw_quinn`]): a hand-written messenger straight on quinn, what a good
//!   implementation without cohort would do. Same TLS (cohort's own `ClusterTls` configs: same
//!   certificates, verifiers and cipher suites), same 4 MiB UDP socket buffers, quinn's default
//!   transport parameters with cohort's keep-alive and idle timeout. One stream per kind of
//!   traffic, length-prefixed frames, small frames packed into 64 KiB writes, large payloads
//!   written without copying; no queues, sequence numbers, acknowledgements or typing. It is
//!   the ceiling a messenger over quinn can reach, so cohort's ratio to it is its overhead.
//! - **tcp_tls** ([`crate::tcp_tls`]): the classic alternative, one TCP connection (Nagle off)
//!   with tokio-rustls, mutual TLS 1.3 with certificates from the same CA, the same framing
//!   plus a kind byte, small frames packed into 64 KiB writes, and bulk messages cut into
//!   16 KiB fragments so that a ping can be slipped in between fragments (HTTP/2-style
//!   multiplexing, the best a single TCP connection can do for head-of-line blocking).
//!
//! Every receiving side checks what it gets (order of small messages, length and content
//! samples of bulk messages, sequence numbers of responses) and reports into a [`Tally`];
//! a count that does not match, or a fault, fails the run.
//!
//! # Figures (each repeated `reps` times: 3 with `--quick`, 5 otherwise)
//!
//! - `transport.msg_rate.*` (msg/s): `N` 100-byte messages one way on Normal (cohort: a
//!   `Small { index: u64, body: 92 bytes }`; baselines: 100 payload bytes, the first 8 the
//!   index), from before the first send until the receiver has counted the last one.
//! - `transport.bulk.*` (MB/s, 10^6 bytes): 5 messages of 64 MiB (8 MiB with `--quick`)
//!   sent back to back on Bulk; the sustained rate is the last 4 over the time from the
//!   first one's arrival (whole, at the receiving application) to the last one's. The first
//!   message's latency is left out on purpose: it is a latency, not a rate, and for cohort
//!   it includes encoding 64 MiB before anything moves, which would weigh on a handful of
//!   messages far more than on a long transfer. cohort's sender keeps at most two messages
//!   outstanding (its queue is bounded in bytes); the baselines write back to back, held
//!   back by flow control.
//! - `transport.rtt_p50.*`, `transport.rtt_p99.*` (us): back-to-back request/response on
//!   High (cohort: a `Request` answered by the peer's task with a `Response`; quinn: one
//!   bidirectional stream kept open; tcp_tls: the same connection), after warm-up pings.
//! - `transport.hol_p99.*` (us): p99 of the same request/response, at most one per
//!   millisecond (back to back once a round trip takes longer), while the client keeps the
//!   pair saturated with bulk messages of the bulk size on Bulk (cohort: a task sending with
//!   two outstanding; quinn: a second stream on the same connection, the ping stream at a
//!   higher `SendStream::set_priority`; tcp_tls: the same connection). Pings start once the
//!   first bulk message has arrived and go on until both enough pings (1,000; 300 with
//!   `--quick`) were answered and three bulk messages arrived during them.
//! - `transport.hol_bulk_share.*` (ratio): the sustained bulk rate during those pings
//!   (measured as for `transport.bulk`, over the messages that arrived while pinging) over
//!   the median unloaded `transport.bulk.*` of the same transport.
//! - `transport.legacy.msg_rate` (msg/s), `transport.legacy.rtt_p50` (us): the legacy UDP
//!   carrier (two [`Messenger`]s with default settings, no TLS, as that protocol
//!   has none) measured as cohort's QUIC pair is, on a pair of its own after the others:
//!   a tenth as many small messages, and the same round trips. No baseline and no target
//!   yet; they start its record.
//! - `transport.hol_p99.quinn_best`, `transport.hol_bulk_share.quinn_best`: the same on a
//!   second raw quinn pair in the best arrangement found for it
//!   ([`crate::raw_quinn::Arrangement::BEST`]: an application-level window of 256 KiB on
//!   the bulk stream, which keeps at most that much bulk data queued ahead of a ping), so that cohort's head of line is
//!   measured against the ceiling and not only against quinn's defaults; its share is of
//!   plain quinn's unloaded rate.
//! - `transport.mem_per_peer.cohort` (KiB): growth of the process's resident set (VmRSS)
//!   when a hub messenger and 200 peer messengers (50 with `--quick`), all bound, subscribed
//!   and with views installed, connect: each peer sends the hub one message and gets one
//!   back, then everything idles for a moment. Divided by the number of peers. It counts
//!   *both ends* of each connection (the hub's state for the peer and the peer's state for
//!   the hub: quinn connection, TLS, streams, queues, tasks), so the hub's own share is
//!   about half; it excludes the messengers themselves (sockets, endpoints, idle tasks),
//!   which exist before the first reading.
//!
//! # Repetitions
//!
//! One pair per transport is set up and warmed up once (handshake done, every stream in
//! use opened, two bulk messages of full size through) and reused by every repetition;
//! the transports take turns within each repetition (cohort, quinn, tcp_tls, cohort, ...),
//! so a noisy machine's drift hits all three alike and each per-repetition ratio compares
//! neighbouring runs. `mem_per_peer` is measured first, before any large buffer was
//! allocated and freed, with a fresh hub and fresh peers per repetition, all kept alive
//! until the last repetition so that memory freed by one repetition cannot be reused by
//! the next. RSS is what the kernel sees, so allocator caching makes the figure only
//! approximate (a few KiB either way per peer).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use cohort_certs::{CertificateAuthority, IssuedCertificate, MemberRequest};
use cohort_legacy_udp::LegacyConfig;
use cohort_transport::{
    ClusterTls, Delivery, MemberId, Message, Messenger, Priority, QuicConfig, Subscription, Tag,
    TlsSettings, View, ViewId,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::raw_quinn::{Arrangement, QuinnPair};
use crate::report::{Figure, Report};
use crate::tcp_tls::TcpPair;

/// Bytes of application data in a small message: an 8-byte index and filler.
pub(crate) const SMALL_BYTES: usize = 100;
/// The filler byte of small messages.
pub(crate) const FILLER: u8 = 0x5a;
/// Every byte of a bulk message.
pub(crate) const BULK_BYTE: u8 = 0xa5;
/// Largest frame a baseline accepts; anything larger means the framing went wrong.
pub(crate) const MAX_FRAME: usize = 256 << 20;
/// Small frames are packed into writes of about this size.
pub(crate) const PACK_BYTES: usize = 64 << 10;
/// Bulk messages cohort's sender keeps outstanding (sent, not yet received).
const BULK_WINDOW: u64 = 2;
/// Pacing of pings while bulk saturates the pair.
const HOL_INTERVAL: Duration = Duration::from_millis(1);
/// Bound on setting up or closing a pair.
const SETUP_LIMIT: Duration = Duration::from_secs(30);
/// Bound on one measurement (one repetition on one transport).
const MEASURE_LIMIT: Duration = Duration::from_secs(120);
/// Idle time before reading the resident set, so that acknowledgements and task wake-ups
/// have settled.
const SETTLE: Duration = Duration::from_millis(300);

/// How much of everything one run measures.
struct Plan {
    reps: usize,
    small_count: u64,
    bulk_bytes: usize,
    bulk_count: usize,
    warm_pings: usize,
    pings: usize,
    hol_pings: usize,
    hol_arrivals: usize,
    peers: usize,
}

const QUICK: Plan = Plan {
    reps: 3,
    small_count: 200_000,
    bulk_bytes: 8 << 20,
    bulk_count: 5,
    warm_pings: 100,
    pings: 1_000,
    hol_pings: 300,
    hol_arrivals: 3,
    peers: 50,
};

const FULL: Plan = Plan {
    reps: 5,
    small_count: 1_000_000,
    bulk_bytes: 64 << 20,
    bulk_count: 5,
    warm_pings: 200,
    pings: 5_000,
    hol_pings: 1_000,
    hol_arrivals: 3,
    peers: 200,
};

/// Ratios added after each group's figures: (group, baselines compared against).
const RATIOS: [(&str, &[&str]); 4] = [
    ("transport.msg_rate", &["quinn", "tcp_tls"]),
    ("transport.bulk", &["quinn"]),
    ("transport.rtt_p50", &["quinn"]),
    ("transport.hol_p99", &["quinn", "quinn_best"]),
];

/// Measures the transport suite into `report`.
pub(crate) async fn run(quick: bool, report: &mut Report) -> Result<(), String> {
    let plan = if quick { QUICK } else { FULL };
    // Spawned, so that the measuring code runs on the runtime's two workers like everything
    // it measures, not on the thread that blocks on the runtime.
    let (figures, outcome) = tokio::spawn(measure(plan))
        .await
        .map_err(|error| format!("the transport suite's task failed: {error}"))?;
    for figure in figures {
        let name = figure.name.clone();
        report.add(figure);
        add_ratios(report, &name);
    }
    outcome
}

/// After the last figure of a group (`tcp_tls`), adds that group's ratios.
fn add_ratios(report: &mut Report, added: &str) {
    for (group, baselines) in RATIOS {
        if added != format!("{group}.tcp_tls") {
            continue;
        }
        for baseline in baselines {
            report.ratio(
                format!("{group}.vs_{baseline}"),
                &format!("{group}.cohort"),
                &format!("{group}.{baseline}"),
            );
        }
    }
}

/// Every figure measured, even when a later measurement failed, and how the run ended.
async fn measure(plan: Plan) -> (Vec<Figure>, Result<(), String>) {
    let mut figures = Vec::new();
    let outcome = measure_into(&plan, &mut figures).await;
    (figures, outcome)
}

async fn measure_into(plan: &Plan, figures: &mut Vec<Figure>) -> Result<(), String> {
    let certs = Certs::new()?;
    let memory = mem_per_peer(&certs, plan).await?;
    let mut pairs = bounded("opening the pairs", SETUP_LIMIT, Pairs::open(&certs)).await?;
    let outcome = pairs.measure(plan, figures).await;
    pairs.close().await;
    figures.push(memory);
    outcome?;
    legacy(plan, figures).await
}

/// Messages of the legacy carrier's rate run: a tenth of QUIC's, since the legacy
/// protocol sends one UDP datagram per message.
fn legacy_small_count(plan: &Plan) -> u64 {
    plan.small_count / 10
}

/// The legacy UDP carrier's message rate and High round trip, on a pair of its own (no
/// baseline: the figures start its record).
async fn legacy(plan: &Plan, figures: &mut Vec<Figure>) -> Result<(), String> {
    let mut pair = CohortPair::open_legacy()?;
    let outcome = legacy_into(&mut pair, plan, figures).await;
    let _ = tokio::time::timeout(SETUP_LIMIT, pair.close()).await;
    outcome
}

async fn legacy_into(
    pair: &mut CohortPair,
    plan: &Plan,
    figures: &mut Vec<Figure>,
) -> Result<(), String> {
    let warm = async {
        round_trips(pair, plan.warm_pings).await?;
        msg_rate(pair, 10_000).await
    };
    bounded("legacy warm-up", SETUP_LIMIT, warm).await?;
    let (mut rates, mut p50) = (Vec::new(), Vec::new());
    for _ in 0..plan.reps {
        let rate = msg_rate(pair, legacy_small_count(plan));
        rates.push(bounded("legacy msg_rate", MEASURE_LIMIT, rate).await?);
        let rtts = round_trips(pair, plan.pings);
        p50.push(quantile(
            &bounded("legacy rtt", MEASURE_LIMIT, rtts).await?,
            0.5,
        ));
    }
    figures.push(Figure::new("transport.legacy.msg_rate", "msg/s", rates));
    figures.push(Figure::new("transport.legacy.rtt_p50", "us", p50));
    Ok(())
}

/// Runs `work` with a bound; an error or a timeout names `what`.
async fn bounded<T>(
    what: &str,
    limit: Duration,
    work: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(format!("{what}: {error}")),
        Err(_) => Err(format!("{what} did not finish within {limit:?}")),
    }
}

// ---------------------------------------------------------------------------------------
// Certificates

/// The cluster CA every pair's certificates come from.
pub(crate) struct Certs {
    ca: CertificateAuthority,
}

impl Certs {
    fn new() -> Result<Self, String> {
        let ca = CertificateAuthority::ephemeral()
            .map_err(|error| format!("could not generate the CA: {error}"))?;
        Ok(Certs { ca })
    }

    /// The CA certificate, PEM.
    pub(crate) fn ca_pem(&self) -> &str {
        self.ca.certificate_pem()
    }

    /// A member certificate for `name` naming 127.0.0.1 and localhost.
    pub(crate) fn issue(&self, name: &str) -> Result<IssuedCertificate, String> {
        let request = MemberRequest::new(name, Duration::from_secs(24 * 3600))
            .ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .dns("localhost");
        self.ca
            .issue(&request)
            .map_err(|error| format!("could not issue a certificate for {name}: {error}"))
    }

    /// cohort's loaded TLS for `name` (also what the raw quinn baseline uses).
    pub(crate) fn tls(&self, name: &str) -> Result<ClusterTls, String> {
        let issued = self.issue(name)?;
        TlsSettings::from_pem(
            self.ca.certificate_pem(),
            issued.certificate_pem,
            issued.private_key_pem,
        )
        .load()
        .map_err(|error| format!("could not load the TLS settings of {name}: {error}"))
    }
}

// ---------------------------------------------------------------------------------------
// What receivers report

/// What a pair's receiving side has seen so far.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Small messages received, each checked to be the next in order.
    pub(crate) small: u64,
    /// Each bulk message received whole: when, and its length.
    pub(crate) bulk: Vec<(Instant, usize)>,
    /// The first thing that was wrong, if any.
    pub(crate) fault: Option<String>,
}

/// The receiving side's handle on its pair's [`Tally`].
#[derive(Clone)]
pub(crate) struct Sink(Arc<watch::Sender<Tally>>);

impl Sink {
    /// A sink and the measuring side's view of it.
    pub(crate) fn new() -> (Sink, watch::Receiver<Tally>) {
        let (sender, receiver) = watch::channel(Tally::default());
        (Sink(Arc::new(sender)), receiver)
    }

    /// Counts `count` more small messages (receivers report once per batch they read).
    pub(crate) fn small(&self, count: u64) {
        if count > 0 {
            self.0.send_modify(|tally| tally.small += count);
        }
    }

    /// Records a whole bulk message of `len` bytes, received now.
    pub(crate) fn bulk(&self, len: usize) {
        let now = Instant::now();
        self.0.send_modify(|tally| tally.bulk.push((now, len)));
    }

    /// Records what went wrong (the first fault is kept).
    pub(crate) fn fault(&self, what: impl Into<String>) {
        let what = what.into();
        self.0.send_modify(|tally| {
            tally.fault.get_or_insert(what);
        });
    }
}

/// Checks that small messages arrive whole and in order: 0, 1, 2, …
#[derive(Debug, Default)]
pub(crate) struct SmallOrder {
    next: u64,
}

impl SmallOrder {
    /// Checks the next index.
    pub(crate) fn check(&mut self, index: u64) -> Result<(), String> {
        if index != self.next {
            return Err(format!(
                "small message {index} arrived where {} was next",
                self.next
            ));
        }
        self.next += 1;
        Ok(())
    }

    /// Checks a baseline's 100-byte payload: the index, then filler.
    pub(crate) fn check_payload(&mut self, payload: &[u8]) -> Result<(), String> {
        if payload.len() != SMALL_BYTES || payload[SMALL_BYTES - 1] != FILLER {
            return Err(format!(
                "a small message of {} bytes or with the wrong filler",
                payload.len()
            ));
        }
        let mut index = [0u8; 8];
        index.copy_from_slice(&payload[..8]);
        self.check(u64::from_le_bytes(index))
    }
}

/// Checks samples of a bulk message's content (every byte is [`BULK_BYTE`]).
pub(crate) fn check_bulk(data: &[u8]) -> Result<(), String> {
    let Some(last) = data.len().checked_sub(1) else {
        return Err("an empty bulk message".into());
    };
    if [0, last / 2, last].iter().any(|&i| data[i] != BULK_BYTE) {
        return Err(format!(
            "a bulk message of {} bytes with wrong content",
            data.len()
        ));
    }
    Ok(())
}

/// The baselines' framing: each frame is a little-endian `u32` length, then that many
/// bytes. Bytes read are appended; whole frames come out as [`Bytes`] without another copy.
#[derive(Debug, Default)]
pub(crate) struct Frames {
    buf: BytesMut,
}

impl Frames {
    /// The buffer to read into, with room for at least `room` more bytes.
    pub(crate) fn read_buffer(&mut self, room: usize) -> &mut BytesMut {
        self.buf.reserve(room);
        &mut self.buf
    }

    /// Appends bytes read.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame's payload, if it has arrived.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Bytes>, String> {
        let Some(header) = self.buf.get(..4) else {
            return Ok(None);
        };
        let mut len = [0u8; 4];
        len.copy_from_slice(header);
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(format!("a frame of {len} bytes: the framing is broken"));
        }
        if self.buf.len() < 4 + len {
            // A large frame gets its whole room at once instead of growing step by step.
            self.buf.reserve(4 + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(4);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

/// Waits until `count` small messages in all have been received; fails on a fault or if
/// more arrived than were sent.
async fn wait_small(tally: &mut watch::Receiver<Tally>, count: u64) -> Result<(), String> {
    let seen = tally
        .wait_for(|t| t.small >= count || t.fault.is_some())
        .await
        .map_err(|_| "the receiver is gone".to_string())?;
    if let Some(fault) = &seen.fault {
        return Err(fault.clone());
    }
    if seen.small != count {
        return Err(format!(
            "{} small messages received where {count} were sent",
            seen.small
        ));
    }
    Ok(())
}

/// Waits until `count` bulk messages in all have been received; returns those from index
/// `from` on, each checked to be `len` bytes long.
async fn wait_bulk(
    tally: &mut watch::Receiver<Tally>,
    from: usize,
    count: usize,
    len: usize,
) -> Result<Vec<Instant>, String> {
    let seen = tally
        .wait_for(|t| t.bulk.len() >= count || t.fault.is_some())
        .await
        .map_err(|_| "the receiver is gone".to_string())?;
    if let Some(fault) = &seen.fault {
        return Err(fault.clone());
    }
    if seen.bulk.len() != count {
        return Err(format!(
            "{} bulk messages received where {count} were sent",
            seen.bulk.len()
        ));
    }
    let arrivals = &seen.bulk[from.min(count)..];
    if let Some((_, wrong)) = arrivals.iter().find(|(_, l)| *l != len) {
        return Err(format!(
            "a bulk message of {wrong} bytes where {len} were sent"
        ));
    }
    Ok(arrivals.iter().map(|(at, _)| *at).collect())
}

// ---------------------------------------------------------------------------------------
// The pairs and what is measured on each

/// Two members talking over one transport: what every measurement needs from it.
pub(crate) trait Pair: Send {
    /// The receiving side's tally.
    fn tally(&self) -> watch::Receiver<Tally>;

    /// Hands `count` more small messages (numbered on from the last) to the transport on
    /// Normal; returns once all are handed over, not necessarily received.
    fn send_small(&mut self, count: u64) -> impl Future<Output = Result<(), String>> + Send;

    /// Hands `count` copies of `payload` to the transport on Bulk.
    fn send_bulk(
        &mut self,
        payload: &Bytes,
        count: usize,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// One request/response round trip on High, its sequence number checked.
    fn ping(&mut self) -> impl Future<Output = Result<(), String>> + Send;

    /// Starts sending copies of `payload` on Bulk in the background until [`Pair::stop_load`].
    fn start_load(&mut self, payload: Bytes) -> Result<(), String>;

    /// Stops the background load once its current message is handed over; returns how many
    /// messages it sent.
    fn stop_load(&mut self) -> impl Future<Output = Result<usize, String>> + Send;

    /// Closes the connection and endpoints.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// A background bulk load: its stop flag and its task, which returns what it sent (and,
/// for the baselines, the stream it borrowed). Aborted if dropped while running.
pub(crate) struct Load<T> {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Result<T, String>>,
}

impl<T: Send + 'static> Load<T> {
    /// Spawns `work`, which polls the flag it is given between messages.
    pub(crate) fn spawn<F>(work: impl FnOnce(Arc<AtomicBool>) -> F) -> Self
    where
        F: Future<Output = Result<T, String>> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(work(stop.clone()));
        Load { stop, task }
    }

    /// Raises the flag and waits for the task's result.
    pub(crate) async fn finish(mut self) -> Result<T, String> {
        self.stop.store(true, Ordering::Release);
        (&mut self.task)
            .await
            .map_err(|error| format!("the bulk load's task failed: {error}"))?
    }
}

impl<T> Drop for Load<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn msg_rate<P: Pair>(pair: &mut P, count: u64) -> Result<f64, String> {
    let mut tally = pair.tally();
    let target = tally.borrow().small + count;
    let start = Instant::now();
    pair.send_small(count).await?;
    wait_small(&mut tally, target).await?;
    Ok(count as f64 / start.elapsed().as_secs_f64())
}

/// The sustained rate, MB/s (10^6 bytes), of `count` messages of `payload` sent back to
/// back: the messages after the first over the time from the first one's arrival to the
/// last one's, so that the first message's latency (and, for cohort, encoding it before
/// anything moves) is left out, exactly as in [`pings_under_load`].
async fn bulk_rate<P: Pair>(pair: &mut P, payload: &Bytes, count: usize) -> Result<f64, String> {
    if count < 2 {
        return Err(format!(
            "a rate needs at least 2 bulk messages, not {count}"
        ));
    }
    let mut tally = pair.tally();
    let from = tally.borrow().bulk.len();
    pair.send_bulk(payload, count).await?;
    let arrivals = wait_bulk(&mut tally, from, from + count, payload.len()).await?;
    sustained_rate(&arrivals, payload.len())
}

/// MB/s over arrivals of messages of `len` bytes: all but the first, from the first's
/// arrival to the last's.
fn sustained_rate(arrivals: &[Instant], len: usize) -> Result<f64, String> {
    let (Some(first), Some(last)) = (arrivals.first(), arrivals.last()) else {
        return Err("no bulk message arrived".into());
    };
    if arrivals.len() < 2 {
        return Err("only one bulk message arrived: no rate".into());
    }
    let seconds = last.duration_since(*first).as_secs_f64().max(1e-9);
    Ok(((arrivals.len() - 1) * len) as f64 / 1e6 / seconds)
}

/// Round-trip times in microseconds, sorted.
async fn round_trips<P: Pair>(pair: &mut P, count: usize) -> Result<Vec<f64>, String> {
    let mut rtts = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        pair.ping().await?;
        rtts.push(start.elapsed().as_secs_f64() * 1e6);
    }
    rtts.sort_by(f64::total_cmp);
    Ok(rtts)
}

/// The value at quantile `q` of sorted samples (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Warms a pair up: handshake done, every stream opened, buffers grown.
async fn warm_up<P: Pair>(pair: &mut P, plan: &Plan) -> Result<(), String> {
    round_trips(pair, plan.warm_pings).await?;
    msg_rate(pair, 10_000).await?;
    // At full size: the first large messages of a run are slower (fresh memory, a
    // congestion window still small).
    bulk_rate(pair, &bulk_payload(plan.bulk_bytes), 2).await?;
    Ok(())
}

fn bulk_payload(len: usize) -> Bytes {
    Bytes::from(vec![BULK_BYTE; len])
}

/// One repetition of the head-of-line test.
struct HolSample {
    p99_us: f64,
    bulk_mb_s: f64,
}

async fn head_of_line<P: Pair>(
    pair: &mut P,
    payload: &Bytes,
    plan: &Plan,
) -> Result<HolSample, String> {
    let mut tally = pair.tally();
    let from = tally.borrow().bulk.len();
    pair.start_load(payload.clone())?;
    // On failure the load is left running: the run ends, and closing the pair aborts it
    // (stopping it could wait on a broken connection and hide the error).
    let sample = pings_under_load(pair, &mut tally, from, payload.len(), plan).await?;
    // Stopped and drained, so that the next measurement starts on a quiet pair.
    let sent = pair.stop_load().await?;
    wait_bulk(&mut tally, from, from + sent, payload.len()).await?;
    Ok(sample)
}

async fn pings_under_load<P: Pair>(
    pair: &mut P,
    tally: &mut watch::Receiver<Tally>,
    from: usize,
    len: usize,
    plan: &Plan,
) -> Result<HolSample, String> {
    // Saturated once the first message is through.
    tally
        .wait_for(|t| t.bulk.len() > from || t.fault.is_some())
        .await
        .map_err(|_| "the receiver is gone".to_string())?;
    let window = Instant::now();
    let mut ticker = tokio::time::interval(HOL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rtts = Vec::with_capacity(plan.hol_pings);
    loop {
        ticker.tick().await;
        let start = Instant::now();
        pair.ping().await?;
        rtts.push(start.elapsed().as_secs_f64() * 1e6);
        let arrived = arrivals_since(&tally.borrow(), window)?.len();
        if rtts.len() >= plan.hol_pings && arrived >= plan.hol_arrivals {
            break;
        }
    }
    let arrivals = arrivals_since(&tally.borrow(), window)?;
    rtts.sort_by(f64::total_cmp);
    Ok(HolSample {
        p99_us: quantile(&rtts, 0.99),
        bulk_mb_s: sustained_rate(&arrivals, len)?,
    })
}

fn arrivals_since(tally: &Tally, since: Instant) -> Result<Vec<Instant>, String> {
    if let Some(fault) = &tally.fault {
        return Err(fault.clone());
    }
    Ok(tally
        .bulk
        .iter()
        .map(|(at, _)| *at)
        .filter(|at| *at >= since)
        .collect())
}

/// One sample list per transport; `quinn_best` only in the head-of-line figures.
#[derive(Default)]
struct Three {
    cohort: Vec<f64>,
    quinn: Vec<f64>,
    quinn_best: Vec<f64>,
    tcp_tls: Vec<f64>,
}

impl Three {
    /// The group's figures, `tcp_tls` last (its ratios follow it).
    fn into_figures(self, group: &str, unit: &'static str) -> Vec<Figure> {
        let mut figures = vec![
            Figure::new(format!("{group}.cohort"), unit, self.cohort),
            Figure::new(format!("{group}.quinn"), unit, self.quinn),
        ];
        if !self.quinn_best.is_empty() {
            figures.push(Figure::new(
                format!("{group}.quinn_best"),
                unit,
                self.quinn_best,
            ));
        }
        figures.push(Figure::new(format!("{group}.tcp_tls"), unit, self.tcp_tls));
        figures
    }
}

/// One pair per transport, and raw quinn in its best arrangement for head of line.
struct Pairs {
    cohort: CohortPair,
    quinn: QuinnPair,
    quinn_best: QuinnPair,
    tcp_tls: TcpPair,
}

impl Pairs {
    async fn open(certs: &Certs) -> Result<Self, String> {
        Ok(Pairs {
            cohort: CohortPair::open(certs).await?,
            quinn: QuinnPair::open(certs, Arrangement::PLAIN).await?,
            quinn_best: QuinnPair::open(certs, Arrangement::BEST).await?,
            tcp_tls: TcpPair::open(certs).await?,
        })
    }

    async fn close(self) {
        let limit = SETUP_LIMIT;
        let _ = tokio::time::timeout(limit, self.cohort.close()).await;
        let _ = tokio::time::timeout(limit, self.quinn.close()).await;
        let _ = tokio::time::timeout(limit, self.quinn_best.close()).await;
        let _ = tokio::time::timeout(limit, self.tcp_tls.close()).await;
    }

    async fn measure(&mut self, plan: &Plan, figures: &mut Vec<Figure>) -> Result<(), String> {
        let limit = SETUP_LIMIT;
        bounded("cohort warm-up", limit, warm_up(&mut self.cohort, plan)).await?;
        bounded("quinn warm-up", limit, warm_up(&mut self.quinn, plan)).await?;
        let best = warm_up(&mut self.quinn_best, plan);
        bounded("quinn_best warm-up", limit, best).await?;
        bounded("tcp_tls warm-up", limit, warm_up(&mut self.tcp_tls, plan)).await?;
        self.msg_rate(plan, figures).await?;
        let unloaded = self.bulk(plan, figures).await?;
        self.rtt(plan, figures).await?;
        self.head_of_line(plan, &unloaded, figures).await
    }

    async fn msg_rate(&mut self, plan: &Plan, figures: &mut Vec<Figure>) -> Result<(), String> {
        let (n, limit) = (plan.small_count, MEASURE_LIMIT);
        let mut rates = Three::default();
        for _ in 0..plan.reps {
            let cohort = msg_rate(&mut self.cohort, n);
            rates
                .cohort
                .push(bounded("cohort msg_rate", limit, cohort).await?);
            let quinn = msg_rate(&mut self.quinn, n);
            rates
                .quinn
                .push(bounded("quinn msg_rate", limit, quinn).await?);
            let tcp = msg_rate(&mut self.tcp_tls, n);
            rates
                .tcp_tls
                .push(bounded("tcp_tls msg_rate", limit, tcp).await?);
        }
        figures.extend(rates.into_figures("transport.msg_rate", "msg/s"));
        Ok(())
    }

    /// Returns the median unloaded rate of each transport.
    async fn bulk(&mut self, plan: &Plan, figures: &mut Vec<Figure>) -> Result<[f64; 3], String> {
        let payload = bulk_payload(plan.bulk_bytes);
        let (n, limit) = (plan.bulk_count, MEASURE_LIMIT);
        let mut rates = Three::default();
        for _ in 0..plan.reps {
            let cohort = bulk_rate(&mut self.cohort, &payload, n);
            rates
                .cohort
                .push(bounded("cohort bulk", limit, cohort).await?);
            let quinn = bulk_rate(&mut self.quinn, &payload, n);
            rates.quinn.push(bounded("quinn bulk", limit, quinn).await?);
            let tcp = bulk_rate(&mut self.tcp_tls, &payload, n);
            rates
                .tcp_tls
                .push(bounded("tcp_tls bulk", limit, tcp).await?);
        }
        let figs = rates.into_figures("transport.bulk", "MB/s");
        let medians = [figs[0].median(), figs[1].median(), figs[2].median()];
        figures.extend(figs);
        Ok(medians)
    }

    async fn rtt(&mut self, plan: &Plan, figures: &mut Vec<Figure>) -> Result<(), String> {
        let (n, limit) = (plan.pings, MEASURE_LIMIT);
        let (mut p50, mut p99) = (Three::default(), Three::default());
        for _ in 0..plan.reps {
            let cohort = bounded("cohort rtt", limit, round_trips(&mut self.cohort, n)).await?;
            p50.cohort.push(quantile(&cohort, 0.5));
            p99.cohort.push(quantile(&cohort, 0.99));
            let quinn = bounded("quinn rtt", limit, round_trips(&mut self.quinn, n)).await?;
            p50.quinn.push(quantile(&quinn, 0.5));
            p99.quinn.push(quantile(&quinn, 0.99));
            let tcp = bounded("tcp_tls rtt", limit, round_trips(&mut self.tcp_tls, n)).await?;
            p50.tcp_tls.push(quantile(&tcp, 0.5));
            p99.tcp_tls.push(quantile(&tcp, 0.99));
        }
        figures.extend(p50.into_figures("transport.rtt_p50", "us"));
        figures.extend(p99.into_figures("transport.rtt_p99", "us"));
        Ok(())
    }

    async fn head_of_line(
        &mut self,
        plan: &Plan,
        unloaded: &[f64; 3],
        figures: &mut Vec<Figure>,
    ) -> Result<(), String> {
        let payload = bulk_payload(plan.bulk_bytes);
        let limit = MEASURE_LIMIT;
        let (mut p99, mut share) = (Three::default(), Three::default());
        for _ in 0..plan.reps {
            let cohort = head_of_line(&mut self.cohort, &payload, plan);
            let cohort = bounded("cohort head-of-line", limit, cohort).await?;
            p99.cohort.push(cohort.p99_us);
            share.cohort.push(cohort.bulk_mb_s / unloaded[0]);
            let quinn = head_of_line(&mut self.quinn, &payload, plan);
            let quinn = bounded("quinn head-of-line", limit, quinn).await?;
            p99.quinn.push(quinn.p99_us);
            share.quinn.push(quinn.bulk_mb_s / unloaded[1]);
            // Its share is of plain quinn's unloaded rate: how much of the ceiling its
            // window keeps.
            let best = head_of_line(&mut self.quinn_best, &payload, plan);
            let best = bounded("quinn_best head-of-line", limit, best).await?;
            p99.quinn_best.push(best.p99_us);
            share.quinn_best.push(best.bulk_mb_s / unloaded[1]);
            let tcp = head_of_line(&mut self.tcp_tls, &payload, plan);
            let tcp = bounded("tcp_tls head-of-line", limit, tcp).await?;
            p99.tcp_tls.push(tcp.p99_us);
            share.tcp_tls.push(tcp.bulk_mb_s / unloaded[2]);
        }
        figures.extend(p99.into_figures("transport.hol_p99", "us"));
        figures.extend(share.into_figures("transport.hol_bulk_share", "ratio"));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// cohort

/// A small message: an index and 92 bytes of filler.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Small {
    index: u64,
    body: Bytes,
}

impl Message for Small {
    const TAG: Tag = Tag(0x1_0100);
}

/// A bulk message.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Blob {
    data: Bytes,
}

impl Message for Blob {
    const TAG: Tag = Tag(0x1_0101);
}

/// A ping.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Request {
    seq: u64,
}

impl Message for Request {
    const TAG: Tag = Tag(0x1_0102);
}

/// The answer to a ping.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Response {
    seq: u64,
}

impl Message for Response {
    const TAG: Tag = Tag(0x1_0103);
}

/// The one message a peer and the hub exchange in the memory measurement.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Greeting;

impl Message for Greeting {
    const TAG: Tag = Tag(0x1_0104);
}

fn bind(certs: &Certs, name: &str) -> Result<Messenger, String> {
    let identity = cohort_transport::Identity::named(name);
    Messenger::bind(&identity, QuicConfig::default(), &certs.tls(name)?)
        .map_err(|error| format!("could not bind messenger {name}: {error}"))
}

fn subscribe<M: Message>(messenger: &Messenger) -> Result<Subscription<M>, String> {
    messenger
        .subscribe::<M>()
        .map_err(|error| format!("could not subscribe: {error}"))
}

/// Sends until the message is accepted: a backlogged destination (its queue at its byte
/// bound) is retried after a millisecond, as an application pacing itself would.
async fn send_accepted<M: Message>(
    messenger: &Messenger,
    message: &M,
    priority: Priority,
    to: &MemberId,
) -> Result<(), String> {
    loop {
        let outcome = messenger
            .send(message, priority, std::slice::from_ref(to))
            .map_err(|error| format!("send failed: {error}"))?;
        if outcome.is_complete() {
            return Ok(());
        }
        if !outcome.not_in_view.is_empty() {
            return Err(format!("{to:?} is not in the view"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Two cohort messengers in one view (QUIC, or the legacy UDP carrier): the client sends,
/// the server receives and answers.
struct CohortPair {
    client: Messenger,
    server: Messenger,
    to_server: MemberId,
    filler: Bytes,
    next_small: u64,
    next_ping: u64,
    responses: Subscription<Response>,
    tally: watch::Receiver<Tally>,
    tasks: JoinSet<()>,
    load: Option<Load<usize>>,
}

impl CohortPair {
    async fn open(certs: &Certs) -> Result<Self, String> {
        let client = bind(certs, "cohort-client")?;
        let server = bind(certs, "cohort-server")?;
        Self::of(client, server)
    }
}

impl CohortPair {
    /// Two messengers on the legacy UDP protocol, with its default settings.
    fn open_legacy() -> Result<Self, String> {
        let bind = |name: &str| {
            let identity = cohort_transport::Identity::named(name);
            cohort_legacy_udp::bind(&identity, LegacyConfig::default())
                .map_err(|error| format!("could not bind legacy messenger {name}: {error}"))
        };
        CohortPair::of(bind("legacy-client")?, bind("legacy-server")?)
    }
}

impl CohortPair {
    fn of(client: Messenger, server: Messenger) -> Result<Self, String> {
        let view = View::new(
            ViewId(1),
            [client.local_member().clone(), server.local_member().clone()],
        );
        client.install_view(view.clone());
        server.install_view(view);
        let (sink, tally) = Sink::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(receive_small(subscribe(&server)?, sink.clone()));
        tasks.spawn(receive_bulk(subscribe(&server)?, sink.clone()));
        tasks.spawn(answer(server.clone(), subscribe(&server)?, sink));
        Ok(CohortPair {
            to_server: server.local_member().clone(),
            responses: subscribe(&client)?,
            client,
            server,
            filler: Bytes::from(vec![FILLER; SMALL_BYTES - 8]),
            next_small: 0,
            next_ping: 0,
            tally,
            tasks,
            load: None,
        })
    }
}

/// Counts and checks small messages, reporting once per batch taken from the subscription.
async fn receive_small(mut inbox: Subscription<Small>, sink: Sink) {
    let mut order = SmallOrder::default();
    while let Some(first) = inbox.recv().await {
        let mut count = 0;
        let mut next = Some(first);
        while let Some(envelope) = next {
            let checked = match envelope.delivery {
                Delivery::Reliable(Priority::Normal)
                    if envelope.message.body.len() + 8 == SMALL_BYTES =>
                {
                    order.check(envelope.message.index)
                }
                other => Err(format!(
                    "a small message came as {other:?} with {} body bytes",
                    envelope.message.body.len()
                )),
            };
            if let Err(fault) = checked {
                return sink.fault(fault);
            }
            count += 1;
            next = inbox.try_recv();
        }
        sink.small(count);
    }
}

async fn receive_bulk(mut inbox: Subscription<Blob>, sink: Sink) {
    while let Some(envelope) = inbox.recv().await {
        if envelope.delivery != Delivery::Reliable(Priority::Bulk) {
            return sink.fault(format!("a bulk message came as {:?}", envelope.delivery));
        }
        if let Err(fault) = check_bulk(&envelope.message.data) {
            return sink.fault(fault);
        }
        sink.bulk(envelope.message.data.len());
    }
}

/// The server's task: answers each request on High.
async fn answer(server: Messenger, mut inbox: Subscription<Request>, sink: Sink) {
    while let Some(envelope) = inbox.recv().await {
        let response = Response {
            seq: envelope.message.seq,
        };
        if let Err(fault) = send_accepted(&server, &response, Priority::High, &envelope.from).await
        {
            return sink.fault(format!("answering a ping: {fault}"));
        }
    }
}

/// Sends `count` copies of `payload` on Bulk, keeping at most [`BULK_WINDOW`] outstanding
/// (received messages are counted in `tally`), until `stop` is raised.
async fn send_blobs(
    client: &Messenger,
    to: &MemberId,
    tally: &mut watch::Receiver<Tally>,
    payload: &Bytes,
    count: Option<usize>,
    stop: &AtomicBool,
) -> Result<usize, String> {
    let received_before = tally.borrow().bulk.len() as u64;
    let blob = Blob {
        data: payload.clone(),
    };
    let mut sent = 0;
    while count.is_none_or(|count| sent < count) && !stop.load(Ordering::Acquire) {
        let limit = received_before + sent as u64 + 1;
        tally
            .wait_for(|t| t.bulk.len() as u64 + BULK_WINDOW >= limit || t.fault.is_some())
            .await
            .map_err(|_| "the receiver is gone".to_string())?;
        send_accepted(client, &blob, Priority::Bulk, to).await?;
        sent += 1;
    }
    Ok(sent)
}

impl Pair for CohortPair {
    fn tally(&self) -> watch::Receiver<Tally> {
        self.tally.clone()
    }

    async fn send_small(&mut self, count: u64) -> Result<(), String> {
        for i in 0..count {
            let message = Small {
                index: self.next_small,
                body: self.filler.clone(),
            };
            send_accepted(&self.client, &message, Priority::Normal, &self.to_server).await?;
            self.next_small += 1;
            if i % 256 == 255 {
                // An application producing this fast would still let other tasks run.
                tokio::task::yield_now().await;
            }
        }
        Ok(())
    }

    async fn send_bulk(&mut self, payload: &Bytes, count: usize) -> Result<(), String> {
        let mut tally = self.tally.clone();
        let never = AtomicBool::new(false);
        let (client, to) = (&self.client, &self.to_server);
        send_blobs(client, to, &mut tally, payload, Some(count), &never).await?;
        Ok(())
    }

    async fn ping(&mut self) -> Result<(), String> {
        let seq = self.next_ping;
        self.next_ping += 1;
        let request = Request { seq };
        send_accepted(&self.client, &request, Priority::High, &self.to_server).await?;
        let envelope = self
            .responses
            .recv()
            .await
            .ok_or("the client's subscription ended")?;
        if envelope.message.seq != seq || envelope.delivery != Delivery::Reliable(Priority::High) {
            return Err(format!(
                "response {} on {:?} where {seq} on High was expected",
                envelope.message.seq, envelope.delivery
            ));
        }
        Ok(())
    }

    fn start_load(&mut self, payload: Bytes) -> Result<(), String> {
        if self.load.is_some() {
            return Err("a bulk load is already running".into());
        }
        let (client, to) = (self.client.clone(), self.to_server.clone());
        let mut tally = self.tally.clone();
        self.load = Some(Load::spawn(|stop| async move {
            send_blobs(&client, &to, &mut tally, &payload, None, &stop).await
        }));
        Ok(())
    }

    async fn stop_load(&mut self) -> Result<usize, String> {
        let load = self.load.take().ok_or("no bulk load is running")?;
        load.finish().await
    }

    async fn close(mut self) {
        self.load = None;
        self.tasks.abort_all();
        tokio::join!(self.client.shutdown(), self.server.shutdown());
    }
}

// ---------------------------------------------------------------------------------------
// Memory per peer

/// Resident set size of this process, KiB (from /proc/self/status).
fn resident_kib() -> Result<f64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|error| format!("could not read /proc/self/status: {error}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .ok_or_else(|| "no VmRSS line in /proc/self/status".to_string())
}

/// What one memory repetition keeps alive until every repetition is done.
#[derive(Default)]
struct Kept {
    messengers: Vec<Messenger>,
    inboxes: Vec<Subscription<Greeting>>,
}

impl Kept {
    async fn shutdown(self) {
        drop(self.inboxes);
        let mut shutting = JoinSet::new();
        for messenger in self.messengers {
            shutting.spawn(async move { messenger.shutdown().await });
        }
        let all = async { while shutting.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(SETUP_LIMIT, all).await;
    }
}

async fn mem_per_peer(certs: &Certs, plan: &Plan) -> Result<Figure, String> {
    let mut kept = Kept::default();
    let mut samples = Vec::with_capacity(plan.reps);
    let mut outcome = Ok(());
    for _ in 0..plan.reps {
        let rep = connect_peers(certs, plan.peers, &mut kept);
        match bounded("mem_per_peer", MEASURE_LIMIT, rep).await {
            Ok(kib) => samples.push(kib),
            Err(error) => {
                outcome = Err(error);
                break;
            }
        }
    }
    kept.shutdown().await;
    outcome.map(|()| Figure::new("transport.mem_per_peer.cohort", "KiB", samples))
}

/// One repetition: a hub and `peers` peers, bound, subscribed and with views installed;
/// then each peer and the hub exchange one message. Returns the growth of the resident set
/// per peer, KiB.
async fn connect_peers(certs: &Certs, peers: usize, kept: &mut Kept) -> Result<f64, String> {
    let hub = bind(certs, "hub")?;
    let mut members = Vec::with_capacity(peers);
    for i in 0..peers {
        members.push(bind(certs, &format!("peer-{i}"))?);
    }
    let hub_id = hub.local_member().clone();
    let everyone =
        std::iter::once(hub_id.clone()).chain(members.iter().map(|m| m.local_member().clone()));
    hub.install_view(View::new(ViewId(1), everyone));
    for member in &members {
        member.install_view(View::new(
            ViewId(1),
            [hub_id.clone(), member.local_member().clone()],
        ));
    }
    let mut hub_inbox = subscribe::<Greeting>(&hub)?;
    let mut inboxes = members
        .iter()
        .map(subscribe::<Greeting>)
        .collect::<Result<Vec<_>, _>>()?;
    kept.messengers.push(hub.clone());
    kept.messengers.extend(members.iter().cloned());

    tokio::time::sleep(SETTLE).await;
    let before = resident_kib()?;
    for member in &members {
        send_accepted(member, &Greeting, Priority::Normal, &hub_id).await?;
    }
    for _ in 0..peers {
        let envelope = hub_inbox
            .recv()
            .await
            .ok_or("the hub's subscription ended")?;
        send_accepted(&hub, &Greeting, Priority::Normal, &envelope.from).await?;
    }
    for inbox in &mut inboxes {
        inbox.recv().await.ok_or("a peer's subscription ended")?;
    }
    tokio::time::sleep(SETTLE).await;
    let after = resident_kib()?;
    if hub.quic().expect("a QUIC carrier").open_connections() != peers {
        return Err(format!(
            "the hub has {} connections where {peers} were expected",
            hub.quic().expect("a QUIC carrier").open_connections()
        ));
    }
    kept.inboxes.push(hub_inbox);
    kept.inboxes.extend(inboxes);
    Ok((after - before) / peers as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_out_whole_however_the_bytes_are_cut() {
        let mut stream = Vec::new();
        for payload in [&b"one"[..], b"", &[7u8; 1000][..]] {
            stream.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            stream.extend_from_slice(payload);
        }
        let mut frames = Frames::default();
        let mut out = Vec::new();
        for piece in stream.chunks(7) {
            frames.extend(piece);
            while let Some(frame) = frames.next_frame().expect("well-formed") {
                out.push(frame);
            }
        }
        assert_eq!(out.len(), 3);
        assert_eq!(&out[0][..], b"one");
        assert!(out[1].is_empty());
        assert_eq!(&out[2][..], &[7u8; 1000][..]);

        let mut broken = Frames::default();
        broken.extend(&u32::MAX.to_le_bytes());
        assert!(broken.next_frame().is_err());
    }

    #[test]
    fn small_messages_are_checked_in_order() {
        let payload = |index: u64| {
            let mut p = index.to_le_bytes().to_vec();
            p.resize(SMALL_BYTES, FILLER);
            p
        };
        let mut order = SmallOrder::default();
        assert_eq!(order.check_payload(&payload(0)), Ok(()));
        assert_eq!(order.check_payload(&payload(1)), Ok(()));
        assert!(order.check_payload(&payload(3)).is_err());
        assert!(order.check_payload(&payload(2)[..50]).is_err());
        assert!(check_bulk(&[BULK_BYTE; 10]).is_ok());
        assert!(check_bulk(&[]).is_err());
        assert!(check_bulk(&[BULK_BYTE, 0, BULK_BYTE]).is_err());
    }

    #[test]
    fn quantiles_and_rates() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&sorted, 0.5), 50.0);
        assert_eq!(quantile(&sorted, 0.99), 99.0);
        assert_eq!(quantile(&[3.0], 0.99), 3.0);
        assert!(quantile(&[], 0.5).is_nan());

        let start = Instant::now();
        let arrivals = [
            start,
            start + Duration::from_secs(1),
            start + Duration::from_secs(2),
        ];
        let rate = sustained_rate(&arrivals, 1_000_000).expect("three arrivals");
        assert!((rate - 1.0).abs() < 1e-9, "{rate}");
        assert!(sustained_rate(&arrivals[..1], 1).is_err());
    }
}
