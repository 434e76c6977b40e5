//! Incoming connections: the endpoint's accept loop and what is decided before a Hello
//! reaches a peer's driver (retries under load, permits, per-address limits, the handshake).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::handshake::{self, Opened};
use super::outsiders::NoPeer;
use super::shared::canonical;
use super::{Inner, limits, query};
use crate::member::MemberId;
use crate::messenger::TransportEvent;
use crate::sync::{lock, read};
use crate::wire::CloseCode;

/// Accepts connections until the endpoint closes; each is handled on a task of its own.
pub(super) async fn accept_loop(inner: Arc<Inner>) {
    let endpoint = inner.shared.endpoint.clone();
    while let Some(incoming) = endpoint.accept().await {
        if inner.closing.load(Ordering::Acquire) {
            incoming.refuse();
            continue;
        }
        tokio::spawn(inner.clone().handle_incoming(incoming));
    }
}

impl Inner {
    /// Counts `conn` against its source address, or closes it with
    /// `TOO_MANY_CONNECTIONS` if that address has its limit open.
    pub(super) fn connection_slot(&self, conn: &quinn::Connection) -> Option<limits::Slot> {
        let remote = conn.remote_address();
        let slot = self.shared.limits.open_connection(remote);
        if slot.is_none() {
            let code = CloseCode::TooManyConnections;
            let reason = format!(
                "{remote} has {} connections open already",
                self.shared.config.max_connections_per_address.get()
            );
            tracing::warn!(%remote, %reason, "refused incoming connection");
            conn.close(code.varint(), reason.as_bytes());
            self.shared
                .emit(TransportEvent::IncomingRejected { remote, reason });
        }
        slot
    }

    pub(super) async fn handle_incoming(self: Arc<Self>, incoming: quinn::Incoming) {
        let shared = &self.shared;
        let remote = incoming.remote_address();
        // Accept permits running short means a flood, or many members starting at once.
        // Then a source that has not proved its address yet is asked to (a QUIC Retry:
        // stateless, one packet, no permit held), so a flood of Initials from forged or
        // silent addresses costs nothing; and one host outside the view may hold only so
        // many handshakes, so that other hosts get their turn.
        let short = shared.accept_permits.available_permits()
            < shared.config.max_concurrent_accepts.get() / 2;
        if short && !incoming.remote_address_validated() && incoming.may_retry() {
            shared.limits.count_retried();
            // Fails only if a Retry is not allowed here, which may_retry ruled out.
            let _ = incoming.retry();
            return;
        }
        let of_view = shared.is_view_address(remote);
        // Checked before any TLS work: refusing costs one packet.
        let Some(handshake_slot) = shared.limits.start_handshake(remote, short && !of_view) else {
            tracing::debug!(%remote, "refused a handshake: its address or host has its limit in progress");
            return incoming.refuse();
        };
        // The dialer gives up after its handshake timeout, so one that waited that long for
        // a permit is not worth the work any more: the dialer will try again. Counting from
        // arrival keeps a storm from being served stalest first.
        let arrived = tokio::time::Instant::now();
        let deadline = arrived + shared.config.handshake_timeout;
        let acquired = async {
            match shared.accept_permits.try_acquire() {
                Ok(permit) => Ok(permit),
                // A member of the view waits for whichever pool frees a permit first.
                Err(_) if of_view => tokio::select! {
                    permit = shared.accept_permits.acquire() => permit,
                    permit = shared.view_accept_permits.acquire() => permit,
                },
                Err(_) => shared.accept_permits.acquire().await,
            }
        };
        let permit = match tokio::time::timeout_at(deadline, acquired).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return incoming.refuse(),
            Err(_) => {
                tracing::debug!(remote = %incoming.remote_address(), "incoming handshake waited out its timeout");
                return incoming.ignore();
            }
        };
        let opened = handshake::accept(shared, incoming, arrived, deadline).await;
        drop(permit);
        drop(handshake_slot);
        let accepted = match opened {
            Ok(Opened::Peer(accepted)) => accepted,
            Ok(Opened::Query(asked)) => {
                let Some(_slot) = self.connection_slot(&asked.conn) else {
                    return;
                };
                return query::answer(shared, &shared.queries, asked).await;
            }
            Err((remote, error)) if error.is_noise() => {
                tracing::debug!(%remote, %error, "incoming attempt ended without a peer");
                return;
            }
            Err((remote, error)) => {
                tracing::warn!(%remote, %error, "refused incoming connection");
                shared.emit(TransportEvent::IncomingRejected {
                    remote,
                    reason: error.to_string(),
                });
                return;
            }
        };
        let Some(slot) = self.connection_slot(&accepted.conn) else {
            return;
        };
        // The slot is held for as long as the connection is open.
        let conn = accepted.conn.clone();
        tokio::spawn(async move {
            conn.closed().await;
            drop(slot);
        });
        let member = accepted.hello.member.clone();
        let refuse = |code: CloseCode, reason: String| {
            tracing::warn!(%remote, ?member, %reason, "refused incoming connection");
            accepted.conn.close(code.varint(), code.name().as_bytes());
            shared.emit(TransportEvent::IncomingRejected { remote, reason });
        };
        if self.closing.load(Ordering::Acquire) {
            return refuse(CloseCode::Shutdown, "shutting down".into());
        }
        // A member dials from the port it listens on, so a Hello must come from the address
        // it claims: no one speaks for another member.
        if canonical(remote) != canonical(member.address()) {
            return refuse(
                CloseCode::IdentityRejected,
                format!("{member:?} claims its address but connects from {remote}"),
            );
        }
        if lock(&self.departed).set.contains(&member.uuid()) {
            return refuse(
                CloseCode::RemovedFromView,
                format!("{member:?} has left the view"),
            );
        }
        let known = read(&self.view)
            .member(member.uuid())
            .map(MemberId::address);
        if let Some(address) = known.filter(|a| *a != member.address()) {
            return refuse(
                CloseCode::IdentityRejected,
                format!("{member:?} claims an address other than its view entry {address}"),
            );
        }
        let peer = match self.peer_for(&member) {
            Ok(peer) => peer,
            Err(NoPeer::Departed) => {
                return refuse(
                    CloseCode::RemovedFromView,
                    format!("{member:?} has left the view"),
                );
            }
            Err(NoPeer::Closing) => return refuse(CloseCode::Shutdown, "shutting down".into()),
            Err(NoPeer::Full) => {
                return refuse(
                    CloseCode::TooManyConnections,
                    format!(
                        "{member:?} is outside the view, and {} peers outside it exist already",
                        shared.config.max_peers_outside_view.get()
                    ),
                );
            }
            Err(NoPeer::BeingForgotten) => {
                return refuse(
                    CloseCode::Reset,
                    format!("{member:?} is being forgotten; dial again"),
                );
            }
        };
        // The uuid alone does not make the member: a peer outside the view was created by
        // a Hello from (or a send to) one address, and a Hello from another address with
        // the same uuid is someone else taking over its connection.
        let recorded = peer.member().address();
        if canonical(recorded) != canonical(member.address()) {
            return refuse(
                CloseCode::IdentityRejected,
                format!("{member:?} claims the uuid of the member at {recorded}"),
            );
        }
        if let Err(accepted) = peer.offer(accepted).await {
            let code = CloseCode::Shutdown;
            accepted.conn.close(code.varint(), code.name().as_bytes());
        }
    }
}
