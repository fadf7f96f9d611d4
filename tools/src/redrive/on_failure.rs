//! The on-failure record read for a redrive: which offsets of which partitions the event source
//! mapping gave up on, and the records themselves when the record carries them.
//!
//! The format has one home, [`kafka_esm::on_failure`] (the writer, [`crate::poll::on_failure`],
//! uses the same types): it reads every shape the ESM writes (SQS/SNS metadata, S3 with the event
//! as a string, a Kafka topic's one message per record with the event as an object, an SNS
//! notification around any of them), leniently, and says what is wrong with what it rejects. This
//! module turns what it read into [`OffsetRange`]s and [`CarriedRecords`]: from `recordsInfo` when
//! the record is metadata only (the records must be read back from Kafka), else from the records of
//! its payload, which are the authority on where they came from.

use serde::Serialize;
use serde_json::Value;

use kafka_esm::event::Batch;
use kafka_esm::on_failure::{self as format, Payload};
pub use kafka_esm::on_failure::{FailureCondition, MalformedRecord, PayloadForm, ResponseContext};
use kafka_esm::record::{DecodedRecord, TopicPartition};

/// Offsets `first..=last` of one partition that the ESM could not process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OffsetRange {
    /// Topic (may contain `-` and `.`).
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset of the failed batch in this partition.
    pub first_offset: i64,
    /// Last offset, inclusive.
    pub last_offset: i64,
    /// `firstRecordTimestamp`, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_timestamp: Option<String>,
    /// `lastRecordTimestamp`, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_timestamp: Option<String>,
}

impl OffsetRange {
    /// How many offsets the range covers (0 only for the records of a payload that have none).
    pub fn offset_count(&self) -> u64 {
        let count = i128::from(self.last_offset) - i128::from(self.first_offset) + 1;
        u64::try_from(count.max(0)).unwrap_or(u64::MAX)
    }

    /// `"<topic>-<partition>"`.
    pub fn key(&self) -> String {
        TopicPartition::key(&self.topic, self.partition).to_string()
    }
}

/// The records an S3 or Kafka-topic on-failure record carries in its `payload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedRecords {
    /// How they were carried.
    pub form: PayloadForm,
    /// The payload event's `eventSourceArn` (MSK).
    pub event_source_arn: Option<String>,
    /// The payload event's `bootstrapServers`.
    pub bootstrap_servers: Option<String>,
    /// The records, in the payload's order; a record that cannot be decoded is kept as such.
    pub records: Vec<DecodedRecord>,
}

impl CarriedRecords {
    /// The records of `payload`, decoded.
    fn decode(payload: &Payload) -> Result<Self, MalformedRecord> {
        let batch: Batch = payload
            .decode()
            .map_err(|e| MalformedRecord::BadPayload(e.to_string()))?;
        Ok(Self {
            form: payload.form(),
            event_source_arn: batch.event_source_arn,
            bootstrap_servers: batch.bootstrap_servers,
            records: batch
                .partitions
                .into_iter()
                .flat_map(|p| p.records)
                .collect(),
        })
    }

    /// One range per partition of the carried records, from their lowest to their highest offset.
    fn ranges(&self) -> Vec<OffsetRange> {
        let mut ranges: Vec<OffsetRange> = Vec::new();
        for record in &self.records {
            let position = ranges
                .iter()
                .position(|r| r.partition == record.partition() && r.topic == record.topic());
            let range = match position {
                Some(n) => &mut ranges[n],
                None => {
                    ranges.push(OffsetRange {
                        topic: record.topic().to_owned(),
                        partition: record.partition(),
                        first_offset: i64::MAX,
                        last_offset: i64::MIN,
                        first_timestamp: None,
                        last_timestamp: None,
                    });
                    ranges.last_mut().expect("just pushed")
                }
            };
            if let Some(offset) = record.offset() {
                range.first_offset = range.first_offset.min(offset);
                range.last_offset = range.last_offset.max(offset);
            }
        }
        // A partition whose records all lack an offset: an empty range that still carries them.
        for range in &mut ranges {
            if range.first_offset > range.last_offset {
                (range.first_offset, range.last_offset) = (0, -1);
            }
        }
        ranges
    }

    /// The carried records of `range`'s partition within its offsets (an undecodable record without
    /// an offset is included: it can only be identified by its partition).
    pub fn in_range<'a>(
        &'a self,
        range: &'a OffsetRange,
    ) -> impl Iterator<Item = &'a DecodedRecord> + 'a {
        self.records.iter().filter(move |r| {
            r.partition() == range.partition
                && r.topic() == range.topic
                && r.offset()
                    .is_none_or(|o| (range.first_offset..=range.last_offset).contains(&o))
        })
    }
}

/// One on-failure record, read for a redrive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OnFailureRecord {
    /// `requestContext.requestId`: the invocation that failed last.
    pub request_id: String,
    /// `requestContext.functionArn`.
    pub function_arn: String,
    /// `requestContext.condition`.
    pub condition: FailureCondition,
    /// `requestContext.approximateInvokeCount`.
    pub approximate_invoke_count: Option<u64>,
    /// `responseContext`, when not null.
    pub response: Option<ResponseContext>,
    /// `timestamp`: when the ESM gave up.
    pub timestamp: Option<String>,
    /// `KafkaBatchInfo.bootstrapServers` (absent when blank).
    pub bootstrap_servers: Option<String>,
    /// `KafkaBatchInfo.eventSourceArn` (MSK; absent for self-managed clusters).
    pub event_source_arn: Option<String>,
    /// `KafkaBatchInfo.batchSize`.
    pub batch_size: Option<u64>,
    /// `KafkaBatchInfo.payloadSize`, bytes.
    pub payload_size: Option<u64>,
    /// The failed offsets, one range per partition, sorted by topic and partition.
    pub ranges: Vec<OffsetRange>,
    /// `payload` (S3 and Kafka-topic destinations): the records themselves.
    #[serde(skip)]
    pub carried: Option<CarriedRecords>,
}

impl OnFailureRecord {
    /// Parses an on-failure record (or an SNS notification carrying one).
    pub fn parse(text: &str) -> Result<Self, MalformedRecord> {
        Self::from_record(format::OnFailureRecord::parse(text)?)
    }

    /// As [`Self::parse`], from parsed JSON.
    pub fn from_value(value: &Value) -> Result<Self, MalformedRecord> {
        Self::from_record(format::OnFailureRecord::from_value(value)?)
    }

    /// What a redrive needs of a record read with [`kafka_esm::on_failure`]: its ranges, from the
    /// records of its payload when it carries them, else from `recordsInfo`.
    pub fn from_record(record: format::OnFailureRecord) -> Result<Self, MalformedRecord> {
        let carried = record
            .payload
            .as_ref()
            .map(CarriedRecords::decode)
            .transpose()?;
        let batch = record.batch_info;
        let mut ranges = match (&carried, batch.records_info) {
            // The records travel with the metadata (S3, Kafka topic): they are the authority. The
            // guide's own examples put Kinesis-style sequence numbers in the metadata's offsets
            // (and a Kafka-topic record's `recordInfo` names no topic or partition at all).
            (Some(carried), _) => carried.ranges(),
            (None, Some(info)) => info
                .into_iter()
                .map(|(key, entry)| {
                    let TopicPartition { topic, partition } = key.parse()?;
                    Ok(OffsetRange {
                        topic,
                        partition,
                        first_offset: entry.first_record_offset,
                        last_offset: entry.last_record_offset,
                        first_timestamp: entry.first_record_timestamp,
                        last_timestamp: entry.last_record_timestamp,
                    })
                })
                .collect::<Result<_, MalformedRecord>>()?,
            (None, None) => {
                return Err(MalformedRecord::Missing {
                    field: "KafkaBatchInfo.recordsInfo".into(),
                });
            }
        };
        if ranges.is_empty() {
            return Err(MalformedRecord::NoRanges);
        }
        ranges.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let context = record.request_context;
        Ok(Self {
            request_id: context.request_id,
            function_arn: context.function_arn,
            condition: context.condition,
            approximate_invoke_count: context.approximate_invoke_count,
            response: record.response_context,
            timestamp: record.timestamp,
            bootstrap_servers: batch.bootstrap_servers.filter(|s| !s.trim().is_empty()),
            event_source_arn: batch.event_source_arn,
            batch_size: batch.batch_size,
            payload_size: batch.payload_size,
            ranges,
            carried,
        })
    }

    /// The function's name, from its ARN (`arn:aws:lambda:region:account:function:NAME[:qualifier]`).
    pub fn function_name(&self) -> &str {
        let mut parts = self.function_arn.split(':');
        match (parts.nth(5), parts.next()) {
            (Some("function"), Some(name)) if !name.is_empty() => name,
            _ => &self.function_arn,
        }
    }

    /// Offsets named by every range.
    pub fn record_count(&self) -> u64 {
        self.ranges
            .iter()
            .map(OffsetRange::offset_count)
            .fold(0, u64::saturating_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> String {
        let path = format!("{}/../events/on-failure/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The documented MSK record (`msk-retry-attempts-exhausted.json`) with only its `condition`
    /// changed: no public sample of a schema-validation failure record was found, and the ESM
    /// writes these conditions into the same `requestContext` (kafka-esm `FailureCondition`).
    fn with_condition(condition: &str) -> OnFailureRecord {
        let mut value: Value =
            serde_json::from_str(&sample("msk-retry-attempts-exhausted.json")).unwrap();
        value["requestContext"]["condition"] = Value::from(condition);
        OnFailureRecord::from_value(&value).unwrap()
    }

    #[test]
    fn a_schema_not_found_record_is_accepted() {
        let r = with_condition("SCHEMA_NOT_FOUND");
        assert_eq!(r.condition, FailureCondition::SchemaNotFound);
        assert_eq!(r.condition.to_string(), "SCHEMA_NOT_FOUND");
        assert_eq!(r.request_id, "a3b2c1d0-0f1e-4d3c-8b7a-6f5e4d3c2b1a");
        assert!(r.record_count() > 0);
    }

    #[test]
    fn a_deserialization_error_record_is_accepted() {
        let r = with_condition("DESERIALIZATION_ERROR");
        assert_eq!(r.condition, FailureCondition::DeserializationError);
        assert_eq!(r.condition.to_string(), "DESERIALIZATION_ERROR");
        assert!(r.record_count() > 0);
    }

    #[test]
    fn the_documented_sqs_record_of_an_msk_mapping() {
        let r = OnFailureRecord::parse(&sample("msk-retry-attempts-exhausted.json")).unwrap();
        assert_eq!(r.request_id, "a3b2c1d0-0f1e-4d3c-8b7a-6f5e4d3c2b1a");
        assert_eq!(
            r.function_arn,
            "arn:aws:lambda:eu-west-1:123456789012:function:telemetry-consumer"
        );
        assert_eq!(r.function_name(), "telemetry-consumer");
        assert_eq!(r.condition, FailureCondition::RetryAttemptsExhausted);
        assert_eq!(r.approximate_invoke_count, Some(3));
        assert_eq!(
            r.response,
            Some(ResponseContext {
                status_code: Some(200),
                executed_version: Some("$LATEST".into()),
                function_error: Some("Unhandled".into()),
            })
        );
        assert_eq!(r.timestamp.as_deref(), Some("2026-11-14T00:38:06.021Z"));
        assert_eq!(
            r.bootstrap_servers.as_deref(),
            Some(
                "b-1.telemetry.abc123.c2.kafka.eu-west-1.amazonaws.com:9098,b-2.telemetry.abc123.c2.kafka.eu-west-1.amazonaws.com:9098"
            )
        );
        assert!(
            r.event_source_arn
                .as_deref()
                .unwrap()
                .starts_with("arn:aws:kafka:")
        );
        assert_eq!(r.batch_size, Some(500));
        assert_eq!(r.payload_size, Some(2_039_086));
        // Sorted by topic then partition; topics with `-` and `.` split at the last `-`.
        assert_eq!(
            r.ranges
                .iter()
                .map(|g| (g.topic.as_str(), g.partition, g.first_offset, g.last_offset))
                .collect::<Vec<_>>(),
            [
                ("telemetry.metrics-eu", 0, 49, 298),
                ("telemetry.metrics-eu", 2, 1_000, 1_249),
            ]
        );
        assert_eq!(
            r.ranges[0].first_timestamp.as_deref(),
            Some("2026-11-14T00:38:04.835Z")
        );
        assert_eq!(r.record_count(), 500);
    }

    #[test]
    fn a_payload_too_large_has_no_response_context() {
        let r = OnFailureRecord::parse(&sample("self-managed-payload-too-large.json")).unwrap();
        assert_eq!(r.condition, FailureCondition::MaximumPayloadSizeExceeded);
        assert_eq!(r.response, None);
        assert_eq!(
            r.event_source_arn, None,
            "self-managed clusters have no ARN"
        );
        assert_eq!(
            r.bootstrap_servers.as_deref(),
            Some("kafka-1.internal:9092")
        );
        assert_eq!(r.ranges.len(), 1);
        assert_eq!(r.ranges[0].topic, "orders-v2-by-customer");
        assert_eq!(r.ranges[0].partition, 11);
        assert_eq!((r.ranges[0].first_offset, r.ranges[0].last_offset), (7, 7));
        assert_eq!(r.ranges[0].offset_count(), 1);
    }

    /// The AWS Lambda developer guide's example of a Kafka-topic destination's message ("Using a
    /// Kafka topic as an on-failure destination", "Record format for a Kafka destination"), verbatim.
    /// Its `recordInfo.offset` is a Kinesis-style sequence number that names no record of its
    /// payload: the payload is the authority.
    #[test]
    fn the_guides_kafka_destination_record() {
        let r = OnFailureRecord::parse(&sample("aws-guide-kafka-destination.json")).unwrap();
        assert_eq!(r.condition, FailureCondition::RetriesExhausted);
        assert_eq!(r.approximate_invoke_count, Some(3));
        assert_eq!(r.batch_size, Some(1));
        assert_eq!(r.payload_size, Some(1162));
        assert_eq!(r.function_name(), "my-function");
        assert_eq!(
            r.ranges
                .iter()
                .map(|g| (g.topic.as_str(), g.partition, g.first_offset, g.last_offset))
                .collect::<Vec<_>>(),
            [("my-topic", 0, 100, 100)]
        );
        let carried = r
            .carried
            .as_ref()
            .expect("the record travels in the payload");
        assert_eq!(carried.form, PayloadForm::EventObject);
        assert_eq!(
            carried.event_source_arn.as_deref(),
            Some("arn:aws:kafka:us-east-1:123456789012:cluster/my-cluster/abc123")
        );
        let [DecodedRecord::Record(record)] = &carried.records[..] else {
            panic!("one decoded record: {:?}", carried.records)
        };
        assert_eq!(record.key.as_deref(), Some(&b"test-key"[..]));
        assert_eq!(record.value.as_deref(), Some(&b"test-value"[..]));
        assert_eq!(record.timestamp, Some(1_749_116_692_330));
        assert_eq!(carried.in_range(&r.ranges[0]).count(), 1);
        assert_eq!(r.record_count(), 1);
    }

    /// The guide's S3-destination example ("Kafka on-failure destinations", "S3 destination example
    /// invocation record"), made valid JSON (the first `condition` alternative; comments and
    /// trailing commas removed). Its `payload` is the placeholder `"<Whole Event>"` and its offsets
    /// are Kinesis-style sequence numbers: as written it cannot be redriven, and says why.
    #[test]
    fn the_guides_s3_destination_record() {
        let text = sample("aws-guide-s3-destination.json");
        let e = OnFailureRecord::parse(&text).unwrap_err();
        assert!(matches!(e, MalformedRecord::BadPayload(_)), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("`payload` is not the invoked ESM event: the event is not valid JSON"),
            "{e}"
        );
        // With a real event in `payload`, as an escaped JSON string (the guide's own Kafka-topic
        // example's event), the records are taken from it.
        let mut value: Value = serde_json::from_str(&text).unwrap();
        let kafka: Value =
            serde_json::from_str(&sample("aws-guide-kafka-destination.json")).unwrap();
        value["payload"] = Value::String(kafka["payload"].to_string());
        let r = OnFailureRecord::from_value(&value).unwrap();
        assert_eq!(r.condition, FailureCondition::RetryAttemptsExhausted);
        assert_eq!(r.batch_size, Some(500));
        assert_eq!(r.carried.as_ref().unwrap().form, PayloadForm::EventString);
        assert_eq!(
            r.ranges
                .iter()
                .map(|g| (g.topic.as_str(), g.partition, g.first_offset))
                .collect::<Vec<_>>(),
            [("my-topic", 0, 100)]
        );
        // Without the payload, it is the SQS/SNS shape: metadata only, and its offsets must be offsets.
        value.as_object_mut().unwrap().remove("payload");
        assert!(matches!(
            OnFailureRecord::from_value(&value),
            Err(MalformedRecord::BadOffset { field, .. }) if field.contains("Topic-0")
        ));
    }

    #[test]
    fn a_kafka_destination_record_without_its_payload_says_where_the_record_is() {
        let mut value: Value =
            serde_json::from_str(&sample("aws-guide-kafka-destination.json")).unwrap();
        value.as_object_mut().unwrap().remove("payload");
        let e = OnFailureRecord::from_value(&value).unwrap_err();
        assert!(e.to_string().contains("payload"), "{e}");
        value["payload"] = Value::from(3);
        let e = OnFailureRecord::from_value(&value).unwrap_err();
        assert!(
            e.to_string()
                .contains("`payload` must be the invoked event"),
            "{e}"
        );
        value["payload"] = serde_json::json!({"records": []});
        assert!(matches!(
            OnFailureRecord::from_value(&value),
            Err(MalformedRecord::BadPayload(_))
        ));
    }

    #[test]
    fn an_sns_notification_is_unwrapped() {
        let inner = sample("msk-retry-attempts-exhausted.json");
        let envelope =
            serde_json::json!({"Type": "Notification", "MessageId": "m", "Message": inner});
        let r = OnFailureRecord::parse(&envelope.to_string()).unwrap();
        assert_eq!(r.ranges.len(), 2);
        let bad = serde_json::json!({"Type": "Notification", "Message": "not json"});
        assert!(matches!(
            OnFailureRecord::parse(&bad.to_string()),
            Err(MalformedRecord::NotJson(_))
        ));
    }

    #[test]
    fn every_malformed_message_says_what_is_wrong() {
        let good = || -> Value {
            serde_json::from_str(&sample("msk-retry-attempts-exhausted.json")).unwrap()
        };
        let check = |mutate: &dyn Fn(&mut Value), expect: &str| {
            let mut v = good();
            mutate(&mut v);
            let e = OnFailureRecord::from_value(&v).expect_err(expect);
            assert!(
                e.to_string().contains(expect),
                "{e} should mention {expect}"
            );
        };
        check(&|v| *v = Value::Array(vec![]), "must be a JSON object");
        check(
            &|v| {
                v.as_object_mut().unwrap().remove("KafkaBatchInfo");
            },
            "no `KafkaBatchInfo`",
        );
        check(
            &|v| {
                v["requestContext"]
                    .as_object_mut()
                    .unwrap()
                    .remove("requestId");
            },
            "`requestContext.requestId` is missing",
        );
        check(
            &|v| {
                v["requestContext"]["condition"] = Value::from(3);
            },
            "`requestContext.condition` must be a string",
        );
        check(
            &|v| {
                v["responseContext"] = Value::from("x");
            },
            "`responseContext` must be an object or null",
        );
        check(
            &|v| {
                v["KafkaBatchInfo"]
                    .as_object_mut()
                    .unwrap()
                    .remove("recordsInfo");
            },
            "`KafkaBatchInfo.recordsInfo` is missing",
        );
        check(
            &|v| {
                v["KafkaBatchInfo"]["recordsInfo"] = serde_json::json!({});
            },
            "names no records",
        );
        check(
            &|v| {
                v["KafkaBatchInfo"]["recordsInfo"] = serde_json::json!({"nodash": {"firstRecordOffset": "1", "lastRecordOffset": "2"}});
            },
            "\"nodash\" is not a \"<topic>-<partition>\" key",
        );
        check(
            &|v| {
                v["KafkaBatchInfo"]["recordsInfo"]["telemetry.metrics-eu-0"]["firstRecordOffset"] =
                    Value::from("4x");
            },
            "firstRecordOffset` = \"4x\" is not an offset",
        );
        check(
            &|v| {
                v["KafkaBatchInfo"]["recordsInfo"]["telemetry.metrics-eu-0"]["lastRecordOffset"] =
                    Value::from("-1");
            },
            "is not an offset",
        );
        check(
            &|v| {
                v["KafkaBatchInfo"]["recordsInfo"]["telemetry.metrics-eu-0"]
                    .as_object_mut()
                    .unwrap()
                    .remove("lastRecordOffset");
            },
            "lastRecordOffset` is missing",
        );
        check(
            &|v| {
                v["KafkaBatchInfo"]["recordsInfo"]["telemetry.metrics-eu-0"]["firstRecordOffset"] =
                    Value::from("999");
            },
            "firstRecordOffset 999 is after lastRecordOffset 298",
        );
        check(
            &|v| {
                v["KafkaBatchInfo"]["batchSize"] = Value::from(-1);
            },
            "`KafkaBatchInfo.batchSize` must be a whole number",
        );
        assert!(matches!(
            OnFailureRecord::parse("{"),
            Err(MalformedRecord::NotJson(_))
        ));
    }

    #[test]
    fn the_malformed_sample_names_the_bad_offset() {
        let e = OnFailureRecord::parse(&sample("malformed-offset.json")).unwrap_err();
        assert_eq!(
            e,
            MalformedRecord::BadOffset {
                field: "KafkaBatchInfo.recordsInfo[\"telemetry.metrics-eu-0\"].firstRecordOffset"
                    .into(),
                value: "\"forty-nine\"".into(),
            }
        );
    }

    #[test]
    fn offsets_may_be_numbers_and_unknown_conditions_are_kept() {
        let v = serde_json::json!({
            "requestContext": {"requestId": "r", "functionArn": "not-an-arn", "condition": "SomethingNew", "approximateInvokeCount": "2"},
            "responseContext": null,
            "KafkaBatchInfo": {"recordsInfo": {"t-1": {"firstRecordOffset": 3, "lastRecordOffset": 4}}, "extra": true}
        });
        let r = OnFailureRecord::from_value(&v).unwrap();
        assert_eq!(r.condition, FailureCondition::Other("SomethingNew".into()));
        assert_eq!(r.approximate_invoke_count, Some(2));
        assert_eq!(r.function_name(), "not-an-arn");
        assert_eq!(r.bootstrap_servers, None);
        assert_eq!(r.ranges[0].offset_count(), 2);
    }
}
