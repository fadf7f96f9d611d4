//! The on-failure record the ESM writes when it gives up on a batch, and where it goes: an SQS
//! queue or a JSON-lines file (metadata only), an S3 bucket (metadata plus the invoked event as an
//! escaped JSON string), a Kafka topic (one message per record, the record in its payload), or
//! nowhere. The record is built with the types of [`kafka_esm::on_failure`], the ones
//! [`crate::redrive`] reads it with.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use kafka_esm::encode::{Source, encode_event};
use kafka_esm::on_failure::{
    FailureCondition, KafkaBatchInfo, OnFailureRecord, Payload, RecordInfo, RecordsInfo,
    RequestContext, ResponseContext, iso_timestamp,
};
use kafka_esm::record::{KafkaRecord, TopicPartition};
use kafka_esm::sink::{MessageSink, OutboundMessage};

/// What the function answered last, for `responseContext` (none when it was never invoked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastResponse {
    /// The invoke API's status code.
    pub status_code: u16,
    /// `Unhandled` (or `Handled`) when the function failed.
    pub function_error: Option<String>,
}

/// The facts of one given-up batch.
#[derive(Debug, Clone)]
pub struct GiveUp<'a> {
    /// The records the ESM gives up on, in batch order.
    pub records: &'a [KafkaRecord],
    /// `RetryAttemptsExhausted`, `MaximumPayloadSizeExceeded` or `RecordAgeExceeded`.
    pub condition: &'static str,
    /// Invocations made for these records.
    pub invoke_count: u32,
    /// The last invocation's request id.
    pub request_id: &'a str,
    /// The function's ARN.
    pub function_arn: &'a str,
    /// The last answer, when there was one.
    pub response: Option<LastResponse>,
    /// The bootstrap servers the ESM reads.
    pub bootstrap_servers: &'a str,
    /// The MSK cluster ARN, for an MSK source.
    pub event_source_arn: Option<&'a str>,
    /// The event's size in bytes.
    pub payload_size: usize,
}

impl GiveUp<'_> {
    fn source(&self) -> Source {
        match self.event_source_arn {
            Some(arn) => Source::Msk {
                cluster_arn: arn.to_owned(),
            },
            None => Source::SelfManaged,
        }
    }

    /// The on-failure record of this batch, as AWS writes it to an SQS queue or an SNS topic:
    /// offsets as strings, one `recordsInfo` entry per partition, ISO-8601 timestamps.
    pub fn record(&self, now_ms: i64) -> OnFailureRecord {
        let mut ranges: BTreeMap<String, (i64, i64, Option<i64>, Option<i64>)> = BTreeMap::new();
        for record in self.records {
            let key = TopicPartition::key(&record.topic, record.partition).to_string();
            let range = ranges.entry(key).or_insert((
                record.offset,
                record.offset,
                record.timestamp,
                record.timestamp,
            ));
            if record.offset < range.0 {
                (range.0, range.2) = (record.offset, record.timestamp);
            }
            if record.offset > range.1 {
                (range.1, range.3) = (record.offset, record.timestamp);
            }
        }
        let records_info = ranges
            .into_iter()
            .map(|(key, (first, last, first_ts, last_ts))| {
                let info = RecordsInfo {
                    first_record_offset: first,
                    first_record_timestamp: first_ts.map(iso_timestamp),
                    last_record_offset: last,
                    last_record_timestamp: last_ts.map(iso_timestamp),
                };
                (key, info)
            })
            .collect();
        let batch_info = KafkaBatchInfo {
            batch_size: Some(self.records.len() as u64),
            payload_size: Some(self.payload_size as u64),
            records_info: Some(records_info),
            ..KafkaBatchInfo::default()
        };
        self.envelope(
            FailureCondition::parse(self.condition),
            batch_info,
            None,
            now_ms,
        )
    }

    /// What an S3 destination receives: [`Self::record`] plus `payload`, the invoked event as an
    /// escaped JSON string.
    pub fn s3_record(&self, now_ms: i64) -> OnFailureRecord {
        let mut record = self.record(now_ms);
        record.payload = Some(Payload::EventString(encode_event(
            &self.source(),
            self.bootstrap_servers,
            self.records,
        )));
        record
    }

    /// What a Kafka-topic destination receives (AWS guide "Using a Kafka topic as an on-failure
    /// destination"): one message per record, keyed with the record's key. `recordInfo` holds only
    /// its offset and timestamp; `payload` is an event object holding the record itself. The
    /// condition is spelled `RetriesExhausted` there.
    pub fn kafka_messages(&self, now_ms: i64) -> Vec<(Option<Vec<u8>>, OnFailureRecord)> {
        let source = self.source();
        let condition = FailureCondition::parse(self.condition).for_kafka_destination();
        self.records
            .iter()
            .map(|record| {
                let event = encode_event(
                    &source,
                    self.bootstrap_servers,
                    std::slice::from_ref(record),
                );
                let batch_info = KafkaBatchInfo {
                    batch_size: Some(1),
                    payload_size: Some(event.len() as u64),
                    record_info: Some(RecordInfo {
                        offset: record.offset,
                        timestamp: record.timestamp.map(iso_timestamp),
                    }),
                    ..KafkaBatchInfo::default()
                };
                let payload = Payload::EventObject(
                    serde_json::from_str(&event).expect("an encoded event is a JSON object"),
                );
                let message = self.envelope(condition.clone(), batch_info, Some(payload), now_ms);
                (record.key.clone(), message)
            })
            .collect()
    }

    /// The record around `batch_info`: request and response context, version, timestamp.
    fn envelope(
        &self,
        condition: FailureCondition,
        mut batch_info: KafkaBatchInfo,
        payload: Option<Payload>,
        now_ms: i64,
    ) -> OnFailureRecord {
        batch_info.bootstrap_servers = Some(self.bootstrap_servers.to_owned());
        batch_info.event_source_arn = self.event_source_arn.map(str::to_owned);
        OnFailureRecord {
            batch_info,
            payload,
            request_context: RequestContext {
                approximate_invoke_count: Some(u64::from(self.invoke_count)),
                condition,
                function_arn: self.function_arn.to_owned(),
                request_id: self.request_id.to_owned(),
            },
            response_context: self.response.as_ref().map(|r| ResponseContext {
                executed_version: Some("$LATEST".into()),
                function_error: r.function_error.clone(),
                status_code: Some(u64::from(r.status_code)),
            }),
            timestamp: Some(iso_timestamp(now_ms)),
            version: Some(OnFailureRecord::VERSION.into()),
        }
    }
}

/// [`GiveUp::s3_record`] as JSON.
pub fn s3_destination_record(give_up: &GiveUp<'_>, now_ms: i64) -> Value {
    json(&give_up.s3_record(now_ms))
}

/// [`GiveUp::kafka_messages`] as JSON.
pub fn kafka_destination_messages(
    give_up: &GiveUp<'_>,
    now_ms: i64,
) -> Vec<(Option<Vec<u8>>, Value)> {
    give_up
        .kafka_messages(now_ms)
        .into_iter()
        .map(|(key, message)| (key, json(&message)))
        .collect()
}

/// [`GiveUp::record`] as JSON: what an SQS queue, an SNS topic or a file receives.
pub fn on_failure_record(give_up: &GiveUp<'_>, now_ms: i64) -> Value {
    json(&give_up.record(now_ms))
}

fn json(record: &OnFailureRecord) -> Value {
    serde_json::to_value(record).expect("an on-failure record is JSON")
}

/// The on-failure record could not be written: the records stay uncommitted and are polled again.
#[derive(Debug, thiserror::Error)]
#[error("could not write the on-failure record to {destination}: {message}")]
pub struct DestinationError {
    /// Where it was going.
    pub destination: String,
    /// What went wrong.
    pub message: String,
}

/// Where on-failure records go.
#[derive(Debug, Clone)]
pub enum OnFailureDestination {
    /// No destination: as on AWS, the records are skipped (and logged).
    Discard,
    /// One JSON record per line, appended.
    File(PathBuf),
    /// An SQS queue (the stack's on-failure queue, or moto's).
    Sqs {
        /// The client.
        client: aws_sdk_sqs::Client,
        /// The queue URL.
        queue_url: String,
    },
    /// An S3 bucket: one object per given-up batch, under `prefix`.
    S3 {
        /// The client.
        client: aws_sdk_s3::Client,
        /// The bucket.
        bucket: String,
        /// The key prefix (may be empty).
        prefix: String,
    },
    /// A Kafka topic (`kafka://topic`): one message per record.
    Kafka {
        /// The producer (to the source cluster, as on AWS).
        sink: Arc<dyn MessageSink>,
        /// The topic.
        topic: String,
        /// How long one publish may wait for its acknowledgement.
        timeout: Duration,
    },
}

impl OnFailureDestination {
    /// A short name for logs.
    pub fn describe(&self) -> String {
        match self {
            Self::Discard => "no destination (records skipped)".into(),
            Self::File(path) => format!("file {}", path.display()),
            Self::Sqs { queue_url, .. } => format!("SQS queue {queue_url}"),
            Self::S3 { bucket, prefix, .. } => format!("S3 s3://{bucket}/{prefix}"),
            Self::Kafka { topic, .. } => format!("Kafka topic kafka://{topic}"),
        }
    }

    /// True when a record is kept somewhere.
    pub fn keeps_records(&self) -> bool {
        !matches!(self, Self::Discard)
    }

    /// Writes what this destination receives for `give_up` (`record` is its metadata record).
    pub async fn send(
        &self,
        record: &Value,
        give_up: &GiveUp<'_>,
        now_ms: i64,
    ) -> Result<(), DestinationError> {
        let error = |message: String| DestinationError {
            destination: self.describe(),
            message,
        };
        match self {
            Self::Discard => Ok(()),
            Self::File(path) => {
                let mut line = serde_json::to_vec(record).map_err(|e| error(e.to_string()))?;
                line.push(b'\n');
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| error(e.to_string()))?;
                }
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| error(e.to_string()))?;
                file.write_all(&line)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| error(e.to_string()))
            }
            Self::Sqs { client, queue_url } => client
                .send_message()
                .queue_url(queue_url)
                .message_body(record.to_string())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| error(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())),
            Self::S3 {
                client,
                bucket,
                prefix,
            } => {
                let body = s3_destination_record(give_up, now_ms).to_string();
                let key = format!(
                    "{prefix}aws/lambda/local-esm/{}-{}.json",
                    iso_timestamp(now_ms),
                    give_up.request_id
                );
                client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .content_type("application/json")
                    .body(body.into_bytes().into())
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| error(aws_sdk_s3::error::DisplayErrorContext(e).to_string()))
            }
            Self::Kafka {
                sink,
                topic,
                timeout,
            } => {
                // One after another, in order: a retry after a failure may write a record twice
                // (as the ESM may); the redrive skips what is done.
                for (key, message) in kafka_destination_messages(give_up, now_ms) {
                    sink.publish(
                        OutboundMessage {
                            topic: topic.clone(),
                            key,
                            value: Some(message.to_string().into_bytes()),
                            headers: Vec::new(),
                        },
                        *timeout,
                    )
                    .await
                    .map_err(|e| error(e.to_string()))?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redrive::OnFailureRecord;

    #[test]
    fn the_record_is_what_redrive_reads() {
        let mut records = Vec::new();
        for (partition, offset) in [(0, 41), (1, 7), (0, 42), (1, 8), (0, 43)] {
            let mut r = KafkaRecord::new("orders.v1-eu", partition, offset);
            r.timestamp = Some(1_763_000_000_000 + offset);
            records.push(r);
        }
        let give_up = GiveUp {
            records: &records,
            condition: "RetryAttemptsExhausted",
            invoke_count: 3,
            request_id: "req-1",
            function_arn: "arn:aws:lambda:local:000000000000:function:consumer",
            response: Some(LastResponse {
                status_code: 200,
                function_error: Some("Unhandled".into()),
            }),
            bootstrap_servers: "127.0.0.1:9092",
            event_source_arn: None,
            payload_size: 1234,
        };
        let value = on_failure_record(&give_up, 1_763_000_000_500);
        let parsed = OnFailureRecord::parse(&value.to_string()).expect("redrive reads it");
        assert_eq!(parsed.condition.as_str(), "RetryAttemptsExhausted");
        assert_eq!(parsed.approximate_invoke_count, Some(3));
        assert_eq!(parsed.batch_size, Some(5));
        let ranges: Vec<_> = parsed
            .ranges
            .iter()
            .map(|r| (r.topic.as_str(), r.partition, r.first_offset, r.last_offset))
            .collect();
        assert_eq!(
            ranges,
            [("orders.v1-eu", 0, 41, 43), ("orders.v1-eu", 1, 7, 8)]
        );
        assert_eq!(
            value["KafkaBatchInfo"]["recordsInfo"]["orders.v1-eu-0"]["firstRecordTimestamp"],
            "2025-11-13T02:13:20.041Z"
        );
        assert_eq!(value["timestamp"], "2025-11-13T02:13:20.500Z");
    }

    #[test]
    fn a_payload_too_large_has_a_null_response_context() {
        let records = [KafkaRecord::new("t", 0, 1)];
        let value = on_failure_record(
            &GiveUp {
                records: &records,
                condition: "MaximumPayloadSizeExceeded",
                invoke_count: 0,
                request_id: "req-2",
                function_arn: "arn:aws:lambda:local:000000000000:function:consumer",
                response: None,
                bootstrap_servers: "b:9092",
                event_source_arn: Some("arn:aws:kafka:us-east-1:1:cluster/c/u"),
                payload_size: 7_000_000,
            },
            0,
        );
        assert!(value["responseContext"].is_null());
        let parsed = OnFailureRecord::parse(&value.to_string()).unwrap();
        assert_eq!(
            parsed.event_source_arn.as_deref(),
            Some("arn:aws:kafka:us-east-1:1:cluster/c/u")
        );
    }

    /// Every object's keys, by path: the shape of a JSON document without its values.
    fn shape(value: &Value, path: &str, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    // A partition's group key is data, not shape.
                    let key = if path.ends_with(".records") {
                        "<topic>-<partition>"
                    } else {
                        key
                    };
                    out.push(format!("{path}.{key}"));
                    shape(child, &format!("{path}.{key}"), out);
                }
            }
            Value::Array(items) => {
                for item in items {
                    shape(item, &format!("{path}[]"), out);
                }
            }
            _ => {}
        }
        out.sort();
        out.dedup();
    }

    fn guide(name: &str) -> Value {
        let path = format!("{}/../events/on-failure/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    #[test]
    fn a_kafka_destination_message_has_the_guides_shape() {
        let mut record = KafkaRecord::new("my-topic", 0, 100);
        record.key = Some(b"test-key".to_vec());
        record.value = Some(b"test-value".to_vec());
        record.timestamp = Some(1_749_116_692_330);
        let records = [record];
        let messages = kafka_destination_messages(
            &GiveUp {
                records: &records,
                condition: "RetryAttemptsExhausted",
                invoke_count: 3,
                request_id: "req",
                function_arn: "arn:aws:lambda:us-east-1:123456789012:function:my-function",
                response: Some(LastResponse {
                    status_code: 200,
                    function_error: Some("Unhandled".into()),
                }),
                bootstrap_servers: "b-1:9098",
                event_source_arn: Some(
                    "arn:aws:kafka:us-east-1:123456789012:cluster/my-cluster/abc123",
                ),
                payload_size: 0,
            },
            1_573_755_365_568,
        );
        let [(key, message)] = &messages[..] else {
            panic!("one message per record")
        };
        assert_eq!(key.as_deref(), Some(&b"test-key"[..]));
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        shape(message, "", &mut ours);
        shape(&guide("aws-guide-kafka-destination.json"), "", &mut theirs);
        assert_eq!(ours, theirs);
        assert_eq!(message["requestContext"]["condition"], "RetriesExhausted");
        assert_eq!(message["KafkaBatchInfo"]["recordInfo"]["offset"], "100");
        assert_eq!(
            message["payload"]["records"]["my-topic-0"],
            guide("aws-guide-kafka-destination.json")["payload"]["records"]["my-topic-0"]
        );
        let parsed = OnFailureRecord::parse(&message.to_string()).unwrap();
        assert_eq!(parsed.ranges[0].key(), "my-topic-0");
        assert_eq!(parsed.ranges[0].first_offset, 100);
    }

    #[test]
    fn an_s3_destination_record_has_the_guides_shape_and_the_event_as_a_string() {
        let mut records = Vec::new();
        for (partition, offset) in [(0, 5), (1, 9)] {
            let mut r = KafkaRecord::new("Topic", partition, offset);
            r.timestamp = Some(1_573_692_284_835);
            records.push(r);
        }
        let give_up = GiveUp {
            records: &records,
            condition: "RetryAttemptsExhausted",
            invoke_count: 1,
            request_id: "req",
            function_arn: "arn:aws:lambda:us-east-1:123456789012:function:myfunction",
            response: Some(LastResponse {
                status_code: 200,
                function_error: Some("Unhandled".into()),
            }),
            bootstrap_servers: "b-1:9098",
            event_source_arn: Some("arn:aws:kafka:us-east-1:123456789012:cluster/c/u"),
            payload_size: 10,
        };
        let record = s3_destination_record(&give_up, 1_573_692_286_021);
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        shape(&record, "", &mut ours);
        shape(&guide("aws-guide-s3-destination.json"), "", &mut theirs);
        assert_eq!(ours, theirs);
        let event = record["payload"].as_str().expect("an escaped JSON string");
        assert_eq!(
            kafka_esm::event::decode_event(event)
                .unwrap()
                .record_count(),
            2
        );
        let parsed = OnFailureRecord::parse(&record.to_string()).unwrap();
        assert_eq!(parsed.carried.unwrap().records.len(), 2);
    }

    /// What `esm poll` writes, byte for byte: the output of the writer as it was before the record
    /// had its types in `kafka_esm::on_failure` (then `json!` values), kept as the golden sample. The
    /// typed record and its JSON value write the same bytes.
    #[test]
    fn the_written_records_are_what_they_always_were() {
        let mut records = Vec::new();
        for (partition, offset) in [(10, 5), (2, 9), (0, 1), (10, 3), (2, 11)] {
            let topic = if offset == 1 { "a" } else { "orders.v1-eu" };
            let mut r = KafkaRecord::new(topic, partition, offset);
            if offset != 11 {
                r.timestamp = Some(1_700_000_000_000 + offset);
            }
            r.key = Some(format!("k{offset}").into_bytes());
            r.value = Some(b"{\"v\":1}".to_vec());
            r.headers = vec![kafka_esm::record::Header::new("h", vec![200u8, 1])];
            records.push(r);
        }
        let msk = GiveUp {
            records: &records,
            condition: "RetryAttemptsExhausted",
            invoke_count: 3,
            request_id: "req-1",
            function_arn: "arn:aws:lambda:us-east-1:1:function:f",
            response: Some(LastResponse {
                status_code: 200,
                function_error: Some("Unhandled".into()),
            }),
            bootstrap_servers: "b-1:9092,b-2:9092",
            event_source_arn: Some("arn:aws:kafka:us-east-1:1:cluster/c/u"),
            payload_size: 4321,
        };
        let too_large = GiveUp {
            condition: "MaximumPayloadSizeExceeded",
            response: None,
            event_source_arn: None,
            ..msk.clone()
        };
        let handled = GiveUp {
            condition: "RecordAgeExceeded",
            response: Some(LastResponse {
                status_code: 502,
                function_error: None,
            }),
            ..msk.clone()
        };
        let now = 1_700_000_000_777;
        let golden = [
            (
                on_failure_record(&msk, now),
                r#"{"KafkaBatchInfo":{"batchSize":5,"bootstrapServers":"b-1:9092,b-2:9092","eventSourceArn":"arn:aws:kafka:us-east-1:1:cluster/c/u","payloadSize":4321,"recordsInfo":{"a-0":{"firstRecordOffset":"1","firstRecordTimestamp":"2023-11-14T22:13:20.001Z","lastRecordOffset":"1","lastRecordTimestamp":"2023-11-14T22:13:20.001Z"},"orders.v1-eu-10":{"firstRecordOffset":"3","firstRecordTimestamp":"2023-11-14T22:13:20.003Z","lastRecordOffset":"5","lastRecordTimestamp":"2023-11-14T22:13:20.005Z"},"orders.v1-eu-2":{"firstRecordOffset":"9","firstRecordTimestamp":"2023-11-14T22:13:20.009Z","lastRecordOffset":"11"}}},"requestContext":{"approximateInvokeCount":3,"condition":"RetryAttemptsExhausted","functionArn":"arn:aws:lambda:us-east-1:1:function:f","requestId":"req-1"},"responseContext":{"executedVersion":"$LATEST","functionError":"Unhandled","statusCode":200},"timestamp":"2023-11-14T22:13:20.777Z","version":"1.0"}"#,
            ),
            (
                on_failure_record(&too_large, now),
                r#"{"KafkaBatchInfo":{"batchSize":5,"bootstrapServers":"b-1:9092,b-2:9092","payloadSize":4321,"recordsInfo":{"a-0":{"firstRecordOffset":"1","firstRecordTimestamp":"2023-11-14T22:13:20.001Z","lastRecordOffset":"1","lastRecordTimestamp":"2023-11-14T22:13:20.001Z"},"orders.v1-eu-10":{"firstRecordOffset":"3","firstRecordTimestamp":"2023-11-14T22:13:20.003Z","lastRecordOffset":"5","lastRecordTimestamp":"2023-11-14T22:13:20.005Z"},"orders.v1-eu-2":{"firstRecordOffset":"9","firstRecordTimestamp":"2023-11-14T22:13:20.009Z","lastRecordOffset":"11"}}},"requestContext":{"approximateInvokeCount":3,"condition":"MaximumPayloadSizeExceeded","functionArn":"arn:aws:lambda:us-east-1:1:function:f","requestId":"req-1"},"responseContext":null,"timestamp":"2023-11-14T22:13:20.777Z","version":"1.0"}"#,
            ),
            (
                s3_destination_record(&too_large, now),
                r#"{"KafkaBatchInfo":{"batchSize":5,"bootstrapServers":"b-1:9092,b-2:9092","payloadSize":4321,"recordsInfo":{"a-0":{"firstRecordOffset":"1","firstRecordTimestamp":"2023-11-14T22:13:20.001Z","lastRecordOffset":"1","lastRecordTimestamp":"2023-11-14T22:13:20.001Z"},"orders.v1-eu-10":{"firstRecordOffset":"3","firstRecordTimestamp":"2023-11-14T22:13:20.003Z","lastRecordOffset":"5","lastRecordTimestamp":"2023-11-14T22:13:20.005Z"},"orders.v1-eu-2":{"firstRecordOffset":"9","firstRecordTimestamp":"2023-11-14T22:13:20.009Z","lastRecordOffset":"11"}}},"payload":"{\"eventSource\":\"SelfManagedKafka\",\"bootstrapServers\":\"b-1:9092,b-2:9092\",\"records\":{\"a-0\":[{\"topic\":\"a\",\"partition\":0,\"offset\":1,\"timestamp\":1700000000001,\"timestampType\":\"CREATE_TIME\",\"key\":\"azE=\",\"value\":\"eyJ2IjoxfQ==\",\"headers\":[{\"h\":[-56,1]}]}],\"orders.v1-eu-10\":[{\"topic\":\"orders.v1-eu\",\"partition\":10,\"offset\":5,\"timestamp\":1700000000005,\"timestampType\":\"CREATE_TIME\",\"key\":\"azU=\",\"value\":\"eyJ2IjoxfQ==\",\"headers\":[{\"h\":[-56,1]}]},{\"topic\":\"orders.v1-eu\",\"partition\":10,\"offset\":3,\"timestamp\":1700000000003,\"timestampType\":\"CREATE_TIME\",\"key\":\"azM=\",\"value\":\"eyJ2IjoxfQ==\",\"headers\":[{\"h\":[-56,1]}]}],\"orders.v1-eu-2\":[{\"topic\":\"orders.v1-eu\",\"partition\":2,\"offset\":9,\"timestamp\":1700000000009,\"timestampType\":\"CREATE_TIME\",\"key\":\"azk=\",\"value\":\"eyJ2IjoxfQ==\",\"headers\":[{\"h\":[-56,1]}]},{\"topic\":\"orders.v1-eu\",\"partition\":2,\"offset\":11,\"timestamp\":0,\"timestampType\":\"CREATE_TIME\",\"key\":\"azEx\",\"value\":\"eyJ2IjoxfQ==\",\"headers\":[{\"h\":[-56,1]}]}]}}","requestContext":{"approximateInvokeCount":3,"condition":"MaximumPayloadSizeExceeded","functionArn":"arn:aws:lambda:us-east-1:1:function:f","requestId":"req-1"},"responseContext":null,"timestamp":"2023-11-14T22:13:20.777Z","version":"1.0"}"#,
            ),
            (
                on_failure_record(&handled, now),
                r#"{"KafkaBatchInfo":{"batchSize":5,"bootstrapServers":"b-1:9092,b-2:9092","eventSourceArn":"arn:aws:kafka:us-east-1:1:cluster/c/u","payloadSize":4321,"recordsInfo":{"a-0":{"firstRecordOffset":"1","firstRecordTimestamp":"2023-11-14T22:13:20.001Z","lastRecordOffset":"1","lastRecordTimestamp":"2023-11-14T22:13:20.001Z"},"orders.v1-eu-10":{"firstRecordOffset":"3","firstRecordTimestamp":"2023-11-14T22:13:20.003Z","lastRecordOffset":"5","lastRecordTimestamp":"2023-11-14T22:13:20.005Z"},"orders.v1-eu-2":{"firstRecordOffset":"9","firstRecordTimestamp":"2023-11-14T22:13:20.009Z","lastRecordOffset":"11"}}},"requestContext":{"approximateInvokeCount":3,"condition":"RecordAgeExceeded","functionArn":"arn:aws:lambda:us-east-1:1:function:f","requestId":"req-1"},"responseContext":{"executedVersion":"$LATEST","functionError":null,"statusCode":502},"timestamp":"2023-11-14T22:13:20.777Z","version":"1.0"}"#,
            ),
            (
                on_failure_record(
                    &GiveUp {
                        records: &[],
                        ..msk.clone()
                    },
                    i64::MAX,
                ),
                r#"{"KafkaBatchInfo":{"batchSize":0,"bootstrapServers":"b-1:9092,b-2:9092","eventSourceArn":"arn:aws:kafka:us-east-1:1:cluster/c/u","payloadSize":4321,"recordsInfo":{}},"requestContext":{"approximateInvokeCount":3,"condition":"RetryAttemptsExhausted","functionArn":"arn:aws:lambda:us-east-1:1:function:f","requestId":"req-1"},"responseContext":{"executedVersion":"$LATEST","functionError":"Unhandled","statusCode":200},"timestamp":"9223372036854775807","version":"1.0"}"#,
            ),
        ];
        for (written, expected) in golden {
            assert_eq!(written.to_string(), expected);
        }
        let (key, message) = kafka_destination_messages(&msk, now).swap_remove(0);
        assert_eq!(key.as_deref(), Some(&b"k5"[..]));
        assert_eq!(
            message.to_string(),
            r#"{"KafkaBatchInfo":{"batchSize":1,"bootstrapServers":"b-1:9092,b-2:9092","eventSourceArn":"arn:aws:kafka:us-east-1:1:cluster/c/u","payloadSize":324,"recordInfo":{"offset":"5","timestamp":"2023-11-14T22:13:20.005Z"}},"payload":{"bootstrapServers":"b-1:9092,b-2:9092","eventSource":"aws:kafka","eventSourceArn":"arn:aws:kafka:us-east-1:1:cluster/c/u","records":{"orders.v1-eu-10":[{"headers":[{"h":[-56,1]}],"key":"azU=","offset":5,"partition":10,"timestamp":1700000000005,"timestampType":"CREATE_TIME","topic":"orders.v1-eu","value":"eyJ2IjoxfQ=="}]}},"requestContext":{"approximateInvokeCount":3,"condition":"RetriesExhausted","functionArn":"arn:aws:lambda:us-east-1:1:function:f","requestId":"req-1"},"responseContext":{"executedVersion":"$LATEST","functionError":"Unhandled","statusCode":200},"timestamp":"2023-11-14T22:13:20.777Z","version":"1.0"}"#
        );
        for give_up in [&msk, &too_large, &handled] {
            let typed = serde_json::to_string(&give_up.record(now)).unwrap();
            assert_eq!(typed, on_failure_record(give_up, now).to_string());
            let typed = serde_json::to_string(&give_up.s3_record(now)).unwrap();
            assert_eq!(typed, s3_destination_record(give_up, now).to_string());
            for ((_, typed), (_, value)) in give_up
                .kafka_messages(now)
                .iter()
                .zip(kafka_destination_messages(give_up, now))
            {
                assert_eq!(serde_json::to_string(typed).unwrap(), value.to_string());
            }
        }
    }
}
