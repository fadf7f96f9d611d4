//! `esm`: the command-line tool. `esm replay` runs event files through the consumer locally;
//! `esm generate` writes realistic batches.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use kafka_esm::config::{ConsumerConfig, LogFormat};
use kafka_esm::encode::Source;
use kafka_esm::generate::{GenerateOptions, generate_event};
use kafka_esm::observability;
use kafka_esm::replay::{ReplayOptions, Replayer, event_files, render_table};

#[derive(Parser)]
#[command(
    name = "esm",
    version,
    about = "Kafka event source mapping tools for the kafka-esm consumer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay ESM event files (or directories of them) through the consumer, as Lambda would run it.
    Replay {
        /// Event files, or directories whose *.json files are replayed in name order.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// One JSON object per event file, one per line.
        #[arg(long)]
        json: bool,
        /// Where the idempotency store and the topic files live.
        #[arg(long, default_value = ".esm-state")]
        state_dir: PathBuf,
        /// Start from an empty state directory.
        #[arg(long)]
        fresh: bool,
        /// Publish dead letters and alerts to this Kafka cluster (host:port,...) instead of files.
        #[arg(long)]
        brokers: Option<String>,
        /// The function timeout given to each event, in milliseconds.
        #[arg(long, default_value_t = 60_000)]
        timeout_ms: u64,
    },
    /// Write a realistic telemetry batch as an ESM event.
    Generate {
        /// Number of records (ignored with --max-bytes unless smaller).
        #[arg(long)]
        records: Option<usize>,
        /// Fill the event up to this many bytes (the ESM's limit: 6000000).
        #[arg(long)]
        max_bytes: Option<usize>,
        /// Partitions.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// Source topic.
        #[arg(long, default_value = "telemetry.metrics")]
        topic: String,
        /// Share of poison records, percent.
        #[arg(long, default_value_t = 1.0)]
        poison_percent: f64,
        /// The kind of event source mapping.
        #[arg(long, value_enum, default_value_t = SourceKind::SelfManaged)]
        source: SourceKind,
        /// Seed: the same seed gives the same batch.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Output file (standard output when absent).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SourceKind {
    Msk,
    SelfManaged,
}

// The binaries allocate with mimalloc: a 6 MB batch makes ~100k small allocations that glibc would
// hand back to the kernel and fault in again on every invocation.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Replay {
            paths,
            json,
            state_dir,
            fresh,
            brokers,
            timeout_ms,
        } => {
            let options = ReplayOptions {
                state_dir,
                fresh,
                brokers,
                timeout: Duration::from_millis(timeout_ms),
            };
            replay(&paths, json, &options).await
        }
        Command::Generate {
            records,
            max_bytes,
            partitions,
            topic,
            poison_percent,
            source,
            seed,
            out,
        } => {
            let options = GenerateOptions {
                topic,
                partitions,
                records: records.or(if max_bytes.is_none() { Some(1_000) } else { None }),
                max_bytes,
                poison_percent,
                source: match source {
                    SourceKind::Msk => Source::Msk {
                        cluster_arn: "arn:aws:kafka:us-east-1:123456789012:cluster/telemetry/0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d-1".into(),
                    },
                    SourceKind::SelfManaged => Source::SelfManaged,
                },
                seed,
                first_offset: 0,
            };
            let (event, count) = generate_event(&options);
            match out {
                Some(path) => {
                    if let Err(e) = std::fs::write(&path, &event) {
                        eprintln!("esm generate: cannot write {}: {e}", path.display());
                        return ExitCode::from(2);
                    }
                    eprintln!("{}: {count} records, {} bytes", path.display(), event.len());
                }
                None => println!("{event}"),
            }
            ExitCode::SUCCESS
        }
    }
}

async fn replay(paths: &[PathBuf], json: bool, options: &ReplayOptions) -> ExitCode {
    let config = match ConsumerConfig::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("esm replay: {e}");
            return ExitCode::from(2);
        }
    };
    // Human output goes to stdout; logs stay on stderr and quiet unless RUST_LOG says otherwise.
    observability::init_with_default(LogFormat::Text, "error");
    let started = (|| {
        let replayer = Replayer::new(&config, options)?;
        Ok::<_, kafka_esm::replay::ReplayError>((replayer, event_files(paths)?))
    })();
    let (replayer, files) = match started {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("esm replay: {e}");
            return ExitCode::from(2);
        }
    };
    let mut failed_invocations = 0;
    for (n, file) in files.iter().enumerate() {
        let report = match replayer.replay_file(file, n).await {
            Ok(report) => report,
            Err(e) => {
                eprintln!("esm replay: {e}");
                return ExitCode::from(2);
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
            println!("{}", render_table(&report));
        }
    }
    if !json {
        println!(
            "{} event file(s) replayed, {} invocation(s) failed.{}",
            files.len(),
            failed_invocations,
            replayer
                .topics_dir()
                .map(|d| format!(" Dead letters and alerts: {}/<topic>.jsonl", d.display()))
                .unwrap_or_default()
        );
    }
    if failed_invocations > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
