//! The edge: accepts client connections and serves them (HTTP/1.1 and h2c) under the `http:`
//! limits, so idle or slow clients cannot take the gateway down.
//!
//! - A connection must send a request head within `head_timeout` (from its first byte, or from
//!   connecting for its first request) and may sit idle between requests for `keep_alive_timeout`;
//!   a request body that stops arriving for `body_timeout` ends the request ([`ClientBodyError`]).
//!   One task looks over the connections a few times per timeout and closes those past theirs
//!   ([`expire_timeouts`]), instead of a timer per connection re-armed by every request.
//! - At most `max_connections` are open. At the cap the longest-silent connection is closed to
//!   make room; when none is silent, a few more are let in for the control API only (`/v1`,
//!   health, metrics), so an operator can still look while the proxy is saturated. Silence is
//!   counted from the moment the connection's reader found nothing to read, never from the
//!   accept: under a burst, a connection whose request is waiting in its socket for a busy
//!   runtime to read it is not idle, and closing it would lose that request.
//! - Accept errors (out of file descriptors) back off, from 10 ms up to 1 s, instead of spinning.
//! - On shutdown, accepting stops and every connection is asked to finish its requests and close.
//! - Thread-per-core: each core's single-threaded runtime accepts and serves its connections; a
//!   proxied request goes from the connection to the proxy directly (when the auth guard would
//!   only wave it through), anything else to the router on the main runtime. A first request that
//!   would only queue waits before hyper takes the connection ([`early`]), and in a crowd each
//!   answer closes its connection: idle keep-alive connections hold hyper's buffers.
//! - HTTP/1.1 requests without a body for the proxy are served by the connection's task itself
//!   ([`lane`]); hyper takes the connection over at the first request that is anything else.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Method, Request, StatusCode, Version, header};
use axum::response::IntoResponse;
use bytes::BytesMut;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{Instant, MissedTickBehavior, Sleep};
use tokio_util::sync::CancellationToken;

use crate::http::AppState;
use crate::http::early::{self, Before, Early};
use crate::http::holding::Holding;
use crate::http::proxy::{self, Peer};
use crate::http::upstream::Heads;
use balance::{Balance, Handed};
use hestia_actors::per_core;
use signal::Signal;

use crate::config::HttpConfig;
use crate::http::problem::Problem;

mod balance;
mod lane;
mod signal;

/// Connections let in beyond the cap, for the control API only.
const CONTROL_RESERVE: usize = 16;
/// Beyond this many open client connections, each HTTP/1 answer closes its connection.
const CROWDED: usize = 1024;
/// Connections told to close for room that may still be open while more are let in.
const MAX_CLOSING: usize = 16;
/// A connection is closed to make room only once its reader has found nothing to read for this
/// long (a client that just connected is about to send its request).
const SHED_AFTER: Duration = Duration::from_millis(100);
/// A request head still arriving after this is a slow client, which may be closed for room.
const SLOW_HEAD: Duration = Duration::from_secs(1);
/// How often connections are looked at for timeouts: a quarter of the shorter of the head and
/// keep-alive timeouts, but no more often than this...
const FASTEST_LOOK: Duration = Duration::from_millis(10);
/// ...and no less often than this (a timeout may be overrun by up to one look).
const SLOWEST_LOOK: Duration = Duration::from_secs(1);
/// How far ahead a core's runtime always has a timer due ([`pace_timers`]).
const TIMER_PACE: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// An error of the client's request body: it stopped arriving, or it was malformed (a bad
/// chunk). The proxy finds it in an upstream error's chain and answers a client error, not
/// `upstream-unreachable`.
#[derive(Debug, Error)]
pub enum ClientBodyError {
    #[error("the request body stopped arriving: no byte for {0:?} (http.body_timeout_ms)")]
    Stalled(Duration),
    #[error("the request body could not be read: {0}")]
    Malformed(#[source] hyper::Error),
}

/// Serves `app` on `listener` until `shutdown` is cancelled; then stops accepting, asks every
/// connection to finish and close, and returns once they all have. Once `abort` is cancelled,
/// the connections still open are reset: a client whose response was cut off sees an error, not
/// a body that seems complete.
///
/// Connections are served thread-per-core: each core runs a single-threaded runtime that
/// accepts on its own handle of the listening socket and serves its connections (and their
/// proxied requests, with that core's upstream connections) start to end, so the hot path never
/// wakes another thread. Requests for the router (the API, the dashboard) are handed to the
/// runtime `serve` was called on, where the engine lives.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    state: AppState,
    limits: HttpConfig,
    max_connections: usize,
    shutdown: CancellationToken,
    abort: CancellationToken,
) {
    let (balance, handed) = Balance::new();
    let edge = Arc::new(Edge {
        app,
        state,
        limits,
        registry: Registry::new(max_connections, abort, balance),
        main: tokio::runtime::Handle::current(),
    });
    // Ends with this function (a `JoinSet` aborts its tasks when dropped).
    let mut timeouts = tokio::task::JoinSet::new();
    timeouts.spawn(expire_timeouts(edge.clone()));
    timeouts.spawn(abort_at_the_end(edge.clone()));
    timeouts.spawn(stop_at_shutdown(edge.clone(), shutdown.clone()));
    let cores = per_core::cores();
    let mut finished = Vec::with_capacity(cores);
    for (core, handed) in handed.into_iter().enumerate() {
        // A token of the core's own: asking whether Hestia is shutting down, or waiting until
        // it does, takes the token's lock, which every connection on every core would share.
        match spawn_core(
            core,
            &listener,
            handed,
            edge.clone(),
            shutdown.child_token(),
        ) {
            Ok(done) => finished.push(done),
            Err(error) => {
                tracing::warn!(%error, core, "cannot start a thread to serve connections on");
                break;
            }
        }
    }
    if finished.is_empty() {
        accept(listener, edge, shutdown).await;
    } else {
        drop(listener);
        for done in finished {
            let _ = done.await;
        }
    }
}

/// Closes the connections past their head or keep-alive timeout, looking a few times per
/// timeout (see [`FASTEST_LOOK`]).
async fn expire_timeouts(edge: Arc<Edge>) {
    let (head, keep_alive) = (edge.limits.head_timeout, edge.limits.keep_alive_timeout);
    let every = (head.min(keep_alive) / 4).clamp(FASTEST_LOOK, SLOWEST_LOOK);
    let mut looks = tokio::time::interval(every);
    looks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        looks.tick().await;
        let closed = edge.registry.expire(head, keep_alive);
        if closed > 0 {
            tracing::debug!(
                closed,
                "closed client connections past their head or keep-alive timeout \
                 (http.head_timeout_ms / keep_alive_timeout_ms)"
            );
        }
    }
}

/// At the end of the shutdown grace, closes every connection still open as aborted (reset, not
/// finished): a connection then waits on its one `shed` signal, not on the abort as well.
async fn abort_at_the_end(edge: Arc<Edge>) {
    edge.registry.abort.cancelled().await;
    edge.registry.abort_all();
}

/// Tells every connection to stop after its request once shutdown begins.
async fn stop_at_shutdown(edge: Arc<Edge>, shutdown: CancellationToken) {
    shutdown.cancelled().await;
    edge.registry.stop_all();
}

/// Starts core `core`'s thread: a single-threaded runtime accepting on a handle of `listener`.
/// The receiver hears when it has finished (every connection closed).
fn spawn_core(
    core: usize,
    listener: &TcpListener,
    handed: UnboundedReceiver<Handed>,
    edge: Arc<Edge>,
    shutdown: CancellationToken,
) -> io::Result<tokio::sync::oneshot::Receiver<()>> {
    use std::os::fd::AsFd;
    let socket = std::net::TcpListener::from(listener.as_fd().try_clone_to_owned()?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("hestia-core-{core}"))
        .spawn(move || {
            per_core::set_core(core);
            runtime.block_on(async move {
                tokio::spawn(pace_timers());
                tokio::spawn(serve_handed(handed, edge.clone(), shutdown.clone()));
                match TcpListener::from_std(socket) {
                    Ok(listener) => accept(listener, edge, shutdown).await,
                    Err(error) => tracing::warn!(%error, core, "cannot accept on this core"),
                }
            });
            let _ = done.send(());
        })?;
    Ok(finished)
}

/// Keeps a timer falling due within [`TIMER_PACE`] on a core's runtime, always. tokio wakes its
/// driver (an `eventfd` write, then one more `epoll_wait`) whenever a timer is set that falls due
/// before every other: with no other timer pending, that was each proxied request's upstream
/// timeout, two system calls per request. With this one pending, a timer set for later than it
/// is only filed. Costs one wake-up per core a second.
async fn pace_timers() {
    let mut pace = tokio::time::interval(TIMER_PACE);
    pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        pace.tick().await;
    }
}

/// One core's accept loop, until `shutdown`; then it waits for every connection (of all cores)
/// to close, serving its own meanwhile.
async fn accept(listener: TcpListener, edge: Arc<Edge>, shutdown: CancellationToken) {
    let registry = &edge.registry;
    let mut backoff = FIRST_BACKOFF;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = registry.room() => {}
        }
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => {
                backoff = FIRST_BACKOFF;
                let _ = stream.set_nodelay(true);
                let mine = per_core::current();
                let core = registry.balance.choose(mine);
                let conn = registry.admit(core);
                if core == mine {
                    tokio::spawn(serve_connection(
                        stream,
                        remote,
                        conn,
                        edge.clone(),
                        shutdown.clone(),
                    ));
                } else {
                    hand_over(&edge, &shutdown, core, stream, remote, conn);
                }
            }
            Err(error) if is_per_connection(&error) => {}
            // Another core took it first (each core is woken for each connection).
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => {
                // Out of file descriptors (or memory): free what can be freed, then wait.
                registry.shed_idle();
                tracing::warn!(%error, retry_in = ?backoff, "cannot accept connections");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    drop(listener);
    registry.wait_all_closed().await;
}

/// Hands a connection to `core`, which is to serve it ([`balance`]); serves it here if that core
/// no longer takes connections (shutting down), though it stays counted there.
fn hand_over(
    edge: &Arc<Edge>,
    shutdown: &CancellationToken,
    core: usize,
    stream: TcpStream,
    remote: SocketAddr,
    conn: Arc<Conn>,
) {
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(error) => {
            tracing::debug!(%error, "a connection could not leave the core that accepted it");
            edge.registry.remove(&conn);
            return;
        }
    };
    let handed = Handed {
        stream,
        remote,
        conn,
    };
    if let Err(refused) = edge.registry.balance.hand(core, handed) {
        serve_handed_here(edge, shutdown, refused);
    }
}

/// Serves the connections other cores accepted for this one ([`balance`]).
async fn serve_handed(
    mut handed: UnboundedReceiver<Handed>,
    edge: Arc<Edge>,
    shutdown: CancellationToken,
) {
    while let Some(one) = handed.recv().await {
        serve_handed_here(&edge, &shutdown, one);
    }
}

/// Serves on the calling core a connection that left the core which accepted it.
fn serve_handed_here(edge: &Arc<Edge>, shutdown: &CancellationToken, handed: Handed) {
    let Handed {
        stream,
        remote,
        conn,
    } = handed;
    match TcpStream::from_std(stream) {
        Ok(stream) => {
            tokio::spawn(serve_connection(
                stream,
                remote,
                conn,
                edge.clone(),
                shutdown.clone(),
            ));
        }
        Err(error) => {
            tracing::debug!(%error, "a connection handed to this core could not be served");
            edge.registry.remove(&conn);
        }
    }
}

/// Errors about one connection that went away before it was accepted: accept the next.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    conn: Arc<Conn>,
    edge: Arc<Edge>,
    shutdown: CancellationToken,
) {
    let registry = &edge.registry;
    // A first request that would only wait in a queue waits here, before hyper's buffers.
    // Silent (so it may be closed for room at the cap) until its first bytes arrive; waiting
    // for a lease after that, it is not.
    conn.nothing_to_read();
    let heard = || {
        conn.silent_since_ms.store(0, SeqCst);
        conn.held.store(true, SeqCst);
    };
    let before = tokio::select! {
        before = early::admit(&stream, &edge.state, edge.limits.head_timeout, heard) => before,
        () = conn.shed.raised() => Before::Gone,
    };
    let early = match before {
        Before::Now => {
            conn.held.store(false, SeqCst);
            None
        }
        Before::Waited(early) => Some(early),
        Before::Gone => {
            registry.remove(&conn);
            return;
        }
    };
    let mut watched = Watched {
        stream,
        conn: conn.clone(),
        unread: BytesMut::new(),
    };
    let peer = Peer::new(remote);
    // Bodiless proxied HTTP/1.1 requests are served by the lane; hyper takes over the
    // connection at the first request that is not one (a connection let in for the control API
    // only goes to hyper at once).
    let mut early = early;
    if !conn.control_only {
        let mut lane = lane::Lane {
            edge: &edge,
            conn: &conn,
            peer: &peer,
            early: early.take(),
        };
        // Shed for room, past a timeout, or aborted at the end of the shutdown grace (which
        // marks it `aborted`, so its socket is reset).
        // Boxed: the lane's future (a proxied request's, inside) would otherwise be part of
        // every connection's task, those waiting in early admission included — 10,000 of them
        // in a burst.
        let ended = tokio::select! {
            ended = Box::pin(lane.serve(&mut watched)) => Some(ended),
            () = conn.shed.raised() => None,
        };
        early = lane.early.take();
        match ended {
            Some(lane::Ended::Handover(read)) => watched.unread = read,
            Some(lane::Ended::Closed) | None => {
                drop(watched);
                registry.remove(&conn);
                return;
            }
        }
    }
    let waited = early.is_some();
    let early = Mutex::new(early);
    let io = TokioIo::new(watched);
    let tower = TowerToHyperService::new(edge.app.clone());
    let state = edge.state.clone();
    let main = edge.main.clone();
    let service_conn = conn.clone();
    let service_edge = edge.clone();
    let body_timeout = edge.limits.body_timeout;
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let conn = service_conn.clone();
        let edge = service_edge.clone();
        let http1 = request.version() < Version::HTTP_2;
        // Counted from here; the guard ends the request when its response body ends, or when
        // the request is dropped unanswered (a reset HTTP/2 stream).
        let request = conn.begin(request, body_timeout);
        let guard = RequestGuard(conn.clone());
        // A proxied request the auth guard would only wave through goes to the proxy directly;
        // everything else through the router and its middleware.
        let answer = match request {
            Ok(request)
                if is_proxied(request.uri().path())
                    && state.auth.waves_through(request.headers()) =>
            {
                let early = early.lock().ok().and_then(|mut early| early.take());
                Route::Direct(state.clone(), request, early, peer.clone())
            }
            Ok(mut request) => {
                request.extensions_mut().insert(ConnectInfo(remote));
                Route::Router(main.spawn(hyper::service::Service::call(&tower, request)))
            }
            Err(refused) => Route::Refused(refused),
        };
        async move {
            let mut response = match answer {
                Route::Direct(state, request, early, peer) => {
                    proxy::direct(&state, request, early, Some(peer), Heads::Map).await
                }
                Route::Router(call) => match call.await {
                    Ok(answer) => answer.unwrap_or_else(|never| match never {}),
                    Err(failed) => {
                        tracing::error!(error = %failed, "a request's handler failed");
                        Problem::new(
                            "internal-error",
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "the request's handler failed",
                        )
                        .into_response()
                    }
                },
                Route::Refused(refused) => refused.into_response(),
            };
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                conn.upgraded.store(true, SeqCst);
            } else if http1 && edge.registry.open.load(SeqCst) > CROWDED {
                // An idle keep-alive connection holds hyper's buffers (~16 KiB): in a crowd,
                // each answer ends its connection instead.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response.map(|body| Holding::new(body, guard)))
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => Some(ended),
        () = conn.shed.raised() => None,
        () = shutdown.cancelled() => {
            // A connection that waited before hyper has its first request in the socket,
            // unread: it is answered (the engine says "shutting down") before the close.
            let first = async {
                if waited {
                    conn.begun.notified().await;
                }
            };
            let ended = tokio::select! {
                ended = connection.as_mut() => Some(Some(ended)),
                () = first => None,
                // Aborted at the end of the grace ([`abort_at_the_end`]).
                () = conn.shed.raised() => Some(None),
            };
            match ended {
                Some(ended) => ended,
                None => {
                    connection.as_mut().graceful_shutdown();
                    tokio::select! {
                        ended = connection.as_mut() => Some(ended),
                        () = conn.shed.raised() => None,
                    }
                }
            }
        }
    };
    if let Some(Err(error)) = ended {
        tracing::debug!(%remote, %error, "client connection ended with an error");
    }
    registry.remove(&conn);
}

/// What every connection serves: the router, the state the proxy needs, the limits, the open
/// connections, and the runtime the router's requests run on.
struct Edge {
    app: Router,
    state: AppState,
    limits: HttpConfig,
    registry: Registry,
    main: tokio::runtime::Handle,
}

/// Where a request goes from the connection (moved once into its answer's future, never boxed).
#[allow(clippy::large_enum_variant)]
enum Route<F> {
    /// To the proxy on this core, with the admission its connection waited for, if any, and
    /// who the connection is from.
    Direct(AppState, Request<Body>, Option<Early>, Peer),
    /// The router's answer, computed on the main runtime.
    Router(F),
    /// Refused by the connection (CONNECT, or the proxy on a control-only connection).
    Refused(Box<Problem>),
}

/// `/services/{id}...` with a non-empty id: the proxy's routes.
fn is_proxied(path: &str) -> bool {
    path.strip_prefix("/services/")
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
}

/// The open connections: how many, and which are idle (for shedding at the cap).
struct Registry {
    cap: usize,
    /// Open connections per core, and the way to hand one to another core ([`balance`]).
    balance: Balance,
    /// Cancelled at the end of the shutdown grace: the connections still open are reset.
    abort: CancellationToken,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Shutting down: connections let in now are told to stop at once.
    stopping: AtomicBool,
    open: AtomicUsize,
    /// Connections told to close that have not closed yet.
    shedding: AtomicUsize,
    closed: Notify,
    epoch: Instant,
}

/// How a connection is let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Normal,
    /// Beyond the cap: the control API only.
    ControlOnly,
}

impl Registry {
    fn new(cap: usize, abort: CancellationToken, balance: Balance) -> Registry {
        Registry {
            cap: cap.max(1),
            balance,
            abort,
            next_id: AtomicU64::new(1),
            conns: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            shedding: AtomicUsize::new(0),
            closed: Notify::new(),
            epoch: Instant::now(),
        }
    }

    /// Resolves when one more connection may be let in: below the cap plus the control reserve,
    /// or with an idle connection to close in its place.
    async fn room(&self) {
        loop {
            let closed = self.closed.notified();
            // Connections told to close still hold their descriptors until their core closes
            // them: never more than a few of those at once.
            let settled = self.open.load(SeqCst) < self.cap + CONTROL_RESERVE + MAX_CLOSING;
            if settled
                && (self.open_not_shedding() < self.cap + CONTROL_RESERVE
                    || self.sheddable().is_some())
            {
                return;
            }
            // A busy connection may turn idle without closing: look again now and then.
            tokio::select! {
                () = closed => {}
                () = tokio::time::sleep(SHED_AFTER) => {}
            }
        }
    }

    fn open_not_shedding(&self) -> usize {
        self.open
            .load(SeqCst)
            .saturating_sub(self.shedding.load(SeqCst))
    }

    /// How the connection just accepted is let in: normally below the cap, or after closing the
    /// longest-idle connection; otherwise for the control API only.
    fn admission(&self) -> Admission {
        if self.open_not_shedding() < self.cap || self.shed_idle() {
            Admission::Normal
        } else {
            Admission::ControlOnly
        }
    }

    /// The connection silent the longest, among those whose reader has found nothing to read
    /// for at least [`SHED_AFTER`] or that have been sending a request head for longer than
    /// [`SLOW_HEAD`]. A connection not read yet (its request may be in its socket) is never one.
    fn sheddable(&self) -> Option<Arc<Conn>> {
        let conns = self.conns.lock().ok()?;
        let now = self.now_ms();
        let since = |ms: u64| Duration::from_millis(now.saturating_sub(ms));
        conns
            .values()
            .filter(|c| c.is_idle() && !c.shed.is_raised())
            .filter_map(|c| {
                let silent = c.silent_since_ms.load(SeqCst);
                let sheddable = match c.head_started_ms.load(SeqCst) {
                    0 => silent != 0 && since(silent) >= SHED_AFTER,
                    started => since(started) >= SLOW_HEAD,
                };
                sheddable.then_some((silent, c))
            })
            .min_by_key(|(silent, _)| *silent)
            .map(|(_, c)| c.clone())
    }

    /// Closes the connection that has been idle the longest; false when none may be closed.
    fn shed_idle(&self) -> bool {
        match self.sheddable() {
            Some(conn) => {
                tracing::debug!(
                    open = self.open.load(SeqCst),
                    "closing the longest-idle client connection to make room"
                );
                self.shedding.fetch_add(1, SeqCst);
                conn.shed.raise();
                true
            }
            None => false,
        }
    }

    /// Closes every connection past its head or keep-alive deadline; how many it closed.
    fn expire(&self, head_timeout: Duration, keep_alive: Duration) -> usize {
        let Ok(conns) = self.conns.lock() else {
            return 0;
        };
        let now = Instant::now();
        let mut closed = 0;
        for conn in conns.values() {
            let due = conn
                .deadline(head_timeout, keep_alive)
                .is_some_and(|deadline| deadline <= now);
            if due && !conn.shed.is_raised() {
                self.shedding.fetch_add(1, SeqCst);
                conn.shed.raise();
                closed += 1;
            }
        }
        closed
    }

    /// Marks every open connection aborted and closes it (see [`abort_at_the_end`]).
    fn abort_all(&self) {
        let Ok(conns) = self.conns.lock() else {
            return;
        };
        for conn in conns.values() {
            conn.aborted.store(true, SeqCst);
            if !conn.shed.is_raised() {
                self.shedding.fetch_add(1, SeqCst);
                conn.shed.raise();
            }
        }
    }

    /// Lets a connection in, to be served by `core` (counted there in `balance`).
    fn admit(&self, core: usize) -> Arc<Conn> {
        let admission = self.admission();
        let id = self.next_id.fetch_add(1, SeqCst);
        self.open.fetch_add(1, SeqCst);
        self.balance.opened(core);
        let conn = Arc::new(Conn {
            id,
            core,
            control_only: admission == Admission::ControlOnly,
            registry_epoch: self.epoch,
            active: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            upgraded: AtomicBool::new(false),
            held: AtomicBool::new(false),
            accepted_ms: AtomicU64::new(self.now_ms()),
            last_active_ms: AtomicU64::new(self.now_ms()),
            head_started_ms: AtomicU64::new(0),
            silent_since_ms: AtomicU64::new(0),
            shed: Signal::default(),
            stop: Signal::default(),
            aborted: AtomicBool::new(false),
            begun: Notify::new(),
        });
        if let Ok(mut conns) = self.conns.lock() {
            // Under the lock `stop_all` takes: no connection misses the stop.
            if self.stopping.load(SeqCst) {
                conn.stop.raise();
            }
            conns.insert(id, conn.clone());
        }
        conn
    }

    /// Hestia is shutting down: every connection stops after the request it is answering (the
    /// lane's; hyper's connections hear it from the shutdown token).
    fn stop_all(&self) {
        let conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        self.stopping.store(true, SeqCst);
        conns.values().for_each(|conn| conn.stop.raise());
    }

    fn remove(&self, conn: &Conn) {
        self.balance.closed(conn.core);
        if let Ok(mut conns) = self.conns.lock() {
            conns.remove(&conn.id);
        }
        if conn.shed.is_raised() {
            self.shedding.fetch_sub(1, SeqCst);
        }
        self.open.fetch_sub(1, SeqCst);
        self.closed.notify_waiters();
    }

    async fn wait_all_closed(&self) {
        loop {
            let closed = self.closed.notified();
            if self.open.load(SeqCst) == 0 {
                return;
            }
            closed.await;
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// One client connection, as the accept loop, its requests and its socket see it.
struct Conn {
    id: u64,
    /// The core serving it (its slot in [`Balance`]).
    core: usize,
    /// Let in beyond the cap: it may reach the control API only.
    control_only: bool,
    registry_epoch: Instant,
    /// Requests being answered (their response bodies not finished yet).
    active: AtomicUsize,
    /// At least one request was answered: between requests the keep-alive timeout applies.
    served: AtomicBool,
    /// Switched protocols (WebSocket): a tunnel now, no HTTP timeouts apply.
    upgraded: AtomicBool,
    /// Its first request is waiting for a lease before hyper reads it ([`early`]): under way,
    /// so no head timeout applies (the request's own deadline does).
    held: AtomicBool,
    accepted_ms: AtomicU64,
    /// When a request last ended (or the connection was accepted).
    last_active_ms: AtomicU64,
    /// When the first byte of the next request head arrived (0 = none yet).
    head_started_ms: AtomicU64,
    /// Since when the reader, looking while idle, has found nothing to read (0 = it has not
    /// looked since the last byte or request, or has not run yet): what shedding goes by.
    silent_since_ms: AtomicU64,
    /// Raised to close the connection at once (shed at the cap).
    shed: Signal,
    /// Raised when Hestia shuts down: close after the request under way.
    stop: Signal,
    /// Closed by an abort (the end of the shutdown grace): reset, not finished.
    aborted: AtomicBool,
    /// Told when a request head has been read (a permit is kept if nobody waits yet).
    begun: Notify,
}

impl Conn {
    fn now_ms(&self) -> u64 {
        // Never 0, which means "not set".
        (self.registry_epoch.elapsed().as_millis() as u64).max(1)
    }

    fn is_idle(&self) -> bool {
        self.active.load(SeqCst) == 0 && !self.upgraded.load(SeqCst) && !self.held.load(SeqCst)
    }

    /// A request head arrived: count it, give its body its progress timeout. On a connection let
    /// in beyond the cap, only the control API is served.
    fn begin(
        &self,
        request: Request<Incoming>,
        body_timeout: Duration,
    ) -> Result<Request<Body>, Box<Problem>> {
        self.started();
        if request.method() == Method::CONNECT {
            let detail = "CONNECT is not supported: Hestia is a gateway to its services \
                          (/services/<id>/...), not a forward proxy";
            let refused = Problem::new("invalid-request", StatusCode::METHOD_NOT_ALLOWED, detail);
            return Err(Box::new(refused));
        }
        if self.control_only && !is_control(request.uri().path()) {
            let detail = "Hestia has as many client connections open as it may \
                          (http.max_connections); only the control API answers on this one";
            // A 503 problem carries Retry-After.
            let overloaded = Problem::new("overloaded", StatusCode::SERVICE_UNAVAILABLE, detail);
            return Err(Box::new(overloaded));
        }
        let (parts, body) = request.into_parts();
        // A request without a body (most GETs) has no progress to watch, and needs no box.
        let body = if body.is_end_stream() {
            Body::empty()
        } else {
            Body::new(Progress::new(body, body_timeout))
        };
        Ok(Request::from_parts(parts, body))
    }

    /// A request head has been read: the request is under way.
    fn started(&self) {
        self.active.fetch_add(1, SeqCst);
        self.held.store(false, SeqCst);
        self.head_started_ms.store(0, SeqCst);
        self.begun.notify_one();
    }

    /// A request's answer was sent (or dropped): the connection is idle again, and silent from
    /// now on unless bytes of a next request come.
    fn end(&self) {
        self.last_active_ms.store(self.now_ms(), SeqCst);
        self.silent_since_ms.store(0, SeqCst);
        self.served.store(true, SeqCst);
        self.active.fetch_sub(1, SeqCst);
        self.nothing_to_read();
    }

    /// Bytes arrived from the client: when idle, they start the next request head.
    fn bytes_arrived(&self) {
        self.silent_since_ms.store(0, SeqCst);
        if self.is_idle() && self.head_started_ms.load(SeqCst) == 0 {
            self.head_started_ms.store(self.now_ms(), SeqCst);
        }
    }

    /// The reader found nothing to read: an idle connection between requests is silent from
    /// now on (unless it already was).
    fn nothing_to_read(&self) {
        if self.is_idle()
            && self.head_started_ms.load(SeqCst) == 0
            && self.silent_since_ms.load(SeqCst) == 0
        {
            self.silent_since_ms.store(self.now_ms(), SeqCst);
        }
    }

    /// When an idle connection is closed: `head_timeout` after a head began (or after connecting,
    /// for the first request), `keep_alive` after the last request ended. `None` while busy.
    fn deadline(&self, head_timeout: Duration, keep_alive: Duration) -> Option<Instant> {
        if !self.is_idle() {
            return None;
        }
        let at = |ms: u64, after: Duration| {
            Some(self.registry_epoch + Duration::from_millis(ms) + after)
        };
        match self.head_started_ms.load(SeqCst) {
            0 if self.served.load(SeqCst) => at(self.last_active_ms.load(SeqCst), keep_alive),
            0 => at(self.accepted_ms.load(SeqCst), head_timeout),
            started => at(started, head_timeout),
        }
    }
}

/// The control API: status, activity, start/stop, health and metrics (not the envelope, which
/// is a way to the services).
fn is_control(path: &str) -> bool {
    (path.starts_with("/v1/") && !path.starts_with("/v1/requests"))
        || matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Marks the end of a request when its response body is finished (or dropped).
struct RequestGuard(Arc<Conn>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// The client's request body, which must keep arriving: no frame for `timeout` while it is
/// being read ends it with [`ClientBodyError::Stalled`]; a malformed body is
/// [`ClientBodyError::Malformed`].
struct Progress {
    inner: Incoming,
    timeout: Duration,
    stall: Option<Pin<Box<Sleep>>>,
}

impl Progress {
    fn new(inner: Incoming, timeout: Duration) -> Progress {
        Progress {
            inner,
            timeout,
            stall: None,
        }
    }
}

impl HttpBody for Progress {
    type Data = bytes::Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.stall = None;
                Poll::Ready(frame.map(|f| f.map_err(ClientBodyError::Malformed)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match stall.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(ClientBodyError::Stalled(timeout)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client's socket, telling its connection when bytes arrive and when there are none to read
/// (what the timeouts and shedding go by); after the lane, it gives hyper what the lane read
/// and did not answer first.
struct Watched {
    stream: TcpStream,
    conn: Arc<Conn>,
    /// What the lane read and did not answer, handed over with the connection: hyper reads it
    /// first.
    unread: BytesMut,
}

impl Drop for Watched {
    fn drop(&mut self) {
        if self.conn.aborted.load(SeqCst) {
            // Linger 0: closing sends a reset instead of an orderly end of the stream.
            #[allow(deprecated)]
            let _ = self.stream.set_linger(Some(Duration::ZERO));
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.unread.is_empty() {
            let n = this.unread.len().min(buf.remaining());
            buf.put_slice(&this.unread.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        match read {
            Poll::Ready(Ok(())) if buf.filled().len() > before => this.conn.bytes_arrived(),
            Poll::Pending => this.conn.nothing_to_read(),
            Poll::Ready(_) => {}
        }
        read
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Raises the soft open-files limit to the hard one and returns the soft limit now in force
/// (`None` if it cannot be read).
pub fn raise_file_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

/// Open files kept for the database, logs, plugins, probes and backends' processes.
const RESERVED_FILES: u64 = 64;

/// The connection cap that fits `file_limit` open files. Each client connection holds one; each
/// request in flight to a backend one more, and those are bounded by `max_concurrency`:
/// `upstream_limit` is its sum over the services (`None` when a service has no limit), and the
/// upstream side never gets more than half. [`RESERVED_FILES`] are kept aside.
pub fn connections_for(file_limit: u64, upstream_limit: Option<u64>) -> usize {
    let usable = file_limit.saturating_sub(RESERVED_FILES);
    let upstream = upstream_limit.map_or(usable / 2, |limit| limit.min(usable / 2));
    usize::try_from(usable - upstream)
        .unwrap_or(usize::MAX)
        .max(16)
}

/// The listen queue asked of the kernel, which caps it at `net.core.somaxconn`: a burst of
/// clients waits there for the accept loop, instead of having its connection attempts dropped
/// and retried a second later (tokio's own default is 1,024).
const LISTEN_BACKLOG: u32 = 65_535;

/// Binds `addr` for the edge (with `SO_REUSEADDR`, as tokio does, and [`LISTEN_BACKLOG`]).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_leaves_room_for_upstreams_and_the_database() {
        // Without a limit on requests in flight upstream: half each.
        assert_eq!(connections_for(1024, None), 480);
        assert_eq!(connections_for(20_000, None), 9_968);
        assert_eq!(connections_for(50, None), 16);
        // With `max_concurrency` (64 for one service): what it bounds is kept, the rest is for
        // clients, so a burst of 10,000 fits in 20,000 files.
        assert_eq!(connections_for(1024, Some(64)), 896);
        assert_eq!(connections_for(20_000, Some(64)), 19_872);
        // Many services' limits together never take more than half.
        assert_eq!(connections_for(1024, Some(64_000)), 480);
    }

    #[test]
    fn only_the_control_api_is_served_beyond_the_cap() {
        for path in [
            "/v1/services",
            "/v1/services/echo/stop",
            "/healthz",
            "/readyz",
            "/metrics",
        ] {
            assert!(is_control(path), "{path}");
        }
        for path in [
            "/services/echo/",
            "/openai/v1/models",
            "/v1x",
            "/v1/requests",
        ] {
            assert!(!is_control(path), "{path}");
        }
    }
}
