//! Typed messages: what applications send and subscribe to.
//!
//! Every message type names a stable [`Tag`] of its own choosing. The tag travels in every
//! frame ahead of the postcard-encoded payload, so two builds or two versions agree on what
//! a frame carries without relying on anything compiler-generated such as `TypeId`.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::member::MemberId;
use crate::priority::Priority;

/// A message type's stable wire identifier.
///
/// Tags below [`Tag::FIRST_APPLICATION`] are reserved for cohort's own protocols
/// (membership, failure detection); applications choose tags at or above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(pub u32);

impl Tag {
    /// The first tag free for application messages.
    pub const FIRST_APPLICATION: Tag = Tag(0x1_0000);
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A type that can be sent through a messenger.
///
/// The encoding is postcard, whose format is frozen: a message type must keep its field
/// order and types for as long as any member in the cluster may decode it. A change is a new
/// type with a new tag.
pub trait Message: Serialize + DeserializeOwned + Send + 'static {
    /// This type's stable tag, unique within the cluster.
    const TAG: Tag;
}

/// How a message travelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// On the reliable, ordered stream of this priority.
    Reliable(Priority),
    /// As an unreliable QUIC datagram.
    Datagram,
}

/// A received message and who sent it.
#[derive(Clone, Debug)]
pub struct Envelope<M> {
    /// The sending member.
    pub from: MemberId,
    /// How it travelled.
    pub delivery: Delivery,
    /// The decoded message.
    pub message: M,
}

/// A question asked with `QuicMessenger::query` of whoever listens at an address, and its
/// answer type. For discovery: the asker need not be a member, nor know who will answer.
pub trait Query: Message {
    /// What the answerer sends back. Encoded with postcard, frozen like a message.
    type Answer: Serialize + DeserializeOwned + Send + 'static;
}
