//! `auth_keys`: API keys by unique prefix, with the hex SHA-256 of the key (never the key).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "auth_keys")]
pub struct Model {
    /// UUID, hyphenated.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    #[sea_orm(unique)]
    pub prefix: String,
    /// Hex SHA-256 of the whole key.
    pub hash: String,
    pub created_at: DateTimeUtc,
    pub last_used_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
    /// Space-separated scopes (`read control:* proxy:chat`).
    pub scopes: String,
    /// After this the key is refused; `None`: never expires.
    pub expires_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
