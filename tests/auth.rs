//! Auth that holds: API keys made by the real CLI, scopes on the proxy, control and read routes,
//! the failure limit, dashboard logins and CSRF, and the browser defences (cross-site refusal,
//! `allowed_hosts`, CORS) — all against the real router over loopback and a real SQLite file.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use support::{Sim, TestServer, create_key, eventually_async, hestia_cli};

const AUTH_ON: &str = "auth:\n  enabled: true\n";

async fn with_auth(globals: &str, services: &[&Sim]) -> TestServer {
    TestServer::start_with_globals(globals, services, "").await
}

/// Waits until `serve` has read `key` from the database (it re-reads every 500 ms). Polls
/// slowly: each refused poll counts against this address's failure budget.
async fn wait_for_key(server: &TestServer, key: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while get_with(server, "/v1/services", ("x-api-key", key))
        .await
        .status()
        == 401
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key was not accepted within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn get_with(server: &TestServer, path: &str, header: (&str, &str)) -> reqwest::Response {
    server
        .client()
        .get(format!("{}{path}", server.url))
        .header(header.0, header.1)
        .send()
        .await
        .expect("hestia answers")
}

async fn post_with(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = server.client().post(format!("{}{path}", server.url));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("hestia answers")
}

/// Asserts a problem response of `status` and `slug`; returns its body.
async fn problem(response: reqwest::Response, status: u16, slug: &str) -> Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body: Value = response.json().await.expect("problem json");
    assert!(
        body["type"].as_str().unwrap().ends_with(slug),
        "expected {slug}: {body}"
    );
    body
}

async fn unauthorized(response: reqwest::Response) {
    assert!(
        response.headers().contains_key("www-authenticate"),
        "401 carries a challenge"
    );
    problem(response, 401, "/unauthorized").await;
}

fn api_key(key: &str) -> (&'static str, String) {
    ("x-api-key", key.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_unknown_and_altered_keys_are_401_and_probes_stay_open() {
    // Given Hestia with auth on and one key made by the CLI
    let server = with_auth(AUTH_ON, &[&Sim::new("echo")]).await;
    let key = create_key(&server.config_path(), "reader", &["read"], &[]).await;
    assert!(key.starts_with("hst_"));
    // Then health probes need nothing
    assert_eq!(server.get("/healthz").await.status(), 200);
    assert_eq!(server.get("/readyz").await.status(), 200);
    // And every other route wants a key: missing, unknown or altered is 401
    unauthorized(server.get("/v1/services").await).await;
    unauthorized(server.get("/metrics").await).await;
    unauthorized(server.post("/v1/services/echo/start").await).await;
    unauthorized(
        get_with(
            &server,
            "/v1/services",
            ("x-api-key", "hst_000000000000_nope"),
        )
        .await,
    )
    .await;
    let mut altered = key.clone();
    let last = altered.pop().unwrap();
    altered.push(if last == 'x' { 'y' } else { 'x' });
    unauthorized(get_with(&server, "/v1/services", ("x-api-key", &altered)).await).await;
    // And the key itself passes within a second, as X-API-Key and as a Bearer token
    wait_for_key(&server, &key).await;
    let bearer = format!("Bearer {key}");
    let response = get_with(&server, "/v1/services", ("authorization", &bearer)).await;
    assert_eq!(response.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_decide_proxy_control_and_read_routes() {
    // Given keys for reading, controlling `echo`, and proxying to `echo`
    let echo = Sim::new("echo");
    let server = with_auth(AUTH_ON, &[&echo, &Sim::new("other")]).await;
    let config = server.config_path();
    let reader = create_key(&config, "reader", &["read"], &[]).await;
    let controller = create_key(&config, "controller", &["control:echo"], &[]).await;
    let user = create_key(&config, "user", &["proxy:echo"], &[]).await;
    let admin = create_key(&config, "admin", &["admin"], &[]).await;
    wait_for_key(&server, &admin).await;
    // Read routes: `read` passes, others are 403
    assert_eq!(
        get_with(&server, "/v1/activity", api_key(&reader).pair())
            .await
            .status(),
        200
    );
    problem(
        get_with(&server, "/v1/services", api_key(&user).pair()).await,
        403,
        "/forbidden",
    )
    .await;
    problem(
        get_with(&server, "/metrics", api_key(&controller).pair()).await,
        403,
        "/forbidden",
    )
    .await;
    // Control routes: `control:echo` starts echo but not other; `read` starts nothing
    let start = post_with(
        &server,
        "/v1/services/echo/start",
        &[api_key(&controller).pair()],
    )
    .await;
    assert_eq!(start.status(), 202);
    problem(
        post_with(
            &server,
            "/v1/services/other/start",
            &[api_key(&controller).pair()],
        )
        .await,
        403,
        "/forbidden",
    )
    .await;
    problem(
        post_with(
            &server,
            "/v1/services/echo/stop",
            &[api_key(&reader).pair()],
        )
        .await,
        403,
        "/forbidden",
    )
    .await;
    // Proxy routes: `proxy:echo` reaches echo, not other; `control:echo` cannot proxy
    let through = get_with(&server, "/services/echo/hello", api_key(&user).pair()).await;
    assert_eq!(through.status(), 200);
    problem(
        get_with(&server, "/services/other/hello", api_key(&user).pair()).await,
        403,
        "/forbidden",
    )
    .await;
    problem(
        get_with(&server, "/services/echo/hello", api_key(&controller).pair()).await,
        403,
        "/forbidden",
    )
    .await;
    // The envelope needs proxy scope for the service named in its body
    let envelope = |key: &str| {
        server
            .client()
            .post(format!("{}/v1/requests", server.url))
            .header("x-api-key", key)
            .json(&serde_json::json!({"serviceId": "echo", "method": "GET", "path": "/"}))
            .send()
    };
    assert_eq!(envelope(&user).await.unwrap().status(), 200);
    problem(envelope(&reader).await.unwrap(), 403, "/forbidden").await;
    server.stop().await;
}

trait Pair {
    fn pair(&self) -> (&str, &str);
}

impl Pair for (&'static str, String) {
    fn pair(&self) -> (&str, &str) {
        (self.0, &self.1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_expired_keys_stop_working_while_serving() {
    let server = with_auth(AUTH_ON, &[&Sim::new("echo")]).await;
    let config = server.config_path();
    let key = create_key(&config, "ci", &["read"], &[]).await;
    let short = create_key(&config, "short", &["read"], &["--expires", "2s"]).await;
    wait_for_key(&server, &key).await;
    // When the key is revoked through the CLI, it is refused within a second
    let (ok, _, stderr) = hestia_cli(&config, &["keys", "revoke", "ci"], "").await;
    assert!(ok, "{stderr}");
    eventually_async(
        "the revoked key is refused",
        Duration::from_secs(2),
        || async {
            get_with(&server, "/v1/services", ("x-api-key", &key))
                .await
                .status()
                == 401
        },
    )
    .await;
    // And a key past its expiry is refused
    eventually_async(
        "the expired key is refused",
        Duration::from_secs(5),
        || async {
            get_with(&server, "/v1/services", ("x-api-key", &short))
                .await
                .status()
                == 401
        },
    )
    .await;
    // And `keys list` shows both, never the key
    let (ok, listing, _) = hestia_cli(&config, &["keys", "list"], "").await;
    assert!(ok);
    assert!(
        listing.contains("revoked") && listing.contains("expired"),
        "{listing}"
    );
    assert!(!listing.contains(&key) && !listing.contains(&short));
    // And the refusals were recorded with the key's name, not the key
    let auditor = create_key(&config, "auditor", &["read"], &[]).await;
    wait_for_key(&server, &auditor).await;
    let activity: Value = server
        .client()
        .get(format!("{}/v1/activity?type=auth_denied", server.url))
        .header("x-api-key", &auditor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = activity.to_string();
    assert!(
        text.contains("revoked_key") && text.contains("ci (hst_"),
        "{text}"
    );
    assert!(!text.contains(&key));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nothing_that_could_pass_hestia_stays_closed_until_a_key_exists() {
    // Given auth on, no key and no dashboard password
    let server = with_auth(AUTH_ON, &[&Sim::new("echo")]).await;
    unauthorized(server.get("/v1/services").await).await;
    unauthorized(server.get("/services/echo/").await).await;
    // When a key is created while serving, it opens the door within a second
    let key = create_key(&server.config_path(), "first", &["admin"], &[]).await;
    wait_for_key(&server, &key).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_are_limited_per_address_with_429() {
    let server = with_auth(AUTH_ON, &[&Sim::new("echo")]).await;
    let key = create_key(&server.config_path(), "ci", &["read"], &[]).await;
    // When an address keeps guessing
    let mut statuses = Vec::new();
    for i in 0..12 {
        let guess = format!("hst_{i:012}_guess");
        statuses.push(get_with(&server, "/v1/services", ("x-api-key", &guess)).await);
    }
    // Then after the burst it gets 429 with Retry-After, even for the right key
    let codes: Vec<u16> = statuses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(&codes[..10], &[401; 10]);
    assert_eq!(codes[10], 429);
    let last = statuses.pop().unwrap();
    assert!(last.headers().contains_key("retry-after"));
    problem(last, 429, "/too-many-requests").await;
    let right = get_with(&server, "/v1/services", ("x-api-key", &key)).await;
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
    // And once the budget allows one more attempt, the right key passes again
    eventually_async("the block lifts", Duration::from_secs(8), || async {
        get_with(&server, "/v1/services", ("x-api-key", &key))
            .await
            .status()
            == 200
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_the_config_are_sha256_digests() {
    use sha2::{Digest, Sha256};
    let digest = hex::encode(Sha256::digest(b"container-secret"));
    let globals = format!(
        "auth:\n  enabled: true\n  public_metrics: true\n  keys:\n    - name: container\n      sha256: \"{digest}\"\n      scopes: [read]\n"
    );
    let server = with_auth(&globals, &[&Sim::new("echo")]).await;
    let ok = get_with(&server, "/v1/services", ("x-api-key", "container-secret")).await;
    assert_eq!(ok.status(), 200);
    unauthorized(get_with(&server, "/v1/services", ("x-api-key", &digest)).await).await;
    // And public_metrics opens /metrics alone
    assert_eq!(server.get("/metrics").await.status(), 200);
    unauthorized(server.get("/v1/metrics").await).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failure_budget_is_configurable_and_wrong_logins_count_too() {
    let hash = hestia::auth::password::hash("right").unwrap();
    let globals = format!(
        "auth:\n  enabled: true\n  max_failed_attempts: 2\n  dashboard_password_hash: '{hash}'\n"
    );
    let server = with_auth(&globals, &[&Sim::new("echo")]).await;
    assert_eq!(login(&server, "admin", "wrong").await.0, 401);
    unauthorized(get_with(&server, "/v1/services", ("x-api-key", "guess")).await).await;
    let third = login(&server, "admin", "wrong").await;
    assert_eq!(third.0, 429);
    // Blocked: even the right password is not checked
    assert_eq!(login(&server, "admin", "right").await.0, 429);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_form_posts_are_refused_with_auth_off_and_on() {
    // Given auth off (the default)
    let server = TestServer::start(&[&Sim::new("echo")], "").await;
    let form = ("content-type", "application/x-www-form-urlencoded");
    // When another site's page posts a form to stop a service
    let evil = post_with(
        &server,
        "/v1/services/echo/stop",
        &[form, ("origin", "http://evil.example")],
    )
    .await;
    problem(evil, 403, "/forbidden").await;
    let fetch = post_with(
        &server,
        "/v1/services/echo/start",
        &[("sec-fetch-site", "cross-site")],
    )
    .await;
    problem(fetch, 403, "/forbidden").await;
    // But Hestia's own origin and non-browser clients still can
    let own = server.url.clone();
    assert_eq!(
        post_with(&server, "/v1/services/echo/start", &[("origin", &own)])
            .await
            .status(),
        202
    );
    assert_eq!(server.post("/v1/services/echo/stop").await.status(), 202);
    // And reads are not affected
    assert_eq!(
        get_with(&server, "/v1/services", ("origin", "http://evil.example"))
            .await
            .status(),
        200
    );
    // And no CORS headers are sent to anyone
    let read = get_with(&server, "/v1/services", ("origin", "http://evil.example")).await;
    assert!(!read.headers().contains_key("access-control-allow-origin"));
    server.stop().await;

    // Given auth on and a valid admin key: the cross-site post is still refused
    let server = with_auth(AUTH_ON, &[&Sim::new("echo")]).await;
    let key = create_key(&server.config_path(), "admin", &["admin"], &[]).await;
    wait_for_key(&server, &key).await;
    let evil = post_with(
        &server,
        "/v1/services/echo/stop",
        &[form, ("origin", "http://evil.example"), ("x-api-key", &key)],
    )
    .await;
    problem(evil, 403, "/forbidden").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_hosts_refuses_foreign_hosts_and_cors_follows_cors_origins() {
    let globals = "allowed_hosts: [\"127.0.0.1\"]\ncors_origins: [\"https://app.example\"]\n";
    let server = with_auth(globals, &[&Sim::new("echo")]).await;
    // A rebinding page's Host is refused (the dashboard too); health probes still answer
    problem(
        get_with(&server, "/v1/services", ("host", "evil.example")).await,
        403,
        "/forbidden",
    )
    .await;
    problem(
        get_with(&server, "/dashboard", ("host", "evil.example:80")).await,
        403,
        "/forbidden",
    )
    .await;
    let probe = get_with(&server, "/healthz", ("host", "evil.example:80")).await;
    assert_eq!(probe.status(), 200);
    assert_eq!(server.get("/v1/services").await.status(), 200);
    // A listed origin gets CORS and may post; an unlisted one gets neither
    let preflight = server
        .client()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/services/echo/start", server.url),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-api-key")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let listed = post_with(
        &server,
        "/v1/services/echo/start",
        &[("origin", "https://app.example")],
    )
    .await;
    assert_eq!(listed.status(), 202);
    assert_eq!(
        listed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let other = post_with(
        &server,
        "/v1/services/echo/stop",
        &[("origin", "https://other.example")],
    )
    .await;
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    problem(other, 403, "/forbidden").await;
    server.stop().await;
}

/// Logs in; returns the session cookie (`hestia_session=...`) and the Set-Cookie line.
async fn login(server: &TestServer, user: &str, password: &str) -> (u16, Option<String>) {
    let response = server
        .manual_client()
        .post(format!("{}/dashboard/login", server.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-forwarded-proto", "https")
        .body(format!("username={user}&password={password}"))
        .send()
        .await
        .unwrap();
    let cookie = response
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), cookie)
}

fn csrf_of(page: &str) -> String {
    let start = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[start..start + 64].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_login_sessions_and_csrf() {
    // Given a password hashed by the real CLI
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("empty.yml");
    std::fs::write(&scratch, "").unwrap();
    let (ok, hash, stderr) = hestia_cli(&scratch, &["hash-password"], "correct-horse\n").await;
    assert!(ok, "{stderr}");
    let hash = hash.trim();
    assert!(hash.starts_with("$argon2id$"));
    let globals = format!("auth:\n  enabled: true\n  dashboard_password_hash: '{hash}'\n");
    let echo = Sim::new("echo");
    let server = with_auth(&globals, &[&echo]).await;
    let client = server.manual_client();
    // The page sends a visitor without a session to the login form
    let page = client
        .get(format!("{}/dashboard", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/dashboard/login");
    // A wrong password is 401 and sets no cookie
    let (status, cookie) = login(&server, "admin", "wrong").await;
    assert_eq!((status, cookie), (401, None));
    // The right one sets a strict, HttpOnly (and, over https, Secure) session cookie
    let (status, cookie) = login(&server, "admin", "correct-horse").await;
    assert_eq!(status, 303);
    let cookie = cookie.expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    let session = cookie.split(';').next().unwrap().to_owned();
    // The session opens the dashboard, which lists the services, and the API
    let page = client
        .get(format!("{}/dashboard", server.url))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("echo"));
    let api = client
        .get(format!("{}/v1/services", server.url))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 200);
    // A forged dashboard action without the CSRF token is refused
    let forged = client
        .post(format!("{}/dashboard/services/echo/start", server.url))
        .header("cookie", &session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await
        .unwrap();
    problem(forged, 403, "/forbidden").await;
    assert_eq!(server.get("/healthz").await.status(), 200);
    // The real form, with its token, starts the service
    let token = csrf_of(&html);
    let real = client
        .post(format!("{}/dashboard/services/echo/start", server.url))
        .header("cookie", &session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(real.status(), 303);
    // Logging out ends the session
    let out = client
        .post(format!("{}/dashboard/logout", server.url))
        .header("cookie", &session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    let after = client
        .get(format!("{}/v1/services", server.url))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    unauthorized(after).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_off_the_dashboard_is_open_but_its_actions_need_the_csrf_token() {
    let server = TestServer::start(&[&Sim::new("echo")], "").await;
    let client = server.manual_client();
    let html = client
        .get(format!("{}/dashboard", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("echo"));
    let forged = client
        .post(format!("{}/dashboard/services/echo/start", server.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=0000")
        .send()
        .await
        .unwrap();
    problem(forged, 403, "/forbidden").await;
    assert!(
        server
            .engine_events(hestia_actors::events::ActivityKind::AuthDenied)
            .await
            .contains("\"csrf\""),
        "the forged action is an auth_denied event"
    );
    let real = client
        .post(format!("{}/dashboard/services/echo/start", server.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}", csrf_of(&html)))
        .send()
        .await
        .unwrap();
    assert_eq!(real.status(), 303);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_password_or_session_appears_in_the_logs_or_in_clear_in_the_database() {
    use std::process::Stdio;
    // Given the real `hestia serve`, logging at debug level to files we read afterwards
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("empty.yml");
    std::fs::write(&scratch, "").unwrap();
    let (_, hash, _) = hestia_cli(&scratch, &["hash-password"], "correct-horse\n").await;
    let port = support::free_port();
    let yaml = format!(
        "listen: \"127.0.0.1:{port}\"\ndatabase_url: \"sqlite://{}?mode=rwc\"\nlog:\n  level: debug\nauth:\n  enabled: true\n  dashboard_password_hash: '{}'\nservices:\n{}",
        dir.path().join("hestia.db").display(),
        hash.trim(),
        "  echo:\n    base_url: \"http://127.0.0.1:9\"\n    warmup_ms: 0\n",
    );
    let config = dir.path().join("hestia_config.yml");
    std::fs::write(&config, yaml).unwrap();
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut serve = tokio::process::Command::new(support::hestia_exe())
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    eventually_async("serve answers", Duration::from_secs(20), || async {
        client.get(format!("{url}/healthz")).send().await.is_ok()
    })
    .await;
    // When keys are used, altered and refused, and the dashboard is logged into
    let key = create_key(&config, "ci", &["read"], &[]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let r = client
            .get(format!("{url}/v1/services"))
            .header("x-api-key", &key)
            .send()
            .await;
        if r.unwrap().status() == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key was not accepted"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let altered = format!("{}Z", &key[..key.len() - 1]);
    client
        .get(format!("{url}/v1/services"))
        .bearer_auth(&altered)
        .send()
        .await
        .unwrap();
    client
        .get(format!("{url}/v1/services"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let form = |password: &str| {
        client
            .post(format!("{url}/dashboard/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("username=admin&password={password}"))
            .send()
    };
    assert_eq!(form("wrong-horse").await.unwrap().status(), 401);
    let ok = form("correct-horse").await.unwrap();
    assert_eq!(ok.status(), 303);
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    let session = cookie.split(';').next().unwrap().to_owned();
    let token = session.split_once('=').unwrap().1.to_owned();
    let page = client
        .get(format!("{url}/dashboard"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    // And serve stops
    let pid = nix::unistd::Pid::from_raw(serve.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    tokio::time::timeout(Duration::from_secs(15), serve.wait())
        .await
        .unwrap()
        .unwrap();

    // Then neither the logs nor any database file holds a secret in clear
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.contains("auth_denied"), "refusals are logged: {logs}");
    let secret_part = key.splitn(3, '_').nth(2).unwrap().to_owned();
    let secrets = [
        key.as_str(),
        &secret_part,
        &altered,
        "correct-horse",
        "wrong-horse",
        &token,
    ];
    for secret in secrets {
        assert!(
            !logs.contains(secret),
            "the log holds a secret: {}",
            logs.lines()
                .find(|l| l.contains(secret))
                .unwrap_or_default()
        );
    }
    let mut stored = String::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains("hestia.db") {
            stored.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    let prefix = support_prefix(&key);
    assert!(stored.contains(prefix), "the key's row was written");
    for secret in secrets {
        assert!(
            !stored.contains(secret),
            "the database holds a secret in clear"
        );
    }
}

/// The lookup prefix of a generated key (`hst_<prefix>_<secret>`).
fn support_prefix(key: &str) -> &str {
    key.split('_').nth(1).expect("a generated key")
}

#[test]
fn every_route_has_a_line_in_the_auth_table() {
    // A route missing from `ROUTES` would need `admin`: new routes must say what they need.
    let missing: Vec<String> = support::routed_paths()
        .into_iter()
        .filter(|path| !hestia::http::auth::ROUTES.iter().any(|(p, _)| p == path))
        .collect();
    assert!(
        missing.is_empty(),
        "add these routes to ROUTES in src/http/auth/mod.rs: {missing:?}"
    );
}

/// Runs the real `hestia serve` on `globals` until its log contains `needle`; returns the log.
async fn serve_until_logged(globals: &str, needle: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{globals}database_url: \"sqlite://{}?mode=rwc\"\nservices:\n  echo:\n    base_url: \"http://127.0.0.1:9\"\n    warmup_ms: 0\n",
        dir.path().join("hestia.db").display()
    );
    let config = dir.path().join("hestia_config.yml");
    std::fs::write(&config, yaml).unwrap();
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut serve = tokio::process::Command::new(support::hestia_exe())
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .stdout(std::process::Stdio::from(log.try_clone().unwrap()))
        .stderr(std::process::Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut text = String::new();
    eventually_async(needle, Duration::from_secs(20), || {
        text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let found = text.contains(needle);
        async move { found }
    })
    .await;
    let pid = nix::unistd::Pid::from_raw(serve.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    tokio::time::timeout(Duration::from_secs(15), serve.wait())
        .await
        .unwrap()
        .unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_startup_log_says_who_can_do_what() {
    // Auth off on an address beyond this machine: a warning that names what anyone can do
    let port = support::free_port();
    let open = serve_until_logged(
        &format!("listen: \"0.0.0.0:{port}\"\n"),
        "auth is disabled and Hestia listens beyond this machine",
    )
    .await;
    for what in [
        "use every service",
        "start and stop services",
        "read status",
        "auth.enabled: true",
    ] {
        assert!(open.contains(what), "the warning says `{what}`: {open}");
    }
    // Auth on with nothing that could pass: an error that says how to create a key
    let port = support::free_port();
    let closed = serve_until_logged(
        &format!("listen: \"127.0.0.1:{port}\"\nauth:\n  enabled: true\n"),
        "hestia keys create NAME --scope admin",
    )
    .await;
    assert!(closed.contains("ERROR"), "{closed}");
    assert!(closed.contains("every protected route answers 401"));
}
