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

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use quinn::{Connection, ConnectionError, RecvStream, SendStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::Shared;
use super::handshake::{LinkParts, ReadFrameError, read_frame};
use super::peer::Peer;
use super::queue::{OutFrame, Taken};
use super::receive::{ReceiveCursor, Received};
use crate::dispatch::{Inbound, Routed};
use crate::member::MemberId;
use crate::message::{Delivery, Tag};
use crate::messenger::TransportEvent;
use crate::priority::Priority;
use crate::wire::{self, CloseCode, Frame, FrameDecoder, StreamKind, WireError};

/// Payloads up to this size are copied into the batch buffer; larger ones are written as
/// their own chunk.
const INLINE_PAYLOAD_MAX: usize = 4096;

/// A stream's send half, shared by its priority's writer task and by senders that write at
/// once ([`write_now`]): whoever holds the lock writes, so frames go out in the order they
/// were taken from the window.
#[derive(Debug, Default)]
pub(crate) struct SendSlot {
    /// Opened by the writer on first use (the control stream exists from the start).
    stream: Option<SendStream>,
    /// What an immediate write could not hand to the stream at once: the writer writes it
    /// before anything else.
    leftover: Vec<Bytes>,
}

/// One [`SendSlot`] per priority, in [`Priority::ALL`] order.
pub(crate) type SendSlots = [tokio::sync::Mutex<SendSlot>; 4];

pub(crate) struct Established {
    conn: Connection,
    peer: Arc<Peer>,
    dialed_by_us: bool,
    /// When the Hello exchange completed.
    up_since: tokio::time::Instant,
    slots: Arc<SendSlots>,
    /// One per priority, in [`Priority::ALL`] order.
    writers: Vec<JoinHandle<()>>,
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
        // The control stream exists already; data streams open on first use.
        let mut slots = SendSlots::default();
        slots[Priority::Control.index()].get_mut().stream = Some(control_send);
        let slots = Arc::new(slots);
        peer.set_slots(Some(slots.clone()));
        let writers = Priority::ALL
            .into_iter()
            .map(|priority| {
                tokio::spawn(write_loop(
                    shared.clone(),
                    peer.clone(),
                    conn.clone(),
                    priority,
                    slots.clone(),
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
            peer: peer.clone(),
            dialed_by_us,
            up_since: tokio::time::Instant::now(),
            slots,
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

    /// Writes everything queued, then says Goodbye and waits for the peer to close the
    /// connection, which it does once it has read every stream to its end (closing first
    /// would discard what the peer has received but not yet read). Writers end on their
    /// own once the peer is stopping and their queue is empty; a stream whose writer
    /// failed was cleared from its slot and is left out. Call once; the caller bounds the
    /// wait.
    pub(crate) async fn flush(&mut self) {
        let mut opened = 0u8;
        let mut control = None;
        // Taken out, so that `retire` does not wait on them a second time.
        let writers: Vec<_> = self.writers.drain(..).collect();
        for (priority, writer) in Priority::ALL.into_iter().zip(writers) {
            if writer.await.is_err() {
                continue;
            }
            let mut slot = self.slots[priority.index()].lock().await;
            let SendSlot { stream, leftover } = &mut *slot;
            let Some(mut stream) = stream.take() else {
                continue;
            };
            // A sender may have written at once after the writer ended (an undelivered
            // notice): what the stream did not take then goes first.
            if stream.write_all_chunks(leftover).await.is_err() {
                continue;
            }
            leftover.clear();
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
        self.peer.forget_slots(&self.slots);
        for writer in self.writers.drain(..) {
            writer.abort();
            let _ = writer.await;
        }
        // A sender writing at once holds a slot only while it writes, without waiting:
        // once each is taken here, nobody writes on this connection any more, and the
        // window may be rewound for the next one.
        for slot in self.slots.iter() {
            let mut slot = slot.lock().await;
            slot.stream = None;
            slot.leftover.clear();
        }
        for reader in self.readers.drain(..) {
            reader.abort();
            let _ = reader.await;
        }
    }
}

impl Drop for Established {
    fn drop(&mut self) {
        self.peer.forget_slots(&self.slots);
        self.writers.iter().for_each(JoinHandle::abort);
        self.readers.iter().for_each(JoinHandle::abort);
    }
}

/// Writes what the peer's window hands out for one priority until the connection fails or
/// the peer stops gracefully (then `flush` takes the stream from its slot and ends it).
/// What was taken stays in the window as unacknowledged, so a failed write loses nothing:
/// the next connection resends it.
async fn write_loop(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    conn: Connection,
    priority: Priority,
    slots: Arc<SendSlots>,
) {
    loop {
        // Registered before looking, so that a wake-up between the two is not missed.
        let notified = peer.writer_wake(priority).notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        let mut slot = slots[priority.index()].lock().await;
        let SendSlot { stream, leftover } = &mut *slot;
        if !leftover.is_empty() {
            let Some(send) = stream.as_mut() else {
                return;
            };
            if let Err(error) = send.write_all_chunks(leftover).await {
                tracing::debug!(peer = %peer.member(), %priority, %error, "write failed");
                // Broken: `flush` must not finish it as if everything went.
                *stream = None;
                return;
            }
            leftover.clear();
            continue;
        }
        if peer.has_queued_on(priority) {
            let send = match stream {
                Some(send) => send,
                None => match open_data_stream(&conn, priority).await {
                    Ok(send) => stream.insert(send),
                    Err(error) => {
                        tracing::debug!(peer = %peer.member(), %priority, %error, "could not open stream");
                        return;
                    }
                },
            };
            let mut out = WriteBuffer::default();
            if let Some(taken) = peer.take_now(priority, &mut out) {
                if let Err(error) = send.write_all_chunks(out.chunks()).await {
                    tracing::debug!(peer = %peer.member(), %priority, %error, "write failed");
                    *stream = None;
                    return;
                }
                written(&shared, &peer, priority, taken, out.too_large);
                continue;
            }
        } else if peer.is_stopping() {
            // Stopping gracefully with nothing left.
            return;
        }
        drop(slot);
        notified.await;
    }
}

/// Hands what was just queued for `priority` on: a Control or High message is written to
/// its stream at once if the stream's writer is idle (one task hand-off fewer on the way
/// out), and what the stream does not take at once is left in its slot for the writer;
/// anything else wakes the writer, which packs what accumulated meanwhile into one write
/// (writing each small message on its own would cost a quinn write each, about a
/// microsecond, and halve the message rate).
pub(crate) fn write_now(shared: &Shared, peer: &Peer, priority: Priority) {
    let urgent = matches!(priority, Priority::Control | Priority::High);
    if !(urgent && try_write_now(shared, peer, priority)) {
        peer.wake_writer(priority);
    }
}

/// True if everything taken was written, so the writer need not be woken.
fn try_write_now(shared: &Shared, peer: &Peer, priority: Priority) -> bool {
    // A stopping peer's writers end once their queues are empty, and `flush` then takes
    // the streams: nothing may be written beside them (an undelivered notice queued now
    // waits in the window, as it always did).
    if peer.is_stopping() {
        return false;
    }
    let Some(slots) = peer.slots() else {
        return false;
    };
    let Ok(mut slot) = slots[priority.index()].try_lock() else {
        // The writer is writing: it looks at the window again when it is done.
        return false;
    };
    let SendSlot { stream, leftover } = &mut *slot;
    let Some(send) = stream.as_mut() else {
        return false;
    };
    if !leftover.is_empty() {
        return false;
    }
    let mut out = WriteBuffer::default();
    let Some(taken) = peer.take_now(priority, &mut out) else {
        return true;
    };
    let mut chunks = std::mem::take(out.chunks());
    let result = write_without_waiting(send, &mut chunks);
    *leftover = chunks;
    match result {
        Ok(all_written) => {
            written(shared, peer, priority, taken, out.too_large);
            all_written
        }
        // The stream or connection failed: what was taken stays unacknowledged, and the
        // next connection resends it. The writer meets the same failure on what is left
        // and ends, clearing the stream.
        Err(_) => false,
    }
}

/// Writes `chunks` as far as the stream takes them without waiting, removing what it took.
/// True if it took everything.
fn write_without_waiting(
    send: &mut SendStream,
    chunks: &mut Vec<Bytes>,
) -> Result<bool, quinn::WriteError> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut start = 0;
    let mut failed = None;
    while start < chunks.len() {
        let write = send.write_chunks(&mut chunks[start..]);
        let mut write = std::pin::pin!(write);
        match write.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(written)) if written.bytes > 0 => start += written.chunks,
            Poll::Ready(Ok(_)) | Poll::Pending => break,
            Poll::Ready(Err(error)) => {
                failed = Some(error);
                break;
            }
        }
    }
    chunks.drain(..start);
    // A chunk taken in part was advanced past what was taken.
    chunks.retain(|chunk| !chunk.is_empty());
    match failed {
        Some(error) => Err(error),
        None => Ok(chunks.is_empty()),
    }
}

/// Counts frames handed to a stream and reports those over the peer's frame limit.
fn written(
    shared: &Shared,
    peer: &Peer,
    priority: Priority,
    taken: Taken,
    too_large: Vec<(Tag, usize)>,
) {
    peer.count_written(priority, taken);
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
        peer.counters.acks_sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// Applies the peer's acknowledgements as they arrive; nothing else may come on this stream.
async fn read_acks(shared: &Shared, peer: &Peer, conn: &Connection, mut recv: RecvStream) {
    let mut decoder = FrameDecoder::new(shared.config.max_frame_bytes.min(1 << 10));
    loop {
        match read_frame(&mut recv, &mut decoder).await {
            Ok(Some(Frame::Ack { delivered })) => {
                peer.counters.acks_received.fetch_add(1, Ordering::Relaxed);
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

/// One write's frames, encoded as they are taken from the window (under its lock, so
/// without cloning them): small payloads copied into one buffer, larger ones passed as
/// chunks of their own.
#[derive(Debug, Default)]
pub(crate) struct WriteBuffer {
    buf: BytesMut,
    chunks: Vec<Bytes>,
    /// Frames over what the peer takes, by tag and size, for reporting: each went as a
    /// [`wire::TOO_LARGE_STAND_IN`] with its sequence number instead.
    too_large: Vec<(Tag, usize)>,
}

impl WriteBuffer {
    /// Encodes one frame; `limit` is the largest frame the peer takes.
    pub(crate) fn put(&mut self, frame: &OutFrame, limit: usize) {
        let buf = &mut self.buf;
        let size = wire::data_frame_len(frame.seq, frame.tag, frame.payload.len());
        if size > limit {
            wire::put_data_header(buf, frame.seq, wire::TOO_LARGE_STAND_IN, 0);
            self.too_large.push((frame.tag, size));
            return;
        }
        wire::put_data_header(buf, frame.seq, frame.tag, frame.payload.len());
        if frame.payload.len() <= INLINE_PAYLOAD_MAX {
            buf.extend_from_slice(&frame.payload);
        } else {
            self.chunks.push(buf.split().freeze());
            self.chunks.push(frame.payload.clone());
        }
    }

    /// The chunks to write, in order.
    fn chunks(&mut self) -> &mut Vec<Bytes> {
        if !self.buf.is_empty() {
            self.chunks.push(self.buf.split().freeze());
        }
        &mut self.chunks
    }
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

/// The most chunks taken from a stream in one read: one call into quinn, which locks the
/// connection, for many packets' worth of frames. A reader starts with room for one and
/// doubles it each time a read fills the room, so a quiet stream costs one slot.
const CHUNKS_PER_READ: usize = 32;
/// Frames decoded before they are handled: enough that a batch of small messages goes to
/// its subscriber in one hand-off, few enough that handling starts soon.
const FRAMES_PER_BATCH: usize = 256;

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
    let mut chunks = vec![Bytes::new()];
    let mut frames = Vec::new();
    loop {
        // Looked up per batch: a joiner's limit rises once its view is being prepared.
        decoder.set_max_frame(shared.frame_limit_for(uuid, priority));
        let mut broken = None;
        while frames.len() < FRAMES_PER_BATCH {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => {
                    broken = Some(error);
                    break;
                }
            }
        }
        // A full batch: more may be decodable already, without reading.
        let full = frames.len() == FRAMES_PER_BATCH;
        if !frames.is_empty() {
            peer.heard();
            let mut reader = Reader {
                shared,
                peer,
                conn,
                priority,
                from: peer.member(),
                in_view: shared.in_view(uuid),
                cursor: peer.receive_cursor(priority),
                group: Vec::new(),
                group_tag: wire::TOO_LARGE_STAND_IN,
                group_last: 0,
            };
            if let Some(end) = reader.handle(&mut frames).await {
                return end;
            }
        }
        if let Some(error) = broken {
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
        if full {
            continue;
        }
        match recv.read_chunks(&mut chunks).await {
            Ok(Some(count)) => {
                for chunk in &mut chunks[..count] {
                    decoder.push_chunk(std::mem::take(chunk));
                }
                if count == chunks.len() && count < CHUNKS_PER_READ {
                    chunks.resize(2 * count, Bytes::new());
                }
            }
            Ok(None) if decoder.buffered() == 0 => return StreamEnd::Finished,
            Ok(None) => {
                let reason = format!(
                    "{priority} stream: ended inside a frame ({} bytes left)",
                    decoder.buffered()
                );
                violation(shared, peer, conn, CloseCode::MalformedFrame, reason);
                return StreamEnd::Broken;
            }
            Err(_) => return StreamEnd::Broken,
        }
    }
}

/// Handles one batch of frames from a priority's stream, in order. Consecutive messages of
/// one tag for a subscriber are handed over together ([`Dispatcher::deliver_all`]), and
/// each hand-off is committed as soon as the subscriber has it: a reader cancelled while
/// waiting for room leaves the rest to be resent.
///
/// [`Dispatcher::deliver_all`]: crate::dispatch::Dispatcher::deliver_all
struct Reader<'a> {
    shared: &'a Shared,
    peer: &'a Peer,
    conn: &'a Connection,
    priority: Priority,
    from: MemberId,
    /// Whether the sender is in the view (installed or prepared), looked up once per batch.
    in_view: bool,
    cursor: ReceiveCursor,
    /// Messages of `group_tag` accepted and not yet handed over, the last numbered
    /// `group_last`.
    group: Vec<Inbound>,
    group_tag: Tag,
    group_last: u64,
}

impl Reader<'_> {
    /// Handles `frames` (draining them); `Some` if the stream ended or broke on one.
    async fn handle(&mut self, frames: &mut Vec<Frame>) -> Option<StreamEnd> {
        let (shared, peer, conn, priority) = (self.shared, self.peer, self.conn, self.priority);
        for frame in frames.drain(..) {
            match frame {
                Frame::Data { seq, tag, payload } => {
                    let i = priority.index();
                    peer.counters.frames_received[i].fetch_add(1, Ordering::Relaxed);
                    peer.counters.bytes_received[i]
                        .fetch_add(payload.len() as u64, Ordering::Relaxed);
                    match self.cursor.accept(seq) {
                        Received::Next => {}
                        Received::Duplicate => {
                            peer.duplicate();
                            continue;
                        }
                        Received::Gap { expected } => {
                            peer.gap();
                            // What came before the gap is good: hand it over first.
                            self.flush().await;
                            let reason = format!(
                                "{priority} sequence number {seq} where {expected} was next"
                            );
                            violation(shared, peer, conn, CloseCode::ProtocolViolation, reason);
                            return Some(StreamEnd::Broken);
                        }
                    }
                    let for_a_subscriber = tag != wire::TOO_LARGE_STAND_IN
                        && tag != wire::UNDELIVERED
                        && Shared::admits(self.in_view, priority, tag);
                    if for_a_subscriber {
                        if !self.group.is_empty() && self.group_tag != tag {
                            self.flush().await;
                        }
                        self.group_tag = tag;
                        self.group_last = seq;
                        self.group.push(Inbound {
                            from: self.from.clone(),
                            delivery: Delivery::Reliable(priority),
                            payload,
                        });
                        if self.group.len() == shared.dispatcher.capacity() {
                            self.flush().await;
                        }
                        continue;
                    }
                    // Nothing to hand over, but its place in the stream is taken, after
                    // everything before it.
                    self.flush().await;
                    self.unhanded(seq, tag, payload);
                }
                Frame::Goodbye { opened } if priority == Priority::Control => {
                    self.flush().await;
                    return Some(StreamEnd::Goodbye { opened });
                }
                Frame::Goodbye { .. } | Frame::Ack { .. } => {
                    self.flush().await;
                    let reason = format!("{priority} stream carried a Goodbye or Ack frame");
                    violation(shared, peer, conn, CloseCode::ProtocolViolation, reason);
                    return Some(StreamEnd::Broken);
                }
                Frame::Hello(_)
                | Frame::HelloAck(_)
                | Frame::Query { .. }
                | Frame::Answer { .. } => {
                    self.flush().await;
                    violation(
                        shared,
                        peer,
                        conn,
                        CloseCode::ProtocolViolation,
                        "a handshake or query frame after the handshake".into(),
                    );
                    return Some(StreamEnd::Broken);
                }
                Frame::Unknown { kind } => {
                    peer.counters.unknown_frames.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(peer = %peer.member(), kind, "skipped a frame of unknown kind");
                }
            }
        }
        self.flush().await;
        None
    }

    /// A frame that is next in its stream but goes to no subscriber: a stand-in for a
    /// message too large for us, an undelivered notice, or data from outside the view.
    fn unhanded(&mut self, seq: u64, tag: Tag, payload: Bytes) {
        let (shared, peer, priority) = (self.shared, self.peer, self.priority);
        let bytes = payload.len();
        if tag == wire::TOO_LARGE_STAND_IN {
            // A message its sender held back as too large for us.
        } else if tag == wire::UNDELIVERED {
            // Only a member of the view may say so (anyone may send on Control under a
            // reserved tag, and this is no protocol step).
            if Shared::admits(self.in_view, priority, Tag::FIRST_APPLICATION) {
                undelivered_notice(shared, self.from.clone(), payload);
            }
        } else {
            // Application data from outside the view, or anything from outside it on a
            // priority other than Control (a member removed, or a process never
            // admitted): dropped, so the stream goes on.
            shared.limits.count_from_non_member();
            tracing::debug!(peer = %self.from, %tag, "dropped application data from a non-member");
        }
        peer.commit(priority, seq, bytes);
    }

    /// Hands the accepted messages to their subscriber and commits them once it has them.
    async fn flush(&mut self) {
        if self.group.is_empty() {
            return;
        }
        let (peer, priority, tag) = (self.peer, self.priority, self.group_tag);
        let count = self.group.len() as u64;
        let bytes = self.group.iter().map(|inbound| inbound.payload.len()).sum();
        let group = std::mem::take(&mut self.group);
        let routed = self.shared.dispatcher.deliver_all(tag, group).await;
        peer.commit(priority, self.group_last, bytes);
        if routed == Routed::NoSubscriber
            && tag.is_application()
            && let Some(count) = peer.note_undelivered(tag, count)
        {
            // Its sender must not take them as delivered: tell it, on Control.
            let notice = wire::encode_undelivered(tag, count);
            match peer.enqueue(Priority::Control, wire::UNDELIVERED, notice) {
                Ok(()) => write_now(self.shared, peer, Priority::Control),
                Err(_) => {
                    tracing::debug!(peer = %peer.member(), %tag, "undelivered notice not queued");
                }
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
