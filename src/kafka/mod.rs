//! Kafka connectivity shared by every client of this crate: the producer Lambda, the consumer's
//! dead-letter and alert publishers, and the tools. Settings come from environment variables
//! ([`KafkaSettings::from_env`]); authentication is none, TLS (optionally mutual), SASL PLAIN or
//! SCRAM-SHA-256/512 (credentials from the environment or a Secrets Manager secret), or MSK IAM
//! (OAUTHBEARER with a SigV4-signed token, refreshed by librdkafka before it expires).

mod context;
mod message;
mod secrets;
mod settings;

pub use context::{KafkaClientContext, MskIamTokens};
pub use message::record_from_message;
pub use secrets::{SecretError, parse_sasl_secret};
pub use settings::{
    KafkaAuth, KafkaSettings, KafkaSetupError, SaslCredentials, SaslMechanism, Secret, TlsFiles,
};
