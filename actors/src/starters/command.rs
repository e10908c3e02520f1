//! `start: command`: a local process Hestia owns, in its own process group.
//!
//! One process per service: starting again stops the previous one first. Stopping sends SIGTERM to
//! the whole group, waits `stop_grace`, then SIGKILLs it. No orphans: what the process leaves in
//! its group when it exits gets the same grace, then SIGKILL; dropping the starter SIGKILLs the
//! group synchronously. Output goes line by line to tracing; stderr's tail is kept for errors.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{ExitInfo, ExitNotifier, ExitWatch, StartTarget, Started, Starter, StarterError};
use crate::placeholders::expand;
use crate::spec::CommandSpec;

/// How many stderr lines are kept for error messages.
pub const STDERR_TAIL_LINES: usize = 20;
/// Longer output lines are split (bounds memory when a process writes without newlines).
const MAX_LINE_BYTES: u64 = 16 * 1024;
/// After the process exits, how long to wait for its last output before reporting the exit.
const OUTPUT_DRAIN: Duration = Duration::from_millis(100);
/// How often the reaper checks whether the process group is gone.
const GROUP_POLL: Duration = Duration::from_millis(20);
/// How often an adopted process (not our child, so no exit notice) is looked for.
const ADOPTED_POLL: Duration = Duration::from_millis(500);
/// After SIGKILL, how long to wait for the rest of the group before giving up (and logging it).
const KILL_SETTLE: Duration = Duration::from_secs(2);

type StderrTail = Arc<Mutex<VecDeque<String>>>;

/// A local process started from a [`CommandSpec`]. See the module docs for the guarantees.
pub struct CommandStarter {
    service_id: String,
    spec: CommandSpec,
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
    pub fn new(spec: CommandSpec, service_id: &str) -> CommandStarter {
        CommandStarter {
            service_id: service_id.to_owned(),
            spec,
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

        let mut command = Command::new(&program);
        command
            .args(&args)
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(cwd) = &self.spec.cwd {
            command.current_dir(cwd);
        }
        let spawn_error = |source| StarterError::Spawn {
            service_id: self.service_id.clone(),
            program: program.clone(),
            source,
        };
        let mut child = command.spawn().map_err(spawn_error)?;
        let pid = child
            .id()
            .ok_or_else(|| spawn_error(std::io::Error::other("the new process has no pid")))?;
        let raw_pid = i32::try_from(pid)
            .map_err(|_| spawn_error(std::io::Error::other("pid out of range")))?;

        let tail: StderrTail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL_LINES)));
        let stdout = child
            .stdout
            .take()
            .map(|out| tokio::spawn(forward(out, self.service_id.clone(), "stdout", None)));
        let stderr = child.stderr.take().map(|err| {
            tokio::spawn(forward(
                err,
                self.service_id.clone(),
                "stderr",
                Some(tail.clone()),
            ))
        });
        let (notifier, exit) = ExitWatch::channel();
        let (cleared_tx, cleared) = watch::channel(false);
        let pgid = Pid::from_raw(raw_pid);
        let running = Running {
            pid,
            pgid,
            program: program.clone(),
            exit: exit.clone(),
            cleared,
        };
        // No await between spawn and here: a cancelled start can never lose track of the process.
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(running);
        tokio::spawn(reap(
            child,
            pgid,
            Outputs {
                readers: [stdout, stderr],
                stderr_tail: tail,
            },
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

    fn pid(&self) -> Option<u32> {
        self.current()
            .filter(|running| running.exit.has_exited().is_none())
            .map(|running| running.pid)
    }

    fn adopt(&self, pid: u32) -> Option<ExitWatch> {
        let pgid = Pid::from_raw(i32::try_from(pid).ok()?);
        // Still alive, and still the leader of its own group: the process we started, not a
        // stranger who got its pid since.
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
                exit: exit.clone(),
                cleared,
            });
        }
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

/// The output forwarders of one process.
struct Outputs {
    readers: [Option<JoinHandle<()>>; 2],
    stderr_tail: StderrTail,
}

/// Waits for the process, gives its output a moment to drain and publishes the exit; then gives
/// whatever it left in its group `grace` to end, SIGKILLs the rest and marks the group cleared.
async fn reap(
    mut child: Child,
    pgid: Pid,
    outputs: Outputs,
    notifier: ExitNotifier,
    cleared: watch::Sender<bool>,
    grace: Duration,
    service_id: String,
) {
    let status = child.wait().await;
    // A grandchild may keep the pipes open; the readers then go on forwarding on their own.
    let drained = async {
        for reader in outputs.readers.into_iter().flatten() {
            let _ = reader.await;
        }
    };
    let _ = tokio::time::timeout(OUTPUT_DRAIN, drained).await;
    let stderr_tail = outputs
        .stderr_tail
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .cloned()
        .collect();
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

/// Forwards one output stream to tracing, line by line; keeps stderr's last lines in `tail`.
async fn forward<R: AsyncRead + Unpin>(
    stream: R,
    service_id: String,
    name: &'static str,
    tail: Option<StderrTail>,
) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) => {
                debug!(service = %service_id, stream = name, %error, "output stream closed");
                break;
            }
        }
        let text = String::from_utf8_lossy(&buf);
        let line = text.trim_end_matches(['\n', '\r']);
        info!(service = %service_id, stream = name, "{line}");
        if let Some(tail) = &tail {
            let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
            if tail.len() == STDERR_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.to_owned());
        }
    }
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
