//! The bounded FIFO of requests waiting for a service to become ready.
//!
//! ractor mailboxes are unbounded, so the bound lives here, in the service actor's state.
//! Overflow is refused at once (`queue-full`); waiters whose caller gave up (deadline passed or
//! connection dropped) are pruned before a refusal, so a slot is never held by a ghost.

use std::collections::VecDeque;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Lease;
use crate::error::ServiceError;

/// The answer a waiter gets: where to send its request, or why it cannot be served.
pub(crate) type Admission = Result<Lease, ServiceError>;

/// One request waiting for the service.
#[derive(Debug)]
pub(crate) struct Waiter {
    pub reply: oneshot::Sender<Admission>,
    pub deadline: Instant,
    pub enqueued_at: Instant,
    pub request_id: Option<String>,
}

impl Waiter {
    /// True when nobody is listening any more: the deadline passed or the caller went away.
    fn is_gone(&self, now: Instant) -> bool {
        self.deadline <= now || self.reply.is_closed()
    }
}

/// A bounded first-in, first-out queue of waiters.
#[derive(Debug)]
pub(crate) struct Queue {
    waiters: VecDeque<Waiter>,
    capacity: usize,
}

impl Queue {
    pub fn new(capacity: usize) -> Queue {
        Queue {
            waiters: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A reload changed the bound; waiters already queued beyond it stay.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
    }

    /// Adds a waiter at the back, returning its 1-based position, or gives it back when full.
    pub fn push(&mut self, waiter: Waiter, now: Instant) -> Result<usize, Waiter> {
        if self.waiters.len() >= self.capacity {
            self.prune(now);
        }
        if self.waiters.len() >= self.capacity {
            return Err(waiter);
        }
        self.waiters.push_back(waiter);
        Ok(self.waiters.len())
    }

    /// Drops the waiters nobody listens to any more; returns how many went.
    pub fn prune(&mut self, now: Instant) -> usize {
        let before = self.waiters.len();
        self.waiters.retain(|w| !w.is_gone(now));
        before - self.waiters.len()
    }

    /// Takes every waiter out, oldest first.
    pub fn drain(&mut self) -> impl Iterator<Item = Waiter> + '_ {
        self.waiters.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn waiter(deadline_in: Duration) -> (Waiter, oneshot::Receiver<Admission>) {
        let (reply, rx) = oneshot::channel();
        let now = Instant::now();
        let w = Waiter {
            reply,
            deadline: now + deadline_in,
            enqueued_at: now,
            request_id: None,
        };
        (w, rx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_the_next_waiter() {
        let mut queue = Queue::new(2);
        let (a, _ra) = waiter(Duration::from_secs(5));
        let (b, _rb) = waiter(Duration::from_secs(5));
        let (c, _rc) = waiter(Duration::from_secs(5));
        assert_eq!(queue.push(a, Instant::now()).ok(), Some(1));
        assert_eq!(queue.push(b, Instant::now()).ok(), Some(2));
        assert!(queue.push(c, Instant::now()).is_err());
        assert_eq!(queue.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_went_away_frees_its_slot() {
        let mut queue = Queue::new(1);
        let (a, ra) = waiter(Duration::from_secs(5));
        queue.push(a, Instant::now()).unwrap();
        drop(ra);
        let (b, _rb) = waiter(Duration::from_secs(5));
        assert_eq!(queue.push(b, Instant::now()).ok(), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_waiter_frees_its_slot() {
        let mut queue = Queue::new(1);
        let (a, _ra) = waiter(Duration::from_secs(1));
        queue.push(a, Instant::now()).unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        let (b, _rb) = waiter(Duration::from_secs(5));
        assert_eq!(queue.push(b, Instant::now()).ok(), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn drain_yields_waiters_in_arrival_order() {
        let mut queue = Queue::new(10);
        for i in 0..5 {
            let (mut w, _r) = waiter(Duration::from_secs(5));
            w.request_id = Some(i.to_string());
            queue.push(w, Instant::now()).unwrap();
        }
        let order: Vec<_> = queue.drain().map(|w| w.request_id.unwrap()).collect();
        assert_eq!(order, ["0", "1", "2", "3", "4"]);
        assert!(queue.is_empty());
    }
}
