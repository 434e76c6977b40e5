//! Round trips of the membership protocol's messages, for arbitrary values.
//!
//! Each message is encoded as the messengers encode it (postcard) and decoded the way it
//! is when it arrives: through the transport's `Dispatcher` to a typed `Subscription` for
//! messages (join requests and refusals, prepared and installed views, suspicions,
//! heartbeats), and with postcard alone for the discovery query and its answer, as the
//! query handler and the asker decode them. Checked: what comes out is what went in, member
//! ids equal in every detail (not only by uuid). The final checks' tags and bytes are
//! pinned for fixed values.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use cohort_membership::{
    Ballot, Credentials, Decision, DiscoveryAnswer, FinalCheck, FindCoordinator, GmsMessage,
    Heartbeat, JoinRejection, LeaseMessage, Proposal, ReachabilityMessage, Standing, ViewCheck,
    ViewCheckAnswer,
};
use cohort_transport::dispatch::{Dispatcher, Inbound, Routed};
use cohort_transport::{
    Delivery, MemberAttributes, MemberId, MemberKind, Message, Priority, ProtocolVersion, Tag,
    View, ViewId,
};
use proptest::prelude::*;
use uuid::Uuid;

fn address() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

fn member() -> impl Strategy<Value = MemberId> {
    let kind = prop_oneof![
        Just(MemberKind::Member),
        Just(MemberKind::Locator),
        Just(MemberKind::Admin)
    ];
    let attributes = (
        prop::collection::vec(".{0,12}", 0..4),
        any::<Option<u16>>(),
        any::<i32>(),
    )
        .prop_map(
            |(groups, direct_channel_port, weight_adjustment)| MemberAttributes {
                groups,
                direct_channel_port,
                weight_adjustment,
            },
        );
    (
        any::<u128>(),
        ".{0,24}",
        address(),
        kind,
        any::<u16>(),
        any::<Option<u64>>(),
        attributes,
    )
        .prop_map(|(uuid, name, address, kind, version, view, attributes)| {
            let mut id = MemberId::new(name, address, kind)
                .with_uuid(Uuid::from_u128(uuid))
                .with_version(ProtocolVersion(version))
                .with_attributes(attributes);
            if let Some(view) = view {
                id = id.with_view_id(ViewId(view));
            }
            id
        })
}

fn members() -> impl Strategy<Value = Vec<MemberId>> {
    prop::collection::vec(member(), 0..6)
}

fn view() -> impl Strategy<Value = View> {
    (any::<u64>(), members()).prop_map(|(id, members)| View::new(ViewId(id), members))
}

fn credentials() -> impl Strategy<Value = Credentials> {
    prop::collection::btree_map(".{0,16}", ".{0,16}", 0..4)
        .prop_map(|properties| Credentials { properties })
}

fn rejection() -> impl Strategy<Value = JoinRejection> {
    prop_oneof![
        ".{0,40}".prop_map(JoinRejection::Authentication),
        (any::<u16>(), any::<u16>()).prop_map(|(joining, cluster)| {
            JoinRejection::VersionRefused {
                joining: ProtocolVersion(joining),
                cluster: ProtocolVersion(cluster),
            }
        }),
        ".{0,40}".prop_map(JoinRejection::NameInUse),
    ]
}

/// A representative of each shape of message: identities, credentials, views, lists.
fn gms_message() -> impl Strategy<Value = GmsMessage> {
    prop_oneof![
        (member(), credentials()).prop_map(|(member, credentials)| GmsMessage::JoinRequest {
            member,
            credentials
        }),
        rejection().prop_map(|reason| GmsMessage::JoinRejected { reason }),
        member().prop_map(|member| GmsMessage::LeaveRequest { member }),
        view().prop_map(|view| GmsMessage::PrepareView { view }),
        any::<u64>().prop_map(|id| GmsMessage::PrepareAck {
            view_id: ViewId(id)
        }),
        (view(), members(), members()).prop_map(|(view, left, crashed)| {
            GmsMessage::InstallView {
                view,
                left,
                crashed,
            }
        }),
        (members(), ".{0,40}")
            .prop_map(|(members, reason)| GmsMessage::Suspect { members, reason }),
        (any::<u64>(), ballot()).prop_map(|(base, ballot)| GmsMessage::Collect {
            base: ViewId(base),
            ballot
        }),
        (
            any::<u64>(),
            ballot(),
            prop::option::of((ballot(), proposal()))
        )
            .prop_map(|(base, ballot, accepted)| GmsMessage::Promise {
                base: ViewId(base),
                ballot,
                accepted
            }),
        (any::<u64>(), ballot(), proposal()).prop_map(|(base, ballot, proposal)| {
            GmsMessage::Propose {
                base: ViewId(base),
                ballot,
                proposal,
            }
        }),
        (any::<u64>(), ballot()).prop_map(|(base, ballot)| GmsMessage::Accept {
            base: ViewId(base),
            ballot
        }),
        decision().prop_map(|decision| GmsMessage::Decide { decision }),
        (
            any::<u64>(),
            ballot(),
            prop::option::of(ballot()),
            any::<u64>()
        )
            .prop_map(|(base, ballot, promised, installed)| GmsMessage::Reject {
                base: ViewId(base),
                ballot,
                promised,
                installed: ViewId(installed),
            }),
        any::<u64>().prop_map(|have| GmsMessage::ViewQuery { have: ViewId(have) }),
        decision().prop_map(|decision| GmsMessage::CurrentView { decision }),
    ]
}

fn ballot() -> impl Strategy<Value = Ballot> {
    (any::<u32>(), any::<u128>()).prop_map(|(round, proposer)| Ballot {
        round,
        proposer: Uuid::from_u128(proposer),
    })
}

fn proposal() -> impl Strategy<Value = Proposal> {
    (view(), members(), members()).prop_map(|(view, left, crashed)| Proposal {
        view,
        left,
        crashed,
    })
}

fn decision() -> impl Strategy<Value = Decision> {
    (any::<u64>(), ballot(), proposal()).prop_map(|(base, ballot, proposal)| Decision {
        base: ViewId(base),
        ballot,
        proposal,
    })
}

fn same_proposal(a: &Proposal, b: &Proposal) -> bool {
    same_view(&a.view, &b.view)
        && same_members(&a.left, &b.left)
        && same_members(&a.crashed, &b.crashed)
}

fn same_decision(a: &Decision, b: &Decision) -> bool {
    a.base == b.base && a.ballot == b.ballot && same_proposal(&a.proposal, &b.proposal)
}

fn same_members(a: &[MemberId], b: &[MemberId]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.same_details(b))
}

fn same_view(a: &View, b: &View) -> bool {
    a.id() == b.id() && same_members(a.members(), b.members())
}

/// Whether two membership messages are the same in every field.
fn same_message(a: &GmsMessage, b: &GmsMessage) -> bool {
    use GmsMessage as M;
    match (a, b) {
        (
            M::JoinRequest {
                member,
                credentials,
            },
            M::JoinRequest {
                member: m,
                credentials: c,
            },
        ) => member.same_details(m) && credentials == c,
        (M::JoinRejected { reason }, M::JoinRejected { reason: r }) => reason == r,
        (M::LeaveRequest { member }, M::LeaveRequest { member: m }) => member.same_details(m),
        (M::PrepareView { view }, M::PrepareView { view: v }) => same_view(view, v),
        (M::PrepareAck { view_id }, M::PrepareAck { view_id: v }) => view_id == v,
        (
            M::InstallView {
                view,
                left,
                crashed,
            },
            M::InstallView {
                view: v,
                left: l,
                crashed: c,
            },
        ) => same_view(view, v) && same_members(left, l) && same_members(crashed, c),
        (
            M::Suspect { members, reason },
            M::Suspect {
                members: m,
                reason: r,
            },
        ) => same_members(members, m) && reason == r,
        (M::Collect { base, ballot }, M::Collect { base: b, ballot: l }) => {
            base == b && ballot == l
        }
        (
            M::Promise {
                base,
                ballot,
                accepted,
            },
            M::Promise {
                base: b,
                ballot: l,
                accepted: a,
            },
        ) => {
            base == b
                && ballot == l
                && match (accepted, a) {
                    (None, None) => true,
                    (Some((x, p)), Some((y, q))) => x == y && same_proposal(p, q),
                    _ => false,
                }
        }
        (
            M::Propose {
                base,
                ballot,
                proposal,
            },
            M::Propose {
                base: b,
                ballot: l,
                proposal: p,
            },
        ) => base == b && ballot == l && same_proposal(proposal, p),
        (M::Accept { base, ballot }, M::Accept { base: b, ballot: l }) => base == b && ballot == l,
        (M::Decide { decision }, M::Decide { decision: d })
        | (M::CurrentView { decision }, M::CurrentView { decision: d }) => {
            same_decision(decision, d)
        }
        (
            M::Reject {
                base,
                ballot,
                promised,
                installed,
            },
            M::Reject {
                base: b,
                ballot: l,
                promised: p,
                installed: i,
            },
        ) => base == b && ballot == l && promised == p && installed == i,
        (M::ViewQuery { have }, M::ViewQuery { have: h }) => have == h,
        _ => false,
    }
}

/// Sends `message` through a dispatcher as a received payload and takes it out of its
/// subscription, as a member's membership loop does.
fn through_dispatcher<M: Message>(message: &M, delivery: Delivery) -> M {
    let dispatcher: Arc<Dispatcher> = Dispatcher::new(1);
    let mut subscription = dispatcher.subscribe::<M>().expect("a free tag");
    let from = MemberId::new(
        "sender",
        "127.0.0.1:10400".parse().expect("literal"),
        MemberKind::Member,
    );
    let payload = postcard::to_allocvec(message).expect("a message encodes");
    let inbound = Inbound {
        from: from.clone(),
        delivery,
        payload: Bytes::from(payload),
    };
    assert_eq!(dispatcher.try_deliver(M::TAG, inbound), Routed::Delivered);
    let envelope = subscription.try_recv().expect("the message decodes");
    assert_eq!(subscription.decode_failures(), 0);
    assert_eq!(envelope.delivery, delivery);
    assert!(envelope.from.same_details(&from));
    envelope.message
}

/// The wire format is a promise to other versions: each message's postcard variant index
/// (its first byte) is fixed. Retired indices (3, 4 and 5: the first protocol's view change)
/// stay reserved.
#[test]
fn every_membership_message_keeps_its_wire_index() {
    let ballot = Ballot {
        round: 1,
        proposer: Uuid::from_u128(7),
    };
    let decision = Decision {
        base: ViewId(1),
        ballot,
        proposal: Proposal {
            view: View::new(ViewId(2), []),
            left: Vec::new(),
            crashed: Vec::new(),
        },
    };
    let nobody = MemberId::new(
        "m",
        "127.0.0.1:1".parse().expect("literal"),
        MemberKind::Member,
    );
    let base = ViewId(1);
    let messages: [(u8, GmsMessage); 15] = [
        (
            0,
            GmsMessage::JoinRequest {
                member: nobody.clone(),
                credentials: Credentials::default(),
            },
        ),
        (
            1,
            GmsMessage::JoinRejected {
                reason: JoinRejection::NameInUse("m".into()),
            },
        ),
        (
            2,
            GmsMessage::LeaveRequest {
                member: nobody.clone(),
            },
        ),
        (
            6,
            GmsMessage::NotCoordinator {
                coordinator: nobody.clone(),
            },
        ),
        (
            7,
            GmsMessage::Suspect {
                members: Vec::new(),
                reason: String::new(),
            },
        ),
        (8, GmsMessage::Cleared { member: nobody }),
        (
            9,
            GmsMessage::NetworkPartition {
                reason: String::new(),
            },
        ),
        (10, GmsMessage::Collect { base, ballot }),
        (
            11,
            GmsMessage::Promise {
                base,
                ballot,
                accepted: None,
            },
        ),
        (
            12,
            GmsMessage::Propose {
                base,
                ballot,
                proposal: decision.proposal.clone(),
            },
        ),
        (13, GmsMessage::Accept { base, ballot }),
        (
            14,
            GmsMessage::Decide {
                decision: decision.clone(),
            },
        ),
        (
            15,
            GmsMessage::Reject {
                base,
                ballot,
                promised: None,
                installed: base,
            },
        ),
        (16, GmsMessage::ViewQuery { have: base }),
        (17, GmsMessage::CurrentView { decision }),
    ];
    for (index, message) in messages {
        let bytes = postcard::to_allocvec(&message).expect("a message encodes");
        assert_eq!(bytes[0], index, "{message:?}");
    }
}

/// The coordinator lease is a message type of its own under tag 0x0105, apart from every
/// other membership tag (an older build of protocol 2 has no subscriber for it and drops it,
/// counted, instead of failing to decode a `GmsMessage`); its bytes are fixed.
#[test]
fn the_lease_keeps_its_own_tag_and_its_bytes() {
    assert_eq!(LeaseMessage::TAG, Tag(0x0105));
    let others = [
        GmsMessage::TAG,
        FindCoordinator::TAG,
        Heartbeat::TAG,
        FinalCheck::TAG,
        Tag(0x0104),
    ];
    assert!(!others.contains(&LeaseMessage::TAG));
    let request = LeaseMessage::Request {
        view_id: ViewId(7),
        seq: 300,
    };
    let grant = LeaseMessage::Grant {
        view_id: ViewId(7),
        seq: 300,
    };
    // Variant index, then the view id and the sequence number as postcard varints.
    let request_bytes = postcard::to_allocvec(&request).expect("a request encodes");
    assert_eq!(request_bytes, [0x00, 0x07, 0xac, 0x02]);
    let grant_bytes = postcard::to_allocvec(&grant).expect("a grant encodes");
    assert_eq!(grant_bytes, [0x01, 0x07, 0xac, 0x02]);
    for message in [request, grant] {
        let received = through_dispatcher(&message, Delivery::Reliable(Priority::Control));
        assert_eq!(received, message);
    }
}

/// The reachability messages are a type of their own under tag 0x0106, apart from every
/// other membership tag (an older build drops them, counted); the variant indices are
/// fixed, and each variant crosses the dispatcher as sent.
#[test]
fn the_reachability_messages_keep_their_own_tag_and_variant_indices() {
    assert_eq!(ReachabilityMessage::TAG, Tag(0x0106));
    let others = [
        GmsMessage::TAG,
        FindCoordinator::TAG,
        Heartbeat::TAG,
        FinalCheck::TAG,
        ViewCheck::TAG,
        LeaseMessage::TAG,
    ];
    assert!(!others.contains(&ReachabilityMessage::TAG));
    let member = MemberId::new(
        "m",
        "127.0.0.1:10401".parse().expect("literal"),
        MemberKind::Member,
    );
    let view_id = ViewId(7);
    let messages = [
        (
            0u8,
            ReachabilityMessage::Notice {
                view_id,
                member: member.clone(),
                reachable: false,
            },
        ),
        (
            1,
            ReachabilityMessage::ProbeRequest {
                view_id,
                member: member.clone(),
            },
        ),
        (
            2,
            ReachabilityMessage::ProbeAnswer {
                view_id,
                member,
                reached: true,
            },
        ),
    ];
    for (index, message) in messages {
        let bytes = postcard::to_allocvec(&message).expect("a message encodes");
        // Variant index, then the view id as a postcard varint.
        assert_eq!(&bytes[..2], [index, 0x07], "{message:?}");
        let received = through_dispatcher(&message, Delivery::Reliable(Priority::Control));
        assert_eq!(received, message);
    }
}

/// What an older build does with a lease message: its dispatcher has no subscriber for the
/// tag, so the message is dropped and counted, and its membership messages are untouched.
#[test]
fn a_dispatcher_without_a_lease_subscriber_drops_it_counted() {
    let dispatcher: Arc<Dispatcher> = Dispatcher::new(4);
    let mut membership = dispatcher.subscribe::<GmsMessage>().expect("a free tag");
    let from = MemberId::new(
        "newer",
        "127.0.0.1:10401".parse().expect("literal"),
        MemberKind::Member,
    );
    let lease = LeaseMessage::Request {
        view_id: ViewId(3),
        seq: 1,
    };
    let payload = postcard::to_allocvec(&lease).expect("a request encodes");
    let inbound = Inbound {
        from,
        delivery: Delivery::Reliable(Priority::Control),
        payload: Bytes::from(payload),
    };
    assert_eq!(
        dispatcher.try_deliver(LeaseMessage::TAG, inbound),
        Routed::NoSubscriber
    );
    assert_eq!(dispatcher.stats().unknown_tags, 1);
    assert!(membership.try_recv().is_none());
    assert_eq!(membership.decode_failures(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn membership_messages_arrive_as_sent(message in gms_message()) {
        let received = through_dispatcher(&message, Delivery::Reliable(Priority::Control));
        prop_assert!(same_message(&message, &received), "sent {:?}, received {:?}", message, received);
    }

    #[test]
    fn heartbeats_arrive_as_sent(view in any::<u64>()) {
        let beat = Heartbeat { view_id: ViewId(view) };
        let received = through_dispatcher(&beat, Delivery::Datagram);
        prop_assert_eq!(received.view_id, beat.view_id);
    }

    #[test]
    fn discovery_query_and_answer_decode_as_sent(
        asker in member(),
        responder in member(),
        view in prop::option::of(view()),
    ) {
        let query = FindCoordinator { asker };
        let bytes = postcard::to_allocvec(&query).expect("a query encodes");
        let back: FindCoordinator = postcard::from_bytes(&bytes).expect("a query decodes");
        prop_assert!(back.asker.same_details(&query.asker));

        let answer = DiscoveryAnswer { responder, view };
        let bytes = postcard::to_allocvec(&answer).expect("an answer encodes");
        let back: DiscoveryAnswer = postcard::from_bytes(&bytes).expect("an answer decodes");
        prop_assert!(back.responder.same_details(&answer.responder));
        match (&answer.view, &back.view) {
            (None, None) => {}
            (Some(sent), Some(received)) => prop_assert!(same_view(sent, received)),
            (sent, received) => prop_assert!(false, "view {:?} came back as {:?}", sent, received),
        }
    }
}

/// A value's postcard bytes, as a messenger sends them.
fn bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("a value encodes")
}

/// The final checks' tags and bytes are a promise to other builds: `FinalCheck` (0x0103)
/// is what a build without `ViewCheck` asks and answers, so neither may ever change, and
/// `ViewCheck` (0x0104) is pinned from its first release on.
#[test]
fn final_checks_keep_their_tags_and_bytes() {
    assert_eq!(FinalCheck::TAG, Tag(0x0103));
    assert_eq!(ViewCheck::TAG, Tag(0x0104));
    let suspect = Uuid::from_u128(1);
    // A uuid is its length (16) and its bytes, big-endian.
    let uuid = |last: u8| [&[16u8][..], &[0; 15], &[last]].concat();
    assert_eq!(bytes(&FinalCheck { uuid: suspect }), uuid(1));
    assert_eq!(bytes(&uuid::Uuid::from_u128(3)), uuid(3), "its answer");

    let checker = MemberId::new(
        "c",
        "127.0.0.1:7000".parse().expect("literal"),
        MemberKind::Member,
    )
    .with_uuid(Uuid::from_u128(2))
    .with_version(ProtocolVersion::QUIC);
    let query = ViewCheck {
        uuid: suspect,
        checker,
        view_id: ViewId(5),
    };
    let checker_bytes = [
        &uuid(2)[..],
        &[1, b'c'],         // name
        &[0, 127, 0, 0, 1], // address: V4, the IP
        &[216, 54],         // port 7000, a varint
        &[0, 2, 0],         // kind Member, version 2, no view id
        &[0, 0, 0],         // attributes: no groups, no direct channel port, weight +0
    ]
    .concat();
    let expected = [&uuid(1)[..], &checker_bytes, &[5]].concat();
    assert_eq!(bytes(&query), expected);

    let answer = ViewCheckAnswer {
        uuid: suspect,
        view_id: ViewId(6),
        standing: Standing::Out,
    };
    assert_eq!(bytes(&answer), [&uuid(1)[..], &[6, 2]].concat());
    let standings = [Standing::Member, Standing::Joining, Standing::Out];
    for (index, standing) in standings.into_iter().enumerate() {
        assert_eq!(bytes(&standing), [index as u8], "{standing:?}");
    }
}
