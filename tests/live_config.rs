//! Live configuration, black-box: the real binary serving, its config file edited under it, a
//! client calling an untouched service every 50 ms throughout — and seeing only 200s.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use support::{HestiaProcess, Sim, config_yaml, process_alive};
use tokio::task::JoinHandle;

/// Calls `GET /services/{id}/health` every 50 ms until stopped; answers every status it saw.
fn steady_client(base: String, id: &str, stop: Arc<AtomicBool>) -> JoinHandle<Vec<u16>> {
    let url = format!("{base}/services/{id}/health");
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut seen = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let status = match client.get(&url).send().await {
                Ok(response) => response.status().as_u16(),
                Err(_) => 0,
            };
            seen.push(status);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen
    })
}

async fn status_code(url: &str) -> u16 {
    reqwest::get(url).await.map_or(0, |r| r.status().as_u16())
}

async fn json(url: &str) -> Value {
    reqwest::get(url)
        .await
        .expect("hestia answers")
        .json()
        .await
        .expect("json")
}

/// Polls `check` every 20 ms until it holds; panics after `within`.
async fn within<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_watched_config_changes_only_what_changed_and_untouched_services_see_only_200s()
{
    // Given Hestia serving `steady`, warm, and a client calling it every 50 ms
    let dir = tempfile::tempdir().expect("tempdir");
    let (steady, fresh) = (Sim::new("steady"), Sim::new("fresh"));
    let config = dir.path().join("hestia_config.yml");
    std::fs::write(&config, config_yaml(dir.path(), &[&steady], "")).expect("config");
    let hestia = HestiaProcess::serve(dir.path(), &[]).await;
    let base = hestia.url.clone();
    within("steady serves", Duration::from_secs(20), || {
        let url = format!("{base}/services/steady/health");
        async move { status_code(&url).await == 200 }
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let client = steady_client(base.clone(), "steady", stop.clone());

    // When a service is added to the file, then it is reachable within 2 s
    std::fs::write(&config, config_yaml(dir.path(), &[&steady, &fresh], "")).expect("edit");
    within("fresh is configured", Duration::from_secs(2), || {
        let url = format!("{base}/v1/services/fresh/status");
        async move { status_code(&url).await == 200 }
    })
    .await;
    assert_eq!(
        status_code(&format!("{base}/services/fresh/health")).await,
        200
    );
    let pid = json(&format!("{base}/v1/services/fresh/status")).await["pid"]
        .as_u64()
        .expect("fresh runs a process") as u32;
    let reload = json(&format!("{base}/v1/config")).await;
    assert_eq!(reload["watching"], true);
    assert_eq!(reload["lastReload"]["trigger"], "file");
    assert_eq!(reload["lastReload"]["changes"]["added"][0], "fresh");
    assert_eq!(reload["lastReload"]["changes"]["unchanged"][0], "steady");

    // When it is removed again, then it is unknown (404) and its backend is stopped
    std::fs::write(&config, config_yaml(dir.path(), &[&steady], "")).expect("edit");
    within("fresh is unknown", Duration::from_secs(2), || {
        let url = format!("{base}/services/fresh/health");
        async move { status_code(&url).await == 404 }
    })
    .await;
    let problem = json(&format!("{base}/services/fresh/health")).await;
    assert_eq!(
        problem["type"]
            .as_str()
            .map(|t| t.ends_with("unknown-service")),
        Some(true)
    );
    within(
        "fresh's backend stopped",
        Duration::from_secs(10),
        || async move { !process_alive(pid) },
    )
    .await;

    // When the file is broken, then nothing changes and the error is shown
    let version = json(&format!("{base}/v1/config")).await["version"].clone();
    std::fs::write(&config, "services:\n  steady: [not, a, service\n").expect("edit");
    within("the broken edit is refused", Duration::from_secs(2), || {
        let url = format!("{base}/v1/config");
        async move { !json(&url).await["lastReload"]["error"].is_null() }
    })
    .await;
    let shown = json(&format!("{base}/v1/config")).await;
    assert_eq!(shown["version"], version, "the running version stays");
    assert!(
        shown["lastReload"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("hestia_config.yml:")),
        "the error names file and line: {shown}"
    );

    // Then the client calling `steady` throughout saw only 200s
    stop.store(true, Ordering::SeqCst);
    let seen = client.await.expect("client");
    assert!(seen.len() >= 5, "the client kept calling: {seen:?}");
    assert!(
        seen.iter().all(|s| *s == 200),
        "untouched service failed: {seen:?}"
    );
    hestia.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_the_reload_api_apply_the_file_and_a_broken_one_is_refused() {
    // Given Hestia serving `steady` without watching its file, and a client calling it
    let dir = tempfile::tempdir().expect("tempdir");
    let (steady, fresh) = (Sim::new("steady"), Sim::new("fresh"));
    let config = dir.path().join("hestia_config.yml");
    std::fs::write(&config, config_yaml(dir.path(), &[&steady], "")).expect("config");
    let hestia = HestiaProcess::serve(dir.path(), &["--no-watch"]).await;
    let base = hestia.url.clone();
    assert_eq!(json(&format!("{base}/v1/config")).await["watching"], false);
    within("steady serves", Duration::from_secs(20), || {
        let url = format!("{base}/services/steady/health");
        async move { status_code(&url).await == 200 }
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let client = steady_client(base.clone(), "steady", stop.clone());

    // When a service is added to the file and Hestia gets SIGHUP, then it is reachable
    std::fs::write(&config, config_yaml(dir.path(), &[&steady, &fresh], "")).expect("edit");
    assert_eq!(
        status_code(&format!("{base}/v1/services/fresh/status")).await,
        404,
        "an unwatched file is read on request only"
    );
    hestia.signal(nix::sys::signal::Signal::SIGHUP);
    within(
        "fresh is configured after SIGHUP",
        Duration::from_secs(2),
        || {
            let url = format!("{base}/services/fresh/health");
            async move { status_code(&url).await == 200 }
        },
    )
    .await;
    assert_eq!(
        json(&format!("{base}/v1/config")).await["lastReload"]["trigger"],
        "sighup"
    );

    // When it is removed and the reload API is called, then the answer lists the change
    std::fs::write(&config, config_yaml(dir.path(), &[&steady], "")).expect("edit");
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/config/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(response.status(), 200);
    let outcome: Value = response.json().await.expect("json");
    assert_eq!(outcome["changes"]["removed"][0], "fresh");
    assert_eq!(
        status_code(&format!("{base}/services/fresh/health")).await,
        404
    );

    // When the file is broken, then the reload API refuses it as a problem, naming the line
    std::fs::write(&config, "listen: [\n").expect("edit");
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/config/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.expect("problem");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("hestia_config.yml:")),
        "{problem}"
    );

    // Then `steady` answered every call with 200
    stop.store(true, Ordering::SeqCst);
    let seen = client.await.expect("client");
    assert!(seen.len() >= 3, "the client kept calling: {seen:?}");
    assert!(
        seen.iter().all(|s| *s == 200),
        "untouched service failed: {seen:?}"
    );
    hestia.stop().await;
}

/// `GET path` with `x-api-key: key` (when given): its status.
async fn status_with_key(url: &str, key: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new().get(url);
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    request.send().await.map_or(0, |r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_the_auth_settings_and_configured_keys_as_one() {
    use sha2::{Digest, Sha256};
    // Given Hestia serving with auth off
    let dir = tempfile::tempdir().expect("tempdir");
    let steady = Sim::new("steady");
    let config = dir.path().join("hestia_config.yml");
    let open = config_yaml(dir.path(), &[&steady], "");
    let guarded = |secret: &str| {
        let digest = hex::encode(Sha256::digest(secret.as_bytes()));
        format!(
            "auth:\n  enabled: true\n  keys:\n    - name: ops\n      sha256: \"{digest}\"\n      scopes: [admin]\n{open}"
        )
    };
    std::fs::write(&config, &open).expect("config");
    let hestia = HestiaProcess::serve(dir.path(), &["--no-watch"]).await;
    let services = format!("{}/v1/services", hestia.url);
    let reload = format!("{}/v1/config/reload", hestia.url);
    assert_eq!(status_with_key(&services, None).await, 200);

    // When the file turns auth on with a configured key and is reloaded
    std::fs::write(&config, guarded("first-secret")).expect("edit");
    let answer = reqwest::Client::new()
        .post(&reload)
        .send()
        .await
        .expect("reload");
    assert_eq!(answer.status(), 200);
    let outcome: Value = answer.json().await.expect("json");
    assert!(
        outcome["restartRequired"]
            .as_array()
            .is_some_and(|keys| keys.is_empty()),
        "auth needs no restart: {outcome}"
    );

    // Then a request without a key is refused, and the configured key lets it in
    assert_eq!(status_with_key(&services, None).await, 401);
    assert_eq!(status_with_key(&services, Some("first-secret")).await, 200);

    // When the key is replaced in the file and Hestia gets SIGHUP
    std::fs::write(&config, guarded("second-secret")).expect("edit");
    hestia.signal(nix::sys::signal::Signal::SIGHUP);
    within(
        "the replaced key stops working",
        Duration::from_secs(2),
        || {
            let url = services.clone();
            async move { status_with_key(&url, Some("first-secret")).await == 401 }
        },
    )
    .await;
    assert_eq!(status_with_key(&services, Some("second-secret")).await, 200);

    // When auth is turned off again (the reload asked with the key in force)
    std::fs::write(&config, &open).expect("edit");
    let answer = reqwest::Client::new()
        .post(&reload)
        .header("x-api-key", "second-secret")
        .send()
        .await
        .expect("reload");
    assert_eq!(answer.status(), 200);
    assert_eq!(status_with_key(&services, None).await, 200);
    hestia.stop().await;
}
