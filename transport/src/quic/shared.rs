//! What every task of the messenger shares ([`Shared`]), and the admission policy it
//! answers: who may send what on which priority, how large a frame each sender may send,
//! and which addresses belong to the view (installed or being prepared).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use quinn::Endpoint;
use tokio::sync::{Semaphore, broadcast};
use uuid::Uuid;

use super::config::QuicConfig;
use super::limits;
use super::query::QueryHandlers;
#[cfg(doc)]
use crate::Messenger;
use crate::dispatch::Dispatcher;
use crate::member::MemberId;
use crate::message::Tag;
use crate::messenger::TransportEvent;
use crate::priority::Priority;
use crate::sync::read;
use crate::tls::ClusterTls;
use crate::view::View;

/// Everything a peer's tasks need; shared, never locked.
pub(crate) struct Shared {
    pub(crate) local: MemberId,
    pub(crate) config: QuicConfig,
    pub(crate) tls: ClusterTls,
    pub(crate) endpoint: Endpoint,
    pub(crate) client_config: quinn::ClientConfig,
    pub(crate) dispatcher: Arc<Dispatcher>,
    pub(crate) events: broadcast::Sender<TransportEvent>,
    pub(crate) dial_permits: Semaphore,
    /// Taken before a dial permit by dials to members outside the view, so that those
    /// never hold more than `max_dials_outside_view` of the dial permits.
    pub(crate) outside_dial_permits: Semaphore,
    pub(crate) accept_permits: Semaphore,
    /// Accept permits only members of the view (by the address they dial from) may take,
    /// once `accept_permits` are all taken.
    pub(crate) view_accept_permits: Semaphore,
    pub(crate) queries: QueryHandlers,
    pub(crate) limits: Arc<limits::Limits>,
    /// Who may send application messages here: the installed view's members, and those of
    /// a view being prepared (see [`Messenger::expect_view`]).
    pub(crate) admitted: RwLock<Admitted>,
}

impl Shared {
    pub(crate) fn emit(&self, event: TransportEvent) {
        // No subscriber is not an error: events are for whoever listens.
        let _ = self.events.send(event);
    }

    /// True if `member` may send application messages (tags from
    /// `Tag::FIRST_APPLICATION`) to this member; cohort's own protocols are always taken.
    pub(crate) fn accepts(&self, member: Uuid, tag: Tag) -> bool {
        tag < Tag::FIRST_APPLICATION || self.in_view(member)
    }

    /// True if a sender in the view (`in_view`) or not may send a frame tagged `tag` on its
    /// `priority` stream: members of the view on every priority, anyone else only cohort's
    /// own protocols on Control (a joiner's requests, a removed member asking what
    /// happened). A reader looks `in_view` up once per batch of frames, not per frame.
    pub(crate) fn admits(in_view: bool, priority: Priority, tag: Tag) -> bool {
        in_view || (priority == Priority::Control && tag < Tag::FIRST_APPLICATION)
    }

    /// The largest frame `member` may send on its `priority` stream: the priority's limit
    /// for members of the view; Control's for anyone else, whose frames on the other
    /// priorities are dropped anyway ([`Shared::admits`]) and must not make this member
    /// hold up to `max_frame_bytes` first.
    pub(crate) fn frame_limit_for(&self, member: Uuid, priority: Priority) -> usize {
        if self.in_view(member) {
            self.config.frame_limit(priority)
        } else {
            self.config.frame_limit(Priority::Control)
        }
    }

    /// True if `member` is in the installed view or in one being prepared.
    pub(crate) fn in_view(&self, member: Uuid) -> bool {
        read(&self.admitted).members.contains(&member)
    }

    /// True if a member of the installed view, or of one being prepared, is at `address`
    /// (what a handshake is known by before any TLS: a claim, proved only later).
    pub(crate) fn is_view_address(&self, address: SocketAddr) -> bool {
        read(&self.admitted).addresses.contains(&canonical(address))
    }
}

/// The members of the installed view (kept in `Inner::view`) and of a view being
/// prepared.
#[derive(Debug, Default)]
pub(crate) struct Admitted {
    pub(super) expected: Option<View>,
    pub(super) members: HashSet<Uuid>,
    /// The addresses of `members`: what an incoming handshake is known by before TLS.
    pub(super) addresses: HashSet<SocketAddr>,
}

impl Admitted {
    /// Recomputes `members` from `installed` and the expected view, which is forgotten
    /// once a view as new as it is installed.
    pub(super) fn update(&mut self, installed: &View) {
        if self
            .expected
            .as_ref()
            .is_some_and(|e| e.id() <= installed.id())
        {
            self.expected = None;
        }
        let members = || {
            installed
                .members()
                .iter()
                .chain(self.expected.iter().flat_map(View::members))
        };
        self.members = members().map(MemberId::uuid).collect();
        self.addresses = members().map(|m| canonical(m.address())).collect();
    }
}

/// `address` with an IPv4-mapped IPv6 address written as IPv4, so that a dual-stack socket
/// compares equal to the address a member announced.
pub(super) fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
}
