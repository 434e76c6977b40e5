//! cohort-legacy-udp: the legacy protocol (version 1), reliable unicast over plain UDP in
//! the manner of the old JGroups stack, so that a running cluster of old members can be
//! upgraded to QUIC one member at a time.
//!
//! - [`packet`]: the wire format (bincode, the protocol version in every packet's first
//!   byte, which keeps 0x40 and 0x80 clear so the packet shares the member's port with
//!   QUIC).
//! - [`LegacyCarrier`]: the carrier below a `Messenger` over it (`carrier`, a tokio shell
//!   around the sans-IO `core`, which holds every peer's streams).
//! - [`bind()`] and [`bridge()`]: the messengers over it alone (an old member) and over QUIC
//!   with it beside on one port during a rolling upgrade (one carrier per recipient by the
//!   version in its member id, the legacy one closed once no old member is left).
//! - `stream`: one reliable stream per peer and priority, sans-IO: sequence numbers,
//!   acknowledgements, resending, duplicate removal, fragmentation and reassembly.
//!
//! The legacy protocol is not encrypted or authenticated, as the old one was not.

mod bridge;
mod carrier;
mod config;
mod core;
mod exchange;
#[doc(hidden)]
pub mod packet;
mod stream;

pub use bridge::{BridgeBindError, RETIRED_REASON, bind, bind_with_socket, bridge, speaks_legacy};
pub use carrier::{LegacyBindError, LegacyCarrier, LegacyStats};
pub use config::LegacyConfig;
