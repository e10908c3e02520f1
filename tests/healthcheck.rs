//! `hestia healthcheck` (the container's HEALTHCHECK) and the version Hestia reports: the real
//! binary, a real `hestia serve` child on a loopback port chosen through HESTIA_LISTEN.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::{free_port, hestia_exe};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn healthcheck(config: &std::path::Path, listen: &str) -> std::process::Output {
    std::process::Command::new(hestia_exe())
        .arg("--config")
        .arg(config)
        .arg("healthcheck")
        .env("HESTIA_LISTEN", listen)
        .output()
        .expect("hestia runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_follows_hestia_listen_and_reports_the_version() {
    // Given a config whose listen address is NOT where Hestia runs: HESTIA_LISTEN moves it
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("hestia_config.yml");
    std::fs::write(
        &config,
        format!(
            "listen: \"127.0.0.1:{}\"\ndatabase_url: \"sqlite://{}?mode=rwc\"\nservices: {{}}\n",
            free_port(),
            dir.path().join("hestia.db").display()
        ),
    )
    .expect("config");
    let listen = format!("0.0.0.0:{}", free_port());
    let mut serve = tokio::process::Command::new(hestia_exe())
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("HESTIA_LISTEN", &listen)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("hestia serve starts");

    // When the health check runs with the same environment, it finds Hestia (0.0.0.0 → loopback)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let healthy = loop {
        let output = healthcheck(&config, &listen);
        if output.status.success() {
            break output;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never healthy: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let said = String::from_utf8_lossy(&healthy.stdout);
    assert_eq!(
        said.trim(),
        format!(
            "healthy: http://127.0.0.1:{}/healthz (hestia {VERSION})",
            listen.rsplit(':').next().unwrap_or_default()
        )
    );

    // And /healthz itself carries the crate's version
    let port = listen.rsplit(':').next().unwrap_or_default();
    let body: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .expect("healthz answers")
        .json()
        .await
        .expect("json");
    assert_eq!(body["version"], VERSION);

    // And pointed at a port where nothing listens, it fails with one line saying why
    let nobody = format!("127.0.0.1:{}", free_port());
    let sick = healthcheck(&config, &nobody);
    assert_eq!(sick.status.code(), Some(1));
    let said = String::from_utf8_lossy(&sick.stdout);
    assert!(
        said.starts_with(&format!("unhealthy: http://{nobody}/healthz: ")),
        "{said}"
    );
    assert_eq!(said.lines().count(), 1);

    serve.start_kill().expect("stop hestia");
    let _ = serve.wait().await;
}

#[test]
fn version_flag_prints_the_crate_version() {
    let output = std::process::Command::new(hestia_exe())
        .arg("--version")
        .output()
        .expect("hestia runs");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("hestia {VERSION}")
    );
}
