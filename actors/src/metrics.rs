//! What Hestia counts, per service: one table of atomics (read by `/v1/metrics`) updated together
//! with the process-wide `metrics` recorder (rendered by `/metrics`), so both show the same numbers.
//!
//! Engine events arrive through [`observe`] (every event passes `Shared::record`); the proxy
//! reports each answered request through [`record_request`]. [`METRICS`] lists every metric.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use metrics::{Counter, Histogram};
use serde::Serialize;
use serde_json::Value;

use crate::events::{ActivityEvent, ActivityKind};

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

/// One service's row: plain atomics, plus the recorder handles the request hot path reuses.
struct ServiceMetrics {
    id: Arc<str>,
    requests: AtomicU64,
    errors: AtomicU64,
    cold_starts: AtomicU64,
    last_cold_start_ms: AtomicU64,
    start_attempts: AtomicU64,
    start_retries: AtomicU64,
    start_fallbacks: AtomicU64,
    start_failures: AtomicU64,
    idle_shutdowns: AtomicU64,
    queue_rejected: AtomicU64,
    queue_timeouts: AtomicU64,
    /// Made on the first request, not with the row: a row can exist before the process installs
    /// its recorder (events at engine start), and a handle made then would stay a no-op.
    requests_handles: OnceLock<RequestHandles>,
}

struct RequestHandles {
    duration: Histogram,
    by_status: RwLock<HashMap<u16, Counter>>,
}

impl ServiceMetrics {
    fn new(id: &str) -> ServiceMetrics {
        ServiceMetrics {
            id: Arc::from(id),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            cold_starts: AtomicU64::new(0),
            last_cold_start_ms: AtomicU64::new(NEVER),
            start_attempts: AtomicU64::new(0),
            start_retries: AtomicU64::new(0),
            start_fallbacks: AtomicU64::new(0),
            start_failures: AtomicU64::new(0),
            idle_shutdowns: AtomicU64::new(0),
            queue_rejected: AtomicU64::new(0),
            queue_timeouts: AtomicU64::new(0),
            requests_handles: OnceLock::new(),
        }
    }

    fn counts(&self) -> ServiceCounts {
        ServiceCounts {
            requests: self.requests.load(Relaxed),
            errors: self.errors.load(Relaxed),
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

    /// Bumps `count` and the recorder's counter `name` for this service.
    fn bump(&self, count: &AtomicU64, name: &'static str) {
        count.fetch_add(1, Relaxed);
        metrics::counter!(name, SERVICE => self.id.clone()).increment(1);
    }

    fn record_request(&self, status: u16, elapsed: Duration) {
        self.requests.fetch_add(1, Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Relaxed);
        }
        let handles = self.requests_handles.get_or_init(|| RequestHandles {
            duration: metrics::histogram!(REQUEST_DURATION, SERVICE => self.id.clone()),
            by_status: RwLock::new(HashMap::new()),
        });
        handles.duration.record(elapsed.as_secs_f64());
        let known = handles
            .by_status
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&status)
            .cloned();
        let counter = known.unwrap_or_else(|| {
            handles
                .by_status
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(status)
                .or_insert_with(|| {
                    metrics::counter!(
                        REQUESTS_TOTAL,
                        SERVICE => self.id.clone(),
                        "status" => status.to_string()
                    )
                })
                .clone()
        });
        counter.increment(1);
    }
}

/// Every service seen so far, by id. A row is made by the service's first engine event.
fn table() -> &'static RwLock<HashMap<Arc<str>, Arc<ServiceMetrics>>> {
    static TABLE: OnceLock<RwLock<HashMap<Arc<str>, Arc<ServiceMetrics>>>> = OnceLock::new();
    TABLE.get_or_init(|| RwLock::new(HashMap::new()))
}

fn find(service: &str) -> Option<Arc<ServiceMetrics>> {
    table()
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(service)
        .cloned()
}

fn row(service: &str) -> Arc<ServiceMetrics> {
    if let Some(row) = find(service) {
        return row;
    }
    let row = Arc::new(ServiceMetrics::new(service));
    table()
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(row.id.clone())
        .or_insert(row)
        .clone()
}

/// Counts one engine event of `service`. Called for every event, by `Shared::record`.
pub fn observe(service: &str, event: &ActivityEvent) {
    let row = row(service);
    let detail_u64 = |key: &str| event.detail.get(key).and_then(Value::as_u64);
    match event.kind {
        ActivityKind::Dequeued => {
            if let Some(ms) = detail_u64("waited_ms") {
                metrics::histogram!(QUEUE_WAIT, SERVICE => row.id.clone()).record(ms as f64 / 1e3);
            }
        }
        ActivityKind::QueueRejected => row.bump(&row.queue_rejected, QUEUE_REJECTED_TOTAL),
        ActivityKind::QueueTimeout => row.bump(&row.queue_timeouts, QUEUE_TIMEOUTS_TOTAL),
        ActivityKind::StartAttempt => row.bump(&row.start_attempts, START_ATTEMPTS_TOTAL),
        ActivityKind::StartRetry => row.bump(&row.start_retries, START_RETRIES_TOTAL),
        ActivityKind::StartFallback => row.bump(&row.start_fallbacks, START_FALLBACKS_TOTAL),
        ActivityKind::StartFailed => row.bump(&row.start_failures, START_FAILURES_TOTAL),
        ActivityKind::IdleShutdown => row.bump(&row.idle_shutdowns, IDLE_SHUTDOWNS_TOTAL),
        ActivityKind::Started => {
            // Adopting a service that was already up is not a cold start.
            let adopted = event.detail.get("adopted").and_then(Value::as_bool) == Some(true);
            if !adopted {
                row.bump(&row.cold_starts, COLD_STARTS_TOTAL);
                if let Some(ms) = detail_u64("duration_ms") {
                    row.last_cold_start_ms.store(ms, Relaxed);
                    metrics::histogram!(COLD_START_DURATION, SERVICE => row.id.clone())
                        .record(ms as f64 / 1e3);
                }
            }
        }
        _ => {}
    }
}

/// Counts one proxied request of `service`, answered with `status` after `elapsed`.
///
/// Only services the engine has recorded an event for are counted: a request can only reach a
/// service after one (a cold one queues it, a ready one has `started`), so an id that is not a
/// service (an `unknown-service` 404) never makes a row — clients cannot grow the table.
pub fn record_request(service: &str, status: u16, elapsed: Duration) {
    if let Some(row) = find(service) {
        row.record_request(status, elapsed);
    }
}

/// `service`'s counts so far (all zero if nothing happened to it yet).
pub fn counts(service: &str) -> ServiceCounts {
    find(service).map(|row| row.counts()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(kind: ActivityKind, service: &str, detail: Value) -> ActivityEvent {
        ActivityEvent::new(kind, Some(service)).detail(detail)
    }

    #[test]
    fn a_cold_start_is_counted_with_its_duration_but_an_adoption_is_not() {
        // Given a service that was started once and later adopted after a restart
        let id = "metrics-unit-cold-start";
        observe(
            id,
            &event(ActivityKind::StartAttempt, id, json!({"attempt": 1})),
        );
        observe(
            id,
            &event(
                ActivityKind::Started,
                id,
                json!({"attempts": 1, "duration_ms": 1250, "adopted": false}),
            ),
        );
        observe(
            id,
            &event(
                ActivityKind::Started,
                id,
                json!({"attempts": 0, "duration_ms": null, "adopted": true}),
            ),
        );

        // Then one cold start of 1250 ms is counted
        let counts = counts(id);
        assert_eq!(counts.cold_starts, 1);
        assert_eq!(counts.last_cold_start_ms, Some(1250));
        assert_eq!(counts.start_attempts, 1);
    }

    #[test]
    fn failures_rejections_and_timeouts_are_counted_per_service() {
        // Given events for two services
        let (a, b) = ("metrics-unit-a", "metrics-unit-b");
        observe(a, &event(ActivityKind::StartRetry, a, json!({})));
        observe(a, &event(ActivityKind::StartFallback, a, json!({})));
        observe(a, &event(ActivityKind::StartFailed, a, json!({})));
        observe(
            b,
            &event(ActivityKind::QueueRejected, b, json!({"capacity": 1})),
        );
        observe(
            b,
            &event(ActivityKind::QueueRejected, b, json!({"capacity": 1})),
        );
        observe(
            b,
            &event(ActivityKind::QueueTimeout, b, json!({"waited_ms": 10})),
        );
        observe(
            b,
            &event(ActivityKind::IdleShutdown, b, json!({"idle_ms": 5})),
        );

        // Then each service has only its own counts
        let a = counts(a);
        assert_eq!(
            (a.start_retries, a.start_fallbacks, a.start_failures),
            (1, 1, 1)
        );
        assert_eq!(a.queue_rejected, 0);
        let b = counts(b);
        assert_eq!(
            (b.queue_rejected, b.queue_timeouts, b.idle_shutdowns),
            (2, 1, 1)
        );
        assert_eq!(b.start_failures, 0);
    }

    #[test]
    fn requests_count_for_known_services_only_and_5xx_are_errors() {
        // Given a service the engine has seen, and an id it has not
        let id = "metrics-unit-requests";
        observe(id, &event(ActivityKind::Queued, id, json!({"position": 0})));

        // When requests are answered for both
        record_request(id, 200, Duration::from_millis(3));
        record_request(id, 502, Duration::from_millis(4));
        record_request(id, 200, Duration::from_millis(5));
        record_request(
            "metrics-unit-no-such-service",
            404,
            Duration::from_millis(1),
        );

        // Then the service counts 3 requests, 1 error; the unknown id makes no row
        let counts = counts(id);
        assert_eq!((counts.requests, counts.errors), (3, 1));
        assert!(find("metrics-unit-no-such-service").is_none());
    }
}
