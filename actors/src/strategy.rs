//! Per-request choice among a service's upstream instances (the prototype's `instances` and
//! `strategy` keys).
//!
//! A strategy is a pure choice from a snapshot: given the candidates (the service's route first,
//! then its configured instances, each with weight, region and passive health) it returns an
//! index. Built-ins live here; plugins implement the same trait, so none can block an actor.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

/// One upstream a request may go to.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub url: &'a str,
    pub weight: u32,
    pub region: Option<&'a str>,
    /// False while the instance is marked down after a connection failure.
    pub healthy: bool,
}

/// What a strategy may know of the request (never its body: bodies stream).
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    pub path: &'a str,
}

/// A per-request choice of upstream instance.
pub trait Strategy: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn description(&self) -> &str;
    /// The index of the chosen candidate; `None` when none fits.
    fn choose(&self, candidates: &[Candidate<'_>], request: &RequestFacts<'_>) -> Option<usize>;
}

/// The first healthy candidate, in configuration order (the default).
#[derive(Debug, Default)]
pub struct FirstHealthy;

impl Strategy for FirstHealthy {
    fn name(&self) -> &str {
        "first_healthy"
    }
    fn description(&self) -> &str {
        "the first healthy instance in configuration order; the service's own URL first"
    }
    fn choose(&self, candidates: &[Candidate<'_>], _: &RequestFacts<'_>) -> Option<usize> {
        candidates
            .iter()
            .position(|c| c.healthy)
            .or((!candidates.is_empty()).then_some(0))
    }
}

/// Healthy candidates in turn.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Strategy for RoundRobin {
    fn name(&self) -> &str {
        "round_robin"
    }
    fn description(&self) -> &str {
        "healthy instances in turn"
    }
    fn choose(&self, candidates: &[Candidate<'_>], request: &RequestFacts<'_>) -> Option<usize> {
        let healthy: Vec<usize> = (0..candidates.len())
            .filter(|&i| candidates[i].healthy)
            .collect();
        if healthy.is_empty() {
            return FirstHealthy.choose(candidates, request);
        }
        Some(healthy[self.next.fetch_add(1, Ordering::Relaxed) % healthy.len()])
    }
}

/// Healthy candidates in proportion to their `weight`.
#[derive(Debug, Default)]
pub struct Weighted {
    next: AtomicUsize,
}

impl Strategy for Weighted {
    fn name(&self) -> &str {
        "weighted"
    }
    fn description(&self) -> &str {
        "healthy instances in proportion to their weight"
    }
    fn choose(&self, candidates: &[Candidate<'_>], request: &RequestFacts<'_>) -> Option<usize> {
        let total: usize = candidates
            .iter()
            .filter(|c| c.healthy)
            .map(|c| c.weight as usize)
            .sum();
        if total == 0 {
            return FirstHealthy.choose(candidates, request);
        }
        let mut ticket = self.next.fetch_add(1, Ordering::Relaxed) % total;
        for (i, candidate) in candidates.iter().enumerate().filter(|(_, c)| c.healthy) {
            let weight = candidate.weight as usize;
            if ticket < weight {
                return Some(i);
            }
            ticket -= weight;
        }
        None
    }
}

/// What `/v1/strategies` shows of one strategy.
#[derive(Debug, Clone, Serialize)]
pub struct StrategyInfo {
    pub name: String,
    /// `builtin` (plugins come later).
    pub kind: &'static str,
    pub description: String,
    /// Why it could not be loaded, for plugins that failed.
    pub error: Option<String>,
}

/// The strategies Hestia knows, by name.
pub struct Strategies {
    by_name: BTreeMap<String, Arc<dyn Strategy>>,
}

/// The name used when a service names none.
pub const DEFAULT_STRATEGY: &str = "first_healthy";

impl Strategies {
    pub fn builtin() -> Strategies {
        let all: [Arc<dyn Strategy>; 3] = [
            Arc::new(FirstHealthy),
            Arc::new(RoundRobin::default()),
            Arc::new(Weighted::default()),
        ];
        Strategies {
            by_name: all.into_iter().map(|s| (s.name().to_owned(), s)).collect(),
        }
    }

    /// A fresh instance of the named strategy (each service keeps its own turn counters).
    pub fn instantiate(&self, name: Option<&str>) -> Option<Arc<dyn Strategy>> {
        let name = name.unwrap_or(DEFAULT_STRATEGY);
        self.by_name
            .contains_key(name)
            .then(|| -> Arc<dyn Strategy> {
                match name {
                    "round_robin" => Arc::new(RoundRobin::default()),
                    "weighted" => Arc::new(Weighted::default()),
                    _ => Arc::new(FirstHealthy),
                }
            })
    }

    pub fn list(&self) -> Vec<StrategyInfo> {
        self.by_name
            .values()
            .map(|s| StrategyInfo {
                name: s.name().to_owned(),
                kind: "builtin",
                description: s.description().to_owned(),
                error: None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(healthy: &[bool], weights: &[u32]) -> Vec<Candidate<'static>> {
        healthy
            .iter()
            .zip(weights)
            .map(|(&healthy, &weight)| Candidate {
                url: "http://x",
                weight,
                region: None,
                healthy,
            })
            .collect()
    }

    const GET: RequestFacts<'static> = RequestFacts {
        method: "GET",
        path: "/",
    };

    #[test]
    fn first_healthy_skips_instances_marked_down() {
        let c = candidates(&[false, true, true], &[1, 1, 1]);
        assert_eq!(FirstHealthy.choose(&c, &GET), Some(1));
        let all_down = candidates(&[false, false], &[1, 1]);
        assert_eq!(
            FirstHealthy.choose(&all_down, &GET),
            Some(0),
            "all down: try the first anyway"
        );
    }

    #[test]
    fn round_robin_takes_healthy_instances_in_turn() {
        let strategy = RoundRobin::default();
        let c = candidates(&[true, false, true], &[1, 1, 1]);
        let picks: Vec<_> = (0..4).filter_map(|_| strategy.choose(&c, &GET)).collect();
        assert_eq!(picks, [0, 2, 0, 2]);
    }

    #[test]
    fn weighted_follows_the_weights() {
        let strategy = Weighted::default();
        let c = candidates(&[true, true], &[3, 1]);
        let picks: Vec<_> = (0..8).filter_map(|_| strategy.choose(&c, &GET)).collect();
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 6);
        assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 2);
    }

    #[test]
    fn unknown_names_are_not_invented() {
        let strategies = Strategies::builtin();
        assert!(strategies.instantiate(Some("nope")).is_none());
        assert_eq!(
            strategies
                .instantiate(None)
                .map(|s| s.name().to_owned())
                .as_deref(),
            Some("first_healthy")
        );
        let names: Vec<_> = strategies.list().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["first_healthy", "round_robin", "weighted"]);
    }
}
