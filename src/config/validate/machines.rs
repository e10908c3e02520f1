//! `machines:` (role, address, wake-up) and `routing_rules:` (unique priorities, known machines
//! and services).

use super::starters::semaphore_task;
use super::*;

pub(super) fn role(raw: RawRole) -> MachineRole {
    match raw {
        RawRole::Local => MachineRole::Local,
        RawRole::Remote => MachineRole::Remote,
        RawRole::Hpc => MachineRole::Hpc,
        RawRole::Cloud => MachineRole::Cloud,
    }
}

pub(super) fn machines(raw: &RawConfig, chk: &mut Checker<'_>) -> Vec<MachineSpec> {
    raw.machines
        .0
        .iter()
        .map(|(id, m)| machine(id, m, chk))
        .collect()
}

pub(super) fn machine(id: &str, raw: &RawMachine, chk: &mut Checker<'_>) -> MachineSpec {
    let path = format!("machines.{id}");
    if !is_url_safe(id) {
        chk.report(
            &path,
            Problem::BadId {
                kind: "machine",
                id: id.to_owned(),
            },
        );
    }
    let role = raw.role.map_or(MachineRole::Local, role);
    let address = match (&raw.address, role) {
        (Some(address), _) if address.trim().is_empty() => {
            chk.report(join(&path, "address"), Problem::Empty);
            String::new()
        }
        (Some(address), _) => address.trim().to_owned(),
        (None, MachineRole::Local) => defaults::LOCAL_ADDRESS.to_owned(),
        (None, _) => {
            chk.report(
                join(&path, "address"),
                Problem::AddressRequired {
                    role: role.as_str(),
                },
            );
            String::new()
        }
    };
    let wake = raw.wake.as_ref().map(|wake| match wake {
        RawWake::Wol(wol) => {
            let mac = parse_mac(&wol.mac).unwrap_or_else(|| {
                chk.report(
                    format!("{path}.wake.wol.mac"),
                    Problem::BadMac {
                        value: wol.mac.clone(),
                    },
                );
                [0; 6]
            });
            let broadcast = wol
                .broadcast
                .clone()
                .unwrap_or_else(|| defaults::WOL_BROADCAST.to_owned());
            if let Err(err) = broadcast.parse::<SocketAddr>() {
                chk.report(
                    format!("{path}.wake.wol.broadcast"),
                    Problem::BadAddress {
                        value: broadcast.clone(),
                        reason: format!("{err} (want ip:port)"),
                    },
                );
            }
            WakeSpec::Wol { mac, broadcast }
        }
        RawWake::Semaphore(task) => WakeSpec::Semaphore(semaphore_task(task)),
    });
    MachineSpec {
        id: id.to_owned(),
        role,
        address,
        tags: raw.tags.clone(),
        wake,
    }
}

pub(super) fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = text.trim().split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    Some(mac)
}

pub(super) fn routing_rules(
    raw: &[RawRoutingRule],
    machine_ids: &[&str],
    service_ids: &[&str],
    chk: &mut Checker<'_>,
) -> Vec<RoutingRuleSpec> {
    let mut seen: BTreeMap<i64, &str> = BTreeMap::new();
    let mut rules = Vec::with_capacity(raw.len());
    for (i, rule) in raw.iter().enumerate() {
        let path = format!("routing_rules[{i}]");
        if rule.name.trim().is_empty() {
            chk.report(join(&path, "name"), Problem::Empty);
        }
        match seen.get(&rule.priority) {
            Some(other) => chk.report(
                join(&path, "priority"),
                Problem::DuplicatePriority {
                    priority: rule.priority,
                    other: (*other).to_owned(),
                },
            ),
            None => {
                seen.insert(rule.priority, &rule.name);
            }
        }
        for (j, service) in rule.matches.services.iter().enumerate() {
            if !service_ids.contains(&service.as_str()) {
                chk.report(
                    format!("{path}.match.services[{j}]"),
                    Problem::UnknownService {
                        name: service.clone(),
                        known: owned(service_ids),
                    },
                );
            }
        }
        let target = match &rule.target {
            RawTarget::Machine(name) => {
                if !machine_ids.contains(&name.as_str()) {
                    chk.report(
                        format!("{path}.target.machine"),
                        Problem::UnknownMachine {
                            name: name.clone(),
                            known: owned(machine_ids),
                        },
                    );
                }
                RuleTarget::Machine(name.clone())
            }
            RawTarget::Role(r) => RuleTarget::Role(role(*r)),
            RawTarget::Tags(tags) => RuleTarget::Tags(tags.clone()),
        };
        rules.push(RoutingRuleSpec {
            name: rule.name.clone(),
            priority: rule.priority,
            matches: RuleMatch {
                services: rule.matches.services.clone(),
                tags: rule.matches.tags.clone(),
            },
            target,
        });
    }
    rules.sort_by_key(|rule| rule.priority);
    rules
}
