//! What Hestia counts, per service: a [`ServiceMetrics`] of atomics (read by `/v1/metrics`)
//! updated together with the process-wide `metrics` recorder (rendered by `/metrics`), so both
//! show the same numbers.
//!
//! Each service's `ServiceMetrics` hangs off its shared state: engine events are counted from
//! their typed [`Detail`] as they are recorded, and the proxy counts each answered request
//! through the service's handle — no lookup by name on the request path. The recorder's handles
//! are registered once per service and kept. [`METRICS`] lists every metric.
//!
//! Requests are tallied per core ([`PerCore`]): a counter or histogram that both cores wrote on
//! every request would move between their caches each time. A core's answer statuses and
//! durations reach the recorder in batches, and all of them before `/metrics` is rendered
//! ([`ServiceMetrics::flush`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use metrics::{Counter, Histogram};
use serde::Serialize;

use crate::events::Detail;
use crate::per_core::PerCore;

pub const REQUESTS_TOTAL: &str = "hestia_requests_total";
pub const REQUEST_DURATION: &str = "hestia_request_duration_seconds";
pub const QUEUE_DEPTH: &str = "hestia_queue_depth";
pub const IN_FLIGHT: &str = "hestia_in_flight";
pub const SERVICE_STATE: &str = "hestia_service_state";
pub const QUEUE_WAIT: &str = "hestia_queue_wait_seconds";
pub const COLD_STARTS_TOTAL: &str = "hestia_cold_starts_total";
pub const COLD_START_DURATION: &str = "hestia_cold_start_duration_seconds";
pub const START_ATTEMPTS_TOTAL: &str = "hestia_start_attempts_total";
pub const START_RETRIES_TOTAL: &str = "hestia_start_retries_total";
pub const START_FALLBACKS_TOTAL: &str = "hestia_start_fallbacks_total";
pub const START_FAILURES_TOTAL: &str = "hestia_start_failures_total";
pub const IDLE_SHUTDOWNS_TOTAL: &str = "hestia_idle_shutdowns_total";
pub const QUEUE_REJECTED_TOTAL: &str = "hestia_queue_rejected_total";
pub const QUEUE_TIMEOUTS_TOTAL: &str = "hestia_queue_timeouts_total";
pub const STRATEGY_DECISIONS_TOTAL: &str = "hestia_strategy_decisions_total";

/// The label every metric carries.
pub const SERVICE: &str = "service";

/// The kind of a metric, for the exporter's `# TYPE` line and bucket set-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric Hestia exposes: its name, kind, help text and (histograms) bucket upper bounds.
#[derive(Debug, Clone, Copy)]
pub struct MetricInfo {
    pub name: &'static str,
    pub kind: MetricKind,
    pub help: &'static str,
    /// Bucket upper bounds in seconds; empty unless `kind` is `Histogram`.
    pub buckets: &'static [f64],
}

/// Request latencies: from a millisecond (a warm proxy hop) to minutes (a cold start in the way).
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];
/// Cold starts and queue waits: from a fast local process to a GPU box waking up over minutes.
const START_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

const fn counter(name: &'static str, help: &'static str) -> MetricInfo {
    MetricInfo {
        name,
        kind: MetricKind::Counter,
        help,
        buckets: &[],
    }
}

const fn gauge(name: &'static str, help: &'static str) -> MetricInfo {
    MetricInfo {
        name,
        kind: MetricKind::Gauge,
        help,
        buckets: &[],
    }
}

const fn histogram(name: &'static str, help: &'static str, buckets: &'static [f64]) -> MetricInfo {
    MetricInfo {
        name,
        kind: MetricKind::Histogram,
        help,
        buckets,
    }
}

/// Every metric Hestia exposes.
pub const METRICS: &[MetricInfo] = &[
    counter(
        REQUESTS_TOTAL,
        "Proxied requests answered, by service and HTTP status (Hestia's own problems included).",
    ),
    histogram(
        REQUEST_DURATION,
        "Time from a proxied request's arrival to its response head: queueing and any cold start included, streaming the body excluded.",
        REQUEST_BUCKETS,
    ),
    gauge(QUEUE_DEPTH, "Requests waiting in the service's queue."),
    gauge(
        IN_FLIGHT,
        "Requests holding a lease on the service right now (in flight or streaming).",
    ),
    gauge(
        SERVICE_STATE,
        "1 for the service's current lifecycle state, 0 for the others.",
    ),
    histogram(
        QUEUE_WAIT,
        "How long queued requests waited before the service let them through.",
        START_BUCKETS,
    ),
    counter(
        COLD_STARTS_TOTAL,
        "Starts that brought the service up (adoptions of an already running service excluded).",
    ),
    histogram(
        COLD_START_DURATION,
        "Time from a start's request to the service's readiness.",
        START_BUCKETS,
    ),
    counter(
        START_ATTEMPTS_TOTAL,
        "Start attempts, retries and fallbacks included.",
    ),
    counter(START_RETRIES_TOTAL, "Start attempts that were retried."),
    counter(
        START_FALLBACKS_TOTAL,
        "Starts that failed over to the next machine or the fallback URL.",
    ),
    counter(
        START_FAILURES_TOTAL,
        "Starts that failed for good (every waiter got start-failed).",
    ),
    counter(
        IDLE_SHUTDOWNS_TOTAL,
        "Services stopped because they were idle.",
    ),
    counter(
        QUEUE_REJECTED_TOTAL,
        "Requests refused because the queue was full (queue-full).",
    ),
    counter(
        QUEUE_TIMEOUTS_TOTAL,
        "Requests that waited past their deadline (queue-timeout).",
    ),
    counter(
        STRATEGY_DECISIONS_TOTAL,
        "Per-request strategy decisions, by service, strategy and outcome (chosen, no_opinion, error).",
    ),
];

/// One service's counts, as `/v1/metrics` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceCounts {
    pub requests: u64,
    /// Requests answered with a 5xx status.
    pub errors: u64,
    pub cold_starts: u64,
    pub last_cold_start_ms: Option<u64>,
    pub start_attempts: u64,
    pub start_retries: u64,
    pub start_fallbacks: u64,
    pub start_failures: u64,
    pub idle_shutdowns: u64,
    pub queue_rejected: u64,
    pub queue_timeouts: u64,
}

/// `last_cold_start_ms` before any cold start.
const NEVER: u64 = u64::MAX;

/// How many distinct response statuses per service get a lock-free counter slot; a service
/// answering more kinds than this (rare) counts the rest through a mutex.
const STATUS_SLOTS: usize = 8;

/// One service's counts: plain atomics, plus the recorder handles, made once and kept.
pub struct ServiceMetrics {
    id: Arc<str>,
    /// Requests answered, per core.
    tally: PerCore<Mutex<Tally>>,
    cold_starts: AtomicU64,
    last_cold_start_ms: AtomicU64,
    start_attempts: AtomicU64,
    start_retries: AtomicU64,
    start_fallbacks: AtomicU64,
    start_failures: AtomicU64,
    idle_shutdowns: AtomicU64,
    queue_rejected: AtomicU64,
    queue_timeouts: AtomicU64,
    /// The recorder's handles, each registered on first use, not with the row: a service can
    /// exist before the process installs its recorder (tests, `hestia` sub-commands), and a
    /// handle made then would stay a no-op; and a series appears only once it has happened.
    duration: OnceLock<Histogram>,
    queue_wait: OnceLock<Histogram>,
    cold_start: OnceLock<Histogram>,
    counters: [OnceLock<Counter>; EVENT_COUNTERS.len()],
    /// `hestia_requests_total{status}`: the first statuses seen each get a slot, read without a
    /// lock; later ones go to `other_statuses`.
    by_status: [OnceLock<(u16, Counter)>; STATUS_SLOTS],
    other_statuses: Mutex<HashMap<u16, Counter>>,
}

/// The counters engine events bump, in the order of [`ServiceMetrics::counters`].
const EVENT_COUNTERS: [&str; 8] = [
    COLD_STARTS_TOTAL,
    START_ATTEMPTS_TOTAL,
    START_RETRIES_TOTAL,
    START_FALLBACKS_TOTAL,
    START_FAILURES_TOTAL,
    IDLE_SHUTDOWNS_TOTAL,
    QUEUE_REJECTED_TOTAL,
    QUEUE_TIMEOUTS_TOTAL,
];

impl ServiceMetrics {
    pub(crate) fn new(id: &str) -> ServiceMetrics {
        ServiceMetrics {
            id: Arc::from(id),
            tally: PerCore::default(),
            cold_starts: AtomicU64::new(0),
            last_cold_start_ms: AtomicU64::new(NEVER),
            start_attempts: AtomicU64::new(0),
            start_retries: AtomicU64::new(0),
            start_fallbacks: AtomicU64::new(0),
            start_failures: AtomicU64::new(0),
            idle_shutdowns: AtomicU64::new(0),
            queue_rejected: AtomicU64::new(0),
            queue_timeouts: AtomicU64::new(0),
            duration: OnceLock::new(),
            queue_wait: OnceLock::new(),
            cold_start: OnceLock::new(),
            counters: std::array::from_fn(|_| OnceLock::new()),
            by_status: std::array::from_fn(|_| OnceLock::new()),
            other_statuses: Mutex::new(HashMap::new()),
        }
    }

    fn histogram<'a>(&self, slot: &'a OnceLock<Histogram>, name: &'static str) -> &'a Histogram {
        slot.get_or_init(|| metrics::histogram!(name, SERVICE => self.id.clone()))
    }

    /// Adds one to `count` and to the recorder's counter `EVENT_COUNTERS[index]`.
    fn bump(&self, count: &AtomicU64, index: usize) {
        count.fetch_add(1, Relaxed);
        self.counters[index]
            .get_or_init(|| metrics::counter!(EVENT_COUNTERS[index], SERVICE => self.id.clone()))
            .increment(1);
    }

    fn count_status(&self, status: u16, times: u64) {
        let make = || metrics::counter!(REQUESTS_TOTAL, SERVICE => self.id.clone(), "status" => status.to_string());
        for slot in &self.by_status {
            let (seen, counter) = slot.get_or_init(|| (status, make()));
            if *seen == status {
                counter.increment(times);
                return;
            }
        }
        self.other_statuses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(status)
            .or_insert_with(make)
            .increment(times);
    }

    /// How long the service's last cold start took, if it had one.
    pub fn last_cold_start(&self) -> Option<Duration> {
        match self.last_cold_start_ms.load(Relaxed) {
            NEVER => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// The service's counts so far.
    pub fn counts(&self) -> ServiceCounts {
        let (mut requests, mut errors) = (0, 0);
        for tally in self.tally.iter() {
            let tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
            requests += tally.requests;
            errors += tally.errors;
        }
        ServiceCounts {
            requests,
            errors,
            cold_starts: self.cold_starts.load(Relaxed),
            last_cold_start_ms: match self.last_cold_start_ms.load(Relaxed) {
                NEVER => None,
                ms => Some(ms),
            },
            start_attempts: self.start_attempts.load(Relaxed),
            start_retries: self.start_retries.load(Relaxed),
            start_fallbacks: self.start_fallbacks.load(Relaxed),
            start_failures: self.start_failures.load(Relaxed),
            idle_shutdowns: self.idle_shutdowns.load(Relaxed),
            queue_rejected: self.queue_rejected.load(Relaxed),
            queue_timeouts: self.queue_timeouts.load(Relaxed),
        }
    }

    /// Counts one proxied request, answered with `status` after `elapsed` (Hestia's own problems
    /// included).
    pub fn record_request(&self, status: u16, elapsed: Duration) {
        let mut tally = self
            .tally
            .mine()
            .1
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        tally.requests += 1;
        if status >= 500 {
            tally.errors += 1;
        }
        tally.note(status, elapsed.as_secs_f64());
        if tally.durations.len() >= BATCH {
            self.hand_over(&mut tally);
        }
    }

    /// Gives the recorder every request the cores have tallied and not handed over yet: call it
    /// before rendering what the recorder holds.
    pub fn flush(&self) {
        for tally in self.tally.iter() {
            self.hand_over(&mut tally.lock().unwrap_or_else(PoisonError::into_inner));
        }
    }

    fn hand_over(&self, tally: &mut Tally) {
        if !tally.durations.is_empty() {
            let histogram = self.histogram(&self.duration, REQUEST_DURATION);
            tally.durations.drain(..).for_each(|d| histogram.record(d));
        }
        for (status, times) in tally.statuses.drain(..) {
            self.count_status(status, times);
        }
    }

    /// Counts one engine event of this service (every event passes `Shared::record`).
    pub(crate) fn observe(&self, detail: &Detail) {
        match detail {
            Detail::Dequeued { waited_ms } => self
                .histogram(&self.queue_wait, QUEUE_WAIT)
                .record(*waited_ms as f64 / 1e3),
            Detail::QueueRejected { .. } => self.bump(&self.queue_rejected, 6),
            Detail::QueueTimeout { .. } => self.bump(&self.queue_timeouts, 7),
            Detail::StartAttempt { .. } => self.bump(&self.start_attempts, 1),
            Detail::StartRetry { .. } => self.bump(&self.start_retries, 2),
            Detail::StartFallback { .. } => self.bump(&self.start_fallbacks, 3),
            Detail::StartFailed { .. } => self.bump(&self.start_failures, 4),
            Detail::IdleShutdown { .. } => self.bump(&self.idle_shutdowns, 5),
            // Adopting a service that was already up is not a cold start.
            Detail::Started {
                adopted: false,
                duration_ms,
                ..
            } => {
                self.bump(&self.cold_starts, 0);
                if let Some(ms) = *duration_ms {
                    self.last_cold_start_ms.store(ms, Relaxed);
                    self.histogram(&self.cold_start, COLD_START_DURATION)
                        .record(ms as f64 / 1e3);
                }
            }
            _ => {}
        }
    }
}

/// Requests tallied on a core at most before they go to the recorder.
const BATCH: usize = 256;

/// One core's requests: counted since the start, and the statuses and durations not yet given to
/// the recorder.
#[derive(Default, Debug)]
struct Tally {
    requests: u64,
    errors: u64,
    statuses: Vec<(u16, u64)>,
    durations: Vec<f64>,
}

impl Tally {
    fn note(&mut self, status: u16, seconds: f64) {
        match self.statuses.iter_mut().find(|(seen, _)| *seen == status) {
            Some((_, times)) => *times += 1,
            None => self.statuses.push((status, 1)),
        }
        self.durations.push(seconds);
    }
}

impl Drop for ServiceMetrics {
    /// What a removed service tallied still reaches the recorder.
    fn drop(&mut self) {
        self.flush();
    }
}

/// The engine's per-service metrics by id, consulted only when a service is built: a service
/// replaced by a reload keeps counting where its predecessor stopped.
#[derive(Default)]
pub(crate) struct Registry(Mutex<HashMap<String, Arc<ServiceMetrics>>>);

impl Registry {
    pub fn for_service(&self, id: &str) -> Arc<ServiceMetrics> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(ServiceMetrics::new(id)))
            .clone()
    }

    /// [`ServiceMetrics::flush`] for every service there has been.
    pub fn flush_all(&self) {
        let all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        all.values().for_each(|metrics| metrics.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cold_start_is_counted_with_its_duration_but_an_adoption_is_not() {
        // Given a service that was started once and later adopted after a restart
        let metrics = ServiceMetrics::new("metrics-unit-cold-start");
        metrics.observe(&Detail::StartAttempt {
            attempt: 1,
            retry: 0,
            target: "http://127.0.0.1:1".into(),
            rule: None,
        });
        metrics.observe(&Detail::Started {
            attempts: 1,
            duration_ms: Some(1250),
            adopted: false,
            target: "http://127.0.0.1:1".into(),
        });
        metrics.observe(&Detail::Started {
            attempts: 0,
            duration_ms: None,
            adopted: true,
            target: "http://127.0.0.1:1".into(),
        });

        // Then one cold start of 1250 ms is counted
        let counts = metrics.counts();
        assert_eq!(counts.cold_starts, 1);
        assert_eq!(counts.last_cold_start_ms, Some(1250));
        assert_eq!(counts.start_attempts, 1);
    }

    #[test]
    fn failures_rejections_and_timeouts_are_counted_per_service() {
        // Given events for two services
        let (a, b) = (
            ServiceMetrics::new("metrics-unit-a"),
            ServiceMetrics::new("metrics-unit-b"),
        );
        let failure = |error: &str| (error.to_owned(), "probe");
        let (error, reason) = failure("refused");
        a.observe(&Detail::StartRetry {
            attempt: 1,
            next_attempt: 2,
            delay_ms: 10,
            error: error.clone(),
            reason,
        });
        a.observe(&Detail::StartFallback {
            from: None,
            to: "http://127.0.0.1:2".into(),
            to_machine: None,
            error: error.clone(),
            reason,
        });
        a.observe(&Detail::StartFailed {
            attempts: 2,
            error,
            reason,
            waiters: 0,
        });
        b.observe(&Detail::QueueRejected { capacity: 1 });
        b.observe(&Detail::QueueRejected { capacity: 1 });
        b.observe(&Detail::QueueTimeout {
            waited_ms: 10,
            state: "starting",
        });
        b.observe(&Detail::IdleShutdown { idle_ms: 5 });

        // Then each service has only its own counts
        let a = a.counts();
        assert_eq!(
            (a.start_retries, a.start_fallbacks, a.start_failures),
            (1, 1, 1)
        );
        assert_eq!(a.queue_rejected, 0);
        let b = b.counts();
        assert_eq!(
            (b.queue_rejected, b.queue_timeouts, b.idle_shutdowns),
            (2, 1, 1)
        );
        assert_eq!(b.start_failures, 0);
    }

    #[test]
    fn requests_are_counted_by_status_beyond_the_lock_free_slots_and_5xx_are_errors() {
        // Given a service answering more distinct statuses than there are slots
        let metrics = ServiceMetrics::new("metrics-unit-requests");
        let statuses: Vec<u16> = (0..STATUS_SLOTS as u16 + 3).map(|i| 200 + i).collect();

        // When each is answered, plus a 502 twice
        for status in statuses.iter().copied().chain([502, 502]) {
            metrics.record_request(status, Duration::from_millis(3));
        }

        // Then every request counts, and the 502s are errors
        let counts = metrics.counts();
        assert_eq!(counts.requests, statuses.len() as u64 + 2);
        assert_eq!(counts.errors, 2);
    }

    #[test]
    fn a_rebuilt_service_keeps_its_counts() {
        let registry = Registry::default();
        registry
            .for_service("metrics-unit-rebuilt")
            .record_request(200, Duration::from_millis(1));
        let again = registry.for_service("metrics-unit-rebuilt");
        assert_eq!(again.counts().requests, 1);
        assert_eq!(
            registry.for_service("metrics-unit-other").counts().requests,
            0
        );
    }
}
