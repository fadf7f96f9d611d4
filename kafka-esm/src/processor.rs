//! The batch engine: decoded records in, one outcome per record out.
//!
//! Partitions run concurrently; records of one partition run one after the other in offset order, and
//! the first record that cannot be finished stops its partition (later records are not attempted, so
//! the ESM can retry from it without breaking order). Each record goes through:
//!
//! 1. deserialization by the handler (failure: poison);
//! 2. its idempotency key: a completed key is a duplicate, skipped;
//! 3. a claim on the key (a conditional write, one per chunk of records where the store can),
//!    held until the Lambda deadline;
//! 4. the handler's side effect, retried with backoff on transient failures while time allows;
//!    poison records are published to the dead-letter topic instead (with the key as message id);
//! 5. the key marked completed (one write per chunk, in whole batches of [`COMPLETION_BATCH`]
//!    keys: the rest wait for the next chunk's write, the partition's last chunk writes all); or,
//!    when the work could not be done, the claim abandoned and the record left unfinished for the
//!    ESM to retry. Nothing is dropped.
//!
//! A claim that takes over an interrupted attempt (a crash or timeout between claim and
//! completion), and every try after a failed one, asks the handler to *resume*: look for the side
//! effect the earlier attempt may have left and do only what is missing; the dead-letter publish
//! looks for its own message id the same way. So a crash never repeats a side effect that the
//! handler (or the sink) can find.

use std::collections::HashSet;

/// A set of a chunk's keys, hashed with foldhash (the keys are this process's own).
type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use futures::future::join_all;
use tracing::{debug, warn};

use crate::dead_letter::{self, Failure, PoisonKind, dead_letter_message};
use crate::event::{Batch, PartitionBatch};
use crate::handler::{HandlerError, InvocationInfo, RecordHandler};
use crate::idempotency::keys::{business_key, coordinates_key, raw_record_key};
use crate::idempotency::{Claim, CompletedOutcome, IdempotencyStore, Interrupted};
use crate::record::{DecodedRecord, TopicPartition};
use crate::retry::{Backoff, OutOfTime, Tried, now_ms};
use crate::sink::{self, MessageSink, PendingAck, PublishWindow, SinkError};

/// Records prepared and looked up together: DynamoDB's `BatchGetItem` takes up to 100 keys.
pub const READ_AHEAD: usize = 100;

/// Completions are written in whole batches of this many keys (DynamoDB's `BatchWriteItem` takes up
/// to 25): a chunk's completions beyond the last whole batch (at most 24 records, done and
/// acknowledged) wait for the next chunk's, and the partition's last chunk writes what is left. A
/// chunk's completions are those of its records that needed no acknowledgement plus those of the
/// chunk before whose acknowledgements came, rarely a multiple of 25: without this, a chunk of 100
/// records would often cost five writes instead of four.
pub const COMPLETION_BATCH: usize = 25;

/// Claims abandoned at once after a completion write failed (one request each).
const ABANDON_CONCURRENCY: usize = 16;

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
    /// Wait for the acknowledgements of a chunk's messages (dead letters, and what handlers publish
    /// with [`crate::sink::publish_pipelined`]) together, after the next chunk's records ran,
    /// instead of after each record. A record is still marked done only once its own messages are
    /// acknowledged. Off, each
    /// record waits for its own before the next one starts: per-key order then holds even across
    /// a failed publish, at one acknowledgement wait per record.
    pub pipeline_publishes: bool,
}

impl Default for ProcessorSettings {
    fn default() -> Self {
        Self {
            dead_letter_topic: None,
            backoff: Backoff::default(),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            publish_timeout: Duration::from_secs(10),
            pipeline_publishes: true,
        }
    }
}

impl ProcessorSettings {
    /// The dead-letter topic for records of `topic`: `DLQ_TOPIC`, else [`default_dead_letter_topic`].
    pub fn dead_letter_topic_for(&self, topic: &str) -> String {
        match &self.dead_letter_topic {
            Some(t) => t.clone(),
            None => default_dead_letter_topic(topic),
        }
    }
}

/// Checks at start-up that one dead-letter publish fits in the function's time budget: a publish
/// longer than the function's timeout less the safety margin could never be waited for, and each
/// record it holds would stay unfinished for ever.
pub fn check_time_budget(
    function_timeout: Duration,
    safety_margin: Duration,
    publish_timeout: Duration,
) -> Result<(), String> {
    let budget = function_timeout.saturating_sub(safety_margin);
    if publish_timeout <= budget && !budget.is_zero() {
        return Ok(());
    }
    Err(format!(
        "PUBLISH_TIMEOUT_MS ({} ms) does not fit in the function's time budget: its timeout of {} ms less SAFETY_MARGIN_MS ({} ms) leaves {} ms; lower PUBLISH_TIMEOUT_MS (or SAFETY_MARGIN_MS), or raise the function's timeout",
        publish_timeout.as_millis(),
        function_timeout.as_millis(),
        safety_margin.as_millis(),
        budget.as_millis()
    ))
}

/// Kafka's longest topic name.
pub const MAX_TOPIC_LENGTH: usize = 249;

/// `<topic>.dlq`, unless that is longer than Kafka allows (249 characters): then the topic's first
/// 228 characters, `-`, the 64-bit FNV-1a hash of the whole topic name in 16 hex digits, and
/// `.dlq` (249 characters in all). Deterministic, and distinct for topics that share the kept prefix.
pub fn default_dead_letter_topic(topic: &str) -> String {
    const SUFFIX: &str = ".dlq";
    if topic.len() + SUFFIX.len() <= MAX_TOPIC_LENGTH {
        return format!("{topic}{SUFFIX}");
    }
    let hash = format!(
        "{:016x}",
        crate::idempotency::keys::fnv1a_64(topic.as_bytes())
    );
    let keep = MAX_TOPIC_LENGTH - SUFFIX.len() - 1 - hash.len();
    // Topic names are ASCII (`[a-zA-Z0-9._-]`); a character boundary is found all the same.
    let mut end = keep.min(topic.len());
    while !topic.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}-{hash}{SUFFIX}", &topic[..end])
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
    /// Deserializing failed for a reason that may pass (a schema registry out of reach): the
    /// record stays unfinished and is retried, never dead-lettered for it.
    retry_later: Option<String>,
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
        // The previous chunk, while its acknowledgements are still to come: they are awaited after
        // the next chunk's records ran, so a partition waits for them once, at its end, unless
        // they are slower than a chunk. Empty before the first chunk.
        let mut carried: Carried<'_, H::Event> = Carried::default();
        // Done records whose completion waits for a whole batch (see COMPLETION_BATCH).
        let mut held = Held::default();
        // Records are prepared, looked up, claimed and completed READ_AHEAD at a time: one batch
        // read and (with stores that write many keys at once) one write each way per chunk, and
        // each chunk's events are still in cache when their records run.
        let chunks = partition.records.chunks(READ_AHEAD);
        let last_chunk = chunks.len().saturating_sub(1);
        for (number, chunk) in chunks.enumerate() {
            if stopped {
                outcomes.extend(
                    chunk
                        .iter()
                        .map(|s| (s.offset(), RecordOutcome::NotAttempted)),
                );
                continue;
            }
            // The handler's look at the chunk before its records are read (a format fetches the
            // schemas they name): a failure is only logged, deserializing each record says what
            // it means for that record.
            if let Err(error) = self.handler.prepare_chunk(chunk, invocation).await {
                warn!(%error, partition = %partition.key, "preparing a chunk failed; its records are read one by one");
            }
            let prepared: Vec<Prepared<'_, H::Event>> =
                chunk.iter().map(|slot| self.prepare(slot)).collect();
            let done_before = self
                .completed_before(&prepared, partition, invocation)
                .await;
            let (stop, unsettled) = self
                .run_chunk(
                    &prepared,
                    &done_before,
                    std::mem::take(&mut carried),
                    &mut held,
                    number == last_chunk,
                    invocation,
                    &mut outcomes,
                )
                .await;
            stopped = stop;
            carried = Carried {
                prepared,
                unsettled,
            };
        }
        // What a partition stopped early left: the acknowledgements still to come, and the held
        // completions.
        let Carried {
            prepared,
            unsettled,
        } = carried;
        if !unsettled.is_empty() || !held.is_empty() {
            self.settle_and_complete(
                vec![(&prepared, unsettled)],
                Vec::new(),
                &mut held,
                Write::All,
                invocation,
                &mut outcomes,
            )
            .await;
        }
        PartitionReport {
            key: partition.key.clone(),
            topic_partition: partition.topic_partition.clone(),
            outcomes,
        }
    }

    /// Runs one chunk of a partition in offset order, appending one outcome per record, then
    /// settles the `previous` chunk's acknowledgements and completes what is done, in whole
    /// batches (the rest is `held` for the next chunk). Returns true when a record is left
    /// unfinished (the partition stops there), and the chunk's records whose acknowledgements are
    /// still to come. The `last` chunk of a partition waits for its own acknowledgements too and
    /// completes everything in the same write, so that a partition costs no write of its own after
    /// its last chunk.
    #[allow(clippy::too_many_arguments)]
    async fn run_chunk<'p>(
        &self,
        prepared: &'p [Prepared<'p, H::Event>],
        done_before: &[Option<CompletedOutcome>],
        previous: Carried<'p, H::Event>,
        held: &mut Held,
        last: bool,
        invocation: &InvocationInfo,
        outcomes: &mut Vec<(Option<i64>, RecordOutcome)>,
    ) -> (bool, Vec<Unsettled>) {
        // Claim every key not done before, each once, in one call. `claim_slot` is a record's place
        // among the claims (the first record of its key); `repeated` marks a key seen earlier in
        // the chunk (the same business id twice).
        let mut wanted: Vec<&str> = Vec::with_capacity(prepared.len());
        let mut claim_slot: Vec<Option<usize>> = Vec::with_capacity(prepared.len());
        let mut repeated: Vec<bool> = Vec::with_capacity(prepared.len());
        let mut distinct = FastSet::with_capacity_and_hasher(prepared.len(), Default::default());
        for (item, done) in prepared.iter().zip(done_before) {
            let first_of_key = distinct.insert(item.key.as_str());
            repeated.push(!first_of_key);
            claim_slot.push(
                (first_of_key && done.is_none() && item.retry_later.is_none()).then(|| {
                    wanted.push(&item.key);
                    wanted.len() - 1
                }),
            );
        }
        // A key of this chunk that an earlier chunk ran is still claimed by it until its
        // acknowledgements come and it is completed (or while its completion is held): settle and
        // complete those first, so the key is a duplicate here rather than a lock this chunk would
        // wait on.
        let Carried {
            prepared: previous,
            unsettled: mut previous_unsettled,
        } = previous;
        let ran_before = previous_unsettled
            .iter()
            .any(|u| distinct.contains(previous[u.position].key.as_str()))
            || held.keys().any(|key| distinct.contains(key));
        if ran_before
            && self
                .settle_and_complete(
                    vec![(&previous, std::mem::take(&mut previous_unsettled))],
                    Vec::new(),
                    held,
                    Write::All,
                    invocation,
                    outcomes,
                )
                .await
        {
            // A record of the previous chunk stays unfinished: this chunk is not attempted.
            outcomes.extend(
                prepared
                    .iter()
                    .map(|p| (p.slot.offset(), RecordOutcome::NotAttempted)),
            );
            return (true, Vec::new());
        }
        let claimed_at = now_ms();
        let mut claims: Vec<Option<Claim>> = if wanted.is_empty() {
            Vec::new()
        } else {
            let claimed = invocation
                .deadline
                .bound(
                    "the idempotency store's batch claim",
                    self.store.try_claim_many(
                        &wanted,
                        claimed_at,
                        invocation.deadline.lambda_deadline_ms(),
                    ),
                )
                .await;
            match claimed {
                // Out of time: whatever the store did, these claims expire at the Lambda deadline,
                // and every record below stops as unfinished.
                Err(out_of_time) => {
                    warn!(%out_of_time, "batch claim cut short by the deadline");
                    vec![None; wanted.len()]
                }
                Ok(Ok(claims)) if claims.len() == wanted.len() => {
                    claims.into_iter().map(Some).collect()
                }
                Ok(Ok(_)) => {
                    warn!(
                        "the store answered a batch claim with the wrong count; claiming one by one"
                    );
                    vec![None; wanted.len()]
                }
                Ok(Err(error)) => {
                    warn!(%error, "batch claim failed; claiming one by one");
                    vec![None; wanted.len()]
                }
            }
        };
        // Records done: with nothing to wait for (marked at once), and with acknowledgements still
        // to come, in offset order.
        let mut completions: Vec<(usize, &str, CompletedOutcome)> = Vec::new();
        let mut unsettled: Vec<Unsettled> = Vec::new();
        let mut stopped = false;
        for (index, (item, done)) in prepared.iter().zip(done_before).enumerate() {
            let key = item.key.as_str();
            let outcome = if stopped {
                RecordOutcome::NotAttempted
            } else if done.is_some() || repeated[index] {
                // Done before, or earlier in this chunk (the same business id twice: the first
                // finished, or the partition would have stopped there).
                RecordOutcome::Duplicate
            } else if let Some(reason) = &item.retry_later {
                RecordOutcome::Unfinished(reason.clone())
            } else if invocation.deadline.expired() {
                RecordOutcome::Unfinished("the invocation's time budget ran out".into())
            } else {
                let claim = match claim_slot[index].and_then(|slot| claims[slot].take()) {
                    Some(claim @ (Claim::Acquired | Claim::Resumed(_) | Claim::Completed(_))) => {
                        Ok((claim, claimed_at))
                    }
                    // Locked by another invocation, or not claimed in the batch: claim it alone,
                    // waiting for the lock while time allows.
                    Some(Claim::Locked { .. }) | None => self.claim(key, invocation).await,
                };
                match claim {
                    Err(reason) => RecordOutcome::Unfinished(reason),
                    Ok((Claim::Completed(_), _)) => RecordOutcome::Duplicate,
                    Ok((claim, claimed_at)) => {
                        let interrupted = match claim {
                            Claim::Resumed(interrupted) => {
                                warn!(
                                    topic = item.slot.topic(),
                                    partition = item.slot.partition(),
                                    offset = item.slot.offset(),
                                    claimed_at_ms = interrupted.claimed_at_ms,
                                    "an earlier attempt at this record was interrupted; resuming it"
                                );
                                Some(interrupted)
                            }
                            _ => None,
                        };
                        let attempt = Attempt {
                            claimed_at,
                            interrupted,
                        };
                        let pipelined = self.settings.pipeline_publishes;
                        let ran_now = self.run(item, attempt, invocation, pipelined).await;
                        if let Some(completed) = ran_now.completed {
                            if ran_now.acks.is_empty() {
                                completions.push((outcomes.len(), key, completed));
                            } else {
                                unsettled.push(Unsettled {
                                    position: index,
                                    index: outcomes.len(),
                                    completed,
                                    attempt,
                                    acks: ran_now.acks,
                                });
                            }
                        }
                        ran_now.outcome
                    }
                }
            };
            if let RecordOutcome::Unfinished(reason) = &outcome {
                warn_unfinished(item.slot, reason);
                stopped = true;
            }
            outcomes.push((item.slot.offset(), outcome));
        }
        // Claims of records that never ran: released (nothing happened, a retry may claim them at
        // once), except those that took over an interrupted attempt, which stay interrupted.
        let mut unused: Vec<&str> = Vec::new();
        for (key, claim) in wanted.into_iter().zip(claims) {
            let Some(claim) = claim else { continue };
            match claim {
                Claim::Acquired => unused.push(key),
                Claim::Resumed(_) => self.abandon(key, invocation).await,
                Claim::Completed(_) | Claim::Locked { .. } => {}
            }
        }
        if !unused.is_empty() {
            let_claims_go(
                invocation,
                "releasing claims",
                self.store.release_many(&unused),
            )
            .await;
        }
        let mut settling = vec![(&previous[..], previous_unsettled)];
        let (write, carried) = if last {
            // This chunk's own acknowledgements are awaited now too, after the previous chunk's.
            settling.push((prepared, unsettled));
            (Write::All, Vec::new())
        } else {
            (Write::WholeBatches, unsettled)
        };
        stopped |= self
            .settle_and_complete(settling, completions, held, write, invocation, outcomes)
            .await;
        (stopped, carried)
    }

    /// Settles the acknowledgements of `settling` (chunks, each with its records whose messages'
    /// acknowledgements are still to come), then marks completed the records whose messages all
    /// landed, with `completions` (`(outcome index, key, outcome)`) and the `held` ones, oldest
    /// first, as `write` says; what is not written now is held. Returns true when a record is
    /// left unfinished.
    async fn settle_and_complete<'p>(
        &self,
        settling: Vec<Settling<'p, '_, H::Event>>,
        mut completions: Vec<(usize, &'p str, CompletedOutcome)>,
        held: &mut Held,
        write: Write,
        invocation: &InvocationInfo,
        outcomes: &mut [(Option<i64>, RecordOutcome)],
    ) -> bool {
        let mut stopped = false;
        for (prepared, unsettled) in settling {
            if !unsettled.is_empty() {
                stopped |= self
                    .settle(prepared, unsettled, invocation, outcomes, &mut completions)
                    .await;
            }
        }
        let earlier = std::mem::take(&mut held.0);
        let all: Vec<(usize, &str, CompletedOutcome)> = earlier
            .iter()
            .map(|(index, key, outcome)| (*index, key.as_str(), *outcome))
            .chain(completions)
            .collect();
        let now = match write {
            Write::All => all.len(),
            Write::WholeBatches => all.len() - all.len() % COMPLETION_BATCH,
        };
        let (writing, holding) = all.split_at(now);
        held.0 = holding
            .iter()
            .map(|(index, key, outcome)| (*index, (*key).to_owned(), *outcome))
            .collect();
        if writing.is_empty() {
            return stopped;
        }
        let done: Vec<(&str, CompletedOutcome)> = writing
            .iter()
            .map(|(_, key, outcome)| (*key, *outcome))
            .collect();
        if let Err(reason) = self.complete(&done, invocation).await {
            // The side effects happened but are not recorded. Their claims are abandoned, not
            // released (the effects are there to be found): the ESM's next delivery resumes them at
            // once and looks for the effects instead of repeating them, instead of waiting for
            // this invocation's locks to run out at its Lambda deadline. An abandon that fails
            // leaves its lock to run out.
            futures::stream::iter(&done)
                .for_each_concurrent(ABANDON_CONCURRENCY, |(key, _)| {
                    self.abandon(key, invocation)
                })
                .await;
            for (index, _, _) in writing {
                outcomes[*index].1 = RecordOutcome::Unfinished(reason.clone());
            }
            warn!(
                reason = reason.as_str(),
                "records done but not recorded as done; the ESM will deliver them again"
            );
            stopped = true;
        }
        stopped
    }

    /// One batch read: which of these records were completed before (a failed read finds none, and
    /// the claims decide one by one).
    async fn completed_before(
        &self,
        prepared: &[Prepared<'_, H::Event>],
        partition: &PartitionBatch,
        invocation: &InvocationInfo,
    ) -> Vec<Option<CompletedOutcome>> {
        let keys: Vec<&str> = prepared.iter().map(|p| p.key.as_str()).collect();
        let found = invocation
            .deadline
            .bound(
                "the idempotency store's batch read",
                self.store.completed(&keys, now_ms()),
            )
            .await;
        match found {
            Ok(Ok(found)) if found.len() == keys.len() => found,
            Ok(Ok(_)) => {
                warn!(partition = %partition.key, "the store answered a batch read with the wrong count; claiming one by one");
                vec![None; keys.len()]
            }
            Ok(Err(error)) => {
                warn!(%error, partition = %partition.key, "batch read of completed keys failed; claiming one by one");
                vec![None; keys.len()]
            }
            // The claims that follow run out of time too: the records stay unfinished.
            Err(out_of_time) => {
                warn!(%out_of_time, partition = %partition.key, "batch read cut short by the deadline");
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
                    None => raw_record_key(&u.topic, u.partition, &u.raw_json),
                },
                retry_later: None,
            },
            DecodedRecord::Record(record) => {
                let coordinates =
                    || coordinates_key(&record.topic, record.partition, record.offset);
                match self.handler.deserialize(record) {
                    Ok(event) => {
                        let key = self
                            .handler
                            .idempotency_key(&event)
                            .map_or_else(coordinates, |id| business_key(&id));
                        Prepared {
                            slot,
                            work: Ok(event),
                            key,
                            retry_later: None,
                        }
                    }
                    Err(error) => Prepared {
                        slot,
                        retry_later: error
                            .is_transient()
                            .then(|| format!("the value could not be read yet: {}", error.message)),
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

    /// Runs a claimed record: its outcome, how to mark its key when it is done, and (`pipelined`)
    /// the acknowledgements still to come of the messages it sent. Not pipelined, every
    /// acknowledgement has come before it returns, and a failed one is retried as a transient failure.
    async fn run(
        &self,
        item: &Prepared<'_, H::Event>,
        attempt: Attempt,
        invocation: &InvocationInfo,
        pipelined: bool,
    ) -> Ran {
        let (failure, interrupted) = match &item.work {
            Err(failure) => (failure.clone(), attempt.interrupted),
            Ok(event) => match self
                .handle(item, event, attempt, invocation, pipelined)
                .await
            {
                Ok(acks) => {
                    return Ran {
                        outcome: RecordOutcome::Processed,
                        completed: Some(CompletedOutcome::Processed),
                        acks,
                    };
                }
                Err(Failed::Permanently(failure, interrupted)) => (failure, interrupted),
                Err(Failed::OutOfTime) => {
                    self.abandon(&item.key, invocation).await;
                    return Ran::unfinished("transient failures outlasted the retry budget".into());
                }
            },
        };
        // Boxed: poison is rare, and the dead-letter future would make every record's future larger.
        match Box::pin(self.dead_letter(item, &failure, interrupted, invocation, pipelined)).await {
            Ok(ack) => Ran {
                outcome: RecordOutcome::DeadLettered(failure.kind),
                completed: Some(CompletedOutcome::DeadLettered),
                acks: ack.into_iter().collect(),
            },
            Err(reason) => {
                self.abandon(&item.key, invocation).await;
                Ran::unfinished(reason)
            }
        }
    }

    /// Waits for the acknowledgements of the chunk's `unsettled` records together (one wait), then
    /// marks for completion each record whose messages all landed. A record with a failed
    /// acknowledgement runs again, alone and waiting for its own, as a resume of the attempt that
    /// sent it (which may have landed in part). Returns true when one stays unfinished: its
    /// outcome says why, its claim is abandoned, and its partition stops.
    async fn settle<'p>(
        &self,
        prepared: &'p [Prepared<'_, H::Event>],
        unsettled: Vec<Unsettled>,
        invocation: &InvocationInfo,
        outcomes: &mut [(Option<i64>, RecordOutcome)],
        completions: &mut Vec<(usize, &'p str, CompletedOutcome)>,
    ) -> bool {
        let count = unsettled.len();
        let mut records = Vec::with_capacity(count);
        let mut acks = Vec::with_capacity(count);
        for record in unsettled {
            acks.push(record.acks);
            records.push((
                &prepared[record.position],
                record.index,
                record.completed,
                record.attempt,
            ));
        }
        let settled = invocation
            .deadline
            .bound(
                "the acknowledgements of the chunk's messages",
                sink::settle(acks),
            )
            .await
            .unwrap_or_else(|out_of_time| {
                vec![Err(SinkError::new("(every topic)", out_of_time.to_string())); count]
            });
        let mut stopped = false;
        for ((item, index, completed, attempt), settled) in records.into_iter().zip(settled) {
            let error = match settled {
                Ok(()) => {
                    completions.push((index, item.key.as_str(), completed));
                    continue;
                }
                Err(error) => error,
            };
            let outcome = if stopped {
                // An earlier record stays unfinished: this one is delivered again after it.
                self.abandon(&item.key, invocation).await;
                RecordOutcome::Unfinished(format!("its messages were not acknowledged ({error})"))
            } else {
                debug!(offset = item.slot.offset(), %error, "a message of a done record was not acknowledged; running it again");
                let again = Attempt {
                    claimed_at: attempt.claimed_at,
                    interrupted: Some(Interrupted {
                        claimed_at_ms: attempt
                            .interrupted
                            .map_or(attempt.claimed_at, |i| i.claimed_at_ms),
                        lock_until_ms: now_ms(),
                    }),
                };
                let ran = self.run(item, again, invocation, false).await;
                if let Some(completed) = ran.completed {
                    completions.push((index, item.key.as_str(), completed));
                }
                ran.outcome
            };
            if let RecordOutcome::Unfinished(reason) = &outcome {
                warn_unfinished(item.slot, reason);
                stopped = true;
            }
            outcomes[index].1 = outcome;
        }
        stopped
    }

    /// Claims the key alone, waiting out another invocation's lock while time allows: `Ok` with
    /// the claim (held, or completed for a duplicate) and when it was made, `Err` when it could not
    /// be claimed in time.
    async fn claim(&self, key: &str, invocation: &InvocationInfo) -> Result<(Claim, u64), String> {
        let deadline = &invocation.deadline;
        self.settings
            .backoff
            .retry(deadline, |_| async move {
                let now = now_ms();
                let claimed = deadline
                    .bound(
                        "the idempotency store's claim",
                        self.store
                            .try_claim(key, now, deadline.lambda_deadline_ms()),
                    )
                    .await;
                match claimed {
                    Ok(Ok(Claim::Locked { until_ms })) => Tried::Transient(format!(
                        "another invocation holds the record until {until_ms} (epoch ms)"
                    )),
                    Ok(Ok(claim)) => Tried::Done((claim, now)),
                    Ok(Err(error)) => Tried::Transient(error.to_string()),
                    // Whatever the store did, the claim expires at the Lambda deadline.
                    Err(out_of_time) => Tried::Failed(out_of_time.to_string()),
                }
            })
            .await
    }

    /// Runs the handler, retrying transient failures while time allows. After a failed attempt
    /// (or when the claim took over an interrupted one) the handler is asked to resume, since the
    /// failed attempt may have done part of the side effect. `Ok` holds the acknowledgements still
    /// to come of what it published with [`crate::sink::publish_pipelined`] (`pipelined`); not
    /// pipelined they are awaited here, and a failed one is a transient failure.
    async fn handle(
        &self,
        item: &Prepared<'_, H::Event>,
        event: &H::Event,
        attempt: Attempt,
        invocation: &InvocationInfo,
        pipelined: bool,
    ) -> Result<Vec<PendingAck>, Failed> {
        let DecodedRecord::Record(record) = item.slot else {
            unreachable!("only decoded records carry an event")
        };
        let deadline = &invocation.deadline;
        self.settings
            .backoff
            .retry_with(
                deadline,
                attempt.interrupted,
                |interrupted, tries| async move {
                    let result = match &interrupted {
                        None => {
                            deadline
                                .bound(
                                    "the handler",
                                    sink::collecting_acks(
                                        self.handler.handle(record, event, invocation),
                                    ),
                                )
                                .await
                        }
                        Some(interrupted) => {
                            deadline
                                .bound(
                                    "the handler's resume",
                                    sink::collecting_acks(self.handler.resume(
                                        record,
                                        event,
                                        interrupted,
                                        invocation,
                                    )),
                                )
                                .await
                        }
                    };
                    // Cut short by the deadline: the try may have done part of its work, so the
                    // claim is abandoned and the next attempt resumes it.
                    let Ok((result, acks)) = result else {
                        return (interrupted, Tried::Failed(Failed::OutOfTime));
                    };
                    let result = match result {
                        Ok(()) if pipelined || acks.is_empty() => Ok(acks),
                        Ok(()) => {
                            let Ok(settled) = deadline
                                .bound(
                                    "the acknowledgements of the handler's messages",
                                    sink::settle(vec![acks]),
                                )
                                .await
                            else {
                                return (interrupted, Tried::Failed(Failed::OutOfTime));
                            };
                            match settled.into_iter().find_map(Result::err) {
                                Some(error) => Err(HandlerError::Transient(format!(
                                    "a message was not acknowledged ({error})"
                                ))),
                                None => Ok(Vec::new()),
                            }
                        }
                        Err(error) => Err(error),
                    };
                    match result {
                        Ok(acks) => (interrupted, Tried::Done(acks)),
                        Err(HandlerError::Permanent(message)) => {
                            let failure = Failure {
                                kind: PoisonKind::Rejected,
                                message,
                                attempts: tries,
                            };
                            (
                                interrupted,
                                Tried::Failed(Failed::Permanently(failure, interrupted)),
                            )
                        }
                        Err(HandlerError::Transient(message)) => {
                            debug!(offset = record.offset, tries, message, "transient failure");
                            // Whatever this try did, from the claim on, is there to be found.
                            let interrupted = Some(Interrupted {
                                claimed_at_ms: interrupted
                                    .map_or(attempt.claimed_at, |i| i.claimed_at_ms),
                                lock_until_ms: now_ms(),
                            });
                            // Out of attempts or time, the transient failures outlasted the budget.
                            (interrupted, Tried::Transient(Failed::OutOfTime))
                        }
                    }
                },
            )
            .await
    }

    /// Publishes the dead letter, unless an interrupted attempt already did. `pipelined`, it
    /// returns once the message is queued, with its acknowledgement still to come; otherwise once
    /// it is acknowledged.
    async fn dead_letter(
        &self,
        item: &Prepared<'_, H::Event>,
        failure: &Failure,
        interrupted: Option<Interrupted>,
        invocation: &InvocationInfo,
        pipelined: bool,
    ) -> Result<Option<PendingAck>, String> {
        let slot = item.slot;
        let topic = self.settings.dead_letter_topic_for(slot.topic());
        let message = dead_letter_message(slot, failure, invocation, topic, now_ms())
            .with_message_id(item.key.as_str());
        let deadline = &invocation.deadline;
        self.settings
            .backoff
            .retry_with(deadline, message, |mut message, _| async move {
                let timeout = self.settings.publish_timeout.min(deadline.remaining());
                let done_before = match interrupted {
                    None => Ok(false),
                    Some(interrupted) => deadline
                        .bound(
                            "the dead-letter search",
                            self.dead_letters.find_published(
                                &message.topic,
                                &[item.key.as_str()],
                                PublishWindow {
                                    since_ms: interrupted.claimed_at_ms,
                                    until_ms: interrupted.lock_until_ms,
                                },
                                timeout,
                            ),
                        )
                        .await
                        .unwrap_or_else(|out_of_time| {
                            Err(SinkError::new(
                                message.topic.clone(),
                                out_of_time.to_string(),
                            ))
                        })
                        .map(|found| found.first().copied().unwrap_or(false)),
                };
                let published = match done_before {
                    Ok(true) => {
                        debug!(
                            offset = slot.offset(),
                            "dead letter found from an interrupted attempt"
                        );
                        return (message, Tried::Done(None));
                    }
                    Ok(false) => {
                        let topic = message.topic.as_str();
                        let out_of_time =
                            |out_of_time: OutOfTime| SinkError::new(topic, out_of_time.to_string());
                        let sent = deadline
                            .bound(
                                "the dead-letter publish",
                                self.dead_letters.send(message.clone(), timeout),
                            )
                            .await
                            .map_err(out_of_time)
                            .and_then(|sent| sent);
                        match sent {
                            Ok(ack) if pipelined => Ok(Some(ack)),
                            Ok(ack) => deadline
                                .bound("the dead-letter publish", ack)
                                .await
                                .map_err(out_of_time)
                                .and_then(|acked| acked)
                                .map(|_| None),
                            Err(error) => Err(error),
                        }
                    }
                    Err(error) => Err(error),
                };
                match published {
                    Ok(ack) => {
                        warn!(
                            topic = slot.topic(),
                            partition = slot.partition(),
                            offset = slot.offset(),
                            kind = failure.kind.as_str(),
                            dead_letter_topic = message.topic.as_str(),
                            "poison record dead-lettered"
                        );
                        (message, Tried::Done(ack))
                    }
                    // Larger than the broker takes: sent again at once with its value cut to fit
                    // (marked so; the original stays findable by its coordinates).
                    Err(error) if error.too_large && dead_letter::halve_value(&mut message) => {
                        debug!(
                            offset = slot.offset(),
                            size = message.value.as_ref().map_or(0, Vec::len),
                            "dead letter too large; its value is cut"
                        );
                        (message, Tried::Again)
                    }
                    Err(error) => (message, Tried::Transient(error)),
                }
            })
            .await
            .map_err(|error| {
                format!(
                    "the dead-letter topic is unreachable ({error}); the record is kept for the ESM to retry"
                )
            })
    }

    /// Marks the chunk's done keys completed, retrying while time allows.
    async fn complete(
        &self,
        done: &[(&str, CompletedOutcome)],
        invocation: &InvocationInfo,
    ) -> Result<(), String> {
        let keep_until = now_ms().saturating_add(self.settings.idempotency_ttl.as_millis() as u64);
        let deadline = &invocation.deadline;
        self.settings
            .backoff
            .retry(deadline, |_| async move {
                let completed = deadline
                    .bound(
                        "the idempotency store's completion",
                        self.store.complete_many(done, keep_until),
                    )
                    .await
                    .unwrap_or_else(|out_of_time| {
                        Err(crate::idempotency::StoreError::new("complete", out_of_time))
                    });
                match completed {
                    Ok(()) => Tried::Done(()),
                    Err(error) => Tried::Transient(error),
                }
            })
            .await
            .map_err(|error| {
                format!(
                    "done, but not recorded as done ({error}); the retry will look for its side effect before repeating it"
                )
            })
    }

    /// Ends this invocation's claim on `key` so the next claim resumes it at once.
    async fn abandon(&self, key: &str, invocation: &InvocationInfo) {
        let lock_until = invocation.deadline.lambda_deadline_ms();
        let_claims_go(
            invocation,
            "abandoning a claim",
            self.store.abandon(key, lock_until, now_ms()),
        )
        .await;
    }
}

/// Says that `slot` stays unfinished and why: its partition stops there.
fn warn_unfinished(slot: &DecodedRecord, reason: &str) {
    warn!(
        topic = slot.topic(),
        partition = slot.partition(),
        offset = slot.offset(),
        reason,
        "record unfinished; its partition stops here and the ESM will deliver it again"
    );
}

/// Releases or abandons claims within the deadline. Neither is needed for correctness: a claim
/// left behind expires with the invocation's Lambda deadline, so a failure is only logged.
async fn let_claims_go(
    invocation: &InvocationInfo,
    what: &'static str,
    work: impl std::future::Future<Output = Result<(), crate::idempotency::StoreError>>,
) {
    match invocation.deadline.bound(what, work).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            warn!(%error, what, "claims kept; they expire with the invocation's deadline")
        }
        Err(out_of_time) => {
            debug!(%out_of_time, "claims kept; they expire with the invocation's deadline")
        }
    }
}

/// What running a claimed record gave.
struct Ran {
    outcome: RecordOutcome,
    /// How to mark its key once its messages are acknowledged; `None` when it is unfinished.
    completed: Option<CompletedOutcome>,
    /// The acknowledgements still to come of the messages it sent.
    acks: Vec<PendingAck>,
}

impl Ran {
    fn unfinished(reason: String) -> Self {
        Self {
            outcome: RecordOutcome::Unfinished(reason),
            completed: None,
            acks: Vec::new(),
        }
    }
}

/// A record done, whose messages' acknowledgements are still to come.
struct Unsettled {
    /// Its place in its chunk.
    position: usize,
    /// Its place among the partition's outcomes.
    index: usize,
    completed: CompletedOutcome,
    attempt: Attempt,
    acks: Vec<PendingAck>,
}

/// Done records whose completion is held until a whole batch can be written (see
/// [`COMPLETION_BATCH`]): `(outcome index, key, outcome)`, oldest first.
#[derive(Default)]
struct Held(Vec<(usize, String, CompletedOutcome)>);

impl Held {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(_, key, _)| key.as_str())
    }
}

/// How much of the done records a completion writes.
#[derive(Clone, Copy)]
enum Write {
    /// All of them.
    All,
    /// As many as fill whole batches of [`COMPLETION_BATCH`]; the rest are held.
    WholeBatches,
}

/// A chunk's records, with those of them whose acknowledgements are still to come.
type Settling<'p, 'a, E> = (&'p [Prepared<'a, E>], Vec<Unsettled>);

/// A chunk whose records' acknowledgements are still to come.
struct Carried<'a, E> {
    prepared: Vec<Prepared<'a, E>>,
    unsettled: Vec<Unsettled>,
}

/// No chunk (written by hand: a derive would ask `E: Default`).
impl<E> Default for Carried<'_, E> {
    fn default() -> Self {
        Self {
            prepared: Vec::new(),
            unsettled: Vec::new(),
        }
    }
}

/// One claimed attempt at a record.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    /// When the claim was made.
    claimed_at: u64,
    /// The earlier attempt this claim took over, when it was interrupted.
    interrupted: Option<Interrupted>,
}

/// Why the handler did not finish a record.
enum Failed {
    /// A permanent failure: dead-letter it (after the interrupted attempt, if any, that may have
    /// dead-lettered it already).
    Permanently(Failure, Option<Interrupted>),
    /// Transient failures used up the time.
    OutOfTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch's future is `Send` for any handler, as an `async_trait` method or a spawned task
    /// needs it to be (the retries must not keep a borrow that only some lifetimes make `Send`).
    #[allow(dead_code)]
    fn processing_is_send_for_any_handler<H: RecordHandler>(
        processor: &Processor<H>,
        batch: &Batch,
        invocation: &InvocationInfo,
    ) {
        fn send<T: Send>(_: T) {}
        send(processor.process(batch, invocation));
    }
}
