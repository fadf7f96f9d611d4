//! Schema sources that need no network: a directory of schema files, and a map.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::schema::{Schema, SchemaError, SchemaId, SchemaKind, SchemaSource};

/// Schemas in a directory, one file per schema, named after its id and kind: `<id>.avsc` (Avro),
/// `<id>.proto` (Protobuf), `<id>.json` (JSON Schema), where `<id>` is a Confluent number (`42`)
/// or a Glue schema version UUID in lower-case hyphenated form
/// (`7d55d475-2244-4485-8341-f74468c1e058`). For offline work: tests, `esm decode`, a Lambda that
/// ships its schemas.
///
/// A missing file is an unknown schema (poison); two files for one id are ambiguous (poison); a
/// directory that cannot be read is unavailable (transient). A `.proto` is read alone: give the
/// files it imports as [`Schema::references`] through another source if it has any.
#[derive(Debug, Clone)]
pub struct LocalDirectory {
    dir: PathBuf,
}

impl LocalDirectory {
    /// Schemas in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a schema of this id and kind would be in.
    pub fn path_of(&self, id: &SchemaId, kind: SchemaKind) -> PathBuf {
        self.dir.join(format!("{id}.{}", kind.extension()))
    }

    fn read(&self, id: &SchemaId) -> Result<Schema, SchemaError> {
        let mut found = Vec::new();
        for kind in [SchemaKind::Avro, SchemaKind::Protobuf, SchemaKind::Json] {
            let path = self.path_of(id, kind);
            match std::fs::read_to_string(&path) {
                Ok(text) => found.push((kind, text)),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) if e.kind() == ErrorKind::InvalidData => {
                    return Err(SchemaError::Invalid {
                        id: *id,
                        message: format!("{} is not UTF-8 text", path.display()),
                    });
                }
                Err(e) => {
                    return Err(SchemaError::Unavailable {
                        id: *id,
                        message: format!("{}: {e}", path.display()),
                    });
                }
            }
        }
        match found.len() {
            0 => Err(SchemaError::NotFound {
                id: *id,
                source_name: self.name(),
            }),
            1 => {
                let (kind, text) = found.remove(0);
                Ok(Schema::new(kind, text))
            }
            _ => Err(SchemaError::Invalid {
                id: *id,
                message: format!(
                    "{} holds more than one file for it ({})",
                    self.dir.display(),
                    found
                        .iter()
                        .map(|(kind, _)| format!("{id}.{}", kind.extension()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }
}

#[async_trait]
impl SchemaSource for LocalDirectory {
    async fn schema(&self, id: &SchemaId) -> Result<Schema, SchemaError> {
        self.read(id)
    }

    fn schema_now(&self, id: &SchemaId) -> Option<Result<Schema, SchemaError>> {
        Some(self.read(id))
    }

    fn name(&self) -> String {
        format!("the directory {}", self.dir.display())
    }
}

/// Schemas held in memory, given by id: for tests, or a Lambda that compiles its schemas in.
#[derive(Debug, Clone, Default)]
pub struct MemorySchemas {
    schemas: HashMap<SchemaId, Schema>,
}

impl MemorySchemas {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the schema with this id.
    pub fn with(mut self, id: SchemaId, schema: Schema) -> Self {
        self.schemas.insert(id, schema);
        self
    }

    /// Adds (or replaces) the schema with this id.
    pub fn insert(&mut self, id: SchemaId, schema: Schema) {
        self.schemas.insert(id, schema);
    }

    fn read(&self, id: &SchemaId) -> Result<Schema, SchemaError> {
        self.schemas
            .get(id)
            .cloned()
            .ok_or_else(|| SchemaError::NotFound {
                id: *id,
                source_name: self.name(),
            })
    }
}

#[async_trait]
impl SchemaSource for MemorySchemas {
    async fn schema(&self, id: &SchemaId) -> Result<Schema, SchemaError> {
        self.read(id)
    }

    fn schema_now(&self, id: &SchemaId) -> Option<Result<Schema, SchemaError>> {
        Some(self.read(id))
    }

    fn name(&self) -> String {
        "the in-memory schemas".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_are_found_by_id_and_kind() {
        let dir = tempfile::tempdir().unwrap();
        let glue = "7d55d475-2244-4485-8341-f74468c1e058";
        std::fs::write(dir.path().join("1.avsc"), r#""string""#).unwrap();
        std::fs::write(dir.path().join("2.proto"), "syntax = \"proto3\";").unwrap();
        std::fs::write(dir.path().join(format!("{glue}.json")), "{}").unwrap();
        std::fs::write(dir.path().join("3.avsc"), "{}").unwrap();
        std::fs::write(dir.path().join("3.json"), "{}").unwrap();
        let source = LocalDirectory::new(dir.path());
        let one = source.schema(&SchemaId::Confluent(1)).await.unwrap();
        assert_eq!(one, Schema::new(SchemaKind::Avro, r#""string""#));
        let two = source.schema_now(&SchemaId::Confluent(2)).unwrap().unwrap();
        assert_eq!(two.kind, SchemaKind::Protobuf);
        let three = source.schema(&glue.parse().unwrap()).await.unwrap();
        assert_eq!(three.kind, SchemaKind::Json);
        let missing = source.schema(&SchemaId::Confluent(9)).await.unwrap_err();
        assert!(matches!(missing, SchemaError::NotFound { .. }), "{missing}");
        assert!(!missing.is_transient());
        assert!(missing.to_string().contains("the directory"), "{missing}");
        let ambiguous = source.schema(&SchemaId::Confluent(3)).await.unwrap_err();
        assert!(
            ambiguous.to_string().contains("3.avsc, 3.json"),
            "{ambiguous}"
        );
        assert!(!ambiguous.is_transient());
    }

    #[tokio::test]
    async fn an_unreadable_directory_is_transient() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "x").unwrap();
        // Reading `<file>/1.avsc` fails with "not a directory", not "not found".
        let err = LocalDirectory::new(&file)
            .schema(&SchemaId::Confluent(1))
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err}");
    }

    #[tokio::test]
    async fn memory_schemas_answer_what_they_hold() {
        let source =
            MemorySchemas::new().with(SchemaId::Confluent(5), Schema::new(SchemaKind::Json, "{}"));
        assert!(source.schema(&SchemaId::Confluent(5)).await.is_ok());
        assert!(matches!(
            source.schema_now(&SchemaId::Confluent(6)),
            Some(Err(SchemaError::NotFound { .. }))
        ));
    }
}
