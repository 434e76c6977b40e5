//! Routing received messages to subscribers by tag.
//!
//! A messenger's readers hand every received payload to the [`Dispatcher`] together with its
//! tag; the dispatcher forwards it to the one [`Subscription`] registered for that tag over a
//! bounded channel. The payload stays encoded until the subscriber asks for the next message,
//! so decoding costs the subscriber's task, not the connection's. Because the channel is
//! bounded, a subscriber that stops reading holds back its sender's stream through QUIC flow
//! control instead of growing memory here.
//!
//! The dispatcher is its own type so that two messengers (QUIC and legacy, in the upgrade
//! bridge) can deliver into the same subscriptions.

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_core::Stream;
use tokio::sync::{Notify, mpsc};

use crate::member::MemberId;
use crate::message::{Delivery, Envelope, Message, Tag};
use crate::sync::lock;

/// The most messages a subscription takes from its queue at once (and so holds beyond its
/// queue's capacity).
const TAKE_AT_ONCE: usize = 64;

/// One received, still encoded message.
#[derive(Debug)]
pub struct Inbound {
    /// The sender.
    pub from: MemberId,
    /// How it travelled.
    pub delivery: Delivery,
    /// The postcard-encoded message.
    pub payload: Bytes,
}

/// What became of a delivered message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routed {
    /// Handed to its subscriber.
    Delivered,
    /// No subscriber for the tag: counted and dropped.
    NoSubscriber,
    /// The subscriber's queue was full (only for non-waiting delivery): dropped.
    Full,
}

/// Failure to subscribe.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// Another live subscription already holds this tag.
    #[error("tag {tag} already has a subscriber (message type {existing})")]
    AlreadySubscribed {
        /// The contested tag.
        tag: Tag,
        /// The Rust type name of the existing subscription's message.
        existing: &'static str,
    },
    /// An application subscribed to a tag reserved for cohort's own protocols (below
    /// [`Tag::FIRST_APPLICATION`]).
    #[error(
        "tag {0} is reserved for cohort's own protocols; application tags start at {first}",
        first = Tag::FIRST_APPLICATION
    )]
    ReservedTag(Tag),
}

struct Route {
    id: u64,
    type_name: &'static str,
    tx: mpsc::Sender<Inbound>,
}

/// Counters kept by the dispatcher.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchStats {
    /// Messages whose tag had no subscriber.
    pub unknown_tags: u64,
    /// Datagrams dropped because their subscriber's queue was full.
    pub dropped_full: u64,
}

/// Routes received payloads to subscriptions by tag.
pub struct Dispatcher {
    routes: Mutex<HashMap<Tag, Route>>,
    next_id: AtomicU64,
    capacity: usize,
    unknown_tags: AtomicU64,
    dropped_full: AtomicU64,
    /// Woken whenever a subscription ends.
    unsubscribed: Notify,
}

impl Dispatcher {
    /// A dispatcher whose subscriptions buffer up to `capacity` messages each (at least 1).
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Dispatcher {
            routes: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            capacity: capacity.max(1),
            unknown_tags: AtomicU64::new(0),
            dropped_full: AtomicU64::new(0),
            unsubscribed: Notify::new(),
        })
    }

    /// True while a subscription to `tag` is live.
    pub fn has_subscriber(&self, tag: Tag) -> bool {
        lock(&self.routes)
            .get(&tag)
            .is_some_and(|route| !route.tx.is_closed())
    }

    /// Returns once no subscription to `tag` is live (at once if none is).
    pub async fn until_unsubscribed(&self, tag: Tag) {
        loop {
            // Registered before the check, so that an unsubscription between the two is
            // not missed.
            let notified = self.unsubscribed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if !self.has_subscriber(tag) {
                return;
            }
            notified.await;
        }
    }

    /// Subscribes to messages of type `M`. One subscription per tag; dropping it frees the tag.
    pub fn subscribe<M: Message>(self: &Arc<Self>) -> Result<Subscription<M>, SubscribeError> {
        let mut routes = lock(&self.routes);
        if let Some(existing) = routes.get(&M::TAG)
            && !existing.tx.is_closed()
        {
            return Err(SubscribeError::AlreadySubscribed {
                tag: M::TAG,
                existing: existing.type_name,
            });
        }
        let (tx, rx) = mpsc::channel(self.capacity);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let decode_failures = Arc::new(AtomicU64::new(0));
        routes.insert(
            M::TAG,
            Route {
                id,
                type_name: std::any::type_name::<M>(),
                tx,
            },
        );
        Ok(Subscription {
            rx,
            taken: VecDeque::new(),
            batch: Vec::new(),
            dispatcher: Arc::downgrade(self),
            tag: M::TAG,
            id,
            decode_failures,
            _message: PhantomData,
        })
    }

    /// Delivers a reliable message, waiting while the subscriber's queue is full.
    pub async fn deliver(&self, tag: Tag, inbound: Inbound) -> Routed {
        let Some(tx) = self.sender(tag) else {
            return self.unknown(tag, &inbound, 1);
        };
        match tx.send(inbound).await {
            Ok(()) => Routed::Delivered,
            Err(mpsc::error::SendError(inbound)) => self.unknown(tag, &inbound, 1),
        }
    }

    /// The most messages a subscription's queue holds, and so the most
    /// [`Dispatcher::deliver_all`] takes at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Delivers reliable messages of one tag, all of them or none: waits until the
    /// subscriber's queue has room for every one (at most [`Dispatcher::capacity`]), then
    /// hands them over in order. Cancelled while waiting, it hands over nothing. One wait and
    /// one wake-up for the whole batch, where [`Dispatcher::deliver`] takes one each.
    pub async fn deliver_all(&self, tag: Tag, batch: Vec<Inbound>) -> Routed {
        let Some(first) = batch.first() else {
            return Routed::Delivered;
        };
        let Some(tx) = self.sender(tag) else {
            return self.unknown(tag, first, batch.len());
        };
        match tx.reserve_many(batch.len()).await {
            Ok(permits) => {
                for (permit, inbound) in permits.zip(batch) {
                    permit.send(inbound);
                }
                Routed::Delivered
            }
            // Closed, or more than a queue holds (a caller's bug, reported the same way so
            // that nothing is taken as delivered).
            Err(_) => self.unknown(tag, first, batch.len()),
        }
    }

    /// Delivers without waiting (datagrams): a full queue drops the message.
    pub fn try_deliver(&self, tag: Tag, inbound: Inbound) -> Routed {
        let Some(tx) = self.sender(tag) else {
            return self.unknown(tag, &inbound, 1);
        };
        match tx.try_send(inbound) {
            Ok(()) => Routed::Delivered,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped_full.fetch_add(1, Ordering::Relaxed);
                Routed::Full
            }
            Err(mpsc::error::TrySendError::Closed(inbound)) => self.unknown(tag, &inbound, 1),
        }
    }

    /// Drops every route: subscriptions yield what they hold, then `None`.
    pub fn close(&self) {
        lock(&self.routes).clear();
        self.unsubscribed.notify_waiters();
    }

    /// The dispatcher's counters.
    pub fn stats(&self) -> DispatchStats {
        DispatchStats {
            unknown_tags: self.unknown_tags.load(Ordering::Relaxed),
            dropped_full: self.dropped_full.load(Ordering::Relaxed),
        }
    }

    fn sender(&self, tag: Tag) -> Option<mpsc::Sender<Inbound>> {
        lock(&self.routes).get(&tag).map(|r| r.tx.clone())
    }

    /// `count` messages of `tag`, the first of them `inbound`, found no subscriber.
    fn unknown(&self, tag: Tag, inbound: &Inbound, count: usize) -> Routed {
        let count = count as u64;
        let before = self.unknown_tags.fetch_add(count, Ordering::Relaxed);
        let after = before + count;
        // Logged at the first and at each power of two passed.
        if before == 0 || after.ilog2() > before.ilog2() {
            tracing::warn!(%tag, from = %inbound.from, count = after, "message with no subscriber dropped");
        }
        Routed::NoSubscriber
    }

    fn unsubscribe(&self, tag: Tag, id: u64) {
        let mut routes = lock(&self.routes);
        if routes.get(&tag).is_some_and(|r| r.id == id) {
            routes.remove(&tag);
        }
        drop(routes);
        self.unsubscribed.notify_waiters();
    }
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tags: Vec<Tag> = lock(&self.routes).keys().copied().collect();
        f.debug_struct("Dispatcher")
            .field("tags", &tags)
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// Received messages of one type, in arrival order per sender and priority. Dropping it
/// unsubscribes: later messages of its tag find no subscriber.
#[must_use = "dropping a subscription unsubscribes at once"]
pub struct Subscription<M> {
    rx: mpsc::Receiver<Inbound>,
    /// Messages taken from `rx` in one go and not yet returned, oldest first: one release
    /// of queue room per batch instead of one per message.
    taken: VecDeque<Inbound>,
    /// Where `rx` puts a batch before it joins `taken`.
    batch: Vec<Inbound>,
    dispatcher: Weak<Dispatcher>,
    tag: Tag,
    id: u64,
    decode_failures: Arc<AtomicU64>,
    _message: PhantomData<fn() -> M>,
}

impl<M: Message> Subscription<M> {
    /// The next message, or `None` once the messenger has shut down.
    ///
    /// A payload that does not decode as `M` is dropped with a warning and counted in
    /// [`Subscription::decode_failures`]: it is the sender's fault, and one bad message must
    /// not stop the ones behind it.
    pub async fn recv(&mut self) -> Option<Envelope<M>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next message if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<Envelope<M>> {
        loop {
            if let Some(inbound) = self.taken.pop_front() {
                if let Some(envelope) = self.decode(inbound) {
                    return Some(envelope);
                }
                continue;
            }
            // tokio's own `try_recv`, one message at a time: it registers no waker (a
            // task's waker from an earlier poll stays), and it waits out a send half
            // done rather than report a waiting message absent.
            while self.taken.len() < TAKE_AT_ONCE {
                match self.rx.try_recv() {
                    Ok(inbound) => self.taken.push_back(inbound),
                    Err(_) => break,
                }
            }
            if self.taken.is_empty() {
                return None;
            }
        }
    }

    /// Polls for the next message, as [`Subscription::recv`] waits for it (undecodable
    /// payloads dropped and counted the same way): the `futures_core::Stream`
    /// implementation, for combinators and `select` loops.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Envelope<M>>> {
        loop {
            if let Some(inbound) = self.taken.pop_front() {
                if let Some(envelope) = self.decode(inbound) {
                    return Poll::Ready(Some(envelope));
                }
                continue;
            }
            if !ready!(self.take_batch(cx)) {
                return Poll::Ready(None);
            }
        }
    }

    /// Moves up to [`TAKE_AT_ONCE`] waiting messages into `taken`; false once the
    /// messenger has shut down and nothing is left.
    fn take_batch(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let taken = ready!(self.rx.poll_recv_many(cx, &mut self.batch, TAKE_AT_ONCE));
        self.taken.extend(self.batch.drain(..));
        Poll::Ready(taken > 0)
    }

    /// Payloads that failed to decode as `M`.
    pub fn decode_failures(&self) -> u64 {
        self.decode_failures.load(Ordering::Relaxed)
    }

    fn decode(&self, inbound: Inbound) -> Option<Envelope<M>> {
        match postcard::from_bytes::<M>(&inbound.payload) {
            Ok(message) => Some(Envelope {
                from: inbound.from,
                delivery: inbound.delivery,
                message,
            }),
            Err(error) => {
                self.decode_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(tag = %M::TAG, from = %inbound.from, %error,
                    "payload does not decode as {}", std::any::type_name::<M>());
                None
            }
        }
    }
}

/// The messages as a stream (`futures_core::Stream`): `None` once the messenger has shut
/// down. `StreamExt` of `futures` or `tokio-stream` then maps, filters and merges them.
impl<M: Message> Stream for Subscription<M> {
    type Item = Envelope<M>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Envelope<M>>> {
        self.get_mut().poll_recv(cx)
    }
}

impl<M> Drop for Subscription<M> {
    fn drop(&mut self) {
        if let Some(dispatcher) = self.dispatcher.upgrade() {
            dispatcher.unsubscribe(self.tag, self.id);
        }
    }
}

impl<M> std::fmt::Debug for Subscription<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("message", &std::any::type_name::<M>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    struct Note;

    impl Message for Note {
        const TAG: Tag = Tag::from_name("dispatch-test/note");
    }

    /// A task that polls its subscription (nothing there: its waker is kept) and then
    /// drains without waiting must still be woken by the next message.
    #[tokio::test]
    async fn a_try_recv_after_a_pending_poll_keeps_the_task_woken() {
        let dispatcher = Dispatcher::new(4);
        let mut subscription = dispatcher.subscribe::<Note>().expect("subscribe");
        let waiter = tokio::spawn(async move {
            std::future::poll_fn(|cx| {
                if let Poll::Ready(message) = subscription.poll_recv(cx) {
                    return Poll::Ready(message.is_some());
                }
                if subscription.try_recv().is_some() {
                    return Poll::Ready(true);
                }
                Poll::Pending
            })
            .await
        });
        // The waiter has polled once and waits.
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "nothing was sent yet");
        let from = MemberId::new(
            "sender",
            "127.0.0.1:1".parse().expect("literal"),
            crate::member::MemberKind::Member,
        );
        let inbound = Inbound {
            from,
            delivery: Delivery::Datagram,
            payload: Bytes::from(postcard::to_allocvec(&Note).expect("encode")),
        };
        assert_eq!(
            dispatcher.deliver(Note::TAG, inbound).await,
            Routed::Delivered
        );
        let woken = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken by the message")
            .expect("the waiter ran");
        assert!(woken);
    }

    #[tokio::test]
    async fn dropping_the_subscription_wakes_whoever_waits_for_it_to_end() {
        let dispatcher = Dispatcher::new(4);
        // Nobody subscribed: returns at once.
        dispatcher.until_unsubscribed(Note::TAG).await;
        let subscription = dispatcher.subscribe::<Note>().expect("subscribe");
        assert!(dispatcher.has_subscriber(Note::TAG));
        let waiter = {
            let dispatcher = dispatcher.clone();
            tokio::spawn(async move { dispatcher.until_unsubscribed(Note::TAG).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "still subscribed");
        drop(subscription);
        assert!(!dispatcher.has_subscriber(Note::TAG));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken by the drop")
            .expect("the waiter ran");
    }
}
