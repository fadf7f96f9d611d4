//! A sink that produces to Kafka with an idempotent rdkafka producer, and reads its topics back to
//! find what an interrupted attempt published.

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use super::published::PublishedIndex;
use super::{Delivery, MessageSink, OutboundMessage, PublishWindow, SinkError};
use crate::kafka::{KafkaClientContext, KafkaSettings, KafkaSetupError};

/// Produces each message and waits for the broker's acknowledgement (`acks=all`).
pub struct KafkaSink {
    producer: FutureProducer<KafkaClientContext>,
    published: PublishedIndex,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink").finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// A sink with a new idempotent producer for these settings (SASL secrets already resolved).
    /// Each publish waits for its acknowledgement, so nothing is gained by lingering: the producer
    /// sends at once (`linger.ms=0`, unless `KAFKA_PROPERTIES` says otherwise).
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaSetupError> {
        let mut config = settings.producer_config()?;
        if !settings.properties.iter().any(|(k, _)| k == "linger.ms") {
            config.set("linger.ms", "0");
        }
        Ok(Self {
            producer: config.create_with_context(settings.context())?,
            published: PublishedIndex::new(settings.clone()),
        })
    }

    /// Messages handed to librdkafka and not yet acknowledged or failed.
    pub fn in_flight_count(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// Waits up to `timeout` for queued messages to be delivered.
    pub fn flush(&self, timeout: Duration) -> Result<(), rdkafka::error::KafkaError> {
        self.producer.flush(Timeout::After(timeout))
    }
}

#[async_trait]
impl MessageSink for KafkaSink {
    async fn publish(
        &self,
        message: OutboundMessage,
        timeout: Duration,
    ) -> Result<Delivery, SinkError> {
        let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
        for header in &message.headers {
            headers = headers.insert(KafkaHeader {
                key: &header.name,
                value: header.value.as_deref(),
            });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(&message.topic).headers(headers);
        if let Some(key) = message.key.as_deref() {
            record = record.key(key);
        }
        if let Some(value) = message.value.as_deref() {
            record = record.payload(value);
        }
        // Wait for librdkafka's definitive delivery report, never less: a message abandoned while in
        // flight would still be delivered later, and the retry of its record would publish it
        // twice. The producer's `message.timeout.ms` (the publish timeout) bounds the wait;
        // `timeout` bounds only the wait for room in a full queue.
        let sent = self.producer.send(record, Timeout::After(timeout)).await;
        match sent {
            Ok(delivery) => Ok(Delivery {
                partition: Some(delivery.partition),
                offset: Some(delivery.offset),
            }),
            Err((error, _)) => Err(SinkError {
                topic: message.topic.clone(),
                message: error.to_string(),
            }),
        }
    }

    async fn find_published(
        &self,
        topic: &str,
        ids: &[&str],
        window: PublishWindow,
        timeout: Duration,
    ) -> Result<Vec<bool>, SinkError> {
        self.published
            .find(topic, ids, window, timeout)
            .await
            .map_err(|message| SinkError {
                topic: topic.to_owned(),
                message,
            })
    }
}
