//! The on-failure record the ESM writes when it gives up on a batch (metadata only, the AWS format
//! that [`crate::redrive`] reads), and where it goes: an SQS queue, a JSON-lines file, or nowhere.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::record::KafkaRecord;

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
    let mut batch_info = json!({
        "batchSize": give_up.records.len(),
        "bootstrapServers": give_up.bootstrap_servers,
        "payloadSize": give_up.payload_size,
        "recordsInfo": records_info,
    });
    if let Some(arn) = give_up.event_source_arn {
        batch_info["eventSourceArn"] = arn.into();
    }
    json!({
        "requestContext": {
            "requestId": give_up.request_id,
            "functionArn": give_up.function_arn,
            "condition": give_up.condition,
            "approximateInvokeCount": give_up.invoke_count,
        },
        "responseContext": give_up.response.as_ref().map(|r| json!({
            "statusCode": r.status_code,
            "executedVersion": "$LATEST",
            "functionError": r.function_error,
        })),
        "version": "1.0",
        "timestamp": iso(now_ms),
        "KafkaBatchInfo": batch_info,
    })
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
}

impl OnFailureDestination {
    /// A short name for logs.
    pub fn describe(&self) -> String {
        match self {
            Self::Discard => "no destination (records skipped)".into(),
            Self::File(path) => format!("file {}", path.display()),
            Self::Sqs { queue_url, .. } => format!("SQS queue {queue_url}"),
        }
    }

    /// True when a record is kept somewhere.
    pub fn keeps_records(&self) -> bool {
        !matches!(self, Self::Discard)
    }

    /// Writes `record`.
    pub async fn send(&self, record: &Value) -> Result<(), DestinationError> {
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
}
