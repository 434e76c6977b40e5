//! The membership protocol's messages, decoded the way they are when they arrive: messages
//! through the transport's `Dispatcher` to a typed `Subscription` (as both messengers
//! deliver them), queries and answers with postcard as the query handler and the asker
//! decode them.
//!
//! Input: byte 0 picks the message type (see `cohort_fuzz::MembershipInput`), the rest is
//! the payload. Whatever the bytes, a message is delivered or counted as a decode failure,
//! never a panic; a message that decodes re-encodes to one that decodes the same.
#![no_main]

use std::cell::RefCell;
use std::fmt::Debug;
use std::sync::Arc;

use bytes::Bytes;
use cohort_fuzz::MembershipInput;
use cohort_membership::{
    DiscoveryAnswer, FinalCheck, FindCoordinator, GmsMessage, Heartbeat, LeaseMessage,
    ReachabilityMessage, ViewCheck, ViewCheckAnswer,
};
use cohort_transport::dispatch::{Dispatcher, Inbound, Routed};
use cohort_transport::{Delivery, MemberId, MemberKind, Message, Priority, Subscription};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// One dispatcher and its subscriptions, kept across runs as a messenger keeps them.
struct Routes {
    dispatcher: Arc<Dispatcher>,
    gms: RefCell<Subscription<GmsMessage>>,
    heartbeats: RefCell<Subscription<Heartbeat>>,
    leases: RefCell<Subscription<LeaseMessage>>,
    reachability: RefCell<Subscription<ReachabilityMessage>>,
    from: MemberId,
}

impl Routes {
    fn new() -> Self {
        let dispatcher = Dispatcher::new(4);
        let gms = dispatcher.subscribe().expect("a free tag");
        let heartbeats = dispatcher.subscribe().expect("a free tag");
        let leases = dispatcher.subscribe().expect("a free tag");
        let reachability = dispatcher.subscribe().expect("a free tag");
        let from = MemberId::new(
            "sender",
            "127.0.0.1:10400".parse().expect("literal"),
            MemberKind::Member,
        );
        Routes {
            dispatcher,
            gms: RefCell::new(gms),
            heartbeats: RefCell::new(heartbeats),
            leases: RefCell::new(leases),
            reachability: RefCell::new(reachability),
            from,
        }
    }

    /// Delivers `payload` as a message of type `M` and takes it back out of its
    /// subscription: `Some` if it decoded.
    fn deliver<M: Message + Debug>(
        &self,
        subscription: &RefCell<Subscription<M>>,
        delivery: Delivery,
        payload: &[u8],
    ) -> Option<M> {
        let mut subscription = subscription.borrow_mut();
        let failures = subscription.decode_failures();
        let inbound = Inbound {
            from: self.from.clone(),
            delivery,
            payload: Bytes::copy_from_slice(payload),
        };
        assert_eq!(
            self.dispatcher.try_deliver(M::TAG, inbound),
            Routed::Delivered
        );
        let received = subscription.try_recv();
        assert!(
            subscription.try_recv().is_none(),
            "one message in, at most one out"
        );
        match received {
            Some(envelope) => {
                assert_eq!(subscription.decode_failures(), failures);
                assert_eq!(envelope.delivery, delivery);
                Some(envelope.message)
            }
            None => {
                assert_eq!(subscription.decode_failures(), failures + 1);
                None
            }
        }
    }
}

thread_local! {
    static ROUTES: Routes = Routes::new();
}

/// A decoded value re-encodes, and the re-encoding decodes to a value that reads the same.
fn round_trip<T: Serialize + DeserializeOwned + Debug>(value: &T) {
    let shown = format!("{value:?}");
    let bytes = postcard::to_allocvec(value).expect("a decoded value encodes");
    let back: T = postcard::from_bytes(&bytes).expect("an encoded value decodes");
    assert_eq!(format!("{back:?}"), shown);
}

/// Decodes as a query handler or an asker does (a bare postcard decode).
fn decode_plain<T: Serialize + DeserializeOwned + Debug>(payload: &[u8]) {
    if let Ok(value) = postcard::from_bytes::<T>(payload) {
        round_trip(&value);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((kind, payload)) = MembershipInput::parse(data) else {
        return;
    };
    ROUTES.with(|routes| match kind {
        MembershipInput::Gms => {
            let delivery = Delivery::Reliable(Priority::Control);
            if let Some(message) = routes.deliver(&routes.gms, delivery, payload) {
                let view = match &message {
                    GmsMessage::PrepareView { view } | GmsMessage::InstallView { view, .. } => {
                        Some(view)
                    }
                    GmsMessage::Propose { proposal, .. } => Some(&proposal.view),
                    GmsMessage::Decide { decision } | GmsMessage::CurrentView { decision } => {
                        Some(&decision.proposal.view)
                    }
                    _ => None,
                };
                if let Some(view) = view {
                    // Views are shown in logs and asked for their coordinator.
                    let _ = (view.to_string(), view.coordinator(), view.elder());
                }
                round_trip(&message);
            }
        }
        MembershipInput::Heartbeat => {
            if let Some(beat) = routes.deliver(&routes.heartbeats, Delivery::Datagram, payload) {
                round_trip(&beat);
            }
        }
        MembershipInput::FinalCheck => decode_plain::<FinalCheck>(payload),
        MembershipInput::FindCoordinator => decode_plain::<FindCoordinator>(payload),
        MembershipInput::DiscoveryAnswer => decode_plain::<DiscoveryAnswer>(payload),
        MembershipInput::FinalCheckAnswer => decode_plain::<uuid::Uuid>(payload),
        MembershipInput::ViewCheck => decode_plain::<ViewCheck>(payload),
        MembershipInput::ViewCheckAnswer => decode_plain::<ViewCheckAnswer>(payload),
        MembershipInput::Lease => {
            let delivery = Delivery::Reliable(Priority::Control);
            if let Some(lease) = routes.deliver(&routes.leases, delivery, payload) {
                round_trip(&lease);
            }
        }
        MembershipInput::Reachability => {
            let delivery = Delivery::Reliable(Priority::Control);
            if let Some(message) = routes.deliver(&routes.reachability, delivery, payload) {
                round_trip(&message);
            }
        }
    });
});
