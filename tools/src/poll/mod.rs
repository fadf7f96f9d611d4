//! `esm poll`: a local event source mapping. It reads the source topics in a consumer group, cuts
//! batches as the ESM does ([`batch`]), invokes the function with ESM-identical events ([`invoke`]),
//! commits offsets only for what the answer completes, retries and gives up as the ESM's error
//! handling says ([`deliver`]), and writes the AWS on-failure record ([`on_failure`]). [`lag`]
//! reads a group's `OffsetLag`.
//!
//! Offsets are committed only after the function's answer, so a crash of either side redelivers
//! the unfinished batch (the consumer's idempotency makes that safe), exactly as on AWS.

pub mod batch;
pub mod cli;
pub mod deliver;
pub mod invoke;
pub mod lag;
pub mod lanes;
pub mod on_failure;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

pub use batch::{BatchBuilder, BatchLimits, Cut};
pub use deliver::{BatchEnd, Commit, Deliverer, DeliveryCounts, EventOrigin, RetryPolicy};
pub use invoke::{Answer, InProcess, Invoke, RuntimeApi};
use kafka_esm::kafka::{KafkaClientContext, KafkaSettings, record_from_message};
use kafka_esm::record::TopicPartition;
pub use lag::{LagError, PartitionLag, group_lag, render_lag};
pub use lanes::{Admission, DEFAULT_PARTITION_BUFFER_RECORDS, Lanes, PartitionKey};
pub use on_failure::OnFailureDestination;

/// Where a consumer group without committed offsets starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartingPosition {
    /// The oldest record still in each partition.
    TrimHorizon,
    /// Only records produced from now on.
    Latest,
    /// The first record at or after this time (epoch milliseconds).
    AtTimestamp(i64),
}

/// What `esm poll` reads and how it cuts batches.
#[derive(Debug, Clone)]
pub struct PollOptions {
    /// Source topics.
    pub topics: Vec<String>,
    /// `ConsumerGroupId`.
    pub group_id: String,
    /// Used only when the group has no committed offset for a partition.
    pub starting_position: StartingPosition,
    /// Batch size, window and payload limit.
    pub limits: BatchLimits,
    /// How often to log progress (records/s and lag per partition).
    pub progress_every: Duration,
    /// Exit after this long without a record (for scripts and tests); run until stopped otherwise.
    pub exit_when_idle: Option<Duration>,
    /// Exit after this many records have settled.
    pub max_records: Option<u64>,
    /// The function timeout: the group's `max.poll.interval.ms` must outlast an invocation.
    pub function_timeout: Duration,
    /// The most batches delivered at once (each partition's one at a time); `None`: one per
    /// partition, as on AWS.
    pub max_concurrency: Option<usize>,
    /// Records waiting in one partition's queue before the poller stops reading (until half are
    /// delivered). Bounds memory when a partition is slow or stuck.
    pub partition_buffer_records: usize,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct PollSummary {
    /// Records read from Kafka (skipped ones excluded).
    pub records: u64,
    /// Batches cut.
    pub batches: u64,
    /// What delivering them did.
    pub delivery: DeliveryCounts,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// From the first record read to the last batch settled: the time the pipeline was busy.
    pub busy: Duration,
    /// Why the run ended.
    pub ended_by: &'static str,
    /// Offsets committed last, per `"<topic>-<partition>"`.
    pub committed: BTreeMap<String, i64>,
}

impl PollSummary {
    /// Records settled per second while busy (start-up and idle time left out).
    pub fn records_per_second(&self) -> f64 {
        let settled = self.delivery.succeeded + self.delivery.given_up;
        settled as f64 / self.busy.as_secs_f64().max(1e-9)
    }
}

/// `esm poll` could not run.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The Kafka consumer could not be set up.
    #[error("cannot consume from {brokers}: {message}")]
    Kafka {
        /// Bootstrap servers.
        brokers: String,
        /// What failed.
        message: String,
    },
}

/// Commits a delivery's positions; shared by every partition's deliveries.
struct KafkaCommitter {
    consumer: Arc<StreamConsumer<KafkaClientContext>>,
    committed: Arc<Mutex<HashMap<PartitionKey, i64>>>,
}

impl Commit for KafkaCommitter {
    fn commit(&mut self, positions: &[(String, i32, i64)]) {
        if positions.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        {
            let mut committed = self.committed.lock().unwrap_or_else(|p| p.into_inner());
            for (topic, partition, next) in positions {
                let entry = committed
                    .entry((topic.clone(), *partition))
                    .or_insert(*next);
                *entry = (*entry).max(*next);
                let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*entry));
            }
        }
        // Asynchronous: a lost commit only redelivers records the consumer then skips as done.
        if let Err(error) = self.consumer.commit(&list, CommitMode::Async) {
            warn!(target: "esm::poll", %error, "offset commit not sent; a later commit covers it");
        }
    }
}

/// Runs the local ESM until `stop` turns true, the group idles for `exit_when_idle`, or
/// `max_records` have settled. Each partition's batches are delivered in order, different
/// partitions' at the same time (up to `max_concurrency`). Offsets of settled records are
/// committed before it returns.
pub async fn run<I: Invoke + 'static>(
    settings: &KafkaSettings,
    options: &PollOptions,
    deliverer: Arc<Deliverer<I>>,
    mut stop: watch::Receiver<bool>,
) -> Result<PollSummary, PollError> {
    let started = Instant::now();
    let brokers = settings.bootstrap_servers.clone();
    let kafka_error = |message: String| PollError::Kafka {
        brokers: brokers.clone(),
        message,
    };
    let consumer = Arc::new(create_consumer(settings, options).map_err(&kafka_error)?);
    let floors = match options.starting_position {
        StartingPosition::AtTimestamp(ms) => {
            timestamp_floors(&consumer, options, ms).map_err(&kafka_error)?
        }
        _ => HashMap::new(),
    };
    let topics: Vec<&str> = options.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|e| kafka_error(format!("subscribing to {topics:?}: {e}")))?;
    info!(target: "esm::poll", topics = ?options.topics, group = options.group_id.as_str(), brokers = brokers.as_str(), "polling");

    let arn = match &deliverer.origin().source {
        kafka_esm::encode::Source::Msk { cluster_arn } => Some(cluster_arn.clone()),
        kafka_esm::encode::Source::SelfManaged => None,
    };
    let mut lanes = Lanes::new(
        options.limits,
        &deliverer.origin().bootstrap_servers,
        arn.as_deref(),
        options.max_concurrency.unwrap_or(usize::MAX),
        options.partition_buffer_records,
    );
    let committed: Arc<Mutex<HashMap<PartitionKey, i64>>> = Arc::default();
    let mut deliveries: JoinSet<(PartitionKey, BatchEnd)> = JoinSet::new();
    let mut summary = PollSummary::default();
    // Idle time counts from the last record, or from when partitions were first assigned (joining
    // the group is not idleness).
    let mut last_record: Option<Instant> = None;
    let mut last_progress = Instant::now();
    let mut progress_settled = 0u64;
    let mut first_record: Option<Instant> = None;
    let settled = |d: &Deliverer<I>| {
        let counts = d.counts();
        counts.succeeded + counts.given_up
    };
    let ended_by = loop {
        if *stop.borrow() {
            break "stopped";
        }
        if options
            .max_records
            .is_some_and(|max| settled(&deliverer) >= max)
        {
            break "max-records";
        }
        if last_progress.elapsed() >= options.progress_every {
            let settled = settled(&deliverer);
            let lag = partition_lag(&consumer, &committed).await;
            log_progress(
                lag,
                settled - progress_settled,
                last_progress.elapsed(),
                settled,
            );
            progress_settled = settled;
            last_progress = Instant::now();
        }
        // Wait for a record or a delivery's end: until the next window ends, else a little while.
        let soon =
            tokio::time::Instant::now() + Duration::from_millis(200).min(options.progress_every);
        let wait_until = lanes.next_window_end().map_or(soon, |end| end.min(soon));
        // A partition's queue is full: take no records (librdkafka keeps them) until it drains.
        let hold = lanes.hold_reading();
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => continue,
            Some(joined) = deliveries.join_next(), if !deliveries.is_empty() => match joined {
                Ok((key, _end)) => {
                    lanes.finished(&key);
                    if let Some(first) = first_record {
                        summary.busy = first.elapsed();
                    }
                }
                Err(error) => {
                    // A delivery that panicked: its records stay uncommitted for the next run.
                    error!(target: "esm::poll", %error, "a delivery failed unexpectedly; stopping (its records are redelivered on the next run)");
                    break "delivery-failed";
                }
            },
            () = tokio::time::sleep_until(wait_until), if hold => {}
            message = tokio::time::timeout_at(wait_until, consumer.recv()), if !hold => match message {
                Err(_) => {}
                Ok(Err(error)) => {
                    warn!(target: "esm::poll", %error, "consumer error; rdkafka retries");
                }
                Ok(Ok(message)) => {
                    let now = Instant::now();
                    last_record = Some(now);
                    first_record.get_or_insert(now);
                    let record = record_from_message(&message);
                    drop(message);
                    // Only AT_TIMESTAMP has floors: skip the lookup (and its key) otherwise.
                    let before_floor = !floors.is_empty()
                        && floors
                            .get(&(record.topic.clone(), record.partition))
                            .is_some_and(|floor| record.offset < *floor);
                    if !before_floor
                        && lanes.push(record, tokio::time::Instant::now()) == Admission::Taken
                    {
                        summary.records += 1;
                    }
                }
            },
        }
        lanes.cut_expired(tokio::time::Instant::now());
        while let Some((key, batch)) = lanes.next_delivery() {
            let deliverer = deliverer.clone();
            let mut committer = KafkaCommitter {
                consumer: consumer.clone(),
                committed: committed.clone(),
            };
            let mut stop = stop.clone();
            deliveries.spawn(async move {
                let end = deliverer.deliver(batch, &mut committer, &mut stop).await;
                (key, end)
            });
        }
        if lanes.is_idle()
            && options
                .exit_when_idle
                .is_some_and(|idle| idle_for(&consumer, &mut last_record) >= idle)
        {
            break "idle";
        }
    };
    // Let the deliveries in flight end (a stop ends them at once, leaving their records unsettled).
    while let Some(joined) = deliveries.join_next().await {
        if let Ok((key, _)) = joined {
            lanes.finished(&key);
            if let Some(first) = first_record {
                summary.busy = first.elapsed();
            }
        }
    }
    summary.batches = lanes.batches_cut();
    let committed = std::mem::take(&mut *committed.lock().unwrap_or_else(|p| p.into_inner()));
    // Make the commits durable before returning: only settled records are in `committed`.
    if !committed.is_empty() {
        let mut list = TopicPartitionList::new();
        for ((topic, partition), next) in &committed {
            let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*next));
        }
        let owned = consumer.clone();
        let result =
            tokio::task::spawn_blocking(move || owned.commit(&list, CommitMode::Sync)).await;
        if let Ok(Err(error)) = result {
            warn!(target: "esm::poll", %error, "final offset commit failed; the next run redelivers records already done (idempotency skips them)");
        }
    }
    consumer.unsubscribe();
    summary.delivery = deliverer.counts();
    summary.elapsed = started.elapsed();
    summary.ended_by = ended_by;
    summary.committed = committed
        .into_iter()
        .map(|((topic, partition), next)| {
            (TopicPartition::key(&topic, partition).to_string(), next)
        })
        .collect();
    Ok(summary)
}

fn create_consumer(
    settings: &KafkaSettings,
    options: &PollOptions,
) -> Result<StreamConsumer<KafkaClientContext>, String> {
    // Offsets move only when the function's answer settles records.
    let mut config = settings
        .committing_consumer_config(
            &options.group_id,
            match options.starting_position {
                StartingPosition::Latest => "latest",
                _ => "earliest",
            },
        )
        .map_err(|e| e.to_string())?;
    if !settings
        .properties
        .iter()
        .any(|(k, _)| k == "max.poll.interval.ms")
    {
        let interval =
            (options.function_timeout + Duration::from_secs(60)).max(Duration::from_secs(300));
        config.set("max.poll.interval.ms", interval.as_millis().to_string());
    }
    config
        .create_with_context(settings.context())
        .map_err(|e| e.to_string())
}

/// How long the consumer has had partitions and no record.
fn idle_for(
    consumer: &StreamConsumer<KafkaClientContext>,
    last_record: &mut Option<Instant>,
) -> Duration {
    if last_record.is_none() {
        let assigned = consumer.assignment().is_ok_and(|a| a.count() > 0);
        if !assigned {
            return Duration::ZERO;
        }
        *last_record = Some(Instant::now());
    }
    last_record.map_or(Duration::ZERO, |at| at.elapsed())
}

/// For AT_TIMESTAMP: the first offset at or after `timestamp_ms` of each partition the group has
/// no committed offset for. Records below it are skipped once.
fn timestamp_floors(
    consumer: &StreamConsumer<KafkaClientContext>,
    options: &PollOptions,
    timestamp_ms: i64,
) -> Result<HashMap<(String, i32), i64>, String> {
    let timeout = Duration::from_secs(10);
    let mut list = TopicPartitionList::new();
    for topic in &options.topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| format!("reading the metadata of `{topic}`: {e}"))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                list.add_partition(topic, p.id());
            }
        }
    }
    let committed = consumer
        .committed_offsets(list.clone(), timeout)
        .map_err(|e| format!("reading the group's committed offsets: {e}"))?;
    let mut query = TopicPartitionList::new();
    for element in committed.elements() {
        if !matches!(element.offset(), Offset::Offset(_)) {
            let _ = query.add_partition_offset(
                element.topic(),
                element.partition(),
                Offset::Offset(timestamp_ms),
            );
        }
    }
    drop(committed);
    if query.count() == 0 {
        return Ok(HashMap::new());
    }
    let found = consumer
        .offsets_for_times(query, timeout)
        .map_err(|e| format!("looking up offsets for AT_TIMESTAMP {timestamp_ms}: {e}"))?;
    let mut floors = HashMap::new();
    for element in found.elements() {
        let floor = match element.offset() {
            Offset::Offset(o) => o,
            // No record at or after the time: start at the end.
            _ => {
                consumer
                    .fetch_watermarks(element.topic(), element.partition(), timeout)
                    .map_err(|e| format!("reading watermarks: {e}"))?
                    .1
            }
        };
        floors.insert((element.topic().to_owned(), element.partition()), floor);
    }
    Ok(floors)
}

/// Records behind each assigned partition: its high watermark less the committed position.
async fn partition_lag(
    consumer: &Arc<StreamConsumer<KafkaClientContext>>,
    committed: &Mutex<HashMap<PartitionKey, i64>>,
) -> BTreeMap<String, i64> {
    let consumer = consumer.clone();
    let committed = committed.lock().unwrap_or_else(|p| p.into_inner()).clone();
    tokio::task::spawn_blocking(move || {
        let mut lag = BTreeMap::new();
        if let Ok(assignment) = consumer.assignment() {
            for element in assignment.elements() {
                let (topic, partition) = (element.topic(), element.partition());
                if let Ok((low, high)) =
                    consumer.fetch_watermarks(topic, partition, Duration::from_secs(1))
                {
                    let position = committed
                        .get(&(topic.to_owned(), partition))
                        .copied()
                        .unwrap_or(low);
                    lag.insert(
                        TopicPartition::key(topic, partition).to_string(),
                        (high - position).max(0),
                    );
                }
            }
        }
        lag
    })
    .await
    .unwrap_or_default()
}

fn log_progress(lag: BTreeMap<String, i64>, settled_since: u64, since: Duration, settled: u64) {
    let total: i64 = lag.values().sum();
    info!(
        target: "esm::poll",
        settled,
        records_per_second = (settled_since as f64 / since.as_secs_f64().max(1e-9)).round() as u64,
        offset_lag = total,
        lag = ?lag,
        "progress"
    );
}
