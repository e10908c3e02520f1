//! Memory given back after a spike. The `hestia` binary allocates with jemalloc (its global
//! allocator, set in `main.rs`): glibc's malloc kept what a burst of 10,000 connections freed,
//! fragmented across its arenas, resident for good. jemalloc returns freed pages to the system on
//! its own, from a background thread, once they have been unused for a second.
//!
//! Both allocators read their settings from the environment before `main` runs, so `hestia serve`
//! sets them for itself: when it was started without, it executes itself again, once, with them
//! (same pid, same arguments). [`JEMALLOC_SETTINGS`] asks for the background thread and the decay
//! times; [`TUNABLES`] still tunes glibc's malloc, which the C parts (SQLite) use: blocks above
//! 128 KiB mapped on their own, the heap trimmed beyond 128 KiB of free space at its top.
//!
//! Setting either variable yourself (even to an empty value) keeps your settings and skips this.
//! Processes Hestia starts inherit neither (`hestia_actors::starters::command`).

use std::os::unix::process::CommandExt;

use hestia_actors::starters::command::{ALLOCATOR_MARKER, GLIBC_TUNABLES, JEMALLOC_CONF};

/// What `serve` runs with, for glibc's malloc.
pub const TUNABLES: &str = "glibc.malloc.mmap_threshold=131072:glibc.malloc.trim_threshold=131072:glibc.malloc.arena_max=1";

/// What `serve` runs with, for jemalloc: one background thread purges freed pages
/// (`MADV_DONTNEED`) about a second after they were last used, instead of the allocating threads
/// doing it (or not, when they go idle after a burst); one arena per CPU instead of four (0.7 MiB
/// less resident when idle, and a thread allocates from the arena of the CPU it runs on); a
/// thread's cache is trimmed every 1 MiB allocated instead of every 64 KiB (hyper takes a new
/// 8 KiB read buffer per request: the trimming was 2.6 % of a proxied request's instructions).
pub const JEMALLOC_SETTINGS: &str = "background_thread:true,max_background_threads:1,\
                                     percpu_arena:percpu,dirty_decay_ms:1000,muzzy_decay_ms:0,\
                                     tcache_gc_incr_bytes:1048576";

/// Executes this program again with [`JEMALLOC_SETTINGS`] and [`TUNABLES`], unless either variable
/// is already set. Returns only when it did not (already set, or the exec failed: then Hestia
/// runs with the allocators' defaults, saying so).
pub fn tune_by_reexec() {
    if std::env::var_os(GLIBC_TUNABLES).is_some() || std::env::var_os(JEMALLOC_CONF).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(JEMALLOC_CONF, JEMALLOC_SETTINGS)
        .env(GLIBC_TUNABLES, TUNABLES)
        .env(ALLOCATOR_MARKER, "1")
        .exec();
    eprintln!(
        "warning: could not restart with {JEMALLOC_CONF}={JEMALLOC_SETTINGS} and \
         GLIBC_TUNABLES={TUNABLES} ({error}); memory freed after a burst may stay resident"
    );
}
