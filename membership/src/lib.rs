//! cohort-membership: one consistent, ordered membership view for a cluster.
//!
//! Most users add the `cohort` crate instead, which re-exports this crate's embedding API
//! (and what it takes and returns from the other cohort crates) in one place.
//!
//! # Start here
//!
//! A [`Member`] is one process of the cluster: [`Member::start`] (or
//! [`Member::builder`], to subscribe before it joins) binds its QUIC socket, asks the
//! locators for the cluster and joins it; from then on it holds the view every member
//! agrees on, sends and receives your own message types, and leaves with
//! [`Member::leave`]. Every member needs a certificate from the cluster's CA: here an
//! in-memory one from `cohort-certs`, as for tests and embedded clusters (from files:
//! `TlsSettings::from_files`). This runs a locator and one member in one process, with
//! an own message type, on a current-thread tokio runtime (any flavour will do):
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use std::time::Duration;
//!
//! use cohort_certs::{CertificateAuthority, MemberRequest};
//! use cohort_membership::{Member, MemberConfig, MembershipEvent};
//! use cohort_transport::{MemberKind, Message, Priority, Tag, TlsSettings};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! struct Greeting(String);
//!
//! impl Message for Greeting {
//!     const TAG: Tag = Tag::from_name("start-here/greeting");
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ca = CertificateAuthority::ephemeral()?;
//! let tls = |name: &str| -> Result<TlsSettings, cohort_certs::CertError> {
//!     let request = MemberRequest::new(name, Duration::from_secs(3600))
//!         .ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
//!     let issued = ca.issue(&request)?;
//!     Ok(TlsSettings::from_pem(
//!         ca.certificate_pem(),
//!         issued.certificate_pem,
//!         issued.private_key_pem,
//!     ))
//! };
//!
//! // A locator with no other locator founds the cluster.
//! let mut config = MemberConfig::new(tls("locator-1")?);
//! config.identity.name = "locator-1".into();
//! config.identity.kind = MemberKind::Locator;
//! let locator = Member::start(config).await?;
//!
//! // A member finds it through the locator; it subscribes before it joins, so nothing
//! // sent to it once it is in a view is missed.
//! let mut config = MemberConfig::new(tls("member-1")?);
//! config.identity.name = "member-1".into();
//! config.locators = vec![locator.address()];
//! let mut builder = Member::builder(config);
//! let mut greetings = builder.subscribe::<Greeting>()?;
//! let member = builder.start().await?;
//! assert_eq!(member.view().len(), 2);
//!
//! let mut events = locator.events();
//! let outcome = locator.send(
//!     &Greeting("welcome".into()),
//!     Priority::High,
//!     std::slice::from_ref(member.id()),
//! )?;
//! assert!(outcome.is_complete());
//! let greeting = greetings.recv().await.expect("the greeting");
//! assert_eq!(greeting.message.0, "welcome");
//! assert_eq!(greeting.from, *locator.id());
//!
//! // Leaving installs a view without the member everywhere.
//! assert!(member.leave().await);
//! loop {
//!     if let MembershipEvent::ViewInstalled { left, .. } = events.recv().await? {
//!         if !left.is_empty() {
//!             break;
//!         }
//!     }
//! }
//! assert!(locator.leave().await);
//! # Ok(())
//! # }
//! ```
//!
//! Everything documented here is at the crate root; the modules behind it are private
//! (`detector` and `view_file` are public but hidden, for the bench and tests):
//! - `member`: [`Member`], the public front door: it binds the messenger, finds the
//!   cluster through its locators, joins it, and drives [`Gms`] on tokio.
//! - `gms`: [`Gms`], the membership protocol as a sans-IO state machine (Geode's model):
//!   authenticated joins through the coordinator, batching, view changes decided by a
//!   weighted majority of the view they replace (one Paxos decree each), graceful leave.
//!   Time is passed in and outputs are polled; it never reads a clock or does I/O, so a
//!   test can run a thousand members deterministically in virtual time.
//! - `detector`: the failure detector (heartbeats around the view ring, suspicion after
//!   the member timeout, pause awareness), owned by [`Gms`].
//! - `discovery`: deciding from locators' answers whom to join, or whether to found the
//!   cluster (how locators started together agree on one founder; [`NoFounding`] says
//!   why a locator did not).
//! - `view_file`: the view a locator persists to find the cluster again after a restart.
//! - `messages`: what members say to each other ([`GmsMessage`], one stable tag), the
//!   heartbeat, and the discovery and final-check queries.
//! - [`metrics`]: every counter of a member at once ([`Member::metrics`]); with the
//!   `prometheus` feature, as OpenMetrics series for a `prometheus-client` registry.
//! - `auth`: the pluggable [`Authenticator`] that judges joiners' credentials.
//!

mod auth;
#[doc(hidden)]
pub mod detector;
mod discovery;
mod gms;
mod member;
mod messages;
pub mod metrics;
mod rival;
#[doc(hidden)]
pub mod view_file;

pub use auth::{AllowAll, Authenticator, Credentials, SharedSecret};
pub use discovery::NoFounding;
pub use gms::{CheckOutcome, Gms, GmsConfig, GmsStats, INDIRECT_PROBES, MembershipEvent, Output};
pub use member::{
    AskLocatorError, EventStream, LocatorReport, Member, MemberBuilder, MemberConfig, MissedEvents,
    Preset, Protocol, StartError, ask_locator,
};
pub use messages::{
    Ballot, Decision, DiscoveryAnswer, FinalCheck, FindCoordinator, GmsMessage, Heartbeat,
    JoinRejection, LeaseMessage, Proposal, ReachabilityMessage, Standing, ViewCheck,
    ViewCheckAnswer,
};
pub use metrics::MemberMetrics;
