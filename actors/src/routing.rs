//! Which machines a service may run on, in order: the start plan's targets (FR-005).
//!
//! A service's own `machine`/`machines` come first; otherwise the routing rules that match it,
//! in priority order, each name one machine (the first match is the primary, the next ones are
//! fallbacks). `fallback_url` is always the last resort. Pure: decided once per configuration.

use crate::placeholders::{self, Vars};
use crate::service::policy::{Plan, Target};
use crate::spec::{MachineSpec, RoutingRuleSpec, RuleTarget, ServiceSpec};

/// The plan of targets for `service`.
pub fn plan_for(
    service: &ServiceSpec,
    machines: &[MachineSpec],
    rules: &[RoutingRuleSpec],
) -> Plan {
    let mut targets: Vec<Target> = Vec::new();
    let mut push = |machine: &MachineSpec, rule: Option<&str>| {
        if targets.iter().all(|t| t.machine_id() != Some(&machine.id)) {
            targets.push(Target {
                base_url: expand_for(&service.base_url, service, Some(machine)),
                machine: Some(machine.clone()),
                rule: rule.map(str::to_owned),
                is_fallback_url: false,
            });
        }
    };
    if service.machines.is_empty() {
        let mut ordered: Vec<&RoutingRuleSpec> = rules.iter().collect();
        ordered.sort_by_key(|r| r.priority);
        for rule in ordered.into_iter().filter(|r| rule_matches(r, service)) {
            if let Some(machine) = machines.iter().find(|m| target_matches(&rule.target, m)) {
                push(machine, Some(&rule.name));
            }
        }
    } else {
        for id in &service.machines {
            if let Some(machine) = machines.iter().find(|m| &m.id == id) {
                push(machine, None);
            }
        }
    }
    if targets.is_empty() {
        targets.push(Target {
            base_url: expand_for(&service.base_url, service, None),
            machine: None,
            rule: None,
            is_fallback_url: false,
        });
    }
    if let Some(url) = &service.policy.fallback_url {
        targets.push(Target {
            base_url: url.clone(),
            machine: None,
            rule: None,
            is_fallback_url: true,
        });
    }
    Plan {
        targets,
        policy: service.policy.clone(),
    }
}

fn rule_matches(rule: &RoutingRuleSpec, service: &ServiceSpec) -> bool {
    let m = &rule.matches;
    (m.services.is_empty() || m.services.contains(&service.id))
        && m.tags.iter().all(|tag| service.tags.contains(tag))
}

fn target_matches(target: &RuleTarget, machine: &MachineSpec) -> bool {
    match target {
        RuleTarget::Machine(id) => &machine.id == id,
        RuleTarget::Role(role) => machine.role == *role,
        RuleTarget::Tags(tags) => tags.iter().all(|tag| machine.tags.contains(tag)),
    }
}

/// `{address}` and `{service_id}` expanded; a template that cannot expand is kept as written
/// (configuration validation has already rejected those).
fn expand_for(template: &str, service: &ServiceSpec, machine: Option<&MachineSpec>) -> String {
    let vars = Vars {
        address: machine.map(|m| m.address.clone()),
        service_id: service.id.clone(),
        hestia_exe: None,
    };
    placeholders::expand(template, &vars).unwrap_or_else(|_| template.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{MachineRole, QueueSpec, ReadinessSpec, RuleMatch, StartPolicy, StarterSpec};

    fn machine(id: &str, role: MachineRole, tags: &[&str]) -> MachineSpec {
        MachineSpec {
            id: id.into(),
            role,
            address: format!("{id}.lan"),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            wake: None,
        }
    }

    fn service(tags: &[&str], machines: &[&str], fallback_url: Option<&str>) -> ServiceSpec {
        ServiceSpec {
            id: "llm".into(),
            base_url: "http://{address}:8000".into(),
            start: StarterSpec::None,
            stop: None,
            readiness: ReadinessSpec::Warmup(std::time::Duration::ZERO),
            policy: StartPolicy {
                fallback_url: fallback_url.map(str::to_owned),
                ..StartPolicy::default()
            },
            queue: QueueSpec::default(),
            idle_timeout: None,
            machines: machines.iter().map(|m| m.to_string()).collect(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            instances: Vec::new(),
            strategy: None,
            fallback_strategy: None,
            models: Vec::new(),
            model_routing: None,
            upstream_timeout: std::time::Duration::from_secs(300),
            waiting_page: true,
            upstream_http2: false,
            max_concurrency: None,
        }
    }

    fn rule(name: &str, priority: i64, tags: &[&str], target: RuleTarget) -> RoutingRuleSpec {
        RoutingRuleSpec {
            name: name.into(),
            priority,
            matches: RuleMatch {
                services: Vec::new(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
            },
            target,
        }
    }

    fn urls(plan: &Plan) -> Vec<(String, Option<String>)> {
        plan.targets
            .iter()
            .map(|t| (t.base_url.clone(), t.rule.clone()))
            .collect()
    }

    #[test]
    fn matching_rules_in_priority_order_give_the_primary_then_the_fallback_machines() {
        let machines = [
            machine("laptop", MachineRole::Local, &["cpu"]),
            machine("desktop", MachineRole::Remote, &["gpu"]),
            machine("hpc", MachineRole::Hpc, &["gpu", "big"]),
        ];
        let rules = [
            rule("last-resort", 30, &[], RuleTarget::Role(MachineRole::Local)),
            rule(
                "gpu-first",
                10,
                &["gpu"],
                RuleTarget::Machine("desktop".into()),
            ),
            rule(
                "big-gpu",
                20,
                &["gpu"],
                RuleTarget::Tags(vec!["big".into()]),
            ),
            rule(
                "not-for-llm",
                5,
                &["audio"],
                RuleTarget::Machine("laptop".into()),
            ),
        ];
        let plan = plan_for(
            &service(&["gpu"], &[], Some("http://cloud:9000")),
            &machines,
            &rules,
        );
        assert_eq!(
            urls(&plan),
            [
                (
                    "http://desktop.lan:8000".to_owned(),
                    Some("gpu-first".to_owned())
                ),
                ("http://hpc.lan:8000".to_owned(), Some("big-gpu".to_owned())),
                (
                    "http://laptop.lan:8000".to_owned(),
                    Some("last-resort".to_owned())
                ),
                ("http://cloud:9000".to_owned(), None),
            ]
        );
        assert!(plan.targets[3].is_fallback_url);
    }

    #[test]
    fn a_service_s_own_machines_override_the_rules() {
        let machines = [
            machine("a", MachineRole::Local, &[]),
            machine("b", MachineRole::Remote, &[]),
        ];
        let rules = [rule("any", 1, &[], RuleTarget::Machine("a".into()))];
        let plan = plan_for(&service(&[], &["b", "a"], None), &machines, &rules);
        let ids: Vec<_> = plan
            .targets
            .iter()
            .map(|t| t.machine_id().unwrap_or("-"))
            .collect();
        assert_eq!(ids, ["b", "a"]);
    }

    #[test]
    fn without_machines_the_base_url_is_the_only_target() {
        let mut spec = service(&[], &[], None);
        spec.base_url = "http://127.0.0.1:9000".into();
        let plan = plan_for(&spec, &[], &[]);
        assert_eq!(urls(&plan), [("http://127.0.0.1:9000".to_owned(), None)]);
    }
}
