//! The per-request cost of a Rhai strategy decision: the example plugins of `strategies/`, each
//! asked to choose among four candidates for a request with headers and a JSON body, as the
//! proxy asks them (context and candidate maps built per call). Target: under 20 µs.
//!
//! Run on a quiet machine: `cargo run --release -p hestia-actors --example rhai_decision`
//! (add a number of decisions per plugin as the argument; default 100000).

use std::path::Path;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};
use hestia_actors::strategy::rhai::PluginHost;
use hestia_actors::strategy::{Candidate, RequestContext};
use serde_json::json;

const TARGET: Duration = Duration::from_micros(20);

fn main() {
    let decisions: u32 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../strategies");
    let host = PluginHost::start(&dir);
    let regions = ["", "gpu", "gpu", "cpu"];
    let urls = ["http://own", "http://gpu-1", "http://gpu-2", "http://cpu"];
    let candidates: Vec<Candidate<'_>> = (0..4)
        .map(|i| Candidate {
            url: urls[i],
            weight: 1 + i as u32,
            region: Some(regions[i]),
            healthy: true,
            in_flight: i,
            awake: true,
            ..Candidate::default()
        })
        .collect();
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("x-user", HeaderValue::from_static("alice"));
    headers.insert("user-agent", HeaderValue::from_static("OpenAI/Python 1.0"));
    let body = json!({"model": "llama3:8b", "stream": true, "temperature": 0.2});
    let body = body.as_object().cloned().unwrap_or_default();

    println!("{decisions} decisions per plugin, 4 candidates, target < {TARGET:?}");
    let mut over = false;
    for slot in host.slots() {
        let Some(plugin) = host.strategy(&slot.name) else {
            continue;
        };
        let mut request = RequestContext::new("llm", "POST", "/v1/chat/completions", &headers);
        request.client = "127.0.0.1:40000".parse().ok();
        request.body = Some(&body);
        // Warm up, then measure.
        for _ in 0..1_000 {
            let _ = plugin.choose(&candidates, &request);
        }
        let began = Instant::now();
        for _ in 0..decisions {
            let _ = std::hint::black_box(plugin.choose(&candidates, &request));
        }
        let each = began.elapsed() / decisions;
        over |= each >= TARGET;
        println!(
            "{:<16} {:>8.2} µs per decision",
            slot.name,
            each.as_secs_f64() * 1e6
        );
    }
    if over {
        println!("OVER TARGET");
        std::process::exit(1);
    }
}
