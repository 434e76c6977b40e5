//! The raw quinn baseline: a hand-written messenger straight on quinn, as a good
//! implementation without cohort would write it, and so the ceiling for cohort over quinn.
//!
//! It uses exactly cohort's TLS (the `ClusterTls` configs for two members of the same CA:
//! mutual TLS 1.3, ring, the same verifiers), the same 4 MiB UDP socket buffers cohort asks
//! for, and quinn's default transport parameters with cohort's keep-alive and idle timeout.
//! What it leaves out is what cohort adds: queues, sequence numbers, acknowledgements,
//! typed encoding and the dispatcher.
//!
//! Two arrangements are measured ([`Arrangement`]): [`Arrangement::PLAIN`], quinn's
//! defaults with cohort's 4 MiB socket buffers, for every figure; and
//! [`Arrangement::BEST`], the best found on this machine for a ping behind saturating
//! bulk, for `transport.hol_p99.quinn_best`: an application-level window of
//! [`BEST_APP_WINDOW`] on the bulk stream (the writer cuts each payload into 64 KiB pieces
//! and keeps at most that much written beyond what the server reported read), so that at
//! most that much bulk data is ever queued ahead of a ping. Both use cohort's 4 MiB socket
//! buffers and quinn's transport defaults. Tried on the quick bench before choosing: that
//! window at 128, 256 or 512 KiB, default socket buffers, and quinn's stream window at
//! 256 KiB to 2 MiB instead; ARCHITECTURE.md has the figures.
//!
//! The client opens three streams once and keeps them: a unidirectional stream of small
//! frames, a unidirectional stream of bulk frames (QUIC priority 0) and a bidirectional ping
//! stream (priority 1, so quinn sends pings ahead of bulk data). Each starts with one byte
//! naming it. Frames are length-prefixed ([`Frames`]); small frames are packed into 64 KiB
//! writes, a bulk payload is written as its own chunk without copying. The server reads
//! with `read_chunks`, checks every frame and echoes each 12-byte ping frame.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use quinn::{
    Connection, Endpoint, EndpointConfig, IdleTimeout, ReadExactError, RecvStream, SendStream,
    TokioRuntime, VarInt,
};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::transport::{
    Certs, FILLER, Frames, Load, PACK_BYTES, Pair, SMALL_BYTES, Sink, SmallOrder, Tally, check_bulk,
};

/// cohort's default `socket_buffer_bytes`.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;
/// The application-level bulk window of [`Arrangement::BEST`].
pub(crate) const BEST_APP_WINDOW: u64 = 256 << 10;
/// Pieces a windowed bulk payload is written in.
const BULK_PIECE: usize = 64 << 10;
/// The server reports what it read once it has read this much more.
const REPORT_EVERY: u64 = 16 << 10;
/// The first byte of the server's stream of read reports.
const REPORT_STREAM: u8 = 4;

/// How a raw quinn pair is set up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Arrangement {
    /// An application-level window on the bulk stream: bulk bytes written but not yet
    /// reported read by the receiving application, at most this many (the writer cuts
    /// each payload into pieces of [`BULK_PIECE`] and waits for reports, which the server
    /// sends on a stream of their own); `None` writes each payload whole.
    pub(crate) app_window: Option<u64>,
}

impl Arrangement {
    /// quinn's defaults, cohort's socket buffers.
    pub(crate) const PLAIN: Arrangement = Arrangement { app_window: None };
    /// The best arrangement found for head-of-line latency under bulk load.
    pub(crate) const BEST: Arrangement = Arrangement {
        app_window: Some(BEST_APP_WINDOW),
    };
}
/// cohort's default keep-alive interval and idle timeout.
const KEEP_ALIVE: Duration = Duration::from_secs(2);
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first byte of each stream.
const SMALL_STREAM: u8 = 1;
const BULK_STREAM: u8 = 2;
const PING_STREAM: u8 = 3;
/// QUIC stream priorities (higher is sent first).
const BULK_PRIORITY: i32 = 0;
const PING_PRIORITY: i32 = 1;
/// A ping or its echo: length 8, then the sequence number.
const PING_FRAME: usize = 12;
/// Chunks taken from quinn per read.
const READ_CHUNKS: usize = 32;

/// A client and a server endpoint with one connection between them.
pub(crate) struct QuinnPair {
    client: Endpoint,
    server: Endpoint,
    conn: Connection,
    small: SendStream,
    /// Lent to the background load while it runs.
    bulk: Option<BulkWriter>,
    ping_send: SendStream,
    ping_recv: RecvStream,
    next_small: u64,
    next_ping: u64,
    tally: watch::Receiver<Tally>,
    tasks: JoinSet<()>,
    load: Option<Load<(BulkWriter, usize)>>,
}

impl QuinnPair {
    /// Binds both endpoints set up as `arrangement` says, connects, opens the streams and
    /// starts the server's readers.
    pub(crate) async fn open(certs: &Certs, arrangement: Arrangement) -> Result<Self, String> {
        let transport = Arc::new(transport_config()?);
        let mut server_config =
            quinn::ServerConfig::with_crypto(certs.tls("quinn-server")?.server_crypto());
        server_config.transport_config(transport.clone());
        let mut client_config =
            quinn::ClientConfig::new(certs.tls("quinn-client")?.client_crypto());
        client_config.transport_config(transport);
        let server = endpoint(Some(server_config))?;
        let client = endpoint(None)?;
        let address = server
            .local_addr()
            .map_err(|error| format!("no server address: {error}"))?;
        let conn = connect(&client, &server, client_config, address).await?;
        let (server_conn, conn) = conn;

        let small = open_uni(&conn, SMALL_STREAM, 0).await?;
        let bulk = open_uni(&conn, BULK_STREAM, BULK_PRIORITY).await?;
        let (mut ping_send, ping_recv) = conn
            .open_bi()
            .await
            .map_err(|error| format!("could not open the ping stream: {error}"))?;
        let _ = ping_send.set_priority(PING_PRIORITY);
        write(&mut ping_send, &[PING_STREAM]).await?;

        let (sink, tally) = Sink::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(serve(server_conn, sink, arrangement.app_window.is_some()));
        let window = match arrangement.app_window {
            None => None,
            Some(limit) => {
                let reports = accept_uni(&conn, REPORT_STREAM).await?;
                let (report, consumed) = watch::channel(0);
                tasks.spawn(read_reports(reports, report));
                Some(AppWindow {
                    limit,
                    written: 0,
                    consumed,
                })
            }
        };
        let bulk = BulkWriter { send: bulk, window };
        Ok(QuinnPair {
            client,
            server,
            conn,
            small,
            bulk: Some(bulk),
            ping_send,
            ping_recv,
            next_small: 0,
            next_ping: 0,
            tally,
            tasks,
            load: None,
        })
    }
}

fn transport_config() -> Result<quinn::TransportConfig, String> {
    let idle = IdleTimeout::try_from(IDLE_TIMEOUT)
        .map_err(|error| format!("idle timeout out of range: {error}"))?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(idle));
    Ok(transport)
}

/// An endpoint on a fresh loopback UDP socket with cohort's buffer sizes (best effort, as
/// cohort does: the kernel may cap them).
fn endpoint(server: Option<quinn::ServerConfig>) -> Result<Endpoint, String> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|error| format!("could not bind a UDP socket: {error}"))?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())
        .map_err(|error| format!("could not set up the UDP socket: {error}"))?;
    let _ = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER_BYTES);
    let _ = state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER_BYTES);
    Endpoint::new(
        EndpointConfig::default(),
        server,
        socket,
        Arc::new(TokioRuntime),
    )
    .map_err(|error| format!("could not start a quinn endpoint: {error}"))
}

/// Dials `address` from `client` while `server` accepts; returns (server's, client's) ends.
async fn connect(
    client: &Endpoint,
    server: &Endpoint,
    config: quinn::ClientConfig,
    address: SocketAddr,
) -> Result<(Connection, Connection), String> {
    let connecting = client
        .connect_with(config, address, "localhost")
        .map_err(|error| format!("could not dial: {error}"))?;
    let dialed = async {
        connecting
            .await
            .map_err(|error| format!("client handshake failed: {error}"))
    };
    let accepted = async {
        let incoming = server.accept().await.ok_or("the server endpoint closed")?;
        incoming
            .await
            .map_err(|error| format!("server handshake failed: {error}"))
    };
    let (client_end, server_end) = tokio::try_join!(dialed, accepted)?;
    Ok((server_end, client_end))
}

async fn open_uni(conn: &Connection, kind: u8, priority: i32) -> Result<SendStream, String> {
    let mut send = conn
        .open_uni()
        .await
        .map_err(|error| format!("could not open stream {kind}: {error}"))?;
    let _ = send.set_priority(priority);
    write(&mut send, &[kind]).await?;
    Ok(send)
}

async fn write(send: &mut SendStream, bytes: &[u8]) -> Result<(), String> {
    send.write_all(bytes)
        .await
        .map_err(|error| format!("write failed: {error}"))
}

/// The bulk stream's sending end, with its application-level window if it has one.
struct BulkWriter {
    send: SendStream,
    window: Option<AppWindow>,
}

/// Bulk bytes written against bytes the server reported read.
struct AppWindow {
    limit: u64,
    written: u64,
    consumed: watch::Receiver<u64>,
}

impl BulkWriter {
    /// Writes one bulk frame: the length, then the payload without copying, whole or (with
    /// a window) in pieces that each wait for room in it.
    async fn write(&mut self, payload: &Bytes) -> Result<(), String> {
        let len = u32::try_from(payload.len()).map_err(|_| "a bulk payload over 4 GiB")?;
        let header = Bytes::copy_from_slice(&len.to_le_bytes());
        let Some(window) = &mut self.window else {
            return self
                .send
                .write_all_chunks(&mut [header, payload.clone()])
                .await
                .map_err(|error| format!("bulk write failed: {error}"));
        };
        let pieces = std::iter::once(header).chain(
            (0..payload.len())
                .step_by(BULK_PIECE)
                .map(|at| payload.slice(at..(at + BULK_PIECE).min(payload.len()))),
        );
        for piece in pieces {
            let len = piece.len() as u64;
            let room = window.limit.saturating_sub(len);
            let written = window.written;
            window
                .consumed
                .wait_for(|consumed| written - consumed <= room)
                .await
                .map_err(|_| "the server stopped reporting what it read")?;
            self.send
                .write_chunk(piece)
                .await
                .map_err(|error| format!("bulk write failed: {error}"))?;
            window.written += len;
        }
        Ok(())
    }
}

/// Reads the server's reports of bulk bytes read (8 bytes each, the running total).
async fn read_reports(mut recv: RecvStream, consumed: watch::Sender<u64>) {
    let mut report = [0u8; 8];
    while recv.read_exact(&mut report).await.is_ok() {
        consumed.send_replace(u64::from_le_bytes(report));
    }
}

/// The server side: takes the three streams, then checks what arrives on them.
async fn serve(conn: Connection, sink: Sink, report: bool) {
    if let Err(fault) = serve_streams(conn, &sink, report).await {
        sink.fault(format!("quinn server: {fault}"));
    }
}

async fn serve_streams(conn: Connection, sink: &Sink, report: bool) -> Result<(), String> {
    let small = accept_uni(&conn, SMALL_STREAM).await?;
    let bulk = accept_uni(&conn, BULK_STREAM).await?;
    let reports = match report {
        true => Some(open_uni(&conn, REPORT_STREAM, PING_PRIORITY).await?),
        false => None,
    };
    let (send, mut recv) = conn
        .accept_bi()
        .await
        .map_err(|error| format!("no ping stream: {error}"))?;
    expect_kind(&mut recv, PING_STREAM).await?;
    let mut readers = JoinSet::new();
    readers.spawn(read_small(small, sink.clone()));
    readers.spawn(read_bulk(bulk, sink.clone(), reports));
    readers.spawn(echo(send, recv));
    while let Some(done) = readers.join_next().await {
        done.map_err(|error| format!("a reader failed: {error}"))??;
    }
    Ok(())
}

async fn accept_uni(conn: &Connection, kind: u8) -> Result<RecvStream, String> {
    let mut recv = conn
        .accept_uni()
        .await
        .map_err(|error| format!("no stream {kind}: {error}"))?;
    expect_kind(&mut recv, kind).await?;
    Ok(recv)
}

async fn expect_kind(recv: &mut RecvStream, kind: u8) -> Result<(), String> {
    let mut first = [0u8; 1];
    recv.read_exact(&mut first)
        .await
        .map_err(|error| format!("stream {kind} ended before its kind: {error}"))?;
    if first[0] != kind {
        return Err(format!(
            "stream of kind {} where {kind} was expected",
            first[0]
        ));
    }
    Ok(())
}

/// A receive stream cut into frames.
struct FrameReader {
    recv: RecvStream,
    frames: Frames,
    chunks: [Bytes; READ_CHUNKS],
}

impl FrameReader {
    fn new(recv: RecvStream) -> Self {
        FrameReader {
            recv,
            frames: Frames::default(),
            chunks: std::array::from_fn(|_| Bytes::new()),
        }
    }

    /// Reads what quinn has (at least one chunk); false once the stream has ended.
    async fn read(&mut self) -> Result<bool, String> {
        Ok(self.read_counted().await?.is_some())
    }

    /// Reads what quinn has, as [`FrameReader::read`]; the bytes read, or `None` once the
    /// stream has ended.
    async fn read_counted(&mut self) -> Result<Option<usize>, String> {
        let read = self
            .recv
            .read_chunks(&mut self.chunks)
            .await
            .map_err(|error| format!("read failed: {error}"))?;
        let Some(count) = read else {
            return Ok(None);
        };
        let mut bytes = 0;
        for chunk in &self.chunks[..count] {
            self.frames.extend(chunk);
            bytes += chunk.len();
        }
        Ok(Some(bytes))
    }

    fn next_frame(&mut self) -> Result<Option<Bytes>, String> {
        self.frames.next_frame()
    }
}

async fn read_small(recv: RecvStream, sink: Sink) -> Result<(), String> {
    let mut reader = FrameReader::new(recv);
    let mut order = SmallOrder::default();
    while reader.read().await? {
        // Counted per frame, reported once per read, like the other receivers do per batch.
        let mut count = 0;
        while let Some(frame) = reader.next_frame()? {
            order.check_payload(&frame)?;
            count += 1;
        }
        sink.small(count);
    }
    Ok(())
}

/// Checks bulk frames; with `reports`, tells the client how much it has read (taken from
/// quinn and checked), every [`REPORT_EVERY`] bytes.
async fn read_bulk(
    recv: RecvStream,
    sink: Sink,
    mut reports: Option<SendStream>,
) -> Result<(), String> {
    let mut reader = FrameReader::new(recv);
    let (mut read, mut reported) = (0u64, 0u64);
    while let Some(bytes) = reader.read_counted().await? {
        while let Some(frame) = reader.next_frame()? {
            check_bulk(&frame)?;
            sink.bulk(frame.len());
        }
        read += bytes as u64;
        if let Some(reports) = &mut reports
            && read - reported >= REPORT_EVERY
        {
            write(reports, &read.to_le_bytes()).await?;
            reported = read;
        }
    }
    Ok(())
}

async fn echo(mut send: SendStream, mut recv: RecvStream) -> Result<(), String> {
    let _ = send.set_priority(PING_PRIORITY);
    let mut frame = [0u8; PING_FRAME];
    loop {
        match recv.read_exact(&mut frame).await {
            Ok(()) => {}
            Err(ReadExactError::FinishedEarly(0)) => return Ok(()),
            Err(error) => return Err(format!("ping read failed: {error}")),
        }
        write(&mut send, &frame).await?;
    }
}

fn ping_frame(seq: u64) -> [u8; PING_FRAME] {
    let mut frame = [0u8; PING_FRAME];
    frame[..4].copy_from_slice(&8u32.to_le_bytes());
    frame[4..].copy_from_slice(&seq.to_le_bytes());
    frame
}

impl Pair for QuinnPair {
    fn tally(&self) -> watch::Receiver<Tally> {
        self.tally.clone()
    }

    async fn send_small(&mut self, count: u64) -> Result<(), String> {
        let mut buf = BytesMut::with_capacity(PACK_BYTES);
        for _ in 0..count {
            buf.put_u32_le(SMALL_BYTES as u32);
            buf.put_u64_le(self.next_small);
            buf.put_bytes(FILLER, SMALL_BYTES - 8);
            self.next_small += 1;
            if buf.len() + 4 + SMALL_BYTES > PACK_BYTES {
                let packed = buf.split().freeze();
                buf.reserve(PACK_BYTES);
                self.small
                    .write_chunk(packed)
                    .await
                    .map_err(|error| format!("write failed: {error}"))?;
            }
        }
        if !buf.is_empty() {
            self.small
                .write_chunk(buf.freeze())
                .await
                .map_err(|error| format!("write failed: {error}"))?;
        }
        Ok(())
    }

    async fn send_bulk(&mut self, payload: &Bytes, count: usize) -> Result<(), String> {
        let send = self
            .bulk
            .as_mut()
            .ok_or("the bulk stream is lent to a load")?;
        for _ in 0..count {
            send.write(payload).await?;
        }
        Ok(())
    }

    async fn ping(&mut self) -> Result<(), String> {
        let frame = ping_frame(self.next_ping);
        self.next_ping += 1;
        write(&mut self.ping_send, &frame).await?;
        let mut echoed = [0u8; PING_FRAME];
        self.ping_recv
            .read_exact(&mut echoed)
            .await
            .map_err(|error| format!("ping read failed: {error}"))?;
        if echoed != frame {
            return Err(format!("ping {:?} answered with {echoed:?}", frame));
        }
        Ok(())
    }

    fn start_load(&mut self, payload: Bytes) -> Result<(), String> {
        let mut send = self.bulk.take().ok_or("a bulk load is already running")?;
        self.load = Some(Load::spawn(|stop| async move {
            let mut sent = 0;
            while !stop.load(Ordering::Acquire) {
                send.write(&payload).await?;
                sent += 1;
            }
            Ok((send, sent))
        }));
        Ok(())
    }

    async fn stop_load(&mut self) -> Result<usize, String> {
        let load = self.load.take().ok_or("no bulk load is running")?;
        let (send, sent) = load.finish().await?;
        self.bulk = Some(send);
        Ok(sent)
    }

    async fn close(mut self) {
        self.load = None;
        self.tasks.abort_all();
        self.conn.close(VarInt::from_u32(0), b"done");
        self.client.close(VarInt::from_u32(0), b"done");
        self.server.close(VarInt::from_u32(0), b"done");
        let idle = async { tokio::join!(self.client.wait_idle(), self.server.wait_idle()) };
        let _ = tokio::time::timeout(Duration::from_secs(2), idle).await;
    }
}
