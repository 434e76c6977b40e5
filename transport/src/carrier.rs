//! [`Carrier`]: what a protocol does below the [`Messenger`], at the level of bytes.
//!
//! The messenger owns everything the protocols share: the local identity, the installed
//! and the prepared view, encoding (once per send), the tag and priority guards, local
//! delivery, the send outcome and the backlog policy, the dispatcher and the events, and
//! routing each recipient to the carrier that speaks its protocol version. A carrier owns
//! its socket share, its connections or streams, and its reliability: it queues a payload
//! for a member on a priority, sends a datagram, admits the senders of the views it is
//! told about, answers and asks queries, and reports signs of life.
//!
//! ```text
//! Messenger::send ─► guards ─► encode once ─► carrier.check_size ─► carrier.push(recipients, …)
//!                                                                    └─► report(member, Pushed) ─► SendOutcome, Backlogged
//! Messenger::install_view ─► carrier.install_view(old, new) on every carrier
//! received by a carrier ─► the Hub's Dispatcher ─► Subscription
//! ```
//!
//! The trait is object-safe: a messenger holds `Arc<dyn Carrier>`, one for a member that
//! speaks one protocol, two for a bridge during a rolling upgrade.

use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::dispatch::Dispatcher;
pub use crate::front::FrontSettings;
#[cfg(doc)]
use crate::front::Messenger;
use crate::member::{MemberId, ProtocolVersion};
use crate::message::Tag;
use crate::messenger::{SendError, TransportEvent};
use crate::priority::Priority;
use crate::quic::{LimitStats, PeerStats, QueryError};
use crate::socket::{SocketFaults, SocketStats};
use crate::view::View;

/// A future a carrier returns, boxed so that the trait stays object-safe.
pub type CarrierFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Answers one query type: the encoded query and the asker's address in, the encoded
/// answer (or why the query did not decode) out.
pub type QueryHandler = Arc<dyn Fn(&[u8], SocketAddr) -> Result<Bytes, String> + Send + Sync>;

/// What the carriers of one messenger share: where received messages go and where
/// events are raised. Created by the messenger's constructor before the carriers.
#[derive(Clone, Debug)]
pub struct Hub {
    /// Routes received messages to subscriptions.
    pub dispatcher: Arc<Dispatcher>,
    /// Transport events.
    pub events: broadcast::Sender<TransportEvent>,
}

/// Transport events buffered for slow event subscribers.
const EVENT_CAPACITY: usize = 1024;

impl Hub {
    /// A hub whose subscriptions buffer up to `subscription_capacity` messages each.
    pub fn new(subscription_capacity: usize) -> Hub {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Hub {
            dispatcher: Dispatcher::new(subscription_capacity),
            events,
        }
    }

    /// Raises `event` for whoever listens.
    pub fn emit(&self, event: TransportEvent) {
        // No subscriber is not an error: events are for whoever listens.
        let _ = self.events.send(event);
    }
}

/// What a carrier did with a payload for one recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued (reliable) or handed to the network (datagram).
    Accepted,
    /// The carrier keeps no state for the member and will not: it departed, or the
    /// carrier is closing, or holds as many members outside the view as it may.
    NotInView,
    /// The member said it takes no frame this large on this priority.
    TooLarge,
    /// The member's queue is over its byte bound: refused.
    Backlogged {
        /// Bytes queued for the member.
        queued_bytes: usize,
        /// True for the first refusal since the queue was last under its bound (the
        /// messenger raises [`TransportEvent::Backlogged`] once per streak).
        first_of_streak: bool,
    },
    /// A datagram with no connection up to take it (one is being started).
    NotSent,
}

/// One protocol below the [`Messenger`].
pub trait Carrier: Send + Sync + std::fmt::Debug + 'static {
    /// This member's identity on this carrier.
    fn local_member(&self) -> &MemberId;

    /// True if this carrier speaks to members of `version`.
    fn speaks(&self, version: ProtocolVersion) -> bool;

    /// Fails if a payload of `len` bytes under `tag` cannot go on `priority` (`None`: as a
    /// datagram), or if the carrier is closed.
    fn check_size(&self, tag: Tag, len: usize, priority: Option<Priority>)
    -> Result<(), SendError>;

    /// The view installed: members of `old` not in `new` are forgotten (what was queued
    /// for them drains, bounded); `new`'s members may send.
    fn install_view(&self, old: &View, new: &View);

    /// A view being prepared: its members may send application messages from now on.
    fn expect_view(&self, view: &View);

    /// Queues `payload` on `priority` for each of `recipients` (never the local member),
    /// telling `report` what became of each. The payload moves into the last recipient.
    fn push(
        &self,
        recipients: &[&MemberId],
        priority: Priority,
        tag: Tag,
        payload: Bytes,
        report: &mut dyn FnMut(&MemberId, Pushed),
    );

    /// Sends `payload` under `tag` as a datagram to each of `recipients` (never the local
    /// member): unreliable, or reliably on Bulk where it is too large for one.
    fn push_datagram(
        &self,
        recipients: &[&MemberId],
        tag: Tag,
        payload: &Bytes,
        report: &mut dyn FnMut(&MemberId, Pushed),
    );

    /// Answers queries under `tag` with `handler` from now on.
    fn serve(&self, tag: Tag, handler: QueryHandler);

    /// Asks whoever listens at `address` the encoded `query` under `tag` within `limit`;
    /// the encoded answer.
    fn ask(
        &self,
        address: SocketAddr,
        tag: Tag,
        query: Bytes,
        limit: Duration,
    ) -> CarrierFuture<'_, Result<Bytes, QueryError>>;

    /// When anything last arrived from `member`.
    fn last_heard(&self, member: &MemberId) -> Option<Instant>;

    /// Knocks at `member`'s port, for an ICMP answer if nothing listens (QUIC only).
    fn knock(&self, member: &MemberId) {
        let _ = member;
    }

    /// What the carrier knows about a peer.
    fn peer_stats(&self, member: &MemberId) -> Option<PeerStats> {
        let _ = member;
        None
    }

    /// Counters of the limits on what peers may send or hold.
    fn limit_stats(&self) -> LimitStats {
        LimitStats::default()
    }

    /// The socket's fault rules (for tests).
    fn faults(&self) -> &SocketFaults;

    /// The socket's counters.
    fn socket_stats(&self) -> SocketStats;

    /// Waits until everything sent is acknowledged, bounded by the carrier's shutdown
    /// timeout; true if it was.
    fn flush(&self) -> CarrierFuture<'_, bool>;

    /// Closes the carrier for good while the messenger goes on (a bridge's legacy side once
    /// no member of its version is left); `reason` is what it tells those still speaking it.
    fn retire(&self, reason: &str) {
        let _ = reason;
    }

    /// True once [`Carrier::retire`] was called.
    fn is_retired(&self) -> bool {
        false
    }

    /// Stops as a crash of the process would (for tests).
    fn crash(&self);

    /// Stops at once and frees the port, for a member binding its address again.
    fn release_port(&self) {}

    /// Stops everything at once: the messenger's last handle was dropped, it crashed, or
    /// its graceful shutdown is over.
    fn abort(&self);

    /// Flushes what is queued (bounded by its shutdown timeout) and stops.
    fn shutdown(&self) -> CarrierFuture<'_, ()>;

    /// The carrier as [`Any`], so that the messenger can hand out its protocol's own type.
    fn as_any(&self) -> &dyn Any;
}
