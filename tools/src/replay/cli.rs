//! The `esm replay` command line: options, configuration from the environment, output, exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use kafka_esm::observability;

use super::{
    ReplayError, ReplayOptions, Replayer, event_files, render_table, replay_config, replay_store,
};
use crate::handler::HandlerFactory;

/// `esm replay`: replay ESM event files (or directories of them) through the consumer, as Lambda
/// would run it.
///
/// The configuration is the Lambda's (its environment variables, and the handler's own settings:
/// [`HandlerFactory::read_settings`]). The idempotency store is the one IDEMPOTENCY_STORE names, as
/// for the Lambda, else the file idempotency.redb in --state-dir, so a second replay finds the
/// first's records as duplicates. Exit code: 0 when every invocation succeeded, 1 when one failed
/// or a file could not be read, 2 when the replay cannot start.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Event files, or directories whose *.json files are replayed in name order.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// One JSON object per event file, one per line.
    #[arg(long)]
    pub json: bool,
    /// Where the topic files live, and the idempotency store unless IDEMPOTENCY_STORE names one.
    #[arg(long, default_value = ".esm-state")]
    pub state_dir: PathBuf,
    /// Delete the state (topic files, and the state directory's idempotency store) first, once no
    /// other replay uses it. A store named by IDEMPOTENCY_STORE is never deleted.
    #[arg(long)]
    pub fresh: bool,
    /// Publish dead letters and the handler's messages to this Kafka cluster (host:port,...)
    /// instead of files, with every other KAFKA_* setting (authentication, TLS, properties) as the
    /// Lambda reads it.
    #[arg(long)]
    pub brokers: Option<String>,
    /// The function timeout given to each event, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    pub timeout_ms: u64,
}

/// Runs `esm replay` with the handler `factory` builds: the configuration from the process
/// environment, one table (or, with `--json`, one JSON line) per file on stdout, then a summary.
pub async fn run<F: HandlerFactory>(args: ReplayArgs, mut factory: F) -> ExitCode {
    let env = |name: &str| std::env::var(name).ok();
    let config = match replay_config(&env, args.brokers.as_deref(), &mut factory) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("esm replay: {e}");
            return ExitCode::from(2);
        }
    };
    let options = ReplayOptions {
        store: replay_store(&env, &config),
        state_dir: args.state_dir,
        fresh: args.fresh,
        brokers: args.brokers,
        timeout: Duration::from_millis(args.timeout_ms),
    };
    let json = args.json;
    // Human output goes to stdout; logs stay on stderr and quiet unless RUST_LOG says otherwise.
    observability::init_with_default(config.log_format, "error");
    // The inputs are checked before --fresh deletes anything.
    let started = async {
        let files = event_files(&args.paths)?;
        Ok::<_, ReplayError>((Replayer::new(&config, &options, &factory).await?, files))
    };
    let (replayer, files) = match started.await {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("esm replay: {e}");
            return ExitCode::from(2);
        }
    };
    let mut failed_invocations = 0;
    let mut unreadable = 0;
    for (n, file) in files.iter().enumerate() {
        let report = match replayer.replay_file(file, n).await {
            Ok(report) => report,
            Err(e) => {
                // This file fails; the others are still replayed.
                eprintln!("esm replay: {e}");
                unreadable += 1;
                continue;
            }
        };
        if !report.invocation_succeeded {
            failed_invocations += 1;
        }
        if json {
            println!(
                "{}",
                serde_json::to_string(&report).expect("a report serializes")
            );
        } else {
            println!("{}", render_table(&report, factory.messages_name()));
        }
    }
    if json {
        // The JSON lines stay one per file, and stderr holds only log lines (JSON ones with
        // LOG_FORMAT=json): the store is named in a log event (seen with RUST_LOG=info).
        tracing::info!(store = %replayer.store(), "esm replay: the idempotency store");
    } else {
        println!(
            "{} event file(s) replayed, {} invocation(s) failed.{}{} Idempotency store: {}.",
            files.len() - unreadable,
            failed_invocations,
            if unreadable > 0 {
                format!(" {unreadable} file(s) could not be read (above).")
            } else {
                String::new()
            },
            replayer
                .topics_dir()
                .map(|d| format!(
                    " Dead letters and {}: {}/<topic>.jsonl.",
                    factory.messages_name(),
                    d.display()
                ))
                .unwrap_or_default(),
            replayer.store()
        );
    }
    if failed_invocations > 0 || unreadable > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
