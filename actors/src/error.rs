//! The errors a caller of the engine can see, each with its stable problem type (design.md §2.2).
//!
//! A failed start, a full queue or a timeout is a *value* sent back to the waiting request; the
//! actor keeps running. The HTTP layer maps these to `application/problem+json` in one place.

use std::time::Duration;

use thiserror::Error;

/// Why a request for a service could not be served.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum ServiceError {
    /// 404: no service has this id.
    #[error("no service named `{service}` is configured (known: {})", known.join(", "))]
    UnknownService { service: String, known: Vec<String> },

    /// 503: the bounded queue in front of a cold service is full.
    #[error("service `{service}` is starting and its queue is full ({capacity} requests waiting)")]
    QueueFull { service: String, capacity: usize },

    /// 503 (504 from the gateway): the request waited its whole deadline for the service.
    #[error(
        "service `{service}` did not become ready within {waited:?} (request timeout); {}",
        timeout_cause(state, waiting_for.as_deref())
    )]
    QueueTimeout {
        service: String,
        waited: Duration,
        state: &'static str,
        /// For a service Hestia does not start: what it waits for to answer (a redacted URL).
        waiting_for: Option<String>,
    },

    /// 503: every attempt, retry and fallback failed.
    #[error(
        "service `{service}` failed to start after {attempts} attempt(s) with the `{starter}` starter: {last_error}"
    )]
    StartFailed {
        service: String,
        attempts: u32,
        starter: &'static str,
        last_error: StartFailure,
    },

    /// 409: the operation does not fit the current state (start while ready, stop while cold).
    #[error("service `{service}` is {state}: {action} is not possible now")]
    Conflict {
        service: String,
        state: &'static str,
        action: &'static str,
    },

    /// 503: the service's actor is restarting or Hestia is shutting down.
    #[error("service `{service}` is unavailable: {reason}")]
    Unavailable {
        service: String,
        reason: &'static str,
    },

    /// 503: Hestia is shutting down and the service is not ready (its backend is about to stop),
    /// so the request is answered at once instead of waiting for a start that will not come.
    #[error("Hestia is shutting down: service `{service}` will not be started; retry later")]
    ShuttingDown { service: String },
}

impl ServiceError {
    /// The stable problem type slug, as listed in design.md §2.2.
    pub fn problem_type(&self) -> &'static str {
        match self {
            ServiceError::UnknownService { .. } => "unknown-service",
            ServiceError::QueueFull { .. } => "queue-full",
            ServiceError::QueueTimeout { .. } => "queue-timeout",
            ServiceError::StartFailed { .. } => "start-failed",
            ServiceError::Conflict { .. } => "conflict",
            ServiceError::Unavailable { .. } => "unavailable",
            ServiceError::ShuttingDown { .. } => "shutting-down",
        }
    }

    /// The service the error is about.
    pub fn service(&self) -> &str {
        match self {
            ServiceError::UnknownService { service, .. }
            | ServiceError::QueueFull { service, .. }
            | ServiceError::QueueTimeout { service, .. }
            | ServiceError::StartFailed { service, .. }
            | ServiceError::Conflict { service, .. }
            | ServiceError::Unavailable { service, .. }
            | ServiceError::ShuttingDown { service } => service,
        }
    }
}

/// Why one start attempt failed: the diagnosis `start-failed` carries.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum StartFailure {
    /// The starter could not bring the service up (spawn failed, webhook refused, task failed).
    #[error("{message}")]
    Starter { message: String },
    /// The service was started but its readiness probe never passed.
    #[error("not ready after {waited:?} ({probes} probes); last: {last}")]
    Probe {
        probes: u32,
        waited: Duration,
        last: String,
    },
    /// No readiness within the service's start timeout.
    #[error("no readiness within the start timeout of {limit:?}")]
    Timeout { limit: Duration },
    /// The process Hestia started exited before it was ready (code or signal, output tail).
    #[error("the process exited before it was ready ({exit})")]
    Exited { exit: crate::starters::ExitInfo },
    /// It was ready, then stopped answering (a failed health check, its process exited).
    #[error("{reason}")]
    Unready { reason: String },
}

impl StartFailure {
    /// `starter`, `probe`, `timeout`, `exited` or `unready`: recorded with the event, for filtering.
    pub fn reason(&self) -> &'static str {
        match self {
            StartFailure::Starter { .. } => "starter",
            StartFailure::Probe { .. } => "probe",
            StartFailure::Timeout { .. } => "timeout",
            StartFailure::Exited { .. } => "exited",
            StartFailure::Unready { .. } => "unready",
        }
    }
}

fn timeout_cause(state: &str, waiting_for: Option<&str>) -> String {
    match waiting_for {
        Some(target) => format!(
            "Hestia does not start this service (it has no `start`): it is {state} for {target} to answer"
        ),
        None => format!("it is {state}"),
    }
}

/// Why the engine could not start.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error("could not spawn the {what} actor: {source}")]
    Spawn {
        what: String,
        #[source]
        source: ractor::SpawnErr,
    },
    #[error("the configuration reload could not be applied: {reason}")]
    Reload { reason: String },
    #[error("could not reconcile the configuration into the database: {0}")]
    Persistence(#[from] crate::persistence::PersistenceError),
    #[error("service `{service}`: {source}")]
    Strategy {
        service: String,
        #[source]
        source: crate::strategy::StrategySetupError,
    },
}
