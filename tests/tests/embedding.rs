//! The embedding API as a service uses it: subscriptions made before a member joins,
//! application tags that cannot reach cohort's own protocols, handles shared between
//! tasks, messages nobody subscribed to reported to their sender and counted at the
//! receiver, the counters in an embedder's own metrics registry.

use std::pin::Pin;

use cohort_membership::metrics::prometheus::MemberCollector;
use cohort_membership::{Member, MemberConfig, MembershipEvent};
use cohort_tests::{Cluster, PATIENCE, init_tracing, wait_until};
use cohort_transport::{
    MemberId, MemberKind, Message, Priority, SendError, SubscribeError, Subscription, Tag,
};
use futures_core::Stream;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Greeting(String);

impl Message for Greeting {
    const TAG: Tag = Tag::from_name("cohort-tests/greeting");
}

/// A type that reuses the membership protocol's tag.
#[derive(Debug, Serialize, Deserialize)]
struct Impostor;

impl Message for Impostor {
    const TAG: Tag = Tag(0x0100);
}

const NEWCOMERS: usize = 20;

/// The locator greets each newcomer the moment it sees it in its view; each newcomer
/// subscribed on its builder, before it joined, and hears every greeting. With
/// `Member::start` and `subscribe` on the line after, 3 of 20 were heard: the rest arrived
/// before the subscription existed and were dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_that_subscribed_before_it_joined_hears_a_greeting_sent_the_moment_it_appeared()
{
    init_tracing();
    let mut cluster = Cluster::new(1);
    cluster.start(0).await;
    let locator = cluster.member("locator-1");
    let mut heard = 0;
    for i in 1..=NEWCOMERS {
        let name = format!("newcomer-{i}");
        let config = cluster.config(&name, MemberKind::Member);
        let (newcomer, greeted) =
            tokio::join!(join_and_listen(config), greet_when_seen(locator, &name));
        let (newcomer, greeting) = newcomer;
        greeted.expect("the greeting was queued");
        if greeting == Some(Greeting(format!("welcome, {name}"))) {
            heard += 1;
        }
        assert!(newcomer.leave().await, "{name} left");
    }
    println!("{heard} of {NEWCOMERS} greetings heard");
    assert_eq!(heard, NEWCOMERS);
}

/// Starts a member subscribed to [`Greeting`] from before it joins; returns it with the
/// first greeting it heard within [`PATIENCE`].
async fn join_and_listen(config: MemberConfig) -> (Member, Option<Greeting>) {
    let mut builder = Member::builder(config);
    let mut greetings: Subscription<Greeting> =
        builder.subscribe().expect("subscribe before the start");
    let member = builder.start().await.expect("the newcomer starts");
    let greeting = tokio::time::timeout(PATIENCE, greetings.recv())
        .await
        .ok()
        .flatten()
        .map(|envelope| envelope.message);
    (member, greeting)
}

/// Watches `locator`'s view until a member named `name` is in it, and greets it at once.
async fn greet_when_seen(locator: &Member, name: &str) -> Result<(), String> {
    let mut views = locator.watch_view();
    let newcomer = tokio::time::timeout(PATIENCE, async {
        loop {
            let seen = views
                .borrow_and_update()
                .members()
                .iter()
                .find(|m| m.name() == name)
                .cloned();
            if let Some(member) = seen {
                return member;
            }
            views.changed().await.expect("the locator runs");
        }
    })
    .await
    .map_err(|_| format!("{name} never appeared in the locator's view"))?;
    let greeting = Greeting(format!("welcome, {name}"));
    let outcome = locator
        .send(&greeting, Priority::High, &[newcomer])
        .map_err(|error| error.to_string())?;
    if outcome.is_complete() {
        Ok(())
    } else {
        Err(format!("not queued for {name}: {outcome:?}"))
    }
}

/// A type under a tag reserved for cohort's own protocols is refused, by name, at subscribe
/// (on the builder and on a started member) and at send, instead of reaching the
/// protocol's own subscriber at the receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserved_tag_is_refused_at_subscribe_and_send_with_a_named_error() {
    init_tracing();
    let mut cluster = Cluster::new(1);
    cluster.start(1).await;
    let mut builder = Member::builder(cluster.config("member-2", MemberKind::Member));
    let refused = builder.subscribe::<Impostor>().expect_err("a reserved tag");
    assert!(
        matches!(refused, SubscribeError::ReservedTag(tag) if tag == Impostor::TAG),
        "{refused}"
    );
    assert!(refused.to_string().contains("reserved"), "{refused}");
    drop(builder);

    let member = cluster.member("member-1");
    let locator = cluster.member("locator-1").id().clone();
    let refused = member.subscribe::<Impostor>().expect_err("a reserved tag");
    assert!(
        matches!(refused, SubscribeError::ReservedTag(_)),
        "{refused}"
    );
    for refused in [
        member
            .send(&Impostor, Priority::High, std::slice::from_ref(&locator))
            .expect_err("a reserved tag"),
        member
            .send_datagram(&Impostor, std::slice::from_ref(&locator))
            .expect_err("a reserved tag"),
    ] {
        assert!(
            matches!(refused, SendError::ReservedTag(tag) if tag == Impostor::TAG),
            "{refused}"
        );
    }
    // A tag derived from a name is an application tag, and goes.
    let sent = member
        .send(&Greeting("hello".into()), Priority::High, &[locator])
        .expect("an application tag");
    assert!(sent.is_complete(), "{sent:?}");
}

/// A member handle is shared as a service shares it: a clone dropped in a task leaves the
/// member running, any handle can leave, and a second leave returns the first one's result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_handle_of_a_shared_member_can_leave_and_a_second_leave_is_harmless() {
    init_tracing();
    let mut cluster = Cluster::new(1);
    cluster.start(0).await;
    let mut builder = Member::builder(cluster.config("member-1", MemberKind::Member));
    let mut greetings = builder.subscribe::<Greeting>().expect("subscribe");
    let member = builder.start().await.expect("member-1 starts");

    // A clone that a task drops: the member runs on, and still hears the locator.
    let clone = member.clone();
    tokio::spawn(async move { drop(clone) })
        .await
        .expect("the task ends");
    greet_when_seen(cluster.member("locator-1"), "member-1")
        .await
        .expect("greeted");
    let heard = tokio::time::timeout(PATIENCE, greetings.recv())
        .await
        .expect("a greeting within the patience");
    assert!(heard.is_some(), "the member still runs");

    // Another clone leaves, from a task; then the first handle leaves again.
    let clone = member.clone();
    let first = tokio::spawn(async move { clone.leave().await })
        .await
        .expect("the task ends");
    assert!(first, "the view without member-1 arrived");
    assert!(member.leave().await, "the first leave's result");
    assert!(!member.is_active());
    let locator = cluster.member("locator-1");
    wait_until("the locator's view without member-1", PATIENCE, || {
        !locator.view().contains(member.id())
    })
    .await;
}

/// A message of a type its receiver never subscribed to is not taken as delivered in
/// silence: the sender hears `MembershipEvent::Undelivered`, naming the receiver and the
/// tag. Before, the receiver acknowledged it and dropped it, and only its own counter knew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_nobody_subscribed_to_is_reported_to_its_sender() {
    init_tracing();
    let mut cluster = Cluster::new(1);
    cluster.start(1).await;
    let sender = cluster.member("member-1");
    let mut events = sender.events();
    let locator = cluster.member("locator-1").id().clone();
    let outcome = sender
        .send(
            &Greeting("anyone there?".into()),
            Priority::High,
            std::slice::from_ref(&locator),
        )
        .expect("an application tag");
    assert!(outcome.is_complete(), "queued: {outcome:?}");
    let reported = undelivered(&mut events).await;
    assert_eq!(reported, (locator, Greeting::TAG, 1));

    // The receiver counted it, and an embedder's own registry serves the count beside its
    // own series.
    let receiver = cluster.member("locator-1");
    assert_eq!(receiver.metrics().dispatch.unknown_tags, 1);
    let mut registry = Registry::default();
    let requests = Counter::<u64>::default();
    registry.register(
        "service_requests",
        "The service's own series",
        requests.clone(),
    );
    requests.inc();
    registry.register_collector(Box::new(MemberCollector::new(receiver.clone())));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
    for series in [
        "service_requests_total 1\n",
        "cohort_dispatch_unknown_tags_total 1\n",
        "cohort_view_members 2\n",
        "cohort_peer_connected{peer=\"member-1\"",
    ] {
        assert!(text.contains(series), "no {series:?} in {text}");
    }
}

/// A subscription the receiver dropped is no different from one it never made: with
/// auto-reconnect on (the default), a member's subscriptions are relayed from its
/// messenger, and the relay used to stay and take every later message of the tag, so its
/// sender was never told. Subscribing again hears the next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_a_dropped_subscription_is_reported_and_a_new_one_hears_the_next() {
    init_tracing();
    let mut cluster = Cluster::new(1);
    cluster.start(1).await;
    let sender = cluster.member("member-1");
    let receiver = cluster.member("locator-1");
    let to = std::slice::from_ref(receiver.id());
    let send = |text: &str| {
        let outcome = sender
            .send(&Greeting(text.into()), Priority::High, to)
            .expect("an application tag");
        assert!(outcome.is_complete(), "queued: {outcome:?}");
    };

    let mut greetings = receiver.subscribe::<Greeting>().expect("subscribe");
    send("first");
    let first = tokio::time::timeout(PATIENCE, greetings.recv()).await;
    assert_eq!(
        first.ok().flatten().map(|e| e.message.0).as_deref(),
        Some("first")
    );
    drop(greetings);

    // The relay lets go of the tag on the messenger as soon as it is told (before, it never
    // did): then nothing takes a greeting there.
    wait_until("the relay lets go of the tag", PATIENCE, || {
        receiver.messenger().subscribe::<Greeting>().is_ok()
    })
    .await;
    let mut events = sender.events();
    send("nobody listens");
    let (member, tag, _) = undelivered(&mut events).await;
    assert_eq!(
        Some((member, tag)),
        Some((receiver.id().clone(), Greeting::TAG)),
        "the sender hears that the dropped subscription took nothing"
    );

    let mut again = receiver.subscribe::<Greeting>().expect("subscribe again");
    send("second");
    let second = tokio::time::timeout(PATIENCE, again.recv()).await;
    assert_eq!(
        second.ok().flatten().map(|e| e.message.0).as_deref(),
        Some("second")
    );
}

/// `send_to_others` reaches every other member of the view, and not the sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_all_others_reaches_each_of_them_once() {
    init_tracing();
    let mut cluster = Cluster::new(1);
    cluster.start(0).await;
    let mut listeners = Vec::new();
    let mut members = Vec::new();
    for name in ["member-1", "member-2"] {
        let mut builder = Member::builder(cluster.config(name, MemberKind::Member));
        listeners.push(builder.subscribe::<Greeting>().expect("subscribe"));
        members.push(builder.start().await.expect("starts"));
    }
    let locator = cluster.member("locator-1");
    let mut own = locator.subscribe::<Greeting>().expect("subscribe");
    cluster.agreed_view(3, PATIENCE).await;
    let outcome = locator
        .send_to_others(&Greeting("all of you".into()), Priority::Normal)
        .expect("send");
    assert!(outcome.is_complete(), "{outcome:?}");
    for listener in &mut listeners {
        let heard = tokio::time::timeout(PATIENCE, listener.recv())
            .await
            .expect("heard within the patience")
            .expect("a greeting");
        assert_eq!(heard.message, Greeting("all of you".into()));
    }
    assert!(own.try_recv().is_none(), "not to the sender");
    for member in members {
        assert!(member.leave().await);
    }
}

/// An operator's question from outside the cluster: the locator's view, asked with a
/// certificate of the cluster's CA from a socket the library binds itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_asks_a_locator_for_its_view() {
    init_tracing();
    let mut cluster = Cluster::new(1);
    cluster.start(1).await;
    let view = cluster.agreed_view(2, PATIENCE).await;
    let locator = cluster.locator_addresses()[0];
    let operator = cluster.config("operator", MemberKind::Admin);
    let report = cohort_membership::ask_locator(locator, &operator.tls)
        .await
        .expect("the locator answers");
    assert_eq!(report.responder.name(), "locator-1");
    assert_eq!(report.view.as_ref(), Some(&view));
    assert!(
        !cluster
            .member("locator-1")
            .view()
            .members()
            .iter()
            .any(|m| m.name() == "operator")
    );
}

/// An embedded locator left at its defaults writes no view file into the directory its
/// process runs in (it used to write `locator-<port>.view` there); given a working
/// directory, it persists its view there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locator_writes_its_view_file_only_where_it_was_given_a_directory() {
    init_tracing();
    let cluster = Cluster::new(1);
    let mut config = cluster.config("locator-1", MemberKind::Locator);
    config.working_dir = None;
    let locator = Member::start(config)
        .await
        .expect("the locator founds a cluster");
    let port = locator.address().port();
    let file = cohort_membership::view_file::path_for(&std::env::current_dir().expect("cwd"), port);
    assert!(!file.exists(), "{} was written", file.display());
    assert!(locator.leave().await);

    let dir = std::env::temp_dir().join(format!("cohort-view-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let other = Cluster::new(1);
    let mut config = other.config("locator-1", MemberKind::Locator);
    config.working_dir = Some(dir.clone());
    let locator = Member::start(config)
        .await
        .expect("the locator founds a cluster");
    let file = cohort_membership::view_file::path_for(&dir, locator.address().port());
    wait_until("the view file is written", PATIENCE, || file.exists()).await;
    assert!(locator.leave().await);
    std::fs::remove_dir_all(&dir).expect("removed");
}

/// A subscription and the events work as `futures_core::Stream`s: the message arrives
/// through `poll_next`, and so does the view without a member that left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_and_events_are_streams() {
    init_tracing();
    let mut cluster = Cluster::new(1);
    cluster.start(0).await;
    let mut builder = Member::builder(cluster.config("member-1", MemberKind::Member));
    let mut greetings = builder.subscribe::<Greeting>().expect("subscribe");
    let member = builder.start().await.expect("starts");
    let locator = cluster.member("locator-1");
    let mut events = locator.event_stream();
    let outcome = locator
        .send(
            &Greeting("streamed".into()),
            Priority::Bulk,
            std::slice::from_ref(member.id()),
        )
        .expect("send");
    assert!(outcome.is_complete(), "{outcome:?}");
    let heard = tokio::time::timeout(PATIENCE, next(&mut greetings))
        .await
        .expect("heard within the patience")
        .expect("a greeting");
    assert_eq!(heard.message, Greeting("streamed".into()));

    let gone = member.id().clone();
    assert!(member.leave().await);
    tokio::time::timeout(PATIENCE, async {
        loop {
            match next(&mut events).await.expect("the stream goes on") {
                Ok(MembershipEvent::ViewInstalled { left, .. }) if left.contains(&gone) => break,
                Ok(_) => {}
                Err(missed) => panic!("{missed}"),
            }
        }
    })
    .await
    .expect("the view without the member arrives as a stream item");
}

/// The next item of a stream, without a combinator crate.
/// The next `MembershipEvent::Undelivered` among `events`: who, which tag, how many.
async fn undelivered(events: &mut broadcast::Receiver<MembershipEvent>) -> (MemberId, Tag, u64) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match events.recv().await {
                Ok(MembershipEvent::Undelivered { member, tag, count }) => {
                    return (member, tag, count);
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("events ended"),
            }
        }
    })
    .await
    .expect("the sender hears that nobody took it")
}

async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}
