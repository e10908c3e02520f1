//! `auth_keys.scopes` (space-separated, e.g. `read control:*`) and `auth_keys.expires_at`: what a
//! key may do and until when. SQLite adds one column per `ALTER TABLE`, so two statements.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

// async_trait needs the elided `&SchemaManager` form of the trait signature.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(AuthKeys::Table)
                    .add_column(
                        ColumnDef::new(AuthKeys::Scopes)
                            .text()
                            .not_null()
                            .default(""),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(AuthKeys::Table)
                    .add_column(
                        ColumnDef::new(AuthKeys::ExpiresAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [AuthKeys::ExpiresAt, AuthKeys::Scopes] {
            manager
                .alter_table(
                    Table::alter()
                        .table(AuthKeys::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum AuthKeys {
    Table,
    Scopes,
    ExpiresAt,
}
