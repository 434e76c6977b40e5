//! cohort-membership: one consistent, ordered membership view for a cluster.
//!
//! - [`gms`]: [`Gms`], the membership protocol as a sans-IO state machine (Geode's model):
//!   authenticated joins through the coordinator, batching, two-phase view installation,
//!   graceful leave. Time is passed in and outputs are polled; it never reads a clock or
//!   does I/O, so a test can run a thousand members deterministically in virtual time.
//! - [`messages`]: what members say to each other ([`GmsMessage`], one stable tag).
//! - [`auth`]: the pluggable [`Authenticator`] that judges joiners' credentials.
//!
//! The tokio driver (`Member`), locators and failure detection build on this core.

pub mod auth;
pub mod gms;
pub mod messages;

pub use auth::{AllowAll, Authenticator, Credentials, SharedSecret};
pub use gms::{Gms, GmsConfig, MembershipEvent, Output};
pub use messages::{GmsMessage, JoinRejection};
