//! Shared fixtures for the engine's scenario tests: a real engine on tokio's paused clock, each
//! service started by a [`FakeBackend`] (a scripted starter living in this process), and a real
//! SQLite file.
//!
//! Time is virtual: a 30 s start costs nothing, and a timing claim is an exact equality. The one
//! thing that is not virtual is the database: sqlx answers from threads of its own, and while a
//! paused runtime waits for them its clock jumps to the next timer (sqlx's own pool timeouts
//! included). So the persistence actor runs on a small real-time runtime of its own
//! ([`Database`]), and whatever the test itself waits for from SQLite runs with the test's clock
//! held still ([`still`]): reading the timeline never moves the scenario on.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use hestia_actors::engine::Engine;
use hestia_actors::events::{ActivityEvent, ActivityKind};
use hestia_actors::persistence::{self, ActivityFilter, PersistenceHandle, PersistenceOptions};
use hestia_actors::service::{ServiceHandle, State};
use hestia_actors::spec::{
    CommandSpec, DEFAULT_MAX_CONCURRENCY, EngineSpec, QueueSpec, ReadinessSpec, ServiceSpec,
    StartPolicy, StarterSpec,
};
use hestia_actors::starters::{
    ExitInfo, ExitNotifier, ExitWatch, ProcessIdentity, StartTarget, Started, Starter, StarterError,
};
use tempfile::TempDir;
use tokio::time::Instant;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Runs `work` with the paused clock held still until it is done: for waits on something outside
/// the runtime (SQLite's threads), which would otherwise let virtual time jump ahead. `work` must
/// not wait for a timer of this runtime: held, no timer fires.
pub async fn still<T>(work: impl Future<Output = T>) -> T {
    // A running blocking task keeps a paused current-thread runtime from auto-advancing.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let hold = tokio::task::spawn_blocking(move || {
        let _ = released.recv();
    });
    let output = work.await;
    drop(release);
    hold.await.expect("the clock hold ends");
    output
}

/// What one start of a [`FakeBackend`] does.
#[derive(Debug, Clone, Copy)]
struct Script {
    /// How long a start takes.
    boot: Duration,
    /// Starts left that exit during their boot (`u32::MAX`: every one).
    failures_left: u32,
    /// How long a stop takes.
    stop: Duration,
}

/// The process a [`FakeBackend`] runs while it is up.
#[derive(Debug)]
struct Running {
    identity: ProcessIdentity,
    exit: ExitWatch,
    notifier: ExitNotifier,
    /// The backend's port, listening while it runs (health checks and adoption probes connect).
    _listener: std::net::TcpListener,
}

/// A backend that exists only in this process, and the starter that runs it: each start takes its
/// scripted (virtual) time, then either exits during its boot or is up — listening on its
/// loopback port, with a pid of its own — until it is stopped or [`FakeBackend::exit`]s.
#[derive(Debug)]
pub struct FakeBackend {
    id: String,
    address: SocketAddr,
    script: Mutex<Script>,
    running: Mutex<Option<Running>>,
    /// What happened to it, in order: `start 1`, `up 1`, `stop 1`, `exit 2 (code 1)`, ...
    history: Mutex<Vec<String>>,
    starts: Mutex<u32>,
}

impl FakeBackend {
    fn new(id: &str) -> FakeBackend {
        // A loopback port nobody listens on until the backend is up.
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("an ephemeral port");
        FakeBackend {
            id: id.to_owned(),
            address,
            script: Mutex::new(Script {
                boot: Duration::ZERO,
                failures_left: 0,
                stop: Duration::ZERO,
            }),
            running: Mutex::new(None),
            history: Mutex::new(Vec::new()),
            starts: Mutex::new(0),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// How many starts were asked of it.
    pub fn starts(&self) -> u32 {
        *self.starts.lock().unwrap()
    }

    pub fn history(&self) -> Vec<String> {
        self.history.lock().unwrap().clone()
    }

    /// The pid of its process while it is up.
    pub fn pid(&self) -> Option<u32> {
        self.process().map(|process| process.pid)
    }

    /// Its process exits by itself with `code`, as a crash would.
    pub fn exit(&self, code: i32) {
        let info = ExitInfo {
            code: Some(code),
            signal: None,
            stderr_tail: vec!["panic: the fake backend crashed".to_owned()],
        };
        self.end(info);
    }

    fn end(&self, info: ExitInfo) {
        if let Some(running) = self.running.lock().unwrap().take() {
            self.note(format!("exit {} ({info})", running.identity.pid));
            running.notifier.notify(info);
        }
    }

    fn note(&self, line: String) {
        self.history.lock().unwrap().push(line);
    }
}

impl Starter for FakeBackend {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn start<'a>(
        &'a self,
        _target: &'a StartTarget,
    ) -> BoxFuture<'a, Result<Started, StarterError>> {
        Box::pin(async move {
            let number = {
                let mut starts = self.starts.lock().unwrap();
                *starts += 1;
                *starts
            };
            self.note(format!("start {number}"));
            let boot = self.script.lock().unwrap().boot;
            tokio::time::sleep(boot).await;
            let fails = {
                let mut script = self.script.lock().unwrap();
                let fails = script.failures_left > 0;
                if fails && script.failures_left != u32::MAX {
                    script.failures_left -= 1;
                }
                fails
            };
            if fails {
                let exit = ExitInfo {
                    code: Some(1),
                    signal: None,
                    stderr_tail: vec!["error: the fake backend failed to boot".to_owned()],
                };
                self.note(format!("failed {number}"));
                return Err(StarterError::Exited {
                    service_id: self.id.clone(),
                    program: "fake-backend".to_owned(),
                    exit,
                });
            }
            let listener = std::net::TcpListener::bind(self.address).expect("listen again");
            let (notifier, exit) = ExitWatch::channel();
            let identity = ProcessIdentity {
                pid: 100_000 + number,
                start_time: u64::from(number),
                boot_id: "fake".to_owned(),
                program: "fake-backend".to_owned(),
            };
            *self.running.lock().unwrap() = Some(Running {
                identity,
                exit: exit.clone(),
                notifier,
                _listener: listener,
            });
            self.note(format!("up {number}"));
            Ok(Started { exit: Some(exit) })
        })
    }

    fn stop<'a>(&'a self, _target: &'a StartTarget) -> BoxFuture<'a, Result<(), StarterError>> {
        Box::pin(async move {
            let pid = self.pid();
            self.note(format!("stop {}", pid.unwrap_or(0)));
            let took = self.script.lock().unwrap().stop;
            tokio::time::sleep(took).await;
            self.end(ExitInfo {
                code: None,
                signal: Some(15),
                stderr_tail: Vec::new(),
            });
            Ok(())
        })
    }

    fn process(&self) -> Option<ProcessIdentity> {
        let running = self.running.lock().unwrap();
        running.as_ref().map(|running| running.identity.clone())
    }

    fn exit_watch(&self) -> Option<ExitWatch> {
        let running = self.running.lock().unwrap();
        running.as_ref().map(|running| running.exit.clone())
    }
}

/// A service for the engine, with the [`FakeBackend`] that starts it. Built like a config: the
/// defaults are the configuration's, except that it never stops for being idle.
pub struct FakeService {
    pub spec: ServiceSpec,
    backend: Arc<FakeBackend>,
}

impl FakeService {
    pub fn new(id: &str) -> FakeService {
        let backend = Arc::new(FakeBackend::new(id));
        let spec = ServiceSpec {
            id: id.to_owned(),
            base_url: backend.url(),
            // Never run: the engine is given the fake backend as this service's starter.
            start: StarterSpec::Command(CommandSpec {
                program: "fake-backend".to_owned(),
                args: Vec::new(),
                env: Default::default(),
                cwd: None,
                stop_grace: secs(5),
            }),
            stop: None,
            // Ready once its start returns; while ready, health checks connect to its port.
            readiness: ReadinessSpec::Warmup(Duration::ZERO),
            policy: StartPolicy::default(),
            queue: QueueSpec::default(),
            idle_timeout: None,
            machines: Vec::new(),
            tags: Vec::new(),
            instances: Vec::new(),
            strategy: None,
            fallback_strategy: None,
            model_routing: None,
            models: Vec::new(),
            upstream_timeout: secs(300),
            waiting_page: true,
            upstream_http2: false,
            max_concurrency: Some(DEFAULT_MAX_CONCURRENCY),
        };
        FakeService { spec, backend }
    }

    /// Each start takes this long before the backend is up (or fails).
    pub fn boots_in(self, boot: Duration) -> FakeService {
        self.backend.script.lock().unwrap().boot = boot;
        self
    }

    /// The next `times` starts exit during their boot (`u32::MAX`: every start does).
    pub fn fails_to_start(self, times: u32) -> FakeService {
        self.backend.script.lock().unwrap().failures_left = times;
        self
    }

    /// A stop takes this long before the process is gone.
    pub fn stops_in(self, stop: Duration) -> FakeService {
        self.backend.script.lock().unwrap().stop = stop;
        self
    }

    /// Any other setting, on the spec as the configuration would make it.
    pub fn with(mut self, change: impl FnOnce(&mut ServiceSpec)) -> FakeService {
        change(&mut self.spec);
        self
    }
}

/// The SQLite file, and the real-time runtime its persistence actor runs on.
pub struct Database {
    runtime: tokio::runtime::Handle,
    /// Dropping it ends the runtime's thread.
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: TempDir,
}

impl Database {
    async fn open() -> (Database, PersistenceHandle) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("hestia.db").display()
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (started, runtime) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the database runtime");
            let _ = started.send(runtime.handle().clone());
            runtime.block_on(async move {
                let _ = stopped.await;
            });
        });
        let runtime = runtime.recv().expect("the database runtime started");
        let database = Database {
            runtime,
            _stop: stop,
            _dir: dir,
        };
        let persistence = database
            .run(async move {
                let db = persistence::open(&url).await.expect("open the database");
                let (handle, _) = PersistenceHandle::spawn(db, PersistenceOptions::default())
                    .await
                    .expect("the persistence actor");
                handle
            })
            .await;
        (database, persistence)
    }

    /// Runs `work` on the database's runtime, the test's clock held still meanwhile.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> T {
        still(self.runtime.spawn(work))
            .await
            .expect("the database task")
    }
}

/// A running engine whose services are [`FakeService`]s.
pub struct TestEngine {
    pub engine: Engine,
    pub persistence: PersistenceHandle,
    backends: HashMap<String, Arc<FakeBackend>>,
    pub database: Database,
}

impl TestEngine {
    pub async fn start(services: Vec<FakeService>) -> TestEngine {
        let (database, persistence) = Database::open().await;
        let mut starters: HashMap<String, Arc<dyn Starter>> = HashMap::new();
        let mut backends = HashMap::new();
        let mut spec = EngineSpec {
            data_dir: database._dir.path().to_path_buf(),
            ..EngineSpec::default()
        };
        for service in services {
            starters.insert(service.spec.id.clone(), service.backend.clone());
            backends.insert(service.spec.id.clone(), service.backend);
            spec.services.push(service.spec);
        }
        // Starting reads the database from this runtime (the services' last state).
        let engine = still(Engine::start_with_starters(
            spec,
            persistence.clone(),
            starters,
        ))
        .await
        .expect("the engine starts");
        TestEngine {
            engine,
            persistence,
            backends,
            database,
        }
    }

    pub fn service(&self, id: &str) -> ServiceHandle {
        self.engine.service(id).expect("a configured service")
    }

    pub fn backend(&self, id: &str) -> &FakeBackend {
        &self.backends[id]
    }

    /// The recorded events of `service`, oldest first: all of them, or those of `kind`.
    pub async fn timeline(&self, service: &str, kind: Option<ActivityKind>) -> Vec<ActivityEvent> {
        let filter = ActivityFilter {
            service: Some(service.into()),
            kind,
            since: None,
            limit: 1000,
        };
        let persistence = self.persistence.clone();
        let mut events = self
            .database
            .run(async move { persistence.activity(filter).await })
            .await
            .expect("activity");
        events.reverse();
        events
    }

    /// The recorded events of `kind` for `service`, oldest first.
    pub async fn events(&self, service: &str, kind: ActivityKind) -> Vec<ActivityEvent> {
        self.timeline(service, Some(kind)).await
    }

    /// Stops every service actor (and the backends they run), then flushes the database.
    pub async fn shutdown(self) {
        self.engine.shutdown(secs(3)).await;
    }
}

/// Waits until `service` reaches `state`; answers how long that took (virtual time). Fails if it
/// does not within an hour of virtual time — which passes at once when nothing else is due.
pub async fn wait_for_state(service: &ServiceHandle, state: State) -> Duration {
    let began = Instant::now();
    let mut updates = service.subscribe();
    let reached = tokio::time::timeout(secs(3600), async {
        loop {
            if updates.borrow_and_update().state == state {
                return;
            }
            if updates.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(
        reached.is_ok() && service.status().state == state,
        "{} never became {state:?}: {:?}",
        service.id(),
        service.status()
    );
    began.elapsed()
}
