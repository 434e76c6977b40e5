//! cohort-transport: the QUIC messenger and the vocabulary every cohort crate shares.
//!
//! - [`member`], [`view`], [`priority`], [`message`]: who is in the cluster, in what order,
//!   and what they send each other.
//! - [`messenger`]: the [`Messenger`] trait that the membership layer drives.
//! - [`quic`]: [`QuicMessenger`], the messenger over QUIC (quinn) with mutual TLS (rustls).
//! - [`tls`]: the cluster's TLS settings, loaded and checked into QUIC crypto configs.
//! - [`wire`]: the versioned wire format (frames, datagrams, close codes).
//! - [`socket`]: the member's one UDP socket, shared with the legacy protocol, and the
//!   fault-injection seam used by tests.
//! - `unreachable`: ICMP errors naming a destination (a closed port), reported as
//!   [`TransportEvent::Unreachable`].
//! - [`dispatch`]: routing received messages to typed subscriptions.
//!
//! Data flows `send` → per-destination queue → writer task → QUIC stream → the peer's
//! reader → sequence check → [`Dispatcher`](dispatch::Dispatcher) → [`Subscription`].

pub mod dispatch;
pub mod member;
pub mod message;
pub mod messenger;
pub mod priority;
pub mod quic;
pub mod rate;
pub mod settings;
pub mod socket;
mod sync;
pub mod tls;
mod unreachable;
pub mod view;
pub mod wire;

pub use dispatch::{SubscribeError, Subscription};
pub use member::{Identity, MemberAttributes, MemberId, MemberKind, ProtocolVersion};
pub use message::{Delivery, Envelope, Message, Query, Tag};
pub use messenger::{Messenger, SendError, SendOutcome, TransportEvent};
pub use priority::Priority;
pub use quic::{BindError, PeerStats, QueryError, QuicConfig, QuicMessenger};
pub use settings::InvalidConfig;
pub use tls::{ClusterTls, TlsError, TlsSettings};
pub use view::{View, ViewId};
