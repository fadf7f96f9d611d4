//! A team's own handler as a Lambda function, in one call: `kafka_esm::lambda::run(Orders)`.
//!
//! The program of issue 13, unchanged: it depends on `kafka-esm`, `async-trait`, `serde_json` and
//! `tokio` only. Every record's value must be a JSON object with an `id`; a record that is not JSON
//! or has no `id` is dead-lettered. Everything else comes from the environment: with
//! `KAFKA_BOOTSTRAP_SERVERS` set and the other variables at their defaults, it answers an event of
//! two valid records with `{"batchItemFailures":[]}` (kafka-esm/tests/lambda_entry.rs runs it under
//! a stand-in Runtime API, and builds it as its own crate outside the workspace). To deploy it with
//! `template.yaml`, make it the `consumer` binary of your crate (the deploy docs say how).

use async_trait::async_trait;
use kafka_esm::{DeserializeError, HandlerError, InvocationInfo, KafkaRecord, RecordHandler};
struct Orders;
#[async_trait]
impl RecordHandler for Orders {
    type Event = serde_json::Value;
    fn deserialize(&self, record: &KafkaRecord) -> Result<Self::Event, DeserializeError> {
        serde_json::from_slice(record.value.as_deref().unwrap_or_default())
            .map_err(|e| DeserializeError::new(e.to_string()))
    }
    async fn handle(
        &self,
        _: &KafkaRecord,
        event: &Self::Event,
        _: &InvocationInfo,
    ) -> Result<(), HandlerError> {
        match event.get("id") {
            Some(_) => Ok(()),
            None => Err(HandlerError::Permanent("no id".into())),
        }
    }
}
#[tokio::main]
async fn main() -> Result<(), kafka_esm::lambda::Error> {
    kafka_esm::lambda::run(Orders).await
}
