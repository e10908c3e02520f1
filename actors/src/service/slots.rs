//! `max_concurrency`: at most `limit` requests in flight to a backend; the rest wait for a slot
//! in arrival order, holding their leases meanwhile (the service is busy, not idle).
//!
//! A free slot is taken and given back with one atomic operation each. tokio's semaphore, used
//! before, cloned an `Arc` for each owned permit and took its waiters' lock to give a permit
//! back, on every request: cache lines that the cores passed back and forth.
//!
//! Waiters line up on a tokio semaphore that holds no permits of its own. A slot given back
//! while someone waits is handed over through it, still counted busy, so the first in line gets
//! it and no newcomer can take it first. A slot handed over to a waiter that has just left stays
//! there: the next request that finds every slot busy takes it from the line at once.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Why no slot came.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NoSlot {
    /// As many requests as the queue holds wait already.
    Full,
    /// None came free before the deadline.
    TimedOut,
}

#[derive(Debug)]
pub(crate) struct Slots {
    limit: usize,
    /// Slots held, plus those handed over and not yet taken.
    busy: AtomicUsize,
    /// Requests waiting for a slot right now.
    waiting: AtomicUsize,
    /// The line; its permits are slots handed over.
    handover: Semaphore,
}

impl Slots {
    pub fn new(limit: usize) -> Slots {
        Slots {
            limit,
            busy: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            handover: Semaphore::new(0),
        }
    }

    /// Takes a slot if one is free and nobody waits for one.
    pub fn try_take(&self) -> bool {
        self.waiting.load(SeqCst) == 0 && self.take_free()
    }

    /// A hint: [`Slots::try_take`] would succeed now.
    pub fn has_free(&self) -> bool {
        self.waiting.load(SeqCst) == 0 && self.busy.load(SeqCst) < self.limit
    }

    /// Requests waiting for a slot right now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(SeqCst)
    }

    /// Waits in line for a slot until `deadline`, if fewer than `capacity` wait already. Safe to
    /// drop at any point: the slot of a waiter that leaves goes to the next one.
    pub async fn wait(&self, capacity: usize, deadline: Instant) -> Result<(), NoSlot> {
        if self.waiting.fetch_add(1, SeqCst) >= capacity {
            self.waiting.fetch_sub(1, SeqCst);
            return Err(NoSlot::Full);
        }
        let _in_line = InLine(&self.waiting);
        // One given back since the caller's try (see `give_back` for why this is enough).
        if self.take_free() {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, self.handover.acquire()).await {
            Ok(Ok(handed_over)) => {
                handed_over.forget();
                Ok(())
            }
            // The line is never closed.
            Ok(Err(_)) | Err(_) => Err(NoSlot::TimedOut),
        }
    }

    /// Gives a slot back: to the first in line, if anyone waits.
    ///
    /// The slot is freed first, then the line is looked at; a waiter joins the line first, then
    /// looks for a free slot. Each side's second step sees the other's first (all sequentially
    /// consistent), so a slot never stays free while a waiter sleeps.
    pub fn give_back(&self) {
        self.busy.fetch_sub(1, SeqCst);
        if self.waiting.load(SeqCst) > 0 && self.take_free() {
            self.handover.add_permits(1);
        }
    }

    fn take_free(&self) -> bool {
        let limit = self.limit;
        self.busy
            .fetch_update(SeqCst, SeqCst, |busy| (busy < limit).then_some(busy + 1))
            .is_ok()
    }
}

/// Counts a waiter out of the line when it leaves (served, timed out or dropped).
struct InLine<'a>(&'a AtomicUsize);

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn later(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test(start_paused = true)]
    async fn given_two_slots_when_three_take_then_the_third_waits_for_a_slot_given_back() {
        let slots = Arc::new(Slots::new(2));
        assert!(slots.try_take() && slots.try_take());
        assert!(!slots.try_take(), "both slots are held");
        let third = tokio::spawn({
            let slots = slots.clone();
            async move { slots.wait(10, later(5_000)).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(slots.waiting(), 1);
        slots.give_back();
        assert_eq!(third.await.unwrap(), Ok(()));
        assert_eq!(slots.waiting(), 0);
        assert!(!slots.try_take(), "the waiter holds the slot given back");
    }

    #[tokio::test(start_paused = true)]
    async fn given_waiters_when_slots_come_back_then_they_are_served_in_arrival_order() {
        let slots = Arc::new(Slots::new(1));
        assert!(slots.try_take());
        let (served, mut order) = tokio::sync::mpsc::unbounded_channel();
        for n in 0..3 {
            let (slots, served) = (slots.clone(), served.clone());
            tokio::spawn(async move {
                slots.wait(10, later(5_000)).await.unwrap();
                served.send(n).unwrap();
            });
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(!slots.try_take(), "a newcomer does not pass the line");
        for expected in 0..3 {
            slots.give_back();
            assert_eq!(order.recv().await, Some(expected));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn given_a_full_line_when_one_more_waits_then_it_is_refused_at_once() {
        let slots = Slots::new(1);
        assert!(slots.try_take());
        let first = slots.wait(1, later(5_000));
        tokio::pin!(first);
        assert!(futures_util::poll!(first.as_mut()).is_pending());
        assert_eq!(slots.wait(1, later(5_000)).await, Err(NoSlot::Full));
    }

    #[tokio::test(start_paused = true)]
    async fn given_a_waiter_that_timed_out_when_its_slot_comes_back_then_the_next_request_gets_it()
    {
        let slots = Slots::new(1);
        assert!(slots.try_take());
        assert_eq!(slots.wait(10, later(100)).await, Err(NoSlot::TimedOut));
        assert_eq!(slots.waiting(), 0, "the waiter left the line");
        slots.give_back();
        assert!(slots.try_take(), "the slot is free again");
        slots.give_back();
        assert!(slots.has_free());
    }

    #[tokio::test(start_paused = true)]
    async fn given_a_slot_handed_to_a_waiter_that_left_then_the_next_in_line_takes_it_at_once() {
        let slots = Arc::new(Slots::new(1));
        assert!(slots.try_take());
        let leaver = tokio::spawn({
            let slots = slots.clone();
            async move { slots.wait(10, later(5_000)).await }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        // The slot comes back while the waiter is still counted, and the waiter then leaves.
        slots.busy.fetch_sub(1, SeqCst);
        assert!(slots.take_free());
        leaver.abort();
        let _ = leaver.await;
        slots.handover.add_permits(1);
        assert!(
            !slots.try_take(),
            "the slot waits in the line, counted busy"
        );
        assert_eq!(slots.wait(10, later(100)).await, Ok(()));
    }
}
