//! The `/v1` API beyond services, as a client sees it: the `POST /v1/requests` envelope, the
//! activity timeline, machines and strategies, and the typed problems bad requests get.

mod support;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use support::{Sim, TestServer};

/// Size of the body `/huge` answers: one byte more than an envelope carries.
const HUGE: usize = hestia::http::envelope::MAX_BODY + 1;

/// `POST /v1/requests` with `envelope` as JSON.
async fn envelope(server: &TestServer, envelope: Value) -> reqwest::Response {
    server
        .client()
        .post(format!("{}/v1/requests", server.url))
        .json(&envelope)
        .send()
        .await
        .expect("hestia answers")
}

/// `POST /v1/requests` with a raw body and content type.
async fn raw_envelope(server: &TestServer, content_type: &str, body: String) -> reqwest::Response {
    server
        .client()
        .post(format!("{}/v1/requests", server.url))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("hestia answers")
}

/// Asserts `response` is a problem of type `slug` with `status`; returns its body.
async fn problem(response: reqwest::Response, status: u16, slug: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.expect("problem json");
    let kind = body["type"].as_str().unwrap_or("");
    assert!(kind.ends_with(&format!("/{slug}")), "not {slug}: {body}");
    body
}

async fn json_of(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

/// An upstream managed elsewhere (no starter), on a real loopback socket: `/health`, `/blob`
/// (binary bytes) and `/huge` (more than an envelope carries). Returns its service YAML.
async fn binary_upstream(id: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/blob",
            get(|| async {
                (
                    [(CONTENT_TYPE, "application/octet-stream")],
                    vec![0_u8, 159, 146, 150, 255],
                )
            }),
        )
        .route("/huge", get(|| async { vec![b'x'; HUGE] }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!(
        "  {id}:\n    base_url: \"http://127.0.0.1:{port}\"\n    readiness:\n      http:\n        url: \"http://127.0.0.1:{port}/health\"\n        interval_ms: 20\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_envelope_starts_a_cold_service_and_returns_its_answer_as_json() {
    // Given a cold service whose backend takes 200 ms to listen
    let server = TestServer::start(&[&Sim::new("echo").startup_delay_ms(200)], "").await;

    // When a client sends a JSON body through the envelope, with a query and a header
    let response = envelope(
        &server,
        json!({
            "serviceId": "echo",
            "method": "POST",
            "path": "/v1/chat?model=tiny",
            "headers": {"x-trace": "t1"},
            "body": {"prompt": "hi"}
        }),
    )
    .await;

    // Then the answer wraps the upstream's: its status, its headers, and its JSON body as JSON
    let answer = json_of(response).await;
    assert_eq!(answer["status"], 200);
    assert!(answer.get("bodyBase64").is_none(), "{answer}");
    assert!(
        answer["headers"]["x-hestia-cold-start-ms"].is_string(),
        "the cold start is reported: {answer}"
    );
    let echo = &answer["body"];
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/v1/chat");
    assert_eq!(echo["query"], "model=tiny");
    assert_eq!(echo["headers"]["x-trace"], "t1");
    // And the JSON body was sent as JSON
    assert_eq!(echo["headers"]["content-type"], "application/json");
    let sent: Value = serde_json::from_str(echo["body"].as_str().unwrap_or("")).expect("json");
    assert_eq!(sent, json!({"prompt": "hi"}));

    // When the body is a string, it is sent as it is, with no content type made up
    let answer = json_of(
        envelope(
            &server,
            json!({"serviceId": "echo", "method": "PUT", "path": "/notes", "body": "plain text"}),
        )
        .await,
    )
    .await;
    assert_eq!(answer["body"]["body"], "plain text");
    assert!(answer["body"]["headers"].get("content-type").is_none());

    // When the body is binary, given as base64, the upstream receives those very bytes
    let bytes = BASE64.encode([0_u8, 159, 146, 150]);
    let answer = json_of(
        envelope(
            &server,
            json!({"serviceId": "echo", "method": "POST", "path": "/up", "bodyBase64": bytes}),
        )
        .await,
    )
    .await;
    assert_eq!(answer["body"]["body_base64"], true);
    assert_eq!(answer["body"]["body"], bytes.as_str());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_text_comes_back_as_a_string_and_binary_as_base64() {
    // Given a simulated service and an upstream that answers binary bytes
    let blobs = binary_upstream("blobs").await;
    let server = TestServer::start(&[&Sim::new("echo")], &blobs).await;

    // When the envelope asks the simulated service for a chunked text stream
    let answer = json_of(
        envelope(
            &server,
            json!({"serviceId": "echo", "method": "GET", "path": "/stream?chunks=2&interval_ms=1"}),
        )
        .await,
    )
    .await;
    // Then the text is a string
    assert_eq!(answer["body"], "chunk 1\nchunk 2\n");
    assert!(answer.get("bodyBase64").is_none());

    // When it asks for binary bytes, then they come back base64, flagged
    let answer = json_of(
        envelope(
            &server,
            json!({"serviceId": "blobs", "method": "GET", "path": "/blob"}),
        )
        .await,
    )
    .await;
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["bodyBase64"], true);
    assert_eq!(
        answer["headers"]["content-type"],
        "application/octet-stream"
    );
    let decoded = BASE64
        .decode(answer["body"].as_str().unwrap_or(""))
        .expect("base64");
    assert_eq!(decoded, [0, 159, 146, 150, 255]);

    // When the upstream answers more than an envelope carries, then that is a typed problem
    let response = envelope(
        &server,
        json!({"serviceId": "blobs", "method": "GET", "path": "/huge"}),
    )
    .await;
    let body = problem(response, 413, "payload-too-large").await;
    assert_eq!(body["service"], "blobs");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_paths_that_name_a_host_or_climb_are_refused_without_touching_the_service() {
    let server = TestServer::start(&[&Sim::new("echo")], "").await;
    for path in [
        "http://evil/",
        "//evil/x",
        "/../x",
        "/a/%2e%2e/x",
        "evil.com/x",
    ] {
        // When the envelope's path names a scheme, a host, or climbs above the service
        let response = envelope(
            &server,
            json!({"serviceId": "echo", "method": "GET", "path": path}),
        )
        .await;
        // Then it is an invalid request that says what is wrong with `path`
        let body = problem(response, 400, "invalid-request").await;
        let detail = body["detail"].as_str().unwrap_or("");
        assert!(detail.contains("`path`"), "{path}: {detail}");
    }
    // And the service was never asked to start
    let status = json_of(server.get("/v1/services/echo/status").await).await;
    assert_eq!(status["state"], "cold");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_envelopes_are_400_problems_that_name_the_field() {
    let server = TestServer::start(&[&Sim::new("echo")], "").await;

    // Broken JSON: the problem says where
    let response = raw_envelope(&server, "application/json", r#"{"serviceId": "#.into()).await;
    let body = problem(response, 400, "invalid-request").await;
    assert!(
        body["detail"].as_str().unwrap_or("").contains("line 1"),
        "{body}"
    );

    // A missing field is named
    let response = envelope(&server, json!({"method": "GET", "path": "/"})).await;
    let body = problem(response, 400, "invalid-request").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("missing field `serviceId`"),
        "{body}"
    );

    // A field of the wrong type is named with what was expected
    let response = envelope(
        &server,
        json!({"serviceId": "echo", "method": "GET", "path": "/", "headers": ["x"]}),
    )
    .await;
    let body = problem(response, 400, "invalid-request").await;
    let detail = body["detail"].as_str().unwrap_or("");
    assert!(detail.contains("invalid type"), "{detail}");

    // A misspelt field is named rather than ignored
    let response = envelope(
        &server,
        json!({"serviceId": "echo", "method": "GET", "path": "/", "bodyy": "x"}),
    )
    .await;
    let body = problem(response, 400, "invalid-request").await;
    assert!(
        body["detail"].as_str().unwrap_or("").contains("bodyy"),
        "{body}"
    );

    // A method that is not an HTTP method is named
    let response = envelope(
        &server,
        json!({"serviceId": "echo", "method": "GE T", "path": "/"}),
    )
    .await;
    let body = problem(response, 400, "invalid-request").await;
    assert!(
        body["detail"].as_str().unwrap_or("").contains("`GE T`"),
        "{body}"
    );

    // A body that is not JSON at all is refused as such
    let response = raw_envelope(&server, "text/plain", "serviceId=echo".into()).await;
    let body = problem(response, 415, "invalid-request").await;
    assert!(
        body["detail"].as_str().unwrap_or("").contains("JSON"),
        "{body}"
    );

    // An envelope larger than the limit is too large
    let padding = "x".repeat(hestia::http::envelope::MAX_BODY);
    let oversized = json!({"serviceId": "echo", "method": "POST", "path": "/", "body": padding});
    let response = raw_envelope(&server, "application/json", oversized.to_string()).await;
    problem(response, 413, "payload-too-large").await;

    // An unknown service is a 404, never a default
    let response = envelope(
        &server,
        json!({"serviceId": "nope", "method": "GET", "path": "/"}),
    )
    .await;
    let body = problem(response, 404, "unknown-service").await;
    assert_eq!(body["service"], "nope");
    server.stop().await;
}

/// The activity types of `events`, in the order listed.
fn types(events: &Value) -> Vec<String> {
    events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_lists_a_cold_start_newest_first_and_filters_it() {
    // Given a service started by a request, and another one never used
    let server = TestServer::start(&[&Sim::new("echo"), &Sim::new("idle")], "").await;
    let first = server.get("/services/echo/hello").await;
    assert_eq!(first.status(), 200);

    // When the timeline of the service is read
    let all = json_of(server.get("/v1/activity?service=echo").await).await;
    let kinds = types(&all);
    // Then it holds the start, newest first, and only that service's events
    let requested = kinds.iter().position(|k| k == "start_requested");
    let started = kinds.iter().position(|k| k == "started");
    assert!(
        matches!((started, requested), (Some(s), Some(r)) if s < r),
        "started listed before start_requested: {kinds:?}"
    );
    for event in all["events"].as_array().expect("events") {
        assert_eq!(event["serviceId"], "echo", "{event}");
        assert!(
            event["id"].is_string() && event["at"].is_string(),
            "{event}"
        );
    }

    // When filtered by type, then only that type comes back
    let only = json_of(server.get("/v1/activity?service=echo&type=started").await).await;
    assert_eq!(types(&only), ["started"]);

    // When limited, then the newest events come back
    let newest = json_of(server.get("/v1/activity?service=echo&limit=1").await).await;
    assert_eq!(newest["events"].as_array().map(Vec::len), Some(1));
    assert_eq!(newest["events"][0], all["events"][0]);

    // When only events after now are asked for, or of a service never used, there are none
    let later = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let none = json_of(server.get(&format!("/v1/activity?since={later}")).await).await;
    assert_eq!(types(&none), Vec::<String>::new());
    let idle = json_of(server.get("/v1/activity?service=idle&type=started").await).await;
    assert_eq!(types(&idle), Vec::<String>::new());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_activity_filters_are_400_problems_saying_what_is_valid() {
    let server = TestServer::start(&[&Sim::new("echo")], "").await;

    let body = problem(
        server.get("/v1/activity?type=exploded").await,
        400,
        "invalid-request",
    )
    .await;
    let detail = body["detail"].as_str().unwrap_or("");
    assert!(detail.contains("exploded"), "{detail}");
    assert!(
        detail.contains("start_requested") && detail.contains("idle_shutdown"),
        "{detail}"
    );

    let body = problem(
        server.get("/v1/activity?since=yesterday").await,
        400,
        "invalid-request",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap_or("").contains("RFC 3339"),
        "{body}"
    );

    let body = problem(
        server.get("/v1/activity?limit=many").await,
        400,
        "invalid-request",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap_or("").contains("limit"),
        "{body}"
    );

    let body = problem(
        server.get("/v1/activity?servce=echo").await,
        400,
        "invalid-request",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap_or("").contains("servce"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_list_the_configured_machines_and_what_runs_on_them() {
    // Given two machines, one that can be woken, and a service pinned to the local one
    let machines = "machines:\n  local:\n    role: local\n    address: 127.0.0.1\n    tags: [cpu]\n  gpu:\n    role: remote\n    address: 10.9.8.7\n    tags: [gpu, cuda]\n    wake:\n      wol: {mac: \"aa:bb:cc:dd:ee:ff\"}\n";
    let server =
        TestServer::start_with_globals(machines, &[&Sim::new("echo").key("machine: local")], "")
            .await;

    // When the machines are listed, then both are there as configured, with nothing running
    let list = json_of(server.get("/v1/machines").await).await;
    let all = list["machines"].as_array().expect("machines");
    let ids: Vec<&str> = all.iter().map(|m| m["id"].as_str().unwrap_or("")).collect();
    assert_eq!(ids, ["local", "gpu"]);
    let (local, gpu) = (&all[0], &all[1]);
    assert_eq!(local["role"], "local");
    assert_eq!(local["address"], "127.0.0.1");
    assert_eq!(local["tags"], json!(["cpu"]));
    assert_eq!(local["wake"], Value::Null);
    assert_eq!(local["services"], json!([]));
    assert_eq!(gpu["role"], "remote");
    assert_eq!(gpu["address"], "10.9.8.7");
    assert_eq!(gpu["tags"], json!(["gpu", "cuda"]));
    assert_eq!(gpu["wake"], "wol");
    for machine in all {
        // Never observed yet: unknown, not "asleep"
        assert_eq!(machine["awake"], Value::Null, "{machine}");
        assert!(machine.get("lastSeenAt").is_some(), "{machine}");
    }

    // When the service is started, then its machine lists it
    let started = server.post("/v1/services/echo/start?wait=true").await;
    assert_eq!(started.status(), 200);
    let list = json_of(server.get("/v1/machines").await).await;
    assert_eq!(list["machines"][0]["services"], json!(["echo"]));
    assert_eq!(list["machines"][1]["services"], json!([]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategies_list_the_builtins_and_each_services_choice() {
    let server = TestServer::start(
        &[
            &Sim::new("spread").key("strategy: round_robin"),
            &Sim::new("plain"),
        ],
        "",
    )
    .await;
    let list = json_of(server.get("/v1/strategies").await).await;
    let strategies = list["strategies"].as_array().expect("strategies");
    let names: Vec<&str> = strategies
        .iter()
        .map(|s| s["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        [
            "first_healthy",
            "round_robin",
            "weighted",
            "least_pending",
            "model_router",
            "prefer_awake"
        ]
    );
    for strategy in strategies {
        assert_eq!(strategy["kind"], "builtin");
        assert_eq!(strategy["status"], "loaded");
        assert!(!strategy["description"].as_str().unwrap_or("").is_empty());
        assert_eq!(strategy["error"], Value::Null);
    }
    assert_eq!(
        list["services"],
        json!([
            {"serviceId": "spread", "strategy": "round_robin", "fallback": "first_healthy"},
            {"serviceId": "plain", "strategy": "first_healthy", "fallback": "first_healthy"}
        ])
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_envelope_carries_the_request_id_and_client_address_upstream() {
    let server = TestServer::start(&[&Sim::new("echo")], "").await;
    let response = server
        .client()
        .post(format!("{}/v1/requests", server.url))
        .header("x-request-id", "env-42")
        .json(&json!({"serviceId": "echo", "method": "GET", "path": "/who"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.headers()["x-request-id"], "env-42");
    let answer = json_of(response).await;
    assert_eq!(answer["body"]["headers"]["x-request-id"], "env-42");
    // And the upstream sees the client's address, as through the transparent proxy
    assert_eq!(answer["body"]["headers"]["x-forwarded-for"], "127.0.0.1");
    // And the activity of that request names it
    let queued = json_of(server.get("/v1/activity?service=echo").await).await;
    assert!(
        queued["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["requestId"] == "env-42"),
        "{queued}"
    );
    server.stop().await;
}

/// The `required` list of a schema in `contracts/openapi.yaml`.
fn required_by_spec(schema: &str) -> Vec<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contracts/openapi.yaml"
    ))
    .expect("contracts/openapi.yaml exists");
    let spec: Value = serde_saphyr::from_str(&text).expect("the spec is valid YAML");
    spec["components"]["schemas"][schema]["required"]
        .as_array()
        .unwrap_or_else(|| panic!("schema {schema} has a required list"))
        .iter()
        .filter_map(|f| f.as_str().map(str::to_owned))
        .collect()
}

fn assert_has_fields(body: &Value, schema: &str) {
    for field in required_by_spec(schema) {
        assert!(
            body.get(&field).is_some(),
            "{schema} lacks required `{field}`: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_bodies_carry_every_field_the_spec_requires() {
    let machines = "machines:\n  local:\n    role: local\n    address: 127.0.0.1\n";
    let server =
        TestServer::start_with_globals(machines, &[&Sim::new("echo").key("machine: local")], "")
            .await;
    let answer = json_of(
        envelope(
            &server,
            json!({"serviceId": "echo", "method": "GET", "path": "/"}),
        )
        .await,
    )
    .await;
    assert_has_fields(&answer, "EnvelopeResponse");

    let activity = json_of(server.get("/v1/activity").await).await;
    let events = activity["events"].as_array().expect("events");
    assert!(!events.is_empty());
    for event in events {
        assert_has_fields(event, "ActivityEvent");
    }
    let machines = json_of(server.get("/v1/machines").await).await;
    assert_has_fields(&machines["machines"][0], "Machine");
    let strategies = json_of(server.get("/v1/strategies").await).await;
    assert_has_fields(&strategies["strategies"][0], "Strategy");
    server.stop().await;
}
