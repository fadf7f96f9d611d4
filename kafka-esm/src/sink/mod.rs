//! Where messages go: the dead-letter topic and the reference app's alerts both publish through a
//! [`MessageSink`]. On AWS that is Kafka ([`KafkaSink`]); locally a directory of JSON-lines files
//! ([`DirectorySink`]); in tests and benchmarks memory ([`MemorySink`]).
//!
//! A message may carry a stable id ([`MESSAGE_ID_HEADER`]): the same for every attempt at the same
//! side effect. After an interrupted attempt, [`MessageSink::find_published`] says which ids are
//! already in the topic, so the retry publishes only what is missing.
//!
//! A handler that publishes as its side effect can pipeline: [`publish_pipelined`] queues a
//! message and returns at once, and the processor waits for the acknowledgements of a whole chunk
//! of records together, marking each record done only once its own messages are acknowledged.

mod directory;
mod kafka;
mod memory;
mod pipeline;
mod published;

use std::time::Duration;

use async_trait::async_trait;

pub use directory::{DirectorySink, FileMessage};
pub use kafka::KafkaSink;
pub use memory::MemorySink;
pub use pipeline::publish_pipelined;
pub(crate) use pipeline::{collecting_acks, settle};

use crate::record::Header;

/// The header naming a message's side effect: every attempt at it publishes the same id.
pub const MESSAGE_ID_HEADER: &str = "esm.message.id";

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

impl OutboundMessage {
    /// Names the message's side effect with `id` ([`MESSAGE_ID_HEADER`]).
    pub fn with_message_id(mut self, id: impl Into<String>) -> Self {
        self.headers
            .push(Header::new(MESSAGE_ID_HEADER, id.into().into_bytes()));
        self
    }

    /// The message's id, when it has one.
    pub fn message_id(&self) -> Option<&[u8]> {
        message_id(
            self.headers
                .iter()
                .map(|h| (h.name.as_str(), h.value.as_deref())),
        )
    }
}

/// The [`MESSAGE_ID_HEADER`] among `(name, value)` headers: the last one, since a message that
/// carries another's headers (a dead letter) appends its own id after them.
pub(crate) fn message_id<'a>(
    headers: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>,
) -> Option<&'a [u8]> {
    headers
        .filter(|(name, _)| *name == MESSAGE_ID_HEADER)
        .last()
        .and_then(|(_, value)| value)
}

/// When an interrupted attempt may have published (epoch ms, the publisher's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishWindow {
    /// Not before this.
    pub since_ms: u64,
    /// Not after this.
    pub until_ms: u64,
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
    /// The message is larger than the broker or the producer accepts (`MsgSizeTooLarge`): sending
    /// it again as it is can never work.
    pub too_large: bool,
}

impl SinkError {
    /// A failure to publish to `topic`.
    pub fn new(topic: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            message: message.into(),
            too_large: false,
        }
    }
}

/// The acknowledgement of a message handed to a sink: it resolves when the message is acknowledged
/// or has failed for good, and within the timeout given to [`MessageSink::send`]. Dropping it does
/// not withdraw the message.
pub type PendingAck = futures::future::BoxFuture<'static, Result<Delivery, SinkError>>;

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

    /// Hands `message` over and returns once it is queued, with its acknowledgement still to come:
    /// awaiting many of them together costs one wait instead of one per message. The order in which
    /// messages are sent is the order in which they are written per key. The default publishes
    /// and waits, so its acknowledgement is ready at once; [`KafkaSink`] returns as soon as
    /// librdkafka has the message.
    async fn send(
        &self,
        message: OutboundMessage,
        timeout: Duration,
    ) -> Result<PendingAck, SinkError> {
        let delivery = self.publish(message, timeout).await?;
        Ok(Box::pin(futures::future::ready(Ok(delivery))))
    }

    /// For each of `ids`, whether a message with that [`MESSAGE_ID_HEADER`] was published to
    /// `topic` during `window` (sinks that keep no time look through everything they hold). Asked
    /// after an interrupted attempt: an `Err` means the sink cannot tell, and the caller must not
    /// guess (it keeps the record for a later retry). `timeout` bounds the search.
    async fn find_published(
        &self,
        topic: &str,
        ids: &[&str],
        window: PublishWindow,
        timeout: Duration,
    ) -> Result<Vec<bool>, SinkError>;
}

impl std::fmt::Debug for dyn MessageSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MessageSink")
    }
}

/// For each of `ids`, whether it is among `found`.
pub(crate) fn mark_found<'a>(ids: &[&str], found: impl IntoIterator<Item = &'a [u8]>) -> Vec<bool> {
    let found: std::collections::HashSet<&[u8]> = found.into_iter().collect();
    ids.iter().map(|id| found.contains(id.as_bytes())).collect()
}
