//! What the engine runs: services, machines and routing rules, already validated and normalised.
//!
//! `src/config` turns the user's YAML (rich form or the Python prototype's flat keys) into these
//! types; the engine never sees YAML. Durations are `Duration`, URLs are parsed, defaults are filled.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// Everything the engine needs to run: one entry per configured service, machine and rule.
#[derive(Debug, Clone, Default)]
pub struct EngineSpec {
    pub services: Vec<ServiceSpec>,
    pub machines: Vec<MachineSpec>,
    pub routing_rules: Vec<RoutingRuleSpec>,
    /// The Semaphore server `semaphore` starters and wake-ups talk to (`None` = not configured).
    pub semaphore: Option<SemaphoreConnection>,
    /// Where strategy plugins (`NAME.rhai`) live (`None` = no plugins).
    pub strategies_dir: Option<PathBuf>,
    /// Hestia's data directory (beside the database): services' log files go to `logs/` in it.
    pub data_dir: PathBuf,
    /// Configured secrets (tokens, passwords, header values, URL credentials, auth settings), as
    /// `src/config` found them with [`crate::redact::configured_secrets`]: the engine remembers
    /// them (and whatever that finds in this spec) so that nothing Hestia prints, stores or
    /// returns shows them (see [`crate::redact`]).
    pub secrets: Secrets,
}

/// Secret values. `Debug` shows how many, never which: a printed spec must not leak them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(Vec<String>);

impl Secrets {
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl From<Vec<String>> for Secrets {
    fn from(values: Vec<String>) -> Secrets {
        Secrets(values)
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} hidden)", self.0.len())
    }
}

/// How to reach and authenticate with Semaphore. `Debug` hides the token and the password.
#[derive(Clone, PartialEq)]
pub struct SemaphoreConnection {
    /// `http://semaphore:3000` (the `/api` prefix is added by the client).
    pub base_url: String,
    /// Sent as `Authorization: Bearer`; preferred over username/password when both are set.
    pub api_token: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Default 1.
    pub project_id: i64,
    /// Timeout of one API call. Default 10 s.
    pub timeout: Duration,
}

impl std::fmt::Debug for SemaphoreConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |secret: &Option<String>| secret.as_ref().map(|_| "***");
        f.debug_struct("SemaphoreConnection")
            .field("base_url", &self.base_url)
            .field("api_token", &hidden(&self.api_token))
            .field("username", &self.username)
            .field("password", &hidden(&self.password))
            .field("project_id", &self.project_id)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One on-demand service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub id: String,
    /// Where requests go. May hold `{address}`, replaced by the chosen machine's address.
    pub base_url: String,
    /// How to bring the service up. `StarterSpec::None` = managed elsewhere: only wait for readiness.
    pub start: StarterSpec,
    /// How to bring it down. `None` = the starter's own stop (a `command` kills its process group).
    pub stop: Option<StarterSpec>,
    pub readiness: ReadinessSpec,
    pub policy: StartPolicy,
    pub queue: QueueSpec,
    /// Stop after this long without requests. `None` = never (`idle_timeout_ms: 0`).
    pub idle_timeout: Option<Duration>,
    /// Candidate machines in preference order (empty = no machine, just `base_url`).
    pub machines: Vec<String>,
    pub tags: Vec<String>,
    /// Extra upstream instances; a strategy picks one per request (empty = `base_url` only).
    pub instances: Vec<InstanceSpec>,
    /// Name of the per-request strategy (`first_healthy` when `None`).
    pub strategy: Option<String>,
    /// The built-in deciding when the strategy has no opinion or fails (`first_healthy` when
    /// `None`).
    pub fallback_strategy: Option<String>,
    /// Model-based routing from the prototype: JSON body key and model → URL map.
    pub model_routing: Option<ModelRouting>,
    /// Model names this service serves on the OpenAI-compatible endpoint (`/openai/v1`).
    pub models: Vec<String>,
    /// How long the upstream may take to answer (until its response headers). Default 300 s.
    pub upstream_timeout: Duration,
    /// Browsers navigating to it while it is not ready get a waiting page at once
    /// (`waiting_page: auto`, the default) instead of waiting in the queue (`off`).
    pub waiting_page: bool,
    /// Speak HTTP/2 (h2c, prior knowledge) to the upstream instead of HTTP/1.1 (gRPC backends).
    pub upstream_http2: bool,
    /// Most requests in flight to the backend at once (`max_concurrency`, default
    /// [`DEFAULT_MAX_CONCURRENCY`]); the others wait for a slot in arrival order, within the
    /// queue's size and deadline. `None` = no limit (`max_concurrency: 0`).
    pub max_concurrency: Option<usize>,
}

/// `max_concurrency` when the configuration says nothing: enough for a busy HTTP backend on a
/// keep-alive pool (nginx's `keepalive 64`), few enough that releasing thousands of queued
/// requests at once does not open thousands of connections to a backend that just started.
pub const DEFAULT_MAX_CONCURRENCY: usize = 64;

/// A start (or stop) mechanism.
#[derive(Debug, Clone, PartialEq)]
pub enum StarterSpec {
    /// Managed elsewhere: Hestia only waits for readiness (the prototype's behaviour).
    None,
    /// A local process Hestia owns.
    Command(CommandSpec),
    /// An HTTP webhook.
    Http(HttpHookSpec),
    /// A Semaphore task running a template.
    Semaphore(SemaphoreTaskSpec),
}

impl StarterSpec {
    /// The short name used in logs, status and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            StarterSpec::None => "none",
            StarterSpec::Command(_) => "command",
            StarterSpec::Http(_) => "http",
            StarterSpec::Semaphore(_) => "semaphore",
        }
    }
}

/// A local process. `program` and `args` may hold `{hestia_exe}` (this binary) and `{address}`.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandSpec {
    pub program: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    /// Time between SIGTERM and SIGKILL when stopping. Default 5 s.
    pub stop_grace: Duration,
}

/// An HTTP call that starts or stops a service elsewhere.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpHookSpec {
    pub url: String,
    pub method: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    pub timeout: Duration,
}

/// A Semaphore template run as a task.
#[derive(Debug, Clone, PartialEq)]
pub struct SemaphoreTaskSpec {
    pub template_id: i64,
    /// Extra keys merged into the task's `environment` JSON string.
    pub environment: BTreeMap<String, String>,
    pub task_timeout: Duration,
    pub poll_interval: Duration,
}

/// How to tell that a service is ready.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadinessSpec {
    /// Poll an URL until its status is in `expect_status`.
    Http(HttpProbeSpec),
    /// Poll a TCP connect.
    Tcp(TcpProbeSpec),
    /// No probe: ready this long after the start completed.
    Warmup(Duration),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpProbeSpec {
    /// May hold `{address}`.
    pub url: String,
    pub expect_status: StatusRange,
    /// Poll interval while starting. Default 20 ms: a cold start costs little beyond the boot.
    pub interval: Duration,
    /// Timeout of one probe. Default 1 s.
    pub timeout: Duration,
    /// Health-check interval while ready. Default 10 s.
    pub health_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TcpProbeSpec {
    /// `host:port`; may hold `{address}`.
    pub address: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub health_interval: Duration,
}

/// An inclusive range of acceptable HTTP status codes (default 200..=399).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StatusRange {
    pub min: u16,
    pub max: u16,
}

impl Default for StatusRange {
    fn default() -> Self {
        StatusRange { min: 200, max: 399 }
    }
}

impl StatusRange {
    pub fn contains(&self, status: u16) -> bool {
        (self.min..=self.max).contains(&status)
    }
}

/// Retry, then fallback, then a clear error (FR-010).
#[derive(Debug, Clone, PartialEq)]
pub struct StartPolicy {
    /// Extra attempts after the first, on the same target. Default 2.
    pub retry_count: u32,
    /// Delay before the first retry. Default 1 s.
    pub retry_delay: Duration,
    /// Each further retry waits this many times longer (1.0 = fixed delay).
    pub backoff_factor: f64,
    /// Upper bound of a retry delay. Default 30 s.
    pub max_retry_delay: Duration,
    /// How long one attempt (start + readiness) may take. Default 120 s.
    pub start_timeout: Duration,
    /// Used once every machine has failed (or when there are none).
    pub fallback_url: Option<String>,
}

impl Default for StartPolicy {
    fn default() -> Self {
        StartPolicy {
            retry_count: 2,
            retry_delay: Duration::from_secs(1),
            backoff_factor: 1.0,
            max_retry_delay: Duration::from_secs(30),
            start_timeout: Duration::from_secs(120),
            fallback_url: None,
        }
    }
}

/// The bounded FIFO in front of a cold service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueSpec {
    /// Most requests waiting at once. Default 100.
    pub size: usize,
    /// How long one request may wait. Default 60 s (`request_timeout_seconds`).
    pub timeout: Duration,
}

impl Default for QueueSpec {
    fn default() -> Self {
        QueueSpec {
            size: 100,
            timeout: Duration::from_secs(60),
        }
    }
}

/// One upstream instance of a multi-instance service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceSpec {
    pub url: String,
    pub weight: u32,
    pub region: Option<String>,
    /// The configured machine it runs on (`prefer_awake` prefers awake machines).
    pub machine: Option<String>,
}

/// Pick the upstream from a JSON body key (the prototype's `routing: {model_key, by_model}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRouting {
    pub model_key: String,
    pub by_model: BTreeMap<String, String>,
}

/// A machine services can run on.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineSpec {
    pub id: String,
    pub role: MachineRole,
    /// Host name or IP, substituted for `{address}` in service URLs.
    pub address: String,
    pub tags: Vec<String>,
    pub wake: Option<WakeSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MachineRole {
    Local,
    Remote,
    Hpc,
    Cloud,
}

impl MachineRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MachineRole::Local => "local",
            MachineRole::Remote => "remote",
            MachineRole::Hpc => "hpc",
            MachineRole::Cloud => "cloud",
        }
    }
}

/// How to wake a sleeping machine before starting a service on it.
#[derive(Debug, Clone, PartialEq)]
pub enum WakeSpec {
    Wol { mac: [u8; 6], broadcast: String },
    Semaphore(SemaphoreTaskSpec),
}

/// `{name, match, target, priority}`: the first match in priority order picks the machine.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingRuleSpec {
    pub name: String,
    /// Lower runs first; unique across rules.
    pub priority: i64,
    pub matches: RuleMatch,
    pub target: RuleTarget,
}

/// Which services a rule applies to. Empty fields match everything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuleMatch {
    /// Service ids.
    pub services: Vec<String>,
    /// The service must carry all of these tags.
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RuleTarget {
    Machine(String),
    Role(MachineRole),
    /// The machine must carry all of these tags.
    Tags(Vec<String>),
}
