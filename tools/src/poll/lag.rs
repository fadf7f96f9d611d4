//! Offset lag of a consumer group: per partition, the committed offset, the watermarks and the
//! records not yet processed (what the ESM's `OffsetLag` metric sums on AWS).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use kafka_esm::kafka::{KafkaClientContext, KafkaSettings};
use kafka_esm::record::TopicPartition;

/// One partition's lag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The group's committed offset (the next record it will read), if any.
    pub committed: Option<i64>,
    /// The first offset still in the log.
    pub low_watermark: i64,
    /// The offset the next produced record will get.
    pub high_watermark: i64,
    /// Records between the committed offset (or the low watermark, with none) and the end.
    pub lag: i64,
}

/// Lag could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LagError {
    /// The Kafka client could not be created.
    #[error("cannot create a Kafka client for {brokers}: {message}")]
    Client {
        /// Bootstrap servers.
        brokers: String,
        /// The client's error.
        message: String,
    },
    /// A request failed.
    #[error(
        "reading {what} from {brokers} failed: {message}; check that the brokers are reachable and the topic exists"
    )]
    Request {
        /// What was read.
        what: String,
        /// Bootstrap servers.
        brokers: String,
        /// The client's error.
        message: String,
    },
}

/// Reads lag with its own client (never joining the group). Blocking: call it from
/// `tokio::task::spawn_blocking` in async code.
pub fn group_lag(
    settings: &KafkaSettings,
    group_id: &str,
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<PartitionLag>, LagError> {
    let brokers = settings.bootstrap_servers.clone();
    let request = |what: String, e: &dyn std::fmt::Display| LagError::Request {
        what,
        brokers: brokers.clone(),
        message: e.to_string(),
    };
    let consumer: BaseConsumer<KafkaClientContext> = settings
        .consumer_config(group_id)
        .map_err(|e| LagError::Client {
            brokers: brokers.clone(),
            message: e.to_string(),
        })?
        .create_with_context(settings.context())
        .map_err(|e| LagError::Client {
            brokers: brokers.clone(),
            message: e.to_string(),
        })?;
    let mut list = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| request(format!("the metadata of `{topic}`"), &e))?;
        for t in metadata.topics() {
            if let Some(error) = t.error() {
                return Err(request(
                    format!("the metadata of `{topic}`"),
                    &format!("{error:?}"),
                ));
            }
            for p in t.partitions() {
                list.add_partition(topic, p.id());
            }
        }
    }
    let committed = consumer
        .committed_offsets(list.clone(), timeout)
        .map_err(|e| request(format!("the offsets committed by group `{group_id}`"), &e))?;
    let mut lags = Vec::new();
    for element in list.elements() {
        let (low, high) = consumer
            .fetch_watermarks(element.topic(), element.partition(), timeout)
            .map_err(|e| {
                request(
                    format!(
                        "the watermarks of {}-{}",
                        element.topic(),
                        element.partition()
                    ),
                    &e,
                )
            })?;
        let committed = committed
            .find_partition(element.topic(), element.partition())
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        lags.push(PartitionLag {
            topic: element.topic().to_owned(),
            partition: element.partition(),
            committed,
            low_watermark: low,
            high_watermark: high,
            lag: (high - committed.unwrap_or(low).max(low)).max(0),
        });
    }
    // The committed list borrows nothing, but drop it before the consumer all the same (a
    // consumer dropped while a `committed()` result lives can hang).
    drop(committed);
    lags.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(lags)
}

/// The lag table for a terminal.
pub fn render_lag(group_id: &str, lags: &[PartitionLag]) -> String {
    let mut out = format!(
        "{:<32} {:>12} {:>12} {:>12} {:>10}\n",
        "partition", "committed", "low", "high", "lag"
    );
    for lag in lags {
        out.push_str(&format!(
            "{:<32} {:>12} {:>12} {:>12} {:>10}\n",
            TopicPartition::key(&lag.topic, lag.partition).to_string(),
            lag.committed
                .map_or_else(|| "-".to_owned(), |c| c.to_string()),
            lag.low_watermark,
            lag.high_watermark,
            lag.lag
        ));
    }
    let total: i64 = lags.iter().map(|l| l.lag).sum();
    out.push_str(&format!(
        "group {group_id}: OffsetLag {total} over {} partitions\n",
        lags.len()
    ));
    out
}
