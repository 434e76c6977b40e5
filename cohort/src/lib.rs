//! cohort: one consistent, ordered membership view for a cluster of processes, and a
//! messenger to talk inside it. This is the crate to add; every type of the embedding API
//! is here.
//!
//! # Start here
//!
//! A [`Member`] is one process of the cluster: [`Member::builder`] (or [`Member::start`])
//! binds its QUIC socket, asks the locators for the cluster and joins it; from then on it
//! holds the view every member agrees on, sends and receives your own message types, and
//! leaves with [`Member::leave`]. It runs on tokio, on a runtime of any flavour, and
//! [`Member`] is a cheap handle to clone into every task that needs it.
//!
//! Every member needs a certificate from the cluster's CA (mutual TLS is the default):
//! here an in-memory one from [`certs`], as for tests and embedded clusters. This runs a
//! locator and a member in one process, with an own message type on a reliable priority
//! and as a datagram, view events and a graceful leave:
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use std::time::Duration;
//!
//! use cohort::certs::{CertError, CertificateAuthority, MemberRequest};
//! use cohort::{Member, MemberConfig, MemberKind, MembershipEvent, Message, Priority, Tag};
//! use cohort::TlsSettings;
//! use serde::{Deserialize, Serialize};
//!
//! /// An own message type: any serde type with a tag of its own.
//! #[derive(Debug, Serialize, Deserialize)]
//! struct Greeting(String);
//!
//! impl Message for Greeting {
//!     // A tag derived from a stable name, above cohort's reserved range.
//!     const TAG: Tag = Tag::from_name("start-here/greeting");
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ca = CertificateAuthority::ephemeral()?;
//! let tls = |name: &str| -> Result<TlsSettings, CertError> {
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
//! let mut events = locator.events();
//!
//! // A member finds it through the locator. It subscribes on the builder, before it
//! // joins: a message sent to it the moment it is in a view is not missed.
//! let mut config = MemberConfig::new(tls("member-1")?);
//! config.identity.name = "member-1".into();
//! config.locators = vec![locator.address()];
//! let mut builder = Member::builder(config);
//! let mut greetings = builder.subscribe::<Greeting>()?;
//! let member = builder.start().await?;
//! assert_eq!(member.view().len(), 2);
//!
//! // Reliable: delivered exactly once, in order per priority, while the member is in
//! // the view. The outcome names every recipient it was not accepted for.
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
//! // A datagram: unreliable, and the outcome says to whom it was not even sent
//! // (`not_sent`: no connection up yet).
//! let outcome = locator.send_datagram(&Greeting("psst".into()), std::slice::from_ref(member.id()))?;
//! if outcome.is_complete() {
//!     let heard = tokio::time::timeout(Duration::from_secs(5), greetings.recv()).await;
//!     println!("datagram heard: {}", heard.is_ok());
//! }
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
//! # A member from PEM files
//!
//! In production each member has its own certificate, from `cohort-certs member` or your
//! PKI; [`TlsSettings::from_files`] reads them when the member starts, and every problem
//! is named (the setting, the file and the cause). Give every member the same locators:
//!
//! ```no_run
//! use cohort::{Member, MemberConfig, Preset, TlsSettings};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tls = TlsSettings::from_files("ca.pem", "node-1.pem", "node-1-key.pem");
//! let mut config = MemberConfig::new(tls).with_preset(Preset::Lan);
//! config.identity.name = "node-1".into();
//! config.identity.bind = "0.0.0.0:7800".parse()?;
//! config.identity.advertise = Some("10.0.0.11:7800".parse()?); // the address others reach it at
//! config.locators = vec!["10.0.0.1:10334".parse()?, "10.0.0.2:10334".parse()?];
//! let member = Member::start(config).await?; // once in a view, or a StartError saying why
//! println!("{}", member.view()); // coordinator, elder and members, oldest first
//! # Ok(())
//! # }
//! ```
//!
//! # A member from a configuration file
//!
//! [`MemberConfig`] deserializes (serde) from the keys `cohort-member`'s file uses,
//! Geode's property names in kebab case; each key left out keeps its default, an unknown
//! key or a value that cannot work is refused by name, and `[quic]` and `[legacy]` hold
//! the tuning:
//!
//! ```
//! use cohort::{MemberConfig, MemberKind};
//!
//! let config: MemberConfig = toml::from_str(
//!     r#"
//!     name = "locator-1"
//!     kind = "locator"
//!     bind-address = "127.0.0.1:10334"
//!     locators = ["127.0.0.1:10334", "127.0.0.1:10335"]
//!     preset = "lan"
//!     weight-adjustment = 5
//!
//!     [ssl]
//!     ca = "ca.pem"
//!     certificate = "locator-1.pem"
//!     private-key = "locator-1-key.pem"
//!
//!     [quic]
//!     idle-timeout = "20s"
//!     "#,
//! )?;
//! assert_eq!(config.identity.kind, MemberKind::Locator);
//! assert_eq!(config.identity.attributes.weight_adjustment, 5);
//! config.validate()?; // what `Member::start` checks first
//!
//! let typo = toml::from_str::<MemberConfig>("member-timeuot = \"2s\"");
//! assert!(typo.unwrap_err().to_string().contains("member-timeuot"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What is where
//!
//! - The member: [`Member`], [`MemberBuilder`], [`MemberConfig`] with its [`Identity`]
//!   and [`Preset`]s, [`InvalidConfig`] (the one error every settings type's `validate`
//!   returns), [`StartError`]; the view it holds ([`View`], [`MemberId`]) and what happens to it
//!   ([`MembershipEvent`], as a broadcast receiver or an [`EventStream`]).
//! - Your messages: [`Message`] and its [`Tag`], [`Priority`], [`Subscription`] (also a
//!   `futures_core::Stream`) and the [`Envelope`] it yields, [`SendOutcome`], [`SendError`], [`SubscribeError`].
//! - Security: [`TlsSettings`], [`Authenticator`] for joiners' [`Credentials`]
//!   ([`AllowAll`], [`SharedSecret`]), and [`certs`] for a cluster CA.
//! - Operations: [`ask_locator`] (a locator's view from outside the cluster, as
//!   `cohort-member status` asks it), [`Member::metrics`] and [`metrics`] (with the
//!   `prometheus` feature, OpenMetrics series for your registry).
//! - Tuning: [`QuicConfig`] (`MemberConfig::transport`) and [`LegacyConfig`]
//!   (`MemberConfig::legacy`, for a rolling upgrade from the legacy protocol).
//!
//! The crates behind this one (`cohort-membership`, `cohort-transport`,
//! `cohort-legacy-udp`, `cohort-certs`) are its implementation; their other public items
//! serve cohort's own tests, fuzzers and binaries and are not a promise.

pub use cohort_legacy_udp::LegacyConfig;
pub use cohort_membership::{
    AllowAll, AskLocatorError, Authenticator, Credentials, EventStream, GmsStats, LocatorReport,
    Member, MemberBuilder, MemberConfig, MemberMetrics, MembershipEvent, MissedEvents, Preset,
    Protocol, SharedSecret, StartError, ask_locator,
};
pub use cohort_transport::{
    Delivery, Envelope, Identity, InvalidConfig, MemberAttributes, MemberId, MemberKind, Message,
    PeerStats, Priority, ProtocolVersion, QuicConfig, SendError, SendOutcome, SubscribeError,
    Subscription, Tag, TlsError, TlsSettings, View, ViewId,
};

/// A member's counters at once ([`MemberMetrics`]), and with the `prometheus` feature
/// their OpenMetrics series (`metrics::prometheus::MemberCollector`, to register into
/// your own `prometheus_client` registry).
pub mod metrics {
    #[cfg(feature = "prometheus")]
    pub use cohort_membership::metrics::prometheus;
    pub use cohort_membership::metrics::*;
}

/// A certificate authority for the cluster, in memory or as files (rcgen, ring): every
/// member's certificate is issued by it, and every member trusts it alone. The
/// `cohort-certs` command line does the same for files.
#[cfg(feature = "certs")]
pub mod certs {
    pub use cohort_certs::{CertError, CertificateAuthority, IssuedCertificate, MemberRequest};
}

/// The README's Rust examples, compiled as doctests so that they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExamples;
