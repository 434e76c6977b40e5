//! A member's counters, taken at once: [`MemberMetrics`], from [`Member::metrics`]. With
//! the `prometheus` feature, [`prometheus`] names and describes them as OpenMetrics series
//! (what `cohort-member` serves at `/metrics`) for a `prometheus-client` registry.
//!
//! ```text
//! Member::metrics ─► MemberMetrics (GmsStats, the view, SocketStats, LimitStats,
//!                    DispatchStats, LegacyStats, one PeerStats per other member)
//!                    ─► prometheus::MemberCollector::encode (at each scrape) ─► text
//! ```
//!
//! The counters themselves live where they are counted (the protocol core, the socket, the
//! QUIC connections, the dispatcher, the legacy protocol); this module only gathers them,
//! and nothing here depends on a metrics crate unless the feature is on.

#[cfg(feature = "prometheus")]
pub mod prometheus;

// The counters a `MemberMetrics` holds, so that its fields' types are documented here.
pub use cohort_legacy_udp::LegacyStats;
pub use cohort_transport::{DispatchStats, LimitStats, PeerStats, SocketStats};
use cohort_transport::{MemberId, View};

use crate::gms::GmsStats;
#[cfg(doc)]
use crate::member::Member;

/// Everything a member counts, read at one moment ([`Member::metrics`]).
///
/// Counters only grow (for the life of the member; those of the socket and the QUIC
/// connections start again at a reconnect's new messenger); the rest are readings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MemberMetrics {
    /// This member's identity.
    pub member: MemberId,
    /// The installed view.
    pub view: View,
    /// Members of the view reported unreachable ([`Member::unreachable`]).
    pub unreachable: usize,
    /// The membership protocol's counters, summed over every incarnation.
    pub gms: GmsStats,
    /// Times this member rejoined by itself after being forced out.
    pub reconnects: u64,
    /// The UDP socket's counters.
    pub socket: SocketStats,
    /// What the QUIC side refused or closed for its limits (zero on the legacy protocol).
    pub limits: LimitStats,
    /// The dispatcher's counters: messages under a tag with no subscriber, datagrams
    /// dropped at a full subscription; for every protocol the member speaks.
    pub dispatch: DispatchStats,
    /// The legacy protocol's counters, on a legacy member or a bridge.
    pub legacy: Option<LegacyStats>,
    /// One entry per other member of the view the QUIC side knows.
    pub peers: Vec<PeerStats>,
}
