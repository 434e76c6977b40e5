//! The membership protocol's messages. They travel on the Control priority under one stable
//! tag; the variant order of [`GmsMessage`] and [`JoinRejection`] is part of the wire format
//! (postcard encodes the variant index): append, never reorder.
//!
//! Membership protocol 2 (ballots and quorums, see [`Ballot`]) retired the three messages of
//! the first protocol's view change (`PrepareView`, `PrepareAck`, `InstallView`): their
//! indices stay reserved, and a member of protocol 2 drops them, counted, when it receives
//! one. A cluster does not mix the two protocols.
//!
//! Beside them travel a heartbeat datagram ([`Heartbeat`], tag `0x0102`, carrying the
//! sender's view id) and three one-shot queries, each a fresh connection of its own:
//! discovery ([`FindCoordinator`], `0x0101`) and two final checks. [`ViewCheck`] (tag `0x0104`) is the one a
//! checker asks first: it names the checker and its view id, and the answer gives the
//! answerer's view id and [`Standing`], so that either side learns of a newer view from the
//! other, and a suspect that is out says so. [`FinalCheck`] (tag `0x0103`, unchanged) is
//! the fallback for a build that answers `ViewCheck` with "not served":
//!
//! ```text
//! checker ─ViewCheck{uuid, checker, view_id}─► suspect: heard_view(checker, view_id)
//!         ◄─ViewCheckAnswer{uuid, view_id, standing}─┘
//!   Member ─► alive, heard_view(suspect, view_id)   Joining ─► alive   Out ─► removed
//!   not served ─► FinalCheck{uuid} ─► its uuid (a member or joiner) ─► alive
//! ```
//!
//! The coordinator lease ([`LeaseMessage`], `0x0105`) and the reachability
//! messages ([`ReachabilityMessage`], `0x0106`) travel under tags of their own, so that
//! members of older builds of protocol 2 drop them without a warning per message.

use cohort_transport::{MemberId, Message, ProtocolVersion, Query, Tag, View, ViewId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Credentials;

/// A membership protocol message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum GmsMessage {
    /// A joiner asks the coordinator to admit it.
    JoinRequest {
        /// The joiner.
        member: MemberId,
        /// Its credentials, for the coordinator's authenticator.
        credentials: Credentials,
    },
    /// The coordinator refuses a joiner.
    JoinRejected {
        /// Why.
        reason: JoinRejection,
    },
    /// A member asks the coordinator to remove it gracefully.
    LeaveRequest {
        /// The leaving member.
        member: MemberId,
    },
    /// Retired (protocol 1): the coordinator proposed the next view.
    PrepareView {
        /// The proposed view.
        view: View,
    },
    /// Retired (protocol 1): a member recorded the proposed view.
    PrepareAck {
        /// The proposed view's id.
        view_id: ViewId,
    },
    /// Retired (protocol 1): the coordinator installed the view.
    InstallView {
        /// The view to install.
        view: View,
        /// Members of the previous view that left gracefully.
        left: Vec<MemberId>,
        /// Members of the previous view that were removed as crashed.
        crashed: Vec<MemberId>,
    },
    /// The recipient of a join request is not the coordinator; ask this member instead.
    NotCoordinator {
        /// The coordinator of the answering member's view.
        coordinator: MemberId,
    },
    /// To the coordinator and to the member that checks (the successor, when the
    /// coordinator is among the suspects): these members look dead to the sender. The
    /// checker runs a final check on each.
    Suspect {
        /// The suspected members.
        members: Vec<MemberId>,
        /// Why, for people.
        reason: String,
    },
    /// From the checker to the members that reported the suspicion: a final check found
    /// this suspect alive.
    Cleared {
        /// The member that answered.
        member: MemberId,
    },
    /// From the coordinator to the members on its side of a network partition that lost
    /// quorum: shut down.
    NetworkPartition {
        /// Why, for people: the weights lost and held.
        reason: String,
    },
    /// Phase 1a, from a proposer that is not the base view's coordinator on its first try
    /// (a successor, or a coordinator trying again): promise `ballot` for the change from
    /// view `base`, and say what you accepted for it.
    Collect {
        /// The installed view the change starts from.
        base: ViewId,
        /// The proposer's ballot.
        ballot: Ballot,
    },
    /// Phase 1b: the sender promised `ballot` (it takes nothing lower for `base` from now
    /// on) and reports the proposal it accepted for `base`, if any.
    Promise {
        /// The base view.
        base: ViewId,
        /// The ballot promised.
        ballot: Ballot,
        /// The highest-ballot proposal the sender accepted for `base`.
        accepted: Option<(Ballot, Proposal)>,
    },
    /// Phase 2a: accept this proposal for the change from view `base`. Sent to the members
    /// of the base view (they vote) and to the joiners in the proposal.
    Propose {
        /// The base view.
        base: ViewId,
        /// The proposer's ballot.
        ballot: Ballot,
        /// The next view.
        proposal: Proposal,
    },
    /// Phase 2b: the sender accepted the proposal of `ballot` for `base`.
    Accept {
        /// The base view.
        base: ViewId,
        /// The ballot accepted.
        ballot: Ballot,
    },
    /// A weighted majority of the base view accepted this proposal: install it. From its
    /// proposer to the members of the new view and to the members it removes.
    Decide {
        /// What was decided.
        decision: Decision,
    },
    /// A `Collect` or `Propose` the sender refused, and why: it promised a higher ballot,
    /// or it has installed a newer view (then the proposer is behind and catches up).
    Reject {
        /// The base view of the refused message.
        base: ViewId,
        /// The refused ballot.
        ballot: Ballot,
        /// The ballot the sender promised for `base`, if higher.
        promised: Option<Ballot>,
        /// The sender's installed view.
        installed: ViewId,
    },
    /// A member that heard of a newer view than its own asks for it (catch-up). Taken
    /// from anyone: a member removed while cut off asks the members of its old view.
    ViewQuery {
        /// The asker's installed view.
        have: ViewId,
    },
    /// The answer to [`GmsMessage::ViewQuery`]: the decision that made the answerer's
    /// installed view. The asker installs the newest answer once members holding a
    /// weighted majority of its own view have answered with newer views.
    CurrentView {
        /// The answerer's last decision.
        decision: Decision,
    },
}

/// Orders competing proposals for the change from one base view: by `round`, then by the
/// proposer's uuid. Round 0 belongs to the base view's coordinator, which may propose in it
/// without collecting promises first (nothing lower exists); every other proposal starts
/// with a [`GmsMessage::Collect`] for a higher round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// The attempt: 0 for the base coordinator's first, higher for every later one.
    pub round: u32,
    /// Who proposes.
    pub proposer: Uuid,
}

/// A proposed next view, with who left it gracefully and who was removed as crashed
/// (both relative to the base view).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The next view (its id is the base view's plus one).
    pub view: View,
    /// Members of the base view that left gracefully.
    pub left: Vec<MemberId>,
    /// Members of the base view removed as crashed.
    pub crashed: Vec<MemberId>,
}

/// A proposal that a weighted majority of its base view accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The view the change started from (0 for a cluster's founding view).
    pub base: ViewId,
    /// The ballot under which it was accepted.
    pub ballot: Ballot,
    /// The view it installs.
    pub proposal: Proposal,
}

impl Message for GmsMessage {
    const TAG: Tag = Tag(0x0100);
}

/// The coordinator lease (see the lease rule in `gms/lease.rs`): a member that coordinates
/// asks the members of its installed view for a lease every `GmsConfig::lease_interval`,
/// and believes it coordinates only while grants from a weighted majority of that view
/// cover it. Sent as a datagram, one per recipient (builds before the knocks sent it on
/// the Control priority; the dispatcher hands either to the same subscription, so the two
/// interoperate), and asked again a quarter interval later when a round was lost.
///
/// Its own type under its own tag, not variants appended to [`GmsMessage`]: an older build
/// of protocol 2 subscribes to no such tag, so its dispatcher drops these messages and
/// counts them (`DispatchStats::unknown_tags`, with a warning only at the 1st, 2nd, 4th,
/// 8th... drop), where a [`GmsMessage`] it could not decode would cost a warning each. An
/// older member never grants, so while older builds hold a weighted majority of the view
/// no member believes it coordinates; the protocol itself does not depend on leases.
///
/// The variant order is part of the wire format (postcard encodes the variant index):
/// append, never reorder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseMessage {
    /// From a member that coordinates view `view_id`: grant me a lease. `seq` numbers the
    /// asker's requests, so that it knows which of its send times a grant answers.
    Request {
        /// The asker's installed view.
        view_id: ViewId,
        /// The asker's request number.
        seq: u64,
    },
    /// The answer to [`LeaseMessage::Request`]: the sender has granted the asker a lease
    /// for the lease duration from when it received the request, and will grant no other
    /// member one before that ends.
    Grant {
        /// The view the request named (the grantor's installed view).
        view_id: ViewId,
        /// The request granted.
        seq: u64,
    },
}

impl Message for LeaseMessage {
    // 0x0104 is reserved for another membership message.
    const TAG: Tag = Tag(0x0105);
}

/// The two stages of failure (`gms/reachability.rs`): what the member that runs final
/// checks tells the others about a member whose check went unanswered, and the indirect
/// probes it asks of a few of them before it removes one for silence.
///
/// ```text
/// checker ─Notice{member, reachable: false}─► the view   (flagged: unreachable)
///   … removal timeout …
/// checker ─ProbeRequest{member}─► up to three members ─ their own final check ─┐
///         ◄─ProbeAnswer{member, reached}─────────────────────────────────────────┘
///   reached by any ─► a link problem: it stays, Notice{reachable: true}
///   reached by none within a member timeout ─► removed
/// ```
///
/// Every variant names the sender's installed view; one about another view is dropped.
/// Its own type under its own tag, for the reason [`LeaseMessage`] has one: an older build
/// drops it, counted, and simply never shows the flag nor helps with a probe. The variant
/// order is part of the wire format: append, never reorder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReachabilityMessage {
    /// From the checker to the other members of its view: the final check of `member`
    /// went unanswered (`reachable: false`), or it answered again, or another member
    /// reached it (`reachable: true`). Each receiver flags or unflags it
    /// ([`Gms::unreachable_members`](crate::Gms::unreachable_members)) with an event; the
    /// view does not change.
    Notice {
        /// The sender's installed view.
        view_id: ViewId,
        /// The member the notice is about.
        member: MemberId,
        /// False: unreachable from the checker. True: reachable again.
        reachable: bool,
    },
    /// From the checker, once `member` stayed unreachable for the removal timeout: run a
    /// final check of your own on it and say whether it answered.
    ProbeRequest {
        /// The sender's installed view.
        view_id: ViewId,
        /// The member to probe.
        member: MemberId,
    },
    /// The answer to [`ReachabilityMessage::ProbeRequest`].
    ProbeAnswer {
        /// The view the request named.
        view_id: ViewId,
        /// The member probed.
        member: MemberId,
        /// True if it answered this member's check as a member of the cluster.
        reached: bool,
    },
}

impl Message for ReachabilityMessage {
    const TAG: Tag = Tag(0x0106);
}

/// A heartbeat, sent as a datagram to the members watching the sender.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The sender's installed view.
    pub view_id: ViewId,
}

impl Message for Heartbeat {
    const TAG: Tag = Tag(0x0102);
}

/// A final check: asked of a suspect over a fresh connection of its own (a query), so it
/// does not depend on the state of the suspect's existing connection. Answered with the
/// answerer's uuid: a restarted process at the same address is not the suspect.
///
/// Asked only of a suspect that does not serve [`ViewCheck`] (an older build). A process
/// answers with its uuid only while it is a member or joining; once out it answers with
/// the nil uuid, which names no member, so no checker takes it for alive.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinalCheck {
    /// The member checked.
    pub uuid: uuid::Uuid,
}

impl Message for FinalCheck {
    const TAG: Tag = Tag(0x0103);
}

impl Query for FinalCheck {
    type Answer = uuid::Uuid;
}

/// A final check that says who asks and which view it holds (see the module docs), asked
/// of a suspect over a fresh connection of its own like [`FinalCheck`]. The suspect hears
/// of the checker's view from it; its answer, [`ViewCheckAnswer`], gives its own.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ViewCheck {
    /// The member checked.
    pub uuid: Uuid,
    /// The member that checks.
    pub checker: MemberId,
    /// The checker's installed view.
    pub view_id: ViewId,
}

impl Message for ViewCheck {
    const TAG: Tag = Tag(0x0104);
}

impl Query for ViewCheck {
    type Answer = ViewCheckAnswer;
}

/// The answer to [`ViewCheck`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewCheckAnswer {
    /// Whom the answer is about: the member checked, if the answering process is or was
    /// that member (a process that reconnected answers for its former identities), and
    /// otherwise the answerer's own identity, which tells the checker that another
    /// process holds the suspect's address now.
    pub uuid: Uuid,
    /// The view the answering process installed last (0 before it had one).
    pub view_id: ViewId,
    /// Where that member stands.
    pub standing: Standing,
}

/// Where a member stands in its cluster, as it answers a [`ViewCheck`]. The variant order
/// is part of the wire format: append, never reorder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Standing {
    /// In its installed view, as a member or while it leaves.
    Member,
    /// Not admitted yet: starting up or joining.
    Joining,
    /// Out for good: it left, was removed, was forced out or shut down, or was never
    /// admitted.
    Out,
}

/// Discovery: a process starting up asks a locator (or any member) who coordinates the
/// cluster. Sent as a one-shot query, so the asker need not be a member nor know who
/// answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FindCoordinator {
    /// Who asks (for the answerer's logs).
    pub asker: MemberId,
}

impl Message for FindCoordinator {
    const TAG: Tag = Tag(0x0101);
}

impl Query for FindCoordinator {
    type Answer = DiscoveryAnswer;
}

/// The answer to [`FindCoordinator`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DiscoveryAnswer {
    /// Who answered.
    pub responder: MemberId,
    /// The answerer's installed view (its coordinator is the one to join through); `None`
    /// while the answerer is itself still starting.
    pub view: Option<View>,
}

/// Why a joiner was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum JoinRejection {
    /// The authenticator refused the credentials.
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// A newer version has joined the cluster; older members may no longer join.
    #[error("version {joining} may not join: the cluster has members of version {cluster}")]
    VersionRefused {
        /// The joiner's version.
        joining: ProtocolVersion,
        /// The newest version in the cluster.
        cluster: ProtocolVersion,
    },
    /// Another member of the view already uses this name.
    #[error("the name {0:?} is already in use in the cluster")]
    NameInUse(String),
}
