//! Early admission: a new connection whose first request is for a service that cannot take it
//! yet (cold, starting, or at its `max_concurrency`) waits for its lease *before* the HTTP
//! server takes the connection over.
//!
//! Hyper gives every connection an 8 KiB read buffer and an 8 KiB write buffer as soon as it
//! serves it (and a second read buffer while a request waits, its head still pointing into the
//! first). Ten thousand clients queued for a cold start held ~240 MiB that way; waiting here,
//! a connection holds its socket and a small future, and the request head stays in the kernel's
//! socket buffer (it is only peeked at) until hyper reads it once the lease is there.
//!
//! Only what the proxy would queue anyway waits here: a complete request head in the first
//! packet, for `/services/{id}/...`, that the auth guard would wave through, not a browser
//! navigation (that gets the waiting page), and not declaring a body over the limit. Anything
//! else goes to hyper at once, as before. A client that hangs up while waiting leaves the queue.

use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use futures_util::FutureExt;
use hestia_actors::error::ServiceError;
use hestia_actors::service::Lease;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::http::AppState;
use crate::http::request_id;
use crate::http::waiting;

/// The most of a request head looked at; a longer head goes to hyper directly.
const PEEK: usize = 2048;
const MAX_HEADERS: usize = 32;
/// How often a waiting connection is looked at for a client that hung up.
const HANG_UP_CHECK: Duration = Duration::from_millis(500);

/// The first request's admission, decided before hyper read it.
pub struct Early {
    /// The service it was for (the proxy checks the request it gets is the same).
    pub service: String,
    /// The `x-request-id` it waited under (the proxy gives the request this one).
    pub request_id: HeaderValue,
    /// The lease, or why there is none (a full queue, a failed start, a timeout...).
    pub outcome: Result<Lease, ServiceError>,
    /// When the wait began (the request's time counts from there).
    pub since: Instant,
}

/// What became of the connection before hyper.
pub enum Before {
    /// Nothing to wait for (or nothing recognisable): hyper serves it now.
    Now,
    /// It waited; its first request carries this.
    Waited(Early),
    /// The client hung up while waiting, or sent nothing within its head timeout (closed
    /// unanswered, as hyper would have).
    Gone,
}

/// Waits for the connection's first bytes (at most `head_timeout`: a client in a burst may take
/// a while to write, and a connection waiting here costs less than one hyper serves), then, if
/// its first request is one to queue, for its lease.
pub async fn admit(
    stream: &TcpStream,
    state: &AppState,
    head_timeout: Duration,
    heard: impl FnOnce(),
) -> Before {
    let mut buf = [0u8; PEEK];
    let Ok(peeked) = tokio::time::timeout(head_timeout, stream.peek(&mut buf)).await else {
        tracing::debug!("a client sent nothing within its head timeout; closed");
        return Before::Gone;
    };
    let Ok(peeked) = peeked else {
        return Before::Now;
    };
    heard();
    let Some(head) = head_to_queue(&buf[..peeked], state) else {
        return Before::Now;
    };
    let Ok(service) = state.engine.service(&head.service) else {
        return Before::Now;
    };
    if service.admits_now() {
        return Before::Now;
    }
    let since = Instant::now();
    let id = head.request_id.unwrap_or_else(request_id::fresh);
    let acquire = service.acquire(Some(id.to_str().unwrap_or("unknown")));
    tokio::select! {
        outcome = acquire => Before::Waited(Early {
            service: head.service,
            request_id: id,
            outcome,
            since,
        }),
        () = hung_up(stream) => Before::Gone,
    }
}

/// What the first request head says, when it is one to queue.
struct Head {
    service: String,
    request_id: Option<HeaderValue>,
}

fn head_to_queue(bytes: &[u8], state: &AppState) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    if !request.parse(bytes).ok()?.is_complete() {
        return None;
    }
    let path = request.path?;
    let service = crate::http::proxy::service_id(path);
    if service.is_empty() || request.method? == "CONNECT" {
        return None;
    }
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    fn text(value: &[u8]) -> Option<&str> {
        std::str::from_utf8(value).ok().map(str::trim)
    }
    if !state.auth.waves_through_host(header("host").and_then(text)) {
        return None;
    }
    // A browser's navigation gets the waiting page instead of a held request.
    let navigation = waiting::is_navigation_by(
        request.method? == "GET",
        header("sec-fetch-mode").and_then(text),
        header("accept").and_then(text),
    );
    if navigation {
        return None;
    }
    let declared = header("content-length")
        .and_then(text)
        .and_then(|n| n.parse::<u64>().ok());
    if declared.is_some_and(|len| len > state.inner.max_request_body_bytes) {
        return None;
    }
    let request_id = header("x-request-id")
        .filter(|v| request_id::is_usable(v))
        .and_then(|v| HeaderValue::from_bytes(v).ok());
    Some(Head {
        service: service.to_owned(),
        request_id,
    })
}

/// Resolves when the client has closed its side (or the socket failed), looked at every
/// [`HANG_UP_CHECK`]. The socket's readiness is only read, never cleared: the request head
/// waiting in it must still wake hyper when hyper takes over.
async fn hung_up(stream: &TcpStream) {
    loop {
        tokio::time::sleep(HANG_UP_CHECK).await;
        match stream.ready(Interest::READABLE).now_or_never() {
            Some(Ok(ready)) if ready.is_read_closed() => return,
            Some(Err(_)) => return,
            _ => {}
        }
    }
}
