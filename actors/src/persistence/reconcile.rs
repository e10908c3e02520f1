//! Reconciliation (FR-008): make the `services`, `machines` and `routing_rules` tables match the
//! config in one transaction. Configured rows are added or updated, rows no longer configured get
//! `removed_at` (never deleted: history refers to them), and rows that come back are restored.
//! Runtime columns (state, pid, last_used_at, awake...) are never touched here.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait,
    IntoActiveModel, QueryFilter,
};
use serde_json::{Value, json};

use super::PersistenceError;
use super::entities::{machines, routing_rules, services};
use super::records::ReconcileReport;
use super::writes::in_transaction;
use crate::redact::redact_url;
use crate::spec::{
    EngineSpec, MachineSpec, ReadinessSpec, RoutingRuleSpec, RuleTarget, ServiceSpec, StarterSpec,
    WakeSpec,
};

pub(super) async fn reconcile(
    db: &DatabaseConnection,
    spec: &EngineSpec,
) -> Result<ReconcileReport, PersistenceError> {
    let now = Utc::now();
    let mut report = ReconcileReport::default();
    let failed = |source| PersistenceError::Query {
        operation: "reconcile transaction",
        source,
    };
    in_transaction(db, failed, async |txn| {
        reconcile_services(txn, &spec.services, now, &mut report).await?;
        reconcile_machines(txn, &spec.machines, now, &mut report).await?;
        reconcile_rules(txn, &spec.routing_rules, now, &mut report).await
    })
    .await?;
    Ok(report)
}

/// What happened to one configured row.
enum Change {
    Added,
    Updated,
    Restored,
    Unchanged,
}

impl Change {
    fn of(removed_at: Option<DateTime<Utc>>, config_differs: bool) -> Change {
        match (removed_at, config_differs) {
            (Some(_), _) => Change::Restored,
            (None, true) => Change::Updated,
            (None, false) => Change::Unchanged,
        }
    }

    fn record(self, key: String, report: &mut ReconcileReport) {
        match self {
            Change::Added => report.added.push(key),
            Change::Updated => report.updated.push(key),
            Change::Restored => report.restored.push(key),
            Change::Unchanged => {}
        }
    }
}

/// True when the stored JSON text differs from `desired` (compared as values, not as text).
fn json_differs(stored: &str, desired: &Value) -> bool {
    serde_json::from_str::<Value>(stored).map_or(true, |stored| &stored != desired)
}

async fn reconcile_services(
    txn: &DatabaseConnection,
    configured: &[ServiceSpec],
    now: DateTime<Utc>,
    report: &mut ReconcileReport,
) -> Result<(), PersistenceError> {
    let mut existing: HashMap<String, services::Model> = services::Entity::find()
        .all(txn)
        .await
        .map_err(PersistenceError::query("reconcile: read services"))?
        .into_iter()
        .map(|row| (row.id.clone(), row))
        .collect();
    for service in configured {
        let base_url = redact_url(&service.base_url);
        let starter = service.start.kind().to_owned();
        let tags = json!(service.tags);
        let summary = service_summary(service);
        let change = match existing.remove(&service.id) {
            None => {
                services::ActiveModel {
                    id: Set(service.id.clone()),
                    base_url: Set(base_url),
                    starter: Set(starter),
                    tags: Set(tags.to_string()),
                    spec: Set(summary.to_string()),
                    state: Set("cold".to_owned()),
                    machine_id: Set(None),
                    pid: Set(None),
                    pid_start_time: Set(None),
                    pid_boot_id: Set(None),
                    pid_program: Set(None),
                    last_used_at: Set(None),
                    last_error: Set(None),
                    last_started_at: Set(None),
                    created_at: Set(now),
                    updated_at: Set(now),
                    removed_at: Set(None),
                }
                .insert(txn)
                .await
                .map_err(PersistenceError::query("reconcile: insert service"))?;
                Change::Added
            }
            Some(row) => {
                let differs = row.starter != starter
                    || json_differs(&row.tags, &tags)
                    || json_differs(&row.spec, &summary);
                let change = Change::of(row.removed_at, differs);
                if !matches!(change, Change::Unchanged) {
                    let mut update = row.into_active_model();
                    update.base_url = Set(base_url);
                    update.starter = Set(starter);
                    update.tags = Set(tags.to_string());
                    update.spec = Set(summary.to_string());
                    update.updated_at = Set(now);
                    update.removed_at = Set(None);
                    update
                        .update(txn)
                        .await
                        .map_err(PersistenceError::query("reconcile: update service"))?;
                }
                change
            }
        };
        change.record(format!("service:{}", service.id), report);
    }
    let gone = existing
        .into_values()
        .filter(|row| row.removed_at.is_none())
        .map(|row| row.id)
        .collect();
    let columns = (
        services::Column::Id,
        services::Column::RemovedAt,
        services::Column::UpdatedAt,
    );
    mark_removed::<services::Entity>(txn, gone, columns, now, "service", report).await
}

async fn reconcile_machines(
    txn: &DatabaseConnection,
    configured: &[MachineSpec],
    now: DateTime<Utc>,
    report: &mut ReconcileReport,
) -> Result<(), PersistenceError> {
    let mut existing: HashMap<String, machines::Model> = machines::Entity::find()
        .all(txn)
        .await
        .map_err(PersistenceError::query("reconcile: read machines"))?
        .into_iter()
        .map(|row| (row.id.clone(), row))
        .collect();
    for machine in configured {
        let role = machine.role.as_str().to_owned();
        let tags = json!(machine.tags);
        let wake = machine.wake.as_ref().map(wake_kind).map(str::to_owned);
        let change = match existing.remove(&machine.id) {
            None => {
                machines::ActiveModel {
                    id: Set(machine.id.clone()),
                    role: Set(role),
                    address: Set(machine.address.clone()),
                    tags: Set(tags.to_string()),
                    wake: Set(wake),
                    awake: Set(None),
                    last_seen_at: Set(None),
                    created_at: Set(now),
                    updated_at: Set(now),
                    removed_at: Set(None),
                }
                .insert(txn)
                .await
                .map_err(PersistenceError::query("reconcile: insert machine"))?;
                Change::Added
            }
            Some(row) => {
                let differs = row.role != role
                    || row.address != machine.address
                    || row.wake != wake
                    || json_differs(&row.tags, &tags);
                let change = Change::of(row.removed_at, differs);
                if !matches!(change, Change::Unchanged) {
                    let mut update = row.into_active_model();
                    update.role = Set(role);
                    update.address = Set(machine.address.clone());
                    update.tags = Set(tags.to_string());
                    update.wake = Set(wake);
                    update.updated_at = Set(now);
                    update.removed_at = Set(None);
                    update
                        .update(txn)
                        .await
                        .map_err(PersistenceError::query("reconcile: update machine"))?;
                }
                change
            }
        };
        change.record(format!("machine:{}", machine.id), report);
    }
    let gone = existing
        .into_values()
        .filter(|row| row.removed_at.is_none())
        .map(|row| row.id)
        .collect();
    let columns = (
        machines::Column::Id,
        machines::Column::RemovedAt,
        machines::Column::UpdatedAt,
    );
    mark_removed::<machines::Entity>(txn, gone, columns, now, "machine", report).await
}

async fn reconcile_rules(
    txn: &DatabaseConnection,
    configured: &[RoutingRuleSpec],
    now: DateTime<Utc>,
    report: &mut ReconcileReport,
) -> Result<(), PersistenceError> {
    let mut existing: HashMap<String, routing_rules::Model> = routing_rules::Entity::find()
        .all(txn)
        .await
        .map_err(PersistenceError::query("reconcile: read routing rules"))?
        .into_iter()
        .map(|row| (row.name.clone(), row))
        .collect();
    for rule in configured {
        let matches = json!({ "services": rule.matches.services, "tags": rule.matches.tags });
        let target = rule_target(&rule.target);
        let change = match existing.remove(&rule.name) {
            None => {
                routing_rules::ActiveModel {
                    name: Set(rule.name.clone()),
                    priority: Set(rule.priority),
                    match_json: Set(matches.to_string()),
                    target_json: Set(target.to_string()),
                    created_at: Set(now),
                    updated_at: Set(now),
                    removed_at: Set(None),
                }
                .insert(txn)
                .await
                .map_err(PersistenceError::query("reconcile: insert routing rule"))?;
                Change::Added
            }
            Some(row) => {
                let differs = row.priority != rule.priority
                    || json_differs(&row.match_json, &matches)
                    || json_differs(&row.target_json, &target);
                let change = Change::of(row.removed_at, differs);
                if !matches!(change, Change::Unchanged) {
                    let mut update = row.into_active_model();
                    update.priority = Set(rule.priority);
                    update.match_json = Set(matches.to_string());
                    update.target_json = Set(target.to_string());
                    update.updated_at = Set(now);
                    update.removed_at = Set(None);
                    update
                        .update(txn)
                        .await
                        .map_err(PersistenceError::query("reconcile: update routing rule"))?;
                }
                change
            }
        };
        change.record(format!("routing_rule:{}", rule.name), report);
    }
    let gone = existing
        .into_values()
        .filter(|row| row.removed_at.is_none())
        .map(|row| row.name)
        .collect();
    let columns = (
        routing_rules::Column::Name,
        routing_rules::Column::RemovedAt,
        routing_rules::Column::UpdatedAt,
    );
    mark_removed::<routing_rules::Entity>(txn, gone, columns, now, "routing_rule", report).await
}

/// Marks the rows of `E` whose key is in `gone` as removed (kept, never deleted), in one
/// statement, and lists them in the report as `<kind>:<key>`.
async fn mark_removed<E: EntityTrait>(
    txn: &DatabaseConnection,
    gone: Vec<String>,
    (key, removed_at, updated_at): (E::Column, E::Column, E::Column),
    now: DateTime<Utc>,
    kind: &str,
    report: &mut ReconcileReport,
) -> Result<(), PersistenceError> {
    if gone.is_empty() {
        return Ok(());
    }
    E::update_many()
        .col_expr(removed_at, Expr::value(Some(now)))
        .col_expr(updated_at, Expr::value(now))
        .filter(key.is_in(gone.iter().map(String::as_str)))
        .exec(txn)
        .await
        .map_err(PersistenceError::query("reconcile: mark removed"))?;
    report
        .removed
        .extend(gone.into_iter().map(|key| format!("{kind}:{key}")));
    Ok(())
}

fn wake_kind(wake: &WakeSpec) -> &'static str {
    match wake {
        WakeSpec::Wol { .. } => "wol",
        WakeSpec::Semaphore(_) => "semaphore",
    }
}

fn rule_target(target: &RuleTarget) -> Value {
    match target {
        RuleTarget::Machine(id) => json!({ "machine": id }),
        RuleTarget::Role(role) => json!({ "role": role.as_str() }),
        RuleTarget::Tags(tags) => json!({ "tags": tags }),
    }
}

/// A non-secret summary of how a service is configured: kinds, URLs (masked), names of
/// environment variables and headers but never their values, commands without arguments.
fn service_summary(service: &ServiceSpec) -> Value {
    json!({
        "base_url": redact_url(&service.base_url),
        "start": starter_summary(&service.start),
        "stop": service.stop.as_ref().map(starter_summary),
        "readiness": readiness_summary(&service.readiness),
        "machines": service.machines,
        "idle_timeout_ms": service.idle_timeout.map(|d| millis(d.as_millis())),
        "queue": {
            "size": service.queue.size,
            "timeout_ms": millis(service.queue.timeout.as_millis()),
        },
        "policy": {
            "retry_count": service.policy.retry_count,
            "retry_delay_ms": millis(service.policy.retry_delay.as_millis()),
            "backoff_factor": service.policy.backoff_factor,
            "max_retry_delay_ms": millis(service.policy.max_retry_delay.as_millis()),
            "start_timeout_ms": millis(service.policy.start_timeout.as_millis()),
            "fallback_url": service.policy.fallback_url.as_deref().map(redact_url),
        },
        "instances": service.instances.iter().map(|i| redact_url(&i.url)).collect::<Vec<_>>(),
        "strategy": service.strategy,
        "model_routing": service.model_routing.as_ref().map(|r| json!({
            "model_key": r.model_key,
            "models": r.by_model.keys().collect::<Vec<_>>(),
        })),
    })
}

fn starter_summary(starter: &StarterSpec) -> Value {
    match starter {
        StarterSpec::None => json!({ "kind": "none" }),
        StarterSpec::Command(cmd) => json!({
            "kind": "command",
            "program": cmd.program,
            "env": cmd.env.keys().collect::<Vec<_>>(),
            "cwd": cmd.cwd.as_ref().map(|p| p.display().to_string()),
            "stop_grace_ms": millis(cmd.stop_grace.as_millis()),
        }),
        StarterSpec::Http(hook) => json!({
            "kind": "http",
            "method": hook.method,
            "url": redact_url(&hook.url),
            "headers": hook.headers.keys().collect::<Vec<_>>(),
        }),
        StarterSpec::Semaphore(task) => json!({
            "kind": "semaphore",
            "template_id": task.template_id,
            "environment": task.environment.keys().collect::<Vec<_>>(),
        }),
    }
}

fn readiness_summary(readiness: &ReadinessSpec) -> Value {
    match readiness {
        ReadinessSpec::Http(probe) => json!({
            "kind": "http",
            "url": redact_url(&probe.url),
            "expect_status": probe.expect_status,
            "interval_ms": millis(probe.interval.as_millis()),
        }),
        ReadinessSpec::Tcp(probe) => json!({
            "kind": "tcp",
            "address": probe.address,
            "interval_ms": millis(probe.interval.as_millis()),
        }),
        ReadinessSpec::Warmup(delay) => json!({
            "kind": "warmup",
            "warmup_ms": millis(delay.as_millis()),
        }),
    }
}

/// Milliseconds as a JSON-friendly integer (saturating; no config holds 584 million years).
fn millis(ms: u128) -> u64 {
    u64::try_from(ms).unwrap_or(u64::MAX)
}
