//! `SemaphoreClient`: the few Semaphore API calls Hestia makes (ping, start a task, poll it, read
//! its output, stop it), authenticated with a bearer token or a login session (re-login once on
//! 401), and [`SemaphoreClient::run_task`], which drives one task to a terminal status.
//!
//! Credentials only ever go into request headers: never into logs, errors or `Debug`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{OUTPUT_TAIL_LINES, OutputLine, SemaphoreError, Task, TaskStatus, strip_ansi};
use crate::spec::SemaphoreConnection;
use crate::starters::error_chain;

/// How much of an unexpected error body goes into an error.
const ERROR_BODY_BYTES: usize = 300;
/// Polls closer together than this would only load Semaphore.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Consecutive failed polls (Semaphore unreachable) tolerated before the run fails.
const POLL_FAILURES_TOLERATED: u32 = 3;
/// The session cookie's name.
const SESSION_COOKIE: &str = "semaphore";

/// How [`SemaphoreClient::run_task`] watches a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    pub poll_interval: Duration,
    /// From the task's creation; on expiry the task is stopped and the run fails.
    pub timeout: Duration,
}

/// A Semaphore API client for one server and project. Cheap to clone.
#[derive(Clone)]
pub struct SemaphoreClient {
    inner: Arc<Inner>,
}

struct Inner {
    conn: SemaphoreConnection,
    /// `base_url` without a trailing slash.
    base_url: String,
    /// `base_url` as errors and logs show it (no user-info, no query values).
    shown_url: String,
    /// Building a client only fails if TLS cannot be initialised; that is reported on each call.
    http: Result<reqwest::Client, String>,
    /// `semaphore=<value>` once logged in (username/password only).
    session: Mutex<Option<String>>,
}

impl fmt::Debug for SemaphoreClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphoreClient")
            .field("conn", &self.inner.conn)
            .finish_non_exhaustive()
    }
}

/// What an authenticated call should make of the statuses it alone can interpret.
type StatusMap<'a> = &'a (dyn Fn(StatusCode) -> Option<SemaphoreError> + Sync);

impl SemaphoreClient {
    pub fn new(conn: SemaphoreConnection) -> SemaphoreClient {
        let http = reqwest::Client::builder()
            .timeout(conn.timeout)
            .build()
            .map_err(|error| error_chain(&error));
        SemaphoreClient {
            inner: Arc::new(Inner {
                base_url: conn.base_url.trim_end_matches('/').to_owned(),
                shown_url: crate::redact::redact_url(conn.base_url.trim_end_matches('/')),
                conn,
                http,
                session: Mutex::new(None),
            }),
        }
    }

    /// An API token, or a username with a password, is configured. Without, every call would
    /// be refused: callers fail at once instead, saying what to set.
    pub fn has_credentials(&self) -> bool {
        let conn = &self.inner.conn;
        conn.api_token.is_some() || (conn.username.is_some() && conn.password.is_some())
    }

    /// The server's URL as messages show it (user-info and query values redacted).
    pub fn shown_url(&self) -> &str {
        &self.inner.shown_url
    }

    pub fn project_id(&self) -> i64 {
        self.inner.conn.project_id
    }

    /// `GET /api/ping` (no auth): `Ok` when Semaphore answers `pong`.
    pub async fn ping(&self) -> Result<(), SemaphoreError> {
        let path = "/api/ping";
        let http = self.http()?;
        let response = http
            .get(self.url(path))
            .send()
            .await
            .map_err(|e| self.unreachable("GET", path, e))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if status == StatusCode::OK && body.trim() == "pong" {
            Ok(())
        } else {
            Err(SemaphoreError::NotSemaphore {
                base_url: self.inner.shown_url.clone(),
                status: status.as_u16(),
                body: body.chars().take(80).collect(),
            })
        }
    }

    /// `POST /api/project/{pid}/tasks`: starts `template_id` with `environment` (sent as a JSON
    /// *string*, as Semaphore requires). The new task is `waiting`.
    pub async fn start_task(
        &self,
        template_id: i64,
        environment: &Map<String, Value>,
        message: &str,
    ) -> Result<Task, SemaphoreError> {
        let path = format!("/api/project/{}/tasks", self.project_id());
        let body = json!({
            "template_id": template_id,
            "environment": Value::Object(environment.clone()).to_string(),
            "message": message,
        });
        let unusable = |status: StatusCode| {
            // 404 since 2.11, 500 up to 2.10 and for a template without a Variable Group.
            matches!(status.as_u16(), 404 | 500).then(|| SemaphoreError::TemplateUnusable {
                base_url: self.inner.shown_url.clone(),
                method: "POST",
                path: path.clone(),
                project_id: self.project_id(),
                template_id,
                status: status.as_u16(),
            })
        };
        self.call_json(Method::POST, &path, Some(&body), &unusable)
            .await
    }

    /// `GET /api/project/{pid}/tasks/{id}`.
    pub async fn task(&self, task_id: i64) -> Result<Task, SemaphoreError> {
        let path = format!("/api/project/{}/tasks/{task_id}", self.project_id());
        let gone = self.gone(&path, "GET", task_id);
        self.call_json(Method::GET, &path, None, &gone).await
    }

    /// `GET /api/project/{pid}/tasks/{id}/output`, every line, oldest first.
    pub async fn output(&self, task_id: i64) -> Result<Vec<OutputLine>, SemaphoreError> {
        let path = format!("/api/project/{}/tasks/{task_id}/output", self.project_id());
        let gone = self.gone(&path, "GET", task_id);
        let lines: Option<Vec<OutputLine>> =
            self.call_json(Method::GET, &path, None, &gone).await?;
        Ok(lines.unwrap_or_default())
    }

    /// The last [`OUTPUT_TAIL_LINES`] lines of a task's output, colours removed. Reading the
    /// output is diagnostics only: if it fails, the tail says so instead.
    pub async fn output_tail(&self, task_id: i64) -> Vec<String> {
        match self.output(task_id).await {
            Ok(lines) => {
                let skip = lines.len().saturating_sub(OUTPUT_TAIL_LINES);
                lines
                    .iter()
                    .skip(skip)
                    .map(|line| strip_ansi(&line.output))
                    .collect()
            }
            Err(error) => vec![format!("(the task output could not be read: {error})")],
        }
    }

    /// `POST /api/project/{pid}/tasks/{id}/stop` with the JSON body Semaphore ≥ 2.9 requires.
    pub async fn stop_task(&self, task_id: i64) -> Result<(), SemaphoreError> {
        let path = format!("/api/project/{}/tasks/{task_id}/stop", self.project_id());
        let gone = self.gone(&path, "POST", task_id);
        let body = json!({ "force": false });
        self.call(Method::POST, &path, Some(&body), &gone)
            .await
            .map(drop)
    }

    /// Starts `template_id` and polls it until it is terminal. `Ok` on `success`; on `error` or
    /// `stopped` the error carries the output tail; past `options.timeout` the task is stopped.
    /// `observe` sees the task after every poll. If this future is dropped before the task is
    /// terminal (e.g. the start attempt timed out), the task is asked to stop.
    pub async fn run_task(
        &self,
        template_id: i64,
        environment: &Map<String, Value>,
        message: &str,
        options: RunOptions,
        mut observe: impl FnMut(&Task) + Send,
    ) -> Result<Task, SemaphoreError> {
        let deadline = Instant::now() + options.timeout;
        let mut task = self.start_task(template_id, environment, message).await?;
        info!(
            task_id = task.id,
            template_id,
            project_id = self.project_id(),
            "Semaphore task started"
        );
        observe(&task);
        let mut guard = StopOnDrop {
            client: Some(self.clone()),
            task_id: task.id,
        };
        let interval = options.poll_interval.max(MIN_POLL_INTERVAL);
        let mut failures = 0;
        while !task.status.is_terminal() {
            let now = Instant::now();
            if now >= deadline {
                guard.disarm();
                return Err(self.time_out(&task, options.timeout).await);
            }
            tokio::time::sleep(interval.min(deadline - now)).await;
            match self.task(task.id).await {
                Ok(polled) => {
                    failures = 0;
                    if polled.status != task.status {
                        debug!(task_id = polled.id, status = %polled.status, "Semaphore task status");
                    }
                    if let TaskStatus::Other(status) = &polled.status {
                        warn!(
                            task_id = polled.id,
                            status, "unknown Semaphore task status; still waiting"
                        );
                    }
                    task = polled;
                    observe(&task);
                }
                Err(error @ SemaphoreError::Unreachable { .. })
                    if failures + 1 < POLL_FAILURES_TOLERATED =>
                {
                    failures += 1;
                    warn!(task_id = task.id, %error, "polling the Semaphore task failed; trying again");
                }
                Err(error) => return Err(error),
            }
        }
        guard.disarm();
        if task.status == TaskStatus::Success {
            info!(task_id = task.id, template_id, "Semaphore task succeeded");
            return Ok(task);
        }
        let output = self.output_tail(task.id).await;
        Err(SemaphoreError::TaskFailed {
            task_id: task.id,
            template_id,
            status: task.status,
            output,
        })
    }

    /// Stops a task that outlived its timeout and builds the error, output tail included.
    async fn time_out(&self, task: &Task, timeout: Duration) -> SemaphoreError {
        if let Err(error) = self.stop_task(task.id).await {
            warn!(task_id = task.id, %error, "could not stop the timed-out Semaphore task");
        }
        SemaphoreError::TaskTimedOut {
            task_id: task.id,
            template_id: task.template_id,
            timeout,
            status: task.status.clone(),
            output: self.output_tail(task.id).await,
        }
    }

    // ----- transport -----

    fn http(&self) -> Result<&reqwest::Client, SemaphoreError> {
        self.inner
            .http
            .as_ref()
            .map_err(|reason| SemaphoreError::Client {
                reason: reason.clone(),
            })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.base_url)
    }

    fn unreachable(
        &self,
        method: &'static str,
        path: &str,
        error: reqwest::Error,
    ) -> SemaphoreError {
        SemaphoreError::Unreachable {
            base_url: self.inner.shown_url.clone(),
            method,
            path: path.to_owned(),
            // reqwest's error would print the URL as called (credentials and all).
            reason: error_chain(&error.without_url()),
        }
    }

    fn gone<'a>(
        &'a self,
        path: &'a str,
        method: &'static str,
        task_id: i64,
    ) -> impl Fn(StatusCode) -> Option<SemaphoreError> + Sync + 'a {
        move |status| {
            (status == StatusCode::BAD_REQUEST).then(|| SemaphoreError::TaskGone {
                base_url: self.inner.shown_url.clone(),
                method,
                path: path.to_owned(),
                project_id: self.project_id(),
                task_id,
            })
        }
    }

    pub(super) async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        special: StatusMap<'_>,
    ) -> Result<T, SemaphoreError> {
        let name = method_name(&method);
        let response = self.call(method, path, body, special).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.unreachable(name, path, e))?;
        serde_json::from_slice(&bytes).map_err(|error| SemaphoreError::Decode {
            base_url: self.inner.shown_url.clone(),
            method: name,
            path: path.to_owned(),
            reason: error.to_string(),
        })
    }

    /// An authenticated call; `Ok` only for a 2xx.
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        special: StatusMap<'_>,
    ) -> Result<reqwest::Response, SemaphoreError> {
        let name = method_name(&method);
        let conn = &self.inner.conn;
        let response = match (&conn.api_token, &conn.username, &conn.password) {
            (Some(token), _, _) => {
                let response = self
                    .send(&method, path, body, Some(format!("Bearer {token}")), None)
                    .await?;
                if response.status() == StatusCode::UNAUTHORIZED {
                    return Err(SemaphoreError::BadToken {
                        base_url: self.inner.shown_url.clone(),
                        method: name,
                        path: path.to_owned(),
                    });
                }
                response
            }
            (None, Some(username), Some(password)) => {
                self.call_with_session(&method, path, body, username, password)
                    .await?
            }
            _ => {
                let response = self.send(&method, path, body, None, None).await?;
                if response.status() == StatusCode::UNAUTHORIZED {
                    return Err(SemaphoreError::NoCredentials {
                        base_url: self.inner.shown_url.clone(),
                        method: name,
                        path: path.to_owned(),
                    });
                }
                response
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if let Some(error) = special(status) {
            return Err(error);
        }
        let body = short_body(response).await;
        if status == StatusCode::FORBIDDEN {
            return Err(SemaphoreError::Forbidden {
                base_url: self.inner.shown_url.clone(),
                method: name,
                path: path.to_owned(),
                project_id: self.project_id(),
                detail: body,
            });
        }
        Err(SemaphoreError::Status {
            base_url: self.inner.shown_url.clone(),
            method: name,
            path: path.to_owned(),
            status: status.as_u16(),
            body,
        })
    }

    /// A call with the session cookie: logs in first if needed, and once more on a 401.
    async fn call_with_session(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
        username: &str,
        password: &str,
    ) -> Result<reqwest::Response, SemaphoreError> {
        let mut session = self.inner.session.lock().await;
        let mut relogged = false;
        loop {
            let cookie = match session.as_ref() {
                Some(cookie) => cookie.clone(),
                None => {
                    let cookie = self.login(username, password).await?;
                    *session = Some(cookie.clone());
                    cookie
                }
            };
            let response = self.send(method, path, body, None, Some(cookie)).await?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            let reason = short_body(response).await;
            *session = None;
            if reason.contains("REQUIRED") || reason.contains("NOT_VERIFIED") {
                return Err(SemaphoreError::SessionNotVerified {
                    base_url: self.inner.shown_url.clone(),
                    username: username.to_owned(),
                    reason: reason.trim_start_matches(": ").to_owned(),
                });
            }
            if relogged {
                return Err(SemaphoreError::BadLogin {
                    base_url: self.inner.shown_url.clone(),
                    username: username.to_owned(),
                });
            }
            debug!("Semaphore session expired; logging in again");
            relogged = true;
        }
    }

    /// `POST /api/auth/login`; returns the `semaphore=<value>` cookie pair.
    async fn login(&self, username: &str, password: &str) -> Result<String, SemaphoreError> {
        let path = "/api/auth/login";
        let body = json!({ "auth": username, "password": password });
        let response = self
            .send(&Method::POST, path, Some(&body), None, None)
            .await?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            return Err(SemaphoreError::BadLogin {
                base_url: self.inner.shown_url.clone(),
                username: username.to_owned(),
            });
        }
        if !status.is_success() {
            return Err(SemaphoreError::Status {
                base_url: self.inner.shown_url.clone(),
                method: "POST",
                path: path.to_owned(),
                status: status.as_u16(),
                body: short_body(response).await,
            });
        }
        response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .filter_map(|value| value.split(';').next())
            .find(|pair| pair.trim_start().starts_with(&format!("{SESSION_COOKIE}=")))
            .map(|pair| pair.trim().to_owned())
            .ok_or_else(|| SemaphoreError::Decode {
                base_url: self.inner.shown_url.clone(),
                method: "POST",
                path: path.to_owned(),
                reason: format!("the login succeeded but set no `{SESSION_COOKIE}` cookie"),
            })
    }

    async fn send(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
        authorization: Option<String>,
        cookie: Option<String>,
    ) -> Result<reqwest::Response, SemaphoreError> {
        let mut request = self.http()?.request(method.clone(), self.url(path));
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        if let Some(value) = cookie {
            request = request.header(COOKIE, value);
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        request
            .send()
            .await
            .map_err(|e| self.unreachable(method_name(method), path, e))
    }
}

/// Stops the task if the run is abandoned before the task finished.
struct StopOnDrop {
    client: Option<SemaphoreClient>,
    task_id: i64,
}

impl StopOnDrop {
    fn disarm(&mut self) {
        self.client = None;
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let (Some(client), Ok(runtime)) =
            (self.client.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let task_id = self.task_id;
        runtime.spawn(async move {
            match client.stop_task(task_id).await {
                Ok(()) => info!(task_id, "abandoned Semaphore task asked to stop"),
                Err(error) => warn!(task_id, %error, "could not stop an abandoned Semaphore task"),
            }
        });
    }
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        _ => "request",
    }
}

/// `: <first bytes of the body>`, or empty for an empty body.
async fn short_body(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(
            ": {}",
            text.chars().take(ERROR_BODY_BYTES).collect::<String>()
        )
    }
}
