//! How a service starts and stops (`command`, `http`, `semaphore`, `none`) and how it is known to
//! be ready (HTTP or TCP probe, warm-up, or the prototype's `health_url` / `warmup_ms`).

use super::*;

pub(super) fn starter(raw: &RawStarter, path: &str, chk: &mut Checker<'_>) -> StarterSpec {
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
                stop_grace: ms(cmd.stop_grace_ms, defaults::STOP_GRACE_MS),
            })
        }
        RawStarter::Http(hook) => {
            check_url(chk, &format!("{path}.http.url"), &hook.url);
            let method = hook
                .method
                .as_deref()
                .unwrap_or(defaults::HOOK_METHOD)
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
                timeout: ms(hook.timeout_ms, defaults::HOOK_TIMEOUT_MS),
            })
        }
        RawStarter::Semaphore(task) => StarterSpec::Semaphore(semaphore_task(task)),
    }
}

pub(super) fn semaphore_task(task: &RawSemaphoreTask) -> SemaphoreTaskSpec {
    SemaphoreTaskSpec {
        template_id: task.template_id,
        environment: task.environment.clone(),
        task_timeout: ms(task.task_timeout_ms, defaults::TASK_TIMEOUT_MS),
        poll_interval: ms(task.poll_interval_ms, defaults::POLL_INTERVAL_MS),
    }
}

pub(super) fn readiness(svc: &RawService, path: &str, chk: &mut Checker<'_>) -> ReadinessSpec {
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
            expect_status: expect_status_default(),
            interval: ms(None, defaults::PROBE_INTERVAL_MS),
            timeout: ms(None, defaults::PROBE_TIMEOUT_MS),
            health_interval: ms(None, defaults::HEALTH_INTERVAL_MS),
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

pub(super) fn rich_readiness(
    raw: &RawReadiness,
    path: &str,
    chk: &mut Checker<'_>,
) -> ReadinessSpec {
    match raw {
        RawReadiness::Http(http) => {
            check_url(chk, &format!("{path}.http.url"), &http.url);
            let expect_status = match &http.expect_status {
                None => expect_status_default(),
                Some(status) => status_range(status).unwrap_or_else(|| {
                    let value = match status {
                        RawStatus::Code(code) => code.to_string(),
                        RawStatus::Range(text) => text.clone(),
                    };
                    chk.report(
                        format!("{path}.http.expect_status"),
                        Problem::BadStatus { value },
                    );
                    expect_status_default()
                }),
            };
            ReadinessSpec::Http(HttpProbeSpec {
                url: http.url.clone(),
                expect_status,
                interval: ms(http.interval_ms, defaults::PROBE_INTERVAL_MS),
                timeout: ms(http.timeout_ms, defaults::PROBE_TIMEOUT_MS),
                health_interval: ms(http.health_interval_ms, defaults::HEALTH_INTERVAL_MS),
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
                interval: ms(tcp.interval_ms, defaults::PROBE_INTERVAL_MS),
                timeout: ms(tcp.timeout_ms, defaults::PROBE_TIMEOUT_MS),
                health_interval: ms(tcp.health_interval_ms, defaults::HEALTH_INTERVAL_MS),
            })
        }
        RawReadiness::WarmupMs(warmup) => ReadinessSpec::Warmup(Duration::from_millis(*warmup)),
    }
}

pub(super) fn status_range(status: &RawStatus) -> Option<StatusRange> {
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

pub(super) fn check_host_port(address: &str) -> Result<(), String> {
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

/// The status codes a probe accepts when it names none.
fn expect_status_default() -> StatusRange {
    let (min, max) = defaults::EXPECT_STATUS;
    StatusRange { min, max }
}
