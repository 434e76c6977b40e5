//! `FrameDecoder` fed one stream in chunks of the fuzzer's choosing, and
//! `parse_stream_header` on a unidirectional stream's opening bytes.
//!
//! Input layout: see `cohort_fuzz::StreamInput`. Whatever the bytes, decoding ends in
//! `Ok(None)` (more bytes needed) or an error, never a panic; every frame returned was
//! wholly received, and the decoder never holds more than it was given.
#![no_main]

use cohort_fuzz::StreamInput;
use cohort_transport::wire::{Frame, FrameDecoder, parse_stream_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(input) = StreamInput::parse(data) else {
        return;
    };
    let mut stream = input.stream;
    if input.unidirectional {
        let [first, second, rest @ ..] = stream else {
            return;
        };
        if parse_stream_header([*first, *second]).is_err() {
            return;
        }
        stream = rest;
    }
    let mut decoder = FrameDecoder::new(input.max_frame());
    let mut pushed = 0usize;
    let mut taken = 0usize;
    let mut turn = 0;
    while !stream.is_empty() {
        let size = (usize::from(input.chunks[turn % 2]) + 1).min(stream.len());
        turn += 1;
        let (chunk, rest) = stream.split_at(size);
        stream = rest;
        decoder.push(chunk);
        pushed += chunk.len();
        // Each frame takes at least its 6-byte header from the buffer, so this loop ends
        // by itself; the bound makes sure of it.
        for _ in 0..=pushed {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    taken += 1;
                    // Frames are formatted in logs; that must not panic either.
                    let _ = format!("{frame:?}");
                    if let Frame::Hello(hello) = &frame {
                        let _ = format!("{} {:?}", hello.member, hello.member);
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    let _ = error.to_string();
                    return;
                }
            }
            assert!(decoder.buffered() <= pushed);
        }
    }
    assert!(decoder.buffered() <= pushed);
    assert!(taken * cohort_transport::wire::FRAME_HEADER_LEN <= pushed);
});
