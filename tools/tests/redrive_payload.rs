//! `esm redrive` for on-failure records that carry their records in `payload` (S3 and Kafka-topic
//! destinations), from a file, a Kafka topic (rdkafka's `MockCluster`) and an S3 bucket (moto).
//! The records are taken from the payload: the source topic is never read.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::servers::moto;
use kafka_esm::config::ConsumerConfig;
use kafka_esm::dead_letter::headers;
use kafka_esm::idempotency::{IdempotencyStore, MemoryStore};
use kafka_esm::kafka::KafkaSettings;
use kafka_esm::record::KafkaRecord;
use kafka_esm::sink::{MemorySink, MessageSink};
use kafka_esm_telemetry::TelemetryHandler;
use kafka_esm_telemetry::app::telemetry_factory;
use kafka_esm_telemetry::config::TelemetryConfig;
use kafka_esm_tools::poll::on_failure::{
    GiveUp, LastResponse, kafka_destination_messages, s3_destination_record,
};
use kafka_esm_tools::redrive::{MessageReport, MessageStatus, Mode, RedriveOptions, Redriver};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde_json::Value;

const TOPIC: &str = "telemetry.metrics-eu";
const ALERTS: &str = "telemetry.alerts";
const DLQ: &str = "telemetry.metrics-eu.dlq";
const FAILURES: &str = "telemetry.failures";

fn metric(id: &str, value: f64) -> Vec<u8> {
    format!(
        r#"{{"event_id":"{id}","timestamp":"2026-11-22T10:00:00Z","database_type":"postgres","instance_id":"pg-1","metric_name":"cpu_usage_percent","value":{value}}}"#
    )
    .into_bytes()
}

/// Records of partition `partition` from `first`: an alerting metric, a quiet one, and poison.
fn records(prefix: &str, partition: i32, first: i64) -> Vec<KafkaRecord> {
    let values = [
        metric(&format!("{prefix}-hot"), 95.0),
        metric(&format!("{prefix}-quiet"), 10.0),
        b"\xff not a metric".to_vec(),
    ];
    values
        .into_iter()
        .enumerate()
        .map(|(n, value)| {
            let mut r = KafkaRecord::new(TOPIC, partition, first + n as i64);
            r.key = Some(b"pg-1".to_vec());
            r.value = Some(value);
            r.timestamp = Some(1_795_000_000_000 + n as i64);
            r
        })
        .collect()
}

fn give_up<'a>(records: &'a [KafkaRecord], request_id: &'a str) -> GiveUp<'a> {
    GiveUp {
        records,
        condition: "RetryAttemptsExhausted",
        invoke_count: 3,
        request_id,
        function_arn: "arn:aws:lambda:us-east-1:123456789012:function:telemetry-consumer",
        response: Some(LastResponse {
            status_code: 200,
            function_error: Some("Unhandled".into()),
        }),
        bootstrap_servers: "b-1.example:9098",
        event_source_arn: Some("arn:aws:kafka:us-east-1:123456789012:cluster/c/u"),
        payload_size: 1234,
    }
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

fn config() -> TelemetryConfig {
    let vars = [
        ("PUBLISH_TIMEOUT_MS", "2000"),
        ("RETRY_BASE_MS", "20"),
        ("RETRY_MAX_MS", "100"),
        ("RETRY_MAX_ATTEMPTS", "3"),
        ("SAFETY_MARGIN_MS", "0"),
    ];
    TelemetryConfig::from_lookup(&move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    })
    .unwrap()
}

struct Harness {
    redriver: Redriver<Telemetry>,
    out: Arc<MemorySink>,
}

fn harness(mode: Mode, dry_run: bool) -> Harness {
    let out = Arc::new(MemorySink::new());
    let redriver = redriver(
        config(),
        RedriveOptions {
            mode,
            dry_run,
            fetch_timeout: Duration::from_secs(15),
            invocation_timeout: Duration::from_secs(20),
            ..RedriveOptions::default()
        },
        Arc::new(MemoryStore::new()),
    )
    .with_sinks(out.clone(), out.clone());
    Harness { redriver, out }
}

fn lines(values: &[Value]) -> String {
    values
        .iter()
        .map(|v| v.to_string() + "\n")
        .collect::<String>()
}

async fn run_file(
    h: &Harness,
    path: &Path,
) -> (kafka_esm_tools::redrive::RunSummary, Vec<MessageReport>) {
    let mut reports = Vec::new();
    let summary = h
        .redriver
        .run_file(path, &mut |r: &MessageReport| reports.push(r.clone()))
        .await
        .unwrap();
    (summary, reports)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_topic_and_s3_records_are_reprocessed_from_their_payload_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("failures.jsonl");
    // Partition 0 as a Kafka-topic destination writes it (one message per record), partition 1 as
    // an S3 destination does (one record, the invoked event as an escaped string), wrapped in an
    // SNS notification as a subscribed queue would hold it.
    let p0 = records("file-a", 0, 40);
    let p1 = records("file-b", 1, 7);
    let mut messages: Vec<Value> = kafka_destination_messages(&give_up(&p0, "req-k"), 1)
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    let s3 = s3_destination_record(&give_up(&p1, "req-s"), 1);
    messages.push(
        serde_json::json!({"Type": "Notification", "MessageId": "n-1", "Message": s3.to_string()}),
    );
    std::fs::write(&path, lines(&messages)).unwrap();

    let h = harness(Mode::Reprocess, false);
    let (summary, reports) = run_file(&h, &path).await;
    assert_eq!(summary.messages, 4, "{reports:?}");
    assert_eq!(summary.done, 4, "{reports:?}");
    assert_eq!(summary.left, 0);
    assert_eq!(
        (summary.fetched, summary.processed, summary.dead_lettered),
        (6, 4, 2),
        "{reports:?}"
    );
    assert!(reports.iter().all(|r| r.status == MessageStatus::Done));
    assert_eq!(reports[0].ranges[0].first_offset, 40);
    assert_eq!(reports[3].ranges[0].partition, 1);
    assert_eq!(
        h.out.messages_to(ALERTS).len(),
        2,
        "one hot metric per partition"
    );
    let dead = h.out.messages_to(DLQ);
    assert_eq!(dead.len(), 2);
    let header = |m: &kafka_esm::sink::OutboundMessage, name: &str| {
        m.headers
            .iter()
            .find(|h| h.name == name)
            .and_then(|h| String::from_utf8(h.value.clone()?).ok())
    };
    assert_eq!(
        header(&dead[0], headers::ORIGINAL_OFFSET).as_deref(),
        Some("42")
    );
    assert_eq!(
        header(&dead[1], headers::ORIGINAL_OFFSET).as_deref(),
        Some("9")
    );

    // Again: every record is a duplicate, nothing is published twice.
    let (summary, _) = run_file(&h, &path).await;
    assert_eq!((summary.processed, summary.duplicates), (0, 6));
    assert_eq!(h.out.messages_to(ALERTS).len(), 2);
    assert_eq!(h.out.messages_to(DLQ).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_kafka_destination_record_copies_to_the_dead_letter_topic() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events/on-failure/aws-guide-kafka-destination.json");
    let h = harness(Mode::ToDeadLetterTopic, false);
    let (summary, reports) = run_file(&h, &path).await;
    assert_eq!((summary.done, summary.copied), (1, 1), "{reports:?}");
    let copied = h.out.messages_to("my-topic.dlq");
    assert_eq!(copied.len(), 1);
    assert_eq!(copied[0].key.as_deref(), Some(&b"test-key"[..]));
    assert_eq!(copied[0].value.as_deref(), Some(&b"test-value"[..]));
}

#[test]
fn a_dry_run_of_payload_records_needs_no_broker_and_names_each_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("failures.jsonl");
    let p0 = records("dry", 0, 40);
    let messages: Vec<Value> = kafka_destination_messages(&give_up(&p0, "req-d"), 1)
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    std::fs::write(&path, lines(&messages)).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_esm"))
        .args(["redrive", "--file"])
        .arg(&path)
        .args(["--dry-run", "--json"])
        .env("IDEMPOTENCY_STORE", "memory")
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env_remove("AWS_REGION")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    let planned: Vec<(String, i64, i64, String)> = lines[..3]
        .iter()
        .map(|l| {
            assert_eq!(l["status"], "dry_run");
            assert_eq!(l["would_delete"], true);
            let r = &l["ranges"][0]["records"][0];
            (
                r["topic"].as_str().unwrap().to_owned(),
                r["partition"].as_i64().unwrap(),
                r["offset"].as_i64().unwrap(),
                r["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        planned.iter().map(|p| p.2).collect::<Vec<_>>(),
        [40, 41, 42]
    );
    assert!(planned.iter().all(|p| p.0 == TOPIC && p.1 == 0));
    assert!(planned[0].3.starts_with("reprocess"), "{planned:?}");
    assert_eq!(lines[3]["summary"]["dry_run"], 3);
    assert_eq!(lines[3]["summary"]["would_be_left"], 0);

    // A metadata-only record cannot be planned without a broker: it says so, exit code 1.
    let sqs_shape = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../events/on-failure/self-managed-payload-too-large.json"),
    )
    .unwrap();
    std::fs::write(&path, sqs_shape).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_esm"))
        .args(["redrive", "--file"])
        .arg(&path)
        .args([
            "--dry-run",
            "--json",
            "--brokers",
            "127.0.0.1:1",
            "--fetch-timeout-ms",
            "500",
        ])
        .env("IDEMPOTENCY_STORE", "memory")
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "0")
        .create()
        .unwrap()
}

async fn produce(producer: &FutureProducer, partition: i32, key: Option<&[u8]>, value: &str) {
    let mut record = FutureRecord::<[u8], str>::to(FAILURES)
        .partition(partition)
        .payload(value);
    if let Some(key) = key {
        record = record.key(key);
    }
    producer
        .send(record, Timeout::After(Duration::from_secs(10)))
        .await
        .unwrap();
}

async fn run_topic(
    h: &Harness,
    bootstrap: &str,
) -> (kafka_esm_tools::redrive::RunSummary, Vec<MessageReport>) {
    // MockCluster forgets a closed member only when its session times out (45 s by default).
    let mut settings = KafkaSettings::new(bootstrap);
    settings
        .properties
        .push(("session.timeout.ms".into(), "6000".into()));
    let mut reports = Vec::new();
    let summary = h
        .redriver
        .run_topic(
            &settings,
            FAILURES,
            "esm-redrive-test",
            &mut |r: &MessageReport| reports.push(r.clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}; reports so far: {reports:#?}"));
    (summary, reports)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_on_failure_topic_is_redriven_and_committed_only_past_handled_messages() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(FAILURES, 2, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let producer = producer(&bootstrap);
    let p0 = records("topic-a", 0, 10);
    for (key, message) in kafka_destination_messages(&give_up(&p0, "req-t"), 1) {
        produce(&producer, 0, key.as_deref(), &message.to_string()).await;
    }
    // Partition 1: a handled message, one that is not an on-failure record, then another good one.
    let p1 = records("topic-b", 1, 3);
    let p1_messages = kafka_destination_messages(&give_up(&p1[..2], "req-u"), 1);
    produce(&producer, 1, None, &p1_messages[0].1.to_string()).await;
    produce(&producer, 1, None, "{\"not\": \"an on-failure record\"}").await;
    produce(&producer, 1, None, &p1_messages[1].1.to_string()).await;

    let h = harness(Mode::Reprocess, false);
    let (summary, reports) = run_topic(&h, &bootstrap).await;
    assert_eq!(summary.messages, 6, "{reports:?}");
    assert_eq!(
        (summary.committed, summary.done, summary.left),
        (4, 1, 1),
        "{reports:?}"
    );
    assert_eq!(
        (summary.processed, summary.dead_lettered),
        (4, 1),
        "{reports:?}"
    );
    let held = reports
        .iter()
        .find(|r| r.message_id == format!("{FAILURES}-1@2"))
        .unwrap();
    assert_eq!(held.status, MessageStatus::Done);
    assert!(
        held.reason.as_deref().unwrap().contains("offset 1"),
        "{held:?}"
    );
    assert_eq!(h.out.messages_to(ALERTS).len(), 2);

    // The next run starts where the commits stopped: the bad message again, then a duplicate.
    let (summary, reports) = run_topic(&h, &bootstrap).await;
    assert_eq!(summary.messages, 2, "{reports:?}");
    assert_eq!(
        (summary.left, summary.duplicates, summary.processed),
        (1, 1, 0)
    );
    assert_eq!(h.out.messages_to(ALERTS).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto (infra/local-stack.sh)"]
async fn an_s3_destination_bucket_is_redriven_and_handled_objects_deleted() {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let endpoint = moto();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "static-test"))
        .endpoint_url(&endpoint)
        .force_path_style(true)
        .build();
    let s3 = aws_sdk_s3::Client::from_conf(config);
    let bucket = format!("esm-failures-{:x}", fastrand::u64(..));
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let put = |key: &'static str, body: String| {
        let s3 = s3.clone();
        let bucket = bucket.clone();
        async move {
            s3.put_object()
                .bucket(bucket)
                .key(key)
                .body(body.into_bytes().into())
                .send()
                .await
                .unwrap();
        }
    };
    let p0 = records("s3-a", 0, 20);
    put(
        "aws/lambda/uuid-1/a.json",
        s3_destination_record(&give_up(&p0, "req-1"), 1).to_string(),
    )
    .await;
    put("aws/lambda/uuid-1/b.json", "{\"not\": 1}".into()).await;
    put(
        "elsewhere/c.json",
        s3_destination_record(&give_up(&p0, "req-2"), 1).to_string(),
    )
    .await;

    let h = harness(Mode::Reprocess, false);
    let mut reports = Vec::new();
    let summary = h
        .redriver
        .run_bucket(
            &s3,
            &bucket,
            "aws/lambda/",
            true,
            &mut |r: &MessageReport| reports.push(r.clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}; reports so far: {reports:#?}"));
    assert_eq!(
        (summary.messages, summary.deleted, summary.left),
        (2, 1, 1),
        "{reports:?}"
    );
    assert_eq!((summary.processed, summary.dead_lettered), (2, 1));
    assert_eq!(h.out.messages_to(ALERTS).len(), 1);
    let left: Vec<String> = s3
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap()
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    assert_eq!(left, ["aws/lambda/uuid-1/b.json", "elsewhere/c.json"]);
}
