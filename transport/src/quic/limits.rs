//! What one source address may hold at once: handshakes in progress and open
//! connections. A peer over a limit is refused alone; every refusal is counted.
//!
//! ```text
//! Incoming from A ─► Limits::start_handshake(A) ─► None: refused (QUIC CONNECTION_REFUSED)
//!                      └─► a Slot, held through TLS + Hello
//!   handshake done ─► Limits::open_connection(A) ─► None: closed with TOO_MANY_CONNECTIONS
//!                      └─► a Slot, held until the connection closes
//!   a query ─► Limits::allow_query(A) (token bucket) ─► false: closed with RATE_LIMITED
//! ```
//!
//! The address is the source IP and port, which is what a member is known by: a member
//! runs one dial to another at a time, plus a query now and then, so small limits never
//! touch a well-behaved member, even with many members on one host. Many ports of one
//! host are bounded together by `max_concurrent_accepts` and the handshake timeout.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::rate::RateLimiter;
use crate::sync::lock;

/// Counters of the limits on what peers may send or hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitStats {
    /// Connections closed with `FRAME_TOO_LARGE`: a frame over its priority's limit.
    pub frames_too_large: u64,
    /// Incoming handshakes refused because their source address had
    /// `max_handshakes_per_address` in progress.
    pub handshakes_refused: u64,
    /// Incoming handshakes refused because their host (IP address, any port) had
    /// `max_handshakes_per_host` in progress while accept permits ran short.
    pub host_handshakes_refused: u64,
    /// Incoming handshakes answered with a QUIC Retry (address validation) because
    /// accept permits ran short and the source had not proved its address yet.
    pub handshakes_retried: u64,
    /// Connections closed with `TOO_MANY_CONNECTIONS` because their source address had
    /// `max_connections_per_address` open.
    pub connections_refused: u64,
    /// Queries closed unanswered with `RATE_LIMITED`: their source address asked more
    /// often than `max_queries_per_second_per_address`.
    pub queries_rate_limited: u64,
    /// Application messages (frames and datagrams) dropped because their sender is in
    /// neither the installed view nor one being prepared.
    pub from_non_members: u64,
    /// Hellos closed with `TOO_MANY_CONNECTIONS`, and sends reported as not in the view,
    /// because `max_peers_outside_view` peers outside the view exist already.
    pub peers_outside_view_refused: u64,
}

/// The per-address accounting and the counters.
#[derive(Debug)]
pub(crate) struct Limits {
    max_handshakes: usize,
    max_host_handshakes: usize,
    max_connections: usize,
    held: Mutex<HashMap<SocketAddr, Held>>,
    /// Handshakes in progress per IP address, over all its ports.
    host_handshakes: Mutex<HashMap<IpAddr, usize>>,
    queries: Mutex<RateLimiter>,
    frames_too_large: AtomicU64,
    queries_rate_limited: AtomicU64,
    from_non_members: AtomicU64,
    handshakes_refused: AtomicU64,
    host_handshakes_refused: AtomicU64,
    handshakes_retried: AtomicU64,
    connections_refused: AtomicU64,
    peers_outside_view_refused: AtomicU64,
}

#[derive(Debug, Default)]
struct Held {
    handshakes: usize,
    connections: usize,
}

impl Limits {
    pub(crate) fn new(
        max_handshakes: usize,
        max_host_handshakes: usize,
        max_connections: usize,
        queries_per_second: u32,
    ) -> Arc<Self> {
        Arc::new(Limits {
            max_handshakes,
            max_host_handshakes,
            max_connections,
            held: Mutex::new(HashMap::new()),
            host_handshakes: Mutex::new(HashMap::new()),
            queries: Mutex::new(RateLimiter::new(
                queries_per_second,
                queries_per_second.saturating_mul(2),
            )),
            frames_too_large: AtomicU64::new(0),
            queries_rate_limited: AtomicU64::new(0),
            from_non_members: AtomicU64::new(0),
            handshakes_refused: AtomicU64::new(0),
            host_handshakes_refused: AtomicU64::new(0),
            handshakes_retried: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            peers_outside_view_refused: AtomicU64::new(0),
        })
    }

    /// A slot for one more handshake from `address`, or `None` (counted) if it has its
    /// limit in progress, or if `per_host` and its host has its limit in progress.
    pub(crate) fn start_handshake(
        self: &Arc<Self>,
        address: SocketAddr,
        per_host: bool,
    ) -> Option<Slot> {
        let mut hosts = lock(&self.host_handshakes);
        let host = hosts.entry(address.ip()).or_default();
        if per_host && *host >= self.max_host_handshakes {
            self.host_handshakes_refused.fetch_add(1, Ordering::Relaxed);
            if *host == 0 {
                hosts.remove(&address.ip());
            }
            return None;
        }
        let Some(slot) = self.take(address, Kind::Handshake) else {
            if *host == 0 {
                hosts.remove(&address.ip());
            }
            return None;
        };
        *host += 1;
        Some(slot)
    }

    pub(crate) fn count_retried(&self) {
        self.handshakes_retried.fetch_add(1, Ordering::Relaxed);
    }

    /// A slot for one more open connection from `address`, or `None` (counted).
    pub(crate) fn open_connection(self: &Arc<Self>, address: SocketAddr) -> Option<Slot> {
        self.take(address, Kind::Connection)
    }

    /// True if `address` may have one more query answered now; counted if not.
    pub(crate) fn allow_query(&self, address: SocketAddr) -> bool {
        let allowed = lock(&self.queries).allow(Instant::now(), address);
        if !allowed {
            self.queries_rate_limited.fetch_add(1, Ordering::Relaxed);
        }
        allowed
    }

    pub(crate) fn count_frame_too_large(&self) {
        self.frames_too_large.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_from_non_member(&self) {
        self.from_non_members.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_peer_outside_view_refused(&self) {
        self.peers_outside_view_refused
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> LimitStats {
        LimitStats {
            frames_too_large: self.frames_too_large.load(Ordering::Relaxed),
            handshakes_refused: self.handshakes_refused.load(Ordering::Relaxed),
            host_handshakes_refused: self.host_handshakes_refused.load(Ordering::Relaxed),
            handshakes_retried: self.handshakes_retried.load(Ordering::Relaxed),
            connections_refused: self.connections_refused.load(Ordering::Relaxed),
            queries_rate_limited: self.queries_rate_limited.load(Ordering::Relaxed),
            from_non_members: self.from_non_members.load(Ordering::Relaxed),
            peers_outside_view_refused: self.peers_outside_view_refused.load(Ordering::Relaxed),
        }
    }

    fn take(self: &Arc<Self>, address: SocketAddr, kind: Kind) -> Option<Slot> {
        let mut held = lock(&self.held);
        let entry = held.entry(address).or_default();
        let (count, max, refused) = match kind {
            Kind::Handshake => (
                &mut entry.handshakes,
                self.max_handshakes,
                &self.handshakes_refused,
            ),
            Kind::Connection => (
                &mut entry.connections,
                self.max_connections,
                &self.connections_refused,
            ),
        };
        if *count >= max {
            refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *count += 1;
        Some(Slot {
            limits: self.clone(),
            address,
            kind,
        })
    }

    fn release(&self, address: SocketAddr, kind: Kind) {
        if let Kind::Handshake = kind {
            let mut hosts = lock(&self.host_handshakes);
            if let Some(count) = hosts.get_mut(&address.ip()) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    hosts.remove(&address.ip());
                }
            }
        }
        let mut held = lock(&self.held);
        if let Some(entry) = held.get_mut(&address) {
            match kind {
                Kind::Handshake => entry.handshakes = entry.handshakes.saturating_sub(1),
                Kind::Connection => entry.connections = entry.connections.saturating_sub(1),
            }
            if entry.handshakes == 0 && entry.connections == 0 {
                held.remove(&address);
            }
        }
    }

    #[cfg(test)]
    fn addresses_held(&self) -> usize {
        lock(&self.held).len()
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Handshake,
    Connection,
}

/// One handshake or connection counted against its address until dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    limits: Arc<Limits>,
    address: SocketAddr,
    kind: Kind,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.release(self.address, self.kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_is_limited_over_all_its_ports_only_when_asked() {
        let limits = Limits::new(4, 2, 4, 10);
        let port = |p: u16| SocketAddr::from(([127, 0, 0, 2], p));
        let first = limits.start_handshake(port(1), true).expect("1 of 2");
        let _second = limits.start_handshake(port(2), true).expect("2 of 2");
        assert!(
            limits.start_handshake(port(3), true).is_none(),
            "a third port"
        );
        let other_host = SocketAddr::from(([127, 0, 0, 3], 3));
        assert!(limits.start_handshake(other_host, true).is_some());
        let unlimited = limits.start_handshake(port(4), false).expect("not limited");
        drop((first, unlimited));
        assert!(
            limits.start_handshake(port(5), true).is_some(),
            "a slot came back"
        );
        assert_eq!(limits.stats().host_handshakes_refused, 1);
    }

    #[test]
    fn each_address_is_limited_alone_and_slots_come_back() {
        let limits = Limits::new(2, 3, 1, 10);
        let a: SocketAddr = "127.0.0.1:1000".parse().expect("literal");
        let b: SocketAddr = "127.0.0.1:1001".parse().expect("literal");
        let first = limits.start_handshake(a, true).expect("1 of 2");
        let second = limits.start_handshake(a, true).expect("2 of 2");
        assert!(
            limits.start_handshake(a, true).is_none(),
            "a third is refused"
        );
        assert!(
            limits.start_handshake(b, true).is_some(),
            "another address is not"
        );
        let open = limits.open_connection(a).expect("1 of 1");
        assert!(limits.open_connection(a).is_none());
        drop(first);
        assert!(
            limits.start_handshake(a, true).is_some(),
            "a slot came back"
        );
        drop((second, open));
        assert_eq!(
            limits.addresses_held(),
            0,
            "nothing is kept for idle addresses"
        );
        let stats = limits.stats();
        assert_eq!(
            (stats.handshakes_refused, stats.connections_refused),
            (1, 1)
        );
    }
}
