//! A sink that keeps messages in memory, with failures to inject in tests.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::{
    Delivery, MessageSink, OutboundMessage, PendingAck, PublishWindow, SinkError, mark_found,
};

/// Keeps every published message in order.
#[derive(Debug, Default)]
pub struct MemorySink {
    messages: Mutex<Vec<OutboundMessage>>,
    down: AtomicBool,
    failures_left: AtomicUsize,
    ack_failures_left: AtomicUsize,
    ack_delay: Mutex<Duration>,
}

impl MemorySink {
    /// An empty sink that accepts everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every message published so far.
    pub fn messages(&self) -> Vec<OutboundMessage> {
        self.lock().clone()
    }

    /// The messages published to `topic`.
    pub fn messages_to(&self, topic: &str) -> Vec<OutboundMessage> {
        self.lock()
            .iter()
            .filter(|m| m.topic == topic)
            .cloned()
            .collect()
    }

    /// How many messages were published.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing was published.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every message.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// While down, every publish fails.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The next `n` publishes fail.
    pub fn fail_next(&self, n: usize) {
        self.failures_left.store(n, Ordering::SeqCst);
    }

    /// The next `n` messages handed over with [`MessageSink::send`] are queued, but their
    /// acknowledgement fails and they are not kept (as a Kafka message that timed out in flight).
    pub fn fail_next_acks(&self, n: usize) {
        self.ack_failures_left.store(n, Ordering::SeqCst);
    }

    /// Every acknowledgement of [`MessageSink::send`] comes `delay` after the message is kept (as a
    /// broker's round trip would).
    pub fn set_ack_delay(&self, delay: Duration) {
        *self.ack_delay.lock().unwrap_or_else(|e| e.into_inner()) = delay;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<OutboundMessage>> {
        self.messages.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl MessageSink for MemorySink {
    async fn publish(
        &self,
        message: OutboundMessage,
        _timeout: Duration,
    ) -> Result<Delivery, SinkError> {
        let injected = self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if injected || self.down.load(Ordering::SeqCst) {
            return Err(SinkError::new(message.topic, "the sink is down (injected)"));
        }
        let mut messages = self.lock();
        let offset = messages.len() as i64;
        messages.push(message);
        Ok(Delivery {
            partition: Some(0),
            offset: Some(offset),
        })
    }

    async fn send(
        &self,
        message: OutboundMessage,
        timeout: Duration,
    ) -> Result<PendingAck, SinkError> {
        let delay = *self.ack_delay.lock().unwrap_or_else(|e| e.into_inner());
        let ack_fails = self
            .ack_failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let topic = message.topic.clone();
        let delivery = if ack_fails {
            Err(SinkError::new(
                topic,
                "the acknowledgement failed (injected); the message was not kept",
            ))
        } else {
            Ok(self.publish(message, timeout).await?)
        };
        // The acknowledgement comes `delay` after the send, whenever it is awaited. Without a
        // delay no clock is read and no timer is armed: one per message cost the CPU bench a third
        // of its full path.
        let acknowledged_at = (!delay.is_zero()).then(|| tokio::time::Instant::now() + delay);
        Ok(Box::pin(async move {
            if let Some(at) = acknowledged_at {
                tokio::time::sleep_until(at).await;
            }
            delivery
        }))
    }

    async fn find_published(
        &self,
        topic: &str,
        ids: &[&str],
        _window: PublishWindow,
        _timeout: Duration,
    ) -> Result<Vec<bool>, SinkError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(SinkError::new(topic, "the sink is down (injected)"));
        }
        let messages = self.lock();
        Ok(mark_found(
            ids,
            messages
                .iter()
                .filter(|m| m.topic == topic)
                .filter_map(OutboundMessage::message_id),
        ))
    }
}
