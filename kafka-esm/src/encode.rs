//! Writes ESM events: the inverse of [`crate::event::decode_event`], for tools and tests.
//!
//! The output is what the event source mapping sends: records grouped under `"<topic>-<partition>"`,
//! key and value in base64 (absent when `None`), headers as one-entry objects of **signed** bytes.

use std::collections::BTreeMap;

use serde::Serialize;

use serde_json::value::RawValue;

use crate::event::{MSK_EVENT_SOURCE, SELF_MANAGED_EVENT_SOURCE, encode_base64};
use crate::record::{DecodedRecord, KafkaRecord, SchemaMetadata, TopicPartition};

/// Which kind of ESM the event imitates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Amazon MSK, with the cluster ARN.
    Msk {
        /// The cluster ARN.
        cluster_arn: String,
    },
    /// A self-managed cluster.
    SelfManaged,
}

#[derive(Serialize)]
struct EventOut<'a> {
    #[serde(rename = "eventSource")]
    event_source: &'static str,
    #[serde(rename = "eventSourceArn", skip_serializing_if = "Option::is_none")]
    event_source_arn: Option<&'a str>,
    #[serde(rename = "bootstrapServers")]
    bootstrap_servers: &'a str,
    records: BTreeMap<String, Vec<SlotOut<'a>>>,
}

/// A record, or an undecodable one as the ESM sent it.
#[derive(Serialize)]
#[serde(untagged)]
enum SlotOut<'a> {
    Record(RecordOut<'a>),
    Raw(Box<RawValue>),
}

#[derive(Serialize)]
struct RecordOut<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: i64,
    #[serde(rename = "timestampType")]
    timestamp_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    headers: Vec<BTreeMap<&'a str, Option<Vec<i8>>>>,
    #[serde(rename = "keySchemaMetadata", skip_serializing_if = "Option::is_none")]
    key_schema: Option<&'a SchemaMetadata>,
    #[serde(
        rename = "valueSchemaMetadata",
        skip_serializing_if = "Option::is_none"
    )]
    value_schema: Option<&'a SchemaMetadata>,
}

/// The ESM event JSON for `records` (kept in their order within each partition).
pub fn encode_event(source: &Source, bootstrap_servers: &str, records: &[KafkaRecord]) -> String {
    let mut grouped: BTreeMap<String, Vec<SlotOut<'_>>> = BTreeMap::new();
    for r in records {
        grouped
            .entry(TopicPartition::key(&r.topic, r.partition).to_string())
            .or_default()
            .push(SlotOut::Record(record_out(r)));
    }
    finish(source, bootstrap_servers, grouped)
}

/// As [`encode_event`], for decoded slots: an undecodable record is written back exactly as the
/// ESM sent it (its raw JSON), so that the consumer sees it, and dead-letters it, as before.
pub fn encode_decoded_event(
    source: &Source,
    bootstrap_servers: &str,
    records: &[DecodedRecord],
) -> String {
    let mut grouped: BTreeMap<String, Vec<SlotOut<'_>>> = BTreeMap::new();
    for slot in records {
        let out = match slot {
            DecodedRecord::Record(r) => SlotOut::Record(record_out(r)),
            // Raw JSON that no longer parses (it always does: it was cut from a parsed event)
            // becomes a JSON string, which the decoder also reads as an undecodable record.
            DecodedRecord::Undecodable(u) => SlotOut::Raw(
                RawValue::from_string(u.raw_json.clone()).unwrap_or_else(|_| {
                    serde_json::value::to_raw_value(&u.raw_json).expect("a string serializes")
                }),
            ),
        };
        grouped
            .entry(TopicPartition::key(slot.topic(), slot.partition()).to_string())
            .or_default()
            .push(out);
    }
    finish(source, bootstrap_servers, grouped)
}

fn record_out(r: &KafkaRecord) -> RecordOut<'_> {
    RecordOut {
        topic: &r.topic,
        partition: r.partition,
        offset: r.offset,
        timestamp: r.timestamp.unwrap_or(0),
        timestamp_type: r
            .timestamp_type
            .as_ref()
            .map_or("CREATE_TIME", |t| t.as_str()),
        key: r.key.as_deref().map(encode_base64),
        value: r.value.as_deref().map(encode_base64),
        headers: r
            .headers
            .iter()
            .map(|h| {
                let bytes = h
                    .value
                    .as_ref()
                    .map(|v| v.iter().map(|b| *b as i8).collect());
                BTreeMap::from([(h.name.as_str(), bytes)])
            })
            .collect(),
        key_schema: r.key_schema.as_ref(),
        value_schema: r.value_schema.as_ref(),
    }
}

fn finish(
    source: &Source,
    bootstrap_servers: &str,
    records: BTreeMap<String, Vec<SlotOut<'_>>>,
) -> String {
    let (event_source, event_source_arn) = match source {
        Source::Msk { cluster_arn } => (MSK_EVENT_SOURCE, Some(cluster_arn.as_str())),
        Source::SelfManaged => (SELF_MANAGED_EVENT_SOURCE, None),
    };
    serde_json::to_string(&EventOut {
        event_source,
        event_source_arn,
        bootstrap_servers,
        records,
    })
    .expect("an event of strings and numbers always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode_event;
    use crate::record::{DecodedRecord, Header, TimestampType};

    #[test]
    fn round_trips_through_the_decoder() {
        let mut a = KafkaRecord::new("orders.v1-eu", 3, 7);
        a.timestamp = Some(1_700_000_000_123);
        a.timestamp_type = Some(TimestampType::LogAppendTime);
        a.key = Some(b"key".to_vec());
        a.value = Some(vec![0, 159, 146, 150]);
        a.headers = vec![
            Header::new("h", vec![0xff, 0x01]),
            Header::new("h", "again"),
            Header {
                name: "n".into(),
                value: None,
            },
        ];
        let mut tombstone = KafkaRecord::new("orders.v1-eu", 3, 8);
        tombstone.timestamp = Some(1);
        tombstone.timestamp_type = Some(TimestampType::CreateTime);
        let json = encode_event(
            &Source::SelfManaged,
            "localhost:9092",
            &[a.clone(), tombstone.clone()],
        );
        assert!(json.contains("[-1,1]"), "header bytes are signed: {json}");
        let batch = decode_event(&json).unwrap();
        assert_eq!(batch.partitions[0].key, "orders.v1-eu-3");
        assert_eq!(
            batch.partitions[0].records,
            vec![DecodedRecord::Record(a), DecodedRecord::Record(tombstone)]
        );
    }

    #[test]
    fn an_undecodable_record_goes_back_as_it_came() {
        let event = r#"{"eventSource":"SelfManagedKafka","bootstrapServers":"b:9092","records":{"t-0":[{"topic":"t","partition":0,"offset":1,"timestamp":1,"timestampType":"CREATE_TIME","value":"!!","headers":[]},{"topic":"t","partition":0,"offset":2,"timestamp":2,"timestampType":"CREATE_TIME","value":"AA==","headers":[]}]}}"#;
        let batch = decode_event(event).unwrap();
        let slots = batch.partitions[0].records.clone();
        assert!(matches!(slots[0], DecodedRecord::Undecodable(_)));
        let again = encode_decoded_event(&Source::SelfManaged, "b:9092", &slots);
        assert_eq!(decode_event(&again).unwrap().partitions[0].records, slots);
    }
}
