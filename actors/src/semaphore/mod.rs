//! Semaphore UI (Ansible) as a start mechanism: the HTTP client ([`SemaphoreClient`]), the task
//! shapes it reads (lenient about the 2.10 and 2.16 variants), and its errors, which say what to
//! fix and never carry the API token or password. The wire contract is
//! `shared/reference/semaphore-contract.md`; the fake server in `fake_semaphore` follows it.

mod admin;
mod client;

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

pub use admin::{
    AccessKey, ApiToken, Environment, Inventory, NewTemplate, Project, Repository, Template, User,
};
pub use client::{RunOptions, SemaphoreClient};

/// How many lines of a failed task's output go into its error.
pub const OUTPUT_TAIL_LINES: usize = 20;

/// A task's status (`pkg/task_logger/task_logger.go`). Unknown strings are kept, not terminal.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub enum TaskStatus {
    Waiting,
    Starting,
    WaitingConfirmation,
    Confirmed,
    Rejected,
    Running,
    Stopping,
    Stopped,
    Success,
    Error,
    Other(String),
}

impl From<String> for TaskStatus {
    fn from(text: String) -> TaskStatus {
        match text.as_str() {
            "waiting" => TaskStatus::Waiting,
            "starting" => TaskStatus::Starting,
            "waiting_confirmation" => TaskStatus::WaitingConfirmation,
            "confirmed" => TaskStatus::Confirmed,
            "rejected" => TaskStatus::Rejected,
            "running" => TaskStatus::Running,
            "stopping" => TaskStatus::Stopping,
            "stopped" => TaskStatus::Stopped,
            "success" => TaskStatus::Success,
            "error" => TaskStatus::Error,
            _ => TaskStatus::Other(text),
        }
    }
}

impl TaskStatus {
    /// The wire string.
    pub fn as_str(&self) -> &str {
        match self {
            TaskStatus::Waiting => "waiting",
            TaskStatus::Starting => "starting",
            TaskStatus::WaitingConfirmation => "waiting_confirmation",
            TaskStatus::Confirmed => "confirmed",
            TaskStatus::Rejected => "rejected",
            TaskStatus::Running => "running",
            TaskStatus::Stopping => "stopping",
            TaskStatus::Stopped => "stopped",
            TaskStatus::Success => "success",
            TaskStatus::Error => "error",
            TaskStatus::Other(text) => text,
        }
    }

    /// `success`, `error` or `stopped` (Semaphore's own `IsFinished`).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            TaskStatus::Success | TaskStatus::Error | TaskStatus::Stopped
        )
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task as `POST …/tasks` and `GET …/tasks/{id}` return it. Fields absent (2.16 omitempty) and
/// `null` (2.10) both read as `None`; unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Task {
    pub id: i64,
    #[serde(default)]
    pub template_id: i64,
    pub status: TaskStatus,
    pub created: Option<DateTime<Utc>>,
    /// Set when the task began `running`.
    pub start: Option<DateTime<Utc>>,
    /// Set when the runner finished.
    pub end: Option<DateTime<Utc>>,
    pub message: Option<String>,
}

/// One line of `GET …/tasks/{id}/output` (2.10 adds `task`, 2.16 adds `id`; both ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OutputLine {
    pub time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub output: String,
}

/// Why a Semaphore call or task failed. Never carries the token or the password.
#[derive(Debug, thiserror::Error)]
pub enum SemaphoreError {
    #[error("could not build the HTTP client for Semaphore: {reason}")]
    Client { reason: String },
    #[error("could not reach Semaphore at {base_url} ({method} {path}): {reason}")]
    Unreachable {
        base_url: String,
        method: &'static str,
        path: String,
        reason: String,
    },
    #[error(
        "Semaphore at {base_url} rejected the API token (401 on {method} {path}): check \
         `semaphore.api_token` or SEMAPHORE_API_TOKEN (create one under User menu → API Tokens)"
    )]
    BadToken {
        base_url: String,
        method: &'static str,
        path: String,
    },
    #[error(
        "Semaphore at {base_url} rejected the login of `{username}` (401): check \
         `semaphore.username`/`semaphore.password` or SEMAPHORE_USERNAME/SEMAPHORE_PASSWORD"
    )]
    BadLogin { base_url: String, username: String },
    #[error(
        "Semaphore at {base_url} wants a second factor for `{username}` ({reason}); use an API \
         token (`semaphore.api_token`) instead"
    )]
    SessionNotVerified {
        base_url: String,
        username: String,
        reason: String,
    },
    #[error(
        "Semaphore at {base_url} needs credentials (401 on {method} {path}): set \
         `semaphore.api_token` or SEMAPHORE_API_TOKEN"
    )]
    NoCredentials {
        base_url: String,
        method: &'static str,
        path: String,
    },
    #[error(
        "Semaphore at {base_url} refused {method} {path} (403{detail}): the user needs the owner, \
         manager or task_runner role in project {project_id}"
    )]
    Forbidden {
        base_url: String,
        method: &'static str,
        path: String,
        project_id: i64,
        detail: String,
    },
    #[error(
        "Semaphore at {base_url}: template {template_id} cannot run in project {project_id} \
         ({status} on {method} {path}): the template or project does not exist, the user is not \
         a member, or the template has no Variable Group"
    )]
    TemplateUnusable {
        base_url: String,
        method: &'static str,
        path: String,
        project_id: i64,
        template_id: i64,
        status: u16,
    },
    #[error(
        "Semaphore at {base_url}: task {task_id} of project {project_id} is gone (400 on {method} {path})"
    )]
    TaskGone {
        base_url: String,
        method: &'static str,
        path: String,
        project_id: i64,
        task_id: i64,
    },
    #[error("Semaphore at {base_url} answered {status} to {method} {path}{body}")]
    Status {
        base_url: String,
        method: &'static str,
        path: String,
        status: u16,
        /// `: <first bytes>` or empty.
        body: String,
    },
    #[error("Semaphore at {base_url}: unexpected answer to {method} {path}: {reason}")]
    Decode {
        base_url: String,
        method: &'static str,
        path: String,
        reason: String,
    },
    #[error("{base_url}/api/ping answered {status} `{body}` instead of `pong`: is this Semaphore?")]
    NotSemaphore {
        base_url: String,
        status: u16,
        body: String,
    },
    #[error(
        "Semaphore task {task_id} (template {template_id}) ended `{status}`{}",
        output_tail(output)
    )]
    TaskFailed {
        task_id: i64,
        template_id: i64,
        status: TaskStatus,
        /// The last [`OUTPUT_TAIL_LINES`] lines, ANSI colours removed.
        output: Vec<String>,
    },
    #[error(
        "Semaphore task {task_id} (template {template_id}) did not finish within {timeout:?} \
         (last status `{status}`); it was asked to stop{}",
        output_tail(output)
    )]
    TaskTimedOut {
        task_id: i64,
        template_id: i64,
        timeout: Duration,
        status: TaskStatus,
        output: Vec<String>,
    },
}

/// `; last output:\n…` for a non-empty tail.
fn output_tail(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("; last output:\n{}", lines.join("\n"))
    }
}

/// Removes ANSI escape sequences (`ESC [ … letter`) that Ansible's coloured output carries.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() || c == '~' {
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_both_version_shapes_when_parsed_then_missing_and_null_fields_read_alike() {
        let v216 = r#"{"id":42,"template_id":3,"project_id":1,"status":"waiting","playbook":"",
            "environment":"{}","secret":"{}","user_id":1,"created":"2025-11-07T18:30:00.123456Z","limit":""}"#;
        let v210 = r#"{"id":42,"template_id":3,"project_id":1,"status":"waiting","debug":false,
            "environment":"{}","start":null,"end":null,"message":"","created":"2024-10-25T10:00:00Z",
            "arguments":null,"git_branch":null,"commit_hash":null,"version":null}"#;
        let a: Task = serde_json::from_str(v216).unwrap();
        let b: Task = serde_json::from_str(v210).unwrap();
        assert_eq!(
            (a.id, a.status.clone(), a.start),
            (42, TaskStatus::Waiting, None)
        );
        assert_eq!((b.id, b.status, b.end), (42, TaskStatus::Waiting, None));
    }

    #[test]
    fn given_an_unknown_status_then_it_is_kept_and_not_terminal() {
        let status = TaskStatus::from("paused_for_lunch".to_owned());
        assert!(!status.is_terminal());
        assert_eq!(status.as_str(), "paused_for_lunch");
        assert!(TaskStatus::Stopped.is_terminal());
    }

    #[test]
    fn given_coloured_ansible_output_then_colours_are_removed() {
        assert_eq!(
            strip_ansi("\u{1b}[0;31mfatal: [gpu]: UNREACHABLE!\u{1b}[0m"),
            "fatal: [gpu]: UNREACHABLE!"
        );
    }
}
