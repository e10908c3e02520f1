//! `POST /v1/requests`: one upstream call described as JSON, answered as JSON.
//!
//! The envelope is turned into a request for `/services/{serviceId}{path}` and sent through the
//! proxy's `forward` (same admission, cold start and queue); the upstream's answer is collected
//! (up to [`MAX_BODY`]) into `{status, headers, body}`. `path` must be a plain path: a scheme, a
//! host or a `..` segment is refused, so nobody can aim Hestia at another host (no SSRF).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
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

use crate::http::AppState;
use crate::http::extract::ApiJson;
use crate::http::problem::Problem;
use crate::http::proxy::forward;
use crate::http::request_id;

/// Largest envelope accepted, and largest upstream body collected into an answer: 16 MiB.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/v1/requests",
        post(send).layer(DefaultBodyLimit::max(MAX_BODY)),
    )
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

async fn send(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: Extensions,
    ApiJson(envelope): ApiJson<EnvelopeRequest>,
) -> Response {
    // The request-id middleware has given this request its id (and echoes it on the answer).
    let request_id = request_id::of(&headers).to_owned();
    // The client's address, so the upstream sees it in `x-forwarded-for` as through the proxy.
    match exchange(&state, &request_id, &extensions, envelope).await {
        Ok(answer) => Json(answer).into_response(),
        Err(problem) => problem.into_response(),
    }
}

/// Sends the envelope through the proxy and collects the answer.
async fn exchange(
    state: &AppState,
    request_id: &str,
    extensions: &Extensions,
    envelope: EnvelopeRequest,
) -> Result<EnvelopeResponse, Box<Problem>> {
    let client = extensions.get::<ConnectInfo<SocketAddr>>().cloned();
    let id = envelope.service_id.clone();
    // The service is only known from the body: the auth guard left the scope check to us.
    crate::http::auth::require(extensions, &crate::auth::Scope::proxy(&id))?;
    // An unknown service is a 404 before anything about the request is judged.
    let service = state
        .engine
        .service(&id)
        .map_err(|e| Box::new(Problem::from(e)))?;
    let mut request = build_request(&envelope, request_id)?;
    if let Some(client) = client {
        request.extensions_mut().insert(client);
    }
    let response = forward(state, &service, request_id, request).await?;
    collect(response, &id).await
}

/// The request `forward` expects: `/services/{id}{path}` with the envelope's method, headers
/// and body.
fn build_request(envelope: &EnvelopeRequest, request_id: &str) -> Result<Request, Box<Problem>> {
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

    let body = match (&envelope.body, &envelope.body_base64) {
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
        (Some(Value::String(text)), None) => Body::from(text.clone()),
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
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(request_id::REQUEST_ID, value);
    }

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

/// Reads the upstream body (at most [`MAX_BODY`]) into an envelope answer.
async fn collect(response: Response, id: &str) -> Result<EnvelopeResponse, Box<Problem>> {
    let (parts, body) = response.into_parts();
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
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
