//! Hestia itself killed and started again: the real binary, a real backend process it started,
//! and the database between the two runs.

mod support;

use std::time::Duration;

use support::{HestiaProcess, Sim, config_yaml, eventually, process_alive};

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
    let first = HestiaProcess::serve(dir.path(), &[]).await;
    let started = first.post("/v1/services/survivor/start?wait=true").await;
    assert_eq!(started.status(), 200);
    let pid = first.status("survivor").await.expect("status")["pid"]
        .as_u64()
        .expect("pid") as u32;
    first.flush().await;

    // When Hestia is killed outright (no graceful shutdown), the backend lives on
    first.kill();
    assert!(process_alive(pid), "the backend outlived the crash");

    // Then a new Hestia on the same database adopts it: ready, same process, no new start
    let second = HestiaProcess::spawn(dir.path());
    let adopted = second.wait_for_state("survivor", "ready").await;
    assert_eq!(adopted["adopted"], true);
    assert_eq!(adopted["pid"].as_u64(), Some(u64::from(pid)));

    // And stopping it really stops that process: nothing is orphaned
    assert_eq!(
        second.post("/v1/services/survivor/stop").await.status(),
        202
    );
    eventually(
        "the adopted backend is gone",
        Duration::from_secs(10),
        || !process_alive(pid),
    )
    .await;
}
