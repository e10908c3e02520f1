//! `POST /v1/requests`: one upstream call described as JSON, answered as JSON.
//!
//! The envelope is turned into a request for `/services/{serviceId}{path}` and sent through the
//! proxy's `forward` (same admission, cold start and queue); the upstream's answer is collected
//! (up to [`MAX_BODY`]) into `{status, headers, body}`. `path` must be a plain path: a scheme, a
//! host or a `..` segment is refused, so nobody can aim Hestia at another host (no SSRF).
//!
//! Envelopes are buffered, unlike proxied requests, so together they are bounded: every byte of
//! an envelope's request and of the answer being collected is taken from one [`EnvelopeBudget`]
//! (`max_envelope_memory_bytes`) as it arrives and given back when the envelope is answered. An
//! envelope that would go beyond gets `503 overloaded` with `Retry-After` at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{Extensions, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD as BASE64};

/// Decodes what clients send: padded or not, and forgiving of stray bits after the last byte
/// (`tT==`), as most encoders' output is accepted elsewhere.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::http::extract::ApiJson;
use crate::http::problem::Problem;
use crate::http::proxy::forward;
use crate::http::request_id;
use crate::http::upstream::Heads;
use crate::http::{AppState, proxy};

/// Largest envelope accepted, and largest upstream body collected into an answer: 16 MiB.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/v1/requests",
        post(send).layer(DefaultBodyLimit::max(MAX_BODY)),
    )
}

/// The bytes all envelopes may hold in memory at once (`max_envelope_memory_bytes`).
#[derive(Debug, Clone)]
pub struct EnvelopeBudget {
    bytes: u64,
    free: Arc<Semaphore>,
}

impl EnvelopeBudget {
    pub fn new(bytes: u64) -> EnvelopeBudget {
        let permits = usize::try_from(bytes)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        EnvelopeBudget {
            bytes: permits as u64,
            free: Arc::new(Semaphore::new(permits)),
        }
    }

    /// Bytes envelopes hold right now.
    pub fn in_use(&self) -> u64 {
        self.bytes - self.free.available_permits() as u64
    }

    /// An empty share for one envelope.
    fn share(&self) -> Share {
        Share {
            budget: self.clone(),
            permit: None,
            held: 0,
        }
    }
}

/// What one envelope holds of the budget; given back when it is dropped (answered, failed or
/// abandoned by its client).
struct Share {
    budget: EnvelopeBudget,
    permit: Option<OwnedSemaphorePermit>,
    /// Bytes `permit` stands for.
    held: usize,
}

impl Share {
    /// Holds at least `bytes` in all, taking the difference from the budget, or refuses with
    /// `503 overloaded` when the budget has not that much left.
    fn ensure(&mut self, bytes: usize, id: Option<&str>) -> Result<(), Box<Problem>> {
        let Some(more) = bytes.checked_sub(self.held).filter(|more| *more > 0) else {
            return Ok(());
        };
        let Ok(count) = u32::try_from(more) else {
            return Err(self.overloaded(more, id));
        };
        match self.budget.free.clone().try_acquire_many_owned(count) {
            Ok(permit) => {
                match &mut self.permit {
                    Some(held) => held.merge(permit),
                    None => self.permit = Some(permit),
                }
                self.held = bytes;
                Ok(())
            }
            Err(_) => Err(self.overloaded(more, id)),
        }
    }

    fn overloaded(&self, bytes: usize, id: Option<&str>) -> Box<Problem> {
        let detail = format!(
            "envelopes being answered hold {} of the {} bytes max_envelope_memory_bytes allows, \
             and this one needs {bytes} more: retry in a moment, or send large bodies through \
             /services/{{id}}/..., which streams them",
            self.budget.in_use(),
            self.budget.bytes
        );
        let mut problem = Problem::new("overloaded", StatusCode::SERVICE_UNAVAILABLE, detail);
        problem.retry_after_secs = Some(1);
        if let Some(id) = id {
            problem = problem.service(id);
        }
        Box::new(problem)
    }
}

/// `{serviceId, method, path, headers?, body?, bodyBase64?}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvelopeRequest {
    pub service_id: String,
    /// An HTTP method, e.g. `GET` (case-sensitive, as on the wire).
    pub method: String,
    /// The path below the service, starting with `/`, with an optional query string.
    pub path: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON body (sent as `application/json` unless `headers` say otherwise); a string is sent
    /// as it is. `null` or absent: no body.
    #[serde(default)]
    pub body: Option<Value>,
    /// A binary body, base64-encoded (instead of `body`).
    #[serde(default)]
    pub body_base64: Option<String>,
}

/// `{status, headers, body, bodyBase64?}`: a JSON upstream body comes back as JSON, text as a
/// string, anything else base64 with `bodyBase64: true`; an empty body is `null`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvelopeResponse {
    pub status: u16,
    /// Header names in lower case; repeated headers are joined with `", "`.
    pub headers: BTreeMap<String, String>,
    pub body: Value,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub body_base64: bool,
}

async fn send(State(state): State<AppState>, request: Request) -> Response {
    // Given back when this returns: the answer is serialised by then, and the rest is freed.
    let mut share = state.inner.envelope_budget.share();
    let (parts, body) = request.into_parts();
    let length = content_length(&parts.headers);
    let bytes = match read_request(body, length, &mut share).await {
        Ok(bytes) => bytes,
        Err(problem) => return problem.into_response(),
    };
    let request = Request::from_parts(parts, Body::from(bytes));
    // The request-id middleware has given this request its id (and echoes it on the answer).
    let request_id = request_id::of(request.headers()).to_owned();
    let extensions = request.extensions().clone();
    let envelope = match ApiJson::<EnvelopeRequest>::from_request(request, &state).await {
        Ok(ApiJson(envelope)) => envelope,
        Err(problem) => return problem.into_response(),
    };
    match exchange(&state, &request_id, &extensions, envelope, &mut share).await {
        Ok(answer) => Json(answer).into_response(),
        Err(problem) => problem.into_response(),
    }
}

/// The envelope's bytes (at most [`MAX_BODY`]), each taken from the budget as it arrives. When
/// the budget refuses, the rest is read and dropped before answering, so the client (still
/// sending) gets the 503 instead of a reset connection.
///
/// With a `content-length`, the whole envelope is taken at once before reading: of many large
/// envelopes arriving together, those that fit are served and the others refused, rather than
/// all of them starving each other halfway.
async fn read_request(
    body: Body,
    length: Option<usize>,
    share: &mut Share,
) -> Result<bytes::Bytes, Box<Problem>> {
    let mut stream = body.into_data_stream();
    let mut chunks = Vec::new();
    let mut total = 0usize;
    let mut refused = length
        .filter(|len| *len <= MAX_BODY)
        .and_then(|len| share.ensure(len, None).err());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Box::new(invalid_request(format!(
                "the request body could not be read: {e}"
            )))
        })?;
        total += chunk.len();
        if total > MAX_BODY {
            return Err(Box::new(Problem::new(
                "payload-too-large",
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is too large: an envelope carries at most {MAX_BODY} \
                     bytes; send large bodies through /services/{{id}}/..., which streams them"
                ),
            )));
        }
        if refused.is_some() {
            continue;
        }
        if let Err(problem) = share.ensure(total, None) {
            chunks = Vec::new();
            refused = Some(problem);
            continue;
        }
        chunks.push(chunk);
    }
    if let Some(problem) = refused {
        return Err(problem);
    }
    // One copy of the exact size, not a doubling buffer.
    Ok(match chunks.len() {
        1 => chunks.pop().unwrap_or_default(),
        _ => chunks.concat().into(),
    })
}

/// Sends the envelope through the proxy and collects the answer.
async fn exchange(
    state: &AppState,
    request_id: &str,
    extensions: &Extensions,
    envelope: EnvelopeRequest,
    share: &mut Share,
) -> Result<EnvelopeResponse, Box<Problem>> {
    let peer = crate::http::proxy::Peer::of(extensions);
    let id = envelope.service_id.clone();
    // The service is only known from the body: the auth guard left the scope check to us.
    crate::http::auth::require(extensions, &crate::auth::Scope::proxy(&id))?;
    // An unknown service is a 404 before anything about the request is judged.
    let service = state
        .engine
        .service(&id)
        .map_err(|e| Box::new(Problem::from(e)))?;
    // The envelope's body moves into the request: no second copy is kept meanwhile.
    let request = build_request(envelope)?;
    // The proxy sends it upstream with its own headers (whatever the envelope's say).
    let request_id =
        HeaderValue::from_str(request_id).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    let response = forward(
        state,
        &service,
        &request_id,
        request,
        None,
        peer,
        Heads::Map,
    )
    .await?;
    collect(response, &id, share).await
}

/// The request `forward` expects: `/services/{id}{path}` with the envelope's method, headers
/// and body.
fn build_request(envelope: EnvelopeRequest) -> Result<Request, Box<Problem>> {
    let id = envelope.service_id.as_str();
    let invalid = |detail: String| Box::new(invalid_request(detail).service(id));
    let method = Method::from_bytes(envelope.method.as_bytes()).map_err(|_| {
        invalid(format!(
            "`method`: `{}` is not an HTTP method (e.g. GET, POST, PUT, DELETE)",
            envelope.method
        ))
    })?;
    check_path(&envelope.path)
        .map_err(|reason| invalid(format!("`path`: `{}` {reason}", envelope.path)))?;

    let mut headers = HeaderMap::with_capacity(envelope.headers.len() + 2);
    for (name, value) in &envelope.headers {
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("`headers`: `{name}` is not a valid header name")))?;
        let header_value = HeaderValue::from_str(value).map_err(|_| {
            invalid(format!(
                "`headers.{name}`: the value is not a valid header value"
            ))
        })?;
        headers.append(header_name, header_value);
    }
    // The body is ours to frame (the caller's length or encoding would contradict it), and an
    // envelope cannot carry a protocol upgrade.
    for name in [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }

    let body = match (envelope.body, envelope.body_base64) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "give either `body` or `bodyBase64`, not both".to_owned(),
            ));
        }
        (None, None) => Body::empty(),
        (None, Some(encoded)) => {
            let bytes = LENIENT_BASE64
                .decode(encoded)
                .map_err(|e| invalid(format!("`bodyBase64` is not valid base64: {e}")))?;
            Body::from(bytes)
        }
        (Some(Value::String(text)), None) => Body::from(text),
        (Some(json), None) => {
            if !headers.contains_key(header::CONTENT_TYPE) {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
            Body::from(json.to_string())
        }
    };
    let uri = format!("/services/{id}{}", encode_uri_text(&envelope.path));
    let mut request = Request::builder()
        .method(method)
        .uri(uri.as_str())
        .body(body)
        .map_err(|e| {
            invalid(format!(
                "`path`: `{}` is not a valid path: {e}",
                envelope.path
            ))
        })?;
    *request.headers_mut() = headers;
    Ok(request)
}

/// `path` as it may stand in an URI: characters an URI cannot hold (non-ASCII, `"`, `<`, `{`...)
/// are percent-encoded as UTF-8; what is already valid, `%XX` escapes included, is kept.
fn encode_uri_text(path: &str) -> std::borrow::Cow<'_, str> {
    const KEPT: &str = "-._~!$&'()*+,;=:@/?%";
    let keep = |c: char| c.is_ascii_alphanumeric() || KEPT.contains(c);
    if path.chars().all(keep) {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut encoded = String::with_capacity(path.len() * 3);
    for c in path.chars() {
        if keep(c) {
            encoded.push(c);
        } else {
            let mut utf8 = [0u8; 4];
            for byte in c.encode_utf8(&mut utf8).bytes() {
                encoded.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    std::borrow::Cow::Owned(encoded)
}

/// Why `path` is not a plain path below the service, if it is not: it must start with a single
/// `/` (no scheme, no host, no `//`) and have no `.` or `..` segment, even percent-encoded.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("must be a path starting with `/` (no scheme or host)");
    }
    if path.starts_with("//") {
        return Err("must not start with `//` (that names a host)");
    }
    if path.contains('\\') {
        return Err("must not contain `\\`");
    }
    if path.chars().any(|c| c.is_control() || c == ' ') {
        return Err("must not contain spaces or control characters");
    }
    let before_query = path.split(['?', '#']).next().unwrap_or(path);
    let climbs = before_query.split('/').any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == ".." || decoded == "."
    });
    if climbs || before_query.to_ascii_lowercase().contains("%2f") {
        return Err("must not contain `.`/`..` segments or encoded slashes");
    }
    Ok(())
}

/// Reads the upstream body (at most [`MAX_BODY`]) into an envelope answer, taking each chunk
/// from the budget.
async fn collect(
    response: Response,
    id: &str,
    share: &mut Share,
) -> Result<EnvelopeResponse, Box<Problem>> {
    let (parts, body) = response.into_parts();
    let mut stream = body.into_data_stream();
    // On top of the request's share; taken at once when the length is known, and the buffer
    // sized from it so it does not double as it grows.
    let request_bytes = share.held;
    let expected = content_length(&parts.headers)
        .filter(|len| *len <= MAX_BODY)
        .unwrap_or(0);
    share.ensure(request_bytes + expected, Some(id))?;
    let mut bytes = Vec::with_capacity(expected);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Box::new(
                Problem::new(
                    "upstream-unreachable",
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "the upstream's response body broke off after {} bytes: {e}",
                        bytes.len()
                    ),
                )
                .service(id),
            )
        })?;
        if bytes.len() + chunk.len() > MAX_BODY {
            return Err(Box::new(
                Problem::new(
                    "payload-too-large",
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the upstream's response body is larger than {MAX_BODY} bytes, the most \
                         an envelope carries; call /services/{id}/... to stream it"
                    ),
                )
                .service(id),
            ));
        }
        share.ensure(request_bytes + bytes.len() + chunk.len(), Some(id))?;
        bytes.extend_from_slice(&chunk);
    }
    let (body, body_base64) = body_value(&parts.headers, bytes);
    Ok(EnvelopeResponse {
        status: parts.status.as_u16(),
        headers: headers_map(&parts.headers),
        body,
        body_base64,
    })
}

/// JSON (by content type, when it parses) as JSON, UTF-8 as a string, the rest as base64.
fn body_value(headers: &HeaderMap, bytes: Vec<u8>) -> (Value, bool) {
    if bytes.is_empty() {
        return (Value::Null, false);
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|essence| {
            let essence = essence.trim().to_ascii_lowercase();
            essence == "application/json" || essence.ends_with("+json")
        })
        .unwrap_or(false);
    if is_json && let Ok(json) = serde_json::from_slice::<Value>(&bytes) {
        return (json, false);
    }
    match String::from_utf8(bytes) {
        Ok(text) => (Value::String(text), false),
        Err(error) => (Value::String(BASE64.encode(error.into_bytes())), true),
    }
}

fn headers_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for name in headers.keys() {
        let joined = headers
            .get_all(name)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        out.insert(name.as_str().to_owned(), joined);
    }
    out
}

/// The request's declared body length, if it fits in memory's address space.
fn content_length(headers: &HeaderMap) -> Option<usize> {
    proxy::content_length(headers).and_then(|len| usize::try_from(len).ok())
}

fn invalid_request(detail: String) -> Problem {
    Problem::new("invalid-request", StatusCode::BAD_REQUEST, detail)
}

#[cfg(test)]
mod tests {
    #[test]
    fn characters_an_uri_cannot_hold_are_percent_encoded_and_valid_ones_kept() {
        assert_eq!(
            super::encode_uri_text("/v1/chat?x=1&y=%20"),
            "/v1/chat?x=1&y=%20"
        );
        assert_eq!(super::encode_uri_text("/a\"b<c>/é"), "/a%22b%3Cc%3E/%C3%A9");
    }

    use super::*;

    #[test]
    fn plain_paths_with_queries_are_accepted() {
        for path in [
            "/",
            "/v1/chat",
            "/v1/chat?model=x&q=a%20b",
            "/files/a.b/c..d",
        ] {
            assert_eq!(check_path(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn paths_that_name_a_host_or_climb_are_refused() {
        for path in [
            "http://evil/",
            "evil.com/x",
            "@evil.com/x",
            "//evil/x",
            "/../x",
            "/a/%2E%2E/x",
            "/a/./x",
            "/a%2f..%2fx",
            "/a\\..\\x",
            "",
        ] {
            assert!(check_path(path).is_err(), "{path} was accepted");
        }
    }

    #[test]
    fn bodies_keep_their_nature() {
        let mut json = HeaderMap::new();
        json.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert_eq!(
            body_value(&json, br#"{"a":1}"#.to_vec()),
            (serde_json::json!({"a": 1}), false)
        );
        assert_eq!(
            body_value(&json, b"not json".to_vec()),
            (Value::from("not json"), false)
        );
        let none = HeaderMap::new();
        assert_eq!(
            body_value(&none, b"chunk 1\n".to_vec()),
            (Value::from("chunk 1\n"), false)
        );
        assert_eq!(
            body_value(&none, vec![0, 159, 255]),
            (Value::from("AJ//"), true)
        );
        assert_eq!(body_value(&none, Vec::new()), (Value::Null, false));
    }
}
