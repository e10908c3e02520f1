//! `routing_rules`: the configured rules, keyed by name, with their match and target as JSON text.
//! Removed rules are marked, not deleted.

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
                    .table(RoutingRules::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(RoutingRules::Name)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(RoutingRules::Priority)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(RoutingRules::MatchJson).text().not_null())
                    .col(ColumnDef::new(RoutingRules::TargetJson).text().not_null())
                    .col(
                        ColumnDef::new(RoutingRules::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(RoutingRules::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(RoutingRules::RemovedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RoutingRules::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum RoutingRules {
    Table,
    Name,
    Priority,
    MatchJson,
    TargetJson,
    CreatedAt,
    UpdatedAt,
    RemovedAt,
}
