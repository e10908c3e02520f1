//! The simulated backend's OpenAI-compatible routes, so demos and tests can put an OpenAI client
//! in front of `hestia sim`: `POST /v1/chat/completions` and `/v1/completions` (whole, or
//! streamed as Server-Sent Events with `"stream": true`), `POST /v1/embeddings` and
//! `GET /v1/models`. The answer repeats the prompt and names the backend, so a test can tell who
//! answered what.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde_json::{Value, json};

use super::state::SimState;

type Shared = Arc<SimState>;

/// `POST /v1/chat/completions`: the reply is `"<name> heard: <last user message>"`.
pub(crate) async fn chat(State(state): State<Shared>, body: Option<Json<Value>>) -> Response {
    let Some(Json(request)) = body else {
        return bad_request("the body must be a JSON object");
    };
    let heard = request["messages"]
        .as_array()
        .and_then(|messages| messages.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned();
    let reply = format!("{} heard: {heard}", state.name);
    answer(&state, &request, reply, Kind::Chat)
}

/// `POST /v1/completions`: the text is `"<name> heard: <prompt>"`.
pub(crate) async fn completions(
    State(state): State<Shared>,
    body: Option<Json<Value>>,
) -> Response {
    let Some(Json(request)) = body else {
        return bad_request("the body must be a JSON object");
    };
    let prompt = request["prompt"].as_str().unwrap_or("").to_owned();
    let reply = format!("{} heard: {prompt}", state.name);
    answer(&state, &request, reply, Kind::Text)
}

/// `POST /v1/embeddings`: one small deterministic vector per input.
pub(crate) async fn embeddings(State(state): State<Shared>, body: Option<Json<Value>>) -> Response {
    let Some(Json(request)) = body else {
        return bad_request("the body must be a JSON object");
    };
    let inputs: Vec<String> = match &request["input"] {
        Value::String(one) => vec![one.clone()],
        Value::Array(many) => many.iter().map(|v| v.to_string()).collect(),
        _ => return bad_request("`input` must be a string or an array"),
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let len = input.len() as f64;
            json!({"object": "embedding", "index": i, "embedding": [len, len / 2.0, 1.0]})
        })
        .collect();
    Json(json!({
        "object": "list",
        "data": data,
        "model": model_of(&request, &state),
        "usage": {"prompt_tokens": inputs.len(), "total_tokens": inputs.len()},
    }))
    .into_response()
}

/// `GET /v1/models`: one model, named after the backend.
pub(crate) async fn models(State(state): State<Shared>) -> Response {
    Json(json!({
        "object": "list",
        "data": [{"id": state.name, "object": "model", "created": created(&state), "owned_by": "hestia-sim"}],
    }))
    .into_response()
}

#[derive(Clone, Copy)]
enum Kind {
    Chat,
    Text,
}

fn answer(state: &SimState, request: &Value, reply: String, kind: Kind) -> Response {
    let model = model_of(request, state);
    let id = format!("sim-{}-{}", state.name, state.requests());
    let created = created(state);
    if request["stream"] != Value::Bool(true) {
        let (object, choice) = match kind {
            Kind::Chat => (
                "chat.completion",
                json!({"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}),
            ),
            Kind::Text => (
                "text_completion",
                json!({"index": 0, "text": reply, "finish_reason": "stop"}),
            ),
        };
        let words = reply.split_whitespace().count();
        return Json(json!({
            "id": id, "object": object, "created": created, "model": model,
            "choices": [choice],
            "usage": {"prompt_tokens": 1, "completion_tokens": words, "total_tokens": words + 1},
        }))
        .into_response();
    }
    // One event per word, then a closing event, then `[DONE]`, as OpenAI streams.
    let object = match kind {
        Kind::Chat => "chat.completion.chunk",
        Kind::Text => "text_completion",
    };
    let piece = |text: Option<String>| {
        let finish = text.is_none().then_some("stop");
        let choice = match kind {
            Kind::Chat => {
                json!({"index": 0, "delta": text.map_or(json!({}), |t| json!({"content": t})), "finish_reason": finish})
            }
            Kind::Text => {
                json!({"index": 0, "text": text.unwrap_or_default(), "finish_reason": finish})
            }
        };
        json!({"id": id, "object": object, "created": created, "model": model, "choices": [choice]})
            .to_string()
    };
    let mut events: Vec<String> = Vec::new();
    if let Kind::Chat = kind {
        let role = json!({"id": id, "object": object, "created": created, "model": model,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]});
        events.push(role.to_string());
    }
    let words: Vec<&str> = reply.split(' ').collect();
    for (i, word) in words.iter().enumerate() {
        let text = if i == 0 {
            (*word).to_owned()
        } else {
            format!(" {word}")
        };
        events.push(piece(Some(text)));
    }
    events.push(piece(None));
    events.push("[DONE]".to_owned());
    let events = stream::iter(
        events
            .into_iter()
            .map(|data| Ok::<_, Infallible>(Event::default().data(data))),
    );
    Sse::new(events).into_response()
}

fn model_of(request: &Value, state: &SimState) -> String {
    request["model"]
        .as_str()
        .map_or_else(|| state.name.clone(), str::to_owned)
}

fn created(state: &SimState) -> i64 {
    state.started_at.timestamp()
}

fn bad_request(detail: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": {"message": detail, "type": "invalid_request_error"}})),
    )
        .into_response()
}
