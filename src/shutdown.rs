//! The shutdown signal: SIGINT or SIGTERM, whichever comes first — and a second one to hurry.
//!
//! The handlers are installed when `signal()` / `signals()` is called, not when a future is first
//! polled, so a signal sent the moment Hestia says it is listening is never missed. `serve` takes
//! its shutdown as a [`Shutdown`] (any two futures), so tests pass oneshots instead.

use std::future::Future;
use std::pin::Pin;

use tokio::signal::unix::{SignalKind, signal as unix_signal};
use tokio::sync::watch;

type Signalled = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// When to shut down: `graceful` begins an orderly shutdown (in-flight requests get the grace
/// period); `now`, which only matters after it, ends at once.
pub struct Shutdown {
    pub graceful: Signalled,
    pub now: Signalled,
}

impl Shutdown {
    /// A graceful shutdown when `graceful` resolves; never hurried.
    pub fn graceful(graceful: impl Future<Output = ()> + Send + 'static) -> Shutdown {
        Shutdown {
            graceful: Box::pin(graceful),
            now: Box::pin(std::future::pending()),
        }
    }

    /// The first SIGINT/SIGTERM shuts down gracefully; the second ends at once.
    pub fn signals() -> std::io::Result<Shutdown> {
        let mut terminate = unix_signal(SignalKind::terminate())?;
        let mut interrupt = unix_signal(SignalKind::interrupt())?;
        let (count, counted) = watch::channel(0u32);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
                count.send_modify(|n| *n += 1);
            }
        });
        let at_least = |n: u32| {
            let mut counted = counted.clone();
            async move {
                // An error means the counting task ended: no more signals will come.
                if counted.wait_for(|c| *c >= n).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        Ok(Shutdown {
            graceful: Box::pin(at_least(1)),
            now: Box::pin(at_least(2)),
        })
    }
}

/// Installs SIGINT and SIGTERM handlers; the future resolves on the first of them (the helper
/// processes, `sim` and `fake-semaphore`, have nothing to hurry).
pub fn signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(Shutdown::signals()?.graceful)
}
