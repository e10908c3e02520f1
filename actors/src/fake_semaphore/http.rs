//! The fake's route table and the way it answers: every call recorded, `application/json` on
//! every response without a type (as Semaphore's middleware does), JSON ending in `\n` as Go's
//! encoder writes it, a `text/plain` 404 and ping, and `/api/info` in the chosen version's shape.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::options::ApiShape;
use super::state::{FakeState, RecordedCall, lock};
use super::{admin, auth, projects, tasks};

pub(super) fn router(state: Arc<FakeState>) -> Router {
    let authenticated = Router::new()
        .route("/api/info", get(info))
        .route("/api/projects", get(projects::projects))
        .route("/api/project/{pid}", get(projects::project))
        .route("/api/project/{pid}/templates", get(projects::templates))
        .route(
            "/api/project/{pid}/templates/{tid}",
            get(projects::template),
        )
        .route("/api/project/{pid}/tasks", post(tasks::create_task))
        .route("/api/project/{pid}/tasks/{id}", get(tasks::task))
        .route("/api/project/{pid}/tasks/{id}/output", get(tasks::output))
        .route("/api/project/{pid}/tasks/{id}/stop", post(tasks::stop_task));
    let authenticated = admin::routes(authenticated).route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_auth,
    ));
    Router::new()
        .route("/api/ping", get(ping))
        .route("/api/auth/login", post(auth::login))
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

pub(super) fn empty(status: StatusCode) -> Response {
    status.into_response()
}

/// A JSON body the way Go's encoder writes it: with a trailing newline.
pub(super) fn json_body(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{value}\n"),
    )
        .into_response()
}

pub(super) fn error_body(status: StatusCode, message: &str) -> Response {
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

pub(super) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}
