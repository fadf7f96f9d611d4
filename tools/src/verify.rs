//! The pipeline's accountant: reads the source topic, the alerts topic and the dead-letter topic
//! back from Kafka, and proves that every input record is accounted for exactly once: an alert per
//! broken rule, or a completion in the idempotency store, or one dead-letter entry. Duplicated
//! inputs (the same `event_id` twice) must still have one effect. Used by the end-to-end tests and
//! by `esm verify` after a load run, where it also measures produce-to-alert latency.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use kafka_esm::dead_letter::headers as dlq;
use kafka_esm::idempotency::IdempotencyStore;
use kafka_esm::idempotency::keys::{business_key, coordinates_key};
use kafka_esm::kafka::{KafkaClientContext, KafkaSettings};
use kafka_esm::record::KafkaRecord;
use kafka_esm_telemetry::{AlertRule, MetricDecoder};

/// A message read back, reduced to what the verifier needs.
#[derive(Debug, Clone)]
pub struct ReadBack {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Broker timestamp (epoch ms), when set.
    pub timestamp: Option<i64>,
    /// Value bytes.
    pub value: Option<Vec<u8>>,
    /// Headers (name, value).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl ReadBack {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// Reading a topic back failed.
#[derive(Debug, thiserror::Error)]
#[error("reading `{topic}` back from {brokers} failed: {message}")]
pub struct ReadError {
    /// Topic.
    pub topic: String,
    /// Bootstrap servers.
    pub brokers: String,
    /// What failed.
    pub message: String,
}

/// Reads each of `topics` back ([`read_topic`]), one after the other on a blocking thread.
pub async fn read_topics<const N: usize>(
    settings: KafkaSettings,
    topics: [String; N],
    timeout: Duration,
) -> [Result<Vec<ReadBack>, ReadError>; N] {
    tokio::task::spawn_blocking(move || topics.map(|topic| read_topic(&settings, &topic, timeout)))
        .await
        .expect("reading topics does not panic")
}

/// Reads every partition of `topic` from its low watermark to its end (the high watermark as it is
/// when the read starts, and whatever follows until the topic is quiet for a second). Blocking.
pub fn read_topic(
    settings: &KafkaSettings,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<ReadBack>, ReadError> {
    let error = |message: String| ReadError {
        topic: topic.to_owned(),
        brokers: settings.bootstrap_servers.clone(),
        message,
    };
    let consumer: BaseConsumer<KafkaClientContext> = settings
        .consumer_config("kafka-esm-verifier")
        .map_err(|e| error(e.to_string()))?
        .set("enable.partition.eof", "false")
        .create_with_context(settings.context())
        .map_err(|e| error(e.to_string()))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| error(e.to_string()))?;
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), timeout)
                .map_err(|e| error(format!("watermarks of partition {}: {e}", p.id())))?;
            if high > low {
                remaining.insert(p.id(), high);
                assignment
                    .add_partition_offset(topic, p.id(), Offset::Offset(low))
                    .map_err(|e| error(e.to_string()))?;
            }
        }
    }
    let mut out = Vec::new();
    if remaining.is_empty() {
        return Ok(out);
    }
    consumer
        .assign(&assignment)
        .map_err(|e| error(e.to_string()))?;
    let started = std::time::Instant::now();
    // Read to the watermarks, then on until the topic is quiet for a second: some brokers (Tansu
    // 0.6.0, measured) report a high watermark below the last offset they serve.
    let mut quiet_since: Option<std::time::Instant> = None;
    loop {
        if remaining.is_empty() {
            let since = *quiet_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= Duration::from_secs(1) {
                break;
            }
        }
        if started.elapsed() > timeout.max(Duration::from_secs(60)) {
            return Err(error(format!(
                "timed out with partitions {:?} unread to their end",
                remaining.keys().collect::<Vec<_>>()
            )));
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => return Err(error(e.to_string())),
            Some(Ok(m)) => {
                quiet_since = None;
                if let Some(end) = remaining.get(&m.partition())
                    && m.offset() + 1 >= *end
                {
                    remaining.remove(&m.partition());
                }
                out.push(ReadBack {
                    partition: m.partition(),
                    offset: m.offset(),
                    timestamp: m.timestamp().to_millis(),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers: m
                        .headers()
                        .map(|hs| {
                            hs.iter()
                                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                                .collect()
                        })
                        .unwrap_or_default(),
                });
            }
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
struct AlertOut {
    alert_id: String,
    source: AlertSourceOut,
}

#[derive(Deserialize)]
struct AlertSourceOut {
    topic: String,
}

/// What the verifier found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    /// Records in the source topic.
    pub input_records: usize,
    /// Distinct events among them (duplicated inputs counted once).
    pub distinct_events: usize,
    /// Input records that repeat an earlier `event_id`.
    pub duplicated_inputs: usize,
    /// Poison inputs (not a valid metric).
    pub poison_inputs: usize,
    /// Alerts expected (one per broken rule per distinct event).
    pub alerts_expected: usize,
    /// Alerts found.
    pub alerts_found: usize,
    /// Dead-letter entries found for the source topic.
    pub dead_letters_found: usize,
    /// Distinct events without an alert they should have, or not completed in the store.
    pub lost: Vec<String>,
    /// Side effects seen more than once: alert ids or dead-lettered coordinates.
    pub duplicated_effects: Vec<String>,
    /// Outputs that match no input.
    pub unexpected: Vec<String>,
    /// Produce-to-alert latency percentiles, milliseconds: p50, p95, p99, max.
    pub alert_latency_ms: Option<[i64; 4]>,
}

impl Verdict {
    /// True when nothing is lost, duplicated or unexpected.
    pub fn exact(&self) -> bool {
        self.lost.is_empty() && self.duplicated_effects.is_empty() && self.unexpected.is_empty()
    }
}

/// Accounts for every record of `inputs` against `alerts` and `dead_letters` (read back with
/// [`read_topic`]), checking non-alert completions in `store`. Inputs are read with `metrics`, as
/// the consumer reads them (JSON, Avro or Protobuf).
pub async fn verify(
    source_topic: &str,
    inputs: &[ReadBack],
    alerts: &[ReadBack],
    dead_letters: &[ReadBack],
    rules: &[AlertRule],
    store: &dyn IdempotencyStore,
    metrics: &MetricDecoder,
) -> Verdict {
    let mut verdict = Verdict {
        input_records: inputs.len(),
        ..Verdict::default()
    };
    // Inputs: the first record of each event id decides; later copies are duplicates.
    let mut expected_alerts: HashMap<String, (i64, String)> = HashMap::new();
    let mut completions_expected: Vec<String> = Vec::new();
    let mut seen_ids: HashSet<String> = HashSet::new();
    let mut poison: HashSet<(i32, i64)> = HashSet::new();
    // Read as records a chunk at a time (a copy of each value), the chunk's schemas fetched first.
    for chunk in inputs.chunks(1_000) {
        let records: Vec<KafkaRecord> = chunk
            .iter()
            .map(|input| {
                let mut record = KafkaRecord::new(source_topic, input.partition, input.offset);
                record.value = input.value.clone();
                record
            })
            .collect();
        if let Err(e) = metrics.prefetch(&records).await {
            let problem = format!("the inputs' schemas cannot be fetched: {e}");
            if !verdict.lost.contains(&problem) {
                verdict.lost.push(problem);
            }
        }
        for (input, record) in chunk.iter().zip(&records) {
            let metric = match input.value {
                Some(_) => metrics.decode(record).ok(),
                None => None,
            };
            let Some(metric) = metric else {
                if input.value.is_some() {
                    poison.insert((input.partition, input.offset));
                }
                continue;
            };
            // The consumer's idempotency key for it (the store holds it; alert ids start with it).
            let identity = metric.event_id.as_deref().map_or_else(
                || coordinates_key(source_topic, input.partition, input.offset),
                business_key,
            );
            if !seen_ids.insert(identity.clone()) {
                verdict.duplicated_inputs += 1;
                continue;
            }
            let mut alerting = false;
            for (index, rule) in rules.iter().enumerate() {
                if rule.matches(&metric) {
                    alerting = true;
                    let alert_id = format!("{identity}#{index}");
                    expected_alerts
                        .insert(alert_id, (input.timestamp.unwrap_or(0), identity.clone()));
                }
            }
            if !alerting {
                completions_expected.push(identity);
            }
        }
    }
    verdict.distinct_events = seen_ids.len();
    verdict.poison_inputs = poison.len();
    verdict.alerts_expected = expected_alerts.len();

    let mut alert_counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut latencies = Vec::new();
    for alert in alerts {
        verdict.alerts_found += 1;
        let Some(parsed) = alert
            .value
            .as_deref()
            .and_then(|v| serde_json::from_slice::<AlertOut>(v).ok())
        else {
            verdict.unexpected.push(format!(
                "alert at {}/{} is not an alert",
                alert.partition, alert.offset
            ));
            continue;
        };
        if parsed.source.topic != source_topic {
            continue;
        }
        match expected_alerts.get(&parsed.alert_id) {
            Some((produced_at, _)) => {
                if let Some(at) = alert.timestamp
                    && *produced_at > 0
                {
                    latencies.push(at - produced_at);
                }
            }
            // (A duplicated input's copy alerts under the same id as its first record.)
            None => verdict
                .unexpected
                .push(format!("alert {} matches no input", parsed.alert_id)),
        }
        *alert_counts.entry(parsed.alert_id).or_default() += 1;
    }
    for (id, count) in &alert_counts {
        if *count > 1 {
            verdict
                .duplicated_effects
                .push(format!("alert {id} published {count} times"));
        }
    }
    for id in expected_alerts.keys() {
        if !alert_counts.contains_key(id) {
            verdict.lost.push(format!("alert {id} missing"));
        }
    }

    let mut dead_lettered: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for entry in dead_letters {
        if entry.header(dlq::ORIGINAL_TOPIC).as_deref() != Some(source_topic) {
            continue;
        }
        verdict.dead_letters_found += 1;
        let partition = entry
            .header(dlq::ORIGINAL_PARTITION)
            .and_then(|p| p.parse().ok());
        let offset = entry
            .header(dlq::ORIGINAL_OFFSET)
            .and_then(|o| o.parse().ok());
        match (partition, offset) {
            (Some(p), Some(o)) => *dead_lettered.entry((p, o)).or_default() += 1,
            _ => verdict.unexpected.push(format!(
                "dead letter at {}/{} lacks provenance headers",
                entry.partition, entry.offset
            )),
        }
    }
    for (coordinates, count) in &dead_lettered {
        if !poison.contains(coordinates) {
            verdict.unexpected.push(format!(
                "dead letter for {coordinates:?}, which is not poison"
            ));
        }
        if *count > 1 {
            verdict.duplicated_effects.push(format!(
                "record {source_topic}/{}/{} dead-lettered {count} times",
                coordinates.0, coordinates.1
            ));
        }
    }
    for coordinates in &poison {
        if !dead_lettered.contains_key(coordinates) {
            verdict.lost.push(format!(
                "poison record {source_topic}/{}/{} not dead-lettered",
                coordinates.0, coordinates.1
            ));
        }
    }

    // Non-alert events: done in the idempotency store.
    let now = kafka_esm::retry::now_ms();
    for chunk in completions_expected.chunks(100) {
        let keys: Vec<&str> = chunk.iter().map(String::as_str).collect();
        match store.completed(&keys, now).await {
            Ok(done) => {
                for (key, outcome) in chunk.iter().zip(done) {
                    if outcome.is_none() {
                        verdict.lost.push(format!("event {key} not completed"));
                    }
                }
            }
            Err(e) => verdict.lost.push(format!("store unreadable: {e}")),
        }
    }
    verdict.lost.sort();
    verdict.duplicated_effects.sort();
    if !latencies.is_empty() {
        latencies.sort_unstable();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
        verdict.alert_latency_ms = Some([at(0.50), at(0.95), at(0.99), *latencies.last().unwrap()]);
    }
    verdict
}

/// `esm verify`: after a run, account for every record of the source topic (the consumer's
/// configuration names the alerts topic, the dead-letter topic, the rules and the idempotency store).
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// The source topic.
    #[arg(long)]
    pub topic: String,
    /// Kafka bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS).
    #[arg(long)]
    pub brokers: Option<String>,
    /// The longest read of one topic, seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_seconds: u64,
}

/// Runs `esm verify`: prints the verdict as JSON; exit 0 when exact, 1 otherwise.
pub async fn run_verify(args: VerifyArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("esm verify: {e}");
        ExitCode::from(2)
    };
    let mut config = match kafka_esm_telemetry::config::TelemetryConfig::from_env() {
        Ok(config) => config,
        Err(e) => return fail(&e),
    };
    let mut settings = config
        .consumer
        .kafka
        .take()
        .unwrap_or_else(|| KafkaSettings::new(String::new()));
    if let Some(brokers) = &args.brokers {
        settings.bootstrap_servers = brokers.clone();
    }
    if settings.bootstrap_servers.is_empty() {
        return fail(&"no brokers: give --brokers or set KAFKA_BOOTSTRAP_SERVERS");
    }
    let settings = match settings.resolve_secrets().await {
        Ok(settings) => settings,
        Err(e) => return fail(&e),
    };
    let store = match config.consumer.store.open().await {
        Ok(store) => store,
        Err(e) => return fail(&e),
    };
    let timeout = Duration::from_secs(args.timeout_seconds);
    let topics = [
        args.topic.clone(),
        config.alerts.topic.clone(),
        config.consumer.processor.dead_letter_topic_for(&args.topic),
    ];
    let [inputs, alerts, dead_letters] = match read_topics(settings, topics, timeout).await {
        [Ok(inputs), Ok(alerts), Ok(dead_letters)] => [inputs, alerts, dead_letters],
        [Err(e), _, _] | [_, Err(e), _] | [_, _, Err(e)] => return fail(&e),
    };
    let verdict = verify(
        &args.topic,
        &inputs,
        &alerts,
        &dead_letters,
        &config.alerts.rules,
        store.as_ref(),
        &kafka_esm_telemetry::app::metric_decoder(config.metric_format, &config.consumer, None),
    )
    .await;
    println!(
        "{}",
        serde_json::to_string(&verdict).expect("a verdict serializes")
    );
    if verdict.exact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
