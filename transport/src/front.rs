//! [`Messenger`]: the one messenger front, with one carrier (QUIC, or the legacy protocol
//! for an old member) or two (a bridge during a rolling upgrade) behind it.
//!
//! ```text
//! send(msg, priority, to) ─► guards (Control reserved, closing) ─► wire::encode_payload once
//!   ─► per recipient: the local member ─► LocalDelivery (in order per priority, bounded)
//!                     a member of the view ─► the carrier of its version ─► Carrier::push
//!   ─► Pushed per recipient ─► SendOutcome; first refusal of a streak ─► Backlogged event
//! install_view ─► every open carrier; a secondary carrier whose version has no member left
//!   ─► flushed (bounded), retired, ProtocolClosed
//! query(address) ─► every open carrier at once (the address does not say which protocol
//!   listens there): the first answer counts
//! received by any carrier ─► the Hub's Dispatcher ─► Subscription
//! ```
//!
//! Each pair of members always uses one carrier (a member's version never changes), so the
//! per-priority order and exactly-once delivery of each carrier hold across an upgrade.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::carrier::{Carrier, Hub, Pushed, QueryHandler};
use crate::dispatch::{DispatchStats, Inbound, SubscribeError, Subscription};
use crate::local::{LocalDelivery, LocalRefused};
use crate::member::{Identity, MemberId, ProtocolVersion};
use crate::message::{Delivery, Message, Query, Tag};
use crate::messenger::{SendError, SendOutcome, TransportEvent};
use crate::priority::Priority;
use crate::quic::{BindError, LimitStats, PeerStats, QueryError, QuicCarrier, QuicConfig};
use crate::socket::{SocketFaults, SocketStats};
use crate::sync::{read, write};
use crate::tls::ClusterTls;
use crate::view::View;
use crate::wire;

/// How a messenger treats what is not any carrier's: messages to itself, and queries
/// without a limit of their own.
#[derive(Clone, Copy, Debug)]
pub struct FrontSettings {
    /// Bytes queued for delivery to the member itself, per priority.
    pub local_queue_bytes: usize,
    /// How long a graceful shutdown waits for messages to itself to be delivered.
    pub shutdown_timeout: Duration,
    /// What [`Messenger::query`] allows an answer.
    pub query_timeout: Duration,
}

/// Why a secondary carrier closes: no member of its version is left.
const RETIRED_EVENT_REASON: &str = "no member of protocol v1 is left in the view";

struct Front {
    local: MemberId,
    hub: Hub,
    /// The member's own protocol: every recipient the secondary does not speak to.
    primary: Arc<dyn Carrier>,
    /// A bridge's older protocol, for recipients of the versions it speaks, until retired.
    secondary: Option<Arc<dyn Carrier>>,
    /// Said to members of the secondary's versions once it is retired.
    retired_reason: String,
    view: RwLock<View>,
    /// The last view announced as being prepared, so that an unchanged one costs nothing.
    expected: RwLock<Option<View>>,
    local_delivery: Arc<LocalDelivery>,
    settings: FrontSettings,
    closing: AtomicBool,
    /// Set while the secondary is being retired (flushing first).
    retiring: AtomicBool,
}

/// A cluster messenger: sends typed messages to members of the current view, exactly once
/// and in order per priority while they are in it, over the carrier each recipient's
/// protocol version calls for. `send` never waits: each destination has its own queue,
/// bounded in bytes, and a destination over its bound is reported in the [`SendOutcome`]
/// (and as a [`TransportEvent::Backlogged`]) while the others are untouched.
///
/// Cheap to clone; the last clone dropped stops everything (call
/// [`Messenger::shutdown`] first to flush).
#[derive(Clone)]
pub struct Messenger {
    front: Arc<Front>,
    _stop_on_drop: Arc<StopOnDrop>,
}

struct StopOnDrop(Arc<Front>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Messenger {
    /// Binds the UDP socket of the member `identity` names and listens for QUIC, tuned by
    /// `config`. Must be called from within a Tokio runtime (any flavour).
    pub fn bind(
        identity: &Identity,
        config: QuicConfig,
        tls: &ClusterTls,
    ) -> Result<Messenger, BindError> {
        let hub = Hub::new(config.subscription_capacity.get());
        let settings = FrontSettings::of(&config);
        let quic = QuicCarrier::bind(identity, config, tls, &hub)?;
        Ok(Messenger::assemble(hub, Arc::new(quic), None, settings))
    }

    /// Like [`Messenger::bind`] on a socket the caller provides: for simulated networks.
    /// The socket still passes through cohort's wrapper, so fault injection and protocol
    /// demultiplexing work the same. `identity.bind` is ignored.
    pub fn bind_with_socket(
        identity: &Identity,
        config: QuicConfig,
        tls: &ClusterTls,
        udp: Arc<dyn quinn::AsyncUdpSocket>,
    ) -> Result<Messenger, BindError> {
        let hub = Hub::new(config.subscription_capacity.get());
        let settings = FrontSettings::of(&config);
        let quic = QuicCarrier::bind_with_socket(identity, config, tls, udp, &hub)?;
        Ok(Messenger::assemble(hub, Arc::new(quic), None, settings))
    }

    /// A messenger over carriers built on `hub`: `primary` for the member's own protocol,
    /// `secondary` (a bridge's older protocol, closed with `retired_reason` once no member
    /// of its versions is left) for the recipients it speaks to. Must be called from within
    /// a Tokio runtime.
    #[doc(hidden)]
    pub fn assemble(
        hub: Hub,
        primary: Arc<dyn Carrier>,
        secondary: Option<(Arc<dyn Carrier>, String)>,
        settings: FrontSettings,
    ) -> Messenger {
        let local = primary.local_member().clone();
        let local_delivery = LocalDelivery::start(
            local.clone(),
            hub.dispatcher.clone(),
            settings.local_queue_bytes,
        );
        let (secondary, retired_reason) = match secondary {
            Some((carrier, reason)) => (Some(carrier), reason),
            None => (None, String::new()),
        };
        let front = Arc::new(Front {
            local,
            hub,
            primary,
            secondary,
            retired_reason,
            view: RwLock::new(View::empty()),
            expected: RwLock::new(None),
            local_delivery,
            settings,
            closing: AtomicBool::new(false),
            retiring: AtomicBool::new(false),
        });
        Messenger {
            _stop_on_drop: Arc::new(StopOnDrop(front.clone())),
            front,
        }
    }

    /// This member's identity.
    pub fn local_member(&self) -> &MemberId {
        &self.front.local
    }

    /// The address of the member's socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.front.local.address()
    }

    /// The currently installed view.
    pub fn view(&self) -> View {
        read(&self.front.view).clone()
    }

    /// Installs a view. Members that were in the previous view but are not in this one are
    /// forgotten: nothing more is accepted for them, what was already queued is flushed
    /// (bounded by the shutdown timeout), then their connections are closed and their
    /// queues freed.
    pub fn install_view(&self, view: View) {
        let front = &self.front;
        let mut installed = write(&front.view);
        let old = std::mem::replace(&mut *installed, view.clone());
        front.primary.install_view(&old, &view);
        if let Some(secondary) = front.open_secondary() {
            secondary.install_view(&old, &view);
            let none_left = !view.members().iter().any(|m| secondary.speaks(m.version()));
            if view.contains(&front.local) && none_left {
                front.retire_secondary();
            }
        }
    }

    /// A view being prepared (not yet installed): its members may send application
    /// messages from now on. The membership layer calls this before it acknowledges a
    /// prepared view, so a joiner, which learns it is in only after every member has
    /// acknowledged, never finds its first messages refused. Installing a view with this
    /// id or a later one replaces it.
    pub fn expect_view(&self, view: &View) {
        let front = &self.front;
        // The driver announces its prepared view after every step: only a change costs.
        if read(&front.expected).as_ref() == Some(view) {
            return;
        }
        let installed = read(&front.view);
        if view.id() <= installed.id() {
            return;
        }
        *write(&front.expected) = Some(view.clone());
        front.primary.expect_view(view);
        if let Some(secondary) = front.open_secondary() {
            secondary.expect_view(view);
        }
    }

    /// Queues a reliable message for each recipient, without waiting.
    ///
    /// A recipient equal to the local member gets the message through its own
    /// subscriptions. Recipients are not deduplicated: list each once.
    pub fn send<M: Message>(
        &self,
        message: &M,
        priority: Priority,
        recipients: &[MemberId],
    ) -> Result<SendOutcome, SendError> {
        if priority == Priority::Control && M::TAG >= Tag::FIRST_APPLICATION {
            return Err(SendError::ControlReserved(M::TAG));
        }
        let view = read(&self.front.view);
        self.front
            .send(message, Some(priority), recipients, |recipient| {
                view.member(recipient.uuid())
            })
    }

    /// Queues a message of cohort's own protocols on the Control priority for recipients
    /// that need not be in the view: a joiner, the coordinator a joiner asks, a member just
    /// removed that must learn it is out. Otherwise like [`Messenger::send`], with the same
    /// guarantees while a connection can be made. Members that have departed (left a view
    /// installed here) are still refused, in `not_in_view`. Application tags are refused
    /// with [`SendError::ProtocolOnly`].
    pub fn send_outside_view<M: Message>(
        &self,
        message: &M,
        recipients: &[MemberId],
    ) -> Result<SendOutcome, SendError> {
        if M::TAG >= Tag::FIRST_APPLICATION {
            return Err(SendError::ProtocolOnly(M::TAG));
        }
        let view = read(&self.front.view);
        // The view's entry wins over whatever address the caller was told.
        self.front
            .send(message, Some(Priority::Control), recipients, |recipient| {
                Some(view.member(recipient.uuid()).unwrap_or(recipient))
            })
    }

    /// Sends an unreliable message (heartbeat, alert), without waiting.
    ///
    /// It may be lost. One larger than the connection's datagram limit travels reliably on
    /// the Bulk stream instead. A recipient with no connection yet gets a connection started
    /// and this datagram is not sent to it: [`SendOutcome::not_sent`] names it.
    pub fn send_datagram<M: Message>(
        &self,
        message: &M,
        recipients: &[MemberId],
    ) -> Result<SendOutcome, SendError> {
        let view = read(&self.front.view);
        self.front.send(message, None, recipients, |recipient| {
            view.member(recipient.uuid())
        })
    }

    /// Subscribes to messages of type `M`, from any priority or datagrams.
    pub fn subscribe<M: Message>(&self) -> Result<Subscription<M>, SubscribeError> {
        self.front.hub.dispatcher.subscribe::<M>()
    }

    /// Transport events from now on.
    pub fn events(&self) -> broadcast::Receiver<TransportEvent> {
        self.front.hub.events.subscribe()
    }

    /// Answers queries of type `Q` from now on with `handler`, on every carrier. The
    /// handler gets the query and the asker's address and must not block. Until a handler
    /// is set, askers are told the query is not served.
    pub fn serve<Q: Query>(
        &self,
        handler: impl Fn(Q, SocketAddr) -> Q::Answer + Send + Sync + 'static,
    ) {
        let handler: QueryHandler = Arc::new(move |payload, from| {
            let query: Q = postcard::from_bytes(payload).map_err(|e| e.to_string())?;
            postcard::to_allocvec(&handler(query, from))
                .map(Bytes::from)
                .map_err(|e| e.to_string())
        });
        self.front.primary.serve(Q::TAG, handler.clone());
        if let Some(secondary) = &self.front.secondary {
            secondary.serve(Q::TAG, handler);
        }
    }

    /// Asks whoever listens at `address` (a member or not) one question, bounded by the
    /// handshake timeout (see [`Messenger::query_within`]).
    pub async fn query<Q: Query>(
        &self,
        address: SocketAddr,
        query: &Q,
    ) -> Result<Q::Answer, QueryError> {
        let limit = self.front.settings.query_timeout;
        self.query_within(address, query, limit).await
    }

    /// Asks whoever listens at `address` one question within `limit`, counted from when
    /// this member starts asking (it may first wait its turn behind other dials). Over
    /// every open carrier at once (the address alone does not say which protocol listens
    /// there): the first answer counts. For discovery: the asker need not know who answers,
    /// and neither side keeps any state about the other afterwards.
    pub async fn query_within<Q: Query>(
        &self,
        address: SocketAddr,
        query: &Q,
        limit: Duration,
    ) -> Result<Q::Answer, QueryError> {
        let encoded = self.front.encode_query(query)?;
        let primary = ask::<Q>(&*self.front.primary, address, encoded.clone(), limit);
        match self.front.open_secondary() {
            None => primary.await,
            Some(secondary) => {
                let secondary = ask::<Q>(&**secondary, address, encoded, limit);
                first_answer(std::pin::pin!(primary), std::pin::pin!(secondary)).await
            }
        }
    }

    /// [`Messenger::query_within`] to a member, over the carrier of its version only, so
    /// that the answer (or "not served") comes from the side the member is on.
    pub async fn query_member_within<Q: Query>(
        &self,
        member: &MemberId,
        query: &Q,
        limit: Duration,
    ) -> Result<Q::Answer, QueryError> {
        let address = member.address();
        let encoded = self.front.encode_query(query)?;
        let Some(carrier) = self.front.carrier_for(member) else {
            return Err(QueryError::Shutdown);
        };
        ask::<Q>(&**carrier, address, encoded, limit).await
    }

    /// When anything last arrived from `member` (a frame, a datagram, an acknowledgement),
    /// on the carrier of its version; `None` if nothing has yet.
    pub fn last_heard(&self, member: &MemberId) -> Option<Instant> {
        self.front.carrier_for(member)?.last_heard(member)
    }

    /// Knocks at `member`'s port if its carrier knocks (QUIC: one byte outside QUIC, whose
    /// only use is the ICMP port unreachable a closed port answers it with).
    pub fn knock(&self, member: &MemberId) {
        if let Some(carrier) = self.front.carrier_for(member) {
            carrier.knock(member);
        }
    }

    /// What the carrier of `member`'s version knows about it.
    pub fn peer_stats(&self, member: &MemberId) -> Option<PeerStats> {
        self.front.carrier_for(member)?.peer_stats(member)
    }

    /// Counters of the limits on what peers may send or hold (the primary carrier's).
    pub fn limit_stats(&self) -> LimitStats {
        self.front.primary.limit_stats()
    }

    /// Counters of the dispatcher behind the subscriptions (one for every carrier):
    /// messages under a tag nobody subscribed to, datagrams dropped at a full subscription.
    pub fn dispatch_stats(&self) -> DispatchStats {
        self.front.hub.dispatcher.stats()
    }

    /// The socket's fault rules (for tests; one socket for every carrier).
    pub fn faults(&self) -> &SocketFaults {
        self.front.primary.faults()
    }

    /// The socket's counters.
    pub fn socket_stats(&self) -> SocketStats {
        self.front.primary.socket_stats()
    }

    /// The carrier of type `C` behind this messenger, if there is one: for what only one
    /// protocol has (QUIC's connections, the legacy protocol's counters).
    #[doc(hidden)]
    pub fn carrier<C: Carrier>(&self) -> Option<&C> {
        let front = &self.front;
        let primary = front.primary.as_any().downcast_ref::<C>();
        primary.or_else(|| front.secondary.as_ref()?.as_any().downcast_ref::<C>())
    }

    /// The QUIC carrier, if this messenger has one.
    #[doc(hidden)]
    pub fn quic(&self) -> Option<&QuicCarrier> {
        self.carrier::<QuicCarrier>()
    }

    /// Whether the secondary carrier (a bridge's legacy side) is still open; `None`
    /// without one.
    #[doc(hidden)]
    pub fn secondary_open(&self) -> Option<bool> {
        let secondary = self.front.secondary.as_ref()?;
        Some(!secondary.is_retired())
    }

    /// Stops as a crash of the process would (for tests).
    pub fn crash(&self) {
        let front = &self.front;
        front.closing.store(true, Ordering::Release);
        front.primary.crash();
        if let Some(secondary) = &front.secondary {
            secondary.crash();
        }
        front.abort();
    }

    /// Stops at once, as a crash does, and frees the port to bind again at once as far as
    /// QUIC goes (see [`QuicCarrier::release_port`]); a legacy carrier's socket closes with
    /// the messenger's last handle.
    #[doc(hidden)]
    pub fn release_port(&self) {
        let front = &self.front;
        front.closing.store(true, Ordering::Release);
        front.primary.release_port();
        if let Some(secondary) = &front.secondary {
            secondary.release_port();
        }
        front.abort();
    }

    /// Flushes what is queued (bounded by the configured shutdown timeout), closes every
    /// connection and stops listening. Subscriptions then yield `None`.
    pub async fn shutdown(&self) {
        let front = &self.front;
        if front.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        let carriers = async {
            if let Some(secondary) = front.open_secondary() {
                secondary.shutdown().await;
            }
            front.primary.shutdown().await;
        };
        let local = front
            .local_delivery
            .shutdown(front.settings.shutdown_timeout);
        tokio::join!(local, carriers);
        front.abort();
    }
}

impl FrontSettings {
    /// The settings a QUIC messenger takes from its tuning.
    pub fn of(config: &QuicConfig) -> FrontSettings {
        FrontSettings {
            local_queue_bytes: config.max_queued_bytes_per_destination,
            shutdown_timeout: config.shutdown_timeout,
            query_timeout: config.handshake_timeout,
        }
    }
}

impl Front {
    /// The carrier `member` is reached over: the open secondary for the versions it speaks,
    /// else the primary; none for the versions of a secondary that was retired.
    fn carrier_for(&self, member: &MemberId) -> Option<&Arc<dyn Carrier>> {
        match &self.secondary {
            Some(secondary) if secondary.speaks(member.version()) => {
                (!secondary.is_retired()).then_some(secondary)
            }
            _ => Some(&self.primary),
        }
    }

    fn open_secondary(&self) -> Option<&Arc<dyn Carrier>> {
        self.secondary.as_ref().filter(|s| !s.is_retired())
    }

    /// Encodes `message` once and hands it to the local member and to each recipient's
    /// carrier; `priority` `None` is a datagram. `resolve` gives the entry a recipient is
    /// reached at (none: not in the view).
    fn send<'v, M: Message>(
        &self,
        message: &M,
        priority: Option<Priority>,
        recipients: &'v [MemberId],
        resolve: impl Fn(&'v MemberId) -> Option<&'v MemberId>,
    ) -> Result<SendOutcome, SendError> {
        if self.closing.load(Ordering::Acquire) {
            return Err(SendError::Shutdown);
        }
        let mut payload = wire::encode_payload(message).map_err(|source| SendError::Encode {
            tag: M::TAG,
            source,
        })?;
        let mut outcome = SendOutcome::default();
        let (mut to_primary, mut to_secondary) = (Group::default(), Group::default());
        let mut to_local = false;
        for recipient in recipients {
            if recipient.uuid() == self.local.uuid() {
                to_local = true;
                continue;
            }
            let Some(member) = resolve(recipient) else {
                outcome.not_in_view.push(recipient.clone());
                continue;
            };
            match &self.secondary {
                Some(secondary) if secondary.speaks(member.version()) => {
                    match secondary.is_retired() {
                        true => outcome.not_in_view.push(recipient.clone()),
                        false => to_secondary.push(member),
                    }
                }
                _ => to_primary.push(member),
            }
        }
        // Every carrier used must take it before any does: a send never reaches one side
        // only. The primary's limit also holds for the member itself, and for a send that
        // reaches nobody (so that a message too large is refused whoever it is for).
        if to_local || !to_primary.is_empty() || to_secondary.is_empty() {
            self.primary.check_size(M::TAG, payload.len(), priority)?;
        }
        if let Some(secondary) = self.secondary.as_ref().filter(|_| !to_secondary.is_empty()) {
            match secondary.check_size(M::TAG, payload.len(), priority) {
                // Retired since the recipients were routed: nobody's to reach any more.
                Err(SendError::Shutdown) if secondary.is_retired() => {
                    let gone = std::mem::take(&mut to_secondary);
                    outcome
                        .not_in_view
                        .extend(gone.as_slice().iter().map(|m| (*m).clone()));
                }
                checked => checked?,
            }
        }
        if to_local {
            self.deliver_locally(priority, M::TAG, payload.clone(), &mut outcome);
        }
        let mut backlogged = Vec::new();
        let mut report = |member: &MemberId, pushed: Pushed| match pushed {
            Pushed::Accepted => {}
            Pushed::NotInView => outcome.not_in_view.push(member.clone()),
            Pushed::TooLarge => outcome.too_large.push(member.clone()),
            Pushed::NotSent => outcome.not_sent.push(member.clone()),
            Pushed::Backlogged {
                queued_bytes,
                first_of_streak,
            } => {
                outcome.backlogged.push(member.clone());
                if first_of_streak {
                    backlogged.push((member.clone(), queued_bytes));
                }
            }
        };
        let mut hand_to = |carrier: &Arc<dyn Carrier>, to: &Group<'_>, bytes: Bytes| match priority
        {
            Some(priority) => carrier.push(to.as_slice(), priority, M::TAG, bytes, &mut report),
            None => carrier.push_datagram(to.as_slice(), M::TAG, &bytes, &mut report),
        };
        if let Some(secondary) = self.secondary.as_ref().filter(|_| !to_secondary.is_empty()) {
            // Cloned (a reference count) only if the primary takes it too.
            let bytes = match to_primary.is_empty() {
                true => std::mem::take(&mut payload),
                false => payload.clone(),
            };
            hand_to(secondary, &to_secondary, bytes);
        }
        if !to_primary.is_empty() {
            hand_to(&self.primary, &to_primary, payload);
        }
        for (member, queued_bytes) in backlogged {
            tracing::warn!(%member, queued_bytes, "destination backlogged");
            self.hub.emit(TransportEvent::Backlogged {
                member,
                queued_bytes,
            });
        }
        Ok(outcome)
    }

    /// A message to the member itself: reliable ones in order through its own lanes,
    /// datagrams straight to the subscription (dropped if it is full).
    fn deliver_locally(
        &self,
        priority: Option<Priority>,
        tag: Tag,
        payload: Bytes,
        outcome: &mut SendOutcome,
    ) {
        let Some(priority) = priority else {
            let inbound = Inbound {
                from: self.local.clone(),
                delivery: Delivery::Datagram,
                payload,
            };
            self.hub.dispatcher.try_deliver(tag, inbound);
            return;
        };
        match self.local_delivery.push(priority, tag, payload) {
            Ok(()) => {}
            Err(LocalRefused::Closed) => outcome.not_in_view.push(self.local.clone()),
            Err(LocalRefused::Backlogged {
                queued_bytes,
                first_of_streak,
            }) => {
                outcome.backlogged.push(self.local.clone());
                if first_of_streak {
                    self.hub.emit(TransportEvent::Backlogged {
                        member: self.local.clone(),
                        queued_bytes,
                    });
                }
            }
        }
    }

    fn encode_query<Q: Query>(&self, query: &Q) -> Result<Bytes, QueryError> {
        if self.closing.load(Ordering::Acquire) {
            return Err(QueryError::Shutdown);
        }
        postcard::to_allocvec(query)
            .map(Bytes::from)
            .map_err(QueryError::Encode)
    }

    /// Closes the secondary carrier once it has flushed (bounded by its shutdown timeout),
    /// unless a member of its versions was admitted meanwhile.
    fn retire_secondary(self: &Arc<Self>) {
        let Some(secondary) = self.secondary.clone() else {
            return;
        };
        if self.retiring.swap(true, Ordering::AcqRel) {
            return;
        }
        let front = self.clone();
        tokio::spawn(async move {
            if !secondary.flush().await {
                tracing::debug!("the secondary carrier closes with messages unacknowledged");
            }
            // Under the view's write lock: no view is installed and no send routed between
            // the check and the retirement. A member of its version may have been admitted
            // meanwhile (it still answered): then it stays open, and the next view without
            // one tries again. A messenger stopping meanwhile retires nothing.
            let view = write(&front.view);
            if front.closing.load(Ordering::Acquire) {
                return;
            }
            if view.members().iter().any(|m| secondary.speaks(m.version())) {
                front.retiring.store(false, Ordering::Release);
                return;
            }
            secondary.retire(&front.retired_reason);
            drop(view);
            tracing::info!(member = ?front.local, "no member of protocol v1 is left: legacy protocol closed");
            front.hub.emit(TransportEvent::ProtocolClosed {
                version: ProtocolVersion::LEGACY,
                reason: RETIRED_EVENT_REASON.into(),
            });
        });
    }

    /// Stops everything at once (last handle dropped, a crash, or after a graceful
    /// shutdown).
    fn abort(&self) {
        self.closing.store(true, Ordering::Release);
        self.primary.abort();
        if let Some(secondary) = &self.secondary {
            secondary.abort();
        }
        self.local_delivery.abort();
        self.hub.dispatcher.close();
    }
}

/// The recipients of one send that one carrier takes: most sends have one, which needs no
/// allocation.
enum Group<'v> {
    One(Option<&'v MemberId>),
    Many(Vec<&'v MemberId>),
}

impl Default for Group<'_> {
    /// No recipient.
    fn default() -> Self {
        Group::One(None)
    }
}

impl<'v> Group<'v> {
    fn push(&mut self, member: &'v MemberId) {
        match self {
            Group::One(None) => *self = Group::One(Some(member)),
            Group::One(Some(first)) => *self = Group::Many(vec![*first, member]),
            Group::Many(members) => members.push(member),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Group::One(None))
    }

    fn as_slice(&self) -> &[&'v MemberId] {
        match self {
            Group::One(None) => &[],
            Group::One(Some(member)) => std::slice::from_ref(member),
            Group::Many(members) => members,
        }
    }
}

/// The first answer of two queries: the other's result only if the first failed.
async fn first_answer<T>(
    mut a: impl Future<Output = Result<T, QueryError>> + Unpin,
    mut b: impl Future<Output = Result<T, QueryError>> + Unpin,
) -> Result<T, QueryError> {
    tokio::select! {
        answer = &mut a => match answer {
            Ok(answer) => Ok(answer),
            Err(error) => b.await.map_err(|_| error),
        },
        answer = &mut b => match answer {
            Ok(answer) => Ok(answer),
            Err(_) => a.await,
        },
    }
}

/// Asks `carrier` and decodes its answer: decoded inside a race of two carriers, an answer
/// that does not decode loses to the other's.
async fn ask<Q: Query>(
    carrier: &dyn Carrier,
    address: SocketAddr,
    query: Bytes,
    limit: Duration,
) -> Result<Q::Answer, QueryError> {
    let answer = carrier.ask(address, Q::TAG, query, limit).await?;
    decode_answer::<Q>(address, answer)
}

fn decode_answer<Q: Query>(address: SocketAddr, payload: Bytes) -> Result<Q::Answer, QueryError> {
    postcard::from_bytes(&payload).map_err(|error| QueryError::Malformed {
        address,
        reason: error.to_string(),
    })
}

impl std::fmt::Debug for Messenger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messenger")
            .field("local", &self.front.local)
            .field("view", &read(&self.front.view).id())
            .field("primary", &self.front.primary)
            .field("secondary", &self.front.secondary)
            .finish()
    }
}
