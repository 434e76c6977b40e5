//! [`Chaos`]: `Gms` state machines on a faulty simulated network in virtual time, with the
//! scripted fault API and the per-step invariant checks. See the [module docs](super).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cohort_membership::{
    AllowAll, CheckOutcome, Credentials, Gms, GmsConfig, GmsMessage, LeaseMessage, MembershipEvent,
    Output, ReachabilityMessage, Standing,
};
use cohort_transport::{MemberId, MemberKind, View, ViewId};
use uuid::Uuid;

use super::invariants::{Invariant, Invariants, Violation};
use super::net::{Effect, FaultId, Links};
use super::rng::Rng;

/// More steps than this at one instant of virtual time is a spin (see [`Invariant::Spin`]).
const SPIN_LIMIT: u64 = 20_000;
/// Steps kept for a failure's report.
const TRACE_LEN: usize = 80;
/// Longest message text in a failure's trace.
const TRACE_WIDTH: usize = 200;
/// How long `form` lets heartbeats flow after everyone is in: a neighbour never heard
/// from gets five member timeouts of grace instead of one, and faults should meet a
/// cluster whose detectors are in their steady state.
const SETTLE: Duration = Duration::from_secs(2);

/// Tags of the keyed draws (see [`Rng::keyed`]), one per kind of decision.
const DRAW_UUID: u64 = 1;
const DRAW_LINK: u64 = 2;
const DRAW_CHECK: u64 = 3;
const DRAW_HOOK: u64 = 4;
const DRAW_DEATH: u64 = 5;
const DRAW_RESUME: u64 = 6;
/// Lease traffic draws its link faults apart from the protocol's messages and heartbeats,
/// so that adding it left the fate of every other transmission of a seed as it was.
const DRAW_LEASE: u64 = 7;
/// Reachability notices likewise, for the same reason.
const DRAW_REACHABILITY: u64 = 8;
/// The QUIC acknowledgements of heartbeats likewise.
const DRAW_ACK: u64 = 9;

/// Timing and fault knobs of the simulated world.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// Every member's protocol configuration.
    pub gms: GmsConfig,
    /// Latency of every transmission on a healthy link. Default 0.2–3 ms.
    pub latency: Range<Duration>,
    /// When a final check of a live, reachable member answers (`Alive`, or `Out` from a
    /// member that is out). Default 2–40 ms.
    pub alive_answer: Range<Duration>,
    /// When a final check of a dead process whose host is up answers `Refused`. Default
    /// 1–5 ms.
    pub refused_answer: Range<Duration>,
    /// When an unanswered final check reports `NoAnswer`. Default 400 ms (the driver's
    /// `final_check_timeout`).
    pub final_check_timeout: Duration,
    /// Probability that a check of a live, reachable member times out anyway (a lost
    /// handshake, a slow scheduler). Default 2%.
    pub check_times_out: f64,
    /// Makes invariant 4 (one coordinator per view id) fatal; otherwise it is only
    /// counted ([`Stats::coordinator_overlaps`]). Default on: belief is the coordinator
    /// lease (`Gms::is_coordinator(now)`), asked after every step at the current virtual
    /// time of every running member.
    pub strict_coordinators: bool,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        ChaosConfig {
            // One stage (removal at the first unanswered check): the schedule the pinned
            // seeds and the soak's figures were found with. `ChaosConfig::two_stage` runs
            // the default removal timeout.
            gms: GmsConfig {
                removal_timeout: Duration::ZERO,
                ..GmsConfig::default()
            },
            latency: Duration::from_micros(200)..Duration::from_millis(3),
            alive_answer: Duration::from_millis(2)..Duration::from_millis(40),
            refused_answer: Duration::from_millis(1)..Duration::from_millis(5),
            final_check_timeout: Duration::from_millis(400),
            check_times_out: 0.02,
            strict_coordinators: true,
        }
    }
}

impl ChaosConfig {
    /// The default world with the protocol's default removal timeout: a member whose
    /// check goes unanswered is unreachable first, and removed only if it stays so.
    pub fn two_stage() -> Self {
        ChaosConfig {
            gms: GmsConfig::default(),
            ..ChaosConfig::default()
        }
    }
}

/// How a crashed process looks to a final check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Death {
    /// The host is up and its port closed: checks are refused (ICMP port unreachable)
    /// within a few milliseconds.
    PortClosed,
    /// The host is gone too: checks time out.
    HostDown,
}

/// Something a trigger does once its condition holds ([`Chaos::when`]).
#[derive(Clone, Copy, Debug)]
pub enum Action {
    /// Crash the member (death drawn from the seed).
    Crash(usize),
    /// Crash the member, losing what it sent that is still in flight: a process dying
    /// with messages in its send queues, so a broadcast reaches only those already served.
    CrashMidSend(usize),
    /// The member asks to leave.
    Leave(usize),
    /// Pause the member for this long.
    Pause(usize, Duration),
}

/// Which recipients of a message a send hook lets it reach.
#[derive(Clone, Debug, PartialEq)]
pub enum Reach {
    /// This part (0..=1) of them, chosen by the seed.
    Fraction(f64),
    /// Only these members (by index), of those it was sent to.
    Only(Vec<usize>),
}

impl fmt::Display for Reach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reach::Fraction(p) => write!(f, "{:.0}% of its recipients", p * 100.0),
            Reach::Only(list) => write!(f, "only members {list:?}"),
        }
    }
}

/// Counters of one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events processed (deliveries, timers, resumes, fault changes).
    pub steps: u64,
    /// Protocol messages sent, one per recipient.
    pub messages: u64,
    /// Coordinator-lease messages sent (requests and grants), one per recipient; not in
    /// `messages`.
    pub lease_messages: u64,
    /// Transmissions (messages, lease messages and heartbeats) lost to cuts and loss.
    pub dropped: u64,
    /// Transmissions delivered twice.
    pub duplicated: u64,
    /// Final checks asked for.
    pub checks: u64,
    /// View installations, one per member per view.
    pub installs: u64,
    /// Distinct episodes of two or more live, unpaused members of one view id reporting
    /// `is_coordinator(now)` at once (invariant 4 when not strict).
    pub coordinator_overlaps: u64,
}

/// How a member stood when it stopped (an ending event: left, forced out, join refused or
/// timed out), for telling a minority that had to stop from one that need not have: the
/// members of its view then, weighed with the protocol's quorum weights (a member that
/// outweighs all the others together is capped below their sum).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stop {
    /// Virtual time.
    pub at: Duration,
    /// Which member.
    pub member: usize,
    /// The ending: "left", "forced out", "join refused", "join timed out".
    pub ending: &'static str,
    /// The reason a forced disconnect gave (empty for the other endings).
    pub reason: String,
    /// The view it held (0 if none).
    pub view: ViewId,
    /// That view's quorum weight.
    pub total: i64,
    /// The weight of its members that were live (running or paused), itself included.
    pub live: i64,
    /// The weight of itself and the live, running members it reached both ways then.
    pub reachable: i64,
    /// The weight of its members that had crashed with their port closed (final checks
    /// refused: positive evidence of death).
    pub refused: i64,
    /// The weight of its members that had crashed with their host down.
    pub host_down: i64,
    /// The weight of its members that had stopped already.
    pub stopped: i64,
    /// How long before a link fault or a pause last began or ended.
    pub since_fault_change: Duration,
}

impl Stop {
    /// True if itself and the members it reached held a strict majority of its view.
    pub fn had_quorum(&self) -> bool {
        self.total > 0 && self.reachable * 2 > self.total
    }
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "view {}: of weight {}, {} live, {} reachable, {} crashed (port closed), {} crashed \
             (host down), {} stopped; {:?} after the last change of link faults or pauses",
            self.view,
            self.total,
            self.live,
            self.reachable,
            self.refused,
            self.host_down,
            self.stopped,
            self.since_fault_change
        )
    }
}

/// A broken invariant, with everything needed to understand and replay it. Boxed: runs
/// return it through every step.
pub struct Failure(Box<Details>);

struct Details {
    seed: u64,
    at: Duration,
    violation: Violation,
    /// The planned schedule, for random runs (empty for scripted ones).
    plan: Vec<String>,
    log: Vec<String>,
    /// Every member's state at the failure.
    members: Vec<String>,
    /// The last steps before it.
    trace: Vec<String>,
}

impl Failure {
    /// The run's seed.
    pub fn seed(&self) -> u64 {
        self.0.seed
    }

    /// Virtual time of the failure.
    pub fn at(&self) -> Duration {
        self.0.at
    }

    /// What broke.
    pub fn violation(&self) -> &Violation {
        &self.0.violation
    }

    /// Which invariant broke.
    pub fn invariant(&self) -> Invariant {
        self.0.violation.invariant
    }

    /// Faults and commands as they were carried out, timed.
    pub fn log(&self) -> &[String] {
        &self.0.log
    }

    /// The same failure, with the plan of the random run that found it.
    pub fn with_plan(mut self, plan: Vec<String>) -> Failure {
        self.0.plan = plan;
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let details = &self.0;
        writeln!(
            f,
            "chaos seed {} failed at {:?} of virtual time: {}",
            details.seed, details.at, details.violation
        )?;
        if !details.plan.is_empty() {
            writeln!(
                f,
                "replay: COHORT_CHAOS_SEED={} cargo test -p cohort-tests --test gms_chaos \
                 replay_one_seed -- --nocapture",
                details.seed
            )?;
        }
        let sections = [
            ("plan", &details.plan),
            ("what was done", &details.log),
            ("members at the failure", &details.members),
            ("last steps", &details.trace),
        ];
        for (title, lines) in sections {
            if lines.is_empty() {
                continue;
            }
            writeln!(f, "{title}:")?;
            for line in lines {
                writeln!(f, "  {line}")?;
            }
        }
        Ok(())
    }
}

// Tests print a returned error with Debug: show the whole report.
impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Failure {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Running,
    /// Timers do not fire and arrivals are held until `until`.
    Paused {
        until: Duration,
    },
    Crashed(Death),
    /// The `Gms` reported an ending event (left, forced out, refused, timed out), and the
    /// process stopped as the `Member` driver does. A final check of it is answered "out",
    /// as the process does once it came back as a new member (auto-reconnect).
    Stopped,
}

/// Something arriving at a member.
#[derive(Clone, Debug)]
enum Inbound {
    Message {
        from: usize,
        message: GmsMessage,
    },
    Heartbeat {
        from: usize,
        /// The view the sender held when it sent it, as a `Heartbeat` datagram says.
        view_id: ViewId,
        /// When it was sent: its acknowledgement counts as a sign of life from then.
        sent: Instant,
    },
    /// The QUIC acknowledgement of a heartbeat, sent by the recipient's runtime as it takes
    /// the heartbeat (so not while it is paused), back over the reverse link.
    Acked {
        from: usize,
        /// When the acknowledged heartbeat was sent: the messenger records an
        /// acknowledgement as heard at its last look before it arrived, and it looks just
        /// before each heartbeat it sends.
        heartbeat_sent: Instant,
    },
    Lease {
        from: usize,
        message: LeaseMessage,
    },
    Reachability {
        from: usize,
        message: ReachabilityMessage,
    },
    Answer {
        suspect: MemberId,
        outcome: CheckOutcome,
        /// The view the suspect held, if it answered as a member (a `ViewCheckAnswer`).
        view_id: Option<ViewId>,
        /// The checker this check probed for (`Output::Probe`), if any.
        asker: Option<MemberId>,
    },
    /// A final check's query reaching its suspect, with the checker's view (a `ViewCheck`).
    Checked {
        by: usize,
        view_id: ViewId,
    },
}

/// What the queue holds.
#[derive(Debug)]
enum Event {
    Arrive {
        to: usize,
        inbound: Inbound,
    },
    /// A member's deadline, as armed; stale if the member has moved it since.
    Timer {
        node: usize,
    },
    /// The end of a pause (ignored if the pause was extended).
    Resume {
        node: usize,
    },
    /// The timed end of a link fault.
    Lift {
        fault: FaultId,
    },
    /// A flapping fault changes phase, and again `period` later until `until`.
    Flip {
        fault: FaultId,
        period: Duration,
        until: Duration,
    },
}

/// Why a member's outputs are being drained, for the reports.
#[derive(Clone, Copy, Debug)]
enum Cause {
    Message(usize),
    Timer,
    Answer,
    Command(&'static str),
}

struct Node {
    gms: Gms,
    life: Life,
    /// The deadline a `Timer` event is queued for.
    armed: Option<Duration>,
    /// What arrived while paused, in order.
    inbox: VecDeque<Inbound>,
    events: Vec<(Duration, MembershipEvent)>,
    /// When it asked to leave (as a member).
    leave_asked: Option<Duration>,
}

type Condition = Box<dyn Fn(&Chaos) -> bool>;
type SendPredicate = Box<dyn Fn(&GmsMessage, &[MemberId]) -> bool>;

struct Trigger {
    label: String,
    condition: Condition,
    action: Action,
}

struct SendHook {
    node: usize,
    label: String,
    matches: SendPredicate,
    reach: Reach,
    action: Action,
}

/// One traced step, formatted only when a failure is reported.
enum Traced {
    Took {
        to: usize,
        inbound: Inbound,
    },
    /// A timer that did more than send heartbeats.
    Timer(usize),
    /// A protocol message lost to a link fault.
    Lost {
        from: usize,
        to: usize,
        message: GmsMessage,
    },
    Emitted(usize, MembershipEvent),
    Note(String),
}

/// `Gms` instances on a faulty network in virtual time. See the [module docs](super).
pub struct Chaos {
    seed: u64,
    config: ChaosConfig,
    start: Instant,
    now: Duration,
    nodes: Vec<Node>,
    index: HashMap<Uuid, usize>,
    /// By (time, member, draw, insertion): members in index order at one instant, and the
    /// arrivals of one instant in the order of their keyed draws, not of `Gms`'s outputs.
    queue: BTreeMap<(Duration, usize, u64, u64), Event>,
    seq: u64,
    links: Links,
    /// Per decision identity: how many draws it had (the last key part of keyed draws).
    draws: HashMap<(u64, usize, usize), u64>,
    invariants: Invariants,
    triggers: Vec<Trigger>,
    hooks: Vec<SendHook>,
    /// With a budget, crashes stay below half of this weight in total.
    crash_budget: Option<i64>,
    crashed_weight: i64,
    stats: Stats,
    overlaps: BTreeSet<(ViewId, Vec<usize>)>,
    first_overlap: Option<String>,
    log: Vec<(Duration, String)>,
    /// Every member that stopped, as it stood then.
    stops: Vec<Stop>,
    /// When a link fault or a pause last began or ended.
    faults_changed: Duration,
    trace: VecDeque<(Duration, Traced)>,
    /// Steps run at the current instant (for the spin guard).
    same_instant: u64,
    /// Counts the changes that [`Chaos::settled`] depends on: events and lives.
    changes: u64,
}

impl Chaos {
    /// An empty world with the default configuration; everything random derives from
    /// `seed`.
    pub fn new(seed: u64) -> Self {
        Chaos::with_config(seed, ChaosConfig::default())
    }

    /// An empty world with `config`.
    pub fn with_config(seed: u64, config: ChaosConfig) -> Self {
        Chaos {
            seed,
            config,
            start: Instant::now(),
            now: Duration::ZERO,
            nodes: Vec::new(),
            index: HashMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            links: Links::default(),
            draws: HashMap::new(),
            invariants: Invariants::new(),
            triggers: Vec::new(),
            hooks: Vec::new(),
            crash_budget: None,
            crashed_weight: 0,
            stats: Stats::default(),
            overlaps: BTreeSet::new(),
            first_overlap: None,
            log: Vec::new(),
            stops: Vec::new(),
            faults_changed: Duration::ZERO,
            trace: VecDeque::new(),
            same_instant: 0,
            changes: 0,
        }
    }

    // ---- members ----

    /// Adds a member (not started) that admits anyone; returns its index.
    pub fn add(&mut self, name: &str, kind: MemberKind) -> usize {
        let i = self.nodes.len();
        let address = SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16));
        let mut rng = Rng::keyed(self.seed, &[DRAW_UUID, i as u64]);
        let uuid = Uuid::from_u64_pair(rng.next_u64(), rng.next_u64());
        let me = MemberId::new(name, address, kind).with_uuid(uuid);
        self.index.insert(uuid, i);
        self.nodes.push(Node {
            gms: Gms::new(me, self.config.gms.clone(), Arc::new(AllowAll)),
            life: Life::Running,
            armed: None,
            inbox: VecDeque::new(),
            events: Vec::new(),
            leave_asked: None,
        });
        i
    }

    /// Forms a cluster of these kinds, fault-free: members are named `m<i>`, locators
    /// `loc<i>`; the first locator (else the first member) founds it and the others ask
    /// it at once. Returns once every one holds the same full view and heartbeats have
    /// flowed for a while.
    pub fn form(&mut self, kinds: &[MemberKind]) -> Result<Vec<usize>, Failure> {
        let members: Vec<usize> = kinds
            .iter()
            .map(|kind| {
                let prefix = if *kind == MemberKind::Locator {
                    "loc"
                } else {
                    "m"
                };
                let name = format!("{prefix}{}", self.nodes.len());
                self.add(&name, *kind)
            })
            .collect();
        let founder = kinds
            .iter()
            .position(|k| *k == MemberKind::Locator)
            .map_or(members.first().copied(), |at| Some(members[at]));
        let Some(founder) = founder else {
            return Ok(members);
        };
        self.found(founder)?;
        for &i in members.iter().filter(|i| **i != founder) {
            self.join(i, founder)?;
        }
        self.run_until("the cluster forms", Duration::from_secs(30), |c| {
            let Some(view) = c.gms(founder).view() else {
                return false;
            };
            view.len() == members.len()
                && members
                    .iter()
                    .all(|i| c.gms(*i).view().is_some_and(|v| v == view))
        })?;
        self.run_for(SETTLE)?;
        self.note("formed".to_owned());
        Ok(members)
    }

    /// Member `i` founds a cluster of itself.
    pub fn found(&mut self, i: usize) -> Result<(), Failure> {
        let now = self.at();
        self.nodes[i].gms.found_cluster(now);
        self.command(i, "founding")
    }

    /// Member `i` asks `via` to admit it.
    pub fn join(&mut self, i: usize, via: usize) -> Result<(), Failure> {
        let (now, to) = (self.at(), self.id(via));
        self.note(format!("{} asks {} to join", self.name(i), self.name(via)));
        self.nodes[i].gms.join(now, to, Credentials::default());
        self.command(i, "joining")
    }

    /// Member `i` asks to leave (a no-op, logged, unless it is a running member).
    pub fn leave(&mut self, i: usize) -> Result<(), Failure> {
        if !self.is_running(i) || !self.gms(i).is_member() {
            self.note(format!("{} cannot leave now", self.name(i)));
            return Ok(());
        }
        self.note(format!("{} asks to leave", self.name(i)));
        self.nodes[i].leave_asked = Some(self.now);
        self.changed();
        let now = self.at();
        self.nodes[i].gms.leave(now);
        self.command(i, "leaving")
    }

    /// Crashes member `i`, its host up or down as the seed says; false if the crash
    /// budget spared it (see [`Chaos::set_crash_budget`]).
    pub fn crash(&mut self, i: usize) -> bool {
        let death = self.death(i);
        self.crash_with(i, death)
    }

    /// Crashes member `i` as `death` says: no more deliveries or timers, ever. What it sent
    /// is still delivered. False if the crash budget spared it.
    pub fn crash_with(&mut self, i: usize, death: Death) -> bool {
        if !self.is_live(i) {
            return false;
        }
        if !self.crash_allowed(i) {
            self.note(format!(
                "{} spared: crashing it would take half the weight",
                self.name(i)
            ));
            return false;
        }
        self.crashed_weight += self.weight_of(i);
        let node = &mut self.nodes[i];
        node.life = Life::Crashed(death);
        node.inbox.clear();
        self.changed();
        let how = match death {
            Death::PortClosed => "port closed",
            Death::HostDown => "host down",
        };
        self.note(format!("{} crashes ({how})", self.name(i)));
        true
    }

    /// Crashes member `i` and loses what it sent that is still in flight (see
    /// [`Action::CrashMidSend`]). False if the crash budget spared it.
    pub fn crash_mid_send(&mut self, i: usize) -> bool {
        if !self.crash(i) {
            return false;
        }
        let before = self.queue.len();
        self.queue.retain(|_, event| {
            !matches!(event, Event::Arrive { inbound: Inbound::Message { from, .. } | Inbound::Heartbeat { from, .. } | Inbound::Acked { from, .. } | Inbound::Lease { from, .. } | Inbound::Reachability { from, .. } | Inbound::Checked { by: from, .. }, .. } if *from == i)
        });
        let lost = before - self.queue.len();
        self.note(format!("{lost} of its transmissions in flight are lost"));
        true
    }

    /// Pauses member `i` for `lasting` (extends a pause under way): its timers do not fire
    /// and what arrives is held; on resuming, the held timer fires late and the held
    /// arrivals are taken in order, late (the seed picks which of the two goes first).
    pub fn pause(&mut self, i: usize, lasting: Duration) {
        let until = self.now + lasting;
        let until = match self.nodes[i].life {
            Life::Running => until,
            Life::Paused { until: before } => before.max(until),
            Life::Crashed(_) | Life::Stopped => return,
        };
        self.nodes[i].life = Life::Paused { until };
        self.faults_changed = self.now;
        self.changed();
        self.note(format!("{} paused for {lasting:?}", self.name(i)));
        self.schedule(until, i, 0, Event::Resume { node: i });
    }

    /// Resumes member `i` now if it is paused.
    pub fn resume(&mut self, i: usize) {
        if !matches!(self.nodes[i].life, Life::Paused { .. }) {
            return;
        }
        self.nodes[i].life = Life::Running;
        self.faults_changed = self.now;
        self.changed();
        let held = std::mem::take(&mut self.nodes[i].inbox);
        let n = self.next_draw(DRAW_RESUME, i, i);
        let timer_first = Rng::keyed(self.seed, &[DRAW_RESUME, i as u64, n]).chance(0.5);
        self.note(format!(
            "{} resumes: {} held arrivals, {} first",
            self.name(i),
            held.len(),
            if timer_first {
                "its timer"
            } else {
                "the arrivals"
            }
        ));
        // Queued at this instant, in order, so each is a step of its own and checked.
        self.nodes[i].armed = Some(self.now);
        if timer_first {
            self.schedule(self.now, i, 0, Event::Timer { node: i });
        }
        for inbound in held {
            self.schedule(self.now, i, 0, Event::Arrive { to: i, inbound });
        }
        if !timer_first {
            self.schedule(self.now, i, 0, Event::Timer { node: i });
        }
    }

    // ---- links ----

    /// Cuts `from`→`to` (one way) until lifted or healed.
    pub fn cut(&mut self, from: usize, to: usize) -> FaultId {
        let what = format!("{} → {}", self.name(from), self.name(to));
        self.link_fault(Effect::Cut, vec![(from, to)], what)
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut_both(&mut self, a: usize, b: usize) -> FaultId {
        self.link_fault(Effect::Cut, vec![(a, b), (b, a)], self.pair(a, b))
    }

    /// Cuts every link, both ways, between members of different `sides`; members on no
    /// side keep all their links.
    pub fn partition(&mut self, sides: &[Vec<usize>]) -> FaultId {
        let mut links = Vec::new();
        for (s, side) in sides.iter().enumerate() {
            for other in sides.iter().skip(s + 1) {
                for &a in side {
                    for &b in other {
                        links.extend([(a, b), (b, a)]);
                    }
                }
            }
        }
        let sides: Vec<String> = sides
            .iter()
            .map(|side| {
                let names: Vec<&str> = side.iter().map(|i| self.name(*i)).collect();
                format!("{{{}}}", names.join(", "))
            })
            .collect();
        self.link_fault(Effect::Cut, links, format!("between {}", sides.join(" | ")))
    }

    /// Cuts member `i` off from every other member added so far, both ways.
    pub fn isolate(&mut self, i: usize) -> FaultId {
        let links = (0..self.nodes.len())
            .filter(|j| *j != i)
            .flat_map(|j| [(i, j), (j, i)])
            .collect();
        let what = format!("every link of {}", self.name(i));
        self.link_fault(Effect::Cut, links, what)
    }

    /// Loses each transmission `from`→`to` with probability `p`.
    pub fn loss(&mut self, from: usize, to: usize, p: f64) -> FaultId {
        let what = format!("{} → {}", self.name(from), self.name(to));
        self.link_fault(Effect::Loss(p), vec![(from, to)], what)
    }

    /// Delays each transmission between `a` and `b` (both ways) by up to `extra` more, so
    /// that later ones overtake earlier ones.
    pub fn delay(&mut self, a: usize, b: usize, extra: Duration) -> FaultId {
        self.link_fault(Effect::Delay(extra), vec![(a, b), (b, a)], self.pair(a, b))
    }

    /// Delivers each transmission between `a` and `b` (both ways) twice with probability
    /// `p`.
    pub fn duplicate(&mut self, a: usize, b: usize, p: f64) -> FaultId {
        self.link_fault(Effect::Duplicate(p), vec![(a, b), (b, a)], self.pair(a, b))
    }

    /// Cuts and opens both directions between `a` and `b` alternately, every `period`,
    /// for `lasting`; it starts cut.
    pub fn flap(&mut self, a: usize, b: usize, period: Duration, lasting: Duration) -> FaultId {
        let what = format!("{}, flapping every {period:?}", self.pair(a, b));
        let fault = self.link_fault(Effect::Cut, vec![(a, b), (b, a)], what);
        let until = self.now + lasting;
        self.schedule(
            self.now + period,
            usize::MAX,
            0,
            Event::Flip {
                fault,
                period,
                until,
            },
        );
        self.lift_after(fault, lasting);
        fault
    }

    /// Ends a link fault now.
    pub fn lift(&mut self, fault: FaultId) {
        if self.links.lift(fault) {
            self.faults_changed = self.now;
            self.note(format!("link fault {} lifted", fault.0));
        }
    }

    /// Ends a link fault `after` from now.
    pub fn lift_after(&mut self, fault: FaultId, after: Duration) {
        self.schedule(self.now + after, usize::MAX, 0, Event::Lift { fault });
    }

    /// Removes every fault: links open, paused members resume, armed triggers and hooks
    /// are dropped.
    pub fn heal(&mut self) {
        self.links.clear();
        self.faults_changed = self.now;
        self.triggers.clear();
        self.hooks.clear();
        self.note("heal: every link open, every trigger dropped".to_owned());
        for i in 0..self.nodes.len() {
            self.resume(i);
        }
    }

    fn link_fault(&mut self, effect: Effect, links: Vec<(usize, usize)>, what: String) -> FaultId {
        let fault = self.links.add(effect, links);
        self.faults_changed = self.now;
        self.note(format!("link fault {}: {effect}, {what}", fault.0));
        fault
    }

    fn pair(&self, a: usize, b: usize) -> String {
        format!("{} ↔ {}", self.name(a), self.name(b))
    }

    // ---- triggers ----

    /// Crashes member `i` right after it sends a message `predicate` accepts (given the
    /// message and its recipients), delivered to `fraction` (0..=1) of its recipients
    /// chosen by the seed: the member died part way through a broadcast. `label` names
    /// the message in the log.
    pub fn crash_after_sending(
        &mut self,
        i: usize,
        label: &str,
        predicate: impl Fn(&GmsMessage, &[MemberId]) -> bool + 'static,
        fraction: f64,
    ) {
        let reach = Reach::Fraction(fraction);
        self.after_sending(i, label, predicate, reach, Action::Crash(i));
    }

    /// Carries out `action` right after member `i` sends a message `predicate` accepts,
    /// which gets only as far as `reach` says (to all its recipients if the action is a
    /// crash the budget does not allow). The action is taken before anything else
    /// happens: a joiner crashed as its coordinator answers it is dead when the answer
    /// arrives. The hook fires once.
    pub fn after_sending(
        &mut self,
        i: usize,
        label: &str,
        predicate: impl Fn(&GmsMessage, &[MemberId]) -> bool + 'static,
        reach: Reach,
        action: Action,
    ) {
        self.note(format!(
            "armed: {action:?} once {} sends {label} (reaching {reach})",
            self.name(i)
        ));
        self.hooks.push(SendHook {
            node: i,
            label: label.to_owned(),
            matches: Box::new(predicate),
            reach,
            action,
        });
    }

    /// Carries out `action` after the first step at whose end `condition` holds. `label`
    /// names the condition in the log.
    pub fn when(
        &mut self,
        label: &str,
        condition: impl Fn(&Chaos) -> bool + 'static,
        action: Action,
    ) {
        self.note(format!("armed: {action:?} when {label}"));
        self.triggers.push(Trigger {
            label: label.to_owned(),
            condition: Box::new(condition),
            action,
        });
    }

    /// Drops the triggers and hooks that have not fired.
    pub fn disarm(&mut self) {
        let lapsed = self.triggers.len() + self.hooks.len();
        self.triggers.clear();
        self.hooks.clear();
        if lapsed > 0 {
            self.note(format!("{lapsed} triggers lapsed"));
        }
    }

    /// Limits crashes (through [`Chaos::crash`] and the triggers and hooks) to a minority:
    /// all of them together below half of `weight` (the formed view's), and the members
    /// down in the newest view below half of its weight. A crash that would break this is
    /// skipped and logged.
    pub fn set_crash_budget(&mut self, weight: i64) {
        self.crash_budget = Some(weight);
    }

    // ---- running ----

    /// Runs the next event; false if nothing is left to do. The invariants are checked
    /// after it.
    pub fn step(&mut self) -> Result<bool, Failure> {
        let Some(((at, ..), event)) = self.queue.pop_first() else {
            return Ok(false);
        };
        if at > self.now {
            self.now = at;
            self.same_instant = 0;
        }
        self.same_instant += 1;
        self.stats.steps += 1;
        if self.same_instant > SPIN_LIMIT {
            return Err(self.failure(Violation::new(
                Invariant::Spin,
                format!("{SPIN_LIMIT} steps at {at:?}"),
            )));
        }
        self.run(event).map_err(|v| self.failure(v))?;
        self.after_step().map_err(|v| self.failure(v))?;
        Ok(true)
    }

    /// Runs every event up to `now + lasting`, then moves the clock there.
    pub fn run_for(&mut self, lasting: Duration) -> Result<(), Failure> {
        let until = self.now + lasting;
        while self
            .queue
            .first_key_value()
            .is_some_and(|((at, ..), _)| *at <= until)
        {
            self.step()?;
        }
        self.now = self.now.max(until);
        Ok(())
    }

    /// Steps until `done` holds (checked before every step); returns the virtual time it
    /// took, or a [`Invariant::Deadline`] failure naming `what` if `limit` passes first.
    pub fn run_until(
        &mut self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&Chaos) -> bool,
    ) -> Result<Duration, Failure> {
        let started = self.now;
        let deadline = started + limit;
        while !done(self) {
            let next = self.queue.first_key_value().map(|((at, ..), _)| *at);
            if next.is_none_or(|at| at > deadline) {
                self.now = self.now.max(deadline);
                return Err(self.failure(Violation::new(
                    Invariant::Deadline,
                    format!("{what}: not within {limit:?}"),
                )));
            }
            self.step()?;
        }
        Ok(self.now - started)
    }

    /// A failure of [`Invariant::Expectation`] unless `holds`.
    pub fn expect(&self, holds: bool, what: impl Into<String>) -> Result<(), Failure> {
        if holds {
            return Ok(());
        }
        Err(self.failure(Violation::new(Invariant::Expectation, what)))
    }

    /// Adds a timed line to the log that failures print.
    pub fn note(&mut self, line: String) {
        self.traced(Traced::Note(line.clone()));
        self.log.push((self.now, line));
    }

    // ---- looking ----

    /// The seed everything derives from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Virtual time since the start.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// The current virtual time as the `Instant` the members are given.
    pub fn at(&self) -> Instant {
        self.start + self.now
    }

    /// How many members were ever added.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True before the first member is added.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Member `i`'s state machine.
    pub fn gms(&self, i: usize) -> &Gms {
        &self.nodes[i].gms
    }

    /// Member `i`'s identity.
    pub fn id(&self, i: usize) -> MemberId {
        self.gms(i).me().clone()
    }

    /// Member `i`'s name.
    pub fn name(&self, i: usize) -> &str {
        self.gms(i).me().name()
    }

    /// The index of the member with this identity.
    pub fn index_of(&self, member: &MemberId) -> Option<usize> {
        self.index.get(&member.uuid()).copied()
    }

    /// True unless member `i` crashed or stopped (a paused member is live).
    pub fn is_live(&self, i: usize) -> bool {
        matches!(self.nodes[i].life, Life::Running | Life::Paused { .. })
    }

    /// True if member `i` is live and not paused.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].life == Life::Running
    }

    /// True if member `i` crashed.
    pub fn is_crashed(&self, i: usize) -> bool {
        matches!(self.nodes[i].life, Life::Crashed(_))
    }

    /// How member `i` died, if it crashed.
    pub fn death_of(&self, i: usize) -> Option<Death> {
        match self.nodes[i].life {
            Life::Crashed(death) => Some(death),
            _ => None,
        }
    }

    /// The events member `i` reported, oldest first.
    pub fn events_of(&self, i: usize) -> impl Iterator<Item = &MembershipEvent> {
        self.nodes[i].events.iter().map(|(_, e)| e)
    }

    /// A count that moves whenever something [`Chaos::settled`] looks at may have changed
    /// (an event, a crash, a pause): while it stands still, so does the verdict.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Every member that stopped so far, as it stood then, in order.
    pub fn stops(&self) -> &[Stop] {
        &self.stops
    }

    /// How member `i` stands now, about to stop with `ending` (see [`Stop`]).
    fn standing(&self, i: usize, ending: &'static str) -> Stop {
        let reason = match self.nodes[i].events.last() {
            Some((_, MembershipEvent::ForcedDisconnect { reason })) => reason.clone(),
            _ => String::new(),
        };
        let mut stop = Stop {
            at: self.now,
            member: i,
            ending,
            reason,
            view: self.gms(i).view().map_or(ViewId(0), View::id),
            total: 0,
            live: 0,
            reachable: 0,
            refused: 0,
            host_down: 0,
            stopped: 0,
            since_fault_change: self.now - self.faults_changed,
        };
        let Some(view) = self.gms(i).view() else {
            return stop;
        };
        for (member, weight) in quorum_weights(view) {
            stop.total += weight;
            let Some(j) = self.index_of(&member) else {
                continue;
            };
            match self.nodes[j].life {
                Life::Running | Life::Paused { .. } => {
                    stop.live += weight;
                    if j == i || (self.is_running(j) && self.links.open_both(i, j)) {
                        stop.reachable += weight;
                    }
                }
                Life::Crashed(Death::PortClosed) => stop.refused += weight,
                Life::Crashed(Death::HostDown) => stop.host_down += weight,
                Life::Stopped => stop.stopped += weight,
            }
        }
        stop
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Every install seen, as checked.
    pub fn invariants(&self) -> &Invariants {
        &self.invariants
    }

    /// The newest view a live member holds while in it.
    pub fn newest_view(&self) -> Option<View> {
        (0..self.nodes.len())
            .filter(|i| self.is_live(*i) && self.gms(*i).is_member())
            .filter_map(|i| self.gms(i).view())
            .max_by_key(|v| v.id())
            .cloned()
    }

    /// Who coordinates: the live member reporting `is_coordinator(now)` with the newest view,
    /// else the member that will once the dead are found: the coordinator of the newest
    /// view among its live members.
    pub fn coordinator(&self) -> Option<usize> {
        let reporting = (0..self.nodes.len())
            .filter(|i| self.is_live(*i) && self.gms(*i).is_coordinator(self.at()))
            .max_by_key(|i| self.gms(*i).view().map(View::id));
        reporting.or_else(|| self.coordinator_among(|_| true))
    }

    /// Who would take over from [`Chaos::coordinator`]: the coordinator of the newest view
    /// among its live members but that one.
    pub fn successor(&self) -> Option<usize> {
        let coordinator = self.coordinator();
        self.coordinator_among(|i| Some(i) != coordinator)
    }

    /// The coordinator of the newest view among its live members that `keep` accepts.
    fn coordinator_among(&self, keep: impl Fn(usize) -> bool) -> Option<usize> {
        let view = self.newest_view()?;
        let next = view
            .coordinator_among(|m| self.index_of(m).is_some_and(|i| self.is_live(i) && keep(i)))?;
        self.index_of(next)
    }

    /// Invariants 5 and 6: [`Chaos::one_view`], and besides nobody live is still
    /// joining, and every member that asked to leave is out.
    pub fn settled(&self) -> Result<(), Violation> {
        let mut pending = Vec::new();
        for i in (0..self.nodes.len()).filter(|i| self.is_live(*i)) {
            if let Some(through) = self.gms(i).joining_through() {
                pending.push(format!(
                    "{} is still joining through {through}",
                    self.name(i)
                ));
            }
            if let Some(asked) = self.nodes[i].leave_asked {
                pending.push(format!(
                    "{} asked to leave at {asked:?} and is still running",
                    self.name(i)
                ));
            }
        }
        match (self.one_view(), pending.is_empty()) {
            (Ok(()), true) => Ok(()),
            (Ok(()), false) => Err(Violation::new(
                Invariant::OneViewAfterHeal,
                pending.join("; "),
            )),
            (Err(violation), _) => {
                pending.insert(0, violation.detail);
                Err(Violation::new(violation.invariant, pending.join("; ")))
            }
        }
    }

    /// The members' side of invariants 5 and 6: every live member that a newer installed
    /// view left out knows it is out (5), and the live members that are members hold one
    /// view, made of exactly them (6).
    pub fn one_view(&self) -> Result<(), Violation> {
        let members: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.is_live(*i) && self.gms(*i).is_member())
            .collect();
        let mut removed = Vec::new();
        let mut other = Vec::new();
        for &i in &members {
            let Some(view) = self.gms(i).view() else {
                continue;
            };
            if let Some(out) = self.newer_view_without(i, view.id()) {
                removed.push(format!(
                    "{} still believes it is in (it holds view {}), but view {out} left it out",
                    self.name(i),
                    view.id()
                ));
            }
        }
        if let Some(newest) = self.newest_view() {
            for &i in &members {
                if self.gms(i).view() != Some(&newest) {
                    let held = self.gms(i).view().map_or(ViewId(0), View::id);
                    other.push(format!(
                        "{} holds view {held}, not the newest, {newest}",
                        self.name(i)
                    ));
                }
            }
            for member in newest.members() {
                let i = self.index_of(member);
                if i.is_none_or(|i| !members.contains(&i)) {
                    let state = i.map_or("unknown", |i| self.life_word(i));
                    other.push(format!("{newest} still holds {member} ({state})"));
                }
            }
        }
        let invariant = if removed.is_empty() {
            Invariant::OneViewAfterHeal
        } else {
            Invariant::RemovedLearnOut
        };
        removed.extend(other);
        if removed.is_empty() {
            Ok(())
        } else {
            Err(Violation::new(invariant, removed.join("; ")))
        }
    }

    /// The id of an installed view newer than `than` that leaves member `i` out.
    fn newer_view_without(&self, i: usize, than: ViewId) -> Option<ViewId> {
        let uuid = self.id(i).uuid();
        let newest = self.invariants.newest()?;
        (than.0 + 1..=newest.0).map(ViewId).find(|id| {
            self.invariants
                .members_of(*id)
                .is_some_and(|members| !members.contains(&uuid))
        })
    }

    // ---- the machinery ----

    fn run(&mut self, event: Event) -> Result<(), Violation> {
        match event {
            Event::Arrive { to, inbound } => match self.nodes[to].life {
                Life::Running => self.take(to, inbound),
                Life::Paused { .. } => {
                    self.nodes[to].inbox.push_back(inbound);
                    Ok(())
                }
                Life::Crashed(_) | Life::Stopped => Ok(()),
            },
            Event::Timer { node } => self.timer(node),
            Event::Resume { node } => {
                if matches!(self.nodes[node].life, Life::Paused { until } if until <= self.now) {
                    self.resume(node);
                }
                Ok(())
            }
            Event::Lift { fault } => {
                self.lift(fault);
                Ok(())
            }
            Event::Flip {
                fault,
                period,
                until,
            } => {
                let switched = self.links.switch(fault).is_some();
                if switched {
                    self.faults_changed = self.now;
                }
                if switched && self.now + period < until {
                    let next = Event::Flip {
                        fault,
                        period,
                        until,
                    };
                    self.schedule(self.now + period, usize::MAX, 0, next);
                }
                Ok(())
            }
        }
    }

    /// Member `to` takes what arrived.
    fn take(&mut self, to: usize, inbound: Inbound) -> Result<(), Violation> {
        let now = self.at();
        let cause = match &inbound {
            Inbound::Message { from, message } => {
                self.traced(Traced::Took {
                    to,
                    inbound: inbound.clone(),
                });
                let from_id = self.id(*from);
                self.nodes[to]
                    .gms
                    .handle_message(now, &from_id, message.clone());
                Cause::Message(*from)
            }
            Inbound::Heartbeat {
                from,
                view_id,
                sent,
            } => {
                let from_id = self.id(*from);
                self.nodes[to].gms.heard_from(&from_id, now);
                self.nodes[to].gms.heard_view(now, &from_id, *view_id);
                let ack = Inbound::Acked {
                    from: to,
                    heartbeat_sent: *sent,
                };
                self.transmit(to, *from, ack);
                Cause::Message(*from)
            }
            Inbound::Acked {
                from,
                heartbeat_sent,
            } => {
                let from_id = self.id(*from);
                self.nodes[to].gms.heard_from(&from_id, *heartbeat_sent);
                Cause::Message(*from)
            }
            Inbound::Lease { from, message } => {
                let from_id = self.id(*from);
                let before = self.gms(to).coordinator_until();
                self.nodes[to].gms.handle_lease(now, &from_id, *message);
                // Lease traffic is most of the steps: only a lease won or extended is
                // traced, as what decides invariant 4.
                if let Some(until) = self
                    .gms(to)
                    .coordinator_until()
                    .filter(|until| Some(*until) != before)
                {
                    let view = self.gms(to).view().map_or(ViewId(0), View::id);
                    let left = until.saturating_duration_since(now);
                    let line = format!(
                        "{} holds the lease for view {view} for {left:?} more",
                        self.name(to)
                    );
                    self.traced(Traced::Note(line));
                }
                Cause::Message(*from)
            }
            Inbound::Reachability { from, message } => {
                let from_id = self.id(*from);
                self.traced(Traced::Took {
                    to,
                    inbound: inbound.clone(),
                });
                self.nodes[to]
                    .gms
                    .handle_reachability(now, &from_id, message.clone());
                Cause::Message(*from)
            }
            Inbound::Answer {
                suspect,
                outcome,
                view_id,
                asker,
            } => {
                self.traced(Traced::Took {
                    to,
                    inbound: inbound.clone(),
                });
                match asker {
                    Some(asker) => {
                        let gms = &mut self.nodes[to].gms;
                        gms.probe_result(now, asker, suspect, *outcome);
                        if let Some(view_id) = view_id {
                            gms.heard_view(now, suspect, *view_id);
                        }
                    }
                    None => self.nodes[to]
                        .gms
                        .check_result(now, suspect, *outcome, *view_id),
                }
                Cause::Answer
            }
            Inbound::Checked { by, view_id } => {
                self.traced(Traced::Took {
                    to,
                    inbound: inbound.clone(),
                });
                let by_id = self.id(*by);
                self.nodes[to].gms.heard_view(now, &by_id, *view_id);
                Cause::Message(*by)
            }
        };
        self.drain(to, cause)
    }

    fn timer(&mut self, node: usize) -> Result<(), Violation> {
        if self.nodes[node].armed != Some(self.now) {
            return Ok(());
        }
        self.nodes[node].armed = None;
        if !self.is_running(node) {
            // Paused: `resume` fires it. Crashed or stopped: never.
            return Ok(());
        }
        // Armed at its deadline, or at a resume (where nothing may be due: `Gms` takes an
        // early call as a no-op, as a driver's spurious wake-up).
        let now = self.at();
        self.nodes[node].gms.handle_timeout(now);
        self.drain(node, Cause::Timer)
    }

    fn command(&mut self, i: usize, what: &'static str) -> Result<(), Failure> {
        self.drain(i, Cause::Command(what))
            .map_err(|v| self.failure(v))?;
        self.after_step().map_err(|v| self.failure(v))
    }

    /// Carries out member `i`'s outputs in order, as the `Member` driver does, then
    /// re-arms its timer. An ending event stops the member (the driver stops there).
    fn drain(&mut self, i: usize, cause: Cause) -> Result<(), Violation> {
        // Heartbeat ticks are most of the timers: only those that did more are traced.
        let mut untraced_timer = matches!(cause, Cause::Timer);
        while self.is_running(i) {
            let Some(output) = self.nodes[i].gms.poll_output() else {
                break;
            };
            if untraced_timer
                && !matches!(
                    output,
                    Output::Heartbeat { .. }
                        | Output::Knock { .. }
                        | Output::Lease { .. }
                        | Output::Prepared(_)
                )
            {
                untraced_timer = false;
                self.traced(Traced::Timer(i));
            }
            match output {
                Output::Send { to, message } => self.send(i, &to, message)?,
                Output::Heartbeat { to } => self.heartbeat(i, &to),
                // The world models no ICMP for datagrams (only for final checks): a knock
                // reaches nothing.
                Output::Knock { .. } => {}
                // The world has no messenger whose senders' rule it would widen.
                Output::Prepared(_) => {}
                Output::Lease { to, message } => self.lease(i, &to, message),
                Output::Reachability { to, message } => self.reachability(i, &to, &message),
                Output::Probe { member, asker } => self.check(i, member, Some(asker)),
                Output::Check { member } => self.check(i, member, None),
                Output::Event(event) => self.event(i, event, cause)?,
            }
        }
        if self.is_running(i) {
            self.arm(i);
        }
        Ok(())
    }

    /// Something [`Chaos::settled`] depends on changed.
    fn changed(&mut self) {
        self.changes += 1;
    }

    fn arm(&mut self, i: usize) {
        let Some(deadline) = self.gms(i).poll_timeout() else {
            return;
        };
        // A deadline already past fires at once (the spin guard catches one that never
        // moves).
        let at = deadline.saturating_duration_since(self.start).max(self.now);
        if self.nodes[i].armed != Some(at) {
            self.nodes[i].armed = Some(at);
            self.schedule(at, i, 0, Event::Timer { node: i });
        }
    }

    fn send(&mut self, i: usize, to: &[MemberId], message: GmsMessage) -> Result<(), Violation> {
        let recipients: Vec<usize> = to.iter().filter_map(|m| self.index_of(m)).collect();
        let hook = self
            .hooks
            .iter()
            .position(|h| h.node == i && (h.matches)(&message, to));
        let Some(hook) = hook.map(|at| self.hooks.remove(at)) else {
            for j in recipients {
                self.stats.messages += 1;
                self.transmit(
                    i,
                    j,
                    Inbound::Message {
                        from: i,
                        message: message.clone(),
                    },
                );
            }
            return Ok(());
        };
        let reached: Vec<usize> = match &hook.reach {
            Reach::Fraction(fraction) => {
                let n = self.next_draw(DRAW_HOOK, i, i);
                let count = (fraction * recipients.len() as f64).round() as usize;
                let mut rng = Rng::keyed(self.seed, &[DRAW_HOOK, i as u64, n]);
                let mut chosen = rng.sample(recipients.len(), count);
                chosen.sort_unstable();
                chosen.into_iter().map(|k| recipients[k]).collect()
            }
            Reach::Only(only) => recipients
                .iter()
                .copied()
                .filter(|j| only.contains(j))
                .collect(),
        };
        let spared = match hook.action {
            Action::Crash(j) | Action::CrashMidSend(j) => !self.crash_allowed(j),
            Action::Leave(_) | Action::Pause(..) => false,
        };
        let served = if spared { &recipients } else { &reached };
        for &j in served {
            self.stats.messages += 1;
            self.transmit(
                i,
                j,
                Inbound::Message {
                    from: i,
                    message: message.clone(),
                },
            );
        }
        let names = |list: &[usize]| -> String {
            let names: Vec<&str> = list.iter().map(|j| self.name(*j)).collect();
            names.join(", ")
        };
        let line = format!(
            "{} sent {} to [{}] of [{}]",
            self.name(i),
            hook.label,
            names(served),
            names(&recipients)
        );
        self.note(line);
        self.act(hook.action)
    }

    /// Heartbeats go through the same link faults as messages.
    fn heartbeat(&mut self, i: usize, to: &[MemberId]) {
        let recipients: Vec<usize> = to.iter().filter_map(|m| self.index_of(m)).collect();
        let view_id = self.nodes[i].gms.view().map_or(ViewId(0), View::id);
        let sent = self.at();
        for j in recipients {
            let heartbeat = Inbound::Heartbeat {
                from: i,
                view_id,
                sent,
            };
            self.transmit(i, j, heartbeat);
        }
    }

    /// Lease messages go through the same link faults as messages and heartbeats.
    fn lease(&mut self, i: usize, to: &[MemberId], message: LeaseMessage) {
        let recipients: Vec<usize> = to.iter().filter_map(|m| self.index_of(m)).collect();
        for j in recipients {
            self.stats.lease_messages += 1;
            self.transmit(i, j, Inbound::Lease { from: i, message });
        }
    }

    /// Reachability notices go through the same link faults too.
    fn reachability(&mut self, i: usize, to: &[MemberId], message: &ReachabilityMessage) {
        let recipients: Vec<usize> = to.iter().filter_map(|m| self.index_of(m)).collect();
        for j in recipients {
            let message = message.clone();
            self.transmit(i, j, Inbound::Reachability { from: i, message });
        }
    }

    /// Queues one transmission `from`→`to` through the link's faults.
    fn transmit(&mut self, from: usize, to: usize, inbound: Inbound) {
        let link = self.links.link(from, to);
        let tag = match inbound {
            Inbound::Lease { .. } => DRAW_LEASE,
            Inbound::Reachability { .. } => DRAW_REACHABILITY,
            Inbound::Acked { .. } => DRAW_ACK,
            _ => DRAW_LINK,
        };
        let n = self.next_draw(tag, from, to);
        let mut rng = Rng::keyed(self.seed, &[tag, from as u64, to as u64, n]);
        let lost = rng.chance(link.loss);
        if link.cut || lost {
            self.stats.dropped += 1;
            if let Inbound::Message { message, .. } = inbound {
                self.traced(Traced::Lost { from, to, message });
            }
            return;
        }
        let copies = if rng.chance(link.duplicate) { 2 } else { 1 };
        self.stats.duplicated += copies - 1;
        for _ in 0..copies {
            let delay =
                rng.within(&self.config.latency) + rng.within(&(Duration::ZERO..link.extra_delay));
            let key = rng.next_u64();
            let event = Event::Arrive {
                to,
                inbound: inbound.clone(),
            };
            self.schedule(self.now + delay, to, key, event);
        }
    }

    /// A final check of `suspect` by `checker`, answered as the module docs say: the query
    /// reaches a suspect that runs (or is paused) with the checker's view id, and the
    /// answer of a member carries its own.
    fn check(&mut self, checker: usize, suspect: MemberId, asker: Option<MemberId>) {
        self.stats.checks += 1;
        let target = self.index_of(&suspect);
        let j = target.unwrap_or(usize::MAX);
        let n = self.next_draw(DRAW_CHECK, checker, j);
        let mut rng = Rng::keyed(self.seed, &[DRAW_CHECK, checker as u64, j as u64, n]);
        let timeout = (
            self.config.final_check_timeout,
            CheckOutcome::NoAnswer,
            None,
        );
        // Whether the query reaches a process that takes it, now or once its pause ends.
        let mut reached = false;
        let (delay, outcome, view_id) = match target {
            Some(j) if self.links.open_both(checker, j) => match self.nodes[j].life {
                Life::Running if rng.chance(self.config.check_times_out) => timeout,
                Life::Running => {
                    reached = true;
                    let (outcome, view_id) = answer_of(&self.nodes[j].gms);
                    (rng.within(&self.config.alive_answer), outcome, view_id)
                }
                Life::Crashed(Death::PortClosed) => (
                    rng.within(&self.config.refused_answer),
                    CheckOutcome::Refused,
                    None,
                ),
                Life::Stopped => (
                    rng.within(&self.config.alive_answer),
                    CheckOutcome::Out,
                    None,
                ),
                Life::Paused { .. } => {
                    reached = true;
                    timeout
                }
                Life::Crashed(Death::HostDown) => timeout,
            },
            _ => timeout,
        };
        if reached {
            let key = rng.next_u64();
            let view_id = self.nodes[checker].gms.view().map_or(ViewId(0), View::id);
            let event = Event::Arrive {
                to: j,
                inbound: Inbound::Checked {
                    by: checker,
                    view_id,
                },
            };
            self.schedule(self.now + delay / 2, j, key, event);
        }
        let key = rng.next_u64();
        let event = Event::Arrive {
            to: checker,
            inbound: Inbound::Answer {
                suspect,
                outcome,
                view_id,
                asker,
            },
        };
        self.schedule(self.now + delay, checker, key, event);
    }

    fn event(&mut self, i: usize, event: MembershipEvent, cause: Cause) -> Result<(), Violation> {
        if let MembershipEvent::ViewInstalled { view, .. } = &event {
            self.stats.installs += 1;
            let how = match cause {
                Cause::Message(from) => format!("on a message from {}", self.name(from)),
                Cause::Timer => "on a timer".to_owned(),
                Cause::Answer => "on a final check's answer".to_owned(),
                Cause::Command(what) => format!("when {what}"),
            };
            let me = self.id(i);
            self.invariants.installed(&me, &how, view)?;
        }
        let ending = match &event {
            MembershipEvent::Left => Some("left"),
            MembershipEvent::ForcedDisconnect { .. } => Some("forced out"),
            MembershipEvent::JoinRejected { .. } => Some("join refused"),
            MembershipEvent::JoinTimedOut => Some("join timed out"),
            _ => None,
        };
        if !matches!(event, MembershipEvent::Suspect { .. }) {
            self.traced(Traced::Emitted(i, event.clone()));
        }
        self.nodes[i].events.push((self.now, event));
        self.changed();
        if let Some(ending) = ending {
            let stop = self.standing(i, ending);
            self.nodes[i].life = Life::Stopped;
            self.note(format!("{} stops: {ending} ({stop})", self.name(i)));
            self.stops.push(stop);
        }
        Ok(())
    }

    /// Invariant 4 and the triggers, after every step.
    fn after_step(&mut self) -> Result<(), Violation> {
        self.coordinators()?;
        let mut k = 0;
        while k < self.triggers.len() {
            if !(self.triggers[k].condition)(self) {
                k += 1;
                continue;
            }
            let trigger = self.triggers.remove(k);
            self.note(format!("trigger: {}", trigger.label));
            self.act(trigger.action)?;
        }
        Ok(())
    }

    fn act(&mut self, action: Action) -> Result<(), Violation> {
        match action {
            Action::Crash(i) => {
                self.crash(i);
            }
            Action::CrashMidSend(i) => {
                self.crash_mid_send(i);
            }
            Action::Pause(i, lasting) => self.pause(i, lasting),
            Action::Leave(i) => {
                if self.is_running(i) && self.gms(i).is_member() {
                    self.nodes[i].leave_asked = Some(self.now);
                    self.changed();
                    let now = self.at();
                    self.nodes[i].gms.leave(now);
                    self.note(format!("{} asks to leave", self.name(i)));
                    self.drain(i, Cause::Command("leaving"))?;
                }
            }
        }
        Ok(())
    }

    /// Invariant 4: at most one live, unpaused member of each view id coordinates, asked of
    /// every running member at the current virtual time after every step. A lease only
    /// begins at a step and only ends with time, so two leases that overlap at all do so
    /// at the step that began the later one: looking after every step misses none.
    fn coordinators(&mut self) -> Result<(), Violation> {
        let now = self.at();
        let mut by_view: BTreeMap<ViewId, Vec<usize>> = BTreeMap::new();
        for i in 0..self.nodes.len() {
            if self.is_running(i) && self.gms(i).is_coordinator(now) {
                let id = self.gms(i).view().map_or(ViewId(0), View::id);
                by_view.entry(id).or_default().push(i);
            }
        }
        for (id, list) in by_view {
            if list.len() < 2 {
                continue;
            }
            let names: Vec<&str> = list.iter().map(|i| self.name(*i)).collect();
            let detail = format!("{} coordinate view {id} at once", names.join(" and "));
            if self.config.strict_coordinators {
                return Err(Violation::new(Invariant::OneCoordinator, detail));
            }
            if self.overlaps.insert((id, list)) {
                self.stats.coordinator_overlaps += 1;
                self.first_overlap.get_or_insert(detail);
            }
        }
        Ok(())
    }

    /// The first overlap of coordinators seen (invariant 4 when not strict).
    pub fn first_coordinator_overlap(&self) -> Option<&str> {
        self.first_overlap.as_deref()
    }

    fn schedule(&mut self, at: Duration, node: usize, key: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((at, node, key, self.seq), event);
    }

    fn next_draw(&mut self, tag: u64, a: usize, b: usize) -> u64 {
        let n = self.draws.entry((tag, a, b)).or_default();
        *n += 1;
        *n
    }

    fn death(&mut self, i: usize) -> Death {
        let n = self.next_draw(DRAW_DEATH, i, i);
        if Rng::keyed(self.seed, &[DRAW_DEATH, i as u64, n]).chance(0.5) {
            Death::PortClosed
        } else {
            Death::HostDown
        }
    }

    /// The weight of member `i` in the newest view (in the protocol's terms: member 10,
    /// the oldest member of kind Member 5 more, locator 3, admin 0).
    /// Zero outside that view: a joiner that dies takes no weight from the cluster.
    fn weight_of(&self, i: usize) -> i64 {
        let me = self.gms(i).me();
        self.newest_view()
            .filter(|view| view.contains(me))
            .map_or(0, |view| weight(&view, me))
    }

    fn crash_allowed(&self, i: usize) -> bool {
        let Some(budget) = self.crash_budget else {
            return true;
        };
        let own = self.weight_of(i);
        if (self.crashed_weight + own) * 2 >= budget {
            return false;
        }
        let Some(view) = self.newest_view() else {
            return true;
        };
        let down: i64 = view
            .members()
            .iter()
            .filter(|m| self.index_of(m).is_none_or(|j| j == i || !self.is_live(j)))
            .map(|m| weight(&view, m))
            .sum();
        down * 2 < view_weight(&view)
    }

    fn traced(&mut self, step: Traced) {
        if self.trace.len() == TRACE_LEN {
            self.trace.pop_front();
        }
        self.trace.push_back((self.now, step));
    }

    fn life_word(&self, i: usize) -> &'static str {
        match self.nodes[i].life {
            Life::Running => "running",
            Life::Paused { .. } => "paused",
            Life::Crashed(_) => "crashed",
            Life::Stopped => "stopped",
        }
    }

    /// The faults and commands carried out so far, one timed line each.
    pub fn log(&self) -> Vec<String> {
        self.log
            .iter()
            .map(|(at, line)| format!("{at:>14?}  {line}"))
            .collect()
    }

    /// A failure report of `violation` as things stand.
    pub fn failure(&self, violation: Violation) -> Failure {
        let members = (0..self.nodes.len())
            .map(|i| {
                let gms = self.gms(i);
                let role = if gms.is_coordinator(self.at()) {
                    "coordinator"
                } else if gms.is_member() {
                    "member"
                } else if gms.joining_through().is_some() {
                    "joining"
                } else {
                    "out"
                };
                let view = gms.view().map_or("no view".to_owned(), View::to_string);
                let prepared = gms
                    .prepared()
                    .map_or(String::new(), |p| format!(", prepared {p}"));
                let state = if gms.is_member() {
                    format!("\n      {gms:?}")
                } else {
                    String::new()
                };
                format!(
                    "{} {} {role}: {view}{prepared}{state}",
                    self.name(i),
                    self.life_word(i)
                )
            })
            .collect();
        let trace = self
            .trace
            .iter()
            .map(|(at, step)| format!("{at:>14?}  {}", self.describe(step)))
            .collect();
        Failure(Box::new(Details {
            seed: self.seed,
            at: self.now,
            violation,
            plan: Vec::new(),
            log: self.log(),
            members,
            trace,
        }))
    }

    fn describe(&self, step: &Traced) -> String {
        match step {
            Traced::Took {
                to,
                inbound: Inbound::Message { from, message },
            } => format!(
                "{} → {}: {}",
                self.name(*from),
                self.name(*to),
                compact(&format!("{message:?}"))
            ),
            Traced::Took {
                to,
                inbound:
                    Inbound::Answer {
                        suspect,
                        outcome,
                        view_id,
                        ..
                    },
            } => match view_id {
                Some(view_id) => format!(
                    "{}: final check of {suspect}: {outcome:?} (view {view_id})",
                    self.name(*to)
                ),
                None => format!("{}: final check of {suspect}: {outcome:?}", self.name(*to)),
            },
            Traced::Took {
                to,
                inbound: Inbound::Checked { by, view_id },
            } => format!(
                "{} checked by {} (view {view_id})",
                self.name(*to),
                self.name(*by)
            ),
            Traced::Took {
                to,
                inbound: Inbound::Heartbeat { from, view_id, .. },
            } => format!(
                "{} heard {} (view {view_id})",
                self.name(*to),
                self.name(*from)
            ),
            Traced::Took {
                to,
                inbound: Inbound::Acked { from, .. },
            } => format!("{} acknowledged by {}", self.name(*to), self.name(*from)),
            Traced::Took {
                to,
                inbound: Inbound::Lease { from, message },
            } => format!("{} → {}: {message:?}", self.name(*from), self.name(*to)),
            Traced::Took {
                to,
                inbound: Inbound::Reachability { from, message },
            } => format!(
                "{} → {}: {}",
                self.name(*from),
                self.name(*to),
                compact(&format!("{message:?}"))
            ),
            Traced::Timer(i) => format!("{}: timer", self.name(*i)),
            Traced::Lost { from, to, message } => format!(
                "{} → {} lost: {}",
                self.name(*from),
                self.name(*to),
                compact(&format!("{message:?}"))
            ),
            Traced::Emitted(i, MembershipEvent::ViewInstalled { view, .. }) => {
                format!("{} installs {view}", self.name(*i))
            }
            Traced::Emitted(i, event) => {
                format!("{}: {}", self.name(*i), compact(&format!("{event:?}")))
            }
            Traced::Note(line) => line.clone(),
        }
    }
}

/// How a running member answers a final check, as the `Member` driver's `ViewCheck` handler
/// does: by its standing, with its view id as a member.
fn answer_of(gms: &Gms) -> (CheckOutcome, Option<ViewId>) {
    match gms.standing() {
        Standing::Member => (
            CheckOutcome::Alive,
            Some(gms.view().map_or(ViewId(0), View::id)),
        ),
        Standing::Joining => (CheckOutcome::Alive, None),
        Standing::Out => (CheckOutcome::Out, None),
    }
}

/// The protocol's weight of `member` in `view` (see `Chaos::weight_of`).
fn weight(view: &View, member: &MemberId) -> i64 {
    let base = match member.kind() {
        MemberKind::Locator => 3,
        MemberKind::Admin => 0,
        MemberKind::Member => 10,
    };
    let lead = view
        .members()
        .iter()
        .find(|m| m.kind() == MemberKind::Member);
    base + if lead == Some(member) { 5 } else { 0 }
}

/// The protocol's weight of a whole view, for network-partition detection.
pub fn view_weight(view: &View) -> i64 {
    view.members().iter().map(|m| weight(view, m)).sum()
}

/// The protocol's quorum weights of `view`'s members: `weight`, except that in a view of
/// three or more members with weight, a member outweighing all the others together is
/// capped just below their sum (as `Quorum` does).
pub fn quorum_weights(view: &View) -> Vec<(MemberId, i64)> {
    let mut weights: Vec<(MemberId, i64)> = view
        .members()
        .iter()
        .map(|m| (m.clone(), weight(view, m)))
        .collect();
    let total: i64 = weights.iter().map(|(_, w)| w).sum();
    if weights.iter().filter(|(_, w)| *w > 0).count() >= 3 {
        for (_, w) in &mut weights {
            *w = (*w).min(total - *w - 1);
        }
    }
    weights
}

/// A message's Debug text, shortened: member ids by name only (`m1@127.0.0.1:20001(…)`
/// becomes `m1`), and cut at [`TRACE_WIDTH`].
fn compact(text: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for c in text.chars() {
        match (skipping, c) {
            (false, '@') => skipping = true,
            (true, ')') => skipping = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
        if out.len() >= TRACE_WIDTH {
            out.push('…');
            break;
        }
    }
    out
}
