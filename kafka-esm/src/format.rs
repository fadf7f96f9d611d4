//! Value formats: how record bytes become typed events.
//!
//! JSON through serde is built in. A schema-registry payload (Confluent wire format: magic byte 0 and a
//! 4-byte schema id before the payload) is unframed by [`unframe_confluent`]; Avro or Protobuf
//! support plugs in as another [`ValueFormat`] without touching the processor.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use crate::handler::DeserializeError;
use crate::record::KafkaRecord;

/// Turns a record's value bytes into `T`.
pub trait ValueFormat<T>: Send + Sync {
    /// Decodes the record's value. Every error is permanent: the same bytes will never decode.
    fn decode(&self, record: &KafkaRecord) -> Result<T, DeserializeError>;
}

/// JSON values through serde. A value framed for a schema registry is unframed first.
#[derive(Debug)]
pub struct Json<T>(PhantomData<fn() -> T>);

impl<T> Json<T> {
    /// The JSON format for `T`.
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Default for Json<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: DeserializeOwned> ValueFormat<T> for Json<T> {
    fn decode(&self, record: &KafkaRecord) -> Result<T, DeserializeError> {
        let value = record
            .value
            .as_deref()
            .ok_or_else(|| DeserializeError::new("the record has no value (a tombstone)"))?;
        let payload = match &record.value_schema {
            Some(_) => unframe_confluent(value).map_or(value, |(_, payload)| payload),
            None => value,
        };
        serde_json::from_slice(payload)
            .map_err(|e| DeserializeError::new(format!("the value is not the expected JSON: {e}")))
    }
}

/// Splits a Confluent-framed payload into its schema id and the payload, when `bytes` is framed
/// (magic byte 0 followed by a 4-byte big-endian schema id).
pub fn unframe_confluent(bytes: &[u8]) -> Option<(u32, &[u8])> {
    match bytes {
        [0, a, b, c, d, payload @ ..] => Some((u32::from_be_bytes([*a, *b, *c, *d]), payload)),
        _ => None,
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
    fn a_tombstone_is_not_json() {
        let err = Json::<Thing>::new().decode(&record(None)).unwrap_err();
        assert!(err.message.contains("tombstone"), "{err}");
    }

    #[test]
    fn bad_json_names_the_problem() {
        let err = Json::<Thing>::new()
            .decode(&record(Some(b"{\"n\":\"x\"}")))
            .unwrap_err();
        assert!(err.message.contains("invalid type"), "{err}");
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
    }
}
