//! Hestia itself killed and started again: the real binary, a real backend process it started,
//! and the database between the two runs.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{Sim, config_yaml, eventually, free_port, hestia_exe, process_alive};

/// `hestia serve` as a child process on `port`, logging to a file in `dir`.
fn serve(dir: &std::path::Path, port: u16) -> Child {
    let log = std::fs::File::create(dir.join(format!("hestia-{port}.log"))).expect("log file");
    Command::new(hestia_exe())
        .args(["serve", "--config"])
        .arg(dir.join("hestia_config.yml"))
        .env("HESTIA_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn hestia serve")
}

async fn status(port: u16, service: &str) -> Option<Value> {
    let url = format!("http://127.0.0.1:{port}/v1/services/{service}/status");
    reqwest::get(url).await.ok()?.json().await.ok()
}

async fn wait_ready(port: u16, service: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = status(port, service).await
            && status["state"] == "ready"
        {
            return status;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{service} never became ready: {:?}",
                status(port, service).await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_hestia_is_killed_the_next_one_adopts_the_backend_and_can_still_stop_it() {
    // Given Hestia serving a command-started service that is up
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::new("survivor");
    std::fs::write(
        dir.path().join("hestia_config.yml"),
        config_yaml(dir.path(), &[&sim], ""),
    )
    .expect("config");
    let port = free_port();
    let mut first = serve(dir.path(), port);
    let _ = wait_ready_after_start(port).await;
    let pid = status(port, "survivor").await.expect("status")["pid"]
        .as_u64()
        .expect("pid") as u32;
    // (Reading the activity flushes the persistence actor: what it knows is on disk.)
    let activity = format!("http://127.0.0.1:{port}/v1/activity?service=survivor&type=started");
    reqwest::get(activity).await.expect("activity");

    // When Hestia is killed outright (no graceful shutdown), the backend lives on
    first.kill().expect("SIGKILL hestia");
    first.wait().expect("reap hestia");
    assert!(process_alive(pid), "the backend outlived the crash");

    // Then a new Hestia on the same database adopts it: ready, same process, no new start
    let port = free_port();
    let mut second = serve(dir.path(), port);
    let adopted = wait_ready(port, "survivor").await;
    assert_eq!(adopted["adopted"], true);
    assert_eq!(adopted["pid"].as_u64(), Some(u64::from(pid)));

    // And stopping it really stops that process: nothing is orphaned
    let stop = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/services/survivor/stop"))
        .send()
        .await
        .expect("stop");
    assert_eq!(stop.status(), 202);
    eventually(
        "the adopted backend is gone",
        Duration::from_secs(10),
        || !process_alive(pid),
    )
    .await;
    second.kill().expect("kill");
    second.wait().expect("reap");
}

/// Starts the service through the API and waits until it is ready.
async fn wait_ready_after_start(port: u16) -> Value {
    let url = format!("http://127.0.0.1:{port}/v1/services/survivor/start?wait=true");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(response) = reqwest::Client::new().post(&url).send().await
            && response.status() == 200
        {
            return response.json().await.expect("status json");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hestia never started the service"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
