//! An established connection to one peer and the tasks that use it.
//!
//! ```text
//! Peer.queues[p] ──next_batch──► writer(p) ──write_all_chunks──► control stream (p = Control)
//!                                                               or uni stream p (opened lazily)
//! control stream ─► control reader ─┐
//! uni streams ────► stream readers ─┼─► sequence check ─► Dispatcher ─► subscriptions
//! datagrams ──────► datagram reader ┘
//! ```
//!
//! Small frames are packed into one write (each quinn write costs about a microsecond);
//! large payloads go as their own chunk without copying. Malformed bytes from the peer close
//! this connection with `MALFORMED_FRAME` and touch nothing else. Dropping an
//! [`Established`] aborts its tasks.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use quinn::{Connection, ConnectionError, RecvStream, SendStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::Shared;
use super::handshake::{LinkParts, ReadFrameError, read_frame};
use super::peer::{Peer, Received};
use super::queue::Batch;
use crate::dispatch::{Inbound, Routed};
use crate::member::MemberId;
use crate::message::{Delivery, Tag};
use crate::messenger::TransportEvent;
use crate::priority::Priority;
use crate::wire::{self, CloseCode, Frame, FrameDecoder, StreamKind, WireError};

/// Payloads up to this size are copied into the batch buffer; larger ones are written as
/// their own chunk.
const INLINE_PAYLOAD_MAX: usize = 4096;

pub(crate) struct Established {
    conn: Connection,
    dialed_by_us: bool,
    /// When the Hello exchange completed.
    up_since: tokio::time::Instant,
    /// One per priority, in [`Priority::ALL`] order; each returns its stream when it ends
    /// gracefully.
    writers: Vec<JoinHandle<Option<SendStream>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Established {
    /// Starts the writers and readers of a connection whose Hello exchange completed.
    pub(crate) fn start(
        shared: &Arc<Shared>,
        peer: &Arc<Peer>,
        parts: LinkParts,
        dialed_by_us: bool,
    ) -> Self {
        let LinkParts {
            conn,
            control_send,
            control_recv,
            decoder,
            ..
        } = parts;
        let mut control_send = Some(control_send);
        let writers = Priority::ALL
            .into_iter()
            .map(|priority| {
                // The control stream exists already; data streams open on first use.
                let stream = if priority == Priority::Control {
                    control_send.take()
                } else {
                    None
                };
                tokio::spawn(write_loop(
                    shared.clone(),
                    peer.clone(),
                    conn.clone(),
                    priority,
                    stream,
                ))
            })
            .collect();
        let (ends, _) = watch::channel(0u8);
        let ends = Arc::new(ends);
        let readers = vec![
            tokio::spawn(read_control(
                shared.clone(),
                peer.clone(),
                conn.clone(),
                control_recv,
                decoder,
                ends.clone(),
            )),
            tokio::spawn(accept_streams(
                shared.clone(),
                peer.clone(),
                conn.clone(),
                ends,
            )),
            tokio::spawn(read_datagrams(shared.clone(), peer.clone(), conn.clone())),
            tokio::spawn(ack_loop(peer.clone(), conn.clone())),
        ];
        Established {
            conn,
            dialed_by_us,
            up_since: tokio::time::Instant::now(),
            writers,
            readers,
        }
    }

    pub(crate) fn dialed_by_us(&self) -> bool {
        self.dialed_by_us
    }

    /// When the Hello exchange completed.
    pub(crate) fn up_since(&self) -> tokio::time::Instant {
        self.up_since
    }

    pub(crate) async fn closed(&self) -> ConnectionError {
        self.conn.closed().await
    }

    pub(crate) fn has_writers(&self) -> bool {
        self.writers.iter().any(|w| !w.is_finished())
    }

    /// Waits until every writer has drained its queue, finished its stream and seen the peer
    /// acknowledge all of it. The caller bounds the wait.
    /// Writes everything queued, then says Goodbye and waits for the peer to close the
    /// connection, which it does once it has read every stream to its end (closing first
    /// would discard what the peer has received but not yet read). Writers end on their
    /// own once the peer is stopping and their queue is empty. Call once; the caller
    /// bounds the wait.
    pub(crate) async fn flush(&mut self) {
        let mut opened = 0u8;
        let mut control = None;
        // Taken out, so that `retire` does not wait on them a second time.
        let writers: Vec<_> = self.writers.drain(..).collect();
        for (priority, writer) in Priority::ALL.into_iter().zip(writers) {
            let Ok(Some(mut stream)) = writer.await else {
                continue;
            };
            if priority == Priority::Control {
                control = Some(stream);
            } else if stream.finish().is_ok() {
                opened |= 1 << priority.index();
            }
        }
        let Some(mut control) = control else {
            return;
        };
        if control
            .write_all(&wire::encode_goodbye(opened))
            .await
            .is_ok()
            && control.finish().is_ok()
        {
            self.conn.closed().await;
        }
    }

    /// Closes the connection and waits until its tasks have stopped, so that nothing of
    /// this connection touches the peer's window once a newer one starts.
    pub(crate) async fn retire(mut self, code: CloseCode) {
        self.conn.close(code.varint(), code.name().as_bytes());
        for writer in self.writers.drain(..) {
            writer.abort();
            let _ = writer.await;
        }
        for reader in self.readers.drain(..) {
            reader.abort();
            let _ = reader.await;
        }
    }
}

impl Drop for Established {
    fn drop(&mut self) {
        self.writers.iter().for_each(JoinHandle::abort);
        self.readers.iter().for_each(JoinHandle::abort);
    }
}

/// Writes what the peer's window hands out for one priority until the connection fails or
/// the peer stops gracefully. What was taken stays in the window as unacknowledged, so a
/// failed write loses nothing: the next connection resends it.
async fn write_loop(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    conn: Connection,
    priority: Priority,
    mut stream: Option<SendStream>,
) -> Option<SendStream> {
    while let Some(batch) = peer.next_batch(priority).await {
        let send = match &mut stream {
            Some(send) => send,
            None => match open_data_stream(&conn, priority).await {
                Ok(send) => stream.insert(send),
                Err(error) => {
                    tracing::debug!(peer = %peer.member(), %priority, %error, "could not open stream");
                    return None;
                }
            },
        };
        let mut chunks = Vec::with_capacity(2);
        let too_large = encode_batch(&batch, peer.frame_limit(priority), &mut chunks);
        if let Err(error) = send.write_all_chunks(&mut chunks).await {
            tracing::debug!(peer = %peer.member(), %priority, %error, "write failed");
            return None;
        }
        peer.count_written(priority, &batch);
        for (tag, size) in too_large {
            let member = peer.member();
            let max = peer.frame_limit(priority);
            tracing::warn!(%member, %priority, %tag, size, max, "message not sent: over the peer's frame limit");
            shared.emit(TransportEvent::TooLargeForPeer {
                member,
                tag,
                size,
                max,
            });
        }
    }
    // Stopping gracefully with nothing left: hand the stream to `flush`, which ends it.
    stream
}

/// Writes acknowledgements of what this member delivered from the peer, on a stream of
/// their own, for as long as the connection lives (graceful shutdown included: a peer
/// flushing to us needs them to drain its window).
async fn ack_loop(peer: Arc<Peer>, conn: Connection) {
    let mut stream: Option<SendStream> = None;
    loop {
        let delivered = peer.next_ack().await;
        let send = match &mut stream {
            Some(send) => send,
            None => {
                let Ok(mut send) = conn.open_uni().await else {
                    return;
                };
                // Above every other stream: acks release the peer's window.
                let _ = send.set_priority(Priority::Control.stream_priority() + 1);
                if send.write_all(&wire::ack_stream_header()).await.is_err() {
                    return;
                }
                stream.insert(send)
            }
        };
        if send.write_all(&wire::encode_ack(delivered)).await.is_err() {
            return;
        }
    }
}

/// Applies the peer's acknowledgements as they arrive; nothing else may come on this stream.
async fn read_acks(shared: &Shared, peer: &Peer, conn: &Connection, mut recv: RecvStream) {
    let mut decoder = FrameDecoder::new(shared.config.max_frame_bytes.min(1 << 10));
    loop {
        match read_frame(&mut recv, &mut decoder).await {
            Ok(Some(Frame::Ack { delivered })) => {
                peer.heard();
                peer.acked(delivered);
            }
            Ok(Some(_)) => {
                violation(
                    shared,
                    peer,
                    conn,
                    CloseCode::ProtocolViolation,
                    "a frame other than Ack on the ack stream".into(),
                );
                return;
            }
            Ok(None) | Err(ReadFrameError::Read(_)) => return,
            Err(ReadFrameError::Wire(error)) => {
                violation(
                    shared,
                    peer,
                    conn,
                    CloseCode::MalformedFrame,
                    format!("ack stream: {error}"),
                );
                return;
            }
        }
    }
}

async fn open_data_stream(conn: &Connection, priority: Priority) -> Result<SendStream, String> {
    let mut send = conn.open_uni().await.map_err(|e| e.to_string())?;
    let _ = send.set_priority(priority.stream_priority());
    send.write_all(&wire::stream_header(priority))
        .await
        .map_err(|e| e.to_string())?;
    Ok(send)
}

/// Encodes `batch` into `chunks`. A frame over `limit` (what the peer takes) goes as a
/// [`wire::TOO_LARGE_STAND_IN`] with its sequence number instead; returned, by tag and
/// size, for reporting.
fn encode_batch(batch: &Batch, limit: usize, chunks: &mut Vec<Bytes>) -> Vec<(Tag, usize)> {
    let mut too_large = Vec::new();
    let mut buf = BytesMut::with_capacity(batch.bytes.min(64 * 1024));
    for frame in &batch.frames {
        let size = wire::data_frame_len(frame.seq, frame.tag, frame.payload.len());
        if size > limit {
            wire::put_data_header(&mut buf, frame.seq, wire::TOO_LARGE_STAND_IN, 0);
            too_large.push((frame.tag, size));
            continue;
        }
        wire::put_data_header(&mut buf, frame.seq, frame.tag, frame.payload.len());
        if frame.payload.len() <= INLINE_PAYLOAD_MAX {
            buf.extend_from_slice(&frame.payload);
        } else {
            chunks.push(buf.split().freeze());
            chunks.push(frame.payload.clone());
        }
    }
    if !buf.is_empty() {
        chunks.push(buf.freeze());
    }
    too_large
}

/// Bit `i` set: the peer's data stream of priority index `i` has been read to its end.
type StreamEnds = Arc<watch::Sender<u8>>;

/// How a stream's frames ended.
enum StreamEnd {
    /// The peer finished the stream; everything on it was delivered.
    Finished,
    /// The peer said Goodbye on its control stream.
    Goodbye { opened: u8 },
    /// The connection or stream failed, or the peer broke the protocol.
    Broken,
}

async fn read_control(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    conn: Connection,
    mut recv: RecvStream,
    mut decoder: FrameDecoder,
    ends: StreamEnds,
) {
    decoder.set_max_frame(shared.config.frame_limit(Priority::Control));
    let end = read_frames(
        &shared,
        &peer,
        &conn,
        Priority::Control,
        &mut recv,
        &mut decoder,
    )
    .await;
    if let StreamEnd::Goodbye { opened } = end {
        // The peer is leaving. Close once every stream it opened has been read to its end;
        // the peer waits for that close before it lets go of the connection.
        let mut finished = ends.subscribe();
        let all_read = finished.wait_for(|done| done & opened == opened);
        let _ = tokio::time::timeout(shared.config.shutdown_timeout, all_read).await;
        let code = CloseCode::Shutdown;
        conn.close(code.varint(), b"goodbye");
    }
}

async fn accept_streams(shared: Arc<Shared>, peer: Arc<Peer>, conn: Connection, ends: StreamEnds) {
    // The readers live in this set, so aborting this task (connection replaced or closed)
    // stops them too.
    let mut readers = JoinSet::new();
    loop {
        // Biased: a fixed polling order keeps simulated runs repeatable for a seed.
        tokio::select! {
            biased;
            accepted = conn.accept_uni() => match accepted {
                Ok(recv) => {
                    readers.spawn(read_stream(shared.clone(), peer.clone(), conn.clone(), recv, ends.clone()));
                }
                Err(_) => break,
            },
            Some(_) = readers.join_next() => {}
        }
    }
    while readers.join_next().await.is_some() {}
}

async fn read_stream(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    conn: Connection,
    mut recv: RecvStream,
    ends: StreamEnds,
) {
    let mut header = [0u8; 2];
    if let Err(error) = recv.read_exact(&mut header).await {
        if let quinn::ReadExactError::FinishedEarly(_) = error {
            violation(
                &shared,
                &peer,
                &conn,
                CloseCode::MalformedFrame,
                "stream ended inside its header".into(),
            );
        }
        return;
    }
    let priority = match wire::parse_stream_header(header) {
        Ok(StreamKind::Data(priority)) => priority,
        Ok(StreamKind::Acks) => return read_acks(&shared, &peer, &conn, recv).await,
        Err(error) => {
            violation(
                &shared,
                &peer,
                &conn,
                CloseCode::MalformedFrame,
                error.to_string(),
            );
            return;
        }
    };
    let mut decoder = FrameDecoder::new(shared.frame_limit_for(peer.member().uuid(), priority));
    match read_frames(&shared, &peer, &conn, priority, &mut recv, &mut decoder).await {
        StreamEnd::Finished => ends.send_modify(|done| *done |= 1 << priority.index()),
        StreamEnd::Goodbye { .. } | StreamEnd::Broken => {}
    }
}

async fn read_frames(
    shared: &Shared,
    peer: &Peer,
    conn: &Connection,
    priority: Priority,
    recv: &mut RecvStream,
    decoder: &mut FrameDecoder,
) -> StreamEnd {
    // Only one reader per priority delivers at a time: a reader of a connection being
    // replaced finishes (or is cancelled) before the new one checks sequence numbers.
    let _lane = peer.receive_lane(priority).await;
    // A peer's uuid never changes (its address may): read once, not per frame.
    let uuid = peer.member().uuid();
    loop {
        // Looked up per frame: a joiner's limit rises once its view is being prepared.
        decoder.set_max_frame(shared.frame_limit_for(uuid, priority));
        let frame = match read_frame(recv, decoder).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return StreamEnd::Finished,
            Err(ReadFrameError::Read(_)) => return StreamEnd::Broken,
            Err(ReadFrameError::Wire(error)) => {
                let code = match error {
                    WireError::FrameTooLarge { .. } => {
                        shared.limits.count_frame_too_large();
                        CloseCode::FrameTooLarge
                    }
                    _ => CloseCode::MalformedFrame,
                };
                violation(
                    shared,
                    peer,
                    conn,
                    code,
                    format!("{priority} stream: {error}"),
                );
                return StreamEnd::Broken;
            }
        };
        peer.heard();
        match frame {
            Frame::Data { seq, tag, payload } => {
                let i = priority.index();
                peer.counters.frames_received[i].fetch_add(1, Ordering::Relaxed);
                peer.counters.bytes_received[i].fetch_add(payload.len() as u64, Ordering::Relaxed);
                match peer.check(priority, seq) {
                    Received::Next => {}
                    Received::Duplicate => continue,
                    Received::Gap { expected } => {
                        let reason =
                            format!("{priority} sequence number {seq} where {expected} was next");
                        violation(shared, peer, conn, CloseCode::ProtocolViolation, reason);
                        return StreamEnd::Broken;
                    }
                }
                if tag == wire::TOO_LARGE_STAND_IN {
                    // A message its sender held back as too large for us: nothing to
                    // deliver, but its place in the stream is taken.
                    peer.commit(priority, seq);
                    continue;
                }
                let from = peer.member();
                if tag == wire::UNDELIVERED {
                    // Only a member of the view may say so (anyone may send on Control
                    // under a reserved tag, and this is no protocol step).
                    if shared.accepts_on(from.uuid(), priority, Tag::FIRST_APPLICATION) {
                        undelivered_notice(shared, from, payload);
                    }
                    peer.commit(priority, seq);
                    continue;
                }
                if !shared.accepts_on(from.uuid(), priority, tag) {
                    // Application data from outside the view, or anything from outside it
                    // on a priority other than Control (a member removed, or a process
                    // never admitted): dropped, and its place in the stream taken so the
                    // stream goes on.
                    shared.limits.count_from_non_member();
                    tracing::debug!(peer = %from, %tag, "dropped application data from a non-member");
                    peer.commit(priority, seq);
                    continue;
                }
                let inbound = Inbound {
                    from,
                    delivery: Delivery::Reliable(priority),
                    payload,
                };
                // Committed only once the subscriber has it: a reader cancelled while
                // waiting for a full subscriber leaves the frame to be resent.
                let routed = shared.dispatcher.deliver(tag, inbound).await;
                peer.commit(priority, seq);
                if routed == Routed::NoSubscriber
                    && tag.is_application()
                    && let Some(count) = peer.note_undelivered(tag)
                {
                    // Its sender must not take it as delivered: tell it, on Control.
                    let notice = wire::encode_undelivered(tag, count);
                    if peer
                        .enqueue(Priority::Control, wire::UNDELIVERED, notice)
                        .is_err()
                    {
                        tracing::debug!(peer = %peer.member(), %tag, "undelivered notice not queued");
                    }
                }
            }
            Frame::Goodbye { opened } if priority == Priority::Control => {
                return StreamEnd::Goodbye { opened };
            }
            Frame::Goodbye { .. } | Frame::Ack { .. } => {
                let reason = format!("{priority} stream carried a Goodbye or Ack frame");
                violation(shared, peer, conn, CloseCode::ProtocolViolation, reason);
                return StreamEnd::Broken;
            }
            Frame::Hello(_) | Frame::HelloAck(_) | Frame::Query { .. } | Frame::Answer { .. } => {
                violation(
                    shared,
                    peer,
                    conn,
                    CloseCode::ProtocolViolation,
                    "a handshake or query frame after the handshake".into(),
                );
                return StreamEnd::Broken;
            }
            Frame::Unknown { kind } => {
                peer.counters.unknown_frames.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %peer.member(), kind, "skipped a frame of unknown kind");
            }
        }
    }
}

async fn read_datagrams(shared: Arc<Shared>, peer: Arc<Peer>, conn: Connection) {
    while let Ok(datagram) = conn.read_datagram().await {
        peer.heard();
        match wire::decode_datagram(datagram) {
            Ok((tag, _)) if !shared.accepts(peer.member().uuid(), tag) => {
                shared.limits.count_from_non_member();
            }
            Ok((tag, payload)) => {
                peer.counters
                    .datagrams_received
                    .fetch_add(1, Ordering::Relaxed);
                let inbound = Inbound {
                    from: peer.member(),
                    delivery: Delivery::Datagram,
                    payload,
                };
                shared.dispatcher.try_deliver(tag, inbound);
            }
            Err(error) => {
                // Datagrams are unreliable by contract; a bad one is dropped, not fatal.
                peer.counters.unknown_frames.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %peer.member(), %error, "dropped a malformed datagram");
            }
        }
    }
}

/// `from` says messages of one of this member's tags found no subscriber there: logged and
/// raised as [`TransportEvent::Undelivered`]. A notice that does not decode is dropped (a
/// later version may say more; nothing here depends on it).
fn undelivered_notice(shared: &Shared, from: MemberId, payload: Bytes) {
    match wire::decode_undelivered(payload) {
        Ok((tag, count)) => {
            tracing::warn!(member = %from, %tag, count, "messages not delivered: no subscriber for their tag there");
            shared.emit(TransportEvent::Undelivered {
                member: from,
                tag,
                count,
            });
        }
        Err(error) => tracing::debug!(member = %from, %error, "undelivered notice ignored"),
    }
}

fn violation(shared: &Shared, peer: &Peer, conn: &Connection, code: CloseCode, reason: String) {
    tracing::warn!(peer = %peer.member(), %code, %reason, "closing connection: peer broke the protocol");
    conn.close(code.varint(), reason.as_bytes());
    shared.emit(TransportEvent::ProtocolViolation {
        member: peer.member(),
        reason: format!("{code}: {reason}"),
    });
}
