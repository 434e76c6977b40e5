//! One-shot queries over the legacy protocol: a Query packet, resent until answered or
//! out of time, and the Answer with the same id from the address asked. Discovery and the
//! final check use them, as they use QUIC queries.
//!
//! ```text
//! ask ─► pending[id] ─► Query{id, tag} every RESEND until the limit
//! received Query ─► handler for the tag ─► Answer{id, tag} to the source address
//! received Answer from the address asked ─► pending[id] completed
//! received Refused from an address ─► every query pending there fails with the reason
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

use bytes::Bytes;
use cohort_transport::carrier::QueryHandler as Handler;
use cohort_transport::{QueryError, Tag};
use tokio::sync::oneshot;

struct Pending {
    address: SocketAddr,
    reply: oneshot::Sender<Result<Bytes, QueryError>>,
}

/// Handlers of the queries this member answers, and the queries it is waiting on.
pub(crate) struct Exchanges {
    handlers: RwLock<HashMap<u32, Handler>>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
}

impl Exchanges {
    pub(crate) fn new(first_id: u64) -> Self {
        Exchanges {
            handlers: RwLock::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(first_id),
        }
    }

    /// Answers queries under `tag` with `handler` from now on, replacing any earlier one.
    pub(crate) fn serve(&self, tag: Tag, handler: Handler) {
        self.handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tag.0, handler);
    }

    /// The answer to a query received from `from`, if this member serves its tag.
    pub(crate) fn answer(&self, tag: u32, payload: &[u8], from: SocketAddr) -> Option<Bytes> {
        let handler = self
            .handlers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&tag)
            .cloned()?;
        match handler(payload, from) {
            Ok(answer) => Some(answer),
            Err(reason) => {
                tracing::debug!(%from, tag, reason, "malformed legacy query");
                None
            }
        }
    }

    /// Registers a query to `address`; returns its id and where the answer will come.
    pub(crate) fn start(
        &self,
        address: SocketAddr,
    ) -> (u64, oneshot::Receiver<Result<Bytes, QueryError>>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        self.pending().insert(id, Pending { address, reply });
        (id, answer)
    }

    /// Forgets a query that ended without an answer.
    pub(crate) fn cancel(&self, id: u64) {
        self.pending().remove(&id);
    }

    /// An answer arrived from `from`: completes the query with that id if it went there.
    pub(crate) fn answered(&self, id: u64, from: SocketAddr, payload: Bytes) {
        let mut pending = self.pending();
        if pending.get(&id).is_some_and(|p| p.address == from)
            && let Some(p) = pending.remove(&id)
        {
            let _ = p.reply.send(Ok(payload));
        }
    }

    /// `from` refuses this member: every query pending there fails with its reason.
    pub(crate) fn refused(&self, from: SocketAddr, reason: &str) {
        let mut pending = self.pending();
        let ids: Vec<u64> = pending
            .iter()
            .filter(|(_, p)| p.address == from)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(p) = pending.remove(&id) {
                let _ = p.reply.send(Err(QueryError::Refused {
                    address: from,
                    reason: reason.to_owned(),
                }));
            }
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
