//! The membership protocol alone, in virtual time: [`Sim`] runs [`Gms`] state machines on a
//! simulated network with seeded latency and checks invariants at every view installation.
//!
//! ```text
//! Gms::poll_output ─┬─ Send      ─► delivered after 0.2–2.2 ms (seeded), counted
//!                   ├─ Lease     ─► delivered the same way to handle_lease, counted apart
//!                   ├─ Heartbeat ─► heard_from at once on every live recipient, and
//!                   │               its acknowledgement at once at the sender (not counted)
//!                   ├─ Check     ─► answered at once with the truth (`dead[i]`: its
//!                   │               port refuses; out of the cluster: out; else alive)
//!                   └─ Event     ─► invariants checked, then kept
//! Gms::poll_timeout ─► a timer; `step` runs the earliest delivery or timer
//! ```
//!
//! Checked at every installation ([`Invariants`], shared with [`chaos`](crate::chaos)):
//! every installer of view N agrees on its members, each member's view ids only grow, and
//! no member appears in a view after one that removed it. A violation panics: it is a
//! protocol bug, never a measurement.
//!
//! Heartbeats re-arm timers for ever, so the simulation never runs out of work: step it
//! with [`Sim::run_until`] (or [`Sim::try_run_until`]), which bound the virtual time. A
//! crash is `dead[i] = true`: the member gets no more deliveries or timers, its heartbeats
//! stop, and final checks find it dead. Identities and latencies come from the seed, so a
//! seed repeats exactly.
//!
//! Used by the tests in `tests/tests/gms_simulation.rs` and by the benchmark's
//! `membership.sim1000.*` figures.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cohort_membership::{
    Authenticator, CheckOutcome, Credentials, Gms, GmsConfig, GmsMessage, LeaseMessage,
    MembershipEvent, Output, ReachabilityMessage, Standing,
};
use cohort_transport::{MemberId, MemberKind};
use uuid::Uuid;

use crate::chaos::Invariants;

/// What a transmission in flight carries.
#[derive(Clone, Debug)]
enum Carried {
    Gms(GmsMessage),
    Lease(LeaseMessage),
    Reachability(ReachabilityMessage),
}

/// `Gms` instances on a simulated network in virtual time. See the module docs.
pub struct Sim {
    start: Instant,
    /// Virtual time since the simulation began.
    pub now: Duration,
    /// Every member ever added, by index; dead ones included.
    pub members: Vec<Gms>,
    /// Index of each member by identity (uuid).
    pub index: HashMap<Uuid, usize>,
    /// Crashed members: they get no deliveries or timers, and final checks find them dead.
    pub dead: Vec<bool>,
    messages: BinaryHeap<Reverse<(Duration, u64)>>,
    in_flight: HashMap<u64, (MemberId, usize, Carried)>,
    timers: BinaryHeap<Reverse<(Duration, usize)>>,
    seq: u64,
    rng: u64,
    /// Every installation so far, checked: [`Invariants::len`] is the number of distinct
    /// views installed.
    pub invariants: Invariants,
    events: Vec<(usize, MembershipEvent)>,
    /// Protocol messages sent, one per recipient (heartbeats and lease messages are not
    /// counted).
    pub messages_sent: u64,
    /// Coordinator-lease messages sent (requests and grants), one per recipient.
    pub lease_messages_sent: u64,
    /// View installations, one per member per view.
    pub views_installed: u64,
}

impl Sim {
    /// An empty simulation whose identities and latencies derive from `seed`.
    pub fn new(seed: u64) -> Self {
        Sim {
            start: Instant::now(),
            now: Duration::ZERO,
            members: Vec::new(),
            index: HashMap::new(),
            dead: Vec::new(),
            messages: BinaryHeap::new(),
            in_flight: HashMap::new(),
            timers: BinaryHeap::new(),
            seq: 0,
            rng: seed | 1,
            invariants: Invariants::new(),
            events: Vec::new(),
            messages_sent: 0,
            lease_messages_sent: 0,
            views_installed: 0,
        }
    }

    /// The current virtual time as the `Instant` the members are given.
    pub fn at(&self) -> Instant {
        self.start + self.now
    }

    /// Adds a member (not yet founding or joining) with the default configuration; returns
    /// its index.
    pub fn add(&mut self, name: &str, kind: MemberKind, auth: Arc<dyn Authenticator>) -> usize {
        let i = self.members.len();
        let address = SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16));
        // Identities derived from the seed and index, so a seed repeats exactly.
        let uuid = Uuid::from_u64_pair(self.rng, i as u64);
        let me = MemberId::new(name, address, kind).with_uuid(uuid);
        self.index.insert(me.uuid(), i);
        self.members.push(Gms::new(me, GmsConfig::default(), auth));
        self.dead.push(false);
        i
    }

    /// Member `i`'s identity.
    pub fn id(&self, i: usize) -> MemberId {
        self.members[i].me().clone()
    }

    /// The next pseudo-random number (xorshift64) of the seeded sequence.
    pub fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn latency(&mut self) -> Duration {
        Duration::from_micros(200 + self.random() % 2000)
    }

    /// Acts on member `i`'s outputs and re-arms its timer.
    fn drain(&mut self, i: usize) {
        while let Some(output) = self.members[i].poll_output() {
            match output {
                Output::Send { to, message } => self.send(i, to, Carried::Gms(message)),
                Output::Lease { to, message } => self.send(i, to, Carried::Lease(message)),
                Output::Reachability { to, message } => {
                    self.send(i, to, Carried::Reachability(message));
                }
                Output::Heartbeat { to } => self.heartbeat(i, to),
                // The simulation does not model ICMP: a knock reaches nothing.
                Output::Knock { .. } => {}
                // No messenger here whose senders' rule it would widen.
                Output::Prepared(_) => {}
                Output::Check { member } => {
                    let (now, outcome) = (self.at(), self.truth(&member));
                    self.members[i].check_result(now, &member, outcome, None);
                }
                Output::Probe { member, asker } => {
                    let (now, outcome) = (self.at(), self.truth(&member));
                    self.members[i].probe_result(now, &asker, &member, outcome);
                }
                Output::Event(event) => self.check(i, event),
            }
        }
        if let Some(at) = self.members[i].poll_timeout() {
            self.timers.push(Reverse((at - self.start, i)));
        }
    }

    /// What a final check of `member` finds: the truth. A dead member's port refuses it (a
    /// crashed process on a host that is up), and a live one says whether it is out.
    fn truth(&self, member: &MemberId) -> CheckOutcome {
        let live = self.index.get(&member.uuid()).filter(|&&j| !self.dead[j]);
        match live.map(|&j| self.members[j].standing()) {
            None => CheckOutcome::Refused,
            Some(Standing::Out) => CheckOutcome::Out,
            Some(Standing::Member | Standing::Joining) => CheckOutcome::Alive,
        }
    }

    /// Queues `message` from member `i` to each recipient the simulation knows.
    fn send(&mut self, i: usize, to: Vec<MemberId>, message: Carried) {
        for recipient in to {
            let Some(&j) = self.index.get(&recipient.uuid()) else {
                continue;
            };
            match message {
                Carried::Gms(_) => self.messages_sent += 1,
                Carried::Lease(_) => self.lease_messages_sent += 1,
                Carried::Reachability(_) => {}
            }
            let at = self.now + self.latency();
            self.seq += 1;
            self.messages.push(Reverse((at, self.seq)));
            self.in_flight
                .insert(self.seq, (self.id(i), j, message.clone()));
        }
    }

    /// Heartbeats only move clocks forward; they arrive at once at live recipients, whose
    /// acknowledgements (as QUIC sends them) arrive at once back at the sender.
    fn heartbeat(&mut self, i: usize, to: Vec<MemberId>) {
        let now = self.at();
        let from = self.id(i);
        for recipient in to {
            if let Some(&j) = self.index.get(&recipient.uuid())
                && !self.dead[j]
            {
                self.members[j].heard_from(&from, now);
                self.members[i].heard_from(&recipient, now);
            }
        }
    }

    /// Checks the invariants on member `i`'s event and keeps it.
    fn check(&mut self, i: usize, event: MembershipEvent) {
        if let MembershipEvent::ViewInstalled { view, .. } = &event {
            self.views_installed += 1;
            let me = self.members[i].me().clone();
            if let Err(violation) = self.invariants.installed(&me, "", view) {
                panic!("{violation}");
            }
        }
        self.events.push((i, event));
    }

    /// Runs one event (a delivery or a timer); false when nothing is left to do.
    pub fn step(&mut self) -> bool {
        let next_message = self.messages.peek().map(|Reverse((at, _))| *at);
        let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
        match (next_message, next_timer) {
            (None, None) => false,
            (Some(m), Some(t)) if m <= t => self.deliver(),
            (Some(_), None) => self.deliver(),
            _ => self.fire_timer(),
        }
    }

    /// Delivers the earliest message in flight.
    fn deliver(&mut self) -> bool {
        let Some(Reverse((at, seq))) = self.messages.pop() else {
            return false;
        };
        self.now = self.now.max(at);
        let Some((from, to, message)) = self.in_flight.remove(&seq) else {
            return true;
        };
        if !self.dead[to] {
            let now = self.at();
            match message {
                Carried::Gms(message) => self.members[to].handle_message(now, &from, message),
                Carried::Lease(message) => self.members[to].handle_lease(now, &from, message),
                Carried::Reachability(message) => {
                    self.members[to].handle_reachability(now, &from, message);
                }
            }
            self.drain(to);
        }
        true
    }

    /// Runs the earliest timer, unless it is stale or its member dead.
    fn fire_timer(&mut self) -> bool {
        let Some(Reverse((at, i))) = self.timers.pop() else {
            return false;
        };
        // A timer is stale if the member has since moved its deadline.
        let current = self.members[i].poll_timeout().map(|t| t - self.start);
        if current != Some(at) || self.dead[i] {
            return true;
        }
        self.now = self.now.max(at);
        let now = self.at();
        self.members[i].handle_timeout(now);
        self.drain(i);
        true
    }

    /// Steps until `done` holds; an error naming `what` if nothing is left to do first or
    /// `limit` of virtual time passes.
    pub fn try_run_until(
        &mut self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Result<(), String> {
        let deadline = self.now + limit;
        while !done(self) {
            if !self.step() {
                return Err(format!("nothing left to do before {what}"));
            }
            if self.now > deadline {
                return Err(format!(
                    "{what} did not happen within {limit:?} of virtual time"
                ));
            }
        }
        Ok(())
    }

    /// Like [`Sim::try_run_until`], panicking on the error (for tests).
    pub fn run_until(&mut self, what: &str, limit: Duration, done: impl FnMut(&Sim) -> bool) {
        if let Err(error) = self.try_run_until(what, limit, done) {
            panic!("{error}");
        }
    }

    /// Member `i` founds a cluster of itself.
    pub fn founder(&mut self, i: usize) {
        let now = self.at();
        self.members[i].found_cluster(now);
        self.drain(i);
    }

    /// Member `i` asks `coordinator` to admit it.
    pub fn join(&mut self, i: usize, coordinator: usize, credentials: Credentials) {
        let (now, to) = (self.at(), self.id(coordinator));
        self.members[i].join(now, to, credentials);
        self.drain(i);
    }

    /// Member `i` leaves gracefully.
    pub fn leave(&mut self, i: usize) {
        let now = self.at();
        self.members[i].leave(now);
        self.drain(i);
    }

    /// The coordinator of the newest view any live member holds. Panics if nobody holds
    /// one.
    pub fn coordinator(&self) -> usize {
        let view = (0..self.members.len())
            .filter(|i| !self.dead[*i] && self.members[*i].is_member())
            .filter_map(|i| self.members[i].view())
            .max_by_key(|v| v.id())
            .expect("a view");
        self.index[&view.coordinator().expect("a coordinator").uuid()]
    }

    /// Starts `count` members m0, m1, …: m0 founds the cluster, the others join it at
    /// once; returns their indices once all are in, or an error if that takes more than
    /// `limit` of virtual time.
    pub fn try_form(
        &mut self,
        count: usize,
        auth: &Arc<dyn Authenticator>,
        limit: Duration,
    ) -> Result<Vec<usize>, String> {
        let members: Vec<usize> = (0..count)
            .map(|i| self.add(&format!("m{i}"), MemberKind::Member, auth.clone()))
            .collect();
        let Some((&founder, joiners)) = members.split_first() else {
            return Ok(members);
        };
        self.founder(founder);
        for &i in joiners {
            self.join(i, founder, Credentials::default());
        }
        self.try_run_until("all join", limit, |s| {
            members.iter().all(|i| s.members[*i].is_member())
        })?;
        Ok(members)
    }

    /// Like [`Sim::try_form`] with 30 s of virtual time, panicking on the error (for
    /// tests).
    pub fn form(&mut self, count: usize, auth: &Arc<dyn Authenticator>) -> Vec<usize> {
        self.try_form(count, auth, Duration::from_secs(30))
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// The events member `i` reported, oldest first.
    pub fn events_of(&self, i: usize) -> impl Iterator<Item = &MembershipEvent> {
        self.events
            .iter()
            .filter(move |(j, _)| *j == i)
            .map(|(_, e)| e)
    }
}
