//! `/metrics` and `/v1/metrics` against a running Hestia with real `hestia sim` backends.
//!
//! The Prometheus recorder is process-wide and every test here starts its own server in the same
//! process, so each test uses service ids of its own and reads only the series labelled with them.

mod support;

use std::collections::BTreeMap;

use serde_json::Value;
use support::{Sim, TestServer};

/// One sample of the Prometheus text: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format (our label values hold no commas, quotes or escapes).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').expect("`key=\"value\"`");
                    (key.to_owned(), value.trim_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().expect("a number"),
            }
        })
        .collect()
}

/// The value of `name` with exactly these labels (plus `le` for buckets), if present.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

async fn scrape(server: &TestServer) -> Vec<Sample> {
    let response = server.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "Prometheus text format, got {content_type}"
    );
    parse(&response.text().await.expect("body"))
}

/// The `/v1/metrics` summary of one service, and the totals.
async fn summary(server: &TestServer, id: &str) -> (Value, Value) {
    let body: Value = server.get("/v1/metrics").await.json().await.expect("json");
    let service = body["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["serviceId"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} is in the summary: {body}"));
    (service, body["totals"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_started_request_shows_up_in_both_views_with_the_same_numbers() {
    // Given a cold service whose backend takes 200 ms to listen, and one nobody calls
    let sim = Sim::new("metrics-cold").startup_delay_ms(200);
    let idle = Sim::new("metrics-untouched");
    let server = TestServer::start(&[&sim, &idle], "").await;

    // When one request cold-starts it
    let response = server.get("/services/metrics-cold/hello").await;
    assert_eq!(response.status(), 200);

    // Then /metrics counts the request with its status, one cold start with its duration,
    // an empty queue, and the service ready
    let samples = scrape(&server).await;
    let service = [("service", "metrics-cold")];
    assert_eq!(
        value(
            &samples,
            "hestia_requests_total",
            &[("service", "metrics-cold"), ("status", "200")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "hestia_request_duration_seconds_count", &service),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "hestia_cold_starts_total", &service),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "hestia_cold_start_duration_seconds_count",
            &service
        ),
        Some(1.0)
    );
    let cold_start_seconds = value(&samples, "hestia_cold_start_duration_seconds_sum", &service)
        .expect("a cold start duration");
    assert!(
        cold_start_seconds >= 0.2,
        "the start took at least the backend's delay: {cold_start_seconds}"
    );
    assert_eq!(
        value(&samples, "hestia_start_attempts_total", &service),
        Some(1.0)
    );
    assert_eq!(value(&samples, "hestia_queue_depth", &service), Some(0.0));
    assert_eq!(value(&samples, "hestia_in_flight", &service), Some(0.0));
    let state = |state| {
        value(
            &samples,
            "hestia_service_state",
            &[("service", "metrics-cold"), ("state", state)],
        )
    };
    assert_eq!((state("ready"), state("cold")), (Some(1.0), Some(0.0)));
    assert!(
        samples
            .iter()
            .any(|s| s.name == "hestia_cold_start_duration_seconds_bucket"
                && s.labels.get("le").map(String::as_str) == Some("600")),
        "cold-start buckets reach minutes"
    );

    // And /v1/metrics shows the same numbers
    let (cold, totals) = summary(&server, "metrics-cold").await;
    assert_eq!(cold["requests"], 1);
    assert_eq!(cold["errors"], 0);
    assert_eq!(cold["coldStarts"], 1);
    assert_eq!(cold["queueDepth"], 0);
    assert_eq!(cold["inFlight"], 0);
    assert_eq!(cold["state"], "ready");
    let last_ms = cold["lastColdStartMs"].as_u64().expect("lastColdStartMs");
    assert_eq!(last_ms as f64 / 1e3, cold_start_seconds);

    // And the service nobody called is listed, cold, with nothing counted
    let (untouched, _) = summary(&server, "metrics-untouched").await;
    assert_eq!(untouched["state"], "cold");
    assert_eq!(untouched["requests"], 0);
    assert_eq!(untouched["lastColdStartMs"], Value::Null);
    assert_eq!(totals["services"], 2);
    assert_eq!(totals["ready"], 1);
    assert_eq!(totals["requests"], 1);
    assert_eq!(totals["coldStarts"], 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refusal_is_counted_as_a_rejection_and_a_503() {
    // Given a cold service with room for one waiting request and a slow start
    let sim = Sim::new("metrics-small")
        .startup_delay_ms(1500)
        .key("queue_size: 1");
    let server = TestServer::start(&[&sim], "").await;

    // When five clients call at once
    let url = format!("{}/services/metrics-small/x", server.url);
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let (client, url) = (server.client(), url.clone());
            tokio::spawn(async move { client.get(url).send().await.expect("answer").status() })
        })
        .collect();
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.expect("client task").as_u16());
    }
    statuses.sort_unstable();

    // Then one is served and four are refused with 503 queue-full
    assert_eq!(statuses, [200, 503, 503, 503, 503]);
    let samples = scrape(&server).await;
    let service = [("service", "metrics-small")];
    assert_eq!(
        value(&samples, "hestia_queue_rejected_total", &service),
        Some(4.0)
    );
    let requests = |status| {
        value(
            &samples,
            "hestia_requests_total",
            &[("service", "metrics-small"), ("status", status)],
        )
    };
    assert_eq!((requests("200"), requests("503")), (Some(1.0), Some(4.0)));
    assert_eq!(
        value(&samples, "hestia_queue_wait_seconds_count", &service),
        Some(1.0),
        "the one admitted request waited in the queue"
    );

    // And the summary agrees: 5 requests, 4 of them errors, 4 rejections
    let (small, totals) = summary(&server, "metrics-small").await;
    assert_eq!(small["requests"], 5);
    assert_eq!(small["errors"], 4);
    assert_eq!(small["queueRejected"], 4);
    assert_eq!(totals["queueRejected"], 4);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_fails_for_good_is_counted_with_its_attempts_and_no_cold_start() {
    // Given a backend that never comes up, with one retry
    let sim = Sim::new("metrics-broken")
        .fail_to_start()
        .key("retry: {count: 1, delay_ms: 50}");
    let server = TestServer::start(&[&sim], "").await;

    // When a client calls, then it gets start-failed
    let response = server.get("/services/metrics-broken/x").await;
    assert_eq!(response.status(), 503);
    let problem: Value = response.json().await.expect("problem");
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("start-failed")),
        "start-failed problem: {problem}"
    );

    // And /metrics counts one failure after two attempts and one retry, and no cold start
    let samples = scrape(&server).await;
    let service = [("service", "metrics-broken")];
    assert_eq!(
        value(&samples, "hestia_start_failures_total", &service),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "hestia_start_attempts_total", &service),
        Some(2.0)
    );
    assert_eq!(
        value(&samples, "hestia_start_retries_total", &service),
        Some(1.0)
    );
    assert_eq!(value(&samples, "hestia_cold_starts_total", &service), None);
    assert_eq!(
        value(
            &samples,
            "hestia_service_state",
            &[("service", "metrics-broken"), ("state", "failed")]
        ),
        Some(1.0)
    );

    // And the summary agrees
    let (broken, _) = summary(&server, "metrics-broken").await;
    assert_eq!(broken["startFailures"], 1);
    assert_eq!(broken["startAttempts"], 2);
    assert_eq!(broken["coldStarts"], 0);
    assert_eq!(broken["errors"], 1);
    assert_eq!(broken["state"], "failed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_unknown_services_make_no_series() {
    // Given Hestia with one service
    let server = TestServer::start(&[&Sim::new("metrics-known")], "").await;

    // When a client calls a service that does not exist
    let response = server.get("/services/metrics-nobody/x").await;
    assert_eq!(response.status(), 404);

    // Then no series and no summary row is made for it
    let samples = scrape(&server).await;
    assert!(
        !samples
            .iter()
            .any(|s| s.labels.get("service").map(String::as_str) == Some("metrics-nobody")),
        "an unknown id never becomes a label"
    );
    let body: Value = server.get("/v1/metrics").await.json().await.expect("json");
    let ids: Vec<&str> = body["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["serviceId"].as_str())
        .collect();
    assert_eq!(ids, ["metrics-known"]);
    server.stop().await;
}
