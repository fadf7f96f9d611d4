//! Handler outcomes through the whole consumer: done, poison, transient then success, transient until
//! the deadline, partial response, duplicates, the dead-letter topic down, concurrent invocations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kafka_esm::consumer::{Consumer, InvocationError};
use kafka_esm::dead_letter::{PoisonKind, headers};
use kafka_esm::encode::{Source, encode_event};
use kafka_esm::handler::{DeserializeError, HandlerError, InvocationInfo, RecordHandler};
use kafka_esm::idempotency::keys::coordinates_key;
use kafka_esm::idempotency::{CompletedOutcome, IdempotencyStore, MemoryStore};
use kafka_esm::processor::{Processor, ProcessorSettings, RecordOutcome};
use kafka_esm::record::{DecodedRecord, KafkaRecord};
use kafka_esm::retry::{Backoff, Deadline};
use kafka_esm::sink::{MemorySink, MessageSink};
use serde::Deserialize;

/// What a test record asks the handler to do.
#[derive(Debug, Deserialize)]
struct Script {
    id: Option<String>,
    /// `ok`, `permanent`, `transient` (always), or `flaky` (transient `fails` times, then ok).
    action: String,
    #[serde(default)]
    fails: u32,
}

#[derive(Default)]
struct ScriptedHandler {
    calls: Mutex<HashMap<i64, u32>>,
    /// Side effects performed, by offset, in order.
    effects: Mutex<Vec<i64>>,
    slow: Option<Duration>,
    /// While set, a record whose action is `schema` cannot be read yet (a registry out of reach).
    registry_down: std::sync::atomic::AtomicBool,
    /// The size of each chunk the handler was shown before its records were read.
    chunks: Mutex<Vec<usize>>,
}

impl ScriptedHandler {
    fn calls(&self, offset: i64) -> u32 {
        *self.calls.lock().unwrap().get(&offset).unwrap_or(&0)
    }
    fn effects(&self) -> Vec<i64> {
        self.effects.lock().unwrap().clone()
    }
}

#[async_trait]
impl RecordHandler for ScriptedHandler {
    type Event = Script;

    async fn prepare_chunk(
        &self,
        records: &[DecodedRecord],
        _: &InvocationInfo,
    ) -> Result<(), HandlerError> {
        self.chunks.lock().unwrap().push(records.len());
        Ok(())
    }

    fn deserialize(&self, record: &KafkaRecord) -> Result<Script, DeserializeError> {
        let value = record
            .value
            .as_deref()
            .ok_or_else(|| DeserializeError::new("no value"))?;
        let script: Script =
            serde_json::from_slice(value).map_err(|e| DeserializeError::new(e.to_string()))?;
        if script.action == "schema" && self.registry_down.load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(DeserializeError::transient(
                "schema 7 is unavailable: connection refused",
            ));
        }
        Ok(script)
    }

    fn idempotency_key(&self, event: &Script) -> Option<String> {
        event.id.clone()
    }

    async fn handle(
        &self,
        record: &KafkaRecord,
        event: &Script,
        _: &InvocationInfo,
    ) -> Result<(), HandlerError> {
        let call = {
            let mut calls = self.calls.lock().unwrap();
            let n = calls.entry(record.offset).or_default();
            *n += 1;
            *n
        };
        if let Some(slow) = self.slow {
            tokio::time::sleep(slow).await;
        }
        match event.action.as_str() {
            "permanent" => Err(HandlerError::permanent("rule broken")),
            "transient" => Err(HandlerError::transient("dependency down")),
            "flaky" if call <= event.fails => Err(HandlerError::transient("dependency blip")),
            _ => {
                self.effects.lock().unwrap().push(record.offset);
                Ok(())
            }
        }
    }
}

fn record(topic: &str, partition: i32, offset: i64, value: &str) -> KafkaRecord {
    let mut r = KafkaRecord::new(topic, partition, offset);
    r.timestamp = Some(1_700_000_000_000 + offset);
    r.value = Some(value.as_bytes().to_vec());
    r
}

fn ok(offset: i64) -> KafkaRecord {
    record("metrics.v1-eu", 0, offset, r#"{"action":"ok"}"#)
}

fn event(records: &[KafkaRecord]) -> String {
    encode_event(&Source::SelfManaged, "localhost:9092", records)
}

struct Harness {
    consumer: Consumer<Arc<ScriptedHandler>>,
    handler: Arc<ScriptedHandler>,
    dlq: Arc<MemorySink>,
}

fn harness(
    partial: bool,
    store: Arc<dyn IdempotencyStore>,
    handler: Arc<ScriptedHandler>,
) -> Harness {
    let dlq = Arc::new(MemorySink::new());
    let settings = ProcessorSettings {
        backoff: Backoff {
            base: Duration::from_millis(50),
            max: Duration::from_millis(400),
            max_attempts: 6,
        },
        ..ProcessorSettings::default()
    };
    let processor = Processor::new(handler.clone(), store, dlq.clone(), settings);
    Harness {
        consumer: Consumer::new(processor, partial),
        handler,
        dlq,
    }
}

fn simple(partial: bool) -> Harness {
    harness(partial, Arc::new(MemoryStore::new()), Arc::default())
}

fn invocation(budget: Duration) -> InvocationInfo {
    InvocationInfo::new(
        "req-1",
        "consumer-test",
        Deadline::after(budget, Duration::from_millis(100)),
    )
}

fn outcomes(inv: &kafka_esm::consumer::Invocation) -> Vec<RecordOutcome> {
    inv.report
        .partitions
        .iter()
        .flat_map(|p| p.outcomes.iter().map(|(_, o)| o.clone()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn every_record_done_answers_success() {
    let h = simple(false);
    let inv = h
        .consumer
        .invoke(
            &event(&[ok(1), ok(2), ok(3)]),
            &invocation(Duration::from_secs(30)),
        )
        .await;
    assert_eq!(inv.result.unwrap().batch_item_failures, vec![]);
    assert_eq!(h.handler.effects(), vec![1, 2, 3], "offset order");
    assert_eq!(inv.report.counts().processed, 3);
}

#[tokio::test(start_paused = true)]
async fn poison_records_are_dead_lettered_and_the_batch_succeeds() {
    let h = simple(false);
    let records = [
        ok(1),
        record("metrics.v1-eu", 0, 2, "not json"),
        record("metrics.v1-eu", 0, 3, r#"{"action":"permanent"}"#),
        ok(4),
    ];
    let inv = h
        .consumer
        .invoke(&event(&records), &invocation(Duration::from_secs(30)))
        .await;
    assert!(inv.result.is_ok());
    assert_eq!(
        outcomes(&inv),
        vec![
            RecordOutcome::Processed,
            RecordOutcome::DeadLettered(PoisonKind::Deserialization),
            RecordOutcome::DeadLettered(PoisonKind::Rejected),
            RecordOutcome::Processed,
        ]
    );
    let dead = h.dlq.messages_to("metrics.v1-eu.dlq");
    assert_eq!(dead.len(), 2);
    assert_eq!(
        dead[0].value.as_deref(),
        Some(&b"not json"[..]),
        "the original bytes"
    );
    let header = |m: &kafka_esm::sink::OutboundMessage, name: &str| {
        String::from_utf8(
            m.headers
                .iter()
                .find(|h| h.name == name)
                .unwrap()
                .value
                .clone()
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(header(&dead[0], headers::ERROR_KIND), "deserialization");
    assert_eq!(header(&dead[1], headers::ERROR_KIND), "rejected");
    assert_eq!(header(&dead[1], headers::ORIGINAL_OFFSET), "3");
    assert_eq!(header(&dead[1], headers::ATTEMPTS), "1");
    assert_eq!(header(&dead[1], headers::REQUEST_ID), "req-1");
    assert_eq!(h.handler.calls(2), 0, "poison never reaches the handler");
}

#[tokio::test(start_paused = true)]
async fn transient_then_success_is_retried_inside_the_invocation() {
    let h = simple(false);
    let flaky = record("metrics.v1-eu", 0, 1, r#"{"action":"flaky","fails":3}"#);
    let inv = h
        .consumer
        .invoke(
            &event(&[flaky, ok(2)]),
            &invocation(Duration::from_secs(30)),
        )
        .await;
    assert!(inv.result.is_ok());
    assert_eq!(h.handler.calls(1), 4);
    assert_eq!(h.handler.effects(), vec![1, 2], "one side effect each");
}

/// Partition `metrics.v1-eu-0` fails transiently at offset 2; partition `other-5` is fine.
fn stuck_at_offset_2() -> [KafkaRecord; 4] {
    [
        ok(1),
        record("metrics.v1-eu", 0, 2, r#"{"action":"transient"}"#),
        ok(3),
        record("other", 5, 9, r#"{"action":"ok"}"#),
    ]
}

#[tokio::test(start_paused = true)]
async fn transient_until_the_deadline_stops_the_partition_and_fails_the_invocation() {
    let h = simple(false);
    let records = stuck_at_offset_2();
    let started = tokio::time::Instant::now();
    let inv = h
        .consumer
        .invoke(&event(&records), &invocation(Duration::from_millis(900)))
        .await;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "stopped before the deadline"
    );
    let Err(InvocationError::Unfinished(failed)) = &inv.result else {
        panic!("expected a failed invocation, got {:?}", inv.result)
    };
    assert_eq!(failed.unfinished, 2);
    assert!(failed.to_string().contains("metrics.v1-eu-0"), "{failed}");
    assert_eq!(
        h.handler.calls(3),
        0,
        "nothing after the unfinished record runs"
    );
    assert_eq!(h.handler.effects(), vec![1, 9], "other partitions go on");
    assert!(h.dlq.is_empty(), "transient failures are not poison");
}

#[tokio::test(start_paused = true)]
async fn partial_batch_response_names_the_first_unfinished_offset() {
    let h = simple(true);
    let records = stuck_at_offset_2();
    let inv = h
        .consumer
        .invoke(&event(&records), &invocation(Duration::from_secs(5)))
        .await;
    let response = serde_json::to_value(inv.result.unwrap()).unwrap();
    assert_eq!(
        response,
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": {"partition": "metrics.v1-eu-0", "offset": 2}}]})
    );
}

#[tokio::test(start_paused = true)]
async fn a_replayed_batch_repeats_no_side_effect() {
    let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::new());
    let h = harness(false, store, Arc::default());
    let records = [ok(1), ok(2), record("metrics.v1-eu", 0, 3, "poison")];
    let first = h
        .consumer
        .invoke(&event(&records), &invocation(Duration::from_secs(30)))
        .await;
    assert!(first.result.is_ok());
    let second = h
        .consumer
        .invoke(&event(&records), &invocation(Duration::from_secs(30)))
        .await;
    assert!(second.result.is_ok());
    assert_eq!(second.report.counts().duplicates, 3);
    assert_eq!(h.handler.effects(), vec![1, 2]);
    assert_eq!(h.dlq.len(), 1, "dead-lettered once");
}

#[tokio::test(start_paused = true)]
async fn the_business_id_makes_copies_at_other_offsets_duplicates() {
    let h = simple(false);
    let value = r#"{"id":"evt-42","action":"ok"}"#;
    let records = [
        record("metrics.v1-eu", 0, 1, value),
        record("metrics.v1-eu", 0, 2, value),
        record("metrics.v1-eu", 1, 7, value),
    ];
    let inv = h
        .consumer
        .invoke(&event(&records), &invocation(Duration::from_secs(30)))
        .await;
    assert!(inv.result.is_ok());
    assert_eq!(
        h.handler.effects().len(),
        1,
        "one side effect for one business id"
    );
    assert_eq!(inv.report.counts().duplicates, 2);
}

#[tokio::test(start_paused = true)]
async fn the_dead_letter_topic_down_fails_the_invocation_and_loses_nothing() {
    let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::new());
    let h = harness(true, store, Arc::default());
    h.dlq.set_down(true);
    let records = [ok(1), record("metrics.v1-eu", 0, 2, "poison"), ok(3)];
    let inv = h
        .consumer
        .invoke(&event(&records), &invocation(Duration::from_secs(3)))
        .await;
    let response = inv.result.unwrap();
    assert_eq!(response.batch_item_failures.len(), 1);
    assert_eq!(response.batch_item_failures[0].item_identifier.offset, 2);
    assert_eq!(
        h.handler.effects(),
        vec![1],
        "record 3 waits behind the poison record"
    );

    // The ESM retries from offset 2 once the DLQ is back: the record is dead-lettered, not lost.
    h.dlq.set_down(false);
    let retry = h
        .consumer
        .invoke(&event(&records[1..]), &invocation(Duration::from_secs(3)))
        .await;
    assert!(retry.result.unwrap().batch_item_failures.is_empty());
    assert_eq!(h.dlq.len(), 1);
    assert_eq!(h.handler.effects(), vec![1, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_short_dead_letter_outage_is_retried_inside_the_invocation() {
    let h = simple(false);
    h.dlq.fail_next(2);
    let inv = h
        .consumer
        .invoke(
            &event(&[record("metrics.v1-eu", 0, 1, "poison")]),
            &invocation(Duration::from_secs(30)),
        )
        .await;
    assert!(inv.result.is_ok());
    assert_eq!(h.dlq.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_crashed_invocation_does_not_block_the_retry_after_its_deadline() {
    let store = Arc::new(MemoryStore::new());
    // A crashed invocation left a lock that expired already.
    let past = kafka_esm::retry::now_ms() - 1;
    store
        .try_claim(&coordinates_key("metrics.v1-eu", 0, 1), past - 10, past)
        .await
        .unwrap();
    let h = harness(false, store, Arc::default());
    let inv = h
        .consumer
        .invoke(&event(&[ok(1)]), &invocation(Duration::from_secs(30)))
        .await;
    assert!(inv.result.is_ok());
    assert_eq!(h.handler.effects(), vec![1]);
}

#[tokio::test]
async fn concurrent_invocations_never_both_perform_a_side_effect() {
    let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::new());
    let handler = Arc::new(ScriptedHandler {
        slow: Some(Duration::from_millis(20)),
        ..ScriptedHandler::default()
    });
    let a = harness(true, store.clone(), handler.clone());
    let b = harness(true, store, handler.clone());
    let records: Vec<_> = (1..=10).map(ok).collect();
    let json = event(&records);
    let (ia, ib) = (
        invocation(Duration::from_secs(20)),
        invocation(Duration::from_secs(20)),
    );
    let (ra, rb) = tokio::join!(a.consumer.invoke(&json, &ia), b.consumer.invoke(&json, &ib));
    // Whatever each invocation answers, each record's side effect happened at most once...
    let mut effects = handler.effects();
    effects.sort();
    effects.dedup();
    assert_eq!(
        effects.len(),
        handler.effects().len(),
        "no side effect twice"
    );
    // ...and every record is done by one of them or left for a retry: none is lost.
    for offset in 1..=10 {
        let done_by_one = handler.effects().contains(&offset);
        let retried = [&ra, &rb].iter().any(|inv| {
            inv.result
                .as_ref()
                .map(|r| {
                    r.batch_item_failures
                        .iter()
                        .any(|f| f.item_identifier.offset <= offset)
                })
                .unwrap_or(true)
        });
        assert!(done_by_one || retried, "offset {offset} lost");
    }
}

#[tokio::test]
async fn a_business_id_spelled_like_another_records_coordinates_never_hides_it() {
    // Record 1's business id is the text of record 2's coordinates; record 2 has no business id
    // (it is poison). Both must be handled: the keys live in separate namespaces.
    let h = simple(false);
    let records = [
        record(
            "metrics.v1-eu",
            0,
            1,
            r#"{"id":"metrics.v1-eu/0/2","action":"ok"}"#,
        ),
        record("metrics.v1-eu", 0, 2, "poison"),
        record(
            "metrics.v1-eu",
            0,
            3,
            r#"{"id":"at:metrics.v1-eu/0/4","action":"ok"}"#,
        ),
        record("metrics.v1-eu", 0, 4, r#"{"action":"ok"}"#),
    ];
    let inv = h
        .consumer
        .invoke(&event(&records), &invocation(Duration::from_secs(30)))
        .await;
    assert!(inv.result.is_ok());
    assert_eq!(
        outcomes(&inv),
        vec![
            RecordOutcome::Processed,
            RecordOutcome::DeadLettered(kafka_esm::dead_letter::PoisonKind::Deserialization),
            RecordOutcome::Processed,
            RecordOutcome::Processed,
        ]
    );
    assert_eq!(h.dlq.len(), 1);
    assert_eq!(h.handler.effects(), vec![1, 3, 4]);
}

/// Never answers: a dead-letter broker that is down, a store whose calls hang.
struct Silent;

#[async_trait]
impl MessageSink for Silent {
    async fn publish(
        &self,
        _: kafka_esm::sink::OutboundMessage,
        _: Duration,
    ) -> Result<kafka_esm::sink::Delivery, kafka_esm::sink::SinkError> {
        std::future::pending().await
    }

    async fn find_published(
        &self,
        _: &str,
        _: &[&str],
        _: kafka_esm::sink::PublishWindow,
        _: Duration,
    ) -> Result<Vec<bool>, kafka_esm::sink::SinkError> {
        std::future::pending().await
    }
}

/// A store whose batch reads and claims hang (an unreachable DynamoDB endpoint with SDK retries).
struct HangingStore(MemoryStore);

#[async_trait]
impl IdempotencyStore for HangingStore {
    async fn completed(
        &self,
        _: &[&str],
        _: u64,
    ) -> Result<Vec<Option<CompletedOutcome>>, kafka_esm::idempotency::StoreError> {
        std::future::pending().await
    }

    async fn try_claim(
        &self,
        _: &str,
        _: u64,
        _: u64,
    ) -> Result<kafka_esm::idempotency::Claim, kafka_esm::idempotency::StoreError> {
        std::future::pending().await
    }

    async fn complete(
        &self,
        key: &str,
        outcome: CompletedOutcome,
        keep_until_ms: u64,
    ) -> Result<(), kafka_esm::idempotency::StoreError> {
        self.0.complete(key, outcome, keep_until_ms).await
    }

    async fn release(&self, key: &str) -> Result<(), kafka_esm::idempotency::StoreError> {
        self.0.release(key).await
    }

    async fn abandon(
        &self,
        key: &str,
        lock_until_ms: u64,
        now_ms: u64,
    ) -> Result<(), kafka_esm::idempotency::StoreError> {
        self.0.abandon(key, lock_until_ms, now_ms).await
    }
}

/// Runs `records` through `processor` with a 3 s budget (100 ms margin) on paused time; returns
/// the invocation and how long it took.
async fn within_budget<H: RecordHandler>(
    processor: Processor<H>,
    records: &[KafkaRecord],
) -> (kafka_esm::consumer::Invocation, Duration) {
    let consumer = Consumer::new(processor, true);
    let started = tokio::time::Instant::now();
    let inv = consumer
        .invoke(&event(records), &invocation(Duration::from_secs(3)))
        .await;
    (inv, started.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_broker_that_never_answers_cannot_outlive_the_deadline() {
    let store = Arc::new(MemoryStore::new());
    let settings = ProcessorSettings {
        publish_timeout: Duration::from_secs(10),
        ..ProcessorSettings::default()
    };
    let processor = Processor::new(
        Arc::new(ScriptedHandler::default()),
        store.clone(),
        Arc::new(Silent),
        settings,
    );
    let (inv, took) = within_budget(processor, &[record("metrics.v1-eu", 0, 1, "poison")]).await;
    assert!(took <= Duration::from_millis(2_900), "took {took:?}");
    assert!(matches!(outcomes(&inv)[0], RecordOutcome::Unfinished(_)));
    // The claim was abandoned: the next invocation takes the record at once, as a resumed one.
    let key = coordinates_key("metrics.v1-eu", 0, 1);
    let now = kafka_esm::retry::now_ms();
    assert!(matches!(
        store.try_claim(&key, now, now + 60_000).await.unwrap(),
        kafka_esm::idempotency::Claim::Resumed(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_handler_or_a_store_that_never_answers_cannot_outlive_the_deadline() {
    let slow = Arc::new(ScriptedHandler {
        slow: Some(Duration::from_secs(3600)),
        ..ScriptedHandler::default()
    });
    let processor = Processor::new(
        slow,
        Arc::new(MemoryStore::new()),
        Arc::new(MemorySink::new()),
        ProcessorSettings::default(),
    );
    let (inv, took) = within_budget(processor, &[ok(1), ok(2)]).await;
    assert!(
        took <= Duration::from_millis(2_900),
        "handler: took {took:?}"
    );
    assert!(matches!(outcomes(&inv)[0], RecordOutcome::Unfinished(_)));
    assert_eq!(outcomes(&inv)[1], RecordOutcome::NotAttempted);

    let processor = Processor::new(
        Arc::new(ScriptedHandler::default()),
        Arc::new(HangingStore(MemoryStore::new())),
        Arc::new(MemorySink::new()),
        ProcessorSettings::default(),
    );
    let (inv, took) = within_budget(processor, &[ok(1)]).await;
    assert!(took <= Duration::from_millis(2_900), "store: took {took:?}");
    assert!(matches!(outcomes(&inv)[0], RecordOutcome::Unfinished(_)));
}

#[test]
fn a_legal_topic_always_has_a_legal_dead_letter_topic() {
    use kafka_esm::processor::{MAX_TOPIC_LENGTH, default_dead_letter_topic};
    assert_eq!(default_dead_letter_topic("a.b-c"), "a.b-c.dlq");
    let exactly = "t".repeat(MAX_TOPIC_LENGTH - 4);
    assert_eq!(
        default_dead_letter_topic(&exactly),
        format!("{exactly}.dlq")
    );
    let longest = "t".repeat(MAX_TOPIC_LENGTH);
    let other = format!("{}u", "t".repeat(MAX_TOPIC_LENGTH - 1));
    let (a, b) = (
        default_dead_letter_topic(&longest),
        default_dead_letter_topic(&other),
    );
    for name in [&a, &b] {
        assert_eq!(name.len(), MAX_TOPIC_LENGTH, "{name}");
        assert!(name.ends_with(".dlq"));
        assert!(
            name.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
        );
    }
    assert_ne!(a, b, "topics sharing the kept prefix get different names");
    assert_eq!(a, default_dead_letter_topic(&longest), "deterministic");
}

#[tokio::test]
async fn a_poison_record_of_the_longest_legal_topic_is_dead_lettered_to_a_file() {
    // The file sink names its files after the topic: a 249-character name must fit too.
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(kafka_esm::sink::DirectorySink::new(dir.path()));
    let topic = "t".repeat(kafka_esm::processor::MAX_TOPIC_LENGTH);
    let processor = Processor::new(
        Arc::new(ScriptedHandler::default()),
        Arc::new(MemoryStore::new()),
        sink,
        ProcessorSettings::default(),
    );
    let consumer = Consumer::new(processor, true);
    let inv = consumer
        .invoke(
            &event(&[record(&topic, 0, 1, "poison")]),
            &invocation(Duration::from_secs(10)),
        )
        .await;
    assert!(matches!(outcomes(&inv)[0], RecordOutcome::DeadLettered(_)));
}

#[test]
fn one_publish_must_fit_in_the_functions_time_budget() {
    use kafka_esm::processor::check_time_budget;
    let s = Duration::from_secs;
    assert!(check_time_budget(s(120), s(2), s(10)).is_ok());
    assert!(check_time_budget(s(12), s(2), s(10)).is_ok());
    let e = check_time_budget(s(3), s(2), s(10)).unwrap_err();
    assert!(
        e.contains("PUBLISH_TIMEOUT_MS (10000 ms)") && e.contains("leaves 1000 ms"),
        "{e}"
    );
    assert!(
        check_time_budget(s(2), s(2), s(0)).is_err(),
        "no time at all"
    );
}

/// A record that cannot be read *yet* (its schema registry is out of reach) is not poison: it stays
/// unfinished, nothing after it in its partition runs, and the retry processes it once the registry
/// answers.
#[tokio::test(start_paused = true)]
async fn a_record_that_cannot_be_read_yet_is_retried_not_dead_lettered() {
    let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::new());
    let handler = Arc::new(ScriptedHandler::default());
    handler
        .registry_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let h = harness(true, store, handler);
    let records = [
        ok(1),
        record("metrics.v1-eu", 0, 2, r#"{"action":"schema"}"#),
        ok(3),
    ];
    let inv = h
        .consumer
        .invoke(&event(&records), &invocation(Duration::from_secs(5)))
        .await;
    assert_eq!(
        serde_json::to_value(inv.result.unwrap()).unwrap(),
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": {"partition": "metrics.v1-eu-0", "offset": 2}}]})
    );
    assert!(h.dlq.is_empty(), "not poison");
    assert_eq!(h.handler.effects(), vec![1]);
    assert_eq!(h.handler.calls(3), 0, "nothing after it runs");

    h.handler
        .registry_down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let retry = h
        .consumer
        .invoke(&event(&records[1..]), &invocation(Duration::from_secs(5)))
        .await;
    assert_eq!(retry.result.unwrap().batch_item_failures, vec![]);
    assert_eq!(h.handler.effects(), vec![1, 2, 3]);
    assert!(h.dlq.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_handler_sees_each_chunk_before_its_records_are_read() {
    let h = simple(false);
    let records: Vec<KafkaRecord> = (0..250).map(ok).collect();
    let inv = h
        .consumer
        .invoke(&event(&records), &invocation(Duration::from_secs(30)))
        .await;
    assert_eq!(inv.report.counts().processed, 250);
    assert_eq!(*h.handler.chunks.lock().unwrap(), vec![100, 100, 50]);
}
