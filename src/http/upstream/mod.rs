//! Connections to the backends: a pool per backend address and run of a service, over hyper's
//! connection-level client (`hyper::client::conn`), with nothing between a request and its
//! connection but a lock on a short stack.
//!
//! - Idle HTTP/1.1 connections wait on a LIFO stack (the warmest first), one stack per core
//!   ([`hestia_actors::per_core`]), so a request, its connection's task and its answer stay on
//!   one thread.
//! - A connection goes back on the stack when its answer's body has ended ([`Returning`]); one
//!   whose answer was cut short, or that switched protocols, is not reused.
//! - A request that never left Hestia (no connection could be made, or the pooled one closed
//!   before the request was written) comes back whole in [`Failure::Unsent`], body included, so
//!   the caller can send it again without having cloned anything.
//! - An HTTP/2 backend (`upstream_http2`) gets one multiplexed connection per core.
//! - A request without a body is exchanged by [`h1`] in the request's own task; hyper's client
//!   carries the rest. Both kinds of HTTP/1.1 connection share the idle stack, and a socket
//!   [`h1`] used can be handed to hyper for a request with a body.

mod h1;

pub use h1::{Field, Lines, has_token, write_line};

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, header};
use hestia_actors::per_core::PerCore;
use http_body_util::Limited;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use thiserror::Error;
use tokio::net::TcpStream;

use crate::http::request_id::REQUEST_ID;

/// A client's request body on its way upstream: read as it arrives, never more than the limit.
pub type Outgoing = Limited<Body>;

/// How long one attempt to connect to a backend may take. A backend whose listen queue is full
/// drops the SYN, and the kernel would send it again only after 1, 3, 7, 15, 31 s; a fresh
/// attempt each second instead gets in soon after the queue has room. No round trip to a
/// backend takes a second.
const CONNECT_ATTEMPT: Duration = Duration::from_secs(1);
/// Idle connections kept per core and backend address.
const MAX_IDLE: usize = 256;
/// An idle connection unused for this long is closed (backends close theirs after a while).
const IDLE_FOR: Duration = Duration::from_secs(90);

/// Why no connection could carry a request.
#[derive(Debug, Error)]
pub enum ConnectError {
    #[error("connecting to {address} timed out after {CONNECT_ATTEMPT:?}")]
    TimedOut { address: String },
    #[error("cannot connect to {address}: {source}")]
    Io {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the connection to {address} failed at its start: {source}")]
    Handshake {
        address: String,
        #[source]
        source: hyper::Error,
    },
    #[error("the connection to {address} closed before the request could be written")]
    Closed { address: String },
}

impl ConnectError {
    /// The backend never answered (as opposed to refusing): worth another attempt.
    pub fn timed_out(&self) -> bool {
        matches!(self, ConnectError::TimedOut { .. })
    }
}

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// The headers the proxy sets on a request going upstream, worked out once from the client's
/// request: the `x-forwarded-*` headers — who it came from (appended to any `x-forwarded-for` it
/// carried), the host it asked for (its `host` header is the backend's upstream), `http`, and
/// the service's prefix — and its `x-request-id`. Each replaces the client's own header of that
/// name; one with nothing to say leaves the client's.
pub struct Forwarded {
    fields: [(HeaderName, Option<HeaderValue>); 5],
}

impl Forwarded {
    /// For a request that came through the proxies in `earlier` (its `x-forwarded-for`), from
    /// `client` (its address, as a header value) to `host`, for a service under `prefix`, known
    /// as `request_id`.
    pub fn new(
        earlier: Option<&HeaderValue>,
        client: Option<HeaderValue>,
        host: Option<HeaderValue>,
        prefix: Option<HeaderValue>,
        request_id: Option<HeaderValue>,
    ) -> Forwarded {
        let chain = client.and_then(|client| match earlier.and_then(|v| v.to_str().ok()) {
            Some(earlier) => {
                let ip = client.to_str().unwrap_or_default();
                HeaderValue::from_str(&format!("{earlier}, {ip}")).ok()
            }
            None => Some(client),
        });
        Forwarded {
            fields: [
                (X_FORWARDED_FOR, chain),
                (X_FORWARDED_HOST, host),
                (X_FORWARDED_PROTO, Some(HeaderValue::from_static("http"))),
                (X_FORWARDED_PREFIX, prefix),
                (REQUEST_ID, request_id),
            ],
        }
    }

    /// The headers to send, by name.
    fn each(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.fields
            .iter()
            .filter_map(|(name, value)| Some((name, value.as_ref()?)))
    }

    /// True when `name` is one of these headers, replacing the client's own.
    fn replaces(&self, name: &HeaderName) -> bool {
        let ours = name.as_str().starts_with("x-forwarded-") || name == REQUEST_ID;
        ours && self.each().any(|(ours, _)| ours == name)
    }

    /// Sets them in `headers` (the client's `host` goes: it became `x-forwarded-host`).
    fn set_in(&self, headers: &mut HeaderMap) {
        headers.remove(header::HOST);
        // Room for all at once: the map grows once, not per insert.
        headers.reserve(self.fields.len());
        for (name, value) in self.each() {
            headers.insert(name, value.clone());
        }
    }
}

/// How an answer's headers are handed on from an HTTP/1.1 exchange done inline ([`h1`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heads {
    /// In the response's header map.
    Map,
    /// As the lines to pass on to an HTTP/1.1 client ([`h1::Lines`], in the response's
    /// extensions), the header map left empty: for the listener's lane, which writes them
    /// as they are instead of parsing them into a map and encoding the map again.
    Raw,
}

/// A request that could not be answered.
#[derive(Debug)]
pub enum Failure {
    /// Nothing of it left Hestia: here it is again, to send elsewhere or later.
    Unsent {
        request: Box<Request<Outgoing>>,
        error: ConnectError,
    },
    /// It was (at least partly) sent; the exchange failed.
    Sent(ExchangeError),
}

/// An exchange that failed once the request had (at least partly) gone out, or an answer's body
/// that could not be read to its end.
#[derive(Debug, Error)]
pub enum ExchangeError {
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    #[error(transparent)]
    H1(#[from] h1::Error),
}

/// The connections to one backend address (`host:port`) for one run of a service.
pub struct Pool {
    address: String,
    /// The `host` header every request to this address carries.
    host: HeaderValue,
    http2: bool,
    /// One stack per core, and a last one for threads that are not a core's.
    idle: PerCore<Mutex<Vec<Idle>>>,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// A connection as it waits on the idle stack.
enum Sender {
    /// An HTTP/1.1 connection driven by hyper's client, in a task of its own.
    Http1(http1::SendRequest<Outgoing>),
    Http2(http2::SendRequest<Outgoing>),
    /// An HTTP/1.1 socket [`h1`] exchanges on, in the requests' own tasks.
    H1(h1::Conn),
}

/// A connection that can carry the request at hand.
enum Carrier {
    Hyper(HyperSender),
    H1(h1::Conn),
}

enum HyperSender {
    Http1(http1::SendRequest<Outgoing>),
    Http2(http2::SendRequest<Outgoing>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(sender) => sender.is_closed(),
            Sender::Http2(sender) => sender.is_closed(),
            // Nothing watches an idle socket: checking it out looks ([`h1::Conn::is_usable`]).
            Sender::H1(_) => false,
        }
    }
}

impl HyperSender {
    async fn send(
        &mut self,
        request: Request<Outgoing>,
    ) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<Outgoing>>> {
        match self {
            HyperSender::Http1(sender) => sender.try_send_request(request).await,
            HyperSender::Http2(sender) => sender.try_send_request(request).await,
        }
    }
}

impl Pool {
    /// A pool for `address` (`host:port`, as in the service's URL).
    pub fn new(address: &str, http2: bool) -> Option<Arc<Pool>> {
        let host = HeaderValue::from_str(address).ok()?;
        Some(Arc::new(Pool {
            address: address.to_owned(),
            host,
            http2,
            idle: PerCore::default(),
        }))
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends `request` (origin-form URI) on an idle connection, or on a new one. The answer's
    /// body gives its connection back to the pool when it ends.
    ///
    /// `forwarded` goes with it: written beside its headers when [`h1`] carries it, set in its
    /// header map for hyper's client (so a request that comes back [`Failure::Unsent`] may
    /// have them already: setting them again changes nothing). `heads` says how an answer
    /// [`h1`] reads keeps its headers (hyper's always come in the map).
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Outgoing>,
        forwarded: &Forwarded,
        heads: Heads,
    ) -> Result<Response<Answer>, Failure> {
        let inline = !self.http2 && h1::can_carry(&request);
        if !inline {
            let headers = request.headers_mut();
            forwarded.set_in(headers);
            headers.insert(header::HOST, self.host.clone());
        }
        loop {
            let (carrier, reused) = match self.checkout(inline).await {
                Some(idle) => (idle, true),
                // Boxed: a new connection is the rare case, and its future the largest part of
                // every request's (moved with it into the connection's task).
                None => match Box::pin(self.connect(inline)).await {
                    Ok(new) => (new, false),
                    Err(error) => {
                        let request = Box::new(request);
                        return Err(Failure::Unsent { request, error });
                    }
                },
            };
            match carrier {
                Carrier::H1(mut conn) => {
                    let asked = conn.prepare(&request, &self.host, forwarded, heads);
                    match conn.exchange(asked, reused).await {
                        Ok(head) => {
                            return match head.into_response(conn, self.clone()) {
                                Ok(response) => Ok(response.map(Answer::H1)),
                                Err(error) => Err(Failure::Sent(error.into())),
                            };
                        }
                        // The backend closed an idle connection as the request went out: the next.
                        Err(failed) if failed.again && reused => {}
                        Err(failed) if failed.again => return Err(self.unsent(request)),
                        Err(failed) => return Err(Failure::Sent(failed.error.into())),
                    }
                }
                Carrier::Hyper(mut sender) => match sender.send(request).await {
                    Ok(response) => {
                        let checkin = self.checkin(sender);
                        return Ok(
                            response.map(|body| Answer::Hyper(Returning::new(body, checkin)))
                        );
                    }
                    Err(mut error) => match error.take_message() {
                        // An idle one closed before the request was written: the next one.
                        Some(unsent) if reused => request = unsent,
                        Some(unsent) => return Err(self.unsent(unsent)),
                        None => return Err(Failure::Sent(error.into_error().into())),
                    },
                },
            }
        }
    }

    /// `request`, which a new connection closed before it could be written.
    fn unsent(&self, request: Request<Outgoing>) -> Failure {
        let address = self.address.clone();
        Failure::Unsent {
            request: Box::new(request),
            error: ConnectError::Closed { address },
        }
    }

    fn stack(&self) -> &Mutex<Vec<Idle>> {
        self.idle.mine().1
    }

    /// The warmest idle connection that still works (an HTTP/2 one is shared, not taken). An
    /// [`h1`] socket is handed to hyper's client unless the request is `inline` ([`h1`]'s).
    async fn checkout(&self, inline: bool) -> Option<Carrier> {
        loop {
            let idle = {
                let mut stack = self.stack().lock().unwrap_or_else(|p| p.into_inner());
                match stack.last() {
                    Some(Idle {
                        sender: Sender::Http2(shared),
                        ..
                    }) if !shared.is_closed() => {
                        return Some(Carrier::Hyper(HyperSender::Http2(shared.clone())));
                    }
                    _ => stack.pop()?,
                }
            };
            match idle.sender {
                Sender::Http2(_) => {}
                Sender::Http1(mut sender) => {
                    // One whose last answer just ended may need a moment to be ready.
                    if !sender.is_closed() && sender.ready().await.is_ok() {
                        return Some(Carrier::Hyper(HyperSender::Http1(sender)));
                    }
                }
                Sender::H1(mut conn) => {
                    if !conn.is_usable() {
                        continue;
                    }
                    if inline {
                        return Some(Carrier::H1(conn));
                    }
                    if let Ok(sender) = self.handshake_http1(conn.into_stream()).await {
                        return Some(Carrier::Hyper(HyperSender::Http1(sender)));
                    }
                }
            }
        }
    }

    /// What gives `sender` back once the answer is done with it (nothing to give back for a
    /// shared HTTP/2 connection).
    fn checkin(self: &Arc<Self>, sender: HyperSender) -> Checkin {
        match sender {
            HyperSender::Http1(sender) => Checkin(Some((self.clone(), Sender::Http1(sender)))),
            HyperSender::Http2(_) => Checkin(None),
        }
    }

    fn give_back(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut stack = self.stack().lock().unwrap_or_else(|p| p.into_inner());
        // The coldest are at the bottom: close those idle too long, and keep the stack bounded.
        let stale = stack
            .iter()
            .take_while(|idle| now.duration_since(idle.since) > IDLE_FOR)
            .count();
        let over = (stack.len() + 1).saturating_sub(MAX_IDLE);
        stack.drain(..stale.max(over));
        stack.push(Idle { sender, since: now });
    }

    /// A new connection: an [`h1`] socket for an `inline` request, else hyper's, its task
    /// spawned on this thread's runtime.
    async fn connect(&self, inline: bool) -> Result<Carrier, ConnectError> {
        let address = || self.address.clone();
        let stream =
            match tokio::time::timeout(CONNECT_ATTEMPT, TcpStream::connect(&*self.address)).await {
                Err(_) => return Err(ConnectError::TimedOut { address: address() }),
                Ok(Err(source)) => {
                    return Err(ConnectError::Io {
                        address: address(),
                        source,
                    });
                }
                Ok(Ok(stream)) => stream,
            };
        let _ = stream.set_nodelay(true);
        if self.http2 {
            let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|source| ConnectError::Handshake {
                    address: address(),
                    source,
                })?;
            tokio::spawn(connection);
            let mut stack = self.stack().lock().unwrap_or_else(|p| p.into_inner());
            stack.retain(|idle| !idle.sender.is_closed());
            stack.push(Idle {
                sender: Sender::Http2(sender.clone()),
                since: Instant::now(),
            });
            return Ok(Carrier::Hyper(HyperSender::Http2(sender)));
        }
        if inline {
            return Ok(Carrier::H1(h1::Conn::new(stream)));
        }
        let sender = self.handshake_http1(stream).await?;
        Ok(Carrier::Hyper(HyperSender::Http1(sender)))
    }

    /// hyper's HTTP/1.1 client on `stream`, its connection's task spawned on this runtime.
    async fn handshake_http1(
        &self,
        stream: TcpStream,
    ) -> Result<http1::SendRequest<Outgoing>, ConnectError> {
        let (sender, connection) =
            http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|source| ConnectError::Handshake {
                    address: self.address.clone(),
                    source,
                })?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// An answer's body, from whichever client read its head.
pub enum Answer {
    Hyper(Returning),
    H1(h1::Body),
}

impl HttpBody for Answer {
    type Data = bytes::Bytes;
    type Error = ExchangeError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.get_mut() {
            Answer::Hyper(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|r| r.map_err(ExchangeError::from))),
            Answer::H1(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|r| r.map_err(ExchangeError::from))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Answer::Hyper(body) => body.is_end_stream(),
            Answer::H1(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Answer::Hyper(body) => body.size_hint(),
            Answer::H1(body) => body.size_hint(),
        }
    }
}

/// An HTTP/1.1 connection lent to one exchange, to give back when its answer has ended.
pub struct Checkin(Option<(Arc<Pool>, Sender)>);

impl Checkin {
    fn give_back(&mut self) {
        if let Some((pool, sender)) = self.0.take() {
            pool.give_back(sender);
        }
    }
}

/// An answer's body that gives its connection back to the pool once it has been read to its
/// end (dropped before that, the connection is not reused).
pub struct Returning {
    body: Incoming,
    checkin: Checkin,
}

impl Returning {
    pub fn new(body: Incoming, mut checkin: Checkin) -> Returning {
        // An answer without a body (HEAD, 204, 304) is done already: the server may never poll it.
        if body.is_end_stream() {
            checkin.give_back();
        }
        Returning { body, checkin }
    }
}

impl HttpBody for Returning {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.checkin.give_back(),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.checkin.give_back(),
            Poll::Ready(Some(Err(_))) => self.checkin.0 = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
