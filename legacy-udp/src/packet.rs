//! The legacy wire format, protocol version 1: one UDP datagram is one packet.
//!
//! ```text
//! packet   := version:u8 (= 1) kind:u8 header (bincode 2, standard config) payload (the rest)
//! kinds    := 1 Data | 2 Ack | 3 Datagram | 4 Query | 5 Answer | 6 Refused
//! Data     := sender:MemberId receiver:uuid priority:u8 seq:u64 fragment:u32 fragments:u32 tag:u32
//!             + payload (one fragment of the message)
//! Ack      := sender:uuid receiver:uuid priority:u8 delivered:u64 beyond:u64
//!             (bit i of beyond: seq delivered+2+i was received)
//! Datagram := sender:MemberId tag:u32 + payload (unreliable: heartbeats)
//! Query    := id:u64 tag:u32 + payload       Answer := id:u64 tag:u32 + payload
//! Refused  := reason:string                 (a closed legacy side answering an old member)
//! ```
//!
//! The first byte is the protocol version, which has 0x40 and 0x80 clear, so a legacy
//! packet is never mistaken for QUIC (fixed bit 0x40 set) on the port both share. Every
//! packet names its sender (the full member id where the receiver may not know it yet: a
//! joiner's first messages) and, where it matters, its receiver's uuid, so that a process
//! restarted at the same address never takes (or acknowledges) what was meant for its
//! previous incarnation. Kinds and header field order are part of the format: a change is
//! a new protocol version. `tests::bytes_are_pinned` holds them.

use bytes::Bytes;
use cohort_transport::{MemberId, Priority};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The protocol version this crate speaks, and the first byte of each of its packets.
pub const VERSION: u8 = 1;

/// The largest header a packet may have; a longer one is malformed.
const MAX_HEADER_BYTES: usize = 4096;

/// bincode's standard configuration (varint integers), bounded so that a hostile length
/// prefix cannot make the decoder allocate more than a header can hold.
fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_HEADER_BYTES>()
}

/// A packet kind's stable number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// One fragment of a reliable message.
    Data = 1,
    /// Cumulative and selective acknowledgement of one reliable stream.
    Ack = 2,
    /// An unreliable message.
    Datagram = 3,
    /// A one-shot question to whoever listens at an address.
    Query = 4,
    /// The answer to a query.
    Answer = 5,
    /// A legacy side that closed for good, telling an old member why it is not heard.
    Refused = 6,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Data,
            2 => Kind::Ack,
            3 => Kind::Datagram,
            4 => Kind::Query,
            5 => Kind::Answer,
            6 => Kind::Refused,
            _ => return None,
        })
    }
}

/// The header of a Data packet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataHeader {
    /// Who sent it.
    pub sender: MemberId,
    /// The member it is for: another process at that address drops it unacknowledged.
    pub receiver: Uuid,
    /// The stream: [`Priority::index`].
    pub priority: u8,
    /// Sequence number in the stream, from 1; one per fragment.
    pub seq: u64,
    /// Which fragment of its message this is, from 0.
    pub fragment: u32,
    /// How many fragments the message has (1 when it was not split).
    pub fragments: u32,
    /// The message's tag.
    pub tag: u32,
}

/// The header (the whole) of an Ack packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckHeader {
    /// The receiver of the stream, acknowledging.
    pub sender: Uuid,
    /// The stream's sender, which this acknowledges to.
    pub receiver: Uuid,
    /// The stream: [`Priority::index`].
    pub priority: u8,
    /// Every sequence number up to this one has been delivered.
    pub delivered: u64,
    /// Bit i set: sequence number `delivered + 2 + i` was received (held out of order).
    pub beyond: u64,
}

/// The header of a Datagram packet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatagramHeader {
    /// Who sent it.
    pub sender: MemberId,
    /// The message's tag.
    pub tag: u32,
}

/// The header of a Query or Answer packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeHeader {
    /// Chosen by the asker; the answer repeats it.
    pub id: u64,
    /// The query's tag (the answer carries the same one).
    pub tag: u32,
}

/// A decoded packet.
#[derive(Clone, Debug, PartialEq)]
pub enum Packet {
    /// One fragment of a reliable message.
    Data(DataHeader, Bytes),
    /// An acknowledgement.
    Ack(AckHeader),
    /// An unreliable message.
    Datagram(DatagramHeader, Bytes),
    /// A question.
    Query(ExchangeHeader, Bytes),
    /// An answer.
    Answer(ExchangeHeader, Bytes),
    /// The legacy side is closed, and why.
    Refused(String),
}

/// Why a datagram is not a legacy packet this version understands.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the version and kind bytes.
    #[error("legacy packet of {0} bytes is too short")]
    TooShort(usize),
    /// Another protocol version.
    #[error("legacy packet of protocol version {0}, this member speaks {VERSION}")]
    Version(u8),
    /// A kind this version does not know.
    #[error("unknown legacy packet kind {0}")]
    Kind(u8),
    /// The header did not decode.
    #[error("malformed {kind:?} header: {reason}")]
    Header {
        /// The packet kind.
        kind: Kind,
        /// What the decoder said.
        reason: String,
    },
    /// A header field out of range.
    #[error("invalid {kind:?} packet: {reason}")]
    Invalid {
        /// The packet kind.
        kind: Kind,
        /// What was wrong.
        reason: &'static str,
    },
}

impl Packet {
    /// Encodes the packet into one datagram.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload().map_or(0, Bytes::len) + 128);
        out.push(VERSION);
        out.push(self.kind() as u8);
        let header = match self {
            Packet::Data(header, _) => {
                bincode::serde::encode_into_std_write(header, &mut out, config())
            }
            Packet::Ack(header) => {
                bincode::serde::encode_into_std_write(header, &mut out, config())
            }
            Packet::Datagram(header, _) => {
                bincode::serde::encode_into_std_write(header, &mut out, config())
            }
            Packet::Query(header, _) | Packet::Answer(header, _) => {
                bincode::serde::encode_into_std_write(header, &mut out, config())
            }
            Packet::Refused(reason) => {
                bincode::serde::encode_into_std_write(reason, &mut out, config())
            }
        };
        // Headers are small structures of this crate's own; only an id with an absurd
        // name could exceed the limit, and that would be a bug, not input.
        header.expect("a legacy header fits its limit");
        if let Some(payload) = self.payload() {
            out.extend_from_slice(payload);
        }
        out
    }

    /// Decodes one datagram.
    pub fn decode(datagram: &[u8]) -> Result<Packet, DecodeError> {
        let [version, kind, rest @ ..] = datagram else {
            return Err(DecodeError::TooShort(datagram.len()));
        };
        if *version != VERSION {
            return Err(DecodeError::Version(*version));
        }
        let kind = Kind::from_byte(*kind).ok_or(DecodeError::Kind(*kind))?;
        let payload = |used: usize| Bytes::copy_from_slice(&rest[used..]);
        Ok(match kind {
            Kind::Data => {
                let (header, used): (DataHeader, usize) = header(kind, rest)?;
                if Priority::ALL.get(usize::from(header.priority)).is_none() {
                    return Err(invalid(kind, "no such priority"));
                }
                if header.seq == 0 || header.fragments == 0 || header.fragment >= header.fragments {
                    return Err(invalid(kind, "sequence or fragment numbers out of range"));
                }
                Packet::Data(header, payload(used))
            }
            Kind::Ack => {
                let (header, used): (AckHeader, usize) = header(kind, rest)?;
                if Priority::ALL.get(usize::from(header.priority)).is_none() {
                    return Err(invalid(kind, "no such priority"));
                }
                if used != rest.len() {
                    return Err(invalid(kind, "trailing bytes"));
                }
                Packet::Ack(header)
            }
            Kind::Datagram => {
                let (header, used) = header(kind, rest)?;
                Packet::Datagram(header, payload(used))
            }
            Kind::Query => {
                let (header, used) = header(kind, rest)?;
                Packet::Query(header, payload(used))
            }
            Kind::Answer => {
                let (header, used) = header(kind, rest)?;
                Packet::Answer(header, payload(used))
            }
            Kind::Refused => {
                let (reason, _): (String, usize) = header(kind, rest)?;
                Packet::Refused(reason)
            }
        })
    }

    /// The packet's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Packet::Data(..) => Kind::Data,
            Packet::Ack(_) => Kind::Ack,
            Packet::Datagram(..) => Kind::Datagram,
            Packet::Query(..) => Kind::Query,
            Packet::Answer(..) => Kind::Answer,
            Packet::Refused(_) => Kind::Refused,
        }
    }

    fn payload(&self) -> Option<&Bytes> {
        match self {
            Packet::Data(_, payload)
            | Packet::Datagram(_, payload)
            | Packet::Query(_, payload)
            | Packet::Answer(_, payload) => Some(payload),
            Packet::Ack(_) | Packet::Refused(_) => None,
        }
    }
}

fn header<T: serde::de::DeserializeOwned>(
    kind: Kind,
    bytes: &[u8],
) -> Result<(T, usize), DecodeError> {
    bincode::serde::decode_from_slice(bytes, config()).map_err(|error| DecodeError::Header {
        kind,
        reason: error.to_string(),
    })
}

fn invalid(kind: Kind, reason: &'static str) -> DecodeError {
    DecodeError::Invalid { kind, reason }
}

#[cfg(test)]
mod tests {
    use cohort_transport::MemberKind;

    use super::*;

    fn member() -> MemberId {
        let address = "127.0.0.1:4000".parse().expect("literal");
        MemberId::new("m1", address, MemberKind::Member)
            .with_uuid(Uuid::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10))
    }

    fn every_kind() -> Vec<Packet> {
        let data = DataHeader {
            sender: member(),
            receiver: Uuid::from_u128(7),
            priority: 2,
            seq: 300,
            fragment: 1,
            fragments: 3,
            tag: 0x1_0001,
        };
        vec![
            Packet::Data(data, Bytes::from_static(b"hello")),
            Packet::Ack(AckHeader {
                sender: Uuid::from_u128(7),
                receiver: Uuid::from_u128(8),
                priority: 0,
                delivered: 299,
                beyond: 0b101,
            }),
            Packet::Datagram(
                DatagramHeader {
                    sender: member(),
                    tag: 0x102,
                },
                Bytes::from_static(b"beat"),
            ),
            Packet::Query(
                ExchangeHeader { id: 9, tag: 0x101 },
                Bytes::from_static(b"q"),
            ),
            Packet::Answer(
                ExchangeHeader { id: 9, tag: 0x101 },
                Bytes::from_static(b"a"),
            ),
            Packet::Refused("the cluster finished its upgrade".into()),
        ]
    }

    #[test]
    fn every_kind_round_trips_and_never_looks_like_quic() {
        for packet in every_kind() {
            let bytes = packet.encode();
            assert_eq!(
                bytes[0] & 0xc0,
                0,
                "{:?}: first byte {:#x}",
                packet.kind(),
                bytes[0]
            );
            assert_eq!(Packet::decode(&bytes), Ok(packet));
        }
    }

    #[test]
    fn bytes_are_pinned() {
        let ack = Packet::Ack(AckHeader {
            sender: Uuid::from_u128(1),
            receiver: Uuid::from_u128(2),
            priority: 3,
            delivered: 300,
            beyond: 5,
        });
        let mut expected = vec![1, 2];
        // Uuids are 16 raw bytes each (serde's byte form), integers varint.
        expected.push(16);
        expected.extend_from_slice(&Uuid::from_u128(1).into_bytes());
        expected.push(16);
        expected.extend_from_slice(&Uuid::from_u128(2).into_bytes());
        expected.extend_from_slice(&[3, 251, 0x2c, 0x01, 5]);
        assert_eq!(ack.encode(), expected);
        let query = Packet::Query(ExchangeHeader { id: 1, tag: 2 }, Bytes::from_static(b"x"));
        assert_eq!(query.encode(), vec![1, 4, 1, 2, b'x']);
    }

    #[test]
    fn garbage_is_refused_with_the_reason() {
        assert_eq!(Packet::decode(&[1]), Err(DecodeError::TooShort(1)));
        assert_eq!(Packet::decode(&[2, 1]), Err(DecodeError::Version(2)));
        assert_eq!(Packet::decode(&[1, 99]), Err(DecodeError::Kind(99)));
        assert!(matches!(
            Packet::decode(&[1, 1, 0xff, 0xff]),
            Err(DecodeError::Header {
                kind: Kind::Data,
                ..
            })
        ));
        // A length prefix claiming far more than the packet holds.
        assert!(matches!(
            Packet::decode(&[1, 6, 0xfc, 0xff, 0xff, 0xff, 0x7f]),
            Err(DecodeError::Header { .. })
        ));
        let mut bad = every_kind().remove(0);
        if let Packet::Data(header, _) = &mut bad {
            header.fragment = 3;
        }
        assert!(matches!(
            Packet::decode(&bad.encode()),
            Err(DecodeError::Invalid {
                kind: Kind::Data,
                ..
            })
        ));
        // Every truncation of a valid packet is an error or a shorter payload, never a panic.
        for packet in every_kind() {
            let bytes = packet.encode();
            for end in 0..bytes.len() {
                let _ = Packet::decode(&bytes[..end]);
            }
        }
    }
}
