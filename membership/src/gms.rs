//! [`Gms`]: the membership protocol as a sans-IO state machine.
//!
//! Inputs are method calls with the current time (`found_cluster`, `join`, `leave`,
//! `handle_message`, `handle_timeout`); outputs are polled ([`Gms::poll_output`]: messages
//! to send and events) together with the next deadline ([`Gms::poll_timeout`]). It never
//! reads a clock, sleeps or does I/O, so the same code runs under tokio and in a
//! deterministic simulation of a thousand members.
//!
//! ```text
//! joiner ──JoinRequest──► coordinator: authenticate, version gate, name check
//!                          │ batched for `batch_interval` with leaves and removals
//!                          ▼
//!          ◄──PrepareView── coordinator ──► every member of the next view (joiners too)
//!          ──PrepareAck──►  (all acked, or `prepare_timeout`: silent members are left out
//!                           and the next view is prepared again without them)
//!          ◄──InstallView── coordinator ──► next view's members, and the members that left
//! ```
//!
//! The coordinator is the view's oldest eligible member ([`View::coordinator`]). A
//! coordinator that leaves installs the view without itself, so the next oldest takes
//! over with no failure detection involved.
//!
//! Failure detection ([`Detector`] for the ring and heartbeats):
//!
//! ```text
//! silent neighbour, application, backlog, no PrepareAck ──Suspect──► coordinator + checker
//! checker = coordinator of (view − suspects): Output::Check ──► check_result(alive?)
//!   alive ──Cleared──► those who suspected it      dead ──► removed as crashed next view
//! a view change removing ≥ half the weight as crashed ──► ForcedDisconnect, NetworkPartition
//!   to the members of this side
//! ```
//!
//! A suspected coordinator is checked by its successor, which coordinates once it found the
//! old one dead; suspicions nobody settles within twice the member timeout are escalated to
//! the checker itself.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cohort_transport::rate::RateLimiter;
use cohort_transport::{MemberId, MemberKind, View, ViewId};
use uuid::Uuid;

use crate::auth::{Authenticator, Credentials};
use crate::detector::Detector;
use crate::messages::{GmsMessage, JoinRejection};

/// How often a failed final check is repeated because the checker ran late during it.
const MAX_CHECK_REPEATS: u32 = 3;

/// Timing of the membership protocol. Every field documents its unit and default.
#[derive(Clone, Debug)]
pub struct GmsConfig {
    /// How long the coordinator collects joins, leaves and removals into one view change.
    /// Default 100 ms.
    pub batch_interval: Duration,
    /// How long the coordinator waits for every member to acknowledge a prepared view
    /// before preparing it again without the silent ones. Default 2 s.
    pub prepare_timeout: Duration,
    /// How often a joiner repeats its request while unanswered. Default 1 s.
    pub join_retry: Duration,
    /// How long a joiner tries before giving up (Geode's join-timeout). Default 30 s.
    pub join_timeout: Duration,
    /// How long a leaving member waits for the view without it. Default 5 s.
    pub leave_timeout: Duration,
    /// How long a watched member may stay silent before it is suspected; heartbeats go out
    /// every fifth of it. Default 1 s.
    pub member_timeout: Duration,
    /// Network-partition detection: a coordinator whose view change would remove as
    /// crashed at least half of the view's weight shuts its side down instead. Default on.
    pub partition_detection: bool,
    /// Join requests taken per second from one address outside the cluster (the address
    /// its member id names, which the certificate must name when endpoint identification
    /// is on), with bursts of twice as many; more are dropped and counted. A joiner asks
    /// once per `join_retry`. Default 10.
    pub max_join_requests_per_second_per_address: u32,
}

impl Default for GmsConfig {
    fn default() -> Self {
        GmsConfig {
            batch_interval: Duration::from_millis(100),
            prepare_timeout: Duration::from_secs(2),
            join_retry: Duration::from_secs(1),
            join_timeout: Duration::from_secs(30),
            leave_timeout: Duration::from_secs(5),
            member_timeout: Duration::from_secs(1),
            partition_detection: true,
            max_join_requests_per_second_per_address: 10,
        }
    }
}

/// What a final check found, reported with [`Gms::check_result`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    /// The suspect answered over a fresh connection, or something else arrived from it
    /// while the check ran.
    Alive,
    /// No answer within the final-check timeout. Not proof of death: a pause, a lost
    /// handshake or a one-way partition look the same.
    NoAnswer,
    /// The suspect's port refused the check's own datagrams (ICMP port unreachable): no
    /// process listens there any more. Positive evidence of death.
    Refused,
}

/// Something the driver must do or report.
#[derive(Clone, Debug)]
pub enum Output {
    /// Send `message` to each of `to` (Control priority).
    Send {
        /// Recipients; some may not be in the installed view yet (joiners) or any more
        /// (members that left).
        to: Vec<MemberId>,
        /// The message.
        message: GmsMessage,
    },
    /// Send a heartbeat datagram to each of `to`.
    Heartbeat {
        /// The watchers.
        to: Vec<MemberId>,
    },
    /// Run a final check on `member` and report it with [`Gms::check_result`]: alive if it
    /// answers over a fresh connection, or if anything at all is heard from it meanwhile.
    Check {
        /// The suspect.
        member: MemberId,
    },
    /// Tell the application.
    Event(MembershipEvent),
}

/// What happened to the membership, as this member saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipEvent {
    /// A view was installed.
    ViewInstalled {
        /// The new view.
        view: View,
        /// Members new in it.
        joined: Vec<MemberId>,
        /// Members of the previous view that left gracefully.
        left: Vec<MemberId>,
        /// Members of the previous view that were removed as crashed.
        crashed: Vec<MemberId>,
    },
    /// The coordinator refused this member's join.
    JoinRejected {
        /// The coordinator that refused.
        by: MemberId,
        /// Why.
        reason: JoinRejection,
    },
    /// No answer to this member's join within the join timeout.
    JoinTimedOut,
    /// This member has left the cluster (its leave completed, or it stopped waiting).
    Left,
    /// A member of the view is suspected of having failed; a final check decides.
    Suspect {
        /// The suspect.
        member: MemberId,
        /// Why.
        reason: String,
    },
    /// The cluster removed this member although it did not ask to leave (it was taken for
    /// crashed). It is out for good; a new start makes a new member.
    ForcedDisconnect {
        /// Why, for people.
        reason: String,
    },
}

/// Counters of the membership protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GmsStats {
    /// Messages dropped because their sender was neither in the view nor in a view being
    /// prepared (a process outside the cluster may only ask to join).
    pub dropped_from_non_members: u64,
    /// Suspicions raised because a member's address was reported unreachable (see
    /// [`Gms::unreachable`]).
    pub unreachable_suspicions: u64,
    /// Views installed by this member.
    pub views_installed: u64,
    /// Members this member learned to suspect (raised here or told by others), each
    /// reported once per suspicion as [`MembershipEvent::Suspect`].
    pub suspicions: u64,
    /// Final checks this member ran as the checker (a repeat after a stall counts again).
    pub final_checks: u64,
    /// Final checks whose suspect answered: the suspicion was cleared.
    pub final_checks_passed: u64,
    /// Final checks whose suspect did not answer: it is removed as crashed.
    pub final_checks_failed: u64,
    /// Members removed as crashed by the views this member installed.
    pub members_removed: u64,
    /// Join requests dropped because their address asked more often than
    /// `max_join_requests_per_second_per_address`.
    pub join_requests_rate_limited: u64,
    /// Times this member was forced out of the cluster (at most once per member).
    pub forced_disconnects: u64,
}

#[derive(Debug)]
enum Role {
    /// Not started.
    Idle,
    Joining {
        coordinator: MemberId,
        credentials: Credentials,
        retry_at: Instant,
        deadline: Instant,
    },
    Member,
    Leaving {
        deadline: Instant,
    },
    /// Out of the cluster for good.
    Gone,
}

/// A view change in progress on the coordinator.
#[derive(Debug)]
struct Round {
    view: View,
    waiting: HashSet<Uuid>,
    deadline: Instant,
    joiners: Vec<MemberId>,
    leaving: Vec<MemberId>,
    crashed: Vec<MemberId>,
}

/// One member's membership state. See the module docs.
pub struct Gms {
    me: MemberId,
    /// Join requests from outside the cluster, per address.
    join_limiter: RateLimiter,
    config: GmsConfig,
    authenticator: Arc<dyn Authenticator>,
    role: Role,
    view: Option<View>,
    prepared: Option<View>,
    pending_joins: Vec<MemberId>,
    pending_leaves: Vec<MemberId>,
    pending_removals: Vec<MemberId>,
    batch_at: Option<Instant>,
    round: Option<Round>,
    outputs: VecDeque<Output>,
    stats: GmsStats,
    detector: Detector,
    /// Members of the view suspected by anyone, not yet cleared or removed.
    suspects: HashMap<Uuid, MemberId>,
    /// Suspects this member is running a final check on.
    /// Suspects being checked, with when the check started and how often it was repeated
    /// because this member itself ran late meanwhile.
    checking: HashMap<Uuid, (Instant, u32)>,
    /// Suspects this member's final check found dead, until a view without them installs.
    dead: HashSet<Uuid>,
    /// Since when suspicions have waited for a checker other than this member.
    unresolved_since: Option<Instant>,
    /// When the checker last cleared each member: a suspicion of it from another member
    /// can arrive after the clearing (different senders, different connections).
    cleared_at: HashMap<Uuid, Instant>,
    /// Who told this member of each suspicion: they are told when it is cleared.
    suspected_by: HashMap<Uuid, Vec<MemberId>>,
}

impl Gms {
    /// The state of a member that has not started yet.
    pub fn new(me: MemberId, config: GmsConfig, authenticator: Arc<dyn Authenticator>) -> Self {
        let member_timeout = config.member_timeout;
        let join_rate = config.max_join_requests_per_second_per_address;
        Gms {
            join_limiter: RateLimiter::new(join_rate, join_rate.saturating_mul(2)),
            me,
            config,
            authenticator,
            role: Role::Idle,
            view: None,
            prepared: None,
            pending_joins: Vec::new(),
            pending_leaves: Vec::new(),
            pending_removals: Vec::new(),
            batch_at: None,
            round: None,
            outputs: VecDeque::new(),
            stats: GmsStats::default(),
            detector: Detector::new(member_timeout),
            suspects: HashMap::new(),
            checking: HashMap::new(),
            dead: HashSet::new(),
            unresolved_since: None,
            cleared_at: HashMap::new(),
            suspected_by: HashMap::new(),
        }
    }

    /// This member.
    pub fn me(&self) -> &MemberId {
        &self.me
    }

    /// The installed view, once there is one.
    pub fn view(&self) -> Option<&View> {
        self.view.as_ref()
    }

    /// Counters.
    pub fn stats(&self) -> GmsStats {
        self.stats
    }

    /// The view prepared but not yet installed, if any.
    pub fn prepared(&self) -> Option<&View> {
        self.prepared.as_ref()
    }

    /// True while this member is in the cluster and coordinates it: its view's coordinator,
    /// or the successor of one that a final check found dead.
    pub fn is_coordinator(&self) -> bool {
        matches!(self.role, Role::Member) && self.coordinating()
    }

    /// The members this one watches for signs of life.
    pub fn watched(&self) -> &[MemberId] {
        self.detector.watched()
    }

    /// A sign of life from `member` at `at`: a heartbeat, or any frame the transport
    /// received from it.
    pub fn heard_from(&mut self, member: &MemberId, at: Instant) {
        self.detector.heard_from(member.uuid(), at);
    }

    /// The application (or the transport, for a member too slow to take its messages)
    /// suspects `member`: the coordinator and the checker are told, and the checker runs a
    /// final check.
    pub fn suspect(&mut self, now: Instant, member: &MemberId, reason: String) {
        if !matches!(self.role, Role::Member) || !self.in_view(member) || *member == self.me {
            return;
        }
        self.raise_suspicion(now, vec![member.clone()], reason);
    }

    /// The transport reports that datagrams to `member`'s address were refused (ICMP port
    /// or host unreachable): a hint, never proof on its own, that its process died. It is
    /// suspected at once, so the checker runs a final check now rather than after the
    /// member timeout, and the check decides. A member suspected already, or cleared within
    /// twice the member timeout, is left alone: forged reports cost at most one final
    /// check per member per two member timeouts.
    pub fn unreachable(&mut self, now: Instant, member: &MemberId, reason: &str) {
        if !matches!(self.role, Role::Member)
            || !self.in_view(member)
            || *member == self.me
            || self.suspects.contains_key(&member.uuid())
            || self.dead.contains(&member.uuid())
            || self.cleared_recently(member, now)
        {
            return;
        }
        self.stats.unreachable_suspicions += 1;
        self.raise_suspicion(
            now,
            vec![member.clone()],
            format!("{reason} from its address"),
        );
    }

    /// The outcome of a final check asked for with [`Output::Check`].
    pub fn check_result(&mut self, now: Instant, member: &MemberId, outcome: CheckOutcome) {
        let alive = outcome == CheckOutcome::Alive;
        let Some((started, repeats)) = self.checking.remove(&member.uuid()) else {
            return;
        };
        if !self.in_view(member) {
            return;
        }
        // A check that failed while this member itself was stalled says more about this
        // member than about the suspect: look again (a few times), as a stalled detector
        // suspects nobody.
        if !alive && repeats < MAX_CHECK_REPEATS && self.detector.ran_late(started, now) {
            tracing::warn!(
                ?member,
                "final check failed while this member ran late: checking again"
            );
            self.start_check(now, member.clone(), repeats + 1);
            return;
        }
        if alive {
            self.stats.final_checks_passed += 1;
            tracing::info!(?member, "final check passed: suspicion cleared");
            let told: Vec<MemberId> = self
                .suspected_by
                .remove(&member.uuid())
                .unwrap_or_default()
                .into_iter()
                .filter(|m| *m != self.me && self.in_view(m))
                .collect();
            self.clear(now, member);
            self.send(
                told,
                GmsMessage::Cleared {
                    member: member.clone(),
                },
            );
        } else {
            self.stats.final_checks_failed += 1;
            tracing::warn!(
                ?member,
                "final check failed: removing the member as crashed"
            );
            self.dead.insert(member.uuid());
            if !self.pending_removals.contains(member) {
                self.pending_removals.push(member.clone());
            }
            // A crash is removed without waiting out the batch interval: the round starts
            // once no other final check is running, which is what gathers crashes found
            // together into one view change (joins batched meanwhile come along).
            if self.round.is_none() {
                self.batch_at = Some(now);
            }
        }
    }

    /// The coordinator a joining member is asking, until it is admitted or gives up.
    pub fn joining_through(&self) -> Option<&MemberId> {
        match &self.role {
            Role::Joining { coordinator, .. } => Some(coordinator),
            _ => None,
        }
    }

    /// True while this member is in an installed view.
    pub fn is_member(&self) -> bool {
        matches!(self.role, Role::Member | Role::Leaving { .. })
    }

    /// Starts a new cluster with this member alone in view 1 (no coordinator answered).
    pub fn found_cluster(&mut self, now: Instant) {
        let me = self.me.clone().with_view_id(ViewId(1));
        self.role = Role::Member;
        self.install(now, View::new(ViewId(1), [me]), Vec::new(), Vec::new());
    }

    /// Asks `coordinator` to admit this member, repeating until answered or timed out.
    pub fn join(&mut self, now: Instant, coordinator: MemberId, credentials: Credentials) {
        self.send(
            vec![coordinator.clone()],
            GmsMessage::JoinRequest {
                member: self.me.clone(),
                credentials: credentials.clone(),
            },
        );
        self.role = Role::Joining {
            coordinator,
            credentials,
            retry_at: now + self.config.join_retry,
            deadline: now + self.config.join_timeout,
        };
    }

    /// Leaves the cluster gracefully. The coordinator installs the next view without
    /// itself at once; any other member asks the coordinator.
    pub fn leave(&mut self, now: Instant) {
        if !matches!(self.role, Role::Member) {
            return;
        }
        if self.is_coordinator() {
            self.pending_leaves.push(self.me.clone());
            self.batch_at = Some(now);
            self.role = Role::Leaving {
                deadline: now + self.config.leave_timeout,
            };
            self.handle_timeout(now);
            return;
        }
        if let Some(coordinator) = self.view.as_ref().and_then(View::coordinator).cloned() {
            self.send(
                vec![coordinator],
                GmsMessage::LeaveRequest {
                    member: self.me.clone(),
                },
            );
        }
        self.role = Role::Leaving {
            deadline: now + self.config.leave_timeout,
        };
    }

    /// A message from `from` (as authenticated by the transport). From a process outside
    /// the cluster only a join request is taken; anything else is dropped and counted.
    pub fn handle_message(&mut self, now: Instant, from: &MemberId, message: GmsMessage) {
        if !self.hears_from(from, &message) {
            self.stats.dropped_from_non_members += 1;
            tracing::debug!(?from, "dropped a membership message from a non-member");
            return;
        }
        if matches!(message, GmsMessage::JoinRequest { .. })
            && !self.is_known(from)
            && !self.join_limiter.allow(now, from.address())
        {
            self.stats.join_requests_rate_limited += 1;
            tracing::debug!(?from, "dropped a join request: its address asks too often");
            return;
        }
        match message {
            GmsMessage::JoinRequest {
                member,
                credentials,
            } => self.on_join_request(now, from, member, &credentials),
            GmsMessage::JoinRejected { reason } => {
                if let Role::Joining { coordinator, .. } = &self.role {
                    if coordinator == from {
                        self.role = Role::Gone;
                        self.event(MembershipEvent::JoinRejected {
                            by: from.clone(),
                            reason,
                        });
                    }
                }
            }
            GmsMessage::LeaveRequest { member } => {
                // A member can only ask for its own removal.
                if &member == from && self.coordinating() && self.in_view(&member) {
                    if !self.pending_leaves.contains(&member) {
                        self.pending_leaves.push(member);
                    }
                    self.schedule(now);
                }
            }
            GmsMessage::PrepareView { view } => {
                if self.accepts_view_from(from, &view) {
                    self.send(
                        vec![from.clone()],
                        GmsMessage::PrepareAck { view_id: view.id() },
                    );
                    self.prepared = Some(view);
                }
            }
            GmsMessage::PrepareAck { view_id } => self.on_prepare_ack(now, from, view_id),
            GmsMessage::NotCoordinator { coordinator } => {
                // Only the member this joiner asked may redirect it.
                if let Role::Joining {
                    coordinator: asked,
                    credentials,
                    retry_at,
                    ..
                } = &mut self.role
                    && asked == from
                    && coordinator != self.me
                {
                    *asked = coordinator.clone();
                    *retry_at = now + self.config.join_retry;
                    let credentials = credentials.clone();
                    let member = self.me.clone();
                    self.send(
                        vec![coordinator],
                        GmsMessage::JoinRequest {
                            member,
                            credentials,
                        },
                    );
                }
            }
            GmsMessage::InstallView {
                view,
                left,
                crashed,
            } => {
                if self.accepts_view_from(from, &view) {
                    self.install(now, view, left, crashed);
                }
            }
            GmsMessage::Suspect { members, reason } => {
                if matches!(self.role, Role::Member | Role::Leaving { .. }) {
                    // A suspicion that overtook its own clearing is stale here; the checker
                    // itself always looks again.
                    let checking = self.checker().as_ref() == Some(&self.me);
                    let members = members
                        .into_iter()
                        .filter(|m| checking || !self.cleared_recently(m, now))
                        .collect::<Vec<MemberId>>();
                    for member in &members {
                        let by = self.suspected_by.entry(member.uuid()).or_default();
                        if !by.contains(from) {
                            by.push(from.clone());
                        }
                    }
                    self.note_suspects(members, &reason);
                    self.run_checks(now);
                }
            }
            GmsMessage::Cleared { member } => {
                self.clear(now, &member);
            }
            GmsMessage::NetworkPartition { reason } => {
                // Only the member that coordinates this side decides that it lost quorum.
                let coordinator = self.view.as_ref().and_then(View::coordinator).cloned();
                let decider = self.checker();
                let trusted = decider.as_ref() == Some(from) || coordinator.as_ref() == Some(from);
                if trusted && matches!(self.role, Role::Member) {
                    self.shut_down_for_partition(reason);
                }
            }
        }
    }

    /// Time has passed: retries, timeouts, heartbeats, the end of a batching interval.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.detector.poll_timeout().is_some_and(|at| now >= at) {
            self.detector_tick(now);
        }
        let coordinating = self.coordinating();
        match &mut self.role {
            Role::Joining {
                coordinator,
                credentials,
                retry_at,
                deadline,
            } => {
                if now >= *deadline {
                    self.role = Role::Gone;
                    self.event(MembershipEvent::JoinTimedOut);
                    return;
                }
                if now >= *retry_at {
                    *retry_at = now + self.config.join_retry;
                    let (to, credentials) = (coordinator.clone(), credentials.clone());
                    let member = self.me.clone();
                    self.send(
                        vec![to],
                        GmsMessage::JoinRequest {
                            member,
                            credentials,
                        },
                    );
                }
                return;
            }
            Role::Leaving { deadline } if now >= *deadline && !coordinating => {
                self.role = Role::Gone;
                self.event(MembershipEvent::Left);
                return;
            }
            // A member that asked to leave and then became the coordinator itself (the
            // old one left too, or crashed): its request went to the old coordinator, so
            // it takes its own leave in hand, as a coordinator that leaves does.
            Role::Leaving { .. }
                if coordinating
                    && !self.pending_leaves.contains(&self.me)
                    && self.round.is_none()
                    && self.view.as_ref().is_some_and(|v| v.contains(&self.me)) =>
            {
                self.pending_leaves.push(self.me.clone());
                self.batch_at = Some(now);
            }
            _ => {}
        }
        if !self.coordinating() {
            return;
        }
        if let Some(round) = &self.round {
            if now >= round.deadline {
                self.prepare_again_without_silent(now);
            }
            return;
        }
        if self.batch_at.is_some_and(|at| now >= at) && self.checking.is_empty() {
            self.batch_at = None;
            self.start_round(now);
        }
    }

    /// The next output to act on.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Gms::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let coordinating = self.coordinating();
        let role = match &self.role {
            Role::Joining {
                retry_at, deadline, ..
            } => Some((*retry_at).min(*deadline)),
            // A leaving coordinator finishes its round first; the round has its own deadline.
            Role::Leaving { deadline } if !coordinating => Some(*deadline),
            _ => None,
        };
        let round = self.round.as_ref().map(|r| r.deadline);
        let batch = self
            .batch_at
            .filter(|_| coordinating && self.round.is_none() && self.checking.is_empty());
        let detector = self.detector.poll_timeout();
        [role, round, batch, detector].into_iter().flatten().min()
    }

    // ---- coordinator ----

    /// True while this member runs view changes: the coordinator, including one that is
    /// leaving and still has to install the view without itself.
    fn coordinating(&self) -> bool {
        let coordinator = self
            .view
            .as_ref()
            .and_then(|v| v.coordinator_among(|m| !self.dead.contains(&m.uuid())));
        matches!(self.role, Role::Member | Role::Leaving { .. }) && coordinator == Some(&self.me)
    }

    /// Who runs final checks: the coordinator of the view without the suspects (this member
    /// never counts itself suspect), so that the successor checks a suspected coordinator.
    fn checker(&self) -> Option<MemberId> {
        let view = self.view.as_ref()?;
        view.coordinator_among(|m| *m == self.me || !self.suspects.contains_key(&m.uuid()))
            .cloned()
    }

    fn detector_tick(&mut self, now: Instant) {
        let tick = self.detector.tick(now);
        if tick.paused {
            tracing::warn!(member = ?self.me, "this member was paused: suspecting nobody this round");
        }
        if !tick.heartbeat_to.is_empty() {
            self.outputs.push_back(Output::Heartbeat {
                to: tick.heartbeat_to,
            });
        }
        if !tick.suspects.is_empty() && matches!(self.role, Role::Member) {
            let reason = format!("no sign of life for {:?}", self.config.member_timeout);
            self.raise_suspicion(now, tick.suspects, reason);
        }
        if !tick.paused {
            self.escalate(now);
        }
    }

    /// Suspicions that nobody settles mean the checker itself is gone (or cut off from
    /// this member, which for this side is the same): after twice the member timeout the
    /// checker is suspected too, so the next member in line checks them all. This is how
    /// the members on the far side of a partition from their checker get a checker again.
    fn escalate(&mut self, now: Instant) {
        let checker = self.checker();
        let waiting = matches!(self.role, Role::Member)
            && !self.suspects.is_empty()
            && checker.as_ref().is_some_and(|c| *c != self.me);
        if !waiting {
            self.unresolved_since = None;
            return;
        }
        let since = *self.unresolved_since.get_or_insert(now);
        let patience = self.config.member_timeout * 2;
        if now.saturating_duration_since(since) >= patience
            && let Some(checker) = checker
        {
            self.unresolved_since = Some(now);
            let reason = format!("left suspicions unsettled for {patience:?}");
            // The next checker needs every open suspicion, not only the one of its
            // predecessor.
            let mut members: Vec<MemberId> = self.suspects.values().cloned().collect();
            members.push(checker);
            self.raise_suspicion(now, members, reason);
        }
    }

    /// Tells every other member of the view, and acts on it here too.
    fn raise_suspicion(&mut self, now: Instant, members: Vec<MemberId>, reason: String) {
        let Some(view) = self.view.clone() else {
            return;
        };
        tracing::info!(suspects = ?members, %reason, "suspecting");
        self.note_suspects(members.clone(), &reason);
        // Told to the coordinator and to whoever checks now (the successor, when the
        // coordinator is a suspect), not to everyone: a broadcast in a large view would
        // connect every pair of members.
        let mut told: Vec<MemberId> = Vec::new();
        for member in [view.coordinator().cloned(), self.checker()]
            .into_iter()
            .flatten()
        {
            if member != self.me && !told.contains(&member) {
                told.push(member);
            }
        }
        self.send(told, GmsMessage::Suspect { members, reason });
        self.run_checks(now);
    }

    fn note_suspects(&mut self, members: Vec<MemberId>, reason: &str) {
        for member in members {
            if member == self.me || !self.in_view(&member) {
                continue;
            }
            if self
                .suspects
                .insert(member.uuid(), member.clone())
                .is_none()
            {
                self.event(MembershipEvent::Suspect {
                    member,
                    reason: reason.to_owned(),
                });
            }
        }
    }

    /// If this member is the checker, asks for a final check of every suspect not yet
    /// checked.
    fn run_checks(&mut self, now: Instant) {
        if !matches!(self.role, Role::Member | Role::Leaving { .. })
            || self.checker().as_ref() != Some(&self.me)
        {
            return;
        }
        let due: Vec<MemberId> = self
            .suspects
            .values()
            .filter(|m| !self.checking.contains_key(&m.uuid()) && !self.dead.contains(&m.uuid()))
            .cloned()
            .collect();
        for member in due {
            self.start_check(now, member, 0);
        }
    }

    /// Asks the driver for a final check of `member` (the `repeats`th repeat), counted.
    fn start_check(&mut self, now: Instant, member: MemberId, repeats: u32) {
        self.checking.insert(member.uuid(), (now, repeats));
        self.stats.final_checks += 1;
        self.outputs.push_back(Output::Check { member });
    }

    /// True if a final check cleared `member` within twice the member timeout: suspicions
    /// of it from then are stale (or forged) and settle nothing new.
    fn cleared_recently(&self, member: &MemberId, now: Instant) -> bool {
        let window = self.config.member_timeout * 2;
        self.cleared_at
            .get(&member.uuid())
            .is_some_and(|at| now.saturating_duration_since(*at) <= window)
    }

    fn clear(&mut self, now: Instant, member: &MemberId) {
        self.suspects.remove(&member.uuid());
        self.cleared_at.insert(member.uuid(), now);
        self.detector.cleared(member.uuid(), now);
    }

    /// The weight of `member` in `view`, for network-partition detection: locator 3,
    /// admin 0, member 10, and 5 more for the lead member (the oldest member of kind
    /// Member), plus the member's own adjustment.
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
        let bonus = if lead == Some(member) { 5 } else { 0 };
        (base + bonus + i64::from(member.attributes().weight_adjustment)).max(0)
    }

    /// True if removing `crashed` from `view` takes at least half of its weight.
    fn loses_quorum(view: &View, crashed: &[MemberId]) -> Option<String> {
        let total: i64 = view.members().iter().map(|m| Self::weight(view, m)).sum();
        let lost: i64 = crashed.iter().map(|m| Self::weight(view, m)).sum();
        (total > 0 && lost * 2 >= total).then(|| {
            format!(
                "network partition: {} crashed members of view {} weigh {lost} of its {total}; \
                 this side no longer holds a quorum",
                crashed.len(),
                view.id()
            )
        })
    }

    fn shut_down_for_partition(&mut self, reason: String) {
        tracing::error!(member = ?self.me, %reason, "shutting down");
        self.role = Role::Gone;
        self.round = None;
        self.detector.stop();
        self.event(MembershipEvent::ForcedDisconnect { reason });
    }

    fn on_join_request(
        &mut self,
        now: Instant,
        from: &MemberId,
        member: MemberId,
        credentials: &Credentials,
    ) {
        // A member can only ask to admit itself, and only the coordinator admits; others
        // point the joiner to the coordinator they know.
        if &member != from {
            return;
        }
        if !self.coordinating() || matches!(self.role, Role::Leaving { .. }) {
            let coordinator = self.view.as_ref().and_then(View::coordinator).cloned();
            if let Some(coordinator) = coordinator.filter(|c| *c != self.me) {
                self.send(vec![member], GmsMessage::NotCoordinator { coordinator });
            }
            return;
        }
        let Some(view) = self.view.clone() else {
            return;
        };
        if view.contains(&member) {
            // Already admitted: its install was lost. Say it again.
            self.send(
                vec![member],
                GmsMessage::InstallView {
                    view,
                    left: Vec::new(),
                    crashed: Vec::new(),
                },
            );
            return;
        }
        let in_round = self
            .round
            .as_ref()
            .is_some_and(|r| r.joiners.contains(&member));
        if in_round || self.pending_joins.contains(&member) {
            // A retry of a join already on its way in.
            return;
        }
        if let Some(reason) = self.refusal(&view, &member, credentials) {
            tracing::info!(joiner = ?member, %reason, "join refused");
            self.send(vec![member], GmsMessage::JoinRejected { reason });
            return;
        }
        // Two live processes cannot share one UDP port: a joiner at the address of a member
        // with its name is that member restarted, and the old incarnation is gone.
        if let Some(old) = view.members().iter().find(|m| is_restart_of(&member, m))
            && !self.pending_removals.contains(old)
        {
            tracing::info!(old = ?old, new = ?member, "member restarted: removing its old incarnation");
            self.pending_removals.push(old.clone());
        }
        if !self.pending_joins.contains(&member) {
            self.pending_joins.push(member);
        }
        self.schedule(now);
    }

    fn refusal(
        &self,
        view: &View,
        member: &MemberId,
        credentials: &Credentials,
    ) -> Option<JoinRejection> {
        if let Err(reason) = self.authenticator.authenticate(member, credentials) {
            return Some(JoinRejection::Authentication(reason));
        }
        let newest = view.members().iter().map(MemberId::version).max();
        if let Some(cluster) = newest.filter(|v| member.version() < *v) {
            return Some(JoinRejection::VersionRefused {
                joining: member.version(),
                cluster,
            });
        }
        let in_round = self.round.iter().flat_map(|r| &r.joiners);
        let name_taken = view
            .members()
            .iter()
            .chain(&self.pending_joins)
            .chain(in_round)
            .any(|m| m.name() == member.name() && m != member && !is_restart_of(member, m));
        name_taken.then(|| JoinRejection::NameInUse(member.name().to_owned()))
    }

    fn schedule(&mut self, now: Instant) {
        if self.batch_at.is_none() {
            self.batch_at = Some(now + self.config.batch_interval);
        }
    }

    fn start_round(&mut self, now: Instant) {
        let Some(current) = self.view.clone() else {
            return;
        };
        let leaving: Vec<MemberId> = take_in(&mut self.pending_leaves, &current);
        let crashed: Vec<MemberId> = take_in(&mut self.pending_removals, &current);
        if self.config.partition_detection
            && let Some(reason) = Self::loses_quorum(&current, &crashed)
        {
            // This side is the minority: tell the members still here, and stop.
            let survivors: Vec<MemberId> = others(&current, &self.me)
                .into_iter()
                .filter(|m| !crashed.contains(m))
                .collect();
            self.send(
                survivors,
                GmsMessage::NetworkPartition {
                    reason: reason.clone(),
                },
            );
            self.shut_down_for_partition(reason);
            return;
        }
        // A successor carries on past any view its dead predecessor prepared, and keeps the
        // joiners admitted in it (they acknowledged and are waiting).
        let prepared = self.prepared.clone().filter(|p| p.id() > current.id());
        let last_id = prepared.as_ref().map_or(current.id(), View::id);
        let next_id = ViewId(last_id.0 + 1);
        if let Some(prepared) = &prepared {
            for joiner in prepared.members().iter().filter(|m| !current.contains(m)) {
                if !self.pending_joins.contains(joiner) {
                    self.pending_joins.push(joiner.clone());
                }
            }
        }
        let joiners: Vec<MemberId> = std::mem::take(&mut self.pending_joins)
            .into_iter()
            .filter(|m| !current.contains(m))
            .map(|m| m.with_view_id(next_id))
            .collect();
        if leaving.is_empty() && crashed.is_empty() && joiners.is_empty() {
            return;
        }
        let out: HashSet<Uuid> = leaving.iter().chain(&crashed).map(MemberId::uuid).collect();
        let members = current
            .members()
            .iter()
            .filter(|m| !out.contains(&m.uuid()))
            .cloned()
            .chain(joiners.iter().cloned());
        let view = View::new(next_id, members);
        let waiting: HashSet<Uuid> = view
            .members()
            .iter()
            .map(MemberId::uuid)
            .filter(|u| *u != self.me.uuid())
            .collect();
        let recipients = others(&view, &self.me);
        tracing::debug!(view = %view, joiners = joiners.len(), leaving = leaving.len(), crashed = crashed.len(), "preparing view");
        self.round = Some(Round {
            view: view.clone(),
            waiting,
            deadline: now + self.config.prepare_timeout,
            joiners,
            leaving,
            crashed,
        });
        if recipients.is_empty() {
            self.complete_round(now);
        } else {
            self.prepared = Some(view.clone());
            self.send(recipients, GmsMessage::PrepareView { view });
        }
    }

    fn on_prepare_ack(&mut self, now: Instant, from: &MemberId, view_id: ViewId) {
        let Some(round) = &mut self.round else {
            return;
        };
        if round.view.id() != view_id {
            return;
        }
        round.waiting.remove(&from.uuid());
        if round.waiting.is_empty() {
            self.complete_round(now);
        }
    }

    fn complete_round(&mut self, now: Instant) {
        let Some(round) = self.round.take() else {
            return;
        };
        let mut recipients = others(&round.view, &self.me);
        // The members that left learn that they are out, and so do the ones removed as
        // crashed (one that was only slow must learn it is out, to rejoin).
        recipients.extend(
            round
                .leaving
                .iter()
                .chain(&round.crashed)
                .filter(|m| **m != self.me)
                .cloned(),
        );
        self.send(
            recipients,
            GmsMessage::InstallView {
                view: round.view.clone(),
                left: round.leaving.clone(),
                crashed: round.crashed.clone(),
            },
        );
        self.install(now, round.view, round.leaving, round.crashed);
        let more = !self.pending_joins.is_empty()
            || !self.pending_leaves.is_empty()
            || !self.pending_removals.is_empty();
        if more && self.coordinating() {
            self.schedule(now);
        }
    }

    /// Members of the view that did not acknowledge in time are suspected and checked (a
    /// busy member is not expelled for being slow; one the final check finds dead is removed
    /// in the next round); joiners that did not acknowledge are simply not admitted and may
    /// try again. The round is dropped and starts over once the checks are done.
    fn prepare_again_without_silent(&mut self, now: Instant) {
        let Some(round) = self.round.take() else {
            return;
        };
        let silent = round.waiting;
        tracing::warn!(view = %round.view, silent = silent.len(), "members did not acknowledge the prepared view");
        let current = self.view.clone();
        let silent_members: Vec<MemberId> = round
            .view
            .members()
            .iter()
            .filter(|m| {
                silent.contains(&m.uuid()) && current.as_ref().is_some_and(|v| v.contains(m))
            })
            .cloned()
            .collect();
        self.pending_joins.extend(
            round
                .joiners
                .into_iter()
                .filter(|j| !silent.contains(&j.uuid())),
        );
        self.pending_leaves.extend(round.leaving);
        self.pending_removals.extend(round.crashed);
        if !silent_members.is_empty() {
            let reason = format!(
                "did not acknowledge view {} within {:?}",
                round.view.id(),
                self.config.prepare_timeout
            );
            self.raise_suspicion(now, silent_members, reason);
        }
        self.schedule(now);
    }

    // ---- every member ----

    /// Whether a message from `from` is taken at all: a join request from anyone; while
    /// joining, anything from the coordinator asked; otherwise only from members of the
    /// installed view or of a view being prepared (an admitted joiner acknowledges before
    /// it is installed).
    fn hears_from(&self, from: &MemberId, message: &GmsMessage) -> bool {
        if matches!(message, GmsMessage::JoinRequest { .. }) {
            return true;
        }
        if let Role::Joining { coordinator, .. } = &self.role {
            return coordinator == from;
        }
        self.is_known(from)
    }

    /// True if `member` is in the view, or in a view being prepared.
    fn is_known(&self, member: &MemberId) -> bool {
        self.in_view(member)
            || self.prepared.as_ref().is_some_and(|v| v.contains(member))
            || self.round.as_ref().is_some_and(|r| r.view.contains(member))
    }

    fn view_id(&self) -> ViewId {
        self.view.as_ref().map_or(ViewId(0), View::id)
    }

    fn in_view(&self, member: &MemberId) -> bool {
        self.view.as_ref().is_some_and(|v| v.contains(member))
    }

    /// A proposed or installed view is taken from the coordinator of the current view, or
    /// from its successor: a member of the current view that coordinates the proposed view
    /// from which the current coordinator is gone. A joiner takes one only from the
    /// coordinator it asked. Older views are ignored.
    fn accepts_view_from(&self, from: &MemberId, view: &View) -> bool {
        let newer = self.view.as_ref().is_none_or(|v| view.id() > v.id());
        let trusted = match (&self.view, &self.role) {
            (Some(current), _) => {
                let coordinator = current.coordinator();
                coordinator == Some(from)
                    || (current.contains(from)
                        && view.coordinator() == Some(from)
                        && coordinator.is_some_and(|c| !view.contains(c)))
            }
            (None, Role::Joining { coordinator, .. }) => {
                coordinator == from && view.contains(&self.me)
            }
            (None, _) => false,
        };
        newer && trusted && !matches!(self.role, Role::Gone | Role::Idle)
    }

    fn install(&mut self, now: Instant, view: View, left: Vec<MemberId>, crashed: Vec<MemberId>) {
        let before: HashSet<Uuid> = self
            .view
            .iter()
            .flat_map(|v| v.members().iter().map(MemberId::uuid))
            .collect();
        let joined: Vec<MemberId> = view
            .members()
            .iter()
            .filter(|m| !before.contains(&m.uuid()))
            .cloned()
            .collect();
        let included = view.contains(&self.me);
        let was_coordinating = self.coordinating();
        self.view = Some(view.clone());
        // Suspicions and checks about members no longer in the view are settled.
        self.suspects.retain(|uuid, _| view.contains_uuid(*uuid));
        self.checking.retain(|uuid, _| view.contains_uuid(*uuid));
        self.dead.retain(|uuid| view.contains_uuid(*uuid));
        self.cleared_at.retain(|uuid, _| view.contains_uuid(*uuid));
        self.suspected_by
            .retain(|uuid, _| view.contains_uuid(*uuid));
        if included {
            self.detector.view_installed(now, &view, &self.me);
        } else {
            self.detector.stop();
        }
        if was_coordinating && !self.coordinating() {
            self.hand_over(&view);
        }
        self.prepared = None;
        self.event(MembershipEvent::ViewInstalled {
            view,
            joined,
            left,
            crashed,
        });
        match (&self.role, included) {
            (Role::Joining { .. }, true) => self.role = Role::Member,
            (Role::Leaving { .. }, false) => {
                self.role = Role::Gone;
                self.event(MembershipEvent::Left);
            }
            (Role::Member, false) => {
                self.role = Role::Gone;
                self.event(MembershipEvent::ForcedDisconnect {
                    reason: format!("view {} removed this member as crashed", self.view_id()),
                });
            }
            _ => {}
        }
        // The checker may have changed with the view (a new coordinator).
        self.run_checks(now);
    }

    /// This member stopped coordinating (a locator joined and is preferred, or it left):
    /// joiners still waiting are pointed to the new coordinator; leaves and removals it had
    /// collected are dropped (members still in the view repeat a leave when it times out,
    /// and failure detection finds crashed ones again).
    fn hand_over(&mut self, view: &View) {
        self.batch_at = None;
        self.pending_leaves.clear();
        self.pending_removals.clear();
        let joiners = std::mem::take(&mut self.pending_joins);
        if let Some(coordinator) = view.coordinator().cloned().filter(|c| *c != self.me) {
            for joiner in joiners.into_iter().filter(|j| !view.contains(j)) {
                let coordinator = coordinator.clone();
                self.send(vec![joiner], GmsMessage::NotCoordinator { coordinator });
            }
        }
    }

    fn send(&mut self, to: Vec<MemberId>, message: GmsMessage) {
        if !to.is_empty() {
            self.outputs.push_back(Output::Send { to, message });
        }
    }

    fn event(&mut self, event: MembershipEvent) {
        match &event {
            MembershipEvent::ViewInstalled { crashed, .. } => {
                self.stats.views_installed += 1;
                self.stats.members_removed += crashed.len() as u64;
            }
            MembershipEvent::Suspect { .. } => self.stats.suspicions += 1,
            MembershipEvent::ForcedDisconnect { .. } => self.stats.forced_disconnects += 1,
            _ => {}
        }
        self.outputs.push_back(Output::Event(event));
    }
}

impl std::fmt::Debug for Gms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gms")
            .field("me", &self.me)
            .field("role", &self.role)
            .field("view", &self.view.as_ref().map(View::id))
            .finish()
    }
}

/// True if `joiner` is `existing` restarted: same name, same address, new identity.
fn is_restart_of(joiner: &MemberId, existing: &MemberId) -> bool {
    joiner != existing && joiner.name() == existing.name() && joiner.address() == existing.address()
}

/// Every member of `view` but `me`.
fn others(view: &View, me: &MemberId) -> Vec<MemberId> {
    view.members()
        .iter()
        .filter(|m| *m != me)
        .cloned()
        .collect()
}

/// Removes and returns the entries of `pending` that are in `view`.
fn take_in(pending: &mut Vec<MemberId>, view: &View) -> Vec<MemberId> {
    let (inside, _outside): (Vec<_>, Vec<_>) = std::mem::take(pending)
        .into_iter()
        .partition(|m| view.contains(m));
    inside
}

#[cfg(test)]
mod tests {
    use cohort_transport::MemberKind;

    use super::*;
    use crate::auth::AllowAll;

    fn member(port: u16) -> MemberId {
        let address = format!("127.0.0.1:{port}").parse().expect("literal");
        MemberId::new(format!("m{port}"), address, MemberKind::Member)
    }

    #[test]
    fn a_non_member_may_only_ask_to_join_everything_else_is_dropped_and_counted() {
        let now = Instant::now();
        let mut gms = Gms::new(member(1), GmsConfig::default(), Arc::new(AllowAll));
        gms.found_cluster(now);
        while gms.poll_output().is_some() {}
        let stranger = member(2);
        let forged = View::new(ViewId(9), [stranger.clone()]);
        let attempts = [
            GmsMessage::InstallView {
                view: forged.clone(),
                left: Vec::new(),
                crashed: vec![gms.me().clone()],
            },
            GmsMessage::PrepareView { view: forged },
            GmsMessage::LeaveRequest {
                member: stranger.clone(),
            },
            GmsMessage::PrepareAck { view_id: ViewId(2) },
        ];
        for message in attempts {
            gms.handle_message(now, &stranger, message);
        }
        assert_eq!(gms.stats().dropped_from_non_members, 4);
        assert_eq!(gms.view().map(View::id), Some(ViewId(1)));
        assert!(gms.poll_output().is_none(), "no answer to a non-member");

        // A join request is heard, and admits it.
        gms.handle_message(
            now,
            &stranger,
            GmsMessage::JoinRequest {
                member: stranger.clone(),
                credentials: Credentials::default(),
            },
        );
        gms.handle_timeout(now + Duration::from_secs(1));
        let view_id = gms.prepared().map(View::id).expect("a view is prepared");
        gms.handle_message(now, &stranger, GmsMessage::PrepareAck { view_id });
        assert_eq!(gms.view().map(|v| v.contains(&stranger)), Some(true));
        assert_eq!(gms.stats().dropped_from_non_members, 4);
    }

    #[test]
    fn a_restarted_member_replaces_its_old_incarnation_instead_of_being_refused() {
        let now = Instant::now();
        let mut gms = Gms::new(member(1), GmsConfig::default(), Arc::new(AllowAll));
        gms.found_cluster(now);
        let old = member(2);
        let join = |gms: &mut Gms, m: &MemberId, at: Instant| {
            gms.handle_message(
                at,
                m,
                GmsMessage::JoinRequest {
                    member: m.clone(),
                    credentials: Credentials::default(),
                },
            );
            gms.handle_timeout(at + Duration::from_secs(1));
            let view_id = gms.prepared().map(View::id).expect("a view is prepared");
            gms.handle_message(at, m, GmsMessage::PrepareAck { view_id });
        };
        join(&mut gms, &old, now);
        assert!(gms.view().is_some_and(|v| v.contains(&old)));
        // Same name and address, new identity: the old one is out, the new one in, at once.
        let new = member(2);
        join(&mut gms, &new, now + Duration::from_secs(2));
        let view = gms.view().expect("view");
        assert!(view.contains(&new) && !view.contains(&old), "{view}");
        // Another process taking the name from elsewhere is still refused.
        let mut thief = MemberId::new(
            "m2",
            "127.0.0.1:3".parse().expect("literal"),
            MemberKind::Member,
        );
        thief = thief.with_uuid(uuid::Uuid::new_v4());
        while gms.poll_output().is_some() {}
        gms.handle_message(
            now + Duration::from_secs(4),
            &thief,
            GmsMessage::JoinRequest {
                member: thief.clone(),
                credentials: Credentials::default(),
            },
        );
        let refused = std::iter::from_fn(|| gms.poll_output()).any(|o| {
            matches!(
                o,
                Output::Send {
                    message: GmsMessage::JoinRejected {
                        reason: JoinRejection::NameInUse(_)
                    },
                    ..
                }
            )
        });
        assert!(refused);
    }

    #[test]
    fn a_leaving_member_that_becomes_coordinator_finishes_its_own_leave() {
        let now = Instant::now();
        let (a, b) = (member(1), member(2));
        let mut coordinator = Gms::new(a.clone(), GmsConfig::default(), Arc::new(AllowAll));
        coordinator.found_cluster(now);
        coordinator.handle_message(
            now,
            &b,
            GmsMessage::JoinRequest {
                member: b.clone(),
                credentials: Credentials::default(),
            },
        );
        coordinator.handle_timeout(now + Duration::from_secs(1));
        let view_id = coordinator.prepared().map(View::id).expect("prepared");
        coordinator.handle_message(now, &b, GmsMessage::PrepareAck { view_id });
        let two = coordinator.view().cloned().expect("a view of two");
        let mut leaver = Gms::new(b.clone(), GmsConfig::default(), Arc::new(AllowAll));
        leaver.join(now, a.clone(), Credentials::default());
        leaver.handle_message(now, &a, GmsMessage::PrepareView { view: two.clone() });
        leaver.handle_message(
            now,
            &a,
            GmsMessage::InstallView {
                view: two.clone(),
                left: Vec::new(),
                crashed: Vec::new(),
            },
        );
        assert!(leaver.is_member());
        // b asks to leave; its request goes to a, which leaves at the same moment and
        // installs the view without itself: b is alone, and the coordinator.
        let at = now + Duration::from_secs(2);
        leaver.leave(at);
        let alone = View::new(ViewId(two.id().0 + 1), [b.clone()]);
        leaver.handle_message(
            at,
            &a,
            GmsMessage::InstallView {
                view: alone,
                left: vec![a.clone()],
                crashed: Vec::new(),
            },
        );
        let mut left = false;
        let mut clock = at;
        for _ in 0..200 {
            clock += Duration::from_millis(50);
            leaver.handle_timeout(clock);
            while let Some(output) = leaver.poll_output() {
                left |= matches!(output, Output::Event(MembershipEvent::Left));
            }
            if left {
                break;
            }
        }
        assert!(left, "the leave finished, by {:?}", clock - at);
    }

    #[test]
    fn an_unreachable_hint_checks_at_once_and_forged_repeats_cost_nothing_more() {
        let now = Instant::now();
        let mut gms = Gms::new(member(1), GmsConfig::default(), Arc::new(AllowAll));
        gms.found_cluster(now);
        let other = member(2);
        gms.handle_message(
            now,
            &other,
            GmsMessage::JoinRequest {
                member: other.clone(),
                credentials: Credentials::default(),
            },
        );
        gms.handle_timeout(now + Duration::from_secs(1));
        let view_id = gms.prepared().map(View::id).expect("a view is prepared");
        gms.handle_message(now, &other, GmsMessage::PrepareAck { view_id });
        while gms.poll_output().is_some() {}
        let checks = |gms: &mut Gms| {
            std::iter::from_fn(|| gms.poll_output())
                .filter(|o| matches!(o, Output::Check { member } if *member == other))
                .count()
        };
        // Timers run as a driver would run them, so the detector never looks stalled; no
        // heartbeat is missed yet (the first-contact grace is five member timeouts).
        let mut clock = now;
        let mut run_until = |gms: &mut Gms, until: Instant| {
            while clock < until {
                clock += Duration::from_millis(50);
                gms.handle_timeout(clock);
            }
        };

        // Long before any member timeout: the coordinator (the checker) checks at once.
        let at = now + Duration::from_secs(1);
        run_until(&mut gms, at);
        while gms.poll_output().is_some() {}
        gms.unreachable(at, &other, "ICMP port unreachable");
        assert_eq!(checks(&mut gms), 1);
        // Repeats while the check runs change nothing.
        gms.unreachable(at, &other, "ICMP port unreachable");
        assert_eq!(checks(&mut gms), 0);
        // The check passes (the report was forged): more reports soon after are ignored...
        gms.check_result(at, &other, CheckOutcome::Alive);
        run_until(&mut gms, at + Duration::from_millis(500));
        gms.unreachable(at + Duration::from_millis(500), &other, "forged");
        assert_eq!(checks(&mut gms), 0);
        // ...until twice the member timeout has passed.
        run_until(&mut gms, at + Duration::from_secs(3));
        gms.unreachable(at + Duration::from_secs(3), &other, "forged");
        assert_eq!(checks(&mut gms), 1);
        assert_eq!(gms.stats().unreachable_suspicions, 2);
        // A report about this member itself, or a stranger, is nothing.
        let me = gms.me().clone();
        gms.unreachable(at, &me, "x");
        gms.unreachable(at, &member(9), "x");
        assert_eq!(gms.stats().unreachable_suspicions, 2);
        // The second check fails: removed in the next view.
        gms.check_result(at + Duration::from_secs(3), &other, CheckOutcome::NoAnswer);
        run_until(&mut gms, at + Duration::from_millis(3200));
        let view = gms.view().expect("view");
        assert!(!view.contains(&other), "{view}");
        // Every step was counted.
        let stats = gms.stats();
        assert_eq!((stats.final_checks, stats.final_checks_passed), (2, 1));
        assert_eq!((stats.final_checks_failed, stats.members_removed), (1, 1));
        assert_eq!(stats.suspicions, 2);
        // View 1 (founded), view 2 (the joiner), view 3 (without it).
        assert_eq!(stats.views_installed, 3);
        assert_eq!(stats.forced_disconnects, 0);
    }
    #[test]
    fn join_requests_from_one_address_outside_the_cluster_are_rate_limited() {
        let now = Instant::now();
        let mut gms = Gms::new(member(1), GmsConfig::default(), Arc::new(AllowAll));
        gms.found_cluster(now);
        while gms.poll_output().is_some() {}
        let per_second = GmsConfig::default().max_join_requests_per_second_per_address;
        // One process floods join requests under ever new member ids from one address.
        let flood = member(2).address();
        for _ in 0..per_second * 5 {
            let id = MemberId::new("flood", flood, MemberKind::Member);
            let request = GmsMessage::JoinRequest {
                member: id.clone(),
                credentials: Credentials::default(),
            };
            gms.handle_message(now, &id, request);
        }
        let limited = gms.stats().join_requests_rate_limited;
        assert_eq!(
            limited,
            u64::from(per_second * 3),
            "all but the burst of twice the rate"
        );
        // Another address is heard at once, and the flooding one again a second later.
        let other = member(3);
        let request = |m: &MemberId| GmsMessage::JoinRequest {
            member: m.clone(),
            credentials: Credentials::default(),
        };
        gms.handle_message(now, &other, request(&other));
        let later = MemberId::new("flood", flood, MemberKind::Member);
        gms.handle_message(now + Duration::from_secs(1), &later, request(&later));
        assert_eq!(gms.stats().join_requests_rate_limited, limited);
    }
}
