//! `hestia status|start|stop|activity|logs`: clients of a running Hestia's `/v1` API.
//!
//! Where Hestia is: `--url` / `HESTIA_URL`, else the configuration's `listen` address (with
//! `HESTIA_LISTEN` applied). Problems are printed as their title and detail, never as JSON, and
//! each kind of failure has its own exit code ([`EXIT_CODES_HELP`]) so scripts can tell them
//! apart. `start` and `stop` are idempotent: asking for what already holds is a success.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::sse::{SseEvent, SseReader};
use super::{ClientArgs, Format};
use crate::config::{self, env::Source};

/// The exit codes of the client commands, for `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes of the client commands (status, start, stop, activity):
  0  done (also: start of a service already starting or ready, stop of one already cold)
  1  Hestia refused or the operation failed (e.g. the service failed to start)
  2  bad command line
  3  Hestia could not be reached, or answered something that is not Hestia's API
  4  no such service
  5  not allowed: a missing, wrong or insufficient API key
  6  timed out waiting for the service";

/// Why a client command failed; each maps to one exit code.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot find Hestia's address: {0}; pass --url or set HESTIA_URL")]
    Address(String),
    #[error("cannot reach Hestia at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered {status} with a body that is not Hestia's API: {reason}")]
    BadAnswer {
        url: String,
        status: u16,
        reason: String,
    },
    /// Hestia answered with a problem (RFC 9457).
    #[error("{title}: {detail}{hint}")]
    Problem {
        status: u16,
        slug: String,
        title: String,
        detail: String,
        hint: &'static str,
    },
    #[error("the event stream from {url} ended: {reason}")]
    StreamEnded { url: String, reason: String },
}

impl ClientError {
    /// The exit code scripts see (see [`EXIT_CODES_HELP`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Address(_)
            | ClientError::Unreachable { .. }
            | ClientError::BadAnswer { .. }
            | ClientError::StreamEnded { .. } => 3,
            ClientError::Problem { slug, status, .. } => match (slug.as_str(), status) {
                ("unknown-service", _) => 4,
                ("unauthorized" | "forbidden", _) | (_, 401 | 403) => 5,
                ("queue-timeout" | "upstream-timeout", _) => 6,
                _ => 1,
            },
        }
    }

    fn is_conflict(&self) -> bool {
        matches!(self, ClientError::Problem { status: 409, .. })
    }
}

/// Hestia's base URL for these arguments: `--url`/`HESTIA_URL`, else from the configuration.
pub fn base_url(args: &ClientArgs, env: &dyn Source) -> Result<String, ClientError> {
    if let Some(url) = args.url.as_deref().filter(|u| !u.trim().is_empty()) {
        let url = url.trim().trim_end_matches('/');
        return Ok(if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        });
    }
    listen_url(&args.config_path(), env)
}

/// The URL a local client reaches the configured `listen` address at.
fn listen_url(path: &Path, env: &dyn Source) -> Result<String, ClientError> {
    let listen = match config::load(path, env) {
        Ok(config) => config.listen,
        Err(config::ConfigError::Missing { .. }) => {
            let text = env
                .get(config::env::HESTIA_LISTEN)
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| config::DEFAULT_LISTEN.to_owned());
            text.parse().map_err(|e| {
                ClientError::Address(format!(
                    "{}=`{text}` is not an address such as 127.0.0.1:8080: {e}",
                    config::env::HESTIA_LISTEN
                ))
            })?
        }
        Err(error) => return Err(ClientError::Address(error.to_string())),
    };
    let ip = match listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    Ok(format!(
        "http://{}",
        std::net::SocketAddr::new(ip, listen.port())
    ))
}

/// One running Hestia, as seen from the command line.
pub struct Client {
    base: String,
    api_key: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(args: &ClientArgs) -> Result<Client, ClientError> {
        Ok(Client {
            base: base_url(args, &config::env::ProcessEnv)?,
            api_key: args.api_key.clone().filter(|k| !k.is_empty()),
            http: reqwest::Client::new(),
        })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Sends a request and returns its JSON body, or the problem it answered.
    pub async fn call(&self, method: Method, path: &str) -> Result<Value, ClientError> {
        let response = self
            .request(method, path)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        self.json(response).await
    }

    async fn json(&self, response: reqwest::Response) -> Result<Value, ClientError> {
        let status = response.status();
        let url = response.url().to_string();
        let bad = |reason: String| ClientError::BadAnswer {
            url: url.clone(),
            status: status.as_u16(),
            reason,
        };
        let body: Value = response
            .json()
            .await
            .map_err(|e| bad(format!("not JSON ({e})")))?;
        if status.is_success() {
            return Ok(body);
        }
        Err(problem(status, &body)
            .unwrap_or_else(|| bad(format!("not a problem document: {body}"))))
    }

    /// Opens `GET /v1/events` (after `last_id`, when given).
    pub async fn events(
        &self,
        query: &str,
        last_id: Option<&str>,
    ) -> Result<SseReader, ClientError> {
        let mut request = self
            .request(Method::GET, &format!("/v1/events{query}"))
            .header("accept", "text/event-stream");
        if let Some(id) = last_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        if !response.status().is_success() {
            return Err(match self.json(response).await {
                Err(error) => error,
                Ok(body) => ClientError::BadAnswer {
                    url: format!("{}/v1/events", self.base),
                    status: 200,
                    reason: format!("expected an event stream, got {body}"),
                },
            });
        }
        Ok(SseReader::new(response.bytes_stream().boxed()))
    }

    fn unreachable(&self, error: &reqwest::Error) -> ClientError {
        let mut reason = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            reason = format!("{reason}: {cause}");
            source = cause.source();
        }
        ClientError::Unreachable {
            url: self.base.clone(),
            reason,
        }
    }

    fn stream_ended(&self, reason: impl Into<String>) -> ClientError {
        ClientError::StreamEnded {
            url: format!("{}/v1/events", self.base),
            reason: reason.into(),
        }
    }
}

/// The problem in an error answer, if it is one.
fn problem(status: StatusCode, body: &Value) -> Option<ClientError> {
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
    let kind = text("type")?;
    let slug = kind.rsplit('/').next().unwrap_or(&kind).to_owned();
    let hint = match status.as_u16() {
        401 => " (pass --api-key or set HESTIA_API_KEY)",
        403 => " (the API key lacks the scope this needs)",
        _ => "",
    };
    Some(ClientError::Problem {
        status: status.as_u16(),
        title: text("title").unwrap_or_else(|| slug.clone()),
        detail: text("detail").unwrap_or_default(),
        slug,
        hint,
    })
}

/// Prints the error and turns it into the exit code.
fn fail(error: &ClientError) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(error.exit_code())
}

fn finish(result: Result<(), ClientError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

pub async fn status(args: &ClientArgs, service: Option<&str>, format: Format) -> ExitCode {
    finish(print_status(args, service, format).await)
}

async fn print_status(
    args: &ClientArgs,
    service: Option<&str>,
    format: Format,
) -> Result<(), ClientError> {
    let client = Client::new(args)?;
    let path = match service {
        Some(id) => format!("/v1/services/{id}/status"),
        None => "/v1/services".to_owned(),
    };
    let body = client.call(Method::GET, &path).await?;
    if format == Format::Json {
        println!("{}", pretty(&body));
        return Ok(());
    }
    let rows: Vec<&Value> = match body.get("services").and_then(Value::as_array) {
        Some(list) => list.iter().collect(),
        None => vec![&body],
    };
    println!(
        "{:<20} {:<9} {:<14} {:>6} {:>9}  {:<20} LAST ERROR",
        "SERVICE", "STATE", "MACHINE", "QUEUE", "IN FLIGHT", "LAST USED"
    );
    for row in rows {
        let text = |key: &str| row.get(key).and_then(Value::as_str).unwrap_or("-");
        let number = |key: &str| row.get(key).and_then(Value::as_u64).unwrap_or(0);
        println!(
            "{:<20} {:<9} {:<14} {:>6} {:>9}  {:<20} {}",
            text("serviceId"),
            text("state"),
            text("machineId"),
            number("queuePending"),
            number("inFlight"),
            short_time(text("lastUsedAt")),
            text("lastError"),
        );
    }
    Ok(())
}

pub async fn start(args: &ClientArgs, service: &str, wait: bool, format: Format) -> ExitCode {
    let result = match Client::new(args) {
        Ok(client) if wait => start_and_wait(&client, service, format).await,
        Ok(client) => act(&client, service, "start", format).await,
        Err(error) => Err(error),
    };
    finish(result)
}

/// `start` or `stop` once: asking for what already holds (a conflict) is a success with a note.
async fn act(
    client: &Client,
    service: &str,
    action: &str,
    format: Format,
) -> Result<(), ClientError> {
    let path = format!("/v1/services/{service}/{action}");
    let note = match client.call(Method::POST, &path).await {
        Ok(_) => None,
        Err(error) if error.is_conflict() => Some(error),
        Err(error) => return Err(error),
    };
    let status = client
        .call(Method::GET, &format!("/v1/services/{service}/status"))
        .await?;
    match (format, note) {
        (Format::Json, _) => println!("{}", pretty(&status)),
        (Format::Table, None) => println!("{service}: {action} initiated ({})", state_of(&status)),
        (Format::Table, Some(_)) => {
            println!("{service} is already {}: nothing to do", state_of(&status))
        }
    }
    Ok(())
}

/// Starts `service` and shows its progress from the event stream until the start settles.
async fn start_and_wait(client: &Client, service: &str, format: Format) -> Result<(), ClientError> {
    let began = Instant::now();
    let mut events = client.events(&format!("?service={service}"), None).await?;
    let path = format!("/v1/services/{service}/start?wait=true");
    let outcome = client.call(Method::POST, &path);
    tokio::pin!(outcome);
    let mut progress = Progress::new(service, format == Format::Table);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let outcome = loop {
        tokio::select! {
            outcome = &mut outcome => break outcome,
            event = events.next() => match event {
                Some(event) => progress.apply(&event, began.elapsed()),
                // The stream may end (a proxy, a restart): the POST still tells the outcome.
                None => progress.live = false,
            },
            _ = tick.tick() => progress.redraw(began.elapsed()),
        }
    };
    progress.clear();
    let status = outcome?;
    match format {
        Format::Json => println!("{}", pretty(&status)),
        Format::Table => println!(
            "{service} is {} ({:.1} s)",
            state_of(&status),
            began.elapsed().as_secs_f64()
        ),
    }
    Ok(())
}

/// `hestia logs SERVICE`: the service's last `lines` output lines; with `follow`, then each new
/// one until the connection ends (Hestia stopped) or the user interrupts.
pub async fn logs(args: &ClientArgs, service: &str, lines: usize, follow: bool) -> ExitCode {
    finish(print_logs(args, service, lines, follow).await)
}

async fn print_logs(
    args: &ClientArgs,
    service: &str,
    lines: usize,
    follow: bool,
) -> Result<(), ClientError> {
    let client = Client::new(args)?;
    let path = format!("/v1/services/{service}/logs?lines={lines}&follow={follow}");
    let response = client
        .request(Method::GET, &path)
        .send()
        .await
        .map_err(|e| client.unreachable(&e))?;
    if !response.status().is_success() {
        return Err(client
            .json(response)
            .await
            .err()
            .unwrap_or_else(|| ClientError::BadAnswer {
                url: format!("{}{path}", client.base),
                status: 200,
                reason: "expected log lines".into(),
            }));
    }
    let mut body = response.bytes_stream();
    let mut stdout = std::io::stdout();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ClientError::StreamEnded {
            url: format!("{}{path}", client.base),
            reason: e.to_string(),
        })?;
        // A closed stdout (`hestia logs x | head`) ends the command quietly.
        if stdout
            .write_all(&chunk)
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break;
        }
    }
    Ok(())
}

/// The live progress line of `start --wait`: redrawn in place on a terminal, one line per
/// state change otherwise.
struct Progress<'a> {
    service: &'a str,
    show: bool,
    tty: bool,
    live: bool,
    state: String,
    queue: u64,
    drawn: bool,
}

impl<'a> Progress<'a> {
    fn new(service: &'a str, show: bool) -> Progress<'a> {
        Progress {
            service,
            show,
            tty: std::io::stderr().is_terminal(),
            live: true,
            state: "unknown".into(),
            queue: 0,
            drawn: false,
        }
    }

    fn apply(&mut self, event: &SseEvent, elapsed: Duration) {
        let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
            return;
        };
        if let Some(queue) = data.get("queuePending").and_then(Value::as_u64) {
            self.queue = queue;
        }
        if event.event == "state"
            && let Some(to) = data.get("to").and_then(Value::as_str)
            && to != self.state
        {
            self.state = to.to_owned();
            if self.show && !self.tty {
                eprintln!(
                    "{}: {} ({:.1} s)",
                    self.service,
                    self.state,
                    elapsed.as_secs_f64()
                );
            }
        }
        self.redraw(elapsed);
    }

    fn redraw(&mut self, elapsed: Duration) {
        if !(self.show && self.tty) {
            return;
        }
        let stream = if self.live {
            ""
        } else {
            " (event stream lost)"
        };
        eprint!(
            "\r\x1b[2K{}: {} · queue {} · {:.1} s{stream}",
            self.service,
            self.state,
            self.queue,
            elapsed.as_secs_f64()
        );
        let _ = std::io::stderr().flush();
        self.drawn = true;
    }

    fn clear(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        }
    }
}

pub async fn stop(args: &ClientArgs, service: &str, format: Format) -> ExitCode {
    let result = match Client::new(args) {
        Ok(client) => act(&client, service, "stop", format).await,
        Err(error) => Err(error),
    };
    finish(result)
}

/// Flags of `hestia activity`.
#[derive(Debug, Clone, clap::Args)]
pub struct ActivityArgs {
    /// Only this service's events.
    #[arg(long)]
    pub service: Option<String>,
    /// Only events of this type (`started`, `start_failed`, `queued`, ...).
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// How many recorded events to show first (at most 1000).
    #[arg(long, default_value_t = 20)]
    pub limit: u64,
    /// Keep printing events as they happen, until interrupted.
    #[arg(long, short)]
    pub follow: bool,
    /// `table`: one line per event; `json`: one JSON object per line.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn activity(args: &ActivityArgs) -> ExitCode {
    finish(print_activity(args).await)
}

async fn print_activity(args: &ActivityArgs) -> Result<(), ClientError> {
    let client = Client::new(&args.client)?;
    let mut query = vec![format!("limit={}", args.limit)];
    if let Some(service) = &args.service {
        query.push(format!("service={service}"));
    }
    if let Some(kind) = &args.kind {
        query.push(format!("type={kind}"));
    }
    let body = client
        .call(Method::GET, &format!("/v1/activity?{}", query.join("&")))
        .await?;
    let mut events: Vec<Value> = body
        .get("events")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    events.reverse();
    for event in &events {
        print_event(event, args.format);
    }
    if !args.follow {
        return Ok(());
    }
    // Resume right after the newest event printed: nothing falls between history and live.
    let last_id = events
        .last()
        .and_then(|e| e.get("id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let service_query = match &args.service {
        Some(service) => format!("?service={service}"),
        None => String::new(),
    };
    let mut stream = client.events(&service_query, last_id.as_deref()).await?;
    while let Some(event) = stream.next().await {
        if matches!(event.event.as_str(), "state" | "queue") {
            continue;
        }
        if event.event == "lagged" {
            eprintln!("warning: this client fell behind; some events were not shown");
            continue;
        }
        let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
            continue;
        };
        let kind_matches = args
            .kind
            .as_deref()
            .is_none_or(|kind| data.get("type").and_then(Value::as_str) == Some(kind));
        if kind_matches {
            print_event(&data, args.format);
        }
    }
    Err(client.stream_ended(stream.end_reason()))
}

/// One activity event as a line: time, service, type, then its details as `key=value`.
fn print_event(event: &Value, format: Format) {
    if format == Format::Json {
        println!("{event}");
        return;
    }
    let text = |key: &str| event.get(key).and_then(Value::as_str).unwrap_or("-");
    let details = match event.get("detail") {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    println!(
        "{}  {:<16} {:<18} {details}",
        short_time(text("at")),
        text("serviceId"),
        text("type"),
    );
    let _ = std::io::stdout().flush();
}

/// `2026-12-01T20:41:03.123456Z` → `2026-12-01 20:41:03`.
fn short_time(at: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(at) {
        Ok(at) => at
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        Err(_) => at.to_owned(),
    }
}

fn state_of(status: &Value) -> &str {
    status.get("state").and_then(Value::as_str).unwrap_or("?")
}

fn pretty(body: &Value) -> String {
    serde_json::to_string_pretty(body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::env::MapSource;

    fn args(url: Option<&str>, config: &Path) -> ClientArgs {
        ClientArgs {
            url: url.map(str::to_owned),
            api_key: None,
            config: Some(config.to_path_buf()),
        }
    }

    #[test]
    fn an_explicit_url_wins_and_gets_a_scheme() {
        let none = Path::new("/nonexistent/hestia_config.yml");
        let env = MapSource::empty();
        assert_eq!(
            base_url(&args(Some("hestia:9000/"), none), &env).unwrap(),
            "http://hestia:9000"
        );
        assert_eq!(
            base_url(&args(Some("https://h.example"), none), &env).unwrap(),
            "https://h.example"
        );
    }

    #[test]
    fn without_a_config_file_the_listen_variable_or_the_default_is_used_on_loopback() {
        let none = Path::new("/nonexistent/hestia_config.yml");
        assert_eq!(
            base_url(&args(None, none), &MapSource::empty()).unwrap(),
            "http://127.0.0.1:8080"
        );
        let env: MapSource = [("HESTIA_LISTEN", "0.0.0.0:9911")].into_iter().collect();
        assert_eq!(
            base_url(&args(None, none), &env).unwrap(),
            "http://127.0.0.1:9911"
        );
        let bad: MapSource = [("HESTIA_LISTEN", "nope")].into_iter().collect();
        let error = base_url(&args(None, none), &bad).unwrap_err();
        assert!(error.to_string().contains("HESTIA_LISTEN"), "{error}");
        assert_eq!(error.exit_code(), 3);
    }

    #[test]
    fn the_config_files_listen_address_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hestia_config.yml");
        std::fs::write(&path, "listen: \"127.0.0.2:7001\"\nservices: {}\n").unwrap();
        assert_eq!(
            base_url(&args(None, &path), &MapSource::empty()).unwrap(),
            "http://127.0.0.2:7001"
        );
    }

    #[test]
    fn problems_map_to_exit_codes_and_read_as_title_and_detail() {
        let body = serde_json::json!({
            "type": "https://hestia.dev/problems/unknown-service",
            "title": "Unknown service",
            "detail": "no service `nope`",
        });
        let error = problem(StatusCode::NOT_FOUND, &body).unwrap();
        assert_eq!(error.to_string(), "Unknown service: no service `nope`");
        assert_eq!(error.exit_code(), 4);
        let denied = serde_json::json!({"type": "x/unauthorized", "title": "Unauthorized"});
        let error = problem(StatusCode::UNAUTHORIZED, &denied).unwrap();
        assert_eq!(error.exit_code(), 5);
        assert!(error.to_string().contains("--api-key"));
        let failed = serde_json::json!({"type": "x/start-failed", "title": "t", "detail": "d"});
        assert_eq!(
            problem(StatusCode::SERVICE_UNAVAILABLE, &failed)
                .unwrap()
                .exit_code(),
            1
        );
        assert!(problem(StatusCode::BAD_GATEWAY, &serde_json::json!({"a": 1})).is_none());
    }
}
