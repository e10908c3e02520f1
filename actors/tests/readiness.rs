//! Readiness probes against real sockets on 127.0.0.1 (an axum backend that appears late, answers
//! a chosen status, or never comes up) and warm-ups on tokio's paused clock.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use hestia_actors::placeholders::Vars;
use hestia_actors::readiness::{Probe, ProbeError};
use hestia_actors::spec::{HttpProbeSpec, ReadinessSpec, StatusRange, TcpProbeSpec};
use tokio::net::TcpListener;
use tokio::time::Instant;

fn vars(service_id: &str) -> Vars {
    Vars {
        address: Some("127.0.0.1".into()),
        service_id: service_id.into(),
        hestia_exe: None,
    }
}

fn http_probe(url: String, expect_status: StatusRange) -> ReadinessSpec {
    ReadinessSpec::Http(HttpProbeSpec {
        url,
        expect_status,
        interval: Duration::from_millis(20),
        timeout: Duration::from_secs(1),
        health_interval: Duration::from_secs(10),
    })
}

fn tcp_probe(address: String) -> ReadinessSpec {
    ReadinessSpec::Tcp(TcpProbeSpec {
        address,
        interval: Duration::from_millis(20),
        timeout: Duration::from_secs(1),
        health_interval: Duration::from_secs(5),
    })
}

fn probe(spec: &ReadinessSpec) -> Probe {
    Probe::new(spec, &vars("svc"), reqwest::Client::new()).unwrap()
}

/// Serves `status` for every request on `listener`.
fn serve_status(listener: TcpListener, status: StatusCode) {
    let app = Router::new().fallback(move || async move { (status, "probe answer") });
    tokio::spawn(async move { axum::serve(listener, app).await });
}

/// A backend answering `status` on 127.0.0.1:0.
async fn backend(status: StatusCode) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    serve_status(listener, status);
    address
}

/// An address on which nothing listens: a port that was free a moment ago.
async fn free_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn given_a_backend_that_starts_listening_later_then_the_http_probe_waits_and_succeeds() {
    let address = free_address().await;
    let spec = http_probe(
        format!("http://{{address}}:{}/health", address.port()),
        StatusRange::default(),
    );
    let probe = probe(&spec);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        serve_status(TcpListener::bind(address).await.unwrap(), StatusCode::OK);
    });

    let report = probe
        .wait_ready(Instant::now() + Duration::from_secs(20))
        .await
        .unwrap();

    assert!(
        report.probes >= 2,
        "connection refused meant 'not yet', then a later probe succeeded: {report:?}"
    );
    assert_eq!(probe.kind(), "http");
}

#[tokio::test]
async fn given_a_backend_that_never_comes_up_then_the_timeout_error_counts_probes_and_says_why() {
    let address = free_address().await;
    let probe = probe(&http_probe(
        format!("http://{address}/health"),
        StatusRange::default(),
    ));

    let error = probe
        .wait_ready(Instant::now() + Duration::from_millis(500))
        .await
        .unwrap_err();

    let ProbeError::Timeout {
        waited,
        probes,
        last,
    } = &error
    else {
        panic!("{error:?}")
    };
    assert!(*probes >= 2, "{error}");
    assert!(*waited >= Duration::from_millis(500), "{error}");
    assert!(
        last.contains(&address.to_string()) && last.contains("unreachable"),
        "{error}"
    );
}

#[tokio::test]
async fn given_a_backend_answering_503_then_the_timeout_reports_the_status() {
    let address = backend(StatusCode::SERVICE_UNAVAILABLE).await;
    let probe = probe(&http_probe(
        format!("http://{address}/ready"),
        StatusRange::default(),
    ));

    let error = probe
        .wait_ready(Instant::now() + Duration::from_millis(300))
        .await
        .unwrap_err();

    let ProbeError::Timeout { last, .. } = &error else {
        panic!("{error:?}")
    };
    assert!(last.contains("answered 503, expected 200..=399"), "{error}");
}

#[tokio::test]
async fn expect_status_decides_which_answers_count_as_ready() {
    let no_content = backend(StatusCode::NO_CONTENT).await;
    let not_found = backend(StatusCode::NOT_FOUND).await;
    let only_2xx = StatusRange { min: 200, max: 299 };

    probe(&http_probe(format!("http://{no_content}/"), only_2xx))
        .check()
        .await
        .unwrap();
    let error = probe(&http_probe(format!("http://{not_found}/"), only_2xx))
        .check()
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProbeError::Status { status: 404, .. }),
        "{error:?}"
    );
    let any_4xx = StatusRange { min: 400, max: 404 };
    probe(&http_probe(format!("http://{not_found}/"), any_4xx))
        .check()
        .await
        .unwrap();
}

#[tokio::test]
async fn given_a_tcp_probe_then_it_is_ready_while_something_listens() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let probe = probe(&tcp_probe(format!("{{address}}:{}", address.port())));

    let report = probe
        .wait_ready(Instant::now() + Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(report.probes, 1);
    assert_eq!(probe.kind(), "tcp");
    assert_eq!(probe.health_interval(), Duration::from_secs(5));

    drop(listener);
    let error = probe.check().await.unwrap_err();
    assert!(matches!(error, ProbeError::Unreachable { .. }), "{error:?}");
}

#[tokio::test]
async fn a_tcp_address_without_a_port_is_rejected_when_the_probe_is_built() {
    let error = Probe::new(
        &tcp_probe("{address}".into()),
        &vars("svc"),
        reqwest::Client::new(),
    )
    .unwrap_err();
    assert!(
        matches!(
            error,
            ProbeError::Invalid {
                what: "address",
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn given_a_warmup_then_wait_ready_waits_exactly_the_warmup() {
    let probe = probe(&ReadinessSpec::Warmup(Duration::from_secs(2)));
    let began = Instant::now();

    let report = probe
        .wait_ready(began + Duration::from_secs(60))
        .await
        .unwrap();

    assert_eq!(report.elapsed, Duration::from_secs(2));
    assert_eq!(report.probes, 0);
    assert_eq!(began.elapsed(), Duration::from_secs(2));
    assert_eq!(probe.kind(), "warmup");
}

#[tokio::test(start_paused = true)]
async fn given_a_warmup_longer_than_the_deadline_then_it_times_out_at_the_deadline() {
    let probe = probe(&ReadinessSpec::Warmup(Duration::from_secs(30)));
    let began = Instant::now();

    let error = probe
        .wait_ready(began + Duration::from_secs(5))
        .await
        .unwrap_err();

    assert!(
        matches!(error, ProbeError::Timeout { probes: 0, .. }),
        "{error:?}"
    );
    assert_eq!(
        began.elapsed(),
        Duration::from_secs(5),
        "never sleeps past the deadline"
    );
}

#[tokio::test]
async fn a_warmup_service_is_health_checked_by_connecting_to_its_base_url() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let spec = ReadinessSpec::Warmup(Duration::from_millis(10));

    let without_base_url = probe(&spec).check().await.unwrap_err();
    assert!(
        matches!(without_base_url, ProbeError::NoCheckTarget { .. }),
        "{without_base_url:?}"
    );

    let probe = probe(&spec)
        .with_base_url(&format!("http://{address}/v1"))
        .unwrap();
    probe.check().await.unwrap();
    drop(listener);
    assert!(probe.check().await.is_err(), "nothing listens any more");
}

#[tokio::test]
async fn an_unknown_placeholder_in_the_probe_url_is_an_error_naming_it() {
    let spec = http_probe("http://{addres}:8000/health".into(), StatusRange::default());
    let error = Probe::new(&spec, &vars("svc"), reqwest::Client::new()).unwrap_err();
    assert!(error.to_string().contains("{addres}"), "{error}");
}

/// An HTTP probe of `address` polling every 10 s: only the port watch can see it ready sooner.
fn slow_poll(address: SocketAddr) -> ReadinessSpec {
    ReadinessSpec::Http(HttpProbeSpec {
        url: format!("http://{address}/health"),
        expect_status: StatusRange::default(),
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(1),
        health_interval: Duration::from_secs(10),
    })
}

/// Binds `address` after `delay` and answers 200 on it.
fn bind_later(address: SocketAddr, delay: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        serve_status(TcpListener::bind(address).await.unwrap(), StatusCode::OK);
    });
}

#[tokio::test]
async fn a_port_that_opens_between_two_probes_is_probed_at_once() {
    // Given a backend that binds 300 ms from now, and a probe polling every 10 s
    let address = free_address().await;
    bind_later(address, Duration::from_millis(300));

    // When the start waits for it, with a deadline long before the second poll would come
    let report = probe(&slow_poll(address))
        .wait_ready(Instant::now() + Duration::from_secs(5))
        .await
        .expect("ready before the deadline");

    // Then the second probe went out when the port opened, and found it ready
    assert_eq!(report.probes, 2);
}

#[tokio::test]
async fn the_port_is_not_watched_long_before_a_start_is_expected_to_end() {
    // Given a service whose last start took a minute, and a backend that binds 300 ms from now
    let address = free_address().await;
    bind_later(address, Duration::from_millis(300));

    // When the start waits for it for 2 s, polling every 10 s
    let error = probe(&slow_poll(address))
        .expecting(Some(Duration::from_secs(60)))
        .wait_ready(Instant::now() + Duration::from_secs(2))
        .await
        .unwrap_err();

    // Then nothing but the first probe went out: the watch waits for 3/4 of the expected minute
    assert!(
        matches!(error, ProbeError::Timeout { probes: 1, .. }),
        "{error:?}"
    );
}
