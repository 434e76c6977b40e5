//! `decode_datagram`: an unreliable message's tag and payload from one QUIC datagram.
//!
//! Whatever the bytes, the result is an error or a tag and a payload that is the end of the
//! datagram after its header (format, kind, tag), never a panic.
#![no_main]

use bytes::Bytes;
use cohort_transport::wire::{decode_datagram, encode_datagram};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((tag, payload)) = decode_datagram(Bytes::copy_from_slice(data)) else {
        return;
    };
    assert!(payload.len() + 3 <= data.len());
    assert!(data.ends_with(&payload));
    // The encoder writes the shortest tag; what it writes decodes to the same message.
    let again = encode_datagram(tag, &payload);
    assert!(again.len() <= data.len());
    assert_eq!(decode_datagram(again), Ok((tag, payload)));
});
