//! `/dashboard`: the operator's web view, behind a login when auth is on (the guard and
//! `http::auth::session` handle that). Server-rendered HTML and a little vanilla script, every
//! asset embedded in the binary ([`assets`]); the pages stay current from `GET /v1/events`.
//!
//! Pages: the services ([`services`]), one service ([`service`]: timeline, cold-start chart,
//! Semaphore task, log tail) and the machines ([`machines`]), in one frame ([`layout`]). Every
//! form carries the CSRF token of the caller's session ([`csrf_field`]); actions check it
//! before doing anything.

mod assets;
mod chart;
mod layout;
mod machines;
mod service;
mod services;

use crate::http::extract::ApiPath;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};

use crate::http::AppState;
use crate::http::auth::browser::{check_csrf, csrf_subject};
use crate::http::auth::session::CsrfForm;
use crate::http::auth::{Guard, Principal};
use crate::http::problem::Problem;
use layout::{Frame, Nav};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(services_page))
        .route("/dashboard/machines", get(machines_page))
        .route("/dashboard/services/{id}", get(service_page))
        .route("/dashboard/services/{id}/{action}", post(action))
        .route("/dashboard/assets/dashboard.css", get(assets::css))
        .route("/dashboard/assets/dashboard.js", get(assets::js))
}

/// The hidden CSRF input every dashboard form must carry.
pub fn csrf_field(guard: &Guard, principal: &Principal) -> String {
    let token = guard.csrf_token(csrf_subject(principal).as_deref());
    format!("<input type=\"hidden\" name=\"csrf\" value=\"{token}\">")
}

/// The logout button, for a logged-in caller.
fn logout(principal: &Principal, csrf: &str) -> String {
    match principal {
        Principal::Session { .. } => format!(
            "<form class=\"inline\" method=\"post\" action=\"/dashboard/logout\">{csrf}\
             <button type=\"submit\">Log out</button></form>"
        ),
        _ => String::new(),
    }
}

fn frame<'a>(
    state: &AppState,
    title: &'a str,
    nav: Nav,
    logout: &'a str,
    service: Option<&'a str>,
) -> Frame<'a> {
    Frame {
        title,
        nav,
        auth_enabled: state.inner.auth_enabled,
        logout,
        service,
    }
}

async fn services_page(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Html<String> {
    let csrf = csrf_field(&state.auth, &principal);
    let logout = logout(&principal, &csrf);
    let content = services::content(&state, &csrf);
    let frame = frame(&state, "Services", Nav::Services, &logout, None);
    Html(layout::page(&frame, &content))
}

async fn service_page(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Response {
    let service = match state.engine.service(&id) {
        Ok(service) => service,
        Err(err) => return Problem::from(err).into_response(),
    };
    let csrf = csrf_field(&state.auth, &principal);
    let logout = logout(&principal, &csrf);
    let content = service::content(&state, &service, &csrf).await;
    let frame = frame(&state, &id, Nav::Services, &logout, Some(&id));
    Html(layout::page(&frame, &content)).into_response()
}

async fn machines_page(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Html<String> {
    let csrf = csrf_field(&state.auth, &principal);
    let logout = logout(&principal, &csrf);
    let content = machines::content(&state).await;
    let frame = frame(&state, "Machines", Nav::Machines, &logout, None);
    Html(layout::page(&frame, &content))
}

async fn action(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath((id, action)): ApiPath<(String, String)>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let csrf = form.map(|Form(f)| f.csrf).unwrap_or_default();
    if let Err(problem) = check_csrf(&state.auth, &principal, &csrf) {
        return (*problem).into_response();
    }
    let service = match state.engine.service(&id) {
        Ok(service) => service,
        Err(err) => return Problem::from(err).into_response(),
    };
    let result = match action.as_str() {
        "start" => service.start().await.map(drop),
        "stop" => service.stop().await,
        other => {
            return Problem::new(
                "invalid-request",
                StatusCode::BAD_REQUEST,
                format!("`{other}` is not a dashboard action (start, stop)"),
            )
            .into_response();
        }
    };
    match result {
        Ok(_) => Redirect::to("/dashboard").into_response(),
        Err(err) => Problem::from(err).into_response(),
    }
}
