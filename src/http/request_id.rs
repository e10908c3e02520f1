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
    if let Some(id) = usable(headers) {
        return id.clone();
    }
    let made = fresh();
    headers.insert(REQUEST_ID, made.clone());
    made
}

/// The id a request with `headers` goes by: its own if usable, else a fresh one (which the
/// caller sends on itself; `headers` are left as they are).
pub fn kept_or_fresh(headers: &HeaderMap) -> HeaderValue {
    usable(headers).cloned().unwrap_or_else(fresh)
}

fn usable(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers.get(&REQUEST_ID).filter(|v| is_usable(v.as_bytes()))
}

/// A client's `x-request-id` is kept when it is not empty and not silly long.
pub fn is_usable(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= 200
}

/// A new request id (a UUIDv7: the time in milliseconds, then 74 random bits), encoded on the
/// stack: the header value is the only allocation.
pub fn fresh() -> HeaderValue {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    let id = uuid::Builder::from_unix_timestamp_millis(millis, &random::bytes()).into_uuid();
    let mut text = uuid::Uuid::encode_buffer();
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut text))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The random part of request ids: a SplitMix64 sequence per thread, seeded once from the
/// random part of a `Uuid::now_v7`. `Uuid::now_v7` takes a process-wide mutex and draws new
/// random numbers for every id, a twentieth of a proxied request's instructions. Ids made within
/// the same millisecond are unique but not ordered (`now_v7` counted within the millisecond);
/// ids need to be unique, not secret.
mod random {
    use std::cell::Cell;

    thread_local! {
        static STATE: Cell<u64> = Cell::new(uuid::Uuid::now_v7().as_u64_pair().1);
    }

    fn next(state: &Cell<u64>) -> u64 {
        let s = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(s);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Ten bytes for the counter-and-random part of a UUIDv7.
    pub(super) fn bytes() -> [u8; 10] {
        STATE.with(|state| {
            let (high, low) = (next(state), next(state));
            let mut bytes = [0u8; 10];
            bytes[..8].copy_from_slice(&high.to_le_bytes());
            bytes[8..].copy_from_slice(&low.to_le_bytes()[..2]);
            bytes
        })
    }
}

/// The request's id, as the middleware left it.
pub fn of(headers: &HeaderMap) -> &str {
    headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_are_distinct_uuid_v7s_in_time_order_across_milliseconds() {
        let first = fresh();
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| fresh()).collect();
        assert_eq!(ids.len(), 10_000, "no two ids alike");
        // The first 13 characters are the millisecond: the first id of a later one.
        let later = std::iter::repeat_with(fresh)
            .find(|id| id.as_bytes()[..13] != first.as_bytes()[..13])
            .expect("the clock moves on");
        for id in [&first, &later] {
            let parsed = uuid::Uuid::parse_str(id.to_str().expect("text")).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 7);
        }
        // The time comes first: an id made a millisecond later sorts after.
        assert!(later.as_bytes() > first.as_bytes());
    }
}
