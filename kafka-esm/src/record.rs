//! Decoded Kafka records: what the consumer works with after the ESM envelope is gone.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How the broker set a record's timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimestampType {
    /// The producer set it (`CREATE_TIME`).
    CreateTime,
    /// The broker set it when appending (`LOG_APPEND_TIME`).
    LogAppendTime,
    /// A value this library does not know, kept verbatim.
    Other(String),
}

impl TimestampType {
    /// Parses the ESM spelling; an unknown one is kept as [`TimestampType::Other`].
    pub fn parse(text: &str) -> Self {
        match text {
            "CREATE_TIME" => Self::CreateTime,
            "LOG_APPEND_TIME" => Self::LogAppendTime,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The ESM spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::CreateTime => "CREATE_TIME",
            Self::LogAppendTime => "LOG_APPEND_TIME",
            Self::Other(other) => other,
        }
    }
}

/// Schema-registry metadata the ESM attaches to a key or value (provisioned mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaMetadata {
    /// `AVRO`, `JSON` or `PROTOBUF`.
    #[serde(rename = "dataFormat", default)]
    pub data_format: Option<String>,
    /// The schema's id in the registry.
    #[serde(rename = "schemaId", default)]
    pub schema_id: Option<String>,
}

/// One Kafka header. Names may repeat; values are arbitrary bytes and may be null.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The header's name.
    pub name: String,
    /// The header's bytes; `None` for a null header value.
    pub value: Option<Vec<u8>>,
}

impl Header {
    /// A header with a value.
    pub fn new(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            value: Some(value.into()),
        }
    }
}

/// Where a record came from: enough to find it again in Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name (may contain `-` and `.`).
    pub topic: String,
    /// Partition number.
    pub partition: i32,
}

impl TopicPartition {
    /// A topic-partition.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    /// The ESM's `"<topic>-<partition>"` spelling.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// A record decoded faithfully from the ESM event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// Epoch milliseconds, exactly as the broker gave them (never through a float).
    pub timestamp: Option<i64>,
    /// How the timestamp was set.
    pub timestamp_type: Option<TimestampType>,
    /// The key's bytes; `None` when the record has no key.
    pub key: Option<Vec<u8>>,
    /// The value's bytes; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers in their original order, repeated names kept.
    pub headers: Vec<Header>,
    /// Schema metadata of the key, when the ESM used a schema registry.
    pub key_schema: Option<SchemaMetadata>,
    /// Schema metadata of the value, when the ESM used a schema registry.
    pub value_schema: Option<SchemaMetadata>,
}

impl KafkaRecord {
    /// A record with the given coordinates and value and nothing else: handy in tests and tools.
    pub fn new(topic: impl Into<String>, partition: i32, offset: i64) -> Self {
        Self {
            topic: topic.into(),
            partition,
            offset,
            timestamp: None,
            timestamp_type: None,
            key: None,
            value: None,
            headers: Vec::new(),
            key_schema: None,
            value_schema: None,
        }
    }

    /// The record's topic-partition.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(self.topic.clone(), self.partition)
    }

    /// True for a tombstone (a record without a value).
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// The first header with this name.
    pub fn header(&self, name: &str) -> Option<&Header> {
        self.headers.iter().find(|h| h.name == name)
    }

    /// Every header with this name, in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Header> + 'a {
        self.headers.iter().filter(move |h| h.name == name)
    }

    /// `"<topic>/<partition>/<offset>"`: the record's identity when it has no business id.
    pub fn coordinates(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

/// A record the ESM delivered that could not be decoded (bad base64, a header byte out of range,
/// a field of the wrong type). It is dead-lettered with its raw JSON; it never fails the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndecodableRecord {
    /// Topic, from the record or else from the `"<topic>-<partition>"` key of its group.
    pub topic: String,
    /// Partition, from the record or else from the key of its group.
    pub partition: i32,
    /// Offset, when it could be read.
    pub offset: Option<i64>,
    /// Timestamp, when it could be read.
    pub timestamp: Option<i64>,
    /// `timestampType`, when it could be read.
    pub timestamp_type: Option<TimestampType>,
    /// `keySchemaMetadata`, when it could be read.
    pub key_schema: Option<SchemaMetadata>,
    /// `valueSchemaMetadata`, when it could be read.
    pub value_schema: Option<SchemaMetadata>,
    /// What is wrong with it.
    pub reason: String,
    /// The record exactly as the ESM sent it.
    pub raw_json: String,
}

/// A slot of a partition's batch: a record, or what could not be decoded in its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodedRecord {
    /// A faithfully decoded record.
    Record(KafkaRecord),
    /// A poison record that could not be decoded.
    Undecodable(UndecodableRecord),
}

impl DecodedRecord {
    /// The offset, when known.
    pub fn offset(&self) -> Option<i64> {
        match self {
            Self::Record(r) => Some(r.offset),
            Self::Undecodable(u) => u.offset,
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        match self {
            Self::Record(r) => &r.topic,
            Self::Undecodable(u) => &u.topic,
        }
    }

    /// The partition.
    pub fn partition(&self) -> i32 {
        match self {
            Self::Record(r) => r.partition,
            Self::Undecodable(u) => u.partition,
        }
    }
}
