//! `{name}` placeholders in user-written strings: URLs, command program/args/env, webhook bodies.
//!
//! Only `{` + identifier + `}` is a placeholder, so JSON bodies such as `{"id": "{service_id}"}`
//! keep their own braces. An identifier that is not a known placeholder is an error naming it,
//! never left in place silently.

/// The values placeholders are replaced with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars {
    /// `{address}`: the chosen machine's address. `None` = no machine; using `{address}` is an error.
    pub address: Option<String>,
    /// `{service_id}`: the service's id.
    pub service_id: String,
    /// `{hestia_exe}`: the Hestia binary. `None` = `std::env::current_exe()`, looked up only if used.
    pub hestia_exe: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlaceholderError {
    #[error(
        "unknown placeholder `{{{name}}}` in `{template}` (known: {{address}}, {{service_id}}, {{hestia_exe}})"
    )]
    Unknown { name: String, template: String },
    #[error("`{{address}}` used in `{template}` but service `{service_id}` has no machine address")]
    NoAddress {
        service_id: String,
        template: String,
    },
    #[error(
        "`{{hestia_exe}}` used in `{template}` but the path of the running binary is unknown: {source}"
    )]
    CurrentExe {
        template: String,
        #[source]
        source: std::io::Error,
    },
}

/// Replaces every `{address}`, `{service_id}` and `{hestia_exe}` in `template`.
pub fn expand(template: &str, vars: &Vars) -> Result<String, PlaceholderError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match placeholder_name(after) {
            Some(name) => {
                out.push_str(&value_of(name, template, vars)?);
                rest = &after[name.len() + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The identifier at the start of `s` if it is directly followed by `}`.
fn placeholder_name(s: &str) -> Option<&str> {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
    let name = &s[..end];
    let starts_like_identifier = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    (starts_like_identifier && s[end..].starts_with('}')).then_some(name)
}

fn value_of(name: &str, template: &str, vars: &Vars) -> Result<String, PlaceholderError> {
    match name {
        "address" => vars
            .address
            .clone()
            .ok_or_else(|| PlaceholderError::NoAddress {
                service_id: vars.service_id.clone(),
                template: template.to_owned(),
            }),
        "service_id" => Ok(vars.service_id.clone()),
        "hestia_exe" => match &vars.hestia_exe {
            Some(exe) => Ok(exe.clone()),
            None => std::env::current_exe()
                .map(|path| running_binary(&path.to_string_lossy()))
                .map_err(|source| PlaceholderError::CurrentExe {
                    template: template.to_owned(),
                    source,
                }),
        },
        unknown => Err(PlaceholderError::Unknown {
            name: unknown.to_owned(),
            template: template.to_owned(),
        }),
    }
}

/// The path of this binary. When it was replaced on disk while running (an upgrade, a rebuild),
/// Linux reports the old inode as `<path> (deleted)`: the new file at `<path>` is what to run.
fn running_binary(path: &str) -> String {
    match path.strip_suffix(" (deleted)") {
        Some(original) if std::path::Path::new(original).exists() => original.to_owned(),
        _ => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars {
            address: Some("10.0.0.7".into()),
            service_id: "llm".into(),
            hestia_exe: Some("/usr/bin/hestia".into()),
        }
    }

    #[test]
    fn every_known_placeholder_is_replaced() {
        let out = expand(
            "{hestia_exe} sim --id {service_id} http://{address}:8000/{address}",
            &vars(),
        );
        assert_eq!(
            out.unwrap(),
            "/usr/bin/hestia sim --id llm http://10.0.0.7:8000/10.0.0.7"
        );
    }

    #[test]
    fn json_braces_are_left_alone() {
        let body = r#"{"service": "{service_id}", "nested": {"a": 1}, "empty": {}}"#;
        let out = expand(body, &vars()).unwrap();
        assert_eq!(
            out,
            r#"{"service": "llm", "nested": {"a": 1}, "empty": {}}"#
        );
    }

    #[test]
    fn unknown_placeholder_is_an_error_naming_it() {
        let err = expand("http://{adress}:8000", &vars()).unwrap_err();
        assert!(matches!(&err, PlaceholderError::Unknown { name, .. } if name == "adress"));
        assert!(err.to_string().contains("{adress}"), "{err}");
    }

    #[test]
    fn address_without_a_machine_is_an_error() {
        let vars = Vars {
            address: None,
            ..vars()
        };
        let err = expand("http://{address}:1", &vars).unwrap_err();
        assert!(err.to_string().contains("has no machine address"), "{err}");
    }

    #[test]
    fn hestia_exe_defaults_to_the_running_binary() {
        let vars = Vars {
            hestia_exe: None,
            ..vars()
        };
        let exe = std::env::current_exe().unwrap();
        assert_eq!(
            expand("{hestia_exe}", &vars).unwrap(),
            exe.to_string_lossy()
        );
    }

    #[test]
    fn text_without_placeholders_is_unchanged() {
        assert_eq!(
            expand("plain { text } 1{2}", &vars()).unwrap(),
            "plain { text } 1{2}"
        );
    }
}
