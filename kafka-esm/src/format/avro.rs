//! Apache Avro through the `apache-avro` crate: serde into your type, or a JSON view.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value as AvroValue;
use serde::de::DeserializeOwned;

use super::schema::{InvalidSchema, SchemaError, SchemaKind};
use super::wire::{self, Payload, Unframed};
use super::{Compiled, Part, SchemaCache, ValueFormat, WireFormat};
use crate::handler::DeserializeError;
use crate::record::KafkaRecord;

/// A parsed Avro schema and the named schemas it refers to.
struct Parsed {
    main: apache_avro::Schema,
    references: Vec<apache_avro::Schema>,
}

type DatumReader<'a> = GenericDatumReader<'a>;

self_cell::self_cell!(
    /// A parsed schema and its datum reader (which borrows it), built once: resolving a schema's
    /// names for a reader costs more than reading a small record.
    struct ParsedWithReader {
        owner: Parsed,
        #[covariant]
        dependent: DatumReader,
    }
);

/// A parsed Avro schema with the named schemas it refers to, and a reader of its data.
struct AvroSchema {
    parsed: ParsedWithReader,
    /// The schema as parsed, written back as JSON (logical types, defaults and references
    /// included): two schemas with the same text resolve to each other unchanged.
    text: String,
    /// Whether records of this schema are read straight into `T` (apache-avro's schema-aware
    /// deserializer, one pass); cleared the first time that reader refuses a record the value
    /// path reads (it does not take every shape, such as a union of null and two types into an
    /// `Option`), so that such a schema is not read twice per record.
    direct: AtomicBool,
}

impl AvroSchema {
    fn parse(text: &str, references: &[&str]) -> Result<Self, String> {
        let (main, references) = if references.is_empty() {
            apache_avro::Schema::parse_str(text).map(|main| (main, Vec::new()))
        } else {
            apache_avro::Schema::parse_str_with_list(text, references)
        }
        .map_err(|e| format!("not an Avro schema: {e}"))?;
        let mut written = serde_json::to_string(&main).map_err(|e| e.to_string())?;
        for reference in &references {
            written.push('\n');
            written.push_str(&serde_json::to_string(reference).map_err(|e| e.to_string())?);
        }
        let parsed = ParsedWithReader::try_new(Parsed { main, references }, |parsed| {
            GenericDatumReader::builder(&parsed.main)
                .writer_schemata(parsed.references.iter().collect())
                .and_then(|builder| builder.build())
        })
        .map_err(|e| format!("the Avro schema cannot be read with: {e}"))?;
        Ok(Self {
            parsed,
            text: written,
            direct: AtomicBool::new(true),
        })
    }

    fn main(&self) -> &apache_avro::Schema {
        &self.parsed.borrow_owner().main
    }

    fn references(&self) -> &[apache_avro::Schema] {
        &self.parsed.borrow_owner().references
    }

    /// A reader of data written with this schema, unresolved.
    fn reader(&self) -> &GenericDatumReader<'_> {
        self.parsed.borrow_dependent()
    }
}

/// Avro binary, decoded with the schema it was written with (the writer schema) and, when you
/// give one, resolved to your reader schema; then serde turns it into `T` (Avro records into
/// structs, unions into `Option` or enums, logical types into their underlying numbers or
/// strings). [`Avro::decode_json`] gives a JSON view instead.
///
/// The writer schema is the one the bytes name, by their Confluent or Glue header or by the ESM's
/// `schemaId`, looked up in the [`SchemaCache`] given with [`Avro::schemas`]; for bytes that name
/// none (plain Avro, or no source given), the one given with [`Avro::writer_schema`]. A record the
/// ESM delivered in its `JSON` shape (a JSON object's text) is read by serde directly.
///
/// When no resolution is needed (no reader schema, or the writer's is the same), the body is read
/// straight into `T` in one pass (apache-avro's schema-aware deserializer): on the reference app's
/// metrics, a 6 MB batch takes 25.5 ms instead of 47 ms end to end (`docs/performance.md`). It
/// wants each struct named like its Avro record (or `#[serde(rename = "RecordName")]`) and unions
/// of `null` and one type for an `Option`; a record it does not take is read through an Avro value
/// instead, and that schema is not tried in one pass again.
///
/// ```
/// # #[cfg(feature = "avro")] {
/// use kafka_esm::format::{Avro, ValueFormat};
/// use kafka_esm::KafkaRecord;
///
/// #[derive(serde::Deserialize, Debug, PartialEq)]
/// struct Product { id: i32, name: String, price: f64 }
///
/// let format = Avro::<Product>::new()
///     .writer_schema(r#"{"type":"record","name":"Product","fields":[
///         {"name":"id","type":"int"},{"name":"name","type":"string"},{"name":"price","type":"double"}]}"#)
///     .unwrap();
/// let mut record = KafkaRecord::new("mytopic", 0, 15);
/// // Powertools' avro.json, offset 15: "0g8MTGFwdG9wUrgehes/j0A=".
/// record.value = Some(vec![0xd2, 0x0f, 0x0c, b'L', b'a', b'p', b't', b'o', b'p',
///                          0x52, 0xb8, 0x1e, 0x85, 0xeb, 0x3f, 0x8f, 0x40]);
/// let product = format.decode(&record).unwrap();
/// assert_eq!(product, Product { id: 1001, name: "Laptop".into(), price: 999.99 });
/// # }
/// ```
pub struct Avro<T> {
    part: Part,
    wire: WireFormat,
    writer: Option<Arc<AvroSchema>>,
    reader: Option<Arc<AvroSchema>>,
    compiled: Compiled<AvroSchema>,
    target: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Avro<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Avro")
            .field("part", &self.part)
            .field("wire", &self.wire)
            .field("writer_schema", &self.writer.is_some())
            .field("reader_schema", &self.reader.is_some())
            .field("schema_source", &self.compiled.has_source())
            .finish()
    }
}

impl<T> Default for Avro<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// A record decoded, before serde: Avro, or the ESM's JSON shape.
enum Decoded {
    Avro(AvroValue),
    Json(serde_json::Value),
}

impl<T> Avro<T> {
    /// Avro for `T`, reading the value, with [`WireFormat::Auto`], no schema yet.
    pub fn new() -> Self {
        Self {
            part: Part::Value,
            wire: WireFormat::Auto,
            writer: None,
            reader: None,
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

    /// Looks writer schemas up by the id the bytes name, in this cache (shared by the formats of
    /// the container).
    pub fn schemas(mut self, schemas: Arc<SchemaCache>) -> Self {
        self.compiled.set_source(schemas);
        self
    }

    /// The writer schema for bytes that name none (plain Avro, as Powertools reads it), or for
    /// every record when no schema source is given.
    pub fn writer_schema(mut self, avsc: &str) -> Result<Self, InvalidSchema> {
        self.writer = Some(Arc::new(
            AvroSchema::parse(avsc, &[]).map_err(InvalidSchema)?,
        ));
        Ok(self)
    }

    /// The schema to resolve every record to (Avro schema resolution: fields added with defaults,
    /// fields removed, promoted types), so that `T` sees one shape whatever the writer's version.
    pub fn reader_schema(mut self, avsc: &str) -> Result<Self, InvalidSchema> {
        self.reader = Some(Arc::new(
            AvroSchema::parse(avsc, &[]).map_err(InvalidSchema)?,
        ));
        Ok(self)
    }

    /// Fetches, concurrently and once per container, the writer schemas `records` name that are
    /// not known yet: call it with a chunk of records before decoding them synchronously when the
    /// schema source must wait for the network.
    pub async fn prefetch<'r>(
        &self,
        records: impl IntoIterator<Item = &'r KafkaRecord>,
    ) -> Result<(), SchemaError> {
        self.compiled.prefetch(records, self.part, self.wire).await
    }

    /// The record's part as JSON: records as objects, unions as their value, enums as their
    /// symbol, bytes and fixed as arrays of numbers, logical types as their underlying number
    /// (`date` in days, `timestamp-millis` in milliseconds) or string (`uuid`).
    pub fn decode_json(&self, record: &KafkaRecord) -> Result<serde_json::Value, DeserializeError> {
        match self.decoded(record)? {
            Decoded::Json(json) => Ok(json),
            Decoded::Avro(value) => serde_json::Value::try_from(value).map_err(|e| {
                DeserializeError::new(format!("the {} has no JSON form: {e}", self.part))
            }),
        }
    }

    fn decoded(&self, record: &KafkaRecord) -> Result<Decoded, DeserializeError> {
        let (bytes, metadata) = self.part.read(record)?;
        let unframed = wire::unframe(bytes, metadata, self.wire, Payload::Binary)?;
        if unframed.looks_like_esm_json()
            && let Ok(json) = serde_json::from_slice(&unframed.body)
        {
            return Ok(Decoded::Json(json));
        }
        let writer = self.writer_for(&unframed)?;
        let value = self.read(&unframed, &writer, true, |reader, body| {
            reader.read_value(body)
        })?;
        Ok(Decoded::Avro(value))
    }

    /// Reads one datum from the body with `read`, through the writer schema, resolved to the
    /// reader schema when `resolve` says so (never for `read_deser`, which does not resolve); the
    /// whole body must be that datum.
    fn read<V>(
        &self,
        unframed: &Unframed<'_>,
        writer: &AvroSchema,
        resolve: bool,
        read: impl FnOnce(&GenericDatumReader<'_>, &mut &[u8]) -> apache_avro::AvroResult<V>,
    ) -> Result<V, DeserializeError> {
        let resolving = match self.reader.as_deref() {
            Some(target) if resolve => Some(
                GenericDatumReader::builder(writer.main())
                    .writer_schemata(writer.references().iter().collect())
                    .and_then(|builder| builder.reader_schema(target.main()).build())
                    .map_err(|e| {
                        DeserializeError::new(format!(
                            "the {} cannot be read with {}: {e}",
                            self.part,
                            self.schema_name(unframed)
                        ))
                    })?,
            ),
            _ => None,
        };
        let reader = resolving.as_ref().unwrap_or_else(|| writer.reader());
        let mut body: &[u8] = &unframed.body;
        let value = read(reader, &mut body).map_err(|e| {
            DeserializeError::new(format!(
                "the {} is not Avro of {}: {e}",
                self.part,
                self.schema_name(unframed)
            ))
        })?;
        if !body.is_empty() {
            return Err(DeserializeError::new(format!(
                "{} bytes are left after the Avro datum: the {} was not written with {}",
                body.len(),
                self.part,
                self.schema_name(unframed)
            )));
        }
        Ok(value)
    }

    fn writer_for(&self, unframed: &Unframed<'_>) -> Result<Arc<AvroSchema>, DeserializeError> {
        match unframed.schema_id() {
            Some(id) if self.compiled.has_source() => Ok(self.compiled.get(
                &id,
                SchemaKind::Avro,
                |schema| {
                    let references: Vec<&str> =
                        schema.references.iter().map(|r| r.text.as_str()).collect();
                    AvroSchema::parse(&schema.text, &references)
                },
            )?),
            id => self.writer.clone().ok_or_else(|| {
                DeserializeError::new(match id {
                    Some(id) => format!(
                        "the {} was written with schema {id}, and the Avro format has no schema source and no writer schema",
                        self.part
                    ),
                    None => format!(
                        "the {} names no schema (no header, no schema metadata) and the Avro format has no writer schema",
                        self.part
                    ),
                })
            }),
        }
    }

    fn schema_name(&self, unframed: &Unframed<'_>) -> String {
        match unframed.schema_id() {
            Some(id) if self.compiled.has_source() => format!("schema {id}"),
            _ => "the writer schema".into(),
        }
    }
}

impl<T: DeserializeOwned> ValueFormat<T> for Avro<T> {
    fn decode(&self, record: &KafkaRecord) -> Result<T, DeserializeError> {
        let (bytes, metadata) = self.part.read(record)?;
        let unframed = wire::unframe(bytes, metadata, self.wire, Payload::Binary)?;
        if unframed.looks_like_esm_json()
            && let Ok(json) = serde_json::from_slice::<serde_json::Value>(&unframed.body)
        {
            return serde_json::from_value(json).map_err(|e| {
                DeserializeError::new(format!(
                    "the {} (JSON from the ESM) is not the expected JSON: {e}",
                    self.part
                ))
            });
        }
        let writer = self.writer_for(&unframed)?;
        let direct = writer.direct.load(Ordering::Relaxed)
            && self.reader.as_ref().is_none_or(|r| r.text == writer.text);
        // Nothing to resolve: the body straight into `T` through the schema, in one pass.
        if direct
            && let Ok(value) = self.read(&unframed, &writer, false, |reader, body| {
                reader.read_deser(body)
            })
        {
            return Ok(value);
        }
        // Through an Avro value: resolved to the reader schema, then serde. Its error is the one
        // a record gets.
        let value = self.read(&unframed, &writer, true, |reader, body| {
            reader.read_value(body)
        })?;
        let value = apache_avro::from_value(&value).map_err(|e| {
            DeserializeError::new(format!("the {} is not the expected Avro: {e}", self.part))
        })?;
        if direct {
            writer.direct.store(false, Ordering::Relaxed);
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode_event;
    use crate::format::{LocalDirectory, MemorySchemas, Schema, SchemaId};
    use crate::record::{DecodedRecord, SchemaMetadata};
    use serde::Deserialize;
    use std::io::Write;

    const PRODUCT: &str = r#"{"type":"record","name":"Product","fields":[
        {"name":"id","type":"int"},{"name":"name","type":"string"},{"name":"price","type":"double"}]}"#;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Product {
        id: i32,
        name: String,
        price: f64,
    }

    fn records(event: &str) -> Vec<KafkaRecord> {
        decode_event(event)
            .unwrap()
            .partitions
            .into_iter()
            .flat_map(|p| p.records)
            .map(|slot| match slot {
                DecodedRecord::Record(r) => r,
                DecodedRecord::Undecodable(u) => panic!("{}", u.reason),
            })
            .collect()
    }

    /// Powertools for AWS Lambda (TypeScript), packages/kafka/tests/events/avro.json, and the
    /// values its tests assert (consumer.test.ts "deserializes avro message",
    /// deserializer.avro.test.ts): the first record is {id: 1001, name: "Laptop", price: 999.99},
    /// its key the JSON 42. The other two records' values are read here the same way.
    #[test]
    fn powertools_typescript_avro_event() {
        let records = records(include_str!(
            "../../../events/schema-registry/powertools-typescript/avro.json"
        ));
        let format = Avro::<Product>::new().writer_schema(PRODUCT).unwrap();
        let decoded: Vec<Product> = records.iter().map(|r| format.decode(r).unwrap()).collect();
        let writer = format.writer.as_ref().unwrap();
        assert!(
            writer.direct.load(Ordering::Relaxed),
            "a plain record schema is read in one pass"
        );
        assert_eq!(
            decoded[0],
            Product {
                id: 1001,
                name: "Laptop".into(),
                price: 999.99
            }
        );
        assert_eq!(
            decoded[1],
            Product {
                id: 1002,
                name: "Smartphone".into(),
                price: 599.99
            }
        );
        assert_eq!(
            decoded[2],
            Product {
                id: 1003,
                name: "Headphones".into(),
                price: 149.99
            }
        );
        let key: u32 = crate::format::Json::new()
            .key()
            .decode(&records[0])
            .unwrap();
        assert_eq!(key, 42);
        assert!(records[2].key.is_none());
        let json = format.decode_json(&records[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"id": 1001, "name": "Laptop", "price": 999.99})
        );
        // A schema that does not match (deserializer.avro.test.ts): poison.
        let wrong = Avro::<serde_json::Value>::new()
            .writer_schema(r#"{"type":"record","name":"P","fields":[{"name":"productId","type":"int"},{"name":"productName","type":"string"},{"name":"productPrice","type":"double"},{"name":"extra","type":"long"}]}"#)
            .unwrap();
        let err = wrong.decode(&records[0]).unwrap_err();
        assert!(!err.is_transient(), "{err}");
        // An invalid schema is refused when given.
        assert!(
            Avro::<Product>::new()
                .writer_schema(
                    r#"{"type":"record","name":"Product","fields":[{"name":"id","type":"int"},]}"#
                )
                .is_err()
        );
    }

    /// A record with unions, logical types and an enum, written with apache-avro in this test (no
    /// public fixture of such a record was found), Confluent-framed as Confluent's serializer frames
    /// it, and Glue-framed (plain and zlib-compressed with flate2) as the Glue serializer frames it.
    const READING: &str = r#"{"type":"record","name":"Reading","namespace":"com.example","fields":[
        {"name":"sensor","type":"string"},
        {"name":"note","type":["null","string"],"default":null},
        {"name":"value","type":["null","double","long"]},
        {"name":"day","type":{"type":"int","logicalType":"date"}},
        {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"id","type":{"type":"string","logicalType":"uuid"}},
        {"name":"unit","type":{"type":"enum","name":"Unit","symbols":["CELSIUS","KELVIN"]}}]}"#;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Reading {
        sensor: String,
        note: Option<String>,
        value: Option<f64>,
        day: i32,
        at: i64,
        id: String,
        unit: Unit,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "UPPERCASE")]
    enum Unit {
        Celsius,
        Kelvin,
    }

    fn reading_bytes(note: Option<&str>) -> Vec<u8> {
        let schema = apache_avro::Schema::parse_str(READING).unwrap();
        let value = AvroValue::Record(vec![
            ("sensor".into(), AvroValue::String("s-1".into())),
            (
                "note".into(),
                match note {
                    Some(note) => AvroValue::Union(1, Box::new(AvroValue::String(note.into()))),
                    None => AvroValue::Union(0, Box::new(AvroValue::Null)),
                },
            ),
            (
                "value".into(),
                AvroValue::Union(1, Box::new(AvroValue::Double(-62.5))),
            ),
            ("day".into(), AvroValue::Date(20_000)),
            ("at".into(), AvroValue::TimestampMillis(1_750_358_101_849)),
            (
                "id".into(),
                AvroValue::Uuid("7d55d475-2244-4485-8341-f74468c1e058".parse().unwrap()),
            ),
            ("unit".into(), AvroValue::Enum(1, "KELVIN".into())),
        ]);
        apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .unwrap()
            .write_value_to_vec(value)
            .unwrap()
    }

    fn expected(note: Option<&str>) -> Reading {
        Reading {
            sensor: "s-1".into(),
            note: note.map(Into::into),
            value: Some(-62.5),
            day: 20_000,
            at: 1_750_358_101_849,
            id: "7d55d475-2244-4485-8341-f74468c1e058".into(),
            unit: Unit::Kelvin,
        }
    }

    fn record(value: Vec<u8>) -> KafkaRecord {
        let mut r = KafkaRecord::new("readings", 0, 1);
        r.value = Some(value);
        r
    }

    const GLUE_ID: &str = "12345678-1234-1234-1234-123456789012";

    fn schemas() -> Arc<SchemaCache> {
        Arc::new(SchemaCache::new(
            MemorySchemas::new()
                .with(
                    SchemaId::Confluent(42),
                    Schema::new(SchemaKind::Avro, READING),
                )
                .with(
                    GLUE_ID.parse().unwrap(),
                    Schema::new(SchemaKind::Avro, READING),
                )
                .with(
                    SchemaId::Confluent(43),
                    Schema::new(SchemaKind::Protobuf, "syntax = \"proto3\";"),
                ),
        ))
    }

    fn glue_frame(compression: u8, body: &[u8]) -> Vec<u8> {
        let mut framed = vec![3, compression];
        framed.extend_from_slice(uuid::Uuid::parse_str(GLUE_ID).unwrap().as_bytes());
        framed.extend_from_slice(body);
        framed
    }

    #[test]
    fn confluent_and_glue_framed_avro_with_unions_and_logical_types() {
        let format = Avro::<Reading>::new().schemas(schemas());
        let body = reading_bytes(Some("calibrated"));
        let mut confluent = vec![0, 0, 0, 0, 42];
        confluent.extend_from_slice(&body);
        assert_eq!(
            format.decode(&record(confluent)).unwrap(),
            expected(Some("calibrated"))
        );
        // `value` is a union of null and two types, which the one-pass reader does not take into
        // an `Option`: the record is read through a value, and the schema is not tried again so.
        let writer = format
            .compiled
            .get(
                &SchemaId::Confluent(42),
                SchemaKind::Avro,
                |_| unreachable!(),
            )
            .unwrap();
        assert!(!writer.direct.load(Ordering::Relaxed));
        let body = reading_bytes(None);
        assert_eq!(
            format.decode(&record(glue_frame(0, &body))).unwrap(),
            expected(None)
        );
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        zlib.write_all(&body).unwrap();
        let compressed = glue_frame(5, &zlib.finish().unwrap());
        assert_eq!(
            format.decode(&record(compressed.clone())).unwrap(),
            expected(None)
        );
        let json = format.decode_json(&record(compressed)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"sensor": "s-1", "note": null, "value": -62.5, "day": 20000,
                "at": 1_750_358_101_849_i64, "id": "7d55d475-2244-4485-8341-f74468c1e058", "unit": "KELVIN"})
        );
    }

    #[test]
    fn the_esm_source_shape_takes_the_id_from_the_metadata() {
        // In the SOURCE shape the header is gone: a body may begin with 0x00 or '{' (0x7b), and
        // neither is taken for a header, nor for JSON unless it parses as JSON.
        let format = Avro::<Reading>::new().schemas(schemas());
        let mut r = record(reading_bytes(None));
        r.value_schema = Some(SchemaMetadata {
            data_format: Some("AVRO".into()),
            schema_id: Some("42".into()),
        });
        assert_eq!(format.decode(&r).unwrap(), expected(None));
        // An Avro long field of -62 is written 0x7b, the first byte of a JSON object.
        let schema = r#"{"type":"record","name":"T","fields":[{"name":"t","type":"long"},{"name":"s","type":"string"}]}"#;
        let source = MemorySchemas::new().with(
            SchemaId::Confluent(5),
            Schema::new(SchemaKind::Avro, schema),
        );
        let format = Avro::<serde_json::Value>::new().schemas(Arc::new(SchemaCache::new(source)));
        let mut r = record(vec![0x7b, 0x02, b'}']);
        r.value_schema = Some(SchemaMetadata {
            data_format: Some("AVRO".into()),
            schema_id: Some("5".into()),
        });
        assert_eq!(
            format.decode_json(&r).unwrap(),
            serde_json::json!({"t": -62, "s": "}"})
        );
    }

    #[test]
    fn the_esm_json_shape_is_read_by_serde() {
        let format = Avro::<Product>::new().schemas(schemas());
        let mut r = record(br#"{"id":1001,"name":"Laptop","price":999.99}"#.to_vec());
        r.value_schema = Some(SchemaMetadata {
            data_format: Some("AVRO".into()),
            schema_id: Some("42".into()),
        });
        assert_eq!(
            format.decode(&r).unwrap(),
            Product {
                id: 1001,
                name: "Laptop".into(),
                price: 999.99
            }
        );
    }

    #[test]
    fn a_reader_schema_resolves_old_records() {
        let reader = r#"{"type":"record","name":"Reading","namespace":"com.example","fields":[
            {"name":"sensor","type":"string"},
            {"name":"site","type":"string","default":"unknown"}]}"#;
        let format = Avro::<serde_json::Value>::new()
            .schemas(schemas())
            .reader_schema(reader)
            .unwrap();
        let mut confluent = vec![0, 0, 0, 0, 42];
        confluent.extend_from_slice(&reading_bytes(None));
        assert_eq!(
            format.decode_json(&record(confluent)).unwrap(),
            serde_json::json!({"sensor": "s-1", "site": "unknown"})
        );
    }

    #[test]
    fn unknown_schemas_wrong_kinds_and_leftover_bytes_are_poison() {
        let format = Avro::<Reading>::new().schemas(schemas());
        let err = format.decode(&record(vec![0, 0, 0, 0, 99, 1])).unwrap_err();
        assert_eq!(
            err.message,
            "schema 99 was not found in the in-memory schemas"
        );
        assert!(!err.is_transient());
        let err = format.decode(&record(vec![0, 0, 0, 0, 43, 1])).unwrap_err();
        assert!(
            err.message.contains("it is a PROTOBUF schema, not AVRO"),
            "{err}"
        );
        let mut long = vec![0, 0, 0, 0, 42];
        long.extend_from_slice(&reading_bytes(None));
        long.push(0);
        let err = format.decode(&record(long)).unwrap_err();
        assert!(err.message.contains("1 bytes are left"), "{err}");
        let err = format.decode(&record(vec![0, 0, 0, 0, 42])).unwrap_err();
        assert!(
            err.message
                .starts_with("the value is not Avro of schema 42"),
            "{err}"
        );
        let err = Avro::<Reading>::new()
            .decode(&record(vec![1, 2]))
            .unwrap_err();
        assert!(err.message.contains("no writer schema"), "{err}");
        let err = format.decode(&KafkaRecord::new("t", 0, 0)).unwrap_err();
        assert!(err.message.contains("tombstone"), "{err}");
    }

    #[test]
    fn a_wrong_magic_byte_is_plain_for_auto_and_refused_for_confluent() {
        // Plain Avro starting with 0x02: not a header under Auto; the writer schema reads it.
        let format = Avro::<Product>::new().writer_schema(PRODUCT).unwrap();
        let plain = vec![0x02, 0x02, b'x', 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(format.decode(&record(plain.clone())).unwrap().id, 1);
        let err = format
            .wire_format(WireFormat::Confluent)
            .decode(&record(plain))
            .unwrap_err();
        assert!(
            err.message
                .starts_with("expected the Confluent wire format"),
            "{err}"
        );
    }

    #[test]
    fn plain_avro_that_looks_framed_needs_wire_format_none() {
        // id 0 is written 0x00: the bytes begin like a Confluent header.
        let format = Avro::<Product>::new().writer_schema(PRODUCT).unwrap();
        let plain = vec![0x00, 0x02, b'x', 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(format.decode(&record(plain.clone())).is_err());
        let format = format.wire_format(WireFormat::None);
        assert_eq!(
            format.decode(&record(plain)).unwrap(),
            Product {
                id: 0,
                name: "x".into(),
                price: 0.0
            }
        );
    }

    #[test]
    fn keys_are_decoded_with_their_own_metadata() {
        let key_schema =
            r#"{"type":"record","name":"Key","fields":[{"name":"user_id","type":"string"}]}"#;
        #[derive(Deserialize, Debug, PartialEq)]
        struct Key {
            user_id: String,
        }
        let format = Avro::<Key>::new().key().writer_schema(key_schema).unwrap();
        let mut r = record(vec![]);
        r.key = Some(vec![0x10, b'u', b's', b'e', b'r', b'-', b'1', b'2', b'3']);
        assert_eq!(
            format.decode(&r).unwrap(),
            Key {
                user_id: "user-123".into()
            }
        );
    }

    #[tokio::test]
    async fn schemas_come_from_a_local_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("42.avsc"), READING).unwrap();
        let cache = Arc::new(SchemaCache::new(LocalDirectory::new(dir.path())));
        let format = Avro::<Reading>::new().schemas(cache.clone());
        let mut framed = vec![0, 0, 0, 0, 42];
        framed.extend_from_slice(&reading_bytes(None));
        let r = record(framed);
        format.prefetch([&r]).await.unwrap();
        assert_eq!(cache.len(), 1);
        assert_eq!(format.decode(&r).unwrap(), expected(None));
    }
}
