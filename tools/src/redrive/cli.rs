//! The `esm redrive` command line: options, AWS clients from the environment, output, exit code.

use std::process::ExitCode;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};

use super::report::{render_message, render_summary};
use super::{Mode, RedriveOptions, Redriver, parse_s3_uri};
use crate::handler::{HandlerFactory, read_config};
use kafka_esm::config::StoreChoice;
use kafka_esm::kafka::KafkaSettings;
use kafka_esm::observability;

/// `esm redrive`: read the batches the ESM gave up on from its on-failure destination and re-run
/// them through the consumer (or copy them to the dead-letter topic with `--to-dlq`).
///
/// Exactly one source: `--queue-url` (an SQS destination, or an SQS queue subscribed to an SNS
/// destination), `--s3 s3://bucket/prefix` (an S3 destination), `--topic NAME` (a Kafka-topic
/// destination) or `--file PATH` (saved records, JSON or JSON lines, any of these shapes). SQS and SNS
/// records carry metadata only, so their offsets are read back from Kafka; S3 and Kafka-topic
/// records carry the records themselves, so Kafka is not read for them.
///
/// The consumer's configuration comes from the same variables as the Lambda's (IDEMPOTENCY_STORE,
/// IDEMPOTENCY_TABLE, KAFKA_*, DLQ_TOPIC, and the handler's own, such as the reference app's
/// ALERTS_TOPIC): use the Lambda's DynamoDB table so what it already did is skipped. Exit code: 0 when every message was handled (or, with --dry-run,
/// would be), 1 when some are left at their source, 2 when the redrive cannot start or the source
/// cannot be read.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["queue_url", "s3", "topic", "file"])))]
pub struct RedriveArgs {
    /// The on-failure SQS queue's URL.
    #[arg(long)]
    pub queue_url: Option<String>,
    /// The on-failure S3 destination: s3://bucket[/prefix] (e.g. s3://my-bucket/aws/lambda/).
    #[arg(long, value_name = "S3_URI")]
    pub s3: Option<String>,
    /// With --s3: delete each object once every record in it is handled.
    #[arg(long, requires = "s3")]
    pub delete: bool,
    /// The Kafka on-failure topic (the ESM's kafka://NAME destination), read from --brokers or
    /// KAFKA_BOOTSTRAP_SERVERS with the KAFKA_* authentication.
    #[arg(long)]
    pub topic: Option<String>,
    /// With --topic: the consumer group whose offsets record what was redriven.
    #[arg(long, default_value = super::DEFAULT_GROUP, requires = "topic")]
    pub group: String,
    /// A file of on-failure records: one JSON document (an object or a list) or JSON lines; SNS
    /// envelopes are unwrapped. The file is not changed.
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// Read the records from these brokers (host:port,...) instead of each message's bootstrapServers.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Copy the records to the dead-letter topic (with provenance headers) instead of re-running them.
    #[arg(long)]
    pub to_dlq: bool,
    /// Report what would be done (ranges, counts from the partitions' watermarks); change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Stop after this many messages.
    #[arg(long)]
    pub max_messages: Option<usize>,
    /// SQS long polling wait, 0 to 20 seconds; the run ends at the first empty receive (--queue-url).
    #[arg(long, default_value_t = 20)]
    pub wait_seconds: i32,
    /// How long received messages stay invisible to other readers, seconds (default: the queue's).
    #[arg(long)]
    pub visibility_timeout: Option<i32>,
    /// The longest read of one partition's range (or, with --topic, the longest wait for a message), milliseconds.
    #[arg(long, default_value_t = 60_000)]
    pub fetch_timeout_ms: u64,
    /// The time budget of each re-run invocation, milliseconds (idempotency locks expire with it).
    #[arg(long, default_value_t = 300_000)]
    pub timeout_ms: u64,
    /// Records per re-run invocation.
    #[arg(long, default_value_t = 1_000)]
    pub chunk_records: usize,
    /// The AWS endpoint for SQS, S3 (and DynamoDB), e.g. a local moto server: http://127.0.0.1:5001.
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// The AWS region (default: AWS_REGION, else the queue URL's; --file and --topic need none).
    #[arg(long)]
    pub region: Option<String>,
    /// One JSON object per message, one per line, then one `{"summary": ...}` line. With --dry-run,
    /// records carried in the payload are listed each with its topic, partition, offset and action.
    #[arg(long)]
    pub json: bool,
}

impl RedriveArgs {
    /// The redrive options these arguments ask for.
    pub fn options(&self) -> RedriveOptions {
        RedriveOptions {
            mode: if self.to_dlq {
                Mode::ToDeadLetterTopic
            } else {
                Mode::Reprocess
            },
            dry_run: self.dry_run,
            brokers: self.brokers.clone(),
            max_messages: self.max_messages,
            wait_seconds: self.wait_seconds,
            visibility_timeout: self.visibility_timeout,
            fetch_timeout: Duration::from_millis(self.fetch_timeout_ms),
            invocation_timeout: Duration::from_millis(self.timeout_ms),
            chunk_records: self.chunk_records,
        }
    }
}

/// The region in an SQS queue URL (`https://sqs.<region>.amazonaws.com/<account>/<name>`).
pub fn region_of_queue_url(url: &str) -> Option<String> {
    let host = url.split("://").nth(1)?.split('/').next()?;
    let mut labels = host.split('.');
    match (labels.next(), labels.next(), labels.next()) {
        (Some("sqs"), Some(region), Some("amazonaws")) if !region.is_empty() => {
            Some(region.to_owned())
        }
        _ => None,
    }
}

/// Runs `esm redrive`, re-running records with the handler `factory` builds: the configuration from
/// the process environment, one report per message on stdout, then a summary.
pub async fn run<F: HandlerFactory>(args: RedriveArgs, mut factory: F) -> ExitCode {
    let mut config = match read_config(&|name| std::env::var(name).ok(), &mut factory) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("esm redrive: {e}");
            return ExitCode::from(2);
        }
    };
    observability::init_with_default(config.log_format, "error");
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &args.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &args.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    let mut aws = loader.load().await;
    if aws.region().is_none() {
        let needs_region = args.queue_url.is_some()
            || args.s3.is_some()
            || matches!(config.store, StoreChoice::DynamoDb { .. });
        match args.queue_url.as_deref().and_then(region_of_queue_url) {
            Some(region) => aws = aws.into_builder().region(Region::new(region)).build(),
            None if needs_region => {
                eprintln!(
                    "esm redrive: no AWS region: give --region, or set AWS_REGION (needed for SQS, S3 and DynamoDB)"
                );
                return ExitCode::from(2);
            }
            None => {}
        }
    }
    if let Some(kafka) = config.kafka.take() {
        match kafka.resolve_secrets().await {
            Ok(kafka) => config.kafka = Some(kafka),
            Err(e) => {
                eprintln!("esm redrive: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let store = match config.store.open_with(&aws) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("esm redrive: {e}");
            return ExitCode::from(2);
        }
    };
    if config.store == StoreChoice::Memory && !args.to_dlq && !args.dry_run {
        eprintln!(
            "esm redrive: note: IDEMPOTENCY_STORE is memory, so records the Lambda already handled are handled again; set IDEMPOTENCY_STORE=dynamodb and IDEMPOTENCY_TABLE to the Lambda's table"
        );
    }
    // The on-failure topic is read with the consumer's Kafka settings, at --brokers if given.
    let topic_settings = args.topic.as_ref().map(|_| {
        let brokers = args
            .brokers
            .clone()
            .or_else(|| config.kafka.as_ref().map(|k| k.bootstrap_servers.clone()));
        brokers.map(|brokers| {
            let mut settings = config
                .kafka
                .clone()
                .unwrap_or_else(|| KafkaSettings::new(brokers.as_str()));
            settings.bootstrap_servers = brokers;
            settings
        })
    });
    let redriver = match Redriver::new(config, args.options(), store, factory) {
        Ok(redriver) => redriver,
        Err(e) => {
            eprintln!("esm redrive: {e}");
            return ExitCode::from(2);
        }
    };
    let json = args.json;
    let mut print = |report: &super::MessageReport| {
        if json {
            println!(
                "{}",
                serde_json::to_string(report).expect("a report serializes")
            );
        } else {
            print!("{}", render_message(report));
        }
    };
    let outcome = if let Some(queue_url) = &args.queue_url {
        let sqs = aws_sdk_sqs::Client::new(&aws);
        redriver.run_queue(&sqs, queue_url, &mut print).await
    } else if let Some(uri) = &args.s3 {
        let (bucket, prefix) = match parse_s3_uri(uri) {
            Ok(parts) => parts,
            Err(e) => {
                eprintln!("esm redrive: --s3: {e}");
                return ExitCode::from(2);
            }
        };
        let mut s3 = aws_sdk_s3::config::Builder::from(&aws);
        if args.endpoint_url.is_some() {
            // Local endpoints (moto) serve buckets by path, not by host name.
            s3 = s3.force_path_style(true);
        }
        let s3 = aws_sdk_s3::Client::from_conf(s3.build());
        redriver
            .run_bucket(&s3, &bucket, &prefix, args.delete, &mut print)
            .await
    } else if let Some(topic) = &args.topic {
        let Some(Some(settings)) = topic_settings else {
            eprintln!(
                "esm redrive: --topic needs brokers: give --brokers host:port or set KAFKA_BOOTSTRAP_SERVERS"
            );
            return ExitCode::from(2);
        };
        redriver
            .run_topic(&settings, topic, &args.group, &mut print)
            .await
    } else if let Some(path) = &args.file {
        redriver.run_file(path, &mut print).await
    } else {
        unreachable!("clap requires one source")
    };
    match outcome {
        Ok(summary) => {
            if json {
                println!("{}", serde_json::json!({ "summary": summary }));
            } else {
                println!("{}", render_summary(&summary));
            }
            if summary.left + summary.would_be_left > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("esm redrive: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_an_sqs_queue_url() {
        assert_eq!(
            region_of_queue_url("https://sqs.eu-west-1.amazonaws.com/123456789012/esm-failures")
                .as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            region_of_queue_url("http://127.0.0.1:5001/123456789012/q"),
            None
        );
        assert_eq!(region_of_queue_url("not a url"), None);
    }
}
