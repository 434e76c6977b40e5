//! Configuration of a [`QuicMessenger`](super::QuicMessenger), checked once when it binds.

use std::net::SocketAddr;
use std::time::Duration;

use crate::member::{MemberAttributes, MemberKind, ProtocolVersion};

/// Settings for one QUIC messenger. `Default` gives a member on 127.0.0.1 with an
/// ephemeral port; every field documents its unit and default.
#[derive(Clone, Debug)]
pub struct QuicConfig {
    /// The member's logical name, shown in logs and views; empty names the member after
    /// its advertised address. Default `"member"`.
    pub name: String,
    /// The member's role. Default [`MemberKind::Member`].
    pub kind: MemberKind,
    /// The protocol version announced in the member id, which the coordinator's version
    /// gate judges. Default [`ProtocolVersion::CURRENT`]; only tests of rolling upgrades
    /// (and future releases) set another.
    pub version: ProtocolVersion,
    /// Attributes announced in the member id. Default none.
    pub attributes: MemberAttributes,
    /// The UDP address to bind (port 0 picks one). Default `127.0.0.1:0`.
    pub bind: SocketAddr,
    /// The address other members dial, when it differs from the bound one (required when
    /// binding an unspecified address such as `0.0.0.0`). Default `None`: the bound address.
    pub advertise: Option<SocketAddr>,
    /// Bytes a destination's queue may hold before further sends to it are refused.
    /// Default 256 MiB (room for a few large Bulk messages).
    pub max_queued_bytes_per_destination: usize,
    /// Bulk bytes written but not yet acknowledged by the receiving application, per
    /// destination. Bounding them (rather than relying on stream priority alone) keeps a bulk
    /// transfer from filling the connection's buffers ahead of Control and High traffic.
    /// A single larger message still goes, alone. Default 256 KiB.
    pub bulk_in_flight_bytes: usize,
    /// Largest frame, header included, sent or accepted, of any kind. Default 128 MiB.
    pub max_frame_bytes: usize,
    /// Largest data frame (one message, header included) sent or accepted per priority,
    /// indexed by [`Priority::index`](crate::Priority::index); each is capped at
    /// `max_frame_bytes` (see [`QuicConfig::frame_limit`]). A send over it is refused with `SendError::TooLarge`; a peer
    /// that sends one anyway has its connection closed with `FRAME_TOO_LARGE`. Default
    /// control 1 MiB (membership messages, of which views are the largest), high, normal
    /// and bulk 128 MiB.
    pub max_frame_bytes_by_priority: [usize; 4],
    /// Received messages buffered per subscription before the sending stream is held back.
    /// Default 1024.
    pub subscription_capacity: usize,
    /// QUIC keep-alive interval. Default 2 s.
    pub keep_alive_interval: Duration,
    /// A connection silent for this long is closed. Default 10 s.
    pub idle_timeout: Duration,
    /// Time allowed for the TLS handshake plus the Hello exchange. Default 5 s.
    pub handshake_timeout: Duration,
    /// The round-trip time a new connection assumes until it has measured one (quinn's
    /// `TransportConfig::initial_rtt`). A lost handshake datagram is sent again after
    /// about three of these, so it decides how long a fresh connection, such as a final
    /// check's, takes when its first datagram is lost. Default 333 ms (RFC 9002's, quinn's
    /// default), which suits any network; a member on a LAN sets less (its preset does).
    pub initial_rtt: Duration,
    /// Outgoing handshakes in flight at once; more wait their turn. Default 8: on a
    /// loaded machine many members dialing everyone at once otherwise run so many
    /// handshakes together that each outlasts `handshake_timeout` and none completes.
    pub max_concurrent_dials: usize,
    /// Incoming handshakes (TLS plus Hello) worked on at once; more wait their turn in
    /// quinn's incoming queue. With `max_concurrent_dials` this keeps a start of many
    /// members at once from running hundreds of mutual-TLS handshakes in parallel, which
    /// then time out together. Default 64.
    pub max_concurrent_accepts: usize,
    /// Incoming handshakes worked on at once, besides `max_concurrent_accepts`, for
    /// members of the installed view only (known by the address they dial from): a flood
    /// of handshakes from elsewhere cannot keep the view's members, and their final
    /// checks, waiting. Default 16.
    pub max_concurrent_accepts_for_view: usize,
    /// Incoming handshakes in progress at once from one host (IP address, over all its
    /// ports) outside the view, enforced while fewer than half of `max_concurrent_accepts`
    /// are free (a flood, or a start of many members at once: then a host waits for its
    /// own handshakes to finish, and other hosts get their turn). Default 32: half the
    /// accept permits, so one host cannot take them all.
    pub max_handshakes_per_host: usize,
    /// Incoming handshakes in progress at once from one source address (IP and port:
    /// what a member is known by); more are refused (QUIC `CONNECTION_REFUSED`) before
    /// any TLS work. A member dials another once at a time, plus a query now and then.
    /// Default 4.
    pub max_handshakes_per_address: usize,
    /// Connections open at once from one source address (peer links and queries being
    /// answered); one more is closed with `TOO_MANY_CONNECTIONS` right after its
    /// handshake. Default 4.
    pub max_connections_per_address: usize,
    /// Queries (discovery, final checks) answered per second from one source address,
    /// with bursts of twice as many; more are closed with `RATE_LIMITED` unanswered. A
    /// joiner asks each locator about once a second. Default 10.
    pub max_queries_per_second_per_address: u32,
    /// Peers kept at once for members outside the view (joiners, and whoever else says
    /// Hello with a certificate from the cluster CA); a Hello that would create one more
    /// is closed with `TOO_MANY_CONNECTIONS`, and a send to one more is reported as not in
    /// the view. Default 1024, room for many members starting at once.
    pub max_peers_outside_view: usize,
    /// A peer outside the view from which nothing (no frame, no acknowledgement) has
    /// arrived for this long is forgotten: its connection is closed with `RESET`, its
    /// queued messages dropped and its dials stopped. Its sequence positions are
    /// remembered, so that talking again later starts where it left off. A joiner asks
    /// once a second, so it is never forgotten while it waits. Default 30 s.
    pub outside_view_peer_timeout: Duration,
    /// Of the `max_concurrent_dials`, how many may go to members outside the view at once:
    /// the rest stay free for members of the view and for queries (final checks), however
    /// many dials outside the view never complete. Default 2.
    pub max_dials_outside_view: usize,
    /// Requested kernel send and receive buffer size of the UDP socket, in bytes (the kernel
    /// may cap it). Default 4 MiB.
    pub socket_buffer_bytes: usize,
    /// How long `shutdown` waits for queued messages to be acknowledged. Default 2 s.
    pub shutdown_timeout: Duration,
    /// A fixed uuid instead of a fresh random one, for deterministic simulations only; it
    /// also seeds quinn's endpoint random generator. Default `None`, which every real member
    /// must keep: a restarted process has to be a new member.
    pub uuid: Option<uuid::Uuid>,
}

impl Default for QuicConfig {
    fn default() -> Self {
        QuicConfig {
            name: "member".into(),
            kind: MemberKind::Member,
            version: ProtocolVersion::CURRENT,
            attributes: MemberAttributes::default(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            max_queued_bytes_per_destination: 256 << 20,
            bulk_in_flight_bytes: 256 << 10,
            max_frame_bytes: 128 << 20,
            max_frame_bytes_by_priority: [1 << 20, 128 << 20, 128 << 20, 128 << 20],
            subscription_capacity: 1024,
            keep_alive_interval: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            initial_rtt: Duration::from_millis(333),
            max_concurrent_dials: 8,
            max_concurrent_accepts: 64,
            max_concurrent_accepts_for_view: 16,
            max_handshakes_per_host: 32,
            max_handshakes_per_address: 4,
            max_connections_per_address: 4,
            max_queries_per_second_per_address: 10,
            max_peers_outside_view: 1024,
            outside_view_peer_timeout: Duration::from_secs(30),
            max_dials_outside_view: 2,
            socket_buffer_bytes: 4 << 20,
            shutdown_timeout: Duration::from_secs(2),
            uuid: None,
        }
    }
}

/// A configuration value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A size or count that must be positive is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// A duration that must be positive is zero.
    #[error("{0} must be longer than zero")]
    ZeroDuration(&'static str),
    /// The keep-alive would not keep the connection alive.
    #[error("keep_alive_interval ({keep_alive:?}) must be shorter than idle_timeout ({idle:?})")]
    KeepAliveTooLong {
        /// The keep-alive interval.
        keep_alive: Duration,
        /// The idle timeout.
        idle: Duration,
    },
    /// The frame limit is beyond what the 32-bit length prefix can carry, or below the
    /// smallest useful frame.
    #[error("max_frame_bytes ({0}) must be between 1 KiB and 4 GiB")]
    FrameLimit(usize),
    /// A priority's frame limit is below the smallest useful frame.
    #[error("max_frame_bytes_by_priority[{priority}] ({limit}) must be at least 1 KiB")]
    PriorityFrameLimit {
        /// The priority.
        priority: crate::Priority,
        /// Its limit.
        limit: usize,
    },
    /// A message at the frame limit could never be queued.
    #[error(
        "max_queued_bytes_per_destination ({queue}) must be at least max_frame_bytes ({frame})"
    )]
    QueueBelowFrame {
        /// The queue bound.
        queue: usize,
        /// The frame limit.
        frame: usize,
    },
    /// Other members could not dial an unspecified address.
    #[error("bind address {0} is unspecified: set `advertise` to the address members dial")]
    Unadvertisable(SocketAddr),
    /// Dials outside the view could take every dial permit.
    #[error("max_dials_outside_view ({outside}) must be less than max_concurrent_dials ({all})")]
    OutsideDialsTakeAll {
        /// `max_dials_outside_view`.
        outside: usize,
        /// `max_concurrent_dials`.
        all: usize,
    },
    /// The idle timeout is beyond what QUIC can encode.
    #[error("idle_timeout {0:?} is too long")]
    IdleTimeoutTooLong(Duration),
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

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (value, name) in [
            (self.subscription_capacity, "subscription_capacity"),
            (self.max_concurrent_dials, "max_concurrent_dials"),
            (self.max_concurrent_accepts, "max_concurrent_accepts"),
            (
                self.max_concurrent_accepts_for_view,
                "max_concurrent_accepts_for_view",
            ),
            (self.max_handshakes_per_host, "max_handshakes_per_host"),
            (
                self.max_handshakes_per_address,
                "max_handshakes_per_address",
            ),
            (
                self.max_connections_per_address,
                "max_connections_per_address",
            ),
            (self.socket_buffer_bytes, "socket_buffer_bytes"),
            (self.bulk_in_flight_bytes, "bulk_in_flight_bytes"),
            (self.max_peers_outside_view, "max_peers_outside_view"),
            (self.max_dials_outside_view, "max_dials_outside_view"),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        for (value, name) in [
            (self.keep_alive_interval, "keep_alive_interval"),
            (self.idle_timeout, "idle_timeout"),
            (self.handshake_timeout, "handshake_timeout"),
            (self.initial_rtt, "initial_rtt"),
            (self.outside_view_peer_timeout, "outside_view_peer_timeout"),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        if self.keep_alive_interval >= self.idle_timeout {
            return Err(ConfigError::KeepAliveTooLong {
                keep_alive: self.keep_alive_interval,
                idle: self.idle_timeout,
            });
        }
        if self.max_dials_outside_view >= self.max_concurrent_dials {
            return Err(ConfigError::OutsideDialsTakeAll {
                outside: self.max_dials_outside_view,
                all: self.max_concurrent_dials,
            });
        }
        if !(1024..=u32::MAX as usize).contains(&self.max_frame_bytes) {
            return Err(ConfigError::FrameLimit(self.max_frame_bytes));
        }
        for priority in crate::Priority::ALL {
            let limit = self.max_frame_bytes_by_priority[priority.index()];
            if limit < 1024 {
                return Err(ConfigError::PriorityFrameLimit { priority, limit });
            }
        }
        if self.max_queued_bytes_per_destination < self.max_frame_bytes {
            return Err(ConfigError::QueueBelowFrame {
                queue: self.max_queued_bytes_per_destination,
                frame: self.max_frame_bytes,
            });
        }
        let advertised = self.advertise.unwrap_or(self.bind);
        if advertised.ip().is_unspecified() {
            return Err(ConfigError::Unadvertisable(advertised));
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
                    subscription_capacity: 0,
                    ..Default::default()
                },
                ConfigError::Zero("subscription_capacity"),
            ),
            (
                QuicConfig {
                    idle_timeout: Duration::ZERO,
                    ..Default::default()
                },
                ConfigError::ZeroDuration("idle_timeout"),
            ),
            (
                QuicConfig {
                    keep_alive_interval: Duration::from_secs(20),
                    ..Default::default()
                },
                ConfigError::KeepAliveTooLong {
                    keep_alive: Duration::from_secs(20),
                    idle: Duration::from_secs(10),
                },
            ),
            (
                QuicConfig {
                    max_frame_bytes: 10,
                    ..Default::default()
                },
                ConfigError::FrameLimit(10),
            ),
            (
                QuicConfig {
                    max_queued_bytes_per_destination: 4096,
                    ..Default::default()
                },
                ConfigError::QueueBelowFrame {
                    queue: 4096,
                    frame: 128 << 20,
                },
            ),
            (
                QuicConfig {
                    bind: "0.0.0.0:0".parse().expect("literal"),
                    ..Default::default()
                },
                ConfigError::Unadvertisable("0.0.0.0:0".parse().expect("literal")),
            ),
        ];
        for (config, want) in bad {
            assert_eq!(config.validate(), Err(want));
        }
    }
}
