//! What a service actor shares with its handles: the published status and the hot-path gate.
//!
//! The actor is the only writer of the gate (`open`) and the route; requests only bump the
//! in-flight count. Opening and closing race requests by design, and are made safe with the
//! classic store-then-load on both sides (sequentially consistent): a request increments
//! `in_flight` then checks `open`; an idle stop clears `open` then checks `in_flight`. At least
//! one of them sees the other, so a stop never pulls the service from under a request.
//!
//! What requests write (the count, the time of last use) is kept per core ([`PerCore`]): the
//! argument above holds for each core's count, and the stop adds them up.

use std::any::Any;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use chrono::{DateTime, Utc};
use ractor::ActorRef;
use tokio::sync::watch;
use tokio::time::Instant;

use super::actor::ServiceMsg;
use super::slots::Slots;
use super::{Route, ServiceStatus};
use crate::events::{ActivityEvent, Detail};
use crate::metrics::ServiceMetrics;
use crate::per_core::PerCore;
use crate::persistence::PersistenceHandle;
use crate::router::Directory;
use crate::spec::{InstanceSpec, ServiceSpec};
use crate::starters::Starter;
use crate::strategy::{Candidate, RequestContext, Selector};

/// Aligned to its own cache lines: requests write the `Arc`'s count in front of it, and what
/// they read of it (the gate, the id) would otherwise share a line with that count.
#[repr(align(128))]
pub(crate) struct Shared {
    pub id: Arc<str>,
    pub upstreams: Upstreams,
    /// Read-only here: live facts the starter keeps (its Semaphore tasks).
    pub starter: Arc<dyn Starter>,
    pub queue_timeout: Duration,
    /// For a service Hestia does not start: the (redacted) URL or address it waits for.
    pub waiting_for: Option<String>,
    pub status: watch::Sender<Arc<ServiceStatus>>,
    /// The service's counters: events count here as they are recorded, requests through the
    /// handle the proxy holds.
    pub metrics: Arc<ServiceMetrics>,
    /// `max_concurrency`, if the service has a limit.
    pub slots: Option<Slots>,
    persistence: PersistenceHandle,
    actor: ArcSwapOption<ActorRef<ServiceMsg>>,
    route: ArcSwapOption<Route>,
    open: AtomicBool,
    /// Set when a reload hands the running backend over to a successor actor.
    handed_over: AtomicBool,
    /// Requests in flight, and when one last ended (or began), per core.
    usage: PerCore<Usage>,
    epoch: Instant,
    epoch_wall: DateTime<Utc>,
}

impl Shared {
    pub fn new(
        spec: &ServiceSpec,
        status: ServiceStatus,
        persistence: PersistenceHandle,
        upstreams: Upstreams,
        starter: Arc<dyn Starter>,
        metrics: Arc<ServiceMetrics>,
    ) -> Shared {
        Shared {
            id: Arc::from(spec.id.as_str()),
            upstreams,
            starter,
            queue_timeout: spec.queue.timeout,
            waiting_for: None,
            status: watch::Sender::new(Arc::new(status)),
            metrics,
            slots: spec.max_concurrency.map(Slots::new),
            persistence,
            actor: ArcSwapOption::empty(),
            route: ArcSwapOption::empty(),
            open: AtomicBool::new(false),
            handed_over: AtomicBool::new(false),
            usage: PerCore::default(),
            epoch: Instant::now(),
            epoch_wall: Utc::now(),
        }
    }

    /// Counts an event of this service and records it in the activity timeline; `json` is
    /// `detail` as the record's JSON (the caller made it already, to log it).
    pub fn record(
        &self,
        detail: &Detail,
        json: serde_json::Value,
        machine: Option<&str>,
        request_id: Option<&str>,
    ) {
        self.metrics.observe(detail);
        self.persistence.record(
            ActivityEvent::new(detail.kind(), Some(&self.id))
                .machine(machine)
                .request(request_id)
                .detail(json),
        );
    }

    /// The running backend now belongs to a successor: stopping this actor must not stop it.
    pub fn hand_over(&self) {
        self.handed_over.store(true, SeqCst);
    }

    pub fn is_handed_over(&self) -> bool {
        self.handed_over.load(SeqCst)
    }

    pub fn actor(&self) -> Option<ActorRef<ServiceMsg>> {
        self.actor.load_full().map(|a| (*a).clone())
    }

    pub fn set_actor(&self, actor: Option<ActorRef<ServiceMsg>>) {
        self.actor.store(actor.map(Arc::new));
    }

    /// Ready: [`try_lease`](Self::try_lease) would lease.
    pub fn is_open(&self) -> bool {
        self.open.load(SeqCst)
    }

    /// The hot path: a lease without asking the actor, if the service is ready.
    pub fn try_lease(self: &Arc<Self>) -> Option<Lease> {
        if !self.open.load(SeqCst) {
            return None;
        }
        let core = self.begin_request();
        let lease = self
            .open
            .load(SeqCst)
            .then(|| self.route.load_full())
            .flatten();
        match lease {
            Some(route) => Some(Lease {
                shared: self.clone(),
                route,
                cold_start: None,
                instance: AtomicUsize::new(NO_INSTANCE),
                slot: false,
                core,
            }),
            None => {
                self.end_request(core);
                None
            }
        }
    }

    /// A lease the actor hands out to a waiter it releases (counted in flight from now on).
    pub fn lease(self: &Arc<Self>, route: Arc<Route>, cold_start: Option<Duration>) -> Lease {
        let core = self.begin_request();
        Lease {
            shared: self.clone(),
            route,
            cold_start,
            instance: AtomicUsize::new(NO_INSTANCE),
            slot: false,
            core,
        }
    }

    /// Lets requests through the hot path to `route`.
    pub fn open(&self, route: Arc<Route>) {
        self.route.store(Some(route));
        self.touch(self.usage.mine().1);
        self.open.store(true, SeqCst);
    }

    /// Stops the hot path (a stop, a failed health check, a crash) and lets go of the run's
    /// route: what the data path kept for the run goes when its last request ends.
    pub fn close(&self) {
        self.open.store(false, SeqCst);
        self.route.store(None);
    }

    /// Closes the gate if nothing is in flight and the service has been idle for `idle`;
    /// returns whether it did. Otherwise returns how long to wait before asking again.
    pub fn close_if_idle(&self, idle: Duration) -> Result<(), Duration> {
        if self.in_flight() > 0 {
            return Err(idle);
        }
        let idle_for = self.idle_for();
        if idle_for < idle {
            return Err(idle - idle_for);
        }
        self.open.store(false, SeqCst);
        if self.in_flight() > 0 {
            self.open.store(true, SeqCst);
            return Err(idle);
        }
        Ok(())
    }

    pub fn in_flight(&self) -> usize {
        self.usage.iter().map(|u| u.in_flight.load(SeqCst)).sum()
    }

    pub fn last_used_at(&self) -> Option<DateTime<Utc>> {
        match self.last_used_ms() {
            0 => None,
            ms => Some(self.epoch_wall + chrono::Duration::milliseconds(ms as i64)),
        }
    }

    /// Milliseconds since `epoch` when a request last ended (or began), on any core; 0: never.
    fn last_used_ms(&self) -> u64 {
        let each = self.usage.iter().map(|u| u.last_used_ms.load(SeqCst));
        each.max().unwrap_or(0)
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_used_ms());
        self.epoch.elapsed().saturating_sub(last)
    }

    fn touch(&self, usage: &Usage) {
        // Never 0, which means "never used".
        let now = self.epoch.elapsed().as_millis().max(1) as u64;
        usage.last_used_ms.store(now, SeqCst);
    }

    /// Counts a request in flight on the calling thread's core; returns that core's slot.
    fn begin_request(&self) -> usize {
        let (core, usage) = self.usage.mine();
        usage.in_flight.fetch_add(1, SeqCst);
        self.touch(usage);
        core
    }

    /// Ends a request [`Shared::begin_request`] counted in `core`'s slot (on whichever thread).
    fn end_request(&self, core: usize) {
        let usage = self.usage.at(core);
        self.touch(usage);
        usage.in_flight.fetch_sub(1, SeqCst);
    }
}

/// Permission to send one request to a ready service, and where to send it.
///
/// Hold it until the response (body, stream or WebSocket) is finished: while any lease is alive
/// the service is busy and idle shutdown waits. Dropping it marks the end of the request.
pub struct Lease {
    shared: Arc<Shared>,
    route: Arc<Route>,
    cold_start: Option<Duration>,
    /// The candidate [`Lease::upstream`] chose (counted in flight there), or `NO_INSTANCE`.
    instance: AtomicUsize,
    /// Whether this request holds a `max_concurrency` slot.
    slot: bool,
    /// The slot of [`Shared`]'s per-core counts this request was counted in.
    core: usize,
}

const NO_INSTANCE: usize = usize::MAX;

impl Lease {
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// Where this request goes: the route, or one of the service's instances as its strategy
    /// chooses (counted in flight to it until the lease ends). The index is for
    /// [`Lease::mark_down`]; `None` when the service has no instances (nothing to choose).
    pub fn upstream(&self, request: &RequestContext<'_>) -> (Option<usize>, &str) {
        let upstreams = &self.shared.upstreams;
        if upstreams.instances.is_empty() {
            return (None, &self.route.base_url);
        }
        let index = upstreams.choose(&self.route, request);
        upstreams.in_flight[index].fetch_add(1, SeqCst);
        self.release_instance(self.instance.swap(index, SeqCst));
        (Some(index), upstreams.url(&self.route, index))
    }

    /// The instance at `index` failed (refused a connection, timed out): skip it until a
    /// background probe finds it back. The route (0) is the lifecycle's to check.
    pub fn mark_down(&self, index: usize) {
        self.shared.upstreams.health.mark_down(index);
    }

    fn release_instance(&self, index: usize) {
        if let Some(count) = self.shared.upstreams.in_flight.get(index) {
            count.fetch_sub(1, SeqCst);
        }
    }

    /// What the data path keeps for the run this request belongs to (made by `init` for the
    /// run's first request). It is dropped once the service has left `ready` and the run's last
    /// request has ended, so nothing of it outlives the backend process it was made for.
    pub fn run_local<T: Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Option<&T> {
        self.route.run_local.get_or_init(init)
    }

    /// How long this request waited for a cold start, if it did.
    pub fn cold_start(&self) -> Option<Duration> {
        self.cold_start
    }

    /// This request holds one of the service's `max_concurrency` slots: it goes back when the
    /// lease ends.
    pub(crate) fn hold_slot(&mut self) {
        self.slot = true;
    }
}

/// What requests write on one core: how many are in flight, and when one last ended (or began),
/// in milliseconds since [`Shared`]'s epoch.
#[derive(Default, Debug)]
struct Usage {
    in_flight: AtomicUsize,
    last_used_ms: AtomicU64,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("service", &self.shared.id)
            .field("route", &self.route)
            .field("cold_start", &self.cold_start)
            .finish()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let instance = *self.instance.get_mut();
        self.release_instance(instance);
        self.shared.end_request(self.core);
        if self.slot
            && let Some(slots) = &self.shared.slots
        {
            slots.give_back();
        }
    }
}

/// A slot for one value the data path keeps per run of a service (see [`Lease::run_local`]).
/// Set once, by the run's first request; later requests get the same value.
#[derive(Default)]
pub struct RunLocal(OnceLock<Box<dyn Any + Send + Sync>>);

impl RunLocal {
    /// The value, made by `init` if this is the first call; `None` if the slot holds another type.
    pub fn get_or_init<T: Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Option<&T> {
        self.0.get_or_init(|| Box::new(init())).downcast_ref()
    }
}

impl std::fmt::Debug for RunLocal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "RunLocal(set)"
        } else {
            "RunLocal(empty)"
        })
    }
}

/// A service's upstream instances (candidate 0 is its route, then each configured instance),
/// their health and load, and the selector choosing among them.
pub(crate) struct Upstreams {
    instances: Vec<InstanceSpec>,
    health: Arc<Health>,
    /// Per candidate: requests in flight to it.
    in_flight: Vec<AtomicUsize>,
    selector: Selector,
    awake: Awareness,
    /// How long an upstream may take to answer (`upstream_timeout_ms`).
    pub timeout: Duration,
    /// Requests go upstream as HTTP/2 (h2c) (`upstream_http2`).
    pub http2: bool,
}

impl Upstreams {
    pub fn new(
        id: &str,
        instances: Vec<InstanceSpec>,
        selector: Selector,
        timeout: Duration,
        awake: Awareness,
        client: reqwest::Client,
        http2: bool,
    ) -> Upstreams {
        let candidates = instances.len() + 1;
        let mut urls = vec![String::new()];
        urls.extend(instances.iter().map(|i| i.url.clone()));
        Upstreams {
            health: Arc::new(Health {
                service: Arc::from(id),
                urls,
                down: (0..candidates).map(|_| AtomicBool::new(false)).collect(),
                probing: (0..candidates).map(|_| AtomicBool::new(false)).collect(),
                client,
            }),
            in_flight: (0..candidates).map(|_| AtomicUsize::new(0)).collect(),
            instances,
            selector,
            awake,
            timeout,
            http2,
        }
    }

    pub fn selector(&self) -> &Selector {
        &self.selector
    }

    /// The candidate this request goes to (0: the route).
    fn choose(&self, route: &Route, request: &RequestContext<'_>) -> usize {
        let mut candidates = Vec::with_capacity(self.instances.len() + 1);
        candidates.push(Candidate {
            url: &route.base_url,
            weight: 1,
            region: None,
            machine: route.machine_id.as_deref(),
            healthy: true,
            in_flight: self.in_flight[0].load(SeqCst),
            awake: true,
        });
        for (i, instance) in self.instances.iter().enumerate() {
            candidates.push(Candidate {
                url: &instance.url,
                weight: instance.weight,
                region: instance.region.as_deref(),
                machine: instance.machine.as_deref(),
                healthy: !self.health.down[i + 1].load(SeqCst),
                in_flight: self.in_flight[i + 1].load(SeqCst),
                awake: instance
                    .machine
                    .as_deref()
                    .is_none_or(|machine| self.awake.is_awake(machine)),
            });
        }
        self.selector.select(&candidates, request)
    }

    fn url<'a>(&'a self, route: &'a Route, index: usize) -> &'a str {
        match index {
            0 => &route.base_url,
            i => &self.instances[i - 1].url,
        }
    }
}

/// Passive health of the instances: one that failed is skipped until a background probe
/// (an HTTP request answered with any status) finds it back.
struct Health {
    service: Arc<str>,
    /// Per candidate; the route (0) is the lifecycle's business and never marked here.
    urls: Vec<String>,
    down: Vec<AtomicBool>,
    probing: Vec<AtomicBool>,
    client: reqwest::Client,
}

/// How often a marked-down instance is probed, and how long one probe may take.
const PROBE_EVERY: Duration = Duration::from_millis(500);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Health {
    fn mark_down(self: &Arc<Self>, index: usize) {
        if index == 0 || index >= self.down.len() {
            return;
        }
        if !self.down[index].swap(true, SeqCst) {
            tracing::warn!(service = %self.service, instance = %self.urls[index],
                "instance marked down; probing it in the background");
        }
        if self.probing[index].swap(true, SeqCst) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(probe(Arc::downgrade(self), index));
            }
            Err(_) => self.probing[index].store(false, SeqCst),
        }
    }
}

/// Probes instance `index` until it answers, then marks it healthy; ends early when the service
/// is gone.
async fn probe(health: Weak<Health>, index: usize) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(health) = health.upgrade() else {
            return;
        };
        let url = &health.urls[index];
        let answered = health
            .client
            .get(url)
            .timeout(PROBE_TIMEOUT)
            .send()
            .await
            .is_ok();
        if answered {
            health.down[index].store(false, SeqCst);
            health.probing[index].store(false, SeqCst);
            let instance = crate::redact::redact_url(url);
            tracing::info!(service = %health.service, %instance, "instance is back");
            return;
        }
    }
}

/// Which machines are awake, for `prefer_awake`: a machine that cannot sleep (no `wake`) always
/// is; one that can, while a service Hestia runs there is ready.
pub(crate) struct Awareness {
    sleepy: Arc<HashSet<String>>,
    directory: Weak<ArcSwap<Directory>>,
}

impl Awareness {
    pub fn new(sleepy: Arc<HashSet<String>>, directory: Weak<ArcSwap<Directory>>) -> Awareness {
        Awareness { sleepy, directory }
    }

    fn is_awake(&self, machine: &str) -> bool {
        if !self.sleepy.contains(machine) {
            return true;
        }
        let Some(directory) = self.directory.upgrade() else {
            return false;
        };
        let directory = directory.load();
        directory.iter().any(|service| {
            let status = service.status();
            status.state == super::State::Ready && status.machine_id.as_deref() == Some(machine)
        })
    }
}
