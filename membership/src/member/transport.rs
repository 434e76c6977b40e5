//! [`Transport`]: the messenger a member runs on, chosen by [`Protocol`]: QUIC, the legacy
//! protocol (an old member), or both through a [`Bridge`] (a member upgraded while old
//! members remain). The membership protocol is the same on each; only this differs.
//!
//! Also the stand-in a reconnecting member shows between two incarnations
//! ([`Transport::stand_in`]): the old messenger must be gone before its port can be bound
//! again, and a messenger on a [`Detached`] socket (no port at all) takes its place.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use cohort_legacy_udp::{Bridge, LegacyMessenger, LegacyStats};
use cohort_transport::dispatch::DispatchStats;
use cohort_transport::quic::LimitStats;
use cohort_transport::socket::{SocketFaults, SocketStats};
use cohort_transport::{
    BindError, ClusterTls, Identity, MemberId, Message, Messenger, PeerStats, Priority,
    ProtocolVersion, Query, QueryError, QuicConfig, QuicMessenger, SendError, SendOutcome,
    SubscribeError, Subscription, TransportEvent, View,
};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// Which protocol a member speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// QUIC only (protocol v2): the default.
    #[default]
    Quic,
    /// The legacy UDP protocol only (v1): a member of the old release.
    Legacy,
    /// Both on one port, one per recipient by its version: a member upgraded while old
    /// members remain. The legacy side closes once no old member is left.
    Bridge,
}

/// A member's messenger. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Transport {
    /// QUIC only.
    Quic(QuicMessenger),
    /// The legacy protocol only.
    Legacy(LegacyMessenger),
    /// Both.
    Bridge(Bridge),
}

macro_rules! each {
    ($self:expr, $m:ident => $body:expr) => {
        match $self {
            Transport::Quic($m) => $body,
            Transport::Legacy($m) => $body,
            Transport::Bridge($m) => $body,
        }
    };
}

impl Transport {
    /// Stops the messenger at once and frees its port (see
    /// [`QuicMessenger::release_port`]); the legacy protocol's socket closes with its
    /// last handle.
    pub(super) fn release_port(&self) {
        match self {
            Transport::Quic(quic) => quic.release_port(),
            Transport::Bridge(bridge) => bridge.quic().release_port(),
            Transport::Legacy(_) => {}
        }
    }

    /// A messenger with the identity of `of` that holds no socket and is shut down: sends
    /// fail with [`SendError::Shutdown`], nothing arrives, its counters stay at zero. A
    /// reconnecting member shows it from the moment its old messenger is released (so that
    /// the port can be bound again) until the new one is bound. `config` gives the tuning.
    pub(crate) async fn stand_in(
        of: &MemberId,
        config: QuicConfig,
        tls: &ClusterTls,
    ) -> Result<Transport, BindError> {
        let identity = Identity {
            name: of.name().to_owned(),
            kind: of.kind(),
            attributes: of.attributes().clone(),
            bind: of.address(),
            advertise: Some(of.address()),
            version: of.version(),
            uuid: Some(of.uuid()),
        };
        let socket = Arc::new(Detached {
            address: of.address(),
        });
        let messenger = QuicMessenger::bind_with_socket(&identity, config, tls, socket)?;
        messenger.shutdown().await;
        Ok(Transport::Quic(messenger))
    }

    /// The address of the member's socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_member().address()
    }

    /// The socket's fault rules (for tests).
    pub fn faults(&self) -> &SocketFaults {
        match self {
            Transport::Quic(m) => m.faults(),
            Transport::Legacy(m) => m.faults(),
            Transport::Bridge(m) => m.quic().faults(),
        }
    }

    /// The socket's counters.
    pub fn socket_stats(&self) -> SocketStats {
        match self {
            Transport::Quic(m) => m.socket_stats(),
            Transport::Legacy(m) => m.socket_stats(),
            Transport::Bridge(m) => m.quic().socket_stats(),
        }
    }

    /// A view being prepared, whose members may send application messages from now on
    /// (see `QuicMessenger::expect_view`; the legacy protocol follows the same rule).
    pub fn expect_view(&self, view: &View) {
        each!(self, m => m.expect_view(view))
    }

    /// Counters of the dispatcher behind the subscriptions (one for both sides of a
    /// bridge): messages under a tag nobody subscribed to, datagrams dropped at a full
    /// subscription.
    pub fn dispatch_stats(&self) -> DispatchStats {
        match self {
            Transport::Quic(m) => m.dispatch_stats(),
            Transport::Legacy(m) => m.dispatch_stats(),
            Transport::Bridge(m) => m.quic().dispatch_stats(),
        }
    }

    /// Counters of the legacy protocol (`None` on QUIC alone).
    pub fn legacy_stats(&self) -> Option<LegacyStats> {
        match self {
            Transport::Quic(_) => None,
            Transport::Legacy(m) => Some(m.stats()),
            Transport::Bridge(m) => Some(m.legacy().stats()),
        }
    }

    /// Counters of the QUIC side's limits (all zero on the legacy protocol alone).
    pub fn limit_stats(&self) -> LimitStats {
        match self {
            Transport::Quic(m) => m.limit_stats(),
            Transport::Legacy(_) => LimitStats::default(),
            Transport::Bridge(m) => m.quic().limit_stats(),
        }
    }

    /// What the QUIC side knows about a peer (`None` on the legacy protocol alone).
    pub fn peer_stats(&self, member: &MemberId) -> Option<PeerStats> {
        match self {
            Transport::Quic(m) => m.peer_stats(member),
            Transport::Legacy(_) => None,
            Transport::Bridge(m) => m.peer_stats(member),
        }
    }

    /// Knocks at `member`'s port (see [`QuicMessenger::knock`]) if it speaks QUIC; the
    /// legacy protocol has its own heartbeats both ways and no knocks.
    pub fn knock(&self, member: &MemberId) {
        if member.version() < ProtocolVersion::QUIC {
            return;
        }
        match self {
            Transport::Quic(m) => m.knock(member),
            Transport::Bridge(m) => m.quic().knock(member),
            Transport::Legacy(_) => {}
        }
    }

    /// When anything last arrived from `member`.
    pub fn last_heard(&self, member: &MemberId) -> Option<Instant> {
        each!(self, m => m.last_heard(member))
    }

    /// Stops as a crash of the process would (for tests).
    pub fn crash(&self) {
        each!(self, m => m.crash())
    }

    /// Answers queries of type `Q` with `handler`.
    pub fn serve<Q: Query>(
        &self,
        handler: impl Fn(Q, SocketAddr) -> Q::Answer + Send + Sync + 'static,
    ) {
        each!(self, m => m.serve(handler))
    }

    /// Asks whoever listens at `address` one question within `limit`.
    pub async fn query_within<Q: Query>(
        &self,
        address: SocketAddr,
        query: &Q,
        limit: Duration,
    ) -> Result<Q::Answer, QueryError> {
        each!(self, m => m.query_within(address, query, limit).await)
    }

    /// [`Transport::query_within`] to a member, over the protocol it speaks: a bridge asks
    /// a member of protocol version 1 over the legacy protocol and any other over QUIC
    /// only, so that the answer (or "not served") comes from the side the member is on.
    pub async fn query_member_within<Q: Query>(
        &self,
        member: &MemberId,
        query: &Q,
        limit: Duration,
    ) -> Result<Q::Answer, QueryError> {
        let address = member.address();
        match self {
            Transport::Bridge(bridge) if member.version() == ProtocolVersion::LEGACY => {
                bridge.legacy().query_within(address, query, limit).await
            }
            Transport::Bridge(bridge) => bridge.quic().query_within(address, query, limit).await,
            _ => self.query_within(address, query, limit).await,
        }
    }
}

impl Messenger for Transport {
    fn local_member(&self) -> &MemberId {
        each!(self, m => m.local_member())
    }

    fn view(&self) -> View {
        each!(self, m => m.view())
    }

    fn install_view(&self, view: View) {
        each!(self, m => m.install_view(view))
    }

    fn send<M: Message>(
        &self,
        message: &M,
        priority: Priority,
        recipients: &[MemberId],
    ) -> Result<SendOutcome, SendError> {
        each!(self, m => m.send(message, priority, recipients))
    }

    fn send_outside_view<M: Message>(
        &self,
        message: &M,
        recipients: &[MemberId],
    ) -> Result<SendOutcome, SendError> {
        each!(self, m => m.send_outside_view(message, recipients))
    }

    fn send_datagram<M: Message>(
        &self,
        message: &M,
        recipients: &[MemberId],
    ) -> Result<SendOutcome, SendError> {
        each!(self, m => m.send_datagram(message, recipients))
    }

    fn subscribe<M: Message>(&self) -> Result<Subscription<M>, SubscribeError> {
        each!(self, m => m.subscribe())
    }

    fn events(&self) -> broadcast::Receiver<TransportEvent> {
        each!(self, m => m.events())
    }

    async fn shutdown(&self) {
        each!(self, m => m.shutdown().await)
    }
}

/// A socket that is not there: what is sent goes nowhere, nothing is ever received. For
/// [`Transport::stand_in`], which must not hold the port its member is about to bind again.
#[derive(Debug)]
struct Detached {
    /// The address it claims to be bound to (the member's own).
    address: SocketAddr,
}

impl AsyncUdpSocket for Detached {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
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
        // Never ready, so never woken: nothing will arrive.
        Poll::Pending
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.address)
    }
}

/// A detached socket never pushes back.
#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
