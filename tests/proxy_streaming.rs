//! The transparent proxy through real backends: streams pass as produced, WebSockets tunnel both
//! ways, big uploads arrive intact, and the request is passed on exactly (minus hop-by-hop headers).

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::{Sim, TestServer};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_arrive_one_by_one_while_the_backend_is_still_producing() {
    // Given a warm service that streams 4 events 300 ms apart
    let server = TestServer::start(&[&Sim::new("stream")], "").await;
    let mut response = server
        .get("/services/stream/sse?events=4&interval_ms=300")
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/event-stream")
    );

    // When the client reads the body as it comes, then each event is its own arrival
    let mut arrivals = Vec::new();
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        let text = String::from_utf8_lossy(&chunk).into_owned();
        if text.contains("data:") {
            arrivals.push(text);
        }
    }
    assert_eq!(
        arrivals.len(),
        4,
        "4 separate arrivals, not one batch: {arrivals:?}"
    );
    assert!(arrivals.iter().all(|a| a.matches("data:").count() == 1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_is_tunnelled_both_ways_through_a_cold_start() {
    // Given a cold service
    let server = TestServer::start(&[&Sim::new("sock").startup_delay_ms(200)], "").await;
    let ws_url = format!(
        "{}/services/sock/ws",
        server.url.replace("http://", "ws://")
    );

    // When a client opens a WebSocket through Hestia and sends text and binary frames
    let (mut socket, response) = tokio_tungstenite::connect_async(ws_url)
        .await
        .expect("upgrade");
    assert_eq!(response.status(), 101);
    socket
        .send(Message::Text("hello".into()))
        .await
        .expect("send text");
    socket
        .send(Message::Binary(vec![0u8, 159, 146, 150].into()))
        .await
        .expect("send binary");

    // Then both come back from the backend, in order
    let mut echoed = Vec::new();
    while echoed.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => echoed.push(Message::Text(text)),
            Ok(Some(Ok(Message::Binary(bytes)))) => echoed.push(Message::Binary(bytes)),
            Ok(Some(Ok(_))) => {}
            other => panic!("no echo: {other:?}"),
        }
    }
    assert_eq!(echoed[0], Message::Text("hello".into()));
    assert_eq!(echoed[1], Message::Binary(vec![0u8, 159, 146, 150].into()));

    // And while the socket is open the service counts it in flight
    let status: Value = server
        .get("/v1/services/sock/status")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(status["inFlight"], 1);
    socket.close(None).await.expect("close");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_upload_arrives_intact_through_a_cold_start() {
    // Given a cold service, and 50 MB of data the client streams in 1 MB chunks
    let server = TestServer::start(&[&Sim::new("sink").startup_delay_ms(200)], "").await;
    let chunk: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let mut expected = Sha256::new();
    for _ in 0..50 {
        expected.update(&chunk);
    }
    let expected = hex::encode(expected.finalize());
    let chunks =
        futures_util::stream::iter((0..50).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));

    // When it is uploaded through Hestia
    let response = server
        .client()
        .post(format!("{}/services/sink/upload", server.url))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("answer");

    // Then the backend received every byte, unchanged
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-hestia-cold-start-ms"));
    let received: Value = response.json().await.expect("json");
    assert_eq!(received["bytes"], 50 * 1024 * 1024);
    assert_eq!(received["sha256"], expected);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_query_encoding_and_end_to_end_headers_pass_but_hop_by_hop_headers_do_not() {
    let server = TestServer::start(&[&Sim::new("mirror")], "").await;
    let client = server.client();
    let url = format!(
        "{}/services/mirror/a%20b/c%2Fd?q=%C3%A9t%C3%A9&x=1&x=2",
        server.url
    );

    // OPTIONS and query/percent-encoding pass unchanged
    let options = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("x-kept", "yes")
        .header("connection", "x-private, keep-alive")
        .header("x-private", "only-for-hestia")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic c2VjcmV0");
    let echo: Value = claiming_a_forwarder(options)
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(echo["method"], "OPTIONS");
    assert_eq!(echo["path"], "/a%20b/c%2Fd");
    assert_eq!(echo["query"], "q=%C3%A9t%C3%A9&x=1&x=2");
    let headers = echo["headers"].as_object().expect("headers");
    assert_eq!(headers["x-kept"], "yes");
    for hop in [
        "x-private",
        "keep-alive",
        "proxy-authorization",
        "connection",
    ] {
        assert!(
            !headers.contains_key(hop),
            "hop-by-hop `{hop}` reached the upstream: {headers:?}"
        );
    }
    assert_forwarded(headers, &server.url);
    assert!(headers.contains_key("x-request-id"));

    // A request with a body (carried by another client inside Hestia) is forwarded the same way
    let echo: Value = claiming_a_forwarder(client.post(&url).body("{}"))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body"], "{}");
    assert_forwarded(echo["headers"].as_object().expect("headers"), &server.url);

    // HEAD answers with headers and no body
    let head = client.head(&url).send().await.expect("answer");
    assert_eq!(head.status(), 200);
    assert!(head.bytes().await.expect("body").is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_of_the_data_path_are_typed_problems() {
    // Given: a tiny body limit; a service whose upstream is slow to answer; one that is gone
    let dead = support::free_port();
    let extra = format!(
        "  gone:\n    base_url: \"http://127.0.0.1:{dead}\"\n    readiness: {{warmup_ms: 0}}\n"
    );
    let slow = Sim::new("slow").key("upstream_timeout_ms: 200");
    let server =
        TestServer::start_with_globals("max_request_body_bytes: 1024", &[&slow], &extra).await;
    let client = server.client();
    let problem = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let retry_after = response.headers().contains_key("retry-after");
        let body: Value = response.json().await.expect("problem json");
        let slug = body["type"]
            .as_str()
            .unwrap_or("")
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_owned();
        (status, slug, retry_after)
    };

    // A body over the limit (declared or streamed) → 413 payload-too-large
    let declared = client
        .post(format!("{}/services/slow/upload", server.url))
        .body(vec![0u8; 4096]);
    assert_eq!(
        problem(declared.send().await.expect("answer")).await,
        (413, "payload-too-large".into(), false)
    );
    let streamed =
        futures_util::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![1u8; 512])));
    let streamed = client
        .post(format!("{}/services/slow/upload", server.url))
        .body(reqwest::Body::wrap_stream(streamed));
    assert_eq!(problem(streamed.send().await.expect("answer")).await.0, 413);

    // An upstream slower than upstream_timeout_ms → 504 upstream-timeout
    let response = client
        .get(format!("{}/services/slow/slow?ms=3000", server.url))
        .send()
        .await;
    assert_eq!(
        problem(response.expect("answer")).await,
        (504, "upstream-timeout".into(), false)
    );

    // An upstream that refuses connections → 502 upstream-unreachable
    let response = client
        .get(format!("{}/services/gone/x", server.url))
        .send()
        .await;
    assert_eq!(
        problem(response.expect("answer")).await,
        (502, "upstream-unreachable".into(), false)
    );
    server.stop().await;
}

/// A request that says it came through a proxy at 10.0.0.1, over HTTPS.
fn claiming_a_forwarder(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    request
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-forwarded-proto", "https")
}

/// The backend was told who asked (after whoever the client said came before it), for which
/// host, over plain HTTP (whatever the client claimed), under which prefix.
fn assert_forwarded(headers: &serde_json::Map<String, Value>, hestia_url: &str) {
    assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-prefix"], "/services/mirror");
    let host = hestia_url.trim_start_matches("http://");
    assert_eq!(headers["x-forwarded-host"], host);
    assert_ne!(
        headers["host"], host,
        "the backend's own host, not Hestia's"
    );
}
