//! Persistence against a real SQLite file in a tempdir: migrations, WAL, ordered batched writes,
//! activity filters, reconciliation of the config, service state round-trips, and open errors.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use hestia_actors::events::{ActivityEvent, ActivityKind};
use hestia_actors::persistence::entities::{activity, routing_rules, services, start_attempts};
use hestia_actors::persistence::{
    self, ActivityFilter, AttemptOutcome, AttemptRecord, PersistenceHandle, PersistenceOptions,
    ServiceStateRecord,
};
use hestia_actors::spec::{
    CommandSpec, EngineSpec, MachineRole, MachineSpec, QueueSpec, ReadinessSpec, RoutingRuleSpec,
    RuleMatch, RuleTarget, ServiceSpec, StartPolicy, StarterSpec,
};
use hestia_actors::starters::ProcessIdentity;
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, QueryOrder, Statement};
use serde_json::json;
use tempfile::TempDir;

fn db_url(dir: &TempDir) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("hestia.db").display()
    )
}

async fn open_fresh() -> (TempDir, DatabaseConnection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = persistence::open(&db_url(&dir)).await.expect("open");
    (dir, db)
}

async fn spawn(db: &DatabaseConnection) -> PersistenceHandle {
    let (handle, _join) = PersistenceHandle::spawn(db.clone(), PersistenceOptions::default())
        .await
        .expect("spawn persistence actor");
    handle
}

fn service(id: &str, base_url: &str, program: &str) -> ServiceSpec {
    ServiceSpec {
        id: id.to_owned(),
        base_url: base_url.to_owned(),
        start: StarterSpec::Command(CommandSpec {
            program: program.to_owned(),
            args: vec!["--token".to_owned(), "s3cret-arg".to_owned()],
            env: BTreeMap::from([("API_KEY".to_owned(), "s3cret-env".to_owned())]),
            cwd: None,
            stop_grace: Duration::from_secs(5),
        }),
        stop: None,
        readiness: ReadinessSpec::Warmup(Duration::from_millis(10)),
        policy: StartPolicy::default(),
        queue: QueueSpec::default(),
        idle_timeout: Some(Duration::from_secs(300)),
        machines: Vec::new(),
        tags: vec!["llm".to_owned()],
        instances: Vec::new(),
        strategy: None,
        fallback_strategy: None,
        models: Vec::new(),
        model_routing: None,
        upstream_timeout: Duration::from_secs(300),
        waiting_page: true,
        upstream_http2: false,
        max_concurrency: None,
    }
}

fn machine(id: &str, address: &str) -> MachineSpec {
    MachineSpec {
        id: id.to_owned(),
        role: MachineRole::Remote,
        address: address.to_owned(),
        tags: vec!["gpu".to_owned()],
        wake: None,
    }
}

fn rule(name: &str, priority: i64, target: &str) -> RoutingRuleSpec {
    RoutingRuleSpec {
        name: name.to_owned(),
        priority,
        matches: RuleMatch::default(),
        target: RuleTarget::Machine(target.to_owned()),
    }
}

#[tokio::test]
async fn given_a_fresh_file_when_migrating_twice_then_the_second_run_applies_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = db_url(&dir);

    // A bare connection to a fresh file has no schema: migrating applies every migration...
    let bare = sea_orm::Database::connect(url.as_str())
        .await
        .expect("connect");
    assert!(dir.path().join("hestia.db").exists(), "the file is created");
    let applied = persistence::migrate(&bare).await.expect("migrate");
    use hestia_migrations::MigratorTrait;
    let all = hestia_migrations::Migrator::migrations().len();
    assert!(all >= 8, "every migration is listed");
    assert_eq!(applied.len(), all, "{applied:?}");
    assert_eq!(applied[0], "m20261126_000001_create_services");
    // ...and running them again applies nothing.
    assert!(
        persistence::migrate(&bare)
            .await
            .expect("migrate")
            .is_empty()
    );
    drop(bare);
    // `open` on the migrated file applies nothing either.
    let db = persistence::open(&url).await.expect("open");
    assert!(persistence::migrate(&db).await.expect("migrate").is_empty());

    let tables: Vec<String> = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
        ))
        .await
        .expect("list tables")
        .iter()
        .map(|row| row.try_get::<String>("", "name").expect("name"))
        .collect();
    for table in [
        "activity",
        "auth_keys",
        "dashboard_sessions",
        "machines",
        "routing_rules",
        "services",
        "start_attempts",
    ] {
        assert!(
            tables.iter().any(|t| t == table),
            "table {table} exists in {tables:?}"
        );
    }
}

#[tokio::test]
async fn given_a_database_on_a_file_then_wal_is_on() {
    let (_dir, db) = open_fresh().await;
    let mode = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "PRAGMA journal_mode",
        ))
        .await
        .expect("pragma")
        .expect("a row")
        .try_get_by_index::<String>(0)
        .expect("journal_mode");
    assert_eq!(mode.to_lowercase(), "wal");
}

#[tokio::test]
async fn given_a_burst_of_1000_events_when_stopping_then_all_are_written_in_cast_order() {
    let (_dir, db) = open_fresh().await;
    let (handle, join) = PersistenceHandle::spawn(db.clone(), PersistenceOptions::default())
        .await
        .expect("spawn");

    let cast: Vec<ActivityEvent> = (0..1000)
        .map(|i| {
            ActivityEvent::new(ActivityKind::Queued, Some("llm")).detail(json!({ "position": i }))
        })
        .collect();
    for event in &cast {
        handle.record(event.clone());
    }
    handle.stop().await.expect("stop flushes and stops");
    join.await.expect("actor task ends");

    let rows = activity::Entity::find()
        .order_by_asc(activity::Column::Id)
        .all(&db)
        .await
        .expect("read activity");
    assert_eq!(rows.len(), 1000);
    let positions: Vec<i64> = rows
        .iter()
        .map(|row| {
            let detail: serde_json::Value = serde_json::from_str(&row.detail).expect("json");
            detail["position"].as_i64().expect("position")
        })
        .collect();
    assert_eq!(
        positions,
        (0..1000).collect::<Vec<i64>>(),
        "id order is cast order"
    );
    assert!(
        rows.windows(2).all(|w| w[0].at <= w[1].at),
        "at ascends with cast order"
    );
    assert_eq!(rows[0].id, cast[0].id.to_string());
    assert_eq!(handle.failed_writes(), 0);
}

#[tokio::test]
async fn given_a_cast_event_and_no_flush_then_the_flush_timer_writes_it() {
    let (_dir, db) = open_fresh().await;
    let opts = PersistenceOptions {
        flush_interval: Duration::from_millis(20),
        max_batch: 256,
    };
    let (handle, _join) = PersistenceHandle::spawn(db.clone(), opts)
        .await
        .expect("spawn");
    let event = ActivityEvent::new(ActivityKind::StopRequested, Some("llm"));
    handle.record(event.clone());

    // Nobody flushes: the timer must. Poll the table (generous deadline, not a timing assertion).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = activity::Entity::find_by_id(event.id.to_string())
            .one(&db)
            .await;
        if found.expect("read").is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the event was never written"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.stop().await.expect("stop");
}

#[tokio::test]
async fn given_a_write_that_fails_then_it_is_counted_and_later_writes_still_land() {
    let (_dir, db) = open_fresh().await;
    let handle = spawn(&db).await;
    let first = ActivityEvent::new(ActivityKind::Queued, Some("llm"));
    let after = ActivityEvent::new(ActivityKind::Dequeued, Some("llm"));

    // The same event twice in one batch: the second insert violates the primary key.
    handle.record(first.clone());
    handle.record(first.clone());
    handle.record(after.clone());
    let err = handle.flush().await.expect_err("one write failed");
    assert!(
        err.to_string().contains("1 database write(s) failed"),
        "{err}"
    );
    assert_eq!(handle.failed_writes(), 1);

    // Its neighbours were written and the actor keeps working.
    let kinds: Vec<_> = handle
        .activity(ActivityFilter::default())
        .await
        .expect("activity")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, vec![ActivityKind::Dequeued, ActivityKind::Queued]);
    handle.record(ActivityEvent::new(ActivityKind::Stopped, Some("llm")));
    handle.flush().await.expect("later flush is clean");
    handle.stop().await.expect("stop");
}

#[tokio::test]
async fn given_recorded_events_then_activity_filters_by_service_kind_since_and_limit() {
    let (_dir, db) = open_fresh().await;
    let handle = spawn(&db).await;
    let t0 = Utc::now() - TimeDelta::minutes(10);
    let at = |minutes: i64| t0 + TimeDelta::minutes(minutes);
    let event = |kind, service: &str, minute| {
        let mut e = ActivityEvent::new(kind, Some(service)).request(Some("req-1"));
        e.at = at(minute);
        e
    };
    handle.record(event(ActivityKind::Queued, "llm", 0));
    handle.record(event(ActivityKind::StartRequested, "llm", 1));
    handle.record(event(ActivityKind::Queued, "sd", 2));
    handle.record(event(ActivityKind::Started, "llm", 3).detail(json!({ "attempt": 1 })));
    handle.record(event(ActivityKind::Queued, "llm", 4));

    // Newest first, everything.
    let all = handle
        .activity(ActivityFilter::default())
        .await
        .expect("activity");
    let minutes: Vec<_> = all.iter().map(|e| (e.at - t0).num_minutes()).collect();
    assert_eq!(minutes, vec![4, 3, 2, 1, 0]);
    assert_eq!(all[1].detail, json!({ "attempt": 1 }));
    assert_eq!(all[1].request_id.as_deref(), Some("req-1"));

    let by_service = ActivityFilter {
        service: Some("sd".into()),
        ..ActivityFilter::default()
    };
    let sd = handle.activity(by_service).await.expect("by service");
    assert_eq!(sd.len(), 1);
    assert_eq!(sd[0].service_id.as_deref(), Some("sd"));

    let by_kind = ActivityFilter {
        kind: Some(ActivityKind::Queued),
        ..ActivityFilter::default()
    };
    let queued = handle.activity(by_kind).await.expect("by kind");
    assert_eq!(queued.len(), 3);
    assert!(queued.iter().all(|e| e.kind == ActivityKind::Queued));

    let since = ActivityFilter {
        since: Some(at(2)),
        ..ActivityFilter::default()
    };
    let recent = handle.activity(since).await.expect("since");
    assert_eq!(
        recent
            .iter()
            .map(|e| (e.at - t0).num_minutes())
            .collect::<Vec<_>>(),
        vec![4, 3, 2]
    );

    let combined = ActivityFilter {
        service: Some("llm".into()),
        kind: Some(ActivityKind::Queued),
        since: None,
        limit: 1,
    };
    let newest_llm_queued = handle.activity(combined).await.expect("combined");
    assert_eq!(newest_llm_queued.len(), 1);
    assert_eq!((newest_llm_queued[0].at - t0).num_minutes(), 4);

    assert_eq!(
        ActivityFilter {
            limit: 0,
            ..ActivityFilter::default()
        }
        .effective_limit(),
        100
    );
    assert_eq!(
        ActivityFilter {
            limit: 5000,
            ..ActivityFilter::default()
        }
        .effective_limit(),
        1000
    );
    handle.stop().await.expect("stop");
}

#[tokio::test]
async fn given_a_config_when_reconciling_then_rows_are_added_updated_marked_removed_and_restored() {
    let (_dir, db) = open_fresh().await;
    let handle = spawn(&db).await;

    // Given a first config: two services, one machine, one rule.
    let first = EngineSpec {
        services: vec![
            service("llm", "http://{address}:8080", "llama-server"),
            service("sd", "http://127.0.0.1:7860", "sd-webui"),
        ],
        machines: vec![machine("gpu", "10.0.0.2")],
        routing_rules: vec![rule("gpu-first", 10, "gpu")],
        semaphore: None,
        strategies_dir: None,
        ..EngineSpec::default()
    };
    let report = handle.reconcile(first.clone()).await.expect("reconcile");
    assert_eq!(
        report.added,
        vec![
            "service:llm",
            "service:sd",
            "machine:gpu",
            "routing_rule:gpu-first"
        ]
    );
    assert!(report.updated.is_empty() && report.removed.is_empty() && report.restored.is_empty());

    // The same config again changes nothing.
    assert!(
        handle
            .reconcile(first.clone())
            .await
            .expect("reconcile again")
            .is_empty()
    );

    // When `llm` is running and `sd` leaves the config while `llm` changes its program...
    handle.save_service_state(ServiceStateRecord {
        service_id: "llm".into(),
        state: "ready".into(),
        machine_id: Some("gpu".into()),
        base_url: None,
        process: Some(ProcessIdentity {
            pid: 4242,
            start_time: 1234,
            boot_id: "b0".into(),
            program: "/usr/bin/llama-server".into(),
        }),
        last_used_at: Some(Utc::now()),
        last_error: None,
        last_started_at: Some(Utc::now()),
    });
    let second = EngineSpec {
        services: vec![service("llm", "http://{address}:8080", "llama-server-v2")],
        machines: vec![machine("gpu", "10.0.0.3")],
        routing_rules: Vec::new(),
        semaphore: None,
        strategies_dir: None,
        ..EngineSpec::default()
    };
    let report = handle
        .reconcile(second.clone())
        .await
        .expect("reconcile second");
    assert_eq!(report.updated, vec!["service:llm", "machine:gpu"]);
    assert_eq!(report.removed, vec!["service:sd", "routing_rule:gpu-first"]);

    // ...then `sd` and the rule are kept, marked removed; `llm` keeps its runtime state.
    let sd = services::Entity::find_by_id("sd")
        .one(&db)
        .await
        .expect("read")
        .expect("kept");
    assert!(sd.removed_at.is_some());
    let gone_rule = routing_rules::Entity::find_by_id("gpu-first")
        .one(&db)
        .await
        .expect("read")
        .expect("kept");
    assert!(gone_rule.removed_at.is_some());
    let llm = services::Entity::find_by_id("llm")
        .one(&db)
        .await
        .expect("read")
        .expect("row");
    assert_eq!((llm.state.as_str(), llm.pid), ("ready", Some(4242)));
    assert!(llm.spec.contains("llama-server-v2"));
    assert!(
        !llm.spec.contains("s3cret"),
        "no secrets in the summary: {}",
        llm.spec
    );
    let states = handle.service_states().await.expect("states");
    assert_eq!(
        states
            .iter()
            .map(|s| s.service_id.as_str())
            .collect::<Vec<_>>(),
        vec!["llm"]
    );

    // When `sd` comes back, it is restored, not added.
    let report = handle
        .reconcile(first.clone())
        .await
        .expect("reconcile third");
    assert_eq!(
        report.restored,
        vec!["service:sd", "routing_rule:gpu-first"]
    );
    assert!(report.added.is_empty());
    let sd = services::Entity::find_by_id("sd")
        .one(&db)
        .await
        .expect("read")
        .expect("row");
    assert!(sd.removed_at.is_none());
    handle.stop().await.expect("stop");
}

#[tokio::test]
async fn given_saved_service_states_and_attempts_when_reopening_then_they_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = db_url(&dir);
    let used = Utc::now() - TimeDelta::seconds(30);
    let saved = ServiceStateRecord {
        service_id: "llm".into(),
        state: "failed".into(),
        machine_id: Some("gpu".into()),
        base_url: Some("http://10.0.0.2:8080".into()),
        process: Some(ProcessIdentity {
            pid: 31337,
            start_time: 987_654,
            boot_id: "b0".into(),
            program: "/usr/bin/llama-server".into(),
        }),
        last_used_at: Some(used),
        last_error: Some("readiness probe timed out after 120 s".into()),
        last_started_at: Some(used - TimeDelta::seconds(5)),
    };
    {
        let db = persistence::open(&url).await.expect("open");
        let handle = spawn(&db).await;
        handle
            .reconcile(EngineSpec {
                services: vec![service("llm", "http://{address}:8080", "llama-server")],
                ..EngineSpec::default()
            })
            .await
            .expect("reconcile");
        handle.save_service_state(ServiceStateRecord {
            state: "starting".into(),
            ..saved.clone()
        });
        handle.save_service_state(saved.clone());
        handle.record_attempt(AttemptRecord {
            service_id: "llm".into(),
            attempt: 1,
            machine_id: Some("gpu".into()),
            target_url: "http://10.0.0.2:8080".into(),
            starter: "command".into(),
            started_at: used,
            duration_ms: 120_000,
            outcome: AttemptOutcome::Timeout,
            error: Some("readiness probe timed out".into()),
        });
        handle.stop().await.expect("stop");
    }

    // After a restart, the last saved state is what is read back.
    let db = persistence::open(&url).await.expect("reopen");
    let handle = spawn(&db).await;
    assert_eq!(handle.service_states().await.expect("states"), vec![saved]);
    let attempts = start_attempts::Entity::find()
        .all(&db)
        .await
        .expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (attempts[0].attempt, attempts[0].outcome.as_str()),
        (1, "timeout")
    );
    handle.stop().await.expect("stop");
}

#[tokio::test]
async fn given_an_unwritable_path_when_opening_then_the_error_names_the_path() {
    let url = "sqlite:///nonexistent-hestia-dir/x.db?mode=rwc";
    let err = persistence::open(url).await.expect_err("cannot open");
    let message = err.to_string();
    assert!(
        message.contains("/nonexistent-hestia-dir/x.db"),
        "{message}"
    );
}
