//! Messages a member sends itself: delivered through its own subscriptions, in order per
//! priority, with the same byte bound and backlog rule as a remote destination, whatever
//! carrier the messenger runs on.
//!
//! ```text
//! Messenger::send(to = local) ─► LocalDelivery::push (byte-bounded lane per priority) ─► notify
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

/// Queued messages of one priority.
#[derive(Default)]
struct Lane {
    queue: VecDeque<(Tag, Bytes)>,
    /// Bytes queued and being delivered.
    bytes: usize,
    /// True while refusals have not been followed by room again.
    backlogged: bool,
    /// Set at shutdown: nothing more is taken.
    closed: bool,
}

/// The four lanes and their delivery tasks.
pub(crate) struct LocalDelivery {
    lanes: [Mutex<Lane>; 4],
    /// Wakes a lane's task when something was queued.
    queued: [Notify; 4],
    /// Woken whenever a lane ran empty.
    drained: Notify,
    max_bytes: usize,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Why a message to the local member was refused.
pub(crate) enum LocalRefused {
    /// Shut down.
    Closed,
    /// The priority's lane is over its byte bound.
    Backlogged {
        queued_bytes: usize,
        first_of_streak: bool,
    },
}

impl LocalDelivery {
    /// Lanes bounded by `max_bytes` each, delivered as `local` to `dispatcher`'s
    /// subscriptions. Must be called within a Tokio runtime.
    pub(crate) fn start(
        local: MemberId,
        dispatcher: Arc<Dispatcher>,
        max_bytes: usize,
    ) -> Arc<LocalDelivery> {
        let this = Arc::new(LocalDelivery {
            lanes: Default::default(),
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
        let mut lane = lock(&self.lanes[priority.index()]);
        if lane.closed {
            return Err(LocalRefused::Closed);
        }
        // One message always fits an empty lane, as on a remote destination's queue.
        if lane.bytes > 0 && lane.bytes + payload.len() > self.max_bytes {
            let first_of_streak = !std::mem::replace(&mut lane.backlogged, true);
            return Err(LocalRefused::Backlogged {
                queued_bytes: lane.bytes,
                first_of_streak,
            });
        }
        lane.backlogged = false;
        lane.bytes += payload.len();
        lane.queue.push_back((tag, payload));
        drop(lane);
        self.queued[priority.index()].notify_one();
        Ok(())
    }

    /// Takes nothing more and waits, at most `limit`, for what is queued to be delivered;
    /// then stops the tasks.
    pub(crate) async fn shutdown(&self, limit: Duration) {
        for lane in &self.lanes {
            lock(lane).closed = true;
        }
        let drained = async {
            loop {
                let notified = self.drained.notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                if self.lanes.iter().all(|lane| lock(lane).bytes == 0) {
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

    /// Stops the tasks at once; what is queued is dropped.
    pub(crate) fn abort(&self) {
        for lane in &self.lanes {
            let mut lane = lock(lane);
            lane.closed = true;
            lane.queue.clear();
        }
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
        let next = {
            let notified = local.queued[index].notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let next = lock(&local.lanes[index]).queue.pop_front();
            match next {
                Some(next) => next,
                None => {
                    notified.await;
                    continue;
                }
            }
        };
        let (tag, payload) = next;
        let size = payload.len();
        let inbound = Inbound {
            from: member.clone(),
            delivery: Delivery::Reliable(priority),
            payload,
        };
        dispatcher.deliver(tag, inbound).await;
        let empty = {
            let mut lane = lock(&local.lanes[index]);
            lane.bytes -= size;
            lane.bytes == 0
        };
        if empty {
            local.drained.notify_waiters();
        }
    }
}
