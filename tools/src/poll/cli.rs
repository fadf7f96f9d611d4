//! The `esm poll` and `esm lag` command lines: options, wiring, output, exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use tokio::sync::watch;

use super::deliver::{Deliverer, EventOrigin, RetryPolicy};
use super::invoke::{InProcess, Invoke, RuntimeApi};
use super::lag::{group_lag, render_lag};
use super::on_failure::OnFailureDestination;
use super::{BatchLimits, PollOptions, PollSummary, StartingPosition};
use crate::handler::{HandlerFactory, read_config};
use kafka_esm::config::{ConsumerConfig, StoreChoice};
use kafka_esm::consumer::Consumer;
use kafka_esm::encode::Source;
use kafka_esm::env::EnvReader;
use kafka_esm::kafka::KafkaSettings;
use kafka_esm::observability;
use kafka_esm::processor::Processor;
use kafka_esm::sink::{KafkaSink, MessageSink};

/// Where a new consumer group starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StartingPositionArg {
    /// The oldest record.
    TrimHorizon,
    /// New records only.
    Latest,
    /// From `--starting-position-timestamp`.
    AtTimestamp,
}

/// The topics a consumer group reads, and where.
#[derive(Debug, Clone, clap::Args)]
pub struct GroupArgs {
    /// Topics, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub topics: Vec<String>,
    /// Kafka bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS).
    #[arg(long)]
    pub brokers: Option<String>,
    /// ConsumerGroupId.
    #[arg(long, default_value = "kafka-esm-local")]
    pub group: String,
}

/// `esm poll`: a local event source mapping. Reads the topics in a consumer group, invokes the
/// function with ESM-identical batches (in this process, or the real `consumer` binary behind
/// `cargo lambda watch` with --invoke-endpoint), commits offsets only after a successful answer,
/// retries and bisects on errors, honours partial batch responses and writes the on-failure
/// record after the last retry. Ctrl-C stops cleanly, committing what succeeded.
///
/// In-process, the consumer is configured by the same variables as the Lambda (IDEMPOTENCY_STORE,
/// DLQ_TOPIC, KAFKA_*, and the handler's own, such as the reference app's ALERTS_TOPIC and
/// ALERT_RULES); dead letters and the handler's messages go to the same brokers.
/// Exit code: 0 after a clean stop, 1 when records were given up, 2 when it cannot start.
#[derive(Debug, Clone, clap::Args)]
pub struct PollArgs {
    /// The topics, brokers and consumer group.
    #[command(flatten)]
    pub source: GroupArgs,
    /// StartingPosition, for partitions the group has no committed offset for.
    #[arg(long, value_enum, default_value_t = StartingPositionArg::TrimHorizon)]
    pub starting_position: StartingPositionArg,
    /// StartingPositionTimestamp, epoch seconds (with AT_TIMESTAMP).
    #[arg(long, required_if_eq("starting_position", "AT_TIMESTAMP"))]
    pub starting_position_timestamp: Option<f64>,
    /// BatchSize (1 to 10000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// MaximumBatchingWindowInSeconds, in milliseconds (0 to 300000).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(0..=300_000))]
    pub batch_window_ms: u64,
    /// MaximumRetryAttempts: -1 retries until success (capped at 10 with an on-failure destination, as on AWS).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true, value_parser = clap::value_parser!(i64).range(-1..=10_000))]
    pub maximum_retry_attempts: i64,
    /// MaximumRecordAgeInSeconds: -1 for no limit.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true, value_parser = clap::value_parser!(i64).range(-1..=604_800))]
    pub maximum_record_age_seconds: i64,
    /// BisectBatchOnFunctionError.
    #[arg(long)]
    pub bisect_batch_on_function_error: bool,
    /// FunctionResponseTypes=ReportBatchItemFailures (in-process, also turned on by REPORT_BATCH_ITEM_FAILURES).
    #[arg(long)]
    pub report_batch_item_failures: bool,
    /// Invoke the function over the Lambda invoke API at this address (e.g. `cargo lambda watch`'s
    /// http://127.0.0.1:9000) instead of in this process.
    #[arg(long)]
    pub invoke_endpoint: Option<String>,
    /// The function's name (the binary's name under `cargo lambda watch`).
    #[arg(long, default_value = "consumer")]
    pub function_name: String,
    /// The function timeout, milliseconds.
    #[arg(long, default_value_t = 60_000)]
    pub function_timeout_ms: u64,
    /// Append on-failure records (the AWS SQS/SNS format: metadata only) to this JSON-lines file.
    #[arg(long, group = "on_failure")]
    pub on_failure_file: Option<PathBuf>,
    /// Send on-failure records (metadata only) to this SQS queue URL.
    #[arg(long, group = "on_failure")]
    pub on_failure_sqs: Option<String>,
    /// Write on-failure records as an S3 destination does (metadata plus the invoked event) to
    /// s3://bucket[/prefix], one object per given-up batch.
    #[arg(long, group = "on_failure", value_name = "S3_URI")]
    pub on_failure_s3: Option<String>,
    /// Write on-failure records as a Kafka-topic destination does (kafka://TOPIC: one message per
    /// record, the record in its payload) to this topic of the source cluster.
    #[arg(long, group = "on_failure", value_name = "TOPIC")]
    pub on_failure_kafka: Option<String>,
    /// The AWS endpoint for SQS and DynamoDB (a local moto server: http://127.0.0.1:5001).
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// The AWS region (default: AWS_REGION, else us-east-1).
    #[arg(long)]
    pub region: Option<String>,
    /// Events name an MSK cluster with this ARN (`aws:kafka`) instead of a self-managed one.
    #[arg(long)]
    pub msk_cluster_arn: Option<String>,
    /// Log progress every this many seconds.
    #[arg(long, default_value_t = 5)]
    pub progress_seconds: u64,
    /// The most invocations at once. Each partition's batches go one after another; by default the
    /// partitions' batches all go at once, as on AWS (one concurrent invocation per partition).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: Option<u32>,
    /// Records waiting in one partition's queue before esm poll stops reading (until half of them
    /// are delivered): the memory a slow or stuck partition may take.
    #[arg(long, default_value_t = super::DEFAULT_PARTITION_BUFFER_RECORDS as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub partition_buffer_records: u32,
    /// Exit after this many milliseconds without a record.
    #[arg(long)]
    pub exit_when_idle_ms: Option<u64>,
    /// Exit after this many records have settled.
    #[arg(long)]
    pub max_records: Option<u64>,
    /// Print the final summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `esm lag`: committed offset, watermarks and lag per partition of a consumer group.
#[derive(Debug, Clone, clap::Args)]
pub struct LagArgs {
    /// The topics, brokers and consumer group.
    #[command(flatten)]
    pub source: GroupArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The source cluster's settings; `delivery_timeout` is the producers' `message.timeout.ms`.
fn kafka_settings(
    brokers: Option<&str>,
    delivery_timeout: Duration,
) -> Result<KafkaSettings, String> {
    let brokers = brokers
        .map(str::to_owned)
        .or_else(|| std::env::var("KAFKA_BOOTSTRAP_SERVERS").ok())
        .ok_or("no brokers: give --brokers or set KAFKA_BOOTSTRAP_SERVERS")?;
    let lookup = |name: &str| {
        if name == "KAFKA_BOOTSTRAP_SERVERS" {
            Some(brokers.clone())
        } else {
            std::env::var(name).ok()
        }
    };
    let mut reader = EnvReader::new(&lookup);
    let settings = KafkaSettings::from_env(&mut reader, "esm-poll", delivery_timeout);
    if !reader.problems.is_empty() {
        return Err(reader.problems.join("; "));
    }
    settings.ok_or_else(|| "no brokers".to_owned())
}

/// Runs `esm lag`.
pub async fn run_lag(args: LagArgs) -> ExitCode {
    let settings = match kafka_settings(args.source.brokers.as_deref(), Duration::from_secs(30)) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("esm lag: {e}");
            return ExitCode::from(2);
        }
    };
    let settings = match settings.resolve_secrets().await {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("esm lag: {e}");
            return ExitCode::from(2);
        }
    };
    let (group, topics) = (args.source.group.clone(), args.source.topics.clone());
    let lags = tokio::task::spawn_blocking(move || {
        group_lag(&settings, &group, &topics, Duration::from_secs(10))
    })
    .await
    .expect("the lag reader does not panic");
    match lags {
        Ok(lags) => {
            if args.json {
                let total: i64 = lags.iter().map(|l| l.lag).sum();
                println!(
                    "{}",
                    serde_json::json!({"group": args.source.group, "offset_lag": total, "partitions": lags})
                );
            } else {
                print!("{}", render_lag(&args.source.group, &lags));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("esm lag: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs `esm poll` until Ctrl-C (or SIGTERM), idleness or `--max-records`, invoking in process the
/// handler `factory` builds (unless `--invoke-endpoint` names a function to invoke instead): the
/// configuration from the process environment, the summary on stdout.
pub async fn run_poll<F: HandlerFactory>(args: PollArgs, mut factory: F) -> ExitCode {
    let config = match read_config(&|name| std::env::var(name).ok(), &mut factory) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("esm poll: {e}");
            return ExitCode::from(2);
        }
    };
    observability::init_with_default(config.log_format, "info");
    match poll(&args, config, &factory).await {
        Ok(summary) => {
            if args.json {
                println!("{}", summary_json(&summary));
            } else {
                println!("{}", render_summary(&summary));
            }
            if summary.delivery.given_up > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("esm poll: {e}");
            ExitCode::from(2)
        }
    }
}

/// `esm poll` with `config` (the consumer's configuration, as [`read_config`] reads it): polls the
/// source until Ctrl-C (or SIGTERM), idleness or `--max-records`, and says what it did. In process,
/// the consumer runs the handler `factory` builds over a Kafka sink to the source cluster (or
/// `KAFKA_BOOTSTRAP_SERVERS` when `config` has it), the one dead letters go to. The Kafka settings
/// of the source cluster other than `--brokers` come from the process environment (`KAFKA_*`).
pub async fn poll<F: HandlerFactory>(
    args: &PollArgs,
    mut config: ConsumerConfig,
    factory: &F,
) -> Result<PollSummary, String> {
    let settings = kafka_settings(
        args.source.brokers.as_deref(),
        config.processor.publish_timeout,
    )?
    .resolve_secrets()
    .await
    .map_err(|e| e.to_string())?;
    if args.invoke_endpoint.is_none() {
        kafka_esm::processor::check_time_budget(
            Duration::from_millis(args.function_timeout_ms),
            config.safety_margin,
            config.processor.publish_timeout,
        )
        .map_err(|e| format!("--function-timeout-ms: {e}"))?;
    }
    let report_failures = args.report_batch_item_failures
        || (args.invoke_endpoint.is_none() && config.partial_batch_response);
    let needs_aws = args.on_failure_sqs.is_some()
        || args.on_failure_s3.is_some()
        || (args.invoke_endpoint.is_none() && matches!(config.store, StoreChoice::DynamoDb { .. }));
    let aws = if needs_aws {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(endpoint) = &args.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        let region = args
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .unwrap_or_else(|| "us-east-1".into());
        Some(loader.region(Region::new(region)).load().await)
    } else {
        None
    };
    let destination = if let Some(path) = &args.on_failure_file {
        OnFailureDestination::File(path.clone())
    } else if let Some(url) = &args.on_failure_sqs {
        OnFailureDestination::Sqs {
            client: aws_sdk_sqs::Client::new(aws.as_ref().expect("loaded for SQS")),
            queue_url: url.clone(),
        }
    } else if let Some(uri) = &args.on_failure_s3 {
        let (bucket, prefix) =
            crate::redrive::parse_s3_uri(uri).map_err(|e| format!("--on-failure-s3: {e}"))?;
        let mut s3 = aws_sdk_s3::config::Builder::from(aws.as_ref().expect("loaded for S3"));
        if args.endpoint_url.is_some() {
            // Local endpoints (moto) serve buckets by path, not by host name.
            s3 = s3.force_path_style(true);
        }
        OnFailureDestination::S3 {
            client: aws_sdk_s3::Client::from_conf(s3.build()),
            bucket,
            prefix,
        }
    } else if let Some(topic) = &args.on_failure_kafka {
        if args.source.topics.iter().any(|t| t == topic) {
            return Err(format!(
                "--on-failure-kafka {topic} is a source topic: AWS refuses that (a record would fail into its own input)"
            ));
        }
        OnFailureDestination::Kafka {
            sink: Arc::new(KafkaSink::new(&settings).map_err(|e| e.to_string())?),
            topic: topic.clone(),
            timeout: config.processor.publish_timeout,
        }
    } else {
        OnFailureDestination::Discard
    };
    let max_retry_attempts = match args.maximum_retry_attempts {
        // AWS caps infinite retries at 10 when an on-failure destination is set.
        -1 if destination.keeps_records() => Some(10),
        -1 => None,
        n => Some(n as u32),
    };
    let policy = RetryPolicy {
        max_retry_attempts,
        max_record_age: (args.maximum_record_age_seconds >= 0)
            .then(|| Duration::from_secs(args.maximum_record_age_seconds as u64)),
        bisect_on_error: args.bisect_batch_on_function_error,
        report_batch_item_failures: report_failures,
        ..RetryPolicy::default()
    };
    let origin = EventOrigin {
        source: match &args.msk_cluster_arn {
            Some(arn) => Source::Msk {
                cluster_arn: arn.clone(),
            },
            None => Source::SelfManaged,
        },
        bootstrap_servers: settings.bootstrap_servers.clone(),
    };
    let options = PollOptions {
        topics: args.source.topics.clone(),
        group_id: args.source.group.clone(),
        starting_position: match args.starting_position {
            StartingPositionArg::TrimHorizon => StartingPosition::TrimHorizon,
            StartingPositionArg::Latest => StartingPosition::Latest,
            StartingPositionArg::AtTimestamp => StartingPosition::AtTimestamp(
                (args.starting_position_timestamp.unwrap_or(0.0) * 1000.0) as i64,
            ),
        },
        limits: BatchLimits {
            max_records: args.batch_size as usize,
            window: Duration::from_millis(args.batch_window_ms),
            ..BatchLimits::default()
        },
        progress_every: Duration::from_secs(args.progress_seconds.max(1)),
        exit_when_idle: args.exit_when_idle_ms.map(Duration::from_millis),
        max_records: args.max_records,
        function_timeout: Duration::from_millis(args.function_timeout_ms),
        max_concurrency: args.concurrency.map(|n| n as usize),
        partition_buffer_records: args.partition_buffer_records as usize,
    };
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!(target: "esm::poll", "stopping: finishing the invocations in flight and committing what succeeded");
        let _ = stop_tx.send(true);
    });
    let timeout = Duration::from_millis(args.function_timeout_ms);
    let invoker: Box<dyn Invoke> = match &args.invoke_endpoint {
        Some(endpoint) => Box::new(RuntimeApi::new(
            endpoint,
            args.function_name.clone(),
            timeout,
        )),
        None => {
            config.partial_batch_response = report_failures;
            if config.kafka.is_none() {
                config.kafka = Some(settings.clone());
            }
            let sink_settings = config.kafka.clone().expect("set above");
            let sink: Arc<dyn MessageSink> =
                Arc::new(KafkaSink::new(&sink_settings).map_err(|e| e.to_string())?);
            let store = match &aws {
                Some(aws) => config.store.open_with(aws),
                None => config.store.open().await,
            }
            .map_err(|e| e.to_string())?;
            let handler = factory
                .build(&config, sink.clone())
                .map_err(|e| format!("the handler cannot be built: {e}"))?;
            let processor = Processor::new(handler, store, sink, config.processor.clone());
            Box::new(InProcess::new(
                Consumer::new(processor, config.partial_batch_response),
                config.function_name.clone(),
                timeout,
                config.safety_margin,
            ))
        }
    };
    poll_with(
        invoker,
        policy,
        destination,
        origin,
        &settings,
        &options,
        stop,
    )
    .await
}

async fn poll_with<I: Invoke + 'static>(
    invoker: I,
    policy: RetryPolicy,
    destination: OnFailureDestination,
    origin: EventOrigin,
    settings: &KafkaSettings,
    options: &PollOptions,
    stop: watch::Receiver<bool>,
) -> Result<PollSummary, String> {
    tracing::info!(
        target: "esm::poll",
        function = invoker.function_name(),
        on_failure = %destination.describe(),
        max_retry_attempts = ?policy.max_retry_attempts,
        bisect = policy.bisect_on_error,
        report_batch_item_failures = policy.report_batch_item_failures,
        "local event source mapping"
    );
    let deliverer = Arc::new(Deliverer::new(invoker, policy, destination, origin));
    super::run(settings, options, deliverer, stop)
        .await
        .map_err(|e| e.to_string())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn summary_json(summary: &PollSummary) -> serde_json::Value {
    serde_json::json!({
        "records": summary.records,
        "batches": summary.batches,
        "invocations": summary.delivery.invocations,
        "failed_invocations": summary.delivery.failed_invocations,
        "succeeded": summary.delivery.succeeded,
        "given_up": summary.delivery.given_up,
        "retried": summary.delivery.retried,
        "seconds": (summary.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "busy_seconds": (summary.busy.as_secs_f64() * 1000.0).round() / 1000.0,
        "peak_rss_mib": peak_rss_mib(),
        "records_per_second": summary.records_per_second().round(),
        "ended_by": summary.ended_by,
        "committed": summary.committed,
    })
}

/// This process's peak resident memory (Linux: `VmHWM`), MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some((kib / 1024.0 * 10.0).round() / 10.0)
}

fn render_summary(summary: &PollSummary) -> String {
    let committed: Vec<String> = summary
        .committed
        .iter()
        .map(|(k, v)| format!("{k}@{v}"))
        .collect();
    format!(
        "esm poll ({}): {} records in {} batches, {} invocations ({} failed), {} succeeded, {} given up, {} retried, {:.2} s ({:.2} s busy, {:.0} records/s); committed {}",
        summary.ended_by,
        summary.records,
        summary.batches,
        summary.delivery.invocations,
        summary.delivery.failed_invocations,
        summary.delivery.succeeded,
        summary.delivery.given_up,
        summary.delivery.retried,
        summary.elapsed.as_secs_f64(),
        summary.busy.as_secs_f64(),
        summary.records_per_second(),
        if committed.is_empty() {
            "nothing".to_owned()
        } else {
            committed.join(" ")
        }
    )
}
