//! `start_attempts`: one row per attempt to start a service, with its outcome.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "start_attempts")]
pub struct Model {
    /// UUIDv7, hyphenated.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub service_id: String,
    /// 1 for the first attempt.
    pub attempt: i32,
    pub machine_id: Option<String>,
    pub target_url: String,
    /// Starter kind used for this attempt.
    pub starter: String,
    pub started_at: DateTimeUtc,
    pub duration_ms: i64,
    /// `success | failed | timeout`.
    pub outcome: String,
    pub error: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
