//! The dashboard's pages over HTTP (the browser tests in tests/browser.rs drive them live):
//! the services table, a service's page with its cold-start chart, machines, embedded assets,
//! and the banner when auth is off.

mod support;

use support::{Sim, TestServer};

async fn html(server: &TestServer, path: &str) -> String {
    let response = server.get(path).await;
    assert_eq!(response.status(), 200, "{path}");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    response.text().await.expect("html")
}

#[tokio::test]
async fn pages_show_services_their_history_and_machines() {
    let echo = Sim::new("echo").startup_delay_ms(100).key("machine: box");
    let globals = "machines:\n  box:\n    role: local\n    address: 127.0.0.1\n";
    let server = TestServer::start_with_globals(globals, &[&echo], "").await;

    let page = html(&server, "/dashboard").await;
    assert!(
        page.contains("id=\"auth-off\""),
        "auth is off: the banner says so"
    );
    assert!(
        page.contains("<tr data-service=\"echo\" data-state=\"cold\""),
        "{page}"
    );
    assert!(page.contains("action=\"/dashboard/services/echo/start\""));
    assert!(page.contains("name=\"csrf\""), "forms carry the CSRF token");
    assert!(page.contains("name=\"viewport\""), "readable on a phone");

    let before = html(&server, "/dashboard/services/echo").await;
    assert!(before.contains("No start recorded yet"));
    assert_eq!(
        server
            .post("/v1/services/echo/start?wait=true")
            .await
            .status(),
        200
    );
    let after = html(&server, "/dashboard/services/echo").await;
    assert_eq!(
        after.matches("data-outcome=\"success\"").count(),
        1,
        "{after}"
    );
    assert!(after.contains("<span class=\"kind\">started</span>"));
    assert!(after.contains("id=\"log\" data-log=\"echo\""));

    let machines = html(&server, "/dashboard/machines").await;
    assert!(machines.contains("<tr data-machine=\"box\">"), "{machines}");
    assert!(
        machines.contains("href=\"/dashboard/services/echo\""),
        "echo runs on box"
    );

    let css = server.get("/dashboard/assets/dashboard.css").await;
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    let js = server.get("/dashboard/assets/dashboard.js").await;
    assert!(js.text().await.expect("js").contains("EventSource"));
    assert_eq!(server.get("/dashboard/services/nope").await.status(), 404);
    server.stop().await;
}
