//! JSON validated against a JSON Schema (the `jsonschema` crate) before serde reads it.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::schema::{InvalidSchema, SchemaError, SchemaKind};
use super::wire::{self, Payload};
use super::{Compiled, Part, SchemaCache, ValueFormat, WireFormat};
use crate::handler::DeserializeError;
use crate::record::KafkaRecord;

/// How many validation errors a message lists.
const MAX_LISTED_ERRORS: usize = 5;

/// JSON text, validated against its JSON Schema, then read by serde into `T`.
///
/// The schema is the one the bytes name (by their Confluent or Glue header, or the ESM's
/// `schemaId`), looked up in the [`SchemaCache`] given with [`JsonSchema::schemas`]; for bytes
/// that name none, the one given with [`JsonSchema::schema`]. A header is removed as
/// [`Json`](super::Json) removes it. A value that breaks its schema is poison, and the message
/// says where (`/price: -100 is less than the minimum of 0`).
pub struct JsonSchema<T> {
    part: Part,
    wire: WireFormat,
    fixed: Option<Arc<jsonschema::Validator>>,
    compiled: Compiled<jsonschema::Validator>,
    target: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for JsonSchema<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonSchema")
            .field("part", &self.part)
            .field("wire", &self.wire)
            .field("schema", &self.fixed.is_some())
            .field("schema_source", &self.compiled.has_source())
            .finish()
    }
}

impl<T> Default for JsonSchema<T> {
    fn default() -> Self {
        Self::new()
    }
}

fn compile(schema: &serde_json::Value) -> Result<jsonschema::Validator, String> {
    jsonschema::validator_for(schema).map_err(|e| format!("not a JSON Schema: {e}"))
}

impl<T> JsonSchema<T> {
    /// JSON Schema for `T`, reading the value, with [`WireFormat::Auto`], no schema yet.
    pub fn new() -> Self {
        Self {
            part: Part::Value,
            wire: WireFormat::Auto,
            fixed: None,
            compiled: Compiled::new(),
            target: PhantomData,
        }
    }

    /// Reads the key instead of the value.
    pub fn key(self) -> Self {
        self.part(Part::Key)
    }

    /// Reads this part of the record.
    pub fn part(mut self, part: Part) -> Self {
        self.part = part;
        self
    }

    /// Expects this framing.
    pub fn wire_format(mut self, wire: WireFormat) -> Self {
        self.wire = wire;
        self
    }

    /// Looks schemas up by the id the bytes name, in this cache.
    pub fn schemas(mut self, schemas: Arc<SchemaCache>) -> Self {
        self.compiled.set_source(schemas);
        self
    }

    /// The schema for bytes that name none, or for every record when no schema source is given.
    pub fn schema(mut self, schema: &serde_json::Value) -> Result<Self, InvalidSchema> {
        self.fixed = Some(Arc::new(compile(schema).map_err(InvalidSchema)?));
        Ok(self)
    }

    /// Fetches the schemas `records` name that are not known yet (see
    /// the [module docs](super) for when).
    pub async fn prefetch<'r>(
        &self,
        records: impl IntoIterator<Item = &'r KafkaRecord>,
    ) -> Result<(), SchemaError> {
        self.compiled.prefetch(records, self.part, self.wire).await
    }

    /// The record's part as validated JSON.
    pub fn decode_json(&self, record: &KafkaRecord) -> Result<serde_json::Value, DeserializeError> {
        let (bytes, metadata) = self.part.read(record)?;
        let unframed = wire::unframe(bytes, metadata, self.wire, Payload::Text)?;
        let id = unframed.schema_id();
        let validator = match id {
            Some(id) if self.compiled.has_source() => {
                self.compiled.get(&id, SchemaKind::Json, |schema| {
                    let document = serde_json::from_str(&schema.text)
                        .map_err(|e| format!("not JSON: {e}"))?;
                    compile(&document)
                })?
            }
            _ => self.fixed.clone().ok_or_else(|| {
                DeserializeError::new(format!(
                    "the {} names no schema the JSON Schema format can find, and it has no schema of its own",
                    self.part
                ))
            })?,
        };
        let json: serde_json::Value = serde_json::from_slice(&unframed.body)
            .map_err(|e| DeserializeError::new(format!("the {} is not JSON: {e}", self.part)))?;
        let errors: Vec<String> = validator
            .iter_errors(&json)
            .take(MAX_LISTED_ERRORS)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        if !errors.is_empty() {
            let schema = match id {
                Some(id) if self.compiled.has_source() => format!("schema {id}"),
                _ => "its JSON Schema".into(),
            };
            return Err(DeserializeError::new(format!(
                "the {} breaks {schema}: {}",
                self.part,
                errors.join("; ")
            )));
        }
        Ok(json)
    }
}

impl<T: DeserializeOwned> ValueFormat<T> for JsonSchema<T> {
    fn decode(&self, record: &KafkaRecord) -> Result<T, DeserializeError> {
        serde_json::from_value(self.decode_json(record)?).map_err(|e| {
            DeserializeError::new(format!("the {} is not the expected JSON: {e}", self.part))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode_event;
    use crate::format::{MemorySchemas, Schema, SchemaId};
    use crate::record::{DecodedRecord, SchemaMetadata};
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Product {
        id: u32,
        name: String,
        price: f64,
    }

    fn product_schema() -> serde_json::Value {
        json!({
            "type": "object",
            "required": ["id", "name", "price"],
            "properties": {
                "id": {"type": "integer"},
                "name": {"type": "string"},
                "price": {"type": "number", "minimum": 0}
            }
        })
    }

    /// Powertools for AWS Lambda (TypeScript), packages/kafka/tests/events/default.json, and what
    /// its consumer.test.ts asserts: {id: 12345, name: "product5", price: 45}; with the value
    /// replaced by {"id":42,"name":"invalidProduct","price":-100} ("throws when parser schema
    /// validation fails"), validation fails.
    #[test]
    fn powertools_typescript_json_event_validated() {
        let batch = decode_event(include_str!(
            "../../../events/schema-registry/powertools-typescript/default.json"
        ))
        .unwrap();
        let DecodedRecord::Record(mut record) = batch.partitions[0].records[0].clone() else {
            panic!("undecodable");
        };
        let format = JsonSchema::<Product>::new()
            .schema(&product_schema())
            .unwrap();
        assert_eq!(
            format.decode(&record).unwrap(),
            Product {
                id: 12345,
                name: "product5".into(),
                price: 45.0
            }
        );
        // Powertools reads the key as the string "recordKey" (not JSON: it falls back to text).
        assert_eq!(record.key.as_deref(), Some(&b"recordKey"[..]));
        record.value = Some(br#"{"id":42,"name":"invalidProduct","price":-100}"#.to_vec());
        let err = format.decode(&record).unwrap_err();
        assert_eq!(
            err.message,
            "the value breaks its JSON Schema: /price: -100 is less than the minimum of 0"
        );
        assert!(!err.is_transient());
    }

    #[test]
    fn schemas_are_found_by_the_id_the_bytes_name() {
        let cache = Arc::new(SchemaCache::new(MemorySchemas::new().with(
            SchemaId::Confluent(300),
            Schema::new(SchemaKind::Json, product_schema().to_string()),
        )));
        let format = JsonSchema::<Product>::new().schemas(cache);
        let mut framed = vec![0, 0, 0, 1, 44];
        framed.extend_from_slice(br#"{"id":1,"name":"a","price":2}"#);
        let mut record = KafkaRecord::new("t", 0, 0);
        record.value = Some(framed);
        assert_eq!(format.decode(&record).unwrap().id, 1);
        // The ESM's SOURCE shape: the id comes from the metadata.
        record.value = Some(br#"{"id":2,"name":"b"}"#.to_vec());
        record.value_schema = Some(SchemaMetadata {
            data_format: Some("JSON".into()),
            schema_id: Some("300".into()),
        });
        let err = format.decode(&record).unwrap_err();
        assert!(
            err.message.starts_with("the value breaks schema 300: : "),
            "{err}"
        );
        assert!(
            err.message.contains("\"price\" is a required property"),
            "{err}"
        );
        record.value_schema = Some(SchemaMetadata {
            data_format: Some("JSON".into()),
            schema_id: Some("301".into()),
        });
        let err = format.decode(&record).unwrap_err();
        assert!(err.message.contains("schema 301 was not found"), "{err}");
        assert!(
            JsonSchema::<Product>::new()
                .schema(&json!({"type": 12}))
                .is_err()
        );
    }
}
