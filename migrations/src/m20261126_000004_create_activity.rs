//! `activity`: the event timeline (design.md §2.4). Ids are UUIDv7 text, so they sort by time;
//! the two indexes serve the `/v1/activity` filters (by service, by type, both newest first).

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
                    .table(Activity::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Activity::Id).text().not_null().primary_key())
                    .col(
                        ColumnDef::new(Activity::At)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Activity::Kind).text().not_null())
                    .col(ColumnDef::new(Activity::ServiceId).text().null())
                    .col(ColumnDef::new(Activity::MachineId).text().null())
                    .col(ColumnDef::new(Activity::RequestId).text().null())
                    .col(
                        ColumnDef::new(Activity::Detail)
                            .text()
                            .not_null()
                            .default("null"),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_activity_service_at")
                    .table(Activity::Table)
                    .col(Activity::ServiceId)
                    .col(Activity::At)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_activity_kind_at")
                    .table(Activity::Table)
                    .col(Activity::Kind)
                    .col(Activity::At)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Activity::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Activity {
    Table,
    Id,
    At,
    Kind,
    ServiceId,
    MachineId,
    RequestId,
    Detail,
}
