//! `GET /v1/strategies`: the per-request strategies Hestia knows (with load errors of plugins
//! that failed) and which one each service uses.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use hestia_actors::strategy::{DEFAULT_STRATEGY, StrategyInfo};
use serde::Serialize;

use crate::http::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/strategies", get(list))
}

#[derive(Debug, Serialize)]
pub struct StrategyList {
    pub strategies: Vec<StrategyInfo>,
    /// Every service, in configuration order, with the strategy it names (or the default).
    pub services: Vec<ServiceStrategy>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStrategy {
    pub service_id: String,
    pub strategy: String,
}

async fn list(State(state): State<AppState>) -> Json<StrategyList> {
    let engine = &state.engine;
    let services = engine
        .spec()
        .services
        .iter()
        .map(|service| ServiceStrategy {
            service_id: service.id.clone(),
            strategy: service
                .strategy
                .clone()
                .unwrap_or_else(|| DEFAULT_STRATEGY.to_owned()),
        })
        .collect();
    Json(StrategyList {
        strategies: engine.strategies().list(),
        services,
    })
}
