//! Your own records: implement `RecordHandler` and run it through the same consumer.
//!
//! `cargo run --example custom_handler` processes a small batch of order events twice and shows
//! that the second run repeats no side effect.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use kafka_esm::consumer::Consumer;
use kafka_esm::encode::{Source, encode_event};
use kafka_esm::format::{Json, ValueFormat};
use kafka_esm::handler::{DeserializeError, HandlerError, InvocationInfo, RecordHandler};
use kafka_esm::idempotency::MemoryStore;
use kafka_esm::processor::{Processor, ProcessorSettings};
use kafka_esm::record::KafkaRecord;
use kafka_esm::retry::Deadline;
use kafka_esm::sink::MemorySink;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct OrderPlaced {
    order_id: String,
    amount_cents: u64,
}

#[derive(Default)]
struct ChargeCards {
    charged: AtomicU32,
}

#[async_trait]
impl RecordHandler for ChargeCards {
    type Event = OrderPlaced;

    fn deserialize(&self, record: &KafkaRecord) -> Result<OrderPlaced, DeserializeError> {
        Json::new().decode(record)
    }

    // Two copies of one order at different offsets are one charge.
    fn idempotency_key(&self, event: &OrderPlaced) -> Option<String> {
        Some(format!("order/{}", event.order_id))
    }

    async fn handle(
        &self,
        _record: &KafkaRecord,
        event: &OrderPlaced,
        _invocation: &InvocationInfo,
    ) -> Result<(), HandlerError> {
        if event.amount_cents == 0 {
            return Err(HandlerError::permanent(
                "an order of 0 cents cannot be charged",
            ));
        }
        // A payment API call would go here; a timeout from it is `HandlerError::transient`.
        self.charged.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn order(offset: i64, json: &str) -> KafkaRecord {
    let mut record = KafkaRecord::new("orders", 0, offset);
    record.value = Some(json.as_bytes().to_vec());
    record
}

#[tokio::main]
async fn main() {
    let handler = Arc::new(ChargeCards::default());
    let dead_letters = Arc::new(MemorySink::new());
    let processor = Processor::new(
        handler.clone(),
        Arc::new(MemoryStore::new()),
        dead_letters.clone(),
        ProcessorSettings::default(),
    );
    let consumer = Consumer::new(processor, true);
    let event = encode_event(
        &Source::SelfManaged,
        "localhost:9092",
        &[
            order(1, r#"{"order_id":"A-1","amount_cents":1299}"#),
            order(2, r#"{"order_id":"A-1","amount_cents":1299}"#),
            order(3, r#"{"order_id":"A-2","amount_cents":0}"#),
            order(4, "not an order"),
        ],
    );
    for attempt in 1..=2 {
        let invocation = InvocationInfo::new(
            format!("example-{attempt}"),
            "orders-consumer",
            Deadline::after(Duration::from_secs(30), Duration::from_secs(1)),
        );
        let result = consumer.invoke(&event, &invocation).await;
        let counts = result.report.counts();
        println!(
            "run {attempt}: processed {}, duplicates {}, dead-lettered {}, answer {}",
            counts.processed,
            counts.duplicates,
            counts.dead_lettered,
            result.answer_json()
        );
    }
    println!(
        "cards charged: {} (one order, charged once); dead letters: {}",
        handler.charged.load(Ordering::Relaxed),
        dead_letters.len()
    );
}
