//! What cohort's fuzz targets and the program that writes their seeds share: how each
//! target reads its input, so that a seed written here means the same thing to its target.
//!
//! Targets (in `fuzz_targets/`), one per decoder that takes bytes from the network or a
//! file:
//!
//! | target                | decoder                                                          |
//! |-----------------------|------------------------------------------------------------------|
//! | `wire_frames`         | `wire::FrameDecoder` (stream split in chunks), `parse_stream_header` |
//! | `wire_datagram`       | `wire::decode_datagram`                                          |
//! | `handshake`           | the Hello and HelloAck bodies, through `FrameDecoder`            |
//! | `legacy_packet`       | `packet::Packet::decode` of the legacy protocol                  |
//! | `membership_messages` | membership messages through the `Dispatcher`, queries, answers   |
//! | `config_file`         | `cohort_member::config::parse`                                   |
//! | `tls_ca_file`         | `tls::der_is_ca` (the DER reader), and a CA file's text through `TlsSettings::load` |
//!
//! A panic in any of them, for any input, is a finding.

use std::path::PathBuf;

use cohort_transport::wire::FRAME_HEADER_LEN;

/// The largest frame limit `wire_frames` tries (the members' default is larger, 128 MiB; the
/// decoder's logic does not depend on the size, and smaller limits keep runs fast).
pub const MAX_FRAME_LIMIT_LOG2: u8 = 24;

/// The input of `wire_frames`: three bytes of settings, then the bytes of one stream.
///
/// ```text
/// byte 0   bit 7: a unidirectional stream (its first two bytes are its header, which is
///          parsed and skipped); bits 0-4: the frame limit is 2^n bytes (n at most 24, the
///          limit at least a frame header)
/// byte 1   the stream is pushed in chunks of byte1 + 1 and byte2 + 1 bytes, alternately
/// byte 2
/// rest     the stream
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamInput<'a> {
    /// The stream opens with a two-byte header (a data or acknowledgement stream).
    pub unidirectional: bool,
    /// log2 of the decoder's frame limit.
    pub max_frame_log2: u8,
    /// The two chunk sizes, less one.
    pub chunks: [u8; 2],
    /// The stream's bytes.
    pub stream: &'a [u8],
}

impl<'a> StreamInput<'a> {
    /// Reads a fuzzer's input; `None` if it is shorter than the settings.
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let [settings, first, second, stream @ ..] = data else {
            return None;
        };
        Some(StreamInput {
            unidirectional: settings & 0x80 != 0,
            max_frame_log2: (settings & 0x1f).min(MAX_FRAME_LIMIT_LOG2),
            chunks: [*first, *second],
            stream,
        })
    }

    /// The input that [`StreamInput::parse`] reads back as this.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 + self.stream.len());
        out.push(u8::from(self.unidirectional) << 7 | (self.max_frame_log2 & 0x1f));
        out.extend_from_slice(&self.chunks);
        out.extend_from_slice(self.stream);
        out
    }

    /// The decoder's frame limit.
    pub fn max_frame(&self) -> usize {
        (1usize << self.max_frame_log2.min(MAX_FRAME_LIMIT_LOG2)).max(FRAME_HEADER_LEN)
    }
}

/// Which decoder `membership_messages` hands its input to: the first byte, modulo the
/// number of kinds, picks one; the rest is the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipInput {
    /// A `GmsMessage`, delivered reliably through the dispatcher as the messengers do.
    Gms,
    /// A `Heartbeat`, delivered as a datagram through the dispatcher.
    Heartbeat,
    /// A `FinalCheck` query, decoded as a query handler decodes it.
    FinalCheck,
    /// A `FindCoordinator` query (discovery).
    FindCoordinator,
    /// The answer to `FindCoordinator`, decoded as the asker decodes it.
    DiscoveryAnswer,
    /// The answer to `FinalCheck` (the answerer's uuid).
    FinalCheckAnswer,
    /// A `ViewCheck` query (the final check that names the checker and its view).
    ViewCheck,
    /// The answer to `ViewCheck`, decoded as the checker decodes it.
    ViewCheckAnswer,
    /// A `LeaseMessage`, delivered reliably through the dispatcher under its own tag.
    Lease,
    /// A `ReachabilityMessage` (notice, probe request, probe answer), delivered reliably
    /// through the dispatcher under its own tag.
    Reachability,
}

impl MembershipInput {
    /// Every kind, in the order of their selector bytes.
    pub const ALL: [MembershipInput; 10] = [
        MembershipInput::Gms,
        MembershipInput::Heartbeat,
        MembershipInput::FinalCheck,
        MembershipInput::FindCoordinator,
        MembershipInput::DiscoveryAnswer,
        MembershipInput::FinalCheckAnswer,
        MembershipInput::ViewCheck,
        MembershipInput::ViewCheckAnswer,
        MembershipInput::Lease,
        MembershipInput::Reachability,
    ];

    /// Reads a fuzzer's input: the kind and the payload.
    pub fn parse(data: &[u8]) -> Option<(MembershipInput, &[u8])> {
        let (selector, payload) = data.split_first()?;
        let kind = Self::ALL[usize::from(*selector) % Self::ALL.len()];
        Some((kind, payload))
    }

    /// The input that [`MembershipInput::parse`] reads back as this kind and payload.
    pub fn encode(self, payload: &[u8]) -> Vec<u8> {
        let selector = Self::ALL
            .iter()
            .position(|k| *k == self)
            .and_then(|i| u8::try_from(i).ok())
            .unwrap_or(0);
        let mut out = Vec::with_capacity(1 + payload.len());
        out.push(selector);
        out.extend_from_slice(payload);
        out
    }
}

/// The directory `config_file` takes relative file names from: it holds placeholder files
/// named `ca.pem`, `node.pem` and `node-key.pem`, so that a config naming them is valid
/// all the way through.
pub fn config_base() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_read_back_as_written() {
        let input = StreamInput {
            unidirectional: true,
            max_frame_log2: 20,
            chunks: [0, 255],
            stream: b"stream",
        };
        let bytes = input.encode();
        assert_eq!(StreamInput::parse(&bytes), Some(input));
        assert_eq!(input.max_frame(), 1 << 20);
        assert_eq!(StreamInput::parse(&[1, 2]), None);
        for kind in MembershipInput::ALL {
            let bytes = kind.encode(b"payload");
            assert_eq!(
                MembershipInput::parse(&bytes),
                Some((kind, &b"payload"[..]))
            );
        }
    }
}
