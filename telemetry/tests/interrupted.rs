//! Exactly once across interruptions: an invocation that dies between a side effect and its
//! completion mark (a crash, a timeout), or a try that fails after doing part of its work, never
//! makes the retry repeat what was done. The reference app's alerts and the dead letters carry a
//! message id; the retry looks for them before publishing.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use kafka_esm::consumer::Consumer;
use kafka_esm::encode::{Source, encode_event};
use kafka_esm::handler::InvocationInfo;
use kafka_esm::idempotency::{IdempotencyStore, LocalStore, MemoryStore};
use kafka_esm::processor::{Processor, ProcessorSettings};
use kafka_esm::record::KafkaRecord;
use kafka_esm::retry::{Backoff, Deadline};
use kafka_esm::sink::{
    Delivery, MemorySink, MessageSink, OutboundMessage, PublishWindow, SinkError,
};
use kafka_esm_telemetry::{TelemetryHandler, parse_rules};

const ALERTS: &str = "alerts";

/// A sink over memory that, from its `stall_at`-th publish on (counting from 1), keeps the message
/// and never answers: the process dies with the acknowledgement in flight. `fail_at` publishes fail.
struct Faulty {
    inner: Arc<MemorySink>,
    publishes: AtomicUsize,
    stall_at: Option<usize>,
    fail_at: HashSet<usize>,
}

impl Faulty {
    fn new(inner: Arc<MemorySink>, stall_at: Option<usize>, fail_at: &[usize]) -> Self {
        Self {
            inner,
            publishes: AtomicUsize::new(0),
            stall_at,
            fail_at: fail_at.iter().copied().collect(),
        }
    }
}

#[async_trait]
impl MessageSink for Faulty {
    async fn publish(
        &self,
        message: OutboundMessage,
        timeout: Duration,
    ) -> Result<Delivery, SinkError> {
        let n = self.publishes.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_at.contains(&n) {
            return Err(SinkError::new(
                message.topic,
                "broker unreachable (injected)",
            ));
        }
        let delivery = self.inner.publish(message, timeout).await?;
        if self.stall_at.is_some_and(|at| n >= at) {
            std::future::pending::<()>().await;
        }
        Ok(delivery)
    }

    async fn find_published(
        &self,
        topic: &str,
        ids: &[&str],
        window: PublishWindow,
        timeout: Duration,
    ) -> Result<Vec<bool>, SinkError> {
        self.inner.find_published(topic, ids, window, timeout).await
    }
}

fn metric(offset: i64, value: &str) -> KafkaRecord {
    let mut r = KafkaRecord::new("metrics", 0, offset);
    r.timestamp = Some(1_700_000_000_000 + offset);
    r.value = Some(
        format!(
            r#"{{"event_id":"m-{offset}","timestamp":"2026-11-23T10:00:00Z","database_type":"postgres","instance_id":"db-{offset}","metric_name":"cpu_usage_percent","value":{value}}}"#
        )
        .into_bytes(),
    );
    r
}

fn consumer(
    rules: &str,
    store: Arc<dyn IdempotencyStore>,
    alerts: Arc<dyn MessageSink>,
    dead_letters: Arc<dyn MessageSink>,
) -> Consumer<TelemetryHandler> {
    let handler = TelemetryHandler::new(
        parse_rules(rules).unwrap(),
        ALERTS,
        alerts,
        Duration::from_secs(1),
    );
    let settings = ProcessorSettings {
        backoff: Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(50),
            max_attempts: 5,
        },
        ..ProcessorSettings::default()
    };
    Consumer::new(Processor::new(handler, store, dead_letters, settings), true)
}

fn invocation(budget: Duration) -> InvocationInfo {
    InvocationInfo::new(
        "req",
        "consumer-test",
        Deadline::after(budget, Duration::ZERO),
    )
}

fn event(records: &[KafkaRecord]) -> String {
    encode_event(&Source::SelfManaged, "localhost:9092", records)
}

/// Every message id published to `topic`, with repeats.
fn ids(sink: &MemorySink, topic: &str) -> Vec<String> {
    sink.messages_to(topic)
        .iter()
        .map(|m| String::from_utf8_lossy(m.message_id().expect("a message id")).into_owned())
        .collect()
}

fn assert_once(ids: &[String], expected: usize) {
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), expected, "every effect is there: {ids:?}");
    assert_eq!(ids.len(), expected, "no effect twice: {ids:?}");
}

const RULE: &str = "cpu_usage_percent > 80";

/// Runs a first invocation of `json` until a publish stalls (the `stall_at`-th alert, the
/// `dead_letter_stall_at`-th dead letter), drops it (the process dies), and waits for its lock to
/// run out, as the ESM's retry would.
async fn crash(
    store: Arc<dyn IdempotencyStore>,
    memory: &Arc<MemorySink>,
    json: &str,
    stall_at: usize,
    dead_letter_stall_at: Option<usize>,
) {
    let budget = Duration::from_millis(600);
    let crashing = consumer(
        RULE,
        store,
        Arc::new(Faulty::new(memory.clone(), Some(stall_at), &[])),
        Arc::new(Faulty::new(memory.clone(), dead_letter_stall_at, &[])),
    );
    let died = tokio::time::timeout(
        Duration::from_millis(300),
        crashing.invoke(json, &invocation(budget)),
    )
    .await;
    assert!(died.is_err(), "the first invocation stalls and is dropped");
    drop(crashing);
    tokio::time::sleep(budget).await;
}

/// Invokes `json` with healthy sinks and time to spare: every record must be done.
async fn retry_until_done(store: Arc<dyn IdempotencyStore>, memory: &Arc<MemorySink>, json: &str) {
    let retry = consumer(RULE, store, memory.clone(), memory.clone());
    let answer = retry
        .invoke(json, &invocation(Duration::from_secs(10)))
        .await;
    let response = answer.result.expect("the retry answers");
    assert!(
        response.batch_item_failures.is_empty(),
        "every record is done: {:?}",
        answer.report
    );
}

/// A crash (see [`crash`]), then a healthy retry of the same batch.
async fn crash_then_retry(
    store: Arc<dyn IdempotencyStore>,
    records: &[KafkaRecord],
    stall_at: usize,
) -> Arc<MemorySink> {
    let memory = Arc::new(MemorySink::new());
    let json = event(records);
    crash(store.clone(), &memory, &json, stall_at, Some(1)).await;
    retry_until_done(store, &memory, &json).await;
    memory
}

#[tokio::test]
async fn a_crash_after_some_alerts_repeats_none_of_them() {
    let records: Vec<_> = (0..10).map(|o| metric(o, "95.0")).collect();
    // Alerts 1-3 acknowledged, the 4th published with its acknowledgement lost in the crash.
    let memory = crash_then_retry(Arc::new(MemoryStore::new()), &records, 4).await;
    assert_once(&ids(&memory, ALERTS), 10);
}

#[tokio::test]
async fn a_crash_with_the_local_store_repeats_nothing_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.redb");
    let records: Vec<_> = (0..250)
        .map(|o| metric(o, if o % 2 == 0 { "95.0" } else { "5.0" }))
        .collect();
    let memory = Arc::new(MemorySink::new());
    let json = event(&records);
    let store = Arc::new(LocalStore::open(&path).unwrap());
    crash(store, &memory, &json, 60, None).await;
    // A new process opens the same file.
    let store = Arc::new(LocalStore::open(&path).unwrap());
    retry_until_done(store, &memory, &json).await;
    assert_once(&ids(&memory, ALERTS), 125);
}

#[tokio::test]
async fn a_crash_after_a_dead_letter_does_not_dead_letter_it_again() {
    let mut poison = KafkaRecord::new("metrics", 0, 1);
    poison.value = Some(b"{\"event_id\": \"truncated".to_vec());
    let records = vec![metric(0, "95.0"), poison, metric(2, "95.0")];
    let memory = crash_then_retry(Arc::new(MemoryStore::new()), &records, 2).await;
    assert_once(&ids(&memory, ALERTS), 2);
    assert_once(&ids(&memory, "metrics.dlq"), 1);
}

#[tokio::test]
async fn a_failure_between_two_alerts_of_one_record_publishes_only_the_missing_one() {
    let memory = Arc::new(MemorySink::new());
    // Two rules break: the first alert goes out, the second fails once and is retried.
    let consumer = consumer(
        "cpu_usage_percent > 80; cpu_usage_percent > 90",
        Arc::new(MemoryStore::new()),
        Arc::new(Faulty::new(memory.clone(), None, &[2])),
        memory.clone(),
    );
    let answer = consumer
        .invoke(
            &event(&[metric(7, "95.0")]),
            &invocation(Duration::from_secs(10)),
        )
        .await;
    assert!(answer.result.unwrap().batch_item_failures.is_empty());
    assert_once(&ids(&memory, ALERTS), 2);
}

#[tokio::test]
async fn records_a_retry_never_reached_stay_interrupted() {
    let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::new());
    let records: Vec<_> = (0..10).map(|o| metric(o, "95.0")).collect();
    let memory = Arc::new(MemorySink::new());
    let json = event(&records);
    // The first invocation publishes alerts 1-4 and dies.
    crash(store.clone(), &memory, &json, 4, None).await;
    // The first retry comes with no time left: it claims the chunk, stops at its first record, and
    // the interrupted claims it took over must stay interrupted (not released as never run).
    let late = consumer(RULE, store.clone(), memory.clone(), memory.clone());
    let answer = late.invoke(&json, &invocation(Duration::ZERO)).await;
    assert!(answer.report.counts().unfinished > 0, "{:?}", answer.report);
    retry_until_done(store, &memory, &json).await;
    assert_once(&ids(&memory, ALERTS), 10);
}
