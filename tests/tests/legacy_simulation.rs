//! The legacy carrier on turmoil's simulated network: the production messenger over the
//! legacy protocol, bound on a simulated socket, with its timers on the simulation's
//! clock. Lost and delayed datagrams and a partition, from a seed; every message must
//! arrive exactly once and in order per priority, and one seed must give one trace.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use cohort_legacy_udp::LegacyConfig;
use cohort_tests::init_tracing;
use cohort_tests::sim::{SIM_PORT, SimUdpSocket, member_id, member_identity};
use cohort_transport::{Identity, MemberId, Messenger, Priority, Tag, View, ViewId};
use serde::{Deserialize, Serialize};

/// Messages per priority.
const PER_PRIORITY: u64 = 200;
const PRIORITIES: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Bulk];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Sequenced {
    priority: u8,
    index: u64,
    body: Vec<u8>,
}

impl cohort_transport::Message for Sequenced {
    const TAG: Tag = Tag(0x1_0301);
}

/// What the receiver saw: (simulated milliseconds, priority, index), in arrival order.
type Trace = Vec<(u128, u8, u64)>;

async fn bind(seed: u64, host: &str) -> Messenger {
    let ip = turmoil::lookup(host);
    let socket = SimUdpSocket::bind(ip, SIM_PORT)
        .await
        .expect("bind the socket");
    let identity = Identity {
        advertise: Some(SocketAddr::new(ip, SIM_PORT)),
        ..member_identity(seed, host)
    };
    let config = LegacyConfig {
        // The sender's shutdown waits out the partition and the resends after it.
        shutdown_timeout: Duration::from_secs(60),
        ..LegacyConfig::default()
    };
    cohort_legacy_udp::bind_with_socket(&identity, config, Arc::new(socket))
        .expect("bind the legacy messenger")
}

fn run(seed: u64) -> Trace {
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(120))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(30))
        // Bursts of loss: a link fails now and then and comes back.
        .fail_rate(0.05)
        .repair_rate(0.5)
        .udp_capacity(4096)
        .build();
    let ids: Vec<MemberId> = ["a", "b"]
        .iter()
        .map(|host| member_id(seed, host, sim.lookup(*host)))
        .collect();
    let view = View::new(ViewId(1), ids.clone());
    let to_b = ids[1].clone();
    let trace = Rc::new(RefCell::new(Trace::new()));

    let sender_view = view.clone();
    sim.client("a", async move {
        let messenger = bind(seed, "a").await;
        messenger.install_view(sender_view);
        for index in 0..PER_PRIORITY {
            for priority in PRIORITIES {
                let message = Sequenced {
                    priority: priority.index() as u8,
                    index,
                    // Some messages of several fragments, joined again at the receiver.
                    body: vec![index as u8; if index % 10 == 0 { 5_000 } else { 100 }],
                };
                let outcome = messenger
                    .send(&message, priority, std::slice::from_ref(&to_b))
                    .expect("sent");
                assert!(outcome.is_complete(), "{outcome:?}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Stays up until everything is acknowledged (resending meanwhile).
        messenger.shutdown().await;
        Ok(())
    });
    let seen = trace.clone();
    sim.client("b", async move {
        let messenger = bind(seed, "b").await;
        messenger.install_view(view);
        let mut inbox = messenger.subscribe::<Sequenced>().expect("subscribe");
        let started = tokio::time::Instant::now();
        let total = PER_PRIORITY as usize * PRIORITIES.len();
        while seen.borrow().len() < total {
            let envelope = inbox.recv().await.expect("the subscription stays open");
            let message = envelope.message;
            assert_eq!(
                message.body.first().copied().unwrap_or(message.index as u8),
                message.index as u8
            );
            let at = started.elapsed().as_millis();
            seen.borrow_mut()
                .push((at, message.priority, message.index));
        }
        Ok(())
    });
    // A partition of 1.5 s while the messages flow.
    let mut step = 0u64;
    loop {
        match step {
            100 => sim.partition("a", "b"),
            1_600 => sim.repair("a", "b"),
            _ => {}
        }
        step += 1;
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => panic!("seed {seed}: {error}"),
        }
    }
    Rc::try_unwrap(trace)
        .map(RefCell::into_inner)
        .unwrap_or_else(|shared| shared.borrow().clone())
}

/// Every stream of `trace` counts 0, 1, 2, … exactly once.
fn check(seed: u64, trace: &Trace) {
    let mut next = [0u64; 4];
    for (at, priority, index) in trace {
        let expected = &mut next[*priority as usize];
        assert_eq!(
            index, expected,
            "seed {seed}: priority {priority} at {at} ms out of order or duplicated"
        );
        *expected += 1;
    }
    for priority in PRIORITIES {
        assert_eq!(
            next[priority.index()],
            PER_PRIORITY,
            "seed {seed}: {priority}"
        );
    }
}

#[test]
fn the_legacy_carrier_delivers_once_in_order_through_loss_and_a_partition() {
    init_tracing();
    for seed in 1..=3 {
        let trace = run(seed);
        check(seed, &trace);
        let (first, last) = (trace[0].0, trace[trace.len() - 1].0);
        println!(
            "seed {seed}: {} messages from {first} to {last} ms",
            trace.len()
        );
        assert!(
            last > 1_500,
            "seed {seed}: the partition held messages back (last at {last} ms)"
        );
    }
}

/// The legacy carrier reads one clock, tokio's, which the simulation drives: the same seed
/// gives the same arrivals at the same simulated times.
#[test]
fn a_seed_fixes_the_legacy_carriers_whole_trace() {
    init_tracing();
    let first = run(11);
    check(11, &first);
    assert_eq!(first, run(11), "same seed, same trace");
    assert_ne!(first, run(12), "another seed, another trace");
}
