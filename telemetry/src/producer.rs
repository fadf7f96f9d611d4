//! The producer Lambda's logic: metric events in, Kafka records out, every one accounted for.
//!
//! Each input is validated as a [`MetricEvent`] (an invalid one is rejected with its reason, the
//! others go on), keyed `database_type:instance_id` and produced with the idempotent producer
//! (`enable.idempotence`, `acks=all`). Every delivery report is awaited within the time budget. A
//! record that librdkafka could not deliver after its own retries goes to the dead-letter topic with
//! the reason; a record that is neither delivered nor dead-lettered makes the invocation fail so that
//! the caller retries: nothing is dropped silently. A metric without `event_id` gets a deterministic
//! one (`database_type:instance_id:metric_name:timestamp_ms`) so that the consumer's idempotency
//! removes the duplicates a retry may create.

use std::time::Duration;

use futures::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use serde_json::Value;

use crate::MetricEvent;
use crate::metric_format::MetricEncoder;
use kafka_esm::kafka::KafkaClientContext;
use kafka_esm::retry::Deadline;

/// Header names on a producer dead letter.
pub mod headers {
    /// Why it was not delivered.
    pub const ERROR: &str = "esm.producer.error";
    /// The topic it was meant for.
    pub const TOPIC: &str = "esm.producer.topic";
    /// Its event id.
    pub const EVENT_ID: &str = "esm.producer.event_id";
}

/// What the producer is asked to do: the Lambda's input.
#[derive(Debug, Clone, PartialEq)]
pub enum ProducerRequest {
    /// Publish these metric events (each still to be validated).
    Metrics(Vec<Value>),
    /// Collect and publish this many metrics (a scheduled run).
    Generate(usize),
}

/// The input is not a producer request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the input is not a producer request ({0}); send an array of metric events, {{\"metrics\": [...]}}, {{\"generate\": N}} (N up to 100000), or an EventBridge scheduled event"
)]
pub struct RequestError(pub String);

/// The most metrics one request may ask to generate.
pub const MAX_GENERATE: usize = 100_000;

impl ProducerRequest {
    /// Reads the Lambda's input: an array of metrics, `{"metrics": [...]}`, `{"generate": N}`, or an
    /// EventBridge scheduled event (which generates `scheduled` metrics).
    pub fn from_json(input: Value, scheduled: usize) -> Result<Self, RequestError> {
        match input {
            Value::Array(metrics) => Ok(Self::Metrics(metrics)),
            Value::Object(mut object) => {
                if let Some(metrics) = object.remove("metrics") {
                    return match metrics {
                        Value::Array(metrics) => Ok(Self::Metrics(metrics)),
                        other => Err(RequestError(format!(
                            "`metrics` is {}, not an array",
                            kind(&other)
                        ))),
                    };
                }
                if let Some(n) = object.get("generate") {
                    return match n.as_u64() {
                        Some(n) if n as usize <= MAX_GENERATE => Ok(Self::Generate(n as usize)),
                        _ => Err(RequestError(format!(
                            "`generate` is {n}, not a count up to {MAX_GENERATE}"
                        ))),
                    };
                }
                if object.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event") {
                    return Ok(Self::Generate(scheduled));
                }
                Err(RequestError(
                    "an object without `metrics`, `generate` or a schedule's `detail-type`".into(),
                ))
            }
            other => Err(RequestError(format!("it is {}", kind(&other)))),
        }
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What became of one input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RecordStatus {
    /// In the topic.
    Delivered {
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
    },
    /// Not a valid metric: not produced.
    Rejected {
        /// What is wrong.
        error: String,
    },
    /// Not deliverable to the topic; in the dead-letter topic with the reason.
    DeadLettered {
        /// Why it could not be delivered.
        reason: String,
        /// Where it went.
        dead_letter_topic: String,
    },
    /// Neither delivered nor dead-lettered: the invocation fails and the caller must retry.
    NotDelivered {
        /// Why.
        reason: String,
    },
}

/// The outcome of one input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordResult {
    /// Position in the request.
    pub index: usize,
    /// The event id produced (given or derived).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// What happened.
    #[serde(flatten)]
    pub status: RecordStatus,
}

/// The producer's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProduceReport {
    /// The topic.
    pub topic: String,
    /// Delivered to the topic.
    pub delivered: usize,
    /// Rejected as invalid.
    pub rejected: usize,
    /// Sent to the dead-letter topic instead.
    pub dead_lettered: usize,
    /// Neither: the caller must retry.
    pub not_delivered: usize,
    /// Wall time, milliseconds.
    pub duration_ms: u64,
    /// One entry per input, in order.
    pub results: Vec<RecordResult>,
}

impl ProduceReport {
    /// True when every valid input is delivered or dead-lettered.
    pub fn all_accounted_for(&self) -> bool {
        self.not_delivered == 0
    }
}

/// Where the producer writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerSettings {
    /// The metrics topic.
    pub topic: String,
    /// Its dead-letter topic.
    pub dead_letter_topic: String,
}

/// A metric ready to produce.
struct Outgoing {
    index: usize,
    event_id: String,
    key: String,
    payload: Vec<u8>,
}

/// Produces metric events; create one per container and reuse it.
pub struct MetricProducer {
    producer: FutureProducer<KafkaClientContext>,
    settings: ProducerSettings,
    encoder: MetricEncoder,
}

impl MetricProducer {
    /// A producer of JSON metrics over an idempotent rdkafka producer (see
    /// [`kafka_esm::kafka::KafkaSettings::create_producer`]).
    pub fn new(producer: FutureProducer<KafkaClientContext>, settings: ProducerSettings) -> Self {
        Self {
            producer,
            settings,
            encoder: MetricEncoder::json(),
        }
    }

    /// Writes metrics with `encoder` (Avro or Protobuf, framed with their schema's id) instead of
    /// as JSON.
    pub fn with_encoder(mut self, encoder: MetricEncoder) -> Self {
        self.encoder = encoder;
        self
    }

    /// How metrics are written.
    pub fn encoder(&self) -> &MetricEncoder {
        &self.encoder
    }

    /// The settings.
    pub fn settings(&self) -> &ProducerSettings {
        &self.settings
    }

    /// Validates and produces `inputs`, waiting for every delivery report until `deadline`.
    pub async fn produce(&self, inputs: Vec<Value>, deadline: &Deadline) -> ProduceReport {
        let started = std::time::Instant::now();
        let mut results: Vec<Option<RecordResult>> = vec![None; inputs.len()];
        let mut outgoing = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.into_iter().enumerate() {
            match prepare(input, &self.encoder) {
                Ok((metric, payload)) => outgoing.push(Outgoing {
                    index,
                    event_id: metric.event_id.clone().unwrap_or_default(),
                    key: metric.alert_key(),
                    payload,
                }),
                Err(error) => {
                    results[index] = Some(RecordResult {
                        index,
                        event_id: None,
                        status: RecordStatus::Rejected { error },
                    })
                }
            }
        }
        // Enqueue everything first (librdkafka batches), then collect the delivery reports.
        let topic = self.settings.topic.as_str();
        let mut pending = Vec::with_capacity(outgoing.len());
        for item in &outgoing {
            let record = FutureRecord::to(topic)
                .key(&item.key)
                .payload(&item.payload);
            pending.push(self.enqueue(record, deadline).await);
        }
        let reports = join_all(pending.into_iter().map(|enqueued| async move {
            match enqueued {
                Err(reason) => Err(Failure::Refused(reason)),
                Ok(future) => match tokio::time::timeout(deadline.remaining(), future).await {
                    Err(_) => Err(Failure::NoReport),
                    Ok(Err(_canceled)) => Err(Failure::Refused(
                        "the producer shut down before reporting".into(),
                    )),
                    Ok(Ok(Ok(delivery))) => Ok((delivery.partition, delivery.offset)),
                    Ok(Ok(Err((error, _message)))) => Err(Failure::Refused(error.to_string())),
                },
            }
        }))
        .await;
        // What librdkafka gave up on goes to the dead-letter topic, concurrently.
        let dead_letters =
            join_all(
                outgoing
                    .iter()
                    .zip(&reports)
                    .filter_map(|(item, report)| match report {
                        Err(Failure::Refused(reason)) => Some(async move {
                            (item.index, self.dead_letter(item, reason, deadline).await)
                        }),
                        _ => None,
                    }),
            )
            .await;
        for (item, report) in outgoing.iter().zip(reports) {
            let status = match report {
                Ok((partition, offset)) => RecordStatus::Delivered { partition, offset },
                Err(Failure::NoReport) => RecordStatus::NotDelivered {
                    reason: "no delivery report before the deadline; it may still land, and the caller's retry may then duplicate it (consumers deduplicate by event_id)".into(),
                },
                Err(Failure::Refused(_)) => continue,
            };
            results[item.index] = Some(RecordResult {
                index: item.index,
                event_id: Some(item.event_id.clone()),
                status,
            });
        }
        for (index, status) in dead_letters {
            let event_id = outgoing
                .iter()
                .find(|o| o.index == index)
                .map(|o| o.event_id.clone());
            results[index] = Some(RecordResult {
                index,
                event_id,
                status,
            });
        }
        let results: Vec<RecordResult> = results
            .into_iter()
            .map(|r| r.expect("every input has a result"))
            .collect();
        let count = |f: fn(&RecordStatus) -> bool| results.iter().filter(|r| f(&r.status)).count();
        let report = ProduceReport {
            topic: self.settings.topic.clone(),
            delivered: count(|s| matches!(s, RecordStatus::Delivered { .. })),
            rejected: count(|s| matches!(s, RecordStatus::Rejected { .. })),
            dead_lettered: count(|s| matches!(s, RecordStatus::DeadLettered { .. })),
            not_delivered: count(|s| matches!(s, RecordStatus::NotDelivered { .. })),
            duration_ms: started.elapsed().as_millis() as u64,
            results,
        };
        tracing::info!(
            target: "esm::produce",
            topic = report.topic.as_str(),
            delivered = report.delivered,
            rejected = report.rejected,
            dead_lettered = report.dead_lettered,
            not_delivered = report.not_delivered,
            duration_ms = report.duration_ms,
            "produce"
        );
        report
    }

    /// Hands a record to librdkafka, waiting while its queue is full (until the deadline).
    async fn enqueue<'a>(
        &self,
        mut record: FutureRecord<'a, String, Vec<u8>>,
        deadline: &Deadline,
    ) -> Result<rdkafka::producer::DeliveryFuture, String> {
        loop {
            match self.producer.send_result(record) {
                Ok(future) => return Ok(future),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    if deadline.expired() {
                        return Err("librdkafka's queue stayed full until the deadline".into());
                    }
                    record = back;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((error, _)) => return Err(error.to_string()),
            }
        }
    }

    async fn dead_letter(
        &self,
        item: &Outgoing,
        reason: &str,
        deadline: &Deadline,
    ) -> RecordStatus {
        let dead_letter_topic = self.settings.dead_letter_topic.as_str();
        let headers = OwnedHeaders::new()
            .insert(KafkaHeader {
                key: headers::ERROR,
                value: Some(reason),
            })
            .insert(KafkaHeader {
                key: headers::TOPIC,
                value: Some(&self.settings.topic),
            })
            .insert(KafkaHeader {
                key: headers::EVENT_ID,
                value: Some(&item.event_id),
            });
        let record = FutureRecord::to(dead_letter_topic)
            .key(&item.key)
            .payload(&item.payload)
            .headers(headers);
        let sent = tokio::time::timeout(
            deadline.remaining(),
            self.producer
                .send(record, rdkafka::util::Timeout::After(deadline.remaining())),
        )
        .await;
        match sent {
            Ok(Ok(_)) => RecordStatus::DeadLettered {
                reason: reason.to_owned(),
                dead_letter_topic: dead_letter_topic.to_owned(),
            },
            Ok(Err((error, _))) => RecordStatus::NotDelivered {
                reason: format!(
                    "{reason}; the dead-letter topic {dead_letter_topic} failed too: {error}"
                ),
            },
            Err(_) => RecordStatus::NotDelivered {
                reason: format!(
                    "{reason}; the dead-letter topic {dead_letter_topic} did not acknowledge before the deadline"
                ),
            },
        }
    }
}

enum Failure {
    /// librdkafka refused or gave up on the record: it was not written.
    Refused(String),
    /// No report before the deadline: it may still be written.
    NoReport,
}

/// Validates one input; fills in a missing `event_id`; returns the payload to produce.
fn prepare(input: Value, encoder: &MetricEncoder) -> Result<(MetricEvent, Vec<u8>), String> {
    let mut metric: MetricEvent =
        serde_json::from_value(input).map_err(|e| format!("not a metric event: {e}"))?;
    metric
        .validate()
        .map_err(|e| format!("not a metric event: {e}"))?;
    if metric.event_id.is_none() {
        metric.event_id = Some(format!(
            "{}:{}:{}:{}",
            metric.database_type,
            metric.instance_id,
            metric.metric_name,
            metric.timestamp.timestamp_millis()
        ));
    }
    let payload = encoder
        .encode(&metric)
        .map_err(|e| format!("cannot serialize: {e}"))?;
    Ok((metric, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_every_request_shape() {
        let m = json!({"timestamp": "2026-11-22T10:00:00Z"});
        assert_eq!(
            ProducerRequest::from_json(json!([m.clone()]), 5).unwrap(),
            ProducerRequest::Metrics(vec![m.clone()])
        );
        assert_eq!(
            ProducerRequest::from_json(json!({"metrics": [m.clone()]}), 5).unwrap(),
            ProducerRequest::Metrics(vec![m])
        );
        assert_eq!(
            ProducerRequest::from_json(json!({"generate": 7}), 5).unwrap(),
            ProducerRequest::Generate(7)
        );
        let schedule = json!({"version": "0", "detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
        assert_eq!(
            ProducerRequest::from_json(schedule, 5).unwrap(),
            ProducerRequest::Generate(5)
        );
        for bad in [
            json!("x"),
            json!({"metrics": {}}),
            json!({"generate": -1}),
            json!({"generate": 1_000_000}),
            json!({"other": 1}),
        ] {
            let error = ProducerRequest::from_json(bad.clone(), 5)
                .unwrap_err()
                .to_string();
            assert!(error.contains("not a producer request"), "{bad}: {error}");
        }
    }

    #[test]
    fn validation_names_the_problem_and_derives_an_event_id() {
        let (metric, payload) = prepare(
            json!({
                "timestamp": "2026-11-22T10:00:00Z", "database_type": "postgres", "instance_id": "pg-1",
                "metric_name": "cpu_usage_percent", "value": 91.5
            }),
            &MetricEncoder::json(),
        )
        .unwrap();
        assert_eq!(
            metric.event_id.as_deref(),
            Some("postgres:pg-1:cpu_usage_percent:1795341600000")
        );
        assert!(String::from_utf8(payload).unwrap().contains("\"event_id\""));
        let error = prepare(
            json!({"timestamp": "2026-11-22T10:00:00Z", "database_type": "p"}),
            &MetricEncoder::json(),
        )
        .unwrap_err();
        assert!(error.contains("missing field"), "{error}");
    }
}
