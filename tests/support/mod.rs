//! Shared fixtures for the black-box tests: simulated services, configs, and a running engine.
//!
//! Everything is real: `hestia sim` child processes on loopback ports, a SQLite file in a tempdir,
//! the engine's actors. Tests describe services with [`Sim`] and start them with [`TestEngine`].
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use hestia::config::{self, env::MapSource};
use hestia_actors::engine::Engine;
use hestia_actors::events::{ActivityEvent, ActivityKind};
use hestia_actors::persistence::{self, ActivityFilter, PersistenceHandle, PersistenceOptions};
use hestia_actors::service::{ServiceHandle, State};
use tempfile::TempDir;

/// The `hestia` binary under test (its `sim` subcommand is the simulated backend).
pub fn hestia_exe() -> &'static str {
    env!("CARGO_BIN_EXE_hestia")
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// A service backed by `hestia sim`, started by the `command` starter.
#[derive(Debug, Clone)]
pub struct Sim {
    pub id: String,
    pub port: u16,
    sim_args: Vec<String>,
    keys: Vec<String>,
}

impl Sim {
    pub fn new(id: &str) -> Sim {
        Sim {
            id: id.into(),
            port: free_port(),
            sim_args: Vec::new(),
            keys: Vec::new(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The backend sleeps this long before it listens.
    pub fn startup_delay_ms(mut self, ms: u64) -> Sim {
        self.sim_args
            .extend(["--startup-delay-ms".into(), ms.to_string()]);
        self
    }

    /// The backend exits without ever listening.
    pub fn fail_to_start(mut self) -> Sim {
        self.sim_args.push("--fail-to-start".into());
        self
    }

    /// The backend exits after answering this many requests.
    pub fn crash_after(mut self, requests: u64) -> Sim {
        self.sim_args
            .extend(["--crash-after".into(), requests.to_string()]);
        self
    }

    /// Any extra service key, as a YAML line (`queue_size: 5`).
    pub fn key(mut self, line: &str) -> Sim {
        self.keys.push(line.into());
        self
    }

    /// This service as a TOML table (its extra [`Sim::key`] lines are YAML, so none here).
    fn toml(&self) -> String {
        assert!(self.keys.is_empty(), "Sim::key lines are YAML");
        format!(
            "\n[services.{id}]\nbase_url = \"{url}\"\nreadiness = {{ http = {{ url = \"{url}/health\", interval_ms = 20 }} }}\n\n[services.{id}.start.command]\nprogram = \"{exe}\"\nargs = [{args}]\nstop_grace_ms = 2000\n",
            id = self.id,
            url = self.url(),
            exe = hestia_exe(),
            args = self.quoted_args(),
        )
    }

    fn quoted_args(&self) -> String {
        let mut args = vec![
            "sim".to_owned(),
            "--port".into(),
            self.port.to_string(),
            "--name".into(),
            self.id.clone(),
        ];
        args.extend(self.sim_args.iter().cloned());
        args.iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn yaml(&self) -> String {
        let args = self.quoted_args();
        let mut yaml = format!(
            "  {id}:\n    base_url: \"{url}\"\n    start:\n      command:\n        program: \"{exe}\"\n        args: [{args}]\n        stop_grace_ms: 2000\n    readiness:\n      http:\n        url: \"{url}/health\"\n        interval_ms: 20\n",
            id = self.id,
            url = self.url(),
            exe = hestia_exe(),
        );
        for key in &self.keys {
            yaml.push_str(&format!("    {key}\n"));
        }
        yaml
    }
}

/// [`config_yaml`] in TOML: the same configuration, for a `.toml` file.
pub fn config_toml(dir: &Path, services: &[&Sim]) -> String {
    let mut toml = format!(
        "listen = \"127.0.0.1:0\"\ndatabase_url = \"sqlite://{}?mode=rwc\"\nshutdown_grace_ms = 3000\n",
        dir.join("hestia.db").display()
    );
    for sim in services {
        toml.push_str(&sim.toml());
    }
    toml
}

/// A configuration file text with these services, writing its database under `dir`.
pub fn config_yaml(dir: &Path, services: &[&Sim], extra_services: &str) -> String {
    let mut yaml = format!(
        "listen: \"127.0.0.1:0\"\ndatabase_url: \"sqlite://{}?mode=rwc\"\nshutdown_grace_ms: 3000\nservices:\n",
        dir.join("hestia.db").display()
    );
    for sim in services {
        yaml.push_str(&sim.yaml());
    }
    yaml.push_str(extra_services);
    yaml
}

/// A running engine over a real SQLite file.
pub struct TestEngine {
    pub engine: Engine,
    pub persistence: PersistenceHandle,
    pub config: config::Config,
    pub dir: TempDir,
}

impl TestEngine {
    /// Loads `yaml` (as `hestia_config.yml` in a fresh tempdir) and starts the engine.
    pub async fn start(services: &[&Sim], extra_services: &str) -> TestEngine {
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = config_yaml(dir.path(), services, extra_services);
        TestEngine::start_in(dir, &yaml).await
    }

    pub async fn start_in(dir: TempDir, yaml: &str) -> TestEngine {
        let path = dir.path().join("hestia_config.yml");
        std::fs::write(&path, yaml).expect("write config");
        let config = config::load(&path, &MapSource::empty()).expect("the test config loads");
        let db = persistence::open(&config.database_url)
            .await
            .expect("open the database");
        let (persistence, _) = PersistenceHandle::spawn(db, PersistenceOptions::default())
            .await
            .expect("persistence");
        let engine = Engine::start(config.engine.clone(), persistence.clone())
            .await
            .expect("engine");
        TestEngine {
            engine,
            persistence,
            config,
            dir,
        }
    }

    /// Shuts this engine down gracefully and starts a new one on the same database and config.
    pub async fn restart(self) -> TestEngine {
        self.engine.shutdown(Duration::from_secs(3)).await;
        let yaml =
            std::fs::read_to_string(self.dir.path().join("hestia_config.yml")).expect("config");
        TestEngine::start_in(self.dir, &yaml).await
    }

    pub fn service(&self, id: &str) -> ServiceHandle {
        self.engine.service(id).expect("a configured service")
    }

    /// The recorded events of `kind` for `service`, oldest first.
    pub async fn events(&self, service: &str, kind: ActivityKind) -> Vec<ActivityEvent> {
        let filter = ActivityFilter {
            service: Some(service.into()),
            kind: Some(kind),
            since: None,
            limit: 1000,
        };
        let mut events = self.persistence.activity(filter).await.expect("activity");
        events.reverse();
        events
    }

    pub async fn shutdown(self) {
        self.engine.shutdown(Duration::from_secs(3)).await;
    }
}

/// Polls `check` every 20 ms until it holds, for at most `within`; panics with `what` if not.
pub async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `service` reaches `state`.
pub async fn wait_for_state(service: &ServiceHandle, state: State) {
    let mut updates = service.subscribe();
    let reached = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if updates.borrow_and_update().state == state {
                return;
            }
            if updates.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "{} never became {state:?}: {:?}",
        service.id(),
        service.status()
    );
}

/// True while a process with this pid exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.split_whitespace().nth(2).is_none_or(|s| s != "Z"),
        Err(_) => false,
    }
}

/// One GET to the service's upstream, as the proxy would send it.
pub async fn get(base_url: &str, path: &str, request_id: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{base_url}{path}"))
        .header("x-request-id", request_id)
        .send()
        .await
        .expect("the upstream answers")
}

/// `hestia serve` running in this process on an ephemeral port.
pub struct TestServer {
    pub url: String,
    pub dir: TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), hestia::serve::ServeError>>,
}

impl TestServer {
    pub async fn start(services: &[&Sim], extra_services: &str) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = config_yaml(dir.path(), services, extra_services);
        TestServer::start_yaml(dir, &yaml).await
    }

    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("hestia answers")
    }

    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.client()
            .post(format!("{}{path}", self.url))
            .send()
            .await
            .expect("hestia answers")
    }

    /// Sends the shutdown signal and waits for `serve` to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(15), &mut self.task).await;
        match result {
            Ok(Ok(Ok(()))) => {}
            other => panic!("serve did not shut down cleanly: {other:?}"),
        }
    }
}

/// Sends `GET path` exactly as written (no client-side URL normalisation); returns status and body.
pub async fn raw_get(base_url: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

impl TestServer {
    /// Like [`TestServer::start`], with extra top-level config keys (`max_request_body_bytes: 10`).
    pub async fn start_with_globals(
        globals: &str,
        services: &[&Sim],
        extra_services: &str,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = format!(
            "{globals}\n{}",
            config_yaml(dir.path(), services, extra_services)
        );
        TestServer::start_yaml(dir, &yaml).await
    }

    /// Serves `yaml` (written as `hestia_config.yml` in `dir`).
    pub async fn start_yaml(dir: TempDir, yaml: &str) -> TestServer {
        let path = dir.path().join("hestia_config.yml");
        std::fs::write(&path, yaml).expect("write config");
        let config = config::load(&path, &MapSource::empty()).expect("the test config loads");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(hestia::serve::serve(config, listener, async move {
            let _ = stopped.await;
        }));
        // Any answer means the database is migrated (the CLI may open it now).
        let probe = format!("{url}/healthz");
        eventually_async("hestia answers", Duration::from_secs(20), || async {
            reqwest::get(&probe).await.is_ok()
        })
        .await;
        TestServer {
            url,
            dir,
            stop: Some(stop),
            task,
        }
    }
}

impl TestEngine {
    /// Like [`TestEngine::start`], with extra top-level config keys (`semaphore:`, `machines:`).
    pub async fn start_with_globals(
        globals: &str,
        services: &[&Sim],
        extra_services: &str,
    ) -> TestEngine {
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = format!(
            "{globals}\n{}",
            config_yaml(dir.path(), services, extra_services)
        );
        TestEngine::start_in(dir, &yaml).await
    }
}

/// A `hestia sim` process that Hestia does not start: an extra instance of a service. Killed
/// when dropped.
pub struct Instance {
    pub name: String,
    pub port: u16,
    child: tokio::process::Child,
}

impl Instance {
    /// Starts `hestia sim --name NAME` on a free port and waits until it answers.
    pub async fn spawn(name: &str) -> Instance {
        Instance::spawn_on(name, free_port()).await
    }

    /// Starts it on `port` (to bring a killed instance back at the same URL).
    pub async fn spawn_on(name: &str, port: u16) -> Instance {
        let child = tokio::process::Command::new(hestia_exe())
            .args(["sim", "--port", &port.to_string(), "--name", name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn hestia sim");
        let instance = Instance {
            name: name.to_owned(),
            port,
            child,
        };
        let health = format!("{}/health", instance.url());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if reqwest::get(&health)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return instance;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "instance {name} never answered on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the process (SIGKILL) and waits until it is gone.
    pub async fn kill(mut self) -> u16 {
        self.child.kill().await.expect("kill the instance");
        self.port
    }
}

impl TestServer {
    /// The configuration file this server was started from (for `hestia --config ... keys`).
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("hestia_config.yml")
    }

    /// A client that does not follow redirects (to see the dashboard's 303s and cookies).
    pub fn manual_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }
}

/// Runs the real `hestia` binary with `--config config` and `args`, feeding `stdin`; returns
/// whether it succeeded, its standard output and its standard error.
pub async fn hestia_cli(config: &Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(hestia_exe())
        .arg("--config")
        .arg(config)
        .args(args)
        .env("HESTIA_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run hestia");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    let output = child.wait_with_output().await.expect("hestia exits");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `hestia keys create NAME --scope SCOPE...` through the real CLI; returns the printed key.
pub async fn create_key(config: &Path, name: &str, scopes: &[&str], extra: &[&str]) -> String {
    let mut args = vec!["keys", "create", name];
    for scope in scopes {
        args.extend(["--scope", scope]);
    }
    args.extend(extra);
    let (ok, stdout, stderr) = hestia_cli(config, &args, "").await;
    assert!(ok, "keys create failed: {stderr}");
    stdout.trim().to_owned()
}

/// Polls `probe` every 20 ms until it returns true, for at most `within`; panics with `what`.
pub async fn eventually_async<F, Fut>(what: &str, within: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !probe().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every path given to `.route("...")` in `src/http`, as written there (sorted, deduplicated).
pub fn routed_paths() -> Vec<String> {
    let mut files = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/http"
    ))];
    let mut paths = Vec::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(
                std::fs::read_dir(&path)
                    .expect("read dir")
                    .map(|e| e.expect("entry").path()),
            );
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("read source");
        for piece in source.split(".route(\"").skip(1) {
            if let Some((route, _)) = piece.split_once('"') {
                paths.push(route.to_owned());
            }
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

impl TestServer {
    /// The recorded events of `kind` (any service), as JSON text, read from `/v1/activity`
    /// (with auth off).
    pub async fn engine_events(&self, kind: hestia_actors::events::ActivityKind) -> String {
        self.get(&format!("/v1/activity?type={kind}"))
            .await
            .text()
            .await
            .expect("activity")
    }
}

impl TestServer {
    /// Like [`TestServer::start`], with strategy plugins (`(name, source)`) written to
    /// `strategies/NAME.rhai` beside the config first.
    pub async fn start_with_plugins(
        plugins: &[(&str, &str)],
        services: &[&Sim],
        extra_services: &str,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let strategies = dir.path().join("strategies");
        std::fs::create_dir(&strategies).expect("the strategies directory");
        for (name, source) in plugins {
            std::fs::write(strategies.join(format!("{name}.rhai")), source).expect("a plugin");
        }
        let yaml = config_yaml(dir.path(), services, extra_services);
        TestServer::start_yaml(dir, &yaml).await
    }

    /// Writes (or rewrites) plugin `name` while the server runs.
    pub fn write_plugin(&self, name: &str, source: &str) {
        let path = self
            .dir
            .path()
            .join("strategies")
            .join(format!("{name}.rhai"));
        std::fs::write(path, source).expect("write the plugin");
    }
}

/// `hestia serve` as a real child process on a free loopback port, reading `hestia_config.yml`
/// in `dir` and logging (stderr) to `hestia-<port>.log` there; killed if the test ends without
/// [`HestiaProcess::stop`] (graceful) or [`HestiaProcess::kill`] (SIGKILL).
pub struct HestiaProcess {
    pub url: String,
    pub port: u16,
    pub child: std::process::Child,
    pub log: std::path::PathBuf,
}

impl HestiaProcess {
    /// Serves `dir/hestia_config.yml` with `args` after `serve`; returns once `/healthz` answers.
    pub async fn serve(dir: &Path, args: &[&str]) -> HestiaProcess {
        HestiaProcess::serve_limited(dir, args, None).await
    }

    /// Serves the configuration file `config` (YAML or TOML) with `args` after `serve`.
    pub async fn serve_file(dir: &Path, config: &Path, args: &[&str]) -> HestiaProcess {
        let hestia = HestiaProcess::launch(dir, config, args, &[], &[]);
        hestia.wait_until_healthy().await;
        hestia
    }

    /// Like [`HestiaProcess::serve`]; with `max_files`, under `ulimit -n max_files` (soft and
    /// hard, via `prlimit`).
    pub async fn serve_limited(dir: &Path, args: &[&str], max_files: Option<u64>) -> HestiaProcess {
        HestiaProcess::serve_env(dir, args, max_files, &[]).await
    }

    /// Like [`HestiaProcess::serve_limited`], with `env` added to its environment.
    pub async fn serve_env(
        dir: &Path,
        args: &[&str],
        max_files: Option<u64>,
        env: &[(&str, &str)],
    ) -> HestiaProcess {
        let config = dir.join("hestia_config.yml");
        let nofile = max_files.map(|n| format!("--nofile={n}:{n}"));
        let prefix: Vec<&str> = match &nofile {
            Some(limit) => vec!["prlimit", limit],
            None => vec![],
        };
        let hestia = HestiaProcess::launch(dir, &config, args, env, &prefix);
        hestia.wait_until_healthy().await;
        hestia
    }

    /// Like [`HestiaProcess::serve`], in a mount namespace of its own where `disk` (an empty
    /// directory) is a tmpfs of `size` (`"4m"`): a small disk a test can fill with
    /// [`HestiaProcess::on_its_disk`]. Uses util-linux's `unshare` (a user namespace too, so it
    /// needs no privilege).
    pub async fn serve_on_small_disk(dir: &Path, disk: &Path, size: &str) -> HestiaProcess {
        let mount = r#"mount -t tmpfs -o "size=$0" tmpfs "$1" && shift && exec "$@""#;
        let disk = disk.to_str().expect("a UTF-8 path");
        let prefix = ["unshare", "-rm", "sh", "-c", mount, size, disk];
        let config = dir.join("hestia_config.yml");
        let hestia = HestiaProcess::launch(dir, &config, &[], &[], &prefix);
        hestia.wait_until_healthy().await;
        hestia
    }

    /// Runs the shell `script` where Hestia's small disk is mounted (its namespaces, via
    /// `nsenter`); returns whether it succeeded.
    pub fn on_its_disk(&self, script: &str) -> bool {
        std::process::Command::new("nsenter")
            .args(["-t", &self.child.id().to_string(), "-U", "-m"])
            .args(["--preserve-credentials", "sh", "-c", script])
            .status()
            .expect("nsenter runs")
            .success()
    }

    /// Starts it without waiting for it to answer.
    pub fn spawn(dir: &Path) -> HestiaProcess {
        HestiaProcess::spawn_with_env(dir, &[])
    }

    /// Like [`HestiaProcess::spawn`], with extra environment variables.
    pub fn spawn_with_env(dir: &Path, env: &[(&str, &str)]) -> HestiaProcess {
        HestiaProcess::launch(dir, &dir.join("hestia_config.yml"), &[], env, &[])
    }

    fn launch(
        dir: &Path,
        config: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        prefix: &[&str],
    ) -> HestiaProcess {
        let port = free_port();
        let log = dir.join(format!("hestia-{port}.log"));
        let mut command = match prefix.split_first() {
            Some((program, args)) => {
                let mut c = std::process::Command::new(program);
                c.args(args).arg(hestia_exe());
                c
            }
            None => std::process::Command::new(hestia_exe()),
        };
        let child = command
            .args(["serve", "--config"])
            .arg(config)
            .args(args)
            .env("HESTIA_LISTEN", format!("127.0.0.1:{port}"))
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn hestia serve");
        HestiaProcess {
            url: format!("http://127.0.0.1:{port}"),
            port,
            child,
            log,
        }
    }

    /// Waits (30 s at most) until `/healthz` answers 200.
    pub async fn wait_until_healthy(&self) {
        let healthz = format!("{}/healthz", self.url);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !reqwest::get(&healthz)
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "hestia did not come up; its log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything Hestia wrote to its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal hestia");
    }

    /// SIGTERM, then waits (up to 20 s) for a clean exit.
    pub async fn stop(self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_exit(Duration::from_secs(20)).await;
    }

    /// Waits (at most `within`) for it to exit by itself, successfully.
    pub async fn wait_exit(mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "hestia exited with {status}:\n{}",
                    self.log_text()
                );
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "hestia did not exit within {within:?}; its log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no graceful shutdown, nothing flushed, children left behind.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL hestia");
        self.child.wait().expect("reap hestia");
    }

    /// `GET path` as JSON, once Hestia answers (`None` while it does not).
    pub async fn get_json(&self, path: &str) -> Option<serde_json::Value> {
        reqwest::get(format!("{}{path}", self.url))
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    /// `GET /v1/services/{id}/status` (`None` while Hestia does not answer).
    pub async fn status(&self, service: &str) -> Option<serde_json::Value> {
        self.get_json(&format!("/v1/services/{service}/status"))
            .await
    }

    /// Waits (20 s at most) until `service` reports `state`; returns that status.
    pub async fn wait_for_state(&self, service: &str, state: &str) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.status(service).await;
            if let Some(status) = &status
                && status["state"] == state
            {
                return status.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{service} never became {state}: {status:?}; hestia log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn post(&self, path: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .send()
            .await
            .expect("hestia answers")
    }

    /// Waits until everything Hestia cast to its database is written (reading the activity goes
    /// behind every earlier write).
    pub async fn flush(&self) {
        self.get_json("/v1/activity?limit=1")
            .await
            .expect("activity");
    }
}

impl Drop for HestiaProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A Python `ThreadingHTTPServer` speaking HTTP/1.1 with keep-alive, as many real backends do.
/// `GET /` answers `ok HTTP/1.1` (the version it was asked with); `/slow?ms=N` answers after N ms
/// (`POST` too, after reading the body; a `POST` answers `got N bytes`);
/// `/stream` writes a line every 50 ms until the connection (or the process) ends, with no
/// length and no chunking (the body ends when the connection closes); `/health` is readiness;
/// `/most_in_flight` answers the most `/slow` requests it ever had in progress at once; `/pid`
/// answers its process id.
pub struct PyBackend {
    pub id: String,
    pub port: u16,
    script: std::path::PathBuf,
    keys: Vec<String>,
}

const PY_BACKEND: &str = r#"
import os, sys, time, threading, http.server

lock = threading.Lock()
in_flight = 0
most_in_flight = 0

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, body):
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        global in_flight, most_in_flight
        if self.path == "/most_in_flight":
            return self.answer(str(most_in_flight).encode())
        if self.path == "/pid":
            return self.answer(str(os.getpid()).encode())
        if self.path.startswith("/slow"):
            ms = int(self.path.split("ms=")[1]) if "ms=" in self.path else 1000
            with lock:
                in_flight += 1
                most_in_flight = max(most_in_flight, in_flight)
            time.sleep(ms / 1000)
            with lock:
                in_flight -= 1
        if self.path.startswith("/stream"):
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.send_header("connection", "close")
            self.end_headers()
            self.close_connection = True
            n = 0
            while True:
                n += 1
                self.wfile.write(b"line %d\n" % n)
                self.wfile.flush()
                time.sleep(0.05)
        self.answer(("ok " + self.request_version).encode())

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        if self.path.startswith("/slow"):
            time.sleep(int(self.path.split("ms=")[1]) / 1000 if "ms=" in self.path else 1)
        self.answer(b"got %d bytes" % len(body))

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer.daemon_threads = True
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"#;

impl PyBackend {
    /// Writes the backend's script into `dir`.
    pub fn new(id: &str, dir: &Path) -> PyBackend {
        let script = dir.join(format!("{id}_backend.py"));
        std::fs::write(&script, PY_BACKEND).expect("write the backend script");
        PyBackend {
            id: id.into(),
            port: free_port(),
            script,
            keys: Vec::new(),
        }
    }

    /// Any extra service key, as a YAML line (`idle_timeout_ms: 200`).
    pub fn key(mut self, line: &str) -> PyBackend {
        self.keys.push(line.into());
        self
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The service's entry under `services:`.
    pub fn yaml(&self) -> String {
        let mut yaml = format!(
            "  {id}:\n    base_url: \"{url}\"\n    start:\n      command:\n        program: \"python3\"\n        args: [\"{script}\", \"{port}\"]\n        stop_grace_ms: 2000\n    readiness:\n      http:\n        url: \"{url}/health\"\n        interval_ms: 20\n",
            id = self.id,
            url = self.url(),
            script = self.script.display(),
            port = self.port,
        );
        for key in &self.keys {
            yaml.push_str(&format!("    {key}\n"));
        }
        yaml
    }
}

/// Writes `hestia_config.yml` into `dir`: `globals` (top-level keys), then these services.
pub fn write_config(dir: &Path, globals: &str, services: &[&Sim], extra_services: &str) {
    let yaml = format!("{globals}\n{}", config_yaml(dir, services, extra_services));
    std::fs::write(dir.join("hestia_config.yml"), yaml).expect("write config");
}

/// Writes `request` as raw bytes to Hestia at `base_url`, then reads until the server closes the
/// connection; `None` if it is still open after `within`. Returns what was answered (maybe "").
pub async fn raw_exchange(base_url: &str, request: &[u8], within: Duration) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut raw = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&raw).into_owned())
}

/// Pids of the live processes whose command line contains every one of `words`.
pub fn processes_with(words: &[&str]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| process_alive(*pid))
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            words.iter().all(|w| args.iter().any(|a| a == w))
        })
        .collect()
}

/// Kills the process group of `0` (a backend a test left behind a killed Hestia) when dropped,
/// so that a failing test leaves no orphan.
pub struct GroupGuard(pub u32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if process_alive(self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.0)])
                .status();
        }
    }
}

/// How the body of a [`RawResponse`] was delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body by definition (an answer to HEAD, a 1xx, 204 or 304).
    NoBody,
    /// `content-length` bytes.
    Length,
    /// `transfer-encoding: chunked`, up to the last (empty) chunk.
    Chunked,
    /// Neither: the body lasted until the server closed the connection.
    UntilClose,
}

/// One HTTP/1.x response as read off a raw connection by [`read_response`].
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// `HTTP/1.1` or `HTTP/1.0`, from the status line.
    pub version: String,
    pub status: u16,
    /// In arrival order, names in lower case, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body with its framing removed (chunks joined).
    pub body: Vec<u8>,
    pub framing: Framing,
}

impl RawResponse {
    /// The first value of header `name` (any case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a `connection` header lists `token` (any case).
    pub fn connection_has(&self, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == "connection")
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }
}

/// Reads exactly one HTTP/1.x response from `stream`: its head, then its body as framed by
/// `content-length`, `transfer-encoding: chunked` or the end of the connection (none for an
/// answer to `HEAD` — say so with `to_head` — nor for 1xx, 204 and 304). `buffer` holds bytes
/// already read and not yet used; bytes read past this response (a pipelined next answer) are
/// left in it, so call again with the same buffer for the next response on the connection.
/// Fails with `UnexpectedEof` if the connection ends before the response is complete, and with
/// `InvalidData` if what arrives is not HTTP/1.x. Guard it with a timeout: it waits as long as
/// the server does.
pub async fn read_response<R>(
    stream: &mut R,
    buffer: &mut Vec<u8>,
    to_head: bool,
) -> std::io::Result<RawResponse>
where
    R: tokio::io::AsyncRead + Unpin,
{
    use std::io::{Error, ErrorKind};

    let invalid = |what: String| Error::new(ErrorKind::InvalidData, what);
    let head_end = loop {
        if let Some(at) = position_of(buffer, b"\r\n\r\n") {
            break at;
        }
        read_more(stream, buffer, "the response head").await?;
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    buffer.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default().to_owned();
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    let Some(status) = status.filter(|_| version.starts_with("HTTP/1.")) else {
        return Err(invalid(format!(
            "not an HTTP/1.x status line: {status_line:?}"
        )));
    };
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid(format!("not a header line: {line:?}")));
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut response = RawResponse {
        version,
        status,
        headers,
        body: Vec::new(),
        framing: Framing::NoBody,
    };
    if to_head || status < 200 || status == 204 || status == 304 {
        return Ok(response);
    }
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    if chunked {
        response.framing = Framing::Chunked;
        loop {
            let line_end = loop {
                if let Some(at) = position_of(buffer, b"\r\n") {
                    break at;
                }
                read_more(stream, buffer, "a chunk size").await?;
            };
            let size_line = String::from_utf8_lossy(&buffer[..line_end]).into_owned();
            let size_hex = size_line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| invalid(format!("not a chunk size: {size_line:?}")))?;
            buffer.drain(..line_end + 2);
            if size == 0 {
                // Trailers (usually none), up to the empty line.
                loop {
                    let end = loop {
                        if let Some(at) = position_of(buffer, b"\r\n") {
                            break at;
                        }
                        read_more(stream, buffer, "the end of the chunked body").await?;
                    };
                    buffer.drain(..end + 2);
                    if end == 0 {
                        return Ok(response);
                    }
                }
            }
            while buffer.len() < size + 2 {
                read_more(stream, buffer, "a chunk").await?;
            }
            if &buffer[size..size + 2] != b"\r\n" {
                return Err(invalid("a chunk not followed by CRLF".into()));
            }
            response.body.extend_from_slice(&buffer[..size]);
            buffer.drain(..size + 2);
        }
    }
    if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| invalid(format!("not a content-length: {length:?}")))?;
        response.framing = Framing::Length;
        while buffer.len() < length {
            read_more(stream, buffer, "the body").await?;
        }
        response.body = buffer.drain(..length).collect();
        return Ok(response);
    }
    response.framing = Framing::UntilClose;
    let mut chunk = [0u8; 8192];
    loop {
        match tokio::io::AsyncReadExt::read(stream, &mut chunk).await? {
            0 => break,
            n => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    response.body = std::mem::take(buffer);
    Ok(response)
}

/// Where `needle` first occurs in `haystack`.
fn position_of(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads more of `stream` into `buffer`; the end of the stream is `UnexpectedEof` (reading `what`).
async fn read_more<R>(stream: &mut R, buffer: &mut Vec<u8>, what: &str) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut chunk = [0u8; 8192];
    match tokio::io::AsyncReadExt::read(stream, &mut chunk).await? {
        0 => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "the connection ended while reading {what} ({} bytes unused)",
                buffer.len()
            ),
        )),
        n => {
            buffer.extend_from_slice(&chunk[..n]);
            Ok(())
        }
    }
}
