//! A flag one task waits on, raised from anywhere: a connection's "close now" and "stop after
//! this request".
//!
//! A connection's task looks at these on every wake-up, several times per request. A
//! `CancellationToken` takes a lock to say whether it is cancelled, and its future takes the
//! lock of a `Notify` each time it is polled; here a look is an atomic load, and waiting
//! registers the task's waker without a lock. Only one task may wait: each connection's own.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::task::Poll;

use futures_util::task::AtomicWaker;

#[derive(Default, Debug)]
pub(super) struct Signal {
    raised: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    /// Raises the flag and wakes the task waiting on it, if any.
    pub fn raise(&self) {
        self.raised.store(true, SeqCst);
        self.waker.wake();
    }

    pub fn is_raised(&self) -> bool {
        self.raised.load(SeqCst)
    }

    /// Resolves once the flag is raised. Only the one task that owns what the flag is about may
    /// wait: a second task's wait would take the first's place.
    pub async fn raised(&self) {
        std::future::poll_fn(|cx| {
            if self.is_raised() {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // Raised between the look and the registration: `raise` woke the waker before.
            if self.is_raised() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn given_a_task_waiting_when_another_thread_raises_the_flag_then_it_wakes() {
        let signal = Arc::new(Signal::default());
        let waiting = tokio::spawn({
            let signal = signal.clone();
            async move { signal.raised().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        let raiser = signal.clone();
        std::thread::spawn(move || raiser.raise()).join().unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting task woke")
            .unwrap();
        assert!(signal.is_raised());
    }

    #[tokio::test]
    async fn a_flag_raised_before_the_wait_resolves_it_at_once() {
        let signal = Signal::default();
        signal.raise();
        signal.raised().await;
    }
}
