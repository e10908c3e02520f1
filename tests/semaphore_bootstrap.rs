//! `hestia semaphore bootstrap` against the fake Semaphore, as a user runs it: the real binary on
//! the shipped Docker config (docker/hestia_config.yml, copied to a tempdir), admin credentials
//! from the environment, a Semaphore that has no project yet. It must create everything through
//! the API, write the ids and the token into the file, and change nothing when run again.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use hestia::config::{self, env::MapSource};
use hestia_actors::fake_semaphore::{self, FakeSemaphoreHandle, FakeSemaphoreOptions};
use hestia_actors::semaphore::{RunOptions, SemaphoreClient};
use serde_json::{Map, Value};
use support::hestia_exe;

const ADMIN: &str = "admin";
const PASSWORD: &str = "correct horse battery staple";

async fn fresh_semaphore() -> FakeSemaphoreHandle {
    fake_semaphore::spawn(
        FakeSemaphoreOptions::with_token("not-the-bootstrap-token")
            .user(ADMIN, PASSWORD)
            .fresh(),
    )
    .await
    .expect("the fake Semaphore listens")
}

/// Runs `hestia semaphore bootstrap` on `config` with the admin login in the environment.
async fn bootstrap(config: &Path, semaphore_url: &str) -> Output {
    tokio::process::Command::new(hestia_exe())
        .args(["--config"])
        .arg(config)
        .args(["semaphore", "bootstrap"])
        .env_remove("SEMAPHORE_API_TOKEN")
        .env_remove("SEMAPHORE_API_KEY")
        .env_remove("HESTIA_LISTEN")
        .env("SEMAPHORE_BASE_URL", semaphore_url)
        .env("SEMAPHORE_USERNAME", ADMIN)
        .env("SEMAPHORE_PASSWORD", PASSWORD)
        .env("HESTIA_LOG", "warn")
        .output()
        .await
        .expect("hestia runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn get_json(semaphore_url: &str, token: &str, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{semaphore_url}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("the fake answers")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_creates_everything_writes_the_config_and_a_second_run_changes_nothing() {
    // Given a Semaphore just installed, and the Docker stack's config with placeholder ids
    let fake = fresh_semaphore().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hestia_config.yml");
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/hestia_config.yml"),
    )
    .expect("the shipped Docker config");
    // (stale ids, as if copied from another installation: the bootstrap must correct them)
    let stale = shipped
        .replacen("  project_id: 1\n", "  project_id: 5\n", 1)
        .replacen("template_id: 1\n", "template_id: 7\n", 1)
        .replacen("template_id: 2\n", "template_id: 8\n", 1);
    assert_ne!(stale, shipped);
    std::fs::write(&path, &stale).expect("copy the config");

    // When the bootstrap runs
    let first = bootstrap(&path, &fake.url()).await;

    // Then it succeeds and says what it created
    assert!(
        first.status.success(),
        "bootstrap failed: {}{}",
        stdout(&first),
        String::from_utf8_lossy(&first.stderr)
    );
    let said = stdout(&first);
    for line in [
        "project `hestia`: id 1, created",
        "access key `hestia-none`: id 1, created",
        "inventory `hestia-local`: id 1, created",
        "repository `hestia-examples`: id 1, created",
        "variable group `hestia`: id 1, created",
        "template `hestia-demo-start`: id 1, created",
        "template `hestia-demo-stop`: id 2, created",
        "API token: created",
    ] {
        assert!(said.contains(line), "missing `{line}` in:\n{said}");
    }

    // And the file now holds the project, the token and the template ids — and nothing else moved
    let written = std::fs::read_to_string(&path).expect("the config");
    let config = config::load(
        &path,
        &[("SEMAPHORE_BASE_URL", fake.url())]
            .into_iter()
            .collect::<MapSource>(),
    )
    .expect("the written config loads with no credentials but its own token");
    let semaphore = config.semaphore.clone().expect("semaphore configured");
    assert_eq!(semaphore.project_id, 1);
    let token = semaphore
        .api_token
        .as_ref()
        .expect("a token was written")
        .expose()
        .to_owned();
    assert_eq!(token.len(), 44, "Semaphore's token format");
    let demo = config
        .engine
        .services
        .iter()
        .find(|s| s.id == "semaphore-demo")
        .expect("the demo service");
    assert_eq!(
        format!("{:?}", (&demo.start, &demo.stop))
            .matches("template_id: ")
            .count(),
        2
    );
    // (a fresh Semaphore numbers from 1, as the shipped placeholders do: with the ids corrected,
    // the file is the shipped one plus the token line)
    let token_line = format!("  api_token: \"{token}\"\n");
    assert_eq!(
        written.replacen(&token_line, "", 1),
        shipped,
        "anything but the token line was touched"
    );
    assert!(
        written.contains(&format!("semaphore:\n{token_line}")),
        "the token goes under `semaphore:`: {written}"
    );

    // And what Semaphore holds is wired together as the contract needs
    let url = fake.url();
    let client = SemaphoreClient::new(config.engine.semaphore.clone().expect("connection"));
    let user = client
        .current_user()
        .await
        .expect("the written token works");
    assert_eq!(user.username, ADMIN);
    let templates = get_json(&url, &token, "/api/project/1/templates").await;
    let by_name = |name: &str| {
        templates
            .as_array()
            .and_then(|list| list.iter().find(|t| t["name"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    for (name, id) in [("hestia-demo-start", 1), ("hestia-demo-stop", 2)] {
        let template = by_name(name);
        assert_eq!(template["id"], id, "{templates}");
        assert_eq!(template["playbook"], format!("{name}.yml"));
        assert_eq!(
            (
                &template["inventory_id"],
                &template["repository_id"],
                &template["environment_id"]
            ),
            (&Value::from(1), &Value::from(1), &Value::from(1))
        );
    }
    let repositories = get_json(&url, &token, "/api/project/1/repositories").await;
    assert_eq!(repositories[0]["git_url"], "/opt/hestia/playbooks");
    let inventories = get_json(&url, &token, "/api/project/1/inventory").await;
    assert!(
        inventories[0]["inventory"]
            .as_str()
            .is_some_and(|text| text.contains("ansible_connection=local")),
        "{inventories}"
    );
    // The start template runs as a task with Hestia's environment, through the new token
    let mut environment = Map::new();
    environment.insert("service_id".into(), "semaphore-demo".into());
    let task = client
        .run_task(
            1,
            &environment,
            "bootstrap test",
            RunOptions {
                poll_interval: Duration::from_millis(10),
                timeout: Duration::from_secs(10),
            },
            |_| {},
        )
        .await
        .expect("the start template runs");
    assert_eq!(task.status.as_str(), "success");

    // When the bootstrap runs a second time
    let calls_before = fake.calls().len();
    let second = bootstrap(&path, &fake.url()).await;

    // Then it succeeds, creates nothing in Semaphore and leaves the file byte for byte as it was
    assert!(second.status.success(), "{}", stdout(&second));
    let said = stdout(&second);
    assert!(!said.contains("created"), "{said}");
    assert!(
        said.contains("API token: the configured one works, kept"),
        "{said}"
    );
    assert!(said.contains(": unchanged"), "{said}");
    let writes: Vec<_> = fake.calls()[calls_before..]
        .iter()
        .filter(|c| c.method != "GET" && c.path != "/api/auth/login")
        .cloned()
        .collect();
    assert!(
        writes.is_empty(),
        "the second run changed Semaphore: {writes:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).expect("the config"),
        written,
        "the second run rewrote the file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_without_credentials_says_which_ones_to_set() {
    // Given a config naming a Semaphore but no credentials anywhere
    let fake = fresh_semaphore().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hestia_config.yml");
    std::fs::write(&path, "semaphore:\n  base_url: \"http://unused\"\n").expect("config");

    // When the bootstrap runs without SEMAPHORE_USERNAME/PASSWORD
    let output = tokio::process::Command::new(hestia_exe())
        .arg("--config")
        .arg(&path)
        .args(["semaphore", "bootstrap"])
        .env_remove("SEMAPHORE_USERNAME")
        .env_remove("SEMAPHORE_PASSWORD")
        .env_remove("SEMAPHORE_API_TOKEN")
        .env_remove("SEMAPHORE_API_KEY")
        .env("SEMAPHORE_BASE_URL", fake.url())
        .output()
        .await
        .expect("hestia runs");

    // Then it fails before calling Semaphore, naming the variables to set
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("SEMAPHORE_USERNAME") && stderr.contains("SEMAPHORE_PASSWORD"),
        "{stderr}"
    );
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
}
