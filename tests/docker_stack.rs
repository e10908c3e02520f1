//! What can be proved about the Docker stack without a Docker engine: the compose file, the
//! Dockerfile, `.dockerignore`, `.env.example` and the stack's own config, read as files and
//! checked against what the stack promises (docs/semaphore.md, README's Docker quickstart).
//! hadolint and actionlint lint the Dockerfile and the workflows in `.ci/run`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hestia::cli::semaphore::{START_TEMPLATE, STOP_TEMPLATE};
use hestia::config::{self, env::MapSource};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn compose() -> Value {
    serde_saphyr::from_str(&read("docker/docker-compose.yml")).expect("the compose file is YAML")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .map(|map| map.keys().cloned().collect())
        .unwrap_or_default()
}

/// `${NAME}`, `${NAME:-default}`, `${NAME:?message}` references in a text.
fn variables(text: &str) -> BTreeSet<String> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| {
            let end = rest.find([':', '}', '-', '?'])?;
            Some(rest[..end].to_owned())
        })
        .collect()
}

#[test]
fn compose_runs_hestia_and_a_pinned_sqlite_semaphore_on_one_network() {
    let doc = compose();
    let services = &doc["services"];
    assert_eq!(
        keys(services),
        BTreeSet::from([
            "hestia".into(),
            "semaphore".into(),
            "semaphore-bootstrap".into()
        ])
    );

    // Semaphore: a pinned 2.16 image with the SQLite dialect, its database and config persisted
    let semaphore = &services["semaphore"];
    let image = semaphore["image"].as_str().expect("an image");
    let (tag, digest) = image.split_once('@').expect("pinned by digest");
    assert!(tag.starts_with("semaphoreui/semaphore:v2.16."), "{image}");
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    assert!(
        hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "{image}"
    );
    let env = &semaphore["environment"];
    assert_eq!(
        env["SEMAPHORE_DB_DIALECT"], "sqlite",
        "BoltDB is deprecated upstream"
    );
    assert!(
        env["SEMAPHORE_DB_HOST"]
            .as_str()
            .is_some_and(|path| path.starts_with("/var/lib/semaphore/")),
        "the SQLite file lives in the persisted data volume"
    );
    for secret in [
        "SEMAPHORE_ADMIN_PASSWORD",
        "SEMAPHORE_ACCESS_KEY_ENCRYPTION",
    ] {
        let value = env[secret].as_str().unwrap_or_default();
        assert!(
            value.starts_with(&format!("${{{secret}:?")),
            "{secret} must come from .env and be required, not defaulted: {value}"
        );
    }
    let volumes = strings(&semaphore["volumes"]);
    assert!(
        volumes.contains(&"semaphore_data:/var/lib/semaphore".to_owned()),
        "{volumes:?}"
    );
    assert!(
        volumes.iter().any(|v| v.ends_with(":/etc/semaphore")),
        "config.json persisted"
    );
    assert!(
        volumes.contains(&"./playbooks:/opt/hestia/playbooks:ro".to_owned()),
        "the bootstrap's local repository: {volumes:?}"
    );
    assert!(
        semaphore["healthcheck"]["test"]
            .to_string()
            .contains("http://127.0.0.1:3000/api/ping"),
        "Semaphore's health is its unauthenticated ping"
    );

    // Only Hestia's port is published
    for (name, service) in services.as_object().expect("services") {
        let published = service.get("ports").map(strings).unwrap_or_default();
        if name == "hestia" {
            assert_eq!(published, ["${HESTIA_PORT:-8080}:8080"]);
        } else {
            assert!(published.is_empty(), "{name} publishes {published:?}");
        }
    }

    // One network, every service on it
    assert_eq!(keys(&doc["networks"]), BTreeSet::from(["hestia".into()]));
    for (name, service) in services.as_object().expect("services") {
        assert_eq!(strings(&service["networks"]), ["hestia"], "{name}");
    }

    // Named volumes
    let named = keys(&doc["volumes"]);
    for volume in ["hestia_sqlite", "semaphore_data"] {
        assert!(named.contains(volume), "{named:?}");
    }
}

#[test]
fn compose_hestia_reaches_semaphore_by_name_and_starts_only_when_it_is_healthy() {
    let doc = compose();
    let hestia = &doc["services"]["hestia"];
    assert_eq!(hestia["build"]["context"], "..");
    assert_eq!(hestia["build"]["dockerfile"], "docker/Dockerfile");
    assert_eq!(
        hestia["environment"]["SEMAPHORE_BASE_URL"],
        "http://semaphore:3000"
    );
    let volumes = strings(&hestia["volumes"]);
    for mount in [
        "hestia_sqlite:/var/lib/hestia",
        "./hestia_config.yml:/etc/hestia/hestia_config.yml:ro",
        "./strategies:/etc/hestia/strategies:ro",
    ] {
        assert!(
            volumes.contains(&mount.to_owned()),
            "{mount} in {volumes:?}"
        );
    }
    assert_eq!(
        strings(&hestia["healthcheck"]["test"]),
        ["CMD", "hestia", "healthcheck"]
    );
    assert!(hestia["healthcheck"]["start_period"].is_string());
    assert_eq!(
        hestia["depends_on"]["semaphore"]["condition"],
        "service_healthy"
    );
    assert_eq!(
        hestia["depends_on"]["semaphore-bootstrap"]["condition"],
        "service_completed_successfully"
    );

    // The bootstrap: same image, the admin login, writes the mounted config, runs once
    let bootstrap = &doc["services"]["semaphore-bootstrap"];
    assert_eq!(bootstrap["build"], hestia["build"]);
    assert_eq!(
        strings(&bootstrap["command"]),
        [
            "semaphore",
            "bootstrap",
            "--config",
            "/etc/hestia/hestia_config.yml"
        ]
    );
    assert_eq!(
        bootstrap["environment"]["SEMAPHORE_BASE_URL"],
        "http://semaphore:3000"
    );
    assert!(
        strings(&bootstrap["volumes"])
            .contains(&"./hestia_config.yml:/etc/hestia/hestia_config.yml".to_owned()),
        "the bootstrap writes the config Hestia reads"
    );
    assert_eq!(
        bootstrap["depends_on"]["semaphore"]["condition"],
        "service_healthy"
    );
    assert_eq!(bootstrap["restart"], "no");
}

#[test]
fn every_bind_mount_exists_and_every_variable_is_in_env_example() {
    let doc = compose();
    for (name, service) in doc["services"].as_object().expect("services") {
        for mount in service.get("volumes").map(strings).unwrap_or_default() {
            if let Some(source) = mount.strip_prefix("./") {
                let source = source.split(':').next().unwrap_or_default();
                assert!(
                    repo().join("docker").join(source).exists(),
                    "{name} mounts ./{source}, which docker/ lacks"
                );
            }
        }
    }
    let example = read("docker/.env.example");
    let defined: BTreeSet<String> = example
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split_once('=').map(|(k, _)| k.trim().to_owned()))
        .collect();
    let used = variables(&read("docker/docker-compose.yml"));
    assert!(!used.is_empty());
    let missing: Vec<_> = used.difference(&defined).collect();
    assert!(missing.is_empty(), ".env.example lacks {missing:?}");
    assert!(
        read(".gitignore").lines().any(|l| l == "/docker/.env"),
        "the real .env (secrets) must never be committed"
    );
    // The playbooks the bootstrap's templates name are in the mounted repository
    for template in [START_TEMPLATE, STOP_TEMPLATE] {
        assert!(
            repo()
                .join(format!("docker/playbooks/{template}.yml"))
                .exists(),
            "{template}.yml"
        );
    }
}

#[test]
fn the_stack_config_loads_and_points_at_the_compose_semaphore() {
    let env: MapSource = [("SEMAPHORE_USERNAME", "admin"), ("SEMAPHORE_PASSWORD", "x")]
        .into_iter()
        .collect();
    let config = config::load(&repo().join("docker/hestia_config.yml"), &env)
        .expect("docker/hestia_config.yml loads");
    assert_eq!(
        config.semaphore.expect("semaphore").base_url,
        "http://semaphore:3000"
    );
    assert_eq!(config.listen.port(), 8080);
    let ids: Vec<_> = config
        .engine
        .services
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    assert!(ids.contains(&"semaphore-demo"), "{ids:?}");
}

#[test]
fn dockerfile_builds_locked_in_a_cached_dependency_layer_and_runs_unprivileged() {
    let dockerfile = read("docker/Dockerfile");
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "build and runtime stages");
    for from in &froms {
        let image = from.split_whitespace().nth(1).unwrap_or_default();
        let digest = image
            .split_once("@sha256:")
            .map(|(_, d)| d)
            .unwrap_or_default();
        assert!(
            digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()),
            "not pinned by digest: {from}"
        );
    }
    // The dependency layer: manifests and lock file copied before any source, then a build
    let manifests = dockerfile
        .find("COPY Cargo.toml Cargo.lock")
        .expect("manifests first");
    let sources = dockerfile.find("COPY src src").expect("sources copied");
    let first_build = dockerfile
        .find("cargo build --release --locked")
        .expect("a locked release build");
    assert!(manifests < first_build && first_build < sources);
    assert_eq!(
        dockerfile.matches("cargo build --release --locked").count(),
        2
    );
    // Non-root with a fixed UID; the health check is `hestia healthcheck` with a start period
    assert!(dockerfile.contains("ARG HESTIA_UID=10001"));
    assert!(dockerfile.contains("--uid \"${HESTIA_UID}\""));
    let user = dockerfile
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    let health = dockerfile
        .split("HEALTHCHECK")
        .nth(1)
        .expect("a HEALTHCHECK");
    assert!(health.contains("--start-period="));
    assert!(health.contains("CMD [\"hestia\", \"healthcheck\"]"));
    // The image's default config path is where compose mounts the stack's config
    assert!(dockerfile.contains("HESTIA_CONFIG=/etc/hestia/hestia_config.yml"));
}

#[test]
fn dockerignore_keeps_target_and_the_git_history_out_of_the_context() {
    let ignore = read(".dockerignore");
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        rules.first(),
        Some(&"*"),
        "an allow-list: everything out first"
    );
    for allowed in &rules[1..] {
        let path = allowed.strip_prefix('!').expect("only re-includes follow");
        assert!(
            !path.contains("target") && !path.starts_with(".git"),
            "{path}"
        );
        assert!(
            repo().join(path).exists(),
            "{path} is re-included but missing"
        );
    }
    // Every path the Dockerfile copies from the context is let in
    let dockerfile = read("docker/Dockerfile");
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            let allowed = rules[1..].iter().any(|rule| {
                let rule = rule.trim_start_matches('!').trim_end_matches('/');
                *source == rule || source.starts_with(&format!("{rule}/"))
            });
            assert!(
                allowed,
                "the Dockerfile copies {source}, which .dockerignore leaves out"
            );
        }
    }
}

#[test]
fn the_workflow_builds_the_image_on_push() {
    let workflow: Value =
        serde_saphyr::from_str(&read(".github/workflows/ci.yml")).expect("workflow YAML");
    assert!(
        workflow["on"]
            .as_object()
            .is_some_and(|on| on.contains_key("push")),
        "runs on push"
    );
    let text = workflow["jobs"].to_string();
    assert!(
        text.contains("docker/Dockerfile"),
        "a job builds docker/Dockerfile: {text}"
    );
    assert!(Path::new(&repo().join(".ci/run")).exists());
}
