//! Limits on what a peer may send or hold, each exceeded on purpose: the offender alone is
//! refused or cut off, with a named code, the refusal is counted, and members in good
//! standing carry on.
//!
//! - a frame over its priority's limit (`max_frame_bytes_by_priority`): refused at the
//!   sender as `SendError::TooLarge`; from a peer that sends it anyway, `FRAME_TOO_LARGE`;
//! - handshakes in progress from one address (`max_handshakes_per_address`): QUIC's
//!   `CONNECTION_REFUSED` before any TLS work;
//! - connections open from one address (`max_connections_per_address`):
//!   `TOO_MANY_CONNECTIONS`.

use bytes::BytesMut;
use cohort_tests::rogue::{close_code, establish, try_establish};
use cohort_tests::{
    Numbered, PATIENCE, TestCa, init_tracing, install_view, raw_client, receive, spawn_member,
    spawn_with, wait_until, within,
};
use cohort_transport::wire::{self, CloseCode};
use cohort_transport::{Message, Priority, QuicConfig, SendError, Tag};

fn message(index: u64, body: usize) -> Numbered {
    Numbered {
        sender: "x".into(),
        stream: "high".into(),
        index,
        body: bytes::Bytes::from(vec![7u8; body]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_its_prioritys_limit_is_refused_at_the_sender_and_cuts_off_a_peer_that_sends_it()
 {
    init_tracing();
    let ca = TestCa::new();
    let mut limits = [64 << 10; 4];
    limits[Priority::Bulk.index()] = 1 << 20;
    let config = QuicConfig {
        max_frame_bytes: 1 << 20,
        max_queued_bytes_per_destination: 4 << 20,
        max_frame_bytes_by_priority: limits,
        ..QuicConfig::default()
    };
    let a = spawn_with(&ca.tls("a"), "a", config.clone());
    let b = spawn_with(&ca.tls("b"), "b", config);
    install_view(1, &[&a, &b]);
    let mut sub_b = b.subscribe::<Numbered>().expect("subscribe");
    let to_b = std::slice::from_ref(b.local_member());

    // 100 KB: over High's 64 KiB, under Bulk's 1 MiB.
    let big = message(0, 100_000);
    match a.send(&big, Priority::High, to_b) {
        Err(SendError::TooLarge { max, .. }) => assert_eq!(max, 64 << 10),
        other => panic!("a 100 KB High message was not refused: {other:?}"),
    }
    let _ = a
        .send(&big, Priority::Bulk, to_b)
        .expect("the same on Bulk");
    let got = receive(&mut sub_b, 1, PATIENCE).await;
    assert_eq!(got[0].message.body.len(), 100_000);

    // A peer that ignores the limit: its High frame announces 100 KB.
    let mut events = b.events();
    let client = raw_client(ca.certificate_pem(), Some(&ca.issue("rogue")));
    let conn = client
        .connect(b.local_addr(), "127.0.0.1")
        .expect("connect")
        .await
        .expect("handshake");
    let _control = establish(&conn, client.local_addr().expect("addr")).await;
    let mut frame = BytesMut::from(&wire::stream_header(Priority::High)[..]);
    wire::put_data_header(&mut frame, 1, Tag(0x2_0000), 100_000);
    frame.extend_from_slice(&[0; 100_000]);
    let mut stream = conn.open_uni().await.expect("data stream");
    let _ = stream.write_all(&frame).await;
    assert_eq!(close_code(&conn).await, Some(CloseCode::FrameTooLarge));
    let reason = within("the violation event", PATIENCE, async {
        loop {
            if let Ok(cohort_transport::TransportEvent::ProtocolViolation { reason, .. }) =
                events.recv().await
            {
                return reason;
            }
        }
    })
    .await;
    assert!(reason.contains("FRAME_TOO_LARGE"), "{reason}");
    assert_eq!(b.limit_stats().frames_too_large, 1);

    // a and b carry on over their own connection.
    for i in 1..=20 {
        let _ = a
            .send(&message(i, 1000), Priority::High, to_b)
            .expect("send");
    }
    let got = receive(&mut sub_b, 20, PATIENCE).await;
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, e)| e.message.index == i as u64 + 1)
    );
    assert_eq!(
        b.peer_stats(a.local_member())
            .expect("b knows a")
            .connections,
        1
    );
    client.close(0u32.into(), b"done");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_may_have_only_so_many_handshakes_in_progress() {
    init_tracing();
    let ca = TestCa::new();
    let member = spawn_member(&ca, "member");
    let limit = QuicConfig::default().max_handshakes_per_address.get();
    let identity = ca.issue("rogue");
    // One socket: each connection completes TLS but never says Hello, so the member holds
    // its handshake open until the handshake timeout.
    let rogue = raw_client(ca.certificate_pem(), Some(&identity));
    let mut stalled = Vec::new();
    for _ in 0..limit {
        let conn = rogue
            .connect(member.local_addr(), "127.0.0.1")
            .expect("connect")
            .await
            .expect("TLS completes within the limit");
        stalled.push(conn);
    }
    let refused = within(
        "the handshake over the limit",
        PATIENCE,
        rogue
            .connect(member.local_addr(), "127.0.0.1")
            .expect("connect"),
    )
    .await;
    match refused {
        Err(quinn::ConnectionError::ConnectionClosed(close)) => {
            assert_eq!(
                close.error_code,
                quinn::TransportErrorCode::CONNECTION_REFUSED
            );
        }
        Err(other) => panic!("refused with {other}, not CONNECTION_REFUSED"),
        Ok(_) => panic!("a handshake over the limit was accepted"),
    }
    assert_eq!(member.limit_stats().handshakes_refused, 1);

    // Another address is not affected.
    let other = raw_client(ca.certificate_pem(), Some(&identity));
    let conn = other
        .connect(member.local_addr(), "127.0.0.1")
        .expect("connect")
        .await
        .expect("another address gets its handshake");
    let _control = establish(&conn, other.local_addr().expect("addr")).await;
    rogue.close(0u32.into(), b"giving up");
    drop(stalled);
    let again = raw_client(ca.certificate_pem(), Some(&identity));
    let conn = again
        .connect(member.local_addr(), "127.0.0.1")
        .expect("connect")
        .await
        .expect("a fresh socket is a fresh address");
    let _control = establish(&conn, again.local_addr().expect("addr")).await;
    member.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_may_keep_only_so_many_connections_open() {
    init_tracing();
    let ca = TestCa::new();
    let member = spawn_member(&ca, "member");
    let friend = spawn_member(&ca, "friend");
    install_view(1, &[&member, &friend]);
    let mut sub = member.subscribe::<Numbered>().expect("subscribe");
    let limit = QuicConfig::default().max_connections_per_address.get();
    let rogue = raw_client(ca.certificate_pem(), Some(&ca.issue("rogue")));
    let address = rogue.local_addr().expect("addr");
    // Each connection says Hello as a different (made-up) member from the same address.
    let mut open = Vec::new();
    for _ in 0..limit {
        let conn = rogue
            .connect(member.local_addr(), "127.0.0.1")
            .expect("connect")
            .await
            .expect("handshake");
        let control = establish(&conn, address).await;
        open.push((conn, control));
    }
    let conn = rogue
        .connect(member.local_addr(), "127.0.0.1")
        .expect("connect")
        .await
        .expect("TLS completes");
    assert!(
        !admitted(&conn, address).await,
        "a Hello over the limit is not answered"
    );
    assert_eq!(close_code(&conn).await, Some(CloseCode::TooManyConnections));
    assert_eq!(member.limit_stats().connections_refused, 1);
    for (conn, _) in &open {
        assert!(
            conn.close_reason().is_none(),
            "the ones within the limit stay open"
        );
    }

    // Members in good standing are not affected.
    for i in 0..10 {
        let _ = friend
            .send(
                &message(i, 100),
                Priority::Normal,
                std::slice::from_ref(member.local_member()),
            )
            .expect("send");
    }
    receive(&mut sub, 10, PATIENCE).await;

    // Closing one frees its slot: once the member has seen the close, the next Hello
    // from the address is answered.
    let (first, _) = open.remove(0);
    first.close(0u32.into(), b"done");
    within("a connection admitted after one closed", PATIENCE, async {
        loop {
            let conn = rogue
                .connect(member.local_addr(), "127.0.0.1")
                .expect("connect")
                .await
                .expect("handshake");
            if admitted(&conn, address).await {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    member.shutdown().await;
    friend.shutdown().await;
}

/// Says Hello on `conn` and tells whether the member answered it (true) or closed the
/// connection instead (false).
async fn admitted(conn: &quinn::Connection, address: std::net::SocketAddr) -> bool {
    within(
        "an answer to the Hello",
        PATIENCE,
        try_establish(conn, address),
    )
    .await
    .is_ok()
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Ping;

impl Message for Ping {
    const TAG: Tag = Tag(0xfe11);
}

impl cohort_transport::Query for Ping {
    type Answer = u32;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_from_one_address_are_rate_limited_and_others_still_answered() {
    init_tracing();
    let ca = TestCa::new();
    let member = spawn_member(&ca, "member");
    member.serve::<Ping>(|_, _| 7);
    let eager = spawn_member(&ca, "eager");
    let per_second = QuicConfig::default()
        .max_queries_per_second_per_address
        .get();
    let started = std::time::Instant::now();
    let (mut answered, mut refused) = (0u64, 0u64);
    for _ in 0..(per_second * 4) {
        match eager.query(member.local_addr(), &Ping).await {
            Ok(7) => answered += 1,
            Err(cohort_transport::QueryError::RateLimited(at)) => {
                assert_eq!(at, member.local_addr());
                refused += 1;
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The burst (twice the rate) plus what the bucket refilled meanwhile.
    let allowed = f64::from(per_second) * (2.0 + elapsed) + 1.0;
    assert!(
        (answered as f64) <= allowed,
        "{answered} answered in {elapsed:.2} s, at most {allowed:.0} allowed"
    );
    assert!(refused >= 1, "{answered} answered, none refused");
    assert_eq!(member.limit_stats().queries_rate_limited, refused);
    eprintln!("{answered} answered and {refused} refused in {elapsed:.2} s");

    // Another address is answered meanwhile.
    let patient = spawn_member(&ca, "patient");
    assert_eq!(
        patient.query(member.local_addr(), &Ping).await.ok(),
        Some(7)
    );
    for m in [member, eager, patient] {
        m.shutdown().await;
    }
}

/// A raw client with a certificate issued to `name`, and its QUIC connection to `to`.
async fn raw_connection(
    ca: &TestCa,
    name: &str,
    to: std::net::SocketAddr,
) -> (quinn::Endpoint, quinn::Connection) {
    let client = raw_client(ca.certificate_pem(), Some(&ca.issue(name)));
    let conn = client
        .connect(to, "127.0.0.1")
        .expect("connect")
        .await
        .expect("handshake");
    (client, conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_open_more_streams_than_the_protocol_uses() {
    init_tracing();
    let ca = TestCa::new();
    let member = spawn_member(&ca, "member");
    let (rogue, conn) = raw_connection(&ca, "rogue", member.local_addr()).await;
    let _control = establish(&conn, rogue.local_addr().expect("addr")).await;
    // One stream per data priority and the acknowledgement stream: four, held open.
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut stream = conn.open_uni().await.expect("within the limit");
        stream
            .write_all(&wire::stream_header(Priority::High))
            .await
            .expect("write");
        open.push(stream);
    }
    // A fifth waits for credit the member never grants while the four stay open.
    let fifth = tokio::time::timeout(std::time::Duration::from_secs(1), conn.open_uni()).await;
    assert!(fifth.is_err(), "a fifth unidirectional stream was opened");
    // The control stream is the one bidirectional stream in use, plus one spare.
    let _spare = conn.open_bi().await.expect("the spare");
    let third = tokio::time::timeout(std::time::Duration::from_secs(1), conn.open_bi()).await;
    assert!(third.is_err(), "a third bidirectional stream was opened");
    drop(open);
    member.shutdown().await;
}

/// A membership-range message (below `Tag::FIRST_APPLICATION`), as a joiner would send
/// on Control.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Knock(u64);

impl Message for Knock {
    const TAG: Tag = Tag(0xfe21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_frame_over_the_handshake_limit_is_refused_at_once() {
    init_tracing();
    let ca = TestCa::new();
    let member = spawn_member(&ca, "member");
    let (_stranger, conn) = raw_connection(&ca, "stranger", member.local_addr()).await;
    // A first frame announcing 1 MiB (within max_frame_bytes, far over what a Hello or a
    // query needs), then nothing: refused on its length, not held until the Hello timeout.
    let (mut send, _recv) = conn.open_bi().await.expect("stream");
    let mut header = (1u32 << 20).to_le_bytes().to_vec();
    header.extend_from_slice(&[1, 1]);
    send.write_all(&header).await.expect("write");
    let started = std::time::Instant::now();
    assert_eq!(close_code(&conn).await, Some(CloseCode::FrameTooLarge));
    assert!(
        started.elapsed() < QuicConfig::default().handshake_timeout,
        "refused only after {:?}",
        started.elapsed()
    );
    assert_eq!(member.limit_stats().frames_too_large, 1);

    // The asking side refuses to send a query no member would take.
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    struct Big(Vec<u8>);
    impl Message for Big {
        const TAG: Tag = Tag(0xfe22);
    }
    impl cohort_transport::Query for Big {
        type Answer = u8;
    }
    let asker = spawn_member(&ca, "asker");
    let answer = asker
        .query_within(
            member.local_addr(),
            &Big(vec![0; wire::HANDSHAKE_FRAME_LIMIT]),
            PATIENCE,
        )
        .await;
    assert!(
        matches!(answer, Err(cohort_transport::QueryError::TooLarge { max, .. }) if max == wire::HANDSHAKE_FRAME_LIMIT),
        "{answer:?}"
    );
    asker.shutdown().await;
    member.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_outside_the_view_may_speak_only_on_control() {
    init_tracing();
    let ca = TestCa::new();
    let member = spawn_member(&ca, "member");
    install_view(1, &[&member]);
    let mut knocks = member.subscribe::<Knock>().expect("subscribe");
    let (stranger, conn) = raw_connection(&ca, "stranger", member.local_addr()).await;
    let (mut control, _recv) = establish(&conn, stranger.local_addr().expect("addr")).await;

    // A protocol message on Normal: not Control, so dropped (and counted), not delivered.
    let payload = postcard::to_allocvec(&Knock(1)).expect("encode");
    let mut normal = BytesMut::from(&wire::stream_header(Priority::Normal)[..]);
    wire::put_data_header(&mut normal, 1, Knock::TAG, payload.len());
    normal.extend_from_slice(&payload);
    let mut stream = conn.open_uni().await.expect("data stream");
    stream.write_all(&normal).await.expect("write");
    // The same on Control is delivered: it comes after, so the Normal one was dropped.
    let mut on_control = BytesMut::new();
    let payload = postcard::to_allocvec(&Knock(2)).expect("encode");
    wire::put_data_header(&mut on_control, 1, Knock::TAG, payload.len());
    on_control.extend_from_slice(&payload);
    control.write_all(&on_control).await.expect("write");
    let got = receive(&mut knocks, 1, PATIENCE).await;
    assert_eq!(got[0].message, Knock(2));
    wait_until("the Normal frame is counted as dropped", PATIENCE, || {
        member.limit_stats().from_non_members == 1
    })
    .await;
    assert!(
        knocks.try_recv().is_none(),
        "the Normal frame was delivered"
    );

    // A Normal frame over Control's limit (under Normal's own): cut off on its length,
    // before any of it is held.
    let control_limit = QuicConfig::default().frame_limit(Priority::Control);
    let mut big = BytesMut::new();
    wire::put_data_header(&mut big, 2, Tag(0x2_0000), control_limit + 1);
    stream.write_all(&big).await.expect("write");
    assert_eq!(close_code(&conn).await, Some(CloseCode::FrameTooLarge));
    member.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_receivers_limit_is_refused_by_its_sender() {
    init_tracing();
    let ca = TestCa::new();
    // b takes at most 64 KiB on High; a, with the defaults, would send 128 MiB.
    let mut limits = QuicConfig::default().max_frame_bytes_by_priority;
    limits[Priority::High.index()] = 64 << 10;
    let small_high = QuicConfig {
        max_frame_bytes_by_priority: limits,
        ..QuicConfig::default()
    };
    let a = spawn_member(&ca, "a");
    let b = spawn_with(&ca.tls("b"), "b", small_high);
    install_view(1, &[&a, &b]);
    let mut sub_b = b.subscribe::<Numbered>().expect("subscribe");
    let mut events = a.events();
    let to_b = std::slice::from_ref(b.local_member());

    // Queued before b has said what it takes (no connection yet): not sent when it has,
    // reported, and the message behind it goes on.
    let outcome = a
        .send(&message(0, 100_000), Priority::High, to_b)
        .expect("send");
    assert!(outcome.is_complete(), "{outcome:?}");
    let _ = a
        .send(&message(1, 1000), Priority::High, to_b)
        .expect("send");
    let got = receive(&mut sub_b, 1, PATIENCE).await;
    assert_eq!(got[0].message.index, 1);
    let (tag, max) = within("the report of the message not sent", PATIENCE, async {
        loop {
            if let Ok(cohort_transport::TransportEvent::TooLargeForPeer {
                member, tag, max, ..
            }) = events.recv().await
            {
                assert_eq!(member.uuid(), b.local_member().uuid());
                return (tag, max);
            }
        }
    })
    .await;
    assert_eq!((tag, max), (Numbered::TAG, 64 << 10));

    // Once b has said so, the same send is refused for b at once.
    let outcome = a
        .send(&message(2, 100_000), Priority::High, to_b)
        .expect("send");
    assert_eq!(outcome.too_large, vec![b.local_member().clone()]);
    let _ = a
        .send(&message(3, 1000), Priority::High, to_b)
        .expect("send");
    let got = receive(&mut sub_b, 1, PATIENCE).await;
    assert_eq!(got[0].message.index, 3);
    assert_eq!(b.limit_stats().frames_too_large, 0, "b never had to refuse");
    assert_eq!(
        a.peer_stats(b.local_member())
            .expect("a knows b")
            .connections,
        1,
        "one connection throughout"
    );
    a.shutdown().await;
    b.shutdown().await;
}
