//! How a tool gets the handler it runs: a [`HandlerFactory`].
//!
//! `esm replay`, `esm poll` (in process) and `esm redrive` build the consumer themselves, from the
//! Lambda's generic configuration ([`ConsumerConfig`]), an idempotency store, and a sink of their
//! own choosing for dead letters: files in the state directory for a replay on its defaults, the
//! brokers otherwise. A handler that publishes (the reference app's alerts) must publish through
//! that same sink, so it cannot be built before the tool: the tool asks the factory for it, handing
//! over the configuration and the sink.
//!
//! Any `Fn(&ConsumerConfig, Arc<dyn MessageSink>) -> Result<H, String>` is a factory. A handler with
//! settings of its own (read from the environment at start-up, with the consumer's) implements the
//! trait on a type of its own and overrides [`HandlerFactory::read_settings`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use kafka_esm::config::{ConfigError, ConsumerConfig};
use kafka_esm::env::EnvReader;
use kafka_esm::handler::RecordHandler;
use kafka_esm::sink::{
    Delivery, MessageSink, OutboundMessage, PendingAck, PublishWindow, SinkError,
};

/// Builds the handler a tool runs.
///
/// ```
/// use std::sync::Arc;
/// use kafka_esm::config::ConsumerConfig;
/// use kafka_esm::sink::MessageSink;
/// # use async_trait::async_trait;
/// # use kafka_esm::handler::{DeserializeError, HandlerError, InvocationInfo, RecordHandler};
/// # use kafka_esm::record::KafkaRecord;
/// # struct Orders { out: Arc<dyn MessageSink> }
/// # #[async_trait]
/// # impl RecordHandler for Orders {
/// #     type Event = ();
/// #     fn deserialize(&self, _: &KafkaRecord) -> Result<(), DeserializeError> { Ok(()) }
/// #     async fn handle(&self, _: &KafkaRecord, _: &(), _: &InvocationInfo) -> Result<(), HandlerError> { Ok(()) }
/// # }
/// // A closure is a factory: the handler publishes through the tool's sink.
/// let factory = |_: &ConsumerConfig, sink: Arc<dyn MessageSink>| Ok::<_, String>(Orders { out: sink });
/// # fn is_factory(_: impl kafka_esm_tools::HandlerFactory) {}
/// # is_factory(factory);
/// ```
pub trait HandlerFactory: Send + Sync {
    /// The handler it builds.
    type Handler: RecordHandler + 'static;

    /// Reads the handler's own settings through `env`, after the consumer's, so that every problem
    /// of both is reported at once at start-up ([`EnvReader::problem`]; a wrong value leaves a
    /// default in its place). Called once, before [`Self::build`]. The default reads nothing.
    fn read_settings(&mut self, env: &mut EnvReader<'_>) {
        let _ = env;
    }

    /// What the handler's messages are called in the tools' human output (`esm replay`'s
    /// `<name> published: N`): `alerts` for the reference app. The default is `messages`.
    fn messages_name(&self) -> &str {
        "messages"
    }

    /// The handler, over `config` (the Lambda's generic configuration, as the tool read it) and
    /// `sink`, where the handler publishes: the tool's own (files, or the brokers), the one its dead
    /// letters go to. A tool may build several (one per cluster `esm redrive` publishes to). An
    /// `Err` stops the tool with that message.
    fn build(
        &self,
        config: &ConsumerConfig,
        sink: Arc<dyn MessageSink>,
    ) -> Result<Self::Handler, String>;
}

impl<F, H> HandlerFactory for F
where
    F: Fn(&ConsumerConfig, Arc<dyn MessageSink>) -> Result<H, String> + Send + Sync,
    H: RecordHandler + 'static,
{
    type Handler = H;

    fn build(&self, config: &ConsumerConfig, sink: Arc<dyn MessageSink>) -> Result<H, String> {
        self(config, sink)
    }
}

/// The consumer's configuration read through `lookup` (the process environment for the tools),
/// then the handler's own settings ([`HandlerFactory::read_settings`]) through the same reader:
/// every problem of both at once, one line each.
pub fn read_config<F: HandlerFactory>(
    lookup: &dyn Fn(&str) -> Option<String>,
    factory: &mut F,
) -> Result<ConsumerConfig, ConfigError> {
    let mut env = EnvReader::new(lookup);
    let config = ConsumerConfig::read(&mut env);
    factory.read_settings(&mut env);
    ConfigError::from_reader(env, config)
}

/// Passes every call to the sink it wraps, and counts per topic the messages handed over (queued
/// by `send`, or acknowledged by `publish`), as the reference app counts its alerts: a message
/// whose acknowledgement fails later is counted again when its record runs again.
pub(crate) struct CountingSink {
    inner: Arc<dyn MessageSink>,
    counts: Mutex<BTreeMap<String, u64>>,
}

impl CountingSink {
    /// Counts what goes through to `inner`.
    pub(crate) fn new(inner: Arc<dyn MessageSink>) -> Self {
        Self {
            inner,
            counts: Mutex::default(),
        }
    }

    /// Messages handed over so far, per topic.
    pub(crate) fn counts(&self) -> BTreeMap<String, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn count(&self, topic: String) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(topic)
            .or_default() += 1;
    }
}

#[async_trait]
impl MessageSink for CountingSink {
    async fn publish(
        &self,
        message: OutboundMessage,
        timeout: Duration,
    ) -> Result<Delivery, SinkError> {
        let topic = message.topic.clone();
        let delivery = self.inner.publish(message, timeout).await?;
        self.count(topic);
        Ok(delivery)
    }

    async fn send(
        &self,
        message: OutboundMessage,
        timeout: Duration,
    ) -> Result<PendingAck, SinkError> {
        let topic = message.topic.clone();
        let ack = self.inner.send(message, timeout).await?;
        self.count(topic);
        Ok(ack)
    }

    async fn find_published(
        &self,
        topic: &str,
        ids: &[&str],
        window: PublishWindow,
        timeout: Duration,
    ) -> Result<Vec<bool>, SinkError> {
        self.inner.find_published(topic, ids, window, timeout).await
    }
}

/// What the handler published since `before`, per topic (topics with none left out).
pub(crate) fn published_since(
    before: &BTreeMap<String, u64>,
    now: BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    now.into_iter()
        .map(|(topic, n)| {
            let since = n - before.get(&topic).copied().unwrap_or(0);
            (topic, since)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_esm::sink::MemorySink;

    fn message(topic: &str) -> OutboundMessage {
        OutboundMessage {
            topic: topic.into(),
            key: None,
            value: Some(b"v".to_vec()),
            headers: Vec::new(),
        }
    }

    #[tokio::test]
    async fn counts_what_goes_through_per_topic_and_not_what_fails() {
        let inner = Arc::new(MemorySink::new());
        let sink = CountingSink::new(inner.clone());
        let timeout = Duration::from_secs(1);
        sink.publish(message("a"), timeout).await.unwrap();
        let ack = sink.send(message("b"), timeout).await.unwrap();
        ack.await.unwrap();
        sink.send(message("b"), timeout)
            .await
            .unwrap()
            .await
            .unwrap();
        let before = sink.counts();
        assert_eq!(before, BTreeMap::from([("a".into(), 1), ("b".into(), 2)]));
        inner.fail_next(1);
        assert!(sink.publish(message("a"), timeout).await.is_err());
        sink.publish(message("c"), timeout).await.unwrap();
        assert_eq!(
            published_since(&before, sink.counts()),
            BTreeMap::from([("c".into(), 1)])
        );
        assert_eq!(inner.len(), 4, "everything reached the wrapped sink");
    }
}
