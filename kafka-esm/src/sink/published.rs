//! Which messages an interrupted attempt published to a Kafka topic, found by their message id.
//!
//! Reading a topic back costs a consumer, a metadata request, an offsets-for-times lookup and a
//! fetch per partition, so the ids read are kept per topic: the first lookup after a crash reads
//! from the interrupted attempt's claim time (less [`CLOCK_SKEW_MS`]); later ones only read what
//! arrived since. An index read after an interrupted attempt's lock ran out holds everything that
//! attempt published: by then it was over (Lambda stops a function at its deadline).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Mutex;

use super::PublishWindow;
use crate::kafka::{KafkaClientContext, KafkaSettings, topic_partitions};
use crate::retry::now_ms;

/// How far the publisher's clock may be behind ours: messages are read from this long before the
/// interrupted claim.
pub const CLOCK_SKEW_MS: u64 = 60_000;
/// An index that started this long before the window asked for is read afresh instead of kept,
/// so that a long-lived container does not hold every id it ever saw.
const KEEP_INDEX_MS: u64 = 15 * 60_000;
/// After every partition reached its end, reading goes on this long: some brokers (Tansu 0.6.0,
/// measured) report an end below the last offset they serve.
const GRACE: Duration = Duration::from_millis(300);

/// The ids found per topic, and how to read more.
pub(super) struct PublishedIndex {
    settings: KafkaSettings,
    topics: Mutex<HashMap<String, TopicIndex>>,
}

/// The message ids of one topic from `since_ms` (less the skew) to `read_at_ms`.
#[derive(Debug, Default)]
struct TopicIndex {
    since_ms: u64,
    read_at_ms: u64,
    /// Where reading resumes, per partition.
    next: HashMap<i32, i64>,
    ids: HashSet<Vec<u8>>,
}

impl PublishedIndex {
    pub(super) fn new(settings: KafkaSettings) -> Self {
        Self {
            settings,
            topics: Mutex::new(HashMap::new()),
        }
    }

    /// For each of `ids`, whether a message of `topic` carries it as its message id.
    pub(super) async fn find(
        &self,
        topic: &str,
        ids: &[&str],
        window: PublishWindow,
        timeout: Duration,
    ) -> Result<Vec<bool>, String> {
        // One reader at a time: concurrent lookups after a crash share the first one's reading.
        let mut topics = self.topics.lock().await;
        let kept = topics.remove(topic).filter(|index| {
            index.since_ms <= window.since_ms && window.since_ms - index.since_ms <= KEEP_INDEX_MS
        });
        let index = match kept {
            Some(index) if index.read_at_ms > window.until_ms => index,
            kept => {
                let index = kept.unwrap_or_else(|| TopicIndex {
                    since_ms: window.since_ms,
                    ..TopicIndex::default()
                });
                let settings = self.settings.clone();
                let name = topic.to_owned();
                tokio::task::spawn_blocking(move || index.read_on(&settings, &name, timeout))
                    .await
                    .map_err(|e| format!("the reader stopped: {e}"))??
            }
        };
        let found = ids
            .iter()
            .map(|id| index.ids.contains(id.as_bytes()))
            .collect();
        topics.insert(topic.to_owned(), index);
        Ok(found)
    }
}

impl TopicIndex {
    /// Reads `topic` from where this index stopped (or from its start time) to the end. Blocking.
    fn read_on(
        mut self,
        settings: &KafkaSettings,
        topic: &str,
        timeout: Duration,
    ) -> Result<Self, String> {
        let kafka = |what: &str, e: KafkaError| format!("{what} of `{topic}`: {e}");
        let consumer: BaseConsumer<KafkaClientContext> = settings
            .consumer_config("kafka-esm-published-lookup")
            .map_err(|e| e.to_string())?
            .set("enable.partition.eof", "true")
            .create_with_context(settings.context())
            .map_err(|e| kafka("a reader", e))?;
        let read_at = now_ms();
        let partitions =
            topic_partitions(&consumer, topic, timeout).map_err(|e| kafka("the metadata", e))?;
        // Partitions not read before start at the first offset at or after the start time.
        let mut by_time = TopicPartitionList::new();
        let from_ms = self.since_ms.saturating_sub(CLOCK_SKEW_MS) as i64;
        for partition in &partitions {
            if !self.next.contains_key(partition) {
                by_time
                    .add_partition_offset(topic, *partition, Offset::Offset(from_ms))
                    .map_err(|e| kafka("a lookup", e))?;
            }
        }
        if by_time.count() > 0 {
            let found = consumer
                .offsets_for_times(by_time, timeout)
                .map_err(|e| kafka("the offsets for the start time", e))?;
            let mut unsure = Vec::new();
            for element in found.elements() {
                match element.offset() {
                    Offset::Offset(offset) => {
                        self.next.insert(element.partition(), offset);
                    }
                    // "Nothing at or after the time", or a broker that does not look up times
                    // (rdkafka's MockCluster): the last message's time tells which.
                    _ => unsure.push(element.partition()),
                }
            }
            for partition in unsure {
                let start =
                    start_without_time_lookup(&consumer, topic, partition, from_ms, timeout)
                        .map_err(|e| kafka("the start offset", e))?;
                self.next.insert(partition, start);
            }
        }
        let mut assignment = TopicPartitionList::new();
        for partition in &partitions {
            let start = self.next.get(partition).copied().unwrap_or(0);
            assignment
                .add_partition_offset(topic, *partition, Offset::Offset(start))
                .map_err(|e| kafka("an assignment", e))?;
        }
        if assignment.count() == 0 {
            // No such topic (yet): nothing was published to it.
            self.read_at_ms = read_at;
            return Ok(self);
        }
        consumer
            .assign(&assignment)
            .map_err(|e| kafka("the assignment", e))?;
        let started = Instant::now();
        let mut at_end: HashSet<i32> = HashSet::new();
        let mut all_at_end_since: Option<Instant> = None;
        loop {
            if at_end.len() == partitions.len() {
                let since = *all_at_end_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= GRACE {
                    break;
                }
            }
            if started.elapsed() > timeout {
                return Err(format!(
                    "reading `{topic}` back timed out after {timeout:?} with {} of {} partitions at their end",
                    at_end.len(),
                    partitions.len()
                ));
            }
            match consumer.poll(Duration::from_millis(50)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    at_end.insert(partition);
                }
                Some(Err(e)) => return Err(kafka("reading", e)),
                Some(Ok(message)) => {
                    self.next
                        .insert(message.partition(), message.offset().saturating_add(1));
                    if let Some(headers) = message.headers() {
                        let id = super::message_id(headers.iter().map(|h| (h.key, h.value)));
                        if let Some(id) = id {
                            self.ids.insert(id.to_vec());
                        }
                    }
                }
            }
        }
        self.read_at_ms = read_at;
        Ok(self)
    }
}

/// Where to start reading `partition` for messages from `from_ms` on, when the broker's time
/// lookup said there are none: at the end when the last message is older, else (the broker did
/// not look) at the beginning. Blocking.
fn start_without_time_lookup(
    consumer: &BaseConsumer<KafkaClientContext>,
    topic: &str,
    partition: i32,
    from_ms: i64,
    timeout: Duration,
) -> Result<i64, KafkaError> {
    let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
    if high <= low {
        return Ok(high);
    }
    let mut last = TopicPartitionList::new();
    last.add_partition_offset(topic, partition, Offset::Offset(high - 1))?;
    consumer.assign(&last)?;
    let started = Instant::now();
    while started.elapsed() < timeout {
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(message)) if message.partition() == partition => {
                let newer = message.timestamp().to_millis().is_none_or(|t| t >= from_ms);
                return Ok(if newer { low } else { high });
            }
            Some(Err(KafkaError::PartitionEOF(p))) if p == partition => return Ok(low),
            _ => {}
        }
    }
    Ok(low)
}

#[cfg(test)]
mod tests {
    #[test]
    fn message_ids_are_the_last_of_their_header() {
        let headers = [
            ("esm.message.id", Some(&b"original"[..])),
            ("other", None),
            ("esm.message.id", Some(&b"mine"[..])),
        ];
        assert_eq!(
            super::super::message_id(headers.iter().copied()),
            Some(&b"mine"[..])
        );
        assert_eq!(super::super::MESSAGE_ID_HEADER, "esm.message.id");
    }
}
