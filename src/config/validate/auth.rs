//! `auth:`: the dashboard login, API keys from the file and `HESTIA_API_KEYS`, the failure limit.

use super::*;

pub(super) fn auth(raw: Option<&RawAuth>, env: &Overrides, chk: &mut Checker<'_>) -> AuthConfig {
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
        enabled: raw
            .and_then(|a| a.enabled)
            .unwrap_or(defaults::AUTH_ENABLED),
        dashboard_username: raw
            .and_then(|a| a.dashboard_username.clone())
            .unwrap_or_else(|| defaults::DASHBOARD_USERNAME.to_owned()),
        dashboard_password_hash: hash,
        keys,
        public_metrics: raw
            .and_then(|a| a.public_metrics)
            .unwrap_or(defaults::PUBLIC_METRICS),
        max_failed_attempts: match raw.and_then(|a| a.max_failed_attempts) {
            Some(0) => {
                chk.report(
                    "auth.max_failed_attempts",
                    Problem::OutOfRange {
                        value: "0".into(),
                        expected: "at least 1",
                    },
                );
                defaults::MAX_FAILED_ATTEMPTS
            }
            Some(n) => n,
            None => defaults::MAX_FAILED_ATTEMPTS,
        },
    }
}

/// One `HESTIA_API_KEYS` entry, `name:sha256:scope,scope` (a scope may hold a `:` itself).
pub(super) fn env_key(entry: &str) -> Result<ConfigKey, Problem> {
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
