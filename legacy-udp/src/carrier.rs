//! [`LegacyCarrier`]: the [`Carrier`] over the legacy protocol, a thin tokio shell around
//! [`Core`], behind a [`Messenger`].
//!
//! ```text
//! Carrier::push ─► Core::push (under the lock) ─► wake the driver
//! driver task: received datagram ─► Packet::decode (garbage counted) ─► Core::on_packet
//!                 ─► complete messages ─► per-priority delivery queue
//!              woken or timer ─► Core::poll_transmit ─► LegacySender::send
//! delivery task per priority ─► Dispatcher::deliver (waits for a slow subscriber; while
//!   its queue is over max_pending_delivery_bytes, new data of that priority goes
//!   unacknowledged and is resent later)
//! Carrier::push_datagram ─► a Datagram packet straight out; received ─► Dispatcher::try_deliver
//! Carrier::ask / serve ─► one-shot exchanges (see `exchange`)
//! retire ─► closed for good: queues dropped, every packet answered with Refused (at most
//!           once per REFUSAL_INTERVAL per address)
//! ```
//!
//! The socket is the member's one UDP port: bound alone ([`LegacyCarrier::bind`], an old
//! member) or shared with QUIC ([`LegacyCarrier::beside`], the legacy side of a bridge,
//! which shares the QUIC carrier's identity, and the messenger's subscriptions and events).

use std::any::Any;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
#[cfg(doc)]
use cohort_transport::Messenger;
use cohort_transport::carrier::{Carrier, CarrierFuture, Hub, Pushed, QueryHandler};
use cohort_transport::dispatch::{Inbound, Routed};
use cohort_transport::quic::QuicCarrier;
use cohort_transport::socket::{
    AsyncUdpSocket, LegacyPort, LegacySender, SocketFaults, SocketStats,
};
use cohort_transport::{
    Delivery, Identity, MemberId, Priority, ProtocolVersion, QueryError, SendError, Tag, View,
};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::LegacyConfig;
use crate::core::{Core, Delivered};
use crate::exchange::Exchanges;
use crate::packet::{DatagramHeader, ExchangeHeader, Packet};
use crate::stream::PushError;

/// Datagrams handled per driver wake-up before transmitting.
const RECEIVE_BATCH: usize = 64;
/// How often an unanswered query is sent again.
const QUERY_RESEND: Duration = Duration::from_millis(100);
/// A retired legacy side tells each address at most this often that it is closed.
const REFUSAL_INTERVAL: Duration = Duration::from_millis(100);
/// Addresses remembered for the refusal interval; past this many the memory starts over.
const REFUSAL_MEMORY: usize = 1024;

/// Why a legacy messenger could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LegacyBindError {
    /// A setting is out of range.
    #[error(transparent)]
    Config(#[from] cohort_transport::InvalidConfig),
    /// The UDP socket could not be bound.
    #[error("could not bind UDP socket {addr}: {source}")]
    Socket {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Not called from within a Tokio runtime.
    #[error("the legacy carrier must be started from within a Tokio runtime")]
    NoRuntime,
}

/// Counters of a legacy carrier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LegacyStats {
    /// Datagrams on the legacy share of the port that did not decode: dropped.
    pub malformed: u64,
    /// Packets meant for another member (a previous process at this address): dropped.
    pub for_someone_else: u64,
    /// Packets whose claimed sender's address is not where they came from: dropped.
    pub address_mismatch: u64,
    /// Packets from members that left the view: dropped.
    pub from_departed: u64,
    /// Packets refused from senders in no view (joiners, strangers): anything but cohort's
    /// own protocols on the Control priority, or more strangers than are kept at once.
    /// Dropped unacknowledged.
    pub from_strangers: u64,
    /// Fragments received again (an acknowledgement was lost): dropped, acknowledged again.
    pub duplicates: u64,
    /// Messages over `max_message_bytes`: skipped.
    pub oversized: u64,
    /// Times a message had to wait for the memory of messages being joined
    /// (`max_reassembly_bytes`, or its sender's share of it): its first fragment was held
    /// back unacknowledged until others were complete. Nothing is skipped for it.
    pub reassembly_over_budget: u64,
    /// Fragments sent again after their timer ran out.
    pub resent: u64,
    /// Messages received and delivered to subscriptions (what a member sends itself goes
    /// through the messenger's own lanes, not through this carrier).
    pub delivered: u64,
    /// Packets answered with a refusal after the legacy side was retired.
    pub refused: u64,
}

struct Inner {
    local: MemberId,
    config: LegacyConfig,
    sender: LegacySender,
    core: Mutex<Core>,
    wake: Notify,
    /// Woken by the driver whenever, after a step, everything sent is acknowledged.
    flushed: Notify,
    hub: Hub,
    closing: AtomicBool,
    deliveries: [mpsc::UnboundedSender<Delivered>; 4],
    pending_delivery: [AtomicUsize; 4],
    malformed: AtomicU64,
    delivered: AtomicU64,
    exchanges: Exchanges,
    /// Set once the legacy side is closed for good: why.
    retired: RwLock<Option<String>>,
    refusals: Mutex<std::collections::HashMap<SocketAddr, std::time::Instant>>,
    refused: AtomicU64,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Inner {
    fn core(&self) -> std::sync::MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn abort(&self) {
        self.closing.store(true, Ordering::Release);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            task.abort();
        }
    }
}

/// The carrier over the legacy UDP protocol (version 1). Cheap to clone; the last clone
/// dropped stops it.
#[derive(Clone)]
pub struct LegacyCarrier {
    inner: Arc<Inner>,
    _stop_on_drop: Arc<StopOnDrop>,
}

struct StopOnDrop(Arc<Inner>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl LegacyCarrier {
    /// Binds a UDP socket for the legacy protocol alone (an old member) as the member
    /// `identity` names, tuned by `config`, delivering to `hub`, and starts. Its member id
    /// announces protocol [`ProtocolVersion::LEGACY`] whatever `identity.version` says:
    /// that is what a member speaking this protocol alone is. Must be called from within
    /// a Tokio runtime.
    pub fn bind(
        identity: &Identity,
        config: LegacyConfig,
        hub: &Hub,
    ) -> Result<Self, LegacyBindError> {
        identity.validate()?;
        config.validate()?;
        tokio::runtime::Handle::try_current().map_err(|_| LegacyBindError::NoRuntime)?;
        let socket_error = |source| LegacyBindError::Socket {
            addr: identity.bind,
            source,
        };
        let port = LegacyPort::bind(identity.bind, config.socket_buffer_bytes.get())
            .map_err(socket_error)?;
        Self::on_port(identity, config, port, hub)
    }

    /// Like [`LegacyCarrier::bind`] on a socket the caller provides (simulated networks);
    /// `identity.bind` is ignored.
    pub fn bind_with_socket(
        identity: &Identity,
        config: LegacyConfig,
        udp: Arc<dyn AsyncUdpSocket>,
        hub: &Hub,
    ) -> Result<Self, LegacyBindError> {
        identity.validate()?;
        config.validate()?;
        tokio::runtime::Handle::try_current().map_err(|_| LegacyBindError::NoRuntime)?;
        let port = LegacyPort::with_socket(udp).map_err(|source| LegacyBindError::Socket {
            addr: identity.bind,
            source,
        })?;
        Self::on_port(identity, config, port, hub)
    }

    /// Starts as the member `identity` names on `port`, bound alone.
    fn on_port(
        identity: &Identity,
        config: LegacyConfig,
        port: LegacyPort,
        hub: &Hub,
    ) -> Result<Self, LegacyBindError> {
        let socket_error = |source| LegacyBindError::Socket {
            addr: identity.bind,
            source,
        };
        let bound = port.sender().local_addr().map_err(socket_error)?;
        let local = identity
            .member_id(bound)
            .with_version(ProtocolVersion::LEGACY);
        Ok(Self::start(local, config, port, hub.clone()))
    }

    /// Starts on the legacy share of `quic`'s socket, as the same member (the legacy side
    /// of a bridge), tuned by `config`, delivering to `hub`. Fails if the legacy share was
    /// taken.
    pub fn beside(
        quic: &QuicCarrier,
        config: LegacyConfig,
        hub: &Hub,
    ) -> Result<Self, LegacyBindError> {
        config.validate()?;
        tokio::runtime::Handle::try_current().map_err(|_| LegacyBindError::NoRuntime)?;
        let port = quic.legacy_port().ok_or_else(|| LegacyBindError::Socket {
            addr: quic.local_addr(),
            source: std::io::Error::other("the socket's legacy share is already in use"),
        })?;
        Ok(Self::start(
            quic.local_member().clone(),
            config,
            port,
            hub.clone(),
        ))
    }

    fn start(local: MemberId, config: LegacyConfig, mut port: LegacyPort, hub: Hub) -> Self {
        let sender = port.sender();
        // From the uuid, so that a process restarted at the same address does not take
        // answers meant for its previous incarnation.
        let first_query_id = local.uuid().as_u64_pair().0;
        let mut receivers = Vec::new();
        let deliveries = std::array::from_fn(|_| {
            let (tx, rx) = mpsc::unbounded_channel();
            receivers.push(rx);
            tx
        });
        let inner = Arc::new(Inner {
            core: Mutex::new(Core::new(local.clone(), config.clone())),
            local,
            config,
            sender,
            wake: Notify::new(),
            flushed: Notify::new(),
            hub,
            closing: AtomicBool::new(false),
            deliveries,
            pending_delivery: Default::default(),
            malformed: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            exchanges: Exchanges::new(first_query_id),
            retired: RwLock::new(None),
            refusals: Mutex::new(std::collections::HashMap::new()),
            refused: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
        });
        let receiver = port.take_receiver();
        let mut tasks = vec![tokio::spawn(drive(inner.clone(), port))];
        tasks.extend(receiver);
        for (priority, rx) in Priority::ALL.into_iter().zip(receivers) {
            tasks.push(tokio::spawn(deliver(inner.clone(), priority, rx)));
        }
        *inner.tasks.lock().unwrap_or_else(PoisonError::into_inner) = tasks;
        tracing::info!(member = ?inner.local, "legacy carrier listening");
        LegacyCarrier {
            _stop_on_drop: Arc::new(StopOnDrop(inner.clone())),
            inner,
        }
    }

    /// Asks whoever listens at `address` the encoded `query` under `tag` over the legacy
    /// protocol, resending it until answered or `limit` has passed.
    async fn ask_within(
        &self,
        address: SocketAddr,
        tag: Tag,
        query: Bytes,
        limit: Duration,
    ) -> Result<Bytes, QueryError> {
        if self.inner.closing.load(Ordering::Acquire) || self.is_retired() {
            return Err(QueryError::Shutdown);
        }
        let (id, mut answer) = self.inner.exchanges.start(address);
        // Forgotten however this ends, also when the caller stops waiting (a bridge that
        // got its answer over QUIC drops this future).
        let _pending = PendingQuery {
            inner: &self.inner,
            id,
        };
        let header = ExchangeHeader { id, tag: tag.0 };
        let packet = Packet::Query(header, query).encode();
        let deadline = Instant::now() + limit;
        loop {
            if let Err(error) = self.inner.sender.send(address, &packet) {
                tracing::debug!(%error, %address, "legacy query not sent");
            }
            let resend = (Instant::now() + QUERY_RESEND).min(deadline);
            tokio::select! {
                answered = &mut answer => {
                    return answered.unwrap_or(Err(QueryError::Shutdown));
                }
                () = tokio::time::sleep_until(resend) => {
                    if Instant::now() >= deadline {
                        return Err(QueryError::Timeout(address));
                    }
                }
            }
        }
    }

    /// True when every message sent has been acknowledged.
    pub fn is_flushed(&self) -> bool {
        self.inner.core().is_idle()
    }

    /// Waits until every message sent has been acknowledged, at most the configured
    /// `shutdown_timeout` (resending meanwhile, as always); true if it was.
    async fn flush_within_timeout(&self) -> bool {
        let wait = async {
            loop {
                // Registered before the check, so that the driver's step between the two
                // is not missed.
                let flushed = self.inner.flushed.notified();
                let mut flushed = std::pin::pin!(flushed);
                flushed.as_mut().enable();
                if self.is_flushed() {
                    return;
                }
                flushed.await;
            }
        };
        tokio::time::timeout(self.inner.config.shutdown_timeout, wait)
            .await
            .is_ok()
    }

    /// The protocol's counters.
    pub fn stats(&self) -> LegacyStats {
        let c = self.inner.core().counters;
        LegacyStats {
            malformed: self.inner.malformed.load(Ordering::Relaxed),
            for_someone_else: c.for_someone_else,
            address_mismatch: c.address_mismatch,
            from_departed: c.from_departed,
            from_strangers: c.from_strangers,
            duplicates: c.duplicates,
            oversized: c.oversized,
            reassembly_over_budget: c.reassembly_over_budget,
            resent: c.resent,
            delivered: self.inner.delivered.load(Ordering::Relaxed),
            refused: self.inner.refused.load(Ordering::Relaxed),
        }
    }

    async fn shutdown_gracefully(&self) {
        if self.inner.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        // Resent until everything is acknowledged, bounded by the shutdown timeout.
        if !self.flush_within_timeout().await {
            tracing::debug!("legacy messages still unacknowledged at shutdown");
        }
        // Every task stopped and waited for: what they held (the socket among it) is gone
        // when this returns, so a process restarted in its place can bind the port.
        let tasks = std::mem::take(
            &mut *self
                .inner
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        self.inner.abort();
        tracing::info!(member = ?self.inner.local, "legacy carrier shut down");
    }
}

impl Carrier for LegacyCarrier {
    fn local_member(&self) -> &MemberId {
        &self.inner.local
    }

    /// Members of protocol v1; alone, this carrier reaches every member (the members of
    /// later versions speak it through their bridges).
    fn speaks(&self, version: ProtocolVersion) -> bool {
        version < ProtocolVersion::QUIC
    }

    /// Reliable or not, a message is at most `max_message_bytes`.
    fn check_size(&self, tag: Tag, len: usize, _: Option<Priority>) -> Result<(), SendError> {
        if self.inner.closing.load(Ordering::Acquire) || self.is_retired() {
            return Err(SendError::Shutdown);
        }
        let max = self.inner.config.max_message_bytes.get();
        match len > max {
            true => Err(SendError::TooLarge {
                tag,
                size: len,
                max,
            }),
            false => Ok(()),
        }
    }

    fn install_view(&self, old: &View, new: &View) {
        self.inner.core().install_view(old, new, now());
        self.inner.wake.notify_one();
    }

    /// Until then, a member not in the installed view is a stranger, limited to cohort's
    /// own protocol messages on Control.
    fn expect_view(&self, view: &View) {
        self.inner.core().expect_view(view);
    }

    fn push(
        &self,
        recipients: &[&MemberId],
        priority: Priority,
        tag: Tag,
        payload: Bytes,
        report: &mut dyn FnMut(&MemberId, Pushed),
    ) {
        {
            let now = now();
            let mut core = self.inner.core();
            for &to in recipients {
                let pushed = match core.push(to, priority, tag.0, payload.clone(), now) {
                    Ok(true) => Pushed::Accepted,
                    Ok(false) => Pushed::NotInView,
                    Err(PushError::Full { queued, .. }) => Pushed::Backlogged {
                        queued_bytes: queued,
                        first_of_streak: core.note_backlogged(to),
                    },
                    Err(PushError::TooLarge) => Pushed::TooLarge,
                };
                report(to, pushed);
            }
        }
        self.inner.wake.notify_one();
    }

    fn push_datagram(
        &self,
        recipients: &[&MemberId],
        tag: Tag,
        payload: &Bytes,
        _: &mut dyn FnMut(&MemberId, Pushed),
    ) {
        let header = DatagramHeader {
            sender: self.inner.local.clone(),
            tag: tag.0,
        };
        let packet = Packet::Datagram(header, payload.clone()).encode();
        for &to in recipients {
            if let Err(error) = self.inner.sender.send(to.address(), &packet) {
                tracing::debug!(%error, ?to, "legacy datagram not sent");
            }
        }
    }

    fn serve(&self, tag: Tag, handler: QueryHandler) {
        self.inner.exchanges.serve(tag, handler);
    }

    fn ask(
        &self,
        address: SocketAddr,
        tag: Tag,
        query: Bytes,
        limit: Duration,
    ) -> CarrierFuture<'_, Result<Bytes, QueryError>> {
        Box::pin(self.ask_within(address, tag, query, limit))
    }

    fn last_heard(&self, member: &MemberId) -> Option<Instant> {
        self.inner.core().last_heard(member).map(Instant::from_std)
    }

    fn faults(&self) -> &SocketFaults {
        self.inner.sender.faults()
    }

    fn socket_stats(&self) -> SocketStats {
        self.inner.sender.stats()
    }

    fn flush(&self) -> CarrierFuture<'_, bool> {
        Box::pin(self.flush_within_timeout())
    }

    /// Whatever is queued is dropped, nothing more is sent or delivered, and every legacy
    /// packet from now on is answered with a refusal that gives `reason`, so an old member
    /// learns why it is not heard.
    fn retire(&self, reason: &str) {
        {
            let mut retired = self
                .inner
                .retired
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if retired.is_some() {
                return;
            }
            *retired = Some(reason.to_owned());
        }
        *self.inner.core() = Core::new(self.inner.local.clone(), self.inner.config.clone());
        tracing::info!(member = ?self.inner.local, reason, "legacy protocol closed");
    }

    fn is_retired(&self) -> bool {
        self.inner
            .retired
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Nothing more goes out and every task ends.
    fn crash(&self) {
        self.faults().isolate();
        self.inner.abort();
    }

    fn shutdown(&self) -> CarrierFuture<'_, ()> {
        Box::pin(self.shutdown_gracefully())
    }

    fn abort(&self) {
        self.inner.abort();
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The one clock of this shell: tokio's, in the `std` form the sans-IO core takes, so that
/// the core's deadlines and the driver's timers agree also where tokio's time is simulated
/// (paused, or turmoil's), which `std::time::Instant::now` would not follow.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

fn deliver_datagram(inner: &Inner, from: MemberId, tag: Tag, payload: Bytes) {
    let inbound = Inbound {
        from,
        delivery: Delivery::Datagram,
        payload,
    };
    inner.hub.dispatcher.try_deliver(tag, inbound);
}

/// The driver: receives, hands packets to the core, and sends what it says is due.
async fn drive(inner: Arc<Inner>, mut port: LegacyPort) {
    let mut transmit = Vec::new();
    let mut delivered = Vec::new();
    let far = Duration::from_secs(3600);
    loop {
        let timeout = inner.core().poll_timeout();
        let sleep = match timeout {
            Some(at) => tokio::time::sleep_until(Instant::from_std(at)),
            None => tokio::time::sleep(far),
        };
        tokio::select! {
            received = port.recv() => {
                let Some(first) = received else {
                    return;
                };
                let mut batch = vec![first];
                while batch.len() < RECEIVE_BATCH {
                    match port.try_recv() {
                        Some(next) => batch.push(next),
                        None => break,
                    }
                }
                receive(&inner, batch, &mut delivered);
            }
            () = inner.wake.notified() => {}
            () = sleep => {}
        }
        let now = now();
        let retired = inner
            .retired
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        // Read under the step's own lock: whether everything sent is acknowledged now.
        let flushed = {
            let mut core = inner.core();
            if !retired {
                core.handle_timeout(now);
                core.poll_transmit(now, &mut transmit);
            }
            core.is_idle()
        };
        for (to, packet) in transmit.drain(..) {
            if let Err(error) = inner.sender.send(to, &packet.encode()) {
                tracing::debug!(%error, %to, "legacy packet not sent");
            }
        }
        if flushed {
            inner.flushed.notify_waiters();
        }
        for message in delivered.drain(..) {
            let i = message.priority.index();
            let size = message.payload.len();
            inner.pending_delivery[i].fetch_add(size, Ordering::AcqRel);
            if inner.deliveries[i].send(message).is_err() {
                inner.pending_delivery[i].fetch_sub(size, Ordering::AcqRel);
            }
        }
    }
}

fn receive(inner: &Inner, batch: Vec<(SocketAddr, Bytes)>, delivered: &mut Vec<Delivered>) {
    let now = now();
    let max_pending = inner.config.max_pending_delivery_bytes.get();
    let accept = |priority: Priority| {
        inner.pending_delivery[priority.index()].load(Ordering::Acquire) < max_pending
    };
    let retired = inner
        .retired
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut queries = Vec::new();
    let mut core = inner.core();
    for (from, datagram) in batch {
        let packet = match Packet::decode(&datagram) {
            Ok(packet) => packet,
            Err(error) => {
                inner.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, %error, "dropped a malformed legacy packet");
                continue;
            }
        };
        if let Some(reason) = &retired {
            if !matches!(packet, Packet::Refused(_)) {
                refuse(inner, from, reason);
            }
            continue;
        }
        match packet {
            Packet::Datagram(header, payload) => {
                if core.datagram_from(&header.sender, from, now) {
                    deliver_datagram(inner, header.sender, Tag(header.tag), payload);
                }
            }
            Packet::Data(..) | Packet::Ack(_) => {
                core.on_packet(from, packet, now, accept, delivered)
            }
            // Answered below, without the core lock: handlers are application code.
            Packet::Query(header, payload) => queries.push((from, header, payload)),
            Packet::Answer(header, payload) => inner.exchanges.answered(header.id, from, payload),
            Packet::Refused(reason) => {
                tracing::info!(%from, %reason, "refused by a member whose legacy side is closed");
                inner.exchanges.refused(from, &reason);
            }
        }
    }
    drop(core);
    for (from, header, payload) in queries {
        if let Some(answer) = inner.exchanges.answer(header.tag, &payload, from) {
            let packet = Packet::Answer(header, answer).encode();
            if let Err(error) = inner.sender.send(from, &packet) {
                tracing::debug!(%error, %from, "legacy answer not sent");
            }
        }
    }
}

/// Tells `from` that this legacy side is closed, at most once per interval per address.
fn refuse(inner: &Inner, from: SocketAddr, reason: &str) {
    let now = now();
    {
        let mut refusals = inner
            .refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if refusals
            .get(&from)
            .is_some_and(|at| now.saturating_duration_since(*at) < REFUSAL_INTERVAL)
        {
            return;
        }
        if refusals.len() >= REFUSAL_MEMORY {
            refusals.clear();
        }
        refusals.insert(from, now);
    }
    inner.refused.fetch_add(1, Ordering::Relaxed);
    let packet = Packet::Refused(reason.to_owned()).encode();
    if let Err(error) = inner.sender.send(from, &packet) {
        tracing::debug!(%error, %from, "legacy refusal not sent");
    }
}

/// Forgets a pending query when dropped.
struct PendingQuery<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for PendingQuery<'_> {
    fn drop(&mut self) {
        self.inner.exchanges.cancel(self.id);
    }
}

/// Hands one priority's complete messages to their subscribers, in order, waiting for a
/// subscriber that is behind.
async fn deliver(
    inner: Arc<Inner>,
    priority: Priority,
    mut queue: mpsc::UnboundedReceiver<Delivered>,
) {
    while let Some(message) = queue.recv().await {
        let size = message.payload.len();
        let inbound = Inbound {
            from: message.from,
            delivery: Delivery::Reliable(priority),
            payload: message.payload,
        };
        let routed = inner
            .hub
            .dispatcher
            .deliver(Tag(message.tag), inbound)
            .await;
        if routed == Routed::Delivered {
            inner.delivered.fetch_add(1, Ordering::Relaxed);
        }
        inner.pending_delivery[priority.index()].fetch_sub(size, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for LegacyCarrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyCarrier")
            .field("member", &self.inner.local)
            .finish()
    }
}
