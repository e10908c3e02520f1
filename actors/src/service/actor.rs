//! `ServiceActor`: the single owner of one service's lifecycle, queue and start policy.
//!
//! ```text
//!  cold ──request/start──▶ starting ──ready──▶ ready ──idle/stop──▶ stopping ──▶ cold
//!    ▲                       │  ▲ retry / fallback   │ health check or process exit fails
//!    │                       ▼  │                    ▼
//!    └──────── request ──── failed ◀─────────────────┘
//! ```
//! Rules: `handle` never awaits I/O — starts, stops and probes run in spawned tasks that report
//! back by message, tagged with the `run` they belong to so stale reports are ignored. A failed
//! start, a full queue or a timeout is a value sent to the waiting request; only a broken
//! invariant is returned as an error (and makes the supervisor restart the actor).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::policy::{Cursor, Next, Plan, Target};
use super::queue::{Queue, Waiter};
use super::{Route, ServiceStatus, Shared, StartAccepted, State};
use crate::error::ServiceError;
use crate::events::{ActivityEvent, ActivityKind};
use crate::persistence::{AttemptOutcome, AttemptRecord, PersistenceHandle, ServiceStateRecord};
use crate::placeholders::Vars;
use crate::readiness::Probe;
use crate::spec::{ReadinessSpec, ServiceSpec, TcpProbeSpec};
use crate::starters::{ExitWatch, StartTarget, Starter};

/// Messages to a service actor. Built only by `ServiceHandle` and by the actor's own tasks.
pub(crate) enum ServiceMsg {
    Acquire(Waiter),
    Start(oneshot::Sender<Result<StartAccepted, ServiceError>>),
    Stop(oneshot::Sender<Result<(), ServiceError>>),
    /// The data path could not connect: re-check readiness now.
    Unreachable,
    AttemptDone {
        run: u64,
        outcome: Result<Attempted, String>,
        elapsed: Duration,
    },
    RetryDue {
        run: u64,
    },
    StopDone {
        run: u64,
        outcome: Result<(), String>,
    },
    IdleCheck {
        run: u64,
    },
    HealthDue {
        run: u64,
    },
    HealthChecked {
        run: u64,
        outcome: Result<(), String>,
    },
    ProcessExited {
        run: u64,
        detail: String,
    },
    Adopted {
        run: u64,
        ready: bool,
    },
}

/// A successful attempt: the process to watch, if Hestia owns one.
pub(crate) struct Attempted {
    exit: Option<ExitWatch>,
}

/// Everything a service actor is (re)started with. The supervisor keeps a copy for restarts.
#[derive(Clone)]
pub(crate) struct ServiceArgs {
    pub spec: Arc<ServiceSpec>,
    pub plan: Arc<Plan>,
    pub starter: Arc<dyn Starter>,
    pub shared: Arc<Shared>,
    pub persistence: PersistenceHandle,
    pub client: reqwest::Client,
    /// Probe this target first and adopt the service if it is already up.
    pub adopt: Option<Target>,
    /// The process an earlier Hestia started for it (from the database), to take charge of.
    pub adopt_pid: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Probing whether the service is already up (after a restart); shown as `cold`.
    Adopting,
    Cold,
    Starting,
    Ready,
    Stopping,
    Failed,
}

impl Phase {
    fn public(self) -> State {
        match self {
            Phase::Adopting | Phase::Cold => State::Cold,
            Phase::Starting => State::Starting,
            Phase::Ready => State::Ready,
            Phase::Stopping => State::Stopping,
            Phase::Failed => State::Failed,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum StopReason {
    Idle,
    Requested,
}

pub(crate) struct ServiceState {
    args: ServiceArgs,
    phase: Phase,
    queue: Queue,
    /// Bumped whenever the phase changes hands; tasks and timers of older runs are ignored.
    run: u64,
    cursor: Cursor,
    /// The target of the running start, or the one the service runs on.
    target: Option<Target>,
    route: Option<Arc<Route>>,
    probe: Option<Arc<Probe>>,
    task: Option<AbortHandle>,
    health_in_flight: bool,
    start_began: Option<Instant>,
    /// A start was asked for while the current phase could not begin one.
    start_wanted: bool,
    adopted: bool,
    last_error: Option<String>,
    last_started_at: Option<DateTime<Utc>>,
    persisted_phase: Option<Phase>,
}

pub(crate) struct ServiceActor;

impl Actor for ServiceActor {
    type Msg = ServiceMsg;
    type State = ServiceState;
    type Arguments = ServiceArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ServiceMsg>,
        args: ServiceArgs,
    ) -> Result<ServiceState, ActorProcessingErr> {
        let adopt = args.adopt.clone();
        let mut state = ServiceState {
            queue: Queue::new(args.spec.queue.size),
            args,
            phase: Phase::Cold,
            run: 0,
            cursor: Cursor::default(),
            target: None,
            route: None,
            probe: None,
            task: None,
            health_in_flight: false,
            start_began: None,
            start_wanted: false,
            adopted: false,
            last_error: None,
            last_started_at: None,
            persisted_phase: None,
        };
        state.args.shared.set_actor(Some(myself.clone()));
        if let Some(target) = adopt {
            state.begin_adopt(&myself, target);
        }
        state.publish();
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ServiceMsg>,
        state: &mut ServiceState,
    ) -> Result<(), ActorProcessingErr> {
        // An orderly stop (Hestia is shutting down): release nothing half-done, and stop what we own.
        let shared = &state.args.shared;
        shared.close();
        shared.set_actor(None);
        if let Some(task) = state.task.take() {
            task.abort();
        }
        for waiter in state.queue.drain() {
            let _ = waiter.reply.send(Err(ServiceError::Unavailable {
                service: shared.id.to_string(),
                reason: "Hestia is shutting down",
            }));
        }
        if state.args.starter.pid().is_some() {
            let target = state.start_target();
            if let Err(error) = state.args.starter.stop(&target).await {
                tracing::warn!(service = %shared.id, %error, "could not stop the service on shutdown");
            }
            state.phase = Phase::Cold;
            state.persist();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ServiceMsg>,
        msg: ServiceMsg,
        state: &mut ServiceState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ServiceMsg::Acquire(waiter) => state.on_acquire(&myself, waiter),
            ServiceMsg::Start(reply) => {
                let _ = reply.send(state.on_start(&myself));
            }
            ServiceMsg::Stop(reply) => {
                let _ = reply.send(state.on_stop(&myself));
            }
            ServiceMsg::Unreachable => state.on_unreachable(&myself),
            ServiceMsg::AttemptDone {
                run,
                outcome,
                elapsed,
            } if run == state.run => state.on_attempt_done(&myself, outcome, elapsed),
            ServiceMsg::RetryDue { run } if run == state.run => state.launch_attempt(&myself),
            ServiceMsg::StopDone { run, outcome } if run == state.run => {
                state.on_stop_done(&myself, outcome)
            }
            ServiceMsg::IdleCheck { run } if run == state.run => state.on_idle_check(&myself),
            ServiceMsg::HealthDue { run } if run == state.run => state.check_health(&myself),
            ServiceMsg::HealthChecked { run, outcome } if run == state.run => {
                state.on_health_checked(&myself, outcome)
            }
            ServiceMsg::ProcessExited { run, detail } if run == state.run => {
                state.mark_unready(&format!("the service's process exited: {detail}"))
            }
            ServiceMsg::Adopted { run, ready } if run == state.run => {
                state.on_adopted(&myself, ready)
            }
            // A report from an earlier run (a stop or restart overtook it): nothing to do.
            _ => {}
        }
        state.publish();
        Ok(())
    }
}

impl ServiceState {
    fn id(&self) -> &str {
        &self.args.spec.id
    }

    // ----- requests and commands -----

    fn on_acquire(&mut self, myself: &ActorRef<ServiceMsg>, waiter: Waiter) {
        if self.phase == Phase::Ready
            && let Some(route) = &self.route
        {
            let lease = self.args.shared.lease(route.clone(), None);
            let _ = waiter.reply.send(Ok(lease));
            return;
        }
        let request_id = waiter.request_id.clone();
        match self.queue.push(waiter, Instant::now()) {
            Ok(position) => {
                self.emit_for(
                    ActivityKind::Queued,
                    request_id.as_deref(),
                    json!({
                        "position": position,
                        "state": self.phase.public().as_str(),
                    }),
                );
            }
            Err(waiter) => {
                let capacity = self.queue.capacity();
                self.emit_for(
                    ActivityKind::QueueRejected,
                    request_id.as_deref(),
                    json!({
                        "capacity": capacity,
                    }),
                );
                let _ = waiter.reply.send(Err(ServiceError::QueueFull {
                    service: self.id().to_owned(),
                    capacity,
                }));
                return;
            }
        }
        match self.phase {
            Phase::Cold | Phase::Failed => self.begin_start(myself, "request"),
            Phase::Stopping | Phase::Adopting => self.start_wanted = true,
            Phase::Starting | Phase::Ready => {}
        }
    }

    fn on_start(&mut self, myself: &ActorRef<ServiceMsg>) -> Result<StartAccepted, ServiceError> {
        match self.phase {
            Phase::Cold | Phase::Failed => {
                self.begin_start(myself, "api");
                Ok(StartAccepted::Initiated)
            }
            Phase::Stopping | Phase::Adopting => {
                self.start_wanted = true;
                Ok(StartAccepted::Initiated)
            }
            Phase::Starting | Phase::Ready => Err(self.conflict("start")),
        }
    }

    fn on_stop(&mut self, myself: &ActorRef<ServiceMsg>) -> Result<(), ServiceError> {
        match self.phase {
            Phase::Ready | Phase::Starting | Phase::Failed => {
                self.fail_waiters(ServiceError::Unavailable {
                    service: self.id().to_owned(),
                    reason: "it was stopped while starting",
                });
                self.begin_stop(myself, StopReason::Requested);
                Ok(())
            }
            Phase::Cold | Phase::Adopting | Phase::Stopping => Err(self.conflict("stop")),
        }
    }

    fn on_unreachable(&mut self, myself: &ActorRef<ServiceMsg>) {
        if self.phase == Phase::Ready && !self.health_in_flight {
            self.check_health(myself);
        }
    }

    // ----- starting -----

    fn begin_start(&mut self, myself: &ActorRef<ServiceMsg>, cause: &str) {
        self.run += 1;
        self.phase = Phase::Starting;
        self.start_wanted = false;
        self.adopted = false;
        self.cursor = self.args.plan.begin();
        self.start_began = Some(Instant::now());
        self.last_started_at = Some(Utc::now());
        self.emit(
            ActivityKind::StartRequested,
            json!({
                "cause": cause,
                "starter": self.args.starter.kind(),
                "queued": self.queue.len(),
            }),
        );
        let plan = self.args.plan.clone();
        let first = plan.target(self.cursor);
        self.target = Some(first.clone());
        self.emit(ActivityKind::RouteDecision, json!({
            "machine": first.machine_id(),
            "rule": first.rule,
            "target": first.base_url,
            "fallbacks": plan.targets.iter().skip(1).map(|t| t.machine_id().unwrap_or(&t.base_url)).collect::<Vec<_>>(),
        }));
        self.launch_attempt(myself);
    }

    fn launch_attempt(&mut self, myself: &ActorRef<ServiceMsg>) {
        let target = self.args.plan.target(self.cursor).clone();
        self.target = Some(target.clone());
        self.emit(
            ActivityKind::StartAttempt,
            json!({
                "attempt": self.cursor.attempts,
                "retry": self.cursor.retry,
                "target": target.base_url,
                "rule": target.rule,
            }),
        );
        let probe = match self.build_probe(&target) {
            Ok(probe) => probe,
            Err(error) => {
                let run = self.run;
                let _ = myself.cast(ServiceMsg::AttemptDone {
                    run,
                    outcome: Err(error),
                    elapsed: Duration::ZERO,
                });
                return;
            }
        };
        self.probe = Some(probe.clone());
        let starter = self.args.starter.clone();
        let start_target = self.start_target();
        let timeout = self.args.spec.policy.start_timeout;
        let (run, me) = (self.run, myself.clone());
        let task = tokio::spawn(async move {
            let began = Instant::now();
            let outcome = match tokio::time::timeout(
                timeout,
                run_attempt(
                    &*starter,
                    &start_target,
                    &probe,
                    target.is_fallback_url,
                    began + timeout,
                ),
            )
            .await
            {
                Ok(outcome) => outcome,
                Err(_) => Err(format!(
                    "no readiness within the start timeout of {timeout:?}"
                )),
            };
            let elapsed = began.elapsed();
            let _ = me.cast(ServiceMsg::AttemptDone {
                run,
                outcome,
                elapsed,
            });
        });
        self.task = Some(task.abort_handle());
    }

    fn on_attempt_done(
        &mut self,
        myself: &ActorRef<ServiceMsg>,
        outcome: Result<Attempted, String>,
        elapsed: Duration,
    ) {
        if self.phase != Phase::Starting {
            return;
        }
        self.task = None;
        self.record_attempt(&outcome, elapsed);
        match outcome {
            Ok(attempted) => self.become_ready(myself, attempted.exit),
            Err(error) => self.after_failed_attempt(myself, error),
        }
    }

    fn after_failed_attempt(&mut self, myself: &ActorRef<ServiceMsg>, error: String) {
        self.last_error = Some(error.clone());
        match self.args.plan.after_failure(self.cursor) {
            Next::Retry { delay, cursor } => {
                self.emit(
                    ActivityKind::StartRetry,
                    json!({
                        "attempt": self.cursor.attempts,
                        "next_attempt": cursor.attempts,
                        "delay_ms": delay.as_millis() as u64,
                        "error": error,
                    }),
                );
                self.cursor = cursor;
                let run = self.run;
                myself.send_after(delay, move || ServiceMsg::RetryDue { run });
            }
            Next::Fallback { cursor } => {
                let to = self.args.plan.target(cursor);
                self.emit(
                    ActivityKind::StartFallback,
                    json!({
                        "from": self.target.as_ref().map(|t| t.base_url.clone()),
                        "to": to.base_url,
                        "to_machine": to.machine_id(),
                        "error": error,
                    }),
                );
                self.cursor = cursor;
                self.launch_attempt(myself);
            }
            Next::GiveUp => {
                self.run += 1;
                self.phase = Phase::Failed;
                let failure = ServiceError::StartFailed {
                    service: self.id().to_owned(),
                    attempts: self.cursor.attempts,
                    starter: self.args.starter.kind(),
                    last_error: error.clone(),
                };
                self.emit(
                    ActivityKind::StartFailed,
                    json!({
                        "attempts": self.cursor.attempts,
                        "error": error,
                        "waiters": self.queue.len(),
                    }),
                );
                self.fail_waiters(failure);
            }
        }
    }

    fn become_ready(&mut self, myself: &ActorRef<ServiceMsg>, exit: Option<ExitWatch>) {
        let Some(target) = self.target.clone() else {
            return;
        };
        let route = Arc::new(Route {
            base_url: target.base_url.clone(),
            machine_id: target.machine_id().map(str::to_owned),
            via_fallback_url: target.is_fallback_url,
        });
        self.run += 1;
        self.phase = Phase::Ready;
        self.last_error = None;
        self.route = Some(route.clone());
        self.args.shared.open(route.clone());
        let cold_start = self.start_began.take().map(|began| began.elapsed());
        self.emit(
            ActivityKind::Started,
            json!({
                "attempts": self.cursor.attempts,
                "duration_ms": cold_start.map(|d| d.as_millis() as u64),
                "adopted": self.adopted,
                "target": route.base_url,
            }),
        );
        self.emit(ActivityKind::ReadinessChanged, json!({ "ready": true }));
        // Publish before releasing, so a released request already sees `ready`.
        self.publish();
        self.release_waiters(&route);
        if let Some(exit) = exit {
            self.watch_exit(myself, exit);
        }
        self.arm_idle_check(myself, None);
        self.arm_health_check(myself);
    }

    fn release_waiters(&mut self, route: &Arc<Route>) {
        let now = Instant::now();
        let waiters: Vec<Waiter> = self.queue.drain().collect();
        for waiter in waiters {
            if waiter.deadline <= now || waiter.reply.is_closed() {
                continue;
            }
            let waited = now - waiter.enqueued_at;
            let lease = self.args.shared.lease(route.clone(), Some(waited));
            self.emit_for(
                ActivityKind::Dequeued,
                waiter.request_id.as_deref(),
                json!({
                    "waited_ms": waited.as_millis() as u64,
                }),
            );
            let _ = waiter.reply.send(Ok(lease));
        }
    }

    fn fail_waiters(&mut self, error: ServiceError) {
        for waiter in self.queue.drain() {
            let _ = waiter.reply.send(Err(error.clone()));
        }
    }

    // ----- adoption -----

    fn begin_adopt(&mut self, myself: &ActorRef<ServiceMsg>, target: Target) {
        let probe = match self.build_probe(&target) {
            Ok(probe) => probe,
            Err(error) => {
                tracing::warn!(service = %self.id(), %error, "cannot probe for adoption");
                return;
            }
        };
        self.run += 1;
        self.phase = Phase::Adopting;
        self.target = Some(target);
        self.probe = Some(probe.clone());
        let (run, me) = (self.run, myself.clone());
        let task = tokio::spawn(async move {
            let ready = probe.check().await.is_ok();
            let _ = me.cast(ServiceMsg::Adopted { run, ready });
        });
        self.task = Some(task.abort_handle());
    }

    fn on_adopted(&mut self, myself: &ActorRef<ServiceMsg>, ready: bool) {
        self.task = None;
        // The process an earlier Hestia left running is ours again, ready or not: stopping it
        // (idle, or before a fresh start) then works as for one we started.
        let exit = self
            .args
            .adopt_pid
            .take()
            .and_then(|pid| self.args.starter.adopt(pid));
        if ready {
            tracing::info!(service = %self.id(), "service already running: adopted");
            self.adopted = true;
            self.cursor = self.args.plan.begin();
            self.become_ready(myself, exit);
            return;
        }
        self.run += 1;
        self.phase = Phase::Cold;
        if self.start_wanted || !self.queue.is_empty() {
            self.begin_start(myself, "request");
        }
    }

    // ----- while ready -----

    fn arm_idle_check(&self, myself: &ActorRef<ServiceMsg>, after: Option<Duration>) {
        if let Some(idle) = self.args.spec.idle_timeout {
            let run = self.run;
            myself.send_after(after.unwrap_or(idle), move || ServiceMsg::IdleCheck { run });
        }
    }

    fn on_idle_check(&mut self, myself: &ActorRef<ServiceMsg>) {
        let Some(idle) = self.args.spec.idle_timeout else {
            return;
        };
        if self.phase != Phase::Ready {
            return;
        }
        match self.args.shared.close_if_idle(idle) {
            Ok(()) => {
                self.emit(
                    ActivityKind::IdleShutdown,
                    json!({ "idle_ms": idle.as_millis() as u64 }),
                );
                self.begin_stop(myself, StopReason::Idle);
            }
            Err(wait) => self.arm_idle_check(myself, Some(wait)),
        }
    }

    fn arm_health_check(&self, myself: &ActorRef<ServiceMsg>) {
        if let Some(probe) = &self.probe
            && !self.route.as_ref().is_some_and(|r| r.via_fallback_url)
        {
            let run = self.run;
            myself.send_after(probe.health_interval(), move || ServiceMsg::HealthDue {
                run,
            });
        }
    }

    fn check_health(&mut self, myself: &ActorRef<ServiceMsg>) {
        let Some(probe) = self.probe.clone() else {
            return;
        };
        if self.phase != Phase::Ready || self.health_in_flight {
            return;
        }
        self.health_in_flight = true;
        let (run, me) = (self.run, myself.clone());
        tokio::spawn(async move {
            let outcome = probe.check().await.map_err(|e| e.to_string());
            let _ = me.cast(ServiceMsg::HealthChecked { run, outcome });
        });
    }

    fn on_health_checked(&mut self, myself: &ActorRef<ServiceMsg>, outcome: Result<(), String>) {
        self.health_in_flight = false;
        match outcome {
            Ok(()) => self.arm_health_check(myself),
            Err(error) => self.mark_unready(&format!("health check failed: {error}")),
        }
    }

    fn watch_exit(&self, myself: &ActorRef<ServiceMsg>, mut exit: ExitWatch) {
        let (run, me) = (self.run, myself.clone());
        tokio::spawn(async move {
            let info = exit.exited().await;
            let _ = me.cast(ServiceMsg::ProcessExited {
                run,
                detail: info.to_string(),
            });
        });
    }

    /// The service stopped answering while ready: out of `ready`; the next request restarts it.
    fn mark_unready(&mut self, reason: &str) {
        if self.phase != Phase::Ready {
            return;
        }
        self.run += 1;
        self.phase = Phase::Failed;
        self.health_in_flight = false;
        self.args.shared.close();
        self.route = None;
        self.last_error = Some(reason.to_owned());
        self.emit(
            ActivityKind::ReadinessChanged,
            json!({ "ready": false, "reason": reason }),
        );
    }

    // ----- stopping -----

    fn begin_stop(&mut self, myself: &ActorRef<ServiceMsg>, reason: StopReason) {
        self.run += 1;
        self.phase = Phase::Stopping;
        self.args.shared.close();
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let reason = match reason {
            StopReason::Idle => "idle",
            StopReason::Requested => "requested",
        };
        self.emit(ActivityKind::StopRequested, json!({ "reason": reason }));
        let starter = self.args.starter.clone();
        let target = self.start_target();
        let (run, me) = (self.run, myself.clone());
        tokio::spawn(async move {
            let outcome = starter.stop(&target).await.map_err(|e| e.to_string());
            let _ = me.cast(ServiceMsg::StopDone { run, outcome });
        });
    }

    fn on_stop_done(&mut self, myself: &ActorRef<ServiceMsg>, outcome: Result<(), String>) {
        self.run += 1;
        self.phase = Phase::Cold;
        self.route = None;
        self.emit(
            ActivityKind::Stopped,
            json!({ "error": outcome.as_ref().err() }),
        );
        if let Err(error) = outcome {
            self.last_error = Some(format!("stop failed: {error}"));
        }
        if self.start_wanted || !self.queue.is_empty() {
            self.begin_start(myself, "request");
        }
    }

    // ----- helpers -----

    fn build_probe(&self, target: &Target) -> Result<Arc<Probe>, String> {
        let vars = Vars {
            address: target.machine.as_ref().map(|m| m.address.clone()),
            service_id: self.id().to_owned(),
            hestia_exe: None,
        };
        let fallback_probe;
        let readiness = if target.is_fallback_url {
            fallback_probe = reachability_of(&target.base_url)?;
            &fallback_probe
        } else {
            &self.args.spec.readiness
        };
        Probe::new(readiness, &vars, self.args.client.clone())
            .and_then(|probe| probe.with_base_url(&target.base_url))
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }

    fn start_target(&self) -> StartTarget {
        let target = self.target.as_ref();
        StartTarget {
            service_id: self.id().to_owned(),
            attempt: self.cursor.attempts,
            machine: target.and_then(|t| t.machine.clone()),
            base_url: target
                .map(|t| t.base_url.clone())
                .unwrap_or_else(|| self.args.plan.target(Cursor::default()).base_url.clone()),
        }
    }

    fn conflict(&self, action: &'static str) -> ServiceError {
        ServiceError::Conflict {
            service: self.id().to_owned(),
            state: self.phase.public().as_str(),
            action,
        }
    }

    fn record_attempt(&self, outcome: &Result<Attempted, String>, elapsed: Duration) {
        let target = self.target.as_ref();
        let error = outcome.as_ref().err().cloned();
        let timed_out = elapsed >= self.args.spec.policy.start_timeout;
        self.args.persistence.record_attempt(AttemptRecord {
            service_id: self.id().to_owned(),
            attempt: self.cursor.attempts,
            machine_id: target.and_then(|t| t.machine_id()).map(str::to_owned),
            target_url: target.map(|t| t.base_url.clone()).unwrap_or_default(),
            starter: self.args.starter.kind().to_owned(),
            started_at: Utc::now() - chrono::Duration::from_std(elapsed).unwrap_or_default(),
            duration_ms: elapsed.as_millis() as u64,
            outcome: match (&error, timed_out) {
                (None, _) => AttemptOutcome::Success,
                (Some(_), true) => AttemptOutcome::Timeout,
                (Some(_), false) => AttemptOutcome::Failed,
            },
            error,
        });
    }

    fn emit(&self, kind: ActivityKind, detail: serde_json::Value) {
        self.emit_for(kind, None, detail);
    }

    /// Logs an event and casts it to the persistence actor.
    fn emit_for(&self, kind: ActivityKind, request_id: Option<&str>, detail: serde_json::Value) {
        let machine = self.target.as_ref().and_then(|t| t.machine_id());
        match kind {
            ActivityKind::Queued | ActivityKind::Dequeued => {
                tracing::debug!(service = %self.id(), event = kind.as_str(), request_id, %detail)
            }
            ActivityKind::StartFailed | ActivityKind::QueueRejected => {
                tracing::warn!(service = %self.id(), event = kind.as_str(), machine, request_id, %detail)
            }
            _ => tracing::info!(service = %self.id(), event = kind.as_str(), machine, %detail),
        }
        self.args.shared.record(
            ActivityEvent::new(kind, Some(self.id()))
                .machine(machine)
                .request(request_id)
                .detail(detail),
        );
    }

    /// Publishes the status snapshot, and persists the runtime state when the phase changed.
    fn publish(&mut self) {
        let status = ServiceStatus {
            service_id: self.id().to_owned(),
            state: self.phase.public(),
            machine_id: self.route.as_ref().and_then(|r| r.machine_id.clone()),
            base_url: self.route.as_ref().map(|r| r.base_url.clone()),
            queue_pending: self.queue.len(),
            queue_capacity: self.queue.capacity(),
            last_error: self.last_error.clone(),
            last_started_at: self.last_started_at,
            attempts: self.cursor.attempts,
            starter: self.args.starter.kind(),
            pid: self.args.starter.pid(),
            adopted: self.adopted,
        };
        self.args.shared.status.send_if_modified(|current| {
            if **current == status {
                return false;
            }
            *current = Arc::new(status);
            true
        });
        if self.persisted_phase != Some(self.phase) {
            self.persist();
        }
    }

    fn persist(&mut self) {
        self.persisted_phase = Some(self.phase);
        let status = self.args.shared.status.borrow().clone();
        self.args
            .persistence
            .save_service_state(ServiceStateRecord {
                service_id: self.id().to_owned(),
                state: self.phase.public().as_str().to_owned(),
                machine_id: self
                    .target
                    .as_ref()
                    .and_then(|t| t.machine_id())
                    .map(str::to_owned),
                base_url: status.base_url.clone(),
                pid: status.pid,
                last_used_at: self.args.shared.last_used_at(),
                last_error: self.last_error.clone(),
                last_started_at: self.last_started_at,
            });
    }
}

/// One attempt: start the service, then wait for readiness — failing early if the process dies.
async fn run_attempt(
    starter: &dyn Starter,
    target: &StartTarget,
    probe: &Probe,
    is_fallback_url: bool,
    deadline: Instant,
) -> Result<Attempted, String> {
    if is_fallback_url {
        // Nothing to start there: the fallback counts once it accepts connections.
        probe.check().await.map_err(|e| e.to_string())?;
        return Ok(Attempted { exit: None });
    }
    let started = starter.start(target).await.map_err(|e| e.to_string())?;
    match started.exit {
        Some(exit) => {
            let mut watch = exit.clone();
            tokio::select! {
                ready = probe.wait_ready(deadline) => {
                    ready.map_err(|e| e.to_string())?;
                    Ok(Attempted { exit: Some(exit) })
                }
                info = watch.exited() => Err(format!("the process exited before it was ready ({info})")),
            }
        }
        None => {
            probe
                .wait_ready(deadline)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Attempted { exit: None })
        }
    }
}

/// A TCP probe of an URL's host and port: how a `fallback_url` is judged reachable.
fn reachability_of(url: &str) -> Result<ReadinessSpec, String> {
    let parsed =
        url::Url::parse(url).map_err(|e| format!("fallback_url `{url}` is not an URL: {e}"))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("fallback_url `{url}` has no host"))?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    Ok(ReadinessSpec::Tcp(TcpProbeSpec {
        address: format!("{host}:{port}"),
        interval: Duration::from_millis(50),
        timeout: Duration::from_secs(1),
        health_interval: Duration::from_secs(10),
    }))
}
