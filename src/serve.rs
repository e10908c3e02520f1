//! `hestia serve`: open the database, start the engine, serve HTTP until the shutdown signal.
//!
//! Shutdown, at the first SIGTERM/SIGINT: requests queued for a start are answered
//! `503 shutting-down` at once (their backends are about to stop), event streams end, accepting
//! stops; in-flight requests get the grace period, and whatever is still open after it is reset
//! (not finished, so a client can tell it was cut); then the service actors stop what they own and
//! the database is flushed last. A second signal ends at once: connections are reset, the
//! database flushed, and the backends left running for the next Hestia to adopt.

use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use hestia_actors::engine::Engine;
use hestia_actors::error::EngineError;
use hestia_actors::events::{ActivityEvent, ActivityKind};
use hestia_actors::persistence::{self, PersistenceError, PersistenceHandle, PersistenceOptions};
use serde_json::json;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::{self, App, AppInfo, AppState};
use crate::live::LiveConfig;
use crate::shutdown::Shutdown;

/// The connection cap when the open-files limit cannot be read.
const DEFAULT_MAX_CONNECTIONS: usize = 1024;

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
    #[error("cannot set up configuration reloading: {0}")]
    Reload(#[source] std::io::Error),
    #[error("the HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
}

/// How long, after a hurried shutdown, the database may take to write what it holds.
const HURRIED_FLUSH: Duration = Duration::from_secs(2);

/// Binds `config.listen` and serves until `shutdown` says.
pub async fn run(
    config: Config,
    shutdown: Shutdown,
    reloading: Reloading,
) -> Result<(), ServeError> {
    let listener = http::listener::bind(config.listen).map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    serve_with(config, listener, shutdown, reloading).await
}

/// What besides `POST /v1/config/reload` reloads the configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reloading {
    /// Watch the file and reload when it changes.
    pub watch: bool,
    /// Reload on SIGHUP.
    pub sighup: bool,
}

/// Serves on an already bound `listener` (tests bind `127.0.0.1:0`); reloads on request only.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with(
        config,
        listener,
        Shutdown::graceful(shutdown),
        Reloading::default(),
    )
    .await
}

/// Serves on `listener`, reloading the configuration as `reloading` says.
pub async fn serve_with(
    config: Config,
    listener: TcpListener,
    shutdown: Shutdown,
    reloading: Reloading,
) -> Result<(), ServeError> {
    for warning in &config.warnings {
        tracing::warn!("configuration: {warning}");
    }
    let db = persistence::open(&config.database_url).await?;
    let (persistence, _) = PersistenceHandle::spawn(db, PersistenceOptions::default()).await?;
    // The recorder goes in first, so the engine's start-up events are counted too.
    let prometheus = http::metrics::install();
    let engine = Engine::start(config.engine.clone(), persistence.clone()).await?;
    let guard = std::sync::Arc::new(http::auth::Guard::new(&config, persistence));
    guard.refresh_keys().await?;
    warn_about_auth(&config, &guard);
    let text = std::fs::read_to_string(&config.source_path).unwrap_or_default();
    let live = LiveConfig::new(
        config.clone(),
        &text,
        engine.clone(),
        guard.clone(),
        Box::new(crate::config::env::ProcessEnv),
        reloading.watch,
    );
    if reloading.sighup {
        crate::live::on_sighup(live.clone()).map_err(ServeError::Reload)?;
    }
    // The watch lasts as long as this value.
    let _watcher = if reloading.watch {
        let watcher = crate::live::watch(live.clone(), &config.source_path)
            .map_err(|e| ServeError::Reload(std::io::Error::other(e)))?;
        Some(watcher)
    } else {
        None
    };
    let stopping = CancellationToken::new();
    let state = AppState::new(App {
        engine: engine.clone(),
        started_at: Utc::now(),
        inner: AppInfo {
            version: env!("CARGO_PKG_VERSION"),
            auth_enabled: config.auth.enabled,
            max_request_body_bytes: config.max_request_body_bytes,
            strategy_body_prefix_bytes: config.strategy_body_prefix_bytes,
            envelope_budget: http::envelope::EnvelopeBudget::new(config.max_envelope_memory_bytes),
        },
        prometheus,
        auth: guard,
        live: Some(live),
        stopping: stopping.clone(),
    });
    // Keys made or revoked by `hestia keys` while serving take effect within a second.
    let refresher = tokio::spawn({
        let state = state.clone();
        async move {
            let mut failing = false;
            loop {
                tokio::time::sleep(crate::auth::keys::REFRESH).await;
                match state.auth.refresh_keys().await {
                    Ok(()) => failing = false,
                    Err(error) if !failing => {
                        failing = true;
                        tracing::error!(%error, "re-reading API keys failed; the last ones read stay in force");
                    }
                    Err(_) => {}
                }
            }
        }
    });
    let addr = listener.local_addr().map_err(ServeError::Http)?;
    let file_limit = http::listener::raise_file_limit();
    // Connections to backends, at most (`None`: a service has no limit): each core keeps its
    // own, up to the requests in flight a service allows.
    let cores = hestia_actors::per_core::cores() as u64;
    let upstream_limit = config
        .engine
        .services
        .iter()
        .map(|s| s.max_concurrency.map(|n| n as u64 * cores))
        .sum::<Option<u64>>();
    let max_connections = config.http.max_connections.unwrap_or_else(|| {
        file_limit.map_or(DEFAULT_MAX_CONNECTIONS, |files| {
            http::listener::connections_for(files, upstream_limit)
        })
    });
    tracing::info!(%addr, services = engine.services().len(), max_connections,
        open_files_limit = file_limit, "hestia is listening");

    let grace = config.shutdown_grace;
    let stop_accepting = CancellationToken::new();
    let abort = CancellationToken::new();
    let server = http::listener::serve(
        listener,
        http::router(state.clone()),
        state,
        config.http.clone(),
        max_connections,
        stop_accepting.clone(),
        abort.clone(),
    );
    tokio::pin!(server);
    let Shutdown { graceful, now } = shutdown;
    tokio::select! {
        () = &mut server => {}
        () = graceful => {}
    }
    tracing::info!(
        ?grace,
        "shutting down: answering queued requests, finishing in-flight ones"
    );
    engine.persistence().record(
        ActivityEvent::new(ActivityKind::StopRequested, None).detail(json!({
            "reason": "shutdown",
            "what": "hestia",
            "graceMs": grace.as_millis() as u64,
        })),
    );
    engine.begin_shutdown();
    stopping.cancel();
    stop_accepting.cancel();
    refresher.abort();
    let orderly = async {
        if tokio::time::timeout(grace, &mut server).await.is_err() {
            tracing::warn!(
                "requests still in flight at the end of the grace period are cut (reset)"
            );
            abort.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut server).await;
        }
        engine.shutdown(grace).await;
    };
    tokio::select! {
        () = orderly => tracing::info!("hestia stopped"),
        () = now => {
            tracing::warn!("a second signal: stopping at once; running backends are left for the next start to adopt");
            abort.cancel();
            if tokio::time::timeout(HURRIED_FLUSH, engine.persistence().stop()).await.is_err() {
                tracing::error!("the database could not be flushed in time");
            }
        }
    }
    Ok(())
}

/// What the operator must know about auth at start: who can do what with auth off, or that
/// nothing can pass yet with auth on.
fn warn_about_auth(config: &Config, guard: &http::auth::Guard) {
    let listen = config.listen;
    if !config.auth.enabled {
        if listen.ip().is_loopback() {
            tracing::info!(
                %listen,
                "auth is disabled: every program on this machine can use every service, start and \
                 stop them, and read the API; web pages cannot change anything (cross-site \
                 requests are refused)"
            );
        } else {
            tracing::warn!(
                %listen,
                "auth is disabled and Hestia listens beyond this machine: anyone who can reach \
                 {listen} can use every service through /services/ and /v1/requests, start and \
                 stop services, and read status, activity, machines and metrics. Set \
                 `auth.enabled: true` and create a key with `hestia keys create NAME --scope \
                 admin`, or listen on 127.0.0.1"
            );
        }
        return;
    }
    if guard.nothing_could_pass() {
        tracing::error!(
            "auth is enabled but no API key or dashboard password exists, so every protected \
             route answers 401. Create a key with `hestia keys create NAME --scope admin` (it \
             works within a second, no restart needed), or set auth.dashboard_password_hash \
             from `hestia hash-password`"
        );
    }
}
