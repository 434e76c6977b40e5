//! A member's metrics as OpenMetrics series (the text format Prometheus scrapes
//! natively), with `prometheus-client`: register a [`MemberCollector`] into the registry
//! your service already serves, or take the text of one scrape with [`render`] (what
//! `cohort-member` does).
//!
//! ```text
//! registry.register_collector(MemberCollector) ─► at each scrape: Member::metrics
//!   ─► MemberMetrics ─► one descriptor per series ─► text
//! ```
//!
//! Member-wide series have no labels; per-peer series carry `peer` (its name) and
//! `peer_address`, and per-priority ones also `priority` (control, high, normal, bulk).
//!
//! ```
//! # fn example(member: cohort_membership::Member) {
//! use cohort_membership::metrics::prometheus::MemberCollector;
//! use prometheus_client::registry::Registry;
//!
//! let mut registry = Registry::default();
//! registry.register_collector(Box::new(MemberCollector::new(member)));
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
//! assert!(text.contains("cohort_view_members"));
//! # }
//! ```

use std::fmt;

use cohort_legacy_udp::LegacyStats;
use cohort_transport::{PeerStats, Priority};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::MemberMetrics;
use crate::member::Member;

/// The content type of [`render`]'s text, for an HTTP answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A `prometheus-client` collector that reads a member's counters at each scrape
/// ([`Member::metrics`]). It holds a handle to the member: the member runs on while the
/// registry holds it.
#[derive(Debug)]
pub struct MemberCollector {
    member: Member,
}

impl MemberCollector {
    /// A collector of `member`'s series.
    pub fn new(member: Member) -> MemberCollector {
        MemberCollector { member }
    }
}

impl Collector for MemberCollector {
    fn encode(&self, out: DescriptorEncoder) -> fmt::Result {
        encode(&self.member.metrics(), out)
    }
}

/// The text of one scrape of `member`'s series, alone in a registry.
#[must_use = "the text is the scrape"]
pub fn render(member: &Member) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(MemberCollector::new(member.clone())));
    let mut text = String::new();
    // Writing to a String cannot fail, and the collector only fails if writing does.
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::error!(%error, "metrics could not be encoded");
    }
    text
}

/// Every series of `metrics`, written to `out`.
fn encode(metrics: &MemberMetrics, mut out: DescriptorEncoder) -> fmt::Result {
    let me = &metrics.member;
    let info = [
        ("name", me.name().to_owned()),
        ("uuid", me.uuid().to_string()),
        ("kind", me.kind().to_string()),
        ("version", me.version().to_string()),
        ("address", me.address().to_string()),
    ];
    let mut family = out.encode_descriptor(
        "cohort_member",
        "This member: name, uuid, kind, protocol version and address",
        None,
        MetricType::Info,
    )?;
    family.encode_info(&info)?;

    let view = &metrics.view;
    gauge(
        &mut out,
        "cohort_view_id",
        "Id of the installed view",
        view.id().0,
    )?;
    gauge(
        &mut out,
        "cohort_view_members",
        "Members in the installed view",
        view.len() as u64,
    )?;
    gauge(
        &mut out,
        "cohort_view_members_unreachable",
        "Members of the view reported unreachable (their final check went unanswered; \
             removed if they stay so for the removal timeout)",
        metrics.unreachable as u64,
    )?;
    let coordinating = u64::from(view.coordinator() == Some(me));
    gauge(
        &mut out,
        "cohort_coordinator",
        "1 if this member coordinates the view",
        coordinating,
    )?;

    let g = &metrics.gms;
    let member_counters = [
        (
            "cohort_views_installed",
            "Views installed",
            g.views_installed,
        ),
        (
            "cohort_suspicions",
            "Members suspected (raised here or told by others)",
            g.suspicions,
        ),
        (
            "cohort_unreachable_suspicions",
            "Suspicions raised because a member's address was reported unreachable (ICMP)",
            g.unreachable_suspicions,
        ),
        (
            "cohort_final_checks",
            "Final checks run by this member",
            g.final_checks,
        ),
        (
            "cohort_final_checks_passed",
            "Final checks the suspect answered",
            g.final_checks_passed,
        ),
        (
            "cohort_final_checks_failed",
            "Final checks the suspect did not answer",
            g.final_checks_failed,
        ),
        (
            "cohort_members_unreachable",
            "Times this member's final checks found a reachable member unreachable",
            g.members_unreachable,
        ),
        (
            "cohort_members_reachable_again",
            "Times a member found unreachable answered again before its removal",
            g.members_reachable_again,
        ),
        (
            "cohort_link_problems",
            "Members unreachable from this checker that another member reached (kept)",
            g.link_problems,
        ),
        (
            "cohort_final_checks_out",
            "Final checks the suspect answered saying it is out of the cluster",
            g.final_checks_out,
        ),
        (
            "cohort_members_removed",
            "Members removed as crashed by installed views",
            g.members_removed,
        ),
        (
            "cohort_forced_disconnects",
            "Times this member was forced out of the cluster",
            g.forced_disconnects,
        ),
        (
            "cohort_reconnects",
            "Times this member rejoined the cluster by itself after being forced out",
            metrics.reconnects,
        ),
        (
            "cohort_indirect_probes",
            "Times this member asked others to probe a member unreachable for the removal timeout",
            g.indirect_probes,
        ),
        (
            "cohort_probes_for_others",
            "Probes this member ran because another member asked it to",
            g.probes_for_others,
        ),
        (
            "cohort_rounds_failed",
            "View change rounds this member proposed that failed or were outbid",
            g.rounds_failed,
        ),
        (
            "cohort_catch_ups",
            "Times this member heard of a newer view than its own and asked for it",
            g.catch_ups,
        ),
        (
            "cohort_refreshes",
            "View changes made only to bring members that stayed behind forward",
            g.refreshes,
        ),
        (
            "cohort_dropped_from_non_members",
            "Membership messages dropped because their sender was outside the cluster",
            g.dropped_from_non_members,
        ),
    ];
    for (name, help, value) in member_counters {
        counter(&mut out, name, help, value)?;
    }

    let s = &metrics.socket;
    let socket_counters = [
        (
            "cohort_socket_bytes_sent",
            "UDP payload bytes handed to the kernel",
            s.bytes_sent,
        ),
        (
            "cohort_socket_datagrams_sent",
            "UDP datagrams handed to the kernel",
            s.datagrams_sent,
        ),
        (
            "cohort_socket_non_quic_received",
            "Datagrams received that were not QUIC",
            s.non_quic_received,
        ),
        (
            "cohort_socket_legacy_dropped",
            "Non-QUIC datagrams dropped (no legacy protocol attached, or its queue full)",
            s.legacy_dropped,
        ),
        (
            "cohort_socket_unreachable_errors",
            "ICMP unreachable errors about destinations this socket sent to",
            s.unreachable_errors,
        ),
    ];
    for (name, help, value) in socket_counters {
        counter(&mut out, name, help, value)?;
    }

    let l = &metrics.limits;
    let limit_counters = [
        (
            "cohort_limit_frames_too_large",
            "Connections closed with FRAME_TOO_LARGE (a frame over its priority's limit)",
            l.frames_too_large,
        ),
        (
            "cohort_limit_handshakes_refused",
            "Handshakes refused: their address had max_handshakes_per_address in progress",
            l.handshakes_refused,
        ),
        (
            "cohort_limit_host_handshakes_refused",
            "Handshakes refused: their host had max_handshakes_per_host in progress while accept permits ran short",
            l.host_handshakes_refused,
        ),
        (
            "cohort_limit_handshakes_retried",
            "Handshakes asked to prove their address (QUIC Retry) while accept permits ran short",
            l.handshakes_retried,
        ),
        (
            "cohort_limit_connections_refused",
            "Connections closed with TOO_MANY_CONNECTIONS (max_connections_per_address)",
            l.connections_refused,
        ),
        (
            "cohort_limit_queries_rate_limited",
            "Queries closed with RATE_LIMITED (max_queries_per_second_per_address)",
            l.queries_rate_limited,
        ),
        (
            "cohort_limit_from_non_members",
            "Application messages dropped: their sender is not in the view",
            l.from_non_members,
        ),
        (
            "cohort_limit_peers_outside_view_refused",
            "Peers refused: max_peers_outside_view peers outside the view exist already",
            l.peers_outside_view_refused,
        ),
        (
            "cohort_limit_join_requests_rate_limited",
            "Join requests dropped (max_join_requests_per_second_per_address)",
            g.join_requests_rate_limited,
        ),
    ];
    for (name, help, value) in limit_counters {
        counter(&mut out, name, help, value)?;
    }

    let d = &metrics.dispatch;
    let dispatch_counters = [
        (
            "cohort_dispatch_unknown_tags",
            "Messages received under a tag nobody here subscribed to (reported back to \
                 their sender as undelivered where the protocol can)",
            d.unknown_tags,
        ),
        (
            "cohort_dispatch_datagrams_dropped_full",
            "Datagrams dropped because their subscription's queue was full",
            d.dropped_full,
        ),
    ];
    for (name, help, value) in dispatch_counters {
        counter(&mut out, name, help, value)?;
    }

    if let Some(legacy) = &metrics.legacy {
        legacy_counters(&mut out, legacy)?;
    }
    per_peer(&metrics.peers, &mut out)
}

/// The series of each other member of the view.
fn per_peer(peers: &[PeerStats], out: &mut DescriptorEncoder) -> fmt::Result {
    type PeerCounter = (&'static str, &'static str, fn(&PeerStats) -> u64);
    let counters: [PeerCounter; 8] = [
        (
            "cohort_peer_connections",
            "QUIC connections established with the peer",
            |p| p.connections,
        ),
        (
            "cohort_peer_reconnects",
            "Connections to the peer after the first (each one resumed the streams)",
            |p| p.connections.saturating_sub(1),
        ),
        (
            "cohort_peer_frames_resent",
            "Frames written again on a new connection because the peer had not delivered them",
            |p| p.frames_resent,
        ),
        (
            "cohort_peer_datagrams_sent",
            "Datagrams (heartbeats, alerts) sent to the peer",
            |p| p.datagrams_sent,
        ),
        (
            "cohort_peer_datagrams_received",
            "Datagrams received from the peer",
            |p| p.datagrams_received,
        ),
        (
            "cohort_peer_datagrams_dropped",
            "Datagrams to the peer dropped before sending",
            |p| p.datagrams_dropped,
        ),
        (
            "cohort_peer_duplicates_dropped",
            "Frames from the peer dropped as duplicates",
            |p| p.duplicates_dropped,
        ),
        (
            "cohort_peer_sequence_gaps",
            "Sequence gaps seen from the peer",
            |p| p.sequence_gaps,
        ),
    ];
    for (name, help, value) in counters {
        let mut family = out.encode_descriptor(name, help, None, MetricType::Counter)?;
        for peer in peers {
            ConstCounter::new(value(peer)).encode(family.encode_family(&peer_labels(peer))?)?;
        }
    }

    type PeerGauge = (&'static str, &'static str, fn(&PeerStats) -> u64);
    let gauges: [PeerGauge; 4] = [
        (
            "cohort_peer_connected",
            "1 while a connection to the peer is up",
            |p| u64::from(p.connected),
        ),
        (
            "cohort_peer_queued_bytes",
            "Bytes held for the peer: queued, or written and not yet acknowledged",
            |p| p.queued_bytes as u64,
        ),
        (
            "cohort_peer_queued_frames",
            "Frames waiting to be written to the peer",
            |p| p.queued_frames as u64,
        ),
        (
            "cohort_peer_unacked_frames",
            "Frames written to the peer and not yet acknowledged",
            |p| p.unacked_frames as u64,
        ),
    ];
    for (name, help, value) in gauges {
        let mut family = out.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for peer in peers {
            ConstGauge::new(value(peer)).encode(family.encode_family(&peer_labels(peer))?)?;
        }
    }
    let mut family = out.encode_descriptor(
        "cohort_peer_rtt_seconds",
        "Round-trip time estimate of the current connection to the peer",
        None,
        MetricType::Gauge,
    )?;
    for peer in peers {
        if let Some(rtt) = peer.rtt {
            ConstGauge::new(rtt.as_secs_f64()).encode(family.encode_family(&peer_labels(peer))?)?;
        }
    }

    type PerPriority = (&'static str, &'static str, fn(&PeerStats) -> [u64; 4]);
    let per_priority: [PerPriority; 4] = [
        (
            "cohort_peer_frames_sent",
            "Frames written to the peer",
            |p| p.frames_sent,
        ),
        (
            "cohort_peer_bytes_sent",
            "Bytes written to the peer, frame headers included",
            |p| p.bytes_sent,
        ),
        (
            "cohort_peer_frames_received",
            "Frames received from the peer",
            |p| p.frames_received,
        ),
        (
            "cohort_peer_bytes_received",
            "Payload bytes received from the peer",
            |p| p.bytes_received,
        ),
    ];
    for (name, help, values) in per_priority {
        let mut family = out.encode_descriptor(name, help, None, MetricType::Counter)?;
        for peer in peers {
            let values = values(peer);
            for priority in Priority::ALL {
                let [a, b] = peer_labels(peer);
                let labels = [a, b, ("priority", priority.to_string())];
                ConstCounter::new(values[priority.index()])
                    .encode(family.encode_family(&labels)?)?;
            }
        }
    }
    Ok(())
}

/// The legacy protocol's counters, on a legacy member or a bridge.
fn legacy_counters(out: &mut DescriptorEncoder, l: &LegacyStats) -> fmt::Result {
    let counters = [
        (
            "cohort_legacy_malformed",
            "Legacy datagrams that did not decode",
            l.malformed,
        ),
        (
            "cohort_legacy_address_mismatch",
            "Legacy packets whose claimed sender is elsewhere on record",
            l.address_mismatch,
        ),
        (
            "cohort_legacy_from_departed",
            "Legacy packets from members that left",
            l.from_departed,
        ),
        (
            "cohort_legacy_from_strangers",
            "Legacy packets refused from senders in no view",
            l.from_strangers,
        ),
        (
            "cohort_legacy_duplicates",
            "Legacy fragments received again",
            l.duplicates,
        ),
        (
            "cohort_legacy_oversized",
            "Legacy messages over max_message_bytes, skipped",
            l.oversized,
        ),
        (
            "cohort_legacy_reassembly_over_budget",
            "Legacy messages that waited for reassembly memory (first fragment held back)",
            l.reassembly_over_budget,
        ),
        (
            "cohort_legacy_resent",
            "Legacy fragments sent again",
            l.resent,
        ),
        (
            "cohort_legacy_delivered",
            "Legacy messages delivered",
            l.delivered,
        ),
        (
            "cohort_legacy_refused",
            "Legacy packets refused after the upgrade",
            l.refused,
        ),
    ];
    for (name, help, value) in counters {
        counter(out, name, help, value)?;
    }
    Ok(())
}

fn peer_labels(peer: &PeerStats) -> [(&'static str, String); 2] {
    [
        ("peer", peer.member.name().to_owned()),
        ("peer_address", peer.member.address().to_string()),
    ]
}

fn counter(out: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(out.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge<V: EncodeGaugeValue>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: V,
) -> fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(out.encode_descriptor(name, help, None, metric.metric_type())?)
}
