//! `services`: config columns (reconcile) and runtime columns (service actors).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "services")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The configured URL, until a service actor reports the one in use.
    pub base_url: String,
    /// Starter kind: `none`, `command`, `http`, `semaphore`.
    pub starter: String,
    /// JSON array of strings.
    pub tags: String,
    /// JSON object: a non-secret summary of the service's configuration.
    pub spec: String,
    /// `cold | starting | ready | stopping | failed`.
    pub state: String,
    pub machine_id: Option<String>,
    pub pid: Option<i64>,
    /// Start time of the process under `pid` (clock ticks since boot): with the program, its identity.
    pub pid_start_time: Option<i64>,
    pub pid_boot_id: Option<String>,
    pub pid_program: Option<String>,
    pub last_used_at: Option<DateTimeUtc>,
    pub last_error: Option<String>,
    pub last_started_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// Set when the service left the config; cleared when it comes back.
    pub removed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
