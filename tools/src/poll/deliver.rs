//! Delivering one batch as the ESM does: invoke, read the answer, commit what succeeded, retry the
//! rest (the whole batch, the partitions a partial batch response names, or halves when bisecting),
//! and after the last retry write the on-failure record and move on.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::batch::PAYLOAD_LIMIT_BYTES;
use super::invoke::{Answer, Invoke};
use super::on_failure::{GiveUp, LastResponse, OnFailureDestination, on_failure_record};
use kafka_esm::encode::{Source, encode_event};
use kafka_esm::record::KafkaRecord;
use kafka_esm::response::KafkaBatchResponse;
use kafka_esm::retry::now_ms;

/// The ESM's error handling settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// `MaximumRetryAttempts`: `None` retries until the records succeed or expire.
    pub max_retry_attempts: Option<u32>,
    /// `MaximumRecordAgeInSeconds`: older records are given up instead of invoked.
    pub max_record_age: Option<Duration>,
    /// `BisectBatchOnFunctionError`.
    pub bisect_on_error: bool,
    /// `FunctionResponseTypes: [ReportBatchItemFailures]`: read partial batch responses. Without
    /// it the answer's body is ignored and any successful invocation completes the batch.
    pub report_batch_item_failures: bool,
    /// The wait before the first retry; it doubles up to `max_backoff`.
    pub first_backoff: Duration,
    /// The longest wait between retries.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retry_attempts: None,
            max_record_age: None,
            bisect_on_error: false,
            report_batch_item_failures: false,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Commits offsets: `(topic, partition, next offset to read)`.
pub trait Commit: Send {
    /// Commits the given positions (each is the offset after the last record done).
    fn commit(&mut self, positions: &[(String, i32, i64)]);
}

/// What delivering batches did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    /// Invocations made.
    pub invocations: u64,
    /// Invocations that failed (function errors, timeouts, unreachable function).
    pub failed_invocations: u64,
    /// Records completed by a successful answer.
    pub succeeded: u64,
    /// Records given up (written to the on-failure destination, or skipped without one).
    pub given_up: u64,
    /// Records invoked more than once.
    pub retried: u64,
}

/// How one batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchEnd {
    /// Every record was completed or given up; offsets are committed past the batch.
    Settled,
    /// Stopped before the batch settled: the unsettled records stay uncommitted.
    Stopped,
}

/// Where the events come from, for the event JSON and the on-failure record.
#[derive(Debug, Clone)]
pub struct EventOrigin {
    /// MSK (with the cluster ARN) or self-managed.
    pub source: Source,
    /// The bootstrap servers named in each event.
    pub bootstrap_servers: String,
}

/// Delivers batches to one function. Shared by the partitions' deliveries, which run at once (each
/// partition's batches one after another).
pub struct Deliverer<I> {
    invoker: I,
    policy: RetryPolicy,
    destination: OnFailureDestination,
    origin: EventOrigin,
    max_bytes: usize,
    invocation_seq: AtomicU64,
    counts: Mutex<DeliveryCounts>,
}

struct Work {
    records: Vec<KafkaRecord>,
    /// Invocations already made with these records.
    invocations: u32,
    last_request_id: String,
    last_response: Option<LastResponse>,
}

impl Work {
    /// Keeps the first half of the records and returns the second, with the same history: the
    /// first half is delivered (and settles) first, so each partition stays in order.
    fn split_half(&mut self) -> Work {
        Work {
            records: self.records.split_off(self.records.len() / 2),
            invocations: self.invocations,
            last_request_id: self.last_request_id.clone(),
            last_response: self.last_response.clone(),
        }
    }
}

enum Verdict {
    Done,
    /// Indices of the records to invoke again.
    Retry(Vec<usize>),
    Failed(LastResponse),
}

impl<I: Invoke> Deliverer<I> {
    /// A deliverer invoking `invoker` under `policy`, writing given-up batches to `destination`.
    pub fn new(
        invoker: I,
        policy: RetryPolicy,
        destination: OnFailureDestination,
        origin: EventOrigin,
    ) -> Self {
        Self {
            invoker,
            policy,
            destination,
            origin,
            max_bytes: PAYLOAD_LIMIT_BYTES,
            invocation_seq: AtomicU64::new(0),
            counts: Mutex::new(DeliveryCounts::default()),
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> DeliveryCounts {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn count(&self, update: impl FnOnce(&mut DeliveryCounts)) {
        update(&mut self.counts.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Where the events come from.
    pub fn origin(&self) -> &EventOrigin {
        &self.origin
    }

    /// The invoker.
    pub fn invoker(&self) -> &I {
        &self.invoker
    }

    fn function_arn(&self) -> String {
        format!(
            "arn:aws:lambda:local:000000000000:function:{}",
            self.invoker.function_name()
        )
    }

    /// Delivers `batch` (records of one or more partitions, each partition in offset order) until
    /// every record is done or given up, committing as it goes; stops early (leaving the rest
    /// uncommitted) when `stop` turns true.
    pub async fn deliver(
        &self,
        batch: Vec<KafkaRecord>,
        committer: &mut dyn Commit,
        stop: &mut watch::Receiver<bool>,
    ) -> BatchEnd {
        let mut stack = vec![Work {
            records: batch,
            invocations: 0,
            last_request_id: String::new(),
            last_response: None,
        }];
        while let Some(mut work) = stack.pop() {
            if work.records.is_empty() {
                continue;
            }
            if *stop.borrow() {
                return BatchEnd::Stopped;
            }
            let event = encode_event(
                &self.origin.source,
                &self.origin.bootstrap_servers,
                &work.records,
            );
            if event.len() > self.max_bytes {
                if work.records.len() > 1 {
                    // Only a batch the poller could not cut (one record) is over the limit; split
                    // any other, keeping partition order (the first half settles first).
                    let second = work.split_half();
                    stack.push(second);
                    stack.push(work);
                    continue;
                }
                work.last_response = None;
                if !self
                    .give_up(
                        &work,
                        "MaximumPayloadSizeExceeded",
                        event.len(),
                        committer,
                        stop,
                    )
                    .await
                {
                    return BatchEnd::Stopped;
                }
                continue;
            }
            if let Some(max_age) = self.policy.max_record_age {
                let oldest = work.records.iter().filter_map(|r| r.timestamp).min();
                if oldest.is_some_and(|ts| now_ms() as i64 - ts > max_age.as_millis() as i64) {
                    if !self
                        .give_up(&work, "RecordAgeExceeded", event.len(), committer, stop)
                        .await
                    {
                        return BatchEnd::Stopped;
                    }
                    continue;
                }
            }
            if work.invocations > 0 {
                self.count(|c| c.retried += work.records.len() as u64);
                let delay = self.backoff(work.invocations);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|s| *s) => return BatchEnd::Stopped,
                }
            }
            let request_id = format!(
                "esm-poll-{}-{}",
                std::process::id(),
                self.invocation_seq.fetch_add(1, Ordering::Relaxed)
            );
            let answer = self.invoker.invoke(&event, &request_id).await;
            self.count(|c| c.invocations += 1);
            work.invocations += 1;
            work.last_request_id = request_id;
            let bisect = match self.verdict(&answer, &work.records) {
                Verdict::Done => {
                    self.count(|c| c.succeeded += work.records.len() as u64);
                    committer.commit(&next_positions(&work.records));
                    continue;
                }
                Verdict::Retry(indices) => {
                    let mut retry = Vec::with_capacity(indices.len());
                    let mut done = Vec::with_capacity(work.records.len() - indices.len());
                    let mut wanted = indices.into_iter().peekable();
                    for (i, record) in work.records.into_iter().enumerate() {
                        if wanted.next_if_eq(&i).is_some() {
                            retry.push(record);
                        } else {
                            done.push(record);
                        }
                    }
                    self.count(|c| c.succeeded += done.len() as u64);
                    // Done records of a retried partition all precede its first retried offset.
                    committer.commit(&next_positions(&done));
                    work.records = retry;
                    work.last_response = Some(LastResponse {
                        status_code: 200,
                        function_error: None,
                    });
                    false
                }
                Verdict::Failed(response) => {
                    self.count(|c| c.failed_invocations += 1);
                    if let Answer::Failed {
                        error_type,
                        message,
                    } = &answer
                    {
                        warn!(
                            target: "esm::poll",
                            request_id = work.last_request_id.as_str(),
                            records = work.records.len(),
                            invocations = work.invocations,
                            error_type = error_type.as_str(),
                            error = message.as_str(),
                            "invocation failed"
                        );
                    }
                    work.last_response = Some(response);
                    self.policy.bisect_on_error
                }
            };
            if self.exhausted(&work) {
                let condition = "RetryAttemptsExhausted";
                if !self
                    .give_up(&work, condition, event.len(), committer, stop)
                    .await
                {
                    return BatchEnd::Stopped;
                }
            } else if bisect && work.records.len() > 1 {
                let second = work.split_half();
                stack.push(second);
                stack.push(work);
            } else {
                stack.push(work);
            }
        }
        BatchEnd::Settled
    }

    fn exhausted(&self, work: &Work) -> bool {
        self.policy
            .max_retry_attempts
            .is_some_and(|max| work.invocations > max)
    }

    fn backoff(&self, invocations: u32) -> Duration {
        let factor = 1u32
            .checked_shl(invocations.saturating_sub(1).min(16))
            .unwrap_or(u32::MAX);
        self.policy
            .first_backoff
            .saturating_mul(factor)
            .min(self.policy.max_backoff)
    }

    fn verdict(&self, answer: &Answer, records: &[KafkaRecord]) -> Verdict {
        match answer {
            Answer::Failed { .. } => Verdict::Failed(LastResponse {
                status_code: 200,
                function_error: Some("Unhandled".into()),
            }),
            Answer::Success(_) if !self.policy.report_batch_item_failures => Verdict::Done,
            Answer::Success(None) => Verdict::Done,
            Answer::Success(Some(response)) => partial_verdict(response, records),
        }
    }

    /// Writes the on-failure record for `work` and commits past it; false when stopped before the
    /// record could be written (nothing committed then).
    async fn give_up(
        &self,
        work: &Work,
        condition: &'static str,
        payload_size: usize,
        committer: &mut dyn Commit,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let function_arn = self.function_arn();
        let now = now_ms() as i64;
        let give_up = GiveUp {
            records: &work.records,
            condition,
            invoke_count: work.invocations,
            request_id: &work.last_request_id,
            function_arn: &function_arn,
            response: work.last_response.clone(),
            bootstrap_servers: &self.origin.bootstrap_servers,
            event_source_arn: match &self.origin.source {
                Source::Msk { cluster_arn } => Some(cluster_arn),
                Source::SelfManaged => None,
            },
            payload_size,
        };
        let record = on_failure_record(&give_up, now);
        let mut attempt = 0;
        loop {
            match self.destination.send(&record, &give_up, now).await {
                Ok(()) => break,
                Err(error) => {
                    attempt += 1;
                    warn!(target: "esm::poll", %error, attempt, "on-failure record not written; retrying (the partition waits)");
                    tokio::select! {
                        () = tokio::time::sleep(self.backoff(attempt)) => {}
                        _ = stop.wait_for(|s| *s) => return false,
                    }
                }
            }
        }
        let ranges = record["KafkaBatchInfo"]["recordsInfo"].to_string();
        if self.destination.keeps_records() {
            info!(target: "esm::poll", condition, records = work.records.len(), destination = %self.destination.describe(), ranges, "batch given up");
        } else {
            warn!(target: "esm::poll", condition, records = work.records.len(), ranges, "batch given up and skipped: no on-failure destination");
        }
        self.count(|c| c.given_up += work.records.len() as u64);
        committer.commit(&next_positions(&work.records));
        true
    }
}

/// The records a partial batch response asks for again: in each partition it names, every record
/// from the named offset on. An unknown partition or offset fails the whole batch, as on AWS.
fn partial_verdict(response: &KafkaBatchResponse, records: &[KafkaRecord]) -> Verdict {
    if response.batch_item_failures.is_empty() {
        return Verdict::Done;
    }
    let mut from: HashMap<&str, i64> = HashMap::new();
    for failure in &response.batch_item_failures {
        let id = &failure.item_identifier;
        let known = records.iter().any(|r| {
            r.offset == id.offset && partition_key_matches(&id.partition, &r.topic, r.partition)
        });
        if !known {
            warn!(
                target: "esm::poll",
                partition = id.partition.as_str(),
                offset = id.offset,
                "the partial batch response names a record not in the batch: the whole batch is retried"
            );
            return Verdict::Retry((0..records.len()).collect());
        }
        let entry = from.entry(id.partition.as_str()).or_insert(id.offset);
        *entry = (*entry).min(id.offset);
    }
    Verdict::Retry(
        records
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                from.iter().any(|(key, offset)| {
                    r.offset >= *offset && partition_key_matches(key, &r.topic, r.partition)
                })
            })
            .map(|(i, _)| i)
            .collect(),
    )
}

fn partition_key_matches(key: &str, topic: &str, partition: i32) -> bool {
    key.strip_prefix(topic)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|p| p.parse::<i32>().ok())
        == Some(partition)
}

/// For each partition of `records`, the offset after its last record.
pub fn next_positions(records: &[KafkaRecord]) -> Vec<(String, i32, i64)> {
    let mut next: Vec<(String, i32, i64)> = Vec::new();
    for record in records {
        match next
            .iter_mut()
            .find(|(t, p, _)| *p == record.partition && t == &record.topic)
        {
            Some(entry) => entry.2 = entry.2.max(record.offset + 1),
            None => next.push((record.topic.clone(), record.partition, record.offset + 1)),
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;

    use super::*;
    use kafka_esm::event::decode_event;
    use kafka_esm::response::{BatchItemFailure, ItemIdentifier};

    /// A function that fails (or partially fails) records by offset, and logs what it saw.
    #[derive(Clone, Default)]
    struct Scripted {
        /// Offsets whose presence fails the invocation.
        poison: Vec<i64>,
        /// Offsets reported in a partial response instead (first per partition).
        partial: Vec<i64>,
        /// Fail the first N invocations whatever they hold.
        fail_first: u32,
        seen: Arc<Mutex<Vec<Vec<i64>>>>,
    }

    #[async_trait]
    impl Invoke for Scripted {
        fn function_name(&self) -> &str {
            "scripted"
        }

        async fn invoke(&self, event: &str, _request_id: &str) -> Answer {
            let batch = decode_event(event).expect("an ESM event");
            let offsets: Vec<i64> = batch
                .partitions
                .iter()
                .flat_map(|p| p.records.iter())
                .filter_map(|r| r.offset())
                .collect();
            let n = {
                let mut seen = self.seen.lock().unwrap();
                seen.push(offsets.clone());
                seen.len() as u32
            };
            if n <= self.fail_first || offsets.iter().any(|o| self.poison.contains(o)) {
                return Answer::Failed {
                    error_type: "Boom".into(),
                    message: "scripted".into(),
                };
            }
            let failures: Vec<BatchItemFailure> = batch
                .partitions
                .iter()
                .filter_map(|p| {
                    p.records
                        .iter()
                        .filter_map(|r| r.offset())
                        .find(|o| self.partial.contains(o))
                        .map(|offset| BatchItemFailure {
                            item_identifier: ItemIdentifier {
                                partition: p.key.clone(),
                                offset,
                            },
                        })
                })
                .collect();
            Answer::Success(Some(KafkaBatchResponse {
                batch_item_failures: failures,
            }))
        }
    }

    #[derive(Default)]
    struct Commits(Vec<(String, i32, i64)>);

    impl Commit for Commits {
        fn commit(&mut self, positions: &[(String, i32, i64)]) {
            self.0.extend_from_slice(positions);
        }
    }

    impl Commits {
        fn last(&self, partition: i32) -> Option<i64> {
            self.0
                .iter()
                .rev()
                .find(|(_, p, _)| *p == partition)
                .map(|c| c.2)
        }

        fn never_backwards(&self) -> bool {
            let mut last: HashMap<i32, i64> = HashMap::new();
            self.0.iter().all(|(_, p, o)| {
                let ok = last.get(p).is_none_or(|prev| o >= prev);
                last.insert(*p, *o);
                ok
            })
        }
    }

    fn records(partitions: i32, per_partition: i64) -> Vec<KafkaRecord> {
        let mut out = Vec::new();
        for p in 0..partitions {
            for o in 0..per_partition {
                let mut r = KafkaRecord::new("t", p, p as i64 * 100 + o);
                r.value = Some(b"{}".to_vec());
                r.timestamp = Some(now_ms() as i64);
                out.push(r);
            }
        }
        out
    }

    fn deliverer(
        script: Scripted,
        policy: RetryPolicy,
        dir: &std::path::Path,
    ) -> Deliverer<Scripted> {
        Deliverer::new(
            script,
            RetryPolicy {
                first_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(2),
                ..policy
            },
            OnFailureDestination::File(dir.join("on-failure.jsonl")),
            EventOrigin {
                source: Source::SelfManaged,
                bootstrap_servers: "127.0.0.1:9092".into(),
            },
        )
    }

    fn on_failure_lines(dir: &std::path::Path) -> Vec<crate::redrive::OnFailureRecord> {
        std::fs::read_to_string(dir.join("on-failure.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| crate::redrive::OnFailureRecord::parse(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_transient_failure_is_retried_and_then_committed() {
        let dir = tempfile::tempdir().unwrap();
        let script = Scripted {
            fail_first: 2,
            ..Scripted::default()
        };
        let d = deliverer(script.clone(), RetryPolicy::default(), dir.path());
        let (_tx, mut stop) = watch::channel(false);
        let mut commits = Commits::default();
        let end = d.deliver(records(2, 5), &mut commits, &mut stop).await;
        assert_eq!(end, BatchEnd::Settled);
        assert_eq!(d.counts().invocations, 3);
        assert_eq!(d.counts().succeeded, 10);
        assert_eq!((commits.last(0), commits.last(1)), (Some(5), Some(105)));
        assert!(on_failure_lines(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn bisect_isolates_the_poison_record_and_the_rest_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let script = Scripted {
            poison: vec![103],
            ..Scripted::default()
        };
        let policy = RetryPolicy {
            max_retry_attempts: Some(3),
            bisect_on_error: true,
            ..RetryPolicy::default()
        };
        let d = deliverer(script, policy, dir.path());
        let (_tx, mut stop) = watch::channel(false);
        let mut commits = Commits::default();
        d.deliver(records(2, 8), &mut commits, &mut stop).await;
        let given_up: Vec<_> = on_failure_lines(dir.path())
            .iter()
            .flat_map(|r| r.ranges.clone())
            .map(|r| (r.partition, r.first_offset, r.last_offset))
            .collect();
        // The poison record's group shrinks each retry (16 → 8 → 4 → 2) and the last two go.
        assert_eq!(given_up, [(1, 102, 103)]);
        assert_eq!(d.counts().given_up, 2);
        assert_eq!(d.counts().succeeded, 14);
        assert_eq!((commits.last(0), commits.last(1)), (Some(8), Some(108)));
        assert!(commits.never_backwards());
    }

    #[tokio::test]
    async fn a_partial_response_retries_only_the_named_partition_from_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let script = Scripted {
            partial: vec![3],
            ..Scripted::default()
        };
        let policy = RetryPolicy {
            max_retry_attempts: Some(2),
            report_batch_item_failures: true,
            ..RetryPolicy::default()
        };
        let d = deliverer(script.clone(), policy, dir.path());
        let (_tx, mut stop) = watch::channel(false);
        let mut commits = Commits::default();
        d.deliver(records(2, 6), &mut commits, &mut stop).await;
        let seen = script.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "one invocation and two retries");
        assert_eq!(seen[1], vec![3, 4, 5], "only partition 0 from offset 3");
        let ranges: Vec<_> = on_failure_lines(dir.path())[0]
            .ranges
            .iter()
            .map(|r| (r.partition, r.first_offset, r.last_offset))
            .collect();
        assert_eq!(ranges, [(0, 3, 5)]);
        assert_eq!((commits.last(0), commits.last(1)), (Some(6), Some(106)));
        assert!(commits.never_backwards());
    }

    #[tokio::test]
    async fn without_report_batch_item_failures_a_partial_answer_completes_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let script = Scripted {
            partial: vec![3],
            ..Scripted::default()
        };
        let d = deliverer(script, RetryPolicy::default(), dir.path());
        let (_tx, mut stop) = watch::channel(false);
        let mut commits = Commits::default();
        d.deliver(records(1, 6), &mut commits, &mut stop).await;
        assert_eq!(d.counts().invocations, 1);
        assert_eq!(commits.last(0), Some(6));
    }

    #[tokio::test]
    async fn an_unknown_offset_in_the_answer_retries_the_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let response = KafkaBatchResponse {
            batch_item_failures: vec![BatchItemFailure {
                item_identifier: ItemIdentifier {
                    partition: "t-0".into(),
                    offset: 999,
                },
            }],
        };
        let batch = records(1, 3);
        let Verdict::Retry(all) = partial_verdict(&response, &batch) else {
            panic!("a retry")
        };
        assert_eq!(all, [0, 1, 2]);
        let _ = dir;
    }

    #[tokio::test]
    async fn a_stop_during_retries_leaves_the_batch_uncommitted() {
        let dir = tempfile::tempdir().unwrap();
        let script = Scripted {
            fail_first: u32::MAX,
            ..Scripted::default()
        };
        let d = deliverer(script, RetryPolicy::default(), dir.path());
        let (tx, mut stop) = watch::channel(false);
        let mut commits = Commits::default();
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            tx.send(true).unwrap();
            tx
        });
        let end = d.deliver(records(1, 3), &mut commits, &mut stop).await;
        drop(stopper.await);
        assert_eq!(end, BatchEnd::Stopped);
        assert!(commits.0.is_empty());
        assert!(on_failure_lines(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn a_record_over_the_payload_limit_is_given_up_without_an_invocation() {
        let dir = tempfile::tempdir().unwrap();
        let script = Scripted::default();
        let d = deliverer(script.clone(), RetryPolicy::default(), dir.path());
        let (_tx, mut stop) = watch::channel(false);
        let mut commits = Commits::default();
        let mut batch = records(1, 3);
        batch[1].value = Some(vec![b'x'; PAYLOAD_LIMIT_BYTES]);
        d.deliver(batch, &mut commits, &mut stop).await;
        let lines = on_failure_lines(dir.path());
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].condition.as_str(), "MaximumPayloadSizeExceeded");
        assert!(lines[0].response.is_none());
        assert_eq!(lines[0].ranges[0].first_offset, 1);
        assert_eq!(d.counts().succeeded, 2);
        assert_eq!(commits.last(0), Some(3));
        assert!(commits.never_backwards());
    }
}
