//! Reads an offset range of one partition back from Kafka: the payloads the on-failure record does
//! not carry.
//!
//! The reader assigns the partition at an explicit offset (no group membership, nothing committed)
//! and polls until it has the range's last offset or the partition's end. What it cannot return is
//! never skipped silently: offsets below the partition's low watermark (deleted by retention) are
//! reported as [`RangeFetch::missing`]; offsets inside the readable span with no record (compaction,
//! transaction markers) are counted as [`RangeFetch::gaps`]; offsets at or beyond the high watermark,
//! or not reached before the timeout, make the fetch [`RangeFetch::incomplete`].

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::on_failure::OffsetRange;
use kafka_esm::kafka::{KafkaAuth, KafkaClientContext, KafkaSettings, record_from_message};
use kafka_esm::record::KafkaRecord;

/// The group id the reader presents (it never joins the group nor commits).
pub const READER_GROUP_ID: &str = "kafka-esm-redrive";

/// Offsets `first..=last` that retention deleted before they could be read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MissingOffsets {
    /// First missing offset.
    pub first: i64,
    /// Last missing offset, inclusive.
    pub last: i64,
    /// How many.
    pub count: u64,
}

impl MissingOffsets {
    fn new(first: i64, last: i64) -> Self {
        Self {
            first,
            last,
            count: (last - first) as u64 + 1,
        }
    }
}

/// Why part of a range was not read. The on-failure message stays on the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Incomplete {
    /// Offsets at or past the partition's high watermark: not (or no longer) in the log.
    #[error(
        "offsets {first}..={last} are at or past the partition's end (high watermark {high_watermark}): the log was truncated or the range names offsets never written; check the cluster"
    )]
    BeyondEnd {
        /// First offset not readable.
        first: i64,
        /// Last offset of the range.
        last: i64,
        /// The partition's high watermark.
        high_watermark: i64,
    },
    /// The timeout ran out first.
    #[error(
        "read up to offset {next_offset} of {last} in {elapsed_ms} ms, then the fetch timeout ran out{}; the broker may be unreachable: run again later or raise --fetch-timeout-ms",
        last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
    )]
    TimedOut {
        /// The first offset not read.
        next_offset: i64,
        /// The range's last offset.
        last: i64,
        /// Time spent.
        elapsed_ms: u64,
        /// The last error librdkafka reported, if any.
        last_error: Option<String>,
    },
}

/// What one range gave back.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeFetch {
    /// The records read, in offset order, all within the range.
    pub records: Vec<KafkaRecord>,
    /// The partition's low watermark when the read began.
    pub low_watermark: i64,
    /// Its high watermark when the read began.
    pub high_watermark: i64,
    /// Offsets deleted by retention (below the low watermark).
    pub missing: Option<MissingOffsets>,
    /// Offsets of the readable span that hold no record (compaction, transaction markers).
    pub gaps: u64,
    /// What could not be read, when the fetch did not finish.
    pub incomplete: Option<Incomplete>,
}

/// What a dry run learns without reading records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RangePlan {
    /// The partition's low watermark.
    pub low_watermark: i64,
    /// Its high watermark.
    pub high_watermark: i64,
    /// Offsets of the range still in the log (gaps from compaction cannot be known without reading).
    pub available: u64,
    /// Offsets deleted by retention.
    pub missing: Option<MissingOffsets>,
    /// Offsets at or past the high watermark.
    pub beyond_end: u64,
}

/// Reading from Kafka failed before any record could be accounted for.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The client could not be created.
    #[error("cannot create a Kafka consumer for {brokers}: {message}")]
    Client {
        /// The brokers.
        brokers: String,
        /// What failed.
        message: String,
    },
    /// The partition's watermarks could not be read (broker down, unknown topic or partition).
    #[error(
        "cannot read the watermarks of {topic}-{partition} from {brokers}: {message}; is the broker reachable and does the partition exist?"
    )]
    Watermarks {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The brokers.
        brokers: String,
        /// What failed.
        message: String,
    },
    /// The partition could not be assigned.
    #[error("cannot assign {topic}-{partition} at offset {offset}: {message}")]
    Assign {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset.
        offset: i64,
        /// What failed.
        message: String,
    },
}

/// Reads offset ranges with one consumer (reassigned for each range). Blocking: call it from
/// `tokio::task::spawn_blocking`.
pub struct RangeReader {
    consumer: BaseConsumer<KafkaClientContext>,
    brokers: String,
    timeout: Duration,
}

impl std::fmt::Debug for RangeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeReader")
            .field("brokers", &self.brokers)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RangeReader {
    /// A reader of the cluster `settings` name, giving each range at most `timeout`.
    pub fn new(settings: &KafkaSettings, timeout: Duration) -> Result<Self, FetchError> {
        let client_error = |message: String| FetchError::Client {
            brokers: settings.bootstrap_servers.clone(),
            message,
        };
        let mut config = settings
            .consumer_config(READER_GROUP_ID)
            .map_err(|e| client_error(e.to_string()))?;
        // An offset deleted between the watermark read and the fetch must surface as an error,
        // never as a silent jump to the end of the partition.
        config
            .set("auto.offset.reset", "error")
            .set("enable.auto.offset.store", "false");
        let consumer: BaseConsumer<KafkaClientContext> = config
            .create_with_context(settings.context())
            .map_err(|e| client_error(e.to_string()))?;
        if matches!(settings.auth, KafkaAuth::MskIam { .. }) {
            // A consumer serves the OAUTHBEARER token refresh only from `poll`: serve the first
            // one now, or the first watermark request would wait for a token until it times out.
            let _ = consumer.poll(Duration::from_millis(200));
        }
        Ok(Self {
            consumer,
            brokers: settings.bootstrap_servers.clone(),
            timeout,
        })
    }

    /// The brokers this reader reads from.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    fn watermarks(&self, range: &OffsetRange, timeout: Duration) -> Result<(i64, i64), FetchError> {
        // Serves a pending token refresh (MSK IAM) after an idle time. A message this poll might
        // return is not lost: every read assigns the partition at the next offset it still needs.
        let _ = self.consumer.poll(Duration::ZERO);
        self.consumer
            .fetch_watermarks(
                &range.topic,
                range.partition,
                timeout.max(Duration::from_millis(100)),
            )
            .map_err(|e| FetchError::Watermarks {
                topic: range.topic.clone(),
                partition: range.partition,
                brokers: self.brokers.clone(),
                message: e.to_string(),
            })
    }

    /// What a fetch of `range` would find, from the watermarks alone.
    pub fn plan(&self, range: &OffsetRange) -> Result<RangePlan, FetchError> {
        let (low, high) = self.watermarks(range, self.timeout)?;
        let (first, last) = (range.first_offset, range.last_offset);
        let missing = (low > first).then(|| MissingOffsets::new(first, last.min(low - 1)));
        let start = first.max(low);
        let end = last.min(high - 1);
        Ok(RangePlan {
            low_watermark: low,
            high_watermark: high,
            available: if end >= start {
                (end - start) as u64 + 1
            } else {
                0
            },
            missing,
            beyond_end: if high <= last {
                (last - high.max(first)) as u64 + 1
            } else {
                0
            },
        })
    }

    /// Reads `range` back.
    pub fn fetch(&self, range: &OffsetRange) -> Result<RangeFetch, FetchError> {
        let started = Instant::now();
        let remaining = || self.timeout.saturating_sub(started.elapsed());
        let (first, last) = (range.first_offset, range.last_offset);
        let (mut low, high) = self.watermarks(range, remaining())?;
        let mut records: Vec<KafkaRecord> =
            Vec::with_capacity(range.offset_count().min(100_000) as usize);
        let mut last_error = None;
        let mut restarts = 0;
        'read: loop {
            let start = first.max(low);
            let end = last.min(high - 1); // the last offset that can be read
            let missing = (low > first).then(|| MissingOffsets::new(first, last.min(low - 1)));
            let beyond_end = (high <= last).then(|| Incomplete::BeyondEnd {
                first: high.max(start),
                last,
                high_watermark: high,
            });
            records.retain(|r| r.offset >= start);
            let finish = |records: Vec<KafkaRecord>, reached: bool, last_error: Option<String>| {
                let read_to = if reached {
                    end
                } else {
                    records.last().map_or(start - 1, |r| r.offset)
                };
                let incomplete = if !reached {
                    Some(Incomplete::TimedOut {
                        next_offset: read_to + 1,
                        last,
                        elapsed_ms: started.elapsed().as_millis() as u64,
                        last_error,
                    })
                } else {
                    beyond_end.clone()
                };
                let span = if read_to >= start {
                    (read_to - start) as u64 + 1
                } else {
                    0
                };
                RangeFetch {
                    gaps: span.saturating_sub(records.len() as u64),
                    records,
                    low_watermark: low,
                    high_watermark: high,
                    missing,
                    incomplete,
                }
            };
            if end < start {
                let _ = self.consumer.unassign();
                return Ok(finish(records, true, None));
            }
            let resume = records.last().map_or(start, |r| r.offset + 1);
            if resume > end {
                let _ = self.consumer.unassign();
                return Ok(finish(records, true, None));
            }
            let mut assignment = TopicPartitionList::new();
            assignment
                .add_partition_offset(&range.topic, range.partition, Offset::Offset(resume))
                .and_then(|()| self.consumer.assign(&assignment))
                .map_err(|e| FetchError::Assign {
                    topic: range.topic.clone(),
                    partition: range.partition,
                    offset: resume,
                    message: e.to_string(),
                })?;
            loop {
                let wait = remaining();
                if wait.is_zero() {
                    let _ = self.consumer.unassign();
                    return Ok(finish(records, false, last_error));
                }
                match self.consumer.poll(wait.min(Duration::from_millis(200))) {
                    None => {}
                    Some(Ok(message)) => {
                        if message.topic() != range.topic || message.partition() != range.partition
                        {
                            continue;
                        }
                        let offset = message.offset();
                        let next = records.last().map_or(resume, |r| r.offset + 1);
                        if offset < next {
                            continue; // already read (a fetch from before a restart)
                        }
                        if offset > end {
                            let _ = self.consumer.unassign();
                            return Ok(finish(records, true, None));
                        }
                        records.push(record_from_message(&message));
                        if offset == end {
                            let _ = self.consumer.unassign();
                            return Ok(finish(records, true, None));
                        }
                    }
                    Some(Err(KafkaError::PartitionEOF(partition)))
                        if partition == range.partition =>
                    {
                        // The end of the log (or of committed data): whatever is below the position
                        // and was not returned is a gap; above it, not readable yet.
                        let position = self
                            .consumer
                            .position()
                            .ok()
                            .and_then(|tpl| {
                                tpl.find_partition(&range.topic, range.partition)
                                    .and_then(|p| p.offset().to_raw())
                            })
                            .unwrap_or(-1);
                        if position > end {
                            let _ = self.consumer.unassign();
                            return Ok(finish(records, true, None));
                        }
                        last_error = Some(format!(
                            "the partition ends at offset {position} (uncommitted transaction or truncated log)"
                        ));
                    }
                    Some(Err(error)) => {
                        let code = error.rdkafka_error_code();
                        if matches!(
                            code,
                            Some(
                                RDKafkaErrorCode::OffsetOutOfRange
                                    | RDKafkaErrorCode::AutoOffsetReset
                            )
                        ) && restarts < 5
                        {
                            // Retention moved the low watermark while reading: read it again and
                            // report what went below it.
                            restarts += 1;
                            let (new_low, _) = self.watermarks(range, remaining())?;
                            low = new_low.max(low);
                            continue 'read;
                        }
                        last_error = Some(error.to_string());
                    }
                }
            }
        }
    }
}
