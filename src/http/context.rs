//! The request context a strategy sees, and the bounded read of a JSON body's top-level fields.
//!
//! Only a strategy that asks for the body (`model_router`, a plugin defining `needs_body`) and the
//! OpenAI-compatible endpoint (which routes by `model`) pay for it: the first
//! `strategy_body_prefix_bytes` (default 64 KiB) are read, parsed as far as they go, and replayed
//! ahead of the rest, so the body still streams to the upstream unbuffered beyond that prefix.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use bytes::{Bytes, BytesMut};
use hestia_actors::service::ServiceHandle;
use hestia_actors::strategy::RequestContext;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::http::AppInfo;

/// A client that has not sent the prefix by then is routed by what arrived.
const PREFIX_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads up to `limit` bytes of the body and parses the top-level fields of the JSON object they
/// begin; the request comes back with its body whole (the prefix replayed first). `None` when
/// the body is not a JSON object (fields cut off by the limit are left out).
pub async fn read_json_fields(
    request: Request,
    limit: usize,
) -> (Request, Option<Map<String, Value>>) {
    let (parts, mut body) = request.into_parts();
    let mut prefix = BytesMut::new();
    let mut next: Option<Result<Frame<Bytes>, axum::Error>> = None;
    let mut ended = false;
    let read = async {
        while prefix.len() < limit {
            match body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => prefix.extend_from_slice(&data),
                    Err(trailers) => {
                        next = Some(Ok(trailers));
                        return;
                    }
                },
                Some(Err(error)) => {
                    next = Some(Err(error));
                    return;
                }
                None => {
                    ended = true;
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(PREFIX_READ_TIMEOUT, read).await;
    // Frames may overshoot the limit: only the first `limit` bytes count.
    let fields = top_level_fields(&prefix[..prefix.len().min(limit)]);
    let replayed = Replayed {
        prefix: (!prefix.is_empty()).then(|| prefix.freeze()),
        next,
        rest: (!ended).then_some(body),
    };
    (Request::from_parts(parts, Body::new(replayed)), fields)
}

/// The JSON body fields already read for a request (the OpenAI endpoint reads them to find the
/// service, and hands them on in the request's extensions).
#[derive(Debug, Clone)]
pub struct BodyFields(pub Arc<Map<String, Value>>);

/// The request's JSON body fields when `service`'s strategy needs them (read once; the request
/// keeps its body, the read part replayed).
pub async fn body_fields_for(
    service: &ServiceHandle,
    request: &mut Request,
    info: &AppInfo,
) -> Option<Arc<Map<String, Value>>> {
    if let Some(BodyFields(fields)) = request.extensions().get::<BodyFields>() {
        return Some(fields.clone());
    }
    if !service.needs_body() {
        return None;
    }
    let taken = std::mem::replace(request, Request::new(axum::body::Body::empty()));
    let (read, fields) = read_json_fields(taken, info.strategy_body_prefix_bytes).await;
    *request = read;
    fields.map(Arc::new)
}

/// The context of `request` for service `service`; `path` and `query` are the upstream's.
pub fn strategy_context<'a>(
    service: &'a str,
    request: &'a Request,
    path: &'a str,
    query: Option<&'a str>,
    body: Option<&'a Map<String, Value>>,
    client: Option<SocketAddr>,
) -> RequestContext<'a> {
    RequestContext {
        service,
        method: request.method().as_str(),
        path,
        query,
        headers: request.headers(),
        client,
        body,
    }
}

/// The fields of the JSON object `prefix` begins, as far as complete ones go.
fn top_level_fields(prefix: &[u8]) -> Option<Map<String, Value>> {
    let starts_an_object = prefix
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{');
    if !starts_an_object {
        return None;
    }
    let mut fields = Map::new();
    let mut json = serde_json::Deserializer::from_slice(prefix);
    // A cut-off prefix ends in an error; the fields read before it stay.
    let _ = json.deserialize_map(Collect(&mut fields));
    Some(fields)
}

/// Collects an object's entries into a map the caller keeps, even when parsing stops early.
struct Collect<'a>(&'a mut Map<String, Value>);

impl<'de> Visitor<'de> for Collect<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<Value>()?;
            self.0.insert(key, value);
        }
        Ok(())
    }
}

/// The read prefix, then whatever stopped the read (trailers or an error), then the rest.
struct Replayed {
    prefix: Option<Bytes>,
    next: Option<Result<Frame<Bytes>, axum::Error>>,
    rest: Option<Body>,
}

impl HttpBody for Replayed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if let Some(next) = self.next.take() {
            return Poll::Ready(Some(next));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none()
            && self.next.is_none()
            && self.rest.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let rest = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint);
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + prefix);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + prefix);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_off_object_keeps_its_complete_fields() {
        let fields = top_level_fields(br#" {"model": "llama3", "n": 2, "messages": [{"role": "us"#)
            .expect("an object");
        assert_eq!(fields.get("model"), Some(&Value::from("llama3")));
        assert_eq!(fields.get("n"), Some(&Value::from(2)));
        assert!(!fields.contains_key("messages"));
    }

    #[test]
    fn a_body_that_is_not_an_object_has_no_fields() {
        assert_eq!(top_level_fields(b"model=llama3"), None);
        assert_eq!(top_level_fields(b"[1, 2]"), None);
        assert_eq!(top_level_fields(b""), None);
    }

    #[tokio::test]
    async fn the_body_is_replayed_whole_after_its_prefix_was_read() {
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(br#"{"model": "mistral", "#)),
            Ok(Bytes::from_static(br#""prompt": "hello"}"#)),
            Ok(Bytes::from_static(b"  ")),
        ];
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        let request = Request::new(body);
        let (request, fields) = read_json_fields(request, 20).await;
        assert_eq!(
            fields.and_then(|f| f.get("model").cloned()),
            Some(Value::from("mistral")),
            "the first 20 bytes hold the model"
        );
        let whole = request
            .into_body()
            .collect()
            .await
            .expect("the body")
            .to_bytes();
        assert_eq!(&whole[..], br#"{"model": "mistral", "prompt": "hello"}  "#);
    }
}
