//! The `hestia` client commands against a running Hestia, found through `HESTIA_URL`: readable
//! errors and exit codes, idempotent start and stop, `start --wait`, status and activity.

mod support;

use std::process::Output;

use serde_json::Value;
use support::{Sim, TestServer, hestia_exe};

/// Runs `hestia ARGS` with `HESTIA_URL` pointing at `url`.
async fn hestia(url: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(hestia_exe())
        .args(args)
        .env("HESTIA_URL", url)
        .env_remove("HESTIA_API_KEY")
        .env("HESTIA_CONFIG", "/nonexistent/hestia_config.yml")
        .output()
        .await
        .expect("run hestia")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exited")
}

#[tokio::test]
async fn start_and_stop_are_idempotent_and_wait_reports_the_outcome() {
    let echo = Sim::new("echo").startup_delay_ms(200);
    let server = TestServer::start(&[&echo], "").await;

    let waited = hestia(&server.url, &["start", "echo", "--wait"]).await;
    assert_eq!(code(&waited), 0, "{}", stderr(&waited));
    assert!(
        stdout(&waited).starts_with("echo is ready ("),
        "{}",
        stdout(&waited)
    );
    // Not a terminal: the progress is one line per state change.
    assert!(
        stderr(&waited).contains("echo: starting"),
        "{}",
        stderr(&waited)
    );

    let again = hestia(&server.url, &["start", "echo"]).await;
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert_eq!(stdout(&again), "echo is already ready: nothing to do\n");

    let stopped = hestia(&server.url, &["stop", "echo"]).await;
    assert_eq!(code(&stopped), 0, "{}", stderr(&stopped));
    assert!(stdout(&stopped).starts_with("echo: stop initiated"));
    let service = server.get("/v1/services/echo/status").await;
    let mut state = service.json::<Value>().await.expect("json")["state"].clone();
    while state != "cold" {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        state = server
            .get("/v1/services/echo/status")
            .await
            .json::<Value>()
            .await
            .expect("json")["state"]
            .clone();
    }
    let again = hestia(&server.url, &["stop", "echo"]).await;
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert_eq!(stdout(&again), "echo is already cold: nothing to do\n");

    let activity = hestia(
        &server.url,
        &["activity", "--service", "echo", "--limit", "100"],
    )
    .await;
    assert_eq!(code(&activity), 0, "{}", stderr(&activity));
    let lines = stdout(&activity);
    let started = lines.find(" started ").expect("a started line");
    let stopped = lines.find(" stopped ").expect("a stopped line");
    assert!(started < stopped, "oldest first:\n{lines}");
    server.stop().await;
}

#[tokio::test]
async fn a_failed_start_is_reported_in_words_with_exit_code_1() {
    let broken = Sim::new("broken").fail_to_start().key("retry: {count: 0}");
    let server = TestServer::start(&[&broken], "").await;
    let output = hestia(&server.url, &["start", "broken", "--wait"]).await;
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("error: Service failed to start: "), "{text}");
    assert!(!text.contains('{'), "no JSON in the error: {text}");
    server.stop().await;
}

#[tokio::test]
async fn status_tables_json_and_the_exit_codes_of_failures() {
    let server = TestServer::start(&[&Sim::new("echo")], "").await;
    let table = hestia(&server.url, &["status"]).await;
    assert_eq!(code(&table), 0);
    let lines: Vec<String> = stdout(&table).lines().map(str::to_owned).collect();
    assert!(lines[0].starts_with("SERVICE"), "{lines:?}");
    assert!(
        lines[1].starts_with("echo ") && lines[1].contains(" cold "),
        "{lines:?}"
    );

    let json = hestia(&server.url, &["status", "echo", "--format", "json"]).await;
    let body: Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(
        (body["serviceId"].as_str(), body["state"].as_str()),
        (Some("echo"), Some("cold"))
    );

    let unknown = hestia(&server.url, &["status", "nope"]).await;
    assert_eq!(code(&unknown), 4);
    assert!(
        stderr(&unknown).starts_with("error: Unknown service: "),
        "{}",
        stderr(&unknown)
    );

    let nobody = format!("http://127.0.0.1:{}", support::free_port());
    let unreachable = hestia(&nobody, &["stop", "echo"]).await;
    assert_eq!(code(&unreachable), 3);
    assert!(stderr(&unreachable).contains(&format!("cannot reach Hestia at {nobody}")));
    server.stop().await;
}

#[tokio::test]
async fn help_describes_every_option_and_offers_none_a_command_ignores() {
    for (command, expected, absent) in [
        (
            vec!["start", "--help"],
            vec!["--wait", "--url", "--api-key", "HESTIA_URL", "Exit codes"],
            vec![],
        ),
        (
            vec!["activity", "--help"],
            vec!["--follow", "--service", "--type", "--limit"],
            vec!["--wait"],
        ),
        (
            vec!["sim", "--help"],
            vec!["--port"],
            vec!["--config", "--url"],
        ),
        (
            vec!["config", "schema", "--help"],
            vec![],
            vec!["--config", "--url"],
        ),
        (
            vec!["logs", "--help"],
            vec!["--lines", "--follow", "--url", "<SERVICE>", "Exit codes"],
            vec!["--wait", "--format"],
        ),
        (
            vec!["serve", "--help"],
            vec!["--config"],
            vec!["--url", "--format"],
        ),
    ] {
        let output = hestia("http://unused", &command).await;
        let help = stdout(&output);
        assert_eq!(code(&output), 0, "{command:?}");
        for option in expected {
            assert!(help.contains(option), "{command:?} lacks {option}:\n{help}");
        }
        for option in absent {
            assert!(
                !help.contains(option),
                "{command:?} offers {option}:\n{help}"
            );
        }
        // Every option carries a description: on its line, or on the next one.
        let lines: Vec<&str> = help.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim_start().starts_with("--") {
                let next = lines.get(i + 1).map_or("", |l| l.trim());
                assert!(
                    line.trim().contains("  ") || !next.is_empty(),
                    "{command:?}: undescribed `{line}`"
                );
            }
        }
    }
}
