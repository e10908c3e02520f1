//! Extractors for the `/v1` API whose rejections are Hestia problems, not axum's plain text.
//!
//! `ApiJson<T>`, `ApiQuery<T>` and `ApiPath<T>` wrap axum's `Json`, `Query` and `Path`: a body,
//! query string or path segment that does not fit becomes `invalid-request` (400; 415 for a body
//! that is not JSON) carrying serde's message, which names the field and where it went wrong; a
//! body over the limit becomes `payload-too-large` (413).

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::http::problem::Problem;

/// A JSON request body of type `T`; rejections are problems.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_problem(&rejection)),
        }
    }
}

/// A query string of type `T`; rejections are problems.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(query_problem(&rejection)),
        }
    }
}

/// Path parameters of type `T` (a service id, ...); rejections are problems — e.g. a segment that
/// is not valid UTF-8 once percent-decoded.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(path_problem(&rejection)),
        }
    }
}

fn path_problem(rejection: &PathRejection) -> Problem {
    let status = match rejection.status() {
        StatusCode::INTERNAL_SERVER_ERROR => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    Problem::new(
        "invalid-request",
        status,
        format!("invalid path: {}", rejection.body_text()),
    )
}

/// The problem for a JSON body axum could not accept.
pub fn json_problem(rejection: &JsonRejection) -> Problem {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => Problem::new(
            "invalid-request",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the request body must be JSON, sent with `content-type: application/json`",
        ),
        JsonRejection::JsonSyntaxError(_) | JsonRejection::JsonDataError(_) => Problem::new(
            "invalid-request",
            StatusCode::BAD_REQUEST,
            format!(
                "invalid JSON body: {}",
                serde_message(&rejection.body_text())
            ),
        ),
        _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
            "payload-too-large",
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is too large: {}", rejection.body_text()),
        ),
        _ => Problem::new(
            "invalid-request",
            StatusCode::BAD_REQUEST,
            format!(
                "the request body could not be read: {}",
                rejection.body_text()
            ),
        ),
    }
}

/// The problem for a query string axum could not accept.
pub fn query_problem(rejection: &QueryRejection) -> Problem {
    Problem::new(
        "invalid-request",
        StatusCode::BAD_REQUEST,
        format!(
            "invalid query string: {}",
            serde_message(&rejection.body_text())
        ),
    )
}

/// axum prefixes serde's message ("missing field `serviceId` at line 1 column 9") with its own
/// sentence; keep serde's part, which says what is wrong and where.
fn serde_message(body_text: &str) -> &str {
    const PREFIXES: [&str; 4] = [
        "Failed to deserialize the JSON body into the target type: ",
        "Failed to parse the request body as JSON: ",
        "Failed to deserialize query string: ",
        "Failed to deserialize query string. Error: ",
    ];
    PREFIXES
        .iter()
        .find_map(|prefix| body_text.strip_prefix(prefix))
        .unwrap_or(body_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axum_prefixes_are_dropped_and_serde_messages_kept() {
        assert_eq!(
            serde_message(
                "Failed to deserialize the JSON body into the target type: missing field `serviceId` at line 1 column 2"
            ),
            "missing field `serviceId` at line 1 column 2"
        );
        assert_eq!(serde_message("something else"), "something else");
    }
}
