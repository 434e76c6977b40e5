//! Who may speak, and for whom: a member cannot speak for another (a Hello in another
//! member's name is refused, whichever address it claims), a process outside the view can
//! send nothing but cohort's own protocols (discovery and join), and a member removed from
//! the view is not heard any more. Each rule holds for the offender alone.

use std::time::Duration;

use bytes::BytesMut;
use cohort_tests::rogue::{close_code, establish, say_hello_as};
use cohort_tests::{
    Numbered, PATIENCE, TestCa, init_tracing, install_view, raw_client, receive, spawn_member,
    wait_until,
};
use cohort_transport::wire::{self, CloseCode};
use cohort_transport::{MemberId, Message, Messenger, Priority};

fn message(index: u64) -> Numbered {
    Numbered {
        sender: "x".into(),
        stream: "normal".into(),
        index,
        body: bytes::Bytes::from_static(b"payload"),
    }
}

fn to(member: &Messenger) -> Vec<MemberId> {
    vec![member.local_member().clone()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_in_another_members_name_is_refused_whatever_address_it_claims() {
    init_tracing();
    let ca = TestCa::new();
    let a = spawn_member(&ca, "a");
    let b = spawn_member(&ca, "b");
    install_view(1, &[&a, &b]);
    let mut sub_a = a.subscribe::<Numbered>().expect("subscribe");
    let _ = b
        .send(&message(0), Priority::Normal, &to(&a))
        .expect("send");
    receive(&mut sub_a, 1, PATIENCE).await;

    let rogue = raw_client(ca.certificate_pem(), Some(&ca.issue("rogue")));
    let own_address = rogue.local_addr().expect("addr");
    let real_b = b.local_member().clone();
    // b's exact id (its uuid and its address), and b's uuid at the rogue's own address.
    let impostors = [
        ("b's id and address", real_b.clone()),
        (
            "b's uuid at another address",
            MemberId::new("b", own_address, real_b.kind()).with_uuid(real_b.uuid()),
        ),
    ];
    for (case, claimed) in impostors {
        let conn = rogue
            .connect(a.local_addr(), "127.0.0.1")
            .expect("connect")
            .await
            .expect("TLS with a valid certificate");
        let _control = say_hello_as(&conn, claimed, [0; 4]).await;
        assert_eq!(
            close_code(&conn).await,
            Some(CloseCode::IdentityRejected),
            "{case}"
        );
    }
    // b is still b, on its one connection.
    let _ = b
        .send(&message(1), Priority::Normal, &to(&a))
        .expect("send");
    let got = receive(&mut sub_a, 1, PATIENCE).await;
    assert_eq!(got[0].from, real_b);
    assert_eq!(a.peer_stats(&real_b).expect("a knows b").connections, 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_outside_the_view_cannot_send_application_messages() {
    init_tracing();
    let ca = TestCa::new();
    let a = spawn_member(&ca, "a");
    let b = spawn_member(&ca, "b");
    install_view(1, &[&a, &b]);
    let mut sub_a = a.subscribe::<Numbered>().expect("subscribe");

    // A process with a certificate from the cluster CA, but never admitted: it may
    // connect (it could be a joiner), and its application data goes nowhere.
    let rogue = raw_client(ca.certificate_pem(), Some(&ca.issue("rogue")));
    let conn = rogue
        .connect(a.local_addr(), "127.0.0.1")
        .expect("connect")
        .await
        .expect("handshake");
    let _control = establish(&conn, rogue.local_addr().expect("addr")).await;
    let payload = postcard::to_allocvec(&message(99)).expect("encode");
    let mut frames = BytesMut::from(&wire::stream_header(Priority::Normal)[..]);
    for seq in 1..=3 {
        wire::put_data_header(&mut frames, seq, Numbered::TAG, payload.len());
        frames.extend_from_slice(&payload);
    }
    let mut stream = conn.open_uni().await.expect("data stream");
    stream.write_all(&frames).await.expect("write");
    stream.finish().expect("finish");
    wait_until("the three frames are dropped", PATIENCE, || {
        a.limit_stats().from_non_members == 3
    })
    .await;
    assert!(sub_a.try_recv().is_none(), "nothing reached the subscriber");
    assert!(
        conn.close_reason().is_none(),
        "dropping is not a protocol error"
    );

    // Members in the view are heard as ever.
    let _ = b
        .send(&message(1), Priority::Normal, &to(&a))
        .expect("send");
    let got = receive(&mut sub_a, 1, PATIENCE).await;
    assert_eq!(got[0].message.index, 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_from_the_view_is_not_heard_any_more() {
    init_tracing();
    let ca = TestCa::new();
    let a = spawn_member(&ca, "a");
    let b = spawn_member(&ca, "b");
    let c = spawn_member(&ca, "c");
    install_view(1, &[&a, &b, &c]);
    let mut sub_a = a.subscribe::<Numbered>().expect("subscribe");
    let mut sub_b = b.subscribe::<Numbered>().expect("subscribe");
    let _ = c
        .send(&message(0), Priority::Normal, &to(&a))
        .expect("send");
    receive(&mut sub_a, 1, PATIENCE).await;

    // a installs a view without c; c (and b) have not heard of it yet.
    let without_c = cohort_transport::View::new(
        cohort_transport::ViewId(2),
        [a.local_member().clone(), b.local_member().clone()],
    );
    a.install_view(without_c);
    for i in 1..=5 {
        let _ = c
            .send(&message(i), Priority::Normal, &to(&a))
            .expect("c still sends to a");
        let _ = c
            .send(&message(i), Priority::Normal, &to(&b))
            .expect("and to b");
    }
    // b, which still has c in its view, hears all five: c did send them.
    receive(&mut sub_b, 5, PATIENCE).await;
    // a hears none of them, within a generous window.
    let late = tokio::time::timeout(Duration::from_secs(2), sub_a.recv()).await;
    assert!(late.is_err(), "a received {late:?} from a removed member");
    for m in [a, b, c] {
        m.shutdown().await;
    }
}
