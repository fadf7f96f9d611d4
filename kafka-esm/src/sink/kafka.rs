//! A sink that produces to Kafka with an idempotent rdkafka producer, and reads its topics back to
//! find what an interrupted attempt published.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use super::published::PublishedIndex;
use super::{Delivery, MessageSink, OutboundMessage, PendingAck, PublishWindow, SinkError};
use crate::kafka::{KafkaClientContext, KafkaSettings, KafkaSetupError};

/// How long a message that landed after its publisher stopped waiting is remembered by its id. A
/// retry in the same container comes within the function's timeout (at most 15 minutes); a later
/// one finds the message by its id in the topic instead.
const REMEMBER_LATE_DELIVERIES: Duration = Duration::from_secs(15 * 60);

/// A delivery report librdkafka will give, shared by every wait for it.
type PendingDelivery = Shared<BoxFuture<'static, Result<Delivery, Refused>>>;

/// Why librdkafka or the broker refused a message.
#[derive(Debug, Clone)]
struct Refused {
    message: String,
    too_large: bool,
}

impl Refused {
    fn for_topic(self, topic: &str) -> SinkError {
        SinkError {
            topic: topic.to_owned(),
            message: self.message,
            too_large: self.too_large,
        }
    }

    fn of(error: &KafkaError) -> Self {
        Self {
            message: error.to_string(),
            too_large: error.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge),
        }
    }
}

/// Produces each message and waits for the broker's acknowledgement (`acks=all`), at most as long
/// as the caller allows.
///
/// A message that is not acknowledged in time is not withdrawn: librdkafka keeps trying until its
/// `message.timeout.ms` (the publish timeout), and it may still land. So the sink remembers it by
/// its [`super::MESSAGE_ID_HEADER`]: publishing the same id again while it is in flight waits for
/// that delivery instead of producing a second copy, and once it has landed the caller's resume
/// path finds it by its id ([`MessageSink::find_published`]).
pub struct KafkaSink {
    producer: FutureProducer<KafkaClientContext>,
    published: PublishedIndex,
    in_flight: Arc<Mutex<HashMap<Vec<u8>, PendingDelivery>>>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink").finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// A sink with a new idempotent producer for these settings (SASL secrets already resolved).
    /// Someone waits for every acknowledgement, so nothing is gained by lingering: the producer
    /// sends at once (`linger.ms=0`, unless `KAFKA_PROPERTIES` says otherwise). Messages sent while
    /// earlier ones are in flight (a pipelined chunk) still go out together in the next request.
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaSetupError> {
        let mut config = settings.producer_config()?;
        if !settings.properties.iter().any(|(k, _)| k == "linger.ms") {
            config.set("linger.ms", "0");
        }
        Ok(Self {
            producer: config.create_with_context(settings.context())?,
            published: PublishedIndex::new(settings.clone()),
            in_flight: Arc::default(),
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

    /// Hands `message` to librdkafka, waiting up to `timeout` for room in a full queue; the
    /// delivery report comes later (within the producer's `message.timeout.ms`).
    async fn produce(
        &self,
        message: &OutboundMessage,
        timeout: Duration,
    ) -> Result<PendingDelivery, Refused> {
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
        let give_up_at = tokio::time::Instant::now() + timeout;
        let delivery = loop {
            match self.producer.send_result(record) {
                Ok(delivery) => break delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if tokio::time::Instant::now() < give_up_at =>
                {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((error, _)) => return Err(Refused::of(&error)),
            }
        };
        Ok(async move {
            match delivery.await {
                Ok(Ok(delivery)) => Ok(Delivery {
                    partition: Some(delivery.partition),
                    offset: Some(delivery.offset),
                }),
                Ok(Err((error, _))) => Err(Refused::of(&error)),
                Err(_) => Err(Refused {
                    message: "the producer went away before the delivery report".into(),
                    too_large: false,
                }),
            }
        }
        .boxed()
        .shared())
    }
}

#[async_trait]
impl MessageSink for KafkaSink {
    async fn publish(
        &self,
        message: OutboundMessage,
        timeout: Duration,
    ) -> Result<Delivery, SinkError> {
        self.send(message, timeout).await?.await
    }

    /// Hands the message to librdkafka and returns its acknowledgement, which resolves within
    /// `timeout` from now. A message with an id still in flight (an earlier attempt stopped waiting
    /// for it) is not produced again: its acknowledgement is that delivery's.
    async fn send(
        &self,
        message: OutboundMessage,
        timeout: Duration,
    ) -> Result<PendingAck, SinkError> {
        let give_up_at = tokio::time::Instant::now() + timeout;
        let topic = message.topic.clone();
        let id = message.message_id().map(<[u8]>::to_vec);
        let pending = {
            let in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            id.as_ref().and_then(|id| in_flight.get(id)).cloned()
        };
        let pending = match pending {
            Some(pending) => pending,
            None => {
                let pending = self
                    .produce(&message, timeout)
                    .await
                    .map_err(|refused| refused.for_topic(&topic))?;
                if let Some(id) = id {
                    self.in_flight
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id.clone(), pending.clone());
                    // Forgets the id once its report came: at once after a failure (sending it again
                    // is right), and after a while for a delivery nobody waited for in time, so that
                    // publishing the same id again returns it instead of producing a second copy.
                    let in_flight = self.in_flight.clone();
                    let pending = pending.clone();
                    tokio::spawn(async move {
                        let delivered = pending.clone().await.is_ok();
                        if delivered && tokio::time::Instant::now() > give_up_at {
                            tokio::time::sleep(REMEMBER_LATE_DELIVERIES).await;
                        }
                        forget(&in_flight, &id, &pending);
                    });
                }
                pending
            }
        };
        Ok(Box::pin(async move {
            match tokio::time::timeout_at(give_up_at, pending).await {
                Ok(result) => result.map_err(|refused| refused.for_topic(&topic)),
                Err(_) => Err(SinkError::new(
                    topic,
                    format!(
                        "not acknowledged within {timeout:?}; the message is still in flight and may yet land (a later attempt waits for it, or finds it by its id)"
                    ),
                )),
            }
        }))
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
            .map_err(|message| SinkError::new(topic, message))
    }
}

/// Removes `id`'s entry if it is still `pending` (not a newer send of the same id).
fn forget(
    in_flight: &Mutex<HashMap<Vec<u8>, PendingDelivery>>,
    id: &[u8],
    pending: &PendingDelivery,
) {
    let mut in_flight = in_flight.lock().unwrap_or_else(|e| e.into_inner());
    if in_flight.get(id).is_some_and(|p| p.ptr_eq(pending)) {
        in_flight.remove(id);
    }
}
