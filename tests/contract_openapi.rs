//! `contracts/openapi.yaml` against the real router: every path and method the spec names is
//! routed, and the status bodies the router returns carry every field the spec requires.

mod support;

use serde_json::Value;
use support::{Sim, TestServer};

fn spec() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contracts/openapi.yaml"
    ))
    .expect("contracts/openapi.yaml exists");
    serde_saphyr::from_str(&text).expect("the spec is valid YAML")
}

const METHODS: [&str; 7] = ["get", "post", "put", "patch", "delete", "head", "options"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_in_the_spec_is_served_by_the_router() {
    // Given Hestia with one service, and the spec's paths with `{id}` set to an unknown service
    let server = TestServer::start(&[&Sim::new("known")], "").await;
    let spec = spec();
    let paths = spec["paths"].as_object().expect("paths");
    assert!(!paths.is_empty());
    for (path, item) in paths {
        let concrete = path
            .replace("{id}", "missing")
            .replace("{path}", "some/where");
        for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
            // When each documented operation is called
            let response = server
                .client()
                .request(
                    method.to_uppercase().parse().expect("method"),
                    format!("{}{concrete}", server.url),
                )
                .send()
                .await
                .expect("answer");
            // Then the router knows the route: a success, or one of Hestia's problems — never
            // axum's bare "no such route" 404 or a 405
            let status = response.status().as_u16();
            let problem = response
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
            assert!(status != 405, "{method} {path}: 405, not routed");
            assert!(
                status < 400 || problem || *method == "head",
                "{method} {path}: {status} without a problem body"
            );
            if problem && *method != "head" {
                let body: Value = response.json().await.expect("problem json");
                let slug = body["type"].as_str().unwrap_or("");
                assert!(
                    !slug.ends_with("/not-found"),
                    "{method} {path}: no route: {body}"
                );
            }
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_responses_carry_every_field_the_spec_requires() {
    let server = TestServer::start(&[&Sim::new("known")], "").await;
    let spec = spec();
    let schema = &spec["components"]["schemas"]["ServiceStatus"];
    let required: Vec<&str> = schema["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let properties = schema["properties"].as_object().expect("properties");

    let status: Value = server
        .get("/v1/services/known/status")
        .await
        .json()
        .await
        .expect("json");
    for field in &required {
        assert!(
            status.get(*field).is_some(),
            "status lacks required `{field}`: {status}"
        );
    }
    for field in status.as_object().expect("object").keys() {
        assert!(
            properties.contains_key(field),
            "status field `{field}` is not in the spec"
        );
    }
    let states: Vec<&str> = spec["components"]["schemas"]["State"]["enum"]
        .as_array()
        .expect("enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(states.contains(&status["state"].as_str().unwrap_or("")));
    server.stop().await;
}

/// Every `.route("...")` literal in `src/http`, with `{*path}` written as the spec writes it.
fn routed_paths() -> Vec<String> {
    let mut paths: Vec<String> = support::routed_paths()
        .iter()
        .map(|route| route.replace("{*path}", "{path}"))
        .collect();
    paths.dedup();
    paths
}

#[test]
fn every_routed_path_is_in_the_spec() {
    let spec = spec();
    let documented = spec["paths"].as_object().expect("paths");
    let routed = routed_paths();
    assert!(routed.len() >= 5, "found the route table: {routed:?}");
    // `/services/{id}` and `/services/{id}/` are the proxy's root, documented with `{path}` empty.
    let missing: Vec<_> = routed
        .iter()
        .filter(|p| !documented.contains_key(*p) && !p.starts_with("/services/{id}"))
        .collect();
    assert!(
        missing.is_empty(),
        "routes missing from contracts/openapi.yaml: {missing:?}"
    );
}
