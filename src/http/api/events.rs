//! `GET /v1/events`: what happens, live, as Server-Sent Events.
//!
//! Three kinds of event, each with an id: every recorded activity event (`event:` its type, e.g.
//! `started`; `id:` its activity id), read from the persistence handle's broadcast — the same
//! feed the activity table is written from; `state`, each service's lifecycle change (from, to)
//! read from the snapshot the actor publishes; and `queue`, its queue depth, at most one per
//! [`QUEUE_EVERY`] per service (the latest value always follows). A client resuming with
//! `Last-Event-ID` first gets the activity recorded after that id, read back from the table; every
//! connection starts with one `state` event per service (`from: null`), so a client that missed
//! changes is current again. Comments every [`HEARTBEAT`] keep proxies from closing the stream.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use chrono::Utc;
use futures_util::stream::{self, BoxStream, Stream, StreamExt};
use hestia_actors::events::ActivityEvent;
use hestia_actors::service::{ServiceHandle, ServiceStatus, State as Lifecycle};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use uuid::Uuid;

use crate::http::AppState;
use crate::http::extract::ApiQuery;
use crate::http::problem::Problem;

/// How often a comment is sent on an otherwise quiet stream.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// At most one `queue` event per service this often; the latest depth is sent at the end of it.
pub const QUEUE_EVERY: Duration = Duration::from_millis(250);
/// At most this many recorded events are replayed to a resuming client.
pub const REPLAY_LIMIT: u64 = 1000;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/events", get(events))
}

/// `?service=`: only that service's events.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    pub service: Option<String>,
}

/// The data of a `state` event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateChange {
    pub service_id: String,
    /// The state before; `null` in the snapshot a connection starts with.
    pub from: Option<Lifecycle>,
    pub to: Lifecycle,
    pub at: chrono::DateTime<Utc>,
    pub machine_id: Option<String>,
    pub queue_pending: usize,
    pub in_flight: usize,
    pub last_error: Option<String>,
}

/// The data of a `queue` event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueDepth {
    pub service_id: String,
    pub queue_pending: usize,
    pub queue_capacity: usize,
    pub in_flight: usize,
    pub at: chrono::DateTime<Utc>,
}

type EventStream = BoxStream<'static, Result<Event, std::convert::Infallible>>;

async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<impl IntoResponse, Problem> {
    let after = last_event_id(&headers).map_err(|p| *p)?;
    let services = match &query.service {
        Some(id) => vec![state.engine.service(id).map_err(Problem::from)?],
        None => state.engine.services(),
    };
    let persistence = state.engine.persistence();
    // Subscribe before reading the table: whatever is recorded in between is in one of the two.
    let live = persistence.subscribe();
    let replay = match after {
        Some(after) => persistence
            .activity_after(after, REPLAY_LIMIT)
            .await
            .map_err(|error| {
                Problem::new(
                    "unavailable",
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the activity log cannot be read to resume the stream: {error}"),
                )
            })?,
        None => Vec::new(),
    };
    let service = query.service.clone();
    let wanted = move |event: &ActivityEvent| {
        service
            .as_deref()
            .is_none_or(|id| event.service_id.as_deref() == Some(id))
    };
    let replayed_up_to = replay.last().map(|e| e.id).or(after);
    let replay: Vec<ActivityEvent> = replay.into_iter().filter(&wanted).collect();

    let snapshot: Vec<Event> = services
        .iter()
        .map(|s| state_event(s, None, &s.status()))
        .collect();
    let live = live_activity(live, replayed_up_to).filter_map(move |item| {
        std::future::ready(match item {
            LiveItem::Event(event) => wanted(&event).then(|| activity_event(&event)),
            LiveItem::Lagged(missed) => Some(sse(
                "lagged",
                Uuid::now_v7(),
                &serde_json::json!({ "missed": missed }),
            )),
        })
    });
    let lifecycles = stream::select_all(services.into_iter().map(lifecycle));
    let stream: EventStream = stream::iter(snapshot)
        .chain(stream::iter(
            replay.iter().map(activity_event).collect::<Vec<_>>(),
        ))
        .chain(stream::select(live, lifecycles))
        // Hestia is shutting down: the stream ends now (the client reconnects to the next one).
        .take_until(state.stopping.clone().cancelled_owned())
        .map(Ok)
        .boxed();
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat")))
}

/// The `Last-Event-ID` a reconnecting client sends: an id this stream gave out.
fn last_event_id(headers: &HeaderMap) -> Result<Option<Uuid>, Box<Problem>> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(text).map(Some).map_err(|_| {
        Box::new(Problem::new(
            "invalid-request",
            StatusCode::BAD_REQUEST,
            format!("`Last-Event-ID`: `{text}` is not an event id this stream gave out (a UUID)"),
        ))
    })
}

/// Recorded events as they happen, skipping those already replayed (ids up to `seen`). A
/// subscriber that falls too far behind gets a `lagged` event saying how many it missed.
fn live_activity(
    receiver: broadcast::Receiver<ActivityEvent>,
    seen: Option<Uuid>,
) -> impl Stream<Item = LiveItem> + Send + 'static {
    stream::unfold(receiver, move |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(event) if seen.is_some_and(|seen| event.id <= seen) => continue,
                Ok(event) => return Some((LiveItem::Event(event), receiver)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Some((LiveItem::Lagged(missed), receiver));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// One item of the live feed: an event, or how many a slow subscriber missed.
enum LiveItem {
    Event(ActivityEvent),
    Lagged(u64),
}

fn activity_event(event: &ActivityEvent) -> Event {
    sse(event.kind.as_str(), event.id, event)
}

/// A service's lifecycle changes and (throttled) queue depth, from its published status.
fn lifecycle(service: ServiceHandle) -> BoxStream<'static, Event> {
    let updates = service.subscribe();
    let status = updates.borrow().clone();
    let watcher = Watcher {
        service,
        updates,
        state: status.state,
        queue: status.queue_pending,
        queue_sent_at: None,
    };
    stream::unfold(watcher, |mut w| async move {
        let event = w.next().await?;
        Some((event, w))
    })
    .boxed()
}

struct Watcher {
    service: ServiceHandle,
    updates: watch::Receiver<Arc<ServiceStatus>>,
    state: Lifecycle,
    queue: usize,
    queue_sent_at: Option<Instant>,
}

impl Watcher {
    /// The next event worth sending; `None` once the service is gone.
    async fn next(&mut self) -> Option<Event> {
        loop {
            self.updates.changed().await.ok()?;
            let mut status = self.updates.borrow_and_update().clone();
            if status.state == self.state && status.queue_pending != self.queue {
                // Throttled: wait out the window, then send whatever the depth is by then.
                if let Some(sent) = self.queue_sent_at {
                    tokio::time::sleep_until(sent + QUEUE_EVERY).await;
                    status = self.updates.borrow_and_update().clone();
                }
            }
            if status.state != self.state {
                let from = std::mem::replace(&mut self.state, status.state);
                self.queue = status.queue_pending;
                return Some(state_event(&self.service, Some(from), &status));
            }
            if status.queue_pending != self.queue {
                self.queue = status.queue_pending;
                self.queue_sent_at = Some(Instant::now());
                let depth = QueueDepth {
                    service_id: status.service_id.clone(),
                    queue_pending: status.queue_pending,
                    queue_capacity: status.queue_capacity,
                    in_flight: self.service.in_flight(),
                    at: Utc::now(),
                };
                return Some(sse("queue", Uuid::now_v7(), &depth));
            }
        }
    }
}

fn state_event(service: &ServiceHandle, from: Option<Lifecycle>, status: &ServiceStatus) -> Event {
    let change = StateChange {
        service_id: status.service_id.clone(),
        from,
        to: status.state,
        at: Utc::now(),
        machine_id: status.machine_id.clone(),
        queue_pending: status.queue_pending,
        in_flight: service.in_flight(),
        last_error: status.last_error.clone(),
    };
    sse("state", Uuid::now_v7(), &change)
}

fn sse(kind: &str, id: Uuid, data: &impl Serialize) -> Event {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "null".to_owned());
    Event::default()
        .event(kind)
        .id(id.hyphenated().to_string())
        .data(data)
}
