//! Rolling upgrade from the legacy protocol to QUIC, one member at a time, with traffic
//! flowing on every application priority among all members throughout.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cohort_legacy_udp::LegacyCarrier;
use cohort_membership::{Member, Protocol, StartError};
use cohort_tests::{Cluster, Numbered, PATIENCE, init_tracing, wait_until};
use cohort_transport::{MemberKind, Messenger, Priority, ProtocolVersion};
use tokio::task::JoinHandle;
use uuid::Uuid;

const PRIORITIES: [(Priority, &str, usize); 3] = [
    (Priority::High, "high", 60),
    (Priority::Normal, "normal", 700),
    // Several legacy fragments each.
    (Priority::Bulk, "bulk", 5_000),
];

/// Per (sender, receiver, priority): how many were accepted by `send`, and how many
/// arrived (the receiver checks each arrival is the next index: once, in order).
#[derive(Default)]
struct Books {
    sent: HashMap<(Uuid, Uuid, &'static str), u64>,
    received: HashMap<(Uuid, Uuid, &'static str), u64>,
    violations: Vec<String>,
}

/// Every member sends to every other member of its view, on every application priority,
/// every few milliseconds, and checks what it receives.
#[derive(Default)]
struct Traffic {
    books: Arc<Mutex<Books>>,
    paused: Arc<AtomicBool>,
    /// Members about to leave: nobody sends to them or lets them send any more.
    leaving: Arc<Mutex<HashSet<Uuid>>>,
    /// Members that have subscribed: only they are sent to (a message for a tag nobody
    /// subscribes to yet is dropped by design).
    ready: Arc<Mutex<HashSet<Uuid>>>,
    tasks: HashMap<Uuid, Vec<JoinHandle<()>>>,
}

fn priority_name(stream: &str) -> Option<&'static str> {
    PRIORITIES
        .iter()
        .find(|(_, n, _)| *n == stream)
        .map(|(_, n, _)| *n)
}

impl Traffic {
    fn start(&mut self, member: &Member) {
        let me = member.id().clone();
        let transport: Messenger = member.messenger().clone();
        let mut subscription = member.subscribe::<Numbered>().expect("subscribe");
        let books = self.books.clone();
        let receiver = tokio::spawn(async move {
            while let Some(envelope) = subscription.recv().await {
                let message = envelope.message;
                let mut books = books.lock().expect("books");
                let (Ok(sender), Some(stream)) = (
                    Uuid::parse_str(&message.sender),
                    priority_name(&message.stream),
                ) else {
                    books
                        .violations
                        .push(format!("unreadable message {message:?}"));
                    continue;
                };
                let next = books
                    .received
                    .entry((sender, me.uuid(), stream))
                    .or_insert(0);
                if message.index != *next {
                    let expected = *next;
                    books.violations.push(format!(
                        "{} got index {} from {sender} on {stream}, expected {expected}",
                        me.name(),
                        message.index
                    ));
                } else {
                    *next += 1;
                }
            }
        });
        self.ready.lock().expect("ready").insert(member.id().uuid());
        let (books, paused, leaving, ready) = (
            self.books.clone(),
            self.paused.clone(),
            self.leaving.clone(),
            self.ready.clone(),
        );
        let me = member.id().clone();
        let sender = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let gone = leaving.lock().expect("leaving").clone();
                let ready = ready.lock().expect("ready").clone();
                if paused.load(Ordering::Acquire) || gone.contains(&me.uuid()) {
                    continue;
                }
                let view = transport.view();
                for to in view.members() {
                    if *to == me || gone.contains(&to.uuid()) || !ready.contains(&to.uuid()) {
                        continue;
                    }
                    for (priority, stream, size) in PRIORITIES {
                        let key = (me.uuid(), to.uuid(), stream);
                        let index = *books.lock().expect("books").sent.get(&key).unwrap_or(&0);
                        let message = Numbered::new(&me.uuid().to_string(), stream, index, size);
                        let accepted = transport
                            .send(&message, priority, std::slice::from_ref(to))
                            .is_ok_and(|outcome| outcome.is_complete());
                        if accepted {
                            *books.lock().expect("books").sent.entry(key).or_insert(0) += 1;
                        }
                    }
                }
            }
        });
        self.tasks
            .insert(member.id().uuid(), vec![receiver, sender]);
    }

    fn stop(&mut self, uuid: Uuid) {
        for task in self.tasks.remove(&uuid).unwrap_or_default() {
            task.abort();
        }
    }

    /// Waits until every message sent between `members` (in either direction) arrived,
    /// and nothing arrived twice or out of order.
    async fn settled(&self, members: &[Uuid], what: &str) {
        let complete = || {
            let books = self.books.lock().expect("books");
            books.sent.iter().all(|(key, sent)| {
                !(members.contains(&key.0) && members.contains(&key.1))
                    || books.received.get(key).copied().unwrap_or(0) == *sent
            })
        };
        wait_until(what, PATIENCE, complete).await;
        let books = self.books.lock().expect("books");
        assert!(books.violations.is_empty(), "{:?}", books.violations);
    }

    /// Pauses every sender, waits until everything sent among the running members
    /// arrived, checks it, and lets traffic go on.
    async fn check_everything(&self, cluster: &Cluster, what: &str) {
        self.paused.store(true, Ordering::Release);
        let members: Vec<Uuid> = cluster
            .running()
            .iter()
            .map(|n| cluster.member(n).id().uuid())
            .collect();
        self.settled(&members, what).await;
        self.paused.store(false, Ordering::Release);
    }

    /// Waits until `member` has received from and been received by every other running
    /// member on every priority.
    async fn flowing(&self, cluster: &Cluster, member: Uuid) {
        let others: Vec<Uuid> = cluster
            .running()
            .iter()
            .map(|n| cluster.member(n).id().uuid())
            .filter(|u| *u != member)
            .collect();
        let flowing = || {
            let books = self.books.lock().expect("books");
            others.iter().all(|other| {
                PRIORITIES.iter().all(|(_, stream, _)| {
                    books
                        .received
                        .get(&(*other, member, stream))
                        .is_some_and(|n| *n > 0)
                        && books
                            .received
                            .get(&(member, *other, stream))
                            .is_some_and(|n| *n > 0)
                })
            })
        };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !flowing() {
            if tokio::time::Instant::now() >= deadline {
                let books = self.books.lock().expect("books");
                let missing: Vec<String> = others
                    .iter()
                    .flat_map(|other| {
                        PRIORITIES.iter().flat_map(move |(_, stream, _)| {
                            [(*other, member, *stream), (member, *other, *stream)]
                        })
                    })
                    .filter(|key| books.received.get(key).is_none_or(|n| *n == 0))
                    .map(|key| format!("{key:?} (sent {:?})", books.sent.get(&key)))
                    .collect();
                let stats: Vec<String> = cluster
                    .running()
                    .iter()
                    .map(|n| {
                        let m = cluster.member(n);
                        let messenger = m.messenger();
                        let legacy = messenger.carrier::<LegacyCarrier>().map(|l| l.stats());
                        format!(
                            "{n} {} {:?} {:?}",
                            m.id().uuid(),
                            legacy,
                            m.messenger().socket_stats()
                        )
                    })
                    .collect();
                let violations: Vec<&String> = books.violations.iter().take(5).collect();
                panic!(
                    "no traffic within {PATIENCE:?}: {missing:?}\n{}\nviolations {violations:?}",
                    stats.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn total_received(&self) -> u64 {
        self.books.lock().expect("books").received.values().sum()
    }
}

fn legacy_open(member: &Member) -> Option<bool> {
    member.messenger().secondary_open()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_cluster_is_upgraded_member_by_member_without_losing_a_message() {
    init_tracing();
    let mut cluster = Cluster::tuned(1, |config| config.protocol = Protocol::Legacy);
    cluster.start(5).await;
    cluster.agreed_view(6, PATIENCE).await;
    for name in cluster.running() {
        assert_eq!(
            cluster.member(&name).id().version(),
            ProtocolVersion::LEGACY
        );
    }
    let mut traffic = Traffic::default();
    for name in cluster.running() {
        traffic.start(cluster.member(&name));
    }
    for name in cluster.running() {
        traffic
            .flowing(&cluster, cluster.member(&name).id().uuid())
            .await;
    }
    traffic
        .check_everything(&cluster, "the old cluster's traffic")
        .await;

    let order = [
        "locator-1",
        "member-1",
        "member-2",
        "member-3",
        "member-4",
        "member-5",
    ];
    for name in order {
        // Traffic to and from it stops and drains; the others go on talking meanwhile.
        let old = cluster.member(name).id().clone();
        traffic.leaving.lock().expect("leaving").insert(old.uuid());
        let everyone: Vec<Uuid> = cluster
            .running()
            .iter()
            .map(|n| cluster.member(n).id().uuid())
            .collect();
        traffic
            .settled(&everyone, &format!("everything to and from {name} arrived"))
            .await;
        traffic.stop(old.uuid());
        assert!(cluster.leave(name).await, "{name} left gracefully");

        let kind = match name.starts_with("locator") {
            true => MemberKind::Locator,
            false => MemberKind::Member,
        };
        let mut config = cluster.config(name, kind);
        config.protocol = Protocol::Bridge;
        let upgraded = cluster
            .restart_with(name, config)
            .await
            .unwrap_or_else(|e| panic!("{name} comes back as a bridge: {e}"));
        assert_eq!(upgraded.id().version(), ProtocolVersion::QUIC);
        let new = upgraded.id().uuid();
        traffic.start(upgraded);
        let view = cluster.agreed_view(6, PATIENCE).await;
        assert!(!view.contains(&old));
        traffic.flowing(&cluster, new).await;
        traffic
            .check_everything(&cluster, &format!("traffic after {name} was upgraded"))
            .await;
        println!(
            "{name} upgraded: view {view}, {} messages checked so far",
            traffic.total_received()
        );
    }

    // No old member is left: every bridge closes its legacy side.
    wait_until("every member closed its legacy side", PATIENCE, || {
        cluster
            .running()
            .iter()
            .all(|n| legacy_open(cluster.member(n)) == Some(false))
    })
    .await;
    // Traffic goes on over QUIC alone.
    let last = cluster.member("member-5").id().uuid();
    traffic
        .check_everything(&cluster, "traffic over QUIC alone")
        .await;
    let before = traffic.total_received();
    traffic.flowing(&cluster, last).await;
    wait_until("traffic keeps flowing", PATIENCE, || {
        traffic.total_received() > before + 100
    })
    .await;
    traffic
        .check_everything(&cluster, "traffic over QUIC alone")
        .await;

    // An old member cannot join any more, and is told why.
    let mut latecomer = cluster.config("latecomer", MemberKind::Member);
    latecomer.protocol = Protocol::Legacy;
    match Member::start(latecomer).await {
        Err(StartError::Refused { reason, .. }) => {
            assert!(reason.contains("upgrade"), "{reason}");
            println!("an old member is refused: {reason}");
        }
        Err(other) => panic!("expected a refusal naming the upgrade, got: {other}"),
        Ok(member) => panic!("an old member joined after the upgrade: {:?}", member.id()),
    }
}
