//! One-shot queries over the legacy protocol: a Query packet, resent until answered or
//! out of time, and the Answer with the same id from the address asked. Discovery and the
//! final check use them, as they use QUIC queries.
//!
//! ```text
//! query_within ─► pending[id] ─► Query{id, tag} every RESEND until the limit
//! received Query ─► handler for the tag ─► Answer{id, tag} to the source address
//! received Answer from the address asked ─► pending[id] completed
//! received Refused from an address ─► every query pending there fails with the reason
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bytes::Bytes;
use cohort_transport::{Query, QueryError};
use tokio::sync::oneshot;

/// Turns an encoded query and the asker's address into an encoded answer.
type Handler = Arc<dyn Fn(&[u8], SocketAddr) -> Result<Vec<u8>, String> + Send + Sync>;

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

    pub(crate) fn serve<Q: Query>(
        &self,
        handler: impl Fn(Q, SocketAddr) -> Q::Answer + Send + Sync + 'static,
    ) {
        let handler: Handler = Arc::new(move |payload, from| {
            let query: Q = postcard::from_bytes(payload).map_err(|e| e.to_string())?;
            postcard::to_allocvec(&handler(query, from)).map_err(|e| e.to_string())
        });
        self.handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(Q::TAG.0, handler);
    }

    /// The answer to a query received from `from`, if this member serves its tag.
    pub(crate) fn answer(&self, tag: u32, payload: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
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

/// Decodes an answer to `Q`.
pub(crate) fn decode_answer<Q: Query>(
    address: SocketAddr,
    payload: &[u8],
) -> Result<Q::Answer, QueryError> {
    postcard::from_bytes(payload).map_err(|error| QueryError::Malformed {
        address,
        reason: error.to_string(),
    })
}
