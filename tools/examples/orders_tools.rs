//! A team's own tools for its own handler: `replay`, `poll`, `redrive` and `lag` in one call,
//! `kafka_esm_tools::cli::run(factory)`.
//!
//! The handler confirms each order (a JSON object with an `id`) by publishing it to
//! `orders.confirmed` through the sink the tool hands over: files in the state directory for a
//! replay on its defaults, the brokers otherwise. An order without an `id` is dead-lettered.
//!
//! `cargo run --example orders_tools -- replay my-events/ --fresh`, or
//! `cargo run --example orders_tools -- poll --topics orders --brokers 127.0.0.1:9092`.
//! (`tools/tests/any_handler.rs` runs the same commands with the same kind of handler.)

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kafka_esm::sink::publish_pipelined;
use kafka_esm::{
    ConsumerConfig, DeserializeError, HandlerError, InvocationInfo, KafkaRecord, MessageSink,
    OutboundMessage, RecordHandler,
};

struct Orders {
    out: Arc<dyn MessageSink>,
    timeout: Duration,
}

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
        order: &Self::Event,
        invocation: &InvocationInfo,
    ) -> Result<(), HandlerError> {
        let id = order
            .get("id")
            .and_then(|id| id.as_str())
            .ok_or_else(|| HandlerError::permanent("no id"))?;
        let message = OutboundMessage {
            topic: "orders.confirmed".into(),
            key: Some(id.as_bytes().to_vec()),
            value: Some(order.to_string().into_bytes()),
            headers: Vec::new(),
        };
        let timeout = self.timeout.min(invocation.deadline.remaining());
        publish_pipelined(&*self.out, message, timeout)
            .await
            .map_err(HandlerError::transient)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    kafka_esm_tools::cli::run(|config: &ConsumerConfig, sink: Arc<dyn MessageSink>| {
        Ok::<_, String>(Orders {
            out: sink,
            timeout: config.processor.publish_timeout,
        })
    })
    .await
}
