//! Chaos on the network side: upstream connections across restarts, edge timeouts, HTTP/2,
//! client faults, envelope memory and shutdown.

use std::time::Duration;

use futures_util::future::join_all;

use crate::support::{HestiaProcess, PyBackend, Sim, raw_exchange, write_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_restarts_of_a_keep_alive_backend_fail_no_request() {
    // Given a Python ThreadingHTTPServer (HTTP/1.1 keep-alive) that Hestia stops when idle
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = PyBackend::new("py", dir.path()).key("idle_timeout_ms: 150");
    write_config(dir.path(), "", &[], &backend.yaml());
    let hestia = HestiaProcess::serve(dir.path(), &[]).await;
    let url = format!("{}/services/py/", hestia.url.clone());
    let client = reqwest::Client::new();

    let mut failures = Vec::new();
    let mut pids = Vec::new();
    for cycle in 0..20 {
        // When 30 concurrent requests fill Hestia's pool of connections to the backend,
        let burst = join_all((0..30).map(|_| client.get(&url).send())).await;
        for answer in burst {
            match answer {
                Ok(r) if r.status() == 200 => {}
                Ok(r) => failures.push(format!("cycle {cycle}: {}", r.status())),
                Err(e) => failures.push(format!("cycle {cycle}: {e}")),
            }
        }
        // the backend is stopped (SIGTERM) for being idle,
        hestia.wait_for_state("py", "cold").await;
        // and one more request comes, which starts it again (it answers with its pid)
        match client.get(format!("{url}pid")).send().await {
            Ok(r) if r.status() == 200 => pids.push(r.text().await.unwrap_or_default()),
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                failures.push(format!("cycle {cycle}, after restart: {status} {body}"));
            }
            Err(e) => failures.push(format!("cycle {cycle}, after restart: {e}")),
        }
    }

    // Then no request failed, and every cycle really ran a new backend process
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 20, "one backend process per cycle: {pids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_request_is_proxied_to_an_http1_backend() {
    // Given a backend that speaks only HTTP/1.1
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = PyBackend::new("py", dir.path());
    write_config(dir.path(), "", &[], &backend.yaml());
    let hestia = HestiaProcess::serve(dir.path(), &[]).await;

    // When a client speaks HTTP/2 without TLS (h2c, prior knowledge) to Hestia
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("h2c client");
    let answer = h2
        .get(format!("{}/services/py/", hestia.url.clone()))
        .send()
        .await
        .expect("hestia answers over h2c");

    // Then it is answered over HTTP/2, and the backend was asked in HTTP/1.1
    assert_eq!(answer.version(), reqwest::Version::HTTP_2);
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.expect("body"), "ok HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_upstream_http2_is_asked_in_h2c() {
    // Given a backend marked `upstream_http2: true` (the simulated backend speaks h2c too)
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::new("grpcish").key("upstream_http2: true");
    let plain = Sim::new("plain");
    write_config(dir.path(), "", &[&sim, &plain], "");
    let hestia = HestiaProcess::serve(dir.path(), &[]).await;
    let client = reqwest::Client::new();

    // When an HTTP/1.1 client calls each service
    let echo = |service: &'static str| {
        let request = client.get(format!("{}/services/{service}/echo", hestia.url.clone()));
        async move {
            let answer = request.send().await.expect("hestia answers");
            assert_eq!(answer.status(), 200, "{service}");
            answer.json::<serde_json::Value>().await.expect("echo")
        }
    };

    // Then the one asking for it is spoken to in HTTP/2, the other in HTTP/1.1
    assert_eq!(echo("grpcish").await["version"], "HTTP/2.0");
    assert_eq!(echo("plain").await["version"], "HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_silent_connections_under_ulimit_1024_do_not_stop_a_request() {
    // Given Hestia limited to 1,024 open files, with a backend up
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = PyBackend::new("py", dir.path());
    write_config(dir.path(), "", &[], &backend.yaml());
    let hestia = HestiaProcess::serve_limited(dir.path(), &[], Some(1024)).await;
    let proxied = format!("{}/services/py/", hestia.url.clone());
    let client = reqwest::Client::new();
    assert_eq!(
        client.get(&proxied).send().await.expect("warm").status(),
        200
    );

    // When 1,000 clients connect and say nothing (from their own process, so that this test's
    // file descriptors stay free for the tests running beside it)
    let silent = SilentClients::connect(hestia.port, 1000).await;

    // Then a normal request is still served within a second, through the proxy and the API
    let fresh = reqwest::Client::new();
    let answer = tokio::time::timeout(Duration::from_secs(1), fresh.get(&proxied).send())
        .await
        .expect("served within 1 s")
        .expect("answered");
    assert_eq!(answer.status(), 200);
    let api = format!("{}/v1/services", hestia.url.clone());
    let answer = tokio::time::timeout(Duration::from_secs(1), fresh.get(&api).send())
        .await
        .expect("served within 1 s")
        .expect("answered");
    assert_eq!(answer.status(), 200);
    // (Hestia never ran out of file descriptors: it closed the oldest silent ones instead.)
    assert!(
        !hestia.log_text().contains("cannot accept connections"),
        "{}",
        hestia.log_text()
    );
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_half_the_file_limit_on_a_cold_backlog_5_backend_is_answered_in_full() {
    // Given Hestia limited to 1,024 open files, in front of a cold Python ThreadingHTTPServer
    // (listen backlog 5) that may hold 64 requests in flight (the default max_concurrency)
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = PyBackend::new("py", dir.path()).key("queue_size: 1000");
    write_config(dir.path(), "", &[], &backend.yaml());
    let hestia = HestiaProcess::serve_limited(dir.path(), &[], Some(1024)).await;

    // When 800 clients ask at once (more than half the files: one each, and the upstream side
    // is bounded by max_concurrency; from their own process, so that this test's descriptors
    // stay free for the tests beside it)
    let answers = BurstClients::run(hestia.port, 800, "/services/py/").await;

    // Then every one is answered 200: none is closed unanswered to make room, none refused
    assert_eq!(
        answers["statuses"],
        serde_json::json!({"200": 800}),
        "{answers}"
    );
    assert_eq!(answers["errors"], serde_json::json!({}), "{answers}");
    hestia.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_api_answers_while_every_connection_is_busy() {
    // Given Hestia allowed 4 client connections, each busy with a proxied stream
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = PyBackend::new("py", dir.path());
    write_config(
        dir.path(),
        "http:\n  max_connections: 4",
        &[],
        &backend.yaml(),
    );
    let hestia = HestiaProcess::serve(dir.path(), &[]).await;
    let stream = format!("{}/services/py/stream", hestia.url.clone());
    let first = reqwest::Client::new();
    let warm = first
        .get(format!("{}/services/py/", hestia.url.clone()))
        .send()
        .await
        .expect("warm");
    assert_eq!(warm.status(), 200);
    // Read to its end, so the connection goes back to the client's pool for the first stream
    // (an answer dropped part-read closes its connection, which may still count as open when
    // the fourth stream's connection is let in).
    warm.bytes().await.expect("the warm-up's body");
    let mut busy = Vec::new();
    for n in 0..4 {
        // (the first reuses the warm-up's connection)
        let client = if n == 0 {
            first.clone()
        } else {
            reqwest::Client::new()
        };
        let answer = client.get(&stream).send().await.expect("streaming");
        assert_eq!(answer.status(), 200);
        busy.push(answer);
    }

    // When one more client comes, to the API and to the proxy
    let api = reqwest::Client::new()
        .get(format!("{}/v1/services/py/status", hestia.url.clone()))
        .send()
        .await
        .expect("the API answers");
    let proxied = reqwest::Client::new()
        .get(format!("{}/services/py/", hestia.url.clone()))
        .send()
        .await
        .expect("the proxy answers");

    // Then the API is served, and the proxy says it is saturated (503, Retry-After)
    assert_eq!(api.status(), 200);
    let status: serde_json::Value = api.json().await.expect("status");
    assert_eq!(status["inFlight"], 4);
    assert_eq!(proxied.status(), 503);
    assert!(proxied.headers().contains_key("retry-after"));
    let problem: serde_json::Value = proxied.json().await.expect("problem");
    let kind = problem["type"].as_str().unwrap_or_default();
    assert!(kind.ends_with("/overloaded"), "{problem}");
    // And the busy streams go on
    for mut answer in busy {
        let chunk = answer.chunk().await.expect("the stream goes on");
        assert!(chunk.is_some_and(|c| !c.is_empty()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_timeouts_close_silent_half_sent_idle_and_stalled_clients() {
    // Given short edge timeouts and a backend up
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = PyBackend::new("py", dir.path());
    let http =
        "http:\n  head_timeout_ms: 300\n  keep_alive_timeout_ms: 500\n  body_timeout_ms: 300";
    write_config(dir.path(), http, &[], &backend.yaml());
    let hestia = HestiaProcess::serve(dir.path(), &[]).await;
    let url = hestia.url.clone();
    assert_eq!(
        reqwest::get(format!("{url}/services/py/"))
            .await
            .expect("warm")
            .status(),
        200
    );
    let within = Duration::from_secs(10);

    // A connection that never says anything is closed, unanswered
    let silent = raw_exchange(&url, b"", within).await;
    assert_eq!(silent.as_deref(), Some(""), "silent connection");

    // So is one that sends half a request head
    let half = raw_exchange(&url, b"GET /v1/services HTTP/1.1\r\nhost: x\r\n", within).await;
    assert_eq!(half.as_deref(), Some(""), "half-sent head");

    // An idle keep-alive connection is closed after its request was answered
    let idle = raw_exchange(&url, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n", within)
        .await
        .expect("the idle keep-alive connection is closed");
    assert!(idle.starts_with("HTTP/1.1 200"), "{idle}");

    // A promised body that never comes is answered 408, and the service is not blamed
    let stalled =
        b"POST /services/py/ HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789";
    let answer = raw_exchange(&url, stalled, within)
        .await
        .expect("the stalled request is ended");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("invalid-request"), "{answer}");
    assert_eq!(hestia.status("py").await.expect("status")["state"], "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_for_a_cold_start_outlasts_the_edge_timeouts() {
    // Given 300 ms head and 500 ms keep-alive timeouts, and a cold service that takes 2 s to start
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::new("slow").startup_delay_ms(2000);
    let http = "http:\n  head_timeout_ms: 300\n  keep_alive_timeout_ms: 500";
    write_config(dir.path(), http, &[&sim], "");
    let hestia = HestiaProcess::serve(dir.path(), &[]).await;

    // When a client sends its whole request at once and waits
    let request = b"GET /services/slow/ HTTP/1.1\r\nhost: x\r\n\r\n";
    let answer = raw_exchange(&hestia.url, request, Duration::from_secs(30))
        .await
        .expect("answered, then closed once idle");

    // Then it is answered when the service is up: a request waiting for its service is not a
    // slow request head, and its connection is closed only after its answer, once idle
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        hestia.status("slow").await.expect("status")["state"],
        "ready"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_is_the_clients_fault() {
    // Given a backend up that reads whole request bodies before answering
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::new("py");
    write_config(dir.path(), "", &[&sim], "");
    let hestia = HestiaProcess::serve(dir.path(), &[]).await;
    let url = hestia.url.clone();
    assert_eq!(
        reqwest::get(format!("{url}/services/py/"))
            .await
            .expect("warm")
            .status(),
        200
    );

    // When a client sends a chunked body with a chunk size that is not hexadecimal
    let malformed = b"POST /services/py/ HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n";
    let answer = raw_exchange(&url, malformed, Duration::from_secs(10))
        .await
        .expect("answered and closed");

    // Then it gets 400 invalid-request (not 502 upstream-unreachable), and the service stays ready
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("invalid-request"), "{answer}");
    assert_eq!(hestia.status("py").await.expect("status")["state"], "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_undecodable_path_parameters_are_answered_as_problems() {
    // Given a Hestia with one service
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::new("sim");
    write_config(dir.path(), "", &[&sim], "");
    let hestia = HestiaProcess::serve(dir.path(), &[]).await;
    let within = Duration::from_secs(10);

    // A client that takes it for a forward proxy gets 405, as a problem
    let connect =
        b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\nconnection: close\r\n\r\n";
    let answer = raw_exchange(&hestia.url, connect, within)
        .await
        .expect("the CONNECT is answered and the connection closed");
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");

    // A service id that is not UTF-8 once decoded is an invalid request, as a problem
    let answer = reqwest::get(format!("{}/v1/services/%FF%FE/status", hestia.url))
        .await
        .expect("answered");
    assert_eq!(answer.status(), 400);
    assert_eq!(answer.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = answer.json().await.expect("json");
    assert_eq!(
        problem["type"],
        "https://hestia.dev/problems/invalid-request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_beyond_their_memory_bound_get_503_and_the_bound_is_given_back() {
    // Given envelopes bounded to 16 MiB in memory at once, and a backend that answers slowly
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = PyBackend::new("py", dir.path());
    let globals = format!("max_envelope_memory_bytes: {}\n", 16 * 1024 * 1024);
    write_config(dir.path(), &globals, &[], &backend.yaml());
    let hestia = HestiaProcess::serve(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    let warm = client
        .get(format!("{}/services/py/", hestia.url))
        .send()
        .await
        .expect("cold start");
    assert_eq!(warm.status(), 200);
    let envelope = |path: &str| {
        serde_json::json!({
            "serviceId": "py",
            "method": "POST",
            "path": path,
            "body": "x".repeat(10 * 1024 * 1024),
        })
    };
    let url = format!("{}/v1/requests", hestia.url);

    // When one 10 MiB envelope is being answered (the backend holds it)
    let first = tokio::spawn(client.post(&url).json(&envelope("/slow?ms=6000")).send());
    loop {
        if hestia
            .status("py")
            .await
            .is_some_and(|s| s["inFlight"] == 1)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // and a second one arrives,
    let second = client
        .post(&url)
        .json(&envelope("/"))
        .send()
        .await
        .expect("answered");

    // Then the second is refused at once: 503 overloaded, with Retry-After
    assert_eq!(second.status(), 503);
    assert_eq!(
        second
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let problem: serde_json::Value = second.json().await.expect("problem JSON");
    let kind = problem["type"].as_str().unwrap_or_default();
    assert!(kind.ends_with("/overloaded"), "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("max_envelope_memory_bytes"),
        "{problem}"
    );

    // And once the first is answered, its share is given back: the same envelope now goes through
    let first = first.await.expect("task").expect("answered");
    assert_eq!(first.status(), 200);
    let answer: serde_json::Value = first.json().await.expect("envelope JSON");
    assert_eq!(answer["body"], "got 10485760 bytes");
    let again = client
        .post(&url)
        .json(&envelope("/"))
        .send()
        .await
        .expect("answered");
    assert_eq!(again.status(), 200);
    hestia.stop().await;
}

/// A Python process holding `count` connections to a port open without a byte sent; they close
/// when it is dropped (the process is killed with it).
struct SilentClients {
    _process: tokio::process::Child,
}

impl SilentClients {
    async fn connect(port: u16, count: usize) -> SilentClients {
        use tokio::io::AsyncBufReadExt;
        let script = "import socket, sys\n\
            held = [socket.create_connection(('127.0.0.1', int(sys.argv[1]))) for _ in range(int(sys.argv[2]))]\n\
            print('connected', len(held), flush=True)\n\
            sys.stdin.read()\n";
        let mut child = tokio::process::Command::new("python3")
            .args(["-c", script, &port.to_string(), &count.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        tokio::io::BufReader::new(stdout)
            .read_line(&mut line)
            .await
            .expect("read");
        assert_eq!(line.trim(), format!("connected {count}"), "silent clients");
        SilentClients { _process: child }
    }
}

/// A Python process sending `count` requests for `path` at once, each on its own connection
/// (`Connection: close`), and counting the answers by status and the failures by kind.
struct BurstClients;

const BURST_CLIENT: &str = r#"
import asyncio, json, resource, sys

port, count, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(count + 64, hard)), hard))
statuses, errors = {}, {}

async def one(go):
    await go.wait()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: hestia\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        answer = await reader.read()
        writer.close()
        if not answer:
            raise EOFError("closed without an answer")
        status = answer.split(b" ", 2)[1].decode()
        statuses[status] = statuses.get(status, 0) + 1
    except Exception as error:
        errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1

async def main():
    go = asyncio.Event()
    tasks = [asyncio.create_task(one(go)) for _ in range(count)]
    await asyncio.sleep(0)
    go.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 120)

asyncio.run(main())
print(json.dumps({"statuses": statuses, "errors": errors}), flush=True)
"#;

impl BurstClients {
    async fn run(port: u16, count: usize, path: &str) -> serde_json::Value {
        let output = tokio::process::Command::new("python3")
            .args([
                "-c",
                BURST_CLIENT,
                &port.to_string(),
                &count.to_string(),
                path,
            ])
            .kill_on_drop(true)
            .output()
            .await
            .expect("python3 runs");
        assert!(output.status.success(), "{output:?}");
        serde_json::from_slice(&output.stdout).expect("the burst's counts")
    }
}
