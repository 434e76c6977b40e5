//! Unreachable reports: ICMP errors that name a destination this member sent to.
//!
//! When a member's process dies on a host that stays up, its UDP port closes and the host
//! answers every later datagram to it with ICMP port unreachable. QUIC over UDP has no
//! connection for the kernel to reset, so this is the one fast, cheap sign of such a death.
//! It is only a hint (ICMP is not authenticated): the membership layer turns it into a
//! suspicion and lets a final check decide.
//!
//! ```text
//! Linux: socket bound with IP_RECVERR / IPV6_RECVERR
//!   ICMP error ─► kernel's per-socket error queue ─► EPOLLERR
//!     ─► ErrorQueue task: recvmsg(MSG_ERRQUEUE) on a duplicate of the socket's descriptor
//!        ─► classify (port / host unreachable; local errors such as MTU probes ignored)
//!   fault seam: SocketFaults::forge_unreachable ─► a forged report per datagram sent
//!     ─► UnreachableReports::report ─► last report time per address (every report)
//!        ─► TransportEvent::Unreachable { address, reason } (at most one per address per
//!           REPORT_INTERVAL)
//! ```
//!
//! The event raises a suspicion; the time of the latest report is what a final check
//! looks at, because its own datagrams' errors may fall inside the interval of the error
//! that raised the suspicion.
//!
//! The error queue is read apart from quinn's receive path, which goes on as before: the
//! pending socket error quinn may see once per ICMP error is absorbed by the socket wrapper
//! ([`crate::socket`]). The queue must be drained, because its entries count against the
//! socket's receive buffer. Where the platform has no error queue (not Linux), or for a
//! socket handed to `Messenger::bind_with_socket`, there are simply no reports.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;

use crate::messenger::TransportEvent;
use crate::sync::lock;

/// Events about one address closer together than this are folded into one, so that a
/// flood of errors cannot flood the events.
const REPORT_INTERVAL: Duration = Duration::from_millis(100);

/// Addresses remembered for [`REPORT_INTERVAL`]; past this many, the memory starts over.
const REMEMBERED_ADDRESSES: usize = 1024;

/// Turns unreachable errors into [`TransportEvent::Unreachable`], rate-limited per address.
#[derive(Debug)]
pub(crate) struct UnreachableReports {
    events: broadcast::Sender<TransportEvent>,
    last: Mutex<HashMap<SocketAddr, Seen>>,
    received: AtomicU64,
    /// Woken on every error, for [`UnreachableReports::refused_since`].
    arrived: Notify,
}

/// When errors about one address were last received and last reported as an event.
#[derive(Clone, Copy, Debug)]
struct Seen {
    received: Instant,
    reported: Instant,
}

impl UnreachableReports {
    pub(crate) fn new(events: broadcast::Sender<TransportEvent>) -> Self {
        UnreachableReports {
            events,
            last: Mutex::new(HashMap::new()),
            received: AtomicU64::new(0),
            arrived: Notify::new(),
        }
    }

    /// Returns once an error about `address` arrives after `since` (at once if one has).
    pub(crate) async fn refused_since(&self, address: SocketAddr, since: Instant) {
        loop {
            // Registered before looking, so an error arriving in between is not missed.
            let arrived = self.arrived.notified();
            if self.last(address).is_some_and(|at| at > since) {
                return;
            }
            arrived.await;
        }
    }

    /// Unreachable errors received so far (real and forged), before rate limiting.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// When the latest error about `address` was received, if one was recently.
    pub(crate) fn last(&self, address: SocketAddr) -> Option<Instant> {
        lock(&self.last).get(&address).map(|seen| seen.received)
    }

    /// One error about `address`, now.
    pub(crate) fn report(&self, address: SocketAddr, reason: &str) {
        self.report_at(address, reason, Instant::now());
    }

    fn report_at(&self, address: SocketAddr, reason: &str, now: Instant) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let _wake = WakeOnDrop(&self.arrived);
        {
            let mut last = lock(&self.last);
            if let Some(seen) = last.get_mut(&address) {
                seen.received = now;
                if now.saturating_duration_since(seen.reported) < REPORT_INTERVAL {
                    return;
                }
                seen.reported = now;
            } else {
                if last.len() >= REMEMBERED_ADDRESSES {
                    last.clear();
                }
                let seen = Seen {
                    received: now,
                    reported: now,
                };
                last.insert(address, seen);
            }
        }
        tracing::debug!(%address, reason, "destination unreachable");
        // No subscriber is not an error: events are for whoever listens.
        let _ = self.events.send(TransportEvent::Unreachable {
            address,
            reason: reason.to_owned(),
        });
    }
}

/// Wakes the waiters of [`UnreachableReports::refused_since`] once the error is recorded,
/// whichever way `report_at` returns.
struct WakeOnDrop<'a>(&'a Notify);

impl Drop for WakeOnDrop<'_> {
    fn drop(&mut self) {
        self.0.notify_waiters();
    }
}

/// What kind of unreachable error, from an ICMP type and code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unreachable {
    /// Nothing listens on the port: the process is gone, its host is up.
    Port,
    /// The host or its network cannot be reached.
    Host,
}

impl Unreachable {
    /// Classifies an ICMPv4 (`v6` false) or ICMPv6 error; `None` for everything that says
    /// nothing about the destination being gone (fragmentation needed, time exceeded, ...).
    pub(crate) fn from_icmp(v6: bool, icmp_type: u8, code: u8) -> Option<Unreachable> {
        match (v6, icmp_type, code) {
            // ICMPv4 destination unreachable: net (0) and host (1) unreachable, port (3).
            (false, 3, 3) => Some(Unreachable::Port),
            (false, 3, 0 | 1) => Some(Unreachable::Host),
            // ICMPv6 destination unreachable: no route (0), address (3), port (4).
            (true, 1, 4) => Some(Unreachable::Port),
            (true, 1, 0 | 3) => Some(Unreachable::Host),
            _ => None,
        }
    }

    pub(crate) fn reason(self) -> &'static str {
        match self {
            Unreachable::Port => "ICMP port unreachable",
            Unreachable::Host => "ICMP host unreachable",
        }
    }
}

#[cfg(target_os = "linux")]
pub(crate) use linux::ErrorQueue;

#[cfg(not(target_os = "linux"))]
pub(crate) use elsewhere::ErrorQueue;

#[cfg(target_os = "linux")]
mod linux {
    use std::io::{self, IoSliceMut};
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;
    use std::sync::Arc;

    use nix::libc;
    use nix::sys::socket::{
        ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
    };
    use tokio::io::Interest;

    use super::{Unreachable, UnreachableReports};

    /// Error-queue entries read per wake-up before yielding to other tasks.
    const BATCH: usize = 64;
    /// Failed reads in a row after which the watch gives up (the descriptor is unusable).
    const MAX_FAILURES: u32 = 100;

    /// The socket's error queue, read through a duplicate of its descriptor.
    #[derive(Debug)]
    pub(crate) struct ErrorQueue {
        socket: UdpSocket,
    }

    impl ErrorQueue {
        /// Asks the kernel to queue ICMP errors for `socket` and keeps a duplicate of its
        /// descriptor to read them with. `None` (and a debug line) if the kernel refuses:
        /// everything works as before, without the hint.
        pub(crate) fn enable(socket: &UdpSocket, v6: bool) -> Option<ErrorQueue> {
            let enabled = if v6 {
                setsockopt(socket, sockopt::Ipv6RecvErr, &true)
            } else {
                setsockopt(socket, sockopt::Ipv4RecvErr, &true)
            };
            let duplicate = enabled
                .map_err(io::Error::from)
                .and_then(|()| socket.try_clone());
            match duplicate {
                Ok(socket) => Some(ErrorQueue { socket }),
                Err(error) => {
                    tracing::debug!(%error, "no ICMP error queue: unreachable hints are off");
                    None
                }
            }
        }

        /// Makes the port refuse every datagram from now on, as a closed port does: the
        /// socket is connected to its own address, so the kernel finds no socket for any
        /// other sender and answers it with ICMP port unreachable. For tests that crash a
        /// member whose process (and so its descriptor) lives on.
        pub(crate) fn refuse_everyone(&self) -> io::Result<()> {
            let mut own = self.socket.local_addr()?;
            if own.ip().is_unspecified() {
                own.set_ip(match own {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            self.socket.connect(own)
        }

        /// Reads the error queue until the task is aborted, reporting unreachable errors.
        pub(crate) async fn run(self: Arc<Self>, reports: Arc<UnreachableReports>) {
            // A registration of its own (another duplicate), so that this task waits for
            // error readiness only; quinn's registration of the socket is left alone.
            let watched = self
                .socket
                .try_clone()
                .and_then(tokio::net::UdpSocket::from_std);
            let watched = match watched {
                Ok(watched) => watched,
                Err(error) => {
                    tracing::debug!(%error, "cannot watch the ICMP error queue");
                    return;
                }
            };
            let mut failures = 0;
            loop {
                if failures >= MAX_FAILURES {
                    tracing::warn!(
                        "the ICMP error queue cannot be read: unreachable hints are off"
                    );
                    return;
                }
                if let Err(error) = watched.ready(Interest::ERROR).await {
                    tracing::debug!(%error, "ICMP error queue watch ended");
                    return;
                }
                // try_io clears the error readiness when the queue reports it is empty.
                for _ in 0..BATCH {
                    match watched.try_io(Interest::ERROR, || read_one(&watched)) {
                        Ok(Some((address, kind))) => {
                            failures = 0;
                            reports.report(address, kind.reason());
                        }
                        Ok(None) => failures = 0,
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                        Err(error) => {
                            failures += 1;
                            tracing::debug!(%error, "reading the ICMP error queue");
                            break;
                        }
                    }
                }
                tokio::task::yield_now().await;
            }
        }
    }

    /// Takes one entry off the error queue: the destination of the datagram it is about
    /// and what was wrong, or `None` for an entry that is not an unreachable error.
    fn read_one(socket: &impl AsRawFd) -> io::Result<Option<(SocketAddr, Unreachable)>> {
        // The entry's payload is the offending datagram; only its address matters here.
        let mut payload = [0u8; 64];
        let mut iov = [IoSliceMut::new(&mut payload)];
        // Room for the error (with the offender's address appended) and whatever else the
        // socket asks the kernel to attach (quinn turns on packet info and ECN). A Vec
        // keeps it aligned for the control-message headers.
        let mut control = nix::cmsg_space!(
            libc::sock_extended_err,
            libc::sockaddr_in6,
            libc::in6_pktinfo,
            libc::c_int,
            libc::c_int,
            [u8; 64]
        );
        let message = recvmsg::<SockaddrStorage>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
        )
        .map_err(io::Error::from)?;
        let destination = message.address.as_ref().and_then(socket_addr);
        let mut kind = None;
        for cmsg in message.cmsgs().map_err(io::Error::from)? {
            let (error, v6) = match cmsg {
                ControlMessageOwned::Ipv4RecvErr(error, _) => (error, false),
                ControlMessageOwned::Ipv6RecvErr(error, _) => (error, true),
                _ => continue,
            };
            let from_icmp = match error.ee_origin {
                libc::SO_EE_ORIGIN_ICMP => !v6,
                libc::SO_EE_ORIGIN_ICMP6 => v6,
                _ => false,
            };
            if from_icmp {
                kind = Unreachable::from_icmp(v6, error.ee_type, error.ee_code);
            }
        }
        Ok(destination.zip(kind))
    }

    fn socket_addr(storage: &SockaddrStorage) -> Option<SocketAddr> {
        if let Some(v4) = storage.as_sockaddr_in() {
            return Some(SocketAddr::V4((*v4).into()));
        }
        storage
            .as_sockaddr_in6()
            .map(|v6| SocketAddr::V6((*v6).into()))
    }
}

#[cfg(not(target_os = "linux"))]
mod elsewhere {
    use std::io;
    use std::net::UdpSocket;
    use std::sync::Arc;

    use super::UnreachableReports;

    /// No error queue on this platform: never enabled.
    #[derive(Debug)]
    pub(crate) struct ErrorQueue;

    impl ErrorQueue {
        pub(crate) fn enable(_: &UdpSocket, _: bool) -> Option<ErrorQueue> {
            None
        }

        pub(crate) fn refuse_everyone(&self) -> io::Result<()> {
            Ok(())
        }

        pub(crate) async fn run(self: Arc<Self>, _: Arc<UnreachableReports>) {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_destination_unreachable_errors_count() {
        assert_eq!(Unreachable::from_icmp(false, 3, 3), Some(Unreachable::Port));
        assert_eq!(Unreachable::from_icmp(false, 3, 1), Some(Unreachable::Host));
        assert_eq!(Unreachable::from_icmp(true, 1, 4), Some(Unreachable::Port));
        assert_eq!(Unreachable::from_icmp(true, 1, 3), Some(Unreachable::Host));
        // Fragmentation needed (path MTU), packet too big, time exceeded: not a death.
        assert_eq!(Unreachable::from_icmp(false, 3, 4), None);
        assert_eq!(Unreachable::from_icmp(true, 2, 0), None);
        assert_eq!(Unreachable::from_icmp(false, 11, 0), None);
        // ICMPv4 numbers read as ICMPv6 mean something else.
        assert_eq!(Unreachable::from_icmp(true, 3, 3), None);
    }

    #[test]
    fn reports_about_one_address_are_rate_limited_but_all_counted() {
        let (events, mut received) = broadcast::channel(16);
        let reports = UnreachableReports::new(events);
        let a: SocketAddr = "127.0.0.1:5".parse().expect("literal");
        let b: SocketAddr = "127.0.0.1:6".parse().expect("literal");
        let start = Instant::now();
        reports.report_at(a, "test", start);
        reports.report_at(a, "test", start + REPORT_INTERVAL / 2);
        reports.report_at(b, "test", start + REPORT_INTERVAL / 2);
        assert_eq!(reports.received(), 3);
        assert_eq!(
            reports.last(a),
            Some(start + REPORT_INTERVAL / 2),
            "every error counts"
        );
        let mut addresses = Vec::new();
        while let Ok(TransportEvent::Unreachable { address, .. }) = received.try_recv() {
            addresses.push(address);
        }
        assert_eq!(addresses, vec![a, b]);
        reports.report_at(a, "test", start + REPORT_INTERVAL * 2);
        assert!(matches!(
            received.try_recv(),
            Ok(TransportEvent::Unreachable { address, .. }) if address == a
        ));
    }
}
