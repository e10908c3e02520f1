//! The Python prototype's own sample configuration, run by the real binary: it loads unchanged,
//! its Semaphore services without credentials are a warning and a `start-failed` when started,
//! and the other services serve meanwhile, configured through the prototype's per-service
//! environment variables.

use serde_json::Value;

use crate::support::{HestiaProcess, Instance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prototypes_sample_runs_and_a_semaphore_service_without_credentials_fails_alone() {
    // Given the prototype's sample, unchanged, and a backend for its `dev-service` whose URL
    // comes from the prototype's per-service variable
    let dir = tempfile::tempdir().expect("tempdir");
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/prototype_hestia_config.yml"
    );
    std::fs::copy(sample, dir.path().join("hestia_config.yml")).expect("copy the sample");
    let backend = Instance::spawn("dev-backend").await;
    let database = format!("sqlite://{}?mode=rwc", dir.path().join("h.db").display());
    let backend_url = backend.url();
    let env = [
        ("HESTIA_DATABASE_URL", database.as_str()),
        ("DEV_SERVICE_BASE_URL", backend_url.as_str()),
        // Nothing listens there: the start must fail for want of credentials, not of a server.
        ("SEMAPHORE_BASE_URL", "http://127.0.0.1:9"),
    ];
    let hestia = HestiaProcess::serve_env(dir.path(), &[], None, &env).await;

    // Then it warned at start about each Semaphore service, by name
    let log = hestia.log_text();
    for service in [
        "cloud-ollama",
        "gpu-stable-diffusion",
        "dev-workspace",
        "global-api",
    ] {
        assert!(
            log.contains(&format!("service `{service}` uses Semaphore")),
            "no warning for {service}:\n{log}"
        );
    }

    // When a credential-less Semaphore service is started
    let client = reqwest::Client::new();
    let started = client
        .post(format!(
            "{}/v1/services/dev-workspace/start?wait=true",
            hestia.url
        ))
        .send()
        .await
        .expect("start answers");
    let status = started.status().as_u16();
    let problem: Value = started.json().await.expect("a problem body");

    // Then it is a start-failed problem saying which credentials are missing
    assert_eq!(
        problem["type"]
            .as_str()
            .map(|t| t.ends_with("start-failed")),
        Some(true),
        "{status} {problem}"
    );
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("no credentials") && detail.contains("SEMAPHORE_API_TOKEN"),
        "{detail}"
    );
    assert_eq!(
        hestia.status("dev-workspace").await.expect("status")["state"],
        "failed"
    );

    // And another service of the same file still serves, at the URL the variable gave it
    let answer = client
        .get(format!("{}/services/dev-service/hello", hestia.url))
        .send()
        .await
        .expect("proxied");
    assert_eq!(answer.status(), 200);
    let echo: Value = answer.json().await.expect("echo JSON");
    assert_eq!(echo["name"], "dev-backend");
    hestia.stop().await;
}
