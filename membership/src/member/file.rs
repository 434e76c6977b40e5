//! How a [`MemberConfig`] is written in a configuration file: Geode's property names in
//! kebab case, read with serde from any self-describing format (TOML for `cohort-member`).
//!
//! ```text
//! text ─► serde ─► ConfigFile (unknown keys refused, by name)
//!      ─► MemberConfig::try_from: preset first, then each key given; values checked and
//!         named by key ─► MemberConfig (TLS files named, not yet read)
//! ```
//!
//! Every key may be left out, except the `[ssl]` table's three files. `[quic]` and
//! `[legacy]` are the tuning tables ([`QuicConfig`], [`LegacyConfig`]) with their own
//! kebab-case keys; the initial RTT belongs to the preset and is the top-level key
//! `initial-rtt`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cohort_legacy_udp::LegacyConfig;
use cohort_transport::settings::parse_duration;
use cohort_transport::{InvalidConfig, MemberKind, QuicConfig, TlsSettings};
use serde::Deserialize;

use super::config::{MemberConfig, Preset};
use super::transport::Protocol;
use crate::auth::Credentials;

/// The keys of a member's configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ConfigFile {
    name: Option<String>,
    kind: Option<String>,
    bind_address: Option<String>,
    advertise_address: Option<String>,
    groups: Option<Vec<String>>,
    weight_adjustment: Option<i32>,
    locators: Option<Vec<String>>,
    preset: Option<String>,
    member_timeout: Option<String>,
    final_check_timeout: Option<String>,
    removal_timeout: Option<String>,
    join_timeout: Option<String>,
    leave_timeout: Option<String>,
    initial_rtt: Option<String>,
    enable_network_partition_detection: Option<bool>,
    disable_auto_reconnect: Option<bool>,
    working_dir: Option<PathBuf>,
    transport: Option<String>,
    security_username: Option<String>,
    security_password: Option<String>,
    ssl: Option<SslTable>,
    quic: Option<QuicConfig>,
    legacy: Option<LegacyConfig>,
}

/// The `[ssl]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SslTable {
    ca: Option<PathBuf>,
    certificate: Option<PathBuf>,
    private_key: Option<PathBuf>,
    require_authentication: Option<bool>,
    endpoint_identification_enabled: Option<bool>,
}

impl TryFrom<ConfigFile> for MemberConfig {
    type Error = InvalidConfig;

    fn try_from(file: ConfigFile) -> Result<Self, InvalidConfig> {
        let ssl = file.ssl.ok_or_else(|| {
            InvalidConfig::new("[ssl]", "is required: ca, certificate and private-key")
        })?;
        let required = |key: &str, path: Option<PathBuf>| {
            path.ok_or_else(|| InvalidConfig::new(key, "is required"))
        };
        let mut tls = TlsSettings::from_files(
            required("ssl.ca", ssl.ca)?,
            required("ssl.certificate", ssl.certificate)?,
            required("ssl.private-key", ssl.private_key)?,
        );
        if let Some(required) = ssl.require_authentication {
            tls.require_authentication = required;
        }
        if let Some(enabled) = ssl.endpoint_identification_enabled {
            tls.endpoint_identification = enabled;
        }
        let mut config = MemberConfig::new(tls);
        if let Some(name) = file.name {
            config.identity.name = name;
        }
        if let Some(kind) = file.kind {
            config.identity.kind = parsed("kind", &kind, kind.parse::<MemberKind>())?;
        }
        if let Some(address) = file.bind_address {
            config.identity.bind = address_of("bind-address", &address)?;
        }
        if let Some(address) = file.advertise_address {
            config.identity.advertise = Some(address_of("advertise-address", &address)?);
        }
        if let Some(groups) = file.groups {
            config.identity.attributes.groups = groups;
        }
        if let Some(adjustment) = file.weight_adjustment {
            config.identity.attributes.weight_adjustment = adjustment;
        }
        for locator in file.locators.unwrap_or_default() {
            config.locators.push(address_of("locators", &locator)?);
        }
        if let Some(quic) = file.quic {
            config.transport = quic;
        }
        if let Some(legacy) = file.legacy {
            config.legacy = legacy;
        }
        // The preset first: the timeouts given one by one override its.
        if let Some(preset) = file.preset {
            config = config.with_preset(parsed("preset", &preset, preset.parse::<Preset>())?);
        }
        let durations = [
            (
                "member-timeout",
                file.member_timeout,
                &mut config.member_timeout,
            ),
            (
                "final-check-timeout",
                file.final_check_timeout,
                &mut config.final_check_timeout,
            ),
            (
                "removal-timeout",
                file.removal_timeout,
                &mut config.removal_timeout,
            ),
            ("join-timeout", file.join_timeout, &mut config.join_timeout),
            (
                "leave-timeout",
                file.leave_timeout,
                &mut config.leave_timeout,
            ),
            (
                "initial-rtt",
                file.initial_rtt,
                &mut config.transport.initial_rtt,
            ),
        ];
        for (key, text, field) in durations {
            if let Some(text) = text {
                *field = duration_of(key, &text)?;
            }
        }
        if let Some(enabled) = file.enable_network_partition_detection {
            config.partition_detection = enabled;
        }
        // Geode's name says what turns it off; the member's setting says what is on.
        if let Some(disabled) = file.disable_auto_reconnect {
            config.auto_reconnect = !disabled;
        }
        config.working_dir = file.working_dir;
        if let Some(protocol) = file.transport {
            config.protocol = match protocol.as_str() {
                "quic" => Protocol::Quic,
                "legacy" => Protocol::Legacy,
                "bridge" => Protocol::Bridge,
                _ => {
                    return Err(InvalidConfig::new(
                        "transport",
                        format!("{protocol:?}: expected quic, legacy or bridge"),
                    ));
                }
            };
        }
        let mut credentials = Credentials::default();
        if let Some(user) = file.security_username {
            credentials = credentials.with("security-username", user);
        }
        if let Some(password) = file.security_password {
            credentials = credentials.with("security-password", password);
        }
        config.credentials = credentials;
        Ok(config)
    }
}

fn parsed<T>(key: &str, text: &str, result: Result<T, String>) -> Result<T, InvalidConfig> {
    result.map_err(|reason| InvalidConfig::new(key, format!("{text:?}: {reason}")))
}

fn address_of(key: &str, text: &str) -> Result<SocketAddr, InvalidConfig> {
    text.parse().map_err(|_| {
        InvalidConfig::new(
            key,
            format!("{text:?}: expected an IP address and port, e.g. 127.0.0.1:10334"),
        )
    })
}

fn duration_of(key: &str, text: &str) -> Result<Duration, InvalidConfig> {
    parse_duration(text).map_err(|reason| InvalidConfig::new(key, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSL: &str =
        "[ssl]\nca = \"ca.pem\"\ncertificate = \"m.pem\"\nprivate-key = \"m-key.pem\"\n";

    fn read(text: &str) -> Result<MemberConfig, String> {
        toml::from_str::<MemberConfig>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn every_key_lands_in_its_field_and_tuning_tables_in_theirs() {
        let text = format!(
            "name = \"node-1\"\nkind = \"locator\"\nbind-address = \"127.0.0.1:10334\"\n\
             advertise-address = \"127.0.0.2:10334\"\ngroups = [\"a\", \"b\"]\n\
             weight-adjustment = 7\nlocators = [\"127.0.0.1:10335\"]\n\
             initial-rtt = \"50ms\"\ntransport = \"bridge\"\n\
             security-username = \"u\"\n{SSL}\n[quic]\nidle-timeout = \"20s\"\n\
             max-concurrent-dials = 6\n\n[legacy]\nwindow = 32\n"
        );
        let config = read(&text).expect("valid");
        assert_eq!(config.identity.name, "node-1");
        assert_eq!(config.identity.kind, MemberKind::Locator);
        assert_eq!(config.identity.bind.port(), 10334);
        assert_eq!(config.identity.advertise, "127.0.0.2:10334".parse().ok());
        assert_eq!(config.identity.attributes.groups, ["a", "b"]);
        assert_eq!(config.identity.attributes.weight_adjustment, 7);
        assert_eq!(config.transport.idle_timeout, Duration::from_secs(20));
        assert_eq!(config.transport.max_concurrent_dials.get(), 6);
        assert_eq!(config.transport.initial_rtt, Duration::from_millis(50));
        assert_eq!(config.legacy.window.get(), 32);
        assert_eq!(config.protocol, Protocol::Bridge);
        assert_eq!(config.working_dir, None, "no view file unless told where");
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn the_preset_comes_first_and_a_tuning_table_keeps_its_initial_rtt() {
        let wan = read(&format!(
            "preset = \"wan\"\n{SSL}[quic]\nidle-timeout = \"40s\"\n"
        ))
        .expect("valid");
        assert_eq!(wan.removal_timeout, Duration::from_secs(30));
        assert_eq!(wan.transport.initial_rtt, Duration::from_millis(333));
        assert_eq!(wan.transport.idle_timeout, Duration::from_secs(40));
        let default = read(SSL).expect("valid");
        let new = MemberConfig::new(default.tls.clone());
        assert_eq!(
            format!("{default:?}"),
            format!("{new:?}"),
            "nothing but TLS set"
        );
    }

    #[test]
    fn each_mistake_names_its_key() {
        let cases = [
            ("colour = \"blue\"\n", "colour"),
            ("kind = \"server\"\n", "kind"),
            ("bind-address = \"localhost\"\n", "bind-address"),
            ("member-timeout = \"5x\"\n", "member-timeout"),
            ("preset = \"lan-slow\"\n", "preset"),
            ("transport = \"tcp\"\n", "transport"),
            ("[quic]\nidle-timeuot = \"1s\"\n", "idle-timeuot"),
            ("[quic]\nmax-concurrent-dials = 0\n", "nonzero"),
            ("[legacy]\nack-delay = \"soon\"\n", "not a duration"),
        ];
        for (text, named) in cases {
            // The tables come after the top-level keys, as TOML requires.
            let text = match text.starts_with('[') {
                true => format!("{SSL}{text}"),
                false => format!("{text}{SSL}"),
            };
            let error = read(&text).expect_err(&text);
            assert!(error.contains(named), "{error:?} should name {named}");
        }
        let error = read("name = \"x\"\n").expect_err("no [ssl]");
        assert!(error.contains("[ssl]"), "{error}");
        let error = read("[ssl]\nca = \"ca.pem\"\n").expect_err("no certificate");
        assert!(error.contains("ssl.certificate"), "{error}");
    }

    #[test]
    fn validate_names_a_nested_setting_by_its_path() {
        let mut config = read(&format!("kind = \"locator\"\n{SSL}")).expect("valid");
        config.transport.idle_timeout = Duration::ZERO;
        let error = config.validate().expect_err("zero idle timeout");
        assert_eq!(error.setting, "transport.idle_timeout");
        let mut config = read(SSL).expect("valid");
        assert_eq!(
            config.validate().expect_err("no locators").setting,
            "locators"
        );
        config.locators = vec!["127.0.0.1:1".parse().expect("literal")];
        config.identity.bind = "0.0.0.0:0".parse().expect("literal");
        assert_eq!(
            config.validate().expect_err("unadvertisable").setting,
            "identity.bind"
        );
        config.identity.advertise = "10.0.0.1:0".parse().ok();
        config.member_timeout = Duration::from_millis(300);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn debug_lists_every_field_and_no_secret() {
        let tls = TlsSettings::from_pem("CA TEXT", "CERT TEXT", "SECRET KEY TEXT");
        let config = MemberConfig {
            credentials: Credentials::default().with("security-password", "hunter2"),
            ..MemberConfig::new(tls)
        };
        let shown = format!("{config:?}");
        for field in [
            "identity",
            "locators",
            "tls",
            "credentials",
            "authenticator",
            "member_timeout",
            "final_check_timeout",
            "removal_timeout",
            "partition_detection",
            "join_timeout",
            "leave_timeout",
            "batch_interval",
            "discovery_interval",
            "working_dir",
            "transport",
            "protocol",
            "legacy",
            "auto_reconnect",
        ] {
            assert!(
                shown.contains(&format!("{field}:")),
                "no {field} in {shown}"
            );
        }
        for secret in ["SECRET KEY TEXT", "hunter2"] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
    }
}
