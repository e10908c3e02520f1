//! The lifecycle of one service as a pure state machine: `(state, event, now) → (state, effects)`.
//!
//! Nothing here performs I/O, spawns a task or reads a clock: [`Lifecycle::step`] takes the
//! state (by `&mut`, updated in place), one [`Event`] and the time, and answers the [`Effect`]s
//! the service actor must carry out, in order. The actor is the shell: it turns its messages into
//! events and effects into work (spawn an attempt, arm a timer, open the gate, release or fail
//! waiters, emit, persist). Every row of the table below has its unit test in `tests` here.
//!
//! ```text
//!  cold ──request/start──▶ starting ──ready──▶ ready ──idle/stop──▶ stopping ──▶ cold
//!    ▲                       │  ▲ retry / fallback   │ health check or process exit fails
//!    │                       ▼  │                    ▼
//!    └──────── request ──── failed ◀─────────────────┘
//! ```
//!
//! | phase      | event                       | next       | effects                                          |
//! |------------|-----------------------------|------------|--------------------------------------------------|
//! | ready      | request                     | ready      | admit                                            |
//! | cold       | request                     | starting   | queued, start_requested, route_decision, launch  |
//! | starting   | request                     | starting   | queued                                           |
//! | any        | request, queue full         | same       | queue_rejected, refuse                           |
//! | cold       | start                       | starting   | answer initiated, launch                         |
//! | starting   | start                       | starting   | answer conflict                                  |
//! | stopping   | request or start            | stopping   | start wanted (begins after the stop)             |
//! | starting   | attempt ready               | ready      | open, started, release waiters, arm timers       |
//! | starting   | attempt failed, retry left  | starting   | start_retry, arm retry                           |
//! | starting   | retry due                   | starting   | start_attempt, launch                            |
//! | starting   | attempt failed, fallback    | starting   | start_fallback, launch                           |
//! | starting   | attempt failed, none left   | failed     | start_failed, fail waiters                       |
//! | starting   | stop                        | stopping   | fail waiters, abort attempt, stop backend        |
//! | ready      | stop                        | stopping   | close, stop_requested, stop backend              |
//! | cold       | stop                        | cold       | answer conflict                                  |
//! | ready      | idle due, idle              | stopping   | close if idle, idle_shutdown, stop backend       |
//! | ready      | idle due, busy              | ready      | re-arm idle check                                |
//! | ready      | health due or unreachable   | ready      | check health                                     |
//! | ready      | health ok                   | ready      | arm health check                                 |
//! | ready      | health failed, process exit | failed     | close, readiness_changed                         |
//! | stopping   | stop done                   | cold       | stopped; start again if wanted                   |
//! | failed     | request                     | starting   | as from cold                                     |
//! | failed     | stop                        | stopping   | stop backend                                     |
//! | adopting   | probed ready                | ready      | open, started (watch the taken-over process)     |
//! | adopting   | probed down, process alive  | starting   | await its readiness (no second spawn)            |
//! | adopting   | probed down, no process     | cold       | start if wanted                                  |
//! | any        | spawned                     | same       | persist (the pid goes to disk at once)           |
//! | ready      | reconfigure, idle changed   | ready      | arm idle check with the new timeout              |
//! | any        | shutting down               | same       | fail the queue (shutting-down); refuse what      |
//! |            |                             |            | cannot be admitted at once, and starts, from now |
//! | any        | report of an older run      | same       | nothing                                          |
//!
//! Reports from tasks and timers carry the `run` they were started in; the run changes in one
//! place, [`Lifecycle::enter`], whenever the phase does, so a stale report is simply ignored.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::policy::{Cursor, Next, Plan, Target};
use super::queue::{Queue, Waiter};
use super::{Route, RunLocal, StartAccepted, State};
use crate::error::{ServiceError, StartFailure};
use crate::events::Detail;
use crate::persistence::{AttemptOutcome, AttemptRecord};
use crate::starters::{ExitInfo, ExitWatch};

/// Where the service stands. [`Phase::public`] is what the API shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Probing whether the service is already up (after a restart); shown as `cold`.
    Adopting,
    Cold,
    Starting,
    Ready,
    Stopping,
    Failed,
}

impl Phase {
    pub fn public(self) -> State {
        match self {
            Phase::Adopting | Phase::Cold => State::Cold,
            Phase::Starting => State::Starting,
            Phase::Ready => State::Ready,
            Phase::Stopping => State::Stopping,
            Phase::Failed => State::Failed,
        }
    }
}

/// The time of a step: the monotonic clock for deadlines, the wall clock for records.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    pub instant: Instant,
    pub wall: DateTime<Utc>,
}

impl Now {
    /// Reads both clocks; only the shell calls it.
    pub fn read() -> Now {
        Now {
            instant: Instant::now(),
            wall: Utc::now(),
        }
    }
}

/// What a successful attempt hands over: the process to watch, if Hestia owns one.
#[derive(Debug)]
pub(crate) struct Attempted {
    pub exit: Option<ExitWatch>,
}

pub(crate) type StartReply = oneshot::Sender<Result<StartAccepted, ServiceError>>;
pub(crate) type StopReply = oneshot::Sender<Result<(), ServiceError>>;

/// Everything that can happen to a service.
#[derive(Debug)]
pub(crate) enum Event {
    /// A request wants the service.
    Acquire(Waiter),
    /// `POST /v1/services/{id}/start`.
    Start(StartReply),
    /// `POST /v1/services/{id}/stop`.
    Stop(StopReply),
    /// The data path could not connect: re-check readiness now.
    Unreachable,
    AttemptDone {
        run: u64,
        outcome: Result<Attempted, StartFailure>,
        elapsed: Duration,
    },
    RetryDue {
        run: u64,
    },
    StopDone {
        run: u64,
        outcome: Result<(), String>,
    },
    IdleDue {
        run: u64,
    },
    /// The answer to [`Effect::CloseIfIdle`]: closed, or how long to wait before asking again.
    IdleChecked(Result<(), Duration>),
    HealthDue {
        run: u64,
    },
    HealthChecked {
        run: u64,
        outcome: Result<(), String>,
    },
    ProcessExited {
        run: u64,
        info: ExitInfo,
    },
    /// The adoption probe's answer: is the service already up? `process`: the process an
    /// earlier Hestia spawned for it, when it is still alive and verifiably ours (taken over).
    AdoptProbed {
        run: u64,
        ready: bool,
        process: Option<ExitWatch>,
    },
    /// A configuration reload changed what can change in place.
    Reconfigure(Settings),
    /// The starter spawned the service's process: its pid goes to disk now, not at readiness.
    Spawned,
    /// A queued request gave up (its deadline passed): it leaves the queue count now.
    WaiterGone,
    /// Hestia is shutting down: its backends are about to stop, so nothing waits for them.
    ShuttingDown,
}

/// What the shell must do, in the order given.
#[derive(Debug)]
pub(crate) enum Effect {
    /// Log the event and record it.
    Emit {
        request_id: Option<String>,
        machine: Option<String>,
        detail: Detail,
    },
    /// Give the waiter a lease on `route` at once (the service is ready).
    Admit {
        waiter: Waiter,
        route: Arc<Route>,
    },
    /// Answer the waiter with this error (its queue was full).
    Refuse {
        waiter: Waiter,
        error: ServiceError,
    },
    /// Publish the status first, then lease each waiter (with how long it waited).
    Release {
        waiters: Vec<(Waiter, Duration)>,
        route: Arc<Route>,
    },
    /// Answer every waiter with this error.
    Fail {
        waiters: Vec<Waiter>,
        error: ServiceError,
    },
    AnswerStart {
        reply: StartReply,
        answer: Result<StartAccepted, ServiceError>,
    },
    AnswerStop {
        reply: StopReply,
        answer: Result<(), ServiceError>,
    },
    /// Spawn one start attempt on `target`; it reports `AttemptDone { run }`.
    Launch {
        run: u64,
        target: Target,
    },
    /// Abort the running attempt or adoption probe.
    AbortTask,
    /// Spawn the starter's stop; it reports `StopDone { run }`.
    StopBackend {
        run: u64,
    },
    ArmRetry {
        run: u64,
        after: Duration,
    },
    ArmIdleCheck {
        run: u64,
        after: Duration,
    },
    /// Arm a health check after the probe's health interval; it reports `HealthDue { run }`.
    ArmHealthCheck {
        run: u64,
    },
    /// Spawn one probe; it reports `HealthChecked { run }`.
    CheckHealth {
        run: u64,
    },
    /// Close the gate if nothing is in flight and the service was idle for `idle`; answer with
    /// [`Event::IdleChecked`] at once.
    CloseIfIdle {
        idle: Duration,
    },
    /// Spawn a watcher of the process; it reports `ProcessExited { run }`.
    WatchExit {
        run: u64,
        exit: ExitWatch,
    },
    /// Wait for the readiness of a process an earlier Hestia spawned (it died mid-start), racing
    /// its exit; it reports `AttemptDone { run }`. Nothing is spawned.
    AwaitReadiness {
        run: u64,
        exit: ExitWatch,
    },
    /// Let requests through the hot path to `route`.
    Open(Arc<Route>),
    /// Stop the hot path.
    Close,
    RecordAttempt(AttemptRecord),
    /// The phase changed: write the state to the database once the status is published.
    Persist,
}

/// What the lifecycle needs to know of its service's configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub service_id: Arc<str>,
    pub plan: Arc<Plan>,
    pub starter: &'static str,
    pub idle_timeout: Option<Duration>,
    pub start_timeout: Duration,
    pub queue_size: usize,
}

/// The state of one service's lifecycle.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    settings: Settings,
    phase: Phase,
    queue: Queue,
    /// Changes with every phase change, in [`Lifecycle::enter`] only.
    run: u64,
    cursor: Cursor,
    /// The target of the running start, or the one the service runs on.
    target: Option<Target>,
    route: Option<Arc<Route>>,
    health_in_flight: bool,
    start_began: Option<Instant>,
    /// A start was asked for while the current phase could not begin one.
    start_wanted: bool,
    adopted: bool,
    /// Hestia is shutting down: only requests a ready service can take at once still pass.
    shutting_down: bool,
    last_error: Option<LastError>,
    last_started_at: Option<DateTime<Utc>>,
}

/// The last error: a typed start failure, or a later problem (health, stop) as text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LastError {
    Start(StartFailure),
    Other(String),
}

impl std::fmt::Display for LastError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LastError::Start(failure) => failure.fmt(f),
            LastError::Other(text) => f.write_str(text),
        }
    }
}

type Effects = Vec<Effect>;

impl Lifecycle {
    pub fn new(settings: Settings) -> Lifecycle {
        Lifecycle {
            queue: Queue::new(settings.queue_size),
            settings,
            phase: Phase::Cold,
            run: 0,
            cursor: Cursor::default(),
            target: None,
            route: None,
            health_in_flight: false,
            start_began: None,
            start_wanted: false,
            adopted: false,
            shutting_down: false,
            last_error: None,
            last_started_at: None,
        }
    }

    /// Begins by probing `target` to adopt a service that is already up.
    pub fn adopting(settings: Settings, target: Target) -> (Lifecycle, Effects) {
        let mut lifecycle = Lifecycle::new(settings);
        let mut fx = Vec::new();
        lifecycle.target = Some(target);
        lifecycle.enter(Phase::Adopting, &mut fx);
        (lifecycle, fx)
    }

    // ----- what the shell reads -----

    pub fn phase(&self) -> Phase {
        self.phase
    }
    pub fn run(&self) -> u64 {
        self.run
    }
    pub fn target(&self) -> Option<&Target> {
        self.target.as_ref()
    }
    pub fn route(&self) -> Option<&Arc<Route>> {
        self.route.as_ref()
    }
    pub fn attempts(&self) -> u32 {
        self.cursor.attempts
    }
    pub fn adopted(&self) -> bool {
        self.adopted
    }
    pub fn last_error(&self) -> Option<&LastError> {
        self.last_error.as_ref()
    }
    pub fn last_started_at(&self) -> Option<DateTime<Utc>> {
        self.last_started_at
    }
    pub fn queue(&self) -> &Queue {
        &self.queue
    }
    /// Takes the waiters out (the actor is stopping).
    pub fn drain_queue(&mut self) -> Vec<Waiter> {
        self.queue.drain().collect()
    }

    /// Feeds one event; answers what to do, in order.
    pub fn step(&mut self, event: Event, now: Now) -> Effects {
        let mut fx = Vec::new();
        match event {
            Event::Acquire(waiter) => self.on_acquire(waiter, now, &mut fx),
            Event::Start(reply) => {
                let answer = self.on_start(now, &mut fx);
                fx.push(Effect::AnswerStart { reply, answer });
            }
            Event::Stop(reply) => {
                let answer = self.on_stop(&mut fx);
                fx.push(Effect::AnswerStop { reply, answer });
            }
            Event::Unreachable => self.check_health(&mut fx),
            Event::IdleChecked(result) => self.on_idle_checked(result, &mut fx),
            Event::Reconfigure(settings) => self.reconfigure(settings, &mut fx),
            Event::AttemptDone {
                run,
                outcome,
                elapsed,
            } if run == self.run => self.on_attempt_done(outcome, elapsed, now, &mut fx),
            Event::RetryDue { run } if run == self.run && self.phase == Phase::Starting => {
                self.launch(&mut fx)
            }
            Event::StopDone { run, outcome } if run == self.run => {
                self.on_stop_done(outcome, now, &mut fx)
            }
            Event::IdleDue { run } if run == self.run => self.on_idle_due(&mut fx),
            Event::HealthDue { run } if run == self.run => self.check_health(&mut fx),
            Event::HealthChecked { run, outcome } if run == self.run => {
                self.health_in_flight = false;
                match outcome {
                    Ok(()) => self.arm_health_check(&mut fx),
                    Err(error) => {
                        self.mark_unready(format!("health check failed: {error}"), &mut fx)
                    }
                }
            }
            Event::ProcessExited { run, info } if run == self.run => {
                self.mark_unready(format!("the service's process {info}"), &mut fx)
            }
            Event::AdoptProbed {
                run,
                ready,
                process,
            } if run == self.run => self.on_adopt_probed(ready, process, now, &mut fx),
            Event::Spawned => fx.push(Effect::Persist),
            Event::WaiterGone => {
                self.queue.prune(now.instant);
            }
            Event::ShuttingDown => {
                self.shutting_down = true;
                self.fail_waiters(self.shutting_down_error(), &mut fx);
            }
            // A report from an earlier run (a stop or restart overtook it): nothing to do.
            _ => {}
        }
        fx
    }

    fn reconfigure(&mut self, settings: Settings, fx: &mut Effects) {
        self.queue.set_capacity(settings.queue_size);
        let idle_changed = settings.idle_timeout != self.settings.idle_timeout;
        self.settings = settings;
        if idle_changed && self.phase == Phase::Ready {
            self.arm_idle_check(None, fx);
        }
    }

    /// The one place the phase and the run change.
    fn enter(&mut self, phase: Phase, fx: &mut Effects) {
        self.run += 1;
        self.phase = phase;
        fx.push(Effect::Persist);
    }

    // ----- requests and commands -----

    fn on_acquire(&mut self, waiter: Waiter, now: Now, fx: &mut Effects) {
        if self.phase == Phase::Ready
            && let Some(route) = &self.route
        {
            fx.push(Effect::Admit {
                waiter,
                route: route.clone(),
            });
            return;
        }
        if self.shutting_down {
            let error = self.shutting_down_error();
            fx.push(Effect::Refuse { waiter, error });
            return;
        }
        let request_id = waiter.request_id.clone();
        match self.queue.push(waiter, now.instant) {
            Ok(position) => {
                let state = self.phase.public().as_str();
                self.emit_for(request_id, Detail::Queued { position, state }, fx);
            }
            Err(waiter) => {
                let capacity = self.queue.capacity();
                self.emit_for(request_id, Detail::QueueRejected { capacity }, fx);
                fx.push(Effect::Refuse {
                    waiter,
                    error: ServiceError::QueueFull {
                        service: self.id().to_owned(),
                        capacity,
                    },
                });
                return;
            }
        }
        match self.phase {
            Phase::Cold | Phase::Failed => self.begin_start("request", now, fx),
            Phase::Stopping | Phase::Adopting => self.start_wanted = true,
            Phase::Starting | Phase::Ready => {}
        }
    }

    fn on_start(&mut self, now: Now, fx: &mut Effects) -> Result<StartAccepted, ServiceError> {
        if self.shutting_down {
            return Err(self.shutting_down_error());
        }
        match self.phase {
            Phase::Cold | Phase::Failed => {
                self.begin_start("api", now, fx);
                Ok(StartAccepted::Initiated)
            }
            Phase::Stopping | Phase::Adopting => {
                self.start_wanted = true;
                Ok(StartAccepted::Initiated)
            }
            Phase::Starting | Phase::Ready => Err(self.conflict("start")),
        }
    }

    fn on_stop(&mut self, fx: &mut Effects) -> Result<(), ServiceError> {
        match self.phase {
            Phase::Ready | Phase::Starting | Phase::Failed => {
                self.fail_waiters(
                    ServiceError::Unavailable {
                        service: self.id().to_owned(),
                        reason: "it was stopped while starting",
                    },
                    fx,
                );
                self.begin_stop("requested", fx);
                Ok(())
            }
            Phase::Cold | Phase::Adopting | Phase::Stopping => Err(self.conflict("stop")),
        }
    }

    // ----- starting -----

    fn begin_start(&mut self, cause: &'static str, now: Now, fx: &mut Effects) {
        self.enter(Phase::Starting, fx);
        self.start_wanted = false;
        self.adopted = false;
        self.cursor = self.settings.plan.begin();
        self.start_began = Some(now.instant);
        self.last_started_at = Some(now.wall);
        self.emit(
            Detail::StartRequested {
                cause,
                starter: self.settings.starter,
                queued: self.queue.len(),
            },
            fx,
        );
        let plan = self.settings.plan.clone();
        let first = plan.target(self.cursor).clone();
        self.target = Some(first.clone());
        let fallbacks = plan
            .targets
            .iter()
            .skip(1)
            .map(|t| t.machine_id().unwrap_or(&t.base_url).to_owned())
            .collect();
        self.emit(
            Detail::RouteDecision {
                machine: first.machine_id().map(str::to_owned),
                rule: first.rule.clone(),
                target: first.base_url.clone(),
                fallbacks,
            },
            fx,
        );
        self.launch(fx);
    }

    fn launch(&mut self, fx: &mut Effects) {
        let target = self.settings.plan.target(self.cursor).clone();
        self.target = Some(target.clone());
        self.emit(
            Detail::StartAttempt {
                attempt: self.cursor.attempts,
                retry: self.cursor.retry,
                target: target.base_url.clone(),
                rule: target.rule.clone(),
            },
            fx,
        );
        fx.push(Effect::Launch {
            run: self.run,
            target,
        });
    }

    fn on_attempt_done(
        &mut self,
        outcome: Result<Attempted, StartFailure>,
        elapsed: Duration,
        now: Now,
        fx: &mut Effects,
    ) {
        if self.phase != Phase::Starting {
            return;
        }
        fx.push(Effect::RecordAttempt(self.attempt_record(
            outcome.as_ref().err(),
            elapsed,
            now,
        )));
        match outcome {
            Ok(attempted) => self.become_ready(attempted.exit, now, fx),
            Err(failure) => self.after_failed_attempt(failure, fx),
        }
    }

    fn after_failed_attempt(&mut self, failure: StartFailure, fx: &mut Effects) {
        let error = failure.to_string();
        self.last_error = Some(LastError::Start(failure.clone()));
        match self.settings.plan.after_failure(self.cursor) {
            Next::Retry { delay, cursor } => {
                self.emit(
                    Detail::StartRetry {
                        attempt: self.cursor.attempts,
                        next_attempt: cursor.attempts,
                        delay_ms: delay.as_millis() as u64,
                        error,
                        reason: failure.reason(),
                    },
                    fx,
                );
                self.cursor = cursor;
                fx.push(Effect::ArmRetry {
                    run: self.run,
                    after: delay,
                });
            }
            Next::Fallback { cursor } => {
                let to = self.settings.plan.target(cursor);
                self.emit(
                    Detail::StartFallback {
                        from: self.target.as_ref().map(|t| t.base_url.clone()),
                        to: to.base_url.clone(),
                        to_machine: to.machine_id().map(str::to_owned),
                        error,
                        reason: failure.reason(),
                    },
                    fx,
                );
                self.cursor = cursor;
                self.launch(fx);
            }
            Next::GiveUp => {
                self.enter(Phase::Failed, fx);
                let attempts = self.cursor.attempts;
                self.emit(
                    Detail::StartFailed {
                        attempts,
                        error,
                        reason: failure.reason(),
                        waiters: self.queue.len(),
                    },
                    fx,
                );
                let error = ServiceError::StartFailed {
                    service: self.id().to_owned(),
                    attempts,
                    starter: self.settings.starter,
                    last_error: failure,
                };
                self.fail_waiters(error, fx);
            }
        }
    }

    fn become_ready(&mut self, exit: Option<ExitWatch>, now: Now, fx: &mut Effects) {
        let Some(target) = self.target.clone() else {
            return;
        };
        let route = Arc::new(Route {
            base_url: target.base_url.clone(),
            machine_id: target.machine_id().map(str::to_owned),
            via_fallback_url: target.is_fallback_url,
            run_local: RunLocal::default(),
        });
        self.route = Some(route.clone());
        self.last_error = None;
        self.enter(Phase::Ready, fx);
        fx.push(Effect::Open(route.clone()));
        let cold_start = self
            .start_began
            .take()
            .map(|began| now.instant.saturating_duration_since(began));
        self.emit(
            Detail::Started {
                attempts: self.cursor.attempts,
                duration_ms: cold_start.map(|d| d.as_millis() as u64),
                adopted: self.adopted,
                target: route.base_url.clone(),
            },
            fx,
        );
        self.emit(
            Detail::ReadinessChanged {
                ready: true,
                reason: None,
            },
            fx,
        );
        self.release_waiters(route, now, fx);
        if let Some(exit) = exit {
            fx.push(Effect::WatchExit {
                run: self.run,
                exit,
            });
        }
        self.arm_idle_check(None, fx);
        self.arm_health_check(fx);
    }

    fn release_waiters(&mut self, route: Arc<Route>, now: Now, fx: &mut Effects) {
        let mut waiters = Vec::new();
        for waiter in self.queue.drain() {
            if waiter.deadline <= now.instant || waiter.reply.is_closed() {
                continue;
            }
            waiters.push(waiter);
        }
        let mut released = Vec::with_capacity(waiters.len());
        for waiter in waiters {
            let waited = now.instant.saturating_duration_since(waiter.enqueued_at);
            self.emit_for(
                waiter.request_id.clone(),
                Detail::Dequeued {
                    waited_ms: waited.as_millis() as u64,
                },
                fx,
            );
            released.push((waiter, waited));
        }
        fx.push(Effect::Release {
            waiters: released,
            route,
        });
    }

    fn shutting_down_error(&self) -> ServiceError {
        ServiceError::ShuttingDown {
            service: self.id().to_owned(),
        }
    }

    fn fail_waiters(&mut self, error: ServiceError, fx: &mut Effects) {
        let waiters: Vec<Waiter> = self.queue.drain().collect();
        if !waiters.is_empty() {
            fx.push(Effect::Fail { waiters, error });
        }
    }

    // ----- adoption -----

    fn on_adopt_probed(
        &mut self,
        ready: bool,
        process: Option<ExitWatch>,
        now: Now,
        fx: &mut Effects,
    ) {
        if self.phase != Phase::Adopting {
            return;
        }
        // The process an earlier Hestia left running is ours again: stopping it (idle, or before
        // a fresh start) then works as for one we started.
        if ready {
            self.adopted = true;
            self.cursor = self.settings.plan.begin();
            self.become_ready(process, now, fx);
            return;
        }
        if let Some(exit) = process {
            // That Hestia died while it was starting: wait for it, never spawn a second one.
            self.enter(Phase::Starting, fx);
            self.adopted = true;
            self.start_wanted = false;
            self.cursor = self.settings.plan.begin();
            self.start_began = Some(now.instant);
            fx.push(Effect::AwaitReadiness {
                run: self.run,
                exit,
            });
            return;
        }
        self.enter(Phase::Cold, fx);
        if self.start_wanted || !self.queue.is_empty() {
            self.begin_start("request", now, fx);
        }
    }

    // ----- while ready -----

    fn arm_idle_check(&self, after: Option<Duration>, fx: &mut Effects) {
        if let Some(idle) = self.settings.idle_timeout {
            fx.push(Effect::ArmIdleCheck {
                run: self.run,
                after: after.unwrap_or(idle),
            });
        }
    }

    fn on_idle_due(&mut self, fx: &mut Effects) {
        if let (Some(idle), Phase::Ready) = (self.settings.idle_timeout, self.phase) {
            fx.push(Effect::CloseIfIdle { idle });
        }
    }

    fn on_idle_checked(&mut self, result: Result<(), Duration>, fx: &mut Effects) {
        let Some(idle) = self.settings.idle_timeout else {
            return;
        };
        if self.phase != Phase::Ready {
            return;
        }
        match result {
            Ok(()) => {
                self.emit(
                    Detail::IdleShutdown {
                        idle_ms: idle.as_millis() as u64,
                    },
                    fx,
                );
                self.begin_stop("idle", fx);
            }
            Err(wait) => self.arm_idle_check(Some(wait), fx),
        }
    }

    fn arm_health_check(&self, fx: &mut Effects) {
        if !self.route.as_ref().is_some_and(|r| r.via_fallback_url) {
            fx.push(Effect::ArmHealthCheck { run: self.run });
        }
    }

    fn check_health(&mut self, fx: &mut Effects) {
        if self.phase != Phase::Ready || self.health_in_flight {
            return;
        }
        self.health_in_flight = true;
        fx.push(Effect::CheckHealth { run: self.run });
    }

    /// The service stopped answering while ready: out of `ready`; the next request restarts it.
    fn mark_unready(&mut self, reason: String, fx: &mut Effects) {
        if self.phase != Phase::Ready {
            return;
        }
        self.enter(Phase::Failed, fx);
        self.health_in_flight = false;
        fx.push(Effect::Close);
        self.route = None;
        self.emit(
            Detail::ReadinessChanged {
                ready: false,
                reason: Some(reason.clone()),
            },
            fx,
        );
        self.last_error = Some(LastError::Start(StartFailure::Unready { reason }));
    }

    // ----- stopping -----

    fn begin_stop(&mut self, reason: &'static str, fx: &mut Effects) {
        self.enter(Phase::Stopping, fx);
        self.health_in_flight = false;
        fx.push(Effect::Close);
        fx.push(Effect::AbortTask);
        self.emit(Detail::StopRequested { reason }, fx);
        fx.push(Effect::StopBackend { run: self.run });
    }

    fn on_stop_done(&mut self, outcome: Result<(), String>, now: Now, fx: &mut Effects) {
        if self.phase != Phase::Stopping {
            return;
        }
        self.enter(Phase::Cold, fx);
        self.route = None;
        self.emit(
            Detail::Stopped {
                error: outcome.as_ref().err().cloned(),
                reason: None,
            },
            fx,
        );
        if let Err(error) = outcome {
            self.last_error = Some(LastError::Other(format!("stop failed: {error}")));
        }
        if self.start_wanted || !self.queue.is_empty() {
            self.begin_start("request", now, fx);
        }
    }

    // ----- helpers -----

    fn id(&self) -> &str {
        &self.settings.service_id
    }

    fn conflict(&self, action: &'static str) -> ServiceError {
        ServiceError::Conflict {
            service: self.id().to_owned(),
            state: self.phase.public().as_str(),
            action,
        }
    }

    fn attempt_record(
        &self,
        failure: Option<&StartFailure>,
        elapsed: Duration,
        now: Now,
    ) -> AttemptRecord {
        let target = self.target.as_ref();
        AttemptRecord {
            service_id: self.id().to_owned(),
            attempt: self.cursor.attempts,
            machine_id: target.and_then(|t| t.machine_id()).map(str::to_owned),
            target_url: target.map(|t| t.base_url.clone()).unwrap_or_default(),
            starter: self.settings.starter.to_owned(),
            started_at: now.wall - chrono::Duration::from_std(elapsed).unwrap_or_default(),
            duration_ms: elapsed.as_millis() as u64,
            outcome: match failure {
                None => AttemptOutcome::Success,
                Some(StartFailure::Timeout { .. }) => AttemptOutcome::Timeout,
                Some(_) if elapsed >= self.settings.start_timeout => AttemptOutcome::Timeout,
                Some(_) => AttemptOutcome::Failed,
            },
            error: failure.map(ToString::to_string),
        }
    }

    fn emit(&self, detail: Detail, fx: &mut Effects) {
        self.emit_for(None, detail, fx);
    }

    fn emit_for(&self, request_id: Option<String>, detail: Detail, fx: &mut Effects) {
        fx.push(Effect::Emit {
            request_id,
            machine: self
                .target
                .as_ref()
                .and_then(|t| t.machine_id())
                .map(str::to_owned),
            detail,
        });
    }
}

#[cfg(test)]
mod tests;
