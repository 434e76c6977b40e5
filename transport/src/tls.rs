//! Cluster TLS settings: from PEM files or text to ready-to-use QUIC crypto configs.
//!
//! This module owns the member's TLS identity and trust, modelled on Geode's `ssl-*`
//! properties: the CA certificates every member trusts (the truststore), the member's own
//! certificate chain and private key (the keystore), whether peers must present a
//! certificate, and whether a peer's certificate must name the address it claims.
//!
//! Data flows in one direction, once, at start-up:
//!
//! 1. [`TlsSettings`] names three [`PemSource`]s (files or in-memory PEM) and two switches.
//! 2. [`TlsSettings::load`] reads and parses them, then checks everything a handshake would
//!    later trip over (key matches certificate, certificate chains to the CA, is valid now,
//!    and allows both server and client use) so that a misconfigured member fails at start
//!    with a [`TlsError`] naming the setting and file, instead of failing every handshake.
//! 3. The result, [`ClusterTls`], holds the rustls configs wrapped for quinn, shared by every
//!    endpoint and connection of the member.
//! 4. After each handshake the messenger calls [`ClusterTls::verify_peer_address`] with the
//!    peer's certificate chain when endpoint identification is on, because rustls does not
//!    check names on client certificates and a member id is only known after the Hello.
//!
//! rustls always runs with the *ring* provider passed explicitly and TLS 1.3 only; the
//! process-wide default provider is never installed or consulted, so embedding applications
//! keep control of theirs. 0-RTT stays off (rustls' defaults), since replayed membership
//! messages would be harmful.

use std::borrow::Cow;
use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, InconsistentKeys,
    RootCertStore, ServerConfig, SignatureScheme,
};

/// The ALPN protocol id of cohort's QUIC protocol; it carries the protocol version, so
/// members of incompatible versions fail the handshake instead of misreading each other.
pub const ALPN: &[u8] = b"cohort/2";

/// Where a PEM setting comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PemSource {
    /// A PEM file, read when the settings are loaded.
    File(PathBuf),
    /// PEM text held in memory, for example from an in-memory CA.
    Inline(String),
}

impl fmt::Display for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Inline(_) => f.write_str("<in-memory>"),
        }
    }
}

impl fmt::Debug for PemSource {
    // Inline text may be a private key, so only its length is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Inline(text) => write!(f, "Inline(<{} bytes>)", text.len()),
        }
    }
}

/// Which TLS setting an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Setting {
    /// [`TlsSettings::ca`].
    Ca,
    /// [`TlsSettings::certificate`].
    Certificate,
    /// [`TlsSettings::private_key`].
    PrivateKey,
}

impl Setting {
    /// The setting's name as written in messages: "ca", "certificate" or "private-key".
    pub fn name(self) -> &'static str {
        match self {
            Self::Ca => "ca",
            Self::Certificate => "certificate",
            Self::PrivateKey => "private-key",
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The member's TLS settings (the analogue of Geode's `ssl-*` properties).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// CA certificate(s) every peer's certificate must chain to (the truststore), PEM.
    pub ca: PemSource,
    /// This member's certificate chain, end-entity certificate first, PEM. It must allow
    /// both TLS server and client use, since members accept and dial connections.
    pub certificate: PemSource,
    /// This member's private key: PKCS#8, SEC1 (EC) or PKCS#1 (RSA) PEM.
    pub private_key: PemSource,
    /// Mutual TLS: a dialing peer must present a certificate signed by the CA. Default
    /// `true`; `false` only lets peers without a certificate in (one that is presented is
    /// still verified).
    pub require_authentication: bool,
    /// Endpoint identification: a peer's certificate must name (as an IP subject
    /// alternative name) the IP address its member id claims. Default `false`, because
    /// certificates are often issued before addresses are known.
    pub endpoint_identification: bool,
}

impl TlsSettings {
    /// Settings read from PEM files, with the default switches (authentication required,
    /// no endpoint identification).
    pub fn from_files(
        ca: impl Into<PathBuf>,
        certificate: impl Into<PathBuf>,
        private_key: impl Into<PathBuf>,
    ) -> Self {
        Self::new(
            PemSource::File(ca.into()),
            PemSource::File(certificate.into()),
            PemSource::File(private_key.into()),
        )
    }

    /// Settings from PEM text in memory, with the default switches (authentication
    /// required, no endpoint identification).
    pub fn from_pem(
        ca: impl Into<String>,
        certificate: impl Into<String>,
        private_key: impl Into<String>,
    ) -> Self {
        Self::new(
            PemSource::Inline(ca.into()),
            PemSource::Inline(certificate.into()),
            PemSource::Inline(private_key.into()),
        )
    }

    fn new(ca: PemSource, certificate: PemSource, private_key: PemSource) -> Self {
        Self {
            ca,
            certificate,
            private_key,
            require_authentication: true,
            endpoint_identification: false,
        }
    }

    /// Reads and checks all settings and builds the QUIC crypto configs.
    ///
    /// Besides parsing, this verifies at the current time that the key matches the
    /// certificate and that the certificate chains to the CA, is valid now, and allows both
    /// server and client authentication, reporting each problem with its own
    /// [`TlsError`] variant.
    pub fn load(&self) -> Result<ClusterTls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(load_roots(&self.ca)?);
        let chain = load_chain(&self.certificate)?;
        let key = load_key(&self.private_key)?;
        check_key_matches(
            &chain,
            &key,
            &provider,
            &self.certificate,
            &self.private_key,
        )?;

        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|error| self.build_error("server certificate verifier", error))?;
        let client_verifier = {
            let builder =
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
            let builder = if self.require_authentication {
                builder
            } else {
                builder.allow_unauthenticated()
            };
            builder
                .build()
                .map_err(|error| self.build_error("client certificate verifier", error))?
        };
        check_chain(
            &chain,
            server_verifier.as_ref(),
            client_verifier.as_ref(),
            &self.certificate,
            &self.ca,
        )?;

        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|error| self.build_error("server config", error))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|error| self.build_error("server config", error))?;
        server.alpn_protocols = vec![ALPN.to_vec()];
        // No session resumption: every connection authenticates fully, so a rotated or
        // revoked certificate counts from the next connection on. Members reconnect rarely,
        // so the saved handshake work is not worth a second way in.
        server.send_tls13_tickets = 0;
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        let server = QuicServerConfig::try_from(server)
            .map_err(|error| self.build_error("QUIC server config", error))?;

        let verifier = MemberServerVerifier {
            inner: server_verifier,
            endpoint_identification: self.endpoint_identification,
        };
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|error| self.build_error("client config", error))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(chain, key)
            .map_err(|error| self.build_error("client config", error))?;
        client.alpn_protocols = vec![ALPN.to_vec()];
        client.resumption = rustls::client::Resumption::disabled();
        let client = QuicClientConfig::try_from(client)
            .map_err(|error| self.build_error("QUIC client config", error))?;

        tracing::debug!(
            ca = %self.ca,
            certificate = %self.certificate,
            require_authentication = self.require_authentication,
            endpoint_identification = self.endpoint_identification,
            "cluster TLS settings loaded"
        );
        Ok(ClusterTls {
            server: Arc::new(server),
            client: Arc::new(client),
            require_authentication: self.require_authentication,
            endpoint_identification: self.endpoint_identification,
        })
    }

    fn build_error(&self, step: &'static str, error: impl fmt::Display) -> TlsError {
        TlsError::Build {
            step,
            certificate: self.certificate.to_string(),
            private_key: self.private_key.to_string(),
            reason: error.to_string(),
        }
    }
}

/// Loaded, checked TLS settings: the QUIC crypto configs every endpoint of the member uses.
/// Cheap to clone.
#[derive(Clone)]
pub struct ClusterTls {
    server: Arc<QuicServerConfig>,
    client: Arc<QuicClientConfig>,
    require_authentication: bool,
    endpoint_identification: bool,
}

impl ClusterTls {
    /// The crypto config for accepting connections (quinn `ServerConfig::with_crypto`).
    pub fn server_crypto(&self) -> Arc<QuicServerConfig> {
        self.server.clone()
    }

    /// The crypto config for dialing peers (quinn `ClientConfig::new`). Dial with the
    /// peer's IP address as server name: with endpoint identification on, the peer's
    /// certificate must name that address; with it off, only the chain is checked.
    pub fn client_crypto(&self) -> Arc<QuicClientConfig> {
        self.client.clone()
    }

    /// Whether a peer's certificate must name the IP address its member id claims
    /// (see [`ClusterTls::verify_peer_address`]).
    pub fn endpoint_identification(&self) -> bool {
        self.endpoint_identification
    }

    /// Whether dialing peers must present a certificate.
    pub fn require_authentication(&self) -> bool {
        self.require_authentication
    }

    /// Endpoint identification for a peer: `Ok` if the end-entity certificate of
    /// `peer_chain` (quinn's `Connection::peer_identity()` downcast to
    /// `Vec<CertificateDer<'static>>`) names `ip` as an IP subject alternative name.
    ///
    /// Only the name is checked here; the chain was verified in the handshake. This always
    /// checks; callers consult [`ClusterTls::endpoint_identification`] to decide whether
    /// to call it. IPv4-mapped IPv6 addresses are compared as the IPv4 address, because a
    /// dual-stack socket reports IPv4 peers that way.
    pub fn verify_peer_address(
        &self,
        peer_chain: &[CertificateDer<'static>],
        ip: IpAddr,
    ) -> Result<(), TlsError> {
        let Some(end_entity) = peer_chain.first() else {
            return Err(TlsError::PeerCertificateMissing);
        };
        let parsed = ParsedCertificate::try_from(end_entity).map_err(|error| {
            TlsError::PeerCertificateInvalid {
                reason: error.to_string(),
            }
        })?;
        let address = ip.to_canonical();
        match rustls::client::verify_server_name(&parsed, &ServerName::IpAddress(address.into())) {
            Ok(()) => Ok(()),
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                presented,
                ..
            })) => Err(TlsError::AddressNotInCertificate { address, presented }),
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName)) => {
                Err(TlsError::AddressNotInCertificate {
                    address,
                    presented: Vec::new(),
                })
            }
            Err(error) => Err(TlsError::PeerCertificateInvalid {
                reason: error.to_string(),
            }),
        }
    }
}

impl fmt::Debug for ClusterTls {
    // The configs hold the private key; only the switches are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterTls")
            .field("require_authentication", &self.require_authentication)
            .field("endpoint_identification", &self.endpoint_identification)
            .finish_non_exhaustive()
    }
}

/// Why TLS settings could not be loaded, or why a peer failed endpoint identification.
///
/// Messages name the setting ("ca", "certificate", "private-key") and where it came from
/// (a file path or `<in-memory>`); private key material never appears.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file named by a setting does not exist.
    #[error("{setting} {origin}: file not found")]
    NotFound {
        /// The setting.
        setting: Setting,
        /// The file path.
        origin: String,
    },
    /// The file named by a setting exists but cannot be read (a directory, no permission,
    /// an I/O error).
    #[error("{setting} {origin}: cannot read file: {source}")]
    Unreadable {
        /// The setting.
        setting: Setting,
        /// The file path.
        origin: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The setting's contents are not PEM, or a PEM section is malformed.
    #[error("{setting} {origin}: not PEM: {reason}")]
    NotPem {
        /// The setting.
        setting: Setting,
        /// The file path or `<in-memory>`.
        origin: String,
        /// What is wrong with the text.
        reason: String,
    },
    /// The PEM holds no CERTIFICATE section (for example a key file given as certificate).
    #[error("{setting} {origin}: no certificate (CERTIFICATE section) in the PEM")]
    NoCertificate {
        /// The setting: [`Setting::Ca`] or [`Setting::Certificate`].
        setting: Setting,
        /// The file path or `<in-memory>`.
        origin: String,
    },
    /// The PEM holds no private key section.
    #[error(
        "{setting} {origin}: no private key (PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY \
         section) in the PEM"
    )]
    NoPrivateKey {
        /// The setting: [`Setting::PrivateKey`].
        setting: Setting,
        /// The file path or `<in-memory>`.
        origin: String,
    },
    /// A CA certificate cannot be parsed or used as a trust anchor.
    #[error("{setting} {origin}: unusable CA certificate: {reason}")]
    InvalidCaCertificate {
        /// The setting: [`Setting::Ca`].
        setting: Setting,
        /// The file path or `<in-memory>`.
        origin: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A certificate in the CA setting is not a CA certificate (its basic constraints do
    /// not say CA), for example a member certificate given as CA.
    #[error("{setting} {origin}: certificate {index} is not a CA certificate")]
    NotCa {
        /// The setting: [`Setting::Ca`].
        setting: Setting,
        /// The file path or `<in-memory>`.
        origin: String,
        /// Position of the offending certificate in the PEM, counting from 1.
        index: usize,
    },
    /// The member certificate cannot be parsed or is rejected for a reason without its
    /// own variant (for example an unsupported signature algorithm).
    #[error("{setting} {origin}: invalid certificate: {reason}")]
    InvalidCertificate {
        /// The setting: [`Setting::Certificate`].
        setting: Setting,
        /// The file path or `<in-memory>`.
        origin: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The private key cannot be used (unsupported algorithm or corrupt encoding).
    #[error("{setting} {origin}: unusable private key: {reason}")]
    UnsupportedKey {
        /// The setting: [`Setting::PrivateKey`].
        setting: Setting,
        /// The file path or `<in-memory>`.
        origin: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The private key does not belong to the certificate.
    #[error(
        "{setting} {origin}: private key does not match the public key of certificate \
         {certificate}"
    )]
    KeyMismatch {
        /// The setting: [`Setting::PrivateKey`].
        setting: Setting,
        /// Where the key came from: file path or `<in-memory>`.
        origin: String,
        /// Where the certificate came from: file path or `<in-memory>`.
        certificate: String,
    },
    /// The certificate is not signed by (does not chain to) any certificate in the CA
    /// setting.
    #[error("{setting} {origin}: certificate is not signed by the CA in ca {ca}")]
    NotSignedByCa {
        /// The setting: [`Setting::Certificate`].
        setting: Setting,
        /// The file path or `<in-memory>`.
        origin: String,
        /// Where the CA came from: file path or `<in-memory>`.
        ca: String,
    },
    /// The certificate (or one in its chain) has expired.
    #[error("{setting} {origin}: certificate has expired{}", time_note("not valid after", .not_after))]
    Expired {
        /// The setting: [`Setting::Certificate`].
        setting: Setting,
        /// The file path or `<in-memory>`.
        origin: String,
        /// The certificate's notAfter time, when known.
        not_after: Option<SystemTime>,
    },
    /// The certificate (or one in its chain) is not valid yet.
    #[error("{setting} {origin}: certificate is not valid yet{}", time_note("valid from", .not_before))]
    NotYetValid {
        /// The setting: [`Setting::Certificate`].
        setting: Setting,
        /// The file path or `<in-memory>`.
        origin: String,
        /// The certificate's notBefore time, when known.
        not_before: Option<SystemTime>,
    },
    /// The certificate's extended key usage does not allow a use every member needs.
    #[error("{setting} {origin}: certificate does not allow {usage} (extended key usage)")]
    MissingUsage {
        /// The setting: [`Setting::Certificate`].
        setting: Setting,
        /// The file path or `<in-memory>`.
        origin: String,
        /// The missing usage: "serverAuth" or "clientAuth".
        usage: &'static str,
    },
    /// Building a TLS or QUIC config failed after every check passed; this points to a bug
    /// rather than to the settings.
    #[error(
        "building the {step} for certificate {certificate} and private-key {private_key} \
         failed: {reason}"
    )]
    Build {
        /// The config being built.
        step: &'static str,
        /// Where the certificate came from: file path or `<in-memory>`.
        certificate: String,
        /// Where the key came from: file path or `<in-memory>`.
        private_key: String,
        /// The error from rustls or quinn.
        reason: String,
    },
    /// Endpoint identification: the peer presented no certificate.
    #[error("peer presented no certificate")]
    PeerCertificateMissing,
    /// Endpoint identification: the peer's certificate cannot be parsed.
    #[error("peer certificate cannot be parsed: {reason}")]
    PeerCertificateInvalid {
        /// Why it cannot be parsed.
        reason: String,
    },
    /// Endpoint identification: the peer's certificate does not name the IP address its
    /// member id claims.
    #[error("peer certificate does not name address {address} (it names: {})", presented_names(.presented))]
    AddressNotInCertificate {
        /// The address the peer claims.
        address: IpAddr,
        /// The names the certificate presents, when known.
        presented: Vec<String>,
    },
}

/// Verifies the server certificate of a peer being dialed.
///
/// Members dial each other by IP address, with that address as the server name. Without
/// endpoint identification the certificate need not name it, so a name mismatch alone is
/// accepted; the chain, validity and usage are still fully verified, because rustls checks
/// the name only after the chain has been verified.
#[derive(Debug)]
struct MemberServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    endpoint_identification: bool,
}

impl ServerCertVerifier for MemberServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(error) if !self.endpoint_identification && is_name_error(&error) => {
                Ok(ServerCertVerified::assertion())
            }
            result => result,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

fn is_name_error(error: &rustls::Error) -> bool {
    matches!(
        error,
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        )
    )
}

/// The bytes of a setting: the file's contents or the in-memory text.
fn read_source(setting: Setting, source: &PemSource) -> Result<Cow<'_, [u8]>, TlsError> {
    match source {
        PemSource::Inline(text) => Ok(Cow::Borrowed(text.as_bytes())),
        PemSource::File(path) => fs::read(path).map(Cow::Owned).map_err(|error| {
            let origin = source.to_string();
            if error.kind() == io::ErrorKind::NotFound {
                TlsError::NotFound { setting, origin }
            } else {
                TlsError::Unreadable {
                    setting,
                    origin,
                    source: error,
                }
            }
        }),
    }
}

/// Every PEM section of a setting, in order. Text outside sections is ignored, as PEM
/// allows; no sections at all means the input is not PEM.
fn read_sections(
    setting: Setting,
    source: &PemSource,
) -> Result<Vec<(SectionKind, Vec<u8>)>, TlsError> {
    let bytes = read_source(setting, source)?;
    let not_pem = |reason: String| TlsError::NotPem {
        setting,
        origin: source.to_string(),
        reason,
    };
    let sections = <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| not_pem(error.to_string()))?;
    if sections.is_empty() {
        return Err(not_pem(
            "no PEM certificate or key section found".to_owned(),
        ));
    }
    Ok(sections)
}

fn read_certificates(
    setting: Setting,
    source: &PemSource,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates: Vec<CertificateDer<'static>> = read_sections(setting, source)?
        .into_iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der))
        .collect();
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate {
            setting,
            origin: source.to_string(),
        });
    }
    Ok(certificates)
}

fn load_roots(source: &PemSource) -> Result<RootCertStore, TlsError> {
    let setting = Setting::Ca;
    let mut roots = RootCertStore::empty();
    for (position, certificate) in read_certificates(setting, source)?.into_iter().enumerate() {
        let index = position + 1;
        // The trust anchor store accepts any parseable certificate, so CA-ness is checked
        // separately: a member certificate given as CA would otherwise surface later as a
        // puzzling "not signed by the CA".
        match der::is_ca(&certificate) {
            Some(true) => {}
            Some(false) => {
                return Err(TlsError::NotCa {
                    setting,
                    origin: source.to_string(),
                    index,
                });
            }
            None => {
                return Err(TlsError::InvalidCaCertificate {
                    setting,
                    origin: source.to_string(),
                    reason: format!("certificate {index} is not a well-formed X.509 certificate"),
                });
            }
        }
        roots
            .add(certificate)
            .map_err(|error| TlsError::InvalidCaCertificate {
                setting,
                origin: source.to_string(),
                reason: format!("certificate {index}: {error}"),
            })?;
    }
    Ok(roots)
}

fn load_chain(source: &PemSource) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    read_certificates(Setting::Certificate, source)
}

fn load_key(source: &PemSource) -> Result<PrivateKeyDer<'static>, TlsError> {
    let setting = Setting::PrivateKey;
    read_sections(setting, source)?
        .into_iter()
        .find_map(|(kind, der)| PrivateKeyDer::from_pem(kind, der))
        .ok_or_else(|| TlsError::NoPrivateKey {
            setting,
            origin: source.to_string(),
        })
}

fn check_key_matches(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    provider: &CryptoProvider,
    certificate_source: &PemSource,
    key_source: &PemSource,
) -> Result<(), TlsError> {
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|error| TlsError::UnsupportedKey {
            setting: Setting::PrivateKey,
            origin: key_source.to_string(),
            reason: error.to_string(),
        })?;
    match CertifiedKey::new(chain.to_vec(), signing_key).keys_match() {
        // Unknown: the key type cannot report its public key, so there is nothing to
        // compare; the handshake's own signature check still catches a mismatch.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(()),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                setting: Setting::PrivateKey,
                origin: key_source.to_string(),
                certificate: certificate_source.to_string(),
            })
        }
        Err(error) => Err(TlsError::InvalidCertificate {
            setting: Setting::Certificate,
            origin: certificate_source.to_string(),
            reason: error.to_string(),
        }),
    }
}

/// Verifies the member's own chain now, as its peers will: as a server certificate (name
/// ignored) and as a client certificate, so a missing usage shows up for either role.
fn check_chain(
    chain: &[CertificateDer<'static>],
    server_verifier: &WebPkiServerVerifier,
    client_verifier: &dyn ClientCertVerifier,
    certificate_source: &PemSource,
    ca_source: &PemSource,
) -> Result<(), TlsError> {
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return Err(TlsError::NoCertificate {
            setting: Setting::Certificate,
            origin: certificate_source.to_string(),
        });
    };
    let now = UnixTime::now();
    // Any name will do: name errors are ignored, exactly as when dialing without endpoint
    // identification.
    let probe_name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into());
    match server_verifier.verify_server_cert(end_entity, intermediates, &probe_name, &[], now) {
        Ok(_) => {}
        Err(error) if is_name_error(&error) => {}
        Err(error) => {
            return Err(chain_error(
                error,
                "serverAuth",
                certificate_source,
                ca_source,
            ));
        }
    }
    client_verifier
        .verify_client_cert(end_entity, intermediates, now)
        .map(|_| ())
        .map_err(|error| chain_error(error, "clientAuth", certificate_source, ca_source))
}

/// Maps a verification error for the member certificate to its own variant; `usage` is the
/// role being verified when the error occurred.
fn chain_error(
    error: rustls::Error,
    usage: &'static str,
    certificate_source: &PemSource,
    ca_source: &PemSource,
) -> TlsError {
    let setting = Setting::Certificate;
    let origin = certificate_source.to_string();
    let rustls::Error::InvalidCertificate(certificate_error) = error else {
        return TlsError::InvalidCertificate {
            setting,
            origin,
            reason: error.to_string(),
        };
    };
    match certificate_error {
        CertificateError::UnknownIssuer | CertificateError::BadSignature => {
            TlsError::NotSignedByCa {
                setting,
                origin,
                ca: ca_source.to_string(),
            }
        }
        CertificateError::Expired => TlsError::Expired {
            setting,
            origin,
            not_after: None,
        },
        CertificateError::ExpiredContext { not_after, .. } => TlsError::Expired {
            setting,
            origin,
            not_after: to_system_time(not_after),
        },
        CertificateError::NotValidYet => TlsError::NotYetValid {
            setting,
            origin,
            not_before: None,
        },
        CertificateError::NotValidYetContext { not_before, .. } => TlsError::NotYetValid {
            setting,
            origin,
            not_before: to_system_time(not_before),
        },
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            TlsError::MissingUsage {
                setting,
                origin,
                usage,
            }
        }
        other => TlsError::InvalidCertificate {
            setting,
            origin,
            reason: rustls::Error::InvalidCertificate(other).to_string(),
        },
    }
}

fn to_system_time(time: UnixTime) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_secs(time.as_secs()))
}

/// " (LABEL 2030-01-31T12:00:00Z)" when the time is known, else nothing.
fn time_note(label: &str, time: &Option<SystemTime>) -> String {
    match time.and_then(|time| time.duration_since(UNIX_EPOCH).ok()) {
        Some(since_epoch) => format!(" ({label} {})", format_utc(since_epoch.as_secs())),
        None => String::new(),
    }
}

fn presented_names(names: &[String]) -> String {
    if names.is_empty() {
        "no names".to_owned()
    } else {
        names.join(", ")
    }
}

/// Formats seconds since the Unix epoch as an RFC 3339 UTC time.
fn format_utc(seconds: u64) -> String {
    let days = seconds / 86_400;
    let of_day = seconds % 86_400;
    let (hour, minute, second) = (of_day / 3600, of_day % 3600 / 60, of_day % 60);
    // Civil date from a day count (H. Hinnant's algorithm): eras of 400 years starting on
    // March 1st, which puts the leap day at the end of each year.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

/// Whether a DER certificate's basic constraints make it a CA: `Some(false)` when the
/// extension is absent or says no, `None` when the DER cannot be read. This is the reader
/// [`TlsSettings::load`] applies to each certificate of the CA file; it is public for the
/// fuzz target only.
#[doc(hidden)]
pub fn der_is_ca(certificate: &[u8]) -> Option<bool> {
    der::is_ca(certificate)
}

/// Just enough DER reading to find a certificate's basic constraints, which rustls does
/// not expose for trust anchors.
mod der {
    const SEQUENCE: u8 = 0x30;
    const BOOLEAN: u8 = 0x01;
    const OCTET_STRING: u8 = 0x04;
    const OID: u8 = 0x06;
    /// `[3] EXPLICIT Extensions` inside TBSCertificate.
    const EXTENSIONS: u8 = 0xa3;
    /// id-ce-basicConstraints, 2.5.29.19.
    const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];

    /// Splits one tag-length-value off the front: `(tag, contents, rest)`. Only
    /// single-byte tags and definite lengths, which DER certificates always use.
    fn split(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (length, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let (bytes, rest) = rest.split_at(count);
            let length = bytes
                .iter()
                .fold(0usize, |length, byte| (length << 8) | usize::from(*byte));
            (length, rest)
        };
        if rest.len() < length {
            return None;
        }
        let (contents, rest) = rest.split_at(length);
        Some((tag, contents, rest))
    }

    /// Whether the certificate's basic constraints say it is a CA: `Some(false)` when the
    /// extension is absent or says no, `None` when the DER cannot be read.
    pub(super) fn is_ca(certificate: &[u8]) -> Option<bool> {
        let (SEQUENCE, certificate, _) = split(certificate)? else {
            return None;
        };
        let (SEQUENCE, mut tbs, _) = split(certificate)? else {
            return None;
        };
        let mut extensions = None;
        while !tbs.is_empty() {
            let (tag, contents, rest) = split(tbs)?;
            if tag == EXTENSIONS {
                extensions = Some(contents);
                break;
            }
            tbs = rest;
        }
        let Some(extensions) = extensions else {
            return Some(false);
        };
        let (SEQUENCE, mut list, _) = split(extensions)? else {
            return None;
        };
        while !list.is_empty() {
            let (SEQUENCE, extension, rest) = split(list)? else {
                return None;
            };
            list = rest;
            let (OID, oid, mut fields) = split(extension)? else {
                return None;
            };
            if oid != BASIC_CONSTRAINTS {
                continue;
            }
            let (mut tag, mut value, rest) = split(fields)?;
            if tag == BOOLEAN {
                // The "critical" flag; the value follows.
                fields = rest;
                (tag, value, _) = split(fields)?;
            }
            if tag != OCTET_STRING {
                return None;
            }
            let (SEQUENCE, constraints, _) = split(value)? else {
                return None;
            };
            return Some(match split(constraints) {
                Some((BOOLEAN, flag, _)) => flag.first().is_some_and(|byte| *byte != 0),
                // cA defaults to FALSE when omitted.
                _ => false,
            });
        }
        Some(false)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn split_rejects_truncated_input() {
            assert_eq!(split(&[]), None);
            assert_eq!(split(&[0x30]), None);
            assert_eq!(split(&[0x30, 0x02, 0x00]), None);
            assert_eq!(split(&[0x30, 0x81]), None);
            assert_eq!(split(&[0x30, 0x80]), None);
            assert_eq!(
                split(&[0x04, 0x01, 0xaa, 0xbb]),
                Some((0x04, &[0xaa][..], &[0xbb][..]))
            );
            assert_eq!(
                split(&[0x04, 0x81, 0x01, 0xaa]),
                Some((0x04, &[0xaa][..], &[][..]))
            );
        }

        #[test]
        fn garbage_is_not_a_certificate() {
            assert_eq!(is_ca(b""), None);
            assert_eq!(is_ca(b"\x30\x03\x02\x01\x01"), None);
            assert_eq!(is_ca(&[0xff; 64]), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_utc(253_402_300_799), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn maps_usage_errors_to_missing_usage() {
        // A certificate lacking one usage cannot be made with cohort-certs, so the mapping
        // from rustls' error is checked directly.
        let source = PemSource::File(PathBuf::from("member.pem"));
        let ca = PemSource::File(PathBuf::from("ca.pem"));
        let error = rustls::Error::InvalidCertificate(CertificateError::InvalidPurposeContext {
            required: rustls::ExtendedKeyPurpose::ClientAuth,
            presented: vec![rustls::ExtendedKeyPurpose::ServerAuth],
        });
        let mapped = chain_error(error, "clientAuth", &source, &ca);
        assert!(
            matches!(
                mapped,
                TlsError::MissingUsage {
                    setting: Setting::Certificate,
                    usage: "clientAuth",
                    ..
                }
            ),
            "{mapped:?}"
        );
        let message = mapped.to_string();
        assert!(message.contains("certificate member.pem"), "{message}");
        assert!(message.contains("clientAuth"), "{message}");
    }

    #[test]
    fn inline_sources_hide_their_text() {
        let source = PemSource::Inline("-----BEGIN PRIVATE KEY-----".to_owned());
        assert_eq!(source.to_string(), "<in-memory>");
        assert!(!format!("{source:?}").contains("PRIVATE"));
    }
}
