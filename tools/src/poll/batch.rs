//! Cutting the consumed stream into batches as the ESM does: at most `BatchSize` records, at most
//! the batching window after the first record, and never an event over the 6 MB payload limit.

use std::time::Duration;

use kafka_esm::record::KafkaRecord;

/// Lambda's limit on a synchronous invocation's request payload: 6 MB.
pub const PAYLOAD_LIMIT_BYTES: usize = 6 * 1024 * 1024;

/// The ESM's `BatchSize` maximum.
pub const MAX_BATCH_SIZE: usize = 10_000;

/// Bytes of the event around its records (`eventSource`, `eventSourceArn`, `bootstrapServers`,
/// braces), with room to spare: the bootstrap string and the ARN are added by [`BatchLimits`].
const EVENT_OVERHEAD: usize = 128;

/// When a batch is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// `BatchSize`: 1..=10,000 (default 100).
    pub max_records: usize,
    /// `MaximumBatchingWindowInSeconds`: how long to wait for more records after the first (default
    /// 500 ms for Kafka).
    pub window: Duration,
    /// The largest event, in bytes (default and maximum: 6 MB).
    pub max_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_records: 100,
            window: Duration::from_millis(500),
            max_bytes: PAYLOAD_LIMIT_BYTES,
        }
    }
}

/// Why a batch was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// It holds `BatchSize` records.
    Size,
    /// One more record would make the event larger than the payload limit.
    Payload,
    /// The batching window ended.
    Window,
}

/// A batch being filled.
#[derive(Debug)]
pub struct BatchBuilder {
    limits: BatchLimits,
    fixed_bytes: usize,
    records: Vec<KafkaRecord>,
    bytes: usize,
    /// A record that did not fit: it opens the next batch.
    carried: Option<KafkaRecord>,
}

impl BatchBuilder {
    /// A builder for events that name `bootstrap_servers` (and `event_source_arn`, for MSK).
    pub fn new(
        limits: BatchLimits,
        bootstrap_servers: &str,
        event_source_arn: Option<&str>,
    ) -> Self {
        Self {
            limits,
            fixed_bytes: EVENT_OVERHEAD
                + bootstrap_servers.len()
                + event_source_arn.map_or(0, |arn| arn.len() + 20),
            records: Vec::new(),
            bytes: 0,
            carried: None,
        }
    }

    /// True when no record waits in the batch.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.carried.is_none()
    }

    /// Records in the batch so far.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Adds `record`; `Some(cut)` when the batch must now be sent. A record that would overflow the
    /// payload limit is kept for the next batch (a record too large on its own is still added, alone,
    /// so that the caller can report it as `MaximumPayloadSizeExceeded`).
    pub fn push(&mut self, record: KafkaRecord) -> Option<Cut> {
        let size = encoded_size_bound(&record);
        if !self.records.is_empty() && self.fixed_bytes + self.bytes + size > self.limits.max_bytes
        {
            self.carried = Some(record);
            return Some(Cut::Payload);
        }
        self.bytes += size;
        self.records.push(record);
        if self.records.len() >= self.limits.max_records.clamp(1, MAX_BATCH_SIZE) {
            return Some(Cut::Size);
        }
        if self.fixed_bytes + self.bytes > self.limits.max_bytes {
            return Some(Cut::Payload);
        }
        None
    }

    /// True when the batch must be sent without waiting for more records (after [`Self::take`] put
    /// a carried record that fills it alone).
    pub fn is_full(&self) -> bool {
        self.records.len() >= self.limits.max_records.clamp(1, MAX_BATCH_SIZE)
            || self.fixed_bytes + self.bytes > self.limits.max_bytes
    }

    /// Takes the batch, leaving the builder with the carried record (if any) as its first.
    pub fn take(&mut self) -> Vec<KafkaRecord> {
        let batch = std::mem::take(&mut self.records);
        self.bytes = 0;
        if let Some(record) = self.carried.take() {
            // Cannot cut: the builder is empty.
            let _ = self.push(record);
        }
        batch
    }

    /// True when `records` alone would make an event over the payload limit.
    pub fn oversized(&self, records: &[KafkaRecord]) -> bool {
        self.fixed_bytes + records.iter().map(encoded_size_bound).sum::<usize>()
            > self.limits.max_bytes
    }
}

/// An upper bound of the bytes `record` takes in the event JSON (its `"<topic>-<partition>"` key
/// counted in full, as if it were alone in its partition).
pub fn encoded_size_bound(record: &KafkaRecord) -> usize {
    let base64 =
        |bytes: &Option<Vec<u8>>| bytes.as_ref().map_or(0, |b| b.len().div_ceil(3) * 4 + 10);
    // Fixed names and punctuation, the topic twice (record and map key), three 20-digit numbers,
    // the timestamp type and both schema-less fields.
    let fixed = 160 + 2 * record.topic.len() + 3 * 20;
    let headers: usize = record
        .headers
        .iter()
        .map(|h| h.name.len() + 10 + h.value.as_ref().map_or(4, |v| v.len() * 5))
        .sum();
    let schema = |s: &Option<kafka_esm::record::SchemaMetadata>| {
        s.as_ref().map_or(0, |s| {
            64 + s.schema_id.as_ref().map_or(0, String::len)
                + s.data_format.as_ref().map_or(0, String::len)
        })
    };
    let schemas = schema(&record.key_schema) + schema(&record.value_schema);
    fixed + base64(&record.key) + base64(&record.value) + headers + schemas
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_esm::encode::{Source, encode_event};
    use kafka_esm::record::Header;

    fn record(offset: i64, value_len: usize) -> KafkaRecord {
        let mut r = KafkaRecord::new("telemetry.metrics", 2, offset);
        r.timestamp = Some(1_700_000_000_000);
        r.timestamp_type = Some(kafka_esm::record::TimestampType::CreateTime);
        r.key = Some(b"device-1".to_vec());
        r.value = Some(vec![b'x'; value_len]);
        r.headers = vec![
            Header::new("trace", vec![0xff, 0x80, 0x7f]),
            Header {
                name: "null".into(),
                value: None,
            },
        ];
        r
    }

    #[test]
    fn the_bound_is_never_below_the_encoded_size() {
        for len in [0, 1, 2, 3, 100, 4096] {
            let r = record(i64::MAX, len);
            let json = encode_event(&Source::SelfManaged, "", std::slice::from_ref(&r));
            assert!(
                encoded_size_bound(&r) + EVENT_OVERHEAD >= json.len(),
                "value of {len} bytes: bound {} < {}",
                encoded_size_bound(&r) + EVENT_OVERHEAD,
                json.len()
            );
        }
    }

    #[test]
    fn cuts_at_the_batch_size() {
        let mut builder = BatchBuilder::new(
            BatchLimits {
                max_records: 3,
                ..BatchLimits::default()
            },
            "b:9092",
            None,
        );
        assert_eq!(builder.push(record(0, 10)), None);
        assert_eq!(builder.push(record(1, 10)), None);
        assert_eq!(builder.push(record(2, 10)), Some(Cut::Size));
        assert_eq!(builder.take().len(), 3);
        assert!(builder.is_empty());
    }

    #[test]
    fn a_batch_never_encodes_over_the_payload_limit_and_nothing_is_dropped() {
        let limits = BatchLimits {
            max_records: MAX_BATCH_SIZE,
            ..BatchLimits::default()
        };
        let mut builder = BatchBuilder::new(limits, "broker-1:9092,broker-2:9092", None);
        let mut batches = Vec::new();
        for offset in 0..200 {
            if builder.push(record(offset, 100_000)).is_some() {
                batches.push(builder.take());
            }
        }
        batches.push(builder.take());
        let offsets: Vec<i64> = batches.iter().flatten().map(|r| r.offset).collect();
        assert_eq!(
            offsets,
            (0..200).collect::<Vec<_>>(),
            "every record, in order"
        );
        assert!(
            batches.len() >= 4,
            "200 records of 133 KB need at least 5 events"
        );
        for (n, batch) in batches.iter().enumerate() {
            let json = encode_event(&Source::SelfManaged, "broker-1:9092,broker-2:9092", batch);
            assert!(json.len() <= PAYLOAD_LIMIT_BYTES, "{} bytes", json.len());
            // Cut no earlier than needed: one more record of this size would not have fitted
            // (the last batch is the remainder).
            if n + 1 < batches.len() {
                assert!(
                    json.len() + 2 * 133_400 > PAYLOAD_LIMIT_BYTES,
                    "{} bytes",
                    json.len()
                );
            }
        }
    }

    #[test]
    fn a_record_over_the_limit_travels_alone() {
        let mut builder = BatchBuilder::new(BatchLimits::default(), "b:9092", None);
        assert_eq!(builder.push(record(0, 10)), None);
        assert_eq!(builder.push(record(1, 7_000_000)), Some(Cut::Payload));
        assert_eq!(builder.take().len(), 1);
        // The big record now opens the batch, alone and over the limit.
        assert_eq!(builder.len(), 1);
        assert!(builder.is_full());
        let big = builder.take();
        assert!(builder.oversized(&big));
        assert!(builder.is_empty());
    }
}
