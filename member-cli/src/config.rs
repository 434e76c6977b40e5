//! The member's configuration file (TOML) with Geode's property names, and command-line
//! flags that override any of its keys.
//!
//! ```text
//! FILE ─► toml::Table ─► each `--key value` flag written into it (`--ssl-ca` is `ssl.ca`)
//!      ─► FileConfig (unknown keys refused, by name) ─► checked values
//!      ─► the files [ssl] names exist ─► Settings { member: MemberConfig, metrics_address }
//! ```
//!
//! [`load`] reads a file and applies flags; [`parse`] takes the text alone. Both check every
//! value before looking at the disk, so a mistake in the text is reported as such even when
//! the certificate files are missing too.
//!
//! ```toml
//! name = "node-1"
//! kind = "member"                       # member, locator or admin
//! bind-address = "127.0.0.1:10400"
//! locators = ["127.0.0.1:10334"]
//! preset = "lan"                        # lan, lan-fast or wan: the timeouts below, initial RTT
//! member-timeout = "1s"                 # ms, s or m; overrides the preset's
//! removal-timeout = "4s"                # how long a silent member is unreachable first
//! enable-network-partition-detection = true
//! disable-auto-reconnect = false        # true: stay out once forced out of the cluster
//! transport = "quic"                    # quic, legacy or bridge
//! metrics-address = "127.0.0.1:9464"    # optional: serve /metrics (Prometheus) here
//!
//! [ssl]
//! ca = "certs/ca.pem"
//! certificate = "certs/node-1.pem"
//! private-key = "certs/node-1-key.pem"
//! require-authentication = true
//! endpoint-identification-enabled = false
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cohort_membership::{Credentials, MemberConfig, Preset, Protocol};
use cohort_transport::{MemberKind, TlsSettings};
use serde::Deserialize;

/// Why the configuration cannot be used. Each names the key (or file) at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has an unknown key or a value of the wrong type.
    #[error("{origin}: {message}")]
    Parse {
        /// The file, or "the command line".
        origin: String,
        /// What the parser said, with the key and position.
        message: String,
    },
    /// A value that does not mean anything for its key.
    #[error("{key} = {value:?}: {reason}")]
    Value {
        /// The key.
        key: &'static str,
        /// The value given.
        value: String,
        /// What was expected.
        reason: &'static str,
    },
    /// A file the configuration names does not exist or cannot be read.
    #[error("{key}: cannot read {path}: {source}")]
    File {
        /// The key naming it.
        key: &'static str,
        /// The path.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A required key is missing.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A flag without its value, or not of the form `--key value`.
    #[error("flag {0}: expected --key value (or --key=value)")]
    Flag(String),
}

/// The file's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    name: Option<String>,
    kind: Option<String>,
    bind_address: Option<String>,
    advertise_address: Option<String>,
    locators: Option<Vec<String>>,
    preset: Option<String>,
    member_timeout: Option<String>,
    final_check_timeout: Option<String>,
    removal_timeout: Option<String>,
    join_timeout: Option<String>,
    leave_timeout: Option<String>,
    enable_network_partition_detection: Option<bool>,
    disable_auto_reconnect: Option<bool>,
    working_dir: Option<PathBuf>,
    transport: Option<String>,
    security_username: Option<String>,
    security_password: Option<String>,
    metrics_address: Option<String>,
    ssl: Option<SslConfig>,
}

/// Everything the file and flags say: the member's configuration, and what the process
/// around it does.
#[derive(Debug)]
pub struct Settings {
    /// The member.
    pub member: MemberConfig,
    /// Where to serve metrics over HTTP (`metrics-address`), if anywhere.
    pub metrics_address: Option<SocketAddr>,
}

/// The `[ssl]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SslConfig {
    ca: Option<PathBuf>,
    certificate: Option<PathBuf>,
    private_key: Option<PathBuf>,
    require_authentication: Option<bool>,
    endpoint_identification_enabled: Option<bool>,
}

/// Reads `path` (if any), applies `flags` (`--key value` pairs, in order), and builds the
/// member's settings. Relative file names in the file are taken relative to its
/// directory; those given as flags, relative to the working directory.
pub fn load(path: Option<&Path>, flags: &[String]) -> Result<Settings, ConfigError> {
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let base = path.parent().map(Path::to_owned).unwrap_or_default();
            from_text(&text, &path.display().to_string(), &base, flags)
        }
        None => from_table(toml::Table::new(), "the command line", flags),
    }
}

/// Builds the member's settings from the text of a config file, as [`load`] does for a
/// file without flags. Relative file names in the text are taken relative to `base` (the
/// file's directory). Every value is parsed and checked before the files named in `[ssl]`
/// are looked for.
pub fn parse(text: &str, base: &Path) -> Result<Settings, ConfigError> {
    from_text(text, "the configuration", base, &[])
}

/// The text of a config file (named `origin` in errors), then the flags.
fn from_text(
    text: &str,
    origin: &str,
    base: &Path,
    flags: &[String],
) -> Result<Settings, ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
        origin: origin.to_owned(),
        message: e.to_string(),
    })?;
    from_table(absolutize_files(table, base), origin, flags)
}

/// A file's table (or an empty one), then the flags.
fn from_table(
    mut table: toml::Table,
    origin: &str,
    flags: &[String],
) -> Result<Settings, ConfigError> {
    apply_flags(&mut table, flags)?;
    let file: FileConfig =
        FileConfig::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
    build(file)
}

/// Makes the `[ssl]` file names and `working-dir` of a file relative to its directory.
fn absolutize_files(mut table: toml::Table, base: &Path) -> toml::Table {
    let fix = |value: &mut toml::Value| {
        if let toml::Value::String(s) = value
            && Path::new(s.as_str()).is_relative()
        {
            *s = base.join(s.as_str()).display().to_string();
        }
    };
    if let Some(toml::Value::Table(ssl)) = table.get_mut("ssl") {
        for key in ["ca", "certificate", "private-key"] {
            if let Some(value) = ssl.get_mut(key) {
                fix(value);
            }
        }
    }
    if let Some(value) = table.get_mut("working-dir") {
        fix(value);
    }
    table
}

/// Writes each `--key value` (or `--key=value`) into the table; `--ssl-x` goes to the
/// `[ssl]` table, and `--locators a,b` becomes a list.
fn apply_flags(table: &mut toml::Table, flags: &[String]) -> Result<(), ConfigError> {
    let mut rest = flags.iter();
    while let Some(flag) = rest.next() {
        let Some(key) = flag.strip_prefix("--") else {
            return Err(ConfigError::Flag(flag.clone()));
        };
        let (key, value) = match key.split_once('=') {
            Some((key, value)) => (key.to_owned(), value.to_owned()),
            None => {
                let value = rest.next().ok_or_else(|| ConfigError::Flag(flag.clone()))?;
                (key.to_owned(), value.clone())
            }
        };
        let value = flag_value(&key, &value);
        match key.strip_prefix("ssl-") {
            Some(ssl_key) => {
                let ssl = table
                    .entry("ssl")
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                match ssl {
                    toml::Value::Table(ssl) => {
                        ssl.insert(ssl_key.to_owned(), value);
                    }
                    _ => return Err(ConfigError::Flag(flag.clone())),
                }
            }
            None => {
                table.insert(key, value);
            }
        }
    }
    Ok(())
}

/// A flag's text as the TOML value its key expects.
fn flag_value(key: &str, text: &str) -> toml::Value {
    match key {
        "locators" => toml::Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        _ => match text {
            "true" => toml::Value::Boolean(true),
            "false" => toml::Value::Boolean(false),
            _ => toml::Value::String(text.to_owned()),
        },
    }
}

fn build(file: FileConfig) -> Result<Settings, ConfigError> {
    // The values first, the files `[ssl]` names last (the TLS settings are set then).
    let mut config = MemberConfig::new(TlsSettings::from_files("", "", ""));
    config.name = file.name;
    if let Some(kind) = file.kind {
        config.kind = match kind.as_str() {
            "member" => MemberKind::Member,
            "locator" => MemberKind::Locator,
            "admin" => MemberKind::Admin,
            _ => return Err(value("kind", kind, "expected member, locator or admin")),
        };
    }
    if let Some(address) = file.bind_address {
        config.bind = address_of("bind-address", address)?;
    }
    if let Some(address) = file.advertise_address {
        config.advertise = Some(address_of("advertise-address", address)?);
    }
    for locator in file.locators.unwrap_or_default() {
        config.locators.push(address_of("locators", locator)?);
    }
    // The preset first: the timeouts given one by one override its.
    if let Some(preset) = file.preset {
        let parsed: Preset = preset
            .parse()
            .map_err(|_| value("preset", preset.clone(), "expected lan, lan-fast or wan"))?;
        config = config.with_preset(parsed);
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
    ];
    for (key, text, field) in durations {
        if let Some(text) = text {
            *field = duration_of(key, text)?;
        }
    }
    if let Some(enabled) = file.enable_network_partition_detection {
        config.partition_detection = enabled;
    }
    // Geode's name says what turns it off; the member's setting says what is on.
    if let Some(disabled) = file.disable_auto_reconnect {
        config.auto_reconnect = !disabled;
    }
    // A process has a working directory of its own, so a locator run as one persists its
    // view there unless told where (the library's default is no view file).
    config.working_dir = Some(file.working_dir.unwrap_or_else(|| PathBuf::from(".")));
    if let Some(transport) = file.transport {
        config.protocol = match transport.as_str() {
            "quic" => Protocol::Quic,
            "legacy" => Protocol::Legacy,
            "bridge" => Protocol::Bridge,
            _ => {
                return Err(value(
                    "transport",
                    transport,
                    "expected quic, legacy or bridge",
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
    let metrics_address = file
        .metrics_address
        .map(|address| address_of("metrics-address", address))
        .transpose()?;
    let ssl = file
        .ssl
        .ok_or(ConfigError::Missing("[ssl] (ca, certificate, private-key)"))?;
    let ca = readable("ssl.ca", ssl.ca)?;
    let certificate = readable("ssl.certificate", ssl.certificate)?;
    let private_key = readable("ssl.private-key", ssl.private_key)?;
    let mut tls = TlsSettings::from_files(ca, certificate, private_key);
    if let Some(required) = ssl.require_authentication {
        tls.require_authentication = required;
    }
    if let Some(enabled) = ssl.endpoint_identification_enabled {
        tls.endpoint_identification = enabled;
    }
    config.tls = tls;
    Ok(Settings {
        member: config,
        metrics_address,
    })
}

fn value(key: &'static str, value: String, reason: &'static str) -> ConfigError {
    ConfigError::Value { key, value, reason }
}

fn readable(key: &'static str, path: Option<PathBuf>) -> Result<PathBuf, ConfigError> {
    let path = path.ok_or(ConfigError::Missing(key))?;
    std::fs::metadata(&path)
        .and_then(|m| match m.is_file() {
            true => Ok(()),
            false => Err(std::io::Error::other("not a file")),
        })
        .map_err(|source| ConfigError::File {
            key,
            path: path.clone(),
            source,
        })?;
    Ok(path)
}

fn address_of(key: &'static str, text: String) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        value(
            key,
            text,
            "expected an IP address and port, e.g. 127.0.0.1:10334",
        )
    })
}

/// `500ms`, `5s`, `2m`, or a plain number of seconds.
fn duration_of(key: &'static str, text: String) -> Result<Duration, ConfigError> {
    let trimmed = text.trim();
    let (number, unit) = match trimmed.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => trimmed.split_at(at),
        None => (trimmed, "s"),
    };
    let bad = || {
        value(
            key,
            text.clone(),
            "expected a duration such as 500ms, 5s or 2m",
        )
    };
    let number: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        _ => return Err(bad()),
    };
    if !(0.0..=86_400.0 * 365.0).contains(&seconds) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write a test file");
        path
    }

    fn dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "cohort-member-config-{}-{test}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create a test directory");
        for f in ["ca.pem", "node.pem", "node-key.pem"] {
            write(&dir, f, "placeholder");
        }
        dir
    }

    const SSL: &str =
        "[ssl]\nca = \"ca.pem\"\ncertificate = \"node.pem\"\nprivate-key = \"node-key.pem\"\n";

    #[test]
    fn every_key_is_read_and_flags_override_the_file() {
        let dir = dir("keys");
        let text = format!(
            "name = \"node-1\"\nkind = \"locator\"\nbind-address = \"127.0.0.1:10334\"\n\
             locators = [\"127.0.0.1:10334\"]\nmember-timeout = \"2s\"\n\
             final-check-timeout = \"300ms\"\nenable-network-partition-detection = false\n\
             disable-auto-reconnect = true\n\
             transport = \"bridge\"\nsecurity-username = \"admin\"\n\
             metrics-address = \"127.0.0.1:9464\"\n{SSL}\
             require-authentication = true\nendpoint-identification-enabled = true\n"
        );
        let path = write(&dir, "member.toml", &text);
        let flags: Vec<String> = [
            "--name",
            "node-2",
            "--member-timeout=1m",
            "--locators",
            "127.0.0.1:1,127.0.0.1:2",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let settings = load(Some(&path), &flags).expect("valid");
        assert_eq!(
            settings.metrics_address,
            Some("127.0.0.1:9464".parse().expect("literal"))
        );
        let config = settings.member;
        assert_eq!(config.name.as_deref(), Some("node-2"));
        assert_eq!(config.kind, MemberKind::Locator);
        assert_eq!(config.bind, "127.0.0.1:10334".parse().expect("literal"));
        assert_eq!(config.locators.len(), 2);
        assert_eq!(config.member_timeout, Duration::from_secs(60));
        assert_eq!(config.final_check_timeout, Duration::from_millis(300));
        assert!(!config.partition_detection);
        assert!(!config.auto_reconnect);
        assert_eq!(config.protocol, Protocol::Bridge);
        assert!(config.tls.endpoint_identification);
        assert_eq!(
            config
                .credentials
                .properties
                .get("security-username")
                .map(String::as_str),
            Some("admin")
        );
        std::fs::remove_dir_all(dir).expect("clean up");
    }

    #[test]
    fn each_mistake_is_named() {
        let dir = dir("mistakes");
        let cases = [
            (format!("colour = \"blue\"\n{SSL}"), "colour"),
            (format!("member-timeout = \"5x\"\n{SSL}"), "member-timeout"),
            (format!("kind = \"server\"\n{SSL}"), "kind"),
            (
                format!("bind-address = \"localhost\"\n{SSL}"),
                "bind-address",
            ),
            (SSL.replace("node.pem", "missing.pem"), "ssl.certificate"),
            ("name = \"x\"\n".to_owned(), "[ssl]"),
            (format!("{SSL}shoe-size = 42\n"), "shoe-size"),
            (
                format!("metrics-address = \"9464\"\n{SSL}"),
                "metrics-address",
            ),
            (
                format!("disable-auto-reconnect = \"yes\"\n{SSL}"),
                "disable-auto-reconnect",
            ),
            (format!("preset = \"lan-slow\"\n{SSL}"), "preset"),
        ];
        for (text, named) in cases {
            let path = write(&dir, "member.toml", &text);
            let error = load(Some(&path), &[]).expect_err(&text).to_string();
            assert!(error.contains(named), "{error:?} should name {named}");
        }
        let missing = load(Some(&dir.join("nope.toml")), &[]).expect_err("no file");
        assert!(missing.to_string().contains("nope.toml"), "{missing}");
        let flag = load(None, &["--name".to_owned()]).expect_err("no value");
        assert!(flag.to_string().contains("--name"), "{flag}");
        std::fs::remove_dir_all(dir).expect("clean up");
    }

    #[test]
    fn a_preset_sets_the_three_timeouts_and_keys_given_one_by_one_override_it() {
        let dir = dir("preset");
        let settings = parse(&format!("preset = \"wan\"\n{SSL}"), &dir).expect("valid");
        let config = settings.member;
        assert_eq!(
            (
                config.member_timeout,
                config.final_check_timeout,
                config.removal_timeout
            ),
            (
                Duration::from_secs(5),
                Duration::from_secs(3),
                Duration::from_secs(30)
            )
        );
        assert_eq!(config.transport.initial_rtt, Duration::from_millis(333));
        let text = format!("preset = \"lan-fast\"\nmember-timeout = \"2s\"\n{SSL}");
        let config = parse(&text, &dir).expect("valid").member;
        assert_eq!(
            config.member_timeout,
            Duration::from_secs(2),
            "the key wins"
        );
        assert_eq!(config.removal_timeout, Duration::ZERO, "the preset's");
        assert_eq!(config.transport.initial_rtt, Duration::from_millis(30));
        let config = parse(&format!("removal-timeout = \"0s\"\n{SSL}"), &dir)
            .expect("valid")
            .member;
        assert_eq!(config.removal_timeout, Duration::ZERO);
        let default = parse(SSL, &dir).expect("valid").member;
        assert_eq!(default.removal_timeout, Duration::from_secs(5), "lan");
        std::fs::remove_dir_all(dir).expect("clean up");
    }

    #[test]
    fn the_text_is_checked_before_the_files_it_names() {
        let nowhere = Path::new("no-such-directory");
        let text = format!("member-timeout = \"5x\"\n{SSL}");
        let error = parse(&text, nowhere).expect_err("bad duration");
        assert!(error.to_string().contains("member-timeout"), "{error}");
        let error = parse(SSL, nowhere).expect_err("no certificate files there");
        assert!(error.to_string().contains("ssl.ca"), "{error}");
        let dir = dir("parse");
        let settings = parse(&format!("name = \"n\"\n{SSL}"), &dir).expect("valid");
        assert_eq!(settings.member.name.as_deref(), Some("n"));
        assert!(settings.member.auto_reconnect, "on unless disabled");
        assert_eq!(settings.metrics_address, None);
        std::fs::remove_dir_all(dir).expect("clean up");
    }

    #[test]
    fn durations_read_as_people_write_them() {
        let d = |s: &str| duration_of("t", s.to_owned());
        assert_eq!(d("500ms").expect("ms"), Duration::from_millis(500));
        assert_eq!(d("5s").expect("s"), Duration::from_secs(5));
        assert_eq!(d("2m").expect("m"), Duration::from_secs(120));
        assert_eq!(d("1.5s").expect("fraction"), Duration::from_millis(1500));
        assert_eq!(d("3").expect("bare seconds"), Duration::from_secs(3));
        for bad in ["", "s", "5 parsecs", "-1s", "1e999s"] {
            assert!(d(bad).is_err(), "{bad:?}");
        }
    }
}
