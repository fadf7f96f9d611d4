//! The record the event source mapping writes to its on-failure destination when it gives up on a
//! batch. SQS and SNS destinations get metadata only: which offsets of which partitions failed,
//! never the records themselves.
//!
//! Variants accepted (see `events/on-failure/`):
//! - SQS/SNS destination: `KafkaBatchInfo.recordsInfo` keyed `"<topic>-<partition>"`, offsets as
//!   **strings**, condition `RetryAttemptsExhausted` or `MaximumPayloadSizeExceeded`,
//!   `responseContext` null for the latter;
//! - Kafka-topic destination metadata: `recordInfo` (singular), `batchSize: 1`, condition
//!   `RetriesExhausted`; its entry is keyed like `recordsInfo`, or (read liberally) one object that
//!   names its `topic` and `partition`;
//! - an SNS notification delivered to SQS without raw message delivery: the record is the
//!   envelope's `Message` string.
//!
//! Offsets are read from strings or numbers; unknown fields are ignored; an unknown condition is kept.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

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
    /// How many offsets the range covers (at least one).
    pub fn offset_count(&self) -> u64 {
        (self.last_offset - self.first_offset) as u64 + 1
    }

    /// `"<topic>-<partition>"`.
    pub fn key(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
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
        let (info_name, info) = match (batch.get("recordsInfo"), batch.get("recordInfo")) {
            (Some(info), _) => ("recordsInfo", info),
            (None, Some(info)) => ("recordInfo", info),
            (None, None) => {
                return Err(MalformedRecord::Missing {
                    field: "KafkaBatchInfo.recordsInfo".into(),
                });
            }
        };
        let info = info.as_object().ok_or_else(|| MalformedRecord::WrongType {
            field: format!("KafkaBatchInfo.{info_name}"),
            expected: "an object",
            found: kind(info),
        })?;
        let mut ranges = Vec::new();
        if info_name == "recordInfo" && info.contains_key("topic") {
            // One record's info naming its own topic and partition.
            ranges.push(range_of_single(info)?);
        } else {
            for (key, entry) in info {
                let field = format!("KafkaBatchInfo.{info_name}[{key:?}]");
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
        self.ranges.iter().map(OffsetRange::offset_count).sum()
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

fn range_of_single(info: &Map<String, Value>) -> Result<OffsetRange, MalformedRecord> {
    let field = "KafkaBatchInfo.recordInfo";
    let topic = string(info, "topic", &format!("{field}.topic"))?;
    let partition_field = format!("{field}.partition");
    let partition = match info.get("partition") {
        Some(Value::Number(n)) => n.as_i64().and_then(|n| i32::try_from(n).ok()),
        Some(Value::String(s)) => s.parse::<i32>().ok(),
        None => {
            return Err(MalformedRecord::Missing {
                field: partition_field,
            });
        }
        _ => None,
    }
    .filter(|p| *p >= 0)
    .ok_or_else(|| MalformedRecord::WrongType {
        field: partition_field,
        expected: "a partition number",
        found: info.get("partition").map(kind).unwrap_or_default(),
    })?;
    range(info, field, topic, partition)
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
        let path = format!("{}/events/on-failure/{name}", env!("CARGO_MANIFEST_DIR"));
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

    #[test]
    fn the_kafka_destination_variant_uses_record_info() {
        let r =
            OnFailureRecord::parse(&sample("kafka-destination-retries-exhausted.json")).unwrap();
        assert_eq!(r.condition, FailureCondition::RetriesExhausted);
        assert_eq!(r.batch_size, Some(1));
        assert_eq!(r.ranges.len(), 1);
        assert_eq!(
            (
                r.ranges[0].topic.as_str(),
                r.ranges[0].partition,
                r.ranges[0].first_offset,
                r.ranges[0].last_offset
            ),
            ("telemetry.metrics-eu", 1, 77, 77)
        );
        // The liberal single-object form reads the same.
        let single = serde_json::json!({
            "requestContext": {"requestId": "r", "functionArn": "arn:aws:lambda:us-east-1:1:function:f", "condition": "RetriesExhausted"},
            "KafkaBatchInfo": {"batchSize": 1, "recordInfo": {"topic": "a-b", "partition": 3, "firstRecordOffset": "5", "lastRecordOffset": 5}}
        });
        let r = OnFailureRecord::from_value(&single).unwrap();
        assert_eq!(
            (
                r.ranges[0].topic.as_str(),
                r.ranges[0].partition,
                r.ranges[0].first_offset
            ),
            ("a-b", 3, 5)
        );
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
