//! How metrics travel: JSON (the default), or Avro or Protobuf behind a schema registry.
//!
//! The schemas are `events/schemas/metric.avsc` and `events/schemas/metric.proto`, compiled into
//! the binaries. `METRIC_FORMAT` says which one a function reads or writes; both sides must agree.
//!
//! - **Reading** ([`MetricDecoder`]): any shape the library's formats take (Confluent or Glue
//!   framing, the ESM's `SOURCE` and `JSON` shapes, plain bytes). Avro records are resolved to the
//!   app's own schema, so a producer on an older or newer version of it still reads; the writer's
//!   schema comes from the schema source (`SCHEMA_DIR` or `SCHEMA_REGISTRY_URL`) when the bytes
//!   name one, else the app's own schema is taken as the writer's. Protobuf reads the prost message
//!   whatever the schema id (unknown fields are skipped).
//! - **Writing** ([`MetricEncoder`]): Confluent framing with a schema id (a number) or Glue framing
//!   with a schema version (a UUID); the producer registers its schema with a Confluent registry
//!   to get the id, or is given one (`METRIC_SCHEMA_ID`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use apache_avro::writer::datum::GenericDatumWriter;
use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use kafka_esm::format::wire::{frame_confluent, frame_glue};
use kafka_esm::format::{
    Avro, Json, Protobuf, SchemaCache, SchemaError, SchemaId, SchemaKind, ValueFormat,
};
use kafka_esm::handler::DeserializeError;
use kafka_esm::record::KafkaRecord;

use crate::MetricEvent;

/// The Avro schema of a metric (`events/schemas/metric.avsc`).
pub const METRIC_AVSC: &str = include_str!("../../events/schemas/metric.avsc");
/// The Protobuf schema of a metric (`events/schemas/metric.proto`).
pub const METRIC_PROTO: &str = include_str!("../../events/schemas/metric.proto");
/// The metric's message in [`METRIC_PROTO`].
pub const METRIC_MESSAGE: &str = "telemetry.v1.MetricEvent";

/// How a metric's value is written (`METRIC_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MetricFormat {
    /// JSON text (`json`, the default).
    #[default]
    Json,
    /// Avro binary of [`METRIC_AVSC`] (`avro`).
    Avro,
    /// Protobuf of [`METRIC_PROTO`] (`protobuf`).
    Protobuf,
}

impl MetricFormat {
    /// `json`, `avro` or `protobuf`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Avro => "avro",
            Self::Protobuf => "protobuf",
        }
    }

    /// The schema a producer registers for this format; none for JSON.
    pub fn schema(self) -> Option<(SchemaKind, &'static str)> {
        match self {
            Self::Json => None,
            Self::Avro => Some((SchemaKind::Avro, METRIC_AVSC)),
            Self::Protobuf => Some((SchemaKind::Protobuf, METRIC_PROTO)),
        }
    }
}

impl fmt::Display for MetricFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MetricFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "avro" => Ok(Self::Avro),
            "protobuf" | "proto" => Ok(Self::Protobuf),
            _ => Err(format!(
                "{text:?} is not a metric format: expected json, avro or protobuf"
            )),
        }
    }
}

/// A metric as [`METRIC_AVSC`] has it (serde; `timestamp` in epoch milliseconds). Named like the
/// Avro record, so that the library reads it in one pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename = "MetricEvent")]
struct AvroMetric {
    event_id: Option<String>,
    timestamp: i64,
    database_type: String,
    instance_id: String,
    metric_name: String,
    value: f64,
    tags: Option<BTreeMap<String, String>>,
}

/// A metric as [`METRIC_PROTO`] has it (a prost message).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricProto {
    /// Business id.
    #[prost(string, optional, tag = "1")]
    pub event_id: Option<String>,
    /// When the metric was taken.
    #[prost(message, optional, tag = "2")]
    pub timestamp: Option<prost_types::Timestamp>,
    /// Database engine.
    #[prost(string, tag = "3")]
    pub database_type: String,
    /// Instance id.
    #[prost(string, tag = "4")]
    pub instance_id: String,
    /// Metric name.
    #[prost(string, tag = "5")]
    pub metric_name: String,
    /// Observed value.
    #[prost(double, tag = "6")]
    pub value: f64,
    /// Free-form tags.
    #[prost(btree_map = "string, string", tag = "7")]
    pub tags: BTreeMap<String, String>,
}

fn utc(timestamp: DateTime<Utc>) -> DateTime<FixedOffset> {
    timestamp.fixed_offset()
}

impl TryFrom<AvroMetric> for MetricEvent {
    type Error = DeserializeError;

    fn try_from(m: AvroMetric) -> Result<Self, DeserializeError> {
        let timestamp = Utc
            .timestamp_millis_opt(m.timestamp)
            .single()
            .ok_or_else(|| {
                DeserializeError::new(format!("`timestamp` {} ms is out of range", m.timestamp))
            })?;
        Ok(MetricEvent {
            event_id: m.event_id,
            timestamp: utc(timestamp),
            database_type: m.database_type,
            instance_id: m.instance_id,
            metric_name: m.metric_name,
            value: m.value,
            tags: m.tags,
        })
    }
}

impl From<&MetricEvent> for AvroMetric {
    fn from(m: &MetricEvent) -> Self {
        AvroMetric {
            event_id: m.event_id.clone(),
            timestamp: m.timestamp.timestamp_millis(),
            database_type: m.database_type.clone(),
            instance_id: m.instance_id.clone(),
            metric_name: m.metric_name.clone(),
            value: m.value,
            tags: m.tags.clone(),
        }
    }
}

impl TryFrom<MetricProto> for MetricEvent {
    type Error = DeserializeError;

    fn try_from(m: MetricProto) -> Result<Self, DeserializeError> {
        let at = m
            .timestamp
            .ok_or_else(|| DeserializeError::new("`timestamp` is missing"))?;
        let nanos = u32::try_from(at.nanos)
            .ok()
            .filter(|n| *n < 1_000_000_000)
            .ok_or_else(|| {
                DeserializeError::new(format!("`timestamp` has {} nanoseconds", at.nanos))
            })?;
        let timestamp = DateTime::from_timestamp(at.seconds, nanos).ok_or_else(|| {
            DeserializeError::new(format!("`timestamp` {} s is out of range", at.seconds))
        })?;
        Ok(MetricEvent {
            event_id: m.event_id,
            timestamp: utc(timestamp),
            database_type: m.database_type,
            instance_id: m.instance_id,
            metric_name: m.metric_name,
            value: m.value,
            tags: (!m.tags.is_empty()).then_some(m.tags),
        })
    }
}

impl From<&MetricEvent> for MetricProto {
    fn from(m: &MetricEvent) -> Self {
        MetricProto {
            event_id: m.event_id.clone(),
            timestamp: Some(prost_types::Timestamp {
                seconds: m.timestamp.timestamp(),
                nanos: m.timestamp.timestamp_subsec_nanos() as i32,
            }),
            database_type: m.database_type.clone(),
            instance_id: m.instance_id.clone(),
            metric_name: m.metric_name.clone(),
            value: m.value,
            tags: m.tags.clone().unwrap_or_default(),
        }
    }
}

enum Decoder {
    Json(Json<MetricEvent>),
    Avro(Avro<AvroMetric>),
    Protobuf(Protobuf<MetricProto>),
}

/// Reads metrics in one [`MetricFormat`].
pub struct MetricDecoder {
    format: MetricFormat,
    decoder: Decoder,
}

impl fmt::Debug for MetricDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricDecoder")
            .field("format", &self.format)
            .finish()
    }
}

impl Default for MetricDecoder {
    fn default() -> Self {
        Self::json()
    }
}

impl MetricDecoder {
    /// JSON metrics.
    pub fn json() -> Self {
        Self {
            format: MetricFormat::Json,
            decoder: Decoder::Json(Json::new()),
        }
    }

    /// Metrics in `format`; Avro writer schemas the bytes name are looked up in `schemas`.
    pub fn new(format: MetricFormat, schemas: Option<Arc<SchemaCache>>) -> Self {
        let decoder = match format {
            MetricFormat::Json => Decoder::Json(Json::new()),
            MetricFormat::Avro => {
                let avro = Avro::new()
                    .writer_schema(METRIC_AVSC)
                    .and_then(|a| a.reader_schema(METRIC_AVSC))
                    .expect("metric.avsc parses (a unit test checks it)");
                Decoder::Avro(match schemas {
                    Some(schemas) => avro.schemas(schemas),
                    None => avro,
                })
            }
            MetricFormat::Protobuf => Decoder::Protobuf(
                Protobuf::new()
                    .proto(METRIC_PROTO, METRIC_MESSAGE)
                    .expect("metric.proto compiles (a unit test checks it)"),
            ),
        };
        Self { format, decoder }
    }

    /// The format read.
    pub fn format(&self) -> MetricFormat {
        self.format
    }

    /// The record's value as a valid metric; an error is poison unless it is transient (a schema
    /// registry out of reach).
    pub fn decode(&self, record: &KafkaRecord) -> Result<MetricEvent, DeserializeError> {
        let metric = match &self.decoder {
            Decoder::Json(json) => json.decode(record)?,
            Decoder::Avro(avro) => avro.decode(record)?.try_into()?,
            Decoder::Protobuf(protobuf) => protobuf.decode(record)?.try_into()?,
        };
        metric.validate()?;
        Ok(metric)
    }

    /// Fetches the writer schemas `records` name that are not cached yet (Avro with a registry);
    /// nothing to do for the other formats.
    pub async fn prefetch<'r>(
        &self,
        records: impl IntoIterator<Item = &'r KafkaRecord>,
    ) -> Result<(), SchemaError> {
        match &self.decoder {
            Decoder::Avro(avro) => avro.prefetch(records).await,
            Decoder::Json(_) | Decoder::Protobuf(_) => Ok(()),
        }
    }
}

/// Writes metrics in one [`MetricFormat`], framed for the schema the consumer will look up.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricEncoder {
    format: MetricFormat,
    schema_id: Option<SchemaId>,
}

/// [`METRIC_AVSC`], parsed once per process.
static METRIC_SCHEMA: LazyLock<apache_avro::Schema> = LazyLock::new(|| {
    apache_avro::Schema::parse_str(METRIC_AVSC).expect("metric.avsc parses (a unit test checks it)")
});

/// The Avro writer of metrics, built once (building one resolves the schema's names).
static METRIC_WRITER: LazyLock<GenericDatumWriter<'static>> = LazyLock::new(|| {
    GenericDatumWriter::builder(&METRIC_SCHEMA)
        .build()
        .expect("metric.avsc makes a writer (a unit test checks it)")
});

impl MetricEncoder {
    /// Plain JSON, as the producer has always written.
    pub fn json() -> Self {
        Self {
            format: MetricFormat::Json,
            schema_id: None,
        }
    }

    /// Metrics in `format`, framed with `schema_id`: Confluent framing for a number, Glue framing
    /// for a UUID. Avro and Protobuf need an id (the consumer finds the schema by it); JSON takes
    /// none (it is written plain).
    pub fn new(format: MetricFormat, schema_id: Option<SchemaId>) -> Result<Self, String> {
        match (format, schema_id) {
            (MetricFormat::Json, None) => Ok(Self::json()),
            (MetricFormat::Json, Some(_)) => Err(
                "JSON metrics are written plain: a schema id is for METRIC_FORMAT=avro or protobuf"
                    .into(),
            ),
            (_, None) => Err(format!(
                "{format} metrics are framed with their schema's id: register the schema with a Confluent registry (SCHEMA_REGISTRY_URL) or give its id (METRIC_SCHEMA_ID)"
            )),
            (format, Some(id)) => Ok(Self {
                format,
                schema_id: Some(id),
            }),
        }
    }

    /// The format written.
    pub fn format(&self) -> MetricFormat {
        self.format
    }

    /// The schema id the values are framed with.
    pub fn schema_id(&self) -> Option<SchemaId> {
        self.schema_id
    }

    /// The value of a metric's record.
    pub fn encode(&self, metric: &MetricEvent) -> Result<Vec<u8>, String> {
        let body = match self.format {
            MetricFormat::Json => return serde_json::to_vec(metric).map_err(|e| e.to_string()),
            MetricFormat::Avro => METRIC_WRITER
                .write_ser_to_vec(&AvroMetric::from(metric))
                .map_err(|e| format!("the metric does not encode as Avro: {e}"))?,
            MetricFormat::Protobuf => prost::Message::encode_to_vec(&MetricProto::from(metric)),
        };
        // Protobuf names its message: the first (and only) of metric.proto.
        let index = self.format == MetricFormat::Protobuf;
        Ok(match self.schema_id.expect("set for a schema format") {
            SchemaId::Confluent(id) => frame_confluent(id, index.then_some(&[0][..]), &body),
            SchemaId::Glue(version) => frame_glue(version, index.then_some(0), &body),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_esm::format::LocalDirectory;
    use kafka_esm::record::SchemaMetadata;

    fn metric(event_id: Option<&str>, tags: bool) -> MetricEvent {
        MetricEvent {
            event_id: event_id.map(Into::into),
            timestamp: DateTime::parse_from_rfc3339("2026-11-22T10:00:00.123Z").unwrap(),
            database_type: "postgres".into(),
            instance_id: "db-1".into(),
            metric_name: "cpu_usage_percent".into(),
            value: 91.5,
            tags: tags.then(|| BTreeMap::from([("region".into(), "eu-west-1".into())])),
        }
    }

    fn record(value: Vec<u8>) -> KafkaRecord {
        let mut r = KafkaRecord::new("telemetry.metrics", 0, 1);
        r.value = Some(value);
        r
    }

    #[test]
    fn the_schemas_compile() {
        LazyLock::force(&METRIC_WRITER);
        Protobuf::<MetricProto>::new()
            .proto(METRIC_PROTO, METRIC_MESSAGE)
            .unwrap();
    }

    #[test]
    fn each_format_reads_back_what_the_encoder_writes() {
        let glue: SchemaId = "7d55d475-2244-4485-8341-f74468c1e058".parse().unwrap();
        for format in [MetricFormat::Avro, MetricFormat::Protobuf] {
            for id in [SchemaId::Confluent(7), glue] {
                let encoder = MetricEncoder::new(format, Some(id)).unwrap();
                let decoder = MetricDecoder::new(format, None);
                for m in [metric(Some("e1"), true), metric(None, false)] {
                    let bytes = encoder.encode(&m).unwrap();
                    assert_eq!(
                        kafka_esm::format::wire::framed_schema_id(&bytes),
                        Some(id),
                        "{format}"
                    );
                    assert_eq!(decoder.decode(&record(bytes)).unwrap(), m, "{format} {id}");
                }
            }
        }
        let json = MetricEncoder::json()
            .encode(&metric(Some("e1"), true))
            .unwrap();
        assert_eq!(
            MetricDecoder::json().decode(&record(json)).unwrap(),
            metric(Some("e1"), true)
        );
    }

    #[test]
    fn avro_finds_the_writer_schema_the_bytes_name() {
        // An older producer's schema (no tags), registered as id 3: resolved to the app's.
        let old = r#"{"type":"record","name":"MetricEvent","namespace":"telemetry.v1","fields":[
            {"name":"event_id","type":["null","string"],"default":null},
            {"name":"timestamp","type":{"type":"long","logicalType":"timestamp-millis"}},
            {"name":"database_type","type":"string"},{"name":"instance_id","type":"string"},
            {"name":"metric_name","type":"string"},{"name":"value","type":"double"}]}"#;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("3.avsc"), old).unwrap();
        let schemas = Arc::new(SchemaCache::new(LocalDirectory::new(dir.path())));
        let decoder = MetricDecoder::new(MetricFormat::Avro, Some(schemas));
        let old_schema = apache_avro::Schema::parse_str(old).unwrap();
        let mut m = metric(Some("e1"), false);
        #[derive(Serialize)]
        struct Old<'a> {
            event_id: Option<&'a str>,
            timestamp: i64,
            database_type: &'a str,
            instance_id: &'a str,
            metric_name: &'a str,
            value: f64,
        }
        let body = apache_avro::writer::datum::GenericDatumWriter::builder(&old_schema)
            .build()
            .unwrap()
            .write_ser_to_vec(&Old {
                event_id: Some("e1"),
                timestamp: m.timestamp.timestamp_millis(),
                database_type: "postgres",
                instance_id: "db-1",
                metric_name: "cpu_usage_percent",
                value: 91.5,
            })
            .unwrap();
        m.tags = None;
        assert_eq!(
            decoder
                .decode(&record(frame_confluent(3, None, &body)))
                .unwrap(),
            m
        );
        // An id the source does not hold is poison, naming it.
        let err = decoder
            .decode(&record(frame_confluent(4, None, &body)))
            .unwrap_err();
        assert!(!err.is_transient(), "{err}");
        assert!(err.message.contains('4'), "{err}");
    }

    #[test]
    fn the_esm_source_shape_reads_too() {
        // With a registry on the mapping, the header is gone and the metadata names the schema.
        let encoder =
            MetricEncoder::new(MetricFormat::Protobuf, Some(SchemaId::Confluent(9))).unwrap();
        let framed = encoder.encode(&metric(Some("e2"), false)).unwrap();
        let mut r = record(framed[5..].to_vec());
        r.value_schema = Some(SchemaMetadata {
            data_format: Some("PROTOBUF".into()),
            schema_id: Some("9".into()),
        });
        let decoder = MetricDecoder::new(MetricFormat::Protobuf, None);
        assert_eq!(decoder.decode(&r).unwrap(), metric(Some("e2"), false));
    }

    #[test]
    fn what_is_not_a_metric_is_poison() {
        let encoder =
            MetricEncoder::new(MetricFormat::Protobuf, Some(SchemaId::Confluent(1))).unwrap();
        let mut empty = metric(None, false);
        empty.database_type.clear();
        let decoder = MetricDecoder::new(MetricFormat::Protobuf, None);
        let err = decoder
            .decode(&record(encoder.encode(&empty).unwrap()))
            .unwrap_err();
        assert!(err.message.contains("database_type"), "{err}");
        // Protobuf without a timestamp.
        let no_time = MetricProto {
            timestamp: None,
            ..MetricProto::from(&metric(None, false))
        };
        let bytes = frame_confluent(1, Some(&[0]), &prost::Message::encode_to_vec(&no_time));
        assert!(
            decoder
                .decode(&record(bytes))
                .unwrap_err()
                .message
                .contains("timestamp")
        );
        // JSON read as Avro.
        let err = MetricDecoder::new(MetricFormat::Avro, None)
            .decode(&record(br#"{"value": 1"#.to_vec()))
            .unwrap_err();
        assert!(!err.is_transient(), "{err}");
    }

    #[test]
    fn formats_and_ids_are_checked() {
        assert_eq!("AVRO".parse(), Ok(MetricFormat::Avro));
        assert_eq!(" protobuf ".parse(), Ok(MetricFormat::Protobuf));
        assert!(
            "xml"
                .parse::<MetricFormat>()
                .unwrap_err()
                .contains("expected json")
        );
        assert!(MetricEncoder::new(MetricFormat::Avro, None).is_err());
        assert!(MetricEncoder::new(MetricFormat::Json, Some(SchemaId::Confluent(1))).is_err());
    }
}
