//! The root actor: spawns one service actor per service and restarts the ones that die.
//!
//! A crashed service actor is restarted with exponential backoff (50 ms doubling, capped at 5 s)
//! while it stays within its budget of 5 restarts a minute; past that it stays down and its
//! requests get `unavailable`. The new actor first probes the service and adopts it if it is still
//! up, so a crash never starts a second copy. On shutdown, children are stopped in an orderly way.
//!
//! A configuration reload (decided by the router actor) adds actors, updates the arguments a
//! restart uses, and retires actors: a retired actor is no longer restarted; it either hands its
//! running backend over to its successor, or finishes its in-flight requests and stops it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::redact::shows;
use crate::service::actor::{ServiceActor, ServiceArgs};
use crate::service::{ServiceHandle, Shared, State};

const RESTART_BUDGET: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a retiring service's in-flight count is looked at.
const RETIRE_POLL: Duration = Duration::from_millis(25);

pub(crate) enum SupervisorMsg {
    Restart(String),
    /// Stop every service actor (each stops what it owns), then answer.
    Drain {
        grace: Duration,
        done: oneshot::Sender<()>,
    },
    /// Spawn an actor for a service (new, or the successor of one handed over).
    Spawn {
        args: ServiceArgs,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// The arguments a restart of this service uses changed (applied in place).
    Update(ServiceArgs),
    /// Retire the actor of `old`. With `handover`, its backend keeps running for the successor
    /// (already spawned); otherwise its in-flight requests finish (within `grace`), its backend is
    /// stopped, and then `successor`, if any, is spawned.
    Retire {
        old: Arc<Shared>,
        handover: bool,
        successor: Option<ServiceArgs>,
        grace: Duration,
    },
    /// A retirement finished: stop the old actor, spawn the successor.
    Retired {
        old: Arc<Shared>,
        successor: Option<ServiceArgs>,
    },
}

pub(crate) struct SupervisorState {
    services: HashMap<String, ServiceArgs>,
    children: HashMap<ActorId, String>,
    restarts: HashMap<String, VecDeque<Instant>>,
    draining: bool,
}

pub(crate) struct Supervisor;

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Vec<ServiceArgs>;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        services: Vec<ServiceArgs>,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut state = SupervisorState {
            services: HashMap::new(),
            children: HashMap::new(),
            restarts: HashMap::new(),
            draining: false,
        };
        for args in services {
            let id = args.spec.id.clone();
            state.spawn(&myself, args.clone()).await?;
            state.services.insert(id, args);
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Restart(id) if !state.draining => {
                if let Some(mut args) = state.services.get(&id).cloned() {
                    args.adopt = Some(adoption_target(&args));
                    // The process it ran is still the starter's own; a pid from the database is stale.
                    args.adopt_process = None;
                    if let Err(error) = state.spawn(&myself, args).await {
                        tracing::error!(service = %id, %error, "could not restart the service actor");
                    }
                }
            }
            SupervisorMsg::Restart(_) => {}
            SupervisorMsg::Drain { grace, done } => {
                state.draining = true;
                myself
                    .stop_children_and_wait(Some("shutdown".into()), Some(grace))
                    .await;
                let _ = done.send(());
            }
            SupervisorMsg::Spawn { args, done } => {
                let id = args.spec.id.clone();
                let spawned = if state.draining {
                    Err("Hestia is shutting down".to_owned())
                } else {
                    state
                        .spawn(&myself, args.clone())
                        .await
                        .map_err(|e| e.to_string())
                };
                if spawned.is_ok() {
                    state.services.insert(id, args);
                }
                let _ = done.send(spawned);
            }
            SupervisorMsg::Update(args) => {
                state.services.insert(args.spec.id.clone(), args);
            }
            SupervisorMsg::Retire {
                old,
                handover,
                successor,
                grace,
            } => {
                // Not ours to restart any more: its death is expected from now on.
                if let Some(actor) = old.actor() {
                    state.children.remove(&actor.get_id());
                }
                let id = old.id.to_string();
                match &successor {
                    Some(args) => {
                        state.services.insert(id, args.clone());
                    }
                    None if !handover => {
                        state.services.remove(&id);
                    }
                    None => {}
                }
                if handover {
                    old.hand_over();
                    if let Some(actor) = old.actor() {
                        actor.stop(Some("handed over".into()));
                    }
                    return Ok(());
                }
                let me = myself.clone();
                tokio::spawn(async move {
                    retire(&old, grace).await;
                    let _ = me.cast(SupervisorMsg::Retired { old, successor });
                });
            }
            SupervisorMsg::Retired { old, successor } => {
                if let Some(actor) = old.actor() {
                    actor.stop(Some("removed from the configuration".into()));
                }
                if let Some(args) = successor
                    && !state.draining
                    && let Err(error) = state.spawn(&myself, args).await
                {
                    tracing::error!(service = %old.id, %error, "could not spawn the reconfigured service");
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, error.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "terminated".into()))
            }
            _ => return Ok(()),
        };
        let Some(id) = state.children.remove(&cell.get_id()) else {
            return Ok(());
        };
        if state.draining {
            return Ok(());
        }
        if let Some(args) = state.services.get(&id) {
            args.shared.close();
            args.shared.set_actor(None);
        }
        match state.next_backoff(&id) {
            Some(backoff) => {
                tracing::warn!(service = %id, reason = %why, ?backoff, "service actor died; restarting");
                myself.send_after(backoff, move || SupervisorMsg::Restart(id));
            }
            None => tracing::error!(
                service = %id, reason = %why,
                "service actor died {RESTART_BUDGET} times within {RESTART_WINDOW:?}; leaving it down"
            ),
        }
        Ok(())
    }
}

impl SupervisorState {
    async fn spawn(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        args: ServiceArgs,
    ) -> Result<(), ractor::SpawnErr> {
        let id = args.spec.id.clone();
        let (actor, _) = Actor::spawn_linked(None, ServiceActor, args, myself.get_cell()).await?;
        self.children.insert(actor.get_id(), id);
        Ok(())
    }

    /// The backoff before the next restart of `id`, or `None` when its budget is spent.
    fn next_backoff(&mut self, id: &str) -> Option<Duration> {
        let now = Instant::now();
        let history = self.restarts.entry(id.to_owned()).or_default();
        while history.front().is_some_and(|t| now - *t > RESTART_WINDOW) {
            history.pop_front();
        }
        if history.len() >= RESTART_BUDGET {
            return None;
        }
        let backoff = FIRST_BACKOFF * 2u32.pow(history.len() as u32);
        history.push_back(now);
        Some(backoff.min(MAX_BACKOFF))
    }
}

/// Lets the requests in flight on a service no request can reach any more finish (within
/// `grace`), then stops its backend and waits until it is down.
async fn retire(old: &Arc<Shared>, grace: Duration) {
    let handle = ServiceHandle::new(old.clone());
    let deadline = Instant::now() + grace;
    while handle.in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(RETIRE_POLL).await;
    }
    if handle.stop().await.is_err() {
        return; // Already cold (or its actor is gone): nothing runs.
    }
    let mut updates = handle.subscribe();
    let stopped = updates.wait_for(|s| s.state == State::Cold);
    if tokio::time::timeout(grace.max(Duration::from_secs(10)), stopped)
        .await
        .is_err()
    {
        tracing::warn!(service = %old.id, "the retired service did not stop in time");
    }
}

/// Where the dead actor's service was running (from its last status, which shows the URL
/// scrubbed), to probe and adopt.
fn adoption_target(args: &ServiceArgs) -> crate::service::policy::Target {
    let base_url = args.shared.status.borrow().base_url.clone();
    let plan = &args.plan;
    base_url
        .and_then(|url| {
            plan.targets
                .iter()
                .find(|t| shows(&url, &t.base_url))
                .cloned()
        })
        .unwrap_or_else(|| plan.targets[0].clone())
}
