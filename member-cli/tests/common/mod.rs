//! What the process tests share: running `cohort-member` processes (on loopback or in a
//! network namespace) and reading what they print, their config files and certificates,
//! and their metrics.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cohort_certs::{CertificateAuthority, MemberRequest};

pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

/// One running process and everything it printed on stdout so far.
pub(crate) struct Process {
    pub(crate) name: String,
    pub(crate) child: Child,
    /// Each line with the moment it was read.
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    /// The thread reading the process's stdout: it ends at end of file, once the process
    /// has exited and everything it printed is in `lines`.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Process {
    pub(crate) fn spawn(config: &Path, name: &str) -> Process {
        Process::spawn_in(None, config, name)
    }

    /// Runs `cohort-member --config CONFIG` in the network namespace `namespace` (through
    /// `ip netns exec`, which execs it: the child is the member process itself).
    pub(crate) fn spawn_in(namespace: Option<&str>, config: &Path, name: &str) -> Process {
        let binary = env!("CARGO_BIN_EXE_cohort-member");
        let mut command = match namespace {
            Some(namespace) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", namespace, binary]);
                command
            }
            None => Command::new(binary),
        };
        let mut child = command
            .arg("--config")
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn cohort-member");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().expect("lines").push((Instant::now(), line));
            }
        });
        Process {
            name: name.to_owned(),
            child,
            lines,
            reader: Some(reader),
        }
    }

    pub(crate) fn printed(&self, what: impl Fn(&str) -> bool) -> bool {
        self.find(|l| what(l).then_some(())).is_some()
    }

    /// The first printed line `what` makes something of.
    pub(crate) fn find<T>(&self, what: impl Fn(&str) -> Option<T>) -> Option<T> {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .find_map(|(_, l)| what(l))
    }

    /// Everything printed so far.
    pub(crate) fn transcript(&self) -> Vec<String> {
        let lines = self.lines.lock().expect("lines");
        lines.iter().map(|(_, l)| l.clone()).collect()
    }

    /// Waits (bounded) until a line `what` accepts is printed; returns when it was read.
    pub(crate) fn wait_for(&self, description: &str, what: impl Fn(&str) -> bool) -> Instant {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let found = self
                .lines
                .lock()
                .expect("lines")
                .iter()
                .find_map(|(at, l)| what(l).then_some(*at));
            if let Some(at) = found {
                return at;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not print {description} within {PATIENCE:?}; it printed: {:?}",
                self.name,
                self.transcript()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {}", self.name);
        self.wait_exit("on SIGTERM")
    }

    /// Waits (bounded) for the process to exit by itself; `why` says when it should have.
    pub(crate) fn wait_exit(&mut self, why: &str) -> std::process::ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit {why}; it printed: {:?}",
                self.name,
                self.transcript()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // Exited is not yet read: what it printed last may still be on its way through
        // the pipe, and a test looks at its lines next. The reader ends at end of file.
        if let Some(reader) = self.reader.take() {
            while !reader.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
        status
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
pub(crate) struct Setup {
    pub(crate) dir: PathBuf,
    ca: CertificateAuthority,
    pub(crate) locator: SocketAddr,
}

impl Setup {
    /// A setup whose locator will listen on a free loopback port.
    pub(crate) fn new(test: &str) -> Setup {
        let locator = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("reserve the locator's port");
        Setup::with_locator(test, locator)
    }

    /// A setup whose locator will listen on `locator`.
    pub(crate) fn with_locator(test: &str, locator: SocketAddr) -> Setup {
        let dir = std::env::temp_dir().join(format!("cohort-member-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the working directory");
        let ca = CertificateAuthority::ephemeral().expect("a CA");
        std::fs::write(dir.join("ca.pem"), ca.certificate_pem()).expect("write the CA");
        Setup { dir, ca, locator }
    }

    /// A config file for `name` on loopback: the locator on its address, others on any
    /// free port.
    pub(crate) fn config(&self, name: &str, kind: &str) -> PathBuf {
        self.config_with(name, kind, "")
    }

    /// [`Setup::config`] with `extra` keys (TOML lines).
    pub(crate) fn config_with(&self, name: &str, kind: &str, extra: &str) -> PathBuf {
        let bind = match kind {
            "locator" => self.locator,
            _ => SocketAddr::new(self.locator.ip(), 0),
        };
        self.config_at(name, kind, bind, extra)
    }

    /// A config file for `name` bound to `bind`, with a certificate naming its IP address
    /// and `extra` keys (TOML lines) before the `[ssl]` table.
    pub(crate) fn config_at(
        &self,
        name: &str,
        kind: &str,
        bind: SocketAddr,
        extra: &str,
    ) -> PathBuf {
        self.config_listing(name, kind, bind, &[self.locator], extra)
    }

    /// [`Setup::config_at`] listing `locators` instead of the setup's one locator.
    pub(crate) fn config_listing(
        &self,
        name: &str,
        kind: &str,
        bind: SocketAddr,
        locators: &[SocketAddr],
        extra: &str,
    ) -> PathBuf {
        let request = MemberRequest::new(name, Duration::from_secs(3600)).ip(bind.ip());
        let issued = self.ca.issue(&request).expect("a certificate");
        issued
            .write_to_dir(&self.dir, name)
            .expect("write the certificate");
        let text = format!(
            "name = \"{name}\"\nkind = \"{kind}\"\nbind-address = \"{bind}\"\n\
             locators = [{}]\nworking-dir = \".\"\n{extra}\n\
             [ssl]\nca = \"ca.pem\"\ncertificate = \"{name}.pem\"\nprivate-key = \"{name}-key.pem\"\n",
            locators
                .iter()
                .map(|l| format!("\"{l}\""))
                .collect::<Vec<_>>()
                .join(", ")
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

pub(crate) fn view_of(size: usize) -> impl Fn(&str) -> bool {
    move |line: &str| line.starts_with("view ") && line.contains(&format!(": {size} member(s)"))
}

/// `GET /metrics` from `address` with a plain HTTP/1.1 request; the body, after checking
/// the status and content type.
pub(crate) fn scrape(address: SocketAddr) -> String {
    let mut stream = TcpStream::connect_timeout(&address, PATIENCE).expect("connect to metrics");
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    stream
        .write_all(SCRAPE_REQUEST.as_bytes())
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    metrics_body(&response)
}

/// The request [`scrape`] sends.
pub(crate) const SCRAPE_REQUEST: &str =
    "GET /metrics HTTP/1.1\r\nHost: cohort\r\nConnection: close\r\n\r\n";

/// The body of a metrics response, after checking its status and content type.
pub(crate) fn metrics_body(response: &str) -> String {
    let (head, body) = response.split_once("\r\n\r\n").expect("a header block");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    body.to_owned()
}

/// The value of the sample `name` whose labels include every one of `labels`.
pub(crate) fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
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

/// Panics unless none of `processes` printed a removal (a member removed as crashed, or
/// itself forced out).
pub(crate) fn assert_nobody_removed(processes: &[Process]) {
    for process in processes {
        assert!(
            !process.printed(|l| l.trim().starts_with("crashed: ") || l.starts_with("forced out")),
            "{} saw a removal: {:?}",
            process.name,
            process.transcript()
        );
    }
}

/// Stops each of `processes` with SIGTERM; panics unless each left and exited 0.
pub(crate) fn terminate_all(processes: &mut [Process]) {
    for process in processes {
        let status = process.terminate();
        assert!(status.success(), "{} exited with {status}", process.name);
    }
}

/// A network namespace with only loopback, removed (with its rules) on drop.
pub(crate) struct Namespace {
    pub(crate) name: String,
}

impl Namespace {
    /// [`Namespace::create`] for a test: `None` (said on stderr) where namespaces or
    /// iptables are not available, unless `COHORT_REQUIRE_NETNS` is set (as in CI), which
    /// makes that a failure.
    pub(crate) fn for_test(test: &str) -> Option<Namespace> {
        let ready = Namespace::create(test).and_then(|ns| {
            // iptables is what the tests cut and drop with: missing, it is a skip too.
            run("ip", &["netns", "exec", &ns.name, "iptables", "-S"])?;
            Ok(ns)
        });
        match ready {
            Ok(namespace) => Some(namespace),
            Err(reason) if std::env::var_os("COHORT_REQUIRE_NETNS").is_none() => {
                eprintln!("SKIPPED: a network namespace with iptables is not available: {reason}");
                None
            }
            Err(reason) => panic!("COHORT_REQUIRE_NETNS is set, but: {reason}"),
        }
    }

    /// `cohort-<test>-<pid>`, with loopback up.
    pub(crate) fn create(test: &str) -> Result<Namespace, String> {
        let name = format!("cohort-{test}-{}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        let namespace = Namespace { name };
        run("ip", &["-n", &namespace.name, "link", "set", "lo", "up"])?;
        Ok(namespace)
    }

    /// Adds (`-A`) or deletes (`-D`) the rules that drop UDP between ports `a` and `b`,
    /// both ways.
    pub(crate) fn cut(&self, action: &str, a: u16, b: u16) -> Result<(), String> {
        self.cut_one_way(action, a, b)?;
        self.cut_one_way(action, b, a)
    }

    /// Adds (`-A`) or deletes (`-D`) the rule that drops UDP from port `from` to port `to`
    /// (the other way stays open).
    pub(crate) fn cut_one_way(&self, action: &str, from: u16, to: u16) -> Result<(), String> {
        let (from, to) = (from.to_string(), to.to_string());
        run(
            "ip",
            &[
                "netns", "exec", &self.name, "iptables", action, "INPUT", "-p", "udp", "--sport",
                &from, "--dport", &to, "-j", "DROP",
            ],
        )
    }
}

impl Namespace {
    /// Adds (`-A`) or deletes (`-D`) the rule that drops each UDP datagram arriving in the
    /// namespace with probability `p` (every link, both ways: each datagram passes INPUT
    /// once, at its receiver).
    pub(crate) fn lossy(&self, action: &str, p: f64) -> Result<(), String> {
        let p = p.to_string();
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.name,
                "iptables",
                action,
                "INPUT",
                "-p",
                "udp",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &p,
                "-j",
                "DROP",
            ],
        )
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace takes its netfilter rules with it.
        if let Err(error) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("cleanup: {error}");
        }
    }
}

/// Runs `program` with `args`; an error names the command and what it printed.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    match output.status.success() {
        true => Ok(()),
        false => Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}
