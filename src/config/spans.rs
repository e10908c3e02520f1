//! Where each key of a YAML document sits, so checks made after parsing can point at a line and
//! column. Typed structs keep no positions, so the document is re-read with serde-saphyr's own
//! parser (`granit_parser`) and every key path (`services.echo.retry.count`, `routing_rules[1]`)
//! is recorded with the position of its key.

use serde_saphyr::granit_parser::{Event, Parser, Span};

/// A 1-based line and column in the configuration text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    /// The start of the document, used when nothing better is known.
    pub const START: Pos = Pos { line: 1, column: 1 };
}

/// Every key path of one document with the position of its key, in document order.
#[derive(Debug, Default)]
pub struct KeyIndex {
    entries: Vec<(Pos, String)>,
}

enum Frame {
    Map {
        path: String,
        /// The key whose value comes next, or `None` while a key is expected.
        key: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
    /// A collection used as a mapping key: skipped, it has no path.
    ComplexKey,
}

impl KeyIndex {
    /// Indexes `text`. Best effort: a document the parser rejects is indexed up to the error
    /// (serde-saphyr reports the error itself).
    pub fn build(text: &str) -> KeyIndex {
        let mut index = KeyIndex::default();
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            match event {
                Event::Scalar(value, ..) => index.leaf(&mut stack, span, Some(&value)),
                Event::Alias(_) => index.leaf(&mut stack, span, None),
                Event::MappingStart(..) => match index.node(&mut stack, span, None) {
                    Some(path) => stack.push(Frame::Map { path, key: None }),
                    None => stack.push(Frame::ComplexKey),
                },
                Event::SequenceStart(..) => match index.node(&mut stack, span, None) {
                    Some(path) => stack.push(Frame::Seq { path, next: 0 }),
                    None => stack.push(Frame::ComplexKey),
                },
                Event::MappingEnd | Event::SequenceEnd => {
                    let closed = stack.pop();
                    match closed {
                        Some(Frame::ComplexKey) => {
                            if let Some(Frame::Map { key, .. }) = stack.last_mut() {
                                *key = Some("?".to_owned());
                            }
                        }
                        Some(Frame::Map { .. } | Frame::Seq { .. }) => finish_value(&mut stack),
                        None => {}
                    }
                }
                _ => {}
            }
        }
        index
    }

    /// A scalar or alias: a key, or a value that is complete at once.
    fn leaf(&mut self, stack: &mut [Frame], span: Span, scalar: Option<&str>) {
        if self.node(stack, span, scalar).is_some() {
            finish_value(stack);
        }
    }

    /// Handles the start of a node. Returns the node's path when it is a value, `None` when it is
    /// a mapping key (then recorded) or part of a complex key.
    fn node(&mut self, stack: &mut [Frame], span: Span, scalar: Option<&str>) -> Option<String> {
        let pos = Pos {
            line: span.start.line(),
            column: span.start.col() + 1,
        };
        match stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::ComplexKey) => None,
            Some(Frame::Seq { path, next }) => {
                let item = format!("{path}[{next}]");
                *next += 1;
                self.entries.push((pos, item.clone()));
                Some(item)
            }
            Some(Frame::Map { path, key }) => match key {
                Some(key) => Some(join(path, key)),
                None => {
                    let name = scalar.unwrap_or("?");
                    self.entries.push((pos, join(path, name)));
                    if scalar.is_some() {
                        *key = Some(name.to_owned());
                    }
                    None
                }
            },
        }
    }

    /// An index of entries found by another parser (TOML's, in `toml_file`).
    pub fn from_entries(entries: Vec<(Pos, String)>) -> KeyIndex {
        KeyIndex { entries }
    }

    /// Position of the key at `path`, or of its closest indexed ancestor.
    pub fn locate(&self, path: &str) -> Pos {
        let mut probe = path;
        loop {
            if let Some((pos, _)) = self.entries.iter().find(|(_, p)| p == probe) {
                return *pos;
            }
            match probe.rfind(['.', '[']) {
                Some(cut) => probe = &probe[..cut],
                None => return Pos::START,
            }
        }
    }

    /// Position of the key at exactly `path`, if the document has it.
    pub fn find(&self, path: &str) -> Option<Pos> {
        self.entries
            .iter()
            .find(|(_, p)| p == path)
            .map(|(pos, _)| *pos)
    }

    /// Every key path with the position of its key, in document order.
    pub fn entries(&self) -> impl Iterator<Item = &(Pos, String)> {
        self.entries.iter()
    }

    /// The path of the key that starts exactly at `pos`, if any.
    pub fn key_at(&self, pos: Pos) -> Option<&str> {
        self.entries
            .iter()
            .find(|(start, _)| *start == pos)
            .map(|(_, path)| path.as_str())
    }

    /// The path of the last key that starts at or before `pos` (used for parse errors).
    pub fn path_at(&self, pos: Pos) -> Option<&str> {
        self.entries
            .iter()
            .filter(|(start, _)| *start <= pos)
            .max_by_key(|(start, _)| *start)
            .map(|(_, path)| path.as_str())
    }
}

/// A value is complete: its mapping now expects the next key.
fn finish_value(stack: &mut [Frame]) {
    if let Some(Frame::Map { key, .. }) = stack.last_mut() {
        *key = None;
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_nested_keys_when_indexed_then_each_path_has_its_key_position() {
        let text = "listen: x\nservices:\n  echo:\n    retry: {count: 2}\n    tags:\n      - a\n";
        let index = KeyIndex::build(text);
        assert_eq!(index.locate("listen"), Pos { line: 1, column: 1 });
        assert_eq!(index.locate("services.echo"), Pos { line: 3, column: 3 });
        assert_eq!(
            index.locate("services.echo.retry.count"),
            Pos {
                line: 4,
                column: 13
            }
        );
        assert_eq!(
            index.locate("services.echo.tags[0]"),
            Pos { line: 6, column: 9 }
        );
        assert_eq!(
            index.locate("services.echo.missing"),
            Pos { line: 3, column: 3 }
        );
        assert_eq!(
            index.path_at(Pos {
                line: 4,
                column: 20
            }),
            Some("services.echo.retry.count")
        );
    }
}
