//! Failed attempts per client address (wrong, revoked or expired keys; wrong passwords): a
//! burst of `auth.max_failed_attempts` (default [`BURST`]), then one more every [`REFILL`]
//! (governor's GCRA). An address over its
//! budget is blocked until the budget allows one more, and while blocked every request from it
//! that needs auth is answered 429 with `Retry-After` before any credential is looked at, so a
//! right guess cannot be told from a wrong one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Failed attempts an address may make at once.
pub const BURST: u32 = 10;
/// One more attempt is allowed after this.
pub const REFILL: Duration = Duration::from_secs(6);

/// Blocked addresses are swept when this many are remembered.
const SWEEP_AT: usize = 4096;

/// The failure budget of every client address.
pub struct FailureLimiter {
    budget: DefaultKeyedRateLimiter<IpAddr>,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

impl std::fmt::Debug for FailureLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureLimiter").finish_non_exhaustive()
    }
}

impl Default for FailureLimiter {
    fn default() -> Self {
        FailureLimiter::new(BURST)
    }
}

impl FailureLimiter {
    /// `burst` failed attempts at once (at least 1), then one more every [`REFILL`].
    pub fn new(burst: u32) -> Self {
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(REFILL)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        FailureLimiter {
            budget: RateLimiter::keyed(quota),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// How long `addr` is still blocked, if it is.
    pub fn blocked(&self, addr: IpAddr) -> Option<Duration> {
        let blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        let until = *blocked.get(&addr)?;
        until.checked_duration_since(Instant::now())
    }

    /// Counts a failed attempt by `addr`; returns how long it is now blocked if that was one
    /// too many.
    pub fn failed(&self, addr: IpAddr) -> Option<Duration> {
        let not_until = self.budget.check_key(&addr).err()?;
        let wait = not_until
            .wait_time_from(self.budget.clock().now())
            .max(Duration::from_secs(1));
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        if blocked.len() >= SWEEP_AT {
            let now = Instant::now();
            blocked.retain(|_, until| *until > now);
            self.budget.retain_recent();
        }
        blocked.insert(addr, Instant::now() + wait);
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_burst_of_failures_when_one_more_comes_then_the_address_is_blocked() {
        let limiter = FailureLimiter::default();
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..BURST {
            assert_eq!(limiter.failed(a), None);
        }
        assert!(limiter.blocked(a).is_none());
        let wait = limiter.failed(a).expect("one too many");
        assert!(wait <= REFILL && wait >= Duration::from_secs(1));
        assert!(limiter.blocked(a).is_some());
        assert!(
            limiter.blocked(b).is_none(),
            "other addresses are not affected"
        );
    }
}
