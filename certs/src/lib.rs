//! cohort-certs: the cluster's certificate authority and its member certificates.
//!
//! This crate owns certificate *generation*; checking certificates at run time belongs to
//! the transport's TLS settings. Data flows one way:
//!
//! 1. A [`CertificateAuthority`] is generated once ([`CertificateAuthority::generate`], or
//!    [`CertificateAuthority::ephemeral`] for an in-memory cluster and for tests), or loaded
//!    from the PEM files written earlier ([`CertificateAuthority::from_pem`],
//!    [`CertificateAuthority::load_from_dir`]).
//! 2. For each member a [`MemberRequest`] names it and lists the addresses its certificate
//!    must cover; [`CertificateAuthority::issue`] turns it into an [`IssuedCertificate`]:
//!    a fresh ECDSA P-256 key and a certificate valid for both TLS server and client use,
//!    because every member both accepts and dials connections.
//! 3. The PEM text goes to the member in memory or through files
//!    ([`IssuedCertificate::write_to_dir`]); the `cohort-certs` command-line tool does the
//!    same for operators.
//!
//! Private keys are held as PEM strings and are never printed by `Debug`.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use time::OffsetDateTime;

/// File name of the CA certificate inside a CA directory.
pub const CA_CERTIFICATE_FILE: &str = "ca.pem";

/// File name of the CA private key inside a CA directory.
pub const CA_PRIVATE_KEY_FILE: &str = "ca-key.pem";

/// Common name of the CA made by [`CertificateAuthority::ephemeral`].
pub const EPHEMERAL_CA_NAME: &str = "cohort ephemeral CA";

/// How long the CA made by [`CertificateAuthority::ephemeral`] is valid.
pub const EPHEMERAL_CA_VALIDITY: Duration = Duration::from_secs(24 * 60 * 60);

/// How far into the past certificates are back-dated, so that a member whose clock is a
/// little behind the issuer's still accepts a certificate issued just now.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(60 * 60);

/// Why generating, loading, issuing or writing certificates failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// Reading, writing or creating a file or directory failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done: "reading", "writing" or "creating directory".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A CA file already exists; replacing a cluster CA would invalidate every member
    /// certificate it issued, so it is never overwritten.
    #[error("{} already exists; remove it first if the cluster CA is really to be replaced", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// Generating a key or signing a certificate failed.
    #[error("{step} failed: {source}")]
    Generate {
        /// The step that failed, for example "generating the CA key".
        step: &'static str,
        /// The error from the certificate generator.
        #[source]
        source: rcgen::Error,
    },
    /// A certificate or key could not be parsed from its PEM text.
    #[error("{what} is not a usable PEM {kind}: {reason}")]
    Pem {
        /// Where the text came from: a file path or a description such as "CA certificate".
        what: String,
        /// What the text should have held: "certificate" or "private key".
        kind: &'static str,
        /// Why it could not be used.
        reason: String,
    },
    /// The CA private key does not belong to the CA certificate.
    #[error("CA private key {key} does not match the public key in CA certificate {certificate}")]
    KeyMismatch {
        /// Where the certificate came from.
        certificate: String,
        /// Where the key came from.
        key: String,
    },
    /// The certificate offered as a CA may not sign certificates (its key usage lacks
    /// keyCertSign).
    #[error("{what} is not a CA certificate: its key usage does not allow signing certificates")]
    NotCa {
        /// Where the certificate came from.
        what: String,
    },
    /// A common name, DNS name or file name is empty or cannot be used.
    #[error("invalid {kind} {name:?}: {reason}")]
    InvalidName {
        /// What kind of name: "common name", "DNS name" or "file name".
        kind: &'static str,
        /// The name as given.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A validity date cannot be written into a certificate (before year 0, after 9999, or
    /// beyond what the system clock can represent).
    #[error("{what} is out of the range a certificate can express (years 0 to 9999)")]
    DateOutOfRange {
        /// Which date: "not_before" or "not_after".
        what: &'static str,
    },
    /// The validity period is empty: `not_after` is not later than `not_before`.
    #[error("empty validity period: not_after must be later than not_before")]
    EmptyValidity,
}

/// The cluster's certificate authority: its certificate, its key, and the issuer that
/// signs member certificates with them.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    certificate_pem: String,
    private_key_pem: String,
}

impl CertificateAuthority {
    /// Generates a new self-signed CA with an ECDSA P-256 key, valid from an hour ago (to
    /// tolerate clock skew between members) until `valid_for` from now.
    pub fn generate(common_name: &str, valid_for: Duration) -> Result<Self, CertError> {
        check_common_name(common_name)?;
        let (not_before, not_after) = validity_from_now(valid_for)?;

        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = to_offset(not_before, "not_before")?;
        params.not_after = to_offset(not_after, "not_after")?;
        check_order(&params)?;

        let key = KeyPair::generate().map_err(|source| CertError::Generate {
            step: "generating the CA key",
            source,
        })?;
        let certificate = params
            .self_signed(&key)
            .map_err(|source| CertError::Generate {
                step: "self-signing the CA certificate",
                source,
            })?;
        let private_key_pem = key.serialize_pem();
        Ok(Self {
            certificate_pem: certificate.pem(),
            private_key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Generates an in-memory CA for an embedded cluster or a test: common name
    /// [`EPHEMERAL_CA_NAME`], valid for [`EPHEMERAL_CA_VALIDITY`]. Generate it once and issue
    /// every member's certificate from it.
    pub fn ephemeral() -> Result<Self, CertError> {
        Self::generate(EPHEMERAL_CA_NAME, EPHEMERAL_CA_VALIDITY)
    }

    /// Loads an existing CA from its PEM certificate and PEM (PKCS#8) private key, for
    /// example the contents of files written by [`CertificateAuthority::write_to_dir`].
    ///
    /// Fails if the key does not belong to the certificate, or if the certificate's key
    /// usage forbids signing certificates.
    pub fn from_pem(certificate_pem: &str, private_key_pem: &str) -> Result<Self, CertError> {
        Self::from_pem_described(
            certificate_pem,
            "CA certificate".to_owned(),
            private_key_pem,
            "CA private key".to_owned(),
        )
    }

    /// Loads the CA written into `dir` by [`CertificateAuthority::write_to_dir`]
    /// ([`CA_CERTIFICATE_FILE`] and [`CA_PRIVATE_KEY_FILE`]).
    pub fn load_from_dir(dir: &Path) -> Result<Self, CertError> {
        let certificate_path = dir.join(CA_CERTIFICATE_FILE);
        let key_path = dir.join(CA_PRIVATE_KEY_FILE);
        let certificate_pem = read_file(&certificate_path)?;
        let private_key_pem = read_file(&key_path)?;
        Self::from_pem_described(
            &certificate_pem,
            certificate_path.display().to_string(),
            &private_key_pem,
            key_path.display().to_string(),
        )
    }

    fn from_pem_described(
        certificate_pem: &str,
        certificate_what: String,
        private_key_pem: &str,
        key_what: String,
    ) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(private_key_pem).map_err(|error| CertError::Pem {
            what: key_what.clone(),
            kind: "private key",
            reason: error.to_string(),
        })?;
        let certificate_der =
            pem_certificate_der(certificate_pem).ok_or_else(|| CertError::Pem {
                what: certificate_what.clone(),
                kind: "certificate",
                reason: "no CERTIFICATE section".to_owned(),
            })?;
        // The certificate carries the public key as a bit string of exactly these bytes, so
        // their absence proves the pair does not belong together. Catching this here saves an
        // operator from issuing certificates that no member will accept.
        if !contains(&certificate_der, key.der_bytes()) {
            return Err(CertError::KeyMismatch {
                certificate: certificate_what,
                key: key_what,
            });
        }
        let issuer =
            Issuer::from_ca_cert_pem(certificate_pem, key).map_err(|error| CertError::Pem {
                what: certificate_what.clone(),
                kind: "certificate",
                reason: error.to_string(),
            })?;
        // An empty list means the certificate has no key usage extension, which X.509 reads
        // as "any usage", so only an explicit list without keyCertSign is refused.
        let usages = issuer.key_usages();
        if !usages.is_empty() && !usages.contains(&KeyUsagePurpose::KeyCertSign) {
            return Err(CertError::NotCa {
                what: certificate_what,
            });
        }
        Ok(Self {
            issuer,
            certificate_pem: certificate_pem.to_owned(),
            private_key_pem: private_key_pem.to_owned(),
        })
    }

    /// The CA certificate in PEM: what every member trusts.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The CA private key in PEM (PKCS#8). Keep it away from members.
    pub fn private_key_pem(&self) -> &str {
        &self.private_key_pem
    }

    /// Issues a member certificate with a fresh ECDSA P-256 key.
    ///
    /// The certificate carries both the serverAuth and clientAuth extended key usages
    /// (members accept and dial connections), the digitalSignature key usage, the request's
    /// IP addresses and DNS names as subject alternative names, the request's name as common
    /// name, and exactly the request's validity period.
    pub fn issue(&self, request: &MemberRequest) -> Result<IssuedCertificate, CertError> {
        check_common_name(&request.name)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&request.name);
        params.subject_alt_names = subject_alt_names(request)?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        // Lets verifiers pick the right CA certificate when several are trusted, e.g. while
        // a cluster rolls over to a new CA.
        params.use_authority_key_identifier_extension = true;
        params.not_before = to_offset(request.not_before, "not_before")?;
        params.not_after = to_offset(request.not_after, "not_after")?;
        check_order(&params)?;

        let key = KeyPair::generate().map_err(|source| CertError::Generate {
            step: "generating the member key",
            source,
        })?;
        let certificate =
            params
                .signed_by(&key, &self.issuer)
                .map_err(|source| CertError::Generate {
                    step: "signing the member certificate",
                    source,
                })?;
        Ok(IssuedCertificate {
            certificate_pem: certificate.pem(),
            private_key_pem: key.serialize_pem(),
        })
    }

    /// Writes [`CA_CERTIFICATE_FILE`] and [`CA_PRIVATE_KEY_FILE`] into `dir`, creating it if
    /// missing. The key file is readable by its owner only (mode 0600 on Unix).
    ///
    /// Existing CA files are never overwritten ([`CertError::AlreadyExists`]): replacing the
    /// CA would invalidate every certificate it issued.
    pub fn write_to_dir(&self, dir: &Path) -> Result<(), CertError> {
        create_dir(dir)?;
        let certificate_path = dir.join(CA_CERTIFICATE_FILE);
        let key_path = dir.join(CA_PRIVATE_KEY_FILE);
        // Checked up front so that a refusal leaves neither file half-replaced.
        for path in [&certificate_path, &key_path] {
            if path.exists() {
                return Err(CertError::AlreadyExists { path: path.clone() });
            }
        }
        write_file(
            &certificate_path,
            &self.certificate_pem,
            Mode::Public,
            Create::New,
        )?;
        write_file(&key_path, &self.private_key_pem, Mode::Secret, Create::New)
    }
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("issuer", &self.issuer)
            .field("private_key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// What a member certificate should say: its name, the addresses it covers and when it is
/// valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRequest {
    /// The member's name, written as the certificate's common name.
    pub name: String,
    /// IP addresses the certificate covers (IP subject alternative names). Endpoint
    /// identification checks the address a member claims against these.
    pub ip_addresses: Vec<IpAddr>,
    /// DNS names the certificate covers (DNS subject alternative names).
    pub dns_names: Vec<String>,
    /// Start of the validity period.
    pub not_before: SystemTime,
    /// End of the validity period.
    pub not_after: SystemTime,
}

impl MemberRequest {
    /// A request for `name`, valid from an hour ago (to tolerate clock skew) until
    /// `valid_for` from now, with no addresses yet.
    ///
    /// If `valid_for` reaches beyond what the system clock can represent, the validity
    /// period is left empty and [`CertificateAuthority::issue`] refuses it.
    pub fn new(name: impl Into<String>, valid_for: Duration) -> Self {
        let now = SystemTime::now();
        let not_before = now.checked_sub(CLOCK_SKEW_ALLOWANCE).unwrap_or(now);
        let not_after = now.checked_add(valid_for).unwrap_or(not_before);
        Self {
            name: name.into(),
            ip_addresses: Vec::new(),
            dns_names: Vec::new(),
            not_before,
            not_after,
        }
    }

    /// Adds an IP address the certificate covers.
    #[must_use]
    pub fn ip(mut self, address: IpAddr) -> Self {
        self.ip_addresses.push(address);
        self
    }

    /// Adds a DNS name the certificate covers.
    #[must_use]
    pub fn dns(mut self, name: impl Into<String>) -> Self {
        self.dns_names.push(name.into());
        self
    }

    /// Sets the validity period explicitly (certificates have one-second resolution).
    #[must_use]
    pub fn validity(mut self, not_before: SystemTime, not_after: SystemTime) -> Self {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }
}

/// A member certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The member certificate (end entity only; members trust the CA certificate itself).
    pub certificate_pem: String,
    /// The member's private key (PKCS#8).
    pub private_key_pem: String,
}

impl IssuedCertificate {
    /// Writes `NAME.pem` (certificate) and `NAME-key.pem` (key, mode 0600 on Unix) into
    /// `dir`, creating it if missing and replacing earlier files of the same name, and
    /// returns their paths (certificate first).
    pub fn write_to_dir(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), CertError> {
        check_file_stem(name)?;
        create_dir(dir)?;
        let certificate_path = dir.join(format!("{name}.pem"));
        let key_path = dir.join(format!("{name}-key.pem"));
        write_file(
            &certificate_path,
            &self.certificate_pem,
            Mode::Public,
            Create::Replace,
        )?;
        write_file(
            &key_path,
            &self.private_key_pem,
            Mode::Secret,
            Create::Replace,
        )?;
        Ok((certificate_path, key_path))
    }
}

impl fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("certificate_pem", &self.certificate_pem)
            .field("private_key_pem", &"<redacted>")
            .finish()
    }
}

/// Who may read a written file.
#[derive(Clone, Copy)]
enum Mode {
    /// Default permissions: certificates are public.
    Public,
    /// Owner only: private keys.
    Secret,
}

/// Whether a written file may replace an existing one.
#[derive(Clone, Copy)]
enum Create {
    New,
    Replace,
}

fn create_dir(dir: &Path) -> Result<(), CertError> {
    fs::create_dir_all(dir).map_err(|source| CertError::Io {
        action: "creating directory",
        path: dir.to_path_buf(),
        source,
    })
}

fn read_file(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })
}

fn write_file(path: &Path, contents: &str, mode: Mode, create: Create) -> Result<(), CertError> {
    let io_error = |source| CertError::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true);
    match create {
        Create::New => options.create_new(true),
        Create::Replace => options.create(true).truncate(true),
    };
    #[cfg(unix)]
    if let Mode::Secret = mode {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            CertError::AlreadyExists {
                path: path.to_path_buf(),
            }
        } else {
            io_error(source)
        }
    })?;
    // The mode given at open applies only to a newly created file; a replaced key file
    // must lose any wider permissions before the key is written into it.
    #[cfg(unix)]
    if let Mode::Secret = mode {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_error)?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    file.write_all(contents.as_bytes()).map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn check_common_name(name: &str) -> Result<(), CertError> {
    let reason = if name.trim().is_empty() {
        "must not be empty"
    } else if name.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return Ok(());
    };
    Err(CertError::InvalidName {
        kind: "common name",
        name: name.to_owned(),
        reason,
    })
}

fn check_file_stem(name: &str) -> Result<(), CertError> {
    let reason = if name.is_empty() {
        "must not be empty"
    } else if name == "." || name == ".." {
        "must not be . or .."
    } else if name.contains(['/', '\\', '\0']) {
        "must not contain path separators or NUL"
    } else {
        return Ok(());
    };
    Err(CertError::InvalidName {
        kind: "file name",
        name: name.to_owned(),
        reason,
    })
}

fn subject_alt_names(request: &MemberRequest) -> Result<Vec<SanType>, CertError> {
    let mut names: Vec<SanType> = request
        .ip_addresses
        .iter()
        .map(|address| SanType::IpAddress(*address))
        .collect();
    for dns_name in &request.dns_names {
        let invalid = |reason| CertError::InvalidName {
            kind: "DNS name",
            name: dns_name.clone(),
            reason,
        };
        if dns_name.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if !dns_name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'*'))
        {
            return Err(invalid(
                "may contain only ASCII letters, digits, '-', '.' and '*'",
            ));
        }
        let ia5 = Ia5String::try_from(dns_name.as_str())
            .map_err(|_| invalid("not an IA5 (ASCII) string"))?;
        names.push(SanType::DnsName(ia5));
    }
    Ok(names)
}

/// Validity from an hour ago until `valid_for` from now.
fn validity_from_now(valid_for: Duration) -> Result<(SystemTime, SystemTime), CertError> {
    let now = SystemTime::now();
    let not_before = now
        .checked_sub(CLOCK_SKEW_ALLOWANCE)
        .ok_or(CertError::DateOutOfRange { what: "not_before" })?;
    let not_after = now
        .checked_add(valid_for)
        .ok_or(CertError::DateOutOfRange { what: "not_after" })?;
    Ok((not_before, not_after))
}

/// Converts to the certificate generator's date type, truncated to whole seconds (what
/// X.509 stores) and limited to the years X.509 can write (the encoder panics outside).
fn to_offset(time: SystemTime, what: &'static str) -> Result<OffsetDateTime, CertError> {
    let out_of_range = CertError::DateOutOfRange { what };
    let seconds = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).ok(),
        Err(before) => i64::try_from(before.duration().as_secs())
            .ok()
            .map(|seconds| -seconds),
    };
    let date = seconds
        .and_then(|seconds| OffsetDateTime::from_unix_timestamp(seconds).ok())
        .ok_or(CertError::DateOutOfRange { what })?;
    if (0..=9999).contains(&date.year()) {
        Ok(date)
    } else {
        Err(out_of_range)
    }
}

fn check_order(params: &CertificateParams) -> Result<(), CertError> {
    if params.not_after > params.not_before {
        Ok(())
    } else {
        Err(CertError::EmptyValidity)
    }
}

/// The DER bytes of the first CERTIFICATE section of `pem`, or `None` if there is none or it
/// is not valid base64.
fn pem_certificate_der(pem: &str) -> Option<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.find(BEGIN)? + BEGIN.len();
    let length = pem.get(start..)?.find(END)?;
    decode_base64(pem.get(start..start + length)?)
}

/// Standard-alphabet base64 with optional padding; whitespace (PEM line breaks) is skipped.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn value(symbol: u8) -> Option<u32> {
        let value = match symbol {
            b'A'..=b'Z' => symbol - b'A',
            b'a'..=b'z' => symbol - b'a' + 26,
            b'0'..=b'9' => symbol - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        Some(u32::from(value))
    }

    let symbols: Vec<u8> = text
        .bytes()
        .filter(|byte| !byte.is_ascii_whitespace())
        .collect();
    let data = symbols
        .strip_suffix(b"==")
        .or_else(|| symbols.strip_suffix(b"="))
        .unwrap_or(&symbols);
    if data.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() / 4 * 3 + 2);
    for chunk in data.chunks(4) {
        let mut bits = 0u32;
        for symbol in chunk {
            bits = (bits << 6) | value(*symbol)?;
        }
        // A short final chunk of n symbols carries n - 1 whole bytes.
        bits <<= 6 * (4 - chunk.len() as u32);
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    fn member(ca: &CertificateAuthority) -> IssuedCertificate {
        let request = MemberRequest::new("member-1", DAY)
            .ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .ip(IpAddr::V6(Ipv6Addr::LOCALHOST))
            .dns("member-1.cohort.test");
        ca.issue(&request).expect("issue")
    }

    fn has_single_section(pem: &str, label: &str) -> bool {
        pem.starts_with(&format!("-----BEGIN {label}-----"))
            && pem.trim_end().ends_with(&format!("-----END {label}-----"))
            && pem.matches("-----BEGIN").count() == 1
    }

    #[test]
    fn generated_ca_and_member_are_pem() {
        let ca = CertificateAuthority::generate("test CA", DAY).expect("generate");
        assert!(has_single_section(ca.certificate_pem(), "CERTIFICATE"));
        assert!(has_single_section(ca.private_key_pem(), "PRIVATE KEY"));

        let issued = member(&ca);
        assert!(has_single_section(&issued.certificate_pem, "CERTIFICATE"));
        assert!(has_single_section(&issued.private_key_pem, "PRIVATE KEY"));
        assert_ne!(issued.private_key_pem, ca.private_key_pem());
    }

    #[test]
    fn from_pem_round_trips_and_keeps_issuing() {
        let ca = CertificateAuthority::ephemeral().expect("generate");
        let loaded = CertificateAuthority::from_pem(ca.certificate_pem(), ca.private_key_pem())
            .expect("from_pem");
        assert_eq!(loaded.certificate_pem(), ca.certificate_pem());
        assert_eq!(loaded.private_key_pem(), ca.private_key_pem());
        // The issuer name must be the same for certificates to chain to the CA certificate;
        // full chain verification of such certificates is in the transport's TLS tests.
        let name = |ca: &CertificateAuthority| {
            let debug = format!("{:?}", ca.issuer);
            debug
                .split("key_identifier_method")
                .next()
                .map(str::to_owned)
        };
        assert_eq!(name(&loaded), name(&ca));
        member(&loaded);
    }

    #[test]
    fn from_pem_rejects_a_foreign_key() {
        let ca = CertificateAuthority::ephemeral().expect("generate");
        let other = CertificateAuthority::ephemeral().expect("generate");
        let error = CertificateAuthority::from_pem(ca.certificate_pem(), other.private_key_pem())
            .expect_err("mismatch");
        assert!(matches!(error, CertError::KeyMismatch { .. }), "{error}");
    }

    #[test]
    fn from_pem_rejects_a_member_certificate() {
        let ca = CertificateAuthority::ephemeral().expect("generate");
        let issued = member(&ca);
        let error =
            CertificateAuthority::from_pem(&issued.certificate_pem, &issued.private_key_pem)
                .expect_err("not a CA");
        assert!(matches!(error, CertError::NotCa { .. }), "{error}");
    }

    #[test]
    fn from_pem_rejects_garbage() {
        let ca = CertificateAuthority::ephemeral().expect("generate");
        let error =
            CertificateAuthority::from_pem("not pem", ca.private_key_pem()).expect_err("garbage");
        assert!(
            matches!(
                error,
                CertError::Pem {
                    kind: "certificate",
                    ..
                }
            ),
            "{error}"
        );
        let error = CertificateAuthority::from_pem(ca.certificate_pem(), ca.certificate_pem())
            .expect_err("certificate as key");
        assert!(
            matches!(
                error,
                CertError::Pem {
                    kind: "private key",
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn debug_never_shows_private_keys() {
        let ca = CertificateAuthority::ephemeral().expect("generate");
        let issued = member(&ca);
        for debug in [format!("{ca:?}"), format!("{issued:?}")] {
            assert!(!debug.contains("PRIVATE KEY"), "{debug}");
            assert!(debug.contains("<redacted>"), "{debug}");
        }
    }

    #[test]
    fn rejects_bad_names_and_dates() {
        let ca = CertificateAuthority::ephemeral().expect("generate");
        assert!(matches!(
            CertificateAuthority::generate(" ", DAY),
            Err(CertError::InvalidName { .. })
        ));
        assert!(matches!(
            ca.issue(&MemberRequest::new("", DAY)),
            Err(CertError::InvalidName { .. })
        ));
        assert!(matches!(
            ca.issue(&MemberRequest::new("m", DAY).dns("bad name")),
            Err(CertError::InvalidName { .. })
        ));
        let now = SystemTime::now();
        assert!(matches!(
            ca.issue(&MemberRequest::new("m", DAY).validity(now, now)),
            Err(CertError::EmptyValidity)
        ));
        assert!(matches!(
            ca.issue(&MemberRequest::new("m", Duration::MAX)),
            Err(CertError::EmptyValidity)
        ));
        // Year 11970: past what X.509 dates can hold.
        let far = UNIX_EPOCH + Duration::from_secs(10_000 * 366 * 24 * 60 * 60);
        assert!(matches!(
            ca.issue(&MemberRequest::new("m", DAY).validity(now, far)),
            Err(CertError::DateOutOfRange { what: "not_after" })
        ));
        assert!(matches!(
            CertificateAuthority::generate("ca", Duration::MAX),
            Err(CertError::DateOutOfRange { .. })
        ));
    }

    #[test]
    fn writes_and_loads_a_directory() {
        let dir = std::env::temp_dir().join(format!("cohort-certs-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let ca = CertificateAuthority::ephemeral().expect("generate");
        ca.write_to_dir(&dir).expect("write");
        assert!(matches!(
            ca.write_to_dir(&dir),
            Err(CertError::AlreadyExists { .. })
        ));
        let loaded = CertificateAuthority::load_from_dir(&dir).expect("load");
        assert_eq!(loaded.certificate_pem(), ca.certificate_pem());

        let issued = member(&loaded);
        let (certificate, key) = issued.write_to_dir(&dir, "member-1").expect("write");
        assert_eq!(certificate, dir.join("member-1.pem"));
        assert_eq!(key, dir.join("member-1-key.pem"));
        // Replacing is allowed for member files (re-issuing is routine).
        issued.write_to_dir(&dir, "member-1").expect("rewrite");
        assert_eq!(
            fs::read_to_string(&key).expect("read"),
            issued.private_key_pem
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for path in [dir.join(CA_PRIVATE_KEY_FILE), key] {
                let mode = fs::metadata(&path).expect("metadata").permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", path.display());
            }
        }
        assert!(matches!(
            issued.write_to_dir(&dir, "../escape"),
            Err(CertError::InvalidName { .. })
        ));
        fs::remove_dir_all(&dir).expect("cleanup");

        let error = CertificateAuthority::load_from_dir(&dir).expect_err("gone");
        assert!(error.to_string().contains(CA_CERTIFICATE_FILE), "{error}");
    }

    #[test]
    fn base64_decodes_all_padding_lengths() {
        assert_eq!(decode_base64("").as_deref(), Some(&b""[..]));
        assert_eq!(decode_base64("Zg==").as_deref(), Some(&b"f"[..]));
        assert_eq!(decode_base64("Zm8=").as_deref(), Some(&b"fo"[..]));
        assert_eq!(decode_base64("Zm9v").as_deref(), Some(&b"foo"[..]));
        assert_eq!(decode_base64("Zm9v\nYmFy").as_deref(), Some(&b"foobar"[..]));
        assert_eq!(decode_base64("Z"), None);
        assert_eq!(decode_base64("Zm9v!"), None);
    }
}
