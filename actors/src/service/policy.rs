//! The start plan: which targets to try, in which order, and what to do after a failure (FR-010).
//!
//! Each target (the configured machine, then the next machines by routing rule, then
//! `fallback_url`) gets one attempt plus `retry_count` retries with a growing delay. When a
//! target is exhausted the next one is the fallback; when none is left, the start has failed.
//! Pure: no I/O, no clock, no logging — the service actor acts on the answers.

use std::time::Duration;

use crate::spec::{MachineSpec, StartPolicy};

/// Where one start attempt goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The machine the service runs on, if any.
    pub machine: Option<MachineSpec>,
    /// The service's base URL on that machine, placeholders expanded.
    pub base_url: String,
    /// The routing rule that chose the machine, if one did.
    pub rule: Option<String>,
    /// The prototype's `fallback_url`: an already-running upstream; nothing is started there.
    pub is_fallback_url: bool,
}

impl Target {
    pub fn machine_id(&self) -> Option<&str> {
        self.machine.as_ref().map(|m| m.id.as_str())
    }
}

/// Where a start stands: which target, and how many attempts have run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    /// Index into `Plan::targets`.
    pub target: usize,
    /// Retries already made on this target (0 for the first attempt).
    pub retry: u32,
    /// Attempts made in this start, over all targets (1-based once running).
    pub attempts: u32,
}

/// What to do after an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Try the same target again after `delay`.
    Retry { delay: Duration, cursor: Cursor },
    /// Move on to the next target at once.
    Fallback { cursor: Cursor },
    /// Nothing is left to try.
    GiveUp,
}

/// The targets of one service and the policy that walks them.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub targets: Vec<Target>,
    pub policy: StartPolicy,
}

impl Plan {
    /// The cursor of a fresh start: first target, first attempt.
    pub fn begin(&self) -> Cursor {
        Cursor {
            target: 0,
            retry: 0,
            attempts: 1,
        }
    }

    pub fn target(&self, cursor: Cursor) -> &Target {
        &self.targets[cursor.target.min(self.targets.len() - 1)]
    }

    /// Decides what follows a failed attempt at `cursor`.
    pub fn after_failure(&self, cursor: Cursor) -> Next {
        let on_fallback_url = self.target(cursor).is_fallback_url;
        if cursor.retry < self.policy.retry_count && !on_fallback_url {
            let cursor = Cursor {
                retry: cursor.retry + 1,
                attempts: cursor.attempts + 1,
                ..cursor
            };
            return Next::Retry {
                delay: self.retry_delay(cursor.retry),
                cursor,
            };
        }
        if cursor.target + 1 < self.targets.len() {
            let cursor = Cursor {
                target: cursor.target + 1,
                retry: 0,
                attempts: cursor.attempts + 1,
            };
            return Next::Fallback { cursor };
        }
        Next::GiveUp
    }

    /// The delay before retry number `retry` (1-based): `retry_delay * backoff^(retry-1)`, capped.
    fn retry_delay(&self, retry: u32) -> Duration {
        let p = &self.policy;
        let factor = p
            .backoff_factor
            .max(1.0)
            .powi(retry.saturating_sub(1) as i32);
        let delay = p.retry_delay.as_secs_f64() * factor;
        Duration::from_secs_f64(delay.min(p.max_retry_delay.as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str, is_fallback_url: bool) -> Target {
        Target {
            machine: None,
            base_url: url.into(),
            rule: None,
            is_fallback_url,
        }
    }

    fn plan(retry_count: u32, backoff_factor: f64, targets: Vec<Target>) -> Plan {
        let policy = StartPolicy {
            retry_count,
            retry_delay: Duration::from_millis(100),
            backoff_factor,
            max_retry_delay: Duration::from_millis(350),
            ..StartPolicy::default()
        };
        Plan { targets, policy }
    }

    #[test]
    fn retries_come_first_then_the_fallback_then_giving_up() {
        let plan = plan(
            2,
            1.0,
            vec![target("http://a", false), target("http://b", true)],
        );
        let mut cursor = plan.begin();
        let mut steps = Vec::new();
        loop {
            match plan.after_failure(cursor) {
                Next::Retry { cursor: c, .. } => {
                    steps.push(format!("retry {}", plan.target(c).base_url));
                    cursor = c;
                }
                Next::Fallback { cursor: c } => {
                    steps.push(format!("fallback {}", plan.target(c).base_url));
                    cursor = c;
                }
                Next::GiveUp => break,
            }
        }
        assert_eq!(
            steps,
            ["retry http://a", "retry http://a", "fallback http://b"]
        );
        assert_eq!(cursor.attempts, 4);
    }

    #[test]
    fn retry_delays_grow_by_the_backoff_factor_up_to_the_cap() {
        let plan = plan(4, 2.0, vec![target("http://a", false)]);
        let mut cursor = plan.begin();
        let mut delays = Vec::new();
        while let Next::Retry { delay, cursor: c } = plan.after_failure(cursor) {
            delays.push(delay.as_millis());
            cursor = c;
        }
        assert_eq!(delays, [100, 200, 350, 350]);
    }

    #[test]
    fn without_retries_or_fallback_the_first_failure_is_final() {
        let plan = plan(0, 1.0, vec![target("http://a", false)]);
        assert_eq!(plan.after_failure(plan.begin()), Next::GiveUp);
    }
}
