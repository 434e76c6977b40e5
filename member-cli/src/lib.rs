//! cohort-member as a library: the parts of the `cohort-member` process that other code
//! (its fuzz target, its tests) uses without starting a member.
//!
//! - [`config`]: the member's TOML configuration file and the command-line flags that
//!   override its keys, read into the settings the process runs with.

pub mod config;
