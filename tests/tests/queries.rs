//! Talking to processes outside the view: one-shot queries (discovery) and protocol
//! messages sent outside the view (joins), on real QUIC and TLS over loopback.

use cohort_tests::{PATIENCE, TestCa, init_tracing, receive, spawn_member, wait_until};
use cohort_transport::{Message, Query, QueryError, SendError, Tag, View, ViewId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct WhoIsThere {
    asker: String,
}

impl Message for WhoIsThere {
    // Below the application range: cohort's own protocols use such tags.
    const TAG: Tag = Tag(0xfe01);
}

impl Query for WhoIsThere {
    type Answer = String;
}

#[derive(Debug, Serialize, Deserialize)]
struct Unserved;

impl Message for Unserved {
    const TAG: Tag = Tag(0xfe02);
}

impl Query for Unserved {
    type Answer = ();
}

#[derive(Debug, Serialize, Deserialize)]
struct Knock(u32);

impl Message for Knock {
    const TAG: Tag = Tag(0xfe03);
}

#[derive(Debug, Serialize, Deserialize)]
struct AppKnock;

impl Message for AppKnock {
    const TAG: Tag = Tag(0x1_fe03);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_is_answered_by_whoever_listens_and_leaves_no_peer_behind() {
    init_tracing();
    let ca = TestCa::new();
    let (answerer, asker) = (spawn_member(&ca, "answerer"), spawn_member(&ca, "asker"));
    answerer.serve::<WhoIsThere>(|query, from| format!("hello {} from {from}", query.asker));

    let question = WhoIsThere {
        asker: "asker".into(),
    };
    let answer = asker
        .query(answerer.local_addr(), &question)
        .await
        .expect("answered");
    assert_eq!(answer, format!("hello asker from {}", asker.local_addr()));

    let error = asker
        .query(answerer.local_addr(), &Unserved)
        .await
        .expect_err("not served");
    assert!(
        matches!(error, QueryError::NotServed { tag, .. } if tag == Unserved::TAG),
        "{error}"
    );

    // Neither side keeps anything about the other once the answer is in.
    assert!(answerer.peer_stats(asker.local_member()).is_none());
    assert!(asker.peer_stats(answerer.local_member()).is_none());
    wait_until("query connections are gone", PATIENCE, || {
        answerer.quic().expect("a QUIC carrier").open_connections() == 0
            && asker.quic().expect("a QUIC carrier").open_connections() == 0
    })
    .await;

    // A process with a certificate from another CA gets no answer.
    let stranger = spawn_member(&TestCa::new(), "stranger");
    let error = stranger
        .query(answerer.local_addr(), &question)
        .await
        .expect_err("TLS refuses it");
    assert!(matches!(error, QueryError::Connection { .. }), "{error}");
    for m in [answerer, asker, stranger] {
        m.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_messages_reach_members_outside_the_view_but_application_ones_do_not() {
    init_tracing();
    let ca = TestCa::new();
    let (coordinator, joiner) = (
        spawn_member(&ca, "coordinator"),
        spawn_member(&ca, "joiner"),
    );
    let view = View::new(ViewId(1), [coordinator.local_member().clone()]);
    coordinator.install_view(view);
    let mut knocks = coordinator.subscribe::<Knock>().expect("subscribe");
    let mut replies = joiner.subscribe::<Knock>().expect("subscribe");

    // The joiner has no view at all; the coordinator's view does not hold the joiner.
    let to = [coordinator.local_member().clone()];
    for i in 0..3 {
        let outcome = joiner.send_outside_view(&Knock(i), &to).expect("send");
        assert!(outcome.is_complete());
    }
    let got = receive(&mut knocks, 3, PATIENCE).await;
    let order: Vec<u32> = got.iter().map(|e| e.message.0).collect();
    assert_eq!(order, [0, 1, 2]);
    let outcome = coordinator
        .send_outside_view(&Knock(7), std::slice::from_ref(joiner.local_member()))
        .expect("send");
    assert!(outcome.is_complete());
    assert_eq!(receive(&mut replies, 1, PATIENCE).await[0].message.0, 7);

    let error = joiner
        .send_outside_view(&AppKnock, &to)
        .expect_err("application tags stay inside the view");
    assert!(matches!(error, SendError::ProtocolOnly(tag) if tag == AppKnock::TAG));
    for m in [coordinator, joiner] {
        m.shutdown().await;
    }
}
