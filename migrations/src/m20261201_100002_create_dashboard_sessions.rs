//! `dashboard_sessions`: one row per dashboard login, keyed by the hex SHA-256 of the session
//! cookie's value (the cookie itself is never stored), with its expiry.

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
                    .table(DashboardSessions::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(DashboardSessions::Id)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(DashboardSessions::Username)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(DashboardSessions::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(DashboardSessions::ExpiresAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DashboardSessions::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum DashboardSessions {
    Table,
    Id,
    Username,
    CreatedAt,
    ExpiresAt,
}
