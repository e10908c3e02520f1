//! `services.<id>`: the service's starters, readiness, start policy, queue, idle timeout, machines,
//! instances and strategies, with the prototype's flat keys merged in.

use super::starters::{readiness, starter};
use super::*;

pub(super) fn service(
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
    let idle_timeout = match svc.idle_timeout_ms.unwrap_or(defaults::IDLE_TIMEOUT_MS) {
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
                weight: inst.weight.unwrap_or(defaults::INSTANCE_WEIGHT),
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
                .unwrap_or_else(|| defaults::MODEL_KEY.to_owned()),
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
        upstream_timeout: ms(svc.upstream_timeout_ms, defaults::UPSTREAM_TIMEOUT_MS),
        waiting_page: svc.waiting_page != Some(super::super::schema::RawWaitingPage::Off),
        upstream_http2: svc.upstream_http2.unwrap_or(defaults::UPSTREAM_HTTP2),
        max_concurrency: max_concurrency(svc, &path, chk),
    }
}

/// `max_concurrency`: 0 is no limit; unset is the default.
pub(super) fn max_concurrency(
    svc: &RawService,
    path: &str,
    chk: &mut Checker<'_>,
) -> Option<usize> {
    match svc.max_concurrency {
        None => Some(defaults::MAX_CONCURRENCY),
        Some(0) => None,
        Some(n) => usize::try_from(n).ok().or_else(|| {
            chk.report(
                join(path, "max_concurrency"),
                Problem::OutOfRange {
                    value: n.to_string(),
                    expected: "≥ 0 (0 = no limit)",
                },
            );
            Some(defaults::MAX_CONCURRENCY)
        }),
    }
}

/// The service's strategy and fallback. `routing` means `model_router`: implied when no strategy
/// is named, and a prototype config naming another built-in beside `routing` keeps loading, that
/// built-in becoming the fallback for unmapped models.
pub(super) fn strategies(
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
pub(super) fn fallback_strategy(
    svc: &RawService,
    path: &str,
    chk: &mut Checker<'_>,
) -> Option<String> {
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
pub(super) fn check_models(raw: &RawConfig, chk: &mut Checker<'_>) {
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

pub(super) fn service_machines(
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

pub(super) fn policy(svc: &RawService, path: &str, chk: &mut Checker<'_>) -> StartPolicy {
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
        .unwrap_or(defaults::RETRY_BACKOFF);
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
        retry_count: retry_count.unwrap_or(defaults::RETRY_COUNT),
        retry_delay: ms(retry_delay, defaults::RETRY_DELAY_MS),
        backoff_factor: backoff,
        max_retry_delay: ms(
            retry.and_then(|r| r.max_delay_ms),
            defaults::RETRY_MAX_DELAY_MS,
        ),
        start_timeout: ms(svc.start_timeout_ms, defaults::START_TIMEOUT_MS),
        fallback_url: svc.fallback_url.clone(),
    }
}

pub(super) fn queue(svc: &RawService, path: &str, chk: &mut Checker<'_>) -> QueueSpec {
    let size = match svc.queue_size {
        None => defaults::QUEUE_SIZE,
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
                defaults::QUEUE_SIZE
            }),
    };
    let timeout = seconds(
        chk,
        &join(path, "request_timeout_seconds"),
        svc.request_timeout_seconds,
    )
    .unwrap_or(Duration::from_secs(defaults::REQUEST_TIMEOUT_SECONDS));
    QueueSpec { size, timeout }
}
