//! `ANY /services/{id}/{*path}`: admit the request through the engine, then stream it upstream.
//!
//! The engine answers with a lease (at once when the service is ready; after the cold start
//! otherwise). Request and response bodies are streamed, never buffered; the lease rides along
//! with the response body (or the upgraded connection), so a long stream or a WebSocket keeps
//! the service busy until it ends.
//!
//! Upstream connections belong to one run of a service: each run's pool lives in the lease's
//! run slot and goes when the service leaves `ready`, so a restarted backend never gets a
//! connection its predecessor accepted. Requests go upstream as HTTP/1.1 whatever the client
//! spoke (h2c clients included), or as HTTP/2 for a service with `upstream_http2: true`.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::InvalidHeaderValue;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use hestia_actors::error::ServiceError;
use hestia_actors::service::{Lease, ServiceHandle};
use http_body_util::{LengthLimitError, Limited};
use hyper_util::rt::TokioIo;

use crate::http::AppState;
use crate::http::context;
use crate::http::early::Early;
use crate::http::holding::Holding;
use crate::http::listener::ClientBodyError;
use crate::http::problem::Problem;
use crate::http::request_id;
use crate::http::upstream::{
    Answer, ConnectError, Failure, Forwarded, Heads, Lines, Pool, X_FORWARDED_FOR, has_token,
};

/// What the proxy keeps per run of a service (in the lease's run slot): a connection pool per
/// backend address, and the `x-forwarded-prefix` value, made once instead of per request.
struct Upstream {
    http2: bool,
    prefix: Option<HeaderValue>,
    /// The address most requests go to (the first one asked for), reached without a lock.
    first: OnceLock<Option<Arc<Pool>>>,
    /// Any other address of this run (instances, fallbacks, routes by model).
    others: Mutex<Vec<Arc<Pool>>>,
}

impl Upstream {
    fn new(id: &str, http2: bool) -> Upstream {
        Upstream {
            http2,
            prefix: HeaderValue::from_str(&format!("/services/{id}")).ok(),
            first: OnceLock::new(),
            others: Mutex::new(Vec::new()),
        }
    }

    /// The pool for `address` (`host:port`); `None` when that cannot be a `host` header.
    fn pool(&self, address: &str) -> Option<Arc<Pool>> {
        let first = self.first.get_or_init(|| Pool::new(address, self.http2));
        if let Some(first) = first
            && first.address() == address
        {
            return Some(first.clone());
        }
        let mut others = self.others.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pool) = others.iter().find(|pool| pool.address() == address) {
            return Some(pool.clone());
        }
        let pool = Pool::new(address, self.http2)?;
        others.push(pool.clone());
        Some(pool)
    }
}

/// Who a request came from: its address, and the address as an `x-forwarded-for` value. The
/// listener makes one per connection and hands it to the proxy with each request it sends
/// there directly; requests through the router carry their address as `ConnectInfo`.
#[derive(Clone)]
pub(crate) struct Peer {
    addr: SocketAddr,
    forwarded_for: Option<HeaderValue>,
}

impl Peer {
    pub(crate) fn new(addr: SocketAddr) -> Peer {
        Peer {
            addr,
            forwarded_for: ip_value(addr.ip()).ok(),
        }
    }

    /// The peer a request through the router came from.
    pub(crate) fn of(extensions: &axum::http::Extensions) -> Option<Peer> {
        let ConnectInfo(addr) = extensions.get::<ConnectInfo<SocketAddr>>()?;
        Some(Peer::new(*addr))
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/services/{id}", any(proxy))
        .route("/services/{id}/", any(proxy))
        .route("/services/{id}/{*path}", any(proxy))
}

const COLD_START: HeaderName = HeaderName::from_static("x-hestia-cold-start-ms");

/// The transparent proxy's handler; the OpenAI endpoint hands it requests it re-addressed.
/// Every answer, Hestia's own problems included, is counted on the service's metrics.
pub(crate) async fn proxy(State(state): State<AppState>, request: Request) -> Response {
    let peer = Peer::of(request.extensions());
    direct(&state, request, None, peer, Heads::Map).await
}

/// [`proxy`] for a request the listener hands over directly, with the admission its connection
/// waited for before it was read ([`Early`]), if it did. `heads` says how an upstream answer's
/// headers come back ([`Heads::Raw`] for the listener's lane).
pub(crate) async fn direct(
    state: &AppState,
    request: Request,
    early: Option<Early>,
    peer: Option<Peer>,
    heads: Heads,
) -> Response {
    // The router matched `/services/{id}...`; ids are URL-safe by validation, so no decoding.
    let service = state.engine.service(service_id(request.uri().path()));
    // The lease this request's connection waited for, if it was for this very service; the
    // request's time is counted from when that wait began.
    let early = early.filter(|early| service.as_ref().is_ok_and(|s| s.id() == early.service));
    let started = early
        .as_ref()
        .map_or_else(std::time::Instant::now, |early| early.since);
    if let Ok(service) = &service
        && let Some(page) =
            crate::http::waiting::intercept(state, service, request.method(), request.headers())
                .await
    {
        return page;
    }
    // It goes upstream with the `x-forwarded-*` headers ([`Forwarded`]), not through the map.
    let request_id = match &early {
        Some(early) => early.request_id.clone(),
        None => request_id::kept_or_fresh(request.headers()),
    };
    let mut response = match service {
        Ok(service) => {
            let admitted = early.map(|early| early.outcome);
            let forwarded =
                forward(state, &service, &request_id, request, admitted, peer, heads).await;
            let response = match forwarded {
                Ok(response) => response,
                Err(problem) => problem_answer(*problem),
            };
            service
                .metrics()
                .record_request(response.status().as_u16(), started.elapsed());
            response
        }
        Err(error) => problem_answer(Problem::from(error)),
    };
    // An answer whose headers came as lines ([`Heads::Raw`]) takes the id as one more: a map
    // would be made for it alone.
    match response.extensions_mut().get_mut::<Lines>() {
        Some(lines) => lines.append(&request_id::REQUEST_ID, &request_id),
        None => {
            response
                .headers_mut()
                .insert(request_id::REQUEST_ID, request_id);
        }
    }
    response
}

/// Admits `request` for `service` and sends it upstream; the response streams back, its
/// headers as `heads` asks. Shared by the transparent proxy and the `/v1/requests` envelope.
pub(crate) async fn forward(
    state: &AppState,
    service: &ServiceHandle,
    request_id: &HeaderValue,
    mut request: Request,
    admitted: Option<Result<Lease, ServiceError>>,
    peer: Option<Peer>,
    heads: Heads,
) -> Result<Response, Box<Problem>> {
    let id = service.id();
    let rest_at = upstream_part(request.uri(), id)?;
    let limit = state.inner.max_request_body_bytes;
    let facts = Facts::of(request.headers());
    if facts.content_length.is_some_and(|len| len > limit) {
        return Err(too_large(id, limit));
    }
    let upgrade = facts.upgrade.then(|| hyper::upgrade::on(&mut request));
    let fields = context::body_fields_for(service, &mut request, &state.inner).await;

    let admitted = match admitted {
        Some(admitted) => admitted,
        None => {
            let text_id = request_id.to_str().unwrap_or("unknown");
            service.acquire(Some(text_id)).await
        }
    };
    let lease = admitted.map_err(|e| Box::new(Problem::from(e)))?;
    let (path, query) = rest(request.uri(), rest_at);
    let client = peer.as_ref().map(|peer| peer.addr);
    let strategy_context =
        context::strategy_context(id, &request, path, query, fields.as_deref(), client);
    let (instance, base_url) = lease.upstream(&strategy_context);
    let Some((address, base_path)) = split_base(base_url) else {
        return Err(unreachable(
            id,
            base_url,
            "only http:// backends can be proxied",
        ));
    };
    let http2 = service.upstream_http2();
    // HTTP/2 names the backend in the URI (`:authority`), HTTP/1.1 in the `host` header.
    let origin = if http2 {
        &base_url[..base_url.len() - base_path.len()]
    } else {
        ""
    };
    let target = join(origin, base_path, path, query)?;

    let (mut parts, body) = request.into_parts();
    let upstream = lease.run_local(|| Upstream::new(id, http2));
    let Some(pool) = upstream.and_then(|upstream| upstream.pool(address)) else {
        return Err(unreachable(
            id,
            base_url,
            "no upstream connections for this run",
        ));
    };
    strip_hop_by_hop(&mut parts.headers, facts.hop_by_hop, upgrade.is_some());
    // An HTTP/2 request names its host in the URI (`:authority`), not in a `host` header.
    let host = facts.host.or_else(|| authority_of(&parts.uri));
    let forwarded = Forwarded::new(
        facts.forwarded_for.as_ref(),
        peer.and_then(|peer| peer.forwarded_for),
        host,
        upstream.and_then(|u| u.prefix.clone()),
        Some(request_id.clone()),
    );
    parts.uri = target;
    parts.version = upstream_version(parts.version, http2);
    let body = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let mut request = Request::from_parts(parts, body);

    let timeout = service.upstream_timeout();
    let exchange = async {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match pool.send(request, &forwarded, heads).await {
                // Nothing of the request left Hestia: again on a fresh connection — once after a
                // refusal, and until the deadline after attempts that timed out (a full listen
                // queue drops SYNs).
                Err(Failure::Unsent {
                    request: unsent,
                    error,
                }) if attempts == 1 || error.timed_out() => {
                    again(id, attempts, &error);
                    request = *unsent;
                }
                other => break other,
            }
        }
    };
    let response = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(answered)) => answered,
        Ok(Err(Failure::Unsent { error, .. })) => {
            match instance {
                Some(index) if index > 0 => lease.mark_down(index),
                _ => service.report_unreachable(),
            }
            return Err(unreachable(id, base_url, &error.to_string()));
        }
        Ok(Err(Failure::Sent(error))) if over_the_limit(&error) => {
            return Err(too_large(id, limit));
        }
        // The client's body failed (stalled, malformed): its fault, not the upstream's.
        Ok(Err(Failure::Sent(ref error))) if let Some(fault) = client_body_fault(error) => {
            return Err(client_fault(id, fault));
        }
        Ok(Err(Failure::Sent(error))) => return Err(unreachable(id, base_url, &error.to_string())),
        Err(_) => {
            if let Some(index @ 1..) = instance {
                lease.mark_down(index);
            }
            return Err(upstream_timeout(id, base_url, timeout));
        }
    };

    let cold_start = lease.cold_start();
    if let (Some(client_side), StatusCode::SWITCHING_PROTOCOLS) = (upgrade, response.status()) {
        return Ok(switch(client_side, response, lease));
    }
    let (mut parts, body) = response.into_parts();
    let hop_by_hop = parts.headers.keys().any(is_hop_by_hop);
    strip_hop_by_hop(&mut parts.headers, hop_by_hop, false);
    add_cold_start(&mut parts.headers, cold_start);
    Ok(Response::from_parts(
        parts,
        // The lease is held until the upstream's answer has streamed to the client; the
        // connection goes back to its pool then.
        Body::new(Holding::new(body, lease)),
    ))
}

/// The answer to a request that switched protocols: the tunnel runs in a task of its own.
#[cold]
#[inline(never)]
fn switch(
    client_side: hyper::upgrade::OnUpgrade,
    mut response: Response<Answer>,
    lease: Lease,
) -> Response {
    let cold_start = lease.cold_start();
    let upstream_side = hyper::upgrade::on(&mut response);
    tokio::spawn(tunnel(client_side, upstream_side, lease));
    let (mut parts, _) = response.into_parts();
    add_cold_start(&mut parts.headers, cold_start);
    Response::from_parts(parts, Body::empty())
}

/// A connection attempt that failed is made again: logged out of the request's path.
#[cold]
#[inline(never)]
fn again(id: &str, attempts: u32, error: &ConnectError) {
    tracing::debug!(%error, service = id, attempts, "upstream connect failed; again");
}

/// A problem's answer, made out of the request's path (it is rare there, and serialised).
#[cold]
#[inline(never)]
fn problem_answer(problem: Problem) -> Response {
    problem.into_response()
}

#[cold]
fn upstream_timeout(id: &str, base_url: &str, timeout: std::time::Duration) -> Box<Problem> {
    let detail = format!("{base_url} did not answer within {timeout:?}");
    Box::new(Problem::new("upstream-timeout", StatusCode::GATEWAY_TIMEOUT, detail).service(id))
}

/// Copies bytes both ways between the client and the upstream once both sides have switched
/// protocols (WebSocket and any other HTTP/1.1 upgrade); the lease lives as long as the tunnel.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    lease: Lease,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(error) => {
            tracing::warn!(%error, route = ?lease.route(), "upgrade failed");
            return;
        }
    };
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(%error, "upgraded connection closed");
    }
    drop(lease);
}

#[cold]
fn unreachable(id: &str, base_url: &str, error: &str) -> Box<Problem> {
    let detail = format!("could not reach {base_url}: {error}");
    Box::new(Problem::new("upstream-unreachable", StatusCode::BAD_GATEWAY, detail).service(id))
}

/// The HTTP version a request goes upstream with: HTTP/2 only to a service that asked for it
/// (`upstream_http2`); anything else as HTTP/1.1 (HTTP/1.0 stays 1.0).
fn upstream_version(client: Version, http2: bool) -> Version {
    match (http2, client) {
        (true, _) => Version::HTTP_2,
        (false, Version::HTTP_10) => Version::HTTP_10,
        (false, _) => Version::HTTP_11,
    }
}

fn authority_of(uri: &Uri) -> Option<HeaderValue> {
    HeaderValue::from_str(uri.authority()?.as_str()).ok()
}

/// What a request's headers say that the proxy acts on, found in one pass over them: each
/// lookup by name hashes the name again, and a request has few headers.
#[derive(Default)]
struct Facts {
    content_length: Option<u64>,
    /// An `upgrade` header, and `connection` asking for it.
    upgrade: bool,
    /// Any hop-by-hop header ([`is_hop_by_hop`]).
    hop_by_hop: bool,
    host: Option<HeaderValue>,
    /// The chain of addresses earlier proxies reported.
    forwarded_for: Option<HeaderValue>,
}

impl Facts {
    fn of(headers: &HeaderMap) -> Facts {
        let mut facts = Facts::default();
        let (mut upgrade, mut connection_upgrade) = (false, false);
        for (name, value) in headers {
            if name == header::CONTENT_LENGTH {
                facts.content_length = facts.content_length.or_else(|| parse_length(value));
            } else if name == header::HOST {
                facts.host.get_or_insert_with(|| value.clone());
            } else if name == X_FORWARDED_FOR {
                facts.forwarded_for.get_or_insert_with(|| value.clone());
            } else if is_hop_by_hop(name) {
                facts.hop_by_hop = true;
                upgrade |= name == header::UPGRADE;
                connection_upgrade |= name == header::CONNECTION && lists(value, "upgrade");
            }
        }
        facts.upgrade = upgrade && connection_upgrade;
        facts
    }
}

/// Whether a comma-separated header value lists `token` (any case).
fn lists(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|value| has_token(value.as_bytes(), token.as_bytes()))
}

/// The `content-length` a request or answer declares, if it is a number.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    parse_length(headers.get(header::CONTENT_LENGTH)?)
}

fn parse_length(value: &HeaderValue) -> Option<u64> {
    value.to_str().ok()?.parse().ok()
}

#[cold]
fn too_large(id: &str, limit: u64) -> Box<Problem> {
    let detail = format!(
        "the request body is larger than the limit of {limit} bytes (max_request_body_bytes)"
    );
    Box::new(Problem::new("payload-too-large", StatusCode::PAYLOAD_TOO_LARGE, detail).service(id))
}

fn add_cold_start(headers: &mut HeaderMap, waited: Option<std::time::Duration>) {
    if let Some(waited) = waited {
        headers.insert(COLD_START, HeaderValue::from(waited.as_millis() as u64));
    }
}

/// Where the part of the path after `/services/{id}` begins (still percent-encoded).
/// A path that would climb above the service's base (`..`, encoded or not) is refused.
fn upstream_part(uri: &Uri, id: &str) -> Result<usize, Box<Problem>> {
    let path = uri.path();
    let at = "/services/".len() + id.len();
    let rest = path.get(at..).unwrap_or("");
    if might_climb(rest) {
        return Err(Box::new(
            Problem::new(
                "invalid-request",
                StatusCode::BAD_REQUEST,
                format!("the path `{path}` climbs above the service's base path"),
            )
            .service(id),
        ));
    }
    Ok(at)
}

/// The upstream path (from [`upstream_part`]'s offset; `/` when empty) and query of `uri`.
fn rest(uri: &Uri, at: usize) -> (&str, Option<&str>) {
    let path = match uri.path().get(at..) {
        Some("") | None => "/",
        Some(rest) => rest,
    };
    (path, uri.query())
}

/// The `{id}` of `/services/{id}/...`.
pub(crate) fn service_id(path: &str) -> &str {
    let after = path.strip_prefix("/services/").unwrap_or("");
    // Bytes, not chars: a char pattern goes through the general UTF-8 searcher.
    let end = after.bytes().position(|b| b == b'/').unwrap_or(after.len());
    &after[..end]
}

/// True when a segment of `rest` is `.` or `..`, literally or percent-encoded (`%2e`, and `%2f` /
/// `%5c` hiding a separator). Most paths have no dot or percent and skip the decoding entirely.
fn might_climb(rest: &str) -> bool {
    if !rest.bytes().any(|b| b == b'.' || b == b'%') {
        return false;
    }
    let decoded = rest
        .to_ascii_lowercase()
        .replace("%2e", ".")
        .replace("%2f", "/")
        .replace("%5c", "/");
    decoded
        .split(['/', '\\'])
        .any(|segment| segment == ".." || segment == ".")
}

/// The address (`host:port`) and path prefix of an `http://` base URL (validated at load).
fn split_base(base_url: &str) -> Option<(&str, &str)> {
    let rest = base_url.strip_prefix("http://")?;
    let end = |s: &str, stop: &[u8]| s.bytes().position(|b| stop.contains(&b)).unwrap_or(s.len());
    let (address, after) = rest.split_at(end(rest, b"/?"));
    Some((address, &after[..end(after, b"?")]))
}

/// `origin` (`http://host:port`, or nothing for origin form), the base URL's path prefix, `path`
/// and `query`: one string, sized exactly so the URI takes it over without copying, parsed once.
fn join(
    origin: &str,
    base_path: &str,
    path: &str,
    query: Option<&str>,
) -> Result<Uri, Box<Problem>> {
    let base = base_path.trim_end_matches('/');
    let mut joined = String::with_capacity(
        origin.len() + base.len() + path.len() + query.map_or(0, |q| q.len() + 1),
    );
    joined.push_str(origin);
    joined.push_str(base);
    joined.push_str(path);
    if let Some(query) = query {
        joined.push('?');
        joined.push_str(query);
    }
    Uri::try_from(joined).map_err(|e| {
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        let detail = format!("bad upstream path `{base}{path}{query}`: {e}");
        Box::new(Problem::new(
            "invalid-request",
            StatusCode::BAD_REQUEST,
            detail,
        ))
    })
}

/// Connection-level headers are for one hop only (RFC 9110 §7.6.1); `present` says whether
/// `headers` hold any (most messages carry none: one look over the names, made by the caller,
/// costs less than a lookup of each). An upgrade keeps the two headers that ask for it.
fn strip_hop_by_hop(headers: &mut HeaderMap, present: bool, keep_upgrade: bool) {
    if present {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::try_from(name.trim()).ok())
            .filter(|name| !(keep_upgrade && name == header::UPGRADE))
            .collect();
        for name in named.iter().chain(&HOP_BY_HOP) {
            headers.remove(name);
        }
        if !keep_upgrade {
            headers.remove(header::CONNECTION);
            headers.remove(header::UPGRADE);
        }
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The hop-by-hop headers removed whatever `connection` names (besides `connection` and
/// `upgrade` themselves).
const HOP_BY_HOP: [HeaderName; 7] = [
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    HeaderName::from_static("proxy-connection"),
];

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION || name == header::UPGRADE || HOP_BY_HOP.contains(name)
}

/// An IP address as a header value, written on the stack first (one allocation, not two).
fn ip_value(ip: IpAddr) -> Result<HeaderValue, InvalidHeaderValue> {
    use std::io::Write as _;
    // The longest IPv6 text form is 45 bytes.
    let mut buf = [0u8; 64];
    let mut cursor = &mut buf[..];
    let _ = write!(cursor, "{ip}");
    let len = 64 - cursor.len();
    HeaderValue::from_bytes(&buf[..len])
}

/// True when the request failed because its body went over `max_request_body_bytes`
/// ([`Limited`] stopped it; the error travels up through hyper's).
fn over_the_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| e.is::<LengthLimitError>())
}

/// The client's body error inside an upstream error, if that is what made it fail.
fn client_body_fault<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a ClientBodyError> {
    std::iter::successors(Some(error), |e| e.source()).find_map(|e| e.downcast_ref())
}

#[cold]
fn client_fault(id: &str, fault: &ClientBodyError) -> Box<Problem> {
    let status = match fault {
        ClientBodyError::Stalled(_) => StatusCode::REQUEST_TIMEOUT,
        ClientBodyError::Malformed(_) => StatusCode::BAD_REQUEST,
    };
    Box::new(Problem::new("invalid-request", status, fault.to_string()).service(id))
}
