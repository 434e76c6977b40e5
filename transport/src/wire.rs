//! The QUIC wire format: stream headers, frames, datagrams and close codes.
//!
//! This module is a promise to other versions. Everything here is stable; a change to a
//! value or layout is a compatibility decision with a test of its own (see the tests below,
//! which pin the exact bytes).
//!
//! ```text
//! uni data stream   := stream-header frame*
//! uni ack stream    := format:u8 0x10 Ack*
//! stream-header     := format:u8 priority:u8
//! control stream    := frame*                  (bidirectional; dialer sends Hello first)
//! frame             := len:u32le format:u8 kind:u8 body      (len counts format..body)
//! body(Hello)       := postcard(Hello)
//! body(HelloAck)    := postcard(HelloAck)
//! body(Data)        := seq:varint tag:varint payload          (payload = postcard(message))
//!                      tag TOO_LARGE_STAND_IN: no payload; tag UNDELIVERED (Control only):
//!                      payload = tag:varint count:varint
//! body(Goodbye)     := opened:u8      (bit i set: the data stream of priority i was opened)
//! body(Ack)         := delivered:varint x4   (per priority, last sequence number delivered)
//! body(Query)       := tag:varint payload     (first frame of a query connection, no Hello)
//! body(Answer)      := tag:varint payload     (the one answer, then the stream ends)
//! datagram          := format:u8 kind:u8(=Datagram) tag:varint payload
//! knock             := 0x40                    (one UDP datagram of one byte, outside QUIC)
//! ```
//!
//! Decoding never panics: every malformed input is a [`WireError`] naming what was wrong,
//! and the connection that sent it is closed with [`CloseCode::MalformedFrame`].

use std::collections::VecDeque;
use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::member::MemberId;
use crate::message::Tag;
use crate::priority::Priority;

/// The frame format version carried by every frame, stream header and datagram.
pub const FRAME_FORMAT: u8 = 1;

/// A knock: a UDP datagram of this one byte, sent beside QUIC to a member's port between
/// heartbeats so that a crashed member's closed port answers with ICMP port unreachable
/// sooner. It asks nothing and is never answered. Its byte has QUIC's fixed bit set, so a
/// member's socket counts it apart from legacy datagrams, and a build that does not know
/// knocks hands it to quinn, which drops a datagram too short to be a QUIC packet without
/// a word. Not authenticated, so it is never a sign of life.
pub const KNOCK: [u8; 1] = [0x40];

/// Bytes before a frame's body: length (4), format (1), kind (1).
pub const FRAME_HEADER_LEN: usize = 6;

/// Stable frame kinds. Values are never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// First frame on a control stream, from the dialer.
    Hello = 1,
    /// The acceptor's answer to a Hello that it accepts.
    HelloAck = 2,
    /// An application or membership message with its sequence number.
    Data = 3,
    /// Last frame on a control stream of a member shutting down gracefully: it has
    /// finished every data stream it opened, and waits for the peer to close the
    /// connection once it has read them to their end.
    Goodbye = 4,
    /// Per priority, the last sequence number the sender of this frame has delivered to its
    /// subscribers: the other side may forget everything up to it. Control stream only.
    Ack = 5,
    /// A one-shot question from a process that is not a peer (discovery): the first frame
    /// on the control stream instead of Hello. The acceptor answers once and the connection
    /// ends; no peer state is created on either side.
    Query = 6,
    /// The answer to a [`FrameKind::Query`], with the query's tag.
    Answer = 7,
    /// An unreliable message (datagram).
    Datagram = 16,
}

impl FrameKind {
    fn from_wire(value: u8) -> Option<FrameKind> {
        Some(match value {
            1 => FrameKind::Hello,
            2 => FrameKind::HelloAck,
            3 => FrameKind::Data,
            4 => FrameKind::Goodbye,
            5 => FrameKind::Ack,
            6 => FrameKind::Query,
            7 => FrameKind::Answer,
            16 => FrameKind::Datagram,
            _ => return None,
        })
    }
}

/// QUIC application close codes. Stable values; the reason text is for people.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCode {
    /// The member is shutting down gracefully.
    Shutdown,
    /// Both members dialed at once; this connection lost (the smaller uuid's dial wins).
    DuplicateConnection,
    /// The peer sent bytes that do not parse as cohort frames.
    MalformedFrame,
    /// The peer broke the protocol (e.g. data before Hello, a sequence gap).
    ProtocolViolation,
    /// The peer did not complete the Hello exchange in time.
    HelloTimeout,
    /// The peer's identity is not acceptable (wrong member, address not in certificate).
    IdentityRejected,
    /// The peer speaks a protocol version this member does not.
    UnsupportedVersion,
    /// The member left the view; its connection is no longer wanted.
    RemovedFromView,
    /// The peer's connection was replaced by a newer one.
    Replaced,
    /// Closed on request (`QuicCarrier::reset_connection`); the next message reconnects.
    Reset,
    /// A query named a tag this member does not answer (yet).
    QueryNotServed,
    /// The peer sent a frame over this member's limit for its stream's priority
    /// (`QuicConfig::max_frame_bytes_by_priority`).
    FrameTooLarge,
    /// The peer's address already holds as many connections as this member accepts from one
    /// address (`QuicConfig::max_connections_per_address`).
    TooManyConnections,
    /// The peer's address asked more often than this member answers
    /// (`QuicConfig::max_queries_per_second_per_address`).
    RateLimited,
}

impl CloseCode {
    /// Every code, for tests and lookups.
    pub const ALL: [CloseCode; 14] = [
        CloseCode::Shutdown,
        CloseCode::DuplicateConnection,
        CloseCode::MalformedFrame,
        CloseCode::ProtocolViolation,
        CloseCode::HelloTimeout,
        CloseCode::IdentityRejected,
        CloseCode::UnsupportedVersion,
        CloseCode::RemovedFromView,
        CloseCode::Replaced,
        CloseCode::Reset,
        CloseCode::QueryNotServed,
        CloseCode::FrameTooLarge,
        CloseCode::TooManyConnections,
        CloseCode::RateLimited,
    ];

    /// The value sent in QUIC's CONNECTION_CLOSE frame.
    pub fn value(self) -> u32 {
        match self {
            CloseCode::Shutdown => 0x100,
            CloseCode::DuplicateConnection => 0x101,
            CloseCode::MalformedFrame => 0x102,
            CloseCode::ProtocolViolation => 0x103,
            CloseCode::HelloTimeout => 0x104,
            CloseCode::IdentityRejected => 0x105,
            CloseCode::UnsupportedVersion => 0x106,
            CloseCode::RemovedFromView => 0x107,
            CloseCode::Replaced => 0x108,
            CloseCode::Reset => 0x109,
            CloseCode::QueryNotServed => 0x10a,
            CloseCode::FrameTooLarge => 0x10b,
            CloseCode::TooManyConnections => 0x10c,
            CloseCode::RateLimited => 0x10d,
        }
    }

    /// The code with this value, if it is one of ours.
    pub fn from_value(value: u64) -> Option<CloseCode> {
        CloseCode::ALL
            .into_iter()
            .find(|c| u64::from(c.value()) == value)
    }

    /// The code as a quinn `VarInt`.
    pub fn varint(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(self.value())
    }

    /// The stable name, e.g. `MALFORMED_FRAME`.
    pub fn name(self) -> &'static str {
        match self {
            CloseCode::Shutdown => "SHUTDOWN",
            CloseCode::DuplicateConnection => "DUPLICATE_CONNECTION",
            CloseCode::MalformedFrame => "MALFORMED_FRAME",
            CloseCode::ProtocolViolation => "PROTOCOL_VIOLATION",
            CloseCode::HelloTimeout => "HELLO_TIMEOUT",
            CloseCode::IdentityRejected => "IDENTITY_REJECTED",
            CloseCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            CloseCode::RemovedFromView => "REMOVED_FROM_VIEW",
            CloseCode::Replaced => "REPLACED",
            CloseCode::Reset => "RESET",
            CloseCode::QueryNotServed => "QUERY_NOT_SERVED",
            CloseCode::FrameTooLarge => "FRAME_TOO_LARGE",
            CloseCode::TooManyConnections => "TOO_MANY_CONNECTIONS",
            CloseCode::RateLimited => "RATE_LIMITED",
        }
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#x})", self.name(), self.value())
    }
}

/// The dialer's greeting, first on the control stream.
///
/// On the wire: the postcard encoding of `member` and `delivered`, then, if present, that
/// of `limits`. A build that predates `limits` reads the first part and ignores the rest
/// (postcard leaves trailing bytes alone); a Hello without the trailer decodes with
/// `limits: None`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hello {
    /// Who is dialing.
    pub member: MemberId,
    /// Per priority (indexed by [`Priority::index`]), the highest sequence number the dialer
    /// has delivered from the acceptor, so the acceptor resends only what is missing.
    pub delivered: [u64; 4],
    /// The largest frames the dialer takes, so that the acceptor refuses bigger ones at
    /// its sender instead of sending them to be refused. `None` from older builds.
    #[serde(skip)]
    pub limits: Option<ReceiverLimits>,
}

/// The acceptor's answer when it keeps the connection; laid out on the wire as [`Hello`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HelloAck {
    /// Who accepted.
    pub member: MemberId,
    /// Per priority, the highest sequence number the acceptor has delivered from the dialer.
    pub delivered: [u64; 4],
    /// The largest frames the acceptor takes. `None` from older builds.
    #[serde(skip)]
    pub limits: Option<ReceiverLimits>,
}

/// What a member takes from a member of its view: per priority (indexed by
/// [`Priority::index`]), the largest data frame, header included. A frame over it closes
/// the connection with `FRAME_TOO_LARGE`, so a sender that knows these refuses it first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiverLimits {
    /// Per priority, the largest frame in bytes.
    pub frame_bytes: [u64; 4],
}

impl ReceiverLimits {
    /// The largest frame the receiver takes on `priority`.
    pub fn frame_limit(&self, priority: Priority) -> usize {
        usize::try_from(self.frame_bytes[priority.index()]).unwrap_or(usize::MAX)
    }
}

/// Postcard-encodes a greeting: its body, then its limits if it has them.
fn encode_greeting<T: Serialize>(
    kind: FrameKind,
    body: &T,
    limits: Option<&ReceiverLimits>,
) -> Result<Bytes, postcard::Error> {
    let mut bytes = postcard::to_allocvec(body)?;
    if let Some(limits) = limits {
        bytes.extend_from_slice(&postcard::to_allocvec(limits)?);
    }
    let mut buf = BytesMut::with_capacity(FRAME_HEADER_LEN + bytes.len());
    put_frame_header(&mut buf, kind, bytes.len());
    buf.extend_from_slice(&bytes);
    Ok(buf.freeze())
}

/// Decodes a greeting's body and, if bytes follow it, its limits.
fn decode_greeting<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: &'static str,
) -> Result<(T, Option<ReceiverLimits>), WireError> {
    let (greeting, rest) = postcard::take_from_bytes::<T>(body).map_err(|e| body_error(what, e))?;
    if rest.is_empty() {
        return Ok((greeting, None));
    }
    let limits = postcard::from_bytes(rest).map_err(|e| body_error(what, e))?;
    Ok((greeting, Some(limits)))
}

/// A decoded frame.
#[derive(Debug)]
pub enum Frame {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`HelloAck`].
    HelloAck(HelloAck),
    /// A message on a reliable stream.
    Data {
        /// Per (sender, priority) sequence number, starting at 1.
        seq: u64,
        /// The message type.
        tag: Tag,
        /// The postcard-encoded message.
        payload: Bytes,
    },
    /// The sender is leaving; see [`FrameKind::Goodbye`].
    Goodbye {
        /// Bit `i` set: the data stream of the priority with index `i` was opened.
        opened: u8,
    },
    /// See [`FrameKind::Ack`].
    Ack {
        /// Per priority (indexed by [`Priority::index`]), the last sequence number delivered.
        delivered: [u64; 4],
    },
    /// See [`FrameKind::Query`].
    Query {
        /// The query type.
        tag: Tag,
        /// The postcard-encoded query.
        payload: Bytes,
    },
    /// See [`FrameKind::Answer`].
    Answer {
        /// The tag of the query answered.
        tag: Tag,
        /// The postcard-encoded answer.
        payload: Bytes,
    },
    /// A frame kind this build does not know (from a newer peer): skipped and counted.
    Unknown {
        /// The kind byte.
        kind: u8,
    },
}

/// Bytes that are not a valid cohort frame, stream header or datagram.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A frame longer than this member accepts.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame length too short to hold the format and kind bytes.
    #[error("frame length {0} is shorter than its header")]
    FrameTooShort(usize),
    /// A frame format this build cannot read.
    #[error("unsupported frame format {0} (this build reads format {FRAME_FORMAT})")]
    UnsupportedFormat(u8),
    /// A stream header naming no known priority.
    #[error("stream header names unknown priority {0}")]
    UnknownPriority(u8),
    /// A data stream announced the Control priority, which only the control stream carries.
    #[error("a data stream cannot carry the control priority")]
    ControlOnDataStream,
    /// A varint that runs past its frame or beyond 64 bits.
    #[error("malformed varint in {0}")]
    BadVarint(&'static str),
    /// A tag beyond 32 bits.
    #[error("message tag {0} does not fit in 32 bits")]
    TagOutOfRange(u64),
    /// A body that does not decode.
    #[error("malformed {what}: {detail}")]
    Body {
        /// Which frame.
        what: &'static str,
        /// The decoder's complaint.
        detail: String,
    },
    /// A datagram too short or of the wrong kind.
    #[error("malformed datagram: {0}")]
    Datagram(&'static str),
}

/// Encodes a Hello frame.
pub fn encode_hello(hello: &Hello) -> Result<Bytes, postcard::Error> {
    encode_greeting(FrameKind::Hello, hello, hello.limits.as_ref())
}

/// Encodes a HelloAck frame.
pub fn encode_hello_ack(ack: &HelloAck) -> Result<Bytes, postcard::Error> {
    encode_greeting(FrameKind::HelloAck, ack, ack.limits.as_ref())
}

/// Encodes a Goodbye frame.
pub fn encode_goodbye(opened: u8) -> Bytes {
    let mut buf = BytesMut::with_capacity(FRAME_HEADER_LEN + 1);
    put_frame_header(&mut buf, FrameKind::Goodbye, 1);
    buf.put_u8(opened);
    buf.freeze()
}

/// Encodes an Ack frame.
pub fn encode_ack(delivered: [u64; 4]) -> Bytes {
    let mut scratch = [0u8; 40];
    let mut n = 0;
    for position in delivered {
        n += put_varint(&mut scratch[n..], position);
    }
    let mut buf = BytesMut::with_capacity(FRAME_HEADER_LEN + n);
    put_frame_header(&mut buf, FrameKind::Ack, n);
    buf.extend_from_slice(&scratch[..n]);
    buf.freeze()
}

/// Encodes a Query frame.
pub fn encode_query(tag: Tag, payload: &[u8]) -> Bytes {
    encode_tagged(FrameKind::Query, tag, payload)
}

/// Encodes an Answer frame.
pub fn encode_answer(tag: Tag, payload: &[u8]) -> Bytes {
    encode_tagged(FrameKind::Answer, tag, payload)
}

fn encode_tagged(kind: FrameKind, tag: Tag, payload: &[u8]) -> Bytes {
    let mut scratch = [0u8; 10];
    let n = put_varint(&mut scratch, u64::from(tag.0));
    let mut buf = BytesMut::with_capacity(FRAME_HEADER_LEN + n + payload.len());
    put_frame_header(&mut buf, kind, n + payload.len());
    buf.extend_from_slice(&scratch[..n]);
    buf.extend_from_slice(payload);
    buf.freeze()
}

/// Appends a data frame's header (everything before the payload) to `buf`.
///
/// The caller appends `payload_len` payload bytes next, or passes them as a separate chunk;
/// either way the bytes on the stream are the same.
pub fn put_data_header(buf: &mut BytesMut, seq: u64, tag: Tag, payload_len: usize) {
    let mut scratch = [0u8; 20];
    let mut n = put_varint(&mut scratch, seq);
    n += put_varint(&mut scratch[n..], u64::from(tag.0));
    put_frame_header(buf, FrameKind::Data, n + payload_len);
    buf.extend_from_slice(&scratch[..n]);
}

/// The length a data frame occupies on the stream.
pub fn data_frame_len(seq: u64, tag: Tag, payload_len: usize) -> usize {
    FRAME_HEADER_LEN + varint_len(seq) + varint_len(u64::from(tag.0)) + payload_len
}

fn put_frame_header(buf: &mut BytesMut, kind: FrameKind, body_len: usize) {
    // Callers bound frames far below 4 GiB (max_frame_bytes); saturate rather than wrap so
    // an impossible length can only produce a frame the peer rejects.
    let len = u32::try_from(body_len + 2).unwrap_or(u32::MAX);
    buf.put_u32_le(len);
    buf.put_u8(FRAME_FORMAT);
    buf.put_u8(kind as u8);
}

/// The two bytes that open a data stream.
pub fn stream_header(priority: Priority) -> [u8; 2] {
    [FRAME_FORMAT, priority as u8]
}

/// The second byte of the header of the stream that carries acknowledgements.
///
/// Acknowledgements have a stream of their own so that they never wait behind messages
/// being delivered to a slow subscriber: a sender's window must keep draining whatever the
/// receiving application does with the Control priority.
pub const ACK_STREAM: u8 = 0x10;

/// What a unidirectional stream carries, from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// Messages of one data priority.
    Data(Priority),
    /// `Ack` frames.
    Acks,
}

/// The two bytes that open the acknowledgement stream.
pub fn ack_stream_header() -> [u8; 2] {
    [FRAME_FORMAT, ACK_STREAM]
}

/// Parses a unidirectional stream's opening bytes.
pub fn parse_stream_header(header: [u8; 2]) -> Result<StreamKind, WireError> {
    if header[0] != FRAME_FORMAT {
        return Err(WireError::UnsupportedFormat(header[0]));
    }
    if header[1] == ACK_STREAM {
        return Ok(StreamKind::Acks);
    }
    match Priority::from_wire(header[1]) {
        Some(Priority::Control) => Err(WireError::ControlOnDataStream),
        Some(p) => Ok(StreamKind::Data(p)),
        None => Err(WireError::UnknownPriority(header[1])),
    }
}

/// Encodes an unreliable message.
pub fn encode_datagram(tag: Tag, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(2 + 5 + payload.len());
    buf.put_u8(FRAME_FORMAT);
    buf.put_u8(FrameKind::Datagram as u8);
    let mut scratch = [0u8; 10];
    let n = put_varint(&mut scratch, u64::from(tag.0));
    buf.extend_from_slice(&scratch[..n]);
    buf.extend_from_slice(payload);
    buf.freeze()
}

/// Decodes an unreliable message into its tag and payload.
pub fn decode_datagram(mut datagram: Bytes) -> Result<(Tag, Bytes), WireError> {
    if datagram.len() < 2 {
        return Err(WireError::Datagram("shorter than its header"));
    }
    if datagram[0] != FRAME_FORMAT {
        return Err(WireError::UnsupportedFormat(datagram[0]));
    }
    if datagram[1] != FrameKind::Datagram as u8 {
        return Err(WireError::Datagram("unknown datagram kind"));
    }
    datagram.advance(2);
    let tag = take_tag(&mut datagram, "datagram tag")?;
    Ok((tag, datagram))
}

/// The tag of a data frame that stands in for a message its sender did not send because
/// the receiver said it takes no frame that large (the message was queued before the
/// receiver said so). It has no payload; the receiver takes its sequence number and
/// delivers nothing, so the stream goes on. (An older receiver finds no subscriber for
/// the tag and drops it the same way.)
pub const TOO_LARGE_STAND_IN: Tag = Tag(0x0001);

/// The tag of a data frame on the Control stream that tells a member its messages of one
/// application tag were dropped by this member for want of a subscriber. Its payload is
/// [`encode_undelivered`]: the tag and how many were dropped since the last notice for
/// it. Sent once per tag at first, then at most once per tag and second. An older
/// receiver finds no subscriber for it, counts it as an unknown tag and drops it; an older
/// sender never sends one, so its messages are dropped as before, unreported.
pub const UNDELIVERED: Tag = Tag(0x0002);

/// The payload of an [`UNDELIVERED`] notice: `tag:varint count:varint`.
pub fn encode_undelivered(tag: Tag, count: u64) -> Bytes {
    let mut scratch = [0u8; 20];
    let n = put_varint(&mut scratch, u64::from(tag.0));
    let m = put_varint(&mut scratch[n..], count);
    Bytes::copy_from_slice(&scratch[..n + m])
}

/// Decodes an [`UNDELIVERED`] notice's payload into the tag and the count; trailing bytes
/// (a later version's additions) are left alone.
pub fn decode_undelivered(mut payload: Bytes) -> Result<(Tag, u64), WireError> {
    let tag = take_tag(&mut payload, "undelivered notice tag")?;
    let count = take_varint(&mut payload, "undelivered notice count")?;
    Ok((tag, count))
}

/// Encodes a message's payload with postcard into a buffer sized once: the size is
/// counted first, so the bytes are written once, without the reallocations of a growing
/// buffer, and become [`Bytes`] without another copy.
pub fn encode_payload<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, postcard::Error> {
    let size = postcard::experimental::serialized_size(value)?;
    let bytes = postcard::to_extend(value, Vec::with_capacity(size))?;
    Ok(Bytes::from(bytes))
}

/// How far ahead of the bytes received a [`FrameDecoder`] reserves memory for a frame.
pub const RESERVE_AHEAD: usize = 64 << 10;

/// The frame limit before a peer is known: the first frame on a connection (a Hello, a
/// HelloAck, a query). Each of those is far smaller; a member's limits for data frames
/// apply only once its Hello is accepted. (A query's answer may be larger, up to
/// `max_frame_bytes`: a view, from a member the asker chose to ask.)
pub const HANDSHAKE_FRAME_LIMIT: usize = 64 << 10;

/// Splits a byte stream into frames.
///
/// Feed it whatever the stream yields, as [`Bytes`] chunks with
/// [`FrameDecoder::push_chunk`] or copied with [`FrameDecoder::push`]; take complete
/// frames with [`FrameDecoder::next_frame`]. A frame that lies whole inside one chunk is
/// sliced out of it without copying (a QUIC stream yields one chunk per packet, so small
/// frames mostly do); only a frame spread over several chunks is put together in a buffer of
/// its own. The announced length is checked against the limit before any of the body is
/// buffered, and memory is reserved only [`RESERVE_AHEAD`] ahead of the bytes that arrived,
/// so a hostile length cannot make it allocate.
#[derive(Debug)]
pub struct FrameDecoder {
    /// A frame being put together from several chunks; empty when none is.
    partial: BytesMut,
    /// Chunks received and not yet taken, oldest first.
    chunks: VecDeque<Bytes>,
    /// The bytes in `chunks`.
    queued: usize,
    max_frame: usize,
}

impl FrameDecoder {
    /// A decoder accepting frames of up to `max_frame` bytes (header included).
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder {
            partial: BytesMut::new(),
            chunks: VecDeque::new(),
            queued: 0,
            max_frame,
        }
    }

    /// Lowers (or raises) the frame limit from now on: the control stream's decoder starts
    /// with the handshake's limit and continues with the Control priority's.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    /// Appends received bytes (copied).
    pub fn push(&mut self, bytes: &[u8]) {
        self.push_chunk(Bytes::copy_from_slice(bytes));
    }

    /// Appends a received chunk; frames inside it are later sliced out of it, not copied.
    pub fn push_chunk(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.queued += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.partial.len() + self.queued
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        loop {
            if self.partial.is_empty() {
                let Some(front) = self.chunks.front_mut() else {
                    return Ok(None);
                };
                if let Some(header) = front.get(..4) {
                    let total = frame_total(header, self.max_frame)?;
                    if front.len() >= total {
                        let frame = front.split_to(total);
                        self.queued -= total;
                        if front.is_empty() {
                            self.chunks.pop_front();
                        }
                        return decode_frame(frame).map(Some);
                    }
                }
                // The frame goes on in later chunks: it is put together in `partial`.
                if let Some(front) = self.chunks.pop_front() {
                    self.queued -= front.len();
                    self.partial.extend_from_slice(&front);
                }
                continue;
            }
            let need = match self.partial.get(..4) {
                Some(header) => {
                    let total = frame_total(header, self.max_frame)?;
                    if self.partial.len() >= total {
                        let frame = self.partial.split_to(total).freeze();
                        return decode_frame(frame).map(Some);
                    }
                    let need = total - self.partial.len();
                    // Memory is taken as the body's bytes arrive, at most RESERVE_AHEAD
                    // ahead of them: a hostile length within the limit, followed by
                    // nothing, costs a peer that little, not the whole announced frame.
                    self.partial
                        .reserve(need.min(self.queued.saturating_add(RESERVE_AHEAD)));
                    need
                }
                None => 4 - self.partial.len(),
            };
            let Some(front) = self.chunks.front_mut() else {
                return Ok(None);
            };
            let take = need.min(front.len());
            self.partial.extend_from_slice(&front[..take]);
            front.advance(take);
            self.queued -= take;
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
    }
}

/// The whole length of the frame whose 4-byte header this is, checked against `max_frame`.
fn frame_total(header: &[u8], max_frame: usize) -> Result<usize, WireError> {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len < 2 {
        return Err(WireError::FrameTooShort(len));
    }
    let total = len.saturating_add(4);
    if total > max_frame {
        return Err(WireError::FrameTooLarge {
            len: total,
            max: max_frame,
        });
    }
    Ok(total)
}

/// Decodes one whole frame, its length header included.
fn decode_frame(mut frame: Bytes) -> Result<Frame, WireError> {
    frame.advance(4);
    let format = frame.get_u8();
    if format != FRAME_FORMAT {
        return Err(WireError::UnsupportedFormat(format));
    }
    let kind = frame.get_u8();
    decode_body(kind, frame)
}

fn decode_body(kind: u8, mut body: Bytes) -> Result<Frame, WireError> {
    match FrameKind::from_wire(kind) {
        Some(FrameKind::Hello) => {
            let (hello, limits) = decode_greeting::<Hello>(&body, "Hello")?;
            Ok(Frame::Hello(Hello { limits, ..hello }))
        }
        Some(FrameKind::HelloAck) => {
            let (ack, limits) = decode_greeting::<HelloAck>(&body, "HelloAck")?;
            Ok(Frame::HelloAck(HelloAck { limits, ..ack }))
        }
        Some(FrameKind::Data) => {
            let seq = take_varint(&mut body, "data sequence number")?;
            let tag = take_tag(&mut body, "data tag")?;
            Ok(Frame::Data {
                seq,
                tag,
                payload: body,
            })
        }
        Some(FrameKind::Goodbye) => match body[..] {
            [opened] => Ok(Frame::Goodbye { opened }),
            _ => Err(WireError::Body {
                what: "Goodbye",
                detail: format!("{} bytes where 1 was expected", body.len()),
            }),
        },
        Some(FrameKind::Ack) => {
            let mut delivered = [0u64; 4];
            for position in &mut delivered {
                *position = take_varint(&mut body, "ack position")?;
            }
            if !body.is_empty() {
                return Err(WireError::Body {
                    what: "Ack",
                    detail: format!("{} bytes left over", body.len()),
                });
            }
            Ok(Frame::Ack { delivered })
        }
        Some(FrameKind::Query) => Ok(Frame::Query {
            tag: take_tag(&mut body, "query tag")?,
            payload: body,
        }),
        Some(FrameKind::Answer) => Ok(Frame::Answer {
            tag: take_tag(&mut body, "answer tag")?,
            payload: body,
        }),
        Some(FrameKind::Datagram) => Err(WireError::Body {
            what: "frame",
            detail: "datagram kind on a stream".into(),
        }),
        None => Ok(Frame::Unknown { kind }),
    }
}

fn body_error(what: &'static str, error: postcard::Error) -> WireError {
    WireError::Body {
        what,
        detail: error.to_string(),
    }
}

fn take_tag(buf: &mut Bytes, what: &'static str) -> Result<Tag, WireError> {
    let raw = take_varint(buf, what)?;
    u32::try_from(raw)
        .map(Tag)
        .map_err(|_| WireError::TagOutOfRange(raw))
}

fn varint_len(mut value: u64) -> usize {
    let mut n = 1;
    while value >= 0x80 {
        value >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut [u8], mut value: u64) -> usize {
    let mut i = 0;
    while value >= 0x80 {
        out[i] = (value as u8) | 0x80;
        value >>= 7;
        i += 1;
    }
    out[i] = value as u8;
    i + 1
}

fn take_varint(buf: &mut Bytes, what: &'static str) -> Result<u64, WireError> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let Some(&byte) = buf.get(i) else {
            return Err(WireError::BadVarint(what));
        };
        let bits = u64::from(byte & 0x7f);
        if i == 9 && byte > 1 {
            return Err(WireError::BadVarint(what));
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            buf.advance(i + 1);
            return Ok(value);
        }
    }
    Err(WireError::BadVarint(what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::MemberKind;

    fn data_frame(seq: u64, tag: Tag, payload: &[u8]) -> Bytes {
        let mut buf = BytesMut::new();
        put_data_header(&mut buf, seq, tag, payload.len());
        buf.extend_from_slice(payload);
        buf.freeze()
    }

    #[test]
    fn an_undelivered_notice_is_pinned_and_rejects_what_is_cut_short() {
        // A change to these bytes is a compatibility decision: older builds read them.
        assert_eq!(UNDELIVERED, Tag(0x0002));
        let payload = encode_undelivered(Tag(0x1_0000), 300);
        assert_eq!(&payload[..], &[0x80, 0x80, 0x04, 0xac, 0x02]);
        assert_eq!(
            decode_undelivered(payload.clone()).expect("decodes"),
            (Tag(0x1_0000), 300)
        );
        for cut in 0..payload.len() {
            assert!(decode_undelivered(payload.slice(..cut)).is_err(), "{cut}");
        }
        let mut longer = BytesMut::from(&payload[..]);
        longer.extend_from_slice(b"later");
        assert_eq!(
            decode_undelivered(longer.freeze()).expect("trailing bytes are left alone"),
            (Tag(0x1_0000), 300)
        );
    }

    #[test]
    fn data_frame_bytes_are_pinned() {
        // A change to these bytes breaks every deployed member: it needs a new FRAME_FORMAT.
        let frame = data_frame(300, Tag(0x1_0000), b"hi");
        assert_eq!(
            &frame[..],
            &[9, 0, 0, 0, 1, 3, 0xac, 0x02, 0x80, 0x80, 0x04, b'h', b'i']
        );
        assert_eq!(frame.len(), data_frame_len(300, Tag(0x1_0000), 2));
        assert_eq!(stream_header(Priority::Bulk), [1, 3]);
        assert_eq!(ack_stream_header(), [1, 0x10]);
        assert_eq!(parse_stream_header([1, 0x10]), Ok(StreamKind::Acks));
        assert_eq!(
            parse_stream_header([1, 2]),
            Ok(StreamKind::Data(Priority::Normal))
        );
        assert_eq!(&encode_datagram(Tag(5), b"x")[..], &[1, 16, 5, b'x']);
        assert_eq!(CloseCode::MalformedFrame.value(), 0x102);
        assert_eq!(&encode_goodbye(0b1010)[..], &[3, 0, 0, 0, 1, 4, 0b1010]);
        assert_eq!(
            &encode_ack([0, 1, 300, 2])[..],
            &[7, 0, 0, 0, 1, 5, 0, 1, 0xac, 0x02, 2]
        );
        assert_eq!(
            &encode_query(Tag(0x101), b"q")[..],
            &[5, 0, 0, 0, 1, 6, 0x81, 0x02, b'q']
        );
        assert_eq!(
            &encode_answer(Tag(0x101), b"a")[..],
            &[5, 0, 0, 0, 1, 7, 0x81, 0x02, b'a']
        );
        assert_eq!(CloseCode::QueryNotServed.value(), 0x10a);
        assert_eq!(CloseCode::FrameTooLarge.value(), 0x10b);
        assert_eq!(CloseCode::TooManyConnections.value(), 0x10c);
        assert_eq!(CloseCode::RateLimited.value(), 0x10d);
        let mut decoder = FrameDecoder::new(64);
        decoder.push(&encode_answer(Tag(9), b"yes"));
        assert!(matches!(
            decoder.next_frame(),
            Ok(Some(Frame::Answer { tag: Tag(9), payload })) if &payload[..] == b"yes"
        ));
        decoder.push(&encode_ack([5, 0, u64::MAX, 7]));
        assert!(matches!(
            decoder.next_frame(),
            Ok(Some(Frame::Ack {
                delivered: [5, 0, u64::MAX, 7]
            }))
        ));
    }

    /// A Hello as a build before receiver limits laid it out, for the compatibility tests.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct HelloBeforeLimits {
        member: MemberId,
        delivered: [u64; 4],
    }

    #[test]
    fn receiver_limits_ride_after_the_greeting_and_older_builds_read_around_them() {
        let member = MemberId::new(
            "a",
            "127.0.0.1:9".parse().expect("literal"),
            MemberKind::Member,
        );
        let limits = ReceiverLimits {
            frame_bytes: [1 << 20, 64 << 10, 128 << 20, 300],
        };
        let hello = Hello {
            member: member.clone(),
            delivered: [1, 2, 3, 4],
            limits: Some(limits),
        };
        let frame = encode_hello(&hello).expect("encode");
        let body = &frame[FRAME_HEADER_LEN..];
        // The trailer is the limits' postcard varints, after the old greeting's bytes: a
        // change to them breaks members of other versions.
        let old = postcard::to_allocvec(&HelloBeforeLimits {
            member: member.clone(),
            delivered: [1, 2, 3, 4],
        })
        .expect("encode");
        assert_eq!(&body[..old.len()], &old[..]);
        assert_eq!(
            &body[old.len()..],
            &[
                0x80, 0x80, 0x40, 0x80, 0x80, 0x04, 0x80, 0x80, 0x80, 0x40, 0xac, 0x02
            ]
        );
        // An older build reads the greeting and leaves the trailer alone.
        let read_by_old: HelloBeforeLimits = postcard::from_bytes(body).expect("old decode");
        assert_eq!(read_by_old.delivered, [1, 2, 3, 4]);
        // This build reads both.
        let mut decoder = FrameDecoder::new(HANDSHAKE_FRAME_LIMIT);
        decoder.push(&frame);
        match decoder.next_frame() {
            Ok(Some(Frame::Hello(got))) => assert_eq!(got.limits, Some(limits)),
            other => panic!("{other:?}"),
        }
        // A HelloAck from an older build: no trailer, no limits.
        let mut old_ack = BytesMut::new();
        put_frame_header(&mut old_ack, FrameKind::HelloAck, old.len());
        old_ack.extend_from_slice(&old);
        let mut decoder = FrameDecoder::new(HANDSHAKE_FRAME_LIMIT);
        decoder.push(&old_ack);
        match decoder.next_frame() {
            Ok(Some(Frame::HelloAck(got))) => {
                assert_eq!((got.delivered, got.limits), ([1, 2, 3, 4], None));
            }
            other => panic!("{other:?}"),
        }
        // A trailer that is not limits is an error naming the frame, not a panic.
        let mut bad = BytesMut::new();
        put_frame_header(&mut bad, FrameKind::Hello, old.len() + 1);
        bad.extend_from_slice(&old);
        bad.extend_from_slice(&[0xff]);
        let mut decoder = FrameDecoder::new(HANDSHAKE_FRAME_LIMIT);
        decoder.push(&bad);
        assert!(matches!(
            decoder.next_frame(),
            Err(WireError::Body { what: "Hello", .. })
        ));
    }

    #[test]
    fn frames_split_anywhere_decode_the_same() {
        let member = MemberId::new(
            "a",
            "127.0.0.1:9".parse().expect("literal"),
            MemberKind::Member,
        );
        let mut stream = BytesMut::new();
        stream.extend_from_slice(
            &encode_hello(&Hello {
                member: member.clone(),
                delivered: [1, 2, 3, 4],
                limits: None,
            })
            .expect("encode"),
        );
        for seq in 1..=50u64 {
            stream.extend_from_slice(&data_frame(seq, Tag(7), &vec![seq as u8; seq as usize]));
        }
        for split in [1, 3, 7, 64, stream.len()] {
            let mut decoder = FrameDecoder::new(1 << 20);
            let mut frames = Vec::new();
            for chunk in stream.chunks(split) {
                decoder.push(chunk);
                while let Some(frame) = decoder.next_frame().expect("valid stream") {
                    frames.push(frame);
                }
            }
            assert_eq!(frames.len(), 51);
            match &frames[0] {
                Frame::Hello(h) => {
                    assert!(h.member.same_details(&member));
                    assert_eq!(h.delivered, [1, 2, 3, 4]);
                }
                other => panic!("expected hello, got {other:?}"),
            }
            for (i, frame) in frames[1..].iter().enumerate() {
                let want = i as u64 + 1;
                match frame {
                    Frame::Data { seq, tag, payload } => {
                        assert_eq!((*seq, *tag), (want, Tag(7)));
                        assert_eq!(&payload[..], &vec![want as u8; want as usize][..]);
                    }
                    other => panic!("expected data, got {other:?}"),
                }
            }
            assert_eq!(decoder.buffered(), 0);
        }
    }

    #[test]
    fn a_frame_inside_one_chunk_is_sliced_out_of_it_and_one_across_chunks_is_whole() {
        let mut stream = BytesMut::new();
        for seq in 1..=3u64 {
            put_data_header(&mut stream, seq, Tag(7), 100);
            stream.extend_from_slice(&[seq as u8; 100]);
        }
        let stream = stream.freeze();
        // The first frame and half of the second in one chunk, the rest in another.
        let cut = stream.len() / 2;
        let (first, second) = (stream.slice(..cut), stream.slice(cut..));
        let inside = |payload: &Bytes, chunk: &Bytes| {
            let range = chunk.as_ptr_range();
            range.contains(&payload.as_ptr())
        };
        let mut decoder = FrameDecoder::new(1 << 10);
        decoder.push_chunk(first.clone());
        let Some(Frame::Data {
            seq: 1, payload, ..
        }) = decoder.next_frame().expect("valid")
        else {
            panic!("the first frame is whole");
        };
        assert!(inside(&payload, &first), "sliced, not copied");
        assert!(decoder.next_frame().expect("valid").is_none());
        decoder.push_chunk(second.clone());
        for want in 2..=3u64 {
            match decoder.next_frame().expect("valid") {
                Some(Frame::Data { seq, payload, .. }) => {
                    assert_eq!(seq, want);
                    assert_eq!(&payload[..], &[want as u8; 100][..]);
                    // The second was put together; the third lies inside the second chunk.
                    assert_eq!(inside(&payload, &second), want == 3);
                }
                other => panic!("expected data frame {want}, got {other:?}"),
            }
        }
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn memory_for_a_frame_is_taken_as_its_bytes_arrive() {
        // A 100 MiB frame within a 128 MiB limit, announced and then sent slowly.
        let mut decoder = FrameDecoder::new(128 << 20);
        let mut frame = BytesMut::new();
        put_data_header(&mut frame, 1, Tag(0x2_0000), 100 << 20);
        decoder.push(&frame);
        assert!(decoder.next_frame().expect("within the limit").is_none());
        assert!(
            decoder.partial.capacity() <= 2 * RESERVE_AHEAD,
            "{} bytes reserved for {} received",
            decoder.partial.capacity(),
            decoder.buffered()
        );
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..3 {
            decoder.push(&chunk);
            assert!(decoder.next_frame().expect("within the limit").is_none());
        }
        assert!(
            decoder.partial.capacity() <= 2 * decoder.buffered() + RESERVE_AHEAD,
            "{} bytes reserved for {} received",
            decoder.partial.capacity(),
            decoder.buffered()
        );
    }

    #[test]
    fn hostile_bytes_are_errors_not_panics() {
        let cases: Vec<(&[u8], WireError)> = vec![
            (
                &[0xff, 0xff, 0xff, 0x7f, 1, 3],
                WireError::FrameTooLarge {
                    len: 0x7fff_ffff + 4,
                    max: 1024,
                },
            ),
            (&[1, 0, 0, 0, 1], WireError::FrameTooShort(1)),
            (&[2, 0, 0, 0, 9, 3], WireError::UnsupportedFormat(9)),
            (
                &[3, 0, 0, 0, 1, 3, 0x80],
                WireError::BadVarint("data sequence number"),
            ),
            (
                &[4, 0, 0, 0, 1, 3, 1, 0xff],
                WireError::BadVarint("data tag"),
            ),
        ];
        for (bytes, want) in cases {
            let mut decoder = FrameDecoder::new(1024);
            decoder.push(bytes);
            assert_eq!(
                decoder.next_frame().expect_err("must fail"),
                want,
                "{bytes:?}"
            );
        }
        let mut decoder = FrameDecoder::new(1024);
        decoder.push(&[3, 0, 0, 0, 1, 1, 0xff]);
        assert!(matches!(
            decoder.next_frame(),
            Err(WireError::Body { what: "Hello", .. })
        ));
        let mut decoder = FrameDecoder::new(1024);
        decoder.push(&[2, 0, 0, 0, 1, 200]);
        assert!(matches!(
            decoder.next_frame(),
            Ok(Some(Frame::Unknown { kind: 200 }))
        ));
        assert_eq!(
            parse_stream_header([1, 0]),
            Err(WireError::ControlOnDataStream)
        );
        assert_eq!(
            parse_stream_header([1, 9]),
            Err(WireError::UnknownPriority(9))
        );
        assert_eq!(
            parse_stream_header([0, 1]),
            Err(WireError::UnsupportedFormat(0))
        );
        assert!(decode_datagram(Bytes::from_static(&[1])).is_err());
        assert!(decode_datagram(Bytes::from_static(&[1, 3, 0])).is_err());
        let mut eleven = vec![1u8, 16];
        eleven.extend_from_slice(&[0xff; 11]);
        assert!(decode_datagram(Bytes::from(eleven)).is_err());
        assert_eq!(
            decode_datagram(Bytes::from_static(&[1, 16, 0xff, 0xff, 0xff, 0xff, 0x7f])),
            Err(WireError::TagOutOfRange(0x7_ffff_ffff))
        );
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for value in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = [0u8; 10];
            let n = put_varint(&mut out, value);
            assert_eq!(n, varint_len(value));
            let mut bytes = Bytes::copy_from_slice(&out[..n]);
            assert_eq!(take_varint(&mut bytes, "t"), Ok(value));
            assert!(bytes.is_empty());
        }
    }
}
