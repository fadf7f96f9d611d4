//! `esm redrive`: recover the batches the event source mapping gave up on.
//!
//! When retries run out, the ESM writes an on-failure record to its destination. An SQS or SNS
//! destination receives metadata only ([`on_failure::OnFailureRecord`]: which offsets of which
//! partitions), so the records must be read back from Kafka ([`fetch::RangeReader`]). An S3 or
//! Kafka-topic destination receives the records too (`payload`): they are taken from there, and the
//! source topic is not read. The records come from the SQS queue ([`Redriver::run_queue`]), an S3
//! bucket ([`Redriver::run_bucket`]), the Kafka on-failure topic ([`Redriver::run_topic`]) or a
//! file ([`Redriver::run_file`]). Then either:
//!
//! - [`Mode::Reprocess`] (the default): the records are re-run through the consumer's own code path,
//!   an ESM-shaped event ([`kafka_esm::encode::encode_event`]) given to [`kafka_esm::consumer::Consumer::invoke`]
//!   of a consumer built from the same configuration as the Lambda, running the handler a
//!   [`HandlerFactory`] builds over the sink the redrive publishes to. With the Lambda's
//!   idempotency store (`IDEMPOTENCY_STORE=dynamodb`) what was already done is skipped as duplicates;
//! - [`Mode::ToDeadLetterTopic`] (`--to-dlq`): the records are copied to the dead-letter topic with the
//!   provenance headers of [`kafka_esm::dead_letter`] (kind `rejected`, message
//!   `redriven from the on-failure queue: <condition>`, the failed invocation's request id and function).
//!
//! A message leaves its source (the SQS message deleted, the S3 object deleted with `--delete`, the
//! topic's offset committed) only once every offset it names is accounted for (processed, duplicate,
//! dead-lettered or copied, or reported as deleted by retention). A malformed message, or one whose
//! records could not all be handled, stays where it is with the reason in its [`MessageReport`].

mod bucket;
pub mod cli;
pub mod fetch;
mod file;
pub mod on_failure;
mod queue;
pub mod report;
mod topic;

pub use bucket::parse_s3_uri;
pub use file::messages_of;
pub use topic::DEFAULT_GROUP;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;

pub use fetch::{FetchError, Incomplete, MissingOffsets, RangeFetch, RangePlan, RangeReader};
pub use on_failure::{
    CarriedRecords, FailureCondition, MalformedRecord, OffsetRange, OnFailureRecord, PayloadForm,
};
pub use report::{MessageReport, MessageStatus, PlannedRecord, RangeReport, RunSummary};

use kafka_esm::config::ConsumerConfig;
use kafka_esm::consumer::Consumer;
use kafka_esm::dead_letter::{Failure, PoisonKind, dead_letter_message};
use kafka_esm::encode::{Source, encode_decoded_event};
use kafka_esm::handler::InvocationInfo;
use kafka_esm::idempotency::IdempotencyStore;
use kafka_esm::kafka::KafkaSettings;
use kafka_esm::processor::{Processor, RecordOutcome};
use kafka_esm::record::DecodedRecord;
use kafka_esm::retry::{Deadline, now_ms};
use kafka_esm::sink::{KafkaSink, MessageSink};

use crate::handler::HandlerFactory;

/// What to do with the records read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Run them through the consumer again (idempotency skips what was done).
    Reprocess,
    /// Copy them to the dead-letter topic with provenance headers.
    ToDeadLetterTopic,
}

impl Mode {
    /// `reprocess` or `to-dlq`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reprocess => "reprocess",
            Self::ToDeadLetterTopic => "to-dlq",
        }
    }
}

/// How to redrive.
#[derive(Debug, Clone)]
pub struct RedriveOptions {
    /// Re-run or copy to the dead-letter topic.
    pub mode: Mode,
    /// Read and report only: no record handled, no message deleted, messages made visible again.
    pub dry_run: bool,
    /// Read from these brokers instead of each message's `bootstrapServers`.
    pub brokers: Option<String>,
    /// Stop after this many messages.
    pub max_messages: Option<usize>,
    /// SQS long polling wait, 0..=20 seconds.
    pub wait_seconds: i32,
    /// How long received messages stay invisible to others (default: the queue's own setting).
    pub visibility_timeout: Option<i32>,
    /// The longest read of one range.
    pub fetch_timeout: Duration,
    /// The time budget of each re-run invocation (its idempotency locks expire with it).
    pub invocation_timeout: Duration,
    /// Records per re-run invocation.
    pub chunk_records: usize,
}

impl Default for RedriveOptions {
    fn default() -> Self {
        Self {
            mode: Mode::Reprocess,
            dry_run: false,
            brokers: None,
            max_messages: None,
            wait_seconds: 20,
            visibility_timeout: None,
            fetch_timeout: Duration::from_secs(60),
            invocation_timeout: Duration::from_secs(300),
            chunk_records: 1_000,
        }
    }
}

/// The redrive could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    /// Options that cannot work together.
    #[error("invalid options: {0}")]
    Options(String),
    /// The queue could not be read.
    #[error(
        "cannot receive messages from {queue_url}: {message}; check the queue URL, the region, the endpoint and the credentials"
    )]
    Receive {
        /// The queue.
        queue_url: String,
        /// What failed.
        message: String,
    },
    /// Another source (a file, a bucket, a Kafka topic) could not be read.
    #[error("cannot read {source_name}: {message}")]
    Source {
        /// The source.
        source_name: String,
        /// What failed.
        message: String,
    },
}

/// Redrives on-failure messages (see the module documentation) with the handler a factory `F`
/// builds.
pub struct Redriver<F: HandlerFactory> {
    config: ConsumerConfig,
    options: RedriveOptions,
    store: Arc<dyn IdempotencyStore>,
    factory: F,
    /// Explicit (dead letters, handler's messages) sinks; otherwise Kafka sinks to the cluster.
    sinks: Option<(Arc<dyn MessageSink>, Arc<dyn MessageSink>)>,
    readers: Mutex<HashMap<String, Arc<RangeReader>>>,
    kafka_sinks: Mutex<HashMap<String, Arc<KafkaSink>>>,
    consumers: Mutex<HashMap<String, Arc<Consumer<F::Handler>>>>,
}

impl<F: HandlerFactory> std::fmt::Debug for Redriver<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redriver")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<F: HandlerFactory> Redriver<F> {
    /// A redriver with the consumer's configuration (its SASL secret already resolved), options,
    /// the idempotency store re-runs use (the Lambda's own, to skip what it did), and the factory of
    /// the handler they run. The handler is built when the first record is re-run, over the sink
    /// its dead letters go to (one handler per cluster published to).
    pub fn new(
        config: ConsumerConfig,
        options: RedriveOptions,
        store: Arc<dyn IdempotencyStore>,
        factory: F,
    ) -> Result<Self, RedriveError> {
        if !(0..=20).contains(&options.wait_seconds) {
            return Err(RedriveError::Options(format!(
                "--wait-seconds {} is out of range: SQS long polling waits 0 to 20 seconds",
                options.wait_seconds
            )));
        }
        if options.chunk_records == 0 {
            return Err(RedriveError::Options(
                "records per invocation must be at least 1".into(),
            ));
        }
        if options.max_messages == Some(0) {
            return Err(RedriveError::Options(
                "--max-messages must be at least 1".into(),
            ));
        }
        Ok(Self {
            config,
            options,
            store,
            factory,
            sinks: None,
            readers: Mutex::default(),
            kafka_sinks: Mutex::default(),
            consumers: Mutex::default(),
        })
    }

    /// Publishes dead letters through `dead_letters`, and builds the handler over `handler_sink`
    /// (the reference app's alerts go there), instead of Kafka (tests, tools).
    pub fn with_sinks(
        mut self,
        dead_letters: Arc<dyn MessageSink>,
        handler_sink: Arc<dyn MessageSink>,
    ) -> Self {
        self.sinks = Some((dead_letters, handler_sink));
        self
    }

    /// The options.
    pub fn options(&self) -> &RedriveOptions {
        &self.options
    }

    /// Settings for `brokers`, with the configured authentication.
    fn kafka_settings(&self, brokers: &str) -> KafkaSettings {
        let mut settings = self
            .config
            .kafka
            .clone()
            .unwrap_or_else(|| KafkaSettings::new(brokers));
        settings.bootstrap_servers = brokers.to_owned();
        settings
    }

    /// Where dead letters and the handler's messages go: `KAFKA_BOOTSTRAP_SERVERS`, else the
    /// cluster read from.
    fn output_brokers<'a>(&'a self, read_from: &'a str) -> &'a str {
        self.config
            .kafka
            .as_ref()
            .map_or(read_from, |k| k.bootstrap_servers.as_str())
    }

    fn reader(&self, brokers: &str) -> Result<Arc<RangeReader>, FetchError> {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reader) = readers.get(brokers) {
            return Ok(reader.clone());
        }
        let reader = Arc::new(RangeReader::new(
            &self.kafka_settings(brokers),
            self.options.fetch_timeout,
        )?);
        readers.insert(brokers.to_owned(), reader.clone());
        Ok(reader)
    }

    fn kafka_sink(&self, brokers: &str) -> Result<Arc<KafkaSink>, String> {
        let mut sinks = self.kafka_sinks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sink) = sinks.get(brokers) {
            return Ok(sink.clone());
        }
        let sink = Arc::new(
            KafkaSink::new(&self.kafka_settings(brokers))
                .map_err(|e| format!("cannot create a Kafka producer for {brokers}: {e}"))?,
        );
        sinks.insert(brokers.to_owned(), sink.clone());
        Ok(sink)
    }

    fn dead_letter_sink(&self, brokers: &str) -> Result<Arc<dyn MessageSink>, String> {
        match &self.sinks {
            Some((dead_letters, _)) => Ok(dead_letters.clone()),
            None => Ok(self.kafka_sink(brokers)?),
        }
    }

    fn consumer(&self, brokers: &str) -> Result<Arc<Consumer<F::Handler>>, String> {
        let key = if self.sinks.is_some() { "" } else { brokers };
        if let Some(consumer) = self
            .consumers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
        {
            return Ok(consumer.clone());
        }
        let (dead_letters, handler_sink): (Arc<dyn MessageSink>, Arc<dyn MessageSink>) =
            match &self.sinks {
                Some((d, h)) => (d.clone(), h.clone()),
                None => {
                    let sink = self.kafka_sink(brokers)?;
                    (sink.clone(), sink)
                }
            };
        let handler = self
            .factory
            .build(&self.config, handler_sink)
            .map_err(|e| format!("the handler cannot be built: {e}"))?;
        let processor = Processor::new(
            handler,
            self.store.clone(),
            dead_letters,
            self.config.processor.clone(),
        );
        let consumer = Arc::new(Consumer::new(processor, self.config.partial_batch_response));
        self.consumers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_owned(), consumer.clone());
        Ok(consumer)
    }

    /// Handles one on-failure message body. The report's status is [`MessageStatus::Done`] when
    /// every offset is accounted for and the message may be removed from its source (each source's
    /// loop deletes or commits it), [`MessageStatus::Left`] with a reason otherwise,
    /// [`MessageStatus::DryRun`] in a dry run.
    pub async fn handle_message(&self, message_id: &str, body: &str) -> MessageReport {
        let started = Instant::now();
        let mode = self.options.mode.as_str();
        let record = match OnFailureRecord::parse(body) {
            Ok(record) => record,
            Err(e) => {
                let mut report = MessageReport::left(
                    message_id,
                    mode,
                    format!("malformed on-failure record: {e}; left at its source"),
                );
                if self.options.dry_run {
                    report.status = MessageStatus::DryRun;
                    report.would_delete = Some(false);
                }
                return report;
            }
        };
        let mut report = MessageReport {
            message_id: message_id.to_owned(),
            status: MessageStatus::Left,
            reason: None,
            would_delete: None,
            mode,
            request_id: Some(record.request_id.clone()),
            function_arn: Some(record.function_arn.clone()),
            condition: Some(record.condition.clone()),
            brokers: None,
            ranges: Vec::new(),
            duration_ms: 0,
        };
        let brokers = self
            .options
            .brokers
            .clone()
            .or_else(|| record.bootstrap_servers.clone())
            .or_else(|| {
                record
                    .carried
                    .as_ref()
                    .and_then(|c| c.bootstrap_servers.clone())
            })
            .filter(|b| !b.trim().is_empty());
        report.brokers = brokers.clone();
        for range in &record.ranges {
            let range_report = match (&record.carried, &brokers) {
                // The records travel in the payload (S3, Kafka-topic destinations): Kafka is not read.
                (Some(carried), _) => {
                    let records: Vec<DecodedRecord> = carried.in_range(range).cloned().collect();
                    if self.options.dry_run {
                        self.plan_carried(range, &records)
                    } else {
                        let brokers = brokers.clone().unwrap_or_default();
                        let mut out = Self::empty_range_report(range);
                        out.fetched = records.len() as u64;
                        out.gaps = carried_gaps(range, &records);
                        self.redrive_records(message_id, &record, &brokers, &records, &mut out)
                            .await;
                        out
                    }
                }
                (None, Some(brokers)) if self.options.dry_run => {
                    self.plan_range(brokers, range).await
                }
                (None, Some(brokers)) => {
                    self.redrive_range(message_id, &record, brokers, range)
                        .await
                }
                (None, None) => {
                    let mut out = Self::empty_range_report(range);
                    out.error = Some(
                        "the record carries no payload and names no bootstrapServers: give --brokers host:port to read its offsets back".into(),
                    );
                    out
                }
            };
            report.ranges.push(range_report);
        }
        let first_problem = report.ranges.iter().find(|r| !r.accounted_for()).map(|r| {
            let why = r
                .error
                .clone()
                .or_else(|| r.incomplete.as_ref().map(ToString::to_string))
                .unwrap_or_else(|| format!("{} records unfinished", r.unfinished));
            format!("{}-{}: {why}", r.topic, r.partition)
        });
        if self.options.dry_run {
            report.status = MessageStatus::DryRun;
            report.would_delete = Some(first_problem.is_none());
            report.reason = first_problem;
        } else if let Some(problem) = first_problem {
            report.status = MessageStatus::Left;
            report.reason = Some(format!(
                "not every record could be handled ({problem}); left at its source to try again"
            ));
        } else {
            report.status = MessageStatus::Done;
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        report
    }

    fn empty_range_report(range: &OffsetRange) -> RangeReport {
        RangeReport {
            topic: range.topic.clone(),
            partition: range.partition,
            first_offset: range.first_offset,
            last_offset: range.last_offset,
            ..RangeReport::default()
        }
    }

    async fn plan_range(&self, brokers: &str, range: &OffsetRange) -> RangeReport {
        let mut out = Self::empty_range_report(range);
        let planned = match self.reader(brokers) {
            Ok(reader) => {
                let range = range.clone();
                tokio::task::spawn_blocking(move || reader.plan(&range))
                    .await
                    .map_err(|e| format!("the Kafka read was interrupted: {e}"))
                    .and_then(|r| r.map_err(|e| e.to_string()))
            }
            Err(e) => Err(e.to_string()),
        };
        match planned {
            Ok(plan) => {
                out.low_watermark = Some(plan.low_watermark);
                out.high_watermark = Some(plan.high_watermark);
                out.fetched = plan.available;
                out.missing = plan.missing;
                if plan.beyond_end > 0 {
                    out.incomplete = Some(Incomplete::BeyondEnd {
                        first: range.last_offset + 1 - plan.beyond_end as i64,
                        last: range.last_offset,
                        high_watermark: plan.high_watermark,
                    });
                }
            }
            Err(error) => out.error = Some(error),
        }
        out
    }

    async fn redrive_range(
        &self,
        message_id: &str,
        record: &OnFailureRecord,
        brokers: &str,
        range: &OffsetRange,
    ) -> RangeReport {
        let mut out = Self::empty_range_report(range);
        let fetched = match self.reader(brokers) {
            Ok(reader) => {
                let range = range.clone();
                tokio::task::spawn_blocking(move || reader.fetch(&range))
                    .await
                    .map_err(|e| format!("the Kafka read was interrupted: {e}"))
                    .and_then(|r| r.map_err(|e| e.to_string()))
            }
            Err(e) => Err(e.to_string()),
        };
        let fetched = match fetched {
            Ok(fetched) => fetched,
            Err(error) => {
                out.error = Some(error);
                return out;
            }
        };
        out.low_watermark = Some(fetched.low_watermark);
        out.high_watermark = Some(fetched.high_watermark);
        out.fetched = fetched.records.len() as u64;
        out.missing = fetched.missing;
        out.gaps = fetched.gaps;
        out.incomplete = fetched.incomplete;
        let records: Vec<DecodedRecord> = fetched
            .records
            .into_iter()
            .map(DecodedRecord::Record)
            .collect();
        self.redrive_records(message_id, record, brokers, &records, &mut out)
            .await;
        out
    }

    /// Re-runs or copies `records` (read back from Kafka or carried in the payload).
    async fn redrive_records(
        &self,
        message_id: &str,
        record: &OnFailureRecord,
        brokers: &str,
        records: &[DecodedRecord],
        out: &mut RangeReport,
    ) {
        if records.is_empty() {
            return;
        }
        let output = self.output_brokers(brokers).to_owned();
        if output.is_empty() && self.sinks.is_none() {
            out.unfinished = records.len() as u64;
            out.error = Some(
                "no brokers to publish to: set KAFKA_BOOTSTRAP_SERVERS or give --brokers host:port"
                    .into(),
            );
            return;
        }
        match self.options.mode {
            Mode::Reprocess => {
                self.reprocess(message_id, record, brokers, &output, records, out)
                    .await
            }
            Mode::ToDeadLetterTopic => {
                self.copy_to_dead_letters(record, &output, records, out)
                    .await
            }
        }
    }

    /// A dry run over carried records: what would be done with each, without a broker.
    fn plan_carried(&self, range: &OffsetRange, records: &[DecodedRecord]) -> RangeReport {
        let mut out = Self::empty_range_report(range);
        out.fetched = records.len() as u64;
        out.records = records
            .iter()
            .map(|r| PlannedRecord {
                topic: r.topic().to_owned(),
                partition: r.partition(),
                offset: r.offset(),
                action: match (self.options.mode, r) {
                    (Mode::Reprocess, DecodedRecord::Record(_)) => {
                        "reprocess through the consumer (skipped as a duplicate if already done)"
                            .into()
                    }
                    (Mode::Reprocess, DecodedRecord::Undecodable(u)) => format!(
                        "dead-letter to {} (undecodable: {})",
                        self.config.processor.dead_letter_topic_for(&u.topic),
                        u.reason
                    ),
                    (Mode::ToDeadLetterTopic, r) => format!(
                        "copy to {}",
                        self.config.processor.dead_letter_topic_for(r.topic())
                    ),
                },
            })
            .collect();
        out.gaps = carried_gaps(range, records);
        out
    }

    async fn reprocess(
        &self,
        message_id: &str,
        record: &OnFailureRecord,
        brokers: &str,
        output: &str,
        records: &[DecodedRecord],
        out: &mut RangeReport,
    ) {
        let consumer = match self.consumer(output) {
            Ok(consumer) => consumer,
            Err(error) => {
                out.unfinished = records.len() as u64;
                out.error = Some(error);
                return;
            }
        };
        let arn = record.event_source_arn.clone().or_else(|| {
            record
                .carried
                .as_ref()
                .and_then(|c| c.event_source_arn.clone())
        });
        let source = match arn {
            Some(cluster_arn) => Source::Msk { cluster_arn },
            None => Source::SelfManaged,
        };
        let mut handled = 0;
        for (n, chunk) in records.chunks(self.options.chunk_records).enumerate() {
            let event = encode_decoded_event(&source, brokers, chunk);
            let invocation = InvocationInfo::new(
                format!("redrive-{message_id}-{}-{}-{n}", out.topic, out.partition),
                self.config.function_name.clone(),
                Deadline::after(self.options.invocation_timeout, self.config.safety_margin),
            );
            let result = consumer.invoke(&event, &invocation).await;
            let counts = result.report.counts();
            out.processed += counts.processed as u64;
            out.duplicates += counts.duplicates as u64;
            out.dead_lettered += counts.dead_lettered as u64;
            handled += chunk.len();
            if let Err(error) = &result.result
                && result.batch.is_none()
            {
                out.error = Some(format!("the consumer rejected the rebuilt event: {error}"));
            }
            if counts.unfinished > 0 || out.error.is_some() {
                let reason = result
                    .report
                    .partitions
                    .iter()
                    .flat_map(|p| &p.outcomes)
                    .find_map(|(offset, outcome)| match outcome {
                        RecordOutcome::Unfinished(reason) => Some(format!(
                            "offset {}: {reason}",
                            offset.map_or("?".into(), |o| o.to_string())
                        )),
                        _ => None,
                    });
                out.unfinished = counts.unfinished as u64 + (records.len() - handled) as u64;
                if out.error.is_none() {
                    out.error = Some(format!(
                        "the consumer left {} record(s) unfinished{}",
                        out.unfinished,
                        reason
                            .map(|r| format!(", first at {r}"))
                            .unwrap_or_default()
                    ));
                }
                return;
            }
        }
    }

    async fn copy_to_dead_letters(
        &self,
        record: &OnFailureRecord,
        output: &str,
        records: &[DecodedRecord],
        out: &mut RangeReport,
    ) {
        let sink = match self.dead_letter_sink(output) {
            Ok(sink) => sink,
            Err(error) => {
                out.unfinished = records.len() as u64;
                out.error = Some(error);
                return;
            }
        };
        let failure = Failure {
            kind: PoisonKind::Rejected,
            message: format!("redriven from the on-failure queue: {}", record.condition),
            attempts: record
                .approximate_invoke_count
                .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
        };
        // Provenance names the invocation that gave up, not this tool.
        let invocation = InvocationInfo::new(
            record.request_id.clone(),
            record.function_name().to_owned(),
            Deadline::after(self.options.invocation_timeout, Duration::ZERO),
        );
        let timeout = self.config.processor.publish_timeout;
        // Sent in order, up to 256 awaiting their acknowledgement at once.
        let results: Vec<Result<(), String>> = futures::stream::iter(records)
            .map(|r| {
                let message = dead_letter_message(
                    r,
                    &failure,
                    &invocation,
                    self.config.processor.dead_letter_topic_for(r.topic()),
                    now_ms(),
                );
                let sink = sink.clone();
                async move {
                    sink.publish(message, timeout)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            })
            .buffered(256)
            .collect()
            .await;
        out.copied = results.iter().filter(|r| r.is_ok()).count() as u64;
        out.unfinished = records.len() as u64 - out.copied;
        if let Some(Err(first)) = results.iter().find(|r| r.is_err()) {
            out.error = Some(format!(
                "{} record(s) not copied to the dead-letter topic: {first}",
                out.unfinished
            ));
        }
    }
}

/// Offsets of `range` that the payload holds no record for (compaction, transaction markers).
fn carried_gaps(range: &OffsetRange, records: &[DecodedRecord]) -> u64 {
    let held = records.iter().filter(|r| r.offset().is_some()).count() as u64;
    range.offset_count().saturating_sub(held)
}
