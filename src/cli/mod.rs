//! The `hestia` command line: one function per subcommand (design.md §2.3).
//!
//! `serve`, `migrate` and `config` work on the local configuration; `status`, `start`, `stop` and
//! `activity` are clients of a running Hestia (`--url`, see [`client`]); `sim` runs the simulated
//! backend. Each command offers only the options it uses.

pub mod client;
#[cfg(feature = "fake-semaphore")]
pub mod fake_semaphore;
pub mod healthcheck;
pub mod keys;
pub mod semaphore;
pub mod sim;
pub mod sse;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, env::ProcessEnv};

#[derive(Debug, Parser)]
#[command(
    name = "hestia",
    version,
    about = "A personal on-demand service gateway",
    after_help = client::EXIT_CODES_HELP
)]
pub struct Cli {
    /// The configuration file, for the commands that read one (they also take it after their
    /// name) [default: hestia_config.yml].
    #[arg(long, env = "HESTIA_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// `hestia serve`: a long-running gateway (the allocator is tuned for it).
    pub fn serves(&self) -> bool {
        matches!(self.command, Command::Serve { .. })
    }
}

/// Where the configuration is when nothing says.
pub const DEFAULT_CONFIG: &str = "hestia_config.yml";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the gateway (applies pending database migrations first). The configuration file is
    /// reloaded when it changes, on SIGHUP and on `POST /v1/config/reload`.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
        /// Do not watch the file (SIGHUP and the API still reload it).
        #[arg(long)]
        no_watch: bool,
    },
    /// Check the configuration or print its JSON Schema.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Apply pending database migrations and exit.
    Migrate(ConfigArg),
    /// Run a simulated backend (for demos and tests).
    Sim(sim::SimArgs),
    /// Run a fake Semaphore server (for demos and tests).
    #[cfg(feature = "fake-semaphore")]
    FakeSemaphore(fake_semaphore::Args),
    /// Show the status of every service, or of one.
    #[command(after_help = client::EXIT_CODES_HELP)]
    Status {
        /// Only this service.
        service: Option<String>,
        /// `table` for people, `json` for scripts (the API's answer as it is).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Start a service; a service already starting or ready is left alone (exit 0, with a note).
    #[command(after_help = client::EXIT_CODES_HELP)]
    Start {
        /// The service's id.
        service: String,
        /// Wait until the service is ready or its start failed, showing its progress.
        #[arg(long)]
        wait: bool,
        /// `table` prints a line for people; `json` prints the service's status afterwards.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop a service; a service already cold is left alone (exit 0, with a note).
    #[command(after_help = client::EXIT_CODES_HELP)]
    Stop {
        /// The service's id.
        service: String,
        /// `table` prints a line for people; `json` prints the service's status afterwards.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the recorded activity, oldest first; `--follow` keeps printing it as it happens.
    #[command(after_help = client::EXIT_CODES_HELP)]
    Activity(client::ActivityArgs),
    /// Set Semaphore up for Hestia.
    Semaphore {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: semaphore::SemaphoreAction,
    },
    /// Exit 0 if the Hestia this config describes answers /healthz (the container HEALTHCHECK).
    Healthcheck(ConfigArg),
    /// Create, list or revoke API keys (in the configured database).
    Keys {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: keys::KeysAction,
    },
    /// Read a password from standard input and print its argon2id hash (for
    /// auth.dashboard_password_hash).
    HashPassword,
    /// Print the last lines of a service's own output (its log file).
    #[command(after_help = client::EXIT_CODES_HELP)]
    Logs {
        /// The service's id.
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
        /// The configuration file [default: `--config`, else hestia_config.yml].
        path: Option<PathBuf>,
    },
    /// Print the configuration's JSON Schema (for editor completion).
    Schema,
}

/// The configuration file of the commands that read one.
#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// The configuration file [default: `HESTIA_CONFIG`, else hestia_config.yml].
    #[arg(long = "config", global = true, value_name = "CONFIG")]
    pub path: Option<PathBuf>,
}

impl ConfigArg {
    /// This command's `--config`, else the one given before the command (or `HESTIA_CONFIG`).
    fn resolve(self, outer: Option<&Path>) -> PathBuf {
        self.path
            .or_else(|| outer.map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
    }
}

/// How a client command finds and authenticates to a running Hestia.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Hestia's base URL, e.g. `http://hestia:8080` [default: the configuration's `listen`
    /// address (or `HESTIA_LISTEN`), on loopback when it listens on every interface].
    #[arg(long, env = "HESTIA_URL")]
    pub url: Option<String>,
    /// An API key, sent as `Authorization: Bearer <key>` (needed when Hestia's auth is on).
    #[arg(long, env = "HESTIA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The configuration file to read the address from when no URL is given
    /// [default: `HESTIA_CONFIG`, else hestia_config.yml].
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl ClientArgs {
    /// The configuration file these arguments point at (`--config` before the command counts).
    pub fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
    }

    fn with_outer(mut self, outer: Option<&Path>) -> ClientArgs {
        if self.config.is_none() {
            self.config = outer.map(Path::to_path_buf);
        }
        self
    }
}

/// How a client command prints its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns and short lines, for people.
    #[value(alias = "text")]
    Table,
    /// JSON, for scripts.
    Json,
}

/// Runs one command; the exit code is the command's verdict.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let outer = cli.config.as_deref();
    match cli.command {
        Command::Serve { config, no_watch } => serve(&config.resolve(outer), !no_watch).await,
        Command::Config {
            action: ConfigAction::Check { path },
        } => Ok(config_check(&ConfigArg { path }.resolve(outer))),
        Command::Config {
            action: ConfigAction::Schema,
        } => {
            println!("{}", serde_json::to_string_pretty(&config::json_schema())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate(config) => migrate(&config.resolve(outer)).await,
        Command::Sim(args) => {
            tool_logging();
            hestia_actors::harness::run(args.into_options(), crate::shutdown::signal()?).await?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "fake-semaphore")]
        Command::FakeSemaphore(args) => {
            tool_logging();
            args.run(crate::shutdown::signal()?).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            service,
            format,
            client,
        } => Ok(client::status(&client.with_outer(outer), service.as_deref(), format).await),
        Command::Start {
            service,
            wait,
            format,
            client,
        } => Ok(client::start(&client.with_outer(outer), &service, wait, format).await),
        Command::Stop {
            service,
            format,
            client,
        } => Ok(client::stop(&client.with_outer(outer), &service, format).await),
        Command::Activity(mut args) => {
            args.client = args.client.with_outer(outer);
            Ok(client::activity(&args).await)
        }
        Command::Semaphore {
            config,
            action: semaphore::SemaphoreAction::Bootstrap(args),
        } => {
            tool_logging();
            let path = config.resolve(outer);
            let report = semaphore::bootstrap(&path, &args, &ProcessEnv).await?;
            for line in report.lines(&path) {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck(config) => Ok(healthcheck::run(&load(&config.resolve(outer))?).await),
        Command::Keys { config, action } => keys::run(&config.resolve(outer), action).await,
        Command::HashPassword => keys::hash_password(),
        Command::Logs {
            service,
            lines,
            follow,
            client,
        } => Ok(client::logs(&client.with_outer(outer), &service, lines, follow).await),
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

async fn serve(path: &Path, watch: bool) -> anyhow::Result<ExitCode> {
    let config = load(path)?;
    crate::telemetry::init(&config.log);
    let reloading = crate::serve::Reloading {
        watch,
        sighup: true,
    };
    crate::serve::run(config, crate::shutdown::Shutdown::signals()?, reloading).await?;
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
            for warning in &config.warnings {
                eprintln!("warning: {warning}");
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
