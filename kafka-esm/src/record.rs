//! Decoded Kafka records: what the consumer works with after the ESM envelope is gone.

use std::fmt;
use std::str::FromStr;

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
///
/// It is also the ESM's `"<topic>-<partition>"` key, the one home of that spelling: the key of the
/// event's record map, of the on-failure record's `recordsInfo`, and the `partition` of a partial
/// batch response. [`Display`](fmt::Display) writes it ([`TopicPartition::key`] without building
/// one); [`str::parse`] reads it back, splitting at the **last** `-`, since topic names may contain
/// `-` (and `.`) but a partition number never does.
///
/// ```
/// use kafka_esm::record::TopicPartition;
///
/// let tp: TopicPartition = "orders.v1-eu-12".parse().unwrap();
/// assert_eq!(tp, TopicPartition::new("orders.v1-eu", 12));
/// assert_eq!(tp.to_string(), "orders.v1-eu-12");
/// assert_eq!(TopicPartition::key("orders.v1-eu", 12).to_string(), "orders.v1-eu-12");
/// assert!("orders".parse::<TopicPartition>().is_err());
/// ```
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

    /// The `"<topic>-<partition>"` key of `topic` and `partition`, as [`Display`](fmt::Display)
    /// writes it, without building a `TopicPartition` (`.to_string()` for a `String`).
    pub fn key(topic: &str, partition: i32) -> impl fmt::Display + '_ {
        Key { topic, partition }
    }

    /// Where a key most likely points when nothing better says: split at its last `-` when what
    /// follows is an `i32` as [`str::parse`] reads one (a sign allowed), else the whole key with
    /// partition -1. Never fails: only a fallback for an event's record group that has no record to
    /// read the topic and partition from. To check a key, parse it instead.
    pub fn from_key_lossy(key: &str) -> Self {
        match key
            .rsplit_once('-')
            .and_then(|(topic, partition)| Some((topic, partition.parse().ok()?)))
        {
            Some((topic, partition)) => Self::new(topic, partition),
            None => Self::new(key, -1),
        }
    }
}

/// The `"<topic>-<partition>"` spelling, borrowed.
struct Key<'a> {
    topic: &'a str,
    partition: i32,
}

impl fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

impl fmt::Display for TopicPartition {
    /// The ESM's `"<topic>-<partition>"` spelling.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Key {
            topic: &self.topic,
            partition: self.partition,
        }
        .fmt(f)
    }
}

impl FromStr for TopicPartition {
    type Err = PartitionKeyError;

    /// Reads `"<topic>-<partition>"`: the topic is everything before the **last** `-` and must not
    /// be empty; the partition, everything after it, is decimal digits only (no sign) that fit an
    /// `i32`.
    fn from_str(key: &str) -> Result<Self, Self::Err> {
        let bad = |reason| PartitionKeyError {
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
            .parse()
            .map_err(|_| bad("the partition number is too large"))?;
        Ok(Self::new(topic, partition))
    }
}

/// A key that is not `"<topic>-<partition>"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key:?} is not a \"<topic>-<partition>\" key: {reason}")]
pub struct PartitionKeyError {
    /// The key, as written.
    pub key: String,
    /// What is wrong with it.
    pub reason: &'static str,
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_split_at_the_last_dash() {
        let parse = |key: &str| key.parse::<TopicPartition>();
        assert_eq!(parse("a-b-c-12"), Ok(TopicPartition::new("a-b-c", 12)));
        assert_eq!(parse("t.x-0"), Ok(TopicPartition::new("t.x", 0)));
        assert_eq!(parse("t--3"), Ok(TopicPartition::new("t-", 3)));
        assert_eq!(
            parse("t-2147483647"),
            Ok(TopicPartition::new("t", i32::MAX))
        );
        for (bad, reason) in [
            ("nodash", "it has no `-`"),
            ("", "it has no `-`"),
            ("-3", "the topic is empty"),
            (
                "topic-",
                "the part after the last `-` is not a partition number",
            ),
            (
                "topic-x1",
                "the part after the last `-` is not a partition number",
            ),
            (
                "topic-+1",
                "the part after the last `-` is not a partition number",
            ),
            (
                "topic-1 ",
                "the part after the last `-` is not a partition number",
            ),
            ("topic-99999999999", "the partition number is too large"),
        ] {
            assert_eq!(
                parse(bad),
                Err(PartitionKeyError {
                    key: bad.to_owned(),
                    reason
                }),
                "{bad}"
            );
        }
        assert_eq!(
            parse("nodash").unwrap_err().to_string(),
            r#""nodash" is not a "<topic>-<partition>" key: it has no `-`"#
        );
    }

    #[test]
    fn the_lossy_reading_keeps_what_it_cannot_split() {
        let lossy = TopicPartition::from_key_lossy;
        assert_eq!(
            lossy("orders.v1-eu-10"),
            TopicPartition::new("orders.v1-eu", 10)
        );
        assert_eq!(lossy("t-+1"), TopicPartition::new("t", 1));
        assert_eq!(lossy("-3"), TopicPartition::new("", 3));
        assert_eq!(lossy("t--3"), TopicPartition::new("t-", 3));
        for whole in ["nodash", "", "t-", "t-x", "t-99999999999"] {
            assert_eq!(lossy(whole), TopicPartition::new(whole, -1), "{whole:?}");
        }
    }

    proptest! {
        /// Written, then read back: the same topic-partition, for every topic (any characters,
        /// `-` included) and every partition from 0; both readings agree on it.
        #[test]
        fn a_written_key_reads_back(topic in ".+", partition in 0..=i32::MAX) {
            let tp = TopicPartition::new(topic.clone(), partition);
            let key = tp.to_string();
            prop_assert_eq!(&key, &TopicPartition::key(&topic, partition).to_string());
            prop_assert_eq!(key.parse::<TopicPartition>(), Ok(tp.clone()));
            prop_assert_eq!(TopicPartition::from_key_lossy(&key), tp);
        }

        /// Any text: parsing answers (a topic-partition or why not) and never panics; what it
        /// accepts writes back to a key that reads the same (`t-007` is written `t-7`).
        #[test]
        fn any_text_parses_or_says_why(key in ".*") {
            match key.parse::<TopicPartition>() {
                Ok(tp) => prop_assert_eq!(tp.to_string().parse::<TopicPartition>(), Ok(tp)),
                Err(e) => prop_assert_eq!(e.key, key),
            }
        }
    }
}
