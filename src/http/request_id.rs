//! `x-request-id` on every request and response: kept when the client sent one, made (a UUIDv7)
//! when not, so logs, activity records, the upstream and the client all name the same request.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Middleware: ensures the request carries an id and echoes it on the response.
pub async fn propagate(mut request: Request, next: Next) -> Response {
    let id = ensure(request.headers_mut());
    let mut response = next.run(request).await;
    response.headers_mut().insert(REQUEST_ID, id);
    response
}

/// The id `headers` carry, after giving them a fresh one if they had none (or a silly one).
pub fn ensure(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(&REQUEST_ID).filter(|v| is_usable(v.as_bytes())) {
        return id.clone();
    }
    let made = fresh();
    headers.insert(REQUEST_ID, made.clone());
    made
}

/// A client's `x-request-id` is kept when it is not empty and not silly long.
pub fn is_usable(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= 200
}

/// A new request id (a UUIDv7), encoded on the stack: the header value is the only allocation.
pub fn fresh() -> HeaderValue {
    let mut text = uuid::Uuid::encode_buffer();
    HeaderValue::from_str(uuid::Uuid::now_v7().hyphenated().encode_lower(&mut text))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The request's id, as the middleware left it.
pub fn of(headers: &HeaderMap) -> &str {
    headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
}
