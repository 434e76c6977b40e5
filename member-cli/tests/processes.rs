//! Real processes: a locator and three members, each a `cohort-member` process with its own
//! config file and certificate; one is killed with SIGKILL, the survivors' views drop it
//! (and the locator's metrics count it), and the rest leave on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cohort_certs::{CertificateAuthority, MemberRequest};

const PATIENCE: Duration = Duration::from_secs(30);

/// One running process and everything it printed on stdout so far.
struct Process {
    name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    fn spawn(config: &Path, name: &str) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cohort-member"))
            .arg("--config")
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn cohort-member");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().expect("lines").push(line);
            }
        });
        Process {
            name: name.to_owned(),
            child,
            lines,
        }
    }

    fn printed(&self, what: impl Fn(&str) -> bool) -> bool {
        self.lines.lock().expect("lines").iter().any(|l| what(l))
    }

    /// The first printed line `what` makes something of.
    fn find<T>(&self, what: impl Fn(&str) -> Option<T>) -> Option<T> {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .find_map(|l| what(l))
    }

    fn wait_for(&self, description: &str, what: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !self.printed(&what) {
            assert!(
                Instant::now() < deadline,
                "{} did not print {description} within {PATIENCE:?}; it printed: {:?}",
                self.name,
                self.lines.lock().expect("lines")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {}", self.name);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit on SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Whatever happened in the test, no process outlives it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A working directory with a CA, one certificate per node, and a config file each.
struct Setup {
    dir: PathBuf,
    ca: CertificateAuthority,
    locator: std::net::SocketAddr,
}

impl Setup {
    fn new(test: &str) -> Setup {
        let dir = std::env::temp_dir().join(format!("cohort-member-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the working directory");
        let ca = CertificateAuthority::ephemeral().expect("a CA");
        std::fs::write(dir.join("ca.pem"), ca.certificate_pem()).expect("write the CA");
        let locator = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("reserve the locator's port");
        Setup { dir, ca, locator }
    }

    fn config(&self, name: &str, kind: &str) -> PathBuf {
        self.config_with(name, kind, "")
    }

    /// A config file for `name`, with `extra` keys (TOML lines) before the `[ssl]` table.
    fn config_with(&self, name: &str, kind: &str, extra: &str) -> PathBuf {
        let request =
            MemberRequest::new(name, Duration::from_secs(3600)).ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let issued = self.ca.issue(&request).expect("a certificate");
        issued
            .write_to_dir(&self.dir, name)
            .expect("write the certificate");
        let bind = match kind {
            "locator" => self.locator.to_string(),
            _ => "127.0.0.1:0".to_owned(),
        };
        let text = format!(
            "name = \"{name}\"\nkind = \"{kind}\"\nbind-address = \"{bind}\"\n\
             locators = [\"{}\"]\nworking-dir = \".\"\n{extra}\n\
             [ssl]\nca = \"ca.pem\"\ncertificate = \"{name}.pem\"\nprivate-key = \"{name}-key.pem\"\n",
            self.locator
        );
        let path = self.dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).expect("write the config");
        path
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn view_of(size: usize) -> impl Fn(&str) -> bool {
    move |line: &str| line.starts_with("view ") && line.contains(&format!(": {size} member(s)"))
}

#[test]
fn a_member_killed_with_sigkill_is_dropped_from_the_survivors_views() {
    let setup = Setup::new("sigkill");
    let locator = Process::spawn(
        &setup.config_with(
            "locator-1",
            "locator",
            "metrics-address = \"127.0.0.1:0\"\n",
        ),
        "locator-1",
    );
    locator.wait_for("its first view", view_of(1));
    let metrics = locator
        .find(|line| {
            line.strip_prefix("metrics at http://")?
                .strip_suffix("/metrics")?
                .parse::<SocketAddr>()
                .ok()
        })
        .expect("the locator printed its metrics address before its first view");
    let mut members: Vec<Process> = (1..=3)
        .map(|i| {
            let name = format!("member-{i}");
            Process::spawn(&setup.config(&name, "member"), &name)
        })
        .collect();
    for process in std::iter::once(&locator).chain(&members) {
        process.wait_for("a view of all four", view_of(4));
    }

    // An operator asks the locator what it sees.
    let status = Command::new(env!("CARGO_BIN_EXE_cohort-member"))
        .args(["status", "--config"])
        .arg(setup.config("operator", "admin"))
        .output()
        .expect("run cohort-member status");
    let printed = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{printed} {}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        printed.contains("locator-1 at ")
            && printed.contains(": 4 member(s), coordinator locator-1, elder"),
        "{printed}"
    );
    for name in ["locator-1", "member-1", "member-2", "member-3"] {
        assert!(printed.contains(name), "{name} missing from {printed}");
    }

    // The locator's metrics: the view, and traffic with each member on the control stream.
    let text = scrape(metrics);
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(
        value(&text, "cohort_view_members", &[]),
        Some(4.0),
        "{text}"
    );
    assert_eq!(value(&text, "cohort_coordinator", &[]), Some(1.0), "{text}");
    assert!(
        value(&text, "cohort_views_installed_total", &[]) >= Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "cohort_members_removed_total", &[]),
        Some(0.0),
        "{text}"
    );
    for name in ["member-1", "member-2", "member-3"] {
        let peer = [("peer", name)];
        let control = [("peer", name), ("priority", "control")];
        assert_eq!(
            value(&text, "cohort_peer_connected", &peer),
            Some(1.0),
            "{text}"
        );
        assert!(
            value(&text, "cohort_peer_rtt_seconds", &peer) > Some(0.0),
            "{text}"
        );
        assert!(
            value(&text, "cohort_peer_frames_sent_total", &control) > Some(0.0),
            "{text}"
        );
        assert!(
            value(&text, "cohort_peer_frames_received_total", &control) > Some(0.0),
            "{text}"
        );
        assert!(
            value(&text, "cohort_peer_bytes_received_total", &control) > Some(0.0),
            "{text}"
        );
    }

    let mut victim = members.pop().expect("three members");
    victim.child.kill().expect("SIGKILL");
    victim.child.wait().expect("reaped");
    for process in std::iter::once(&locator).chain(&members) {
        process.wait_for("a view without member-3, which crashed", |line| {
            line.trim() == "crashed: member-3"
        });
        process.wait_for("a view of three", view_of(3));
    }
    // The locator coordinates, so it ran the final check that removed member-3.
    let text = scrape(metrics);
    assert_eq!(
        value(&text, "cohort_view_members", &[]),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "cohort_members_removed_total", &[]),
        Some(1.0),
        "{text}"
    );
    assert!(
        value(&text, "cohort_suspicions_total", &[]) >= Some(1.0),
        "{text}"
    );
    assert!(
        value(&text, "cohort_final_checks_failed_total", &[]) >= Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "cohort_forced_disconnects_total", &[]),
        Some(0.0),
        "{text}"
    );
    assert!(!text.contains("peer=\"member-3\""), "{text}");

    for mut process in members.into_iter().chain(std::iter::once(locator)) {
        let status = process.terminate();
        assert!(status.success(), "{} exited with {status}", process.name);
        assert!(
            process.printed(|l| l == "left"),
            "{} left gracefully",
            process.name
        );
    }
}

#[test]
fn a_bad_configuration_exits_2_naming_the_problem() {
    let setup = Setup::new("bad-config");
    let good = setup.config("node", "member");
    let cases = [
        (vec!["--colour", "blue"], "colour"),
        (vec!["--member-timeout", "5x"], "member-timeout"),
        (vec!["--ssl-certificate", "missing.pem"], "missing.pem"),
    ];
    for (flags, named) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_cohort-member"))
            .arg("--config")
            .arg(&good)
            .args(&flags)
            .output()
            .expect("run cohort-member");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(
            stderr.contains(named),
            "{flags:?}: {stderr:?} should name {named}"
        );
    }
    // No locator answers: exit 1 with the reason, after the join timeout.
    let output = Command::new(env!("CARGO_BIN_EXE_cohort-member"))
        .arg("--config")
        .arg(&good)
        .args(["--join-timeout", "1s"])
        .output()
        .expect("run cohort-member");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no locator reachable"), "{stderr:?}");
    // A metrics address already taken: exit 1 naming it, before trying to join.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let address = taken.local_addr().expect("its address").to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_cohort-member"))
        .arg("--config")
        .arg(&good)
        .args(["--metrics-address", &address])
        .output()
        .expect("run cohort-member");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot serve metrics on {address}")),
        "{stderr:?}"
    );
}

/// `GET /metrics` from `address` with a plain HTTP/1.1 request; the body, after checking
/// the status and content type.
fn scrape(address: SocketAddr) -> String {
    let mut stream = TcpStream::connect_timeout(&address, PATIENCE).expect("connect to metrics");
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: cohort\r\nConnection: close\r\n\r\n")
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a header block");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    body.to_owned()
}

/// The value of the sample `name` whose labels include every one of `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, number) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (series, ""),
            };
            let matches = series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")));
            matches.then(|| number.parse().ok()).flatten()
        })
}
