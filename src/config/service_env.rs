//! The prototype's per-service environment variables, `<SERVICE_ID>_<FIELD>` (the id upper-cased,
//! `-` and `.` written `_`): applied to the parsed file before validation, so a variable wins over
//! the file and can define a service of its own (the way compose files configure the prototype).
//! A value that does not parse is an error naming the variable; so is any later problem with a
//! key a variable set (the checker knows which key came from which variable).

use super::check::Checker;
use super::env::{SEMAPHORE_BASE_URL, ServiceField, ServiceVar, service_prefix};
use super::error::Problem;
use super::schema::{RawConfig, RawReadiness, RawRetry, RawService, Seconds};

/// Applies `vars` to `raw.services`.
pub(crate) fn apply(raw: &mut RawConfig, vars: &[ServiceVar], chk: &mut Checker<'_>) {
    for var in vars {
        let existing = raw
            .services
            .0
            .iter()
            .position(|(id, _)| service_prefix(id) == var.prefix);
        let index = match existing {
            Some(index) => index,
            // The global Semaphore URL is also the `semaphore` service's, as in the prototype,
            // but it never defines a service on its own.
            None if var.var == SEMAPHORE_BASE_URL => continue,
            None => match new_service(vars, &var.prefix) {
                Some((id, service)) => {
                    let path = format!("services.{id}");
                    chk.set_by_env(path.clone(), &var.var);
                    chk.warn(
                        path,
                        Problem::DefinedByEnvironment {
                            prefix: var.prefix.clone(),
                        },
                    );
                    raw.services.0.push((id, service));
                    raw.services.0.len() - 1
                }
                None => {
                    let id = service_id(&var.prefix);
                    chk.report_env(
                        &var.var,
                        &format!("services.{id}"),
                        Problem::EnvServiceNeedsBaseUrl {
                            var: format!("{}_BASE_URL", var.prefix),
                        },
                    );
                    continue;
                }
            },
        };
        let (id, service) = &mut raw.services.0[index];
        let base = format!("services.{id}");
        if let Some(key) = set(service, var, &base, chk) {
            chk.set_by_env(format!("{base}.{key}"), &var.var);
        }
    }
}

/// The id a variable-defined service gets: `OPEN_WEBUI` → `open-webui`.
fn service_id(prefix: &str) -> String {
    prefix.to_ascii_lowercase().replace('_', "-")
}

/// A service defined only by variables, when one of them gives its `BASE_URL`. Without
/// `HEALTH_URL` or `WARMUP_MS` it is ready at once, as in the prototype (warm-up 0).
fn new_service(vars: &[ServiceVar], prefix: &str) -> Option<(String, RawService)> {
    let base_url = vars
        .iter()
        .find(|v| v.prefix == prefix && v.field == ServiceField::BaseUrl)?;
    let service = RawService {
        base_url: base_url.value.clone(),
        warmup_ms: Some(0),
        ..RawService::default()
    };
    Some((service_id(prefix), service))
}

/// Sets the field `var` names; the key path (below the service) it set, or `None` when the
/// value did not parse (reported).
fn set(
    svc: &mut RawService,
    var: &ServiceVar,
    base: &str,
    chk: &mut Checker<'_>,
) -> Option<&'static str> {
    let text = var.value.as_str();
    let mut bad = |expected: &'static str, key: &str| {
        chk.report_env(
            &var.var,
            &format!("{base}.{key}"),
            Problem::BadValue {
                value: text.to_owned(),
                expected,
            },
        );
    };
    const WHOLE: &str = "a whole number ≥ 0";
    const SECONDS: &str = "a number of seconds (fractions allowed, e.g. 2.5)";
    macro_rules! parse {
        ($ty:ty, $expected:expr, $key:expr) => {
            match text.parse::<$ty>() {
                Ok(value) => value,
                Err(_) => {
                    bad($expected, $key);
                    return None;
                }
            }
        };
    }
    let key = match var.field {
        ServiceField::BaseUrl => {
            svc.base_url = text.to_owned();
            "base_url"
        }
        ServiceField::HealthUrl => match &mut svc.readiness {
            Some(RawReadiness::Http(probe)) => {
                probe.url = text.to_owned();
                "readiness.http.url"
            }
            readiness => {
                // The variable names an HTTP probe: it replaces a TCP probe or a warm-up.
                *readiness = None;
                svc.health_url = Some(text.to_owned());
                "health_url"
            }
        },
        ServiceField::WarmupMs => {
            let ms = parse!(u64, WHOLE, "warmup_ms");
            match &mut svc.readiness {
                Some(RawReadiness::WarmupMs(warmup)) => {
                    *warmup = ms;
                    "readiness.warmup_ms"
                }
                _ => {
                    svc.warmup_ms = Some(ms);
                    "warmup_ms"
                }
            }
        }
        ServiceField::RetryCount => {
            let count = parse!(u32, WHOLE, "retry_count");
            match &mut svc.retry {
                Some(RawRetry {
                    count: rich @ Some(_),
                    ..
                }) => {
                    *rich = Some(count);
                    "retry.count"
                }
                _ => {
                    svc.retry_count = Some(count);
                    "retry_count"
                }
            }
        }
        ServiceField::RetryDelayMs => {
            let delay = parse!(u64, WHOLE, "retry_delay_ms");
            match &mut svc.retry {
                Some(RawRetry {
                    delay_ms: rich @ Some(_),
                    ..
                }) => {
                    *rich = Some(delay);
                    "retry.delay_ms"
                }
                _ => {
                    svc.retry_delay_ms = Some(delay);
                    "retry_delay_ms"
                }
            }
        }
        ServiceField::IdleTimeoutMs => {
            let ms = parse!(
                u64,
                "a whole number ≥ 0 (0 = never stop)",
                "idle_timeout_ms"
            );
            svc.idle_timeout_ms = Some(i64::try_from(ms).unwrap_or(i64::MAX));
            "idle_timeout_ms"
        }
        ServiceField::FallbackUrl => {
            svc.fallback_url = Some(text.to_owned());
            "fallback_url"
        }
        ServiceField::QueueSize => {
            let size = parse!(u64, "a whole number ≥ 1", "queue_size");
            svc.queue_size = Some(i64::try_from(size).unwrap_or(i64::MAX));
            "queue_size"
        }
        ServiceField::RequestTimeoutSeconds => {
            let secs = parse!(f64, SECONDS, "request_timeout_seconds");
            svc.request_timeout_seconds = Some(Seconds(secs));
            "request_timeout_seconds"
        }
        ServiceField::SemaphoreEnabled => {
            let enabled = match text.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => {
                    bad(
                        "true or false (also 1/0, yes/no, on/off)",
                        "semaphore_enabled",
                    );
                    return None;
                }
            };
            svc.semaphore_enabled = Some(enabled);
            "semaphore_enabled"
        }
        ServiceField::SemaphoreMachineId => {
            svc.semaphore_machine_id = Some(text.to_owned());
            "semaphore_machine_id"
        }
        ServiceField::SemaphoreStartTemplateId => {
            let id = parse!(
                i64,
                "a template id (a whole number)",
                "semaphore_start_template_id"
            );
            svc.semaphore_start_template_id = Some(id);
            "semaphore_start_template_id"
        }
        ServiceField::SemaphoreStopTemplateId => {
            let id = parse!(
                i64,
                "a template id (a whole number)",
                "semaphore_stop_template_id"
            );
            svc.semaphore_stop_template_id = Some(id);
            "semaphore_stop_template_id"
        }
        ServiceField::SemaphoreTaskTimeout => {
            let secs = parse!(f64, SECONDS, "semaphore_task_timeout");
            svc.semaphore_task_timeout = Some(Seconds(secs));
            "semaphore_task_timeout"
        }
        ServiceField::SemaphorePollInterval => {
            let secs = parse!(f64, SECONDS, "semaphore_poll_interval");
            svc.semaphore_poll_interval = Some(Seconds(secs));
            "semaphore_poll_interval"
        }
    };
    Some(key)
}
