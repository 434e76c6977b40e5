//! cohort-transport: the QUIC messenger and the vocabulary every cohort crate shares.
//! Embedders use it through the `cohort` crate, which re-exports what is a promise.
//!
//! Documented here (the vocabulary, at the crate root):
//! - who is in the cluster and in what order: [`Identity`], [`MemberId`], [`View`];
//! - what members send each other: [`Message`], [`Tag`], [`Priority`], [`Envelope`],
//!   [`Subscription`], [`SendOutcome`], [`TransportEvent`];
//! - [`Messenger`], the one messenger front, over QUIC (quinn) with mutual TLS (rustls)
//!   by default ([`Messenger::bind`]), and its tuning [`QuicConfig`]; [`tls`], the
//!   cluster's TLS settings; [`settings`], the convention every settings type follows
//!   ([`InvalidConfig`]).
//!
//! Hidden from these docs, public only for cohort's own crates, fuzzers, tests and bench
//! (not a promise): `wire` (the versioned wire format: frames, datagrams, close codes),
//! `dispatch` (routing received messages to typed subscriptions), `socket` (the member's
//! one UDP socket, shared with the legacy protocol, and the fault-injection seam),
//! `carrier` (the object-safe interface a protocol implements below the messenger, and
//! the `Hub` its carriers share), `quic` (the QUIC carrier), `rate` (token buckets).
//! Private: `front` (the [`Messenger`]), `local` (messages a member sends itself),
//! `member`, `message`, `messenger` (the send outcome, errors and events), `priority`,
//! `view`, `unreachable` (ICMP errors naming a destination, reported as
//! [`TransportEvent::Unreachable`]).
//!
//! Data flows `send` → encoded once → the recipient's carrier → per-destination queue →
//! QUIC stream → the peer's reader → sequence check → `Dispatcher` → [`Subscription`].

#[doc(hidden)]
pub mod carrier;
#[doc(hidden)]
pub mod dispatch;
mod front;
mod local;
mod member;
mod message;
mod messenger;
mod priority;
#[doc(hidden)]
pub mod quic;
#[doc(hidden)]
pub mod rate;
pub mod settings;
#[doc(hidden)]
pub mod socket;
mod sync;
pub mod tls;
mod unreachable;
mod view;
#[doc(hidden)]
pub mod wire;

pub use dispatch::{DispatchStats, SubscribeError, Subscription};
pub use front::Messenger;
pub use member::{Identity, MemberAttributes, MemberId, MemberKind, ProtocolVersion};
pub use message::{Delivery, Envelope, Message, Query, Tag};
pub use messenger::{SendError, SendOutcome, TransportEvent};
pub use priority::Priority;
pub use quic::{BindError, LimitStats, PeerStats, QueryError, QuicConfig};
pub use settings::InvalidConfig;
pub use socket::SocketStats;
pub use tls::{ClusterTls, TlsError, TlsSettings};
pub use view::{View, ViewId};
