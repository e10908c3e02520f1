//! How a configured service becomes a running one: its plan, starter, upstreams, shared state
//! and actor arguments — the same at start-up and when a reload adds or replaces a service.

use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::error::EngineError;
use crate::persistence::PersistenceHandle;
use crate::router::Directory;
use crate::service::actor::ServiceArgs;
use crate::service::policy::{Plan, Target};
use crate::service::{Awareness, ServiceHandle, ServiceStatus, Shared, State, Upstreams};
use crate::spec::{EngineSpec, InstanceSpec, ReadinessSpec, ServiceSpec, StarterSpec};
use crate::starters::{self, ProcessIdentity, Starter, StarterContext};
use crate::strategy::Strategies;

/// What every service of the engine is built with.
#[derive(Clone)]
pub(crate) struct Assembly {
    pub persistence: PersistenceHandle,
    pub client: reqwest::Client,
    pub strategies: Arc<Strategies>,
    /// `prefer_awake` reads the directory through a weak reference.
    pub directory: Arc<ArcSwap<Directory>>,
    /// Each service's counters, kept across reloads that rebuild it.
    pub metrics: Arc<crate::metrics::Registry>,
}

/// What the services of one spec share: its starter context and its sleeping machines.
pub(crate) struct Kit {
    starters: StarterContext,
    sleepy: Arc<HashSet<String>>,
}

impl Assembly {
    pub fn kit(&self, spec: &EngineSpec) -> Kit {
        Kit {
            starters: StarterContext::new(
                spec,
                Some(self.persistence.clone()),
                self.client.clone(),
            ),
            sleepy: Arc::new(
                spec.machines
                    .iter()
                    .filter(|m| m.wake.is_some())
                    .map(|m| m.id.clone())
                    .collect(),
            ),
        }
    }

    /// Builds one service. `starter` keeps an existing starter (and the process it owns);
    /// `adopt` probes that target first and adopts the service if it is up (`adopt_process`:
    /// the process an earlier Hestia started, from the database).
    pub fn build(
        &self,
        kit: &Kit,
        service: &ServiceSpec,
        plan: Plan,
        starter: Option<Arc<dyn Starter>>,
        adopt: Option<Target>,
        adopt_process: Option<ProcessIdentity>,
    ) -> Result<(ServiceHandle, ServiceArgs), EngineError> {
        let starter = starter.unwrap_or_else(|| {
            starters::build(
                &service.start,
                service.stop.as_ref(),
                &service.id,
                &kit.starters,
            )
        });
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
            self.strategies
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
            Awareness::new(kit.sleepy.clone(), Arc::downgrade(&self.directory)),
            self.client.clone(),
            service.upstream_http2,
        );
        let mut shared = Shared::new(
            service,
            initial,
            self.persistence.clone(),
            upstreams,
            starter.clone(),
            self.metrics.for_service(&service.id),
        );
        if service.start == StarterSpec::None {
            shared.waiting_for = Some(waited_for(service));
        }
        let shared = Arc::new(shared);
        let args = ServiceArgs {
            spec: Arc::new(service.clone()),
            plan: Arc::new(plan),
            starter,
            shared: shared.clone(),
            persistence: self.persistence.clone(),
            client: self.client.clone(),
            adopt,
            adopt_process,
        };
        Ok((ServiceHandle::new(shared), args))
    }
}

/// A service's instances as its strategy sees them: the configured ones, then every
/// `routing.by_model` URL that is not one of them already.
fn candidate_instances(service: &ServiceSpec) -> Vec<InstanceSpec> {
    let mut instances = service.instances.clone();
    let mapped = service
        .model_routing
        .iter()
        .flat_map(|r| r.by_model.values());
    for url in mapped {
        let known = |u: &str| u.trim_end_matches('/') == url.trim_end_matches('/');
        if !known(&service.base_url) && !instances.iter().any(|i| known(&i.url)) {
            instances.push(InstanceSpec {
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
fn waited_for(service: &ServiceSpec) -> String {
    let target = match &service.readiness {
        ReadinessSpec::Http(http) => &http.url,
        ReadinessSpec::Tcp(tcp) => &tcp.address,
        ReadinessSpec::Warmup(_) => &service.base_url,
    };
    crate::redact::redact_url(target)
}
