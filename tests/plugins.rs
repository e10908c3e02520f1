//! Rhai strategy plugins through the real gateway: a plugin picks the instance, an edited file
//! changes routing without a restart, and a plugin that fails never fails a request.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Instance, Sim, TestServer};

const PICK_ONE: &str = "fn select(ctx, candidates) { 1 }";
const PICK_ZERO: &str = "fn select(ctx, candidates) { 0 }";

/// The backend that answered a GET to `service`, and the status.
async fn answered_by(server: &TestServer, service: &str) -> (u16, String) {
    let response = server.get(&format!("/services/{service}/hello")).await;
    let status = response.status().as_u16();
    let echo: Value = response.json().await.unwrap_or(Value::Null);
    (status, echo["name"].as_str().unwrap_or("").to_owned())
}

fn strategy<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["strategies"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("{name} is not listed: {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_a_plugin_changes_routing_within_two_seconds_without_a_restart() {
    // Given a service whose plugin sends everything to its instance b
    let b = Instance::spawn("b").await;
    let svc = Sim::new("svc")
        .key("strategy: pick")
        .key(&format!("instances: [{{url: \"{}\"}}]", b.url()));
    let server = TestServer::start_with_plugins(&[("pick", PICK_ONE)], &[&svc], "").await;
    for _ in 0..3 {
        assert_eq!(answered_by(&server, "svc").await, (200, "b".to_owned()));
    }
    let list: Value = server
        .get("/v1/strategies")
        .await
        .json()
        .await
        .expect("json");
    let pick = strategy(&list, "pick");
    assert_eq!(pick["kind"], "plugin");
    assert_eq!(pick["status"], "loaded");
    assert!(
        pick["source"]
            .as_str()
            .unwrap_or("")
            .ends_with("strategies/pick.rhai")
    );
    assert_eq!(pick["decisions"]["chosen"], 3);

    // When the file is edited to pick the service's own backend
    server.write_plugin("pick", PICK_ZERO);

    // Then within 2 s requests go there, with no failed request meanwhile
    let edited = tokio::time::Instant::now();
    loop {
        let (status, name) = answered_by(&server, "svc").await;
        assert_eq!(status, 200);
        if name == "svc" {
            break;
        }
        assert!(
            edited.elapsed() < Duration::from_secs(2),
            "the edit was not picked up within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..3 {
        assert_eq!(answered_by(&server, "svc").await, (200, "svc".to_owned()));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_loops_errors_answers_nonsense_or_does_not_compile_falls_back() {
    // Given services whose plugins go wrong in every way, each falling back to round robin over
    // its own backend and instance b, and a plugin named like a built-in
    let b = Instance::spawn("b").await;
    let plugins = [
        ("loops", "fn select(ctx, candidates) { loop { } }"),
        (
            "throws",
            "fn select(ctx, candidates) { throw \"no GPU today\"; }",
        ),
        (
            "nonsense",
            "fn select(ctx, candidates) { \"the fast one\" }",
        ),
        ("too_far", "fn select(ctx, candidates) { 7 }"),
        ("broken", "fn select(ctx, candidates) { let = ; }"),
        ("round_robin", "fn select(ctx, candidates) { 0 }"),
    ];
    let services: Vec<Sim> = ["loops", "throws", "nonsense", "too_far", "broken"]
        .iter()
        .map(|name| {
            Sim::new(&format!("svc-{name}"))
                .key(&format!("strategy: {name}"))
                .key("fallback_strategy: round_robin")
                .key(&format!("instances: [{{url: \"{}\"}}]", b.url()))
        })
        .collect();
    let refs: Vec<&Sim> = services.iter().collect();
    let server = TestServer::start_with_plugins(&plugins, &refs, "").await;

    // When each gets four requests, then every one is answered, by the fallback's turns
    for sim in &services {
        let mut names = Vec::new();
        for _ in 0..4 {
            let (status, name) = answered_by(&server, &sim.id).await;
            assert_eq!(status, 200, "{} failed a request", sim.id);
            names.push(name);
        }
        names.sort();
        assert_eq!(names, ["b", "b", sim.id.as_str(), sim.id.as_str()]);
    }

    // And /v1/strategies shows each failure
    let list: Value = server
        .get("/v1/strategies")
        .await
        .json()
        .await
        .expect("json");
    let expected = [
        ("loops", "Too many operations"),
        ("throws", "no GPU today"),
        ("nonsense", "the fast one"),
        ("too_far", "returned 7"),
        ("broken", "does not compile"),
    ];
    for (name, message) in expected {
        let plugin = strategy(&list, name);
        assert_eq!(plugin["decisions"]["errors"], 4, "{plugin}");
        let last = plugin["lastError"]["message"].as_str().unwrap_or("");
        assert!(last.contains(message), "{name}: {last}");
    }
    assert_eq!(strategy(&list, "broken")["status"], "failed");
    assert_eq!(strategy(&list, "loops")["status"], "loaded");
    let refused = list["strategies"]
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|s| s["kind"] == "plugin" && s["name"] == "round_robin")
        })
        .expect("the refused plugin is listed");
    assert_eq!(refused["status"], "failed");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or("")
            .contains("name of a built-in"),
        "{refused}"
    );
    assert_eq!(strategy(&list, "round_robin")["kind"], "builtin");
    server.stop().await;
}
