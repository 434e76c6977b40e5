//! The messengers of this crate: [`bind`], a [`Messenger`] over the legacy protocol alone
//! (an old member), and [`bridge`], one over QUIC with the legacy protocol beside it on the
//! same port (a member upgraded while old members remain).
//!
//! ```text
//! bind(identity)   ─► Messenger { primary: LegacyCarrier }
//! bridge(identity) ─► Messenger { primary: QuicCarrier, secondary: LegacyCarrier (v1 members) }
//!   one port, one identity, one dispatcher and events (the Hub);
//!   a view holding this member and no v1 member left ─► once the legacy carrier has
//!   flushed (bounded): retired for good, ProtocolClosed event, log line; from then on old
//!   members are answered with a refusal that says why (RETIRED_REASON)
//! ```

use std::sync::Arc;

use cohort_transport::carrier::{FrontSettings, Hub};
use cohort_transport::quic::QuicCarrier;
use cohort_transport::socket::AsyncUdpSocket;
use cohort_transport::{
    BindError, ClusterTls, Identity, MemberId, Messenger, ProtocolVersion, QuicConfig,
};

use crate::carrier::{LegacyBindError, LegacyCarrier};
use crate::config::LegacyConfig;

/// Why a bridge could not start: one side or the other, nothing else.
#[derive(Debug, thiserror::Error)]
pub enum BridgeBindError {
    /// The QUIC side did not start.
    #[error(transparent)]
    Quic(#[from] BindError),
    /// The legacy side did not start.
    #[error(transparent)]
    Legacy(#[from] LegacyBindError),
}

/// True if `member` speaks only the legacy protocol.
pub fn speaks_legacy(member: &MemberId) -> bool {
    member.version() < ProtocolVersion::QUIC
}

/// What the legacy side says to old members once it is closed.
pub const RETIRED_REASON: &str = "this cluster has finished its upgrade to QUIC (protocol v2): \
     members of protocol v1 can no longer join";

/// A messenger over the legacy protocol alone: binds a UDP socket as the member
/// `identity` names (announcing protocol [`ProtocolVersion::LEGACY`] whatever
/// `identity.version` says), tuned by `config`. Must be called from within a Tokio
/// runtime.
pub fn bind(identity: &Identity, config: LegacyConfig) -> Result<Messenger, LegacyBindError> {
    let hub = Hub::new(config.subscription_capacity.get());
    let settings = legacy_settings(&config);
    let legacy = LegacyCarrier::bind(identity, config, &hub)?;
    Ok(Messenger::assemble(hub, Arc::new(legacy), None, settings))
}

/// Like [`bind`] on a socket the caller provides: for simulated networks. The socket
/// still passes through cohort's wrapper, so fault injection works the same;
/// `identity.bind` is ignored.
pub fn bind_with_socket(
    identity: &Identity,
    config: LegacyConfig,
    udp: Arc<dyn AsyncUdpSocket>,
) -> Result<Messenger, LegacyBindError> {
    let hub = Hub::new(config.subscription_capacity.get());
    let settings = legacy_settings(&config);
    let legacy = LegacyCarrier::bind_with_socket(identity, config, udp, &hub)?;
    Ok(Messenger::assemble(hub, Arc::new(legacy), None, settings))
}

/// What a messenger over the legacy carrier alone takes from its tuning.
fn legacy_settings(config: &LegacyConfig) -> FrontSettings {
    FrontSettings {
        local_queue_bytes: config.max_queued_bytes_per_destination.get(),
        shutdown_timeout: config.shutdown_timeout,
        // The legacy protocol has no handshake: QUIC's default bound for one.
        query_timeout: QuicConfig::default().handshake_timeout,
    }
}

/// A messenger during a rolling upgrade: binds the socket of the member `identity` names
/// (whose version must be v2 or later) for QUIC, tuned by `quic`, and puts the legacy
/// protocol, tuned by `legacy`, on the same port for the members of protocol v1.
pub fn bridge(
    identity: &Identity,
    quic: QuicConfig,
    tls: &ClusterTls,
    legacy: LegacyConfig,
) -> Result<Messenger, BridgeBindError> {
    let hub = Hub::new(quic.subscription_capacity.get());
    let settings = FrontSettings::of(&quic);
    let quic = QuicCarrier::bind(identity, quic, tls, &hub)?;
    let legacy = LegacyCarrier::beside(&quic, legacy, &hub)?;
    let secondary = (Arc::new(legacy) as _, RETIRED_REASON.to_owned());
    Ok(Messenger::assemble(
        hub,
        Arc::new(quic),
        Some(secondary),
        settings,
    ))
}
