//! [`LegacyConfig`]: the settings of one legacy messenger.

use std::num::NonZeroUsize;
use std::time::Duration;

use cohort_transport::InvalidConfig;
use cohort_transport::settings::count;
use serde::Deserialize;

/// Tuning of one legacy messenger: fragments, windows, queues and timers. Who the member
/// is comes from its [`Identity`](cohort_transport::Identity), given beside this at bind.
/// `Default` gives the settings old members ran with. In a configuration file this is a
/// table of kebab-case keys (`[legacy]` in `cohort-member`'s), each left out keeping its
/// default.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct LegacyConfig {
    /// Payload bytes per fragment: a larger message is split. Default 1,200, which with
    /// the packet header stays within an Ethernet frame.
    pub max_fragment_bytes: usize,
    /// Fragments in flight per destination and priority, and how far ahead of the next
    /// expected one a receiver holds fragments. At most 64, which is what one
    /// acknowledgement can report selectively. Default 64.
    pub window: NonZeroUsize,
    /// Bytes queued or unacknowledged per destination and priority; a send beyond it is
    /// refused for that destination (reported as backlogged). Default 64 MiB.
    pub max_queued_bytes_per_destination: NonZeroUsize,
    /// The largest message accepted; a larger one being reassembled is skipped and
    /// counted. Default 16 MiB.
    pub max_message_bytes: NonZeroUsize,
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
    pub max_pending_delivery_bytes: NonZeroUsize,
    /// Messages each subscription's queue buffers (the subscription itself may hold up to
    /// 64 more, taken from its queue at once). Default 1024.
    pub subscription_capacity: NonZeroUsize,
    /// How long a receiver may wait to acknowledge, gathering more fragments into one
    /// acknowledgement. Default 2 ms.
    #[serde(with = "cohort_transport::settings::duration")]
    pub ack_delay: Duration,
    /// How long queued messages to a member that left the view, or at shutdown, are still
    /// resent before they are dropped. Default 2 s.
    #[serde(with = "cohort_transport::settings::duration")]
    pub shutdown_timeout: Duration,
    /// Kernel send and receive buffer of the socket, when this messenger binds it. Default
    /// 4 MiB.
    pub socket_buffer_bytes: NonZeroUsize,
}

impl Default for LegacyConfig {
    fn default() -> Self {
        LegacyConfig {
            max_fragment_bytes: 1200,
            window: count(64),
            max_queued_bytes_per_destination: count(64 << 20),
            max_message_bytes: count(16 << 20),
            max_reassembly_bytes: 64 << 20,
            max_pending_delivery_bytes: count(16 << 20),
            subscription_capacity: count(1024),
            ack_delay: Duration::from_millis(2),
            shutdown_timeout: Duration::from_secs(2),
            socket_buffer_bytes: count(4 << 20),
        }
    }
}

impl LegacyConfig {
    /// Checks every setting; the error names the first that cannot work.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let error = |setting, reason| Err(InvalidConfig::new(setting, reason));
        if !(64..=60_000).contains(&self.max_fragment_bytes) {
            return error("max_fragment_bytes", "must be 64 to 60,000 bytes");
        }
        if self.window.get() > 64 {
            return error("window", "must be 1 to 64 fragments");
        }
        if self.max_reassembly_bytes < self.max_message_bytes.get() {
            return error("max_reassembly_bytes", "must be at least max_message_bytes");
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
