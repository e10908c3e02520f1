//! Chaos in the database: a table dropped under a running Hestia, the database file deleted, the
//! disk full. Hestia keeps serving, but says it is not ready and counts what it could not write;
//! once the disk has room again, it writes again.

use std::time::Duration;

use sea_orm::ConnectionTrait;

use crate::support::{HestiaProcess, Sim, config_yaml};

/// `/readyz`: its status and body.
async fn readyz(hestia: &HestiaProcess) -> (u16, serde_json::Value) {
    let answer = reqwest::get(format!("{}/readyz", hestia.url))
        .await
        .expect("readyz answers");
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or_default())
}

/// Waits (20 s at most) until `/readyz` says 503; returns its problem.
async fn until_unready(hestia: &HestiaProcess) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        // Each round starts or stops the service: there is always something to record.
        let _ = hestia.post("/v1/services/sim/start").await;
        let _ = hestia.post("/v1/services/sim/stop").await;
        let (status, body) = readyz(hestia).await;
        if status == 503 {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {status}: {body}; log:\n{}",
            hestia.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn write_failures(hestia: &HestiaProcess) -> f64 {
    let text = reqwest::get(format!("{}/metrics", hestia.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find(|l| l.starts_with("hestia_persistence_write_failures_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_activity_table_makes_hestia_unready_and_is_counted() {
    // Given a ready Hestia
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::new("sim");
    std::fs::write(
        dir.path().join("hestia_config.yml"),
        config_yaml(dir.path(), &[&sim], ""),
    )
    .expect("config");
    let hestia = HestiaProcess::serve(dir.path(), &[]).await;
    assert_eq!(readyz(&hestia).await.0, 200);

    // When the activity table disappears under it
    let url = format!("sqlite://{}", dir.path().join("hestia.db").display());
    let db = hestia_actors::persistence::open(&url)
        .await
        .expect("open db");
    db.execute_unprepared("DROP TABLE activity")
        .await
        .expect("drop the table");

    // Then /readyz answers 503 naming the table, the failures are counted, and the proxy and
    // the API still answer
    let problem = until_unready(&hestia).await;
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("activity"), "{problem}");
    assert!(write_failures(&hestia).await >= 1.0);
    let through = reqwest::get(format!("{}/services/sim/", hestia.url))
        .await
        .expect("proxy answers");
    assert_eq!(through.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_database_file_makes_hestia_unready() {
    // Given a ready Hestia
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::new("sim");
    std::fs::write(
        dir.path().join("hestia_config.yml"),
        config_yaml(dir.path(), &[&sim], ""),
    )
    .expect("config");
    let hestia = HestiaProcess::serve(dir.path(), &[]).await;
    assert_eq!(readyz(&hestia).await.0, 200);

    // When its database file is deleted
    for file in ["hestia.db", "hestia.db-wal", "hestia.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(file));
    }

    // Then it says it is not ready, with the cause (SQLite goes on writing to the deleted file,
    // so nothing fails — but all of it would be lost)
    let problem = until_unready(&hestia).await;
    assert_eq!(problem["type"], "https://hestia.dev/problems/unavailable");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("deleted"), "{problem}");
}

/// Waits (20 s at most) until `/readyz` says 200 again, writing something each round.
async fn until_ready(hestia: &HestiaProcess) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let _ = hestia.post("/v1/services/sim/start").await;
        let _ = hestia.post("/v1/services/sim/stop").await;
        let (status, body) = readyz(hestia).await;
        if status == 200 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {status}: {body}; log:\n{}",
            hestia.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_makes_hestia_unready_until_space_is_freed_and_nothing_is_stuck_after() {
    // Given a ready Hestia whose data directory (database, service logs) is a 4 MiB disk of its
    // own, with its backend warm
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    let sim = Sim::new("sim");
    std::fs::write(
        dir.path().join("hestia_config.yml"),
        config_yaml(&data, &[&sim], ""),
    )
    .expect("config");
    let hestia = HestiaProcess::serve_on_small_disk(dir.path(), &data, "4m").await;
    let proxied = format!("{}/services/sim/", hestia.url);
    assert_eq!(reqwest::get(&proxied).await.expect("warm").status(), 200);
    assert_eq!(readyz(&hestia).await.0, 200);

    // When something else fills the disk
    let filler = data.join("filler");
    let filled = hestia.on_its_disk(&format!("cat /dev/zero > {}", filler.display()));
    assert!(!filled, "cat ends with no space left on the device");

    // Then it says it is not ready, naming the full disk, and counts what it could not write;
    // requests still go through and the API still answers
    let problem = until_unready(&hestia).await;
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("full"), "{problem}");
    assert!(write_failures(&hestia).await >= 1.0);
    assert_eq!(reqwest::get(&proxied).await.expect("proxy").status(), 200);
    assert!(hestia.get_json("/v1/services").await.is_some());

    // And when the space is freed, it is ready again and records activity again (no write is
    // left stuck behind a transaction the full disk broke)
    assert!(hestia.on_its_disk(&format!("rm {}", filler.display())));
    until_ready(&hestia).await;
    let latest = |events: serde_json::Value| events["events"][0]["id"].to_string();
    let before = latest(
        hestia
            .get_json("/v1/activity?limit=1")
            .await
            .expect("activity"),
    );
    let started = hestia.post("/v1/services/sim/start").await;
    assert!(started.status().is_success(), "{}", started.status());
    hestia.flush().await;
    let after = latest(
        hestia
            .get_json("/v1/activity?limit=1")
            .await
            .expect("activity"),
    );
    assert_ne!(before, after, "nothing recorded after the disk was freed");
    hestia.stop().await;
}
