//! Pipelined publishes: a chunk of records waits once for the acknowledgements of its messages
//! (what the handler sends with `sink::publish_pipelined`, and dead letters), a record is marked
//! done only once its own messages are acknowledged, and a failed acknowledgement sends its record
//! through `resume` again: every message lands once, nothing is lost.
//!
//! Time is tokio's paused clock: every acknowledgement takes `ACK` of it, so the time an
//! invocation takes counts its acknowledgement waits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kafka_esm::consumer::Consumer;
use kafka_esm::encode::{Source, encode_event};
use kafka_esm::handler::{DeserializeError, HandlerError, InvocationInfo, RecordHandler};
use kafka_esm::idempotency::keys::coordinates_key;
use kafka_esm::idempotency::{
    Claim, CompletedOutcome, IdempotencyStore, Interrupted, MemoryStore, StoreError,
};
use kafka_esm::processor::COMPLETION_BATCH;
use kafka_esm::processor::{Processor, ProcessorSettings, RecordOutcome};
use kafka_esm::record::KafkaRecord;
use kafka_esm::retry::{Backoff, Deadline};
use kafka_esm::sink::{MemorySink, MessageSink, OutboundMessage, PublishWindow, publish_pipelined};
use tokio::time::Instant;

const TOPIC: &str = "orders";
const OUT: &str = "orders.out";
/// How long each acknowledgement takes.
const ACK: Duration = Duration::from_millis(200);

/// Publishes one message per record, with the record's offset as its id; a resume publishes it
/// only when it is not in the topic yet. A value `poison` is a permanent failure.
struct Publisher {
    out: Arc<MemorySink>,
    resumed: Mutex<Vec<i64>>,
    /// How long handling one record takes before it publishes.
    work: Duration,
}

impl Publisher {
    fn message(record: &KafkaRecord) -> OutboundMessage {
        OutboundMessage {
            topic: OUT.into(),
            key: Some(b"one-key".to_vec()),
            value: Some(record.offset.to_string().into_bytes()),
            headers: Vec::new(),
        }
        .with_message_id(record.offset.to_string())
    }
}

#[async_trait]
impl RecordHandler for Publisher {
    type Event = Option<String>;

    fn deserialize(&self, record: &KafkaRecord) -> Result<Option<String>, DeserializeError> {
        match record.value.as_deref() {
            Some(b"poison") => Err(DeserializeError::new("poison")),
            // A value `order-...` is the record's business id.
            Some(value) if value.starts_with(b"order-") => {
                Ok(Some(String::from_utf8_lossy(value).into_owned()))
            }
            _ => Ok(None),
        }
    }

    fn idempotency_key(&self, event: &Option<String>) -> Option<String> {
        event.clone()
    }

    async fn handle(
        &self,
        record: &KafkaRecord,
        _: &Option<String>,
        _: &InvocationInfo,
    ) -> Result<(), HandlerError> {
        if !self.work.is_zero() {
            tokio::time::sleep(self.work).await;
        }
        // A `...quiet` record publishes nothing: it is done at once, with nothing to wait for.
        if record
            .value
            .as_deref()
            .is_some_and(|v| v.ends_with(b"quiet"))
        {
            return Ok(());
        }
        publish_pipelined(&*self.out, Self::message(record), Duration::from_secs(5))
            .await
            .map_err(HandlerError::transient)
    }

    async fn resume(
        &self,
        record: &KafkaRecord,
        event: &Option<String>,
        interrupted: &Interrupted,
        invocation: &InvocationInfo,
    ) -> Result<(), HandlerError> {
        self.resumed.lock().unwrap().push(record.offset);
        let id = record.offset.to_string();
        let found = self
            .out
            .find_published(
                OUT,
                &[id.as_str()],
                PublishWindow {
                    since_ms: interrupted.claimed_at_ms,
                    until_ms: interrupted.lock_until_ms,
                },
                Duration::from_secs(5),
            )
            .await
            .map_err(HandlerError::transient)?;
        if found == [true] {
            return Ok(());
        }
        self.handle(record, event, invocation).await
    }
}

struct Harness {
    consumer: Consumer<Arc<Publisher>>,
    publisher: Arc<Publisher>,
    dlq: Arc<MemorySink>,
    store: Arc<MemoryStore>,
    writes: Arc<Writes>,
}

/// The memory store, noting the size of each completion write and failing the next ones when told.
#[derive(Default)]
struct Writes {
    sizes: Mutex<Vec<usize>>,
    fail: std::sync::atomic::AtomicUsize,
}

struct NotingStore {
    inner: Arc<MemoryStore>,
    writes: Arc<Writes>,
}

#[async_trait]
impl IdempotencyStore for NotingStore {
    async fn completed(
        &self,
        keys: &[&str],
        now_ms: u64,
    ) -> Result<Vec<Option<CompletedOutcome>>, StoreError> {
        self.inner.completed(keys, now_ms).await
    }
    async fn try_claim(
        &self,
        key: &str,
        now_ms: u64,
        lock_until_ms: u64,
    ) -> Result<Claim, StoreError> {
        self.inner.try_claim(key, now_ms, lock_until_ms).await
    }
    async fn try_claim_many(
        &self,
        keys: &[&str],
        now_ms: u64,
        lock_until_ms: u64,
    ) -> Result<Vec<Claim>, StoreError> {
        self.inner.try_claim_many(keys, now_ms, lock_until_ms).await
    }
    async fn complete(
        &self,
        key: &str,
        outcome: CompletedOutcome,
        keep_until_ms: u64,
    ) -> Result<(), StoreError> {
        self.complete_many(&[(key, outcome)], keep_until_ms).await
    }
    async fn complete_many(
        &self,
        done: &[(&str, CompletedOutcome)],
        keep_until_ms: u64,
    ) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        if self
            .writes
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::new("complete", "the table is out of reach"));
        }
        self.writes.sizes.lock().unwrap().push(done.len());
        self.inner.complete_many(done, keep_until_ms).await
    }
    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.inner.release(key).await
    }
    async fn abandon(&self, key: &str, lock_until_ms: u64, now_ms: u64) -> Result<(), StoreError> {
        self.inner.abandon(key, lock_until_ms, now_ms).await
    }
}

fn harness(pipeline_publishes: bool) -> Harness {
    harness_with(pipeline_publishes, Duration::ZERO)
}

fn harness_with(pipeline_publishes: bool, work: Duration) -> Harness {
    let out = Arc::new(MemorySink::new());
    let dlq = Arc::new(MemorySink::new());
    out.set_ack_delay(ACK);
    dlq.set_ack_delay(ACK);
    let publisher = Arc::new(Publisher {
        out,
        resumed: Mutex::default(),
        work,
    });
    let store = Arc::new(MemoryStore::new());
    let writes = Arc::new(Writes::default());
    let noting = Arc::new(NotingStore {
        inner: store.clone(),
        writes: writes.clone(),
    });
    let settings = ProcessorSettings {
        backoff: Backoff {
            base: Duration::from_millis(50),
            max: Duration::from_millis(400),
            max_attempts: 6,
        },
        pipeline_publishes,
        ..ProcessorSettings::default()
    };
    let processor = Processor::new(publisher.clone(), noting, dlq.clone(), settings);
    Harness {
        consumer: Consumer::new(processor, true),
        publisher,
        dlq,
        store,
        writes,
    }
}

/// Records at offsets `0..n` of partition 0; those in `poison` are poison.
fn event(n: i64, poison: &[i64]) -> String {
    event_with(n, |offset| {
        if poison.contains(&offset) {
            "poison".into()
        } else {
            "{}".into()
        }
    })
}

/// Records at offsets `0..n` of partition 0, with these values.
fn event_with(n: i64, value: impl Fn(i64) -> String) -> String {
    let records: Vec<KafkaRecord> = (0..n)
        .map(|offset| {
            let mut record = KafkaRecord::new(TOPIC, 0, offset);
            record.timestamp = Some(1_700_000_000_000 + offset);
            record.value = Some(value(offset).into_bytes());
            record
        })
        .collect();
    encode_event(&Source::SelfManaged, "localhost:9092", &records)
}

fn invocation(budget: Duration) -> InvocationInfo {
    InvocationInfo::new(
        "req-1",
        "pipeline-test",
        Deadline::after(budget, Duration::from_millis(100)),
    )
}

fn published_offsets(sink: &MemorySink) -> Vec<i64> {
    sink.messages()
        .iter()
        .map(|m| {
            String::from_utf8_lossy(m.value.as_deref().unwrap())
                .parse()
                .unwrap()
        })
        .collect()
}

async fn completed(store: &MemoryStore, offsets: std::ops::Range<i64>) -> Vec<bool> {
    let keys: Vec<String> = offsets.map(|o| coordinates_key(TOPIC, 0, o)).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    store
        .completed(&keys, kafka_esm::retry::now_ms())
        .await
        .unwrap()
        .iter()
        .map(Option::is_some)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_chunk_of_records_waits_once_for_its_acknowledgements() {
    let h = harness(true);
    let started = Instant::now();
    let inv = h
        .consumer
        .invoke(&event(100, &[10, 50]), &invocation(Duration::from_secs(60)))
        .await;
    let took = started.elapsed();
    assert_eq!(inv.result.unwrap().batch_item_failures, vec![]);
    let counts = inv.report.counts();
    assert_eq!((counts.processed, counts.dead_lettered), (98, 2));
    assert!(
        took < 2 * ACK,
        "100 records (98 messages, 2 dead letters) cost one acknowledgement wait of {ACK:?}, not {took:?}"
    );
    let expected: Vec<i64> = (0..100).filter(|o| *o != 10 && *o != 50).collect();
    assert_eq!(
        published_offsets(&h.publisher.out),
        expected,
        "sent in offset order"
    );
    assert_eq!(h.dlq.len(), 2);
    assert!(completed(&h.store, 0..100).await.iter().all(|done| *done));
}

#[tokio::test(start_paused = true)]
async fn a_chunks_acknowledgements_come_while_the_next_chunk_runs() {
    // Each record takes 2 ms of work, so a chunk of 100 takes longer than an acknowledgement.
    let work = Duration::from_millis(2);
    let h = harness_with(true, work);
    let started = Instant::now();
    let inv = h
        .consumer
        .invoke(&event(450, &[]), &invocation(Duration::from_secs(60)))
        .await;
    assert_eq!(inv.result.unwrap().batch_item_failures, vec![]);
    assert_eq!(inv.report.counts().processed, 450);
    let took = started.elapsed();
    assert!(
        took < 450 * work + 2 * ACK,
        "5 chunks wait for their acknowledgements while the next one runs, and only the last one waits at the end: {took:?}"
    );
    assert!(completed(&h.store, 0..450).await.iter().all(|done| *done));
}

#[tokio::test(start_paused = true)]
async fn a_business_id_repeated_in_the_next_chunk_is_a_duplicate_not_a_wait() {
    let h = harness(true);
    // Offsets 5 and 150 (the second chunk) carry the same business id.
    let value = |offset: i64| match offset {
        5 | 150 => "order-7".to_string(),
        _ => "{}".to_string(),
    };
    let started = Instant::now();
    let inv = h
        .consumer
        .invoke(
            &event_with(200, value),
            &invocation(Duration::from_secs(60)),
        )
        .await;
    assert_eq!(inv.result.unwrap().batch_item_failures, vec![]);
    let outcomes = &inv.report.partitions[0].outcomes;
    assert_eq!(outcomes[5].1, RecordOutcome::Processed);
    assert_eq!(outcomes[150].1, RecordOutcome::Duplicate);
    assert!(
        started.elapsed() < 4 * ACK,
        "no lock waited out: {:?}",
        started.elapsed()
    );
    assert_eq!(
        published_offsets(&h.publisher.out).len(),
        199,
        "the duplicate published nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn without_pipelining_each_record_waits_for_its_own() {
    let h = harness(false);
    let started = Instant::now();
    let inv = h
        .consumer
        .invoke(&event(20, &[5]), &invocation(Duration::from_secs(60)))
        .await;
    assert_eq!(inv.result.unwrap().batch_item_failures, vec![]);
    assert!(
        started.elapsed() >= 20 * ACK,
        "one wait per record: {:?}",
        started.elapsed()
    );
    assert_eq!(published_offsets(&h.publisher.out).len(), 19);
}

#[tokio::test(start_paused = true)]
async fn a_failed_acknowledgement_runs_its_record_again_and_every_message_lands_once() {
    let h = harness(true);
    // The first message's acknowledgement fails (it was not kept); every other lands.
    h.publisher.out.fail_next_acks(1);
    let inv = h
        .consumer
        .invoke(&event(30, &[]), &invocation(Duration::from_secs(60)))
        .await;
    assert_eq!(inv.result.unwrap().batch_item_failures, vec![]);
    assert_eq!(inv.report.counts().processed, 30);
    assert_eq!(
        *h.publisher.resumed.lock().unwrap(),
        vec![0],
        "only the record whose message failed runs again, as a resume"
    );
    let mut offsets = published_offsets(&h.publisher.out);
    assert_eq!(offsets.len(), 30, "each message once: {offsets:?}");
    offsets.sort();
    assert_eq!(offsets, (0..30).collect::<Vec<_>>());
    assert!(completed(&h.store, 0..30).await.iter().all(|done| *done));
}

#[tokio::test(start_paused = true)]
async fn acknowledgements_that_never_come_leave_the_record_for_the_esm_and_lose_nothing() {
    let h = harness(true);
    let budget = Duration::from_secs(5);
    // Records 0..3 land; from record 3 on, no acknowledgement succeeds within the invocation.
    let first = h.consumer.invoke(&event(3, &[]), &invocation(budget)).await;
    assert!(first.result.unwrap().batch_item_failures.is_empty());
    h.publisher.out.fail_next_acks(usize::MAX);
    let inv = h
        .consumer
        .invoke(&event(10, &[]), &invocation(budget))
        .await;
    let failures = inv.result.unwrap().batch_item_failures;
    assert_eq!(failures.len(), 1);
    assert_eq!(
        failures[0].item_identifier.offset, 3,
        "the first record not acknowledged"
    );
    let outcomes: Vec<RecordOutcome> = inv.report.partitions[0]
        .outcomes
        .iter()
        .map(|(_, o)| o.clone())
        .collect();
    assert_eq!(
        outcomes[..3],
        [
            RecordOutcome::Duplicate,
            RecordOutcome::Duplicate,
            RecordOutcome::Duplicate
        ]
    );
    assert!(
        outcomes[3..].iter().all(RecordOutcome::needs_retry),
        "{outcomes:?}"
    );
    assert_eq!(
        completed(&h.store, 3..10).await,
        vec![false; 7],
        "none marked done"
    );

    // The ESM delivers them again once the topic takes messages: each lands once.
    h.publisher.out.fail_next_acks(0);
    let again = h
        .consumer
        .invoke(&event(10, &[]), &invocation(Duration::from_secs(60)))
        .await;
    assert!(again.result.unwrap().batch_item_failures.is_empty());
    let mut offsets = published_offsets(&h.publisher.out);
    offsets.sort();
    assert_eq!(offsets, (0..10).collect::<Vec<_>>());
    assert!(completed(&h.store, 0..10).await.iter().all(|done| *done));
    assert_eq!(
        h.store
            .completed(
                &[coordinates_key(TOPIC, 0, 3).as_str()],
                kafka_esm::retry::now_ms()
            )
            .await
            .unwrap(),
        vec![Some(CompletedOutcome::Processed)]
    );
}

/// One record in `every` publishes (its completion waits for the acknowledgement, into the next
/// chunk's write); the others are done at once.
fn mixed(n: i64, every: i64) -> String {
    event_with(n, |offset| {
        if offset % every == 0 {
            "{}".into()
        } else {
            "quiet".into()
        }
    })
}

#[tokio::test(start_paused = true)]
async fn completions_are_written_in_whole_batches_and_the_last_chunk_writes_the_rest() {
    let h = harness(true);
    // 3 chunks: each chunk's own quiet records (93) plus the earlier chunk's acknowledged ones (7)
    // rarely make a multiple of 25.
    let inv = h
        .consumer
        .invoke(&mixed(290, 14), &invocation(Duration::from_secs(60)))
        .await;
    assert_eq!(inv.result.unwrap().batch_item_failures, vec![]);
    assert_eq!(inv.report.counts().processed, 290);
    let sizes = h.writes.sizes.lock().unwrap().clone();
    let (last, whole) = sizes.split_last().unwrap();
    assert!(
        whole.iter().all(|size| size % COMPLETION_BATCH == 0),
        "every write but the last fills whole batches of {COMPLETION_BATCH}: {sizes:?}"
    );
    assert_eq!(
        whole.iter().sum::<usize>() + last,
        290,
        "each key written once: {sizes:?}"
    );
    assert_eq!(
        sizes.len(),
        3,
        "one write per chunk, none after the last: {sizes:?}"
    );
    assert!(completed(&h.store, 0..290).await.iter().all(|done| *done));
}

#[tokio::test(start_paused = true)]
async fn a_business_id_whose_completion_is_held_is_a_duplicate_in_the_next_chunk() {
    let h = harness(true);
    // Offset 99 is done at once, but its completion is held (the first chunk's 90 quiet records
    // fill 3 batches of 25, and the newest 15 wait); offset 130 carries the same business id.
    let value = |offset: i64| match offset {
        99 | 130 => "order-9-quiet".to_string(),
        _ if offset % 10 == 0 => "{}".to_string(),
        _ => "quiet".to_string(),
    };
    let started = Instant::now();
    let inv = h
        .consumer
        .invoke(
            &event_with(250, value),
            &invocation(Duration::from_secs(60)),
        )
        .await;
    assert_eq!(inv.result.unwrap().batch_item_failures, vec![]);
    let outcomes = &inv.report.partitions[0].outcomes;
    assert_eq!(outcomes[99].1, RecordOutcome::Processed);
    assert_eq!(outcomes[130].1, RecordOutcome::Duplicate);
    assert_eq!(
        h.writes.sizes.lock().unwrap()[0],
        75,
        "the first chunk's write left 99 held"
    );
    assert!(
        started.elapsed() < 4 * ACK,
        "no lock waited out: {:?}",
        started.elapsed()
    );
    let done = completed(&h.store, 0..250).await;
    assert!(
        (0..250)
            .filter(|o| *o != 99 && *o != 130)
            .all(|o| done[o as usize]),
        "every record without a business id is recorded under its coordinates"
    );
    let key = kafka_esm::idempotency::keys::business_key("order-9-quiet");
    let by_id = h
        .store
        .completed(&[key.as_str()], kafka_esm::retry::now_ms())
        .await
        .unwrap();
    assert!(by_id[0].is_some(), "the held business id was written");
}

#[tokio::test(start_paused = true)]
async fn held_completions_that_cannot_be_written_leave_their_records_for_the_esm() {
    let h = harness(true);
    // Every completion write fails for the whole invocation (the backoff gives up long before).
    h.writes
        .fail
        .store(usize::MAX, std::sync::atomic::Ordering::SeqCst);
    let inv = h
        .consumer
        .invoke(&mixed(130, 7), &invocation(Duration::from_secs(5)))
        .await;
    let failures = inv.result.unwrap().batch_item_failures;
    assert_eq!(failures.len(), 1);
    assert_eq!(
        failures[0].item_identifier.offset, 0,
        "nothing is recorded as done, so the ESM delivers the partition again from its first record"
    );
    assert!(completed(&h.store, 0..130).await.iter().all(|done| !*done));
    let outcomes = &inv.report.partitions[0].outcomes;
    assert!(
        outcomes.iter().all(|(_, o)| o.needs_retry()),
        "a record reported done is recorded as done: {outcomes:?}"
    );
    // The first chunk ran (its messages were sent once); the second was not attempted.
    assert_eq!(
        published_offsets(&h.publisher.out),
        (0..100).filter(|o| o % 7 == 0).collect::<Vec<_>>()
    );
    assert_eq!(outcomes[100].1, RecordOutcome::NotAttempted);
    // Delivered again at once with the table back: the claims were abandoned, not left locked until
    // the first invocation's deadline, so every record runs (as a resume where it ran before), and
    // each message lands once.
    h.writes.fail.store(0, std::sync::atomic::Ordering::SeqCst);
    let started = Instant::now();
    let again = h
        .consumer
        .invoke(&mixed(130, 7), &invocation(Duration::from_secs(60)))
        .await;
    assert!(
        again.result.unwrap().batch_item_failures.is_empty(),
        "{:?}",
        again.report.counts()
    );
    assert!(
        started.elapsed() < 4 * ACK,
        "no lock waited out: {:?}",
        started.elapsed()
    );
    let mut offsets = published_offsets(&h.publisher.out);
    let sent = offsets.len();
    offsets.sort();
    offsets.dedup();
    assert_eq!(offsets.len(), sent, "no message twice");
    assert_eq!(offsets, (0..130).filter(|o| o % 7 == 0).collect::<Vec<_>>());
    assert!(completed(&h.store, 0..130).await.iter().all(|done| *done));
}
