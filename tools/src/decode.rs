//! `esm decode`: each record of an event file as a handler would see it, one JSON line per record.
//!
//! The key and the value are read with the library's own formats ([`kafka_esm::format`]): the
//! same code, framing rules ([`WireFormat`]) and schema sources ([`SchemaSourceConfig`]) a
//! function uses, so what `esm decode` prints is what the handler's `deserialize` gets. A line:
//!
//! ```json
//! {"headers":[{"source":"web"}],"key":"42","offset":15,"partition":0,
//!  "schema":{"key":null,"value":{"id":"42","kind":"avro"}},"topic":"orders","value":{"id":1001}}
//! ```
//!
//! (one line per record, keys in alphabetical order; wrapped here.)
//!
//! - A part read with no format (`raw`, the key's default) is its UTF-8 text as a JSON string, or
//!   `{"base64": "..."}` when it is not UTF-8; header values likewise (a null header is `null`).
//!   Headers keep the event's shape: a list of one-entry objects, in order, names may repeat.
//! - `schema` says, per part, which schema the format used: `{"kind", "id"}` (the id the bytes'
//!   header or the ESM's `schemaId` named), with `"file"` when it was the schema given with
//!   `--value-schema`/`--key-schema`; `null` for `raw` and for JSON that names no schema.
//! - A record that does not decode still gets its line, with `error` (and `transient: true` when
//!   a schema registry could not be reached: the function would retry it, not dead-letter it); the
//!   part that failed is shown raw. The file goes on; the exit code is 1.
//!
//! Output: one JSON line per record (JSON Lines: `jq`, `grep`). With `--json`, one JSON object per
//! event file instead, `{"file", "records": [...], "failed"}`, as `esm replay --json` writes one per
//! file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use base64::Engine;
use kafka_esm::format::{
    Avro, Json, JsonSchema, Part, Protobuf, SchemaCache, ValueFormat, WireFormat, schema_id_of,
};
use kafka_esm::handler::DeserializeError;
use kafka_esm::record::{DecodedRecord, KafkaRecord};
use kafka_esm::registry::SchemaSourceConfig;
use serde_json::{Map, Value, json};

/// How a key or a value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PartFormat {
    /// Apache Avro (`Avro<T>`): the writer schema from the registry or schema directory by the
    /// id the record names, else the schema file given.
    Avro,
    /// Protocol Buffers (`Protobuf<M>`): the message from the registry's `.proto` and the
    /// record's message index, else the `.proto` file and message given.
    Protobuf,
    /// JSON (`Json<T>`), a registry's header removed.
    Json,
    /// JSON validated against a JSON Schema (`JsonSchema<T>`).
    JsonSchema,
    /// No format: UTF-8 text, else base64.
    Raw,
}

impl PartFormat {
    fn name(self) -> &'static str {
        match self {
            Self::Avro => "avro",
            Self::Protobuf => "protobuf",
            Self::Json => "json",
            Self::JsonSchema => "json-schema",
            Self::Raw => "raw",
        }
    }
}

/// `esm decode`: print each record of ESM event files decoded, one JSON line per record.
#[derive(Debug, Clone, clap::Args)]
pub struct DecodeArgs {
    /// Event files, or directories whose *.json files are read in name order.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// One JSON object per event file (`{"file", "records", "failed"}`) instead of one line per
    /// record.
    #[arg(long)]
    pub json: bool,
    /// How values are read.
    #[arg(long, value_enum, default_value = "json")]
    pub value_format: PartFormat,
    /// The value's schema file: Avro `.avsc` (the writer schema of values that name none),
    /// `.proto` (with --value-message), or a JSON Schema.
    #[arg(long)]
    pub value_schema: Option<PathBuf>,
    /// The Protobuf message of --value-schema, by its full name (`package.Message`).
    #[arg(long)]
    pub value_message: Option<String>,
    /// How keys are read (default: raw, UTF-8 text or base64).
    #[arg(long, value_enum, default_value = "raw")]
    pub key_format: PartFormat,
    /// The key's schema file (as --value-schema).
    #[arg(long)]
    pub key_schema: Option<PathBuf>,
    /// The Protobuf message of --key-schema.
    #[arg(long)]
    pub key_message: Option<String>,
    /// The framing the producer used: auto (recognise Confluent, Glue and plain), confluent,
    /// glue, or none (plain bytes that could look like a header).
    #[arg(long, default_value = "auto")]
    pub wire_format: WireFormat,
    /// A directory of schema files named after their ids (`<id>.avsc`, `<uuid>.proto`, ...).
    #[arg(long, conflicts_with_all = ["registry_url", "glue_registry"])]
    pub schema_dir: Option<PathBuf>,
    /// A Confluent Schema Registry (`https://...`): `GET /schemas/ids/{id}`.
    #[arg(long, conflicts_with = "glue_registry")]
    pub registry_url: Option<String>,
    /// An AWS Glue Schema Registry, by its ARN (the usual AWS settings: AWS_REGION, credentials,
    /// AWS_ENDPOINT_URL).
    #[arg(long)]
    pub glue_registry: Option<String>,
    /// Confluent only: basic, bearer or none (as SCHEMA_REGISTRY_AUTH).
    #[arg(long, requires = "registry_url")]
    pub registry_auth: Option<String>,
    /// Confluent only: the Secrets Manager secret with the credentials (as
    /// SCHEMA_REGISTRY_SECRET_ARN). SCHEMA_REGISTRY_TLS_SECRET_ARN, SCHEMA_REGISTRY_CA_SECRET_ARN
    /// and SCHEMA_REGISTRY_TIMEOUT_SECONDS are read from the environment.
    #[arg(long, requires = "registry_url")]
    pub registry_secret_arn: Option<String>,
}

/// One part's reader.
enum Reader {
    Raw,
    Json(Json<Value>),
    JsonSchema(JsonSchema<Value>),
    Avro(Avro<Value>),
    Protobuf(Protobuf<()>),
}

/// How one part (key or value) is read, and what to say about its schema.
struct PartReader {
    part: Part,
    format: PartFormat,
    reader: Reader,
    schema_file: Option<PathBuf>,
    has_source: bool,
    wire: WireFormat,
}

fn read_text(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

impl PartReader {
    fn new(
        part: Part,
        format: PartFormat,
        schema_file: Option<&Path>,
        message: Option<&str>,
        wire: WireFormat,
        cache: Option<&Arc<SchemaCache>>,
    ) -> Result<Self, String> {
        let flag = part.as_str();
        let schema_text = schema_file.map(read_text).transpose()?;
        if message.is_some() && format != PartFormat::Protobuf {
            return Err(format!("--{flag}-message is for --{flag}-format protobuf"));
        }
        let reader = match format {
            PartFormat::Raw | PartFormat::Json if schema_text.is_some() => {
                return Err(format!(
                    "--{flag}-schema is for the avro, protobuf and json-schema formats"
                ));
            }
            PartFormat::Raw => Reader::Raw,
            PartFormat::Json => Reader::Json(Json::new().part(part).wire_format(wire)),
            PartFormat::Avro => {
                let mut avro = Avro::new().part(part).wire_format(wire);
                if let Some(cache) = cache {
                    avro = avro.schemas(cache.clone());
                }
                match &schema_text {
                    Some(text) => avro = avro.writer_schema(text).map_err(|e| e.to_string())?,
                    None if cache.is_none() => {
                        return Err(format!(
                            "--{flag}-format avro needs --{flag}-schema or a schema source (--schema-dir, --registry-url, --glue-registry)"
                        ));
                    }
                    None => {}
                }
                Reader::Avro(avro)
            }
            PartFormat::Protobuf => {
                let mut protobuf = Protobuf::new().part(part).wire_format(wire);
                if let Some(cache) = cache {
                    protobuf = protobuf.schemas(cache.clone());
                }
                match (&schema_text, message) {
                    (Some(text), Some(message)) => {
                        protobuf = protobuf.proto(text, message).map_err(|e| e.to_string())?
                    }
                    (Some(_), None) => {
                        return Err(format!(
                            "--{flag}-schema with --{flag}-format protobuf needs --{flag}-message (package.Message)"
                        ));
                    }
                    (None, Some(_)) => {
                        return Err(format!("--{flag}-message needs --{flag}-schema (a .proto)"));
                    }
                    (None, None) if cache.is_none() => {
                        return Err(format!(
                            "--{flag}-format protobuf needs --{flag}-schema and --{flag}-message, or a schema source (--schema-dir, --registry-url, --glue-registry)"
                        ));
                    }
                    (None, None) => {}
                }
                Reader::Protobuf(protobuf)
            }
            PartFormat::JsonSchema => {
                let mut format = JsonSchema::new().part(part).wire_format(wire);
                if let Some(cache) = cache {
                    format = format.schemas(cache.clone());
                }
                if let Some(text) = &schema_text {
                    let schema: Value = serde_json::from_str(text)
                        .map_err(|e| format!("--{flag}-schema is not JSON (a JSON Schema): {e}"))?;
                    format = format.schema(&schema).map_err(|e| e.to_string())?;
                }
                Reader::JsonSchema(format)
            }
        };
        Ok(Self {
            part,
            format,
            reader,
            schema_file: schema_file.map(Path::to_path_buf),
            has_source: cache.is_some(),
            wire,
        })
    }

    /// Fetches the schemas `records` name (a registry is asked once per schema, concurrently).
    async fn prefetch(&self, records: &[&KafkaRecord]) -> Result<(), String> {
        if !self.has_source {
            return Ok(());
        }
        let records = records.iter().copied();
        let result = match &self.reader {
            Reader::Avro(f) => f.prefetch(records).await,
            Reader::Protobuf(f) => f.prefetch(records).await,
            Reader::JsonSchema(f) => f.prefetch(records).await,
            Reader::Raw | Reader::Json(_) => Ok(()),
        };
        result.map_err(|e| e.to_string())
    }

    /// The part decoded; `null` when the record has no such part (no key, a tombstone).
    fn decode(&self, record: &KafkaRecord) -> Result<Value, DeserializeError> {
        let Some(bytes) = self.part.bytes(record) else {
            return Ok(Value::Null);
        };
        match &self.reader {
            Reader::Raw => Ok(raw(bytes)),
            Reader::Json(f) => f.decode(record),
            Reader::JsonSchema(f) => f.decode_json(record),
            Reader::Avro(f) => f.decode_json(record),
            Reader::Protobuf(f) => f.decode_json(record),
        }
    }

    /// Which schema the format read the part with.
    fn schema(&self, record: &KafkaRecord) -> Value {
        if self.format == PartFormat::Raw || self.part.bytes(record).is_none() {
            return Value::Null;
        }
        let id = schema_id_of(record, self.part, self.wire);
        match (id, &self.schema_file) {
            (Some(id), _) if self.has_source || self.format == PartFormat::Json => {
                json!({"kind": self.format.name(), "id": id.to_string()})
            }
            (id, Some(file)) => json!({
                "kind": self.format.name(),
                "id": id.map(|id| id.to_string()),
                "file": file.display().to_string(),
            }),
            (Some(id), None) => json!({"kind": self.format.name(), "id": id.to_string()}),
            (None, None) => Value::Null,
        }
    }
}

/// Bytes as UTF-8 text, else `{"base64": "..."}`.
fn raw(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => json!({"base64": base64::engine::general_purpose::STANDARD.encode(bytes)}),
    }
}

fn raw_part(bytes: Option<&[u8]>) -> Value {
    bytes.map_or(Value::Null, raw)
}

/// The schema source the options name, behind a cache; `None` when they name none.
async fn schema_cache(args: &DecodeArgs) -> Result<Option<Arc<SchemaCache>>, String> {
    if let Some(url) = &args.registry_url
        && url.starts_with("arn:")
    {
        return Err("--registry-url is a Confluent registry's URL: give a Glue registry's ARN with --glue-registry".into());
    }
    if let Some(arn) = &args.glue_registry
        && !arn.starts_with("arn:")
    {
        return Err(format!(
            "--glue-registry {arn:?} is not an ARN (arn:aws:glue:REGION:ACCOUNT:registry/NAME)"
        ));
    }
    let lookup = |name: &str| -> Option<String> {
        match name {
            "SCHEMA_DIR" => args.schema_dir.as_ref().map(|d| d.display().to_string()),
            "SCHEMA_REGISTRY_URL" => args
                .registry_url
                .clone()
                .or_else(|| args.glue_registry.clone()),
            "SCHEMA_REGISTRY_AUTH" => args.registry_auth.clone(),
            "SCHEMA_REGISTRY_SECRET_ARN" => args.registry_secret_arn.clone(),
            "SCHEMA_REGISTRY_TLS_SECRET_ARN"
            | "SCHEMA_REGISTRY_CA_SECRET_ARN"
            | "SCHEMA_REGISTRY_TIMEOUT_SECONDS"
                if args.registry_url.is_some() || args.glue_registry.is_some() =>
            {
                std::env::var(name).ok()
            }
            _ => None,
        }
    };
    let config = SchemaSourceConfig::from_lookup(&lookup).map_err(|e| e.problems.join("; "))?;
    match config {
        None => Ok(None),
        Some(config) => config.open().await.map(Some).map_err(|e| e.to_string()),
    }
}

/// One record's line, and whether it decoded.
fn record_line(record: &KafkaRecord, key: &PartReader, value: &PartReader) -> (Value, bool) {
    let mut errors = Vec::new();
    let mut transient = false;
    let mut read = |reader: &PartReader| match reader.decode(record) {
        Ok(v) => v,
        Err(e) => {
            transient |= e.is_transient();
            errors.push(format!("{}: {}", reader.part, e.message));
            raw_part(reader.part.bytes(record))
        }
    };
    let key_json = read(key);
    let value_json = read(value);
    let headers: Vec<Value> = record
        .headers
        .iter()
        .map(|h| {
            let mut one = Map::new();
            one.insert(h.name.clone(), h.value.as_deref().map_or(Value::Null, raw));
            Value::Object(one)
        })
        .collect();
    let mut line = Map::new();
    line.insert("topic".into(), record.topic.clone().into());
    line.insert("partition".into(), record.partition.into());
    line.insert("offset".into(), record.offset.into());
    line.insert("key".into(), key_json);
    line.insert("value".into(), value_json);
    line.insert("headers".into(), Value::Array(headers));
    line.insert(
        "schema".into(),
        json!({"key": key.schema(record), "value": value.schema(record)}),
    );
    let ok = errors.is_empty();
    if !ok {
        line.insert("error".into(), errors.join("; ").into());
        if transient {
            line.insert("transient".into(), true.into());
        }
    }
    (Value::Object(line), ok)
}

/// Every record of one event file: its lines, and how many failed. A file that cannot be read
/// or is not an ESM event is an error.
async fn decode_file(
    path: &Path,
    key: &PartReader,
    value: &PartReader,
) -> Result<(Vec<Value>, usize), String> {
    let text = read_text(path)?;
    let batch = kafka_esm::event::decode_event(&text)
        .map_err(|e| format!("{}: not an ESM event: {e}", path.display()))?;
    let records: Vec<&KafkaRecord> = batch
        .partitions
        .iter()
        .flat_map(|p| &p.records)
        .filter_map(|r| match r {
            DecodedRecord::Record(r) => Some(r),
            DecodedRecord::Undecodable(_) => None,
        })
        .collect();
    for reader in [key, value] {
        if let Err(e) = reader.prefetch(&records).await {
            // Each record whose schema is missing says so in its own line.
            eprintln!(
                "esm decode: {}: fetching the {} schemas: {e}",
                path.display(),
                reader.part
            );
        }
    }
    let mut lines = Vec::new();
    let mut failed = 0;
    for slot in batch.partitions.iter().flat_map(|p| &p.records) {
        match slot {
            DecodedRecord::Record(record) => {
                let (line, ok) = record_line(record, key, value);
                failed += usize::from(!ok);
                lines.push(line);
            }
            DecodedRecord::Undecodable(u) => {
                failed += 1;
                lines.push(json!({
                    "topic": u.topic,
                    "partition": u.partition,
                    "offset": u.offset,
                    "error": format!("the record is not an ESM record: {}", u.reason),
                }));
            }
        }
    }
    Ok((lines, failed))
}

/// Runs `esm decode`. Exit code: 0 when every record decoded, 1 when one did not or a file could
/// not be read, 2 when the options cannot be used (a schema file, a registry).
pub async fn run(args: DecodeArgs) -> ExitCode {
    let start = async {
        let cache = schema_cache(&args).await?;
        let key = PartReader::new(
            Part::Key,
            args.key_format,
            args.key_schema.as_deref(),
            args.key_message.as_deref(),
            args.wire_format,
            cache.as_ref(),
        )?;
        let value = PartReader::new(
            Part::Value,
            args.value_format,
            args.value_schema.as_deref(),
            args.value_message.as_deref(),
            args.wire_format,
            cache.as_ref(),
        )?;
        let files = crate::replay::event_files(&args.paths).map_err(|e| e.to_string())?;
        Ok::<_, String>((key, value, files))
    };
    let (key, value, files) = match start.await {
        Ok(ready) => ready,
        Err(e) => {
            eprintln!("esm decode: {e}");
            return ExitCode::from(2);
        }
    };
    let mut all_ok = true;
    let mut out = std::io::stdout().lock();
    for file in files {
        match decode_file(&file, &key, &value).await {
            Ok((lines, failed)) => {
                all_ok &= failed == 0;
                let written = if args.json {
                    let doc = json!({
                        "file": file.display().to_string(),
                        "records": lines,
                        "failed": failed,
                    });
                    writeln!(out, "{doc}")
                } else {
                    lines.iter().try_for_each(|line| writeln!(out, "{line}"))
                };
                if written.is_err() {
                    // stdout closed (`esm decode ... | head`): nothing more to print.
                    return ExitCode::FAILURE;
                }
            }
            Err(e) => {
                all_ok = false;
                eprintln!("esm decode: {e}");
            }
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
