//! `Engine`: the bundle of handles the HTTP layer and the CLI use — and its start and shutdown.
//!
//! Start: reconcile the configuration into the database, read what the last run left running,
//! plan each service's targets, then spawn the supervisor (which spawns one actor per service)
//! and the router. Shutdown: drain the service actors (each stops the processes it owns), then
//! flush the persistence actor last.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ractor::{Actor, ActorRef};
use tokio::sync::oneshot;

use crate::error::{EngineError, ServiceError};
use crate::persistence::PersistenceHandle;
use crate::router::{Directory, RouterActor, RouterMsg};
use crate::routing;
use crate::service::actor::ServiceArgs;
use crate::service::{Awareness, ServiceHandle, ServiceStatus, Shared, State, Upstreams};
use crate::spec::EngineSpec;
use crate::starters;
use crate::strategy::Strategies;
use crate::supervisor::{Supervisor, SupervisorMsg};

/// The running engine. Clone freely; every clone talks to the same actors.
#[derive(Clone)]
pub struct Engine {
    spec: Arc<EngineSpec>,
    directory: Arc<ArcSwap<Directory>>,
    router: ActorRef<RouterMsg>,
    supervisor: ActorRef<SupervisorMsg>,
    persistence: PersistenceHandle,
    strategies: Arc<Strategies>,
}

impl Engine {
    /// Starts one supervised actor per service in `spec`.
    pub async fn start(
        spec: EngineSpec,
        persistence: PersistenceHandle,
    ) -> Result<Engine, EngineError> {
        persistence.reconcile(&spec).await?;
        let last_run: HashMap<String, _> = persistence
            .service_states()
            .await?
            .into_iter()
            .map(|s| (s.service_id.clone(), s))
            .collect();
        let client = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();

        let starter_context =
            starters::StarterContext::new(&spec, Some(persistence.clone()), client.clone());
        if let Some(connection) = spec.semaphore.clone() {
            // A warning now beats a mystery at the first cold start; never delays start-up.
            tokio::spawn(async move {
                let base_url = connection.base_url.clone();
                match crate::semaphore::SemaphoreClient::new(connection)
                    .ping()
                    .await
                {
                    Ok(()) => tracing::info!(%base_url, "Semaphore is reachable"),
                    Err(error) => tracing::warn!(%base_url, %error, "Semaphore is not reachable"),
                }
            });
        }
        let plugins = spec
            .strategies_dir
            .as_deref()
            .map(crate::strategy::rhai::PluginHost::start);
        let strategies = Strategies::with_plugins(plugins);
        // Filled once every service exists; `prefer_awake` reads it through a weak reference.
        let directory = Arc::new(ArcSwap::from_pointee(Directory::default()));
        let sleepy: Arc<HashSet<String>> = Arc::new(
            spec.machines
                .iter()
                .filter(|m| m.wake.is_some())
                .map(|m| m.id.clone())
                .collect(),
        );
        let mut services = Vec::with_capacity(spec.services.len());
        let mut handles = Vec::with_capacity(spec.services.len());
        for service in &spec.services {
            let plan = routing::plan_for(service, &spec.machines, &spec.routing_rules);
            let starter = starters::build(
                &service.start,
                service.stop.as_ref(),
                &service.id,
                &starter_context,
            );
            let initial = ServiceStatus {
                service_id: service.id.clone(),
                state: State::Cold,
                machine_id: None,
                base_url: None,
                queue_pending: 0,
                queue_capacity: service.queue.size,
                last_error: None,
                failure: None,
                last_started_at: None,
                attempts: 0,
                starter: starter.kind(),
                pid: None,
                adopted: false,
            };
            let selector =
                strategies
                    .selector(service)
                    .map_err(|source| EngineError::Strategy {
                        service: service.id.clone(),
                        source,
                    })?;
            let upstreams = Upstreams::new(
                &service.id,
                candidate_instances(service),
                selector,
                service.upstream_timeout,
                Awareness::new(sleepy.clone(), Arc::downgrade(&directory)),
                client.clone(),
            );
            let mut shared = Shared::new(
                &service.id,
                service.queue.timeout,
                initial,
                persistence.clone(),
                upstreams,
                starter.clone(),
            );
            if service.start == crate::spec::StarterSpec::None {
                shared.waiting_for = Some(waited_for(service));
            }
            let shared = Arc::new(shared);
            // What the last run left up (or what is managed elsewhere) is probed and adopted.
            let previous = last_run.get(&service.id);
            let was_up = previous.is_some_and(|s| s.state != State::Cold.as_str());
            let adopt = (was_up || service.start == crate::spec::StarterSpec::None).then(|| {
                let machine = previous.and_then(|s| s.machine_id.as_deref());
                plan.targets
                    .iter()
                    .find(|t| machine.is_some() && t.machine_id() == machine)
                    .unwrap_or(&plan.targets[0])
                    .clone()
            });
            handles.push(ServiceHandle::new(shared.clone()));
            services.push(ServiceArgs {
                spec: Arc::new(service.clone()),
                plan: Arc::new(plan),
                starter,
                shared,
                persistence: persistence.clone(),
                client: client.clone(),
                adopt_process: if was_up {
                    previous.and_then(|s| s.process.clone())
                } else {
                    None
                },
                adopt,
            });
        }

        let (supervisor, _) = Actor::spawn(None, Supervisor, services)
            .await
            .map_err(|source| EngineError::Spawn {
                what: "supervisor".into(),
                source,
            })?;
        directory.store(Arc::new(Directory::new(handles)));
        let (router, _) = Actor::spawn(None, RouterActor, directory.clone())
            .await
            .map_err(|source| EngineError::Spawn {
                what: "router".into(),
                source,
            })?;
        Ok(Engine {
            spec: Arc::new(spec),
            directory,
            router,
            supervisor,
            persistence,
            strategies: Arc::new(strategies),
        })
    }

    /// The service with this id — read from the router's published directory (no round-trip).
    pub fn service(&self, id: &str) -> Result<ServiceHandle, ServiceError> {
        self.directory.load().get(id).cloned()
    }

    /// The same answer, asked of the router actor itself.
    pub async fn resolve(&self, id: &str) -> Result<ServiceHandle, ServiceError> {
        let (reply, answer) = oneshot::channel();
        let unavailable = || ServiceError::Unavailable {
            service: id.to_owned(),
            reason: "the router is not running",
        };
        self.router
            .cast(RouterMsg::Resolve {
                id: id.to_owned(),
                reply,
            })
            .map_err(|_| unavailable())?;
        answer.await.map_err(|_| unavailable())?
    }

    /// Every service, in configuration order.
    pub fn services(&self) -> Vec<ServiceHandle> {
        self.directory.load().iter().cloned().collect()
    }

    /// The log file of a service's own output (it may not exist yet).
    pub fn service_log(&self, id: &str) -> Result<crate::service_log::ServiceLog, ServiceError> {
        let service = self.service(id)?;
        Ok(
            crate::service_log::ServiceLog::new(&self.spec.data_dir, service.id())
                .with_masks(&self.spec.secrets),
        )
    }

    pub fn spec(&self) -> &EngineSpec {
        &self.spec
    }

    /// The strategies services can name (`GET /v1/strategies`).
    pub fn strategies(&self) -> &Strategies {
        &self.strategies
    }

    pub fn persistence(&self) -> &PersistenceHandle {
        &self.persistence
    }

    /// Stops every service actor (and what they own) within `grace`, then flushes the database.
    pub async fn shutdown(&self, grace: Duration) {
        let (done, drained) = oneshot::channel();
        if self
            .supervisor
            .cast(SupervisorMsg::Drain { grace, done })
            .is_ok()
        {
            let _ = tokio::time::timeout(grace + Duration::from_secs(1), drained).await;
        }
        self.supervisor.stop(None);
        self.router.stop(None);
        if let Err(error) = self.persistence.stop().await {
            tracing::error!(%error, "could not flush the database on shutdown");
        }
    }
}

/// A service's instances as its strategy sees them: the configured ones, then every
/// `routing.by_model` URL that is not one of them already.
fn candidate_instances(service: &crate::spec::ServiceSpec) -> Vec<crate::spec::InstanceSpec> {
    let mut instances = service.instances.clone();
    let mapped = service
        .model_routing
        .iter()
        .flat_map(|r| r.by_model.values());
    for url in mapped {
        let known = |u: &str| u.trim_end_matches('/') == url.trim_end_matches('/');
        if !known(&service.base_url) && !instances.iter().any(|i| known(&i.url)) {
            instances.push(crate::spec::InstanceSpec {
                url: url.clone(),
                weight: 1,
                region: None,
                machine: None,
            });
        }
    }
    instances
}

/// What a service Hestia does not start is waited for: its readiness URL or address, else its
/// base URL — redacted, since it ends up in answers.
fn waited_for(service: &crate::spec::ServiceSpec) -> String {
    use crate::spec::ReadinessSpec;
    let target = match &service.readiness {
        ReadinessSpec::Http(http) => &http.url,
        ReadinessSpec::Tcp(tcp) => &tcp.address,
        ReadinessSpec::Warmup(_) => &service.base_url,
    };
    crate::redact::redact_url(target)
}
