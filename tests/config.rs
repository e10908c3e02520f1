//! Loading `hestia_config.yml` through the library: the sample, prototype flat keys, every
//! validation rule with the line, column and key path it names, environment overrides, and the
//! committed JSON schema.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hestia::config::env::MapSource;
use hestia::config::{self, Config, ConfigError, Diagnostic, LogFormat, Origin, Problem};
use hestia_actors::spec::{
    MachineRole, ReadinessSpec, RuleTarget, StarterSpec, StatusRange, WakeSpec,
};
use serde_json::Value;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn no_env() -> MapSource {
    MapSource::empty()
}

fn load_text(yaml: &str) -> Result<Config, ConfigError> {
    config::load_str(yaml, Path::new("hestia_config.yml"), &no_env())
}

/// The problems a bad document produces (panics if it loads).
fn problems(yaml: &str) -> Vec<Diagnostic> {
    match load_text(yaml) {
        Ok(_) => panic!("expected the configuration to be rejected:\n{yaml}"),
        Err(err) => err.diagnostics().to_vec(),
    }
}

/// The single problem of a bad document, checked for its line, column and key path.
fn only_problem(yaml: &str, line: usize, column: usize, key_path: &str) -> Problem {
    let all = problems(yaml);
    assert_eq!(all.len(), 1, "expected one problem, got {all:#?}");
    let d = &all[0];
    assert_eq!(
        (d.line(), d.column(), d.key_path.as_str()),
        (line, column, key_path),
        "wrong location in `{d}`"
    );
    d.problem.clone()
}

// ---------------------------------------------------------------------------------------------
// The sample and the fixtures

#[test]
fn given_the_sample_config_when_loaded_then_four_simulated_services_are_ready_to_serve() {
    let config = config::load(&repo("hestia_config.yml"), &no_env()).expect("sample loads");

    assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(config.database_url, "sqlite://hestia.db?mode=rwc");
    let ids: Vec<&str> = config
        .engine
        .services
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(
        ids,
        ["echo", "slow-llm", "legacy-echo", "chat"],
        "services keep the file's order"
    );
    for svc in &config.engine.services {
        let StarterSpec::Command(cmd) = &svc.start else {
            panic!("{} is not a command", svc.id)
        };
        assert_eq!(cmd.program, "{hestia_exe}");
        assert_eq!(cmd.args[0], "sim");
    }
    assert_eq!(
        config.summary_lines(),
        [
            "echo: command start, http readiness, idle 1m, queue 100, machine local",
            "slow-llm: command start, tcp readiness, idle 5m, queue 100, machine -",
            "legacy-echo: command start, http readiness, idle 2m, queue 20, machine -",
            "chat: command start, http readiness, idle 5m, queue 100, machine -",
        ]
    );
    let legacy = &config.engine.services[2];
    assert_eq!(legacy.policy.retry_count, 1);
    assert_eq!(legacy.policy.retry_delay, Duration::from_millis(500));
    assert_eq!(legacy.queue.timeout, Duration::from_secs(30));
    assert_eq!(config.engine.services[3].models, ["llama3", "llama3:8b"]);
}

#[test]
fn given_a_prototype_flat_config_when_loaded_then_it_means_the_same_as_its_rich_twin() {
    let flat = config::load(&repo("tests/fixtures/config/prototype_flat.yml"), &no_env())
        .expect("prototype config loads unchanged");
    let rich = config::load(&repo("tests/fixtures/config/prototype_rich.yml"), &no_env())
        .expect("rich twin loads");

    assert_eq!(format!("{:?}", flat.engine), format!("{:?}", rich.engine));
    assert_eq!(flat.semaphore, rich.semaphore);

    let llm = &flat.engine.services[0];
    let StarterSpec::Semaphore(task) = &llm.start else {
        panic!("semaphore start expected")
    };
    assert_eq!(task.template_id, 4);
    assert_eq!(
        task.environment.get("machine_id").map(String::as_str),
        Some("gpu-desktop")
    );
    assert_eq!(task.task_timeout, Duration::from_secs(900));
    assert!(
        matches!(&llm.readiness, ReadinessSpec::Http(p) if p.expect_status == StatusRange::default())
    );
    assert_eq!(
        flat.engine.services[1].idle_timeout, None,
        "idle_timeout_ms: 0 means never"
    );
    assert_eq!(
        flat.engine.services[1].readiness,
        ReadinessSpec::Warmup(Duration::from_secs(3))
    );
    let semaphore = flat.semaphore.expect("semaphore configured");
    assert_eq!(semaphore.timeout, Duration::from_secs(15));
    assert_eq!(
        semaphore
            .api_token
            .map(|t| t.expose().to_owned())
            .as_deref(),
        Some("prototype-key")
    );
}

/// The prototype's own sample, key for key (tests/fixtures/prototype_hestia_config.yml).
const PROTOTYPE_SAMPLE: &str = "tests/fixtures/prototype_hestia_config.yml";

fn service<'a>(config: &'a Config, id: &str) -> &'a hestia_actors::spec::ServiceSpec {
    config
        .engine
        .services
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("service {id} missing"))
}

fn semaphore_task(config: &Config, id: &str) -> hestia_actors::spec::SemaphoreTaskSpec {
    match &service(config, id).start {
        StarterSpec::Semaphore(task) => task.clone(),
        other => panic!("{id}: a Semaphore start expected, got {other:?}"),
    }
}

#[test]
fn given_the_prototypes_sample_when_loaded_then_it_loads_unchanged_with_fractional_seconds() {
    let config = config::load(&repo(PROTOTYPE_SAMPLE), &no_env()).expect("the sample loads");
    assert_eq!(config.engine.services.len(), 16);
    let cloud = semaphore_task(&config, "cloud-ollama");
    assert_eq!(
        (cloud.template_id, cloud.poll_interval, cloud.task_timeout),
        (1, Duration::from_secs(2), Duration::from_secs(300))
    );
    assert_eq!(
        cloud.environment.get("machine_id").map(String::as_str),
        Some("cloud-vm-01")
    );
    let gpu = semaphore_task(&config, "gpu-stable-diffusion");
    assert_eq!(gpu.poll_interval, Duration::from_secs(5));
    assert_eq!(
        service(&config, "gpu-stable-diffusion").queue.timeout,
        Duration::from_secs(600)
    );
    assert_eq!(
        semaphore_task(&config, "dev-workspace").poll_interval,
        Duration::from_secs(3)
    );
    assert_eq!(
        config.semaphore.as_ref().map(|s| s.timeout),
        Some(Duration::from_secs(30))
    );
    let postgres = service(&config, "postgres");
    assert_eq!(postgres.policy.retry_count, 5);
    assert_eq!(
        postgres.policy.fallback_url.as_deref(),
        Some("http://postgres-replica:3001")
    );
    assert_eq!(postgres.idle_timeout, None, "0 = never stopped");
    assert_eq!(
        service(&config, "dev-service").readiness,
        ReadinessSpec::Warmup(Duration::from_secs(1))
    );
    assert_eq!(service(&config, "semaphore").start, StarterSpec::None);

    // No credentials in the file: one warning per Semaphore service, naming it.
    let warned: Vec<&str> = config
        .warnings
        .iter()
        .map(|w| w.key_path.as_str())
        .collect();
    assert_eq!(
        warned,
        [
            "services.cloud-ollama.semaphore_enabled",
            "services.gpu-stable-diffusion.semaphore_enabled",
            "services.dev-workspace.semaphore_enabled",
            "services.global-api.semaphore_enabled",
        ]
    );
    assert!(
        config.warnings[0]
            .to_string()
            .contains("service `cloud-ollama` uses Semaphore at http://localhost:3000"),
        "{}",
        config.warnings[0]
    );
}

#[test]
fn given_fractional_seconds_when_invalid_then_the_key_is_named() {
    let yaml = format!("{SVC}    warmup_ms: 1\n    request_timeout_seconds: -1.5\n");
    let problem = only_problem(&yaml, 5, 5, "services.echo.request_timeout_seconds");
    assert!(problem.to_string().contains("> 0"), "{problem}");
    let config = load_text(&format!(
        "{SVC}    warmup_ms: 1\n    request_timeout_seconds: 0.25\n"
    ))
    .expect("a quarter second is fine");
    assert_eq!(
        config.engine.services[0].queue.timeout,
        Duration::from_millis(250)
    );
}

#[test]
fn given_per_service_variables_then_they_override_the_file_and_define_services() {
    let env: MapSource = [
        ("DEV_SERVICE_BASE_URL", "http://127.0.0.1:9001"),
        ("OPEN_WEBUI_QUEUE_SIZE", "7"),
        ("OLLAMA_HEALTH_URL", "http://127.0.0.1:11434/"),
        ("OLLAMA_REQUEST_TIMEOUT_SECONDS", "1.5"),
        ("CLOUD_OLLAMA_SEMAPHORE_POLL_INTERVAL", "0.5"),
        ("CLOUD_OLLAMA_SEMAPHORE_START_TEMPLATE_ID", "9"),
        ("GLOBAL_API_SEMAPHORE_ENABLED", "false"),
        ("MINIO_IDLE_TIMEOUT_MS", "5000"),
        ("BATCH_JOBS_BASE_URL", "http://10.0.0.7:8000"),
        ("BATCH_JOBS_RETRY_COUNT", "4"),
        ("SEMAPHORE_TIMEOUT", "2.5"),
        ("SEMAPHORE_API_KEY", "from-the-environment"),
    ]
    .into_iter()
    .collect();
    let config = config::load(&repo(PROTOTYPE_SAMPLE), &env).expect("loads with variables");

    assert_eq!(
        service(&config, "dev-service").base_url,
        "http://127.0.0.1:9001"
    );
    assert_eq!(service(&config, "open-webui").queue.size, 7);
    let ollama = service(&config, "ollama");
    assert!(
        matches!(&ollama.readiness, ReadinessSpec::Http(p) if p.url == "http://127.0.0.1:11434/")
    );
    assert_eq!(ollama.queue.timeout, Duration::from_millis(1500));
    let cloud = semaphore_task(&config, "cloud-ollama");
    assert_eq!(
        (cloud.template_id, cloud.poll_interval),
        (9, Duration::from_millis(500))
    );
    assert_eq!(service(&config, "global-api").start, StarterSpec::None);
    assert_eq!(
        service(&config, "minio").idle_timeout,
        Some(Duration::from_secs(5))
    );
    let batch = service(&config, "batch-jobs");
    assert_eq!(
        (batch.base_url.as_str(), batch.policy.retry_count),
        ("http://10.0.0.7:8000", 4)
    );
    assert_eq!(batch.readiness, ReadinessSpec::Warmup(Duration::ZERO));
    let semaphore = config.semaphore.as_ref().expect("semaphore configured");
    assert_eq!(semaphore.timeout, Duration::from_millis(2500));

    // Credentials came from the environment; the one warning left says batch-jobs is not in the file.
    let [warning] = config.warnings.as_slice() else {
        panic!("one warning expected: {:?}", config.warnings)
    };
    assert_eq!(
        warning.origin,
        Origin::Env {
            var: "BATCH_JOBS_BASE_URL".to_owned()
        }
    );
}

#[test]
fn given_a_bad_per_service_variable_then_the_error_names_the_variable() {
    let env: MapSource = [
        ("OLLAMA_RETRY_COUNT", "three"),
        ("OPEN_WEBUI_QUEUE_SIZE", "0"),
        ("JUPYTER_SEMAPHORE_ENABLED", "maybe"),
        ("COMFYUI_HEALTH_URL", "ftp://x"),
        ("ORPHAN_QUEUE_SIZE", "5"),
        ("SEMAPHORE_TIMEOUT", "soon"),
    ]
    .into_iter()
    .collect();
    let err = config::load(&repo(PROTOTYPE_SAMPLE), &env).expect_err("bad values are refused");
    let found: Vec<(String, &str)> = err
        .diagnostics()
        .iter()
        .map(|d| (d.origin.to_string(), d.key_path.as_str()))
        .collect();
    for (var, key_path) in [
        ("OLLAMA_RETRY_COUNT", "services.ollama.retry_count"),
        ("OPEN_WEBUI_QUEUE_SIZE", "services.open-webui.queue_size"),
        (
            "JUPYTER_SEMAPHORE_ENABLED",
            "services.jupyter.semaphore_enabled",
        ),
        ("COMFYUI_HEALTH_URL", "services.comfyui.health_url"),
        ("ORPHAN_QUEUE_SIZE", "services.orphan"),
        ("SEMAPHORE_TIMEOUT", "semaphore_timeout"),
    ] {
        let origin = format!("environment variable {var}");
        assert!(
            found.iter().any(|(o, k)| *o == origin && *k == key_path),
            "no problem for {var} at {key_path}: {err}"
        );
    }
    assert_eq!(found.len(), 6, "{err}");
}

#[test]
fn given_every_rich_section_when_loaded_then_each_is_normalised() {
    let config = config::load(&repo("tests/fixtures/config/full_rich.yml"), &no_env())
        .expect("full rich config loads");

    assert_eq!(config.shutdown_grace, Duration::from_millis(2500));
    assert_eq!(config.log.format, LogFormat::Json);
    assert!(config.auth.enabled);
    let machines = &config.engine.machines;
    assert_eq!(
        machines[0].wake,
        Some(WakeSpec::Wol {
            mac: [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff],
            broadcast: "10.0.0.255:9".into()
        })
    );
    assert!(matches!(&machines[1].wake, Some(WakeSpec::Semaphore(t)) if t.template_id == 3));
    assert_eq!(
        (machines[2].role, machines[2].address.as_str()),
        (MachineRole::Local, "127.0.0.1")
    );
    let targets: Vec<&RuleTarget> = config
        .engine
        .routing_rules
        .iter()
        .map(|r| &r.target)
        .collect();
    assert_eq!(
        targets,
        [
            &RuleTarget::Machine("gpu-box".into()),
            &RuleTarget::Role(MachineRole::Hpc),
            &RuleTarget::Tags(vec!["gpu".into()])
        ]
    );

    let llm = &config.engine.services[0];
    assert_eq!(llm.machines, ["gpu-box", "hpc-node"]);
    let Some(StarterSpec::Http(stop)) = &llm.stop else {
        panic!("http stop expected")
    };
    assert_eq!(
        (stop.method.as_str(), stop.timeout),
        ("DELETE", Duration::from_secs(3))
    );
    let ReadinessSpec::Tcp(tcp) = &llm.readiness else {
        panic!("tcp readiness expected")
    };
    assert_eq!(tcp.interval, Duration::from_millis(100));

    let notebook = &config.engine.services[1];
    assert_eq!(notebook.stop, Some(StarterSpec::None));
    let ReadinessSpec::Http(http) = &notebook.readiness else {
        panic!("http readiness expected")
    };
    assert_eq!(http.expect_status, StatusRange { min: 204, max: 204 });
}

#[test]
fn given_secrets_in_the_file_when_the_config_is_debug_printed_then_they_do_not_appear() {
    let config = config::load(&repo("tests/fixtures/config/full_rich.yml"), &no_env())
        .expect("full rich config loads");
    let printed = format!("{config:?}");
    assert!(!printed.contains("s3cret-pass"), "password leaked");
    assert!(!printed.contains("$argon2id"), "password hash leaked");
    assert!(printed.contains("***"));
}

#[test]
fn given_secrets_in_a_loaded_file_then_any_text_leaving_hestia_shows_them_masked() {
    let config = load_text(
        "semaphore:\n  base_url: \"http://sem:urlpass41@sem\"\n  api_token: \"tok3n-41\"\n\
         services:\n  a:\n    base_url: \"http://127.0.0.1:1\"\n    warmup_ms: 1\n    \
         start:\n      command:\n        program: serve\n        env: {DB_PASSWORD: envpass41}\n",
    )
    .expect("loads");
    let secrets: Vec<&str> = config.engine.secrets.iter().collect();
    for secret in ["urlpass41", "tok3n-41", "envpass41"] {
        assert!(
            secrets.contains(&secret),
            "{secret} is a secret: {secrets:?}"
        );
    }
    assert_eq!(
        hestia_actors::redact::scrub("a backend said tok3n-41 and envpass41"),
        "a backend said *** and ***"
    );
}

#[test]
fn given_a_semaphore_machine_id_naming_a_configured_machine_then_it_becomes_the_machine() {
    let config = load_text(
        "semaphore_base_url: http://sem:3000\nsemaphore_api_key: k\nmachines: {gpu: {address: 10.0.0.9, role: remote}}\n\
         services:\n  llm:\n    base_url: http://{address}:8000\n    warmup_ms: 10\n    semaphore_enabled: true\n    \
         semaphore_machine_id: gpu\n    semaphore_start_template_id: 4\n",
    )
    .expect("loads");
    let llm = &config.engine.services[0];
    assert_eq!(llm.machines, ["gpu"]);
    let StarterSpec::Semaphore(task) = &llm.start else {
        panic!("semaphore start expected")
    };
    assert!(
        task.environment.is_empty(),
        "a known machine is not passed as machine_id"
    );
}

#[test]
fn given_an_empty_file_when_loaded_then_the_defaults_apply() {
    let config = load_text("# nothing yet\n").expect("empty config loads");
    assert_eq!(config.listen.to_string(), config::DEFAULT_LISTEN);
    assert_eq!(config.database_url, config::DEFAULT_DATABASE_URL);
    assert_eq!(config.log.level, "info");
    assert!(config.engine.services.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Validation: each rule, with the line, column and key path it names

const SVC: &str = "services:\n  echo:\n    base_url: http://127.0.0.1:9101\n";

#[test]
fn given_a_service_without_readiness_then_it_is_rejected_at_the_service() {
    let problem = only_problem(
        "services:\n  echo:\n    base_url: http://127.0.0.1:9101\n",
        2,
        3,
        "services.echo",
    );
    assert_eq!(problem, Problem::NoReadiness);
}

#[test]
fn given_a_negative_idle_timeout_then_it_is_rejected_at_the_key() {
    let problem = only_problem(
        &format!("{SVC}    warmup_ms: 5\n    idle_timeout_ms: -1\n"),
        5,
        5,
        "services.echo.idle_timeout_ms",
    );
    assert!(
        matches!(problem, Problem::OutOfRange { ref value, .. } if value == "-1"),
        "{problem}"
    );
}

#[test]
fn given_an_empty_queue_then_it_is_rejected_at_the_key() {
    let problem = only_problem(
        &format!("{SVC}    warmup_ms: 5\n    queue_size: 0\n"),
        5,
        5,
        "services.echo.queue_size",
    );
    assert!(matches!(problem, Problem::OutOfRange { .. }), "{problem}");
}

#[test]
fn given_two_rules_with_one_priority_then_the_second_is_rejected() {
    let yaml = "machines: {m: {}}\nrouting_rules:\n  - name: a\n    priority: 5\n    target: {machine: m}\n  - name: b\n    priority: 5\n    target: {role: local}\n";
    let problem = only_problem(yaml, 7, 5, "routing_rules[1].priority");
    assert_eq!(
        problem,
        Problem::DuplicatePriority {
            priority: 5,
            other: "a".into()
        }
    );
}

#[test]
fn given_references_to_unknown_machines_then_each_is_rejected_where_written() {
    let yaml = "machines:\n  gpu-box: {role: remote, address: 10.0.0.5}\nrouting_rules:\n  - {name: r, priority: 1, target: {machine: gpu-bx}}\nservices:\n  a:\n    base_url: http://x\n    warmup_ms: 1\n    machine: laptop\n  b:\n    base_url: http://x\n    warmup_ms: 1\n    machines: [gpu-box, nas]\n";
    let all = problems(yaml);
    let located: Vec<(usize, usize, &str)> = all
        .iter()
        .map(|d| (d.line(), d.column(), d.key_path.as_str()))
        .collect();
    assert_eq!(
        located,
        [
            (4, 37, "routing_rules[0].target.machine"),
            (9, 5, "services.a.machine"),
            (13, 25, "services.b.machines[1]"),
        ]
    );
    assert!(
        all[0]
            .to_string()
            .contains("unknown machine `gpu-bx` (known: gpu-box)"),
        "{}",
        all[0]
    );
}

#[test]
fn given_urls_that_do_not_parse_then_each_is_rejected_with_its_key() {
    let yaml = "services:\n  echo:\n    base_url: \"http://{address}:9101\"\n    readiness:\n      http:\n        url: \"127.0.0.1:9101/health\"\n";
    let problem = only_problem(yaml, 6, 9, "services.echo.readiness.http.url");
    assert!(matches!(problem, Problem::BadUrl { .. }), "{problem}");

    let problem = only_problem(
        &format!("{SVC}    warmup_ms: 1\n    fallback_url: \"http//oops\"\n"),
        5,
        5,
        "services.echo.fallback_url",
    );
    assert!(matches!(problem, Problem::BadUrl { .. }), "{problem}");
}

#[test]
fn given_a_service_id_that_is_not_url_safe_then_it_is_rejected() {
    let problem = only_problem(
        "services:\n  my echo:\n    base_url: http://x\n    warmup_ms: 1\n",
        2,
        3,
        "services.my echo",
    );
    assert_eq!(
        problem,
        Problem::BadId {
            kind: "service",
            id: "my echo".into()
        }
    );
}

#[test]
fn given_a_semaphore_starter_without_a_server_then_it_is_rejected() {
    let yaml = format!("{SVC}    warmup_ms: 1\n    start: {{semaphore: {{template_id: 3}}}}\n");
    let problem = only_problem(&yaml, 5, 13, "services.echo.start.semaphore");
    assert!(
        problem.to_string().contains("SEMAPHORE_BASE_URL"),
        "{problem}"
    );
}

#[test]
fn given_a_semaphore_starter_without_credentials_then_it_loads_with_a_warning_naming_the_service() {
    let yaml = format!(
        "semaphore: {{base_url: http://sem:3000}}\n{SVC}    warmup_ms: 1\n    start: {{semaphore: {{template_id: 3}}}}\n"
    );
    let config = load_text(&yaml).expect("credentials are not required to load");
    let [warning] = config.warnings.as_slice() else {
        panic!("one warning expected: {:?}", config.warnings)
    };
    assert_eq!(warning.key_path, "services.echo.start.semaphore");
    assert_eq!((warning.line(), warning.column()), (6, 13));
    let text = warning.to_string();
    assert!(
        text.contains("service `echo`") && text.contains("start-failed"),
        "{text}"
    );
}

#[test]
fn given_semaphore_enabled_without_a_template_then_it_is_rejected() {
    let yaml = format!(
        "semaphore_base_url: http://sem\nsemaphore_api_key: k\n{SVC}    warmup_ms: 1\n    semaphore_enabled: true\n"
    );
    let problem = only_problem(&yaml, 7, 5, "services.echo.semaphore_enabled");
    assert_eq!(problem, Problem::SemaphoreTemplateMissing);
}

#[test]
fn given_a_flat_key_and_its_rich_twin_then_the_error_names_both() {
    let yaml = format!("{SVC}    warmup_ms: 1\n    retry_count: 3\n    retry: {{count: 2}}\n");
    let problem = only_problem(&yaml, 5, 5, "services.echo.retry_count");
    assert_eq!(
        problem.to_string(),
        "`retry_count` and `retry.count` mean the same thing; keep only one of them"
    );

    let yaml = format!(
        "{SVC}    health_url: http://x/health\n    readiness: {{tcp: {{address: \"x:1\"}}}}\n"
    );
    let problem = only_problem(&yaml, 4, 5, "services.echo.health_url");
    assert_eq!(
        problem,
        Problem::Conflict {
            flat: "health_url".into(),
            rich: "readiness".into()
        }
    );

    let problem = only_problem(
        "semaphore_api_key: a\nsemaphore: {api_token: b}\n",
        1,
        1,
        "semaphore_api_key",
    );
    assert!(matches!(problem, Problem::Conflict { .. }), "{problem}");
}

#[test]
fn given_several_problems_then_all_are_reported_with_file_line_and_column() {
    let yaml = "listen: nope\nservices:\n  a:\n    base_url: http://x\n  b:\n    base_url: http://x\n    warmup_ms: 1\n    queue_size: 0\n";
    let err = load_text(yaml).expect_err("rejected");
    let rendered = err.to_string();
    assert_eq!(err.diagnostics().len(), 3, "{rendered}");
    assert!(
        rendered.contains("hestia_config.yml:1:1: listen: invalid address `nope`"),
        "{rendered}"
    );
    assert!(
        rendered.contains("hestia_config.yml:3:3: services.a: no way to tell"),
        "{rendered}"
    );
    assert!(
        rendered.contains("hestia_config.yml:8:5: services.b.queue_size: must be ≥ 1, got 0"),
        "{rendered}"
    );
}

// ---------------------------------------------------------------------------------------------
// Parse errors: unknown keys, wrong types, malformed YAML

#[test]
fn given_a_misspelt_key_then_the_error_suggests_the_valid_one() {
    let yaml = format!("{SVC}    warmup_ms: 1\n    retry_cont: 3\n");
    let err = load_text(&yaml).expect_err("unknown key rejected");
    let ConfigError::Parse(d) = &err else {
        panic!("parse error expected, got {err}")
    };
    assert_eq!(
        (d.line(), d.column(), d.key_path.as_str()),
        (5, 5, "services.echo.retry_cont")
    );
    assert_eq!(
        err.to_string(),
        "hestia_config.yml:5:5: services.echo.retry_cont: unknown key `retry_cont` (did you mean `retry_count`?)"
    );
}

#[test]
fn given_an_unknown_starter_kind_then_the_error_suggests_the_valid_one() {
    let yaml = format!("{SVC}    warmup_ms: 1\n    start: {{comand: {{program: x}}}}\n");
    let err = load_text(&yaml).expect_err("unknown variant rejected");
    assert!(
        err.to_string()
            .contains("unknown variant `comand` (did you mean `command`?)"),
        "{err}"
    );
}

#[test]
fn given_a_wrong_type_then_the_error_names_its_line_column_and_key() {
    let err = load_text(&format!("{SVC}    warmup_ms: soon\n")).expect_err("rejected");
    let ConfigError::Parse(d) = &err else {
        panic!("parse error expected, got {err}")
    };
    assert_eq!(
        (d.line(), d.key_path.as_str()),
        (4, "services.echo.warmup_ms"),
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
fn given_a_missing_required_key_then_the_error_names_the_mapping_that_lacks_it() {
    let err = load_text("services:\n  echo:\n    warmup_ms: 4\n").expect_err("rejected");
    assert_eq!(
        err.to_string(),
        "hestia_config.yml:3:5: services.echo: missing required key `base_url`"
    );
}

#[test]
fn given_two_readiness_kinds_then_the_error_points_at_the_second() {
    let yaml = format!(
        "{SVC}    readiness:\n      http: {{url: http://x}}\n      tcp: {{address: \"x:1\"}}\n"
    );
    let err = load_text(&yaml).expect_err("rejected");
    let ConfigError::Parse(d) = &err else {
        panic!("parse error expected, got {err}")
    };
    assert_eq!(
        d.problem,
        Problem::SecondAlternative { key: "tcp".into() },
        "{err}"
    );
    assert_eq!(d.line(), 6, "{err}");
}

#[test]
fn given_malformed_yaml_then_the_error_gives_line_and_column() {
    let err = load_text("listen: \"0.0.0.0:8080\nservices: {\n").expect_err("rejected");
    let ConfigError::Parse(d) = &err else {
        panic!("parse error expected, got {err}")
    };
    assert!(d.line() >= 1 && d.column() >= 1, "{err}");
    assert!(matches!(d.origin, Origin::File { .. }));

    let err =
        load_text("services:\n  echo:\n    base_url: a\n   bad: indent\n").expect_err("rejected");
    assert!(err.diagnostics()[0].line() >= 3, "{err}");
}

#[test]
fn given_hostile_inputs_then_loading_returns_errors_and_never_panics() {
    let inputs = [
        "- a\n- b\n",
        ":",
        "[",
        "services: 3",
        "services: {x: }",
        "services: {x: {base_url: }}",
        "machines: [1]",
        "routing_rules: {a: 1}",
        "&a [*a]",
        "listen: &x *x",
        "? [a]\n: b\n",
        "services: {x: {base_url: 'http://x', readiness: {http: {url: 'http://x'}, tcp: {address: 'x:1'}}}}",
        "services: {x: {base_url: 'http://x', readiness: {http: {url: 'http://x', expect_status: [1]}}}}",
        "\u{0}",
        "services:\n  a: {base_url: 'http://x', warmup_ms: 1}\n  a: {base_url: 'http://y', warmup_ms: 1}\n",
        "machines: {m: {role: cloud}}\n",
        "log: {level: \"hestia=[\"}\n",
        "---\na: 1\n---\nb: 2\n",
        "services: {x: {base_url: 'http://x', queue_size: 99999999999999999999}}",
    ];
    for input in inputs {
        let result = load_text(input);
        assert!(result.is_err(), "accepted {input:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Environment overrides and the file itself

#[test]
fn given_environment_overrides_then_they_win_over_the_file() {
    let env: MapSource = [
        ("HESTIA_LISTEN", "127.0.0.1:9999"),
        ("HESTIA_DATABASE_URL", "sqlite::memory:"),
        ("HESTIA_LOG", "debug"),
        ("SEMAPHORE_BASE_URL", "http://env-sem:3000"),
        ("SEMAPHORE_API_KEY", "env-token"),
        ("SEMAPHORE_USERNAME", "env-user"),
        ("SEMAPHORE_PASSWORD", "env-pass"),
    ]
    .into_iter()
    .collect();
    let config = config::load(&repo("tests/fixtures/config/prototype_flat.yml"), &env)
        .expect("loads with overrides");
    assert_eq!(config.listen.to_string(), "127.0.0.1:9999");
    assert_eq!(config.database_url, "sqlite::memory:");
    assert_eq!(config.log.level, "debug");
    let semaphore = config.semaphore.expect("semaphore configured");
    assert_eq!(semaphore.base_url, "http://env-sem:3000");
    assert_eq!(
        semaphore
            .api_token
            .map(|t| t.expose().to_owned())
            .as_deref(),
        Some("env-token")
    );
    assert_eq!(semaphore.username.as_deref(), Some("env-user"));
}

#[test]
fn given_a_semaphore_starter_and_credentials_only_in_the_environment_then_it_loads() {
    let env: MapSource = [
        ("SEMAPHORE_BASE_URL", "http://sem:3000"),
        ("SEMAPHORE_API_TOKEN", "t"),
    ]
    .into_iter()
    .collect();
    let yaml = format!("{SVC}    warmup_ms: 1\n    start: {{semaphore: {{template_id: 3}}}}\n");
    config::load_str(&yaml, Path::new("hestia_config.yml"), &env)
        .expect("environment supplies the server");
}

#[test]
fn given_a_bad_environment_override_then_the_error_names_the_variable() {
    let env: MapSource = [("HESTIA_LISTEN", "localhost")].into_iter().collect();
    let err = config::load_str("", Path::new("hestia_config.yml"), &env).expect_err("rejected");
    assert_eq!(
        err.diagnostics()[0].origin,
        Origin::Env {
            var: "HESTIA_LISTEN".to_owned()
        }
    );
    assert!(
        err.to_string()
            .contains("environment variable HESTIA_LISTEN: listen:"),
        "{err}"
    );
}

#[test]
fn given_a_missing_file_then_the_error_names_the_path_and_how_to_create_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nowhere.yml");
    let err = config::load(&path, &no_env()).expect_err("missing file rejected");
    assert!(matches!(&err, ConfigError::Missing { path: p } if p == &path));
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains("hestia config schema") && message.contains("hestia_config.yml"),
        "{message}"
    );
}

#[test]
fn given_a_file_on_disk_then_errors_name_that_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mine.yml");
    std::fs::write(&path, "services:\n  echo:\n    base_url: http://x\n").expect("write");
    let err = config::load(&path, &no_env()).expect_err("rejected");
    assert!(
        err.to_string()
            .contains(&format!("{}:2:3: services.echo:", path.display())),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// The JSON schema contract

#[test]
fn given_the_committed_schema_then_it_matches_the_code() {
    let path = repo("contracts/hestia_config.schema.json");
    let expected = format!(
        "{}\n",
        serde_json::to_string_pretty(&config::json_schema()).expect("schema serialises")
    );
    if std::env::var_os("HESTIA_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &expected).expect("write schema");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == expected,
        "contracts/hestia_config.schema.json is out of date; regenerate it with\n  \
         HESTIA_UPDATE_SCHEMA=1 cargo test -p hestia --test config given_the_committed_schema\n\
         (or `hestia config schema > contracts/hestia_config.schema.json`)"
    );
}

#[test]
fn given_the_sample_and_fixtures_then_they_validate_against_the_schema() {
    let schema = config::json_schema();
    for file in [
        "hestia_config.yml",
        "tests/fixtures/config/prototype_flat.yml",
        "tests/fixtures/config/prototype_rich.yml",
        "tests/fixtures/config/full_rich.yml",
    ] {
        let text = std::fs::read_to_string(repo(file)).expect("read");
        let doc: Value = serde_saphyr::from_str(&text).expect("YAML");
        let mut errors = Vec::new();
        mini_schema::check(&schema, &schema, &doc, file, &mut errors);
        assert!(
            errors.is_empty(),
            "{file} does not match the schema:\n{}",
            errors.join("\n")
        );
    }
}

#[test]
fn given_a_document_with_an_unknown_key_then_the_schema_check_catches_it() {
    let schema = config::json_schema();
    let doc: Value =
        serde_saphyr::from_str("services: {a: {base_url: x, retry_cont: 1}}").expect("YAML");
    let mut errors = Vec::new();
    mini_schema::check(&schema, &schema, &doc, "doc", &mut errors);
    assert!(
        errors.iter().any(|e| e.contains("retry_cont")),
        "{errors:?}"
    );
}

/// The subset of JSON Schema that schemars emits: `$ref`, `type`, `properties`,
/// `additionalProperties`, `required`, `items`, `enum`, `const`, `oneOf`/`anyOf`, `minimum`.
/// (No validator crate is available offline; this is enough to keep the sample honest.)
mod mini_schema {
    use serde_json::Value;

    pub fn check(root: &Value, schema: &Value, doc: &Value, at: &str, errors: &mut Vec<String>) {
        let Some(schema) = schema.as_object() else {
            return;
        };
        if let Some(Value::String(reference)) = schema.get("$ref") {
            let target = reference
                .trim_start_matches("#/")
                .split('/')
                .try_fold(root, |node, part| node.get(part));
            match target {
                Some(target) => check(root, target, doc, at, errors),
                None => errors.push(format!("{at}: dangling $ref {reference}")),
            }
        }
        if let Some(types) = schema.get("type") {
            let names: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            if !names.iter().any(|t| type_matches(t, doc)) {
                errors.push(format!("{at}: expected {names:?}, got {doc}"));
                return;
            }
        }
        if let Some(Value::Array(options)) = schema.get("enum")
            && !options.contains(doc)
        {
            errors.push(format!("{at}: {doc} not in {options:?}"));
        }
        if let Some(constant) = schema.get("const")
            && constant != doc
        {
            errors.push(format!("{at}: expected {constant}"));
        }
        if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), doc.as_f64())
            && n < min
        {
            errors.push(format!("{at}: {n} < minimum {min}"));
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(Value::Array(options)) = schema.get(key) {
                let passing = options
                    .iter()
                    .filter(|option| {
                        let mut sub = Vec::new();
                        check(root, option, doc, at, &mut sub);
                        sub.is_empty()
                    })
                    .count();
                let ok = if key == "oneOf" {
                    passing == 1
                } else {
                    passing >= 1
                };
                if !ok {
                    errors.push(format!("{at}: {passing} alternatives of {key} match"));
                }
            }
        }
        if let Value::Object(map) = doc {
            let properties = schema.get("properties").and_then(Value::as_object);
            for (key, value) in map {
                let path = format!("{at}.{key}");
                match (
                    properties.and_then(|p| p.get(key)),
                    schema.get("additionalProperties"),
                ) {
                    (Some(sub), _) => check(root, sub, value, &path, errors),
                    (None, Some(Value::Bool(false))) => errors.push(format!("{path}: unknown key")),
                    (None, Some(sub @ Value::Object(_))) => check(root, sub, value, &path, errors),
                    (None, _) => {}
                }
            }
            if let Some(Value::Array(required)) = schema.get("required") {
                for key in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(key) {
                        errors.push(format!("{at}: missing `{key}`"));
                    }
                }
            }
        }
        if let (Value::Array(items), Some(sub)) = (doc, schema.get("items")) {
            for (i, item) in items.iter().enumerate() {
                check(root, sub, item, &format!("{at}[{i}]"), errors);
            }
        }
    }

    fn type_matches(name: &str, doc: &Value) -> bool {
        match name {
            "null" => doc.is_null(),
            "boolean" => doc.is_boolean(),
            "object" => doc.is_object(),
            "array" => doc.is_array(),
            "string" => doc.is_string(),
            "integer" => doc.is_i64() || doc.is_u64(),
            "number" => doc.is_number(),
            _ => true,
        }
    }
}

#[test]
fn given_strategies_that_cannot_work_then_each_is_rejected_at_its_key() {
    let service =
        |keys: &str| format!("services:\n  llm:\n    base_url: http://x\n    warmup_ms: 1\n{keys}");
    let unknown = only_problem(
        &service("    strategy: fastest\n"),
        5,
        5,
        "services.llm.strategy",
    );
    assert!(
        unknown
            .to_string()
            .contains("unknown strategy `fastest` (known: first_healthy"),
        "{unknown}"
    );
    let no_routing = only_problem(
        &service("    strategy: model_router\n"),
        5,
        5,
        "services.llm.strategy",
    );
    assert!(
        no_routing.to_string().contains("needs `routing"),
        "{no_routing}"
    );
    let bad_fallback = only_problem(
        &service("    fallback_strategy: model_router\n"),
        5,
        5,
        "services.llm.fallback_strategy",
    );
    assert!(
        matches!(bad_fallback, Problem::UnknownStrategy { .. }),
        "{bad_fallback}"
    );
    let unknown_machine = only_problem(
        &service("    instances: [{url: \"http://y\", machine: nas}]\n"),
        5,
        35,
        "services.llm.instances[0].machine",
    );
    assert!(
        matches!(unknown_machine, Problem::UnknownMachine { .. }),
        "{unknown_machine}"
    );
}

#[test]
fn given_routing_then_the_strategy_is_model_router_and_a_named_builtin_its_fallback() {
    let yaml = "services:\n  llm:\n    base_url: http://x\n    warmup_ms: 1\n    strategy: round_robin\n    routing: {by_model: {llama3: \"http://y\"}}\n  plain:\n    base_url: http://x\n    warmup_ms: 1\n    routing: {model_key: name, by_model: {a: \"http://z\"}}\n";
    let config = load_text(yaml).expect("loads");
    let llm = &config.engine.services[0];
    assert_eq!(llm.strategy.as_deref(), Some("model_router"));
    assert_eq!(llm.fallback_strategy.as_deref(), Some("round_robin"));
    let plain = &config.engine.services[1];
    assert_eq!(plain.strategy.as_deref(), Some("model_router"));
    assert_eq!(plain.fallback_strategy, None);
    assert_eq!(
        plain.model_routing.as_ref().map(|r| r.model_key.as_str()),
        Some("name")
    );
}

// ---------------------------------------------------------------------------------------------
// Auth, hosts and origins

#[test]
fn given_auth_keys_and_browser_options_then_bad_values_are_located_and_good_ones_load() {
    let digest = "a".repeat(64);
    let good = format!(
        "auth:\n  enabled: true\n  max_failed_attempts: 3\n  keys:\n    - name: ci\n      sha256: \"{digest}\"\n      scopes: [read, \"control:*\"]\nallowed_hosts: [Hestia.LAN]\ncors_origins: [\"https://app.example/\"]\n"
    );
    let config = load_text(&good).expect("loads");
    assert_eq!(config.auth.keys.len(), 1);
    assert_eq!(config.auth.keys[0].scopes.len(), 2);
    assert_eq!(config.auth.max_failed_attempts, 3);
    assert_eq!(config.allowed_hosts, ["hestia.lan"]);
    assert_eq!(config.cors_origins, ["https://app.example"]);

    let bad_digest =
        "auth:\n  keys:\n    - name: ci\n      sha256: \"abc\"\n      scopes: [read]\n";
    let problem = only_problem(bad_digest, 4, 7, "auth.keys[0].sha256");
    assert!(matches!(problem, Problem::BadDigest { .. }), "{problem}");
    let bad_scope = format!(
        "auth:\n  keys:\n    - name: ci\n      sha256: \"{digest}\"\n      scopes: [write]\n"
    );
    let problem = only_problem(&bad_scope, 5, 16, "auth.keys[0].scopes[0]");
    assert!(
        problem.to_string().contains("proxy:<service|*>"),
        "{problem}"
    );
    let problem = only_problem(
        "cors_origins: [\"app.example\"]\n",
        1,
        16,
        "cors_origins[0]",
    );
    assert!(matches!(problem, Problem::BadValue { .. }));
    let problem = only_problem(
        "auth:\n  max_failed_attempts: 0\n",
        2,
        3,
        "auth.max_failed_attempts",
    );
    assert!(matches!(problem, Problem::OutOfRange { .. }));
}

#[test]
fn given_auth_environment_variables_then_keys_and_the_password_hash_come_from_them() {
    let digest = "b".repeat(64);
    let hash = hestia::auth::password::hash("pw").expect("hash");
    let env: MapSource = [
        (
            "HESTIA_API_KEYS",
            format!("ci:{digest}:read,control:* deploy:{digest}:admin"),
        ),
        ("HESTIA_DASHBOARD_PASSWORD_HASH", hash.clone()),
    ]
    .into_iter()
    .collect();
    let config = config::load_str("", Path::new("hestia_config.yml"), &env).expect("loads");
    assert_eq!(config.auth.keys.len(), 2);
    assert_eq!(config.auth.keys[0].scopes.len(), 2);
    assert_eq!(
        config
            .auth
            .dashboard_password_hash
            .map(|h| h.expose().to_owned()),
        Some(hash)
    );
    let bad: MapSource = [
        ("HESTIA_API_KEYS", "ci:not-a-digest:read".to_owned()),
        ("HESTIA_DASHBOARD_PASSWORD_HASH", "plain".to_owned()),
    ]
    .into_iter()
    .collect();
    let err = config::load_str("", Path::new("hestia_config.yml"), &bad).expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("HESTIA_API_KEYS") && text.contains("HESTIA_DASHBOARD_PASSWORD_HASH"),
        "{text}"
    );
    assert!(
        !text.contains("not-a-digest"),
        "an entry that may be a key is not echoed: {text}"
    );
}

#[test]
fn given_a_model_listed_by_two_services_then_the_second_is_rejected() {
    let yaml = "services:\n  a:\n    base_url: http://x\n    warmup_ms: 1\n    models: [llama3]\n  b:\n    base_url: http://y\n    warmup_ms: 1\n    models: [mistral, llama3]\n";
    let problem = only_problem(yaml, 9, 23, "services.b.models[1]");
    assert_eq!(
        problem.to_string(),
        "model `llama3` is also served by service `a`; a model names one service"
    );
}
