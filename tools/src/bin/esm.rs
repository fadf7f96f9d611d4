//! `esm`: the command-line tool. `esm replay` runs event files through the consumer locally;
//! `esm produce` writes metric events to Kafka through the producer's code; `esm generate` writes
//! realistic batches; `esm poll` is a local event source mapping on a real broker and `esm lag` its
//! offset lag; `esm redrive` recovers batches the ESM gave up on; `esm decode` prints event files'
//! records decoded (Avro, Protobuf, JSON).
//!
//! `replay`, `poll` and `redrive` are the generic tools of `kafka_esm_tools` wired to the reference
//! app's handler ([`Telemetry`]); `produce`, `generate` and `verify` are the reference app's own.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use kafka_esm::config::ConsumerConfig;
use kafka_esm::encode::Source;
use kafka_esm::env::EnvReader;
use kafka_esm::observability;
use kafka_esm::retry::{Deadline, now_ms};
use kafka_esm::sink::MessageSink;
use kafka_esm_telemetry::app::{metric_decoder, telemetry_handler};
use kafka_esm_telemetry::config::{AlertSettings, ProducerConfig, read_metric_format};
use kafka_esm_telemetry::generate::{GenerateOptions, generate_event, generate_metrics};
use kafka_esm_telemetry::producer::{MetricProducer, ProducerRequest, RecordStatus};
use kafka_esm_telemetry::{MetricEncoder, MetricFormat, TelemetryHandler};
use kafka_esm_tools::HandlerFactory;
use kafka_esm_tools::replay::cli::ReplayArgs;

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
    ///
    /// The configuration is the Lambda's (its environment variables). The idempotency store is the
    /// one IDEMPOTENCY_STORE names, as for the Lambda: `memory` (this replay only), `local` (the redb
    /// file IDEMPOTENCY_LOCAL_PATH), or `dynamodb` (the table IDEMPOTENCY_TABLE, with the usual AWS
    /// settings: AWS_ENDPOINT_URL, AWS_REGION, credentials). When IDEMPOTENCY_STORE is unset, it is
    /// the file idempotency.redb in --state-dir, so a second replay finds the first's records as
    /// duplicates. The summary says which store was used.
    #[command(mut_arg("brokers", |arg| arg.help("Publish dead letters and alerts to this Kafka cluster (host:port,...) instead of files, with every other KAFKA_* setting (authentication, TLS, properties) as the Lambda reads it")))]
    Replay(ReplayArgs),
    /// Produce metric events to Kafka through the producer Lambda's code (idempotent, acks=all):
    /// from a file (a JSON array, `{"metrics": [...]}`, or one metric per line) or generated.
    /// Authentication comes from the KAFKA_* variables, as for the Lambda. Avro and Protobuf
    /// metrics are framed with their schema's id: registered with the Confluent registry
    /// SCHEMA_REGISTRY_URL names (subject `<topic>-value`), or given with --schema-id.
    Produce {
        /// Kafka bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS).
        #[arg(long)]
        brokers: Option<String>,
        /// Topic (default: METRICS_TOPIC, else telemetry.metrics).
        #[arg(long)]
        topic: Option<String>,
        /// A file of metric events.
        #[arg(long, conflicts_with = "generate")]
        file: Option<PathBuf>,
        /// Write metrics as json, avro or protobuf (default: METRIC_FORMAT, else json).
        #[arg(long)]
        format: Option<String>,
        /// The id of the metric's schema in the consumer's registry: a number (Confluent framing)
        /// or a UUID (Glue framing) (default: METRIC_SCHEMA_ID; else registered, see above).
        #[arg(long)]
        schema_id: Option<String>,
        /// Generate this many metrics instead.
        #[arg(long)]
        generate: Option<usize>,
        /// At most this many records per second (default: as fast as the broker takes them).
        #[arg(long)]
        rate: Option<u64>,
        /// One JSON summary line at the end.
        #[arg(long)]
        json: bool,
    },
    /// Recover batches the ESM gave up on: read its on-failure SQS queue, read the failed offsets
    /// back from Kafka and re-run them through the consumer (or copy them to the dead-letter topic).
    Redrive(kafka_esm_tools::redrive::cli::RedriveArgs),
    /// A local event source mapping: poll Kafka in a consumer group and invoke the consumer with
    /// ESM-identical batches (in process, or over `cargo lambda watch`), committing after success.
    Poll(kafka_esm_tools::poll::cli::PollArgs),
    /// Committed offset, watermarks and lag per partition of a consumer group (the ESM's OffsetLag).
    Lag(kafka_esm_tools::poll::cli::LagArgs),
    /// Print each record of ESM event files decoded (Avro, Protobuf, JSON, JSON Schema; Confluent
    /// or Glue framing; schemas from files, a directory or a registry), one JSON line per record.
    Decode(kafka_esm_tools::decode::DecodeArgs),
    /// After a run: prove every record of the source topic is accounted for exactly once (an alert,
    /// a completion in the idempotency store, or a dead letter), and measure produce-to-alert latency.
    Verify(kafka_esm_tools::verify::VerifyArgs),
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
        /// Values as json, avro or protobuf (Avro and Protobuf framed with --schema-id).
        #[arg(long, default_value = "json")]
        format: String,
        /// The schema id Avro and Protobuf values are framed with: a number (Confluent framing)
        /// or a UUID (Glue framing).
        #[arg(long)]
        schema_id: Option<String>,
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

/// The reference app's handler for `replay`, `poll` and `redrive`: its alert settings
/// (`ALERTS_TOPIC`, `ALERT_RULES`) are read at start-up with the consumer's, every problem at once,
/// and its alerts go through the tool's sink.
struct Telemetry {
    alerts: AlertSettings,
    metric_format: MetricFormat,
}

impl Telemetry {
    /// The default alert settings, until [`HandlerFactory::read_settings`] reads the environment's.
    fn new() -> Self {
        Self {
            alerts: AlertSettings::read(&mut EnvReader::new(&|_| None)),
            metric_format: MetricFormat::Json,
        }
    }
}

impl HandlerFactory for Telemetry {
    type Handler = TelemetryHandler;

    fn read_settings(&mut self, env: &mut EnvReader<'_>) {
        self.alerts = AlertSettings::read(env);
        self.metric_format = read_metric_format(env);
    }

    fn messages_name(&self) -> &str {
        "alerts"
    }

    fn build(
        &self,
        config: &ConsumerConfig,
        sink: Arc<dyn MessageSink>,
    ) -> Result<TelemetryHandler, String> {
        Ok(
            telemetry_handler(config, &self.alerts, sink).with_metrics(metric_decoder(
                self.metric_format,
                config,
                None,
            )),
        )
    }
}

// The binaries allocate with mimalloc: a 6 MB batch makes ~100k small allocations that glibc would
// hand back to the kernel and fault in again on every invocation.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Replay(args) => kafka_esm_tools::replay::cli::run(args, Telemetry::new()).await,
        Command::Produce {
            brokers,
            topic,
            file,
            format,
            schema_id,
            generate,
            rate,
            json,
        } => {
            let overrides = [
                ("KAFKA_BOOTSTRAP_SERVERS", brokers),
                ("METRICS_TOPIC", topic),
                ("METRIC_FORMAT", format),
                ("METRIC_SCHEMA_ID", schema_id),
            ];
            produce(overrides, file, generate, rate, json).await
        }
        Command::Redrive(args) => kafka_esm_tools::redrive::cli::run(args, Telemetry::new()).await,
        Command::Poll(args) => kafka_esm_tools::poll::cli::run_poll(args, Telemetry::new()).await,
        Command::Lag(args) => kafka_esm_tools::poll::cli::run_lag(args).await,
        Command::Decode(args) => kafka_esm_tools::decode::run(args).await,
        Command::Verify(args) => kafka_esm_tools::verify::run_verify(args).await,
        Command::Generate {
            records,
            max_bytes,
            partitions,
            topic,
            poison_percent,
            source,
            seed,
            format,
            schema_id,
            out,
        } => {
            let encoder = format.parse::<MetricFormat>().and_then(|format| {
                let id = schema_id
                    .map(|id| {
                        id.parse()
                            .map_err(|_| format!("--schema-id {id:?} is not a schema id"))
                    })
                    .transpose()?;
                MetricEncoder::new(format, id)
            });
            let encoder = match encoder {
                Ok(encoder) => encoder,
                Err(e) => {
                    eprintln!("esm generate: {e}");
                    return ExitCode::from(2);
                }
            };
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
                encoder,
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

async fn produce(
    overrides: [(&str, Option<String>); 4],
    file: Option<PathBuf>,
    generate: Option<usize>,
    rate: Option<u64>,
    json: bool,
) -> ExitCode {
    let lookup = |name: &str| {
        overrides
            .iter()
            .find(|(n, v)| *n == name && v.is_some())
            .and_then(|(_, v)| v.clone())
            .or_else(|| std::env::var(name).ok())
    };
    let config = match ProducerConfig::from_lookup(&lookup) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("esm produce: {e}");
            return ExitCode::from(2);
        }
    };
    observability::init_with_default(config.log_format, "warn");
    let started = async {
        let encoder = config.metrics.encoder().await?;
        let kafka = config
            .kafka
            .clone()
            .resolve_secrets()
            .await
            .map_err(|e| e.to_string())?;
        let producer = kafka.create_producer().map_err(|e| e.to_string())?;
        Ok::<_, String>(
            MetricProducer::new(producer, config.producer.clone()).with_encoder(encoder),
        )
    };
    let producer = match started.await {
        Ok(producer) => producer,
        Err(e) => {
            eprintln!("esm produce: {e}");
            return ExitCode::from(2);
        }
    };
    let source = match (file, generate) {
        (Some(path), _) => match read_metrics(&path) {
            Ok(metrics) => MetricSource::File(metrics),
            Err(e) => {
                eprintln!("esm produce: {e}");
                return ExitCode::from(2);
            }
        },
        (None, Some(n)) => MetricSource::Generate(n),
        (None, None) => {
            eprintln!("esm produce: give --file FILE or --generate N");
            return ExitCode::from(2);
        }
    };
    let chunk = rate.map_or(10_000, |r| r.clamp(1, 100_000) as usize);
    let total = source.len();
    let (mut delivered, mut rejected, mut dead_lettered, mut not_delivered) = (0, 0, 0, 0);
    let began = std::time::Instant::now();
    let mut sent = 0;
    let mut chunk_index = 0u64;
    while sent < total {
        let n = chunk.min(total - sent);
        let metrics = source.take(sent, n, chunk_index);
        let deadline = Deadline::after(Duration::from_secs(120), Duration::ZERO);
        let report = producer.produce(metrics, &deadline).await;
        delivered += report.delivered;
        rejected += report.rejected;
        dead_lettered += report.dead_lettered;
        not_delivered += report.not_delivered;
        for r in report
            .results
            .iter()
            .filter(|r| !matches!(r.status, RecordStatus::Delivered { .. }))
        {
            eprintln!(
                "record {}: {}",
                sent + r.index,
                serde_json::to_string(&r.status).unwrap_or_default()
            );
        }
        sent += n;
        chunk_index += 1;
        if let Some(rate) = rate {
            // Pace to `rate` records per second overall.
            let due = Duration::from_secs_f64(sent as f64 / rate.max(1) as f64);
            if let Some(wait) = due.checked_sub(began.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        if !json {
            eprint!("\r{sent}/{total} sent, {delivered} delivered");
        }
    }
    let seconds = began.elapsed().as_secs_f64();
    let summary = serde_json::json!({
        "topic": producer.settings().topic, "records": total, "delivered": delivered, "rejected": rejected,
        "dead_lettered": dead_lettered, "not_delivered": not_delivered,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "records_per_second": (total as f64 / seconds.max(1e-9)).round(),
    });
    if json {
        println!("{summary}");
    } else {
        eprintln!();
        println!(
            "{total} records to {}: {delivered} delivered, {rejected} rejected, {dead_lettered} dead-lettered, {not_delivered} not delivered in {seconds:.2} s ({:.0} records/s)",
            producer.settings().topic,
            total as f64 / seconds.max(1e-9)
        );
    }
    if not_delivered > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Where `esm produce` takes metrics from.
enum MetricSource {
    File(Vec<serde_json::Value>),
    Generate(usize),
}

impl MetricSource {
    fn len(&self) -> usize {
        match self {
            Self::File(metrics) => metrics.len(),
            Self::Generate(n) => *n,
        }
    }

    /// `n` metrics from position `from`; generated ones get ids unique to their chunk.
    fn take(&self, from: usize, n: usize, chunk: u64) -> Vec<serde_json::Value> {
        match self {
            Self::File(metrics) => metrics[from..from + n].to_vec(),
            Self::Generate(_) => generate_metrics(now_ms() ^ (chunk << 48), n)
                .iter()
                .map(|m| serde_json::to_value(m).expect("a metric serializes"))
                .collect(),
        }
    }
}

/// A JSON array, a producer request, or one metric per line.
fn read_metrics(path: &std::path::Path) -> Result<Vec<serde_json::Value>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
        return match ProducerRequest::from_json(value, 0).map_err(|e| e.to_string())? {
            ProducerRequest::Metrics(metrics) => Ok(metrics),
            ProducerRequest::Generate(_) => Err(format!(
                "{} asks to generate: use --generate N",
                path.display()
            )),
        };
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line)
                .map_err(|e| format!("{} line {}: not JSON: {e}", path.display(), n + 1))
        })
        .collect()
}
