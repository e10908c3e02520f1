//! `hestia status|start|stop|logs`: clients of a running Hestia's `/v1` API.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use super::{ClientArgs, Format};

pub async fn status(args: &ClientArgs, service: Option<&str>) -> anyhow::Result<ExitCode> {
    let path = match service {
        Some(id) => format!("/v1/services/{id}/status"),
        None => "/v1/services".to_owned(),
    };
    let (ok, body) = call(args, reqwest::Method::GET, &path).await?;
    if args.format == Format::Json || !ok {
        return Ok(print_json(ok, &body));
    }
    let rows: Vec<&Value> = match body.get("services").and_then(Value::as_array) {
        Some(list) => list.iter().collect(),
        None => vec![&body],
    };
    println!(
        "{:<24} {:<9} {:<16} {:>6} {:>9}  LAST ERROR",
        "SERVICE", "STATE", "MACHINE", "QUEUE", "IN FLIGHT"
    );
    for row in rows {
        let text = |key: &str| {
            row.get(key)
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_owned()
        };
        let number = |key: &str| row.get(key).and_then(Value::as_u64).unwrap_or(0);
        println!(
            "{:<24} {:<9} {:<16} {:>6} {:>9}  {}",
            text("serviceId"),
            text("state"),
            text("machineId"),
            number("queuePending"),
            number("inFlight"),
            text("lastError"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn start(args: &ClientArgs, service: &str, wait: bool) -> anyhow::Result<ExitCode> {
    let path = format!(
        "/v1/services/{service}/start{}",
        if wait { "?wait=true" } else { "" }
    );
    let (ok, body) = call(args, reqwest::Method::POST, &path).await?;
    Ok(print_json(ok, &body))
}

pub async fn stop(args: &ClientArgs, service: &str) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/services/{service}/stop");
    let (ok, body) = call(args, reqwest::Method::POST, &path).await?;
    Ok(print_json(ok, &body))
}

/// Prints the service's last `lines` output lines; with `follow`, then each new one until the
/// connection ends (Hestia stopped) or the user interrupts.
pub async fn logs(
    args: &ClientArgs,
    service: &str,
    lines: usize,
    follow: bool,
) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let url = format!(
        "{}/v1/services/{service}/logs?lines={lines}&follow={follow}",
        args.url.trim_end_matches('/')
    );
    let mut response = reqwest::get(&url)
        .await
        .with_context(|| format!("cannot reach Hestia at {}", args.url))?;
    if !response.status().is_success() {
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        return Ok(print_json(false, &body));
    }
    let mut stdout = std::io::stdout();
    while let Some(chunk) = response
        .chunk()
        .await
        .context("the log stream from Hestia broke off")?
    {
        stdout.write_all(&chunk)?;
        stdout.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn call(
    args: &ClientArgs,
    method: reqwest::Method,
    path: &str,
) -> anyhow::Result<(bool, Value)> {
    let url = format!("{}{path}", args.url.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .request(method, &url)
        .send()
        .await
        .with_context(|| format!("cannot reach Hestia at {}", args.url))?;
    let ok = response.status().is_success();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    Ok((ok, body))
}

fn print_json(ok: bool, body: &Value) -> ExitCode {
    let text = serde_json::to_string_pretty(body).unwrap_or_default();
    if ok {
        println!("{text}");
        ExitCode::SUCCESS
    } else {
        eprintln!("{text}");
        ExitCode::FAILURE
    }
}
