//! Wiring of the reference app from its configuration: the same for the Lambda and for `esm replay`.

use std::sync::Arc;

use crate::TelemetryHandler;
use crate::config::{ConsumerConfig, StoreChoice};
use kafka_esm::consumer::Consumer;
use kafka_esm::idempotency::{
    DynamoDbStore, IdempotencyStore, LocalStore, MemoryStore, StoreError,
};
use kafka_esm::processor::Processor;
use kafka_esm::sink::MessageSink;

/// The telemetry consumer over a store and sinks for dead letters and alerts.
pub fn telemetry_consumer(
    config: &ConsumerConfig,
    store: Arc<dyn IdempotencyStore>,
    dead_letters: Arc<dyn MessageSink>,
    alerts: Arc<dyn MessageSink>,
) -> Consumer<TelemetryHandler> {
    let handler = TelemetryHandler::new(
        config.alert_rules.clone(),
        config.alerts_topic.clone(),
        alerts,
        config.processor.publish_timeout,
    );
    let processor = Processor::new(handler, store, dead_letters, config.processor.clone());
    Consumer::new(processor, config.partial_batch_response)
}

/// The store the configuration names. A DynamoDB client takes its region and credentials from the
/// usual AWS sources (the Lambda's role); see [`open_store_with`] to pass an AWS configuration.
pub async fn open_store(choice: &StoreChoice) -> Result<Arc<dyn IdempotencyStore>, StoreError> {
    Ok(match choice {
        StoreChoice::Memory => Arc::new(MemoryStore::new()),
        StoreChoice::Local(path) => Arc::new(LocalStore::open(path)?),
        StoreChoice::DynamoDb { table, claims } => Arc::new(
            DynamoDbStore::from_env(table.clone())
                .await
                .with_claims(*claims),
        ),
    })
}

/// As [`open_store`], with a DynamoDB client built from `aws` (a region or endpoint set by a tool).
pub fn open_store_with(
    choice: &StoreChoice,
    aws: &aws_config::SdkConfig,
) -> Result<Arc<dyn IdempotencyStore>, StoreError> {
    Ok(match choice {
        StoreChoice::Memory => Arc::new(MemoryStore::new()),
        StoreChoice::Local(path) => Arc::new(LocalStore::open(path)?),
        StoreChoice::DynamoDb { table, claims } => Arc::new(
            DynamoDbStore::new(aws_sdk_dynamodb::Client::new(aws), table.clone())
                .with_claims(*claims),
        ),
    })
}
