//! `hestia serve` as a client sees it: real HTTP on an ephemeral port, real backends.

mod support;

use serde_json::Value;
use support::{Sim, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_boots_and_answers_health_and_the_service_list() {
    // Given Hestia serving two cold services
    let server = TestServer::start(&[&Sim::new("alpha"), &Sim::new("beta")], "").await;

    // When a client checks liveness and readiness, then both answer 200
    assert_eq!(server.get("/healthz").await.status(), 200);
    let ready: Value = server.get("/readyz").await.json().await.expect("json");
    assert_eq!(ready["status"], "ready");

    // And the service list shows both, cold, with every documented status field
    let list: Value = server.get("/v1/services").await.json().await.expect("json");
    let services = list["services"].as_array().expect("a list");
    let ids: Vec<_> = services
        .iter()
        .map(|s| s["serviceId"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ids, ["alpha", "beta"]);
    for service in services {
        assert_eq!(service["state"], "cold");
        assert_eq!(service["readiness"], "not_ready");
        for field in [
            "machineId",
            "queuePending",
            "inFlight",
            "lastUsedAt",
            "lastError",
            "automation",
        ] {
            assert!(
                service.get(field).is_some(),
                "status lacks `{field}`: {service}"
            );
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_a_cold_service_starts_it_and_is_proxied() {
    // Given a cold service whose backend takes 300 ms to listen
    let server = TestServer::start(&[&Sim::new("echo").startup_delay_ms(300)], "").await;

    // When a client calls it through Hestia with a query string
    let response = server
        .client()
        .post(format!(
            "{}/services/echo/v1/chat?model=tiny&x=a%20b",
            server.url
        ))
        .header("x-request-id", "cold-1")
        .body("hello")
        .send()
        .await
        .expect("answer");

    // Then the backend answers, and Hestia says the request waited for a cold start
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-hestia-cold-start-ms"));
    assert_eq!(response.headers()["x-request-id"], "cold-1");
    let echo: Value = response.json().await.expect("echo json");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/v1/chat");
    assert_eq!(echo["body"], "hello");
    assert!(
        echo["query"].to_string().contains("tiny"),
        "query kept: {echo}"
    );

    // And the status shows it ready
    let status: Value = server
        .get("/v1/services/echo/status")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(status["state"], "ready");
    assert_eq!(status["readiness"], "ready");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_stop_answer_202_or_409_by_state() {
    let server = TestServer::start(&[&Sim::new("svc")], "").await;

    // A cold service cannot be stopped
    let response = server.post("/v1/services/svc/stop").await;
    assert_eq!(response.status(), 409);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );

    // Starting with ?wait=true answers once it is ready; starting again is a conflict
    let response = server.post("/v1/services/svc/start?wait=true").await;
    assert_eq!(response.status(), 200);
    let status: Value = response.json().await.expect("json");
    assert_eq!(status["state"], "ready");
    assert_eq!(server.post("/v1/services/svc/start").await.status(), 409);

    // Stopping a ready service is accepted
    assert_eq!(server.post("/v1/services/svc/stop").await.status(), 202);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_service_is_a_404_problem_naming_the_known_ones() {
    let server = TestServer::start(&[&Sim::new("known")], "").await;
    for path in ["/v1/services/nope/status", "/services/nope/anything"] {
        let response = server.get(path).await;
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.expect("json");
        assert!(
            problem["type"]
                .as_str()
                .unwrap_or("")
                .ends_with("/unknown-service")
        );
        assert_eq!(problem["service"], "nope");
        assert!(problem["detail"].as_str().unwrap_or("").contains("known"));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_climbing_above_the_service_is_refused() {
    let server = TestServer::start(&[&Sim::new("jail")], "").await;
    for path in [
        "/services/jail/a/%2e%2e/%2E%2E/etc/passwd",
        "/services/jail/../../secret",
        "/services/jail/x/..%2f..%2fsecret",
    ] {
        let (status, body) = support::raw_get(&server.url, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("invalid-request"), "{path}: {body}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_wrong_methods_get_problems_too() {
    let server = TestServer::start(&[&Sim::new("any")], "").await;

    // A path nothing serves → 404 not-found, saying where things are
    let response = server.get("/v2/whatever").await;
    assert_eq!(response.status(), 404);
    let problem: Value = response.json().await.expect("problem json");
    assert!(
        problem["type"]
            .as_str()
            .unwrap_or("")
            .ends_with("/not-found")
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or("")
            .contains("/services/")
    );

    // A known path with a method it does not take → 405 invalid-request naming the method
    let response = server
        .client()
        .delete(format!("{}/v1/services", server.url))
        .send()
        .await;
    let response = response.expect("answer");
    assert_eq!(response.status(), 405);
    let problem: Value = response.json().await.expect("problem json");
    assert!(
        problem["type"]
            .as_str()
            .unwrap_or("")
            .ends_with("/invalid-request")
    );
    assert!(problem["detail"].as_str().unwrap_or("").contains("DELETE"));
    server.stop().await;
}
