//! Starters against real things: `sh` processes in their own process groups (checked through
//! `/proc` and `getpgid`) and a real axum webhook receiver on 127.0.0.1:0.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use hestia_actors::service_log::ServiceLog;
use hestia_actors::spec::{
    CommandSpec, HttpHookSpec, MachineRole, MachineSpec, SemaphoreTaskSpec, StarterSpec,
};
use hestia_actors::starters::{
    self, CommandStarter, HttpStarter, StartTarget, Starter, StarterContext, StarterError,
};
use nix::sys::signal::Signal;
use nix::unistd::{Pid, getpgid};
use tokio::net::TcpListener;

// ---------- helpers ----------

fn sh(script: &str) -> CommandSpec {
    CommandSpec {
        program: "sh".into(),
        args: vec!["-c".into(), script.into()],
        env: BTreeMap::new(),
        cwd: None,
        stop_grace: Duration::from_secs(5),
    }
}

fn target(service_id: &str) -> StartTarget {
    StartTarget {
        service_id: service_id.into(),
        attempt: 1,
        machine: None,
        base_url: "http://127.0.0.1:9".into(),
    }
}

/// Whether `pid` is a running process (a zombie is not running: it has exited).
fn is_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// Polls `condition` until it holds; fails the test after 10 s (a hang guard, not a timing check).
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gave up waiting for: {what}");
}

/// Records the `stream` events the command starter logs, as `"output: line"`.
#[derive(Clone, Default)]
struct OutputLog(Arc<Mutex<Vec<String>>>);

impl OutputLog {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn has(&self, line: &str) -> bool {
        self.lines().iter().any(|seen| seen == line)
    }

    /// Installs this log as the current thread's subscriber (`#[tokio::test]` is single-threaded,
    /// so the starter's output tasks log here too).
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(self.clone())
    }
}

#[derive(Default)]
struct OutputFields {
    stream: Option<String>,
    message: Option<String>,
}

impl tracing::field::Visit for OutputFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "stream" {
            self.stream = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = Some(format!("{value:?}"));
        }
    }
}

impl tracing::Subscriber for OutputLog {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = OutputFields::default();
        event.record(&mut fields);
        if let (Some(stream), Some(message)) = (fields.stream, fields.message) {
            self.0.lock().unwrap().push(format!("{stream}: {message}"));
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The pid a script printed as `child <pid>`.
/// A script that starts `sleep 30` in the background, writes its pid to a file, then runs `rest`;
/// with the file, to read the pid back. (A file, not the log: whether a forwarded output line
/// reaches a test's thread-local subscriber depends on the other tests running beside it.)
fn with_background_child(rest: &str) -> (CommandSpec, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("child.pid");
    (
        sh(&format!("sleep 30 & echo $! > {}; {rest}", file.display())),
        dir,
    )
}

async fn background_child_pid(dir: &tempfile::TempDir) -> u32 {
    let file = dir.path().join("child.pid");
    let read = || {
        std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
    };
    eventually("the script to write its child's pid", || read().is_some()).await;
    read().unwrap()
}

/// One request a webhook receiver saw.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: String,
}

/// A webhook receiver on 127.0.0.1:0 that answers every request with `status` and `body`.
async fn webhook_receiver(
    status: StatusCode,
    body: &'static str,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = move |State(seen): State<Arc<Mutex<Vec<Seen>>>>,
                       method: Method,
                       uri: Uri,
                       headers: HeaderMap,
                       request_body: String| async move {
        seen.lock().unwrap().push(Seen {
            method,
            path: uri.path().to_owned(),
            headers,
            body: request_body,
        });
        (status, body)
    };
    let app = Router::new().fallback(record).with_state(seen.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

fn hook(url: String) -> HttpHookSpec {
    HttpHookSpec {
        url,
        method: "post".into(),
        headers: BTreeMap::new(),
        body: None,
        timeout: Duration::from_secs(5),
    }
}

/// A URL on which nothing listens: a port that was free a moment ago.
async fn unreachable_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}/start")
}

// ---------- command: process groups, output, stop ----------

/// A log file for `service`'s output, in a directory of this test run.
fn log_for(service: &str) -> ServiceLog {
    let dir = std::env::temp_dir()
        .join("hestia-starter-tests")
        .join(std::process::id().to_string());
    ServiceLog::new(&dir, service)
}

#[tokio::test]
async fn given_a_shell_command_when_started_then_it_leads_its_own_group_logs_stdout_and_sigterm_stops_it()
 {
    let log = OutputLog::default();
    let _subscriber = log.install();
    let starter = CommandStarter::new(sh("echo hi; sleep 30"), "echo-svc", log_for("echo-svc"));

    let started = starter.start(&target("echo-svc")).await.unwrap();
    let pid = starter.pid().expect("a running process has a pid");
    let group = getpgid(Some(Pid::from_raw(pid as i32))).unwrap();
    assert_eq!(
        group.as_raw(),
        pid as i32,
        "the process leads its own process group"
    );
    eventually("`hi` from the log file to be logged", || {
        log.has("output: hi")
    })
    .await;

    starter.stop(&target("echo-svc")).await.unwrap();

    let exit = started
        .exit
        .unwrap()
        .has_exited()
        .expect("stop returns once the process is reaped");
    assert_eq!(
        exit.signal,
        Some(Signal::SIGTERM as i32),
        "ended by SIGTERM: {exit}"
    );
    assert!(!is_running(pid), "the process is gone after stop");
    assert_eq!(starter.pid(), None);
}

#[tokio::test]
async fn given_a_process_that_ignores_sigterm_when_stopped_then_it_is_sigkilled_after_the_grace() {
    let log = OutputLog::default();
    let _subscriber = log.install();
    let spec = CommandSpec {
        stop_grace: Duration::from_millis(300),
        ..sh("trap '' TERM; echo ready; while true; do sleep 1; done")
    };
    let starter = CommandStarter::new(spec, "stubborn", log_for("stubborn"));
    let started = starter.start(&target("stubborn")).await.unwrap();
    let pid = starter.pid().unwrap();
    eventually("the trap to be installed", || log.has("output: ready")).await;

    starter.stop(&target("stubborn")).await.unwrap();

    let exit = started.exit.unwrap().has_exited().unwrap();
    assert_eq!(exit.signal, Some(Signal::SIGKILL as i32), "{exit}");
    assert!(!is_running(pid));
}

#[tokio::test]
async fn given_a_process_with_a_child_when_stopped_then_the_whole_group_is_gone() {
    let (spec, dir) = with_background_child("wait");
    let starter = CommandStarter::new(spec, "family", log_for("family"));
    starter.start(&target("family")).await.unwrap();
    let pid = starter.pid().unwrap();
    let grandchild = background_child_pid(&dir).await;
    assert!(
        is_running(grandchild),
        "the child's child runs before the stop"
    );

    starter.stop(&target("family")).await.unwrap();

    assert!(!is_running(pid));
    assert!(
        !is_running(grandchild),
        "the child's child died with its group"
    );
}

#[tokio::test]
async fn given_a_running_process_when_the_starter_is_dropped_then_its_group_is_killed() {
    let (spec, dir) = with_background_child("wait");
    let starter = CommandStarter::new(spec, "dropped", log_for("dropped"));
    starter.start(&target("dropped")).await.unwrap();
    let pid = starter.pid().unwrap();
    let grandchild = background_child_pid(&dir).await;

    drop(starter);

    eventually("the dropped starter's processes to die", || {
        !is_running(pid) && !is_running(grandchild)
    })
    .await;
}

#[tokio::test]
async fn given_a_process_that_exits_leaving_a_child_then_the_child_is_killed_after_the_grace() {
    let (script, dir) = with_background_child("exit 0");
    let spec = CommandSpec {
        stop_grace: Duration::from_millis(200),
        ..script
    };
    let starter = CommandStarter::new(spec, "leaky", log_for("leaky"));
    let started = starter.start(&target("leaky")).await.unwrap();
    let grandchild = background_child_pid(&dir).await;

    let info = started.exit.unwrap().exited().await;

    assert!(info.success(), "the leader exited by itself: {info}");
    eventually("the left-over child to be killed", || {
        !is_running(grandchild)
    })
    .await;
    starter.stop(&target("leaky")).await.unwrap();
}

#[tokio::test]
async fn given_a_running_process_when_the_engine_shuts_down_then_it_is_stopped() {
    let starter = CommandStarter::new(sh("sleep 30"), "shutdown", log_for("shutdown"));
    starter.start(&target("shutdown")).await.unwrap();
    let pid = starter.pid().unwrap();

    starter.shutdown().await;

    assert!(!is_running(pid));
    assert_eq!(starter.pid(), None);
}

#[tokio::test]
async fn given_a_process_that_fails_by_itself_then_the_exit_watch_reports_code_and_stderr() {
    let starter = CommandStarter::new(
        sh("echo loading >&2; echo 'model not found' >&2; exit 3"),
        "crashy",
        log_for("crashy"),
    );
    let started = starter.start(&target("crashy")).await.unwrap();
    let mut exit = started
        .exit
        .expect("a process Hestia owns has an exit watch");

    let info = exit.exited().await;

    assert_eq!(info.code, Some(3));
    assert_eq!(info.stderr_tail, vec!["loading", "model not found"]);
    assert!(!info.success());
    assert_eq!(
        exit.has_exited(),
        Some(info.clone()),
        "a second look sees the same exit"
    );
    assert_eq!(starter.pid(), None, "an exited process has no pid");
    let error = StarterError::Exited {
        service_id: "crashy".into(),
        program: "sh".into(),
        exit: info,
    };
    let message = error.to_string();
    assert!(
        message.contains("exited with code 3") && message.contains("model not found"),
        "{message}"
    );
}

#[tokio::test]
async fn given_env_cwd_and_placeholders_when_started_then_the_process_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let spec = CommandSpec {
        program: "sh".into(),
        args: vec![
            "-c".into(),
            r#"printf '%s\n' "$GREETING" > greeting.txt; pwd > where.txt; printf '%s\n' "$1" > arg.txt"#.into(),
            "sh".into(),
            "--host={address} --name={service_id}".into(),
        ],
        env: BTreeMap::from([("GREETING".into(), "hello from {service_id}".into())]),
        cwd: Some(dir.path().to_owned()),
        stop_grace: Duration::from_secs(5),
    };
    let starter = CommandStarter::new(spec, "env-svc", log_for("env-svc"));
    let target = StartTarget {
        machine: Some(MachineSpec {
            id: "gpu".into(),
            role: MachineRole::Local,
            address: "10.1.2.3".into(),
            tags: vec![],
            wake: None,
        }),
        ..target("env-svc")
    };

    let started = starter.start(&target).await.unwrap();
    let info = started.exit.unwrap().exited().await;

    assert!(info.success(), "{info}");
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    assert_eq!(read("greeting.txt"), "hello from env-svc\n");
    assert_eq!(read("arg.txt"), "--host=10.1.2.3 --name=env-svc\n");
    let cwd = PathBuf::from(read("where.txt").trim_end());
    assert_eq!(
        cwd.canonicalize().unwrap(),
        dir.path().canonicalize().unwrap()
    );
}

#[tokio::test]
async fn given_a_running_process_when_started_again_then_only_the_new_one_runs() {
    let starter = CommandStarter::new(sh("sleep 30"), "twice", log_for("twice"));
    let first = starter.start(&target("twice")).await.unwrap();
    let first_pid = starter.pid().unwrap();

    let second = starter.start(&target("twice")).await.unwrap();
    let second_pid = starter.pid().unwrap();

    assert_ne!(first_pid, second_pid);
    assert!(
        !is_running(first_pid),
        "the earlier process was stopped first"
    );
    assert!(first.exit.unwrap().has_exited().is_some());
    assert!(is_running(second_pid));
    assert!(second.exit.unwrap().has_exited().is_none());
    starter.stop(&target("twice")).await.unwrap();
    assert!(!is_running(second_pid));
}

#[tokio::test]
async fn given_a_missing_program_when_started_then_the_error_names_it() {
    let spec = CommandSpec {
        program: "/nonexistent/llama-server".into(),
        ..sh("")
    };
    let starter = CommandStarter::new(spec, "missing", log_for("missing"));

    let error = starter.start(&target("missing")).await.unwrap_err();

    assert!(matches!(error, StarterError::Spawn { .. }), "{error:?}");
    assert!(
        error.to_string().contains("/nonexistent/llama-server"),
        "{error}"
    );
    assert_eq!(starter.pid(), None);
}

#[tokio::test]
async fn given_an_unknown_placeholder_when_started_then_nothing_runs_and_the_error_names_it() {
    let spec = CommandSpec {
        args: vec!["--port={prot}".into()],
        ..sh("")
    };
    let starter = CommandStarter::new(spec, "typo", log_for("typo"));

    let error = starter.start(&target("typo")).await.unwrap_err();

    assert!(error.to_string().contains("{prot}"), "{error}");
    assert_eq!(starter.pid(), None);
}

#[tokio::test]
async fn env_values_never_show_in_debug_output() {
    let spec = CommandSpec {
        env: BTreeMap::from([("HF_TOKEN".into(), "hf_secret_value".into())]),
        ..sh("true")
    };
    let debug = format!(
        "{:?}",
        CommandStarter::new(spec, "secret", log_for("secret"))
    );
    assert!(
        debug.contains("HF_TOKEN") && !debug.contains("hf_secret_value"),
        "{debug}"
    );
}

// ---------- http: webhooks ----------

#[tokio::test]
async fn given_a_webhook_answering_2xx_when_started_then_it_succeeds_with_the_expanded_request() {
    let (url, seen) = webhook_receiver(StatusCode::ACCEPTED, "queued").await;
    let spec = HttpHookSpec {
        url: format!("{url}/start/{{service_id}}"),
        headers: BTreeMap::from([("authorization".into(), "Bearer hook-token-123".into())]),
        body: Some(r#"{"service": "{service_id}", "opts": {"gpu": true}}"#.into()),
        ..hook(String::new())
    };
    let starter = HttpStarter::new(spec, "web-svc", reqwest::Client::new());

    let started = starter.start(&target("web-svc")).await.unwrap();

    assert!(started.exit.is_none(), "a webhook owns no process");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::POST);
    assert_eq!(seen[0].path, "/start/web-svc");
    assert_eq!(seen[0].headers["authorization"], "Bearer hook-token-123");
    assert_eq!(
        seen[0].body,
        r#"{"service": "web-svc", "opts": {"gpu": true}}"#
    );
    assert!(
        !format!("{starter:?}").contains("hook-token-123"),
        "header values stay out of Debug"
    );
}

#[tokio::test]
async fn given_a_webhook_answering_500_when_started_then_the_error_has_status_and_body() {
    let (url, _) =
        webhook_receiver(StatusCode::INTERNAL_SERVER_ERROR, "model failed to load").await;
    let starter = HttpStarter::new(
        hook(format!("{url}/start")),
        "broken",
        reqwest::Client::new(),
    );

    let error = starter.start(&target("broken")).await.unwrap_err();

    match &error {
        StarterError::HttpStatus {
            status,
            body,
            url: called,
            ..
        } => {
            assert_eq!(*status, 500);
            assert_eq!(body, "model failed to load");
            assert_eq!(called, &format!("{url}/start"));
        }
        other => panic!("expected HttpStatus, got {other:?}"),
    }
    assert!(error.to_string().contains("500"), "{error}");
}

#[tokio::test]
async fn given_a_long_error_body_then_only_its_first_500_bytes_are_kept() {
    static LONG: &str = concat!(
        "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789",
        "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789",
        "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789",
        "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789",
        "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789",
        "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789",
    );
    let (url, _) = webhook_receiver(StatusCode::BAD_GATEWAY, LONG).await;
    let starter = HttpStarter::new(hook(url), "chatty", reqwest::Client::new());

    let error = starter.start(&target("chatty")).await.unwrap_err();

    let StarterError::HttpStatus { body, .. } = error else {
        panic!("{error:?}")
    };
    assert_eq!(body, &LONG[..500]);
}

#[tokio::test]
async fn given_an_unreachable_webhook_when_started_then_the_error_names_the_url() {
    let url = unreachable_url().await;
    let starter = HttpStarter::new(hook(url.clone()), "offline", reqwest::Client::new());

    let error = starter.start(&target("offline")).await.unwrap_err();

    assert!(
        matches!(error, StarterError::HttpRequest { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains(&url), "{error}");
}

// ---------- build: choosing and combining starters ----------

#[tokio::test]
async fn given_start_none_then_start_and_stop_do_nothing() {
    let starter = starters::build(
        &StarterSpec::None,
        None,
        "elsewhere",
        &StarterContext::default(),
    );

    assert_eq!(starter.kind(), "none");
    assert!(
        starter
            .start(&target("elsewhere"))
            .await
            .unwrap()
            .exit
            .is_none()
    );
    starter.stop(&target("elsewhere")).await.unwrap();
    assert_eq!(starter.pid(), None);
}

#[tokio::test]
async fn given_a_semaphore_start_without_a_semaphore_server_then_start_fails_saying_so() {
    let spec = StarterSpec::Semaphore(SemaphoreTaskSpec {
        template_id: 7,
        environment: BTreeMap::new(),
        task_timeout: Duration::from_secs(60),
        poll_interval: Duration::from_secs(1),
    });
    let starter = starters::build(&spec, None, "playbook", &StarterContext::default());

    let error = starter.start(&target("playbook")).await.unwrap_err();

    assert!(
        matches!(error, StarterError::SemaphoreNotConfigured { .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("no Semaphore server is configured"),
        "{error}"
    );
}

#[tokio::test]
async fn given_command_start_and_http_stop_when_stopped_then_the_hook_is_called_and_the_process_is_gone()
 {
    let (url, seen) = webhook_receiver(StatusCode::OK, "bye").await;
    let start = StarterSpec::Command(sh("sleep 30"));
    let stop = StarterSpec::Http(hook(format!("{url}/stop/{{service_id}}")));
    let starter = starters::build(&start, Some(&stop), "combo", &StarterContext::default());
    assert_eq!(starter.kind(), "command");

    starter.start(&target("combo")).await.unwrap();
    let pid = starter.pid().unwrap();
    assert!(
        seen.lock().unwrap().is_empty(),
        "starting does not call the stop hook"
    );

    starter.stop(&target("combo")).await.unwrap();

    assert_eq!(seen.lock().unwrap()[0].path, "/stop/combo");
    assert!(!is_running(pid), "the process Hestia owns is gone too");
}

#[tokio::test]
async fn given_http_start_and_http_stop_then_each_calls_its_own_hook() {
    let (url, seen) = webhook_receiver(StatusCode::OK, "ok").await;
    let start = StarterSpec::Http(hook(format!("{url}/start")));
    let stop = StarterSpec::Http(hook(format!("{url}/stop")));
    let starter = starters::build(&start, Some(&stop), "remote", &StarterContext::default());

    starter.start(&target("remote")).await.unwrap();
    starter.stop(&target("remote")).await.unwrap();

    let paths: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(paths, ["/start", "/stop"]);
}

#[tokio::test]
async fn given_a_failing_stop_command_then_stop_reports_it_and_still_ends_the_process() {
    let start = StarterSpec::Command(sh("sleep 30"));
    let stop = StarterSpec::Command(sh("echo 'container not found' >&2; exit 1"));
    let starter = starters::build(
        &start,
        Some(&stop),
        "stop-fails",
        &StarterContext::default(),
    );
    starter.start(&target("stop-fails")).await.unwrap();
    let pid = starter.pid().unwrap();

    let error = starter.stop(&target("stop-fails")).await.unwrap_err();

    assert!(matches!(error, StarterError::Exited { .. }), "{error:?}");
    assert!(error.to_string().contains("container not found"), "{error}");
    assert!(
        !is_running(pid),
        "the owned process is stopped even though the hook failed"
    );
}
