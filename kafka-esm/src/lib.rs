//! Consume Apache Kafka from AWS Lambda: decode the event source mapping's batches faithfully,
//! process each record once, dead-letter poison records, and answer the ESM correctly.
//!
//! Write a [`RecordHandler`] (how a record's bytes become your event, and what to do with it) and
//! run it as the Lambda with [`lambda::run`]; everything else comes from the environment
//! ([`config`]). The items you touch are re-exported here.
//!
//! The data flows through one module per step:
//! [`event`] (ESM JSON → [`event::Batch`] of [`record`]s) → [`handler`] (the user's code) →
//! [`processor`] (idempotency via [`idempotency`], retries via [`retry`], poison via
//! [`dead_letter`] to a [`sink`]) → [`response`] (the answer to the ESM). [`consumer`] runs one
//! invocation through all of them; [`lambda`] serves it on the Lambda Runtime API.
//!
//! Features: `dynamodb` and `local-store` (default) bring the DynamoDB and redb stores; `testing`
//! makes the store contract suite public (`testing::store_contract`).

#![warn(missing_docs)]

pub mod config;
pub mod consumer;
pub mod dead_letter;
pub mod encode;
pub mod env;
pub mod event;
pub mod format;
pub mod handler;
pub mod idempotency;
pub mod kafka;
pub mod lambda;
pub mod observability;
pub mod on_failure;
pub mod processor;
pub mod record;
pub mod registry;
pub mod response;
pub mod retry;
pub mod sink;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use config::{ConfigError, ConsumerConfig, StoreChoice};
pub use consumer::Consumer;
pub use format::{Json, ValueFormat};
pub use handler::{DeserializeError, HandlerError, InvocationInfo, RecordHandler};
#[cfg(feature = "dynamodb")]
pub use idempotency::DynamoDbStore;
#[cfg(feature = "local-store")]
pub use idempotency::LocalStore;
pub use idempotency::{IdempotencyStore, MemoryStore};
pub use processor::{Processor, ProcessorSettings};
pub use record::{Header, KafkaRecord, TopicPartition};
pub use sink::{DirectorySink, KafkaSink, MemorySink, MessageSink, OutboundMessage};
