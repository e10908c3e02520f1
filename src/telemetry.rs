//! Logging: tracing to stderr, `pretty` or `json`, with the level from the config or `HESTIA_LOG`.
//!
//! sqlx logs every query at INFO; it is held at `warn` unless the filter names it explicitly.
//! Every line is [scrubbed](hestia_actors::redact::scrub) on its way out: URLs redacted, the
//! configured secrets masked, whatever the code that logged it printed.

use std::io::Write;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
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
        .with_writer(ScrubbedStderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_span_events(FmtSpan::NONE);
    let _ = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

/// Standard error, through [`hestia_actors::redact::scrub`]. The formatter writes each event
/// with one `write_all`, so a secret is never split between two writes.
#[derive(Debug, Clone, Copy)]
struct ScrubbedStderr;

impl<'a> MakeWriter<'a> for ScrubbedStderr {
    type Writer = ScrubbedStderr;

    fn make_writer(&'a self) -> ScrubbedStderr {
        ScrubbedStderr
    }
}

impl Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(hestia_actors::redact::scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
