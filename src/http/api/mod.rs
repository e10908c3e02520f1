//! The `/v1` control API and Hestia's own health endpoints, one file per resource.

pub mod health;
pub mod services;
