//! [`Transport`]: the messenger a member runs on, chosen by [`Protocol`]: QUIC, the legacy
//! protocol (an old member), or both through a [`Bridge`] (a member upgraded while old
//! members remain). The membership protocol is the same on each; only this differs.

use std::net::SocketAddr;
use std::time::Duration;

use cohort_legacy_udp::{Bridge, LegacyMessenger, LegacyStats};
use cohort_transport::quic::LimitStats;
use cohort_transport::socket::{SocketFaults, SocketStats};
use cohort_transport::{
    MemberId, Message, Messenger, PeerStats, Priority, Query, QueryError, QuicMessenger, SendError,
    SendOutcome, SubscribeError, Subscription, TransportEvent, View,
};
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
    /// (see `QuicMessenger::expect_view`; the legacy side admits by its own rules).
    pub fn expect_view(&self, view: &View) {
        match self {
            Transport::Quic(m) => m.expect_view(view),
            Transport::Legacy(_) => {}
            Transport::Bridge(m) => m.quic().expect_view(view),
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
