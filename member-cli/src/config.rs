//! The member's configuration file (TOML) with Geode's property names, and command-line
//! flags that override any of its keys.
//!
//! ```text
//! FILE ─► toml::Table ─► each `--key value` flag written into it (`--ssl-ca` is `ssl.ca`)
//!      ─► `metrics-address` taken out (the process's own key)
//!      ─► MemberConfig's own Deserialize (unknown keys refused, values checked, by name)
//!      ─► the files [ssl] names exist ─► Settings { member: MemberConfig, metrics_address }
//! ```
//!
//! Every key but `metrics-address` is the library's: see `MemberConfig`'s documentation.
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
//! [quic]                                # optional tuning, e.g.
//! idle-timeout = "10s"
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

use cohort_membership::MemberConfig;
use cohort_transport::tls::PemSource;
use serde::Deserialize;

/// Why the configuration cannot be used. Each names the key (or file) at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has an unknown key, a value of the wrong type, or a
    /// value that cannot work for its key.
    #[error("{origin}: {message}")]
    Parse {
        /// The file, or "the command line".
        origin: String,
        /// What was wrong, with the key (and position, for TOML errors).
        message: String,
    },
    /// `metrics-address` is not an address.
    #[error("metrics-address = {0:?}: expected an IP address and port, e.g. 127.0.0.1:9464")]
    MetricsAddress(String),
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
    /// A flag without its value, or not of the form `--key value`.
    #[error("flag {0}: expected --key value (or --key=value)")]
    Flag(String),
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

/// Reads `path` (if any), applies `flags` (`--key value` pairs, in order), and builds the
/// member's settings. Relative file names in the file are taken relative to its
/// directory; those given as flags, relative to the working directory.
pub fn load(path: Option<&Path>, flags: &[String]) -> Result<Settings, LoadError> {
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
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
pub fn parse(text: &str, base: &Path) -> Result<Settings, LoadError> {
    from_text(text, "the configuration", base, &[])
}

/// The text of a config file (named `origin` in errors), then the flags.
fn from_text(
    text: &str,
    origin: &str,
    base: &Path,
    flags: &[String],
) -> Result<Settings, LoadError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| LoadError::Parse {
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
) -> Result<Settings, LoadError> {
    apply_flags(&mut table, flags)?;
    let metrics_address = match table.remove("metrics-address") {
        None => None,
        Some(toml::Value::String(text)) => {
            Some(text.parse().map_err(|_| LoadError::MetricsAddress(text))?)
        }
        Some(other) => return Err(LoadError::MetricsAddress(format!("{other:?}"))),
    };
    let working_dir_given = table.contains_key("working-dir");
    let mut member =
        MemberConfig::deserialize(toml::Value::Table(table)).map_err(|e| LoadError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
    // A process has a working directory of its own, so a locator run as one persists its
    // view there unless told where (the library's default is no view file).
    if !working_dir_given {
        member.working_dir = Some(PathBuf::from("."));
    }
    // The values are checked; now the files `[ssl]` names.
    let tls = &member.tls;
    for (key, source) in [
        ("ssl.ca", &tls.ca),
        ("ssl.certificate", &tls.certificate),
        ("ssl.private-key", &tls.private_key),
    ] {
        if let PemSource::File(path) = source {
            readable(key, path)?;
        }
    }
    Ok(Settings {
        member,
        metrics_address,
    })
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
fn apply_flags(table: &mut toml::Table, flags: &[String]) -> Result<(), LoadError> {
    let mut rest = flags.iter();
    while let Some(flag) = rest.next() {
        let Some(key) = flag.strip_prefix("--") else {
            return Err(LoadError::Flag(flag.clone()));
        };
        let (key, value) = match key.split_once('=') {
            Some((key, value)) => (key.to_owned(), value.to_owned()),
            None => {
                let value = rest.next().ok_or_else(|| LoadError::Flag(flag.clone()))?;
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
                    _ => return Err(LoadError::Flag(flag.clone())),
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

fn readable(key: &'static str, path: &Path) -> Result<(), LoadError> {
    std::fs::metadata(path)
        .and_then(|m| match m.is_file() {
            true => Ok(()),
            false => Err(std::io::Error::other("not a file")),
        })
        .map_err(|source| LoadError::File {
            key,
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_membership::Protocol;
    use cohort_transport::MemberKind;
    use std::time::Duration;

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
        assert_eq!(config.identity.name, "node-2");
        assert_eq!(config.identity.kind, MemberKind::Locator);
        assert_eq!(
            config.identity.bind,
            "127.0.0.1:10334".parse().expect("literal")
        );
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
        assert_eq!(settings.member.identity.name, "n");
        assert!(settings.member.auto_reconnect, "on unless disabled");
        assert_eq!(settings.metrics_address, None);
        std::fs::remove_dir_all(dir).expect("clean up");
    }
}
