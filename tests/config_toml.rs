//! A configuration file ending in `.toml` is TOML: the same schema, the same strictness and the
//! same `file:line:column` errors as YAML, through the library, `hestia config check` and a live
//! reload of a running Hestia.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hestia::config::env::MapSource;
use hestia::config::{self, Config, ConfigError, Problem};
use serde_json::Value;
use support::{HestiaProcess, Sim, config_toml, eventually_async, hestia_cli};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn load_toml(text: &str) -> Result<Config, ConfigError> {
    config::load_str(text, Path::new("hestia.toml"), &MapSource::empty())
}

/// The one located problem of a rejected TOML document, as `file:line:column: key: problem`.
fn rejection(text: &str) -> String {
    let err = load_toml(text).expect_err("the document is rejected");
    let diagnostics = err.diagnostics();
    assert_eq!(diagnostics.len(), 1, "one problem expected: {err}");
    diagnostics[0].to_string()
}

const SVC: &str = "[services.echo]\nbase_url = \"http://127.0.0.1:9101\"\n";

#[test]
fn given_the_toml_sample_when_loaded_then_it_is_the_yaml_sample() {
    let yaml = config::load(&repo("hestia_config.yml"), &MapSource::empty()).expect("YAML loads");
    // Loaded as if it sat beside the YAML one, so paths relative to the file agree.
    let text = std::fs::read_to_string(repo("docs/hestia_config.toml")).expect("TOML sample");
    let toml = config::load_str(&text, &repo("hestia_config.toml"), &MapSource::empty())
        .expect("TOML loads");
    assert_eq!(toml.engine.services.len(), 4);
    let same_source = Config {
        source_path: yaml.source_path.clone(),
        ..toml
    };
    assert_eq!(format!("{same_source:?}"), format!("{yaml:?}"));
}

#[test]
fn given_a_misspelt_key_then_the_error_names_its_line_column_and_the_valid_one() {
    let text = format!("{SVC}warmup_ms = 1\nretry_cont = 3\n");
    assert_eq!(
        rejection(&text),
        "hestia.toml:4:1: services.echo.retry_cont: unknown key `retry_cont` (did you mean `retry_count`?)"
    );
}

#[test]
fn given_an_unknown_starter_kind_then_the_error_suggests_the_valid_one() {
    let text = format!("{SVC}warmup_ms = 1\nstart = {{ comand = {{ program = \"x\" }} }}\n");
    let rejected = rejection(&text);
    assert!(
        rejected.starts_with("hestia.toml:4:")
            && rejected.contains("unknown variant `comand` (did you mean `command`?)"),
        "{rejected}"
    );
}

#[test]
fn given_a_wrong_type_then_the_error_names_its_line_column_and_key() {
    let err = load_toml(&format!("{SVC}warmup_ms = \"soon\"\n")).expect_err("rejected");
    let ConfigError::Parse(d) = &err else {
        panic!("parse error expected, got {err}")
    };
    assert_eq!(
        (d.line(), d.column(), d.key_path.as_str()),
        (3, 13, "services.echo.warmup_ms"),
        "{err}"
    );
    assert_eq!(
        d.problem,
        Problem::WrongType {
            expected: "a whole number ≥ 0"
        }
    );
}

#[test]
fn given_a_missing_required_key_then_the_error_names_it() {
    let rejected = rejection("[services.echo]\nwarmup_ms = 4\n");
    assert!(
        rejected.starts_with("hestia.toml:1:")
            && rejected.ends_with("missing required key `base_url`"),
        "{rejected}"
    );
}

#[test]
fn given_a_value_the_checks_refuse_then_it_is_located_like_in_yaml() {
    let text = format!("{SVC}warmup_ms = 5\nqueue_size = 0\n");
    assert_eq!(
        rejection(&text),
        "hestia.toml:4:1: services.echo.queue_size: must be ≥ 1, got 0"
    );
}

#[test]
fn given_malformed_toml_then_the_error_gives_line_and_column() {
    let rejected = rejection("listen = \"127.0.0.1:8080\"\nshutdown_grace_ms = = 3\n");
    assert!(rejected.starts_with("hestia.toml:2:"), "{rejected}");
}

#[test]
fn given_an_empty_toml_file_then_the_defaults_apply() {
    let config = load_toml("# nothing yet\n").expect("loads");
    assert_eq!(config.listen.to_string(), config::DEFAULT_LISTEN);
    assert!(config.engine.services.is_empty());
}

#[tokio::test]
async fn given_toml_files_when_checked_by_the_cli_then_it_reports_like_for_yaml() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("hestia.toml");
    std::fs::write(&good, config_toml(dir.path(), &[&Sim::new("echo")])).expect("write");
    let path = good.display().to_string();
    let (ok, out, err) = hestia_cli(&good, &["config", "check", &path], "").await;
    assert!(ok, "{err}");
    assert!(out.contains("ok, 1 service(s)"), "{out}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[services.echo]\nbase_url = 3\n").expect("write");
    let path = bad.display().to_string();
    let (ok, _, err) = hestia_cli(&bad, &["config", "check", &path], "").await;
    assert!(!ok);
    assert!(err.contains("bad.toml:2:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_toml_config_when_reloaded_then_changes_apply_and_a_broken_one_is_refused() {
    // Given Hestia serving `steady` from a TOML file, and a client calling it
    let dir = tempfile::tempdir().expect("tempdir");
    let (steady, fresh) = (Sim::new("steady"), Sim::new("fresh"));
    let config = dir.path().join("hestia.toml");
    std::fs::write(&config, config_toml(dir.path(), &[&steady])).expect("config");
    let hestia = HestiaProcess::serve_file(dir.path(), &config, &["--no-watch"]).await;
    let base = hestia.url.clone();
    let steady_url = format!("{base}/services/steady/health");
    eventually_async("steady serves", Duration::from_secs(20), || {
        let url = steady_url.clone();
        async move { status(&url).await == 200 }
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (url, stop) = (steady_url.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                seen.push(status(&url).await);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        })
    };

    // When a service is added to the file and the reload API is called, then it serves
    std::fs::write(&config, config_toml(dir.path(), &[&steady, &fresh])).expect("edit");
    let outcome = reload(&base).await;
    assert_eq!(outcome.0, 200, "{}", outcome.1);
    assert_eq!(outcome.1["changes"]["added"][0], "fresh");
    let fresh_url = format!("{base}/services/fresh/health");
    eventually_async("fresh serves", Duration::from_secs(20), || {
        let url = fresh_url.clone();
        async move { status(&url).await == 200 }
    })
    .await;

    // When the file is broken, then the reload is refused naming the TOML line, and nothing changes
    std::fs::write(&config, "listen = [\n").expect("edit");
    let (code, problem) = reload(&base).await;
    assert_eq!(code, 422, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("hestia.toml:1:")),
        "{problem}"
    );
    assert_eq!(status(&fresh_url).await, 200);

    // Then `steady` answered every call with 200
    stop.store(true, Ordering::SeqCst);
    let seen = client.await.expect("client");
    assert!(
        !seen.is_empty() && seen.iter().all(|s| *s == 200),
        "{seen:?}"
    );
    hestia.stop().await;
}

async fn status(url: &str) -> u16 {
    reqwest::get(url).await.map_or(0, |r| r.status().as_u16())
}

async fn reload(base: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/config/reload"))
        .send()
        .await
        .expect("reload");
    let code = response.status().as_u16();
    (code, response.json().await.expect("a JSON answer"))
}
