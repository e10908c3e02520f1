//! The built-in strategies: `first_healthy`, `round_robin`, `weighted`, `least_pending`,
//! `model_router` and `prefer_awake`. Each is a pure choice over the candidates it is given
//! (turn counters aside); none ever fails, so any of them can be a service's fallback.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Candidate, Choice, RequestContext, Strategy, StrategyError};

/// Name and description of every built-in, in the order `/v1/strategies` lists them.
pub const BUILTINS: [(&str, &str); 6] = [
    (
        "first_healthy",
        "the first healthy instance in configuration order; the service's own URL first",
    ),
    ("round_robin", "healthy instances in turn"),
    (
        "weighted",
        "healthy instances in proportion to their weight",
    ),
    (
        "least_pending",
        "the healthy instance with the fewest requests in flight",
    ),
    (
        "model_router",
        "the instance mapped to the JSON body's model (`routing.by_model`); others go to the fallback strategy",
    ),
    (
        "prefer_awake",
        "a healthy instance whose machine is awake before one that must be woken or started",
    ),
];

/// True when `name` is a built-in (plugins may not take these names).
pub fn is_builtin(name: &str) -> bool {
    BUILTINS.iter().any(|(builtin, _)| *builtin == name)
}

/// The first healthy candidate, in configuration order (the default); the first of all when
/// every one is down (the service's own URL: its start policy takes over from there).
#[derive(Debug, Default)]
pub struct FirstHealthy;

impl FirstHealthy {
    fn pick(candidates: &[Candidate<'_>]) -> Option<Choice> {
        match candidates.iter().position(|c| c.healthy) {
            Some(index) => Some(Choice::new(index, "first healthy")),
            None => (!candidates.is_empty()).then(|| Choice::new(0, "every instance is down")),
        }
    }
}

impl Strategy for FirstHealthy {
    fn name(&self) -> &str {
        "first_healthy"
    }
    fn choose(
        &self,
        candidates: &[Candidate<'_>],
        _: &RequestContext<'_>,
    ) -> Result<Option<Choice>, StrategyError> {
        Ok(Self::pick(candidates))
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
    fn choose(
        &self,
        candidates: &[Candidate<'_>],
        _: &RequestContext<'_>,
    ) -> Result<Option<Choice>, StrategyError> {
        let healthy = candidates.iter().filter(|c| c.healthy).count();
        if healthy == 0 {
            return Ok(FirstHealthy::pick(candidates));
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % healthy;
        let index = healthy_indices(candidates).nth(turn);
        Ok(index.map(|i| Choice::new(i, "next in turn")))
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
    fn choose(
        &self,
        candidates: &[Candidate<'_>],
        _: &RequestContext<'_>,
    ) -> Result<Option<Choice>, StrategyError> {
        let total: usize = candidates
            .iter()
            .filter(|c| c.healthy)
            .map(|c| c.weight as usize)
            .sum();
        if total == 0 {
            return Ok(FirstHealthy::pick(candidates));
        }
        let mut ticket = self.next.fetch_add(1, Ordering::Relaxed) % total;
        for i in healthy_indices(candidates) {
            let weight = candidates[i].weight as usize;
            if ticket < weight {
                return Ok(Some(Choice::new(i, "by weight")));
            }
            ticket -= weight;
        }
        Ok(None)
    }
}

/// The healthy candidate with the fewest requests in flight (the first of equals).
#[derive(Debug, Default)]
pub struct LeastPending;

impl Strategy for LeastPending {
    fn name(&self) -> &str {
        "least_pending"
    }
    fn choose(
        &self,
        candidates: &[Candidate<'_>],
        _: &RequestContext<'_>,
    ) -> Result<Option<Choice>, StrategyError> {
        let least = healthy_indices(candidates).min_by_key(|&i| candidates[i].in_flight);
        match least {
            Some(i) => Ok(Some(Choice::new(i, "fewest in flight"))),
            None => Ok(FirstHealthy::pick(candidates)),
        }
    }
}

/// The prototype's `routing: {model_key, by_model}`: the JSON body's `model_key` field names a
/// model, `by_model` maps it to an instance URL. No body, no such key or an unmapped model is no
/// opinion: the service's fallback strategy decides.
#[derive(Debug)]
pub struct ModelRouter {
    model_key: String,
    /// Model → URL, without trailing slashes.
    by_model: BTreeMap<String, String>,
}

impl ModelRouter {
    pub fn new(model_key: &str, by_model: &BTreeMap<String, String>) -> ModelRouter {
        ModelRouter {
            model_key: model_key.to_owned(),
            by_model: by_model
                .iter()
                .map(|(model, url)| (model.clone(), url.trim_end_matches('/').to_owned()))
                .collect(),
        }
    }
}

impl Strategy for ModelRouter {
    fn name(&self) -> &str {
        "model_router"
    }
    fn needs_body(&self) -> bool {
        true
    }
    fn choose(
        &self,
        candidates: &[Candidate<'_>],
        request: &RequestContext<'_>,
    ) -> Result<Option<Choice>, StrategyError> {
        let Some(model) = request
            .body
            .and_then(|body| body.get(&self.model_key))
            .and_then(|value| value.as_str())
        else {
            return Ok(None);
        };
        let Some(url) = self.by_model.get(model) else {
            return Ok(None);
        };
        let index = candidates
            .iter()
            .position(|c| c.url.trim_end_matches('/') == url);
        Ok(index.map(|i| Choice {
            index: i,
            reason: Cow::Owned(format!("{} {model}", self.model_key)),
        }))
    }
}

/// A healthy candidate whose machine is awake (and whose service is ready) before one that would
/// have to be woken; among equals, configuration order.
#[derive(Debug, Default)]
pub struct PreferAwake;

impl Strategy for PreferAwake {
    fn name(&self) -> &str {
        "prefer_awake"
    }
    fn choose(
        &self,
        candidates: &[Candidate<'_>],
        _: &RequestContext<'_>,
    ) -> Result<Option<Choice>, StrategyError> {
        if let Some(i) = healthy_indices(candidates).find(|&i| candidates[i].awake) {
            return Ok(Some(Choice::new(i, "awake")));
        }
        match healthy_indices(candidates).next() {
            Some(i) => Ok(Some(Choice::new(i, "none awake: first healthy"))),
            None => Ok(FirstHealthy::pick(candidates)),
        }
    }
}

fn healthy_indices<'a>(candidates: &'a [Candidate<'_>]) -> impl Iterator<Item = usize> + 'a {
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.healthy)
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use serde_json::{Map, Value, json};

    fn candidates(healthy: &[bool], weights: &[u32]) -> Vec<Candidate<'static>> {
        const URLS: [&str; 4] = ["http://a", "http://b", "http://c", "http://d"];
        healthy
            .iter()
            .zip(weights)
            .enumerate()
            .map(|(i, (&healthy, &weight))| Candidate {
                url: URLS[i],
                weight,
                healthy,
                ..Candidate::default()
            })
            .collect()
    }

    fn pick(
        strategy: &dyn Strategy,
        c: &[Candidate<'_>],
        body: Option<&Map<String, Value>>,
    ) -> usize {
        let headers = HeaderMap::new();
        let mut request = RequestContext::new("svc", "POST", "/", &headers);
        request.body = body;
        strategy
            .choose(c, &request)
            .expect("built-ins never fail")
            .expect("an opinion")
            .index
    }

    #[test]
    fn first_healthy_skips_instances_marked_down() {
        let c = candidates(&[false, true, true], &[1, 1, 1]);
        assert_eq!(pick(&FirstHealthy, &c, None), 1);
        let all_down = candidates(&[false, false], &[1, 1]);
        assert_eq!(
            pick(&FirstHealthy, &all_down, None),
            0,
            "all down: the service's own URL"
        );
    }

    #[test]
    fn round_robin_takes_healthy_instances_in_turn() {
        let strategy = RoundRobin::default();
        let c = candidates(&[true, false, true], &[1, 1, 1]);
        let picks: Vec<_> = (0..4).map(|_| pick(&strategy, &c, None)).collect();
        assert_eq!(picks, [0, 2, 0, 2]);
    }

    #[test]
    fn weighted_follows_the_weights() {
        let strategy = Weighted::default();
        let c = candidates(&[true, true], &[3, 1]);
        let picks: Vec<_> = (0..8).map(|_| pick(&strategy, &c, None)).collect();
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 6);
        assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 2);
    }

    #[test]
    fn least_pending_takes_the_least_busy_healthy_instance() {
        let mut c = candidates(&[true, true, false], &[1, 1, 1]);
        c[0].in_flight = 4;
        c[1].in_flight = 2;
        assert_eq!(pick(&LeastPending, &c, None), 1);
        c[1].in_flight = 9;
        assert_eq!(pick(&LeastPending, &c, None), 0, "the idle one is down");
    }

    #[test]
    fn prefer_awake_takes_an_awake_instance_over_an_earlier_sleeping_one() {
        let mut c = candidates(&[true, true, true], &[1, 1, 1]);
        c[0].awake = false;
        c[1].awake = false;
        c[2].awake = true;
        assert_eq!(pick(&PreferAwake, &c, None), 2);
        c[2].healthy = false;
        assert_eq!(
            pick(&PreferAwake, &c, None),
            0,
            "none awake and healthy: first healthy"
        );
    }

    #[test]
    fn model_router_maps_models_and_has_no_opinion_otherwise() {
        let by_model = BTreeMap::from([
            ("llama3".to_owned(), "http://b/".to_owned()),
            ("mistral".to_owned(), "http://c".to_owned()),
        ]);
        let router = ModelRouter::new("model", &by_model);
        let c = candidates(&[true, true, true], &[1, 1, 1]);
        let body = |v: Value| v.as_object().cloned().expect("an object");
        assert_eq!(
            pick(&router, &c, Some(&body(json!({"model": "llama3"})))),
            1
        );
        assert_eq!(
            pick(&router, &c, Some(&body(json!({"model": "mistral"})))),
            2
        );
        let headers = HeaderMap::new();
        for unmapped in [
            json!({"model": "phi"}),
            json!({"prompt": "hi"}),
            json!({"model": 3}),
        ] {
            let unmapped = body(unmapped);
            let mut request = RequestContext::new("svc", "POST", "/", &headers);
            request.body = Some(&unmapped);
            assert!(router.choose(&c, &request).expect("no error").is_none());
        }
        let request = RequestContext::new("svc", "POST", "/", &headers);
        assert!(
            router.choose(&c, &request).expect("no error").is_none(),
            "no body"
        );
    }
}
