//! The record the event source mapping writes to its on-failure destination when it gives up on
//! records: one set of types for whoever writes it (a local ESM such as `esm poll`) and whoever
//! reads it back (`esm redrive`).
//!
//! Sources: the AWS Lambda developer guide, "Capturing discarded batches for an Amazon MSK / a
//! self-managed Apache Kafka event source" and "Using a Kafka topic as an on-failure destination";
//! the golden samples are in `events/on-failure/`. Three shapes share these types:
//! - **SQS / SNS destination**: metadata only. [`KafkaBatchInfo::records_info`] holds one entry per
//!   `"<topic>-<partition>"` key ([`crate::record::TopicPartition`]) with its first and last offset,
//!   written as **strings**. The records themselves must be read back from Kafka.
//! - **S3 destination**: the same metadata plus [`Payload::EventString`], the whole invoked event as
//!   an escaped JSON string.
//! - **Kafka-topic destination**: one message per failed record. [`KafkaBatchInfo::record_info`]
//!   holds its offset and timestamp but **no topic or partition**; [`Payload::EventObject`] is the
//!   ESM event holding that one record, and the authority on where it came from.
//!
//! Writing is exact: serialized, a record has the keys of the guide's examples, in the order
//! `serde_json` writes the keys of an object it holds (sorted), so that writing the typed record
//! and writing it as a [`serde_json::Value`] give the same bytes. Reading is lenient, as a reader
//! of someone else's format must be ([`OnFailureRecord::from_value`]): offsets and counts as
//! strings or numbers, unknown fields and conditions kept or ignored, an SNS notification
//! unwrapped; and where the payload carries the records, the metadata about them is not required to
//! make sense (the guide's own examples put Kinesis-style sequence numbers there). Whatever it
//! rejects, [`MalformedRecord`] names the field and what is wrong with it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::event::{Batch, EventError, decode_event};
use crate::record::{PartitionKeyError, TopicPartition};

/// Why the ESM gave up on the records (`requestContext.condition`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FailureCondition {
    /// `MaximumRetryAttempts` were used up (SQS/SNS and S3 destinations).
    RetryAttemptsExhausted,
    /// The batch was too large to invoke the function with.
    MaximumPayloadSizeExceeded,
    /// Retries were used up (the Kafka-topic destination's spelling).
    RetriesExhausted,
    /// `SCHEMA_NOT_FOUND`: the mapping's schema registry (provisioned mode) did not find the
    /// schema the record names; the record never reached the function.
    SchemaNotFound,
    /// `DESERIALIZATION_ERROR`: the mapping's schema registry validation could not deserialize
    /// the record with its schema; the record never reached the function.
    DeserializationError,
    /// A condition this library does not know (`RecordAgeExceeded`, ...), kept verbatim.
    Other(String),
}

impl FailureCondition {
    /// Reads the ESM's spelling.
    pub fn parse(text: &str) -> Self {
        match text {
            "RetryAttemptsExhausted" => Self::RetryAttemptsExhausted,
            "MaximumPayloadSizeExceeded" => Self::MaximumPayloadSizeExceeded,
            "RetriesExhausted" => Self::RetriesExhausted,
            "SCHEMA_NOT_FOUND" => Self::SchemaNotFound,
            "DESERIALIZATION_ERROR" => Self::DeserializationError,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The ESM's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::RetryAttemptsExhausted => "RetryAttemptsExhausted",
            Self::MaximumPayloadSizeExceeded => "MaximumPayloadSizeExceeded",
            Self::RetriesExhausted => "RetriesExhausted",
            Self::SchemaNotFound => "SCHEMA_NOT_FOUND",
            Self::DeserializationError => "DESERIALIZATION_ERROR",
            Self::Other(other) => other,
        }
    }

    /// As a Kafka-topic destination spells it: `RetryAttemptsExhausted` becomes
    /// `RetriesExhausted`, any other condition stays.
    pub fn for_kafka_destination(self) -> Self {
        match self {
            Self::RetryAttemptsExhausted => Self::RetriesExhausted,
            other => other,
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

impl Serialize for FailureCondition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FailureCondition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(Self::parse(&text))
    }
}

/// `requestContext`: the invocation that failed last.
// Fields in the order serde_json writes an object's keys (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestContext {
    /// `approximateInvokeCount`: how many times the records were invoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approximate_invoke_count: Option<u64>,
    /// `condition`: why the ESM gave up.
    pub condition: FailureCondition,
    /// `functionArn`.
    pub function_arn: String,
    /// `requestId`: the last invocation's request id.
    pub request_id: String,
}

/// `responseContext`: the function's answer to the last attempt. The record holds `null` instead
/// when the function was never invoked (`MaximumPayloadSizeExceeded`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseContext {
    /// `executedVersion`: the version that ran (`$LATEST`).
    pub executed_version: Option<String>,
    /// `functionError`: `Handled` / `Unhandled` when the function failed.
    pub function_error: Option<String>,
    /// `statusCode`: the invoke API's status.
    pub status_code: Option<u64>,
}

/// `KafkaBatchInfo`: which records the ESM gave up on. Every field is optional when read; a writer
/// sets `batchSize`, `bootstrapServers`, `payloadSize`, and `recordsInfo` (SQS/SNS, S3) or
/// `recordInfo` (Kafka topic).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaBatchInfo {
    /// `batchSize`: how many records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u64>,
    /// `bootstrapServers`, as written (may be empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_servers: Option<String>,
    /// `eventSourceArn`: the MSK cluster (absent for a self-managed cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_source_arn: Option<String>,
    /// `payloadSize`: the invoked event's size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_size: Option<u64>,
    /// `recordInfo` (Kafka-topic destination): the one record's offset and timestamp. Read only
    /// when it is what the guide documents; the payload says where the record came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_info: Option<RecordInfo>,
    /// `recordsInfo` (SQS/SNS and S3 destinations): one entry per `"<topic>-<partition>"` key, as
    /// written. Read strictly when it is all there is; when a payload carries the records, it is
    /// `None` unless every entry is well-formed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records_info: Option<BTreeMap<String, RecordsInfo>>,
}

/// One partition's entry of `recordsInfo`: its offsets `first..=last` the ESM gave up on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordsInfo {
    /// `firstRecordOffset`, written as a string.
    #[serde(serialize_with = "as_string")]
    pub first_record_offset: i64,
    /// `firstRecordTimestamp` (ISO 8601, see [`iso_timestamp`]), as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_record_timestamp: Option<String>,
    /// `lastRecordOffset` (inclusive), written as a string.
    #[serde(serialize_with = "as_string")]
    pub last_record_offset: i64,
    /// `lastRecordTimestamp`, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_record_timestamp: Option<String>,
}

/// `recordInfo` of a Kafka-topic destination's message: the one record's offset and timestamp,
/// without its topic or partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordInfo {
    /// `offset`, written as a string.
    #[serde(serialize_with = "as_string")]
    pub offset: i64,
    /// `timestamp` (ISO 8601), as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

/// `payload`: the records themselves, in the invoked event (S3 and Kafka-topic destinations).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Payload {
    /// The invoked event as an escaped JSON string (S3 destination).
    EventString(String),
    /// An event object holding the one failed record (Kafka-topic destination).
    EventObject(Map<String, Value>),
}

impl Payload {
    /// How the records are carried.
    pub fn form(&self) -> PayloadForm {
        match self {
            Self::EventString(_) => PayloadForm::EventString,
            Self::EventObject(_) => PayloadForm::EventObject,
        }
    }

    /// The carried event, decoded as the consumer decodes an invocation's (a record that cannot be
    /// decoded stays in its place as such).
    pub fn decode(&self) -> Result<Batch, EventError> {
        match self {
            Self::EventString(event) => decode_event(event),
            Self::EventObject(event) => decode_event(
                &serde_json::to_string(event).expect("a JSON object always serializes"),
            ),
        }
    }
}

/// How an on-failure record carries its records ([`Payload`]'s variants, without their content).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PayloadForm {
    /// `payload` is the invoked event as an escaped JSON string (S3 destination).
    EventString,
    /// `payload` is an event object holding the one failed record (Kafka-topic destination).
    EventObject,
}

/// One on-failure record, as the ESM writes it (see the module docs for its three shapes).
///
/// Serialize it to write it; read it with [`OnFailureRecord::parse`] or
/// [`OnFailureRecord::from_value`] (or serde's [`Deserialize`], which takes the same path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OnFailureRecord {
    /// `KafkaBatchInfo`: which records.
    #[serde(rename = "KafkaBatchInfo")]
    pub batch_info: KafkaBatchInfo,
    /// `payload` (S3 and Kafka-topic destinations): the records themselves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Payload>,
    /// `requestContext`.
    pub request_context: RequestContext,
    /// `responseContext`: `None` is written `null`.
    pub response_context: Option<ResponseContext>,
    /// `timestamp`: when the ESM gave up (ISO 8601, see [`iso_timestamp`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// `version` of the format ([`OnFailureRecord::VERSION`]); read only when it is a string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl OnFailureRecord {
    /// The `version` the ESM writes.
    pub const VERSION: &'static str = "1.0";

    /// Parses an on-failure record, or an SNS notification carrying one (see
    /// [`Self::from_value`]).
    pub fn parse(text: &str) -> Result<Self, MalformedRecord> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| MalformedRecord::NotJson(e.to_string()))?;
        Self::from_value(&value)
    }

    /// Reads an on-failure record from parsed JSON, leniently (see the module docs). An SNS
    /// notification delivered to SQS without raw message delivery is unwrapped: the record is its
    /// `Message` string.
    pub fn from_value(value: &Value) -> Result<Self, MalformedRecord> {
        let root = value
            .as_object()
            .ok_or_else(|| MalformedRecord::WrongType {
                field: "(the message)".into(),
                expected: "a JSON object",
                found: kind(value),
            })?;
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
        let response_context = match root.get("responseContext") {
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
        let payload = match root.get("payload") {
            None | Some(Value::Null) => None,
            Some(Value::String(event)) => Some(Payload::EventString(event.clone())),
            Some(Value::Object(event)) => Some(Payload::EventObject(event.clone())),
            Some(other) => {
                return Err(MalformedRecord::WrongType {
                    field: "payload".into(),
                    expected: "the invoked event (a JSON string or object)",
                    found: kind(other),
                });
            }
        };
        // With the records in the payload, they are the authority: the metadata about them is read
        // when it makes sense and otherwise left out.
        let carried = payload.is_some();
        let records_info = match batch.get("recordsInfo").map(records_info) {
            None => None,
            Some(Ok(info)) => Some(info),
            Some(Err(_)) if carried => None,
            Some(Err(e)) => return Err(e),
        };
        let record_info = batch.get("recordInfo").and_then(record_info);
        if !carried {
            match &records_info {
                Some(info) if info.is_empty() => return Err(MalformedRecord::NoRanges),
                Some(_) => {}
                None if batch.contains_key("recordInfo") => {
                    return Err(MalformedRecord::Missing {
                        field: "payload (a Kafka-topic destination's record names no topic or partition in `recordInfo`: the record is in its payload)".into(),
                    });
                }
                None => {
                    return Err(MalformedRecord::Missing {
                        field: "KafkaBatchInfo.recordsInfo".into(),
                    });
                }
            }
        }
        let timestamp = optional_string(root, "timestamp", "timestamp")?;
        let bootstrap_servers =
            optional_string(batch, "bootstrapServers", "KafkaBatchInfo.bootstrapServers")?;
        let event_source_arn =
            optional_string(batch, "eventSourceArn", "KafkaBatchInfo.eventSourceArn")?;
        let batch_size = optional_count(batch, "batchSize", "KafkaBatchInfo.batchSize")?;
        let payload_size = optional_count(batch, "payloadSize", "KafkaBatchInfo.payloadSize")?;
        Ok(Self {
            batch_info: KafkaBatchInfo {
                batch_size,
                bootstrap_servers,
                event_source_arn,
                payload_size,
                record_info,
                records_info,
            },
            payload,
            request_context: RequestContext {
                approximate_invoke_count,
                condition,
                function_arn,
                request_id,
            },
            response_context,
            timestamp,
            version: root
                .get("version")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }
}

impl<'de> Deserialize<'de> for OnFailureRecord {
    /// As [`OnFailureRecord::from_value`]; its [`MalformedRecord`] is the error's message.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Self::from_value(&value).map_err(serde::de::Error::custom)
    }
}

/// `timestamp`s as the ESM writes them: ISO 8601 in UTC with milliseconds
/// (`2019-11-14T00:38:06.021Z`). An epoch outside chrono's range is written as its number.
pub fn iso_timestamp(epoch_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(epoch_ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| epoch_ms.to_string())
}

/// What is wrong with an on-failure message.
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
    #[error(transparent)]
    BadTopicPartition(#[from] PartitionKeyError),
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

/// `recordsInfo`, every entry checked, in key order: the entry is an object, its key a
/// `"<topic>-<partition>"`, its offsets offsets (first not after last), its timestamps strings.
fn records_info(info: &Value) -> Result<BTreeMap<String, RecordsInfo>, MalformedRecord> {
    let info = info.as_object().ok_or_else(|| MalformedRecord::WrongType {
        field: "KafkaBatchInfo.recordsInfo".into(),
        expected: "an object",
        found: kind(info),
    })?;
    let mut entries = BTreeMap::new();
    for (key, entry) in info {
        let field = format!("KafkaBatchInfo.recordsInfo[{key:?}]");
        let entry = entry
            .as_object()
            .ok_or_else(|| MalformedRecord::WrongType {
                field: field.clone(),
                expected: "an object",
                found: kind(entry),
            })?;
        key.parse::<TopicPartition>()?;
        let first = offset(entry, "firstRecordOffset", &field)?;
        let last = offset(entry, "lastRecordOffset", &field)?;
        if first > last {
            return Err(MalformedRecord::InvertedRange { field, first, last });
        }
        let first_record_timestamp = optional_string(
            entry,
            "firstRecordTimestamp",
            &format!("{field}.firstRecordTimestamp"),
        )?;
        let last_record_timestamp = optional_string(
            entry,
            "lastRecordTimestamp",
            &format!("{field}.lastRecordTimestamp"),
        )?;
        entries.insert(
            key.clone(),
            RecordsInfo {
                first_record_offset: first,
                first_record_timestamp,
                last_record_offset: last,
                last_record_timestamp,
            },
        );
    }
    Ok(entries)
}

/// `recordInfo`, when it is an object with an offset (and a string timestamp, if any).
fn record_info(info: &Value) -> Option<RecordInfo> {
    let info = info.as_object()?;
    Some(RecordInfo {
        offset: offset(info, "offset", "KafkaBatchInfo.recordInfo").ok()?,
        timestamp: optional_string(info, "timestamp", "KafkaBatchInfo.recordInfo.timestamp")
            .ok()?,
    })
}

/// An offset: a whole number from 0, written as a string (as the ESM does) or a number.
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

/// A whole number from 0, written as a number or a string.
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

/// What a JSON value is, for an error message (short strings quoted).
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

/// Offsets are written as strings.
fn as_string<S: Serializer>(offset: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> String {
        let path = format!("{}/../events/on-failure/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// An SQS record, an S3 record and a Kafka-topic message, typed as a writer builds them.
    fn written() -> [OnFailureRecord; 3] {
        let event = r#"{"bootstrapServers":"b-1:9092","eventSource":"aws:kafka","eventSourceArn":"arn:aws:kafka:us-east-1:1:cluster/c/u","records":{"my-topic-0":[{"headers":[],"key":"dGVzdC1rZXk=","offset":100,"partition":0,"timestamp":1749116692330,"timestampType":"CREATE_TIME","topic":"my-topic","value":"dGVzdC12YWx1ZQ=="}]}}"#;
        let sqs = OnFailureRecord {
            batch_info: KafkaBatchInfo {
                batch_size: Some(3),
                bootstrap_servers: Some("b-1:9092".into()),
                event_source_arn: Some("arn:aws:kafka:us-east-1:1:cluster/c/u".into()),
                payload_size: Some(1234),
                record_info: None,
                records_info: Some(BTreeMap::from([
                    (
                        "my-topic-0".to_owned(),
                        RecordsInfo {
                            first_record_offset: 98,
                            first_record_timestamp: Some(iso_timestamp(1_749_116_692_328)),
                            last_record_offset: 100,
                            last_record_timestamp: Some(iso_timestamp(1_749_116_692_330)),
                        },
                    ),
                    (
                        "my-topic-10".to_owned(),
                        RecordsInfo {
                            first_record_offset: 7,
                            first_record_timestamp: None,
                            last_record_offset: 7,
                            last_record_timestamp: None,
                        },
                    ),
                ])),
            },
            payload: None,
            request_context: RequestContext {
                approximate_invoke_count: Some(3),
                condition: FailureCondition::RetryAttemptsExhausted,
                function_arn: "arn:aws:lambda:us-east-1:1:function:f".into(),
                request_id: "req-1".into(),
            },
            response_context: Some(ResponseContext {
                executed_version: Some("$LATEST".into()),
                function_error: Some("Unhandled".into()),
                status_code: Some(200),
            }),
            timestamp: Some(iso_timestamp(1_749_116_693_000)),
            version: Some(OnFailureRecord::VERSION.into()),
        };
        let mut s3 = sqs.clone();
        s3.payload = Some(Payload::EventString(event.into()));
        let mut kafka = sqs.clone();
        kafka.batch_info.batch_size = Some(1);
        kafka.batch_info.records_info = None;
        kafka.batch_info.record_info = Some(RecordInfo {
            offset: 100,
            timestamp: Some(iso_timestamp(1_749_116_692_330)),
        });
        kafka.payload = Some(Payload::EventObject(serde_json::from_str(event).unwrap()));
        kafka.request_context.condition = kafka.request_context.condition.for_kafka_destination();
        kafka.response_context = None;
        [sqs, s3, kafka]
    }

    #[test]
    fn what_is_written_reads_back_the_same() {
        for record in written() {
            let text = serde_json::to_string(&record).unwrap();
            assert_eq!(OnFailureRecord::parse(&text), Ok(record.clone()), "{text}");
            assert_eq!(
                serde_json::from_str::<OnFailureRecord>(&text).unwrap(),
                record
            );
        }
    }

    /// Written typed or as a `serde_json::Value`, a record is the same bytes: its fields are
    /// declared in the order of the value's sorted keys.
    #[test]
    fn the_typed_record_writes_the_bytes_of_its_json_value() {
        for record in written() {
            let typed = serde_json::to_string(&record).unwrap();
            let value = serde_json::to_value(&record).unwrap().to_string();
            assert_eq!(typed, value);
        }
        let [sqs, ..] = written();
        let text = serde_json::to_string(&sqs).unwrap();
        assert!(
            text.starts_with(r#"{"KafkaBatchInfo":{"batchSize":3,"bootstrapServers":"b-1:9092","#),
            "{text}"
        );
        assert!(
            text.contains(r#""my-topic-0":{"firstRecordOffset":"98","firstRecordTimestamp":"2025-06-05T09:44:52.328Z","lastRecordOffset":"100","#),
            "offsets are strings: {text}"
        );
        assert!(
            text.ends_with(r#""responseContext":{"executedVersion":"$LATEST","functionError":"Unhandled","statusCode":200},"timestamp":"2025-06-05T09:44:53.000Z","version":"1.0"}"#),
            "{text}"
        );
        let mut too_large = sqs;
        too_large.response_context = None;
        let text = serde_json::to_string(&too_large).unwrap();
        assert!(text.contains(r#""responseContext":null"#), "{text}");
    }

    #[test]
    fn the_documented_sqs_record_of_an_msk_mapping() {
        let r = OnFailureRecord::parse(&sample("msk-retry-attempts-exhausted.json")).unwrap();
        assert_eq!(
            r.request_context.request_id,
            "a3b2c1d0-0f1e-4d3c-8b7a-6f5e4d3c2b1a"
        );
        assert_eq!(
            r.request_context.condition,
            FailureCondition::RetryAttemptsExhausted
        );
        assert_eq!(r.request_context.approximate_invoke_count, Some(3));
        assert_eq!(r.version.as_deref(), Some("1.0"));
        assert_eq!(r.batch_info.batch_size, Some(500));
        assert_eq!(r.payload, None);
        let info = r.batch_info.records_info.as_ref().unwrap();
        assert_eq!(
            info.iter()
                .map(|(k, e)| (k.as_str(), e.first_record_offset, e.last_record_offset))
                .collect::<Vec<_>>(),
            [
                ("telemetry.metrics-eu-0", 49, 298),
                ("telemetry.metrics-eu-2", 1_000, 1_249),
            ]
        );
    }

    #[test]
    fn a_payload_too_large_has_no_response_context() {
        let r = OnFailureRecord::parse(&sample("self-managed-payload-too-large.json")).unwrap();
        assert_eq!(
            r.request_context.condition,
            FailureCondition::MaximumPayloadSizeExceeded
        );
        assert_eq!(r.response_context, None);
        assert_eq!(r.batch_info.event_source_arn, None);
    }

    /// The guide's Kafka-topic example: its `recordInfo.offset` is a Kinesis-style sequence number,
    /// no offset: left out, since the payload carries the record.
    #[test]
    fn the_guides_kafka_destination_record() {
        let r = OnFailureRecord::parse(&sample("aws-guide-kafka-destination.json")).unwrap();
        assert_eq!(
            r.request_context.condition,
            FailureCondition::RetriesExhausted
        );
        assert_eq!(r.batch_info.record_info, None);
        assert_eq!(r.batch_info.records_info, None);
        let payload = r.payload.as_ref().unwrap();
        assert_eq!(payload.form(), PayloadForm::EventObject);
        let batch = payload.decode().unwrap();
        assert_eq!(batch.partitions[0].key, "my-topic-0");
        assert_eq!(batch.record_count(), 1);
    }

    /// The guide's S3 example: offsets that are no offsets and a placeholder payload. Read (the
    /// metadata left out, the payload kept as written); decoding the payload says what is wrong.
    #[test]
    fn the_guides_s3_destination_record() {
        let r = OnFailureRecord::parse(&sample("aws-guide-s3-destination.json")).unwrap();
        assert_eq!(r.batch_info.records_info, None);
        let payload = r.payload.as_ref().unwrap();
        assert_eq!(payload.form(), PayloadForm::EventString);
        assert!(payload.decode().is_err());
        let mut value: Value =
            serde_json::from_str(&sample("aws-guide-s3-destination.json")).unwrap();
        value.as_object_mut().unwrap().remove("payload");
        assert!(matches!(
            OnFailureRecord::from_value(&value),
            Err(MalformedRecord::BadOffset { field, .. }) if field.contains("Topic-0")
        ));
    }

    #[test]
    fn the_malformed_sample_names_the_bad_offset() {
        let e = OnFailureRecord::parse(&sample("malformed-offset.json")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`KafkaBatchInfo.recordsInfo[\"telemetry.metrics-eu-0\"].firstRecordOffset` = \"forty-nine\" is not an offset (a whole number from 0)"
        );
        let e =
            serde_json::from_str::<OnFailureRecord>(&sample("malformed-offset.json")).unwrap_err();
        assert!(e.to_string().contains("is not an offset"), "{e}");
    }

    #[test]
    fn a_bad_partition_key_is_named() {
        let mut value: Value =
            serde_json::from_str(&sample("msk-retry-attempts-exhausted.json")).unwrap();
        value["KafkaBatchInfo"]["recordsInfo"] =
            serde_json::json!({"nodash": {"firstRecordOffset": "1", "lastRecordOffset": "2"}});
        let e = OnFailureRecord::from_value(&value).unwrap_err();
        assert_eq!(
            e,
            MalformedRecord::BadTopicPartition(PartitionKeyError {
                key: "nodash".into(),
                reason: "it has no `-`",
            })
        );
        assert_eq!(
            e.to_string(),
            r#""nodash" is not a "<topic>-<partition>" key: it has no `-`"#
        );
        // With the records in a payload, the metadata about them need not make sense.
        value["payload"] = Value::String("{}".into());
        let r = OnFailureRecord::from_value(&value).unwrap();
        assert_eq!(r.batch_info.records_info, None);
    }

    #[test]
    fn counts_may_be_strings_and_unknown_fields_are_ignored() {
        let v = serde_json::json!({
            "requestContext": {"requestId": "r", "functionArn": "f", "condition": "SCHEMA_NOT_FOUND", "approximateInvokeCount": "2"},
            "version": 1,
            "KafkaBatchInfo": {"recordsInfo": {"t-1": {"firstRecordOffset": 3, "lastRecordOffset": " 4"}}, "extra": true}
        });
        let r = OnFailureRecord::from_value(&v).unwrap();
        assert_eq!(
            r.request_context.condition,
            FailureCondition::SchemaNotFound
        );
        assert_eq!(r.request_context.approximate_invoke_count, Some(2));
        assert_eq!(r.version, None);
        let info = &r.batch_info.records_info.unwrap()["t-1"];
        assert_eq!((info.first_record_offset, info.last_record_offset), (3, 4));
    }

    #[test]
    fn conditions_keep_their_spelling() {
        for text in [
            "RetryAttemptsExhausted",
            "MaximumPayloadSizeExceeded",
            "RetriesExhausted",
            "SCHEMA_NOT_FOUND",
            "DESERIALIZATION_ERROR",
            "RecordAgeExceeded",
        ] {
            let condition = FailureCondition::parse(text);
            assert_eq!(condition.as_str(), text);
            assert_eq!(serde_json::to_value(&condition).unwrap(), text);
            assert_eq!(
                serde_json::from_value::<FailureCondition>(text.into()).unwrap(),
                condition
            );
        }
        assert_eq!(
            FailureCondition::RetryAttemptsExhausted.for_kafka_destination(),
            FailureCondition::RetriesExhausted
        );
        assert_eq!(
            FailureCondition::MaximumPayloadSizeExceeded.for_kafka_destination(),
            FailureCondition::MaximumPayloadSizeExceeded
        );
    }

    #[test]
    fn timestamps_are_iso_8601_with_milliseconds() {
        assert_eq!(iso_timestamp(1_573_692_286_021), "2019-11-14T00:44:46.021Z");
        assert_eq!(iso_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_timestamp(i64::MAX), i64::MAX.to_string());
    }
}
