//! `GET /healthz` (the process answers) and `GET /readyz` (its engine is up and its database
//! answers and takes writes: a failing write makes Hestia unready until that table is written again).

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
    let persistence = state.engine.persistence();
    let unready =
        |detail: String| Problem::new("unavailable", StatusCode::SERVICE_UNAVAILABLE, detail);
    persistence
        .db()
        .ping()
        .await
        .map_err(|error| unready(format!("database: {error}")))?;
    // Reachable is not enough: what Hestia records must be written too.
    if let Some(problem) = persistence.write_problem().await {
        return Err(unready(format!(
            "the database cannot be written: {problem}"
        )));
    }
    Ok(Json(
        json!({ "status": "ready", "services": state.engine.services().len() }),
    ))
}
