//! Starting and stopping a simulated backend: the start-up delay and simulated failure, binding,
//! the accept loop (hyper-util, so a crash can drop connections abruptly), and the two front ends:
//! [`spawn`] (in-process, for tests) and [`run`] (the `hestia sim` process).

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::state::SimState;
use super::{SimError, SimOptions, routes};

/// How long open connections get to finish after a requested shutdown before they are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// After a crash, just long enough to flush the last response already handed to its connection.
const CRASH_GRACE: Duration = Duration::from_millis(200);
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Exit status of the `hestia sim` process when `crash_after` fires.
const CRASH_EXIT_CODE: i32 = 3;

/// Why the accept loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Stopped,
    Crashed,
}

/// An in-process simulated backend. Dropping the handle stops the server too.
#[derive(Debug)]
pub struct SimHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<SimState>,
    stop: CancellationToken,
    finished: CancellationToken,
    task: Option<JoinHandle<Ending>>,
}

impl SimHandle {
    /// `http://ADDR`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The name given in [`SimOptions::name`].
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Requests counted so far (readiness probes and `/_sim/*` excluded).
    pub fn requests(&self) -> u64 {
        self.state.requests()
    }

    /// Whether `crash_after` has fired.
    pub fn crashed(&self) -> bool {
        self.state.crash.is_cancelled()
    }

    /// Resolves once the server no longer accepts connections (after a crash or a shutdown).
    pub async fn stopped(&self) {
        self.finished.cancelled().await;
    }

    /// Stops accepting, lets open connections finish (up to one second) and waits for the server
    /// to be gone.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take()
            && let Err(err) = task.await
        {
            tracing::warn!(sim = %self.state.name, error = %err, "simulated backend task failed");
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts a simulated backend in this process. Returns once the port is bound, that is after
/// [`SimOptions::startup_delay`]; fails then if [`SimOptions::fail_to_start`] is set.
pub async fn spawn(opts: SimOptions) -> Result<SimHandle, SimError> {
    let (listener, addr) = bind(&opts).await?;
    let state = Arc::new(SimState::new(&opts));
    let stop = CancellationToken::new();
    let finished = CancellationToken::new();
    let task = tokio::spawn({
        let (state, stop, finished) = (state.clone(), stop.clone(), finished.clone());
        async move {
            let _finished = finished.drop_guard();
            serve(listener, state, stop).await
        }
    });
    tracing::debug!(sim = %opts.name, %addr, "simulated backend listening");
    Ok(SimHandle {
        addr,
        state,
        stop,
        finished,
        task: Some(task),
    })
}

/// The body of `hestia sim`: binds (after the start-up delay), prints
/// `hestia-sim listening on http://ADDR` on stdout, serves until `shutdown` resolves, then lets
/// open connections finish. When `crash_after` fires, the process exits at once with status 3 —
/// an abrupt death is what it simulates.
pub async fn run(
    opts: SimOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SimError> {
    let (listener, addr) = bind(&opts).await?;
    announce(addr).map_err(|source| SimError::Announce {
        name: opts.name.clone(),
        source,
    })?;
    tracing::info!(sim = %opts.name, %addr, "simulated backend listening");
    let state = Arc::new(SimState::new(&opts));
    let stop = CancellationToken::new();
    let serving = serve(listener, state, stop.clone());
    tokio::pin!(serving);
    let ending = tokio::select! {
        ending = &mut serving => ending,
        () = shutdown => {
            tracing::info!(sim = %opts.name, "simulated backend shutting down");
            stop.cancel();
            serving.await
        }
    };
    if ending == Ending::Crashed {
        tracing::warn!(sim = %opts.name, crash_after = ?opts.crash_after, "simulated backend crashing");
        std::process::exit(CRASH_EXIT_CODE);
    }
    Ok(())
}

fn announce(addr: SocketAddr) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "hestia-sim listening on http://{addr}")?;
    stdout.flush()
}

/// Sleeps the start-up delay, fails if asked to, then binds.
async fn bind(opts: &SimOptions) -> Result<(TcpListener, SocketAddr), SimError> {
    if !opts.startup_delay.is_zero() {
        tracing::debug!(sim = %opts.name, delay = ?opts.startup_delay, "simulated backend starting slowly");
        tokio::time::sleep(opts.startup_delay).await;
    }
    if opts.fail_to_start {
        return Err(SimError::StartFailure {
            name: opts.name.clone(),
            after: opts.startup_delay,
        });
    }
    let listener = TcpListener::bind((opts.host.as_str(), opts.port))
        .await
        .map_err(|source| SimError::Bind {
            name: opts.name.clone(),
            addr: format!("{}:{}", opts.host, opts.port),
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| SimError::LocalAddr {
            name: opts.name.clone(),
            source,
        })?;
    Ok((listener, addr))
}

/// Accepts connections until `stop` or a crash, then closes the listener and winds the open
/// connections down: gracefully within a grace period, abruptly after it.
async fn serve(listener: TcpListener, state: Arc<SimState>, stop: CancellationToken) -> Ending {
    let service = TowerToHyperService::new(routes::router(state.clone()));
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut connections = JoinSet::new();
    let ending = loop {
        tokio::select! {
            () = stop.cancelled() => break Ending::Stopped,
            () = state.crash.cancelled() => break Ending::Crashed,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let connection = connection(builder.clone(), stream, service.clone(), state.halt.clone());
                    connections.spawn(connection);
                }
                Err(err) => {
                    tracing::warn!(sim = %state.name, error = %err, "simulated backend cannot accept");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    };
    drop(listener);
    state.halt.cancel();
    let grace = match ending {
        Ending::Stopped => SHUTDOWN_GRACE,
        Ending::Crashed => CRASH_GRACE,
    };
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.shutdown().await;
    }
    ending
}

/// Serves one connection (HTTP/1.1 with upgrades, or HTTP/2); on `halt`, finishes the response in
/// progress and closes.
async fn connection(
    builder: auto::Builder<TokioExecutor>,
    stream: TcpStream,
    service: TowerToHyperService<axum::Router>,
    halt: CancellationToken,
) {
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = halt.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(error = %err, "simulated backend connection ended with an error");
    }
}
