//! Writes the fuzz targets' seed corpora: real frames, datagrams, legacy packets,
//! membership messages and config files, made with cohort's own encoders, and the
//! certificates of `fixtures/tls/` (made once with `cohort-certs`) as CA files and as DER.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds [-- DIR]
//! ```
//!
//! `DIR` defaults to `fuzz/seeds`; each target's seeds go to `DIR/<target>/`. The output is
//! deterministic (fixed uuids), so running it again changes no file unless an encoder
//! changed: a diff in the seeds is then a wire format change to look at.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use cohort_fuzz::{MembershipInput, StreamInput};
use cohort_legacy_udp::packet::{AckHeader, DataHeader, DatagramHeader, ExchangeHeader, Packet};
use cohort_membership::{
    Ballot, Credentials, Decision, DiscoveryAnswer, FinalCheck, FindCoordinator, GmsMessage,
    Heartbeat, JoinRejection, LeaseMessage, Proposal, ReachabilityMessage, Standing, ViewCheck,
    ViewCheckAnswer,
};
use cohort_transport::wire::{
    Hello, HelloAck, ReceiverLimits, ack_stream_header, encode_ack, encode_answer, encode_datagram,
    encode_goodbye, encode_hello, encode_hello_ack, encode_query, put_data_header, stream_header,
};
use cohort_transport::{
    MemberAttributes, MemberId, MemberKind, Message, Priority, ProtocolVersion, Tag, View, ViewId,
};
use serde::Serialize;
use uuid::Uuid;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds"));
    let cluster = Cluster::new();
    let seeds = [
        ("wire_frames", wire_frames(&cluster)?),
        ("wire_datagram", wire_datagram(&cluster)?),
        ("handshake", handshake(&cluster)?),
        ("legacy_packet", legacy_packet(&cluster)?),
        ("membership_messages", membership_messages(&cluster)?),
        ("config_file", config_file()),
        ("tls_ca_file", tls_ca_file()?),
    ];
    for (target, files) in seeds {
        write(&dir.join(target), &files)?;
    }
    Ok(())
}

/// Writes `files` into `dir`, replacing what was there.
fn write(dir: &Path, files: &[(&str, Vec<u8>)]) -> Result {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes)?;
        println!("{} ({} bytes)", dir.join(name).display(), bytes.len());
    }
    Ok(())
}

/// Three members and a locator with fixed uuids, and the views they would install.
struct Cluster {
    locator: MemberId,
    node1: MemberId,
    node2: MemberId,
    joiner: MemberId,
    view: View,
}

impl Cluster {
    fn new() -> Self {
        let member = |n: u128, name: &str, address: &str, kind| {
            let address: SocketAddr = address.parse().expect("literal address");
            MemberId::new(name, address, kind).with_uuid(Uuid::from_u128(0xc0_0000 + n))
        };
        let locator =
            member(1, "locator-1", "127.0.0.1:10334", MemberKind::Locator).with_view_id(ViewId(1));
        let node1 = member(2, "node-1", "127.0.0.1:10401", MemberKind::Member)
            .with_view_id(ViewId(2))
            .with_attributes(MemberAttributes {
                groups: vec!["blue".into(), "batch".into()],
                direct_channel_port: Some(10501),
                weight_adjustment: 5,
            });
        let node2 = member(3, "node-2", "[::1]:10402", MemberKind::Member)
            .with_version(ProtocolVersion::LEGACY)
            .with_view_id(ViewId(3));
        let joiner = member(4, "node-3", "127.0.0.1:10403", MemberKind::Member);
        let view = View::new(ViewId(3), [locator.clone(), node1.clone(), node2.clone()]);
        Cluster {
            locator,
            node1,
            node2,
            joiner,
            view,
        }
    }
}

/// The view change that admits the joiner, as its coordinator decides it in round 0.
fn decision(c: &Cluster) -> Decision {
    Decision {
        base: ViewId(c.view.id().0 - 1),
        ballot: Ballot {
            round: 0,
            proposer: c.locator.uuid(),
        },
        proposal: Proposal {
            view: c.view.clone(),
            left: vec![],
            crashed: vec![],
        },
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    Ok(postcard::to_allocvec(value)?)
}

fn data_frame(out: &mut BytesMut, seq: u64, tag: Tag, payload: &[u8]) {
    put_data_header(out, seq, tag, payload.len());
    out.extend_from_slice(payload);
}

fn stream(unidirectional: bool, max_frame_log2: u8, chunks: [u8; 2], bytes: &[u8]) -> Vec<u8> {
    StreamInput {
        unidirectional,
        max_frame_log2,
        chunks,
        stream: bytes,
    }
    .encode()
}

fn wire_frames(c: &Cluster) -> Result<Vec<(&'static str, Vec<u8>)>> {
    // The dialer's side of a control stream: Hello, a join request, an ack, goodbye.
    let mut dialer = BytesMut::new();
    dialer.extend_from_slice(&encode_hello(&Hello {
        member: c.joiner.clone(),
        delivered: [0, 0, 0, 0],
        limits: None,
    })?);
    let join = GmsMessage::JoinRequest {
        member: c.joiner.clone(),
        credentials: Credentials::default().with("security-username", "admin"),
    };
    data_frame(&mut dialer, 1, GmsMessage::TAG, &encode(&join)?);
    dialer.extend_from_slice(&encode_ack([1, 0, 0, 0]));
    dialer.extend_from_slice(&encode_goodbye(0b0110));

    // The acceptor's side: HelloAck, then the two phases of a view change.
    let mut acceptor = BytesMut::new();
    acceptor.extend_from_slice(&encode_hello_ack(&HelloAck {
        member: c.locator.clone(),
        delivered: [3, 0, 7, 0],
        limits: None,
    })?);
    let decision = decision(c);
    let propose = GmsMessage::Propose {
        base: decision.base,
        ballot: decision.ballot,
        proposal: decision.proposal.clone(),
    };
    data_frame(&mut acceptor, 4, GmsMessage::TAG, &encode(&propose)?);
    let decide = GmsMessage::Decide { decision };
    data_frame(&mut acceptor, 5, GmsMessage::TAG, &encode(&decide)?);

    // A data stream of the Normal priority carrying application messages.
    let mut data = BytesMut::new();
    data.extend_from_slice(&stream_header(Priority::Normal));
    for seq in 1..=3u64 {
        let payload = vec![seq as u8; 10 * seq as usize];
        data_frame(&mut data, seq, Tag::FIRST_APPLICATION, &encode(&payload)?);
    }

    // The acknowledgement stream.
    let mut acks = BytesMut::new();
    acks.extend_from_slice(&ack_stream_header());
    acks.extend_from_slice(&encode_ack([1, 2, 300, 0]));
    acks.extend_from_slice(&encode_ack([2, 2, u64::MAX, 1]));

    // A discovery query connection, both ways.
    let mut query = BytesMut::new();
    let find = FindCoordinator {
        asker: c.joiner.clone(),
    };
    query.extend_from_slice(&encode_query(FindCoordinator::TAG, &encode(&find)?));
    let answer = DiscoveryAnswer {
        responder: c.locator.clone(),
        view: Some(c.view.clone()),
    };
    query.extend_from_slice(&encode_answer(FindCoordinator::TAG, &encode(&answer)?));

    Ok(vec![
        ("control-dialer", stream(false, 20, [255, 255], &dialer)),
        ("control-acceptor", stream(false, 10, [0, 6], &acceptor)),
        ("data-stream", stream(true, 16, [6, 40], &data)),
        ("ack-stream", stream(true, 10, [2, 3], &acks)),
        ("query-and-answer", stream(false, 12, [31, 255], &query)),
    ])
}

fn wire_datagram(c: &Cluster) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let beat = Heartbeat {
        view_id: c.view.id(),
    };
    Ok(vec![
        (
            "heartbeat",
            encode_datagram(Heartbeat::TAG, &encode(&beat)?).to_vec(),
        ),
        (
            "application",
            encode_datagram(Tag(0x1_0042), b"an application datagram").to_vec(),
        ),
        ("empty", encode_datagram(Tag(0), b"").to_vec()),
    ])
}

fn handshake(c: &Cluster) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let hello = |member: &MemberId, delivered| -> Result<Vec<u8>> {
        let mut out = vec![0];
        out.extend_from_slice(&encode(&Hello {
            member: member.clone(),
            delivered,
            limits: None,
        })?);
        Ok(out)
    };
    let mut ack = vec![1];
    ack.extend_from_slice(&encode(&HelloAck {
        member: c.node1.clone(),
        delivered: [9, 1, 0, u64::MAX],
        limits: None,
    })?);
    // A greeting of this build: the body, then the receiver's limits (a trailer that older
    // decoders leave unread).
    let mut with_limits = hello(&c.node1, [3, 0, 0, 7])?;
    with_limits.extend_from_slice(&encode(&ReceiverLimits {
        frame_bytes: [1 << 20, 1 << 24, 1 << 24, u64::MAX],
    })?);
    Ok(vec![
        ("hello-with-limits", with_limits),
        ("hello-joiner", hello(&c.joiner, [0; 4])?),
        ("hello-ipv6-legacy", hello(&c.node2, [12, 0, 3, 1])?),
        ("hello-ack-attributes", ack),
    ])
}

fn legacy_packet(c: &Cluster) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let join = GmsMessage::JoinRequest {
        member: c.joiner.clone(),
        credentials: Credentials::default(),
    };
    let data = Packet::Data(
        DataHeader {
            sender: c.joiner.clone(),
            receiver: c.locator.uuid(),
            priority: Priority::Control as u8,
            seq: 1,
            fragment: 0,
            fragments: 1,
            tag: GmsMessage::TAG.0,
        },
        encode(&join)?.into(),
    );
    let fragment = Packet::Data(
        DataHeader {
            sender: c.node2.clone(),
            receiver: c.node1.uuid(),
            priority: Priority::Bulk as u8,
            seq: 300,
            fragment: 1,
            fragments: 3,
            tag: 0x1_0001,
        },
        vec![7u8; 64].into(),
    );
    let ack = Packet::Ack(AckHeader {
        sender: c.node1.uuid(),
        receiver: c.node2.uuid(),
        priority: Priority::Bulk as u8,
        delivered: 299,
        beyond: 0b101,
    });
    let beat = Packet::Datagram(
        DatagramHeader {
            sender: c.node2.clone(),
            tag: Heartbeat::TAG.0,
        },
        encode(&Heartbeat {
            view_id: c.view.id(),
        })?
        .into(),
    );
    let find = FindCoordinator {
        asker: c.joiner.clone(),
    };
    let query = Packet::Query(
        ExchangeHeader {
            id: 17,
            tag: FindCoordinator::TAG.0,
        },
        encode(&find)?.into(),
    );
    let answer = DiscoveryAnswer {
        responder: c.locator.clone(),
        view: Some(c.view.clone()),
    };
    let answer = Packet::Answer(
        ExchangeHeader {
            id: 17,
            tag: FindCoordinator::TAG.0,
        },
        encode(&answer)?.into(),
    );
    let refused = Packet::Refused("the cluster finished its upgrade".into());
    Ok(vec![
        ("data-join", data.encode()),
        ("data-fragment", fragment.encode()),
        ("ack", ack.encode()),
        ("datagram-heartbeat", beat.encode()),
        ("query-discovery", query.encode()),
        ("answer-discovery", answer.encode()),
        ("refused", refused.encode()),
    ])
}

fn membership_messages(c: &Cluster) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let gms = |message: GmsMessage| -> Result<Vec<u8>> {
        Ok(MembershipInput::Gms.encode(&encode(&message)?))
    };
    Ok(vec![
        (
            "join-request",
            gms(GmsMessage::JoinRequest {
                member: c.joiner.clone(),
                credentials: Credentials::default()
                    .with("security-username", "admin")
                    .with("security-password", "secret"),
            })?,
        ),
        (
            "join-rejected",
            gms(GmsMessage::JoinRejected {
                reason: JoinRejection::VersionRefused {
                    joining: ProtocolVersion::LEGACY,
                    cluster: ProtocolVersion::QUIC,
                },
            })?,
        ),
        (
            "install-view",
            gms(GmsMessage::InstallView {
                view: c.view.clone(),
                left: vec![c.joiner.clone()],
                crashed: vec![],
            })?,
        ),
        (
            "promise",
            gms(GmsMessage::Promise {
                base: ViewId(6),
                ballot: Ballot {
                    round: 2,
                    proposer: c.node2.uuid(),
                },
                accepted: Some((decision(c).ballot, decision(c).proposal)),
            })?,
        ),
        (
            "decide",
            gms(GmsMessage::Decide {
                decision: decision(c),
            })?,
        ),
        (
            "suspect",
            gms(GmsMessage::Suspect {
                members: vec![c.node2.clone()],
                reason: "no heartbeat for 1s".into(),
            })?,
        ),
        (
            "heartbeat",
            MembershipInput::Heartbeat.encode(&encode(&Heartbeat { view_id: ViewId(3) })?),
        ),
        (
            "final-check",
            MembershipInput::FinalCheck.encode(&encode(&FinalCheck {
                uuid: c.node2.uuid(),
            })?),
        ),
        (
            "find-coordinator",
            MembershipInput::FindCoordinator.encode(&encode(&FindCoordinator {
                asker: c.joiner.clone(),
            })?),
        ),
        (
            "discovery-answer",
            MembershipInput::DiscoveryAnswer.encode(&encode(&DiscoveryAnswer {
                responder: c.locator.clone(),
                view: Some(c.view.clone()),
            })?),
        ),
        (
            "final-check-answer",
            MembershipInput::FinalCheckAnswer.encode(&encode(&c.node2.uuid())?),
        ),
        (
            "view-check",
            MembershipInput::ViewCheck.encode(&encode(&ViewCheck {
                uuid: c.node2.uuid(),
                checker: c.locator.clone(),
                view_id: ViewId(7),
            })?),
        ),
        (
            "view-check-answer",
            MembershipInput::ViewCheckAnswer.encode(&encode(&ViewCheckAnswer {
                uuid: c.node2.uuid(),
                view_id: ViewId(7),
                standing: Standing::Out,
            })?),
        ),
        (
            "lease-request",
            MembershipInput::Lease.encode(&encode(&LeaseMessage::Request {
                view_id: ViewId(7),
                seq: 3,
            })?),
        ),
        (
            "reachability-notice",
            MembershipInput::Reachability.encode(&encode(&ReachabilityMessage::Notice {
                view_id: ViewId(7),
                member: c.node1.clone(),
                reachable: false,
            })?),
        ),
        (
            "probe-request",
            MembershipInput::Reachability.encode(&encode(&ReachabilityMessage::ProbeRequest {
                view_id: ViewId(7),
                member: c.node1.clone(),
            })?),
        ),
        (
            "probe-answer",
            MembershipInput::Reachability.encode(&encode(&ReachabilityMessage::ProbeAnswer {
                view_id: ViewId(7),
                member: c.node1.clone(),
                reached: true,
            })?),
        ),
    ])
}

fn config_file() -> Vec<(&'static str, Vec<u8>)> {
    // File names are relative: the target reads them from `fuzz/fixtures`.
    let ssl =
        "[ssl]\nca = \"ca.pem\"\ncertificate = \"node.pem\"\nprivate-key = \"node-key.pem\"\n";
    let member = format!(
        "name = \"node-1\"\nkind = \"member\"\nbind-address = \"127.0.0.1:10401\"\n\
         locators = [\"127.0.0.1:10334\"]\n\n{ssl}"
    );
    let locator = format!(
        "name = \"locator-1\"\nkind = \"locator\"\nbind-address = \"0.0.0.0:10334\"\n\
         advertise-address = \"192.0.2.10:10334\"\n\
         locators = [\"192.0.2.10:10334\", \"192.0.2.11:10334\"]\n\
         member-timeout = \"2s\"\nfinal-check-timeout = \"400ms\"\njoin-timeout = \"1m\"\n\
         leave-timeout = \"5\"\nenable-network-partition-detection = true\n\
         working-dir = \"data\"\ntransport = \"quic\"\nmetrics-address = \"127.0.0.1:9464\"\n\n\
         {ssl}require-authentication = true\nendpoint-identification-enabled = false\n"
    );
    let bridge = format!(
        "# A member in the middle of a rolling upgrade.\nname = \"node-2\"\n\
         bind-address = \"[::1]:10402\"\nlocators = [\"[::1]:10334\"]\n\
         transport = \"bridge\"\nsecurity-username = \"admin\"\nsecurity-password = \"secret\"\n\
         member-timeout = \"1.5s\"\n\n{ssl}"
    );
    vec![
        ("member.toml", member.into_bytes()),
        ("locator.toml", locator.into_bytes()),
        ("bridge.toml", bridge.into_bytes()),
    ]
}

/// The CA file's seeds: byte 0 odd, the file's text; even, one certificate's DER.
fn tls_ca_file() -> Result<Vec<(&'static str, Vec<u8>)>> {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls");
    let ca = std::fs::read_to_string(fixtures.join("ca.pem"))?;
    let node = std::fs::read_to_string(fixtures.join("node.pem"))?;
    let text = |pem: &str| [&[1u8][..], pem.as_bytes()].concat();
    let der = |pem: &str| -> Result<Vec<u8>> { Ok([vec![0u8], pem_der(pem)?].concat()) };
    Ok(vec![
        ("ca-file", text(&ca)),
        ("member-given-as-ca", text(&node)),
        ("ca-and-member", text(&format!("{ca}{node}"))),
        ("ca-der", der(&ca)?),
        ("member-der", der(&node)?),
    ])
}

/// The DER of a PEM text's first section (base64 between the BEGIN and END lines).
fn pem_der(pem: &str) -> Result<Vec<u8>> {
    let body: String = pem
        .lines()
        .skip_while(|line| !line.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|line| !line.starts_with("-----END"))
        .collect();
    let value = |c: u8| -> Result<u32> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("not base64: {c:#x}").into()),
        }
        .into())
    };
    let mut out = Vec::new();
    for chunk in body.trim_end_matches('=').as_bytes().chunks(4) {
        let mut bits = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            bits |= value(*c)? << (18 - 6 * i);
        }
        out.extend_from_slice(&bits.to_be_bytes()[1..chunk.len()]);
    }
    Ok(out)
}
