//! The router actor: owns the directory of services, answers "which actor serves `id`?", and
//! applies configuration reloads.
//!
//! The directory (with the spec it was built from) is published as one immutable snapshot, so
//! the request hot path reads it without a round-trip, and machines, rules and services change
//! together. The actor is where changes are serialised: a [`RouterMsg::Reload`] diffs the new
//! spec against the running one, tells the supervisor what to spawn, update and retire, and
//! publishes the new directory. An id that is not configured is `unknown-service` — never a
//! silent default.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::assembly::Assembly;
use crate::error::{EngineError, ServiceError};
use crate::redact::shows;
use crate::service::actor::{ServiceArgs, ServiceMsg};
use crate::service::policy::{Plan, Target};
use crate::service::{ServiceHandle, State};
use crate::spec::{EngineSpec, ServiceSpec, StarterSpec};
use crate::supervisor::SupervisorMsg;

/// The services by id, their configuration order, and the spec they were built from.
#[derive(Debug, Default)]
pub struct Directory {
    by_id: HashMap<String, ServiceHandle>,
    order: Vec<String>,
    spec: Arc<EngineSpec>,
}

impl Directory {
    pub fn new(services: Vec<ServiceHandle>, spec: Arc<EngineSpec>) -> Directory {
        let order = services.iter().map(|s| s.id().to_owned()).collect();
        let by_id = services
            .into_iter()
            .map(|s| (s.id().to_owned(), s))
            .collect();
        Directory { by_id, order, spec }
    }

    pub fn get(&self, id: &str) -> Result<&ServiceHandle, ServiceError> {
        self.by_id
            .get(id)
            .ok_or_else(|| ServiceError::UnknownService {
                service: id.to_owned(),
                known: self.order.clone(),
            })
    }

    /// Every service, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &ServiceHandle> {
        self.order.iter().filter_map(|id| self.by_id.get(id))
    }

    /// The machines, rules and services this directory was built from.
    pub fn spec(&self) -> &Arc<EngineSpec> {
        &self.spec
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// What a reload changed, by service id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadReport {
    /// New services: their actors were spawned.
    pub added: Vec<String>,
    /// Services no longer configured: unknown from now on, stopped once their requests finished.
    pub removed: Vec<String>,
    /// Changed in place (queue size, idle, retry, start timeout, readiness): nothing restarted.
    pub reconfigured: Vec<String>,
    /// Changed beyond that: a new actor took over. Its backend was kept when the start command
    /// did not change (`kept`), or stopped and started afresh by the new configuration.
    pub replaced: Vec<String>,
    /// Replaced services whose running backend was kept.
    pub kept: Vec<String>,
    pub unchanged: Vec<String>,
}

pub(crate) enum RouterMsg {
    Resolve {
        id: String,
        reply: oneshot::Sender<Result<ServiceHandle, ServiceError>>,
    },
    Reload {
        spec: Arc<EngineSpec>,
        reply: oneshot::Sender<Result<ReloadReport, EngineError>>,
    },
}

pub(crate) struct RouterArgs {
    pub directory: Arc<ArcSwap<Directory>>,
    pub supervisor: ActorRef<SupervisorMsg>,
    pub assembly: Assembly,
    /// What each running service was built from, by id.
    pub running: HashMap<String, ServiceArgs>,
    /// How long a removed service's in-flight requests may take before its backend is stopped.
    pub drain_grace: Duration,
}

pub(crate) struct RouterActor;

impl Actor for RouterActor {
    type Msg = RouterMsg;
    type State = RouterArgs;
    type Arguments = RouterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<RouterMsg>,
        args: RouterArgs,
    ) -> Result<RouterArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<RouterMsg>,
        msg: RouterMsg,
        state: &mut RouterArgs,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RouterMsg::Resolve { id, reply } => {
                let _ = reply.send(state.directory.load().get(&id).cloned());
            }
            // Reloads are serialised here: the next one waits until this one is published.
            RouterMsg::Reload { spec, reply } => {
                let _ = reply.send(state.reload(spec).await);
            }
        }
        Ok(())
    }
}

/// How a changed service is brought to its new configuration.
enum Change {
    /// Only what the lifecycle holds changed: tell the running actor.
    InPlace,
    /// A new actor; the old one hands its running backend over (same start command, and the
    /// service is ready or cold, so nothing waits in its queue).
    Handover,
    /// A new actor once the old one has finished its requests and stopped its backend.
    Restart,
}

impl RouterArgs {
    async fn reload(&mut self, spec: Arc<EngineSpec>) -> Result<ReloadReport, EngineError> {
        self.assembly.persistence.reconcile(spec.clone()).await?;
        let kit = self.assembly.kit(&spec);
        let current = self.directory.load_full();
        let mut report = ReloadReport::default();
        let mut handles = Vec::with_capacity(spec.services.len());
        let mut running = HashMap::with_capacity(spec.services.len());
        let mut retire = Vec::new();

        for service in &spec.services {
            let id = service.id.clone();
            let plan = crate::routing::plan_for(service, &spec.machines, &spec.routing_rules);
            let Some(old) = self.running.get(&id) else {
                let adopt = managed_elsewhere(service, &plan);
                let (handle, args) = self
                    .assembly
                    .build(&kit, service, plan, None, adopt, None)?;
                self.spawn(args.clone()).await?;
                handles.push(handle);
                running.insert(id.clone(), args);
                report.added.push(id);
                continue;
            };
            let old_handle = current.get(&id).cloned().map_err(|_| EngineError::Reload {
                reason: format!("service `{id}` runs but is not in the directory"),
            })?;
            if *old.spec == *service && *old.plan == plan {
                handles.push(old_handle);
                running.insert(id.clone(), old.clone());
                report.unchanged.push(id);
                continue;
            }
            let same_start = old.spec.start == service.start
                && old.spec.stop == service.stop
                && old.plan.targets == plan.targets;
            let state = old_handle.status().state;
            let change = if same_start && in_place(&old.spec, service) {
                Change::InPlace
            } else if same_start && matches!(state, State::Ready | State::Cold) {
                Change::Handover
            } else {
                Change::Restart
            };
            match change {
                Change::InPlace => {
                    let mut args = old.clone();
                    args.spec = Arc::new(service.clone());
                    args.plan = Arc::new(plan);
                    if let Some(actor) = args.shared.actor() {
                        let _ = actor.cast(ServiceMsg::Reconfigure {
                            spec: args.spec.clone(),
                            plan: args.plan.clone(),
                        });
                    }
                    let _ = self.supervisor.cast(SupervisorMsg::Update(args.clone()));
                    handles.push(old_handle);
                    running.insert(id.clone(), args);
                    report.reconfigured.push(id);
                }
                Change::Handover => {
                    // The new actor probes the running backend and adopts it (the starter, and
                    // the process it owns, carry over). The status shows the URL scrubbed.
                    let running_on = old_handle.status().base_url.clone();
                    let adopt = match state {
                        State::Ready => plan
                            .targets
                            .iter()
                            .find(|t| {
                                running_on
                                    .as_deref()
                                    .is_some_and(|on| shows(on, &t.base_url))
                            })
                            .or(plan.targets.first())
                            .cloned(),
                        _ => managed_elsewhere(service, &plan),
                    };
                    let (handle, args) = self.assembly.build(
                        &kit,
                        service,
                        plan,
                        Some(old.starter.clone()),
                        adopt,
                        None,
                    )?;
                    self.spawn(args.clone()).await?;
                    retire.push(SupervisorMsg::Retire {
                        old: old.shared.clone(),
                        handover: true,
                        successor: None,
                        grace: self.drain_grace,
                    });
                    handles.push(handle);
                    running.insert(id.clone(), args);
                    if state == State::Ready {
                        report.kept.push(id.clone());
                    }
                    report.replaced.push(id);
                }
                Change::Restart => {
                    let adopt = managed_elsewhere(service, &plan);
                    let (handle, args) = self
                        .assembly
                        .build(&kit, service, plan, None, adopt, None)?;
                    retire.push(SupervisorMsg::Retire {
                        old: old.shared.clone(),
                        handover: false,
                        successor: Some(args.clone()),
                        grace: self.drain_grace,
                    });
                    handles.push(handle);
                    running.insert(id.clone(), args);
                    report.replaced.push(id);
                }
            }
        }
        for (id, old) in &self.running {
            if !running.contains_key(id) {
                retire.push(SupervisorMsg::Retire {
                    old: old.shared.clone(),
                    handover: false,
                    successor: None,
                    grace: self.drain_grace,
                });
                report.removed.push(id.clone());
            }
        }
        report.removed.sort();

        // Publish first: from here on removed ids are unknown and new ones are served; then the
        // old actors retire.
        self.directory
            .store(Arc::new(Directory::new(handles, spec.clone())));
        self.running = running;
        for msg in retire {
            let _ = self.supervisor.cast(msg);
        }
        tracing::info!(
            added = ?report.added, removed = ?report.removed, reconfigured = ?report.reconfigured,
            replaced = ?report.replaced, "configuration reloaded"
        );
        Ok(report)
    }

    async fn spawn(&self, args: ServiceArgs) -> Result<(), EngineError> {
        let id = args.spec.id.clone();
        let (done, spawned) = oneshot::channel();
        self.supervisor
            .cast(SupervisorMsg::Spawn { args, done })
            .map_err(|_| EngineError::Reload {
                reason: "the supervisor is not running".into(),
            })?;
        match spawned.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(EngineError::Reload {
                reason: format!("could not spawn service `{id}`: {reason}"),
            }),
            Err(_) => Err(EngineError::Reload {
                reason: "the supervisor stopped".into(),
            }),
        }
    }
}

/// A service Hestia does not start is probed at once, and adopted if it is up.
fn managed_elsewhere(service: &ServiceSpec, plan: &Plan) -> Option<Target> {
    (service.start == StarterSpec::None).then(|| plan.targets[0].clone())
}

/// True when `new` differs from `old` only in what a running service actor applies in place:
/// queue size, idle timeout, retry and start policy, readiness.
fn in_place(old: &ServiceSpec, new: &ServiceSpec) -> bool {
    let mut aligned = new.clone();
    aligned.queue.size = old.queue.size;
    aligned.idle_timeout = old.idle_timeout;
    aligned.policy = old.policy.clone();
    aligned.readiness = old.readiness.clone();
    aligned == *old
}
