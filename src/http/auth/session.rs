//! Dashboard logins: `GET|POST /dashboard/login` and `POST /dashboard/logout`. A login checks
//! the configured user name and argon2id hash, then stores a session (the SHA-256 of a random
//! cookie value, with an expiry) in the database and sets the cookie: HttpOnly,
//! SameSite=Strict, and Secure when the request came over https. Failed logins count against
//! the client address like wrong keys.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use hestia_actors::persistence::entities::dashboard_sessions;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::{Denial, Principal, RequestFacts, browser};
use crate::auth::keys::{digest, random_bytes};
use crate::http::AppState;
use crate::http::html::escape;
use crate::http::problem::Problem;

/// The session cookie's name.
pub const COOKIE: &str = "hestia_session";

/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard/login", get(login_page).post(login))
        .route("/dashboard/logout", post(logout))
}

/// The session cookie's value, if the request has one.
pub fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// Takes the session cookie off `headers` (it never goes upstream) and checks it.
pub(super) async fn authenticate(
    state: &AppState,
    headers: &mut HeaderMap,
) -> Result<(Principal, Option<String>), Denial> {
    let Some(value) = cookie_value(headers) else {
        return Err(Denial::Missing);
    };
    strip_cookie(headers);
    let id = hex::encode(digest(&value));
    match state.engine.persistence().session(&id).await {
        Ok(Some(row)) => Ok((
            Principal::Session {
                username: row.username,
                id,
            },
            None,
        )),
        Ok(None) => Err(Denial::Session),
        Err(err) => {
            tracing::error!(error = %err, "reading the session failed; treating it as unknown");
            Err(Denial::Session)
        }
    }
}

/// Rewrites the `Cookie` headers without the session cookie.
fn strip_cookie(headers: &mut HeaderMap) {
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !pair.starts_with(&format!("{COOKIE}=")))
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, value);
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// A minimal login form; `error` is shown above it.
fn login_html(error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\">{}</p>", escape(e)))
        .unwrap_or_default();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Hestia: log in</title></head>\
         <body><h1>Hestia</h1>{error}<form method=\"post\" action=\"/dashboard/login\">\
         <label>User <input name=\"username\" autocomplete=\"username\"></label> \
         <label>Password <input name=\"password\" type=\"password\" \
         autocomplete=\"current-password\"></label> <button>Log in</button></form></body></html>"
    )
}

async fn login_page(State(state): State<AppState>) -> Response {
    if !state.auth.policy().enabled {
        return Redirect::to("/dashboard").into_response();
    }
    Html(login_html(None)).into_response()
}

async fn login(
    State(state): State<AppState>,
    extensions: Extensions,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let guard = &state.auth;
    let policy = guard.policy();
    if !policy.enabled {
        return Redirect::to("/dashboard").into_response();
    }
    let facts = RequestFacts {
        client: extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |c| c.0.ip()),
        method: "POST".into(),
        path: "/dashboard/login".into(),
        service: None,
    };
    if let Some(wait) = policy.limiter.blocked(facts.client) {
        return super::too_many(wait);
    }
    let Ok(Form(form)) = form else {
        return Problem::new(
            "invalid-request",
            StatusCode::BAD_REQUEST,
            "send the form fields `username` and `password` (application/x-www-form-urlencoded)",
        )
        .into_response();
    };
    let Some(login) = policy.login.clone() else {
        guard.denied(&facts, "no_dashboard_password", None, 401);
        return (
            StatusCode::UNAUTHORIZED,
            Html(login_html(Some(
                "no dashboard password is configured: set auth.dashboard_password_hash \
                 (from `hestia hash-password`)",
            ))),
        )
            .into_response();
    };
    let user_ok = bool::from(form.username.as_bytes().ct_eq(login.username.as_bytes()));
    let password = form.password;
    let password_ok = tokio::task::spawn_blocking(move || {
        crate::auth::password::verify(&password, login.password_hash.expose())
    })
    .await
    .unwrap_or(false);
    if !(user_ok && password_ok) {
        if let Some(wait) = policy.limiter.failed(facts.client) {
            guard.denied(&facts, "rate_limited", None, 429);
            return super::too_many(wait);
        }
        guard.denied(&facts, "wrong_password", None, 401);
        return (
            StatusCode::UNAUTHORIZED,
            Html(login_html(Some("wrong user name or password"))),
        )
            .into_response();
    }
    let token = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    let now = Utc::now();
    let session = dashboard_sessions::Model {
        id: hex::encode(digest(&token)),
        username: form.username.clone(),
        created_at: now,
        expires_at: now + SESSION_TTL,
    };
    if let Err(err) = state.engine.persistence().create_session(session).await {
        tracing::error!(error = %err, "storing a dashboard session failed");
        return Problem::new(
            "unavailable",
            StatusCode::SERVICE_UNAVAILABLE,
            "the session could not be stored; try again",
        )
        .into_response();
    }
    let principal = Principal::Session {
        username: form.username,
        id: String::new(),
    };
    guard.allowed(&facts, &principal, None);
    let secure = if browser::came_over_https(&headers) {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_TTL.as_secs()
    );
    let mut response = Redirect::to("/dashboard").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// The CSRF field every dashboard form carries.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let csrf = form.map(|Form(f)| f.csrf).unwrap_or_default();
    if let Err(problem) = browser::check_csrf(&state.auth, &principal, &csrf) {
        return (*problem).into_response();
    }
    if let Principal::Session { id, .. } = &principal
        && let Err(err) = state.engine.persistence().delete_session(id).await
    {
        tracing::error!(error = %err, "deleting a dashboard session failed");
    }
    let mut response = Redirect::to("/dashboard/login").into_response();
    let clear = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&clear) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}
