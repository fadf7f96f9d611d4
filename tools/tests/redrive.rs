//! `esm redrive` end to end: on-failure messages in a moto SQS queue, records in an rdkafka
//! `MockCluster` topic, idempotency in a moto DynamoDB table.
//!
//! The tests that need moto (`bash infra/local-stack.sh start && eval "$(bash infra/local-stack.sh
//! env)"`) are `#[ignore = "needs moto (infra/local-stack.sh)"]`: a plain `cargo test` reports them as
//! ignored and runs the `MockCluster`-only ones. With `-- --include-ignored` they run, and fail
//! without `KAFKA_ESM_MOTO_ENDPOINT`; `.ci/run` starts moto and runs them so.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_sqs::config::{BehaviorVersion, Region};
use aws_sdk_sqs::types::QueueAttributeName;
use common::servers::moto;
use kafka_esm::config::ConsumerConfig;
use kafka_esm::dead_letter::headers;
use kafka_esm::idempotency::{CompletedOutcome, DynamoDbStore, IdempotencyStore, MemoryStore};
use kafka_esm::sink::{MemorySink, MessageSink};
use kafka_esm_telemetry::TelemetryHandler;
use kafka_esm_telemetry::app::telemetry_factory;
use kafka_esm_telemetry::config::TelemetryConfig;
use kafka_esm_tools::redrive::{
    MessageReport, MessageStatus, Mode, RedriveOptions, Redriver, RunSummary,
};
use rdkafka::ClientConfig;
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

const TOPIC: &str = "telemetry.metrics-eu";
const ALERTS: &str = "telemetry.alerts";
const DLQ: &str = "telemetry.metrics-eu.dlq";

fn aws(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(Credentials::new(
                "test",
                "test",
                None,
                None,
                "static-test",
            )),
        )
        .endpoint_url(endpoint)
        .build()
}

fn unique(name: &str) -> String {
    format!("{name}-{}-{:x}", std::process::id(), fastrand::u64(..))
}

/// A fresh queue and a fresh idempotency table.
struct Aws {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    store: Arc<DynamoDbStore>,
}

async fn fresh_aws(endpoint: &str, test: &str) -> Aws {
    let config = aws(endpoint);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let queue_url = sqs
        .create_queue()
        .queue_name(unique(&format!("esm-failures-{test}")))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let store = Arc::new(DynamoDbStore::new(
        aws_sdk_dynamodb::Client::new(&config),
        unique(&format!("kafka-esm-redrive-{test}")),
    ));
    store.create_table().await.unwrap();
    Aws {
        sqs,
        queue_url,
        store,
    }
}

impl Aws {
    async fn send(&self, body: &str) -> String {
        self.sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .unwrap()
            .message_id
            .unwrap()
    }

    /// Messages in the queue, visible or not.
    async fn depth(&self) -> (u64, u64) {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap();
        let number = |name: QueueAttributeName| -> u64 { attributes[&name].parse().unwrap() };
        (
            number(QueueAttributeName::ApproximateNumberOfMessages),
            number(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }
}

fn cluster(partitions: i32) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, partitions, 1).unwrap();
    cluster.create_topic(DLQ, 1, 1).unwrap();
    cluster.create_topic(ALERTS, 1, 1).unwrap();
    cluster
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "0")
        .create()
        .unwrap()
}

fn metric(id: &str, value: f64) -> Vec<u8> {
    format!(
        r#"{{"event_id":"{id}","timestamp":"2026-11-22T10:00:00Z","database_type":"postgres","instance_id":"pg-1","metric_name":"cpu_usage_percent","value":{value}}}"#
    )
    .into_bytes()
}

/// Produces `value` to `partition`, returning its offset.
async fn produce(
    producer: &FutureProducer,
    partition: i32,
    key: &[u8],
    value: &[u8],
    headers: OwnedHeaders,
) -> i64 {
    producer
        .send(
            FutureRecord::to(TOPIC)
                .partition(partition)
                .key(key)
                .payload(value)
                .timestamp(1_795_000_000_000)
                .headers(headers),
            Timeout::After(Duration::from_secs(10)),
        )
        .await
        .unwrap()
        .offset
}

/// An on-failure record as the ESM writes it to SQS (offsets as strings).
fn on_failure(bootstrap: &str, request_id: &str, ranges: &[(i32, i64, i64)]) -> String {
    let records_info: serde_json::Map<String, serde_json::Value> = ranges
        .iter()
        .map(|(partition, first, last)| {
            (
                format!("{TOPIC}-{partition}"),
                serde_json::json!({
                    "firstRecordOffset": first.to_string(),
                    "lastRecordOffset": last.to_string(),
                    "firstRecordTimestamp": "2026-11-22T10:00:00.000Z",
                    "lastRecordTimestamp": "2026-11-22T10:00:01.000Z"
                }),
            )
        })
        .collect();
    serde_json::json!({
        "requestContext": {
            "requestId": request_id,
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:telemetry-consumer",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 3
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": "2026-11-22T10:05:00.000Z",
        "KafkaBatchInfo": {
            "batchSize": 20,
            "bootstrapServers": bootstrap,
            "payloadSize": 4096,
            "recordsInfo": records_info
        }
    })
    .to_string()
}

/// The telemetry handler's factory, as `esm redrive` has it.
type Telemetry = Box<
    dyn Fn(&ConsumerConfig, Arc<dyn MessageSink>) -> Result<TelemetryHandler, String> + Send + Sync,
>;

/// A redriver of the telemetry handler.
fn redriver(
    config: TelemetryConfig,
    options: RedriveOptions,
    store: Arc<dyn IdempotencyStore>,
) -> Redriver<Telemetry> {
    let factory: Telemetry = Box::new(telemetry_factory(config.alerts, config.metric_format));
    Redriver::new(config.consumer, options, store, factory).unwrap()
}

fn config(extra: &[(&str, &str)]) -> TelemetryConfig {
    let mut vars: Vec<(String, String)> = [
        ("PUBLISH_TIMEOUT_MS", "2000"),
        ("RETRY_BASE_MS", "20"),
        ("RETRY_MAX_MS", "100"),
        ("RETRY_MAX_ATTEMPTS", "3"),
        ("SAFETY_MARGIN_MS", "0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    TelemetryConfig::from_lookup(&move |name| {
        vars.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })
    .unwrap()
}

fn options(mode: Mode) -> RedriveOptions {
    RedriveOptions {
        mode,
        wait_seconds: 0,
        fetch_timeout: Duration::from_secs(10),
        invocation_timeout: Duration::from_secs(20),
        chunk_records: 4,
        ..RedriveOptions::default()
    }
}

async fn run(redriver: &Redriver<Telemetry>, aws: &Aws) -> (RunSummary, Vec<MessageReport>) {
    let mut reports = Vec::new();
    let summary = redriver
        .run_queue(&aws.sqs, &aws.queue_url, &mut |r: &MessageReport| {
            reports.push(r.clone())
        })
        .await
        .unwrap();
    (summary, reports)
}

/// Two partitions: p0 offsets 0..=5 (ids m-0..m-5, every even one alerts), p1 offsets 0..=3 with
/// one poison record at offset 2. Returns the cluster.
async fn seeded_cluster(
    prefix: &str,
) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = cluster(2);
    let producer = producer(&cluster.bootstrap_servers());
    for i in 0..6 {
        let value = metric(
            &format!("{prefix}-m-{i}"),
            if i % 2 == 0 { 95.0 } else { 10.0 },
        );
        assert_eq!(
            produce(&producer, 0, b"pg-1", &value, OwnedHeaders::new()).await,
            i
        );
    }
    for i in 0..4 {
        let value = if i == 2 {
            b"\xff not a metric".to_vec()
        } else {
            metric(&format!("{prefix}-n-{i}"), 50.0)
        };
        assert_eq!(
            produce(&producer, 1, b"pg-2", &value, OwnedHeaders::new()).await,
            i
        );
    }
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto (infra/local-stack.sh)"]
async fn failed_records_are_reprocessed_once_and_the_message_deleted() {
    let endpoint = moto();
    let aws = fresh_aws(&endpoint, "reprocess").await;
    let prefix = unique("reprocess");
    let cluster = seeded_cluster(&prefix).await;
    let bootstrap = cluster.bootstrap_servers();
    // The ESM gave up on p0 1..=5 and p1 0..=3.
    let body = on_failure(&bootstrap, "req-failed-1", &[(0, 1, 5), (1, 0, 3)]);
    let id = aws.send(&body).await;

    let sink = Arc::new(MemorySink::new());
    let redriver = redriver(config(&[]), options(Mode::Reprocess), aws.store.clone())
        .with_sinks(sink.clone(), sink.clone());
    let (summary, reports) = run(&redriver, &aws).await;
    assert_eq!(reports.len(), 1);
    let report = &reports[0];
    assert_eq!(report.message_id, id);
    assert_eq!(report.status, MessageStatus::Deleted, "{report:?}");
    assert_eq!(report.request_id.as_deref(), Some("req-failed-1"));
    assert_eq!(
        report
            .ranges
            .iter()
            .map(|r| (
                r.partition,
                r.fetched,
                r.processed,
                r.duplicates,
                r.dead_lettered
            ))
            .collect::<Vec<_>>(),
        [(0, 5, 5, 0, 0), (1, 4, 3, 0, 1)]
    );
    assert_eq!((summary.deleted, summary.left, summary.fetched), (1, 0, 9));
    // Offsets 2 and 4 of p0 break the rule (offset 0 was not in the failed range).
    let alerts = sink.messages_to(ALERTS);
    assert_eq!(alerts.len(), 2);
    let dead = sink.messages_to(DLQ);
    assert_eq!(
        dead.len(),
        1,
        "the poison record is dead-lettered by the consumer"
    );
    assert_eq!(aws.depth().await, (0, 0), "the message is deleted");
    // The idempotency table holds them: the Lambda's retries would now skip them too.
    let key = kafka_esm::idempotency::keys::business_key(&format!("{prefix}-m-2"));
    assert_eq!(
        aws.store
            .completed(&[&key], kafka_esm::retry::now_ms())
            .await
            .unwrap(),
        vec![Some(CompletedOutcome::Processed)]
    );

    // The same failure again (a second destination message, or a redrive run twice): duplicates only.
    aws.send(&body).await;
    let (summary, reports) = run(&redriver, &aws).await;
    assert_eq!(reports[0].status, MessageStatus::Deleted);
    assert_eq!(
        (summary.processed, summary.duplicates, summary.dead_lettered),
        (0, 9, 0)
    );
    assert_eq!(sink.messages_to(ALERTS).len(), 2, "no new alert");
    assert_eq!(sink.messages_to(DLQ).len(), 1, "no second dead letter");
    assert_eq!(aws.depth().await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto (infra/local-stack.sh)"]
async fn a_malformed_message_stays_on_the_queue_and_the_others_go_on() {
    let endpoint = moto();
    let aws = fresh_aws(&endpoint, "malformed").await;
    let prefix = unique("malformed");
    let cluster = seeded_cluster(&prefix).await;
    let malformed = include_str!("../../events/on-failure/malformed-offset.json");
    let bad_id = aws.send(malformed).await;
    let not_json_id = aws.send("this is not JSON").await;
    let good_id = aws
        .send(&on_failure(
            &cluster.bootstrap_servers(),
            "req-2",
            &[(0, 0, 1)],
        ))
        .await;

    let sink = Arc::new(MemorySink::new());
    let mut opts = options(Mode::Reprocess);
    opts.visibility_timeout = Some(1);
    let redriver =
        redriver(config(&[]), opts, aws.store.clone()).with_sinks(sink.clone(), sink.clone());
    let (summary, reports) = run(&redriver, &aws).await;
    assert_eq!((summary.messages, summary.deleted, summary.left), (3, 1, 2));
    let by_id = |id: &str| reports.iter().find(|r| r.message_id == id).unwrap();
    assert_eq!(by_id(&good_id).status, MessageStatus::Deleted);
    let bad = by_id(&bad_id);
    assert_eq!(bad.status, MessageStatus::Left);
    let reason = bad.reason.as_deref().unwrap();
    assert!(
        reason.contains("firstRecordOffset") && reason.contains("forty-nine"),
        "{reason}"
    );
    assert!(
        by_id(&not_json_id)
            .reason
            .as_deref()
            .unwrap()
            .contains("not JSON")
    );
    // Both malformed messages are still there once their visibility timeout ends.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (visible, invisible) = aws.depth().await;
    assert_eq!(visible + invisible, 2);
    let again = aws
        .sqs
        .receive_message()
        .queue_url(&aws.queue_url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    let mut ids: Vec<String> = again.into_iter().filter_map(|m| m.message_id).collect();
    ids.sort();
    let mut expected = vec![bad_id, not_json_id];
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto (infra/local-stack.sh)"]
async fn a_dry_run_reports_the_plan_and_changes_nothing() {
    let endpoint = moto();
    let aws = fresh_aws(&endpoint, "dry").await;
    let prefix = unique("dry");
    let cluster = seeded_cluster(&prefix).await;
    aws.send(&on_failure(
        &cluster.bootstrap_servers(),
        "req-3",
        &[(0, 0, 5), (1, 1, 3)],
    ))
    .await;
    aws.send(&on_failure(
        &cluster.bootstrap_servers(),
        "req-4",
        &[(0, 4, 9)],
    ))
    .await;

    let sink = Arc::new(MemorySink::new());
    let mut opts = options(Mode::Reprocess);
    opts.dry_run = true;
    let redriver =
        redriver(config(&[]), opts, aws.store.clone()).with_sinks(sink.clone(), sink.clone());
    let (summary, mut reports) = run(&redriver, &aws).await;
    reports.sort_by_key(|r| r.request_id.clone());
    assert_eq!(
        (summary.messages, summary.dry_run, summary.deleted),
        (2, 2, 0)
    );
    assert!(reports.iter().all(|r| r.status == MessageStatus::DryRun));
    assert_eq!(reports[0].would_delete, Some(true));
    assert_eq!(
        reports[0]
            .ranges
            .iter()
            .map(|r| r.fetched)
            .collect::<Vec<_>>(),
        [6, 3]
    );
    // Offsets 6..=9 of p0 were never written: a real run would leave that message.
    assert_eq!(reports[1].would_delete, Some(false));
    assert_eq!(reports[1].ranges[0].fetched, 2);
    assert!(
        reports[1]
            .reason
            .as_deref()
            .unwrap()
            .contains("high watermark 6")
    );
    assert_eq!(summary.would_be_left, 1);
    // Nothing handled, nothing recorded, and both messages visible again at once.
    assert!(sink.is_empty());
    let key = kafka_esm::idempotency::keys::business_key(&format!("{prefix}-m-0"));
    assert_eq!(
        aws.store
            .completed(&[&key], kafka_esm::retry::now_ms())
            .await
            .unwrap(),
        vec![None]
    );
    assert_eq!(aws.depth().await, (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto (infra/local-stack.sh)"]
async fn to_dlq_copies_the_records_with_provenance_headers() {
    let endpoint = moto();
    let aws = fresh_aws(&endpoint, "todlq").await;
    let cluster = cluster(1);
    let bootstrap = cluster.bootstrap_servers();
    let producer = producer(&bootstrap);
    let original_headers = || {
        OwnedHeaders::new()
            .insert(KafkaHeader {
                key: "trace",
                value: Some(&[0x80u8, 0xff][..]),
            })
            .insert(KafkaHeader {
                key: "trace",
                value: Some("second"),
            })
            .insert(KafkaHeader::<&[u8]> {
                key: "null",
                value: None,
            })
    };
    for i in 0..3 {
        produce(
            &producer,
            0,
            b"k",
            &metric(&format!("d-{i}"), 1.0),
            original_headers(),
        )
        .await;
    }
    aws.send(&on_failure(&bootstrap, "req-dlq", &[(0, 1, 2)]))
        .await;

    // Dead letters go to Kafka (KAFKA_BOOTSTRAP_SERVERS), as in production.
    let redriver = redriver(
        config(&[("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)]),
        options(Mode::ToDeadLetterTopic),
        Arc::new(MemoryStore::new()),
    );
    let (summary, reports) = run(&redriver, &aws).await;
    assert_eq!(
        reports[0].status,
        MessageStatus::Deleted,
        "{:?}",
        reports[0]
    );
    assert_eq!((summary.copied, summary.processed), (2, 0));
    assert_eq!(aws.depth().await, (0, 0));

    let dead = common::consume(&bootstrap, DLQ, 1, 2);
    assert_eq!(dead.len(), 2);
    for (d, offset) in dead.iter().zip([1, 2]) {
        assert_eq!(d.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(
            d.value.as_deref(),
            Some(metric(&format!("d-{offset}"), 1.0).as_slice())
        );
        assert_eq!(
            &d.headers[..3],
            &[
                ("trace".to_owned(), Some(vec![0x80, 0xff])),
                ("trace".to_owned(), Some(b"second".to_vec())),
                ("null".to_owned(), None),
            ],
            "original headers first, unchanged"
        );
        assert_eq!(d.header(headers::ORIGINAL_TOPIC).as_deref(), Some(TOPIC));
        assert_eq!(d.header(headers::ORIGINAL_PARTITION).as_deref(), Some("0"));
        assert_eq!(d.header(headers::ORIGINAL_OFFSET), Some(offset.to_string()));
        assert_eq!(
            d.header(headers::ORIGINAL_TIMESTAMP).as_deref(),
            Some("1795000000000")
        );
        assert_eq!(
            d.header(headers::ORIGINAL_TIMESTAMP_TYPE).as_deref(),
            Some("CREATE_TIME")
        );
        assert_eq!(d.header(headers::ERROR_KIND).as_deref(), Some("rejected"));
        assert_eq!(
            d.header(headers::ERROR_MESSAGE).as_deref(),
            Some("redriven from the on-failure queue: RetryAttemptsExhausted")
        );
        assert_eq!(d.header(headers::ATTEMPTS).as_deref(), Some("3"));
        assert_eq!(
            d.header(headers::FUNCTION_NAME).as_deref(),
            Some("telemetry-consumer")
        );
        assert_eq!(d.header(headers::REQUEST_ID).as_deref(), Some("req-dlq"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto (infra/local-stack.sh)"]
async fn records_deleted_by_retention_are_reported_not_skipped() {
    let endpoint = moto();
    let aws = fresh_aws(&endpoint, "retention").await;
    // The mock broker keeps at most 5 MiB per partition and drops the oldest record batches beyond
    // that (it has no DeleteRecords handler): ten 700 kB records, each its own batch, push the first
    // ones out, exactly as retention does.
    let cluster = cluster(1);
    let bootstrap = cluster.bootstrap_servers();
    let producer = producer(&bootstrap);
    let pad = "x".repeat(700_000);
    for i in 0..10 {
        let value = format!(
            r#"{{"event_id":"r-{i}-{}","timestamp":"2026-11-22T10:00:00Z","database_type":"postgres","instance_id":"pg-1","metric_name":"cpu_usage_percent","value":90,"tags":{{"pad":"{pad}"}}}}"#,
            std::process::id()
        );
        produce(&producer, 0, b"k", value.as_bytes(), OwnedHeaders::new()).await;
    }
    let reader_settings = kafka_esm::kafka::KafkaSettings::new(bootstrap.clone());
    let reader =
        kafka_esm_tools::redrive::RangeReader::new(&reader_settings, Duration::from_secs(10))
            .unwrap();
    let plan = tokio::task::spawn_blocking(move || {
        reader.plan(&kafka_esm_tools::redrive::OffsetRange {
            topic: TOPIC.into(),
            partition: 0,
            first_offset: 0,
            last_offset: 9,
            first_timestamp: None,
            last_timestamp: None,
        })
    })
    .await
    .unwrap()
    .unwrap();
    let low = plan.low_watermark;
    assert!(
        low > 0 && low < 10,
        "retention moved the low watermark: {plan:?}"
    );
    println!("retention: low watermark {low} of 10 offsets");

    aws.send(&on_failure(&bootstrap, "req-ret", &[(0, 0, 9)]))
        .await;
    let sink = Arc::new(MemorySink::new());
    let redriver = redriver(config(&[]), options(Mode::Reprocess), aws.store.clone())
        .with_sinks(sink.clone(), sink.clone());
    let (summary, reports) = run(&redriver, &aws).await;
    let range = &reports[0].ranges[0];
    let missing = range.missing.expect("the deleted offsets are reported");
    assert_eq!(
        (missing.first, missing.last, missing.count),
        (0, low - 1, low as u64)
    );
    assert_eq!(range.fetched, (10 - low) as u64);
    assert_eq!(range.processed, (10 - low) as u64);
    assert_eq!(summary.missing, low as u64);
    // Every offset is accounted for (handled, or reported as gone): the message is done.
    assert_eq!(reports[0].status, MessageStatus::Deleted);
    assert_eq!(sink.messages_to(ALERTS).len(), (10 - low) as usize);
    let json = serde_json::to_value(&reports[0]).unwrap();
    assert_eq!(json["ranges"][0]["missing"]["count"], low);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto (infra/local-stack.sh)"]
async fn a_message_whose_records_cannot_all_be_handled_stays_with_a_reason() {
    let endpoint = moto();
    let aws = fresh_aws(&endpoint, "unfinished").await;
    let prefix = unique("unfinished");
    let cluster = seeded_cluster(&prefix).await;
    let bootstrap = cluster.bootstrap_servers();
    aws.send(&on_failure(&bootstrap, "req-5", &[(0, 0, 5)]))
        .await;
    // A message naming a cluster nobody listens on.
    aws.send(&on_failure("127.0.0.1:9", "req-6", &[(0, 0, 1)]))
        .await;

    // The alerts sink is down: the handler's transient failures outlast the budget.
    let sink = Arc::new(MemorySink::new());
    sink.set_down(true);
    let mut opts = options(Mode::Reprocess);
    opts.visibility_timeout = Some(1);
    opts.fetch_timeout = Duration::from_secs(2);
    opts.invocation_timeout = Duration::from_secs(2);
    let redriver = redriver(config(&[]), opts.clone(), aws.store.clone())
        .with_sinks(sink.clone(), sink.clone());
    let (summary, mut reports) = run(&redriver, &aws).await;
    reports.sort_by_key(|r| r.request_id.clone());
    assert_eq!((summary.deleted, summary.left), (0, 2));
    let down = &reports[0];
    assert_eq!(down.status, MessageStatus::Left);
    assert!(down.ranges[0].unfinished > 0);
    assert!(
        down.reason.as_deref().unwrap().contains("unfinished"),
        "{:?}",
        down.reason
    );
    let unreachable = &reports[1];
    assert_eq!(unreachable.status, MessageStatus::Left);
    assert!(
        unreachable
            .reason
            .as_deref()
            .unwrap()
            .contains("127.0.0.1:9"),
        "{:?}",
        unreachable.reason
    );

    // The sink is back: the next run finishes the first message (offset 0 alerts once, now).
    sink.set_down(false);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (summary, reports) = run(&redriver, &aws).await;
    let done = reports
        .iter()
        .find(|r| r.request_id.as_deref() == Some("req-5"))
        .unwrap();
    assert_eq!(done.status, MessageStatus::Deleted, "{done:?}");
    assert_eq!(summary.deleted, 1);
    assert_eq!(
        sink.messages_to(ALERTS).len(),
        3,
        "offsets 0, 2 and 4 alert, once each"
    );
}

fn range(partition: i32, first: i64, last: i64) -> kafka_esm_tools::redrive::OffsetRange {
    kafka_esm_tools::redrive::OffsetRange {
        topic: TOPIC.into(),
        partition,
        first_offset: first,
        last_offset: last,
        first_timestamp: None,
        last_timestamp: None,
    }
}

async fn fetch(
    bootstrap: &str,
    range: kafka_esm_tools::redrive::OffsetRange,
) -> kafka_esm_tools::redrive::RangeFetch {
    let settings = kafka_esm::kafka::KafkaSettings::new(bootstrap);
    let reader =
        kafka_esm_tools::redrive::RangeReader::new(&settings, Duration::from_secs(10)).unwrap();
    tokio::task::spawn_blocking(move || reader.fetch(&range))
        .await
        .unwrap()
        .unwrap()
}

// The reader alone needs no moto: these always run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_returns_exactly_the_range_byte_for_byte() {
    let cluster = cluster(2);
    let bootstrap = cluster.bootstrap_servers();
    let producer = producer(&bootstrap);
    for i in 0..8 {
        let headers = OwnedHeaders::new()
            .insert(KafkaHeader {
                key: "h",
                value: Some(&[i as u8, 0xff][..]),
            })
            .insert(KafkaHeader::<&[u8]> {
                key: "h",
                value: None,
            });
        produce(
            &producer,
            1,
            &[0xde, i as u8],
            &[0x00, 0x80, i as u8],
            headers,
        )
        .await;
    }
    let got = fetch(&bootstrap, range(1, 2, 5)).await;
    assert_eq!(
        got.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        [2, 3, 4, 5]
    );
    let r = &got.records[1];
    assert_eq!((r.topic.as_str(), r.partition), (TOPIC, 1));
    assert_eq!(r.key.as_deref(), Some(&[0xde, 3][..]));
    assert_eq!(r.value.as_deref(), Some(&[0x00, 0x80, 3][..]));
    assert_eq!(r.timestamp, Some(1_795_000_000_000));
    assert_eq!(
        r.timestamp_type,
        Some(kafka_esm::record::TimestampType::CreateTime)
    );
    assert_eq!(r.headers.len(), 2);
    assert_eq!(r.headers[0].value.as_deref(), Some(&[3, 0xff][..]));
    assert_eq!(r.headers[1].value, None);
    assert_eq!((got.low_watermark, got.high_watermark), (0, 8));
    assert_eq!(
        (got.missing, got.gaps, got.incomplete.clone()),
        (None, 0, None)
    );

    // The same reader's next range, on the other (empty) partition and back.
    let empty = fetch(&bootstrap, range(0, 0, 3)).await;
    assert!(empty.records.is_empty());
    assert!(matches!(
        empty.incomplete,
        Some(kafka_esm_tools::redrive::Incomplete::BeyondEnd {
            first: 0,
            last: 3,
            high_watermark: 0
        })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_past_the_end_of_the_partition_make_the_fetch_incomplete() {
    let cluster = cluster(1);
    let bootstrap = cluster.bootstrap_servers();
    let producer = producer(&bootstrap);
    for i in 0..3 {
        produce(
            &producer,
            0,
            b"k",
            &metric(&format!("e-{i}"), 1.0),
            OwnedHeaders::new(),
        )
        .await;
    }
    let got = fetch(&bootstrap, range(0, 1, 6)).await;
    assert_eq!(
        got.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        [1, 2]
    );
    let incomplete = got.incomplete.expect("offsets 3..=6 are not in the log");
    assert_eq!(
        incomplete,
        kafka_esm_tools::redrive::Incomplete::BeyondEnd {
            first: 3,
            last: 6,
            high_watermark: 3
        }
    );
    assert!(incomplete.to_string().contains("high watermark 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_an_error_within_the_timeout() {
    let settings = kafka_esm::kafka::KafkaSettings::new("127.0.0.1:9");
    let reader =
        kafka_esm_tools::redrive::RangeReader::new(&settings, Duration::from_millis(1_500))
            .unwrap();
    let started = std::time::Instant::now();
    let error = tokio::task::spawn_blocking(move || reader.fetch(&range(0, 0, 1)))
        .await
        .unwrap()
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    let text = error.to_string();
    assert!(
        text.contains("watermarks") && text.contains("127.0.0.1:9"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto (infra/local-stack.sh)"]
async fn the_command_line_redrives_and_exits_by_what_it_left() {
    let endpoint = moto();
    let aws = fresh_aws(&endpoint, "cli").await;
    let prefix = unique("cli");
    let cluster = seeded_cluster(&prefix).await;
    let bootstrap = cluster.bootstrap_servers();
    aws.send(&on_failure(&bootstrap, "req-cli", &[(0, 0, 5)]))
        .await;
    let esm = |extra: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_esm"));
        command
            .args([
                "redrive",
                "--queue-url",
                &aws.queue_url,
                "--endpoint-url",
                &endpoint,
            ])
            .args(["--region", "us-east-1", "--json"])
            .args(extra)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("IDEMPOTENCY_STORE", "dynamodb")
            .env("IDEMPOTENCY_TABLE", aws.store.table())
            .env("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
            .env_remove("RUST_LOG");
        command.output().unwrap()
    };
    let output = esm(&["--wait-seconds", "0"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0]["status"], "deleted");
    assert_eq!(lines[0]["ranges"][0]["processed"], 6);
    assert_eq!(lines[1]["summary"]["deleted"], 1);
    // The alerts went to Kafka: offsets 0, 2 and 4 break the rule.
    let alerts = common::consume(&bootstrap, ALERTS, 1, 3);
    assert_eq!(alerts.len(), 3);

    // A malformed message: reported, left, exit code 1.
    aws.send("{}").await;
    let output = esm(&["--wait-seconds", "0", "--visibility-timeout", "1"]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(r#""status":"left""#), "{stdout}");
    assert!(stdout.contains("KafkaBatchInfo"), "{stdout}");
    // Bad options: exit code 2 with the reason.
    let output = esm(&["--wait-seconds", "30"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("0 to 20 seconds"));
}
