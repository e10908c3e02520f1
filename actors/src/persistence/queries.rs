//! Read queries: the activity timeline (newest first, filtered) and the runtime state of
//! configured services (what a restart recovers from). Reads never go through the actor's mailbox.

use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::PersistenceError;
use super::entities::{activity, machines, services, start_attempts};
use super::records::{ActivityFilter, AttemptOutcome, AttemptRecord, ServiceStateRecord};
use crate::events::{ActivityEvent, ActivityKind};
use crate::starters::ProcessIdentity;

pub(super) async fn activity(
    db: &DatabaseConnection,
    filter: &ActivityFilter,
) -> Result<Vec<ActivityEvent>, PersistenceError> {
    let mut query = activity::Entity::find();
    if let Some(service) = &filter.service {
        query = query.filter(activity::Column::ServiceId.eq(service.as_str()));
    }
    if let Some(kind) = filter.kind {
        query = query.filter(activity::Column::Kind.eq(kind.as_str()));
    }
    if let Some(since) = filter.since {
        query = query.filter(activity::Column::At.gte(since));
    }
    let rows = query
        .order_by_desc(activity::Column::At)
        .order_by_desc(activity::Column::Id)
        .limit(filter.effective_limit())
        .all(db)
        .await
        .map_err(PersistenceError::query("activity read"))?;
    rows.into_iter().map(activity_event).collect()
}

pub(super) async fn activity_after(
    db: &DatabaseConnection,
    after: Uuid,
    limit: u64,
) -> Result<Vec<ActivityEvent>, PersistenceError> {
    let rows = activity::Entity::find()
        .filter(activity::Column::Id.gt(after.hyphenated().to_string()))
        .order_by_asc(activity::Column::Id)
        .limit(limit)
        .all(db)
        .await
        .map_err(PersistenceError::query("activity read"))?;
    rows.into_iter().map(activity_event).collect()
}

fn activity_event(row: activity::Model) -> Result<ActivityEvent, PersistenceError> {
    let corrupt = |reason: String| PersistenceError::Corrupt {
        table: "activity",
        id: row.id.clone(),
        reason,
    };
    let id = Uuid::parse_str(&row.id).map_err(|e| corrupt(format!("id is not a UUID: {e}")))?;
    let kind = ActivityKind::parse(&row.kind)
        .ok_or_else(|| corrupt(format!("unknown kind `{}`", row.kind)))?;
    let detail = serde_json::from_str(&row.detail)
        .map_err(|e| corrupt(format!("detail is not JSON: {e}")))?;
    Ok(ActivityEvent {
        id,
        at: row.at,
        kind,
        service_id: row.service_id,
        machine_id: row.machine_id,
        request_id: row.request_id,
        detail,
    })
}

pub(super) async fn service_states(
    db: &DatabaseConnection,
) -> Result<Vec<ServiceStateRecord>, PersistenceError> {
    let rows = services::Entity::find()
        .filter(services::Column::RemovedAt.is_null())
        .order_by_asc(services::Column::Id)
        .all(db)
        .await
        .map_err(PersistenceError::query("service state read"))?;
    rows.into_iter()
        .map(|row| {
            let corrupt = |reason: String| PersistenceError::Corrupt {
                table: "services",
                id: row.id.clone(),
                reason,
            };
            let pid = row
                .pid
                .map(u32::try_from)
                .transpose()
                .map_err(|e| corrupt(format!("pid out of range: {e}")))?;
            // A pid without its identity (written before identities were recorded) is nobody's.
            let process = match (pid, row.pid_start_time, row.pid_boot_id, row.pid_program) {
                (Some(pid), Some(start_time), Some(boot_id), Some(program)) => {
                    Some(ProcessIdentity {
                        pid,
                        start_time: u64::try_from(start_time)
                            .map_err(|e| corrupt(format!("pid_start_time out of range: {e}")))?,
                        boot_id,
                        program,
                    })
                }
                _ => None,
            };
            Ok(ServiceStateRecord {
                service_id: row.id,
                state: row.state,
                machine_id: row.machine_id,
                base_url: Some(row.base_url),
                process,
                last_used_at: row.last_used_at,
                last_error: row.last_error,
                last_started_at: row.last_started_at,
            })
        })
        .collect()
}

/// The configured (non-removed) machines with what Hestia last observed of them, by id.
pub(super) async fn machines(
    db: &DatabaseConnection,
) -> Result<Vec<machines::Model>, PersistenceError> {
    machines::Entity::find()
        .filter(machines::Column::RemovedAt.is_null())
        .order_by_asc(machines::Column::Id)
        .all(db)
        .await
        .map_err(PersistenceError::query("machine read"))
}

/// The last `limit` start attempts of `service`, newest first.
pub(super) async fn start_attempts(
    db: &DatabaseConnection,
    service: &str,
    limit: u64,
) -> Result<Vec<AttemptRecord>, PersistenceError> {
    let rows = start_attempts::Entity::find()
        .filter(start_attempts::Column::ServiceId.eq(service))
        .order_by_desc(start_attempts::Column::StartedAt)
        .order_by_desc(start_attempts::Column::Id)
        .limit(limit)
        .all(db)
        .await
        .map_err(PersistenceError::query("start attempt read"))?;
    rows.into_iter()
        .map(|row| {
            let outcome = match row.outcome.as_str() {
                "success" => AttemptOutcome::Success,
                "failed" => AttemptOutcome::Failed,
                "timeout" => AttemptOutcome::Timeout,
                other => {
                    return Err(PersistenceError::Corrupt {
                        table: "start_attempts",
                        id: row.id.clone(),
                        reason: format!("unknown outcome `{other}`"),
                    });
                }
            };
            Ok(AttemptRecord {
                service_id: row.service_id,
                attempt: u32::try_from(row.attempt).unwrap_or(0),
                machine_id: row.machine_id,
                target_url: row.target_url,
                starter: row.starter,
                started_at: row.started_at,
                duration_ms: u64::try_from(row.duration_ms).unwrap_or(0),
                outcome,
                error: row.error,
            })
        })
        .collect()
}

/// The file of the main database, when it has one (not in memory).
pub(super) async fn database_file(
    db: &DatabaseConnection,
) -> Result<Option<std::path::PathBuf>, sea_orm::DbErr> {
    use sea_orm::{ConnectionTrait, Statement};
    let list = Statement::from_string(db.get_database_backend(), "PRAGMA database_list");
    let rows = db.query_all_raw(list).await?;
    Ok(rows
        .iter()
        .find(|row| row.try_get::<String>("", "name").as_deref() == Ok("main"))
        .and_then(|row| row.try_get::<String>("", "file").ok())
        .filter(|file| !file.is_empty())
        .map(std::path::PathBuf::from))
}
