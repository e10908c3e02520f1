//! Hestia's engine: everything between "a request for service X arrived" and "here is where to
//! send it", with no HTTP server inside.
//!
//! # Layout
//! - [`spec`]: the validated, normalised description of services, machines and rules.
//! - [`events`]: the activity timeline's event types (design.md §2.4).
//! - [`persistence`]: the persistence actor, the only writer to SQLite, and its entities.
//! - [`starters`]: how a service is started and stopped (`command`, `http`, `none`, ...).
//! - [`readiness`]: HTTP / TCP / warm-up probes.
//! - [`harness`]: simulated backends for tests, demos and `hestia sim`.
#![forbid(unsafe_code)]

pub mod events;
pub mod spec;
