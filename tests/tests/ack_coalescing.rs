//! Acknowledgements are coalesced, measured on turmoil's simulated network, where a
//! trickle keeps its spacing exactly whatever the machine's load (a test on real sockets
//! and real time measured 22-24 frames for 200 messages on a quiet machine and twice that
//! under the load of CI, too close to the 70 it counted without the delay).
//!
//! Fifty trickles of two messages 1 ms apart (tokio's timers have millisecond resolution,
//! so the simulation ticks by 1 ms) over a link of exactly 1 ms: on Normal, the receiver
//! acknowledges a trickle `ACK_DELAY` (2 ms) after its first message arrived, which covers
//! the second; on Bulk, whose in-flight cap waits on acknowledgements, each message is
//! acknowledged at once. `PeerStats::acks_sent` counts the frames. Measured: 51 frames on
//! Normal (one per trickle and one for the first message) and 101 on Bulk; with
//! `ACK_DELAY` set to 0, 101 on Normal too, and the test fails.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use cohort_tests::sim::{bind_member, member_config, member_id, member_identity};
use cohort_tests::{Numbered, TestCa, init_tracing};
use cohort_transport::{MemberId, Priority, View, ViewId};

const ROUNDS: u64 = 50;
const PER_ROUND: u64 = 2;
const SPACING: Duration = Duration::from_millis(1);

/// Ack frames the receiver wrote for the trickles on `priority` (after one message that
/// opens the connection), and the messages it received.
fn acks_for(seed: u64, priority: Priority) -> (u64, u64) {
    let ca = TestCa::new();
    let (tls_a, tls_b) = (ca.tls("a"), ca.tls("b"));
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(60))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(1))
        .build();
    let ids: Vec<MemberId> = ["a", "b"]
        .iter()
        .map(|host| member_id(seed, host, sim.lookup(*host)))
        .collect();
    let view = View::new(ViewId(1), ids.clone());
    let (to_b, from_a) = (ids[1].clone(), ids[0].clone());
    let total = 1 + ROUNDS * PER_ROUND;
    let counted = Rc::new(Cell::new((0u64, 0u64)));

    let sender_view = view.clone();
    sim.client("a", async move {
        let a = bind_member("a", member_identity(seed, "a"), &tls_a, member_config()).await?;
        let a = a.messenger;
        a.install_view(sender_view);
        let acks = |a: &cohort_transport::Messenger| {
            a.peer_stats(&to_b).map_or(0, |stats| stats.acks_received)
        };
        let until_acked = |before: u64| {
            let a = a.clone();
            async move {
                for _ in 0..10_000 {
                    if acks(&a) > before {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err("no acknowledgement within 10 simulated seconds")
            }
        };
        let send = |index: u64| {
            let message = Numbered::new("a", "trickle", index, 16);
            let outcome = a.send(&message, priority, std::slice::from_ref(&to_b))?;
            assert!(outcome.is_complete(), "{outcome:?}");
            Ok::<(), cohort_transport::SendError>(())
        };
        // The connection, opened and quiet, before the trickles.
        send(0)?;
        until_acked(0).await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
        for round in 0..ROUNDS {
            let before = acks(&a);
            for i in 0..PER_ROUND {
                send(1 + round * PER_ROUND + i)?;
                tokio::time::sleep(SPACING).await;
            }
            until_acked(before).await?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    });
    let seen = counted.clone();
    sim.client("b", async move {
        let b = bind_member("b", member_identity(seed, "b"), &tls_b, member_config()).await?;
        let b = b.messenger;
        b.install_view(view);
        let mut inbox = b.subscribe::<Numbered>()?;
        let mut received = 0;
        while received < total {
            let envelope = inbox.recv().await.ok_or("the subscription closed")?;
            assert_eq!(envelope.message.index, received, "in order, once");
            received += 1;
        }
        // The last trickle's acknowledgement is written 2 ms after it began.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let acks = b.peer_stats(&from_a).map_or(0, |stats| stats.acks_sent);
        seen.set((acks, received));
        Ok(())
    });
    sim.run()
        .unwrap_or_else(|error| panic!("seed {seed}: {error}"));
    counted.get()
}

#[test]
fn a_trickle_of_messages_is_acknowledged_in_one_frame() {
    init_tracing();
    let (normal, received) = acks_for(1, Priority::Normal);
    let (bulk, _) = acks_for(1, Priority::Bulk);
    println!(
        "{received} messages: {normal} Ack frames on Normal, {bulk} on Bulk \
         ({ROUNDS} trickles of {PER_ROUND})"
    );
    assert_eq!(received, 1 + ROUNDS * PER_ROUND);
    assert!(
        normal <= ROUNDS + 2,
        "one acknowledgement per trickle on Normal, and one for the first message: {normal}"
    );
    assert!(
        bulk >= ROUNDS * PER_ROUND / 2,
        "Bulk is acknowledged at once: {bulk} frames"
    );
}
