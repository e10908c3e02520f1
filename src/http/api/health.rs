//! `GET /healthz` (the process answers) and `GET /readyz` (its engine and database are up).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::http::AppState;
use crate::http::problem::Problem;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    Json(json!({
        "status": "ok",
        "version": state.inner.version,
        "startedAt": state.started_at,
    }))
}

async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, Problem> {
    state
        .engine
        .persistence()
        .db()
        .ping()
        .await
        .map_err(|error| {
            Problem::new(
                "unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                format!("database: {error}"),
            )
        })?;
    Ok(Json(
        json!({ "status": "ready", "services": state.engine.services().len() }),
    ))
}
