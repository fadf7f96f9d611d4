//! Wiring of the reference app from its configuration: the same for the Lambda and for the tools.

use std::sync::Arc;

use kafka_esm::config::ConsumerConfig;
use kafka_esm::consumer::Consumer;
use kafka_esm::format::SchemaCache;
use kafka_esm::idempotency::IdempotencyStore;
use kafka_esm::processor::Processor;
use kafka_esm::sink::MessageSink;

use crate::config::{AlertSettings, TelemetryConfig};
use crate::{MetricDecoder, MetricFormat, TelemetryHandler};

/// The telemetry handler, reading JSON metrics and publishing its alerts to `alerts_sink`; give it
/// another format with [`TelemetryHandler::with_metrics`] and [`metric_decoder`].
pub fn telemetry_handler(
    config: &ConsumerConfig,
    alerts: &AlertSettings,
    alerts_sink: Arc<dyn MessageSink>,
) -> TelemetryHandler {
    TelemetryHandler::new(
        alerts.rules.clone(),
        alerts.topic.clone(),
        alerts_sink,
        config.processor.publish_timeout,
    )
}

/// How the handler reads metrics in `format`: with `schemas` when given (the Lambda opens the
/// source at start-up), else with the source the configuration names, set up on first use.
pub fn metric_decoder(
    format: MetricFormat,
    config: &ConsumerConfig,
    schemas: Option<Arc<SchemaCache>>,
) -> MetricDecoder {
    let schemas = schemas.or_else(|| config.schemas.as_ref().map(|s| s.open_lazily()));
    MetricDecoder::new(format, schemas)
}

/// The telemetry handler as the tools build handlers (`kafka_esm_tools::HandlerFactory`): a
/// function of the consumer's configuration and the sink the tool publishes to (its alerts go
/// there), with these alert settings, reading metrics in `format`.
pub fn telemetry_factory(
    alerts: AlertSettings,
    format: MetricFormat,
) -> impl Fn(&ConsumerConfig, Arc<dyn MessageSink>) -> Result<TelemetryHandler, String>
+ Send
+ Sync
+ 'static {
    move |config: &ConsumerConfig, sink: Arc<dyn MessageSink>| {
        Ok(telemetry_handler(config, &alerts, sink)
            .with_metrics(metric_decoder(format, config, None)))
    }
}

/// The telemetry consumer over a store and sinks for dead letters and alerts.
pub fn telemetry_consumer(
    config: &TelemetryConfig,
    store: Arc<dyn IdempotencyStore>,
    dead_letters: Arc<dyn MessageSink>,
    alerts_sink: Arc<dyn MessageSink>,
) -> Consumer<TelemetryHandler> {
    let consumer = &config.consumer;
    let handler = telemetry_handler(consumer, &config.alerts, alerts_sink)
        .with_metrics(metric_decoder(config.metric_format, consumer, None));
    let processor = Processor::new(handler, store, dead_letters, consumer.processor.clone());
    Consumer::new(processor, consumer.partial_batch_response)
}
