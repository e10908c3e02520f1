//! `WakeStarter`: wakes the attempt's machine (its `wake`: a wake-on-LAN packet or a Semaphore
//! template) before delegating `start`, then records the machine as awake once the service's
//! start went through on it. Machines without `wake` pass straight through.

use chrono::Utc;
use futures_util::future::BoxFuture;
use std::sync::Arc;

use super::semaphore::{AutomationStatus, task_environment};
use super::wol::{WolError, send_magic_packet};
use super::{StartTarget, Started, Starter, StarterError};
use crate::persistence::{MachineStateRecord, PersistenceHandle};
use crate::semaphore::{RunOptions, SemaphoreClient, SemaphoreError};
use crate::spec::{MachineSpec, WakeSpec};

/// Why a machine could not be woken.
#[derive(Debug, thiserror::Error)]
pub enum WakeError {
    #[error(transparent)]
    Wol(#[from] WolError),
    #[error("the wake template failed: {0}")]
    Semaphore(Box<SemaphoreError>),
    #[error(
        "its wake uses a Semaphore template, but no Semaphore server is configured \
         (set `semaphore.base_url` and `semaphore.api_token`)"
    )]
    SemaphoreNotConfigured,
    #[error(
        "its wake uses Semaphore at {base_url}, but no credentials are configured (set \
         `semaphore.api_token`, or SEMAPHORE_API_TOKEN)"
    )]
    SemaphoreNoCredentials { base_url: String },
    #[error("the wake template's environment: {0}")]
    Environment(String),
}

/// Wakes the target machine, then runs the inner starter.
#[derive(Debug)]
pub struct WakeStarter {
    inner: Arc<dyn Starter>,
    semaphore: Option<SemaphoreClient>,
    persistence: Option<PersistenceHandle>,
}

impl WakeStarter {
    pub fn new(
        inner: Arc<dyn Starter>,
        semaphore: Option<SemaphoreClient>,
        persistence: Option<PersistenceHandle>,
    ) -> WakeStarter {
        WakeStarter {
            inner,
            semaphore,
            persistence,
        }
    }

    /// Sends the machine's wake-up and, for a Semaphore template, waits for it to succeed.
    pub async fn wake(
        &self,
        machine: &MachineSpec,
        wake: &WakeSpec,
        target: &StartTarget,
    ) -> Result<(), WakeError> {
        match wake {
            WakeSpec::Wol { mac, broadcast } => {
                send_magic_packet(*mac, broadcast).await?;
            }
            WakeSpec::Semaphore(task) => {
                let client = self
                    .semaphore
                    .as_ref()
                    .ok_or(WakeError::SemaphoreNotConfigured)?;
                if !client.has_credentials() {
                    return Err(WakeError::SemaphoreNoCredentials {
                        base_url: client.shown_url().to_owned(),
                    });
                }
                let environment = task_environment(task, target)
                    .map_err(|error| WakeError::Environment(error.to_string()))?;
                let message = format!("hestia: wake {} for {}", machine.id, target.service_id);
                let options = RunOptions {
                    poll_interval: task.poll_interval,
                    timeout: task.task_timeout,
                };
                client
                    .run_task(task.template_id, &environment, &message, options, |_| {})
                    .await
                    .map_err(|error| WakeError::Semaphore(Box::new(error)))?;
            }
        }
        Ok(())
    }
}

impl Starter for WakeStarter {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn start<'a>(
        &'a self,
        target: &'a StartTarget,
    ) -> BoxFuture<'a, Result<Started, StarterError>> {
        Box::pin(async move {
            let woken = match &target.machine {
                Some(machine) => match &machine.wake {
                    Some(wake) => {
                        tracing::info!(service = %target.service_id, machine = %machine.id, "waking the machine");
                        self.wake(machine, wake, target).await.map_err(|source| {
                            StarterError::Wake {
                                service_id: target.service_id.clone(),
                                machine_id: machine.id.clone(),
                                source,
                            }
                        })?;
                        Some(machine.id.clone())
                    }
                    None => None,
                },
                None => None,
            };
            let started = self.inner.start(target).await?;
            if let (Some(machine_id), Some(persistence)) = (woken, &self.persistence) {
                persistence.save_machine_state(MachineStateRecord {
                    machine_id,
                    awake: true,
                    last_seen_at: Some(Utc::now()),
                });
            }
            Ok(started)
        })
    }

    fn stop<'a>(&'a self, target: &'a StartTarget) -> BoxFuture<'a, Result<(), StarterError>> {
        self.inner.stop(target)
    }

    fn process(&self) -> Option<super::ProcessIdentity> {
        self.inner.process()
    }

    fn adopt(&self, process: &super::ProcessIdentity) -> Option<super::ExitWatch> {
        self.inner.adopt(process)
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.inner.shutdown()
    }

    fn automation(&self) -> Option<AutomationStatus> {
        self.inner.automation()
    }
}
