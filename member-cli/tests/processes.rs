//! Real processes: a locator and three members, each a `cohort-member` process with its own
//! config file and certificate; one is killed with SIGKILL, the survivors' views drop it
//! (and the locator's metrics count it), and the rest leave on SIGTERM. Another member is
//! stopped (SIGSTOP) until the others remove it, then continued: it is told it is out and
//! rejoins by itself, and the process runs on. A third is stopped for 3 s, less than the
//! removal timeout: it is unreachable meanwhile, then reachable again, and never removed.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::{Process, Setup, scrape, value, view_of};

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
    for limit in [
        "frames_too_large",
        "handshakes_refused",
        "queries_rate_limited",
        "peers_outside_view_refused",
    ] {
        let name = format!("cohort_limit_{limit}_total");
        assert_eq!(value(&text, &name, &[]), Some(0.0), "{text}");
    }
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
            "{} left gracefully; it printed: {:?}",
            process.name,
            process.transcript()
        );
    }
}

/// A locator, member-1 and member-2 started one after the other (so member-1 is the lead
/// member, weight 15: the locator and member-1 keep a quorum without member-2), once all
/// three hold a view of three; and the address of member-2's metrics.
fn three_in_turn(setup: &Setup) -> (Process, Process, Process, SocketAddr) {
    let locator = Process::spawn(&setup.config("locator-1", "locator"), "locator-1");
    locator.wait_for("its first view", view_of(1));
    let member_1 = Process::spawn(&setup.config("member-1", "member"), "member-1");
    member_1.wait_for("a view of two", view_of(2));
    let extra = "metrics-address = \"127.0.0.1:0\"\n";
    let member_2 = Process::spawn(&setup.config_with("member-2", "member", extra), "member-2");
    for process in [&locator, &member_1, &member_2] {
        process.wait_for("a view of all three", view_of(3));
    }
    let metrics = member_2
        .find(|line| {
            line.strip_prefix("metrics at http://")?
                .strip_suffix("/metrics")?
                .parse::<SocketAddr>()
                .ok()
        })
        .expect("member-2 printed its metrics address");
    (locator, member_1, member_2, metrics)
}

/// Sends `signal` (`-STOP`, `-CONT`) to `process`.
fn signal(process: &Process, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &process.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {}", process.name);
}

#[test]
fn a_member_stopped_until_it_is_removed_rejoins_by_itself_and_runs_on() {
    let setup = Setup::new("reconnect");
    let (locator, member_1, member_2, metrics) = three_in_turn(&setup);

    // Stopped, as a process paused far beyond the member timeout: the others remove it.
    signal(&member_2, "-STOP");
    for process in [&locator, &member_1] {
        process.wait_for("a view without member-2", |l| {
            l.trim() == "crashed: member-2"
        });
    }
    signal(&member_2, "-CONT");
    member_2.wait_for("that it was forced out", |l| {
        l.starts_with("forced out of the cluster: ") && l.ends_with("; reconnecting")
    });
    member_2.wait_for("that it is back", |l| {
        l.starts_with("reconnected as member-2 (")
    });
    // A view of three again, after the one that removed it (member-2 itself may never
    // install that one: it can learn it is out from the refusals of the others).
    let marks = [
        (&locator, "crashed: member-2"),
        (&member_1, "crashed: member-2"),
        (&member_2, "forced out of the cluster: "),
    ];
    for (process, mark) in marks {
        let deadline = std::time::Instant::now() + common::PATIENCE;
        while !process
            .transcript()
            .iter()
            .skip_while(|l| !l.trim().starts_with(mark))
            .any(|l| l.starts_with("view ") && l.contains(": 3 member(s)"))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{} printed no view of three after member-2 was removed: {:?}",
                process.name,
                process.transcript()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let text = scrape(metrics);
    assert_eq!(
        value(&text, "cohort_reconnects_total", &[]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "cohort_forced_disconnects_total", &[]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "cohort_view_members", &[]),
        Some(3.0),
        "{text}"
    );
    for mut process in [member_2, member_1, locator] {
        let status = process.terminate();
        assert!(status.success(), "{} exited with {status}", process.name);
        assert!(
            process.printed(|l| l == "left"),
            "{} left gracefully; it printed: {:?}",
            process.name,
            process.transcript()
        );
    }
}

/// The acceptance test of the two stages with real processes: a member stopped for 3 s
/// (the default preset's removal timeout is 4 s) is unreachable meanwhile, then reachable
/// again, never removed, and its process runs on.
#[test]
fn a_member_stopped_for_three_seconds_stays_in_the_view_and_runs_on() {
    let setup = Setup::new("pause");
    let (locator, member_1, member_2, metrics) = three_in_turn(&setup);

    let pause = std::time::Duration::from_secs(3);
    signal(&member_2, "-STOP");
    let stopped = std::time::Instant::now();
    // The silence is noticed, and the others are told, while it is stopped.
    for process in [&locator, &member_1] {
        process.wait_for("member-2 reported unreachable", |l| {
            l.trim() == "unreachable: member-2"
        });
    }
    let noticed = stopped.elapsed();
    assert!(noticed < pause, "noticed only after {noticed:?}");
    // The rest of the pause is the fault itself, not a wait for a condition.
    std::thread::sleep(pause.saturating_sub(stopped.elapsed()));
    signal(&member_2, "-CONT");
    for process in [&locator, &member_1] {
        process.wait_for("member-2 reachable again", |l| {
            l.trim() == "reachable again: member-2"
        });
    }
    println!(
        "stopped {pause:?}: unreachable after {noticed:?}, reachable again after {:?}",
        stopped.elapsed()
    );
    for process in [&locator, &member_1, &member_2] {
        assert!(
            !process.printed(|l| l.trim() == "crashed: member-2" || l.starts_with("forced out")),
            "{}: {:?}",
            process.name,
            process.transcript()
        );
    }
    let text = scrape(metrics);
    assert_eq!(
        value(&text, "cohort_forced_disconnects_total", &[]),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "cohort_view_members", &[]),
        Some(3.0),
        "{text}"
    );
    for mut process in [member_2, member_1, locator] {
        let status = process.terminate();
        assert!(status.success(), "{} exited with {status}", process.name);
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
