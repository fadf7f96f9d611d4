//! Dead-letter messages: a poison record, as it was, plus headers saying where it came from and why.
//!
//! The original key, value and headers are kept byte for byte; provenance headers follow them, named
//! `esm.dlq.*` in the spirit of Spring Kafka's `kafka_dlt-*` and Kafka Connect's `__connect.errors.*`.
//! A record the ESM sent that could not even be decoded is dead-lettered as its raw ESM JSON, with
//! `esm.dlq.payload.format = esm-record-json`.

use crate::format::wire::framed_schema_id;
use crate::handler::InvocationInfo;
use crate::record::{DecodedRecord, Header, SchemaMetadata};
use crate::sink::OutboundMessage;

/// Names of the provenance headers.
pub mod headers {
    /// Topic the record was read from.
    pub const ORIGINAL_TOPIC: &str = "esm.dlq.original.topic";
    /// Its partition (decimal text).
    pub const ORIGINAL_PARTITION: &str = "esm.dlq.original.partition";
    /// Its offset (decimal text; absent when the ESM record had none).
    pub const ORIGINAL_OFFSET: &str = "esm.dlq.original.offset";
    /// Its timestamp, epoch milliseconds (decimal text).
    pub const ORIGINAL_TIMESTAMP: &str = "esm.dlq.original.timestamp";
    /// `CREATE_TIME` or `LOG_APPEND_TIME`.
    pub const ORIGINAL_TIMESTAMP_TYPE: &str = "esm.dlq.original.timestamp.type";
    /// Why it is poison: see [`super::PoisonKind`].
    pub const ERROR_KIND: &str = "esm.dlq.error.kind";
    /// The error's message (at most [`super::MAX_MESSAGE_BYTES`] bytes).
    pub const ERROR_MESSAGE: &str = "esm.dlq.error.message";
    /// How many times the handler was tried in the invocation that gave up.
    pub const ATTEMPTS: &str = "esm.dlq.attempts";
    /// The Lambda function that dead-lettered it.
    pub const FUNCTION_NAME: &str = "esm.dlq.function.name";
    /// The request id of that invocation.
    pub const REQUEST_ID: &str = "esm.dlq.request.id";
    /// When it was dead-lettered, epoch milliseconds.
    pub const DEAD_LETTERED_AT: &str = "esm.dlq.timestamp";
    /// `esm-record-json` when the value is the undecodable ESM record itself.
    pub const PAYLOAD_FORMAT: &str = "esm.dlq.payload.format";
    /// The key's `keySchemaMetadata.dataFormat` (`AVRO`, `JSON`, `PROTOBUF`), when the ESM sent it.
    pub const ORIGINAL_KEY_SCHEMA_FORMAT: &str = "esm.dlq.original.key.schema.format";
    /// The key's `keySchemaMetadata.schemaId`, when the ESM sent it.
    pub const ORIGINAL_KEY_SCHEMA_ID: &str = "esm.dlq.original.key.schema.id";
    /// The value's `valueSchemaMetadata.dataFormat`, when the ESM sent it.
    pub const ORIGINAL_VALUE_SCHEMA_FORMAT: &str = "esm.dlq.original.value.schema.format";
    /// The value's `valueSchemaMetadata.schemaId`, when the ESM sent it.
    pub const ORIGINAL_VALUE_SCHEMA_ID: &str = "esm.dlq.original.value.schema.id";
    /// The schema id in the key's own Confluent (a number) or Glue (a UUID) header, when the key
    /// could not be deserialized, the ESM sent no `keySchemaMetadata` and the key begins like a
    /// header ([`crate::format::wire::framed_schema_id`]).
    pub const ORIGINAL_KEY_FRAMED_SCHEMA_ID: &str = "esm.dlq.original.key.framed.schema.id";
    /// The schema id in the value's own Confluent or Glue header, likewise.
    pub const ORIGINAL_VALUE_FRAMED_SCHEMA_ID: &str = "esm.dlq.original.value.framed.schema.id";
    /// `true` when the value was cut to fit the broker's maximum message size (the original stays
    /// findable by its topic, partition and offset).
    pub const VALUE_TRUNCATED: &str = "esm.dlq.value.truncated";
    /// The value's size in bytes before it was cut.
    pub const VALUE_ORIGINAL_SIZE: &str = "esm.dlq.value.original.size";
}

/// Error messages longer than this are cut (on a character boundary) in the header.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// Why a record is poison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PoisonKind {
    /// The ESM record itself could not be decoded (bad base64, a header byte out of range...).
    Undecodable,
    /// The value is not the handler's event (not JSON, a missing field, a wrong type...).
    Deserialization,
    /// The handler said it can never succeed.
    Rejected,
}

impl PoisonKind {
    /// The value of the [`headers::ERROR_KIND`] header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Undecodable => "undecodable",
            Self::Deserialization => "deserialization",
            Self::Rejected => "rejected",
        }
    }
}

/// Why and how a record failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The kind of poison.
    pub kind: PoisonKind,
    /// What is wrong.
    pub message: String,
    /// Handler attempts made.
    pub attempts: u32,
}

/// The dead-letter message for a poison record.
pub fn dead_letter_message(
    slot: &DecodedRecord,
    failure: &Failure,
    invocation: &InvocationInfo,
    topic: String,
    now_ms: u64,
) -> OutboundMessage {
    let (key, value, mut out_headers, offset, timestamp, timestamp_type, schemas) = match slot {
        DecodedRecord::Record(r) => (
            r.key.clone(),
            r.value.clone(),
            r.headers.clone(),
            Some(r.offset),
            r.timestamp,
            r.timestamp_type.as_ref(),
            (r.key_schema.as_ref(), r.value_schema.as_ref()),
        ),
        DecodedRecord::Undecodable(u) => (
            None,
            Some(u.raw_json.clone().into_bytes()),
            vec![Header::new(headers::PAYLOAD_FORMAT, "esm-record-json")],
            u.offset,
            u.timestamp,
            u.timestamp_type.as_ref(),
            (u.key_schema.as_ref(), u.value_schema.as_ref()),
        ),
    };
    out_headers.reserve(17);
    out_headers.push(Header::new(headers::ORIGINAL_TOPIC, slot.topic()));
    out_headers.push(Header::new(
        headers::ORIGINAL_PARTITION,
        slot.partition().to_string(),
    ));
    if let Some(offset) = offset {
        out_headers.push(Header::new(headers::ORIGINAL_OFFSET, offset.to_string()));
    }
    if let Some(timestamp) = timestamp {
        out_headers.push(Header::new(
            headers::ORIGINAL_TIMESTAMP,
            timestamp.to_string(),
        ));
    }
    if let Some(timestamp_type) = timestamp_type {
        out_headers.push(Header::new(
            headers::ORIGINAL_TIMESTAMP_TYPE,
            timestamp_type.as_str(),
        ));
    }
    let (key_schema, value_schema) = schemas;
    push_schema(
        &mut out_headers,
        key_schema,
        headers::ORIGINAL_KEY_SCHEMA_FORMAT,
        headers::ORIGINAL_KEY_SCHEMA_ID,
    );
    push_schema(
        &mut out_headers,
        value_schema,
        headers::ORIGINAL_VALUE_SCHEMA_FORMAT,
        headers::ORIGINAL_VALUE_SCHEMA_ID,
    );
    if failure.kind == PoisonKind::Deserialization
        && let DecodedRecord::Record(r) = slot
    {
        for (bytes, metadata, name) in [
            (
                &r.key,
                &r.key_schema,
                headers::ORIGINAL_KEY_FRAMED_SCHEMA_ID,
            ),
            (
                &r.value,
                &r.value_schema,
                headers::ORIGINAL_VALUE_FRAMED_SCHEMA_ID,
            ),
        ] {
            if metadata.is_none()
                && let Some(id) = bytes.as_deref().and_then(framed_schema_id)
            {
                out_headers.push(Header::new(name, id.to_string()));
            }
        }
    }
    out_headers.push(Header::new(headers::ERROR_KIND, failure.kind.as_str()));
    out_headers.push(Header::new(
        headers::ERROR_MESSAGE,
        truncate(&failure.message, MAX_MESSAGE_BYTES),
    ));
    out_headers.push(Header::new(headers::ATTEMPTS, failure.attempts.to_string()));
    out_headers.push(Header::new(
        headers::FUNCTION_NAME,
        invocation.function_name.as_str(),
    ));
    out_headers.push(Header::new(
        headers::REQUEST_ID,
        invocation.request_id.as_str(),
    ));
    out_headers.push(Header::new(headers::DEAD_LETTERED_AT, now_ms.to_string()));
    OutboundMessage {
        topic,
        key,
        value,
        headers: out_headers,
    }
}

/// Cuts a dead letter's value in half because the broker refused it as too large, and marks it so
/// ([`headers::VALUE_TRUNCATED`], [`headers::VALUE_ORIGINAL_SIZE`]). False when there is no value
/// left to cut.
pub fn halve_value(message: &mut OutboundMessage) -> bool {
    let Some(value) = message.value.as_mut().filter(|v| !v.is_empty()) else {
        return false;
    };
    let original = match message
        .headers
        .iter()
        .find(|h| h.name == headers::VALUE_ORIGINAL_SIZE)
    {
        Some(header) => None.or_else(|| {
            std::str::from_utf8(header.value.as_deref()?)
                .ok()?
                .parse::<usize>()
                .ok()
        }),
        None => Some(value.len()),
    };
    value.truncate(value.len() / 2);
    if !message
        .headers
        .iter()
        .any(|h| h.name == headers::VALUE_TRUNCATED)
    {
        message
            .headers
            .push(Header::new(headers::VALUE_TRUNCATED, "true"));
        if let Some(original) = original {
            message.headers.push(Header::new(
                headers::VALUE_ORIGINAL_SIZE,
                original.to_string(),
            ));
        }
    }
    true
}

fn push_schema(out: &mut Vec<Header>, schema: Option<&SchemaMetadata>, format: &str, id: &str) {
    let Some(schema) = schema else { return };
    if let Some(data_format) = &schema.data_format {
        out.push(Header::new(format, data_format.as_str()));
    }
    if let Some(schema_id) = &schema.schema_id {
        out.push(Header::new(id, schema_id.as_str()));
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{KafkaRecord, TimestampType};

    fn header<'a>(m: &'a OutboundMessage, name: &str) -> Option<&'a str> {
        m.headers
            .iter()
            .find(|h| h.name == name)
            .and_then(|h| std::str::from_utf8(h.value.as_deref()?).ok())
    }

    #[test]
    fn keeps_the_record_and_adds_provenance() {
        let mut record = KafkaRecord::new("orders.v1-eu", 3, 42);
        record.key = Some(vec![1, 2]);
        record.value = Some(vec![0xff]);
        record.timestamp = Some(1_545_084_650_987);
        record.timestamp_type = Some(TimestampType::CreateTime);
        record.headers = vec![Header::new("h", "1"), Header::new("h", "2")];
        record.value_schema = Some(SchemaMetadata {
            data_format: Some("AVRO".into()),
            schema_id: Some("1234".into()),
        });
        let failure = Failure {
            kind: PoisonKind::Rejected,
            message: "é".repeat(600),
            attempts: 2,
        };
        let deadline = crate::retry::Deadline::after(
            std::time::Duration::from_secs(1),
            std::time::Duration::ZERO,
        );
        let invocation = InvocationInfo::new("req-1", "consumer", deadline);
        let m = dead_letter_message(
            &DecodedRecord::Record(record),
            &failure,
            &invocation,
            "orders.v1-eu.dlq".into(),
            7,
        );
        assert_eq!(m.topic, "orders.v1-eu.dlq");
        assert_eq!(m.key, Some(vec![1, 2]));
        assert_eq!(m.value, Some(vec![0xff]));
        assert_eq!(
            &m.headers[..2],
            &[Header::new("h", "1"), Header::new("h", "2")]
        );
        assert_eq!(header(&m, headers::ORIGINAL_TOPIC), Some("orders.v1-eu"));
        assert_eq!(header(&m, headers::ORIGINAL_PARTITION), Some("3"));
        assert_eq!(header(&m, headers::ORIGINAL_OFFSET), Some("42"));
        assert_eq!(
            header(&m, headers::ORIGINAL_TIMESTAMP),
            Some("1545084650987")
        );
        assert_eq!(
            header(&m, headers::ORIGINAL_TIMESTAMP_TYPE),
            Some("CREATE_TIME")
        );
        assert_eq!(
            header(&m, headers::ORIGINAL_VALUE_SCHEMA_FORMAT),
            Some("AVRO")
        );
        assert_eq!(header(&m, headers::ORIGINAL_VALUE_SCHEMA_ID), Some("1234"));
        assert_eq!(header(&m, headers::ORIGINAL_KEY_SCHEMA_FORMAT), None);
        assert_eq!(header(&m, headers::ORIGINAL_KEY_SCHEMA_ID), None);
        assert_eq!(header(&m, headers::ERROR_KIND), Some("rejected"));
        assert_eq!(header(&m, headers::ATTEMPTS), Some("2"));
        assert_eq!(header(&m, headers::FUNCTION_NAME), Some("consumer"));
        assert_eq!(header(&m, headers::REQUEST_ID), Some("req-1"));
        let message = header(&m, headers::ERROR_MESSAGE).unwrap();
        assert!(message.len() <= MAX_MESSAGE_BYTES && message.len() > 1000);
    }

    #[test]
    fn an_undecodable_record_travels_as_its_raw_json() {
        let raw = r#"{"topic":"t","partition":0,"timestamp":5,"timestampType":"LOG_APPEND_TIME","value":"!!","keySchemaMetadata":{"dataFormat":"JSON","schemaId":"k-1"}}"#;
        let batch = crate::event::decode_event(&format!(
            r#"{{"eventSource":"SelfManagedKafka","records":{{"t-0":[{raw}]}}}}"#
        ))
        .unwrap();
        let slot = batch.partitions[0].records[0].clone();
        assert!(matches!(slot, DecodedRecord::Undecodable(_)));
        let failure = Failure {
            kind: PoisonKind::Undecodable,
            message: "bad base64".into(),
            attempts: 0,
        };
        let deadline = crate::retry::Deadline::after(
            std::time::Duration::from_secs(1),
            std::time::Duration::ZERO,
        );
        let invocation = InvocationInfo::new("r", "f", deadline);
        let m = dead_letter_message(&slot, &failure, &invocation, "t.dlq".into(), 1);
        assert_eq!(m.value.as_deref(), Some(raw.as_bytes()));
        assert_eq!(header(&m, headers::PAYLOAD_FORMAT), Some("esm-record-json"));
        assert_eq!(header(&m, headers::ORIGINAL_OFFSET), None);
        assert_eq!(header(&m, headers::ORIGINAL_TIMESTAMP), Some("5"));
        assert_eq!(
            header(&m, headers::ORIGINAL_TIMESTAMP_TYPE),
            Some("LOG_APPEND_TIME")
        );
        assert_eq!(
            header(&m, headers::ORIGINAL_KEY_SCHEMA_FORMAT),
            Some("JSON")
        );
        assert_eq!(header(&m, headers::ORIGINAL_KEY_SCHEMA_ID), Some("k-1"));
        assert_eq!(header(&m, headers::ERROR_KIND), Some("undecodable"));
    }

    #[test]
    fn a_framed_value_that_did_not_deserialize_names_its_schema_id() {
        let deadline = crate::retry::Deadline::after(
            std::time::Duration::from_secs(1),
            std::time::Duration::ZERO,
        );
        let invocation = InvocationInfo::new("r", "f", deadline);
        let mut record = KafkaRecord::new("t", 0, 1);
        record.key = Some(vec![0, 0, 0, 0, 7, 1]);
        let mut glue = vec![3, 5];
        glue.extend_from_slice(&[0xab; 16]);
        record.value = Some(glue);
        let failure = |kind| Failure {
            kind,
            message: "not Avro".into(),
            attempts: 0,
        };
        let slot = DecodedRecord::Record(record.clone());
        let m = dead_letter_message(
            &slot,
            &failure(PoisonKind::Deserialization),
            &invocation,
            "t.dlq".into(),
            1,
        );
        assert_eq!(
            header(&m, headers::ORIGINAL_KEY_FRAMED_SCHEMA_ID),
            Some("7")
        );
        assert_eq!(
            header(&m, headers::ORIGINAL_VALUE_FRAMED_SCHEMA_ID),
            Some("abababab-abab-abab-abab-abababababab")
        );
        // A handler's rejection says nothing about the bytes' framing.
        let m = dead_letter_message(
            &slot,
            &failure(PoisonKind::Rejected),
            &invocation,
            "t.dlq".into(),
            1,
        );
        assert_eq!(header(&m, headers::ORIGINAL_KEY_FRAMED_SCHEMA_ID), None);
        // With the ESM's metadata, its schemaId is the one named (the bytes have no header).
        record.value_schema = Some(SchemaMetadata {
            data_format: Some("AVRO".into()),
            schema_id: Some("12".into()),
        });
        record.value = Some(b"{}".to_vec());
        let m = dead_letter_message(
            &DecodedRecord::Record(record),
            &failure(PoisonKind::Deserialization),
            &invocation,
            "t.dlq".into(),
            1,
        );
        assert_eq!(header(&m, headers::ORIGINAL_VALUE_SCHEMA_ID), Some("12"));
        assert_eq!(header(&m, headers::ORIGINAL_VALUE_FRAMED_SCHEMA_ID), None);
        assert_eq!(
            header(&m, headers::ORIGINAL_KEY_FRAMED_SCHEMA_ID),
            Some("7")
        );
    }

    #[test]
    fn a_value_too_large_is_halved_and_marked_once() {
        let mut message = OutboundMessage {
            topic: "t.dlq".into(),
            key: None,
            value: Some(vec![7; 1000]),
            headers: vec![Header::new("h", "1")],
        };
        assert!(halve_value(&mut message));
        assert!(halve_value(&mut message));
        assert_eq!(message.value.as_ref().map(Vec::len), Some(250));
        assert_eq!(header(&message, headers::VALUE_TRUNCATED), Some("true"));
        assert_eq!(header(&message, headers::VALUE_ORIGINAL_SIZE), Some("1000"));
        assert_eq!(
            message
                .headers
                .iter()
                .filter(|h| h.name == headers::VALUE_TRUNCATED)
                .count(),
            1
        );
        message.value = Some(Vec::new());
        assert!(!halve_value(&mut message));
    }
}
