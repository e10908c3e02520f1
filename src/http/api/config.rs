//! `GET /v1/config` (the loaded configuration's version, when, the last reload and its error)
//! and `POST /v1/config/reload` (read the file again now).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::http::AppState;
use crate::http::problem::Problem;
use crate::live::{ConfigStatus, ReloadError, ReloadOutcome};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/config", get(show))
        .route("/v1/config/reload", post(reload))
}

async fn show(State(state): State<AppState>) -> Result<Json<ConfigStatus>, Problem> {
    let live = state.live.as_deref().ok_or_else(not_from_a_file)?;
    Ok(Json(live.status()))
}

async fn reload(State(state): State<AppState>) -> Result<Json<ReloadOutcome>, Problem> {
    let live = state.live.as_deref().ok_or_else(not_from_a_file)?;
    match live.reload("api").await {
        Ok(outcome) => Ok(Json(outcome)),
        Err(ReloadError::Invalid(error)) => Err(Problem::new(
            "invalid-request",
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the configuration was not reloaded (the running one stays): {error}"),
        )),
        Err(error @ ReloadError::Engine(_)) => Err(Problem::new(
            "unavailable",
            StatusCode::SERVICE_UNAVAILABLE,
            error.to_string(),
        )),
    }
}

fn not_from_a_file() -> Problem {
    Problem::new(
        "not-found",
        StatusCode::NOT_FOUND,
        "this Hestia was not started from a configuration file",
    )
}
