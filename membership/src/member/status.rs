//! [`ask_locator`]: an operator's question to a locator, from outside the cluster.
//!
//! ```text
//! ask_locator(locator, tls) ─► the local address the host routes to the locator from
//!   ─► a QUIC Messenger bound there (port 0), as an admin member that joins nothing
//!   ─► FindCoordinator query ─► DiscoveryAnswer ─► LocatorReport; the socket is closed
//! ```
//!
//! Binding the unspecified address instead would need an advertise address (the
//! transport refuses an unspecified bind without one, since a peer must be able to dial
//! back), and binding loopback cannot reach a locator on another host: the address the
//! routing table picks for the locator is the one a reply can come back to.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use cohort_transport::{
    BindError, Identity, MemberId, MemberKind, Messenger, QueryError, QuicConfig, TlsError,
    TlsSettings, View,
};

use crate::messages::FindCoordinator;

/// What a locator said when asked for its view ([`ask_locator`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LocatorReport {
    /// The locator that answered: its name and address.
    pub responder: MemberId,
    /// Its installed view; `None` while it is still starting.
    pub view: Option<View>,
}

/// Why [`ask_locator`] got no report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AskLocatorError {
    /// The TLS settings did not load.
    #[error("cannot load the TLS settings: {0}")]
    Tls(#[from] TlsError),
    /// The host has no route to the locator's address.
    #[error("no local address routes to {locator}: {source}")]
    NoRoute {
        /// The locator asked.
        locator: SocketAddr,
        /// What the socket layer said.
        source: io::Error,
    },
    /// The asking socket could not be opened.
    #[error("cannot open a socket to ask from: {0}")]
    Bind(#[from] BindError),
    /// The locator did not answer (refused, unreachable, or not within the handshake
    /// timeout).
    #[error("{locator} did not answer: {source}")]
    NoAnswer {
        /// The locator asked.
        locator: SocketAddr,
        /// Why.
        source: QueryError,
    },
}

/// Asks the locator at `locator` for its installed view, as `cohort-member status` does:
/// over a fresh QUIC connection secured by `tls` (a certificate of the cluster's CA), from
/// a socket bound to the local address the host routes to `locator` from, as an admin
/// member (which weighs nothing and joins nothing), within the transport's default
/// handshake timeout. The socket is closed before it returns.
///
/// ```no_run
/// # async fn demo(tls: cohort_transport::TlsSettings) -> Result<(), Box<dyn std::error::Error>> {
/// let report = cohort_membership::ask_locator("10.0.0.1:10334".parse()?, &tls).await?;
/// match report.view {
///     Some(view) => println!("{} reports {view}", report.responder),
///     None => println!("{} is still starting", report.responder),
/// }
/// # Ok(())
/// # }
/// ```
pub async fn ask_locator(
    locator: SocketAddr,
    tls: &TlsSettings,
) -> Result<LocatorReport, AskLocatorError> {
    let tls = tls.load()?;
    let bind = SocketAddr::new(
        route_to(locator).map_err(|source| AskLocatorError::NoRoute { locator, source })?,
        0,
    );
    let identity = Identity {
        kind: MemberKind::Admin,
        bind,
        ..Identity::named("cohort-member-status")
    };
    let messenger = Messenger::bind(&identity, QuicConfig::default(), &tls)?;
    let question = FindCoordinator {
        asker: messenger.local_member().clone(),
    };
    let answer = messenger.query(locator, &question).await;
    messenger.shutdown().await;
    let answer = answer.map_err(|source| AskLocatorError::NoAnswer { locator, source })?;
    Ok(LocatorReport {
        responder: answer.responder,
        view: answer.view,
    })
}

/// The local IP address the host would send to `destination` from: a UDP socket
/// connected to it (which sends nothing) is given that address by the routing table.
fn route_to(destination: SocketAddr) -> io::Result<std::net::IpAddr> {
    let any: SocketAddr = match destination {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let probe = UdpSocket::bind(any)?;
    probe.connect(destination)?;
    Ok(probe.local_addr()?.ip())
}

#[cfg(test)]
mod tests {
    use super::route_to;

    #[test]
    fn a_loopback_locator_is_asked_from_loopback() {
        let route = route_to("127.0.0.1:10334".parse().expect("literal")).expect("a route");
        assert!(route.is_loopback(), "{route}");
        let route = route_to("127.3.4.5:10334".parse().expect("literal")).expect("a route");
        assert!(route.is_loopback(), "{route}");
    }
}
