//! `auth_keys`: API keys, looked up by their unique `prefix` and checked against `hash` (hex
//! SHA-256 of the whole key). The key itself is never stored.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

// async_trait needs the elided `&SchemaManager` form of the trait signature.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuthKeys::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(AuthKeys::Id).text().not_null().primary_key())
                    .col(ColumnDef::new(AuthKeys::Name).text().not_null())
                    .col(
                        ColumnDef::new(AuthKeys::Prefix)
                            .text()
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(AuthKeys::Hash).text().not_null())
                    .col(
                        ColumnDef::new(AuthKeys::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuthKeys::LastUsedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(AuthKeys::RevokedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuthKeys::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum AuthKeys {
    Table,
    Id,
    Name,
    Prefix,
    Hash,
    CreatedAt,
    LastUsedAt,
    RevokedAt,
}
