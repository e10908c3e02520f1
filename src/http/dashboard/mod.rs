//! `/dashboard`: the web page, behind a login when auth is on (the guard and
//! `http::auth::session` handle that). For now a minimal page: every service with its state,
//! start and stop buttons, and a logout button. Every form carries the CSRF token of the
//! caller's session ([`csrf_field`]); actions check it before doing anything.

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};

use crate::http::AppState;
use crate::http::auth::browser::{check_csrf, csrf_subject};
use crate::http::auth::session::CsrfForm;
use crate::http::auth::{Guard, Principal};
use crate::http::problem::Problem;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/services/{id}/{action}", post(action))
}

/// Text made safe to put in HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The hidden CSRF input every dashboard form must carry.
pub fn csrf_field(guard: &Guard, principal: &Principal) -> String {
    let token = guard.csrf_token(csrf_subject(principal).as_deref());
    format!("<input type=\"hidden\" name=\"csrf\" value=\"{token}\">")
}

/// A form with one button posting to `action`.
fn button(action: &str, label: &str, csrf: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{}\" style=\"display:inline\">{csrf}<button>{}</button></form>",
        escape(action),
        escape(label)
    )
}

async fn page(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Html<String> {
    let csrf = csrf_field(&state.auth, &principal);
    let mut rows = String::new();
    for service in state.engine.services() {
        let status = service.status();
        let id = service.id();
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}{}</td></tr>",
            escape(id),
            escape(&format!("{:?}", status.state).to_lowercase()),
            button(&format!("/dashboard/services/{id}/start"), "start", &csrf),
            button(&format!("/dashboard/services/{id}/stop"), "stop", &csrf),
        ));
    }
    let logout = match &principal {
        Principal::Session { .. } => button("/dashboard/logout", "log out", &csrf),
        _ => String::new(),
    };
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Hestia</title></head><body>\
         <h1>Hestia</h1>{logout}<table><thead><tr><th>Service</th><th>State</th><th></th></tr>\
         </thead><tbody>{rows}</tbody></table></body></html>"
    ))
}

async fn action(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((id, action)): Path<(String, String)>,
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
