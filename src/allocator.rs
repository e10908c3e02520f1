//! Memory given back after a spike. glibc's malloc keeps what large, short-lived buffers
//! (envelopes, collected answers) freed inside its per-thread arenas, so a burst of `/v1/requests`
//! left hundreds of MiB resident for good. `hestia serve` therefore runs with
//! `GLIBC_TUNABLES` asking for blocks above 128 KiB to be mapped on their own (returned to the
//! system when freed) and the heap to be trimmed beyond 128 KiB of free space at its top: when it
//! was started without, it executes itself again, once, with them (same pid, same arguments).
//!
//! Setting `GLIBC_TUNABLES` yourself (even to an empty value) keeps your settings and skips this.
//! Processes Hestia starts do not inherit the setting (`hestia_actors::starters::command`).

use std::os::unix::process::CommandExt;

use hestia_actors::starters::command::{ALLOCATOR_MARKER, GLIBC_TUNABLES};

/// What `serve` runs with.
pub const TUNABLES: &str = "glibc.malloc.mmap_threshold=131072:glibc.malloc.trim_threshold=131072";

/// Executes this program again with [`TUNABLES`], unless `GLIBC_TUNABLES` is already set. Returns
/// only when it did not (already tuned, or the exec failed: then Hestia runs untuned, saying so).
pub fn tune_by_reexec() {
    if std::env::var_os(GLIBC_TUNABLES).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(GLIBC_TUNABLES, TUNABLES)
        .env(ALLOCATOR_MARKER, "1")
        .exec();
    eprintln!(
        "warning: could not restart with GLIBC_TUNABLES={TUNABLES} ({error}); memory freed after \
         a burst of envelopes may stay resident"
    );
}
