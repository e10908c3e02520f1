//! The waiting page: a browser that navigates to a service that is not ready gets, at once, a
//! small HTML page (the service, its state, time elapsed and the time its past starts took)
//! that turns into the service's own page when it is ready, or shows why the start failed.
//!
//! The proxy calls [`intercept`] first; it answers only browser navigations (`Sec-Fetch-Mode:
//! navigate`, or a GET whose `Accept` prefers `text/html`) to a service that is not ready and has
//! `waiting_page: auto`. Everything else — API clients above all — goes on to the queue as before.

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;
use hestia_actors::error::ServiceError;
use hestia_actors::persistence::AttemptOutcome;
use hestia_actors::service::{ServiceHandle, State as Lifecycle};

use crate::http::AppState;
use crate::http::html::{escape, json_in_script};

const PAGE: &str = include_str!("page.html");

/// How many past starts the expected duration is learned from.
const HISTORY: u64 = 20;

/// The waiting page, if this request is a browser navigation to a service that is not ready.
pub async fn intercept(
    state: &AppState,
    service: &ServiceHandle,
    method: &Method,
    headers: &HeaderMap,
) -> Option<Response> {
    // A ready service (nearly every request) is told apart before the headers are read.
    if method != Method::GET
        || service.status().state == Lifecycle::Ready
        || !is_navigation(method, headers)
    {
        return None;
    }
    let id = service.id();
    if !enabled(state, id) {
        return None;
    }
    // The navigation starts the service; one already starting is left alone.
    let note = match service.start().await {
        Ok(_) | Err(ServiceError::Conflict { .. }) => None,
        Err(error) => Some(error.to_string()),
    };
    let status = service.status();
    if status.state == Lifecycle::Ready {
        return None;
    }
    let expected_ms = expected_ms(state, id).await;
    let started_at = status.last_started_at.unwrap_or_else(Utc::now);
    let page = Page {
        service: id,
        state: status.state.as_str(),
        started_at_ms: started_at.timestamp_millis(),
        now_ms: Utc::now().timestamp_millis(),
        expected_ms,
        error: note.or_else(|| {
            (status.state == Lifecycle::Failed)
                .then(|| status.last_error.clone())
                .flatten()
        }),
    };
    Some(page.into_response())
}

/// A browser loading a page, not a script or an API client asking for data.
pub fn is_navigation(method: &Method, headers: &HeaderMap) -> bool {
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    is_navigation_by(
        method == Method::GET,
        text(&SEC_FETCH_MODE),
        text(&header::ACCEPT),
    )
}

const SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");

/// [`is_navigation`] for a request with these `sec-fetch-mode` and `accept` values.
pub fn is_navigation_by(is_get: bool, sec_fetch_mode: Option<&str>, accept: Option<&str>) -> bool {
    if !is_get {
        return false;
    }
    match sec_fetch_mode {
        Some(mode) => mode.eq_ignore_ascii_case("navigate"),
        None => accept.is_some_and(prefers_html),
    }
}

/// True when `text/html` is among the media types of the highest quality in an `Accept` value.
fn prefers_html(accept: &str) -> bool {
    let ranges: Vec<(&str, f32)> = accept
        .split(',')
        .filter_map(|range| {
            let mut parts = range.split(';');
            let media = parts.next()?.trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            Some((media, q))
        })
        .collect();
    let best = ranges.iter().map(|(_, q)| *q).fold(0.0_f32, f32::max);
    best > 0.0
        && ranges
            .iter()
            .any(|(media, q)| media.eq_ignore_ascii_case("text/html") && *q >= best)
}

fn enabled(state: &AppState, id: &str) -> bool {
    state
        .engine
        .spec()
        .services
        .iter()
        .find(|s| s.id == id)
        .is_none_or(|s| s.waiting_page)
}

/// The median duration of the service's recent successful starts, if it has any.
pub async fn expected_ms(state: &AppState, id: &str) -> Option<u64> {
    let attempts = state
        .engine
        .persistence()
        .start_attempts(id, HISTORY)
        .await
        .ok()?;
    let mut durations: Vec<u64> = attempts
        .iter()
        .filter(|a| a.outcome == AttemptOutcome::Success)
        .map(|a| a.duration_ms)
        .collect();
    durations.sort_unstable();
    durations.get(durations.len() / 2).copied()
}

/// What the page shows.
struct Page<'a> {
    service: &'a str,
    state: &'a str,
    started_at_ms: i64,
    now_ms: i64,
    expected_ms: Option<u64>,
    error: Option<String>,
}

impl IntoResponse for Page<'_> {
    fn into_response(self) -> Response {
        let expected = match self.expected_ms {
            Some(ms) => format!("usually ready in {:.1} s", ms as f64 / 1000.0),
            None => "no start recorded yet to compare with".to_owned(),
        };
        let body = PAGE
            .replace("{{service}}", &escape(self.service))
            .replace("{{state}}", &escape(self.state))
            .replace("{{expected}}", &escape(&expected))
            .replace("{{error}}", &escape(self.error.as_deref().unwrap_or("")))
            .replace("{{service_json}}", &json_in_script(self.service))
            .replace("{{started_at_ms}}", &self.started_at_ms.to_string())
            .replace("{{now_ms}}", &self.now_ms.to_string())
            .replace(
                "{{expected_ms}}",
                &self
                    .expected_ms
                    .map_or("null".to_owned(), |ms| ms.to_string()),
            );
        let mut response = (StatusCode::SERVICE_UNAVAILABLE, Html(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert("x-hestia-waiting-page", HeaderValue::from_static("1"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    axum::http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn browsers_navigating_get_the_page_and_api_clients_do_not() {
        let firefox = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(is_navigation(
            &Method::GET,
            &headers(&[("accept", firefox)])
        ));
        assert!(is_navigation(
            &Method::GET,
            &headers(&[("sec-fetch-mode", "navigate"), ("accept", "*/*")])
        ));
        // A page's own fetch() says so, whatever it accepts.
        assert!(!is_navigation(
            &Method::GET,
            &headers(&[("sec-fetch-mode", "cors"), ("accept", "text/html")])
        ));
        assert!(!is_navigation(&Method::GET, &headers(&[("accept", "*/*")])));
        assert!(!is_navigation(&Method::GET, &headers(&[])));
        assert!(!is_navigation(
            &Method::GET,
            &headers(&[("accept", "application/json, text/html;q=0.5")])
        ));
        assert!(!is_navigation(
            &Method::POST,
            &headers(&[("accept", firefox)])
        ));
    }
}
