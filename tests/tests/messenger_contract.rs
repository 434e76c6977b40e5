//! The messenger's contract, run against every carrier arrangement a member can have: QUIC
//! alone, the legacy protocol alone, and a bridge (both on one port) talking to a member of
//! either protocol. Each case is the same test body; only how the pair is bound differs.
//!
//! - exactly once and in order per priority, to a peer and to the member itself, Control
//!   included, and to a member outside the view (`send_outside_view`);
//! - across lost connections and lost packets (QUIC: the connection reset mid-stream; every
//!   carrier: a fifth of the packets dropped while the messages flow);
//! - bounded memory: a destination that acknowledges nothing has its sends refused once its
//!   queue is at its bound, in `SendOutcome::backlogged`, with one `Backlogged` event per
//!   streak on every carrier;
//! - departed members: once a view without the peer is installed, sends to it are refused
//!   as not in the view and nothing more of its arrives.

use std::collections::HashMap;
use std::time::Duration;

use cohort_legacy_udp::LegacyConfig;
use cohort_tests::{Numbered, PATIENCE, TestCa, init_tracing, receive, wait_until};
use cohort_transport::{
    Identity, MemberId, Messenger, Priority, QuicConfig, TransportEvent, View, ViewId,
};

/// A message of "cohort's own protocols" (a reserved tag no protocol uses), which may go on
/// Control and to members outside the view.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct ControlNote {
    index: u64,
}

impl cohort_transport::Message for ControlNote {
    const TAG: cohort_transport::Tag = cohort_transport::Tag(0xff01);
}

/// Messages per priority in each run.
const PER_PRIORITY: u64 = 300;
/// The data priorities an application may use.
const PRIORITIES: [(Priority, &str); 3] = [
    (Priority::High, "high"),
    (Priority::Normal, "normal"),
    (Priority::Bulk, "bulk"),
];

/// How the two members of a case are bound.
#[derive(Clone, Copy, Debug)]
enum Arrangement {
    /// Both on QUIC.
    Quic,
    /// Both on the legacy protocol.
    Legacy,
    /// A bridge sending to a member of the legacy protocol.
    BridgeToLegacy,
    /// A bridge sending to a member of QUIC.
    BridgeToQuic,
}

const ALL: [Arrangement; 4] = [
    Arrangement::Quic,
    Arrangement::Legacy,
    Arrangement::BridgeToLegacy,
    Arrangement::BridgeToQuic,
];

#[derive(Clone, Copy)]
enum Kind {
    Quic,
    Legacy,
    Bridge,
}

/// Tuning for a case: `queue_bytes` bounds each destination's queue on either protocol.
#[derive(Clone, Copy)]
struct Tuning {
    queue_bytes: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            queue_bytes: 64 << 20,
        }
    }
}

fn bind(ca: &TestCa, kind: Kind, name: &str, tuning: Tuning) -> Messenger {
    let identity = Identity::named(name);
    let quic = QuicConfig {
        max_queued_bytes_per_destination: tuning.queue_bytes,
        max_frame_bytes: 64 << 10,
        max_frame_bytes_by_priority: [64 << 10; 4],
        ..QuicConfig::default()
    };
    let legacy = LegacyConfig {
        max_queued_bytes_per_destination: tuning.queue_bytes.try_into().expect("positive"),
        max_message_bytes: (64 << 10).try_into().expect("positive"),
        ..LegacyConfig::default()
    };
    match kind {
        Kind::Quic => Messenger::bind(&identity, quic, &ca.tls(name)).expect("bind QUIC"),
        Kind::Legacy => cohort_legacy_udp::bind(&identity, legacy).expect("bind legacy"),
        Kind::Bridge => cohort_legacy_udp::bridge(&identity, quic, &ca.tls(name), legacy)
            .expect("bind a bridge"),
    }
}

/// The kinds of the sender and the receiver of a case.
fn kinds(arrangement: Arrangement) -> (Kind, Kind) {
    match arrangement {
        Arrangement::Quic => (Kind::Quic, Kind::Quic),
        Arrangement::Legacy => (Kind::Legacy, Kind::Legacy),
        Arrangement::BridgeToLegacy => (Kind::Bridge, Kind::Legacy),
        Arrangement::BridgeToQuic => (Kind::Bridge, Kind::Quic),
    }
}

/// The sender and the receiver of a case, in one view.
fn pair(ca: &TestCa, arrangement: Arrangement, tuning: Tuning) -> (Messenger, Messenger) {
    let (a, b) = kinds(arrangement);
    let sender = bind(ca, a, "sender", tuning);
    let receiver = bind(ca, b, "receiver", tuning);
    let view = View::new(
        ViewId(1),
        [
            sender.local_member().clone(),
            receiver.local_member().clone(),
        ],
    );
    sender.install_view(view.clone());
    receiver.install_view(view);
    (sender, receiver)
}

/// Sends `PER_PRIORITY` numbered messages on each data priority to `to`, retrying a
/// refused one after a millisecond (a backlog is the sender's to pace, not a loss).
async fn send_all(sender: &Messenger, to: &MemberId, stream_prefix: &str) {
    for index in 0..PER_PRIORITY {
        for (priority, name) in PRIORITIES {
            let message = Numbered::new("sender", &format!("{stream_prefix}{name}"), index, 600);
            loop {
                let outcome = sender
                    .send(&message, priority, std::slice::from_ref(to))
                    .expect("accepted for someone");
                assert!(outcome.not_in_view.is_empty(), "{outcome:?}");
                if outcome.is_complete() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// Checks that every stream of `received` counts 0, 1, 2, … to `PER_PRIORITY` exactly once.
fn assert_once_in_order(
    arrangement: Arrangement,
    received: &[cohort_transport::Envelope<Numbered>],
) {
    let mut next: HashMap<&str, u64> = HashMap::new();
    for envelope in received {
        let message = &envelope.message;
        let expected = next.entry(message.stream.as_str()).or_default();
        assert_eq!(
            message.index, *expected,
            "{arrangement:?}: stream {} out of order or duplicated",
            message.stream
        );
        assert_eq!(message.body, Numbered::new("", "", message.index, 600).body);
        *expected += 1;
    }
    assert!(
        next.values().all(|n| *n == PER_PRIORITY),
        "{arrangement:?}: {next:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_carrier_delivers_exactly_once_and_in_order_per_priority() {
    init_tracing();
    let ca = TestCa::new();
    for arrangement in ALL {
        let (sender, receiver) = pair(&ca, arrangement, Tuning::default());
        let mut inbox = receiver.subscribe::<Numbered>().expect("subscribe");
        let mut own = sender.subscribe::<Numbered>().expect("subscribe");
        let (to_peer, to_self) = (
            receiver.local_member().clone(),
            sender.local_member().clone(),
        );
        send_all(&sender, &to_peer, "").await;
        send_all(&sender, &to_self, "self-").await;
        let total = (PER_PRIORITY as usize) * PRIORITIES.len();
        assert_once_in_order(arrangement, &receive(&mut inbox, total, PATIENCE).await);
        assert_once_in_order(arrangement, &receive(&mut own, total, PATIENCE).await);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), inbox.recv())
                .await
                .is_err(),
            "{arrangement:?}: nothing more arrives"
        );
        sender.shutdown().await;
        receiver.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_carrier_loses_nothing_to_lost_packets_or_connections() {
    init_tracing();
    let ca = TestCa::new();
    for arrangement in ALL {
        let (sender, receiver) = pair(&ca, arrangement, Tuning::default());
        let mut inbox = receiver.subscribe::<Numbered>().expect("subscribe");
        let to = receiver.local_member().clone();
        sender.faults().seed(7);
        sender.faults().drop_outgoing(0.2);
        receiver.faults().seed(8);
        receiver.faults().drop_outgoing(0.2);
        let sending = send_all(&sender, &to, "");
        let resetting = async {
            // QUIC only: the connection closed mid-stream, twice; the next one resends
            // the gap.
            if let Some(quic) = sender
                .quic()
                .filter(|_| to.version() >= cohort_transport::ProtocolVersion::QUIC)
            {
                // Mid-stream: after 100 and 300 of the 900 frames were written, on a
                // connection that is up (the reset is retried until there is one).
                for written in [100, 300] {
                    wait_until("a connection to reset mid-stream", PATIENCE, || {
                        let sent = sender
                            .peer_stats(&to)
                            .map_or(0, |stats| stats.frames_sent.iter().sum::<u64>());
                        sent >= written && quic.reset_connection(&to)
                    })
                    .await;
                }
            }
        };
        tokio::join!(sending, resetting);
        let total = (PER_PRIORITY as usize) * PRIORITIES.len();
        let received = receive(&mut inbox, total, PATIENCE * 4).await;
        assert_once_in_order(arrangement, &received);
        assert!(
            sender.faults().dropped() > 0,
            "{arrangement:?}: the loss was real"
        );
        sender.faults().heal();
        receiver.faults().heal();
        sender.shutdown().await;
        receiver.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_carrier_bounds_a_silent_destination_and_reports_it_once_per_streak() {
    init_tracing();
    let ca = TestCa::new();
    let tuning = Tuning {
        queue_bytes: 256 << 10,
    };
    for arrangement in ALL {
        let (sender, receiver) = pair(&ca, arrangement, tuning);
        let to = receiver.local_member().clone();
        let mut events = sender.events();
        // Nothing the receiver sends reaches the sender: no acknowledgement, ever.
        sender.faults().block_from(receiver.local_addr());
        let mut refused = 0;
        let mut accepted = 0u64;
        let message = Numbered::new("sender", "bulk", 0, 4 << 10);
        for _ in 0..1_000 {
            let outcome = sender
                .send(&message, Priority::Bulk, std::slice::from_ref(&to))
                .expect("accepted for someone");
            match outcome.backlogged.as_slice() {
                [] => accepted += 1,
                [member] if *member == to => refused += 1,
                other => panic!("{arrangement:?}: {other:?}"),
            }
        }
        assert!(refused > 0, "{arrangement:?}: the bound was reached");
        assert!(
            accepted * (4 << 10) <= (tuning.queue_bytes as u64) * 2,
            "{arrangement:?}: {accepted} messages of 4 KiB accepted over a bound of {} bytes",
            tuning.queue_bytes
        );
        let mut backlogged = 0;
        while let Ok(event) = events.try_recv() {
            if matches!(event, TransportEvent::Backlogged { ref member, .. } if *member == to) {
                backlogged += 1;
            }
        }
        assert_eq!(
            backlogged, 1,
            "{arrangement:?}: one Backlogged event for one streak of {refused} refusals"
        );
        sender.crash();
        receiver.crash();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_carrier_refuses_a_departed_member_both_ways() {
    init_tracing();
    let ca = TestCa::new();
    for arrangement in ALL {
        let (sender, receiver) = pair(&ca, arrangement, Tuning::default());
        let mut inbox = sender.subscribe::<Numbered>().expect("subscribe");
        let (me, them) = (
            sender.local_member().clone(),
            receiver.local_member().clone(),
        );
        let hello = Numbered::new("receiver", "normal", 0, 10);
        let outcome = receiver
            .send(&hello, Priority::Normal, std::slice::from_ref(&me))
            .expect("sent");
        assert!(outcome.is_complete(), "{arrangement:?}: {outcome:?}");
        receive(&mut inbox, 1, PATIENCE).await;

        sender.install_view(View::new(ViewId(2), [me.clone()]));
        let outcome = sender
            .send(&hello, Priority::Normal, std::slice::from_ref(&them))
            .expect("sent");
        assert_eq!(outcome.not_in_view, vec![them.clone()], "{arrangement:?}");
        let outcome = sender
            .send_datagram(&hello, std::slice::from_ref(&them))
            .expect("sent");
        assert_eq!(outcome.not_in_view, vec![them.clone()], "{arrangement:?}");
        // The departed member still thinks it is in: what it sends is not delivered.
        let late = Numbered::new("receiver", "normal", 1, 10);
        let _ = receiver
            .send(&late, Priority::Normal, std::slice::from_ref(&me))
            .expect("sent");
        assert!(
            tokio::time::timeout(Duration::from_millis(300), inbox.recv())
                .await
                .is_err(),
            "{arrangement:?}: nothing of a departed member is delivered"
        );
        sender.shutdown().await;
        receiver.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_carrier_carries_control_in_order_also_outside_the_view() {
    init_tracing();
    let ca = TestCa::new();
    for arrangement in ALL {
        let (sender, receiver) = pair(&ca, arrangement, Tuning::default());
        // A member in no view yet (a joiner), of the receiver's kind.
        let outsider = bind(&ca, kinds(arrangement).1, "outsider", Tuning::default());
        let mut inbox = receiver.subscribe::<ControlNote>().expect("subscribe");
        let mut own = sender.subscribe::<ControlNote>().expect("subscribe");
        let mut joiner = outsider.subscribe::<ControlNote>().expect("subscribe");
        let to = [
            receiver.local_member().clone(),
            sender.local_member().clone(),
        ];
        let out = [outsider.local_member().clone()];
        for index in 0..PER_PRIORITY {
            let note = ControlNote { index };
            let outcome = sender.send(&note, Priority::Control, &to).expect("sent");
            assert!(outcome.is_complete(), "{arrangement:?}: {outcome:?}");
            let outcome = sender.send(&note, Priority::Control, &out).expect("sent");
            assert_eq!(
                outcome.not_in_view, out,
                "{arrangement:?}: send keeps to the view"
            );
            let outcome = sender.send_outside_view(&note, &out).expect("sent");
            assert!(outcome.is_complete(), "{arrangement:?}: {outcome:?}");
        }
        for inbox in [&mut inbox, &mut own, &mut joiner] {
            let received = receive(inbox, PER_PRIORITY as usize, PATIENCE).await;
            let indexes: Vec<u64> = received.iter().map(|e| e.message.index).collect();
            assert_eq!(
                indexes,
                (0..PER_PRIORITY).collect::<Vec<_>>(),
                "{arrangement:?}: once each, in order"
            );
        }
        sender.shutdown().await;
        receiver.shutdown().await;
        outsider.shutdown().await;
    }
}
