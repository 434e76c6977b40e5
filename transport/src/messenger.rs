//! What a [`Messenger`](crate::Messenger)'s sends return ([`SendOutcome`], [`SendError`])
//! and the events it raises ([`TransportEvent`]), whichever carrier is behind it.

use std::net::SocketAddr;

use crate::member::{MemberId, ProtocolVersion};
use crate::message::Tag;

/// What `send` did with each recipient it could not accept the message for. For a
/// reliable message, accepted means queued: it will be delivered exactly once while the
/// recipient stays in the view. For a datagram, accepted means handed to QUIC on a live
/// connection (or queued on Bulk, when too large for one): it may still be lost on the way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "the outcome names the recipients the message was not accepted for"]
pub struct SendOutcome {
    /// Recipients not in the current view: nothing was queued for them.
    pub not_in_view: Vec<MemberId>,
    /// Recipients whose queue is over its byte bound: the message was refused for them
    /// (never silently dropped), and a [`TransportEvent::Backlogged`] was raised.
    pub backlogged: Vec<MemberId>,
    /// Recipients that said, when they connected, that they take no frame this large on
    /// this priority (their `max_frame_bytes_by_priority` is smaller than this member's):
    /// refused for them, as [`SendError::TooLarge`] refuses it for everyone.
    pub too_large: Vec<MemberId>,
    /// Datagrams only: recipients with no connection up yet (one is being dialed) or whose
    /// connection refused the datagram; it was not sent to them.
    pub not_sent: Vec<MemberId>,
}

impl SendOutcome {
    /// True if the message was accepted for every recipient.
    pub fn is_complete(&self) -> bool {
        self.not_in_view.is_empty()
            && self.backlogged.is_empty()
            && self.too_large.is_empty()
            && self.not_sent.is_empty()
    }
}

/// Why `send` accepted the message for no recipient at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The messenger is shutting down or has shut down.
    #[error("the messenger has shut down")]
    Shutdown,
    /// The message could not be encoded.
    #[error("message with tag {tag} could not be encoded: {source}")]
    Encode {
        /// The message's tag.
        tag: Tag,
        /// The encoder's error.
        source: postcard::Error,
    },
    /// The encoded message is larger than the configured frame limit.
    #[error("message with tag {tag} is {size} bytes encoded, over the limit of {max} bytes")]
    TooLarge {
        /// The message's tag.
        tag: Tag,
        /// Its encoded frame size.
        size: usize,
        /// The configuration's limit for the message's priority
        /// (`max_frame_bytes_by_priority`; `max_frame_bytes` for datagrams).
        max: usize,
    },
    /// Application tags may not use the Control priority, which the membership protocol owns.
    #[error("message with tag {0} is an application tag and cannot use the control priority")]
    ControlReserved(Tag),
    /// Only cohort's own protocols may reach members outside the view.
    #[error("message with tag {0} is an application tag and cannot be sent outside the view")]
    ProtocolOnly(Tag),
    /// An application sent a message under a tag reserved for cohort's own protocols
    /// (below [`Tag::FIRST_APPLICATION`]): its receivers would hand it to the protocol.
    #[error(
        "message with tag {0} uses a tag reserved for cohort's own protocols; application \
         tags start at {first}",
        first = Tag::FIRST_APPLICATION
    )]
    ReservedTag(Tag),
}

/// Something that happened to the transport, for the membership layer and operators.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportEvent {
    /// A connection to the member completed its Hello exchange.
    PeerConnected {
        /// The peer.
        member: MemberId,
        /// True if this member dialed the connection.
        dialed_by_us: bool,
    },
    /// The connection to the member ended.
    PeerDisconnected {
        /// The peer.
        member: MemberId,
        /// Why, as quinn or the protocol reported it.
        reason: String,
    },
    /// Dialing the member failed (unreachable, TLS refused, Hello not answered).
    DialFailed {
        /// The member dialed.
        member: MemberId,
        /// Why; names the certificate problem when TLS refused.
        reason: String,
    },
    /// An incoming connection was refused before it counted as a peer.
    IncomingRejected {
        /// Where it came from.
        remote: SocketAddr,
        /// Why; names the certificate problem when TLS refused it.
        reason: String,
    },
    /// A message queued for `member` before it said what it takes (on connecting) turned
    /// out larger than its limit for the priority: it was not sent (the peer would have
    /// closed the connection, and the message would have been sent again on the next,
    /// for ever). Sends after the peer said so are refused at once
    /// ([`SendOutcome::too_large`]).
    TooLargeForPeer {
        /// The peer.
        member: MemberId,
        /// The message's tag.
        tag: Tag,
        /// Its frame's size in bytes.
        size: usize,
        /// The peer's limit for the priority.
        max: usize,
    },
    /// A peer broke the protocol; its connection was closed with the named code.
    ProtocolViolation {
        /// The peer.
        member: MemberId,
        /// What was wrong.
        reason: String,
    },
    /// A host reported (ICMP) that a datagram to `address` could not be delivered: nothing
    /// listens on that port any more, or the host cannot be reached. A hint, not proof:
    /// ICMP is not authenticated. Only where the platform reports such errors (Linux).
    Unreachable {
        /// The destination the datagram was sent to.
        address: SocketAddr,
        /// What the error said.
        reason: String,
    },
    /// A member closed or refused this member's connection because this member is not in
    /// its view (close code `REMOVED_FROM_VIEW`): it has installed a view without this
    /// member, or never admitted it. From a member of this member's own view, that says
    /// this member missed a view change that may have removed it.
    RemovedBy {
        /// The member that refused.
        member: MemberId,
    },
    /// A protocol was closed for good on this member: a bridge whose view has no member of
    /// that version left stops speaking it.
    ProtocolClosed {
        /// The protocol version closed.
        version: ProtocolVersion,
        /// Why, for people.
        reason: String,
    },
    /// A destination's queue reached its byte bound; sends to it are refused until it drains.
    Backlogged {
        /// The slow member.
        member: MemberId,
        /// Bytes queued for it.
        queued_bytes: usize,
    },
    /// Reliable messages this member sent `member` under `tag` found no subscriber there
    /// and were dropped (QUIC only; the first one is reported at once, later ones at most
    /// once a second per tag).
    Undelivered {
        /// The member that had no subscriber.
        member: MemberId,
        /// The messages' tag.
        tag: Tag,
        /// How many were dropped since the last report for this tag.
        count: u64,
    },
}
