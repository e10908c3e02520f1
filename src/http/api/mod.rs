//! The `/v1` control API and Hestia's own health endpoints, one file per resource.

pub mod activity;
pub mod config;
pub mod events;
pub mod health;
pub mod logs;
pub mod machines;
pub mod services;
pub mod strategies;
