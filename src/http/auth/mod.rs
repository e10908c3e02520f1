//! Who may call which route: the route → scope table ([`ROUTES`]), the middleware that enforces
//! it ([`guard`]), dashboard logins ([`session`]) and the browser defences that hold with auth on
//! or off ([`browser`]: `allowed_hosts`, cross-site refusal, CSRF tokens, CORS).
//!
//! # Adding a route
//! Add one line to [`ROUTES`]: the path exactly as written in `.route(...)` and its [`Rule`].
//! A route missing from the table needs `admin` (closed by default). When the service is only
//! known from the body (the `/v1/requests` envelope, `/openai/v1/...`), use [`Rule::InHandler`]
//! and call [`require`] in the handler once the service is known, e.g.
//! `auth::require(request.extensions(), &Scope::proxy(&service))?`.
//!
//! # Order of checks
//! `allowed_hosts` (not for /healthz and /readyz) → cross-site refusal of state-changing `/v1` and dashboard requests → the
//! route's rule. With `auth.enabled: false` only the first two apply. A client address over its
//! failure budget gets 429 before any credential is looked at. Every refusal is an
//! `auth_denied` event naming the key by name and prefix only; use of a key is an
//! `auth_allowed` event at most once a minute per key (with `last_used_at`).

pub mod browser;
pub mod session;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use hestia_actors::events::{ActivityEvent, ActivityKind};
use hestia_actors::persistence::PersistenceHandle;
use serde_json::json;

use crate::auth::keys::{KeyEntry, KeyRing, KeySource, Verdict};
use crate::auth::limiter::FailureLimiter;
use crate::auth::scope::Scope;
use crate::config::{Config, Secret};
use crate::http::AppState;
use crate::http::problem::Problem;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Nothing: liveness and readiness probes.
    Public,
    /// `/metrics`: nothing when `auth.public_metrics`, else `read`.
    Metrics,
    Read,
    Admin,
    /// `control:<the {id} path parameter>`.
    Control,
    /// `proxy:<the {id} path parameter>`.
    Proxy,
    /// Any valid credential; the handler checks the scope with [`require`].
    InHandler,
    /// A dashboard page or action: a login session (or any admin credential).
    Dashboard,
    /// The login form: open, the handler counts failures.
    Login,
}

/// Every route and what it needs. One line per route; see the module doc.
pub const ROUTES: &[(&str, Rule)] = &[
    ("/healthz", Rule::Public),
    ("/readyz", Rule::Public),
    ("/metrics", Rule::Metrics),
    ("/v1/metrics", Rule::Read),
    ("/v1/services", Rule::Read),
    ("/v1/services/{id}/status", Rule::Read),
    ("/v1/services/{id}/start", Rule::Control),
    ("/v1/services/{id}/stop", Rule::Control),
    ("/v1/services/{id}/logs", Rule::Read),
    ("/v1/activity", Rule::Read),
    ("/v1/events", Rule::Read),
    ("/v1/machines", Rule::Read),
    ("/v1/strategies", Rule::Read),
    ("/v1/config", Rule::Read),
    ("/v1/config/reload", Rule::Admin),
    ("/v1/requests", Rule::InHandler),
    ("/services/{id}", Rule::Proxy),
    ("/services/{id}/", Rule::Proxy),
    ("/services/{id}/{*path}", Rule::Proxy),
    ("/openai/v1/models", Rule::Read),
    ("/openai/v1/models/{model}", Rule::Read),
    ("/openai/v1/{*path}", Rule::InHandler),
    ("/dashboard", Rule::Dashboard),
    ("/dashboard/login", Rule::Login),
    ("/dashboard/logout", Rule::Dashboard),
    ("/dashboard/services/{id}/{action}", Rule::Dashboard),
    ("/dashboard/services/{id}", Rule::Dashboard),
    ("/dashboard/machines", Rule::Dashboard),
    ("/dashboard/assets/dashboard.css", Rule::Public),
    ("/dashboard/assets/dashboard.js", Rule::Public),
];

/// The rule of a matched route (`None`: no route matched, the 404 fallback).
pub fn rule_of(matched: Option<&str>) -> Rule {
    match matched {
        None => Rule::InHandler,
        Some(path) => ROUTES
            .iter()
            .find(|(p, _)| *p == path)
            .map_or(Rule::Admin, |(_, rule)| *rule),
    }
}

/// Who is calling, as the guard established it (in the request's extensions).
#[derive(Debug, Clone)]
pub enum Principal {
    /// Auth is off: everyone may do everything.
    Open,
    Key {
        label: String,
        scopes: Vec<Scope>,
    },
    /// A dashboard login: an administrator.
    Session {
        username: String,
        id: String,
    },
}

impl Principal {
    pub fn allows(&self, need: &Scope) -> bool {
        match self {
            Principal::Open | Principal::Session { .. } => true,
            Principal::Key { scopes, .. } => scopes.iter().any(|s| s.grants(need)),
        }
    }

    /// The key's name and prefix, or the dashboard user, for events.
    pub fn label(&self) -> Option<String> {
        match self {
            Principal::Open => None,
            Principal::Key { label, .. } => Some(label.clone()),
            Principal::Session { username, .. } => Some(format!("dashboard:{username}")),
        }
    }
}

/// For handlers of [`Rule::InHandler`] routes: 403 unless the caller holds `need`.
pub fn require(extensions: &Extensions, need: &Scope) -> Result<(), Box<Problem>> {
    match extensions.get::<Principal>() {
        Some(principal) if principal.allows(need) => Ok(()),
        Some(principal) => Err(Box::new(forbidden(principal, need))),
        None => Err(Box::new(Problem::new(
            "forbidden",
            StatusCode::FORBIDDEN,
            format!("this needs the `{need}` scope"),
        ))),
    }
}

/// The dashboard's login: a user name and an argon2id hash.
#[derive(Debug, Clone)]
pub struct DashboardLogin {
    pub username: String,
    pub password_hash: Secret,
}

/// What the configuration says about auth (the `auth` block and `allowed_hosts`): read per
/// request from one snapshot, and replaced as one by a configuration reload.
pub struct Policy {
    pub enabled: bool,
    pub public_metrics: bool,
    config_keys: Vec<KeyEntry>,
    max_failed_attempts: u32,
    pub limiter: Arc<FailureLimiter>,
    pub login: Option<DashboardLogin>,
    pub allowed_hosts: Vec<String>,
}

impl Policy {
    /// The policy `config` describes; `previous` keeps its failure counts when the limit is the
    /// same.
    fn of(config: &Config, previous: Option<&Policy>) -> Policy {
        let max_failed_attempts = config.auth.max_failed_attempts;
        let limiter = match previous {
            Some(p) if p.max_failed_attempts == max_failed_attempts => p.limiter.clone(),
            _ => Arc::new(FailureLimiter::new(max_failed_attempts)),
        };
        Policy {
            enabled: config.auth.enabled,
            public_metrics: config.auth.public_metrics,
            config_keys: config
                .auth
                .keys
                .iter()
                .map(|k| KeyEntry::from_digest(&k.name, k.sha256, k.scopes.clone()))
                .collect(),
            max_failed_attempts,
            limiter,
            login: config
                .auth
                .dashboard_password_hash
                .clone()
                .map(|password_hash| DashboardLogin {
                    username: config.auth.dashboard_username.clone(),
                    password_hash,
                }),
            allowed_hosts: config.allowed_hosts.clone(),
        }
    }
}

/// Everything the guard needs, built by `serve`; its policy is replaced by reloads.
pub struct Guard {
    policy: ArcSwap<Policy>,
    /// Rebuilt from the database every `keys::REFRESH` by [`Guard::refresh_keys`], and from the
    /// configured keys when a reload changes them.
    pub keys: ArcSwap<KeyRing>,
    /// Read once at start: the CORS layer is built from it (a change needs a restart).
    pub cors_origins: Vec<String>,
    /// Random per process: CSRF tokens are derived from it and the session.
    csrf_secret: [u8; 32],
    /// When each key last produced an `auth_allowed` event.
    last_noted: Mutex<HashMap<String, Instant>>,
    persistence: PersistenceHandle,
}

/// How often one key's use is noted (`auth_allowed`, `last_used_at`).
const NOTE_EVERY: Duration = Duration::from_secs(60);

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("enabled", &self.policy().enabled)
            .finish_non_exhaustive()
    }
}

impl Guard {
    pub fn new(config: &Config, persistence: PersistenceHandle) -> Guard {
        let policy = Policy::of(config, None);
        Guard {
            keys: ArcSwap::from_pointee(KeyRing::new(&[], policy.config_keys.clone())),
            policy: ArcSwap::from_pointee(policy),
            cors_origins: config.cors_origins.clone(),
            csrf_secret: crate::auth::keys::random_bytes(),
            last_noted: Mutex::new(HashMap::new()),
            persistence,
        }
    }

    /// The policy in force now: take it once per request, so one request sees one policy.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// True when the guard has nothing to check on a request with these headers (auth off, no
    /// CORS origins, its host allowed): the listener then hands a proxied request to the proxy
    /// directly, past the router and this middleware, which would only let it through.
    pub fn waves_through(&self, headers: &axum::http::HeaderMap) -> bool {
        let host = headers.get(axum::http::header::HOST);
        self.waves_through_host(host.and_then(|v| v.to_str().ok()))
    }

    /// [`waves_through`](Self::waves_through) for a request whose `Host` header says `host`.
    pub fn waves_through_host(&self, host: Option<&str>) -> bool {
        let policy = self.policy.load();
        !policy.enabled
            && self.cors_origins.is_empty()
            && browser::check_host_named(&policy.allowed_hosts, host).is_ok()
    }

    /// A reloaded configuration: its auth settings and configured keys take over at once, as
    /// one (the keys made with `hestia keys` stay).
    pub async fn apply(
        &self,
        config: &Config,
    ) -> Result<(), hestia_actors::persistence::PersistenceError> {
        let next = Policy::of(config, Some(&self.policy()));
        self.policy.store(Arc::new(next));
        self.refresh_keys().await
    }

    /// Re-reads the keys from the database (keys made or revoked by the CLI meanwhile).
    pub async fn refresh_keys(&self) -> Result<(), hestia_actors::persistence::PersistenceError> {
        let rows = self.persistence.keys().await?;
        let configured = self.policy().config_keys.clone();
        self.keys.store(Arc::new(KeyRing::new(&rows, configured)));
        Ok(())
    }

    /// With auth on: true when no key and no dashboard password could let anyone in.
    pub fn nothing_could_pass(&self) -> bool {
        let policy = self.policy();
        policy.enabled && policy.login.is_none() && self.keys.load().nothing_could_pass(Utc::now())
    }

    /// Records and logs a refusal.
    fn denied(&self, request: &RequestFacts, reason: &str, key: Option<String>, status: u16) {
        tracing::info!(
            reason,
            key = key.as_deref().unwrap_or("-"),
            client = %request.client,
            method = %request.method,
            path = %request.path,
            status,
            "auth_denied"
        );
        let event = ActivityEvent::new(ActivityKind::AuthDenied, request.service.as_deref())
            .detail(json!({
                "reason": reason,
                "key": key,
                "status": status,
                "method": request.method,
                "path": request.path,
                "client": request.client.to_string(),
            }));
        self.persistence.record(event);
    }

    /// Notes a use of a credential: at most once per [`NOTE_EVERY`] per key.
    fn allowed(&self, request: &RequestFacts, principal: &Principal, prefix: Option<&str>) {
        let Some(label) = principal.label() else {
            return;
        };
        let now = Instant::now();
        {
            let mut noted = self.last_noted.lock().unwrap_or_else(|p| p.into_inner());
            if noted
                .get(&label)
                .is_some_and(|at| now.duration_since(*at) < NOTE_EVERY)
            {
                return;
            }
            noted.insert(label.clone(), now);
        }
        if let Some(prefix) = prefix {
            self.persistence.key_used(prefix, Utc::now());
        }
        tracing::debug!(key = %label, path = %request.path, "auth_allowed");
        let event = ActivityEvent::new(ActivityKind::AuthAllowed, request.service.as_deref())
            .detail(json!({"key": label, "method": request.method, "path": request.path}));
        self.persistence.record(event);
    }

    /// The CSRF token of a dashboard form for this session (`None`: auth off, no session).
    pub fn csrf_token(&self, session_id: Option<&str>) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(self.csrf_secret);
        hasher.update(session_id.unwrap_or("open").as_bytes());
        hex::encode(hasher.finalize())
    }
}

/// What events say about a request.
struct RequestFacts {
    client: IpAddr,
    method: String,
    path: String,
    service: Option<String>,
}

impl RequestFacts {
    async fn of(request: &mut Request) -> RequestFacts {
        let client = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        let (mut parts, body) = std::mem::take(request).into_parts();
        let service = ServiceParam::from_request_parts(&mut parts, &()).await.ok();
        *request = Request::from_parts(parts, body);
        RequestFacts {
            client,
            method: request.method().to_string(),
            path: request.uri().path().to_owned(),
            service: service.map(|ServiceParam(id)| id),
        }
    }
}

/// The middleware: hosts, cross-site, then the route's rule (see the module doc).
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let guard = &state.auth;
    let policy = guard.policy();
    let rule = rule_of(
        request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    // Health probes (container health checks call them by IP) answer whatever the Host.
    if rule != Rule::Public
        && let Err(problem) = browser::check_host(&policy.allowed_hosts, request.headers())
    {
        guard.denied(
            &RequestFacts::of(&mut request).await,
            "host_not_allowed",
            None,
            403,
        );
        return (*problem).into_response();
    }
    if browser::is_state_changing(request.method(), request.uri().path())
        && let Err(reason) = browser::check_same_site(&guard.cors_origins, request.headers())
    {
        guard.denied(&RequestFacts::of(&mut request).await, reason, None, 403);
        return Problem::new(
            "forbidden",
            StatusCode::FORBIDDEN,
            "cross-site requests may not change anything: send this from Hestia's own pages, \
             a client that sends no `Origin`, or an origin listed in `cors_origins`",
        )
        .into_response();
    }

    match rule {
        Rule::Public | Rule::Login => return next.run(request).await,
        Rule::Metrics if policy.public_metrics => return next.run(request).await,
        _ if !policy.enabled => {
            request.extensions_mut().insert(Principal::Open);
            return next.run(request).await;
        }
        _ => {}
    }
    // Only now, with auth on, is what events say about the request worth its allocations.
    let facts = RequestFacts::of(&mut request).await;
    let need = match rule {
        Rule::Public | Rule::Login => None,
        Rule::Metrics | Rule::Read => Some(Scope::Read),
        Rule::Admin | Rule::Dashboard => Some(Scope::Admin),
        Rule::Control => Some(Scope::control(facts.service.as_deref().unwrap_or_default())),
        Rule::Proxy => Some(Scope::proxy(facts.service.as_deref().unwrap_or_default())),
        Rule::InHandler => None,
    };

    if let Some(wait) = policy.limiter.blocked(facts.client) {
        return too_many(wait);
    }
    let (principal, prefix) = match authenticate(&state, &mut request).await {
        Ok(found) => found,
        Err(denial) => {
            if rule == Rule::Dashboard && request.method() == axum::http::Method::GET {
                return Redirect::to("/dashboard/login").into_response();
            }
            return denial.respond(guard, &facts);
        }
    };
    if let Some(need) = &need
        && !principal.allows(need)
    {
        guard.denied(&facts, "missing_scope", principal.label(), 403);
        return forbidden(&principal, need).into_response();
    }
    guard.allowed(&facts, &principal, prefix.as_deref());
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// The route's `{id}` path parameter: the service a proxy or control route is about.
struct ServiceParam(String);

impl<S: Send + Sync> FromRequestParts<S> for ServiceParam {
    type Rejection = ();

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(drop)?;
        params
            .iter()
            .find(|(name, _)| *name == "id")
            .map(|(_, value)| ServiceParam(value.to_owned()))
            .ok_or(())
    }
}

/// Why a request carried no usable credential.
enum Denial {
    Missing,
    Key {
        verdict: &'static str,
        key: Option<String>,
    },
    Session,
}

impl Denial {
    fn respond(self, guard: &Guard, facts: &RequestFacts) -> Response {
        let (reason, key, counted) = match self {
            Denial::Missing => ("missing_credentials", None, false),
            Denial::Key { verdict, key } => (verdict, key, true),
            Denial::Session => ("unknown_session", None, true),
        };
        if counted && let Some(wait) = guard.policy().limiter.failed(facts.client) {
            guard.denied(facts, "rate_limited", key, 429);
            return too_many(wait);
        }
        guard.denied(facts, reason, key, 401);
        unauthorized(reason)
    }
}

/// Finds and checks the request's credential: `X-API-Key`, `Authorization: Bearer`, or the
/// dashboard session cookie. The credential is taken off the request so it never goes upstream.
async fn authenticate(
    state: &AppState,
    request: &mut Request,
) -> Result<(Principal, Option<String>), Denial> {
    let headers = request.headers_mut();
    let presented = match take_key(headers) {
        Some(key) => key,
        None => return session::authenticate(state, headers).await,
    };
    let ring = state.auth.keys.load();
    match ring.check(&presented, Utc::now()) {
        Verdict::Valid(entry) => {
            let prefix = (entry.source == KeySource::Database)
                .then(|| entry.prefix.clone())
                .flatten();
            Ok((
                Principal::Key {
                    label: entry.label(),
                    scopes: entry.scopes.clone(),
                },
                prefix,
            ))
        }
        verdict @ Verdict::Unknown => Err(Denial::Key {
            verdict: verdict.reason(),
            key: None,
        }),
        verdict @ (Verdict::Altered(entry) | Verdict::Revoked(entry) | Verdict::Expired(entry)) => {
            Err(Denial::Key {
                verdict: verdict.reason(),
                key: Some(entry.label()),
            })
        }
    }
}

/// The presented API key, removed from the headers: `X-API-Key`, else a Bearer token.
fn take_key(headers: &mut HeaderMap) -> Option<String> {
    if let Some(value) = headers.remove("x-api-key") {
        return Some(String::from_utf8_lossy(value.as_bytes()).trim().to_owned());
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        })?;
    headers.remove(header::AUTHORIZATION);
    Some(bearer)
}

/// 401 `unauthorized` with a `WWW-Authenticate` challenge.
fn unauthorized(reason: &str) -> Response {
    let detail = if reason == "missing_credentials" {
        "this needs an API key: send it as `X-API-Key: <key>` or `Authorization: Bearer <key>` \
         (create one with `hestia keys create NAME --scope SCOPE`)"
            .to_owned()
    } else {
        format!(
            "the credential was refused ({}): check the key, or create a new one with \
             `hestia keys create`",
            reason.replace('_', " ")
        )
    };
    let mut response =
        Problem::new("unauthorized", StatusCode::UNAUTHORIZED, detail).into_response();
    let challenge = if reason == "missing_credentials" {
        r#"Bearer realm="hestia""#
    } else {
        r#"Bearer realm="hestia", error="invalid_token""#
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// 403 `forbidden`: the credential is good, the scope is missing.
fn forbidden(principal: &Principal, need: &Scope) -> Problem {
    let who = principal
        .label()
        .unwrap_or_else(|| "this caller".to_owned());
    Problem::new(
        "forbidden",
        StatusCode::FORBIDDEN,
        format!("key `{who}` does not hold the `{need}` scope this needs"),
    )
}

/// 429 with `Retry-After` (whole seconds, rounded up).
fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut problem = Problem::new(
        "too-many-requests",
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many failed attempts from this address: try again in {secs} s"),
    );
    problem.retry_after_secs = Some(secs.max(1));
    problem.into_response()
}
