//! [`LegacyMessenger`]: the [`Messenger`] over the legacy protocol, a thin tokio shell
//! around [`Core`].
//!
//! ```text
//! send ─► postcard encode ─► view check ─► Core::push (under the lock) ─► wake the driver
//! driver task: received datagram ─► Packet::decode (garbage counted) ─► Core::on_packet
//!                 ─► complete messages ─► per-priority delivery queue
//!              woken or timer ─► Core::poll_transmit ─► LegacySender::send
//! delivery task per priority ─► Dispatcher::deliver (waits for a slow subscriber; while
//!   its queue is over max_pending_delivery_bytes, new data of that priority goes
//!   unacknowledged and is resent later)
//! send_datagram ─► a Datagram packet straight out; received ─► Dispatcher::try_deliver
//! query_within / serve ─► one-shot exchanges (see `exchange`)
//! retire ─► closed for good: queues dropped, every packet answered with Refused (at most
//!           once per REFUSAL_INTERVAL per address)
//! ```
//!
//! The socket is the member's one UDP port: bound alone ([`LegacyMessenger::bind`], an old
//! member) or shared with QUIC ([`LegacyMessenger::beside`], the legacy side of a bridge,
//! which shares the QUIC messenger's identity, subscriptions and events).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use cohort_transport::dispatch::{DispatchStats, Dispatcher, Inbound, Routed};
use cohort_transport::socket::{LegacyPort, LegacySender, SocketFaults, SocketStats};
use cohort_transport::wire;
use cohort_transport::{
    Delivery, Identity, MemberId, Message, Messenger, Priority, ProtocolVersion, Query, QueryError,
    QuicMessenger, SendError, SendOutcome, SubscribeError, Subscription, Tag, TransportEvent, View,
};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::LegacyConfig;
use crate::core::{Core, Delivered};
use crate::exchange::{self, Exchanges};
use crate::packet::{DatagramHeader, ExchangeHeader, Packet};
use crate::stream::PushError;

/// Transport events buffered for slow subscribers.
const EVENT_CAPACITY: usize = 1024;
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
    #[error("LegacyMessenger must be started from within a Tokio runtime")]
    NoRuntime,
}

/// Counters of a legacy messenger.
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
    /// Messages delivered to subscriptions.
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
    dispatcher: Arc<Dispatcher>,
    events: broadcast::Sender<TransportEvent>,
    view: RwLock<View>,
    closing: AtomicBool,
    deliveries: [mpsc::UnboundedSender<Delivered>; 4],
    pending_delivery: [AtomicUsize; 4],
    malformed: AtomicU64,
    delivered: AtomicU64,
    exchanges: Exchanges,
    /// False when the dispatcher belongs to a QUIC messenger beside this one.
    owns_dispatcher: bool,
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
        if self.owns_dispatcher {
            self.dispatcher.close();
        }
    }
}

/// A cluster messenger over the legacy UDP protocol (version 1). Cheap to clone; the last
/// clone dropped stops it.
#[derive(Clone)]
pub struct LegacyMessenger {
    inner: Arc<Inner>,
    _stop_on_drop: Arc<StopOnDrop>,
}

struct StopOnDrop(Arc<Inner>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl LegacyMessenger {
    /// Binds a UDP socket for the legacy protocol alone (an old member) as the member
    /// `identity` names, tuned by `config`, and starts. Its member id announces protocol
    /// [`ProtocolVersion::LEGACY`] whatever `identity.version` says: that is what a member
    /// speaking this protocol alone is. Must be called from within a Tokio runtime.
    pub fn bind(identity: &Identity, config: LegacyConfig) -> Result<Self, LegacyBindError> {
        identity.validate()?;
        config.validate()?;
        tokio::runtime::Handle::try_current().map_err(|_| LegacyBindError::NoRuntime)?;
        let socket_error = |source| LegacyBindError::Socket {
            addr: identity.bind,
            source,
        };
        let port = LegacyPort::bind(identity.bind, config.socket_buffer_bytes.get())
            .map_err(socket_error)?;
        let bound = port.sender().local_addr().map_err(socket_error)?;
        let local = identity
            .member_id(bound)
            .with_version(ProtocolVersion::LEGACY);
        let dispatcher = Dispatcher::new(config.subscription_capacity.get());
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Ok(Self::start(local, config, port, dispatcher, true, events))
    }

    /// Starts on the legacy share of `quic`'s socket, as the same member: its identity, its
    /// subscriptions and its transport events (the legacy side of a bridge), tuned by
    /// `config`. Fails if the legacy share was taken.
    pub fn beside(quic: &QuicMessenger, config: LegacyConfig) -> Result<Self, LegacyBindError> {
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
            // The dispatcher is QUIC's to close.
            quic.dispatcher(),
            false,
            quic.event_sender(),
        ))
    }

    fn start(
        local: MemberId,
        config: LegacyConfig,
        mut port: LegacyPort,
        dispatcher: Arc<Dispatcher>,
        owns_dispatcher: bool,
        events: broadcast::Sender<TransportEvent>,
    ) -> Self {
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
            dispatcher,
            events,
            view: RwLock::new(View::empty()),
            closing: AtomicBool::new(false),
            deliveries,
            pending_delivery: Default::default(),
            malformed: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            exchanges: Exchanges::new(first_query_id),
            owns_dispatcher,
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
        tracing::info!(member = ?inner.local, "legacy messenger listening");
        LegacyMessenger {
            _stop_on_drop: Arc::new(StopOnDrop(inner.clone())),
            inner,
        }
    }

    /// Answers queries of type `Q` from now on with `handler`, which gets the query and the
    /// asker's address and must not block.
    pub fn serve<Q: Query>(
        &self,
        handler: impl Fn(Q, SocketAddr) -> Q::Answer + Send + Sync + 'static,
    ) {
        self.inner.exchanges.serve(handler);
    }

    /// Asks whoever listens at `address` one question over the legacy protocol, resending
    /// it until answered or `limit` has passed.
    pub async fn query_within<Q: Query>(
        &self,
        address: SocketAddr,
        query: &Q,
        limit: Duration,
    ) -> Result<Q::Answer, QueryError> {
        if self.inner.closing.load(Ordering::Acquire) || self.is_retired() {
            return Err(QueryError::Shutdown);
        }
        let payload = postcard::to_allocvec(query).map_err(QueryError::Encode)?;
        let (id, mut answer) = self.inner.exchanges.start(address);
        // Forgotten however this ends, also when the caller stops waiting (a bridge that
        // got its answer over QUIC drops this future).
        let _pending = PendingQuery {
            inner: &self.inner,
            id,
        };
        let header = ExchangeHeader { id, tag: Q::TAG.0 };
        let packet = Packet::Query(header, Bytes::from(payload)).encode();
        let deadline = Instant::now() + limit;
        let result = loop {
            if let Err(error) = self.inner.sender.send(address, &packet) {
                tracing::debug!(%error, %address, "legacy query not sent");
            }
            let resend = (Instant::now() + QUERY_RESEND).min(deadline);
            tokio::select! {
                answered = &mut answer => {
                    break answered.unwrap_or(Err(QueryError::Shutdown));
                }
                () = tokio::time::sleep_until(resend) => {
                    if Instant::now() >= deadline {
                        break Err(QueryError::Timeout(address));
                    }
                }
            }
        };
        exchange::decode_answer::<Q>(address, &result?)
    }

    /// Closes the legacy side for good: whatever is queued is dropped, nothing more is
    /// sent or delivered, and every legacy packet from now on is answered with a refusal
    /// that gives `reason`, so an old member learns why it is not heard.
    pub fn retire(&self, reason: &str) {
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

    /// Stops as the crash of this member's process would (for tests): nothing more goes
    /// out and every task ends.
    pub fn crash(&self) {
        self.faults().isolate();
        self.inner.abort();
    }

    /// A view being prepared (not yet installed): its members may send application
    /// messages from now on, as on QUIC (`QuicMessenger::expect_view`). Installing a view
    /// with this id or a later one replaces it. Until then, a member not in the installed
    /// view is a stranger, limited to cohort's own protocol messages on Control.
    pub fn expect_view(&self, view: &View) {
        self.inner.core().expect_view(view);
    }

    /// True once [`LegacyMessenger::retire`] was called.
    pub fn is_retired(&self) -> bool {
        self.inner
            .retired
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// True when every message sent has been acknowledged.
    pub fn is_flushed(&self) -> bool {
        self.inner.core().is_idle()
    }

    /// Waits until every message sent has been acknowledged, at most the configured
    /// `shutdown_timeout` (resending meanwhile, as always); true if it was.
    pub async fn flush(&self) -> bool {
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

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local.address()
    }

    /// The socket's fault rules (for tests).
    pub fn faults(&self) -> &SocketFaults {
        self.inner.sender.faults()
    }

    /// The socket's counters.
    pub fn socket_stats(&self) -> SocketStats {
        self.inner.sender.stats()
    }

    /// Counters of the dispatcher behind this messenger's subscriptions (shared with the
    /// QUIC messenger of a bridge).
    pub fn dispatch_stats(&self) -> DispatchStats {
        self.inner.dispatcher.stats()
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

    /// When anything last arrived from `member`.
    pub fn last_heard(&self, member: &MemberId) -> Option<Instant> {
        self.inner.core().last_heard(member).map(Instant::from_std)
    }

    /// Fails as `send` would for a message this side cannot take (closed, retired, not
    /// encodable, or over `max_message_bytes`), without queuing anything.
    pub fn check_size<M: Message>(&self, message: &M) -> Result<(), SendError> {
        self.encode(message).map(|_| ())
    }

    fn encode<M: Message>(&self, message: &M) -> Result<Bytes, SendError> {
        if self.inner.closing.load(Ordering::Acquire) || self.is_retired() {
            return Err(SendError::Shutdown);
        }
        let payload = wire::encode_payload(message).map_err(|source| SendError::Encode {
            tag: M::TAG,
            source,
        })?;
        if payload.len() > self.inner.config.max_message_bytes.get() {
            return Err(SendError::TooLarge {
                tag: M::TAG,
                size: payload.len(),
                max: self.inner.config.max_message_bytes.get(),
            });
        }
        Ok(payload)
    }

    /// Queues `payload` for each recipient that `admits`; the others are not in the view.
    fn queue_for(
        &self,
        tag: Tag,
        payload: Bytes,
        priority: Priority,
        recipients: &[MemberId],
        admits: impl Fn(&MemberId) -> bool,
    ) -> SendOutcome {
        let mut outcome = SendOutcome::default();
        let mut backlogged = Vec::new();
        {
            let now = std::time::Instant::now();
            let mut core = self.inner.core();
            for to in recipients {
                if *to == self.inner.local {
                    self.deliver_locally(priority, tag, payload.clone());
                    continue;
                }
                if !admits(to) {
                    outcome.not_in_view.push(to.clone());
                    continue;
                }
                match core.push(to, priority, tag.0, payload.clone(), now) {
                    Ok(true) => {}
                    Ok(false) => outcome.not_in_view.push(to.clone()),
                    Err(PushError::Full { queued, .. }) => {
                        outcome.backlogged.push(to.clone());
                        // Raised once per streak, as the QUIC messenger does: each event
                        // becomes a suspicion above.
                        if core.note_backlogged(to) {
                            backlogged.push((to.clone(), queued));
                        }
                    }
                    Err(PushError::TooLarge) => outcome.backlogged.push(to.clone()),
                }
            }
        }
        for (member, queued_bytes) in backlogged {
            tracing::warn!(%member, queued_bytes, "destination backlogged");
            let _ = self.inner.events.send(TransportEvent::Backlogged {
                member,
                queued_bytes,
            });
        }
        self.inner.wake.notify_one();
        outcome
    }

    fn deliver_locally(&self, priority: Priority, tag: Tag, payload: Bytes) {
        let size = payload.len();
        self.inner.pending_delivery[priority.index()].fetch_add(size, Ordering::AcqRel);
        let delivered = Delivered {
            from: self.inner.local.clone(),
            priority,
            tag: tag.0,
            payload,
        };
        if self.inner.deliveries[priority.index()]
            .send(delivered)
            .is_err()
        {
            self.inner.pending_delivery[priority.index()].fetch_sub(size, Ordering::AcqRel);
        }
    }
}

impl Messenger for LegacyMessenger {
    fn local_member(&self) -> &MemberId {
        &self.inner.local
    }

    fn view(&self) -> View {
        self.inner
            .view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn install_view(&self, view: View) {
        let mut installed = self
            .inner
            .view
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        self.inner
            .core()
            .install_view(&installed, &view, std::time::Instant::now());
        *installed = view;
        drop(installed);
        self.inner.wake.notify_one();
    }

    fn send<M: Message>(
        &self,
        message: &M,
        priority: Priority,
        recipients: &[MemberId],
    ) -> Result<SendOutcome, SendError> {
        if priority == Priority::Control && M::TAG.0 >= Tag::FIRST_APPLICATION.0 {
            return Err(SendError::ControlReserved(M::TAG));
        }
        let payload = self.encode(message)?;
        let view = self.view();
        Ok(self.queue_for(M::TAG, payload, priority, recipients, |m| view.contains(m)))
    }

    fn send_outside_view<M: Message>(
        &self,
        message: &M,
        recipients: &[MemberId],
    ) -> Result<SendOutcome, SendError> {
        if M::TAG.0 >= Tag::FIRST_APPLICATION.0 {
            return Err(SendError::ProtocolOnly(M::TAG));
        }
        let payload = self.encode(message)?;
        Ok(self.queue_for(M::TAG, payload, Priority::Control, recipients, |_| true))
    }

    fn send_datagram<M: Message>(
        &self,
        message: &M,
        recipients: &[MemberId],
    ) -> Result<SendOutcome, SendError> {
        let payload = self.encode(message)?;
        let view = self.view();
        let mut outcome = SendOutcome::default();
        let packet = Packet::Datagram(
            DatagramHeader {
                sender: self.inner.local.clone(),
                tag: M::TAG.0,
            },
            payload.clone(),
        )
        .encode();
        for to in recipients {
            if *to == self.inner.local {
                deliver_datagram(
                    &self.inner,
                    self.inner.local.clone(),
                    M::TAG,
                    payload.clone(),
                );
            } else if !view.contains(to) {
                outcome.not_in_view.push(to.clone());
            } else if let Err(error) = self.inner.sender.send(to.address(), &packet) {
                tracing::debug!(%error, ?to, "legacy datagram not sent");
            }
        }
        Ok(outcome)
    }

    fn subscribe<M: Message>(&self) -> Result<Subscription<M>, SubscribeError> {
        self.inner.dispatcher.subscribe()
    }

    fn events(&self) -> broadcast::Receiver<TransportEvent> {
        self.inner.events.subscribe()
    }

    async fn shutdown(&self) {
        if self.inner.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        // Resent until everything is acknowledged, bounded by the shutdown timeout.
        if !self.flush().await {
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
        tracing::info!(member = ?self.inner.local, "legacy messenger shut down");
    }
}

fn deliver_datagram(inner: &Inner, from: MemberId, tag: Tag, payload: Bytes) {
    let inbound = Inbound {
        from,
        delivery: Delivery::Datagram,
        payload,
    };
    inner.dispatcher.try_deliver(tag, inbound);
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
        let now = std::time::Instant::now();
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
    let now = std::time::Instant::now();
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
            let packet = Packet::Answer(header, Bytes::from(answer)).encode();
            if let Err(error) = inner.sender.send(from, &packet) {
                tracing::debug!(%error, %from, "legacy answer not sent");
            }
        }
    }
}

/// Tells `from` that this legacy side is closed, at most once per interval per address.
fn refuse(inner: &Inner, from: SocketAddr, reason: &str) {
    let now = std::time::Instant::now();
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
        let routed = inner.dispatcher.deliver(Tag(message.tag), inbound).await;
        if routed == Routed::Delivered {
            inner.delivered.fetch_add(1, Ordering::Relaxed);
        }
        inner.pending_delivery[priority.index()].fetch_sub(size, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for LegacyMessenger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyMessenger")
            .field("member", &self.inner.local)
            .finish()
    }
}
