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

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use hestia_actors::service::Lease;
use http_body_util::{LengthLimitError, Limited};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::http::AppState;
use crate::http::context;
use crate::http::listener::ClientBodyError;
use crate::http::problem::Problem;
use crate::http::request_id;

/// The pooled HTTP client of the data path; one per run of a service.
pub type UpstreamClient = Client<HttpConnector, Body>;

/// A client with a fresh pool: HTTP/1.1, or HTTP/2 with prior knowledge (h2c) when `http2`.
/// Hyper retries on another connection a request whose pooled connection closed before the
/// request was handed to it.
pub fn client(http2: bool) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .http2_only(http2)
        .build(connector)
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/services/{id}", any(proxy))
        .route("/services/{id}/", any(proxy))
        .route("/services/{id}/{*path}", any(proxy))
}

const COLD_START: HeaderName = HeaderName::from_static("x-hestia-cold-start-ms");

/// The transparent proxy's handler; the OpenAI endpoint hands it requests it re-addressed.
pub(crate) async fn proxy(State(state): State<AppState>, mut request: Request) -> Response {
    let started = std::time::Instant::now();
    // The router matched `/services/{id}...`; ids are URL-safe by validation, so no decoding.
    let id = service_id(request.uri().path()).to_owned();
    if let Some(page) =
        crate::http::waiting::intercept(&state, &id, request.method(), request.headers()).await
    {
        return page;
    }
    let request_id = request_id::ensure(request.headers_mut());
    let text_id = request_id.to_str().unwrap_or("unknown").to_owned();
    let mut response = match forward(&state, &id, &text_id, request).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    };
    crate::http::metrics::observe_request(&id, response.status().as_u16(), started.elapsed());
    response
        .headers_mut()
        .insert(request_id::REQUEST_ID, request_id);
    response
}

/// Admits `request` for service `id` and sends it upstream; the response streams back.
/// Shared by the transparent proxy and the `/v1/requests` envelope.
pub(crate) async fn forward(
    state: &AppState,
    id: &str,
    request_id: &str,
    mut request: Request,
) -> Result<Response, Box<Problem>> {
    let service = state
        .engine
        .service(id)
        .map_err(|e| Box::new(Problem::from(e)))?;
    let rest = upstream_path(request.uri(), id)?;
    let limit = state.inner.max_request_body_bytes;
    if content_length(request.headers()).is_some_and(|len| len > limit) {
        return Err(too_large(id, limit));
    }
    let upgrade = is_upgrade(request.headers()).then(|| hyper::upgrade::on(&mut request));
    let (request, fields) = context::body_fields_for(&service, request, &state.inner).await;

    let lease = service
        .acquire(Some(request_id))
        .await
        .map_err(|e| Box::new(Problem::from(e)))?;
    let strategy_context = context::strategy_context(id, &request, &rest, fields.as_deref());
    let (instance, base_url) = lease.upstream(&strategy_context);
    let target = join(base_url, &rest)?;

    let (mut parts, body) = request.into_parts();
    let client_addr = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let host = parts
        .headers
        .get(header::HOST)
        .cloned()
        .or_else(|| authority_of(&parts.uri));
    strip_hop_by_hop(&mut parts.headers, upgrade.is_some());
    add_forwarded(&mut parts.headers, client_addr, host, id);
    parts.uri = target;
    let http2 = service.upstream_http2();
    parts.version = upstream_version(parts.version, http2);
    let body = Untouched::new(Body::new(Limited::new(
        body,
        usize::try_from(limit).unwrap_or(usize::MAX),
    )));
    let Some(client) = lease.run_local(|| client(http2)) else {
        return Err(unreachable(id, base_url, "no upstream client for this run"));
    };

    let timeout = service.upstream_timeout();
    let exchange = async {
        let retry = parts.clone();
        let reading = Body::new(Reading::from(body.clone()));
        let first = client
            .request(hyper::Request::from_parts(parts, reading))
            .await;
        match first {
            // Nothing of the request left Hestia (no connection, body never read): once more,
            // on a fresh connection.
            Err(error) if error.is_connect() => match body.take_back() {
                Some(body) => {
                    tracing::debug!(%error, service = id, "upstream connect failed; retrying once");
                    client
                        .request(hyper::Request::from_parts(retry, body))
                        .await
                }
                None => Err(error),
            },
            other => other,
        }
    };
    let mut response = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) if over_the_limit(&error) => return Err(too_large(id, limit)),
        // The client's body failed (stalled, malformed): its fault, not the upstream's.
        Ok(Err(ref error)) if let Some(fault) = client_body_fault(error) => {
            return Err(client_fault(id, fault));
        }
        Ok(Err(error)) => {
            if error.is_connect() {
                match instance {
                    Some(index) if index > 0 => lease.mark_down(index),
                    _ => service.report_unreachable(),
                }
            }
            return Err(unreachable(id, base_url, &error.to_string()));
        }
        Err(_) => {
            if let Some(index @ 1..) = instance {
                lease.mark_down(index);
            }
            let detail = format!("{base_url} did not answer within {timeout:?}");
            return Err(Box::new(
                Problem::new("upstream-timeout", StatusCode::GATEWAY_TIMEOUT, detail).service(id),
            ));
        }
    };

    let cold_start = lease.cold_start();
    if let (Some(client_side), StatusCode::SWITCHING_PROTOCOLS) = (upgrade, response.status()) {
        let upstream_side = hyper::upgrade::on(&mut response);
        tokio::spawn(tunnel(client_side, upstream_side, lease));
        let (mut parts, _) = response.into_parts();
        add_cold_start(&mut parts.headers, cold_start);
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    add_cold_start(&mut parts.headers, cold_start);
    Ok(Response::from_parts(
        parts,
        Body::new(Leased {
            inner: body,
            _lease: lease,
        }),
    ))
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

/// An HTTP/2 request names its host in the URI (`:authority`), not in a `host` header.
fn authority_of(uri: &Uri) -> Option<HeaderValue> {
    HeaderValue::from_str(uri.authority()?.as_str()).ok()
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

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

/// The part of the path after `/services/{id}`, still percent-encoded, with its query.
/// A path that would climb above the service's base (`..`, encoded or not) is refused.
fn upstream_path(uri: &Uri, id: &str) -> Result<String, Box<Problem>> {
    let path = uri.path();
    let rest = path
        .strip_prefix("/services/")
        .and_then(|p| p.split_once('/').map(|(_, r)| r).or(Some("")))
        .unwrap_or("");
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
    Ok(match uri.query() {
        Some(query) => format!("/{rest}?{query}"),
        None => format!("/{rest}"),
    })
}

/// The `{id}` of `/services/{id}/...`.
fn service_id(path: &str) -> &str {
    let after = path.strip_prefix("/services/").unwrap_or("");
    after.split('/').next().unwrap_or("")
}

/// True when a segment of `rest` is `.` or `..`, literally or percent-encoded (`%2e`, and `%2f` /
/// `%5c` hiding a separator). Most paths have no dot or percent and skip the decoding entirely.
fn might_climb(rest: &str) -> bool {
    if !rest.contains(['.', '%']) {
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

/// `base_url` (which may have its own path prefix) joined with `rest`.
fn join(base_url: &str, rest: &str) -> Result<Uri, Box<Problem>> {
    let joined = format!("{}{rest}", base_url.trim_end_matches('/'));
    joined.parse().map_err(|e| {
        let detail = format!("bad upstream URI `{joined}`: {e}");
        Box::new(Problem::new(
            "invalid-request",
            StatusCode::BAD_REQUEST,
            detail,
        ))
    })
}

/// Connection-level headers are for one hop only (RFC 9110 §7.6.1). An upgrade keeps the two
/// headers that ask for it.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .filter(|name| !(keep_upgrade && name == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

fn add_forwarded(
    headers: &mut HeaderMap,
    client: Option<SocketAddr>,
    host: Option<HeaderValue>,
    id: &str,
) {
    headers.remove(header::HOST);
    if let Some(client) = client {
        let ip = client.ip().to_string();
        let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(earlier) => format!("{earlier}, {ip}"),
            None => ip,
        };
        if let Ok(value) = HeaderValue::from_str(&chain) {
            headers.insert(HeaderName::from_static("x-forwarded-for"), value);
        }
    }
    if let Some(host) = host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    if let Ok(prefix) = HeaderValue::from_str(&format!("/services/{id}")) {
        headers.insert(HeaderName::from_static("x-forwarded-prefix"), prefix);
    }
}

/// True when the request failed because its body went over `max_request_body_bytes`
/// ([`Limited`] stopped it; the error travels up through hyper's).
fn over_the_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| e.is::<LengthLimitError>())
}

/// The client's request body, given to the upstream client on its first poll. Until then it can
/// be taken back ([`Untouched::take_back`]), so a request that never reached the upstream can be
/// sent again with the same body.
#[derive(Clone)]
struct Untouched {
    slot: Arc<Mutex<Option<Body>>>,
    end_stream: bool,
    size_hint: SizeHint,
}

impl Untouched {
    fn new(body: Body) -> Untouched {
        Untouched {
            end_stream: body.is_end_stream(),
            size_hint: body.size_hint(),
            slot: Arc::new(Mutex::new(Some(body))),
        }
    }

    /// The body, if nothing has read it yet.
    fn take_back(&self) -> Option<Body> {
        self.slot.lock().ok()?.take()
    }
}

/// The body as the upstream client reads it: taken out of the slot on the first poll.
struct Reading {
    source: Untouched,
    body: Option<Body>,
}

impl From<Untouched> for Reading {
    fn from(source: Untouched) -> Reading {
        Reading { source, body: None }
    }
}

impl HttpBody for Reading {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.body.is_none() {
            self.body = self.source.take_back();
        }
        match self.body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body
            .as_ref()
            .map_or(self.source.end_stream, |b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or(self.source.size_hint, |b| b.size_hint())
    }
}

/// The client's body error inside an upstream error, if that is what made it fail.
fn client_body_fault<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a ClientBodyError> {
    std::iter::successors(Some(error), |e| e.source()).find_map(|e| e.downcast_ref())
}

fn client_fault(id: &str, fault: &ClientBodyError) -> Box<Problem> {
    let status = match fault {
        ClientBodyError::Stalled(_) => StatusCode::REQUEST_TIMEOUT,
        ClientBodyError::Malformed(_) => StatusCode::BAD_REQUEST,
    };
    Box::new(Problem::new("invalid-request", status, fault.to_string()).service(id))
}

/// A response body that holds the service's lease until the body ends or is dropped.
struct Leased {
    inner: hyper::body::Incoming,
    _lease: Lease,
}

impl HttpBody for Leased {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
