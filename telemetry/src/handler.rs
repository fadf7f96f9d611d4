//! The telemetry handler: what a record means, and the alert it may publish.
//!
//! A value is a [`MetricEvent`], in JSON by default, or in Avro or Protobuf ([`MetricDecoder`]). Each event that breaks an [`AlertRule`] publishes an [`Alert`]
//! to the alerts topic, keyed `database_type:instance_id`: that publish is the side effect idempotency
//! protects. A value that is not a valid metric is poison; a tombstone is a delete marker and done.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::metric_format::MetricDecoder;
use crate::{AlertRule, MetricEvent};

use kafka_esm::handler::{DeserializeError, HandlerError, InvocationInfo, RecordHandler};
use kafka_esm::idempotency::Interrupted;
use kafka_esm::idempotency::keys::{business_key, coordinates_key};
use kafka_esm::record::{DecodedRecord, KafkaRecord};
use kafka_esm::sink::{self, MessageSink, OutboundMessage, PublishWindow};

/// The default alerts topic.
pub const DEFAULT_ALERTS_TOPIC: &str = "telemetry.alerts";
/// The default alert rules.
pub const DEFAULT_ALERT_RULES: &str = "cpu_usage_percent > 80";

/// A record of the metrics topic.
#[derive(Debug, Clone, PartialEq)]
pub enum TelemetryEvent {
    /// A metric.
    Metric(MetricEvent),
    /// A tombstone: nothing to do.
    Tombstone,
}

/// An alert, as published.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert<'a> {
    /// Stable across retries: the event's idempotency key and the rule's position.
    pub alert_id: String,
    /// The rule, as text.
    pub rule: String,
    /// The metric's business id, when it has one.
    pub event_id: Option<&'a str>,
    /// Database engine.
    pub database_type: &'a str,
    /// Instance.
    pub instance_id: &'a str,
    /// Metric name.
    pub metric_name: &'a str,
    /// Observed value.
    pub value: f64,
    /// The rule's threshold.
    pub threshold: f64,
    /// When the metric was taken (RFC 3339).
    pub metric_timestamp: String,
    /// Where the metric was read.
    pub source: AlertSource<'a>,
}

/// Where the metric behind an alert was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertSource<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Evaluates alert rules and publishes alerts.
pub struct TelemetryHandler {
    rules: Vec<AlertRule>,
    alerts_topic: String,
    alerts: Arc<dyn MessageSink>,
    publish_timeout: Duration,
    published: AtomicU64,
    metrics: MetricDecoder,
}

impl TelemetryHandler {
    /// A handler publishing to `alerts_topic` through `alerts`.
    pub fn new(
        rules: Vec<AlertRule>,
        alerts_topic: impl Into<String>,
        alerts: Arc<dyn MessageSink>,
        publish_timeout: Duration,
    ) -> Self {
        Self {
            rules,
            alerts_topic: alerts_topic.into(),
            alerts,
            publish_timeout,
            published: AtomicU64::new(0),
            metrics: MetricDecoder::json(),
        }
    }

    /// Reads metrics with `metrics` (Avro or Protobuf) instead of as JSON.
    pub fn with_metrics(mut self, metrics: MetricDecoder) -> Self {
        self.metrics = metrics;
        self
    }

    /// How metrics are read.
    pub fn metrics(&self) -> &MetricDecoder {
        &self.metrics
    }

    /// How many alerts this handler has published (handed to the sink: one whose acknowledgement
    /// fails is counted again when its record runs again).
    pub fn alerts_published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// The rules.
    pub fn rules(&self) -> &[AlertRule] {
        &self.rules
    }
}

#[async_trait]
impl RecordHandler for TelemetryHandler {
    type Event = TelemetryEvent;

    /// Fetches the schemas the chunk's records name (Avro behind a registry), concurrently and
    /// once per container, so that each record then decodes without waiting.
    async fn prepare_chunk(
        &self,
        records: &[DecodedRecord],
        _invocation: &InvocationInfo,
    ) -> Result<(), HandlerError> {
        self.metrics
            .prefetch(records.iter().filter_map(|slot| match slot {
                DecodedRecord::Record(record) => Some(record),
                DecodedRecord::Undecodable(_) => None,
            }))
            .await
            .map_err(|e| HandlerError::transient(e.to_string()))
    }

    fn deserialize(&self, record: &KafkaRecord) -> Result<TelemetryEvent, DeserializeError> {
        if record.is_tombstone() {
            return Ok(TelemetryEvent::Tombstone);
        }
        Ok(TelemetryEvent::Metric(self.metrics.decode(record)?))
    }

    fn idempotency_key(&self, event: &TelemetryEvent) -> Option<String> {
        match event {
            TelemetryEvent::Metric(m) => m.event_id.clone(),
            TelemetryEvent::Tombstone => None,
        }
    }

    async fn handle(
        &self,
        record: &KafkaRecord,
        event: &TelemetryEvent,
        invocation: &InvocationInfo,
    ) -> Result<(), HandlerError> {
        let alerts = self.alerts_for(record, event)?;
        self.publish(alerts, invocation).await
    }

    /// Publishes only the alerts the interrupted attempt did not: each alert's id is looked up in
    /// the alerts topic over the interrupted attempt's time.
    async fn resume(
        &self,
        record: &KafkaRecord,
        event: &TelemetryEvent,
        interrupted: &Interrupted,
        invocation: &InvocationInfo,
    ) -> Result<(), HandlerError> {
        let alerts = self.alerts_for(record, event)?;
        if alerts.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = alerts.iter().map(|(id, _)| id.as_str()).collect();
        let found = self
            .alerts
            .find_published(
                &self.alerts_topic,
                &ids,
                PublishWindow {
                    since_ms: interrupted.claimed_at_ms,
                    until_ms: interrupted.lock_until_ms,
                },
                self.publish_timeout.min(invocation.deadline.remaining()),
            )
            .await
            .map_err(|e| {
                HandlerError::transient(format!(
                    "cannot tell which alerts an interrupted attempt published ({e})"
                ))
            })?;
        let missing = alerts
            .into_iter()
            .zip(found)
            .filter(|(_, found)| !found)
            .map(|(alert, _)| alert)
            .collect();
        self.publish(missing, invocation).await
    }
}

impl TelemetryHandler {
    /// The alerts an event raises, each with its id (stable across attempts).
    fn alerts_for(
        &self,
        record: &KafkaRecord,
        event: &TelemetryEvent,
    ) -> Result<Vec<(String, OutboundMessage)>, HandlerError> {
        let TelemetryEvent::Metric(metric) = event else {
            return Ok(Vec::new());
        };
        let mut alerts = Vec::new();
        // The record's idempotency key (namespaced: a business id never names another record),
        // made only for a record that raises an alert.
        let mut identity: Option<String> = None;
        for (index, rule) in self.rules.iter().enumerate() {
            if !rule.matches(metric) {
                continue;
            }
            let identity = identity.get_or_insert_with(|| match &metric.event_id {
                Some(id) => business_key(id),
                None => coordinates_key(&record.topic, record.partition, record.offset),
            });
            let alert = Alert {
                alert_id: format!("{identity}#{index}"),
                rule: rule.to_string(),
                event_id: metric.event_id.as_deref(),
                database_type: &metric.database_type,
                instance_id: &metric.instance_id,
                metric_name: &metric.metric_name,
                value: metric.value,
                threshold: rule.threshold,
                metric_timestamp: metric.timestamp.to_rfc3339(),
                source: AlertSource {
                    topic: &record.topic,
                    partition: record.partition,
                    offset: record.offset,
                },
            };
            let message = OutboundMessage {
                topic: self.alerts_topic.clone(),
                key: Some(metric.alert_key().into_bytes()),
                value: Some(serde_json::to_vec(&alert).map_err(HandlerError::permanent)?),
                headers: Vec::new(),
            }
            .with_message_id(alert.alert_id.as_str());
            alerts.push((alert.alert_id, message));
        }
        Ok(alerts)
    }

    async fn publish(
        &self,
        alerts: Vec<(String, OutboundMessage)>,
        invocation: &InvocationInfo,
    ) -> Result<(), HandlerError> {
        // Queued now; the processor waits for the acknowledgements of the whole chunk together.
        for (_, message) in alerts {
            let timeout = self.publish_timeout.min(invocation.deadline.remaining());
            sink::publish_pipelined(&*self.alerts, message, timeout)
                .await
                .map_err(HandlerError::transient)?;
            self.published.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}
