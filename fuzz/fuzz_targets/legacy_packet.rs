//! `Packet::decode` of the legacy protocol: one UDP datagram, one packet.
//!
//! Whatever the bytes, the result is an error or a packet, never a panic; a packet that
//! decodes keeps the checks the decoder promises (a known priority, sequence and fragment
//! numbers in range), and its encoding decodes to the same packet.
#![no_main]

use cohort_legacy_udp::packet::Packet;
use cohort_transport::Priority;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let packet = match Packet::decode(data) {
        Ok(packet) => packet,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    match &packet {
        Packet::Data(header, payload) => {
            assert!(Priority::from_wire(header.priority).is_some());
            assert!(header.seq > 0 && header.fragment < header.fragments);
            assert!(data.ends_with(payload));
            let _ = format!("{:?}", header.sender);
        }
        Packet::Ack(header) => assert!(Priority::from_wire(header.priority).is_some()),
        Packet::Datagram(header, payload) => {
            assert!(data.ends_with(payload));
            let _ = format!("{:?}", header.sender);
        }
        Packet::Query(_, payload) | Packet::Answer(_, payload) => {
            assert!(data.ends_with(payload));
        }
        Packet::Refused(reason) => assert!(reason.len() < data.len()),
    }
    assert_eq!(Packet::decode(&packet.encode()).as_ref(), Ok(&packet));
});
