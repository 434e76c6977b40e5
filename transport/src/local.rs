//! Messages a member sends itself: delivered through its own subscriptions, in order per
//! priority, under one byte bound for all four priorities (as a remote destination's queue
//! is), with a full bound reported once per streak, whatever carrier the messenger runs on.
//!
//! ```text
//! Messenger::send(to = local) ─► LocalDelivery::push (one byte account, a lane per priority) ─► notify
//! one task per priority ─► Dispatcher::deliver (waits for a slow subscriber) ─► bytes released
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::dispatch::{Dispatcher, Inbound};
use crate::member::MemberId;
use crate::message::{Delivery, Tag};
use crate::priority::Priority;
use crate::sync::lock;

/// Every lane, and the byte account they share.
#[derive(Default)]
struct Lanes {
    queues: [VecDeque<(Tag, Bytes)>; 4],
    /// Payload bytes queued and being delivered, over every priority.
    bytes: usize,
    /// True from a refusal until everything queued was delivered (one event per streak).
    backlogged: bool,
    /// Set at shutdown: nothing more is taken.
    closed: bool,
}

/// The lanes and their delivery tasks.
pub(crate) struct LocalDelivery {
    lanes: Mutex<Lanes>,
    /// Wakes a lane's task when something was queued on it.
    queued: [Notify; 4],
    /// Woken whenever the lanes ran empty, or were dropped.
    drained: Notify,
    max_bytes: usize,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Why a message to the local member was refused.
pub(crate) enum LocalRefused {
    /// Shut down.
    Closed,
    /// The lanes hold their byte bound.
    Backlogged {
        queued_bytes: usize,
        first_of_streak: bool,
    },
}

impl LocalDelivery {
    /// Lanes holding up to `max_bytes` together, delivered as `local` to `dispatcher`'s
    /// subscriptions. Must be called within a Tokio runtime.
    pub(crate) fn start(
        local: MemberId,
        dispatcher: Arc<Dispatcher>,
        max_bytes: usize,
    ) -> Arc<LocalDelivery> {
        let this = Arc::new(LocalDelivery {
            lanes: Mutex::new(Lanes::default()),
            queued: Default::default(),
            drained: Notify::new(),
            max_bytes,
            tasks: Mutex::new(Vec::new()),
        });
        let tasks = Priority::ALL
            .into_iter()
            .map(|priority| {
                tokio::spawn(deliver(
                    this.clone(),
                    local.clone(),
                    dispatcher.clone(),
                    priority,
                ))
            })
            .collect();
        *lock(&this.tasks) = tasks;
        this
    }

    /// Queues a message for the local member's subscriptions.
    pub(crate) fn push(
        &self,
        priority: Priority,
        tag: Tag,
        payload: Bytes,
    ) -> Result<(), LocalRefused> {
        let mut lanes = lock(&self.lanes);
        if lanes.closed {
            return Err(LocalRefused::Closed);
        }
        // One message always fits empty lanes, as on a remote destination's queue.
        if lanes.bytes > 0 && lanes.bytes + payload.len() > self.max_bytes {
            let first_of_streak = !std::mem::replace(&mut lanes.backlogged, true);
            return Err(LocalRefused::Backlogged {
                queued_bytes: lanes.bytes,
                first_of_streak,
            });
        }
        lanes.bytes += payload.len();
        lanes.queues[priority.index()].push_back((tag, payload));
        drop(lanes);
        self.queued[priority.index()].notify_one();
        Ok(())
    }

    /// Takes nothing more and waits, at most `limit`, for what is queued to be delivered;
    /// then stops the tasks.
    pub(crate) async fn shutdown(&self, limit: Duration) {
        lock(&self.lanes).closed = true;
        let drained = async {
            loop {
                let notified = self.drained.notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                if lock(&self.lanes).bytes == 0 {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(limit, drained).await.is_err() {
            tracing::debug!("messages to this member itself still undelivered at shutdown");
        }
        self.abort();
    }

    /// Stops the tasks at once; what is queued is dropped (and a shutdown waiting for it
    /// to drain stops waiting).
    pub(crate) fn abort(&self) {
        {
            let mut lanes = lock(&self.lanes);
            lanes.closed = true;
            lanes.queues.iter_mut().for_each(VecDeque::clear);
            lanes.bytes = 0;
        }
        self.drained.notify_waiters();
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

/// Delivers one priority's messages in order, waiting for a slow subscriber.
async fn deliver(
    local: Arc<LocalDelivery>,
    member: MemberId,
    dispatcher: Arc<Dispatcher>,
    priority: Priority,
) {
    let index = priority.index();
    loop {
        let notified = local.queued[index].notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        let next = lock(&local.lanes).queues[index].pop_front();
        let Some((tag, payload)) = next else {
            notified.await;
            continue;
        };
        let size = payload.len();
        let inbound = Inbound {
            from: member.clone(),
            delivery: Delivery::Reliable(priority),
            payload,
        };
        dispatcher.deliver(tag, inbound).await;
        let empty = {
            let mut lanes = lock(&local.lanes);
            lanes.bytes = lanes.bytes.saturating_sub(size);
            if lanes.bytes == 0 {
                lanes.backlogged = false;
            }
            lanes.bytes == 0
        };
        if empty {
            local.drained.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::member::MemberKind;
    use crate::message::Message;

    #[derive(Debug, Serialize, Deserialize)]
    struct Note(u8);

    impl Message for Note {
        const TAG: Tag = Tag::from_name("local-test/note");
    }

    fn refusal(pushed: Result<(), LocalRefused>) -> Option<bool> {
        match pushed {
            Ok(()) => None,
            Err(LocalRefused::Backlogged {
                first_of_streak, ..
            }) => Some(first_of_streak),
            Err(LocalRefused::Closed) => panic!("closed"),
        }
    }

    /// The four priorities share one byte bound, a full bound is reported once until
    /// everything queued was delivered, and each priority keeps its order.
    #[tokio::test]
    async fn the_priorities_share_one_bound_and_a_streak_is_reported_once() {
        let dispatcher = Dispatcher::new(1);
        let mut inbox = dispatcher.subscribe::<Note>().expect("subscribe");
        let me = MemberId::new(
            "me",
            "127.0.0.1:1".parse().expect("literal"),
            MemberKind::Member,
        );
        let local = LocalDelivery::start(me, dispatcher, 3);
        let note = |n: u8| crate::wire::encode_payload(&Note(n)).expect("encodes");
        assert_eq!(note(0).len(), 1, "one byte each");
        // Three one-byte messages fill the bound of three: bytes count until delivered.
        for (priority, n) in [
            (Priority::High, 0),
            (Priority::Normal, 1),
            (Priority::Bulk, 2),
        ] {
            assert_eq!(refusal(local.push(priority, Note::TAG, note(n))), None);
        }
        assert_eq!(
            refusal(local.push(Priority::High, Note::TAG, note(3))),
            Some(true),
            "the bound holds over every priority, first refusal of the streak"
        );
        assert_eq!(
            refusal(local.push(Priority::Normal, Note::TAG, note(4))),
            Some(false),
            "the same streak"
        );
        let mut seen = Vec::new();
        while seen.len() < 3 {
            seen.push(inbox.recv().await.expect("open").message.0);
        }
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2]);
        // Everything delivered: the streak is over.
        tokio::time::timeout(Duration::from_secs(5), async {
            while lock(&local.lanes).bytes > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the lanes drain");
        for n in 5..8 {
            assert_eq!(
                refusal(local.push(Priority::High, Note::TAG, note(n))),
                None
            );
        }
        assert_eq!(
            refusal(local.push(Priority::High, Note::TAG, note(8))),
            Some(true),
            "a new streak is reported again"
        );
        let mut high = Vec::new();
        while high.len() < 3 {
            high.push(inbox.recv().await.expect("open").message.0);
        }
        assert_eq!(high, [5, 6, 7], "in order");
        local.abort();
    }
}
