//! `hestia fake-semaphore`: the harness's fake Semaphore server as its own process, for demos and
//! trying Semaphore-started services without a real Semaphore. Flags map onto
//! [`FakeSemaphoreOptions`]; templates (timing, outcome, output, launch/kill) come from a JSON file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hestia_actors::fake_semaphore::{
    self, ApiShape, FakeSemaphoreError, FakeSemaphoreOptions, FakeTemplate,
};

/// Flags of `hestia fake-semaphore`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 3000)]
    pub port: u16,
    /// Interface to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// An API token the fake accepts (repeatable).
    #[arg(long = "token", value_name = "TOKEN", env = "FAKE_SEMAPHORE_TOKEN")]
    pub tokens: Vec<String>,
    /// A login the fake accepts, `USER:PASSWORD` (repeatable).
    #[arg(long = "user", value_name = "USER:PASSWORD", value_parser = parse_user)]
    pub users: Vec<(String, String)>,
    /// The one project the fake has.
    #[arg(long, default_value_t = 1)]
    pub project_id: i64,
    /// Which Semaphore version's JSON shapes to answer with.
    #[arg(long, value_enum, default_value_t = Shape::V2_16)]
    pub api: Shape,
    /// JSON file: `{"3": {"name": "start-llm", "run_ms": 2000, "outcome": "success",
    /// "output": ["..."], "effect": {"launch": {"key": "llm", "program": "hestia", "args": [...]}}}}`.
    #[arg(long, value_name = "FILE")]
    pub templates: Option<PathBuf>,
    /// Start as a just-installed Semaphore: no project until one is created through the API
    /// (what `hestia semaphore bootstrap` does).
    #[arg(long)]
    pub fresh: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    #[value(name = "2.16")]
    V2_16,
    #[value(name = "2.10")]
    V2_10,
}

/// Why `hestia fake-semaphore` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum FakeSemaphoreCommandError {
    #[error("cannot read the templates file `{path}`: {source}")]
    ReadTemplates {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the templates file `{path}` is not valid: {source}")]
    ParseTemplates {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Fake(#[from] FakeSemaphoreError),
}

fn parse_user(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((user, password)) if !user.is_empty() => Ok((user.to_owned(), password.to_owned())),
        _ => Err("expected USER:PASSWORD".to_owned()),
    }
}

impl Args {
    /// The fake's options these flags describe (reads the templates file).
    pub fn into_options(self) -> Result<FakeSemaphoreOptions, FakeSemaphoreCommandError> {
        let templates: BTreeMap<i64, FakeTemplate> = match &self.templates {
            None => BTreeMap::new(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| {
                    FakeSemaphoreCommandError::ReadTemplates {
                        path: path.clone(),
                        source,
                    }
                })?;
                serde_json::from_str(&text).map_err(|source| {
                    FakeSemaphoreCommandError::ParseTemplates {
                        path: path.clone(),
                        source,
                    }
                })?
            }
        };
        Ok(FakeSemaphoreOptions {
            host: self.host,
            port: self.port,
            tokens: self.tokens,
            users: self.users,
            project_id: self.project_id,
            shape: match self.api {
                Shape::V2_16 => ApiShape::V2_16,
                Shape::V2_10 => ApiShape::V2_10,
            },
            templates,
            fresh: self.fresh,
        })
    }

    /// Serves until `shutdown` resolves.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), FakeSemaphoreCommandError> {
        fake_semaphore::run(self.into_options()?, shutdown).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use hestia_actors::fake_semaphore::{Effect, Outcome};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn given_flags_and_a_templates_file_then_every_option_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("templates.json");
        std::fs::write(
            &file,
            r#"{"3": {"name": "start-llm", "run_ms": 200, "outcome": "error",
                      "output": ["fatal: no GPU"],
                      "effect": {"kill": {"key": "llm"}}}}"#,
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "fake-semaphore",
            "--port",
            "0",
            "--token",
            "abc",
            "--user",
            "admin:secret",
            "--api",
            "2.10",
            "--templates",
            file.to_str().unwrap(),
        ])
        .unwrap();
        let options = cli.args.into_options().unwrap();
        assert_eq!(options.tokens, ["abc"]);
        assert_eq!(options.users, [("admin".to_owned(), "secret".to_owned())]);
        assert_eq!(options.shape, ApiShape::V2_10);
        let template = &options.templates[&3];
        assert_eq!((template.run_ms, template.outcome), (200, Outcome::Error));
        assert_eq!(
            template.effect,
            Some(Effect::Kill {
                key: "llm".to_owned()
            })
        );
    }

    #[test]
    fn given_a_user_without_a_colon_then_it_is_refused() {
        assert!(Cli::try_parse_from(["fake-semaphore", "--user", "admin"]).is_err());
    }
}
