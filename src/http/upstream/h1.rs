//! HTTP/1.1 exchanges for requests without a body (most GETs), done in the request's own task.
//!
//! hyper's client runs each connection in a task of its own: every request crosses a channel to
//! it and its answer comes back through a `oneshot`, two extra wake-ups per request, and the
//! head goes through hyper's encoder and parser on top of the proxy's own work. For a request
//! with no body there is nothing to send while the answer arrives, so this does the exchange
//! inline: the head is written from the request's parts straight to the socket, the answer's
//! head is parsed with `httparse` (header values are slices of the read buffer, not copies), and
//! its body is read from the socket as the client's side polls it ([`Body`]). hyper's client
//! keeps everything else: request bodies, upgrades, HTTP/1.0 and HTTP/2.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version, header,
};
use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Forwarded, Heads, Outgoing, Pool, Sender};

/// The most an answer's head (or a chunked body's trailers) may take.
const MAX_HEAD: usize = 256 * 1024;
/// Headers an answer may carry.
const MAX_HEADERS: usize = 128;
/// Bytes left free in an answer's [`Lines`] for the headers the proxy adds to it.
const ROOM_FOR_THE_PROXY: usize = 64;
/// A chunk-size line longer than this (extensions included) is malformed.
const MAX_CHUNK_LINE: usize = 4096;
/// Room made in the read buffer before each read.
const READ_AHEAD: usize = 8 * 1024;

/// What went wrong in an exchange.
#[derive(Debug, Error)]
pub enum Error {
    #[error("writing the request to the backend failed: {0}")]
    Write(#[source] io::Error),
    #[error("reading the backend's answer failed: {0}")]
    Read(#[source] io::Error),
    #[error("the backend closed the connection before its answer was complete")]
    Closed,
    #[error("the backend's answer head is malformed: {0}")]
    Head(httparse::Error),
    #[error("the backend's answer head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("the backend switched protocols though the request did not ask to")]
    UnaskedUpgrade,
    #[error("the backend's answer has an invalid content-length")]
    Length,
    #[error("the backend's answer has a malformed chunk")]
    Chunk,
}

/// Why an exchange failed, and whether the request can go again on another connection: only
/// when the backend cannot have acted on it (writing failed, or it closed the connection
/// before a byte of an answer and the method is idempotent, RFC 9110 §9.2.2).
#[derive(Debug)]
pub(super) struct Failed {
    pub(super) error: Error,
    pub(super) again: bool,
}

/// What the exchange needs to know of the request it sent.
#[derive(Clone, Copy)]
pub(super) struct Asked {
    /// A `HEAD` request: the answer has no body, whatever its headers say.
    head_only: bool,
    idempotent: bool,
    heads: Heads,
}

/// A connection carrying these exchanges: the socket, and what was read of it and not yet used.
pub(super) struct Conn {
    stream: TcpStream,
    read: BytesMut,
    /// The request head being written; kept to be reused.
    head: Vec<u8>,
}

/// True when this module can carry `request` ([`super::Pool::send`] gives it everything else).
pub(super) fn can_carry(request: &Request<Outgoing>) -> bool {
    request.version() == Version::HTTP_11
        && request.body().is_end_stream()
        && request.method() != Method::CONNECT
        && !request.headers().contains_key(header::UPGRADE)
}

impl Conn {
    pub(super) fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            read: BytesMut::new(),
            head: Vec::new(),
        }
    }

    /// Hands the socket over (to hyper's client, for a request this module cannot carry).
    pub(super) fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Whether an idle connection can carry another request: the backend has not closed it,
    /// and has sent nothing unasked.
    ///
    /// The socket is read only if the runtime saw something happen on it since its last answer
    /// was read to the end ([`Conn::poll_fill`] leaves it marked not ready then): a close, or
    /// bytes nobody asked for. A quiet socket costs no system call.
    pub(super) fn is_usable(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut quiet = Context::from_waker(std::task::Waker::noop());
        if self.stream.poll_read_ready(&mut quiet).is_pending() {
            return true;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Writes `request`'s head (origin-form target, no body) with `host` into the connection's
    /// buffer, for [`Conn::exchange`] to send. (The request itself is not held across the
    /// exchange's awaits: its body is not `Sync`.)
    pub(super) fn prepare(
        &mut self,
        request: &Request<Outgoing>,
        host: &HeaderValue,
        forwarded: &Forwarded,
        heads: Heads,
    ) -> Asked {
        write_head(&mut self.head, request, host, forwarded);
        Asked {
            head_only: request.method() == Method::HEAD,
            idempotent: request.method().is_idempotent(),
            heads,
        }
    }

    /// Sends the prepared request and reads its answer's head. The body is left to be read from
    /// [`Body`].
    pub(super) async fn exchange(&mut self, asked: Asked, reused: bool) -> Result<Head, Failed> {
        if let Err(error) = self.stream.write_all(&self.head).await {
            return Err(Failed {
                error: Error::Write(error),
                again: true,
            });
        }
        loop {
            let head = match self.read_head(asked.heads).await {
                Ok(head) => head,
                Err(Error::Closed) if self.read.is_empty() && reused && asked.idempotent => {
                    // The backend closed the idle connection as the request went out.
                    return Err(Failed {
                        error: Error::Closed,
                        again: true,
                    });
                }
                Err(error) => {
                    return Err(Failed {
                        error,
                        again: false,
                    });
                }
            };
            match head.status.as_u16() {
                101 => {
                    return Err(Failed {
                        error: Error::UnaskedUpgrade,
                        again: false,
                    });
                }
                // An interim answer (100 Continue, 103 Early Hints): the final one follows.
                100..=199 => continue,
                _ => return Ok(head.framed(asked.head_only)),
            }
        }
    }

    /// Reads until an answer's head is complete, and parses it.
    async fn read_head(&mut self, heads: Heads) -> Result<Parsed, Error> {
        loop {
            if !self.read.is_empty()
                && let Some(parsed) = parse_head(&mut self.read, heads)?
            {
                return Ok(parsed);
            }
            if self.read.len() >= MAX_HEAD {
                return Err(Error::HeadTooLarge);
            }
            if std::future::poll_fn(|cx| self.poll_fill(cx)).await? == 0 {
                return Err(Error::Closed);
            }
        }
    }

    /// Reads what the socket has into the buffer: `0` when the backend closed the connection.
    ///
    /// Through `AsyncRead`, which marks the socket not ready after a read that did not fill the
    /// buffer (the kernel had no more), so the next [`Conn::is_usable`] needs no system call.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, Error>> {
        self.read.reserve(READ_AHEAD);
        let read = std::pin::pin!(self.stream.read_buf(&mut self.read));
        read.poll(cx).map_err(Error::Read)
    }
}

/// `METHOD target HTTP/1.1`, `host`, the request's headers as they are (their names and values
/// were validated when they were parsed or made, so none can end the head early), then the
/// `x-forwarded-*` headers in place of any the client sent.
fn write_head(
    out: &mut Vec<u8>,
    request: &Request<Outgoing>,
    host: &HeaderValue,
    forwarded: &Forwarded,
) {
    out.clear();
    let method = request.method();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    let headers = request.headers();
    let mine = headers
        .iter()
        .filter(|(name, _)| *name != header::HOST && !forwarded.replaces(name));
    for (name, value) in mine.chain(forwarded.each()) {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // A method whose request normally has a body says that this one is empty (as hyper does).
    let expects_body = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    if expects_body && !headers.contains_key(header::CONTENT_LENGTH) {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// An answer's head as parsed, before its body's framing is known.
struct Parsed {
    status: StatusCode,
    version: Version,
    /// The headers in a map ([`Heads::Map`]), or none: they are in `lines`.
    headers: HeaderMap,
    lines: Option<Lines>,
    /// What the framing headers said, gathered before the headers were kept (no lookups after).
    said: Said,
}

/// An answer's header lines as they go on to an HTTP/1.1 client, kept as the backend wrote them
/// ([`Heads::Raw`]): one buffer, no header map. Left out are the hop-by-hop headers, a
/// `content-length` that `transfer-encoding` overrides, and the headers the proxy sets itself
/// (`x-request-id`, `x-hestia-cold-start-ms`). It rides in the response's extensions.
#[derive(Clone, Debug)]
pub struct Lines {
    /// `name: value\r\n` for each header kept.
    pub block: Vec<u8>,
    /// A `content-length` is among them (the body is framed by it).
    pub has_length: bool,
    pub has_date: bool,
}

impl Lines {
    /// Adds a header the proxy sets on the answer (valid by construction, as a `HeaderName` and
    /// a `HeaderValue` are).
    pub fn append(&mut self, name: &HeaderName, value: &HeaderValue) {
        write_line(&mut self.block, name.as_str().as_bytes(), value.as_bytes());
    }
}

/// Whether a comma-separated header value lists `token` (any case).
pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// `name: value\r\n`: a header line as the lane and [`Lines`] write it.
#[inline]
pub fn write_line(block: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    block.extend_from_slice(name);
    block.extend_from_slice(b": ");
    block.extend_from_slice(value);
    block.extend_from_slice(b"\r\n");
}

/// What an answer's framing headers said.
#[derive(Default)]
struct Said {
    /// `content-length`: every one must agree (RFC 9112 §6.3, item 5).
    length: Option<Result<u64, Error>>,
    /// `transfer-encoding`: whether `chunked` is its last coding.
    chunked: Option<bool>,
    /// `connection: close`.
    close: bool,
    /// `connection` names headers besides itself (which are then hop-by-hop too).
    names_others: bool,
}

impl Said {
    fn heard(&mut self, field: Field, value: &[u8]) {
        match field {
            Field::ContentLength => {
                let length = parse_length(value);
                self.length = match self.length.take() {
                    None => Some(length),
                    Some(Ok(earlier)) if length.as_ref().is_ok_and(|n| *n == earlier) => {
                        Some(length)
                    }
                    Some(_) => Some(Err(Error::Length)),
                };
            }
            Field::TransferEncoding => {
                let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
                self.chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
            Field::Connection => {
                for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
                        self.names_others = true;
                    }
                }
            }
            _ => {}
        }
    }
}

/// The headers that framing, this hop or the proxy have a say in, told apart by name: the
/// answers read inline here and the requests the listener's lane reads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    /// Hop-by-hop too; a request asking for it is not one for the lane.
    Upgrade,
    Expect,
    /// Another hop-by-hop header (RFC 9110 §7.6.1): not passed on.
    HopByHop,
    /// Set by the proxy itself: not passed on from the backend.
    Proxys,
    Date,
    Other,
}

impl Field {
    pub fn of(name: &[u8]) -> Field {
        let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
        match name.len() {
            2 if is(b"te") => Field::HopByHop,
            4 if is(b"host") => Field::Host,
            4 if is(b"date") => Field::Date,
            6 if is(b"expect") => Field::Expect,
            7 if is(b"upgrade") => Field::Upgrade,
            7 if is(b"trailer") => Field::HopByHop,
            10 if is(b"connection") => Field::Connection,
            10 if is(b"keep-alive") => Field::HopByHop,
            12 if is(b"x-request-id") => Field::Proxys,
            14 if is(b"content-length") => Field::ContentLength,
            16 if is(b"proxy-connection") => Field::HopByHop,
            17 if is(b"transfer-encoding") => Field::TransferEncoding,
            18 if is(b"proxy-authenticate") => Field::HopByHop,
            19 if is(b"proxy-authorization") => Field::HopByHop,
            22 if is(b"x-hestia-cold-start-ms") => Field::Proxys,
            _ => Field::Other,
        }
    }
}

/// A `content-length` value: digits only.
fn parse_length(value: &[u8]) -> Result<u64, Error> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(Error::Length);
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or(Error::Length)
}

/// An answer's head, and how its body is framed.
pub(super) struct Head {
    pub(super) status: StatusCode,
    pub(super) version: Version,
    pub(super) headers: HeaderMap,
    lines: Option<Lines>,
    framing: Result<Framing, Error>,
    /// The connection can carry another request once this answer is read.
    keep_alive: bool,
}

/// Room left in an answer's header map for the headers the proxy adds (request id, cold start).
const ADDED_BY_PROXY: usize = 2;

/// Parses a complete head off the front of `read` (`None` while it is incomplete), keeping its
/// headers as `heads` asks. Header values share the head's bytes instead of being copied.
fn parse_head(read: &mut BytesMut, heads: Heads) -> Result<Option<Parsed>, Error> {
    // Slots left uninitialised: zeroing 128 of them cost more than parsing a small head.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        read,
        &mut slots,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(Error::Head(error)),
    };
    let code = response.code.unwrap_or_default();
    let status = StatusCode::from_u16(code).map_err(|_| Error::Head(httparse::Error::Status))?;
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Each name classified once: the lines below need the same answer.
    let mut kinds = [Field::Other; MAX_HEADERS];
    let mut said = Said::default();
    for (field, kind) in response.headers.iter().zip(&mut kinds) {
        *kind = Field::of(field.name.as_bytes());
        said.heard(*kind, field.value);
    }
    // A `connection` that names other headers needs them found by name: the map does that.
    if heads == Heads::Raw && !said.names_others {
        let lines = lines_of(response.headers, &kinds, said.chunked.is_some());
        read.advance(len);
        return Ok(Some(Parsed {
            status,
            version,
            headers: HeaderMap::new(),
            lines: Some(lines),
            said,
        }));
    }
    // Each name, and where its value lies in the head (to slice it out once the head is frozen).
    let start = read.as_ptr() as usize;
    let mut fields = Vec::with_capacity(response.headers.len());
    for field in response.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| Error::Head(httparse::Error::HeaderName))?;
        let at = field.value.as_ptr() as usize - start;
        fields.push((name, at..at + field.value.len()));
    }
    let head = read.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(fields.len() + ADDED_BY_PROXY);
    for (name, value) in fields {
        let value = HeaderValue::from_maybe_shared(head.slice(value))
            .map_err(|_| Error::Head(httparse::Error::HeaderValue))?;
        headers.append(name, value);
    }
    Ok(Some(Parsed {
        status,
        version,
        headers,
        lines: None,
        said,
    }))
}

/// The header lines passed on to the client ([`Lines`]), each field of the kind beside it in
/// `kinds`; `chunked` when `transfer-encoding` frames the body (any `content-length` is then
/// left out). httparse checked every name and value: none can end the head early.
fn lines_of(fields: &[httparse::Header<'_>], kinds: &[Field], chunked: bool) -> Lines {
    let size = fields
        .iter()
        .map(|f| f.name.len() + f.value.len() + 4)
        .sum::<usize>();
    let mut lines = Lines {
        // With room for the lines the proxy appends (the request id's is 52 bytes).
        block: Vec::with_capacity(size + ROOM_FOR_THE_PROXY),
        has_length: false,
        has_date: false,
    };
    for (field, kind) in fields.iter().zip(kinds) {
        match kind {
            Field::ContentLength if chunked => continue,
            Field::ContentLength => lines.has_length = true,
            Field::Date => lines.has_date = true,
            Field::Host | Field::Expect | Field::Other => {}
            Field::TransferEncoding
            | Field::Connection
            | Field::Upgrade
            | Field::HopByHop
            | Field::Proxys => continue,
        }
        write_line(&mut lines.block, field.name.as_bytes(), field.value);
    }
    lines
}

impl Parsed {
    /// How the body is framed (RFC 9112 §6.3), and whether the connection outlives it.
    fn framed(self, head_only: bool) -> Head {
        let Said {
            length,
            chunked,
            close,
            ..
        } = self.said;
        let mut keep_alive = self.version == Version::HTTP_11 && !close;
        let framing = if head_only || matches!(self.status.as_u16(), 204 | 304) {
            Ok(Framing::Length(0))
        } else if let Some(chunked) = chunked {
            if chunked {
                Ok(Framing::Chunked(Chunk::Size))
            } else {
                keep_alive = false;
                Ok(Framing::UntilClose)
            }
        } else if let Some(length) = length {
            length.map(Framing::Length)
        } else {
            keep_alive = false;
            Ok(Framing::UntilClose)
        };
        Head {
            status: self.status,
            version: self.version,
            headers: self.headers,
            lines: self.lines,
            framing,
            keep_alive,
        }
    }
}

impl Head {
    /// The answer, its body read from `conn`; `conn` goes back to `pool` once the body has been
    /// read to its end (it is closed if the body is dropped before that).
    pub(super) fn into_response(
        self,
        conn: Conn,
        pool: Arc<Pool>,
    ) -> Result<Response<Body>, Error> {
        let framing = self.framing?;
        let mut body = Body {
            conn: Some(conn),
            pool,
            framing,
            keep_alive: self.keep_alive,
        };
        if body.is_end_stream() {
            body.finish();
        }
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        *response.version_mut() = self.version;
        *response.headers_mut() = self.headers;
        if let Some(lines) = self.lines {
            response.extensions_mut().insert(lines);
        }
        Ok(response)
    }
}

/// Where a body's reading stands.
enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunk),
    /// Everything until the backend closes the connection.
    UntilClose,
    Done,
}

/// Where a chunked body's reading stands.
enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// This many bytes of the current chunk are still to come.
    Data(u64),
    /// The CRLF that ends a chunk's data is next.
    DataEnd,
    /// The trailer section (after the last, empty chunk) is next.
    Trailers,
}

/// An answer's body, read from its connection as it is polled.
pub struct Body {
    conn: Option<Conn>,
    pool: Arc<Pool>,
    framing: Framing,
    keep_alive: bool,
}

impl Body {
    /// The body has ended: its connection goes back to the pool if it can carry another request.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.read.is_empty()
        {
            self.pool.give_back(Sender::H1(conn));
        }
    }

    /// The next frame from what has been read, if there is one (`Ok(None)` means: read more).
    fn next_frame(&mut self) -> Result<Option<Frame<Bytes>>, Error> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        let read = &mut conn.read;
        match &mut self.framing {
            Framing::Done => Ok(None),
            Framing::Length(left) => {
                if read.is_empty() {
                    return Ok(None);
                }
                let n = read.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                Ok(Some(Frame::data(read.split_to(n).freeze())))
            }
            Framing::UntilClose => {
                if read.is_empty() {
                    return Ok(None);
                }
                Ok(Some(Frame::data(read.split().freeze())))
            }
            Framing::Chunked(chunk) => loop {
                match chunk {
                    Chunk::Size => match httparse::parse_chunk_size(read) {
                        Ok(httparse::Status::Complete((used, 0))) => {
                            read.advance(used);
                            *chunk = Chunk::Trailers;
                        }
                        Ok(httparse::Status::Complete((used, size))) => {
                            read.advance(used);
                            *chunk = Chunk::Data(size);
                        }
                        Ok(httparse::Status::Partial) if read.len() < MAX_CHUNK_LINE => {
                            return Ok(None);
                        }
                        _ => return Err(Error::Chunk),
                    },
                    Chunk::Data(left) => {
                        if read.is_empty() {
                            return Ok(None);
                        }
                        let n = read.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                        *left -= n as u64;
                        if *left == 0 {
                            *chunk = Chunk::DataEnd;
                        }
                        return Ok(Some(Frame::data(read.split_to(n).freeze())));
                    }
                    Chunk::DataEnd => match read.get(..2) {
                        Some(b"\r\n") => {
                            read.advance(2);
                            *chunk = Chunk::Size;
                        }
                        Some(_) => return Err(Error::Chunk),
                        None if read.first().is_some_and(|&b| b != b'\r') => {
                            return Err(Error::Chunk);
                        }
                        None => return Ok(None),
                    },
                    Chunk::Trailers => {
                        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                        let (used, trailers) = match httparse::parse_headers(read, &mut slots) {
                            Ok(httparse::Status::Complete((used, fields))) => {
                                (used, trailer_map(fields))
                            }
                            Ok(httparse::Status::Partial) if read.len() < MAX_HEAD => {
                                return Ok(None);
                            }
                            _ => return Err(Error::Chunk),
                        };
                        read.advance(used);
                        self.framing = Framing::Done;
                        return Ok(trailers.map(Frame::trailers));
                    }
                }
            },
        }
    }
}

/// Trailer fields as a map (`None` when there are none, or none valid).
fn trailer_map(fields: &[httparse::Header<'_>]) -> Option<HeaderMap> {
    let map: HeaderMap = fields
        .iter()
        .filter_map(|f| {
            let name = HeaderName::from_bytes(f.name.as_bytes()).ok()?;
            let value = HeaderValue::from_bytes(f.value).ok()?;
            Some((name, value))
        })
        .collect();
    (!map.is_empty()).then_some(map)
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if this.is_end_stream() {
                this.finish();
                return Poll::Ready(None);
            }
            match this.next_frame() {
                Ok(Some(frame)) => {
                    if this.is_end_stream() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(None) if this.is_end_stream() => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(None) => {}
                Err(error) => return Poll::Ready(Some(Err(this.fail(error)))),
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(this.framing, Framing::UntilClose) => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return Poll::Ready(Some(Err(this.fail(Error::Closed)))),
                Ok(_) => {}
                Err(error) => return Poll::Ready(Some(Err(this.fail(error)))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(left) => SizeHint::with_exact(left),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl Body {
    /// The body cannot go on: its connection is closed, not reused.
    fn fail(&mut self, error: Error) -> Error {
        self.conn = None;
        self.framing = Framing::Done;
        error
    }
}

#[cfg(test)]
mod tests {
    //! Exchanges against a scripted backend on a real loopback socket: it answers each request
    //! it reads with the next scripted answer, written in the pieces given.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use axum::body::Body as AxumBody;
    use http_body_util::{BodyExt, Limited};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::super::{Answer, ExchangeError, Failure};
    use super::*;

    /// One scripted answer: the pieces written (a short pause between them), and whether the
    /// backend closes the connection after it.
    struct Scripted {
        pieces: Vec<&'static [u8]>,
        then_close: bool,
    }

    fn answer(pieces: &[&'static [u8]]) -> Scripted {
        Scripted {
            pieces: pieces.to_vec(),
            then_close: false,
        }
    }

    fn answer_then_close(pieces: &[&'static [u8]]) -> Scripted {
        Scripted {
            pieces: pieces.to_vec(),
            then_close: true,
        }
    }

    /// A backend answering requests in order with `script`, on whichever connection they come.
    /// Returns its pool and the count of connections it accepted.
    async fn backend(script: Vec<Scripted>) -> (Arc<Pool>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(tokio::sync::Mutex::new(script.into_iter()));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let script = script.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    loop {
                        let mut chunk = [0u8; 4096];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&chunk[..n]),
                        }
                        let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        seen.drain(..end + 4);
                        let Some(next) = script.lock().await.next() else {
                            return;
                        };
                        for piece in next.pieces {
                            let _ = socket.write_all(piece).await;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        if next.then_close {
                            return;
                        }
                    }
                });
            }
        });
        let pool = Pool::new(&address, false).expect("a pool");
        (pool, accepted)
    }

    fn get(path: &str) -> Request<Outgoing> {
        request(Method::GET, path)
    }

    fn request(method: Method, path: &str) -> Request<Outgoing> {
        let mut request = Request::new(Limited::new(AxumBody::empty(), 1 << 20));
        *request.method_mut() = method;
        *request.uri_mut() = path.parse().expect("a path");
        request
    }

    /// The answer's status, body and trailers (`Err` with the body's error if it failed).
    async fn exchange(
        pool: &Arc<Pool>,
        request: Request<Outgoing>,
    ) -> (
        StatusCode,
        Result<(Bytes, Option<HeaderMap>), ExchangeError>,
    ) {
        let response = match pool.send(request, &unforwarded(), Heads::Map).await {
            Ok(response) => response,
            Err(Failure::Sent(error)) => return (StatusCode::BAD_GATEWAY, Err(error)),
            Err(Failure::Unsent { error, .. }) => panic!("not sent: {error}"),
        };
        assert!(matches!(response.body(), Answer::H1(_)), "carried inline");
        let status = response.status();
        let body = response.into_body().collect().await;
        (
            status,
            body.map(|c| {
                let trailers = c.trailers().cloned();
                (c.to_bytes(), trailers)
            }),
        )
    }

    fn body_of(
        answer: (
            StatusCode,
            Result<(Bytes, Option<HeaderMap>), ExchangeError>,
        ),
    ) -> String {
        let (_, body) = answer;
        let (bytes, _) = body.expect("a whole body");
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn given_keep_alive_answers_when_three_gets_go_then_one_connection_carries_them_all() {
        let ok: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-one: a\r\n\r\nhello";
        let (pool, accepted) = backend(vec![answer(&[ok]), answer(&[ok]), answer(&[ok])]).await;
        for _ in 0..3 {
            assert_eq!(body_of(exchange(&pool, get("/x")).await), "hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_chunked_body_split_anywhere_arrives_whole_with_its_trailers() {
        let pieces: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            b"5;ext=1\r\nhel",
            b"lo\r",
            b"\n6\r\n world\r\n0\r\nx-sum: 9\r",
            b"\n\r\n",
        ];
        let ok: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let (pool, accepted) = backend(vec![answer(pieces), answer(&[ok])]).await;
        let (status, body) = exchange(&pool, get("/chunks")).await;
        let (bytes, trailers) = body.expect("a whole body");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&bytes[..], b"hello world");
        assert_eq!(trailers.expect("trailers")["x-sum"], "9");
        // And the connection carries the next request.
        assert_eq!(body_of(exchange(&pool, get("/next")).await), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_until_close_ends_with_the_connection_which_is_not_reused() {
        let until_close: &[&[u8]] = &[b"HTTP/1.1 200 OK\r\n\r\nline 1\n", b"line 2\n"];
        let closing: &[u8] =
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 3\r\n\r\nbye";
        let ok: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let script = vec![
            answer_then_close(until_close),
            answer_then_close(&[closing]),
            answer(&[ok]),
        ];
        let (pool, accepted) = backend(script).await;
        assert_eq!(
            body_of(exchange(&pool, get("/a")).await),
            "line 1\nline 2\n"
        );
        assert_eq!(body_of(exchange(&pool, get("/b")).await), "bye");
        assert_eq!(body_of(exchange(&pool, get("/c")).await), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn head_204_and_304_answers_have_no_body_whatever_their_length_says() {
        let head: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n";
        let no_content: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";
        let not_modified: &[u8] = b"HTTP/1.1 304 Not Modified\r\ncontent-length: 7\r\n\r\n";
        let script = vec![
            answer(&[head]),
            answer(&[no_content]),
            answer(&[not_modified]),
        ];
        let (pool, accepted) = backend(script).await;
        let (status, body) = exchange(&pool, request(Method::HEAD, "/h")).await;
        assert_eq!((status, body.expect("empty").0.len()), (StatusCode::OK, 0));
        let (status, _) = exchange(&pool, get("/204")).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = exchange(&pool, get("/304")).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_interim_answer_is_skipped_for_the_final_one() {
        let pieces: &[&[u8]] = &[
            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n",
            b"HTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\nmade",
        ];
        let (pool, _) = backend(vec![answer(pieces)]).await;
        let (status, body) = exchange(&pool, get("/make")).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(&body.expect("a body").0[..], b"made");
    }

    #[tokio::test]
    async fn a_connection_the_backend_closed_while_idle_is_not_used_again() {
        let ok: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        // The backend closes after answering, without saying so (as an idle timeout would).
        let (pool, accepted) = backend(vec![answer_then_close(&[ok]), answer(&[ok])]).await;
        assert_eq!(body_of(exchange(&pool, get("/1")).await), "ok");
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A POST (without a body, so carried inline) is never sent twice: it must not go out
        // on the closed connection at all.
        let post = request(Method::POST, "/2");
        assert_eq!(body_of(exchange(&pool, post).await), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn broken_answers_are_errors_and_their_connections_are_not_reused() {
        let short: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello";
        let bad_chunk: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX";
        let two_lengths: &[u8] =
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok";
        let garbage: &[u8] = b"HTTP/1.1 2x0 OK\r\n\r\n";
        let script = vec![
            answer_then_close(&[short]),
            answer(&[bad_chunk]),
            answer(&[two_lengths]),
            answer(&[garbage]),
        ];
        let (pool, accepted) = backend(script).await;
        let (_, body) = exchange(&pool, get("/short")).await;
        assert!(
            matches!(body, Err(ExchangeError::H1(Error::Closed))),
            "{body:?}"
        );
        let (_, body) = exchange(&pool, get("/chunk")).await;
        assert!(
            matches!(body, Err(ExchangeError::H1(Error::Chunk))),
            "{body:?}"
        );
        let answer = pool.send(get("/lengths"), &unforwarded(), Heads::Map).await;
        assert!(
            matches!(answer, Err(Failure::Sent(ExchangeError::H1(Error::Length)))),
            "two different lengths are refused"
        );
        let answer = pool.send(get("/garbage"), &unforwarded(), Heads::Map).await;
        assert!(matches!(
            answer,
            Err(Failure::Sent(ExchangeError::H1(Error::Head(_))))
        ));
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            4,
            "no broken connection reused"
        );
    }

    #[tokio::test]
    async fn a_request_with_a_body_takes_the_idle_socket_over_to_hypers_client() {
        let ok: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let (pool, accepted) = backend(vec![answer(&[ok]), answer(&[ok])]).await;
        assert_eq!(body_of(exchange(&pool, get("/1")).await), "ok");
        let mut post = Request::new(Limited::new(AxumBody::from("{}"), 1 << 20));
        *post.method_mut() = Method::POST;
        *post.uri_mut() = "/2".parse().expect("a path");
        let response = match pool.send(post, &unforwarded(), Heads::Map).await {
            Ok(response) => response,
            Err(_) => panic!("the POST was not answered"),
        };
        assert!(matches!(response.body(), Answer::Hyper(_)));
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        assert_eq!(&body[..], b"ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// The `x-forwarded-*` headers of a request from nowhere in particular (only the protocol).
    /// Parses `head` as an answer, its headers kept as `heads` asks.
    fn parsed(head: &[u8], heads: Heads) -> Parsed {
        let mut read = BytesMut::from(head);
        let parsed = parse_head(&mut read, heads).expect("a valid head");
        let parsed = parsed.expect("a complete head");
        assert!(read.is_empty(), "the head is taken off the buffer");
        parsed
    }

    #[test]
    fn raw_lines_keep_the_backends_headers_as_written_and_leave_out_this_hops() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\n\
            Keep-Alive: timeout=5\r\nX-Request-Id: theirs\r\nContent-Length: 5\r\n\
            Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nDate: Tue, 01 Dec 2026 10:00:00 GMT\r\n\r\n";
        let raw = parsed(head, Heads::Raw);
        assert!(raw.headers.is_empty(), "no map is built");
        let lines = raw.lines.expect("lines");
        assert_eq!(
            String::from_utf8_lossy(&lines.block),
            "Content-Type: text/plain\r\nContent-Length: 5\r\nSet-Cookie: a=1\r\n\
             Set-Cookie: b=2\r\nDate: Tue, 01 Dec 2026 10:00:00 GMT\r\n"
        );
        assert!(lines.has_length && lines.has_date);
        // The same head as a map: the same headers, the proxy's own and this hop's left to it.
        let map = parsed(head, Heads::Map);
        assert!(map.lines.is_none());
        assert_eq!(map.headers.get_all("set-cookie").iter().count(), 2);
        assert_eq!(map.headers["content-length"], "5");
    }

    #[test]
    fn raw_lines_drop_a_length_that_chunking_overrides() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\
            X-A: 1\r\n\r\n";
        let lines = parsed(head, Heads::Raw).lines.expect("lines");
        assert_eq!(String::from_utf8_lossy(&lines.block), "X-A: 1\r\n");
        assert!(!lines.has_length && !lines.has_date);
    }

    #[test]
    fn an_answer_whose_connection_header_names_others_comes_as_a_map() {
        // `connection: x-secret` makes `x-secret` hop-by-hop: the map path finds and drops it.
        let head = b"HTTP/1.1 200 OK\r\nX-Secret: 1\r\nConnection: x-secret\r\n\
            Content-Length: 0\r\n\r\n";
        let parsed = parsed(head, Heads::Raw);
        assert!(parsed.lines.is_none());
        assert_eq!(parsed.headers["x-secret"], "1");
    }

    fn unforwarded() -> Forwarded {
        Forwarded::new(None, None, None, None, None)
    }

    #[test]
    fn the_request_head_is_the_requests_parts_with_the_pools_host_and_forwarded_headers() {
        let mut request = get("/v1/models?x=1");
        let headers = request.headers_mut();
        headers.insert("host", HeaderValue::from_static("hestia:8080"));
        headers.insert("x-request-id", HeaderValue::from_static("abc"));
        headers.append("accept", HeaderValue::from_static("a"));
        headers.append("accept", HeaderValue::from_static("b"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        headers.insert("x-forwarded-port", HeaderValue::from_static("443"));
        let forwarded = Forwarded::new(
            request.headers().get("x-forwarded-for"),
            Some(HeaderValue::from_static("127.0.0.1")),
            Some(HeaderValue::from_static("hestia:8080")),
            Some(HeaderValue::from_static("/services/llm")),
            Some(HeaderValue::from_static("ours")),
        );
        let mut out = Vec::new();
        let backend = HeaderValue::from_static("127.0.0.1:9");
        write_head(&mut out, &request, &backend, &forwarded);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "GET /v1/models?x=1 HTTP/1.1\r\nhost: 127.0.0.1:9\r\n\
             accept: a\r\naccept: b\r\nx-forwarded-port: 443\r\n\
             x-forwarded-for: 10.0.0.1, 127.0.0.1\r\nx-forwarded-host: hestia:8080\r\n\
             x-forwarded-proto: http\r\nx-forwarded-prefix: /services/llm\r\n\
             x-request-id: ours\r\n\r\n"
        );

        // The same headers, set in the map for hyper's client: the same result, however often.
        let mut map = request.headers().clone();
        forwarded.set_in(&mut map);
        forwarded.set_in(&mut map);
        assert!(map.get("host").is_none());
        assert_eq!(map["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(map["x-forwarded-proto"], "http");
        assert_eq!(map["x-forwarded-port"], "443");
        assert_eq!(map["x-request-id"], "ours");

        let mut empty_post = request_with(Method::POST);
        write_head(&mut out, &empty_post, &backend, &unforwarded());
        assert!(String::from_utf8_lossy(&out).ends_with("content-length: 0\r\n\r\n"));
        empty_post
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        write_head(&mut out, &empty_post, &backend, &unforwarded());
        assert_eq!(
            String::from_utf8_lossy(&out)
                .matches("content-length")
                .count(),
            1
        );
    }

    fn request_with(method: Method) -> Request<Outgoing> {
        request(method, "/")
    }
}
