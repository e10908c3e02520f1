//! `services.pid_start_time`, `pid_boot_id` and `pid_program`: who the process under
//! `services.pid` is (its start time in clock ticks since boot, that boot, and the program Hestia
//! ran), so that a restarted Hestia adopts only the very process it spawned, never a stranger who
//! got the same pid.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

// async_trait needs the elided `&SchemaManager` form of the trait signature.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(Services::Table)
                    .add_column(ColumnDef::new(Services::PidStartTime).big_integer().null())
                    .to_owned(),
            )
            .await?;
        for column in [Services::PidBootId, Services::PidProgram] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Services::Table)
                        .add_column(ColumnDef::new(column).text().null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Services::PidStartTime,
            Services::PidBootId,
            Services::PidProgram,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Services::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Services {
    Table,
    PidStartTime,
    PidBootId,
    PidProgram,
}
