//! One configured service: its actor, and the handle that is the only way in.
//!
//! The [`ServiceHandle`] is cheap to clone and stays valid when the supervisor restarts the actor.
//! Its hot path, [`ServiceHandle::acquire`] on a ready service, touches two atomics and no actor;
//! everything else is one message to the [`actor`], which alone decides and writes the state.

pub(crate) mod actor;
pub(crate) mod lifecycle;
pub mod policy;
pub(crate) mod queue;
mod shared;
mod slots;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::ActorRef;
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

pub(crate) use self::shared::{Awareness, Shared, Upstreams};
pub use self::shared::{Lease, RunLocal};
use self::slots::{NoSlot, Slots};
use crate::error::{ServiceError, StartFailure};
use crate::events::Detail;
use actor::ServiceMsg;
use lifecycle::Event;
use queue::Waiter;

/// The public lifecycle state (design.md §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Cold,
    Starting,
    /// Down and not started by Hestia (no `start`): waiting for it to come up elsewhere.
    Waiting,
    Ready,
    Stopping,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Cold => "cold",
            State::Starting => "starting",
            State::Waiting => "waiting",
            State::Ready => "ready",
            State::Stopping => "stopping",
            State::Failed => "failed",
        }
    }
}

/// Where requests for a ready service go, for one run of it: a new `Route` is made each time the
/// service becomes ready, and the engine lets go of it when the service leaves `ready`.
#[derive(Debug)]
pub struct Route {
    pub base_url: String,
    pub machine_id: Option<String>,
    /// True when the start failed over to the prototype's `fallback_url`.
    pub via_fallback_url: bool,
    /// What the data path keeps for this run only (its pooled upstream connections).
    pub run_local: RunLocal,
}

/// What the actor publishes after every change; the status API and `?wait=true` read it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    pub service_id: String,
    pub state: State,
    pub machine_id: Option<String>,
    pub base_url: Option<String>,
    pub queue_pending: usize,
    pub queue_capacity: usize,
    pub last_error: Option<String>,
    /// The typed diagnosis behind `last_error` when the service failed (not serialised).
    #[serde(skip)]
    pub failure: Option<crate::error::StartFailure>,
    pub last_started_at: Option<DateTime<Utc>>,
    /// Attempts made by the current (or last) start.
    pub attempts: u32,
    /// `command`, `http`, `semaphore` or `none`.
    pub starter: &'static str,
    /// The pid of the process Hestia owns for it, if any.
    pub pid: Option<u32>,
    /// True when the service was found already running and adopted, not started by us.
    pub adopted: bool,
}

/// What `start` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAccepted {
    /// A start was initiated (or queued behind a stop in progress).
    Initiated,
}

/// The way into one service. Clone freely.
#[derive(Clone)]
pub struct ServiceHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ServiceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceHandle")
            .field("id", &self.shared.id)
            .finish()
    }
}

impl ServiceHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> ServiceHandle {
        ServiceHandle { shared }
    }

    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// How long the upstream may take to answer a request (`upstream_timeout_ms`).
    pub fn upstream_timeout(&self) -> Duration {
        self.shared.upstreams.timeout
    }

    /// True when the service's strategy reads the request's JSON body fields
    /// ([`crate::strategy::RequestContext::body`]).
    pub fn needs_body(&self) -> bool {
        self.shared.upstreams.selector().needs_body()
    }

    /// The strategy choosing among the service's instances, and its fallback.
    pub fn strategy(&self) -> (&str, &str) {
        let selector = self.shared.upstreams.selector();
        (selector.strategy_name(), selector.fallback_name())
    }

    /// True when requests go upstream as HTTP/2 (h2c) (`upstream_http2`), not HTTP/1.1.
    pub fn upstream_http2(&self) -> bool {
        self.shared.upstreams.http2
    }

    /// How long one request may wait for this service (`request_timeout_seconds`).
    pub fn queue_timeout(&self) -> Duration {
        self.shared.queue_timeout
    }

    /// True when [`acquire`](Self::acquire) would not wait: the service is ready and a
    /// `max_concurrency` slot is free (a hint: it may change the next moment).
    pub fn admits_now(&self) -> bool {
        self.shared.is_open() && self.shared.slots.as_ref().is_none_or(Slots::has_free)
    }

    /// Admits one request. The answer by state:
    ///
    /// | state      | answer                                                            |
    /// |------------|-------------------------------------------------------------------|
    /// | `ready`    | a [`Lease`] at once, without asking the actor                     |
    /// | `cold`     | starts the service (once) and queues the request until it is ready |
    /// | `starting` | queues the request                                                |
    /// | `stopping` | queues the request; the service starts again after the stop       |
    /// | `failed`   | starts afresh and queues the request                              |
    ///
    /// A full queue answers `QueueFull` at once; the request never waits past its deadline
    /// (`request_timeout_seconds`), and a start that fails for good answers `StartFailed`.
    ///
    /// What waits (the actor's queue, a slot) is boxed: the future of a request that does not
    /// wait stays small, and it is moved with every request into its connection's task.
    pub async fn acquire(&self, request_id: Option<&str>) -> Result<Lease, ServiceError> {
        let Some(mut lease) = self.shared.try_lease() else {
            return Box::pin(self.acquire_when_ready(request_id)).await;
        };
        if let Some(slots) = &self.shared.slots {
            self.slot(slots, request_id, None).await?;
            lease.hold_slot();
        }
        Ok(lease)
    }

    /// [`acquire`](Self::acquire) for a service that is not ready: queued with the actor until
    /// it is, then a slot, both by one deadline.
    async fn acquire_when_ready(&self, request_id: Option<&str>) -> Result<Lease, ServiceError> {
        let deadline = Instant::now() + self.shared.queue_timeout;
        let mut lease = self.wait_ready(request_id, deadline).await?;
        if let Some(slots) = &self.shared.slots {
            self.slot(slots, request_id, Some(deadline)).await?;
            lease.hold_slot();
        }
        Ok(lease)
    }

    /// Queues the request with the actor until the service is ready (or the deadline passes).
    async fn wait_ready(
        &self,
        request_id: Option<&str>,
        deadline: Instant,
    ) -> Result<Lease, ServiceError> {
        let now = Instant::now();
        let (reply, answer) = oneshot::channel();
        let waiter = Waiter {
            reply,
            deadline,
            enqueued_at: now,
            request_id: request_id.map(str::to_owned),
        };
        self.send(Event::Acquire(waiter).into())?;
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(admission)) => admission,
            Ok(Err(_)) => Err(self.unavailable("its actor stopped while the request waited")),
            Err(_) => {
                // Out of the queue count now, not at the next start or stop.
                let _ = self.send(Event::WaiterGone.into());
                Err(self.timed_out(request_id, now))
            }
        }
    }

    /// A `max_concurrency` slot: at once if one is free, else in arrival order, as long as no
    /// more than the queue's capacity wait, and before the request's deadline (from now, for a
    /// request that found the service ready).
    async fn slot(
        &self,
        slots: &Slots,
        request_id: Option<&str>,
        deadline: Option<Instant>,
    ) -> Result<(), ServiceError> {
        if slots.try_take() {
            return Ok(());
        }
        // Boxed, like the wait for readiness: see `acquire`.
        Box::pin(self.wait_for_slot(slots, request_id, deadline)).await
    }

    /// [`slot`](Self::slot) when none is free: in line, if there is room.
    async fn wait_for_slot(
        &self,
        slots: &Slots,
        request_id: Option<&str>,
        deadline: Option<Instant>,
    ) -> Result<(), ServiceError> {
        let now = Instant::now();
        let deadline = deadline.unwrap_or(now + self.shared.queue_timeout);
        let capacity = self.status().queue_capacity;
        match slots.wait(capacity, deadline).await {
            Ok(()) => Ok(()),
            Err(NoSlot::Full) => {
                let detail = Detail::QueueRejected { capacity };
                self.shared
                    .record(&detail, detail.to_json(), None, request_id);
                Err(ServiceError::QueueFull {
                    service: self.id().to_owned(),
                    capacity,
                })
            }
            Err(NoSlot::TimedOut) => Err(self.timed_out(request_id, now)),
        }
    }

    /// Records and answers a request that waited its whole deadline since `since`.
    fn timed_out(&self, request_id: Option<&str>, since: Instant) -> ServiceError {
        let state = self.status().state.as_str();
        let detail = Detail::QueueTimeout {
            waited_ms: since.elapsed().as_millis() as u64,
            state,
        };
        self.shared
            .record(&detail, detail.to_json(), None, request_id);
        ServiceError::QueueTimeout {
            service: self.id().to_owned(),
            waited: since.elapsed(),
            state,
            waiting_for: self.shared.waiting_for.clone(),
        }
    }

    /// Starts the service if it is cold, failed or stopping; `Conflict` when starting or ready.
    pub async fn start(&self) -> Result<StartAccepted, ServiceError> {
        let (reply, answer) = oneshot::channel();
        self.send(Event::Start(reply).into())?;
        answer
            .await
            .map_err(|_| self.unavailable("its actor stopped"))?
    }

    /// Starts the service and waits until it is ready (or the start fails for good).
    pub async fn start_and_wait(&self, timeout: Duration) -> Result<ServiceStatus, ServiceError> {
        match self.start().await {
            Ok(StartAccepted::Initiated) | Err(ServiceError::Conflict { .. }) => {}
            Err(other) => return Err(other),
        }
        self.wait_settled(timeout).await
    }

    /// Waits until the service is `ready`, or answers the error that made it `failed`.
    pub async fn wait_settled(&self, timeout: Duration) -> Result<ServiceStatus, ServiceError> {
        let mut updates = self.subscribe();
        let waited = Instant::now();
        let settled = tokio::time::timeout(timeout, async {
            loop {
                let status = updates.borrow_and_update().clone();
                match status.state {
                    State::Ready => return Ok((*status).clone()),
                    State::Failed => {
                        return Err(ServiceError::StartFailed {
                            service: self.id().to_owned(),
                            attempts: status.attempts,
                            starter: status.starter,
                            last_error: status.failure.clone().unwrap_or_else(|| {
                                StartFailure::Unready {
                                    reason: status.last_error.clone().unwrap_or_default(),
                                }
                            }),
                        });
                    }
                    _ => {}
                }
                if updates.changed().await.is_err() {
                    return Err(self.unavailable("its actor stopped"));
                }
            }
        })
        .await;
        settled.unwrap_or_else(|_| {
            Err(ServiceError::QueueTimeout {
                service: self.id().to_owned(),
                waited: waited.elapsed(),
                state: self.status().state.as_str(),
                waiting_for: self.shared.waiting_for.clone(),
            })
        })
    }

    /// Stops the service; `Conflict` when it is already cold (or failed with nothing running).
    pub async fn stop(&self) -> Result<(), ServiceError> {
        let (reply, answer) = oneshot::channel();
        self.send(Event::Stop(reply).into())?;
        answer
            .await
            .map_err(|_| self.unavailable("its actor stopped"))?
    }

    /// Tells the actor a request could not reach the upstream: it re-checks readiness.
    pub fn report_unreachable(&self) {
        let _ = self.send(Event::Unreachable.into());
    }

    /// The latest published status.
    pub fn status(&self) -> Arc<ServiceStatus> {
        self.shared.status.borrow().clone()
    }

    /// Every status change from now on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ServiceStatus>> {
        self.shared.status.subscribe()
    }

    /// What the service's automation (Semaphore tasks) is doing, if it has any.
    pub fn automation(&self) -> Option<crate::starters::semaphore::AutomationStatus> {
        self.shared.starter.automation()
    }

    /// The service's counters; the proxy counts each answered request here.
    pub fn metrics(&self) -> &crate::metrics::ServiceMetrics {
        &self.shared.metrics
    }

    /// Requests waiting for a `max_concurrency` slot right now.
    pub fn waiting_for_slot(&self) -> usize {
        self.shared.slots.as_ref().map_or(0, Slots::waiting)
    }

    /// Requests holding a lease right now (in flight, or streaming).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// When the last request ended (or began, while one is in flight).
    pub fn last_used_at(&self) -> Option<DateTime<Utc>> {
        self.shared.last_used_at()
    }

    /// Kills the service's actor, as a crash would; the supervisor restarts it. For tests and
    /// for operators recovering a wedged service.
    pub fn kill_actor(&self) {
        if let Some(actor) = self.shared.actor() {
            actor.kill();
        }
    }

    /// Hestia is shutting down: the queue is answered at once and nothing new waits or starts.
    pub(crate) fn announce_shutdown(&self) {
        let _ = self.send(Event::ShuttingDown.into());
    }

    fn send(&self, msg: ServiceMsg) -> Result<(), ServiceError> {
        let actor: Option<ActorRef<ServiceMsg>> = self.shared.actor();
        match actor {
            Some(actor) => actor
                .cast(msg)
                .map_err(|_| self.unavailable("its actor is restarting")),
            None => Err(self.unavailable("its actor is restarting")),
        }
    }

    fn unavailable(&self, reason: &'static str) -> ServiceError {
        ServiceError::Unavailable {
            service: self.id().to_owned(),
            reason,
        }
    }
}
