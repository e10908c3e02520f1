//! Tasks: `POST …/tasks` creates one, a script drives it through `waiting → starting → running →
//! success|error` (applying the template's effect when it runs), and the task, its output and
//! `stop` answer as Semaphore does (an unknown task is a 400; stopping a finished one relabels it).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::USER_ID;
use super::effects::apply;
use super::http::{empty, json_body, timestamp};
use super::options::{ApiShape, FakeTemplate, Outcome};
use super::projects::check_project;
use super::state::{FakeState, FakeTask, StartedTask, lock};

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

pub(super) async fn create_task(
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

pub(super) async fn task(
    State(state): State<Arc<FakeState>>,
    Path((pid, id)): Path<(String, String)>,
) -> Response {
    match find_task(&state, &pid, &id) {
        Ok(task) => json_body(StatusCode::OK, &task_json(&state, &task, false)),
        Err(response) => *response,
    }
}

pub(super) async fn output(
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

pub(super) async fn stop_task(
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
