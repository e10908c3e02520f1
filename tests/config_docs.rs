//! docs/configuration.md against the configuration's JSON Schema (`hestia config schema`): every
//! key of every section must have a row, and where the schema states a default the row must give
//! the same one. When someone adds a key, this test names the row to add.

use std::collections::BTreeMap;

use serde_json::Value;

/// `### Name — …` sections of the page: name → the section's table rows, by key.
fn documented() -> BTreeMap<String, BTreeMap<String, String>> {
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("docs/configuration.md");
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in page.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            let name = heading.split(" — ").next().unwrap_or(heading).trim();
            current = Some(name.to_owned());
            sections.entry(name.to_owned()).or_default();
        } else if let (Some(section), Some(row)) = (&current, line.strip_prefix("| `"))
            && let Some((key, _)) = row.split_once("` |")
            && let Some(rows) = sections.get_mut(section)
        {
            rows.insert(key.to_owned(), line.to_owned());
        }
    }
    sections
}

/// The keys a schema object offers: its properties and those of its object alternatives.
fn keys(schema: &Value) -> BTreeMap<String, String> {
    let mut keys = BTreeMap::new();
    let mut add = |properties: &Value| {
        for (key, value) in properties.as_object().into_iter().flatten() {
            let description = value["description"].as_str().unwrap_or_default();
            keys.insert(key.clone(), description.to_owned());
        }
    };
    add(&schema["properties"]);
    for alternatives in ["oneOf", "anyOf"] {
        for branch in schema[alternatives].as_array().into_iter().flatten() {
            add(&branch["properties"]);
        }
    }
    keys
}

/// The default a description states (`Default 2000.`, ``Default `info`.``), as it must appear.
fn stated_default(description: &str) -> Option<String> {
    let rest = description.split("Default ").nth(1)?;
    if let Some(quoted) = rest.strip_prefix('`') {
        let end = quoted.find('`')?;
        return Some(format!("`{}`", &quoted[..end]));
    }
    let token: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && !matches!(c, ',' | '(' | ')'))
        .collect();
    Some(token.trim_end_matches('.').to_owned())
}

#[test]
fn every_schema_key_is_documented_with_its_default() {
    let schema = hestia::config::json_schema();
    let docs = documented();
    let mut objects: Vec<(String, &Value)> = vec![(
        schema["title"].as_str().expect("a title").to_owned(),
        &schema,
    )];
    for (name, definition) in schema["$defs"].as_object().expect("$defs") {
        objects.push((name.clone(), definition));
    }
    let mut missing = Vec::new();
    for (name, object) in objects {
        let keys = keys(object);
        if keys.is_empty() {
            continue; // a plain value (an enum of strings, a status code)
        }
        let Some(rows) = docs.get(&name) else {
            missing.push(format!(
                "a `### {name} — …` section with rows for {:?}",
                keys.keys().collect::<Vec<_>>()
            ));
            continue;
        };
        for (key, description) in keys {
            match rows.get(&key) {
                None => missing.push(format!("{name}: a row for `{key}` ({description})")),
                Some(row) => {
                    if let Some(default) = stated_default(&description)
                        && !row.contains(&default)
                    {
                        missing.push(format!(
                            "{name}: the row for `{key}` must give the default {default}: {row}"
                        ));
                    }
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md is behind the schema:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn stated_defaults_are_read_as_the_schema_writes_them() {
    assert_eq!(
        stated_default("Address. Default `0.0.0.0:8080`.").as_deref(),
        Some("`0.0.0.0:8080`")
    );
    assert_eq!(
        stated_default("Default 104857600 (100 MiB).").as_deref(),
        Some("104857600")
    );
    assert_eq!(stated_default("Default 1.0.").as_deref(), Some("1.0"));
    assert_eq!(
        stated_default("Default 200-399.").as_deref(),
        Some("200-399")
    );
    assert_eq!(stated_default("No default here."), None);
}
