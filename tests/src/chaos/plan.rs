//! Random schedules: a [`Plan`] drawn from a seed, carried out on a [`Chaos`] world by
//! [`run_plan`], and many seeds at once by [`sweep`].
//!
//! ```text
//! seed ─► Plan::random: 5–10 members (a locator or two sometimes), a fault phase of
//!         FAULT_PHASE, faults at seeded times (each with its own length)
//!      ─► run_plan: form fault-free ─► crash budget = formed weight ─► each fault at its
//!         time (roles such as "the coordinator" resolved then) ─► heal ─► until settled
//!         and stable for STABLE, within HEAL_LIMIT
//!      ─► Report, or the Failure with the plan attached
//! ```

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use cohort_membership::GmsMessage;
use cohort_transport::{MemberId, MemberKind};

use super::invariants::{Invariant, Violation};
use super::rng::Rng;
use super::world::{Action, Chaos, ChaosConfig, Death, Failure, Reach, Stats, Stop, view_weight};

/// How long the fault phase of a random plan lasts.
pub const FAULT_PHASE: Range<Duration> = Duration::from_secs(10)..Duration::from_secs(25);
/// Faults per second of the fault phase, on average.
const FAULTS_PER_SECOND: f64 = 0.7;
/// The bound on reaching one view after healing: a joiner that asked a dead coordinator
/// gives up after its 30 s join timeout, the slowest way to settle.
pub const HEAL_LIMIT: Duration = Duration::from_secs(60);
/// How long the settled state must hold before a run counts as settled: a removal still
/// under way would undo it.
const STABLE: Duration = Duration::from_secs(3);
/// How often the settled state is looked at after healing (the resolution of
/// `heal_to_one_view`).
const POLL: Duration = Duration::from_millis(10);

/// A member a fault is aimed at, resolved when the fault happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// A member formed at the start, by index.
    Member(usize),
    /// Whoever coordinates then ([`Chaos::coordinator`]).
    Coordinator,
    /// Whoever would take over from it ([`Chaos::successor`]).
    Successor,
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::Member(i) => write!(f, "member #{i}"),
            Who::Coordinator => f.write_str("the coordinator"),
            Who::Successor => f.write_str("the successor"),
        }
    }
}

/// Which message a crash-after-sending hook waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendKind {
    /// A proposal of a view change: `Collect` or `Propose` (protocol 2), `PrepareView`
    /// (protocol 1).
    Prepare,
    /// A decided view: `Decide` (protocol 2), `InstallView` (protocol 1).
    Install,
    /// Any message to two or more members: a phase of any view change protocol.
    Broadcast,
}

impl SendKind {
    fn matches(self, message: &GmsMessage, to: &[MemberId]) -> bool {
        match self {
            SendKind::Prepare => matches!(
                message,
                GmsMessage::Collect { .. }
                    | GmsMessage::Propose { .. }
                    | GmsMessage::PrepareView { .. }
            ),
            SendKind::Install => matches!(
                message,
                GmsMessage::Decide { .. } | GmsMessage::InstallView { .. }
            ),
            SendKind::Broadcast => to.len() >= 2,
        }
    }
}

impl fmt::Display for SendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendKind::Prepare => "its proposal",
            SendKind::Install => "its decision",
            SendKind::Broadcast => "its next broadcast",
        })
    }
}

/// What becomes of a joiner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Nothing happens to it.
    Lives,
    /// It crashes right after sending its join request (which is delivered).
    DiesAfterRequest,
    /// It crashes as the member it asked first sends it something (a proposed view, a
    /// redirect): the answer finds it dead.
    DiesWhenAnswered,
}

/// One fault of a plan.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// One direction cut.
    Cut {
        /// Sender side.
        from: Who,
        /// Receiver side.
        to: Who,
        /// Until lifted.
        lasting: Duration,
    },
    /// Both directions between two members cut (the coordinator and its successor, say).
    CutBoth {
        /// One end.
        a: Who,
        /// The other.
        b: Who,
        /// Until lifted.
        lasting: Duration,
    },
    /// These formed members are cut off, both ways, from all the others.
    Partition {
        /// One side; the rest is the other.
        side: Vec<usize>,
        /// Until lifted.
        lasting: Duration,
    },
    /// Both directions between two members cut and open alternately.
    Flap {
        /// One end.
        a: Who,
        /// The other.
        b: Who,
        /// Length of each phase.
        period: Duration,
        /// Until lifted.
        lasting: Duration,
    },
    /// Random loss on one direction.
    Loss {
        /// Sender side.
        from: Who,
        /// Receiver side.
        to: Who,
        /// Probability of losing each transmission.
        p: f64,
        /// Until lifted.
        lasting: Duration,
    },
    /// Extra delay, with reordering, both ways.
    Delay {
        /// One end.
        a: Who,
        /// The other.
        b: Who,
        /// Up to this much more.
        extra: Duration,
        /// Until lifted.
        lasting: Duration,
    },
    /// Duplication, both ways.
    Duplicate {
        /// One end.
        a: Who,
        /// The other.
        b: Who,
        /// Probability of delivering each transmission twice.
        p: f64,
        /// Until lifted.
        lasting: Duration,
    },
    /// A pause.
    Pause {
        /// Who stops.
        who: Who,
        /// For how long.
        lasting: Duration,
    },
    /// A crash (host up or down as the seed says).
    Crash {
        /// Who.
        who: Who,
    },
    /// A crash right after sending a kind of message to part of its recipients.
    CrashAfterSending {
        /// Who.
        who: Who,
        /// The message.
        kind: SendKind,
        /// The part of the recipients it reaches.
        fraction: f64,
    },
    /// A crash while the coordinator of the moment holds a prepared view (a round under
    /// way), losing what it sent that is still in flight.
    CrashMidRound {
        /// Who.
        who: Who,
    },
    /// A new member joins through the coordinator.
    Join {
        /// What becomes of it.
        fate: Fate,
    },
    /// A graceful leave.
    Leave {
        /// Who.
        who: Who,
    },
    /// A graceful leave asked while the coordinator of the moment holds a prepared view.
    LeaveMidRound {
        /// Who.
        who: Who,
    },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Cut { from, to, lasting } => write!(f, "cut {from} → {to} for {lasting:?}"),
            Fault::CutBoth { a, b, lasting } => write!(f, "cut {a} ↔ {b} for {lasting:?}"),
            Fault::Partition { side, lasting } => {
                let side: Vec<String> = side.iter().map(|i| format!("#{i}")).collect();
                write!(
                    f,
                    "partition {{{}}} from the rest for {lasting:?}",
                    side.join(", ")
                )
            }
            Fault::Flap {
                a,
                b,
                period,
                lasting,
            } => write!(f, "flap {a} ↔ {b} every {period:?} for {lasting:?}"),
            Fault::Loss {
                from,
                to,
                p,
                lasting,
            } => write!(f, "{:.0}% loss {from} → {to} for {lasting:?}", p * 100.0),
            Fault::Delay {
                a,
                b,
                extra,
                lasting,
            } => write!(f, "up to {extra:?} extra delay {a} ↔ {b} for {lasting:?}"),
            Fault::Duplicate { a, b, p, lasting } => {
                write!(f, "{:.0}% duplication {a} ↔ {b} for {lasting:?}", p * 100.0)
            }
            Fault::Pause { who, lasting } => write!(f, "pause {who} for {lasting:?}"),
            Fault::Crash { who } => write!(f, "crash {who}"),
            Fault::CrashAfterSending {
                who,
                kind,
                fraction,
            } => write!(
                f,
                "crash {who} after {kind} reaches {:.0}% of its recipients",
                fraction * 100.0
            ),
            Fault::CrashMidRound { who } => {
                write!(f, "crash {who} once the coordinator holds a prepared view")
            }
            Fault::Join { fate } => write!(f, "a new member joins ({fate:?})"),
            Fault::Leave { who } => write!(f, "{who} leaves"),
            Fault::LeaveMidRound { who } => {
                write!(f, "{who} leaves once the coordinator holds a prepared view")
            }
        }
    }
}

/// A random schedule: who forms the cluster, and the timed faults after it.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The seed of everything.
    pub seed: u64,
    /// The formed members' kinds, in index order.
    pub kinds: Vec<MemberKind>,
    /// How long the fault phase lasts.
    pub fault_phase: Duration,
    /// Faults by time from the start of the fault phase, in order.
    pub faults: Vec<(Duration, Fault)>,
}

impl Plan {
    /// The plan of `seed`; drawn before anything runs, so it does not depend on the
    /// protocol.
    pub fn random(seed: u64) -> Plan {
        let mut rng = Rng::keyed(seed, &[0]);
        let count = 5 + rng.index(6);
        let locators = match rng.below(20) {
            0..10 => 0,
            10..17 => 1,
            _ => 2,
        };
        let mut kinds = vec![MemberKind::Member; count];
        for at in rng.sample(count, locators) {
            kinds[at] = MemberKind::Locator;
        }
        let fault_phase = rng.within(&FAULT_PHASE);
        let n = (fault_phase.as_secs_f64() * FAULTS_PER_SECOND).round() as usize;
        let mut faults: Vec<(Duration, Fault)> = (0..n)
            .map(|_| {
                let at = rng.within(&(Duration::ZERO..fault_phase));
                (at, random_fault(&mut rng, count))
            })
            .collect();
        faults.sort_by_key(|(at, _)| *at);
        Plan {
            seed,
            kinds,
            fault_phase,
            faults,
        }
    }

    /// The plan, one line each, for people.
    pub fn lines(&self) -> Vec<String> {
        let kinds: Vec<String> = self
            .kinds
            .iter()
            .enumerate()
            .map(|(i, k)| format!("#{i} {k:?}"))
            .collect();
        let mut lines = vec![
            format!("members: {}", kinds.join(", ")),
            format!(
                "fault phase of {:?} after forming, then healed",
                self.fault_phase
            ),
        ];
        lines.extend(
            self.faults
                .iter()
                .map(|(at, fault)| format!("+{at:>12?}  {fault}")),
        );
        lines
    }
}

/// One fault drawn from the mix, aimed at one of `count` formed members or a role.
fn random_fault(rng: &mut Rng, count: usize) -> Fault {
    let who = |rng: &mut Rng| match rng.below(10) {
        0..3 => Who::Coordinator,
        3 => Who::Successor,
        _ => Who::Member(rng.index(count)),
    };
    // Two ends that are not the same by construction (they may still resolve to one
    // member, the coordinator named by its index, say: such a fault is skipped).
    let two = |rng: &mut Rng| {
        let a = who(rng);
        let mut b = who(rng);
        for _ in 0..8 {
            if b != a {
                break;
            }
            b = who(rng);
        }
        (a, b)
    };
    let lasting = |rng: &mut Rng, range: Range<u64>| {
        rng.within(&(Duration::from_millis(range.start)..Duration::from_millis(range.end)))
    };
    match rng.below(100) {
        0..10 => {
            let (from, to) = two(rng);
            Fault::Cut {
                from,
                to,
                lasting: lasting(rng, 300..4_000),
            }
        }
        10..15 => Fault::CutBoth {
            a: Who::Coordinator,
            b: Who::Successor,
            lasting: lasting(rng, 500..5_000),
        },
        15..20 => {
            let (a, b) = two(rng);
            Fault::CutBoth {
                a,
                b,
                lasting: lasting(rng, 300..4_000),
            }
        }
        20..30 => {
            let size = 1 + rng.index(count / 2);
            let mut side = rng.sample(count, size);
            side.sort_unstable();
            Fault::Partition {
                side,
                lasting: lasting(rng, 500..6_000),
            }
        }
        30..36 => {
            let (a, b) = two(rng);
            Fault::Flap {
                a,
                b,
                period: lasting(rng, 100..1_500),
                lasting: lasting(rng, 1_000..6_000),
            }
        }
        36..44 => {
            let (from, to) = two(rng);
            Fault::Loss {
                from,
                to,
                p: 0.1 + rng.below(80) as f64 / 100.0,
                lasting: lasting(rng, 500..6_000),
            }
        }
        44..50 => {
            let (a, b) = two(rng);
            Fault::Delay {
                a,
                b,
                extra: lasting(rng, 10..500),
                lasting: lasting(rng, 500..6_000),
            }
        }
        50..56 => {
            let (a, b) = two(rng);
            Fault::Duplicate {
                a,
                b,
                p: 0.2 + rng.below(80) as f64 / 100.0,
                lasting: lasting(rng, 500..6_000),
            }
        }
        56..63 => Fault::Pause {
            who: Who::Coordinator,
            lasting: lasting(rng, 1_000..5_000),
        },
        63..69 => Fault::Pause {
            who: who(rng),
            lasting: lasting(rng, 200..3_000),
        },
        69..74 => Fault::Crash { who: who(rng) },
        74..80 => Fault::CrashAfterSending {
            who: who(rng),
            kind: match rng.below(3) {
                0 => SendKind::Prepare,
                1 => SendKind::Install,
                _ => SendKind::Broadcast,
            },
            fraction: rng.below(100) as f64 / 100.0,
        },
        80..84 => Fault::CrashMidRound { who: who(rng) },
        84..94 => Fault::Join {
            fate: match rng.below(10) {
                0..6 => Fate::Lives,
                6..8 => Fate::DiesAfterRequest,
                _ => Fate::DiesWhenAnswered,
            },
        },
        94..98 => Fault::Leave { who: who(rng) },
        _ => Fault::LeaveMidRound { who: who(rng) },
    }
}

/// What one random run did.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Members formed at the start.
    pub members: usize,
    /// Faults in the plan.
    pub faults: usize,
    /// Distinct view ids installed.
    pub views: usize,
    /// The world's counters.
    pub stats: Stats,
    /// Virtual time from healing until the live members that are members hold one view
    /// of exactly themselves ([`Chaos::one_view`]), for good.
    pub heal_to_one_view: Duration,
    /// Virtual time from healing until besides no joiner is still waiting and no leave is
    /// pending ([`Chaos::settled`]): a joiner that asked a dead coordinator waits out its
    /// join timeout.
    pub heal_to_settled: Duration,
    /// True if nobody was left in the cluster (every side shut down, or everyone left).
    pub cluster_lost: bool,
    /// The first time two members of one view id coordinated at once, if they did
    /// (invariant 4, counted in `stats`).
    pub coordinator_overlap: Option<String>,
    /// Virtual time of the whole run.
    pub virtual_time: Duration,
    /// The faults and commands as carried out ([`Chaos::log`]).
    pub log: Vec<String>,
    /// Virtual time of healing.
    pub healed: Duration,
    /// Every member that stopped, as it stood then ([`Chaos::stops`]).
    pub stops: Vec<Stop>,
    /// How each member ended, by name: crashed, stopped (and why), or still running.
    pub fates: Vec<String>,
}

/// A final check's timeout and a little more: a check begun before a link fault or a pause
/// ended may still report it, as the simulation answers a check as things stand when it
/// begins.
pub const RECENT: Duration = Duration::from_millis(500);

/// Why nobody was left in the cluster, judged from how each member stood when it shut
/// down for a partition ([`Stop`]), worst first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LostClass {
    /// A member shut down for a partition after healing, every link open, although the
    /// live members of its view held a majority of its weight (and had for longer than
    /// [`RECENT`]).
    AfterHealing,
    /// A member shut down for a partition although itself and the live, running members
    /// it reached both ways held a majority of its view's weight, and had for longer than
    /// [`RECENT`].
    StoppedWithQuorum,
    /// As [`LostClass::StoppedWithQuorum`], but a link fault or a pause began or ended
    /// within [`RECENT`] before: findings of final checks begun before that change.
    QuorumJustRegained,
    /// A member shut down for a partition without a reachable majority, but it would have
    /// had one had the members proven dead (port closed) not counted as lost.
    RefusedCountedAsLost,
    /// Every member that shut down for a partition lacked a reachable majority even
    /// without the members proven dead: crashes, cuts, pauses and the members stopped
    /// already took it.
    Minority,
    /// Nobody shut down for a partition: the members left (or were removed by members
    /// that left).
    Left,
}

impl LostClass {
    /// The class of one shutdown for a partition, or `None` for any other ending.
    pub fn of_stop(stop: &Stop, healed: Duration) -> Option<LostClass> {
        if stop.ending != "forced out" || !stop.reason.starts_with("network partition") {
            return None;
        }
        let recent = stop.since_fault_change <= RECENT;
        Some(if stop.had_quorum() && recent {
            LostClass::QuorumJustRegained
        } else if stop.had_quorum() && stop.at >= healed {
            LostClass::AfterHealing
        } else if stop.had_quorum() {
            LostClass::StoppedWithQuorum
        } else if (stop.reachable + stop.refused) * 2 > stop.total {
            LostClass::RefusedCountedAsLost
        } else {
            LostClass::Minority
        })
    }

    /// The class of a run whose cluster was lost: that of its worst shutdown.
    pub fn of(report: &Report) -> LostClass {
        report
            .stops
            .iter()
            .filter_map(|stop| LostClass::of_stop(stop, report.healed))
            .min()
            .unwrap_or(LostClass::Left)
    }
}

/// Runs the plan of `seed`: the replay of a failing seed is `run_seed(seed)`.
pub fn run_seed(seed: u64) -> Result<Report, Failure> {
    run_seed_with(seed, &ChaosConfig::default())
}

/// Runs the plan of `seed` in a world configured by `config`.
pub fn run_seed_with(seed: u64, config: &ChaosConfig) -> Result<Report, Failure> {
    run_plan_with(&Plan::random(seed), config)
}

/// Runs `plan` (see the module docs); a failure carries the plan.
pub fn run_plan(plan: &Plan) -> Result<Report, Failure> {
    run_plan_with(plan, &ChaosConfig::default())
}

/// Runs `plan` in a world configured by `config`.
pub fn run_plan_with(plan: &Plan, config: &ChaosConfig) -> Result<Report, Failure> {
    let mut chaos = Chaos::with_config(plan.seed, config.clone());
    carry_out(&mut chaos, plan).map_err(|failure| failure.with_plan(plan.lines()))
}

fn carry_out(chaos: &mut Chaos, plan: &Plan) -> Result<Report, Failure> {
    let formed = chaos.form(&plan.kinds)?;
    let view = chaos.newest_view();
    chaos.set_crash_budget(view.as_ref().map_or(0, view_weight));
    let start = chaos.now();
    let mut joiners = 0;
    for (at, fault) in &plan.faults {
        chaos.run_for((start + *at).saturating_sub(chaos.now()))?;
        chaos.note(format!("plan: {fault}"));
        apply(chaos, &formed, fault, &mut joiners)?;
    }
    chaos.run_for((start + plan.fault_phase).saturating_sub(chaos.now()))?;
    chaos.disarm();
    chaos.heal();
    let healed = chaos.now();
    let settled = settle(chaos, healed)?;
    let cluster_lost = chaos.newest_view().is_none();
    let fates = (0..chaos.len()).map(|i| fate(chaos, i, healed)).collect();
    Ok(Report {
        seed: plan.seed,
        members: formed.len(),
        faults: plan.faults.len(),
        views: chaos.invariants().len(),
        stats: chaos.stats(),
        heal_to_one_view: settled.one_view,
        heal_to_settled: settled.settled,
        cluster_lost,
        coordinator_overlap: chaos.first_coordinator_overlap().map(str::to_owned),
        virtual_time: chaos.now(),
        log: chaos.log(),
        healed,
        stops: chaos.stops().to_vec(),
        fates,
    })
}

/// How member `i` ended: "m3 crashed (port closed)", "m4 forced out at 12.3s: <reason>",
/// with how it stood then and, for a shutdown for a partition, its [`LostClass`].
fn fate(chaos: &Chaos, i: usize, healed: Duration) -> String {
    let name = chaos.name(i);
    if let Some(death) = chaos.death_of(i) {
        let how = match death {
            Death::PortClosed => "port closed",
            Death::HostDown => "host down",
        };
        return format!("{name} crashed ({how})");
    }
    if let Some(stop) = chaos.stops().iter().find(|s| s.member == i) {
        let reason = if stop.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", stop.reason)
        };
        let class = LostClass::of_stop(stop, healed).map_or(String::new(), |c| format!(" {c:?}"));
        let when = if stop.at >= healed {
            "after healing"
        } else {
            "before healing"
        };
        return format!(
            "{name} {} at {:?} ({when}){reason} [{stop}]{class}",
            stop.ending, stop.at
        );
    }
    let role = if chaos.gms(i).is_member() {
        "member"
    } else {
        "not a member"
    };
    format!("{name} live, {role}")
}

/// When, after healing, the run settled.
struct Settled {
    /// [`Chaos::one_view`] held from then on.
    one_view: Duration,
    /// [`Chaos::settled`] held from then on.
    settled: Duration,
}

/// Runs until [`Chaos::settled`] holds and keeps holding for [`STABLE`]; returns since when
/// it and [`Chaos::one_view`] held, from `healed`. Invariant 5 or 6 if that does not
/// happen within [`HEAL_LIMIT`].
fn settle(chaos: &mut Chaos, healed: Duration) -> Result<Settled, Failure> {
    let deadline = healed + HEAL_LIMIT;
    let mut one_view_since: Option<Duration> = None;
    let mut settled_since: Option<Duration> = None;
    // Both verdicts stand while nothing they look at changes.
    let mut seen = None;
    loop {
        if seen != Some(chaos.changes()) {
            seen = Some(chaos.changes());
            let now = chaos.now();
            let since = |ok: bool, since: Option<Duration>| ok.then(|| since.unwrap_or(now));
            one_view_since = since(chaos.one_view().is_ok(), one_view_since);
            settled_since = since(chaos.settled().is_ok(), settled_since);
        }
        let now = chaos.now();
        if let (Some(one_view), Some(settled)) = (one_view_since, settled_since)
            && (now - settled >= STABLE || now >= deadline)
        {
            return Ok(Settled {
                one_view: one_view - healed,
                settled: settled - healed,
            });
        }
        if now >= deadline {
            let violation = chaos
                .settled()
                .err()
                .unwrap_or_else(|| Violation::new(Invariant::OneViewAfterHeal, "unsettled"));
            return Err(chaos.failure(Violation::new(
                violation.invariant,
                format!("{HEAL_LIMIT:?} after healing: {}", violation.detail),
            )));
        }
        chaos.run_for(POLL)?;
    }
}

/// The live member `who` names now.
fn resolve(chaos: &Chaos, formed: &[usize], who: Who) -> Option<usize> {
    let i = match who {
        Who::Member(k) => formed.get(k).copied(),
        Who::Coordinator => chaos.coordinator(),
        Who::Successor => chaos.successor(),
    };
    i.filter(|i| chaos.is_live(*i))
}

/// Carries out one fault of a plan; one whose targets are gone (or the same member twice)
/// is skipped, and says so in the log.
fn apply(
    chaos: &mut Chaos,
    formed: &[usize],
    fault: &Fault,
    joiners: &mut usize,
) -> Result<(), Failure> {
    let one = |chaos: &Chaos, who: Who| resolve(chaos, formed, who);
    let two = |chaos: &Chaos, a: Who, b: Who| {
        let pair = (one(chaos, a)?, one(chaos, b)?);
        (pair.0 != pair.1).then_some(pair)
    };
    let skipped = |chaos: &mut Chaos| {
        chaos.note("skipped: no such member now (gone, or one member twice)".to_owned());
    };
    match fault {
        Fault::Cut { from, to, lasting } => match two(chaos, *from, *to) {
            Some((a, b)) => {
                let id = chaos.cut(a, b);
                chaos.lift_after(id, *lasting);
            }
            None => skipped(chaos),
        },
        Fault::CutBoth { a, b, lasting } => match two(chaos, *a, *b) {
            Some((a, b)) => {
                let id = chaos.cut_both(a, b);
                chaos.lift_after(id, *lasting);
            }
            None => skipped(chaos),
        },
        Fault::Partition { side, lasting } => {
            let inside: Vec<usize> = side.iter().map(|k| formed[*k]).collect();
            let outside: Vec<usize> = (0..chaos.len()).filter(|i| !inside.contains(i)).collect();
            let id = chaos.partition(&[inside, outside]);
            chaos.lift_after(id, *lasting);
        }
        Fault::Flap {
            a,
            b,
            period,
            lasting,
        } => match two(chaos, *a, *b) {
            Some((a, b)) => {
                chaos.flap(a, b, *period, *lasting);
            }
            None => skipped(chaos),
        },
        Fault::Loss {
            from,
            to,
            p,
            lasting,
        } => match two(chaos, *from, *to) {
            Some((a, b)) => {
                let id = chaos.loss(a, b, *p);
                chaos.lift_after(id, *lasting);
            }
            None => skipped(chaos),
        },
        Fault::Delay {
            a,
            b,
            extra,
            lasting,
        } => match two(chaos, *a, *b) {
            Some((a, b)) => {
                let id = chaos.delay(a, b, *extra);
                chaos.lift_after(id, *lasting);
            }
            None => skipped(chaos),
        },
        Fault::Duplicate { a, b, p, lasting } => match two(chaos, *a, *b) {
            Some((a, b)) => {
                let id = chaos.duplicate(a, b, *p);
                chaos.lift_after(id, *lasting);
            }
            None => skipped(chaos),
        },
        Fault::Pause { who, lasting } => match one(chaos, *who) {
            Some(i) => chaos.pause(i, *lasting),
            None => skipped(chaos),
        },
        Fault::Crash { who } => match one(chaos, *who) {
            Some(i) => {
                chaos.crash(i);
            }
            None => skipped(chaos),
        },
        Fault::CrashAfterSending {
            who,
            kind,
            fraction,
        } => match one(chaos, *who) {
            Some(i) => {
                let kind = *kind;
                let label = kind.to_string();
                chaos.crash_after_sending(i, &label, move |m, to| kind.matches(m, to), *fraction);
            }
            None => skipped(chaos),
        },
        Fault::CrashMidRound { who } => match (one(chaos, *who), chaos.coordinator()) {
            (Some(i), Some(c)) => {
                let label = format!("{} holds a prepared view", chaos.name(c));
                chaos.when(
                    &label,
                    move |x| x.gms(c).prepared().is_some(),
                    Action::CrashMidSend(i),
                );
            }
            _ => skipped(chaos),
        },
        Fault::Join { fate } => {
            let Some(via) = chaos.coordinator() else {
                skipped(chaos);
                return Ok(());
            };
            *joiners += 1;
            let j = chaos.add(&format!("j{joiners}"), MemberKind::Member);
            chaos.join(j, via)?;
            match fate {
                Fate::Lives => {}
                Fate::DiesAfterRequest => {
                    chaos.crash(j);
                }
                Fate::DiesWhenAnswered => {
                    let me = chaos.id(j);
                    let label = format!("its first message to {me}");
                    let to_joiner = move |_: &GmsMessage, to: &[MemberId]| to.contains(&me);
                    chaos.after_sending(
                        via,
                        &label,
                        to_joiner,
                        Reach::Fraction(1.0),
                        Action::Crash(j),
                    );
                }
            }
        }
        Fault::Leave { who } => match one(chaos, *who) {
            Some(i) => chaos.leave(i)?,
            None => skipped(chaos),
        },
        Fault::LeaveMidRound { who } => match (one(chaos, *who), chaos.coordinator()) {
            (Some(i), Some(c)) => {
                let label = format!("{} holds a prepared view", chaos.name(c));
                chaos.when(
                    &label,
                    move |x| x.gms(c).prepared().is_some(),
                    Action::Leave(i),
                );
            }
            _ => skipped(chaos),
        },
    }
    Ok(())
}

/// The outcome of many seeds.
#[derive(Debug, Default)]
pub struct Sweep {
    /// Seeds run.
    pub schedules: u64,
    /// The failing seeds, with what each broke.
    pub failures: Vec<(u64, Violation)>,
    /// The whole report of the first failure.
    pub first_failure: Option<String>,
    /// `heal_to_one_view` of each run that settled.
    pub heal_times: Vec<Duration>,
    /// Runs in which two members of one view id coordinated at once (invariant 4, not
    /// fatal).
    pub with_coordinator_overlap: u64,
    /// The first coordinator overlap seen, and its seed.
    pub coordinator_overlap_example: Option<(u64, String)>,
    /// Runs that ended with nobody in the cluster.
    pub clusters_lost: u64,
    /// Those runs, by seed, with why ([`LostClass`]) and how each member ended.
    pub lost: Vec<(u64, LostClass, Vec<String>)>,
}

impl Sweep {
    /// How many failing seeds broke each invariant.
    pub fn by_invariant(&self) -> Vec<(Invariant, usize)> {
        let mut counts: std::collections::BTreeMap<Invariant, usize> = Default::default();
        for (_, violation) in &self.failures {
            *counts.entry(violation.invariant).or_default() += 1;
        }
        counts.into_iter().collect()
    }

    /// A few lines: the counts, and the first failing seeds per invariant.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{} schedules, {} failed, {} with two coordinators of one view at once, {} with the cluster lost",
            self.schedules,
            self.failures.len(),
            self.with_coordinator_overlap,
            self.clusters_lost
        );
        if let Some((seed, overlap)) = &self.coordinator_overlap_example {
            out.push_str(&format!(
                "\n  invariant 4, first seen in seed {seed}: {overlap}"
            ));
        }
        for (invariant, count) in self.by_invariant() {
            let seeds: Vec<String> = self
                .failures
                .iter()
                .filter(|(_, v)| v.invariant == invariant)
                .take(8)
                .map(|(seed, _)| seed.to_string())
                .collect();
            out.push_str(&format!(
                "\n  {invariant}: {count} (seeds {}…)",
                seeds.join(", ")
            ));
        }
        out
    }
}

/// Runs every seed of `seeds`.
pub fn sweep(seeds: Range<u64>) -> Sweep {
    sweep_with(seeds, &ChaosConfig::default())
}

/// Runs every seed of `seeds` in a world configured by `config`.
pub fn sweep_with(seeds: Range<u64>, config: &ChaosConfig) -> Sweep {
    let mut sweep = Sweep::default();
    for seed in seeds {
        sweep.schedules += 1;
        match run_seed_with(seed, config) {
            Ok(report) => {
                sweep.heal_times.push(report.heal_to_one_view);
                if report.cluster_lost {
                    let class = LostClass::of(&report);
                    sweep.lost.push((seed, class, report.fates.clone()));
                }
                if let Some(overlap) = report.coordinator_overlap {
                    sweep.with_coordinator_overlap += 1;
                    sweep
                        .coordinator_overlap_example
                        .get_or_insert((seed, overlap));
                }
                sweep.clusters_lost += u64::from(report.cluster_lost);
            }
            Err(failure) => {
                sweep
                    .first_failure
                    .get_or_insert_with(|| failure.to_string());
                sweep.failures.push((seed, failure.violation().clone()));
            }
        }
    }
    sweep
}
