//! `application/problem+json` (RFC 9457): the one place engine errors become HTTP responses.
//!
//! Every problem carries a stable `type` slug (design.md §2.2), the HTTP `status`, a human
//! `detail`, `service` where it applies, and `instance: "hestia"` so a client can tell a Hestia
//! error from one its upstream returned. 503s carry `Retry-After`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hestia_actors::error::ServiceError;
use serde::Serialize;

/// The base of every problem `type` URI.
pub const TYPE_BASE: &str = "https://hestia.dev/problems/";

/// `Retry-After` of a `shutting-down` answer: long enough for a restarted Hestia to listen again.
const SHUTTING_DOWN_RETRY_AFTER_SECS: u64 = 5;

/// One problem response.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub instance: &'static str,
    #[serde(skip)]
    pub retry_after_secs: Option<u64>,
}

impl Problem {
    /// A problem whose `detail` is [scrubbed](hestia_actors::redact::scrub): it may quote an
    /// error that holds a URL or a backend's output.
    pub fn new(slug: &str, status: StatusCode, detail: impl Into<String>) -> Problem {
        let detail: String = detail.into();
        Problem {
            kind: format!("{TYPE_BASE}{slug}"),
            title: title_of(slug),
            status: status.as_u16(),
            detail: hestia_actors::redact::scrubbed(&detail),
            service: None,
            instance: "hestia",
            retry_after_secs: (status == StatusCode::SERVICE_UNAVAILABLE).then_some(5),
        }
    }

    pub fn service(mut self, service: impl Into<String>) -> Problem {
        self.service = Some(service.into());
        self
    }

    /// The `type` slug, e.g. `queue-full`.
    pub fn slug(&self) -> &str {
        self.kind.trim_start_matches(TYPE_BASE)
    }
}

fn title_of(slug: &str) -> &'static str {
    match slug {
        "unknown-service" => "Unknown service",
        "queue-full" => "Queue full",
        "queue-timeout" => "Timed out waiting for the service",
        "start-failed" => "Service failed to start",
        "upstream-unreachable" => "Upstream unreachable",
        "upstream-timeout" => "Upstream timed out",
        "unauthorized" => "Unauthorized",
        "forbidden" => "Forbidden",
        "invalid-request" => "Invalid request",
        "payload-too-large" => "Payload too large",
        "conflict" => "Conflict",
        "not-found" => "Not found",
        "unknown-model" => "Unknown model",
        "unavailable" => "Service unavailable",
        "too-many-requests" => "Too many requests",
        "overloaded" => "Hestia is overloaded",
        "shutting-down" => "Hestia is shutting down",
        "internal-error" => "Internal error",
        _ => "Error",
    }
}

impl From<ServiceError> for Problem {
    fn from(error: ServiceError) -> Problem {
        let status = match &error {
            ServiceError::UnknownService { .. } => StatusCode::NOT_FOUND,
            ServiceError::Conflict { .. } => StatusCode::CONFLICT,
            ServiceError::QueueTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ServiceError::QueueFull { .. }
            | ServiceError::StartFailed { .. }
            | ServiceError::Unavailable { .. }
            | ServiceError::ShuttingDown { .. } => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut problem =
            Problem::new(error.problem_type(), status, error.to_string()).service(error.service());
        problem.retry_after_secs = match error {
            ServiceError::QueueFull { .. } => Some(1),
            ServiceError::ShuttingDown { .. } => Some(SHUTTING_DOWN_RETRY_AFTER_SECS),
            _ => problem.retry_after_secs,
        };
        problem
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after_secs;
        let mut response = (status, Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl IntoResponse for crate::http::ApiError {
    fn into_response(self) -> Response {
        Problem::from(self.0).into_response()
    }
}
