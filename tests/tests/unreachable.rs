//! Unreachable reports: ICMP errors naming a destination whose port is closed, read from
//! the socket's error queue (Linux) and reported as `TransportEvent::Unreachable`, on real
//! sockets over loopback.

use std::net::{SocketAddr, UdpSocket};
use std::num::NonZeroUsize;
use std::time::Duration;

use cohort_tests::{PATIENCE, TestCa, init_tracing, raw_client, spawn_member, spawn_with};
use cohort_transport::wire::KNOCK;
use cohort_transport::{
    MemberId, MemberKind, Message, Messenger, Query, QueryError, QuicConfig, Tag, TransportEvent,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

#[derive(Debug, Serialize, Deserialize)]
struct AreYouThere;

impl Message for AreYouThere {
    const TAG: Tag = Tag(0xfe11);
}

impl Query for AreYouThere {
    type Answer = bool;
}

/// A loopback port that was bound a moment ago and is closed now.
fn closed_port(ip: &str) -> SocketAddr {
    let socket = UdpSocket::bind((ip, 0)).expect("bind a throwaway socket");
    socket.local_addr().expect("its address")
}

/// Waits for an `Unreachable` report naming `address`; returns its reason.
async fn unreachable_report(
    events: &mut broadcast::Receiver<TransportEvent>,
    address: SocketAddr,
) -> String {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(TransportEvent::Unreachable { address: a, reason }) if a == address => {
                    return reason;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("events closed"),
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("no unreachable report for {address} within {PATIENCE:?}"))
}

/// Sends to `address` (a query that nobody answers) and returns the report it causes.
async fn ask_nobody(from: &Messenger, address: SocketAddr) -> String {
    ask_listening(from, from.events(), address).await
}

/// [`ask_nobody`], with `events` subscribed earlier: a report caused by other datagrams since
/// then (which the rate limit folds the query's own into) counts too.
async fn ask_listening(
    from: &Messenger,
    mut events: broadcast::Receiver<TransportEvent>,
    address: SocketAddr,
) -> String {
    let asking = from.query_within(address, &AreYouThere, PATIENCE);
    tokio::select! {
        reason = unreachable_report(&mut events, address) => reason,
        answer = asking => panic!("{address} answered: {answer:?}"),
    }
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datagram_to_a_closed_port_is_reported_with_its_address() {
    init_tracing();
    let ca = TestCa::new();
    let member = spawn_member(&ca, "member");
    let closed = closed_port("127.0.0.1");
    let reason = ask_nobody(&member, closed).await;
    assert_eq!(reason, "ICMP port unreachable");
    assert!(member.socket_stats().unreachable_errors >= 1);
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_reported_over_ipv6_too() {
    init_tracing();
    if UdpSocket::bind("[::1]:0").is_err() {
        println!("skipped: this host has no IPv6 loopback (::1 cannot be bound)");
        return;
    }
    let ca = TestCa::new();
    let identity = cohort_transport::Identity {
        bind: "[::1]:0".parse().expect("literal"),
        ..cohort_transport::Identity::named("member")
    };
    let member =
        Messenger::bind(&identity, QuicConfig::default(), &ca.tls("member")).expect("bind on ::1");
    let closed = closed_port("::1");
    assert_eq!(ask_nobody(&member, closed).await, "ICMP port unreachable");
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_member_answers_until_it_crashes_and_is_reported_after() {
    init_tracing();
    let ca = TestCa::new();
    let (asker, victim) = (spawn_member(&ca, "asker"), spawn_member(&ca, "victim"));
    victim.serve::<AreYouThere>(|_, _| true);
    let answer = asker
        .query_within(victim.local_addr(), &AreYouThere, PATIENCE)
        .await;
    assert!(matches!(answer, Ok(true)), "{answer:?}");
    assert_eq!(
        asker.socket_stats().unreachable_errors,
        0,
        "alive: no report"
    );

    // Listening from before the crash: the last datagrams of the closing query connection
    // may reach the closed port first, and their report stands for the query's own.
    let events = asker.events();
    victim.crash();
    assert_eq!(
        ask_listening(&asker, events, victim.local_addr()).await,
        "ICMP port unreachable"
    );
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_to_a_closed_port_gives_up_without_waiting_out_its_limit() {
    init_tracing();
    let ca = TestCa::new();
    let member = spawn_member(&ca, "member");
    let closed = closed_port("127.0.0.1");
    let limit = Duration::from_secs(20);
    let started = std::time::Instant::now();
    let result = member.query_within(closed, &AreYouThere, limit).await;
    let took = started.elapsed();
    assert!(
        matches!(result, Err(QueryError::Unreachable(address)) if address == closed),
        "{result:?}"
    );
    // A few round trips after the refusal, not the 20 s limit (bound kept generous).
    assert!(took < limit / 2, "gave up after {took:?}");
    println!("a query to a closed port gave up after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_report_does_not_stop_the_destination_from_answering() {
    init_tracing();
    let ca = TestCa::new();
    let (asker, live) = (spawn_member(&ca, "asker"), spawn_member(&ca, "live"));
    live.serve::<AreYouThere>(|_, _| true);
    asker.faults().forge_unreachable(live.local_addr());
    let mut events = asker.events();
    let answer = asker
        .query_within(live.local_addr(), &AreYouThere, PATIENCE)
        .await;
    assert!(matches!(answer, Ok(true)), "{answer:?}");
    let reason = unreachable_report(&mut events, live.local_addr()).await;
    assert_eq!(reason, "forged ICMP port unreachable");
    assert!(asker.socket_stats().unreachable_errors >= 1);
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_between_live_members_raises_no_report() {
    init_tracing();
    let ca = TestCa::new();
    let (a, b) = (spawn_member(&ca, "a"), spawn_member(&ca, "b"));
    b.serve::<AreYouThere>(|_, _| true);
    for _ in 0..20 {
        let answer = a.query_within(b.local_addr(), &AreYouThere, PATIENCE).await;
        assert!(matches!(answer, Ok(true)), "{answer:?}");
    }
    // An ICMP error about a datagram comes back before any answer to it could.
    assert_eq!(a.socket_stats().unreachable_errors, 0);
    assert_eq!(b.socket_stats().unreachable_errors, 0);
}

#[derive(Debug, Serialize, Deserialize)]
struct Ping(u32);

impl Message for Ping {
    const TAG: Tag = Tag(0xfe12);
}

/// A query waiting its turn behind other dials has sent nothing yet: ICMP errors about its
/// address meanwhile (here forged, for the datagrams of an existing connection) are not
/// refusals of it. Before, such an error gave the waiting query up as unreachable 50 ms
/// later, and a busy checker removed a live member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_waiting_for_a_dial_permit_is_not_given_up_by_errors_before_it_dials() {
    init_tracing();
    let ca = TestCa::new();
    let config = QuicConfig {
        max_concurrent_dials: NonZeroUsize::new(2).expect("positive"),
        max_dials_outside_view: NonZeroUsize::MIN,
        ..QuicConfig::default()
    };
    let asker = spawn_with(&ca.tls("asker"), "asker", config);
    let live = spawn_member(&ca, "live");
    live.serve::<AreYouThere>(|_, _| true);
    cohort_tests::install_view(1, &[&asker, &live]);
    let mut heard = live.subscribe::<Ping>().expect("subscribe");
    // A connection between the two, carrying datagrams that the forged errors will name.
    let pings = {
        let asker = asker.clone();
        let to = vec![live.local_member().clone()];
        tokio::spawn(async move {
            for n in 0..400u32 {
                let _ = asker.send_datagram(&Ping(n), &to);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    cohort_tests::receive(&mut heard, 1, PATIENCE).await;

    // Both dial permits are held by queries to sockets that never answer; a datagram of
    // each arriving there shows that it dials, holding its permit.
    let held = Duration::from_secs(1);
    let mut blockers = Vec::new();
    for _ in 0..2 {
        let silent = UdpSocket::bind("127.0.0.1:0").expect("bind a silent socket");
        let address = silent.local_addr().expect("its address");
        let asking = {
            let asker = asker.clone();
            tokio::spawn(async move { asker.query_within(address, &AreYouThere, held).await })
        };
        silent
            .set_read_timeout(Some(PATIENCE))
            .expect("a read timeout");
        let silent = tokio::task::spawn_blocking(move || {
            let mut buffer = [0u8; 2048];
            silent.recv_from(&mut buffer).map(|_| silent)
        })
        .await
        .expect("the read ends")
        .expect("the blocking query dials the silent socket");
        blockers.push((asking, silent));
    }

    asker.faults().forge_unreachable(live.local_addr());
    let answer = asker
        .query_within(live.local_addr(), &AreYouThere, PATIENCE)
        .await;
    assert!(matches!(answer, Ok(true)), "{answer:?}");
    assert!(
        asker.socket_stats().unreachable_errors >= 1,
        "errors were forged"
    );
    for (asking, _silent) in blockers {
        let answer = asking.await.expect("the blocking query ends");
        assert!(
            answer.is_err(),
            "nobody answers at a silent socket: {answer:?}"
        );
    }
    pings.abort();
}

/// The member a knock is addressed to: only its address matters.
fn at(address: SocketAddr) -> MemberId {
    MemberId::new("knocked", address, MemberKind::Member)
}

/// Knocks at `at` from `from` every few milliseconds until `condition` holds, for up to
/// [`PATIENCE`]. A knock is sent without waiting and may be lost (a socket whose
/// writability the runtime has not seen yet refuses it, as the network could lose it), so
/// one is never enough to wait on.
async fn knock_until(
    from: &Messenger,
    at: &MemberId,
    what: &str,
    mut condition: impl FnMut() -> bool,
) {
    let wait = async {
        while !condition() {
            from.knock(at);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {PATIENCE:?}"));
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_knock_is_one_byte_and_a_closed_port_answers_it_with_a_report() {
    init_tracing();
    let ca = TestCa::new();
    let member = spawn_member(&ca, "member");
    let closed = at(closed_port("127.0.0.1"));
    let mut events = member.events();
    let reported = std::sync::atomic::AtomicBool::new(false);
    let waiting = knock_until(&member, &closed, "a report", || {
        reported.load(std::sync::atomic::Ordering::Relaxed)
    });
    let report = async {
        let reason = unreachable_report(&mut events, closed.address()).await;
        reported.store(true, std::sync::atomic::Ordering::Relaxed);
        reason
    };
    let ((), reason) = tokio::join!(waiting, report);
    assert_eq!(reason, "ICMP port unreachable");
    // Nothing but knocks went out, one byte each.
    let stats = member.socket_stats();
    assert!(stats.datagrams_sent >= 1);
    assert_eq!(stats.bytes_sent, stats.datagrams_sent * KNOCK.len() as u64);
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_knock_at_a_live_member_is_counted_there_and_changes_nothing_else() {
    init_tracing();
    let ca = TestCa::new();
    let (a, b) = (spawn_member(&ca, "a"), spawn_member(&ca, "b"));
    b.serve::<AreYouThere>(|_, _| true);
    for _ in 0..3 {
        // At least: another test's closed port may be the one b was given, and knocked.
        let before = b.socket_stats().knocks_received;
        knock_until(&a, b.local_member(), "a knock counted at b", || {
            b.socket_stats().knocks_received > before
        })
        .await;
        let answer = a.query_within(b.local_addr(), &AreYouThere, PATIENCE).await;
        assert!(matches!(answer, Ok(true)), "{answer:?}");
    }
    let stats = b.socket_stats();
    assert_eq!(
        stats.non_quic_received, 0,
        "not taken for a legacy datagram"
    );
    assert_eq!(a.socket_stats().unreachable_errors, 0);
}

/// A build that does not know knocks hands one to quinn, as a plain quinn endpoint here
/// does: quinn drops a datagram too short to be a packet, and its connections go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_knock_at_a_plain_quinn_endpoint_is_dropped_without_harm() {
    init_tracing();
    let ca = TestCa::new();
    let member = spawn_member(&ca, "member");
    let old = raw_client(ca.certificate_pem(), Some(&ca.issue("old")));
    let connect = || async {
        tokio::time::timeout(
            PATIENCE,
            old.connect(member.local_addr(), "127.0.0.1")
                .expect("connect"),
        )
        .await
        .expect("handshake in time")
        .expect("handshake")
    };
    let first = connect().await;
    let old_address = old.local_addr().expect("its address");
    for _ in 0..10 {
        member.knock(&at(old_address));
    }
    // After the knocks (loopback keeps their order), a second handshake still completes
    // and the first connection is still open.
    let second = connect().await;
    assert!(first.close_reason().is_none(), "{:?}", first.close_reason());
    assert!(second.close_reason().is_none());
    assert_eq!(member.socket_stats().unreachable_errors, 0);
}
