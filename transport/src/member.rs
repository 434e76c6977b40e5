//! Member identity: who a member is, for as long as its process lives.
//!
//! A [`MemberId`] is created once when a member starts, with a fresh random uuid, so a
//! restarted process is always a new member and no per-peer state (sequence numbers,
//! queues) can leak from its previous life into its new one. Equality and hashing use the
//! uuid alone; `Display` shows the logical name people read in logs and views.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::settings::InvalidConfig;
use crate::view::ViewId;

/// The wire protocol a member speaks.
///
/// Version 1 is the legacy UDP protocol; version 2 is QUIC (ALPN `cohort/2`). The bridge
/// used during a rolling upgrade routes each recipient by this number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProtocolVersion(pub u16);

impl ProtocolVersion {
    /// The legacy UDP protocol.
    pub const LEGACY: ProtocolVersion = ProtocolVersion(1);
    /// The QUIC protocol.
    pub const QUIC: ProtocolVersion = ProtocolVersion(2);
    /// The version this build speaks natively.
    pub const CURRENT: ProtocolVersion = ProtocolVersion::QUIC;
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format!("v{}", self.0))
    }
}

/// What role a member plays in the cluster.
///
/// The variant order is part of the wire format: append new kinds, never reorder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberKind {
    /// An ordinary member that hosts application work.
    Member,
    /// A locator: answers discovery requests and is preferred as coordinator.
    Locator,
    /// An administrative client: in the view, but never coordinator or elder, weight 0.
    Admin,
}

impl std::str::FromStr for MemberKind {
    type Err = String;

    /// `member`, `locator` or `admin`, as configuration files write a kind.
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "member" => Ok(MemberKind::Member),
            "locator" => Ok(MemberKind::Locator),
            "admin" => Ok(MemberKind::Admin),
            _ => Err(format!(
                "{text:?} is not a kind: expected member, locator or admin"
            )),
        }
    }
}

impl fmt::Display for MemberKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            MemberKind::Member => "member",
            MemberKind::Locator => "locator",
            MemberKind::Admin => "admin",
        })
    }
}

/// Optional attributes a member announces about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAttributes {
    /// Application-defined groups (Geode's "groups" property).
    pub groups: Vec<String>,
    /// A port for a direct application channel, if the member offers one.
    pub direct_channel_port: Option<u16>,
    /// Added to the member's weight in network-partition detection.
    pub weight_adjustment: i32,
}

/// The identity of one member process. Cheap to clone (shared).
///
/// The field order of the private data is part of the wire format (postcard is not
/// self-describing): a change to it is a protocol-version decision.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MemberId(Arc<MemberIdData>);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct MemberIdData {
    uuid: Uuid,
    name: String,
    address: SocketAddr,
    kind: MemberKind,
    version: ProtocolVersion,
    view_id: Option<ViewId>,
    attributes: MemberAttributes,
}

/// Who a member is, set once: its name, role, attributes, and addresses. Every messenger
/// binds with one (`Messenger::bind`, the legacy protocol's `cohort_legacy_udp::bind`),
/// and a member's `MemberConfig` holds the one it runs as; tuning settings carry none of
/// it. The messenger announces it in the member id it makes when it binds.
///
/// `Default` is a member on 127.0.0.1 with a port picked at bind, named after its address.
///
/// ```
/// use cohort_transport::{Identity, MemberKind};
/// let locator = Identity {
///     kind: MemberKind::Locator,
///     bind: "127.0.0.1:10334".parse().unwrap(),
///     ..Identity::named("locator-1")
/// };
/// assert!(locator.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The logical name, unique in the cluster (Geode's `name`). Default empty: the member
    /// is named after its advertised address, e.g. `127.0.0.1:40404`.
    pub name: String,
    /// The member's role. Default [`MemberKind::Member`].
    pub kind: MemberKind,
    /// Attributes announced in the member id: groups, and the weight adjustment that
    /// network-partition detection adds to the member's weight. Default none.
    pub attributes: MemberAttributes,
    /// The UDP address to bind (Geode's `bind-address` and port); port 0 picks one.
    /// Default `127.0.0.1:0`.
    pub bind: SocketAddr,
    /// The address other members dial, when it differs from `bind` (required when `bind`
    /// is unspecified, such as `0.0.0.0`; port 0: the bound port). Default `None`: the
    /// bound address.
    pub advertise: Option<SocketAddr>,
    /// The protocol version announced, which the coordinator's version gate judges.
    /// Default [`ProtocolVersion::CURRENT`]; only tests of rolling upgrades (and future
    /// releases) set another.
    pub version: ProtocolVersion,
    /// A fixed uuid instead of a fresh random one, for deterministic simulations only (the
    /// QUIC messenger also seeds quinn's random generator with it). Default `None`, which
    /// every real member must keep: a restarted process has to be a new member.
    pub uuid: Option<Uuid>,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            name: String::new(),
            kind: MemberKind::Member,
            attributes: MemberAttributes::default(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            version: ProtocolVersion::CURRENT,
            uuid: None,
        }
    }
}

impl Identity {
    /// A member called `name`, with every other field at its default.
    pub fn named(name: impl Into<String>) -> Self {
        Identity {
            name: name.into(),
            ..Identity::default()
        }
    }

    /// Checks that other members can reach the member at its advertised address.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let advertised = self.advertise.unwrap_or(self.bind);
        if advertised.ip().is_unspecified() {
            let setting = match self.advertise {
                Some(_) => "advertise",
                None => "bind",
            };
            return Err(InvalidConfig::new(
                setting,
                format!("{advertised} is unspecified: set `advertise` to the address members dial"),
            ));
        }
        if self.name.trim() != self.name {
            return Err(InvalidConfig::new(
                "name",
                format!("{:?} has leading or trailing white space", self.name),
            ));
        }
        Ok(())
    }

    /// The member id of this member once its socket is bound at `bound`.
    pub fn member_id(&self, bound: SocketAddr) -> MemberId {
        let mut advertised = self.advertise.unwrap_or(bound);
        if advertised.port() == 0 {
            advertised.set_port(bound.port());
        }
        let name = match self.name.is_empty() {
            true => advertised.to_string(),
            false => self.name.clone(),
        };
        let mut id = MemberId::new(name, advertised, self.kind)
            .with_version(self.version)
            .with_attributes(self.attributes.clone());
        if let Some(uuid) = self.uuid {
            id = id.with_uuid(uuid);
        }
        id
    }
}

impl MemberId {
    /// A new identity with a fresh random uuid, speaking [`ProtocolVersion::CURRENT`].
    pub fn new(name: impl Into<String>, address: SocketAddr, kind: MemberKind) -> Self {
        MemberId(Arc::new(MemberIdData {
            uuid: Uuid::new_v4(),
            name: name.into(),
            address,
            kind,
            version: ProtocolVersion::CURRENT,
            view_id: None,
            attributes: MemberAttributes::default(),
        }))
    }

    /// The same details under a chosen uuid (deterministic simulations and tests).
    pub fn with_uuid(mut self, uuid: Uuid) -> Self {
        Arc::make_mut(&mut self.0).uuid = uuid;
        self
    }

    /// The same identity speaking another protocol version (used by legacy members).
    pub fn with_version(mut self, version: ProtocolVersion) -> Self {
        Arc::make_mut(&mut self.0).version = version;
        self
    }

    /// The same identity with these attributes.
    pub fn with_attributes(mut self, attributes: MemberAttributes) -> Self {
        Arc::make_mut(&mut self.0).attributes = attributes;
        self
    }

    /// The same identity, recording the view that admitted it (set by the coordinator).
    pub fn with_view_id(mut self, view_id: ViewId) -> Self {
        Arc::make_mut(&mut self.0).view_id = Some(view_id);
        self
    }

    /// The unique, never reused identifier of this member process.
    pub fn uuid(&self) -> Uuid {
        self.0.uuid
    }

    /// The logical name, for people.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The UDP address of the member's one port (QUIC and legacy share it).
    pub fn address(&self) -> SocketAddr {
        self.0.address
    }

    /// The member's role.
    pub fn kind(&self) -> MemberKind {
        self.0.kind
    }

    /// The protocol version the member speaks.
    pub fn version(&self) -> ProtocolVersion {
        self.0.version
    }

    /// The view that admitted this member, once it has been admitted.
    pub fn view_id(&self) -> Option<ViewId> {
        self.0.view_id
    }

    /// The member's announced attributes.
    pub fn attributes(&self) -> &MemberAttributes {
        &self.0.attributes
    }

    /// True if every field (not only the uuid) is equal.
    pub fn same_details(&self, other: &MemberId) -> bool {
        self.0 == other.0
    }
}

impl PartialEq for MemberId {
    fn eq(&self, other: &Self) -> bool {
        self.0.uuid == other.0.uuid
    }
}

impl Eq for MemberId {}

impl Hash for MemberId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.uuid.hash(state);
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0.name)
    }
}

impl fmt::Debug for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let uuid = self.0.uuid.simple().to_string();
        write!(
            f,
            "{}@{}({}, {}, {})",
            self.0.name,
            self.0.address,
            &uuid[..8],
            self.0.kind,
            self.0.version
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:7000".parse().expect("literal address")
    }

    #[test]
    fn an_identity_names_what_others_could_not_use() {
        assert_eq!(Identity::named("m").validate(), Ok(()));
        let padded = Identity::named(" m").validate().expect_err("white space");
        assert_eq!(padded.setting, "name");
        let unspecified = Identity {
            bind: "0.0.0.0:0".parse().expect("literal"),
            ..Identity::named("m")
        };
        assert_eq!(unspecified.validate().expect_err("0.0.0.0").setting, "bind");
        let advertised = Identity {
            advertise: Some("10.0.0.1:0".parse().expect("literal")),
            ..unspecified
        };
        assert_eq!(advertised.validate(), Ok(()));
        // Port 0 in `advertise` means the bound port; an empty name, the address.
        let unnamed = Identity {
            name: String::new(),
            ..advertised
        };
        let id = unnamed.member_id(addr());
        assert_eq!(id.address(), "10.0.0.1:7000".parse().expect("literal"));
        assert_eq!(id.name(), "10.0.0.1:7000");
    }

    #[test]
    fn equality_is_by_uuid_and_restart_is_a_new_member() {
        let a = MemberId::new("a", addr(), MemberKind::Member);
        let renamed_attrs = a.clone().with_attributes(MemberAttributes {
            weight_adjustment: 5,
            ..Default::default()
        });
        assert_eq!(a, renamed_attrs, "same uuid is the same member");
        assert!(!a.same_details(&renamed_attrs));
        let restarted = MemberId::new("a", addr(), MemberKind::Member);
        assert_ne!(a, restarted, "a restarted process gets a fresh uuid");
    }

    #[test]
    fn wire_round_trip_keeps_every_field() {
        let a = MemberId::new("node-1", addr(), MemberKind::Locator)
            .with_version(ProtocolVersion::LEGACY)
            .with_view_id(ViewId(7))
            .with_attributes(MemberAttributes {
                groups: vec!["g".into()],
                direct_channel_port: Some(9),
                weight_adjustment: -2,
            });
        let bytes = postcard::to_allocvec(&a).expect("encode");
        let back: MemberId = postcard::from_bytes(&bytes).expect("decode");
        assert!(a.same_details(&back));
        assert_eq!(format!("{back}"), "node-1");
        assert_eq!(
            format!("[{back:<8}|{:>4}|{:<7}]", back.version(), back.kind()),
            "[node-1  |  v1|locator]"
        );
    }
}
