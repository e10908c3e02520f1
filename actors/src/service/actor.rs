//! `ServiceActor`: the shell around one service's [`Lifecycle`].
//!
//! The lifecycle decides; this actor only turns messages into [`Event`]s and carries out the
//! [`Effect`]s it gets back: spawning attempts, stops and probes as tasks that report back by
//! message, arming timers, opening the gate, answering waiters, logging, recording and
//! persisting. `handle` never awaits I/O. A failed start, a full queue or a timeout is a value
//! sent to the waiting request; only a broken invariant is returned as an error (and makes the
//! supervisor restart the actor).

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::lifecycle::{Attempted, Effect, Event, LastError, Lifecycle, Now, Phase, Settings};
use super::policy::{Cursor, Plan, Target};
use super::{ServiceStatus, Shared, State};
use crate::error::{ServiceError, StartFailure};
use crate::events::{ActivityKind, Detail};
use crate::persistence::{PersistenceHandle, ServiceStateRecord};
use crate::placeholders::Vars;
use crate::readiness::{Probe, ProbeError};
use crate::redact::scrubbed;
use crate::spec::{ReadinessSpec, ServiceSpec, StarterSpec, TcpProbeSpec};
use crate::starters::{ExitWatch, ProcessIdentity, StartTarget, Starter};

/// Messages to a service actor.
pub(crate) enum ServiceMsg {
    /// A lifecycle event: a request from `ServiceHandle`, a report from a task or timer.
    Event(Event),
    /// A reload changed only what this actor applies in place (queue size, idle, retry and
    /// start policy, readiness): the backend keeps running.
    Reconfigure {
        spec: Arc<ServiceSpec>,
        plan: Arc<Plan>,
    },
}

impl From<Event> for ServiceMsg {
    fn from(event: Event) -> ServiceMsg {
        ServiceMsg::Event(event)
    }
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
    pub adopt_process: Option<ProcessIdentity>,
}

impl ServiceArgs {
    fn settings(&self) -> Settings {
        Settings {
            service_id: self.shared.id.clone(),
            plan: self.plan.clone(),
            starter: self.starter.kind(),
            idle_timeout: self.spec.idle_timeout,
            start_timeout: self.spec.policy.start_timeout,
            queue_size: self.spec.queue.size,
        }
    }
}

pub(crate) struct ServiceState {
    args: ServiceArgs,
    lifecycle: Lifecycle,
    /// The probe of the current target (built at launch), for health checks.
    probe: Option<Arc<Probe>>,
    /// The running attempt or adoption probe.
    task: Option<AbortHandle>,
    /// The phase last written to the database; `Effect::Persist` asks for a write.
    persist_pending: bool,
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
        args.shared.set_actor(Some(myself.clone()));
        let mut state = ServiceState {
            lifecycle: Lifecycle::new(args.settings()),
            args,
            probe: None,
            task: None,
            persist_pending: true,
        };
        if let Some(target) = state.args.adopt.clone() {
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
        for waiter in state.lifecycle.drain_queue() {
            let _ = waiter.reply.send(Err(ServiceError::Unavailable {
                service: shared.id.to_string(),
                reason: "Hestia is shutting down",
            }));
        }
        if !shared.is_handed_over() && state.args.starter.pid().is_some() {
            let target = state.start_target();
            let outcome = state.args.starter.stop(&target).await;
            if let Err(error) = &outcome {
                tracing::warn!(service = %shared.id, %error, "could not stop the service on shutdown");
            }
            let detail = Detail::Stopped {
                error: outcome.err().map(|e| e.to_string()),
                reason: Some("shutdown"),
            };
            let machine = target.machine.as_ref().map(|m| m.id.as_str());
            shared.record(&detail, detail.to_json(), machine, None);
            state.persist(Some(Phase::Cold));
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
            ServiceMsg::Event(event) => state.feed(&myself, event),
            ServiceMsg::Reconfigure { spec, plan } => state.reconfigure(&myself, spec, plan),
        }
        state.publish();
        Ok(())
    }
}

impl ServiceState {
    fn id(&self) -> &str {
        &self.args.spec.id
    }

    /// Applies a reload's in-place changes: new spec and plan, a probe for a changed readiness.
    fn reconfigure(
        &mut self,
        myself: &ActorRef<ServiceMsg>,
        spec: Arc<ServiceSpec>,
        plan: Arc<Plan>,
    ) {
        let readiness_changed = spec.readiness != self.args.spec.readiness;
        self.args.spec = spec;
        self.args.plan = plan;
        if readiness_changed && let Some(target) = self.lifecycle.target().cloned() {
            match self.build_probe(&target) {
                Ok(probe) => self.probe = Some(probe),
                Err(error) => {
                    tracing::warn!(service = %self.id(), %error, "new readiness probe not usable; keeping the old one")
                }
            }
        }
        let settings = self.args.settings();
        self.feed(myself, Event::Reconfigure(settings));
    }

    /// One event in, its effects carried out (some answer with another event at once).
    fn feed(&mut self, myself: &ActorRef<ServiceMsg>, event: Event) {
        let effects = self.lifecycle.step(event, Now::read());
        for effect in effects {
            if let Some(next) = self.carry_out(myself, effect) {
                self.feed(myself, next);
            }
        }
    }

    fn carry_out(&mut self, myself: &ActorRef<ServiceMsg>, effect: Effect) -> Option<Event> {
        let shared = &self.args.shared;
        match effect {
            Effect::Emit {
                request_id,
                machine,
                detail,
            } => {
                let id = self.id();
                let kind = detail.kind();
                let json = detail.to_json();
                match kind {
                    ActivityKind::Queued | ActivityKind::Dequeued => {
                        tracing::debug!(service = %id, event = kind.as_str(), request_id, detail = %json)
                    }
                    ActivityKind::StartFailed | ActivityKind::QueueRejected => {
                        tracing::warn!(service = %id, event = kind.as_str(), machine, request_id, detail = %json)
                    }
                    _ => {
                        tracing::info!(service = %id, event = kind.as_str(), machine, detail = %json)
                    }
                }
                shared.record(&detail, json, machine.as_deref(), request_id.as_deref());
            }
            Effect::Admit { waiter, route } => {
                let _ = waiter.reply.send(Ok(shared.lease(route, None)));
            }
            Effect::Refuse { waiter, error } => {
                let _ = waiter.reply.send(Err(error));
            }
            Effect::Release { waiters, route } => {
                // Publish first, so a released request already sees `ready`.
                self.publish();
                let shared = &self.args.shared;
                for (waiter, waited) in waiters {
                    let _ = waiter
                        .reply
                        .send(Ok(shared.lease(route.clone(), Some(waited))));
                }
            }
            Effect::Fail { waiters, error } => {
                for waiter in waiters {
                    let _ = waiter.reply.send(Err(error.clone()));
                }
            }
            Effect::AnswerStart { reply, answer } => {
                let _ = reply.send(answer);
            }
            Effect::AnswerStop { reply, answer } => {
                let _ = reply.send(answer);
            }
            Effect::Launch { run, target } => return self.launch(myself, run, target),
            Effect::AbortTask => {
                if let Some(task) = self.task.take() {
                    task.abort();
                }
            }
            Effect::StopBackend { run } => {
                let starter = self.args.starter.clone();
                let target = self.start_target();
                let me = myself.clone();
                tokio::spawn(async move {
                    let outcome = starter.stop(&target).await.map_err(|e| e.to_string());
                    let _ = me.cast(Event::StopDone { run, outcome }.into());
                });
            }
            Effect::ArmRetry { run, after } => {
                myself.send_after(after, move || Event::RetryDue { run }.into());
            }
            Effect::ArmIdleCheck { run, after } => {
                myself.send_after(after, move || Event::IdleDue { run }.into());
            }
            Effect::ArmHealthCheck { run } => {
                if let Some(probe) = &self.probe {
                    myself.send_after(probe.health_interval(), move || {
                        Event::HealthDue { run }.into()
                    });
                }
            }
            Effect::CheckHealth { run } => {
                let Some(probe) = self.probe.clone() else {
                    return Some(Event::HealthChecked {
                        run,
                        outcome: Ok(()),
                    });
                };
                let me = myself.clone();
                tokio::spawn(async move {
                    let outcome = probe.check().await.map_err(|e| e.to_string());
                    let _ = me.cast(Event::HealthChecked { run, outcome }.into());
                });
            }
            Effect::CloseIfIdle { idle } => {
                return Some(Event::IdleChecked(shared.close_if_idle(idle)));
            }
            Effect::WatchExit { run, mut exit } => {
                let me = myself.clone();
                tokio::spawn(async move {
                    let info = exit.exited().await;
                    let _ = me.cast(Event::ProcessExited { run, info }.into());
                });
            }
            Effect::AwaitReadiness { run, exit } => self.await_readiness(myself, run, exit),
            Effect::Open(route) => shared.open(route),
            Effect::Close => shared.close(),
            Effect::RecordAttempt(record) => {
                self.task = None;
                self.args.persistence.record_attempt(record);
            }
            Effect::Persist => self.persist_pending = true,
        }
        None
    }

    /// Spawns one attempt on `target`; a probe that cannot be built fails the attempt at once.
    fn launch(&mut self, myself: &ActorRef<ServiceMsg>, run: u64, target: Target) -> Option<Event> {
        let probe = match self.build_probe(&target) {
            Ok(probe) => probe,
            Err(failure) => {
                return Some(Event::AttemptDone {
                    run,
                    outcome: Err(failure),
                    elapsed: Duration::ZERO,
                });
            }
        };
        self.probe = Some(probe.clone());
        let starter = self.args.starter.clone();
        let start_target = self.start_target();
        let limit = self.args.spec.policy.start_timeout;
        let me = myself.clone();
        let task = tokio::spawn(async move {
            let began = Instant::now();
            let spawned = me.clone();
            let attempt = run_attempt(
                &*starter,
                &start_target,
                &probe,
                target.is_fallback_url,
                began + limit,
                move || drop(spawned.cast(Event::Spawned.into())),
            );
            let outcome = tokio::time::timeout(limit, attempt)
                .await
                .unwrap_or(Err(StartFailure::Timeout { limit }));
            let elapsed = began.elapsed();
            let _ = me.cast(
                Event::AttemptDone {
                    run,
                    outcome,
                    elapsed,
                }
                .into(),
            );
        });
        self.task = Some(task.abort_handle());
        None
    }

    /// Waits for the readiness of a process a previous Hestia spawned, as its attempt would have.
    fn await_readiness(&mut self, myself: &ActorRef<ServiceMsg>, run: u64, exit: ExitWatch) {
        let Some(probe) = self.probe.clone() else {
            return;
        };
        tracing::info!(service = %self.id(), "the process a previous Hestia started is not ready yet: waiting for it");
        let limit = self.args.spec.policy.start_timeout;
        let me = myself.clone();
        let task = tokio::spawn(async move {
            let began = Instant::now();
            let outcome =
                tokio::time::timeout(limit, readiness_of(&probe, Some(exit), began + limit))
                    .await
                    .unwrap_or(Err(StartFailure::Timeout { limit }));
            let _ = me.cast(
                Event::AttemptDone {
                    run,
                    outcome,
                    elapsed: began.elapsed(),
                }
                .into(),
            );
        });
        self.task = Some(task.abort_handle());
    }

    fn begin_adopt(&mut self, myself: &ActorRef<ServiceMsg>, target: Target) {
        let probe = match self.build_probe(&target) {
            Ok(probe) => probe,
            Err(error) => {
                tracing::warn!(service = %self.id(), %error, "cannot probe for adoption");
                return;
            }
        };
        let (lifecycle, effects) = Lifecycle::adopting(self.args.settings(), target);
        self.lifecycle = lifecycle;
        for effect in effects {
            self.carry_out(myself, effect);
        }
        self.probe = Some(probe.clone());
        // The process an earlier Hestia spawned, if it is still alive and verifiably that one.
        let process = self
            .args
            .adopt_process
            .take()
            .and_then(|process| self.args.starter.adopt(&process))
            // A reload that replaced this actor kept the starter and the process it owns.
            .or_else(|| self.args.starter.exit_watch());
        let (run, me) = (self.lifecycle.run(), myself.clone());
        let task = tokio::spawn(async move {
            let ready = probe.check().await.is_ok();
            if ready {
                tracing::info!("service already running: adopted");
            }
            let _ = me.cast(
                Event::AdoptProbed {
                    run,
                    ready,
                    process,
                }
                .into(),
            );
        });
        self.task = Some(task.abort_handle());
    }

    fn build_probe(&self, target: &Target) -> Result<Arc<Probe>, StartFailure> {
        let vars = Vars {
            address: target.machine.as_ref().map(|m| m.address.clone()),
            service_id: self.id().to_owned(),
            hestia_exe: None,
        };
        let fallback_probe;
        let readiness = if target.is_fallback_url {
            fallback_probe = reachability_of(&target.base_url).map_err(probe_failure)?;
            &fallback_probe
        } else {
            &self.args.spec.readiness
        };
        let expected = self.args.shared.metrics.last_cold_start();
        Probe::new(readiness, &vars, self.args.client.clone())
            .and_then(|probe| probe.with_base_url(&target.base_url))
            .map(|probe| Arc::new(probe.expecting(expected)))
            .map_err(|e| probe_failure(e.to_string()))
    }

    fn start_target(&self) -> StartTarget {
        let target = self.lifecycle.target();
        StartTarget {
            service_id: self.id().to_owned(),
            attempt: self.lifecycle.attempts(),
            machine: target.and_then(|t| t.machine.clone()),
            base_url: target
                .map(|t| t.base_url.clone())
                .unwrap_or_else(|| self.args.plan.target(Cursor::default()).base_url.clone()),
        }
    }

    /// The public state of `phase`: a service Hestia does not start is `waiting`, not `starting`.
    fn public_state(&self, phase: Phase) -> State {
        match phase.public() {
            State::Starting if self.args.spec.start == StarterSpec::None => State::Waiting,
            state => state,
        }
    }

    /// Publishes the status snapshot, and persists the runtime state when the phase changed.
    fn publish(&mut self) {
        let lifecycle = &self.lifecycle;
        let route = lifecycle.route();
        let failure = match (lifecycle.phase(), lifecycle.last_error()) {
            (Phase::Failed, Some(LastError::Start(failure))) => Some(failure.clone()),
            _ => None,
        };
        let status = ServiceStatus {
            service_id: self.id().to_owned(),
            state: self.public_state(lifecycle.phase()),
            machine_id: route.and_then(|r| r.machine_id.clone()),
            // What leaves the actor is scrubbed: the snapshot is served, shown and stored.
            base_url: route.map(|r| scrubbed(&r.base_url)),
            queue_pending: lifecycle.queue().len(),
            queue_capacity: lifecycle.queue().capacity(),
            last_error: lifecycle.last_error().map(|e| scrubbed(&e.to_string())),
            failure,
            last_started_at: lifecycle.last_started_at(),
            attempts: lifecycle.attempts(),
            starter: self.args.starter.kind(),
            pid: self.args.starter.pid(),
            adopted: lifecycle.adopted(),
        };
        self.args.shared.status.send_if_modified(|current| {
            if **current == status {
                return false;
            }
            *current = Arc::new(status);
            true
        });
        if self.persist_pending {
            self.persist(None);
        }
    }

    /// Writes the runtime state (in `phase`, or the lifecycle's) to the database.
    fn persist(&mut self, phase: Option<Phase>) {
        self.persist_pending = false;
        let status = self.args.shared.status.borrow().clone();
        let phase = phase.unwrap_or(self.lifecycle.phase());
        self.args
            .persistence
            .save_service_state(ServiceStateRecord {
                service_id: self.id().to_owned(),
                state: self.public_state(phase).as_str().to_owned(),
                machine_id: self
                    .lifecycle
                    .target()
                    .and_then(|t| t.machine_id())
                    .map(str::to_owned),
                base_url: status.base_url.clone(),
                process: self.args.starter.process(),
                last_used_at: self.args.shared.last_used_at(),
                last_error: status.last_error.clone(),
                last_started_at: status.last_started_at,
            });
    }
}

fn probe_failure(last: String) -> StartFailure {
    StartFailure::Probe {
        probes: 0,
        waited: Duration::ZERO,
        last,
    }
}

/// One attempt: start the service, then wait for readiness — failing early if the process dies.
/// `spawned` runs once the starter returned a process (its pid is then recorded at once).
async fn run_attempt(
    starter: &dyn Starter,
    target: &StartTarget,
    probe: &Probe,
    is_fallback_url: bool,
    deadline: Instant,
    spawned: impl FnOnce(),
) -> Result<Attempted, StartFailure> {
    if is_fallback_url {
        // Nothing to start there: the fallback counts once it accepts connections.
        let began = Instant::now();
        probe.check().await.map_err(|error| StartFailure::Probe {
            probes: 1,
            waited: began.elapsed(),
            last: error.to_string(),
        })?;
        return Ok(Attempted { exit: None });
    }
    let started = starter.start(target).await.map_err(|error| match error {
        crate::starters::StarterError::Exited { exit, .. } => StartFailure::Exited { exit },
        other => StartFailure::Starter {
            message: other.to_string(),
        },
    })?;
    if started.exit.is_some() {
        spawned();
    }
    readiness_of(probe, started.exit, deadline).await
}

/// Waits for readiness — failing early if the process (when Hestia owns one) exits first.
async fn readiness_of(
    probe: &Probe,
    exit: Option<ExitWatch>,
    deadline: Instant,
) -> Result<Attempted, StartFailure> {
    match exit {
        Some(exit) => {
            let mut watch = exit.clone();
            tokio::select! {
                ready = probe.wait_ready(deadline) => {
                    ready.map_err(not_ready)?;
                    Ok(Attempted { exit: Some(exit) })
                }
                info = watch.exited() => Err(StartFailure::Exited { exit: info }),
            }
        }
        None => {
            probe.wait_ready(deadline).await.map_err(not_ready)?;
            Ok(Attempted { exit: None })
        }
    }
}

/// A readiness wait that failed, with what the probes saw.
fn not_ready(error: ProbeError) -> StartFailure {
    match error {
        ProbeError::Timeout {
            waited,
            probes,
            last,
        } => StartFailure::Probe {
            probes,
            waited,
            last,
        },
        other => probe_failure(other.to_string()),
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
