//! A fake Semaphore UI server for tests and demos, faithful to `semaphore-contract.md`: the
//! endpoints Hestia uses with Semaphore's real status codes and bodies (401/403/405 with empty
//! bodies, 400 for an unknown task, `text/plain` ping, JSON ending in `\n`, 2.16 or 2.10 shapes).
//! Templates are scripted (timing, outcome, output) and can launch or kill a real process, such as
//! a `hestia sim` backend, so readiness after a task is real. Every call is recorded.
//! [`spawn`] runs one in-process; [`run`] is the body of `hestia fake-semaphore`. The calls that
//! set a project up (projects, keys, inventories, repositories, Variable Groups, templates, API
//! tokens) live in [`admin`].

mod admin;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// How long a killed process gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(3);
/// The fake's `user_id` on every task.
const USER_ID: i64 = 1;

/// Which Semaphore version's JSON shapes to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiShape {
    /// 2.16: `omitempty` fields left out; unknown template on `POST /tasks` → 404.
    #[default]
    V2_16,
    /// 2.10: every key present (`null` when unset); unknown template on `POST /tasks` → 500.
    V2_10,
}

/// How a scripted task ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    #[default]
    Success,
    Error,
}

/// What a successful task does on this host, besides reporting success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Effect {
    /// Spawn `program args…` under `key` (unless a process under `key` still runs). `{name}` in
    /// the program and args is replaced with the task environment's `name` value.
    Launch {
        key: String,
        program: String,
        #[serde(default)]
        args: Vec<String>,
    },
    /// SIGTERM (then SIGKILL after 3 s) the process launched under `key`, if any.
    Kill { key: String },
}

/// A scripted template. `waiting` and `starting` last `step_ms` each, `running` lasts `run_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FakeTemplate {
    pub name: String,
    pub step_ms: u64,
    pub run_ms: u64,
    pub outcome: Outcome,
    /// Outcome by the task environment's `machine_id` (overrides `outcome`).
    pub outcome_by_machine: BTreeMap<String, Outcome>,
    /// Lines the task writes while running.
    pub output: Vec<String>,
    /// Applied when `running` begins, if the task is going to succeed.
    pub effect: Option<Effect>,
}

impl Default for FakeTemplate {
    fn default() -> Self {
        FakeTemplate {
            name: "template".to_owned(),
            step_ms: 10,
            run_ms: 50,
            outcome: Outcome::Success,
            outcome_by_machine: BTreeMap::new(),
            output: Vec::new(),
            effect: None,
        }
    }
}

impl FakeTemplate {
    /// A template whose tasks succeed.
    pub fn succeeding(name: &str) -> FakeTemplate {
        FakeTemplate {
            name: name.to_owned(),
            ..FakeTemplate::default()
        }
    }

    /// A template whose tasks end in `error`, writing `output`.
    pub fn failing(name: &str, output: &[&str]) -> FakeTemplate {
        FakeTemplate {
            outcome: Outcome::Error,
            ..FakeTemplate::succeeding(name)
        }
        .output(output)
    }

    pub fn run_ms(mut self, ms: u64) -> FakeTemplate {
        self.run_ms = ms;
        self
    }

    pub fn output(mut self, lines: &[&str]) -> FakeTemplate {
        self.output = lines.iter().map(|l| (*l).to_owned()).collect();
        self
    }

    pub fn outcome_on(mut self, machine_id: &str, outcome: Outcome) -> FakeTemplate {
        self.outcome_by_machine
            .insert(machine_id.to_owned(), outcome);
        self
    }

    pub fn launch(mut self, key: &str, program: &str, args: &[&str]) -> FakeTemplate {
        self.effect = Some(Effect::Launch {
            key: key.to_owned(),
            program: program.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        });
        self
    }

    pub fn kill(mut self, key: &str) -> FakeTemplate {
        self.effect = Some(Effect::Kill {
            key: key.to_owned(),
        });
        self
    }

    fn outcome_for(&self, environment: &Value) -> Outcome {
        environment
            .get("machine_id")
            .and_then(Value::as_str)
            .and_then(|machine| self.outcome_by_machine.get(machine))
            .copied()
            .unwrap_or(self.outcome)
    }
}

/// How the fake behaves. `Default`: 127.0.0.1 on an ephemeral port, project 1, 2.16 shapes, no
/// credentials (every authenticated call is then a 401), no templates.
#[derive(Debug, Clone, Default)]
pub struct FakeSemaphoreOptions {
    pub host: String,
    pub port: u16,
    /// Valid API tokens.
    pub tokens: Vec<String>,
    /// Valid `(username, password)` logins.
    pub users: Vec<(String, String)>,
    /// Default 1.
    pub project_id: i64,
    pub shape: ApiShape,
    pub templates: BTreeMap<i64, FakeTemplate>,
    /// A Semaphore as just installed: no project until one is created through the API (the
    /// `project_id` project does not exist).
    pub fresh: bool,
}

impl FakeSemaphoreOptions {
    /// Project 1 on 127.0.0.1, accepting `token`.
    pub fn with_token(token: &str) -> FakeSemaphoreOptions {
        FakeSemaphoreOptions {
            host: "127.0.0.1".to_owned(),
            project_id: 1,
            tokens: vec![token.to_owned()],
            ..FakeSemaphoreOptions::default()
        }
    }

    pub fn user(mut self, username: &str, password: &str) -> FakeSemaphoreOptions {
        self.users.push((username.to_owned(), password.to_owned()));
        self
    }

    pub fn shape(mut self, shape: ApiShape) -> FakeSemaphoreOptions {
        self.shape = shape;
        self
    }

    pub fn template(mut self, id: i64, template: FakeTemplate) -> FakeSemaphoreOptions {
        self.templates.insert(id, template);
        self
    }

    /// No project until one is created (see [`FakeSemaphoreOptions::fresh`]).
    pub fn fresh(mut self) -> FakeSemaphoreOptions {
        self.fresh = true;
        self
    }
}

/// One HTTP call the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedCall {
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// One task created through `POST …/tasks`.
#[derive(Debug, Clone, PartialEq)]
pub struct StartedTask {
    pub task_id: i64,
    pub template_id: i64,
    /// The `environment` string parsed (the raw string when it is not JSON).
    pub environment: Value,
    pub message: String,
}

/// Why the fake could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum FakeSemaphoreError {
    #[error("fake Semaphore cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("fake Semaphore cannot read its own listening address: {source}")]
    LocalAddr {
        #[source]
        source: std::io::Error,
    },
    #[error("fake Semaphore cannot announce its address on stdout: {source}")]
    Announce {
        #[source]
        source: std::io::Error,
    },
    #[error("fake Semaphore stopped serving: {source}")]
    Serve {
        #[source]
        source: std::io::Error,
    },
}

/// An in-process fake. Dropping it stops the server and kills the processes it launched.
#[derive(Debug)]
pub struct FakeSemaphoreHandle {
    pub addr: SocketAddr,
    state: Arc<FakeState>,
    stop: CancellationToken,
}

impl FakeSemaphoreHandle {
    /// `http://ADDR` (what `semaphore.base_url` should be).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every call answered so far, in order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        lock(&self.state.calls).clone()
    }

    /// Every task created so far, in order.
    pub fn started_tasks(&self) -> Vec<StartedTask> {
        lock(&self.state.started).clone()
    }

    /// The current status of a task.
    pub fn task_status(&self, task_id: i64) -> Option<String> {
        lock(&self.state.tasks)
            .get(&task_id)
            .map(|t| t.status.clone())
    }

    /// Forgets every login session (as Semaphore's 7-day idle expiry would): the next call with
    /// an old cookie gets a 401.
    pub fn expire_sessions(&self) {
        lock(&self.state.sessions).clear();
    }

    /// Adds or replaces a template's script.
    pub fn set_template(&self, id: i64, template: FakeTemplate) {
        lock(&self.state.templates).insert(id, template);
    }

    /// Whether a process launched under `key` is still running.
    pub async fn launched_alive(&self, key: &str) -> bool {
        let mut children = self.state.children.lock().await;
        children
            .get_mut(key)
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Stops serving and kills every launched process.
    pub async fn shutdown(self) {
        self.stop.cancel();
        kill_all(&self.state).await;
    }
}

impl Drop for FakeSemaphoreHandle {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Ok(mut children) = self.state.children.try_lock() {
            for child in children.values_mut() {
                let _ = child.start_kill();
            }
        }
    }
}

/// Starts a fake in this process; returns once it listens.
pub async fn spawn(
    options: FakeSemaphoreOptions,
) -> Result<FakeSemaphoreHandle, FakeSemaphoreError> {
    let (listener, addr) = bind(&options).await?;
    let state = Arc::new(FakeState::new(options));
    let stop = CancellationToken::new();
    let app = router(state.clone());
    let shutdown = stop.clone();
    tokio::spawn(async move {
        let serving = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(error) = serving.await {
            tracing::warn!(%error, "fake Semaphore stopped serving");
        }
    });
    Ok(FakeSemaphoreHandle { addr, state, stop })
}

/// The body of `hestia fake-semaphore`: prints `fake-semaphore listening on http://ADDR`, serves
/// until `shutdown` resolves, then kills the processes it launched.
pub async fn run(
    options: FakeSemaphoreOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), FakeSemaphoreError> {
    let (listener, addr) = bind(&options).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "fake-semaphore listening on http://{addr}")
        .and_then(|()| stdout.flush())
        .map_err(|source| FakeSemaphoreError::Announce { source })?;
    drop(stdout);
    let state = Arc::new(FakeState::new(options));
    let served = axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(shutdown)
        .await;
    kill_all(&state).await;
    served.map_err(|source| FakeSemaphoreError::Serve { source })
}

async fn bind(
    options: &FakeSemaphoreOptions,
) -> Result<(TcpListener, SocketAddr), FakeSemaphoreError> {
    let host = if options.host.is_empty() {
        "127.0.0.1"
    } else {
        &options.host
    };
    let listener = TcpListener::bind((host, options.port))
        .await
        .map_err(|source| FakeSemaphoreError::Bind {
            addr: format!("{host}:{}", options.port),
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| FakeSemaphoreError::LocalAddr { source })?;
    Ok((listener, addr))
}

// ----- state -----

#[derive(Debug)]
struct FakeState {
    tokens: HashSet<String>,
    users: Vec<(String, String)>,
    project_id: i64,
    shape: ApiShape,
    /// No seeded project: only projects created through the API exist.
    fresh: bool,
    created: DateTime<Utc>,
    templates: Mutex<BTreeMap<i64, FakeTemplate>>,
    /// What was created through the project-setup calls.
    catalog: admin::Catalog,
    tasks: Mutex<BTreeMap<i64, FakeTask>>,
    next_id: AtomicI64,
    next_line: AtomicI64,
    sessions: Mutex<HashSet<String>>,
    calls: Mutex<Vec<RecordedCall>>,
    started: Mutex<Vec<StartedTask>>,
    children: tokio::sync::Mutex<HashMap<String, Child>>,
}

#[derive(Debug, Clone)]
struct FakeTask {
    id: i64,
    template_id: i64,
    status: String,
    environment: String,
    message: String,
    created: DateTime<Utc>,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    output: Vec<(i64, DateTime<Utc>, String)>,
}

impl FakeTask {
    fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "success" | "error" | "stopped")
    }
}

impl FakeState {
    fn new(options: FakeSemaphoreOptions) -> FakeState {
        FakeState {
            tokens: options
                .tokens
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
            users: options.users,
            project_id: if options.project_id == 0 {
                1
            } else {
                options.project_id
            },
            shape: options.shape,
            fresh: options.fresh,
            catalog: admin::Catalog::default(),
            created: Utc::now(),
            templates: Mutex::new(options.templates),
            tasks: Mutex::new(BTreeMap::new()),
            next_id: AtomicI64::new(1),
            next_line: AtomicI64::new(1000),
            sessions: Mutex::new(HashSet::new()),
            calls: Mutex::new(Vec::new()),
            started: Mutex::new(Vec::new()),
            children: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Semaphore's `auth.go`: a header containing "bearer" is a token lookup (the whole header
    /// lower-cased), otherwise the session cookie.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        if let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            let value = value.to_ascii_lowercase();
            if value.contains("bearer") {
                let token = value.replacen("bearer ", "", 1);
                return self.tokens.contains(&token) || self.catalog.has_token(&token);
            }
        }
        let sessions = lock(&self.sessions);
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().strip_prefix("semaphore="))
            .any(|session| sessions.contains(session))
    }

    /// Whether project `pid` exists: the seeded one (unless fresh) or one created.
    fn has_project(&self, pid: i64) -> bool {
        (!self.fresh && pid == self.project_id) || self.catalog.project(pid).is_some()
    }

    fn set_status(&self, id: i64, status: &str) -> Option<FakeTask> {
        let mut tasks = lock(&self.tasks);
        let task = tasks.get_mut(&id)?;
        // Once stopping or finished, the script no longer drives the task.
        if task.is_terminal() || (task.status == "stopping" && status != "stopped") {
            return None;
        }
        task.status = status.to_owned();
        match status {
            "running" => task.start = Some(Utc::now()),
            "success" | "error" | "stopped" => task.end = Some(Utc::now()),
            _ => {}
        }
        Some(task.clone())
    }

    fn write_output(&self, id: i64, line: &str) {
        if let Some(task) = lock(&self.tasks).get_mut(&id) {
            let line_id = self.next_line.fetch_add(1, Ordering::Relaxed);
            task.output.push((line_id, Utc::now(), line.to_owned()));
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data behind these locks; a panicked holder leaves it usable.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

// ----- task progression and side effects -----

/// Drives a task through `waiting → starting → running → success|error`.
async fn progress(state: Arc<FakeState>, id: i64, template: FakeTemplate, environment: Value) {
    let step = Duration::from_millis(template.step_ms);
    tokio::time::sleep(step).await;
    if state.set_status(id, "starting").is_none() {
        return;
    }
    tokio::time::sleep(step).await;
    if state.set_status(id, "running").is_none() {
        return;
    }
    let outcome = template.outcome_for(&environment);
    state.write_output(id, &format!("PLAY [{}] ****", template.name));
    if outcome == Outcome::Success
        && let Some(effect) = &template.effect
        && let Err(line) = apply(&state, effect, &environment).await
    {
        state.write_output(id, &line);
    }
    for line in &template.output {
        state.write_output(id, line);
    }
    tokio::time::sleep(Duration::from_millis(template.run_ms)).await;
    let (status, recap) = match outcome {
        Outcome::Success => ("success", "PLAY RECAP: ok=1 failed=0"),
        Outcome::Error => ("error", "PLAY RECAP: ok=0 failed=1"),
    };
    if state.set_status(id, "running").is_some() {
        state.write_output(id, recap);
        state.set_status(id, status);
    }
}

/// Applies a side effect; `Err` carries an output line describing the failure.
async fn apply(state: &FakeState, effect: &Effect, environment: &Value) -> Result<(), String> {
    let mut children = state.children.lock().await;
    match effect {
        Effect::Launch { key, program, args } => {
            if let Some(child) = children.get_mut(key)
                && matches!(child.try_wait(), Ok(None))
            {
                return Ok(());
            }
            let program = fill(program, environment);
            let args: Vec<String> = args.iter().map(|a| fill(a, environment)).collect();
            let child = Command::new(&program)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|error| format!("fatal: could not launch `{program}`: {error}"))?;
            children.insert(key.clone(), child);
            Ok(())
        }
        Effect::Kill { key } => {
            if let Some(child) = children.remove(key) {
                terminate(child).await;
            }
            Ok(())
        }
    }
}

/// `{name}` → the environment's `name` (strings as they are, other values as JSON).
fn fill(template: &str, environment: &Value) -> String {
    let mut text = template.to_owned();
    if let Some(map) = environment.as_object() {
        for (key, value) in map {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            text = text.replace(&format!("{{{key}}}"), &value);
        }
    }
    text
}

/// SIGTERM, then SIGKILL after [`KILL_GRACE`]; waits for the process to be reaped.
async fn terminate(mut child: Child) {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

async fn kill_all(state: &FakeState) {
    let children: Vec<Child> = state
        .children
        .lock()
        .await
        .drain()
        .map(|(_, c)| c)
        .collect();
    for child in children {
        terminate(child).await;
    }
}

// ----- HTTP -----

fn router(state: Arc<FakeState>) -> Router {
    let authenticated = Router::new()
        .route("/api/info", get(info))
        .route("/api/projects", get(projects))
        .route("/api/project/{pid}", get(project))
        .route("/api/project/{pid}/templates", get(templates))
        .route("/api/project/{pid}/templates/{tid}", get(template))
        .route("/api/project/{pid}/tasks", post(create_task))
        .route("/api/project/{pid}/tasks/{id}", get(task))
        .route("/api/project/{pid}/tasks/{id}/output", get(output))
        .route("/api/project/{pid}/tasks/{id}/stop", post(stop_task));
    let authenticated = admin::routes(authenticated)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_auth));
    Router::new()
        .route("/api/ping", get(ping))
        .route("/api/auth/login", post(login))
        .merge(authenticated)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_and_type,
        ))
        .with_state(state)
}

/// Records the call, and gives every response without a type `application/json` (Semaphore's
/// middleware does so even for empty error bodies).
async fn record_and_type(
    State(state): State<Arc<FakeState>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .entry(header::CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("application/json"));
    lock(&state.calls).push(RecordedCall {
        method,
        path,
        status: response.status().as_u16(),
    });
    response
}

async fn require_auth(
    State(state): State<Arc<FakeState>>,
    request: Request,
    next: Next,
) -> Response {
    if state.authorized(request.headers()) {
        next.run(request).await
    } else {
        empty(StatusCode::UNAUTHORIZED)
    }
}

fn empty(status: StatusCode) -> Response {
    status.into_response()
}

/// A JSON body the way Go's encoder writes it: with a trailing newline.
fn json_body(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{value}\n"),
    )
        .into_response()
}

fn error_body(status: StatusCode, message: &str) -> Response {
    json_body(status, &json!({ "error": message }))
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "Not Found\n",
    )
        .into_response()
}

async fn ping() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "pong",
    )
        .into_response()
}

#[derive(Deserialize)]
struct Login {
    auth: String,
    password: String,
}

async fn login(State(state): State<Arc<FakeState>>, body: Bytes) -> Response {
    let Ok(login) = serde_json::from_slice::<Login>(&body) else {
        return empty(StatusCode::BAD_REQUEST);
    };
    let name = login.auth.to_ascii_lowercase();
    let known = state
        .users
        .iter()
        .any(|(user, password)| user.to_ascii_lowercase() == name && *password == login.password);
    if !known {
        return empty(StatusCode::UNAUTHORIZED);
    }
    let session = uuid::Uuid::now_v7().simple().to_string();
    lock(&state.sessions).insert(session.clone());
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header(
            header::SET_COOKIE,
            format!("semaphore={session}; Path=/; HttpOnly"),
        )
        .body(Body::empty())
        .unwrap_or_else(|_| empty(StatusCode::INTERNAL_SERVER_ERROR))
}

async fn info(State(state): State<Arc<FakeState>>) -> Response {
    let value = match state.shape {
        ApiShape::V2_16 => json!({
            "version": "2.16.14-fake-hestia", "ansible": "ansible [core 2.18.11] (fake)",
            "web_host": "", "use_remote_runner": false, "auth_methods": {},
            "premium_features": {}, "git_client": "cmd_git", "schedule_timezone": "UTC",
        }),
        ApiShape::V2_10 => json!({
            "version": "2.10.32-fake-hestia", "ansible": "ansible [core 2.16] (fake)",
            "web_host": "", "use_remote_runner": false,
        }),
    };
    json_body(StatusCode::OK, &value)
}

fn project_json(state: &FakeState) -> Value {
    let created = timestamp(state.created);
    match state.shape {
        ApiShape::V2_16 => {
            json!({"id": state.project_id, "name": "hestia", "created": created, "type": ""})
        }
        ApiShape::V2_10 => json!({
            "id": state.project_id, "name": "hestia", "created": created, "alert": false,
            "alert_chat": null, "max_parallel_tasks": 0, "type": "",
        }),
    }
}

async fn projects(State(state): State<Arc<FakeState>>) -> Response {
    let mut list = Vec::new();
    if !state.fresh {
        list.push(project_json(&state));
    }
    list.extend(state.catalog.projects_json(state.shape));
    json_body(StatusCode::OK, &Value::Array(list))
}

/// The project id from the path: `Err` is the response Semaphore gives.
fn check_project(state: &FakeState, pid: &str) -> Result<(), Box<Response>> {
    match pid.parse::<i64>() {
        Err(_) => Err(Box::new(error_body(
            StatusCode::BAD_REQUEST,
            "Invalid project ID",
        ))),
        Ok(pid) if !state.has_project(pid) => Err(Box::new(empty(StatusCode::NOT_FOUND))),
        Ok(_) => Ok(()),
    }
}

async fn project(State(state): State<Arc<FakeState>>, Path(pid): Path<String>) -> Response {
    if let Err(response) = check_project(&state, &pid) {
        return *response;
    }
    let created = pid
        .parse::<i64>()
        .ok()
        .and_then(|pid| state.catalog.project(pid));
    match created {
        Some(project) => json_body(StatusCode::OK, &project.json(state.shape)),
        None => json_body(StatusCode::OK, &project_json(&state)),
    }
}

fn template_json(state: &FakeState, id: i64, template: &FakeTemplate) -> Value {
    let tasks = lock(&state.tasks)
        .values()
        .filter(|t| t.template_id == id)
        .count();
    let mut value = json!({
        "id": id, "project_id": state.project_id, "inventory_id": 1, "repository_id": 1,
        "environment_id": 1, "name": template.name, "playbook": "hestia.yml",
        "arguments": "[]", "description": "", "app": "ansible", "tasks": tasks, "view_id": 1,
    });
    state.catalog.describe_template(id, &mut value);
    if state.shape == ApiShape::V2_10
        && let Some(map) = value.as_object_mut()
    {
        for key in [
            "vaults",
            "last_task",
            "survey_vars",
            "start_version",
            "build_template_id",
        ] {
            map.insert(key.to_owned(), Value::Null);
        }
        for key in [
            "allow_override_args_in_task",
            "autorun",
            "suppress_success_alerts",
        ] {
            map.insert(key.to_owned(), Value::Bool(false));
        }
        map.insert("type".to_owned(), Value::String(String::new()));
        map.insert("git_branch".to_owned(), Value::Null);
    }
    value
}

async fn templates(State(state): State<Arc<FakeState>>, Path(pid): Path<String>) -> Response {
    if let Err(response) = check_project(&state, &pid) {
        return *response;
    }
    let templates = lock(&state.templates).clone();
    let list: Vec<Value> = templates
        .iter()
        .filter(|(id, _)| {
            state
                .catalog
                .template_in_project(**id, &pid, state.project_id)
        })
        .map(|(id, t)| template_json(&state, *id, t))
        .collect();
    json_body(StatusCode::OK, &Value::Array(list))
}

async fn template(
    State(state): State<Arc<FakeState>>,
    Path((pid, tid)): Path<(String, String)>,
) -> Response {
    if let Err(response) = check_project(&state, &pid) {
        return *response;
    }
    let found = tid
        .parse::<i64>()
        .ok()
        .and_then(|id| lock(&state.templates).get(&id).cloned().map(|t| (id, t)))
        .filter(|(id, _)| {
            state
                .catalog
                .template_in_project(*id, &pid, state.project_id)
        });
    match found {
        Some((id, t)) => json_body(StatusCode::OK, &template_json(&state, id, &t)),
        None => empty(StatusCode::NOT_FOUND),
    }
}

/// The fields of `POST …/tasks` the fake reads; the rest are ignored, as Go's decoder does.
#[derive(Deserialize)]
struct NewTask {
    #[serde(default)]
    template_id: i64,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

async fn create_task(
    State(state): State<Arc<FakeState>>,
    Path(pid): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(response) = check_project(&state, &pid) {
        return *response;
    }
    let Ok(request) = serde_json::from_slice::<NewTask>(&body) else {
        return empty(StatusCode::BAD_REQUEST);
    };
    let Some(template) = lock(&state.templates).get(&request.template_id).cloned() else {
        return empty(match state.shape {
            ApiShape::V2_16 => StatusCode::NOT_FOUND,
            ApiShape::V2_10 => StatusCode::INTERNAL_SERVER_ERROR,
        });
    };
    let environment_text = request.environment.unwrap_or_default();
    let environment: Option<Value> = if environment_text.is_empty() {
        Some(json!({}))
    } else {
        serde_json::from_str::<Value>(&environment_text)
            .ok()
            .filter(Value::is_object)
    };
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let task = FakeTask {
        id,
        template_id: request.template_id,
        status: "waiting".to_owned(),
        environment: environment_text.clone(),
        message: request.message.unwrap_or_default(),
        created: Utc::now(),
        start: None,
        end: None,
        output: Vec::new(),
    };
    lock(&state.started).push(StartedTask {
        task_id: id,
        template_id: request.template_id,
        environment: environment
            .clone()
            .unwrap_or(Value::String(environment_text)),
        message: task.message.clone(),
    });
    let Some(environment) = environment else {
        // populateDetails fails: the row stays, marked `error`, and the call answers 500.
        lock(&state.tasks).insert(
            id,
            FakeTask {
                status: "error".to_owned(),
                end: Some(Utc::now()),
                ..task
            },
        );
        return empty(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let body = task_json(&state, &task, true);
    lock(&state.tasks).insert(id, task);
    tokio::spawn(progress(state.clone(), id, template, environment));
    json_body(StatusCode::CREATED, &body)
}

/// The task by path; `Err` is Semaphore's answer for a bad project or an unknown task (400).
fn find_task(state: &FakeState, pid: &str, id: &str) -> Result<FakeTask, Box<Response>> {
    check_project(state, pid)?;
    id.parse::<i64>()
        .ok()
        .and_then(|id| lock(&state.tasks).get(&id).cloned())
        .ok_or_else(|| Box::new(empty(StatusCode::BAD_REQUEST)))
}

async fn task(
    State(state): State<Arc<FakeState>>,
    Path((pid, id)): Path<(String, String)>,
) -> Response {
    match find_task(&state, &pid, &id) {
        Ok(task) => json_body(StatusCode::OK, &task_json(&state, &task, false)),
        Err(response) => *response,
    }
}

async fn output(
    State(state): State<Arc<FakeState>>,
    Path((pid, id)): Path<(String, String)>,
) -> Response {
    let task = match find_task(&state, &pid, &id) {
        Ok(task) => task,
        Err(response) => return *response,
    };
    let lines: Vec<Value> = task
        .output
        .iter()
        .map(|(line_id, time, text)| match state.shape {
            ApiShape::V2_16 => {
                json!({"id": line_id, "task_id": task.id, "time": timestamp(*time), "output": text})
            }
            ApiShape::V2_10 => {
                json!({"task_id": task.id, "task": "", "time": timestamp(*time), "output": text})
            }
        })
        .collect();
    json_body(StatusCode::OK, &Value::Array(lines))
}

#[derive(Deserialize)]
struct StopBody {
    #[serde(default)]
    force: bool,
}

async fn stop_task(
    State(state): State<Arc<FakeState>>,
    Path((pid, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let task = match find_task(&state, &pid, &id) {
        Ok(task) => task,
        Err(response) => return *response,
    };
    let Ok(stop) = serde_json::from_slice::<StopBody>(&body) else {
        return empty(StatusCode::BAD_REQUEST);
    };
    {
        let mut tasks = lock(&state.tasks);
        let Some(task) = tasks.get_mut(&task.id) else {
            return empty(StatusCode::BAD_REQUEST);
        };
        // The quirk: a finished task is relabelled `stopped` (only `stopped` itself is refused).
        if stop.force || task.is_terminal() {
            if task.status != "stopped" {
                task.status = "stopped".to_owned();
                task.end = Some(Utc::now());
            }
            return empty(StatusCode::NO_CONTENT);
        }
        task.status = "stopping".to_owned();
    }
    let (state, id) = (state.clone(), task.id);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        state.write_output(id, "Task stopped by user");
        state.set_status(id, "stopped");
    });
    empty(StatusCode::NO_CONTENT)
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A task in the configured version's shape (`created` = answer to `POST`, with `secret: "{}"`).
fn task_json(state: &FakeState, task: &FakeTask, created: bool) -> Value {
    let time = |t: Option<DateTime<Utc>>| t.map_or(Value::Null, |t| Value::String(timestamp(t)));
    match state.shape {
        ApiShape::V2_16 => {
            let mut value = json!({
                "id": task.id, "template_id": task.template_id, "project_id": state.project_id,
                "status": task.status, "playbook": "", "environment": task.environment,
                "user_id": USER_ID, "created": timestamp(task.created), "limit": "",
            });
            if let Some(map) = value.as_object_mut() {
                if created {
                    map.insert("secret".into(), "{}".into());
                }
                if !task.message.is_empty() {
                    map.insert("message".into(), task.message.clone().into());
                }
                if task.start.is_some() {
                    map.insert("start".into(), time(task.start));
                }
                if task.end.is_some() {
                    map.insert("end".into(), time(task.end));
                }
            }
            value
        }
        ApiShape::V2_10 => json!({
            "id": task.id, "template_id": task.template_id, "project_id": state.project_id,
            "status": task.status, "debug": false, "dry_run": false, "diff": false,
            "playbook": "", "environment": task.environment, "limit": "",
            "secret": if created { "{}" } else { "" }, "arguments": null, "git_branch": null,
            "user_id": USER_ID, "integration_id": null, "schedule_id": null,
            "created": timestamp(task.created), "start": time(task.start), "end": time(task.end),
            "message": task.message, "commit_hash": null, "commit_message": "",
            "build_task_id": null, "version": null, "inventory_id": null,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn fake() -> FakeSemaphoreHandle {
        spawn(
            FakeSemaphoreOptions::with_token("tok").template(3, FakeTemplate::succeeding("start")),
        )
        .await
        .expect("fake semaphore")
    }

    #[tokio::test]
    async fn given_the_fake_then_ping_is_plain_pong_and_unknown_paths_are_text_404() {
        let fake = fake().await;
        let ping = reqwest::get(format!("{}/api/ping", fake.url()))
            .await
            .unwrap();
        assert_eq!(
            ping.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert_eq!(ping.text().await.unwrap(), "pong");
        let slash = reqwest::get(format!("{}/api/projects/", fake.url()))
            .await
            .unwrap();
        assert_eq!(slash.status(), 404);
        assert_eq!(slash.text().await.unwrap(), "Not Found\n");
    }

    #[tokio::test]
    async fn given_no_token_then_401_with_an_empty_json_typed_body() {
        let fake = fake().await;
        let response = reqwest::get(format!("{}/api/projects", fake.url()))
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(response.text().await.unwrap(), "");
    }

    #[tokio::test]
    async fn given_a_task_when_started_polled_and_stopped_then_the_contract_holds() {
        let fake = fake().await;
        let client = reqwest::Client::new();
        let url = |path: &str| format!("{}/api/project/1{path}", fake.url());
        let created = client
            .post(url("/tasks"))
            .bearer_auth("tok")
            .body(r#"{"template_id":3,"environment":"{\"service_id\":\"llm\"}","extra":1}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let text = created.text().await.unwrap();
        assert!(text.ends_with("}\n"), "{text:?}");
        let task: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (task["status"].as_str(), task["secret"].as_str()),
            (Some("waiting"), Some("{}"))
        );
        assert_eq!(
            fake.started_tasks()[0].environment,
            json!({"service_id": "llm"})
        );

        let nested = client
            .post(url("/tasks"))
            .bearer_auth("tok")
            .body(r#"{"template_id":3,"environment":{"a":1}}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(nested.status(), 400, "environment must be a string");
        let unknown = client
            .get(url("/tasks/999"))
            .bearer_auth("tok")
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 400, "an unknown task is a 400, not a 404");
        let bodiless = client
            .post(url("/tasks/1/stop"))
            .bearer_auth("tok")
            .send()
            .await
            .unwrap();
        assert_eq!(bodiless.status(), 400, "stop needs a JSON body");
        let stopped = client
            .post(url("/tasks/1/stop"))
            .bearer_auth("tok")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(stopped.status(), 204);
    }
}
