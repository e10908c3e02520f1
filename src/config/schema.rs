//! The file's shape: serde structs for each section of `hestia_config.yml`, parsed strictly
//! (`deny_unknown_fields` everywhere), rich form and Python-prototype flat keys side by side.
//! No defaults are applied here: `validate` fills them, so it can tell "unset" from "set". The
//! JSON schema (`hestia config schema`) is derived from these types.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::secret::Secret;

/// The whole file.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "hestia_config.yml",
    description = "Configuration of the Hestia gateway."
)]
pub struct RawConfig {
    /// Address the gateway listens on.
    pub listen: Option<String>,
    /// SQLite database for activity and keys.
    pub database_url: Option<String>,
    /// How long a graceful shutdown may take before remaining work is cut off.
    pub shutdown_grace_ms: Option<u64>,
    /// Largest request body the gateway accepts (`payload-too-large` beyond).
    pub max_request_body_bytes: Option<u64>,
    /// Most bytes the `/v1/requests` envelopes may hold in memory at once, all together (their
    /// request bodies and the answers being collected); an envelope that would go beyond gets
    /// 503 `overloaded` with `Retry-After`. At least 16777216 (one largest envelope).
    pub max_envelope_memory_bytes: Option<u64>,
    /// How much of a JSON request body is read for a strategy that routes by its fields
    /// (`model_router`, plugins asking for the body, `/openai/v1`); the rest streams.
    #[schemars(range(min = 1))]
    pub strategy_body_prefix_bytes: Option<u64>,
    /// Where strategy plugins live (`NAME.rhai`, used with `strategy: NAME`), relative to this
    /// file.
    pub strategies_dir: Option<PathBuf>,
    /// Limits where clients connect: timeouts and the connection cap.
    pub http: Option<RawHttp>,
    pub log: Option<RawLog>,
    pub auth: Option<RawAuth>,
    /// `Host` header values accepted (names or `name:port`, e.g. `hestia.lan`); any other is
    /// refused with 403 (DNS rebinding). Default: any host.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://app.example`) that may call Hestia from a browser page of theirs:
    /// they get CORS headers and may send state-changing requests. Default: none, no CORS.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    pub semaphore: Option<RawSemaphore>,
    /// Prototype key: same as `semaphore.base_url`.
    pub semaphore_base_url: Option<String>,
    /// Prototype key: Semaphore API timeout in seconds, fractions allowed (same as
    /// `semaphore.timeout_ms`).
    pub semaphore_timeout: Option<Seconds>,
    /// Prototype key: same as `semaphore.api_token`.
    pub semaphore_api_key: Option<Secret>,
    /// Prototype key: same as `semaphore.username`.
    pub semaphore_username: Option<String>,
    /// Prototype key: same as `semaphore.password`.
    pub semaphore_password: Option<Secret>,
    /// Machines services can run on, by id.
    #[serde(default)]
    pub machines: OrderedMap<RawMachine>,
    /// Rules choosing a machine for a service; the first match in priority order wins.
    #[serde(default)]
    pub routing_rules: Vec<RawRoutingRule>,
    /// The on-demand services, by id (the id is the `/services/<id>` path segment).
    #[serde(default)]
    pub services: OrderedMap<RawService>,
}

/// `http: {...}`: limits at the edge, so idle or slow clients cannot take the gateway down.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Http")]
pub struct RawHttp {
    /// How long a client may take to send a request head (request line and headers), counted
    /// from its first byte, or from connecting for a connection's first request.
    pub head_timeout_ms: Option<u64>,
    /// How long a connection may stay idle between two requests before it is closed.
    pub keep_alive_timeout_ms: Option<u64>,
    /// How long a request body may go without a byte while it is being read; then the request
    /// is answered 408.
    pub body_timeout_ms: Option<u64>,
    /// Most client connections open at once; at the cap the longest-silent one is closed to make
    /// room. Default: from the open-files limit (raised to its hard limit at start), limit − 64
    /// minus the requests the services' `max_concurrency` lets in flight to backends (their sum,
    /// at most half: (limit − 64) / 2 when a service has no limit).
    pub max_connections: Option<u64>,
}

/// `log: {level, format}`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Log")]
pub struct RawLog {
    /// A tracing filter (`info`, `hestia=debug,sqlx=warn`).
    pub level: Option<String>,
    pub format: Option<RawLogFormat>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "LogFormat")]
pub enum RawLogFormat {
    Pretty,
    Json,
}

/// `waiting_page` of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "WaitingPage")]
pub enum RawWaitingPage {
    Auto,
    Off,
}

/// `auth: {enabled, dashboard_username, dashboard_password_hash, keys, public_metrics}`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Auth")]
pub struct RawAuth {
    /// Require an API key (or a dashboard login) on every route but /healthz and /readyz.
    pub enabled: Option<bool>,
    pub dashboard_username: Option<String>,
    /// Argon2 PHC string from `hestia hash-password` (or `HESTIA_DASHBOARD_PASSWORD_HASH`).
    pub dashboard_password_hash: Option<Secret>,
    /// API keys given as SHA-256 digests (for containers; `hestia keys create` keeps its keys
    /// in the database instead).
    #[serde(default)]
    pub keys: Vec<RawAuthKey>,
    /// Serve /metrics without a key (for a Prometheus that cannot send one).
    pub public_metrics: Option<bool>,
    /// Failed attempts (keys, logins) one client address may make before it gets 429; one
    /// more is allowed every 6 s.
    pub max_failed_attempts: Option<u32>,
}

/// One API key from the config: `{name, sha256, scopes}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "AuthKey")]
pub struct RawAuthKey {
    /// Shown in logs and events instead of the key.
    pub name: String,
    /// Hex SHA-256 of the key (`printf %s "$KEY" | sha256sum`).
    pub sha256: String,
    /// `proxy:<service|*>`, `control:<service|*>`, `read`, `admin`.
    pub scopes: Vec<String>,
}

/// `semaphore: {...}`: the Semaphore (Ansible UI) server used by `semaphore` starters.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Semaphore")]
pub struct RawSemaphore {
    pub base_url: Option<String>,
    pub api_token: Option<Secret>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub project_id: Option<i64>,
    /// Timeout of one API call.
    pub timeout_ms: Option<u64>,
}

/// One machine.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Machine")]
pub struct RawMachine {
    pub role: Option<RawRole>,
    /// Host name or IP, substituted for `{address}`. Required unless the role is `local`
    /// (default `127.0.0.1`).
    pub address: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub wake: Option<RawWake>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "Role")]
pub enum RawRole {
    Local,
    Remote,
    Hpc,
    Cloud,
}

/// How to wake a sleeping machine: `{wol: {...}}` or `{semaphore: {...}}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[schemars(rename = "Wake")]
pub enum RawWake {
    Wol(RawWol),
    Semaphore(RawSemaphoreTask),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Wol")]
pub struct RawWol {
    /// `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// `ip:port` the magic packet goes to.
    pub broadcast: Option<String>,
}

/// `{name, priority, match, target}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RoutingRule")]
pub struct RawRoutingRule {
    pub name: String,
    /// Lower runs first; unique across rules.
    pub priority: i64,
    /// Empty fields match every service.
    #[serde(rename = "match", default)]
    pub matches: RawRuleMatch,
    pub target: RawTarget,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RuleMatch")]
pub struct RawRuleMatch {
    /// Service ids.
    #[serde(default)]
    pub services: Vec<String>,
    /// The service must carry all of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `{machine: id}`, `{role: ...}` or `{tags: [...]}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[schemars(rename = "Target")]
pub enum RawTarget {
    Machine(String),
    Role(RawRole),
    Tags(Vec<String>),
}

/// One service: rich keys and the prototype's flat keys.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Service")]
pub struct RawService {
    /// Where requests go; may hold `{address}` (the chosen machine's address).
    pub base_url: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// How to start it; omitted = managed elsewhere, only wait for readiness.
    pub start: Option<RawStarter>,
    /// How to stop it; omitted = the starter's own stop (a command's process group is signalled).
    pub stop: Option<RawStarter>,
    /// Exactly one of `http`, `tcp` or `warmup_ms`.
    pub readiness: Option<RawReadiness>,
    /// How long one attempt (start + readiness) may take.
    pub start_timeout_ms: Option<u64>,
    pub retry: Option<RawRetry>,
    /// Used when every start attempt failed.
    pub fallback_url: Option<String>,
    /// Stop after this long without requests; 0 = never.
    #[schemars(range(min = 0))]
    pub idle_timeout_ms: Option<i64>,
    /// Most requests waiting while the service starts.
    #[schemars(range(min = 1))]
    pub queue_size: Option<i64>,
    /// How long a request may wait in the queue, in seconds (fractions allowed).
    pub request_timeout_seconds: Option<Seconds>,
    /// The one machine it runs on.
    pub machine: Option<String>,
    /// Candidate machines, in order of preference.
    pub machines: Option<Vec<String>>,
    /// Extra upstream instances; a strategy picks one per request.
    #[serde(default)]
    pub instances: Vec<RawInstance>,
    /// Per-request strategy: a built-in (`first_healthy`, `round_robin`, `weighted`,
    /// `least_pending`, `model_router`, `prefer_awake`) or a plugin `strategies_dir/NAME.rhai`.
    /// Default `first_healthy`, or `model_router` when `routing` is set.
    pub strategy: Option<String>,
    /// The built-in that decides when the strategy has no opinion (an unmapped model) or fails.
    pub fallback_strategy: Option<String>,
    /// How long the upstream may take to start answering a request (`upstream-timeout`).
    pub upstream_timeout_ms: Option<u64>,
    /// Model names this service serves on the OpenAI-compatible endpoint (`/openai/v1`): a
    /// request whose body names one of them goes here. Unique across services.
    #[serde(default)]
    pub models: Vec<String>,
    /// Speak HTTP/2 (h2c, prior knowledge) to the backend, for those that need it (gRPC).
    pub upstream_http2: Option<bool>,
    /// Most requests in flight to the backend at once; the others wait in the queue (up to
    /// `queue_size` of them, for `request_timeout_seconds`). 0 = no limit.
    #[schemars(range(min = 0))]
    pub max_concurrency: Option<i64>,
    /// Pick the upstream from a JSON body key (strategy `model_router`).
    pub routing: Option<RawModelRouting>,
    /// What a browser opening the cold (or starting) service gets: `auto` = at once, a small
    /// page showing the start's progress that turns into the service's page when it is ready;
    /// `off` = the request waits in the queue like any API client's.
    pub waiting_page: Option<RawWaitingPage>,

    /// Prototype key: readiness URL polled until it answers 2xx/3xx.
    pub health_url: Option<String>,
    /// Prototype key: ready this long after start when there is no probe.
    pub warmup_ms: Option<u64>,
    /// Prototype key: same as `retry.count`.
    pub retry_count: Option<u32>,
    /// Prototype key: same as `retry.delay_ms`.
    pub retry_delay_ms: Option<u64>,
    /// Prototype key: start (and stop) through Semaphore templates.
    pub semaphore_enabled: Option<bool>,
    /// Prototype key: a configured machine id, else passed to the task as `machine_id`.
    pub semaphore_machine_id: Option<String>,
    pub semaphore_start_template_id: Option<i64>,
    pub semaphore_stop_template_id: Option<i64>,
    /// Prototype key: task timeout in seconds (fractions allowed).
    pub semaphore_task_timeout: Option<Seconds>,
    /// Prototype key: task poll interval in seconds (fractions allowed, e.g. `2.0`).
    pub semaphore_poll_interval: Option<Seconds>,
}

/// A start or stop mechanism.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[schemars(rename = "Starter")]
pub enum RawStarter {
    /// Managed elsewhere: nothing to run.
    None,
    Command(RawCommand),
    Http(RawHttpHook),
    Semaphore(RawSemaphoreTask),
}

/// A local process Hestia owns. `program` and `args` may hold `{hestia_exe}` and `{address}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Command")]
pub struct RawCommand {
    pub program: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (relative to where Hestia runs).
    pub cwd: Option<PathBuf>,
    /// Time between SIGTERM and SIGKILL when stopping.
    pub stop_grace_ms: Option<u64>,
}

/// An HTTP webhook.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "HttpHook")]
pub struct RawHttpHook {
    pub url: String,
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    pub timeout_ms: Option<u64>,
}

/// A Semaphore template run as a task.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SemaphoreTask")]
pub struct RawSemaphoreTask {
    pub template_id: i64,
    /// Extra keys for the task's `environment`.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    pub task_timeout_ms: Option<u64>,
    pub poll_interval_ms: Option<u64>,
}

/// `{http: {...}}`, `{tcp: {...}}` or `{warmup_ms: N}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[schemars(rename = "Readiness")]
pub enum RawReadiness {
    Http(RawHttpProbe),
    Tcp(RawTcpProbe),
    /// No probe: ready this long after the start completed.
    WarmupMs(u64),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "HttpProbe")]
pub struct RawHttpProbe {
    /// May hold `{address}`.
    pub url: String,
    /// A code (`200`) or an inclusive range (`"200-299"`).
    pub expect_status: Option<RawStatus>,
    /// Poll interval while starting.
    pub interval_ms: Option<u64>,
    /// Timeout of one probe.
    pub timeout_ms: Option<u64>,
    /// Health-check interval while ready.
    pub health_interval_ms: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TcpProbe")]
pub struct RawTcpProbe {
    /// `host:port`; may hold `{address}`.
    pub address: String,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub health_interval_ms: Option<u64>,
}

/// `{count, delay_ms, backoff, max_delay_ms}`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Retry")]
pub struct RawRetry {
    /// Extra attempts after the first.
    pub count: Option<u32>,
    /// Delay before the first retry.
    pub delay_ms: Option<u64>,
    /// Each further retry waits this many times longer (≥ 1).
    pub backoff: Option<f64>,
    pub max_delay_ms: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Instance")]
pub struct RawInstance {
    pub url: String,
    pub weight: Option<u32>,
    pub region: Option<String>,
    /// A configured machine it runs on (`prefer_awake` prefers awake machines).
    pub machine: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ModelRouting")]
pub struct RawModelRouting {
    /// JSON body key holding the model name.
    pub model_key: Option<String>,
    /// Model name → upstream URL.
    #[serde(default)]
    pub by_model: BTreeMap<String, String>,
}

/// An expected status: a code or a `"min-max"` range string.
#[derive(Debug, Clone, PartialEq)]
pub enum RawStatus {
    Code(i64),
    Range(String),
}

impl<'de> Deserialize<'de> for RawStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawStatus, D::Error> {
        struct StatusVisitor;
        impl Visitor<'_> for StatusVisitor {
            type Value = RawStatus;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status code like 200 or a range like \"200-299\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawStatus, E> {
                Ok(RawStatus::Code(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawStatus, E> {
                Ok(RawStatus::Code(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawStatus, E> {
                Ok(RawStatus::Range(v.to_owned()))
            }
        }
        deserializer.deserialize_any(StatusVisitor)
    }
}

impl JsonSchema for RawStatus {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("ExpectStatus")
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A status code (200) or an inclusive range (\"200-299\").",
            "anyOf": [
                {"type": "integer", "minimum": 100, "maximum": 599},
                {"type": "string", "pattern": "^[1-5][0-9][0-9](-[1-5][0-9][0-9])?$"}
            ]
        })
    }
}

/// A number of seconds as the prototype wrote them: whole (`30`) or with a fraction (`2.0`,
/// `0.5`). Checked (finite, not negative) and turned into a `Duration` by `validate`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Seconds(pub f64);

impl JsonSchema for Seconds {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Seconds")
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "number", "minimum": 0})
    }
}

/// A mapping that keeps the file's order (services and machines are listed as written).
#[derive(Debug)]
pub struct OrderedMap<T>(pub Vec<(String, T)>);

impl<T> Default for OrderedMap<T> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OrderedMap<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<OrderedMap<T>, D::Error> {
        struct MapVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for MapVisitor<T> {
            type Value = OrderedMap<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of ids to entries")
            }
            fn visit_unit<E: de::Error>(self) -> Result<OrderedMap<T>, E> {
                Ok(OrderedMap::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedMap<T>, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, T>()? {
                    entries.push(entry);
                }
                Ok(OrderedMap(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

impl<T: JsonSchema> JsonSchema for OrderedMap<T> {
    fn schema_name() -> Cow<'static, str> {
        BTreeMap::<String, T>::schema_name()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        BTreeMap::<String, T>::json_schema(generator)
    }
}
