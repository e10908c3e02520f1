//! The `hestia` command line: one function per subcommand (design.md §2.3).
//!
//! `serve`, `migrate` and `config` work on the local configuration; `status`, `start` and `stop`
//! are clients of a running Hestia (`--url`); `sim` runs the simulated backend.

mod client;
pub mod fake_semaphore;
pub mod healthcheck;
pub mod keys;
pub mod semaphore;
pub mod sim;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, env::ProcessEnv};

#[derive(Debug, Parser)]
#[command(
    name = "hestia",
    version,
    about = "A personal on-demand service gateway"
)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        long,
        global = true,
        env = "HESTIA_CONFIG",
        default_value = "hestia_config.yml"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the gateway (applies pending database migrations first).
    Serve,
    /// Check the configuration or print its JSON Schema.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Run a simulated backend (for demos and tests).
    Sim(sim::SimArgs),
    /// Run a fake Semaphore server (for demos and tests).
    FakeSemaphore(fake_semaphore::Args),
    /// Show the status of every service, or of one.
    Status {
        service: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Start a service.
    Start {
        service: String,
        /// Wait until the service is ready (or failed).
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop a service.
    Stop {
        service: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set Semaphore up for Hestia.
    Semaphore {
        #[command(subcommand)]
        action: semaphore::SemaphoreAction,
    },
    /// Exit 0 if the Hestia this config describes answers /healthz (the container HEALTHCHECK).
    Healthcheck,
    /// Create, list or revoke API keys (in the configured database).
    Keys {
        #[command(subcommand)]
        action: keys::KeysAction,
    },
    /// Read a password from standard input and print its argon2id hash (for
    /// auth.dashboard_password_hash).
    HashPassword,
    /// Print the last lines of a service's own output (its log file).
    Logs {
        service: String,
        /// How many of the last lines.
        #[arg(long, short = 'n', default_value_t = 100)]
        lines: usize,
        /// Keep printing new lines as the service writes them.
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Load and validate a configuration; print one line per service.
    Check {
        /// Defaults to `--config`.
        path: Option<PathBuf>,
    },
    /// Print the configuration's JSON Schema (for editor completion).
    Schema,
}

#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Where Hestia listens.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Runs one command; the exit code is the command's verdict.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve => serve(&cli.config).await,
        Command::Config {
            action: ConfigAction::Check { path },
        } => Ok(config_check(path.as_deref().unwrap_or(&cli.config))),
        Command::Config {
            action: ConfigAction::Schema,
        } => {
            println!("{}", serde_json::to_string_pretty(&config::json_schema())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => migrate(&cli.config).await,
        Command::Sim(args) => {
            tool_logging();
            hestia_actors::harness::run(args.into_options(), crate::shutdown::signal()?).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::FakeSemaphore(args) => {
            tool_logging();
            args.run(crate::shutdown::signal()?).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { service, client } => client::status(&client, service.as_deref()).await,
        Command::Start {
            service,
            wait,
            client,
        } => client::start(&client, &service, wait).await,
        Command::Stop { service, client } => client::stop(&client, &service).await,
        Command::Semaphore {
            action: semaphore::SemaphoreAction::Bootstrap(args),
        } => {
            tool_logging();
            let report = semaphore::bootstrap(&cli.config, &args, &ProcessEnv).await?;
            for line in report.lines(&cli.config) {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck => Ok(healthcheck::run(&load(&cli.config)?).await),
        Command::Keys { action } => keys::run(&cli.config, action).await,
        Command::HashPassword => keys::hash_password(),
        Command::Logs {
            service,
            lines,
            follow,
            client,
        } => client::logs(&client, &service, lines, follow).await,
    }
}

/// Logging for the helper processes (`sim`, `fake-semaphore`), which have no config file.
fn tool_logging() {
    crate::telemetry::init(&config::LogConfig {
        level: "info".into(),
        format: config::LogFormat::Pretty,
    });
}

fn load(path: &Path) -> anyhow::Result<config::Config> {
    Ok(config::load(path, &ProcessEnv)?)
}

async fn serve(path: &Path) -> anyhow::Result<ExitCode> {
    let config = load(path)?;
    crate::telemetry::init(&config.log);
    crate::serve::run(config, crate::shutdown::signal()?).await?;
    Ok(ExitCode::SUCCESS)
}

fn config_check(path: &Path) -> ExitCode {
    match config::load(path, &ProcessEnv) {
        Ok(config) => {
            println!(
                "{}: ok, {} service(s)",
                path.display(),
                config.engine.services.len()
            );
            for line in config.summary_lines() {
                println!("  {line}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(path: &Path) -> anyhow::Result<ExitCode> {
    let config = load(path)?;
    // Opening applies whatever is pending.
    hestia_actors::persistence::open(&config.database_url)
        .await
        .with_context(|| format!("migrating {}", config.database_url))?;
    println!(
        "{}: migrations applied, the schema is up to date",
        config.database_url
    );
    Ok(ExitCode::SUCCESS)
}
