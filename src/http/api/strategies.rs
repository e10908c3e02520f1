//! `GET /v1/strategies`: the per-request strategies Hestia knows — built-ins and plugins, with
//! their source, load status, last error and decision counters — and which one each service uses.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use hestia_actors::strategy::StrategyInfo;
use serde::Serialize;

use crate::http::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/strategies", get(list))
}

#[derive(Debug, Serialize)]
pub struct StrategyList {
    pub strategies: Vec<StrategyInfo>,
    /// Every service, in configuration order, with the strategy it uses and its fallback.
    pub services: Vec<ServiceStrategy>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStrategy {
    pub service_id: String,
    pub strategy: String,
    /// The built-in deciding when the strategy has no opinion or fails.
    pub fallback: String,
}

async fn list(State(state): State<AppState>) -> Json<StrategyList> {
    let engine = &state.engine;
    let services = engine
        .services()
        .iter()
        .map(|service| {
            let (strategy, fallback) = service.strategy();
            ServiceStrategy {
                service_id: service.id().to_owned(),
                strategy: strategy.to_owned(),
                fallback: fallback.to_owned(),
            }
        })
        .collect();
    Json(StrategyList {
        strategies: engine.strategies().list(),
        services,
    })
}
