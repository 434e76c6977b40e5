//! How a member's [`Messenger`] is made: by [`Protocol`], QUIC, the legacy protocol (an old
//! member), or both (a bridge: a member upgraded while old members remain). The membership
//! protocol is the same on each; only the carriers behind the messenger differ.
//!
//! Also the stand-in a reconnecting member shows between two incarnations
//! ([`stand_in`]): the old messenger must be gone before its port can be bound again, and a
//! messenger on a [`Detached`] socket (no port at all) takes its place.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use cohort_legacy_udp::{BridgeBindError, LegacyCarrier, LegacyConfig, LegacyStats};
use cohort_transport::{BindError, ClusterTls, Identity, MemberId, Messenger, QuicConfig};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

use super::StartError;

/// Which protocol a member speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// QUIC only (protocol v2): the default.
    #[default]
    Quic,
    /// The legacy UDP protocol only (v1): a member of the old release.
    Legacy,
    /// Both on one port, one per recipient by its version: a member upgraded while old
    /// members remain. The legacy side closes once no old member is left.
    Bridge,
}

/// Binds the messenger `protocol` calls for, as the member `identity` names.
pub(crate) fn bind(
    protocol: Protocol,
    identity: &Identity,
    quic: &QuicConfig,
    legacy: &LegacyConfig,
    tls: &ClusterTls,
) -> Result<Messenger, StartError> {
    Ok(match protocol {
        Protocol::Quic => Messenger::bind(identity, quic.clone(), tls)?,
        Protocol::Legacy => cohort_legacy_udp::bind(identity, legacy.clone())?,
        Protocol::Bridge => cohort_legacy_udp::bridge(identity, quic.clone(), tls, legacy.clone())
            .map_err(|error| match error {
                BridgeBindError::Quic(error) => StartError::Bind(error),
                BridgeBindError::Legacy(error) => StartError::LegacyBind(error),
            })?,
    })
}

/// A messenger with the identity of `of` that holds no socket and is shut down: sends
/// fail with `SendError::Shutdown`, nothing arrives, its counters stay at zero. A
/// reconnecting member shows it from the moment its old messenger is released (so that
/// the port can be bound again) until the new one is bound. `config` gives the tuning.
pub(crate) async fn stand_in(
    of: &MemberId,
    config: QuicConfig,
    tls: &ClusterTls,
) -> Result<Messenger, BindError> {
    let identity = Identity {
        name: of.name().to_owned(),
        kind: of.kind(),
        attributes: of.attributes().clone(),
        bind: of.address(),
        advertise: Some(of.address()),
        version: of.version(),
        uuid: Some(of.uuid()),
    };
    let socket = Arc::new(Detached {
        address: of.address(),
    });
    let messenger = Messenger::bind_with_socket(&identity, config, tls, socket)?;
    messenger.shutdown().await;
    Ok(messenger)
}

/// Counters of the legacy protocol (`None` on QUIC alone).
pub(crate) fn legacy_stats(messenger: &Messenger) -> Option<LegacyStats> {
    messenger
        .carrier::<LegacyCarrier>()
        .map(LegacyCarrier::stats)
}

/// A socket that is not there: what is sent goes nowhere, nothing is ever received. For
/// [`stand_in`], which must not hold the port its member is about to bind again.
#[derive(Debug)]
struct Detached {
    /// The address it claims to be bound to (the member's own).
    address: SocketAddr,
}

impl AsyncUdpSocket for Detached {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, _: &Transmit<'_>) -> io::Result<()> {
        Ok(())
    }

    fn poll_recv(
        &self,
        _: &mut Context<'_>,
        _: &mut [IoSliceMut<'_>],
        _: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        // Never ready, so never woken: nothing will arrive.
        Poll::Pending
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.address)
    }
}

/// A detached socket never pushes back.
#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
