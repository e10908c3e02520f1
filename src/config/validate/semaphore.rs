//! The Semaphore server (`semaphore:`, its prototype flat keys and the `SEMAPHORE_*` variables),
//! and who uses it: a service or wake-up that needs Semaphore without one configured is refused.

use super::*;

pub(super) fn semaphore(
    raw: &RawConfig,
    env: &Overrides,
    chk: &mut Checker<'_>,
) -> Option<SemaphoreConfig> {
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
        project_id: keys.project_id.unwrap_or(defaults::SEMAPHORE_PROJECT_ID),
        timeout: semaphore_timeout(env, chk)
            .or(keys.timeout)
            .unwrap_or(Duration::from_millis(defaults::SEMAPHORE_TIMEOUT_MS)),
    })
}

/// `SEMAPHORE_TIMEOUT`: seconds, fractions allowed.
pub(super) fn semaphore_timeout(env: &Overrides, chk: &mut Checker<'_>) -> Option<Duration> {
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

pub(super) fn pick<T: Clone>(value: &Option<Override<T>>) -> Option<T> {
    value.as_ref().map(|o| o.value.clone())
}

pub(super) fn semaphore_missing() -> Problem {
    Problem::SemaphoreNotConfigured {
        missing: "a server URL",
        fix: "set `semaphore.base_url` in the file or SEMAPHORE_BASE_URL in the environment",
    }
}

/// Everything that talks to Semaphore (starters and wake-ups): its key path, and what it is
/// (``service `llm` ``).
pub(super) fn semaphore_users(raw: &RawConfig) -> Vec<(String, String)> {
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
