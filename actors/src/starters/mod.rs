//! One async interface, [`Starter`], for every way of starting and stopping a service, and
//! [`build`], which picks the implementation from the service's [`StarterSpec`]s.
//!
//! The service actor never awaits a starter itself: it spawns a task per start attempt that runs
//! `start` then the readiness probe, racing the process exit ([`ExitWatch`]).

pub mod command;
pub mod http;
pub mod identity;
pub mod semaphore;
pub mod wake;
pub mod wol;

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::watch;

use crate::persistence::PersistenceHandle;
use crate::placeholders::{PlaceholderError, Vars};
use crate::redact::redact_url;
use crate::semaphore::{SemaphoreClient, SemaphoreError};
use crate::service_log::ServiceLog;
use crate::spec::{EngineSpec, MachineSpec, StarterSpec};

pub use command::CommandStarter;
pub use http::HttpStarter;
pub use identity::ProcessIdentity;
pub use semaphore::{AutomationStatus, AutomationTask, AutomationTracker, SemaphoreStarter};
pub use wake::{WakeError, WakeStarter};

/// What one start (or stop) is aimed at.
#[derive(Debug, Clone)]
pub struct StartTarget {
    pub service_id: String,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
    /// The machine chosen for this attempt; its address fills `{address}`.
    pub machine: Option<MachineSpec>,
    /// The service's base URL, placeholders already expanded.
    pub base_url: String,
}

impl StartTarget {
    /// The placeholder values for this target (`{hestia_exe}` = the running binary).
    pub fn vars(&self) -> Vars {
        Vars {
            address: self.machine.as_ref().map(|machine| machine.address.clone()),
            service_id: self.service_id.clone(),
            hestia_exe: None,
        }
    }
}

/// A start mechanism. Implementations are cheap to share (`Arc<dyn Starter>`) and safe to call
/// from several tasks: a starter serialises its own start/stop.
pub trait Starter: Send + Sync + fmt::Debug + 'static {
    /// `"none"`, `"command"`, `"http"`, `"semaphore"`: for logs, status and errors.
    fn kind(&self) -> &'static str;
    /// Brings the service up. Returns once the start *request* is done (process spawned, webhook
    /// answered); readiness is the probe's job.
    fn start<'a>(&'a self, target: &'a StartTarget)
    -> BoxFuture<'a, Result<Started, StarterError>>;
    /// Brings the service down. For a process Hestia owns, returns once it has been reaped.
    fn stop<'a>(&'a self, target: &'a StartTarget) -> BoxFuture<'a, Result<(), StarterError>>;
    /// The live process this starter owns, if any (status API, DB).
    fn process(&self) -> Option<ProcessIdentity> {
        None
    }
    /// The pid of [`Starter::process`].
    fn pid(&self) -> Option<u32> {
        self.process().map(|process| process.pid)
    }
    /// Takes charge of `process`, which an earlier Hestia started and which was found still
    /// running after a restart, so that stopping works as for one started now. `None` when this
    /// starter owns no processes, or the process under that pid is not that one any more (then
    /// it is never signalled).
    fn adopt(&self, _process: &ProcessIdentity) -> Option<ExitWatch> {
        None
    }
    /// The exit of the process this starter owns right now, if any (a successor actor watches
    /// it after a reload handed the backend over).
    fn exit_watch(&self) -> Option<ExitWatch> {
        None
    }
    /// Called once when the engine exits: stop whatever this starter owns, log failures.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    /// The Semaphore tasks behind this service (status `automation` block); `None` when the
    /// service does not use Semaphore. Cheap: a snapshot, no I/O.
    fn automation(&self) -> Option<AutomationStatus> {
        None
    }
}

/// The outcome of a successful `start`.
#[derive(Debug, Clone)]
pub struct Started {
    /// `Some` for processes Hestia owns: resolves when the process exits.
    pub exit: Option<ExitWatch>,
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// The exit code if it exited normally.
    pub code: Option<i32>,
    /// The signal number if a signal ended it.
    pub signal: Option<i32>,
    /// The last lines it wrote to stderr (at most [`command::STDERR_TAIL_LINES`]).
    pub stderr_tail: Vec<String>,
}

impl ExitInfo {
    /// Exited by itself with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The exit could not be observed (the watcher was dropped, e.g. at runtime shutdown).
    pub fn unknown() -> ExitInfo {
        ExitInfo {
            code: None,
            signal: None,
            stderr_tail: Vec::new(),
        }
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exited with code {code}")?,
            (None, Some(signal)) => {
                let name = nix::sys::signal::Signal::try_from(signal)
                    .map(|s| s.as_str())
                    .unwrap_or("?");
                write!(f, "was killed by signal {signal} ({name})")?
            }
            (None, None) => write!(f, "ended in an unknown way")?,
        }
        if !self.stderr_tail.is_empty() {
            write!(f, "; last stderr:\n{}", self.stderr_tail.join("\n"))?;
        }
        Ok(())
    }
}

/// Observes one process's exit. Cheap to clone; every clone sees the same exit.
#[derive(Debug, Clone)]
pub struct ExitWatch {
    rx: watch::Receiver<Option<ExitInfo>>,
}

/// The sending side of an [`ExitWatch`], for starters (and test fakes) that own a process.
#[derive(Debug)]
pub struct ExitNotifier {
    tx: watch::Sender<Option<ExitInfo>>,
}

impl ExitNotifier {
    /// Records the exit; every `ExitWatch` of this pair resolves with it.
    pub fn notify(self, info: ExitInfo) {
        self.tx.send_replace(Some(info));
    }
}

impl ExitWatch {
    /// A connected notifier/watch pair.
    pub fn channel() -> (ExitNotifier, ExitWatch) {
        let (tx, rx) = watch::channel(None);
        (ExitNotifier { tx }, ExitWatch { rx })
    }

    /// Resolves when the process has exited (immediately if it already has). If the notifier is
    /// dropped without notifying, resolves with [`ExitInfo::unknown`].
    pub async fn exited(&mut self) -> ExitInfo {
        let observed = self
            .rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|info| info.clone());
        observed
            .or_else(|| self.rx.borrow().clone())
            .unwrap_or_else(ExitInfo::unknown)
    }

    /// The exit, if the process has already exited.
    pub fn has_exited(&self) -> Option<ExitInfo> {
        self.rx.borrow().clone()
    }
}

/// Why a start or stop failed. Every variant names the service and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StarterError {
    #[error(
        "service `{service_id}`: the `{kind}` starter is not available in this build of Hestia; \
         use a `command` or `http` start, or start the service elsewhere (`start: none`)"
    )]
    Unsupported {
        service_id: String,
        kind: &'static str,
    },
    #[error("service `{service_id}`: {field}: {source}")]
    Placeholder {
        service_id: String,
        field: &'static str,
        #[source]
        source: PlaceholderError,
    },
    #[error("service `{service_id}`: could not spawn `{program}`: {source}")]
    Spawn {
        service_id: String,
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "service `{service_id}`: could not send {signal} to process group {pgid} of `{program}`: {source}"
    )]
    Signal {
        service_id: String,
        program: String,
        pgid: i32,
        signal: &'static str,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("service `{service_id}`: `{program}` {exit}")]
    Exited {
        service_id: String,
        program: String,
        exit: ExitInfo,
    },
    #[error("service `{service_id}`: webhook {method} {url}: invalid {what} `{name}`")]
    InvalidHook {
        service_id: String,
        method: String,
        url: String,
        what: &'static str,
        name: String,
    },
    #[error(
        "service `{service_id}`: webhook {method} {url} failed: {}",
        error_chain(source)
    )]
    HttpRequest {
        service_id: String,
        method: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("service `{service_id}`: webhook {method} {url} answered {status}: {body}")]
    HttpStatus {
        service_id: String,
        method: String,
        url: String,
        status: u16,
        body: String,
    },
    #[error(
        "service `{service_id}` uses Semaphore, but no Semaphore server is configured: set \
         `semaphore.base_url` and `semaphore.api_token` (or SEMAPHORE_BASE_URL and SEMAPHORE_API_TOKEN)"
    )]
    SemaphoreNotConfigured { service_id: String },
    #[error(
        "service `{service_id}` uses Semaphore at {base_url}, but no credentials are configured: \
         set `semaphore.api_token` (or `semaphore.username` and `semaphore.password`) in the \
         file, or SEMAPHORE_API_TOKEN (or SEMAPHORE_USERNAME and SEMAPHORE_PASSWORD) in the \
         environment"
    )]
    SemaphoreNoCredentials {
        service_id: String,
        base_url: String,
    },
    #[error("service `{service_id}`: Semaphore {action} template {template_id}: {source}")]
    Semaphore {
        service_id: String,
        /// `start` or `stop`.
        action: &'static str,
        template_id: i64,
        #[source]
        source: Box<SemaphoreError>,
    },
    #[error("service `{service_id}`: could not wake machine `{machine_id}`: {source}")]
    Wake {
        service_id: String,
        machine_id: String,
        #[source]
        source: WakeError,
    },
}

impl StarterError {
    /// The service this error is about.
    pub fn service_id(&self) -> &str {
        match self {
            StarterError::Unsupported { service_id, .. }
            | StarterError::Placeholder { service_id, .. }
            | StarterError::Spawn { service_id, .. }
            | StarterError::Signal { service_id, .. }
            | StarterError::Exited { service_id, .. }
            | StarterError::InvalidHook { service_id, .. }
            | StarterError::HttpRequest { service_id, .. }
            | StarterError::HttpStatus { service_id, .. }
            | StarterError::SemaphoreNotConfigured { service_id }
            | StarterError::SemaphoreNoCredentials { service_id, .. }
            | StarterError::Semaphore { service_id, .. }
            | StarterError::Wake { service_id, .. } => service_id,
        }
    }
}

/// An error and its causes on one line (`a: b: c`): reqwest keeps "connection refused" in the chain.
impl StarterError {
    /// Maps a failed placeholder expansion in `field` of `service_id`'s spec to a starter error.
    pub(crate) fn placeholder(
        service_id: &str,
        field: &'static str,
    ) -> impl FnOnce(PlaceholderError) -> StarterError + use<> {
        let service_id = service_id.to_owned();
        move |source| StarterError::Placeholder {
            service_id,
            field,
            source,
        }
    }
}

pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// What starters share across services: the Semaphore client (one per engine, so one login
/// session) and the persistence handle machine wake-ups are recorded through.
#[derive(Debug, Clone, Default)]
pub struct StarterContext {
    /// `None` when no Semaphore server is configured (Semaphore starters then fail saying so).
    pub semaphore: Option<SemaphoreClient>,
    pub persistence: Option<PersistenceHandle>,
    /// The control-plane HTTP client every webhook shares.
    pub http: reqwest::Client,
    /// Where services' log files go.
    pub data_dir: std::path::PathBuf,
}

impl StarterContext {
    /// The context for `spec`'s services.
    pub fn new(
        spec: &EngineSpec,
        persistence: Option<PersistenceHandle>,
        http: reqwest::Client,
    ) -> StarterContext {
        StarterContext {
            semaphore: spec.semaphore.clone().map(SemaphoreClient::new),
            persistence,
            http,
            data_dir: spec.data_dir.clone(),
        }
    }

    /// The log file of `service_id`'s own output.
    pub fn service_log(&self, service_id: &str) -> ServiceLog {
        ServiceLog::new(&self.data_dir, service_id)
    }
}

/// The starter for a service: `start` brings it up; `stop`, when given, is run to bring it down
/// (then the start starter's own stop runs too, so a process Hestia owns is never left behind).
/// Before each start, the attempt's machine is woken if it has a `wake`.
pub fn build(
    start: &StarterSpec,
    stop: Option<&StarterSpec>,
    service_id: &str,
    context: &StarterContext,
) -> Arc<dyn Starter> {
    let tracker = Arc::new(AutomationTracker::default());
    let primary = build_one(start, service_id, "start", context, &tracker);
    let starter = match stop {
        None => primary,
        Some(stop) => Arc::new(WithStopHook {
            stop_label: describe(stop),
            primary,
            hook: build_one(stop, service_id, "stop", context, &tracker),
            service_id: service_id.to_owned(),
        }),
    };
    Arc::new(WakeStarter::new(
        starter,
        context.semaphore.clone(),
        context.persistence.clone(),
    ))
}

fn build_one(
    spec: &StarterSpec,
    service_id: &str,
    action: &'static str,
    context: &StarterContext,
    tracker: &Arc<AutomationTracker>,
) -> Arc<dyn Starter> {
    match spec {
        StarterSpec::None => Arc::new(NoneStarter),
        StarterSpec::Command(command) => Arc::new(CommandStarter::new(
            command.clone(),
            service_id,
            context.service_log(service_id),
        )),
        StarterSpec::Http(hook) => Arc::new(HttpStarter::new(
            hook.clone(),
            service_id,
            context.http.clone(),
        )),
        StarterSpec::Semaphore(task) => Arc::new(SemaphoreStarter::new(
            task.clone(),
            service_id,
            action,
            context.semaphore.clone(),
            tracker.clone(),
        )),
    }
}

/// What a stop hook is, for error messages.
fn describe(spec: &StarterSpec) -> String {
    match spec {
        StarterSpec::None => "none".to_owned(),
        StarterSpec::Command(command) => command.program.clone(),
        StarterSpec::Http(hook) => format!("{} {}", hook.method, redact_url(&hook.url)),
        StarterSpec::Semaphore(task) => format!("semaphore template {}", task.template_id),
    }
}

/// `start: none`: the service is managed elsewhere; Hestia only waits for readiness.
#[derive(Debug)]
struct NoneStarter;

impl Starter for NoneStarter {
    fn kind(&self) -> &'static str {
        "none"
    }

    fn start<'a>(
        &'a self,
        _target: &'a StartTarget,
    ) -> BoxFuture<'a, Result<Started, StarterError>> {
        Box::pin(async { Ok(Started { exit: None }) })
    }

    fn stop<'a>(&'a self, _target: &'a StartTarget) -> BoxFuture<'a, Result<(), StarterError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Starts with `primary`; stops by running `hook` (a webhook, or a command run to completion),
/// then `primary`'s own stop (which ends a process Hestia owns, and is a no-op otherwise).
#[derive(Debug)]
struct WithStopHook {
    primary: Arc<dyn Starter>,
    hook: Arc<dyn Starter>,
    stop_label: String,
    service_id: String,
}

impl WithStopHook {
    async fn run_hook(&self, target: &StartTarget) -> Result<(), StarterError> {
        let started = self.hook.start(target).await?;
        let Some(mut exit) = started.exit else {
            return Ok(());
        };
        let info = exit.exited().await;
        // The hook command is done; end anything it left running in its group.
        self.hook.stop(target).await?;
        if info.success() {
            Ok(())
        } else {
            Err(StarterError::Exited {
                service_id: self.service_id.clone(),
                program: self.stop_label.clone(),
                exit: info,
            })
        }
    }
}

impl Starter for WithStopHook {
    fn kind(&self) -> &'static str {
        self.primary.kind()
    }

    fn start<'a>(
        &'a self,
        target: &'a StartTarget,
    ) -> BoxFuture<'a, Result<Started, StarterError>> {
        self.primary.start(target)
    }

    fn stop<'a>(&'a self, target: &'a StartTarget) -> BoxFuture<'a, Result<(), StarterError>> {
        Box::pin(async move {
            let hook = self.run_hook(target).await;
            // Even if the hook failed, a process Hestia owns must not outlive the stop.
            let primary = self.primary.stop(target).await;
            hook.and(primary)
        })
    }

    fn process(&self) -> Option<ProcessIdentity> {
        self.primary.process()
    }

    fn adopt(&self, process: &ProcessIdentity) -> Option<ExitWatch> {
        self.primary.adopt(process)
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.hook.shutdown().await;
            self.primary.shutdown().await;
        })
    }

    fn automation(&self) -> Option<AutomationStatus> {
        self.primary.automation().or_else(|| self.hook.automation())
    }
}
