//! [`Relays`]: the application's subscriptions, carried from one incarnation of a member to
//! the next.
//!
//! ```text
//! MemberBuilder::subscribe::<M>(), Member::subscribe::<M>()
//!     ─► the member's own Dispatcher ─► Subscription<M> (the application's)
//!     └► first time for M's tag: a starter, run on the current messenger (or, before the
//!        member started, on its first one, as soon as it is bound: Relays::start)
//! starter(messenger) ─► messenger.subscribe::<M>() ─► relay task:
//!     Envelope<M> ─► postcard encode ─► the member's Dispatcher ─► the application's Subscription<M>
//! each reconnect ─► every starter runs on the new messenger; the old relays end when the
//!     old messenger shuts down (its subscriptions yield None)
//! the member stops for good ─► close: the application's subscriptions yield what they hold, then None
//! ```
//!
//! A reconnect replaces the messenger, and a [`Subscription`] is tied to the dispatcher of
//! the messenger that made it. So with auto-reconnect on, the application subscribes to a
//! dispatcher the member owns for its whole life, and a relay task per tag and incarnation
//! moves messages over. The same is what lets an application subscribe before the member
//! exists (`MemberBuilder::subscribe`): the subscription is on the member's dispatcher,
//! and its relay starts on the first messenger before it asks anyone for the cluster.
//! Back-pressure still reaches the sender: a relay waits while the application's queue is
//! full (reliable messages; datagrams are dropped, as the messenger drops them), and then
//! the messenger's queue fills behind it. The cost is one decode and encode per message
//! and one more task hop, paid only with auto-reconnect on or with subscriptions made
//! before the start.
//!
//! A relay lasts as long as the application's subscription to its tag: once the
//! application drops it, the relay ends and drops its own subscription on the messenger,
//! so that later messages of the tag find no subscriber there and their senders are told
//! (`TransportEvent::Undelivered`), exactly as without a relay. Messages the relay had
//! already taken when the subscription was dropped find no subscriber in the member's
//! dispatcher: counted (`DispatchStats::unknown_tags`) and logged there. Subscribing to the
//! tag again starts a relay again; a reconnect starts relays only for tags the application
//! still holds. A payload that does not decode is counted by the relay's subscription, not
//! the application's.
//!
//! Who relays what is decided under one lock (`Inner::tags`): `subscribe`, the start of
//! relays on a new messenger, and a relay's decision to end, so that a subscription made
//! while a relay ends is never left without one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use bytes::Bytes;
use cohort_transport::dispatch::{Dispatcher, Inbound};
use cohort_transport::{Delivery, Envelope, Message, Messenger, SubscribeError, Subscription, Tag};
use tokio::runtime::Handle;

/// Subscribes one message type on a messenger and starts its relay on a runtime, for the
/// messenger generation given.
type Starter =
    Box<dyn Fn(&Messenger, &Handle, &Arc<Inner>, u64) -> Result<(), SubscribeError> + Send + Sync>;

/// The application's subscriptions of one member, across incarnations.
pub(super) struct Relays {
    inner: Arc<Inner>,
}

/// What relays share: their tasks hold it while they run.
struct Inner {
    dispatcher: Arc<Dispatcher>,
    /// Where relays run: the member's runtime, whichever thread subscribes. Set when the
    /// member's first messenger is bound ([`Relays::start`]); until then starters wait.
    runtime: OnceLock<Handle>,
    /// Every tag ever subscribed, and which messenger relays it now. Its lock also orders
    /// subscribing against a messenger change and against a relay ending.
    tags: Mutex<Tags>,
}

#[derive(Default)]
struct Tags {
    /// Counts messengers: each gets the next number when relays start on it.
    generation: u64,
    by_tag: HashMap<Tag, TagRelay>,
}

struct TagRelay {
    start: Starter,
    /// The generation of the messenger a relay of this tag runs on, if one does.
    relayed_on: Option<u64>,
}

impl Inner {
    fn tags(&self) -> MutexGuard<'_, Tags> {
        self.tags.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Relays {
    /// Relays into a dispatcher whose subscriptions buffer `capacity` messages each.
    pub(super) fn new(capacity: usize) -> Self {
        Relays {
            inner: Arc::new(Inner {
                dispatcher: Dispatcher::new(capacity),
                runtime: OnceLock::new(),
                tags: Mutex::default(),
            }),
        }
    }

    /// Subscribes the application to `M`, and relays `M` from the messenger `current`
    /// returns (read under the lock [`Relays::switch`] takes) unless a relay of it runs
    /// there already; before [`Relays::start`] (`current` then has none), relays start on
    /// the first messenger once it is bound.
    pub(super) fn subscribe<M: Message>(
        &self,
        current: impl FnOnce() -> Option<Messenger>,
    ) -> Result<Subscription<M>, SubscribeError> {
        let inner = &self.inner;
        let mut tags = inner.tags();
        let subscription = inner.dispatcher.subscribe::<M>()?;
        let generation = tags.generation;
        let relay = tags.by_tag.entry(M::TAG).or_insert_with(|| TagRelay {
            start: Box::new(|messenger, runtime, inner, generation| {
                let from = messenger.subscribe::<M>()?;
                runtime.spawn(relay(from, inner.clone(), generation));
                Ok(())
            }),
            relayed_on: None,
        });
        if relay.relayed_on != Some(generation)
            && let (Some(runtime), Some(messenger)) = (inner.runtime.get(), current())
        {
            // A tag the messenger already has a subscriber for (the application
            // subscribed on the messenger itself) is refused here, as the messenger would
            // refuse it.
            (relay.start)(&messenger, runtime, inner, generation)?;
            relay.relayed_on = Some(generation);
        }
        Ok(subscription)
    }

    /// The member's first messenger is bound: relays run on `runtime` from now on, and
    /// every subscription made before starts relaying from `messenger`, before the member
    /// asks anyone for the cluster (so before any member can send it anything).
    pub(super) fn start(&self, runtime: Handle, messenger: &Messenger) {
        let mut tags = self.inner.tags();
        let runtime = self.inner.runtime.get_or_init(|| runtime);
        self.start_all(&mut tags, messenger, runtime, "started");
    }

    /// Makes `install` (which puts the new messenger in place) and the start of every relay
    /// on `messenger` one step for [`Relays::subscribe`].
    pub(super) fn switch<T>(&self, messenger: &Messenger, install: impl FnOnce() -> T) -> T {
        let mut tags = self.inner.tags();
        let installed = install();
        let Some(runtime) = self.inner.runtime.get() else {
            // Not started: nothing relays yet, and `start` will.
            return installed;
        };
        self.start_all(&mut tags, messenger, runtime, "carried over");
        installed
    }

    /// Starts a relay on `messenger`, a new generation, for every tag the application
    /// holds a subscription to.
    fn start_all(&self, tags: &mut Tags, messenger: &Messenger, runtime: &Handle, what: &str) {
        tags.generation += 1;
        let generation = tags.generation;
        for (tag, relay) in tags.by_tag.iter_mut() {
            relay.relayed_on = None;
            if !self.inner.dispatcher.has_subscriber(*tag) {
                continue;
            }
            match (relay.start)(messenger, runtime, &self.inner, generation) {
                Ok(()) => relay.relayed_on = Some(generation),
                Err(error) => {
                    tracing::warn!(%tag, %error, "an application subscription was not {what}");
                }
            }
        }
    }

    /// The member stopped for good: the application's subscriptions end once drained.
    pub(super) fn close(&self) {
        self.inner.dispatcher.close();
    }
}

/// Moves every message of one incarnation's subscription into the member's dispatcher,
/// until that messenger shuts down or the application drops its subscription to `M`.
async fn relay<M: Message>(mut from: Subscription<M>, inner: Arc<Inner>, generation: u64) {
    let to = &inner.dispatcher;
    // Made once, not per message: it checks the dispatcher's routes when first polled.
    let mut gone = std::pin::pin!(to.until_unsubscribed(M::TAG));
    loop {
        let envelope = tokio::select! {
            envelope = from.recv() => match envelope {
                Some(envelope) => envelope,
                // The messenger shut down: a reconnect's relays take over, if any.
                None => return,
            },
            () = &mut gone => {
                let taken = {
                    let mut tags = inner.tags();
                    if to.has_subscriber(M::TAG) {
                        // Subscribed again meanwhile: this relay serves the new one.
                        gone.set(to.until_unsubscribed(M::TAG));
                        continue;
                    }
                    if let Some(relay) = tags.by_tag.get_mut(&M::TAG)
                        && relay.relayed_on == Some(generation)
                    {
                        relay.relayed_on = None;
                    }
                    let mut taken = Vec::new();
                    while let Some(envelope) = from.try_recv() {
                        taken.push(envelope);
                    }
                    // Unsubscribes on the messenger, under the lock: a subscription made
                    // from now on relays afresh, and the messenger tells the senders of
                    // what comes before it.
                    drop(from);
                    taken
                };
                // What this relay had taken: delivered if the tag was subscribed again
                // since, else counted and logged by the member's dispatcher.
                for envelope in taken {
                    forward(to, envelope).await;
                }
                return;
            }
        };
        forward(to, envelope).await;
    }
}

/// Hands one relayed message to the member's dispatcher.
async fn forward<M: Message>(to: &Dispatcher, envelope: Envelope<M>) {
    let payload = match postcard::to_allocvec(&envelope.message) {
        Ok(payload) => Bytes::from(payload),
        // It was just decoded from the same format; this would be a bug in `M`.
        Err(error) => {
            tracing::warn!(tag = %M::TAG, %error, "a received message could not be relayed");
            return;
        }
    };
    let inbound = Inbound {
        from: envelope.from,
        delivery: envelope.delivery,
        payload,
    };
    match envelope.delivery {
        Delivery::Datagram => {
            to.try_deliver(M::TAG, inbound);
        }
        Delivery::Reliable(_) => {
            to.deliver(M::TAG, inbound).await;
        }
    }
}
