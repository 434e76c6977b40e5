//! Making a connection count: the TLS handshake, then Hello/HelloAck on the control stream.
//!
//! A TLS 1.3 client believes it is connected before the server has judged its certificate,
//! so nothing is sent on a connection until the Hello exchange has completed: the dialer
//! opens the control stream and sends Hello; the acceptor checks it, hands it to the peer's
//! driver, and the driver answers HelloAck or closes the connection with a named code.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use quinn::{Connection, ConnectionError, RecvStream, SendStream};
use rustls::pki_types::CertificateDer;
use tokio::time::Instant;

use super::Shared;
use super::peer::{Accepted, Peer};
use crate::member::MemberId;
use crate::priority::Priority;
use crate::sync::lock;
use crate::wire::{self, CloseCode, Frame, FrameDecoder, Hello, HelloAck, WireError};

/// A connection ready to carry frames, from either side of the handshake.
pub(crate) struct LinkParts {
    pub(crate) conn: Connection,
    pub(crate) control_send: SendStream,
    pub(crate) control_recv: RecvStream,
    pub(crate) decoder: FrameDecoder,
    /// Per priority, what the peer says it has delivered from us: resending starts after it.
    pub(crate) peer_delivered: [u64; 4],
    /// What the peer says it takes (`None` from older builds).
    pub(crate) peer_limits: Option<wire::ReceiverLimits>,
}

/// Our dial, answered by the peer.
pub(crate) struct Dialed {
    parts: LinkParts,
}

impl Dialed {
    pub(crate) fn into_parts(self) -> LinkParts {
        self.parts
    }
}

/// What an incoming connection turned out to be.
pub(crate) enum Opened {
    /// A member that said Hello: handed to its peer's driver.
    Peer(Accepted),
    /// A one-shot query: answered, then the connection ends.
    Query(QueryAsked),
}

/// A query read from an incoming connection, waiting for its answer.
pub(crate) struct QueryAsked {
    pub(crate) conn: Connection,
    pub(crate) send: SendStream,
    pub(crate) tag: crate::message::Tag,
    pub(crate) payload: bytes::Bytes,
}

/// Why a dial did not produce a connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DialError {
    #[error("no dial permit: the messenger is shutting down")]
    Closed,
    #[error("could not start connecting: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("connection failed: {0}")]
    Connection(#[from] ConnectionError),
    #[error("no answer within the handshake timeout")]
    Timeout,
    #[error("the peer kept its own crossing dial")]
    Duplicate,
    #[error("control stream: {0}")]
    Stream(String),
    #[error("the peer sent a malformed frame: {0}")]
    Wire(#[from] WireError),
    #[error("the peer answered with a {0} frame instead of HelloAck")]
    UnexpectedFrame(&'static str),
    #[error("expected member {expected:?} at that address, but {answered:?} answered")]
    WrongMember {
        expected: MemberId,
        answered: MemberId,
    },
    #[error("could not encode Hello: {0}")]
    Encode(#[from] postcard::Error),
}

/// Why an incoming connection was not handed to a peer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AcceptError {
    #[error("handshake failed: {0}")]
    Connection(#[from] ConnectionError),
    #[error("no Hello within the handshake timeout")]
    Timeout,
    #[error("control stream: {0}")]
    Stream(String),
    #[error("malformed Hello: {0}")]
    Wire(#[from] WireError),
    #[error("expected Hello first, got a {0} frame")]
    UnexpectedFrame(&'static str),
    #[error("the peer claims this member's own identity {0:?}")]
    OwnIdentity(MemberId),
    #[error("certificate does not name the address of {member:?}: {reason}")]
    AddressNotInCertificate { member: MemberId, reason: String },
    #[error("no peer certificate to check the address of {0:?} against")]
    NoCertificate(MemberId),
}

impl AcceptError {
    /// True if nothing worth reporting happened: the dialer itself gave up during the
    /// handshake (the normal end of the losing dial when two members dial each other at
    /// once), or a stray Initial packet that authenticates as nothing (typically a late
    /// retransmission for a dial already abandoned) reached the endpoint.
    pub(crate) fn is_noise(&self) -> bool {
        match self {
            AcceptError::Connection(ConnectionError::TransportError(error)) => {
                error.code == quinn::TransportErrorCode::PROTOCOL_VIOLATION
                    && error.reason == "authentication failed"
            }
            AcceptError::Connection(ConnectionError::ConnectionClosed(close)) => {
                close.error_code == quinn::TransportErrorCode::APPLICATION_ERROR
            }
            // quinn closes with application code 0 when the dialer drops its connection.
            AcceptError::Connection(ConnectionError::ApplicationClosed(close)) => {
                close.error_code.into_inner() == 0
                    || CloseCode::from_value(close.error_code.into_inner())
                        == Some(CloseCode::DuplicateConnection)
            }
            _ => false,
        }
    }

    fn close_code(&self) -> CloseCode {
        match self {
            AcceptError::Timeout => CloseCode::HelloTimeout,
            AcceptError::Wire(WireError::FrameTooLarge { .. }) => CloseCode::FrameTooLarge,
            AcceptError::Wire(_) => CloseCode::MalformedFrame,
            AcceptError::UnexpectedFrame(_) | AcceptError::Stream(_) => {
                CloseCode::ProtocolViolation
            }
            AcceptError::OwnIdentity(_)
            | AcceptError::AddressNotInCertificate { .. }
            | AcceptError::NoCertificate(_) => CloseCode::IdentityRejected,
            AcceptError::Connection(_) => CloseCode::ProtocolViolation,
        }
    }
}

/// Errors reading one frame from a stream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadFrameError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Read(#[from] quinn::ReadError),
}

/// Reads the next complete frame; `Ok(None)` when the stream ended between frames.
pub(crate) async fn read_frame(
    recv: &mut RecvStream,
    decoder: &mut FrameDecoder,
) -> Result<Option<Frame>, ReadFrameError> {
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok(Some(frame));
        }
        match recv.read_chunk(usize::MAX, true).await? {
            Some(chunk) => decoder.push_chunk(chunk.bytes),
            None if decoder.buffered() == 0 => return Ok(None),
            None => {
                return Err(WireError::Body {
                    what: "stream",
                    detail: format!("ended inside a frame ({} bytes left)", decoder.buffered()),
                }
                .into());
            }
        }
    }
}

/// The close code a peer closed the connection with, if it was one of ours.
pub(crate) fn peer_close_code(error: &ConnectionError) -> Option<CloseCode> {
    match error {
        ConnectionError::ApplicationClosed(close) => {
            CloseCode::from_value(close.error_code.into_inner())
        }
        _ => None,
    }
}

fn frame_name(frame: &Frame) -> &'static str {
    match frame {
        Frame::Hello(_) => "Hello",
        Frame::HelloAck(_) => "HelloAck",
        Frame::Data { .. } => "Data",
        Frame::Goodbye { .. } => "Goodbye",
        Frame::Ack { .. } => "Ack",
        Frame::Query { .. } => "Query",
        Frame::Answer { .. } => "Answer",
        Frame::Unknown { .. } => "unknown",
    }
}

/// Dials `member` and completes the Hello exchange. The connection is stored in `slot` as
/// soon as TLS completes, so the driver can close it with a named code if it abandons the
/// dial.
pub(crate) async fn dial(
    shared: Arc<Shared>,
    member: MemberId,
    delivered: [u64; 4],
    slot: Arc<Mutex<Option<Connection>>>,
) -> Result<Dialed, DialError> {
    // Dials that never complete (a joiner that vanished) hold their permit for the whole
    // handshake timeout: those outside the view queue for a few permits of their own
    // first, so members of the view and final checks always find dial permits free.
    let outside_permit = match shared.in_view(member.uuid()) {
        true => None,
        false => Some(
            shared
                .outside_dial_permits
                .acquire()
                .await
                .map_err(|_| DialError::Closed)?,
        ),
    };
    let permit = shared
        .dial_permits
        .acquire()
        .await
        .map_err(|_| DialError::Closed)?;
    // The time allowed starts once it is this dial's turn: a dial that spent its budget
    // waiting for a permit would only start a handshake it cannot finish.
    let deadline = Instant::now() + shared.config.handshake_timeout;
    let address = member.address();
    let connecting = shared.endpoint.connect_with(
        shared.client_config.clone(),
        address,
        &server_name(address),
    )?;
    let conn = tokio::time::timeout_at(deadline, connecting)
        .await
        .map_err(|_| DialError::Timeout)??;
    drop((permit, outside_permit));
    *lock(&slot) = Some(conn.clone());

    let hello = wire::encode_hello(&Hello {
        member: shared.local.clone(),
        delivered,
        limits: Some(shared.config.receiver_limits()),
    })?;
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await?;
        // Stream priority only fails on a stream that is already closed.
        let _ = send.set_priority(Priority::Control.stream_priority());
        send.write_all(&hello)
            .await
            .map_err(|e| write_error(&conn, e))?;
        let mut decoder = FrameDecoder::new(wire::HANDSHAKE_FRAME_LIMIT);
        match read_frame(&mut recv, &mut decoder).await {
            Ok(Some(Frame::HelloAck(ack))) => Ok((send, recv, decoder, ack)),
            Ok(Some(other)) => Err(DialError::UnexpectedFrame(frame_name(&other))),
            Ok(None) => Err(DialError::Stream("closed before HelloAck".into())),
            Err(ReadFrameError::Wire(e)) => Err(DialError::Wire(e)),
            Err(ReadFrameError::Read(e)) => Err(read_error(&conn, e)),
        }
    };
    let result = tokio::time::timeout_at(deadline, exchange)
        .await
        .unwrap_or(Err(DialError::Timeout));
    let (send, recv, decoder, ack): (SendStream, RecvStream, FrameDecoder, HelloAck) = match result
    {
        Ok(parts) => parts,
        Err(error) => {
            let code = match &error {
                DialError::Timeout => CloseCode::HelloTimeout,
                DialError::Wire(_) => CloseCode::MalformedFrame,
                _ => CloseCode::ProtocolViolation,
            };
            conn.close(code.varint(), code.name().as_bytes());
            return Err(error);
        }
    };
    if ack.member.uuid() != member.uuid() {
        let code = CloseCode::IdentityRejected;
        conn.close(code.varint(), b"unexpected member at this address");
        return Err(DialError::WrongMember {
            expected: member,
            answered: ack.member,
        });
    }
    Ok(Dialed {
        parts: LinkParts {
            conn,
            control_send: send,
            control_recv: recv,
            decoder,
            peer_delivered: ack.delivered,
            peer_limits: ack.limits,
        },
    })
}

fn write_error(conn: &Connection, error: quinn::WriteError) -> DialError {
    match error {
        quinn::WriteError::ConnectionLost(e) => connection_lost(conn, e),
        other => DialError::Stream(other.to_string()),
    }
}

fn read_error(conn: &Connection, error: quinn::ReadError) -> DialError {
    match error {
        quinn::ReadError::ConnectionLost(e) => connection_lost(conn, e),
        other => DialError::Stream(other.to_string()),
    }
}

fn connection_lost(_conn: &Connection, error: ConnectionError) -> DialError {
    match peer_close_code(&error) {
        Some(CloseCode::DuplicateConnection) => DialError::Duplicate,
        _ => DialError::Connection(error),
    }
}

/// Completes an incoming connection, whose first packet arrived at `arrived`, up to a
/// checked Hello. On failure the connection is closed with the matching code and the
/// error says why.
pub(crate) async fn accept(
    shared: &Shared,
    incoming: quinn::Incoming,
    arrived: Instant,
    deadline: Instant,
) -> Result<Opened, (SocketAddr, AcceptError)> {
    let remote = incoming.remote_address();
    let conn = match tokio::time::timeout_at(deadline, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(error)) => return Err((remote, AcceptError::Connection(error))),
        Err(_) => return Err((remote, AcceptError::Timeout)),
    };
    match hello(shared, &conn, arrived, deadline).await {
        Ok(accepted) => Ok(accepted),
        Err(error) => {
            let code = error.close_code();
            if code == CloseCode::FrameTooLarge {
                shared.limits.count_frame_too_large();
            }
            conn.close(code.varint(), code.name().as_bytes());
            Err((remote, error))
        }
    }
}

async fn hello(
    shared: &Shared,
    conn: &Connection,
    arrived: Instant,
    deadline: Instant,
) -> Result<Opened, AcceptError> {
    let exchange = async {
        let (send, mut recv) = conn.accept_bi().await?;
        let mut decoder = FrameDecoder::new(wire::HANDSHAKE_FRAME_LIMIT);
        match read_frame(&mut recv, &mut decoder).await {
            Ok(Some(Frame::Hello(hello))) => Ok(Ok((send, recv, decoder, hello))),
            Ok(Some(Frame::Query { tag, payload })) => Ok(Err(Opened::Query(QueryAsked {
                conn: conn.clone(),
                send,
                tag,
                payload,
            }))),
            Ok(Some(other)) => Err(AcceptError::UnexpectedFrame(frame_name(&other))),
            Ok(None) => Err(AcceptError::Stream("closed before Hello".into())),
            Err(ReadFrameError::Wire(e)) => Err(AcceptError::Wire(e)),
            Err(ReadFrameError::Read(quinn::ReadError::ConnectionLost(e))) => {
                Err(AcceptError::Connection(e))
            }
            Err(ReadFrameError::Read(e)) => Err(AcceptError::Stream(e.to_string())),
        }
    };
    let (send, recv, decoder, hello) = match tokio::time::timeout_at(deadline, exchange)
        .await
        .unwrap_or(Err(AcceptError::Timeout))?
    {
        Ok(parts) => parts,
        Err(query) => return Ok(query),
    };
    if hello.member.uuid() == shared.local.uuid() {
        return Err(AcceptError::OwnIdentity(hello.member));
    }
    if shared.tls.endpoint_identification() {
        let chain =
            peer_chain(conn).ok_or_else(|| AcceptError::NoCertificate(hello.member.clone()))?;
        if let Err(error) = shared
            .tls
            .verify_peer_address(&chain, hello.member.address().ip())
        {
            return Err(AcceptError::AddressNotInCertificate {
                member: hello.member,
                reason: error.to_string(),
            });
        }
    }
    Ok(Opened::Peer(Accepted {
        conn: conn.clone(),
        send,
        recv,
        decoder,
        hello,
        arrived,
    }))
}

/// Answers an accepted Hello on behalf of `peer`.
pub(crate) async fn answer(
    shared: &Shared,
    peer: &Peer,
    accepted: Accepted,
) -> Result<LinkParts, String> {
    let Accepted {
        conn,
        mut send,
        recv,
        decoder,
        hello,
        ..
    } = accepted;
    let ack = wire::encode_hello_ack(&HelloAck {
        member: shared.local.clone(),
        delivered: peer.delivered(),
        limits: Some(shared.config.receiver_limits()),
    })
    .map_err(|e| e.to_string())?;
    let _ = send.set_priority(Priority::Control.stream_priority());
    send.write_all(&ack).await.map_err(|e| e.to_string())?;
    Ok(LinkParts {
        conn,
        control_send: send,
        control_recv: recv,
        decoder,
        peer_delivered: hello.delivered,
        peer_limits: hello.limits,
    })
}

fn peer_chain(conn: &Connection) -> Option<Vec<CertificateDer<'static>>> {
    conn.peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()
        .map(|chain| *chain)
}

/// The TLS server name for a member's address: its IP, which endpoint identification
/// checks against the certificate's IP SANs (and which is ignored otherwise).
fn server_name(address: SocketAddr) -> String {
    address.ip().to_string()
}
