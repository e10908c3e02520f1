//! Hestia's SQLite schema as ordered sea-orm migrations; `hestia serve` and `hestia migrate` apply
//! the pending ones at start. One file per migration, named `mYYYYMMDD_NNNNNN_what.rs` (the name is
//! what `seaql_migrations` records), and never edited once released: change the schema by adding.
#![forbid(unsafe_code)]

pub use sea_orm_migration::{MigrationTrait, MigratorTrait};

mod m20261126_000001_create_services;
mod m20261126_000002_create_machines;
mod m20261126_000003_create_routing_rules;
mod m20261126_000004_create_activity;
mod m20261126_000005_create_auth_keys;
mod m20261126_000006_create_start_attempts;
mod m20261201_100001_add_auth_key_scopes;
mod m20261201_100002_create_dashboard_sessions;
mod m20261201_200001_add_process_identity;

/// Every migration, oldest first.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_create_services::Migration),
            Box::new(m20261126_000002_create_machines::Migration),
            Box::new(m20261126_000003_create_routing_rules::Migration),
            Box::new(m20261126_000004_create_activity::Migration),
            Box::new(m20261126_000005_create_auth_keys::Migration),
            Box::new(m20261126_000006_create_start_attempts::Migration),
            Box::new(m20261201_100001_add_auth_key_scopes::Migration),
            Box::new(m20261201_100002_create_dashboard_sessions::Migration),
            Box::new(m20261201_200001_add_process_identity::Migration),
        ]
    }
}
