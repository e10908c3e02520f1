//! `max_concurrency`: a service's backend never has more requests in flight than its limit; the
//! others wait in the queue for a slot and are answered when one frees.

mod support;

use futures_util::future::join_all;

use crate::support::{HestiaProcess, PyBackend, write_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_never_has_more_requests_in_flight_than_max_concurrency() {
    // Given a Python backend whose service lets 2 requests in flight at once
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = PyBackend::new("py", dir.path()).key("max_concurrency: 2");
    write_config(dir.path(), "", &[], &backend.yaml());
    let hestia = HestiaProcess::serve(dir.path(), &[]).await;
    let client = reqwest::Client::new();

    // When 8 clients call a slow endpoint at once (the first one starts the service, all wait)
    let url = format!("{}/services/py/slow?ms=200", hestia.url);
    let answers = join_all((0..8).map(|_| client.get(&url).send())).await;

    // Then every one is answered
    for answer in answers {
        let answer = answer.expect("Hestia answers");
        assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    }
    // And the backend never had more than 2 of them at once
    let most: u32 = client
        .get(format!("{}/most_in_flight", backend.url()))
        .send()
        .await
        .expect("the backend answers")
        .text()
        .await
        .expect("a number")
        .trim()
        .parse()
        .expect("a number");
    assert!(
        (1..=2).contains(&most),
        "the backend had {most} requests in flight at once"
    );
}
