//! Configuration of a [`QuicCarrier`](super::QuicCarrier), checked once when it binds.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::Deserialize;

use crate::settings::{InvalidConfig, count, positive};

/// Tuning of one QUIC messenger: queues, frame limits, QUIC timers, admission limits and
/// socket buffers. Who the member is (name, kind, addresses) is its
/// [`Identity`](crate::Identity), given beside this at bind. `Default` suits a LAN
/// cluster of up to a few hundred members; every field documents its unit and default.
/// In a configuration file this is a table of kebab-case keys (`[quic]` in
/// `cohort-member`'s), each left out keeping its default:
///
/// ```
/// # use cohort_transport::QuicConfig;
/// let config: QuicConfig = serde::Deserialize::deserialize(
///     serde::de::value::MapDeserializer::<_, serde::de::value::Error>::new(
///         [("idle-timeout", "30s"), ("keep-alive-interval", "5s")].into_iter(),
///     ),
/// )
/// .unwrap();
/// assert_eq!(config.idle_timeout, std::time::Duration::from_secs(30));
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct QuicConfig {
    /// Bytes a destination's queue may hold before further sends to it are refused.
    /// Default 256 MiB (room for a few large Bulk messages).
    pub max_queued_bytes_per_destination: usize,
    /// Bulk bytes written but not yet acknowledged by the receiving application, per
    /// destination. Bounding them (rather than relying on stream priority alone) keeps a bulk
    /// transfer from filling the connection's buffers ahead of Control and High traffic.
    /// A single larger message still goes, alone. Default 256 KiB.
    pub bulk_in_flight_bytes: NonZeroUsize,
    /// Bytes a peer may send on one stream ahead of what this member's readers have taken
    /// from it (QUIC stream flow control: quinn's `stream_receive_window`). It bounds how
    /// much Bulk data can be on its way ahead of a Control or High message on the same
    /// connection, whatever the size of the Bulk messages: on the quick bench (loopback,
    /// two cores) a High round trip behind saturating Bulk took 3.0 ms at p99 with quinn's
    /// default of 1.25 MB and about 0.9-1.0 ms at 256 KiB, while the bulk rate under that
    /// load fell from about 0.94 to 0.73-0.89 of the unloaded rate. It also caps one stream
    /// at this much per round trip (about 2.6 GB/s at 100 µs, 26 MB/s at 10 ms), so raise it
    /// towards the bandwidth-delay product between data centres. Default 256 KiB.
    pub stream_window_bytes: NonZeroU32,
    /// Largest frame, header included, sent or accepted, of any kind. Default 128 MiB.
    pub max_frame_bytes: usize,
    /// Largest data frame (one message, header included) sent or accepted per priority,
    /// indexed by [`Priority::index`](crate::Priority::index); each is capped at
    /// `max_frame_bytes` (see [`QuicConfig::frame_limit`]). A send over it is refused with `SendError::TooLarge`; a peer
    /// that sends one anyway has its connection closed with `FRAME_TOO_LARGE`. Default
    /// control 1 MiB (membership messages, of which views are the largest), high, normal
    /// and bulk 128 MiB.
    pub max_frame_bytes_by_priority: [usize; 4],
    /// Received messages buffered per subscription before the sending stream is held back
    /// (the subscription itself may hold up to 64 more, taken from its queue at once).
    /// Default 1024.
    pub subscription_capacity: NonZeroUsize,
    /// QUIC keep-alive interval. Default 2 s.
    #[serde(with = "crate::settings::duration")]
    pub keep_alive_interval: Duration,
    /// A connection silent for this long is closed. Default 10 s.
    #[serde(with = "crate::settings::duration")]
    pub idle_timeout: Duration,
    /// Time allowed for the TLS handshake plus the Hello exchange. Default 5 s.
    #[serde(with = "crate::settings::duration")]
    pub handshake_timeout: Duration,
    /// The round-trip time a new connection assumes until it has measured one (quinn's
    /// `TransportConfig::initial_rtt`). A lost handshake datagram is sent again after
    /// about three of these, so it decides how long a fresh connection, such as a final
    /// check's, takes when its first datagram is lost. Default 30 ms, for a LAN (a member's
    /// preset sets it: the `wan` preset sets 333 ms, RFC 9002's and quinn's default for any
    /// path). Not a key of the `[quic]` table: a member's file sets it with its preset or
    /// its `initial-rtt` key.
    #[serde(skip)]
    pub initial_rtt: Duration,
    /// Outgoing handshakes in flight at once; more wait their turn. Default 8: on a
    /// loaded machine many members dialing everyone at once otherwise run so many
    /// handshakes together that each outlasts `handshake_timeout` and none completes.
    pub max_concurrent_dials: NonZeroUsize,
    /// Incoming handshakes (TLS plus Hello) worked on at once; more wait their turn in
    /// quinn's incoming queue. With `max_concurrent_dials` this keeps a start of many
    /// members at once from running hundreds of mutual-TLS handshakes in parallel, which
    /// then time out together. Default 64.
    pub max_concurrent_accepts: NonZeroUsize,
    /// Incoming handshakes worked on at once, besides `max_concurrent_accepts`, for
    /// members of the installed view only (known by the address they dial from): a flood
    /// of handshakes from elsewhere cannot keep the view's members, and their final
    /// checks, waiting. Default 16.
    pub max_concurrent_accepts_for_view: NonZeroUsize,
    /// Incoming handshakes in progress at once from one host (IP address, over all its
    /// ports) outside the view, enforced while fewer than half of `max_concurrent_accepts`
    /// are free (a flood, or a start of many members at once: then a host waits for its
    /// own handshakes to finish, and other hosts get their turn). Default 32: half the
    /// accept permits, so one host cannot take them all.
    pub max_handshakes_per_host: NonZeroUsize,
    /// Incoming handshakes in progress at once from one source address (IP and port:
    /// what a member is known by); more are refused (QUIC `CONNECTION_REFUSED`) before
    /// any TLS work. A member dials another once at a time, plus a query now and then.
    /// Default 4.
    pub max_handshakes_per_address: NonZeroUsize,
    /// Connections open at once from one source address (peer links and queries being
    /// answered); one more is closed with `TOO_MANY_CONNECTIONS` right after its
    /// handshake. Default 4.
    pub max_connections_per_address: NonZeroUsize,
    /// Queries (discovery, final checks) answered per second from one source address,
    /// with bursts of twice as many; more are closed with `RATE_LIMITED` unanswered. A
    /// joiner asks each locator about once a second. Default 10.
    pub max_queries_per_second_per_address: NonZeroU32,
    /// Peers kept at once for members outside the view (joiners, and whoever else says
    /// Hello with a certificate from the cluster CA); a Hello that would create one more
    /// is closed with `TOO_MANY_CONNECTIONS`, and a send to one more is reported as not in
    /// the view. Default 1024, room for many members starting at once.
    pub max_peers_outside_view: NonZeroUsize,
    /// A peer outside the view from which nothing (no frame, no acknowledgement) has
    /// arrived for this long is forgotten: its connection is closed with `RESET`, its
    /// queued messages dropped and its dials stopped. Its sequence positions are
    /// remembered, so that talking again later starts where it left off. A joiner asks
    /// once a second, so it is never forgotten while it waits. Default 30 s.
    #[serde(with = "crate::settings::duration")]
    pub outside_view_peer_timeout: Duration,
    /// Of the `max_concurrent_dials`, how many may go to members outside the view at once:
    /// the rest stay free for members of the view and for queries (final checks), however
    /// many dials outside the view never complete. Default 2.
    pub max_dials_outside_view: NonZeroUsize,
    /// Requested kernel send and receive buffer size of the UDP socket, in bytes (the kernel
    /// may cap it). Default 4 MiB.
    pub socket_buffer_bytes: NonZeroUsize,
    /// How long `shutdown` waits for queued messages to be acknowledged. Default 2 s.
    #[serde(with = "crate::settings::duration")]
    pub shutdown_timeout: Duration,
}

impl Default for QuicConfig {
    fn default() -> Self {
        QuicConfig {
            max_queued_bytes_per_destination: 256 << 20,
            bulk_in_flight_bytes: count(256 << 10),
            stream_window_bytes: NonZeroU32::new(256 << 10).expect("positive"),
            max_frame_bytes: 128 << 20,
            max_frame_bytes_by_priority: [1 << 20, 128 << 20, 128 << 20, 128 << 20],
            subscription_capacity: count(1024),
            keep_alive_interval: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            initial_rtt: Duration::from_millis(30),
            max_concurrent_dials: count(8),
            max_concurrent_accepts: count(64),
            max_concurrent_accepts_for_view: count(16),
            max_handshakes_per_host: count(32),
            max_handshakes_per_address: count(4),
            max_connections_per_address: count(4),
            max_queries_per_second_per_address: NonZeroU32::new(10).expect("ten is positive"),
            max_peers_outside_view: count(1024),
            outside_view_peer_timeout: Duration::from_secs(30),
            max_dials_outside_view: count(2),
            socket_buffer_bytes: count(4 << 20),
            shutdown_timeout: Duration::from_secs(2),
        }
    }
}

impl QuicConfig {
    /// The largest data frame of `priority` sent or accepted: its
    /// `max_frame_bytes_by_priority` entry, capped at `max_frame_bytes`.
    pub fn frame_limit(&self, priority: crate::Priority) -> usize {
        self.max_frame_bytes_by_priority[priority.index()].min(self.max_frame_bytes)
    }

    /// What this member tells each peer in its Hello or HelloAck that it takes.
    pub(crate) fn receiver_limits(&self) -> crate::wire::ReceiverLimits {
        crate::wire::ReceiverLimits {
            frame_bytes: crate::Priority::ALL.map(|p| self.frame_limit(p) as u64),
        }
    }

    /// Checks every setting; the error names the first that cannot work.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        for (value, name) in [
            (self.keep_alive_interval, "keep_alive_interval"),
            (self.idle_timeout, "idle_timeout"),
            (self.handshake_timeout, "handshake_timeout"),
            (self.initial_rtt, "initial_rtt"),
            (self.outside_view_peer_timeout, "outside_view_peer_timeout"),
        ] {
            positive(name, value)?;
        }
        if self.keep_alive_interval >= self.idle_timeout {
            return Err(InvalidConfig::new(
                "keep_alive_interval",
                format!(
                    "{:?} must be shorter than idle_timeout ({:?})",
                    self.keep_alive_interval, self.idle_timeout
                ),
            ));
        }
        // What QUIC can encode as an idle timeout (a varint of milliseconds).
        if quinn::IdleTimeout::try_from(self.idle_timeout).is_err() {
            return Err(InvalidConfig::new(
                "idle_timeout",
                format!("{:?} is too long for QUIC", self.idle_timeout),
            ));
        }
        if self.max_dials_outside_view >= self.max_concurrent_dials {
            return Err(InvalidConfig::new(
                "max_dials_outside_view",
                format!(
                    "{} must be less than max_concurrent_dials ({})",
                    self.max_dials_outside_view, self.max_concurrent_dials
                ),
            ));
        }
        if !(1024..=u32::MAX as usize).contains(&self.max_frame_bytes) {
            return Err(InvalidConfig::new(
                "max_frame_bytes",
                format!("{} must be between 1 KiB and 4 GiB", self.max_frame_bytes),
            ));
        }
        for priority in crate::Priority::ALL {
            let limit = self.max_frame_bytes_by_priority[priority.index()];
            if limit < 1024 {
                return Err(InvalidConfig::new(
                    format!("max_frame_bytes_by_priority[{}]", priority.index()),
                    format!("{limit} ({priority}) must be at least 1 KiB"),
                ));
            }
        }
        if self.max_queued_bytes_per_destination < self.max_frame_bytes {
            return Err(InvalidConfig::new(
                "max_queued_bytes_per_destination",
                format!(
                    "{} must be at least max_frame_bytes ({})",
                    self.max_queued_bytes_per_destination, self.max_frame_bytes
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_each_bad_value_is_named() {
        assert_eq!(QuicConfig::default().validate(), Ok(()));
        let bad = [
            (
                QuicConfig {
                    idle_timeout: Duration::ZERO,
                    ..Default::default()
                },
                "idle_timeout",
            ),
            (
                QuicConfig {
                    keep_alive_interval: Duration::from_secs(20),
                    ..Default::default()
                },
                "keep_alive_interval",
            ),
            (
                QuicConfig {
                    idle_timeout: Duration::from_secs(1 << 60),
                    ..Default::default()
                },
                "idle_timeout",
            ),
            (
                QuicConfig {
                    max_frame_bytes: 10,
                    ..Default::default()
                },
                "max_frame_bytes",
            ),
            (
                QuicConfig {
                    max_frame_bytes_by_priority: [1 << 20, 100, 1 << 20, 1 << 20],
                    ..Default::default()
                },
                "max_frame_bytes_by_priority[1]",
            ),
            (
                QuicConfig {
                    max_queued_bytes_per_destination: 4096,
                    ..Default::default()
                },
                "max_queued_bytes_per_destination",
            ),
            (
                QuicConfig {
                    max_dials_outside_view: count(8),
                    ..Default::default()
                },
                "max_dials_outside_view",
            ),
        ];
        for (config, setting) in bad {
            let error = config.validate().expect_err(setting);
            assert_eq!(error.setting, setting, "{error}");
        }
    }

    #[test]
    fn a_table_sets_the_keys_it_names_and_refuses_unknown_or_zero_ones() {
        use serde::de::value::{Error, MapDeserializer};
        let read = |pairs: Vec<(&'static str, &'static str)>| {
            QuicConfig::deserialize(MapDeserializer::<_, Error>::new(pairs.into_iter()))
        };
        let config = read(vec![("handshake-timeout", "2s")]).expect("known keys");
        assert_eq!(config.handshake_timeout, Duration::from_secs(2));
        assert_eq!(config.idle_timeout, QuicConfig::default().idle_timeout);
        let unknown = read(vec![("idle-timeuot", "3s")]).expect_err("a typo");
        assert!(unknown.to_string().contains("idle-timeuot"), "{unknown}");
        let bad = read(vec![("idle-timeout", "soon")]).expect_err("not a duration");
        assert!(bad.to_string().contains("not a duration"), "{bad}");
        // A count that must be positive cannot even be written as zero.
        let zero = QuicConfig::deserialize(MapDeserializer::<_, Error>::new(
            [("max-concurrent-dials", 0u64)].into_iter(),
        ))
        .expect_err("zero dials");
        assert!(zero.to_string().contains("nonzero"), "{zero}");
    }
}
