//! Hestia, the binary's library: configuration, the HTTP surface and the command line.
//!
//! # Layout
//! - [`config`]: `hestia_config.yml` — strict loading, prototype keys, env overrides, validation.
//! - [`serve`]: `hestia serve` — database, engine, HTTP, graceful shutdown.
//! - [`auth`]: API keys, scopes, password hashes, the failure limiter (no HTTP).
//! - [`http`]: the route table, the `/v1` API, problem responses.
//! - [`cli`]: the `hestia` subcommands.
//! - [`telemetry`], [`shutdown`]: logging and the shutdown signal.
//!
//! The engine itself (service actors, persistence, starters) is the `hestia-actors` crate.
#![forbid(unsafe_code)]

pub mod allocator;
pub mod auth;
pub mod cli;
pub mod config;
pub mod http;
pub mod live;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
