//! Shared by the suites that run the whole pipeline on a real broker (`e2e`, `watch`): topics,
//! inputs through the producer Lambda's code, poison around it, `esm poll`'s summary, the verdict.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use kafka_esm::idempotency::LocalStore;
use kafka_esm::kafka::KafkaSettings;
use kafka_esm::retry::Deadline;
use kafka_esm_telemetry::producer::{MetricProducer, ProducerSettings};
use kafka_esm_telemetry::{MetricDecoder, MetricEncoder, parse_rules};
use kafka_esm_tools::verify::{ReadBack, Verdict, read_topics, verify};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Creates `topic` with `partitions` partitions.
pub async fn create_topic(broker: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .unwrap();
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("the broker answers CreateTopics");
    for result in results {
        result.unwrap_or_else(|(t, e)| panic!("creating {t}: {e:?}"));
    }
}

/// Produces `values` to `topic` through the producer Lambda's code; every one must be delivered.
pub async fn produce_values(broker: &str, topic: &str, values: Vec<serde_json::Value>) {
    produce_values_with(broker, topic, values, MetricEncoder::json()).await;
}

/// As [`produce_values`], written by `encoder` (Avro or Protobuf, framed).
pub async fn produce_values_with(
    broker: &str,
    topic: &str,
    values: Vec<serde_json::Value>,
    encoder: MetricEncoder,
) {
    let producer = MetricProducer::new(
        KafkaSettings::new(broker.to_owned())
            .create_producer()
            .unwrap(),
        ProducerSettings {
            topic: topic.to_owned(),
            dead_letter_topic: format!("{topic}.producer-dlq"),
        },
    )
    .with_encoder(encoder);
    let count = values.len();
    let report = producer
        .produce(
            values,
            &Deadline::after(Duration::from_secs(60), Duration::ZERO),
        )
        .await;
    assert_eq!(report.delivered, count, "every metric reaches the broker");
}

/// One poison value in each of `partitions` partitions of `topic`, produced around the producer's
/// validation.
pub async fn produce_poison(broker: &str, topic: &str, partitions: i32) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .unwrap();
    for partition in 0..partitions {
        producer
            .send(
                FutureRecord::<[u8], [u8]>::to(topic)
                    .partition(partition)
                    .payload(b"{\"event_id\": \"truncated"),
                Duration::from_secs(10),
            )
            .await
            .expect("poison delivered");
    }
}

/// `esm poll --json`'s summary (its last line); the panic shows its output and `context`.
pub fn poll_summary(output: &Output, context: &str) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "esm poll printed no summary; stdout: {stdout}\nstderr: {}\n{context}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

/// Reads the source, alerts and dead-letter topics back (a topic that cannot be read counts as
/// empty) and accounts for every input (read with `metrics`) against `rules` and the redb store at
/// `store`; prints the verdict. Also returns the dead letters read.
pub async fn verify_pipeline(
    broker: &str,
    [source, alerts, dlq]: [&str; 3],
    rules: &str,
    store: &Path,
    metrics: &MetricDecoder,
) -> (Verdict, Vec<ReadBack>) {
    let topics = [source.to_owned(), alerts.to_owned(), dlq.to_owned()];
    let [inputs, alerts, dead_letters] = read_topics(
        KafkaSettings::new(broker.to_owned()),
        topics,
        Duration::from_secs(30),
    )
    .await
    .map(Result::unwrap_or_default);
    let verdict = verify(
        source,
        &inputs,
        &alerts,
        &dead_letters,
        &parse_rules(rules).unwrap(),
        &LocalStore::open(store).unwrap(),
        metrics,
    )
    .await;
    println!("verdict: {}", serde_json::to_string(&verdict).unwrap());
    (verdict, dead_letters)
}

/// Asserts that every input is accounted for exactly once.
pub fn assert_exact(verdict: &Verdict) {
    assert!(
        verdict.exact(),
        "lost {:?}, duplicated {:?}, unexpected {:?}",
        verdict.lost,
        verdict.duplicated_effects,
        verdict.unexpected
    );
}
