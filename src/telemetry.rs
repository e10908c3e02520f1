//! Logging: tracing to stderr, `pretty` or `json`, with the level from the config or `HESTIA_LOG`.
//!
//! sqlx logs every query at INFO; it is held at `warn` unless the filter names it explicitly.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(log: &LogConfig) {
    let mut filter = log.level.clone();
    for quiet in [
        "sqlx",
        "sea_orm",
        "sea_orm_migration",
        "hyper_util",
        "reqwest",
    ] {
        if !filter.contains(quiet) {
            filter.push_str(&format!(",{quiet}=warn"));
        }
    }
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_span_events(FmtSpan::NONE);
    let _ = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
