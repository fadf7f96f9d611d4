//! Schemas and where they come from: one [`SchemaSource`] trait for every registry.
//!
//! A schema is found by its [`SchemaId`]: a Confluent registry's number or a Glue schema-version
//! UUID, read from a record's framing or from the ESM's `schemaId`. A source answers with the
//! [`Schema`]'s text (an `.avsc`, a `.proto`, a JSON Schema), or with a [`SchemaError`] that says
//! whether asking again may help: an unreachable source is **transient** (the record is retried),
//! an unknown schema or one that cannot be used is **poison** (the record is dead-lettered).
//!
//! Sources in this crate: [`LocalDirectory`](super::LocalDirectory) (files named after their
//! ids, for offline work) and [`MemorySchemas`](super::MemorySchemas). A Confluent REST or Glue
//! source implements the same trait, and [`SchemaCache`](super::SchemaCache) puts any of them
//! behind a per-container cache.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use uuid::Uuid;

use crate::handler::DeserializeError;

/// A schema's id in its registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SchemaId {
    /// A Confluent Schema Registry id (the 4-byte id of the Confluent wire format).
    Confluent(u32),
    /// An AWS Glue Schema Registry schema-version id.
    Glue(Uuid),
}

impl fmt::Display for SchemaId {
    /// The number, or the UUID in its hyphenated lower-case form: as the ESM writes `schemaId`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Confluent(id) => write!(f, "{id}"),
            Self::Glue(id) => write!(f, "{}", id.hyphenated()),
        }
    }
}

/// A `schemaId` that is neither a Confluent number nor a Glue UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither a Confluent schema id (a number) nor a Glue schema version id (a UUID)")]
pub struct BadSchemaId(pub String);

impl FromStr for SchemaId {
    type Err = BadSchemaId;

    /// Decimal digits are a Confluent id; a UUID is a Glue schema version id.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse()
                .map(Self::Confluent)
                .map_err(|_| BadSchemaId(text.to_owned()));
        }
        Uuid::parse_str(text)
            .map(Self::Glue)
            .map_err(|_| BadSchemaId(text.to_owned()))
    }
}

/// What language a schema is written in (the ESM's `dataFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaKind {
    /// Apache Avro (`.avsc`, `AVRO`).
    Avro,
    /// Protocol Buffers (`.proto`, `PROTOBUF`).
    Protobuf,
    /// JSON Schema (`.json`, `JSON`).
    Json,
}

impl SchemaKind {
    /// The ESM's `dataFormat` spelling.
    pub fn data_format(self) -> &'static str {
        match self {
            Self::Avro => "AVRO",
            Self::Protobuf => "PROTOBUF",
            Self::Json => "JSON",
        }
    }

    /// The kind a `dataFormat` names, if any.
    pub fn from_data_format(data_format: &str) -> Option<Self> {
        match data_format {
            "AVRO" => Some(Self::Avro),
            "PROTOBUF" => Some(Self::Protobuf),
            "JSON" => Some(Self::Json),
            _ => None,
        }
    }

    /// The file extension of a schema of this kind (`avsc`, `proto`, `json`).
    pub fn extension(self) -> &'static str {
        match self {
            Self::Avro => "avsc",
            Self::Protobuf => "proto",
            Self::Json => "json",
        }
    }
}

impl fmt::Display for SchemaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.data_format())
    }
}

/// A schema a registry holds, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    /// Its language.
    pub kind: SchemaKind,
    /// Its text: Avro JSON, a `.proto` file, a JSON Schema document.
    pub text: String,
    /// Schemas it refers to by name (a `.proto` it imports, an Avro named type), as a registry
    /// returns them with it.
    pub references: Vec<SchemaReference>,
}

impl Schema {
    /// A schema of this kind with no references.
    pub fn new(kind: SchemaKind, text: impl Into<String>) -> Self {
        Self {
            kind,
            text: text.into(),
            references: Vec::new(),
        }
    }
}

/// A schema another one refers to by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaReference {
    /// The name it is referred to by (for Protobuf, the imported file's name).
    pub name: String,
    /// Its text.
    pub text: String,
}

/// Why a schema could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The source could not answer (unreachable, throttled, a server error): asking again may
    /// help. Transient: the record is retried, never dead-lettered for it.
    #[error("schema {id} is unavailable: {message}")]
    Unavailable {
        /// The schema asked for.
        id: SchemaId,
        /// What went wrong.
        message: String,
    },
    /// The source has no schema with this id. Poison.
    #[error("schema {id} was not found{}", in_source(source_name))]
    NotFound {
        /// The schema asked for.
        id: SchemaId,
        /// Where it was looked for.
        source_name: String,
    },
    /// The schema exists but cannot be used (it does not parse, it is of another kind). Poison.
    #[error("schema {id} cannot be used: {message}")]
    Invalid {
        /// The schema asked for.
        id: SchemaId,
        /// What is wrong with it.
        message: String,
    },
    /// The source can only answer after a wait, and the schema was not fetched before a
    /// synchronous decode needed it: fetch it first ([`SchemaCache::prefetch`](super::SchemaCache::prefetch)).
    /// Transient.
    #[error("schema {id} is not fetched yet: prefetch the records' schemas before decoding them")]
    NotFetched {
        /// The schema asked for.
        id: SchemaId,
    },
}

fn in_source(source: &str) -> String {
    if source.is_empty() {
        String::new()
    } else {
        format!(" in {source}")
    }
}

impl SchemaError {
    /// The schema asked for.
    pub fn id(&self) -> SchemaId {
        match self {
            Self::Unavailable { id, .. }
            | Self::NotFound { id, .. }
            | Self::Invalid { id, .. }
            | Self::NotFetched { id } => *id,
        }
    }

    /// True when asking again may succeed: the record must be retried, not dead-lettered.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::NotFetched { .. })
    }
}

impl From<SchemaError> for DeserializeError {
    /// Transient schema errors stay transient ([`DeserializeError::is_transient`]); the others are
    /// poison. The message names the schema id.
    fn from(error: SchemaError) -> Self {
        if error.is_transient() {
            DeserializeError::transient(error.to_string())
        } else {
            DeserializeError::new(error.to_string())
        }
    }
}

/// A schema given to a format that does not parse or compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schema: {0}")]
pub struct InvalidSchema(pub String);

/// Where schemas come from: a registry, a directory, a map.
///
/// [`SchemaSource::schema`] is the one required method. A source that can answer without waiting
/// (files on a local disk, a map) also answers [`SchemaSource::schema_now`], so that a format can
/// decode synchronously a record whose schema nobody fetched before.
#[async_trait]
pub trait SchemaSource: Send + Sync {
    /// The schema with this id. Return [`SchemaError::Unavailable`] when the source cannot be
    /// reached (the record will be retried), [`SchemaError::NotFound`] when it has no such schema.
    async fn schema(&self, id: &SchemaId) -> Result<Schema, SchemaError>;

    /// The same answer without waiting, when the source can give it so; `None` (the default) when
    /// it needs to wait for I/O.
    fn schema_now(&self, id: &SchemaId) -> Option<Result<Schema, SchemaError>> {
        let _ = id;
        None
    }

    /// What to call the source in messages (a directory, a registry URL).
    fn name(&self) -> String {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_ids_read_and_write_as_the_esm_spells_them() {
        assert_eq!("1".parse(), Ok(SchemaId::Confluent(1)));
        assert_eq!("4294967295".parse(), Ok(SchemaId::Confluent(u32::MAX)));
        let uuid = "7d55d475-2244-4485-8341-f74468c1e058";
        let id: SchemaId = uuid.parse().unwrap();
        assert_eq!(id, SchemaId::Glue(Uuid::parse_str(uuid).unwrap()));
        assert_eq!(id.to_string(), uuid);
        assert_eq!(SchemaId::Confluent(300).to_string(), "300");
        for bad in ["", "4294967296", "-1", "key-schema-001", "12 "] {
            assert_eq!(
                bad.parse::<SchemaId>(),
                Err(BadSchemaId(bad.into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn data_formats_name_schema_kinds() {
        for kind in [SchemaKind::Avro, SchemaKind::Protobuf, SchemaKind::Json] {
            assert_eq!(SchemaKind::from_data_format(kind.data_format()), Some(kind));
        }
        assert_eq!(SchemaKind::from_data_format("avro"), None);
        assert_eq!(SchemaKind::Protobuf.extension(), "proto");
    }

    #[test]
    fn unavailable_schemas_are_transient_and_unknown_ones_poison() {
        let id = SchemaId::Confluent(9);
        let transient = [
            SchemaError::Unavailable {
                id,
                message: "connection refused".into(),
            },
            SchemaError::NotFetched { id },
        ];
        for error in transient {
            assert!(error.is_transient());
            let de = DeserializeError::from(error.clone());
            assert!(de.is_transient(), "{error}");
            assert!(de.message.contains("schema 9"), "{de}");
        }
        let poison = [
            SchemaError::NotFound {
                id,
                source_name: "the directory schemas/".into(),
            },
            SchemaError::Invalid {
                id,
                message: "not Avro".into(),
            },
        ];
        for error in poison {
            assert!(!error.is_transient());
            assert!(
                !DeserializeError::from(error.clone()).is_transient(),
                "{error}"
            );
            assert_eq!(error.id(), id);
        }
        assert_eq!(
            SchemaError::NotFound {
                id,
                source_name: "the directory schemas/".into()
            }
            .to_string(),
            "schema 9 was not found in the directory schemas/"
        );
    }
}
