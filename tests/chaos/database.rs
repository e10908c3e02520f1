//! Chaos in the database: a table dropped under a running Hestia, the database file deleted.
//! Hestia keeps serving, but says it is not ready and counts what it could not write.

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
