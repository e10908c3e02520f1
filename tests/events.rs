//! `GET /v1/events` as a client sees it: a start carried from `starting` to `ready`, a stream
//! resumed with `Last-Event-ID` from the activity table, and the problems of bad requests.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use hestia::cli::sse::{SseEvent, SseReader};
use serde_json::Value;
use support::{Sim, TestServer};

/// Opens the event stream (resuming after `last_id`, when given).
async fn open(server: &TestServer, query: &str, last_id: Option<&str>) -> SseReader {
    let mut request = server
        .client()
        .get(format!("{}/v1/events{query}", server.url));
    if let Some(id) = last_id {
        request = request.header("last-event-id", id);
    }
    let response = request.send().await.expect("hestia answers");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    SseReader::new(response.bytes_stream().boxed())
}

/// Reads events until `until` holds for one; returns all read, that one last.
async fn read_until(
    stream: &mut SseReader,
    until: impl Fn(&SseEvent, &Value) -> bool,
) -> Vec<SseEvent> {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = stream.next().await {
            let data: Value = serde_json::from_str(&event.data).expect("data is JSON");
            let done = until(&event, &data);
            seen.push(event);
            if done {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(found, Ok(true)),
        "the awaited event never came; got {:#?}",
        seen.iter().map(|e| (&e.event, &e.data)).collect::<Vec<_>>()
    );
    seen
}

fn data(event: &SseEvent) -> Value {
    serde_json::from_str(&event.data).expect("JSON")
}

fn is_state(event: &SseEvent, to: &str) -> bool {
    event.event == "state" && data(event)["to"] == to
}

#[tokio::test]
async fn a_start_is_carried_from_starting_to_ready() {
    let echo = Sim::new("echo").startup_delay_ms(300);
    let server = TestServer::start(&[&echo], "").await;
    let mut stream = open(&server, "", None).await;
    // Every connection begins with the current state of each service.
    let snapshot = stream.next().await.expect("a snapshot");
    assert!(is_state(&snapshot, "cold"), "{snapshot:?}");
    assert_eq!(data(&snapshot)["from"], Value::Null);

    assert_eq!(server.post("/v1/services/echo/start").await.status(), 202);
    let seen = read_until(&mut stream, |e, _| is_state(e, "ready")).await;

    let kinds: Vec<&str> = seen.iter().map(|e| e.event.as_str()).collect();
    let starting = seen
        .iter()
        .position(|e| is_state(e, "starting"))
        .expect("a change to starting");
    let ready = data(seen.last().expect("ready"));
    assert_eq!(
        (ready["from"].as_str(), ready["serviceId"].as_str()),
        (Some("starting"), Some("echo"))
    );
    assert!(starting < seen.len() - 1);
    assert!(kinds.contains(&"start_requested"), "{kinds:?}");
    // `started` is recorded when readiness passes, as the state changes: it may come just after.
    if !kinds.contains(&"started") {
        read_until(&mut stream, |e, _| e.event == "started").await;
    }
    // Every event has an id, and activity events carry their activity id.
    assert!(
        seen.iter()
            .all(|e| e.id.as_deref().is_some_and(|id| id.len() == 36))
    );
    let requested = seen
        .iter()
        .find(|e| e.event == "start_requested")
        .expect("requested");
    assert_eq!(requested.id.as_deref(), data(requested)["id"].as_str());
    server.stop().await;
}

#[tokio::test]
async fn last_event_id_resumes_from_the_activity_table() {
    let echo = Sim::new("echo").startup_delay_ms(200);
    let server = TestServer::start(&[&echo], "").await;
    let mut stream = open(&server, "?service=echo", None).await;
    assert_eq!(server.post("/v1/services/echo/start").await.status(), 202);
    let seen = read_until(&mut stream, |e, _| e.event == "start_requested").await;
    let requested = seen
        .last()
        .expect("start_requested")
        .id
        .clone()
        .expect("an id");
    // The client goes away; the start goes on without it.
    drop(stream);
    let status = server.post("/v1/services/echo/start?wait=true").await;
    assert_eq!(status.status(), 200);

    let mut resumed = open(&server, "?service=echo", Some(&requested)).await;
    let replay = read_until(&mut resumed, |e, _| e.event == "started").await;
    // First the current state, then what was recorded after the last event it had, in order.
    assert!(is_state(&replay[0], "ready"), "{:?}", replay[0]);
    let kinds: Vec<&str> = replay[1..].iter().map(|e| e.event.as_str()).collect();
    assert!(
        !kinds.contains(&"start_requested"),
        "replayed what it had: {kinds:?}"
    );
    assert!(kinds.contains(&"start_attempt"), "{kinds:?}");
    let ids: Vec<&str> = replay[1..].iter().filter_map(|e| e.id.as_deref()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "replayed in recording order");
    assert!(ids.iter().all(|id| *id > requested.as_str()));

    // Live events still follow the replay.
    assert_eq!(server.post("/v1/services/echo/stop").await.status(), 202);
    read_until(&mut resumed, |e, _| is_state(e, "cold")).await;
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_get_problems() {
    let server = TestServer::start(&[&Sim::new("echo")], "").await;
    let response = server
        .client()
        .get(format!("{}/v1/events", server.url))
        .header("last-event-id", "yesterday")
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("problem");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("Last-Event-ID"),
        "{body}"
    );
    let response = server.get("/v1/events?service=nope").await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("problem");
    assert!(
        body["type"]
            .as_str()
            .unwrap_or("")
            .ends_with("unknown-service")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_stream_carries_heartbeat_comments() {
    // Given an event stream on which nothing happens
    let sim = Sim::new("quiet");
    let server = TestServer::start(&[&sim], "").await;
    let mut response = server
        .client()
        .get(format!("{}/v1/events", server.url))
        .send()
        .await
        .expect("hestia answers");

    // When the stream stays quiet for longer than the heartbeat interval
    let wait = hestia::http::api::events::HEARTBEAT + Duration::from_secs(10);
    let heartbeat = tokio::time::timeout(wait, async {
        let mut text = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains(": heartbeat\n") {
                return true;
            }
        }
        false
    })
    .await;

    // Then a comment arrives to keep proxies from closing it (clients ignore comments)
    assert_eq!(heartbeat, Ok(true), "no heartbeat comment within {wait:?}");
}
