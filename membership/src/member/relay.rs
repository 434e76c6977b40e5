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
//! A relay stays for the member's life once its tag was subscribed, even if the application
//! drops its subscription: messages then find no subscriber in the member's dispatcher and
//! are counted and dropped there, as the messenger's own dispatcher would. A payload that
//! does not decode is counted by the relay's subscription, not the application's.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::Bytes;
use cohort_transport::dispatch::{Dispatcher, Inbound};
use cohort_transport::{Delivery, Message, Messenger, SubscribeError, Subscription, Tag};
use tokio::runtime::Handle;

use super::transport::Transport;

/// Subscribes one message type on a messenger and starts its relay on a runtime.
type Starter = Box<dyn Fn(&Transport, &Handle) -> Result<(), SubscribeError> + Send + Sync>;

/// The application's subscriptions of one member, across incarnations.
pub(super) struct Relays {
    dispatcher: Arc<Dispatcher>,
    /// Where relays run: the member's runtime, whichever thread subscribes. Set when the
    /// member's first messenger is bound ([`Relays::start`]); until then starters wait.
    runtime: OnceLock<Handle>,
    /// One per tag ever subscribed. Its lock also orders subscribing against a messenger
    /// change, so that no relay is started on a messenger already replaced.
    starters: Mutex<HashMap<Tag, Starter>>,
}

impl Relays {
    /// Relays into a dispatcher whose subscriptions buffer `capacity` messages each.
    pub(super) fn new(capacity: usize) -> Self {
        Relays {
            dispatcher: Dispatcher::new(capacity),
            runtime: OnceLock::new(),
            starters: Mutex::new(HashMap::new()),
        }
    }

    /// Subscribes the application to `M`; the first time for its tag, also starts relaying
    /// `M` from the messenger `current` returns (read under the lock [`Relays::switch`]
    /// takes), or, before [`Relays::start`] (`current` then has none), from the first
    /// messenger once it is bound.
    pub(super) fn subscribe<M: Message>(
        &self,
        current: impl FnOnce() -> Option<Transport>,
    ) -> Result<Subscription<M>, SubscribeError> {
        let mut starters = self.starters.lock().unwrap_or_else(PoisonError::into_inner);
        let subscription = self.dispatcher.subscribe::<M>()?;
        if let Entry::Vacant(vacant) = starters.entry(M::TAG) {
            let dispatcher = self.dispatcher.clone();
            let starter: Starter = Box::new(move |messenger: &Transport, runtime: &Handle| {
                let from = messenger.subscribe::<M>()?;
                runtime.spawn(relay(from, dispatcher.clone()));
                Ok(())
            });
            if let (Some(runtime), Some(messenger)) = (self.runtime.get(), current()) {
                // A tag the messenger already has a subscriber for (the application
                // subscribed on the messenger itself) is refused here, as the messenger
                // would refuse it.
                starter(&messenger, runtime)?;
            }
            vacant.insert(starter);
        }
        Ok(subscription)
    }

    /// The member's first messenger is bound: relays run on `runtime` from now on, and
    /// every subscription made before starts relaying from `messenger`, before the member
    /// asks anyone for the cluster (so before any member can send it anything).
    pub(super) fn start(&self, runtime: Handle, messenger: &Transport) {
        let starters = self.starters.lock().unwrap_or_else(PoisonError::into_inner);
        let runtime = self.runtime.get_or_init(|| runtime);
        for (tag, starter) in starters.iter() {
            if let Err(error) = starter(messenger, runtime) {
                tracing::warn!(%tag, %error, "an application subscription was not started");
            }
        }
    }

    /// Makes `install` (which puts the new messenger in place) and the start of every relay
    /// on `messenger` one step for [`Relays::subscribe`].
    pub(super) fn switch<T>(&self, messenger: &Transport, install: impl FnOnce() -> T) -> T {
        let starters = self.starters.lock().unwrap_or_else(PoisonError::into_inner);
        let installed = install();
        let Some(runtime) = self.runtime.get() else {
            // Not started: nothing relays yet, and `start` will.
            return installed;
        };
        for (tag, starter) in starters.iter() {
            if let Err(error) = starter(messenger, runtime) {
                tracing::warn!(%tag, %error, "an application subscription was not carried over");
            }
        }
        installed
    }

    /// The member stopped for good: the application's subscriptions end once drained.
    pub(super) fn close(&self) {
        self.dispatcher.close();
    }
}

/// Moves every message of one incarnation's subscription into the member's dispatcher,
/// until that messenger shuts down.
async fn relay<M: Message>(mut from: Subscription<M>, to: Arc<Dispatcher>) {
    while let Some(envelope) = from.recv().await {
        let payload = match postcard::to_allocvec(&envelope.message) {
            Ok(payload) => Bytes::from(payload),
            // It was just decoded from the same format; this would be a bug in `M`.
            Err(error) => {
                tracing::warn!(tag = %M::TAG, %error, "a received message could not be relayed");
                continue;
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
}
