//! Loading `hestia_config.yml` (design.md §2.1): strict YAML parsing (or TOML for a file ending in
//! `.toml`, see [`toml_file`]), the Python prototype's flat keys, environment overrides and
//! validation, ending in a [`Config`] whose `engine` is the normalised `EngineSpec` the engine
//! runs. Errors name file, line, column and key path.

mod check;
pub mod defaults;
pub mod edit;
pub mod env;
pub mod error;
mod legacy;
mod schema;
mod secret;
mod service_env;
mod spans;
mod toml_file;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hestia_actors::spec::{EngineSpec, ReadinessSpec};
use serde_saphyr::MessageFormatter;

pub use defaults::{DATABASE_URL as DEFAULT_DATABASE_URL, LISTEN as DEFAULT_LISTEN};
pub use error::{ConfigError, Diagnostic, Origin, Problem};
pub use secret::Secret;
pub use toml_file::is_toml;

use check::Checker;
use schema::RawConfig;
use spans::{KeyIndex, Pos};

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    /// Bound on a graceful shutdown (`shutdown_grace_ms`, default 10 s).
    pub shutdown_grace: Duration,
    /// Largest request body accepted (`max_request_body_bytes`, default 100 MiB).
    pub max_request_body_bytes: u64,
    /// Bytes all `/v1/requests` envelopes may hold at once (`max_envelope_memory_bytes`, 256 MiB).
    pub max_envelope_memory_bytes: u64,
    /// How much of a JSON body strategies read (`strategy_body_prefix_bytes`, default 64 KiB).
    pub strategy_body_prefix_bytes: usize,
    /// The `http:` block: edge timeouts and the connection cap.
    pub http: HttpConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
    /// `allowed_hosts`, lower-cased; empty: any `Host` is accepted.
    pub allowed_hosts: Vec<String>,
    /// `cors_origins` (`scheme://host[:port]`, lower-cased); empty: no CORS at all.
    pub cors_origins: Vec<String>,
    /// Present when a Semaphore server URL is configured (file or environment).
    pub semaphore: Option<SemaphoreConfig>,
    /// Shared with the engine (`Engine::start`, reloads): never copied.
    pub engine: Arc<EngineSpec>,
    /// The file this was loaded from.
    pub source_path: PathBuf,
    /// What loads but will not work as written (e.g. a Semaphore service without credentials);
    /// `serve` logs each, `config check` prints them.
    pub warnings: Vec<Diagnostic>,
}

/// Limits where clients connect (`http:`).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// A request head must arrive within this, from its first byte (`head_timeout_ms`, 30 s).
    pub head_timeout: Duration,
    /// An idle connection is closed after this between requests (`keep_alive_timeout_ms`, 75 s).
    pub keep_alive_timeout: Duration,
    /// A request body may go this long without a byte (`body_timeout_ms`, 60 s).
    pub body_timeout: Duration,
    /// `max_connections`; `None` = derived from the open-files limit at start.
    pub max_connections: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// A tracing filter (`info`, `hestia=debug,sqlx=warn`).
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    pub enabled: bool,
    pub dashboard_username: String,
    /// Argon2 PHC string.
    pub dashboard_password_hash: Option<Secret>,
    /// Keys from `auth.keys` and `HESTIA_API_KEYS`, as digests.
    pub keys: Vec<ConfigKey>,
    /// `/metrics` is served without a key.
    pub public_metrics: bool,
    /// Failed attempts per client address before 429 (`auth.max_failed_attempts`, default 10).
    pub max_failed_attempts: u32,
}

/// An API key defined by its SHA-256 digest in the config or the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigKey {
    pub name: String,
    pub sha256: [u8; 32],
    pub scopes: Vec<crate::auth::Scope>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SemaphoreConfig {
    pub base_url: String,
    pub api_token: Option<Secret>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub project_id: i64,
    /// Timeout of one API call.
    pub timeout: Duration,
}

impl SemaphoreConfig {
    /// An API token, or a username with a password.
    pub fn has_credentials(&self) -> bool {
        self.api_token.is_some() || (self.username.is_some() && self.password.is_some())
    }
}

/// Reads and loads the file at `path`.
pub fn load(path: &Path, env: &dyn env::Source) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ConfigError::Missing {
            path: path.to_path_buf(),
        },
        _ => ConfigError::Read {
            path: path.to_path_buf(),
            source,
        },
    })?;
    load_str(&text, path, env)
}

/// Loads configuration text; `origin` is the path named in errors and kept as `source_path`, and
/// its extension chooses the format: `.toml` is TOML, anything else YAML.
pub fn load_str(text: &str, origin: &Path, env: &dyn env::Source) -> Result<Config, ConfigError> {
    let toml = toml_file::is_toml(origin);
    let index = if toml {
        toml_file::index(text)
    } else {
        KeyIndex::build(text)
    };
    let raw: RawConfig = if text.trim().is_empty() {
        RawConfig::default()
    } else if toml {
        toml_file::parse(text, origin, &index)?
    } else {
        serde_saphyr::from_str(text).map_err(|err| parse_error(&err, origin, &index))?
    };
    let overrides = env::Overrides::read(env);
    let mut checker = Checker::new(origin, &index);
    let mut config = validate::build(raw, &overrides, origin, &mut checker);
    if checker.problems.is_empty() {
        config.warnings = checker.warnings;
        Ok(config)
    } else {
        Err(ConfigError::Invalid(checker.problems))
    }
}

/// The JSON schema of the file (the output of `hestia config schema`).
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(RawConfig).to_value();
    defaults::state_in(&mut schema);
    schema
}

fn parse_error(err: &serde_saphyr::Error, origin: &Path, index: &KeyIndex) -> ConfigError {
    let pos = err
        .location()
        .filter(|loc| loc.line() > 0)
        .map(|loc| Pos {
            line: usize::try_from(loc.line()).unwrap_or(usize::MAX),
            column: usize::try_from(loc.column()).unwrap_or(usize::MAX),
        })
        .unwrap_or(Pos::START);
    let mut key_path = index.path_at(pos).unwrap_or("(document)").to_owned();
    let problem = match err.without_snippet() {
        serde_saphyr::Error::SerdeUnknownField {
            field, expected, ..
        } => Problem::UnknownKey {
            key: field.clone(),
            suggestion: error::closest(field, expected.iter().copied()),
            expected: expected.iter().map(|s| (*s).to_owned()).collect(),
        },
        serde_saphyr::Error::SerdeUnknownVariant {
            variant, expected, ..
        } => Problem::UnknownVariant {
            variant: variant.clone(),
            suggestion: error::closest(variant, expected.iter().copied()),
            expected: expected.iter().map(|s| (*s).to_owned()).collect(),
        },
        serde_saphyr::Error::SerdeMissingField { field, .. } => {
            // A block mapping is reported at its first key: name the mapping, not that key.
            if let Some(first_key) = index.key_at(pos) {
                key_path = parent(first_key).to_owned();
            }
            Problem::MissingKey {
                key: field.to_string(),
            }
        }
        serde_saphyr::Error::ExpectedMappingEndAfterEnumVariantValue { .. } => {
            Problem::SecondAlternative {
                key: last_segment(&key_path).to_owned(),
            }
        }
        serde_saphyr::Error::InvalidScalar { ty, .. } => Problem::WrongType {
            expected: scalar_kind(ty).unwrap_or("a different kind of value"),
        },
        other => {
            let message = serde_saphyr::UserMessageFormatter.format_message(other);
            Problem::Syntax {
                message: message
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect(),
            }
        }
    };
    ConfigError::parse_at(origin, pos, key_path, problem)
}

fn parent(path: &str) -> &str {
    path.rfind(['.', '['])
        .map_or("(document)", |cut| &path[..cut])
}

fn last_segment(path: &str) -> &str {
    path.rfind('.').map_or(path, |cut| &path[cut + 1..])
}

/// What a Rust scalar type means to someone writing the file (`None`: not a scalar type).
fn scalar_kind(ty: &str) -> Option<&'static str> {
    match ty {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => Some("a whole number ≥ 0"),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => Some("a whole number"),
        "f32" | "f64" => Some("a number"),
        "bool" => Some("true or false"),
        _ => None,
    }
}

impl Config {
    /// One line per service, for `hestia config check`:
    /// `echo: command start, http readiness, idle 5m, queue 100, machine -`.
    pub fn summary_lines(&self) -> Vec<String> {
        self.engine
            .services
            .iter()
            .map(|svc| {
                let readiness = match &svc.readiness {
                    ReadinessSpec::Http(_) => "http readiness".to_owned(),
                    ReadinessSpec::Tcp(_) => "tcp readiness".to_owned(),
                    ReadinessSpec::Warmup(d) => format!("warm-up {}", human_duration(*d)),
                };
                let idle = svc
                    .idle_timeout
                    .map_or_else(|| "never".to_owned(), human_duration);
                let machine = if svc.machines.is_empty() {
                    "-".to_owned()
                } else {
                    svc.machines.join(",")
                };
                format!(
                    "{}: {} start, {readiness}, idle {idle}, queue {}, machine {machine}",
                    svc.id,
                    svc.start.kind(),
                    svc.queue.size
                )
            })
            .collect()
    }
}

/// `5m`, `1m30s`, `1.5s`, `250ms`, `1h`.
fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if !ms.is_multiple_of(1000) {
        return format!("{}s", d.as_secs_f64());
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (value, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if value > 0 {
            out.push_str(&format!("{value}{unit}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_durations_when_humanised_then_they_read_naturally() {
        assert_eq!(human_duration(Duration::from_secs(300)), "5m");
        assert_eq!(human_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(human_duration(Duration::from_secs(3600)), "1h");
    }
}
