//! A session's outbound queue: bounded by frames and by bytes, filled by publishers,
//! drained by the session's own task.
//!
//! Publishers never block and never touch the socket: a push is a short critical section
//! on an uncontended mutex (no `.await` can happen under it, so a std-style lock is the
//! right tool). When a push would pass either bound the outbox flips to *overflowed*,
//! frees what it held and wakes the session, which closes with 4008; the client then
//! recovers the missed publications from history. A slow client therefore costs the
//! publisher nothing beyond the failed push.
//!
//! The outbox is also how anything outside the session asks it to close (revocation, a
//! key removed on reload, shutdown): [`Outbox::request_close`] frees the queue and wakes
//! the session through the same `Notify`, so an idle session waits on one wake-up source
//! besides its socket and its timer.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;

use crate::history::Publication;
use crate::protocol::CloseCode;

/// The bounds of one outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Most queued frames.
    pub max_frames: usize,
    /// Most queued bytes (by [`Publication::cost`]).
    pub max_bytes: usize,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued for delivery.
    Queued,
    /// This push overflowed the queue; the session will close with 4008.
    Overflowed,
    /// The session is already overflowed or closing; nothing queued.
    Dropped,
}

/// Why the session must stop instead of writing what is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The queue overflowed: close with 4008.
    Overflowed,
    /// Something outside the session asked it to close with this code.
    Close(CloseCode),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Overflowed,
    Closing(CloseCode),
    Closed,
}

struct Inner {
    queue: VecDeque<Arc<Publication>>,
    bytes: usize,
    state: State,
}

/// A session's bounded outbound queue.
pub struct Outbox {
    inner: Mutex<Inner>,
    notify: Notify,
    limits: OutboxLimits,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = self.inner.lock();
        f.debug_struct("Outbox")
            .field("frames", &i.queue.len())
            .field("bytes", &i.bytes)
            .field("state", &i.state)
            .finish()
    }
}

impl Outbox {
    /// An empty outbox; allocates nothing for the queue until the first push.
    pub fn new(limits: OutboxLimits) -> Self {
        Outbox {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                bytes: 0,
                state: State::Open,
            }),
            notify: Notify::new(),
            limits,
        }
    }

    /// Queues a publication without blocking.
    pub fn push(&self, publication: Arc<Publication>) -> Push {
        let cost = publication.cost();
        let mut i = self.inner.lock();
        if i.state != State::Open {
            return Push::Dropped;
        }
        if i.queue.len() >= self.limits.max_frames || i.bytes + cost > self.limits.max_bytes {
            return self.overflow(i);
        }
        let was_empty = i.queue.is_empty();
        i.queue.push_back(publication);
        i.bytes += cost;
        drop(i);
        self.queued(was_empty)
    }

    /// Queues several publications at once, in order, with one lock and at most one
    /// wake-up (a batch relayed from a shared broker). `cost` is their summed
    /// [`Publication::cost`]. Bounded as [`Outbox::push`]: if the whole batch does not fit,
    /// the outbox overflows exactly as pushing the items one by one would have made it.
    pub fn push_many(&self, publications: &[Arc<Publication>], cost: usize) -> Push {
        if publications.is_empty() {
            return Push::Queued;
        }
        let mut i = self.inner.lock();
        if i.state != State::Open {
            return Push::Dropped;
        }
        if i.queue.len() + publications.len() > self.limits.max_frames
            || i.bytes + cost > self.limits.max_bytes
        {
            return self.overflow(i);
        }
        let was_empty = i.queue.is_empty();
        i.queue.extend(publications.iter().cloned());
        i.bytes += cost;
        drop(i);
        self.queued(was_empty)
    }

    /// Marks the outbox overflowed (its queue freed) and wakes the session to close 4008.
    fn overflow(&self, mut i: MutexGuard<'_, Inner>) -> Push {
        i.state = State::Overflowed;
        i.queue = VecDeque::new();
        i.bytes = 0;
        drop(i);
        self.notify.notify_one();
        Push::Overflowed
    }

    /// After a push: one wake-up per batch (the session drains everything queued at once),
    /// so only a push into an empty queue wakes it.
    fn queued(&self, was_empty: bool) -> Push {
        if was_empty {
            self.notify.notify_one();
        }
        Push::Queued
    }

    /// Moves everything queued into `out` (which should be empty; its allocation is
    /// reused as the outbox's next queue), unless the session must stop.
    pub fn drain_into(&self, out: &mut VecDeque<Arc<Publication>>) -> Result<(), Stop> {
        let mut i = self.inner.lock();
        match i.state {
            State::Closing(code) => return Err(Stop::Close(code)),
            State::Overflowed => return Err(Stop::Overflowed),
            State::Open | State::Closed => {}
        }
        std::mem::swap(&mut i.queue, out);
        i.bytes = 0;
        Ok(())
    }

    /// Asks the session to close with `code`: what is queued is dropped and the session
    /// woken. The first request wins, and it wins over an overflow (a revoked client must
    /// see 4003, not 4008). Returns whether this request was the one taken.
    pub fn request_close(&self, code: CloseCode) -> bool {
        let mut i = self.inner.lock();
        if matches!(i.state, State::Closing(_) | State::Closed) {
            return false;
        }
        i.state = State::Closing(code);
        i.queue = VecDeque::new();
        i.bytes = 0;
        drop(i);
        self.notify.notify_one();
        true
    }

    /// Waits until something was queued or the queue overflowed.
    pub async fn ready(&self) {
        self.notify.notified().await;
    }

    /// Marks the session as closing: later pushes are dropped and the memory is freed.
    pub fn close(&self) {
        let mut i = self.inner.lock();
        i.state = State::Closed;
        i.queue = VecDeque::new();
        i.bytes = 0;
    }

    /// Frames queued now.
    pub fn len(&self) -> usize {
        self.inner.lock().queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(offset: u64, size: usize) -> Arc<Publication> {
        Arc::new(Publication {
            channel_id: 1,
            offset,
            frame: vec![b'x'; size].into_boxed_slice(),
            accepted: tokio::time::Instant::now(),
        })
    }

    #[test]
    fn bounded_by_frames() {
        let o = Outbox::new(OutboxLimits {
            max_frames: 2,
            max_bytes: 1 << 20,
        });
        assert_eq!(o.push(p(1, 10)), Push::Queued);
        assert_eq!(o.push(p(2, 10)), Push::Queued);
        assert_eq!(o.push(p(3, 10)), Push::Overflowed);
        assert_eq!(o.push(p(4, 10)), Push::Dropped);
        let mut out = VecDeque::new();
        assert_eq!(o.drain_into(&mut out), Err(Stop::Overflowed));
        // A close request wins over the overflow, and the first request wins.
        assert!(o.request_close(CloseCode::TokenRevoked));
        assert!(!o.request_close(CloseCode::GoingAway));
        assert_eq!(
            o.drain_into(&mut out),
            Err(Stop::Close(CloseCode::TokenRevoked))
        );
    }

    #[tokio::test]
    async fn a_close_request_frees_the_queue_and_wakes_the_session() {
        let o = Outbox::new(OutboxLimits {
            max_frames: 10,
            max_bytes: 1 << 20,
        });
        o.push(p(1, 10));
        assert!(o.request_close(CloseCode::GoingAway));
        assert!(o.is_empty());
        assert_eq!(o.push(p(2, 10)), Push::Dropped);
        tokio::time::timeout(std::time::Duration::from_secs(5), o.ready())
            .await
            .unwrap();
        o.close();
        assert!(!o.request_close(CloseCode::TokenRevoked), "closed already");
    }

    #[test]
    fn bounded_by_bytes() {
        let o = Outbox::new(OutboxLimits {
            max_frames: 100,
            max_bytes: 300,
        });
        assert_eq!(o.push(p(1, 100)), Push::Queued);
        assert_eq!(o.push(p(2, 100)), Push::Overflowed);
    }

    #[test]
    fn drain_takes_everything_in_order_and_resets_the_byte_count() {
        let o = Outbox::new(OutboxLimits {
            max_frames: 3,
            max_bytes: 1 << 20,
        });
        for i in 1..=3 {
            o.push(p(i, 10));
        }
        let mut out = VecDeque::new();
        o.drain_into(&mut out).unwrap();
        assert_eq!(
            out.iter().map(|p| p.offset).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(o.is_empty());
        assert_eq!(o.push(p(4, 10)), Push::Queued);
        o.close();
        assert_eq!(o.push(p(5, 10)), Push::Dropped);
        assert!(o.is_empty());
    }

    #[test]
    fn a_batch_is_queued_whole_in_order_or_overflows_like_its_items_one_by_one() {
        let o = Outbox::new(OutboxLimits {
            max_frames: 5,
            max_bytes: 1 << 20,
        });
        let batch: Vec<_> = (1..=3).map(|n| p(n, 10)).collect();
        let cost = batch.iter().map(|p| p.cost()).sum();
        assert_eq!(o.push_many(&batch, cost), Push::Queued);
        assert_eq!(o.push_many(&[], 0), Push::Queued);
        assert_eq!(o.push(p(4, 10)), Push::Queued);
        let mut out = VecDeque::new();
        o.drain_into(&mut out).unwrap();
        assert_eq!(
            out.iter().map(|p| p.offset).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        // 3 + 3 frames > 5: overflowed, as the 6th single push would have; then dropped.
        out.clear();
        assert_eq!(o.push_many(&batch, cost), Push::Queued);
        assert_eq!(o.push_many(&batch, cost), Push::Overflowed);
        assert_eq!(o.push_many(&batch, cost), Push::Dropped);
        assert!(o.is_empty());
        assert_eq!(o.drain_into(&mut out), Err(Stop::Overflowed));
        // By bytes too.
        let small = Outbox::new(OutboxLimits {
            max_frames: 100,
            max_bytes: 200,
        });
        assert_eq!(small.push_many(&batch, cost), Push::Overflowed);
    }

    #[tokio::test]
    async fn wakes_the_session_once_per_batch() {
        let o = Arc::new(Outbox::new(OutboxLimits {
            max_frames: 10,
            max_bytes: 1 << 20,
        }));
        o.push(p(1, 1));
        o.push(p(2, 1));
        // The stored permit from the first push makes this return at once.
        tokio::time::timeout(std::time::Duration::from_secs(5), o.ready())
            .await
            .unwrap();
        let mut out = VecDeque::new();
        o.drain_into(&mut out).unwrap();
        assert_eq!(out.len(), 2);
    }
}
