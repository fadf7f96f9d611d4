//! The Kafka client settings every producer of this crate starts from.

use std::time::Duration;

use rdkafka::ClientConfig;

/// Where and how to reach Kafka.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// `client.id` sent to the brokers.
    pub client_id: String,
    /// How long librdkafka keeps trying to deliver one message before reporting failure.
    pub delivery_timeout: Duration,
    /// Extra librdkafka properties, applied last.
    pub properties: Vec<(String, String)>,
}

impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Properties may hold credentials: show their names only.
        f.debug_struct("KafkaSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("client_id", &self.client_id)
            .field("delivery_timeout", &self.delivery_timeout)
            .field(
                "properties",
                &self.properties.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl KafkaSettings {
    /// Settings for these bootstrap servers, with defaults for the rest.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            client_id: "kafka-esm".into(),
            delivery_timeout: Duration::from_secs(10),
            properties: Vec::new(),
        }
    }

    /// A producer configuration that never loses or duplicates a message on its own retries:
    /// idempotence on, `acks=all`.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.client_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                self.delivery_timeout.as_millis().max(1).to_string(),
            )
            .set("linger.ms", "5")
            .set("compression.type", "lz4");
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}
