//! `start: command`: a local process Hestia owns, in its own process group.
//!
//! One process per service: starting again stops the previous one first. Stopping sends SIGTERM to
//! the whole group, waits `stop_grace`, then SIGKILLs it. No orphans: what the process leaves in
//! its group when it exits gets the same grace, then SIGKILL; dropping the starter SIGKILLs the
//! group synchronously. Output (stdout and stderr) goes to the service's own log file
//! ([`ServiceLog`]), never through a pipe into Hestia, so the process outlives Hestia's death;
//! Hestia follows that file into its log, and its last lines explain an exit.

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{
    ExitInfo, ExitNotifier, ExitWatch, ProcessIdentity, StartTarget, Started, Starter, StarterError,
};
use crate::placeholders::expand;
use crate::service_log::ServiceLog;
use crate::spec::CommandSpec;

/// The glibc allocator settings variable.
pub const GLIBC_TUNABLES: &str = "GLIBC_TUNABLES";
/// The jemalloc settings variable of the `hestia` binary (its jemalloc is built with the `_rjem_`
/// prefix, which also prefixes the variable).
pub const JEMALLOC_CONF: &str = "_RJEM_MALLOC_CONF";
/// Set by `hestia serve` when it set `GLIBC_TUNABLES` and `JEMALLOC_CONF` for itself: children
/// inherit none of the three.
pub const ALLOCATOR_MARKER: &str = "HESTIA_ALLOCATOR_TUNED";

/// How many of its last output lines explain a process's exit.
pub const STDERR_TAIL_LINES: usize = 20;
/// How often the reaper checks whether the process group is gone.
const GROUP_POLL: Duration = Duration::from_millis(20);
/// How often an adopted process (not our child, so no exit notice) is looked for.
const ADOPTED_POLL: Duration = Duration::from_millis(500);
/// After SIGKILL, how long to wait for the rest of the group before giving up (and logging it).
const KILL_SETTLE: Duration = Duration::from_secs(2);

/// A local process started from a [`CommandSpec`]. See the module docs for the guarantees.
pub struct CommandStarter {
    service_id: String,
    spec: CommandSpec,
    /// Where the process's stdout and stderr go.
    log: ServiceLog,
    /// Serialises start/stop/shutdown, so two processes never run for one service.
    turn: tokio::sync::Mutex<()>,
    /// The process of the last start, until a stop has seen its group gone. Synchronous so that
    /// `Drop` and `pid()` can read it.
    current: Mutex<Option<Running>>,
}

/// A process this starter spawned. Its pid is also its process group id.
#[derive(Debug, Clone)]
struct Running {
    pid: u32,
    pgid: Pid,
    program: String,
    /// Read right after the spawn; `None` only if the process was already gone by then.
    identity: Option<ProcessIdentity>,
    exit: ExitWatch,
    /// Set by the reaper once the leader is reaped and no live process is left in the group.
    /// From then on the pgid may be reused by an unrelated process: it is never signalled again.
    cleared: watch::Receiver<bool>,
}

impl Running {
    fn group_cleared(&self) -> bool {
        *self.cleared.borrow()
    }

    /// Resolves once the group is cleared (or the reaper is gone, e.g. at runtime shutdown).
    async fn wait_cleared(&self) {
        let mut cleared = self.cleared.clone();
        let _ = cleared.wait_for(|cleared| *cleared).await;
    }
}

impl CommandStarter {
    pub fn new(spec: CommandSpec, service_id: &str, log: ServiceLog) -> CommandStarter {
        CommandStarter {
            service_id: service_id.to_owned(),
            spec,
            log,
            turn: tokio::sync::Mutex::new(()),
            current: Mutex::new(None),
        }
    }

    /// Stops the process, if any, with the usual SIGTERM → grace → SIGKILL. Failures are logged:
    /// this runs while the engine exits, when there is nobody left to tell.
    pub async fn shutdown(&self) {
        let _turn = self.turn.lock().await;
        if let Err(error) = self.stop_current().await {
            warn!(service = %self.service_id, %error, "could not stop the process at shutdown");
        }
    }

    fn current(&self) -> Option<Running> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn spawn(&self, target: &StartTarget) -> Result<Started, StarterError> {
        let vars = target.vars();
        let placeholder = |field| StarterError::placeholder(&self.service_id, field);
        let program = expand(&self.spec.program, &vars).map_err(placeholder("command program"))?;
        let args = self
            .spec
            .args
            .iter()
            .map(|arg| expand(arg, &vars))
            .collect::<Result<Vec<_>, _>>()
            .map_err(placeholder("command args"))?;
        let env = self
            .spec
            .env
            .iter()
            .map(|(key, value)| Ok((key.clone(), expand(value, &vars)?)))
            .collect::<Result<BTreeMap<_, _>, _>>()
            .map_err(placeholder("command env"))?;

        let spawn_error = |source| StarterError::Spawn {
            service_id: self.service_id.clone(),
            program: program.clone(),
            source,
        };
        let output = self.log.open_for_process().map_err(spawn_error)?;
        let log_offset = self.log.len();
        let mut command = Command::new(&program);
        if std::env::var_os(ALLOCATOR_MARKER).is_some() {
            // Hestia's own allocator setting (see `hestia::allocator`), not the service's.
            command
                .env_remove(GLIBC_TUNABLES)
                .env_remove(JEMALLOC_CONF)
                .env_remove(ALLOCATOR_MARKER);
        }
        command
            .args(&args)
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(Stdio::from(output.try_clone().map_err(spawn_error)?))
            .stderr(Stdio::from(output))
            .process_group(0)
            .kill_on_drop(true);
        if let Some(cwd) = &self.spec.cwd {
            command.current_dir(cwd);
        }
        let child = command.spawn().map_err(spawn_error)?;
        let pid = child
            .id()
            .ok_or_else(|| spawn_error(std::io::Error::other("the new process has no pid")))?;
        let raw_pid = i32::try_from(pid)
            .map_err(|_| spawn_error(std::io::Error::other("pid out of range")))?;

        let (notifier, exit) = ExitWatch::channel();
        let (cleared_tx, cleared) = watch::channel(false);
        let pgid = Pid::from_raw(raw_pid);
        let running = Running {
            pid,
            pgid,
            program: program.clone(),
            identity: ProcessIdentity::of(pid, &self.spec.program),
            exit: exit.clone(),
            cleared,
        };
        // No await between spawn and here: a cancelled start can never lose track of the process.
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(running);
        self.log.follow(log_offset, cleared_tx.subscribe());
        tokio::spawn(reap(
            child,
            pgid,
            (self.log.clone(), log_offset),
            notifier,
            cleared_tx,
            self.spec.stop_grace,
            self.service_id.clone(),
        ));
        info!(service = %self.service_id, pid, program = %program, attempt = target.attempt, "process started");
        Ok(Started { exit: Some(exit) })
    }

    /// Ends the current process group (if any) and forgets it. The caller holds `turn`.
    async fn stop_current(&self) -> Result<(), StarterError> {
        let Some(running) = self.current() else {
            return Ok(());
        };
        self.terminate(&running).await?;
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|now| now.pid == running.pid) {
            *current = None;
        }
        Ok(())
    }

    /// SIGTERM the group, wait up to the grace for the process to be reaped and the group to be
    /// empty, then SIGKILL whatever is left.
    async fn terminate(&self, running: &Running) -> Result<(), StarterError> {
        if running.group_cleared() {
            return Ok(());
        }
        self.signal_group(running, Signal::SIGTERM)?;
        if tokio::time::timeout(self.spec.stop_grace, running.wait_cleared())
            .await
            .is_ok()
        {
            info!(service = %self.service_id, pid = running.pid, "process stopped");
            return Ok(());
        }
        warn!(
            service = %self.service_id,
            pid = running.pid,
            grace_ms = self.spec.stop_grace.as_millis(),
            "process group still running after SIGTERM and the grace period; sending SIGKILL"
        );
        self.signal_group(running, Signal::SIGKILL)?;
        running.exit.clone().exited().await;
        if tokio::time::timeout(KILL_SETTLE, running.wait_cleared())
            .await
            .is_err()
        {
            warn!(service = %self.service_id, pgid = %running.pgid, "process group still present after SIGKILL");
        }
        info!(service = %self.service_id, pid = running.pid, "process killed");
        Ok(())
    }

    /// Sends `signal` to the whole group. A group that is already gone is not an error.
    fn signal_group(&self, running: &Running, signal: Signal) -> Result<(), StarterError> {
        match killpg(running.pgid, signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(source) => Err(StarterError::Signal {
                service_id: self.service_id.clone(),
                program: running.program.clone(),
                pgid: running.pgid.as_raw(),
                signal: signal.as_str(),
                source,
            }),
        }
    }
}

impl Starter for CommandStarter {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn start<'a>(
        &'a self,
        target: &'a StartTarget,
    ) -> BoxFuture<'a, Result<Started, StarterError>> {
        Box::pin(async move {
            let _turn = self.turn.lock().await;
            // One process per service: a process from an earlier start goes first.
            self.stop_current().await?;
            self.spawn(target)
        })
    }

    fn stop<'a>(&'a self, _target: &'a StartTarget) -> BoxFuture<'a, Result<(), StarterError>> {
        Box::pin(async move {
            let _turn = self.turn.lock().await;
            self.stop_current().await
        })
    }

    fn process(&self) -> Option<ProcessIdentity> {
        self.current()
            .filter(|running| running.exit.has_exited().is_none())
            .and_then(|running| running.identity)
    }

    fn adopt(&self, process: &ProcessIdentity) -> Option<ExitWatch> {
        let pid = process.pid;
        let pgid = Pid::from_raw(i32::try_from(pid).ok()?);
        // The very process we started (same start time, same program), still alive and still
        // leading its own group — not a stranger who got its pid since: that one is never touched.
        if !process.is_alive_as(&self.spec.program) {
            info!(service = %self.service_id, pid, "the recorded process is gone or is another process now; not adopting it");
            return None;
        }
        if !is_live_member(std::path::Path::new(&format!("/proc/{pid}")), pgid) {
            return None;
        }
        let (notifier, exit) = ExitWatch::channel();
        let (cleared_tx, cleared) = watch::channel(false);
        {
            let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
            if current.is_some() {
                return None;
            }
            let program = self.spec.program.clone();
            *current = Some(Running {
                pid,
                pgid,
                program,
                identity: Some(process.clone()),
                exit: exit.clone(),
                cleared,
            });
        }
        // Its output goes on into the same file: follow it from here.
        self.log.follow(self.log.len(), cleared_tx.subscribe());
        // Not our child: nobody can `wait` for it, so watch its group instead (cheaply).
        let service_id = self.service_id.clone();
        tokio::spawn(async move {
            while group_alive(pgid) {
                tokio::time::sleep(ADOPTED_POLL).await;
            }
            info!(service = %service_id, pid, "adopted process exited");
            notifier.notify(ExitInfo::unknown());
            cleared_tx.send_replace(true);
        });
        info!(service = %self.service_id, pid, "adopted the process a previous Hestia started");
        Some(exit)
    }

    fn exit_watch(&self) -> Option<ExitWatch> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current.as_ref().map(|running| running.exit.clone())
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(CommandStarter::shutdown(self))
    }
}

impl Drop for CommandStarter {
    fn drop(&mut self) {
        let current = self
            .current
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(running) = current.take().filter(|running| !running.group_cleared()) {
            match killpg(running.pgid, Signal::SIGKILL) {
                Ok(()) => {
                    warn!(service = %self.service_id, pid = running.pid, "starter dropped: killed its process group")
                }
                Err(Errno::ESRCH) => {}
                Err(error) => {
                    warn!(service = %self.service_id, pid = running.pid, %error, "could not kill the process group on drop")
                }
            }
        }
    }
}

/// Env values are left out: they may carry tokens.
impl fmt::Debug for CommandStarter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandStarter")
            .field("service_id", &self.service_id)
            .field("program", &self.spec.program)
            .field("args", &self.spec.args)
            .field("env_keys", &self.spec.env.keys().collect::<Vec<_>>())
            .field("cwd", &self.spec.cwd)
            .field("stop_grace", &self.spec.stop_grace)
            .field("pid", &self.pid())
            .finish()
    }
}

/// Waits for the process, gives its output a moment to drain and publishes the exit; then gives
/// whatever it left in its group `grace` to end, SIGKILLs the rest and marks the group cleared.
async fn reap(
    mut child: Child,
    pgid: Pid,
    (log, log_offset): (ServiceLog, u64),
    notifier: ExitNotifier,
    cleared: watch::Sender<bool>,
    grace: Duration,
    service_id: String,
) {
    let status = child.wait().await;
    // What it wrote is in the file already: its last lines explain the exit.
    let mut stderr_tail = log
        .read_from(log_offset)
        .map_or_else(|_| Vec::new(), |r| r.0);
    stderr_tail.drain(..stderr_tail.len().saturating_sub(STDERR_TAIL_LINES));
    let info = match status {
        Ok(status) => ExitInfo {
            code: status.code(),
            signal: status.signal(),
            stderr_tail,
        },
        Err(error) => {
            warn!(service = %service_id, %error, "could not wait for the process");
            ExitInfo {
                stderr_tail,
                ..ExitInfo::unknown()
            }
        }
    };
    info!(service = %service_id, code = ?info.code, signal = ?info.signal, "process exited");
    notifier.notify(info);

    if tokio::time::timeout(grace, group_gone(pgid)).await.is_err() {
        warn!(service = %service_id, %pgid, "the process exited but left others running in its group; killing them");
        match killpg(pgid, Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(error) => {
                warn!(service = %service_id, %pgid, %error, "could not kill the process group")
            }
        }
        if tokio::time::timeout(KILL_SETTLE, group_gone(pgid))
            .await
            .is_err()
        {
            warn!(service = %service_id, %pgid, "process group still present after SIGKILL");
        }
    }
    cleared.send_replace(true);
}

/// Resolves once no live process is left in the group.
async fn group_gone(pgid: Pid) {
    while group_alive(pgid) {
        tokio::time::sleep(GROUP_POLL).await;
    }
}

/// Whether any process of the group is still running. Zombies do not count: an orphaned
/// grandchild whose new parent never reaps it (a container's PID 1 without init) stays a member.
fn group_alive(pgid: Pid) -> bool {
    if let Err(Errno::ESRCH) = killpg(pgid, None) {
        return false;
    }
    match std::fs::read_dir("/proc") {
        Ok(entries) => entries
            .flatten()
            .any(|entry| is_live_member(&entry.path(), pgid)),
        // Without /proc, trust the signal check.
        Err(_) => true,
    }
}

/// `/proc/<pid>/stat` is `pid (comm) state ppid pgrp ...`; `comm` may contain spaces and `)`.
fn is_live_member(proc_dir: &std::path::Path, pgid: Pid) -> bool {
    let Ok(stat) = std::fs::read_to_string(proc_dir.join("stat")) else {
        return false;
    };
    let Some((_, fields)) = stat.rsplit_once(')') else {
        return false;
    };
    let mut fields = fields.split_whitespace();
    let state = fields.next();
    let pgrp = fields.nth(1).and_then(|pgrp| pgrp.parse::<i32>().ok());
    pgrp == Some(pgid.as_raw()) && !matches!(state, Some("Z" | "X"))
}
