//! Realistic telemetry batches of a chosen size, for load and benchmarks (`esm generate`).
//!
//! Records are spread round-robin over partitions with increasing offsets; values are metric events
//! of the reference app with realistic names and ranges (about one in ten breaks the default CPU rule),
//! headers carry a content type and a binary trace id; a chosen share is poison of the kinds real
//! topics see (not JSON, a missing field, a wrong type). The same seed gives the same batch.

use crate::{MetricEncoder, MetricEvent, MetricFormat};
use kafka_esm::encode::{Source, encode_event};
use kafka_esm::record::{Header, KafkaRecord, TimestampType};

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Source topic.
    pub topic: String,
    /// Partitions the records are spread over.
    pub partitions: i32,
    /// Stop at this many records...
    pub records: Option<usize>,
    /// ...or at the most records whose event fits in this many bytes (the ESM's limit is 6 MB).
    pub max_bytes: Option<usize>,
    /// Share of poison records, in percent.
    pub poison_percent: f64,
    /// MSK or self-managed.
    pub source: Source,
    /// Seed of the pseudo-random generator.
    pub seed: u64,
    /// First offset of every partition.
    pub first_offset: i64,
    /// How values are written (JSON unless an Avro or Protobuf encoder is given).
    pub encoder: MetricEncoder,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            topic: "telemetry.metrics".into(),
            partitions: 4,
            records: Some(1_000),
            max_bytes: None,
            poison_percent: 1.0,
            source: Source::SelfManaged,
            seed: 42,
            first_offset: 0,
            encoder: MetricEncoder::json(),
        }
    }
}

const DATABASES: [&str; 5] = ["postgres", "mysql", "mongodb", "redis", "aurora-postgresql"];
const METRICS: [(&str, f64, f64); 6] = [
    ("cpu_usage_percent", 5.0, 98.0),
    ("memory_usage_percent", 20.0, 95.0),
    ("active_connections", 1.0, 900.0),
    ("replication_lag_seconds", 0.0, 45.0),
    ("disk_usage_percent", 10.0, 92.0),
    ("read_iops", 50.0, 12_000.0),
];
const REGIONS: [&str; 3] = ["eu-west-1", "us-east-1", "ap-southeast-2"];

/// The records of a generated batch.
pub fn generate_records(options: &GenerateOptions, count: usize) -> Vec<KafkaRecord> {
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let partitions = options.partitions.max(1);
    let poison_every = if options.poison_percent > 0.0 {
        (100.0 / options.poison_percent).round().max(1.0) as usize
    } else {
        usize::MAX
    };
    let base_ms: i64 = 1_795_000_000_000;
    let content_type = match options.encoder.format() {
        MetricFormat::Json => "application/json",
        MetricFormat::Avro => "application/avro",
        MetricFormat::Protobuf => "application/x-protobuf",
    };
    (0..count)
        .map(|n| {
            let partition = (n as i32) % partitions;
            let offset = options.first_offset + (n as i64) / i64::from(partitions);
            let timestamp = base_ms + n as i64 * 7;
            let metric =
                random_metric(&mut rng, format!("{:016x}-{n:08}", options.seed), timestamp);
            let key = metric.alert_key().into_bytes();
            let value = if n % poison_every == poison_every / 2 {
                poison(n / poison_every, &metric)
            } else {
                options
                    .encoder
                    .encode(&metric)
                    .expect("a generated metric encodes")
            };
            let mut trace = [0u8; 16];
            trace.iter_mut().for_each(|b| *b = rng.u8(..));
            KafkaRecord {
                topic: options.topic.clone(),
                partition,
                offset,
                timestamp: Some(timestamp),
                timestamp_type: Some(TimestampType::CreateTime),
                key: Some(key),
                value: Some(value),
                headers: vec![
                    Header::new("content-type", content_type),
                    Header::new("trace-id", trace.to_vec()),
                ],
                key_schema: None,
                value_schema: None,
            }
        })
        .collect()
}

/// A realistic metric taken at `timestamp_ms`.
fn random_metric(rng: &mut fastrand::Rng, event_id: String, timestamp_ms: i64) -> MetricEvent {
    let database_type = DATABASES[rng.usize(..DATABASES.len())];
    let instance_id = format!("{database_type}-{:03}", rng.u32(1..40));
    let (metric_name, low, high) = METRICS[rng.usize(..METRICS.len())];
    let value = ((low + rng.f64() * (high - low)) * 100.0).round() / 100.0;
    MetricEvent {
        event_id: Some(event_id),
        timestamp: chrono::DateTime::from_timestamp_millis(timestamp_ms)
            .unwrap_or_default()
            .fixed_offset(),
        database_type: database_type.into(),
        instance_id,
        metric_name: metric_name.into(),
        value: value.min(high),
        tags: Some(
            [
                (
                    "region".to_owned(),
                    REGIONS[rng.usize(..REGIONS.len())].to_owned(),
                ),
                ("environment".to_owned(), "production".to_owned()),
            ]
            .into(),
        ),
    }
}

/// `count` realistic metrics taken now, as a scheduled collector would gather them: what the
/// producer Lambda publishes on each tick of its schedule.
pub fn generate_metrics(seed: u64, count: usize) -> Vec<MetricEvent> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let now = kafka_esm::retry::now_ms() as i64;
    (0..count)
        .map(|n| random_metric(&mut rng, format!("{seed:016x}-{n:08}"), now))
        .collect()
}

/// A poison value of the `k`-th kind, made from a good metric (JSON that is not a metric: poison in
/// every format).
fn poison(k: usize, metric: &MetricEvent) -> Vec<u8> {
    let mut json = serde_json::to_value(metric).expect("a metric serializes");
    match k % 3 {
        0 => return b"{\"event_id\": \"truncated".to_vec(),
        1 => {
            json.as_object_mut().expect("object").remove("value");
        }
        _ => json["value"] = serde_json::Value::String("high".into()),
    }
    serde_json::to_vec(&json).expect("a value serializes")
}

/// A generated ESM event: `(json, records)`.
pub fn generate_event(options: &GenerateOptions) -> (String, usize) {
    let encode = |n: usize| {
        encode_event(
            &options.source,
            "b-1.example:9092,b-2.example:9092",
            &generate_records(options, n),
        )
    };
    match (options.records, options.max_bytes) {
        (Some(n), None) => (encode(n), n),
        (records, Some(max_bytes)) => {
            // Estimate from a sample, then step down until it fits.
            let sample = encode(200).len() as f64 / 200.0;
            let mut n = ((max_bytes as f64 / sample) as usize).max(1);
            if let Some(cap) = records {
                n = n.min(cap);
            }
            loop {
                let json = encode(n);
                if json.len() <= max_bytes || n == 1 {
                    return (json, n);
                }
                let over = json.len() - max_bytes;
                n -= ((over as f64 / sample).ceil() as usize).clamp(1, n - 1);
            }
        }
        (None, None) => (encode(0), 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_esm::event::decode_event;
    use kafka_esm::record::DecodedRecord;

    #[test]
    fn fits_the_size_and_spreads_over_partitions() {
        let options = GenerateOptions {
            records: None,
            max_bytes: Some(300_000),
            ..GenerateOptions::default()
        };
        let (json, n) = generate_event(&options);
        assert!(
            json.len() <= 300_000 && json.len() > 290_000,
            "{}",
            json.len()
        );
        let batch = decode_event(&json).unwrap();
        assert_eq!(batch.record_count(), n);
        assert_eq!(batch.partitions.len(), 4);
        let poison = batch
            .partitions
            .iter()
            .flat_map(|p| &p.records)
            .filter(|r| match r {
                DecodedRecord::Record(r) => {
                    serde_json::from_slice::<MetricEvent>(r.value.as_deref().unwrap()).is_err()
                }
                DecodedRecord::Undecodable(_) => true,
            })
            .count();
        assert_eq!(
            poison,
            (0..n).filter(|m| m % 100 == 50).count(),
            "1% poison"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_batch() {
        let o = GenerateOptions::default();
        assert_eq!(generate_event(&o), generate_event(&o));
    }
}
