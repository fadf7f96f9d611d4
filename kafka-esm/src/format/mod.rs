//! Formats: how a record's key or value bytes become typed events.
//!
//! | format | crate feature | reads |
//! |---|---|---|
//! | [`Json<T>`] | none | JSON text through serde |
//! | `Avro<T>` | `avro` | Avro binary through apache-avro and serde, or a JSON view |
//! | `Protobuf<M>` | `protobuf` | a prost message, or a JSON view through descriptors |
//! | `JsonSchema<T>` | `json-schema` | JSON validated against a JSON Schema, then serde |
//!
//! Each reads the value by default, or the key ([`Part`]); each implements [`ValueFormat`], so a
//! [`RecordHandler::deserialize`](crate::RecordHandler::deserialize) is one line. Each removes the
//! framing a schema registry adds (module [`wire`], setting [`WireFormat`]) and finds the schema
//! the bytes were written with through one [`SchemaSource`] trait, behind a per-container
//! [`SchemaCache`]. Sources here: [`LocalDirectory`] and [`MemorySchemas`].
//!
//! # What reaches the function
//!
//! From the AWS Lambda developer guide, "Using schema registries with Kafka event sources in
//! Lambda", and the API reference of `KafkaSchemaRegistryConfig` and `KafkaSchemaValidationConfig`:
//!
//! - A schema registry on the event source mapping is for **provisioned mode only**, one registry
//!   per mapping: the AWS Glue Schema Registry (`SchemaRegistryURI` is the registry's ARN) or a
//!   Confluent Schema Registry, Confluent Cloud or self-managed (its URL). It validates Apache
//!   Avro, Protocol Buffers and JSON Schema. "When you use a schema registry, Lambda adds metadata
//!   about the schema to the payload."
//! - The mapping validates the attributes its `SchemaValidationConfigs` select (`KEY`, `VALUE`).
//!   A record whose schema is not found goes to the on-failure destination with the reason
//!   `SCHEMA_NOT_FOUND`; one that fails to deserialize, with `DESERIALIZATION_ERROR`; without a
//!   destination, Lambda drops it. Such records **never reach the function**.
//! - `EventRecordFormat: SOURCE`: "Lambda delivers the record to your function in its original
//!   source format. Lambda removes all schema metadata, such as the schema ID, before sending the
//!   record to your function." The record carries `keySchemaMetadata` / `valueSchemaMetadata`
//!   `{"dataFormat": "AVRO" | "PROTOBUF" | "JSON", "schemaId": "..."}`: `schemaId` is a number for
//!   Confluent, a UUID for Glue.
//! - `EventRecordFormat: JSON`: Lambda delivers the record "as a standard JSON object"; "if you
//!   selected JSON as the EventRecordFormat, Lambda also deserializes the selected message
//!   attributes". The selected key or value is then JSON text (base64 in the event, like any key or
//!   value), whatever the producer wrote.
//! - With **no registry** on the mapping (on-demand mode, or provisioned without one), `key` and
//!   `value` are the producer's exact bytes, with no schema metadata: a schema-registry producer's
//!   bytes keep their framing.
//!
//! The guide's section "Payload formats and deserialization behavior" could not be read in full
//! where this was written; what the API text leaves open is taken from the events Powertools for
//! AWS Lambda captured and tests against (`events/schema-registry/`): in the `SOURCE` shape a
//! Protobuf value **keeps its message index** (Confluent's list when `schemaId` is a number,
//! Glue's varint when it is a UUID), and a record may carry `valueSchemaMetadata` without a
//! `schemaId` (its bytes are then plain).
//!
//! # The three shapes, and the wire-format setting
//!
//! - **No metadata, framed by the producer.** Confluent: `0x00`, the schema id (4 bytes, big
//!   endian), for Protobuf the message-index list (zigzag varints: the length, then the indexes; a
//!   single `0x00` for `[0]`), the body. Glue: `0x03`, a compression byte (`0` none, `5` zlib), the
//!   16-byte schema-version UUID, then the body (zlib-compressed when the byte says so), which for
//!   Protobuf starts with one unsigned varint message index.
//! - **Metadata present (`SOURCE`).** No header; the id is the metadata's `schemaId`.
//! - **Metadata present (`JSON`).** JSON text: read it with [`Json<T>`] (or `JsonSchema<T>`);
//!   `Avro<T>` also takes it (a JSON object's text where Avro binary was expected) and serde reads
//!   it into `T`, and `Protobuf<M>` parses it through descriptors when it has them.
//!
//! [`WireFormat::Auto`] (the default) recognises all of them. A producer whose plain binary could
//! begin like a header (an Avro record whose first field is `0`, `""` or a union's first branch
//! begins with `0x00`) must be read with [`WireFormat::None`]. The formats' settings must match the
//! mapping's: a schema format for the attributes the mapping validates in `SOURCE`, [`Json<T>`]
//! for those it delivers in `JSON`.
//!
//! # Poison or retry
//!
//! Bytes that do not decode, a header that is not what the setting requires, an unknown schema
//! id: the record is poison ([`DeserializeError::new`]), and its dead letter names the schema id
//! (from the metadata, or from the bytes' own header: see [`crate::dead_letter::headers`]). A
//! schema source that cannot be reached is not the record's fault: the error is
//! [`DeserializeError::transient`] ([`SchemaError::is_transient`]).
//!
//! # Synchronous decoding, asynchronous registries
//!
//! [`ValueFormat::decode`] is synchronous and takes no extra allocation or await for [`Json<T>`].
//! A schema format looks its schema up in its own compiled cache first, then in the
//! [`SchemaCache`] without waiting ([`SchemaCache::get_now`]): a source that can answer at once
//! (a directory, a map) is asked there and then; one that must wait for the network is asked
//! beforehand with the format's `prefetch` (every schema id of a chunk of records, fetched
//! concurrently, once per container), and a decode that finds the schema missing is transient
//! ([`SchemaError::NotFetched`]).

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};

use serde::de::DeserializeOwned;

use crate::handler::DeserializeError;
use crate::record::{KafkaRecord, SchemaMetadata};

#[cfg(feature = "avro")]
mod avro;
mod cache;
#[cfg(feature = "json-schema")]
mod json_schema;
mod local;
#[cfg(feature = "protobuf")]
mod protobuf;
pub mod schema;
pub mod wire;

#[cfg(feature = "avro")]
pub use avro::Avro;
pub use cache::SchemaCache;
#[cfg(feature = "json-schema")]
pub use json_schema::JsonSchema;
pub use local::{LocalDirectory, MemorySchemas};
#[cfg(feature = "protobuf")]
pub use protobuf::Protobuf;
pub use schema::{
    InvalidSchema, Schema, SchemaError, SchemaId, SchemaKind, SchemaReference, SchemaSource,
};
pub use wire::WireFormat;

/// Turns a record's bytes (its value, or its key for a format set to [`Part::Key`]) into `T`.
pub trait ValueFormat<T>: Send + Sync {
    /// Decodes the record. An error is poison (the same bytes will never decode) unless it is
    /// [transient](DeserializeError::is_transient) (a schema source could not be reached).
    fn decode(&self, record: &KafkaRecord) -> Result<T, DeserializeError>;
}

/// Which part of a record a format reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Part {
    /// The key (`key`, `keySchemaMetadata`).
    Key,
    /// The value (`value`, `valueSchemaMetadata`).
    #[default]
    Value,
}

impl Part {
    /// The part's bytes, if the record has them.
    pub fn bytes(self, record: &KafkaRecord) -> Option<&[u8]> {
        match self {
            Self::Key => record.key.as_deref(),
            Self::Value => record.value.as_deref(),
        }
    }

    /// The ESM's schema metadata for the part, if any.
    pub fn metadata(self, record: &KafkaRecord) -> Option<&SchemaMetadata> {
        match self {
            Self::Key => record.key_schema.as_ref(),
            Self::Value => record.value_schema.as_ref(),
        }
    }

    /// The part's bytes and metadata; a missing part (no key; a tombstone's value) is poison.
    pub fn read(
        self,
        record: &KafkaRecord,
    ) -> Result<(&[u8], Option<&SchemaMetadata>), DeserializeError> {
        let bytes = self.bytes(record).ok_or_else(|| {
            DeserializeError::new(match self {
                Self::Key => "the record has no key",
                Self::Value => "the record has no value (a tombstone)",
            })
        })?;
        Ok((bytes, self.metadata(record)))
    }

    /// `key` or `value`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Value => "value",
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// JSON through serde, for the value (or the key, with [`Json::key`]). A header a schema-registry
/// producer put before the JSON is removed, whether or not the ESM sent schema metadata (JSON text
/// never begins like one), unless the wire format is [`WireFormat::None`].
///
/// ```
/// use kafka_esm::format::{Json, ValueFormat};
/// use kafka_esm::KafkaRecord;
///
/// let mut record = KafkaRecord::new("orders", 0, 7);
/// record.key = Some(b"42".to_vec());
/// record.value = Some(br#"{"id":1001}"#.to_vec());
/// let value: serde_json::Value = Json::new().decode(&record).unwrap();
/// let key: u32 = Json::new().key().decode(&record).unwrap();
/// assert_eq!((key, value["id"].as_u64()), (42, Some(1001)));
/// ```
pub struct Json<T> {
    part: Part,
    wire: WireFormat,
    target: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Json<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Json")
            .field("part", &self.part)
            .field("wire", &self.wire)
            .finish()
    }
}

impl<T> Clone for Json<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Json<T> {}

impl<T> Json<T> {
    /// The JSON format for `T`, reading the value, with [`WireFormat::Auto`].
    pub const fn new() -> Self {
        Self {
            part: Part::Value,
            wire: WireFormat::Auto,
            target: PhantomData,
        }
    }

    /// Reads the key instead of the value.
    pub const fn key(self) -> Self {
        self.part(Part::Key)
    }

    /// Reads this part of the record.
    pub const fn part(mut self, part: Part) -> Self {
        self.part = part;
        self
    }

    /// Expects this framing.
    pub const fn wire_format(mut self, wire: WireFormat) -> Self {
        self.wire = wire;
        self
    }
}

impl<T> Default for Json<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: DeserializeOwned> ValueFormat<T> for Json<T> {
    fn decode(&self, record: &KafkaRecord) -> Result<T, DeserializeError> {
        let (bytes, metadata) = self.part.read(record)?;
        let unframed = wire::unframe(bytes, metadata, self.wire, wire::Payload::Text)?;
        serde_json::from_slice(&unframed.body).map_err(|e| {
            DeserializeError::new(format!("the {} is not the expected JSON: {e}", self.part))
        })
    }
}

/// Splits a Confluent-framed payload into its schema id and the payload, when `bytes` is framed
/// (magic byte 0 followed by a 4-byte big-endian schema id). See [`wire::unframe`] for every shape.
pub fn unframe_confluent(bytes: &[u8]) -> Option<(u32, &[u8])> {
    match bytes {
        [0, a, b, c, d, payload @ ..] => Some((u32::from_be_bytes([*a, *b, *c, *d]), payload)),
        _ => None,
    }
}

/// The schema id of a record's part, read without decoding it: from the ESM's metadata, else from
/// the bytes' header as `wire` allows. What a format's `prefetch` fetches.
pub fn schema_id_of(record: &KafkaRecord, part: Part, wire: WireFormat) -> Option<SchemaId> {
    if let Some(metadata) = part.metadata(record) {
        return metadata.schema_id.as_deref()?.parse().ok();
    }
    let id = wire::framed_schema_id(part.bytes(record)?)?;
    match (wire, id) {
        (WireFormat::Auto, _)
        | (WireFormat::Confluent, SchemaId::Confluent(_))
        | (WireFormat::Glue, SchemaId::Glue(_)) => Some(id),
        _ => None,
    }
}

/// A schema format's way to its schemas: the shared [`SchemaCache`], and its own cache of the
/// schemas it compiled (parsed Avro, a descriptor pool, a JSON Schema validator), one lookup per
/// record once warm. A schema that does not compile is remembered as such (it is poison for good);
/// a transient failure is not.
#[cfg_attr(
    not(any(feature = "avro", feature = "protobuf", feature = "json-schema")),
    allow(dead_code)
)]
pub(crate) struct Compiled<C> {
    schemas: Option<Arc<SchemaCache>>,
    compiled: RwLock<HashMap<SchemaId, Result<Arc<C>, SchemaError>>>,
}

#[cfg_attr(
    not(any(feature = "avro", feature = "protobuf", feature = "json-schema")),
    allow(dead_code)
)]
impl<C> Compiled<C> {
    pub(crate) fn new() -> Self {
        Self {
            schemas: None,
            compiled: RwLock::new(HashMap::new()),
        }
    }

    pub(crate) fn set_source(&mut self, schemas: Arc<SchemaCache>) {
        self.schemas = Some(schemas);
    }

    pub(crate) fn has_source(&self) -> bool {
        self.schemas.is_some()
    }

    /// The compiled schema `id`: compiled once from the source's text, which must be of `kind`.
    pub(crate) fn get(
        &self,
        id: &SchemaId,
        kind: SchemaKind,
        compile: impl FnOnce(&Schema) -> Result<C, String>,
    ) -> Result<Arc<C>, SchemaError> {
        if let Some(found) = self
            .compiled
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            return found.clone();
        }
        let Some(schemas) = &self.schemas else {
            return Err(SchemaError::NotFound {
                id: *id,
                source_name: "(no schema source given to the format)".into(),
            });
        };
        let schema = schemas.get_now(id)?;
        let compiled = if schema.kind != kind {
            Err(SchemaError::Invalid {
                id: *id,
                message: format!("it is a {} schema, not {kind}", schema.kind),
            })
        } else {
            compile(&schema)
                .map(Arc::new)
                .map_err(|message| SchemaError::Invalid { id: *id, message })
        };
        self.compiled
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(*id, compiled.clone());
        compiled
    }

    /// Fetches the schemas of `records`' `part` that are not compiled yet.
    pub(crate) async fn prefetch<'r>(
        &self,
        records: impl IntoIterator<Item = &'r KafkaRecord>,
        part: Part,
        wire: WireFormat,
    ) -> Result<(), SchemaError> {
        let Some(schemas) = &self.schemas else {
            return Ok(());
        };
        let ids: Vec<SchemaId> = {
            let compiled = self.compiled.read().unwrap_or_else(|e| e.into_inner());
            records
                .into_iter()
                .filter_map(|r| schema_id_of(r, part, wire))
                .filter(|id| !compiled.contains_key(id))
                .collect()
        };
        schemas.prefetch(ids).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::SchemaMetadata;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Thing {
        n: u32,
    }

    fn record(value: Option<&[u8]>) -> KafkaRecord {
        let mut r = KafkaRecord::new("t", 0, 1);
        r.value = value.map(<[u8]>::to_vec);
        r
    }

    #[test]
    fn json_decodes_a_value() {
        let thing: Thing = Json::new().decode(&record(Some(br#"{"n":3}"#))).unwrap();
        assert_eq!(thing, Thing { n: 3 });
    }

    #[test]
    fn json_decodes_a_key() {
        let mut r = record(Some(br#"{"n":3}"#));
        r.key = Some(b"42".to_vec());
        let key: u32 = Json::new().key().decode(&r).unwrap();
        assert_eq!(key, 42);
        r.key = None;
        let err = Json::<u32>::new().key().decode(&r).unwrap_err();
        assert_eq!(err.message, "the record has no key");
    }

    #[test]
    fn a_tombstone_is_not_json() {
        let err = Json::<Thing>::new().decode(&record(None)).unwrap_err();
        assert!(err.message.contains("tombstone"), "{err}");
        assert!(!err.is_transient());
    }

    #[test]
    fn bad_json_names_the_problem() {
        let err = Json::<Thing>::new()
            .decode(&record(Some(b"{\"n\":\"x\"}")))
            .unwrap_err();
        assert!(err.message.contains("invalid type"), "{err}");
        assert!(
            err.message
                .starts_with("the value is not the expected JSON"),
            "{err}"
        );
    }

    #[test]
    fn a_schema_registry_frame_is_removed() {
        let mut framed = vec![0, 0, 0, 1, 44];
        framed.extend_from_slice(br#"{"n":7}"#);
        let mut r = record(Some(&framed));
        r.value_schema = Some(SchemaMetadata {
            data_format: Some("JSON".into()),
            schema_id: Some("300".into()),
        });
        assert_eq!(unframe_confluent(&framed).unwrap().0, 300);
        let thing: Thing = Json::new().decode(&r).unwrap();
        assert_eq!(thing, Thing { n: 7 });
        // Without metadata too (no registry on the ESM: the producer's framing arrives as is).
        r.value_schema = None;
        let thing: Thing = Json::new().decode(&r).unwrap();
        assert_eq!(thing, Thing { n: 7 });
        // Unless the bytes are said to be plain.
        let err = Json::<Thing>::new()
            .wire_format(WireFormat::None)
            .decode(&r)
            .unwrap_err();
        assert!(err.message.contains("expected value"), "{err}");
    }

    #[test]
    fn a_glue_frame_is_removed_from_json() {
        let mut framed = vec![3, 0];
        framed.extend_from_slice(&[0x11; 16]);
        framed.extend_from_slice(br#"{"n":8}"#);
        let thing: Thing = Json::new().decode(&record(Some(&framed))).unwrap();
        assert_eq!(thing, Thing { n: 8 });
    }

    #[test]
    fn schema_ids_are_read_without_decoding() {
        let mut r = record(Some(&[0, 0, 0, 0, 9, 1]));
        assert_eq!(
            schema_id_of(&r, Part::Value, WireFormat::Auto),
            Some(SchemaId::Confluent(9))
        );
        assert_eq!(schema_id_of(&r, Part::Value, WireFormat::Glue), None);
        assert_eq!(schema_id_of(&r, Part::Value, WireFormat::None), None);
        assert_eq!(schema_id_of(&r, Part::Key, WireFormat::Auto), None);
        r.value_schema = Some(SchemaMetadata {
            data_format: Some("AVRO".into()),
            schema_id: Some("12".into()),
        });
        assert_eq!(
            schema_id_of(&r, Part::Value, WireFormat::Auto),
            Some(SchemaId::Confluent(12))
        );
    }
}
