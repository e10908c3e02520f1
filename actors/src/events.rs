//! The activity timeline: every decision the engine makes, as a typed event (design.md §2.4).
//!
//! Events are logged with tracing where they happen and cast to the persistence actor, which
//! writes them in order to the `activity` table. The `kind` names are public: scripts filter on them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The type of an activity event. Its `as_str` is the stable public name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    RouteDecision,
    Queued,
    Dequeued,
    QueueRejected,
    QueueTimeout,
    StartRequested,
    StartAttempt,
    StartRetry,
    StartFallback,
    StartFailed,
    Started,
    ReadinessChanged,
    StopRequested,
    Stopped,
    IdleShutdown,
    AuthAllowed,
    AuthDenied,
}

impl ActivityKind {
    /// Every kind, in the order design.md lists them.
    pub const ALL: [ActivityKind; 17] = [
        ActivityKind::RouteDecision,
        ActivityKind::Queued,
        ActivityKind::Dequeued,
        ActivityKind::QueueRejected,
        ActivityKind::QueueTimeout,
        ActivityKind::StartRequested,
        ActivityKind::StartAttempt,
        ActivityKind::StartRetry,
        ActivityKind::StartFallback,
        ActivityKind::StartFailed,
        ActivityKind::Started,
        ActivityKind::ReadinessChanged,
        ActivityKind::StopRequested,
        ActivityKind::Stopped,
        ActivityKind::IdleShutdown,
        ActivityKind::AuthAllowed,
        ActivityKind::AuthDenied,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActivityKind::RouteDecision => "route_decision",
            ActivityKind::Queued => "queued",
            ActivityKind::Dequeued => "dequeued",
            ActivityKind::QueueRejected => "queue_rejected",
            ActivityKind::QueueTimeout => "queue_timeout",
            ActivityKind::StartRequested => "start_requested",
            ActivityKind::StartAttempt => "start_attempt",
            ActivityKind::StartRetry => "start_retry",
            ActivityKind::StartFallback => "start_fallback",
            ActivityKind::StartFailed => "start_failed",
            ActivityKind::Started => "started",
            ActivityKind::ReadinessChanged => "readiness_changed",
            ActivityKind::StopRequested => "stop_requested",
            ActivityKind::Stopped => "stopped",
            ActivityKind::IdleShutdown => "idle_shutdown",
            ActivityKind::AuthAllowed => "auth_allowed",
            ActivityKind::AuthDenied => "auth_denied",
        }
    }

    /// The inverse of `as_str`.
    pub fn parse(name: &str) -> Option<ActivityKind> {
        ActivityKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for ActivityKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityEvent {
    /// UUIDv7: time-ordered, so ids sort in recording order.
    pub id: Uuid,
    pub at: DateTime<Utc>,
    #[serde(rename = "type")]
    pub kind: ActivityKind,
    pub service_id: Option<String>,
    pub machine_id: Option<String>,
    pub request_id: Option<String>,
    /// Free-form details (attempt number, duration, error text...). Never holds secrets.
    pub detail: serde_json::Value,
}

impl ActivityEvent {
    /// A new event stamped now, for `service`.
    pub fn new(kind: ActivityKind, service_id: Option<&str>) -> ActivityEvent {
        ActivityEvent {
            id: Uuid::now_v7(),
            at: Utc::now(),
            kind,
            service_id: service_id.map(str::to_owned),
            machine_id: None,
            request_id: None,
            detail: serde_json::Value::Null,
        }
    }

    pub fn machine(mut self, machine_id: Option<&str>) -> Self {
        self.machine_id = machine_id.map(str::to_owned);
        self
    }

    pub fn request(mut self, request_id: Option<&str>) -> Self {
        self.request_id = request_id.map(str::to_owned);
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

/// What a service's engine event says, typed: the per-service metrics read these fields, and the
/// activity record gets them as its `detail` JSON ([`Detail::to_json`]), with the same keys the
/// timeline has always had.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Detail {
    Queued {
        position: usize,
        state: &'static str,
    },
    Dequeued {
        waited_ms: u64,
    },
    QueueRejected {
        capacity: usize,
    },
    QueueTimeout {
        waited_ms: u64,
        state: &'static str,
    },
    StartRequested {
        cause: &'static str,
        starter: &'static str,
        queued: usize,
    },
    RouteDecision {
        machine: Option<String>,
        rule: Option<String>,
        target: String,
        fallbacks: Vec<String>,
    },
    StartAttempt {
        attempt: u32,
        retry: u32,
        target: String,
        rule: Option<String>,
    },
    StartRetry {
        attempt: u32,
        next_attempt: u32,
        delay_ms: u64,
        error: String,
        reason: &'static str,
    },
    StartFallback {
        from: Option<String>,
        to: String,
        to_machine: Option<String>,
        error: String,
        reason: &'static str,
    },
    StartFailed {
        attempts: u32,
        error: String,
        reason: &'static str,
        waiters: usize,
    },
    Started {
        attempts: u32,
        duration_ms: Option<u64>,
        adopted: bool,
        target: String,
    },
    ReadinessChanged {
        ready: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    StopRequested {
        reason: &'static str,
    },
    Stopped {
        error: Option<String>,
        /// `shutdown` when Hestia stopped it on its way out; absent for ordinary stops.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
    },
    IdleShutdown {
        idle_ms: u64,
    },
}

impl Detail {
    /// The kind of event this is.
    pub fn kind(&self) -> ActivityKind {
        match self {
            Detail::Queued { .. } => ActivityKind::Queued,
            Detail::Dequeued { .. } => ActivityKind::Dequeued,
            Detail::QueueRejected { .. } => ActivityKind::QueueRejected,
            Detail::QueueTimeout { .. } => ActivityKind::QueueTimeout,
            Detail::StartRequested { .. } => ActivityKind::StartRequested,
            Detail::RouteDecision { .. } => ActivityKind::RouteDecision,
            Detail::StartAttempt { .. } => ActivityKind::StartAttempt,
            Detail::StartRetry { .. } => ActivityKind::StartRetry,
            Detail::StartFallback { .. } => ActivityKind::StartFallback,
            Detail::StartFailed { .. } => ActivityKind::StartFailed,
            Detail::Started { .. } => ActivityKind::Started,
            Detail::ReadinessChanged { .. } => ActivityKind::ReadinessChanged,
            Detail::StopRequested { .. } => ActivityKind::StopRequested,
            Detail::Stopped { .. } => ActivityKind::Stopped,
            Detail::IdleShutdown { .. } => ActivityKind::IdleShutdown,
        }
    }

    /// The activity record's `detail` object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn typed_details_keep_the_timeline_json_keys() {
        let started = Detail::Started {
            attempts: 1,
            duration_ms: None,
            adopted: true,
            target: "http://127.0.0.1:1".into(),
        };
        assert_eq!(started.kind(), ActivityKind::Started);
        assert_eq!(
            started.to_json(),
            json!({"attempts": 1, "duration_ms": null, "adopted": true, "target": "http://127.0.0.1:1"})
        );
        let ready = Detail::ReadinessChanged {
            ready: true,
            reason: None,
        };
        assert_eq!(ready.to_json(), json!({"ready": true}));
        let stopped = Detail::Stopped {
            error: None,
            reason: None,
        };
        assert_eq!(stopped.to_json(), json!({"error": null}));
    }
}
