//! Telemetry: what the server tells its operator about itself. Today that is the log, written by
//! a `tracing` subscriber to standard error and filtered by `SWITCHBOARD_LOG` (an `EnvFilter`
//! directive such as `debug` or `switchboard::store=debug`; `info` when unset or unreadable).
//! Metrics will be set up here too.

use tracing_subscriber::EnvFilter;

/// The environment variable that holds the log filter.
pub const LOG_ENV: &str = "SWITCHBOARD_LOG";

/// Installs the log subscriber for the whole process. Call it once, first thing in `main`.
pub fn init() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
}
