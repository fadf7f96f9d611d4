//! Logging: `tracing`, JSON on Lambda. The filter comes from `RUST_LOG` (default `info`).
//! Record payloads are never logged: only coordinates, counts, kinds and timings.
//!
//! What gets installed is decided by [`LogSetup::decide`] from its inputs alone (format, writer,
//! `RUST_LOG`, `NO_COLOR`, whether the writer is a terminal), so that the decision is tested
//! without a global subscriber, which a process can set only once.

use std::ffi::OsStr;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (the default on Lambda).
    Json,
    /// Human-readable lines (the default elsewhere).
    Text,
}

/// Where the logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogWriter {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl LogWriter {
    fn is_terminal(self) -> bool {
        match self {
            Self::Stdout => std::io::stdout().is_terminal(),
            Self::Stderr => std::io::stderr().is_terminal(),
        }
    }
}

/// The subscriber to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogSetup {
    /// JSON lines or text.
    pub format: LogFormat,
    /// Where logs go.
    pub writer: LogWriter,
    /// ANSI colours: only for text written to a terminal, and not when `NO_COLOR` is set.
    pub ansi: bool,
    /// The filter's directives: `RUST_LOG`, or the default when it is unset, blank or invalid.
    pub filter: String,
    /// A warning to log once the subscriber is installed: `RUST_LOG` was set but does not parse.
    pub warning: Option<String>,
}

impl LogSetup {
    /// Decides the subscriber from its inputs: `rust_log` and `no_color` are the variables'
    /// values (`None` when unset), `writer_is_terminal` whether `writer` is a terminal.
    ///
    /// A blank `RUST_LOG` means the default, as every blank variable does. One that the filter
    /// cannot parse is named in a warning and the default is used; the warning is let through
    /// the default filter, so it shows even when that filter is `error`.
    pub(crate) fn decide(
        format: LogFormat,
        writer: LogWriter,
        default_filter: &str,
        rust_log: Option<&OsStr>,
        no_color: Option<&OsStr>,
        writer_is_terminal: bool,
    ) -> Self {
        let ansi = format == LogFormat::Text
            && writer_is_terminal
            && no_color.is_none_or(|v| v.is_empty());
        let invalid = |why: String| {
            (
                format!("{default_filter},{}=warn", module_path!()),
                Some(format!(
                    "{why}: logging with the default filter `{default_filter}` instead"
                )),
            )
        };
        let (filter, warning) = match rust_log.map(OsStr::to_str) {
            None => (default_filter.to_owned(), None),
            Some(None) => invalid("RUST_LOG is not valid UTF-8".into()),
            Some(Some(v)) if v.trim().is_empty() => (default_filter.to_owned(), None),
            Some(Some(v)) => match EnvFilter::try_new(v.trim()) {
                Ok(_) => (v.trim().to_owned(), None),
                Err(e) => invalid(format!("RUST_LOG={v:?} is not a valid log filter ({e})")),
            },
        };
        Self {
            format,
            writer,
            ansi,
            filter,
            warning,
        }
    }

    /// Installs this as the global subscriber (once; later calls do nothing), then logs the
    /// warning, if any.
    pub fn install(&self) {
        let filter = EnvFilter::try_new(&self.filter).unwrap_or_else(|_| EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(self.ansi);
        let _ = match (self.format, self.writer) {
            (LogFormat::Json, writer) => {
                let builder = builder.json().flatten_event(true).with_current_span(false);
                match writer {
                    LogWriter::Stdout => builder.with_writer(std::io::stdout).try_init(),
                    LogWriter::Stderr => builder.with_writer(std::io::stderr).try_init(),
                }
            }
            (LogFormat::Text, writer) => {
                let builder = builder.with_target(false);
                match writer {
                    LogWriter::Stdout => builder.with_writer(std::io::stdout).try_init(),
                    LogWriter::Stderr => builder.with_writer(std::io::stderr).try_init(),
                }
            }
        };
        if let Some(warning) = &self.warning {
            tracing::warn!("{warning}");
        }
    }
}

fn install(format: LogFormat, writer: LogWriter, default_filter: &str) {
    LogSetup::decide(
        format,
        writer,
        default_filter,
        std::env::var_os("RUST_LOG").as_deref(),
        std::env::var_os("NO_COLOR").as_deref(),
        writer.is_terminal(),
    )
    .install()
}

/// Installs the global subscriber of a Lambda function (once; later calls do nothing): JSON to
/// stdout, text to stderr, default filter `info`.
pub fn init(format: LogFormat) {
    let writer = match format {
        LogFormat::Json => LogWriter::Stdout,
        LogFormat::Text => LogWriter::Stderr,
    };
    install(format, writer, "info")
}

/// Installs the global subscriber of an `esm` tool (once; later calls do nothing): logs go to
/// stderr in either format, so stdout keeps the tool's own output; `default_filter` applies when
/// `RUST_LOG` is unset, blank or invalid.
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    install(format, LogWriter::Stderr, default_filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(
        format: LogFormat,
        rust_log: Option<&str>,
        no_color: Option<&str>,
        terminal: bool,
    ) -> LogSetup {
        LogSetup::decide(
            format,
            LogWriter::Stderr,
            "error",
            rust_log.map(OsStr::new),
            no_color.map(OsStr::new),
            terminal,
        )
    }

    #[test]
    fn colours_only_for_text_on_a_terminal_without_no_color() {
        assert!(decide(LogFormat::Text, None, None, true).ansi);
        assert!(decide(LogFormat::Text, None, Some(""), true).ansi);
        assert!(!decide(LogFormat::Text, None, None, false).ansi);
        assert!(!decide(LogFormat::Text, None, Some("1"), true).ansi);
        assert!(!decide(LogFormat::Json, None, None, true).ansi);
        assert!(!decide(LogFormat::Json, None, None, false).ansi);
    }

    #[test]
    fn the_format_and_writer_are_kept() {
        let setup = decide(LogFormat::Json, None, None, false);
        assert_eq!(
            (setup.format, setup.writer),
            (LogFormat::Json, LogWriter::Stderr)
        );
    }

    #[test]
    fn rust_log_when_it_parses_else_the_default_with_a_warning() {
        let setup = decide(LogFormat::Text, Some("esm::poll=info,warn"), None, false);
        assert_eq!(setup.filter, "esm::poll=info,warn");
        assert_eq!(setup.warning, None);

        for unset_or_blank in [None, Some(""), Some("  ")] {
            let setup = decide(LogFormat::Text, unset_or_blank, None, false);
            assert_eq!(setup.filter, "error", "{unset_or_blank:?}");
            assert_eq!(setup.warning, None, "{unset_or_blank:?}");
        }

        for bad in ["info,kafka_esm=loud", "[{", "a=b=c"] {
            let setup = decide(LogFormat::Text, Some(bad), None, false);
            let warning = setup.warning.expect(bad);
            assert!(
                warning.starts_with(&format!("RUST_LOG={bad:?} is not a valid log filter")),
                "{warning}"
            );
            assert!(
                warning.ends_with("logging with the default filter `error` instead"),
                "{warning}"
            );
            // The default, plus this module's warnings so that the warning itself shows.
            assert_eq!(setup.filter, "error,kafka_esm::observability=warn");
            assert!(EnvFilter::try_new(&setup.filter).is_ok());
        }
    }

    #[cfg(unix)]
    #[test]
    fn rust_log_that_is_not_utf8_is_named_too() {
        use std::os::unix::ffi::OsStrExt;
        let setup = LogSetup::decide(
            LogFormat::Json,
            LogWriter::Stdout,
            "info",
            Some(OsStr::from_bytes(b"\xff")),
            None,
            false,
        );
        assert_eq!(
            setup.warning.as_deref(),
            Some("RUST_LOG is not valid UTF-8: logging with the default filter `info` instead")
        );
        assert_eq!(setup.filter, "info,kafka_esm::observability=warn");
    }
}
