//! cohort-tests: the in-process harness shared by cohort's integration tests, examples and
//! benchmarks.
//!
//! Everything here runs real QUIC with real TLS over loopback: [`TestCa`] issues member
//! certificates from an in-memory CA, [`spawn_member`] binds a messenger on an ephemeral
//! loopback port, and [`wait_until`] waits on a condition with a generous bound instead of
//! sleeping for a guessed time. [`sim`] runs the same messenger on turmoil's simulated
//! network instead, with seeded latency, loss and partitions; [`gms_sim`] runs the
//! membership protocol alone (`Gms` state machines) in virtual time, and [`chaos`] does
//! the same under injected faults with its invariants checked after every step.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cohort_certs::{CertificateAuthority, IssuedCertificate, MemberRequest};
use cohort_transport::{
    ClusterTls, Envelope, Identity, Message, Messenger, QuicConfig, Subscription, Tag, TlsSettings,
    View, ViewId,
};
use serde::{Deserialize, Serialize};

pub mod chaos;
pub mod cluster;
pub mod events;
pub mod gms_sim;
pub mod rogue;
pub mod sim;

pub use cluster::Cluster;

/// How long tests wait for a condition before failing: generous, so a loaded machine does
/// not make them flaky; conditions normally hold within milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// An in-memory cluster CA that issues loopback member certificates.
pub struct TestCa {
    ca: CertificateAuthority,
}

impl TestCa {
    /// A fresh CA.
    pub fn new() -> Self {
        TestCa {
            ca: CertificateAuthority::ephemeral().expect("generate an in-memory CA"),
        }
    }

    /// The CA certificate in PEM.
    pub fn certificate_pem(&self) -> &str {
        self.ca.certificate_pem()
    }

    /// A member certificate and key (PEM) naming 127.0.0.1, ::1 and localhost.
    pub fn issue(&self, name: &str) -> IssuedCertificate {
        let mut request = MemberRequest::new(name, Duration::from_secs(24 * 3600))
            .ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .ip(IpAddr::V6(Ipv6Addr::LOCALHOST));
        request = request.dns("localhost");
        self.ca.issue(&request).expect("issue a member certificate")
    }

    /// A member certificate naming only these addresses.
    pub fn issue_for(&self, name: &str, addresses: &[IpAddr]) -> IssuedCertificate {
        let request = addresses.iter().fold(
            MemberRequest::new(name, Duration::from_secs(24 * 3600)),
            |r, ip| r.ip(*ip),
        );
        self.ca.issue(&request).expect("issue a member certificate")
    }

    /// TLS settings for a member certificate naming 127.0.0.1, ::1 and localhost.
    pub fn settings(&self, name: &str) -> TlsSettings {
        let issued = self.issue(name);
        TlsSettings::from_pem(
            self.ca.certificate_pem(),
            issued.certificate_pem,
            issued.private_key_pem,
        )
    }

    /// Loaded TLS for a member.
    pub fn tls(&self, name: &str) -> ClusterTls {
        self.settings(name)
            .load()
            .expect("load generated TLS settings")
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// Binds a messenger named `name` on an ephemeral loopback port with certificates from `ca`.
pub fn spawn_member(ca: &TestCa, name: &str) -> Messenger {
    spawn_with(&ca.tls(name), name, QuicConfig::default())
}

/// Binds a messenger named `name` on an ephemeral loopback port, with explicit TLS and
/// tuning.
pub fn spawn_with(tls: &ClusterTls, name: &str, config: QuicConfig) -> Messenger {
    Messenger::bind(&Identity::named(name), config, tls).expect("bind a messenger on loopback")
}

/// Installs one view, listing `members` in order, on every one of them.
pub fn install_view(id: u64, members: &[&Messenger]) -> View {
    let view = View::new(ViewId(id), members.iter().map(|m| m.local_member().clone()));
    for member in members {
        member.install_view(view.clone());
    }
    view
}

/// Waits until `condition` holds, checking every few milliseconds, for at most `limit`.
/// Panics naming `what` if it never holds.
pub async fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Receives exactly `count` messages, failing if they do not all arrive within `limit`.
pub async fn receive<M: Message>(
    subscription: &mut Subscription<M>,
    count: usize,
    limit: Duration,
) -> Vec<Envelope<M>> {
    let mut received = Vec::with_capacity(count);
    let deadline = tokio::time::Instant::now() + limit;
    while received.len() < count {
        match tokio::time::timeout_at(deadline, subscription.recv()).await {
            Ok(Some(envelope)) => received.push(envelope),
            Ok(None) => panic!(
                "subscription closed after {} of {count} messages",
                received.len()
            ),
            Err(_) => panic!(
                "only {} of {count} messages arrived within {limit:?}",
                received.len()
            ),
        }
    }
    received
}

/// Runs `future` with a bound, failing with `what` if it takes longer.
pub async fn within<T>(what: &str, limit: Duration, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

/// A numbered test message: who sent it, on which stream, and its place in that stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Numbered {
    /// The sender's name.
    pub sender: String,
    /// A label for the stream (priority or "datagram").
    pub stream: String,
    /// 0, 1, 2, … per (sender, receiver, stream).
    pub index: u64,
    /// Padding, to vary sizes.
    pub body: Bytes,
}

impl Numbered {
    /// Message `index` of `stream` from `sender`, padded with `size` bytes derived from the
    /// index (so a receiver can check the content, not only the count).
    pub fn new(sender: &str, stream: &str, index: u64, size: usize) -> Self {
        Numbered {
            sender: sender.into(),
            stream: stream.into(),
            index,
            body: Bytes::from(vec![(index % 251) as u8; size]),
        }
    }
}

impl Message for Numbered {
    const TAG: Tag = Tag(0x1_0001);
}

/// A large opaque payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    /// The bytes.
    pub data: Bytes,
}

impl Message for Blob {
    const TAG: Tag = Tag(0x1_0002);
}

/// A bare QUIC client speaking cohort's ALPN with rustls, outside any messenger: it trusts
/// `ca_pem` and presents `identity` (certificate and key PEM) if given. Tests use it to
/// play peers that break the rules (wrong certificates, garbage frames).
pub fn raw_client(ca_pem: &str, identity: Option<&IssuedCertificate>) -> quinn::Endpoint {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots);
    let mut crypto = match identity {
        Some(issued) => {
            let chain = CertificateDer::pem_slice_iter(issued.certificate_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("certificate PEM");
            let key =
                PrivateKeyDer::from_pem_slice(issued.private_key_pem.as_bytes()).expect("key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client identity")
        }
        None => builder.with_no_client_auth(),
    };
    crypto.alpn_protocols = vec![cohort_transport::tls::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).expect("QUIC crypto");
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .expect("client endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

/// Installs a tracing subscriber for a test binary once (RUST_LOG filters; default warn).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
