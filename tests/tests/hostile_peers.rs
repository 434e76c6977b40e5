//! What a certificate holder outside the view can do to a member's peer table and
//! connections, each tried on purpose with a raw client:
//!
//! - create peers without bound (one Hello per fresh uuid): capped by
//!   `max_peers_outside_view`, and each is freed once silent for
//!   `outside_view_peer_timeout`;
//! - hold the member's dial permits with peers that never answer: dials to members outside
//!   the view take at most `max_dials_outside_view` of them, so a view member's dial and a
//!   final check go first;
//! - take over a joiner's connection by saying Hello with its uuid from another address:
//!   refused with `IDENTITY_REJECTED`;
//!
//! and what a member does after a one-way connection loss: a new Hello from the same
//! member at the same address replaces a connection of its own that is no longer fresh,
//! instead of being refused with `DUPLICATE_CONNECTION` until the idle timeout.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use cohort_tests::rogue::{
    answer_hello, close_code, establish, raw_member_endpoint, say_hello_as, try_establish,
};
use cohort_tests::{
    PATIENCE, TestCa, init_tracing, install_view, raw_client, receive, spawn_member, spawn_with,
    wait_until, within,
};
use cohort_transport::wire::{CloseCode, Frame, FrameDecoder};
use cohort_transport::{MemberId, MemberKind, Message, Messenger, QuicConfig, Tag, TransportEvent};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

/// A membership-range message (below `Tag::FIRST_APPLICATION`): what a process outside
/// the view may send, and what `send_outside_view` takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Probe(u64);

impl Message for Probe {
    const TAG: Tag = Tag(0xfe12);
}

/// A query a final check stands in for.
#[derive(Debug, Serialize, Deserialize)]
struct Alive;

impl Message for Alive {
    const TAG: Tag = Tag(0xfe13);
}

impl cohort_transport::Query for Alive {
    type Answer = u32;
}

fn connect(client: &quinn::Endpoint, to: SocketAddr) -> quinn::Connecting {
    client.connect(to, "127.0.0.1").expect("connect")
}

/// A UDP socket that takes every datagram and answers none: a dial to it holds its
/// permit for the whole handshake timeout.
async fn silent_address() -> (tokio::net::UdpSocket, SocketAddr) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = socket.local_addr().expect("addr");
    (socket, address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_outside_the_view_are_capped_and_freed_once_silent() {
    init_tracing();
    let ca = TestCa::new();
    let config = QuicConfig {
        max_peers_outside_view: NonZeroUsize::new(4).expect("positive"),
        outside_view_peer_timeout: Duration::from_millis(400),
        max_connections_per_address: NonZeroUsize::new(16).expect("positive"),
        max_handshakes_per_address: NonZeroUsize::new(16).expect("positive"),
        ..QuicConfig::default()
    };
    let member = spawn_with(&ca.tls("member"), "member", config);
    install_view(1, &[&member]);
    let rogue = raw_client(ca.certificate_pem(), Some(&ca.issue("rogue")));
    let address = rogue.local_addr().expect("addr");

    // Four Hellos, each from a fresh uuid at the rogue's address: four peers.
    let mut open = Vec::new();
    let mut created = Vec::new();
    for _ in 0..4 {
        let conn = connect(&rogue, member.local_addr())
            .await
            .expect("handshake");
        let who = MemberId::new("rogue", address, MemberKind::Member);
        let control = say_hello_as(&conn, who.clone(), [0; 4]).await;
        created.push(who);
        open.push((conn, control));
    }
    wait_until("the four peers exist", PATIENCE, || {
        created.iter().all(|m| member.peer_stats(m).is_some())
    })
    .await;
    // A fifth is one too many.
    let conn = connect(&rogue, member.local_addr())
        .await
        .expect("handshake");
    let refused = within(
        "the answer to a fifth Hello",
        PATIENCE,
        try_establish(&conn, address),
    )
    .await;
    assert!(
        refused.is_err(),
        "a fifth peer outside the view was created, beyond max_peers_outside_view"
    );
    assert_eq!(close_code(&conn).await, Some(CloseCode::TooManyConnections));
    assert_eq!(member.limit_stats().peers_outside_view_refused, 1);

    // Silent for the timeout: freed, connections closed, room again.
    let started = Instant::now();
    wait_until(
        "the silent peers outside the view are freed",
        Duration::from_secs(5),
        || created.iter().all(|m| member.peer_stats(m).is_none()),
    )
    .await;
    let freed_after = started.elapsed();
    for (conn, _) in &open {
        assert_eq!(close_code(conn).await, Some(CloseCode::Reset));
    }
    let conn = connect(&rogue, member.local_addr())
        .await
        .expect("handshake");
    let _control = establish(&conn, address).await;
    eprintln!("silent peers freed {freed_after:?} after the refusal");
    member.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_outside_the_view_that_never_answers_is_given_up() {
    init_tracing();
    let ca = TestCa::new();
    let config = QuicConfig {
        outside_view_peer_timeout: Duration::from_millis(500),
        handshake_timeout: Duration::from_millis(300),
        ..QuicConfig::default()
    };
    let member = spawn_with(&ca.tls("member"), "member", config);
    install_view(1, &[&member]);
    let (_socket, address) = silent_address().await;
    let vanished = MemberId::new("vanished joiner", address, MemberKind::Member);
    let outcome = member
        .send_outside_view(&Probe(1), std::slice::from_ref(&vanished))
        .expect("send");
    assert!(outcome.is_complete(), "{outcome:?}");
    let mut events = member.events();
    wait_until(
        "the vanished peer is given up",
        Duration::from_secs(5),
        || member.peer_stats(&vanished).is_none(),
    )
    .await;
    // No more dials to it once it is forgotten. The window to look in is the member's own,
    // not a sleep: a second vanished peer, sent to only now, is dialed, its dial fails
    // after the handshake timeout (by then any dial to the first that was under way has
    // ended too), and it is forgotten in turn. The first must not be dialed after that
    // failure.
    let (_witness_socket, witness_address) = silent_address().await;
    let witness = MemberId::new("witness", witness_address, MemberKind::Member);
    send_until_taken(&member, Probe(2), std::slice::from_ref(&witness)).await;
    within("the witness's dial fails", PATIENCE, async {
        loop {
            match events.recv().await {
                Ok(TransportEvent::DialFailed { member, .. })
                    if member.uuid() == witness.uuid() =>
                {
                    break;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the member stopped"),
            }
        }
    })
    .await;
    wait_until("the witness is given up", Duration::from_secs(5), || {
        member.peer_stats(&witness).is_none()
    })
    .await;
    let mut dials = 0;
    while let Ok(event) = events.try_recv() {
        if matches!(event, TransportEvent::DialFailed { ref member, .. } if member.uuid() == vanished.uuid())
        {
            dials += 1;
        }
    }
    assert_eq!(dials, 0, "the forgotten peer is still dialed");
    member.shutdown().await;
}

/// Two members outside each other's views exchange protocol messages, one forgets the
/// other while silent (the other, with the default timeout, keeps its peer and its
/// sequence numbers), and they talk again: every message arrives once, none is taken for
/// a duplicate and no connection is closed for a sequence gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_peer_outside_the_view_picks_up_where_it_left_off() {
    init_tracing();
    let ca = TestCa::new();
    let config = QuicConfig {
        outside_view_peer_timeout: Duration::from_millis(300),
        ..QuicConfig::default()
    };
    let joiner = spawn_member(&ca, "joiner");
    let member = spawn_with(&ca.tls("member"), "member", config);
    install_view(1, &[&member]);
    let mut at_member = member.subscribe::<Probe>().expect("subscribe");
    let mut at_joiner = joiner.subscribe::<Probe>().expect("subscribe");
    let mut member_events = member.events();
    let mut joiner_events = joiner.events();
    let to_member = std::slice::from_ref(member.local_member());
    let to_joiner = std::slice::from_ref(joiner.local_member());
    for round in 0..2u64 {
        for i in 0..3 {
            send_until_taken(&joiner, Probe(round * 10 + i), to_member).await;
            send_until_taken(&member, Probe(round * 10 + i), to_joiner).await;
        }
        let got: Vec<u64> = receive(&mut at_member, 3, PATIENCE)
            .await
            .into_iter()
            .map(|e| e.message.0)
            .collect();
        assert_eq!(got, [round * 10, round * 10 + 1, round * 10 + 2]);
        let got: Vec<u64> = receive(&mut at_joiner, 3, PATIENCE)
            .await
            .into_iter()
            .map(|e| e.message.0)
            .collect();
        assert_eq!(got, [round * 10, round * 10 + 1, round * 10 + 2]);
        if round == 0 {
            wait_until(
                "the member forgot the joiner",
                Duration::from_secs(5),
                || member.peer_stats(joiner.local_member()).is_none(),
            )
            .await;
            assert!(joiner.peer_stats(member.local_member()).is_some());
        }
    }
    for events in [&mut member_events, &mut joiner_events] {
        while let Ok(event) = events.try_recv() {
            assert!(
                !matches!(event, TransportEvent::ProtocolViolation { .. }),
                "{event:?}"
            );
        }
    }
    let stats = member
        .peer_stats(joiner.local_member())
        .expect("known again");
    assert_eq!(
        stats.duplicates_dropped + stats.sequence_gaps,
        0,
        "{stats:?}"
    );
    joiner.shutdown().await;
    member.shutdown().await;
}

/// Sends until the messenger takes the message: while a peer is being forgotten (its
/// driver stopping, a few milliseconds) a send to it is reported as not in the view.
async fn send_until_taken(from: &Messenger, probe: Probe, to: &[MemberId]) {
    within("the send is taken", PATIENCE, async {
        while !from
            .send_outside_view(&probe, to)
            .expect("send")
            .is_complete()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_to_peers_outside_the_view_cannot_hold_back_a_final_check_or_a_view_member() {
    init_tracing();
    let ca = TestCa::new();
    let handshake_timeout = Duration::from_secs(3);
    let config = QuicConfig {
        handshake_timeout,
        ..QuicConfig::default()
    };
    let checker = spawn_with(&ca.tls("checker"), "checker", config);
    let suspect = spawn_member(&ca, "suspect");
    suspect.serve::<Alive>(|_, _| 7);
    install_view(1, &[&checker, &suspect]);
    let mut at_suspect = suspect.subscribe::<Probe>().expect("subscribe");

    // Twelve vanished joiners with messages pending: each dial waits out the timeout.
    let mut sockets = Vec::new();
    let mut vanished = Vec::new();
    for i in 0..12 {
        let (socket, address) = silent_address().await;
        sockets.push(socket);
        vanished.push(MemberId::new(
            format!("vanished {i}"),
            address,
            MemberKind::Member,
        ));
    }
    let _ = checker
        .send_outside_view(&Probe(0), &vanished)
        .expect("send");
    // Those dials take their permits first: wait until as many vanished joiners as there
    // are permits for dials outside the view have received a handshake's first packet.
    let permits = QuicConfig::default().max_dials_outside_view.get();
    let mut dialed = vec![false; sockets.len()];
    wait_until(
        "dials outside the view hold their permits",
        PATIENCE,
        || {
            let mut buf = [0u8; 1500];
            for (socket, dialed) in sockets.iter().zip(dialed.iter_mut()) {
                while socket.try_recv_from(&mut buf).is_ok() {
                    *dialed = true;
                }
            }
            dialed.iter().filter(|d| **d).count() >= permits
        },
    )
    .await;

    let started = Instant::now();
    let answer = checker
        .query_within(suspect.local_addr(), &Alive, Duration::from_secs(1))
        .await;
    let check_latency = started.elapsed();
    assert_eq!(answer.ok(), Some(7));
    assert!(
        check_latency < Duration::from_secs(1),
        "the final check waited {check_latency:?} behind dials outside the view"
    );
    let started = Instant::now();
    let _ = checker
        .send(
            &Probe(1),
            cohort_transport::Priority::Control,
            std::slice::from_ref(suspect.local_member()),
        )
        .expect("send");
    receive(&mut at_suspect, 1, PATIENCE).await;
    let send_latency = started.elapsed();
    assert!(
        send_latency < Duration::from_secs(1),
        "the view member's dial waited {send_latency:?} behind dials outside the view"
    );
    eprintln!("final check answered in {check_latency:?}, view member reached in {send_latency:?}");
    checker.shutdown().await;
    suspect.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_holder_cannot_take_over_a_joiners_connection() {
    init_tracing();
    let ca = TestCa::new();
    let member = spawn_member(&ca, "member");
    install_view(1, &[&member]);
    let joiner = raw_client(ca.certificate_pem(), Some(&ca.issue("joiner")));
    let joiner_id = MemberId::new(
        "joiner",
        joiner.local_addr().expect("addr"),
        MemberKind::Member,
    );
    let joined = connect(&joiner, member.local_addr())
        .await
        .expect("handshake");
    let (_control, mut control_recv) = say_hello_as(&joined, joiner_id.clone(), [0; 4]).await;
    read_hello_ack(&mut control_recv).await;

    // Another certificate holder says Hello with the joiner's uuid, from its own address
    // (so the address in its Hello matches where it comes from).
    let thief = raw_client(ca.certificate_pem(), Some(&ca.issue("thief")));
    let claimed = MemberId::new(
        "joiner",
        thief.local_addr().expect("addr"),
        MemberKind::Member,
    )
    .with_uuid(joiner_id.uuid());
    let stolen = connect(&thief, member.local_addr())
        .await
        .expect("handshake");
    let (_thief_control, mut thief_recv) = say_hello_as(&stolen, claimed, [0; 4]).await;
    let answered = within("the answer to the thief", PATIENCE, async {
        let mut decoder = FrameDecoder::new(1 << 20);
        loop {
            if let Ok(Some(frame)) = decoder.next_frame() {
                return Some(frame);
            }
            match thief_recv.read_chunk(4096, true).await {
                Ok(Some(chunk)) => decoder.push(&chunk.bytes),
                _ => return None,
            }
        }
    })
    .await;
    assert!(
        !matches!(answered, Some(Frame::HelloAck(_))),
        "the thief's Hello was answered: it took over the joiner's connection"
    );
    assert_eq!(close_code(&stolen).await, Some(CloseCode::IdentityRejected));
    assert!(
        joined.close_reason().is_none(),
        "the joiner's connection was closed: {:?}",
        joined.close_reason()
    );
    member.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_one_way_connection_loss_the_smaller_member_takes_the_new_dial_at_once() {
    init_tracing();
    let ca = TestCa::new();
    // No keep-alive from the smaller member while the test runs: its dead connection
    // keeps looking up, as it does between keep-alives.
    let config = QuicConfig {
        keep_alive_interval: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(20),
        ..QuicConfig::default()
    };
    let smaller = spawn_with(&ca.tls("smaller"), "smaller", config);
    // The larger member is played by hand, with the largest uuid there is.
    let larger_endpoint = raw_member_endpoint(&ca.tls("larger"));
    let larger = MemberId::new(
        "larger",
        larger_endpoint.local_addr().expect("addr"),
        MemberKind::Member,
    )
    .with_uuid(Uuid::max());
    let view = cohort_transport::View::new(
        cohort_transport::ViewId(1),
        [smaller.local_member().clone(), larger.clone()],
    );
    smaller.install_view(view);

    // The smaller member dials; the larger answers.
    let _ = smaller
        .send(
            &Probe(0),
            cohort_transport::Priority::Control,
            std::slice::from_ref(&larger),
        )
        .expect("send");
    let incoming = within(
        "the smaller member's dial",
        PATIENCE,
        larger_endpoint.accept(),
    )
    .await
    .expect("endpoint open");
    let first = incoming.await.expect("handshake");
    let _first_streams = answer_hello(&first, &larger).await;
    wait_until("the smaller member is connected", PATIENCE, || {
        smaller.peer_stats(&larger).is_some_and(|s| s.connected)
    })
    .await;

    // The larger member loses the connection; its close never reaches the smaller one.
    smaller.faults().block_from(larger.address());
    let dropped_before = smaller.faults().dropped();
    first.close(CloseCode::Reset.varint(), b"lost");
    wait_until("the close is lost on its way", PATIENCE, || {
        smaller.faults().dropped() > dropped_before
    })
    .await;
    smaller.faults().heal();

    // It dials again, as it must to send anything: answered at once, not refused with
    // DUPLICATE_CONNECTION until the smaller member's idle timeout.
    let started = Instant::now();
    let mut refusals = 0;
    let answered = within("a redial answered", PATIENCE, async {
        loop {
            let conn = connect(&larger_endpoint, smaller.local_addr())
                .await
                .expect("handshake");
            let (control, mut recv) = say_hello_as(&conn, larger.clone(), [0; 4]).await;
            if read_hello_ack_or_close(&mut recv).await {
                return (conn, control, recv);
            }
            refusals += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let waited = started.elapsed();
    assert_eq!(
        refusals, 0,
        "the redial was refused {refusals} times (DUPLICATE_CONNECTION) over {waited:?}"
    );
    drop(answered);
    eprintln!("redial answered after {waited:?}");
    smaller.shutdown().await;
}

async fn read_hello_ack(recv: &mut quinn::RecvStream) {
    assert!(
        within("HelloAck", PATIENCE, read_hello_ack_or_close(recv)).await,
        "no HelloAck"
    );
}

/// True once a HelloAck arrives; false if the stream or connection ends first.
async fn read_hello_ack_or_close(recv: &mut quinn::RecvStream) -> bool {
    let mut decoder = FrameDecoder::new(1 << 20);
    loop {
        match decoder.next_frame() {
            Ok(Some(Frame::HelloAck(_))) => return true,
            Ok(Some(_)) | Err(_) => return false,
            Ok(None) => {}
        }
        match recv.read_chunk(4096, true).await {
            Ok(Some(chunk)) => decoder.push(&chunk.bytes),
            _ => return false,
        }
    }
}
