//! Setting a few scalar values in a configuration file without rewriting it: comments, order and
//! layout stay as they were, and setting a value that is already there changes no byte. Used by
//! `hestia semaphore bootstrap` to write ids and a token where the config reads them.
//!
//! A key that exists has its value replaced in place (block style `key: value`, or a flow mapping
//! `{key: value, ...}`). A missing key is added as the first child of its block-mapping parent; a
//! missing top-level parent is appended at the end of the file. Anything else is an error.

use super::spans::{KeyIndex, Pos};

/// Why a value could not be set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    #[error(
        "`{path}` is not in the file, and neither is its parent `{parent}`: add the section first"
    )]
    NoParent { path: String, parent: String },
    #[error("`{path}` (line {line}) is not a plain `key: value` entry that can be set in place")]
    NotScalar { path: String, line: usize },
}

/// Sets each `(key path, YAML scalar)` in turn; returns the new text.
pub fn set_scalars(text: &str, edits: &[(String, String)]) -> Result<String, EditError> {
    let mut text = text.to_owned();
    for (path, value) in edits {
        text = set_scalar(&text, path, value)?;
    }
    Ok(text)
}

/// Sets one scalar at `path` (`semaphore.project_id`, `services.demo.start.semaphore.template_id`).
pub fn set_scalar(text: &str, path: &str, value: &str) -> Result<String, EditError> {
    let index = KeyIndex::build(text);
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let trailing_newline = text.ends_with('\n') || text.is_empty();
    if let Some(pos) = index.find(path) {
        replace_value(&mut lines, pos, path, value)?;
    } else {
        let (parent, key) = path.rsplit_once('.').unwrap_or(("", path));
        if parent.is_empty() {
            lines.push(format!("{key}: {value}"));
        } else if let Some(parent_pos) = index.find(parent) {
            insert_child(&mut lines, &index, parent, parent_pos, key, value, path)?;
        } else if !parent.contains('.') {
            lines.push(format!("{parent}:"));
            lines.push(format!("  {key}: {value}"));
        } else {
            return Err(EditError::NoParent {
                path: path.to_owned(),
                parent: parent.to_owned(),
            });
        }
    }
    let mut out = lines.join("\n");
    if trailing_newline {
        out.push('\n');
    }
    Ok(out)
}

/// Replaces the value that follows the key at `pos` on its line.
fn replace_value(lines: &mut [String], pos: Pos, path: &str, value: &str) -> Result<(), EditError> {
    let not_scalar = || EditError::NotScalar {
        path: path.to_owned(),
        line: pos.line,
    };
    let line = lines.get_mut(pos.line - 1).ok_or_else(not_scalar)?;
    let chars: Vec<char> = line.chars().collect();
    let key_start = pos.column - 1;
    let in_flow = chars[..key_start.min(chars.len())]
        .iter()
        .rev()
        .find(|c| !c.is_whitespace())
        .is_some_and(|c| matches!(c, '{' | ','));
    // The key itself (plain or quoted), then `:` and spaces.
    let mut i = key_start;
    match chars.get(i) {
        Some(q @ ('"' | '\'')) => {
            let q = *q;
            i += 1;
            while i < chars.len() && chars[i] != q {
                i += 1;
            }
            i += 1;
        }
        _ => {
            while i < chars.len() && chars[i] != ':' {
                i += 1;
            }
        }
    }
    if chars.get(i) != Some(&':') {
        return Err(not_scalar());
    }
    i += 1;
    while i < chars.len() && chars[i] == ' ' {
        i += 1;
    }
    let start = i;
    let end = match chars.get(i) {
        Some(q @ ('"' | '\'')) => {
            let q = *q;
            let mut j = i + 1;
            while j < chars.len() && (chars[j] != q || (q == '"' && chars[j - 1] == '\\')) {
                j += 1;
            }
            (j < chars.len()).then_some(j + 1).ok_or_else(not_scalar)?
        }
        Some('{' | '[' | '|' | '>' | '&' | '*' | '!') => return Err(not_scalar()),
        _ => {
            let mut j = i;
            while j < chars.len() {
                let c = chars[j];
                if (in_flow && matches!(c, ',' | '}' | ']'))
                    || (c == '#' && j > 0 && chars[j - 1] == ' ')
                {
                    break;
                }
                j += 1;
            }
            while j > start && chars[j - 1] == ' ' {
                j -= 1;
            }
            j
        }
    };
    if start == end && !in_flow && start == chars.len() {
        // `key:` with its value on the next lines: a collection, not a scalar.
        return Err(not_scalar());
    }
    let mut new: String = chars[..start].iter().collect();
    new.push_str(value);
    let rest: String = chars[end..].iter().collect();
    if !rest.is_empty() && !rest.starts_with([' ', ',', '}', ']']) {
        new.push(' ');
    }
    new.push_str(&rest);
    *line = new;
    Ok(())
}

/// Adds `key: value` as the first child of the block mapping at `parent`.
fn insert_child(
    lines: &mut Vec<String>,
    index: &KeyIndex,
    parent: &str,
    parent_pos: Pos,
    key: &str,
    value: &str,
    path: &str,
) -> Result<(), EditError> {
    let parent_line = lines.get(parent_pos.line - 1).map(String::as_str);
    let block_parent = parent_line.is_some_and(|line| {
        let after = line.split_once(':').map_or("", |(_, rest)| rest);
        let after = after.split(" #").next().unwrap_or("").trim();
        after.is_empty()
    });
    if !block_parent {
        return Err(EditError::NotScalar {
            path: path.to_owned(),
            line: parent_pos.line,
        });
    }
    // Indent like an existing child, else two more than the parent.
    let prefix = format!("{parent}.");
    let child_column = index
        .entries()
        .filter(|(_, p)| p.starts_with(&prefix) && !p[prefix.len()..].contains(['.', '[']))
        .map(|(pos, _)| pos.column)
        .min()
        .unwrap_or(parent_pos.column + 2);
    let line = format!("{}{key}: {value}", " ".repeat(child_column - 1));
    lines.insert(parent_pos.line, line);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str, path: &str, value: &str) -> String {
        set_scalar(text, path, value).expect("set")
    }

    #[test]
    fn given_an_existing_block_value_then_only_it_changes_and_comments_stay() {
        let text =
            "# top\nsemaphore:\n  base_url: \"http://s:3000\"   # where\n  project_id: 1 # id\n";
        assert_eq!(
            set(text, "semaphore.project_id", "7"),
            "# top\nsemaphore:\n  base_url: \"http://s:3000\"   # where\n  project_id: 7 # id\n"
        );
        assert_eq!(
            set(text, "semaphore.base_url", "\"http://x\""),
            "# top\nsemaphore:\n  base_url: \"http://x\"   # where\n  project_id: 1 # id\n"
        );
    }

    #[test]
    fn given_the_same_value_then_not_a_byte_changes() {
        let text = "a:\n  b: 3\n  c: {d: 4, e: x}\n";
        assert_eq!(set(text, "a.b", "3"), text);
        assert_eq!(set(text, "a.c.d", "4"), text);
    }

    #[test]
    fn given_a_flow_mapping_then_the_value_is_replaced_inside_it() {
        let text = "s:\n  start: {semaphore: {template_id: 4, environment: {m: x}}}\n";
        assert_eq!(
            set(text, "s.start.semaphore.template_id", "12"),
            "s:\n  start: {semaphore: {template_id: 12, environment: {m: x}}}\n"
        );
    }

    #[test]
    fn given_a_missing_key_then_it_is_added_under_its_parent_at_the_childrens_indent() {
        let text = "semaphore:\n    base_url: x\nservices: {}\n";
        assert_eq!(
            set(text, "semaphore.api_token", "\"t\""),
            "semaphore:\n    api_token: \"t\"\n    base_url: x\nservices: {}\n"
        );
        assert_eq!(
            set("listen: x\n", "semaphore.project_id", "2"),
            "listen: x\nsemaphore:\n  project_id: 2\n"
        );
    }

    #[test]
    fn given_a_collection_or_a_missing_deep_parent_then_a_typed_error() {
        let text = "services:\n  demo:\n    start:\n      command: {program: x}\n";
        assert_eq!(
            set_scalar(text, "services.demo.start", "1"),
            Err(EditError::NotScalar {
                path: "services.demo.start".into(),
                line: 3
            })
        );
        assert!(matches!(
            set_scalar(text, "services.demo.stop.semaphore.template_id", "1"),
            Err(EditError::NoParent { .. })
        ));
    }
}
