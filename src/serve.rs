//! `hestia serve`: open the database, start the engine, serve HTTP until the shutdown signal.
//!
//! Shutdown order, all bounded by one grace period: stop accepting and let in-flight requests
//! finish → drain the service actors (they stop what they own) → flush the database last.

use std::future::Future;

use chrono::Utc;
use hestia_actors::engine::Engine;
use hestia_actors::error::EngineError;
use hestia_actors::persistence::{self, PersistenceError, PersistenceHandle, PersistenceOptions};
use thiserror::Error;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::http::{self, App, AppInfo, AppState};

/// Why `serve` could not run.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Database(#[from] PersistenceError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
}

/// Binds `config.listen` and serves until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    serve(config, listener, shutdown).await
}

/// Serves on an already bound `listener` (tests bind `127.0.0.1:0`).
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let db = persistence::open(&config.database_url).await?;
    let (persistence, _) = PersistenceHandle::spawn(db, PersistenceOptions::default()).await?;
    // The recorder goes in first, so the engine's start-up events are counted too.
    let prometheus = http::metrics::install();
    let engine = Engine::start(config.engine.clone(), persistence).await?;
    if !config.auth.enabled {
        tracing::warn!(
            "auth is disabled: anyone who can reach this port can use every service and the API"
        );
    }
    let state = AppState::new(App {
        engine: engine.clone(),
        client: http::proxy::client(),
        started_at: Utc::now(),
        inner: AppInfo {
            version: env!("CARGO_PKG_VERSION"),
            auth_enabled: config.auth.enabled,
            max_request_body_bytes: config.max_request_body_bytes,
            strategy_body_prefix_bytes: config.strategy_body_prefix_bytes,
        },
        prometheus,
    });
    let addr = listener.local_addr().map_err(ServeError::Http)?;
    tracing::info!(%addr, services = engine.services().len(), "hestia is listening");

    let grace = config.shutdown_grace;
    let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = http::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_accepting.send(());
        })
        .into_future();
    // In-flight requests get `grace` to finish after the signal; then they are cut.
    let bounded = async {
        let _ = stopped.await;
        tracing::info!(?grace, "shutting down: finishing in-flight requests");
        tokio::time::sleep(grace).await;
    };
    let result = tokio::select! {
        result = server => result.map_err(ServeError::Http),
        _ = bounded => {
            tracing::warn!("in-flight requests did not finish within the grace period");
            Ok(())
        }
    };
    engine.shutdown(grace).await;
    tracing::info!("hestia stopped");
    result
}
