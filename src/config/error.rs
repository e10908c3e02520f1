//! Configuration errors. Every problem names where it is (`file:line:column` or the environment
//! variable) and the key path, and says what to change. All validation problems are reported at
//! once; a parse error (malformed YAML, wrong type, unknown key) stops at the first.

use std::fmt;
use std::path::PathBuf;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file does not exist.
    #[error(
        "{}: configuration file not found. Create one by copying the sample `hestia_config.yml` \
         from the Hestia repository, or write your own against `hestia config schema` \
         (a JSON schema); or point `--config` / `HESTIA_CONFIG` at an existing file",
        path.display()
    )]
    Missing { path: PathBuf },
    /// The file exists but could not be read.
    #[error("{}: cannot read the configuration file: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or does not fit the schema (wrong type, unknown key, ...).
    #[error("{0}")]
    Parse(Box<Diagnostic>),
    /// The document parsed but some values are inconsistent; every problem found is listed.
    #[error("{} problem(s) in the configuration:\n{}", .0.len(), render_all(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    /// The file could not be parsed: `problem` at `pos` of `file`, under `key_path`.
    pub(crate) fn parse_at(
        file: &std::path::Path,
        pos: super::spans::Pos,
        key_path: String,
        problem: Problem,
    ) -> ConfigError {
        ConfigError::Parse(Box::new(Diagnostic {
            origin: Origin::File {
                file: file.to_path_buf(),
                line: pos.line,
                column: pos.column,
            },
            key_path,
            problem,
        }))
    }

    /// Every located problem this error carries (empty for `Missing` / `Read`).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Parse(one) => std::slice::from_ref(one.as_ref()),
            ConfigError::Invalid(all) => all,
            ConfigError::Missing { .. } | ConfigError::Read { .. } => &[],
        }
    }
}

fn render_all(diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(|d| format!("  {d}")).collect();
    lines.join("\n")
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A position in the configuration file (1-based line and column).
    File {
        file: PathBuf,
        line: usize,
        column: usize,
    },
    /// An environment variable override.
    Env { var: String },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { file, line, column } => write!(f, "{}:{line}:{column}", file.display()),
            Origin::Env { var } => write!(f, "environment variable {var}"),
        }
    }
}

/// One problem: where, which key, and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{origin}: {key_path}: {problem}")]
pub struct Diagnostic {
    pub origin: Origin,
    /// Dotted key path, with `[i]` for list items (`routing_rules[0].priority`).
    pub key_path: String,
    pub problem: Problem,
}

impl Diagnostic {
    /// Line of a file diagnostic (0 for environment overrides).
    pub fn line(&self) -> usize {
        match self.origin {
            Origin::File { line, .. } => line,
            Origin::Env { .. } => 0,
        }
    }

    /// Column of a file diagnostic (0 for environment overrides).
    pub fn column(&self) -> usize {
        match self.origin {
            Origin::File { column, .. } => column,
            Origin::Env { .. } => 0,
        }
    }
}

/// What is wrong with one key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Problem {
    #[error("{message}")]
    Syntax { message: String },
    #[error("unknown key `{key}`{}", suggestion_text(.suggestion, .expected))]
    UnknownKey {
        key: String,
        suggestion: Option<String>,
        expected: Vec<String>,
    },
    #[error("unknown variant `{variant}`{}", suggestion_text(.suggestion, .expected))]
    UnknownVariant {
        variant: String,
        suggestion: Option<String>,
        expected: Vec<String>,
    },
    #[error("missing required key `{key}`")]
    MissingKey { key: String },
    #[error("only one alternative may be set here; `{key}` is a second one (remove one of them)")]
    SecondAlternative { key: String },
    #[error("expected {expected}")]
    WrongType { expected: &'static str },
    #[error("`{flat}` and `{rich}` mean the same thing; keep only one of them")]
    Conflict { flat: String, rich: String },
    #[error(
        "no way to tell when the service is ready: add `readiness` (http or tcp), `health_url`, \
         or `warmup_ms`"
    )]
    NoReadiness,
    #[error("must be {expected}, got {value}")]
    OutOfRange {
        value: String,
        expected: &'static str,
    },
    #[error("priority {priority} is also used by rule `{other}`; priorities must be unique")]
    DuplicatePriority { priority: i64, other: String },
    #[error("unknown machine `{name}`{}", known_text(.known))]
    UnknownMachine { name: String, known: Vec<String> },
    #[error("unknown service `{name}`{}", known_text(.known))]
    UnknownService { name: String, known: Vec<String> },
    #[error("`machine` and `machines` both set; use `machines: [...]` for several candidates")]
    MachineAndMachines,
    #[error("invalid URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("invalid address `{value}`: {reason}")]
    BadAddress { value: String, reason: String },
    #[error("{kind} id `{id}` is not URL-safe: use only letters, digits, `.`, `_` and `-`")]
    BadId { kind: &'static str, id: String },
    #[error("this uses Semaphore, which needs {missing}: {fix}")]
    SemaphoreNotConfigured {
        missing: &'static str,
        fix: &'static str,
    },
    #[error("a `{role}` machine needs an `address` (host name or IP)")]
    AddressRequired { role: &'static str },
    #[error("`{method}` is not an HTTP method (e.g. POST, GET, DELETE)")]
    BadMethod { method: String },
    #[error("invalid log filter `{filter}`: {reason} (e.g. `info` or `hestia=debug,sqlx=warn`)")]
    BadLogFilter { filter: String, reason: String },
    #[error(
        "{user} uses Semaphore at {base_url}, but no credentials are configured, so starting it \
         fails (start-failed) until you set `semaphore.api_token` (or `username` and `password`) \
         in the file, or SEMAPHORE_API_TOKEN (or SEMAPHORE_USERNAME and SEMAPHORE_PASSWORD) in \
         the environment; the other services are not affected"
    )]
    SemaphoreNoCredentials { user: String, base_url: String },
    #[error(
        "no `{var}`: a service defined only by environment variables needs its base URL \
         (or define the service in the file)"
    )]
    EnvServiceNeedsBaseUrl { var: String },
    #[error(
        "this service is not in the file: it is defined by the environment variables \
         {prefix}_* (base URL, ready after its warm-up, 0 ms unless {prefix}_WARMUP_MS or \
         {prefix}_HEALTH_URL says otherwise)"
    )]
    DefinedByEnvironment { prefix: String },
    #[error("`semaphore_enabled: true` needs `semaphore_start_template_id`")]
    SemaphoreTemplateMissing,
    #[error("invalid MAC address `{value}`: expected six hex bytes like aa:bb:cc:dd:ee:ff")]
    BadMac { value: String },
    #[error("invalid status `{value}`: expected a code like 200 or a range like \"200-299\"")]
    BadStatus { value: String },
    #[error("must not be empty")]
    Empty,
    #[error("model `{model}` is also served by service `{other}`; a model names one service")]
    DuplicateModel { model: String, other: String },
    #[error("unknown strategy `{name}`{}", known_text(.known))]
    UnknownStrategy { name: String, known: Vec<String> },
    #[error("{reason}")]
    BadStrategy { reason: String },
    #[error(
        "not an argon2 password hash (it must start with `$argon2`); create one with \
         `hestia hash-password`"
    )]
    BadPasswordHash,
    #[error(
        "`{value}` is not a SHA-256 digest: expected 64 hex digits (`printf %s \"$KEY\" | sha256sum`)"
    )]
    BadDigest { value: String },
    #[error("{reason}")]
    BadScope { reason: String },
    #[error("`{entry}` is not `name:sha256:scope,scope`")]
    BadKeyEntry { entry: String },
    #[error("`{value}` is not {expected}")]
    BadValue {
        value: String,
        expected: &'static str,
    },
}

fn suggestion_text(suggestion: &Option<String>, expected: &[String]) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None if expected.is_empty() => String::new(),
        None => format!(" (expected one of: {})", expected.join(", ")),
    }
}

fn known_text(known: &[String]) -> String {
    if known.is_empty() {
        " (none are configured)".to_owned()
    } else {
        format!(" (known: {})", known.join(", "))
    }
}

/// The closest of `candidates` to `word`, if one is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.to_owned())
}
