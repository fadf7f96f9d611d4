//! Dead letters and alerts through a real Kafka protocol: rdkafka's in-process `MockCluster`.
//! The dead-letter topic is consumed back and checked byte for byte; a broker that is down fails the
//! invocation and loses nothing.

use std::sync::Arc;
mod common;

use std::time::{Duration, Instant};

use common::Consumed;

use kafka_esm::dead_letter::headers;
use kafka_esm::encode::{Source, encode_event};
use kafka_esm::handler::InvocationInfo;
use kafka_esm::idempotency::{IdempotencyStore, MemoryStore};
use kafka_esm::kafka::KafkaSettings;
use kafka_esm::record::{Header, KafkaRecord, TimestampType};
use kafka_esm::retry::Deadline;
use kafka_esm::sink::KafkaSink;
use kafka_esm_telemetry::app::telemetry_consumer;
use kafka_esm_telemetry::config::TelemetryConfig;
use rdkafka::mocking::MockCluster;

const SOURCE: &str = "telemetry.metrics-eu";
const DLQ: &str = "telemetry.metrics-eu.dlq";
const ALERTS: &str = "telemetry.alerts";

fn consume(bootstrap: &str, topic: &str, expected: usize) -> Vec<Consumed> {
    common::consume(bootstrap, topic, 1, expected)
}

fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    for topic in [SOURCE, DLQ, ALERTS] {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    cluster
}

fn sink(bootstrap: &str) -> Arc<KafkaSink> {
    let mut settings = KafkaSettings::new(bootstrap);
    settings.delivery_timeout = Duration::from_millis(1_000);
    Arc::new(KafkaSink::new(&settings).unwrap())
}

fn config() -> TelemetryConfig {
    TelemetryConfig::from_lookup(&|name| match name {
        "PUBLISH_TIMEOUT_MS" => Some("1000".into()),
        "RETRY_BASE_MS" => Some("50".into()),
        "RETRY_MAX_MS" => Some("200".into()),
        "RETRY_MAX_ATTEMPTS" => Some("1000".into()),
        _ => None,
    })
    .unwrap()
}

fn metric(offset: i64, value: f64) -> KafkaRecord {
    let mut r = KafkaRecord::new(SOURCE, 0, offset);
    r.timestamp = Some(1_795_000_000_000 + offset);
    r.timestamp_type = Some(TimestampType::CreateTime);
    r.key = Some(b"postgres:pg-1".to_vec());
    r.value = Some(
        format!(
            r#"{{"event_id":"k-{offset}","timestamp":"2026-11-22T10:00:00Z","database_type":"postgres","instance_id":"pg-1","metric_name":"cpu_usage_percent","value":{value}}}"#
        )
        .into_bytes(),
    );
    r
}

fn poison(offset: i64) -> KafkaRecord {
    let mut r = KafkaRecord::new(SOURCE, 0, offset);
    r.timestamp = Some(1_795_000_000_000 + offset);
    r.timestamp_type = Some(TimestampType::LogAppendTime);
    r.key = Some(vec![0xde, 0xad]);
    r.value = Some(vec![0xff, 0x00, b'{', 0x80]);
    r.headers = vec![
        Header::new("trace", vec![0x80, 0xff]),
        Header::new("trace", "second"),
        Header {
            name: "null".into(),
            value: None,
        },
    ];
    r
}

fn invocation(budget: Duration) -> InvocationInfo {
    InvocationInfo::new(
        "req-mock",
        "consumer-fn",
        Deadline::after(budget, Duration::from_millis(200)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_and_alerts_are_produced_to_kafka() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let sink = sink(&bootstrap);
    let consumer = telemetry_consumer(
        &config(),
        Arc::new(MemoryStore::new()),
        sink.clone(),
        sink.clone(),
    );
    let event = encode_event(
        &Source::SelfManaged,
        &bootstrap,
        &[metric(1, 95.0), poison(2), metric(3, 10.0)],
    );
    let result = consumer
        .invoke(&event, &invocation(Duration::from_secs(20)))
        .await;
    assert!(result.result.unwrap().batch_item_failures.is_empty());

    let dead = consume(&bootstrap, DLQ, 1);
    assert_eq!(dead.len(), 1, "exactly one dead letter");
    let d = &dead[0];
    assert_eq!(
        d.key.as_deref(),
        Some(&[0xde, 0xad][..]),
        "original key bytes"
    );
    assert_eq!(
        d.value.as_deref(),
        Some(&[0xff, 0x00, b'{', 0x80][..]),
        "original value bytes"
    );
    assert_eq!(
        &d.headers[..3],
        &[
            ("trace".to_owned(), Some(vec![0x80, 0xff])),
            ("trace".to_owned(), Some(b"second".to_vec())),
            ("null".to_owned(), None),
        ],
        "original headers first, in order, repeated names and null values kept"
    );
    assert_eq!(d.header(headers::ORIGINAL_TOPIC).as_deref(), Some(SOURCE));
    assert_eq!(d.header(headers::ORIGINAL_PARTITION).as_deref(), Some("0"));
    assert_eq!(d.header(headers::ORIGINAL_OFFSET).as_deref(), Some("2"));
    assert_eq!(
        d.header(headers::ORIGINAL_TIMESTAMP).as_deref(),
        Some("1795000000002")
    );
    assert_eq!(
        d.header(headers::ORIGINAL_TIMESTAMP_TYPE).as_deref(),
        Some("LOG_APPEND_TIME")
    );
    assert_eq!(
        d.header(headers::ERROR_KIND).as_deref(),
        Some("deserialization")
    );
    assert!(
        d.header(headers::ERROR_MESSAGE)
            .unwrap()
            .contains("not the expected JSON")
    );
    assert_eq!(d.header(headers::ATTEMPTS).as_deref(), Some("0"));
    assert_eq!(
        d.header(headers::FUNCTION_NAME).as_deref(),
        Some("consumer-fn")
    );
    assert_eq!(d.header(headers::REQUEST_ID).as_deref(), Some("req-mock"));

    let alerts = consume(&bootstrap, ALERTS, 1);
    assert_eq!(alerts.len(), 1, "one alert: only offset 1 breaks the rule");
    assert_eq!(alerts[0].key.as_deref(), Some(&b"postgres:pg-1"[..]));
    let alert: serde_json::Value =
        serde_json::from_slice(alerts[0].value.as_deref().unwrap()).unwrap();
    assert_eq!(alert["event_id"], "k-1");
    assert_eq!(alert["value"], 95.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_broker_down_fails_the_invocation_and_loses_nothing() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let sink = sink(&bootstrap);
    let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::new());
    let consumer = telemetry_consumer(&config(), store.clone(), sink.clone(), sink.clone());
    let records = [metric(1, 10.0), poison(2), metric(3, 99.0)];
    let event = encode_event(&Source::SelfManaged, &bootstrap, &records);

    cluster.broker_down(1).unwrap();
    let failed = consumer
        .invoke(&event, &invocation(Duration::from_secs(4)))
        .await;
    let error = failed
        .result
        .expect_err("the invocation must fail so the ESM retries");
    assert!(
        error
            .to_string()
            .contains("dead-letter topic is unreachable"),
        "{error}"
    );
    let counts = failed.report.counts();
    assert_eq!(
        (counts.processed, counts.dead_lettered, counts.unfinished),
        (1, 0, 2)
    );

    // Let librdkafka give up on what it still holds, so nothing from the failed attempt lands late.
    let waited = Instant::now();
    while sink.in_flight_count() > 0 && waited.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sink.in_flight_count(), 0);
    cluster.broker_up(1).unwrap();

    // The ESM retries the whole batch: offset 1 is a duplicate, the poison record is dead-lettered once,
    // offset 3 is processed and alerts.
    let retried = consumer
        .invoke(&event, &invocation(Duration::from_secs(20)))
        .await;
    assert!(retried.result.unwrap().batch_item_failures.is_empty());
    let counts = retried.report.counts();
    assert_eq!(
        (counts.duplicates, counts.dead_lettered, counts.processed),
        (1, 1, 1)
    );
    let dead = consume(&bootstrap, DLQ, 1);
    assert_eq!(dead.len(), 1, "dead-lettered exactly once");
    assert_eq!(
        dead[0].header(headers::ORIGINAL_OFFSET).as_deref(),
        Some("2")
    );
    let alerts = consume(&bootstrap, ALERTS, 1);
    assert_eq!(alerts.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_finds_what_it_published_by_message_id() {
    use kafka_esm::sink::{MessageSink, OutboundMessage, PublishWindow};
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(ALERTS, 3, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let mut settings = KafkaSettings::new(&bootstrap);
    settings.delivery_timeout = Duration::from_secs(15);
    let sink = KafkaSink::new(&settings).unwrap();
    let started = kafka_esm::retry::now_ms();
    for (n, id) in ["a-1", "a-2", "a-3"].iter().enumerate() {
        let message = OutboundMessage {
            topic: ALERTS.into(),
            key: Some(format!("key-{n}").into_bytes()),
            value: Some(b"{}".to_vec()),
            headers: vec![Header::new(
                "esm.message.id",
                "a copied header, not this one's id",
            )],
        }
        .with_message_id(*id);
        sink.publish(message, Duration::from_secs(5)).await.unwrap();
    }
    let window = |since_ms, until_ms| PublishWindow { since_ms, until_ms };
    let now = kafka_esm::retry::now_ms();
    let timeout = Duration::from_secs(10);
    assert_eq!(
        sink.find_published(
            ALERTS,
            &["a-2", "b-1", "a-3", "a-1"],
            window(started, now),
            timeout
        )
        .await
        .unwrap(),
        vec![true, false, true, true]
    );
    // Published after the first read: a later window reads on from where it stopped.
    let late = OutboundMessage {
        topic: ALERTS.into(),
        key: None,
        value: None,
        headers: Vec::new(),
    }
    .with_message_id("b-1");
    sink.publish(late, Duration::from_secs(5)).await.unwrap();
    let later = kafka_esm::retry::now_ms();
    assert_eq!(
        sink.find_published(ALERTS, &["b-1"], window(started, later), timeout)
            .await
            .unwrap(),
        vec![true]
    );
    // Nothing was published in a window an hour ahead, or to a topic that does not exist.
    let ahead = later + 3_600_000;
    assert_eq!(
        sink.find_published(ALERTS, &["a-1", "b-1"], window(ahead, ahead + 1), timeout)
            .await
            .unwrap(),
        vec![false, false]
    );
    assert_eq!(
        sink.find_published("no.such.topic", &["a-1"], window(started, later), timeout)
            .await
            .unwrap(),
        vec![false]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_still_in_flight_at_the_deadline_lands_once() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    // librdkafka keeps trying for 20 s: far longer than the first invocation's 2 s budget.
    let mut settings = KafkaSettings::new(&bootstrap);
    settings.delivery_timeout = Duration::from_secs(20);
    let sink = Arc::new(KafkaSink::new(&settings).unwrap());
    let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::new());
    let consumer = telemetry_consumer(&config(), store, sink.clone(), sink.clone());
    let event = encode_event(&Source::SelfManaged, &bootstrap, &[poison(1)]);

    cluster.broker_down(1).unwrap();
    let started = Instant::now();
    let first = consumer
        .invoke(&event, &invocation(Duration::from_secs(2)))
        .await;
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "the invocation answers within its budget, not when librdkafka gives up: {:?}",
        started.elapsed()
    );
    assert_eq!(first.report.counts().unfinished, 1);
    assert_eq!(
        sink.in_flight_count(),
        1,
        "the dead letter is still in flight"
    );

    // The broker returns while the first attempt's dead letter is still queued; the ESM's retry
    // waits for that one (or finds it) instead of producing a second copy.
    cluster.broker_up(1).unwrap();
    let retried = consumer
        .invoke(&event, &invocation(Duration::from_secs(20)))
        .await;
    assert_eq!(retried.report.counts().dead_lettered, 1);
    let dead = consume(&bootstrap, DLQ, 1);
    assert_eq!(dead.len(), 1, "dead-lettered exactly once: {dead:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_larger_than_the_broker_takes_goes_out_cut_and_marked() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let mut settings = KafkaSettings::new(&bootstrap);
    settings.delivery_timeout = Duration::from_secs(5);
    // The producer refuses what a broker with a small max.message.bytes would refuse.
    settings.properties = vec![
        ("message.max.bytes".into(), "4096".into()),
        ("batch.size".into(), "4096".into()),
    ];
    let sink = Arc::new(KafkaSink::new(&settings).unwrap());
    let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::new());
    let consumer = telemetry_consumer(&config(), store, sink.clone(), sink);
    let mut big = poison(1);
    big.value = Some(vec![0xff; 20_000]);
    let event = encode_event(&Source::SelfManaged, &bootstrap, &[big]);
    let inv = consumer
        .invoke(&event, &invocation(Duration::from_secs(10)))
        .await;
    assert_eq!(inv.report.counts().dead_lettered, 1, "{:?}", inv.report);
    let dead = consume(&bootstrap, DLQ, 1);
    assert_eq!(
        dead.len(),
        1,
        "{:?}",
        dead.iter()
            .map(|d| (
                d.offset,
                d.value.as_ref().map(Vec::len),
                d.header(headers::VALUE_TRUNCATED)
            ))
            .collect::<Vec<_>>()
    );
    let value = dead[0].value.as_deref().unwrap();
    assert!(value.len() < 4096 && value.iter().all(|b| *b == 0xff));
    assert_eq!(
        dead[0].header(headers::VALUE_TRUNCATED).as_deref(),
        Some("true")
    );
    assert_eq!(
        dead[0].header(headers::VALUE_ORIGINAL_SIZE).as_deref(),
        Some("20000")
    );
    assert_eq!(
        dead[0].header(headers::ORIGINAL_OFFSET).as_deref(),
        Some("1")
    );
}
