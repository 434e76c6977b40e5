//! cohort-membership: one consistent, ordered membership view for a cluster.
//!
//! - [`member`]: [`Member`], the public front door: it binds the messenger, finds the
//!   cluster through its locators, joins it, and drives [`Gms`] on tokio.
//! - [`gms`]: [`Gms`], the membership protocol as a sans-IO state machine (Geode's model):
//!   authenticated joins through the coordinator, batching, view changes decided by a
//!   weighted majority of the view they replace (one Paxos decree each), graceful leave. Time is passed in and outputs are polled; it never reads a clock or
//!   does I/O, so a test can run a thousand members deterministically in virtual time.
//! - [`detector`]: the failure detector (heartbeats around the view ring, suspicion after
//!   the member timeout, pause awareness), owned by [`Gms`].
//! - [`discovery`]: deciding from locators' answers whom to join, or whether to found the
//!   cluster (how locators started together agree on one founder).
//! - [`view_file`]: the view a locator persists to find the cluster again after a restart.
//! - [`messages`]: what members say to each other ([`GmsMessage`], one stable tag), the
//!   heartbeat, and the discovery and final-check queries.
//! - [`auth`]: the pluggable [`Authenticator`] that judges joiners' credentials.
//!

pub mod auth;
pub mod detector;
pub mod discovery;
pub mod gms;
pub mod member;
pub mod messages;
mod rival;
pub mod view_file;

pub use auth::{AllowAll, Authenticator, Credentials, SharedSecret};
pub use gms::{CheckOutcome, Gms, GmsConfig, GmsStats, MembershipEvent, Output};
pub use member::{
    ConfigError, Member, MemberBuilder, MemberConfig, Preset, Protocol, StartError, Transport,
};
pub use messages::{
    Ballot, Decision, DiscoveryAnswer, FinalCheck, FindCoordinator, GmsMessage, Heartbeat,
    JoinRejection, LeaseMessage, Proposal, ReachabilityMessage, Standing, ViewCheck,
    ViewCheckAnswer,
};
