//! Protocol Buffers: prost messages, and a dynamic JSON view through descriptors (prost-reflect),
//! with `.proto` schemas compiled at run time (protox).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use prost_reflect::{DynamicMessage, FileDescriptor, MessageDescriptor, SerializeOptions};

use super::schema::{InvalidSchema, Schema, SchemaError, SchemaKind};
use super::wire::{self, MessageIndex, Payload, Unframed};
use super::{Compiled, Part, SchemaCache, ValueFormat, WireFormat};
use crate::handler::DeserializeError;
use crate::record::KafkaRecord;

/// The name a registry's `.proto` text is compiled under.
const MAIN_FILE: &str = "schema.proto";

/// Protobuf: a prost message `M` (the message index a registry adds is read and skipped: `M`
/// says which message the bytes are, as in Powertools), or a [`DynamicMessage`] and its JSON
/// through descriptors ([`Protobuf::decode_dynamic`], [`Protobuf::decode_json`]).
///
/// For the dynamic view the message is found by the schema the bytes name (their header or the
/// ESM's `schemaId`, a `.proto` from the [`SchemaCache`] given with [`Protobuf::schemas`],
/// compiled once with protox) and their message index: Confluent's path (`[1, 0]`: the first
/// message nested in the file's second), or Glue's position among all the file's messages, nested
/// ones included, sorted by full name (as the Glue serializer numbers them). Bytes that name no
/// schema use the message given with [`Protobuf::message`] or [`Protobuf::proto`].
///
/// Fields the message does not know are skipped by prost, kept as unknown fields by the dynamic
/// view and left out of its JSON.
pub struct Protobuf<M> {
    part: Part,
    wire: WireFormat,
    fixed: Option<MessageDescriptor>,
    compiled: Compiled<FileDescriptor>,
    target: PhantomData<fn() -> M>,
}

impl<M> fmt::Debug for Protobuf<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Protobuf")
            .field("part", &self.part)
            .field("wire", &self.wire)
            .field("message", &self.fixed.as_ref().map(|m| m.full_name()))
            .field("schema_source", &self.compiled.has_source())
            .finish()
    }
}

impl<M> Default for Protobuf<M> {
    fn default() -> Self {
        Self::new()
    }
}

/// Compiles a registry's `.proto` (and the files it imports, given as references or among
/// Google's well-known types) with protox.
fn compile(schema: &Schema) -> Result<FileDescriptor, String> {
    struct Files(HashMap<String, String>);
    impl protox::file::FileResolver for Files {
        fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
            match self.0.get(name) {
                Some(source) => protox::file::File::from_source(name, source),
                None => Err(protox::Error::file_not_found(name)),
            }
        }
    }
    let mut files: HashMap<String, String> = schema
        .references
        .iter()
        .map(|r| (r.name.clone(), r.text.clone()))
        .collect();
    files.insert(MAIN_FILE.into(), schema.text.clone());
    let mut resolver = protox::file::ChainFileResolver::new();
    resolver.add(Files(files));
    resolver.add(protox::file::GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler
        .open_file(MAIN_FILE)
        .map_err(|e| format!("the .proto does not compile: {e}"))?;
    compiler
        .descriptor_pool()
        .get_file_by_name(MAIN_FILE)
        .ok_or_else(|| "the .proto compiled to no file".to_owned())
}

/// The message a Confluent index path names in `file`.
fn by_confluent_path(file: &FileDescriptor, path: &[u32]) -> Option<MessageDescriptor> {
    let (first, nested) = path.split_first()?;
    let mut message = file.messages().nth(*first as usize)?;
    for index in nested {
        let child = message.child_messages().nth(*index as usize)?;
        message = child;
    }
    Some(message)
}

/// The message at Glue's `index` in `file`: every message, nested ones included (read level by
/// level), sorted by full name.
fn by_glue_index(file: &FileDescriptor, index: u32) -> Option<MessageDescriptor> {
    let mut all = Vec::new();
    let mut queue: VecDeque<MessageDescriptor> = file.messages().collect();
    while let Some(message) = queue.pop_front() {
        queue.extend(message.child_messages());
        all.push(message);
    }
    all.sort_by(|a, b| a.full_name().cmp(b.full_name()));
    all.into_iter().nth(index as usize)
}

impl<M> Protobuf<M> {
    /// Protobuf for `M`, reading the value, with [`WireFormat::Auto`].
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

    /// Looks `.proto` schemas up by the id the bytes name, in this cache (for the dynamic view).
    pub fn schemas(mut self, schemas: Arc<SchemaCache>) -> Self {
        self.compiled.set_source(schemas);
        self
    }

    /// The message of bytes that name no schema (and of the ESM's JSON shape), from descriptors
    /// you have (a `DescriptorPool` decoded from a file descriptor set built with your code).
    pub fn message(mut self, message: MessageDescriptor) -> Self {
        self.fixed = Some(message);
        self
    }

    /// The message named `message` (its full name, `package.Message`) of a `.proto` file's
    /// `source`, compiled now with protox.
    pub fn proto(self, source: &str, message: &str) -> Result<Self, InvalidSchema> {
        let file = compile(&Schema::new(SchemaKind::Protobuf, source)).map_err(InvalidSchema)?;
        let descriptor = file
            .parent_pool()
            .get_message_by_name(message)
            .ok_or_else(|| InvalidSchema(format!("the .proto has no message {message}")))?;
        Ok(self.message(descriptor))
    }

    /// Fetches the `.proto` schemas `records` name that are not known yet (see
    /// the [module docs](super) for when).
    pub async fn prefetch<'r>(
        &self,
        records: impl IntoIterator<Item = &'r KafkaRecord>,
    ) -> Result<(), SchemaError> {
        self.compiled.prefetch(records, self.part, self.wire).await
    }

    /// The record's part as a dynamic message of the schema and message index it names.
    pub fn decode_dynamic(&self, record: &KafkaRecord) -> Result<DynamicMessage, DeserializeError> {
        let (bytes, metadata) = self.part.read(record)?;
        let unframed = wire::unframe(bytes, metadata, self.wire, Payload::Binary)?;
        if unframed.looks_like_esm_json()
            && let Some(message) = self.read_esm_json(&unframed)
        {
            return message;
        }
        let (index, body) = wire::read_message_index(&unframed.body, unframed.index)?;
        let descriptor = self.descriptor_for(&unframed, &index)?;
        DynamicMessage::decode(descriptor.clone(), body).map_err(|e| {
            DeserializeError::new(format!(
                "the {} is not a Protobuf {}: {e}",
                self.part,
                descriptor.full_name()
            ))
        })
    }

    /// The record's part as JSON: the dynamic message in Protobuf's JSON mapping, with the field
    /// names of the `.proto` (as Powertools' Python `MessageToDict(preserving_proto_field_name=True)`
    /// gives them), 64-bit integers as strings, fields at their default value left out.
    pub fn decode_json(&self, record: &KafkaRecord) -> Result<serde_json::Value, DeserializeError> {
        let message = self.decode_dynamic(record)?;
        message
            .serialize_with_options(
                serde_json::value::Serializer,
                &SerializeOptions::new().use_proto_field_name(true),
            )
            .map_err(|e| DeserializeError::new(format!("the {} has no JSON form: {e}", self.part)))
    }

    /// The ESM's JSON shape through the fixed descriptor, when it parses as that message.
    fn read_esm_json(
        &self,
        unframed: &Unframed<'_>,
    ) -> Option<Result<DynamicMessage, DeserializeError>> {
        let descriptor = self.fixed.clone()?;
        let mut json = serde_json::Deserializer::from_slice(&unframed.body);
        let message = DynamicMessage::deserialize(descriptor, &mut json).ok()?;
        json.end().ok()?;
        Some(Ok(message))
    }

    fn descriptor_for(
        &self,
        unframed: &Unframed<'_>,
        index: &MessageIndex,
    ) -> Result<MessageDescriptor, DeserializeError> {
        let Some(id) = unframed.schema_id().filter(|_| self.compiled.has_source()) else {
            return self.fixed.clone().ok_or_else(|| {
                DeserializeError::new(format!(
                    "the {} names no schema the Protobuf format can find, and it has no message of its own",
                    self.part
                ))
            });
        };
        let file = self.compiled.get(&id, SchemaKind::Protobuf, compile)?;
        let found = match index {
            MessageIndex::Confluent(path) => by_confluent_path(&file, path),
            MessageIndex::Glue(index) => by_glue_index(&file, *index),
            MessageIndex::None => self.fixed.clone().or_else(|| file.messages().next()),
        };
        found.ok_or_else(|| {
            DeserializeError::new(format!("schema {id} has no message at index {index:?}"))
        })
    }
}

impl<M: prost::Message + Default> ValueFormat<M> for Protobuf<M> {
    fn decode(&self, record: &KafkaRecord) -> Result<M, DeserializeError> {
        let (bytes, metadata) = self.part.read(record)?;
        let unframed = wire::unframe(bytes, metadata, self.wire, Payload::Binary)?;
        if unframed.looks_like_esm_json()
            && let Some(message) = self.read_esm_json(&unframed)
        {
            return message?.transcode_to::<M>().map_err(|e| {
                DeserializeError::new(format!(
                    "the {} (JSON from the ESM) is not the expected message: {e}",
                    self.part
                ))
            });
        }
        let (_, body) = wire::read_message_index(&unframed.body, unframed.index)?;
        M::decode(body).map_err(|e| {
            DeserializeError::new(format!(
                "the {} is not the expected Protobuf: {e}",
                self.part
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode_event;
    use crate::format::{LocalDirectory, MemorySchemas, SchemaId};
    use crate::record::{DecodedRecord, SchemaMetadata};
    use prost_reflect::ReflectMessage;
    use serde_json::json;
    use std::collections::HashMap;
    use std::io::Write;

    /// Powertools' product.proto (TypeScript) and confluent_protobuf.proto (Python).
    #[derive(Clone, PartialEq, prost::Message)]
    struct Product {
        #[prost(int32, tag = "1")]
        id: i32,
        #[prost(string, tag = "2")]
        name: String,
        #[prost(double, tag = "3")]
        price: f64,
    }

    /// Powertools' complex.proto (TypeScript) and user_prof.proto (Python, with `score`).
    #[derive(Clone, PartialEq, prost::Message)]
    struct UserProfile {
        #[prost(string, tag = "1")]
        user_id: String,
        #[prost(string, tag = "2")]
        name: String,
        #[prost(string, tag = "3")]
        email: String,
        #[prost(int32, tag = "4")]
        age: i32,
        #[prost(bool, tag = "5")]
        is_active: bool,
        #[prost(string, tag = "6")]
        signup_date: String,
        #[prost(string, repeated, tag = "7")]
        tags: Vec<String>,
        #[prost(double, tag = "8")]
        score: f64,
        #[prost(map = "string, string", tag = "9")]
        preferences: HashMap<String, String>,
        #[prost(message, optional, tag = "10")]
        address: Option<Address>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Address {
        #[prost(string, tag = "1")]
        street: String,
        #[prost(string, tag = "2")]
        city: String,
        #[prost(string, tag = "3")]
        zip: String,
    }

    const TS: &str = "../../../events/schema-registry/powertools-typescript";

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

    fn laptop() -> Product {
        Product {
            id: 1001,
            name: "Laptop".into(),
            price: 999.99,
        }
    }

    /// Powertools for AWS Lambda (TypeScript), packages/kafka/tests/events/protobuf.json, and
    /// consumer.test.ts "deserializes protobuf message": the first record (valueSchemaMetadata with
    /// a dataFormat and no schemaId) is {id: 1001, name: "Laptop", price: 999.99}, key 42.
    #[test]
    fn powertools_typescript_protobuf_event() {
        let records = records(include_str!(
            "../../../events/schema-registry/powertools-typescript/protobuf.json"
        ));
        assert_eq!(
            Protobuf::<Product>::new().decode(&records[0]).unwrap(),
            laptop()
        );
        let key: u32 = crate::format::Json::new()
            .key()
            .decode(&records[0])
            .unwrap();
        assert_eq!(key, 42);
    }

    /// consumer.test.ts "handles protobuf messages with delimiters": protobuf.json with the values
    /// and schema ids that test sets, all three {id: 1001, name: "Laptop", price: 999.99}: no
    /// schemaId and plain bytes; a (16-digit) numeric schemaId and the index [0] as one 0x00; the
    /// schemaId "1" and an index list written as plain varints (02 01 00: two indexes, 1 and 0).
    #[test]
    fn powertools_typescript_protobuf_with_delimiters() {
        let mut records = records(include_str!(
            "../../../events/schema-registry/powertools-typescript/protobuf.json"
        ));
        let set = |r: &mut KafkaRecord, value: &str, schema_id: Option<&str>| {
            use base64::Engine;
            r.value = Some(
                base64::engine::general_purpose::STANDARD
                    .decode(value)
                    .unwrap(),
            );
            r.value_schema.as_mut().unwrap().schema_id = schema_id.map(Into::into);
        };
        set(&mut records[0], "COkHEgZMYXB0b3AZUrgehes/j0A=", None);
        set(
            &mut records[1],
            "AAjpBxIGTGFwdG9wGVK4HoXrP49A",
            Some("1111111111111111"),
        );
        set(
            &mut records[2],
            "AgEACOkHEgZMYXB0b3AZUrgehes/j0A=",
            Some("1"),
        );
        let format = Protobuf::<Product>::new();
        for r in &records {
            assert_eq!(format.decode(r).unwrap(), laptop(), "offset {}", r.offset);
        }
    }

    fn complex_proto() -> &'static str {
        include_str!("../../../events/schema-registry/powertools-typescript/protos/complex.proto")
    }

    /// Powertools for AWS Lambda (TypeScript), protobuf-complex.confluent.json: four records
    /// captured from the ESM in SOURCE shape with a Confluent registry (schemaId "1"), each value
    /// beginning with the message-index list [1] (02 02): UserProfile, the second message of
    /// complex.proto. consumer.test.ts checks each parses with the address, age, isActive,
    /// preferences, signupDate and tags of a user profile; the values are read here. Their field
    /// 8 (a double) is not in complex.proto: an unknown field.
    #[test]
    fn powertools_typescript_protobuf_complex_confluent() {
        let records = records(include_str!(
            "../../../events/schema-registry/powertools-typescript/protobuf-complex.confluent.json"
        ));
        let format = Protobuf::<UserProfile>::new();
        let users: Vec<UserProfile> = records.iter().map(|r| format.decode(r).unwrap()).collect();
        assert_eq!(users.len(), 4);
        assert_eq!(users[0].user_id, "a8e40971-1552-420d-a7c9-b8982325702d");
        for user in &users {
            assert_eq!(user.name, "Bob");
            assert_eq!(user.email, "bob@example.com");
            assert_eq!(user.age, 28);
            assert!(user.is_active);
            assert_eq!(user.signup_date, "2024-02-02");
            assert_eq!(user.tags, ["tag1", "tag2"]);
            assert_eq!(
                user.preferences.get("theme").map(String::as_str),
                Some("light")
            );
            assert_eq!(
                user.address,
                Some(Address {
                    street: "123 Ave".into(),
                    city: "Seattle".into(),
                    zip: "98101".into()
                })
            );
        }
        // The dynamic view, with complex.proto as schema 1 in a schema directory: the index [1]
        // picks UserProfile; field 8, unknown to complex.proto, is left out of the JSON.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("1.proto"), complex_proto()).unwrap();
        let dynamic = Protobuf::<()>::new()
            .schemas(Arc::new(SchemaCache::new(LocalDirectory::new(dir.path()))));
        let message = dynamic.decode_dynamic(&records[0]).unwrap();
        assert_eq!(
            message.descriptor().full_name(),
            "com.example.protobuf.UserProfile"
        );
        assert_eq!(message.unknown_fields().count(), 1);
        assert_eq!(
            dynamic.decode_json(&records[0]).unwrap(),
            json!({
                "userId": "a8e40971-1552-420d-a7c9-b8982325702d", "name": "Bob",
                "email": "bob@example.com", "age": 28, "isActive": true, "signupDate": "2024-02-02",
                "tags": ["tag1", "tag2"], "preferences": {"theme": "light"},
                "address": {"street": "123 Ave", "city": "Seattle", "zip": "98101"}
            })
        );
    }

    /// Powertools for AWS Lambda (TypeScript), protobuf-complex.glue.json: one record in SOURCE
    /// shape with a Glue registry (a UUID schemaId), its value beginning with the Glue message
    /// index 1: UserProfile, second of complex.proto's messages sorted by full name.
    #[test]
    fn powertools_typescript_protobuf_complex_glue() {
        let records = records(include_str!(
            "../../../events/schema-registry/powertools-typescript/protobuf-complex.glue.json"
        ));
        let user = Protobuf::<UserProfile>::new().decode(&records[0]).unwrap();
        assert_eq!(
            (
                user.user_id.as_str(),
                user.name.as_str(),
                user.email.as_str(),
                user.age
            ),
            ("123", "Test", "test@gmx.com", 10)
        );
        assert_eq!(
            user.address,
            Some(Address {
                street: "Mythenquai".into(),
                city: "Zurich".into(),
                zip: "8002".into()
            })
        );
        let id: SchemaId = "12345678-1234-1234-1234-123456789012".parse().unwrap();
        let dynamic = Protobuf::<()>::new().schemas(Arc::new(SchemaCache::new(
            MemorySchemas::new().with(id, Schema::new(SchemaKind::Protobuf, complex_proto())),
        )));
        let json = dynamic.decode_json(&records[0]).unwrap();
        assert_eq!(json["userId"], "123");
        assert_eq!(json["address"]["zip"], "8002");
    }

    const PY: &str = "../../../events/schema-registry/powertools-python";

    /// Powertools for AWS Lambda (Python), tests/functional/kafka_consumer/_protobuf/schemas/
    /// complex_schema_with_confuent.py, and test_confluent_schema_registry_complex_schema, which
    /// reads `email` and `age` of all four records as UserProfile (user_prof.proto): plain bytes;
    /// schemaId "123" and the index [0]; schemaId "456" and the index list [1, 0] (04 02 00);
    /// a Glue UUID and the index 1.
    #[test]
    fn powertools_python_protobuf_complex_confluent() {
        let _ = PY;
        let records = records(include_str!(
            "../../../events/schema-registry/powertools-python/complex-schema-with-confluent.json"
        ));
        let format = Protobuf::<UserProfile>::new();
        assert_eq!(records.len(), 4);
        for r in &records {
            let user = format.decode(r).unwrap();
            assert_eq!(
                (user.email.as_str(), user.age),
                ("test@gmx.com", 10),
                "offset {}",
                r.offset
            );
            assert_eq!(user.score, 12.0);
        }
    }

    /// Powertools for AWS Lambda (Python), complex_schema_with_glue.py and
    /// test_glue_schema_registry_complex_schema, which reads `email` and `age` of four records
    /// with a Glue schemaId and the Glue message index 1. Their other fields were not written with
    /// user_prof.proto (field 8 is length-delimited where it says `double score = 8`): protobuf for
    /// Python takes a field of the wrong wire type for an unknown one, prost refuses it. So they
    /// are read here as the fields Powertools reads (1 to 4), the rest skipped as unknown.
    #[test]
    fn powertools_python_protobuf_complex_glue() {
        #[derive(Clone, PartialEq, prost::Message)]
        struct UserEmailAge {
            #[prost(string, tag = "1")]
            user_id: String,
            #[prost(string, tag = "2")]
            name: String,
            #[prost(string, tag = "3")]
            email: String,
            #[prost(int32, tag = "4")]
            age: i32,
        }
        let records = records(include_str!(
            "../../../events/schema-registry/powertools-python/complex-schema-with-glue.json"
        ));
        let format = Protobuf::<UserEmailAge>::new();
        let users: Vec<(String, String, i32)> = records
            .iter()
            .map(|r| {
                format
                    .decode(r)
                    .map(|u| (u.user_id, u.email, u.age))
                    .unwrap()
            })
            .collect();
        let alice = |id: &str, age| (id.to_owned(), "alice@example.com".to_owned(), age);
        assert_eq!(
            users,
            [
                alice("u859", 54),
                alice("u809", 40),
                alice("u453", 74),
                alice("u705", 19)
            ]
        );
        let err = Protobuf::<UserProfile>::new()
            .decode(&records[0])
            .unwrap_err();
        assert!(err.message.contains("invalid wire type"), "{err}");
    }

    /// Powertools for AWS Lambda (Python), an earlier test_confluent_complex_schema: the index
    /// bytes with no schema metadata at all. Powertools then stripped them by trying; with no
    /// metadata the ESM had no registry and the bytes are the producer's, so here only the plain
    /// record decodes and the other two are poison (as in later Powertools, which needs the
    /// metadata to strip an index).
    #[test]
    fn powertools_python_index_bytes_without_metadata_are_poison() {
        let records = records(include_str!(
            "../../../events/schema-registry/powertools-python/confluent-complex-schema.json"
        ));
        let format = Protobuf::<Product>::new();
        assert_eq!(format.decode(&records[0]).unwrap(), laptop());
        for r in &records[1..] {
            let err = format.decode(r).unwrap_err();
            assert!(!err.is_transient(), "{err}");
        }
    }

    /// Two top-level messages with nested ones, framed in this test (prost encodes the body; the
    /// headers are written as Confluent's and Glue's serializers write them, no public capture
    /// of such a record having been found).
    const NESTED: &str = r#"syntax = "proto3";
package demo;
message Order { message Line { string sku = 1; } string id = 1; repeated Line lines = 2; }
message Event { message Created { int64 at = 1; string by = 2; } message Deleted { int64 at = 1; } string kind = 1; }
"#;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Created {
        #[prost(int64, tag = "1")]
        at: i64,
        #[prost(string, tag = "2")]
        by: String,
    }

    fn nested_schemas() -> Arc<SchemaCache> {
        Arc::new(SchemaCache::new(
            MemorySchemas::new()
                .with(
                    SchemaId::Confluent(7),
                    Schema::new(SchemaKind::Protobuf, NESTED),
                )
                .with(
                    "0b6a5d4e-0000-4000-8000-000000000007".parse().unwrap(),
                    Schema::new(SchemaKind::Protobuf, NESTED),
                ),
        ))
    }

    fn record(value: Vec<u8>) -> KafkaRecord {
        let mut r = KafkaRecord::new("events", 0, 1);
        r.value = Some(value);
        r
    }

    #[test]
    fn confluent_framed_nested_messages_by_index_path() {
        use prost::Message;
        let body = Created {
            at: 1_750_358_101_849,
            by: "ops".into(),
        }
        .encode_to_vec();
        // [1, 1]: Event.Deleted would be [1, 1]; Event.Created is [1, 0] (zigzag: 04 02 00).
        let mut framed = vec![0, 0, 0, 0, 7, 4, 2, 0];
        framed.extend_from_slice(&body);
        let format = Protobuf::<Created>::new().schemas(nested_schemas());
        assert_eq!(
            format.decode(&record(framed.clone())).unwrap(),
            Created {
                at: 1_750_358_101_849,
                by: "ops".into()
            }
        );
        let message = format.decode_dynamic(&record(framed.clone())).unwrap();
        assert_eq!(message.descriptor().full_name(), "demo.Event.Created");
        assert_eq!(
            format.decode_json(&record(framed)).unwrap(),
            json!({"at": "1750358101849", "by": "ops"})
        );
        // [0]: a single 0x00, the first message (Order).
        let mut order = vec![0, 0, 0, 0, 7, 0];
        order.extend_from_slice(&[0x0a, 0x02, b'o', b'1']);
        assert_eq!(
            format.decode_json(&record(order)).unwrap(),
            json!({"id": "o1"})
        );
        // An index the schema does not have is poison.
        let mut missing = vec![0, 0, 0, 0, 7, 2, 6];
        missing.extend_from_slice(&body);
        let err = format.decode_dynamic(&record(missing)).unwrap_err();
        assert!(err.message.contains("has no message at index"), "{err}");
        assert!(!err.is_transient());
    }

    #[test]
    fn glue_framed_nested_messages_zlib_compressed() {
        use prost::Message;
        // Sorted by full name: demo.Event 0, demo.Event.Created 1, demo.Event.Deleted 2,
        // demo.Order 3, demo.Order.Line 4.
        let mut plain = vec![1];
        plain.extend_from_slice(
            &Created {
                at: 5,
                by: "a".into(),
            }
            .encode_to_vec(),
        );
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(&plain).unwrap();
        let mut framed = vec![3, 5];
        framed.extend_from_slice(
            uuid::Uuid::parse_str("0b6a5d4e-0000-4000-8000-000000000007")
                .unwrap()
                .as_bytes(),
        );
        framed.extend_from_slice(&zlib.finish().unwrap());
        let format = Protobuf::<Created>::new().schemas(nested_schemas());
        assert_eq!(format.decode(&record(framed.clone())).unwrap().by, "a");
        let message = format.decode_dynamic(&record(framed)).unwrap();
        assert_eq!(message.descriptor().full_name(), "demo.Event.Created");
        let mut line = vec![3, 0];
        line.extend_from_slice(
            uuid::Uuid::parse_str("0b6a5d4e-0000-4000-8000-000000000007")
                .unwrap()
                .as_bytes(),
        );
        line.extend_from_slice(&[4, 0x0a, 0x01, b's']);
        assert_eq!(
            format
                .decode_dynamic(&record(line))
                .unwrap()
                .descriptor()
                .full_name(),
            "demo.Order.Line"
        );
    }

    #[test]
    fn unknown_fields_are_skipped_and_bad_bytes_are_poison() {
        // A Product with an extra field 9 (a varint) that Product does not know.
        let mut bytes = vec![0x08, 0xe9, 0x07, 0x48, 0x01];
        bytes.extend_from_slice(&[0x12, 0x06]);
        bytes.extend_from_slice(b"Laptop");
        let product = Protobuf::<Product>::new()
            .wire_format(WireFormat::None)
            .decode(&record(bytes))
            .unwrap();
        assert_eq!((product.id, product.name.as_str()), (1001, "Laptop"));
        let err = Protobuf::<Product>::new()
            .decode(&record(vec![0x0a, 0x10, b'x']))
            .unwrap_err();
        assert!(
            err.message
                .starts_with("the value is not the expected Protobuf"),
            "{err}"
        );
        let err = Protobuf::<()>::new()
            .decode_dynamic(&record(vec![0x08, 0x01]))
            .unwrap_err();
        assert!(err.message.contains("no message of its own"), "{err}");
    }

    #[test]
    fn a_proto_given_directly_reads_plain_bytes_and_the_esm_json_shape() {
        let format = Protobuf::<Product>::new()
            .proto(
                include_str!(
                    "../../../events/schema-registry/powertools-typescript/protos/product.proto"
                ),
                "Product",
            )
            .unwrap();
        let plain = record(vec![
            0x08, 0xe9, 0x07, 0x12, 0x06, b'L', b'a', b'p', b't', b'o', b'p', 0x19, 0x52, 0xb8,
            0x1e, 0x85, 0xeb, 0x3f, 0x8f, 0x40,
        ]);
        assert_eq!(
            format.decode_json(&plain).unwrap(),
            json!({"id": 1001, "name": "Laptop", "price": 999.99})
        );
        let mut esm_json = record(br#"{"id":1001,"name":"Laptop","price":999.99}"#.to_vec());
        esm_json.value_schema = Some(SchemaMetadata {
            data_format: Some("PROTOBUF".into()),
            schema_id: Some("1".into()),
        });
        assert_eq!(format.decode(&esm_json).unwrap(), laptop());
        assert!(
            Protobuf::<Product>::new()
                .proto("syntax = \"proto3\"; message {", "X")
                .is_err()
        );
        assert!(
            Protobuf::<Product>::new()
                .proto("syntax = \"proto3\";", "X")
                .is_err()
        );
        let _ = TS;
    }
}
