//! Who a process is, beyond its pid: what Hestia records when it spawns a process and checks
//! before it takes charge of one again after a restart.
//!
//! A pid alone is not an identity: after a reboot, or once the process exited and the kernel
//! handed its number out again, the same pid is an unrelated process. Its start time (field 22 of
//! `/proc/<pid>/stat`, clock ticks since boot) within one boot (`/proc/sys/kernel/random/boot_id`)
//! is, and the program Hestia ran for the service says whose it is. A process whose identity does
//! not match is not ours: it is never adopted, so never signalled.

use std::path::Path;

use serde::Serialize;

/// A process as Hestia saw it right after spawning it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessIdentity {
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: when it started, in clock ticks since boot.
    pub start_time: u64,
    /// The boot it started in (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    /// The program Hestia spawned for the service, as configured (a wrapper may `exec` another
    /// binary, so what `/proc` shows later is not compared).
    pub program: String,
}

impl ProcessIdentity {
    /// The identity of the live process `pid`, spawned from `program`; `None` if it is gone.
    pub fn of(pid: u32, program: &str) -> Option<ProcessIdentity> {
        let stat =
            std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
        Some(ProcessIdentity {
            pid,
            start_time: start_time(&stat)?,
            boot_id: boot_id()?,
            program: program.to_owned(),
        })
    }

    /// True when the process now running under this pid is the very one recorded here, and it
    /// runs `program`.
    pub fn is_alive_as(&self, program: &str) -> bool {
        ProcessIdentity::of(self.pid, program).is_some_and(|now| now == *self)
    }
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|id| id.trim().to_owned())
}

/// `/proc/<pid>/stat` is `pid (comm) state ppid ...`; `comm` may hold spaces and `)`, so fields are
/// counted from the last `)`: `state` is field 3, `starttime` field 22.
fn start_time(stat: &str) -> Option<u64> {
    let (_, fields) = stat.rsplit_once(')')?;
    fields.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_counted_from_the_last_parenthesis() {
        let stat = "42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(start_time(stat), Some(987654));
    }

    #[test]
    fn a_process_matches_its_own_identity_only() {
        let me = ProcessIdentity::of(std::process::id(), "/bin/me").expect("own identity");
        assert!(me.is_alive_as("/bin/me"));
        assert!(!me.is_alive_as("/bin/sleep"), "another program is not ours");
        let reused = ProcessIdentity {
            start_time: me.start_time + 1,
            ..me.clone()
        };
        assert!(
            !reused.is_alive_as("/bin/me"),
            "another start time is another process"
        );
        let other_boot = ProcessIdentity {
            boot_id: "another boot".into(),
            ..me
        };
        assert!(
            !other_boot.is_alive_as("/bin/me"),
            "another boot, another process"
        );
    }
}
