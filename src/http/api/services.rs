//! `GET /v1/services` and `GET /v1/services/{id}/status`: status read from the snapshots the
//! service actors publish — no actor is asked, so status never waits behind a busy service.

use crate::http::extract::ApiPath;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use hestia_actors::service::{ServiceHandle, State as Lifecycle};
use hestia_actors::starters::semaphore::AutomationStatus;
use serde::Serialize;

use crate::http::extract::ApiQuery;
use crate::http::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/services", get(list))
        .route("/v1/services/{id}/status", get(status))
        .route("/v1/services/{id}/start", post(start))
        .route("/v1/services/{id}/stop", post(stop))
}

/// One service's status (design.md §2.2).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusBody {
    pub service_id: String,
    pub state: Lifecycle,
    pub readiness: &'static str,
    pub machine_id: Option<String>,
    pub base_url: Option<String>,
    pub queue_pending: usize,
    pub queue_capacity: usize,
    pub in_flight: usize,
    pub last_used_at: Option<DateTime<Utc>>,
    pub last_started_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub starter: &'static str,
    pub pid: Option<u32>,
    pub adopted: bool,
    pub automation: AutomationStatus,
}

#[derive(Debug, Serialize)]
pub struct ServiceList {
    pub services: Vec<StatusBody>,
}

impl StatusBody {
    pub fn of(service: &ServiceHandle) -> StatusBody {
        let status = service.status();
        StatusBody {
            service_id: status.service_id.clone(),
            state: status.state,
            readiness: if status.state == Lifecycle::Ready {
                "ready"
            } else {
                "not_ready"
            },
            machine_id: status.machine_id.clone(),
            base_url: status.base_url.clone(),
            queue_pending: status.queue_pending,
            queue_capacity: status.queue_capacity,
            in_flight: service.in_flight(),
            last_used_at: service.last_used_at(),
            last_started_at: status.last_started_at,
            last_error: status.last_error.clone(),
            starter: status.starter,
            pid: status.pid,
            adopted: status.adopted,
            automation: service.automation().unwrap_or_else(|| AutomationStatus {
                enabled: false,
                provider: "none",
                machine_id: status.machine_id.clone(),
                current_task: None,
                last_task: None,
            }),
        }
    }
}

async fn list(State(state): State<AppState>) -> Json<ServiceList> {
    let services = state.engine.services().iter().map(StatusBody::of).collect();
    Json(ServiceList { services })
}

async fn status(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<StatusBody>, ApiError> {
    let service = state.engine.service(&id)?;
    Ok(Json(StatusBody::of(&service)))
}

/// `?wait=true` on start.
#[derive(Debug, Default, serde::Deserialize)]
pub struct StartQuery {
    #[serde(default)]
    pub wait: bool,
}

async fn start(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<StartQuery>,
) -> Result<(StatusCode, Json<StatusBody>), ApiError> {
    let service = state.engine.service(&id)?;
    if query.wait {
        service.start_and_wait(service.queue_timeout()).await?;
        return Ok((StatusCode::OK, Json(StatusBody::of(&service))));
    }
    service.start().await?;
    Ok((StatusCode::ACCEPTED, Json(StatusBody::of(&service))))
}

async fn stop(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<StatusBody>), ApiError> {
    let service = state.engine.service(&id)?;
    service.stop().await?;
    Ok((StatusCode::ACCEPTED, Json(StatusBody::of(&service))))
}
