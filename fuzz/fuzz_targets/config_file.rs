//! The `cohort-member` config file: TOML text through `cohort_member::config::parse`, with
//! relative file names taken from a directory that holds the certificate files a config
//! names (`ca.pem`, `node.pem`, `node-key.pem`), so a valid config is read to the end.
//!
//! Whatever the text, the result is settings or an error naming the problem, never a
//! panic.
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use cohort_member::config::parse;
use libfuzzer_sys::fuzz_target;

static BASE: LazyLock<std::path::PathBuf> = LazyLock::new(cohort_fuzz::config_base);

fuzz_target!(|data: &[u8]| {
    // The member reads its file with `read_to_string`: text that is not UTF-8 is refused
    // before it reaches the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text, &BASE) {
        Ok(settings) => {
            let member = settings.member;
            for timeout in [
                member.member_timeout,
                member.final_check_timeout,
                member.join_timeout,
                member.leave_timeout,
            ] {
                assert!(timeout <= Duration::from_secs(86_400 * 365));
            }
            assert!(member.locators.len() <= text.len());
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
});
