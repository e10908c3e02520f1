//! The shutdown signal: SIGINT or SIGTERM, whichever comes first.
//!
//! The handlers are installed when `signal()` is called, not when its future is first polled,
//! so a signal sent the moment Hestia says it is listening is never missed. `serve` takes its
//! shutdown as a parameter (any future), so tests pass a oneshot instead.

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal as unix_signal};

/// Installs SIGINT and SIGTERM handlers; the future resolves on the first of them.
pub fn signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut terminate = unix_signal(SignalKind::terminate())?;
    let mut interrupt = unix_signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
