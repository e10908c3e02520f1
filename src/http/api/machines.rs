//! `GET /v1/machines`: the configured machines, what Hestia last observed of them (from the
//! database) and which services run on each now (from the service actors' snapshots).

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use hestia_actors::spec::{MachineRole, MachineSpec, WakeSpec};
use serde::Serialize;

use crate::http::AppState;
use crate::http::problem::Problem;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/machines", get(list))
}

/// One machine as `/v1/machines` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineBody {
    pub id: String,
    pub role: MachineRole,
    pub address: String,
    pub tags: Vec<String>,
    /// How Hestia wakes it: `wol`, `semaphore`, or `null` (never asleep).
    pub wake: Option<&'static str>,
    /// Whether it was awake when last checked; `null` when never checked.
    pub awake: Option<bool>,
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Services whose current status says they run here, in configuration order.
    pub services: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct MachineList {
    pub machines: Vec<MachineBody>,
}

async fn list(State(state): State<AppState>) -> Response {
    match machines(&state).await {
        Ok(machines) => Json(MachineList { machines }).into_response(),
        Err(problem) => problem.into_response(),
    }
}

/// Every configured machine with what Hestia knows of it (also shown by the dashboard).
pub async fn machines(state: &AppState) -> Result<Vec<MachineBody>, Box<Problem>> {
    let observed = state
        .engine
        .persistence()
        .machines()
        .await
        .map_err(|error| {
            Box::new(Problem::new(
                "unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the machines table cannot be read: {error}"),
            ))
        })?
        .into_iter()
        .map(|row| (row.id.clone(), (row.awake, row.last_seen_at)))
        .collect::<HashMap<_, _>>();
    let placements: Vec<(String, Option<String>)> = state
        .engine
        .services()
        .iter()
        .map(|service| {
            let status = service.status();
            (status.service_id.clone(), status.machine_id.clone())
        })
        .collect();
    Ok(state
        .engine
        .spec()
        .machines
        .iter()
        .map(|machine| {
            let (awake, last_seen_at) = observed.get(&machine.id).copied().unwrap_or_default();
            body_of(machine, awake, last_seen_at, &placements)
        })
        .collect())
}

fn body_of(
    machine: &MachineSpec,
    awake: Option<bool>,
    last_seen_at: Option<DateTime<Utc>>,
    placements: &[(String, Option<String>)],
) -> MachineBody {
    MachineBody {
        id: machine.id.clone(),
        role: machine.role,
        address: hestia_actors::redact::scrubbed(&machine.address),
        tags: machine.tags.clone(),
        wake: machine.wake.as_ref().map(|wake| match wake {
            WakeSpec::Wol { .. } => "wol",
            WakeSpec::Semaphore(_) => "semaphore",
        }),
        awake,
        last_seen_at,
        services: placements
            .iter()
            .filter(|(_, on)| on.as_deref() == Some(machine.id.as_str()))
            .map(|(service, _)| service.clone())
            .collect(),
    }
}
