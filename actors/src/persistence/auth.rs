//! The auth tables: API keys (`auth_keys`) and dashboard logins (`dashboard_sessions`). Key and
//! session writes are calls through the persistence actor (the caller learns whether they were
//! written); `last_used_at` is a cast. Only digests are stored: never a key or a cookie value.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder,
};

use super::PersistenceError;
use super::entities::{auth_keys, dashboard_sessions};

/// An auth write that answers with the number of rows it changed.
#[derive(Debug)]
pub(crate) enum AuthWrite {
    CreateKey(auth_keys::Model),
    /// Revokes every live key called `name`.
    RevokeKeys {
        name: String,
        at: DateTime<Utc>,
    },
    /// Stores a login (and forgets every expired one).
    CreateSession(dashboard_sessions::Model),
    DeleteSession {
        id: String,
    },
}

pub(super) async fn apply(
    db: &DatabaseConnection,
    write: AuthWrite,
) -> Result<u64, PersistenceError> {
    match write {
        AuthWrite::CreateKey(key) => {
            key.into_active_model()
                .insert(db)
                .await
                .map_err(PersistenceError::query("key insert"))?;
            Ok(1)
        }
        AuthWrite::RevokeKeys { name, at } => auth_keys::Entity::update_many()
            .col_expr(auth_keys::Column::RevokedAt, Expr::value(at))
            .filter(auth_keys::Column::Name.eq(name))
            .filter(auth_keys::Column::RevokedAt.is_null())
            .exec(db)
            .await
            .map(|r| r.rows_affected)
            .map_err(PersistenceError::query("key revoke")),
        AuthWrite::CreateSession(session) => {
            dashboard_sessions::Entity::delete_many()
                .filter(dashboard_sessions::Column::ExpiresAt.lt(Utc::now()))
                .exec(db)
                .await
                .map_err(PersistenceError::query("expired session purge"))?;
            session
                .into_active_model()
                .insert(db)
                .await
                .map_err(PersistenceError::query("session insert"))?;
            Ok(1)
        }
        AuthWrite::DeleteSession { id } => dashboard_sessions::Entity::delete_by_id(id)
            .exec(db)
            .await
            .map(|r| r.rows_affected)
            .map_err(PersistenceError::query("session delete")),
    }
}

/// Every key row (revoked ones too), oldest first.
pub(super) async fn keys(
    db: &DatabaseConnection,
) -> Result<Vec<auth_keys::Model>, PersistenceError> {
    auth_keys::Entity::find()
        .order_by_asc(auth_keys::Column::CreatedAt)
        .all(db)
        .await
        .map_err(PersistenceError::query("key read"))
}

/// The unexpired session whose cookie digest is `id`.
pub(super) async fn session(
    db: &DatabaseConnection,
    id: &str,
) -> Result<Option<dashboard_sessions::Model>, PersistenceError> {
    dashboard_sessions::Entity::find_by_id(id.to_owned())
        .filter(dashboard_sessions::Column::ExpiresAt.gt(Utc::now()))
        .one(db)
        .await
        .map_err(PersistenceError::query("session read"))
}
