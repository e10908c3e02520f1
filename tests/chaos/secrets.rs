//! Secrets, attacked: a unique random secret planted in every kind of URL, header, token and
//! environment value the configuration holds; backends that print theirs and fail; a webhook, a
//! fallback and a readiness URL on closed ports; a Semaphore task whose output repeats its
//! secrets; a reload that brings a new secret and one that is refused. Then everything Hestia
//! let out is searched — its whole log, every `/v1` answer (and the dashboard, the metrics, the
//! live events), a dump of every table and the raw bytes of the database files — for any secret.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use hestia_actors::fake_semaphore::{self, FakeSemaphoreOptions, FakeTemplate};
use sea_orm::{ConnectionTrait, Statement};

use crate::support::{HestiaProcess, free_port, hestia_cli};

/// `<kind>x<18 random hex digits>`: found nowhere unless Hestia let it out.
fn secret(kind: &str) -> String {
    let mut bytes = [0u8; 9];
    getrandom::fill(&mut bytes).expect("random bytes");
    format!("{kind}x{}", hex::encode(bytes))
}

/// Every planted secret, by what it is.
struct Planted(Vec<(&'static str, String)>);

impl Planted {
    fn get(&self, name: &str) -> &str {
        &self.0.iter().find(|(n, _)| *n == name).expect("planted").1
    }

    /// Panics naming each secret found in `text` (from `source`), with what surrounds it.
    fn assert_absent(&self, source: &str, text: &str) {
        for (name, value) in &self.0 {
            if let Some(at) = text.find(value.as_str()) {
                let from = text.floor_char_boundary(at.saturating_sub(120));
                let to = text.ceil_char_boundary((at + value.len() + 60).min(text.len()));
                panic!(
                    "the {name} secret leaked in {source}: …{}…",
                    &text[from..to]
                );
            }
        }
    }

    fn assert_absent_bytes(&self, source: &str, bytes: &[u8]) {
        for (name, value) in &self.0 {
            assert!(
                !bytes
                    .windows(value.len())
                    .any(|window| window == value.as_bytes()),
                "the {name} secret is in the raw bytes of {source}"
            );
        }
    }
}

/// The configuration: `late` only once `with_late`; `bad_url` makes it a file a reload refuses.
fn config(dir: &std::path::Path, s: &Planted, ports: &Ports, with_late: bool) -> String {
    let closed = ports.closed;
    let mut yaml = format!(
        r#"listen: "127.0.0.1:0"
database_url: "sqlite://{db}?mode=rwc"
shutdown_grace_ms: 3000
auth:
  enabled: false
  dashboard_password_hash: '{hash}'
  keys:
    - name: ci
      sha256: "{digest}"
      scopes: [read]
semaphore:
  base_url: "{semaphore}"
  api_token: "{sem_token}"
  username: hestia
  password: "{sem_password}"
services:
  crashy:
    base_url: "http://user:{base_pass}@127.0.0.1:{closed}/?token={base_token}"
    start:
      command:
        program: /bin/sh
        args:
          - '-c'
          - 'echo "started with: $*" >&2; echo "token: $API_TOKEN" >&2; exit 3'
          - crashy
          - '--upstream=http://u:{arg_pass}@h'
          - '--api-token={arg_token}'
        env:
          API_TOKEN: "{env_token}"
    readiness:
      http:
        url: "http://probe:{probe_pass}@127.0.0.1:{closed}/health?key={probe_key}"
        interval_ms: 20
    retry: {{count: 0}}
  hooked:
    base_url: "http://127.0.0.1:{closed}"
    start:
      http:
        url: "http://hook:{hook_pass}@127.0.0.1:{closed}/start?token={hook_token}"
        headers:
          Authorization: "Bearer {hook_bearer}"
          X-Api-Key: "{hook_header}"
    warmup_ms: 100
    retry: {{count: 0}}
  fallen:
    base_url: "http://127.0.0.1:{closed}"
    fallback_url: "http://fb:{fallback_pass}@127.0.0.1:{closed}/?api_key={fallback_key}"
    start:
      http:
        url: "http://127.0.0.1:{closed}/start"
    warmup_ms: 100
    retry: {{count: 0}}
  watched:
    base_url: "http://watch:{watch_pass}@127.0.0.1:{closed}"
    instances:
      - url: "http://inst:{instance_pass}@127.0.0.1:{closed}"
    readiness:
      http:
        url: "http://watch:{watch_pass}@127.0.0.1:{closed}/health?secret={watch_query}"
        interval_ms: 50
    request_timeout_seconds: 1
  remote:
    base_url: "http://127.0.0.1:{closed}"
    start:
      semaphore:
        template_id: 7
        environment:
          DB_PASSWORD: "{task_env}"
        poll_interval_ms: 20
        task_timeout_ms: 10000
    warmup_ms: 100
    retry: {{count: 0}}
"#,
        db = dir.join("hestia.db").display(),
        hash = ports.hash,
        digest = s.get("key digest"),
        semaphore = ports.semaphore,
        sem_token = s.get("Semaphore token"),
        sem_password = s.get("Semaphore password"),
        base_pass = s.get("base_url password"),
        base_token = s.get("base_url query token"),
        arg_pass = s.get("URL argument password"),
        arg_token = s.get("--api-token argument"),
        env_token = s.get("command env API_TOKEN"),
        probe_pass = s.get("readiness URL password"),
        probe_key = s.get("readiness URL key"),
        hook_pass = s.get("webhook URL password"),
        hook_token = s.get("webhook URL token"),
        hook_bearer = s.get("webhook bearer token"),
        hook_header = s.get("webhook X-Api-Key"),
        fallback_pass = s.get("fallback URL password"),
        fallback_key = s.get("fallback URL api_key"),
        watch_pass = s.get("waited-for URL password"),
        watch_query = s.get("waited-for URL secret"),
        instance_pass = s.get("instance URL password"),
        task_env = s.get("Semaphore task DB_PASSWORD"),
    );
    if with_late {
        yaml.push_str(&format!(
            r#"  late:
    base_url: "http://late:{late_pass}@127.0.0.1:{closed}"
    start:
      command:
        program: /bin/sh
        args: ['-c', 'echo "late: $LATE_PASSWORD" >&2; exit 4']
        env:
          LATE_PASSWORD: "{late_env}"
    warmup_ms: 100
    retry: {{count: 0}}
"#,
            late_pass = s.get("reloaded base_url password"),
            late_env = s.get("reloaded env LATE_PASSWORD"),
        ));
    }
    yaml
}

struct Ports {
    closed: u16,
    semaphore: String,
    hash: String,
}

/// Reads `GET /v1/events` into a shared text until aborted.
fn collect_events(url: &str) -> (Arc<Mutex<String>>, tokio::task::JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    let url = format!("{url}/v1/events");
    let task = tokio::spawn(async move {
        let Ok(response) = reqwest::get(&url).await else {
            return;
        };
        let mut body = response.bytes_stream();
        while let Some(Ok(chunk)) = body.next().await {
            sink.lock()
                .expect("events text")
                .push_str(&String::from_utf8_lossy(&chunk));
        }
    });
    (text, task)
}

async fn text_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

async fn get_text(hestia: &HestiaProcess, path: &str) -> (u16, String) {
    text_of(
        reqwest::get(format!("{}{path}", hestia.url))
            .await
            .expect("hestia answers"),
    )
    .await
}

async fn post_text(hestia: &HestiaProcess, path: &str) -> (u16, String) {
    text_of(hestia.post(path).await).await
}

/// Every row of every table, each value as SQL text (`quote()`), one line per row.
async fn dump_database(url: &str) -> String {
    let db = hestia_actors::persistence::open(url)
        .await
        .expect("open the database");
    let backend = db.get_database_backend();
    let tables = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT name FROM sqlite_master WHERE type = 'table'",
        ))
        .await
        .expect("list tables");
    let mut dump = String::new();
    for table in tables {
        let name: String = table.try_get_by_index(0).expect("table name");
        let columns = db
            .query_all_raw(Statement::from_string(
                backend,
                format!("SELECT name FROM pragma_table_info('{name}')"),
            ))
            .await
            .expect("columns");
        let columns: Vec<String> = columns
            .iter()
            .map(|c| {
                let column: String = c.try_get_by_index(0).expect("column name");
                format!("quote(\"{column}\")")
            })
            .collect();
        if columns.is_empty() {
            continue;
        }
        let rows = db
            .query_all_raw(Statement::from_string(
                backend,
                format!(
                    "SELECT {} AS row FROM \"{name}\"",
                    columns.join(" || ' | ' || ")
                ),
            ))
            .await
            .expect("rows");
        for row in rows {
            let text: String = row.try_get_by_index(0).unwrap_or_default();
            dump.push_str(&format!("{name}: {text}\n"));
        }
    }
    dump
}

/// The raw bytes of `hestia.db` and its `-wal` / `-shm` companions, by file name.
fn database_files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(dir)
        .expect("read the data directory")
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("hestia.db"))
        .filter_map(|entry| {
            let bytes = std::fs::read(entry.path()).ok()?;
            Some((entry.file_name().to_string_lossy().into_owned(), bytes))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_planted_secret_leaves_hestia_by_its_log_its_api_or_its_database() {
    // Given a unique secret in every kind of URL, header, token and environment value
    let dir = tempfile::tempdir().expect("tempdir");
    let planted = Planted(
        [
            "Semaphore token",
            "Semaphore password",
            "base_url password",
            "base_url query token",
            "URL argument password",
            "--api-token argument",
            "command env API_TOKEN",
            "readiness URL password",
            "readiness URL key",
            "webhook URL password",
            "webhook URL token",
            "webhook bearer token",
            "webhook X-Api-Key",
            "fallback URL password",
            "fallback URL api_key",
            "waited-for URL password",
            "waited-for URL secret",
            "instance URL password",
            "Semaphore task DB_PASSWORD",
            "reloaded base_url password",
            "reloaded env LATE_PASSWORD",
            "refused file's URL password",
            "dashboard password",
        ]
        .into_iter()
        .map(|name| {
            (
                name,
                secret(&name.replace(|c: char| !c.is_ascii_alphanumeric(), "")),
            )
        })
        .collect(),
    );
    // (a key digest is 64 hex digits)
    let mut planted = planted;
    let mut digest = [0u8; 32];
    getrandom::fill(&mut digest).expect("random bytes");
    planted.0.push(("key digest", hex::encode(digest)));
    // a Semaphore whose task fails, printing its secrets as a playbook might
    let token = planted.get("Semaphore token").to_owned();
    let task_env = planted.get("Semaphore task DB_PASSWORD").to_owned();
    let fake = fake_semaphore::spawn(FakeSemaphoreOptions::with_token(&token).template(
        7,
        FakeTemplate::failing(
            "start-remote",
            &[
                "TASK [start the model]",
                &format!("DB_PASSWORD={task_env}"),
                &format!("fatal: the token {token} was refused"),
            ],
        ),
    ))
    .await
    .expect("the fake Semaphore listens");
    // and the dashboard password's hash, made by Hestia itself
    let config_path = dir.path().join("hestia_config.yml");
    let (hashed, hash, stderr) = hestia_cli(
        &config_path,
        &["hash-password"],
        planted.get("dashboard password"),
    )
    .await;
    assert!(hashed, "hash-password: {stderr}");
    planted
        .0
        .push(("dashboard password hash", hash.trim().to_owned()));
    let ports = Ports {
        closed: free_port(),
        semaphore: fake.url(),
        hash: hash.trim().to_owned(),
    };
    std::fs::write(&config_path, config(dir.path(), &planted, &ports, false)).expect("config");
    let hestia = HestiaProcess::serve(dir.path(), &[]).await;
    let (events, events_task) = collect_events(&hestia.url);
    let mut answers: Vec<(String, String)> = Vec::new();

    // When a backend that prints its secrets fails its start, twice (API and proxy)
    let (status, crashed) = post_text(&hestia, "/v1/services/crashy/start?wait=true").await;
    assert_eq!(status, 503, "{crashed}");
    assert!(
        crashed.contains("token: ***") && crashed.contains("--api-token=***"),
        "the start-failed diagnosis quotes the stderr tail, masked: {crashed}"
    );
    answers.push(("POST crashy start".into(), crashed));
    let (status, proxied) = get_text(&hestia, "/services/crashy/x").await;
    assert_eq!(status, 503, "{proxied}");
    answers.push(("GET /services/crashy/x".into(), proxied));

    // and a webhook with credentials in its URL and headers calls a closed port
    let (status, hooked) = post_text(&hestia, "/v1/services/hooked/start?wait=true").await;
    assert_eq!(status, 503, "{hooked}");
    assert!(
        hooked.contains("hook:***@127.0.0.1") && hooked.contains("token=***"),
        "the webhook's URL is named, redacted: {hooked}"
    );
    answers.push(("POST hooked start".into(), hooked));

    // and a start falls back to a URL with credentials, which is closed too
    let (status, fell) = post_text(&hestia, "/v1/services/fallen/start?wait=true").await;
    assert_eq!(status, 503, "{fell}");
    answers.push(("POST fallen start".into(), fell));

    // and a request waits for a service Hestia does not start, whose URLs hold credentials
    let (status, waited) = get_text(&hestia, "/services/watched/x").await;
    assert_eq!(status, 504, "{waited}");
    assert!(waited.contains("watch:***@127.0.0.1"), "{waited}");
    answers.push(("GET /services/watched/x".into(), waited));

    // and a Semaphore task fails, its output repeating the token and its environment's password
    let (status, remote) = post_text(&hestia, "/v1/services/remote/start?wait=true").await;
    assert_eq!(status, 503, "{remote}");
    assert!(remote.contains("DB_PASSWORD=***"), "{remote}");
    answers.push(("POST remote start".into(), remote));

    // and a broken file is refused (its error names the URL), then one adding `late` is loaded
    let refused = format!(
        "{}  broken:\n    base_url: \"ftp://x:{}@127.0.0.1:1\"\n",
        config(dir.path(), &planted, &ports, false),
        planted.get("refused file's URL password")
    );
    std::fs::write(&config_path, refused).expect("config");
    let (status, refusal) = post_text(&hestia, "/v1/config/reload").await;
    assert_eq!(status, 422, "{refusal}");
    assert!(refusal.contains("ftp://x:***@"), "{refusal}");
    answers.push(("POST /v1/config/reload (refused)".into(), refusal));
    let (_, refused_status) = get_text(&hestia, "/v1/config").await;
    answers.push(("GET /v1/config after a refusal".into(), refused_status));
    std::fs::write(&config_path, config(dir.path(), &planted, &ports, true)).expect("config");
    let (status, reloaded) = post_text(&hestia, "/v1/config/reload").await;
    assert_eq!(status, 200, "{reloaded}");
    answers.push(("POST /v1/config/reload".into(), reloaded));
    let (status, late) = post_text(&hestia, "/v1/services/late/start?wait=true").await;
    assert_eq!(status, 503, "{late}");
    assert!(
        late.contains("late: ***"),
        "a secret the reload brought is masked: {late}"
    );
    answers.push(("POST late start".into(), late));
    hestia.flush().await;

    // Then no answer of the API, the dashboard or the metrics holds a secret
    let services = ["crashy", "hooked", "fallen", "watched", "remote", "late"];
    let mut paths: Vec<String> = [
        "/v1/services",
        "/v1/machines",
        "/v1/config",
        "/v1/activity?limit=1000",
        "/v1/strategies",
        "/v1/metrics",
        "/metrics",
        "/healthz",
        "/readyz",
        "/openai/v1/models",
        "/dashboard",
        "/dashboard/machines",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    for id in services {
        paths.push(format!("/v1/services/{id}/status"));
        paths.push(format!("/v1/services/{id}/logs?lines=1000"));
        paths.push(format!("/dashboard/services/{id}"));
    }
    for path in &paths {
        let (_, body) = get_text(&hestia, path).await;
        answers.push((format!("GET {path}"), body));
    }
    for (source, body) in &answers {
        planted.assert_absent(source, body);
    }
    let answer = |path: &str| {
        answers
            .iter()
            .find(|(source, _)| source == &format!("GET {path}"))
            .map(|(_, body)| body.clone())
            .unwrap_or_default()
    };
    assert!(
        answer("/v1/services/crashy/logs?lines=1000").contains("token: ***"),
        "the service log shows the secret masked where it was"
    );
    let activity = answer("/v1/activity?limit=1000");
    assert!(
        activity.contains("user:***@127.0.0.1") && activity.contains("?token=***"),
        "the start attempt names crashy's base URL, redacted: {activity}"
    );
    assert!(
        activity.contains("fb:***@127.0.0.1"),
        "the fallback is named, redacted: {activity}"
    );

    // and no live event did either
    tokio::time::sleep(Duration::from_millis(200)).await;
    events_task.abort();
    let events = events.lock().expect("events text").clone();
    assert!(
        events.contains("start_failed"),
        "the events were captured: {events}"
    );
    planted.assert_absent("GET /v1/events", &events);

    // and the database holds none, in its tables or anywhere in its files
    for (file, bytes) in database_files(dir.path()) {
        planted.assert_absent_bytes(&file, &bytes);
    }
    let log_path = hestia.log.clone();
    hestia.stop().await;
    for (file, bytes) in database_files(dir.path()) {
        planted.assert_absent_bytes(&file, &bytes);
    }
    let url = format!("sqlite://{}", dir.path().join("hestia.db").display());
    let dump = dump_database(&url).await;
    planted.assert_absent("the database tables", &dump);
    assert!(
        dump.contains("user:***@127.0.0.1"),
        "the services table holds crashy's base URL, redacted: {dump}"
    );

    // and neither does Hestia's log, from its first line to its last
    let log = std::fs::read_to_string(&log_path).expect("the log");
    planted.assert_absent("Hestia's log", &log);
    assert!(
        log.contains("hook:***@127.0.0.1"),
        "the log names the webhook, redacted: {log}"
    );
}
