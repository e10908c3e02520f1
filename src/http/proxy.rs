//! `ANY /services/{id}/{*path}`: admit the request through the engine, then stream it upstream.
//!
//! The engine answers with a lease (at once when the service is ready; after the cold start
//! otherwise). Request and response bodies are streamed, never buffered; the lease rides along
//! with the response body, so a long stream keeps the service busy until it ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use hestia_actors::service::Lease;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::http::AppState;
use crate::http::problem::Problem;

/// The pooled HTTP client of the data path.
pub type UpstreamClient = Client<HttpConnector, Body>;

pub fn client() -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/services/{id}", any(proxy))
        .route("/services/{id}/", any(proxy))
        .route("/services/{id}/{*path}", any(proxy))
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const COLD_START: HeaderName = HeaderName::from_static("x-hestia-cold-start-ms");

async fn proxy(
    State(state): State<AppState>,
    Path(params): Path<Vec<(String, String)>>,
    request: Request,
) -> Response {
    let id = params
        .into_iter()
        .find(|(k, _)| k == "id")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let mut response = match forward(&state, &id, &request_id, request).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

async fn forward(
    state: &AppState,
    id: &str,
    request_id: &str,
    request: Request,
) -> Result<Response, Box<Problem>> {
    let service = state
        .engine
        .service(id)
        .map_err(|e| Box::new(Problem::from(e)))?;
    let rest = upstream_path(request.uri(), id)?;
    let lease = service
        .acquire(Some(request_id))
        .await
        .map_err(|e| Box::new(Problem::from(e)))?;
    let target = join(&lease.route().base_url, &rest)?;

    let (mut parts, body) = request.into_parts();
    let host = parts.headers.get(header::HOST).cloned();
    strip_hop_by_hop(&mut parts.headers);
    add_forwarded(&mut parts.headers, host, id, request_id);
    parts.uri = target;
    let upstream = hyper::Request::from_parts(parts, body);

    let response = match state.client.request(upstream).await {
        Ok(response) => response,
        Err(error) => {
            if error.is_connect() {
                service.report_unreachable();
            }
            return Err(Box::new(
                Problem::new(
                    "upstream-unreachable",
                    StatusCode::BAD_GATEWAY,
                    format!("could not reach {}: {error}", lease.route().base_url),
                )
                .service(id),
            ));
        }
    };
    let cold_start = lease.cold_start();
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(waited) = cold_start {
        parts
            .headers
            .insert(COLD_START, HeaderValue::from(waited.as_millis() as u64));
    }
    Ok(Response::from_parts(
        parts,
        Body::new(Leased {
            inner: body,
            _lease: lease,
        }),
    ))
}

/// The part of the path after `/services/{id}`, still percent-encoded, with its query.
/// A path that would climb above the service's base (`..`, encoded or not) is refused.
fn upstream_path(uri: &Uri, id: &str) -> Result<String, Box<Problem>> {
    let path = uri.path();
    let rest = path
        .strip_prefix("/services/")
        .and_then(|p| p.split_once('/').map(|(_, r)| r).or(Some("")))
        .unwrap_or("");
    let climbs = rest.split('/').any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == ".." || decoded == "."
    });
    if climbs || rest.to_ascii_lowercase().contains("%2f..") {
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

/// Connection-level headers are for one hop only (RFC 9110 §7.6.1).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
}

fn add_forwarded(headers: &mut HeaderMap, host: Option<HeaderValue>, id: &str, request_id: &str) {
    headers.remove(header::HOST);
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
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID, value);
    }
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
