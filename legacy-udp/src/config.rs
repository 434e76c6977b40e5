//! [`LegacyConfig`]: the settings of one legacy messenger.

use std::net::SocketAddr;
use std::time::Duration;

use cohort_transport::{MemberAttributes, MemberKind, ProtocolVersion};

/// Settings for one legacy messenger. `Default` gives a member on 127.0.0.1 with an
/// ephemeral port, speaking protocol version 1.
#[derive(Clone, Debug)]
pub struct LegacyConfig {
    /// The member's unique logical name. Default `"member"`.
    pub name: String,
    /// The member's role. Default [`MemberKind::Member`].
    pub kind: MemberKind,
    /// The protocol version announced in the member id. Default
    /// [`ProtocolVersion::LEGACY`].
    pub version: ProtocolVersion,
    /// Attributes announced in the member id. Default none.
    pub attributes: MemberAttributes,
    /// The UDP address to bind (port 0 picks one). Default `127.0.0.1:0`.
    pub bind: SocketAddr,
    /// The address announced to others, if not the bound one. Default `None`.
    pub advertise: Option<SocketAddr>,
    /// Payload bytes per fragment: a larger message is split. Default 1,200, which with
    /// the packet header stays within an Ethernet frame.
    pub max_fragment_bytes: usize,
    /// Fragments in flight per destination and priority, and how far ahead of the next
    /// expected one a receiver holds fragments. At most 64, which is what one
    /// acknowledgement can report selectively. Default 64.
    pub window: usize,
    /// Bytes queued or unacknowledged per destination and priority; a send beyond it is
    /// refused for that destination (reported as backlogged). Default 64 MiB.
    pub max_queued_bytes_per_destination: usize,
    /// The largest message accepted; a larger one being reassembled is skipped and
    /// counted. Default 16 MiB.
    pub max_message_bytes: usize,
    /// Bytes of messages being joined from their fragments, across every sender at once.
    /// A message is given the memory it can need at its first fragment; one that finds too
    /// little free waits its turn with that fragment unacknowledged (counted in
    /// `LegacyStats::reassembly_over_budget`; its sender resends it), and nothing is
    /// skipped for want of memory. One sender's messages take at most `max_message_bytes`
    /// of it together, so one member cannot hold it all. At least `max_message_bytes`.
    /// Default 64 MiB.
    pub max_reassembly_bytes: usize,
    /// Received messages waiting for their subscriber, in bytes per priority; while over
    /// it, new data of that priority is not acknowledged (the sender resends later).
    /// Default 16 MiB.
    pub max_pending_delivery_bytes: usize,
    /// Messages each subscription buffers. Default 1024.
    pub subscription_capacity: usize,
    /// How long a receiver may wait to acknowledge, gathering more fragments into one
    /// acknowledgement. Default 2 ms.
    pub ack_delay: Duration,
    /// How long queued messages to a member that left the view, or at shutdown, are still
    /// resent before they are dropped. Default 2 s.
    pub shutdown_timeout: Duration,
    /// Kernel send and receive buffer of the socket, when this messenger binds it. Default
    /// 4 MiB.
    pub socket_buffer_bytes: usize,
    /// A fixed member uuid (deterministic tests). Default `None`: a random one.
    pub uuid: Option<uuid::Uuid>,
}

impl Default for LegacyConfig {
    fn default() -> Self {
        LegacyConfig {
            name: "member".into(),
            kind: MemberKind::Member,
            version: ProtocolVersion::LEGACY,
            attributes: MemberAttributes::default(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            max_fragment_bytes: 1200,
            window: 64,
            max_queued_bytes_per_destination: 64 << 20,
            max_message_bytes: 16 << 20,
            max_reassembly_bytes: 64 << 20,
            max_pending_delivery_bytes: 16 << 20,
            subscription_capacity: 1024,
            ack_delay: Duration::from_millis(2),
            shutdown_timeout: Duration::from_secs(2),
            socket_buffer_bytes: 4 << 20,
            uuid: None,
        }
    }
}

/// A setting out of range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid legacy messenger setting {field}: {reason}")]
pub struct LegacyConfigError {
    /// The field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl LegacyConfig {
    /// Checks every setting.
    pub fn validate(&self) -> Result<(), LegacyConfigError> {
        let error = |field, reason| Err(LegacyConfigError { field, reason });
        if !(64..=60_000).contains(&self.max_fragment_bytes) {
            return error("max_fragment_bytes", "must be 64 to 60,000 bytes");
        }
        if !(1..=64).contains(&self.window) {
            return error("window", "must be 1 to 64 fragments");
        }
        if self.max_message_bytes == 0 {
            return error("max_message_bytes", "must be more than zero");
        }
        if self.max_reassembly_bytes < self.max_message_bytes {
            return error("max_reassembly_bytes", "must be at least max_message_bytes");
        }
        if self.max_queued_bytes_per_destination == 0 {
            return error("max_queued_bytes_per_destination", "must be more than zero");
        }
        if self.max_pending_delivery_bytes == 0 {
            return error("max_pending_delivery_bytes", "must be more than zero");
        }
        if self.shutdown_timeout > Duration::from_secs(3600) {
            return error("shutdown_timeout", "must be at most an hour");
        }
        if self.ack_delay > Duration::from_millis(200) {
            return error("ack_delay", "must be at most 200 ms");
        }
        Ok(())
    }
}
