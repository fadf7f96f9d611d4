//! Framing: how a key's or value's bytes carry (or no longer carry) their schema id.
//!
//! Three shapes reach a function (see the [module docs](super) for the AWS text behind them):
//!
//! - **Confluent framing**, written by Confluent's serializers when the ESM has no registry:
//!   `0x00`, a 4-byte big-endian schema id, for Protobuf the message-index list, then the body.
//! - **Glue framing**, written by the AWS Glue Schema Registry serializers: `0x03` (header
//!   version), a compression byte (`0x00` none, `0x05` zlib), the 16-byte schema-version UUID,
//!   then the body, zlib-compressed when the compression byte says so. For Protobuf the
//!   (decompressed) body starts with one unsigned varint: the message index.
//! - **The ESM's shapes**, when the ESM has a registry: `keySchemaMetadata`/`valueSchemaMetadata`
//!   `{dataFormat, schemaId}` is in the record, and the header is gone (`SOURCE`) or the value is
//!   JSON text (`JSON`). Powertools' captured `SOURCE` fixtures show that Protobuf keeps its message
//!   index: the Confluent list when `schemaId` is a number, the Glue varint when it is a UUID.
//!
//! [`unframe`] tells them apart, guided by a [`WireFormat`], and [`read_message_index`] reads a
//! Protobuf message index. Varints are read here; no codec is.

use std::borrow::Cow;
use std::fmt;
use std::io::Read;
use std::str::FromStr;

use uuid::Uuid;

use super::schema::SchemaId;
use crate::handler::DeserializeError;
use crate::record::SchemaMetadata;

/// Confluent's magic byte: the first byte of a Confluent-framed payload.
pub const CONFLUENT_MAGIC: u8 = 0x00;
/// The Glue Schema Registry's header version byte: the first byte of a Glue-framed payload.
pub const GLUE_HEADER_VERSION: u8 = 0x03;
/// Glue's compression byte for an uncompressed body.
pub const GLUE_COMPRESSION_NONE: u8 = 0x00;
/// Glue's compression byte for a zlib-compressed body.
pub const GLUE_COMPRESSION_ZLIB: u8 = 0x05;
/// Bytes before a Confluent body: the magic byte and the 4-byte schema id.
pub const CONFLUENT_HEADER_LEN: usize = 5;
/// Bytes before a Glue body: header version, compression byte and the 16-byte UUID.
pub const GLUE_HEADER_LEN: usize = 18;
/// The most a zlib-compressed Glue body may inflate to; more is poison (a decompression bomb).
pub const MAX_INFLATED_BYTES: usize = 64 << 20;

/// Which framing a format expects in the bytes it reads.
///
/// `Auto` (the default) recognises each shape: the ESM's (from the record's schema metadata),
/// Confluent's (first byte `0x00`, at least 5 bytes) and Glue's (first byte `0x03`, a known
/// compression byte, at least 18 bytes). A producer whose plain binary bytes may begin like a
/// header (an Avro record whose first field is `0`, `""`, `false` or a union's first branch starts
/// with `0x00`) must say `None`: then the bytes are taken whole. `Confluent` and `Glue` require
/// that header when the record has no schema metadata, and refuse anything else.
///
/// Read from text with [`str::parse`]: `auto`, `confluent`, `glue` or `none` (any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WireFormat {
    /// Recognise the ESM's shapes, Confluent framing and Glue framing; else plain bytes.
    #[default]
    Auto,
    /// Confluent framing, unless the ESM already removed it (schema metadata present).
    Confluent,
    /// Glue framing, unless the ESM already removed it (schema metadata present).
    Glue,
    /// Plain bytes: no header and no Protobuf message index, whatever the first byte.
    None,
}

impl WireFormat {
    /// The spelling [`str::parse`] reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Confluent => "confluent",
            Self::Glue => "glue",
            Self::None => "none",
        }
    }
}

impl fmt::Display for WireFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A wire format spelled neither `auto`, `confluent`, `glue` nor `none`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a wire format: say auto, confluent, glue or none")]
pub struct UnknownWireFormat(pub String);

impl FromStr for WireFormat {
    type Err = UnknownWireFormat;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "confluent" => Ok(Self::Confluent),
            "glue" => Ok(Self::Glue),
            "none" => Ok(Self::None),
            _ => Err(UnknownWireFormat(text.to_owned())),
        }
    }
}

/// What a format reads: JSON text never begins with a header's first byte (`0x00`, `0x03`), so a
/// text format may strip a header wherever one is; a binary body may begin with any byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// JSON text (JSON, JSON Schema).
    Text,
    /// Binary bodies (Avro, Protobuf).
    Binary,
}

/// Where the bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape<'a> {
    /// No schema metadata and no header: the producer's bytes as they are.
    Plain,
    /// Confluent-framed by the producer; the ESM had no registry.
    Confluent {
        /// The schema id of the header.
        schema_id: u32,
    },
    /// Glue-framed by the producer; the ESM had no registry.
    Glue {
        /// The schema-version UUID of the header.
        schema_version: Uuid,
        /// True when the body was zlib-compressed.
        compressed: bool,
    },
    /// The ESM validated the record against its registry: schema metadata is in the record.
    Esm {
        /// `dataFormat` (`AVRO`, `PROTOBUF`, `JSON`), as the ESM wrote it.
        data_format: Option<&'a str>,
        /// `schemaId`: a number for Confluent, a UUID for Glue; `None` when absent or neither.
        schema_id: Option<SchemaId>,
        /// `schemaId` exactly as the ESM wrote it.
        raw_schema_id: Option<&'a str>,
    },
}

/// How a Protobuf body begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    /// With the body itself: no message index.
    None,
    /// With Confluent's message-index list, as Confluent's serializer writes it (zigzag varints).
    Confluent,
    /// With Confluent's message-index list in a record the ESM delivered: zigzag varints, or, when
    /// that reading is impossible, plain varints (as Powertools' test events write it).
    ConfluentEsm,
    /// With Glue's single unsigned varint.
    Glue,
}

/// A key or value with its framing read and removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unframed<'a> {
    /// Where the bytes came from.
    pub shape: Shape<'a>,
    /// The body: after any header, inflated when Glue compressed it. For Protobuf it still begins
    /// with the message index that [`Unframed::index`] names.
    pub body: Cow<'a, [u8]>,
    /// How a Protobuf body begins.
    pub index: IndexKind,
}

impl Unframed<'_> {
    /// The schema id the bytes were written with, from their header or the ESM's metadata.
    pub fn schema_id(&self) -> Option<SchemaId> {
        match &self.shape {
            Shape::Plain => None,
            Shape::Confluent { schema_id } => Some(SchemaId::Confluent(*schema_id)),
            Shape::Glue { schema_version, .. } => Some(SchemaId::Glue(*schema_version)),
            Shape::Esm { schema_id, .. } => *schema_id,
        }
    }

    /// True when the ESM validated the record (its schema metadata is present).
    pub fn from_esm(&self) -> bool {
        matches!(self.shape, Shape::Esm { .. })
    }

    /// True when the ESM validated the record and the body looks like the ESM's `JSON` shape (a
    /// JSON object's text) rather than the `SOURCE` bytes.
    pub fn looks_like_esm_json(&self) -> bool {
        self.from_esm() && self.body.first() == Some(&b'{')
    }
}

/// Reads the framing of `bytes` (a key's or a value's), with the record's schema `metadata` for
/// that part, as `wire` says, for a format that reads `payload`. Errors are poison: the same bytes
/// never unframe.
pub fn unframe<'a>(
    bytes: &'a [u8],
    metadata: Option<&'a SchemaMetadata>,
    wire: WireFormat,
    payload: Payload,
) -> Result<Unframed<'a>, DeserializeError> {
    if wire == WireFormat::None {
        return Ok(Unframed {
            shape: metadata.map_or(Shape::Plain, esm_shape),
            body: Cow::Borrowed(bytes),
            index: IndexKind::None,
        });
    }
    if let Some(metadata) = metadata {
        let shape = esm_shape(metadata);
        // The ESM removed the header. A text format still strips one that is there (JSON never
        // starts with 0x00 or 0x03): what this library always did for a JSON value framed by its
        // producer and described by the ESM.
        if payload == Payload::Text
            && let Some(framed) = read_header(bytes, wire)?
        {
            return Ok(Unframed {
                shape,
                body: framed.body,
                index: IndexKind::None,
            });
        }
        let index = match wire {
            WireFormat::Confluent => IndexKind::ConfluentEsm,
            WireFormat::Glue => IndexKind::Glue,
            WireFormat::Auto | WireFormat::None => esm_index(metadata.schema_id.as_deref()),
        };
        return Ok(Unframed {
            shape,
            body: Cow::Borrowed(bytes),
            index,
        });
    }
    match read_header(bytes, wire)? {
        Some(framed) => Ok(framed),
        None => match wire {
            WireFormat::Confluent => Err(DeserializeError::new(format!(
                "expected the Confluent wire format (magic byte 0x00 and a 4-byte schema id), found {}",
                describe_start(bytes)
            ))),
            WireFormat::Glue => Err(DeserializeError::new(format!(
                "expected the Glue wire format (0x03, a compression byte 0 or 5 and a 16-byte schema version id), found {}",
                describe_start(bytes)
            ))),
            WireFormat::Auto | WireFormat::None => Ok(Unframed {
                shape: Shape::Plain,
                body: Cow::Borrowed(bytes),
                index: IndexKind::None,
            }),
        },
    }
}

/// The schema id in `bytes`' own Confluent or Glue header, read as if they were framed: what a
/// dead letter names when the record carries no schema metadata. `None` when they do not begin
/// like a header.
pub fn framed_schema_id(bytes: &[u8]) -> Option<SchemaId> {
    match bytes {
        [CONFLUENT_MAGIC, a, b, c, d, ..] => {
            Some(SchemaId::Confluent(u32::from_be_bytes([*a, *b, *c, *d])))
        }
        [
            GLUE_HEADER_VERSION,
            GLUE_COMPRESSION_NONE | GLUE_COMPRESSION_ZLIB,
            rest @ ..,
        ] if rest.len() >= 16 => Some(SchemaId::Glue(uuid_at(rest))),
        _ => None,
    }
}

/// How a Protobuf body the ESM delivered begins, from its `schemaId`: a number (Confluent) keeps
/// Confluent's list, a UUID (Glue) Glue's varint; none, neither. A number too large for a Confluent
/// id still says Confluent.
fn esm_index(schema_id: Option<&str>) -> IndexKind {
    match schema_id {
        Some(id) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => {
            IndexKind::ConfluentEsm
        }
        Some(id) if Uuid::parse_str(id).is_ok() => IndexKind::Glue,
        _ => IndexKind::None,
    }
}

fn esm_shape(metadata: &SchemaMetadata) -> Shape<'_> {
    Shape::Esm {
        data_format: metadata.data_format.as_deref(),
        schema_id: metadata.schema_id.as_deref().and_then(|id| id.parse().ok()),
        raw_schema_id: metadata.schema_id.as_deref(),
    }
}

/// The header `wire` allows, when `bytes` begin with one.
fn read_header(bytes: &[u8], wire: WireFormat) -> Result<Option<Unframed<'_>>, DeserializeError> {
    let confluent = matches!(wire, WireFormat::Auto | WireFormat::Confluent);
    let glue = matches!(wire, WireFormat::Auto | WireFormat::Glue);
    match bytes {
        [CONFLUENT_MAGIC, a, b, c, d, body @ ..] if confluent => Ok(Some(Unframed {
            shape: Shape::Confluent {
                schema_id: u32::from_be_bytes([*a, *b, *c, *d]),
            },
            body: Cow::Borrowed(body),
            index: IndexKind::Confluent,
        })),
        [
            GLUE_HEADER_VERSION,
            compression @ (GLUE_COMPRESSION_NONE | GLUE_COMPRESSION_ZLIB),
            rest @ ..,
        ] if glue && rest.len() >= 16 => {
            let schema_version = uuid_at(rest);
            let body = &rest[16..];
            let compressed = *compression == GLUE_COMPRESSION_ZLIB;
            let body = if compressed {
                Cow::Owned(inflate(body, &schema_version)?)
            } else {
                Cow::Borrowed(body)
            };
            Ok(Some(Unframed {
                shape: Shape::Glue {
                    schema_version,
                    compressed,
                },
                body,
                index: IndexKind::Glue,
            }))
        }
        [GLUE_HEADER_VERSION, compression, ..] if wire == WireFormat::Glue => {
            Err(DeserializeError::new(format!(
                "unknown Glue compression byte {compression:#04x} (known: 0x00 none, 0x05 zlib)"
            )))
        }
        _ => Ok(None),
    }
}

fn uuid_at(bytes: &[u8]) -> Uuid {
    let mut id = [0; 16];
    id.copy_from_slice(&bytes[..16]);
    Uuid::from_bytes(id)
}

fn inflate(body: &[u8], schema_version: &Uuid) -> Result<Vec<u8>, DeserializeError> {
    let mut inflated = Vec::with_capacity(body.len().saturating_mul(4));
    let read = flate2::read::ZlibDecoder::new(body)
        .take(MAX_INFLATED_BYTES as u64 + 1)
        .read_to_end(&mut inflated);
    match read {
        Ok(n) if n > MAX_INFLATED_BYTES => Err(DeserializeError::new(format!(
            "the zlib body of Glue schema version {schema_version} inflates past {MAX_INFLATED_BYTES} bytes"
        ))),
        Ok(_) => Ok(inflated),
        Err(e) => Err(DeserializeError::new(format!(
            "the zlib body of Glue schema version {schema_version} does not inflate: {e}"
        ))),
    }
}

fn describe_start(bytes: &[u8]) -> String {
    match bytes.first() {
        None => "no bytes".to_owned(),
        Some(first) => format!("{} bytes starting with {first:#04x}", bytes.len()),
    }
}

/// A Protobuf message index: which message of the schema the body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageIndex {
    /// The body carries none: the format's own message type decides.
    None,
    /// Confluent's path: the index of a top-level message in its file, then of a nested message in
    /// that one, and so on (`[0]` is the first message of the file, `[1, 0]` the first message
    /// nested in the second).
    Confluent(Vec<u32>),
    /// Glue's position of the message among all messages of the schema (nested ones included)
    /// sorted by full name.
    Glue(u32),
}

/// Splits a Protobuf `body` into its message index (as `kind` says it begins) and the message.
///
/// Confluent writes the list as zigzag varints: its length, then each index, a single `0x00`
/// standing for `[0]`. In a record the ESM delivered ([`IndexKind::ConfluentEsm`]), a list that is
/// impossible as zigzag (a negative length or index) is read again as plain varints, which
/// Powertools for AWS Lambda (TypeScript) also accepts and which its test events contain; a list
/// valid as zigzag is never read another way, and bytes framed by a Confluent serializer are read
/// as zigzag only. Glue writes one unsigned varint.
pub fn read_message_index(
    body: &[u8],
    kind: IndexKind,
) -> Result<(MessageIndex, &[u8]), DeserializeError> {
    match kind {
        IndexKind::None => Ok((MessageIndex::None, body)),
        IndexKind::Glue => {
            let (index, used) = read_uvarint(body)
                .filter(|(index, _)| *index <= u64::from(u32::MAX))
                .ok_or_else(|| {
                    DeserializeError::new("the Glue Protobuf message index is not a varint")
                })?;
            Ok((MessageIndex::Glue(index as u32), &body[used..]))
        }
        IndexKind::Confluent | IndexKind::ConfluentEsm => read_confluent_indexes(body, true)
            .or_else(|| {
                (kind == IndexKind::ConfluentEsm)
                    .then(|| read_confluent_indexes(body, false))
                    .flatten()
            })
            .map(|(indexes, used)| (MessageIndex::Confluent(indexes), &body[used..]))
            .ok_or_else(|| {
                DeserializeError::new(
                    "the Confluent Protobuf message-index list is not a list of zigzag varints",
                )
            }),
    }
}

/// The most nesting a Confluent message-index path may have.
const MAX_INDEX_DEPTH: u64 = 64;

fn read_confluent_indexes(body: &[u8], zigzag: bool) -> Option<(Vec<u32>, usize)> {
    let read = |at: usize| -> Option<(i64, usize)> {
        let (raw, used) = read_uvarint(body.get(at..)?)?;
        let value = if zigzag {
            ((raw >> 1) as i64) ^ -((raw & 1) as i64)
        } else {
            i64::try_from(raw).ok()?
        };
        Some((value, at + used))
    };
    let (count, mut at) = read(0)?;
    if count == 0 {
        return Some((vec![0], at));
    }
    if count < 0 || count as u64 > MAX_INDEX_DEPTH {
        return None;
    }
    let mut indexes = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (index, next) = read(at)?;
        indexes.push(u32::try_from(index).ok()?);
        at = next;
    }
    Some((indexes, at))
}

/// Frames `body` as a Confluent serializer writes it, for a producer: [`CONFLUENT_MAGIC`], the
/// schema id (4 bytes, big endian), for Protobuf the message-index path (`Some(&[0])`, the
/// file's first message, is the single byte `0x00`), then the body. What [`unframe`] reads back.
pub fn frame_confluent(schema_id: u32, message_index: Option<&[u32]>, body: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(CONFLUENT_HEADER_LEN + 4 + body.len());
    framed.push(CONFLUENT_MAGIC);
    framed.extend_from_slice(&schema_id.to_be_bytes());
    match message_index {
        None => {}
        Some([0]) => framed.push(0),
        Some(path) => {
            write_uvarint(&mut framed, zigzag(path.len() as i64));
            for index in path {
                write_uvarint(&mut framed, zigzag(i64::from(*index)));
            }
        }
    }
    framed.extend_from_slice(body);
    framed
}

/// Frames `body` as the AWS Glue Schema Registry serializer writes it (uncompressed), for a
/// producer: [`GLUE_HEADER_VERSION`], [`GLUE_COMPRESSION_NONE`], the schema version's UUID, for
/// Protobuf the message index (one unsigned varint), then the body.
pub fn frame_glue(schema_version: Uuid, message_index: Option<u32>, body: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(GLUE_HEADER_LEN + 5 + body.len());
    framed.extend_from_slice(&[GLUE_HEADER_VERSION, GLUE_COMPRESSION_NONE]);
    framed.extend_from_slice(schema_version.as_bytes());
    if let Some(index) = message_index {
        write_uvarint(&mut framed, u64::from(index));
    }
    framed.extend_from_slice(body);
    framed
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn write_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// An unsigned LEB128 varint (at most 10 bytes) and the bytes it used.
fn read_uvarint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn what_a_producer_frames_reads_back() {
        let body = b"\x08\x96\x01";
        // Avro (no index), Protobuf's first message (one 0x00), a nested path.
        let framed = frame_confluent(300, None, body);
        assert_eq!(framed[..5], [0, 0, 0, 1, 44]);
        let unframed = unframe(&framed, None, WireFormat::Auto, Payload::Binary).unwrap();
        assert_eq!(unframed.schema_id(), Some(SchemaId::Confluent(300)));
        assert_eq!(&*unframed.body, body);
        for path in [vec![0], vec![1, 0], vec![3, 200, 70_000]] {
            let framed = frame_confluent(7, Some(&path), body);
            if path == [0] {
                assert_eq!(framed[5], 0, "[0] is the single byte 0x00");
            }
            let unframed = unframe(&framed, None, WireFormat::Confluent, Payload::Binary).unwrap();
            let (index, rest) = read_message_index(&unframed.body, unframed.index).unwrap();
            assert_eq!((index, rest), (MessageIndex::Confluent(path), &body[..]));
        }
        let version = Uuid::parse_str("7d55d475-2244-4485-8341-f74468c1e058").unwrap();
        for index in [None, Some(0), Some(300)] {
            let framed = frame_glue(version, index, body);
            let unframed = unframe(&framed, None, WireFormat::Glue, Payload::Binary).unwrap();
            assert_eq!(unframed.schema_id(), Some(SchemaId::Glue(version)));
            match index {
                None => assert_eq!(&*unframed.body, body),
                Some(i) => {
                    let (read, rest) = read_message_index(&unframed.body, unframed.index).unwrap();
                    assert_eq!((read, rest), (MessageIndex::Glue(i), &body[..]));
                }
            }
        }
    }

    fn metadata(data_format: &str, schema_id: Option<&str>) -> SchemaMetadata {
        SchemaMetadata {
            data_format: Some(data_format.into()),
            schema_id: schema_id.map(Into::into),
        }
    }

    fn zlib(bytes: &[u8]) -> Vec<u8> {
        // Built here with flate2: no captured zlib-compressed Glue record was found to copy.
        let mut encoder =
            flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    const UUID: &str = "12345678-1234-1234-1234-123456789012";

    fn glue_framed(compression: u8, body: &[u8]) -> Vec<u8> {
        let mut framed = vec![GLUE_HEADER_VERSION, compression];
        framed.extend_from_slice(Uuid::parse_str(UUID).unwrap().as_bytes());
        framed.extend_from_slice(body);
        framed
    }

    #[test]
    fn wire_formats_read_and_write_their_names() {
        for wire in [
            WireFormat::Auto,
            WireFormat::Confluent,
            WireFormat::Glue,
            WireFormat::None,
        ] {
            assert_eq!(wire.to_string().parse::<WireFormat>(), Ok(wire));
        }
        assert_eq!("GLUE".parse::<WireFormat>(), Ok(WireFormat::Glue));
        assert_eq!(WireFormat::default(), WireFormat::Auto);
        let err = "avro".parse::<WireFormat>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#""avro" is not a wire format: say auto, confluent, glue or none"#
        );
    }

    #[test]
    fn a_confluent_header_is_read_and_removed() {
        let framed = [0, 0, 0, 1, 44, 9, 9];
        let u = unframe(&framed, None, WireFormat::Auto, Payload::Binary).unwrap();
        assert_eq!(u.shape, Shape::Confluent { schema_id: 300 });
        assert_eq!(u.schema_id(), Some(SchemaId::Confluent(300)));
        assert_eq!(&*u.body, &[9, 9]);
        assert_eq!(u.index, IndexKind::Confluent);
        assert!(matches!(u.body, Cow::Borrowed(_)));
    }

    #[test]
    fn a_glue_header_is_read_and_removed_and_zlib_inflated() {
        let framed = glue_framed(0, b"body");
        let plain = unframe(&framed, None, WireFormat::Auto, Payload::Binary).unwrap();
        let id = Uuid::parse_str(UUID).unwrap();
        assert_eq!(
            plain.shape,
            Shape::Glue {
                schema_version: id,
                compressed: false
            }
        );
        assert_eq!(&*plain.body, b"body");
        assert_eq!(plain.index, IndexKind::Glue);
        let body =
            b"a body long enough to be worth compressing, compressing, compressing".repeat(4);
        let framed = glue_framed(5, &zlib(&body));
        assert!(framed.len() < body.len());
        let inflated = unframe(&framed, None, WireFormat::Glue, Payload::Binary).unwrap();
        assert_eq!(
            inflated.shape,
            Shape::Glue {
                schema_version: id,
                compressed: true
            }
        );
        assert_eq!(&*inflated.body, &body[..]);
        assert_eq!(inflated.schema_id(), Some(SchemaId::Glue(id)));
    }

    #[test]
    fn a_bad_zlib_body_or_compression_byte_is_poison() {
        let err = unframe(
            &glue_framed(5, b"not zlib"),
            None,
            WireFormat::Auto,
            Payload::Binary,
        )
        .unwrap_err();
        assert!(err.message.contains("does not inflate"), "{err}");
        assert!(!err.is_transient());
        let err = unframe(
            &glue_framed(7, b"x"),
            None,
            WireFormat::Glue,
            Payload::Binary,
        )
        .unwrap_err();
        assert!(err.message.contains("compression byte 0x07"), "{err}");
        // Auto does not take an unknown compression byte for a header: the bytes are plain.
        let unknown = glue_framed(7, b"x");
        let u = unframe(&unknown, None, WireFormat::Auto, Payload::Binary).unwrap();
        assert_eq!(u.shape, Shape::Plain);
    }

    #[test]
    fn a_zlib_bomb_is_poison() {
        let framed = glue_framed(5, &zlib(&vec![0; MAX_INFLATED_BYTES + 1]));
        let err = unframe(&framed, None, WireFormat::Glue, Payload::Binary).unwrap_err();
        assert!(err.message.contains("inflates past"), "{err}");
    }

    #[test]
    fn a_wrong_magic_byte_is_plain_for_auto_and_none_and_an_error_when_framing_is_required() {
        let bytes = [0x7b, 1, 2, 3, 4, 5];
        for wire in [WireFormat::Auto, WireFormat::None] {
            let u = unframe(&bytes, None, wire, Payload::Binary).unwrap();
            assert_eq!(u.shape, Shape::Plain, "{wire}");
            assert_eq!(&*u.body, &bytes);
        }
        let err = unframe(&bytes, None, WireFormat::Confluent, Payload::Binary).unwrap_err();
        assert_eq!(
            err.message,
            "expected the Confluent wire format (magic byte 0x00 and a 4-byte schema id), found 6 bytes starting with 0x7b"
        );
        let err = unframe(&bytes, None, WireFormat::Glue, Payload::Binary).unwrap_err();
        assert!(
            err.message.starts_with("expected the Glue wire format"),
            "{err}"
        );
        // Confluent's magic byte under Glue is not a Glue header.
        let err =
            unframe(&[0, 0, 0, 0, 1, 2], None, WireFormat::Glue, Payload::Binary).unwrap_err();
        assert!(err.message.contains("starting with 0x00"), "{err}");
    }

    #[test]
    fn none_takes_bytes_that_look_framed_whole() {
        // An Avro record whose first field is 0 starts with 0x00, like a Confluent header.
        let bytes = [0, 0, 0, 0, 1, 2];
        let u = unframe(&bytes, None, WireFormat::None, Payload::Binary).unwrap();
        assert_eq!(u.shape, Shape::Plain);
        assert_eq!(&*u.body, &bytes);
        assert_eq!(u.index, IndexKind::None);
        // Too short to be a header: plain under Auto.
        let u = unframe(&[0, 1, 2], None, WireFormat::Auto, Payload::Binary).unwrap();
        assert_eq!(u.shape, Shape::Plain);
    }

    #[test]
    fn the_esm_shape_is_recognised_from_the_metadata() {
        let avro_42 = metadata("AVRO", Some("42"));
        let protobuf_glue = metadata("PROTOBUF", Some(UUID));
        let protobuf_no_id = metadata("PROTOBUF", None);
        let json_named = metadata("JSON", Some("value-schema-002"));
        // SOURCE: the header is gone; a binary body is taken whole, whatever its first byte.
        let body = [0, 5, 6, 7, 8, 9];
        let u = unframe(&body, Some(&avro_42), WireFormat::Auto, Payload::Binary).unwrap();
        assert_eq!(&*u.body, &body);
        assert_eq!(u.schema_id(), Some(SchemaId::Confluent(42)));
        assert!(u.from_esm());
        assert!(!u.looks_like_esm_json());
        assert_eq!(u.index, IndexKind::ConfluentEsm);
        let u = unframe(
            &body,
            Some(&protobuf_glue),
            WireFormat::Auto,
            Payload::Binary,
        )
        .unwrap();
        assert_eq!(u.index, IndexKind::Glue);
        assert_eq!(
            u.schema_id(),
            Some(SchemaId::Glue(Uuid::parse_str(UUID).unwrap()))
        );
        let u = unframe(
            &body,
            Some(&protobuf_no_id),
            WireFormat::Auto,
            Payload::Binary,
        )
        .unwrap();
        assert_eq!(u.index, IndexKind::None);
        assert_eq!(u.schema_id(), None);
        // JSON: the value is JSON text.
        let u = unframe(
            br#"{"a":1}"#,
            Some(&avro_42),
            WireFormat::Auto,
            Payload::Binary,
        )
        .unwrap();
        assert!(u.looks_like_esm_json());
        // A schema id that is neither a number nor a UUID is kept verbatim.
        let u = unframe(b"x", Some(&json_named), WireFormat::Auto, Payload::Text).unwrap();
        assert_eq!(u.schema_id(), None);
        assert!(matches!(
            u.shape,
            Shape::Esm {
                raw_schema_id: Some("value-schema-002"),
                ..
            }
        ));
    }

    #[test]
    fn a_text_format_strips_a_header_even_when_the_esm_sent_metadata() {
        let json_300 = metadata("JSON", Some("300"));
        let mut framed = vec![0, 0, 0, 1, 44];
        framed.extend_from_slice(br#"{"n":7}"#);
        let u = unframe(&framed, Some(&json_300), WireFormat::Auto, Payload::Text).unwrap();
        assert_eq!(&*u.body, br#"{"n":7}"#);
        assert_eq!(u.schema_id(), Some(SchemaId::Confluent(300)));
    }

    #[test]
    fn framed_schema_ids_are_read_for_dead_letters() {
        assert_eq!(
            framed_schema_id(&[0, 0, 0, 0, 7, 1]),
            Some(SchemaId::Confluent(7))
        );
        assert_eq!(
            framed_schema_id(&glue_framed(5, b"")),
            Some(SchemaId::Glue(Uuid::parse_str(UUID).unwrap()))
        );
        assert_eq!(framed_schema_id(b"{}"), None);
        assert_eq!(framed_schema_id(&[0, 1]), None);
        assert_eq!(framed_schema_id(&glue_framed(9, b"")), None);
    }

    #[test]
    fn confluent_message_indexes_are_zigzag_lists() {
        fn read(bytes: &[u8]) -> (MessageIndex, &[u8]) {
            read_message_index(bytes, IndexKind::ConfluentEsm).unwrap()
        }
        // A single 0x00 is [0].
        assert_eq!(
            read(&[0, 8, 1]),
            (MessageIndex::Confluent(vec![0]), &[8, 1][..])
        );
        // Length 1 (zigzag 2), index 1 (zigzag 2): Powertools' captured Confluent record.
        assert_eq!(
            read(&[2, 2, 10]),
            (MessageIndex::Confluent(vec![1]), &[10][..])
        );
        // Length 2, [1, 0]: a message nested in the second top-level message.
        assert_eq!(
            read(&[4, 2, 0, 10]),
            (MessageIndex::Confluent(vec![1, 0]), &[10][..])
        );
        // Impossible as zigzag (index -1), read as plain varints in a record the ESM delivered:
        // length 2, [1, 0]; refused after a Confluent serializer's header.
        assert_eq!(
            read(&[2, 1, 0, 8]),
            (MessageIndex::Confluent(vec![1, 0]), &[8][..])
        );
        assert!(read_message_index(&[2, 1, 0, 8], IndexKind::Confluent).is_err());
        assert_eq!(
            read_message_index(&[4, 2, 0, 10], IndexKind::Confluent).unwrap(),
            (MessageIndex::Confluent(vec![1, 0]), &[10][..])
        );
        // A large index takes a multi-byte varint: [150] = zigzag 300 = 0xac 0x02.
        assert_eq!(
            read(&[2, 0xac, 0x02, 10]),
            (MessageIndex::Confluent(vec![150]), &[10][..])
        );
        for bad in [&[][..], &[0x80][..], &[2][..], &[0x7f, 0x01][..]] {
            assert!(
                read_message_index(bad, IndexKind::ConfluentEsm).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn glue_message_indexes_are_one_unsigned_varint() {
        assert_eq!(
            read_message_index(&[1, 10, 3], IndexKind::Glue).unwrap(),
            (MessageIndex::Glue(1), &[10, 3][..])
        );
        assert_eq!(
            read_message_index(&[0x96, 0x01, 10], IndexKind::Glue).unwrap(),
            (MessageIndex::Glue(150), &[10][..])
        );
        assert!(read_message_index(&[0x80], IndexKind::Glue).is_err());
        assert_eq!(
            read_message_index(&[8, 1], IndexKind::None).unwrap(),
            (MessageIndex::None, &[8, 1][..])
        );
    }
}
