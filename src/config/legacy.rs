//! The Python prototype's flat keys, mapped onto the rich form so a prototype config loads
//! unchanged and means the same. A flat key and its rich twin set together is an error naming both.

use std::collections::BTreeMap;
use std::time::Duration;

use hestia_actors::spec::{SemaphoreTaskSpec, StarterSpec};

use super::check::{Checker, join, seconds};
use super::defaults;
use super::error::Problem;
use super::schema::{RawConfig, RawService};
use super::secret::Secret;

/// The value of whichever of a flat key and its rich twin is set (paths relative to `base`).
/// Both set: a `Conflict` at the flat key, and the flat value is kept so checking can go on.
pub(crate) fn either<T>(
    chk: &mut Checker<'_>,
    base: &str,
    flat: (&str, Option<T>),
    rich: (&str, Option<T>),
) -> Option<T> {
    match (flat.1, rich.1) {
        (Some(value), Some(_)) => {
            chk.report(
                join(base, flat.0),
                Problem::Conflict {
                    flat: flat.0.to_owned(),
                    rich: rich.0.to_owned(),
                },
            );
            Some(value)
        }
        (flat, rich) => flat.or(rich),
    }
}

/// The global Semaphore keys, rich and flat merged (before environment overrides).
#[derive(Debug, Default)]
pub(crate) struct SemaphoreKeys {
    /// The value and the key path it came from.
    pub base_url: Option<(String, String)>,
    pub api_token: Option<Secret>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub project_id: Option<i64>,
    pub timeout: Option<Duration>,
}

pub(crate) fn semaphore_keys(raw: &RawConfig, chk: &mut Checker<'_>) -> SemaphoreKeys {
    let rich = raw.semaphore.as_ref();
    let flat_timeout = seconds(chk, "semaphore_timeout", raw.semaphore_timeout);
    let base_url = match (
        &raw.semaphore_base_url,
        rich.and_then(|s| s.base_url.as_ref()),
    ) {
        (Some(_), Some(_)) => {
            chk.report(
                "semaphore_base_url",
                Problem::Conflict {
                    flat: "semaphore_base_url".to_owned(),
                    rich: "semaphore.base_url".to_owned(),
                },
            );
            raw.semaphore_base_url
                .clone()
                .map(|url| (url, "semaphore_base_url".to_owned()))
        }
        (Some(url), None) => Some((url.clone(), "semaphore_base_url".to_owned())),
        (None, Some(url)) => Some((url.clone(), "semaphore.base_url".to_owned())),
        (None, None) => None,
    };
    SemaphoreKeys {
        base_url,
        api_token: either(
            chk,
            "",
            ("semaphore_api_key", raw.semaphore_api_key.clone()),
            (
                "semaphore.api_token",
                rich.and_then(|s| s.api_token.clone()),
            ),
        ),
        username: either(
            chk,
            "",
            ("semaphore_username", raw.semaphore_username.clone()),
            ("semaphore.username", rich.and_then(|s| s.username.clone())),
        ),
        password: either(
            chk,
            "",
            ("semaphore_password", raw.semaphore_password.clone()),
            ("semaphore.password", rich.and_then(|s| s.password.clone())),
        ),
        project_id: rich.and_then(|s| s.project_id),
        timeout: either(
            chk,
            "",
            ("semaphore_timeout", flat_timeout),
            (
                "semaphore.timeout_ms",
                rich.and_then(|s| s.timeout_ms).map(Duration::from_millis),
            ),
        ),
    }
}

/// What a service's `semaphore_*` keys amount to.
#[derive(Debug, Default)]
pub(crate) struct LegacySemaphore {
    pub start: Option<StarterSpec>,
    pub stop: Option<StarterSpec>,
    /// `semaphore_machine_id` when it names a configured machine.
    pub machine: Option<String>,
}

/// Maps `semaphore_enabled` + templates to Semaphore starters. `semaphore_machine_id` becomes the
/// service's machine when it names a configured one, else the task's `machine_id` environment key.
pub(crate) fn service_semaphore(
    svc: &RawService,
    path: &str,
    machine_ids: &[&str],
    chk: &mut Checker<'_>,
) -> LegacySemaphore {
    let known_machine = svc
        .semaphore_machine_id
        .as_deref()
        .filter(|id| machine_ids.contains(id))
        .map(str::to_owned);
    let mut legacy = LegacySemaphore {
        machine: known_machine.clone(),
        ..LegacySemaphore::default()
    };
    if svc.semaphore_enabled != Some(true) {
        return legacy;
    }
    let task_timeout = seconds(
        chk,
        &join(path, "semaphore_task_timeout"),
        svc.semaphore_task_timeout,
    )
    .unwrap_or(Duration::from_secs(defaults::PROTOTYPE_TASK_TIMEOUT_S));
    let poll_interval = seconds(
        chk,
        &join(path, "semaphore_poll_interval"),
        svc.semaphore_poll_interval,
    )
    .unwrap_or(Duration::from_secs(defaults::PROTOTYPE_POLL_INTERVAL_S));
    let mut environment = BTreeMap::new();
    if let (None, Some(id)) = (&known_machine, &svc.semaphore_machine_id) {
        environment.insert("machine_id".to_owned(), id.clone());
    }
    let task = |template_id: i64| {
        StarterSpec::Semaphore(SemaphoreTaskSpec {
            template_id,
            environment: environment.clone(),
            task_timeout,
            poll_interval,
        })
    };
    match svc.semaphore_start_template_id {
        Some(id) => legacy.start = Some(task(id)),
        None => chk.report(
            join(path, "semaphore_enabled"),
            Problem::SemaphoreTemplateMissing,
        ),
    }
    legacy.stop = svc.semaphore_stop_template_id.map(task);
    legacy
}
