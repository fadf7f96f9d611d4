//! The record the event source mapping writes to its on-failure destination when it gives up on a
//! batch (`../shared/esm-facts.md` §2, from the AWS Lambda developer guide pages "Kafka on-failure
//! destinations" and "Using a Kafka topic as an on-failure destination").
//!
//! Variants accepted:
//! - **SQS / SNS destination**: metadata only. `KafkaBatchInfo.recordsInfo` keyed
//!   `"<topic>-<partition>"`, offsets as **strings**, condition `RetryAttemptsExhausted`,
//!   `MaximumPayloadSizeExceeded` (with `responseContext` null) or `RecordAgeExceeded`. The records
//!   must be read back from Kafka.
//! - **S3 destination**: the same metadata plus `payload`, the whole invoked event as an escaped JSON
//!   **string**. The records are taken from it.
//! - **Kafka-topic destination**: one message per failed record. `KafkaBatchInfo.recordInfo` is
//!   `{offset, timestamp}` with **no topic or partition**; `payload` is an **object**, the ESM event
//!   holding that record. Topic and partition come from the payload.
//! - an SNS notification delivered to SQS without raw message delivery: the record is the
//!   envelope's `Message` string.
//!
//! Schema-registry failures (`SCHEMA_NOT_FOUND`, `DESERIALIZATION_ERROR`) arrive with their own
//! conditions: an unknown condition is kept verbatim. Offsets are read from strings or numbers;
//! unknown fields are ignored.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use kafka_esm::event::{Batch, decode_event};
use kafka_esm::record::DecodedRecord;

/// Why the ESM gave up on the batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum FailureCondition {
    /// `MaximumRetryAttempts` were used up (SQS/SNS destinations).
    RetryAttemptsExhausted,
    /// The batch was too large to invoke the function with.
    MaximumPayloadSizeExceeded,
    /// Retries were used up (the Kafka-topic destination's spelling).
    RetriesExhausted,
    /// A condition this tool does not know, kept verbatim.
    Other(String),
}

impl FailureCondition {
    /// Reads the ESM's spelling.
    pub fn parse(text: &str) -> Self {
        match text {
            "RetryAttemptsExhausted" => Self::RetryAttemptsExhausted,
            "MaximumPayloadSizeExceeded" => Self::MaximumPayloadSizeExceeded,
            "RetriesExhausted" => Self::RetriesExhausted,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The ESM's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::RetryAttemptsExhausted => "RetryAttemptsExhausted",
            Self::MaximumPayloadSizeExceeded => "MaximumPayloadSizeExceeded",
            Self::RetriesExhausted => "RetriesExhausted",
            Self::Other(other) => other,
        }
    }
}

impl fmt::Display for FailureCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<FailureCondition> for String {
    fn from(condition: FailureCondition) -> Self {
        condition.as_str().to_owned()
    }
}

/// The function's answer to the last attempt (absent when it was never invoked, e.g.
/// `MaximumPayloadSizeExceeded`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResponseContext {
    /// HTTP status of the invocation.
    pub status_code: Option<u64>,
    /// The version that ran.
    pub executed_version: Option<String>,
    /// `Handled` / `Unhandled`, when the function failed.
    pub function_error: Option<String>,
}

/// Offsets `first..=last` of one partition that the ESM could not process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OffsetRange {
    /// Topic (may contain `-` and `.`).
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset of the failed batch in this partition.
    pub first_offset: i64,
    /// Last offset, inclusive.
    pub last_offset: i64,
    /// `firstRecordTimestamp`, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_timestamp: Option<String>,
    /// `lastRecordTimestamp`, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_timestamp: Option<String>,
}

impl OffsetRange {
    /// How many offsets the range covers (0 only for the records of a payload that have none).
    pub fn offset_count(&self) -> u64 {
        let count = i128::from(self.last_offset) - i128::from(self.first_offset) + 1;
        u64::try_from(count.max(0)).unwrap_or(u64::MAX)
    }

    /// `"<topic>-<partition>"`.
    pub fn key(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
}

/// How an on-failure record carries its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PayloadForm {
    /// `payload` is the invoked event as an escaped JSON string (S3 destination).
    EventString,
    /// `payload` is an event object holding the one failed record (Kafka-topic destination).
    EventObject,
}

/// The records an S3 or Kafka-topic on-failure record carries in its `payload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedRecords {
    /// How they were carried.
    pub form: PayloadForm,
    /// The payload event's `eventSourceArn` (MSK).
    pub event_source_arn: Option<String>,
    /// The payload event's `bootstrapServers`.
    pub bootstrap_servers: Option<String>,
    /// The records, in the payload's order; a record that cannot be decoded is kept as such.
    pub records: Vec<DecodedRecord>,
}

impl CarriedRecords {
    fn from_batch(form: PayloadForm, batch: Batch) -> Self {
        Self {
            form,
            event_source_arn: batch.event_source_arn,
            bootstrap_servers: batch.bootstrap_servers,
            records: batch
                .partitions
                .into_iter()
                .flat_map(|p| p.records)
                .collect(),
        }
    }

    /// One range per partition of the carried records, from their lowest to their highest offset.
    fn ranges(&self) -> Vec<OffsetRange> {
        let mut ranges: Vec<OffsetRange> = Vec::new();
        for record in &self.records {
            let position = ranges
                .iter()
                .position(|r| r.partition == record.partition() && r.topic == record.topic());
            let range = match position {
                Some(n) => &mut ranges[n],
                None => {
                    ranges.push(OffsetRange {
                        topic: record.topic().to_owned(),
                        partition: record.partition(),
                        first_offset: i64::MAX,
                        last_offset: i64::MIN,
                        first_timestamp: None,
                        last_timestamp: None,
                    });
                    ranges.last_mut().expect("just pushed")
                }
            };
            if let Some(offset) = record.offset() {
                range.first_offset = range.first_offset.min(offset);
                range.last_offset = range.last_offset.max(offset);
            }
        }
        // A partition whose records all lack an offset: an empty range that still carries them.
        for range in &mut ranges {
            if range.first_offset > range.last_offset {
                (range.first_offset, range.last_offset) = (0, -1);
            }
        }
        ranges
    }

    /// The carried records of `range`'s partition within its offsets (an undecodable record without
    /// an offset is included: it can only be identified by its partition).
    pub fn in_range<'a>(
        &'a self,
        range: &'a OffsetRange,
    ) -> impl Iterator<Item = &'a DecodedRecord> + 'a {
        self.records.iter().filter(move |r| {
            r.partition() == range.partition
                && r.topic() == range.topic
                && r.offset()
                    .is_none_or(|o| (range.first_offset..=range.last_offset).contains(&o))
        })
    }
}

/// One on-failure record, typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OnFailureRecord {
    /// `requestContext.requestId`: the invocation that failed last.
    pub request_id: String,
    /// `requestContext.functionArn`.
    pub function_arn: String,
    /// `requestContext.condition`.
    pub condition: FailureCondition,
    /// `requestContext.approximateInvokeCount`.
    pub approximate_invoke_count: Option<u64>,
    /// `responseContext`, when not null.
    pub response: Option<ResponseContext>,
    /// `timestamp`: when the ESM gave up.
    pub timestamp: Option<String>,
    /// `KafkaBatchInfo.bootstrapServers`.
    pub bootstrap_servers: Option<String>,
    /// `KafkaBatchInfo.eventSourceArn` (MSK; absent for self-managed clusters).
    pub event_source_arn: Option<String>,
    /// `KafkaBatchInfo.batchSize`.
    pub batch_size: Option<u64>,
    /// `KafkaBatchInfo.payloadSize`, bytes.
    pub payload_size: Option<u64>,
    /// The failed offsets, one range per partition, sorted by topic and partition.
    pub ranges: Vec<OffsetRange>,
    /// `payload` (S3 and Kafka-topic destinations): the records themselves.
    #[serde(skip)]
    pub carried: Option<CarriedRecords>,
}

impl OnFailureRecord {
    /// Parses an on-failure record (or an SNS notification carrying one).
    pub fn parse(text: &str) -> Result<Self, MalformedRecord> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| MalformedRecord::NotJson(e.to_string()))?;
        Self::from_value(&value)
    }

    /// As [`Self::parse`], from parsed JSON.
    pub fn from_value(value: &Value) -> Result<Self, MalformedRecord> {
        let root = value
            .as_object()
            .ok_or_else(|| MalformedRecord::WrongType {
                field: "(the message)".into(),
                expected: "a JSON object",
                found: kind(value),
            })?;
        // An SNS notification delivered to SQS without raw message delivery.
        if root.get("Type").and_then(Value::as_str) == Some("Notification")
            && let Some(message) = root.get("Message").and_then(Value::as_str)
            && !root.contains_key("KafkaBatchInfo")
        {
            let inner: Value = serde_json::from_str(message).map_err(|e| {
                MalformedRecord::NotJson(format!("the SNS notification's Message: {e}"))
            })?;
            return Self::from_value(&inner);
        }
        let batch = match root.get("KafkaBatchInfo") {
            Some(Value::Object(batch)) => batch,
            Some(other) => {
                return Err(MalformedRecord::WrongType {
                    field: "KafkaBatchInfo".into(),
                    expected: "an object",
                    found: kind(other),
                });
            }
            None => return Err(MalformedRecord::NotKafka),
        };
        let context = object(root, "requestContext", "requestContext")?;
        let request_id = string(context, "requestId", "requestContext.requestId")?;
        let function_arn = string(context, "functionArn", "requestContext.functionArn")?;
        let condition =
            FailureCondition::parse(&string(context, "condition", "requestContext.condition")?);
        let approximate_invoke_count = optional_count(
            context,
            "approximateInvokeCount",
            "requestContext.approximateInvokeCount",
        )?;
        let response = match root.get("responseContext") {
            None | Some(Value::Null) => None,
            Some(Value::Object(r)) => Some(ResponseContext {
                status_code: optional_count(r, "statusCode", "responseContext.statusCode")?,
                executed_version: optional_string(
                    r,
                    "executedVersion",
                    "responseContext.executedVersion",
                )?,
                function_error: optional_string(
                    r,
                    "functionError",
                    "responseContext.functionError",
                )?,
            }),
            Some(other) => {
                return Err(MalformedRecord::WrongType {
                    field: "responseContext".into(),
                    expected: "an object or null",
                    found: kind(other),
                });
            }
        };
        let carried = carried_records(root.get("payload"))?;
        let mut ranges = Vec::new();
        match (&carried, batch.get("recordsInfo"), batch.get("recordInfo")) {
            // The records travel with the metadata (S3, Kafka topic): they are the authority. The
            // guide's own examples put Kinesis-style sequence numbers in the metadata's offsets
            // (and a Kafka-topic record's `recordInfo` names no topic or partition at all).
            (Some(carried), _, _) => ranges = carried.ranges(),
            (None, Some(info), _) => {
                let info = info.as_object().ok_or_else(|| MalformedRecord::WrongType {
                    field: "KafkaBatchInfo.recordsInfo".into(),
                    expected: "an object",
                    found: kind(info),
                })?;
                for (key, entry) in info {
                    let field = format!("KafkaBatchInfo.recordsInfo[{key:?}]");
                    let entry = entry
                        .as_object()
                        .ok_or_else(|| MalformedRecord::WrongType {
                            field: field.clone(),
                            expected: "an object",
                            found: kind(entry),
                        })?;
                    let (topic, partition) = split_topic_partition(key)?;
                    ranges.push(range(entry, &field, topic, partition)?);
                }
            }
            (None, None, Some(_)) => {
                return Err(MalformedRecord::Missing {
                    field: "payload (a Kafka-topic destination's record names no topic or partition in `recordInfo`: the record is in its payload)".into(),
                });
            }
            (None, None, None) => {
                return Err(MalformedRecord::Missing {
                    field: "KafkaBatchInfo.recordsInfo".into(),
                });
            }
        }
        if ranges.is_empty() {
            return Err(MalformedRecord::NoRanges);
        }
        ranges.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(Self {
            request_id,
            function_arn,
            condition,
            approximate_invoke_count,
            response,
            timestamp: optional_string(root, "timestamp", "timestamp")?,
            bootstrap_servers: optional_string(
                batch,
                "bootstrapServers",
                "KafkaBatchInfo.bootstrapServers",
            )?
            .filter(|s| !s.trim().is_empty()),
            event_source_arn: optional_string(
                batch,
                "eventSourceArn",
                "KafkaBatchInfo.eventSourceArn",
            )?,
            batch_size: optional_count(batch, "batchSize", "KafkaBatchInfo.batchSize")?,
            payload_size: optional_count(batch, "payloadSize", "KafkaBatchInfo.payloadSize")?,
            ranges,
            carried,
        })
    }

    /// The function's name, from its ARN (`arn:aws:lambda:region:account:function:NAME[:qualifier]`).
    pub fn function_name(&self) -> &str {
        let mut parts = self.function_arn.split(':');
        match (parts.nth(5), parts.next()) {
            (Some("function"), Some(name)) if !name.is_empty() => name,
            _ => &self.function_arn,
        }
    }

    /// Offsets named by every range.
    pub fn record_count(&self) -> u64 {
        self.ranges
            .iter()
            .map(OffsetRange::offset_count)
            .fold(0, u64::saturating_add)
    }
}

/// What is wrong with an on-failure message. The message is left on the queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedRecord {
    /// Not JSON at all.
    #[error("the message is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not what a Kafka ESM writes.
    #[error(
        "the message has no `KafkaBatchInfo`: it is not the on-failure record of a Kafka event source mapping"
    )]
    NotKafka,
    /// A required field is absent.
    #[error("`{field}` is missing")]
    Missing {
        /// Its path.
        field: String,
    },
    /// A field has the wrong JSON type.
    #[error("`{field}` must be {expected}, found {found}")]
    WrongType {
        /// Its path.
        field: String,
        /// What it must be.
        expected: &'static str,
        /// What it is.
        found: String,
    },
    /// A `recordsInfo` key is not `"<topic>-<partition>"`.
    #[error("{key:?} is not a \"<topic>-<partition>\" key: {reason}")]
    BadTopicPartition {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An offset is not a whole number >= 0.
    #[error("`{field}` = {value} is not an offset (a whole number from 0)")]
    BadOffset {
        /// Its path.
        field: String,
        /// The value as written.
        value: String,
    },
    /// The first offset is after the last.
    #[error("`{field}`: firstRecordOffset {first} is after lastRecordOffset {last}")]
    InvertedRange {
        /// The entry's path.
        field: String,
        /// First offset.
        first: i64,
        /// Last offset.
        last: i64,
    },
    /// The record names no partition at all.
    #[error("`KafkaBatchInfo` names no records: its records info is empty")]
    NoRanges,
    /// `payload` is not an ESM event.
    #[error("`payload` is not the invoked ESM event: {0}")]
    BadPayload(String),
}

/// The records of `payload`: an escaped JSON string (S3) or an event object (Kafka topic).
fn carried_records(payload: Option<&Value>) -> Result<Option<CarriedRecords>, MalformedRecord> {
    let (form, batch) = match payload {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(event)) => (PayloadForm::EventString, decode_event(event)),
        Some(event @ Value::Object(_)) => {
            (PayloadForm::EventObject, decode_event(&event.to_string()))
        }
        Some(other) => {
            return Err(MalformedRecord::WrongType {
                field: "payload".into(),
                expected: "the invoked event (a JSON string or object)",
                found: kind(other),
            });
        }
    };
    let batch = batch.map_err(|e| MalformedRecord::BadPayload(e.to_string()))?;
    Ok(Some(CarriedRecords::from_batch(form, batch)))
}

/// Splits `"<topic>-<partition>"` at the **last** `-` (topic names may contain `-`).
pub fn split_topic_partition(key: &str) -> Result<(String, i32), MalformedRecord> {
    let bad = |reason| MalformedRecord::BadTopicPartition {
        key: key.to_owned(),
        reason,
    };
    let (topic, partition) = key.rsplit_once('-').ok_or_else(|| bad("it has no `-`"))?;
    if topic.is_empty() {
        return Err(bad("the topic is empty"));
    }
    if partition.is_empty() || !partition.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("the part after the last `-` is not a partition number"));
    }
    let partition = partition
        .parse::<i32>()
        .map_err(|_| bad("the partition number is too large"))?;
    Ok((topic.to_owned(), partition))
}

fn range(
    entry: &Map<String, Value>,
    field: &str,
    topic: String,
    partition: i32,
) -> Result<OffsetRange, MalformedRecord> {
    let first = offset(entry, "firstRecordOffset", field)?;
    let last = offset(entry, "lastRecordOffset", field)?;
    if first > last {
        return Err(MalformedRecord::InvertedRange {
            field: field.to_owned(),
            first,
            last,
        });
    }
    Ok(OffsetRange {
        topic,
        partition,
        first_offset: first,
        last_offset: last,
        first_timestamp: optional_string(
            entry,
            "firstRecordTimestamp",
            &format!("{field}.firstRecordTimestamp"),
        )?,
        last_timestamp: optional_string(
            entry,
            "lastRecordTimestamp",
            &format!("{field}.lastRecordTimestamp"),
        )?,
    })
}

fn offset(entry: &Map<String, Value>, name: &str, field: &str) -> Result<i64, MalformedRecord> {
    let path = format!("{field}.{name}");
    let value = entry.get(name).ok_or_else(|| MalformedRecord::Missing {
        field: path.clone(),
    })?;
    let parsed = match value {
        Value::String(s) => s.trim().parse::<i64>().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    };
    parsed
        .filter(|o| *o >= 0)
        .ok_or_else(|| MalformedRecord::BadOffset {
            field: path,
            value: value.to_string(),
        })
}

fn object<'a>(
    map: &'a Map<String, Value>,
    name: &str,
    field: &str,
) -> Result<&'a Map<String, Value>, MalformedRecord> {
    match map.get(name) {
        Some(Value::Object(o)) => Ok(o),
        None | Some(Value::Null) => Err(MalformedRecord::Missing {
            field: field.into(),
        }),
        Some(other) => Err(MalformedRecord::WrongType {
            field: field.into(),
            expected: "an object",
            found: kind(other),
        }),
    }
}

fn string(map: &Map<String, Value>, name: &str, field: &str) -> Result<String, MalformedRecord> {
    optional_string(map, name, field)?.ok_or_else(|| MalformedRecord::Missing {
        field: field.into(),
    })
}

fn optional_string(
    map: &Map<String, Value>,
    name: &str,
    field: &str,
) -> Result<Option<String>, MalformedRecord> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(MalformedRecord::WrongType {
            field: field.into(),
            expected: "a string",
            found: kind(other),
        }),
    }
}

fn optional_count(
    map: &Map<String, Value>,
    name: &str,
    field: &str,
) -> Result<Option<u64>, MalformedRecord> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(Value::String(s)) if s.parse::<u64>().is_ok() => Ok(s.parse().ok()),
        Some(other) => Err(MalformedRecord::WrongType {
            field: field.into(),
            expected: "a whole number",
            found: kind(other),
        }),
    }
}

fn kind(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.len() <= 40 => format!("the string {s:?}"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> String {
        let path = format!("{}/../events/on-failure/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn the_documented_sqs_record_of_an_msk_mapping() {
        let r = OnFailureRecord::parse(&sample("msk-retry-attempts-exhausted.json")).unwrap();
        assert_eq!(r.request_id, "a3b2c1d0-0f1e-4d3c-8b7a-6f5e4d3c2b1a");
        assert_eq!(
            r.function_arn,
            "arn:aws:lambda:eu-west-1:123456789012:function:telemetry-consumer"
        );
        assert_eq!(r.function_name(), "telemetry-consumer");
        assert_eq!(r.condition, FailureCondition::RetryAttemptsExhausted);
        assert_eq!(r.approximate_invoke_count, Some(3));
        assert_eq!(
            r.response,
            Some(ResponseContext {
                status_code: Some(200),
                executed_version: Some("$LATEST".into()),
                function_error: Some("Unhandled".into()),
            })
        );
        assert_eq!(r.timestamp.as_deref(), Some("2026-11-14T00:38:06.021Z"));
        assert_eq!(
            r.bootstrap_servers.as_deref(),
            Some(
                "b-1.telemetry.abc123.c2.kafka.eu-west-1.amazonaws.com:9098,b-2.telemetry.abc123.c2.kafka.eu-west-1.amazonaws.com:9098"
            )
        );
        assert!(
            r.event_source_arn
                .as_deref()
                .unwrap()
                .starts_with("arn:aws:kafka:")
        );
        assert_eq!(r.batch_size, Some(500));
        assert_eq!(r.payload_size, Some(2_039_086));
        // Sorted by topic then partition; topics with `-` and `.` split at the last `-`.
        assert_eq!(
            r.ranges
                .iter()
                .map(|g| (g.topic.as_str(), g.partition, g.first_offset, g.last_offset))
                .collect::<Vec<_>>(),
            [
                ("telemetry.metrics-eu", 0, 49, 298),
                ("telemetry.metrics-eu", 2, 1_000, 1_249),
            ]
        );
        assert_eq!(
            r.ranges[0].first_timestamp.as_deref(),
            Some("2026-11-14T00:38:04.835Z")
        );
        assert_eq!(r.record_count(), 500);
    }

    #[test]
    fn a_payload_too_large_has_no_response_context() {
        let r = OnFailureRecord::parse(&sample("self-managed-payload-too-large.json")).unwrap();
        assert_eq!(r.condition, FailureCondition::MaximumPayloadSizeExceeded);
        assert_eq!(r.response, None);
        assert_eq!(
            r.event_source_arn, None,
            "self-managed clusters have no ARN"
        );
        assert_eq!(
            r.bootstrap_servers.as_deref(),
            Some("kafka-1.internal:9092")
        );
        assert_eq!(r.ranges.len(), 1);
        assert_eq!(r.ranges[0].topic, "orders-v2-by-customer");
        assert_eq!(r.ranges[0].partition, 11);
        assert_eq!((r.ranges[0].first_offset, r.ranges[0].last_offset), (7, 7));
        assert_eq!(r.ranges[0].offset_count(), 1);
    }

    /// The AWS Lambda developer guide's example of a Kafka-topic destination's message ("Using a
    /// Kafka topic as an on-failure destination", "Record format for a Kafka destination"), verbatim.
    /// Its `recordInfo.offset` is a Kinesis-style sequence number that names no record of its
    /// payload: the payload is the authority.
    #[test]
    fn the_guides_kafka_destination_record() {
        let r = OnFailureRecord::parse(&sample("aws-guide-kafka-destination.json")).unwrap();
        assert_eq!(r.condition, FailureCondition::RetriesExhausted);
        assert_eq!(r.approximate_invoke_count, Some(3));
        assert_eq!(r.batch_size, Some(1));
        assert_eq!(r.payload_size, Some(1162));
        assert_eq!(r.function_name(), "my-function");
        assert_eq!(
            r.ranges
                .iter()
                .map(|g| (g.topic.as_str(), g.partition, g.first_offset, g.last_offset))
                .collect::<Vec<_>>(),
            [("my-topic", 0, 100, 100)]
        );
        let carried = r
            .carried
            .as_ref()
            .expect("the record travels in the payload");
        assert_eq!(carried.form, PayloadForm::EventObject);
        assert_eq!(
            carried.event_source_arn.as_deref(),
            Some("arn:aws:kafka:us-east-1:123456789012:cluster/my-cluster/abc123")
        );
        let [DecodedRecord::Record(record)] = &carried.records[..] else {
            panic!("one decoded record: {:?}", carried.records)
        };
        assert_eq!(record.key.as_deref(), Some(&b"test-key"[..]));
        assert_eq!(record.value.as_deref(), Some(&b"test-value"[..]));
        assert_eq!(record.timestamp, Some(1_749_116_692_330));
        assert_eq!(carried.in_range(&r.ranges[0]).count(), 1);
        assert_eq!(r.record_count(), 1);
    }

    /// The guide's S3-destination example ("Kafka on-failure destinations", "S3 destination example
    /// invocation record"), made valid JSON (the first `condition` alternative; comments and
    /// trailing commas removed). Its `payload` is the placeholder `"<Whole Event>"` and its offsets
    /// are Kinesis-style sequence numbers: as written it cannot be redriven, and says why.
    #[test]
    fn the_guides_s3_destination_record() {
        let text = sample("aws-guide-s3-destination.json");
        let e = OnFailureRecord::parse(&text).unwrap_err();
        assert!(matches!(e, MalformedRecord::BadPayload(_)), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("`payload` is not the invoked ESM event: the event is not valid JSON"),
            "{e}"
        );
        // With a real event in `payload`, as an escaped JSON string (the guide's own Kafka-topic
        // example's event), the records are taken from it.
        let mut value: Value = serde_json::from_str(&text).unwrap();
        let kafka: Value =
            serde_json::from_str(&sample("aws-guide-kafka-destination.json")).unwrap();
        value["payload"] = Value::String(kafka["payload"].to_string());
        let r = OnFailureRecord::from_value(&value).unwrap();
        assert_eq!(r.condition, FailureCondition::RetryAttemptsExhausted);
        assert_eq!(r.batch_size, Some(500));
        assert_eq!(r.carried.as_ref().unwrap().form, PayloadForm::EventString);
        assert_eq!(
            r.ranges
                .iter()
                .map(|g| (g.topic.as_str(), g.partition, g.first_offset))
                .collect::<Vec<_>>(),
            [("my-topic", 0, 100)]
        );
        // Without the payload, it is the SQS/SNS shape: metadata only, and its offsets must be offsets.
        value.as_object_mut().unwrap().remove("payload");
        assert!(matches!(
            OnFailureRecord::from_value(&value),
            Err(MalformedRecord::BadOffset { field, .. }) if field.contains("Topic-0")
        ));
    }

    #[test]
    fn a_kafka_destination_record_without_its_payload_says_where_the_record_is() {
        let mut value: Value =
            serde_json::from_str(&sample("aws-guide-kafka-destination.json")).unwrap();
        value.as_object_mut().unwrap().remove("payload");
        let e = OnFailureRecord::from_value(&value).unwrap_err();
        assert!(e.to_string().contains("payload"), "{e}");
        value["payload"] = Value::from(3);
        let e = OnFailureRecord::from_value(&value).unwrap_err();
        assert!(
            e.to_string()
                .contains("`payload` must be the invoked event"),
            "{e}"
        );
        value["payload"] = serde_json::json!({"records": []});
        assert!(matches!(
            OnFailureRecord::from_value(&value),
            Err(MalformedRecord::BadPayload(_))
        ));
    }

    #[test]
    fn an_sns_notification_is_unwrapped() {
        let inner = sample("msk-retry-attempts-exhausted.json");
        let envelope =
            serde_json::json!({"Type": "Notification", "MessageId": "m", "Message": inner});
        let r = OnFailureRecord::parse(&envelope.to_string()).unwrap();
        assert_eq!(r.ranges.len(), 2);
        let bad = serde_json::json!({"Type": "Notification", "Message": "not json"});
        assert!(matches!(
            OnFailureRecord::parse(&bad.to_string()),
            Err(MalformedRecord::NotJson(_))
        ));
    }

    #[test]
    fn topic_partition_keys_split_at_the_last_dash() {
        assert_eq!(
            split_topic_partition("a-b-c-12").unwrap(),
            ("a-b-c".into(), 12)
        );
        assert_eq!(split_topic_partition("t.x-0").unwrap(), ("t.x".into(), 0));
        for bad in [
            "nodash",
            "-3",
            "topic-",
            "topic-x1",
            "topic-+1",
            "topic-99999999999",
        ] {
            assert!(
                matches!(
                    split_topic_partition(bad),
                    Err(MalformedRecord::BadTopicPartition { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn every_malformed_message_says_what_is_wrong() {
        let good = || -> Value {
            serde_json::from_str(&sample("msk-retry-attempts-exhausted.json")).unwrap()
        };
        let check = |mutate: &dyn Fn(&mut Value), expect: &str| {
            let mut v = good();
            mutate(&mut v);
            let e = OnFailureRecord::from_value(&v).expect_err(expect);
            assert!(
                e.to_string().contains(expect),
                "{e} should mention {expect}"
            );
        };
        check(&|v| *v = Value::Array(vec![]), "must be a JSON object");
        check(
            &|v| {
                v.as_object_mut().unwrap().remove("KafkaBatchInfo");
            },
            "no `KafkaBatchInfo`",
        );
        check(
            &|v| {
                v["requestContext"]
                    .as_object_mut()
                    .unwrap()
                    .remove("requestId");
            },
            "`requestContext.requestId` is missing",
        );
        check(
            &|v| {
                v["requestContext"]["condition"] = Value::from(3);
            },
            "`requestContext.condition` must be a string",
        );
        check(
            &|v| {
                v["responseContext"] = Value::from("x");
            },
            "`responseContext` must be an object or null",
        );
        check(
            &|v| {
                v["KafkaBatchInfo"]
                    .as_object_mut()
                    .unwrap()
                    .remove("recordsInfo");
            },
            "`KafkaBatchInfo.recordsInfo` is missing",
        );
        check(
            &|v| {
                v["KafkaBatchInfo"]["recordsInfo"] = serde_json::json!({});
            },
            "names no records",
        );
        check(
            &|v| {
                v["KafkaBatchInfo"]["recordsInfo"] = serde_json::json!({"nodash": {"firstRecordOffset": "1", "lastRecordOffset": "2"}});
            },
            "\"nodash\" is not a \"<topic>-<partition>\" key",
        );
        check(
            &|v| {
                v["KafkaBatchInfo"]["recordsInfo"]["telemetry.metrics-eu-0"]["firstRecordOffset"] =
                    Value::from("4x");
            },
            "firstRecordOffset` = \"4x\" is not an offset",
        );
        check(
            &|v| {
                v["KafkaBatchInfo"]["recordsInfo"]["telemetry.metrics-eu-0"]["lastRecordOffset"] =
                    Value::from("-1");
            },
            "is not an offset",
        );
        check(
            &|v| {
                v["KafkaBatchInfo"]["recordsInfo"]["telemetry.metrics-eu-0"]
                    .as_object_mut()
                    .unwrap()
                    .remove("lastRecordOffset");
            },
            "lastRecordOffset` is missing",
        );
        check(
            &|v| {
                v["KafkaBatchInfo"]["recordsInfo"]["telemetry.metrics-eu-0"]["firstRecordOffset"] =
                    Value::from("999");
            },
            "firstRecordOffset 999 is after lastRecordOffset 298",
        );
        check(
            &|v| {
                v["KafkaBatchInfo"]["batchSize"] = Value::from(-1);
            },
            "`KafkaBatchInfo.batchSize` must be a whole number",
        );
        assert!(matches!(
            OnFailureRecord::parse("{"),
            Err(MalformedRecord::NotJson(_))
        ));
    }

    #[test]
    fn the_malformed_sample_names_the_bad_offset() {
        let e = OnFailureRecord::parse(&sample("malformed-offset.json")).unwrap_err();
        assert_eq!(
            e,
            MalformedRecord::BadOffset {
                field: "KafkaBatchInfo.recordsInfo[\"telemetry.metrics-eu-0\"].firstRecordOffset"
                    .into(),
                value: "\"forty-nine\"".into(),
            }
        );
    }

    #[test]
    fn offsets_may_be_numbers_and_unknown_conditions_are_kept() {
        let v = serde_json::json!({
            "requestContext": {"requestId": "r", "functionArn": "not-an-arn", "condition": "SomethingNew", "approximateInvokeCount": "2"},
            "responseContext": null,
            "KafkaBatchInfo": {"recordsInfo": {"t-1": {"firstRecordOffset": 3, "lastRecordOffset": 4}}, "extra": true}
        });
        let r = OnFailureRecord::from_value(&v).unwrap();
        assert_eq!(r.condition, FailureCondition::Other("SomethingNew".into()));
        assert_eq!(r.approximate_invoke_count, Some(2));
        assert_eq!(r.function_name(), "not-an-arn");
        assert_eq!(r.bootstrap_servers, None);
        assert_eq!(r.ranges[0].offset_count(), 2);
    }
}
