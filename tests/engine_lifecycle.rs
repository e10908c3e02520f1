//! The engine with real backend processes: what only a real process shows. A `hestia sim` child
//! started by the `command` starter, or a simulated backend Hestia does not start, real SQLite,
//! real actors. The engine's lifecycle scenarios (queueing, retries, timeouts, idle stop,
//! supervision) run on a paused clock with scripted backends in `actors/tests/engine_scenarios.rs`.

mod support;

use std::time::Duration;

use hestia_actors::events::ActivityKind;
use hestia_actors::service::State;
use support::{Sim, TestEngine, eventually, process_alive, wait_for_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_hestia_restarts_a_service_still_running_elsewhere_is_adopted() {
    // Given a service managed elsewhere (already running, no starter) that Hestia saw ready
    let backend =
        hestia_actors::harness::spawn(hestia_actors::harness::SimOptions::named("outside"))
            .await
            .expect("backend");
    let extra = format!(
        "  outside:\n    base_url: \"{url}\"\n    readiness:\n      http:\n        url: \"{url}/health\"\n",
        url = backend.url()
    );
    let hestia = TestEngine::start(&[], &extra).await;
    let service = hestia.service("outside");
    wait_for_state(&service, State::Ready).await;

    // When Hestia restarts on the same database
    let hestia = hestia.restart().await;
    let service = hestia.service("outside");

    // Then the service is adopted as ready, without a start
    wait_for_state(&service, State::Ready).await;
    assert!(service.status().adopted);
    assert!(
        hestia
            .events("outside", ActivityKind::StartRequested)
            .await
            .is_empty()
    );
    hestia.shutdown().await;
    backend.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_hestia_down_leaves_no_backend_process_behind() {
    // Given a ready command-started service
    let sim = Sim::new("tidy");
    let hestia = TestEngine::start(&[&sim], "").await;
    let service = hestia.service("tidy");
    drop(service.acquire(None).await.expect("admitted"));
    let pid = service.status().pid.expect("pid");

    // When Hestia shuts down, then the backend process is gone
    hestia.shutdown().await;
    eventually(
        "the backend process is gone",
        Duration::from_secs(5),
        || !process_alive(pid),
    )
    .await;
}
