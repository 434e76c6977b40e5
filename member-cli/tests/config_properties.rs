//! The config file read back, for arbitrary values.
//!
//! Checked: a config file written with any valid name, credentials, kind, transport,
//! addresses (IPv4 and IPv6, any port), locators, durations (in ms, s, m or bare seconds)
//! and switches parses, through `cohort_member::config::parse`, to exactly those values.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use cohort_member::config::parse;
use cohort_membership::Protocol;
use cohort_transport::MemberKind;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};

/// The values a generated config file sets.
#[derive(Clone, Debug)]
struct Written {
    name: String,
    kind: (&'static str, MemberKind),
    transport: (&'static str, Protocol),
    bind: SocketAddr,
    advertise: Option<SocketAddr>,
    locators: Vec<SocketAddr>,
    timeouts: [(String, Duration); 4],
    partition_detection: bool,
    username: String,
    metrics: Option<SocketAddr>,
    require_authentication: bool,
    endpoint_identification: bool,
}

impl Written {
    fn text(&self) -> String {
        let list = |addresses: &[SocketAddr]| {
            let quoted: Vec<String> = addresses.iter().map(|a| format!("\"{a}\"")).collect();
            quoted.join(", ")
        };
        let mut text = format!(
            "name = {}\nkind = \"{}\"\ntransport = \"{}\"\nbind-address = \"{}\"\n\
             locators = [{}]\nenable-network-partition-detection = {}\n\
             security-username = {}\n",
            toml_string(&self.name),
            self.kind.0,
            self.transport.0,
            self.bind,
            list(&self.locators),
            self.partition_detection,
            toml_string(&self.username),
        );
        let keys = [
            "member-timeout",
            "final-check-timeout",
            "join-timeout",
            "leave-timeout",
        ];
        for (key, (written, _)) in keys.iter().zip(&self.timeouts) {
            text.push_str(&format!("{key} = \"{written}\"\n"));
        }
        if let Some(address) = self.advertise {
            text.push_str(&format!("advertise-address = \"{address}\"\n"));
        }
        if let Some(address) = self.metrics {
            text.push_str(&format!("metrics-address = \"{address}\"\n"));
        }
        text.push_str(&format!(
            "\n[ssl]\nca = \"ca.pem\"\ncertificate = \"node.pem\"\nprivate-key = \"node-key.pem\"\n\
             require-authentication = {}\nendpoint-identification-enabled = {}\n",
            self.require_authentication, self.endpoint_identification
        ));
        text
    }
}

/// `text` as a TOML basic string, escaped.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn address() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

/// A duration as people write it, and what it means.
fn duration() -> impl Strategy<Value = (String, Duration)> {
    prop_oneof![
        (0u64..100_000_000).prop_map(|n| (format!("{n}ms"), Duration::from_millis(n))),
        (0u64..1_000_000).prop_map(|n| (format!("{n}s"), Duration::from_secs(n))),
        (0u64..100_000).prop_map(|n| (format!("{n}"), Duration::from_secs(n))),
        (0u64..10_000).prop_map(|n| (format!("{n}m"), Duration::from_secs(n * 60))),
    ]
}

fn written() -> impl Strategy<Value = Written> {
    let kind = prop_oneof![
        Just(("member", MemberKind::Member)),
        Just(("locator", MemberKind::Locator)),
        Just(("admin", MemberKind::Admin)),
    ];
    let transport = prop_oneof![
        Just(("quic", Protocol::Quic)),
        Just(("legacy", Protocol::Legacy)),
        Just(("bridge", Protocol::Bridge)),
    ];
    let names = ("\\PC{0,30}", "\\PC{0,30}", kind, transport);
    let addresses = (
        address(),
        prop::option::of(address()),
        prop::collection::vec(address(), 0..4),
        prop::option::of(address()),
    );
    let timeouts = (duration(), duration(), duration(), duration());
    let switches = any::<[bool; 3]>();
    (names, addresses, timeouts, switches).prop_map(
        |((name, username, kind, transport), (bind, advertise, locators, metrics), t, s)| Written {
            name,
            kind,
            transport,
            bind,
            advertise,
            locators,
            timeouts: [t.0, t.1, t.2, t.3],
            partition_detection: s[0],
            username,
            metrics,
            require_authentication: s[1],
            endpoint_identification: s[2],
        },
    )
}

/// Checks one generated config against what `parse` makes of it; `certs` holds the
/// certificate files it names (only their existence is checked when a config is read).
fn reads_back(written: &Written, certs: &Path) -> Result<(), TestCaseError> {
    let text = written.text();
    let settings = match parse(&text, certs) {
        Ok(settings) => settings,
        Err(error) => return Err(TestCaseError::fail(format!("{error}\n{text}"))),
    };
    let member = settings.member;
    prop_assert_eq!(member.identity.name.as_str(), written.name.as_str());
    prop_assert_eq!(member.identity.kind, written.kind.1);
    prop_assert_eq!(member.protocol, written.transport.1);
    prop_assert_eq!(member.identity.bind, written.bind);
    prop_assert_eq!(member.identity.advertise, written.advertise);
    prop_assert_eq!(&member.locators, &written.locators);
    let read = [
        member.member_timeout,
        member.final_check_timeout,
        member.join_timeout,
        member.leave_timeout,
    ];
    for ((text, want), got) in written.timeouts.iter().zip(read) {
        prop_assert_eq!(got, *want, "{} read as {:?}", text, got);
    }
    prop_assert_eq!(member.partition_detection, written.partition_detection);
    prop_assert_eq!(
        member.credentials.properties.get("security-username"),
        Some(&written.username)
    );
    prop_assert_eq!(settings.metrics_address, written.metrics);
    prop_assert_eq!(
        member.tls.require_authentication,
        written.require_authentication
    );
    prop_assert_eq!(
        member.tls.endpoint_identification,
        written.endpoint_identification
    );
    Ok(())
}

#[test]
fn a_written_config_reads_back_as_written() {
    let certs = std::env::temp_dir().join(format!(
        "cohort-member-config-properties-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&certs).expect("create a test directory");
    for name in ["ca.pem", "node.pem", "node-key.pem"] {
        std::fs::write(certs.join(name), "placeholder").expect("write a test file");
    }
    let mut runner = TestRunner::new(ProptestConfig::with_cases(256));
    let result = runner.run(&written(), |written| reads_back(&written, &certs));
    std::fs::remove_dir_all(&certs).expect("clean up");
    if let Err(error) = result {
        panic!("{error}");
    }
}
