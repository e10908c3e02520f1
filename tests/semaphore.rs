//! Remote machines through Semaphore, end to end: the real engine and config loader, the fake
//! Semaphore (real HTTP, Semaphore's status codes and bodies) whose templates launch and kill real
//! `hestia sim` backends, wake-on-LAN captured on a loopback UDP socket, SQLite in a tempdir.

mod support;

use std::time::Duration;

use hestia_actors::error::ServiceError;
use hestia_actors::events::ActivityKind;
use hestia_actors::fake_semaphore::{
    self, ApiShape, FakeSemaphoreHandle, FakeSemaphoreOptions, FakeTemplate, Outcome,
};
use hestia_actors::semaphore::{RunOptions, SemaphoreClient, SemaphoreError};
use hestia_actors::service::State;
use hestia_actors::spec::SemaphoreConnection;
use serde_json::{Map, Value, json};
use support::{
    Sim, TestEngine, TestServer, free_port, get, hestia_exe, process_alive, wait_for_state,
};

const TOKEN: &str = "kwofd61g93-yuqvex8efmhjkgnbxlo8mp1tin6spyhu=";
const START: i64 = 3;
const STOP: i64 = 4;

/// A start template that launches `hestia sim` on the task's `{address}` and `port`, and a stop
/// template that kills it.
async fn fake_with_sim(port: u16, start: FakeTemplate) -> FakeSemaphoreHandle {
    let port = port.to_string();
    let start = start.launch(
        "llm",
        hestia_exe(),
        &[
            "sim",
            "--host",
            "{address}",
            "--port",
            &port,
            "--name",
            "llm",
        ],
    );
    fake_semaphore::spawn(
        FakeSemaphoreOptions::with_token(TOKEN)
            .template(START, start)
            .template(STOP, FakeTemplate::succeeding("stop-llm").kill("llm")),
    )
    .await
    .expect("the fake Semaphore listens")
}

/// Top-level keys: the Semaphore server and machines (`gpu` and `laptop` on loopback).
fn globals(semaphore_url: &str, token: &str) -> String {
    format!(
        "semaphore:\n  base_url: \"{semaphore_url}\"\n  api_token: \"{token}\"\n\
         machines:\n  gpu:\n    role: remote\n    address: 127.0.0.1\n    tags: [gpu]\n  \
         laptop:\n    role: local\n    address: 127.0.0.1\n"
    )
}

/// A Semaphore-started service `llm` on `machines`, with fast polls and `extra` keys.
fn llm_service(port: u16, machines: &str, extra: &str) -> String {
    format!(
        "  llm:\n    base_url: \"http://{{address}}:{port}\"\n    machines: [{machines}]\n    \
         start:\n      semaphore:\n        template_id: {START}\n        environment:\n          \
         model: llama-3\n        poll_interval_ms: 20\n        task_timeout_ms: 15000\n    \
         stop:\n      semaphore:\n        template_id: {STOP}\n        poll_interval_ms: 20\n    \
         readiness:\n      http:\n        url: \"http://{{address}}:{port}/health\"\n        \
         interval_ms: 20\n{extra}"
    )
}

fn tasks_of(fake: &FakeSemaphoreHandle, template_id: i64) -> Vec<Value> {
    fake.started_tasks()
        .into_iter()
        .filter(|t| t.template_id == template_id)
        .map(|t| t.environment)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_semaphore_service_runs_one_task_and_serves_the_queued_requests() {
    // Given a cold service started by Semaphore template 3 on machine `gpu`
    let port = free_port();
    let fake = fake_with_sim(port, FakeTemplate::succeeding("start-llm").run_ms(150)).await;
    let hestia = TestEngine::start_with_globals(
        &globals(&fake.url(), TOKEN),
        &[],
        &llm_service(port, "gpu", ""),
    )
    .await;
    let service = hestia.service("llm");

    // When five clients call at once
    let mut clients = Vec::new();
    for i in 0..5 {
        let service = service.clone();
        clients.push(tokio::spawn(async move {
            let request_id = format!("req-{i}");
            let lease = service.acquire(Some(&request_id)).await?;
            let answer = get(&lease.route().base_url, "/hello", &request_id).await;
            Ok::<_, ServiceError>(answer.status().as_u16())
        }));
    }

    // Then all are answered by the backend the task launched
    for client in clients {
        assert_eq!(client.await.expect("client").expect("served"), 200);
    }
    // And exactly one task ran, with the template and environment Hestia was configured with
    let started = fake.started_tasks();
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0].template_id, START);
    assert_eq!(
        started[0].environment,
        json!({"service_id": "llm", "machine_id": "gpu", "address": "127.0.0.1", "model": "llama-3"})
    );
    // And it was polled until it succeeded
    assert_eq!(
        fake.task_status(started[0].task_id).as_deref(),
        Some("success")
    );
    let polls = fake
        .calls()
        .iter()
        .filter(|c| c.method == "GET" && c.path == "/api/project/1/tasks/1")
        .count();
    assert!(
        polls >= 2,
        "polled through waiting/starting/running ({polls} polls)"
    );
    // And the status API's automation block shows that task as the last one, finished
    let automation = service
        .automation()
        .expect("a Semaphore service has automation");
    assert!(automation.enabled);
    assert_eq!(automation.machine_id.as_deref(), Some("gpu"));
    let last = automation.last_task.expect("the start task");
    assert_eq!((last.template_id, last.status.as_str()), (START, "success"));
    assert!(automation.current_task.is_none());
    hestia.shutdown().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_ending_in_error_is_retried_then_the_fallback_machine_s_task_succeeds() {
    // Given a template that fails on `gpu` and succeeds on `laptop`, one retry per machine
    let port = free_port();
    let start = FakeTemplate::succeeding("start-llm")
        .outcome_on("gpu", Outcome::Error)
        .output(&["TASK [load model] ****", "fatal: [gpu]: CUDA out of memory"]);
    let fake = fake_with_sim(port, start).await;
    let retry = "    retry:\n      count: 1\n      delay_ms: 50\n";
    let hestia = TestEngine::start_with_globals(
        &globals(&fake.url(), TOKEN),
        &[],
        &llm_service(port, "gpu, laptop", retry),
    )
    .await;

    // When a request arrives
    let lease = hestia
        .service("llm")
        .acquire(Some("r1"))
        .await
        .expect("served after the fallback");

    // Then it is served from the fallback machine
    assert_eq!(lease.route().machine_id.as_deref(), Some("laptop"));
    assert_eq!(
        get(&lease.route().base_url, "/hi", "r1").await.status(),
        200
    );
    drop(lease);
    // After two tasks on gpu (first try and retry) and one on laptop
    let machines: Vec<_> = tasks_of(&fake, START)
        .iter()
        .map(|env| env["machine_id"].as_str().unwrap_or("-").to_owned())
        .collect();
    assert_eq!(machines, ["gpu", "gpu", "laptop"]);
    let retries = hestia.events("llm", ActivityKind::StartRetry).await;
    assert_eq!(retries.len(), 1);
    assert!(
        retries[0].detail["error"]
            .as_str()
            .is_some_and(|e| e.contains("CUDA out of memory")),
        "the retry records why: {}",
        retries[0].detail
    );
    let fallbacks = hestia.events("llm", ActivityKind::StartFallback).await;
    assert_eq!(fallbacks.len(), 1);
    assert_eq!(fallbacks[0].detail["to_machine"], "laptop");
    hestia.shutdown().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_task_fails_the_start_failed_problem_carries_the_task_output_tail() {
    // Given a template that always fails with Ansible's complaint
    let port = free_port();
    let start = FakeTemplate::failing(
        "start-llm",
        &[
            "TASK [Gathering Facts] ****",
            "\u{1b}[0;31mfatal: [gpu]: UNREACHABLE! => ssh: connect to host gpu port 22: No route to host\u{1b}[0m",
        ],
    );
    let fake = fake_with_sim(port, start).await;
    let retry = "    retry:\n      count: 1\n      delay_ms: 20\n";
    let server = TestServer::start_with_globals(
        &globals(&fake.url(), TOKEN),
        &[],
        &llm_service(port, "gpu", retry),
    )
    .await;

    // When a client calls the service through Hestia
    let response = server.get("/services/llm/v1/models").await;

    // Then it gets `start-failed`, and the detail shows the playbook's last lines, colours removed
    assert_eq!(response.status(), 503);
    let problem: Value = response.json().await.expect("problem+json");
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("start-failed")),
        "{problem}"
    );
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(
            "fatal: [gpu]: UNREACHABLE! => ssh: connect to host gpu port 22: No route to host"
        ),
        "{detail}"
    );
    assert!(detail.contains("ended `error`"), "{detail}");
    assert!(!detail.contains('\u{1b}'), "no ANSI codes: {detail:?}");
    assert_eq!(
        tasks_of(&fake, START).len(),
        2,
        "the first try and one retry"
    );
    server.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_shutdown_runs_the_stop_template_which_stops_the_backend() {
    // Given a Semaphore service that stops after 300 ms without requests
    let port = free_port();
    let fake = fake_with_sim(port, FakeTemplate::succeeding("start-llm")).await;
    let hestia = TestEngine::start_with_globals(
        &globals(&fake.url(), TOKEN),
        &[],
        &llm_service(port, "gpu", "    idle_timeout_ms: 300\n"),
    )
    .await;
    let service = hestia.service("llm");
    let lease = service.acquire(Some("r1")).await.expect("served");
    assert_eq!(get(&lease.route().base_url, "/x", "r1").await.status(), 200);
    assert!(fake.launched_alive("llm").await);
    drop(lease);

    // When it has been idle long enough
    wait_for_state(&service, State::Cold).await;

    // Then the stop template ran with the service's environment and the backend is gone
    let stops = tasks_of(&fake, STOP);
    assert_eq!(
        stops,
        [json!({"service_id": "llm", "machine_id": "gpu", "address": "127.0.0.1"})]
    );
    assert!(
        !fake.launched_alive("llm").await,
        "the stop task killed the sim"
    );
    assert_eq!(
        hestia.events("llm", ActivityKind::IdleShutdown).await.len(),
        1
    );
    let stopped = hestia.events("llm", ActivityKind::Stopped).await;
    assert_eq!(stopped[0].detail["error"], Value::Null);
    hestia.shutdown().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_semaphore_is_unreachable_the_start_is_retried_then_fails_saying_so() {
    // Given a Semaphore URL nobody listens on
    let port = free_port();
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let retry = "    retry:\n      count: 1\n      delay_ms: 20\n";
    let hestia = TestEngine::start_with_globals(
        &globals(&nowhere, TOKEN),
        &[],
        &llm_service(port, "gpu", retry),
    )
    .await;

    // When a request arrives
    let error = hestia.service("llm").acquire(Some("r1")).await.unwrap_err();

    // Then, after one retry, the error names Semaphore and where it was looked for
    let ServiceError::StartFailed {
        attempts,
        starter,
        last_error,
        ..
    } = &error
    else {
        panic!("expected start-failed, got {error:?}");
    };
    assert_eq!((*attempts, *starter), (2, "semaphore"));
    assert!(
        last_error
            .to_string()
            .contains(&format!("could not reach Semaphore at {nowhere}")),
        "{last_error}"
    );
    assert_eq!(
        hestia.events("llm", ActivityKind::StartRetry).await.len(),
        1
    );
    hestia.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_fails_with_an_error_that_says_so_and_never_shows_the_token() {
    // Given Hestia configured with a token Semaphore does not know
    let port = free_port();
    let fake = fake_with_sim(port, FakeTemplate::succeeding("start-llm")).await;
    let wrong = "wrong-token-0123456789abcdefghijklmnopqrstu=";
    let hestia = TestEngine::start_with_globals(
        &globals(&fake.url(), wrong),
        &[],
        &llm_service(port, "gpu", "    retry:\n      count: 0\n"),
    )
    .await;

    // When a request arrives
    let error = hestia.service("llm").acquire(Some("r1")).await.unwrap_err();

    // Then the error says the token was rejected and how to fix it, without the token itself
    let text = error.to_string();
    assert!(text.contains("rejected the API token"), "{text}");
    assert!(text.contains("SEMAPHORE_API_TOKEN"), "{text}");
    assert!(!text.contains(wrong), "{text}");
    assert!(!format!("{:?}", hestia.config.engine).contains(wrong));
    assert!(fake.started_tasks().is_empty());
    // (The start-up ping may come first: it needs no token.)
    let calls = fake.calls();
    let call = calls
        .iter()
        .find(|c| c.path != "/api/ping")
        .expect("a task call");
    assert_eq!(
        (call.path.as_str(), call.status),
        ("/api/project/1/tasks", 401)
    );
    hestia.shutdown().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waking_a_machine_sends_the_magic_packet_then_records_it_awake() {
    // Given a machine with wake-on-LAN aimed at a loopback UDP socket, and a service placed on it
    let catcher = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("udp");
    let broadcast = catcher.local_addr().expect("addr");
    let globals = format!(
        "machines:\n  desk:\n    role: remote\n    address: 127.0.0.1\n    wake:\n      wol:\n        \
         mac: \"aa:bb:cc:dd:ee:0f\"\n        broadcast: \"{broadcast}\"\n"
    );
    let sim = Sim::new("desk-echo").key("machine: desk");
    let hestia = TestEngine::start_with_globals(&globals, &[&sim], "").await;

    // When the service is started
    let lease = hestia
        .service("desk-echo")
        .acquire(Some("r1"))
        .await
        .expect("served");

    // Then the magic packet arrived: six 0xFF, then the MAC sixteen times
    let mut packet = [0u8; 256];
    let (len, _) = tokio::time::timeout(Duration::from_secs(5), catcher.recv_from(&mut packet))
        .await
        .expect("a packet within 5 s")
        .expect("recv");
    let mac = [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x0f];
    let mut expected = vec![0xFF; 6];
    for _ in 0..16 {
        expected.extend_from_slice(&mac);
    }
    assert_eq!(&packet[..len], expected.as_slice());
    assert_eq!(lease.route().machine_id.as_deref(), Some("desk"));
    drop(lease);

    // And the machine is recorded as awake, seen just now
    let machines = hestia.persistence.machines().await.expect("machines");
    let desk = machines.iter().find(|m| m.id == "desk").expect("desk row");
    assert_eq!(desk.awake, Some(true));
    assert!(desk.last_seen_at.is_some());
    let pid = hestia.service("desk-echo").status().pid;
    hestia.shutdown().await;
    if let Some(pid) = pid {
        assert!(!process_alive(pid));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prototype_flat_semaphore_config_behaves_like_the_rich_form() {
    let port = free_port();
    let flat_globals = format!(
        "machines:\n  gpu:\n    role: remote\n    address: 127.0.0.1\n\
         semaphore_base_url: \"{{url}}\"\nsemaphore_api_key: \"{TOKEN}\"\n"
    );
    let flat_service = format!(
        "  llm:\n    base_url: \"http://{{address}}:{port}\"\n    health_url: \"http://{{address}}:{port}/health\"\n    \
         semaphore_enabled: true\n    semaphore_machine_id: gpu\n    semaphore_start_template_id: {START}\n    \
         semaphore_stop_template_id: {STOP}\n    semaphore_task_timeout: 15\n    semaphore_poll_interval: 1\n"
    );
    let rich_globals = "machines:\n  gpu:\n    role: remote\n    address: 127.0.0.1\n\
                        semaphore:\n  base_url: \"{url}\"\n  api_token: \"TOKEN\"\n"
        .replace("TOKEN", TOKEN);
    let rich_service = format!(
        "  llm:\n    base_url: \"http://{{address}}:{port}\"\n    machine: gpu\n    \
         start:\n      semaphore:\n        template_id: {START}\n        task_timeout_ms: 15000\n        poll_interval_ms: 1000\n    \
         stop:\n      semaphore:\n        template_id: {STOP}\n        task_timeout_ms: 15000\n        poll_interval_ms: 1000\n    \
         readiness:\n      http:\n        url: \"http://{{address}}:{port}/health\"\n"
    );

    // Given the same service written both ways, each against its own fake Semaphore
    let mut observed = Vec::new();
    for (globals, service) in [(flat_globals, flat_service), (rich_globals, rich_service)] {
        let fake = fake_with_sim(port, FakeTemplate::succeeding("start-llm")).await;
        let hestia =
            TestEngine::start_with_globals(&globals.replace("{url}", &fake.url()), &[], &service)
                .await;
        let service = hestia.service("llm");

        // When it is started, used and stopped
        let lease = service.acquire(Some("r1")).await.expect("served");
        let status = get(&lease.route().base_url, "/hi", "r1").await.status();
        drop(lease);
        service.stop().await.expect("stop accepted");
        wait_for_state(&service, State::Cold).await;

        observed.push((
            status.as_u16(),
            fake.started_tasks()
                .into_iter()
                .map(|t| (t.template_id, t.environment))
                .collect::<Vec<_>>(),
            fake.launched_alive("llm").await,
        ));
        hestia.shutdown().await;
        fake.shutdown().await;
    }

    // Then both ran the same tasks with the same environment and left nothing running
    let env = json!({"service_id": "llm", "machine_id": "gpu", "address": "127.0.0.1"});
    assert_eq!(
        observed[0],
        (200, vec![(START, env.clone()), (STOP, env)], false)
    );
    assert_eq!(observed[0], observed[1]);
}

fn connection(base_url: &str) -> SemaphoreConnection {
    SemaphoreConnection {
        base_url: base_url.to_owned(),
        api_token: None,
        username: Some("admin".to_owned()),
        password: Some("s3cret-pass".to_owned()),
        project_id: 1,
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn the_client_logs_in_again_once_when_its_session_expires_against_both_api_shapes() {
    for shape in [ApiShape::V2_16, ApiShape::V2_10] {
        // Given a Semaphore that accepts admin's password, answering in this version's shape
        let fake = fake_semaphore::spawn(
            FakeSemaphoreOptions::with_token(TOKEN)
                .user("admin", "s3cret-pass")
                .shape(shape)
                .template(START, FakeTemplate::succeeding("noop").run_ms(10)),
        )
        .await
        .expect("fake");
        let client = SemaphoreClient::new(connection(&fake.url()));
        let options = RunOptions {
            poll_interval: Duration::from_millis(10),
            timeout: Duration::from_secs(5),
        };
        client.ping().await.expect("pong");

        // When a task runs, the session expires, and another task runs
        let first = client
            .run_task(START, &Map::new(), "one", options, |_| {})
            .await
            .expect("first task");
        fake.expire_sessions();
        let second = client
            .run_task(START, &Map::new(), "two", options, |_| {})
            .await
            .expect("second task after a re-login");

        // Then both succeeded, with exactly two logins
        assert_eq!((first.id, second.id), (1, 2), "{shape:?}");
        assert!(second.start.is_some() && second.end.is_some(), "{shape:?}");
        let logins = fake
            .calls()
            .iter()
            .filter(|c| c.path == "/api/auth/login")
            .count();
        assert_eq!(logins, 2, "{shape:?}");
        fake.shutdown().await;
    }
}

#[tokio::test]
async fn a_wrong_password_is_reported_as_a_rejected_login_without_the_password() {
    let fake =
        fake_semaphore::spawn(FakeSemaphoreOptions::with_token(TOKEN).user("admin", "right"))
            .await
            .expect("fake");
    let client = SemaphoreClient::new(connection(&fake.url()));

    let error = client
        .start_task(START, &Map::new(), "x")
        .await
        .unwrap_err();

    assert!(
        matches!(error, SemaphoreError::BadLogin { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("rejected the login of `admin`"));
    assert!(!error.to_string().contains("s3cret-pass"));
    assert!(!format!("{client:?}").contains("s3cret-pass"));
    fake.shutdown().await;
}

#[tokio::test]
async fn a_task_past_its_timeout_is_stopped_with_the_body_semaphore_requires() {
    // Given a template whose task runs for a minute
    let fake = fake_semaphore::spawn(
        FakeSemaphoreOptions::with_token(TOKEN)
            .template(START, FakeTemplate::succeeding("slow").run_ms(60_000)),
    )
    .await
    .expect("fake");
    let mut conn = connection(&fake.url());
    conn.api_token = Some(TOKEN.to_owned());
    let client = SemaphoreClient::new(conn);

    // When Hestia gives it 200 ms
    let options = RunOptions {
        poll_interval: Duration::from_millis(20),
        timeout: Duration::from_millis(200),
    };
    let error = client
        .run_task(START, &Map::new(), "slow", options, |_| {})
        .await
        .unwrap_err();

    // Then the task is stopped (the fake refuses a stop without a JSON body) and the error says so
    assert!(
        matches!(error, SemaphoreError::TaskTimedOut { .. }),
        "{error:?}"
    );
    let stop = fake
        .calls()
        .into_iter()
        .find(|c| c.path.ends_with("/stop"))
        .expect("a stop call");
    assert_eq!(stop.status, 204);
    support::eventually("the task is stopped", Duration::from_secs(2), || {
        fake.task_status(1).as_deref() == Some("stopped")
    })
    .await;
    assert!(
        error.to_string().contains("it was asked to stop"),
        "{error}"
    );
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_with_a_semaphore_wake_is_woken_by_its_template_before_the_start_task() {
    // Given machine `gpu` woken by template 5, and a Semaphore service placed on it
    let port = free_port();
    let fake = fake_with_sim(port, FakeTemplate::succeeding("start-llm")).await;
    fake.set_template(5, FakeTemplate::succeeding("wake-gpu"));
    let globals = format!(
        "semaphore:\n  base_url: \"{}\"\n  api_token: \"{TOKEN}\"\n\
         machines:\n  gpu:\n    role: remote\n    address: 127.0.0.1\n    wake:\n      semaphore:\n        \
         template_id: 5\n        poll_interval_ms: 20\n        environment:\n          mac: \"aa:bb:cc:dd:ee:ff\"\n",
        fake.url()
    );
    let hestia = TestEngine::start_with_globals(&globals, &[], &llm_service(port, "gpu", "")).await;

    // When a request arrives
    let lease = hestia
        .service("llm")
        .acquire(Some("r1"))
        .await
        .expect("served");
    drop(lease);

    // Then the wake task ran first, for that machine, then the start task
    let order: Vec<_> = fake.started_tasks().iter().map(|t| t.template_id).collect();
    assert_eq!(order, [5, START]);
    assert_eq!(
        tasks_of(&fake, 5)[0],
        json!({"service_id": "llm", "machine_id": "gpu", "address": "127.0.0.1", "mac": "aa:bb:cc:dd:ee:ff"})
    );
    let gpu = hestia.persistence.machines().await.expect("machines");
    assert_eq!(
        gpu.iter().find(|m| m.id == "gpu").and_then(|m| m.awake),
        Some(true)
    );
    hestia.shutdown().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn the_semaphore_starter_s_automation_snapshot_shows_the_last_start_and_stop_tasks() {
    use hestia_actors::spec::{MachineRole, MachineSpec, SemaphoreTaskSpec, StarterSpec};
    use hestia_actors::starters::{self, StartTarget, StarterContext};

    // Given a service with Semaphore start and stop templates, built as the engine builds it
    let fake = fake_semaphore::spawn(
        FakeSemaphoreOptions::with_token(TOKEN)
            .template(START, FakeTemplate::succeeding("start").run_ms(10))
            .template(STOP, FakeTemplate::succeeding("stop").run_ms(10)),
    )
    .await
    .expect("fake");
    let mut conn = connection(&fake.url());
    conn.api_token = Some(TOKEN.to_owned());
    let context = StarterContext {
        semaphore: Some(SemaphoreClient::new(conn)),
        ..StarterContext::default()
    };
    let task = |template_id| {
        StarterSpec::Semaphore(SemaphoreTaskSpec {
            template_id,
            environment: Default::default(),
            task_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(10),
        })
    };
    let starter = starters::build(&task(START), Some(&task(STOP)), "llm", &context);
    let target = StartTarget {
        service_id: "llm".into(),
        attempt: 1,
        machine: Some(MachineSpec {
            id: "gpu".into(),
            role: MachineRole::Remote,
            address: "127.0.0.1".into(),
            tags: Vec::new(),
            wake: None,
        }),
        base_url: "http://127.0.0.1:1".into(),
    };
    assert_eq!(starter.kind(), "semaphore");
    assert!(starter.automation().is_some_and(|a| a.last_task.is_none()));

    // When it starts, then stops
    starter.start(&target).await.expect("start task");
    let after_start = starter.automation().expect("automation");
    starter.stop(&target).await.expect("stop task");
    let after_stop = starter.automation().expect("automation");

    // Then each snapshot shows the finished task, with its template, status and duration
    assert_eq!(after_start.provider, "semaphore");
    assert_eq!(after_start.machine_id.as_deref(), Some("gpu"));
    assert!(after_start.current_task.is_none());
    let last = after_start.last_task.expect("last task");
    assert_eq!(
        (last.task_id, last.template_id, last.action),
        (1, START, "start")
    );
    assert_eq!(last.status, "success");
    assert!(last.completed_at.is_some() && last.duration_ms.is_some());
    let last = after_stop.last_task.expect("last task");
    assert_eq!(
        (last.task_id, last.template_id, last.action),
        (2, STOP, "stop")
    );
    fake.shutdown().await;
}
