//! cohort-member processes on a real (emulated) network: three network namespaces, each
//! joined by a veth pair to a bridge in a fourth, with 50 ms of delay and 5% loss on every
//! hop. The cluster forms, its members talk, then one namespace is cut off: its member is
//! forced out (it holds too little weight on its own) and the others install a view
//! without it.
//!
//! ```text
//!   ns a: locator-1 10.213.0.1:10334, member-1 (the lead member)  ─┐
//!   ns b: member-2 10.213.0.2                                      ├─ veth ─ ns hub: bridge
//!   ns c: member-3 10.213.0.3          (cut off: its port is down) ─┘   (50 ms, 5% loss)
//! ```
//!
//! The bridge is `netem_bridge.py`, a user-space bridge that delays and drops frames as
//! netem would: netem is a kernel option that many kernels, this project's CI machines'
//! among them, lack. Needs root and iproute2 (`ip netns`), and python3 for the bridge;
//! without them the test says why it skipped, unless `COHORT_REQUIRE_NETNS=1` (as in CI),
//! which makes that a failure. Ignored by default; `.ci/run` runs it.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Process, SCRAPE_REQUEST, Setup, metrics_body, value, view_of};

/// The hub's ports, one per member namespace, and each namespace's address.
const HOSTS: [(&str, &str); 3] = [
    ("a", "10.213.0.1"),
    ("b", "10.213.0.2"),
    ("c", "10.213.0.3"),
];

/// Network namespaces and the bridge between them; all removed on drop.
struct Lab {
    prefix: String,
    created: Vec<String>,
    bridge: Option<Child>,
}

impl Lab {
    fn create() -> Result<Lab, String> {
        let mut lab = Lab {
            prefix: format!("cohort-{}", std::process::id()),
            created: Vec::new(),
            bridge: None,
        };
        lab.add_namespace("hub")?;
        for (host, address) in HOSTS {
            lab.add_namespace(host)?;
            let (hub, ns) = (lab.ns("hub"), lab.ns(host));
            let port = format!("h{host}");
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &hub, "link", "set", &port, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/netem_bridge.py");
        let mut bridge = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.ns("hub"),
                "python3",
                script,
                "ha",
                "hb",
                "hc",
            ])
            .args(["--delay-ms", "50", "--loss", "0.05", "--max-seconds", "600"])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run python3 for the bridge: {e}"))?;
        let mut first = String::new();
        let stdout = bridge.stdout.take().expect("piped stdout");
        let mut stdout = BufReader::new(stdout);
        let _ = stdout.read_line(&mut first);
        lab.bridge = Some(bridge);
        if !first.starts_with("bridging") {
            return Err(format!("the bridge did not start (it printed {first:?})"));
        }
        // The bridge prints its counters when it ends; keep reading so it never blocks.
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                eprintln!("bridge: {line}");
            }
        });
        Ok(lab)
    }

    fn add_namespace(&mut self, name: &str) -> Result<(), String> {
        let ns = self.ns(name);
        ip(&["netns", "add", &ns])?;
        self.created.push(ns);
        Ok(())
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Takes the hub's port to `host` down: nothing crosses it in either direction.
    fn cut_off(&self, host: &str) {
        ip(&[
            "-n",
            &self.ns("hub"),
            "link",
            "set",
            &format!("h{host}"),
            "down",
        ])
        .expect("cut the namespace off");
    }

    /// Scrapes (every 200 ms, for up to [`common::PATIENCE`]) until `ready` holds.
    fn scrape_until(
        &self,
        host: &str,
        address: SocketAddr,
        what: &str,
        ready: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + common::PATIENCE;
        loop {
            let text = self.scrape(host, address);
            if ready(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} in the metrics: {text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// GET /metrics from `address`, asked from inside namespace `host`.
    fn scrape(&self, host: &str, address: SocketAddr) -> String {
        let client = format!(
            "import socket, sys\n\
             s = socket.create_connection(('{}', {}), 10)\n\
             s.sendall({SCRAPE_REQUEST:?}.encode())\n\
             data = b''\n\
             while chunk := s.recv(65536):\n    data += chunk\n\
             sys.stdout.write(data.decode())\n",
            address.ip(),
            address.port()
        );
        let output = Command::new("ip")
            .args(["netns", "exec", &self.ns(host), "python3", "-c", &client])
            .output()
            .expect("run the metrics client");
        assert!(
            output.status.success(),
            "scrape failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        metrics_body(&String::from_utf8_lossy(&output.stdout))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut bridge) = self.bridge.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &bridge.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while bridge.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = bridge.kill();
            let _ = bridge.wait();
        }
        // Deleting a namespace takes its interfaces (and their veth peers) with it.
        for ns in self.created.drain(..).rev() {
            if let Err(error) = ip(&["netns", "del", &ns]) {
                eprintln!("cleanup: {error}");
            }
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip (iproute2): {e}"))?;
    match output.status.success() {
        true => Ok(()),
        false => Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}

#[test]
#[ignore = "needs root, iproute2 and python3; .ci/run runs it with COHORT_REQUIRE_NETNS=1"]
fn a_namespace_cut_off_is_forced_out_and_the_majority_goes_on_without_it() {
    let lab = match Lab::create() {
        Ok(lab) => lab,
        Err(reason) if std::env::var_os("COHORT_REQUIRE_NETNS").is_none() => {
            eprintln!("SKIPPED: network namespaces are not available here: {reason}");
            return;
        }
        Err(reason) => panic!("COHORT_REQUIRE_NETNS is set, but: {reason}"),
    };
    let locator_address: SocketAddr = "10.213.0.1:10334".parse().expect("literal");
    let metrics: SocketAddr = "10.213.0.1:9464".parse().expect("literal");
    let setup = Setup::with_locator("netns", locator_address);
    let timeouts = "member-timeout = \"2s\"\njoin-timeout = \"30s\"\n";
    let bind = |host: usize| SocketAddr::new(HOSTS[host].1.parse().expect("literal"), 0);
    let ns_a = lab.ns("a");

    let locator = Process::spawn_in(
        Some(&ns_a),
        &setup.config_at(
            "locator-1",
            "locator",
            locator_address,
            &format!("{timeouts}metrics-address = \"{metrics}\"\n"),
        ),
        "locator-1",
    );
    locator.wait_for("its first view", view_of(1));
    // member-1 joins first, so it is the lead member (weight 15 of the cluster's 38).
    let member_1 = Process::spawn_in(
        Some(&ns_a),
        &setup.config_at("member-1", "member", bind(0), timeouts),
        "member-1",
    );
    member_1.wait_for("a view of two", view_of(2));
    let member_2 = Process::spawn_in(
        Some(&lab.ns("b")),
        &setup.config_at("member-2", "member", bind(1), timeouts),
        "member-2",
    );
    // Cut off for good below: with auto-reconnect it would wait to rejoin; without, it
    // exits, which is what this test looks for.
    let mut member_3 = Process::spawn_in(
        Some(&lab.ns("c")),
        &setup.config_at(
            "member-3",
            "member",
            bind(2),
            &format!("{timeouts}disable-auto-reconnect = true\n"),
        ),
        "member-3",
    );
    let everyone = [&locator, &member_1, &member_2, &member_3];
    for process in everyone {
        process.wait_for("a view of all four", view_of(4));
    }

    // An operator in another namespace asks the locator, at its non-loopback address,
    // what it sees. Before, `status` bound 0.0.0.0:0 without an advertise address for a
    // non-loopback locator, which the transport refuses.
    let operator = setup.config_at("operator", "admin", bind(1), timeouts);
    let status = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns("b"),
            env!("CARGO_BIN_EXE_cohort-member"),
        ])
        .args(["status", "--locator", "10.213.0.1:10334", "--config"])
        .arg(&operator)
        .output()
        .expect("run cohort-member status");
    let printed = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{printed} {}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        printed.contains("locator-1 at 10.213.0.1:10334 reports view ")
            && printed.contains(": 4 member(s), coordinator locator-1"),
        "{printed}"
    );

    // Messages flow across the emulated network: the locator has sent to and received
    // from every member on the control stream, heartbeats arrive, and the round trip
    // shows the delay (50 ms each way).
    // Each member heartbeats to the members watching it (a ring), so the locator hears
    // heartbeats from some members, not necessarily all.
    let heartbeats = |text: &str| {
        ["member-1", "member-2", "member-3"].iter().any(|name| {
            value(
                text,
                "cohort_peer_datagrams_received_total",
                &[("peer", name)],
            ) > Some(0.0)
        })
    };
    let text = lab.scrape_until("a", metrics, "heartbeats", heartbeats);
    assert_eq!(
        value(&text, "cohort_view_members", &[]),
        Some(4.0),
        "{text}"
    );
    for name in ["member-1", "member-2", "member-3"] {
        let peer = [("peer", name)];
        let control = [("peer", name), ("priority", "control")];
        assert!(
            value(&text, "cohort_peer_frames_sent_total", &control) > Some(0.0),
            "{text}"
        );
        assert!(
            value(&text, "cohort_peer_frames_received_total", &control) > Some(0.0),
            "{text}"
        );
        if name != "member-1" {
            let rtt = value(&text, "cohort_peer_rtt_seconds", &peer).expect("an RTT");
            assert!(
                rtt >= 0.09,
                "RTT to {name} {rtt} s: the delay is not applied"
            );
            eprintln!("locator-1 to {name}: RTT {:.0} ms", rtt * 1000.0);
        }
    }

    let cut = Instant::now();
    lab.cut_off("c");
    for process in [&locator, &member_1, &member_2] {
        let at = process.wait_for("a view without member-3", |l| {
            l.trim() == "crashed: member-3"
        });
        process.wait_for("a view of three", view_of(3));
        eprintln!(
            "{}: view without member-3 {:.2} s after the cut",
            process.name,
            (at - cut).as_secs_f64()
        );
    }
    let forced = member_3.wait_for("that it was forced out", |l| {
        l.starts_with("forced out of the cluster: network partition")
    });
    eprintln!(
        "member-3: forced out {:.2} s after the cut",
        (forced - cut).as_secs_f64()
    );
    let status = member_3.wait_exit("after it was forced out");
    assert_eq!(status.code(), Some(1), "member-3 exits 1 when forced out");
    for process in [&locator, &member_1, &member_2] {
        assert!(
            !process.printed(|l| l.starts_with("forced out")),
            "{} stays",
            process.name
        );
    }
    let text = lab.scrape("a", metrics);
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
    assert_eq!(
        value(&text, "cohort_forced_disconnects_total", &[]),
        Some(0.0),
        "{text}"
    );

    for mut process in [locator, member_1, member_2] {
        let status = process.terminate();
        assert!(status.success(), "{} exited with {status}", process.name);
        assert!(
            process.printed(|l| l == "left"),
            "{} left gracefully; it printed: {:?}",
            process.name,
            process.transcript()
        );
    }
    drop(lab);
}
