//! Live configuration: the config file is reloaded on change (a `notify` watch), on SIGHUP and
//! on `POST /v1/config/reload`, without restarting Hestia.
//!
//! A reload reads and validates the whole file. A broken file is refused — logged, and kept as
//! the last error that `GET /v1/config` shows — and the running configuration stays. A good one
//! goes to the engine's router actor, which changes only what changed, and its auth settings
//! (the `auth` block, its keys, `allowed_hosts`) replace the running ones as one. Keys that only
//! take effect at start (`listen`, `database_url`, `log`, ...) are reported as needing a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hestia_actors::engine::Engine;
use hestia_actors::router::ReloadReport;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex as AsyncMutex;

use crate::config::{self, Config, env};
use crate::http::auth::Guard;

/// Changes within this window are one reload (editors write a file in several steps).
const SETTLE: Duration = Duration::from_millis(150);

/// What `GET /v1/config` shows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigStatus {
    pub path: PathBuf,
    /// SHA-256 of the loaded file's text (hex, first 16 digits).
    pub version: String,
    pub loaded_at: DateTime<Utc>,
    /// Whether the file is watched for changes (`hestia serve --no-watch` turns it off).
    pub watching: bool,
    pub last_reload: Option<ReloadOutcome>,
}

/// How the last reload went.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadOutcome {
    pub at: DateTime<Utc>,
    /// `file`, `sighup` or `api`.
    pub trigger: &'static str,
    /// The refusal, when the file was broken (the running configuration stayed).
    pub error: Option<String>,
    /// What changed, when it was applied.
    pub changes: Option<ReloadReport>,
    /// Keys that changed but only take effect when Hestia restarts.
    pub restart_required: Vec<&'static str>,
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the configuration was not reloaded: {0}")]
    Invalid(#[from] config::ConfigError),
    #[error("the configuration was not applied: {0}")]
    Engine(#[from] hestia_actors::error::EngineError),
}

/// The loaded configuration and the way to reload it.
pub struct LiveConfig {
    engine: Engine,
    auth: Arc<Guard>,
    env: Box<dyn env::Source + Send + Sync>,
    /// What is running: the last configuration applied.
    running: AsyncMutex<Config>,
    status: Mutex<ConfigStatus>,
}

impl LiveConfig {
    pub fn new(
        config: Config,
        text: &str,
        engine: Engine,
        auth: Arc<Guard>,
        env: Box<dyn env::Source + Send + Sync>,
        watching: bool,
    ) -> Arc<LiveConfig> {
        let status = ConfigStatus {
            path: config.source_path.clone(),
            version: version_of(text),
            loaded_at: Utc::now(),
            watching,
            last_reload: None,
        };
        Arc::new(LiveConfig {
            engine,
            auth,
            env,
            running: AsyncMutex::new(config),
            status: Mutex::new(status),
        })
    }

    pub fn status(&self) -> ConfigStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the file again and applies it; one reload at a time.
    pub async fn reload(&self, trigger: &'static str) -> Result<ReloadOutcome, ReloadError> {
        let mut running = self.running.lock().await;
        let path = running.source_path.clone();
        let loaded = std::fs::read_to_string(&path)
            .map_err(|source| read_error(&path, source))
            .and_then(|text| {
                config::load_str(&text, &path, &*self.env).map(|config| (config, text))
            });
        let (config, text) = match loaded {
            Ok(loaded) => loaded,
            Err(error) => {
                tracing::warn!(%trigger, %error, "configuration reload refused; the running configuration stays");
                self.finish(trigger, Err(error.to_string()), None);
                return Err(error.into());
            }
        };
        for warning in &config.warnings {
            tracing::warn!(%trigger, "configuration: {warning}");
        }
        let restart_required = needs_restart(&running, &config);
        if !restart_required.is_empty() {
            tracing::warn!(keys = ?restart_required, "these keys take effect only when Hestia restarts");
        }
        let changes = match self.engine.reload(config.engine.clone()).await {
            Ok(changes) => changes,
            Err(error) => {
                tracing::error!(%trigger, %error, "configuration reload failed");
                self.finish(trigger, Err(error.to_string()), None);
                return Err(error.into());
            }
        };
        if let Err(error) = self.auth.apply(&config).await {
            tracing::error!(%error, "the new auth settings apply, but the API keys could not be re-read; the last ones read stay");
        }
        if self.auth.nothing_could_pass() {
            tracing::error!(
                "auth is enabled but no API key or dashboard password exists, so every protected route answers 401"
            );
        }
        *running = config;
        let outcome = self.finish(trigger, Ok((changes, restart_required)), Some(&text));
        Ok(outcome)
    }

    fn finish(
        &self,
        trigger: &'static str,
        result: Result<(ReloadReport, Vec<&'static str>), String>,
        text: Option<&str>,
    ) -> ReloadOutcome {
        let now = Utc::now();
        let outcome = match result {
            Ok((changes, restart_required)) => ReloadOutcome {
                at: now,
                trigger,
                error: None,
                changes: Some(changes),
                restart_required,
            },
            Err(error) => ReloadOutcome {
                at: now,
                trigger,
                // A refused file's error may quote it (a URL, a line with a token).
                error: Some(hestia_actors::redact::scrubbed(&error)),
                changes: None,
                restart_required: Vec::new(),
            },
        };
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(text) = text {
            status.version = version_of(text);
            status.loaded_at = now;
        }
        status.last_reload = Some(outcome.clone());
        outcome
    }
}

/// Reloads on SIGHUP until the process ends.
pub fn on_sighup(live: Arc<LiveConfig>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            let _ = live.reload("sighup").await;
        }
    });
    Ok(())
}

/// Watches the config file (through its directory, so editors that replace the file are seen
/// too) and reloads when it changes. The watcher lives as long as the returned value.
pub fn watch(live: Arc<LiveConfig>, path: &Path) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = path.file_name().map(|n| n.to_owned());
    let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let ours = event.paths.iter().any(|p| p.file_name() == name.as_deref());
        if ours && (event.kind.is_modify() || event.kind.is_create()) {
            let _ = changed.send(());
        }
    })?;
    watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
            // Let the write settle, and fold the burst of events it caused into one reload.
            tokio::time::sleep(SETTLE).await;
            while changes.try_recv().is_ok() {}
            let _ = live.reload("file").await;
        }
    });
    Ok(watcher)
}

fn version_of(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(digest)[..16].to_owned()
}

fn read_error(path: &Path, source: std::io::Error) -> config::ConfigError {
    match source.kind() {
        std::io::ErrorKind::NotFound => config::ConfigError::Missing {
            path: path.to_path_buf(),
        },
        _ => config::ConfigError::Read {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// Whether a key differs between the running configuration and the next one.
type Differs = fn(&Config, &Config) -> bool;

/// The keys read only at start, in the order a reload reports them.
const READ_AT_START: [(&str, Differs); 9] = [
    ("listen", |a, b| a.listen != b.listen),
    ("database_url", |a, b| a.database_url != b.database_url),
    ("log", |a, b| a.log != b.log),
    ("cors_origins", |a, b| a.cors_origins != b.cors_origins),
    ("http", |a, b| a.http != b.http),
    ("strategy_body_prefix_bytes", |a, b| {
        a.strategy_body_prefix_bytes != b.strategy_body_prefix_bytes
    }),
    ("max_request_body_bytes", |a, b| {
        a.max_request_body_bytes != b.max_request_body_bytes
    }),
    ("max_envelope_memory_bytes", |a, b| {
        a.max_envelope_memory_bytes != b.max_envelope_memory_bytes
    }),
    ("shutdown_grace_ms", |a, b| {
        a.shutdown_grace != b.shutdown_grace
    }),
];

/// The keys that changed but are read only at start.
fn needs_restart(running: &Config, next: &Config) -> Vec<&'static str> {
    READ_AT_START
        .iter()
        .filter(|(_, differs)| differs(running, next))
        .map(|(key, _)| *key)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::needs_restart;
    use crate::config::{self, Config, env::MapSource};

    fn loaded(yaml: &str) -> Config {
        config::load_str(yaml, Path::new("hestia_config.yml"), &MapSource::empty())
            .expect("the config loads")
    }

    #[test]
    fn each_key_read_only_at_start_is_reported_when_it_alone_changed() {
        let running = loaded("listen: \"127.0.0.1:8080\"\n");
        let change = |edit: fn(&mut Config)| {
            let mut next = running.clone();
            edit(&mut next);
            needs_restart(&running, &next)
        };
        assert!(change(|_| {}).is_empty());
        assert_eq!(
            change(|c| c.listen = "127.0.0.1:9090".parse().expect("addr")),
            ["listen"]
        );
        assert_eq!(
            change(|c| c.database_url = "sqlite://other.db".into()),
            ["database_url"]
        );
        assert_eq!(
            change(|c| c.cors_origins = vec!["http://a.example".into()]),
            ["cors_origins"]
        );
        assert_eq!(
            change(|c| c.strategy_body_prefix_bytes += 1),
            ["strategy_body_prefix_bytes"]
        );
        assert_eq!(
            change(|c| c.max_request_body_bytes += 1),
            ["max_request_body_bytes"]
        );
        assert_eq!(
            change(|c| c.max_envelope_memory_bytes += 1),
            ["max_envelope_memory_bytes"]
        );
        assert_eq!(
            change(|c| c.shutdown_grace += Duration::from_millis(1)),
            ["shutdown_grace_ms"]
        );
    }

    #[test]
    fn the_log_and_http_blocks_need_a_restart_and_everything_changed_is_listed_in_order() {
        let running = loaded("listen: \"127.0.0.1:8080\"\n");
        let next = loaded(
            "listen: \"127.0.0.1:9090\"\nshutdown_grace_ms: 1\nlog:\n  format: json\nhttp:\n  head_timeout_ms: 1234\nauth:\n  enabled: false\n",
        );
        assert_eq!(
            needs_restart(&running, &next),
            ["listen", "log", "http", "shutdown_grace_ms"]
        );
    }
}
