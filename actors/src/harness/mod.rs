//! Simulated backends: a real HTTP server (axum on a real socket) that stands in for an LLM server
//! or any HTTP service in tests, demos and `hestia sim`. It can start slowly, refuse to start,
//! answer 503 before it is ready and crash after N requests; it echoes requests, streams SSE and
//! chunked bodies, echoes WebSocket messages and hashes uploads, and records what it saw.
//!
//! Fixed routes live in [`routes`]; everything else is echo. [`spawn`] runs one in-process for tests,
//! [`run`] is the body of the `hestia sim` process.
//!
//! A test double, so it is built only with the `sim` feature (the `hestia` binary enables it).

mod openai;
mod options;
mod routes;
mod server;
mod state;

use std::time::Duration;

pub use options::SimOptions;
pub use server::{SimHandle, run, spawn};

/// Why a simulated backend could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// `fail_to_start` is set: the backend gave up after its start-up delay, on purpose.
    #[error("simulated backend `{name}` failed to start after {after:?} (fail_to_start is set)")]
    StartFailure { name: String, after: Duration },
    /// The port could not be bound (in use, bad host, no permission).
    #[error("simulated backend `{name}` cannot listen on {addr}: {source}")]
    Bind {
        name: String,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The bound socket's address could not be read back.
    #[error("simulated backend `{name}` cannot read its own listening address: {source}")]
    LocalAddr {
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// The `hestia-sim listening on ...` line could not be written to stdout.
    #[error("simulated backend `{name}` cannot announce its address on stdout: {source}")]
    Announce {
        name: String,
        #[source]
        source: std::io::Error,
    },
}
