//! Browser tests in headless Chromium (Debian's `chromium` and `chromedriver`, installed by
//! `.ci/run`), driven over WebDriver with `fantoccini`: the waiting page turning into the
//! service, the dashboard following a start live, and a forged action refused. Screenshots go
//! to `<target>/screenshots` (kept by CI as artifacts).

mod support;

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use support::{Sim, TestServer, free_port};

/// A running `chromedriver` and one headless Chromium session through it.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
}

impl Browser {
    async fn start() -> Browser {
        let port = free_port();
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver is installed (apt-get install chromium chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while reqwest::get(format!("{url}/status")).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver never listened"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                            "--disable-dev-shm-usage", "--window-size=1200,900"]}),
        );
        let client = ClientBuilder::rustls()
            .expect("a TLS config")
            .capabilities(capabilities)
            .connect(&url)
            .await
            .expect("a Chromium session");
        Browser {
            client,
            _driver: driver,
        }
    }

    /// Saves a screenshot as `<target>/screenshots/NAME.png`.
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = screenshots();
        std::fs::create_dir_all(&dir).expect("screenshots dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("save the screenshot");
    }

    async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .expect("script runs")
    }

    async fn close(self) {
        let _ = self.client.close().await;
    }
}

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target dir")
        .join("screenshots")
}

/// Polls `css`'s text every 20 ms for `within`, recording each distinct value, until `done`.
async fn watch_text(browser: &Browser, css: &str, within: Duration, done: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let text = browser.text(css).await;
        if seen.last() != Some(&text) {
            seen.push(text.clone());
        }
        if text == done {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "`{css}` never read `{done}`; it read {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiting_page_turns_into_the_service_when_it_is_ready() {
    let notebook = Sim::new("notebook").startup_delay_ms(1500);
    let server = TestServer::start(&[&notebook], "").await;
    let browser = Browser::start().await;

    browser
        .client
        .goto(&format!("{}/services/notebook/lab", server.url))
        .await
        .expect("navigate");
    assert_eq!(browser.text("h1#service").await, "notebook");
    let states = watch_text(&browser, "#state", Duration::from_secs(5), "starting").await;
    assert!(states.contains(&"starting".to_owned()), "{states:?}");
    browser.screenshot("waiting-page").await;

    // The page replaces itself with the service's own answer (the sim echoes the request).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let body = loop {
        let body = browser.text("body").await;
        if body.contains("\"name\":\"notebook\"") {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still waiting: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(body.contains("\"path\":\"/lab\""), "{body}");
    browser.screenshot("waiting-page-ready").await;
    browser.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_a_start_live_and_refuses_a_forged_action() {
    let hash = hestia::auth::password::hash("correct-horse").expect("hash");
    let echo = Sim::new("echo").startup_delay_ms(1500);
    let globals = format!("auth:\n  enabled: true\n  dashboard_password_hash: '{hash}'\n");
    let server = TestServer::start_with_globals(&globals, &[&echo], "").await;
    let browser = Browser::start().await;
    let client = &browser.client;

    // Log in through the form.
    client
        .goto(&format!("{}/dashboard", server.url))
        .await
        .expect("navigate");
    assert!(
        client
            .current_url()
            .await
            .expect("url")
            .path()
            .ends_with("/dashboard/login")
    );
    client
        .find(Locator::Css("input[name=username]"))
        .await
        .expect("user field")
        .send_keys("admin")
        .await
        .expect("type");
    client
        .find(Locator::Css("input[name=password]"))
        .await
        .expect("password field")
        .send_keys("correct-horse")
        .await
        .expect("type");
    client
        .find(Locator::Css("form button"))
        .await
        .expect("button")
        .click()
        .await
        .expect("log in");
    let state = "tr[data-service=\"echo\"] [data-field=\"state\"] .state";
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(state))
        .await
        .expect("the services table");
    assert_eq!(browser.text(state).await, "cold");
    assert_eq!(
        browser.text("#auth-off").await,
        "",
        "no auth-off banner with auth on"
    );

    // Click start: the row goes starting → ready with no reload (the marker survives).
    browser.eval("window.hestiaMarker = 42; return null;").await;
    client
        .find(Locator::Css(
            "tr[data-service=\"echo\"] button[data-action=\"start\"]",
        ))
        .await
        .expect("start button")
        .click()
        .await
        .expect("click start");
    watch_text(&browser, state, Duration::from_secs(20), "starting").await;
    browser.screenshot("dashboard-starting").await;
    let seen = watch_text(&browser, state, Duration::from_secs(20), "ready").await;
    assert_eq!(
        seen.first().map(String::as_str),
        Some("starting"),
        "{seen:?}"
    );
    assert_eq!(browser.eval("return window.hestiaMarker;").await, json!(42));
    browser.screenshot("dashboard-ready").await;

    // A forged stop (a form without the session's CSRF token) is refused, and nothing stops.
    let status = client
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             fetch('/dashboard/services/echo/stop', {method: 'POST',\
               body: new URLSearchParams({csrf: 'forged'}), redirect: 'manual'})\
             .then(r => done(r.status), e => done(String(e)));",
            vec![],
        )
        .await
        .expect("fetch runs");
    assert_eq!(status, json!(403));
    let state_now = client
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             fetch('/v1/services/echo/status').then(r => r.json()).then(s => done(s.state));",
            vec![],
        )
        .await
        .expect("fetch runs");
    assert_eq!(state_now, json!("ready"));
    assert_eq!(browser.text(state).await, "ready");

    // The service page: its chart has the start just made, the timeline its events.
    client
        .goto(&format!("{}/dashboard/services/echo", server.url))
        .await
        .expect("navigate");
    let bars = client
        .find_all(Locator::Css("svg.chart rect[data-outcome=\"success\"]"))
        .await
        .expect("bars");
    assert_eq!(bars.len(), 1);
    assert!(browser.text("#timeline").await.contains("started"));
    browser.screenshot("dashboard-service").await;
    browser.close().await;
    server.stop().await;
}
