//! Keeps secrets out of everything Hestia prints, stores or returns — the one place that knows
//! what a secret is:
//! - in a URL: the password of its user-info (or a user-info alone, a token) and its query values
//!   ([`redact_url`]; [`redact_urls`] does it to every URL inside a text);
//! - in a configuration: those parts of every configured URL (and of URLs inside command
//!   arguments and environment values), header values, the Semaphore token and password, and
//!   values whose names look secret (`*TOKEN*`, `*PASSWORD*`, `*KEY*`, ...) in command and task
//!   environments and `--name=value` arguments ([`configured_secrets`]; `src/config` adds the
//!   auth settings);
//! - wherever text leaves Hestia (its log, API answers, events, the database, service logs and
//!   start diagnoses): [`scrub`] redacts the URLs in it and masks every secret [`remember`]ed.
//!
//! The known secrets are process-wide, like Hestia's log, and only grow: a secret a reload
//! removed stays masked in what a backend started with it still prints.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use aho_corasick::{AhoCorasick, MatchKind};
use arc_swap::ArcSwap;

use crate::spec::{EngineSpec, HttpHookSpec, StarterSpec, WakeSpec};

/// What a secret is replaced by.
pub const MASK: &str = "***";

/// Shorter values are not masked in free text: they would blot out ordinary words.
const MIN_SECRET_LEN: usize = 3;

/// Header values that are never secret, so masking them would only blot out ordinary text.
const PLAIN_HEADERS: [&str; 8] = [
    "accept",
    "accept-encoding",
    "accept-language",
    "cache-control",
    "connection",
    "content-length",
    "content-type",
    "user-agent",
];

/// Words that make a name (environment variable, query parameter, argument) hold a secret.
const SECRET_WORDS: [&str; 11] = [
    "token",
    "secret",
    "passw",
    "pwd",
    "key",
    "auth",
    "credential",
    "cookie",
    "session",
    "signature",
    "private",
];

/// `scheme://user:secret@host/p?token=abc` → `scheme://user:***@host/p?token=***`.
///
/// Works on templates that are not valid URLs yet (`http://{address}:8080`), so it is string-based.
pub fn redact_url(raw: &str) -> String {
    let (base, query) = match raw.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (raw, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                    if userinfo.contains(':') {
                        format!("{scheme}://{user}:{MASK}@{host}{path}")
                    } else {
                        format!("{scheme}://{MASK}@{host}{path}")
                    }
                }
                None => base.to_owned(),
            }
        }
        None => base.to_owned(),
    };
    if let Some(query) = query {
        let masked: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) => format!("{key}={MASK}"),
                None => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&masked.join("&"));
    }
    out
}

/// Every URL (`scheme://...`) inside `text` passed through [`redact_url`]. A URL ends at white
/// space, a quote, `<`, `>`, `)`, a backtick, a backslash or a terminal escape; trailing
/// punctuation is not part of it.
pub fn redact_urls(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        // Scheme characters are ASCII, so the one before the scheme ends where it starts + 1.
        let scheme_start = rest[..at]
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let after = &rest[at + 3..];
        let len = after
            .find(|c: char| {
                c.is_whitespace()
                    || matches!(c, '"' | '\'' | '<' | '>' | ')' | '`' | '\\' | '\u{1b}')
            })
            .unwrap_or(after.len());
        let url_end = at
            + 3
            + after[..len]
                .trim_end_matches(['.', ',', ';', ':', '!'])
                .len();
        if scheme_start == at {
            // `://` with no scheme before it: not a URL.
            out.push_str(&rest[..at + 3]);
            rest = &rest[at + 3..];
            continue;
        }
        out.push_str(&rest[..scheme_start]);
        out.push_str(&redact_url(&rest[scheme_start..url_end]));
        rest = &rest[url_end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Whether a name (an environment variable, a query parameter, a header) says its value is secret.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|word| name.contains(word))
}

/// The secret parts of one URL: its user-info password (or a user-info alone) and the values of
/// its query parameters with secret names.
pub fn url_secrets(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    if let Some((_, rest)) = base.split_once("://") {
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            match userinfo.split_once(':') {
                Some((_, password)) => found.push(password.to_owned()),
                None => found.push(userinfo.to_owned()),
            }
        }
    }
    for pair in query.split('&') {
        if let Some((name, value)) = pair.split_once('=')
            && is_secret_name(name)
        {
            found.push(value.to_owned());
        }
    }
    found
}

/// Every secret value in `spec` (see the module doc for what counts), unsorted, may repeat.
pub fn configured_secrets(spec: &EngineSpec) -> Vec<String> {
    let mut found = Vec::new();
    let urls = |text: &str, found: &mut Vec<String>| found.extend(url_secrets(text));
    for service in &spec.services {
        urls(&service.base_url, &mut found);
        if let Some(url) = &service.policy.fallback_url {
            urls(url, &mut found);
        }
        for instance in &service.instances {
            urls(&instance.url, &mut found);
        }
        if let Some(routing) = &service.model_routing {
            for url in routing.by_model.values() {
                urls(url, &mut found);
            }
        }
        match &service.readiness {
            crate::spec::ReadinessSpec::Http(probe) => urls(&probe.url, &mut found),
            crate::spec::ReadinessSpec::Tcp(probe) => urls(&probe.address, &mut found),
            crate::spec::ReadinessSpec::Warmup(_) => {}
        }
        for starter in std::iter::once(&service.start).chain(&service.stop) {
            starter_secrets(starter, &mut found);
        }
    }
    for machine in &spec.machines {
        urls(&machine.address, &mut found);
        if let Some(WakeSpec::Semaphore(task)) = &machine.wake {
            named_values(&task.environment, &mut found);
        }
    }
    if let Some(semaphore) = &spec.semaphore {
        urls(&semaphore.base_url, &mut found);
        found.extend(semaphore.api_token.iter().cloned());
        found.extend(semaphore.password.iter().cloned());
    }
    found
}

fn starter_secrets(starter: &StarterSpec, found: &mut Vec<String>) {
    match starter {
        StarterSpec::None => {}
        StarterSpec::Command(command) => {
            named_values(&command.env, found);
            for arg in &command.args {
                found.extend(url_secrets(arg));
                if let Some((name, value)) = arg.split_once('=')
                    && is_secret_name(name)
                {
                    found.push(value.to_owned());
                }
            }
        }
        StarterSpec::Http(hook) => hook_secrets(hook, found),
        StarterSpec::Semaphore(task) => named_values(&task.environment, found),
    }
}

/// A webhook: its URL's secrets and its header values (all but a few plain ones); of an
/// `Authorization: Bearer T` header, `T` alone too.
fn hook_secrets(hook: &HttpHookSpec, found: &mut Vec<String>) {
    found.extend(url_secrets(&hook.url));
    for (name, value) in &hook.headers {
        if PLAIN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        found.push(value.clone());
        if let Some((_, credential)) = value.trim().rsplit_once(' ') {
            found.push(credential.to_owned());
        }
    }
}

/// Values whose names look secret, and the secrets of URLs among the others.
fn named_values<'a>(
    values: impl IntoIterator<Item = (&'a String, &'a String)>,
    found: &mut Vec<String>,
) {
    for (name, value) in values {
        if is_secret_name(name) {
            found.push(value.clone());
        }
        found.extend(url_secrets(value));
    }
}

/// The secrets every [`scrub`] masks, with the matcher that finds them in one pass.
#[derive(Default)]
struct Known {
    values: BTreeSet<String>,
    matcher: Option<AhoCorasick>,
}

static KNOWN: LazyLock<ArcSwap<Known>> = LazyLock::new(ArcSwap::default);
/// Serialises [`remember`]: two reloads must not each drop the other's secrets.
static GROWING: Mutex<()> = Mutex::new(());

/// From now on [`scrub`] masks these secrets in this process (with their percent-decoded and
/// JSON-escaped spellings). Values shorter than 3 characters are ignored.
pub fn remember<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) {
    let _growing = GROWING.lock().unwrap_or_else(PoisonError::into_inner);
    let known = KNOWN.load();
    let mut values = known.values.clone();
    for secret in secrets {
        for spelling in spellings(secret.as_ref()) {
            if spelling.len() >= MIN_SECRET_LEN {
                values.insert(spelling);
            }
        }
    }
    if values.len() == known.values.len() {
        return;
    }
    let matcher = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(&values)
        .ok();
    KNOWN.store(Arc::new(Known { values, matcher }));
}

/// How a secret may be written: as configured, percent-decoded (a URL's password), and escaped
/// inside a JSON string (the JSON log, event details).
fn spellings(secret: &str) -> Vec<String> {
    let mut all = vec![secret.to_owned()];
    let decoded = percent_decode(secret);
    if decoded != secret {
        all.push(decoded);
    }
    for spelling in all.clone() {
        let json = serde_json::to_string(&spelling).unwrap_or_default();
        let json = json.trim_matches('"');
        if json != spelling {
            all.push(json.to_owned());
        }
    }
    all
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

/// `text` with every [`remember`]ed secret replaced by `***`.
pub fn mask_secrets(text: &str) -> Cow<'_, str> {
    let known = KNOWN.load();
    match &known.matcher {
        Some(matcher) if matcher.is_match(text) => {
            let mut out = String::with_capacity(text.len());
            matcher.replace_all_with(text, &mut out, |_, _, out| {
                out.push_str(MASK);
                true
            });
            Cow::Owned(out)
        }
        _ => Cow::Borrowed(text),
    }
}

/// What any text leaving Hestia goes through: its URLs redacted, the known secrets masked.
pub fn scrub(text: &str) -> Cow<'_, str> {
    match redact_urls(text) {
        Cow::Borrowed(text) => mask_secrets(text),
        Cow::Owned(text) => Cow::Owned(mask_secrets(&text).into_owned()),
    }
}

/// [`scrub`] as an owned `String`.
pub fn scrubbed(text: &str) -> String {
    scrub(text).into_owned()
}

/// Whether `shown` is how [`scrub`] shows `raw` (a status shows its URL scrubbed; the engine
/// finds the target it names among the configured ones with this).
pub fn shows(shown: &str, raw: &str) -> bool {
    shown == raw || shown == scrub(raw)
}

/// [`scrub`] applied to every string (and object key) inside a JSON value.
pub fn scrub_json(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(text) => {
            if let Cow::Owned(clean) = scrub(text) {
                *text = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(scrub_json),
        Value::Object(map) => {
            let dirty: Vec<String> = map
                .keys()
                .filter(|k| matches!(scrub(k), Cow::Owned(_)))
                .cloned()
                .collect();
            for key in dirty {
                if let Some(item) = map.remove(&key) {
                    map.insert(scrubbed(&key), item);
                }
            }
            map.values_mut().for_each(scrub_json);
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::spec::{CommandSpec, SemaphoreConnection, ServiceSpec};

    #[test]
    fn plain_urls_and_templates_are_kept() {
        assert_eq!(
            redact_url("http://{address}:8080/v1"),
            "http://{address}:8080/v1"
        );
        assert_eq!(redact_url("http://127.0.0.1:9000"), "http://127.0.0.1:9000");
    }

    #[test]
    fn passwords_and_query_values_are_masked() {
        assert_eq!(
            redact_url("https://bob:hunter2@example.org/hook?token=abc&x"),
            "https://bob:***@example.org/hook?token=***&x"
        );
        assert_eq!(
            redact_url("https://tok@example.org"),
            "https://***@example.org"
        );
    }

    #[test]
    fn urls_inside_a_text_are_redacted_and_the_rest_is_kept() {
        assert_eq!(
            redact_urls(
                "error sending request for url (http://u:pw@h:1/start?token=t1): refused; \
                 see https://x.org."
            ),
            "error sending request for url (http://u:***@h:1/start?token=***): refused; \
             see https://x.org."
        );
        assert_eq!(
            redact_urls(r#"{"url":"http://a:b@c/?k=v","n":1}"#),
            r#"{"url":"http://a:***@c/?k=***","n":1}"#
        );
        assert_eq!(redact_urls("no url :// here"), "no url :// here");
        assert_eq!(
            redact_urls("é://x:y@h"),
            "é://x:y@h",
            "no ASCII scheme: not a URL"
        );
        assert_eq!(
            redact_urls("url=\u{1b}[3mhttp://h/?k=v\u{1b}[0m done"),
            "url=\u{1b}[3mhttp://h/?k=***\u{1b}[0m done"
        );
        assert!(matches!(redact_urls("plain text"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_url_names_its_secret_parts() {
        assert_eq!(
            url_secrets("http://u:pw1@h/p?token=t1&model=m&api_key=k1"),
            vec!["pw1", "t1", "k1"]
        );
        assert_eq!(url_secrets("http://tok123@h"), vec!["tok123"]);
        assert!(url_secrets("http://{address}:8080/?model=m").is_empty());
    }

    #[test]
    fn the_secrets_of_a_spec_are_found_and_remembered_ones_are_masked() {
        let command = CommandSpec {
            program: "serve".into(),
            args: vec![
                "--upstream=http://a:argpass77@h".into(),
                "--api-token=argtoken77".into(),
                "--port=8080".into(),
            ],
            env: BTreeMap::from([
                ("DB_PASSWORD".to_owned(), "envpass77".to_owned()),
                ("MODE".to_owned(), "fast".to_owned()),
            ]),
            cwd: None,
            stop_grace: std::time::Duration::from_secs(1),
        };
        let hook = HttpHookSpec {
            url: "http://u:hookpass77@h/start?token=hooktoken77".into(),
            method: "POST".into(),
            headers: BTreeMap::from([
                ("Authorization".to_owned(), "Bearer bearer77".to_owned()),
                ("Content-Type".to_owned(), "application/json".to_owned()),
            ]),
            body: None,
            timeout: std::time::Duration::from_secs(1),
        };
        let spec = EngineSpec {
            services: vec![ServiceSpec {
                start: StarterSpec::Command(command),
                stop: Some(StarterSpec::Http(hook)),
                ..sample_service("http://u:basepass77@127.0.0.1:1")
            }],
            semaphore: Some(SemaphoreConnection {
                base_url: "http://admin:sempass77@sem".into(),
                api_token: Some("semtoken77".into()),
                username: None,
                password: Some("sempassword77".into()),
                project_id: 1,
                timeout: std::time::Duration::from_secs(1),
            }),
            ..EngineSpec::default()
        };
        let found: BTreeSet<String> = configured_secrets(&spec).into_iter().collect();
        for secret in [
            "basepass77",
            "argpass77",
            "argtoken77",
            "envpass77",
            "hookpass77",
            "hooktoken77",
            "Bearer bearer77",
            "bearer77",
            "sempass77",
            "semtoken77",
            "sempassword77",
        ] {
            assert!(found.contains(secret), "{secret} not found in {found:?}");
        }
        for plain in ["fast", "8080", "application/json", "serve"] {
            assert!(!found.contains(plain), "{plain} is not a secret");
        }

        remember(&found);
        assert_eq!(
            scrub("the backend said: envpass77 and bearer77 (http://x:y@h/?token=z)"),
            "the backend said: *** and *** (http://x:***@h/?token=***)"
        );
        let mut json = serde_json::json!({"error": ["semtoken77!"], "n": 1});
        scrub_json(&mut json);
        assert_eq!(json, serde_json::json!({"error": ["***!"], "n": 1}));
    }

    #[test]
    fn a_remembered_secret_is_masked_in_its_other_spellings() {
        remember(["p%40ss\"word42"]);
        assert_eq!(mask_secrets("x p@ss\"word42 y"), "x *** y");
        assert_eq!(mask_secrets(r#"x p@ss\"word42 y"#), "x *** y");
        assert_eq!(mask_secrets("x p%40ss\"word42 y"), "x *** y");
        remember(["ab"]);
        assert_eq!(mask_secrets("ab"), "ab", "too short to mask");
    }

    fn sample_service(base_url: &str) -> ServiceSpec {
        ServiceSpec {
            id: "svc".into(),
            base_url: base_url.into(),
            start: StarterSpec::None,
            stop: None,
            readiness: crate::spec::ReadinessSpec::Warmup(std::time::Duration::ZERO),
            policy: crate::spec::StartPolicy::default(),
            queue: crate::spec::QueueSpec::default(),
            idle_timeout: None,
            machines: Vec::new(),
            tags: Vec::new(),
            instances: Vec::new(),
            strategy: None,
            fallback_strategy: None,
            model_routing: None,
            models: Vec::new(),
            upstream_timeout: std::time::Duration::from_secs(1),
            waiting_page: false,
            upstream_http2: false,
            max_concurrency: None,
        }
    }
}
