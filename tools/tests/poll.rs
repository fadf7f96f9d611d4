//! `esm poll`'s loop on rdkafka's in-process `MockCluster`: a consumer group, ESM-identical batches,
//! commits only after a successful answer, retries, on-failure records, and the verifier's proof.
//! (The same pipeline on a real broker, with faults, is `tools/tests/e2e.rs`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use kafka_esm::encode::Source;
use kafka_esm::event::decode_event;
use kafka_esm::idempotency::MemoryStore;
use kafka_esm::kafka::KafkaSettings;
use kafka_esm::sink::{KafkaSink, MessageSink};
use kafka_esm_telemetry::MetricDecoder;
use kafka_esm_telemetry::app::telemetry_consumer;
use kafka_esm_telemetry::config::TelemetryConfig;
use kafka_esm_tools::poll::{
    Answer, BatchLimits, DEFAULT_PARTITION_BUFFER_RECORDS, Deliverer, EventOrigin, InProcess,
    Invoke, OnFailureDestination, PollOptions, RetryPolicy, StartingPosition, group_lag, run,
};
use kafka_esm_tools::redrive::OnFailureRecord;
use kafka_esm_tools::verify::{read_topic, verify};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tokio::sync::watch;

const SOURCE: &str = "metrics";

fn cluster() -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    for topic in [SOURCE, "alerts", "metrics.dlq"] {
        cluster.create_topic(topic, 3, 1).unwrap();
    }
    cluster
}

/// Produces `values` round-robin over the three partitions.
fn produce(brokers: &str, values: &[Vec<u8>]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for (n, value) in values.iter().enumerate() {
        producer
            .send(
                BaseRecord::<[u8], [u8]>::to(SOURCE)
                    .partition((n % 3) as i32)
                    .payload(value),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

fn metric(n: usize, value: f64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "event_id": format!("e-{n}"),
        "timestamp": "2026-11-23T10:00:00Z",
        "database_type": "postgres",
        "instance_id": format!("db-{}", n % 7),
        "metric_name": "cpu_usage_percent",
        "value": value,
    }))
    .unwrap()
}

fn options(group: &str) -> PollOptions {
    PollOptions {
        topics: vec![SOURCE.into()],
        group_id: group.into(),
        starting_position: StartingPosition::TrimHorizon,
        limits: BatchLimits {
            max_records: 40,
            window: Duration::from_millis(20),
            ..BatchLimits::default()
        },
        progress_every: Duration::from_secs(1),
        exit_when_idle: Some(Duration::from_millis(2_500)),
        max_records: None,
        function_timeout: Duration::from_secs(10),
        max_concurrency: None,
        partition_buffer_records: DEFAULT_PARTITION_BUFFER_RECORDS,
    }
}

fn origin(brokers: &str) -> EventOrigin {
    EventOrigin {
        source: Source::SelfManaged,
        bootstrap_servers: brokers.into(),
    }
}

fn total_lag(brokers: &str, group: &str) -> i64 {
    group_lag(
        &KafkaSettings::new(brokers),
        group,
        &[SOURCE.into()],
        Duration::from_secs(5),
    )
    .unwrap()
    .iter()
    .map(|l| l.lag)
    .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_telemetry_consumer_in_process_accounts_for_every_record_once() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let mut values: Vec<Vec<u8>> = (0..300)
        .map(|n| metric(n, if n % 4 == 0 { 95.0 } else { 20.0 }))
        .collect();
    values.extend((0..30).map(|n| metric(n * 10, if n * 10 % 4 == 0 { 95.0 } else { 20.0 })));
    values.extend([b"not json".to_vec(), b"{}".to_vec(), b"[1]".to_vec()]);
    produce(&brokers, &values);

    let lookup = |name: &str| match name {
        "ALERTS_TOPIC" => Some("alerts".to_owned()),
        "DLQ_TOPIC" => Some("metrics.dlq".to_owned()),
        "ALERT_RULES" => Some("cpu_usage_percent > 80".to_owned()),
        "REPORT_BATCH_ITEM_FAILURES" => Some("true".to_owned()),
        _ => None,
    };
    let config = TelemetryConfig::from_lookup(&lookup).unwrap();
    let settings = KafkaSettings::new(brokers.clone());
    let sink: Arc<dyn MessageSink> = Arc::new(KafkaSink::new(&settings).unwrap());
    let store = Arc::new(MemoryStore::new());
    let consumer = telemetry_consumer(&config, store.clone(), sink.clone(), sink);
    let invoker = InProcess::new(
        consumer,
        "consumer",
        Duration::from_secs(10),
        Duration::from_millis(200),
    );
    let policy = RetryPolicy {
        report_batch_item_failures: true,
        ..RetryPolicy::default()
    };
    let deliverer = Arc::new(Deliverer::new(
        invoker,
        policy,
        OnFailureDestination::Discard,
        origin(&brokers),
    ));
    let (_stop_tx, stop) = watch::channel(false);
    let summary = run(&settings, &options("g-telemetry"), deliverer.clone(), stop)
        .await
        .unwrap();
    assert_eq!(summary.records, 333);
    assert_eq!(summary.delivery.succeeded, 333);
    assert_eq!(summary.delivery.given_up, 0);
    assert!(
        summary.batches >= 9,
        "batches of at most 40: {}",
        summary.batches
    );
    assert_eq!(total_lag(&brokers, "g-telemetry"), 0);

    let read = |topic: &str| read_topic(&settings, topic, Duration::from_secs(10)).unwrap();
    let verdict = verify(
        SOURCE,
        &read(SOURCE),
        &read("alerts"),
        &read("metrics.dlq"),
        &config.alerts.rules,
        store.as_ref(),
        &MetricDecoder::json(),
    )
    .await;
    assert!(verdict.exact(), "{verdict:?}");
    assert_eq!(verdict.distinct_events, 300);
    assert_eq!(verdict.duplicated_inputs, 30);
    assert_eq!(verdict.alerts_expected, 75);
    assert_eq!(verdict.alerts_found, 75);
    assert_eq!(verdict.dead_letters_found, 3);
}

/// Fails every invocation holding an offset of partition 1 at or past 5; records every event.
struct FailsPartitionOne {
    invocations: AtomicU32,
}

#[async_trait]
impl Invoke for FailsPartitionOne {
    fn function_name(&self) -> &str {
        "fails-partition-one"
    }

    async fn invoke(&self, event: &str, _request_id: &str) -> Answer {
        self.invocations.fetch_add(1, Ordering::Relaxed);
        let batch = decode_event(event).expect("an ESM event");
        let bad = batch.partitions.iter().any(|p| {
            p.topic_partition.partition == 1 && p.records.iter().any(|r| r.offset() >= Some(5))
        });
        if bad {
            Answer::Failed {
                error_type: "Boom".into(),
                message: "partition 1 is poisoned".into(),
            }
        } else {
            Answer::Success(None)
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exhausted_retries_write_the_on_failure_record_and_the_partition_moves_on() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    produce(
        &brokers,
        &(0..60).map(|n| metric(n, 1.0)).collect::<Vec<_>>(),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("on-failure.jsonl");
    let policy = RetryPolicy {
        max_retry_attempts: Some(2),
        bisect_on_error: true,
        first_backoff: Duration::from_millis(5),
        ..RetryPolicy::default()
    };
    let deliverer = Arc::new(Deliverer::new(
        FailsPartitionOne {
            invocations: AtomicU32::new(0),
        },
        policy,
        OnFailureDestination::File(file.clone()),
        origin(&brokers),
    ));
    let (_stop_tx, stop) = watch::channel(false);
    let settings = KafkaSettings::new(brokers.clone());
    let summary = run(&settings, &options("g-fail"), deliverer.clone(), stop)
        .await
        .unwrap();
    assert_eq!(summary.records, 60);
    assert_eq!(
        summary.delivery.succeeded + summary.delivery.given_up,
        60,
        "every record settled"
    );
    assert!(
        summary.delivery.given_up >= 15,
        "partition 1 from offset 5 on"
    );
    assert_eq!(
        total_lag(&brokers, "g-fail"),
        0,
        "committed past the given-up records"
    );
    let records: Vec<OnFailureRecord> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| OnFailureRecord::parse(l).unwrap())
        .collect();
    assert!(!records.is_empty());
    let given_up: u64 = records.iter().map(|r| r.record_count()).sum();
    assert_eq!(given_up, summary.delivery.given_up);
    for record in &records {
        assert_eq!(record.condition.as_str(), "RetryAttemptsExhausted");
        assert_eq!(record.approximate_invoke_count, Some(3));
    }
    // Every poisoned offset is in a given-up range (bisecting may give up neighbours with them).
    for offset in 5..20 {
        assert!(
            records
                .iter()
                .flat_map(|r| &r.ranges)
                .any(|r| r.partition == 1 && (r.first_offset..=r.last_offset).contains(&offset)),
            "metrics-1 offset {offset} given up"
        );
    }
}

/// Takes its time over each batch and records every offset it is given, and how many batches
/// were in flight at once.
#[derive(Default)]
struct SlowRecorder {
    seen: std::sync::Mutex<Vec<(i32, i64)>>,
    in_flight: AtomicU32,
    most_in_flight: AtomicU32,
}

#[async_trait]
impl Invoke for SlowRecorder {
    fn function_name(&self) -> &str {
        "slow-recorder"
    }

    async fn invoke(&self, event: &str, _request_id: &str) -> Answer {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        let batch = decode_event(event).expect("an ESM event");
        tokio::time::sleep(Duration::from_millis(15)).await;
        self.seen
            .lock()
            .unwrap()
            .extend(batch.partitions.iter().flat_map(|p| {
                p.records
                    .iter()
                    .map(|r| (p.topic_partition.partition, r.offset().unwrap()))
            }));
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        Answer::Success(None)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_are_delivered_at_once_and_each_record_exactly_once_in_order() {
    // Small batches, a small partition buffer and a slow function: the partitions' queues fill up
    // and hold reading back many times while the three partitions' batches run side by side.
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    produce(
        &brokers,
        &(0..3_000).map(|n| metric(n, 1.0)).collect::<Vec<_>>(),
    );
    let deliverer = Arc::new(Deliverer::new(
        SlowRecorder::default(),
        RetryPolicy::default(),
        OnFailureDestination::Discard,
        origin(&brokers),
    ));
    let mut options = options("g-lanes");
    options.limits.max_records = 10;
    options.partition_buffer_records = 60;
    let (_stop_tx, stop) = watch::channel(false);
    let settings = KafkaSettings::new(brokers.clone());
    let summary = run(&settings, &options, deliverer.clone(), stop)
        .await
        .unwrap();
    assert_eq!(summary.delivery.succeeded, 3_000, "{summary:?}");
    assert_eq!(total_lag(&brokers, "g-lanes"), 0);
    let recorder = deliverer.invoker();
    let seen = recorder.seen.lock().unwrap().clone();
    for partition in 0..3 {
        let offsets: Vec<i64> = seen
            .iter()
            .filter(|(p, _)| *p == partition)
            .map(|(_, o)| *o)
            .collect();
        assert_eq!(
            offsets,
            (0..1_000).collect::<Vec<i64>>(),
            "partition {partition}: every offset once, in order"
        );
    }
    let most = recorder.most_in_flight.load(Ordering::SeqCst);
    assert!(
        (2..=3).contains(&most),
        "partitions' batches overlap, at most one per partition: {most}"
    );
}
