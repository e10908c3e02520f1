//! `x-request-id` on every request and response: kept when the client sent one, made (a UUIDv7)
//! when not, so logs, activity records, the upstream and the client all name the same request.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Middleware: ensures the request carries an id and echoes it on the response.
pub async fn propagate(mut request: Request, next: Next) -> Response {
    let id = match request
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= 200)
    {
        Some(id) => id.clone(),
        None => {
            let made = HeaderValue::from_str(&uuid::Uuid::now_v7().to_string());
            let made = made.unwrap_or_else(|_| HeaderValue::from_static("unknown"));
            request.headers_mut().insert(REQUEST_ID, made.clone());
            made
        }
    };
    let mut response = next.run(request).await;
    response.headers_mut().insert(REQUEST_ID, id);
    response
}

/// The request's id, as the middleware left it.
pub fn of(headers: &axum::http::HeaderMap) -> &str {
    headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
}
