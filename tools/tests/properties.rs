//! Property tests (issue #11, point 11) of the event decoder, the encoder and the on-failure parser.
//!
//! The generators are structure-aware: events and on-failure records are built as `serde_json::Value`s
//! from real shapes, with fields missing, null, of the wrong type, with huge numbers, signed and
//! unsigned header bytes, keys that are or are not `"<topic>-<partition>"`, so that every branch of
//! the decoders is reached, and each generated field knows what the decoder must make of it.
//!
//! Each property runs `PROPTEST_CASES` cases (default 256, what CI runs). Failures are not persisted
//! to files: a failing case is printed, minimised, and belongs in a unit test beside the code.
//!
//! Base64 is only asserted where it is valid standard base64 (with its padding): whether missing
//! padding or non-zero trailing bits are accepted is left open here.

use std::collections::BTreeMap;

use kafka_esm::encode::{Source, encode_decoded_event, encode_event};
use kafka_esm::event::{Batch, EventError, decode_event, encode_base64};
use kafka_esm::record::{
    DecodedRecord, Header, KafkaRecord, SchemaMetadata, TimestampType, TopicPartition,
};
use kafka_esm_tools::poll::on_failure::{
    GiveUp, LastResponse, kafka_destination_messages, on_failure_record, s3_destination_record,
};
use kafka_esm_tools::redrive::{
    FailureCondition, MalformedRecord, OffsetRange, OnFailureRecord, PayloadForm,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;
use serde_json::{Map, Value, json};

/// `PROPTEST_CASES` cases per property, 256 by default; no regression files are written.
fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(256);
    Config {
        failure_persistence: None,
        ..Config::with_cases(cases)
    }
}

// ---- JSON building blocks -------------------------------------------------------------------------

/// Numbers at the edges of what the decoders read.
fn edge_number() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        json!(0),
        json!(-1),
        json!(255),
        json!(256),
        json!(-128),
        json!(-129),
        json!(i32::MAX),
        json!(i64::from(i32::MAX) + 1),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(i64::MAX as u64 + 1),
        json!(u64::MAX),
        json!(0.5),
        json!(-0.0),
        json!(1.5e2),
        json!(9e15),
        json!(1e16),
        json!(1e300),
        json!(-1e300),
        json!(1_545_084_650_987.0),
    ])
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        edge_number(),
        ".{0,12}".prop_map(Value::String),
    ]
}

/// Any JSON value, a few levels deep.
fn junk() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Neither null nor a string.
fn not_string() -> impl Strategy<Value = Value> {
    junk().prop_filter("not null, not a string", |v| !v.is_null() && !v.is_string())
}

/// Not null and not an integer in any form the decoder accepts.
fn not_integer() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        prop::collection::vec(junk(), 0..3).prop_map(Value::Array),
        prop::collection::btree_map("[a-z]{1,4}", junk(), 0..3)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        any::<i32>().prop_map(|n| json!(f64::from(n) + 0.5)),
        prop::sample::select(vec![
            json!(9e15),
            json!(-9e15),
            json!(1e16),
            json!(1e300),
            json!(-1e300)
        ]),
        (i64::MAX as u64 + 1..=u64::MAX).prop_map(Value::from),
        "[a-z ]{0,5}x".prop_map(Value::String),
        prop::sample::select(vec!["", " ", "1.5", "0x10", "1e3", "--1", "١٢"]).prop_map(json_str),
    ]
}

fn json_str(s: &str) -> Value {
    Value::String(s.to_owned())
}

/// `v` as the ESM writes it, or in one of the other forms the decoder accepts: a string of digits
/// (with spaces or a `+`), or an integral float below 9e15.
fn int_value(v: i64) -> impl Strategy<Value = Value> {
    (0u8..7).prop_map(move |form| match form {
        3 => Value::from(v.to_string()),
        4 => Value::from(format!(" {v}\t")),
        5 if v >= 0 => Value::from(format!("+{v}")),
        6 if v.unsigned_abs() < 8_000_000_000_000_000 => Value::from(v as f64),
        _ => Value::from(v),
    })
}

/// A legal Kafka topic name: `[a-zA-Z0-9._-]`, 1 to 249 characters.
fn kafka_topic() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-zA-Z0-9._-]{1,16}",
        1 => "[a-zA-Z0-9._-]{1,249}",
        1 => prop::sample::select(vec!["-", ".", "..", "a-1", "t-0-1", "orders.v1-eu"]).prop_map(str::to_owned),
    ]
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        prop::collection::vec(any::<u8>(), 1..4),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

// ---- the ESM event, field by field ----------------------------------------------------------------

/// What the decoder must make of a field (or a record): this value, a poison record, or no promise
/// (base64 leniency, which this suite leaves open).
#[derive(Debug, Clone, PartialEq)]
enum Expect<T> {
    Ok(T),
    Poison,
    Unknown,
}

impl<T> Expect<T> {
    fn ok(&self) -> Option<&T> {
        match self {
            Self::Ok(v) => Some(v),
            _ => None,
        }
    }
}

/// A field's JSON (`None`: the field is absent) and what it must decode to.
type Field<T> = (Option<Value>, Expect<T>);

/// Mostly `valid`; `other` too unless the event is meant to be clean.
fn field<T: Clone + std::fmt::Debug + 'static>(
    clean: bool,
    valid: BoxedStrategy<Field<T>>,
    other: BoxedStrategy<Field<T>>,
) -> BoxedStrategy<Field<T>> {
    if clean {
        valid
    } else {
        prop_oneof![6 => valid, 1 => other].boxed()
    }
}

fn absent_or_null<T: Clone + std::fmt::Debug + 'static>(none: T) -> BoxedStrategy<Field<T>> {
    prop_oneof![
        Just((None, Expect::Ok(none.clone()))),
        Just((Some(Value::Null), Expect::Ok(none))),
    ]
    .boxed()
}

fn poison<T: Clone + std::fmt::Debug + 'static>(
    values: impl Strategy<Value = Value> + 'static,
) -> BoxedStrategy<Field<T>> {
    values.prop_map(|v| (Some(v), Expect::Poison)).boxed()
}

/// `topic`: the group's topic mostly; `Ok(None)` when absent or null (the key's topic is used).
fn topic_field(clean: bool, topic: String) -> BoxedStrategy<Field<Option<String>>> {
    let valid = prop_oneof![
        4 => Just((Some(Value::from(topic.clone())), Expect::Ok(Some(topic)))),
        1 => any::<String>().prop_map(|t| (Some(Value::from(t.clone())), Expect::Ok(Some(t)))),
        1 => absent_or_null(None),
    ]
    .boxed();
    field(clean, valid, poison(not_string()))
}

/// `partition`: any integer in any accepted form (the record decides whether it is a partition).
fn partition_field(clean: bool, partition: i32) -> BoxedStrategy<Field<Option<i64>>> {
    let number = prop_oneof![
        6 => Just(i64::from(partition)),
        1 => any::<i64>(),
        1 => Just(-1i64),
        1 => Just(i64::from(i32::MAX) + 1),
    ];
    let valid = prop_oneof![
        5 => number.prop_flat_map(|p| int_value(p).prop_map(move |v| (Some(v), Expect::Ok(Some(p))))),
        1 => absent_or_null(None),
    ]
    .boxed();
    field(clean, valid, poison(not_integer()))
}

fn offset_field(clean: bool) -> BoxedStrategy<Field<i64>> {
    let valid = prop_oneof![0i64..1_000_000_000_000, any::<i64>()]
        .prop_flat_map(|o| int_value(o).prop_map(move |v| (Some(v), Expect::Ok(o))))
        .boxed();
    let other = prop_oneof![
        Just((None, Expect::Poison)),
        Just((Some(Value::Null), Expect::Poison)),
        poison(not_integer()),
    ]
    .boxed();
    field(clean, valid, other)
}

fn timestamp_field(clean: bool) -> BoxedStrategy<Field<Option<i64>>> {
    let valid = prop_oneof![
        4 => prop_oneof![1_500_000_000_000i64..2_000_000_000_000, any::<i64>()]
            .prop_flat_map(|t| int_value(t).prop_map(move |v| (Some(v), Expect::Ok(Some(t))))),
        1 => absent_or_null(None),
    ]
    .boxed();
    field(clean, valid, poison(not_integer()))
}

fn timestamp_type_field(clean: bool) -> BoxedStrategy<Field<Option<String>>> {
    let valid = prop_oneof![
        4 => prop_oneof![
            Just("CREATE_TIME".to_owned()),
            Just("LOG_APPEND_TIME".to_owned()),
            any::<String>()
        ]
        .prop_map(|t| (Some(Value::from(t.clone())), Expect::Ok(Some(t)))),
        1 => absent_or_null(None),
    ]
    .boxed();
    field(clean, valid, poison(not_string()))
}

/// `key` / `value`: absent, null, or base64; the other forms are bad base64 (poison), base64
/// without its padding or with non-zero trailing bits (no promise), or not a string (poison).
fn bytes_field(clean: bool) -> BoxedStrategy<Field<Option<Vec<u8>>>> {
    let valid = prop_oneof![
        4 => bytes().prop_map(|b| (Some(Value::from(encode_base64(&b))), Expect::Ok(Some(b)))),
        1 => absent_or_null(None),
    ]
    .boxed();
    let other = prop_oneof![
        // Missing padding.
        bytes().prop_map(|b| {
            let text = encode_base64(&b);
            let expect = if text.ends_with('=') {
                Expect::Unknown
            } else {
                Expect::Ok(Some(b))
            };
            (Some(Value::from(text.trim_end_matches('='))), expect)
        }),
        // Non-zero trailing bits in the last character.
        prop::collection::vec(any::<u8>(), 1..16)
            .prop_filter("needs padding", |b| b.len() % 3 != 0)
            .prop_map(|b| {
                let text = encode_base64(&b);
                let data = text.trim_end_matches('=');
                let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
                let last = data.as_bytes()[data.len() - 1];
                let index = alphabet.iter().position(|c| *c == last).unwrap();
                let changed = alphabet[index | 1] as char;
                let text = format!(
                    "{}{changed}{}",
                    &data[..data.len() - 1],
                    &text[data.len()..]
                );
                (Some(Value::from(text)), Expect::Unknown)
            }),
        // A character of no base64 alphabet.
        (
            bytes(),
            any::<Index>(),
            prop::sample::select(vec!['!', '*', '#', '~', '%', 'é'])
        )
            .prop_map(|(b, at, c)| {
                let mut text: Vec<char> = encode_base64(&b).chars().collect();
                let at = at.index(text.len() + 1);
                text.insert(at, c);
                (
                    Some(Value::from(text.into_iter().collect::<String>())),
                    Expect::Poison,
                )
            }),
        Just((Some(json_str("not base64!")), Expect::Poison)),
        poison(not_string()),
    ]
    .boxed();
    field(clean, valid, other)
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["h", "dup", "trace", "", "content-type"]).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// A header value: signed or unsigned bytes (sometimes as integral floats), null or empty.
fn header_value() -> impl Strategy<Value = (Value, Option<Vec<u8>>)> {
    prop_oneof![
        6 => prop::collection::vec(-128i16..=255, 0..12).prop_map(|bytes| {
            let value = bytes.iter().map(|b| Value::from(*b)).collect();
            (Value::Array(value), Some(bytes.iter().map(|b| *b as u8).collect()))
        }),
        1 => prop::collection::vec(-128i16..=255, 1..4).prop_map(|bytes| {
            let value = bytes.iter().map(|b| Value::from(f64::from(*b))).collect();
            (Value::Array(value), Some(bytes.iter().map(|b| *b as u8).collect()))
        }),
        1 => Just((Value::Null, None)),
    ]
}

fn bad_header_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (
            prop::collection::vec(-128i64..=255, 0..4),
            prop_oneof![256i64..100_000, -100_000i64..=-129],
            any::<Index>()
        )
            .prop_map(|(mut bytes, bad, at)| {
                let at = at.index(bytes.len() + 1);
                bytes.insert(at, bad);
                json!(bytes)
            }),
        Just(json!([1.5])),
        Just(json!(["1"])),
        Just(json!([null])),
        Just(json!([[1]])),
        Just(json!("aGk=")),
        Just(json!({"0": 1})),
        Just(json!(true)),
        Just(json!(104)),
    ]
}

/// One header entry: an object of names to values (usually one, sometimes none or several).
fn header_entry(clean: bool) -> BoxedStrategy<(Value, Expect<Vec<Header>>)> {
    let valid = prop::collection::btree_map(header_name(), header_value(), 0..3)
        .prop_map(|entry| {
            let headers = entry
                .iter()
                .map(|(name, (_, value))| Header {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect();
            let object = entry.into_iter().map(|(n, (v, _))| (n, v)).collect();
            (Value::Object(object), Expect::Ok(headers))
        })
        .boxed();
    if clean {
        return valid;
    }
    let other = prop_oneof![
        (header_name(), bad_header_value()).prop_map(|(name, value)| {
            (
                Value::Object(Map::from_iter([(name, value)])),
                Expect::Poison,
            )
        }),
        junk()
            .prop_filter("not an object", |v| !v.is_object())
            .prop_map(|v| (v, Expect::Poison)),
    ];
    prop_oneof![12 => valid, 1 => other].boxed()
}

fn headers_field(clean: bool) -> BoxedStrategy<Field<Vec<Header>>> {
    let valid = prop_oneof![
        5 => prop::collection::vec(header_entry(clean), 0..5).prop_map(|entries| {
            let mut all = Vec::new();
            let mut expect = Expect::Ok(());
            for (_, e) in &entries {
                match e {
                    Expect::Ok(headers) => all.extend(headers.iter().cloned()),
                    _ => expect = Expect::Poison,
                }
            }
            let value = Value::Array(entries.into_iter().map(|(v, _)| v).collect());
            let expect = match expect {
                Expect::Ok(()) => Expect::Ok(all),
                _ => Expect::Poison,
            };
            (Some(value), expect)
        }),
        1 => absent_or_null(Vec::new()),
    ]
    .boxed();
    let other = poison(junk().prop_filter("neither an array nor null", |v| {
        !v.is_array() && !v.is_null()
    }));
    field(clean, valid, other)
}

fn schema_field(clean: bool) -> BoxedStrategy<Field<Option<SchemaMetadata>>> {
    let part = || {
        prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            prop_oneof![
                Just("AVRO".to_owned()),
                Just("JSON".to_owned()),
                Just("PROTOBUF".to_owned()),
                any::<String>()
            ]
            .prop_map(|s| Some(Value::from(s))),
        ]
    };
    let valid = prop_oneof![
        2 => absent_or_null(None),
        3 => (part(), part(), any::<bool>()).prop_map(|(format, id, extra)| {
            let mut object = Map::new();
            if let Some(f) = &format {
                object.insert("dataFormat".into(), f.clone());
            }
            if let Some(i) = &id {
                object.insert("schemaId".into(), i.clone());
            }
            if extra {
                object.insert("schemaVersion".into(), json!(3));
            }
            let text = |v: Option<Value>| v.and_then(|v| v.as_str().map(str::to_owned));
            let metadata = SchemaMetadata {
                data_format: text(format),
                schema_id: text(id),
            };
            (Some(Value::Object(object)), Expect::Ok(Some(metadata)))
        }),
    ]
    .boxed();
    let other = prop_oneof![
        poison(junk().prop_filter("not an object, an array or null", |v| {
            !v.is_object() && !v.is_array() && !v.is_null()
        })),
        not_string().prop_map(|f| (
            Some(json!({"dataFormat": f, "schemaId": "1"})),
            Expect::Poison
        )),
        // serde reads a struct from an array of its fields too: `[]`, `["AVRO", "1"]`.
        prop::collection::vec(junk(), 0..3).prop_map(|v| (Some(Value::Array(v)), Expect::Unknown)),
    ]
    .boxed();
    field(clean, valid, other)
}

/// One record of the event and what its fields must decode to.
#[derive(Debug, Clone)]
struct RecordSpec {
    json: Value,
    /// False for a record that is not even a JSON object.
    object: bool,
    topic: Expect<Option<String>>,
    partition: Expect<Option<i64>>,
    offset: Expect<i64>,
    timestamp: Expect<Option<i64>>,
    rest: Expect<RecordRest>,
}

/// The fields that do not locate the record.
#[derive(Debug, Clone, PartialEq)]
struct RecordRest {
    timestamp_type: Option<String>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<Header>,
    key_schema: Option<SchemaMetadata>,
    value_schema: Option<SchemaMetadata>,
}

/// The fallback of a record that does not say its topic or partition: the key split at its last
/// `-`, the whole key and partition -1 when the part after it is no `i32`.
fn split_key(key: &str) -> (String, i32) {
    match key.rsplit_once('-') {
        Some((topic, partition)) => match partition.parse::<i32>() {
            Ok(p) => (topic.to_owned(), p),
            Err(_) => (key.to_owned(), -1),
        },
        None => (key.to_owned(), -1),
    }
}

impl RecordSpec {
    /// The record the decoder must produce under `key`, or poison, or no promise.
    fn expected(&self, key: &str) -> Expect<KafkaRecord> {
        if !self.object {
            return Expect::Poison;
        }
        let (Some(topic), Some(partition)) = (self.topic.ok(), self.partition.ok()) else {
            return Expect::Poison;
        };
        let (fallback_topic, fallback_partition) = split_key(key);
        let (topic, partition) = match (topic, partition) {
            (Some(t), Some(p)) => (t.clone(), *p),
            (t, p) => (
                t.clone().unwrap_or(fallback_topic),
                p.unwrap_or(i64::from(fallback_partition)),
            ),
        };
        let Some(partition) = i32::try_from(partition).ok().filter(|p| *p >= 0) else {
            return Expect::Poison;
        };
        let (offset, timestamp, rest) = match (&self.offset, &self.timestamp, &self.rest) {
            (Expect::Ok(o), Expect::Ok(t), Expect::Ok(rest)) => (*o, *t, rest.clone()),
            (Expect::Poison, _, _) | (_, Expect::Poison, _) | (_, _, Expect::Poison) => {
                return Expect::Poison;
            }
            _ => return Expect::Unknown,
        };
        Expect::Ok(KafkaRecord {
            topic,
            partition,
            offset,
            timestamp,
            timestamp_type: rest.timestamp_type.as_deref().map(TimestampType::parse),
            key: rest.key,
            value: rest.value,
            headers: rest.headers,
            key_schema: rest.key_schema,
            value_schema: rest.value_schema,
        })
    }
}

/// Combines the non-locating fields: poison wins over no promise.
fn rest_of(
    timestamp_type: Expect<Option<String>>,
    key: Expect<Option<Vec<u8>>>,
    value: Expect<Option<Vec<u8>>>,
    headers: Expect<Vec<Header>>,
    key_schema: Expect<Option<SchemaMetadata>>,
    value_schema: Expect<Option<SchemaMetadata>>,
) -> Expect<RecordRest> {
    match (
        timestamp_type,
        key,
        value,
        headers,
        key_schema,
        value_schema,
    ) {
        (
            Expect::Ok(timestamp_type),
            Expect::Ok(key),
            Expect::Ok(value),
            Expect::Ok(headers),
            Expect::Ok(key_schema),
            Expect::Ok(value_schema),
        ) => Expect::Ok(RecordRest {
            timestamp_type,
            key,
            value,
            headers,
            key_schema,
            value_schema,
        }),
        (a, b, c, d, e, f) => {
            let poisoned = [
                a == Expect::Poison,
                b == Expect::Poison,
                c == Expect::Poison,
                d == Expect::Poison,
                e == Expect::Poison,
                f == Expect::Poison,
            ];
            if poisoned.contains(&true) {
                Expect::Poison
            } else {
                Expect::Unknown
            }
        }
    }
}

fn record_spec(clean: bool, topic: String, partition: i32) -> BoxedStrategy<RecordSpec> {
    let locating = (
        topic_field(clean, topic),
        partition_field(clean, partition),
        offset_field(clean),
        timestamp_field(clean),
    );
    let rest = (
        timestamp_type_field(clean),
        bytes_field(clean),
        bytes_field(clean),
        headers_field(clean),
        schema_field(clean),
        schema_field(clean),
    );
    let extra = prop::collection::btree_map(
        prop::sample::select(vec!["somethingNew", "Topic", "OFFSET", "eventSource", ""]),
        junk(),
        0..2,
    );
    let object = (locating, rest, extra).prop_map(
        |((topic, partition, offset, timestamp), (ts_type, key, value, headers, ks, vs), extra)| {
            let mut json = Map::new();
            let mut put = |name: &str, v: &Option<Value>| {
                if let Some(v) = v {
                    json.insert(name.to_owned(), v.clone());
                }
            };
            put("topic", &topic.0);
            put("partition", &partition.0);
            put("offset", &offset.0);
            put("timestamp", &timestamp.0);
            put("timestampType", &ts_type.0);
            put("key", &key.0);
            put("value", &value.0);
            put("headers", &headers.0);
            put("keySchemaMetadata", &ks.0);
            put("valueSchemaMetadata", &vs.0);
            for (name, v) in extra {
                json.insert(name.to_owned(), v);
            }
            RecordSpec {
                json: Value::Object(json),
                object: true,
                topic: topic.1,
                partition: partition.1,
                offset: offset.1,
                timestamp: timestamp.1,
                rest: rest_of(ts_type.1, key.1, value.1, headers.1, ks.1, vs.1),
            }
        },
    );
    if clean {
        return object.boxed();
    }
    // Arrays: see `decode_event_poisons_array_records`.
    let not_object = junk()
        .prop_filter("neither an object nor an array", |v| {
            !v.is_object() && !v.is_array()
        })
        .prop_map(|json| RecordSpec {
            json,
            object: false,
            topic: Expect::Poison,
            partition: Expect::Poison,
            offset: Expect::Poison,
            timestamp: Expect::Poison,
            rest: Expect::Poison,
        });
    prop_oneof![15 => object, 1 => not_object].boxed()
}

/// A `records` entry: its key and its records (or, rarely, something that is not an array).
#[derive(Debug, Clone)]
enum Group {
    Records(Vec<RecordSpec>),
    NotArray(Value),
}

fn group(clean: bool) -> BoxedStrategy<(String, Group)> {
    let topic = prop_oneof![4 => kafka_topic(), 1 => any::<String>()];
    let partition = prop_oneof![4 => 0i32..16, 1 => 0..=i32::MAX];
    let key_kind = prop_oneof![
        8 => Just(None),
        1 => prop::sample::select(vec!["nodash", "", "t-", "t-x", "t-+1", "t--3", "t-99999999999", "-3"])
            .prop_map(|k| Some(k.to_owned())),
        1 => any::<String>().prop_map(Some),
    ];
    (topic, partition, if clean { Just(None).boxed() } else { key_kind.boxed() })
        .prop_flat_map(move |(topic, partition, key)| {
            let key = key.unwrap_or_else(|| format!("{topic}-{partition}"));
            let records = prop::collection::vec(record_spec(clean, topic, partition), 0..5)
                .prop_map(Group::Records);
            let value = if clean {
                records.boxed()
            } else {
                prop_oneof![
                    30 => records,
                    1 => junk().prop_filter("not an array", |v| !v.is_array()).prop_map(Group::NotArray),
                ]
                .boxed()
            };
            value.prop_map(move |g| (key.clone(), g))
        })
        .boxed()
}

/// `records` of the event.
#[derive(Debug, Clone)]
enum RecordsField {
    Object(BTreeMap<String, Group>),
    Absent,
    Null,
    NotAnObject(Value),
}

#[derive(Debug, Clone)]
struct EventSpec {
    json: Value,
    records: RecordsField,
    /// Whether the event also has `Records` (capitalised), as other services' events do.
    other_records: bool,
    event_source: Option<String>,
    event_source_arn: Option<String>,
    bootstrap_servers: Option<String>,
}

/// An envelope string: kept when it is a string, `None` otherwise.
fn envelope_string(
    clean: bool,
    typical: &'static str,
) -> BoxedStrategy<(Option<Value>, Option<String>)> {
    let valid = prop_oneof![
        4 => Just(typical.to_owned()).prop_map(|s| (Some(Value::from(s.clone())), Some(s))),
        1 => any::<String>().prop_map(|s| (Some(Value::from(s.clone())), Some(s))),
        1 => Just((None, None)),
        1 => Just((Some(Value::Null), None)),
    ];
    if clean {
        valid.boxed()
    } else {
        prop_oneof![6 => valid, 1 => not_string().prop_map(|v| (Some(v), None))].boxed()
    }
}

fn event_spec() -> BoxedStrategy<EventSpec> {
    any::<bool>()
        .prop_flat_map(|clean| {
            let groups = prop::collection::vec(group(clean), 0..5).prop_map(|groups| {
                // Later keys replace earlier ones, as in the JSON object they become.
                RecordsField::Object(groups.into_iter().collect())
            });
            let records = if clean {
                groups.boxed()
            } else {
                prop_oneof![
                    20 => groups,
                    1 => Just(RecordsField::Absent),
                    1 => Just(RecordsField::Null),
                    1 => junk()
                        .prop_filter("neither an object nor null", |v| !v.is_object() && !v.is_null())
                        .prop_map(RecordsField::NotAnObject),
                ]
                .boxed()
            };
            let other_records = if clean {
                Just(false).boxed()
            } else {
                prop_oneof![8 => Just(false), 1 => Just(true)].boxed()
            };
            (
                records,
                other_records,
                envelope_string(clean, "aws:kafka"),
                envelope_string(clean, "arn:aws:kafka:us-east-1:123456789012:cluster/c/abc"),
                envelope_string(clean, "b-1:9092,b-2:9092"),
                prop::option::of(junk()),
            )
        })
        .prop_map(|(records, other_records, source, arn, servers, extra)| {
            let mut json = Map::new();
            for (name, (value, _)) in [
                ("eventSource", &source),
                ("eventSourceArn", &arn),
                ("bootstrapServers", &servers),
            ] {
                if let Some(v) = value {
                    json.insert(name.into(), v.clone());
                }
            }
            match &records {
                RecordsField::Object(groups) => {
                    let object = groups
                        .iter()
                        .map(|(key, group)| {
                            let value = match group {
                                Group::Records(records) => {
                                    Value::Array(records.iter().map(|r| r.json.clone()).collect())
                                }
                                Group::NotArray(v) => v.clone(),
                            };
                            (key.clone(), value)
                        })
                        .collect();
                    json.insert("records".into(), Value::Object(object));
                }
                RecordsField::Absent => {}
                RecordsField::Null => {
                    json.insert("records".into(), Value::Null);
                }
                RecordsField::NotAnObject(v) => {
                    json.insert("records".into(), v.clone());
                }
            }
            if other_records {
                json.insert("Records".into(), json!([{"eventSource": "aws:sqs"}]));
            }
            if let Some(extra) = extra {
                json.insert("newField".into(), extra);
            }
            EventSpec {
                json: Value::Object(json),
                records,
                other_records,
                event_source: source.1,
                event_source_arn: arn.1,
                bootstrap_servers: servers.1,
            }
        })
        .boxed()
}

/// Two JSON values alike, floats within a rounding error (serde_json parses floats to within an ulp).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || (x - y).abs() <= x.abs().max(y.abs()) * 1e-15,
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && same_json(vx, vy))
        }
        _ => a == b,
    }
}

/// Checks `decode_event`'s answer for the event `spec` (written compactly, or pretty-printed).
fn check_decoded(
    spec: &EventSpec,
    text: &str,
    pretty: bool,
    result: Result<Batch, EventError>,
) -> Result<(), TestCaseError> {
    let groups = match &spec.records {
        RecordsField::Absent | RecordsField::Null => {
            let expected_other = spec.other_records;
            prop_assert!(
                matches!(
                    (&result, expected_other),
                    (Err(EventError::OtherService), true)
                        | (Err(EventError::MissingRecords), false)
                ),
                "{result:?}"
            );
            return Ok(());
        }
        RecordsField::NotAnObject(_) => {
            prop_assert!(
                matches!(result, Err(EventError::RecordsNotAnObject { .. })),
                "{result:?}"
            );
            return Ok(());
        }
        RecordsField::Object(groups) => groups,
    };
    if let Some((first_bad, _)) = groups.iter().find(|(_, g)| matches!(g, Group::NotArray(_))) {
        prop_assert!(
            matches!(&result, Err(EventError::PartitionNotAnArray { key, .. }) if key == first_bad),
            "{result:?}"
        );
        return Ok(());
    }
    let batch = match result {
        Ok(batch) => batch,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "a well-formed envelope was rejected: {e}\n{text}"
            )));
        }
    };
    prop_assert_eq!(&batch.event_source, &spec.event_source);
    prop_assert_eq!(&batch.event_source_arn, &spec.event_source_arn);
    prop_assert_eq!(&batch.bootstrap_servers, &spec.bootstrap_servers);

    // Every key once, sorted by topic-partition then key.
    let mut keys: Vec<&str> = batch.partitions.iter().map(|p| p.key.as_str()).collect();
    keys.sort_unstable();
    let expected_keys: Vec<&str> = groups.keys().map(String::as_str).collect();
    prop_assert_eq!(keys, expected_keys, "one partition per key, none invented");
    for pair in batch.partitions.windows(2) {
        prop_assert!(
            (&pair[0].topic_partition, &pair[0].key) <= (&pair[1].topic_partition, &pair[1].key),
            "partitions out of order: {:?} before {:?}",
            pair[0].key,
            pair[1].key
        );
    }
    let mut total = 0;
    for partition in &batch.partitions {
        let Some(Group::Records(specs)) = groups.get(&partition.key) else {
            unreachable!("checked above")
        };
        total += specs.len();
        prop_assert_eq!(
            partition.records.len(),
            specs.len(),
            "every record of {:?} once",
            partition.key
        );
        let expected_tp = match partition.records.first() {
            Some(first) => TopicPartition::new(first.topic(), first.partition()),
            None => {
                let (topic, p) = split_key(&partition.key);
                TopicPartition::new(topic, p)
            }
        };
        prop_assert_eq!(&partition.topic_partition, &expected_tp);
        for (slot, spec) in partition.records.iter().zip(specs) {
            let expected = spec.expected(&partition.key);
            match (slot, &expected) {
                (DecodedRecord::Record(r), Expect::Ok(e)) => prop_assert_eq!(r, e),
                (DecodedRecord::Record(r), Expect::Unknown) => {
                    prop_assert_eq!(Some(&r.offset), spec.offset.ok());
                }
                (DecodedRecord::Record(r), Expect::Poison) => {
                    return Err(TestCaseError::fail(format!(
                        "a bad record was decoded: {r:?}\nfrom {}",
                        spec.json
                    )));
                }
                (DecodedRecord::Undecodable(u), Expect::Ok(e)) => {
                    return Err(TestCaseError::fail(format!(
                        "a good record was poisoned ({}): expected {e:?}\nfrom {}",
                        u.reason, spec.json
                    )));
                }
                (DecodedRecord::Undecodable(u), _) => {
                    // The raw record travels as it came, with what locates it.
                    if pretty {
                        let raw: Value = serde_json::from_str(&u.raw_json)
                            .map_err(|e| TestCaseError::fail(format!("raw_json: {e}")))?;
                        prop_assert!(
                            same_json(&raw, &spec.json),
                            "{} vs {}",
                            u.raw_json,
                            spec.json
                        );
                    } else {
                        prop_assert_eq!(&u.raw_json, &spec.json.to_string());
                    }
                    let (fallback_topic, fallback_partition) = split_key(&partition.key);
                    let topic = match &spec.topic {
                        Expect::Ok(Some(t)) => t.clone(),
                        _ => fallback_topic,
                    };
                    let p = match &spec.partition {
                        Expect::Ok(Some(p)) => i32::try_from(*p).unwrap_or(fallback_partition),
                        _ => fallback_partition,
                    };
                    prop_assert_eq!(&u.topic, &topic);
                    prop_assert_eq!(u.partition, p);
                    prop_assert_eq!(u.offset, spec.offset.ok().copied());
                    if let Expect::Ok(t) = &spec.timestamp {
                        prop_assert_eq!(&u.timestamp, t);
                    }
                }
            }
        }
    }
    prop_assert_eq!(batch.record_count(), total);

    // Written back as `esm redrive` does (undecodable records as they came) and read again: every
    // slot is still there.
    let slots: Vec<DecodedRecord> = batch
        .partitions
        .iter()
        .flat_map(|p| p.records.iter().cloned())
        .collect();
    let again = encode_decoded_event(&Source::SelfManaged, "b:9092", &slots);
    let again = decode_event(&again)
        .map_err(|e| TestCaseError::fail(format!("a re-encoded batch: {e}\n{again}")))?;
    prop_assert_eq!(again.record_count(), total);
    Ok(())
}

// ---- mutations of real shapes ---------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Mutation {
    Remove,
    Replace(Value),
    /// The value as a JSON string of itself.
    Stringify,
    WrapInArray,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => Just(Mutation::Remove),
        4 => junk().prop_map(Mutation::Replace),
        2 => edge_number().prop_map(Mutation::Replace),
        1 => Just(Mutation::Stringify),
        1 => Just(Mutation::WrapInArray),
    ]
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    At(usize),
}

fn paths(value: &Value, prefix: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    out.push(prefix.clone());
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                prefix.push(Seg::Key(k.clone()));
                paths(v, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (n, v) in items.iter().enumerate() {
                prefix.push(Seg::At(n));
                paths(v, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

/// Applies `mutation` at the node `at` picks among all of `value`'s nodes.
fn mutate(value: &mut Value, at: &Index, mutation: &Mutation) {
    let mut all = Vec::new();
    paths(value, &mut Vec::new(), &mut all);
    let path = &all[at.index(all.len())];
    let Some((last, parents)) = path.split_last() else {
        match mutation {
            Mutation::Remove => *value = Value::Null,
            Mutation::Replace(v) => *value = v.clone(),
            Mutation::Stringify => *value = Value::String(value.to_string()),
            Mutation::WrapInArray => *value = Value::Array(vec![value.take()]),
        }
        return;
    };
    let mut parent = &mut *value;
    for seg in parents {
        parent = match seg {
            Seg::Key(k) => &mut parent[k.as_str()],
            Seg::At(n) => &mut parent[*n],
        };
    }
    match (mutation, last, parent) {
        (Mutation::Remove, Seg::Key(k), Value::Object(map)) => {
            map.remove(k);
        }
        (Mutation::Remove, Seg::At(n), Value::Array(items)) => {
            items.remove(*n);
        }
        (m, seg, parent) => {
            let node = match seg {
                Seg::Key(k) => &mut parent[k.as_str()],
                Seg::At(n) => &mut parent[*n],
            };
            *node = match m {
                Mutation::Replace(v) => v.clone(),
                Mutation::Stringify => Value::String(node.to_string()),
                Mutation::WrapInArray => Value::Array(vec![node.take()]),
                Mutation::Remove => Value::Null,
            };
        }
    }
}

#[derive(Debug, Clone)]
enum TextEdit {
    Delete,
    Insert(char),
    Truncate,
}

fn text_edit() -> impl Strategy<Value = TextEdit> {
    prop_oneof![
        2 => Just(TextEdit::Delete),
        3 => prop::sample::select(vec!['{', '}', '[', ']', '"', ',', ':', '-', '0', '9', '.', 'e', '\\', ' ', 'n'])
            .prop_map(TextEdit::Insert),
        1 => any::<char>().prop_map(TextEdit::Insert),
        1 => Just(TextEdit::Truncate),
    ]
}

fn edit_text(text: &str, edits: &[(Index, TextEdit)]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for (at, edit) in edits {
        let n = at.index(chars.len() + 1);
        match edit {
            TextEdit::Delete if n < chars.len() => {
                chars.remove(n);
            }
            TextEdit::Delete => {}
            TextEdit::Insert(c) => chars.insert(n, *c),
            TextEdit::Truncate => chars.truncate(n),
        }
    }
    chars.into_iter().collect()
}

/// The JSON files under `events/` (and `events/on-failure/`), as seeds to mutate.
fn samples(dir: &str) -> Vec<Value> {
    let dir = format!("{}/{dir}", env!("CARGO_MANIFEST_DIR"));
    let mut out: Vec<Value> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| serde_json::from_str(&t).ok())
        .collect();
    out.sort_by_key(Value::to_string);
    if out.is_empty() {
        out.push(json!({"records": {}}));
    }
    out
}

/// Texts that are not ESM events, or damaged ones.
fn hostile_event_text() -> BoxedStrategy<String> {
    let seeds = samples("../events");
    let seeds_invalid = samples("../events/invalid");
    prop_oneof![
        any::<String>(),
        "[\\[\\]{}\",:0-9a-z.\\- ]{0,64}",
        junk().prop_map(|v| v.to_string()),
        // A real event, with its JSON values mutated.
        (
            prop::sample::select(seeds),
            prop::collection::vec((any::<Index>(), mutation()), 1..6)
        )
            .prop_map(|(mut v, mutations)| {
                for (at, m) in &mutations {
                    mutate(&mut v, at, m);
                }
                v.to_string()
            }),
        prop::sample::select(seeds_invalid).prop_map(|v| v.to_string()),
        // A generated event, its text damaged.
        (
            event_spec(),
            prop::collection::vec((any::<Index>(), text_edit()), 1..4)
        )
            .prop_map(|(spec, edits)| edit_text(&spec.json.to_string(), &edits)),
        // Nesting past serde_json's recursion limit.
        (1usize..300, prop::sample::select(vec!["[", "{\"a\":"])).prop_map(|(depth, open)| {
            let close = if open == "[" { "]" } else { "}" };
            let deep = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            format!(r#"{{"records":{{"t-0":[{{"offset":1,"value":{deep}}}],"u-1":{deep}}}}}"#)
        }),
    ]
    .boxed()
}

// ---- arbitrary records for the encoder ------------------------------------------------------------

fn schema() -> impl Strategy<Value = Option<SchemaMetadata>> {
    let format = prop_oneof![
        Just("AVRO".to_owned()),
        Just("JSON".to_owned()),
        Just("PROTOBUF".to_owned()),
        any::<String>()
    ];
    prop::option::of(
        (prop::option::of(format), prop::option::of(any::<String>())).prop_map(
            |(data_format, schema_id)| SchemaMetadata {
                data_format,
                schema_id,
            },
        ),
    )
}

fn headers() -> impl Strategy<Value = Vec<Header>> {
    prop::collection::vec(
        (header_name(), prop::option::of(bytes())).prop_map(|(name, value)| Header { name, value }),
        0..6,
    )
}

/// A record of the ESM's: every field present (the encoder writes a missing timestamp as 0).
fn kafka_record(
    topic: String,
    partition: i32,
    offsets: impl Strategy<Value = i64> + 'static,
) -> impl Strategy<Value = KafkaRecord> {
    let key = prop_oneof![Just(None), bytes().prop_map(Some)];
    let value = prop_oneof![Just(None), bytes().prop_map(Some)];
    (
        offsets,
        any::<i64>(),
        prop_oneof![
            Just(TimestampType::CreateTime),
            Just(TimestampType::LogAppendTime)
        ],
        key,
        value,
        headers(),
        schema(),
        schema(),
    )
        .prop_map(
            move |(
                offset,
                timestamp,
                timestamp_type,
                key,
                value,
                headers,
                key_schema,
                value_schema,
            )| {
                KafkaRecord {
                    topic: topic.clone(),
                    partition,
                    offset,
                    timestamp: Some(timestamp),
                    timestamp_type: Some(timestamp_type),
                    key,
                    value,
                    headers,
                    key_schema,
                    value_schema,
                }
            },
        )
}

/// Records of a few topic-partitions, interleaved, several per partition.
fn kafka_records(
    max: usize,
    offsets: impl Strategy<Value = i64> + Clone + 'static,
) -> impl Strategy<Value = Vec<KafkaRecord>> {
    let partition = prop_oneof![3 => 0i32..4, 1 => 0..=i32::MAX];
    prop::collection::vec((kafka_topic(), partition), 1..4).prop_flat_map(move |tps| {
        let records: Vec<BoxedStrategy<KafkaRecord>> = tps
            .into_iter()
            .map(|(t, p)| kafka_record(t, p, offsets.clone()).boxed())
            .collect();
        prop::collection::vec(prop::strategy::Union::new(records), 0..max)
    })
}

fn source() -> impl Strategy<Value = Source> {
    prop_oneof![
        Just(Source::SelfManaged),
        prop_oneof![
            Just("arn:aws:kafka:us-east-1:123456789012:cluster/c/abc".to_owned()),
            any::<String>()
        ]
        .prop_map(|cluster_arn| Source::Msk { cluster_arn }),
    ]
}

/// The records in the order the decoder gives them back: by topic-partition, offset order kept.
fn by_partition(records: &[KafkaRecord]) -> Vec<KafkaRecord> {
    let mut sorted = records.to_vec();
    sorted.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    sorted
}

/// One range per topic-partition of `records`, lowest to highest offset, sorted.
fn ranges_of(records: &[KafkaRecord]) -> Vec<(String, i32, i64, i64)> {
    let mut ranges: BTreeMap<(String, i32), (i64, i64)> = BTreeMap::new();
    for r in records {
        let range = ranges
            .entry((r.topic.clone(), r.partition))
            .or_insert((r.offset, r.offset));
        range.0 = range.0.min(r.offset);
        range.1 = range.1.max(r.offset);
    }
    ranges
        .into_iter()
        .map(|((t, p), (first, last))| (t, p, first, last))
        .collect()
}

fn plain(ranges: &[OffsetRange]) -> Vec<(String, i32, i64, i64)> {
    ranges
        .iter()
        .map(|r| (r.topic.clone(), r.partition, r.first_offset, r.last_offset))
        .collect()
}

// ---- on-failure records ---------------------------------------------------------------------------

/// The facts of a given-up batch, owned (see [`GiveUp`]).
#[derive(Debug, Clone)]
struct GiveUpSpec {
    records: Vec<KafkaRecord>,
    condition: &'static str,
    invoke_count: u32,
    request_id: String,
    function_arn: String,
    response: Option<LastResponse>,
    bootstrap_servers: String,
    event_source_arn: Option<String>,
    payload_size: usize,
    now_ms: i64,
}

impl GiveUpSpec {
    fn give_up(&self) -> GiveUp<'_> {
        GiveUp {
            records: &self.records,
            condition: self.condition,
            invoke_count: self.invoke_count,
            request_id: &self.request_id,
            function_arn: &self.function_arn,
            response: self.response.clone(),
            bootstrap_servers: &self.bootstrap_servers,
            event_source_arn: self.event_source_arn.as_deref(),
            payload_size: self.payload_size,
        }
    }

    /// What `requestContext` and `responseContext` must parse back to.
    fn check_context(&self, r: &OnFailureRecord, condition: &str) -> Result<(), TestCaseError> {
        prop_assert_eq!(&r.request_id, &self.request_id);
        prop_assert_eq!(&r.function_arn, &self.function_arn);
        prop_assert_eq!(r.condition.as_str(), condition);
        prop_assert_eq!(
            r.approximate_invoke_count,
            Some(u64::from(self.invoke_count))
        );
        prop_assert_eq!(
            r.response
                .as_ref()
                .map(|c| (c.status_code, c.function_error.clone())),
            self.response
                .as_ref()
                .map(|c| (Some(u64::from(c.status_code)), c.function_error.clone()))
        );
        prop_assert_eq!(
            r.bootstrap_servers.as_deref(),
            Some(self.bootstrap_servers.as_str()).filter(|s| !s.trim().is_empty())
        );
        prop_assert_eq!(&r.event_source_arn, &self.event_source_arn);
        prop_assert!(r.timestamp.is_some());
        Ok(())
    }
}

fn give_up_spec(
    max_records: usize,
    offsets: impl Strategy<Value = i64> + Clone + 'static,
) -> impl Strategy<Value = GiveUpSpec> {
    let response = prop::option::of(
        (
            any::<u16>(),
            prop::option::of(prop_oneof![Just("Unhandled".to_owned()), any::<String>()]),
        )
            .prop_map(|(status_code, function_error)| LastResponse {
                status_code,
                function_error,
            }),
    );
    let arn = prop::option::of(prop_oneof![
        Just("arn:aws:kafka:us-east-1:123456789012:cluster/c/abc".to_owned()),
        any::<String>()
    ]);
    (
        kafka_records(max_records, offsets),
        prop::sample::select(vec![
            "RetryAttemptsExhausted",
            "MaximumPayloadSizeExceeded",
            "RecordAgeExceeded",
        ]),
        any::<u32>(),
        any::<String>(),
        prop_oneof![
            Just("arn:aws:lambda:us-east-1:123456789012:function:f".to_owned()),
            any::<String>()
        ],
        response,
        prop_oneof![Just("b-1:9092,b-2:9092".to_owned()), any::<String>()],
        arn,
        any::<usize>(),
        any::<i64>(),
    )
        .prop_map(
            |(
                records,
                condition,
                invoke_count,
                request_id,
                function_arn,
                response,
                bootstrap_servers,
                event_source_arn,
                payload_size,
                now_ms,
            )| GiveUpSpec {
                records,
                condition,
                invoke_count,
                request_id,
                function_arn,
                response,
                bootstrap_servers,
                event_source_arn,
                payload_size,
                now_ms,
            },
        )
}

/// An SQS/SNS on-failure record, hand-built from `ranges` in the documented shape.
#[derive(Debug, Clone)]
struct SqsRecordSpec {
    json: Value,
    ranges: Vec<OffsetRange>,
    request_id: String,
    function_arn: String,
    condition: String,
    invoke_count: u64,
    bootstrap_servers: Option<String>,
    event_source_arn: Option<String>,
    batch_size: u64,
    payload_size: u64,
}

fn iso_like() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        Just("2019-11-14T00:38:04.835Z".to_owned()),
        any::<String>()
    ])
}

fn sqs_record_spec() -> impl Strategy<Value = SqsRecordSpec> {
    let range = (
        0..=i64::MAX,
        prop_oneof![Just(0i64), 0i64..1_000, 0..=i64::MAX],
        iso_like(),
        iso_like(),
        any::<bool>(),
    );
    let ranges = prop::collection::btree_map(
        (kafka_topic(), prop_oneof![3 => 0i32..4, 1 => 0..=i32::MAX]),
        range,
        1..5,
    );
    let condition = prop_oneof![
        Just("RetryAttemptsExhausted".to_owned()),
        Just("MaximumPayloadSizeExceeded".to_owned()),
        Just("RecordAgeExceeded".to_owned()),
        any::<String>()
    ];
    (
        ranges,
        any::<String>(),
        any::<String>(),
        condition,
        any::<u64>(),
        prop::option::of(any::<String>()),
        prop::option::of(any::<String>()),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(ranges, request_id, function_arn, condition, invoke_count, servers, arn, batch_size, payload_size)| {
                let mut info = Map::new();
                let mut expected = Vec::new();
                for ((topic, partition), (first, length, first_ts, last_ts, as_numbers)) in ranges {
                    let last = first.saturating_add(length);
                    let offset = |o: i64| if as_numbers { json!(o) } else { json!(o.to_string()) };
                    let mut entry = json!({
                        "firstRecordOffset": offset(first),
                        "lastRecordOffset": offset(last),
                    });
                    if let Some(ts) = &first_ts {
                        entry["firstRecordTimestamp"] = json!(ts);
                    }
                    if let Some(ts) = &last_ts {
                        entry["lastRecordTimestamp"] = json!(ts);
                    }
                    info.insert(format!("{topic}-{partition}"), entry);
                    expected.push(OffsetRange {
                        topic,
                        partition,
                        first_offset: first,
                        last_offset: last,
                        first_timestamp: first_ts,
                        last_timestamp: last_ts,
                    });
                }
                let mut batch = json!({
                    "batchSize": batch_size,
                    "payloadSize": payload_size,
                    "recordsInfo": info,
                });
                if let Some(s) = &servers {
                    batch["bootstrapServers"] = json!(s);
                }
                if let Some(a) = &arn {
                    batch["eventSourceArn"] = json!(a);
                }
                let json = json!({
                    "requestContext": {
                        "requestId": request_id,
                        "functionArn": function_arn,
                        "condition": condition,
                        "approximateInvokeCount": invoke_count,
                    },
                    "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
                    "version": "1.0",
                    "timestamp": "2019-11-14T00:38:06.021Z",
                    "KafkaBatchInfo": batch,
                });
                SqsRecordSpec {
                    json,
                    ranges: expected,
                    request_id,
                    function_arn,
                    condition,
                    invoke_count,
                    bootstrap_servers: servers.filter(|s| !s.trim().is_empty()),
                    event_source_arn: arn,
                    batch_size,
                    payload_size,
                }
            },
        )
}

/// As delivered by SNS to SQS without raw message delivery.
fn sns_envelope(record: &Value) -> Value {
    json!({"Type": "Notification", "MessageId": "m-1", "TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": record.to_string()})
}

/// On-failure messages of every shape, real and generated, with their JSON values mutated.
fn hostile_on_failure() -> BoxedStrategy<Value> {
    let seeds = samples("../events/on-failure");
    let bases = prop_oneof![
        prop::sample::select(seeds),
        sqs_record_spec().prop_map(|s| s.json),
        give_up_spec(6, any::<i64>()).prop_map(|g| on_failure_record(&g.give_up(), g.now_ms)),
        give_up_spec(6, any::<i64>()).prop_map(|g| s3_destination_record(&g.give_up(), g.now_ms)),
        give_up_spec(3, any::<i64>()).prop_map(|g| {
            kafka_destination_messages(&g.give_up(), g.now_ms)
                .into_iter()
                .next()
                .map_or(Value::Null, |(_, m)| m)
        }),
    ];
    (
        bases,
        prop::collection::vec((any::<Index>(), mutation()), 0..5),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(mut v, mutations, payload_inside, sns)| {
            // Mutate inside an S3 payload (an escaped event) too.
            let inner = v.get("payload").and_then(Value::as_str).map(str::to_owned);
            match inner.and_then(|p| serde_json::from_str::<Value>(&p).ok()) {
                Some(mut payload) if payload_inside => {
                    for (at, m) in &mutations {
                        mutate(&mut payload, at, m);
                    }
                    v["payload"] = Value::String(payload.to_string());
                }
                _ => {
                    for (at, m) in &mutations {
                        mutate(&mut v, at, m);
                    }
                }
            }
            if sns { sns_envelope(&v) } else { v }
        })
        .boxed()
}

/// Exercises what a parsed record offers, as the redrive does.
fn use_record(r: &OnFailureRecord) {
    let _ = r.function_name();
    let _ = r.record_count();
    for range in &r.ranges {
        let _ = range.key();
        let _ = range.offset_count();
        if let Some(carried) = &r.carried {
            let _ = carried.in_range(range).count();
        }
    }
    let _ = serde_json::to_string(r);
}

// ---- the properties -------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Whatever the text, `decode_event` answers (a batch or a reason) and never panics.
    #[test]
    fn decode_event_never_panics(text in hostile_event_text()) {
        if let Ok(batch) = decode_event(&text) {
            for p in &batch.partitions {
                for r in &p.records {
                    let _ = (r.topic(), r.partition(), r.offset());
                }
            }
        }
    }

    /// Every record of an accepted event is in the batch exactly once, in its partition and in its
    /// place: decoded faithfully when it is well-formed, poison (its raw JSON kept, what locates it
    /// read) when it is not; a bad record never spoils its neighbours; none is invented or lost.
    #[test]
    fn decode_event_accounts_for_every_record(spec in event_spec(), pretty in prop::bool::weighted(0.2)) {
        let text = if pretty {
            serde_json::to_string_pretty(&spec.json).unwrap()
        } else {
            spec.json.to_string()
        };
        let result = decode_event(&text);
        check_decoded(&spec, &text, pretty, result)?;
    }

    /// `encode_event` then `decode_event` gives back every record: identity, bytes, headers,
    /// timestamps and schema metadata, grouped by topic-partition in their order.
    #[test]
    fn encode_then_decode_is_the_identity(
        records in kafka_records(10, any::<i64>()),
        source in source(),
        servers in prop_oneof![Just("b-1:9092".to_owned()), any::<String>()],
    ) {
        let json = encode_event(&source, &servers, &records);
        let batch = decode_event(&json).map_err(|e| TestCaseError::fail(format!("{e}: {json}")))?;
        match &source {
            Source::Msk { cluster_arn } => {
                prop_assert_eq!(batch.event_source.as_deref(), Some("aws:kafka"));
                prop_assert_eq!(batch.event_source_arn.as_deref(), Some(cluster_arn.as_str()));
            }
            Source::SelfManaged => {
                prop_assert_eq!(batch.event_source.as_deref(), Some("SelfManagedKafka"));
                prop_assert_eq!(batch.event_source_arn.as_deref(), None);
            }
        }
        prop_assert_eq!(batch.bootstrap_servers.as_deref(), Some(servers.as_str()));
        for p in &batch.partitions {
            prop_assert_eq!(&p.key, &p.topic_partition.to_string());
        }
        let decoded: Vec<DecodedRecord> =
            batch.partitions.into_iter().flat_map(|p| p.records).collect();
        let expected: Vec<DecodedRecord> =
            by_partition(&records).into_iter().map(DecodedRecord::Record).collect();
        prop_assert_eq!(decoded, expected);
    }

    /// Whatever the message, the on-failure parser answers and never panics, nor does using what it
    /// parsed.
    #[test]
    fn on_failure_parser_never_panics(
        value in hostile_on_failure(),
        text in prop_oneof![any::<String>(), junk().prop_map(|v| v.to_string())],
    ) {
        if let Ok(r) = OnFailureRecord::from_value(&value) {
            use_record(&r);
        }
        if let Ok(r) = OnFailureRecord::parse(&value.to_string()) {
            use_record(&r);
        }
        if let Ok(r) = OnFailureRecord::parse(&text) {
            use_record(&r);
        }
    }

    /// An SQS/SNS record (metadata only) gives back its ranges, sorted by topic-partition, and its
    /// context; the same inside an SNS notification.
    #[test]
    fn on_failure_sqs_record_gives_back_its_ranges(spec in sqs_record_spec(), sns in any::<bool>()) {
        let json = if sns { sns_envelope(&spec.json) } else { spec.json.clone() };
        let r = OnFailureRecord::parse(&json.to_string())
            .map_err(|e| TestCaseError::fail(format!("{e}: {json}")))?;
        prop_assert_eq!(&r.ranges, &spec.ranges);
        prop_assert_eq!(&r.request_id, &spec.request_id);
        prop_assert_eq!(&r.function_arn, &spec.function_arn);
        prop_assert_eq!(r.condition.as_str(), spec.condition.as_str());
        prop_assert_eq!(&r.condition, &FailureCondition::parse(&spec.condition));
        prop_assert_eq!(r.approximate_invoke_count, Some(spec.invoke_count));
        prop_assert_eq!(&r.bootstrap_servers, &spec.bootstrap_servers);
        prop_assert_eq!(&r.event_source_arn, &spec.event_source_arn);
        prop_assert_eq!(r.batch_size, Some(spec.batch_size));
        prop_assert_eq!(r.payload_size, Some(spec.payload_size));
        prop_assert!(r.carried.is_none());
    }

    /// `offset_count` and `record_count` of any range the parser accepts: the offsets of an SQS
    /// record (from 0 to `i64::MAX`) or of the records an S3 payload carries (any `i64`).
    #[test]
    fn on_failure_offset_counts_do_not_overflow(
        value in prop_oneof![
            sqs_record_spec().prop_map(|s| s.json),
            give_up_spec(6, any::<i64>()).prop_map(|g| s3_destination_record(&g.give_up(), g.now_ms)),
        ]
    ) {
        let Ok(r) = OnFailureRecord::from_value(&value) else {
            return Ok(());
        };
        let mut total: u128 = 0;
        for range in &r.ranges {
            let expected = (i128::from(range.last_offset) - i128::from(range.first_offset) + 1).max(0);
            prop_assert_eq!(i128::from(range.offset_count()), expected);
            total += expected as u128;
        }
        if let Ok(total) = u64::try_from(total) {
            prop_assert_eq!(r.record_count(), total);
        }
    }

    /// A record that is a JSON array is not a record: poison, located by its key.
    #[test]
    fn decode_event_poisons_array_records(items in prop::collection::vec(junk(), 0..12)) {
        let record = Value::Array(items);
        let text = json!({"records": {"orders.v1-eu-3": [record.clone()]}}).to_string();
        let batch = decode_event(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        match &batch.partitions[0].records[0] {
            DecodedRecord::Undecodable(u) => {
                prop_assert_eq!((u.topic.as_str(), u.partition, u.offset), ("orders.v1-eu", 3, None));
                prop_assert_eq!(&u.raw_json, &record.to_string());
            }
            DecodedRecord::Record(r) => {
                return Err(TestCaseError::fail(format!("{record} was decoded: {r:?}")));
            }
        }
    }

    /// A header byte of any size never panics the decoder: outside -128..255 it poisons its record.
    #[test]
    fn decode_event_poisons_any_header_number(
        n in prop_oneof![any::<i64>(), any::<u64>().prop_map(|n| n as i64), Just(2_147_483_648)],
        big in any::<u64>(),
        negative in any::<bool>(),
    ) {
        let byte = if n == 0 { big.to_string() } else { n.to_string() };
        let byte = if negative && !byte.starts_with('-') { format!("-{byte}") } else { byte };
        let text = format!(r#"{{"records":{{"t-0":[{{"offset":0,"headers":[{{"h":[1,{byte}]}}]}}]}}}}"#);
        let batch = decode_event(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let in_range = byte.parse::<i64>().is_ok_and(|b| (-128..=255).contains(&b));
        prop_assert_eq!(
            matches!(batch.partitions[0].records[0], DecodedRecord::Record(_)),
            in_range,
            "{}", text
        );
    }

    /// The record `esm poll` writes to an SQS queue or a file names every given-up partition, from
    /// its lowest to its highest offset.
    #[test]
    fn on_failure_record_of_poll_gives_back_its_ranges(spec in give_up_spec(12, 0..=i64::MAX)) {
        let json = on_failure_record(&spec.give_up(), spec.now_ms);
        let parsed = OnFailureRecord::parse(&json.to_string());
        if spec.records.is_empty() {
            prop_assert_eq!(parsed, Err(MalformedRecord::NoRanges));
            return Ok(());
        }
        let r = parsed.map_err(|e| TestCaseError::fail(format!("{e}: {json}")))?;
        prop_assert_eq!(plain(&r.ranges), ranges_of(&spec.records));
        spec.check_context(&r, spec.condition)?;
        prop_assert_eq!(r.batch_size, Some(spec.records.len() as u64));
        prop_assert!(r.carried.is_none());
    }

    /// Each message of a Kafka-topic destination carries its record: parsed back, it is the record
    /// itself (as an event object), and its one range is that record's offset.
    #[test]
    fn kafka_destination_messages_carry_each_record(spec in give_up_spec(5, any::<i64>())) {
        let messages = kafka_destination_messages(&spec.give_up(), spec.now_ms);
        prop_assert_eq!(messages.len(), spec.records.len());
        let condition = match spec.condition {
            "RetryAttemptsExhausted" => "RetriesExhausted",
            other => other,
        };
        for ((key, message), record) in messages.iter().zip(&spec.records) {
            prop_assert_eq!(key, &record.key);
            let r = OnFailureRecord::parse(&message.to_string())
                .map_err(|e| TestCaseError::fail(format!("{e}: {message}")))?;
            spec.check_context(&r, condition)?;
            prop_assert_eq!(r.batch_size, Some(1));
            prop_assert_eq!(
                plain(&r.ranges),
                vec![(record.topic.clone(), record.partition, record.offset, record.offset)]
            );
            let carried = r.carried.as_ref().expect("the record is in the payload");
            prop_assert_eq!(carried.form, PayloadForm::EventObject);
            prop_assert_eq!(&carried.event_source_arn, &spec.event_source_arn);
            prop_assert_eq!(carried.bootstrap_servers.as_deref(), Some(spec.bootstrap_servers.as_str()));
            prop_assert_eq!(&carried.records, &vec![DecodedRecord::Record(record.clone())]);
            prop_assert_eq!(carried.in_range(&r.ranges[0]).count(), 1);
        }
    }

    /// The record of an S3 destination carries the whole event: parsed back, every record is there,
    /// by topic-partition in order, and each range spans its partition's records.
    #[test]
    fn s3_destination_record_carries_every_record(spec in give_up_spec(12, any::<i64>())) {
        let json = s3_destination_record(&spec.give_up(), spec.now_ms);
        let parsed = OnFailureRecord::parse(&json.to_string());
        if spec.records.is_empty() {
            prop_assert_eq!(parsed, Err(MalformedRecord::NoRanges));
            return Ok(());
        }
        let r = parsed.map_err(|e| TestCaseError::fail(format!("{e}: {json}")))?;
        spec.check_context(&r, spec.condition)?;
        prop_assert_eq!(plain(&r.ranges), ranges_of(&spec.records));
        let carried = r.carried.as_ref().expect("the records are in the payload");
        prop_assert_eq!(carried.form, PayloadForm::EventString);
        prop_assert_eq!(&carried.event_source_arn, &spec.event_source_arn);
        let expected: Vec<DecodedRecord> =
            by_partition(&spec.records).into_iter().map(DecodedRecord::Record).collect();
        prop_assert_eq!(&carried.records, &expected);
        for range in &r.ranges {
            let of_partition = spec
                .records
                .iter()
                .filter(|x| x.topic == range.topic && x.partition == range.partition)
                .count();
            prop_assert_eq!(carried.in_range(range).count(), of_partition);
        }
    }
}
