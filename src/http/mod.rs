//! The HTTP surface: the one route table, and the state every handler shares.
//!
//! Each file under `api/` exports `routes()`; they are merged only here, so this file is the
//! place to see every route Hestia answers (and what `contracts/openapi.yaml` must describe).

pub mod api;
pub mod auth;
pub mod context;
pub mod dashboard;
pub mod early;
pub mod envelope;
pub mod extract;
mod holding;
pub mod html;
pub mod listener;
pub mod metrics;
pub mod openai;
pub mod problem;
pub mod proxy;
pub mod request_id;
pub mod upstream;
pub mod waiting;

use std::sync::Arc;

use axum::Router;
use chrono::{DateTime, Utc};
use hestia_actors::engine::Engine;
use hestia_actors::error::ServiceError;

/// What every handler can reach: one `Arc`, so handing it to each request is one counter bump.
#[derive(Clone)]
pub struct AppState(Arc<App>);

impl AppState {
    pub fn new(app: App) -> AppState {
        AppState(Arc::new(app))
    }
}

impl std::ops::Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}

/// The engine, the data path's client and the facts about this process.
pub struct App {
    pub engine: Engine,
    pub started_at: DateTime<Utc>,
    pub inner: AppInfo,
    /// Renders `/metrics`: the process-wide Prometheus recorder's handle.
    pub prometheus: metrics_exporter_prometheus::PrometheusHandle,
    /// Keys, sessions, hosts, origins: who may call what (`auth::ROUTES`).
    pub auth: std::sync::Arc<auth::Guard>,
    /// The loaded configuration and its reloads (`None` when not started from a file).
    pub live: Option<std::sync::Arc<crate::live::LiveConfig>>,
    /// Cancelled when Hestia begins to shut down: endless responses (event streams, followed
    /// logs) end then instead of holding the shutdown for its whole grace period.
    pub stopping: tokio_util::sync::CancellationToken,
}

/// Facts about this Hestia process, for `/healthz` and `/readyz`.
#[derive(Debug)]
pub struct AppInfo {
    pub version: &'static str,
    pub auth_enabled: bool,
    /// `max_request_body_bytes`: larger request bodies are refused with `payload-too-large`.
    pub max_request_body_bytes: u64,
    /// `strategy_body_prefix_bytes`: how much of a JSON body is read for a strategy's context.
    pub strategy_body_prefix_bytes: usize,
    /// `max_envelope_memory_bytes`: what all `/v1/requests` envelopes may hold at once.
    pub envelope_budget: envelope::EnvelopeBudget,
}

/// An engine error on its way to becoming a problem response.
#[derive(Debug)]
pub struct ApiError(pub ServiceError);

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> ApiError {
        ApiError(error)
    }
}

/// The whole application: every route, with its state. Every route passes the auth guard
/// (`auth::guard`, with the route → scope table `auth::ROUTES`); CORS headers come only for
/// the origins `cors_origins` lists.
pub fn router(state: AppState) -> Router {
    let cors = auth::browser::cors_layer(&state.auth.cors_origins);
    // The proxy handles `x-request-id` itself: one middleware less on the hot path.
    let control = Router::new()
        .merge(api::health::routes())
        .merge(api::services::routes())
        .merge(api::logs::routes())
        .merge(api::activity::routes())
        .merge(api::events::routes())
        .merge(api::machines::routes())
        .merge(api::strategies::routes())
        .merge(api::config::routes())
        .merge(envelope::routes())
        .merge(metrics::routes())
        .layer(axum::middleware::from_fn(request_id::propagate));
    let router = Router::new()
        .merge(control)
        .merge(proxy::routes())
        .merge(auth::session::routes())
        .merge(dashboard::routes())
        .merge(openai::routes())
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ));
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.with_state(state)
}

/// Any path no route knows: a problem that says where things are.
async fn no_route(uri: axum::http::Uri) -> problem::Problem {
    let detail = format!(
        "nothing is served at `{}`: services are under /services/<id>/, the API under /v1/",
        uri.path()
    );
    problem::Problem::new("not-found", axum::http::StatusCode::NOT_FOUND, detail)
}

/// A known path asked with a method it does not take.
async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> problem::Problem {
    let detail = format!("`{method}` is not allowed on `{}`", uri.path());
    problem::Problem::new(
        "invalid-request",
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        detail,
    )
}
