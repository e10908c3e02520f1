//! Cross-field checks and normalisation: raw file structs plus environment overrides in, a
//! [`Config`] with a complete `EngineSpec` out. Every problem is collected with the position of
//! the offending key, so one run reports all of them. One module per section of the file; the
//! defaults come from [`super::defaults`], the problem collector from [`super::check`].

mod auth;
mod gateway;
mod machines;
mod semaphore;
mod services;
mod starters;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hestia_actors::spec::{
    CommandSpec, EngineSpec, HttpHookSpec, HttpProbeSpec, InstanceSpec, MachineRole, MachineSpec,
    ModelRouting, QueueSpec, ReadinessSpec, RoutingRuleSpec, RuleMatch, RuleTarget,
    SemaphoreConnection, SemaphoreTaskSpec, ServiceSpec, StartPolicy, StarterSpec, StatusRange,
    TcpProbeSpec, WakeSpec,
};
use hestia_actors::strategy::builtin;

use super::check::{Checker, join, seconds};
use super::defaults;
use super::env::{Override, Overrides};
use super::error::Problem;
use super::legacy::{self, either};
use super::schema::{
    RawAuth, RawConfig, RawHttp, RawLog, RawLogFormat, RawMachine, RawReadiness, RawRole,
    RawRoutingRule, RawSemaphoreTask, RawService, RawStarter, RawStatus, RawTarget, RawWake,
    Seconds,
};
use super::{AuthConfig, Config, ConfigKey, HttpConfig, LogConfig, LogFormat, SemaphoreConfig};

use self::auth::auth;
use self::gateway::{
    allowed_hosts, cors_origins, database_url, http, listen, log, max_envelope_memory_bytes,
    plugin_names, strategies_dir, strategy_body_prefix_bytes,
};
use self::machines::{machines, routing_rules};
use self::semaphore::{semaphore, semaphore_missing, semaphore_users};
use self::services::{check_models, service};

/// Stands in for `{address}` when checking that a URL parses.
const DUMMY_HOST: &str = "address.invalid";

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
                let base_url = hestia_actors::redact::redact_url(&s.base_url);
                chk.warn(path, Problem::SemaphoreNoCredentials { user, base_url });
            }
        }
        Some(_) => {}
    }

    let data_dir = hestia_actors::persistence::data_dir(&database_url);
    let mut engine = EngineSpec {
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
        secrets: Default::default(),
    };
    engine.secrets = secrets(&engine, &auth).into();
    // Masked from the moment they are read: what is logged before the engine starts, and the
    // error of a file a reload refuses, must not show them either.
    hestia_actors::redact::remember(engine.secrets.iter());
    Config {
        listen,
        database_url,
        shutdown_grace: ms(raw.shutdown_grace_ms, defaults::SHUTDOWN_GRACE_MS),
        max_request_body_bytes: raw
            .max_request_body_bytes
            .unwrap_or(defaults::MAX_REQUEST_BODY_BYTES),
        max_envelope_memory_bytes: max_envelope_memory_bytes(&raw, chk),
        strategy_body_prefix_bytes: strategy_body_prefix_bytes(&raw, chk),
        http: http(raw.http.as_ref(), chk),
        log,
        auth,
        allowed_hosts,
        cors_origins,
        engine: Arc::new(engine),
        semaphore,
        source_path: source_path.to_path_buf(),
        warnings: Vec::new(),
    }
}

/// Every secret of the configuration: what [`hestia_actors::redact::configured_secrets`] finds in
/// the engine's part, plus the auth settings (the dashboard's password hash, the keys' digests).
fn secrets(engine: &EngineSpec, auth: &AuthConfig) -> Vec<String> {
    let mut secrets = hestia_actors::redact::configured_secrets(engine);
    secrets.extend(
        auth.dashboard_password_hash
            .iter()
            .map(|hash| hash.expose().to_owned()),
    );
    secrets.extend(auth.keys.iter().map(|key| hex::encode(key.sha256)));
    secrets
}

fn is_url_safe(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn owned(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

/// Checks an http(s) URL that may hold `{address}`.
fn parse_url(url: &str) -> Result<(), Problem> {
    let probe = url.replace("{address}", DUMMY_HOST);
    let bad = |reason: String| Problem::BadUrl {
        url: hestia_actors::redact::redact_url(url),
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
