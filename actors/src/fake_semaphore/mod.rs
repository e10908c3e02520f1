//! A fake Semaphore UI server for tests and demos, faithful to `semaphore-contract.md`: the
//! endpoints Hestia uses with Semaphore's real status codes and bodies (401/403/405 with empty
//! bodies, 400 for an unknown task, `text/plain` ping, JSON ending in `\n`, 2.16 or 2.10 shapes).
//! Templates are scripted (timing, outcome, output) and can launch or kill a real process, such as
//! a `hestia sim` backend, so readiness after a task is real. Every call is recorded.
//! [`spawn`] runs one in-process; [`run`] is the body of `hestia fake-semaphore`.
//!
//! A test double, so it is built only with the `fake-semaphore` feature. By concern:
//! `options` what it imitates and its scripts; `state` what it remembers; `http` the route
//! table and Go-style answers; `auth` tokens and login sessions; `projects` projects and
//! templates; `tasks` task creation, progress, output and stop; `effects` the processes a task
//! launches or kills; `admin` the project-setup calls `hestia semaphore bootstrap` makes.

mod admin;
mod auth;
mod effects;
mod http;
mod options;
mod projects;
mod state;
mod tasks;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use options::{ApiShape, Effect, FakeSemaphoreOptions, FakeTemplate, Outcome};
pub use state::{RecordedCall, StartedTask};

use state::{FakeState, lock};

/// The fake's `user_id` on every task.
const USER_ID: i64 = 1;

/// Why the fake could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum FakeSemaphoreError {
    #[error("fake Semaphore cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("fake Semaphore cannot read its own listening address: {source}")]
    LocalAddr {
        #[source]
        source: std::io::Error,
    },
    #[error("fake Semaphore cannot announce its address on stdout: {source}")]
    Announce {
        #[source]
        source: std::io::Error,
    },
    #[error("fake Semaphore stopped serving: {source}")]
    Serve {
        #[source]
        source: std::io::Error,
    },
}

/// An in-process fake. Dropping it stops the server and kills the processes it launched.
#[derive(Debug)]
pub struct FakeSemaphoreHandle {
    pub addr: SocketAddr,
    state: Arc<FakeState>,
    stop: CancellationToken,
}

impl FakeSemaphoreHandle {
    /// `http://ADDR` (what `semaphore.base_url` should be).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every call answered so far, in order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        lock(&self.state.calls).clone()
    }

    /// Every task created so far, in order.
    pub fn started_tasks(&self) -> Vec<StartedTask> {
        lock(&self.state.started).clone()
    }

    /// The current status of a task.
    pub fn task_status(&self, task_id: i64) -> Option<String> {
        lock(&self.state.tasks)
            .get(&task_id)
            .map(|t| t.status.clone())
    }

    /// Forgets every login session (as Semaphore's 7-day idle expiry would): the next call with
    /// an old cookie gets a 401.
    pub fn expire_sessions(&self) {
        lock(&self.state.sessions).clear();
    }

    /// Adds or replaces a template's script.
    pub fn set_template(&self, id: i64, template: FakeTemplate) {
        lock(&self.state.templates).insert(id, template);
    }

    /// Whether a process launched under `key` is still running.
    pub async fn launched_alive(&self, key: &str) -> bool {
        let mut children = self.state.children.lock().await;
        children
            .get_mut(key)
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Stops serving and kills every launched process.
    pub async fn shutdown(self) {
        self.stop.cancel();
        effects::kill_all(&self.state).await;
    }
}

impl Drop for FakeSemaphoreHandle {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Ok(mut children) = self.state.children.try_lock() {
            for child in children.values_mut() {
                let _ = child.start_kill();
            }
        }
    }
}

/// Starts a fake in this process; returns once it listens.
pub async fn spawn(
    options: FakeSemaphoreOptions,
) -> Result<FakeSemaphoreHandle, FakeSemaphoreError> {
    let (listener, addr) = bind(&options).await?;
    let state = Arc::new(FakeState::new(options));
    let stop = CancellationToken::new();
    let app = http::router(state.clone());
    let shutdown = stop.clone();
    tokio::spawn(async move {
        let serving = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(error) = serving.await {
            tracing::warn!(%error, "fake Semaphore stopped serving");
        }
    });
    Ok(FakeSemaphoreHandle { addr, state, stop })
}

/// The body of `hestia fake-semaphore`: prints `fake-semaphore listening on http://ADDR`, serves
/// until `shutdown` resolves, then kills the processes it launched.
pub async fn run(
    options: FakeSemaphoreOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), FakeSemaphoreError> {
    let (listener, addr) = bind(&options).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "fake-semaphore listening on http://{addr}")
        .and_then(|()| stdout.flush())
        .map_err(|source| FakeSemaphoreError::Announce { source })?;
    drop(stdout);
    let state = Arc::new(FakeState::new(options));
    let served = axum::serve(listener, http::router(state.clone()))
        .with_graceful_shutdown(shutdown)
        .await;
    effects::kill_all(&state).await;
    served.map_err(|source| FakeSemaphoreError::Serve { source })
}

async fn bind(
    options: &FakeSemaphoreOptions,
) -> Result<(TcpListener, SocketAddr), FakeSemaphoreError> {
    let host = if options.host.is_empty() {
        "127.0.0.1"
    } else {
        &options.host
    };
    let listener = TcpListener::bind((host, options.port))
        .await
        .map_err(|source| FakeSemaphoreError::Bind {
            addr: format!("{host}:{}", options.port),
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| FakeSemaphoreError::LocalAddr { source })?;
    Ok((listener, addr))
}
