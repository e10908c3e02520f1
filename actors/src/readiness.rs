//! Readiness probes: is the service up yet (while starting), is it still up (while ready)?
//!
//! A [`Probe`] is built once per service from its [`ReadinessSpec`] and polled by a task the
//! service actor spawns; it never touches actor state. "Not up yet" (connection refused, a 503)
//! keeps the wait going; only the deadline ends it, with the last failure in the error.
//!
//! Between two HTTP or TCP probes of a start, the probe watches the port: a connect every
//! [`WATCH_EVERY`] (a refused one on loopback costs microseconds), and the next probe goes out as
//! soon as one is accepted, so a backend is seen ready within a millisecond or two of binding
//! rather than up to a whole poll interval later. With the duration of the service's last cold
//! start known ([`Probe::expecting`]), the watch only begins at three quarters of it, so a
//! service that takes minutes to load is not connected to a thousand times a second meanwhile.
//! A port seen open once is not watched again (it may be open long before the service is ready).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use crate::placeholders::{PlaceholderError, Vars, expand};
use crate::redact::redact_url;
use crate::spec::{ReadinessSpec, StatusRange};
use crate::starters::error_chain;

/// Timeout of the TCP connect a warm-up service's health check makes.
const WARMUP_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Health-check interval of a warm-up service while ready (the other probes' default).
const WARMUP_HEALTH_INTERVAL: Duration = Duration::from_secs(10);
/// How often a start's probe tries the port between two probes.
pub const WATCH_EVERY: Duration = Duration::from_millis(1);

/// A service's readiness probe. See [`Probe::check`] and [`Probe::wait_ready`].
#[derive(Debug, Clone)]
pub struct Probe {
    service_id: String,
    method: Method,
    client: reqwest::Client,
    /// How long the service's last start took, if known: the port is watched from 3/4 of it.
    expected: Option<Duration>,
}

#[derive(Debug, Clone)]
enum Method {
    Http {
        url: reqwest::Url,
        expect: StatusRange,
        interval: Duration,
        timeout: Duration,
        health_interval: Duration,
    },
    Tcp {
        address: String,
        interval: Duration,
        timeout: Duration,
        health_interval: Duration,
    },
    /// `check` connects to `address`, the base URL's `host:port`, once [`Probe::with_base_url`] set it.
    Warmup {
        duration: Duration,
        address: Option<String>,
    },
}

/// How a successful wait went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeReport {
    /// Probes made, the successful one included (0 for a warm-up).
    pub probes: u32,
    /// From the call of `wait_ready` until ready.
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("service `{service_id}`: readiness {field}: {source}")]
    Placeholder {
        service_id: String,
        field: &'static str,
        #[source]
        source: PlaceholderError,
    },
    #[error("service `{service_id}`: invalid readiness {what} `{value}`: {reason}")]
    Invalid {
        service_id: String,
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("{target} is unreachable: {reason}")]
    Unreachable { target: String, reason: String },
    #[error("{url} answered {status}, expected {}..={}", expected.min, expected.max)]
    Status {
        url: String,
        status: u16,
        expected: StatusRange,
    },
    #[error("{target} did not answer within {timeout:?}")]
    ProbeTimedOut { target: String, timeout: Duration },
    #[error("not ready after {waited:?} ({probes} probes); last: {last}")]
    Timeout {
        waited: Duration,
        probes: u32,
        last: String,
    },
    #[error(
        "service `{service_id}`: a warm-up service has nothing to health-check until \
         `Probe::with_base_url` gives it the service's address"
    )]
    NoCheckTarget { service_id: String },
}

impl Probe {
    /// Builds the probe, expanding `{address}` (and the other placeholders) in its URL or address.
    pub fn new(
        spec: &ReadinessSpec,
        vars: &Vars,
        client: reqwest::Client,
    ) -> Result<Probe, ProbeError> {
        let service_id = vars.service_id.clone();
        let placeholder = |field: &'static str| {
            let service_id = service_id.clone();
            move |source| ProbeError::Placeholder {
                service_id,
                field,
                source,
            }
        };
        let method = match spec {
            ReadinessSpec::Http(http) => {
                let url = expand(&http.url, vars).map_err(placeholder("url"))?;
                let url = reqwest::Url::parse(&url).map_err(|error| ProbeError::Invalid {
                    service_id: service_id.clone(),
                    what: "url",
                    value: redact_url(&url),
                    reason: error.to_string(),
                })?;
                Method::Http {
                    url,
                    expect: http.expect_status,
                    interval: http.interval,
                    timeout: http.timeout,
                    health_interval: http.health_interval,
                }
            }
            ReadinessSpec::Tcp(tcp) => {
                let address = expand(&tcp.address, vars).map_err(placeholder("address"))?;
                check_host_port(&address).map_err(|reason| ProbeError::Invalid {
                    service_id: service_id.clone(),
                    what: "address",
                    value: address.clone(),
                    reason: reason.to_owned(),
                })?;
                Method::Tcp {
                    address,
                    interval: tcp.interval,
                    timeout: tcp.timeout,
                    health_interval: tcp.health_interval,
                }
            }
            ReadinessSpec::Warmup(duration) => Method::Warmup {
                duration: *duration,
                address: None,
            },
        };
        Ok(Probe {
            service_id,
            method,
            client,
            expected: None,
        })
    }

    /// Gives a warm-up probe the service's base URL (already expanded): its `check` then tries a
    /// TCP connect to that URL's host and port. HTTP and TCP probes ignore it.
    pub fn with_base_url(mut self, base_url: &str) -> Result<Probe, ProbeError> {
        if let Method::Warmup { address, .. } = &mut self.method {
            let invalid = |reason: &str| ProbeError::Invalid {
                service_id: self.service_id.clone(),
                what: "base url",
                value: redact_url(base_url),
                reason: reason.to_owned(),
            };
            let url = reqwest::Url::parse(base_url).map_err(|error| invalid(&error.to_string()))?;
            let host = url.host_str().ok_or_else(|| invalid("it has no host"))?;
            let port = url
                .port_or_known_default()
                .ok_or_else(|| invalid("it has no port"))?;
            *address = Some(format!("{host}:{port}"));
        }
        Ok(self)
    }

    /// The service's last start took `expected`: [`Probe::wait_ready`] watches the port only from
    /// three quarters of it on (from the first probe when `None`).
    pub fn expecting(mut self, expected: Option<Duration>) -> Probe {
        self.expected = expected;
        self
    }

    /// `"http"`, `"tcp"` or `"warmup"`.
    pub fn kind(&self) -> &'static str {
        match self.method {
            Method::Http { .. } => "http",
            Method::Tcp { .. } => "tcp",
            Method::Warmup { .. } => "warmup",
        }
    }

    /// How often to check a ready service.
    pub fn health_interval(&self) -> Duration {
        match self.method {
            Method::Http {
                health_interval, ..
            }
            | Method::Tcp {
                health_interval, ..
            } => health_interval,
            Method::Warmup { .. } => WARMUP_HEALTH_INTERVAL,
        }
    }

    /// One probe: the HTTP status is in the expected range, or a TCP connect succeeds.
    pub async fn check(&self) -> Result<(), ProbeError> {
        match &self.method {
            Method::Http {
                url,
                expect,
                timeout,
                ..
            } => self.check_http(url, *expect, *timeout).await,
            Method::Tcp {
                address, timeout, ..
            } => check_tcp(address, *timeout).await,
            Method::Warmup {
                address: Some(address),
                ..
            } => check_tcp(address, WARMUP_CHECK_TIMEOUT).await,
            Method::Warmup { address: None, .. } => Err(ProbeError::NoCheckTarget {
                service_id: self.service_id.clone(),
            }),
        }
    }

    /// Polls every interval until a probe succeeds or `deadline` passes; a warm-up just waits its
    /// time. Never sleeps past `deadline`; on timeout the error carries the last failure.
    pub async fn wait_ready(&self, deadline: Instant) -> Result<ProbeReport, ProbeError> {
        let began = Instant::now();
        let interval = match &self.method {
            Method::Http { interval, .. } | Method::Tcp { interval, .. } => *interval,
            Method::Warmup { duration, .. } => {
                return wait_warmup(*duration, began, deadline).await;
            }
        };
        let mut probes = 0;
        let mut last = String::from("the deadline passed before the first probe");
        let mut watched = self.watched_address().await;
        loop {
            let probe_began = Instant::now();
            if probe_began >= deadline {
                return Err(ProbeError::Timeout {
                    waited: probe_began - began,
                    probes,
                    last,
                });
            }
            probes += 1;
            // A probe may not run past the deadline either.
            match tokio::time::timeout_at(deadline, self.check()).await {
                Ok(Ok(())) => {
                    return Ok(ProbeReport {
                        probes,
                        elapsed: began.elapsed(),
                    });
                }
                Ok(Err(error)) => {
                    debug!(service = %self.service_id, probe = probes, %error, "not ready yet");
                    last = error.to_string();
                }
                // The answer before it (a status, a refusal) is the diagnosis worth keeping.
                Err(_) if probes > 1 => {
                    last = format!("{last}; probe {probes} was still running at the deadline")
                }
                Err(_) => last = format!("probe {probes} was still running at the deadline"),
            }
            // The next probe, or the deadline (where the loop's first check ends the wait).
            let next = (probe_began + interval).min(deadline);
            let watch_from = self.expected.map_or(began, |e| began + e.mul_f64(0.75));
            match watched {
                Some(address) if next >= watch_from => {
                    tokio::time::sleep_until(watch_from).await;
                    if watch_port(address, next).await {
                        // Open now: probe at once, and do not watch it again.
                        watched = None;
                    }
                }
                _ => tokio::time::sleep_until(next).await,
            }
        }
    }

    /// The address a start's probe watches between probes: the HTTP URL's or the TCP probe's,
    /// resolved once.
    async fn watched_address(&self) -> Option<SocketAddr> {
        let address = match &self.method {
            Method::Http { url, .. } => {
                format!("{}:{}", url.host_str()?, url.port_or_known_default()?)
            }
            Method::Tcp { address, .. } => address.clone(),
            Method::Warmup { .. } => return None,
        };
        tokio::net::lookup_host(address).await.ok()?.next()
    }

    async fn check_http(
        &self,
        url: &reqwest::Url,
        expect: StatusRange,
        timeout: Duration,
    ) -> Result<(), ProbeError> {
        let sent = tokio::time::timeout(timeout, self.client.get(url.clone()).send()).await;
        // Errors name the URL redacted; reqwest's own error goes without it.
        let shown = || redact_url(url.as_str());
        let response = match sent {
            Err(_) => {
                return Err(ProbeError::ProbeTimedOut {
                    target: shown(),
                    timeout,
                });
            }
            Ok(Err(error)) => {
                return Err(ProbeError::Unreachable {
                    target: shown(),
                    reason: error_chain(&error.without_url()),
                });
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        if expect.contains(status) {
            Ok(())
        } else {
            Err(ProbeError::Status {
                url: shown(),
                status,
                expected: expect,
            })
        }
    }
}

async fn wait_warmup(
    duration: Duration,
    began: Instant,
    deadline: Instant,
) -> Result<ProbeReport, ProbeError> {
    let ready_at = began + duration;
    if ready_at > deadline {
        tokio::time::sleep_until(deadline).await;
        return Err(ProbeError::Timeout {
            waited: deadline.saturating_duration_since(began),
            probes: 0,
            last: format!("the warm-up of {duration:?} does not fit before the start deadline"),
        });
    }
    tokio::time::sleep_until(ready_at).await;
    Ok(ProbeReport {
        probes: 0,
        elapsed: began.elapsed(),
    })
}

/// Tries to connect to `address` every [`WATCH_EVERY`] until one is accepted (true) or `until`
/// passes (false).
async fn watch_port(address: SocketAddr, until: Instant) -> bool {
    while Instant::now() < until {
        match tokio::time::timeout_at(until, TcpStream::connect(address)).await {
            Ok(Ok(_stream)) => return true,
            Ok(Err(_)) => {}
            Err(_) => return false,
        }
        tokio::time::sleep_until((Instant::now() + WATCH_EVERY).min(until)).await;
    }
    false
}

async fn check_tcp(address: &str, timeout: Duration) -> Result<(), ProbeError> {
    match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(error)) => Err(ProbeError::Unreachable {
            target: format!("tcp://{address}"),
            reason: error.to_string(),
        }),
        Err(_) => Err(ProbeError::ProbeTimedOut {
            target: format!("tcp://{address}"),
            timeout,
        }),
    }
}

/// `host:port` with a numeric port (`[::1]:80` for IPv6).
fn check_host_port(address: &str) -> Result<(), &'static str> {
    let (host, port) = address.rsplit_once(':').ok_or("expected host:port")?;
    if host.is_empty() {
        return Err("the host is empty");
    }
    port.parse::<u16>()
        .map(|_| ())
        .map_err(|_| "the port is not a number from 0 to 65535")
}
