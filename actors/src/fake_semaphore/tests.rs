//! The fake against its contract, over real HTTP.

use axum::http::header;
use serde_json::{Value, json};

use super::*;

async fn fake() -> FakeSemaphoreHandle {
    spawn(FakeSemaphoreOptions::with_token("tok").template(3, FakeTemplate::succeeding("start")))
        .await
        .expect("fake semaphore")
}

#[tokio::test]
async fn given_the_fake_then_ping_is_plain_pong_and_unknown_paths_are_text_404() {
    let fake = fake().await;
    let ping = reqwest::get(format!("{}/api/ping", fake.url()))
        .await
        .unwrap();
    assert_eq!(
        ping.headers()[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    assert_eq!(ping.text().await.unwrap(), "pong");
    let slash = reqwest::get(format!("{}/api/projects/", fake.url()))
        .await
        .unwrap();
    assert_eq!(slash.status(), 404);
    assert_eq!(slash.text().await.unwrap(), "Not Found\n");
}

#[tokio::test]
async fn given_no_token_then_401_with_an_empty_json_typed_body() {
    let fake = fake().await;
    let response = reqwest::get(format!("{}/api/projects", fake.url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(response.text().await.unwrap(), "");
}

#[tokio::test]
async fn given_a_task_when_started_polled_and_stopped_then_the_contract_holds() {
    let fake = fake().await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}/api/project/1{path}", fake.url());
    let created = client
        .post(url("/tasks"))
        .bearer_auth("tok")
        .body(r#"{"template_id":3,"environment":"{\"service_id\":\"llm\"}","extra":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let text = created.text().await.unwrap();
    assert!(text.ends_with("}\n"), "{text:?}");
    let task: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (task["status"].as_str(), task["secret"].as_str()),
        (Some("waiting"), Some("{}"))
    );
    assert_eq!(
        fake.started_tasks()[0].environment,
        json!({"service_id": "llm"})
    );

    let nested = client
        .post(url("/tasks"))
        .bearer_auth("tok")
        .body(r#"{"template_id":3,"environment":{"a":1}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(nested.status(), 400, "environment must be a string");
    let unknown = client
        .get(url("/tasks/999"))
        .bearer_auth("tok")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400, "an unknown task is a 400, not a 404");
    let bodiless = client
        .post(url("/tasks/1/stop"))
        .bearer_auth("tok")
        .send()
        .await
        .unwrap();
    assert_eq!(bodiless.status(), 400, "stop needs a JSON body");
    let stopped = client
        .post(url("/tasks/1/stop"))
        .bearer_auth("tok")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.status(), 204);
}
