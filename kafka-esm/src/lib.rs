//! Consume Apache Kafka from AWS Lambda: decode the event source mapping's batches faithfully,
//! process each record once, dead-letter poison records, and answer the ESM correctly.
//!
//! The data flows through one module per step:
//! [`event`] (ESM JSON → [`event::Batch`] of [`record`]s) → [`handler`] (the user's code) →
//! [`processor`] (idempotency via [`idempotency`], retries via [`retry`], poison via
//! [`dead_letter`] to a [`sink`]) → [`response`] (the answer to the ESM). [`consumer`] runs one
//! invocation through all of them; [`telemetry`] is the reference app and [`app`] wires it from
//! [`config`].

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
pub mod processor;
pub mod record;
pub mod response;
pub mod retry;
pub mod sink;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
