//! The ESM event: JSON in, [`Batch`] out.
//!
//! Decoding is tolerant record by record: a record that cannot be decoded becomes a
//! [`DecodedRecord::Undecodable`] poison record carrying its raw JSON, and never fails the batch.
//! Only an event that is not an ESM event at all is rejected, with an [`EventError`] naming what is wrong.
//!
//! The common case takes one pass over the JSON by hand (`scan`), borrowing strings from it; what
//! that reader leaves to serde is read by serde where it stands. An event it cannot take whole goes
//! to a slower pass that decodes each record on its own.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

mod scan;

use crate::record::{
    DecodedRecord, Header, KafkaRecord, SchemaMetadata, TimestampType, TopicPartition,
    UndecodableRecord,
};

/// `eventSource` of an MSK event.
pub const MSK_EVENT_SOURCE: &str = "aws:kafka";
/// `eventSource` of a self-managed Kafka event (no `aws:` prefix).
pub const SELF_MANAGED_EVENT_SOURCE: &str = "SelfManagedKafka";

/// Standard base64 read as Python's, Node's and Java's decoders read it: padding optional, and
/// non-zero leftover bits in the last character ignored (the AWS guide's own example key,
/// `...1234==`, has them). Characters outside the alphabet are still rejected.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Base64 as the ESM writes it.
pub fn encode_base64(bytes: &[u8]) -> String {
    general_purpose::STANDARD.encode(bytes)
}

/// Decodes base64 leniently about padding and leftover bits, as [`decode_event`] does.
///
/// Canonical padded base64, which is what the ESM writes, goes through a SIMD decoder (several
/// times faster on a record's value); whatever it refuses is read again by the lenient one, which
/// accepts what other runtimes accept and otherwise says what is wrong.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    match base64_simd::STANDARD.decode_to_vec(text) {
        Ok(bytes) => Ok(bytes),
        Err(_) => BASE64.decode(text),
    }
}

/// An event that is not a Kafka ESM event at all. Nothing in it is processed, and the invocation fails.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Not JSON.
    #[error(
        "the event is not valid JSON ({0}); send the event exactly as the Kafka event source mapping delivers it"
    )]
    NotJson(String),
    /// JSON, but not an object.
    #[error(
        "the event is a JSON {found}, not an object; a Kafka ESM event is an object with `eventSource` and `records`"
    )]
    NotAnObject {
        /// The JSON type found.
        found: &'static str,
    },
    /// An object without `records`.
    #[error(
        "the event has no `records` field; a Kafka ESM event keeps its records under `records`, keyed \"<topic>-<partition>\""
    )]
    MissingRecords,
    /// An event of another AWS service (SQS, SNS, S3, Kinesis, DynamoDB streams use `Records`).
    #[error(
        "the event has `Records` (capitalised) instead of `records`: it is an SQS, SNS, S3 or Kinesis event, not a Kafka ESM event; check the function's trigger (on-failure SQS messages go to `esm redrive`, not to the consumer)"
    )]
    OtherService,
    /// `records` of the wrong type.
    #[error(
        "the event's `records` is a JSON {found}, not an object keyed \"<topic>-<partition>\"; this is not a Kafka ESM event"
    )]
    RecordsNotAnObject {
        /// The JSON type found.
        found: &'static str,
    },
    /// A partition's records that are not an array.
    #[error("`records[\"{key}\"]` is a JSON {found}, not an array of records")]
    PartitionNotAnArray {
        /// The `"<topic>-<partition>"` key.
        key: String,
        /// The JSON type found.
        found: &'static str,
    },
}

/// A decoded ESM event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// `aws:kafka` (MSK) or `SelfManagedKafka`; kept verbatim, absent in some hand-written events.
    pub event_source: Option<String>,
    /// The MSK cluster ARN; self-managed events have none.
    pub event_source_arn: Option<String>,
    /// The comma-separated bootstrap servers the ESM polled.
    pub bootstrap_servers: Option<String>,
    /// One entry per `"<topic>-<partition>"` key, sorted by topic then partition.
    pub partitions: Vec<PartitionBatch>,
}

impl Batch {
    /// The number of records, decodable or not.
    pub fn record_count(&self) -> usize {
        self.partitions.iter().map(|p| p.records.len()).sum()
    }
}

/// The records of one topic-partition, in offset order as the ESM delivered them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionBatch {
    /// The `"<topic>-<partition>"` key exactly as in the event: it names the partition in a partial batch response.
    pub key: String,
    /// Topic and partition, read from the records (not by splitting the key) where they can be.
    pub topic_partition: TopicPartition,
    /// The records.
    pub records: Vec<DecodedRecord>,
}

/// Decodes an ESM event.
pub fn decode_event(json: &str) -> Result<Batch, EventError> {
    // The JSON as the ESM writes it is read by hand, in one pass; anything else goes the tolerant
    // way, which decodes each record on its own and names what is wrong.
    match scan::scan_event(json) {
        Some(batch) => Ok(batch),
        None => decode_tolerantly(json),
    }
}

fn finish(
    event_source: Option<Str<'_>>,
    event_source_arn: Option<Str<'_>>,
    bootstrap_servers: Option<Str<'_>>,
    mut partitions: Vec<PartitionBatch>,
) -> Batch {
    partitions.sort_by(|a, b| {
        a.topic_partition
            .cmp(&b.topic_partition)
            .then(a.key.cmp(&b.key))
    });
    Batch {
        event_source: event_source.map(Str::into_owned),
        event_source_arn: event_source_arn.map(Str::into_owned),
        bootstrap_servers: bootstrap_servers.map(Str::into_owned),
        partitions,
    }
}

fn partition_batch(key: String, records: Vec<DecodedRecord>) -> PartitionBatch {
    let topic_partition = records
        .first()
        .map(|r| TopicPartition::new(r.topic(), r.partition()))
        .unwrap_or_else(|| TopicPartition::from_key_lossy(&key));
    PartitionBatch {
        key,
        topic_partition,
        records,
    }
}

/// The slow path: each record decoded on its own so that one bad record poisons only itself.
fn decode_tolerantly(json: &str) -> Result<Batch, EventError> {
    let whole: &RawValue =
        serde_json::from_str(json).map_err(|e| EventError::NotJson(e.to_string()))?;
    let kind = json_kind(whole.get());
    if kind != "object" {
        return Err(EventError::NotAnObject { found: kind });
    }
    let envelope: LooseEnvelope<'_> =
        serde_json::from_str(whole.get()).map_err(|e| EventError::NotJson(e.to_string()))?;
    let records = match (envelope.records, envelope.other_service_records) {
        (Some(records), _) => records,
        (None, Some(_)) => return Err(EventError::OtherService),
        (None, None) => return Err(EventError::MissingRecords),
    };
    let kind = json_kind(records.get());
    if kind == "null" {
        return Err(EventError::MissingRecords);
    }
    if kind != "object" {
        return Err(EventError::RecordsNotAnObject { found: kind });
    }
    let groups: OrderedMap<'_, &RawValue> =
        serde_json::from_str(records.get()).map_err(|e| EventError::NotJson(e.to_string()))?;
    let mut partitions = Vec::with_capacity(groups.0.len());
    for (key, group) in groups.0 {
        let key = key.into_owned();
        let kind = json_kind(group.get());
        if kind != "array" {
            return Err(EventError::PartitionNotAnArray { key, found: kind });
        }
        let raw_records: Vec<&RawValue> =
            serde_json::from_str(group.get()).map_err(|e| EventError::NotJson(e.to_string()))?;
        let records = raw_records
            .into_iter()
            .map(|raw| decode_one(&key, raw))
            .collect();
        partitions.push(partition_batch(key, records));
    }
    Ok(finish(
        envelope.event_source.and_then(LooseString::into_str),
        envelope.event_source_arn.and_then(LooseString::into_str),
        envelope.bootstrap_servers.and_then(LooseString::into_str),
        partitions,
    ))
}

fn decode_one(key: &str, raw: &RawValue) -> DecodedRecord {
    let fallback = TopicPartition::from_key_lossy(key);
    // serde would read a JSON array field by field as a record: only an object is one.
    if json_kind(raw.get()) != "object" {
        return DecodedRecord::Undecodable(UndecodableRecord {
            topic: fallback.topic,
            partition: fallback.partition,
            offset: None,
            timestamp: None,
            timestamp_type: None,
            key_schema: None,
            value_schema: None,
            reason: format!("the record is {}, not a JSON object", json_kind(raw.get())),
            raw_json: raw.get().to_owned(),
        });
    }
    match serde_json::from_str::<RawRecord<'_>>(raw.get()) {
        Ok(record) => {
            let (topic, partition, offset, timestamp) = (
                record.topic.as_ref().map(|t| t.0.to_string()),
                record.partition,
                record.offset,
                record.timestamp,
            );
            let timestamp_type = record
                .timestamp_type
                .as_ref()
                .map(|t| TimestampType::parse(&t.0));
            let (key_schema, value_schema) =
                (record.key_schema.clone(), record.value_schema.clone());
            match record.into_record(key) {
                Ok(record) => DecodedRecord::Record(record),
                Err(reason) => DecodedRecord::Undecodable(UndecodableRecord {
                    topic: topic.unwrap_or(fallback.topic),
                    partition: partition
                        .and_then(|p| i32::try_from(p).ok())
                        .unwrap_or(fallback.partition),
                    offset,
                    timestamp,
                    timestamp_type,
                    key_schema,
                    value_schema,
                    reason,
                    raw_json: raw.get().to_owned(),
                }),
            }
        }
        Err(error) => {
            let scraps: Scraps = serde_json::from_str(raw.get()).unwrap_or_default();
            DecodedRecord::Undecodable(UndecodableRecord {
                topic: scraps.topic.unwrap_or(fallback.topic),
                partition: scraps
                    .partition
                    .and_then(|p| i32::try_from(p).ok())
                    .unwrap_or(fallback.partition),
                offset: scraps.offset,
                timestamp: scraps.timestamp,
                timestamp_type: scraps.timestamp_type.as_deref().map(TimestampType::parse),
                key_schema: scraps.key_schema,
                value_schema: scraps.value_schema,
                reason: format!("the record does not have the ESM record shape: {error}"),
                raw_json: raw.get().to_owned(),
            })
        }
    }
}

/// The JSON type of a raw value, from its first byte.
fn json_kind(raw: &str) -> &'static str {
    match raw.trim_start().as_bytes().first() {
        Some(b'{') => "object",
        Some(b'[') => "array",
        Some(b'"') => "string",
        Some(b'n') => "null",
        Some(b't' | b'f') => "boolean",
        _ => "number",
    }
}

// ---- the typed shapes -------------------------------------------------------------------------

#[derive(Deserialize)]
struct LooseEnvelope<'a> {
    #[serde(rename = "eventSource", default, borrow)]
    event_source: Option<LooseString<'a>>,
    #[serde(rename = "eventSourceArn", default, borrow)]
    event_source_arn: Option<LooseString<'a>>,
    #[serde(rename = "bootstrapServers", default, borrow)]
    bootstrap_servers: Option<LooseString<'a>>,
    #[serde(default, borrow)]
    records: Option<&'a RawValue>,
    #[serde(rename = "Records", default, borrow)]
    other_service_records: Option<&'a RawValue>,
}

/// Any JSON value; a string is kept, anything else ignored.
struct LooseString<'a>(Option<Str<'a>>);

impl<'a> LooseString<'a> {
    fn into_str(self) -> Option<Str<'a>> {
        self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for LooseString<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&RawValue>::deserialize(deserializer)?;
        Ok(Self(serde_json::from_str::<Str<'a>>(raw.get()).ok()))
    }
}

/// What can still be read from a record that has not the record shape, for its provenance.
#[derive(Deserialize, Default)]
struct Scraps {
    #[serde(default, deserialize_with = "loose_string")]
    topic: Option<String>,
    #[serde(default, deserialize_with = "loose_int")]
    partition: Option<i64>,
    #[serde(default, deserialize_with = "loose_int")]
    offset: Option<i64>,
    #[serde(default, deserialize_with = "loose_int")]
    timestamp: Option<i64>,
    #[serde(rename = "timestampType", default, deserialize_with = "loose_string")]
    timestamp_type: Option<String>,
    #[serde(
        rename = "keySchemaMetadata",
        default,
        deserialize_with = "loose_schema"
    )]
    key_schema: Option<SchemaMetadata>,
    #[serde(
        rename = "valueSchemaMetadata",
        default,
        deserialize_with = "loose_schema"
    )]
    value_schema: Option<SchemaMetadata>,
}

fn loose_schema<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SchemaMetadata>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(value).ok())
}

fn loose_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(value.as_str().map(str::to_owned))
}

fn loose_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value::<LenientInt>(value)
        .ok()
        .map(|v| v.0))
}

#[derive(Deserialize)]
struct RawRecord<'a> {
    #[serde(default, borrow)]
    topic: Option<Str<'a>>,
    #[serde(default, deserialize_with = "lenient_int")]
    partition: Option<i64>,
    #[serde(default, deserialize_with = "lenient_int")]
    offset: Option<i64>,
    #[serde(default, deserialize_with = "lenient_int")]
    timestamp: Option<i64>,
    #[serde(rename = "timestampType", default, borrow)]
    timestamp_type: Option<Str<'a>>,
    #[serde(default, borrow)]
    key: Option<Str<'a>>,
    #[serde(default, borrow)]
    value: Option<Str<'a>>,
    #[serde(default)]
    headers: Option<RawHeaders>,
    #[serde(rename = "keySchemaMetadata", default)]
    key_schema: Option<SchemaMetadata>,
    #[serde(rename = "valueSchemaMetadata", default)]
    value_schema: Option<SchemaMetadata>,
}

impl RawRecord<'_> {
    fn into_record(self, key: &str) -> Result<KafkaRecord, String> {
        let (topic, partition) = match (self.topic, self.partition) {
            (Some(topic), Some(partition)) => (topic.into_owned(), partition),
            (topic, partition) => {
                let fallback = TopicPartition::from_key_lossy(key);
                (
                    topic.map(Str::into_owned).unwrap_or(fallback.topic),
                    partition.unwrap_or(i64::from(fallback.partition)),
                )
            }
        };
        let partition = i32::try_from(partition)
            .ok()
            .filter(|p| *p >= 0)
            .ok_or_else(|| format!("partition {partition} is not a Kafka partition number"))?;
        let offset = self
            .offset
            .ok_or_else(|| "the record has no offset".to_owned())?;
        let decode = |field: &str, text: Option<Str<'_>>| -> Result<Option<Vec<u8>>, String> {
            text.map(|t| {
                decode_base64(&t.0).map_err(|e| format!("`{field}` is not valid base64: {e}"))
            })
            .transpose()
        };
        Ok(KafkaRecord {
            topic,
            partition,
            offset,
            timestamp: self.timestamp,
            timestamp_type: self.timestamp_type.map(|t| TimestampType::parse(&t.0)),
            key: decode("key", self.key)?,
            value: decode("value", self.value)?,
            headers: self.headers.map(|h| h.0).unwrap_or_default(),
            key_schema: self.key_schema,
            value_schema: self.value_schema,
        })
    }
}

/// A string borrowed from the JSON when it has no escapes, owned otherwise.
struct Str<'a>(Cow<'a, str>);

impl Str<'_> {
    fn into_owned(self) -> String {
        self.0.into_owned()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// A JSON object read in its original key order.
struct OrderedMap<'a, V>(Vec<(Str<'a>, V)>);

impl<'de: 'a, 'a, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<'a, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<'a, V>(std::marker::PhantomData<(&'a (), V)>);
        impl<'de: 'a, 'a, V: Deserialize<'de>> Visitor<'de> for MapVisitor<'a, V> {
            type Value = OrderedMap<'a, V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some((key, value)) = map.next_entry::<Str<'a>, V>()? {
                    entries.push((key, value));
                }
                Ok(OrderedMap(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor(std::marker::PhantomData))
    }
}

/// An integer written as a JSON integer, an integral float, or a string of digits.
struct LenientInt(i64);

impl<'de> Deserialize<'de> for LenientInt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntVisitor;
        impl Visitor<'_> for IntVisitor {
            type Value = LenientInt;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(LenientInt(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i64::try_from(v)
                    .map(LenientInt)
                    .map_err(|_| E::custom(format!("{v} is too large")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15 {
                    Ok(LenientInt(v as i64))
                } else {
                    Err(E::custom(format!("{v} is not an integer")))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.trim()
                    .parse()
                    .map(LenientInt)
                    .map_err(|_| E::custom(format!("{v:?} is not an integer")))
            }
        }
        deserializer.deserialize_any(IntVisitor)
    }
}

fn lenient_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(Option::<LenientInt>::deserialize(d)?.map(|v| v.0))
}

/// `[{"name": [bytes]}, ...]`: names may repeat and an entry may hold several names; bytes may be
/// signed (Java) or unsigned; a null value is a null header.
struct RawHeaders(Vec<Header>);

impl<'de> Deserialize<'de> for RawHeaders {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = RawHeaders;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of header objects")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(RawHeaders(Vec::new()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut headers = Vec::with_capacity(seq.size_hint().unwrap_or(2));
                while let Some(entry) = seq.next_element::<OrderedMap<'de, HeaderBytes>>()? {
                    headers.extend(entry.0.into_iter().map(|(name, value)| Header {
                        name: name.into_owned(),
                        value: value.0,
                    }));
                }
                Ok(RawHeaders(headers))
            }
        }
        deserializer.deserialize_any(ListVisitor)
    }
}

struct HeaderBytes(Option<Vec<u8>>);

impl<'de> Deserialize<'de> for HeaderBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Read in the one pass over the event: each element as the number it is, so signed (Java)
        // and unsigned bytes, spaces and integral floats (`1.05e2`) are all read as they stand.
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = HeaderBytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a header value: an array of byte integers (-128..255) or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(HeaderBytes(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(HeaderBytes(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(32));
                while let Some(HeaderByte(byte)) = seq.next_element()? {
                    bytes.push(byte);
                }
                Ok(HeaderBytes(Some(bytes)))
            }
        }
        deserializer.deserialize_any(BytesVisitor)
    }
}

/// One byte of a header value: an integer (or an integral float) within -128..255, negative ones
/// read as Java's signed bytes.
struct HeaderByte(u8);

impl<'de> Deserialize<'de> for HeaderByte {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ByteVisitor;
        impl Visitor<'_> for ByteVisitor {
            type Value = HeaderByte;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a header byte: an integer within -128..255")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                match u8::try_from(v) {
                    Ok(byte) => Ok(HeaderByte(byte)),
                    Err(_) => Err(E::custom(format!("header byte {v} is outside -128..255"))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                match v {
                    -128..=255 => Ok(HeaderByte(v as u8)),
                    _ => Err(E::custom(format!("header byte {v} is outside -128..255"))),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                if v.fract() == 0.0 && (-128.0..=255.0).contains(&v) {
                    self.visit_i64(v as i64)
                } else {
                    Err(E::custom(format!("header byte {v} is outside -128..255")))
                }
            }
        }
        deserializer.deserialize_any(ByteVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(extra: serde_json::Value) -> serde_json::Value {
        let mut base = json!({
            "topic": "orders.v1-eu", "partition": 10, "offset": 15,
            "timestamp": 1545084650987i64, "timestampType": "CREATE_TIME",
            "key": encode_base64(b"k1"), "value": encode_base64(b"{\"a\":1}"),
            "headers": [{"h": [104, 105]}]
        });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() && k.starts_with('-') {
                base.as_object_mut().unwrap().remove(&k[1..]);
            } else {
                base[k] = v.clone();
            }
        }
        base
    }

    fn event(records: serde_json::Value) -> String {
        json!({
            "eventSource": "aws:kafka",
            "eventSourceArn": "arn:aws:kafka:us-east-1:123456789012:cluster/c/abc",
            "bootstrapServers": "b-1:9092,b-2:9092",
            "records": records
        })
        .to_string()
    }

    fn only(batch: &Batch) -> &DecodedRecord {
        assert_eq!(batch.record_count(), 1);
        &batch.partitions[0].records[0]
    }

    fn decoded(batch: &Batch) -> &KafkaRecord {
        match only(batch) {
            DecodedRecord::Record(r) => r,
            other => panic!("expected a record, got {other:?}"),
        }
    }

    fn undecodable(batch: &Batch) -> &UndecodableRecord {
        match only(batch) {
            DecodedRecord::Undecodable(u) => u,
            other => panic!("expected an undecodable record, got {other:?}"),
        }
    }

    #[test]
    fn decodes_an_msk_record_faithfully() {
        let batch = decode_event(&event(json!({"orders.v1-eu-10": [record(json!({}))]}))).unwrap();
        assert_eq!(batch.event_source.as_deref(), Some(MSK_EVENT_SOURCE));
        assert!(
            batch
                .event_source_arn
                .as_deref()
                .unwrap()
                .starts_with("arn:aws:kafka")
        );
        assert_eq!(
            batch.bootstrap_servers.as_deref(),
            Some("b-1:9092,b-2:9092")
        );
        let p = &batch.partitions[0];
        assert_eq!(p.key, "orders.v1-eu-10");
        assert_eq!(p.topic_partition, TopicPartition::new("orders.v1-eu", 10));
        let r = decoded(&batch);
        assert_eq!(
            (r.topic.as_str(), r.partition, r.offset),
            ("orders.v1-eu", 10, 15)
        );
        assert_eq!(
            r.timestamp,
            Some(1_545_084_650_987),
            "milliseconds are exact"
        );
        assert_eq!(r.timestamp_type, Some(TimestampType::CreateTime));
        assert_eq!(r.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(r.headers, vec![Header::new("h", "hi")]);
    }

    #[test]
    fn decodes_a_self_managed_event_without_arn() {
        let json = json!({
            "eventSource": "SelfManagedKafka", "bootstrapServers": "localhost:9092",
            "records": {"t-0": [record(json!({"topic": "t", "partition": 0}))]}
        });
        let batch = decode_event(&json.to_string()).unwrap();
        assert_eq!(
            batch.event_source.as_deref(),
            Some(SELF_MANAGED_EVENT_SOURCE)
        );
        assert_eq!(batch.event_source_arn, None);
        assert_eq!(decoded(&batch).topic, "t");
    }

    #[test]
    fn missing_and_null_keys_and_values_stay_none() {
        for patch in [
            json!({"-key": null, "-value": null}),
            json!({"key": null, "value": null}),
        ] {
            let batch = decode_event(&event(json!({"orders.v1-eu-10": [record(patch)]}))).unwrap();
            let r = decoded(&batch);
            assert_eq!(r.key, None);
            assert_eq!(r.value, None);
            assert!(r.is_tombstone());
        }
        let batch = decode_event(&event(
            json!({"orders.v1-eu-10": [record(json!({"key": "", "value": ""}))]}),
        ))
        .unwrap();
        assert_eq!(
            decoded(&batch).value.as_deref(),
            Some(&b""[..]),
            "empty is not null"
        );
    }

    #[test]
    fn missing_or_null_headers_are_empty() {
        for patch in [
            json!({"-headers": null}),
            json!({"headers": null}),
            json!({"headers": []}),
        ] {
            let batch = decode_event(&event(json!({"orders.v1-eu-10": [record(patch)]}))).unwrap();
            assert!(decoded(&batch).headers.is_empty());
        }
    }

    #[test]
    fn header_bytes_signed_unsigned_repeated_and_null() {
        let headers = json!([
            {"trace": [-1, -128, 0, 127]},
            {"bin": [195, 40, 200, 255]},
            {"dup": [49]},
            {"dup": [50], "zz": [51]},
            {"nothing": null},
            {"empty": []}
        ]);
        let batch = decode_event(&event(
            json!({"orders.v1-eu-10": [record(json!({"headers": headers}))]}),
        ))
        .unwrap();
        let r = decoded(&batch);
        assert_eq!(
            r.headers[0].value.as_deref(),
            Some(&[0xff, 0x80, 0x00, 0x7f][..])
        );
        assert_eq!(
            r.headers[1].value.as_deref(),
            Some(&[0xc3, 0x28, 0xc8, 0xff][..])
        );
        let names: Vec<&str> = r.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            ["trace", "bin", "dup", "dup", "zz", "nothing", "empty"]
        );
        let dups: Vec<_> = r
            .headers_named("dup")
            .map(|h| h.value.clone().unwrap())
            .collect();
        assert_eq!(dups, vec![b"1".to_vec(), b"2".to_vec()]);
        assert_eq!(r.header("nothing").unwrap().value, None);
        assert_eq!(r.header("empty").unwrap().value, Some(vec![]));
    }

    #[test]
    fn unusual_but_valid_header_json_takes_the_careful_path() {
        let json = event(json!({"orders.v1-eu-10": [record(json!({}))]}))
            .replace("[104,105]", "[ 104 , 1.05e2, -1.0 ]");
        assert!(json.contains("1.05e2"));
        let batch = decode_event(&json).unwrap();
        assert_eq!(
            decoded(&batch).headers[0].value.as_deref(),
            Some(&[104, 105, 255][..])
        );
    }

    #[test]
    fn header_bytes_that_are_not_bytes_poison_their_record() {
        for (value, reason) in [
            ("[256]", "header byte 256 is outside -128..255"),
            ("[-129]", "header byte -129 is outside -128..255"),
            ("[1.5]", "header byte 1.5 is outside -128..255"),
            (r#"["a"]"#, "expected a header byte"),
            (r#""aGk=""#, "expected a header value"),
        ] {
            let json =
                event(json!({"orders.v1-eu-10": [record(json!({}))]})).replace("[104,105]", value);
            let batch = decode_event(&json).unwrap();
            let u = undecodable(&batch);
            assert!(u.reason.contains(reason), "{value}: {}", u.reason);
            assert_eq!(u.offset, Some(15), "{value}");
        }
    }

    #[test]
    fn schema_metadata_is_kept() {
        let patch = json!({
            "keySchemaMetadata": {"dataFormat": "AVRO", "schemaId": "1"},
            "valueSchemaMetadata": {"dataFormat": "JSON", "schemaId": "2"}
        });
        let batch = decode_event(&event(json!({"orders.v1-eu-10": [record(patch)]}))).unwrap();
        let r = decoded(&batch);
        assert_eq!(
            r.key_schema.as_ref().unwrap().data_format.as_deref(),
            Some("AVRO")
        );
        assert_eq!(
            r.value_schema.as_ref().unwrap().schema_id.as_deref(),
            Some("2")
        );
    }

    #[test]
    fn unknown_fields_are_ignored_and_numbers_are_lenient() {
        let json = json!({
            "eventSource": "aws:kafka", "newField": {"x": [1]},
            "records": {"orders.v1-eu-10": [record(json!({"somethingNew": true, "offset": "15", "timestamp": 1545084650987.0}))]}
        });
        let batch = decode_event(&json.to_string()).unwrap();
        assert_eq!(decoded(&batch).offset, 15);
        assert_eq!(decoded(&batch).timestamp, Some(1_545_084_650_987));
    }

    #[test]
    fn escaped_base64_still_decodes() {
        // Some JSON writers escape `/` as `\/`.
        let text = event(json!({"orders.v1-eu-10": [record(json!({"value": encode_base64(&[0xff, 0xff, 0xff])}))]}))
            .replace("////", "\\/\\/\\/\\/");
        assert!(text.contains("\\/"));
        let batch = decode_event(&text).unwrap();
        assert_eq!(
            decoded(&batch).value.as_deref(),
            Some(&[0xff, 0xff, 0xff][..])
        );
    }

    #[test]
    fn partitions_are_sorted_and_the_key_is_not_split() {
        let json = event(json!({
            "orders.v1-eu-10": [record(json!({"offset": 1}))],
            "orders.v1-eu-2": [record(json!({"partition": 2, "offset": 1}))],
            "a-b.c-0": [record(json!({"topic": "a-b.c", "partition": 0, "offset": 5})), record(json!({"topic": "a-b.c", "partition": 0, "offset": 6}))]
        }));
        let batch = decode_event(&json).unwrap();
        let keys: Vec<&str> = batch.partitions.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["a-b.c-0", "orders.v1-eu-2", "orders.v1-eu-10"]);
        assert_eq!(
            batch.partitions[0].topic_partition,
            TopicPartition::new("a-b.c", 0)
        );
        let offsets: Vec<_> = batch.partitions[0]
            .records
            .iter()
            .map(DecodedRecord::offset)
            .collect();
        assert_eq!(offsets, [Some(5), Some(6)], "offset order is kept");
    }

    #[test]
    fn bad_base64_poisons_only_its_record() {
        let json = event(json!({
            "orders.v1-eu-10": [record(json!({"offset": 1})), record(json!({"offset": 2, "value": "not base64!"})), record(json!({"offset": 3}))],
            "other-0": [record(json!({"topic": "other", "partition": 0}))]
        }));
        let batch = decode_event(&json).unwrap();
        assert_eq!(batch.record_count(), 4);
        let p = batch
            .partitions
            .iter()
            .find(|p| p.key == "orders.v1-eu-10")
            .unwrap();
        assert!(matches!(p.records[0], DecodedRecord::Record(_)));
        assert!(matches!(p.records[2], DecodedRecord::Record(_)));
        let DecodedRecord::Undecodable(u) = &p.records[1] else {
            panic!()
        };
        assert_eq!(
            (u.topic.as_str(), u.partition, u.offset),
            ("orders.v1-eu", 10, Some(2))
        );
        assert_eq!(u.timestamp, Some(1_545_084_650_987));
        assert!(
            u.reason.contains("`value` is not valid base64"),
            "{}",
            u.reason
        );
        assert!(
            u.raw_json.contains("not base64!"),
            "the raw record travels to the DLQ"
        );
    }

    #[test]
    fn a_header_byte_out_of_range_poisons_its_record() {
        let batch = decode_event(&event(
            json!({"orders.v1-eu-10": [record(json!({"headers": [{"h": [300]}]}))]}),
        ))
        .unwrap();
        let u = undecodable(&batch);
        assert!(u.reason.contains("outside -128..255"), "{}", u.reason);
        assert_eq!(u.offset, Some(15));
    }

    #[test]
    fn records_without_the_record_shape_are_poison_with_what_can_be_read() {
        let batch = decode_event(&event(
            json!({"orders.v1-eu-10": [record(json!({"-offset": null}))]}),
        ))
        .unwrap();
        assert!(undecodable(&batch).reason.contains("no offset"));

        let batch = decode_event(&event(json!({"orders.v1-eu-10": ["just a string"]}))).unwrap();
        let u = undecodable(&batch);
        assert_eq!(
            (u.topic.as_str(), u.partition, u.offset),
            ("orders.v1-eu", 10, None)
        );
        assert_eq!(u.raw_json, "\"just a string\"");

        let batch = decode_event(&event(
            json!({"orders.v1-eu-10": [record(json!({"offset": {"n": 1}}))]}),
        ))
        .unwrap();
        let u = undecodable(&batch);
        assert_eq!(u.offset, None);
        assert_eq!(u.partition, 10);
    }

    #[test]
    fn an_empty_batch_has_no_partitions() {
        let batch = decode_event(&event(json!({}))).unwrap();
        assert!(batch.partitions.is_empty());
        let batch = decode_event(&event(json!({"t-0": []}))).unwrap();
        assert_eq!(batch.record_count(), 0);
        assert_eq!(
            batch.partitions[0].topic_partition,
            TopicPartition::new("t", 0)
        );
    }

    #[test]
    fn what_is_not_an_esm_event_is_rejected_with_a_reason() {
        let cases: [(&str, &str); 8] = [
            (
                r#"{"Records":[{"eventSource":"aws:sqs"}]}"#,
                "SQS, SNS, S3 or Kinesis event",
            ),
            ("{not json", "not valid JSON"),
            ("[1,2]", "JSON array, not an object"),
            ("\"text\"", "JSON string, not an object"),
            (r#"{"eventSource":"aws:kafka"}"#, "no `records` field"),
            (r#"{"records":null}"#, "no `records` field"),
            (
                r#"{"records":[{"topic":"t"}]}"#,
                "`records` is a JSON array",
            ),
            (
                r#"{"records":{"t-0":{"offset":1}}}"#,
                "`records[\"t-0\"]` is a JSON object",
            ),
        ];
        for (json, expected) in cases {
            let error = decode_event(json).unwrap_err().to_string();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }

    /// The example event of the AWS Lambda developer guide page "Using Lambda with self-managed
    /// Apache Kafka" (with-kafka), verbatim: its key's last character carries leftover bits, which
    /// Python, Node and Java decoders ignore.
    #[test]
    fn the_guides_self_managed_example_decodes_whole() {
        let path = format!(
            "{}/../events/aws-guide/with-kafka-self-managed.json",
            env!("CARGO_MANIFEST_DIR"),
        );
        let batch = decode_event(&std::fs::read_to_string(path).unwrap()).unwrap();
        let DecodedRecord::Record(record) = only(&batch) else {
            panic!("decoded: {:?}", only(&batch))
        };
        assert_eq!(
            record.value.as_deref(),
            Some(&b"Hello, this is a test."[..])
        );
        let key = record.key.as_deref().unwrap();
        assert_eq!(key.len(), 22);
        assert_eq!(&key[..3], &[0x69, 0xb7, 0x03]);
        assert_eq!(
            record.headers[0].value.as_deref(),
            Some(&b"headerValue"[..])
        );
    }

    proptest::proptest! {
        /// The SIMD decoder is only a shortcut: every text, canonical or not, decodes to what the
        /// lenient decoder alone makes of it, and is refused when that refuses it.
        #[test]
        fn base64_decodes_as_the_lenient_decoder_alone(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
            cut in 0usize..3,
            noise in proptest::option::of((0usize..200, proptest::sample::select(&b"=!A/+-_ \n"[..]))),
        ) {
            let mut text = encode_base64(&bytes).into_bytes();
            // Padding dropped, or a character replaced: non-canonical text of every kind.
            for _ in 0..cut {
                if text.last() == Some(&b'=') {
                    text.pop();
                }
            }
            if let Some((at, byte)) = noise
                && !text.is_empty()
            {
                let at = at % text.len();
                text[at] = byte;
            }
            let text = String::from_utf8(text).unwrap();
            let lenient = BASE64.decode(&text);
            let ours = decode_base64(&text);
            proptest::prop_assert_eq!(ours.is_ok(), lenient.is_ok(), "{}", text);
            if let (Ok(ours), Ok(lenient)) = (ours, lenient) {
                proptest::prop_assert_eq!(ours, lenient, "{}", text);
            }
        }
    }

    #[test]
    fn base64_as_other_runtimes_read_it() {
        // Leftover bits, missing padding: accepted.
        assert_eq!(decode_base64("QR==").unwrap(), b"A");
        assert_eq!(decode_base64("QQ").unwrap(), b"A");
        assert_eq!(decode_base64("QUI").unwrap(), b"AB");
        // Outside the alphabet, or an impossible length: rejected.
        for bad in ["QQ!=", "Q", "QQ=A", "QQ==="] {
            assert!(decode_base64(bad).is_err(), "{bad}");
        }
    }
}
