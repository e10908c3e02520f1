//! `activity`: one row per [`crate::events::ActivityEvent`].

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "activity")]
pub struct Model {
    /// UUIDv7, hyphenated: sorts by recording time.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub at: DateTimeUtc,
    /// The event's public name (`ActivityKind::as_str`).
    pub kind: String,
    pub service_id: Option<String>,
    pub machine_id: Option<String>,
    pub request_id: Option<String>,
    /// JSON text (`null` when the event has no detail).
    pub detail: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
