//! Per-request strategies through the real gateway: model routing from the JSON body, turn and
//! weight distribution, and an instance that is killed, skipped and found back.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Instance, Sim, TestServer};

/// POSTs `body` to `/services/{service}/v1/generate`; the status and the echo's answer.
async fn post_json(server: &TestServer, service: &str, body: &Value) -> (u16, Value) {
    post_text(server, service, body.to_string()).await
}

/// The same with the body's text as written (field order kept).
async fn post_text(server: &TestServer, service: &str, body: String) -> (u16, Value) {
    let response = server
        .client()
        .post(format!("{}/services/{service}/v1/generate", server.url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("hestia answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Which backend answered each of `n` GETs to `service`.
async fn spread(server: &TestServer, service: &str, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let echo: Value = server
            .get(&format!("/services/{service}/hello"))
            .await
            .json()
            .await
            .expect("an echo");
        let name = echo["name"].as_str().expect("a backend name").to_owned();
        *counts.entry(name).or_default() += 1;
    }
    counts
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_model_reaches_its_instance_and_other_models_go_to_the_fallback() {
    // Given a service whose own backend serves llama3, an instance serving mistral, and a third
    // instance only the fallback (round robin) uses
    let b = Instance::spawn("b").await;
    let c = Instance::spawn("c").await;
    let llm = Sim::new("llm");
    let llm = llm
        .clone()
        .key("strategy: model_router")
        .key("fallback_strategy: round_robin")
        .key(&format!("instances: [{{url: \"{}\"}}]", c.url()))
        .key(&format!(
            "routing: {{model_key: model, by_model: {{llama3: \"{}\", mistral: \"{}\"}}}}",
            llm.url(),
            b.url()
        ));
    let server =
        TestServer::start_with_globals("strategy_body_prefix_bytes: 256", &[&llm], "").await;

    // When requests name llama3 and mistral, they reach their instances, with their bodies whole
    for _ in 0..3 {
        let (status, echo) = post_json(&server, "llm", &json!({"model": "llama3"})).await;
        assert_eq!(
            (status, echo["name"].as_str()),
            (200, Some("llm")),
            "{echo}"
        );
        let long = "x".repeat(10_000);
        let body = format!(
            r#"{{"model": "mistral", "messages": [{{"role": "user", "content": "{long}"}}]}}"#
        );
        let (status, echo) = post_text(&server, "llm", body.clone()).await;
        assert_eq!((status, echo["name"].as_str()), (200, Some("b")));
        assert_eq!(
            echo["body"].as_str(),
            Some(body.as_str()),
            "the prefix read for routing was replayed"
        );
    }

    // Then an unknown model, a body without the key, a non-JSON body and a model named past the
    // prefix all go to the fallback, which takes every instance in turn
    let padding = "p".repeat(400);
    let unmapped = [
        json!({"model": "phi3"}).to_string(),
        json!({"prompt": "hello"}).to_string(),
        "model=mistral".to_owned(),
        format!(r#"{{"padding": "{padding}", "model": "mistral"}}"#),
    ];
    let mut by_fallback = BTreeMap::<String, usize>::new();
    for body in unmapped.iter().cycle().take(8) {
        let (status, echo) = post_text(&server, "llm", body.clone()).await;
        assert_eq!(status, 200);
        *by_fallback
            .entry(echo["name"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    // (candidates: the service's own backend, its instance c, then the mapped b)
    assert_eq!(by_fallback, counts(&[("b", 2), ("c", 3), ("llm", 3)]));

    // And the decisions are counted per strategy and outcome
    let list: Value = server
        .get("/v1/strategies")
        .await
        .json()
        .await
        .expect("json");
    let find = |name: &str| {
        list["strategies"]
            .as_array()
            .and_then(|all| all.iter().find(|s| s["name"] == name).cloned())
            .expect("listed")
    };
    assert_eq!(find("model_router")["decisions"]["chosen"], 6);
    assert_eq!(find("model_router")["decisions"]["noOpinion"], 8);
    assert_eq!(find("round_robin")["decisions"]["chosen"], 8);
    assert_eq!(
        list["services"][0],
        json!({"serviceId": "llm", "strategy": "model_router", "fallback": "round_robin"})
    );
    let metrics = server.get("/metrics").await.text().await.expect("text");
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("hestia_strategy_decisions_total")
                && l.contains("service=\"llm\"")
                && l.contains("strategy=\"model_router\"")
                && l.contains("outcome=\"chosen\"")
        })
        .unwrap_or_else(|| panic!("no decision counter in /metrics:\n{metrics}"));
    assert!(line.ends_with(" 6"), "{line}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_and_weights_distribute_as_configured() {
    // Given one service taking its instances in turn and one weighting them 1:2:1
    let b = Instance::spawn("b").await;
    let c = Instance::spawn("c").await;
    let turns = Sim::new("turns").key("strategy: round_robin").key(&format!(
        "instances: [{{url: \"{}\"}}, {{url: \"{}\"}}]",
        b.url(),
        c.url()
    ));
    let weights = Sim::new("weights").key("strategy: weighted").key(&format!(
        "instances: [{{url: \"{}\", weight: 2}}, {{url: \"{}\", weight: 1}}]",
        b.url(),
        c.url()
    ));
    let server = TestServer::start(&[&turns, &weights], "").await;

    // When many requests go to each, then they spread exactly as configured
    assert_eq!(
        spread(&server, "turns", 30).await,
        counts(&[("b", 10), ("c", 10), ("turns", 10)])
    );
    assert_eq!(
        spread(&server, "weights", 40).await,
        counts(&[("b", 20), ("c", 10), ("weights", 10)])
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_is_skipped_and_comes_back_after_recovery() {
    // Given a service taking its own backend and an instance in turn
    let b = Instance::spawn("b").await;
    let svc = Sim::new("svc")
        .key("strategy: round_robin")
        .key(&format!("instances: [{{url: \"{}\"}}]", b.url()));
    let server = TestServer::start(&[&svc], "").await;
    assert_eq!(
        spread(&server, "svc", 4).await,
        counts(&[("b", 2), ("svc", 2)])
    );

    // When the instance is killed, then at most the request that found it dead fails, and the
    // others all go to the service's own backend
    let port = b.kill().await;
    let mut failed = 0;
    let mut answered_by = BTreeMap::<String, usize>::new();
    for _ in 0..10 {
        let response = server.get("/services/svc/hello").await;
        if response.status() == 502 {
            failed += 1;
            continue;
        }
        let echo: Value = response.json().await.expect("an echo");
        *answered_by
            .entry(echo["name"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    assert!(failed <= 1, "{failed} requests failed");
    assert_eq!(answered_by, counts(&[("svc", 10 - failed)]));

    // When it comes back at the same address, then the background probe restores it
    let _b = Instance::spawn_on("b", port).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if spread(&server, "svc", 2).await.contains_key("b") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the instance was not restored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}
