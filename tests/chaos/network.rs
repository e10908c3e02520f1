//! Chaos on the network side: upstream connections across restarts, edge timeouts, HTTP/2,
//! client faults, envelope memory and shutdown.

use futures_util::future::join_all;

use crate::support::{HestiaProcess, PyBackend, Sim, write_config};

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
        pids.push(hestia.status("py").await["pid"].clone());
        // the backend is stopped (SIGTERM) for being idle,
        hestia.wait_for_state("py", "cold").await;
        // and one more request comes, which starts it again
        match client.get(&url).send().await {
            Ok(r) if r.status() == 200 => {}
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
