//! Round trips of the legacy wire format (protocol version 1), for arbitrary values.
//!
//! Checked, for each packet kind (Data, Ack, Datagram, Query, Answer, Refused) with any
//! header the decoder accepts and any payload: `Packet::decode(&packet.encode())` gives
//! back the packet, with the sender's member id equal in every detail, and the encoding
//! never looks like QUIC (0x40 and 0x80 clear in its first byte).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use cohort_legacy_udp::packet::{AckHeader, DataHeader, DatagramHeader, ExchangeHeader, Packet};
use cohort_transport::{MemberAttributes, MemberId, MemberKind, ProtocolVersion, ViewId};
use proptest::prelude::*;
use uuid::Uuid;

fn address() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

/// Any member id whose header stays well within a legacy header's 4 KiB.
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

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn payload() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..600).prop_map(Bytes::from)
}

fn exchange() -> impl Strategy<Value = ExchangeHeader> {
    (any::<u64>(), any::<u32>()).prop_map(|(id, tag)| ExchangeHeader { id, tag })
}

/// Any packet the decoder accepts: a known priority, sequence numbers from 1, fragment
/// numbers below their count.
fn packet() -> impl Strategy<Value = Packet> {
    let data = (
        member(),
        uuid(),
        0u8..4,
        1u64..,
        (1u32..).prop_flat_map(|fragments| (0..fragments, Just(fragments))),
        any::<u32>(),
        payload(),
    )
        .prop_map(
            |(sender, receiver, priority, seq, (fragment, fragments), tag, payload)| {
                Packet::Data(
                    DataHeader {
                        sender,
                        receiver,
                        priority,
                        seq,
                        fragment,
                        fragments,
                        tag,
                    },
                    payload,
                )
            },
        );
    let ack = (uuid(), uuid(), 0u8..4, any::<u64>(), any::<u64>()).prop_map(
        |(sender, receiver, priority, delivered, beyond)| {
            Packet::Ack(AckHeader {
                sender,
                receiver,
                priority,
                delivered,
                beyond,
            })
        },
    );
    let datagram = (member(), any::<u32>(), payload()).prop_map(|(sender, tag, payload)| {
        Packet::Datagram(DatagramHeader { sender, tag }, payload)
    });
    prop_oneof![
        data,
        ack,
        datagram,
        (exchange(), payload()).prop_map(|(header, payload)| Packet::Query(header, payload)),
        (exchange(), payload()).prop_map(|(header, payload)| Packet::Answer(header, payload)),
        ".{0,200}".prop_map(Packet::Refused),
    ]
}

/// The member id a packet names in full, if it names one.
fn sender(packet: &Packet) -> Option<&MemberId> {
    match packet {
        Packet::Data(header, _) => Some(&header.sender),
        Packet::Datagram(header, _) => Some(&header.sender),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_packet_decodes_to_itself(packet in packet()) {
        let bytes = packet.encode();
        prop_assert_eq!(bytes[0] & 0xc0, 0, "a legacy packet never looks like QUIC");
        let decoded = Packet::decode(&bytes).expect("an encoded packet decodes");
        prop_assert_eq!(decoded.kind(), packet.kind());
        if let (Some(sent), Some(received)) = (sender(&packet), sender(&decoded)) {
            prop_assert!(sent.same_details(received), "{:?} came back as {:?}", sent, received);
        }
        prop_assert_eq!(decoded, packet);
    }

    #[test]
    fn a_packet_cut_short_is_an_error_or_a_shorter_payload(packet in packet(), cut in any::<prop::sample::Index>()) {
        let bytes = packet.encode();
        let end = cut.index(bytes.len());
        // Only a packet whose payload runs to the end of the datagram can lose bytes and
        // still decode: then it is the same packet with less payload.
        if let Ok(decoded) = Packet::decode(&bytes[..end]) {
            prop_assert_eq!(decoded.kind(), packet.kind());
            prop_assert!(!matches!(decoded, Packet::Ack(_) | Packet::Refused(_)));
        }
    }
}
