//! `hestia healthcheck`: the container's HEALTHCHECK. It reads the listen address exactly as
//! `serve` does (the config file, then `HESTIA_LISTEN`), asks that address for `/healthz` and
//! exits 0 only for a 200 `{"status":"ok"}`. One short line either way, nothing else: Docker
//! keeps the output of every probe.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::config::Config;

/// How long the probe may take; Docker's own `--timeout` should be a little longer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a client on this host reaches a server listening on `listen`: an unspecified address
/// (`0.0.0.0`, `[::]`) is reached through the loopback of the same family.
pub fn probe_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Probes the Hestia that `config` describes.
pub async fn run(config: &Config) -> ExitCode {
    let url = format!("http://{}/healthz", probe_address(config.listen));
    match probe(&url).await {
        Ok(version) => {
            println!("healthy: {url} (hestia {version})");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            println!("unhealthy: {url}: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// `Ok(version)` for a healthy answer, else why not.
async fn probe(url: &str) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .build()
        .map_err(|error| format!("no HTTP client: {error}"))?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|error| format!("no answer: {error}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|error| format!("{status}, body is not JSON: {error}"))?;
    if status != reqwest::StatusCode::OK || body["status"] != "ok" {
        return Err(format!("{status} {body}"));
    }
    Ok(body["version"].as_str().unwrap_or("?").to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_an_unspecified_listen_address_then_the_probe_goes_to_loopback() {
        let probe = |text: &str| probe_address(text.parse().expect("an address")).to_string();
        assert_eq!(probe("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(probe("[::]:9000"), "[::1]:9000");
        assert_eq!(probe("10.1.2.3:81"), "10.1.2.3:81");
    }
}
