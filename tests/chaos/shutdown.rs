//! Chaos at shutdown: SIGTERM while requests wait for a start, while a stream flows past the
//! grace period, a second signal, and an open event stream.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use nix::sys::signal::Signal;

use crate::support::{HestiaProcess, PyBackend, Sim, config_yaml, eventually, eventually_async};

/// Writes the config for `sims` and `extra` services with the given shutdown grace.
fn write_config_with_grace(dir: &std::path::Path, sims: &[&Sim], extra: &str, grace_ms: u64) {
    let yaml = config_yaml(dir, sims, extra).replace(
        "shutdown_grace_ms: 3000",
        &format!("shutdown_grace_ms: {grace_ms}"),
    );
    std::fs::write(dir.join("hestia_config.yml"), yaml).expect("config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_queued_for_a_start_are_answered_shutting_down_at_once() {
    // Given a service that takes 30 s to start, a 20 s shutdown grace, and 5 clients waiting for it
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::new("glacial").startup_delay_ms(30_000);
    write_config_with_grace(dir.path(), &[&sim], "", 20_000);
    let hestia = HestiaProcess::serve(dir.path(), &[]).await;
    let url = format!("{}/services/glacial/", hestia.url);
    let client = reqwest::Client::new();
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { join_all((0..5).map(|_| client.get(&url).send())).await }
    });
    eventually_async("5 requests queued", Duration::from_secs(20), || async {
        hestia
            .status("glacial")
            .await
            .is_some_and(|s| s["queuePending"] == 5)
    })
    .await;

    // When Hestia gets SIGTERM
    let signalled = Instant::now();
    hestia.signal(Signal::SIGTERM);
    let answers = waiting.await.expect("clients");

    // Then every waiting client is answered 503 shutting-down, with Retry-After, long before
    // the grace period would have ended
    let answered_after = signalled.elapsed();
    assert!(
        answered_after < Duration::from_secs(10),
        "answered {answered_after:?} after SIGTERM, as if waiting for the 20 s grace"
    );
    for answer in answers {
        let answer = answer.expect("an answer, not a dropped connection");
        assert_eq!(answer.status(), 503);
        assert!(answer.headers().contains_key("retry-after"));
        let problem: serde_json::Value = answer.json().await.expect("problem+json");
        assert_eq!(
            problem["type"], "https://hestia.dev/problems/shutting-down",
            "{problem}"
        );
    }
    // and Hestia stops, recording why: the half-started backend was stopped for the shutdown
    let log = hestia.log_text();
    let dir_path = dir.path().to_path_buf();
    hestia.wait_exit(Duration::from_secs(25)).await;
    let next = HestiaProcess::serve(&dir_path, &[]).await;
    let stopped = next
        .get_json("/v1/activity?service=glacial&type=stopped")
        .await
        .expect("activity");
    assert_eq!(
        stopped["events"][0]["detail"]["reason"], "shutdown",
        "{stopped}\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_still_flowing_when_the_grace_ends_is_reset_not_finished() {
    // Given an endless stream through Hestia, with a 1 s shutdown grace
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = PyBackend::new("py", dir.path());
    write_config_with_grace(dir.path(), &[], &backend.yaml(), 1_000);
    let hestia = HestiaProcess::serve(dir.path(), &[]).await;
    let mut stream = reqwest::get(format!("{}/services/py/stream", hestia.url))
        .await
        .expect("the stream starts");
    assert_eq!(stream.status(), 200);
    stream.chunk().await.expect("a first line").expect("a line");

    // When Hestia gets SIGTERM and the stream is still flowing when the grace period ends
    hestia.signal(Signal::SIGTERM);
    let ended = loop {
        match stream.chunk().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };

    // Then the client sees its answer cut off (an error), not a body that seems complete
    assert!(
        ended.is_err(),
        "the cut stream ended cleanly: {ended:?}; log:\n{}",
        hestia.log_text()
    );
    hestia.wait_exit(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_ends_at_once() {
    // Given a stream through Hestia and a 60 s shutdown grace
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = PyBackend::new("py", dir.path());
    write_config_with_grace(dir.path(), &[], &backend.yaml(), 60_000);
    let hestia = HestiaProcess::serve(dir.path(), &[]).await;
    let mut stream = reqwest::get(format!("{}/services/py/stream", hestia.url))
        .await
        .expect("the stream starts");
    stream.chunk().await.expect("a first line").expect("a line");

    // When Hestia gets SIGTERM, then SIGINT
    hestia.signal(Signal::SIGTERM);
    eventually("the shutdown began", Duration::from_secs(10), || {
        hestia.log_text().contains("shutting down")
    })
    .await;
    let hurried = Instant::now();
    hestia.signal(Signal::SIGINT);

    // Then it exits without waiting for the grace, and the stream is cut
    hestia.wait_exit(Duration::from_secs(30)).await;
    assert!(
        hurried.elapsed() < Duration::from_secs(30),
        "the second signal did not hurry the shutdown"
    );
    let ended = loop {
        match stream.chunk().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert!(ended.is_err(), "the cut stream ended cleanly: {ended:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_event_stream_does_not_hold_the_shutdown() {
    // Given a client following /v1/events, and a 60 s shutdown grace
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::new("quiet");
    write_config_with_grace(dir.path(), &[&sim], "", 60_000);
    let hestia = HestiaProcess::serve(dir.path(), &[]).await;
    let mut events = reqwest::get(format!("{}/v1/events", hestia.url))
        .await
        .expect("the event stream opens");
    events.chunk().await.expect("a first event").expect("data");

    // When Hestia gets SIGTERM
    let signalled = Instant::now();
    hestia.signal(Signal::SIGTERM);

    // Then the event stream ends and Hestia exits long before the grace period is over
    while let Ok(Some(_)) = events.chunk().await {}
    hestia.wait_exit(Duration::from_secs(50)).await;
    assert!(
        signalled.elapsed() < Duration::from_secs(50),
        "the event stream held the shutdown for {:?}",
        signalled.elapsed()
    );
}
