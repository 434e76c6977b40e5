//! One remote member: its send window, its receive positions and the task that owns its
//! connection.
//!
//! ```text
//! send() ──push──► Peer.window ──notify──► writer tasks (one per priority, per connection)
//! peer's Ack ──► Peer::acked ──► window releases what was delivered
//!                      │
//!                      └─notify──► driver: Idle ─dial─► Dialing ─HelloAck─► Up ─closed─► Idle
//! accept loop ──Hello──► driver.incoming ──decide──► Up (HelloAck sent) or closed DUPLICATE
//! ```
//!
//! The driver is the only place that changes the peer's connection, so the decision about
//! simultaneous dials is made in one place, in order: the connection dialed by the member
//! with the smaller uuid wins. The smaller member refuses an incoming connection while its
//! own dial is in progress or up; the larger member always accepts the smaller one's dial,
//! abandoning its own. No frame is written on a connection before its Hello exchange
//! completes, so a losing connection never carries data.
//!
//! Across connections nothing is lost or repeated: a frame stays in the window until the
//! peer acknowledges delivering it, a new connection resends what the peer's Hello (or
//! HelloAck) says it has not delivered, and the receiver commits a sequence number only
//! after handing the message to its subscriber, holding the priority's receive lane while
//! it does, so a resent copy arriving on a new connection waits and is then recognised as
//! a duplicate.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use quinn::{Connection, RecvStream, SendStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use super::Shared;
use super::handshake::{self, DialError, LinkParts};
use super::link::{Established, SendSlots, WriteBuffer};
use super::queue::{Numbering, OverBound, SendWindow, Taken};
use super::receive::{ReceiveCursor, ReceiveWindow};
use crate::member::MemberId;
use crate::message::Tag;
use crate::messenger::TransportEvent;
use crate::priority::Priority;
use crate::sync::{lock, read};
use crate::wire::{CloseCode, FrameDecoder, Hello, ReceiverLimits};

/// Largest batch a writer takes from a queue for one stream write. Its small payloads are
/// copied while the window is locked, so this also bounds how long a sender may wait.
const MAX_BATCH_BYTES: usize = 256 << 10;
/// After a notice that messages of a tag found no subscriber here, the next one about the
/// same tag waits this long (its count covers the messages between).
const UNDELIVERED_NOTICE_INTERVAL: Duration = Duration::from_secs(1);
/// Tags of undelivered messages tracked per peer; a peer that sends more distinct unknown
/// tags than this gets no notice about the others (they are still counted and logged).
const MAX_UNDELIVERED_TAGS: usize = 64;
/// The longest an acknowledgement of delivered messages waits for more to cover. A
/// sender's window holds what it sent until then; Bulk's, whose in-flight cap waits on
/// acknowledgements, never waits.
const ACK_DELAY: Duration = Duration::from_millis(2);
/// Payload bytes delivered that make an acknowledgement due at once.
const ACK_BYTES: usize = 32 << 10;
/// First and longest wait before dialing again after a failed dial.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// How the peer's driver should stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    Run,
    /// Flush what is queued (bounded by the shutdown timeout), then close with this code.
    Graceful(CloseCode),
    /// The member left the view: wait until what was queued for it is acknowledged (bounded
    /// by the shutdown timeout), then close with REMOVED_FROM_VIEW.
    Depart,
    /// Close now with this code.
    Abort(CloseCode),
}

/// An incoming connection whose Hello named this peer, waiting for the driver's decision.
pub(crate) struct Accepted {
    pub(crate) conn: Connection,
    pub(crate) send: SendStream,
    pub(crate) recv: RecvStream,
    pub(crate) decoder: FrameDecoder,
    pub(crate) hello: Hello,
    /// When the connection's first packet arrived: a dial started before ours came up
    /// crossed it, one started after replaces it.
    pub(crate) arrived: Instant,
}

#[derive(Default)]
pub(crate) struct PeerCounters {
    pub(crate) frames_sent: [AtomicU64; 4],
    pub(crate) bytes_sent: [AtomicU64; 4],
    pub(crate) frames_received: [AtomicU64; 4],
    pub(crate) bytes_received: [AtomicU64; 4],
    pub(crate) datagrams_sent: AtomicU64,
    pub(crate) datagrams_received: AtomicU64,
    pub(crate) datagrams_dropped: AtomicU64,
    pub(crate) duplicates_dropped: AtomicU64,
    pub(crate) frames_resent: AtomicU64,
    pub(crate) sequence_gaps: AtomicU64,
    pub(crate) unknown_frames: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) dials_crossed: AtomicU64,
    pub(crate) acks_sent: AtomicU64,
    pub(crate) acks_received: AtomicU64,
}

/// The current connection, as seen from outside the driver.
#[derive(Clone)]
pub(crate) struct LinkInfo {
    pub(crate) conn: Connection,
    pub(crate) dialed_by_us: bool,
}

pub(crate) struct Peer {
    member: RwLock<MemberId>,
    window: Mutex<SendWindow>,
    writer_wake: [Notify; 4],
    driver_wake: Notify,
    /// Woken whenever the window empties (everything acknowledged, or dropped).
    drained: Notify,
    want_connection: AtomicBool,
    stopping: AtomicBool,
    incoming: mpsc::Sender<Accepted>,
    stop: watch::Sender<Stop>,
    link: Mutex<Option<LinkInfo>>,
    /// The send halves of the current connection's streams, shared by its writer tasks and
    /// by senders that write at once.
    slots: Mutex<Option<Arc<SendSlots>>>,
    /// Held by the one reader of each priority while it delivers.
    receive_lanes: [tokio::sync::Mutex<()>; 4],
    /// Per priority, the last sequence number handed to a subscriber.
    receive: Mutex<ReceiveWindow>,
    /// Deliveries happened since the last acknowledgement was written.
    ack_pending: AtomicBool,
    /// The acknowledgement should go without waiting out [`ACK_DELAY`].
    ack_urgent: AtomicBool,
    /// Payload bytes delivered since the last acknowledgement was written.
    ack_bytes: AtomicUsize,
    ack_wake: Notify,
    backlogged: AtomicBool,
    /// When anything (frame or datagram) last arrived from the peer, in nanoseconds after
    /// `created` plus one (0: never). An atomic, not a lock: every received frame sets it.
    heard: AtomicU64,
    /// The peer's QUIC acknowledgements counted so far, for [`Peer::last_heard`].
    acks: Mutex<AckWatch>,
    /// When the peer was last seen in the view (installed or prepared), in the same
    /// units as `heard`: a peer outside the view is forgotten once it has been neither
    /// heard nor in the view for `outside_view_peer_timeout`.
    in_view: AtomicU64,
    created: Instant,
    /// Per priority, the largest frame the peer said (in its Hello or HelloAck) it takes;
    /// `usize::MAX` until it said so, or if its build predates saying so.
    frame_limits: [AtomicUsize; 4],
    /// Per application tag of the peer's messages dropped here for want of a subscriber:
    /// when the last notice about it went back, and how many were dropped since.
    undelivered: Mutex<std::collections::HashMap<Tag, (Option<Instant>, u64)>>,
    pub(crate) counters: PeerCounters,
}

/// How many ACK frames the current connection had received from the peer when
/// [`Peer::last_heard`] last looked, and when that was.
#[derive(Default)]
struct AckWatch {
    /// The connection's `stable_id`: counts restart with each connection.
    connection: usize,
    acks: u64,
    looked: Option<Instant>,
}

/// What a forgotten peer leaves behind, so that talking to it again later starts where
/// it left off: what was delivered from it, and how our frames to it were numbered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Positions {
    delivered: [u64; 4],
    sent: [Numbering; 4],
}

impl Positions {
    /// True if nothing was ever delivered from the peer or sent to it: a new peer starts
    /// out just the same, so there is nothing to remember.
    pub(crate) fn is_fresh(&self) -> bool {
        *self == Positions::default()
    }
}

impl Peer {
    /// A peer and the receiving ends its driver needs; `resumed` is what a forgotten
    /// peer of the same member left behind.
    pub(crate) fn new(
        member: MemberId,
        queue_limit: usize,
        bulk_in_flight: usize,
        resumed: Option<Positions>,
    ) -> (Arc<Peer>, mpsc::Receiver<Accepted>, watch::Receiver<Stop>) {
        let (incoming, incoming_rx) = mpsc::channel(4);
        let (stop, stop_rx) = watch::channel(Stop::Run);
        let resumed = resumed.unwrap_or_default();
        let peer = Arc::new(Peer {
            member: RwLock::new(member),
            window: Mutex::new(SendWindow::resume(
                queue_limit,
                bulk_in_flight,
                resumed.sent,
            )),
            writer_wake: Default::default(),
            driver_wake: Notify::new(),
            drained: Notify::new(),
            want_connection: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            incoming,
            stop,
            link: Mutex::new(None),
            slots: Mutex::new(None),
            receive_lanes: Default::default(),
            receive: Mutex::new(ReceiveWindow::resume(resumed.delivered)),
            ack_pending: AtomicBool::new(false),
            ack_urgent: AtomicBool::new(false),
            ack_bytes: AtomicUsize::new(0),
            ack_wake: Notify::new(),
            backlogged: AtomicBool::new(false),
            heard: AtomicU64::new(0),
            acks: Mutex::new(AckWatch::default()),
            in_view: AtomicU64::new(0),
            created: Instant::now(),
            frame_limits: [usize::MAX; 4].map(AtomicUsize::new),
            undelivered: Mutex::default(),
            counters: PeerCounters::default(),
        });
        (peer, incoming_rx, stop_rx)
    }

    /// Counts `dropped` messages of `tag` from the peer that found no subscriber here;
    /// returns the count to tell the peer when a notice is due (the first for the tag, then
    /// at most one per [`UNDELIVERED_NOTICE_INTERVAL`], covering the messages between).
    pub(crate) fn note_undelivered(&self, tag: Tag, dropped: u64) -> Option<u64> {
        let mut notes = lock(&self.undelivered);
        if notes.len() >= MAX_UNDELIVERED_TAGS && !notes.contains_key(&tag) {
            return None;
        }
        let now = Instant::now();
        let (last, count) = notes.entry(tag).or_insert((None, 0));
        *count += dropped;
        if last.is_some_and(|at| now < at + UNDELIVERED_NOTICE_INTERVAL) {
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(count))
    }

    pub(crate) fn member(&self) -> MemberId {
        read(&self.member).clone()
    }

    /// The largest frame of `priority` the peer takes, as far as this member knows.
    pub(crate) fn frame_limit(&self, priority: Priority) -> usize {
        self.frame_limits[priority.index()].load(Ordering::Acquire)
    }

    /// Records what the peer said it takes (each new connection says it again: its
    /// configuration may have changed meanwhile).
    fn set_frame_limits(&self, limits: Option<ReceiverLimits>) {
        for priority in Priority::ALL {
            let limit = limits.map_or(usize::MAX, |l| l.frame_limit(priority));
            self.frame_limits[priority.index()].store(limit, Ordering::Release);
        }
    }

    /// Queues a message and, if need be, wakes the driver to dial. The caller then hands
    /// it on with `link::write_now`, which writes it at once or wakes its writer.
    pub(crate) fn enqueue(
        &self,
        priority: Priority,
        tag: Tag,
        payload: Bytes,
    ) -> Result<(), OverBound> {
        let result = lock(&self.window).push(priority, tag, payload);
        if result.is_ok() {
            self.want_connection();
        }
        result.map(|_| ())
    }

    /// Records that this destination went over its bound; true the first time in a row.
    pub(crate) fn mark_backlogged(&self) -> bool {
        !self.backlogged.swap(true, Ordering::Relaxed)
    }

    /// Asks the driver for a connection (datagrams, or frames to send).
    pub(crate) fn want_connection(&self) {
        if !self.want_connection.swap(true, Ordering::AcqRel) {
            self.driver_wake.notify_one();
        }
    }

    /// Takes what `priority`'s stream may carry now and encodes it into `out`, without
    /// waiting.
    pub(crate) fn take_now(&self, priority: Priority, out: &mut WriteBuffer) -> Option<Taken> {
        let limit = self.frame_limit(priority);
        lock(&self.window).take(priority, MAX_BATCH_BYTES, |frame| out.put(frame, limit))
    }

    /// True if frames of `priority` wait to be written.
    pub(crate) fn has_queued_on(&self, priority: Priority) -> bool {
        lock(&self.window).has_queued(priority)
    }

    /// True once the peer was told to stop.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// What wakes `priority`'s writer: something queued, room in flight, or a stop.
    pub(crate) fn writer_wake(&self, priority: Priority) -> &Notify {
        &self.writer_wake[priority.index()]
    }

    /// Wakes `priority`'s writer (or, for this member itself, its local delivery).
    pub(crate) fn wake_writer(&self, priority: Priority) {
        self.writer_wake[priority.index()].notify_one();
    }

    /// The send halves of the current connection's streams, if one is up.
    pub(crate) fn slots(&self) -> Option<Arc<SendSlots>> {
        lock(&self.slots).clone()
    }

    /// Records the send halves of the connection that just came up (or none).
    pub(crate) fn set_slots(&self, slots: Option<Arc<SendSlots>>) {
        *lock(&self.slots) = slots;
    }

    /// Forgets `slots` if they are still the current ones.
    pub(crate) fn forget_slots(&self, slots: &Arc<SendSlots>) {
        let mut current = lock(&self.slots);
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, slots)) {
            *current = None;
        }
    }

    /// Waits until deliveries have happened since the last acknowledgement, and then until
    /// the acknowledgement is due: at once if it is urgent, else after [`ACK_DELAY`] (cut
    /// short if it becomes urgent meanwhile), so that a trickle of messages is acknowledged
    /// in one frame instead of one each. Returns the positions to acknowledge.
    pub(crate) async fn next_ack(&self) -> [u64; 4] {
        loop {
            let notified = self.ack_wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.ack_pending.load(Ordering::Acquire) {
                break;
            }
            notified.await;
        }
        let deadline = Instant::now() + ACK_DELAY;
        loop {
            let notified = self.ack_wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.ack_urgent.load(Ordering::Acquire) {
                break;
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        // Cleared before the positions are read: a delivery after this schedules the next.
        self.ack_urgent.store(false, Ordering::Release);
        self.ack_bytes.store(0, Ordering::Relaxed);
        self.ack_pending.store(false, Ordering::Release);
        self.delivered()
    }

    /// Counts frames the stream accepted.
    pub(crate) fn count_written(&self, priority: Priority, taken: Taken) {
        let i = priority.index();
        self.counters.frames_sent[i].fetch_add(taken.frames as u64, Ordering::Relaxed);
        self.counters.bytes_sent[i].fetch_add(taken.bytes as u64, Ordering::Relaxed);
    }

    /// The peer acknowledged delivering up to these sequence numbers.
    pub(crate) fn acked(&self, delivered: [u64; 4]) {
        let mut window = lock(&self.window);
        for priority in Priority::ALL {
            if window.ack(priority, delivered[priority.index()]) > 0 {
                // An in-flight cap may have been holding this writer back.
                self.writer_wake[priority.index()].notify_one();
            }
        }
        if window.is_empty() {
            self.backlogged.store(false, Ordering::Relaxed);
            // Only a departing peer's driver waits for this (`until_drained`, after
            // `stop`): no wake-up on the acknowledgements of a peer that stays.
            if self.stopping.load(Ordering::Acquire) {
                self.drained.notify_waiters();
            }
        }
    }

    /// Returns once nothing is queued or unacknowledged (at once if so now).
    pub(crate) async fn until_drained(&self) {
        loop {
            // Registered before the check, so that an acknowledgement between the two is
            // not missed.
            let drained = self.drained.notified();
            let mut drained = std::pin::pin!(drained);
            drained.as_mut().enable();
            if lock(&self.window).is_empty() {
                return;
            }
            drained.await;
        }
    }

    /// A new connection: resend what the peer has not delivered. False if the peer claims
    /// to have delivered frames that were never sent (a broken or lying peer).
    pub(crate) fn restart_sending(&self, peer_delivered: [u64; 4]) -> bool {
        let mut window = lock(&self.window);
        if !window.plausible(peer_delivered) {
            return false;
        }
        let resent = window.restart(peer_delivered);
        self.counters
            .frames_resent
            .fetch_add(resent as u64, Ordering::Relaxed);
        true
    }

    /// Takes the receive lane of `priority`: only its holder checks and commits sequence
    /// numbers of that priority.
    pub(crate) async fn receive_lane(&self, priority: Priority) -> tokio::sync::MutexGuard<'_, ()> {
        self.receive_lanes[priority.index()].lock().await
    }

    /// Where the checking of `priority`'s next frames starts. Call while holding the
    /// priority's lane, so that nobody else commits meanwhile.
    pub(crate) fn receive_cursor(&self, priority: Priority) -> ReceiveCursor {
        lock(&self.receive).cursor(priority)
    }

    /// A frame arrived that was delivered before: the sender resent it because it missed
    /// our acknowledgement, so say it again, at once.
    pub(crate) fn duplicate(&self) {
        self.counters
            .duplicates_dropped
            .fetch_add(1, Ordering::Relaxed);
        self.schedule_ack(true);
    }

    /// A frame arrived beyond the next one: the peer is broken.
    pub(crate) fn gap(&self) {
        self.counters.sequence_gaps.fetch_add(1, Ordering::Relaxed);
    }

    /// Records everything of `priority` up to `seq` delivered (after the subscriber has
    /// it; `bytes` of payload since the last commit) and schedules an acknowledgement. Call
    /// while holding the priority's lane.
    pub(crate) fn commit(&self, priority: Priority, seq: u64, bytes: usize) {
        lock(&self.receive).commit(priority, seq);
        // Bulk's in-flight cap waits on these: its acknowledgements never wait.
        let owed = self.ack_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.schedule_ack(priority == Priority::Bulk || owed >= ACK_BYTES);
    }

    fn schedule_ack(&self, urgent: bool) {
        let first = !self.ack_pending.swap(true, Ordering::AcqRel);
        if urgent && !self.ack_urgent.swap(true, Ordering::AcqRel) || first {
            self.ack_wake.notify_one();
        }
    }

    /// Per priority, the last sequence number delivered from this peer.
    pub(crate) fn delivered(&self) -> [u64; 4] {
        lock(&self.receive).delivered()
    }

    /// Records a sign of life: something arrived from the peer just now.
    pub(crate) fn heard(&self) {
        self.heard.store(self.now_mark(), Ordering::Relaxed);
    }

    /// When something last arrived from the peer: a frame, a datagram, or an
    /// acknowledgement of what this member sent it.
    pub(crate) fn last_heard(&self) -> Option<Instant> {
        self.note_acknowledgements();
        self.instant(self.heard.load(Ordering::Relaxed))
    }

    /// QUIC acknowledgements are signs of life too: the peer's own runtime sends them,
    /// within its acknowledgement delay of each heartbeat datagram this member sends it.
    /// The connection only counts them, so an increase since the last look says one
    /// arrived after that look, and that moment is what is recorded: never later than the
    /// truth. Looks come at least once per heartbeat (before each one is sent), so the
    /// acknowledgement of a heartbeat counts from about when that heartbeat left.
    fn note_acknowledgements(&self) {
        let Some(link) = self.link() else {
            return;
        };
        let acks = link.conn.stats().frame_rx.acks;
        let connection = link.conn.stable_id();
        let now = Instant::now();
        let mut watch = lock(&self.acks);
        if watch.connection == connection
            && acks > watch.acks
            && let Some(looked) = watch.looked
        {
            self.heard.fetch_max(self.mark(looked), Ordering::Relaxed);
        }
        *watch = AckWatch {
            connection,
            acks,
            looked: Some(now),
        };
    }

    /// Records that the peer is in the view (installed or prepared) just now.
    pub(crate) fn seen_in_view(&self) {
        self.in_view.store(self.now_mark(), Ordering::Relaxed);
    }

    /// Since when nothing has kept the peer: neither heard from nor in the view.
    pub(crate) fn quiet_since(&self) -> Instant {
        let latest = self
            .heard
            .load(Ordering::Relaxed)
            .max(self.in_view.load(Ordering::Relaxed));
        self.instant(latest).unwrap_or(self.created)
    }

    /// What to remember of this peer once it is forgotten. Call after its driver ended,
    /// so that nothing is delivered or written after.
    pub(crate) fn positions(&self) -> Positions {
        Positions {
            delivered: self.delivered(),
            sent: lock(&self.window).numbering(),
        }
    }

    /// Now, as a mark for `heard` or `in_view`: nanoseconds after `created`, plus one
    /// (0 means never).
    fn now_mark(&self) -> u64 {
        self.mark(Instant::now())
    }

    fn mark(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.created);
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX - 1) + 1
    }

    fn instant(&self, mark: u64) -> Option<Instant> {
        match mark {
            0 => None,
            since => Some(self.created + Duration::from_nanos(since - 1)),
        }
    }

    pub(crate) fn link(&self) -> Option<LinkInfo> {
        lock(&self.link).clone()
    }

    /// Bytes held for the peer, frames waiting to be written, frames awaiting an ack.
    pub(crate) fn window_snapshot(&self) -> (usize, usize, usize) {
        let window = lock(&self.window);
        (
            window.accounted_bytes(),
            window.queued_frames(),
            window.unacked_frames(),
        )
    }

    /// Hands an accepted connection to the driver (which decides whether to keep it).
    pub(crate) async fn offer(&self, accepted: Accepted) -> Result<(), Accepted> {
        self.incoming.send(accepted).await.map_err(|e| e.0)
    }

    /// Tells the driver to stop. `Abort` also frees the queues at once.
    pub(crate) fn stop(&self, how: Stop) {
        if matches!(how, Stop::Abort(_)) {
            lock(&self.window).clear();
            self.drained.notify_waiters();
        }
        self.stopping.store(true, Ordering::Release);
        self.stop.send_replace(how);
        for wake in &self.writer_wake {
            wake.notify_one();
        }
    }

    fn wants_connection(&self) -> bool {
        self.want_connection.load(Ordering::Acquire) || !lock(&self.window).is_empty()
    }

    fn has_queued(&self) -> bool {
        lock(&self.window).queued_frames() > 0
    }

    fn set_link(&self, info: Option<LinkInfo>) {
        *lock(&self.link) = info;
    }
}

type DialFuture = Pin<Box<dyn Future<Output = Result<handshake::Dialed, DialError>> + Send>>;

enum Link {
    Idle,
    Dialing {
        future: DialFuture,
        conn: Arc<Mutex<Option<Connection>>>,
    },
    Up(Established),
}

impl Link {
    /// Closes whatever connection there is with `code` and waits until its tasks stopped.
    async fn retire(self, code: CloseCode) {
        match self {
            Link::Idle => {}
            Link::Dialing { conn, .. } => {
                if let Some(conn) = lock(&conn).take() {
                    conn.close(code.varint(), code.name().as_bytes());
                }
            }
            Link::Up(established) => established.retire(code).await,
        }
    }
}

enum LinkEvent {
    Dialed(Result<handshake::Dialed, DialError>),
    Closed(quinn::ConnectionError),
}

async fn next_link_event(link: &mut Link) -> LinkEvent {
    match link {
        Link::Idle => std::future::pending().await,
        Link::Dialing { future, .. } => LinkEvent::Dialed(future.await),
        Link::Up(established) => LinkEvent::Closed(established.closed().await),
    }
}

enum Event {
    Stop,
    Incoming(Accepted),
    Link(LinkEvent),
    Wake,
    Retry,
}

/// Owns the peer's connection until the peer is stopped.
pub(crate) async fn drive(
    peer: Arc<Peer>,
    shared: Arc<Shared>,
    mut incoming: mpsc::Receiver<Accepted>,
    mut stop: watch::Receiver<Stop>,
) {
    let mut link = Link::Idle;
    let mut retry_at: Option<Instant> = None;
    let mut failures: u32 = 0;
    loop {
        let how = *stop.borrow_and_update();
        match how {
            Stop::Run => {}
            Stop::Graceful(code) => {
                finish_gracefully(&peer, &shared, link, code).await;
                break;
            }
            Stop::Depart => {
                finish_departure(&peer, &shared, link).await;
                break;
            }
            Stop::Abort(code) => {
                link.retire(code).await;
                break;
            }
        }
        if matches!(link, Link::Idle) && retry_at.is_none() && peer.wants_connection() {
            peer.want_connection.store(false, Ordering::Release);
            link = start_dial(&peer, &shared);
        }
        let far = Instant::now() + Duration::from_secs(3600);
        let event = tokio::select! {
            biased;
            changed = stop.changed() => match changed {
                Ok(()) => Event::Stop,
                // The peer (which holds the sender) is gone: nothing can use this link.
                Err(_) => break,
            },
            Some(accepted) = incoming.recv() => Event::Incoming(accepted),
            event = next_link_event(&mut link) => Event::Link(event),
            () = peer.driver_wake.notified() => Event::Wake,
            () = tokio::time::sleep_until(retry_at.unwrap_or(far)), if retry_at.is_some() => Event::Retry,
        };
        match event {
            Event::Stop | Event::Wake => {}
            Event::Retry => retry_at = None,
            Event::Incoming(accepted) => {
                link = decide(&peer, &shared, link, accepted).await;
                if matches!(link, Link::Up(_)) {
                    failures = 0;
                    retry_at = None;
                }
            }
            Event::Link(LinkEvent::Dialed(Ok(dialed))) => {
                failures = 0;
                link = go_up(&peer, &shared, dialed.into_parts(), true);
            }
            Event::Link(LinkEvent::Dialed(Err(error))) => {
                if let DialError::Connection(closed) = &error {
                    report_removal(&peer, &shared, closed);
                }
                link = Link::Idle;
                failures = failures.saturating_add(1);
                let wait = backoff(failures);
                retry_at = Some(Instant::now() + wait);
                if !matches!(error, DialError::Duplicate) {
                    tracing::debug!(peer = %peer.member(), %error, ?wait, "dial failed");
                    shared.emit(TransportEvent::DialFailed {
                        member: peer.member(),
                        reason: error.to_string(),
                    });
                }
            }
            Event::Link(LinkEvent::Closed(error)) => {
                report_removal(&peer, &shared, &error);
                peer.set_link(None);
                std::mem::replace(&mut link, Link::Idle)
                    .retire(CloseCode::Shutdown)
                    .await;
                tracing::debug!(peer = %peer.member(), %error, "connection ended");
                shared.emit(TransportEvent::PeerDisconnected {
                    member: peer.member(),
                    reason: error.to_string(),
                });
                // Whoever has something to send dials again; give the other side's own dial
                // (if it has one) a head start so the two rarely cross.
                retry_at = Some(Instant::now() + RETRY_MIN);
            }
        }
    }
    peer.set_link(None);
}

/// The peer closed the connection because this member is not in its view: the membership
/// layer is told, since it may have missed the view change that removed it.
fn report_removal(peer: &Peer, shared: &Shared, error: &quinn::ConnectionError) {
    if let quinn::ConnectionError::ApplicationClosed(close) = error
        && close.error_code == CloseCode::RemovedFromView.varint()
    {
        shared.emit(TransportEvent::RemovedBy {
            member: peer.member(),
        });
    }
}

fn backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.clamp(1, 8).saturating_sub(1);
    (RETRY_MIN * factor).min(RETRY_MAX)
}

fn start_dial(peer: &Arc<Peer>, shared: &Arc<Shared>) -> Link {
    let slot = Arc::new(Mutex::new(None));
    let future = Box::pin(handshake::dial(
        shared.clone(),
        peer.member(),
        peer.delivered(),
        slot.clone(),
    ));
    Link::Dialing { future, conn: slot }
}

/// Records the connection as the peer's, then starts the tasks that use it. In that
/// order: once the tasks run, traffic flows, and anyone who sees it must already see the
/// connection (stats, the PeerConnected event).
fn go_up(peer: &Arc<Peer>, shared: &Arc<Shared>, parts: LinkParts, dialed_by_us: bool) -> Link {
    // Before any writer starts: what they write is held to these.
    peer.set_frame_limits(parts.peer_limits);
    // Every earlier connection's writers have stopped (links are retired before this), so
    // the window can be rewound safely.
    if !peer.restart_sending(parts.peer_delivered) {
        let code = CloseCode::ProtocolViolation;
        let reason = format!(
            "claims delivered {:?}, beyond what was sent",
            parts.peer_delivered
        );
        tracing::warn!(peer = %peer.member(), %reason, "closing connection: peer broke the protocol");
        parts.conn.close(code.varint(), code.name().as_bytes());
        shared.emit(TransportEvent::ProtocolViolation {
            member: peer.member(),
            reason: format!("{code}: {reason}"),
        });
        return Link::Idle;
    }
    peer.counters.connections.fetch_add(1, Ordering::Relaxed);
    peer.set_link(Some(LinkInfo {
        conn: parts.conn.clone(),
        dialed_by_us,
    }));
    shared.emit(TransportEvent::PeerConnected {
        member: peer.member(),
        dialed_by_us,
    });
    Link::Up(Established::start(shared, peer, parts, dialed_by_us))
}

/// The simultaneous-dial rule: keep `accepted` unless our own dial wins over it.
///
/// A member dials only when it has no connection to us, so its Hello means either that
/// the two dials crossed or that it lost the connection without its close reaching us
/// (ours then still looks up until the idle timeout). A crossed dial started before the
/// peer answered ours, so its first packet arrived before ours came up; a dial that
/// started after ours was up means the peer lost ours, and takes its place at once.
async fn decide(peer: &Arc<Peer>, shared: &Arc<Shared>, link: Link, accepted: Accepted) -> Link {
    let our_dials_win = shared.local.uuid() < accepted.hello.member.uuid();
    let ours_in_play = match &link {
        Link::Dialing { .. } => true,
        Link::Up(established) => {
            established.dialed_by_us() && accepted.arrived < established.up_since()
        }
        Link::Idle => false,
    };
    if ours_in_play {
        peer.counters.dials_crossed.fetch_add(1, Ordering::Relaxed);
    }
    if our_dials_win && ours_in_play {
        tracing::debug!(peer = %accepted.hello.member, "refusing crossed dial: ours wins");
        let code = CloseCode::DuplicateConnection;
        accepted.conn.close(code.varint(), code.name().as_bytes());
        return link;
    }
    // The peer dialed because it has no connection it trusts: ours (if any) goes.
    link.retire(match ours_in_play {
        true => CloseCode::DuplicateConnection,
        false => CloseCode::Replaced,
    })
    .await;
    peer.set_link(None);
    match handshake::answer(shared, peer, accepted).await {
        Ok(parts) => go_up(peer, shared, parts, false),
        Err(error) => {
            tracing::debug!(peer = %peer.member(), %error, "could not answer Hello");
            Link::Idle
        }
    }
}

/// Waits (until `deadline`) for a dial in progress to complete, so that a stopping peer
/// can still use it; any other link is returned as it is.
async fn finish_dial(
    peer: &Arc<Peer>,
    shared: &Arc<Shared>,
    link: Link,
    deadline: Instant,
) -> Link {
    match link {
        Link::Dialing { mut future, conn } => {
            match tokio::time::timeout_at(deadline, &mut future).await {
                Ok(Ok(dialed)) => go_up(peer, shared, dialed.into_parts(), true),
                _ => Link::Dialing { future, conn },
            }
        }
        other => other,
    }
}

/// Flushes the queues over the current connection (dialing first if one is in progress),
/// then closes it with `code`. Bounded by the shutdown timeout.
async fn finish_gracefully(peer: &Arc<Peer>, shared: &Arc<Shared>, link: Link, code: CloseCode) {
    let deadline = Instant::now() + shared.config.shutdown_timeout;
    let link = finish_dial(peer, shared, link, deadline).await;
    match link {
        Link::Up(mut established) => {
            if peer.has_queued() || established.has_writers() {
                let _ = tokio::time::timeout_at(deadline, established.flush()).await;
            }
            established.retire(code).await;
        }
        other => other.retire(code).await,
    }
    peer.set_link(None);
}

/// Lets the current connection (dialing one if something is queued) carry what is queued
/// until the peer acknowledges all of it, then closes it with REMOVED_FROM_VIEW. Unlike a
/// graceful shutdown there is no Goodbye: the peer learns from the close code that it is no
/// longer wanted. Bounded by the shutdown timeout.
async fn finish_departure(peer: &Arc<Peer>, shared: &Arc<Shared>, link: Link) {
    let deadline = Instant::now() + shared.config.shutdown_timeout;
    let link = match link {
        Link::Idle if !lock(&peer.window).is_empty() => start_dial(peer, shared),
        other => other,
    };
    let link = finish_dial(peer, shared, link, deadline).await;
    if let Link::Up(established) = &link {
        tokio::select! {
            _ = established.closed() => {}
            () = peer.until_drained() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
    link.retire(CloseCode::RemovedFromView).await;
    peer.set_link(None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::MemberKind;
    use crate::quic::receive::Received;

    #[test]
    fn receive_positions_move_only_on_commit() {
        let member = MemberId::new(
            "p",
            "127.0.0.1:1".parse().expect("literal"),
            MemberKind::Member,
        );
        let (peer, _incoming, _stop) = Peer::new(member, 1 << 20, usize::MAX, None);
        assert_eq!(
            peer.receive_cursor(Priority::High).accept(1),
            Received::Next
        );
        // Not committed yet (the subscriber does not have it): a resent copy is still next.
        assert_eq!(
            peer.receive_cursor(Priority::High).accept(1),
            Received::Next
        );
        peer.commit(Priority::High, 1, 0);
        assert_eq!(
            peer.receive_cursor(Priority::High).accept(1),
            Received::Duplicate
        );
        peer.commit(Priority::Normal, 1, 0);
        assert_eq!(
            peer.receive_cursor(Priority::High).accept(4),
            Received::Gap { expected: 2 }
        );
        assert_eq!(peer.delivered(), [0, 1, 1, 0]);
    }

    #[test]
    fn backoff_grows_to_its_cap() {
        assert_eq!(backoff(1), RETRY_MIN);
        assert_eq!(backoff(2), RETRY_MIN * 2);
        assert_eq!(backoff(30), RETRY_MAX);
    }
}
