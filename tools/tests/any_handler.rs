//! The tools with a team's own handler, not the reference app's: `replay` of an event file, `poll`
//! on rdkafka's `MockCluster`, and `redrive` of on-failure records (from a file, and from a Kafka
//! on-failure topic on a `MockCluster`), through the library calls and through the generic command
//! line (`kafka_esm_tools::cli`). No server is needed.
//!
//! The handler is an orders service: an order (JSON) with an `id` publishes one confirmation to
//! `orders.confirmed`, keyed by its id, through the sink the tool hands over; an order without an
//! `id` fails permanently (dead-lettered); a value that is not an order is poison (dead-lettered).
//! Orders are idempotent by id: the same order at another offset is a duplicate.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clap::Parser;
use kafka_esm::config::topic_problem;
use kafka_esm::dead_letter::headers;
use kafka_esm::encode::{Source, encode_event};
use kafka_esm::env::EnvReader;
use kafka_esm::format::ValueFormat;
use kafka_esm::kafka::KafkaSettings;
use kafka_esm::sink::publish_pipelined;
use kafka_esm::{
    ConsumerConfig, DeserializeError, DirectorySink, HandlerError, InvocationInfo, Json,
    KafkaRecord, MemorySink, MemoryStore, MessageSink, OutboundMessage, RecordHandler,
};
use kafka_esm_tools::HandlerFactory;
use kafka_esm_tools::cli::{Cli, Command, run_command};
use kafka_esm_tools::poll::group_lag;
use kafka_esm_tools::redrive::{MessageReport, MessageStatus, Mode, RedriveOptions, Redriver};
use kafka_esm_tools::replay::{ReplayOptions, Replayer, render_table};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::{Value, json};

const ORDERS: &str = "orders";
const CONFIRMED: &str = "orders.confirmed";
const DLQ: &str = "orders.dlq";

#[derive(Debug, serde::Deserialize)]
struct Order {
    id: Option<String>,
    amount: f64,
}

/// The orders service's handler (see the module documentation).
struct Orders {
    out: Arc<dyn MessageSink>,
    topic: String,
    timeout: Duration,
    format: Json<Order>,
}

impl Orders {
    fn new(out: Arc<dyn MessageSink>, topic: &str, config: &ConsumerConfig) -> Self {
        Self {
            out,
            topic: topic.to_owned(),
            timeout: config.processor.publish_timeout,
            format: Json::new(),
        }
    }
}

#[async_trait]
impl RecordHandler for Orders {
    type Event = Order;

    fn deserialize(&self, record: &KafkaRecord) -> Result<Order, DeserializeError> {
        self.format.decode(record)
    }

    fn idempotency_key(&self, order: &Order) -> Option<String> {
        order.id.as_ref().map(|id| format!("order:{id}"))
    }

    async fn handle(
        &self,
        _: &KafkaRecord,
        order: &Order,
        invocation: &InvocationInfo,
    ) -> Result<(), HandlerError> {
        let id = order
            .id
            .as_deref()
            .ok_or_else(|| HandlerError::permanent("an order without an id"))?;
        let message = OutboundMessage {
            topic: self.topic.clone(),
            key: Some(id.as_bytes().to_vec()),
            value: Some(
                json!({"confirmed": id, "amount": order.amount})
                    .to_string()
                    .into_bytes(),
            ),
            headers: Vec::new(),
        }
        .with_message_id(format!("confirm:{id}"));
        let timeout = self.timeout.min(invocation.deadline.remaining());
        publish_pipelined(&*self.out, message, timeout)
            .await
            .map_err(HandlerError::transient)
    }
}

/// The simplest factory: a closure.
fn orders(config: &ConsumerConfig, sink: Arc<dyn MessageSink>) -> Result<Orders, String> {
    Ok(Orders::new(sink, CONFIRMED, config))
}

/// A factory with a setting of its own, `ORDERS_CONFIRMED_TOPIC`, read with the consumer's.
struct OrdersFactory {
    topic: String,
}

impl Default for OrdersFactory {
    fn default() -> Self {
        Self {
            topic: CONFIRMED.into(),
        }
    }
}

impl HandlerFactory for OrdersFactory {
    type Handler = Orders;

    fn read_settings(&mut self, env: &mut EnvReader<'_>) {
        if let Some(topic) = env.text("ORDERS_CONFIRMED_TOPIC") {
            match topic_problem("ORDERS_CONFIRMED_TOPIC", &topic) {
                Some(problem) => env.problem(problem),
                None => self.topic = topic,
            }
        }
    }

    fn messages_name(&self) -> &str {
        "confirmations"
    }

    fn build(&self, config: &ConsumerConfig, sink: Arc<dyn MessageSink>) -> Result<Orders, String> {
        Ok(Orders::new(sink, &self.topic, config))
    }
}

fn record(partition: i32, offset: i64, value: &[u8]) -> KafkaRecord {
    let mut r = KafkaRecord::new(ORDERS, partition, offset);
    r.key = Some(format!("k-{offset}").into_bytes());
    r.value = Some(value.to_vec());
    r.timestamp = Some(1_795_000_000_000 + offset);
    r
}

fn order(id: &str, amount: f64) -> Vec<u8> {
    json!({"id": id, "amount": amount}).to_string().into_bytes()
}

/// Partition 0: o-1, o-2, an order without an id, a value that is not an order, o-1 again;
/// partition 1: o-3, and o-2 again.
fn sample_records() -> Vec<KafkaRecord> {
    vec![
        record(0, 10, &order("o-1", 5.0)),
        record(0, 11, &order("o-2", 7.5)),
        record(0, 12, br#"{"amount": 3}"#),
        record(0, 13, b"not an order"),
        record(0, 14, &order("o-1", 5.0)),
        record(1, 4, &order("o-3", 1.0)),
        record(1, 5, &order("o-2", 7.5)),
    ]
}

fn write_sample_event(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("orders.json");
    std::fs::write(
        &path,
        encode_event(&Source::SelfManaged, "b-1:9092", &sample_records()),
    )
    .unwrap();
    path
}

fn config(vars: &[(&str, &str)]) -> ConsumerConfig {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ConsumerConfig::from_lookup(&move |name| {
        vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
    .unwrap()
}

/// The `confirmed` ids of confirmation values, sorted.
fn confirmed_ids<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Vec<String> {
    let mut ids: Vec<String> = values
        .into_iter()
        .map(|v| {
            serde_json::from_slice::<Value>(v).unwrap()["confirmed"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    ids.sort();
    ids
}

fn exit_code(code: ExitCode) -> String {
    format!("{code:?}")
}

#[tokio::test]
async fn replay_runs_a_teams_handler_and_counts_its_messages_per_topic() {
    let dir = tempfile::tempdir().unwrap();
    let event = write_sample_event(dir.path());
    let state = dir.path().join("state");
    let options = ReplayOptions {
        state_dir: state.clone(),
        store: None,
        fresh: false,
        brokers: None,
        timeout: Duration::from_secs(30),
    };
    let replayer = Replayer::new(&config(&[]), &options, &orders)
        .await
        .unwrap();
    let report = replayer.replay_file(&event, 0).await.unwrap();
    assert_eq!(
        (
            report.records,
            report.processed,
            report.duplicates,
            report.dead_lettered,
            report.failed
        ),
        (7, 3, 2, 2, 0),
        "{report:?}"
    );
    assert_eq!(report.published, BTreeMap::from([(CONFIRMED.into(), 3)]));
    assert_eq!(report.alerts, 3, "the total under the name scripts read");
    assert_eq!(report.response, json!({"batchItemFailures": []}));
    assert!(render_table(&report, "messages").contains("messages published: 3"));

    // The handler published through the replay's sink: the state directory's topic files.
    let topics = replayer.topics_dir().unwrap();
    let confirmed = DirectorySink::read_topic(&topics, CONFIRMED).unwrap();
    assert_eq!(
        confirmed_ids(confirmed.iter().map(|m| m.value.as_deref().unwrap())),
        ["o-1", "o-2", "o-3"]
    );
    let dead = DirectorySink::read_topic(&topics, DLQ).unwrap();
    let mut dead_offsets: Vec<String> = dead
        .iter()
        .map(|m| header(&m.headers, headers::ORIGINAL_OFFSET))
        .collect();
    dead_offsets.sort();
    assert_eq!(dead_offsets, ["12", "13"]);

    // Again: every record is a duplicate, nothing is published twice.
    let again = replayer.replay_file(&event, 1).await.unwrap();
    // Dead-lettered records are done too: all seven are duplicates.
    assert_eq!(
        (again.processed, again.duplicates, again.dead_lettered),
        (0, 7, 0),
        "{again:?}"
    );
    assert!(again.published.is_empty());
    assert_eq!(again.alerts, 0);
    assert_eq!(
        DirectorySink::read_topic(&topics, CONFIRMED).unwrap().len(),
        3
    );
}

fn header(headers: &[kafka_esm::Header], name: &str) -> String {
    let header = headers.iter().find(|h| h.name == name).unwrap();
    String::from_utf8(header.value.clone().unwrap()).unwrap()
}

#[tokio::test]
async fn the_handlers_own_settings_are_read_with_the_consumers_and_name_its_messages() {
    let lookup = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    // Every problem at once: the consumer's and the handler's.
    let mut factory = OrdersFactory::default();
    let problems = kafka_esm_tools::read_config(
        &lookup(&[
            ("RETRY_BASE_MS", "x"),
            ("ORDERS_CONFIRMED_TOPIC", "no spaces"),
        ]),
        &mut factory,
    )
    .unwrap_err()
    .problems;
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with("RETRY_BASE_MS"), "{problems:?}");
    assert!(
        problems[1].starts_with("ORDERS_CONFIRMED_TOPIC"),
        "{problems:?}"
    );

    // A valid setting reaches the handler the replay builds.
    let mut factory = OrdersFactory::default();
    let config = kafka_esm_tools::replay::replay_config(
        &lookup(&[("ORDERS_CONFIRMED_TOPIC", "orders.ok")]),
        None,
        &mut factory,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let event = write_sample_event(dir.path());
    let options = ReplayOptions {
        state_dir: dir.path().join("state"),
        store: None,
        fresh: false,
        brokers: None,
        timeout: Duration::from_secs(30),
    };
    let replayer = Replayer::new(&config, &options, &factory).await.unwrap();
    let report = replayer.replay_file(&event, 0).await.unwrap();
    assert_eq!(report.published, BTreeMap::from([("orders.ok".into(), 3)]));
    let table = render_table(&report, factory.messages_name());
    assert!(table.contains("confirmations published: 3"), "{table}");
}

#[tokio::test]
async fn the_generic_command_line_replays_with_a_teams_handler() {
    let dir = tempfile::tempdir().unwrap();
    let event = write_sample_event(dir.path());
    let state = dir.path().join("state");
    let parse = |args: &[&str]| {
        Cli::try_parse_from(["orders-esm", "replay"].iter().chain(args))
            .unwrap()
            .command
    };
    let state_arg = state.to_str().unwrap();
    let command = parse(&["--fresh", "--state-dir", state_arg, event.to_str().unwrap()]);
    assert!(matches!(command, Command::Replay(_)));
    let code = run_command(command, OrdersFactory::default()).await;
    assert_eq!(exit_code(code), exit_code(ExitCode::SUCCESS));
    let topics = state.join("topics");
    assert_eq!(
        DirectorySink::read_topic(&topics, CONFIRMED).unwrap().len(),
        3
    );
    assert_eq!(DirectorySink::read_topic(&topics, DLQ).unwrap().len(), 2);

    // An event that is not an ESM event fails its invocation: exit code 1. A missing file: 2.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"records\": 3}").unwrap();
    let code = run_command(
        parse(&["--state-dir", state_arg, bad.to_str().unwrap()]),
        OrdersFactory::default(),
    )
    .await;
    assert_eq!(exit_code(code), exit_code(ExitCode::FAILURE));
    let code = run_command(
        parse(&["--state-dir", state_arg, "/no/such/orders.json"]),
        orders,
    )
    .await;
    assert_eq!(exit_code(code), exit_code(ExitCode::from(2)));
    assert_eq!(
        DirectorySink::read_topic(&topics, CONFIRMED).unwrap().len(),
        3,
        "nothing more published"
    );
}

fn mock_cluster() -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    for (topic, partitions) in [(ORDERS, 3), (CONFIRMED, 1), (DLQ, 1)] {
        cluster.create_topic(topic, partitions, 1).unwrap();
    }
    cluster
}

/// Produces `values` to `topic`, round-robin over `partitions`.
fn produce(brokers: &str, topic: &str, partitions: i32, values: &[Vec<u8>]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for (n, value) in values.iter().enumerate() {
        producer
            .send(
                BaseRecord::<[u8], [u8]>::to(topic)
                    .partition(n as i32 % partitions)
                    .payload(value),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_runs_a_teams_handler_in_process_on_a_mock_cluster() {
    let cluster = mock_cluster();
    let brokers = cluster.bootstrap_servers();
    // 120 orders with 100 distinct ids (20 sent twice), 6 without an id, 4 that are not orders.
    let mut values: Vec<Vec<u8>> = (0..100)
        .map(|n| order(&format!("p-{n}"), n as f64))
        .collect();
    values.extend((0..20).map(|n| order(&format!("p-{}", n * 5), (n * 5) as f64)));
    values.extend((0..6).map(|n| json!({"amount": n}).to_string().into_bytes()));
    values.extend((0..4).map(|n| format!("garbage {n}").into_bytes()));
    produce(&brokers, ORDERS, 3, &values);

    let Command::Poll(args) = Cli::try_parse_from([
        "orders-esm",
        "poll",
        "--topics",
        ORDERS,
        "--brokers",
        &brokers,
        "--group",
        "g-orders",
        "--batch-size",
        "25",
        "--batch-window-ms",
        "20",
        "--function-timeout-ms",
        "30000",
        "--exit-when-idle-ms",
        "2500",
    ])
    .unwrap()
    .command
    else {
        panic!("a poll command")
    };
    let config = config(&[("SAFETY_MARGIN_MS", "200")]);
    let summary = kafka_esm_tools::poll::cli::poll(&args, config, &orders)
        .await
        .unwrap();
    assert_eq!(summary.records, 130, "{summary:?}");
    assert_eq!(summary.delivery.succeeded, 130, "{summary:?}");
    assert_eq!(summary.delivery.given_up, 0);
    assert_eq!(summary.ended_by, "idle");
    let lag: i64 = group_lag(
        &KafkaSettings::new(brokers.as_str()),
        "g-orders",
        &[ORDERS.into()],
        Duration::from_secs(5),
    )
    .unwrap()
    .iter()
    .map(|l| l.lag)
    .sum();
    assert_eq!(lag, 0, "every record committed");

    // One confirmation per distinct order, published by the handler to the cluster polled.
    let confirmed = common::consume(&brokers, CONFIRMED, 1, 100);
    let ids = confirmed_ids(confirmed.iter().map(|m| m.value.as_deref().unwrap()));
    let mut expected: Vec<String> = (0..100).map(|n| format!("p-{n}")).collect();
    expected.sort();
    assert_eq!(ids, expected);
    let dead = common::consume(&brokers, DLQ, 1, 10);
    assert_eq!(dead.len(), 10, "the orders without an id and the garbage");
    assert!(
        dead.iter()
            .all(|m| m.header(headers::ORIGINAL_TOPIC).as_deref() == Some(ORDERS))
    );
}

/// The on-failure record a Kafka-topic destination writes for one record (the AWS guide's shape):
/// the record itself in `payload`, the invoked event.
fn kafka_destination_record(record: &KafkaRecord, bootstrap: &str) -> Value {
    let event: Value = serde_json::from_str(&encode_event(
        &Source::SelfManaged,
        bootstrap,
        std::slice::from_ref(record),
    ))
    .unwrap();
    json!({
        "requestContext": {
            "requestId": format!("req-{}-{}", record.partition, record.offset),
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:orders",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 3
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": "2026-11-22T10:00:00.000Z",
        "KafkaBatchInfo": {
            "batchSize": 1,
            "bootstrapServers": bootstrap,
            "payloadSize": 600,
            "recordInfo": {"offset": record.offset.to_string(), "timestamp": "2026-11-22T10:00:00.000Z"}
        },
        "payload": event
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_reruns_a_teams_failed_records_from_a_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("failures.jsonl");
    let lines: String = sample_records()
        .iter()
        .map(|r| kafka_destination_record(r, "b-1:9092").to_string() + "\n")
        .collect();
    std::fs::write(&path, lines).unwrap();
    let dead_letters = Arc::new(MemorySink::new());
    let confirmations = Arc::new(MemorySink::new());
    let redriver = Redriver::new(
        config(&[("SAFETY_MARGIN_MS", "0")]),
        RedriveOptions {
            mode: Mode::Reprocess,
            invocation_timeout: Duration::from_secs(20),
            ..RedriveOptions::default()
        },
        Arc::new(MemoryStore::new()),
        OrdersFactory::default(),
    )
    .unwrap()
    .with_sinks(dead_letters.clone(), confirmations.clone());
    let run = || async {
        let mut reports = Vec::new();
        let summary = redriver
            .run_file(&path, &mut |r: &MessageReport| reports.push(r.clone()))
            .await
            .unwrap();
        (summary, reports)
    };

    let (summary, reports) = run().await;
    assert_eq!(
        (summary.messages, summary.done, summary.left),
        (7, 7, 0),
        "{reports:?}"
    );
    assert_eq!(
        (summary.processed, summary.duplicates, summary.dead_lettered),
        (3, 2, 2),
        "{reports:?}"
    );
    assert!(reports.iter().all(|r| r.status == MessageStatus::Done));
    // The handler published through the sink the redriver handed it; dead letters through theirs.
    assert_eq!(
        confirmed_ids(
            confirmations
                .messages_to(CONFIRMED)
                .iter()
                .map(|m| m.value.as_deref().unwrap())
        ),
        ["o-1", "o-2", "o-3"]
    );
    assert_eq!(confirmations.len(), 3, "only confirmations");
    let dead = dead_letters.messages_to(DLQ);
    assert_eq!(
        dead.iter()
            .map(|m| header(&m.headers, headers::ORIGINAL_OFFSET))
            .collect::<Vec<_>>(),
        ["12", "13"]
    );
    assert_eq!(dead_letters.len(), 2, "only dead letters");

    // Again: every record is a duplicate (dead letters are done too); nothing is published twice.
    let (summary, _) = run().await;
    assert_eq!(
        (summary.processed, summary.duplicates, summary.dead_lettered),
        (0, 7, 0)
    );
    assert_eq!((confirmations.len(), dead_letters.len()), (3, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generic_command_line_redrives_a_kafka_on_failure_topic_to_the_cluster() {
    const FAILURES: &str = "orders.failures";
    let cluster = mock_cluster();
    cluster.create_topic(FAILURES, 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let failures: Vec<Vec<u8>> = sample_records()
        .iter()
        .map(|r| {
            kafka_destination_record(r, &brokers)
                .to_string()
                .into_bytes()
        })
        .collect();
    produce(&brokers, FAILURES, 1, &failures);

    let command = Cli::try_parse_from([
        "orders-esm",
        "redrive",
        "--topic",
        FAILURES,
        "--brokers",
        &brokers,
        "--group",
        "g-redrive",
        // The mock's group join takes ~3 s (its initial rebalance delay).
        "--fetch-timeout-ms",
        "15000",
        "--timeout-ms",
        "20000",
    ])
    .unwrap()
    .command;
    let code = run_command(command, OrdersFactory::default()).await;
    assert_eq!(exit_code(code), exit_code(ExitCode::SUCCESS));

    // The handler got a Kafka sink to the cluster: its confirmations are there, with the dead
    // letters, and the on-failure topic is committed past every message.
    let confirmed = common::consume(&brokers, CONFIRMED, 1, 3);
    assert_eq!(
        confirmed_ids(confirmed.iter().map(|m| m.value.as_deref().unwrap())),
        ["o-1", "o-2", "o-3"]
    );
    let dead = common::consume(&brokers, DLQ, 1, 2);
    let mut offsets: Vec<String> = dead
        .iter()
        .map(|m| m.header(headers::ORIGINAL_OFFSET).unwrap())
        .collect();
    offsets.sort();
    assert_eq!(offsets, ["12", "13"]);
    let lag: i64 = group_lag(
        &KafkaSettings::new(brokers.as_str()),
        "g-redrive",
        &[FAILURES.into()],
        Duration::from_secs(5),
    )
    .unwrap()
    .iter()
    .map(|l| l.lag)
    .sum();
    assert_eq!(lag, 0, "every on-failure message committed");
}
