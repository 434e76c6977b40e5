//! The TCP+TLS baseline: a hand-written messenger on one TCP connection with tokio-rustls,
//! the classic way to build what cohort does.
//!
//! TLS is mutual TLS 1.3 with the ring provider and certificates from the same CA as cohort's
//! (the client checks the server's name, `localhost`; the server requires a client
//! certificate), Nagle is off on both ends. Frames are length-prefixed ([`Frames`]) with one
//! kind byte first: small messages (packed into 64 KiB writes), pings and their answers, and
//! bulk messages. A bulk message is announced with its length (so the receiver allocates it
//! once) and then cut into fragments that fill one 16 KiB TLS record each; while the
//! background load runs, its writer slips waiting pings in between fragments. That is the
//! best a single ordered byte stream can do: a ping still waits behind the fragment being
//! written and behind whatever the kernel's send buffer holds, which is the head-of-line
//! blocking QUIC's separate streams avoid.
//!
//! The client's stream is split: the writing half goes to the load's task while it runs,
//! the reading half (only answers to pings come back) stays with the pair.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::transport::{
    Certs, FILLER, Frames, Load, PACK_BYTES, Pair, SMALL_BYTES, Sink, SmallOrder, Tally, check_bulk,
};

type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;
type ServerStream = tokio_rustls::server::TlsStream<TcpStream>;

/// Frame kinds, the first byte of each frame.
const SMALL: u8 = 1;
const BULK_BEGIN: u8 = 2;
const BULK_PART: u8 = 3;
const PING: u8 = 4;
const PONG: u8 = 5;
/// A fragment with its 5-byte header fills one TLS record (16 KiB of plaintext).
const FRAGMENT: usize = (16 << 10) - 5;
/// Room reserved in the server's read buffer before each read.
const READ_ROOM: usize = 64 << 10;
/// Pings waiting for the load's writer.
const PING_QUEUE: usize = 16;

/// A TLS client and server over one loopback TCP connection.
pub(crate) struct TcpPair {
    reader: ReadHalf<ClientStream>,
    /// Lent to the background load while it runs.
    writer: Option<WriteHalf<ClientStream>>,
    pongs: Frames,
    next_small: u64,
    next_ping: u64,
    tally: watch::Receiver<Tally>,
    tasks: JoinSet<()>,
    load: Option<TcpLoad>,
}

/// The background load: pings for its writer, and its task.
struct TcpLoad {
    pings: mpsc::Sender<u64>,
    task: Load<(WriteHalf<ClientStream>, usize)>,
}

impl TcpPair {
    /// Listens, connects, completes the TLS handshake and starts the server's task.
    pub(crate) async fn open(certs: &Certs) -> Result<Self, String> {
        let (server_config, client_config) = tls_configs(certs)?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|error| format!("could not listen: {error}"))?;
        let address = listener
            .local_addr()
            .map_err(|error| format!("no listening address: {error}"))?;
        let accepted = async {
            let (tcp, _) = listener.accept().await?;
            tcp.set_nodelay(true)?;
            TlsAcceptor::from(server_config).accept(tcp).await
        };
        let dialed = async {
            let tcp = TcpStream::connect(address).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
            TlsConnector::from(client_config).connect(name, tcp).await
        };
        let (server_stream, client_stream) = tokio::try_join!(accepted, dialed)
            .map_err(|error| format!("TCP+TLS connection failed: {error}"))?;
        let (reader, writer) = tokio::io::split(client_stream);
        let (sink, tally) = Sink::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(serve(server_stream, sink));
        Ok(TcpPair {
            reader,
            writer: Some(writer),
            pongs: Frames::default(),
            next_small: 0,
            next_ping: 0,
            tally,
            tasks,
            load: None,
        })
    }

    fn writer(&mut self) -> Result<&mut WriteHalf<ClientStream>, String> {
        self.writer
            .as_mut()
            .ok_or_else(|| "the writer is lent to a load".to_string())
    }

    /// Reads until the answer to ping `seq` arrives.
    async fn read_pong(&mut self, seq: u64) -> Result<(), String> {
        loop {
            if let Some(frame) = self.pongs.next_frame()? {
                return match frame.split_first() {
                    Some((&PONG, body)) if body == seq.to_le_bytes() => Ok(()),
                    _ => Err(format!("ping {seq} answered with {frame:?}")),
                };
            }
            let read = self
                .reader
                .read_buf(self.pongs.read_buffer(1024))
                .await
                .map_err(|error| format!("read failed: {error}"))?;
            if read == 0 {
                return Err("the server closed the connection".into());
            }
        }
    }
}

/// Server and client TLS configs: TLS 1.3 only, ring, mutual authentication.
fn tls_configs(certs: &Certs) -> Result<(Arc<ServerConfig>, Arc<ClientConfig>), String> {
    let failed = |step: &str, error: &dyn std::fmt::Display| format!("TLS {step}: {error}");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(certs.ca_pem().as_bytes()) {
        let certificate = certificate.map_err(|e| failed("CA PEM", &e))?;
        roots.add(certificate).map_err(|e| failed("CA", &e))?;
    }
    let roots = Arc::new(roots);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| failed("client verifier", &e))?;
    let (chain, key) = identity(certs, "tcp-server")?;
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| failed("server config", &e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| failed("server config", &e))?;
    let (chain, key) = identity(certs, "tcp-client")?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| failed("client config", &e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| failed("client config", &e))?;
    Ok((Arc::new(server), Arc::new(client)))
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn identity(certs: &Certs, name: &str) -> Result<Identity, String> {
    let issued = certs.issue(name)?;
    let chain = CertificateDer::pem_slice_iter(issued.certificate_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("certificate PEM of {name}: {error}"))?;
    let key = PrivateKeyDer::from_pem_slice(issued.private_key_pem.as_bytes())
        .map_err(|error| format!("key PEM of {name}: {error}"))?;
    Ok((chain, key))
}

/// Appends a frame's header: the length (kind byte included), then the kind.
fn put_header(buf: &mut BytesMut, kind: u8, body: usize) {
    buf.put_u32_le(body as u32 + 1);
    buf.put_u8(kind);
}

fn seq_frame(kind: u8, seq: u64) -> BytesMut {
    let mut frame = BytesMut::with_capacity(13);
    put_header(&mut frame, kind, 8);
    frame.put_u64_le(seq);
    frame
}

async fn write_flushed<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8]) -> Result<(), String> {
    writer
        .write_all(bytes)
        .await
        .map_err(|error| format!("write failed: {error}"))?;
    writer
        .flush()
        .await
        .map_err(|error| format!("flush failed: {error}"))
}

/// Writes one bulk message in fragments, writing any waiting ping (flushed) first, before
/// each fragment.
async fn write_message<W: AsyncWrite + Unpin>(
    writer: &mut W,
    payload: &Bytes,
    mut pings: Option<&mut mpsc::Receiver<u64>>,
    scratch: &mut BytesMut,
) -> Result<(), String> {
    let failed = |error: std::io::Error| format!("bulk write failed: {error}");
    scratch.clear();
    put_header(scratch, BULK_BEGIN, 8);
    scratch.put_u64_le(payload.len() as u64);
    writer.write_all(scratch).await.map_err(failed)?;
    for piece in payload.chunks(FRAGMENT) {
        if let Some(pings) = pings.as_deref_mut() {
            while let Ok(seq) = pings.try_recv() {
                write_flushed(writer, &seq_frame(PING, seq)).await?;
            }
        }
        // Header and data in one write, so that rustls makes one record of them.
        scratch.clear();
        put_header(scratch, BULK_PART, piece.len());
        scratch.extend_from_slice(piece);
        writer.write_all(scratch).await.map_err(failed)?;
    }
    Ok(())
}

/// The server side: reads every frame, checks it, answers pings.
async fn serve(mut stream: ServerStream, sink: Sink) {
    if let Err(fault) = serve_frames(&mut stream, &sink).await {
        sink.fault(format!("tcp_tls server: {fault}"));
    }
}

/// A bulk message being received: its announced length and the bytes so far.
#[derive(Default)]
struct Assembly {
    expected: Option<usize>,
    data: BytesMut,
}

impl Assembly {
    fn begin(&mut self, body: &[u8]) -> Result<(), String> {
        let len: [u8; 8] = body.try_into().map_err(|_| "a malformed bulk header")?;
        let len = u64::from_le_bytes(len) as usize;
        if self.expected.replace(len).is_some() {
            return Err("a bulk message began inside another".into());
        }
        self.data.reserve(len);
        Ok(())
    }

    /// Adds a fragment; returns the message once it is whole.
    fn part(&mut self, body: &[u8]) -> Result<Option<Bytes>, String> {
        let expected = self.expected.ok_or("a bulk fragment outside a message")?;
        self.data.extend_from_slice(body);
        if self.data.len() < expected {
            return Ok(None);
        }
        if self.data.len() > expected {
            return Err(format!("a bulk message longer than its {expected} bytes"));
        }
        self.expected = None;
        Ok(Some(self.data.split().freeze()))
    }
}

async fn serve_frames<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    sink: &Sink,
) -> Result<(), String> {
    let mut frames = Frames::default();
    let mut order = SmallOrder::default();
    let mut assembly = Assembly::default();
    loop {
        let read = stream
            .read_buf(frames.read_buffer(READ_ROOM))
            .await
            .map_err(|error| format!("read failed: {error}"))?;
        if read == 0 {
            return Ok(());
        }
        let mut small = 0;
        while let Some(frame) = frames.next_frame()? {
            match frame.split_first() {
                Some((&SMALL, body)) => {
                    order.check_payload(body)?;
                    small += 1;
                }
                Some((&BULK_BEGIN, body)) => assembly.begin(body)?,
                Some((&BULK_PART, body)) => {
                    if let Some(message) = assembly.part(body)? {
                        check_bulk(&message)?;
                        sink.bulk(message.len());
                    }
                }
                Some((&PING, body)) => {
                    let mut pong = BytesMut::with_capacity(frame.len() + 4);
                    put_header(&mut pong, PONG, body.len());
                    pong.extend_from_slice(body);
                    write_flushed(stream, &pong).await?;
                }
                _ => return Err(format!("an unexpected frame {frame:?}")),
            }
        }
        sink.small(small);
    }
}

impl Pair for TcpPair {
    fn tally(&self) -> watch::Receiver<Tally> {
        self.tally.clone()
    }

    async fn send_small(&mut self, count: u64) -> Result<(), String> {
        let mut next = self.next_small;
        let writer = self.writer()?;
        let mut buf = BytesMut::with_capacity(PACK_BYTES);
        for _ in 0..count {
            put_header(&mut buf, SMALL, SMALL_BYTES);
            buf.put_u64_le(next);
            buf.put_bytes(FILLER, SMALL_BYTES - 8);
            next += 1;
            if buf.len() + 5 + SMALL_BYTES > PACK_BYTES {
                writer
                    .write_all(&buf)
                    .await
                    .map_err(|error| format!("write failed: {error}"))?;
                buf.clear();
            }
        }
        write_flushed(writer, &buf).await?;
        self.next_small = next;
        Ok(())
    }

    async fn send_bulk(&mut self, payload: &Bytes, count: usize) -> Result<(), String> {
        let writer = self.writer()?;
        let mut scratch = BytesMut::with_capacity(16 << 10);
        for _ in 0..count {
            write_message(writer, payload, None, &mut scratch).await?;
        }
        write_flushed(writer, &[]).await
    }

    async fn ping(&mut self) -> Result<(), String> {
        let seq = self.next_ping;
        self.next_ping += 1;
        match &self.load {
            Some(load) => load
                .pings
                .send(seq)
                .await
                .map_err(|_| "the bulk load's writer is gone".to_string())?,
            None => write_flushed(self.writer()?, &seq_frame(PING, seq)).await?,
        }
        self.read_pong(seq).await
    }

    fn start_load(&mut self, payload: Bytes) -> Result<(), String> {
        let mut writer = self.writer.take().ok_or("a bulk load is already running")?;
        let (pings, mut waiting) = mpsc::channel(PING_QUEUE);
        let task = Load::spawn(|stop| async move {
            let mut scratch = BytesMut::with_capacity(16 << 10);
            let mut sent = 0;
            while !stop.load(Ordering::Acquire) {
                write_message(&mut writer, &payload, Some(&mut waiting), &mut scratch).await?;
                sent += 1;
            }
            while let Ok(seq) = waiting.try_recv() {
                write_flushed(&mut writer, &seq_frame(PING, seq)).await?;
            }
            write_flushed(&mut writer, &[]).await?;
            Ok((writer, sent))
        });
        self.load = Some(TcpLoad { pings, task });
        Ok(())
    }

    async fn stop_load(&mut self) -> Result<usize, String> {
        let load = self.load.take().ok_or("no bulk load is running")?;
        drop(load.pings);
        let (writer, sent) = load.task.finish().await?;
        self.writer = Some(writer);
        Ok(sent)
    }

    async fn close(mut self) {
        self.load = None;
        self.tasks.abort_all();
        if let Some(mut writer) = self.writer.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), writer.shutdown()).await;
        }
    }
}
