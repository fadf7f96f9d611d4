//! The `esm redrive` command line: options, AWS clients from the environment, output, exit code.

use std::process::ExitCode;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};

use super::report::{render_message, render_summary};
use super::{Mode, RedriveOptions, Redriver};
use crate::app::open_store_with;
use crate::config::{ConsumerConfig, LogFormat, StoreChoice};
use crate::observability;

/// `esm redrive`: read the ESM's on-failure SQS queue, read the failed records back from Kafka, and
/// re-run them through the consumer (or copy them to the dead-letter topic with `--to-dlq`).
///
/// The consumer's configuration comes from the same variables as the Lambda's (IDEMPOTENCY_STORE,
/// IDEMPOTENCY_TABLE, KAFKA_*, DLQ_TOPIC, ALERTS_TOPIC...): use the Lambda's DynamoDB table so what
/// it already did is skipped. Exit code: 0 when every message was deleted (or, with --dry-run,
/// would be), 1 when some stay on the queue, 2 when the redrive cannot start or the queue cannot be read.
#[derive(Debug, Clone, clap::Args)]
pub struct RedriveArgs {
    /// The on-failure queue's URL.
    #[arg(long)]
    pub queue_url: String,
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
    /// SQS long polling wait, 0 to 20 seconds; the run ends at the first empty receive.
    #[arg(long, default_value_t = 20)]
    pub wait_seconds: i32,
    /// How long received messages stay invisible to other readers, seconds (default: the queue's).
    #[arg(long)]
    pub visibility_timeout: Option<i32>,
    /// The longest read of one partition's range, milliseconds.
    #[arg(long, default_value_t = 60_000)]
    pub fetch_timeout_ms: u64,
    /// The time budget of each re-run invocation, milliseconds (idempotency locks expire with it).
    #[arg(long, default_value_t = 300_000)]
    pub timeout_ms: u64,
    /// Records per re-run invocation.
    #[arg(long, default_value_t = 1_000)]
    pub chunk_records: usize,
    /// The AWS endpoint for SQS (and DynamoDB), e.g. a local moto server: http://127.0.0.1:5001.
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// The AWS region (default: AWS_REGION, else the queue URL's).
    #[arg(long)]
    pub region: Option<String>,
    /// One JSON object per message, one per line, then one `{"summary": ...}` line.
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

/// Runs `esm redrive`.
pub async fn run(args: RedriveArgs) -> ExitCode {
    let mut config = match ConsumerConfig::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("esm redrive: {e}");
            return ExitCode::from(2);
        }
    };
    observability::init_with_default(LogFormat::Text, "error");
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &args.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &args.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    let mut aws = loader.load().await;
    if aws.region().is_none() {
        match region_of_queue_url(&args.queue_url) {
            Some(region) => aws = aws.into_builder().region(Region::new(region)).build(),
            None => {
                eprintln!(
                    "esm redrive: no AWS region: give --region, or set AWS_REGION (the queue URL names none)"
                );
                return ExitCode::from(2);
            }
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
    let store = match open_store_with(&config.store, &aws) {
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
    let redriver = match Redriver::new(config, args.options(), store) {
        Ok(redriver) => redriver,
        Err(e) => {
            eprintln!("esm redrive: {e}");
            return ExitCode::from(2);
        }
    };
    let sqs = aws_sdk_sqs::Client::new(&aws);
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
    match redriver.run_queue(&sqs, &args.queue_url, &mut print).await {
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
