//! The waiting page: browsers navigating to a cold service get a page at once (and start it);
//! API clients still wait in the queue; `waiting_page: off` turns it off per service.

mod support;

use std::time::Duration;

use hestia_actors::service::State;
use support::{Sim, TestServer};

const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

async fn navigate(server: &TestServer, path: &str) -> reqwest::Response {
    server
        .client()
        .get(format!("{}{path}", server.url))
        .header("accept", BROWSER_ACCEPT)
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .expect("hestia answers")
}

async fn state_of(server: &TestServer, id: &str) -> String {
    let body: serde_json::Value = server
        .get(&format!("/v1/services/{id}/status"))
        .await
        .json()
        .await
        .expect("status");
    body["state"].as_str().unwrap_or("").to_owned()
}

async fn wait_until_state(server: &TestServer, id: &str, state: State) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while state_of(server, id).await != state.as_str() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never became {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_browser_gets_the_waiting_page_at_once_and_the_service_once_ready() {
    let notebook = Sim::new("notebook").startup_delay_ms(400);
    let server = TestServer::start(&[&notebook], "").await;

    let page = navigate(&server, "/services/notebook/lab").await;
    assert_eq!(page.status(), 503);
    assert_eq!(page.headers()["x-hestia-waiting-page"], "1");
    assert_eq!(page.headers()["retry-after"], "2");
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.expect("html");
    assert!(html.contains("<h1 id=\"service\">notebook</h1>"), "{html}");
    assert!(html.contains("no start recorded yet"), "{html}");
    // The navigation itself started the service.
    assert_ne!(state_of(&server, "notebook").await, "cold");

    wait_until_state(&server, "notebook", State::Ready).await;
    let real = navigate(&server, "/services/notebook/lab").await;
    assert_eq!(real.status(), 200);
    assert!(real.headers().get("x-hestia-waiting-page").is_none());

    // Next time, the page knows how long a start takes here.
    assert_eq!(
        server.post("/v1/services/notebook/stop").await.status(),
        202
    );
    wait_until_state(&server, "notebook", State::Cold).await;
    let html = navigate(&server, "/services/notebook/")
        .await
        .text()
        .await
        .expect("html");
    assert!(html.contains("usually ready in "), "{html}");
    server.stop().await;
}

#[tokio::test]
async fn api_clients_and_services_with_the_page_off_wait_in_the_queue() {
    let api = Sim::new("api").startup_delay_ms(200);
    let plain = Sim::new("plain")
        .startup_delay_ms(200)
        .key("waiting_page: off");
    let server = TestServer::start(&[&api, &plain], "").await;

    let answer = server
        .client()
        .get(format!("{}/services/api/hello", server.url))
        .header("accept", "application/json")
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status(), 200);
    assert!(answer.headers().contains_key("x-hestia-cold-start-ms"));

    let answer = navigate(&server, "/services/plain/hello").await;
    assert_eq!(answer.status(), 200);
    assert!(answer.headers().contains_key("x-hestia-cold-start-ms"));
    server.stop().await;
}
