//! Fault injection for the membership protocol alone: [`Chaos`] runs `Gms` state machines
//! on a simulated network in virtual time, injects faults (scripted, or from a seeded
//! random [`Plan`]), and checks the protocol's invariants after every step.
//!
//! ```text
//! Gms::poll_output ─┬─ Send      ─► send hooks (crash part way through a broadcast)
//!                   │               ─► transmit ─┐
//!                   ├─ Heartbeat ─────► transmit ─┤  Links: cut / loss / extra delay /
//!                   │                             │  duplication per directed link a→b
//!                   │                             └► queue: Arrive after 0.2–3 ms (+ extra)
//!                   ├─ Check     ─► answer by the truth ─► queue: Arrive(Answer) later,
//!                   │               and Arrive(Checked) at the suspect halfway
//!                   └─ Event     ─► invariants 1–3 at ViewInstalled; an ending event
//!                                   (left, forced out, refused, timed out) stops the member
//! Gms::poll_timeout ─► queue: Timer (stale once the member moves its deadline)
//!
//! queue, earliest first ─► Arrive at a running member: handle_message / handle_lease /
//!                          heard_from / check_result / heard_view ─► drain its outputs;
//!                          a heartbeat taken transmits its acknowledgement back (Acked:
//!                          heard_from at the sender, dated when the heartbeat was sent)
//!                          at a paused member: held in its inbox; crashed, stopped: lost
//!                      ─► Timer of a running member: handle_timeout ─► drain
//!                      ─► Resume: held timer and held arrivals queued at this instant
//!                      ─► Lift / Flip: a link fault ends or changes phase
//! after every step ─► invariant 4: is_coordinator(now) of every running member (fatal;
//!                     counted instead unless strict) ─► triggers whose
//!                     condition now holds act (crash, crash mid-send, leave, pause)
//! ```
//!
//! **Final checks** are answered as a driver's would be (its `ViewCheck` query): if both
//! directions of the link are open, after 2–40 ms by a suspect that runs (not paused) as
//! it stands (`Alive` as a member, with its view id, which the checker's `heard_view`
//! takes; `Alive` while joining; `Out` once out), except for a seeded 2% that time out
//! anyway, and `Out` from a member that stopped (its process, back as a new member, says
//! so); `Refused` after 1–5 ms if it crashed with its host up (port closed); otherwise
//! `NoAnswer` after the 400 ms final-check timeout. The query reaches a running or paused
//! suspect halfway, and its `heard_view` takes the checker's view id (a paused one when
//! it resumes). A paused checker gets its answer when it resumes.
//!
//! **Pauses** hold a member's timers and arrivals; on resuming, its held timer fires with
//! the resume time as `now`, and its held arrivals are taken in order, late, each as a
//! step of its own (the seed decides whether the timer or the arrivals go first).
//! **Crashes** end deliveries and timers for good; what the member sent before is still
//! delivered, unless it crashed mid-send ([`Action::CrashMidSend`]) or through a send hook
//! ([`Chaos::crash_after_sending`]), which deliver to part of the recipients only.
//!
//! **Invariants**, checked after every step: the three of [`Invariants`] at every install
//! (one set of members per view id, growing ids per member, no return after removal), and
//! at most one running member per view id for which `Gms::is_coordinator(now)` holds at the
//! current virtual time (the coordinator lease; fatal with
//! [`ChaosConfig::strict_coordinators`], the default, else counted); after healing ([`Chaos::settled`]): removed
//! members know they are out, and the live members hold one view of exactly themselves,
//! with no leave pending and no joiner still waiting. A violation is a [`Failure`] with the
//! seed, the plan, the faults as carried out, every member's state and the last steps.
//!
//! **Determinism**: identities, latencies, faults and answers all come from the seed
//! ([`Rng`]), and the random decisions are keyed by what they decide rather than drawn in
//! turn, so they do not depend on the order in which `Gms` emits outputs from its hash
//! maps: a seed replays exactly ([`run_seed`]).
//!
//! The scenario tests of known defects and the random sweeps are in
//! `tests/tests/gms_chaos.rs`; the benchmark prints `membership.chaos.*` from [`sweep`].

mod invariants;
mod net;
mod plan;
mod rng;
mod world;

pub use invariants::{Invariant, Invariants, Violation};
pub use net::FaultId;
pub use plan::{
    FAULT_PHASE, Fate, Fault, HEAL_LIMIT, LostClass, Plan, RECENT, Report, SendKind, Sweep, Who,
    run_plan, run_plan_with, run_seed, run_seed_with, sweep, sweep_with,
};
pub use rng::Rng;
pub use world::{
    Action, Chaos, ChaosConfig, Death, Failure, Reach, Stats, Stop, quorum_weights, view_weight,
};
