//! [`QuicCarrier`]: the [`Carrier`] over QUIC, behind a [`Messenger`].
//!
//! One quinn endpoint on the member's one UDP socket (`CohortSocket`) serves every peer.
//! Each remote member is a `Peer` with its own byte-bounded queues and a
//! driver task that owns its single connection (see `peer` for the simultaneous-dial rule).
//! On a connection, the control stream carries Hello/HelloAck and Control-priority
//! messages, one unidirectional stream per data priority carries High, Normal and Bulk, and
//! QUIC datagrams carry unreliable messages.
//!
//! ```text
//! Carrier::push ─► Peer::enqueue ─► link::write_now (High, Control) or writer tasks ─► QUIC streams ─► peer's readers ─► Dispatcher
//! accept::accept_loop ─► handshake::accept (TLS, Hello) ─► Peer driver decides ─► link::Established
//! install_view ─► departed peers stopped: connection closed (REMOVED_FROM_VIEW), queues freed
//! quiet peers outside the view ─► forgotten, positions kept (see `outsiders`)
//! socket error queue (ICMP) ─► TransportEvent::Unreachable (see `crate::unreachable`)
//! ```
//!
//! The modules, by concern: this one is the carrier (binding, views, pushes, queries);
//! `shared` what every task shares and the admission policy (who may send what, frame
//! limits, the view's addresses); `accept` incoming connections up to the Hello; `peer`
//! one remote member and its driver; `link` an established connection's tasks; `queue`
//! and `receive` the two halves of reliability as plain data; `handshake`, `query`,
//! `limits`, `outsiders`, `config` and `stats` what their names say.

mod accept;
mod config;
mod handshake;
mod limits;
mod link;
mod outsiders;
mod peer;
mod query;
mod queue;
mod receive;
#[cfg(test)]
mod reliability_properties;
mod shared;
mod stats;

use std::any::Any;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use quinn::{Endpoint, EndpointConfig, Runtime, TokioRuntime};
use quinn_proto::RandomConnectionIdGenerator;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub use self::config::QuicConfig;
pub use self::limits::LimitStats;
use self::outsiders::{Forgotten, NoPeer};
use self::peer::{Peer, Stop};
pub use self::query::QueryError;
use self::query::QueryHandlers;
use self::shared::Admitted;
pub(crate) use self::shared::Shared;
pub use self::stats::PeerStats;
use crate::carrier::{Carrier, CarrierFuture, Hub, Pushed, QueryHandler};
#[cfg(doc)]
use crate::front::Messenger;
use crate::member::{Identity, MemberId, ProtocolVersion};
use crate::message::Tag;
use crate::messenger::SendError;
#[cfg(doc)]
use crate::messenger::TransportEvent;
use crate::priority::Priority;
use crate::settings::InvalidConfig;
use crate::socket::{CohortSocket, SocketFaults, SocketStats, bind_udp};
use crate::sync::{lock, read, write};
use crate::tls::ClusterTls;
use crate::unreachable::{ErrorQueue, UnreachableReports};
use crate::view::View;
use crate::wire::{self, CloseCode};

/// Datagrams up to this size are sent as datagrams even before a connection reports its
/// limit; larger ones go on the Bulk stream (QUIC guarantees at least 1200-byte packets).
const SAFE_DATAGRAM_BYTES: usize = 1100;
/// Departed members remembered so that their late connections are refused.
const DEPARTED_MEMORY: usize = 10_000;
/// Bytes of each connection id this member issues (see `bind_with_socket`).
const CID_LEN: usize = 4;
/// The least a query waits for an answer once its address refused its datagrams.
const MIN_REFUSAL_GRACE: Duration = Duration::from_millis(50);

/// Why a messenger could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The identity or the tuning cannot work.
    #[error("invalid messenger configuration: {0}")]
    Config(#[from] InvalidConfig),
    /// The UDP socket could not be bound.
    #[error("could not bind UDP socket {addr}: {source}")]
    Socket {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Not called from within a Tokio runtime.
    #[error("a QUIC messenger must be bound from within a Tokio runtime")]
    NoRuntime,
}

struct PeerEntry {
    peer: Arc<Peer>,
    driver: JoinHandle<()>,
}

#[derive(Default)]
struct Departed {
    set: HashSet<Uuid>,
    order: VecDeque<Uuid>,
}

impl Departed {
    fn insert(&mut self, uuid: Uuid) {
        if self.set.insert(uuid) {
            self.order.push_back(uuid);
            if self.order.len() > DEPARTED_MEMORY
                && let Some(oldest) = self.order.pop_front()
            {
                self.set.remove(&oldest);
            }
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    socket: Arc<CohortSocket>,
    faults: SocketFaults,
    view: RwLock<View>,
    peers: Mutex<HashMap<Uuid, PeerEntry>>,
    departed: Mutex<Departed>,
    /// What peers outside the view that were forgotten left behind (see `outsiders`).
    forgotten: Mutex<Forgotten>,
    closing: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The socket's ICMP error queue (Linux, sockets this messenger bound itself), and the
    /// task reading it, which runs until the messenger stops.
    error_queue: Option<Arc<ErrorQueue>>,
    error_queue_task: Mutex<Option<JoinHandle<()>>>,
    /// The task forgetting quiet peers outside the view; runs until the messenger stops.
    outsiders_task: Mutex<Option<JoinHandle<()>>>,
    unreachable: Arc<UnreachableReports>,
}

/// The carrier over QUIC with mutual TLS. Cheap to clone; the last clone dropped stops
/// everything (a [`Messenger`] shuts it down first to flush).
#[derive(Clone)]
pub struct QuicCarrier {
    inner: Arc<Inner>,
    _stop_on_drop: Arc<StopOnDrop>,
}

struct StopOnDrop(Arc<Inner>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl QuicCarrier {
    /// Binds the UDP socket of the member `identity` names and starts listening, tuned
    /// by `config`, delivering to `hub`. Must be called from within a Tokio runtime.
    pub fn bind(
        identity: &Identity,
        config: QuicConfig,
        tls: &ClusterTls,
        hub: &Hub,
    ) -> Result<Self, BindError> {
        Self::check(identity, &config)?;
        let socket_error = |source| BindError::Socket {
            addr: identity.bind,
            source,
        };
        let udp =
            bind_udp(identity.bind, config.socket_buffer_bytes.get()).map_err(socket_error)?;
        let error_queue = ErrorQueue::enable(&udp, identity.bind.is_ipv6()).map(Arc::new);
        let wrapped = TokioRuntime.wrap_udp_socket(udp).map_err(socket_error)?;
        Self::start(identity, config, tls, wrapped, error_queue, hub)
    }

    /// Starts listening on a socket the caller provides, instead of binding a UDP socket:
    /// for simulated networks. The socket still passes through cohort's wrapper, so fault
    /// injection and protocol demultiplexing work the same. `identity.bind` is ignored.
    pub fn bind_with_socket(
        identity: &Identity,
        config: QuicConfig,
        tls: &ClusterTls,
        udp: Arc<dyn quinn::AsyncUdpSocket>,
        hub: &Hub,
    ) -> Result<Self, BindError> {
        Self::check(identity, &config)?;
        Self::start(identity, config, tls, udp, None, hub)
    }

    /// What both binds check before anything is bound or started.
    fn check(identity: &Identity, config: &QuicConfig) -> Result<(), BindError> {
        identity.validate()?;
        config.validate()?;
        tokio::runtime::Handle::try_current().map_err(|_| BindError::NoRuntime)?;
        Ok(())
    }

    fn start(
        identity: &Identity,
        config: QuicConfig,
        tls: &ClusterTls,
        udp: Arc<dyn quinn::AsyncUdpSocket>,
        error_queue: Option<Arc<ErrorQueue>>,
        hub: &Hub,
    ) -> Result<Self, BindError> {
        // `check` has run: the settings are valid and a runtime is there.
        let socket_error = |source| BindError::Socket {
            addr: identity.bind,
            source,
        };
        let bound = udp.local_addr().map_err(socket_error)?;
        let faults = SocketFaults::default();
        let events = hub.events.clone();
        let unreachable = Arc::new(UnreachableReports::new(events.clone()));
        let socket = Arc::new(CohortSocket::new(udp, faults.clone(), unreachable.clone()));

        let local = identity.member_id(bound);

        let transport = Arc::new(transport_config(&config));
        let mut server_config = quinn::ServerConfig::with_crypto(tls.server_crypto());
        server_config.transport_config(transport.clone());
        let mut client_config = quinn::ClientConfig::new(tls.client_crypto());
        client_config.transport_config(transport);
        let mut endpoint_config = EndpointConfig::default();
        // Every QUIC packet keeps its fixed bit, which is how the shared socket tells QUIC
        // from legacy packets.
        endpoint_config.grease_quic_bit(false);
        // Connection ids of CID_LEN bytes instead of quinn's eight: every packet carries
        // one, and most packets between members are heartbeats and acknowledgements of
        // 30-45 bytes. Four random bytes are plenty to route the few hundred connections
        // of one member (quinn draws again on a collision); they need not be hard to
        // guess, because the AEAD of every packet is what keeps strangers out.
        endpoint_config.cid_generator(|| Box::new(RandomConnectionIdGenerator::new(CID_LEN)));
        if let Some(uuid) = identity.uuid {
            // A fixed identity is for deterministic simulation: make quinn's own choices
            // (connection ids, packet number skips) repeat with it too.
            let mut seed = [0u8; 32];
            seed[..16].copy_from_slice(uuid.as_bytes());
            seed[16..].copy_from_slice(uuid.as_bytes());
            endpoint_config.rng_seed(Some(seed));
        }
        let endpoint = Endpoint::new_with_abstract_socket(
            endpoint_config,
            Some(server_config),
            socket.clone(),
            Arc::new(TokioRuntime),
        )
        .map_err(socket_error)?;

        let dispatcher = hub.dispatcher.clone();
        let shared = Arc::new(Shared {
            local,
            dial_permits: Semaphore::new(config.max_concurrent_dials.get()),
            outside_dial_permits: Semaphore::new(config.max_dials_outside_view.get()),
            accept_permits: Semaphore::new(config.max_concurrent_accepts.get()),
            view_accept_permits: Semaphore::new(config.max_concurrent_accepts_for_view.get()),
            queries: QueryHandlers::default(),
            admitted: RwLock::new(Admitted::default()),
            limits: limits::Limits::new(
                config.max_handshakes_per_address.get(),
                config.max_handshakes_per_host.get(),
                config.max_connections_per_address.get(),
                config.max_queries_per_second_per_address.get(),
            ),
            config,
            tls: tls.clone(),
            endpoint,
            client_config,
            dispatcher,
            events,
        });
        let inner = Arc::new(Inner {
            shared,
            socket,
            faults,
            view: RwLock::new(View::empty()),
            peers: Mutex::new(HashMap::new()),
            departed: Mutex::new(Departed::default()),
            forgotten: Mutex::new(Forgotten::default()),
            closing: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
            error_queue_task: Mutex::new(
                error_queue
                    .clone()
                    .map(|queue| tokio::spawn(queue.run(unreachable.clone()))),
            ),
            error_queue,
            outsiders_task: Mutex::new(None),
            unreachable,
        });
        *lock(&inner.outsiders_task) = Some(tokio::spawn(outsiders::forget_quiet_outsiders(
            Arc::downgrade(&inner),
        )));
        *lock(&inner.tasks) = vec![tokio::spawn(accept::accept_loop(inner.clone()))];
        tracing::info!(member = ?inner.shared.local, "messenger listening");
        Ok(QuicCarrier {
            _stop_on_drop: Arc::new(StopOnDrop(inner.clone())),
            inner,
        })
    }

    /// The address the UDP socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.shared.local.address()
    }

    /// The legacy protocol's share of this member's socket (for the legacy carrier of a
    /// bridge); `None` if it was taken already.
    pub fn legacy_port(&self) -> Option<crate::socket::LegacyPort> {
        self.inner.socket.attach_legacy()
    }

    /// QUIC connections currently open on this member's endpoint, including ones closing.
    pub fn open_connections(&self) -> usize {
        self.inner.shared.endpoint.open_connections()
    }

    /// When an unreachable error (see [`TransportEvent::Unreachable`]) about `address` was
    /// last received, if one was recently: every error counts here, also those folded into
    /// an earlier event.
    pub fn last_unreachable(&self, address: SocketAddr) -> Option<tokio::time::Instant> {
        self.inner.unreachable.last(address)
    }

    /// Closes the current connection to `member`, if any, as a failure would. Nothing is
    /// lost: queued and unacknowledged messages go on the next connection, which is dialed
    /// as soon as there is something to send. Returns false if there was no connection.
    /// For operators recovering a connection that misbehaves, and for tests.
    pub fn reset_connection(&self, member: &MemberId) -> bool {
        let Some(link) = lock(&self.inner.peers)
            .get(&member.uuid())
            .and_then(|entry| entry.peer.link())
        else {
            return false;
        };
        let code = CloseCode::Reset;
        link.conn.close(code.varint(), code.name().as_bytes());
        true
    }

    /// Asks whoever listens at `address` the encoded `query` under `tag`, allowing
    /// `limit` for the handshake and the answer, counted from when this member starts the
    /// handshake (it may first wait its turn behind other dials): for a final check,
    /// whose verdict must not depend on how busy the checker is.
    async fn ask_within(
        &self,
        address: SocketAddr,
        tag: Tag,
        query: Bytes,
        limit: Duration,
    ) -> Result<Bytes, QueryError> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(QueryError::Shutdown);
        }
        // The handshake may start once a dial permit is free; only refusals from then on are
        // refusals of this query's own datagrams. Before, an ICMP error about the address
        // (forged, or caused by other traffic) while the query waited its turn behind other
        // dials gave it up as unreachable before it had sent anything.
        let shared = &self.inner.shared;
        let permit = shared
            .dial_permits
            .acquire()
            .await
            .map_err(|_| QueryError::Shutdown)?;
        let started = tokio::time::Instant::now();
        let asking = query::ask(shared, permit, address, tag, &query, limit);
        let refused = self.inner.unreachable.refused_since(address, started);
        tokio::pin!(asking);
        tokio::select! {
            answer = &mut asking => answer,
            // The query's own datagrams were refused: nothing listens there, or the error
            // was forged. A live answerer still answers within a few round trips, so wait
            // that long rather than the whole limit (a closed port no longer costs the
            // handshake timeout, e.g. in a discovery round that asks a dead locator).
            () = refused => {
                let grace = self.refusal_grace(address);
                match tokio::time::timeout(grace, &mut asking).await {
                    Ok(answer) => answer,
                    Err(_) => Err(QueryError::Unreachable(address)),
                }
            }
        }
    }

    /// How long a query whose datagrams were refused still waits for an answer: four round
    /// trips of a connection to that address, if there is one, and at least
    /// [`MIN_REFUSAL_GRACE`].
    fn refusal_grace(&self, address: SocketAddr) -> Duration {
        let rtt = lock(&self.inner.peers)
            .values()
            .find(|entry| entry.peer.member().address() == address)
            .and_then(|entry| entry.peer.link())
            .map(|link| link.conn.rtt());
        rtt.map_or(MIN_REFUSAL_GRACE, |rtt| (rtt * 4).max(MIN_REFUSAL_GRACE))
    }

    /// Queues `payload` on `peer`'s lane of `priority` and writes it at once where it can.
    fn enqueue(&self, peer: &Peer, priority: Priority, tag: Tag, payload: Bytes) -> Pushed {
        match peer.enqueue(priority, tag, payload) {
            Ok(()) => {
                link::write_now(&self.inner.shared, peer, priority);
                Pushed::Accepted
            }
            Err(over) => Pushed::Backlogged {
                queued_bytes: over.queued_bytes,
                first_of_streak: peer.mark_backlogged(),
            },
        }
    }

    /// The peer of `member`, created on first use; none (reported as not in the view) once
    /// it departed, the carrier is closing, or too many are outside the view.
    fn peer(&self, member: &MemberId) -> Option<Arc<Peer>> {
        self.inner.peer_for(member).ok()
    }

    /// Stops this carrier at once, as a crash does, and moves its endpoint off its port,
    /// which is free to bind again at once: for a member forced out of its cluster that
    /// gave up waiting for its shutdown and binds its address again under a new identity
    /// (auto-reconnect). Its closed connections would otherwise hold the port for three
    /// probe timeouts, which an RTT inflated by a stall makes seconds. What is still queued
    /// is dropped; what the endpoint still sends, only closing its connections, comes from
    /// an ephemeral port of the same address.
    fn move_off_port(&self) {
        self.inner.abort();
        let endpoint = &self.inner.shared.endpoint;
        let Ok(address) = endpoint.local_addr() else {
            return;
        };
        // quinn keeps the previous socket after a rebind until traffic arrives on the new
        // one, so the endpoint moves twice to let go of this one.
        for _ in 0..2 {
            let moved = std::net::UdpSocket::bind(SocketAddr::new(address.ip(), 0))
                .and_then(|socket| endpoint.rebind(socket));
            if let Err(error) = moved {
                tracing::debug!(%address, %error, "the port stays held until the connections drain");
                return;
            }
        }
    }

    async fn shutdown_gracefully(&self) {
        let inner = &self.inner;
        if inner.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        let entries: Vec<PeerEntry> = lock(&inner.peers).drain().map(|(_, e)| e).collect();
        for entry in &entries {
            entry.peer.stop(Stop::Graceful(CloseCode::Shutdown));
        }
        // Each driver bounds its own flush by shutdown_timeout; the margin covers the close.
        let deadline = tokio::time::Instant::now()
            + inner.shared.config.shutdown_timeout
            + Duration::from_secs(1);
        for entry in entries {
            let _ = tokio::time::timeout_at(deadline, entry.driver).await;
        }
        inner.abort();
        let _ =
            tokio::time::timeout(Duration::from_secs(1), inner.shared.endpoint.wait_idle()).await;
        tracing::info!(member = ?inner.shared.local, "messenger shut down");
    }
}

impl Inner {
    /// The peer for `member`, created on first use (resuming what a forgotten peer of it
    /// left behind); none once the member has departed or the messenger is closing
    /// (checked under the lock `install_view` and `abort` hold, so neither can be
    /// overtaken), nor beyond `max_peers_outside_view` peers outside the view.
    fn peer_for(self: &Arc<Self>, member: &MemberId) -> Result<Arc<Peer>, NoPeer> {
        let uuid = member.uuid();
        let mut peers = lock(&self.peers);
        if let Some(entry) = peers.get(&uuid) {
            return Ok(entry.peer.clone());
        }
        if self.closing.load(Ordering::Acquire) {
            return Err(NoPeer::Closing);
        }
        if lock(&self.departed).set.contains(&uuid) {
            return Err(NoPeer::Departed);
        }
        let config = &self.shared.config;
        {
            let admitted = read(&self.shared.admitted);
            if !admitted.members.contains(&uuid) {
                let outside = peers
                    .keys()
                    .filter(|known| !admitted.members.contains(known))
                    .count();
                if outside >= config.max_peers_outside_view.get() {
                    self.shared.limits.count_peer_outside_view_refused();
                    return Err(NoPeer::Full);
                }
            }
        }
        let resumed = lock(&self.forgotten).resume(uuid)?;
        let (peer, incoming, stop) = Peer::new(
            member.clone(),
            config.max_queued_bytes_per_destination,
            config.bulk_in_flight_bytes.get(),
            resumed,
        );
        let driver = tokio::spawn(peer::drive(
            peer.clone(),
            self.shared.clone(),
            incoming,
            stop,
        ));
        peers.insert(
            uuid,
            PeerEntry {
                peer: peer.clone(),
                driver,
            },
        );
        Ok(peer)
    }

    /// Stops everything at once (last handle dropped, or after a graceful shutdown).
    fn abort(&self) {
        let entries: Vec<PeerEntry> = {
            // Under the peers lock, so `peer_for` cannot create a peer after this point.
            let mut peers = lock(&self.peers);
            self.closing.store(true, Ordering::Release);
            peers.drain().map(|(_, entry)| entry).collect()
        };
        for entry in entries {
            entry.peer.stop(Stop::Abort(CloseCode::Shutdown));
        }
        let code = CloseCode::Shutdown;
        self.shared
            .endpoint
            .close(code.varint(), code.name().as_bytes());
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        if let Some(task) = lock(&self.error_queue_task).take() {
            task.abort();
        }
        if let Some(task) = lock(&self.outsiders_task).take() {
            task.abort();
        }
    }
}

impl Carrier for QuicCarrier {
    fn local_member(&self) -> &MemberId {
        &self.inner.shared.local
    }

    fn speaks(&self, version: ProtocolVersion) -> bool {
        version >= ProtocolVersion::QUIC
    }

    /// A frame of `priority` (`None`: a datagram, bounded by QUIC itself and by
    /// `max_frame_bytes` here).
    fn check_size(
        &self,
        tag: Tag,
        len: usize,
        priority: Option<Priority>,
    ) -> Result<(), SendError> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(SendError::Shutdown);
        }
        let size = wire::data_frame_len(u64::MAX, tag, len);
        let config = &self.inner.shared.config;
        let max = priority.map_or(config.max_frame_bytes, |p| config.frame_limit(p));
        match size > max {
            true => Err(SendError::TooLarge { tag, size, max }),
            false => Ok(()),
        }
    }

    fn install_view(&self, _old: &View, view: &View) {
        let local = self.inner.shared.local.uuid();
        let old = {
            let mut installed = write(&self.inner.view);
            write(&self.inner.shared.admitted).update(view);
            std::mem::replace(&mut *installed, view.clone())
        };
        let mut peers = lock(&self.inner.peers);
        let mut departed = lock(&self.inner.departed);
        for member in old.members() {
            if member.uuid() == local || view.contains(member) {
                continue;
            }
            departed.insert(member.uuid());
            if let Some(entry) = peers.remove(&member.uuid()) {
                tracing::debug!(?member, "forgetting member that left the view");
                // What was queued before the view changed still goes (the view without
                // it, for one), bounded by the shutdown timeout; nothing more is accepted.
                entry.peer.stop(Stop::Depart);
            }
        }
    }

    fn expect_view(&self, view: &View) {
        let installed = read(&self.inner.view);
        if view.id() > installed.id() {
            let mut admitted = write(&self.inner.shared.admitted);
            admitted.expected = Some(view.clone());
            admitted.update(&installed);
        }
    }

    fn push(
        &self,
        recipients: &[&MemberId],
        priority: Priority,
        tag: Tag,
        mut payload: Bytes,
        report: &mut dyn FnMut(&MemberId, Pushed),
    ) {
        let last = recipients.len().saturating_sub(1);
        let frame_len = wire::data_frame_len(u64::MAX, tag, payload.len());
        for (i, &recipient) in recipients.iter().enumerate() {
            let Some(peer) = self.peer(recipient) else {
                report(recipient, Pushed::NotInView);
                continue;
            };
            if frame_len > peer.frame_limit(priority) {
                report(recipient, Pushed::TooLarge);
                continue;
            }
            // Moved into the last recipient's queue, cloned for the others.
            let bytes = match i == last {
                true => std::mem::take(&mut payload),
                false => payload.clone(),
            };
            report(recipient, self.enqueue(&peer, priority, tag, bytes));
        }
    }

    fn push_datagram(
        &self,
        recipients: &[&MemberId],
        tag: Tag,
        payload: &Bytes,
        report: &mut dyn FnMut(&MemberId, Pushed),
    ) {
        let datagram = wire::encode_datagram(tag, payload);
        for &recipient in recipients {
            let Some(peer) = self.peer(recipient) else {
                report(recipient, Pushed::NotInView);
                continue;
            };
            let link = peer.link();
            let limit = link
                .as_ref()
                .map_or(Some(SAFE_DATAGRAM_BYTES), |l| l.conn.max_datagram_size());
            if limit.is_none_or(|max| datagram.len() > max) {
                // Too large for a datagram on this path: deliver it reliably on Bulk.
                let pushed = self.enqueue(&peer, Priority::Bulk, tag, payload.clone());
                report(recipient, pushed);
                continue;
            }
            let sent = !self.inner.faults.drops_datagrams()
                && link.is_some_and(|l| l.conn.send_datagram(datagram.clone()).is_ok());
            let counter = match sent {
                true => &peer.counters.datagrams_sent,
                false => &peer.counters.datagrams_dropped,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if !sent {
                peer.want_connection();
                // Fault rules stand for the network, which loses datagrams unseen.
                if !self.inner.faults.drops_datagrams() {
                    report(recipient, Pushed::NotSent);
                }
            }
        }
    }

    fn serve(&self, tag: Tag, handler: QueryHandler) {
        self.inner.shared.queries.serve(tag, handler);
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

    /// Anything: a frame on any stream, a datagram, or a QUIC acknowledgement of what this
    /// member sent it. Acknowledgements are counted at each call and dated at the call
    /// before (see the failure detector's one-way heartbeats).
    fn last_heard(&self, member: &MemberId) -> Option<tokio::time::Instant> {
        let peer = lock(&self.inner.peers).get(&member.uuid())?.peer.clone();
        peer.last_heard()
    }

    /// One byte outside QUIC ([`crate::wire::KNOCK`]), which asks nothing and is never
    /// answered. Its only use is the ICMP port unreachable a closed port answers it with,
    /// which comes back as [`TransportEvent::Unreachable`]: a failure detector knocks
    /// between heartbeats to find a crashed member sooner, at a fraction of a heartbeat's
    /// cost (a heartbeat is a QUIC packet of about 40 bytes and draws an acknowledgement of
    /// about 30). Nothing is sent once this carrier is closing, nor to a member of the
    /// legacy protocol, which has heartbeats of its own both ways and no knocks.
    fn knock(&self, member: &MemberId) {
        if self.inner.closing.load(Ordering::Acquire) || !self.speaks(member.version()) {
            return;
        }
        if let Err(error) = self.inner.socket.knock(member.address()) {
            tracing::debug!(%error, ?member, "knock not sent");
        }
    }

    fn peer_stats(&self, member: &MemberId) -> Option<PeerStats> {
        let peer = lock(&self.inner.peers).get(&member.uuid())?.peer.clone();
        Some(PeerStats::of(&peer))
    }

    fn limit_stats(&self) -> LimitStats {
        self.inner.shared.limits.stats()
    }

    fn faults(&self) -> &SocketFaults {
        &self.inner.faults
    }

    fn socket_stats(&self) -> SocketStats {
        self.inner.socket.stats()
    }

    /// QUIC flushes as part of its shutdown.
    fn flush(&self) -> CarrierFuture<'_, bool> {
        Box::pin(std::future::ready(true))
    }

    /// Nothing more goes out, every task ends, and the port refuses every datagram from
    /// now on, so that the kernel answers other members' packets with ICMP port
    /// unreachable as it does for a process that died. Where the port cannot be made to
    /// refuse (not Linux, or a socket given to [`QuicCarrier::bind_with_socket`]), it only
    /// goes silent.
    fn crash(&self) {
        self.inner.faults.isolate();
        if let Some(queue) = &self.inner.error_queue
            && let Err(error) = queue.refuse_everyone()
        {
            tracing::debug!(%error, "the crashed member's port still accepts datagrams");
        }
        self.inner.abort();
    }

    fn release_port(&self) {
        self.move_off_port();
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

impl std::fmt::Debug for QuicCarrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicCarrier")
            .field("local", &self.inner.shared.local)
            .field("view", &read(&self.inner.view).id())
            .finish()
    }
}

/// quinn's settings for `config`, which `QuicConfig::validate` has checked.
fn transport_config(config: &QuicConfig) -> quinn::TransportConfig {
    // `validate` refuses an idle timeout QUIC cannot encode; the fallback is never taken.
    let idle = quinn::IdleTimeout::try_from(config.idle_timeout)
        .unwrap_or(quinn::IdleTimeout::from(quinn::VarInt::MAX));
    let mut transport = quinn::TransportConfig::default();
    transport
        // The control stream, plus one spare for a fresh stream during a final check.
        .max_concurrent_bidi_streams(2u32.into())
        // One stream per data priority, and the acknowledgement stream.
        .max_concurrent_uni_streams(4u32.into())
        .keep_alive_interval(Some(config.keep_alive_interval))
        .max_idle_timeout(Some(idle))
        .initial_rtt(config.initial_rtt)
        .stream_receive_window(quinn::VarInt::from_u32(config.stream_window_bytes.get()))
        .datagram_receive_buffer_size(Some(1 << 20))
        .datagram_send_buffer_size(1 << 20);
    transport
}
