//! The simulated backend seen from a client: real sockets on 127.0.0.1, real HTTP (reqwest) and a
//! real WebSocket client. Each test is one scenario a Hestia test or demo relies on.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hestia_actors::harness::{self, SimError, SimOptions};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::Message;

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn json(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

#[tokio::test]
async fn echo_returns_method_path_query_headers_and_body() {
    // given a running backend named "alpha"
    let sim = harness::spawn(SimOptions::named("alpha")).await.unwrap();

    // when a client posts a JSON body with a query and a custom header
    let response = client()
        .post(format!("{}/v1/generate?model=tiny&x=1", sim.url()))
        .header("x-custom", "hello")
        .body(r#"{"prompt":"hi"}"#)
        .send()
        .await
        .unwrap();

    // then the backend answers with what it received
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sim-name"], "alpha");
    let echo = json(response).await;
    assert_eq!(echo["name"], "alpha");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/v1/generate");
    assert_eq!(echo["query"], "model=tiny&x=1");
    assert_eq!(echo["headers"]["x-custom"], "hello");
    assert_eq!(echo["body"], r#"{"prompt":"hi"}"#);
    assert_eq!(echo["body_base64"], false);
    assert_eq!(echo["body_len"], 15);
    assert_eq!(echo["seq"], 1);
}

#[tokio::test]
async fn echo_encodes_binary_bodies_in_base64_and_honours_status_and_head() {
    let sim = harness::spawn(SimOptions::default()).await.unwrap();

    // a body that is not UTF-8 comes back as base64
    let echo = json(
        client()
            .put(format!("{}/blob", sim.url()))
            .body(vec![0xff, 0x00, 0xfe])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(echo["body"], "/wD+");
    assert_eq!(echo["body_base64"], true);
    assert_eq!(echo["body_len"], 3);

    // ?status=NNN picks the status
    let teapot = client()
        .get(format!("{}/anything?status=418", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(teapot.status(), 418);
    assert_eq!(json(teapot).await["method"], "GET");

    // a status that is not a number is refused with 400
    let bad = client()
        .get(format!("{}/anything?status=abc", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // HEAD gets the headers (with the length of the would-be body) and no body
    let head = client()
        .head(format!("{}/anything?status=204", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 204);
    let head = client()
        .head(format!("{}/anything", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-type"], "application/json");
    let length: usize = head.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(length > 0);
    assert!(head.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn sse_delivers_the_requested_events_then_ends() {
    let sim = harness::spawn(SimOptions::default()).await.unwrap();

    let response = client()
        .get(format!("{}/sse?events=4&interval_ms=10", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");

    // the stream ends by itself after the last event
    let text = response.text().await.unwrap();
    let data: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .collect();
    assert_eq!(
        data,
        [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#, r#"{"n":4}"#]
    );
}

#[tokio::test]
async fn sse_flushes_each_event_as_it_is_produced() {
    // given an event stream whose second event is an hour away
    let sim = harness::spawn(SimOptions::default()).await.unwrap();
    let response = client()
        .get(format!("{}/sse?events=2&interval_ms=3600000", sim.url()))
        .send()
        .await
        .unwrap();

    // the first event still arrives now, on its own
    let mut body = response.bytes_stream();
    let mut first = String::new();
    while !first.ends_with("\n\n") {
        let chunk = body.next().await.unwrap().unwrap();
        first.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert_eq!(first, "data: {\"n\":1}\n\n");

    // and the server does not wait for the stream to end before shutting down
    sim.shutdown().await;
}

#[tokio::test]
async fn stream_sends_the_requested_chunks_and_slow_answers_after_the_delay() {
    let sim = harness::spawn(SimOptions::default()).await.unwrap();

    let response = client()
        .get(format!("{}/stream?chunks=3&interval_ms=10", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    assert_eq!(
        response.text().await.unwrap(),
        "chunk 1\nchunk 2\nchunk 3\n"
    );

    let started = std::time::Instant::now();
    let response = client()
        .get(format!("{}/slow?ms=150", sim.url()))
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(json(response).await["path"], "/slow");
}

#[tokio::test]
async fn websocket_echoes_text_and_binary_messages() {
    let sim = harness::spawn(SimOptions::default()).await.unwrap();
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", sim.addr))
        .await
        .unwrap();

    socket.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::text("hello")
    );

    socket
        .send(Message::binary(vec![0_u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::binary(vec![0_u8, 1, 2, 255])
    );

    socket.close(None).await.unwrap();
}

#[tokio::test]
async fn ready_path_answers_503_during_ready_after_then_200() {
    // given a backend that listens at once but is ready only after one second
    let ready_after = Duration::from_millis(1_000);
    let started = tokio::time::Instant::now();
    let sim = harness::spawn(SimOptions::default().ready_after(ready_after))
        .await
        .unwrap();

    // when probed right away, it is listening but not ready
    let first = client()
        .get(format!("{}/health", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 503);

    // then it turns ready, and not before ready_after
    let ready = loop {
        let probe = client()
            .get(format!("{}/health", sim.url()))
            .send()
            .await
            .unwrap();
        if probe.status() == 200 {
            break probe;
        }
        assert_eq!(probe.status(), 503);
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(started.elapsed() >= ready_after);
    assert_eq!(json(ready).await["status"], "ok");

    // and probes are not counted as requests
    assert_eq!(sim.requests(), 0);
}

#[tokio::test(start_paused = true)]
async fn startup_delay_passes_before_the_port_is_bound() {
    let delay = Duration::from_secs(30);
    let started = tokio::time::Instant::now();

    let sim = harness::spawn(SimOptions::default().startup_delay(delay))
        .await
        .unwrap();

    assert!(started.elapsed() >= delay);
    tokio::net::TcpStream::connect(sim.addr).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn fail_to_start_gives_up_after_the_delay_without_listening() {
    let delay = Duration::from_secs(5);
    let started = tokio::time::Instant::now();

    let result = harness::spawn(
        SimOptions::named("broken")
            .startup_delay(delay)
            .fail_to_start(true),
    )
    .await;

    assert!(started.elapsed() >= delay);
    match result {
        Err(SimError::StartFailure { name, after }) => {
            assert_eq!(name, "broken");
            assert_eq!(after, delay);
        }
        other => panic!("expected a start failure, got {other:?}"),
    }
}

#[tokio::test]
async fn upload_of_a_few_megabytes_reports_its_size_and_sha256() {
    let sim = harness::spawn(SimOptions::default()).await.unwrap();
    let payload: Vec<u8> = (0..3 * 1024 * 1024 + 17)
        .map(|i: u32| (i % 251) as u8)
        .collect();
    let expected = hex::encode(Sha256::digest(&payload));

    let response = client()
        .post(format!("{}/upload", sim.url()))
        .body(payload.clone())
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let uploaded = json(response).await;
    assert_eq!(uploaded["bytes"], payload.len());
    assert_eq!(uploaded["sha256"], expected.as_str());
}

#[tokio::test]
async fn crash_after_answers_n_requests_then_stops_accepting() {
    // given a backend that crashes after its second request
    let sim = harness::spawn(SimOptions::named("fragile").crash_after(2))
        .await
        .unwrap();
    let url = sim.url();

    // readiness probes do not count towards the crash
    for _ in 0..3 {
        let probe = client().get(format!("{url}/health")).send().await.unwrap();
        assert_eq!(probe.status(), 200);
    }
    // the first two requests are answered in full
    for seq in 1..=2 {
        let echo = json(client().get(format!("{url}/work")).send().await.unwrap()).await;
        assert_eq!(echo["seq"], seq);
    }

    // then the server goes away: no more connections
    sim.stopped().await;
    assert!(sim.crashed());
    assert_eq!(sim.requests(), 2);
    let refused = client().get(format!("{url}/work")).send().await;
    assert!(refused.is_err(), "a crashed backend answered: {refused:?}");
}

#[tokio::test]
async fn seq_and_stats_log_record_arrival_order_and_request_ids() {
    let sim = harness::spawn(SimOptions::named("ordered")).await.unwrap();

    for i in 1..=5 {
        let echo = json(
            client()
                .get(format!("{}/item/{i}", sim.url()))
                .header("x-request-id", format!("req-{i}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(echo["seq"], i);
    }

    let stats = json(
        client()
            .get(format!("{}/_sim/stats", sim.url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(stats["name"], "ordered");
    assert_eq!(stats["requests"], 5);
    assert_eq!(stats["pid"], std::process::id());
    assert!(stats["started_at"].is_string());
    let log = stats["log"].as_array().unwrap();
    let seen: Vec<(u64, &str, &str)> = log
        .iter()
        .map(|entry| {
            (
                entry["seq"].as_u64().unwrap(),
                entry["path"].as_str().unwrap(),
                entry["request_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (1, "/item/1", "req-1"),
            (2, "/item/2", "req-2"),
            (3, "/item/3", "req-3"),
            (4, "/item/4", "req-4"),
            (5, "/item/5", "req-5"),
        ]
    );
    // asking for stats is not itself a request
    assert_eq!(sim.requests(), 5);
}

#[tokio::test]
async fn shutdown_stops_the_server_and_frees_the_port() {
    let sim = harness::spawn(SimOptions::default()).await.unwrap();
    let url = sim.url();
    assert_eq!(client().get(&url).send().await.unwrap().status(), 200);

    sim.shutdown().await;

    assert!(client().get(&url).send().await.is_err());
}

#[tokio::test]
async fn the_openai_routes_answer_whole_and_streamed_and_list_the_backend_as_a_model() {
    // given a running backend named "tiny"
    let sim = harness::spawn(SimOptions::named("tiny")).await.unwrap();

    // when a client asks for a completion, whole and then streamed
    let whole = json(
        client()
            .post(format!("{}/v1/completions", sim.url()))
            .json(&serde_json::json!({"model": "tiny-1b", "prompt": "say hi"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let streamed = client()
        .post(format!("{}/v1/completions", sim.url()))
        .json(&serde_json::json!({"model": "tiny-1b", "prompt": "say hi", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.headers()["content-type"], "text/event-stream");
    let text = streamed.text().await.unwrap();

    // then both carry the same text, the stream in pieces ending with [DONE]
    assert_eq!(whole["object"], "text_completion");
    assert_eq!(whole["model"], "tiny-1b");
    assert_eq!(whole["choices"][0]["text"], "tiny heard: say hi");
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let pieces: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .map(|chunk| {
            chunk["choices"][0]["text"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(pieces, "tiny heard: say hi");

    // and the backend lists itself as a model
    let models = json(
        client()
            .get(format!("{}/v1/models", sim.url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(models["data"][0]["id"], "tiny");
}
