//! `start: semaphore` (and `stop: semaphore`): run a Semaphore template as a task and wait for it
//! to succeed. The task's `environment` carries `service_id`, `machine_id`, `address` and the
//! configured extras. A snapshot of the current and last task feeds the status `automation` block.

use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{StartTarget, Started, Starter, StarterError};
use crate::placeholders::expand;
use crate::semaphore::{RunOptions, SemaphoreClient, Task};
use crate::spec::SemaphoreTaskSpec;

/// What the status API shows of a service's Semaphore tasks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AutomationStatus {
    pub enabled: bool,
    /// Always `"semaphore"` for now.
    pub provider: &'static str,
    /// The machine of the latest task (`None` when the service has no machine).
    pub machine_id: Option<String>,
    /// The task in flight, if any.
    pub current_task: Option<AutomationTask>,
    /// The latest finished task.
    pub last_task: Option<AutomationTask>,
}

/// One Semaphore task as the status API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AutomationTask {
    pub task_id: i64,
    /// Semaphore's status string (`waiting`, `running`, `success`, ...).
    pub status: String,
    pub template_id: i64,
    /// `start` or `stop`.
    pub action: &'static str,
    pub started_at: DateTime<Utc>,
    /// Set once the task is terminal (or Hestia gave up on it).
    pub completed_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<u64>,
}

/// The automation snapshot shared by a service's start and stop Semaphore starters.
#[derive(Debug)]
pub struct AutomationTracker {
    status: Mutex<AutomationStatus>,
}

impl Default for AutomationTracker {
    fn default() -> Self {
        AutomationTracker {
            status: Mutex::new(AutomationStatus {
                enabled: true,
                provider: "semaphore",
                machine_id: None,
                current_task: None,
                last_task: None,
            }),
        }
    }
}

impl AutomationTracker {
    /// A copy of the current snapshot.
    pub fn snapshot(&self) -> AutomationStatus {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, AutomationStatus> {
        // A panic while holding this lock leaves a consistent snapshot: plain field writes only.
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A poll (or the creation) of `task`.
    fn observe(&self, task: &Task, action: &'static str, machine_id: Option<&str>) {
        let mut status = self.lock();
        let started_at = match &status.current_task {
            Some(current) if current.task_id == task.id => current.started_at,
            _ => task.created.unwrap_or_else(Utc::now),
        };
        status.machine_id = machine_id.map(str::to_owned);
        status.current_task = Some(AutomationTask {
            task_id: task.id,
            status: task.status.as_str().to_owned(),
            template_id: task.template_id,
            action,
            started_at,
            completed_at: None,
            duration_ms: None,
        });
    }

    /// The current task is over (`status` as Hestia last saw it, or `error` if Hestia gave up).
    fn finish(&self, final_status: Option<&str>) {
        let mut status = self.lock();
        if let Some(mut task) = status.current_task.take() {
            let now = Utc::now();
            if let Some(final_status) = final_status {
                task.status = final_status.to_owned();
            }
            task.completed_at = Some(now);
            task.duration_ms = (now - task.started_at)
                .to_std()
                .ok()
                .map(|d| d.as_millis() as u64);
            status.last_task = Some(task);
        }
    }
}

/// Runs one Semaphore template per `start`. Its `stop` does nothing: a stop template is its own
/// `SemaphoreStarter`, run by the stop hook that [`super::build`] sets up; a start task still in
/// flight when the attempt is abandoned is asked to stop by the client.
#[derive(Debug)]
pub struct SemaphoreStarter {
    service_id: String,
    spec: SemaphoreTaskSpec,
    /// `start` or `stop`: which of the service's templates this is.
    action: &'static str,
    client: Option<SemaphoreClient>,
    tracker: Arc<AutomationTracker>,
}

impl SemaphoreStarter {
    /// `client` is `None` when no Semaphore server is configured: every run then fails saying so.
    pub fn new(
        spec: SemaphoreTaskSpec,
        service_id: &str,
        action: &'static str,
        client: Option<SemaphoreClient>,
        tracker: Arc<AutomationTracker>,
    ) -> SemaphoreStarter {
        SemaphoreStarter {
            service_id: service_id.to_owned(),
            spec,
            action,
            client,
            tracker,
        }
    }

    /// The snapshot behind the status `automation` block.
    pub fn automation(&self) -> AutomationStatus {
        self.tracker.snapshot()
    }

    /// Runs the template to completion for `target`.
    pub async fn run(&self, target: &StartTarget) -> Result<Task, StarterError> {
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| StarterError::SemaphoreNotConfigured {
                service_id: self.service_id.clone(),
            })?;
        if !client.has_credentials() {
            return Err(StarterError::SemaphoreNoCredentials {
                service_id: self.service_id.clone(),
                base_url: client.shown_url().to_owned(),
            });
        }
        let environment = task_environment(&self.spec, target)?;
        let machine_id = target.machine.as_ref().map(|m| m.id.as_str());
        let message = format!(
            "hestia: {} {} (attempt {})",
            self.action, self.service_id, target.attempt
        );
        let options = RunOptions {
            poll_interval: self.spec.poll_interval,
            timeout: self.spec.task_timeout,
        };
        let outcome = client
            .run_task(
                self.spec.template_id,
                &environment,
                &message,
                options,
                |task| self.tracker.observe(task, self.action, machine_id),
            )
            .await;
        match outcome {
            Ok(task) => {
                self.tracker.finish(None);
                Ok(task)
            }
            Err(source) => {
                self.tracker.finish(Some(failed_status(&source)));
                Err(StarterError::Semaphore {
                    service_id: self.service_id.clone(),
                    action: self.action,
                    template_id: self.spec.template_id,
                    source: Box::new(source),
                })
            }
        }
    }
}

/// The status to show for a run that failed.
fn failed_status(error: &crate::semaphore::SemaphoreError) -> &'static str {
    use crate::semaphore::{SemaphoreError, TaskStatus};
    match error {
        SemaphoreError::TaskFailed {
            status: TaskStatus::Stopped,
            ..
        }
        | SemaphoreError::TaskTimedOut { .. } => "stopped",
        _ => "error",
    }
}

/// `{service_id, machine_id, address}` plus the spec's extras (placeholders expanded; an extra
/// with the same name wins).
pub fn task_environment(
    spec: &SemaphoreTaskSpec,
    target: &StartTarget,
) -> Result<Map<String, Value>, StarterError> {
    let mut environment = Map::new();
    environment.insert("service_id".into(), target.service_id.clone().into());
    if let Some(machine) = &target.machine {
        environment.insert("machine_id".into(), machine.id.clone().into());
        environment.insert("address".into(), machine.address.clone().into());
    }
    let vars = target.vars();
    for (key, value) in &spec.environment {
        let value = expand(value, &vars).map_err(|source| StarterError::Placeholder {
            service_id: target.service_id.clone(),
            field: "semaphore environment",
            source,
        })?;
        environment.insert(key.clone(), value.into());
    }
    Ok(environment)
}

impl Starter for SemaphoreStarter {
    fn kind(&self) -> &'static str {
        "semaphore"
    }

    fn start<'a>(
        &'a self,
        target: &'a StartTarget,
    ) -> BoxFuture<'a, Result<Started, StarterError>> {
        Box::pin(async move {
            self.run(target).await?;
            Ok(Started { exit: None })
        })
    }

    fn stop<'a>(&'a self, _target: &'a StartTarget) -> BoxFuture<'a, Result<(), StarterError>> {
        Box::pin(async { Ok(()) })
    }

    fn automation(&self) -> Option<AutomationStatus> {
        Some(self.tracker.snapshot())
    }
}
