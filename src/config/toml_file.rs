//! Configuration files written in TOML (a path ending in `.toml`): the same schema, the same
//! strictness (unknown keys refused) and the same `file:line:column` errors as YAML. The `toml`
//! crate parses into the same structs; its errors carry a byte span, turned here into a line and
//! column. For the checks made after parsing, the document is re-read as spanned tables so that
//! every key path has the position of its key, as [`KeyIndex::build`] does for YAML.

use std::path::Path;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{self, ConfigError, Problem};
use super::spans::{KeyIndex, Pos};

/// Whether the configuration at `path` is TOML (its name ends in `.toml`, in any case).
pub fn is_toml(path: &Path) -> bool {
    path.extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| ext.eq_ignore_ascii_case("toml"))
}

/// Every key path of a TOML document with the position of its key. Best effort: a document the
/// parser rejects has no index (the parse error names its own position).
pub fn index(text: &str) -> KeyIndex {
    let mut entries = Vec::new();
    if let Ok(root) = DeTable::parse(text) {
        let lines = LineStarts::new(text);
        walk_table(root.get_ref(), "", &lines, &mut entries);
    }
    KeyIndex::from_entries(entries)
}

/// Parses `text` into `T`; an error is located at `file:line:column` with the key path there.
pub fn parse<T: DeserializeOwned>(
    text: &str,
    origin: &Path,
    index: &KeyIndex,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|err| {
        let pos = err
            .span()
            .map_or(Pos::START, |span| LineStarts::new(text).pos(span.start));
        let key_path = index.path_at(pos).unwrap_or("(document)").to_owned();
        ConfigError::parse_at(origin, pos, key_path, problem(err.message()))
    })
}

/// serde's messages (the same for every format) as the problems YAML reports.
fn problem(message: &str) -> Problem {
    if let Some((key, tail)) = quoted_after(message, "unknown field `") {
        let expected = backquoted(tail);
        return Problem::UnknownKey {
            suggestion: error::closest(&key, expected.iter().map(String::as_str)),
            key,
            expected,
        };
    }
    if let Some((variant, tail)) = quoted_after(message, "unknown variant `") {
        let expected = backquoted(tail);
        return Problem::UnknownVariant {
            suggestion: error::closest(&variant, expected.iter().map(String::as_str)),
            variant,
            expected,
        };
    }
    if let Some((key, _)) = quoted_after(message, "missing field `") {
        return Problem::MissingKey { key };
    }
    if let Some((_, ty)) = message
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.rsplit_once(", expected "))
        && let Some(expected) = super::scalar_kind(ty.trim())
    {
        return Problem::WrongType { expected };
    }
    Problem::Syntax {
        message: message
            .trim()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect(),
    }
}

/// `prefix` followed by a name and a closing backquote: the name and what follows it.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<(String, &'a str)> {
    let rest = message.strip_prefix(prefix)?;
    let (name, tail) = rest.split_once('`')?;
    Some((name.to_owned(), tail))
}

/// Every `name` between backquotes in `text`.
fn backquoted(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn walk_table(
    table: &DeTable<'_>,
    path: &str,
    lines: &LineStarts<'_>,
    out: &mut Vec<(Pos, String)>,
) {
    for (key, value) in table {
        let child = if path.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{path}.{}", key.get_ref())
        };
        out.push((lines.pos(key.span().start), child.clone()));
        walk_value(value, &child, lines, out);
    }
}

fn walk_value(
    value: &Spanned<DeValue<'_>>,
    path: &str,
    lines: &LineStarts<'_>,
    out: &mut Vec<(Pos, String)>,
) {
    match value.get_ref() {
        DeValue::Table(table) => walk_table(table, path, lines, out),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let child = format!("{path}[{i}]");
                out.push((lines.pos(item.span().start), child.clone()));
                walk_value(item, &child, lines, out);
            }
        }
        _ => {}
    }
}

/// Byte offsets → 1-based line and column (the column in characters, as YAML's).
struct LineStarts<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineStarts<'a> {
    fn new(text: &'a str) -> LineStarts<'a> {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        LineStarts { text, starts }
    }

    fn pos(&self, offset: usize) -> Pos {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|start| *start <= offset).max(1);
        let start = self.starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |prefix| prefix.chars().count());
        Pos {
            line,
            column: column + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_tables_arrays_and_inline_tables_when_indexed_then_each_key_has_its_position() {
        let text = "listen = \"x\"\n\n[services.echo]\nretry = { count = 2 }\n\n[[routing_rules]]\nname = \"a\"\n";
        let index = index(text);
        assert_eq!(index.locate("listen"), Pos { line: 1, column: 1 });
        assert_eq!(
            index.locate("services.echo"),
            Pos {
                line: 3,
                column: 11
            }
        );
        assert_eq!(
            index.locate("services.echo.retry.count"),
            Pos {
                line: 4,
                column: 11
            }
        );
        assert_eq!(
            index.locate("routing_rules[0].name"),
            Pos { line: 7, column: 1 }
        );
    }

    #[test]
    fn given_serde_messages_then_they_become_the_problems_yaml_reports() {
        assert_eq!(
            problem("unknown field `retry_cont`, expected one of `retry`, `retry_count`"),
            Problem::UnknownKey {
                key: "retry_cont".into(),
                suggestion: Some("retry_count".into()),
                expected: vec!["retry".into(), "retry_count".into()],
            }
        );
        assert_eq!(
            problem("missing field `base_url`"),
            Problem::MissingKey {
                key: "base_url".into()
            }
        );
        assert_eq!(
            problem("invalid type: string \"x\", expected u64"),
            Problem::WrongType {
                expected: "a whole number ≥ 0"
            }
        );
        assert!(matches!(
            problem("invalid type: integer `1`, expected a sequence"),
            Problem::Syntax { .. }
        ));
    }
}
