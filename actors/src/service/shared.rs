//! What a service actor shares with its handles: the published status and the hot-path gate.
//!
//! The actor is the only writer of the gate (`open`) and the route; requests only bump the
//! in-flight count. Opening and closing race requests by design, and are made safe with the
//! classic store-then-load on both sides (sequentially consistent): a request increments
//! `in_flight` then checks `open`; an idle stop clears `open` then checks `in_flight`. At least
//! one of them sees the other, so a stop never pulls the service from under a request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use chrono::{DateTime, Utc};
use ractor::ActorRef;
use tokio::sync::watch;
use tokio::time::Instant;

use super::actor::ServiceMsg;
use super::{Route, ServiceStatus};
use crate::events::ActivityEvent;
use crate::persistence::PersistenceHandle;
use crate::spec::InstanceSpec;
use crate::starters::Starter;
use crate::strategy::{Candidate, RequestFacts, Strategy};

pub(crate) struct Shared {
    pub id: Arc<str>,
    pub upstreams: Upstreams,
    /// Read-only here: live facts the starter keeps (its Semaphore tasks).
    pub starter: Arc<dyn Starter>,
    pub queue_timeout: Duration,
    pub status: watch::Sender<Arc<ServiceStatus>>,
    persistence: PersistenceHandle,
    actor: ArcSwapOption<ActorRef<ServiceMsg>>,
    route: ArcSwapOption<Route>,
    open: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` when a request last ended (or began).
    last_used_ms: AtomicU64,
    epoch: Instant,
    epoch_wall: DateTime<Utc>,
}

impl Shared {
    pub fn new(
        id: &str,
        queue_timeout: Duration,
        status: ServiceStatus,
        persistence: PersistenceHandle,
        upstreams: Upstreams,
        starter: Arc<dyn Starter>,
    ) -> Shared {
        Shared {
            id: Arc::from(id),
            upstreams,
            starter,
            queue_timeout,
            status: watch::Sender::new(Arc::new(status)),
            persistence,
            actor: ArcSwapOption::empty(),
            route: ArcSwapOption::empty(),
            open: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_used_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            epoch_wall: Utc::now(),
        }
    }

    pub fn record(&self, event: ActivityEvent) {
        crate::metrics::observe(&self.id, &event);
        self.persistence.record(event);
    }

    pub fn actor(&self) -> Option<ActorRef<ServiceMsg>> {
        self.actor.load_full().map(|a| (*a).clone())
    }

    pub fn set_actor(&self, actor: Option<ActorRef<ServiceMsg>>) {
        self.actor.store(actor.map(Arc::new));
    }

    /// The hot path: a lease without asking the actor, if the service is ready.
    pub fn try_lease(self: &Arc<Self>) -> Option<Lease> {
        if !self.open.load(SeqCst) {
            return None;
        }
        self.in_flight.fetch_add(1, SeqCst);
        self.touch();
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
            }),
            None => {
                self.end_request();
                None
            }
        }
    }

    /// A lease the actor hands out to a waiter it releases (counted in flight from now on).
    pub fn lease(self: &Arc<Self>, route: Arc<Route>, cold_start: Option<Duration>) -> Lease {
        self.in_flight.fetch_add(1, SeqCst);
        self.touch();
        Lease {
            shared: self.clone(),
            route,
            cold_start,
        }
    }

    /// Lets requests through the hot path to `route`.
    pub fn open(&self, route: Arc<Route>) {
        self.route.store(Some(route));
        self.touch();
        self.open.store(true, SeqCst);
    }

    /// Stops the hot path (a stop, a failed health check, a crash).
    pub fn close(&self) {
        self.open.store(false, SeqCst);
    }

    /// Closes the gate if nothing is in flight and the service has been idle for `idle`;
    /// returns whether it did. Otherwise returns how long to wait before asking again.
    pub fn close_if_idle(&self, idle: Duration) -> Result<(), Duration> {
        if self.in_flight.load(SeqCst) > 0 {
            return Err(idle);
        }
        let idle_for = self.idle_for();
        if idle_for < idle {
            return Err(idle - idle_for);
        }
        self.open.store(false, SeqCst);
        if self.in_flight.load(SeqCst) > 0 {
            self.open.store(true, SeqCst);
            return Err(idle);
        }
        Ok(())
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(SeqCst)
    }

    pub fn last_used_at(&self) -> Option<DateTime<Utc>> {
        match self.last_used_ms.load(SeqCst) {
            0 => None,
            ms => Some(self.epoch_wall + chrono::Duration::milliseconds(ms as i64)),
        }
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_used_ms.load(SeqCst));
        self.epoch.elapsed().saturating_sub(last)
    }

    fn touch(&self) {
        // Never 0, which means "never used".
        let now = self.epoch.elapsed().as_millis().max(1) as u64;
        self.last_used_ms.store(now, SeqCst);
    }

    fn end_request(&self) {
        self.touch();
        self.in_flight.fetch_sub(1, SeqCst);
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
}

impl Lease {
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// Where this request goes: the route, or one of the service's instances as its strategy
    /// chooses. The index is for [`Lease::mark_down`].
    pub fn upstream(&self, request: &RequestFacts<'_>) -> (Option<usize>, &str) {
        self.shared.upstreams.choose(&self.route.base_url, request)
    }

    /// The instance at `index` refused a connection: skip it for a while.
    pub fn mark_down(&self, index: usize) {
        self.shared.upstreams.mark_down(index);
    }

    /// How long this request waited for a cold start, if it did.
    pub fn cold_start(&self) -> Option<Duration> {
        self.cold_start
    }
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
        self.shared.end_request();
    }
}

/// A service's extra upstream instances, their passive health, and the strategy choosing.
pub(crate) struct Upstreams {
    instances: Vec<InstanceSpec>,
    /// Per candidate (0 = the route, then each instance): down until this many ms since `epoch`.
    down_until_ms: Vec<AtomicU64>,
    strategy: Arc<dyn Strategy>,
    /// How long an upstream may take to answer (`upstream_timeout_ms`).
    pub timeout: Duration,
    epoch: Instant,
}

/// How long an instance that refused a connection is skipped.
const MARKED_DOWN_FOR: Duration = Duration::from_secs(10);

impl Upstreams {
    pub fn new(
        instances: Vec<InstanceSpec>,
        strategy: Arc<dyn Strategy>,
        timeout: Duration,
    ) -> Upstreams {
        let down_until_ms = (0..=instances.len()).map(|_| AtomicU64::new(0)).collect();
        Upstreams {
            instances,
            down_until_ms,
            strategy,
            timeout,
            epoch: Instant::now(),
        }
    }

    fn choose<'a>(
        &'a self,
        route: &'a str,
        request: &RequestFacts<'_>,
    ) -> (Option<usize>, &'a str) {
        if self.instances.is_empty() {
            return (None, route);
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let healthy = |i: usize| self.down_until_ms[i].load(SeqCst) <= now;
        let mut candidates = Vec::with_capacity(self.instances.len() + 1);
        candidates.push(Candidate {
            url: route,
            weight: 1,
            region: None,
            healthy: healthy(0),
        });
        for (i, instance) in self.instances.iter().enumerate() {
            candidates.push(Candidate {
                url: &instance.url,
                weight: instance.weight,
                region: instance.region.as_deref(),
                healthy: healthy(i + 1),
            });
        }
        match self.strategy.choose(&candidates, request) {
            Some(0) | None => (Some(0), route),
            Some(i) => (Some(i), &self.instances[i - 1].url),
        }
    }

    fn mark_down(&self, index: usize) {
        if let Some(until) = self.down_until_ms.get(index) {
            let at = (self.epoch.elapsed() + MARKED_DOWN_FOR).as_millis() as u64;
            until.store(at, SeqCst);
        }
    }
}
