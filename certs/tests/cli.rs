//! Runs the `cohort-certs` binary as an operator would.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use cohort_certs::CertificateAuthority;

/// A directory under the system temp dir, unique to this process and test, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "cohort-certs-cli-{}-{test}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn cohort_certs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cohort-certs"))
        .args(args)
        .output()
        .expect("run cohort-certs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

#[test]
fn help_lists_both_subcommands_and_every_flag() {
    for flag in ["--help", "-h"] {
        let output = cohort_certs(&[flag]);
        assert!(output.status.success(), "{output:?}");
        let usage = text(&output.stdout);
        for word in [
            "ca", "member", "--out", "--name", "--days", "--ca-dir", "--ip", "--dns",
        ] {
            assert!(usage.contains(word), "usage lacks {word}: {usage}");
        }
    }
    let output = cohort_certs(&["member", "--help"]);
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn ca_then_member_writes_usable_pem_files() {
    let dir = TempDir::new("round-trip");
    let ca_dir = dir.path().join("ca");
    let member_dir = dir.path().join("members");

    let output = cohort_certs(&[
        "ca",
        "--out",
        arg(&ca_dir),
        "--name",
        "test CA",
        "--days",
        "2",
    ]);
    assert!(output.status.success(), "{output:?}");
    let stdout = text(&output.stdout);
    assert!(stdout.contains(arg(&ca_dir.join("ca.pem"))), "{stdout}");
    assert!(stdout.contains(arg(&ca_dir.join("ca-key.pem"))), "{stdout}");

    let output = cohort_certs(&[
        "member",
        "--ca-dir",
        arg(&ca_dir),
        "--name",
        "node-a",
        "--ip",
        "127.0.0.1",
        "--ip=::1",
        "--dns",
        "node-a.cohort.test",
        "--days",
        "1",
        "--out",
        arg(&member_dir),
    ]);
    assert!(output.status.success(), "{output:?}");
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains(arg(&member_dir.join("node-a.pem"))),
        "{stdout}"
    );

    // The CA files load back, and the member files are PEM of the right kind.
    CertificateAuthority::load_from_dir(&ca_dir).expect("CA files load");
    let certificate = fs::read_to_string(member_dir.join("node-a.pem")).expect("read cert");
    let key = fs::read_to_string(member_dir.join("node-a-key.pem")).expect("read key");
    assert!(
        certificate.starts_with("-----BEGIN CERTIFICATE-----"),
        "{certificate}"
    );
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for path in [ca_dir.join("ca-key.pem"), member_dir.join("node-a-key.pem")] {
            let mode = fs::metadata(&path).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        }
    }

    // Without --out the files go next to the CA, and 127.0.0.1 is the default address.
    let output = cohort_certs(&["member", "--ca-dir", arg(&ca_dir), "--name", "node-b"]);
    assert!(output.status.success(), "{output:?}");
    assert!(ca_dir.join("node-b.pem").is_file());

    // The CA is never overwritten.
    let output = cohort_certs(&["ca", "--out", arg(&ca_dir)]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(text(&output.stderr).contains("already exists"));
}

#[test]
fn bad_command_lines_exit_2_naming_the_problem() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "missing subcommand"),
        (&["frobnicate"], "unknown subcommand"),
        (&["ca", "--out", "x", "--bogus"], "--bogus"),
        (&["ca", "--out"], "--out needs a value"),
        (&["ca", "--out", "x", "--days", "ten"], "--days"),
        (&["ca", "--out", "x", "--days", "0"], "--days"),
        (&["ca", "--days", "3"], "--out"),
        (
            &["member", "--ca-dir", "x", "--name", "m", "--ip", "1.2.3"],
            "--ip",
        ),
        (&["member", "--ca-dir", "x", "--ip", "10.0.0.1"], "--name"),
        (
            &["member", "--ca-dir", "x", "--name", "m", "--ca-dir", "y"],
            "more than once",
        ),
        (
            &["member", "--ca-dir", "x", "--name", "ca"],
            "overwrite the CA",
        ),
    ];
    for (args, expected) in cases {
        let output = cohort_certs(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn missing_ca_files_exit_1_naming_the_file() {
    let dir = TempDir::new("missing-ca");
    let output = cohort_certs(&["member", "--ca-dir", arg(dir.path()), "--name", "m"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(stderr.contains(arg(&dir.path().join("ca.pem"))), "{stderr}");
}
