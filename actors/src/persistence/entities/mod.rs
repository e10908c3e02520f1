//! sea-orm entities, one file per table of `hestia-migrations`. Ids are text (UUIDs hyphenated,
//! which sort like their bytes), JSON columns are text we (de)serialise ourselves, and timestamps
//! are UTC. Only the persistence actor writes through these; anyone may read.

pub mod activity;
pub mod auth_keys;
pub mod dashboard_sessions;
pub mod machines;
pub mod routing_rules;
pub mod services;
pub mod start_attempts;
