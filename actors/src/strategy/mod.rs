//! Per-request choice among a service's upstream instances (the prototype's `instances`,
//! `strategy` and `routing` keys), by a built-in or a Rhai plugin.
//!
//! A strategy is a pure choice from a snapshot: given the candidates (the service's route first,
//! then its instances, each with weight, region, machine, health and requests in flight) and the
//! request's context, it names an index or has no opinion. A service's [`Selector`] asks its
//! strategy, falls back to a built-in when it has no opinion or fails, logs the decision at debug
//! and counts it. Nothing here does I/O, so no strategy can block an actor or fail a request.

pub mod builtin;
pub mod rhai;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde::Serialize;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::spec::ServiceSpec;
use builtin::{
    BUILTINS, FirstHealthy, LeastPending, ModelRouter, PreferAwake, RoundRobin, Weighted,
};

/// The name used when a service names none (and the default fallback).
pub const DEFAULT_STRATEGY: &str = "first_healthy";

/// One upstream a request may go to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Candidate<'a> {
    pub url: &'a str,
    pub weight: u32,
    pub region: Option<&'a str>,
    /// The configured machine it runs on, if any.
    pub machine: Option<&'a str>,
    /// False while the instance is marked down after a failure (until a probe finds it back).
    pub healthy: bool,
    /// Requests this Hestia has in flight to it right now.
    pub in_flight: usize,
    /// True unless its machine can sleep and no ready service is known on it.
    pub awake: bool,
}

/// What a strategy may know of the request. `body` holds the top-level fields of a JSON body,
/// read from a bounded prefix, and only for strategies that ask for it ([`Strategy::needs_body`]).
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    pub service: &'a str,
    pub method: &'a str,
    /// The path after `/services/{id}` (percent-encoded, without the query).
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub client: Option<SocketAddr>,
    pub body: Option<&'a Map<String, Value>>,
}

impl<'a> RequestContext<'a> {
    /// A context with no query, client or body.
    pub fn new(
        service: &'a str,
        method: &'a str,
        path: &'a str,
        headers: &'a HeaderMap,
    ) -> RequestContext<'a> {
        RequestContext {
            service,
            method,
            path,
            query: None,
            headers,
            client: None,
            body: None,
        }
    }
}

/// A strategy's answer: the candidate's index and why (for the debug log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub index: usize,
    pub reason: Cow<'static, str>,
}

impl Choice {
    pub fn new(index: usize, reason: &'static str) -> Choice {
        Choice {
            index,
            reason: Cow::Borrowed(reason),
        }
    }
}

/// Why a strategy could not decide (a plugin that errors, loops or answers nonsense). The
/// request still goes out: the fallback decides.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum StrategyError {
    #[error("strategy `{name}` is not loaded: {reason}")]
    NotLoaded { name: String, reason: String },
    #[error("strategy `{name}` failed: {message}")]
    Failed { name: String, message: String },
    #[error("strategy `{name}` returned {answer}, not an index below {candidates} or ()")]
    Nonsense {
        name: String,
        answer: String,
        candidates: usize,
    },
}

/// Why a service's strategy configuration cannot be used.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum StrategySetupError {
    #[error("no strategy named `{name}` (known: {})", known.join(", "))]
    Unknown { name: String, known: Vec<String> },
    #[error("strategy `model_router` needs a `routing: {{model_key, by_model}}` mapping")]
    ModelRouterWithoutRouting,
    #[error("the fallback strategy must be a built-in other than `model_router`, not `{name}`")]
    BadFallback { name: String },
}

/// A per-request choice of upstream instance.
pub trait Strategy: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// True when the strategy reads the JSON body's fields (the proxy then reads a prefix).
    fn needs_body(&self) -> bool {
        false
    }
    /// The chosen candidate; `Ok(None)` for no opinion (the fallback decides).
    fn choose(
        &self,
        candidates: &[Candidate<'_>],
        request: &RequestContext<'_>,
    ) -> Result<Option<Choice>, StrategyError>;
}

/// How a decision went, as counted per strategy and labelled in `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Chosen,
    NoOpinion,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Chosen => "chosen",
            Outcome::NoOpinion => "no_opinion",
            Outcome::Error => "error",
        }
    }
}

/// Decision counters of one strategy, over every service using it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decisions {
    pub chosen: u64,
    pub no_opinion: u64,
    pub errors: u64,
}

/// What Hestia knows of one strategy at run time: its counters and its last error.
#[derive(Debug, Default)]
pub struct StrategyStats {
    chosen: AtomicU64,
    no_opinion: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<LastError>>,
}

/// The most recent failure of a strategy (load or run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    pub message: String,
    pub at: DateTime<Utc>,
}

impl StrategyStats {
    fn count(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Chosen => &self.chosen,
            Outcome::NoOpinion => &self.no_opinion,
            Outcome::Error => &self.errors,
        };
        counter.fetch_add(1, Relaxed);
    }

    pub fn decisions(&self) -> Decisions {
        Decisions {
            chosen: self.chosen.load(Relaxed),
            no_opinion: self.no_opinion.load(Relaxed),
            errors: self.errors.load(Relaxed),
        }
    }

    pub fn set_last_error(&self, message: String) {
        let mut last = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *last = Some(LastError {
            message,
            at: Utc::now(),
        });
    }

    pub fn last_error(&self) -> Option<LastError> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A strategy as one service uses it: the shared stats, and its Prometheus counters by outcome,
/// made on the first decision (the recorder may be installed after the engine starts).
struct Tallied {
    strategy: Arc<dyn Strategy>,
    stats: Arc<StrategyStats>,
    counters: OnceLock<[metrics::Counter; 3]>,
}

impl Tallied {
    fn new(strategy: Arc<dyn Strategy>, stats: Arc<StrategyStats>) -> Tallied {
        Tallied {
            strategy,
            stats,
            counters: OnceLock::new(),
        }
    }

    fn count(&self, service: &str, outcome: Outcome) {
        self.stats.count(outcome);
        let counters = self.counters.get_or_init(|| {
            [Outcome::Chosen, Outcome::NoOpinion, Outcome::Error].map(|outcome| {
                metrics::counter!(
                    crate::metrics::STRATEGY_DECISIONS_TOTAL,
                    crate::metrics::SERVICE => service.to_owned(),
                    "strategy" => self.strategy.name().to_owned(),
                    "outcome" => outcome.as_str(),
                )
            })
        });
        counters[outcome as usize].increment(1);
    }
}

/// One service's way of choosing: its strategy, then its fallback (a built-in) when the strategy
/// has no opinion or fails. Always answers an index within the candidates.
pub struct Selector {
    service: Arc<str>,
    primary: Tallied,
    fallback: Tallied,
}

impl std::fmt::Debug for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Selector")
            .field("service", &self.service)
            .field("strategy", &self.primary.strategy.name())
            .field("fallback", &self.fallback.strategy.name())
            .finish()
    }
}

impl Selector {
    pub fn strategy_name(&self) -> &str {
        self.primary.strategy.name()
    }

    pub fn fallback_name(&self) -> &str {
        self.fallback.strategy.name()
    }

    /// True when the request's JSON body fields should be read for this service's strategy.
    pub fn needs_body(&self) -> bool {
        self.primary.strategy.needs_body() || self.fallback.strategy.needs_body()
    }

    /// The index of the candidate this request goes to. `candidates` must not be empty.
    pub fn select(&self, candidates: &[Candidate<'_>], request: &RequestContext<'_>) -> usize {
        let name = self.primary.strategy.name();
        let failure = match self.primary.strategy.choose(candidates, request) {
            Ok(Some(choice)) if choice.index < candidates.len() => {
                self.primary.count(&self.service, Outcome::Chosen);
                log_decision(request, name, candidates, &choice);
                return choice.index;
            }
            Ok(Some(choice)) => StrategyError::Nonsense {
                name: name.to_owned(),
                answer: choice.index.to_string(),
                candidates: candidates.len(),
            },
            Ok(None) => {
                self.primary.count(&self.service, Outcome::NoOpinion);
                return self.fall_back(candidates, request, "no opinion");
            }
            Err(error) => error,
        };
        self.primary.count(&self.service, Outcome::Error);
        self.primary.stats.set_last_error(failure.to_string());
        tracing::warn!(service = %self.service, strategy = name, error = %failure,
            "strategy failed; the fallback decides");
        self.fall_back(candidates, request, "strategy failed")
    }

    fn fall_back(
        &self,
        candidates: &[Candidate<'_>],
        request: &RequestContext<'_>,
        why: &'static str,
    ) -> usize {
        let name = self.fallback.strategy.name();
        let choice = self
            .fallback
            .strategy
            .choose(candidates, request)
            .ok()
            .flatten()
            .filter(|choice| choice.index < candidates.len())
            .unwrap_or_else(|| Choice::new(0, "the service's own URL"));
        self.fallback.count(&self.service, Outcome::Chosen);
        tracing::debug!(
            service = request.service,
            strategy = name,
            because = why,
            "fallback decides"
        );
        log_decision(request, name, candidates, &choice);
        choice.index
    }
}

fn log_decision(
    request: &RequestContext<'_>,
    strategy: &str,
    candidates: &[Candidate<'_>],
    choice: &Choice,
) {
    tracing::debug!(
        service = request.service,
        strategy,
        chosen = choice.index,
        url = candidates[choice.index].url,
        reason = %choice.reason,
        "strategy decision"
    );
}

/// What `/v1/strategies` shows of one strategy.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StrategyInfo {
    pub name: String,
    /// `builtin` or `plugin`.
    pub kind: &'static str,
    /// `builtin`, or the plugin's file.
    pub source: String,
    /// `loaded` or `failed` (a plugin that does not compile; requests use the fallback).
    pub status: &'static str,
    pub description: String,
    /// Why it could not be loaded, for plugins that failed.
    pub error: Option<String>,
    /// The most recent failure, loading or deciding.
    pub last_error: Option<LastError>,
    pub decisions: Decisions,
}

/// The strategies Hestia knows, by name, with their run-time stats: the built-ins, and the
/// plugins of the strategies directory when there is one.
pub struct Strategies {
    stats: RwLock<BTreeMap<String, Arc<StrategyStats>>>,
    plugins: Option<Arc<rhai::PluginHost>>,
}

impl Strategies {
    pub fn builtin() -> Strategies {
        Strategies::with_plugins(None)
    }

    pub fn with_plugins(plugins: Option<Arc<rhai::PluginHost>>) -> Strategies {
        let stats = BUILTINS
            .iter()
            .map(|(name, _)| ((*name).to_owned(), Arc::default()))
            .collect();
        Strategies {
            stats: RwLock::new(stats),
            plugins,
        }
    }

    pub fn plugins(&self) -> Option<&Arc<rhai::PluginHost>> {
        self.plugins.as_ref()
    }

    /// Every name a service may use.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = BUILTINS.iter().map(|(n, _)| (*n).to_owned()).collect();
        if let Some(plugins) = &self.plugins {
            names.extend(plugins.slots().iter().map(|slot| slot.name.clone()));
        }
        names
    }

    fn stats_of(&self, name: &str) -> Arc<StrategyStats> {
        if let Some(slot) = self.plugins.as_ref().and_then(|p| p.get(name)) {
            return slot.stats.clone();
        }
        let known = self
            .stats
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned();
        known.unwrap_or_else(|| {
            self.stats
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(name.to_owned())
                .or_default()
                .clone()
        })
    }

    /// The selector of `service`: its strategy (fresh turn counters) and its fallback.
    pub fn selector(&self, service: &ServiceSpec) -> Result<Selector, StrategySetupError> {
        let name = service.strategy.as_deref().unwrap_or(DEFAULT_STRATEGY);
        let fallback_name = service
            .fallback_strategy
            .as_deref()
            .unwrap_or(DEFAULT_STRATEGY);
        let fallback = match builtin_instance(fallback_name, service) {
            Some(fallback) if fallback_name != "model_router" => fallback?,
            _ => {
                return Err(StrategySetupError::BadFallback {
                    name: fallback_name.to_owned(),
                });
            }
        };
        let plugin = || self.plugins.as_ref().and_then(|p| p.strategy(name));
        let primary = match builtin_instance(name, service) {
            Some(primary) => primary?,
            None => plugin().ok_or_else(|| StrategySetupError::Unknown {
                name: name.to_owned(),
                known: self.names(),
            })?,
        };
        Ok(Selector {
            service: Arc::from(service.id.as_str()),
            primary: Tallied::new(primary, self.stats_of(name)),
            fallback: Tallied::new(fallback, self.stats_of(fallback_name)),
        })
    }

    pub fn list(&self) -> Vec<StrategyInfo> {
        let plugins = self.plugins.iter().flat_map(|p| p.slots()).map(|slot| {
            let status = slot.status();
            StrategyInfo {
                name: slot.name.clone(),
                kind: "plugin",
                source: slot.path.display().to_string(),
                status: if status.is_ok() { "loaded" } else { "failed" },
                description: "a Rhai plugin: fn select(ctx, candidates)".to_owned(),
                error: status.err(),
                last_error: slot.stats.last_error(),
                decisions: slot.stats.decisions(),
            }
        });
        let builtins = BUILTINS.iter().map(|(name, description)| {
            let stats = self.stats_of(name);
            StrategyInfo {
                name: (*name).to_owned(),
                kind: "builtin",
                source: "builtin".to_owned(),
                status: "loaded",
                description: (*description).to_owned(),
                error: None,
                last_error: stats.last_error(),
                decisions: stats.decisions(),
            }
        });
        builtins.chain(plugins).collect()
    }
}

/// A fresh instance of the built-in `name`; `None` when no built-in has that name.
fn builtin_instance(
    name: &str,
    service: &ServiceSpec,
) -> Option<Result<Arc<dyn Strategy>, StrategySetupError>> {
    let strategy: Arc<dyn Strategy> = match name {
        "first_healthy" => Arc::new(FirstHealthy),
        "round_robin" => Arc::new(RoundRobin::default()),
        "weighted" => Arc::new(Weighted::default()),
        "least_pending" => Arc::new(LeastPending),
        "prefer_awake" => Arc::new(PreferAwake),
        "model_router" => match &service.model_routing {
            Some(routing) => Arc::new(ModelRouter::new(&routing.model_key, &routing.by_model)),
            None => return Some(Err(StrategySetupError::ModelRouterWithoutRouting)),
        },
        _ => return None,
    };
    Some(Ok(strategy))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Broken;

    impl Strategy for Broken {
        fn name(&self) -> &str {
            "broken"
        }
        fn choose(
            &self,
            candidates: &[Candidate<'_>],
            _: &RequestContext<'_>,
        ) -> Result<Option<Choice>, StrategyError> {
            Ok(Some(Choice::new(candidates.len() + 5, "out of range")))
        }
    }

    #[test]
    fn a_nonsense_answer_falls_back_and_is_counted_as_an_error() {
        let stats = Arc::new(StrategyStats::default());
        let selector = Selector {
            service: Arc::from("svc"),
            primary: Tallied::new(Arc::new(Broken), stats.clone()),
            fallback: Tallied::new(Arc::new(FirstHealthy), Arc::default()),
        };
        let candidates = [
            Candidate {
                url: "http://a",
                healthy: false,
                ..Candidate::default()
            },
            Candidate {
                url: "http://b",
                healthy: true,
                ..Candidate::default()
            },
        ];
        let headers = HeaderMap::new();
        let request = RequestContext::new("svc", "GET", "/", &headers);
        assert_eq!(selector.select(&candidates, &request), 1);
        assert_eq!(stats.decisions().errors, 1);
        let last = stats.last_error().expect("a last error");
        assert!(last.message.contains("returned 7"), "{}", last.message);
    }

    #[test]
    fn unknown_names_are_not_invented() {
        let strategies = Strategies::builtin();
        let names = strategies.names();
        assert!(names.contains(&"least_pending".to_owned()));
        assert!(!names.contains(&"nope".to_owned()));
        let listed: Vec<_> = strategies.list().into_iter().map(|s| s.name).collect();
        assert_eq!(
            listed,
            [
                "first_healthy",
                "round_robin",
                "weighted",
                "least_pending",
                "model_router",
                "prefer_awake"
            ]
        );
    }
}
