//! The on-failure record the ESM writes when it gives up on a batch (the AWS format that
//! [`crate::redrive`] reads), and where it goes: an SQS queue or a JSON-lines file (metadata only),
//! an S3 bucket (metadata plus the invoked event as an escaped JSON string), a Kafka topic (one
//! message per record, the record in its payload), or nowhere.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use kafka_esm::encode::{Source, encode_event};
use kafka_esm::record::KafkaRecord;
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

    /// The record around `batch_info`: request and response context, version, timestamp.
    fn envelope(&self, condition: &str, mut batch_info: Value, now_ms: i64) -> Value {
        if let Some(arn) = self.event_source_arn {
            batch_info["eventSourceArn"] = arn.into();
        }
        json!({
            "requestContext": {
                "requestId": self.request_id,
                "functionArn": self.function_arn,
                "condition": condition,
                "approximateInvokeCount": self.invoke_count,
            },
            "responseContext": self.response.as_ref().map(|r| json!({
                "statusCode": r.status_code,
                "executedVersion": "$LATEST",
                "functionError": r.function_error,
            })),
            "version": "1.0",
            "timestamp": iso(now_ms),
            "KafkaBatchInfo": batch_info,
        })
    }
}

/// What an S3 destination receives: the metadata record plus `payload`, the invoked event as an
/// escaped JSON string.
pub fn s3_destination_record(give_up: &GiveUp<'_>, now_ms: i64) -> Value {
    let mut record = on_failure_record(give_up, now_ms);
    record["payload"] = encode_event(
        &give_up.source(),
        give_up.bootstrap_servers,
        give_up.records,
    )
    .into();
    record
}

/// What a Kafka-topic destination receives (AWS guide "Using a Kafka topic as an on-failure
/// destination"): one message per record, keyed with the record's key. `recordInfo` holds only its
/// offset and timestamp; `payload` is an event object holding the record itself. The condition is
/// spelled `RetriesExhausted` there.
pub fn kafka_destination_messages(
    give_up: &GiveUp<'_>,
    now_ms: i64,
) -> Vec<(Option<Vec<u8>>, Value)> {
    let source = give_up.source();
    let condition = match give_up.condition {
        "RetryAttemptsExhausted" => "RetriesExhausted",
        other => other,
    };
    give_up
        .records
        .iter()
        .map(|record| {
            let event = encode_event(
                &source,
                give_up.bootstrap_servers,
                std::slice::from_ref(record),
            );
            let mut info = json!({ "offset": record.offset.to_string() });
            if let Some(ts) = record.timestamp {
                info["timestamp"] = iso(ts).into();
            }
            let batch_info = json!({
                "batchSize": 1,
                "bootstrapServers": give_up.bootstrap_servers,
                "payloadSize": event.len(),
                "recordInfo": info,
            });
            let mut message = give_up.envelope(condition, batch_info, now_ms);
            message["payload"] = serde_json::from_str(&event).expect("an encoded event is JSON");
            (record.key.clone(), message)
        })
        .collect()
}

/// The on-failure record of `give_up`, as AWS writes it: offsets as strings, one `recordsInfo`
/// entry per partition, ISO-8601 timestamps.
pub fn on_failure_record(give_up: &GiveUp<'_>, now_ms: i64) -> Value {
    let mut ranges: BTreeMap<String, (i64, i64, Option<i64>, Option<i64>)> = BTreeMap::new();
    for record in give_up.records {
        let key = format!("{}-{}", record.topic, record.partition);
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
    let records_info: serde_json::Map<String, Value> = ranges
        .into_iter()
        .map(|(key, (first, last, first_ts, last_ts))| {
            let mut info = json!({
                "firstRecordOffset": first.to_string(),
                "lastRecordOffset": last.to_string(),
            });
            if let Some(ts) = first_ts {
                info["firstRecordTimestamp"] = iso(ts).into();
            }
            if let Some(ts) = last_ts {
                info["lastRecordTimestamp"] = iso(ts).into();
            }
            (key, info)
        })
        .collect();
    let batch_info = json!({
        "batchSize": give_up.records.len(),
        "bootstrapServers": give_up.bootstrap_servers,
        "payloadSize": give_up.payload_size,
        "recordsInfo": records_info,
    });
    give_up.envelope(give_up.condition, batch_info, now_ms)
}

fn iso(epoch_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(epoch_ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| epoch_ms.to_string())
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
                    iso(now_ms),
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
}
