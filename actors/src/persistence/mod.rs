//! Persistence: opening SQLite (WAL, pragmas, migrations), the persistence actor (the only writer,
//! batching cast writes in order), reconciliation of the config into the `services`, `machines`
//! and `routing_rules` tables, and the read queries behind `/v1/activity` and restart recovery.
//! Nothing here logs the events it stores: callers log where things happen.

mod actor;
mod auth;
pub mod entities;
mod queries;
mod reconcile;
mod records;
mod writes;

use std::str::FromStr;
use std::time::Duration;

use hestia_migrations::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

pub use actor::PersistenceHandle;
pub use records::{
    ActivityFilter, AttemptOutcome, AttemptRecord, MachineStateRecord, PersistenceOptions,
    ReconcileReport, ServiceStateRecord,
};

/// How long a connection waits for a lock held by another connection before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections in the pool of a file database (WAL lets readers run beside the one writer).
/// Two: reads are a few queries of the API and the dashboard, and each connection costs a
/// thread and its own page cache (about 0.3 MiB resident, of Hestia's 20 MB idle budget).
const FILE_POOL_SIZE: u32 = 2;

/// Everything that can go wrong in persistence, with the operation (and path) it happened in.
#[derive(Debug, thiserror::Error)]
pub enum PersistenceError {
    #[error("cannot open database `{path}` (url `{url}`): {source}")]
    Open {
        url: String,
        path: String,
        #[source]
        source: DbErr,
    },
    #[error("applying database migrations failed: {source}")]
    Migrate {
        #[source]
        source: DbErr,
    },
    #[error("database {operation} failed: {source}")]
    Query {
        operation: &'static str,
        #[source]
        source: DbErr,
    },
    #[error("{failed} database write(s) failed since the last flush (each was logged)")]
    WritesFailed { failed: u64 },
    #[error("row `{id}` of table `{table}` cannot be read: {reason}")]
    Corrupt {
        table: &'static str,
        id: String,
        reason: String,
    },
    #[error("cannot start the persistence actor: {source}")]
    Spawn {
        #[source]
        source: ractor::SpawnErr,
    },
    #[error("the persistence actor is not running (during {operation})")]
    ActorGone { operation: &'static str },
}

impl PersistenceError {
    pub(crate) fn query(operation: &'static str) -> impl FnOnce(DbErr) -> PersistenceError {
        move |source| PersistenceError::Query { operation, source }
    }
}

/// Opens (creating the file if the URL says `mode=rwc`) the SQLite database at `database_url`
/// with WAL, `synchronous=NORMAL`, foreign keys and a busy timeout, then applies pending
/// migrations. Errors name the database file.
pub async fn open(database_url: &str) -> Result<DatabaseConnection, PersistenceError> {
    let path = sqlite_path(database_url);
    let in_memory = database_url.contains(":memory:") || database_url.contains("mode=memory");
    let mut options = ConnectOptions::new(database_url);
    options
        .max_connections(if in_memory { 1 } else { FILE_POOL_SIZE })
        .map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(BUSY_TIMEOUT)
        });
    let db = Database::connect(options)
        .await
        .map_err(|source| PersistenceError::Open {
            url: database_url.to_owned(),
            path,
            source,
        })?;
    migrate(&db).await?;
    Ok(db)
}

/// The persistence actor's own connection: one, so every statement of a batch (`BEGIN IMMEDIATE`
/// … `COMMIT`) goes to it, and SQLite — not the driver's bookkeeping — says whether a transaction
/// is open. (The driver counts a transaction as open after SQLite rolled it back by itself, as it
/// does on a full disk; its next "transaction" on that connection was then a savepoint left open,
/// and every later write found the database locked.) An in-memory database has one connection
/// already: that one.
pub(crate) fn writer_connection(db: &DatabaseConnection) -> DatabaseConnection {
    let pool = db.get_sqlite_connection_pool();
    if pool.options().get_max_connections() <= 1 {
        return db.clone();
    }
    let writer = sea_orm::sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with((*pool.connect_options()).clone());
    sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(writer)
}

/// Applies every pending migration and returns the names of those it applied (empty when the
/// schema is already current).
pub async fn migrate(db: &DatabaseConnection) -> Result<Vec<String>, PersistenceError> {
    let pending = Migrator::get_pending_migrations(db)
        .await
        .map_err(|source| PersistenceError::Migrate { source })?;
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let names = pending.iter().map(|m| m.name().to_owned()).collect();
    Migrator::up(db, None)
        .await
        .map_err(|source| PersistenceError::Migrate { source })?;
    Ok(names)
}

/// Hestia's data directory for a database URL: the directory of the SQLite file (a temporary
/// one for an in-memory database).
pub fn data_dir(database_url: &str) -> std::path::PathBuf {
    if database_url.contains(":memory:") || database_url.contains("mode=memory") {
        return std::env::temp_dir().join("hestia");
    }
    let path = std::path::PathBuf::from(sqlite_path(database_url));
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    }
}

/// The file a SQLite URL points at, for error messages (the URL itself when it cannot be parsed).
fn sqlite_path(database_url: &str) -> String {
    match SqliteConnectOptions::from_str(database_url) {
        Ok(opts) => opts.get_filename().display().to_string(),
        Err(_) => database_url.to_owned(),
    }
}
