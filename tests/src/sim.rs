//! The real QUIC messenger on turmoil's simulated network.
//!
//! turmoil runs every simulated host on its own single-threaded tokio runtime with paused
//! time and carries UDP datagrams between hosts on a simulated network whose latency, loss
//! and partitions come from one seeded random generator. [`SimUdpSocket`] lets quinn use
//! that network: it implements quinn's `AsyncUdpSocket` over `turmoil::net::UdpSocket`,
//! and [`bind_member`] hands it to [`Messenger::bind_with_socket`], so the production
//! messenger (cohort's socket wrapper, TLS, handshake, streams) runs unchanged.
//!
//! ```text
//! quinn ─► CohortSocket ─► SimUdpSocket::try_send ─► turmoil link ──────────┐
//!                                          (latency, loss, hold, partition)  │
//! quinn ◄─ CohortSocket ◄─ SimUdpSocket::poll_recv ◄─ host's socket queue ◄──┘
//! ```
//!
//! Identities repeat with the seed: [`member_uuid`] derives each member's uuid from the
//! seed and the host name, so the uuid-ordered decisions (which of two crossed dials wins)
//! are the same in every run of a seed. Timing repeats only if quinn's own random choices
//! (handshake padding, skipped packet numbers, key update points) are seeded as well, which
//! the messenger does not do yet. Certificates are made once, outside the simulation, and
//! shared; endpoint identification stays off, so they need not name simulated addresses.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use cohort_transport::{
    BindError, ClusterTls, Identity, MemberId, MemberKind, Messenger, QuicConfig,
};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use uuid::Uuid;

/// The UDP port every simulated member binds (each host has its own simulated IP).
pub const SIM_PORT: u16 = 7800;

type Readiness = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

/// quinn's UDP socket over a turmoil socket. Must be used from within a turmoil host.
///
/// Sending never blocks (turmoil's links have no back-pressure). A datagram turmoil refuses
/// to carry (no link to the destination, or no simulation running) is counted and treated
/// as lost, as the kernel would lose it: quinn closes the connection on any other send
/// error. Receiving fills as many of quinn's buffers as datagrams are queued.
pub struct SimUdpSocket {
    socket: Arc<turmoil::net::UdpSocket>,
    local: SocketAddr,
    /// Pending wait for the next datagram, kept across `poll_recv` calls so its waker stays
    /// registered.
    readable: Mutex<Option<Readiness>>,
    sent: AtomicU64,
    received: AtomicU64,
    send_failures: AtomicU64,
}

/// Counters of a [`SimUdpSocket`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimSocketStats {
    /// Datagrams handed to the simulated network.
    pub sent: u64,
    /// Datagrams received from it.
    pub received: u64,
    /// Datagrams the simulated network refused to carry, counted as lost.
    pub send_failures: u64,
}

impl SimUdpSocket {
    /// Binds `port` (0 picks an ephemeral one) on every interface of the turmoil host that
    /// is running, and reports `ip` (that host's simulated address) as its local address.
    pub async fn bind(ip: IpAddr, port: u16) -> io::Result<Self> {
        // turmoil binds only unspecified or loopback addresses.
        let any = match ip {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let socket = turmoil::net::UdpSocket::bind((any, port)).await?;
        let port = socket.local_addr()?.port();
        Ok(SimUdpSocket {
            socket: Arc::new(socket),
            local: SocketAddr::new(ip, port),
            readable: Mutex::new(None),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            send_failures: AtomicU64::new(0),
        })
    }

    /// What went through this socket so far.
    pub fn stats(&self) -> SimSocketStats {
        SimSocketStats {
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            send_failures: self.send_failures.load(Ordering::Relaxed),
        }
    }

    fn send_one(&self, destination: SocketAddr, contents: &[u8]) {
        // Outside a running host (a runtime being torn down) there is no network to use.
        let sent = turmoil::sim_elapsed().is_some()
            && self.socket.try_send_to(contents, destination).is_ok();
        let counter = if sent {
            &self.sent
        } else {
            &self.send_failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves queued datagrams into `bufs`; returns how many were filled.
    fn drain(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> usize {
        let mut filled = 0;
        for (buf, meta) in bufs.iter_mut().zip(meta.iter_mut()) {
            // turmoil truncates a datagram longer than the buffer; quinn's buffers hold the
            // largest UDP payload it accepts, and a truncated packet only fails decryption.
            let Ok((len, addr)) = self.socket.try_recv_from(buf) else {
                break;
            };
            *meta = RecvMeta {
                addr,
                len,
                stride: len,
                // turmoil carries no ECN marks; quinn then stops setting them.
                ecn: None,
                dst_ip: Some(self.local.ip()),
            };
            filled += 1;
        }
        self.received.fetch_add(filled as u64, Ordering::Relaxed);
        filled
    }
}

impl fmt::Debug for SimUdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimUdpSocket")
            .field("local", &self.local)
            .field("stats", &self.stats())
            .finish()
    }
}

impl AsyncUdpSocket for SimUdpSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let segment = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        for datagram in transmit.contents.chunks(segment) {
            self.send_one(transmit.destination, datagram);
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut readable = self.readable.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            // While a wait is pending it holds the turmoil socket's receive lock, so finish
            // it before reading. Its result only says "try reading": errors are retried
            // by reading, never passed to quinn (an error here would stop the endpoint).
            if let Some(wait) = readable.as_mut() {
                match wait.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(_) => *readable = None,
                }
            }
            let filled = self.drain(bufs, meta);
            if filled > 0 {
                return Poll::Ready(Ok(filled));
            }
            let socket = self.socket.clone();
            *readable = Some(Box::pin(async move { socket.readable().await }));
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn may_fragment(&self) -> bool {
        // Simulated datagrams are never fragmented; this keeps quinn's path MTU discovery
        // on, as on a real socket with don't-fragment set.
        false
    }
}

/// turmoil's UDP sockets have no back-pressure: they are always writable.
#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A version-4-shaped uuid derived from `seed` and `host` only, so a member's identity
/// (and every uuid-ordered decision) repeats with the seed.
pub fn member_uuid(seed: u64, host: &str) -> Uuid {
    // FNV-1a over the name, then splitmix64: stable across builds and platforms.
    let name = host.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let mut state = seed ^ name;
    let mut bytes = [0u8; 16];
    for half in bytes.chunks_mut(8) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        half.copy_from_slice(&(z ^ (z >> 31)).to_be_bytes());
    }
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// The identity [`bind_member`] gives the member of host `host` at simulated address `ip`
/// (look it up with `Sim::lookup` before the simulation runs).
pub fn member_id(seed: u64, host: &str, ip: IpAddr) -> MemberId {
    MemberId::new(host, SocketAddr::new(ip, SIM_PORT), MemberKind::Member)
        .with_uuid(member_uuid(seed, host))
}

/// The identity of simulated host `host`: named after it, with the seed's uuid.
/// [`bind_member`] sets the address it advertises.
pub fn member_identity(seed: u64, host: &str) -> Identity {
    Identity {
        uuid: Some(member_uuid(seed, host)),
        ..Identity::named(host)
    }
}

/// A messenger configuration for the simulation: timeouts that let QUIC ride out loss
/// and short partitions within one connection (30 s idle timeout, 1 s keep-alive, 15 s
/// handshake).
pub fn member_config() -> QuicConfig {
    QuicConfig {
        keep_alive_interval: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(30),
        handshake_timeout: Duration::from_secs(15),
        ..QuicConfig::default()
    }
}

/// Why [`bind_member`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum SimBindError {
    /// The simulated socket could not be bound (port taken, or not inside a host).
    Socket(io::Error),
    /// The messenger refused to start.
    Messenger(BindError),
}

impl fmt::Display for SimBindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Socket(error) => write!(f, "could not bind the simulated socket: {error}"),
            Self::Messenger(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for SimBindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Socket(error) => Some(error),
            Self::Messenger(error) => Some(error),
        }
    }
}

/// A messenger bound by [`bind_member`], with its simulated socket for counters.
#[derive(Debug)]
pub struct SimMember {
    /// The messenger, unchanged production code.
    pub messenger: Messenger,
    /// The socket under it.
    pub socket: Arc<SimUdpSocket>,
}

/// Binds the messenger of turmoil host `host` on [`SIM_PORT`] of its simulated address.
/// The member advertises that address, so its id equals [`member_id`] for the same seed
/// when `identity` came from [`member_identity`].
///
/// `host` must be the host running this call: turmoil cannot say which host that is, so a
/// wrong name goes unnoticed and the member advertises another host's address.
pub async fn bind_member(
    host: &str,
    identity: Identity,
    tls: &ClusterTls,
    config: QuicConfig,
) -> Result<SimMember, SimBindError> {
    let ip = turmoil::lookup(host);
    let socket = SimUdpSocket::bind(ip, SIM_PORT)
        .await
        .map_err(SimBindError::Socket)?;
    let identity = Identity {
        advertise: Some(SocketAddr::new(ip, SIM_PORT)),
        ..identity
    };
    let socket = Arc::new(socket);
    let messenger = Messenger::bind_with_socket(&identity, config, tls, socket.clone())
        .map_err(SimBindError::Messenger)?;
    Ok(SimMember { messenger, socket })
}
