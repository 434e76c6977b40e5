//! What the messenger reports about one peer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::peer::Peer;
use crate::member::MemberId;
#[cfg(doc)]
use crate::priority::Priority;

/// A snapshot of what the messenger knows about one peer.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PeerStats {
    /// The peer.
    pub member: MemberId,
    /// Whether a connection is up.
    pub connected: bool,
    /// Whether the current connection was dialed by this member.
    pub dialed_by_us: Option<bool>,
    /// Connections established so far.
    pub connections: u64,
    /// Times both members dialed each other at once (one dial was dropped, nothing lost).
    pub dials_crossed: u64,
    /// Bytes held for the peer: queued, or written but not yet acknowledged. Bounded by
    /// `max_queued_bytes_per_destination`.
    pub queued_bytes: usize,
    /// Frames waiting to be written.
    pub queued_frames: usize,
    /// Frames written but not yet acknowledged.
    pub unacked_frames: usize,
    /// Frames written again on a new connection because the peer had not delivered them.
    pub frames_resent: u64,
    /// Frames written, per priority (indexed by [`Priority::index`]).
    pub frames_sent: [u64; 4],
    /// Bytes written (frame headers included), per priority.
    pub bytes_sent: [u64; 4],
    /// Frames received, per priority.
    pub frames_received: [u64; 4],
    /// Payload bytes received, per priority.
    pub bytes_received: [u64; 4],
    /// Datagrams handed to QUIC.
    pub datagrams_sent: u64,
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Datagrams dropped before sending (no connection yet, or QUIC refused them).
    pub datagrams_dropped: u64,
    /// Received frames dropped as duplicates.
    pub duplicates_dropped: u64,
    /// Sequence gaps seen (frames lost with an earlier connection).
    pub sequence_gaps: u64,
    /// Frames or datagrams of unknown kind or malformed datagrams skipped.
    pub unknown_frames: u64,
    /// Acknowledgement frames written to the peer (each covers every priority, and
    /// everything delivered since the one before).
    pub acks_sent: u64,
    /// Acknowledgement frames received from the peer.
    pub acks_received: u64,
    /// The current connection's round-trip estimate.
    pub rtt: Option<Duration>,
}

impl PeerStats {
    /// A snapshot of `peer` now.
    pub(super) fn of(peer: &Peer) -> PeerStats {
        let c = &peer.counters;
        let load = |a: &[AtomicU64; 4]| a.each_ref().map(|v| v.load(Ordering::Relaxed));
        let link = peer.link();
        let (queued_bytes, queued_frames, unacked_frames) = peer.window_snapshot();
        PeerStats {
            member: peer.member(),
            connected: link.is_some(),
            dialed_by_us: link.as_ref().map(|l| l.dialed_by_us),
            connections: c.connections.load(Ordering::Relaxed),
            dials_crossed: c.dials_crossed.load(Ordering::Relaxed),
            queued_bytes,
            queued_frames,
            unacked_frames,
            frames_resent: c.frames_resent.load(Ordering::Relaxed),
            frames_sent: load(&c.frames_sent),
            bytes_sent: load(&c.bytes_sent),
            frames_received: load(&c.frames_received),
            bytes_received: load(&c.bytes_received),
            datagrams_sent: c.datagrams_sent.load(Ordering::Relaxed),
            datagrams_received: c.datagrams_received.load(Ordering::Relaxed),
            datagrams_dropped: c.datagrams_dropped.load(Ordering::Relaxed),
            duplicates_dropped: c.duplicates_dropped.load(Ordering::Relaxed),
            sequence_gaps: c.sequence_gaps.load(Ordering::Relaxed),
            unknown_frames: c.unknown_frames.load(Ordering::Relaxed),
            acks_sent: c.acks_sent.load(Ordering::Relaxed),
            acks_received: c.acks_received.load(Ordering::Relaxed),
            rtt: link.map(|l| l.conn.rtt()),
        }
    }
}
