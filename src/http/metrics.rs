//! `GET /metrics` (Prometheus text) and `GET /v1/metrics` (a JSON summary a person can read).
//!
//! The counts live in `hestia_actors::metrics`, one set per service on its shared state (the proxy
//! counts through the service's handle); this file installs the process-wide Prometheus recorder
//! (once: tests run many servers in one process) and sets the scrape-time gauges from the
//! services' published status.

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use ::metrics::Unit;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hestia_actors::metrics::{self as counts, METRICS, MetricKind, SERVICE, ServiceCounts};
use hestia_actors::service::{ServiceHandle, State as Lifecycle};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::http::AppState;

/// The Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How often recorded histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

const STATES: [Lifecycle; 6] = [
    Lifecycle::Cold,
    Lifecycle::Starting,
    Lifecycle::Waiting,
    Lifecycle::Ready,
    Lifecycle::Stopping,
    Lifecycle::Failed,
];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(prometheus))
        .route("/v1/metrics", get(summary))
}

/// The process's Prometheus recorder: installed as the global `metrics` recorder on the first
/// call, the same handle afterwards. Also keeps an upkeep task running on the current runtime.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    let handle = HANDLE.get_or_init(build_and_install).clone();
    keep_upkeep_running(&handle);
    handle
}

fn build_and_install() -> PrometheusHandle {
    let mut builder = PrometheusBuilder::new();
    for metric in METRICS.iter().filter(|m| m.kind == MetricKind::Histogram) {
        let matcher = Matcher::Full(metric.name.to_owned());
        builder = match builder.set_buckets_for_metric(matcher, metric.buckets) {
            Ok(builder) => builder,
            Err(error) => {
                tracing::error!(metric = metric.name, %error, "bad histogram buckets");
                return PrometheusBuilder::new().build_recorder().handle();
            }
        };
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if let Err(error) = ::metrics::set_global_recorder(recorder) {
        tracing::warn!(%error, "another metrics recorder is installed: /metrics will be empty");
        return handle;
    }
    for metric in METRICS {
        let unit = metric.name.ends_with("_seconds").then_some(Unit::Seconds);
        match (metric.kind, unit) {
            (MetricKind::Counter, _) => ::metrics::describe_counter!(metric.name, metric.help),
            (MetricKind::Gauge, _) => ::metrics::describe_gauge!(metric.name, metric.help),
            (MetricKind::Histogram, Some(unit)) => {
                ::metrics::describe_histogram!(metric.name, unit, metric.help)
            }
            (MetricKind::Histogram, None) => {
                ::metrics::describe_histogram!(metric.name, metric.help)
            }
        }
    }
    ::metrics::describe_counter!(
        PERSISTENCE_WRITE_FAILURES,
        "Database writes that failed (logged and dropped); /readyz is 503 while one table cannot be written"
    );
    handle
}

/// Histogram samples pile up between scrapes; a background task folds them into buckets. One
/// task per process, respawned if the runtime it ran on is gone (each test has its own).
fn keep_upkeep_running(handle: &PrometheusHandle) {
    static UPKEEP: Mutex<Option<JoinHandle<()>>> = Mutex::new(None);
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let mut upkeep = UPKEEP.lock().unwrap_or_else(PoisonError::into_inner);
    if upkeep.as_ref().is_some_and(|task| !task.is_finished()) {
        return;
    }
    let handle = handle.clone();
    *upkeep = Some(runtime.spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        loop {
            every.tick().await;
            handle.run_upkeep();
        }
    }));
}

/// Database writes that failed (logged and dropped) since Hestia started.
const PERSISTENCE_WRITE_FAILURES: &str = "hestia_persistence_write_failures_total";

async fn prometheus(State(state): State<AppState>) -> Response {
    for service in state.engine.services() {
        set_gauges(&service);
    }
    // What the cores tallied since the last scrape reaches the recorder now.
    state.engine.flush_metrics();
    ::metrics::counter!(PERSISTENCE_WRITE_FAILURES)
        .absolute(state.engine.persistence().failed_writes());
    let text = state.prometheus.render();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROMETHEUS_TEXT),
        )],
        text,
    )
        .into_response()
}

/// Queue depth, in-flight count and lifecycle state, read from the service's published status.
fn set_gauges(service: &ServiceHandle) {
    let status = service.status();
    let id = status.service_id.clone();
    let waiting = status.queue_pending + service.waiting_for_slot();
    ::metrics::gauge!(counts::QUEUE_DEPTH, SERVICE => id.clone()).set(waiting as f64);
    ::metrics::gauge!(counts::IN_FLIGHT, SERVICE => id.clone()).set(service.in_flight() as f64);
    for state in STATES {
        let current = if state == status.state { 1.0 } else { 0.0 };
        ::metrics::gauge!(counts::SERVICE_STATE, SERVICE => id.clone(), "state" => state.as_str())
            .set(current);
    }
}

/// `GET /v1/metrics`.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub services: Vec<ServiceSummary>,
    pub totals: Totals,
}

/// One service's numbers: its counts so far and its queue, load and state right now.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSummary {
    pub service_id: String,
    pub state: Lifecycle,
    pub queue_depth: usize,
    pub in_flight: usize,
    #[serde(flatten)]
    pub counts: ServiceCounts,
}

/// The sums over every service.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub services: usize,
    pub ready: usize,
    pub requests: u64,
    pub errors: u64,
    pub cold_starts: u64,
    pub start_attempts: u64,
    pub start_retries: u64,
    pub start_fallbacks: u64,
    pub start_failures: u64,
    pub idle_shutdowns: u64,
    pub queue_rejected: u64,
    pub queue_timeouts: u64,
    pub queue_depth: usize,
    pub in_flight: usize,
}

impl Totals {
    fn add(&mut self, service: &ServiceSummary) {
        let c = &service.counts;
        self.services += 1;
        self.ready += usize::from(service.state == Lifecycle::Ready);
        self.requests += c.requests;
        self.errors += c.errors;
        self.cold_starts += c.cold_starts;
        self.start_attempts += c.start_attempts;
        self.start_retries += c.start_retries;
        self.start_fallbacks += c.start_fallbacks;
        self.start_failures += c.start_failures;
        self.idle_shutdowns += c.idle_shutdowns;
        self.queue_rejected += c.queue_rejected;
        self.queue_timeouts += c.queue_timeouts;
        self.queue_depth += service.queue_depth;
        self.in_flight += service.in_flight;
    }
}

async fn summary(State(state): State<AppState>) -> Json<Summary> {
    let services: Vec<ServiceSummary> = state
        .engine
        .services()
        .iter()
        .map(|service| {
            let status = service.status();
            ServiceSummary {
                service_id: status.service_id.clone(),
                state: status.state,
                queue_depth: status.queue_pending + service.waiting_for_slot(),
                in_flight: service.in_flight(),
                counts: service.metrics().counts(),
            }
        })
        .collect();
    let mut totals = Totals::default();
    for service in &services {
        totals.add(service);
    }
    Json(Summary { services, totals })
}
