//! The convention every cohort configuration follows: one error shape,
//! [`InvalidConfig`], and how durations are written in configuration files.
//!
//! Each settings type (`Identity`, `QuicConfig`, the legacy protocol's `LegacyConfig`, the
//! membership protocol's `GmsConfig` and `MemberConfig`) has `Default` or `new(required)`,
//! a `validate()` that returns the first [`InvalidConfig`], and `NonZero*` types for
//! counts that must be positive ([`count`] makes them in constants). A settings type that
//! holds another names the inner setting with a dotted path (`transport.max_frame_bytes`).
//! Those read from configuration files (`QuicConfig`, `LegacyConfig`, and `MemberConfig`
//! from the keys of `cohort-member`'s file) implement `serde::Deserialize` with kebab-case
//! keys, a default for every key left out, and durations as [`duration`] reads them.

use std::num::NonZeroUsize;
use std::time::Duration;

/// A setting that cannot work: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {setting}: {reason}")]
pub struct InvalidConfig {
    /// The setting, as a field path (`transport.idle_timeout`).
    pub setting: String,
    /// What is wrong with its value.
    pub reason: String,
}

impl InvalidConfig {
    /// `setting` cannot work, because of `reason`.
    pub fn new(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        InvalidConfig {
            setting: setting.into(),
            reason: reason.into(),
        }
    }

    /// The same error for a setting nested under `outer` (`transport` and `idle_timeout`
    /// make `transport.idle_timeout`).
    #[must_use = "the prefixed error is returned"]
    pub fn within(mut self, outer: &str) -> Self {
        self.setting = format!("{outer}.{}", self.setting);
        self
    }
}

/// `n` as a count that must be positive, for `Default` impls and constants; zero does not
/// compile in a constant (and panics elsewhere).
pub const fn count(n: usize) -> NonZeroUsize {
    match NonZeroUsize::new(n) {
        Some(n) => n,
        None => panic!("a count of zero"),
    }
}

/// Refuses zero for a duration that must be positive; the error names `setting`. Every
/// settings type's `validate` checks its durations with it, so they all say the same.
pub fn positive(setting: &str, value: Duration) -> Result<(), InvalidConfig> {
    match value.is_zero() {
        true => Err(InvalidConfig::new(setting, "must be longer than zero")),
        false => Ok(()),
    }
}

/// Parses a duration as configuration files write it: `500ms`, `5s`, `2m`, `1h`, or a
/// plain number of seconds (`1.5`). At most a year.
///
/// ```
/// # use std::time::Duration;
/// use cohort_transport::settings::parse_duration;
/// assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
/// assert!(parse_duration("soon").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let (number, unit) = match trimmed.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => trimmed.split_at(at),
        None => (trimmed, "s"),
    };
    let bad = || format!("{text:?} is not a duration such as 500ms, 5s or 2m");
    let number: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(bad()),
    };
    if !(0.0..=86_400.0 * 365.0).contains(&seconds) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `serde(with = ...)` for a [`Duration`] written as [`parse_duration`] reads it, or as a
/// number of seconds.
pub mod duration {
    use std::time::Duration;

    use serde::de::{self, Deserializer, Visitor};

    /// Reads `"500ms"`, `"5s"`, `"2m"`, or a number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as 500ms, 5s or 2m")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
                super::parse_duration(text).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, seconds: u64) -> Result<Duration, E> {
                super::parse_duration(&seconds.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, seconds: i64) -> Result<Duration, E> {
                super::parse_duration(&seconds.to_string()).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, seconds: f64) -> Result<Duration, E> {
                super::parse_duration(&seconds.to_string()).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_every_unit_and_bad_ones_say_why() {
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 3 s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "5 parsecs", "-1s", "1e9m"] {
            let error = parse_duration(bad).expect_err(bad);
            assert!(error.contains("not a duration"), "{error}");
        }
    }

    #[test]
    fn a_nested_setting_is_named_by_its_path() {
        let error =
            InvalidConfig::new("idle_timeout", "must be longer than zero").within("transport");
        assert_eq!(
            error.to_string(),
            "invalid setting transport.idle_timeout: must be longer than zero"
        );
    }
}
