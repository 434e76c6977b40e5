//! The legacy protocol (version 1) on real UDP sockets over loopback: reliability under
//! loss, reassembly, and sharing one port with QUIC.

use std::time::Duration;

use bytes::Bytes;
use cohort_legacy_udp::{LegacyCarrier, LegacyConfig, LegacyStats};
use cohort_tests::{
    Blob, Numbered, PATIENCE, TestCa, init_tracing, install_view, receive, spawn_member, wait_until,
};
use cohort_transport::carrier::Carrier;
use cohort_transport::{Identity, Messenger, Priority, QueryError, QuicConfig, View, ViewId};

fn legacy(name: &str) -> Messenger {
    cohort_legacy_udp::bind(
        &cohort_transport::Identity::named(name),
        LegacyConfig::default(),
    )
    .expect("bind a legacy messenger on loopback")
}

/// A messenger over QUIC with the legacy protocol beside it on the same port.
fn bridge(ca: &TestCa, name: &str) -> Messenger {
    cohort_legacy_udp::bridge(
        &Identity::named(name),
        QuicConfig::default(),
        &ca.tls(name),
        LegacyConfig::default(),
    )
    .expect("bind a bridge on loopback")
}

/// The counters of `messenger`'s legacy carrier.
fn legacy_stats(messenger: &Messenger) -> LegacyStats {
    let carrier = messenger.carrier::<LegacyCarrier>();
    carrier.expect("a legacy carrier").stats()
}

fn install(messengers: &[&Messenger]) {
    install_view(1, messengers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_fifth_of_all_packets_lost_ten_thousand_messages_arrive_once_in_order() {
    init_tracing();
    let (a, b) = (legacy("a"), legacy("b"));
    install(&[&a, &b]);
    let mut numbered = b.subscribe::<Numbered>().expect("subscribe");
    let mut blobs = b.subscribe::<Blob>().expect("subscribe");
    // Both directions lose a fifth: data from a, acknowledgements from b.
    for (m, seed) in [(&a, 1), (&b, 2)] {
        m.faults().seed(seed);
        m.faults().drop_outgoing(0.2);
    }
    let to = [b.local_member().clone()];
    const COUNT: u64 = 10_000;
    for i in 0..COUNT {
        let outcome = a
            .send(&Numbered::new("a", "normal", i, 40), Priority::Normal, &to)
            .expect("sent");
        assert!(outcome.is_complete(), "{outcome:?}");
    }
    let big = Blob {
        data: Bytes::from((0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>()),
    };
    assert!(
        a.send(&big, Priority::Bulk, &to)
            .expect("sent")
            .is_complete()
    );

    let received = receive(&mut numbered, COUNT as usize, PATIENCE * 4).await;
    for (i, envelope) in received.iter().enumerate() {
        assert_eq!(envelope.message, Numbered::new("a", "normal", i as u64, 40));
        assert_eq!(envelope.from, a.local_member().clone());
    }
    let blob = receive(&mut blobs, 1, PATIENCE).await;
    assert_eq!(
        blob[0].message, big,
        "the 200 KB message reassembled intact"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), numbered.recv())
            .await
            .is_err(),
        "nothing more: no duplicates"
    );
    let stats = legacy_stats(&a);
    assert!(stats.resent > 0, "losses were repaired: {stats:?}");
    assert!(a.faults().dropped() > 1000, "the loss was real");
    println!(
        "legacy under 20% loss: {} fragments resent by the sender, {} duplicates at the receiver",
        stats.resent,
        legacy_stats(&b).duplicates
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_receives_quic_and_legacy_traffic_on_the_same_port() {
    init_tracing();
    let ca = TestCa::new();
    let dual = bridge(&ca, "dual");
    let dual_legacy = dual.carrier::<LegacyCarrier>().expect("a legacy carrier");
    assert_eq!(
        dual_legacy.local_member(),
        dual.local_member(),
        "one identity, one port"
    );
    let quic = dual.quic().expect("a QUIC carrier");
    assert!(quic.legacy_port().is_none(), "the share is taken once");

    let quic_peer = spawn_member(&ca, "quic-peer");
    let old = legacy("old");
    let view = View::new(
        ViewId(1),
        [
            dual.local_member().clone(),
            quic_peer.local_member().clone(),
            old.local_member().clone(),
        ],
    );
    for m in [&dual, &quic_peer, &old] {
        m.install_view(view.clone());
    }

    // One subscription, fed by both protocols.
    let mut numbered = dual.subscribe::<Numbered>().expect("subscribe");
    for i in 0..100 {
        let q = Numbered::new("quic-peer", "normal", i, 100);
        let _ = quic_peer
            .send(&q, Priority::Normal, &[dual.local_member().clone()])
            .expect("sent");
        let l = Numbered::new("old", "normal", i, 100);
        let _ = old
            .send(&l, Priority::Normal, &[dual.local_member().clone()])
            .expect("sent");
    }
    let received = receive(&mut numbered, 200, PATIENCE).await;
    for sender in ["quic-peer", "old"] {
        let from: Vec<u64> = received
            .iter()
            .filter(|e| e.message.sender == sender)
            .map(|e| e.message.index)
            .collect();
        assert_eq!(
            from,
            (0..100).collect::<Vec<_>>(),
            "{sender}: once each, in order"
        );
    }
    assert!(dual.socket_stats().non_quic_received >= 100);
    assert_eq!(dual.socket_stats().legacy_dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_shared_port_is_dropped_and_counted_while_quic_goes_on() {
    init_tracing();
    let ca = TestCa::new();
    let dual = bridge(&ca, "dual");
    let quic_peer = spawn_member(&ca, "quic-peer");
    install(&[&dual, &quic_peer]);
    let mut over_quic = dual.subscribe::<Numbered>().expect("subscribe");

    let vandal = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let garbage: [&[u8]; 5] = [
        &[0x01],
        &[0x01, 0x01, 0xff, 0xff, 0xff],
        &[0x02, 0x01, 0x00],
        &[0x01, 0x63],
        &[0x3f; 100],
    ];
    for i in 0..200u64 {
        vandal
            .send_to(garbage[i as usize % garbage.len()], dual.local_addr())
            .expect("send garbage");
        let message = Numbered::new("quic-peer", "normal", i, 50);
        let _ = quic_peer
            .send(&message, Priority::Normal, &[dual.local_member().clone()])
            .expect("sent");
    }
    let received = receive(&mut over_quic, 200, PATIENCE).await;
    assert!(
        received
            .iter()
            .enumerate()
            .all(|(i, e)| e.message == Numbered::new("quic-peer", "normal", i as u64, 50))
    );
    wait_until("every garbage datagram is counted", PATIENCE, || {
        legacy_stats(&dual).malformed == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_answered_and_a_retired_side_refuses_with_its_reason() {
    init_tracing();
    let (asker, answerer) = (legacy("asker"), legacy("answerer"));
    answerer.serve::<Ping>(|ping, _| ping.0 + 1);
    answerer.faults().drop_outgoing(0.3);
    let answer = asker
        .query_within(answerer.local_addr(), &Ping(41), PATIENCE)
        .await
        .expect("answered despite loss");
    assert_eq!(answer, 42);

    let carrier = answerer
        .carrier::<LegacyCarrier>()
        .expect("a legacy carrier");
    carrier.retire("the cluster finished its upgrade to QUIC");
    answerer.faults().heal();
    let refused = asker
        .query_within(answerer.local_addr(), &Ping(1), PATIENCE)
        .await;
    match refused {
        Err(QueryError::Refused { reason, .. }) => {
            assert_eq!(reason, "the cluster finished its upgrade to QUIC");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(legacy_stats(&answerer).refused >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_the_port_is_free_at_once() {
    init_tracing();
    for _ in 0..20 {
        let messenger = legacy("short-lived");
        let address = messenger.local_addr();
        messenger.shutdown().await;
        drop(messenger);
        std::net::UdpSocket::bind(address).expect("the port is free when shutdown returns");
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Ping(u32);

impl cohort_transport::Message for Ping {
    const TAG: cohort_transport::Tag = cohort_transport::Tag(0xfe21);
}

impl cohort_transport::Query for Ping {
    type Answer = u32;
}

/// A destination whose queue is full is reported once per streak, as the QUIC messenger
/// reports it; the membership layer turns each report into a suspicion, so one per refused
/// send (as before) suspected a slow member over and over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_reported_once_per_streak() {
    init_tracing();
    let config = LegacyConfig {
        max_queued_bytes_per_destination: std::num::NonZeroUsize::new(4096).expect("positive"),
        ..LegacyConfig::default()
    };
    let sender = cohort_legacy_udp::bind(&cohort_transport::Identity::named("sender"), config)
        .expect("bind a legacy messenger on loopback");
    // A member that never answers: a socket nobody reads.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let silent_member = cohort_transport::MemberId::new(
        "silent",
        silent.local_addr().expect("address"),
        cohort_transport::MemberKind::Member,
    )
    .with_version(cohort_transport::ProtocolVersion::LEGACY);
    let view = View::new(
        ViewId(1),
        [sender.local_member().clone(), silent_member.clone()],
    );
    sender.install_view(view);
    let mut events = sender.events();
    let to = std::slice::from_ref(&silent_member);
    let mut refused = 0;
    for index in 0..200 {
        let outcome = sender
            .send(
                &Numbered {
                    sender: "sender".into(),
                    stream: "normal".into(),
                    index,
                    body: Bytes::from_static(&[1; 512]),
                },
                Priority::Normal,
                to,
            )
            .expect("sent");
        refused += outcome.backlogged.len();
    }
    assert!(refused >= 100, "the queue filled: {refused} sends refused");
    let mut reports = 0;
    while let Ok(event) = events.try_recv() {
        if matches!(event, cohort_transport::TransportEvent::Backlogged { .. }) {
            reports += 1;
        }
    }
    assert_eq!(reports, 1, "{refused} refused sends, one streak");
}

/// A bridge checks a message against the limits of the carriers it goes on only: one for
/// members of protocol v1 alone is bounded by the legacy protocol's `max_message_bytes`,
/// not by QUIC's smaller frame limit (found in review: the front checked QUIC's always).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_bounds_a_message_for_old_members_by_the_legacy_limit_alone() {
    init_tracing();
    let ca = TestCa::new();
    let quic = QuicConfig {
        max_frame_bytes_by_priority: [1 << 20, 1 << 20, 64 << 10, 1 << 20],
        ..QuicConfig::default()
    };
    let bridge = cohort_legacy_udp::bridge(
        &Identity::named("bridge"),
        quic,
        &ca.tls("bridge"),
        LegacyConfig::default(),
    )
    .expect("bind a bridge");
    let (old, new) = (legacy("old"), spawn_member(&ca, "new"));
    install(&[&bridge, &old, &new]);
    let mut inbox = old.subscribe::<Blob>().expect("subscribe");
    let blob = Blob {
        data: Bytes::from(vec![7u8; 200 << 10]),
    };
    let outcome = bridge
        .send(&blob, Priority::Normal, &[old.local_member().clone()])
        .expect("within the legacy limit");
    assert!(outcome.is_complete(), "{outcome:?}");
    let received = receive(&mut inbox, 1, PATIENCE).await;
    assert_eq!(received[0].message, blob);
    // To a QUIC member (or to both), QUIC's limit holds for the whole send.
    let refused = bridge.send(&blob, Priority::Normal, &[new.local_member().clone()]);
    assert!(
        matches!(refused, Err(cohort_transport::SendError::TooLarge { .. })),
        "{refused:?}"
    );
}
