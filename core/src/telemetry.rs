//! Logging and tracing set-up: text or JSON lines, filter from config or `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, RawLog};

/// Install the global subscriber; a second call is a no-op.
pub fn init(log: &RawLog) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
