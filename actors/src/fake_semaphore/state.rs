//! The fake's memory: what it was configured with, the tasks it runs, the sessions it issued, the
//! calls it answered and the processes it launched. Plain data behind short-held locks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::process::Child;

use super::admin;
use super::options::{ApiShape, FakeSemaphoreOptions, FakeTemplate};

/// One HTTP call the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedCall {
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// One task created through `POST …/tasks`.
#[derive(Debug, Clone, PartialEq)]
pub struct StartedTask {
    pub task_id: i64,
    pub template_id: i64,
    /// The `environment` string parsed (the raw string when it is not JSON).
    pub environment: Value,
    pub message: String,
}

/// Everything one fake knows, shared by its handlers and its handle.
#[derive(Debug)]
pub(super) struct FakeState {
    pub(super) tokens: HashSet<String>,
    pub(super) users: Vec<(String, String)>,
    pub(super) project_id: i64,
    pub(super) shape: ApiShape,
    /// No seeded project: only projects created through the API exist.
    pub(super) fresh: bool,
    pub(super) created: DateTime<Utc>,
    pub(super) templates: Mutex<BTreeMap<i64, FakeTemplate>>,
    /// What was created through the project-setup calls.
    pub(super) catalog: admin::Catalog,
    pub(super) tasks: Mutex<BTreeMap<i64, FakeTask>>,
    pub(super) next_id: AtomicI64,
    pub(super) next_line: AtomicI64,
    pub(super) sessions: Mutex<HashSet<String>>,
    pub(super) calls: Mutex<Vec<RecordedCall>>,
    pub(super) started: Mutex<Vec<StartedTask>>,
    pub(super) children: tokio::sync::Mutex<HashMap<String, Child>>,
}

/// A task as the fake keeps it.
#[derive(Debug, Clone)]
pub(super) struct FakeTask {
    pub(super) id: i64,
    pub(super) template_id: i64,
    pub(super) status: String,
    pub(super) environment: String,
    pub(super) message: String,
    pub(super) created: DateTime<Utc>,
    pub(super) start: Option<DateTime<Utc>>,
    pub(super) end: Option<DateTime<Utc>>,
    pub(super) output: Vec<(i64, DateTime<Utc>, String)>,
}

impl FakeTask {
    pub(super) fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "success" | "error" | "stopped")
    }
}

impl FakeState {
    pub(super) fn new(options: FakeSemaphoreOptions) -> FakeState {
        FakeState {
            tokens: options
                .tokens
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
            users: options.users,
            project_id: if options.project_id == 0 {
                1
            } else {
                options.project_id
            },
            shape: options.shape,
            fresh: options.fresh,
            catalog: admin::Catalog::default(),
            created: Utc::now(),
            templates: Mutex::new(options.templates),
            tasks: Mutex::new(BTreeMap::new()),
            next_id: AtomicI64::new(1),
            next_line: AtomicI64::new(1000),
            sessions: Mutex::new(HashSet::new()),
            calls: Mutex::new(Vec::new()),
            started: Mutex::new(Vec::new()),
            children: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Whether project `pid` exists: the seeded one (unless fresh) or one created.
    pub(super) fn has_project(&self, pid: i64) -> bool {
        (!self.fresh && pid == self.project_id) || self.catalog.project(pid).is_some()
    }

    pub(super) fn set_status(&self, id: i64, status: &str) -> Option<FakeTask> {
        let mut tasks = lock(&self.tasks);
        let task = tasks.get_mut(&id)?;
        // Once stopping or finished, the script no longer drives the task.
        if task.is_terminal() || (task.status == "stopping" && status != "stopped") {
            return None;
        }
        task.status = status.to_owned();
        match status {
            "running" => task.start = Some(Utc::now()),
            "success" | "error" | "stopped" => task.end = Some(Utc::now()),
            _ => {}
        }
        Some(task.clone())
    }

    pub(super) fn write_output(&self, id: i64, line: &str) {
        if let Some(task) = lock(&self.tasks).get_mut(&id) {
            let line_id = self.next_line.fetch_add(1, Ordering::Relaxed);
            task.output.push((line_id, Utc::now(), line.to_owned()));
        }
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data behind these locks; a panicked holder leaves it usable.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
