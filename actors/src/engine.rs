//! `Engine`: the bundle of handles the HTTP layer and the CLI use — and its start and shutdown.
//!
//! Start: reconcile the configuration into the database, read what the last run left running,
//! plan each service's targets, then spawn the supervisor (which spawns one actor per service)
//! and the router. Shutdown: drain the service actors (each stops the processes it owns), then
//! flush the persistence actor last.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ractor::{Actor, ActorRef};
use tokio::sync::oneshot;

use crate::assembly::Assembly;
use crate::error::{EngineError, ServiceError};
use crate::persistence::PersistenceHandle;
use crate::router::{Directory, ReloadReport, RouterActor, RouterArgs, RouterMsg};
use crate::routing;
use crate::service::{ServiceHandle, State};
use crate::spec::EngineSpec;
use crate::strategy::Strategies;
use crate::supervisor::{Supervisor, SupervisorMsg};

/// How long a service removed by a reload may finish its in-flight requests before its backend
/// is stopped.
const REMOVED_GRACE: Duration = Duration::from_secs(30);

/// The running engine. Clone freely; every clone talks to the same actors.
#[derive(Clone)]
pub struct Engine {
    directory: Arc<ArcSwap<Directory>>,
    router: ActorRef<RouterMsg>,
    supervisor: ActorRef<SupervisorMsg>,
    persistence: PersistenceHandle,
    strategies: Arc<Strategies>,
    /// Each service's counters, the removed services' included.
    metrics: Arc<crate::metrics::Registry>,
}

impl Engine {
    /// Starts one supervised actor per service in `spec` (shared, not copied: the engine and the
    /// configuration hold the same one).
    pub async fn start(
        spec: impl Into<Arc<EngineSpec>>,
        persistence: PersistenceHandle,
    ) -> Result<Engine, EngineError> {
        Engine::boot(spec.into(), persistence, HashMap::new()).await
    }

    /// Like [`Engine::start`], but each service named in `starters` is started and stopped by
    /// the starter given there instead of the one its spec describes: how the engine's scenario
    /// tests drive it with scripted, in-process starters on a paused clock. Only in builds with
    /// the `test-doubles` feature.
    #[cfg(feature = "test-doubles")]
    pub async fn start_with_starters(
        spec: impl Into<Arc<EngineSpec>>,
        persistence: PersistenceHandle,
        starters: HashMap<String, Arc<dyn crate::starters::Starter>>,
    ) -> Result<Engine, EngineError> {
        Engine::boot(spec.into(), persistence, starters).await
    }

    /// Starts the engine; a service in `starters` gets that starter (none in production).
    async fn boot(
        spec: Arc<EngineSpec>,
        persistence: PersistenceHandle,
        mut starters: HashMap<String, Arc<dyn crate::starters::Starter>>,
    ) -> Result<Engine, EngineError> {
        remember_secrets(&spec);
        persistence.reconcile(spec.clone()).await?;
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

        if let Some(connection) = spec.semaphore.clone() {
            // A warning now beats a mystery at the first cold start; never delays start-up.
            tokio::spawn(async move {
                let base_url = crate::redact::redact_url(&connection.base_url);
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
        let strategies = Arc::new(Strategies::with_plugins(plugins));
        // Filled once every service exists; `prefer_awake` reads it through a weak reference.
        let directory = Arc::new(ArcSwap::from_pointee(Directory::default()));
        let metrics = Arc::<crate::metrics::Registry>::default();
        let assembly = Assembly {
            persistence: persistence.clone(),
            client: client.clone(),
            strategies: strategies.clone(),
            directory: directory.clone(),
            metrics: metrics.clone(),
        };
        let kit = assembly.kit(&spec);
        let mut services = Vec::with_capacity(spec.services.len());
        let mut handles = Vec::with_capacity(spec.services.len());
        for service in &spec.services {
            let plan = routing::plan_for(service, &spec.machines, &spec.routing_rules);
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
            let adopt_process = if was_up {
                previous.and_then(|s| s.process.clone())
            } else {
                None
            };
            let starter = starters.remove(&service.id);
            let (handle, args) =
                assembly.build(&kit, service, plan, starter, adopt, adopt_process)?;
            handles.push(handle);
            services.push(args);
        }

        let (supervisor, _) = Actor::spawn(None, Supervisor, services.clone())
            .await
            .map_err(|source| EngineError::Spawn {
                what: "supervisor".into(),
                source,
            })?;
        directory.store(Arc::new(Directory::new(handles, spec)));
        let router_args = RouterArgs {
            directory: directory.clone(),
            supervisor: supervisor.clone(),
            assembly,
            running: services
                .into_iter()
                .map(|args| (args.spec.id.clone(), args))
                .collect(),
            drain_grace: REMOVED_GRACE,
        };
        let (router, _) = Actor::spawn(None, RouterActor, router_args)
            .await
            .map_err(|source| EngineError::Spawn {
                what: "router".into(),
                source,
            })?;
        Ok(Engine {
            directory,
            router,
            supervisor,
            persistence,
            strategies,
            metrics,
        })
    }

    /// Applies a new configuration: the router actor diffs it against the running one and
    /// changes only what changed (see [`ReloadReport`]). One reload runs at a time.
    pub async fn reload(
        &self,
        spec: impl Into<Arc<EngineSpec>>,
    ) -> Result<ReloadReport, EngineError> {
        let spec: Arc<EngineSpec> = spec.into();
        remember_secrets(&spec);
        let (reply, answer) = oneshot::channel();
        let stopped = || EngineError::Reload {
            reason: "the router is not running".into(),
        };
        self.router
            .cast(RouterMsg::Reload { spec, reply })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
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

    /// Hands every request the cores have tallied to the metrics recorder (before `/metrics`
    /// renders it), the services a reload removed included.
    pub fn flush_metrics(&self) {
        self.metrics.flush_all();
    }

    /// Every service, in configuration order.
    pub fn services(&self) -> Vec<ServiceHandle> {
        self.directory.load().iter().cloned().collect()
    }

    /// The spec running now (machines, rules, services), as one snapshot.
    pub fn spec(&self) -> Arc<EngineSpec> {
        self.directory.load().spec().clone()
    }

    /// The log file of a service's own output (it may not exist yet).
    pub fn service_log(&self, id: &str) -> Result<crate::service_log::ServiceLog, ServiceError> {
        let service = self.service(id)?;
        let spec = self.spec();
        Ok(crate::service_log::ServiceLog::new(
            &spec.data_dir,
            service.id(),
        ))
    }

    /// The strategies services can name (`GET /v1/strategies`).
    pub fn strategies(&self) -> &Strategies {
        &self.strategies
    }

    pub fn persistence(&self) -> &PersistenceHandle {
        &self.persistence
    }

    /// The first step of a shutdown: every queued request is answered `shutting-down` now, and
    /// from here on requests that would have to wait (and start commands) are too. Requests a
    /// ready service can take still pass until [`Engine::shutdown`].
    pub fn begin_shutdown(&self) {
        for service in self.services() {
            service.announce_shutdown();
        }
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

/// From now on nothing Hestia prints, stores or returns shows `spec`'s secrets: those the
/// configuration named (`spec.secrets`) and those in its URLs, headers and environments.
fn remember_secrets(spec: &EngineSpec) {
    crate::redact::remember(spec.secrets.iter());
    crate::redact::remember(crate::redact::configured_secrets(spec));
}
