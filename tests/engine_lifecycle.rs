//! The engine end to end: real `hestia sim` processes started by the `command` starter, real
//! SQLite, real actors. Each test is one scenario a user would notice.

mod support;

use std::time::Duration;

use hestia_actors::error::ServiceError;
use hestia_actors::events::ActivityKind;
use hestia_actors::service::State;
use support::{Sim, TestEngine, eventually, get, process_alive, wait_for_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_of_a_cold_service_share_one_start_and_are_released_in_arrival_order() {
    // Given a cold service whose backend takes 500 ms to listen
    let sim = Sim::new("echo").startup_delay_ms(500);
    let hestia = TestEngine::start(&[&sim], "").await;
    let service = hestia.service("echo");

    // When 50 clients call at once
    let mut clients = Vec::new();
    for i in 0..50 {
        let service = service.clone();
        clients.push(tokio::spawn(async move {
            let request_id = format!("req-{i:02}");
            let lease = service.acquire(Some(&request_id)).await?;
            let answer = get(&lease.route().base_url, "/hello", &request_id).await;
            Ok::<_, ServiceError>((answer.status().as_u16(), lease.cold_start().is_some()))
        }));
    }
    let mut answers = Vec::new();
    for client in clients {
        answers.push(client.await.expect("client task").expect("admitted"));
    }

    // Then all 50 are answered by the backend, which was started exactly once
    assert!(answers.iter().all(|(status, _)| *status == 200));
    assert!(
        answers.iter().all(|(_, waited)| *waited),
        "every request waited for the cold start"
    );
    assert_eq!(
        hestia
            .events("echo", ActivityKind::StartAttempt)
            .await
            .len(),
        1
    );
    assert_eq!(hestia.events("echo", ActivityKind::Started).await.len(), 1);
    let decisions = hestia.events("echo", ActivityKind::RouteDecision).await;
    assert_eq!(decisions.len(), 1, "one routing decision for the one start");
    assert_eq!(decisions[0].detail["target"], sim.url());
    let stats: serde_json::Value = get(&sim.url(), "/_sim/stats", "stats")
        .await
        .json()
        .await
        .expect("stats");
    assert_eq!(
        stats["requests"].as_u64(),
        Some(50),
        "one backend saw all 50 requests"
    );

    // And they were released in the order they were queued
    let queued: Vec<_> = hestia.events("echo", ActivityKind::Queued).await;
    let released: Vec<_> = hestia.events("echo", ActivityKind::Dequeued).await;
    let ids = |events: &[hestia_actors::events::ActivityEvent]| {
        events
            .iter()
            .map(|e| e.request_id.clone().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    assert_eq!(queued.len(), 50);
    assert_eq!(ids(&queued), ids(&released));
    hestia.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_the_overflow_at_once() {
    // Given a cold service with room for 5 waiting requests and a slow start
    let sim = Sim::new("small")
        .startup_delay_ms(1500)
        .key("queue_size: 5");
    let hestia = TestEngine::start(&[&sim], "").await;
    let service = hestia.service("small");

    // When 20 clients call at once
    let mut clients = Vec::new();
    for i in 0..20 {
        let service = service.clone();
        clients.push(tokio::spawn(async move {
            let outcome = service.acquire(Some(&format!("r{i}"))).await;
            // What state was the service in when this client got its answer?
            (outcome.map(drop), service.status().state)
        }));
    }
    let mut served = 0;
    let mut refused = 0;
    for client in clients {
        match client.await.expect("client task") {
            (Ok(()), _) => served += 1,
            (Err(ServiceError::QueueFull { capacity, .. }), state) => {
                assert_eq!(capacity, 5);
                assert_eq!(
                    state,
                    State::Starting,
                    "the refusal came before the start finished"
                );
                refused += 1;
            }
            (Err(other), _) => panic!("unexpected error: {other}"),
        }
    }

    // Then 5 are served and 15 are refused with queue-full
    assert_eq!((served, refused), (5, 15));
    assert_eq!(
        hestia
            .events("small", ActivityKind::QueueRejected)
            .await
            .len(),
        15
    );
    hestia.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_start_retries_then_falls_back_then_fails_every_waiter() {
    // Given a backend that never comes up, 2 retries, and a fallback URL nobody listens on
    let dead_fallback = format!("http://127.0.0.1:{}", support::free_port());
    let sim = Sim::new("broken")
        .fail_to_start()
        .key("retry: {count: 2, delay_ms: 50}")
        .key(&format!("fallback_url: \"{dead_fallback}\""));
    let hestia = TestEngine::start(&[&sim], "").await;
    let service = hestia.service("broken");

    // When 3 clients call
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move { service.acquire(None).await })
        })
        .collect();

    // Then each gets start-failed, after 3 attempts on the machine and 1 on the fallback
    for client in clients {
        match client.await.expect("client task") {
            Err(ServiceError::StartFailed {
                attempts, starter, ..
            }) => {
                assert_eq!(attempts, 4);
                assert_eq!(starter, "command");
            }
            other => panic!("expected start-failed, got {other:?}"),
        }
    }
    assert_eq!(service.status().state, State::Failed);

    // And the timeline records attempts, retries, the fallback and the failure in that order
    let timeline: Vec<ActivityKind> = {
        let filter = hestia_actors::persistence::ActivityFilter {
            service: Some("broken".into()),
            kind: None,
            since: None,
            limit: 1000,
        };
        let mut events = hestia.persistence.activity(filter).await.expect("activity");
        events.reverse();
        events
            .into_iter()
            .map(|e| e.kind)
            .filter(|k| {
                matches!(
                    k,
                    ActivityKind::StartAttempt
                        | ActivityKind::StartRetry
                        | ActivityKind::StartFallback
                        | ActivityKind::StartFailed
                )
            })
            .collect()
    };
    use ActivityKind::*;
    assert_eq!(
        timeline,
        [
            StartAttempt,
            StartRetry,
            StartAttempt,
            StartRetry,
            StartAttempt,
            StartFallback,
            StartAttempt,
            StartFailed
        ]
    );
    hestia.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_slower_than_the_request_deadline_answers_queue_timeout_in_time() {
    // Given a backend that takes 30 s to come up and a 1 s request timeout
    let sim = Sim::new("glacial")
        .startup_delay_ms(30_000)
        .key("request_timeout_seconds: 1");
    let hestia = TestEngine::start(&[&sim], "").await;
    let service = hestia.service("glacial");

    // When a client calls, then it gets queue-timeout (not a hang), and the start goes on
    let outcome = tokio::time::timeout(Duration::from_secs(5), service.acquire(None)).await;
    match outcome {
        Ok(Err(ServiceError::QueueTimeout { state, .. })) => assert_eq!(state, "starting"),
        other => panic!("expected queue-timeout within the deadline, got {other:?}"),
    }
    assert_eq!(
        hestia
            .events("glacial", ActivityKind::QueueTimeout)
            .await
            .len(),
        1
    );
    hestia.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_service_is_stopped_but_never_while_a_request_is_open() {
    // Given a service that stops after 300 ms idle
    let sim = Sim::new("idler").key("idle_timeout_ms: 300");
    let hestia = TestEngine::start(&[&sim], "").await;
    let service = hestia.service("idler");

    // When a request holds its lease (a long stream) for well over the idle timeout
    let lease = service.acquire(None).await.expect("admitted");
    let pid = service.status().pid.expect("hestia owns the process");
    tokio::time::sleep(Duration::from_millis(900)).await;

    // Then the service is still up
    assert_eq!(service.status().state, State::Ready);
    assert!(process_alive(pid));

    // When the request ends, then the service is stopped and its process is gone
    drop(lease);
    wait_for_state(&service, State::Cold).await;
    eventually(
        "the backend process is gone",
        Duration::from_secs(5),
        || !process_alive(pid),
    )
    .await;
    assert_eq!(
        hestia
            .events("idler", ActivityKind::IdleShutdown)
            .await
            .len(),
        1
    );

    // And the next request starts it again, as a new process
    let lease = service
        .acquire(None)
        .await
        .expect("admitted after the stop");
    let new_pid = service.status().pid.expect("a new process");
    assert_ne!(new_pid, pid);
    drop(lease);
    hestia.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_service_actor_is_restarted_and_adopts_the_running_backend() {
    // Given a ready service
    let sim = Sim::new("phoenix");
    let hestia = TestEngine::start(&[&sim], "").await;
    let service = hestia.service("phoenix");
    drop(service.acquire(None).await.expect("admitted"));
    let pid = service.status().pid.expect("pid");

    // When its actor crashes
    service.kill_actor();

    // Then the supervisor restarts it, and it adopts the backend instead of starting another
    eventually(
        "the restarted actor adopted the backend",
        Duration::from_secs(10),
        || {
            let status = service.status();
            status.state == State::Ready && status.adopted
        },
    )
    .await;
    let lease = service
        .acquire(Some("after-crash"))
        .await
        .expect("served after the restart");
    assert_eq!(
        get(&lease.route().base_url, "/x", "after-crash")
            .await
            .status(),
        200
    );
    assert_eq!(
        hestia
            .events("phoenix", ActivityKind::StartAttempt)
            .await
            .len(),
        1
    );
    assert!(process_alive(pid), "the original backend still serves");
    drop(lease);
    hestia.shutdown().await;
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_dies_while_ready_leaves_ready_and_the_next_request_restarts_it() {
    // Given a ready service whose backend exits after its first request
    let sim = Sim::new("fragile").crash_after(1);
    let hestia = TestEngine::start(&[&sim], "").await;
    let service = hestia.service("fragile");
    let lease = service.acquire(Some("first")).await.expect("admitted");
    let first_pid = service.status().pid.expect("pid");
    assert_eq!(
        get(&lease.route().base_url, "/once", "first")
            .await
            .status(),
        200
    );
    drop(lease);

    // When the backend process exits, then the service leaves `ready` and says why
    wait_for_state(&service, State::Failed).await;
    let reason = service.status().last_error.clone().unwrap_or_default();
    assert!(
        reason.contains("exited"),
        "last error explains the exit: {reason}"
    );

    // And the next request starts a new backend and is served
    let lease = service
        .acquire(Some("second"))
        .await
        .expect("admitted again");
    assert_ne!(service.status().pid, Some(first_pid));
    assert_eq!(
        get(&lease.route().base_url, "/again", "second")
            .await
            .status(),
        200
    );
    drop(lease);
    hestia.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_of_a_crashed_actor_get_an_error_not_a_hang() {
    // Given a service that takes 20 s to start, with a request waiting for it
    let sim = Sim::new("stuck").startup_delay_ms(20_000);
    let hestia = TestEngine::start(&[&sim], "").await;
    let service = hestia.service("stuck");
    let waiter = tokio::spawn({
        let service = service.clone();
        async move { service.acquire(Some("waiting")).await }
    });
    wait_for_state(&service, State::Starting).await;

    // When its actor crashes, then the waiter is answered at once with `unavailable`
    service.kill_actor();
    let answer = tokio::time::timeout(Duration::from_secs(5), waiter).await;
    match answer {
        Ok(Ok(Err(ServiceError::Unavailable { .. }))) => {}
        other => panic!("expected an unavailable error, got {other:?}"),
    }
    hestia.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_arriving_while_stopping_waits_and_starts_the_service_again() {
    // Given a ready service
    let sim = Sim::new("revolving");
    let hestia = TestEngine::start(&[&sim], "").await;
    let service = hestia.service("revolving");
    drop(service.acquire(None).await.expect("admitted"));
    let first_pid = service.status().pid.expect("pid");

    // When it is told to stop and a request arrives right behind the stop
    service.stop().await.expect("stop accepted");
    let lease = service
        .acquire(Some("behind-the-stop"))
        .await
        .expect("queued, then admitted");

    // Then the request is served by a fresh start after the stop completed
    assert_eq!(
        get(&lease.route().base_url, "/x", "behind-the-stop")
            .await
            .status(),
        200
    );
    assert_ne!(service.status().pid, Some(first_pid));
    assert!(
        !process_alive(first_pid),
        "the old backend was stopped first"
    );
    assert_eq!(
        hestia
            .events("revolving", ActivityKind::Stopped)
            .await
            .len(),
        1
    );
    assert_eq!(
        hestia
            .events("revolving", ActivityKind::StartRequested)
            .await
            .len(),
        2
    );
    drop(lease);
    hestia.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_actor_resolves_configured_ids_and_refuses_unknown_ones() {
    let hestia = TestEngine::start(&[&Sim::new("listed")], "").await;

    // A configured id resolves to the same service the published directory gives
    let resolved = hestia.engine.resolve("listed").await.expect("resolved");
    assert_eq!(resolved.id(), hestia.service("listed").id());

    // An unknown id is unknown-service, naming what is configured — never a silent default
    match hestia.engine.resolve("unlisted").await {
        Err(ServiceError::UnknownService { service, known }) => {
            assert_eq!(service, "unlisted");
            assert_eq!(known, ["listed"]);
        }
        other => panic!("expected unknown-service, got {other:?}"),
    }
    hestia.shutdown().await;
}
