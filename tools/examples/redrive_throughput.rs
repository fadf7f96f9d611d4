//! Measures `esm redrive` on one on-failure message naming a range of 10,000 records (the ESM's
//! largest batch): reading the range back from Kafka, re-running it through the consumer (in-memory
//! store, then the DynamoDB store), and copying it to the dead-letter topic.
//!
//! Kafka is rdkafka's in-process `MockCluster`; SQS and DynamoDB are moto:
//! `bash infra/local-stack.sh start && eval "$(bash infra/local-stack.sh env)"`, then
//! `cargo run --release --example redrive_throughput [-- RECORDS]`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_sqs::config::{BehaviorVersion, Region};
use kafka_esm::config::ConsumerConfig;
use kafka_esm::idempotency::{DynamoDbStore, IdempotencyStore, MemoryStore};
use kafka_esm::kafka::KafkaSettings;
use kafka_esm::sink::MemorySink;
use kafka_esm::sink::MessageSink;
use kafka_esm_telemetry::TelemetryHandler;
use kafka_esm_telemetry::app::telemetry_factory;
use kafka_esm_telemetry::config::TelemetryConfig;
use kafka_esm_tools::redrive::{
    MessageReport, Mode, OffsetRange, RangeReader, RedriveOptions, Redriver, RunSummary,
};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

const TOPIC: &str = "telemetry.metrics-eu";

/// The telemetry handler's factory, as `esm redrive` has it.
type Telemetry = Box<
    dyn Fn(&ConsumerConfig, Arc<dyn MessageSink>) -> Result<TelemetryHandler, String> + Send + Sync,
>;

fn telemetry(config: &TelemetryConfig) -> Telemetry {
    Box::new(telemetry_factory(
        config.alerts.clone(),
        config.metric_format,
    ))
}

#[tokio::main]
async fn main() -> ExitCode {
    let Ok(endpoint) = std::env::var("KAFKA_ESM_MOTO_ENDPOINT") else {
        eprintln!(
            "KAFKA_ESM_MOTO_ENDPOINT not set (run infra/local-stack.sh start, then eval its env)"
        );
        return ExitCode::from(2);
    };
    let records: i64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let cluster = MockCluster::new(1).expect("a mock cluster");
    for topic in [TOPIC, "telemetry.metrics-eu.dlq", "telemetry.alerts"] {
        cluster.create_topic(topic, 1, 1).expect("a topic");
    }
    let bootstrap = cluster.bootstrap_servers();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "5")
        .create()
        .expect("a producer");
    let run_id = std::process::id();
    let sends = (0..records).map(|i| {
        let value = format!(
            r#"{{"event_id":"{run_id}-{i}","timestamp":"2026-11-22T10:00:00Z","database_type":"postgres","instance_id":"pg-{}","metric_name":"cpu_usage_percent","value":{},"tags":{{"region":"eu-west-1","env":"prod"}}}}"#,
            i % 50,
            if i % 10 == 0 { 95 } else { 40 }
        );
        let producer = producer.clone();
        async move {
            producer
                .send(
                    FutureRecord::to(TOPIC)
                        .partition(0)
                        .key("pg")
                        .payload(&value),
                    Timeout::After(Duration::from_secs(30)),
                )
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
        }
    });
    futures::future::try_join_all(sends)
        .await
        .expect("records produced");
    println!("{records} records in {TOPIC}-0 (MockCluster), moto at {endpoint}");

    // 1. Reading the range back.
    let reader = RangeReader::new(
        &KafkaSettings::new(bootstrap.clone()),
        Duration::from_secs(60),
    )
    .expect("a reader");
    let range = OffsetRange {
        topic: TOPIC.into(),
        partition: 0,
        first_offset: 0,
        last_offset: records - 1,
        first_timestamp: None,
        last_timestamp: None,
    };
    let started = Instant::now();
    let fetched = tokio::task::spawn_blocking(move || reader.fetch(&range))
        .await
        .expect("the read ran")
        .expect("the range read");
    report(
        "fetch only",
        fetched.records.len() as u64,
        started.elapsed(),
    );

    let aws = aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "test", "test", None, None, "static",
        )))
        .endpoint_url(&endpoint)
        .build();
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("esm-failures-throughput-{run_id}"))
        .send()
        .await
        .expect("a queue")
        .queue_url
        .expect("a queue URL");
    let message = serde_json::json!({
        "requestContext": {"requestId": "throughput", "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:telemetry-consumer",
                           "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 3},
        "responseContext": null,
        "KafkaBatchInfo": {"batchSize": records, "bootstrapServers": bootstrap,
            "recordsInfo": {format!("{TOPIC}-0"): {"firstRecordOffset": "0", "lastRecordOffset": (records - 1).to_string()}}}
    })
    .to_string();
    let config = TelemetryConfig::from_lookup(&|name| match name {
        "KAFKA_BOOTSTRAP_SERVERS" => Some(bootstrap.clone()),
        _ => None,
    })
    .expect("a configuration");
    let options = RedriveOptions {
        wait_seconds: 0,
        ..RedriveOptions::default()
    };

    let run = |label: &'static str, redriver: Redriver<Telemetry>| {
        let sqs = sqs.clone();
        let queue_url = queue_url.clone();
        let message = message.clone();
        async move {
            sqs.send_message()
                .queue_url(&queue_url)
                .message_body(message)
                .send()
                .await
                .expect("a message sent");
            let started = Instant::now();
            let summary: RunSummary = redriver
                .run_queue(&sqs, &queue_url, &mut |_: &MessageReport| {})
                .await
                .expect("a redrive run");
            let elapsed = started.elapsed();
            assert_eq!(summary.deleted, 1, "{label}: {summary:?}");
            report(label, summary.fetched, elapsed);
            summary
        }
    };

    // 2. Re-running through the consumer, in-memory store and sinks.
    let sink = Arc::new(MemorySink::new());
    let memory = Redriver::new(
        config.consumer.clone(),
        options.clone(),
        Arc::new(MemoryStore::new()),
        telemetry(&config),
    )
    .expect("a redriver")
    .with_sinks(sink.clone(), sink.clone());
    let s = run("reprocess, memory store", memory).await;
    println!("    processed {}, alerts {}", s.processed, sink.len());

    // 3. The same with the DynamoDB store (moto: a Python server, so this measures moto).
    let store = DynamoDbStore::new(
        aws_sdk_dynamodb::Client::new(&aws),
        format!("kafka-esm-throughput-{run_id}"),
    );
    store.create_table().await.expect("a table");
    let store: Arc<dyn IdempotencyStore> = Arc::new(store);
    let sink = Arc::new(MemorySink::new());
    let dynamodb = Redriver::new(
        config.consumer.clone(),
        options.clone(),
        store.clone(),
        telemetry(&config),
    )
    .expect("a redriver")
    .with_sinks(sink.clone(), sink.clone());
    let s = run("reprocess, DynamoDB store (moto)", dynamodb).await;
    println!("    processed {}, duplicates {}", s.processed, s.duplicates);
    let again = Redriver::new(
        config.consumer.clone(),
        options.clone(),
        store,
        telemetry(&config),
    )
    .expect("a redriver")
    .with_sinks(sink.clone(), sink.clone());
    let s = run("reprocess again: all duplicates (moto)", again).await;
    println!("    processed {}, duplicates {}", s.processed, s.duplicates);

    // 4. Copying to the dead-letter topic in the mock cluster.
    let to_dlq = Redriver::new(
        config.consumer.clone(),
        RedriveOptions {
            mode: Mode::ToDeadLetterTopic,
            ..options
        },
        Arc::new(MemoryStore::new()),
        telemetry(&config),
    )
    .expect("a redriver");
    let s = run("to-dlq, Kafka (MockCluster)", to_dlq).await;
    println!("    copied {}", s.copied);
    ExitCode::SUCCESS
}

fn report(label: &str, records: u64, elapsed: Duration) {
    println!(
        "{label:<40} {records:>6} records in {:>8.1} ms: {:>9.0} records/s",
        elapsed.as_secs_f64() * 1000.0,
        records as f64 / elapsed.as_secs_f64()
    );
}
