//! The writes the persistence actor batches, and how a batch reaches SQLite: one transaction in
//! cast order; if that fails, item by item so one bad write does not lose its neighbours.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait};
use uuid::Uuid;

use sea_orm::{ColumnTrait, QueryFilter, sea_query::Expr};

use super::entities::{activity, auth_keys, machines, services, start_attempts};
use super::records::{AttemptRecord, MachineStateRecord, ServiceStateRecord};
use crate::events::ActivityEvent;
use crate::redact::scrubbed;

/// `starter` of a `services` row created by a state save before any reconcile saw the service.
const UNKNOWN_STARTER: &str = "unknown";

/// One cast write, kept in the order it was cast.
#[derive(Debug)]
pub(crate) enum Write {
    Activity(ActivityEvent),
    Attempt(AttemptRecord),
    State(ServiceStateRecord),
    Machine(MachineStateRecord),
    /// `auth_keys.last_used_at` of the key with this prefix.
    KeyUsed {
        prefix: String,
        at: DateTime<Utc>,
    },
}

impl Write {
    /// What part of the database this write goes to (for the write health).
    pub(super) fn table(&self) -> &'static str {
        match self {
            Write::Activity(_) => "activity",
            Write::Attempt(_) => "start_attempts",
            Write::State(_) => "services",
            Write::Machine(_) => "machines",
            Write::KeyUsed { .. } => "auth_keys",
        }
    }

    fn describe(&self) -> String {
        match self {
            Write::Activity(e) => format!("activity {} ({})", e.id, e.kind),
            Write::Attempt(a) => format!("start attempt {} of {}", a.attempt, a.service_id),
            Write::State(s) => format!("state of service {}", s.service_id),
            Write::Machine(m) => format!("state of machine {}", m.machine_id),
            Write::KeyUsed { prefix, .. } => format!("last use of key {prefix}"),
        }
    }
}

/// Writes `batch` and returns how many of its items could not be written (each is logged).
/// `health` learns, per table, whether its latest write went through.
pub(super) async fn write_batch(
    db: &DatabaseConnection,
    batch: &[Write],
    health: &WriteHealth,
) -> u64 {
    let err = match write_in_transaction(db, batch).await {
        Ok(()) => {
            for write in batch {
                health.succeeded(write.table());
            }
            return 0;
        }
        Err(err) => err,
    };
    tracing::warn!(error = %err, items = batch.len(), "batched write failed; retrying item by item");
    let mut failed = 0;
    for write in batch {
        match write_run(db, std::slice::from_ref(write)).await {
            Ok(()) => health.succeeded(write.table()),
            Err(err) => {
                tracing::error!(error = %err, write = %write.describe(), "database write failed; dropped");
                health.failed(write.table(), &err);
                failed += 1;
            }
        }
    }
    failed
}

/// Which tables cannot be written now, and why: the latest write to each decides. Hestia is
/// not ready (`/readyz`) while any is listed.
#[derive(Debug, Clone, Default)]
pub struct WriteHealth {
    failing: Arc<Mutex<BTreeMap<&'static str, String>>>,
}

impl WriteHealth {
    fn succeeded(&self, table: &'static str) {
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        if !failing.is_empty() {
            failing.remove(table);
        }
    }

    fn failed(&self, table: &'static str, error: &DbErr) {
        self.failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(table, error.to_string());
    }

    /// `None` while every table's latest write went through; else each failing table and why.
    pub fn problem(&self) -> Option<String> {
        let failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        (!failing.is_empty()).then(|| {
            failing
                .iter()
                .map(|(table, error)| format!("{table}: {error}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

async fn write_in_transaction(db: &DatabaseConnection, batch: &[Write]) -> Result<(), DbErr> {
    in_transaction(
        db,
        |err| err,
        async |db| {
            let mut rest = batch;
            while !rest.is_empty() {
                let run = same_kind_run(rest);
                write_run(db, &rest[..run]).await?;
                rest = &rest[run..];
            }
            Ok(())
        },
    )
    .await
}

/// Runs `work` in one transaction on the actor's single connection
/// ([`super::writer_connection`]), opened and ended with plain SQL; `wrap` turns a failed
/// `BEGIN`/`COMMIT` into the caller's error. On any failure it rolls back — which fails,
/// harmlessly, when SQLite already did (a full disk) — so no transaction is ever left open to
/// lock out the writes after it.
pub(super) async fn in_transaction<T, E>(
    db: &DatabaseConnection,
    wrap: impl Fn(DbErr) -> E,
    work: impl AsyncFnOnce(&DatabaseConnection) -> Result<T, E>,
) -> Result<T, E> {
    let result = match db.execute_unprepared("BEGIN IMMEDIATE").await {
        Ok(_) => match work(db).await {
            Ok(value) => db
                .execute_unprepared("COMMIT")
                .await
                .map(|_| value)
                .map_err(&wrap),
            Err(err) => Err(err),
        },
        Err(err) => Err(wrap(err)),
    };
    if result.is_err() {
        let _ = db.execute_unprepared("ROLLBACK").await;
    }
    result
}

/// Length of the leading run of writes of one kind (consecutive inserts become one statement).
fn same_kind_run(writes: &[Write]) -> usize {
    let kind = |w: &Write| std::mem::discriminant(w);
    match writes.first() {
        Some(first) => writes.iter().take_while(|w| kind(w) == kind(first)).count(),
        None => 0,
    }
}

/// Writes a run of same-kind writes (state saves one by one, inserts as one statement).
async fn write_run<C: ConnectionTrait>(conn: &C, run: &[Write]) -> Result<(), DbErr> {
    match run.first() {
        None => Ok(()),
        Some(Write::Activity(_)) => {
            let rows = run.iter().filter_map(|w| match w {
                Write::Activity(event) => Some(activity_row(event)),
                _ => None,
            });
            activity::Entity::insert_many(rows)
                .exec_without_returning(conn)
                .await
                .map(drop)
        }
        Some(Write::Attempt(_)) => {
            let rows = run.iter().filter_map(|w| match w {
                Write::Attempt(attempt) => Some(attempt_row(attempt)),
                _ => None,
            });
            start_attempts::Entity::insert_many(rows)
                .exec_without_returning(conn)
                .await
                .map(drop)
        }
        Some(Write::State(_)) => {
            for write in run {
                if let Write::State(state) = write {
                    save_state(conn, state).await?;
                }
            }
            Ok(())
        }
        Some(Write::KeyUsed { .. }) => {
            for write in run {
                if let Write::KeyUsed { prefix, at } = write {
                    auth_keys::Entity::update_many()
                        .col_expr(auth_keys::Column::LastUsedAt, Expr::value(*at))
                        .filter(auth_keys::Column::Prefix.eq(prefix.as_str()))
                        .exec(conn)
                        .await?;
                }
            }
            Ok(())
        }
        Some(Write::Machine(_)) => {
            for write in run {
                if let Write::Machine(state) = write {
                    save_machine_state(conn, state).await?;
                }
            }
            Ok(())
        }
    }
}

/// Updates the observed columns of a configured machine (no row is created for unknown ids).
async fn save_machine_state<C: ConnectionTrait>(
    conn: &C,
    state: &MachineStateRecord,
) -> Result<(), DbErr> {
    let mut update = machines::Entity::update_many()
        .col_expr(machines::Column::Awake, Expr::value(state.awake))
        .col_expr(machines::Column::UpdatedAt, Expr::value(Utc::now()));
    if let Some(seen) = state.last_seen_at {
        update = update.col_expr(machines::Column::LastSeenAt, Expr::value(seen));
    }
    update
        .filter(machines::Column::Id.eq(state.machine_id.as_str()))
        .exec(conn)
        .await
        .map(drop)
}

fn activity_row(event: &ActivityEvent) -> activity::ActiveModel {
    activity::ActiveModel {
        id: Set(event.id.hyphenated().to_string()),
        at: Set(event.at),
        kind: Set(event.kind.as_str().to_owned()),
        service_id: Set(event.service_id.clone()),
        machine_id: Set(event.machine_id.clone()),
        request_id: Set(event.request_id.clone()),
        detail: Set(scrubbed(&event.detail.to_string())),
    }
}

fn attempt_row(attempt: &AttemptRecord) -> start_attempts::ActiveModel {
    start_attempts::ActiveModel {
        id: Set(Uuid::now_v7().hyphenated().to_string()),
        service_id: Set(attempt.service_id.clone()),
        attempt: Set(i32::try_from(attempt.attempt).unwrap_or(i32::MAX)),
        machine_id: Set(attempt.machine_id.clone()),
        target_url: Set(scrubbed(&attempt.target_url)),
        starter: Set(attempt.starter.clone()),
        started_at: Set(attempt.started_at),
        duration_ms: Set(i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX)),
        outcome: Set(attempt.outcome.as_str().to_owned()),
        error: Set(attempt.error.as_deref().map(scrubbed)),
    }
}

/// Upserts the runtime columns of a service. A service not reconciled yet gets a placeholder row
/// (starter `unknown`) that the next reconcile completes.
async fn save_state<C: ConnectionTrait>(conn: &C, state: &ServiceStateRecord) -> Result<(), DbErr> {
    let now = Utc::now();
    let row = services::ActiveModel {
        id: Set(state.service_id.clone()),
        base_url: Set(state.base_url.as_deref().map(scrubbed).unwrap_or_default()),
        starter: Set(UNKNOWN_STARTER.to_owned()),
        tags: Set("[]".to_owned()),
        spec: Set("{}".to_owned()),
        state: Set(state.state.clone()),
        machine_id: Set(state.machine_id.clone()),
        pid: Set(state.process.as_ref().map(|p| i64::from(p.pid))),
        pid_start_time: Set(state
            .process
            .as_ref()
            .map(|p| i64::try_from(p.start_time).unwrap_or(i64::MAX))),
        pid_boot_id: Set(state.process.as_ref().map(|p| p.boot_id.clone())),
        pid_program: Set(state.process.as_ref().map(|p| p.program.clone())),
        last_used_at: Set(state.last_used_at),
        last_error: Set(state.last_error.as_deref().map(scrubbed)),
        last_started_at: Set(state.last_started_at),
        created_at: Set(now),
        updated_at: Set(now),
        removed_at: Set(None),
    };
    let mut columns = vec![
        services::Column::State,
        services::Column::MachineId,
        services::Column::Pid,
        services::Column::PidStartTime,
        services::Column::PidBootId,
        services::Column::PidProgram,
        services::Column::LastUsedAt,
        services::Column::LastError,
        services::Column::LastStartedAt,
        services::Column::UpdatedAt,
    ];
    if state.base_url.is_some() {
        columns.push(services::Column::BaseUrl);
    }
    services::Entity::insert(row)
        .on_conflict(
            OnConflict::column(services::Column::Id)
                .update_columns(columns)
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await
        .map(drop)
}
