//! The reference app on `kafka-esm`, the part users replace with their own: telemetry metrics in,
//! alerts out.
//!
//! A value is a [`MetricEvent`], in JSON, Avro or Protobuf ([`metric_format`]). Each event that breaks an [`AlertRule`] publishes an [`Alert`]
//! to the alerts topic, keyed `database_type:instance_id`: that publish is the side effect idempotency
//! protects. A value that is not a valid metric is poison; a tombstone is a delete marker and done.
//!
//! [`app`] wires the handler from its [`config`]uration for the `consumer` Lambda and the tools;
//! [`producer`] is the `producer` Lambda's logic and [`generate`] makes sample metrics.

pub mod app;
pub mod config;
pub mod generate;
mod handler;
mod metric;
pub mod metric_format;
pub mod producer;
mod rules;

pub use handler::*;
pub use metric::MetricEvent;
pub use metric_format::{MetricDecoder, MetricEncoder, MetricFormat};
pub use rules::{AlertRule, Comparison, RuleError, parse_rules};
