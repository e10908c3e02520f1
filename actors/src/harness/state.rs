//! What a running simulated backend remembers: request counter, arrival log, readiness deadline
//! and the crash / halt signals. Shared by the routes and the accept loop; holds no I/O.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use chrono::{DateTime, Utc};
use hyper::body::{Frame, SizeHint};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::SimOptions;

/// How many arrivals `/_sim/stats` keeps.
pub(crate) const LOG_CAPACITY: usize = 1_000;

/// One counted request, as reported by `/_sim/stats`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LogEntry {
    pub seq: u64,
    pub method: String,
    pub path: String,
    /// The `x-request-id` header, if the request carried one.
    pub request_id: Option<String>,
}

/// The arrival number of a counted request (1-based), put in the request's extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seq(pub u64);

pub(crate) struct SimState {
    pub name: String,
    /// Always starts with `/`.
    pub ready_path: String,
    /// The readiness path answers 503 until this instant.
    pub ready_at: Instant,
    pub started_at: DateTime<Utc>,
    pub pid: u32,
    crash_after: Option<u64>,
    requests: AtomicU64,
    /// Written only under this lock together with the counter, so log order equals `seq` order.
    log: Mutex<VecDeque<LogEntry>>,
    /// Cancelled once the `crash_after`-th response has been handed to the connection.
    pub crash: CancellationToken,
    /// Cancelled when the server stops (shutdown or crash): long-lived streams and sockets end.
    pub halt: CancellationToken,
}

impl std::fmt::Debug for SimState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimState")
            .field("name", &self.name)
            .field("requests", &self.requests())
            .finish_non_exhaustive()
    }
}

impl SimState {
    pub fn new(opts: &SimOptions) -> Self {
        let ready_path = if opts.ready_path.starts_with('/') {
            opts.ready_path.clone()
        } else {
            format!("/{}", opts.ready_path)
        };
        Self {
            name: opts.name.clone(),
            ready_path,
            ready_at: Instant::now() + opts.ready_after,
            started_at: Utc::now(),
            pid: std::process::id(),
            crash_after: opts.crash_after,
            requests: AtomicU64::new(0),
            log: Mutex::new(VecDeque::with_capacity(LOG_CAPACITY)),
            crash: CancellationToken::new(),
            halt: CancellationToken::new(),
        }
    }

    /// Counts an arriving request and logs it. `None` once `crash_after` requests were admitted:
    /// the backend is crashing and must not answer any more.
    pub fn admit(&self, method: &str, path: &str, request_id: Option<String>) -> Option<Seq> {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let seq = self.requests.load(Ordering::Acquire) + 1;
        if self.crash_after.is_some_and(|limit| seq > limit) {
            return None;
        }
        self.requests.store(seq, Ordering::Release);
        if log.len() == LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(LogEntry {
            seq,
            method: method.to_owned(),
            path: path.to_owned(),
            request_id,
        });
        Some(Seq(seq))
    }

    /// Requests counted so far (readiness probes and `/_sim/*` excluded).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Acquire)
    }

    /// The last [`LOG_CAPACITY`] counted requests, oldest first.
    pub fn log(&self) -> Vec<LogEntry> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.iter().cloned().collect()
    }

    /// Whether answering request `seq` is the last thing this backend does.
    pub fn is_last(&self, seq: Seq) -> bool {
        self.crash_after == Some(seq.0)
    }
}

/// A response body that fires the crash signal when the connection is done with it, so the
/// `crash_after`-th response is fully handed over before the server goes down.
pub(crate) struct CrashAfterBody {
    inner: Body,
    crash: CancellationToken,
}

impl CrashAfterBody {
    pub fn wrap(inner: Body, crash: CancellationToken) -> Body {
        Body::new(Self { inner, crash })
    }
}

impl Drop for CrashAfterBody {
    fn drop(&mut self) {
        self.crash.cancel();
    }
}

impl hyper::body::Body for CrashAfterBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
