//! A peer that speaks cohort's wire format by hand, for tests of what a member does when
//! a peer breaks the rules: it connects with [`raw_client`](crate::raw_client), says Hello
//! as whatever member it likes, and then writes whatever bytes the test wants.

use std::net::SocketAddr;

use cohort_transport::wire::{self, CloseCode, Frame, FrameDecoder, Hello};
use cohort_transport::{MemberId, MemberKind};

use crate::{PATIENCE, within};

/// Opens the control stream of a raw connection and says Hello as a member at `address`
/// that has delivered `delivered`.
pub async fn say_hello(
    conn: &quinn::Connection,
    address: SocketAddr,
    delivered: [u64; 4],
) -> (quinn::SendStream, quinn::RecvStream) {
    let member = MemberId::new("rogue", address, MemberKind::Member);
    say_hello_as(conn, member, delivered).await
}

/// Opens the control stream of a raw connection and says Hello as `member`, whoever
/// that is.
pub async fn say_hello_as(
    conn: &quinn::Connection,
    member: MemberId,
    delivered: [u64; 4],
) -> (quinn::SendStream, quinn::RecvStream) {
    let (mut control, recv) = conn.open_bi().await.expect("control stream");
    let hello = wire::encode_hello(&Hello {
        member,
        delivered,
        limits: None,
    })
    .expect("encode");
    control.write_all(&hello).await.expect("send Hello");
    (control, recv)
}

/// Says Hello (as [`say_hello`]) and waits for the member's HelloAck: the connection is
/// then an established peer link.
pub async fn establish(
    conn: &quinn::Connection,
    address: SocketAddr,
) -> (quinn::SendStream, quinn::RecvStream) {
    match within("HelloAck", PATIENCE, try_establish(conn, address)).await {
        Ok(streams) => streams,
        Err(error) => panic!("the member did not accept the Hello: {error}"),
    }
}

/// Says Hello and waits for the member's answer: the control streams once it sent its
/// HelloAck, or why not (the connection closed, or the member sent something else).
pub async fn try_establish(
    conn: &quinn::Connection,
    address: SocketAddr,
) -> Result<(quinn::SendStream, quinn::RecvStream), String> {
    let (control, mut control_recv) = say_hello(conn, address, [0; 4]).await;
    let mut decoder = FrameDecoder::new(1 << 20);
    loop {
        match decoder.next_frame() {
            Ok(Some(Frame::HelloAck(_))) => return Ok((control, control_recv)),
            Ok(Some(other)) => return Err(format!("{other:?} instead of HelloAck")),
            Ok(None) => {}
            Err(error) => return Err(error.to_string()),
        }
        match control_recv.read_chunk(4096, true).await {
            Ok(Some(chunk)) => decoder.push(&chunk.bytes),
            Ok(None) => return Err("the control stream ended".into()),
            Err(error) => return Err(error.to_string()),
        }
    }
}

/// Waits for the member to close a raw connection and returns the cohort code it used.
pub async fn close_code(conn: &quinn::Connection) -> Option<CloseCode> {
    match within("the member closes the connection", PATIENCE, conn.closed()).await {
        quinn::ConnectionError::ApplicationClosed(close) => {
            CloseCode::from_value(close.error_code.into_inner())
        }
        other => panic!("expected an application close, got {other}"),
    }
}

/// A bare QUIC endpoint that both accepts and dials with a member's TLS, outside any
/// messenger: tests use it to play a member by hand (answer a dial, lose a connection
/// without telling, dial again from the same address).
pub fn raw_member_endpoint(tls: &cohort_transport::ClusterTls) -> quinn::Endpoint {
    let server = quinn::ServerConfig::with_crypto(tls.server_crypto());
    let bind = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
    let mut endpoint = quinn::Endpoint::server(server, bind).expect("member endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(tls.client_crypto()));
    endpoint
}

/// Answers the Hello on an accepted raw connection with a HelloAck as `me`; returns the
/// control streams and the Hello.
pub async fn answer_hello(
    conn: &quinn::Connection,
    me: &MemberId,
) -> (quinn::SendStream, quinn::RecvStream, Hello) {
    let answering = async {
        let (mut send, mut recv) = conn.accept_bi().await.expect("control stream");
        let mut decoder = FrameDecoder::new(1 << 20);
        let hello = loop {
            match decoder.next_frame().expect("a well-formed frame") {
                Some(Frame::Hello(hello)) => break hello,
                Some(other) => panic!("{other:?} instead of Hello"),
                None => {}
            }
            let chunk = recv.read_chunk(4096, true).await.expect("read");
            decoder.push(&chunk.expect("the control stream goes on").bytes);
        };
        let ack = wire::encode_hello_ack(&wire::HelloAck {
            member: me.clone(),
            delivered: [0; 4],
            limits: None,
        })
        .expect("encode");
        send.write_all(&ack).await.expect("send HelloAck");
        (send, recv, hello)
    };
    within("the Hello of a dial", PATIENCE, answering).await
}
