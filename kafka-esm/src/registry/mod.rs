//! Schema registries as [`SchemaSource`](crate::format::SchemaSource)s: where a record's schema
//! id leads to the schema's text.
//!
//! | source | crate feature | a schema id is | asks |
//! |---|---|---|---|
//! | `ConfluentRegistry` | `confluent-registry` | a number | `GET /schemas/ids/{id}` (REST, HTTPS) |
//! | `GlueRegistry` | `glue-registry` | a schema-version UUID | Glue `GetSchemaVersion` |
//! | [`LocalDirectory`](crate::format::LocalDirectory) | none | either | the file `<id>.avsc`, `<id>.proto`, `<id>.json` |
//!
//! A function names its source in the environment, and [`SchemaSourceConfig::from_env`] reads it
//! at start-up with every other problem reported at once ([`crate::env::EnvReader`]);
//! [`SchemaSourceConfig::open`] fetches the credentials (once per container) and puts the source
//! behind the per-container [`SchemaCache`](crate::format::SchemaCache), which the formats share:
//!
//! | variable | meaning |
//! |---|---|
//! | `SCHEMA_REGISTRY_URL` | `https://…` (or `http://…`): a Confluent Schema Registry (Confluent Cloud, Confluent Platform, or one that serves its API); `arn:aws:glue:REGION:ACCOUNT:registry/NAME`: an AWS Glue Schema Registry. The same value as the event source mapping's `SchemaRegistryURI`. |
//! | `SCHEMA_REGISTRY_AUTH` | Confluent only: `basic` (the default when `SCHEMA_REGISTRY_SECRET_ARN` is set), `bearer`, or `none` (the default otherwise). |
//! | `SCHEMA_REGISTRY_SECRET_ARN` | `basic`: the mapping's `BASIC_AUTH` secret, `{"username": "...", "password": "..."}` (for Confluent Cloud, the registry's API key and secret); `bearer`: `{"token": "..."}`, or the token as the whole secret string. |
//! | `SCHEMA_REGISTRY_TLS_SECRET_ARN` | Confluent only: mutual TLS, the mapping's `CLIENT_CERTIFICATE_TLS_AUTH` secret, `{"certificate": "<PEM chain>", "privateKey": "<PKCS #8 PEM>"}`. |
//! | `SCHEMA_REGISTRY_CA_SECRET_ARN` | Confluent only: the mapping's `SERVER_ROOT_CA_CERTIFICATE` secret, `{"certificate": "<PEM>"}`: the registry's root CA, trusted instead of the system's. |
//! | `SCHEMA_REGISTRY_TIMEOUT_SECONDS` | How long one request may take, connection included: 1 to 120, default 10. |
//! | `SCHEMA_DIR` | A directory of schema files instead of a registry ([`LocalDirectory`](crate::format::LocalDirectory)), for offline work or a function that ships its schemas. |
//!
//! With neither `SCHEMA_REGISTRY_URL` nor `SCHEMA_DIR`, the function has no schema source
//! (`Ok(None)`): JSON needs none. The secrets are those the event source mapping's
//! `SchemaRegistryConfig.AccessConfigs` name (`BASIC_AUTH`, `CLIENT_CERTIFICATE_TLS_AUTH`,
//! `SERVER_ROOT_CA_CERTIFICATE`), read through the same Secrets Manager client as the Kafka
//! secrets ([`crate::kafka`]); the function's role needs `secretsmanager:GetSecretValue` on them
//! (and `kms:Decrypt` for a customer-managed key). A Glue registry takes no secret: the role
//! needs `glue:GetSchemaVersion` (the mapping itself also calls `glue:GetRegistry`).
//!
//! # Poison or retry
//!
//! A source answers [`SchemaError::NotFound`](crate::format::SchemaError::NotFound) (poison: the
//! record is dead-lettered) only when the registry itself says the schema does not exist:
//! Confluent's HTTP 404 with `error_code` 40403, Glue's `EntityNotFoundException`. A schema that
//! exists but cannot be used (an unknown `schemaType` or `DataFormat`, a missing reference) is
//! [`SchemaError::Invalid`](crate::format::SchemaError::Invalid), poison too. Everything else is
//! [`SchemaError::Unavailable`](crate::format::SchemaError::Unavailable), transient: the record is
//! retried, never dead-lettered for it. That covers a registry that cannot be reached, times out,
//! throttles or fails (HTTP 429, 5xx), and also one that refuses the function's credentials
//! (401, 403; Glue's `AccessDeniedException`) or answers something that is not a registry's
//! answer (a 404 without a registry error code: a wrong URL): a wrong setting must not
//! dead-letter every record, and the message says what to fix.
//!
//! # Tests
//!
//! `GlueRegistry` is tested against moto's Glue API (`CreateRegistry`, `CreateSchema`,
//! `RegisterSchemaVersion`, `GetSchemaVersion`; `bash infra/local-stack.sh start`; the tests are
//! ignored without it), and against a scripted endpoint for what moto never answers (throttling,
//! server errors, a denied role). `ConfluentRegistry` is tested against a stand-in on 127.0.0.1
//! that serves the documented REST subset (`GET /schemas/ids/{id}`,
//! `GET /subjects/{subject}/versions/{version}`, the error bodies `{"error_code", "message"}`),
//! over plain HTTP and over TLS with a private CA and a client certificate, not against a real
//! registry: Confluent's is not served by the package registries our machines reach, and Apicurio
//! Registry (whose Confluent-compatible API is `/apis/ccompat/v7`; a base URL with a path works)
//! was not tried. The start-up path ([`SchemaSourceConfig::open`] with the mapping's three secrets
//! on moto's Secrets Manager) runs against both.

mod config;
#[cfg(feature = "confluent-registry")]
mod confluent;
#[cfg(feature = "glue-registry")]
mod glue;

pub use config::{ConfluentConfig, GlueConfig, RegistryAuth, SchemaSourceConfig};
#[cfg(feature = "confluent-registry")]
pub use confluent::{ConfluentAuth, ConfluentRegistry, ConfluentRegistryBuilder, RegisterError};
#[cfg(feature = "glue-registry")]
pub use glue::GlueRegistry;

use crate::kafka::SecretError;

/// A schema source could not be set up (at start-up: a secret, a URL, TLS material).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A secret could not be fetched or is not in the mapping's format. Its value is never shown.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The registry's URL cannot be used.
    #[error("schema registry URL {url:?} cannot be used: {problem}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The TLS material (root CA, client certificate) cannot be used. Never shows a key.
    #[error("schema registry TLS: {0}")]
    Tls(String),
    /// The credentials cannot be sent (a character no HTTP header carries). Never shows them.
    #[error("schema registry credentials: {0}")]
    Credentials(String),
    /// The configuration names a registry this build cannot talk to.
    #[error(
        "{registry} needs the `{feature}` feature of kafka-esm, which this build does not have"
    )]
    FeatureMissing {
        /// The registry.
        registry: &'static str,
        /// The crate feature that brings it.
        feature: &'static str,
    },
}
