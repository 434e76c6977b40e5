//! Loading cluster TLS settings: good material loads, and every kind of bad input is
//! reported with its own error naming the setting and the file.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use cohort_certs::{CertificateAuthority, IssuedCertificate, MemberRequest};
use cohort_transport::tls::{PemSource, Setting, TlsError, TlsSettings};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const MEMBER_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A directory under the system temp dir, unique to this process and test, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "cohort-tls-{}-{test}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, contents).expect("write test file");
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A CA and a good member certificate for it, written to files.
struct Fixture {
    dir: TempDir,
    ca: CertificateAuthority,
    member: IssuedCertificate,
    ca_path: PathBuf,
    certificate_path: PathBuf,
    key_path: PathBuf,
}

impl Fixture {
    fn new(test: &str) -> Self {
        let dir = TempDir::new(test);
        let ca = CertificateAuthority::ephemeral().expect("CA");
        let member = issue(&ca, MemberRequest::new("member", DAY));
        let ca_path = dir.write("ca.pem", ca.certificate_pem());
        let certificate_path = dir.write("member.pem", &member.certificate_pem);
        let key_path = dir.write("member-key.pem", &member.private_key_pem);
        Self {
            dir,
            ca,
            member,
            ca_path,
            certificate_path,
            key_path,
        }
    }

    fn settings(&self) -> TlsSettings {
        TlsSettings::from_files(&self.ca_path, &self.certificate_path, &self.key_path)
    }

    /// The good settings with one setting's file replaced by `path`.
    fn with(&self, setting: Setting, path: &Path) -> TlsSettings {
        let mut settings = self.settings();
        let source = PemSource::File(path.to_path_buf());
        match setting {
            Setting::Ca => settings.ca = source,
            Setting::Certificate => settings.certificate = source,
            Setting::PrivateKey => settings.private_key = source,
            other => panic!("no such setting {other:?}"),
        }
        settings
    }

    /// The good settings with a member certificate made from `request` (key included).
    fn with_member(&self, name: &str, member: &IssuedCertificate) -> TlsSettings {
        let certificate = self
            .dir
            .write(&format!("{name}.pem"), &member.certificate_pem);
        let key = self
            .dir
            .write(&format!("{name}-key.pem"), &member.private_key_pem);
        TlsSettings::from_files(&self.ca_path, certificate, key)
    }
}

fn issue(ca: &CertificateAuthority, request: MemberRequest) -> IssuedCertificate {
    ca.issue(&request.ip(MEMBER_IP).dns("member.cohort.test"))
        .expect("issue")
}

fn load_error(settings: &TlsSettings) -> TlsError {
    settings.load().expect_err("settings must be rejected")
}

/// Asserts the message names the setting and where it came from.
fn assert_names(error: &TlsError, setting: Setting, origin: &Path) {
    let message = error.to_string();
    assert!(
        message.contains(&format!("{setting} {}", origin.display())),
        "message should name {setting} and {}: {message}",
        origin.display()
    );
}

fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("certificate PEM")
}

#[test]
fn good_files_load_with_default_switches() {
    let fixture = Fixture::new("good-files");
    let settings = fixture.settings();
    assert!(settings.require_authentication);
    assert!(!settings.endpoint_identification);
    let tls = settings.load().expect("good settings load");
    assert!(tls.require_authentication());
    assert!(!tls.endpoint_identification());
    let _server = tls.server_crypto();
    let _client = tls.client_crypto();
    let debug = format!("{tls:?} {settings:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
}

#[test]
fn good_inline_pem_loads_with_switches() {
    let fixture = Fixture::new("good-inline");
    let mut settings = TlsSettings::from_pem(
        fixture.ca.certificate_pem(),
        fixture.member.certificate_pem.clone(),
        fixture.member.private_key_pem.clone(),
    );
    settings.require_authentication = false;
    settings.endpoint_identification = true;
    let tls = settings.load().expect("good settings load");
    assert!(!tls.require_authentication());
    assert!(tls.endpoint_identification());
    let debug = format!("{settings:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
}

#[test]
fn certificates_from_a_reloaded_ca_load() {
    // A CA written to disk and loaded back must issue certificates that chain to the
    // original CA certificate (same issuer name and key).
    let fixture = Fixture::new("reloaded-ca");
    let ca_dir = fixture.dir.path("ca-dir");
    fixture.ca.write_to_dir(&ca_dir).expect("write CA");
    let reloaded = CertificateAuthority::load_from_dir(&ca_dir).expect("load CA");
    let member = issue(&reloaded, MemberRequest::new("member", DAY));
    fixture
        .with_member("reissued", &member)
        .load()
        .expect("certificate from reloaded CA loads");
}

#[test]
fn missing_files_are_not_found() {
    let fixture = Fixture::new("missing");
    for setting in [Setting::Ca, Setting::Certificate, Setting::PrivateKey] {
        let missing = fixture.dir.path("does-not-exist.pem");
        let error = load_error(&fixture.with(setting, &missing));
        assert!(
            matches!(error, TlsError::NotFound { setting: s, .. } if s == setting),
            "{error:?}"
        );
        assert_names(&error, setting, &missing);
    }
}

#[test]
fn unreadable_files_are_reported() {
    // Tests may run as root, where permissions do not stop reads; a directory always does.
    let fixture = Fixture::new("unreadable");
    let directory = fixture.dir.path("a-directory");
    fs::create_dir(&directory).expect("create dir");
    for setting in [Setting::Ca, Setting::Certificate, Setting::PrivateKey] {
        let error = load_error(&fixture.with(setting, &directory));
        assert!(
            matches!(error, TlsError::Unreadable { setting: s, .. } if s == setting),
            "{error:?}"
        );
        assert_names(&error, setting, &directory);
    }
}

#[test]
fn text_that_is_not_pem_is_rejected() {
    let fixture = Fixture::new("not-pem");
    let garbage = fixture.dir.write("garbage.pem", "this is not PEM\n");
    let broken = fixture.dir.write(
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n", // no END line
    );
    for path in [&garbage, &broken] {
        for setting in [Setting::Ca, Setting::Certificate, Setting::PrivateKey] {
            let error = load_error(&fixture.with(setting, path));
            assert!(
                matches!(error, TlsError::NotPem { setting: s, .. } if s == setting),
                "{error:?}"
            );
            assert_names(&error, setting, path);
        }
    }
}

#[test]
fn pem_without_the_expected_section_is_rejected() {
    let fixture = Fixture::new("wrong-section");
    // A key where a certificate belongs.
    for setting in [Setting::Ca, Setting::Certificate] {
        let error = load_error(&fixture.with(setting, &fixture.key_path));
        assert!(
            matches!(error, TlsError::NoCertificate { setting: s, .. } if s == setting),
            "{error:?}"
        );
        assert_names(&error, setting, &fixture.key_path);
    }
    // A certificate where the key belongs.
    let error = load_error(&fixture.with(Setting::PrivateKey, &fixture.certificate_path));
    assert!(matches!(error, TlsError::NoPrivateKey { .. }), "{error:?}");
    assert_names(&error, Setting::PrivateKey, &fixture.certificate_path);
}

#[test]
fn a_member_certificate_is_not_a_ca() {
    let fixture = Fixture::new("not-ca");
    let error = load_error(&fixture.with(Setting::Ca, &fixture.certificate_path));
    assert!(
        matches!(error, TlsError::NotCa { index: 1, .. }),
        "{error:?}"
    );
    assert_names(&error, Setting::Ca, &fixture.certificate_path);
}

#[test]
fn undecodable_certificates_and_keys_are_rejected() {
    let fixture = Fixture::new("undecodable");
    let bad_certificate = fixture.dir.write(
        "bad-cert.pem",
        "-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n",
    );
    let error = load_error(&fixture.with(Setting::Ca, &bad_certificate));
    assert!(
        matches!(error, TlsError::InvalidCaCertificate { .. }),
        "{error:?}"
    );
    assert_names(&error, Setting::Ca, &bad_certificate);

    let error = load_error(&fixture.with(Setting::Certificate, &bad_certificate));
    assert!(
        matches!(error, TlsError::InvalidCertificate { .. }),
        "{error:?}"
    );
    assert_names(&error, Setting::Certificate, &bad_certificate);

    let bad_key = fixture.dir.write(
        "bad-key.pem",
        "-----BEGIN PRIVATE KEY-----\nAAAAAAAA\n-----END PRIVATE KEY-----\n",
    );
    let error = load_error(&fixture.with(Setting::PrivateKey, &bad_key));
    assert!(
        matches!(error, TlsError::UnsupportedKey { .. }),
        "{error:?}"
    );
    assert_names(&error, Setting::PrivateKey, &bad_key);
}

#[test]
fn a_key_from_another_member_does_not_match() {
    let fixture = Fixture::new("key-mismatch");
    let other = issue(&fixture.ca, MemberRequest::new("other", DAY));
    let other_key = fixture.dir.write("other-key.pem", &other.private_key_pem);
    let error = load_error(&fixture.with(Setting::PrivateKey, &other_key));
    assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error:?}");
    assert_names(&error, Setting::PrivateKey, &other_key);
    let message = error.to_string();
    assert!(
        message.contains(&fixture.certificate_path.display().to_string()),
        "{message}"
    );
    assert!(!message.contains("PRIVATE KEY"), "{message}");
}

#[test]
fn a_certificate_from_another_ca_is_not_signed_by_the_ca() {
    let fixture = Fixture::new("other-ca");
    let other_ca = CertificateAuthority::ephemeral().expect("CA");
    let foreign = issue(&other_ca, MemberRequest::new("foreign", DAY));
    let settings = fixture.with_member("foreign", &foreign);
    let error = load_error(&settings);
    assert!(matches!(error, TlsError::NotSignedByCa { .. }), "{error:?}");
    assert_names(
        &error,
        Setting::Certificate,
        &fixture.dir.path("foreign.pem"),
    );
    let message = error.to_string();
    assert!(
        message.contains(&format!("ca {}", fixture.ca_path.display())),
        "{message}"
    );
}

#[test]
fn an_expired_certificate_is_reported_with_its_end() {
    let fixture = Fixture::new("expired");
    let now = SystemTime::now();
    let expired = issue(
        &fixture.ca,
        MemberRequest::new("expired", DAY).validity(now - 10 * DAY, now - DAY),
    );
    let error = load_error(&fixture.with_member("expired", &expired));
    let TlsError::Expired { not_after, .. } = &error else {
        panic!("expected Expired, got {error:?}");
    };
    let not_after = not_after.expect("rustls reports notAfter");
    let off_by = (now - DAY)
        .duration_since(not_after)
        .unwrap_or_else(|early| early.duration());
    assert!(off_by <= Duration::from_secs(1), "notAfter {not_after:?}");
    assert_names(
        &error,
        Setting::Certificate,
        &fixture.dir.path("expired.pem"),
    );
    assert!(error.to_string().contains("not valid after"), "{error}");
}

#[test]
fn a_certificate_from_the_future_is_not_yet_valid() {
    let fixture = Fixture::new("not-yet-valid");
    let now = SystemTime::now();
    let future = issue(
        &fixture.ca,
        MemberRequest::new("future", DAY).validity(now + DAY, now + 10 * DAY),
    );
    let error = load_error(&fixture.with_member("future", &future));
    assert!(
        matches!(
            error,
            TlsError::NotYetValid {
                not_before: Some(_),
                ..
            }
        ),
        "{error:?}"
    );
    assert_names(
        &error,
        Setting::Certificate,
        &fixture.dir.path("future.pem"),
    );
    assert!(error.to_string().contains("valid from"), "{error}");
}

#[test]
fn in_memory_sources_are_named_in_errors() {
    let fixture = Fixture::new("inline-errors");
    let other = issue(&fixture.ca, MemberRequest::new("other", DAY));
    let settings = TlsSettings::from_pem(
        fixture.ca.certificate_pem(),
        fixture.member.certificate_pem.clone(),
        other.private_key_pem,
    );
    let error = load_error(&settings);
    assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error:?}");
    assert!(
        error.to_string().contains("private-key <in-memory>"),
        "{error}"
    );
}

#[test]
fn peer_address_must_be_named_by_the_certificate() {
    let fixture = Fixture::new("peer-address");
    let tls = fixture.settings().load().expect("load");
    let peer = chain(&fixture.member.certificate_pem);

    tls.verify_peer_address(&peer, MEMBER_IP)
        .expect("SAN address is accepted");
    // A dual-stack socket reports an IPv4 peer as an IPv4-mapped IPv6 address.
    tls.verify_peer_address(&peer, IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()))
        .expect("mapped SAN address is accepted");

    let other = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
    let error = tls
        .verify_peer_address(&peer, other)
        .expect_err("another address is rejected");
    let TlsError::AddressNotInCertificate { address, presented } = &error else {
        panic!("expected AddressNotInCertificate, got {error:?}");
    };
    assert_eq!(*address, other);
    assert!(
        presented.iter().any(|name| name.contains("127.0.0.1")),
        "{presented:?}"
    );
    assert!(error.to_string().contains("10.1.2.3"), "{error}");

    let error = tls
        .verify_peer_address(&peer, IpAddr::V6(Ipv6Addr::LOCALHOST))
        .expect_err("::1 is not in the certificate");
    assert!(
        matches!(error, TlsError::AddressNotInCertificate { .. }),
        "{error:?}"
    );

    assert!(matches!(
        tls.verify_peer_address(&[], MEMBER_IP),
        Err(TlsError::PeerCertificateMissing)
    ));
    assert!(matches!(
        tls.verify_peer_address(&[CertificateDer::from(vec![0x30, 0x00])], MEMBER_IP),
        Err(TlsError::PeerCertificateInvalid { .. })
    ));
}
