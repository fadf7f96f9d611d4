//! Logging: `tracing` to stdout, JSON on Lambda. The filter comes from `RUST_LOG` (default `info`).
//! Record payloads are never logged: only coordinates, counts, kinds and timings.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber (once; later calls do nothing).
pub fn init(format: LogFormat) {
    init_with_default(format, "info")
}

/// Installs the global subscriber with this default filter when `RUST_LOG` is unset.
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stdout)
            .try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
}
