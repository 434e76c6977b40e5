//! One-shot queries: a question to whoever listens at an address, answered once.
//!
//! Discovery needs to talk to processes that are not peers yet: a joiner knows only its
//! locators' addresses, not their identities, and a locator must answer joiners it has
//! never seen. A query is its own short QUIC connection, with the same mutual TLS as every
//! other: the asker opens the control stream and sends a Query frame instead of Hello, the
//! answerer's handler (registered per [`Tag`]) produces one Answer frame, and the
//! connection ends. No peer state is created on either side, so queries from many joiners
//! cost the answerer nothing once answered.
//!
//! ```text
//! query(addr, q) ─► connect (TLS) ─► Query{tag, postcard(q)} ─► answerer: handler(q, from)
//!        ◄────────── Answer{tag, postcard(answer)} ◄─────────────────┘
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::RwLock;
use std::time::Duration;

use bytes::Bytes;
use quinn::ConnectionError;
use tokio::time::Instant;

use super::Shared;
use super::handshake::{QueryAsked, ReadFrameError, peer_close_code, read_frame};
use crate::message::Tag;
use crate::priority::Priority;
use crate::sync::{read, write};
use crate::wire::{self, CloseCode, Frame, FrameDecoder};

use crate::carrier::QueryHandler as Handler;

/// How long an answerer keeps a query connection open for the asker to read the answer.
const LINGER: Duration = Duration::from_secs(2);

/// Why a query got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The messenger is shutting down or has shut down.
    #[error("the messenger has shut down")]
    Shutdown,
    /// The query could not be encoded.
    #[error("could not encode the query: {0}")]
    Encode(postcard::Error),
    /// The connection could not be started (e.g. an address quinn refuses).
    #[error("could not connect to {address}: {reason}")]
    Connect {
        /// The address asked.
        address: SocketAddr,
        /// quinn's reason.
        reason: String,
    },
    /// The connection failed: nobody listening, TLS refused, closed by the answerer.
    #[error("query to {address} failed: {reason}")]
    Connection {
        /// The address asked.
        address: SocketAddr,
        /// Why, as quinn or the answerer reported it.
        reason: String,
    },
    /// No answer within the time allowed.
    #[error("no answer from {0} within the time allowed")]
    Timeout(SocketAddr),
    /// The answerer does not serve this query type (or not yet).
    #[error("{address} does not answer queries with tag {tag}")]
    NotServed {
        /// The address asked.
        address: SocketAddr,
        /// The query's tag.
        tag: Tag,
    },
    /// Nothing listens at the address: its host answered the query's own datagrams with
    /// ICMP port (or host) unreachable, and no answer came within a few round trips after.
    #[error("nothing answers at {0}: its port is closed (ICMP unreachable)")]
    Unreachable(SocketAddr),
    /// The answerer refuses to talk to this member at all, and says why (a legacy side
    /// closed for good after a rolling upgrade).
    #[error("{address} refused: {reason}")]
    Refused {
        /// The address asked.
        address: SocketAddr,
        /// The answerer's reason.
        reason: String,
    },
    /// The answerer's rate limiter refused the query: this member asked that address more
    /// often than it answers (`QuicConfig::max_queries_per_second_per_address`). Something
    /// answers there; ask again later.
    #[error("{0} refused the query: asked too often")]
    RateLimited(SocketAddr),
    /// The query is larger than any member takes before it knows the asker
    /// ([`wire::HANDSHAKE_FRAME_LIMIT`]); nothing was sent.
    #[error("the query with tag {tag} is {size} bytes, over the limit of {max} for queries")]
    TooLarge {
        /// The query's tag.
        tag: Tag,
        /// Its frame's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The answer was malformed.
    #[error("malformed answer from {address}: {reason}")]
    Malformed {
        /// The address asked.
        address: SocketAddr,
        /// What was wrong.
        reason: String,
    },
}

/// The query types this member answers.
#[derive(Default)]
pub(crate) struct QueryHandlers {
    handlers: RwLock<HashMap<Tag, Handler>>,
}

impl QueryHandlers {
    /// Answers queries under `tag` with `handler` from now on, replacing any earlier one.
    pub(crate) fn serve(&self, tag: Tag, handler: Handler) {
        write(&self.handlers).insert(tag, handler);
    }

    fn handler(&self, tag: Tag) -> Option<Handler> {
        read(&self.handlers).get(&tag).cloned()
    }
}

/// Asks whoever listens at `address` the encoded `query` under `tag`; the encoded answer.
/// `limit` counts from now: the caller holds `permit`, the dial permit it waited for, so a
/// member busy dialing others does not charge its own queue to the answerer.
pub(crate) async fn ask(
    shared: &Shared,
    permit: tokio::sync::SemaphorePermit<'_>,
    address: SocketAddr,
    tag: Tag,
    query: &[u8],
    limit: Duration,
) -> Result<Bytes, QueryError> {
    let frame = wire::encode_query(tag, query);
    if frame.len() > wire::HANDSHAKE_FRAME_LIMIT {
        return Err(QueryError::TooLarge {
            tag,
            size: frame.len(),
            max: wire::HANDSHAKE_FRAME_LIMIT,
        });
    }
    let deadline = Instant::now() + limit;
    let connecting = shared
        .endpoint
        .connect_with(
            shared.client_config.clone(),
            address,
            &address.ip().to_string(),
        )
        .map_err(|e| QueryError::Connect {
            address,
            reason: e.to_string(),
        })?;
    let lost = |error: ConnectionError| match peer_close_code(&error) {
        Some(CloseCode::QueryNotServed) => QueryError::NotServed { address, tag },
        Some(CloseCode::RateLimited) => QueryError::RateLimited(address),
        _ => QueryError::Connection {
            address,
            reason: error.to_string(),
        },
    };
    let conn = tokio::time::timeout_at(deadline, connecting)
        .await
        .map_err(|_| QueryError::Timeout(address))?
        .map_err(lost)?;
    drop(permit);
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(lost)?;
        let _ = send.set_priority(Priority::Control.stream_priority());
        let stream_error = |reason: String| QueryError::Connection { address, reason };
        send.write_all(&frame).await.map_err(|e| match e {
            quinn::WriteError::ConnectionLost(e) => lost(e),
            other => stream_error(other.to_string()),
        })?;
        let _ = send.finish();
        let mut decoder = FrameDecoder::new(shared.config.max_frame_bytes);
        let malformed = |reason: String| QueryError::Malformed { address, reason };
        match read_frame(&mut recv, &mut decoder).await {
            Ok(Some(Frame::Answer {
                tag: answered,
                payload,
            })) if answered == tag => Ok(payload),
            Ok(Some(Frame::Answer { tag: answered, .. })) => {
                Err(malformed(format!("answer to tag {answered}, asked {tag}")))
            }
            Ok(Some(_)) => Err(malformed("a frame other than Answer".into())),
            Ok(None) => Err(stream_error("closed without an answer".into())),
            Err(ReadFrameError::Wire(e)) => Err(malformed(e.to_string())),
            Err(ReadFrameError::Read(quinn::ReadError::ConnectionLost(e))) => Err(lost(e)),
            Err(ReadFrameError::Read(e)) => Err(stream_error(e.to_string())),
        }
    };
    let result = tokio::time::timeout_at(deadline, exchange)
        .await
        .unwrap_or(Err(QueryError::Timeout(address)));
    // Code 0 on purpose: the answerer treats it as the asker hanging up, not as an error.
    conn.close(0u32.into(), b"done");
    result
}

/// Answers a query read from an incoming connection, then lets the connection end.
pub(crate) async fn answer(shared: &Shared, handlers: &QueryHandlers, asked: QueryAsked) {
    let QueryAsked {
        conn,
        mut send,
        tag,
        payload,
    } = asked;
    let remote = conn.remote_address();
    if !shared.limits.allow_query(remote) {
        tracing::debug!(%remote, %tag, "query refused: its address asks too often");
        let code = CloseCode::RateLimited;
        conn.close(code.varint(), code.name().as_bytes());
        return;
    }
    let Some(handler) = handlers.handler(tag) else {
        tracing::debug!(%remote, %tag, "query for a tag not served");
        let code = CloseCode::QueryNotServed;
        conn.close(code.varint(), code.name().as_bytes());
        return;
    };
    let answer = match handler(&payload, remote) {
        Ok(answer) => answer,
        Err(reason) => {
            tracing::debug!(%remote, %tag, %reason, "malformed query");
            let code = CloseCode::MalformedFrame;
            conn.close(code.varint(), code.name().as_bytes());
            return;
        }
    };
    if answer.len() + 16 > shared.config.max_frame_bytes {
        tracing::warn!(%remote, %tag, bytes = answer.len(), "answer over the frame limit");
        let code = CloseCode::QueryNotServed;
        conn.close(code.varint(), code.name().as_bytes());
        return;
    }
    if send
        .write_all(&wire::encode_answer(tag, &answer))
        .await
        .is_ok()
    {
        let _ = send.finish();
        // The asker closes once it has read the answer; don't outwait a silent one.
        let _ = tokio::time::timeout(LINGER, conn.closed()).await;
    }
    let code = CloseCode::Shutdown;
    conn.close(code.varint(), code.name().as_bytes());
}
