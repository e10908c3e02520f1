//! `start_attempts`: one row per attempt to start a service (retries and fallbacks included),
//! with its outcome and duration. No foreign key to `services`: history outlives configuration.

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
                    .table(StartAttempts::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(StartAttempts::Id)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(StartAttempts::ServiceId).text().not_null())
                    .col(ColumnDef::new(StartAttempts::Attempt).integer().not_null())
                    .col(ColumnDef::new(StartAttempts::MachineId).text().null())
                    .col(ColumnDef::new(StartAttempts::TargetUrl).text().not_null())
                    .col(ColumnDef::new(StartAttempts::Starter).text().not_null())
                    .col(
                        ColumnDef::new(StartAttempts::StartedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(StartAttempts::DurationMs)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(StartAttempts::Outcome).text().not_null())
                    .col(ColumnDef::new(StartAttempts::Error).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_start_attempts_service_started")
                    .table(StartAttempts::Table)
                    .col(StartAttempts::ServiceId)
                    .col(StartAttempts::StartedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(StartAttempts::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum StartAttempts {
    Table,
    Id,
    ServiceId,
    Attempt,
    MachineId,
    TargetUrl,
    Starter,
    StartedAt,
    DurationMs,
    Outcome,
    Error,
}
