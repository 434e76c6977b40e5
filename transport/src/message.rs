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
/// Tags below [`Tag::FIRST_APPLICATION`] (`0x1_0000`, 65,536) are reserved for cohort's own
/// protocols (membership, failure detection, the lease); applications choose tags at or
/// above it, and a membership `Member` refuses to subscribe or send a reserved one. Either pick a number, or derive one from a name that is stable
/// for as long as the type is on the wire:
///
/// ```
/// use cohort_transport::{Message, Tag};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Greeting(String);
///
/// impl Message for Greeting {
///     const TAG: Tag = Tag::from_name("my-service/greeting/v1");
/// }
///
/// assert!(Greeting::TAG.is_application());
/// assert_eq!(Greeting::TAG, Tag::from_name("my-service/greeting/v1"));
/// assert!(!Tag(0x0100).is_application());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(pub u32);

impl Tag {
    /// The first tag free for application messages: `Tag(0x1_0000)`.
    pub const FIRST_APPLICATION: Tag = Tag(0x1_0000);

    /// The application tag of `name`: its 32-bit FNV-1a hash, folded into the application
    /// range (so never reserved). The same name gives the same tag in every build and
    /// version; two names may collide (about one pair in 4 billion), which a member
    /// detects when it subscribes the second type (`SubscribeError::AlreadySubscribed`).
    /// Renaming changes the tag, which is a new message type on the wire.
    pub const fn from_name(name: &str) -> Tag {
        const OFFSET: u32 = 0x811c_9dc5;
        const PRIME: u32 = 0x0100_0193;
        let bytes = name.as_bytes();
        let mut hash = OFFSET;
        let mut i = 0;
        while i < bytes.len() {
            hash ^= bytes[i] as u32;
            hash = hash.wrapping_mul(PRIME);
            i += 1;
        }
        let span = u32::MAX - Tag::FIRST_APPLICATION.0;
        Tag(Tag::FIRST_APPLICATION.0 + hash % span)
    }

    /// True for a tag free for applications (at or above [`Tag::FIRST_APPLICATION`]).
    pub const fn is_application(self) -> bool {
        self.0 >= Tag::FIRST_APPLICATION.0
    }
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

/// A question asked with `Messenger::query` of whoever listens at an address, and its
/// answer type. For discovery: the asker need not be a member, nor know who will answer.
pub trait Query: Message {
    /// What the answerer sends back. Encoded with postcard, frozen like a message.
    type Answer: Serialize + DeserializeOwned + Send + 'static;
}

#[cfg(test)]
mod tests {
    use super::Tag;

    #[test]
    fn a_tag_from_a_name_is_stable_and_never_reserved() {
        // Pinned: a change here changes every derived tag on the wire. (The FNV-1a hashes
        // of "" and "a" are 0x811c_9dc5 and 0xe40c_292c, both below the span, so each is
        // just moved up by 0x1_0000.)
        assert_eq!(Tag::from_name(""), Tag(0x811d_9dc5));
        assert_eq!(Tag::from_name("a"), Tag(0xe40d_292c));
        assert_ne!(Tag::from_name("a"), Tag::from_name("b"));
        for name in ["", "a", "greeting", "my-service/greeting/v1", "\u{1f980}"] {
            assert!(Tag::from_name(name).is_application(), "{name}");
        }
        assert!(Tag::FIRST_APPLICATION.is_application());
        assert!(!Tag(0xffff).is_application());
    }
}
