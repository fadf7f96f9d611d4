//! Where messages go: the dead-letter topic and the reference app's alerts both publish through a
//! [`MessageSink`]. On AWS that is Kafka ([`KafkaSink`]); locally a directory of JSON-lines files
//! ([`DirectorySink`]); in tests and benchmarks memory ([`MemorySink`]).

mod directory;
mod kafka;
mod memory;

use std::time::Duration;

use async_trait::async_trait;

pub use directory::{DirectorySink, FileMessage};
pub use kafka::KafkaSink;
pub use memory::MemorySink;

use crate::record::Header;

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// Destination topic.
    pub topic: String,
    /// Key bytes, or none.
    pub key: Option<Vec<u8>>,
    /// Value bytes, or none (a tombstone).
    pub value: Option<Vec<u8>>,
    /// Headers in order.
    pub headers: Vec<Header>,
}

/// Where a published message landed, when the sink knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delivery {
    /// Partition, for Kafka.
    pub partition: Option<i32>,
    /// Offset, for Kafka.
    pub offset: Option<i64>,
}

/// A message could not be published. The caller keeps the record unfinished: nothing is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not publish to `{topic}`: {message}")]
pub struct SinkError {
    /// The destination topic.
    pub topic: String,
    /// What went wrong.
    pub message: String,
}

/// Publishes messages, confirming each one before it returns.
#[async_trait]
pub trait MessageSink: Send + Sync {
    /// Publishes `message` and waits for its definitive outcome: acknowledged, or failed for good
    /// (never abandoned in flight, which could deliver it after the caller gave up). `timeout`
    /// bounds the wait; a Kafka sink's own delivery timeout (`message.timeout.ms`, set from the
    /// publish timeout) bounds the acknowledgement.
    async fn publish(
        &self,
        message: OutboundMessage,
        timeout: Duration,
    ) -> Result<Delivery, SinkError>;
}
