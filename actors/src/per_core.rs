//! Values kept once per core, each on cache lines of its own.
//!
//! The HTTP side runs one single-threaded runtime per core (nginx's workers, Pingora's
//! threads). What every request writes — a service's in-flight count and last use, an idle
//! connection stack — is kept per core, so two cores never write the same cache line: a line
//! written by both moves between their caches on every request (50–100 ns each time here,
//! several times per request). Readers that want the whole (idle shutdown, `/metrics`) add the
//! cores up.

use std::cell::Cell;
use std::sync::OnceLock;

use crossbeam_utils::CachePadded;

thread_local! {
    static CORE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// How many cores serve connections (one runtime each): counted once.
pub fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Marks the calling thread as core `index`'s. Threads never marked (the actors', tests') share
/// one more slot.
pub fn set_core(index: usize) {
    CORE.with(|core| core.set(index));
}

/// The calling thread's slot in a [`PerCore`]: its core, or the one after the last core.
pub fn current() -> usize {
    CORE.with(Cell::get).min(cores())
}

/// One `T` per core, plus one for the threads that are not a core's.
pub struct PerCore<T>(Box<[CachePadded<T>]>);

impl<T: Default> Default for PerCore<T> {
    fn default() -> Self {
        PerCore((0..=cores()).map(|_| CachePadded::default()).collect())
    }
}

impl<T> PerCore<T> {
    /// The calling thread's value, and its slot (for [`PerCore::at`] from another thread).
    pub fn mine(&self) -> (usize, &T) {
        let slot = current();
        (slot, &self.0[slot])
    }

    /// The value in `slot`, as [`PerCore::mine`] gave it.
    pub fn at(&self, slot: usize) -> &T {
        &self.0[slot]
    }

    /// Every core's value (to add them up).
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|padded| &**padded)
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for PerCore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use super::*;

    #[test]
    fn given_two_cores_and_an_unmarked_thread_when_each_counts_then_the_slots_add_up_apart() {
        let counts: PerCore<AtomicUsize> = PerCore::default();
        std::thread::scope(|s| {
            s.spawn(|| {
                set_core(0);
                counts.mine().1.fetch_add(2, SeqCst);
            });
            s.spawn(|| counts.mine().1.fetch_add(5, SeqCst));
        });
        assert_eq!(counts.at(0).load(SeqCst), 2);
        assert_eq!(
            counts.at(cores()).load(SeqCst),
            5,
            "unmarked threads share the last slot"
        );
        assert_eq!(counts.iter().map(|c| c.load(SeqCst)).sum::<usize>(), 7);
    }

    #[test]
    fn a_core_index_past_the_count_falls_into_the_shared_slot() {
        std::thread::spawn(|| {
            set_core(cores() + 7);
            assert_eq!(current(), cores());
        })
        .join()
        .unwrap();
    }
}
