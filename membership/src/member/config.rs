//! [`MemberConfig`]: the settings of one member, named after Geode's properties, and the
//! errors of [`Member::start`](super::Member::start).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cohort_transport::{
    BindError, Identity, InvalidConfig, MemberId, MemberKind, ProtocolVersion, QuicConfig,
    TlsError, TlsSettings,
};

use cohort_legacy_udp::{LegacyBindError, LegacyConfig};

use super::transport::Protocol;
use crate::auth::{AllowAll, Authenticator, Credentials};
use crate::discovery::NoFounding;
use crate::gms::GmsConfig;

/// Settings of one member. [`MemberConfig::new`] takes the TLS settings (there is no
/// default for those: every cluster has its own CA) and fills every other field with its
/// documented default; [`MemberConfig::validate`] names the first setting that cannot work.
///
/// It deserializes (serde, from TOML or any self-describing format) from the keys of
/// `cohort-member`'s configuration file, Geode's property names in kebab case; a key left
/// out keeps its default, and an unknown key or a value that cannot work is refused by
/// name:
///
/// | key | field |
/// |---|---|
/// | `name`, `kind`, `bind-address`, `advertise-address`, `groups`, `weight-adjustment` | [`identity`](Self::identity) |
/// | `locators` | `locators` |
/// | `preset` (applied first), then `member-timeout`, `final-check-timeout`, `removal-timeout`, `join-timeout`, `leave-timeout` (`500ms`, `5s`, `2m`), `initial-rtt` | the timeouts, `transport.initial_rtt` |
/// | `enable-network-partition-detection`, `disable-auto-reconnect` (inverted) | `partition_detection`, `auto_reconnect` |
/// | `working-dir` | `working_dir` |
/// | `transport` (`quic`, `legacy` or `bridge`) | `protocol` |
/// | `security-username`, `security-password` | `credentials` |
/// | `[ssl]`: `ca`, `certificate`, `private-key` (required), `require-authentication`, `endpoint-identification-enabled` | `tls` (files named, read at start) |
/// | `[quic]`, `[legacy]` tables (their fields in kebab case) | `transport`, `legacy` |
///
/// The authenticator, the batch and discovery intervals and the protocol version have no
/// key: they are set in code.
#[derive(Clone, serde::Deserialize)]
#[serde(try_from = "super::file::ConfigFile")]
pub struct MemberConfig {
    /// Who this member is: name, kind, attributes (groups, the partition weight
    /// adjustment), bind and advertise addresses. Default [`Identity::default`]: a member
    /// on 127.0.0.1 with a port picked at start, named after its address.
    pub identity: Identity,
    /// The locators to ask for the cluster (Geode's `locators`). A member needs at least
    /// one; a locator may have none (it then founds the cluster alone). A locator lists
    /// the other locators, and may list itself. Default empty.
    pub locators: Vec<SocketAddr>,
    /// The cluster's TLS settings: CA, this member's certificate and key.
    pub tls: TlsSettings,
    /// What this member presents when it joins (Geode's `security-*` properties). Default
    /// empty.
    pub credentials: Credentials,
    /// Judges joiners' credentials while this member is coordinator (Geode's security
    /// manager). Default [`AllowAll`]: mutual TLS alone decides who gets in.
    pub authenticator: Arc<dyn Authenticator>,
    /// How long a member may stay silent before its neighbours suspect it (Geode's
    /// `member-timeout`); heartbeats go out every quarter of it. A suspect is removed only
    /// if a final check also fails. The coordinator waits twice this long for the
    /// acknowledgements of a prepared view before suspecting the silent. Default 1 s
    /// (Geode: 5 s): heartbeats are datagrams on connections that are up anyway, so four
    /// per second cost next to nothing, and the final check is what protects a busy member.
    pub member_timeout: Duration,
    /// How long a final check waits for the suspect to answer over a fresh connection (or
    /// for any sign of life from it) before it counts as crashed; once the suspect's port
    /// refuses the check (ICMP), only a few round trips. Default 400 ms: a fresh handshake
    /// and one answer take a few milliseconds on a LAN, and with the default member timeout
    /// a member gone silent is found unreachable within 1.5 s.
    pub final_check_timeout: Duration,
    /// How long a member may stay silent before it is removed, counted from when its
    /// silence began (a member timeout before the final check that went unanswered). From
    /// that check on it is *unreachable*: every member is told
    /// ([`MembershipEvent::Unreachable`](crate::MembershipEvent::Unreachable),
    /// [`Member::unreachable`](super::Member::unreachable)), the checker checks it again
    /// every half member timeout, and one that answers is reachable again with no view
    /// change; before it is removed, a few other members probe it, and one that any of
    /// them reaches stays (a link problem, not a crash). A check refused by the suspect's
    /// port (its process is gone) or answered "out" removes at once. Zero removes at the
    /// first unanswered check. Default 5 s ([`Preset::Lan`]).
    pub removal_timeout: Duration,
    /// Network-partition detection (Geode's `enable-network-partition-detection`): a
    /// coordinator whose removals would leave the rest without a strict weighted majority
    /// of its view shuts its side down instead (such a side could decide no view change
    /// anyway). Weights: member 10, lead member +5, locator 3, admin 0, plus each member's
    /// `weight_adjustment`; in a view of three or more, no member outweighs all the others
    /// together. Default on.
    pub partition_detection: bool,
    /// How long `start` tries to get into a view, discovery included (Geode's
    /// `join-timeout`). Default 24 s.
    pub join_timeout: Duration,
    /// How long `leave` waits for the view without this member. Default 5 s.
    pub leave_timeout: Duration,
    /// How long the coordinator collects joins, leaves and removals into one view change.
    /// Default 100 ms.
    pub batch_interval: Duration,
    /// How often a starting member asks the locators again while none has a view for it.
    /// Default 300 ms.
    pub discovery_interval: Duration,
    /// Where a locator persists the latest view and reads it back at start (Geode's
    /// working directory): file `locator-<port>.view`. Default `None`: no view file, so an
    /// embedded locator writes nothing into whatever directory its process runs in; a
    /// locator restarted without one finds its cluster again through the other locators
    /// only. (`cohort-member` gives its current directory unless `working-dir` says
    /// otherwise.)
    pub working_dir: Option<PathBuf>,
    /// QUIC tuning (queues, frame limits, QUIC timers, concurrent handshakes, socket
    /// buffers). Default [`QuicConfig::default`] with the [`Preset::Lan`] initial RTT.
    pub transport: QuicConfig,
    /// Which protocol this member speaks: QUIC, the legacy UDP protocol (an old member,
    /// announced as version v1 whatever `version` says), or both (a bridge, during a
    /// rolling upgrade). A member speaking the legacy protocol alone announces version
    /// v1, whatever its identity says. Default [`Protocol::Quic`].
    pub protocol: Protocol,
    /// Legacy protocol tuning, for [`Protocol::Legacy`] and [`Protocol::Bridge`]. Default
    /// [`LegacyConfig::default`].
    pub legacy: LegacyConfig,
    /// Whether a member forced out of the cluster (removed while alive, or on the side of
    /// a partition that lost its quorum) joins again by itself, as Geode's members do
    /// unless `disable-auto-reconnect` is set. It rejoins as a new member (a new uuid, the
    /// same name and address) once a locator or a member of its last view answers with a
    /// view, trying with capped exponential backoff from `discovery_interval` until it is
    /// back or the [`Member`](super::Member) leaves or is dropped; the application is told
    /// with [`MembershipEvent::Reconnected`](crate::MembershipEvent::Reconnected). Off, a
    /// member forced out stays stopped. Default `true`.
    pub auto_reconnect: bool,
}

impl MemberConfig {
    /// A member of the cluster secured by `tls`, with every other setting at its default.
    pub fn new(tls: TlsSettings) -> Self {
        MemberConfig {
            identity: Identity::default(),
            locators: Vec::new(),
            tls,
            credentials: Credentials::default(),
            authenticator: Arc::new(AllowAll),
            member_timeout: Duration::from_secs(1),
            final_check_timeout: Duration::from_millis(400),
            removal_timeout: Duration::from_secs(5),
            partition_detection: true,
            join_timeout: Duration::from_secs(24),
            leave_timeout: Duration::from_secs(5),
            batch_interval: Duration::from_millis(100),
            discovery_interval: Duration::from_millis(300),
            working_dir: None,
            // QuicConfig's default initial RTT is the Lan preset's.
            transport: QuicConfig::default(),
            protocol: Protocol::Quic,
            legacy: LegacyConfig::default(),
            auto_reconnect: true,
        }
    }

    /// These settings with the failure-detection timing of `preset` (`member_timeout`,
    /// `final_check_timeout`, `removal_timeout`, and the transport's `initial_rtt`); every
    /// other field is kept.
    ///
    /// ```
    /// # use cohort_membership::{MemberConfig, Preset};
    /// # fn demo(tls: cohort_transport::TlsSettings) {
    /// let config = MemberConfig::new(tls).with_preset(Preset::Wan);
    /// assert_eq!(config.removal_timeout, std::time::Duration::from_secs(30));
    /// # }
    /// ```
    #[must_use = "the preset is applied to the returned settings"]
    pub fn with_preset(mut self, preset: Preset) -> Self {
        let (member, check, removal) = preset.timing();
        self.member_timeout = member;
        self.final_check_timeout = check;
        self.removal_timeout = removal;
        self.transport.initial_rtt = preset.initial_rtt();
        self
    }

    /// Checks every setting, the identity's and the tuning's included; the error names
    /// the first that cannot work. [`Member::start`](super::Member::start) calls it.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.locators.is_empty() && self.identity.kind != MemberKind::Locator {
            return Err(InvalidConfig::new(
                "locators",
                "is empty: a member needs at least one locator address",
            ));
        }
        for (value, name) in [
            (self.member_timeout, "member_timeout"),
            (self.final_check_timeout, "final_check_timeout"),
            (self.join_timeout, "join_timeout"),
            (self.leave_timeout, "leave_timeout"),
            (self.batch_interval, "batch_interval"),
            (self.discovery_interval, "discovery_interval"),
        ] {
            cohort_transport::settings::positive(name, value)?;
        }
        self.identity
            .validate()
            .map_err(|error| error.within("identity"))?;
        self.transport
            .validate()
            .map_err(|error| error.within("transport"))?;
        self.legacy
            .validate()
            .map_err(|error| error.within("legacy"))?;
        gms_config(self, self.join_timeout).validate()
    }

    /// The configuration a reconnect binds with: the address of the incarnation `me`, so
    /// that the member keeps its address when `bind` asked for any free port.
    pub(crate) fn for_reconnect(&self, me: &MemberId) -> MemberConfig {
        let mut config = self.clone();
        if config.identity.bind.port() == 0 {
            config.identity.bind.set_port(me.address().port());
        }
        config
    }

    /// The identity this member announces: version v1 on the legacy protocol alone.
    pub(crate) fn announced(&self) -> Identity {
        let mut identity = self.identity.clone();
        if self.protocol == Protocol::Legacy {
            identity.version = ProtocolVersion::LEGACY;
        }
        identity
    }
}

/// The membership protocol's settings for a member configured by `config`, trying to join
/// for `join_timeout`.
pub(crate) fn gms_config(config: &MemberConfig, join_timeout: Duration) -> GmsConfig {
    GmsConfig {
        batch_interval: config.batch_interval,
        prepare_timeout: config.member_timeout * 2,
        join_retry: JOIN_RETRY,
        join_timeout,
        leave_timeout: config.leave_timeout,
        member_timeout: config.member_timeout,
        removal_timeout: config.removal_timeout,
        partition_detection: config.partition_detection,
        // Renewed every one and a half member timeouts, for three: at a third of the member
        // timeout the lease alone was 70% of an idle member's traffic. It costs only the
        // time nobody believes after a coordinator is cut off.
        lease_interval: config.member_timeout * 3 / 2,
        lease_duration: config.member_timeout * 3,
        ..GmsConfig::default()
    }
}

/// How often a joiner repeats its join request while unanswered.
pub(crate) const JOIN_RETRY: Duration = Duration::from_secs(1);

impl fmt::Debug for MemberConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every field; the TLS settings show where the key comes from, never the key, and
        // the credentials show their keys, never their values.
        f.debug_struct("MemberConfig")
            .field("identity", &self.identity)
            .field("locators", &self.locators)
            .field("tls", &self.tls)
            .field("credentials", &self.credentials)
            .field("authenticator", &"dyn Authenticator")
            .field("member_timeout", &self.member_timeout)
            .field("final_check_timeout", &self.final_check_timeout)
            .field("removal_timeout", &self.removal_timeout)
            .field("partition_detection", &self.partition_detection)
            .field("join_timeout", &self.join_timeout)
            .field("leave_timeout", &self.leave_timeout)
            .field("batch_interval", &self.batch_interval)
            .field("discovery_interval", &self.discovery_interval)
            .field("working_dir", &self.working_dir)
            .field("transport", &self.transport)
            .field("protocol", &self.protocol)
            .field("legacy", &self.legacy)
            .field("auto_reconnect", &self.auto_reconnect)
            .finish()
    }
}

/// Failure-detection timing for a kind of network, applied with
/// [`MemberConfig::with_preset`]. Each sets `member_timeout`, `final_check_timeout`,
/// `removal_timeout` and the transport's `initial_rtt`; the bench prints what each gives
/// (`bench -- membership`).
///
/// The initial RTT is what a fresh connection assumes until it measured one; a lost
/// handshake datagram is sent again after about three of them, doubling each time. The LAN
/// presets assume 30 ms (a LAN round trip is well under a millisecond), so a final check's
/// handshake that loses its first datagram sends it again at about 90 and 270 ms, within
/// the 400 ms check; quinn's default of 333 ms (RFC 9002's, for any path) sends it again
/// only after about a second, when the check has long failed. `Wan` keeps 333 ms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Preset {
    /// The default: member timeout 1 s, final check 400 ms, removal timeout 5 s (counted
    /// from the silence). A crashed process whose host answers for its port (ICMP port
    /// unreachable) is removed within a final check of its silence; a silent or paused
    /// member is unreachable after about 1.4 s and removed after about 5.4 s, so a pause
    /// of up to about 5 s costs nothing (serf, measured on the same machine, removed
    /// nobody for pauses up to 5 s; memberlist's LAN configuration suspects for 5.2 s at
    /// twenty members: `SuspicionMult` 4 × log10(n) × `ProbeInterval` 1 s).
    #[default]
    Lan,
    /// One stage, as cohort was before the removal timeout: member timeout 1 s, final
    /// check 400 ms, and removal at the first unanswered check (about 1.4 s of silence).
    /// Fastest for hosts that die silently, but a stall longer than about a second costs
    /// the member its identity.
    LanFast,
    /// For links between data centres: member timeout 5 s (Geode's default
    /// `member-timeout`), final check 3 s (memberlist's WAN `ProbeTimeout`), removal
    /// timeout 30 s (memberlist's WAN suspicion at ten members: `SuspicionMult` 6 ×
    /// `ProbeInterval` 5 s). Large messages over such links also want a QUIC stream window
    /// near the bandwidth-delay product (`transport.stream_window_bytes`, 256 KiB by
    /// default: 26 MB/s per stream at a 10 ms round trip); the preset leaves it alone.
    Wan,
}

impl Preset {
    /// Member timeout, final-check timeout and removal timeout.
    fn timing(self) -> (Duration, Duration, Duration) {
        let (ms, s) = (Duration::from_millis, Duration::from_secs);
        match self {
            Preset::Lan => (s(1), ms(400), s(5)),
            Preset::LanFast => (s(1), ms(400), Duration::ZERO),
            Preset::Wan => (s(5), s(3), s(30)),
        }
    }

    /// The round-trip time a new connection assumes (see above).
    fn initial_rtt(self) -> Duration {
        match self {
            Preset::Lan | Preset::LanFast => Duration::from_millis(30),
            Preset::Wan => Duration::from_millis(333),
        }
    }

    /// Every preset, in the order the docs give them.
    pub const ALL: [Preset; 3] = [Preset::Lan, Preset::LanFast, Preset::Wan];

    /// The preset's name in configuration files: `lan`, `lan-fast` or `wan`.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Lan => "lan",
            Preset::LanFast => "lan-fast",
            Preset::Wan => "wan",
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Preset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown preset {s:?}: expected lan, lan-fast or wan"))
    }
}

/// Why [`Member::start`](super::Member::start) did not get the member into a view.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The settings cannot work.
    #[error("invalid member configuration: {0}")]
    Config(#[from] InvalidConfig),
    /// The TLS settings could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The messenger could not start.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The legacy messenger (or a bridge's legacy side) could not start.
    #[error(transparent)]
    LegacyBind(#[from] LegacyBindError),
    /// A member of the cluster refuses this member's protocol for good, and says why (an
    /// old member after the cluster finished its upgrade).
    #[error("refused by {by}: {reason}")]
    Refused {
        /// The address that refused.
        by: SocketAddr,
        /// Its reason.
        reason: String,
    },
    /// The coordinator's authenticator refused this member's credentials.
    #[error("authentication failed: the coordinator {coordinator} refused: {reason}")]
    AuthenticationFailed {
        /// The coordinator that refused.
        coordinator: MemberId,
        /// Its reason.
        reason: String,
    },
    /// A newer version has joined the cluster; this older one may not.
    #[error("version {joining} refused: the cluster already has members of version {cluster}")]
    VersionRefused {
        /// This member's version.
        joining: ProtocolVersion,
        /// The newest version in the cluster.
        cluster: ProtocolVersion,
    },
    /// Another member of the cluster already has this name.
    #[error("the name {0:?} is already in use in the cluster")]
    NameInUse(String),
    /// No locator answered with a cluster to join within the join timeout.
    #[error(
        "no locator reachable within the join timeout of {waited:?} (asked {locators:?}){}",
        last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default()
    )]
    NoLocator {
        /// The addresses asked.
        locators: Vec<SocketAddr>,
        /// The join timeout.
        waited: Duration,
        /// The last failure seen, if any.
        last_error: Option<String>,
    },
    /// A locator heard of no cluster to join within the join timeout, and could not
    /// justify founding one (see [`NoFounding`]): fewer than a strict majority of its
    /// configured locators (itself included) answered, or the locator that is to found
    /// never did. Nothing was founded, so a locator cut off from the others never starts a
    /// second cluster. The remedy: start a majority of the configured locators (they find
    /// each other and one founds); or check the locator named as founder; or, for a
    /// deliberate cluster of one locator, configure this locator with no other locator.
    #[error("no cluster to join or to found within the join timeout of {waited:?}: {reason}")]
    NotFounded {
        /// The join timeout.
        waited: Duration,
        /// Why this locator did not found the cluster.
        reason: NoFounding,
    },
    /// A coordinator was found but did not admit this member within the join timeout.
    #[error("the coordinator {coordinator} did not admit this member within {waited:?}")]
    JoinTimedOut {
        /// The coordinator last asked.
        coordinator: MemberId,
        /// The join timeout.
        waited: Duration,
    },
    /// The member stopped before it was admitted.
    #[error("the member stopped before it was admitted")]
    Stopped,
}
