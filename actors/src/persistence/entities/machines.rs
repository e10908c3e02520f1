//! `machines`: config columns (reconcile) and what Hestia last observed (`awake`, `last_seen_at`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "machines")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// `local | remote | hpc | cloud`.
    pub role: String,
    pub address: String,
    /// JSON array of strings.
    pub tags: String,
    /// Wake kind: `wol`, `semaphore`, or none.
    pub wake: Option<String>,
    pub awake: Option<bool>,
    pub last_seen_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub removed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
