//! Never lose a message: delivery stays exactly once and in order per priority across
//! killed connections, blackholes, packet loss and restarts, and a stalled receiver costs
//! only its own bounded queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use cohort_tests::{
    Numbered, PATIENCE, TestCa, init_tracing, install_view, receive, spawn_member, spawn_with,
    wait_until,
};
use cohort_transport::{Delivery, Messenger, Priority, QuicConfig, Subscription, View, ViewId};

const DATA: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Bulk];

fn numbered(sender: &str, priority: Priority, index: u64, size: usize) -> Numbered {
    Numbered::new(sender, &priority.to_string(), index, size)
}

/// Receives `count` messages and checks that, per (sender, priority), indices run 0, 1, 2, …
/// with none missing or repeated. Counts progress in `progress` as it goes. With a `gate`,
/// it takes no message beyond the gate's number until the gate is raised (its subscription
/// fills, and the sender's stream is held back mid-flow).
async fn receive_in_order(
    mut sub: Subscription<Numbered>,
    count: u64,
    progress: Arc<AtomicU64>,
    limit: Duration,
    mut gate: Option<watch::Receiver<u64>>,
) -> Subscription<Numbered> {
    let mut next = std::collections::HashMap::<(String, String), u64>::new();
    let deadline = tokio::time::Instant::now() + limit;
    for received in 0..count {
        if let Some(gate) = &mut gate {
            tokio::time::timeout_at(deadline, gate.wait_for(|open| received < *open))
                .await
                .unwrap_or_else(|_| panic!("held at {received} of {count} for {limit:?}"))
                .expect("the gate stays");
        }
        let envelope = tokio::time::timeout_at(deadline, sub.recv())
            .await
            .unwrap_or_else(|_| panic!("only {received} of {count} messages within {limit:?}"))
            .expect("subscription open");
        let m = envelope.message;
        let Delivery::Reliable(priority) = envelope.delivery else {
            panic!("unexpected datagram");
        };
        assert_eq!(
            priority.to_string(),
            m.stream,
            "arrived on its own priority"
        );
        let expected = next
            .entry((m.sender.clone(), m.stream.clone()))
            .or_insert(0);
        assert_eq!(
            m.index, *expected,
            "{}/{}: exactly once and in order",
            m.sender, m.stream
        );
        *expected += 1;
        progress.fetch_add(1, Ordering::Relaxed);
    }
    sub
}

/// Sends `count` messages of `size` bytes from `a` to `b`, round robin over the data
/// priorities, and checks that `b` receives every one exactly once and in order per priority.
async fn stream_across_priorities(a: &Messenger, b: &Messenger, count: u64, size: usize) {
    let reader = tokio::spawn(receive_in_order(
        b.subscribe().expect("subscribe"),
        count,
        Arc::new(AtomicU64::new(0)),
        Duration::from_secs(120),
        None,
    ));
    let to = std::slice::from_ref(b.local_member());
    for index in 0..count {
        let priority = DATA[(index % 3) as usize];
        // One sequence per priority: index within that priority.
        let _ = a
            .send(&numbered("a", priority, index / 3, size), priority, to)
            .expect("send");
    }
    let _ = reader
        .await
        .expect("exactly once and in order per priority");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_connection_mid_stream_loses_and_repeats_nothing() {
    init_tracing();
    let ca = TestCa::new();
    let a = spawn_member(&ca, "a");
    let b = spawn_member(&ca, "b");
    install_view(1, &[&a, &b]);
    const PER_PRIORITY: u64 = 100_000;
    let total = PER_PRIORITY * DATA.len() as u64;
    let progress = Arc::new(AtomicU64::new(0));
    // Six kills while the stream flows, alternating sides. The receiver stops at each kill
    // point until the kill is done, so that every kill hits a stream in flight however fast
    // the transport is.
    const KILLS: u64 = 6;
    let kill_point = |kill: u64| total * kill / (KILLS + 1);
    let (gate, gated) = watch::channel(kill_point(1));
    let reader = tokio::spawn(receive_in_order(
        b.subscribe::<Numbered>().expect("subscribe"),
        total,
        progress.clone(),
        Duration::from_secs(300),
        Some(gated),
    ));
    let (ida, idb) = (a.local_member().clone(), b.local_member().clone());
    for index in 0..PER_PRIORITY {
        for priority in DATA {
            let outcome = a
                .send(
                    &numbered("a", priority, index, 8),
                    priority,
                    std::slice::from_ref(&idb),
                )
                .expect("send");
            assert!(outcome.is_complete(), "{outcome:?}");
        }
    }
    for kill in 1..=KILLS {
        let threshold = kill_point(kill);
        wait_until(
            "the stream reaches the next kill point",
            Duration::from_secs(120),
            || progress.load(Ordering::Relaxed) >= threshold,
        )
        .await;
        let killed = if kill % 2 == 0 {
            b.quic().expect("a QUIC carrier").reset_connection(&ida)
        } else {
            a.quic().expect("a QUIC carrier").reset_connection(&idb)
        };
        assert!(killed, "kill {kill}: there was a connection to kill");
        let received = progress.load(Ordering::Relaxed);
        assert!(
            received < total,
            "kill {kill} happened mid-stream ({received} of {total})"
        );
        // Wait for the reconnection before the next kill, so each kill hits a live stream.
        wait_until("reconnected", PATIENCE, || {
            a.peer_stats(&idb)
                .is_some_and(|s| s.connected && s.connections > kill)
        })
        .await;
        let next = if kill == KILLS {
            total
        } else {
            kill_point(kill + 1)
        };
        gate.send_replace(next);
    }
    let _ = reader.await.expect("every message exactly once, in order");
    let stats = a.peer_stats(&idb).expect("a knows b");
    println!(
        "connections {}, frames resent {}, duplicates dropped by b {}",
        stats.connections,
        stats.frames_resent,
        b.peer_stats(&ida).map_or(0, |s| s.duplicates_dropped)
    );
    assert!(
        stats.connections > KILLS,
        "a new connection after every kill"
    );
    wait_until("everything acknowledged", PATIENCE, || {
        a.peer_stats(&idb).is_some_and(|s| s.queued_bytes == 0)
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

fn short_idle() -> QuicConfig {
    QuicConfig {
        idle_timeout: Duration::from_secs(1),
        keep_alive_interval: Duration::from_millis(200),
        ..QuicConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_second_blackhole_loses_nothing_and_other_pairs_carry_on() {
    init_tracing();
    let ca = TestCa::new();
    // A 1 s idle timeout, so the blackholed connection dies and must be rebuilt.
    let a = spawn_with(&ca.tls("a"), "a", short_idle());
    let b = spawn_with(&ca.tls("b"), "b", short_idle());
    let c = spawn_with(&ca.tls("c"), "c", short_idle());
    install_view(1, &[&a, &b, &c]);
    let (idb, idc) = (b.local_member().clone(), c.local_member().clone());
    const TICKS: u64 = 2500; // 5 s at one message per pair every 2 ms
    let progress_b = Arc::new(AtomicU64::new(0));
    let progress_c = Arc::new(AtomicU64::new(0));
    // b hears from a and c; c hears from a.
    let reader_b = tokio::spawn(receive_in_order(
        b.subscribe().expect("subscribe"),
        2 * TICKS,
        progress_b.clone(),
        Duration::from_secs(60),
        None,
    ));
    let reader_c = tokio::spawn(receive_in_order(
        c.subscribe().expect("subscribe"),
        TICKS,
        progress_c.clone(),
        Duration::from_secs(60),
        None,
    ));
    let mut ticker = tokio::time::interval(Duration::from_millis(2));
    let start = Instant::now();
    let mut during = None;
    let mut blackholed = false;
    for index in 0..TICKS {
        ticker.tick().await;
        let elapsed = start.elapsed();
        if !blackholed && elapsed >= Duration::from_secs(1) {
            a.faults().blackhole(b.local_addr());
            b.faults().blackhole(a.local_addr());
            blackholed = true;
            during = Some((
                progress_b.load(Ordering::Relaxed),
                progress_c.load(Ordering::Relaxed),
            ));
        }
        if let Some((b_before, c_before)) = during.filter(|_| elapsed >= Duration::from_secs(4)) {
            let (b_now, c_now) = (
                progress_b.load(Ordering::Relaxed),
                progress_c.load(Ordering::Relaxed),
            );
            a.faults().heal();
            b.faults().heal();
            println!(
                "during the blackhole: c received {} from a, b received {} (from c only)",
                c_now - c_before,
                b_now - b_before
            );
            assert!(
                c_now - c_before > 500,
                "a kept talking to c during the blackhole"
            );
            assert!(
                b_now - b_before > 500,
                "c kept talking to b during the blackhole"
            );
            during = None;
        }
        let _ = a
            .send(
                &numbered("a", Priority::Normal, index, 32),
                Priority::Normal,
                &[idb.clone(), idc.clone()],
            )
            .expect("send");
        let _ = c
            .send(
                &numbered("c", Priority::High, index, 32),
                Priority::High,
                std::slice::from_ref(&idb),
            )
            .expect("send");
    }
    assert!(
        during.is_none() && blackholed,
        "the blackhole was applied and healed"
    );
    let _ = reader_b
        .await
        .expect("b got everything from a and c, exactly once and in order");
    let _ = reader_c.await.expect("c got everything from a");
    let stats = a.peer_stats(&idb).expect("a knows b");
    println!(
        "a->b connections {}, frames resent {}",
        stats.connections, stats.frames_resent
    );
    assert!(
        stats.connections >= 2,
        "the blackholed connection died and was rebuilt"
    );
    for m in [&a, &b, &c] {
        m.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarted_on_the_same_address_starts_fresh() {
    init_tracing();
    let ca = TestCa::new();
    let a = spawn_member(&ca, "a");
    let b = spawn_member(&ca, "b");
    install_view(1, &[&a, &b]);
    let address = b.local_addr();
    let old_b = b.local_member().clone();
    // a's frames for the old b cannot get through: they stay unacknowledged at a.
    a.faults().block_to(address);
    for index in 0..1000 {
        let _ = a
            .send(
                &numbered("a", Priority::Normal, index, 16),
                Priority::Normal,
                std::slice::from_ref(&old_b),
            )
            .expect("send");
    }
    wait_until("a holds frames for the old b", PATIENCE, || {
        a.peer_stats(&old_b).is_some_and(|s| s.queued_bytes > 0)
    })
    .await;
    b.shutdown().await;
    drop(b);

    // The same process restarts: same address, new identity.
    let tls = ca.tls("b");
    let identity = cohort_transport::Identity {
        bind: address,
        ..cohort_transport::Identity::named("b")
    };
    let mut rebound = None;
    wait_until("the old socket is released", PATIENCE, || {
        rebound = Messenger::bind(&identity, QuicConfig::default(), &tls).ok();
        rebound.is_some()
    })
    .await;
    let new_b = rebound.expect("bound");
    assert_ne!(new_b.local_member(), &old_b, "a restart is a new member");
    let view = View::new(
        ViewId(2),
        [a.local_member().clone(), new_b.local_member().clone()],
    );
    a.install_view(view.clone());
    new_b.install_view(view);
    a.faults().heal();
    let mut at_new_b = new_b.subscribe::<Numbered>().expect("subscribe");
    let mut at_a = a.subscribe::<Numbered>().expect("subscribe");
    let idn = new_b.local_member().clone();
    for index in 0..10 {
        let _ = a
            .send(
                &numbered("a", Priority::Normal, index, 16),
                Priority::Normal,
                std::slice::from_ref(&idn),
            )
            .expect("send");
        let _ = new_b
            .send(
                &numbered("b", Priority::Normal, index, 16),
                Priority::Normal,
                std::slice::from_ref(a.local_member()),
            )
            .expect("send");
    }
    let got = receive(&mut at_new_b, 10, PATIENCE).await;
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, e)| e.message.index == i as u64),
        "only the new messages"
    );
    let got = receive(&mut at_a, 10, PATIENCE).await;
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, e)| e.message.index == i as u64)
    );
    let stats = a.peer_stats(&idn).expect("a knows the new b");
    assert_eq!(
        (stats.sequence_gaps, stats.frames_resent),
        (0, 0),
        "both directions started at 1"
    );
    assert!(a.peer_stats(&old_b).is_none(), "nothing kept for the old b");
    assert!(
        at_new_b.try_recv().is_none(),
        "none of the old member's frames arrived"
    );
    a.shutdown().await;
    new_b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_percent_loss_both_ways_delivers_everything_in_order() {
    init_tracing();
    let ca = TestCa::new();
    let a = spawn_member(&ca, "a");
    let b = spawn_member(&ca, "b");
    install_view(1, &[&a, &b]);
    for (member, seed) in [(&a, 1), (&b, 2)] {
        member.faults().seed(seed);
        member.faults().drop_outgoing(0.2);
    }
    stream_across_priorities(&a, &b, 10_000, 64).await;
    let dropped = a.faults().dropped() + b.faults().dropped();
    println!("datagrams dropped by the fault rules: {dropped}");
    assert!(dropped > 100, "the loss was real");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_jitter_duplication_and_reordering_both_ways_deliver_exactly_once_in_order() {
    init_tracing();
    let ca = TestCa::new();
    let a = spawn_member(&ca, "a");
    let b = spawn_member(&ca, "b");
    install_view(1, &[&a, &b]);
    for (member, seed) in [(&a, 11), (&b, 12)] {
        let faults = member.faults();
        faults.seed(seed);
        faults.delay_outgoing(Duration::from_millis(10), Duration::from_millis(10));
        faults.duplicate_outgoing(0.1);
        faults.reorder_outgoing(0.1, Duration::from_millis(15));
    }
    stream_across_priorities(&a, &b, 6_000, 200).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// A High message is written to its stream at once by the sender when the stream's writer
/// is idle; what the stream does not take at once (here: each large message is twice the
/// stream's flow-control window) is left for the writer, which writes it before anything
/// newer. Each round waits for its messages, so that the next large one finds the writer
/// idle and is written at once; every message arrives whole, exactly once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_high_messages_written_at_once_arrive_whole_and_in_order() {
    init_tracing();
    let ca = TestCa::new();
    let a = spawn_member(&ca, "a");
    let b = spawn_member(&ca, "b");
    install_view(1, &[&a, &b]);
    const ROUNDS: u64 = 20;
    let large = 2 * QuicConfig::default().stream_window_bytes.get() as usize;
    let mut inbox = b.subscribe::<Numbered>().expect("subscribe");
    let to = std::slice::from_ref(b.local_member());
    let mut index = 0;
    for _ in 0..ROUNDS {
        // A large one, then small ones that must wait their turn behind its remainder.
        let sizes = [large, 8, 8];
        for size in sizes {
            let outcome = a
                .send(
                    &numbered("a", Priority::High, index, size),
                    Priority::High,
                    to,
                )
                .expect("send");
            assert!(outcome.is_complete(), "{outcome:?}");
            index += 1;
        }
        for (offset, size) in sizes.into_iter().enumerate() {
            let expected = index - sizes.len() as u64 + offset as u64;
            let envelope = tokio::time::timeout(PATIENCE, inbox.recv())
                .await
                .expect("within patience")
                .expect("subscription open");
            let m = envelope.message;
            assert_eq!(envelope.delivery, Delivery::Reliable(Priority::High));
            assert_eq!((m.index, m.body.len()), (expected, size), "in order");
            assert!(
                m.body.iter().all(|&byte| byte == (expected % 251) as u8),
                "message {expected} arrived whole"
            );
        }
    }
    a.shutdown().await;
    b.shutdown().await;
}
