//! Keeping browsers out, with auth on or off: `allowed_hosts` (a page that rebinds its own DNS
//! name to Hestia's address still sends its own `Host`), the refusal of cross-site
//! state-changing requests (`Origin` not this host's, or `Sec-Fetch-Site: cross-site`; a plain
//! HTML form on another site can otherwise POST here), CSRF tokens on dashboard forms, and CORS
//! only for the origins `cors_origins` lists.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::{Guard, Principal};
use crate::http::problem::Problem;

/// 403 unless `allowed` is empty or the `Host` header is in it (`name` matches any port).
pub fn check_host(allowed: &[String], headers: &HeaderMap) -> Result<(), Box<Problem>> {
    check_host_named(
        allowed,
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    )
}

/// [`check_host`] for the `Host` header's text.
pub fn check_host_named(allowed: &[String], host: Option<&str>) -> Result<(), Box<Problem>> {
    if allowed.is_empty() {
        return Ok(());
    }
    let host = host.unwrap_or_default().to_ascii_lowercase();
    let name = host_name(&host);
    if allowed.iter().any(|a| *a == host || *a == name) {
        return Ok(());
    }
    Err(Box::new(Problem::new(
        "forbidden",
        StatusCode::FORBIDDEN,
        format!("host `{host}` is not in allowed_hosts"),
    )))
}

/// `host` without its port (`[::1]:8080` → `[::1]`).
fn host_name(host: &str) -> &str {
    match host.rfind(':') {
        Some(cut) if !host[cut..].contains(']') => &host[..cut],
        _ => host,
    }
}

/// Requests the cross-site check applies to: anything but a read, to `/v1/...` or the dashboard.
pub fn is_state_changing(method: &Method, path: &str) -> bool {
    let reading = matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    !reading
        && (path.starts_with("/v1/") || path == "/dashboard" || path.starts_with("/dashboard/"))
}

/// `Err(reason)` when the request comes from another site's page.
pub fn check_same_site(cors_origins: &[String], headers: &HeaderMap) -> Result<(), &'static str> {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase());
    let listed = origin
        .as_deref()
        .is_some_and(|o| cors_origins.iter().any(|c| c == o));
    if listed {
        return Ok(());
    }
    let fetch_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if fetch_site.eq_ignore_ascii_case("cross-site") {
        return Err("cross_site");
    }
    let Some(origin) = origin else {
        // No `Origin`: not a browser's cross-origin request (browsers send it on every POST).
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let authority = origin.split_once("://").map(|(_, a)| a);
    if authority.is_some_and(|a| a == host) {
        Ok(())
    } else {
        Err("foreign_origin")
    }
}

/// 403 unless `token` is the CSRF token of `principal`'s forms.
pub fn check_csrf(guard: &Guard, principal: &Principal, token: &str) -> Result<(), Box<Problem>> {
    let expected = guard.csrf_token(csrf_subject(principal).as_deref());
    if bool::from(expected.as_bytes().ct_eq(token.as_bytes())) {
        return Ok(());
    }
    let key = principal.label();
    tracing::info!(
        reason = "csrf",
        key = key.as_deref().unwrap_or("-"),
        status = 403,
        "auth_denied"
    );
    let event = hestia_actors::events::ActivityEvent::new(
        hestia_actors::events::ActivityKind::AuthDenied,
        None,
    )
    .detail(serde_json::json!({"reason": "csrf", "key": key, "status": 403}));
    guard.persistence.record(event);
    Err(Box::new(Problem::new(
        "forbidden",
        StatusCode::FORBIDDEN,
        "the form's CSRF token is missing or wrong: reload the dashboard and try again",
    )))
}

/// What a principal's CSRF token is bound to.
pub fn csrf_subject(principal: &Principal) -> Option<String> {
    match principal {
        Principal::Open => None,
        Principal::Session { id, .. } => Some(id.clone()),
        Principal::Key { label, .. } => Some(label.clone()),
    }
}

/// Whether the request reached Hestia over https (directly, or through a proxy that says so).
pub fn came_over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// CORS for the listed origins only; `None` (no CORS headers at all) when none are listed.
pub fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([HeaderName::from_static("x-request-id"), header::RETRY_AFTER])
            .max_age(Duration::from_secs(600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    #[test]
    fn given_origins_when_checked_then_only_same_host_or_listed_ones_pass() {
        let own = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
        ]);
        assert_eq!(check_same_site(&[], &own), Ok(()));
        let evil = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example"),
        ]);
        assert_eq!(check_same_site(&[], &evil), Err("foreign_origin"));
        assert_eq!(
            check_same_site(&["http://evil.example".into()], &evil),
            Ok(())
        );
        let fetch = headers(&[("host", "h"), ("sec-fetch-site", "cross-site")]);
        assert_eq!(check_same_site(&[], &fetch), Err("cross_site"));
        assert_eq!(check_same_site(&[], &headers(&[("host", "h")])), Ok(()));
    }

    #[test]
    fn given_allowed_hosts_when_checked_then_names_match_any_port() {
        let allowed = vec!["hestia.lan".to_owned(), "127.0.0.1:8080".to_owned()];
        assert!(check_host(&allowed, &headers(&[("host", "hestia.lan:9000")])).is_ok());
        assert!(check_host(&allowed, &headers(&[("host", "127.0.0.1:8080")])).is_ok());
        assert!(check_host(&allowed, &headers(&[("host", "127.0.0.1:9")])).is_err());
        assert!(check_host(&allowed, &headers(&[("host", "evil.example")])).is_err());
        assert!(check_host(&[], &headers(&[("host", "evil.example")])).is_ok());
    }
}
