//! The edge as an HTTP/1.1 client sees it on the wire: proxied requests (`/services/<id>/...`)
//! written byte by byte on raw loopback sockets, and the answers read back with their framing.
//! Keep-alive and pipelining, a body between bodiless requests, HEAD, the backend's framing
//! passed on (chunked, until close), `connection: close`, request ids and dates, a backend that
//! dies mid-body, HTTP/1.0, the control API on a proxied connection, and a head that arrives in
//! pieces. Each reads like what a client would notice if the edge got it wrong.

mod support;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::{Framing, RawResponse, Sim, TestServer, raw_exchange, read_response};

/// A guard on every wait for Hestia: far beyond what a warm loopback answer takes.
const DEADLINE: Duration = Duration::from_secs(10);

// --- Keep-alive and pipelining ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gets_pipelined_in_one_write_are_answered_in_order_and_the_connection_stays_open() {
    // Given a ready service and one client connection
    let server = ready_service().await;
    let mut connection = Connection::open(&server).await;

    // When the client writes three GETs for different paths back to back, in one write
    let pipelined = [
        get("/services/web/first"),
        get("/services/web/second"),
        get("/services/web/third"),
    ]
    .concat();
    connection.send(pipelined).await;

    // Then three complete answers come back, in the order asked
    for path in ["/first", "/second", "/third"] {
        assert_echoed(&connection.response().await, "GET", path);
    }
    // And the same connection carries a fourth request
    connection.send(get("/services/web/fourth")).await;
    assert_echoed(&connection.response().await, "GET", "/fourth");
    drop(connection);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_with_a_body_between_two_gets_is_answered_on_the_same_connection() {
    // Given a ready service and one keep-alive connection that already carried a GET
    let server = ready_service().await;
    let mut connection = Connection::open(&server).await;
    connection.send(get("/services/web/before")).await;
    assert_echoed(&connection.response().await, "GET", "/before");

    // When a POST with a content-length body follows on it
    let body = "name=hestia&answer=42";
    let post = format!(
        "POST /services/web/submit HTTP/1.1\r\nhost: hestia.test\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    connection.send(post).await;

    // Then the backend received the body whole
    let answer = connection.response().await;
    assert_echoed(&answer, "POST", "/submit");
    assert_eq!(answer.json()["body"], body, "{}", answer.text());
    assert_eq!(answer.json()["body_len"], body.len());

    // And a bodiless GET after it is answered on the same connection (the body did not leak
    // into the next request)
    connection.send(get("/services/web/after")).await;
    let after = connection.response().await;
    assert_echoed(&after, "GET", "/after");
    assert_eq!(after.json()["body_len"], 0);
    drop(connection);
    server.stop().await;
}

// --- Framing of the answers ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_is_answered_with_the_backends_length_and_no_body_bytes() {
    // Given a ready service and one client connection
    let server = ready_service().await;
    let mut connection = Connection::open(&server).await;

    // When the client pipelines a HEAD and a GET in one write
    let head = "HEAD /services/web/document HTTP/1.1\r\nhost: hestia.test\r\n\r\n";
    let pipelined = [head, &get("/services/web/next")].concat();
    connection.send(pipelined).await;

    // Then the HEAD's answer carries the length the backend announced, for a body it does not
    // send
    let answer = connection.head_response().await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let length: usize = answer
        .header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("no content-length on the HEAD answer: {answer:?}"));
    assert!(length > 0, "the echo's body length, not 0: {answer:?}");
    // And the GET's answer starts right after that head (no body bytes came in between)
    assert!(
        connection.unread.is_empty() || connection.unread.starts_with(b"HTTP/1.1 "),
        "bytes after the HEAD answer's head: {:?}",
        String::from_utf8_lossy(&connection.unread)
    );
    assert_echoed(&connection.response().await, "GET", "/next");
    drop(connection);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_backend_answer_reaches_the_client_whole_and_the_connection_goes_on() {
    // Given a ready service whose `/stream` answers in chunks (no content-length)
    let server = ready_service().await;
    let mut connection = Connection::open(&server).await;

    // When the client asks for a chunked answer
    let stream = get("/services/web/stream?chunks=3&interval_ms=20");
    connection.send(stream).await;

    // Then it arrives as a self-delimited HTTP/1.1 answer with every chunk
    let answer = connection.response().await;
    assert_eq!(answer.version, "HTTP/1.1", "{answer:?}");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(
        matches!(answer.framing, Framing::Chunked | Framing::Length),
        "a keep-alive answer must delimit itself: {answer:?}"
    );
    assert_eq!(answer.text(), "chunk 1\nchunk 2\nchunk 3\n");

    // And the connection carries the next request
    connection.send(get("/services/web/after-stream")).await;
    assert_echoed(&connection.response().await, "GET", "/after-stream");
    drop(connection);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_body_that_lasts_until_it_closes_reaches_the_client_whole_and_well_framed() {
    // Given a backend that answers without a length, its body ending when it closes
    let body: Vec<u8> = (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut script =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n".to_vec();
    script.extend_from_slice(&body);
    let backend = scripted_backend(script).await;
    let server = TestServer::start(&[], &scripted_service("closing", backend)).await;
    let mut connection = Connection::open(&server).await;

    // When a client asks for it through Hestia
    connection.send(get("/services/closing/file")).await;

    // Then it gets an HTTP/1.1 answer with the whole body
    let answer = connection.response().await;
    assert_eq!(answer.version, "HTTP/1.1", "{answer:?}");
    assert_eq!(answer.status, 200, "{:?}", answer.headers);
    assert_eq!(answer.body.len(), body.len(), "{:?}", answer.headers);
    assert!(answer.body == body, "the body arrived altered");

    // And its framing is one the client can trust: ended by Hestia closing the connection, or
    // self-delimited on a connection that carries the next request
    if answer.framing == Framing::UntilClose || answer.connection_has("close") {
        assert!(connection.read_to_eof().await.is_empty());
    } else {
        connection.send(get("/services/closing/again")).await;
        let again = connection.response().await;
        assert_eq!(again.status, 200, "{:?}", again.headers);
        assert!(again.body == body, "the second body arrived altered");
    }
    drop(connection);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_connection_close_gets_the_last_answer_and_then_the_end_of_the_connection() {
    // Given a ready service and one client connection
    let server = ready_service().await;
    let mut connection = Connection::open(&server).await;

    // When the client pipelines a keep-alive GET and then a GET that says `connection: close`
    let last = "GET /services/web/last HTTP/1.1\r\nhost: hestia.test\r\nconnection: close\r\n\r\n";
    let pipelined = [&get("/services/web/first") as &str, last].concat();
    connection.send(pipelined).await;

    // Then the first answer keeps the connection open
    let first = connection.response().await;
    assert_echoed(&first, "GET", "/first");
    assert!(!first.connection_has("close"), "{:?}", first.headers);
    // And the second says `connection: close`, and Hestia closes the connection after it
    let second = connection.response().await;
    assert_echoed(&second, "GET", "/last");
    assert!(second.connection_has("close"), "{:?}", second.headers);
    let after = connection.read_to_eof().await;
    assert!(
        after.is_empty(),
        "bytes after the last answer: {:?}",
        String::from_utf8_lossy(&after)
    );
    server.stop().await;
}

// --- Headers every answer carries ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_a_request_id_and_a_date_and_a_clients_own_id_comes_back_unchanged() {
    // Given a ready service and one client connection
    let server = ready_service().await;
    let mut connection = Connection::open(&server).await;

    // When the client sends its own request id
    let with_id = "GET /services/web/tagged HTTP/1.1\r\nhost: hestia.test\r\nx-request-id: edge-test-42\r\n\r\n";
    connection.send(with_id).await;

    // Then the answer carries that id unchanged (and the backend saw it too), and a date
    let tagged = connection.response().await;
    assert_echoed(&tagged, "GET", "/tagged");
    assert_eq!(tagged.header("x-request-id"), Some("edge-test-42"));
    assert_eq!(tagged.json()["headers"]["x-request-id"], "edge-test-42");
    assert_has_date(&tagged);

    // When two more requests on the connection send none
    let pipelined = [get("/services/web/one"), get("/services/web/two")].concat();
    connection.send(pipelined).await;

    // Then each answer carries an id of its own (the one the backend was sent), and a date
    let mut ids = Vec::new();
    for path in ["/one", "/two"] {
        let answer = connection.response().await;
        assert_echoed(&answer, "GET", path);
        let id = answer.header("x-request-id").unwrap_or_default().to_owned();
        assert!(!id.is_empty(), "no x-request-id: {:?}", answer.headers);
        assert_eq!(answer.json()["headers"]["x-request-id"], id.as_str());
        assert_ne!(id, "edge-test-42", "the previous request's id was reused");
        assert_has_date(&answer);
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1], "two requests, one id");

    // And Hestia's own answer for an unknown service carries them too
    connection.send(get("/services/nowhere/x")).await;
    let unknown = connection.response().await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert!(
        unknown
            .header("x-request-id")
            .is_some_and(|id| !id.is_empty())
    );
    assert_has_date(&unknown);
    drop(connection);
    server.stop().await;
}

// --- A backend failing mid-answer ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_dies_mid_body_does_not_give_the_client_an_answer_that_looks_complete() {
    // Given a backend that announces 1000 bytes, sends 10 and closes
    let script =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: 1000\r\n\r\n0123456789"
            .to_vec();
    let backend = scripted_backend(script).await;
    let server = TestServer::start(&[], &scripted_service("dying", backend)).await;

    // When a client asks for it on a keep-alive connection
    let request = get("/services/dying/file");
    let received = raw_exchange(&server.url, request.as_bytes(), DEADLINE)
        .await
        .expect("Hestia ends the connection (EOF or reset) instead of leaving it hanging");

    // Then fewer than 1000 body bytes arrived
    let body = received.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    assert!(body.len() < 1000, "{} body bytes: {received:?}", body.len());
    // And what arrived does not parse as a complete successful answer (a short body passed as
    // whole, say by a final empty chunk); an error answered before any head would be honest
    let mut unread = Vec::new();
    match read_response(&mut received.as_bytes(), &mut unread, false).await {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}"),
        Ok(answer) => assert!(
            answer.status >= 500,
            "a truncated body passed as a complete answer: {answer:?}"
        ),
    }
    server.stop().await;
}

// --- Unusual requests ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_0_get_is_answered_without_chunks_and_its_connection_closed() {
    // Given a ready service
    let server = ready_service().await;

    // When an HTTP/1.0 client (no host, no keep-alive) asks for a path
    let old = b"GET /services/web/old-client HTTP/1.0\r\n\r\n";
    let received = raw_exchange(&server.url, old, DEADLINE)
        .await
        .expect("Hestia closes an HTTP/1.0 connection after its answer");

    // Then it is answered 200 in HTTP/1.x, not chunked (HTTP/1.0 has no chunks)
    let answer = parse_whole(&received).await;
    assert!(answer.version.starts_with("HTTP/1."), "{answer:?}");
    assert_echoed(&answer, "GET", "/old-client");
    assert_ne!(answer.framing, Framing::Chunked, "{answer:?}");

    // When it asks for an answer the backend sends in chunks
    let old = b"GET /services/web/stream?chunks=3&interval_ms=20 HTTP/1.0\r\n\r\n";
    let received = raw_exchange(&server.url, old, DEADLINE)
        .await
        .expect("Hestia closes an HTTP/1.0 connection after its answer");

    // Then it gets the whole body, without chunk framing
    let answer = parse_whole(&received).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_ne!(answer.framing, Framing::Chunked, "{answer:?}");
    assert_eq!(answer.text(), "chunk 1\nchunk 2\nchunk 3\n");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_the_service_list_are_answered_on_a_connection_that_carried_proxied_gets() {
    // Given a ready service and a connection that already carried a proxied GET
    let server = ready_service().await;
    let mut connection = Connection::open(&server).await;
    connection.send(get("/services/web/a")).await;
    assert_echoed(&connection.response().await, "GET", "/a");

    // When the client pipelines /healthz, /v1/services and another proxied GET in one write
    let pipelined = [get("/healthz"), get("/v1/services"), get("/services/web/b")].concat();
    connection.send(pipelined).await;

    // Then each is answered, in order: health, the list with the service, the proxied GET
    let health = connection.response().await;
    assert_eq!(health.status, 200, "{health:?}");
    let list = connection.response().await;
    assert_eq!(list.status, 200, "{list:?}");
    assert_eq!(
        list.json()["services"][0]["serviceId"],
        "web",
        "{}",
        list.text()
    );
    assert_echoed(&connection.response().await, "GET", "/b");
    drop(connection);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_arriving_in_pieces_is_answered_normally() {
    // Given a ready service and one client connection
    let server = ready_service().await;
    let mut connection = Connection::open(&server).await;

    // When a request head arrives in three pieces, 50 ms apart (cut inside the path and a header)
    let pieces = [
        "GET /services/web/slow-cl",
        "ient HTTP/1.1\r\nhost: hest",
        "ia.test\r\nx-request-id: split-1\r\n\r\n",
    ];
    connection.send_in_pieces(&pieces).await;

    // Then it is answered as if written at once, headers from the last piece included
    let answer = connection.response().await;
    assert_echoed(&answer, "GET", "/slow-client");
    assert_eq!(answer.header("x-request-id"), Some("split-1"));

    // And a next head cut between the CR and LF of its end is answered on the same connection
    let pieces = [
        "GET /services/web/again HTTP/1.1\r\nhost: hestia.test\r",
        "\n\r\n",
    ];
    connection.send_in_pieces(&pieces).await;
    assert_echoed(&connection.response().await, "GET", "/again");
    drop(connection);
    server.stop().await;
}

// --- Helpers ---------------------------------------------------------------------------------

/// Hestia serving service `web` (a `hestia sim`, whose catch-all route echoes the request as
/// JSON), already started by a first request.
async fn ready_service() -> TestServer {
    let server = TestServer::start(&[&Sim::new("web")], "").await;
    let warm = server.get("/services/web/warm-up").await;
    assert_eq!(warm.status(), 200, "the service starts");
    server
}

/// `GET path` in HTTP/1.1, keep-alive (the default).
fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: hestia.test\r\n\r\n")
}

/// The answer is the sim's echo of `method path` (the service prefix stripped), answered 200.
fn assert_echoed(answer: &RawResponse, method: &str, path: &str) {
    assert_eq!(answer.status, 200, "{method} {path}: {answer:?}");
    let echo = answer.json();
    assert_eq!(echo["method"], method, "{echo}");
    assert_eq!(echo["path"], path, "answers out of order? {echo}");
}

fn assert_has_date(answer: &RawResponse) {
    let date = answer.header("date").unwrap_or_default();
    assert!(date.ends_with(" GMT"), "no HTTP date: {:?}", answer.headers);
}

/// One response out of everything a closed connection carried, with nothing after it.
async fn parse_whole(received: &str) -> RawResponse {
    let mut unread = Vec::new();
    let answer = read_response(&mut received.as_bytes(), &mut unread, false)
        .await
        .unwrap_or_else(|e| panic!("not one whole answer ({e}): {received:?}"));
    assert!(unread.is_empty(), "bytes after the answer: {received:?}");
    answer
}

/// A service Hestia does not start, at the backend on `port`, ready at once.
fn scripted_service(id: &str, port: u16) -> String {
    format!("  {id}:\n    base_url: \"http://127.0.0.1:{port}\"\n    readiness: {{warmup_ms: 0}}\n")
}

/// A backend scripted byte by byte: on every connection it reads one request head, writes
/// `script` and closes. Returns its port; it lives as long as the test's runtime.
async fn scripted_backend(script: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let script = Arc::new(script);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let script = script.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut chunk = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = stream.write_all(&script).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    port
}

/// A client's one connection to Hestia, written and read raw; every read is guarded by
/// [`DEADLINE`].
struct Connection {
    stream: TcpStream,
    /// Bytes read past the last answer (the start of the next one).
    unread: Vec<u8>,
}

impl Connection {
    async fn open(server: &TestServer) -> Connection {
        let addr = server.url.trim_start_matches("http://");
        let stream = TcpStream::connect(addr).await.expect("connect to Hestia");
        Connection {
            stream,
            unread: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).await.expect("write");
    }

    /// Writes `pieces` one by one, 50 ms apart (a slow client, not a timing claim).
    async fn send_in_pieces(&mut self, pieces: &[&str]) {
        for (n, piece) in pieces.iter().enumerate() {
            if n > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            self.send(piece).await;
        }
    }

    /// The next answer on the connection.
    async fn response(&mut self) -> RawResponse {
        self.read(false).await
    }

    /// The next answer, to a HEAD (a head only).
    async fn head_response(&mut self) -> RawResponse {
        self.read(true).await
    }

    async fn read(&mut self, to_head: bool) -> RawResponse {
        let read = read_response(&mut self.stream, &mut self.unread, to_head);
        match tokio::time::timeout(DEADLINE, read).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => panic!("no whole answer: {e}"),
            Err(_) => panic!("no whole answer within {DEADLINE:?}"),
        }
    }

    /// Reads until Hestia closes the connection (a clean EOF); returns any bytes that came
    /// before it, unread ones included.
    async fn read_to_eof(&mut self) -> Vec<u8> {
        let mut rest = std::mem::take(&mut self.unread);
        let read = self.stream.read_to_end(&mut rest);
        match tokio::time::timeout(DEADLINE, read).await {
            Ok(Ok(_)) => rest,
            Ok(Err(e)) => panic!("the connection failed instead of closing: {e}"),
            Err(_) => panic!("the connection is still open after {DEADLINE:?}"),
        }
    }
}
