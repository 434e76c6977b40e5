//! The real QUIC messenger on turmoil's simulated network: through seeded loss, latency, a
//! partition and a held link, every reliable message arrives exactly once and in order per
//! priority.
//!
//! Each member is a turmoil host running the production messenger over
//! [`cohort_tests::sim`]'s socket adapter. All members send to each other at once, in
//! paced batches, so traffic is flowing in both directions when the faults hit. The
//! partition is far shorter than the simulation's idle timeout, so every pair keeps one
//! connection and QUIC's own recovery is what is tested.
//!
//! turmoil's `fail_rate` is not independent per-datagram loss: each datagram breaks its link
//! with that probability, dropping it and everything still in flight on the link in both
//! directions, and each later datagram repairs the link with probability `repair_rate`.
//! Losses therefore come in bursts, and the fraction lost is well above `fail_rate` (each
//! run prints it).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cohort_tests::sim::{
    SimMember, SimSocketStats, bind_member, member_config, member_id, member_identity,
};
use cohort_tests::{Numbered, TestCa, init_tracing};
use cohort_transport::{ClusterTls, Delivery, MemberId, Priority, TransportEvent, View, ViewId};
use tokio::sync::Barrier;
use tokio::sync::broadcast::error::RecvError;

const PRIORITIES: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Bulk];
/// Simulated quiet time after everyone is done, in which nothing more may arrive.
const QUIET: Duration = Duration::from_millis(500);
/// Simulated time allowed beyond a scenario's patience for shutting down.
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(20);

/// A link fault between two hosts for a stretch of simulated time.
#[derive(Clone, Copy, Debug)]
struct Window {
    from: Duration,
    until: Duration,
    a: &'static str,
    b: &'static str,
}

/// Network conditions of one run.
#[derive(Clone, Copy, Debug)]
struct Network {
    fail_rate: f64,
    repair_rate: f64,
    min_latency: Duration,
    max_latency: Duration,
    /// Nothing passes between `a` and `b`; what was in flight is dropped.
    partition: Option<Window>,
    /// Everything between `a` and `b` is held, then delivered at once.
    hold: Option<Window>,
}

/// What every member sends, and over which network.
#[derive(Clone, Copy, Debug)]
struct Scenario {
    hosts: &'static [&'static str],
    /// Messages per (sender, receiver, priority).
    per_priority: u64,
    /// Messages per priority sent together, then a pause of `batch_interval`, so that
    /// traffic is still flowing when the faults start.
    batch: u64,
    batch_interval: Duration,
    /// Simulated time a member waits for all its messages.
    patience: Duration,
    network: Network,
}

/// One observation, in the order the simulation made it. Times are simulated
/// microseconds since the simulation started.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Connected {
        at_us: u64,
        member: &'static str,
        peer: String,
        dialed_by_us: bool,
    },
    Delivered {
        at_us: u64,
        receiver: &'static str,
        sender: String,
        priority: Priority,
        index: u64,
    },
}

struct Outcome {
    /// Each member's uuid, name and address.
    ids: Vec<(String, String, SocketAddr)>,
    trace: Vec<Event>,
    sockets: SimSocketStats,
}

/// One CA and one certificate per host, made outside the simulation and shared by every
/// run, so that runs differ only by what the seed decides.
fn certificates(hosts: &[&'static str]) -> HashMap<&'static str, ClusterTls> {
    let ca = TestCa::new();
    hosts.iter().map(|host| (*host, ca.tls(host))).collect()
}

fn body(priority: Priority, index: u64) -> Bytes {
    // Bulk messages span several packets; the others cross the writer's inline limit.
    let size = match priority {
        Priority::Bulk => (index as usize * 997) % 20_000,
        _ => (index as usize * 37) % 5_000,
    };
    Bytes::from(vec![(index % 251) as u8; size])
}

fn now_us() -> u64 {
    turmoil::sim_elapsed().map_or(0, |t| t.as_micros() as u64)
}

type SimResult = Result<(), Box<dyn std::error::Error>>;

/// One member: binds, installs the view, sends its batches to every other member while
/// checking what it receives, then waits for the others and shuts down.
struct MemberTask {
    seed: u64,
    host: &'static str,
    id: MemberId,
    view: View,
    tls: ClusterTls,
    scenario: Scenario,
    trace: Rc<RefCell<Vec<Event>>>,
    sockets: Rc<RefCell<SimSocketStats>>,
    everyone_done: Arc<Barrier>,
}

impl MemberTask {
    async fn run(self) -> SimResult {
        let identity = member_identity(self.seed, self.host);
        let SimMember { messenger, socket } =
            bind_member(self.host, identity, &self.tls, member_config()).await?;
        if !messenger.local_member().same_details(&self.id) {
            return Err(format!("{} bound as {:?}", self.host, messenger.local_member()).into());
        }
        let mut subscription = messenger.subscribe::<Numbered>()?;
        let mut events = messenger.events();
        messenger.install_view(self.view.clone());
        let others: Vec<MemberId> = self
            .view
            .members()
            .iter()
            .filter(|m| m.uuid() != self.id.uuid())
            .cloned()
            .collect();
        let per = self.scenario.per_priority;

        let send = async {
            let mut start = 0;
            while start < per {
                for index in start..(start + self.scenario.batch).min(per) {
                    for priority in PRIORITIES {
                        let message = Numbered {
                            sender: self.host.into(),
                            stream: priority.to_string(),
                            index,
                            body: body(priority, index),
                        };
                        let outcome = messenger.send(&message, priority, &others)?;
                        if !outcome.is_complete() {
                            return Err(format!("{}: send refused: {outcome:?}", self.host).into());
                        }
                    }
                }
                start += self.scenario.batch;
                tokio::time::sleep(self.scenario.batch_interval).await;
            }
            SimResult::Ok(())
        };

        let receive = async {
            let expected = others.len() as u64 * PRIORITIES.len() as u64 * per;
            let patience = self.scenario.patience;
            let deadline = tokio::time::Instant::now() + patience;
            let mut next: HashMap<(String, Priority), u64> = HashMap::new();
            let mut received = 0;
            while received < expected {
                tokio::select! {
                    biased;
                    event = events.recv() => match event {
                        Ok(TransportEvent::PeerConnected { member, dialed_by_us }) => {
                            self.trace.borrow_mut().push(Event::Connected {
                                at_us: now_us(),
                                member: self.host,
                                peer: member.name().into(),
                                dialed_by_us,
                            });
                        }
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return Err("transport events closed".into()),
                    },
                    envelope = tokio::time::timeout_at(deadline, subscription.recv()) => {
                        let Ok(Some(envelope)) = envelope else {
                            let peers: Vec<_> = others
                                .iter()
                                .map(|m| messenger.peer_stats(m))
                                .collect();
                            return Err(format!(
                                "{}: only {received} of {expected} messages within \
                                 {patience:?}; next index per stream {next:?}; peers {peers:#?}",
                                self.host
                            )
                            .into());
                        };
                        let m = envelope.message;
                        let (from, delivery) = (&envelope.from, envelope.delivery);
                        let priority = check_delivery(self.host, from, delivery, &m, &mut next)?;
                        received += 1;
                        self.trace.borrow_mut().push(Event::Delivered {
                            at_us: now_us(),
                            receiver: self.host,
                            sender: m.sender,
                            priority,
                            index: m.index,
                        });
                    }
                }
            }
            SimResult::Ok(())
        };

        tokio::try_join!(send, receive)?;
        self.everyone_done.wait().await;
        // Exactly once: with every member done, nothing more may arrive.
        if let Ok(extra) = tokio::time::timeout(QUIET, subscription.recv()).await {
            return Err(format!("{}: unexpected after the end: {extra:?}", self.host).into());
        }
        let stats = socket.stats();
        {
            let mut total = self.sockets.borrow_mut();
            total.sent += stats.sent;
            total.received += stats.received;
            total.send_failures += stats.send_failures;
        }
        messenger.shutdown().await;
        Ok(())
    }
}

/// Checks that `m` is the next message of its stream, unaltered, and moves that stream on.
fn check_delivery(
    receiver: &str,
    from: &MemberId,
    delivery: Delivery,
    m: &Numbered,
    next: &mut HashMap<(String, Priority), u64>,
) -> Result<Priority, String> {
    let Delivery::Reliable(priority) = delivery else {
        return Err(format!("{receiver}: a reliable message came as a datagram"));
    };
    let slot = next.entry((m.sender.clone(), priority)).or_default();
    let faithful = from.name() == m.sender
        && priority.to_string() == m.stream
        && m.index == *slot
        && m.body == body(priority, m.index);
    if !faithful {
        return Err(format!(
            "{receiver}: from {} on {priority} expected #{}, got {}/{} #{} ({} bytes)",
            from.name(),
            *slot,
            m.sender,
            m.stream,
            m.index,
            m.body.len()
        ));
    }
    *slot += 1;
    Ok(priority)
}

/// Applies a fault window at the right simulated times: `apply` once `from` is reached,
/// `lift` once `until` is.
struct Scheduled {
    window: Option<Window>,
    state: u8,
}

impl Scheduled {
    fn step(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        apply: fn(&turmoil::Sim<'_>, &str, &str),
        lift: fn(&turmoil::Sim<'_>, &str, &str),
    ) {
        let Some(w) = self.window else { return };
        let now = sim.elapsed();
        if self.state == 0 && now >= w.from {
            apply(sim, w.a, w.b);
            self.state = 1;
        } else if self.state == 1 && now >= w.until {
            lift(sim, w.a, w.b);
            self.state = 2;
        }
    }

    fn done(&self) -> bool {
        self.window.is_none() || self.state == 2
    }
}

/// Runs `scenario` under `seed` and returns what happened, failing on any lost, repeated,
/// reordered or altered message.
fn run(
    seed: u64,
    scenario: Scenario,
    certs: &HashMap<&'static str, ClusterTls>,
) -> Result<Outcome, String> {
    let net = scenario.network;
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(scenario.patience + SHUTDOWN_MARGIN)
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(net.min_latency)
        .max_message_latency(net.max_latency)
        .fail_rate(net.fail_rate)
        .repair_rate(net.repair_rate)
        // A roomy receive queue: losses should come from the network model only.
        .udp_capacity(4096)
        .build();
    let ids: Vec<MemberId> = scenario
        .hosts
        .iter()
        .map(|host| member_id(seed, host, sim.lookup(*host)))
        .collect();
    let view = View::new(ViewId(1), ids.clone());
    let trace = Rc::new(RefCell::new(Vec::new()));
    let sockets = Rc::new(RefCell::new(SimSocketStats::default()));
    let everyone_done = Arc::new(Barrier::new(scenario.hosts.len()));
    for (host, id) in scenario.hosts.iter().zip(ids) {
        let task = MemberTask {
            seed,
            host,
            id,
            view: view.clone(),
            tls: certs[host].clone(),
            scenario,
            trace: trace.clone(),
            sockets: sockets.clone(),
            everyone_done: everyone_done.clone(),
        };
        sim.client(*host, task.run());
    }

    let mut partition = Scheduled {
        window: net.partition,
        state: 0,
    };
    let mut hold = Scheduled {
        window: net.hold,
        state: 0,
    };
    loop {
        partition.step(
            &mut sim,
            |s, a, b| s.partition(a, b),
            |s, a, b| s.repair(a, b),
        );
        hold.step(&mut sim, |s, a, b| s.hold(a, b), |s, a, b| s.release(a, b));
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => return Err(format!("seed {seed}: {error}")),
        }
    }
    if !(partition.done() && hold.done()) {
        return Err(format!(
            "seed {seed}: the run ended before its faults were over"
        ));
    }
    drop(sim);
    let trace = Rc::try_unwrap(trace)
        .map(RefCell::into_inner)
        .unwrap_or_else(|shared| shared.borrow().clone());
    let sockets = *sockets.borrow();
    Ok(Outcome {
        ids: view
            .members()
            .iter()
            .map(|m| (m.uuid().to_string(), m.name().to_owned(), m.address()))
            .collect(),
        trace,
        sockets,
    })
}

const HOSTS: &[&str] = &["a", "b", "c"];

/// About an eighth of all datagrams lost in bursts, 1-40 ms of latency (so reordering),
/// a 2 s partition between a and b, and b-c held for 0.8 s then delivered at once.
fn faulty(per_priority: u64) -> Scenario {
    Scenario {
        hosts: HOSTS,
        per_priority,
        batch: per_priority.div_ceil(6),
        batch_interval: Duration::from_millis(200),
        patience: Duration::from_secs(100),
        network: Network {
            fail_rate: 0.02,
            repair_rate: 0.5,
            min_latency: Duration::from_millis(1),
            max_latency: Duration::from_millis(40),
            partition: Some(Window {
                from: Duration::from_millis(400),
                until: Duration::from_millis(2_400),
                a: "a",
                b: "b",
            }),
            hold: Some(Window {
                from: Duration::from_millis(600),
                until: Duration::from_millis(1_400),
                a: "b",
                b: "c",
            }),
        },
    }
}

/// [`faulty`] with about a quarter of all datagrams lost, in bursts. Everything still
/// arrives, but some seeds take minutes of simulated time: while quinn has data waiting and
/// a full congestion window it sends no ACK either, so once loss has shrunk both windows,
/// two members with data queued for each other acknowledge each other only through loss
/// probes, whose interval doubles each time.
fn harsh(per_priority: u64) -> Scenario {
    let mut scenario = faulty(per_priority);
    scenario.network.fail_rate = 0.05;
    scenario.patience = Duration::from_secs(600);
    scenario
}

fn delivered(trace: &[Event]) -> usize {
    trace
        .iter()
        .filter(|e| matches!(e, Event::Delivered { .. }))
        .count()
}

/// Checks one run and returns a line saying what the network did to it.
fn check(seed: u64, scenario: Scenario, outcome: &Outcome) -> Result<String, String> {
    let pairs = scenario.hosts.len() * (scenario.hosts.len() - 1);
    let expected = pairs * PRIORITIES.len() * scenario.per_priority as usize;
    let got = delivered(&outcome.trace);
    if got != expected {
        return Err(format!(
            "seed {seed}: {got} of {expected} messages delivered"
        ));
    }
    let s = outcome.sockets;
    let lost = s.sent.saturating_sub(s.received);
    if lost == 0 {
        return Err(format!("seed {seed}: the network lost nothing: {s:?}"));
    }
    if let Some(w) = scenario.network.partition {
        // Messages sent during the partition could only arrive after it.
        let delayed = outcome.trace.iter().any(|e| match e {
            Event::Delivered {
                at_us,
                receiver,
                sender,
                ..
            } => {
                *at_us >= w.until.as_micros() as u64
                    && ((*receiver == w.a && sender == w.b) || (*receiver == w.b && sender == w.a))
            }
            Event::Connected { .. } => false,
        });
        if !delayed {
            return Err(format!("seed {seed}: the partition delayed no traffic"));
        }
    }
    let last = outcome.trace.iter().rev().find_map(|e| match e {
        Event::Delivered { at_us, .. } => Some(*at_us / 1000),
        Event::Connected { .. } => None,
    });
    Ok(format!(
        "seed {seed}: {expected} messages, the last at {} ms simulated; datagrams sent {}, \
         received {} ({:.1}% lost)",
        last.unwrap_or(0),
        s.sent,
        s.received,
        100.0 * lost as f64 / s.sent.max(1) as f64,
    ))
}

/// Runs every seed and fails naming each seed that failed.
fn run_seeds(scenario: Scenario, seeds: impl IntoIterator<Item = u64>) {
    let certs = certificates(scenario.hosts);
    let mut failures = Vec::new();
    for seed in seeds {
        match run(seed, scenario, &certs).and_then(|o| check(seed, scenario, &o)) {
            Ok(summary) => eprintln!("{summary}"),
            Err(failure) => {
                eprintln!("FAILED {failure}");
                failures.push(failure);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} seeds failed: {failures:#?}",
        failures.len()
    );
}

#[test]
fn every_message_arrives_once_and_in_order_through_loss_latency_and_partition() {
    init_tracing();
    run_seeds(faulty(60), [1]);
}

#[test]
fn many_seeds_deliver_everything() {
    init_tracing();
    run_seeds(faulty(20), 100..120);
}

#[test]
#[ignore = "slow: about 3 minutes in a debug build"]
fn many_seeds_deliver_everything_through_harsh_loss() {
    init_tracing();
    run_seeds(harsh(20), 1000..1100);
}

/// The parts of a run a seed decides today: who the members are (so which of two crossed
/// dials wins), what is delivered, and in which order on each stream.
///
/// Not the timing, and so not the interleaving of streams: quinn draws random numbers from
/// its endpoint's generator, seeded by the operating system unless the endpoint
/// configuration carries a seed, and the messenger builds that configuration without one.
/// Among them are the padding length of a reserved transport parameter (so handshake
/// sizes), which packet numbers are skipped, and after how many packets keys are first
/// updated. They change packet sizes, numbers and timing, which shifts which datagram meets
/// which of turmoil's seeded latency and loss draws, so two runs of one seed usually part
/// within the first second.
#[test]
fn a_seed_fixes_the_whole_trace() {
    init_tracing();
    let scenario = faulty(20);
    let certs = certificates(scenario.hosts);
    let trace = |seed| {
        let outcome = run(seed, scenario, &certs).unwrap_or_else(|e| panic!("{e}"));
        check(seed, scenario, &outcome).unwrap_or_else(|e| panic!("{e}"));
        format!("{:#?}\n{:#?}", outcome.ids, outcome.trace)
    };
    let first = trace(7);
    let second = trace(7);
    if let Some(at) = first.lines().zip(second.lines()).position(|(a, b)| a != b) {
        panic!(
            "same seed, different traces from line {at}: {:?} vs {:?}",
            first.lines().nth(at),
            second.lines().nth(at)
        );
    }
    assert_eq!(first, second, "same seed, same trace");
    assert_ne!(first, trace(8), "another seed, another trace");
}
