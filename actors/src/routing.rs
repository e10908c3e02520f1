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
