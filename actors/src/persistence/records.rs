//! The values callers hand to, and get back from, the persistence actor.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::events::ActivityKind;
use crate::starters::ProcessIdentity;

/// Batching knobs of the persistence actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistenceOptions {
    /// Longest a cast write waits before it is written. Default 50 ms.
    pub flush_interval: Duration,
    /// A batch this large is written at once, without waiting for the interval. Default 256.
    pub max_batch: usize,
}

impl Default for PersistenceOptions {
    fn default() -> Self {
        PersistenceOptions {
            flush_interval: Duration::from_millis(50),
            max_batch: 256,
        }
    }
}

/// The runtime columns of one `services` row, as a service actor reports them.
///
/// Saving replaces every runtime column, except `base_url`, which is only written when `Some`
/// (the URL in use, e.g. the chosen machine's or the fallback).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStateRecord {
    pub service_id: String,
    /// `cold | starting | ready | stopping | failed`.
    pub state: String,
    pub machine_id: Option<String>,
    pub base_url: Option<String>,
    /// The process Hestia owns for it (pid, start time, program), if any.
    pub process: Option<ProcessIdentity>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_started_at: Option<DateTime<Utc>>,
}

/// What Hestia last observed of a machine (`machines.awake`, `machines.last_seen_at`).
///
/// Saving updates an existing (reconciled) row only; an unknown machine id changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MachineStateRecord {
    pub machine_id: String,
    pub awake: bool,
    /// Written only when `Some` (the previous sighting is kept otherwise).
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// How one start attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttemptOutcome {
    Success,
    Failed,
    Timeout,
}

impl AttemptOutcome {
    /// The value stored in `start_attempts.outcome`.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Success => "success",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Timeout => "timeout",
        }
    }
}

/// One attempt to start a service (a retry or a fallback is another attempt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRecord {
    pub service_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub machine_id: Option<String>,
    pub target_url: String,
    /// Starter kind (`StarterSpec::kind`).
    pub starter: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub outcome: AttemptOutcome,
    pub error: Option<String>,
}

/// Which activity to read. Results are newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityFilter {
    pub service: Option<String>,
    pub kind: Option<ActivityKind>,
    /// Only events at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// At most this many events. Default 100; 0 means the default; capped at 1000.
    pub limit: u64,
}

impl ActivityFilter {
    pub const DEFAULT_LIMIT: u64 = 100;
    pub const MAX_LIMIT: u64 = 1000;

    /// The limit actually applied.
    pub fn effective_limit(&self) -> u64 {
        match self.limit {
            0 => Self::DEFAULT_LIMIT,
            n => n.min(Self::MAX_LIMIT),
        }
    }
}

impl Default for ActivityFilter {
    fn default() -> Self {
        ActivityFilter {
            service: None,
            kind: None,
            since: None,
            limit: Self::DEFAULT_LIMIT,
        }
    }
}

/// What reconciling the config with the database changed.
///
/// Entries are `"<table>:<key>"`: `service:<id>`, `machine:<id>`, `routing_rule:<name>`.
/// A row that comes back after removal is listed in `restored` only (even if it also changed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// New rows.
    pub added: Vec<String>,
    /// Existing rows whose configuration changed.
    pub updated: Vec<String>,
    /// Rows no longer configured, now marked with `removed_at`.
    pub removed: Vec<String>,
    /// Previously removed rows configured again (`removed_at` cleared).
    pub restored: Vec<String>,
}

impl ReconcileReport {
    /// True when the database already matched the config.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.updated.is_empty()
            && self.removed.is_empty()
            && self.restored.is_empty()
    }
}
