//! [`Bridge`]: the messenger of a member during a rolling upgrade. It speaks QUIC and the
//! legacy protocol on its one port and picks one per recipient from the version in the
//! recipient's member id.
//!
//! ```text
//! send(to) ─► to.version() is v1 (legacy) ─► LegacyMessenger ─┐ one port, one identity,
//!          └─ otherwise ───────────────────► QuicMessenger ───┘ one dispatcher and events
//! received on either ─► the same subscriptions
//! install_view(view) ─► both sides; a view holding this member and no v1 member left
//!   ─► once the legacy side has flushed (bounded): retired for good, ProtocolClosed event,
//!      log line; from then on old members are answered with a refusal that says why
//! query(address) ─► asked over both at once while the legacy side is open (the address
//!   alone does not say which protocol listens there): the first answer counts
//! ```
//!
//! Each pair of members always uses one protocol (a member's version never changes), so the
//! per-priority order and exactly-once delivery of each side hold across the upgrade.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cohort_transport::{
    BindError, ClusterTls, Identity, MemberId, Message, Messenger, PeerStats, Priority,
    ProtocolVersion, Query, QueryError, QuicConfig, QuicMessenger, SendError, SendOutcome,
    SubscribeError, Subscription, TransportEvent, View,
};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::config::LegacyConfig;
use crate::messenger::{LegacyBindError, LegacyMessenger};

/// Why a bridge could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeBindError {
    /// The QUIC side did not start.
    #[error(transparent)]
    Quic(#[from] BindError),
    /// The legacy side did not start.
    #[error(transparent)]
    Legacy(#[from] LegacyBindError),
}

/// True if `member` speaks only the legacy protocol.
pub fn speaks_legacy(member: &MemberId) -> bool {
    member.version() < ProtocolVersion::QUIC
}

/// What the legacy side says to old members once it is closed.
pub const RETIRED_REASON: &str = "this cluster has finished its upgrade to QUIC (protocol v2): \
     members of protocol v1 can no longer join";

/// A member's messenger during a rolling upgrade. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Bridge {
    quic: QuicMessenger,
    legacy: LegacyMessenger,
    retiring: Arc<AtomicBool>,
}

impl Bridge {
    /// Binds the socket of the member `identity` names (whose version must be v2 or
    /// later) for QUIC, tuned by `quic`, and puts the legacy side, tuned by `legacy`, on
    /// the same port.
    pub fn bind(
        identity: &Identity,
        quic: QuicConfig,
        tls: &ClusterTls,
        legacy: LegacyConfig,
    ) -> Result<Bridge, BridgeBindError> {
        let quic = QuicMessenger::bind(identity, quic, tls)?;
        let legacy = LegacyMessenger::beside(&quic, legacy)?;
        Ok(Bridge {
            quic,
            legacy,
            retiring: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Puts a legacy side beside a QUIC messenger already bound (whose version must be v2
    /// or later).
    pub fn new(quic: QuicMessenger, legacy: LegacyConfig) -> Result<Bridge, LegacyBindError> {
        let legacy = LegacyMessenger::beside(&quic, legacy)?;
        Ok(Bridge {
            quic,
            legacy,
            retiring: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The QUIC side.
    pub fn quic(&self) -> &QuicMessenger {
        &self.quic
    }

    /// The legacy side.
    pub fn legacy(&self) -> &LegacyMessenger {
        &self.legacy
    }

    /// True while the legacy side is open.
    pub fn legacy_open(&self) -> bool {
        !self.legacy.is_retired()
    }

    /// Answers queries of type `Q` on both sides.
    pub fn serve<Q: Query>(
        &self,
        handler: impl Fn(Q, SocketAddr) -> Q::Answer + Send + Sync + 'static,
    ) {
        let handler = Arc::new(handler);
        let shared = handler.clone();
        self.quic.serve(move |q, from| shared(q, from));
        self.legacy.serve(move |q, from| handler(q, from));
    }

    /// Asks whoever listens at `address`: over both protocols at once while the legacy side
    /// is open, and the first answer counts; only over QUIC after.
    pub async fn query_within<Q: Query>(
        &self,
        address: SocketAddr,
        query: &Q,
        limit: Duration,
    ) -> Result<Q::Answer, QueryError> {
        if !self.legacy_open() {
            return self.quic.query_within(address, query, limit).await;
        }
        let quic = self.quic.query_within(address, query, limit);
        let legacy = self.legacy.query_within(address, query, limit);
        tokio::pin!(quic, legacy);
        tokio::select! {
            answer = &mut quic => match answer {
                Ok(answer) => Ok(answer),
                Err(error) => legacy.await.map_err(|_| error),
            },
            answer = &mut legacy => match answer {
                Ok(answer) => Ok(answer),
                Err(_) => quic.await,
            },
        }
    }

    /// A view being prepared: its members may send application messages from now on, over
    /// either protocol (see [`QuicMessenger::expect_view`]).
    pub fn expect_view(&self, view: &View) {
        self.quic.expect_view(view);
        if self.legacy_open() {
            self.legacy.expect_view(view);
        }
    }

    /// When anything last arrived from `member`, on the protocol it speaks.
    pub fn last_heard(&self, member: &MemberId) -> Option<Instant> {
        if speaks_legacy(member) {
            self.legacy.last_heard(member)
        } else {
            self.quic.last_heard(member)
        }
    }

    /// What the QUIC side knows about a peer.
    pub fn peer_stats(&self, member: &MemberId) -> Option<PeerStats> {
        self.quic.peer_stats(member)
    }

    /// Stops both sides as a crash would (see [`QuicMessenger::crash`]).
    pub fn crash(&self) {
        self.quic.crash();
        self.legacy.crash();
    }

    /// Splits recipients into (legacy, quic); once the legacy side is closed, v1 members
    /// are nobody's to reach (`not_in_view`), never sent over QUIC.
    fn split(&self, recipients: &[MemberId]) -> (Vec<MemberId>, Vec<MemberId>, SendOutcome) {
        let legacy_open = self.legacy_open();
        let me = self.quic.local_member();
        let (mut old, mut new, mut unreachable) = (Vec::new(), Vec::new(), SendOutcome::default());
        for m in recipients {
            match (speaks_legacy(m) && m != me, legacy_open) {
                (true, true) => old.push(m.clone()),
                (true, false) => unreachable.not_in_view.push(m.clone()),
                (false, _) => new.push(m.clone()),
            }
        }
        (old, new, unreachable)
    }

    /// Sends to each recipient over its protocol: QUIC first, after checking that the
    /// legacy side can take the message, so that a send never reaches one side only.
    fn route<M: Message>(
        &self,
        message: &M,
        recipients: &[MemberId],
        quic: impl FnOnce(&[MemberId]) -> Result<SendOutcome, SendError>,
        legacy: impl FnOnce(&[MemberId]) -> Result<SendOutcome, SendError>,
    ) -> Result<SendOutcome, SendError> {
        let (old, new, mut outcome) = self.split(recipients);
        if !old.is_empty() {
            self.legacy.check_size(message)?;
        }
        if !new.is_empty() {
            outcome = merge(outcome, quic(&new)?);
        }
        if !old.is_empty() {
            outcome = merge(outcome, legacy(&old)?);
        }
        Ok(outcome)
    }

    /// Closes the legacy side once it has flushed (bounded by its shutdown timeout).
    fn retire_legacy(&self) {
        if self.retiring.swap(true, Ordering::AcqRel) {
            return;
        }
        let (legacy, events) = (self.legacy.clone(), self.quic.event_sender());
        let member = self.quic.local_member().clone();
        let (quic, retiring) = (self.quic.clone(), self.retiring.clone());
        tokio::spawn(async move {
            // Bounded by the legacy side's own shutdown timeout.
            if !legacy.flush().await {
                tracing::debug!("the legacy side closes with messages unacknowledged");
            }
            // An old member may have been admitted meanwhile (the legacy side still
            // answered): then it stays open, and the next view without v1 tries again.
            if quic.view().members().iter().any(speaks_legacy) {
                retiring.store(false, Ordering::Release);
                return;
            }
            legacy.retire(RETIRED_REASON);
            tracing::info!(
                ?member,
                "no member of protocol v1 is left: legacy protocol closed"
            );
            let _ = events.send(TransportEvent::ProtocolClosed {
                version: ProtocolVersion::LEGACY,
                reason: "no member of protocol v1 is left in the view".into(),
            });
        });
    }
}

fn merge(mut a: SendOutcome, b: SendOutcome) -> SendOutcome {
    a.not_in_view.extend(b.not_in_view);
    a.backlogged.extend(b.backlogged);
    a.too_large.extend(b.too_large);
    a.not_sent.extend(b.not_sent);
    a
}

impl Messenger for Bridge {
    fn local_member(&self) -> &MemberId {
        self.quic.local_member()
    }

    fn view(&self) -> View {
        self.quic.view()
    }

    fn install_view(&self, view: View) {
        self.quic.install_view(view.clone());
        if self.legacy_open() {
            let done = view.contains(self.quic.local_member())
                && !view.members().iter().any(speaks_legacy);
            self.legacy.install_view(view);
            if done {
                self.retire_legacy();
            }
        }
    }

    fn send<M: Message>(
        &self,
        message: &M,
        priority: Priority,
        recipients: &[MemberId],
    ) -> Result<SendOutcome, SendError> {
        self.route(
            message,
            recipients,
            |new| self.quic.send(message, priority, new),
            |old| self.legacy.send(message, priority, old),
        )
    }

    fn send_outside_view<M: Message>(
        &self,
        message: &M,
        recipients: &[MemberId],
    ) -> Result<SendOutcome, SendError> {
        self.route(
            message,
            recipients,
            |new| self.quic.send_outside_view(message, new),
            |old| self.legacy.send_outside_view(message, old),
        )
    }

    fn send_datagram<M: Message>(
        &self,
        message: &M,
        recipients: &[MemberId],
    ) -> Result<SendOutcome, SendError> {
        self.route(
            message,
            recipients,
            |new| self.quic.send_datagram(message, new),
            |old| self.legacy.send_datagram(message, old),
        )
    }

    fn subscribe<M: Message>(&self) -> Result<Subscription<M>, SubscribeError> {
        self.quic.subscribe()
    }

    fn events(&self) -> broadcast::Receiver<TransportEvent> {
        self.quic.events()
    }

    async fn shutdown(&self) {
        if self.legacy_open() {
            self.legacy.shutdown().await;
        }
        self.quic.shutdown().await;
    }
}
