//! `dashboard_sessions`: dashboard logins, keyed by the hex SHA-256 of the session cookie.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "dashboard_sessions")]
pub struct Model {
    /// Hex SHA-256 of the cookie's value.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub username: String,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
