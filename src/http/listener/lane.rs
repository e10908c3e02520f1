//! The fast lane: HTTP/1.1 requests without a body for `/services/...`, served without hyper's
//! server.
//!
//! Nearly every proxied request is a GET with a small head. hyper's server parses each into its
//! dispatcher's message, calls the service through its state machine and encodes the answer
//! from the header map again: a fifth of Hestia's instructions per request, and more than
//! nginx spends on a whole exchange. Here the connection's own task reads heads (`httparse`),
//! hands each request to the proxy, and writes the answer: its head in one buffer, and its body
//! frame by frame as the backend sends it, so streams pass through as they are produced.
//!
//! Anything else — a request with a body, an upgrade, HTTP/1.0, h2c, the API, a head too long
//! or malformed — hands the connection, with every byte read from it and not yet answered, to
//! hyper for the rest of its life ([`Ended::Handover`]). The lane never answers what it does not
//! recognise: hyper's answers to strange requests stay hyper's.

use std::io::{self, Write as _};
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, header};
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http_body_util::BodyExt;
use hyper::body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{CROWDED, Conn, Edge, RequestGuard, is_proxied};
use crate::http::early::Early;
use crate::http::proxy::{self, Peer};
use crate::http::upstream::{Field, Heads, Lines, has_token, write_line};

/// A head longer than this goes to hyper (whose limit is higher).
const MAX_HEAD: usize = 8 * 1024;
/// Headers a request on the lane may carry; more go to hyper.
const MAX_HEADERS: usize = 64;
/// Room made in the read buffer before each read.
const READ_AHEAD: usize = 4 * 1024;
/// Headers the proxy may add to a request's map before it goes upstream.
const ADDED_BY_PROXY: usize = 2;
/// A body frame up to this size is copied beside its head (or chunk line) and written with it;
/// a larger one is written on its own.
const COPY_UNDER: usize = 16 * 1024;

/// How the lane left a connection.
pub(super) enum Ended {
    /// It is done: the client closed it or asked to, an answer could not be finished, or
    /// Hestia is shutting down.
    Closed,
    /// hyper serves the rest, starting with these bytes (read from the client, not answered).
    Handover(BytesMut),
}

/// What the lane serves a connection with.
pub(super) struct Lane<'a> {
    pub(super) edge: &'a Edge,
    pub(super) conn: &'a Arc<Conn>,
    pub(super) peer: &'a Peer,
    /// The admission the connection's first request waited for, if it did.
    pub(super) early: Option<Early>,
}

impl Lane<'_> {
    /// Serves requests from `io` until the connection ends or something comes that hyper must
    /// serve; `early`, if still there, is for hyper's first request.
    pub(super) async fn serve<IO>(&mut self, io: &mut IO) -> Ended
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let mut read = BytesMut::new();
        let mut out = Vec::new();
        let stop = self.conn.stop.raised();
        tokio::pin!(stop);
        loop {
            match next(&mut read, self.edge) {
                Next::Hyper => return Ended::Handover(read),
                Next::Partial if read.len() >= MAX_HEAD => return Ended::Handover(read),
                Next::Partial => {
                    read.reserve(READ_AHEAD);
                    // Between requests, shutting down closes the connection (as hyper's graceful
                    // shutdown does); a head under way is read to its end first.
                    let got = tokio::select! {
                        biased;
                        got = io.read_buf(&mut read) => got,
                        () = &mut stop, if read.is_empty() => return Ended::Closed,
                    };
                    match got {
                        Ok(0) if read.is_empty() => return Ended::Closed,
                        // A head cut off: hyper answers what can be answered of it.
                        Ok(0) => return Ended::Handover(read),
                        Ok(_) => {}
                        Err(_) => return Ended::Closed,
                    }
                }
                Next::Request { request, close } => {
                    if !self.answer(io, request, close, &mut read, &mut out).await {
                        return Ended::Closed;
                    }
                }
            }
        }
    }

    /// Answers `request`; false when the connection must close after it (the client asked or
    /// hung up, a crowd, shutdown, or the answer could not be written whole). Bytes of the next
    /// request that arrive meanwhile are kept in `read`.
    async fn answer<IO>(
        &mut self,
        io: &mut IO,
        request: Request<Body>,
        close: bool,
        read: &mut BytesMut,
        out: &mut Vec<u8>,
    ) -> bool
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.conn.started();
        // The request is open until its answer has been written (or abandoned).
        let _guard = RequestGuard(self.conn.clone());
        let head_only = request.method() == Method::HEAD;
        // Pinned where it is made: `select!` then moves a reference, not the whole future.
        let proxied = std::pin::pin!(proxy::direct(
            &self.edge.state,
            request,
            self.early.take(),
            Some(self.peer.clone()),
            Heads::Raw,
        ));
        // A client that hangs up while its request waits (for a cold start, a slot, the
        // backend) takes the request with it, as hyper's server does: it leaves the queue.
        let response = tokio::select! {
            biased;
            response = proxied => response,
            () = hang_up(io, read) => return false,
        };
        // An idle keep-alive connection holds its buffers: in a crowd, each answer ends its
        // connection instead (as on hyper's side).
        let close =
            close || self.conn.stop.is_raised() || self.edge.registry.open.load(SeqCst) > CROWDED;
        match write_answer(io, response, head_only, close, out).await {
            Ok(whole) => whole && !close,
            Err(error) => {
                unwritten(&error);
                false
            }
        }
    }
}

#[cold]
#[inline(never)]
fn unwritten(error: &io::Error) {
    tracing::debug!(%error, "writing an answer to the client failed");
}

/// Resolves when the client closes the connection (or it fails) while a request is under way.
/// What arrives before that (a next request) is kept in `read`; past [`MAX_HEAD`] of it, the
/// connection is no longer watched (the answer comes first).
async fn hang_up<IO: AsyncRead + Unpin>(io: &mut IO, read: &mut BytesMut) {
    while read.len() < MAX_HEAD {
        // No room made: the request's head still shares the buffer (`read_buf` grows it if
        // need be), and between requests the serve loop makes room in the whole of it again.
        match io.read_buf(read).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    std::future::pending().await
}

/// What the read buffer holds next (a value on the stack, returned once per request).
#[allow(clippy::large_enum_variant)]
enum Next {
    /// A request for the lane, its head taken off the buffer; `close` when the client asked for
    /// the connection to end after it.
    Request { request: Request<Body>, close: bool },
    /// The start of a head: read more.
    Partial,
    /// Something for hyper (left in the buffer as it came).
    Hyper,
}

/// The next request in `read`, if it is one for the lane.
fn next(read: &mut BytesMut, edge: &Edge) -> Next {
    if read.is_empty() {
        return Next::Partial;
    }
    // Slots left uninitialised: zeroing 64 of them costs more than parsing a small head.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        read,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Next::Partial,
        // Malformed, or too many headers: hyper's answer.
        Err(_) => return Next::Hyper,
    };
    let (Some(method), Some(path), Some(1)) = (parsed.method, parsed.path, parsed.version) else {
        return Next::Hyper;
    };
    if method == "CONNECT" || !is_proxied(path) {
        return Next::Hyper;
    }
    // Where each part lies in the head, to slice it out once the head is frozen.
    let start = read.as_ptr() as usize;
    let at = |part: &[u8]| {
        let from = part.as_ptr() as usize - start;
        from..from + part.len()
    };
    let mut close = false;
    let mut host = None;
    let mut fields = Vec::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        match Field::of(field.name.as_bytes()) {
            Field::Host => host = Some(field.value),
            Field::Connection => close |= has_token(field.value, b"close"),
            Field::ContentLength if field.value.trim_ascii() == b"0" => {}
            // A body, an upgrade or an expectation: hyper's.
            Field::ContentLength | Field::TransferEncoding | Field::Upgrade | Field::Expect => {
                return Next::Hyper;
            }
            // Passed on; the proxy drops what is for this hop only.
            Field::HopByHop | Field::Proxys | Field::Date | Field::Other => {}
        }
        let Ok(name) = HeaderName::from_bytes(field.name.as_bytes()) else {
            return Next::Hyper;
        };
        fields.push((name, at(field.value)));
    }
    let host = host.and_then(|host| std::str::from_utf8(host).ok());
    if !edge.state.auth.waves_through_host(host) {
        return Next::Hyper;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Next::Hyper;
    };
    let target = at(path.as_bytes());
    let head = read.split_to(len).freeze();
    match request_of(method, &head, target, fields) {
        Some(request) => Next::Request { request, close },
        None => {
            // Not a valid URI or header value after all: hyper answers it, from the same bytes.
            let rest = read.split();
            read.extend_from_slice(&head);
            read.unsplit(rest);
            Next::Hyper
        }
    }
}

/// The request a head holds; values and the target share the head's bytes.
fn request_of(
    method: Method,
    head: &Bytes,
    target: std::ops::Range<usize>,
    fields: Vec<(HeaderName, std::ops::Range<usize>)>,
) -> Option<Request<Body>> {
    let uri = Uri::from_maybe_shared(head.slice(target)).ok()?;
    // Room for what the proxy adds (the request id, above all): growing a map rehashes it.
    let mut headers = HeaderMap::with_capacity(fields.len() + ADDED_BY_PROXY);
    for (name, value) in fields {
        let value = HeaderValue::from_maybe_shared(head.slice(value)).ok()?;
        headers.append(name, value);
    }
    let mut request = Request::new(Body::empty());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Some(request)
}

/// Writes `response` as HTTP/1.1: its head (with `connection: close` when `close`), then its
/// body as it comes, framed by its length when that is known and chunked when not. `Ok(false)`
/// when the body failed part way: the client must see the connection end, not a complete
/// answer.
async fn write_answer<IO>(
    io: &mut IO,
    response: Response<Body>,
    head_only: bool,
    close: bool,
    out: &mut Vec<u8>,
) -> io::Result<bool>
where
    IO: AsyncWrite + Unpin,
{
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    let bodiless = head_only || status.is_informational() || matches!(status.as_u16(), 204 | 304);
    let length = if bodiless {
        None
    } else {
        body.size_hint().exact()
    };
    let chunked = !bodiless && length.is_none();
    // An answer read inline keeps the backend's header lines as they were ([`Lines`]); the map
    // then holds only what the proxy added.
    let lines = parts.extensions.get::<Lines>();
    let said_length = lines.is_some_and(|lines| lines.has_length);
    out.clear();
    write_status_line(out, status);
    let mut dated = false;
    if let Some(lines) = lines {
        out.extend_from_slice(&lines.block);
        dated = lines.has_date;
    }
    for (name, value) in &parts.headers {
        dated |= name == header::DATE;
        // Framing is this hop's, and said below; a bodiless answer keeps its `content-length`.
        let framing = *name == header::TRANSFER_ENCODING
            || *name == header::CONNECTION
            || (!bodiless && *name == header::CONTENT_LENGTH);
        if !framing {
            write_line(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    if let Some(length) = length.filter(|_| !said_length) {
        write_line(
            out,
            b"content-length",
            itoa::Buffer::new().format(length).as_bytes(),
        );
    }
    if chunked {
        write_line(out, b"transfer-encoding", b"chunked");
    }
    if !dated {
        date::with_now(|now| write_line(out, b"date", now));
    }
    if close {
        write_line(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    if bodiless {
        drop(body);
        io.write_all(out).await?;
        return Ok(true);
    }
    loop {
        // A frame there already goes out with what is waiting (the head, most often); else what
        // is waiting goes now, so a stream's head or event is never held back for the next.
        let frame = match body.frame().now_or_never() {
            Some(frame) => frame,
            None => {
                flush(io, out).await?;
                body.frame().await
            }
        };
        match frame {
            None => {
                if chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                flush(io, out).await?;
                return Ok(true);
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    // Trailers: an HTTP/1.1 client did not ask for them (`te: trailers`).
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                if chunked {
                    // Into the buffer, not through a `String` per chunk.
                    let _ = write!(out, "{:x}\r\n", data.len());
                }
                if data.len() < COPY_UNDER {
                    out.extend_from_slice(&data);
                } else {
                    flush(io, out).await?;
                    io.write_all(&data).await?;
                }
                if chunked {
                    out.extend_from_slice(b"\r\n");
                }
            }
            Some(Err(error)) => {
                tracing::debug!(%error, "an answer's body failed part way; closing the connection");
                flush(io, out).await?;
                return Ok(false);
            }
        }
    }
}

/// Writes what is waiting in `out`, and empties it.
async fn flush<IO: AsyncWrite + Unpin>(io: &mut IO, out: &mut Vec<u8>) -> io::Result<()> {
    if !out.is_empty() {
        io.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

fn write_status_line(out: &mut Vec<u8>, status: axum::http::StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The `date` header's value, made once a second per thread (as hyper does).
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static NOW: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }

    /// Calls `write` with the current date, as an HTTP date.
    pub(super) fn with_now(write: impl FnOnce(&[u8])) {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        NOW.with(|cached| {
            let mut cached = cached.borrow_mut();
            if cached.0 != second || cached.1.is_empty() {
                *cached = (second, httpdate::fmt_http_date(now));
            }
            write(cached.1.as_bytes());
        });
    }
}
