//! [`Gms`]: the membership protocol as a sans-IO state machine.
//!
//! Inputs are method calls with the current time (`found_cluster`, `join`, `leave`,
//! `handle_message`, `handle_timeout`, and the driver's reports: signs of life, heartbeat
//! view ids, final-check results, refusals); outputs are polled ([`Gms::poll_output`]:
//! messages to send, checks to run, a view being prepared, events) together with the next
//! deadline ([`Gms::poll_timeout`]); [`Gms`] states the contract a driver keeps. It
//! never reads a clock, sleeps or does I/O, so the same code runs under tokio and in a
//! deterministic simulation of thousands of members under every kind of fault.
//!
//! Each view change is one decree of single-decree Paxos over the base view's members
//! (`gms/round.rs` proposes, `gms/vote.rs` accepts, `gms/quorum.rs` weighs):
//!
//! ```text
//! joiner ──JoinRequest──► coordinator: authenticate, version gate, name check
//!                          │ batched for `batch_interval` with leaves and removals
//!                          ▼
//!  round 0 (the base view's coordinator) │ round ≥ 1 (a successor, or any retry):
//!                                        │   ──Collect──► base members ──Promise{accepted}──►
//!                                        │   adopt the highest-ballot accepted proposal, if any
//!          ──Propose──► base members and joiners ──Accept──► proposer
//!  a weighted majority of the base view accepted, and everyone in the new view (or the
//!  prepare timeout passed) ──Decide──► new view's members and the members it removes
//! ```
//!
//! A member that hears of a newer view than its own (a heartbeat, a final check asked of it
//! or answered to it, a `Reject`, a refusal by a member of its view, a `Decide` it cannot
//! vouch for) asks its view's members (`ViewQuery`) and installs the newest answer once a
//! weighted majority of them answered: so a member removed while cut off learns it is out
//! once the network lets it through.
//!
//! Failure detection ([`Detector`] for the ring and heartbeats):
//!
//! ```text
//! silent neighbour, application, backlog, silent in a round ──Suspect──► coordinator + checker
//! checker = coordinator of (view − suspects): Output::Check ──► check_result(outcome)
//!   Alive ──Cleared──► those who suspected it   NoAnswer/Refused/Out ──► removed next view
//! removing the unanswered would leave no majority ──► those heard from since are checked
//!   once more ──► still none: ForcedDisconnect, NetworkPartition to the members of this side
//! ```
//!
//! A suspected coordinator is checked by its successor, which proposes once it found the
//! old one dead; suspicions nobody settles within twice the member timeout are escalated to
//! the checker itself.

mod lease;
pub(crate) mod quorum;
mod reachability;
mod round;
mod vote;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cohort_transport::rate::RateLimiter;
use cohort_transport::{InvalidConfig, MemberId, View, ViewId};
use uuid::Uuid;

use self::lease::Lease;
use self::quorum::Quorum;
use self::reachability::{AfterSilence, ProbeVerdict, Reachability};
use self::round::{Phase, Round};
use self::vote::{Refusal, Vote};
use crate::auth::{Authenticator, Credentials};
use crate::detector::Detector;
use crate::messages::{
    Ballot, Decision, GmsMessage, JoinRejection, LeaseMessage, Proposal, ReachabilityMessage,
    Standing,
};

/// How often a failed final check is repeated because the checker ran late during it.
const MAX_CHECK_REPEATS: u32 = 3;

/// How many other members probe a member that stayed unreachable for the removal timeout
/// before it is removed for silence (memberlist's `IndirectChecks` is 3 as well).
pub const INDIRECT_PROBES: usize = 3;

/// Timing of the membership protocol. Every field documents its unit and default.
#[derive(Clone, Debug)]
pub struct GmsConfig {
    /// How long the coordinator collects joins, leaves and removals into one view change.
    /// Default 100 ms.
    pub batch_interval: Duration,
    /// How long a proposer waits for every member of the next view to accept it. With a
    /// weighted majority of the base view it then decides anyway and suspects the silent;
    /// without one the round fails and is tried again with a higher ballot. Default 2 s.
    pub prepare_timeout: Duration,
    /// How often a joiner repeats its request while unanswered. Default 1 s.
    pub join_retry: Duration,
    /// How long a joiner tries before giving up (Geode's join-timeout). Default 30 s.
    pub join_timeout: Duration,
    /// How long a leaving member waits for the view without it. Default 5 s.
    pub leave_timeout: Duration,
    /// How long a watched member may stay silent before it is suspected; heartbeats go out
    /// every quarter of it. Default 1 s.
    pub member_timeout: Duration,
    /// How long a member may stay silent before it is removed, counted from when its
    /// silence began (a member timeout before the final check that went unanswered, or
    /// when the checker last heard from it if later). From that check on it is
    /// *unreachable* (a flag and an event at every member, no view change); it is checked
    /// again every half member timeout (or quarter removal timeout, if that is shorter)
    /// meanwhile, and one that answers is reachable again. Once the removal timeout has
    /// passed the checker asks [`INDIRECT_PROBES`] other members to probe it, and keeps it
    /// if any reaches it ([`MembershipEvent::LinkProblem`]). Positive evidence of death
    /// (its port refused the check, or it says it is out) removes at once. Zero removes at
    /// the first unanswered check, without probes.
    /// Default 5 s: a silent member is removed about 5.4 s after it fell silent, which a
    /// stalled process or a VM pause of up to about 5 s outlasts.
    pub removal_timeout: Duration,
    /// Network-partition detection: a coordinator whose view change would leave the
    /// members that answer without a weighted majority shuts its side down instead.
    /// Default on.
    pub partition_detection: bool,
    /// Join requests (and view queries) taken per second from one address outside the
    /// cluster (the address its member id names, which the certificate must name when
    /// endpoint identification is on), with bursts of twice as many; more are dropped and
    /// counted. A joiner asks once per `join_retry`. Default 10.
    pub max_join_requests_per_second_per_address: NonZeroU32,
    /// How often a member that coordinates asks its view's members for the coordinator
    /// lease ([`Gms::is_coordinator`]); shorter than `lease_duration`, so that a lost
    /// request or two do not let the lease lapse. Each interval costs the coordinator one
    /// request to every other member and their grants. Default a third of the default
    /// member timeout (the `Member` driver uses a third of its configured one).
    pub lease_interval: Duration,
    /// How long a coordinator lease lasts, counted by the asker from when it sent the
    /// request and by each grantor from when it received it: a grantor grants no other
    /// member a lease for that long, so after a coordinator is cut off its successor
    /// believes it coordinates at most this much later. Default the default member
    /// timeout (the `Member` driver uses its configured one).
    pub lease_duration: Duration,
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
            removal_timeout: Duration::from_secs(5),
            partition_detection: true,
            max_join_requests_per_second_per_address: NonZeroU32::new(10).expect("ten is positive"),
            lease_interval: Duration::from_secs(1) / 3,
            lease_duration: Duration::from_secs(1),
        }
    }
}

impl GmsConfig {
    /// Checks every setting; the error names the first that cannot work.
    /// [`Gms::new`] trusts its settings, so a driver calls this first (`Member::start`
    /// does, through `MemberConfig::validate`).
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        for (value, name) in [
            (self.batch_interval, "batch_interval"),
            (self.prepare_timeout, "prepare_timeout"),
            (self.join_retry, "join_retry"),
            (self.join_timeout, "join_timeout"),
            (self.leave_timeout, "leave_timeout"),
            (self.member_timeout, "member_timeout"),
            (self.lease_interval, "lease_interval"),
            (self.lease_duration, "lease_duration"),
        ] {
            cohort_transport::settings::positive(name, value)?;
        }
        if self.lease_interval >= self.lease_duration {
            return Err(InvalidConfig::new(
                "lease_interval",
                format!(
                    "{:?} must be shorter than lease_duration ({:?}), or the lease lapses \
                     between renewals",
                    self.lease_interval, self.lease_duration
                ),
            ));
        }
        Ok(())
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
    /// process listens there any more. Positive evidence of death, logged as such; in
    /// quorums it counts like [`CheckOutcome::NoAnswer`] (a dead member's weight cannot be
    /// given up without risking two views: see the quorum rules in the architecture notes).
    Refused,
    /// The suspect answered that it is out of the cluster (it left, was removed, was forced
    /// out or shut down, or was never admitted; a process that reconnected answers so for
    /// its former identity). Positive evidence that it is no longer a member: removed as
    /// crashed, like [`CheckOutcome::Refused`], and counted apart
    /// ([`GmsStats::final_checks_out`]). In quorums it counts like
    /// [`CheckOutcome::NoAnswer`], for the same reason.
    Out,
}

/// Something the driver must do or report.
#[derive(Clone, Debug)]
#[must_use = "an output is a duty of the driver"]
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
    /// Knock at the port of each of `to`, between heartbeats: one byte outside QUIC that
    /// nothing answers, sent for the ICMP port unreachable a closed port answers with
    /// (which comes back through [`Gms::unreachable`]). See [`crate::detector`].
    Knock {
        /// The watchers.
        to: Vec<MemberId>,
    },
    /// Send a coordinator-lease message to each of `to` as a datagram under its own tag
    /// (the lease makes good a lost one); the answers go to [`Gms::handle_lease`].
    Lease {
        /// Recipients, all members of the installed view.
        to: Vec<MemberId>,
        /// The message.
        message: LeaseMessage,
    },
    /// Send a reachability message to each of `to` (Control priority) under its own tag;
    /// the receivers hand it to [`Gms::handle_reachability`].
    Reachability {
        /// Recipients, members of the installed view.
        to: Vec<MemberId>,
        /// The message.
        message: ReachabilityMessage,
    },
    /// Run a final check on `member` for `asker`, the checker, which cannot reach it, and
    /// report it with [`Gms::probe_result`]; the same check as [`Output::Check`].
    Probe {
        /// The member to probe.
        member: MemberId,
        /// The member that asked.
        asker: MemberId,
    },
    /// Run a final check on `member` and report it with [`Gms::check_result`]: alive if it
    /// answers over a fresh connection as a member or joiner, or if anything at all is
    /// heard from it meanwhile; out if it answers that it is out. The view id a member
    /// answers with goes to [`Gms::heard_view`].
    Check {
        /// The suspect.
        member: MemberId,
    },
    /// A view is being decided whose new members may send application messages to this
    /// member from now on, before it is installed (and so before they learn they are in):
    /// let them speak (`Messenger::expect_view`). Handed out once per prepared view.
    Prepared(View),
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
    /// A member of the view did not answer its final check: it is unreachable from the
    /// member that checks, and is removed once it stays so for the removal timeout.
    /// Applications may route around it meanwhile. Reported at every member that hears
    /// of it; no view change.
    Unreachable {
        /// The member.
        member: MemberId,
    },
    /// A member reported [`MembershipEvent::Unreachable`] answered again before its removal
    /// timeout, or another member reached it: it stays, with no view change.
    Reachable {
        /// The member.
        member: MemberId,
    },
    /// Reported by the member that checks: it cannot reach `member`, which stayed
    /// unreachable from it for the removal timeout, but `reached_by` can. The link between
    /// them failed, not the member, which stays.
    LinkProblem {
        /// The member this one cannot reach.
        member: MemberId,
        /// A member that reached it.
        reached_by: MemberId,
    },
    /// Application messages this member sent `member` under `tag` found no subscriber
    /// there and were dropped: a reliable message was queued and taken, but nobody
    /// received it (QUIC members only; the first one is reported at once, later ones at
    /// most once a second per tag and member). Raised by [`Member`](crate::Member), not
    /// by [`Gms`].
    Undelivered {
        /// The member with no subscriber for `tag`.
        member: MemberId,
        /// The messages' tag.
        tag: cohort_transport::Tag,
        /// How many were dropped since the last report for this tag.
        count: u64,
    },
    /// The cluster removed this member although it did not ask to leave (it was taken for
    /// crashed), or this member's side of a partition lost its quorum. This incarnation is
    /// out for good: it can only come back as a new member (a new uuid), which
    /// [`Member`](crate::Member) does by itself unless auto-reconnect is off.
    ForcedDisconnect {
        /// Why, for people.
        reason: String,
    },
    /// After a forced disconnect, this process joined the cluster again by itself, as a
    /// new member (a new uuid; auto-reconnect). Reported by [`Member`](crate::Member), not
    /// by [`Gms`], whose life ends with the forced disconnect.
    Reconnected {
        /// The member that was forced out.
        old: MemberId,
        /// The member that joined in its place.
        new: MemberId,
        /// Why the old one was forced out.
        reason: String,
    },
}

/// Counters of the membership protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GmsStats {
    /// Messages dropped because their sender was neither in the view nor in a view being
    /// decided (a process outside the cluster may only ask to join or for the view), or
    /// because they belong to the retired first protocol.
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
    /// Final checks whose suspect did not answer: it is unreachable, and removed as crashed
    /// once it stays so for the removal timeout.
    pub final_checks_failed: u64,
    /// Times this member's final checks found a member unreachable that was reachable until
    /// then (the first unanswered check of a silence).
    pub members_unreachable: u64,
    /// Times a member this member found unreachable answered again before its removal.
    pub members_reachable_again: u64,
    /// Times this member asked others to probe a member unreachable for the removal
    /// timeout before removing it.
    pub indirect_probes: u64,
    /// Probes answered by another member that reached the member this one could not.
    pub link_problems: u64,
    /// Probes this member ran because another member asked it to.
    pub probes_for_others: u64,
    /// Final checks whose suspect answered that it is out of the cluster: it is removed as
    /// crashed.
    pub final_checks_out: u64,
    /// Members removed as crashed by the views this member installed.
    pub members_removed: u64,
    /// Join requests dropped because their address asked more often than
    /// `max_join_requests_per_second_per_address`.
    pub join_requests_rate_limited: u64,
    /// Times this member was forced out of the cluster (at most once per member).
    pub forced_disconnects: u64,
    /// Rounds this member proposed that failed (no majority in time) or were outbid.
    pub rounds_failed: u64,
    /// Times this member heard of a newer view than its own and asked for it.
    pub catch_ups: u64,
    /// View changes this member made, as coordinator, only to bring members that stayed
    /// behind its view forward (the same members, the next view id).
    pub refreshes: u64,
}

/// Counter by counter: a member's counters over several incarnations (auto-reconnect).
impl std::ops::Add for GmsStats {
    type Output = GmsStats;

    fn add(self, b: GmsStats) -> GmsStats {
        let a = self;
        // Destructured in full, so that a new counter cannot be forgotten here.
        let GmsStats {
            dropped_from_non_members,
            unreachable_suspicions,
            views_installed,
            suspicions,
            final_checks,
            final_checks_passed,
            final_checks_failed,
            members_unreachable,
            members_reachable_again,
            indirect_probes,
            link_problems,
            probes_for_others,
            final_checks_out,
            members_removed,
            join_requests_rate_limited,
            forced_disconnects,
            rounds_failed,
            catch_ups,
            refreshes,
        } = b;
        GmsStats {
            dropped_from_non_members: a.dropped_from_non_members + dropped_from_non_members,
            unreachable_suspicions: a.unreachable_suspicions + unreachable_suspicions,
            views_installed: a.views_installed + views_installed,
            suspicions: a.suspicions + suspicions,
            final_checks: a.final_checks + final_checks,
            final_checks_passed: a.final_checks_passed + final_checks_passed,
            final_checks_failed: a.final_checks_failed + final_checks_failed,
            members_unreachable: a.members_unreachable + members_unreachable,
            members_reachable_again: a.members_reachable_again + members_reachable_again,
            indirect_probes: a.indirect_probes + indirect_probes,
            link_problems: a.link_problems + link_problems,
            probes_for_others: a.probes_for_others + probes_for_others,
            final_checks_out: a.final_checks_out + final_checks_out,
            members_removed: a.members_removed + members_removed,
            join_requests_rate_limited: a.join_requests_rate_limited + join_requests_rate_limited,
            forced_disconnects: a.forced_disconnects + forced_disconnects,
            rounds_failed: a.rounds_failed + rounds_failed,
            catch_ups: a.catch_ups + catch_ups,
            refreshes: a.refreshes + refreshes,
        }
    }
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
        /// When it asks the coordinator again (a request can be lost, or reach a
        /// coordinator that is replaced before it acts).
        retry_at: Instant,
        deadline: Instant,
    },
    /// Out of the cluster for good.
    Gone,
}

/// What the members of this member's view said since it heard of a newer view.
#[derive(Debug, Default)]
struct CatchUp {
    /// Answers to its `ViewQuery`, by answerer.
    answers: HashMap<Uuid, Decision>,
    /// Members that refused its connections as a non-member: each has installed a view
    /// without it.
    refusals: HashSet<Uuid>,
    /// A partition notice this member could not take on trust: unless members holding a
    /// weighted majority of its view answer by then, it shuts down for this reason.
    probe: Option<(Instant, String)>,
    /// When answers from fewer than a majority may still show that this member is out: if
    /// the majority stays silent that long, this member could not take part in any
    /// decision anyway.
    patience: Option<Instant>,
    /// When the members that have not answered yet are asked again, within the patience:
    /// a question lost to a cut that has ended since must not decide (chaos seed 995).
    reask: Option<Instant>,
}

/// One member's membership state. See the module docs for the protocol; this is the
/// contract a driver keeps (`Member`'s driver on tokio, the simulations in virtual time).
///
/// # Methods, by group
///
/// - **Start and stop**: [`Gms::new`], then one of [`Gms::found_cluster`] (a locator that
///   may found) or [`Gms::join`] (through the coordinator discovery named); later
///   [`Gms::leave`], or [`Gms::dissolve`] (yield to another cluster).
/// - **Messages from other members**: [`Gms::handle_message`] (a [`GmsMessage`]),
///   [`Gms::handle_lease`] (a lease datagram), [`Gms::handle_reachability`].
/// - **What the driver saw**: [`Gms::heard_from`] (a sign of life: any heartbeat or frame
///   from a member; report it for every member in [`Gms::watched`] before each
///   [`Gms::handle_timeout`], or the detector suspects a member that is only busy),
///   [`Gms::heard_view`] (a view id a member reported), [`Gms::unreachable`] (an ICMP
///   error about a member's address), [`Gms::refused_by`] (a member refused this one's
///   connection as a non-member), [`Gms::suspect`] (the application suspects a member).
/// - **Results of work the outputs asked for**: [`Gms::check_result`] for an
///   [`Output::Check`], [`Gms::probe_result`] for an [`Output::Probe`].
/// - **Time**: [`Gms::handle_timeout`] at the instant [`Gms::poll_timeout`] gave (or
///   later; early calls are harmless).
/// - **Outputs**: [`Gms::poll_output`] until it returns `None`.
/// - **Queries** (no effect): [`Gms::view`], [`Gms::prepared`], [`Gms::standing`],
///   [`Gms::is_coordinator`], [`Gms::unreachable_members`], [`Gms::stats`] and the rest.
///
/// # The driving loop
///
/// After **every** input (any method above that takes `&mut self`), drain
/// [`Gms::poll_output`] and carry out each output in the order given (a view's
/// [`Output::Prepared`] comes before the messages that may bring its members' traffic),
/// then read [`Gms::poll_timeout`] again: an input may move the deadline earlier. Wait
/// until that deadline or the next input, whichever comes first. Results of checks and
/// probes may arrive in any order, late, or for a member no longer in the view; they are
/// judged as of when they arrive.
///
/// # Time
///
/// Every input takes `now`, and `now` never goes backwards: pass readings of one monotonic
/// clock (`std::time::Instant`, or a simulation's virtual clock). `Gms` never reads a clock
/// itself. A pause of the whole process is seen as a jump of `now`; the detector then skips
/// a round rather than suspecting everyone it could not hear while it was stopped.
pub struct Gms {
    me: MemberId,
    /// Join requests and view queries from outside the cluster, per address.
    join_limiter: RateLimiter,
    /// "You are behind" hints to senders outside the view, per address.
    hint_limiter: RateLimiter,
    config: GmsConfig,
    authenticator: Arc<dyn Authenticator>,
    role: Role,
    /// Members of this member's view refused it because a newer view, which it never
    /// received, removed it: it is out although its installed view still lists it.
    refused_by_newer_view: bool,
    view: Option<View>,
    /// The decision that made the installed view: the answer to a catch-up query.
    decided: Option<Decision>,
    /// This member's vote on the change from its installed view.
    vote: Vote,
    /// A view proposed to this member while it joins (it does not vote yet).
    joining_proposal: Option<View>,
    /// The highest round this member proposed in, and for which base (each ballot carries
    /// one proposal, so a retry takes a higher round).
    tried: Option<(ViewId, u32)>,
    /// Outbid by another proposer: this member proposes nothing before then.
    outbid_until: Option<Instant>,
    catch_up: Option<CatchUp>,
    /// When this member last asked for a newer view (at most once per member timeout).
    last_catch_up: Option<Instant>,
    /// A sign of a newer view came within that member timeout: ask again then.
    catch_up_due: Option<Instant>,
    pending_joins: Vec<MemberId>,
    /// When each pending joiner last asked: a joiner that stopped asking (it gave up, or it
    /// was admitted and removed meanwhile) is not proposed.
    join_asked: HashMap<Uuid, Instant>,
    /// Every member of every view this member installed, and every member such a view
    /// removed: a uuid that was in a view never comes back (a stale join request of one
    /// would otherwise admit it again). 16 bytes per member ever seen.
    former: HashSet<Uuid>,
    pending_leaves: Vec<MemberId>,
    pending_removals: Vec<MemberId>,
    batch_at: Option<Instant>,
    round: Option<Round>,
    outputs: VecDeque<Output>,
    /// The prepared view last handed out as [`Output::Prepared`].
    announced_prepared: Option<View>,
    stats: GmsStats,
    detector: Detector,
    /// Members of the view suspected by anyone, not yet cleared or removed.
    suspects: HashMap<Uuid, MemberId>,
    /// The suspicions this member raised itself (not only heard of).
    own_suspicions: HashSet<Uuid>,
    /// Suspects being checked, with when the check started and how often it was repeated
    /// because this member itself ran late meanwhile.
    checking: HashMap<Uuid, (Instant, u32)>,
    /// Suspects this member's final check found dead, until a view without them installs.
    dead: HashSet<Uuid>,
    /// Members of the installed view that said (a heartbeat, a view query) they still hold
    /// an older view, since when, until they say otherwise or a view installs: such a
    /// member cannot coordinate this view, which it does not have, so the next in line
    /// does. (Waiting for it left a cluster without a coordinator for good when the
    /// member in line had missed the last two views and the one that made them died: chaos
    /// seed 2809.) The coordinator brings members that stay behind forward with a view
    /// change of their own (see [`Gms::start_round`]).
    behind: HashMap<Uuid, Instant>,
    /// Members of the installed view whose answer to this member's own final check named
    /// an older view: alive, but unable to check this view, since their notices name
    /// another one and are dropped, so [`Gms::checker`] passes them over. Only a fresh
    /// answer counts, not a heartbeat that may have been overtaken by the view change.
    /// (Chaos seed 43780: the member in line after a crashed coordinator held view 2 of 4
    /// and was cleared at every escalation, so the crashed members stayed for good.)
    checked_behind: HashSet<Uuid>,
    /// When this member last started a view change only to bring members that stayed
    /// behind forward: at most one per [`Gms::refresh_interval`].
    refreshed_at: Option<Instant>,
    /// Members found dead that this member heard from since (a message, a heartbeat): the
    /// finding may be stale (see [`Gms::confirm_findings`]).
    heard_since_dead: HashSet<Uuid>,
    /// Members checked again before their findings could shut this side down, until
    /// cleared or a view installs: each finding is checked again once.
    rechecked: HashSet<Uuid>,
    /// Since when suspicions have waited for a checker other than this member.
    unresolved_since: Option<Instant>,
    /// When the checker last cleared each member: a suspicion of it from another member
    /// can arrive after the clearing (different senders, different connections).
    cleared_at: HashMap<Uuid, Instant>,
    /// Who told this member of each suspicion: they are told when it is cleared.
    suspected_by: HashMap<Uuid, Vec<MemberId>>,
    /// The coordinator lease: the one this member asks for while it coordinates, and the
    /// grant it gave (see `gms/lease.rs`).
    lease: Lease,
    /// Members found unreachable (as the checker) and flagged so (as any member); see
    /// `gms/reachability.rs`.
    reachability: Reachability,
}

impl Gms {
    /// The state of a member that has not started yet.
    pub fn new(me: MemberId, config: GmsConfig, authenticator: Arc<dyn Authenticator>) -> Self {
        let member_timeout = config.member_timeout;
        let lease = Lease::new(config.lease_interval, config.lease_duration);
        // Checked again often enough that the removal timeout, not the recheck, decides
        // when an unreachable member goes: at least four times within it.
        let recheck = (member_timeout / 2).min(config.removal_timeout / 4);
        let reachability = Reachability::new(config.removal_timeout, recheck);
        let join_rate = config.max_join_requests_per_second_per_address;
        Gms {
            join_limiter: RateLimiter::new(join_rate.get(), join_rate.get().saturating_mul(2)),
            hint_limiter: RateLimiter::new(1, 2),
            me,
            config,
            authenticator,
            role: Role::Idle,
            refused_by_newer_view: false,
            view: None,
            decided: None,
            vote: Vote::new(ViewId(0)),
            joining_proposal: None,
            tried: None,
            outbid_until: None,
            catch_up: None,
            last_catch_up: None,
            catch_up_due: None,
            pending_joins: Vec::new(),
            join_asked: HashMap::new(),
            former: HashSet::new(),
            pending_leaves: Vec::new(),
            pending_removals: Vec::new(),
            batch_at: None,
            round: None,
            outputs: VecDeque::new(),
            announced_prepared: None,
            stats: GmsStats::default(),
            detector: Detector::new(member_timeout),
            suspects: HashMap::new(),
            own_suspicions: HashSet::new(),
            checking: HashMap::new(),
            dead: HashSet::new(),
            behind: HashMap::new(),
            checked_behind: HashSet::new(),
            refreshed_at: None,
            heard_since_dead: HashSet::new(),
            rechecked: HashSet::new(),
            unresolved_since: None,
            cleared_at: HashMap::new(),
            suspected_by: HashMap::new(),
            lease,
            reachability,
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

    /// The newest view being decided that this member knows of (accepted by it, proposed
    /// to it while joining, or proposed by it), if newer than the installed one. Its new
    /// members may talk to this member before it is installed.
    pub fn prepared(&self) -> Option<&View> {
        let installed = self.view_id();
        [
            self.vote.accepted().map(|(_, p)| &p.view),
            self.joining_proposal.as_ref(),
            self.round
                .as_ref()
                .and_then(Round::proposal)
                .map(|p| &p.view),
        ]
        .into_iter()
        .flatten()
        .filter(|v| v.id() > installed)
        .max_by_key(|v| v.id())
    }

    /// True while this member is in the cluster and coordinates it at `now`: its view's
    /// coordinator, or the successor of one that a final check found dead, not outbid by
    /// another proposer, and holding the coordinator lease for its view (grants from
    /// members holding a weighted majority of it; see [`GmsConfig::lease_duration`]).
    ///
    /// At most one member is coordinator of a given view id at any instant, provided the
    /// members' clocks run at the same rate (their readings need not agree): a member paused
    /// or cut off stops believing when its lease ends, before its successor can get one.
    /// Just after a view change nobody may be coordinator for a moment, until grants for
    /// the new view come back. The protocol's own safety does not depend on this.
    pub fn is_coordinator(&self, now: Instant) -> bool {
        self.coordinator_until().is_some_and(|until| until > now)
    }

    /// Until when [`Gms::is_coordinator`] holds unless another input changes it: the end
    /// of the lease while this member coordinates and holds one (perhaps already past),
    /// else `None`. For a driver that publishes the belief to readers on other threads.
    pub fn coordinator_until(&self) -> Option<Instant> {
        if !matches!(self.role, Role::Member) || !self.coordinating() || self.outbid_until.is_some()
        {
            return None;
        }
        self.lease.held_until(self.view_id())
    }

    /// A coordinator-lease message from `from` (as authenticated by the transport). Only
    /// members of the installed view are heard. A request for this member's installed
    /// view is granted unless it granted another member a lease that is still running; a
    /// grant counts towards the lease this member asked for.
    pub fn handle_lease(&mut self, now: Instant, from: &MemberId, message: LeaseMessage) {
        if !self.is_member() || *from == self.me || !self.in_view(from) {
            return;
        }
        match message {
            LeaseMessage::Request { view_id, seq } => {
                if view_id == self.view_id()
                    && !self.is_out_of_view()
                    && self.lease.grant(now, from.uuid())
                {
                    self.outputs.push_back(Output::Lease {
                        to: vec![from.clone()],
                        message: LeaseMessage::Grant { view_id, seq },
                    });
                }
            }
            LeaseMessage::Grant { view_id, seq } => {
                let installed = self.view_id();
                self.lease.granted_by(installed, from.uuid(), view_id, seq);
            }
        }
    }

    /// Asks for the coordinator lease if this member coordinates and a request is due; a
    /// member that does not coordinate asks for nothing. Called at every timeout and
    /// wherever this member may have begun to coordinate (a view installed, a final check
    /// that found its coordinator dead), so that a new coordinator asks at once.
    fn lease_tick(&mut self, now: Instant) {
        if !self.asks_for_lease() {
            self.lease.stop_asking();
            return;
        }
        if !self.lease.due(now) {
            return;
        }
        let Some(view) = self.view.clone() else {
            return;
        };
        let seq = self.lease.request(now, self.me.uuid(), &view);
        let to = others(&view, &self.me);
        if !to.is_empty() {
            self.outputs.push_back(Output::Lease {
                to,
                message: LeaseMessage::Request {
                    view_id: view.id(),
                    seq,
                },
            });
        }
    }

    /// True while this member should hold the coordinator lease: a member (not leaving)
    /// that coordinates. Outbid or not: it may coordinate again once the other proposer is
    /// done, and a lease it holds by then saves the wait.
    fn asks_for_lease(&self) -> bool {
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

    /// `member` says (in a heartbeat, or in a final check it asked of this member or
    /// answered for it) that it has installed view `view_id`. Anyone with a newer one
    /// means this member missed a view change: it asks this view's members for it. A
    /// sender outside the view with an older one was removed, perhaps while cut off: it is
    /// told that it is behind, so that it asks (at most once a second per address).
    pub fn heard_view(&mut self, now: Instant, member: &MemberId, view_id: ViewId) {
        if !self.is_member() || *member == self.me {
            return;
        }
        if self.dead.contains(&member.uuid()) {
            self.heard_since_dead.insert(member.uuid());
        }
        if self.in_view(member) {
            self.note_view_of(now, member, view_id);
            if view_id > self.view_id() {
                self.catch_up(now);
            }
        } else if view_id > self.view_id() {
            // A member this view lacks holds a newer one that has this member in it (it
            // heartbeats or checks this member): this member missed a view. Heartbeats go
            // one way round the ring, so a member that missed the view its new predecessor
            // joined in hears of it first from that newcomer (chaos seeds 34403 and 87726,
            // two-stage). Catching up asks this view's own members, so the claim is only a
            // hint, and catch-ups are rate-limited.
            self.catch_up(now);
        } else if view_id < self.view_id() && view_id > ViewId(0) {
            self.hint_newer_view(now, member, view_id);
        }
    }

    /// Tells `member`, which is not in this member's view, which view this member holds
    /// (a `Reject` naming it), at most once a second per address: a member removed while
    /// it could not hear learns this way that it is behind, and asks its old view.
    fn hint_newer_view(&mut self, now: Instant, member: &MemberId, its_view: ViewId) {
        if !self.is_member() || !self.hint_limiter.allow(now, member.address()) {
            return;
        }
        let installed = self.view_id();
        self.send(
            vec![member.clone()],
            GmsMessage::Reject {
                base: its_view,
                ballot: Ballot {
                    round: 0,
                    proposer: member.uuid(),
                },
                promised: None,
                installed,
            },
        );
    }

    /// A member refused this member's connection because this member is not in its view
    /// (the transport's `REMOVED_FROM_VIEW`). From a member of this member's view that is
    /// proof of a newer view: this member asks for it, and learns whether it is still in.
    ///
    /// A member that removed this one refuses everything from it, the `ViewQuery` too, so
    /// such refusals count like answers naming a view without it: once answers and
    /// refusals come from members holding a weighted majority of this member's view, a
    /// refusal among them means this member is out.
    pub fn refused_by(&mut self, now: Instant, member: &MemberId) {
        if !self.is_member() || !self.in_view(member) || *member == self.me {
            return;
        }
        self.catch_up(now);
        if let Some(catch_up) = &mut self.catch_up {
            catch_up.refusals.insert(member.uuid());
        }
        self.settle_catch_up(now);
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

    /// The outcome of a final check asked for with [`Output::Check`], with the view the
    /// member said it holds if it answered (which [`Gms::heard_view`] is told too).
    pub fn check_result(
        &mut self,
        now: Instant,
        member: &MemberId,
        outcome: CheckOutcome,
        its_view: Option<ViewId>,
    ) {
        if let Some(its_view) = its_view {
            self.heard_view(now, member, its_view);
        }
        let Some((started, repeats)) = self.checking.remove(&member.uuid()) else {
            return;
        };
        if !self.in_view(member) {
            return;
        }
        if outcome == CheckOutcome::Alive
            && its_view.is_some_and(|v| v < self.view_id())
            && self.checked_behind.insert(member.uuid())
        {
            // It may have been the checker: this member may check in its place now.
            tracing::info!(
                ?member,
                "final check passed, but it is behind this view: it does not check"
            );
            self.run_checks(now);
        }
        // A check that failed while this member itself was stalled says more about this
        // member than about the suspect: look again (a few times), as a stalled detector
        // suspects nobody.
        if outcome == CheckOutcome::NoAnswer
            && repeats < MAX_CHECK_REPEATS
            && self.detector.ran_late(started, now)
        {
            tracing::warn!(
                ?member,
                "final check failed while this member ran late: checking again"
            );
            self.start_check(now, member.clone(), repeats + 1);
            return;
        }
        if outcome == CheckOutcome::Alive {
            self.stats.final_checks_passed += 1;
            tracing::info!(?member, "final check passed: suspicion cleared");
            self.settle(member);
            self.clear(now, member);
            if self.reachability.forget(member) {
                self.stats.members_reachable_again += 1;
                tracing::info!(?member, "answered again: reachable");
                self.tell_reachability(member, true);
                self.set_flag(now, member, true, self.me.uuid());
            }
            return;
        }
        if outcome == CheckOutcome::NoAnswer {
            // Its silence began a member timeout before the check (which a suspicion by
            // silence waited out), or when this member last heard from it if later: the
            // removal timeout counts from there, not from this check.
            let before = started
                .checked_sub(self.config.member_timeout)
                .unwrap_or(started);
            let silent_since = match self.detector.last_heard(member.uuid()) {
                Some(heard) => before.max(heard.min(started)),
                None => before,
            };
            match self.reachability.check_failed(now, member, silent_since) {
                AfterSilence::Remove => {}
                AfterSilence::TimedOut => {
                    self.stats.final_checks_failed += 1;
                    if self.ask_for_probes(now, member) {
                        return;
                    }
                }
                AfterSilence::Unreachable { newly } => {
                    self.stats.final_checks_failed += 1;
                    if newly {
                        self.stats.members_unreachable += 1;
                        tracing::warn!(
                            ?member,
                            removal_timeout = ?self.reachability.removal_timeout(),
                            "final check failed: unreachable, removed unless it answers again"
                        );
                        self.tell_reachability(member, false);
                        self.set_flag(now, member, false, self.me.uuid());
                    }
                    return;
                }
            }
        }
        if outcome == CheckOutcome::Out {
            self.stats.final_checks_out += 1;
            tracing::warn!(
                ?member,
                "final check: the member says it is out of the cluster: removing it"
            );
        } else {
            if outcome != CheckOutcome::NoAnswer || self.reachability.removal_timeout().is_zero() {
                self.stats.final_checks_failed += 1;
            }
            tracing::warn!(
                ?member,
                ?outcome,
                "final check failed: removing the member as crashed"
            );
        }
        self.found_dead(now, member);
    }

    /// `member` is removed as crashed in the next view change this member makes, or
    /// hands to the member that coordinates.
    fn found_dead(&mut self, now: Instant, member: &MemberId) {
        // No more checks or probes of it.
        self.reachability.forget(member);
        self.dead.insert(member.uuid());
        if !self.pending_removals.contains(member) {
            self.pending_removals.push(member.clone());
        }
        // A checker that does not coordinate (it took over the checks because a member
        // suspected the one in line) hands the finding to the member that coordinates once
        // the dead are gone, which checks for itself: it may never have heard of it.
        let successor = self
            .view
            .as_ref()
            .and_then(|v| v.coordinator_among(|m| self.in_line(m)))
            .filter(|c| **c != self.me)
            .cloned();
        if let Some(successor) = successor {
            let reason = format!("a final check by {} found no answer", self.me.name());
            self.send(
                vec![successor],
                GmsMessage::Suspect {
                    members: vec![member.clone()],
                    reason,
                },
            );
        }
        // A crash is removed without waiting out the batch interval: the round starts
        // once no other final check is running, which is what gathers crashes found
        // together into one view change (joins batched meanwhile come along).
        if self.round.is_none() {
            self.batch_at = Some(now);
        }
        // The coordinator may be the one found dead: its successor asks for the lease now.
        self.lease_tick(now);
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

    /// Where this member stands, as it answers a final check: in its view (a member, or
    /// leaving), not admitted yet (not started, or joining), or out for good.
    pub fn standing(&self) -> Standing {
        match self.role {
            Role::Member | Role::Leaving { .. } => Standing::Member,
            Role::Idle | Role::Joining { .. } => Standing::Joining,
            Role::Gone => Standing::Out,
        }
    }

    /// True once this member knows it is out of the cluster's view: its installed view no
    /// longer lists it, or members of that view refused it because a newer view removed
    /// it (a leaver whose removal reached it only that way has left all the same).
    pub fn is_out_of_view(&self) -> bool {
        self.refused_by_newer_view || !self.view.as_ref().is_some_and(|v| v.contains(&self.me))
    }

    /// Starts a new cluster with this member alone in view 1 (no coordinator answered).
    pub fn found_cluster(&mut self, now: Instant) {
        let me = self.me.clone().with_view_id(ViewId(1));
        self.role = Role::Member;
        let decision = Decision {
            base: ViewId(0),
            ballot: Ballot {
                round: 0,
                proposer: self.me.uuid(),
            },
            proposal: Proposal {
                view: View::new(ViewId(1), [me]),
                left: Vec::new(),
                crashed: Vec::new(),
            },
        };
        self.install(now, decision);
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
        if self.coordinating() {
            self.pending_leaves.push(self.me.clone());
            self.batch_at = Some(now);
            self.role = Role::Leaving {
                retry_at: now + self.config.join_retry,
                deadline: now + self.config.leave_timeout,
            };
            self.handle_timeout(now);
            return;
        }
        self.ask_to_leave();
        self.role = Role::Leaving {
            retry_at: now + self.config.join_retry,
            deadline: now + self.config.leave_timeout,
        };
    }

    fn ask_to_leave(&mut self) {
        if let Some(coordinator) = self.view.as_ref().and_then(View::coordinator).cloned() {
            self.send(
                vec![coordinator],
                GmsMessage::LeaveRequest {
                    member: self.me.clone(),
                },
            );
        }
    }

    /// A message from `from` (as authenticated by the transport). From a process outside
    /// the cluster only a join request or a view query is taken; anything else is dropped
    /// and counted.
    pub fn handle_message(&mut self, now: Instant, from: &MemberId, message: GmsMessage) {
        if !self.hears_from(from, &message) {
            self.stats.dropped_from_non_members += 1;
            tracing::debug!(?from, "dropped a membership message from a non-member");
            if !matches!(message, GmsMessage::Reject { .. }) {
                // Perhaps a member this view removed that has not heard yet.
                self.hint_newer_view(now, from, ViewId(0));
            }
            return;
        }
        if matches!(
            message,
            GmsMessage::JoinRequest { .. } | GmsMessage::ViewQuery { .. }
        ) && !self.is_known(from)
            && !self.join_limiter.allow(now, from.address())
        {
            self.stats.join_requests_rate_limited += 1;
            tracing::debug!(
                ?from,
                "dropped a request from outside: its address asks too often"
            );
            return;
        }
        if self.dead.contains(&from.uuid()) {
            self.heard_since_dead.insert(from.uuid());
        }
        match message {
            GmsMessage::JoinRequest {
                member,
                credentials,
            } => self.on_join_request(now, from, member, &credentials),
            GmsMessage::JoinRejected { reason } => {
                if let Role::Joining { coordinator, .. } = &self.role
                    && coordinator == from
                {
                    self.role = Role::Gone;
                    self.event(MembershipEvent::JoinRejected {
                        by: from.clone(),
                        reason,
                    });
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
            GmsMessage::NotCoordinator { coordinator } => self.redirected(now, from, coordinator),
            GmsMessage::Suspect { members, reason } => self.on_suspect(now, from, members, &reason),
            GmsMessage::Cleared { member } => {
                self.clear(now, &member);
            }
            GmsMessage::NetworkPartition { reason } => self.on_partition_notice(now, from, reason),
            GmsMessage::Collect { base, ballot } => self.on_collect(from, base, ballot),
            GmsMessage::Promise {
                base,
                ballot,
                accepted,
            } => self.on_promise(now, from, base, ballot, accepted),
            GmsMessage::Propose {
                base,
                ballot,
                proposal,
            } => self.on_propose(from, base, ballot, proposal),
            GmsMessage::Accept { base, ballot } => self.on_accept(now, from, base, ballot),
            GmsMessage::Decide { decision } => self.on_decide(now, from, decision),
            GmsMessage::Reject {
                base,
                ballot,
                promised,
                installed,
            } => self.on_reject(now, from, base, ballot, promised, installed),
            GmsMessage::ViewQuery { have } => self.on_view_query(now, from, have),
            GmsMessage::CurrentView { decision } => self.on_current_view(now, from, decision),
            GmsMessage::PrepareView { .. }
            | GmsMessage::PrepareAck { .. }
            | GmsMessage::InstallView { .. } => {
                self.stats.dropped_from_non_members += 1;
                tracing::debug!(?from, "dropped a message of the retired first protocol");
            }
        }
    }

    /// Time has passed: retries, timeouts, heartbeats, the end of a batching interval.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.detector.poll_timeout().is_some_and(|at| now >= at) {
            self.detector_tick(now);
        }
        if self.outbid_until.is_some_and(|at| now >= at) {
            self.outbid_until = None;
        }
        self.lease_tick(now);
        self.recheck_unreachable(now);
        self.probe_the_long_silent(now);
        self.expire_probes(now);
        if self.catch_up_due.is_some_and(|at| now >= at) {
            self.ask_for_views(now);
        }
        if self
            .catch_up
            .as_ref()
            .and_then(|c| c.patience)
            .is_some_and(|at| now >= at)
        {
            self.catch_up_patience_ran_out(now);
        }
        if self
            .catch_up
            .as_ref()
            .and_then(|c| c.reask)
            .is_some_and(|at| now >= at)
        {
            self.ask_the_silent_again(now);
        }
        if let Some((deadline, reason)) = self.catch_up.as_ref().and_then(|c| c.probe.clone())
            && now >= deadline
        {
            self.shut_down_for_partition(format!(
                "{reason} (told by a member of this side; no majority of the view answered \
                 within {:?})",
                self.config.prepare_timeout
            ));
            return;
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
            Role::Leaving { deadline, .. } if now >= *deadline && !coordinating => {
                self.role = Role::Gone;
                self.event(MembershipEvent::Left);
                return;
            }
            Role::Leaving { retry_at, .. } if now >= *retry_at && !coordinating => {
                *retry_at = now + self.config.join_retry;
                self.ask_to_leave();
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
        if let Some(round) = &self.round {
            if now >= round.deadline {
                self.round_deadline(now);
            }
            return;
        }
        if !self.coordinating() || self.outbid_until.is_some() {
            return;
        }
        if self.batch_at.is_some_and(|at| now >= at) && !self.first_checks_running() {
            self.batch_at = None;
            self.start_round(now);
        }
    }

    /// The next output to act on; `None` once there is nothing to do until the next input.
    /// A view newer than the installed one that this member came to prepare (accept,
    /// propose, or be proposed into) is handed out first, once per view, as
    /// [`Output::Prepared`].
    #[must_use = "an output is a duty of the driver: a message to send, a check to run, an event"]
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(prepared) = self.prepared()
            && self.announced_prepared.as_ref() != Some(prepared)
        {
            let prepared = prepared.clone();
            self.announced_prepared = Some(prepared.clone());
            return Some(Output::Prepared(prepared));
        }
        self.outputs.pop_front()
    }

    /// When [`Gms::handle_timeout`] should next be called.
    #[must_use = "the driver must call handle_timeout at this instant"]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let coordinating = self.coordinating();
        let role = match &self.role {
            Role::Joining {
                retry_at, deadline, ..
            } => Some((*retry_at).min(*deadline)),
            // A leaving coordinator finishes its round first; the round has its own deadline.
            Role::Leaving {
                retry_at, deadline, ..
            } if !coordinating => Some((*retry_at).min(*deadline)),
            _ => None,
        };
        let round = self.round.as_ref().map(|r| r.deadline);
        let batch = self.batch_at.filter(|_| {
            coordinating
                && self.round.is_none()
                && !self.first_checks_running()
                && self.outbid_until.is_none()
        });
        let detector = self.detector.poll_timeout();
        let lease = self.lease.next_request().filter(|_| self.asks_for_lease());
        let probe = self.catch_up.as_ref().and_then(|c| {
            [c.probe.as_ref().map(|(at, _)| *at), c.patience, c.reask]
                .into_iter()
                .flatten()
                .min()
        });
        [
            role,
            round,
            batch,
            detector,
            self.outbid_until,
            probe,
            self.catch_up_due,
            lease,
            self.reachability.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---- coordinator: proposing view changes ----

    /// True while this member runs view changes: the coordinator, including one that is
    /// leaving and still has to install the view without itself.
    fn coordinating(&self) -> bool {
        let coordinator = self
            .view
            .as_ref()
            .and_then(|v| v.coordinator_among(|m| self.in_line(m)));
        matches!(self.role, Role::Member | Role::Leaving { .. }) && coordinator == Some(&self.me)
    }

    /// True if `member` may coordinate this member's view when the members before it
    /// cannot: not found dead, and not behind (it holds the view, as far as this member
    /// knows). This member itself is never behind.
    fn in_line(&self, member: &MemberId) -> bool {
        !self.dead.contains(&member.uuid()) && !self.behind.contains_key(&member.uuid())
    }

    /// Notes which view `member`, of this member's view, says it holds at `now`. A
    /// coordinator that finds members behind for a whole catch-up patience schedules a
    /// view change to bring them forward (see [`Gms::lagging`]).
    fn note_view_of(&mut self, now: Instant, member: &MemberId, its_view: ViewId) {
        if its_view >= self.view_id() {
            self.behind.remove(&member.uuid());
            self.checked_behind.remove(&member.uuid());
            return;
        }
        let newly = match self.behind.entry(member.uuid()) {
            Entry::Vacant(entry) => {
                entry.insert(now);
                true
            }
            Entry::Occupied(_) => false,
        };
        if newly {
            // This member may be next in line now: it asks for the lease at once.
            self.lease_tick(now);
        }
        if self.lagging(now) && self.round.is_none() && self.coordinating() {
            self.schedule(now);
        }
    }

    /// True if a member of this view has said for longer than a catch-up patience (a
    /// prepare timeout) that it holds an older view, and no view change was made only for
    /// such members within the refresh interval. A member behind asks its view's members
    /// and installs the newest view once members holding a weighted majority of *its* view
    /// answered with newer ones; when members of that older view have died or left since,
    /// that majority can never be reached, though the members of the newest view are all
    /// there (chaos seed 13335: view 3 of four, whose coordinator left in view 4 while two
    /// members were cut off). A view change from the newest view, in which it votes as
    /// every member votes on newer bases, brings it forward without trusting anyone.
    fn lagging(&self, now: Instant) -> bool {
        let patience = self.config.prepare_timeout;
        let refreshed_lately = self
            .refreshed_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.refresh_interval());
        !refreshed_lately
            && self
                .behind
                .values()
                .any(|since| now.saturating_duration_since(*since) >= patience)
    }

    /// At most one view change per this interval is made only to bring members that stay
    /// behind forward (four prepare timeouts): a member that can send but not receive
    /// would otherwise cost a view change at every question it asks.
    fn refresh_interval(&self) -> Duration {
        self.config.prepare_timeout * 4
    }

    fn schedule(&mut self, now: Instant) {
        if self.batch_at.is_none() {
            self.batch_at = Some(now + self.config.batch_interval);
        }
    }

    /// Starts a round for the pending changes: round 0 straight to phase 2 when this
    /// member is the base view's coordinator trying for the first time, else phase 1 with
    /// a round higher than any it promised or tried.
    fn start_round(&mut self, now: Instant) {
        let Some(base) = self.view.clone() else {
            return;
        };
        if self.vote.base() > base.id() {
            // It voted on a newer base than it installed: it missed a decision. It asks,
            // and runs its round all the same: phase 1 on its own base finds the decided
            // proposal (this member kept its own vote on it), so the round can only decide
            // it again. Waiting for the answers instead would wait for ever if the members
            // that installed the decision are all gone (chaos seed 2577).
            self.catch_up(now);
        }
        let leaving: Vec<MemberId> = take_in(&mut self.pending_leaves, &base);
        let crashed: Vec<MemberId> = take_in(&mut self.pending_removals, &base);
        let lost = self
            .config
            .partition_detection
            .then(|| Quorum::new(&base).lost_to(&crashed))
            .flatten();
        let rechecked = match lost {
            Some(_) => self.confirm_findings(now, &crashed),
            None => Vec::new(),
        };
        if !rechecked.is_empty() {
            // Findings that make this side a minority are checked again before it gives up
            // if their members were heard from since: a pause or a cut that ended since,
            // with the finding carried through a failed round or an installed view, must
            // not shut down a side that holds a quorum now. The round is weighed again once
            // the checks are done.
            self.pending_leaves.extend(leaving);
            let standing = crashed.into_iter().filter(|m| !rechecked.contains(m));
            self.pending_removals.extend(standing);
            return;
        }
        if let Some(reason) = lost {
            // This side is the minority: tell the members still here, and stop.
            let survivors: Vec<MemberId> = others(&base, &self.me)
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
        let fresh = self.config.join_retry * 3;
        let joiners: Vec<MemberId> = std::mem::take(&mut self.pending_joins)
            .into_iter()
            .filter(|m| !base.contains(m) && !self.former.contains(&m.uuid()))
            .filter(|m| {
                self.join_asked
                    .get(&m.uuid())
                    .is_some_and(|at| now.saturating_duration_since(*at) <= fresh)
            })
            .collect();
        self.join_asked
            .retain(|uuid, _| joiners.iter().any(|j| j.uuid() == *uuid));
        let refresh = leaving.is_empty() && crashed.is_empty() && joiners.is_empty();
        if refresh && !self.lagging(now) {
            return;
        }
        if refresh {
            // Nothing changes but the view id: members that stayed behind vote on it and
            // install it, as they would any decision they accepted.
            tracing::info!(view = %base, behind = self.behind.len(), "bringing members that stayed behind forward");
            self.refreshed_at = Some(now);
            self.stats.refreshes += 1;
        }
        let tried = self
            .tried
            .filter(|(b, _)| *b == base.id())
            .map(|(_, round)| round);
        let promised = self.vote.promised_for(base.id());
        let first_try = tried.is_none() && promised.is_none();
        let round = if base.coordinator() == Some(&self.me) && first_try {
            0
        } else {
            let promised = promised.map_or(0, |b| b.round);
            promised.max(tried.unwrap_or(0)) + 1
        };
        let ballot = Ballot {
            round,
            proposer: self.me.uuid(),
        };
        self.tried = Some((base.id(), round));
        tracing::debug!(view = %base, round, joiners = joiners.len(), leaving = leaving.len(), crashed = crashed.len(), "starting a view change");
        let mut round = Round {
            base: base.clone(),
            ballot,
            phase: Phase::Collecting {
                promises: HashMap::new(),
            },
            deadline: now + self.config.prepare_timeout,
            joiners,
            leaving,
            crashed,
        };
        if ballot.round == 0 {
            let proposal = own_proposal(&round);
            round.phase = Phase::Proposing {
                proposal,
                accepted: HashSet::new(),
                adopted: false,
            };
            self.round = Some(round);
            self.propose(now);
        } else {
            match self.vote.collect(base.id(), ballot) {
                Ok(accepted) => {
                    round.phase = Phase::Collecting {
                        promises: HashMap::from([(self.me.uuid(), accepted)]),
                    };
                }
                Err(_) => {
                    // It promised a higher ballot itself: another proposer is at work.
                    self.give_back(round);
                    self.stand_back(now);
                    return;
                }
            }
            self.round = Some(round);
            self.send(
                others(&base, &self.me),
                GmsMessage::Collect {
                    base: base.id(),
                    ballot,
                },
            );
            self.collected(now);
        }
    }

    /// Phase 2 of the round: this member accepts its own proposal and asks for the rest.
    fn propose(&mut self, now: Instant) {
        let Some(round) = &self.round else {
            return;
        };
        let Some(proposal) = round.proposal().cloned() else {
            return;
        };
        let (base, ballot) = (round.base.id(), round.ballot);
        let mut to = others(&round.base, &self.me);
        to.extend(
            proposal
                .view
                .members()
                .iter()
                .filter(|m| !round.base.contains(m))
                .cloned(),
        );
        if self.vote.propose(base, ballot, proposal.clone()).is_err() {
            if let Some(round) = self.round.take() {
                self.give_back(round);
            }
            self.stand_back(now);
            return;
        }
        let me = self.me.uuid();
        if let Some(Round {
            phase: Phase::Proposing { accepted, .. },
            ..
        }) = &mut self.round
        {
            accepted.insert(me);
        }
        self.send(
            to,
            GmsMessage::Propose {
                base,
                ballot,
                proposal,
            },
        );
        self.accepted(now, false);
    }

    /// Phase 1 done once a weighted majority promised: adopt the highest-ballot proposal
    /// any of them accepted (it may have been decided), or propose this member's own.
    fn collected(&mut self, now: Instant) {
        let Some(round) = &mut self.round else {
            return;
        };
        let Phase::Collecting { promises } = &round.phase else {
            return;
        };
        let promised: HashSet<Uuid> = promises.keys().copied().collect();
        if !Quorum::new(&round.base).is_majority(&promised) {
            return;
        }
        let newest = promises
            .values()
            .flatten()
            .filter(|(_, p)| p.view.id() == ViewId(round.base.id().0 + 1))
            .max_by_key(|(ballot, _)| *ballot)
            .map(|(_, p)| p.clone());
        let adopted = newest.is_some();
        let proposal = newest.unwrap_or_else(|| own_proposal(round));
        if adopted {
            tracing::info!(view = %proposal.view, "carrying on a proposal found in phase 1");
        }
        round.phase = Phase::Proposing {
            proposal,
            accepted: HashSet::new(),
            adopted,
        };
        self.propose(now);
    }

    /// Decides once a weighted majority of the base view accepted and either every member
    /// of the new view did too or the deadline passed (`at_deadline`). Once every member of
    /// the base view in the new view accepted, joiners get half a member timeout more: a
    /// joiner that died after asking must not hold up the view change (and the leaves and
    /// removals behind it) for a whole prepare timeout. Members this member holds
    /// unreachable are not waited for.
    fn accepted(&mut self, now: Instant, at_deadline: bool) {
        let joiner_grace = self.config.member_timeout / 2;
        let Some(round) = &mut self.round else {
            return;
        };
        let Phase::Proposing {
            proposal, accepted, ..
        } = &round.phase
        else {
            return;
        };
        let majority = Quorum::new(&round.base).is_majority(accepted);
        let (mut everyone, mut voters) = (true, true);
        // A member this member found unreachable does not hold the change up for the
        // prepare timeout either: it learns of the view when it answers again.
        let reachability = &self.reachability;
        for member in proposal.view.members() {
            if !accepted.contains(&member.uuid()) && !reachability.is_found(member.uuid()) {
                everyone = false;
                voters &= !round.base.contains(member);
            }
        }
        if majority && (everyone || at_deadline) {
            self.decide(now);
        } else if majority && voters {
            round.deadline = round.deadline.min(now + joiner_grace);
        }
    }

    fn decide(&mut self, now: Instant) {
        let Some(round) = self.round.take() else {
            return;
        };
        let silent = round.silent();
        let Round {
            base,
            ballot,
            phase,
            deadline,
            joiners,
            leaving,
            crashed,
        } = round;
        let Phase::Proposing {
            proposal, adopted, ..
        } = phase
        else {
            return;
        };
        let decision = Decision {
            base: base.id(),
            ballot,
            proposal: proposal.clone(),
        };
        // The members removed learn that they are out (one that was only slow must learn
        // it, to rejoin); so do the members that left.
        let mut recipients = others(&proposal.view, &self.me);
        recipients.extend(
            proposal
                .left
                .iter()
                .chain(&proposal.crashed)
                .filter(|m| **m != self.me)
                .cloned(),
        );
        self.send(
            recipients,
            GmsMessage::Decide {
                decision: decision.clone(),
            },
        );
        if adopted {
            // Its own changes were not in it: they are proposed next.
            self.give_back(Round {
                base,
                ballot,
                phase: Phase::Collecting {
                    promises: HashMap::new(),
                },
                deadline,
                joiners,
                leaving,
                crashed,
            });
        }
        self.install(now, decision);
        // Members of the new view that did not accept in time are checked (a busy member
        // is not expelled for being slow; a dead joiner is removed in the next view).
        let silent: Vec<MemberId> = silent
            .into_iter()
            .filter(|m| proposal.view.contains(m))
            .collect();
        if !silent.is_empty() && self.is_member() {
            let reason = format!(
                "did not accept view {} within {:?}",
                proposal.view.id(),
                self.config.prepare_timeout
            );
            self.raise_suspicion(now, silent, reason);
        }
        let more = !self.pending_joins.is_empty()
            || !self.pending_leaves.is_empty()
            || !self.pending_removals.is_empty();
        if more && self.coordinating() {
            self.schedule(now);
        }
    }

    /// The round's deadline: decide with a majority, or give up and try again later (the
    /// silent members of the base view are suspected and checked meanwhile, so a side cut
    /// off from its majority finds out and stops).
    fn round_deadline(&mut self, now: Instant) {
        self.accepted(now, true);
        let Some(round) = self.round.take() else {
            return;
        };
        self.stats.rounds_failed += 1;
        let silent: Vec<MemberId> = round
            .silent()
            .into_iter()
            .filter(|m| round.base.contains(m))
            .collect();
        tracing::warn!(view = %round.base, silent = silent.len(), "no majority for the view change in time");
        self.give_back(round);
        if !silent.is_empty() && self.is_member() {
            let reason = format!(
                "did not answer a view change within {:?}",
                self.config.prepare_timeout
            );
            self.raise_suspicion(now, silent, reason);
        }
        self.schedule(now);
    }

    /// Hands a round's own changes back to the pending lists (joiners that never answered
    /// are dropped: they ask again if they are alive).
    fn give_back(&mut self, round: Round) {
        let answered = |m: &MemberId| match &round.phase {
            Phase::Proposing { accepted, .. } => accepted.contains(&m.uuid()),
            Phase::Collecting { .. } => true,
        };
        for joiner in round.joiners.iter().filter(|j| answered(j)) {
            if !self.pending_joins.contains(joiner) {
                self.pending_joins.push(joiner.clone());
            }
        }
        for (list, pending) in [
            (&round.leaving, &mut self.pending_leaves),
            (&round.crashed, &mut self.pending_removals),
        ] {
            for member in list {
                if !pending.contains(member) {
                    pending.push(member.clone());
                }
            }
        }
    }

    fn on_promise(
        &mut self,
        now: Instant,
        from: &MemberId,
        base: ViewId,
        ballot: Ballot,
        accepted: Option<(Ballot, Proposal)>,
    ) {
        let Some(round) = &mut self.round else {
            return;
        };
        if round.base.id() != base || round.ballot != ballot || !round.base.contains(from) {
            return;
        }
        if let Phase::Collecting { promises } = &mut round.phase {
            promises.insert(from.uuid(), accepted);
            self.collected(now);
        }
    }

    fn on_accept(&mut self, now: Instant, from: &MemberId, base: ViewId, ballot: Ballot) {
        let Some(round) = &mut self.round else {
            return;
        };
        if round.base.id() != base || round.ballot != ballot {
            return;
        }
        if let Phase::Proposing {
            proposal, accepted, ..
        } = &mut round.phase
            && (round.base.contains(from) || proposal.view.contains(from))
        {
            accepted.insert(from.uuid());
            self.accepted(now, false);
        }
    }

    /// A voter refused this member's round: it is behind (catch up) or outbid (stand back
    /// for a prepare timeout, then try again above the ballot that won, if still needed).
    #[allow(clippy::too_many_arguments)]
    fn on_reject(
        &mut self,
        now: Instant,
        from: &MemberId,
        base: ViewId,
        ballot: Ballot,
        promised: Option<Ballot>,
        installed: ViewId,
    ) {
        if installed > self.view_id() && self.in_view(from) {
            // Someone of this view has installed a newer one.
            if let Some(round) = self.round.take() {
                self.give_back(round);
            }
            self.catch_up(now);
            return;
        }
        let ours = self
            .round
            .as_ref()
            .is_some_and(|r| r.base.id() == base && r.ballot == ballot);
        if let (true, Some(higher)) = (ours, promised.filter(|p| *p > ballot))
            && let Some(round) = self.round.take()
        {
            tracing::info!(?higher, "outbid: standing back");
            self.give_back(round);
            self.stand_back(now);
        }
    }

    /// Another proposer holds a higher ballot: propose nothing for a prepare timeout (it
    /// decides meanwhile, or is found dead), then try again above it if still needed.
    fn stand_back(&mut self, now: Instant) {
        self.stats.rounds_failed += 1;
        self.outbid_until = Some(now + self.config.prepare_timeout);
        self.batch_at = Some(now + self.config.prepare_timeout);
    }

    // ---- every member: voting and installing ----

    fn on_collect(&mut self, from: &MemberId, base: ViewId, ballot: Ballot) {
        if ballot.proposer != from.uuid() || !self.is_member() {
            return;
        }
        // A member that installed the decision of this base tells it as what it accepted:
        // it is the one value a proposer for this base may propose.
        if let Some(decided) = self.decided.as_ref().filter(|d| d.base == base) {
            let accepted = Some((decided.ballot, decided.proposal.clone()));
            self.send(
                vec![from.clone()],
                GmsMessage::Promise {
                    base,
                    ballot,
                    accepted,
                },
            );
            return;
        }
        let answer = match self.vote.collect(base, ballot) {
            Ok(accepted) => GmsMessage::Promise {
                base,
                ballot,
                accepted,
            },
            Err(refusal) => self.refusal(base, ballot, refusal),
        };
        self.send(vec![from.clone()], answer);
    }

    fn on_propose(&mut self, from: &MemberId, base: ViewId, ballot: Ballot, proposal: Proposal) {
        if ballot.proposer != from.uuid() || proposal.view.id() != ViewId(base.0 + 1) {
            return;
        }
        if matches!(self.role, Role::Joining { .. }) {
            // A joiner does not vote; its answer tells the proposer it is there.
            if proposal.view.contains(&self.me) {
                self.joining_proposal = Some(proposal.view);
                self.send(vec![from.clone()], GmsMessage::Accept { base, ballot });
            }
            return;
        }
        if !self.is_member() {
            return;
        }
        if self
            .decided
            .as_ref()
            .is_some_and(|d| d.base == base && d.proposal == proposal)
        {
            // The decided value proposed again, by a proposer that missed the decision.
            self.send(vec![from.clone()], GmsMessage::Accept { base, ballot });
            return;
        }
        let answer = match self.vote.propose(base, ballot, proposal) {
            Ok(()) => GmsMessage::Accept { base, ballot },
            Err(refusal) => self.refusal(base, ballot, refusal),
        };
        self.send(vec![from.clone()], answer);
    }

    fn refusal(&self, base: ViewId, ballot: Ballot, refusal: Refusal) -> GmsMessage {
        GmsMessage::Reject {
            base,
            ballot,
            promised: match refusal {
                Refusal::Outbid(higher) => Some(higher),
                Refusal::Stale => None,
            },
            installed: self.view_id(),
        }
    }

    /// A decision is installed when this member can vouch for it: it accepted exactly that
    /// proposal for its base (under any ballot), or promised its ballot, or it comes from its view's coordinator in round 0
    /// (or, for a joiner, from the coordinator it asked or the proposer, naming it). Any
    /// other decision of a newer view is only a sign that this member is behind: it asks
    /// its view's members, and a weighted majority of answers decides.
    fn on_decide(&mut self, now: Instant, from: &MemberId, decision: Decision) {
        if decision.proposal.view.id() <= self.view_id() {
            return;
        }
        let by_proposer = decision.ballot.proposer == from.uuid();
        let vouched = match &self.role {
            Role::Joining { coordinator, .. } => {
                decision.proposal.view.contains(&self.me)
                    && (coordinator == from
                        || (by_proposer && decision.proposal.view.contains(from)))
            }
            Role::Member | Role::Leaving { .. } => {
                // The proposal it accepted for this base, under whatever ballot: once a
                // proposal is decided, every higher ballot carries the same one (Paxos), so
                // a member that accepted it under a later proposer's higher ballot, after
                // the first had decided, must take that decision too. Requiring the ballot
                // as well left such members asking a majority that had not installed it
                // either, for ever (chaos seed 13090). Geode's members likewise compare the
                // view they are told to install with the one they prepared, not who
                // prepared it.
                let accepted_it = self
                    .vote
                    .accepted_for(decision.base)
                    .is_some_and(|(_, p)| *p == decision.proposal);
                let promised_it = self.vote.promised_for(decision.base) == Some(decision.ballot);
                let coordinator_round_0 = decision.base == self.view_id()
                    && decision.ballot.round == 0
                    && self.view.as_ref().and_then(View::coordinator) == Some(from);
                by_proposer && (accepted_it || promised_it || coordinator_round_0)
            }
            Role::Idle | Role::Gone => false,
        };
        if vouched {
            self.install(now, decision);
        } else if self.is_member() && self.in_view(from) {
            self.catch_up(now);
        }
    }

    /// Asks every other member of this view for its newest view, at most once per member
    /// timeout.
    fn catch_up(&mut self, now: Instant) {
        if let Some(at) = self.last_catch_up
            && now.saturating_duration_since(at) < self.config.member_timeout
        {
            // Asked recently, perhaps before the others had moved on: ask again when the
            // member timeout is up.
            self.catch_up_due = Some(at + self.config.member_timeout);
            return;
        }
        self.ask_for_views(now);
    }

    /// Asks every other member of this view for its newest view (answered by every member
    /// that is in a view: the answers also tell who can be reached).
    fn ask_for_views(&mut self, now: Instant) {
        let Some(view) = self.view.clone().filter(|_| self.is_member()) else {
            return;
        };
        self.last_catch_up = Some(now);
        self.catch_up_due = None;
        self.stats.catch_ups += 1;
        tracing::info!(view = %view, "asking the view's members for their views");
        // Answers count within one episode of questions, which ends when the patience
        // runs out: answers from before may come from members since gone.
        let reask = now + self.reask_interval();
        let catch_up = self.catch_up.get_or_insert_with(CatchUp::default);
        if catch_up.patience.is_none() {
            catch_up.answers.clear();
            catch_up.refusals.clear();
            catch_up.patience = Some(now + self.config.prepare_timeout);
        }
        catch_up.reask = Some(reask);
        self.send(
            others(&view, &self.me),
            GmsMessage::ViewQuery { have: view.id() },
        );
    }

    /// Within one episode of questions, the members not heard from yet are asked again
    /// this often (four times in a prepare timeout).
    fn reask_interval(&self) -> Duration {
        self.config.prepare_timeout / 4
    }

    /// Asks again the members of this view that have neither answered nor refused in this
    /// episode, until its patience runs out.
    fn ask_the_silent_again(&mut self, now: Instant) {
        let interval = self.reask_interval();
        let (Some(catch_up), Some(view)) = (&mut self.catch_up, &self.view) else {
            return;
        };
        let next = now + interval;
        catch_up.reask = catch_up.patience.filter(|end| next < *end).map(|_| next);
        let silent: Vec<MemberId> = others(view, &self.me)
            .into_iter()
            .filter(|m| {
                !catch_up.answers.contains_key(&m.uuid()) && !catch_up.refusals.contains(&m.uuid())
            })
            .collect();
        if !silent.is_empty() && self.is_member() {
            let have = view.id();
            self.send(silent, GmsMessage::ViewQuery { have });
        }
    }

    fn on_view_query(&mut self, now: Instant, from: &MemberId, have: ViewId) {
        if self.is_member() && self.in_view(from) {
            self.note_view_of(now, from, have);
        }
        if let Some(decision) = self.decided.clone().filter(|_| self.is_member()) {
            self.send(vec![from.clone()], GmsMessage::CurrentView { decision });
        }
    }

    /// A partition notice from the coordinator of this member's view (or from the checker,
    /// when this member suspects the coordinator itself) is acted on at once. Any other is
    /// checked: this member asks its view, and shuts down only if members holding a
    /// weighted majority do not answer within a prepare timeout. So the members of a
    /// minority stop together, and a forged notice costs one round of questions.
    fn on_partition_notice(&mut self, now: Instant, from: &MemberId, reason: String) {
        if !matches!(self.role, Role::Member) {
            return;
        }
        if self.trusts_partition_notice(from) {
            self.shut_down_for_partition(reason);
            return;
        }
        if self.catch_up.as_ref().is_some_and(|c| c.probe.is_some()) {
            return;
        }
        tracing::warn!(?from, %reason, "partition notice: checking whether a majority answers");
        self.ask_for_views(now);
        if let Some(catch_up) = &mut self.catch_up {
            catch_up.probe = Some((now + self.config.prepare_timeout, reason));
        }
    }

    /// An answer to this member's `ViewQuery`: once members holding a weighted majority of
    /// this member's view answered with newer views (or refused it), the newest answer is
    /// installed. (One member alone, answering or not, cannot move another to a view of its
    /// making.)
    fn on_current_view(&mut self, now: Instant, from: &MemberId, decision: Decision) {
        let (Some(catch_up), Some(view)) = (&mut self.catch_up, &self.view) else {
            return;
        };
        if !view.contains(from) {
            return;
        }
        // The decision of this member's own base, of the very proposal it accepted: it can
        // vouch for that one as if the proposer had told it (see `on_decide`). Waiting for
        // a majority that moved on instead waits for ever when the decision reached only a
        // minority before its proposer died, and the rest of the majority that accepted it
        // is waiting too (chaos seeds 34624 and 52518).
        let vouched = decision.base == view.id()
            && self
                .vote
                .accepted_for(decision.base)
                .is_some_and(|(_, p)| *p == decision.proposal);
        if vouched {
            self.conclude_catch_up(now, Some(decision), false);
            return;
        }
        catch_up.answers.insert(from.uuid(), decision);
        self.settle_catch_up(now);
    }

    fn settle_catch_up(&mut self, now: Instant) {
        let installed = self.view_id();
        let (Some(catch_up), Some(view)) = (&mut self.catch_up, &self.view) else {
            return;
        };
        let quorum = Quorum::new(view);
        let mut reached: HashSet<Uuid> = catch_up.answers.keys().copied().collect();
        reached.extend(&catch_up.refusals);
        reached.insert(self.me.uuid());
        if catch_up.probe.is_some() && quorum.is_majority(&reached) {
            tracing::info!("a majority of the view answered: the partition notice is refuted");
            catch_up.probe = None;
        }
        let mut moved_on: HashSet<Uuid> = catch_up
            .answers
            .iter()
            .filter(|(_, d)| d.proposal.view.id() > installed)
            .map(|(uuid, _)| *uuid)
            .collect();
        moved_on.extend(&catch_up.refusals);
        moved_on.insert(self.me.uuid());
        if !quorum.is_majority(&moved_on) {
            return;
        }
        let newest = catch_up
            .answers
            .values()
            .filter(|d| d.proposal.view.id() > installed)
            .max_by_key(|d| (d.proposal.view.id(), d.ballot))
            .cloned();
        let refused = !catch_up.refusals.is_empty();
        self.conclude_catch_up(now, newest, refused);
    }

    /// The majority of this member's view stayed silent for a prepare timeout after it
    /// asked: an answer or a refusal showing a newer view without this member is then
    /// enough to go out (one member alone can still push another out of a cluster it cannot
    /// decide anything in, but never into a view of its making).
    fn catch_up_patience_ran_out(&mut self, now: Instant) {
        let installed = self.view_id();
        let Some(catch_up) = &mut self.catch_up else {
            return;
        };
        catch_up.patience = None;
        catch_up.reask = None;
        let newest = catch_up
            .answers
            .values()
            .filter(|d| d.proposal.view.id() > installed && !d.proposal.view.contains(&self.me))
            .max_by_key(|d| (d.proposal.view.id(), d.ballot))
            .cloned();
        let refused = !catch_up.refusals.is_empty();
        if newest.is_some() || refused {
            tracing::warn!(
                "no majority of the view answers, and a newer view leaves this member out"
            );
            self.conclude_catch_up(now, newest, refused);
            return;
        }
        let mut reached: HashSet<Uuid> = catch_up.answers.keys().copied().collect();
        reached.insert(self.me.uuid());
        if let Some(view) = &self.view
            && !Quorum::new(view).is_majority(&reached)
            && self.is_member()
        {
            // Cut off from its majority: this side can decide nothing, as a coordinator
            // losing its quorum finds.
            let reason = format!(
                "network partition: members holding a majority of view {} did not answer \
                 within {:?}; this side no longer holds a quorum",
                view.id(),
                self.config.prepare_timeout
            );
            self.shut_down_for_partition(reason);
        }
    }

    /// Installs the newest view answered, or, refused by members that installed a view
    /// without this member, goes out.
    fn conclude_catch_up(&mut self, now: Instant, newest: Option<Decision>, refused: bool) {
        let base = self.view_id();
        self.catch_up = None;
        if let Some(round) = self.round.take() {
            self.give_back(round);
        }
        match newest {
            Some(decision) if !refused || !decision.proposal.view.contains(&self.me) => {
                tracing::info!(view = %decision.proposal.view, "caught up");
                self.install(now, decision);
            }
            _ => {
                // Refused by members that installed a view without this member, and no
                // answer says which: out all the same.
                let reason =
                    format!("members of view {base} refuse this member: a newer view removed it");
                tracing::warn!(member = ?self.me, %reason, "forced out");
                let left = matches!(self.role, Role::Leaving { .. });
                self.role = Role::Gone;
                self.refused_by_newer_view = true;
                self.detector.stop();
                self.event(if left {
                    MembershipEvent::Left
                } else {
                    MembershipEvent::ForcedDisconnect { reason }
                });
            }
        }
    }

    fn install(&mut self, now: Instant, decision: Decision) {
        let view = decision.proposal.view.clone();
        let previous = self.view.take();
        let before: HashSet<Uuid> = previous
            .iter()
            .flat_map(|v| v.members().iter().map(MemberId::uuid))
            .collect();
        let joined: Vec<MemberId> = view
            .members()
            .iter()
            .filter(|m| !before.contains(&m.uuid()))
            .cloned()
            .collect();
        // Relative to this member's previous view (a member catching up may skip views):
        // the departed that the decision says left, left; the others crashed.
        let departed: Vec<MemberId> = previous
            .iter()
            .flat_map(|v| v.members().iter())
            .filter(|m| !view.contains(m))
            .cloned()
            .collect();
        let (left, crashed): (Vec<MemberId>, Vec<MemberId>) = departed
            .into_iter()
            .partition(|m| decision.proposal.left.contains(m));
        let included = view.contains(&self.me);
        let was_coordinating = self.coordinating();
        self.former.extend(
            view.members()
                .iter()
                .chain(&decision.proposal.left)
                .chain(&decision.proposal.crashed)
                .map(MemberId::uuid),
        );
        self.view = Some(view.clone());
        self.decided = Some(decision);
        self.vote.installed(view.id());
        self.joining_proposal = None;
        self.outbid_until = None;
        self.catch_up = None;
        self.catch_up_due = None;
        if let Some(round) = self.round.take_if(|r| r.base.id() < view.id()) {
            self.give_back(round);
        }
        // Suspicions and checks about members no longer in the view are settled.
        self.suspects.retain(|uuid, _| view.contains_uuid(*uuid));
        self.own_suspicions.retain(|uuid| view.contains_uuid(*uuid));
        self.checking.retain(|uuid, _| view.contains_uuid(*uuid));
        self.dead.retain(|uuid| view.contains_uuid(*uuid));
        // Who holds the new view is learnt anew, from heartbeats and queries.
        self.behind.clear();
        self.checked_behind.clear();
        self.rechecked.clear();
        self.heard_since_dead
            .retain(|uuid| view.contains_uuid(*uuid));
        self.cleared_at.retain(|uuid, _| view.contains_uuid(*uuid));
        self.suspected_by
            .retain(|uuid, _| view.contains_uuid(*uuid));
        self.reachability.view_installed(&view);
        if included {
            self.detector.view_installed(now, &view, &self.me);
        } else {
            self.detector.stop();
        }
        if was_coordinating && !self.coordinating() {
            self.hand_over(&view);
        }
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
            (Role::Leaving { .. }, true) if !self.coordinating() => {
                // A new coordinator may not know of the leave yet.
                self.ask_to_leave();
            }
            (Role::Member, false) => {
                self.role = Role::Gone;
                self.round = None;
                self.event(MembershipEvent::ForcedDisconnect {
                    reason: format!("view {} removed this member as crashed", self.view_id()),
                });
            }
            _ => {}
        }
        // The checker may have changed with the view (a new coordinator).
        self.run_checks(now);
        // Changes handed back by a round this view overtook are proposed next.
        let pending = !self.pending_joins.is_empty()
            || !self.pending_leaves.is_empty()
            || !self.pending_removals.is_empty();
        if pending && self.coordinating() && self.round.is_none() {
            self.schedule(now);
        }
        // A lease is for one view: a coordinator of the new one asks again at once.
        self.lease.stop_asking();
        self.lease_tick(now);
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

    // ---- joins ----

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
            // Already admitted: the decision did not reach it. Say it again.
            if let Some(decision) = self.decided.clone() {
                self.send(vec![member], GmsMessage::Decide { decision });
            }
            return;
        }
        if self.former.contains(&member.uuid()) {
            // Removed since it asked: a uuid never comes back.
            return;
        }
        self.join_asked.insert(member.uuid(), now);
        let in_round = self.round.as_ref().is_some_and(|r| r.involves(&member));
        if in_round || self.pending_joins.contains(&member) {
            // A retry of a join already on its way in.
            return;
        }
        if let Some(reason) = self.refusal_of(&view, &member, credentials) {
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
        self.pending_joins.push(member);
        self.schedule(now);
    }

    fn refusal_of(
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

    /// Only the member this joiner asked may redirect it.
    fn redirected(&mut self, now: Instant, from: &MemberId, coordinator: MemberId) {
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

    // ---- failure detection ----

    /// Who runs final checks: the coordinator of the view without the suspects (this member
    /// never counts itself suspect), so that the successor checks a suspected coordinator.
    /// A member that answered this member's final check from an older view is passed
    /// over too (`checked_behind`); one that only said so in a heartbeat or a query is
    /// not: passing those over as well lost chaos seed 995 its cluster, and left one-stage
    /// seed 21020 with suspects nobody checked.
    fn checker(&self) -> Option<MemberId> {
        let view = self.view.as_ref()?;
        view.coordinator_among(|m| {
            *m == self.me
                || (!self.suspects.contains_key(&m.uuid())
                    && !self.checked_behind.contains(&m.uuid()))
        })
        .cloned()
    }

    /// A partition notice is taken from the coordinator of this member's view, or from the
    /// checker when this member itself suspects the coordinator: a member that merely says
    /// it suspects the coordinator cannot make others shut down.
    fn trusts_partition_notice(&self, from: &MemberId) -> bool {
        let view = self.view.as_ref();
        let coordinator = view.and_then(View::coordinator);
        coordinator == Some(from)
            || (self.checker().as_ref() == Some(from)
                && coordinator.is_some_and(|c| self.own_suspicions.contains(&c.uuid())))
    }

    fn on_suspect(&mut self, now: Instant, from: &MemberId, members: Vec<MemberId>, reason: &str) {
        if !self.is_member() {
            return;
        }
        // A suspicion that overtook its own clearing is stale here; the checker itself
        // always looks again.
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
        self.note_suspects(members, reason);
        self.run_checks(now);
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
        if !tick.knock_to.is_empty() {
            self.outputs.push_back(Output::Knock { to: tick.knock_to });
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
        // A suspect the checker reported unreachable is being checked again there, until
        // its removal timeout; only a checker silent for longer than that is suspected.
        // Only the checker's own reports count: a member that checks although this one
        // does not take it for the checker settles nothing here (chaos seed 197).
        let patience = self.reachability.removal_timeout() + self.config.member_timeout * 2;
        let unsettled = self.suspects.keys().any(|uuid| {
            !checker.as_ref().is_some_and(|c| {
                self.reachability
                    .reported_by_within(*uuid, c.uuid(), now, patience)
            })
        });
        let waiting = matches!(self.role, Role::Member)
            && unsettled
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

    /// Tells the coordinator and the checker, and acts on it here too.
    fn raise_suspicion(&mut self, now: Instant, members: Vec<MemberId>, reason: String) {
        let Some(view) = self.view.clone() else {
            return;
        };
        tracing::info!(suspects = ?members, %reason, "suspecting");
        self.own_suspicions.extend(
            members
                .iter()
                .filter(|m| view.contains(m))
                .map(MemberId::uuid),
        );
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
        if !self.is_member() || self.checker().as_ref() != Some(&self.me) {
            return;
        }
        let due: Vec<MemberId> = self
            .suspects
            .values()
            .filter(|m| {
                let uuid = m.uuid();
                // A member found unreachable is checked again on its own schedule.
                !self.checking.contains_key(&uuid)
                    && !self.dead.contains(&uuid)
                    && !self.reachability.is_found(uuid)
            })
            .cloned()
            .collect();
        // A check that passed settles new suspicions of that member for a while: a burst
        // of them (an application suspecting on every slow reply) would otherwise check it
        // without limit, until its own query rate limiter refused the checker.
        let spacing = self.config.member_timeout / 2;
        for member in due {
            let passed_lately = self
                .cleared_at
                .get(&member.uuid())
                .is_some_and(|at| now.saturating_duration_since(*at) < spacing);
            if passed_lately {
                // The clearing keeps its time and the detector its clock: a member that
                // crashed since is still found by its silence, within a member timeout.
                tracing::debug!(?member, "suspicion settled by a check that passed lately");
                self.settle(&member);
                self.rechecked.remove(&member.uuid());
                self.suspects.remove(&member.uuid());
                self.own_suspicions.remove(&member.uuid());
            } else {
                self.start_check(now, member, 0);
            }
        }
    }

    /// `member` is alive: those who suspected it are told (they clear it too).
    fn settle(&mut self, member: &MemberId) {
        let told: Vec<MemberId> = self
            .suspected_by
            .remove(&member.uuid())
            .unwrap_or_default()
            .into_iter()
            .filter(|m| *m != self.me && self.in_view(m))
            .collect();
        self.send(
            told,
            GmsMessage::Cleared {
                member: member.clone(),
            },
        );
    }

    /// Asks the driver for a final check of `member` (the `repeats`th repeat), counted.
    fn start_check(&mut self, now: Instant, member: MemberId, repeats: u32) {
        self.checking.insert(member.uuid(), (now, repeats));
        self.stats.final_checks += 1;
        self.outputs.push_back(Output::Check { member });
    }

    /// Before the findings in `crashed` shut this side down for want of a quorum, the
    /// members among them heard from since they were found dead, and not checked again
    /// since, are checked again (they stay suspects, and the checks' results decide).
    /// Returns them; none if no finding is in doubt. A minority whose members across the
    /// cut still reach it (a one-way cut) is delayed by one final check.
    fn confirm_findings(&mut self, now: Instant, crashed: &[MemberId]) -> Vec<MemberId> {
        let unconfirmed: Vec<MemberId> = crashed
            .iter()
            .filter(|m| {
                self.dead.contains(&m.uuid())
                    && self.heard_since_dead.contains(&m.uuid())
                    && !self.rechecked.contains(&m.uuid())
            })
            .cloned()
            .collect();
        if unconfirmed.is_empty() {
            return unconfirmed;
        }
        tracing::warn!(
            members = ?unconfirmed,
            "this side would lose its quorum: checking again the members found dead but heard from since"
        );
        for member in &unconfirmed {
            let uuid = member.uuid();
            self.dead.remove(&uuid);
            self.heard_since_dead.remove(&uuid);
            self.rechecked.insert(uuid);
            self.suspects.entry(uuid).or_insert_with(|| member.clone());
        }
        self.run_checks(now);
        // The round is tried again once no check runs (a crash found meanwhile sets it
        // too): the findings that stand are still pending.
        self.batch_at = Some(now);
        unconfirmed
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
        self.rechecked.remove(&member.uuid());
        self.suspects.remove(&member.uuid());
        self.own_suspicions.remove(&member.uuid());
        self.cleared_at.insert(member.uuid(), now);
        self.detector.cleared(member.uuid(), now);
    }

    // ---- reachability: unreachable, then removed (gms/reachability.rs) ----

    /// True while a final check runs on a member not found unreachable yet: a round waits
    /// for those, to gather the crashes found together into one view change, but not for
    /// the checks repeated on members already unreachable.
    fn first_checks_running(&self) -> bool {
        self.checking
            .keys()
            .any(|uuid| !self.reachability.is_found(*uuid))
    }

    /// The members of the view reported unreachable (by this member's own final checks,
    /// or by the checker's notices) and not heard of as reachable or removed since.
    pub fn unreachable_members(&self) -> Vec<MemberId> {
        let mut members: Vec<MemberId> = self.reachability.flagged().cloned().collect();
        members.sort_by_key(MemberId::uuid);
        members
    }

    /// A reachability message from `from`, a member of this member's view, about another
    /// member of it (see [`ReachabilityMessage`]): a notice flags or unflags it here, with
    /// an event; a probe request runs a final check of this member's own
    /// ([`Output::Probe`]); a probe answer settles the checker's probe. A message about
    /// another view, or about this member itself, is dropped. Any member of the view may
    /// send a notice or a request, as any may suspect: a flag only informs, and a request
    /// costs at most one check per asker and member at a time.
    pub fn handle_reachability(
        &mut self,
        now: Instant,
        from: &MemberId,
        message: ReachabilityMessage,
    ) {
        let (view_id, member) = match &message {
            ReachabilityMessage::Notice {
                view_id, member, ..
            }
            | ReachabilityMessage::ProbeRequest { view_id, member }
            | ReachabilityMessage::ProbeAnswer {
                view_id, member, ..
            } => (*view_id, member.clone()),
        };
        if !self.is_member()
            || *from == self.me
            || !self.in_view(from)
            || view_id != self.view_id()
            || member == self.me
            || member == *from
            || !self.in_view(&member)
        {
            return;
        }
        match message {
            ReachabilityMessage::Notice { reachable, .. } => {
                if reachable {
                    // The checker heard from it: this member's own suspicion is stale.
                    if self.suspects.contains_key(&member.uuid()) {
                        self.clear(now, &member);
                    }
                } else {
                    // A suspicion too: a member that checks (or comes to) takes it over,
                    // and every receiver computes the same checker as the sender.
                    let by = self.suspected_by.entry(member.uuid()).or_default();
                    if !by.contains(from) {
                        by.push(from.clone());
                    }
                    self.note_suspects(vec![member.clone()], "its final check went unanswered");
                    self.run_checks(now);
                }
                self.set_flag(now, &member, reachable, from.uuid());
            }
            ReachabilityMessage::ProbeRequest { .. } => {
                if self.reachability.help(from.uuid(), member.uuid(), view_id) {
                    tracing::debug!(?member, asker = ?from, "probing for another member");
                    self.outputs.push_back(Output::Probe {
                        member,
                        asker: from.clone(),
                    });
                }
            }
            ReachabilityMessage::ProbeAnswer { reached, .. } => {
                let verdict =
                    self.reachability
                        .probe_answered(now, member.uuid(), from.uuid(), reached);
                match verdict {
                    ProbeVerdict::Ignored | ProbeVerdict::Pending => {}
                    ProbeVerdict::Reached => self.link_problem(now, &member, from),
                    ProbeVerdict::NoneReached => {
                        tracing::warn!(
                            ?member,
                            "no member asked could reach it either: removing it as crashed"
                        );
                        self.found_dead(now, &member);
                    }
                }
            }
        }
    }

    /// The outcome of a final check asked for with [`Output::Probe`], for `asker`. It takes
    /// the time as every input does; answering needs none.
    pub fn probe_result(
        &mut self,
        _now: Instant,
        asker: &MemberId,
        member: &MemberId,
        outcome: CheckOutcome,
    ) {
        let Some(view_id) = self.reachability.helped(asker.uuid(), member.uuid()) else {
            return;
        };
        self.stats.probes_for_others += 1;
        self.outputs.push_back(Output::Reachability {
            to: vec![asker.clone()],
            message: ReachabilityMessage::ProbeAnswer {
                view_id,
                member: member.clone(),
                reached: outcome == CheckOutcome::Alive,
            },
        });
    }

    /// `member` stayed unreachable for the removal timeout: asks up to
    /// [`INDIRECT_PROBES`] other members to probe it, the first ones after this member in
    /// view order among those not suspected. False if there is nobody to ask.
    fn ask_for_probes(&mut self, now: Instant, member: &MemberId) -> bool {
        let Some(view) = self.view.as_ref() else {
            return false;
        };
        let members = view.members();
        let me = members.iter().position(|m| *m == self.me).unwrap_or(0);
        let helpers: Vec<MemberId> = members
            .iter()
            .cycle()
            .skip(me + 1)
            .take(members.len())
            .filter(|m| {
                **m != self.me
                    && *m != member
                    && !self.suspects.contains_key(&m.uuid())
                    && !self.dead.contains(&m.uuid())
            })
            .take(INDIRECT_PROBES)
            .cloned()
            .collect();
        if helpers.is_empty() {
            return false;
        }
        tracing::warn!(
            ?member,
            asked = ?helpers,
            "unreachable for the removal timeout: asking others to probe it"
        );
        self.stats.indirect_probes += 1;
        // A probe takes one final check at the helper: a member timeout covers it and the
        // messages either way.
        let deadline = now + self.config.member_timeout;
        let asked = helpers.iter().map(MemberId::uuid).collect();
        self.reachability.start_probe(member, asked, deadline);
        let message = ReachabilityMessage::ProbeRequest {
            view_id: view.id(),
            member: member.clone(),
        };
        self.outputs.push_back(Output::Reachability {
            to: helpers,
            message,
        });
        true
    }

    /// Another member, `reached_by`, reached `member`, which this member cannot: the link
    /// between them failed, not the member. It stays, reachable for the others.
    fn link_problem(&mut self, now: Instant, member: &MemberId, reached_by: &MemberId) {
        self.stats.link_problems += 1;
        tracing::warn!(
            ?member,
            ?reached_by,
            "another member reached it: a link problem, not a crash; it stays"
        );
        self.event(MembershipEvent::LinkProblem {
            member: member.clone(),
            reached_by: reached_by.clone(),
        });
        self.tell_reachability(member, true);
        self.set_flag(now, member, true, self.me.uuid());
    }

    /// Asks others to probe the members found unreachable that have been silent for the
    /// removal timeout, as soon as that passed (removed at once if there is nobody to
    /// ask). Findings this member no longer checks are left to the member that does.
    fn probe_the_long_silent(&mut self, now: Instant) {
        let timed_out = self.reachability.timed_out(now);
        if timed_out.is_empty() {
            return;
        }
        if !self.is_member() || self.checker().as_ref() != Some(&self.me) {
            self.hand_over_findings();
            return;
        }
        for member in timed_out {
            if !self.in_view(&member) || self.dead.contains(&member.uuid()) {
                self.reachability.forget(&member);
            } else if !self.ask_for_probes(now, &member) {
                tracing::warn!(
                    ?member,
                    "unreachable for the removal timeout, and nobody to ask: removing it"
                );
                self.found_dead(now, &member);
            }
        }
    }

    /// Removes the members whose probe ran out of time with nobody reaching them.
    fn expire_probes(&mut self, now: Instant) {
        for member in self.reachability.expired_probes(now) {
            if self.is_member() && self.in_view(&member) {
                tracing::warn!(
                    ?member,
                    "no member asked reached it in time: removing it as crashed"
                );
                self.found_dead(now, &member);
            } else {
                self.reachability.forget(&member);
            }
        }
    }

    /// Flags `member` unreachable here (or unflags it), with an event if that changed.
    /// `by` is the member whose check found it (this member, or a notice's sender).
    fn set_flag(&mut self, now: Instant, member: &MemberId, reachable: bool, by: Uuid) {
        let changed = if reachable {
            self.reachability.unflag(member.uuid())
        } else {
            self.reachability.flag(now, member, by)
        };
        if changed {
            let member = member.clone();
            self.event(if reachable {
                MembershipEvent::Reachable { member }
            } else {
                MembershipEvent::Unreachable { member }
            });
        }
    }

    /// Tells the other members of the view (not `member` itself) that the checker found
    /// `member` unreachable, or reachable again.
    fn tell_reachability(&mut self, member: &MemberId, reachable: bool) {
        let Some(view) = self.view.as_ref() else {
            return;
        };
        let to: Vec<MemberId> = others(view, &self.me)
            .into_iter()
            .filter(|m| m != member)
            .collect();
        if to.is_empty() {
            return;
        }
        let message = ReachabilityMessage::Notice {
            view_id: view.id(),
            member: member.clone(),
            reachable,
        };
        self.outputs.push_back(Output::Reachability { to, message });
    }

    /// This member no longer checks (it left the view, or another member checks now): its
    /// findings go to the member that checks, which checks them for itself (their removal
    /// timeout starts over there).
    fn hand_over_findings(&mut self) {
        let found = self.reachability.stop_checking();
        let checker = self.checker().filter(|c| *c != self.me);
        if !self.is_member() || found.is_empty() {
            return;
        }
        if let Some(checker) = checker {
            tracing::info!(?checker, members = ?found, "handing unreachable members to the checker");
            let reason = format!(
                "unreachable from {}, which no longer checks",
                self.me.name()
            );
            self.send(
                vec![checker],
                GmsMessage::Suspect {
                    members: found,
                    reason,
                },
            );
        }
    }

    /// Checks again the members found unreachable whose recheck is due, while this member
    /// is the checker; one that stopped checking leaves them to the member that checks now.
    fn recheck_unreachable(&mut self, now: Instant) {
        let due = self.reachability.due(now);
        if due.is_empty() {
            return;
        }
        if !self.is_member() || self.checker().as_ref() != Some(&self.me) {
            self.hand_over_findings();
            return;
        }
        for member in due {
            let uuid = member.uuid();
            if self.in_view(&member)
                && !self.checking.contains_key(&uuid)
                && !self.dead.contains(&uuid)
            {
                self.start_check(now, member, 0);
            } else {
                self.reachability.forget(&member);
            }
        }
    }

    /// Ends this member's cluster, for a driver that found another cluster this one must
    /// yield to (ARCHITECTURE.md, "Rival clusters"): every other member is sent the
    /// coordinator's partition notice, which members act on at once, and this member
    /// stops; each reports [`MembershipEvent::ForcedDisconnect`] with `reason` (and, with
    /// auto-reconnect, joins the other cluster). Only the coordinator of the installed view
    /// holding its lease may do this; returns whether this member did.
    #[must_use = "false means nothing was done: this member does not coordinate now"]
    pub fn dissolve(&mut self, now: Instant, reason: String) -> bool {
        let Some(view) = self.view.clone() else {
            return false;
        };
        // Members trust a notice from the coordinator the view names, not from a
        // successor standing in for a dead one: that one waits for the next view.
        if !self.is_coordinator(now) || view.coordinator() != Some(&self.me) {
            return false;
        }
        self.send(
            others(&view, &self.me),
            GmsMessage::NetworkPartition {
                reason: reason.clone(),
            },
        );
        self.shut_down_for_partition(reason);
        true
    }

    /// Out of the cluster for `reason`; a member that was leaving anyway has left.
    fn shut_down_for_partition(&mut self, reason: String) {
        tracing::error!(member = ?self.me, %reason, "shutting down");
        let leaving = matches!(self.role, Role::Leaving { .. });
        self.role = Role::Gone;
        self.round = None;
        self.detector.stop();
        self.event(if leaving {
            MembershipEvent::Left
        } else {
            MembershipEvent::ForcedDisconnect { reason }
        });
    }

    // ---- every member ----

    /// Whether a message from `from` is taken at all: a join request or a view query from
    /// anyone; while joining, anything from the coordinator asked, and proposals and
    /// decisions naming this member from their proposer; otherwise only from members of the
    /// installed view or of a view being decided (an admitted joiner accepts before it is
    /// installed).
    fn hears_from(&self, from: &MemberId, message: &GmsMessage) -> bool {
        if matches!(
            message,
            GmsMessage::JoinRequest { .. } | GmsMessage::ViewQuery { .. }
        ) {
            return true;
        }
        if let Role::Joining { coordinator, .. } = &self.role {
            let names_me = |view: &View| view.contains(&self.me) && view.contains(from);
            return coordinator == from
                || match message {
                    GmsMessage::Propose { proposal, .. } => names_me(&proposal.view),
                    GmsMessage::Decide { decision } => names_me(&decision.proposal.view),
                    _ => false,
                };
        }
        self.is_known(from)
    }

    /// True if `member` is in the view, or in a view being decided.
    fn is_known(&self, member: &MemberId) -> bool {
        self.in_view(member)
            || self.prepared().is_some_and(|v| v.contains(member))
            || self.round.as_ref().is_some_and(|r| r.involves(member))
    }

    fn view_id(&self) -> ViewId {
        self.view.as_ref().map_or(ViewId(0), View::id)
    }

    fn in_view(&self, member: &MemberId) -> bool {
        self.view.as_ref().is_some_and(|v| v.contains(member))
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
        let round = self.round.as_ref().map(|r| {
            let phase = match r.phase {
                Phase::Collecting { .. } => "collecting",
                Phase::Proposing { .. } => "proposing",
            };
            (r.base.id(), r.ballot.round, phase)
        });
        f.debug_struct("Gms")
            .field("me", &self.me)
            .field("role", &self.role)
            .field("view", &self.view.as_ref().map(View::id))
            .field(
                "vote",
                &(self.vote.base(), self.vote.promised().map(|b| b.round)),
            )
            .field("round", &round)
            .field("batch_at", &self.batch_at.is_some())
            .field("outbid", &self.outbid_until.is_some())
            .field(
                "pending",
                &(
                    self.pending_joins.len(),
                    self.pending_leaves.len(),
                    self.pending_removals.len(),
                ),
            )
            .field("suspects", &self.suspects.len())
            .field("checking", &self.checking.len())
            .field("dead", &self.dead.len())
            .field(
                "lease",
                &(
                    self.coordinator_until(),
                    self.lease
                        .granted_to()
                        .map(|(uuid, until)| (uuid.as_u64_pair().0, until)),
                ),
            )
            .field(
                "catch_up",
                &self
                    .catch_up
                    .as_ref()
                    .map(|c| (c.answers.len(), c.refusals.len(), c.probe.is_some())),
            )
            .finish()
    }
}

/// The proposal of a round's own changes: the base view without its leavers and crashed
/// members, with its joiners at the end.
fn own_proposal(round: &Round) -> Proposal {
    let next_id = ViewId(round.base.id().0 + 1);
    let out: HashSet<Uuid> = round
        .leaving
        .iter()
        .chain(&round.crashed)
        .map(MemberId::uuid)
        .collect();
    let members = round
        .base
        .members()
        .iter()
        .filter(|m| !out.contains(&m.uuid()))
        .cloned()
        .chain(
            round
                .joiners
                .iter()
                .map(|j| j.clone().with_view_id(next_id)),
        );
    Proposal {
        view: View::new(next_id, members),
        left: round.leaving.clone(),
        crashed: round.crashed.clone(),
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

    #[test]
    fn gms_settings_that_cannot_work_are_named() {
        assert_eq!(GmsConfig::default().validate(), Ok(()));
        let zero = GmsConfig {
            prepare_timeout: Duration::ZERO,
            ..GmsConfig::default()
        };
        assert_eq!(
            zero.validate().expect_err("zero").setting,
            "prepare_timeout"
        );
        let lapsing = GmsConfig {
            lease_interval: Duration::from_secs(2),
            lease_duration: Duration::from_secs(1),
            ..GmsConfig::default()
        };
        assert_eq!(
            lapsing.validate().expect_err("lapses").setting,
            "lease_interval"
        );
    }

    fn member(port: u16) -> MemberId {
        let address = format!("127.0.0.1:{port}").parse().expect("literal");
        MemberId::new(format!("m{port}"), address, MemberKind::Member)
    }

    /// Answers every proposal `gms` sent to `voter` as `voter` would: it accepts.
    /// a founds a cluster and admits b: a's `Gms`, b's (which installed the view of two
    /// from a's decision), and that view.
    fn view_of_two(now: Instant) -> (MemberId, MemberId, Gms, Gms, View) {
        let (a, b) = (member(1), member(2));
        let mut coordinator = Gms::new(a.clone(), GmsConfig::default(), Arc::new(AllowAll));
        coordinator.found_cluster(now);
        admit(&mut coordinator, &b, now);
        let two = coordinator.view().cloned().expect("a view of two");
        let mut joined = Gms::new(b.clone(), GmsConfig::default(), Arc::new(AllowAll));
        joined.join(now, a.clone(), Credentials::default());
        let decision = Decision {
            base: ViewId(1),
            ballot: round_0(&a),
            proposal: Proposal {
                view: two.clone(),
                left: Vec::new(),
                crashed: Vec::new(),
            },
        };
        joined.handle_message(now, &a, GmsMessage::Decide { decision });
        assert!(joined.is_member());
        (a, b, coordinator, joined, two)
    }

    /// `gms`, founder of a cluster, admits `joiner` at `now`: its request, the batch
    /// timer, and the joiner's acceptance.
    fn admit(gms: &mut Gms, joiner: &MemberId, now: Instant) {
        gms.handle_message(
            now,
            joiner,
            GmsMessage::JoinRequest {
                member: joiner.clone(),
                credentials: Credentials::default(),
            },
        );
        gms.handle_timeout(now + Duration::from_secs(1));
        accept_as(gms, joiner, now);
    }

    fn accept_as(gms: &mut Gms, voter: &MemberId, at: Instant) {
        let proposals: Vec<(ViewId, Ballot)> = std::iter::from_fn(|| gms.poll_output())
            .filter_map(|output| match output {
                Output::Send {
                    to,
                    message: GmsMessage::Propose { base, ballot, .. },
                } if to.contains(voter) => Some((base, ballot)),
                _ => None,
            })
            .collect();
        assert!(!proposals.is_empty(), "a view was proposed to {voter:?}");
        for (base, ballot) in proposals {
            gms.handle_message(at, voter, GmsMessage::Accept { base, ballot });
        }
    }

    fn round_0(proposer: &MemberId) -> Ballot {
        Ballot {
            round: 0,
            proposer: proposer.uuid(),
        }
    }

    /// The driver lets a prepared view's new members speak because an output says so:
    /// once per view, before the proposal that brings their traffic, and not again.
    #[test]
    fn a_prepared_view_is_handed_out_once_before_its_proposal() {
        let now = Instant::now();
        let (a, b) = (member(1), member(2));
        let mut coordinator = Gms::new(a.clone(), GmsConfig::default(), Arc::new(AllowAll));
        coordinator.found_cluster(now);
        let founded: Vec<Output> = std::iter::from_fn(|| coordinator.poll_output()).collect();
        assert!(
            !founded.iter().any(|o| matches!(o, Output::Prepared(_))),
            "a founder prepares nothing: {founded:?}"
        );
        coordinator.handle_message(
            now,
            &b,
            GmsMessage::JoinRequest {
                member: b.clone(),
                credentials: Credentials::default(),
            },
        );
        coordinator.handle_timeout(now + Duration::from_secs(1));
        let outputs: Vec<Output> = std::iter::from_fn(|| coordinator.poll_output()).collect();
        let prepared: Vec<usize> = outputs
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o, Output::Prepared(v) if v.contains(&b)))
            .map(|(i, _)| i)
            .collect();
        let proposal = outputs
            .iter()
            .position(|o| {
                matches!(o, Output::Send { message: GmsMessage::Propose { .. }, to } if to.contains(&b))
            })
            .expect("a proposal to the joiner");
        assert_eq!(prepared.len(), 1, "{outputs:?}");
        assert!(prepared[0] < proposal, "{outputs:?}");
        // Another input while the same view is prepared hands it out no more.
        coordinator.handle_timeout(now + Duration::from_secs(1));
        let again: Vec<Output> = std::iter::from_fn(|| coordinator.poll_output()).collect();
        assert!(
            !again.iter().any(|o| matches!(o, Output::Prepared(_))),
            "{again:?}"
        );
    }

    #[test]
    fn a_non_member_may_only_ask_to_join_everything_else_is_dropped_and_counted() {
        let now = Instant::now();
        let mut gms = Gms::new(member(1), GmsConfig::default(), Arc::new(AllowAll));
        gms.found_cluster(now);
        while gms.poll_output().is_some() {}
        let stranger = member(2);
        let forged = View::new(ViewId(9), [stranger.clone()]);
        let proposal = Proposal {
            view: forged,
            left: Vec::new(),
            crashed: vec![gms.me().clone()],
        };
        let attempts = [
            GmsMessage::Decide {
                decision: Decision {
                    base: ViewId(1),
                    ballot: round_0(&stranger),
                    proposal: proposal.clone(),
                },
            },
            GmsMessage::Propose {
                base: ViewId(1),
                ballot: round_0(&stranger),
                proposal,
            },
            GmsMessage::LeaveRequest {
                member: stranger.clone(),
            },
            GmsMessage::Accept {
                base: ViewId(1),
                ballot: round_0(&stranger),
            },
        ];
        for message in attempts {
            gms.handle_message(now, &stranger, message);
        }
        assert_eq!(gms.stats().dropped_from_non_members, 4);
        assert_eq!(gms.view().map(View::id), Some(ViewId(1)));
        // The only answer: which view this member holds (in case the stranger is a member
        // removed without knowing), rate limited per address.
        let answers: Vec<Output> = std::iter::from_fn(|| gms.poll_output()).collect();
        assert!(answers.len() <= 2, "{answers:?}");
        assert!(answers.iter().all(|o| matches!(
            o,
            Output::Send {
                message: GmsMessage::Reject {
                    installed: ViewId(1),
                    promised: None,
                    ..
                },
                ..
            }
        )));

        // A join request is heard, and admits it.
        admit(&mut gms, &stranger, now);
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
            accept_as(gms, m, at);
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
        let (a, b, _, mut leaver, two) = view_of_two(now);
        // b asks to leave; its request goes to a, which leaves at the same moment and
        // installs the view without itself: b is alone, and the coordinator.
        let at = now + Duration::from_secs(2);
        leaver.leave(at);
        let alone = View::new(ViewId(two.id().0 + 1), [b.clone()]);
        let decision = Decision {
            base: two.id(),
            ballot: round_0(&a),
            proposal: Proposal {
                view: alone,
                left: vec![a.clone()],
                crashed: Vec::new(),
            },
        };
        leaver.handle_message(at, &a, GmsMessage::Decide { decision });
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
        // One stage, so that the failed check below removes at once.
        let config = GmsConfig {
            removal_timeout: Duration::ZERO,
            ..GmsConfig::default()
        };
        let mut gms = Gms::new(member(1), config, Arc::new(AllowAll));
        gms.found_cluster(now);
        let other = member(2);
        admit(&mut gms, &other, now);
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
        gms.check_result(at, &other, CheckOutcome::Alive, None);
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
        gms.check_result(
            at + Duration::from_secs(3),
            &other,
            CheckOutcome::NoAnswer,
            None,
        );
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

    /// Each of `voters` accepts, at `at`, every proposal among `outputs`; returns how many
    /// proposals there were.
    fn accept_every_proposal(
        gms: &mut Gms,
        outputs: &[Output],
        voters: &[&MemberId],
        at: Instant,
    ) -> usize {
        let proposals: Vec<(ViewId, Ballot)> = outputs
            .iter()
            .filter_map(|o| match o {
                Output::Send {
                    message: GmsMessage::Propose { base, ballot, .. },
                    ..
                } => Some((*base, *ballot)),
                _ => None,
            })
            .collect();
        for voter in voters {
            for (base, ballot) in &proposals {
                let (base, ballot) = (*base, *ballot);
                gms.handle_message(at, voter, GmsMessage::Accept { base, ballot });
            }
        }
        proposals.len()
    }

    /// m1 founds a cluster and admits m2 and m3: m1's `Gms` (the coordinator, which runs
    /// the final checks), with `config`, after its clock ran to the returned instant.
    fn view_of_three(now: Instant, config: GmsConfig) -> (Gms, MemberId, MemberId, Instant) {
        let mut gms = Gms::new(member(1), config, Arc::new(AllowAll));
        gms.found_cluster(now);
        let (b, c) = (member(2), member(3));
        admit(&mut gms, &b, now);
        gms.handle_message(
            now,
            &c,
            GmsMessage::JoinRequest {
                member: c.clone(),
                credentials: Credentials::default(),
            },
        );
        let at = now + Duration::from_secs(2);
        gms.handle_timeout(at);
        let outputs: Vec<Output> = std::iter::from_fn(|| gms.poll_output()).collect();
        accept_every_proposal(&mut gms, &outputs, &[&b, &c], at);
        assert_eq!(gms.view().map(View::len), Some(3), "{:?}", gms.view());
        // Timers run as a driver runs them for a while, so that the detector does not
        // take this member for paused.
        let settled = at + Duration::from_secs(1);
        let _ = run_timers(&mut gms, at, settled, &[&b, &c]);
        (gms, b, c, settled)
    }

    /// Runs `gms`'s timers every 50 ms from `from` to `until`, heartbeats from `alive`
    /// arriving at each, and returns the outputs.
    fn run_timers(
        gms: &mut Gms,
        from: Instant,
        until: Instant,
        alive: &[&MemberId],
    ) -> Vec<Output> {
        let mut clock = from;
        let mut outputs = Vec::new();
        while clock < until {
            clock += Duration::from_millis(50);
            for member in alive {
                gms.heard_from(member, clock);
            }
            gms.handle_timeout(clock);
            outputs.extend(std::iter::from_fn(|| gms.poll_output()));
        }
        outputs
    }

    fn checks_of(outputs: &[Output], of: &MemberId) -> usize {
        outputs
            .iter()
            .filter(|o| matches!(o, Output::Check { member } if member == of))
            .count()
    }

    #[test]
    fn a_member_whose_check_found_it_behind_does_not_check_for_the_view() {
        let now = Instant::now();
        let (coordinator, b, c, at) = view_of_three(now, GmsConfig::default());
        let a = coordinator.me.clone();
        let view = coordinator.view().cloned().expect("view");
        let mut gms = Gms::new(c.clone(), GmsConfig::default(), Arc::new(AllowAll));
        gms.join(now, a.clone(), Credentials::default());
        let decision = Decision {
            base: ViewId(view.id().0 - 1),
            ballot: round_0(&a),
            proposal: Proposal {
                view: view.clone(),
                left: Vec::new(),
                crashed: Vec::new(),
            },
        };
        gms.handle_message(at, &a, GmsMessage::Decide { decision });
        assert_eq!(gms.view_id(), view.id());
        let _ = run_timers(&mut gms, at, at + Duration::from_secs(1), &[&a, &b]);
        let at = at + Duration::from_secs(1);
        // c suspects the coordinator, then b, its checker, which left it unsettled: c
        // checks both.
        gms.suspect(at, &a, "slow".into());
        gms.suspect(at, &b, "slow".into());
        let outputs: Vec<Output> = std::iter::from_fn(|| gms.poll_output()).collect();
        assert_eq!((checks_of(&outputs, &a), checks_of(&outputs, &b)), (1, 1));
        // b answers, from the view before this one: alive, but its notices would name
        // another view. c goes on checking a, and keeps what it finds.
        gms.check_result(at, &b, CheckOutcome::Alive, Some(ViewId(view.id().0 - 1)));
        gms.check_result(at, &a, CheckOutcome::NoAnswer, None);
        let outputs = run_timers(&mut gms, at, at + Duration::from_secs(1), &[&b]);
        assert!(
            checks_of(&outputs, &a) >= 1,
            "a is checked again: {outputs:?}"
        );
        assert!(
            !outputs.iter().any(|o| matches!(o, Output::Send {
                to, message: GmsMessage::Suspect { .. }
            } if to.contains(&b))),
            "nothing is handed to a checker behind the view: {outputs:?}"
        );
    }

    #[test]
    fn an_unanswered_check_makes_a_member_unreachable_and_an_answer_reachable_again() {
        let now = Instant::now();
        let (mut gms, b, c, at) = view_of_three(now, GmsConfig::default());
        let view = gms.view().cloned().expect("view");
        gms.suspect(at, &c, "slow".into());
        let outputs: Vec<Output> = std::iter::from_fn(|| gms.poll_output()).collect();
        assert_eq!(checks_of(&outputs, &c), 1);
        gms.check_result(at, &c, CheckOutcome::NoAnswer, None);
        let outputs: Vec<Output> = std::iter::from_fn(|| gms.poll_output()).collect();
        let told: Vec<_> = outputs
            .iter()
            .filter_map(|o| match o {
                Output::Reachability { to, message } => Some((to.clone(), message.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            told,
            vec![(
                vec![b.clone()],
                ReachabilityMessage::Notice {
                    view_id: view.id(),
                    member: c.clone(),
                    reachable: false
                }
            )],
            "the others are told, not the member itself"
        );
        assert!(outputs.iter().any(|o| matches!(
            o,
            Output::Event(MembershipEvent::Unreachable { member }) if *member == c
        )));
        assert_eq!(gms.unreachable_members(), vec![c.clone()]);
        // Checked again every half member timeout, and still in the view.
        let later = at + Duration::from_secs(1);
        let outputs = run_timers(&mut gms, at, later, &[&b, &c]);
        assert_eq!(
            checks_of(&outputs, &c),
            1,
            "one check again, not one per tick"
        );
        assert_eq!(gms.view().map(View::id), Some(view.id()), "no view change");
        // It answers: reachable again, told to the others, no view change.
        gms.check_result(later, &c, CheckOutcome::Alive, None);
        let outputs: Vec<Output> = std::iter::from_fn(|| gms.poll_output()).collect();
        assert!(outputs.iter().any(|o| matches!(
            o,
            Output::Reachability {
                message: ReachabilityMessage::Notice { reachable: true, member, .. },
                ..
            } if *member == c
        )));
        assert!(outputs.iter().any(|o| matches!(
            o,
            Output::Event(MembershipEvent::Reachable { member }) if *member == c
        )));
        assert!(gms.unreachable_members().is_empty());
        let outputs = run_timers(&mut gms, later, later + Duration::from_secs(6), &[&b, &c]);
        assert_eq!(checks_of(&outputs, &c), 0, "no more checks");
        assert_eq!(gms.view().map(View::id), Some(view.id()));
        let stats = gms.stats();
        assert_eq!(
            (stats.members_unreachable, stats.members_reachable_again),
            (1, 1)
        );
    }

    /// What [`unreachable_for_long`] saw: when `c` was removed (if it was), the probe
    /// requests sent, and the link problems reported.
    struct LongSilence {
        removed_after: Option<Duration>,
        probes_asked: usize,
        link_problems: usize,
    }

    /// In a view of three, m3 (`c`) goes unanswered for twice the removal timeout while m2
    /// (`b`) answers every probe request with `reached` (or not at all, for `None`).
    fn unreachable_for_long(reached: Option<bool>) -> LongSilence {
        let now = Instant::now();
        let (mut gms, b, c, at) = view_of_three(now, GmsConfig::default());
        let removal = gms.config.removal_timeout;
        gms.suspect(at, &c, "slow".into());
        while gms.poll_output().is_some() {}
        gms.check_result(at, &c, CheckOutcome::NoAnswer, None);
        // Every check again fails, 100 ms after it was asked for.
        let mut clock = at;
        let mut seen = LongSilence {
            removed_after: None,
            probes_asked: 0,
            link_problems: 0,
        };
        while clock < at + removal * 2 && seen.removed_after.is_none() {
            clock += Duration::from_millis(50);
            gms.heard_from(&b, clock);
            gms.handle_timeout(clock);
            let outputs: Vec<Output> = std::iter::from_fn(|| gms.poll_output()).collect();
            for output in &outputs {
                match output {
                    Output::Check { member } if *member == c => {
                        let at = clock + Duration::from_millis(100);
                        gms.check_result(at, &c, CheckOutcome::NoAnswer, None);
                    }
                    Output::Reachability {
                        to,
                        message: ReachabilityMessage::ProbeRequest { view_id, member },
                    } => {
                        assert_eq!((to.as_slice(), member), (std::slice::from_ref(&b), &c));
                        seen.probes_asked += 1;
                        if let Some(reached) = reached {
                            let answer = ReachabilityMessage::ProbeAnswer {
                                view_id: *view_id,
                                member: c.clone(),
                                reached,
                            };
                            gms.handle_reachability(clock, &b, answer);
                        }
                    }
                    Output::Send {
                        to,
                        message: GmsMessage::Propose { base, ballot, .. },
                    } => {
                        let (base, ballot) = (*base, *ballot);
                        if to.contains(&b) {
                            gms.handle_message(clock, &b, GmsMessage::Accept { base, ballot });
                        }
                    }
                    Output::Event(MembershipEvent::ViewInstalled { crashed, .. })
                        if crashed.contains(&c) =>
                    {
                        seen.removed_after = Some(clock - at);
                    }
                    Output::Event(MembershipEvent::LinkProblem { member, reached_by })
                        if *member == c && *reached_by == b =>
                    {
                        seen.link_problems += 1;
                    }
                    _ => {}
                }
            }
            // The answers given above produce outputs of their own: looked at next round.
        }
        // The last round's answers, too.
        while let Some(output) = gms.poll_output() {
            if let Output::Event(MembershipEvent::LinkProblem { member, reached_by }) = output
                && member == c
                && reached_by == b
            {
                seen.link_problems += 1;
            }
        }
        if seen.removed_after.is_some() {
            assert!(
                gms.unreachable_members().is_empty(),
                "the flag went with it"
            );
        }
        seen
    }

    #[test]
    fn a_member_unreachable_for_the_removal_timeout_is_probed_by_another_then_removed() {
        let removal = GmsConfig::default().removal_timeout;
        let patience = GmsConfig::default().member_timeout;
        // The other member does not answer: removed once the probe's patience ran out.
        let silent = unreachable_for_long(None);
        let took = silent.removed_after.expect("removed");
        assert_eq!(silent.probes_asked, 1);
        assert!(
            took >= removal + patience && took <= removal + patience + Duration::from_secs(1),
            "removed {took:?} after it was found unreachable"
        );
        // It answers that it did not reach it either: removed at once.
        let failed = unreachable_for_long(Some(false));
        let took = failed.removed_after.expect("removed");
        assert!(
            took >= removal && took <= removal + Duration::from_secs(1),
            "removed {took:?} after it was found unreachable"
        );
    }

    #[test]
    fn a_member_another_member_reaches_is_a_link_problem_and_stays() {
        let removal = GmsConfig::default().removal_timeout;
        let reached = unreachable_for_long(Some(true));
        assert_eq!(reached.removed_after, None, "never removed");
        assert_eq!(reached.link_problems, reached.probes_asked);
        // Probed again once each removal timeout: twice within twice the removal timeout.
        assert!(
            (1..=2).contains(&reached.probes_asked),
            "{} probes in {:?}",
            reached.probes_asked,
            removal * 2
        );
    }

    #[test]
    fn a_probe_request_runs_one_check_for_the_asker_and_answers_it() {
        let now = Instant::now();
        let (mut gms, b, c, at) = view_of_three(now, GmsConfig::default());
        let view_id = gms.view_id();
        let request = ReachabilityMessage::ProbeRequest {
            view_id,
            member: c.clone(),
        };
        gms.handle_reachability(at, &b, request.clone());
        gms.handle_reachability(at, &b, request);
        let probes: Vec<Output> = std::iter::from_fn(|| gms.poll_output()).collect();
        assert!(
            matches!(probes.as_slice(), [Output::Probe { member, asker }] if *member == c && *asker == b),
            "one probe for two requests: {probes:?}"
        );
        gms.probe_result(at, &b, &c, CheckOutcome::Alive);
        let answers: Vec<Output> = std::iter::from_fn(|| gms.poll_output()).collect();
        let expected = ReachabilityMessage::ProbeAnswer {
            view_id,
            member: c.clone(),
            reached: true,
        };
        assert!(
            matches!(answers.as_slice(), [Output::Reachability { to, message }] if *to == vec![b.clone()] && *message == expected),
            "{answers:?}"
        );
        // A result nobody asked for is not sent anywhere.
        gms.probe_result(at, &b, &c, CheckOutcome::Alive);
        assert!(gms.poll_output().is_none());
    }

    #[test]
    fn a_member_that_stays_behind_is_brought_forward_by_one_more_view_change() {
        let start = Instant::now();
        let (mut gms, b, c, at) = view_of_three(start, GmsConfig::default());
        let three = gms.view().cloned().expect("a view of three");
        let patience = GmsConfig::default().prepare_timeout;
        let older = ViewId(three.id().0 - 1);
        // c says it holds the view before: a moment behind is no reason for a view change.
        gms.heard_view(at, &c, older);
        let outputs = run_timers(&mut gms, at, at + patience / 2, &[&b, &c]);
        assert_eq!(accept_every_proposal(&mut gms, &outputs, &[], at), 0);
        // Still behind after a whole catch-up patience: the same members, the next id.
        let later = at + patience + Duration::from_millis(100);
        gms.heard_view(later, &c, older);
        let outputs = run_timers(&mut gms, later, later + Duration::from_secs(1), &[&b, &c]);
        let proposed: Vec<&View> = outputs
            .iter()
            .filter_map(|o| match o {
                Output::Send {
                    message: GmsMessage::Propose { proposal, .. },
                    ..
                } => Some(&proposal.view),
                _ => None,
            })
            .collect();
        assert!(!proposed.is_empty(), "no view change for a member behind");
        assert!(
            proposed
                .iter()
                .all(|v| v.id() == ViewId(three.id().0 + 1) && v.members() == three.members()),
            "{proposed:?}"
        );
        let done = later + Duration::from_secs(1);
        accept_every_proposal(&mut gms, &outputs, &[&b, &c], done);
        assert_eq!(gms.view().map(View::id), Some(ViewId(three.id().0 + 1)));
        assert_eq!(gms.stats().refreshes, 1);
        // Behind again at once (it can send but not hear): no second one within the
        // refresh interval.
        gms.heard_view(done, &c, older);
        let again = done + patience + Duration::from_millis(100);
        gms.heard_view(again, &c, older);
        let outputs = run_timers(&mut gms, again, again + Duration::from_secs(1), &[&b, &c]);
        assert_eq!(accept_every_proposal(&mut gms, &outputs, &[], again), 0);
        assert_eq!(gms.stats().refreshes, 1);
    }

    #[test]
    fn the_next_in_line_coordinates_when_the_coordinator_is_behind() {
        let now = Instant::now();
        let (a, _b, _coordinator, mut b_gms, two) = view_of_two(now);
        let joiner = member(3);
        let ask = |gms: &mut Gms, at: Instant| {
            gms.handle_message(
                at,
                &joiner,
                GmsMessage::JoinRequest {
                    member: joiner.clone(),
                    credentials: Credentials::default(),
                },
            );
            gms.handle_timeout(at + Duration::from_secs(1));
            std::iter::from_fn(|| gms.poll_output()).collect::<Vec<Output>>()
        };
        // The coordinator holds the view: the joiner is sent to it.
        b_gms.heard_view(now, &a, two.id());
        let outputs = ask(&mut b_gms, now);
        assert!(
            outputs.iter().any(|o| matches!(o, Output::Send {
                message: GmsMessage::NotCoordinator { coordinator }, ..
            } if *coordinator == a)),
            "{outputs:?}"
        );
        // It says it holds an older view: it cannot coordinate this one, so b does, with
        // phase 1 of a round of its own.
        b_gms.heard_view(now, &a, ViewId(1));
        let outputs = ask(&mut b_gms, now + Duration::from_millis(10));
        assert!(
            outputs.iter().any(|o| matches!(o, Output::Send {
                to, message: GmsMessage::Collect { base, .. }
            } if to.contains(&a) && *base == two.id())),
            "{outputs:?}"
        );
    }

    #[test]
    fn a_view_change_does_not_wait_for_a_member_found_unreachable() {
        let now = Instant::now();
        let (mut gms, b, c, at) = view_of_three(now, GmsConfig::default());
        gms.suspect(at, &c, "slow".into());
        while gms.poll_output().is_some() {}
        gms.check_result(at, &c, CheckOutcome::NoAnswer, None);
        while gms.poll_output().is_some() {}
        let d = member(4);
        gms.handle_message(
            at,
            &d,
            GmsMessage::JoinRequest {
                member: d.clone(),
                credentials: Credentials::default(),
            },
        );
        // The batch interval passes while a check of the unreachable member runs: the
        // round starts all the same.
        let start = at + Duration::from_millis(600);
        let outputs = run_timers(&mut gms, at, start, &[&b]);
        assert_eq!(checks_of(&outputs, &c), 1, "checked again meanwhile");
        let proposed = accept_every_proposal(&mut gms, &outputs, &[&b, &d], start);
        assert!(proposed > 0, "the join was proposed");
        let view = gms.view().cloned().expect("view");
        assert!(
            view.contains(&d) && view.contains(&c),
            "decided at once, the unreachable member still in: {view}"
        );
    }

    #[test]
    fn a_refusal_removes_an_unreachable_member_at_once() {
        let now = Instant::now();
        let (mut gms, b, c, at) = view_of_three(now, GmsConfig::default());
        gms.suspect(at, &c, "slow".into());
        while gms.poll_output().is_some() {}
        gms.check_result(at, &c, CheckOutcome::NoAnswer, None);
        let outputs = run_timers(&mut gms, at, at + Duration::from_millis(600), &[&b]);
        assert_eq!(checks_of(&outputs, &c), 1);
        gms.check_result(
            at + Duration::from_millis(600),
            &c,
            CheckOutcome::Refused,
            None,
        );
        gms.handle_timeout(at + Duration::from_millis(650));
        let proposed = std::iter::from_fn(|| gms.poll_output()).any(|o| {
            matches!(
                o,
                Output::Send { message: GmsMessage::Propose { proposal, .. }, .. }
                    if proposal.crashed.contains(&c)
            )
        });
        assert!(proposed, "a view without it is proposed at once");
    }

    #[test]
    fn a_reachability_notice_is_taken_only_from_a_member_about_a_member_of_this_view() {
        let now = Instant::now();
        let (mut gms, b, c, at) = view_of_three(now, GmsConfig::default());
        let (me, stranger, view_id) = (member(1), member(9), gms.view_id());
        let notice =
            |member: &MemberId, view_id: ViewId, reachable: bool| ReachabilityMessage::Notice {
                view_id,
                member: member.clone(),
                reachable,
            };
        let events = |gms: &mut Gms| -> Vec<MembershipEvent> {
            std::iter::from_fn(|| gms.poll_output())
                .filter_map(|o| match o {
                    Output::Event(
                        e @ (MembershipEvent::Unreachable { .. }
                        | MembershipEvent::Reachable { .. }),
                    ) => Some(e),
                    _ => None,
                })
                .collect()
        };
        // From a stranger, about another view, about this member or a stranger: dropped.
        gms.handle_reachability(at, &stranger, notice(&c, view_id, false));
        gms.handle_reachability(at, &b, notice(&c, ViewId(1), false));
        gms.handle_reachability(at, &b, notice(&me, view_id, false));
        gms.handle_reachability(at, &b, notice(&stranger, view_id, false));
        assert_eq!(events(&mut gms), vec![]);
        assert!(gms.unreachable_members().is_empty());
        // From a member of the view about another member of it: flagged once...
        gms.handle_reachability(at, &b, notice(&c, view_id, false));
        gms.handle_reachability(at, &b, notice(&c, view_id, false));
        assert_eq!(
            events(&mut gms),
            vec![MembershipEvent::Unreachable { member: c.clone() }]
        );
        assert_eq!(gms.unreachable_members(), vec![c.clone()]);
        // ...and unflagged once.
        gms.handle_reachability(at, &b, notice(&c, view_id, true));
        gms.handle_reachability(at, &b, notice(&c, view_id, true));
        assert_eq!(
            events(&mut gms),
            vec![MembershipEvent::Reachable { member: c.clone() }]
        );
        assert!(gms.unreachable_members().is_empty());
    }

    #[test]
    fn a_suspect_that_answers_it_is_out_is_removed_and_counted_apart() {
        let now = Instant::now();
        let mut gms = Gms::new(member(1), GmsConfig::default(), Arc::new(AllowAll));
        assert_eq!(gms.standing(), Standing::Joining, "not started");
        gms.found_cluster(now);
        assert_eq!(gms.standing(), Standing::Member);
        let other = member(2);
        admit(&mut gms, &other, now);
        while gms.poll_output().is_some() {}

        let at = now + Duration::from_secs(1);
        gms.suspect(at, &other, "the application finds it sick".into());
        let checked = std::iter::from_fn(|| gms.poll_output())
            .any(|o| matches!(o, Output::Check { member } if member == other));
        assert!(checked, "the coordinator checks the suspect");
        gms.check_result(at, &other, CheckOutcome::Out, None);
        gms.handle_timeout(at + Duration::from_millis(200));
        let view = gms.view().expect("view");
        assert!(!view.contains(&other), "{view}");
        let stats = gms.stats();
        assert_eq!((stats.final_checks, stats.final_checks_out), (1, 1));
        assert_eq!((stats.final_checks_failed, stats.members_removed), (0, 1));
    }

    #[test]
    fn the_coordinator_believes_only_while_a_majority_grants_its_lease() {
        let now = Instant::now();
        let (b, c) = (member(2), member(3));
        let mut gms = Gms::new(member(1), GmsConfig::default(), Arc::new(AllowAll));
        gms.found_cluster(now);
        // Alone, its own grant is a majority of its view.
        assert!(gms.is_coordinator(now));
        for m in [&b, &c] {
            gms.handle_message(
                now,
                m,
                GmsMessage::JoinRequest {
                    member: m.clone(),
                    credentials: Credentials::default(),
                },
            );
        }
        let at = now + Duration::from_secs(1);
        gms.handle_timeout(at);
        let outputs: Vec<Output> = std::iter::from_fn(|| gms.poll_output()).collect();
        accept_every_proposal(&mut gms, &outputs, &[&b, &c], at);
        let view = gms.view().cloned().expect("a view");
        assert_eq!(view.len(), 3, "{view}");
        // A new view: no lease for it until grants come back (its own weighs 15 of 35).
        assert!(!gms.is_coordinator(at));
        let requests: Vec<(Vec<MemberId>, ViewId, u64)> = std::iter::from_fn(|| gms.poll_output())
            .filter_map(|output| match output {
                Output::Lease {
                    to,
                    message: LeaseMessage::Request { view_id, seq },
                } => Some((to, view_id, seq)),
                _ => None,
            })
            .collect();
        let [(to, view_id, seq)] = &requests[..] else {
            panic!("one lease request: {requests:?}");
        };
        assert!(to.contains(&b) && to.contains(&c) && to.len() == 2);
        assert_eq!(*view_id, view.id());
        let (view_id, seq) = (*view_id, *seq);
        // A grant for another request, or from a stranger, counts for nothing.
        let later = at + Duration::from_millis(5);
        gms.handle_lease(later, &b, LeaseMessage::Grant { view_id, seq: 0 });
        gms.handle_lease(later, &member(9), LeaseMessage::Grant { view_id, seq });
        assert!(!gms.is_coordinator(later));
        gms.handle_lease(later, &b, LeaseMessage::Grant { view_id, seq });
        assert!(gms.is_coordinator(later));
        // The lease runs from the request, not from the grant, and lapses unrenewed.
        let duration = GmsConfig::default().lease_duration;
        assert!(gms.is_coordinator(at + duration - Duration::from_millis(1)));
        assert!(!gms.is_coordinator(at + duration));
        // It granted itself: another member asking is not answered while that runs.
        while gms.poll_output().is_some() {}
        gms.handle_lease(later, &b, LeaseMessage::Request { view_id, seq: 1 });
        assert!(gms.poll_output().is_none());
        // Renewal goes out every lease interval, before the lease ends.
        let interval = GmsConfig::default().lease_interval;
        assert_eq!(gms.poll_timeout().map(|t| t <= at + interval), Some(true));
    }

    #[test]
    fn a_member_grants_one_asker_at_a_time_and_only_for_its_own_view() {
        let now = Instant::now();
        let (a, _, _, mut grantor, two) = view_of_two(now);
        while grantor.poll_output().is_some() {}
        let grants = |gms: &mut Gms| -> Vec<(Vec<MemberId>, u64)> {
            std::iter::from_fn(|| gms.poll_output())
                .filter_map(|output| match output {
                    Output::Lease {
                        to,
                        message: LeaseMessage::Grant { seq, .. },
                    } => Some((to, seq)),
                    _ => None,
                })
                .collect()
        };
        let t = now + Duration::from_secs(2);
        let request = |seq| LeaseMessage::Request {
            view_id: two.id(),
            seq,
        };
        // Another view id is refused, and so is a stranger.
        let stale = LeaseMessage::Request {
            view_id: ViewId(1),
            seq: 1,
        };
        grantor.handle_lease(t, &a, stale);
        grantor.handle_lease(t, &member(9), request(1));
        assert!(grants(&mut grantor).is_empty());
        grantor.handle_lease(t, &a, request(2));
        assert_eq!(grants(&mut grantor), vec![(vec![a.clone()], 2)]);
        // Renewed for the same asker.
        let duration = GmsConfig::default().lease_duration;
        grantor.handle_lease(t + duration / 2, &a, request(3));
        assert_eq!(grants(&mut grantor), vec![(vec![a.clone()], 3)]);
    }

    #[test]
    fn join_requests_from_one_address_outside_the_cluster_are_rate_limited() {
        let now = Instant::now();
        let mut gms = Gms::new(member(1), GmsConfig::default(), Arc::new(AllowAll));
        gms.found_cluster(now);
        while gms.poll_output().is_some() {}
        let per_second = GmsConfig::default()
            .max_join_requests_per_second_per_address
            .get();
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

    /// A coordinator that found a rival cluster ranking above its own dissolves its
    /// cluster: every member is told and stops with the reason; nobody else can.
    #[test]
    fn only_the_coordinator_holding_its_lease_dissolves_the_cluster_and_every_member_stops() {
        let now = Instant::now();
        let (a, b, mut coordinator, mut joined, two) = view_of_two(now);
        let reason = || "another cluster formed from the same locators".to_owned();
        assert!(!joined.dissolve(now, reason()), "b does not coordinate");
        assert!(joined.is_member());
        // a's own grant outweighs b's (the lead member): it holds the lease at once, and
        // only until the lease runs out unrenewed.
        while coordinator.poll_output().is_some() {}
        let lapsed = now + GmsConfig::default().lease_duration * 2;
        assert!(
            !coordinator.dissolve(lapsed, reason()),
            "without its lease a coordinator may be outdated"
        );
        assert!(coordinator.is_member());
        assert!(coordinator.is_coordinator(now));

        assert!(coordinator.dissolve(now, reason()));
        assert!(!coordinator.is_member());
        let mut notice = None;
        let mut events = Vec::new();
        while let Some(output) = coordinator.poll_output() {
            match output {
                Output::Send { to, message } if to == vec![b.clone()] => notice = Some(message),
                Output::Event(event) => events.push(event),
                _ => {}
            }
        }
        assert!(events.contains(&MembershipEvent::ForcedDisconnect { reason: reason() }));
        let notice = notice.expect("b is told");
        assert!(matches!(&notice, GmsMessage::NetworkPartition { reason: r } if *r == reason()));
        while joined.poll_output().is_some() {}
        joined.handle_message(now, &a, notice);
        assert!(!joined.is_member(), "b acts on its coordinator's notice");
        let told: Vec<MembershipEvent> = std::iter::from_fn(|| joined.poll_output())
            .filter_map(|output| match output {
                Output::Event(event) => Some(event),
                _ => None,
            })
            .collect();
        assert!(
            told.contains(&MembershipEvent::ForcedDisconnect { reason: reason() }),
            "{told:?} in {two}"
        );
    }
}
