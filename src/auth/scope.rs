//! Scopes: what a key may do. `proxy:<service|*>` (use a service through the proxy or the
//! envelope), `control:<service|*>` (start and stop), `read` (status, activity, machines,
//! strategies, metrics, events) and `admin` (everything). A route needs one scope; a key holds a
//! list, and any one that grants the need lets it through.

use std::fmt;
use std::str::FromStr;

/// One scope a key holds, or one a route needs (then the target is always a service).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Proxy(Target),
    Control(Target),
    Read,
    Admin,
}

/// The services a `proxy:` or `control:` scope covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// `*`: every service.
    Any,
    Service(String),
}

/// A scope string that is not one of the four forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a scope: use proxy:<service|*>, control:<service|*>, read or admin")]
pub struct ScopeError(pub String);

impl Scope {
    /// `proxy:<service>`, the need of a proxied request.
    pub fn proxy(service: &str) -> Scope {
        Scope::Proxy(Target::Service(service.to_owned()))
    }

    /// `control:<service>`, the need of a start or stop.
    pub fn control(service: &str) -> Scope {
        Scope::Control(Target::Service(service.to_owned()))
    }

    /// Whether holding `self` satisfies the need `need`.
    pub fn grants(&self, need: &Scope) -> bool {
        match (self, need) {
            (Scope::Admin, _) => true,
            (Scope::Read, Scope::Read) => true,
            (Scope::Proxy(held), Scope::Proxy(wanted))
            | (Scope::Control(held), Scope::Control(wanted)) => held.covers(wanted),
            _ => false,
        }
    }

    /// Parses a space- or comma-separated list (the `auth_keys.scopes` column).
    pub fn parse_list(text: &str) -> Result<Vec<Scope>, ScopeError> {
        text.split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect()
    }

    /// The list as the `auth_keys.scopes` column stores it.
    pub fn join(scopes: &[Scope]) -> String {
        scopes
            .iter()
            .map(Scope::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Target {
    fn covers(&self, wanted: &Target) -> bool {
        match (self, wanted) {
            (Target::Any, _) => true,
            (Target::Service(held), Target::Service(wanted)) => held == wanted,
            (Target::Service(_), Target::Any) => false,
        }
    }
}

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(text: &str) -> Result<Scope, ScopeError> {
        let bad = || ScopeError(text.to_owned());
        let target = |rest: &str| match rest {
            "*" => Ok(Target::Any),
            id if !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) =>
            {
                Ok(Target::Service(id.to_owned()))
            }
            _ => Err(bad()),
        };
        match text.split_once(':') {
            Some(("proxy", rest)) => target(rest).map(Scope::Proxy),
            Some(("control", rest)) => target(rest).map(Scope::Control),
            None if text == "read" => Ok(Scope::Read),
            None if text == "admin" => Ok(Scope::Admin),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Any => f.write_str("*"),
            Target::Service(id) => f.write_str(id),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Proxy(t) => write!(f, "proxy:{t}"),
            Scope::Control(t) => write!(f, "control:{t}"),
            Scope::Read => f.write_str("read"),
            Scope::Admin => f.write_str("admin"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(text: &str) -> Scope {
        text.parse().expect("a scope")
    }

    #[test]
    fn given_scope_strings_when_parsed_then_they_round_trip() {
        for text in [
            "proxy:chat",
            "proxy:*",
            "control:db-1",
            "control:*",
            "read",
            "admin",
        ] {
            assert_eq!(scope(text).to_string(), text);
        }
        for bad in ["", "proxy", "proxy:", "write", "control:a/b", "Read"] {
            assert!(bad.parse::<Scope>().is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn given_held_scopes_when_matched_against_needs_then_only_covering_ones_grant() {
        assert!(scope("admin").grants(&Scope::control("x")));
        assert!(scope("proxy:*").grants(&Scope::proxy("x")));
        assert!(scope("proxy:x").grants(&Scope::proxy("x")));
        assert!(!scope("proxy:x").grants(&Scope::proxy("y")));
        assert!(!scope("proxy:*").grants(&Scope::control("x")));
        assert!(!scope("control:*").grants(&Scope::Read));
        assert!(!scope("read").grants(&Scope::proxy("x")));
        assert!(scope("read").grants(&Scope::Read));
    }
}
