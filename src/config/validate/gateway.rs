//! The gateway's own keys: where it listens, its database, logging, the `http:` limits, which
//! hosts and origins it accepts, and where strategy plugins live.

use super::*;

pub(super) fn listen(raw: &RawConfig, env: &Overrides, chk: &mut Checker<'_>) -> SocketAddr {
    let (text, var) = match (&env.listen, &raw.listen) {
        (Some(o), _) => (o.value.as_str(), Some(o.var)),
        (None, Some(text)) => (text.as_str(), None),
        (None, None) => (defaults::LISTEN, None),
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

pub(super) fn database_url(raw: &RawConfig, env: &Overrides, chk: &mut Checker<'_>) -> String {
    let (url, var) = match (&env.database_url, &raw.database_url) {
        (Some(o), _) => (o.value.clone(), Some(o.var)),
        (None, Some(url)) => (url.clone(), None),
        (None, None) => (defaults::DATABASE_URL.to_owned(), None),
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

pub(super) fn log(raw: Option<&RawLog>, env: &Overrides, chk: &mut Checker<'_>) -> LogConfig {
    let (level, var) = match (&env.log, raw.and_then(|l| l.level.as_ref())) {
        (Some(o), _) => (o.value.clone(), Some(o.var)),
        (None, Some(level)) => (level.clone(), None),
        (None, None) => (defaults::LOG_LEVEL.to_owned(), None),
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

/// `allowed_hosts`: host names or `host:port`, lower-cased.
pub(super) fn allowed_hosts(raw: &[String], chk: &mut Checker<'_>) -> Vec<String> {
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
pub(super) fn cors_origins(raw: &[String], chk: &mut Checker<'_>) -> Vec<String> {
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

/// `strategies_dir`, relative to the config file; default `strategies` beside it.
pub(super) fn strategies_dir(raw: &RawConfig, source_path: &Path) -> PathBuf {
    let beside = source_path.parent().unwrap_or(Path::new("."));
    beside.join(
        raw.strategies_dir
            .as_deref()
            .unwrap_or(Path::new(defaults::STRATEGIES_DIR)),
    )
}

/// The plugins a service may name: `NAME.rhai` files there now, built-in names excepted (the
/// plugin host refuses those).
pub(super) fn plugin_names(dir: &Path) -> Vec<String> {
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

pub(super) fn http(raw: Option<&RawHttp>, chk: &mut Checker<'_>) -> HttpConfig {
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
        defaults::HEAD_TIMEOUT_MS,
    );
    let keep_alive_timeout = timeout(
        "keep_alive_timeout_ms",
        raw.keep_alive_timeout_ms,
        defaults::KEEP_ALIVE_TIMEOUT_MS,
    );
    let body_timeout = timeout(
        "body_timeout_ms",
        raw.body_timeout_ms,
        defaults::BODY_TIMEOUT_MS,
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

pub(super) fn strategy_body_prefix_bytes(raw: &RawConfig, chk: &mut Checker<'_>) -> usize {
    const MAX: u64 = 16 * 1024 * 1024;
    match raw.strategy_body_prefix_bytes {
        None => defaults::STRATEGY_BODY_PREFIX_BYTES,
        Some(bytes @ 1..=MAX) => bytes as usize,
        Some(bytes) => {
            chk.report(
                "strategy_body_prefix_bytes",
                Problem::OutOfRange {
                    value: bytes.to_string(),
                    expected: "between 1 and 16777216 bytes",
                },
            );
            defaults::STRATEGY_BODY_PREFIX_BYTES
        }
    }
}

pub(super) fn max_envelope_memory_bytes(raw: &RawConfig, chk: &mut Checker<'_>) -> u64 {
    // One envelope of the largest size must fit, or it could never be served.
    const MIN: u64 = crate::http::envelope::MAX_BODY as u64;
    const MAX: u64 = 1 << 40;
    match raw.max_envelope_memory_bytes {
        None => defaults::MAX_ENVELOPE_MEMORY_BYTES,
        Some(bytes @ MIN..=MAX) => bytes,
        Some(bytes) => {
            chk.report(
                "max_envelope_memory_bytes",
                Problem::OutOfRange {
                    value: bytes.to_string(),
                    expected: "between 16777216 (one largest envelope) and 1099511627776 bytes",
                },
            );
            defaults::MAX_ENVELOPE_MEMORY_BYTES
        }
    }
}
