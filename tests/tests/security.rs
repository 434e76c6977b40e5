//! Peers that break the rules: certificates from another CA, no certificate, garbage on a
//! data stream. Each is refused or cut off alone, with the reason named, and nothing it
//! sends reaches a subscriber.

use bytes::BytesMut;
use cohort_tests::rogue::{close_code, establish, say_hello};
use cohort_tests::{
    Numbered, PATIENCE, TestCa, init_tracing, install_view, raw_client, receive, spawn_member,
    within,
};
use cohort_transport::wire::{self, CloseCode, Hello};
use cohort_transport::{MemberId, MemberKind, Messenger, Priority, TransportEvent};
use tokio::sync::broadcast;

fn message(index: u64) -> Numbered {
    Numbered {
        sender: "x".into(),
        stream: "normal".into(),
        index,
        body: bytes::Bytes::from_static(b"payload"),
    }
}

/// Waits for the first event that `pick` accepts and returns what it extracted.
async fn next_event<T>(
    events: &mut broadcast::Receiver<TransportEvent>,
    what: &str,
    mut pick: impl FnMut(TransportEvent) -> Option<T>,
) -> T {
    within(what, PATIENCE, async {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(found) = pick(event) {
                        return found;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    panic!("events closed while waiting for {what}")
                }
            }
        }
    })
    .await
}

fn assert_nothing_delivered(
    member: &Messenger,
    sub: &mut cohort_transport::Subscription<Numbered>,
) {
    assert!(
        sub.try_recv().is_none(),
        "nothing from the refused peer reached the subscriber"
    );
    assert_eq!(
        member.dispatch_stats().unknown_tags,
        0,
        "nothing reached the dispatcher at all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_another_ca_cannot_connect_in_either_direction() {
    init_tracing();
    let (ca, other_ca) = (TestCa::new(), TestCa::new());
    let a = spawn_member(&ca, "a");
    let x = spawn_member(&other_ca, "x");
    install_view(1, &[&a, &x]);
    let mut sub_a = a.subscribe::<Numbered>().expect("subscribe");
    let mut events_a = a.events();
    let mut events_x = x.events();

    let _ = a
        .send(&message(0), Priority::Normal, &[x.local_member().clone()])
        .expect("send");
    let a_reason = next_event(&mut events_a, "a's dial to x fails", |e| match e {
        TransportEvent::DialFailed { reason, .. } => Some(reason),
        _ => None,
    })
    .await;
    assert!(a_reason.contains("invalid peer certificate"), "{a_reason}");

    let _ = x
        .send(&message(1), Priority::Normal, &[a.local_member().clone()])
        .expect("send");
    let x_reason = next_event(&mut events_x, "x's dial to a fails", |e| match e {
        TransportEvent::DialFailed { reason, .. } => Some(reason),
        _ => None,
    })
    .await;
    assert!(x_reason.contains("invalid peer certificate"), "{x_reason}");
    assert!(
        !a.peer_stats(x.local_member())
            .expect("a tracks x")
            .connected
    );
    assert_nothing_delivered(&a, &mut sub_a);
    a.shutdown().await;
    x.shutdown().await;
}

/// A peer that trusts the cluster CA (so it accepts the member's certificate) but presents
/// a certificate from elsewhere, or none: the member refuses it and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_a_foreign_or_missing_certificate_is_refused_and_named() {
    init_tracing();
    let (ca, other_ca) = (TestCa::new(), TestCa::new());
    let a = spawn_member(&ca, "a");
    install_view(1, &[&a]);
    let mut sub_a = a.subscribe::<Numbered>().expect("subscribe");
    let foreign = other_ca.issue("rogue");
    let cases = [
        // Both test CAs share a subject name, so rustls finds an "issuer" and then reports
        // the signature; with differently named CAs it reports UnknownIssuer.
        (
            "foreign certificate",
            Some(&foreign),
            "invalid peer certificate",
        ),
        ("no certificate", None, "no certificates"),
    ];
    for (case, identity, expected) in cases {
        let mut events = a.events();
        let client = raw_client(ca.certificate_pem(), identity);
        let attempt = async {
            let conn = client
                .connect(a.local_addr(), "127.0.0.1")
                .ok()?
                .await
                .ok()?;
            // TLS 1.3 lets the client believe it is connected before the server judged its
            // certificate: try to say Hello and send a message anyway.
            let (mut send, _recv) = conn.open_bi().await.ok()?;
            let hello = wire::encode_hello(&Hello {
                member: MemberId::new("rogue", client.local_addr().ok()?, MemberKind::Member),
                delivered: [0; 4],
                limits: None,
            })
            .ok()?;
            send.write_all(&hello).await.ok()?;
            Some(conn.closed().await)
        };
        let _ = tokio::time::timeout(PATIENCE, attempt).await;
        let reason = next_event(&mut events, case, |e| match e {
            TransportEvent::IncomingRejected { reason, .. } => Some(reason),
            _ => None,
        })
        .await;
        assert!(
            reason.contains(expected),
            "{case}: the refusal names the problem: {reason}"
        );
        client.close(0u32.into(), b"done");
    }
    assert_nothing_delivered(&a, &mut sub_a);
    assert!(a.view().len() == 1 && a.quic().expect("a QUIC carrier").open_connections() <= 2);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_data_stream_closes_only_that_connection() {
    init_tracing();
    let ca = TestCa::new();
    let a = spawn_member(&ca, "a");
    let b = spawn_member(&ca, "b");
    install_view(1, &[&a, &b]);
    let mut sub_a = a.subscribe::<Numbered>().expect("subscribe");
    let mut sub_b = b.subscribe::<Numbered>().expect("subscribe");
    let (ida, idb) = (a.local_member().clone(), b.local_member().clone());
    // b and a are talking before and after the incidents.
    let _ = a
        .send(&message(0), Priority::Normal, std::slice::from_ref(&idb))
        .expect("send");
    receive(&mut sub_b, 1, PATIENCE).await;

    let mut oversized = BytesMut::from(&wire::stream_header(Priority::Normal)[..]);
    oversized.extend_from_slice(&[0xff, 0xff, 0xff, 0x7f, 1, 3]);
    let mut truncated_varint = BytesMut::from(&wire::stream_header(Priority::High)[..]);
    truncated_varint.extend_from_slice(&[3, 0, 0, 0, 1, 3, 0x80]);
    let garbage: [(&str, &[u8], CloseCode); 4] = [
        (
            "a frame longer than the limit",
            &oversized,
            CloseCode::FrameTooLarge,
        ),
        (
            "a truncated sequence number",
            &truncated_varint,
            CloseCode::MalformedFrame,
        ),
        (
            "an unknown stream header",
            &[9, 9, 9, 9],
            CloseCode::MalformedFrame,
        ),
        (
            "random bytes",
            &[0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03],
            CloseCode::MalformedFrame,
        ),
    ];
    let rogue_identity = ca.issue("rogue");
    for (case, bytes, code) in garbage {
        let mut events = a.events();
        let client = raw_client(ca.certificate_pem(), Some(&rogue_identity));
        let conn = client
            .connect(a.local_addr(), "127.0.0.1")
            .expect("connect")
            .await
            .expect("handshake with a valid certificate");
        let _control = establish(&conn, client.local_addr().expect("addr")).await;

        let mut stream = conn.open_uni().await.expect("data stream");
        stream.write_all(bytes).await.expect("write garbage");
        assert_eq!(close_code(&conn).await, Some(code), "{case}");
        let reason = next_event(&mut events, case, |e| match e {
            TransportEvent::ProtocolViolation { reason, .. } => Some(reason),
            _ => None,
        })
        .await;
        assert!(reason.contains(code.name()), "{case}: {reason}");
        client.close(0u32.into(), b"done");

        // Nobody else noticed: a and b keep exchanging messages on the same connection.
        let base = 100 * (1 + reason.len() as u64);
        for i in 0..50 {
            let _ = a
                .send(
                    &message(base + i),
                    Priority::Normal,
                    std::slice::from_ref(&idb),
                )
                .expect("send");
            let _ = b
                .send(
                    &message(base + i),
                    Priority::High,
                    std::slice::from_ref(&ida),
                )
                .expect("send");
        }
        let to_b = receive(&mut sub_b, 50, PATIENCE).await;
        let to_a = receive(&mut sub_a, 50, PATIENCE).await;
        assert!(
            to_b.iter()
                .chain(&to_a)
                .enumerate()
                .all(|(i, e)| e.message.index == base + (i as u64 % 50))
        );
    }
    let stats = a.peer_stats(&idb).expect("a knows b");
    assert_eq!(
        stats.connections, 1,
        "the a-b connection survived every incident"
    );
    assert!(
        sub_a.try_recv().is_none(),
        "no rogue frame reached a subscriber"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// With endpoint identification on, a certificate must name the address the member claims:
/// the dialer checks the acceptor's certificate (rustls, by IP), and the acceptor checks the
/// dialer's certificate against the address in its Hello.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_identification_on_certificates_must_name_the_claimed_address() {
    init_tracing();
    let ca = TestCa::new();
    let identified = |issued: cohort_certs::IssuedCertificate| {
        let mut settings = cohort_transport::TlsSettings::from_pem(
            ca.certificate_pem(),
            issued.certificate_pem,
            issued.private_key_pem,
        );
        settings.endpoint_identification = true;
        settings.load().expect("load")
    };
    let a = cohort_tests::spawn_with(&identified(ca.issue("a")), "a", Default::default());
    // b lives on 127.0.0.1 but its certificate names only ::1.
    let b_cert = ca.issue_for("b", &["::1".parse().expect("literal")]);
    let b = cohort_tests::spawn_with(&identified(b_cert), "b", Default::default());
    install_view(1, &[&a, &b]);
    let mut events_a = a.events();
    let _ = a
        .send(&message(0), Priority::Normal, &[b.local_member().clone()])
        .expect("send");
    let reason = next_event(&mut events_a, "a's dial to b fails", |e| match e {
        TransportEvent::DialFailed { reason, .. } => Some(reason),
        _ => None,
    })
    .await;
    assert!(
        reason.contains("not valid for name"),
        "the dialer names the mismatch: {reason}"
    );

    // A client whose certificate names 127.0.0.1 and ::1 claims to be at 127.0.0.2.
    let mut events_a = a.events();
    let rogue = raw_client(ca.certificate_pem(), Some(&ca.issue("rogue")));
    let conn = rogue
        .connect(a.local_addr(), "127.0.0.1")
        .expect("connect")
        .await
        .expect("TLS");
    let _control = say_hello(
        &conn,
        std::net::SocketAddr::from(([127, 0, 0, 2], 7000)),
        [0; 4],
    )
    .await;
    assert_eq!(close_code(&conn).await, Some(CloseCode::IdentityRejected));
    let reason = next_event(&mut events_a, "a refuses the rogue", |e| match e {
        TransportEvent::IncomingRejected { reason, .. } => Some(reason),
        _ => None,
    })
    .await;
    assert!(
        reason.contains("does not name the address"),
        "the acceptor names the mismatch: {reason}"
    );
    rogue.close(0u32.into(), b"done");
    a.shutdown().await;
    b.shutdown().await;
}

/// A peer whose Hello claims to have delivered messages this member never sent would make
/// it forget unacknowledged messages: the connection is closed instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_claiming_undelivered_messages_is_a_protocol_violation() {
    init_tracing();
    let ca = TestCa::new();
    let a = spawn_member(&ca, "a");
    install_view(1, &[&a]);
    let mut events = a.events();
    let rogue = raw_client(ca.certificate_pem(), Some(&ca.issue("rogue")));
    let conn = rogue
        .connect(a.local_addr(), "127.0.0.1")
        .expect("connect")
        .await
        .expect("TLS");
    let _control = say_hello(&conn, rogue.local_addr().expect("addr"), [0, 0, 5, 0]).await;
    assert_eq!(close_code(&conn).await, Some(CloseCode::ProtocolViolation));
    let reason = next_event(&mut events, "the violation is reported", |e| match e {
        TransportEvent::ProtocolViolation { reason, .. } => Some(reason),
        _ => None,
    })
    .await;
    assert!(reason.contains("beyond what was sent"), "{reason}");
    rogue.close(0u32.into(), b"done");
    a.shutdown().await;
}
