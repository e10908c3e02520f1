//! Every default of the configuration file, in one place: `validate` applies these when a key is
//! unset, and the JSON Schema (`hestia config schema`, so also docs/configuration.md, which a
//! test checks against it) states them from [`STATED`]. Change a default here and nowhere else.

use serde_json::{Value, json};

pub const LISTEN: &str = "0.0.0.0:8080";
pub const DATABASE_URL: &str = "sqlite://hestia.db?mode=rwc";
pub const SHUTDOWN_GRACE_MS: u64 = 10_000;
pub const MAX_REQUEST_BODY_BYTES: u64 = 100 * 1024 * 1024;
pub const MAX_ENVELOPE_MEMORY_BYTES: u64 = 256 * 1024 * 1024;
pub const STRATEGY_BODY_PREFIX_BYTES: usize = 64 * 1024;
/// Beside the configuration file.
pub const STRATEGIES_DIR: &str = "strategies";

pub const HEAD_TIMEOUT_MS: u64 = 30_000;
pub const KEEP_ALIVE_TIMEOUT_MS: u64 = 75_000;
pub const BODY_TIMEOUT_MS: u64 = 60_000;

pub const LOG_LEVEL: &str = "info";
pub const LOG_FORMAT: &str = "pretty";

pub const AUTH_ENABLED: bool = false;
pub const DASHBOARD_USERNAME: &str = "admin";
pub const PUBLIC_METRICS: bool = false;
/// Failed attempts per client address before 429 (the limiter's burst).
pub const MAX_FAILED_ATTEMPTS: u32 = crate::auth::limiter::BURST;

pub const SEMAPHORE_PROJECT_ID: i64 = 1;
pub const SEMAPHORE_TIMEOUT_MS: u64 = 10_000;

pub const MACHINE_ROLE: &str = "local";
/// The address of a `local` machine that names none.
pub const LOCAL_ADDRESS: &str = "127.0.0.1";
pub const WOL_BROADCAST: &str = "255.255.255.255:9";

pub const START_TIMEOUT_MS: u64 = 120_000;
/// 0 would be "never stop".
pub const IDLE_TIMEOUT_MS: i64 = 300_000;
pub const QUEUE_SIZE: usize = 100;
pub const REQUEST_TIMEOUT_SECONDS: u64 = 60;
pub const UPSTREAM_TIMEOUT_MS: u64 = 300_000;
pub const RETRY_COUNT: u32 = 2;
pub const RETRY_DELAY_MS: u64 = 1_000;
pub const RETRY_BACKOFF: f64 = 1.0;
pub const RETRY_MAX_DELAY_MS: u64 = 30_000;
pub const STRATEGY: &str = "first_healthy";
pub const WAITING_PAGE: &str = "auto";
pub const UPSTREAM_HTTP2: bool = false;
/// Requests in flight to one backend at once (the engine's own default).
pub const MAX_CONCURRENCY: usize = hestia_actors::spec::DEFAULT_MAX_CONCURRENCY;
pub const INSTANCE_WEIGHT: u32 = 1;
pub const MODEL_KEY: &str = "model";

pub const STOP_GRACE_MS: u64 = 5_000;
pub const HOOK_METHOD: &str = "POST";
pub const HOOK_TIMEOUT_MS: u64 = 10_000;
pub const TASK_TIMEOUT_MS: u64 = 600_000;
pub const POLL_INTERVAL_MS: u64 = 2_000;
/// The prototype's flat `semaphore_task_timeout` (seconds) when unset.
pub const PROTOTYPE_TASK_TIMEOUT_S: u64 = 300;
/// The prototype's flat `semaphore_poll_interval` (seconds) when unset.
pub const PROTOTYPE_POLL_INTERVAL_S: u64 = 2;

/// Accepted status codes of an HTTP probe, inclusive.
pub const EXPECT_STATUS: (u16, u16) = (200, 399);
pub const PROBE_INTERVAL_MS: u64 = 20;
pub const PROBE_TIMEOUT_MS: u64 = 1_000;
pub const HEALTH_INTERVAL_MS: u64 = 10_000;

/// A default as the schema states it.
#[derive(Debug, Clone, Copy)]
pub enum Stated {
    Number(u64),
    Signed(i64),
    Float(f64),
    Flag(bool),
    /// Shown in backquotes.
    Text(&'static str),
    /// Shown as it is (`200-399`), given as a string default.
    Plain(&'static str),
}

/// The defaults the schema states: `(section, key, default, words after it)`. The section is the
/// schema's name for it (`$defs`), empty for the top level.
pub const STATED: &[(&str, &str, Stated, &str)] = &[
    ("", "listen", Stated::Text(LISTEN), ""),
    ("", "database_url", Stated::Text(DATABASE_URL), ""),
    (
        "",
        "shutdown_grace_ms",
        Stated::Number(SHUTDOWN_GRACE_MS),
        "",
    ),
    (
        "",
        "max_request_body_bytes",
        Stated::Number(MAX_REQUEST_BODY_BYTES),
        " (100 MiB)",
    ),
    (
        "",
        "max_envelope_memory_bytes",
        Stated::Number(MAX_ENVELOPE_MEMORY_BYTES),
        " (256 MiB)",
    ),
    (
        "",
        "strategy_body_prefix_bytes",
        Stated::Number(STRATEGY_BODY_PREFIX_BYTES as u64),
        "",
    ),
    (
        "",
        "strategies_dir",
        Stated::Text(STRATEGIES_DIR),
        " beside it",
    ),
    (
        "Http",
        "head_timeout_ms",
        Stated::Number(HEAD_TIMEOUT_MS),
        "",
    ),
    (
        "Http",
        "keep_alive_timeout_ms",
        Stated::Number(KEEP_ALIVE_TIMEOUT_MS),
        "",
    ),
    (
        "Http",
        "body_timeout_ms",
        Stated::Number(BODY_TIMEOUT_MS),
        "",
    ),
    ("Log", "level", Stated::Text(LOG_LEVEL), ""),
    ("Log", "format", Stated::Text(LOG_FORMAT), ""),
    ("Auth", "enabled", Stated::Flag(AUTH_ENABLED), ""),
    (
        "Auth",
        "dashboard_username",
        Stated::Text(DASHBOARD_USERNAME),
        "",
    ),
    ("Auth", "public_metrics", Stated::Flag(PUBLIC_METRICS), ""),
    (
        "Auth",
        "max_failed_attempts",
        Stated::Number(MAX_FAILED_ATTEMPTS as u64),
        "",
    ),
    (
        "Semaphore",
        "project_id",
        Stated::Signed(SEMAPHORE_PROJECT_ID),
        "",
    ),
    (
        "Semaphore",
        "timeout_ms",
        Stated::Number(SEMAPHORE_TIMEOUT_MS),
        "",
    ),
    ("Machine", "role", Stated::Text(MACHINE_ROLE), ""),
    ("Wol", "broadcast", Stated::Text(WOL_BROADCAST), ""),
    (
        "Service",
        "start_timeout_ms",
        Stated::Number(START_TIMEOUT_MS),
        "",
    ),
    (
        "Service",
        "idle_timeout_ms",
        Stated::Signed(IDLE_TIMEOUT_MS),
        "",
    ),
    (
        "Service",
        "queue_size",
        Stated::Number(QUEUE_SIZE as u64),
        "",
    ),
    (
        "Service",
        "request_timeout_seconds",
        Stated::Number(REQUEST_TIMEOUT_SECONDS),
        "",
    ),
    (
        "Service",
        "upstream_timeout_ms",
        Stated::Number(UPSTREAM_TIMEOUT_MS),
        "",
    ),
    (
        "Service",
        "max_concurrency",
        Stated::Number(MAX_CONCURRENCY as u64),
        "",
    ),
    ("Service", "fallback_strategy", Stated::Text(STRATEGY), ""),
    ("Service", "waiting_page", Stated::Text(WAITING_PAGE), ""),
    (
        "Service",
        "upstream_http2",
        Stated::Flag(UPSTREAM_HTTP2),
        " (every request goes upstream as HTTP/1.1, whatever the client spoke)",
    ),
    (
        "Service",
        "semaphore_task_timeout",
        Stated::Number(PROTOTYPE_TASK_TIMEOUT_S),
        "",
    ),
    (
        "Service",
        "semaphore_poll_interval",
        Stated::Number(PROTOTYPE_POLL_INTERVAL_S),
        "",
    ),
    ("Retry", "count", Stated::Number(RETRY_COUNT as u64), ""),
    ("Retry", "delay_ms", Stated::Number(RETRY_DELAY_MS), ""),
    ("Retry", "backoff", Stated::Float(RETRY_BACKOFF), ""),
    (
        "Retry",
        "max_delay_ms",
        Stated::Number(RETRY_MAX_DELAY_MS),
        "",
    ),
    (
        "Instance",
        "weight",
        Stated::Number(INSTANCE_WEIGHT as u64),
        "",
    ),
    ("ModelRouting", "model_key", Stated::Text(MODEL_KEY), ""),
    (
        "Command",
        "stop_grace_ms",
        Stated::Number(STOP_GRACE_MS),
        "",
    ),
    ("HttpHook", "method", Stated::Text(HOOK_METHOD), ""),
    (
        "HttpHook",
        "timeout_ms",
        Stated::Number(HOOK_TIMEOUT_MS),
        "",
    ),
    (
        "SemaphoreTask",
        "task_timeout_ms",
        Stated::Number(TASK_TIMEOUT_MS),
        "",
    ),
    (
        "SemaphoreTask",
        "poll_interval_ms",
        Stated::Number(POLL_INTERVAL_MS),
        "",
    ),
    ("HttpProbe", "expect_status", Stated::Plain("200-399"), ""),
    (
        "HttpProbe",
        "interval_ms",
        Stated::Number(PROBE_INTERVAL_MS),
        "",
    ),
    (
        "HttpProbe",
        "timeout_ms",
        Stated::Number(PROBE_TIMEOUT_MS),
        "",
    ),
    (
        "HttpProbe",
        "health_interval_ms",
        Stated::Number(HEALTH_INTERVAL_MS),
        "",
    ),
    (
        "TcpProbe",
        "interval_ms",
        Stated::Number(PROBE_INTERVAL_MS),
        "",
    ),
    (
        "TcpProbe",
        "timeout_ms",
        Stated::Number(PROBE_TIMEOUT_MS),
        "",
    ),
    (
        "TcpProbe",
        "health_interval_ms",
        Stated::Number(HEALTH_INTERVAL_MS),
        "",
    ),
];

impl Stated {
    fn json(self) -> Value {
        match self {
            Stated::Number(n) => json!(n),
            Stated::Signed(n) => json!(n),
            Stated::Float(x) => json!(x),
            Stated::Flag(b) => json!(b),
            Stated::Text(s) | Stated::Plain(s) => json!(s),
        }
    }

    fn words(self) -> String {
        match self {
            Stated::Number(n) => n.to_string(),
            Stated::Signed(n) => n.to_string(),
            Stated::Float(x) => format!("{x:?}"),
            Stated::Flag(b) => b.to_string(),
            Stated::Text(s) => format!("`{s}`"),
            Stated::Plain(s) => s.to_owned(),
        }
    }
}

/// Writes [`STATED`] into the schema: a `default` on each key, and `Default X.` ending its
/// description. Panics on a key the schema does not have (a test runs this).
pub fn state_in(schema: &mut Value) {
    for (section, key, default, after) in STATED {
        let owner = if section.is_empty() {
            &mut *schema
        } else {
            &mut schema["$defs"][*section]
        };
        let property = owner["properties"]
            .get_mut(*key)
            .unwrap_or_else(|| panic!("the schema has no `{section}.{key}` to state a default on"));
        let sentence = format!("Default {}{after}.", default.words());
        let description = match property["description"].as_str() {
            Some(text) if !text.is_empty() => format!("{text}\n{sentence}"),
            _ => sentence,
        };
        property["description"] = Value::String(description);
        property["default"] = default.json();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hestia_actors::spec::{QueueSpec, StartPolicy, StatusRange};

    use super::*;

    #[test]
    fn given_the_engine_defaults_then_the_configuration_states_the_same() {
        let policy = StartPolicy::default();
        assert_eq!(policy.retry_count, RETRY_COUNT);
        assert_eq!(policy.retry_delay, Duration::from_millis(RETRY_DELAY_MS));
        assert_eq!(policy.backoff_factor, RETRY_BACKOFF);
        assert_eq!(
            policy.max_retry_delay,
            Duration::from_millis(RETRY_MAX_DELAY_MS)
        );
        assert_eq!(
            policy.start_timeout,
            Duration::from_millis(START_TIMEOUT_MS)
        );
        let queue = QueueSpec::default();
        assert_eq!(queue.size, QUEUE_SIZE);
        assert_eq!(queue.timeout, Duration::from_secs(REQUEST_TIMEOUT_SECONDS));
        let status = StatusRange::default();
        assert_eq!((status.min, status.max), EXPECT_STATUS);
    }

    #[test]
    fn given_the_schema_then_every_stated_default_names_a_key_it_has() {
        let schema = super::super::json_schema();
        for (section, key, default, _) in STATED {
            let owner = if section.is_empty() {
                &schema
            } else {
                &schema["$defs"][*section]
            };
            assert_eq!(owner["properties"][*key]["default"], default.json());
        }
    }
}
