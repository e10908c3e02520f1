//! Where validation problems go: the [`Checker`] collects them and the warnings, each located at
//! its key through the document's key index, or at the environment variable that set it; with
//! the two helpers every section uses. Apart from `validate` so that `legacy` and
//! `service_env` use it without importing `validate` (which imports them).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::error::{Diagnostic, Origin, Problem};
use super::schema::Seconds;
use super::spans::KeyIndex;

/// Collects problems, each located through the document's key index.
pub(crate) struct Checker<'a> {
    file: &'a Path,
    index: &'a KeyIndex,
    pub problems: Vec<Diagnostic>,
    /// What loads but will not work as written (it is logged at start and shown by `config check`).
    pub warnings: Vec<Diagnostic>,
    /// Key paths an environment variable set, with the variable: problems there name it.
    env_keys: BTreeMap<String, String>,
}

impl<'a> Checker<'a> {
    pub fn new(file: &'a Path, index: &'a KeyIndex) -> Checker<'a> {
        Checker {
            file,
            index,
            problems: Vec::new(),
            warnings: Vec::new(),
            env_keys: BTreeMap::new(),
        }
    }

    /// `key_path` was set by the environment variable `var`.
    pub fn set_by_env(&mut self, key_path: String, var: &str) {
        self.env_keys.insert(key_path, var.to_owned());
    }

    /// A problem with the key at `key_path` (located at that key, or its closest written parent).
    pub fn report(&mut self, key_path: impl Into<String>, problem: Problem) {
        let diagnostic = self.locate(key_path.into(), problem);
        self.problems.push(diagnostic);
    }

    /// A warning about the key at `key_path`: the configuration still loads.
    pub fn warn(&mut self, key_path: impl Into<String>, problem: Problem) {
        let diagnostic = self.locate(key_path.into(), problem);
        self.warnings.push(diagnostic);
    }

    fn locate(&self, key_path: String, problem: Problem) -> Diagnostic {
        let origin = match self.env_keys.get(&key_path) {
            Some(var) => Origin::Env { var: var.clone() },
            None => {
                let pos = self.index.locate(&key_path);
                Origin::File {
                    file: self.file.to_path_buf(),
                    line: pos.line,
                    column: pos.column,
                }
            }
        };
        Diagnostic {
            origin,
            key_path,
            problem,
        }
    }

    /// A problem with an environment override of `key_path`.
    pub(crate) fn report_env(&mut self, var: &str, key_path: &str, problem: Problem) {
        let origin = Origin::Env {
            var: var.to_owned(),
        };
        self.problems.push(Diagnostic {
            origin,
            key_path: key_path.to_owned(),
            problem,
        });
    }
}

/// `parent.key`, or `key` at the top level.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// A prototype-style number of seconds (`30`, `2.0`, `0.5`): `None` when unset, or when it is not
/// a positive, representable duration (reported at `path`).
pub(crate) fn seconds(
    chk: &mut Checker<'_>,
    path: &str,
    value: Option<Seconds>,
) -> Option<Duration> {
    let Seconds(secs) = value?;
    let duration = Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero());
    if duration.is_none() {
        chk.report(
            path,
            Problem::OutOfRange {
                value: secs.to_string(),
                expected: "a number of seconds > 0 (fractions allowed, e.g. 2.5)",
            },
        );
    }
    duration
}
