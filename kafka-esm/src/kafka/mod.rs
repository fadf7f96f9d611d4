//! Kafka connectivity shared by every client of this crate: the producer Lambda, the consumer's
//! dead-letter and alert publishers, and the tools. Settings come from environment variables
//! ([`KafkaSettings::from_env`]); authentication is none, TLS (optionally mutual: the client
//! certificate from files or from the mapping's `CLIENT_CERTIFICATE_TLS_AUTH` secret), SASL PLAIN
//! or SCRAM-SHA-256/512 (credentials from the environment or a Secrets Manager secret), or MSK IAM
//! (OAUTHBEARER with a SigV4-signed token, refreshed by librdkafka before it expires). The brokers'
//! CA comes from the system, a file or the mapping's `SERVER_ROOT_CA_CERTIFICATE` secret.

mod context;
mod message;
mod metadata;
mod secrets;
mod settings;

pub use context::{KafkaClientContext, MskIamTokens};
pub use message::record_from_message;
pub use metadata::topic_partitions;
#[cfg(feature = "confluent-registry")]
pub(crate) use secrets::fetch_secret_string;
pub use secrets::{
    SecretError, TlsSecretProblem, parse_client_certificate_secret, parse_root_ca_secret,
    parse_sasl_secret,
};
pub use settings::{
    ClientCertificatePem, FromSecret, KafkaAuth, KafkaSettings, KafkaSetupError, SaslCredentials,
    SaslMechanism, Secret, TlsFiles, TlsSecrets,
};
