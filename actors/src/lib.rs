//! Hestia's engine: everything between "a request for service X arrived" and "here is where to
//! send it", with no HTTP server inside.
//!
//! # Layout
//! - [`engine`]: `Engine`, the bundle of handles everything else uses; start and shutdown.
//! - [`service`]: one supervised actor per service — lifecycle, FIFO queue, start policy —
//!   and `ServiceHandle`, the only way in. `supervisor` restarts crashed ones.
//! - [`router`], [`routing`]: service id → actor; service → machines by routing rules.
//! - [`error`]: the errors callers see, with their problem types.
//! - [`spec`]: the validated, normalised description of services, machines and rules.
//! - [`events`]: the activity timeline's event types (design.md §2.4).
//! - [`persistence`]: the persistence actor, the only writer to SQLite, and its entities.
//! - [`starters`]: how a service is started and stopped (`command`, `http`, `none`, ...).
//! - [`readiness`]: HTTP / TCP / warm-up probes.
//! - [`service_log`]: each service's output file (capped, rotated once), followed and served.
//! - [`per_core`]: values kept once per core (what every request writes), added up to be read.
//! - [`redact`]: credentials masked out of URLs before they are printed, stored or returned.
//! - `harness` (feature `sim`): simulated backends for tests, demos and `hestia sim`.
//! - `fake_semaphore` (feature `fake-semaphore`): a fake Semaphore server for tests, demos and
//!   `hestia fake-semaphore`.
//!
//! - `Engine::start_with_starters` (feature `test-doubles`): services started by starters the
//!   caller gives, for the engine's scenario tests (`actors/tests/`).
//!
//! The test doubles are behind features so the engine's own build carries no HTTP server:
//! `cargo check -p hestia-actors` builds without them.
#![forbid(unsafe_code)]

mod assembly;
pub mod engine;
pub mod error;
pub mod events;
#[cfg(feature = "fake-semaphore")]
pub mod fake_semaphore;
#[cfg(feature = "sim")]
pub mod harness;
pub mod metrics;
pub mod per_core;
pub mod persistence;
pub mod placeholders;
pub mod readiness;
pub mod redact;
pub mod router;
pub mod routing;
pub mod semaphore;
pub mod service;
pub mod service_log;
pub mod spec;
pub mod starters;
pub mod strategy;
mod supervisor;
