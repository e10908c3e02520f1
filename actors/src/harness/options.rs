//! `SimOptions`: how a simulated backend behaves — where it listens, how slowly it starts, how it
//! fails. Public fields with stated defaults, plus chainable setters for tests
//! (`SimOptions::named("a").startup_delay(..).crash_after(3)`).

use std::time::Duration;

/// Behaviour of one simulated backend. `Default` is a healthy, instant backend on an ephemeral
/// port of 127.0.0.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimOptions {
    /// Echoed in every echo response and in `/_sim/stats`, so tests can tell instances apart.
    /// Defaults to `"sim"`.
    pub name: String,
    /// Interface to bind. Defaults to `127.0.0.1`.
    pub host: String,
    /// Port to bind; 0 picks an ephemeral port. Defaults to 0.
    pub port: u16,
    /// Sleep this long before binding the port (a slow cold start). Defaults to zero.
    pub startup_delay: Duration,
    /// Path of the readiness probe, answering 200 `{"status":"ok"}` once ready. Defaults to
    /// `/health`.
    pub ready_path: String,
    /// After binding, the readiness path answers 503 for this long (listening, not ready yet).
    /// Defaults to zero.
    pub ready_after: Duration,
    /// After the start-up delay, fail without ever listening. Defaults to `false`.
    pub fail_to_start: bool,
    /// Stop abruptly right after answering this many requests (readiness probes and `/_sim/*`
    /// excluded). `None` (the default) never crashes.
    pub crash_after: Option<u64>,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            name: "sim".to_owned(),
            host: "127.0.0.1".to_owned(),
            port: 0,
            startup_delay: Duration::ZERO,
            ready_path: "/health".to_owned(),
            ready_after: Duration::ZERO,
            fail_to_start: false,
            crash_after: None,
        }
    }
}

impl SimOptions {
    /// Defaults with the given name.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Sets [`SimOptions::host`].
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// Sets [`SimOptions::port`].
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Sets [`SimOptions::startup_delay`].
    pub fn startup_delay(mut self, delay: Duration) -> Self {
        self.startup_delay = delay;
        self
    }

    /// Sets [`SimOptions::ready_path`].
    pub fn ready_path(mut self, path: impl Into<String>) -> Self {
        self.ready_path = path.into();
        self
    }

    /// Sets [`SimOptions::ready_after`].
    pub fn ready_after(mut self, after: Duration) -> Self {
        self.ready_after = after;
        self
    }

    /// Sets [`SimOptions::fail_to_start`].
    pub fn fail_to_start(mut self, fail: bool) -> Self {
        self.fail_to_start = fail;
        self
    }

    /// Sets [`SimOptions::crash_after`].
    pub fn crash_after(mut self, requests: u64) -> Self {
        self.crash_after = Some(requests);
        self
    }
}
