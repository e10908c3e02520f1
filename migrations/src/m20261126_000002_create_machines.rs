//! `machines`: one row per machine ever configured. `awake` and `last_seen_at` are what Hestia
//! last observed; the rest mirrors the config. Removed machines are marked, not deleted.

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
                    .table(Machines::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Machines::Id).text().not_null().primary_key())
                    .col(ColumnDef::new(Machines::Role).text().not_null())
                    .col(ColumnDef::new(Machines::Address).text().not_null())
                    .col(
                        ColumnDef::new(Machines::Tags)
                            .text()
                            .not_null()
                            .default("[]"),
                    )
                    .col(ColumnDef::new(Machines::Wake).text().null())
                    .col(ColumnDef::new(Machines::Awake).boolean().null())
                    .col(
                        ColumnDef::new(Machines::LastSeenAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Machines::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Machines::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Machines::RemovedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Machines::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Machines {
    Table,
    Id,
    Role,
    Address,
    Tags,
    Wake,
    Awake,
    LastSeenAt,
    CreatedAt,
    UpdatedAt,
    RemovedAt,
}
