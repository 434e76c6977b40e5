//! The membership protocol's messages. They travel on the Control priority under one stable
//! tag; the variant order of [`GmsMessage`] and [`JoinRejection`] is part of the wire format
//! (postcard encodes the variant index): append, never reorder.

use cohort_transport::{MemberId, Message, ProtocolVersion, Query, Tag, View, ViewId};
use serde::{Deserialize, Serialize};

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
    /// Phase one: the coordinator proposes the next view.
    PrepareView {
        /// The proposed view.
        view: View,
    },
    /// A member has recorded the proposed view.
    PrepareAck {
        /// The proposed view's id.
        view_id: ViewId,
    },
    /// Phase two: the coordinator installs the view.
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
}

impl Message for GmsMessage {
    const TAG: Tag = Tag(0x0100);
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
