//! Chaos on the process side: Hestia killed mid-start, stale pids, service output after Hestia
//! dies, secrets in URLs, readiness of the database, services Hestia does not start, prototype configs.

use std::os::unix::process::CommandExt;
use std::time::Duration;

use crate::support::{
    GroupGuard, HestiaProcess, Sim, config_yaml, eventually, free_port, process_alive,
    processes_with,
};

fn write_config(dir: &std::path::Path, yaml: &str) {
    std::fs::write(dir.join("hestia_config.yml"), yaml).expect("config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hestia_killed_mid_start_leaves_exactly_one_backend_which_the_next_hestia_waits_for() {
    // Given a backend that takes 4 s before it listens, being started by Hestia
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::new("slowpoke").startup_delay_ms(4000);
    write_config(dir.path(), &config_yaml(dir.path(), &[&sim], ""));
    let first = HestiaProcess::spawn(dir.path());
    let _ = first.wait_for_state("slowpoke", "cold").await;
    assert_eq!(
        first.post("/v1/services/slowpoke/start").await.status(),
        202
    );
    let starting = first.wait_for_state("slowpoke", "starting").await;
    let pid = match starting["pid"].as_u64() {
        Some(pid) => pid as u32,
        None => eventually_pid(&first, "slowpoke").await,
    };
    let _guard = GroupGuard(pid);
    first.flush().await;

    // When Hestia is SIGKILLed while the backend is still starting
    first.kill();
    assert!(process_alive(pid), "the backend outlived Hestia");

    // Then the next Hestia continues that start instead of spawning a second backend
    let second = HestiaProcess::spawn(dir.path());
    let ready = second.wait_for_state("slowpoke", "ready").await;
    assert_eq!(
        ready["pid"].as_u64(),
        Some(u64::from(pid)),
        "the same process; log:\n{}",
        second.log_text()
    );
    assert_eq!(ready["adopted"], true);
    let backends = processes_with(&["sim", "--port", &sim.port.to_string()]);
    assert_eq!(backends, vec![pid], "exactly one backend runs");
    let attempts = second
        .get_json("/v1/activity?service=slowpoke&type=start_attempt")
        .await
        .expect("activity");
    assert_eq!(
        attempts["events"].as_array().map(Vec::len),
        Some(1),
        "one start attempt over both runs: {attempts}"
    );

    // And stopping it stops that one process: nothing is orphaned
    assert_eq!(
        second.post("/v1/services/slowpoke/stop").await.status(),
        202
    );
    eventually("the backend is gone", Duration::from_secs(10), || {
        !process_alive(pid)
    })
    .await;
}

/// The pid of `service`'s process, once Hestia reports one.
async fn eventually_pid(hestia: &HestiaProcess, service: &str) -> u32 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(pid) = hestia.status(service).await.and_then(|s| s["pid"].as_u64()) {
            return pid as u32;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{service} never got a pid"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_pid_now_used_by_another_process_is_never_adopted_nor_signalled() {
    // Given Hestia killed while its backend was up, and that backend gone too
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::new("reused");
    write_config(dir.path(), &config_yaml(dir.path(), &[&sim], ""));
    let first = HestiaProcess::spawn(dir.path());
    let _ = first.wait_for_state("reused", "cold").await;
    let started = first.post("/v1/services/reused/start?wait=true").await;
    assert_eq!(started.status(), 200);
    let backend = eventually_pid(&first, "reused").await;
    let _guard = GroupGuard(backend);
    first.flush().await;
    first.kill();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{backend}")])
        .status()
        .expect("kill the backend's group");
    assert!(killed.success());
    eventually("the backend is gone", Duration::from_secs(5), || {
        !process_alive(backend)
    })
    .await;

    // And its pid now belongs to a stranger: a `sleep` leading its own process group, as a
    // reused pid would (the database is pointed at it, the recorded identity kept)
    let mut stranger = std::process::Command::new("sleep")
        .arg("120")
        .process_group(0)
        .spawn()
        .expect("spawn sleep");
    let stranger_pid = stranger.id();
    point_recorded_pid_at(dir.path(), "reused", stranger_pid).await;

    // When a new Hestia starts, then it does not adopt the stranger
    let second = HestiaProcess::spawn(dir.path());
    eventually(
        "hestia looked at the recorded process and left it alone",
        Duration::from_secs(10),
        || second.log_text().contains("not adopting"),
    )
    .await;
    let status = second.wait_for_state("reused", "cold").await;
    assert_eq!(status["adopted"], false);
    // And a start, a stop and another start never touch it
    assert_eq!(
        second
            .post("/v1/services/reused/start?wait=true")
            .await
            .status(),
        200
    );
    let ours = eventually_pid(&second, "reused").await;
    let _ours_guard = GroupGuard(ours);
    assert_ne!(ours, stranger_pid);
    assert_eq!(second.post("/v1/services/reused/stop").await.status(), 202);
    eventually("our backend is gone", Duration::from_secs(10), || {
        !process_alive(ours)
    })
    .await;
    second.kill();
    assert!(
        matches!(stranger.try_wait(), Ok(None)),
        "the stranger was never signalled"
    );
    stranger.kill().expect("kill sleep");
    stranger.wait().expect("reap sleep");
}

/// Rewrites the pid Hestia recorded for `service` (Hestia is not running).
async fn point_recorded_pid_at(dir: &std::path::Path, service: &str, pid: u32) {
    use sea_orm::ConnectionTrait;
    let url = format!("sqlite://{}?mode=rw", dir.join("hestia.db").display());
    let db = hestia_actors::persistence::open(&url)
        .await
        .expect("open the database");
    let updated = db
        .execute_unprepared(&format!(
            "UPDATE services SET pid = {pid} WHERE id = '{service}' AND pid IS NOT NULL"
        ))
        .await
        .expect("update");
    assert_eq!(updated.rows_affected(), 1, "Hestia had recorded a pid");
    db.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_hestia_does_not_start_is_waiting_and_its_timeout_says_what_for() {
    // Given a service with no `start`, whose backend is not up, and a 1 s request timeout
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let extra = format!(
        "  elsewhere:\n    base_url: \"http://127.0.0.1:{port}\"\n    request_timeout_seconds: 1\n    readiness:\n      http:\n        url: \"http://127.0.0.1:{port}/health\"\n"
    );
    write_config(dir.path(), &config_yaml(dir.path(), &[], &extra));
    let hestia = HestiaProcess::spawn(dir.path());
    let _ = hestia.wait_for_state("elsewhere", "cold").await;

    // When a request comes in, then the service is `waiting` (not `starting`) while it waits
    let url = format!("{}/services/elsewhere/x", hestia.url);
    let request = tokio::spawn(async move { reqwest::get(url).await.expect("answer") });
    let waiting = hestia.wait_for_state("elsewhere", "waiting").await;
    assert_eq!(waiting["queuePending"], 1);

    // And the timeout says Hestia does not start it and which URL it waits for
    let answer = request.await.expect("request task");
    assert_eq!(answer.status(), 504);
    let problem: serde_json::Value = answer.json().await.expect("problem");
    let detail = problem["detail"].as_str().expect("detail");
    assert!(
        detail.contains("Hestia does not start this service"),
        "{detail}"
    );
    assert!(
        detail.contains(&format!("http://127.0.0.1:{port}/health")),
        "{detail}"
    );
    // And the timed-out request left the queue count
    let after = hestia.status("elsewhere").await.expect("status");
    assert_eq!(after["queuePending"], 0, "{after}");
    assert_eq!(after["state"], "waiting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_python_http_server_still_answers_and_its_log_goes_on() {
    // Given `python3 -m http.server` (it logs every request to stderr) started by Hestia
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let extra = format!(
        "  files:\n    base_url: \"http://127.0.0.1:{port}\"\n    start:\n      command:\n        program: \"python3\"\n        args: [\"-m\", \"http.server\", \"{port}\", \"--bind\", \"127.0.0.1\"]\n        cwd: \"{}\"\n    readiness:\n      http:\n        url: \"http://127.0.0.1:{port}/\"\n        interval_ms: 20\n",
        dir.path().display()
    );
    write_config(dir.path(), &config_yaml(dir.path(), &[], &extra));
    let first = HestiaProcess::spawn(dir.path());
    let _ = first.wait_for_state("files", "cold").await;
    let through = format!("{}/services/files/", first.url);
    assert_eq!(reqwest::get(&through).await.expect("proxied").status(), 200);
    let pid = eventually_pid(&first, "files").await;
    let _guard = GroupGuard(pid);
    first.flush().await;

    // When Hestia is SIGKILLed, the backend goes on answering (and logging) on its own
    first.kill();
    let direct = format!("http://127.0.0.1:{port}/?alone");
    for _ in 0..5 {
        let answer = reqwest::get(&direct).await.expect("the backend answers");
        assert_eq!(answer.status(), 200);
    }

    // Then the next Hestia adopts it, it still answers through Hestia, and its log went on
    let second = HestiaProcess::spawn(dir.path());
    let ready = second.wait_for_state("files", "ready").await;
    assert_eq!(ready["pid"].as_u64(), Some(u64::from(pid)));
    use tokio::io::AsyncBufReadExt;
    let mut follower = tokio::process::Command::new(crate::support::hestia_exe())
        .args([
            "logs",
            "files",
            "--follow",
            "--lines",
            "1",
            "--url",
            &second.url,
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("hestia logs --follow");
    let stdout = follower.stdout.take().expect("piped stdout");
    let mut followed = tokio::io::BufReader::new(stdout).lines();
    let tail = tokio::time::timeout(Duration::from_secs(10), followed.next_line()).await;
    assert!(
        matches!(&tail, Ok(Ok(Some(line))) if !line.contains("GET /?after")),
        "the tail comes first: {tail:?}"
    );
    let through = format!("{}/services/files/?after", second.url);
    assert_eq!(reqwest::get(&through).await.expect("proxied").status(), 200);

    // `hestia logs --follow` then prints the new line as the backend writes it
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(line)) = followed.next_line().await {
            if line.contains("GET /?after") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true), "the followed log never showed the request");
    follower.kill().await.expect("stop following");
    let log_text = || async {
        reqwest::get(format!("{}/v1/services/files/logs?lines=50", second.url))
            .await
            .expect("logs")
            .text()
            .await
            .expect("text")
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut lines = log_text().await;
    while !lines.contains("GET /?after") && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        lines = log_text().await;
    }
    assert!(lines.contains("GET /?alone"), "{lines}");
    assert!(lines.contains("GET /?after"), "{lines}");

    // And `hestia logs` prints the same tail
    let cli = std::process::Command::new(crate::support::hestia_exe())
        .args(["logs", "files", "--lines", "3", "--url", &second.url])
        .output()
        .expect("hestia logs");
    assert!(cli.status.success());
    let printed = String::from_utf8_lossy(&cli.stdout);
    assert_eq!(printed.lines().count(), 3, "{printed}");
    assert!(printed.contains("GET /?after"), "{printed}");
    // And what the backend wrote reached Hestia's own log too
    eventually(
        "the output is in Hestia's log",
        Duration::from_secs(5),
        || second.log_text().contains("GET /?after"),
    )
    .await;
    assert_eq!(second.post("/v1/services/files/stop").await.status(), 202);
    eventually("the backend is gone", Duration::from_secs(10), || {
        !process_alive(pid)
    })
    .await;
}
