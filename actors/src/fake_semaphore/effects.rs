//! What a successful task does on this host: launch a process under a key (a `hestia sim` backend,
//! say) or kill the one launched under it, so readiness after a task is real.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

use super::options::Effect;
use super::state::FakeState;

/// How long a killed process gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(3);

/// Applies a side effect; `Err` carries an output line describing the failure.
pub(super) async fn apply(
    state: &FakeState,
    effect: &Effect,
    environment: &Value,
) -> Result<(), String> {
    let mut children = state.children.lock().await;
    match effect {
        Effect::Launch { key, program, args } => {
            if let Some(child) = children.get_mut(key)
                && matches!(child.try_wait(), Ok(None))
            {
                return Ok(());
            }
            let program = fill(program, environment);
            let args: Vec<String> = args.iter().map(|a| fill(a, environment)).collect();
            let child = Command::new(&program)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|error| format!("fatal: could not launch `{program}`: {error}"))?;
            children.insert(key.clone(), child);
            Ok(())
        }
        Effect::Kill { key } => {
            if let Some(child) = children.remove(key) {
                terminate(child).await;
            }
            Ok(())
        }
    }
}

/// `{name}` → the environment's `name` (strings as they are, other values as JSON).
fn fill(template: &str, environment: &Value) -> String {
    let mut text = template.to_owned();
    if let Some(map) = environment.as_object() {
        for (key, value) in map {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            text = text.replace(&format!("{{{key}}}"), &value);
        }
    }
    text
}

/// SIGTERM, then SIGKILL after [`KILL_GRACE`]; waits for the process to be reaped.
async fn terminate(mut child: Child) {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

pub(super) async fn kill_all(state: &FakeState) {
    let children: Vec<Child> = state
        .children
        .lock()
        .await
        .drain()
        .map(|(_, c)| c)
        .collect();
    for child in children {
        terminate(child).await;
    }
}
