//! The bodies of Hello and HelloAck frames (postcard, with the member's whole identity),
//! through `FrameDecoder` as the control stream reads them.
//!
//! Input: byte 0 even: a Hello, odd: a HelloAck; the rest is the frame's body, framed here
//! with a correct header so that every run reaches the body's decoder. The result is the
//! frame asked for or a body error, never a panic; a body that decodes re-encodes to one
//! that decodes to the same identity.
#![no_main]

use cohort_transport::wire::{
    FRAME_FORMAT, Frame, FrameDecoder, FrameKind, WireError, encode_hello, encode_hello_ack,
};
use libfuzzer_sys::fuzz_target;

fn decode(frame: &[u8]) -> Result<Option<Frame>, WireError> {
    let mut decoder = FrameDecoder::new(frame.len());
    decoder.push(frame);
    let result = decoder.next_frame();
    if let Ok(Some(_)) = &result {
        assert_eq!(decoder.buffered(), 0, "a whole frame was given");
    }
    result
}

fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = data.split_first() else {
        return;
    };
    let Ok(len) = u32::try_from(body.len() + 2) else {
        return;
    };
    let kind = match selector % 2 {
        0 => FrameKind::Hello,
        _ => FrameKind::HelloAck,
    };
    let mut frame = Vec::with_capacity(body.len() + 6);
    frame.extend_from_slice(&len.to_le_bytes());
    frame.push(FRAME_FORMAT);
    frame.push(kind as u8);
    frame.extend_from_slice(body);
    match (kind, decode(&frame)) {
        (FrameKind::Hello, Ok(Some(Frame::Hello(hello)))) => {
            let _ = format!("{} {:?}", hello.member, hello.member);
            let again = encode_hello(&hello).expect("a decoded Hello encodes");
            match decode(&again) {
                Ok(Some(Frame::Hello(back))) => {
                    assert!(back.member.same_details(&hello.member));
                    assert_eq!(back.delivered, hello.delivered);
                }
                other => panic!("a re-encoded Hello decodes as {other:?}"),
            }
        }
        (FrameKind::HelloAck, Ok(Some(Frame::HelloAck(ack)))) => {
            let _ = format!("{} {:?}", ack.member, ack.member);
            let again = encode_hello_ack(&ack).expect("a decoded HelloAck encodes");
            match decode(&again) {
                Ok(Some(Frame::HelloAck(back))) => {
                    assert!(back.member.same_details(&ack.member));
                    assert_eq!(back.delivered, ack.delivered);
                }
                other => panic!("a re-encoded HelloAck decodes as {other:?}"),
            }
        }
        (_, Err(WireError::Body { what, .. })) => {
            assert!(what == "Hello" || what == "HelloAck", "{what}");
        }
        (kind, other) => panic!("a {kind:?} frame decoded as {other:?}"),
    }
});
