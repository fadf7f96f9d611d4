//! The producer against rdkafka's `MockCluster`: delivery and order per key, idempotence under injected
//! errors, a broker down then up, a broker down for good, an undeliverable topic, invalid events, and
//! the round trip through the consumer.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_esm::encode::{Source, encode_event};
use kafka_esm::handler::InvocationInfo;
use kafka_esm::idempotency::MemoryStore;
use kafka_esm::kafka::KafkaSettings;
use kafka_esm::record::{KafkaRecord, TimestampType};
use kafka_esm::retry::Deadline;
use kafka_esm::sink::MemorySink;
use kafka_esm_telemetry::MetricEvent;
use kafka_esm_telemetry::app::telemetry_consumer;
use kafka_esm_telemetry::config::TelemetryConfig;
use kafka_esm_telemetry::producer::{MetricProducer, ProducerSettings, RecordStatus, headers};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::{Value, json};

const TOPIC: &str = "telemetry.metrics";
const DLQ: &str = "telemetry.metrics.dlq";

fn cluster() -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic(TOPIC, 3, 1).unwrap();
    cluster.create_topic(DLQ, 1, 1).unwrap();
    cluster
}

fn producer(bootstrap: &str, delivery_timeout: Duration) -> MetricProducer {
    let mut settings = KafkaSettings::new(bootstrap);
    settings.delivery_timeout = delivery_timeout;
    MetricProducer::new(
        settings.create_producer().unwrap(),
        ProducerSettings {
            topic: TOPIC.into(),
            dead_letter_topic: DLQ.into(),
        },
    )
}

fn metric(instance: usize, seq: usize, value: f64) -> Value {
    json!({
        "event_id": format!("i{instance}-s{seq:05}"),
        "timestamp": "2026-11-22T10:00:00Z",
        "database_type": "postgres",
        "instance_id": format!("pg-{instance}"),
        "metric_name": "cpu_usage_percent",
        "value": value,
    })
}

fn deadline(seconds: u64) -> Deadline {
    Deadline::after(Duration::from_secs(seconds), Duration::from_millis(500))
}

fn event_ids(messages: &[common::Consumed]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            serde_json::from_slice::<MetricEvent>(m.value.as_deref().unwrap())
                .unwrap()
                .event_id
                .unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_every_metric_keyed_and_in_order_per_key() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let inputs: Vec<Value> = (0..600).map(|n| metric(n % 6, n, 10.0)).collect();
    let report = producer(&bootstrap, Duration::from_secs(10))
        .produce(inputs, &deadline(30))
        .await;
    assert_eq!(
        (
            report.delivered,
            report.rejected,
            report.dead_lettered,
            report.not_delivered
        ),
        (600, 0, 0, 0)
    );

    let messages = common::consume(&bootstrap, TOPIC, 3, 600);
    assert_eq!(messages.len(), 600, "every metric, once");
    let mut partitions_of_key: HashMap<Vec<u8>, Vec<i32>> = HashMap::new();
    let mut sequence_of_key: HashMap<Vec<u8>, Vec<String>> = HashMap::new();
    let mut sorted = messages.clone();
    sorted.sort_by_key(|m| (m.partition, m.offset));
    for m in &sorted {
        let key = m.key.clone().unwrap();
        partitions_of_key
            .entry(key.clone())
            .or_default()
            .push(m.partition);
        sequence_of_key
            .entry(key)
            .or_default()
            .extend(event_ids(std::slice::from_ref(m)));
    }
    assert_eq!(
        partitions_of_key.len(),
        6,
        "keyed database_type:instance_id"
    );
    assert!(
        partitions_of_key
            .keys()
            .all(|k| k.starts_with(b"postgres:pg-"))
    );
    for (key, partitions) in &partitions_of_key {
        assert!(
            partitions.windows(2).all(|w| w[0] == w[1]),
            "{key:?} stays on one partition"
        );
        let seq = &sequence_of_key[key];
        let mut in_order = seq.clone();
        in_order.sort();
        assert_eq!(seq, &in_order, "{key:?} keeps its order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_request_errors_are_retried_without_duplicates() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
        ],
    );
    let inputs: Vec<Value> = (0..300).map(|n| metric(n % 3, n, 10.0)).collect();
    let report = producer(&bootstrap, Duration::from_secs(15))
        .produce(inputs, &deadline(30))
        .await;
    assert_eq!(
        report.delivered,
        300,
        "{:?}",
        report
            .results
            .iter()
            .find(|r| !matches!(r.status, RecordStatus::Delivered { .. }))
    );
    let messages = common::consume(&bootstrap, TOPIC, 3, 300);
    let mut ids = event_ids(&messages);
    let total = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!((total, ids.len()), (300, 300), "no duplicate, no loss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_then_up_within_the_budget_loses_nothing() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let producer = producer(&bootstrap, Duration::from_secs(15));
    for broker in 1..=3 {
        cluster.broker_down(broker).unwrap();
    }
    let inputs: Vec<Value> = (0..100).map(|n| metric(n % 4, n, 10.0)).collect();
    let budget = deadline(30);
    let produce = producer.produce(inputs, &budget);
    let recover = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        for broker in 1..=3 {
            cluster.broker_up(broker).unwrap();
        }
    };
    let (report, ()) = tokio::join!(produce, recover);
    assert_eq!((report.delivered, report.not_delivered), (100, 0));
    assert_eq!(common::consume(&bootstrap, TOPIC, 3, 100).len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_for_good_is_reported_never_dropped() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let producer = producer(&bootstrap, Duration::from_secs(2));
    for broker in 1..=3 {
        cluster.broker_down(broker).unwrap();
    }
    let inputs: Vec<Value> = (0..20).map(|n| metric(n % 2, n, 10.0)).collect();
    let report = producer.produce(inputs, &deadline(6)).await;
    assert!(
        !report.all_accounted_for(),
        "the invocation must fail so the caller retries"
    );
    assert_eq!(
        report.delivered + report.dead_lettered + report.not_delivered,
        20,
        "every input has an outcome"
    );
    assert_eq!(report.not_delivered, 20);
    for result in &report.results {
        let RecordStatus::NotDelivered { reason } = &result.status else {
            panic!("{result:?}")
        };
        assert!(
            reason.contains("dead-letter") || reason.contains("deadline"),
            "{reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeliverable_topic_sends_its_records_to_the_dead_letter_topic() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(DLQ, 1, 1).unwrap();
    cluster
        .topic_error(
            TOPIC,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        )
        .unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let inputs: Vec<Value> = (0..5).map(|n| metric(1, n, 10.0)).collect();
    let report = producer(&bootstrap, Duration::from_secs(3))
        .produce(inputs, &deadline(20))
        .await;
    assert_eq!(
        (report.dead_lettered, report.not_delivered),
        (5, 0),
        "{:?}",
        report.results
    );
    assert!(report.all_accounted_for());
    let dead = common::consume(&bootstrap, DLQ, 1, 5);
    assert_eq!(dead.len(), 5);
    assert_eq!(dead[0].header(headers::TOPIC).as_deref(), Some(TOPIC));
    assert!(
        dead[0]
            .header(headers::ERROR)
            .unwrap()
            .to_lowercase()
            .contains("authoriz"),
        "{:?}",
        dead[0].header(headers::ERROR)
    );
    assert_eq!(
        dead[0].header(headers::EVENT_ID).as_deref(),
        Some("i1-s00000")
    );
    assert_eq!(dead[0].key.as_deref(), Some(&b"postgres:pg-1"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_are_rejected_one_by_one() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let inputs = vec![
        metric(1, 0, 10.0),
        json!("not an object"),
        json!({"timestamp": "2026-11-22T10:00:00Z", "database_type": "postgres"}),
        json!({"timestamp": "yesterday", "database_type": "p", "instance_id": "i", "metric_name": "m", "value": 1}),
        metric(1, 4, 10.0),
    ];
    let report = producer(&bootstrap, Duration::from_secs(10))
        .produce(inputs, &deadline(20))
        .await;
    assert_eq!((report.delivered, report.rejected), (2, 3));
    let statuses: Vec<&str> = report
        .results
        .iter()
        .map(|r| match &r.status {
            RecordStatus::Delivered { .. } => "delivered",
            RecordStatus::Rejected { error } => {
                assert!(error.starts_with("not a metric event"), "{error}");
                "rejected"
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        statuses,
        ["delivered", "rejected", "rejected", "rejected", "delivered"]
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["results"][2]["status"], "rejected");
    assert!(
        json["results"][2]["error"]
            .as_str()
            .unwrap()
            .contains("missing field")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_producer_writes_the_consumer_turns_into_alerts() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    // 40 metrics, every fourth above the default rule (cpu_usage_percent > 80); one without event_id.
    let mut inputs: Vec<Value> = (0..40)
        .map(|n| metric(n % 5, n, if n % 4 == 0 { 95.0 } else { 20.0 }))
        .collect();
    inputs[1].as_object_mut().unwrap().remove("event_id");
    let report = producer(&bootstrap, Duration::from_secs(10))
        .produce(inputs, &deadline(20))
        .await;
    assert_eq!(report.delivered, 40);

    // Read the topic back and wrap it the way the ESM does.
    let records: Vec<KafkaRecord> = common::consume(&bootstrap, TOPIC, 3, 40)
        .into_iter()
        .map(|m| {
            let mut r = KafkaRecord::new(TOPIC, m.partition, m.offset);
            r.timestamp = Some(1_795_000_000_000);
            r.timestamp_type = Some(TimestampType::CreateTime);
            r.key = m.key;
            r.value = m.value;
            r
        })
        .collect();
    let event = encode_event(&Source::SelfManaged, &bootstrap, &records);
    let alerts = Arc::new(MemorySink::new());
    let config = TelemetryConfig::from_lookup(&|_| None).unwrap();
    let consumer = telemetry_consumer(
        &config,
        Arc::new(MemoryStore::new()),
        Arc::new(MemorySink::new()),
        alerts.clone(),
    );
    let invocation = InvocationInfo::new("rt", "consumer", deadline(30));
    let result = consumer.invoke(&event, &invocation).await;
    assert!(result.result.unwrap().batch_item_failures.is_empty());
    assert_eq!(result.report.counts().processed, 40);
    assert_eq!(
        alerts.messages_to("telemetry.alerts").len(),
        10,
        "one alert per metric above 80"
    );

    // A caller's retry of the same request duplicates the records in the topic; the consumer's
    // idempotency (event ids, derived for the metric that had none) removes the duplicates.
    let again = consumer.invoke(&event, &invocation).await;
    assert_eq!(again.report.counts().duplicates, 40);
    assert_eq!(alerts.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esm_produce_loads_a_broker_from_a_file_or_generated_metrics() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let esm = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_esm"))
            .arg("produce")
            .args(["--brokers", &bootstrap, "--json"])
            .args(args)
            .env_remove("KAFKA_AUTH")
            .output()
            .unwrap()
    };
    let out = esm(&["--generate", "2500", "--rate", "5000"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["delivered"], 2500);
    assert!(
        summary["seconds"].as_f64().unwrap() >= 0.4,
        "paced to 5000/s: {summary}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.jsonl");
    let lines = [
        metric(7, 1, 91.0).to_string(),
        "{\"value\": 1}".into(),
        metric(7, 2, 12.0).to_string(),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = esm(&["--file", file.to_str().unwrap()]);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (summary["delivered"].as_u64(), summary["rejected"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("record 1:"),
        "the rejected record is named"
    );
    assert_eq!(common::consume(&bootstrap, TOPIC, 3, 2502).len(), 2502);

    let out = esm(&[]);
    assert_eq!(out.status.code(), Some(2));
}
