//! How a fake Semaphore behaves: the API version it imitates, its credentials, and its scripted
//! templates (timing, outcome, output, and a process to launch or kill on success).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which Semaphore version's JSON shapes to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiShape {
    /// 2.16: `omitempty` fields left out; unknown template on `POST /tasks` → 404.
    #[default]
    V2_16,
    /// 2.10: every key present (`null` when unset); unknown template on `POST /tasks` → 500.
    V2_10,
}

/// How a scripted task ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    #[default]
    Success,
    Error,
}

/// What a successful task does on this host, besides reporting success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Effect {
    /// Spawn `program args…` under `key` (unless a process under `key` still runs). `{name}` in
    /// the program and args is replaced with the task environment's `name` value.
    Launch {
        key: String,
        program: String,
        #[serde(default)]
        args: Vec<String>,
    },
    /// SIGTERM (then SIGKILL after 3 s) the process launched under `key`, if any.
    Kill { key: String },
}

/// A scripted template. `waiting` and `starting` last `step_ms` each, `running` lasts `run_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FakeTemplate {
    pub name: String,
    pub step_ms: u64,
    pub run_ms: u64,
    pub outcome: Outcome,
    /// Outcome by the task environment's `machine_id` (overrides `outcome`).
    pub outcome_by_machine: BTreeMap<String, Outcome>,
    /// Lines the task writes while running.
    pub output: Vec<String>,
    /// Applied when `running` begins, if the task is going to succeed.
    pub effect: Option<Effect>,
}

impl Default for FakeTemplate {
    fn default() -> Self {
        FakeTemplate {
            name: "template".to_owned(),
            step_ms: 10,
            run_ms: 50,
            outcome: Outcome::Success,
            outcome_by_machine: BTreeMap::new(),
            output: Vec::new(),
            effect: None,
        }
    }
}

impl FakeTemplate {
    /// A template whose tasks succeed.
    pub fn succeeding(name: &str) -> FakeTemplate {
        FakeTemplate {
            name: name.to_owned(),
            ..FakeTemplate::default()
        }
    }

    /// A template whose tasks end in `error`, writing `output`.
    pub fn failing(name: &str, output: &[&str]) -> FakeTemplate {
        FakeTemplate {
            outcome: Outcome::Error,
            ..FakeTemplate::succeeding(name)
        }
        .output(output)
    }

    pub fn run_ms(mut self, ms: u64) -> FakeTemplate {
        self.run_ms = ms;
        self
    }

    pub fn output(mut self, lines: &[&str]) -> FakeTemplate {
        self.output = lines.iter().map(|l| (*l).to_owned()).collect();
        self
    }

    pub fn outcome_on(mut self, machine_id: &str, outcome: Outcome) -> FakeTemplate {
        self.outcome_by_machine
            .insert(machine_id.to_owned(), outcome);
        self
    }

    pub fn launch(mut self, key: &str, program: &str, args: &[&str]) -> FakeTemplate {
        self.effect = Some(Effect::Launch {
            key: key.to_owned(),
            program: program.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        });
        self
    }

    pub fn kill(mut self, key: &str) -> FakeTemplate {
        self.effect = Some(Effect::Kill {
            key: key.to_owned(),
        });
        self
    }

    pub(super) fn outcome_for(&self, environment: &Value) -> Outcome {
        environment
            .get("machine_id")
            .and_then(Value::as_str)
            .and_then(|machine| self.outcome_by_machine.get(machine))
            .copied()
            .unwrap_or(self.outcome)
    }
}

/// How the fake behaves. `Default`: 127.0.0.1 on an ephemeral port, project 1, 2.16 shapes, no
/// credentials (every authenticated call is then a 401), no templates.
#[derive(Debug, Clone, Default)]
pub struct FakeSemaphoreOptions {
    pub host: String,
    pub port: u16,
    /// Valid API tokens.
    pub tokens: Vec<String>,
    /// Valid `(username, password)` logins.
    pub users: Vec<(String, String)>,
    /// Default 1.
    pub project_id: i64,
    pub shape: ApiShape,
    pub templates: BTreeMap<i64, FakeTemplate>,
    /// A Semaphore as just installed: no project until one is created through the API (the
    /// `project_id` project does not exist).
    pub fresh: bool,
}

impl FakeSemaphoreOptions {
    /// Project 1 on 127.0.0.1, accepting `token`.
    pub fn with_token(token: &str) -> FakeSemaphoreOptions {
        FakeSemaphoreOptions {
            host: "127.0.0.1".to_owned(),
            project_id: 1,
            tokens: vec![token.to_owned()],
            ..FakeSemaphoreOptions::default()
        }
    }

    pub fn user(mut self, username: &str, password: &str) -> FakeSemaphoreOptions {
        self.users.push((username.to_owned(), password.to_owned()));
        self
    }

    pub fn shape(mut self, shape: ApiShape) -> FakeSemaphoreOptions {
        self.shape = shape;
        self
    }

    pub fn template(mut self, id: i64, template: FakeTemplate) -> FakeSemaphoreOptions {
        self.templates.insert(id, template);
        self
    }

    /// No project until one is created (see [`FakeSemaphoreOptions::fresh`]).
    pub fn fresh(mut self) -> FakeSemaphoreOptions {
        self.fresh = true;
        self
    }
}
