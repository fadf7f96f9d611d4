//! `esm redrive --topic NAME`: the Kafka-topic on-failure destination (`kafka://NAME`). The ESM
//! writes one message per failed record, the record itself in its `payload`, so nothing is read
//! back from the source topic.
//!
//! The topic is read in its own consumer group (`--group`, default `esm-redrive`), from the group's
//! committed offsets (the earliest offset the first time), up to the end each partition had when the
//! run started. An offset is committed only once its message is handled, and only while every
//! earlier message of its partition was: a message left unhandled holds its partition's commit back,
//! so the next run starts there again (the messages after it, handled now, are then duplicates). A
//! dry run commits nothing.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::report::{MessageReport, MessageStatus, RunSummary};
use super::{RedriveError, Redriver};
use crate::handler::HandlerFactory;
use kafka_esm::kafka::{KafkaClientContext, KafkaSettings, topic_partitions};

/// The consumer group `esm redrive --topic` commits in unless told otherwise.
pub const DEFAULT_GROUP: &str = "esm-redrive";

impl<F: HandlerFactory> Redriver<F> {
    /// Redrives the on-failure messages of `topic` (see the module documentation), calling
    /// `on_report` after each.
    pub async fn run_topic(
        &self,
        settings: &KafkaSettings,
        topic: &str,
        group: &str,
        on_report: &mut dyn FnMut(&MessageReport),
    ) -> Result<RunSummary, RedriveError> {
        let started = Instant::now();
        let source_name = format!("kafka://{topic} ({})", settings.bootstrap_servers);
        let failed = |message: String| RedriveError::Source {
            source_name: source_name.clone(),
            message,
        };
        let consumer = create_consumer(settings, group).map_err(&failed)?;
        let timeout = self.options().fetch_timeout;
        // Where each partition starts (the group's commit) and ends now: the run stops there.
        let ends = {
            let consumer = consumer.clone();
            let topic = topic.to_owned();
            tokio::task::spawn_blocking(move || partition_spans(&consumer, &topic, timeout))
                .await
                .map_err(|e| failed(format!("the metadata read was interrupted: {e}")))?
                .map_err(&failed)?
        };
        let mut summary = RunSummary::default();
        let mut pending: HashSet<i32> = ends
            .iter()
            .filter(|(_, (low, high))| high > low)
            .map(|(p, _)| *p)
            .collect();
        if pending.is_empty() {
            summary.duration_ms = started.elapsed().as_millis() as u64;
            return Ok(summary);
        }
        consumer
            .subscribe(&[topic])
            .map_err(|e| failed(format!("cannot subscribe: {e}")))?;
        let mut held_back: HashMap<i32, i64> = HashMap::new();
        let mut result = Ok(());
        while !pending.is_empty() {
            if self
                .options()
                .max_messages
                .is_some_and(|max| summary.messages as usize >= max)
            {
                break;
            }
            let message = match tokio::time::timeout(timeout, consumer.recv()).await {
                Err(_) => {
                    let mut partitions: Vec<i32> = pending.iter().copied().collect();
                    partitions.sort_unstable();
                    result = Err(failed(format!(
                        "no message for {timeout:?} before the end of partition(s) {partitions:?}: is another member of group {group:?} reading them?"
                    )));
                    break;
                }
                Ok(Err(e)) => {
                    result = Err(failed(format!("cannot read: {e}")));
                    break;
                }
                Ok(Ok(message)) => message,
            };
            let (partition, offset) = (message.partition(), message.offset());
            let end = ends.get(&partition).map_or(i64::MAX, |(_, high)| *high);
            if offset >= end {
                pending.remove(&partition);
                continue;
            }
            let id = format!("{topic}-{partition}@{offset}");
            let mut report = match message.payload().map(std::str::from_utf8) {
                Some(Ok(body)) => self.handle_message(&id, body).await,
                Some(Err(_)) => MessageReport::left(
                    &id,
                    self.options().mode.as_str(),
                    "the message is not UTF-8 JSON: not an on-failure record".into(),
                ),
                None => MessageReport::left(
                    &id,
                    self.options().mode.as_str(),
                    "the message has no value: not an on-failure record".into(),
                ),
            };
            drop(message);
            match (report.status, held_back.get(&partition)) {
                (MessageStatus::Done, None) => {
                    let mut list = TopicPartitionList::new();
                    let _ = list.add_partition_offset(topic, partition, Offset::Offset(offset + 1));
                    match consumer.commit(&list, CommitMode::Sync) {
                        Ok(()) => report.status = MessageStatus::Committed,
                        Err(e) => {
                            report.reason = Some(format!(
                                "every record was handled, but the commit failed ({e}); a new run finds them done (duplicates)"
                            ));
                            held_back.insert(partition, offset);
                        }
                    }
                }
                (MessageStatus::Done, Some(first)) => {
                    report.reason = Some(format!(
                        "handled, not committed: offset {first} of this partition was left, and the next run starts there"
                    ));
                }
                (MessageStatus::Left, _) => {
                    held_back.entry(partition).or_insert(offset);
                }
                _ => {}
            }
            summary.add(&report);
            on_report(&report);
            if offset + 1 >= end {
                pending.remove(&partition);
            }
        }
        consumer.unsubscribe();
        summary.duration_ms = started.elapsed().as_millis() as u64;
        result.map(|()| summary)
    }
}

fn create_consumer(
    settings: &KafkaSettings,
    group: &str,
) -> Result<std::sync::Arc<StreamConsumer<KafkaClientContext>>, String> {
    settings
        .committing_consumer_config(group, "earliest")
        .map_err(|e| e.to_string())?
        .create_with_context(settings.context())
        .map(std::sync::Arc::new)
        .map_err(|e| format!("cannot create a consumer: {e}"))
}

/// Each partition's (start, end): where the group resumes (its commit, else the low watermark)
/// and the high watermark now.
fn partition_spans(
    consumer: &StreamConsumer<KafkaClientContext>,
    topic: &str,
    timeout: Duration,
) -> Result<HashMap<i32, (i64, i64)>, String> {
    let partitions = topic_partitions(consumer, topic, timeout)
        .map_err(|e| format!("cannot read the topic's metadata: {e}"))?;
    if partitions.is_empty() {
        return Err("the topic does not exist (or has no partitions)".into());
    }
    let mut list = TopicPartitionList::new();
    for p in &partitions {
        list.add_partition(topic, *p);
    }
    let committed: HashMap<i32, i64> = consumer
        .committed_offsets(list, timeout)
        .map_err(|e| format!("cannot read the group's committed offsets: {e}"))?
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect();
    partitions
        .into_iter()
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, timeout)
                .map_err(|e| format!("cannot read partition {p}'s watermarks: {e}"))?;
            let start = committed.get(&p).map_or(low, |c| (*c).max(low));
            Ok((p, (start, high)))
        })
        .collect()
}
