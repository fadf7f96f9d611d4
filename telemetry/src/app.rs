//! Wiring of the reference app from its configuration: the same for the Lambda and for the tools.

use std::sync::Arc;

use kafka_esm::config::ConsumerConfig;
use kafka_esm::consumer::Consumer;
use kafka_esm::idempotency::IdempotencyStore;
use kafka_esm::processor::Processor;
use kafka_esm::sink::MessageSink;

use crate::TelemetryHandler;
use crate::config::{AlertSettings, TelemetryConfig};

/// The telemetry handler, publishing its alerts to `alerts_sink`.
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

/// The telemetry handler as the tools build handlers (`kafka_esm_tools::HandlerFactory`): a
/// function of the consumer's configuration and the sink the tool publishes to (its alerts go
/// there), with these alert settings.
pub fn telemetry_factory(
    alerts: AlertSettings,
) -> impl Fn(&ConsumerConfig, Arc<dyn MessageSink>) -> Result<TelemetryHandler, String>
+ Send
+ Sync
+ 'static {
    move |config: &ConsumerConfig, sink: Arc<dyn MessageSink>| {
        Ok(telemetry_handler(config, &alerts, sink))
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
    let handler = telemetry_handler(consumer, &config.alerts, alerts_sink);
    let processor = Processor::new(handler, store, dead_letters, consumer.processor.clone());
    Consumer::new(processor, consumer.partial_batch_response)
}
