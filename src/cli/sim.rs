//! `hestia sim`: run one simulated backend from the harness as its own process, for demos and
//! black-box tests. Flags map onto [`SimOptions`]; anything not given keeps the harness default.
//! Prints `hestia-sim listening on http://ADDR` once bound, stops cleanly on SIGTERM/SIGINT and
//! exits with status 3 when `--crash-after` fires.

use std::time::Duration;

use hestia_actors::harness::SimOptions;

/// Flags of `hestia sim`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SimArgs {
    /// Port to listen on; 0 picks a free one [default: 0].
    #[arg(long)]
    pub port: Option<u16>,
    /// Interface to listen on [default: 127.0.0.1].
    #[arg(long)]
    pub host: Option<String>,
    /// Name echoed in every response, to tell backends apart [default: sim].
    #[arg(long)]
    pub name: Option<String>,
    /// Wait this long before binding the port (a slow cold start) [default: 0].
    #[arg(long, value_name = "MS")]
    pub startup_delay_ms: Option<u64>,
    /// After binding, answer 503 on the ready path for this long [default: 0].
    #[arg(long, value_name = "MS")]
    pub ready_after_ms: Option<u64>,
    /// Readiness path, 200 {"status":"ok"} once ready [default: /health].
    #[arg(long, value_name = "PATH")]
    pub ready_path: Option<String>,
    /// After the start-up delay, exit with an error without ever listening.
    #[arg(long)]
    pub fail_to_start: bool,
    /// Exit with status 3 right after answering N requests (readiness probes not counted).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub crash_after: Option<u64>,
}

impl SimArgs {
    /// The harness options these flags describe.
    pub fn into_options(self) -> SimOptions {
        let defaults = SimOptions::default();
        SimOptions {
            name: self.name.unwrap_or(defaults.name),
            host: self.host.unwrap_or(defaults.host),
            port: self.port.unwrap_or(defaults.port),
            startup_delay: self
                .startup_delay_ms
                .map_or(defaults.startup_delay, Duration::from_millis),
            ready_path: self.ready_path.unwrap_or(defaults.ready_path),
            ready_after: self
                .ready_after_ms
                .map_or(defaults.ready_after, Duration::from_millis),
            fail_to_start: self.fail_to_start,
            crash_after: self.crash_after.or(defaults.crash_after),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn no_flags_give_the_harness_defaults() {
        let cli = Cli::try_parse_from(["sim"]).unwrap();
        assert_eq!(cli.sim.into_options(), SimOptions::default());
    }

    #[test]
    fn every_flag_reaches_its_option() {
        let cli = Cli::try_parse_from([
            "sim",
            "--port",
            "9001",
            "--host",
            "0.0.0.0",
            "--name",
            "llm",
            "--startup-delay-ms",
            "1500",
            "--ready-after-ms",
            "250",
            "--ready-path",
            "/v1/models",
            "--fail-to-start",
            "--crash-after",
            "3",
        ])
        .unwrap();
        let expected = SimOptions::named("llm")
            .host("0.0.0.0")
            .port(9001)
            .startup_delay(Duration::from_millis(1_500))
            .ready_after(Duration::from_millis(250))
            .ready_path("/v1/models")
            .fail_to_start(true)
            .crash_after(3);
        assert_eq!(cli.sim.into_options(), expected);
    }

    #[test]
    fn crash_after_zero_is_refused() {
        assert!(Cli::try_parse_from(["sim", "--crash-after", "0"]).is_err());
    }
}
