//! `services`: one row per service ever configured. Config columns are written by reconcile,
//! runtime columns (state, pid, last_used_at...) by the service actors through the persistence
//! actor. A service dropped from the config keeps its row with `removed_at` set.

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
                    .table(Services::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Services::Id).text().not_null().primary_key())
                    .col(ColumnDef::new(Services::BaseUrl).text().not_null())
                    .col(ColumnDef::new(Services::Starter).text().not_null())
                    .col(
                        ColumnDef::new(Services::Tags)
                            .text()
                            .not_null()
                            .default("[]"),
                    )
                    .col(
                        ColumnDef::new(Services::Spec)
                            .text()
                            .not_null()
                            .default("{}"),
                    )
                    .col(
                        ColumnDef::new(Services::State)
                            .text()
                            .not_null()
                            .default("cold"),
                    )
                    .col(ColumnDef::new(Services::MachineId).text().null())
                    .col(ColumnDef::new(Services::Pid).big_integer().null())
                    .col(
                        ColumnDef::new(Services::LastUsedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(ColumnDef::new(Services::LastError).text().null())
                    .col(
                        ColumnDef::new(Services::LastStartedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Services::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Services::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Services::RemovedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Services::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Services {
    Table,
    Id,
    BaseUrl,
    Starter,
    Tags,
    Spec,
    State,
    MachineId,
    Pid,
    LastUsedAt,
    LastError,
    LastStartedAt,
    CreatedAt,
    UpdatedAt,
    RemovedAt,
}
