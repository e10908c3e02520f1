//! `/openai/v1/...`: one OpenAI-compatible base URL for every model (what people run llama-swap
//! for). A request's `model` — read from a bounded prefix of its JSON body, which then streams on
//! — names the service that lists it in `models:`; the request goes through the transparent
//! proxy to that service's same path (`/v1/chat/completions`), starting it if it is cold.
//! `GET /openai/v1/models` lists every configured model in OpenAI's shape, with its service and
//! that service's state.

use std::sync::Arc;

use crate::http::extract::ApiPath;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use hestia_actors::engine::Engine;
use serde::Serialize;
use serde_json::Value;

use crate::auth::Scope;
use crate::http::AppState;
use crate::http::auth;
use crate::http::context::{self, BodyFields};
use crate::http::problem::Problem;
use crate::http::proxy;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/openai/v1/models", get(list))
        .route("/openai/v1/models/{model}", get(one))
        .route("/openai/v1/{*path}", any(forward))
}

/// One model as OpenAI lists it, plus where Hestia serves it.
#[derive(Debug, Serialize)]
pub struct Model {
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// When this Hestia started (Unix seconds).
    pub created: i64,
    pub owned_by: &'static str,
    /// The service that serves it.
    pub service: String,
    /// That service's lifecycle state (`cold`, `starting`, `ready`, ...).
    pub state: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<Model>,
}

async fn list(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: models(&state),
    })
}

async fn one(State(state): State<AppState>, ApiPath(model): ApiPath<String>) -> Response {
    match models(&state).into_iter().find(|m| m.id == model) {
        Some(found) => Json(found).into_response(),
        None => unknown_model(&state.engine, &model).into_response(),
    }
}

fn models(state: &AppState) -> Vec<Model> {
    let created = state.started_at.timestamp();
    let running = state.engine.spec();
    state
        .engine
        .services()
        .iter()
        .filter_map(|service| {
            let spec = running.services.iter().find(|s| s.id == service.id())?;
            let status = service.status();
            Some(spec.models.iter().map(move |model| Model {
                id: model.clone(),
                object: "model",
                created,
                owned_by: "hestia",
                service: service.id().to_owned(),
                state: status.state.as_str(),
            }))
        })
        .flatten()
        .collect()
}

/// Any other `/openai/v1/...` request: by its body's `model`, to the service serving it.
async fn forward(State(state): State<AppState>, request: Request) -> Response {
    let limit = state.inner.strategy_body_prefix_bytes;
    let (mut request, fields) = context::read_json_fields(request, limit).await;
    let model = fields
        .as_ref()
        .and_then(|f| f.get("model"))
        .and_then(Value::as_str);
    let Some(model) = model else {
        let detail = format!(
            "`{}` needs a JSON body with a `model` field (within its first {limit} bytes)",
            request.uri().path()
        );
        return Problem::new("invalid-request", StatusCode::BAD_REQUEST, detail).into_response();
    };
    let Some(service) = service_of(&state.engine, model) else {
        return unknown_model(&state.engine, model).into_response();
    };
    let allowed = auth::require(request.extensions(), &Scope::proxy(&service));
    if let Err(problem) = allowed {
        return problem.into_response();
    }
    let rest = request
        .uri()
        .path()
        .strip_prefix("/openai")
        .unwrap_or("/")
        .to_owned();
    let target = match request.uri().query() {
        Some(query) => format!("/services/{service}{rest}?{query}"),
        None => format!("/services/{service}{rest}"),
    };
    match target.parse::<Uri>() {
        Ok(uri) => *request.uri_mut() = uri,
        Err(error) => {
            let detail = format!("cannot route `{target}`: {error}");
            return Problem::new("invalid-request", StatusCode::BAD_REQUEST, detail)
                .into_response();
        }
    }
    if let Some(fields) = fields {
        request
            .extensions_mut()
            .insert(BodyFields(Arc::new(fields)));
    }
    proxy::proxy(State(state), request).await
}

/// The service listing `model` in its `models:`.
fn service_of(engine: &Engine, model: &str) -> Option<String> {
    engine
        .spec()
        .services
        .iter()
        .find(|s| s.models.iter().any(|m| m == model))
        .map(|s| s.id.clone())
}

fn unknown_model(engine: &Engine, model: &str) -> Problem {
    let running = engine.spec();
    let known: Vec<&str> = running
        .services
        .iter()
        .flat_map(|s| s.models.iter().map(String::as_str))
        .collect();
    let known = if known.is_empty() {
        "none: no service lists `models:`".to_owned()
    } else {
        known.join(", ")
    };
    Problem::new(
        "unknown-model",
        StatusCode::NOT_FOUND,
        format!("no service serves model `{model}` (known: {known})"),
    )
}
