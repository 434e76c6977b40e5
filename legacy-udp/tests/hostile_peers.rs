//! The legacy protocol against peers that do not follow it: raw UDP sockets in the test
//! play the attacker (or a sender the test steps by hand), a real `Messenger` is the
//! target.
//!
//! - A stranger (in no view) may speak only as a joiner does: cohort's own protocol tags on
//!   the Control priority. Once it has sent that, it is still a stranger: application
//!   messages from it, on any priority, never reach a subscriber.
//! - The memory for messages being joined from fragments is shared by every sender. When it
//!   is full, a fragment is held back unacknowledged (its sender resends it), never consumed
//!   and acknowledged and then thrown away: what a sender saw acknowledged is delivered.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use bytes::Bytes;
use cohort_legacy_udp::packet::{DataHeader, Packet};
use cohort_legacy_udp::{LegacyCarrier, LegacyConfig, LegacyStats};
use cohort_transport::{
    Identity, MemberId, MemberKind, Message, Messenger, Priority, ProtocolVersion, Tag, View,
    ViewId,
};
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout};

/// How long any one condition is waited for before the test fails.
const PATIENCE: Duration = Duration::from_secs(5);

/// An application message (a tag from `Tag::FIRST_APPLICATION`).
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Note(Vec<u8>);

impl Message for Note {
    const TAG: Tag = Tag(0x1_0031);
}

/// A message of a cohort protocol (a reserved tag), as a joiner's join request is.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Knock(u32);

impl Message for Knock {
    const TAG: Tag = Tag(0xfe31);
}

fn encode<M: Message>(message: &M) -> Bytes {
    Bytes::from(postcard::to_allocvec(message).expect("a test message encodes"))
}

/// A member of protocol v1 played by a raw UDP socket.
struct Raw {
    socket: UdpSocket,
    id: MemberId,
}

impl Raw {
    async fn bind(name: &str) -> Raw {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind a raw socket");
        let address = socket.local_addr().expect("bound");
        let id =
            MemberId::new(name, address, MemberKind::Member).with_version(ProtocolVersion::LEGACY);
        Raw { socket, id }
    }

    /// Sends one fragment of a reliable message to `to`.
    #[allow(clippy::too_many_arguments)]
    async fn data(
        &self,
        to: &MemberId,
        priority: Priority,
        seq: u64,
        fragment: u32,
        fragments: u32,
        tag: Tag,
        payload: Bytes,
    ) {
        let header = DataHeader {
            sender: self.id.clone(),
            receiver: to.uuid(),
            priority: priority.index() as u8,
            seq,
            fragment,
            fragments,
            tag: tag.0,
        };
        let packet = Packet::Data(header, payload).encode();
        self.socket
            .send_to(&packet, to.address())
            .await
            .expect("send on loopback");
    }

    /// Sends `message` whole (one fragment) to `to`, as number `seq` on `priority`.
    async fn send_whole<M: Message>(
        &self,
        to: &MemberId,
        priority: Priority,
        seq: u64,
        message: &M,
    ) {
        self.data(to, priority, seq, 0, 1, M::TAG, encode(message))
            .await;
    }

    /// Waits until `to` acknowledges everything up to `seq` on `priority`.
    async fn acknowledged(&self, priority: Priority, seq: u64) {
        let deadline = Instant::now() + PATIENCE;
        let mut buffer = vec![0u8; 2048];
        loop {
            let received = tokio::time::timeout_at(deadline, self.socket.recv_from(&mut buffer))
                .await
                .unwrap_or_else(|_| {
                    panic!("{priority} sequence number {seq} not acknowledged within {PATIENCE:?}")
                });
            let (len, _): (usize, SocketAddr) = received.expect("receive on loopback");
            if let Ok(Packet::Ack(ack)) = Packet::decode(&buffer[..len])
                && usize::from(ack.priority) == priority.index()
                && ack.delivered >= seq
            {
                return;
            }
        }
    }
}

/// The counters of `messenger`'s legacy carrier.
fn stats(messenger: &Messenger) -> LegacyStats {
    let carrier = messenger.carrier::<LegacyCarrier>();
    carrier.expect("a legacy carrier").stats()
}

fn target(config: LegacyConfig) -> Messenger {
    cohort_legacy_udp::bind(&Identity::named("target"), config)
        .expect("bind a legacy messenger on loopback")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_that_was_heard_once_still_cannot_deliver_application_messages() {
    let target = target(LegacyConfig::default());
    let member =
        cohort_legacy_udp::bind(&Identity::named("member"), LegacyConfig::default()).expect("bind");
    let view = View::new(
        ViewId(1),
        [target.local_member().clone(), member.local_member().clone()],
    );
    target.install_view(view.clone());
    member.install_view(view);
    let mut notes = target.subscribe::<Note>().expect("subscribe");
    let mut knocks = target.subscribe::<Knock>().expect("subscribe");
    let me = target.local_member().clone();

    // What a joiner sends is taken: a protocol message on Control.
    let stranger = Raw::bind("stranger").await;
    stranger
        .send_whole(&me, Priority::Control, 1, &Knock(1))
        .await;
    let knock = timeout(PATIENCE, knocks.recv())
        .await
        .expect("a joiner's Control message arrives in time")
        .expect("subscription open");
    assert_eq!(knock.message, Knock(1));
    stranger.acknowledged(Priority::Control, 1).await;

    // Now "on record", the stranger tries the application's messages on every priority
    // that can carry them, and on Control.
    for (seq, priority) in [
        (1, Priority::High),
        (1, Priority::Normal),
        (1, Priority::Bulk),
    ] {
        stranger
            .send_whole(&me, priority, seq, &Note(b"forged".to_vec()))
            .await;
    }
    stranger
        .send_whole(&me, Priority::Control, 2, &Note(b"forged".to_vec()))
        .await;
    let refused = Instant::now() + PATIENCE;
    while stats(&target).from_strangers < 4 {
        assert!(
            Instant::now() < refused,
            "the stranger's application messages were not refused: {:?}",
            stats(&target)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // A member of the view is heard as before, and it is the only one heard.
    let _ = member
        .send(
            &Note(b"genuine".to_vec()),
            Priority::Normal,
            std::slice::from_ref(&me),
        )
        .expect("send");
    let note = timeout(PATIENCE, notes.recv())
        .await
        .expect("the member's message arrives in time")
        .expect("subscription open");
    assert_eq!(
        (note.from.uuid(), note.message),
        (member.local_member().uuid(), Note(b"genuine".to_vec())),
        "the first application message delivered is the member's"
    );
    assert!(notes.try_recv().is_none(), "nothing from the stranger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_may_not_send_application_messages_on_control() {
    let target = target(LegacyConfig::default());
    target.install_view(View::new(ViewId(1), [target.local_member().clone()]));
    let mut notes = target.subscribe::<Note>().expect("subscribe");
    let mut knocks = target.subscribe::<Knock>().expect("subscribe");
    let me = target.local_member().clone();
    let stranger = Raw::bind("stranger").await;
    // Its first packet at all, on Control but with an application tag: refused, and the
    // stranger is not put on record by it.
    stranger
        .send_whole(&me, Priority::Control, 1, &Note(b"forged".to_vec()))
        .await;
    let refused = Instant::now() + PATIENCE;
    while stats(&target).from_strangers < 1 {
        assert!(
            Instant::now() < refused,
            "not refused: {:?}",
            stats(&target)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The same sequence number with a protocol message is taken: the refused one was not
    // consumed, so nothing is out of step.
    stranger
        .send_whole(&me, Priority::Control, 1, &Knock(7))
        .await;
    let knock = timeout(PATIENCE, knocks.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(knock.message, Knock(7));
    assert!(notes.try_recv().is_none());
}

/// A receiver whose messages being joined may take 3,000 bytes at once, with messages of
/// two 1,200-byte fragments: two fit in that memory, a third does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_full_reassembly_memory_acknowledged_is_delivered() {
    let target = target(LegacyConfig {
        max_message_bytes: NonZeroUsize::new(3000).expect("positive"),
        max_reassembly_bytes: 3000,
        ..LegacyConfig::default()
    });
    let (a, b) = (Raw::bind("a").await, Raw::bind("b").await);
    target.install_view(View::new(
        ViewId(1),
        [target.local_member().clone(), a.id.clone(), b.id.clone()],
    ));
    let mut notes = target.subscribe::<Note>().expect("subscribe");
    let me = target.local_member().clone();
    // Two messages whose postcard encodings are 2,400 bytes, cut as a sender cuts them.
    let message = |byte: u8| encode(&Note(vec![byte; 2398]));
    let (from_a, from_b) = (message(0xaa), message(0xbb));
    assert_eq!(from_a.len(), 2400);
    let fragment = |m: &Bytes, i: usize| m.slice(i * 1200..(i + 1) * 1200);

    // a's first fragment, then b's, then a's second: joining both at once would take
    // 3,600 bytes.
    a.data(
        &me,
        Priority::Normal,
        1,
        0,
        2,
        Note::TAG,
        fragment(&from_a, 0),
    )
    .await;
    a.acknowledged(Priority::Normal, 1).await;
    b.data(
        &me,
        Priority::Normal,
        1,
        0,
        2,
        Note::TAG,
        fragment(&from_b, 0),
    )
    .await;
    a.data(
        &me,
        Priority::Normal,
        2,
        1,
        2,
        Note::TAG,
        fragment(&from_a, 1),
    )
    .await;
    a.acknowledged(Priority::Normal, 2).await;
    b.data(
        &me,
        Priority::Normal,
        2,
        1,
        2,
        Note::TAG,
        fragment(&from_b, 1),
    )
    .await;
    b.acknowledged(Priority::Normal, 2).await;

    // Both senders saw their whole message acknowledged: both are delivered, each once.
    let mut delivered = Vec::new();
    while delivered.len() < 2 {
        let note = timeout(PATIENCE, notes.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "acknowledged but not delivered: got {} of 2 messages; {:?}",
                    delivered.len(),
                    stats(&target)
                )
            })
            .expect("subscription open");
        delivered.push((note.from.uuid(), note.message.0[0]));
    }
    delivered.sort();
    let mut expected = vec![(a.id.uuid(), 0xaa), (b.id.uuid(), 0xbb)];
    expected.sort();
    assert_eq!(delivered, expected);
    assert!(
        stats(&target).reassembly_over_budget >= 1,
        "b's message had to wait for memory"
    );
}

/// One member sends a message of the largest size on each of three priorities at once while
/// another sends one too: with memory for two of them being joined, everything still
/// arrives (one sender's messages wait their turn; nothing is skipped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sender_of_large_messages_cannot_make_another_lose_one() {
    let bind = |name: &str| {
        let config = LegacyConfig {
            max_fragment_bytes: 100,
            max_message_bytes: NonZeroUsize::new(20_000).expect("positive"),
            max_reassembly_bytes: 40_000,
            ..LegacyConfig::default()
        };
        cohort_legacy_udp::bind(&Identity::named(name), config).expect("bind")
    };
    let (receiver, big, other) = (bind("receiver"), bind("big"), bind("other"));
    let view = View::new(
        ViewId(1),
        [
            receiver.local_member().clone(),
            big.local_member().clone(),
            other.local_member().clone(),
        ],
    );
    for m in [&receiver, &big, &other] {
        m.install_view(view.clone());
    }
    let mut notes = receiver.subscribe::<Note>().expect("subscribe");
    let to = [receiver.local_member().clone()];
    for (i, priority) in [Priority::High, Priority::Normal, Priority::Bulk]
        .into_iter()
        .enumerate()
    {
        let outcome = big
            .send(&Note(vec![i as u8; 19_000]), priority, &to)
            .expect("send");
        assert!(outcome.backlogged.is_empty() && outcome.not_in_view.is_empty());
    }
    let _ = other
        .send(&Note(vec![0xff; 19_000]), Priority::Normal, &to)
        .expect("send");
    let mut senders = Vec::new();
    while senders.len() < 4 {
        let note = timeout(PATIENCE, notes.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} of 4 messages arrived; {:?}",
                    senders.len(),
                    stats(&receiver)
                )
            })
            .expect("subscription open");
        assert_eq!(note.message.0.len(), 19_000);
        senders.push(note.message.0[0]);
    }
    senders.sort();
    assert_eq!(senders, vec![0, 1, 2, 0xff]);
    assert_eq!(stats(&receiver).oversized, 0);
}
