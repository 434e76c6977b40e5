//! [`EventStream`]: a member's [`MembershipEvent`]s as a `futures_core::Stream`, for
//! combinators and `select` loops ([`Member::events`](super::Member::events) gives the
//! tokio broadcast receiver itself).
//!
//! ```text
//! broadcast::Receiver ─► one boxed recv future at a time (it owns the receiver and hands
//!   it back with the result) ─► Ok(event) | Err(MissedEvents(n)) | end of stream
//! ```
//!
//! A broadcast receiver has no poll method, so each item costs one small allocation;
//! membership events are rare (views, suspicions, reachability), so that is cheap.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_core::Stream;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::gms::MembershipEvent;

type Received = (
    Result<MembershipEvent, RecvError>,
    broadcast::Receiver<MembershipEvent>,
);

/// A member's events from the moment it was made, as a stream. An item is an event, or
/// [`MissedEvents`] when this stream fell so far behind that older events were dropped
/// for it (it goes on with the oldest one still held); the stream ends once no event can
/// come any more (the member stopped and its last handle was dropped).
#[must_use = "a stream does nothing unless polled"]
pub struct EventStream {
    next: Option<Pin<Box<dyn Future<Output = Received> + Send>>>,
}

/// Events an [`EventStream`] missed because it fell behind by more than the member's event
/// buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0} membership events were missed: the stream fell behind")]
pub struct MissedEvents(pub u64);

impl EventStream {
    pub(super) fn new(receiver: broadcast::Receiver<MembershipEvent>) -> EventStream {
        EventStream {
            next: Some(receive(receiver)),
        }
    }
}

fn receive(
    mut receiver: broadcast::Receiver<MembershipEvent>,
) -> Pin<Box<dyn Future<Output = Received> + Send>> {
    Box::pin(async move {
        let result = receiver.recv().await;
        (result, receiver)
    })
}

impl Stream for EventStream {
    type Item = Result<MembershipEvent, MissedEvents>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(next) = self.next.as_mut() else {
            return Poll::Ready(None);
        };
        let (result, receiver) = ready!(next.as_mut().poll(cx));
        let item = match result {
            Ok(event) => Ok(event),
            Err(RecvError::Lagged(missed)) => Err(MissedEvents(missed)),
            Err(RecvError::Closed) => {
                self.next = None;
                return Poll::Ready(None);
            }
        };
        self.next = Some(receive(receiver));
        Poll::Ready(Some(item))
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("ended", &self.next.is_none())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next(stream: &mut EventStream) -> Option<Result<MembershipEvent, MissedEvents>> {
        std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
    }

    /// A stream that fell behind says how many events it missed, goes on with those still
    /// held, and ends when the sender is gone.
    #[tokio::test]
    async fn a_stream_that_fell_behind_says_so_goes_on_and_ends_with_the_member() {
        let (sender, receiver) = broadcast::channel(2);
        let mut stream = EventStream::new(receiver);
        for _ in 0..5 {
            sender.send(MembershipEvent::Left).expect("a receiver");
        }
        assert_eq!(next(&mut stream).await, Some(Err(MissedEvents(3))));
        assert_eq!(next(&mut stream).await, Some(Ok(MembershipEvent::Left)));
        assert_eq!(next(&mut stream).await, Some(Ok(MembershipEvent::Left)));
        drop(sender);
        assert_eq!(next(&mut stream).await, None);
        assert_eq!(next(&mut stream).await, None, "and stays ended");
    }
}
