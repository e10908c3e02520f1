//! The engine's lifecycle, scenario by scenario: real actors, supervisor and router, a real
//! SQLite file, and services whose backends are scripted in this process ([`support::FakeBackend`])
//! on tokio's paused clock — so every timing claim here is exact. The black-box tests with real
//! backend processes (adoption across Hestia restarts, no process left behind) are in the root
//! crate's `tests/`.

mod support;

use hestia_actors::error::{ServiceError, StartFailure};
use hestia_actors::events::{ActivityEvent, ActivityKind};
use hestia_actors::service::State;
use support::{FakeService, TestEngine, ms, secs, wait_for_state};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn fifty_clients_of_a_cold_service_share_one_start_and_are_released_in_arrival_order() {
    // Given a cold service whose backend takes 500 ms to come up
    let hestia = TestEngine::start(vec![FakeService::new("echo").boots_in(ms(500))]).await;
    let service = hestia.service("echo");
    let began = Instant::now();

    // When 50 clients call at once
    let clients: Vec<_> = (0..50)
        .map(|i| {
            let service = service.clone();
            tokio::spawn(async move {
                let lease = service.acquire(Some(&format!("req-{i:02}"))).await?;
                let answered = began.elapsed();
                Ok::<_, ServiceError>((
                    lease.route().base_url.clone(),
                    lease.cold_start(),
                    answered,
                ))
            })
        })
        .collect();
    let mut answers = Vec::new();
    for client in clients {
        answers.push(client.await.expect("client task").expect("admitted"));
    }

    // Then all 50 are admitted to the one backend, exactly when its one start finished
    let backend = hestia.backend("echo");
    for (base_url, waited, answered) in &answers {
        assert_eq!(base_url, &backend.url());
        assert_eq!(
            *waited,
            Some(ms(500)),
            "every request waited for the cold start"
        );
        assert_eq!(*answered, ms(500));
    }
    assert_eq!(backend.starts(), 1);
    assert_eq!(
        hestia
            .events("echo", ActivityKind::StartAttempt)
            .await
            .len(),
        1
    );
    let started = hestia.events("echo", ActivityKind::Started).await;
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].detail["duration_ms"], 500);
    let decisions = hestia.events("echo", ActivityKind::RouteDecision).await;
    assert_eq!(decisions.len(), 1, "one routing decision for the one start");
    assert_eq!(decisions[0].detail["target"], backend.url());

    // And they were released in the order they were queued
    let ids = |events: Vec<ActivityEvent>| {
        events
            .into_iter()
            .map(|e| e.request_id.unwrap_or_default())
            .collect::<Vec<_>>()
    };
    let queued = ids(hestia.events("echo", ActivityKind::Queued).await);
    let released = ids(hestia.events("echo", ActivityKind::Dequeued).await);
    let arrival: Vec<_> = (0..50).map(|i| format!("req-{i:02}")).collect();
    assert_eq!(queued, arrival);
    assert_eq!(released, arrival);
    hestia.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_the_overflow_at_once() {
    // Given a cold service with room for 5 waiting requests and a 1.5 s start
    let small = FakeService::new("small")
        .boots_in(ms(1500))
        .with(|spec| spec.queue.size = 5);
    let hestia = TestEngine::start(vec![small]).await;
    let service = hestia.service("small");
    let began = Instant::now();

    // When 20 clients call at once
    let clients: Vec<_> = (0..20)
        .map(|i| {
            let service = service.clone();
            tokio::spawn(async move {
                let outcome = service.acquire(Some(&format!("r{i}"))).await;
                (outcome.map(drop), began.elapsed())
            })
        })
        .collect();
    let (mut served, mut refused) = (0, 0);
    for client in clients {
        match client.await.expect("client task") {
            (Ok(()), answered) => {
                assert_eq!(answered, ms(1500), "served when the start finished");
                served += 1;
            }
            (Err(ServiceError::QueueFull { capacity, .. }), answered) => {
                assert_eq!(capacity, 5);
                assert_eq!(
                    answered,
                    ms(0),
                    "refused at once, not at the end of the start"
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

#[tokio::test(start_paused = true)]
async fn a_failing_start_retries_then_falls_back_then_fails_every_waiter() {
    // Given a backend that dies 200 ms into every boot, 2 retries 50 ms apart, and a fallback URL
    // nobody listens on
    let dead_fallback = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    };
    let broken = FakeService::new("broken")
        .boots_in(ms(200))
        .fails_to_start(u32::MAX)
        .with(|spec| {
            spec.policy.retry_count = 2;
            spec.policy.retry_delay = ms(50);
            spec.policy.fallback_url = Some(dead_fallback.clone());
        });
    let hestia = TestEngine::start(vec![broken]).await;
    let service = hestia.service("broken");
    let began = Instant::now();

    // When 3 clients call
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move { (service.acquire(None).await.map(drop), began.elapsed()) })
        })
        .collect();

    // Then each gets start-failed after 3 attempts on the backend and 1 on the fallback: three
    // boots and two retry delays after the call
    for client in clients {
        match client.await.expect("client task") {
            (
                Err(ServiceError::StartFailed {
                    attempts,
                    starter,
                    last_error,
                    ..
                }),
                answered,
            ) => {
                assert_eq!(attempts, 4);
                assert_eq!(starter, "fake");
                assert!(
                    matches!(last_error, StartFailure::Probe { .. }),
                    "the fallback was unreachable: {last_error:?}"
                );
                assert_eq!(answered, ms(3 * 200 + 2 * 50));
            }
            other => panic!("expected start-failed, got {other:?}"),
        }
    }
    assert_eq!(service.status().state, State::Failed);
    assert_eq!(hestia.backend("broken").starts(), 3);

    // And the timeline records attempts, retries, the fallback and the failure in that order
    let timeline: Vec<ActivityKind> = hestia
        .timeline("broken", None)
        .await
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
        .collect();
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

#[tokio::test(start_paused = true)]
async fn a_start_that_fails_twice_is_served_by_the_third_attempt() {
    // Given a backend whose first two boots fail, after 100 ms each, retried 1 s apart
    let shaky = FakeService::new("shaky")
        .boots_in(ms(100))
        .fails_to_start(2)
        .with(|spec| spec.policy.retry_delay = secs(1));
    let hestia = TestEngine::start(vec![shaky]).await;
    let service = hestia.service("shaky");
    let began = Instant::now();

    // When a client calls, then it is served by the third start, after three boots and two delays
    let lease = service.acquire(Some("patient")).await.expect("admitted");
    assert_eq!(began.elapsed(), ms(3 * 100 + 2 * 1000));
    assert_eq!(lease.route().base_url, hestia.backend("shaky").url());
    assert_eq!(service.status().attempts, 3);
    assert_eq!(
        hestia.backend("shaky").history(),
        [
            "start 1", "failed 1", "start 2", "failed 2", "start 3", "up 3"
        ]
    );
    assert_eq!(
        hestia.events("shaky", ActivityKind::StartRetry).await.len(),
        2
    );
    drop(lease);
    hestia.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_start_slower_than_the_request_deadline_answers_queue_timeout_in_time() {
    // Given a backend that takes 30 s to come up and a 1 s request timeout
    let glacial = FakeService::new("glacial")
        .boots_in(secs(30))
        .with(|spec| spec.queue.timeout = secs(1));
    let hestia = TestEngine::start(vec![glacial]).await;
    let service = hestia.service("glacial");
    let began = Instant::now();

    // When a client calls, then it gets queue-timeout at exactly its deadline (not a hang)
    match service.acquire(None).await {
        Err(ServiceError::QueueTimeout { state, waited, .. }) => {
            assert_eq!(state, "starting");
            assert_eq!(waited, secs(1));
        }
        other => panic!("expected queue-timeout, got {:?}", other.map(drop)),
    }
    assert_eq!(began.elapsed(), secs(1));
    assert_eq!(
        hestia
            .events("glacial", ActivityKind::QueueTimeout)
            .await
            .len(),
        1
    );

    // And the start goes on: the service is ready when the backend is, 30 s after the call
    wait_for_state(&service, State::Ready).await;
    assert_eq!(began.elapsed(), secs(30));
    assert_eq!(hestia.backend("glacial").starts(), 1);
    hestia.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_service_is_stopped_but_never_while_a_request_is_open() {
    // Given a service that stops after 300 ms idle
    let idler = FakeService::new("idler").with(|spec| spec.idle_timeout = Some(ms(300)));
    let hestia = TestEngine::start(vec![idler]).await;
    let service = hestia.service("idler");
    let backend = hestia.backend("idler");

    // When a request holds its lease (a long stream) for over three idle timeouts
    let lease = service.acquire(None).await.expect("admitted");
    let pid = service.status().pid.expect("hestia owns the process");
    tokio::time::sleep(ms(1000)).await;

    // Then the service is still up
    assert_eq!(service.status().state, State::Ready);
    assert_eq!(backend.pid(), Some(pid));

    // When the request ends, then the service is stopped exactly one idle timeout later (its stop
    // takes no time), and its process is gone
    drop(lease);
    assert_eq!(wait_for_state(&service, State::Cold).await, ms(300));
    assert_eq!(backend.pid(), None);
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
    assert_eq!(backend.starts(), 2);
    drop(lease);
    hestia.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_crashed_service_actor_is_restarted_and_adopts_the_running_backend() {
    // Given a ready service
    let hestia = TestEngine::start(vec![FakeService::new("phoenix")]).await;
    let service = hestia.service("phoenix");
    drop(service.acquire(None).await.expect("admitted"));
    let pid = service.status().pid.expect("pid");

    // When its actor crashes
    service.kill_actor();

    // Then the supervisor restarts it, and it adopts the backend instead of starting another
    let mut updates = service.subscribe();
    let adopted = updates
        .wait_for(|status| status.state == State::Ready && status.adopted)
        .await;
    assert!(adopted.is_ok(), "the restarted actor adopted the backend");
    drop(adopted);
    let lease = service
        .acquire(Some("after-crash"))
        .await
        .expect("served after the restart");
    assert_eq!(lease.route().base_url, hestia.backend("phoenix").url());
    assert_eq!(
        hestia
            .events("phoenix", ActivityKind::StartAttempt)
            .await
            .len(),
        1
    );
    assert_eq!(hestia.backend("phoenix").starts(), 1);
    assert_eq!(
        hestia.backend("phoenix").pid(),
        Some(pid),
        "the original backend still serves"
    );
    drop(lease);
    hestia.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_backend_that_dies_while_ready_leaves_ready_and_the_next_request_restarts_it() {
    // Given a ready service
    let hestia = TestEngine::start(vec![FakeService::new("fragile")]).await;
    let service = hestia.service("fragile");
    drop(service.acquire(Some("first")).await.expect("admitted"));
    let first_pid = service.status().pid.expect("pid");

    // When its backend process exits, then the service leaves `ready` at once and says why
    hestia.backend("fragile").exit(1);
    assert_eq!(wait_for_state(&service, State::Failed).await, ms(0));
    let reason = service.status().last_error.clone().unwrap_or_default();
    assert!(
        reason.contains("exited with code 1"),
        "last error explains the exit: {reason}"
    );

    // And the next request starts a new backend and is served by it
    let lease = service
        .acquire(Some("second"))
        .await
        .expect("admitted again");
    let second_pid = service.status().pid.expect("a new process");
    assert_ne!(second_pid, first_pid);
    assert_eq!(hestia.backend("fragile").pid(), Some(second_pid));
    assert_eq!(lease.route().base_url, hestia.backend("fragile").url());
    drop(lease);
    hestia.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn waiters_of_a_crashed_actor_get_an_error_not_a_hang() {
    // Given a service that takes 20 s to start, with a request waiting for it
    let stuck = FakeService::new("stuck").boots_in(secs(20));
    let hestia = TestEngine::start(vec![stuck]).await;
    let service = hestia.service("stuck");
    let waiter = tokio::spawn({
        let service = service.clone();
        async move { service.acquire(Some("waiting")).await.map(drop) }
    });
    wait_for_state(&service, State::Starting).await;

    // When its actor crashes, then the waiter is answered at once with `unavailable`
    let crashed = Instant::now();
    service.kill_actor();
    match waiter.await.expect("waiter task") {
        Err(ServiceError::Unavailable { .. }) => {}
        other => panic!("expected an unavailable error, got {other:?}"),
    }
    assert_eq!(crashed.elapsed(), ms(0));
    hestia.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_request_arriving_while_stopping_waits_and_starts_the_service_again() {
    // Given a ready service whose stop takes 200 ms and whose start takes 100 ms
    let revolving = FakeService::new("revolving")
        .boots_in(ms(100))
        .stops_in(ms(200));
    let hestia = TestEngine::start(vec![revolving]).await;
    let service = hestia.service("revolving");
    drop(service.acquire(None).await.expect("admitted"));
    let first_pid = service.status().pid.expect("pid");

    // When it is told to stop and a request arrives right behind the stop
    service.stop().await.expect("stop accepted");
    assert_eq!(service.status().state, State::Stopping);
    let asked = Instant::now();
    let lease = service
        .acquire(Some("behind-the-stop"))
        .await
        .expect("queued, then admitted");

    // Then the request is served by a fresh start once the stop completed: after both
    assert_eq!(asked.elapsed(), ms(200 + 100));
    let second_pid = service.status().pid.expect("a new process");
    assert_ne!(second_pid, first_pid);
    assert_eq!(
        hestia.backend("revolving").history(),
        [
            "start 1".to_owned(),
            "up 1".to_owned(),
            format!("stop {first_pid}"),
            format!("exit {first_pid} (was killed by signal 15 (SIGTERM))"),
            "start 2".to_owned(),
            "up 2".to_owned(),
        ],
        "the old backend was stopped before the new one started"
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

#[tokio::test(start_paused = true)]
async fn the_router_actor_resolves_configured_ids_and_refuses_unknown_ones() {
    let hestia = TestEngine::start(vec![FakeService::new("listed")]).await;

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
