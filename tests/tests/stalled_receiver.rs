//! A receiver that stops reading: the sender holds at most its byte bound for it, raises an
//! event, refuses further sends to it (reported, never dropped) until it catches up, and
//! keeps serving a third member at its unloaded rate.
//!
//! This test measures throughput side by side in one run, so it has a binary of its own:
//! cargo runs test binaries one after another, and nothing else competes for the cores
//! while it measures.

use std::time::{Duration, Instant};

use cohort_tests::{
    Numbered, PATIENCE, TestCa, init_tracing, install_view, receive, spawn_member, spawn_with,
    wait_until,
};
use cohort_transport::{MemberId, Messenger, Priority, QuicConfig, Subscription};

fn numbered(sender: &str, priority: Priority, index: u64, size: usize) -> Numbered {
    Numbered::new(sender, &priority.to_string(), index, size)
}

/// Sends `count` 1 KiB messages from `from` to `to` as fast as the destination's bound
/// allows, while `sub` reads them, and returns messages per second from the first send
/// until the last one is received.
async fn rate(
    from: &Messenger,
    to: &Messenger,
    sub: &mut Subscription<Numbered>,
    count: u64,
) -> f64 {
    let target = std::slice::from_ref(to.local_member());
    let start = Instant::now();
    let deadline = start + PATIENCE;
    let send_all = async {
        for index in 0..count {
            let message = numbered("a", Priority::Normal, index, 1024);
            // A well-behaved sender respects backpressure: a refused send is tried again
            // once the destination has had a moment to drain.
            while !from
                .send(&message, Priority::Normal, target)
                .expect("send")
                .is_complete()
            {
                assert!(Instant::now() < deadline, "the destination never drained");
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    };
    tokio::join!(send_all, receive(sub, count as usize, PATIENCE));
    count as f64 / start.elapsed().as_secs_f64()
}

/// Sends 1 KiB messages numbered from `next` to `to` until one is refused as backlogged
/// (true) or `limit` were accepted (false); `next` ends at the first index not accepted.
fn send_until_refused(from: &Messenger, to: &MemberId, next: &mut u64, limit: u64) -> bool {
    for _ in 0..limit {
        let message = numbered("a", Priority::Normal, *next, 1024);
        let outcome = from
            .send(&message, Priority::Normal, std::slice::from_ref(to))
            .expect("send");
        if !outcome.backlogged.is_empty() {
            return true;
        }
        *next += 1;
    }
    false
}

/// The best of several runs: load from outside the test only ever slows a run down, so the
/// fastest run is the one least disturbed.
fn best(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_receiver_is_bounded_and_costs_others_nothing() {
    init_tracing();
    let ca = TestCa::new();
    const BOUND: usize = 4 << 20;
    let config = QuicConfig {
        max_queued_bytes_per_destination: BOUND,
        max_frame_bytes: 64 << 10,
        ..QuicConfig::default()
    };
    let a = spawn_with(&ca.tls("a"), "a", config);
    let stalled = spawn_member(&ca, "stalled");
    let c = spawn_member(&ca, "c");
    install_view(1, &[&a, &stalled, &c]);
    let mut sub_c = c.subscribe::<Numbered>().expect("subscribe");
    let mut events = a.events();
    let ids = stalled.local_member().clone();
    const RUN: u64 = 10_000;

    // The unloaded rate to c, measured first in this same test.
    let mut unloaded = Vec::new();
    for _ in 0..5 {
        unloaded.push(rate(&a, &c, &mut sub_c, RUN).await);
    }

    // The stalled member subscribes but does not read: a floods it until refused.
    let mut stalled_sub = stalled.subscribe::<Numbered>().expect("subscribe");
    let mut accepted = 0u64;
    assert!(
        send_until_refused(&a, &ids, &mut accepted, 1_000_000),
        "the bound must stop the flood"
    );
    let held = a
        .peer_stats(&ids)
        .expect("a tracks the stalled member")
        .queued_bytes;
    assert!(
        held <= BOUND,
        "accounted memory {held} within the bound {BOUND}"
    );
    let queued_bytes = cohort_tests::within("the Backlogged event", PATIENCE, async {
        loop {
            // c may be reported too, briefly, while the rate runs pace themselves.
            if let Ok(cohort_transport::TransportEvent::Backlogged {
                member,
                queued_bytes,
            }) = events.recv().await
                && member == ids
            {
                return queued_bytes;
            }
        }
    })
    .await;
    assert!(queued_bytes <= BOUND);

    // Meanwhile, c is served as fast as before.
    let mut loaded = Vec::new();
    for _ in 0..5 {
        loaded.push(rate(&a, &c, &mut sub_c, RUN).await);
        let held = a.peer_stats(&ids).expect("tracked").queued_bytes;
        assert!(held <= BOUND, "still within the bound: {held}");
    }
    let (unloaded, loaded) = (best(&unloaded), best(&loaded));
    println!(
        "to c: {unloaded:.0} msg/s unloaded, {loaded:.0} msg/s while the stalled member is backlogged ({:.2})",
        loaded / unloaded
    );
    assert!(
        loaded >= 0.8 * unloaded,
        "{loaded:.0} msg/s is under 80% of {unloaded:.0}"
    );

    // Further sends to the stalled member are refused (reported, never silently dropped)
    // until it catches up; then they are accepted again and everything accepted arrives.
    // (Its subscription took some messages since the flood, so top the queue up again.)
    send_until_refused(&a, &ids, &mut accepted, 100_000);
    let outcome = a
        .send(
            &numbered("a", Priority::Normal, accepted, 1024),
            Priority::Normal,
            std::slice::from_ref(&ids),
        )
        .expect("send");
    assert_eq!(
        outcome.backlogged,
        vec![ids.clone()],
        "refused again while stalled"
    );
    let got = receive(&mut stalled_sub, accepted as usize, PATIENCE).await;
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, e)| e.message.index == i as u64),
        "everything accepted arrived in order"
    );
    wait_until("the backlog drained", PATIENCE, || {
        a.peer_stats(&ids).is_some_and(|s| s.queued_bytes == 0)
    })
    .await;
    let outcome = a
        .send(
            &numbered("a", Priority::Normal, accepted, 1024),
            Priority::Normal,
            std::slice::from_ref(&ids),
        )
        .expect("send");
    assert!(
        outcome.is_complete(),
        "accepted again once drained: {outcome:?}"
    );
    for m in [&a, &stalled, &c] {
        m.shutdown().await;
    }
}
