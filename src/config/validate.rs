//! Cross-field checks and normalisation: raw file structs plus environment overrides in, a
//! [`Config`] with a complete `EngineSpec` out. Every problem is collected with the position of
//! the offending key, so one run reports all of them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hestia_actors::spec::{
    CommandSpec, EngineSpec, HttpHookSpec, HttpProbeSpec, InstanceSpec, MachineRole, MachineSpec,
    ModelRouting, QueueSpec, ReadinessSpec, RoutingRuleSpec, RuleMatch, RuleTarget,
    SemaphoreConnection, SemaphoreTaskSpec, ServiceSpec, StartPolicy, StarterSpec, StatusRange,
    TcpProbeSpec, WakeSpec,
};

use hestia_actors::strategy::builtin;

use super::env::{Override, Overrides};
use super::error::{Diagnostic, Origin, Problem};
use super::legacy::{self, either};
use super::schema::{
    RawAuth, RawConfig, RawHttp, RawLog, RawLogFormat, RawMachine, RawReadiness, RawRole,
    RawRoutingRule, RawSemaphoreTask, RawService, RawStarter, RawStatus, RawTarget, RawWake,
    Seconds,
};
use super::spans::KeyIndex;
use super::{AuthConfig, Config, ConfigKey, HttpConfig, LogConfig, LogFormat, SemaphoreConfig};

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://hestia.db?mode=rwc";
const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;
const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 300_000;
const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 100 * 1024 * 1024;
const DEFAULT_MAX_ENVELOPE_MEMORY_BYTES: u64 = 256 * 1024 * 1024;
const DEFAULT_BODY_PREFIX_BYTES: usize = 64 * 1024;
const DEFAULT_HEAD_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_KEEP_ALIVE_TIMEOUT_MS: u64 = 75_000;
const DEFAULT_BODY_TIMEOUT_MS: u64 = 60_000;
const DEFAULT_LOG_LEVEL: &str = "info";
const DEFAULT_IDLE_TIMEOUT_MS: i64 = 300_000;
const PROBE_INTERVAL_MS: u64 = 20;
const PROBE_TIMEOUT_MS: u64 = 1_000;
const HEALTH_INTERVAL_MS: u64 = 10_000;
const HOOK_TIMEOUT_MS: u64 = 10_000;
const TASK_TIMEOUT_MS: u64 = 600_000;
const POLL_INTERVAL_MS: u64 = 2_000;
const STOP_GRACE_MS: u64 = 5_000;
const SEMAPHORE_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_WOL_BROADCAST: &str = "255.255.255.255:9";
/// Stands in for `{address}` when checking that a URL parses.
const DUMMY_HOST: &str = "address.invalid";

/// Collects problems, each located through the document's key index.
pub(crate) struct Checker<'a> {
    file: &'a Path,
    index: &'a KeyIndex,
    pub problems: Vec<Diagnostic>,
    /// What loads but will not work as written (it is logged at start and shown by `config check`).
    pub warnings: Vec<Diagnostic>,
    /// Key paths an environment variable set, with the variable: problems there name it.
    env_keys: BTreeMap<String, String>,
}

impl<'a> Checker<'a> {
    pub fn new(file: &'a Path, index: &'a KeyIndex) -> Checker<'a> {
        Checker {
            file,
            index,
            problems: Vec::new(),
            warnings: Vec::new(),
            env_keys: BTreeMap::new(),
        }
    }

    /// `key_path` was set by the environment variable `var`.
    pub fn set_by_env(&mut self, key_path: String, var: &str) {
        self.env_keys.insert(key_path, var.to_owned());
    }

    /// A problem with the key at `key_path` (located at that key, or its closest written parent).
    pub fn report(&mut self, key_path: impl Into<String>, problem: Problem) {
        let diagnostic = self.locate(key_path.into(), problem);
        self.problems.push(diagnostic);
    }

    /// A warning about the key at `key_path`: the configuration still loads.
    pub fn warn(&mut self, key_path: impl Into<String>, problem: Problem) {
        let diagnostic = self.locate(key_path.into(), problem);
        self.warnings.push(diagnostic);
    }

    fn locate(&self, key_path: String, problem: Problem) -> Diagnostic {
        let origin = match self.env_keys.get(&key_path) {
            Some(var) => Origin::Env { var: var.clone() },
            None => {
                let pos = self.index.locate(&key_path);
                Origin::File {
                    file: self.file.to_path_buf(),
                    line: pos.line,
                    column: pos.column,
                }
            }
        };
        Diagnostic {
            origin,
            key_path,
            problem,
        }
    }

    /// A problem with an environment override of `key_path`.
    pub(crate) fn report_env(&mut self, var: &str, key_path: &str, problem: Problem) {
        let origin = Origin::Env {
            var: var.to_owned(),
        };
        self.problems.push(Diagnostic {
            origin,
            key_path: key_path.to_owned(),
            problem,
        });
    }
}

/// `parent.key`, or `key` at the top level.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// A prototype-style number of seconds (`30`, `2.0`, `0.5`): `None` when unset, or when it is not
/// a positive, representable duration (reported at `path`).
pub(crate) fn seconds(
    chk: &mut Checker<'_>,
    path: &str,
    value: Option<Seconds>,
) -> Option<Duration> {
    let Seconds(secs) = value?;
    let duration = Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero());
    if duration.is_none() {
        chk.report(
            path,
            Problem::OutOfRange {
                value: secs.to_string(),
                expected: "a number of seconds > 0 (fractions allowed, e.g. 2.5)",
            },
        );
    }
    duration
}

fn ms(value: Option<u64>, default: u64) -> Duration {
    Duration::from_millis(value.unwrap_or(default))
}

/// Normalises `raw` with `env` applied. The result is only meaningful when `chk` has no problems.
pub(crate) fn build(
    mut raw: RawConfig,
    env: &Overrides,
    source_path: &Path,
    chk: &mut Checker<'_>,
) -> Config {
    super::service_env::apply(&mut raw, &env.services, chk);
    let listen = listen(&raw, env, chk);
    let database_url = database_url(&raw, env, chk);
    let log = log(raw.log.as_ref(), env, chk);
    let auth = auth(raw.auth.as_ref(), env, chk);
    let allowed_hosts = allowed_hosts(&raw.allowed_hosts, chk);
    let cors_origins = cors_origins(&raw.cors_origins, chk);
    let semaphore = semaphore(&raw, env, chk);

    let machines = machines(&raw, chk);
    let machine_ids: Vec<&str> = raw.machines.0.iter().map(|(id, _)| id.as_str()).collect();
    let service_ids: Vec<&str> = raw.services.0.iter().map(|(id, _)| id.as_str()).collect();
    let routing_rules = routing_rules(&raw.routing_rules, &machine_ids, &service_ids, chk);
    let strategies_dir = strategies_dir(&raw, source_path);
    let plugins = plugin_names(&strategies_dir);
    let services: Vec<ServiceSpec> = raw
        .services
        .0
        .iter()
        .map(|(id, svc)| service(id, svc, &machine_ids, &plugins, chk))
        .collect();

    check_models(&raw, chk);
    match &semaphore {
        None => {
            for (path, _) in semaphore_users(&raw) {
                chk.report(path, semaphore_missing());
            }
        }
        // Credentials often come later (a secret store, the environment of another deployment):
        // such a service fails to start, saying why; the others run.
        Some(s) if !s.has_credentials() => {
            for (path, user) in semaphore_users(&raw) {
                let base_url = s.base_url.clone();
                chk.warn(path, Problem::SemaphoreNoCredentials { user, base_url });
            }
        }
        Some(_) => {}
    }

    let data_dir = hestia_actors::persistence::data_dir(&database_url);
    Config {
        listen,
        database_url,
        shutdown_grace: ms(raw.shutdown_grace_ms, DEFAULT_SHUTDOWN_GRACE_MS),
        max_request_body_bytes: raw
            .max_request_body_bytes
            .unwrap_or(DEFAULT_MAX_REQUEST_BODY_BYTES),
        max_envelope_memory_bytes: max_envelope_memory_bytes(&raw, chk),
        strategy_body_prefix_bytes: strategy_body_prefix_bytes(&raw, chk),
        http: http(raw.http.as_ref(), chk),
        log,
        auth,
        allowed_hosts,
        cors_origins,
        engine: EngineSpec {
            services,
            machines,
            routing_rules,
            strategies_dir: Some(strategies_dir),
            semaphore: semaphore.as_ref().map(|s| SemaphoreConnection {
                base_url: s.base_url.clone(),
                api_token: s.api_token.as_ref().map(|t| t.expose().to_owned()),
                username: s.username.clone(),
                password: s.password.as_ref().map(|p| p.expose().to_owned()),
                project_id: s.project_id,
                timeout: s.timeout,
            }),
            data_dir,
            secrets: Vec::new(),
        },
        semaphore,
        source_path: source_path.to_path_buf(),
        warnings: Vec::new(),
    }
}

fn listen(raw: &RawConfig, env: &Overrides, chk: &mut Checker<'_>) -> SocketAddr {
    let (text, var) = match (&env.listen, &raw.listen) {
        (Some(o), _) => (o.value.as_str(), Some(o.var)),
        (None, Some(text)) => (text.as_str(), None),
        (None, None) => (DEFAULT_LISTEN, None),
    };
    match text.trim().parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(err) => {
            let problem = Problem::BadAddress {
                value: text.to_owned(),
                reason: format!("{err} (want ip:port)"),
            };
            match var {
                Some(var) => chk.report_env(var, "listen", problem),
                None => chk.report("listen", problem),
            }
            SocketAddr::from(([0, 0, 0, 0], 8080))
        }
    }
}

fn database_url(raw: &RawConfig, env: &Overrides, chk: &mut Checker<'_>) -> String {
    let (url, var) = match (&env.database_url, &raw.database_url) {
        (Some(o), _) => (o.value.clone(), Some(o.var)),
        (None, Some(url)) => (url.clone(), None),
        (None, None) => (DEFAULT_DATABASE_URL.to_owned(), None),
    };
    if !url.starts_with("sqlite:") {
        let problem = Problem::BadUrl {
            url: url.clone(),
            reason: "only SQLite is supported (sqlite://path?mode=rwc)".to_owned(),
        };
        match var {
            Some(var) => chk.report_env(var, "database_url", problem),
            None => chk.report("database_url", problem),
        }
    }
    url
}

fn log(raw: Option<&RawLog>, env: &Overrides, chk: &mut Checker<'_>) -> LogConfig {
    let (level, var) = match (&env.log, raw.and_then(|l| l.level.as_ref())) {
        (Some(o), _) => (o.value.clone(), Some(o.var)),
        (None, Some(level)) => (level.clone(), None),
        (None, None) => (DEFAULT_LOG_LEVEL.to_owned(), None),
    };
    if let Err(err) = tracing_subscriber::EnvFilter::try_new(&level) {
        let problem = Problem::BadLogFilter {
            filter: level.clone(),
            reason: err.to_string(),
        };
        match var {
            Some(var) => chk.report_env(var, "log.level", problem),
            None => chk.report("log.level", problem),
        }
    }
    let format = match raw.and_then(|l| l.format) {
        Some(RawLogFormat::Json) => LogFormat::Json,
        Some(RawLogFormat::Pretty) | None => LogFormat::Pretty,
    };
    LogConfig { level, format }
}

fn auth(raw: Option<&RawAuth>, env: &Overrides, chk: &mut Checker<'_>) -> AuthConfig {
    let hash = match &env.dashboard_password_hash {
        Some(o) => {
            if !crate::auth::password::is_valid_hash(o.value.expose()) {
                chk.report_env(
                    o.var,
                    "auth.dashboard_password_hash",
                    Problem::BadPasswordHash,
                );
            }
            Some(o.value.clone())
        }
        None => {
            let hash = raw.and_then(|a| a.dashboard_password_hash.clone());
            if hash
                .as_ref()
                .is_some_and(|h| !crate::auth::password::is_valid_hash(h.expose()))
            {
                chk.report("auth.dashboard_password_hash", Problem::BadPasswordHash);
            }
            hash
        }
    };
    let mut keys = Vec::new();
    for (i, key) in raw
        .map(|a| a.keys.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let path = format!("auth.keys[{i}]");
        if key.name.trim().is_empty() {
            chk.report(join(&path, "name"), Problem::Empty);
        }
        let sha256 = crate::auth::keys::parse_digest(&key.sha256);
        if sha256.is_none() {
            let value = key.sha256.clone();
            chk.report(join(&path, "sha256"), Problem::BadDigest { value });
        }
        let mut scopes = Vec::new();
        for (j, text) in key.scopes.iter().enumerate() {
            match text.parse() {
                Ok(scope) => scopes.push(scope),
                Err(err) => chk.report(
                    format!("{path}.scopes[{j}]"),
                    Problem::BadScope {
                        reason: crate::auth::scope::ScopeError::to_string(&err),
                    },
                ),
            }
        }
        if key.scopes.is_empty() {
            chk.report(join(&path, "scopes"), Problem::Empty);
        }
        keys.push(ConfigKey {
            name: key.name.clone(),
            sha256: sha256.unwrap_or_default(),
            scopes,
        });
    }
    if let Some(o) = &env.api_keys {
        for entry in o.value.expose().split_whitespace() {
            match env_key(entry) {
                Ok(key) => keys.push(key),
                Err(problem) => chk.report_env(o.var, "auth.keys", problem),
            }
        }
    }
    AuthConfig {
        enabled: raw.and_then(|a| a.enabled).unwrap_or(false),
        dashboard_username: raw
            .and_then(|a| a.dashboard_username.clone())
            .unwrap_or_else(|| "admin".to_owned()),
        dashboard_password_hash: hash,
        keys,
        public_metrics: raw.and_then(|a| a.public_metrics).unwrap_or(false),
        max_failed_attempts: match raw.and_then(|a| a.max_failed_attempts) {
            Some(0) => {
                chk.report(
                    "auth.max_failed_attempts",
                    Problem::OutOfRange {
                        value: "0".into(),
                        expected: "at least 1",
                    },
                );
                crate::auth::limiter::BURST
            }
            Some(n) => n,
            None => crate::auth::limiter::BURST,
        },
    }
}

/// One `HESTIA_API_KEYS` entry, `name:sha256:scope,scope` (a scope may hold a `:` itself).
fn env_key(entry: &str) -> Result<ConfigKey, Problem> {
    let bad = || Problem::BadKeyEntry {
        // The digest is not secret, but the entry may be a mistyped key: show only its name.
        entry: format!("{}:…", entry.split(':').next().unwrap_or_default()),
    };
    let mut parts = entry.splitn(3, ':');
    let (Some(name), Some(digest), Some(scopes)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let sha256 = crate::auth::keys::parse_digest(digest).ok_or_else(bad)?;
    let scopes = crate::auth::Scope::parse_list(scopes).map_err(|e| Problem::BadScope {
        reason: e.to_string(),
    })?;
    if name.is_empty() || scopes.is_empty() {
        return Err(bad());
    }
    Ok(ConfigKey {
        name: name.to_owned(),
        sha256,
        scopes,
    })
}

/// `allowed_hosts`: host names or `host:port`, lower-cased.
fn allowed_hosts(raw: &[String], chk: &mut Checker<'_>) -> Vec<String> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, host)| {
            let host = host.trim().to_ascii_lowercase();
            let ok = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
            if !ok {
                chk.report(
                    format!("allowed_hosts[{i}]"),
                    Problem::BadValue {
                        value: host.clone(),
                        expected: "a host name or host:port (e.g. hestia.lan or 127.0.0.1:8080)",
                    },
                );
            }
            ok.then_some(host)
        })
        .collect()
}

/// `cors_origins`: `scheme://host[:port]`, no path.
fn cors_origins(raw: &[String], chk: &mut Checker<'_>) -> Vec<String> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, origin)| {
            let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
            let ok = url::Url::parse(&origin).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.path() == "/"
                    && u.query().is_none()
                    && u.origin().ascii_serialization() == origin
            });
            if !ok {
                chk.report(
                    format!("cors_origins[{i}]"),
                    Problem::BadValue {
                        value: origin.clone(),
                        expected: "an origin like https://app.example or http://localhost:3000",
                    },
                );
            }
            ok.then_some(origin)
        })
        .collect()
}

fn semaphore(raw: &RawConfig, env: &Overrides, chk: &mut Checker<'_>) -> Option<SemaphoreConfig> {
    let keys = legacy::semaphore_keys(raw, chk);
    let base_url = match (&env.semaphore_base_url, keys.base_url) {
        (Some(o), _) => {
            if let Err(problem) = parse_url(&o.value) {
                chk.report_env(o.var, "semaphore.base_url", problem);
            }
            o.value.clone()
        }
        (None, Some((url, path))) => {
            check_url(chk, &path, &url);
            url
        }
        (None, None) => return None,
    };
    Some(SemaphoreConfig {
        base_url,
        api_token: pick(&env.semaphore_api_token).or(keys.api_token),
        username: pick(&env.semaphore_username).or(keys.username),
        password: pick(&env.semaphore_password).or(keys.password),
        project_id: keys.project_id.unwrap_or(1),
        timeout: semaphore_timeout(env, chk)
            .or(keys.timeout)
            .unwrap_or(Duration::from_millis(SEMAPHORE_TIMEOUT_MS)),
    })
}

/// `SEMAPHORE_TIMEOUT`: seconds, fractions allowed.
fn semaphore_timeout(env: &Overrides, chk: &mut Checker<'_>) -> Option<Duration> {
    let o = env.semaphore_timeout.as_ref()?;
    let Ok(secs) = o.value.trim().parse::<f64>() else {
        let problem = Problem::BadValue {
            value: o.value.clone(),
            expected: "a number of seconds (fractions allowed, e.g. 2.5)",
        };
        chk.report_env(o.var, "semaphore_timeout", problem);
        return None;
    };
    chk.set_by_env("semaphore_timeout".to_owned(), o.var);
    seconds(chk, "semaphore_timeout", Some(Seconds(secs)))
}

fn pick<T: Clone>(value: &Option<Override<T>>) -> Option<T> {
    value.as_ref().map(|o| o.value.clone())
}

fn semaphore_missing() -> Problem {
    Problem::SemaphoreNotConfigured {
        missing: "a server URL",
        fix: "set `semaphore.base_url` in the file or SEMAPHORE_BASE_URL in the environment",
    }
}

/// Everything that talks to Semaphore (starters and wake-ups): its key path, and what it is
/// (``service `llm` ``).
fn semaphore_users(raw: &RawConfig) -> Vec<(String, String)> {
    let mut users = Vec::new();
    for (id, machine) in &raw.machines.0 {
        if matches!(machine.wake, Some(RawWake::Semaphore(_))) {
            let user = format!("the wake of machine `{id}`");
            users.push((format!("machines.{id}.wake.semaphore"), user));
        }
    }
    for (id, svc) in &raw.services.0 {
        let base = format!("services.{id}");
        let user = format!("service `{id}`");
        if svc.semaphore_enabled == Some(true) {
            users.push((join(&base, "semaphore_enabled"), user.clone()));
        }
        for (key, starter) in [("start", &svc.start), ("stop", &svc.stop)] {
            if matches!(starter, Some(RawStarter::Semaphore(_))) {
                users.push((format!("{base}.{key}.semaphore"), user.clone()));
            }
        }
    }
    users
}

fn is_url_safe(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn role(raw: RawRole) -> MachineRole {
    match raw {
        RawRole::Local => MachineRole::Local,
        RawRole::Remote => MachineRole::Remote,
        RawRole::Hpc => MachineRole::Hpc,
        RawRole::Cloud => MachineRole::Cloud,
    }
}

fn machines(raw: &RawConfig, chk: &mut Checker<'_>) -> Vec<MachineSpec> {
    raw.machines
        .0
        .iter()
        .map(|(id, m)| machine(id, m, chk))
        .collect()
}

fn machine(id: &str, raw: &RawMachine, chk: &mut Checker<'_>) -> MachineSpec {
    let path = format!("machines.{id}");
    if !is_url_safe(id) {
        chk.report(
            &path,
            Problem::BadId {
                kind: "machine",
                id: id.to_owned(),
            },
        );
    }
    let role = raw.role.map_or(MachineRole::Local, role);
    let address = match (&raw.address, role) {
        (Some(address), _) if address.trim().is_empty() => {
            chk.report(join(&path, "address"), Problem::Empty);
            String::new()
        }
        (Some(address), _) => address.trim().to_owned(),
        (None, MachineRole::Local) => "127.0.0.1".to_owned(),
        (None, _) => {
            chk.report(
                join(&path, "address"),
                Problem::AddressRequired {
                    role: role.as_str(),
                },
            );
            String::new()
        }
    };
    let wake = raw.wake.as_ref().map(|wake| match wake {
        RawWake::Wol(wol) => {
            let mac = parse_mac(&wol.mac).unwrap_or_else(|| {
                chk.report(
                    format!("{path}.wake.wol.mac"),
                    Problem::BadMac {
                        value: wol.mac.clone(),
                    },
                );
                [0; 6]
            });
            let broadcast = wol
                .broadcast
                .clone()
                .unwrap_or_else(|| DEFAULT_WOL_BROADCAST.to_owned());
            if let Err(err) = broadcast.parse::<SocketAddr>() {
                chk.report(
                    format!("{path}.wake.wol.broadcast"),
                    Problem::BadAddress {
                        value: broadcast.clone(),
                        reason: format!("{err} (want ip:port)"),
                    },
                );
            }
            WakeSpec::Wol { mac, broadcast }
        }
        RawWake::Semaphore(task) => WakeSpec::Semaphore(semaphore_task(task)),
    });
    MachineSpec {
        id: id.to_owned(),
        role,
        address,
        tags: raw.tags.clone(),
        wake,
    }
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = text.trim().split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    Some(mac)
}

fn routing_rules(
    raw: &[RawRoutingRule],
    machine_ids: &[&str],
    service_ids: &[&str],
    chk: &mut Checker<'_>,
) -> Vec<RoutingRuleSpec> {
    let mut seen: BTreeMap<i64, &str> = BTreeMap::new();
    let mut rules = Vec::with_capacity(raw.len());
    for (i, rule) in raw.iter().enumerate() {
        let path = format!("routing_rules[{i}]");
        if rule.name.trim().is_empty() {
            chk.report(join(&path, "name"), Problem::Empty);
        }
        match seen.get(&rule.priority) {
            Some(other) => chk.report(
                join(&path, "priority"),
                Problem::DuplicatePriority {
                    priority: rule.priority,
                    other: (*other).to_owned(),
                },
            ),
            None => {
                seen.insert(rule.priority, &rule.name);
            }
        }
        for (j, service) in rule.matches.services.iter().enumerate() {
            if !service_ids.contains(&service.as_str()) {
                chk.report(
                    format!("{path}.match.services[{j}]"),
                    Problem::UnknownService {
                        name: service.clone(),
                        known: owned(service_ids),
                    },
                );
            }
        }
        let target = match &rule.target {
            RawTarget::Machine(name) => {
                if !machine_ids.contains(&name.as_str()) {
                    chk.report(
                        format!("{path}.target.machine"),
                        Problem::UnknownMachine {
                            name: name.clone(),
                            known: owned(machine_ids),
                        },
                    );
                }
                RuleTarget::Machine(name.clone())
            }
            RawTarget::Role(r) => RuleTarget::Role(role(*r)),
            RawTarget::Tags(tags) => RuleTarget::Tags(tags.clone()),
        };
        rules.push(RoutingRuleSpec {
            name: rule.name.clone(),
            priority: rule.priority,
            matches: RuleMatch {
                services: rule.matches.services.clone(),
                tags: rule.matches.tags.clone(),
            },
            target,
        });
    }
    rules.sort_by_key(|rule| rule.priority);
    rules
}

fn owned(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

fn service(
    id: &str,
    svc: &RawService,
    machine_ids: &[&str],
    plugins: &[String],
    chk: &mut Checker<'_>,
) -> ServiceSpec {
    let path = format!("services.{id}");
    if !is_url_safe(id) {
        chk.report(
            &path,
            Problem::BadId {
                kind: "service",
                id: id.to_owned(),
            },
        );
    }
    check_url(chk, &join(&path, "base_url"), &svc.base_url);

    let legacy = legacy::service_semaphore(svc, &path, machine_ids, chk);
    let start_rich = svc
        .start
        .as_ref()
        .map(|s| starter(s, &format!("{path}.start"), chk));
    let start = either(
        chk,
        &path,
        ("semaphore_start_template_id", legacy.start),
        ("start", start_rich),
    )
    .unwrap_or(StarterSpec::None);
    let stop_rich = svc
        .stop
        .as_ref()
        .map(|s| starter(s, &format!("{path}.stop"), chk));
    let stop = either(
        chk,
        &path,
        ("semaphore_stop_template_id", legacy.stop),
        ("stop", stop_rich),
    );

    let readiness = readiness(svc, &path, chk);
    let policy = policy(svc, &path, chk);
    let queue = queue(svc, &path, chk);
    let idle_timeout = match svc.idle_timeout_ms.unwrap_or(DEFAULT_IDLE_TIMEOUT_MS) {
        0 => None,
        ms @ 1.. => Some(Duration::from_millis(ms.unsigned_abs())),
        negative => {
            chk.report(
                join(&path, "idle_timeout_ms"),
                Problem::OutOfRange {
                    value: negative.to_string(),
                    expected: "≥ 0 (milliseconds; 0 = never stop)",
                },
            );
            None
        }
    };
    let machines = service_machines(svc, &path, legacy.machine, machine_ids, chk);

    let instances = svc
        .instances
        .iter()
        .enumerate()
        .map(|(i, inst)| {
            check_url(chk, &format!("{path}.instances[{i}].url"), &inst.url);
            if let Some(machine) = inst.machine.as_deref().filter(|m| !machine_ids.contains(m)) {
                chk.report(
                    format!("{path}.instances[{i}].machine"),
                    Problem::UnknownMachine {
                        name: machine.to_owned(),
                        known: owned(machine_ids),
                    },
                );
            }
            InstanceSpec {
                url: inst.url.clone(),
                weight: inst.weight.unwrap_or(1),
                region: inst.region.clone(),
                machine: inst.machine.clone(),
            }
        })
        .collect();
    let (strategy, fallback_strategy) = strategies(svc, &path, plugins, chk);
    let model_routing = svc.routing.as_ref().map(|routing| {
        for (model, url) in &routing.by_model {
            check_url(chk, &format!("{path}.routing.by_model.{model}"), url);
        }
        ModelRouting {
            model_key: routing
                .model_key
                .clone()
                .unwrap_or_else(|| "model".to_owned()),
            by_model: routing.by_model.clone(),
        }
    });

    ServiceSpec {
        id: id.to_owned(),
        base_url: svc.base_url.clone(),
        start,
        stop,
        readiness,
        policy,
        queue,
        idle_timeout,
        machines,
        tags: svc.tags.clone(),
        instances,
        strategy,
        fallback_strategy,
        model_routing,
        models: svc.models.clone(),
        upstream_timeout: ms(svc.upstream_timeout_ms, DEFAULT_UPSTREAM_TIMEOUT_MS),
        waiting_page: svc.waiting_page != Some(super::schema::RawWaitingPage::Off),
        upstream_http2: svc.upstream_http2.unwrap_or(false),
        max_concurrency: max_concurrency(svc, &path, chk),
    }
}

/// `max_concurrency`: 0 is no limit; unset is the default.
fn max_concurrency(svc: &RawService, path: &str, chk: &mut Checker<'_>) -> Option<usize> {
    match svc.max_concurrency {
        None => Some(hestia_actors::spec::DEFAULT_MAX_CONCURRENCY),
        Some(0) => None,
        Some(n) => usize::try_from(n).ok().or_else(|| {
            chk.report(
                join(path, "max_concurrency"),
                Problem::OutOfRange {
                    value: n.to_string(),
                    expected: "≥ 0 (0 = no limit)",
                },
            );
            Some(hestia_actors::spec::DEFAULT_MAX_CONCURRENCY)
        }),
    }
}

/// The service's strategy and fallback. `routing` means `model_router`: implied when no strategy
/// is named, and a prototype config naming another built-in beside `routing` keeps loading, that
/// built-in becoming the fallback for unmapped models.
fn strategies(
    svc: &RawService,
    path: &str,
    plugins: &[String],
    chk: &mut Checker<'_>,
) -> (Option<String>, Option<String>) {
    let key = join(path, "strategy");
    let mut fallback = fallback_strategy(svc, path, chk);
    let strategy = match (svc.strategy.as_deref(), svc.routing.is_some()) {
        (None, false) => None,
        (None, true) | (Some("model_router"), true) => Some("model_router".to_owned()),
        (Some("model_router"), false) => {
            let reason = "`model_router` needs `routing: {model_key, by_model}` on the service";
            chk.report(
                key,
                Problem::BadStrategy {
                    reason: reason.to_owned(),
                },
            );
            None
        }
        (Some(name), false) if plugins.iter().any(|p| p == name) => Some(name.to_owned()),
        (Some(name), _) if !builtin::is_builtin(name) => {
            let mut known: Vec<String> = builtin::BUILTINS
                .iter()
                .map(|(n, _)| (*n).to_owned())
                .collect();
            known.extend(plugins.iter().cloned());
            chk.report(
                key,
                Problem::UnknownStrategy {
                    name: name.to_owned(),
                    known,
                },
            );
            None
        }
        (Some(name), false) => Some(name.to_owned()),
        (Some(name), true) => {
            if fallback.is_some() {
                let reason = format!(
                    "with `routing`, the strategy is `model_router`; `{name}` and \
                     `fallback_strategy` both name its fallback: keep one"
                );
                chk.report(key, Problem::BadStrategy { reason });
            }
            fallback = Some(name.to_owned());
            Some("model_router".to_owned())
        }
    };
    (strategy, fallback)
}

/// The built-in deciding when the strategy does not: any but `model_router`.
fn fallback_strategy(svc: &RawService, path: &str, chk: &mut Checker<'_>) -> Option<String> {
    let name = svc.fallback_strategy.as_deref()?;
    if name == "model_router" || !builtin::is_builtin(name) {
        let known = builtin::BUILTINS
            .iter()
            .map(|(n, _)| (*n).to_owned())
            .filter(|n| n != "model_router")
            .collect();
        chk.report(
            join(path, "fallback_strategy"),
            Problem::UnknownStrategy {
                name: name.to_owned(),
                known,
            },
        );
    }
    Some(name.to_owned())
}

/// Each model names one service, and is a non-empty name.
fn check_models(raw: &RawConfig, chk: &mut Checker<'_>) {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (id, svc) in &raw.services.0 {
        for (i, model) in svc.models.iter().enumerate() {
            let at = format!("services.{id}.models[{i}]");
            if model.trim().is_empty() {
                chk.report(at, Problem::Empty);
            } else if let Some(other) = seen.insert(model, id) {
                let problem = Problem::DuplicateModel {
                    model: model.clone(),
                    other: other.to_owned(),
                };
                chk.report(at, problem);
            }
        }
    }
}

/// `strategies_dir`, relative to the config file; default `strategies` beside it.
fn strategies_dir(raw: &RawConfig, source_path: &Path) -> PathBuf {
    let beside = source_path.parent().unwrap_or(Path::new("."));
    beside.join(
        raw.strategies_dir
            .as_deref()
            .unwrap_or(Path::new("strategies")),
    )
}

/// The plugins a service may name: `NAME.rhai` files there now, built-in names excepted (the
/// plugin host refuses those).
fn plugin_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|entry| {
            let path = entry.path();
            (path.extension()? == "rhai").then_some(())?;
            path.file_stem()?.to_str().map(str::to_owned)
        })
        .filter(|name| !builtin::is_builtin(name))
        .collect();
    names.sort();
    names
}

fn http(raw: Option<&RawHttp>, chk: &mut Checker<'_>) -> HttpConfig {
    let empty = RawHttp::default();
    let raw = raw.unwrap_or(&empty);
    let mut timeout = |key: &str, value: Option<u64>, default: u64| match value {
        Some(0) => {
            chk.report(
                join("http", key),
                Problem::OutOfRange {
                    value: "0".into(),
                    expected: "≥ 1 (milliseconds)",
                },
            );
            Duration::from_millis(default)
        }
        other => ms(other, default),
    };
    let head_timeout = timeout(
        "head_timeout_ms",
        raw.head_timeout_ms,
        DEFAULT_HEAD_TIMEOUT_MS,
    );
    let keep_alive_timeout = timeout(
        "keep_alive_timeout_ms",
        raw.keep_alive_timeout_ms,
        DEFAULT_KEEP_ALIVE_TIMEOUT_MS,
    );
    let body_timeout = timeout(
        "body_timeout_ms",
        raw.body_timeout_ms,
        DEFAULT_BODY_TIMEOUT_MS,
    );
    let max_connections = match raw.max_connections {
        None => None,
        Some(n @ 1..) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        Some(zero) => {
            chk.report(
                "http.max_connections",
                Problem::OutOfRange {
                    value: zero.to_string(),
                    expected: "≥ 1 (or leave it out: derived from the open-files limit)",
                },
            );
            None
        }
    };
    HttpConfig {
        head_timeout,
        keep_alive_timeout,
        body_timeout,
        max_connections,
    }
}

fn max_envelope_memory_bytes(raw: &RawConfig, chk: &mut Checker<'_>) -> u64 {
    // One envelope of the largest size must fit, or it could never be served.
    const MIN: u64 = crate::http::envelope::MAX_BODY as u64;
    const MAX: u64 = 1 << 40;
    match raw.max_envelope_memory_bytes {
        None => DEFAULT_MAX_ENVELOPE_MEMORY_BYTES,
        Some(bytes @ MIN..=MAX) => bytes,
        Some(bytes) => {
            chk.report(
                "max_envelope_memory_bytes",
                Problem::OutOfRange {
                    value: bytes.to_string(),
                    expected: "between 16777216 (one largest envelope) and 1099511627776 bytes",
                },
            );
            DEFAULT_MAX_ENVELOPE_MEMORY_BYTES
        }
    }
}

fn strategy_body_prefix_bytes(raw: &RawConfig, chk: &mut Checker<'_>) -> usize {
    const MAX: u64 = 16 * 1024 * 1024;
    match raw.strategy_body_prefix_bytes {
        None => DEFAULT_BODY_PREFIX_BYTES,
        Some(bytes @ 1..=MAX) => bytes as usize,
        Some(bytes) => {
            chk.report(
                "strategy_body_prefix_bytes",
                Problem::OutOfRange {
                    value: bytes.to_string(),
                    expected: "between 1 and 16777216 bytes",
                },
            );
            DEFAULT_BODY_PREFIX_BYTES
        }
    }
}

fn service_machines(
    svc: &RawService,
    path: &str,
    from_semaphore: Option<String>,
    machine_ids: &[&str],
    chk: &mut Checker<'_>,
) -> Vec<String> {
    let (key, mut names) = match (&svc.machine, &svc.machines) {
        (Some(one), Some(_)) => {
            chk.report(join(path, "machine"), Problem::MachineAndMachines);
            ("machine", vec![one.clone()])
        }
        (Some(one), None) => ("machine", vec![one.clone()]),
        (None, Some(many)) => ("machines", many.clone()),
        (None, None) => ("machines", Vec::new()),
    };
    for (i, name) in names.iter().enumerate() {
        if !machine_ids.contains(&name.as_str()) {
            let at = if key == "machine" {
                join(path, key)
            } else {
                format!("{path}.machines[{i}]")
            };
            chk.report(
                at,
                Problem::UnknownMachine {
                    name: name.clone(),
                    known: owned(machine_ids),
                },
            );
        }
    }
    if let Some(machine) = from_semaphore {
        if names.is_empty() {
            names.push(machine);
        } else {
            chk.report(
                join(path, "semaphore_machine_id"),
                Problem::Conflict {
                    flat: "semaphore_machine_id".to_owned(),
                    rich: key.to_owned(),
                },
            );
        }
    }
    names
}

fn starter(raw: &RawStarter, path: &str, chk: &mut Checker<'_>) -> StarterSpec {
    match raw {
        RawStarter::None => StarterSpec::None,
        RawStarter::Command(cmd) => {
            if cmd.program.trim().is_empty() {
                chk.report(format!("{path}.command.program"), Problem::Empty);
            }
            StarterSpec::Command(CommandSpec {
                program: cmd.program.clone(),
                args: cmd.args.clone(),
                env: cmd.env.clone(),
                cwd: cmd.cwd.clone(),
                stop_grace: ms(cmd.stop_grace_ms, STOP_GRACE_MS),
            })
        }
        RawStarter::Http(hook) => {
            check_url(chk, &format!("{path}.http.url"), &hook.url);
            let method = hook
                .method
                .as_deref()
                .unwrap_or("POST")
                .trim()
                .to_ascii_uppercase();
            if method.is_empty() || !method.chars().all(|c| c.is_ascii_uppercase()) {
                chk.report(
                    format!("{path}.http.method"),
                    Problem::BadMethod {
                        method: method.clone(),
                    },
                );
            }
            StarterSpec::Http(HttpHookSpec {
                url: hook.url.clone(),
                method,
                headers: hook.headers.clone(),
                body: hook.body.clone(),
                timeout: ms(hook.timeout_ms, HOOK_TIMEOUT_MS),
            })
        }
        RawStarter::Semaphore(task) => StarterSpec::Semaphore(semaphore_task(task)),
    }
}

fn semaphore_task(task: &RawSemaphoreTask) -> SemaphoreTaskSpec {
    SemaphoreTaskSpec {
        template_id: task.template_id,
        environment: task.environment.clone(),
        task_timeout: ms(task.task_timeout_ms, TASK_TIMEOUT_MS),
        poll_interval: ms(task.poll_interval_ms, POLL_INTERVAL_MS),
    }
}

fn readiness(svc: &RawService, path: &str, chk: &mut Checker<'_>) -> ReadinessSpec {
    let rich = svc.readiness.as_ref();
    if let (Some(_), Some(RawReadiness::WarmupMs(_))) = (svc.warmup_ms, rich) {
        chk.report(
            join(path, "warmup_ms"),
            Problem::Conflict {
                flat: "warmup_ms".to_owned(),
                rich: "readiness.warmup_ms".to_owned(),
            },
        );
    }
    let flat_probe = svc.health_url.as_ref().map(|url| {
        check_url(chk, &join(path, "health_url"), url);
        ReadinessSpec::Http(HttpProbeSpec {
            url: url.clone(),
            expect_status: StatusRange::default(),
            interval: ms(None, PROBE_INTERVAL_MS),
            timeout: ms(None, PROBE_TIMEOUT_MS),
            health_interval: ms(None, HEALTH_INTERVAL_MS),
        })
    });
    let rich_probe = rich.map(|r| rich_readiness(r, &format!("{path}.readiness"), chk));
    let probe = either(
        chk,
        path,
        ("health_url", flat_probe),
        ("readiness", rich_probe),
    );
    match (probe, svc.warmup_ms) {
        (Some(probe), _) => probe,
        (None, Some(warmup)) => ReadinessSpec::Warmup(Duration::from_millis(warmup)),
        (None, None) => {
            chk.report(path, Problem::NoReadiness);
            ReadinessSpec::Warmup(Duration::ZERO)
        }
    }
}

fn rich_readiness(raw: &RawReadiness, path: &str, chk: &mut Checker<'_>) -> ReadinessSpec {
    match raw {
        RawReadiness::Http(http) => {
            check_url(chk, &format!("{path}.http.url"), &http.url);
            let expect_status = match &http.expect_status {
                None => StatusRange::default(),
                Some(status) => status_range(status).unwrap_or_else(|| {
                    let value = match status {
                        RawStatus::Code(code) => code.to_string(),
                        RawStatus::Range(text) => text.clone(),
                    };
                    chk.report(
                        format!("{path}.http.expect_status"),
                        Problem::BadStatus { value },
                    );
                    StatusRange::default()
                }),
            };
            ReadinessSpec::Http(HttpProbeSpec {
                url: http.url.clone(),
                expect_status,
                interval: ms(http.interval_ms, PROBE_INTERVAL_MS),
                timeout: ms(http.timeout_ms, PROBE_TIMEOUT_MS),
                health_interval: ms(http.health_interval_ms, HEALTH_INTERVAL_MS),
            })
        }
        RawReadiness::Tcp(tcp) => {
            if let Err(reason) = check_host_port(&tcp.address) {
                chk.report(
                    format!("{path}.tcp.address"),
                    Problem::BadAddress {
                        value: tcp.address.clone(),
                        reason,
                    },
                );
            }
            ReadinessSpec::Tcp(TcpProbeSpec {
                address: tcp.address.clone(),
                interval: ms(tcp.interval_ms, PROBE_INTERVAL_MS),
                timeout: ms(tcp.timeout_ms, PROBE_TIMEOUT_MS),
                health_interval: ms(tcp.health_interval_ms, HEALTH_INTERVAL_MS),
            })
        }
        RawReadiness::WarmupMs(warmup) => ReadinessSpec::Warmup(Duration::from_millis(*warmup)),
    }
}

fn status_range(status: &RawStatus) -> Option<StatusRange> {
    let code = |v: i64| u16::try_from(v).ok().filter(|c| (100..=599).contains(c));
    let (min, max) = match status {
        RawStatus::Code(c) => (code(*c)?, code(*c)?),
        RawStatus::Range(text) => match text.split_once('-') {
            Some((a, b)) => (code(a.trim().parse().ok()?)?, code(b.trim().parse().ok()?)?),
            None => {
                let single = code(text.trim().parse().ok()?)?;
                (single, single)
            }
        },
    };
    (min <= max).then_some(StatusRange { min, max })
}

fn check_host_port(address: &str) -> Result<(), String> {
    let probe = address.replace("{address}", DUMMY_HOST);
    let Some((host, port)) = probe.rsplit_once(':') else {
        return Err("expected host:port".to_owned());
    };
    if host.is_empty() {
        return Err("the host is empty (expected host:port)".to_owned());
    }
    port.parse::<u16>()
        .map(drop)
        .map_err(|_| format!("`{port}` is not a port number"))
}

fn policy(svc: &RawService, path: &str, chk: &mut Checker<'_>) -> StartPolicy {
    let defaults = StartPolicy::default();
    let retry = svc.retry.as_ref();
    let retry_count = either(
        chk,
        path,
        ("retry_count", svc.retry_count),
        ("retry.count", retry.and_then(|r| r.count)),
    );
    let retry_delay = either(
        chk,
        path,
        ("retry_delay_ms", svc.retry_delay_ms),
        ("retry.delay_ms", retry.and_then(|r| r.delay_ms)),
    );
    let backoff = retry
        .and_then(|r| r.backoff)
        .unwrap_or(defaults.backoff_factor);
    if !backoff.is_finite() || backoff < 1.0 {
        chk.report(
            format!("{path}.retry.backoff"),
            Problem::OutOfRange {
                value: backoff.to_string(),
                expected: "a number ≥ 1.0",
            },
        );
    }
    if let Some(url) = &svc.fallback_url {
        check_url(chk, &join(path, "fallback_url"), url);
    }
    StartPolicy {
        retry_count: retry_count.unwrap_or(defaults.retry_count),
        retry_delay: retry_delay.map_or(defaults.retry_delay, Duration::from_millis),
        backoff_factor: backoff,
        max_retry_delay: retry
            .and_then(|r| r.max_delay_ms)
            .map_or(defaults.max_retry_delay, Duration::from_millis),
        start_timeout: svc
            .start_timeout_ms
            .map_or(defaults.start_timeout, Duration::from_millis),
        fallback_url: svc.fallback_url.clone(),
    }
}

fn queue(svc: &RawService, path: &str, chk: &mut Checker<'_>) -> QueueSpec {
    let defaults = QueueSpec::default();
    let size = match svc.queue_size {
        None => defaults.size,
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|n| *n >= 1)
            .unwrap_or_else(|| {
                chk.report(
                    join(path, "queue_size"),
                    Problem::OutOfRange {
                        value: n.to_string(),
                        expected: "≥ 1",
                    },
                );
                defaults.size
            }),
    };
    let timeout = seconds(
        chk,
        &join(path, "request_timeout_seconds"),
        svc.request_timeout_seconds,
    )
    .unwrap_or(defaults.timeout);
    QueueSpec { size, timeout }
}

/// Checks an http(s) URL that may hold `{address}`.
fn parse_url(url: &str) -> Result<(), Problem> {
    let probe = url.replace("{address}", DUMMY_HOST);
    let bad = |reason: String| Problem::BadUrl {
        url: url.to_owned(),
        reason,
    };
    match url::Url::parse(&probe) {
        Ok(parsed) if !matches!(parsed.scheme(), "http" | "https") => Err(bad(format!(
            "the scheme must be http or https, not `{}`",
            parsed.scheme()
        ))),
        Ok(parsed) if parsed.host().is_none() => Err(bad("no host".to_owned())),
        Ok(_) => Ok(()),
        Err(err) => Err(bad(err.to_string())),
    }
}

fn check_url(chk: &mut Checker<'_>, path: &str, url: &str) {
    if let Err(problem) = parse_url(url) {
        chk.report(path, problem);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_status_forms_when_parsed_then_ranges_are_inclusive() {
        assert_eq!(
            status_range(&RawStatus::Code(204)),
            Some(StatusRange { min: 204, max: 204 })
        );
        let range = RawStatus::Range("200-299".to_owned());
        assert_eq!(
            status_range(&range),
            Some(StatusRange { min: 200, max: 299 })
        );
        assert_eq!(status_range(&RawStatus::Range("299-200".to_owned())), None);
        assert_eq!(status_range(&RawStatus::Code(42)), None);
    }

    #[test]
    fn given_mac_forms_when_parsed_then_both_separators_work() {
        assert_eq!(
            parse_mac("aa:bb:cc:dd:ee:ff"),
            Some([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])
        );
        assert_eq!(
            parse_mac("AA-BB-CC-DD-EE-01"),
            Some([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01])
        );
        assert_eq!(parse_mac("aa:bb:cc"), None);
    }

    #[test]
    fn given_urls_with_address_placeholder_when_checked_then_they_parse() {
        assert!(parse_url("http://{address}:8000/v1").is_ok());
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("not a url").is_err());
    }
}
