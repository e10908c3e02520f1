//! Who may call the fake: API tokens (`Authorization: Bearer`, matched the way Semaphore's
//! `auth.go` does) and login sessions (`POST /api/auth/login` sets the `semaphore` cookie).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde::Deserialize;

use super::http::empty;
use super::state::{FakeState, lock};

impl FakeState {
    /// Semaphore's `auth.go`: a header containing "bearer" is a token lookup (the whole header
    /// lower-cased), otherwise the session cookie.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        if let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            let value = value.to_ascii_lowercase();
            if value.contains("bearer") {
                let token = value.replacen("bearer ", "", 1);
                return self.tokens.contains(&token) || self.catalog.has_token(&token);
            }
        }
        let sessions = lock(&self.sessions);
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().strip_prefix("semaphore="))
            .any(|session| sessions.contains(session))
    }
}

pub(super) async fn require_auth(
    State(state): State<Arc<FakeState>>,
    request: Request,
    next: Next,
) -> Response {
    if state.authorized(request.headers()) {
        next.run(request).await
    } else {
        empty(StatusCode::UNAUTHORIZED)
    }
}

#[derive(Deserialize)]
struct Login {
    auth: String,
    password: String,
}

pub(super) async fn login(State(state): State<Arc<FakeState>>, body: Bytes) -> Response {
    let Ok(login) = serde_json::from_slice::<Login>(&body) else {
        return empty(StatusCode::BAD_REQUEST);
    };
    let name = login.auth.to_ascii_lowercase();
    let known = state
        .users
        .iter()
        .any(|(user, password)| user.to_ascii_lowercase() == name && *password == login.password);
    if !known {
        return empty(StatusCode::UNAUTHORIZED);
    }
    let session = uuid::Uuid::now_v7().simple().to_string();
    lock(&state.sessions).insert(session.clone());
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header(
            header::SET_COOKIE,
            format!("semaphore={session}; Path=/; HttpOnly"),
        )
        .body(Body::empty())
        .unwrap_or_else(|_| empty(StatusCode::INTERNAL_SERVER_ERROR))
}
