//! Round trips of the QUIC wire format, for arbitrary values.
//!
//! Checked: any sequence of frames (data frames with any sequence number, tag and payload;
//! acks; queries and answers; goodbyes; Hello and HelloAck with any member identity),
//! encoded with the wire module's encoders and fed to a [`FrameDecoder`] in any chunk
//! split, decodes to exactly the frames encoded, with nothing left over; datagrams decode
//! to the tag and payload encoded; stream headers parse to the stream they open.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::BytesMut;
use cohort_transport::wire::{
    Frame, FrameDecoder, Hello, HelloAck, StreamKind, ack_stream_header, decode_datagram,
    encode_ack, encode_answer, encode_datagram, encode_goodbye, encode_hello, encode_hello_ack,
    encode_query, parse_stream_header, put_data_header, stream_header,
};
use cohort_transport::{
    MemberAttributes, MemberId, MemberKind, Priority, ProtocolVersion, Tag, ViewId,
};
use proptest::prelude::*;
use uuid::Uuid;

/// A frame as the test builds it: what was encoded, to compare with what is decoded.
#[derive(Clone, Debug)]
enum Sent {
    Data {
        seq: u64,
        tag: u32,
        payload: Vec<u8>,
    },
    Ack([u64; 4]),
    Query {
        tag: u32,
        payload: Vec<u8>,
    },
    Answer {
        tag: u32,
        payload: Vec<u8>,
    },
    Goodbye(u8),
    Hello(MemberId, [u64; 4]),
    HelloAck(MemberId, [u64; 4]),
}

impl Sent {
    fn encode(&self, out: &mut BytesMut) {
        match self {
            Sent::Data { seq, tag, payload } => {
                put_data_header(out, *seq, Tag(*tag), payload.len());
                out.extend_from_slice(payload);
            }
            Sent::Ack(delivered) => out.extend_from_slice(&encode_ack(*delivered)),
            Sent::Query { tag, payload } => {
                out.extend_from_slice(&encode_query(Tag(*tag), payload))
            }
            Sent::Answer { tag, payload } => {
                out.extend_from_slice(&encode_answer(Tag(*tag), payload))
            }
            Sent::Goodbye(opened) => out.extend_from_slice(&encode_goodbye(*opened)),
            Sent::Hello(member, delivered) => out.extend_from_slice(
                &encode_hello(&Hello {
                    member: member.clone(),
                    delivered: *delivered,
                    limits: None,
                })
                .expect("a Hello encodes"),
            ),
            Sent::HelloAck(member, delivered) => out.extend_from_slice(
                &encode_hello_ack(&HelloAck {
                    member: member.clone(),
                    delivered: *delivered,
                    limits: None,
                })
                .expect("a HelloAck encodes"),
            ),
        }
    }

    /// Whether `frame` is this frame, field by field (member ids in every detail).
    fn matches(&self, frame: &Frame) -> bool {
        match (self, frame) {
            (
                Sent::Data { seq, tag, payload },
                Frame::Data {
                    seq: s,
                    tag: t,
                    payload: p,
                },
            ) => seq == s && Tag(*tag) == *t && payload[..] == p[..],
            (Sent::Ack(sent), Frame::Ack { delivered }) => sent == delivered,
            (Sent::Query { tag, payload }, Frame::Query { tag: t, payload: p })
            | (Sent::Answer { tag, payload }, Frame::Answer { tag: t, payload: p }) => {
                Tag(*tag) == *t && payload[..] == p[..]
            }
            (Sent::Goodbye(sent), Frame::Goodbye { opened }) => sent == opened,
            (Sent::Hello(member, delivered), Frame::Hello(hello)) => {
                member.same_details(&hello.member) && *delivered == hello.delivered
            }
            (Sent::HelloAck(member, delivered), Frame::HelloAck(ack)) => {
                member.same_details(&ack.member) && *delivered == ack.delivered
            }
            _ => false,
        }
    }
}

fn address() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

fn member() -> impl Strategy<Value = MemberId> {
    let kind = prop_oneof![
        Just(MemberKind::Member),
        Just(MemberKind::Locator),
        Just(MemberKind::Admin)
    ];
    let attributes = (
        prop::collection::vec(".{0,12}", 0..4),
        any::<Option<u16>>(),
        any::<i32>(),
    )
        .prop_map(
            |(groups, direct_channel_port, weight_adjustment)| MemberAttributes {
                groups,
                direct_channel_port,
                weight_adjustment,
            },
        );
    (
        any::<u128>(),
        ".{0,24}",
        address(),
        kind,
        any::<u16>(),
        any::<Option<u64>>(),
        attributes,
    )
        .prop_map(|(uuid, name, address, kind, version, view, attributes)| {
            let mut id = MemberId::new(name, address, kind)
                .with_uuid(Uuid::from_u128(uuid))
                .with_version(ProtocolVersion(version))
                .with_attributes(attributes);
            if let Some(view) = view {
                id = id.with_view_id(ViewId(view));
            }
            id
        })
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..300)
}

fn frame() -> impl Strategy<Value = Sent> {
    prop_oneof![
        4 => (any::<u64>(), any::<u32>(), payload())
            .prop_map(|(seq, tag, payload)| Sent::Data { seq, tag, payload }),
        1 => any::<[u64; 4]>().prop_map(Sent::Ack),
        1 => (any::<u32>(), payload()).prop_map(|(tag, payload)| Sent::Query { tag, payload }),
        1 => (any::<u32>(), payload()).prop_map(|(tag, payload)| Sent::Answer { tag, payload }),
        1 => any::<u8>().prop_map(Sent::Goodbye),
        1 => (member(), any::<[u64; 4]>()).prop_map(|(m, d)| Sent::Hello(m, d)),
        1 => (member(), any::<[u64; 4]>()).prop_map(|(m, d)| Sent::HelloAck(m, d)),
    ]
}

/// Feeds `stream` to a decoder in chunks of the given sizes (repeated), taking every
/// frame as soon as it is complete.
fn decode_in_chunks(stream: &[u8], chunks: &[usize]) -> (Vec<Frame>, usize) {
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut frames = Vec::new();
    let mut rest = stream;
    for size in chunks.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*size).min(rest.len()));
        rest = tail;
        decoder.push(chunk);
        while let Some(frame) = decoder.next_frame().expect("an encoded stream decodes") {
            frames.push(frame);
        }
    }
    (frames, decoder.buffered())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn frames_split_anywhere_decode_to_what_was_encoded(
        sent in prop::collection::vec(frame(), 1..8),
        chunks in prop::collection::vec(1usize..80, 1..6),
    ) {
        let mut stream = BytesMut::new();
        for frame in &sent {
            frame.encode(&mut stream);
        }
        let (frames, left) = decode_in_chunks(&stream, &chunks);
        prop_assert_eq!(left, 0);
        prop_assert_eq!(frames.len(), sent.len());
        for (sent, frame) in sent.iter().zip(&frames) {
            prop_assert!(sent.matches(frame), "sent {:?}, decoded {:?}", sent, frame);
        }
    }

    #[test]
    fn data_frames_keep_every_sequence_number_tag_and_payload(
        messages in prop::collection::vec((any::<u64>(), any::<u32>(), payload()), 1..20),
        chunk in 1usize..2000,
    ) {
        let mut stream = BytesMut::new();
        for (seq, tag, payload) in &messages {
            put_data_header(&mut stream, *seq, Tag(*tag), payload.len());
            stream.extend_from_slice(payload);
        }
        let (frames, left) = decode_in_chunks(&stream, &[chunk]);
        prop_assert_eq!(left, 0);
        prop_assert_eq!(frames.len(), messages.len());
        for ((seq, tag, payload), frame) in messages.iter().zip(&frames) {
            match frame {
                Frame::Data { seq: s, tag: t, payload: p } => {
                    prop_assert_eq!((s, t), (seq, &Tag(*tag)));
                    prop_assert_eq!(&p[..], &payload[..]);
                }
                other => prop_assert!(false, "expected a data frame, got {:?}", other),
            }
        }
    }

    #[test]
    fn datagrams_decode_to_their_tag_and_payload(tag in any::<u32>(), payload in payload()) {
        let (decoded_tag, decoded) =
            decode_datagram(encode_datagram(Tag(tag), &payload)).expect("an encoded datagram");
        prop_assert_eq!(decoded_tag, Tag(tag));
        prop_assert_eq!(&decoded[..], &payload[..]);
    }
}

#[test]
fn stream_headers_parse_to_the_stream_they_open() {
    for priority in [Priority::High, Priority::Normal, Priority::Bulk] {
        assert_eq!(
            parse_stream_header(stream_header(priority)),
            Ok(StreamKind::Data(priority))
        );
    }
    assert_eq!(
        parse_stream_header(ack_stream_header()),
        Ok(StreamKind::Acks)
    );
}
