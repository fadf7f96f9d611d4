//! The batch engine: decoded records in, one outcome per record out.
//!
//! Partitions run concurrently; records of one partition run one after the other in offset order, and
//! the first record that cannot be finished stops its partition (later records are not attempted, so
//! the ESM can retry from it without breaking order). Each record goes through:
//!
//! 1. deserialization by the handler (failure: poison);
//! 2. its idempotency key: a completed key is a duplicate, skipped;
//! 3. a claim on the key (a conditional write), held until the Lambda deadline;
//! 4. the handler's side effect, retried with backoff on transient failures while time allows;
//!    poison records are published to the dead-letter topic instead;
//! 5. the key marked completed; or, when the work could not be done, released and the record left
//!    unfinished for the ESM to retry. Nothing is ever dropped.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tracing::{debug, warn};

use crate::dead_letter::{Failure, PoisonKind, dead_letter_message};
use crate::event::{Batch, PartitionBatch};
use crate::handler::{HandlerError, InvocationInfo, RecordHandler};
use crate::idempotency::{Claim, CompletedOutcome, IdempotencyStore};
use crate::record::{DecodedRecord, TopicPartition};
use crate::retry::{Backoff, now_ms};
use crate::sink::MessageSink;

/// Records prepared and looked up together: DynamoDB's `BatchGetItem` takes up to 100 keys.
pub const READ_AHEAD: usize = 100;

/// How the processor behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorSettings {
    /// The dead-letter topic; `None` means `<source topic>.dlq`.
    pub dead_letter_topic: Option<String>,
    /// Backoff between attempts of one record.
    pub backoff: Backoff,
    /// How long a completed key is remembered. Keep it longer than the ESM can redeliver a record.
    pub idempotency_ttl: Duration,
    /// The longest wait for one dead-letter publish.
    pub publish_timeout: Duration,
}

impl Default for ProcessorSettings {
    fn default() -> Self {
        Self {
            dead_letter_topic: None,
            backoff: Backoff::default(),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            publish_timeout: Duration::from_secs(10),
        }
    }
}

impl ProcessorSettings {
    /// The dead-letter topic for records of `topic`.
    pub fn dead_letter_topic_for(&self, topic: &str) -> String {
        match &self.dead_letter_topic {
            Some(t) => t.clone(),
            None => format!("{topic}.dlq"),
        }
    }
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    /// The handler's side effect happened.
    Processed,
    /// It was done before (same idempotency key): skipped.
    Duplicate,
    /// Poison: published to the dead-letter topic.
    DeadLettered(PoisonKind),
    /// Could not be finished in this invocation (transient failure, dead-letter topic or store
    /// unreachable, deadline): the ESM must deliver it again.
    Unfinished(String),
    /// Not attempted because an earlier record of its partition is unfinished.
    NotAttempted,
}

impl RecordOutcome {
    /// True when the ESM must deliver this record again.
    pub fn needs_retry(&self) -> bool {
        matches!(self, Self::Unfinished(_) | Self::NotAttempted)
    }
}

/// The outcomes of one partition's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReport {
    /// The `"<topic>-<partition>"` key of the event.
    pub key: String,
    /// Topic and partition.
    pub topic_partition: TopicPartition,
    /// `(offset, outcome)` per record, in the batch's order.
    pub outcomes: Vec<(Option<i64>, RecordOutcome)>,
}

impl PartitionReport {
    /// The first record the ESM must deliver again, if any: `Some(None)` when it has no offset.
    pub fn first_unfinished(&self) -> Option<Option<i64>> {
        self.outcomes
            .iter()
            .find(|(_, outcome)| outcome.needs_retry())
            .map(|(offset, _)| *offset)
    }
}

/// Counts of a batch's outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// All records.
    pub records: usize,
    /// Handled now.
    pub processed: usize,
    /// Skipped as done before.
    pub duplicates: usize,
    /// Sent to the dead-letter topic.
    pub dead_lettered: usize,
    /// Left for the ESM to retry (unfinished or not attempted).
    pub unfinished: usize,
}

/// The outcomes of a whole batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// One report per partition, in the batch's order.
    pub partitions: Vec<PartitionReport>,
}

impl BatchReport {
    /// Counts by outcome.
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for (_, outcome) in self.partitions.iter().flat_map(|p| &p.outcomes) {
            counts.records += 1;
            match outcome {
                RecordOutcome::Processed => counts.processed += 1,
                RecordOutcome::Duplicate => counts.duplicates += 1,
                RecordOutcome::DeadLettered(_) => counts.dead_lettered += 1,
                RecordOutcome::Unfinished(_) | RecordOutcome::NotAttempted => {
                    counts.unfinished += 1
                }
            }
        }
        counts
    }

    /// True when every record is done (processed, duplicate or dead-lettered).
    pub fn all_done(&self) -> bool {
        self.counts().unfinished == 0
    }
}

/// Runs a handler over batches with idempotency, retries and dead-lettering.
pub struct Processor<H> {
    handler: H,
    store: Arc<dyn IdempotencyStore>,
    dead_letters: Arc<dyn MessageSink>,
    settings: ProcessorSettings,
}

/// A record ready to run: its event (or why it is poison) and its idempotency key.
struct Prepared<'a, E> {
    slot: &'a DecodedRecord,
    work: Result<E, Failure>,
    key: String,
}

impl<H: RecordHandler> Processor<H> {
    /// A processor over these parts.
    pub fn new(
        handler: H,
        store: Arc<dyn IdempotencyStore>,
        dead_letters: Arc<dyn MessageSink>,
        settings: ProcessorSettings,
    ) -> Self {
        Self {
            handler,
            store,
            dead_letters,
            settings,
        }
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The settings.
    pub fn settings(&self) -> &ProcessorSettings {
        &self.settings
    }

    /// Processes every partition of `batch`, concurrently, each in offset order.
    pub async fn process(&self, batch: &Batch, invocation: &InvocationInfo) -> BatchReport {
        let partitions = join_all(
            batch
                .partitions
                .iter()
                .map(|p| self.process_partition(p, invocation)),
        )
        .await;
        if let Err(error) = self.store.flush().await {
            warn!(%error, "idempotency marks not flushed; a replay may process these records again");
        }
        BatchReport { partitions }
    }

    async fn process_partition(
        &self,
        partition: &PartitionBatch,
        invocation: &InvocationInfo,
    ) -> PartitionReport {
        let mut outcomes = Vec::with_capacity(partition.records.len());
        let mut stopped = false;
        // Records are prepared and looked up READ_AHEAD at a time: one batch read per chunk, and each
        // chunk's events are still in cache when their records run.
        for chunk in partition.records.chunks(READ_AHEAD) {
            if stopped {
                outcomes.extend(
                    chunk
                        .iter()
                        .map(|s| (s.offset(), RecordOutcome::NotAttempted)),
                );
                continue;
            }
            let prepared: Vec<Prepared<'_, H::Event>> =
                chunk.iter().map(|slot| self.prepare(slot)).collect();
            let done_before = self.completed_before(&prepared, partition).await;
            // Consumed as it goes: each event is freed as soon as its record is done.
            for (item, done) in prepared.into_iter().zip(done_before) {
                let outcome = if stopped {
                    RecordOutcome::NotAttempted
                } else if done.is_some() {
                    RecordOutcome::Duplicate
                } else if invocation.deadline.expired() {
                    RecordOutcome::Unfinished("the invocation's time budget ran out".into())
                } else {
                    self.run(&item, invocation).await
                };
                if let RecordOutcome::Unfinished(reason) = &outcome {
                    warn!(
                        topic = item.slot.topic(),
                        partition = item.slot.partition(),
                        offset = item.slot.offset(),
                        reason = reason.as_str(),
                        "record unfinished; its partition stops here and the ESM will deliver it again"
                    );
                    stopped = true;
                }
                outcomes.push((item.slot.offset(), outcome));
            }
        }
        PartitionReport {
            key: partition.key.clone(),
            topic_partition: partition.topic_partition.clone(),
            outcomes,
        }
    }

    /// One batch read: which of these records were completed before (a failed read finds none, and
    /// the claims decide one by one).
    async fn completed_before(
        &self,
        prepared: &[Prepared<'_, H::Event>],
        partition: &PartitionBatch,
    ) -> Vec<Option<CompletedOutcome>> {
        let keys: Vec<&str> = prepared.iter().map(|p| p.key.as_str()).collect();
        match self.store.completed(&keys, now_ms()).await {
            Ok(found) if found.len() == keys.len() => found,
            Ok(_) => {
                warn!(partition = %partition.key, "the store answered a batch read with the wrong count; claiming one by one");
                vec![None; keys.len()]
            }
            Err(error) => {
                warn!(%error, partition = %partition.key, "batch read of completed keys failed; claiming one by one");
                vec![None; keys.len()]
            }
        }
    }

    fn prepare<'a>(&self, slot: &'a DecodedRecord) -> Prepared<'a, H::Event> {
        match slot {
            DecodedRecord::Undecodable(u) => Prepared {
                slot,
                work: Err(Failure {
                    kind: PoisonKind::Undecodable,
                    message: u.reason.clone(),
                    attempts: 0,
                }),
                key: match u.offset {
                    Some(offset) => coordinates_key(&u.topic, u.partition, offset),
                    None => {
                        let mut hasher = std::collections::hash_map::DefaultHasher::new();
                        u.raw_json.hash(&mut hasher);
                        format!("{}/{}/raw-{:016x}", u.topic, u.partition, hasher.finish())
                    }
                },
            },
            DecodedRecord::Record(record) => {
                let coordinates =
                    || coordinates_key(&record.topic, record.partition, record.offset);
                match self.handler.deserialize(record) {
                    Ok(event) => {
                        let key = self
                            .handler
                            .idempotency_key(&event)
                            .unwrap_or_else(coordinates);
                        Prepared {
                            slot,
                            work: Ok(event),
                            key,
                        }
                    }
                    Err(error) => Prepared {
                        slot,
                        work: Err(Failure {
                            kind: PoisonKind::Deserialization,
                            message: error.message,
                            attempts: 0,
                        }),
                        key: coordinates(),
                    },
                }
            }
        }
    }

    async fn run(
        &self,
        item: &Prepared<'_, H::Event>,
        invocation: &InvocationInfo,
    ) -> RecordOutcome {
        match self.claim(&item.key, invocation).await {
            Ok(true) => {}
            Ok(false) => return RecordOutcome::Duplicate,
            Err(reason) => return RecordOutcome::Unfinished(reason),
        }
        let failure = match &item.work {
            Err(failure) => failure.clone(),
            Ok(event) => match self.handle(item, event, invocation).await {
                Ok(()) => {
                    return self
                        .complete(
                            &item.key,
                            CompletedOutcome::Processed,
                            RecordOutcome::Processed,
                            invocation,
                        )
                        .await;
                }
                Err(Some(failure)) => failure,
                Err(None) => {
                    self.release(&item.key).await;
                    return RecordOutcome::Unfinished(
                        "transient failures outlasted the retry budget".into(),
                    );
                }
            },
        };
        match self.dead_letter(item.slot, &failure, invocation).await {
            Ok(()) => {
                self.complete(
                    &item.key,
                    CompletedOutcome::DeadLettered,
                    RecordOutcome::DeadLettered(failure.kind),
                    invocation,
                )
                .await
            }
            Err(reason) => {
                self.release(&item.key).await;
                RecordOutcome::Unfinished(reason)
            }
        }
    }

    /// Claims the key: `Ok(false)` for a duplicate, `Err` when it could not be claimed in time.
    async fn claim(&self, key: &str, invocation: &InvocationInfo) -> Result<bool, String> {
        let backoff = &self.settings.backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let why = match self
                .store
                .try_claim(key, now_ms(), invocation.deadline.lambda_deadline_ms())
                .await
            {
                Ok(Claim::Acquired) => return Ok(true),
                Ok(Claim::Completed(_)) => return Ok(false),
                Ok(Claim::Locked { until_ms }) => {
                    format!("another invocation holds the record until {until_ms} (epoch ms)")
                }
                Err(error) => error.to_string(),
            };
            if !backoff.wait(attempt, &invocation.deadline).await {
                return Err(why);
            }
        }
    }

    /// Runs the handler: `Ok` when done, `Err(Some)` for a permanent failure, `Err(None)` when
    /// transient failures used up the attempts or the time.
    async fn handle(
        &self,
        item: &Prepared<'_, H::Event>,
        event: &H::Event,
        invocation: &InvocationInfo,
    ) -> Result<(), Option<Failure>> {
        let DecodedRecord::Record(record) = item.slot else {
            unreachable!("only decoded records carry an event")
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.handler.handle(record, event, invocation).await {
                Ok(()) => return Ok(()),
                Err(HandlerError::Permanent(message)) => {
                    return Err(Some(Failure {
                        kind: PoisonKind::Rejected,
                        message,
                        attempts: attempt,
                    }));
                }
                Err(HandlerError::Transient(message)) => {
                    debug!(
                        offset = record.offset,
                        attempt, message, "transient failure"
                    );
                    if !self
                        .settings
                        .backoff
                        .wait(attempt, &invocation.deadline)
                        .await
                    {
                        return Err(None);
                    }
                }
            }
        }
    }

    async fn dead_letter(
        &self,
        slot: &DecodedRecord,
        failure: &Failure,
        invocation: &InvocationInfo,
    ) -> Result<(), String> {
        let topic = self.settings.dead_letter_topic_for(slot.topic());
        let message = dead_letter_message(slot, failure, invocation, topic, now_ms());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let timeout = self
                .settings
                .publish_timeout
                .min(invocation.deadline.remaining());
            match self.dead_letters.publish(message.clone(), timeout).await {
                Ok(_) => {
                    warn!(
                        topic = slot.topic(),
                        partition = slot.partition(),
                        offset = slot.offset(),
                        kind = failure.kind.as_str(),
                        dead_letter_topic = message.topic.as_str(),
                        "poison record dead-lettered"
                    );
                    return Ok(());
                }
                Err(error) => {
                    if !self
                        .settings
                        .backoff
                        .wait(attempt, &invocation.deadline)
                        .await
                    {
                        return Err(format!(
                            "the dead-letter topic is unreachable ({error}); the record is kept for the ESM to retry"
                        ));
                    }
                }
            }
        }
    }

    async fn complete(
        &self,
        key: &str,
        completed: CompletedOutcome,
        outcome: RecordOutcome,
        invocation: &InvocationInfo,
    ) -> RecordOutcome {
        let keep_until = now_ms().saturating_add(self.settings.idempotency_ttl.as_millis() as u64);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.store.complete(key, completed, keep_until).await {
                Ok(()) => return outcome,
                Err(error) => {
                    if !self
                        .settings
                        .backoff
                        .wait(attempt, &invocation.deadline)
                        .await
                    {
                        // The side effect happened but is not recorded: retrying may repeat it, which
                        // is better than losing the record.
                        return RecordOutcome::Unfinished(format!(
                            "done, but not recorded as done ({error}); a retry may repeat its side effect"
                        ));
                    }
                }
            }
        }
    }

    async fn release(&self, key: &str) {
        if let Err(error) = self.store.release(key).await {
            warn!(%error, "claim not released; it expires with the invocation's deadline");
        }
    }
}

fn coordinates_key(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}/{partition}/{offset}")
}
