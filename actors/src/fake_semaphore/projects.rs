//! Projects and templates as Semaphore lists them: the seeded project (unless the fake is fresh)
//! plus those created through [`super::admin`], and the scripted templates in the chosen shape.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::http::{empty, error_body, json_body, timestamp};
use super::options::{ApiShape, FakeTemplate};
use super::state::{FakeState, lock};

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

pub(super) async fn projects(State(state): State<Arc<FakeState>>) -> Response {
    let mut list = Vec::new();
    if !state.fresh {
        list.push(project_json(&state));
    }
    list.extend(state.catalog.projects_json(state.shape));
    json_body(StatusCode::OK, &Value::Array(list))
}

/// The project id from the path: `Err` is the response Semaphore gives.
pub(super) fn check_project(state: &FakeState, pid: &str) -> Result<(), Box<Response>> {
    match pid.parse::<i64>() {
        Err(_) => Err(Box::new(error_body(
            StatusCode::BAD_REQUEST,
            "Invalid project ID",
        ))),
        Ok(pid) if !state.has_project(pid) => Err(Box::new(empty(StatusCode::NOT_FOUND))),
        Ok(_) => Ok(()),
    }
}

pub(super) async fn project(
    State(state): State<Arc<FakeState>>,
    Path(pid): Path<String>,
) -> Response {
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

pub(super) fn template_json(state: &FakeState, id: i64, template: &FakeTemplate) -> Value {
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

pub(super) async fn templates(
    State(state): State<Arc<FakeState>>,
    Path(pid): Path<String>,
) -> Response {
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

pub(super) async fn template(
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
