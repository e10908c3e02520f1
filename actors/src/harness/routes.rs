//! The simulated backend's routes: readiness, `/sse`, `/ws`, `/slow`, `/upload`, `/stream`,
//! `/_sim/stats`, the OpenAI-compatible `/v1/...` ([`super::openai`]), and echo for everything
//! else. A middleware counts and logs each request
//! (readiness probes and `/_sim/*` excluded) and arms the crash after the `crash_after`-th answer.

use std::convert::Infallible;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine as _;
use futures_util::{Stream, StreamExt, stream};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::openai;
use super::state::{CrashAfterBody, LogEntry, Seq, SimState};

/// Echo reads the whole body to report it; larger bodies get 413 (use `/upload` for big ones).
const ECHO_BODY_LIMIT: usize = 64 * 1024 * 1024;

type Shared = Arc<SimState>;

pub(crate) fn router(state: Shared) -> Router {
    Router::new()
        .route("/sse", get(sse).fallback(echo))
        .route("/ws", get(websocket).fallback(echo))
        .route("/slow", any(slow))
        .route("/upload", post(upload).put(upload).fallback(echo))
        .route("/stream", get(chunked).fallback(echo))
        .route("/_sim/stats", get(stats))
        .route("/v1/chat/completions", post(openai::chat).fallback(echo))
        .route("/v1/completions", post(openai::completions).fallback(echo))
        .route("/v1/embeddings", post(openai::embeddings).fallback(echo))
        .route("/v1/models", get(openai::models).fallback(echo))
        .fallback(echo)
        .layer(middleware::from_fn_with_state(state.clone(), admit))
        .with_state(state)
}

/// Answers readiness probes, counts and logs every other request, tags responses with the
/// backend's name and arrival number, and arms the crash on the `crash_after`-th response.
async fn admit(State(state): State<Shared>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if path == state.ready_path {
        return tagged(readiness(&state), &state, None);
    }
    if path.starts_with("/_sim/") {
        return tagged(next.run(req).await, &state, None);
    }
    let request_id = req
        .headers()
        .get("x-request-id")
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    let method = req.method().to_string();
    let Some(seq) = state.admit(&method, &path, request_id.clone()) else {
        // Past `crash_after`: the backend is going down and never answers. The accept loop drops
        // this connection as part of the crash.
        return std::future::pending().await;
    };
    tracing::debug!(
        sim = %state.name,
        seq = seq.0,
        %method,
        %path,
        request_id = request_id.as_deref().unwrap_or("-"),
        "simulated backend request"
    );
    req.extensions_mut().insert(seq);
    let response = tagged(next.run(req).await, &state, Some(seq));
    if state.is_last(seq) {
        let (parts, body) = response.into_parts();
        return Response::from_parts(parts, CrashAfterBody::wrap(body, state.crash.clone()));
    }
    response
}

fn tagged(mut response: Response, state: &SimState, seq: Option<Seq>) -> Response {
    let headers = response.headers_mut();
    if let Ok(name) = HeaderValue::from_str(&state.name) {
        headers.insert("x-sim-name", name);
    }
    if let Some(Seq(seq)) = seq {
        headers.insert("x-sim-seq", HeaderValue::from(seq));
    }
    response
}

fn readiness(state: &SimState) -> Response {
    if tokio::time::Instant::now() < state.ready_at {
        let body = json!({"status": "starting", "name": state.name});
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    } else {
        axum::Json(json!({"status": "ok", "name": state.name})).into_response()
    }
}

/// What echo answers: the request as the backend saw it.
#[derive(Debug, Serialize)]
struct Echo<'a> {
    name: &'a str,
    method: String,
    path: String,
    /// The raw query string, `""` when there is none.
    query: String,
    /// Header names in lower case; repeated headers are joined with `", "`.
    headers: serde_json::Map<String, Value>,
    /// UTF-8 text, or base64 when `body_base64` is true.
    body: String,
    body_base64: bool,
    body_len: usize,
    seq: u64,
    /// `HTTP/1.1` or `HTTP/2.0`: what the request arrived as.
    version: String,
}

/// Any method, any path: answers the request as JSON. `?status=NNN` picks the status; HEAD gets
/// the headers only.
async fn echo(State(state): State<Shared>, req: Request) -> Response {
    let status = match query_param::<u16>(req.uri(), "status") {
        Ok(None) => StatusCode::OK,
        Ok(Some(code)) => match StatusCode::from_u16(code) {
            Ok(status) => status,
            Err(_) => return bad_request(format!("status={code} is not an HTTP status code")),
        },
        Err(rejection) => return *rejection,
    };
    let seq = req.extensions().get::<Seq>().map_or(0, |seq| seq.0);
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, ECHO_BODY_LIMIT).await {
        Ok(body) => body,
        Err(err) => {
            let detail = format!("echo reads at most {ECHO_BODY_LIMIT} bytes (use /upload): {err}");
            return error(StatusCode::PAYLOAD_TOO_LARGE, detail);
        }
    };
    let (text, body_base64) = match std::str::from_utf8(&body) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(&body),
            true,
        ),
    };
    let echo = Echo {
        name: &state.name,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: headers_json(&parts.headers),
        body: text,
        body_base64,
        body_len: body.len(),
        seq,
        version: format!("{:?}", parts.version),
    };
    let json = match serde_json::to_vec(&echo) {
        Ok(json) => json,
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    };
    let length = json.len();
    let body = if parts.method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(json)
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    response
}

fn headers_json(headers: &HeaderMap) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    for name in headers.keys() {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect();
        out.insert(name.as_str().to_owned(), Value::String(values.join(", ")));
    }
    out
}

/// `/slow?ms=T`: echo, after T ms (default 1000).
async fn slow(state: State<Shared>, req: Request) -> Response {
    let ms = match query_param::<u64>(req.uri(), "ms") {
        Ok(ms) => ms.unwrap_or(1_000),
        Err(rejection) => return *rejection,
    };
    tokio::time::sleep(Duration::from_millis(ms)).await;
    echo(state, req).await
}

/// `/sse?events=N&interval_ms=T`: N events `data: {"n":i}` (i = 1..=N), T ms apart (defaults 5 and
/// 100), each written as soon as it is produced; then the stream ends.
async fn sse(State(state): State<Shared>, uri: Uri) -> Response {
    let (events, interval) = match counted_stream_params(&uri, "events") {
        Ok(params) => params,
        Err(rejection) => return *rejection,
    };
    let events = paced(events, interval)
        .map(|n| Ok::<_, Infallible>(Event::default().data(json!({"n": n}).to_string())))
        .take_until(state.halt.clone().cancelled_owned());
    Sse::new(events).into_response()
}

/// `/stream?chunks=N&interval_ms=T`: a chunked `text/plain` body of N lines `chunk i` (defaults 5
/// and 100), each sent as its own chunk.
async fn chunked(State(state): State<Shared>, uri: Uri) -> Response {
    let (chunks, interval) = match counted_stream_params(&uri, "chunks") {
        Ok(params) => params,
        Err(rejection) => return *rejection,
    };
    let chunks = paced(chunks, interval)
        .map(|n| Ok::<_, Infallible>(Bytes::from(format!("chunk {n}\n"))))
        .take_until(state.halt.clone().cancelled_owned());
    let mut response = Response::new(Body::from_stream(chunks));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn counted_stream_params(uri: &Uri, count_key: &str) -> Result<(u64, Duration), Box<Response>> {
    let count = query_param::<u64>(uri, count_key)?.unwrap_or(5);
    let interval = query_param::<u64>(uri, "interval_ms")?.unwrap_or(100);
    Ok((count, Duration::from_millis(interval)))
}

/// Yields 1..=count, the first at once and each next one `interval` later.
fn paced(count: u64, interval: Duration) -> impl Stream<Item = u64> + Send + 'static {
    stream::unfold(1_u64, move |n| async move {
        if n > count {
            return None;
        }
        if n > 1 {
            tokio::time::sleep(interval).await;
        }
        Some((n, n + 1))
    })
}

/// `/ws`: echoes text and binary messages until the client closes or the backend stops.
async fn websocket(State(state): State<Shared>, upgrade: WebSocketUpgrade) -> Response {
    let halt = state.halt.clone();
    let name = state.name.clone();
    upgrade.on_upgrade(move |socket| async move {
        if let Err(err) = echo_socket(socket, halt).await {
            tracing::debug!(sim = %name, error = %err, "simulated websocket ended with an error");
        }
    })
}

async fn echo_socket(
    mut socket: WebSocket,
    halt: tokio_util::sync::CancellationToken,
) -> Result<(), axum::Error> {
    loop {
        let message = tokio::select! {
            message = socket.recv() => message,
            () = halt.cancelled() => return Ok(()),
        };
        match message.transpose()? {
            None | Some(Message::Close(_)) => return Ok(()),
            Some(text @ Message::Text(_)) => socket.send(text).await?,
            Some(binary @ Message::Binary(_)) => socket.send(binary).await?,
            Some(Message::Ping(_) | Message::Pong(_)) => {}
        }
    }
}

#[derive(Debug, Serialize)]
struct Uploaded {
    bytes: u64,
    sha256: String,
}

/// `/upload` (POST/PUT): hashes the body as it streams in and answers `{bytes, sha256}`.
async fn upload(req: Request) -> Response {
    let mut body = req.into_body().into_data_stream();
    let mut hasher = Sha256::new();
    let mut bytes = 0_u64;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => {
                hasher.update(&chunk);
                bytes += chunk.len() as u64;
            }
            Err(err) => {
                let detail = format!("upload broke off after {bytes} bytes: {err}");
                return bad_request(detail);
            }
        }
    }
    let sha256 = hex::encode(hasher.finalize());
    axum::Json(Uploaded { bytes, sha256 }).into_response()
}

#[derive(Debug, Serialize)]
struct Stats<'a> {
    name: &'a str,
    requests: u64,
    started_at: String,
    pid: u32,
    log: Vec<LogEntry>,
}

/// `/_sim/stats`: who this is, how many requests it counted and the last 1,000 of them in arrival
/// order.
async fn stats(State(state): State<Shared>) -> Response {
    axum::Json(Stats {
        name: &state.name,
        requests: state.requests(),
        started_at: state.started_at.to_rfc3339(),
        pid: state.pid,
        log: state.log(),
    })
    .into_response()
}

/// Reads `key` from the query string; a value that does not parse is a 400.
fn query_param<T: FromStr>(uri: &Uri, key: &str) -> Result<Option<T>, Box<Response>> {
    let query = uri.query().unwrap_or_default();
    let Some((_, raw)) = url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == key)
    else {
        return Ok(None);
    };
    raw.parse().map(Some).map_err(|_| {
        let detail = format!("query parameter {key}={raw} is not valid");
        Box::new(bad_request(detail))
    })
}

fn bad_request(detail: String) -> Response {
    error(StatusCode::BAD_REQUEST, detail)
}

fn error(status: StatusCode, detail: String) -> Response {
    (status, axum::Json(json!({"error": detail}))).into_response()
}
