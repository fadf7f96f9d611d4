//! The full consumer path on a 6 MB batch beside its floor, in one run:
//!
//! - `floor`: parse the ESM envelope, base64-decode every key and value, parse every value as the
//!   reference app's metric JSON; nothing else.
//! - `decode_only`: this crate's ESM decoding alone.
//! - `decode_and_deserialize`: the floor's work done by this crate's code (decoding, then the handler's
//!   deserialization of every value): `full_path` minus this is the cost of processing itself.
//! - `full_path`: `Consumer::invoke` of the telemetry app with the in-memory idempotency store and an
//!   in-memory sink: decoding, deserialization, idempotency claims, alert rules, alert and dead-letter
//!   publication, the ESM response.
//!
//! Run: `cargo bench --bench throughput`. The batch is ~9,500 records over 4 partitions, 1% poison.
//!
//! `paired_avro` does the same with the metrics in Avro (Confluent-framed, schema id 1, the writer
//! schema found in a schema source): 6 MB holds more of them. Its floor parses the envelope,
//! base64-decodes every key and value, and decodes every value's Avro body into a struct with the
//! metric's schema; the full path is the telemetry consumer with `METRIC_FORMAT=avro`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kafka_esm::consumer::Consumer;
use kafka_esm::event::decode_event;
use kafka_esm::format::SchemaId;
use kafka_esm::handler::{InvocationInfo, RecordHandler};
use kafka_esm::idempotency::MemoryStore;
use kafka_esm::retry::Deadline;
use kafka_esm::sink::MemorySink;
use kafka_esm_telemetry::app::telemetry_consumer;
use kafka_esm_telemetry::config::TelemetryConfig;
use kafka_esm_telemetry::generate::{GenerateOptions, generate_event};
use kafka_esm_telemetry::metric_format::METRIC_AVSC;
use kafka_esm_telemetry::{MetricEncoder, MetricEvent, MetricFormat, TelemetryHandler};
use serde::Deserialize;

// Same allocator as the binaries (src/bin/*.rs), for floor and full path alike.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Deserialize)]
struct FloorEvent<'a> {
    #[serde(borrow)]
    records: HashMap<&'a str, Vec<FloorRecord<'a>>>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct FloorRecord<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: i64,
    #[serde(rename = "timestampType")]
    timestamp_type: &'a str,
    key: Option<&'a str>,
    value: Option<&'a str>,
    #[serde(borrow)]
    headers: Vec<HashMap<&'a str, Vec<i8>>>,
}

/// Returns how many values parsed, so the work cannot be optimised away.
fn floor(json: &str) -> usize {
    floor_with(json, |bytes| {
        serde_json::from_slice::<MetricEvent>(bytes).is_ok()
    })
}

/// The envelope parsed, every key and value base64-decoded, and each value given to `parse`:
/// how many it parsed.
fn floor_with(json: &str, parse: impl Fn(&[u8]) -> bool) -> usize {
    let event: FloorEvent<'_> = serde_json::from_str(json).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut parsed = 0;
    for records in event.records.values() {
        for r in records {
            let _key = r.key.map(|k| b64.decode(k).unwrap());
            if let Some(v) = r.value {
                let bytes = b64.decode(v).unwrap();
                parsed += usize::from(parse(&bytes));
            }
        }
    }
    parsed
}

fn batch() -> String {
    batch_in(MetricEncoder::json())
}

fn batch_in(encoder: MetricEncoder) -> String {
    let options = GenerateOptions {
        records: None,
        max_bytes: Some(6_000_000),
        partitions: 4,
        poison_percent: 1.0,
        encoder,
        ..GenerateOptions::default()
    };
    generate_event(&options).0
}

/// The metric as the Avro floor reads it (named like the Avro record, as the one-pass reader wants).
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(rename = "MetricEvent")]
struct FloorAvroMetric {
    event_id: Option<String>,
    timestamp: i64,
    database_type: String,
    instance_id: String,
    metric_name: String,
    value: f64,
    tags: Option<std::collections::BTreeMap<String, String>>,
}

/// The Avro floor: envelope, base64, and each value's body (after its 5-byte Confluent header)
/// decoded with the metric's schema into a struct by apache-avro's fastest way (one pass, the
/// reader built once). Returns how many values decoded.
fn floor_avro(json: &str, schema: &apache_avro::Schema) -> usize {
    let reader = apache_avro::reader::datum::GenericDatumReader::builder(schema)
        .build()
        .unwrap();
    floor_with(json, |bytes| match bytes {
        [0, _, _, _, _, body @ ..] => {
            let mut body: &[u8] = body;
            reader.read_deser::<FloorAvroMetric>(&mut body).is_ok()
        }
        _ => false,
    })
}

/// A consumer with an empty in-memory store and sink (so nothing is a duplicate), and a long deadline.
fn fresh_consumer(config: &TelemetryConfig) -> (Consumer<TelemetryHandler>, InvocationInfo) {
    let sink = Arc::new(MemorySink::new());
    let consumer = telemetry_consumer(config, Arc::new(MemoryStore::new()), sink.clone(), sink);
    let invocation = InvocationInfo::new(
        "bench",
        "bench",
        Deadline::after(Duration::from_secs(900), Duration::from_secs(2)),
    );
    (consumer, invocation)
}

fn bench(c: &mut Criterion) {
    let json = batch();
    let records = decode_event(&json).unwrap().record_count();
    eprintln!("batch: {} bytes, {records} records", json.len());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = TelemetryConfig::from_lookup(&|_| None).unwrap();

    let mut group = c.benchmark_group("6MB_batch");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(12));
    group.throughput(Throughput::Bytes(json.len() as u64));
    group.bench_function("floor", |b| b.iter(|| floor(std::hint::black_box(&json))));
    group.bench_function("decode_only", |b| {
        b.iter(|| decode_event(std::hint::black_box(&json)).unwrap())
    });
    let handler = TelemetryHandler::new(
        Vec::new(),
        "alerts",
        Arc::new(MemorySink::new()),
        Duration::from_secs(1),
    );
    group.bench_function("decode_and_deserialize", |b| {
        b.iter(|| {
            let batch = decode_event(std::hint::black_box(&json)).unwrap();
            let mut parsed = 0usize;
            for p in &batch.partitions {
                for slot in &p.records {
                    if let kafka_esm::record::DecodedRecord::Record(r) = slot {
                        parsed += usize::from(handler.deserialize(r).is_ok());
                    }
                }
            }
            parsed
        })
    });
    group.bench_function("full_path", |b| {
        b.iter_batched(
            || fresh_consumer(&config),
            |(consumer, invocation)| {
                let result = runtime.block_on(consumer.invoke(&json, &invocation));
                assert!(result.result.is_ok());
                (consumer, result)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// Floor and full path alternated, one pair at a time, so that a noisy or drifting machine slows both
/// alike: prints the medians and the median of the per-pair ratios.
fn paired(c: &mut Criterion) {
    let _ = c;
    let json = batch();
    let config = TelemetryConfig::from_lookup(&|_| None).unwrap();
    let records = decode_event(&json).unwrap().record_count();
    let (floor_ms, full_ms, ratio) = interleaved(&json, &config, || floor(&json), |_| {});
    println!(
        "paired (100 interleaved pairs): floor {floor_ms:.2} ms, full path {full_ms:.2} ms, ratio {ratio:.3}; \
         full path {:.0} records/s, {:.0} MB/s",
        records as f64 / (full_ms / 1e3),
        json.len() as f64 / 1e6 / (full_ms / 1e3)
    );
}

/// As [`paired`], with the metrics in Avro: `paired_avro`.
fn paired_avro(c: &mut Criterion) {
    let _ = c;
    let json =
        batch_in(MetricEncoder::new(MetricFormat::Avro, Some(SchemaId::Confluent(1))).unwrap());
    let schema = apache_avro::Schema::parse_str(METRIC_AVSC).unwrap();
    let schemas = tempfile::tempdir().unwrap();
    std::fs::write(schemas.path().join("1.avsc"), METRIC_AVSC).unwrap();
    let config = TelemetryConfig::from_lookup(&|name| match name {
        "METRIC_FORMAT" => Some("avro".into()),
        "SCHEMA_DIR" => Some(schemas.path().display().to_string()),
        _ => None,
    })
    .unwrap();
    let records = decode_event(&json).unwrap().record_count();
    let decoded = floor_avro(&json, &schema);
    assert!(
        decoded * 100 >= records * 98,
        "{decoded} of {records} decode"
    );
    // Only the 1% poison is dead-lettered: the Avro values decode.
    let check = |sink: &MemorySink| {
        let dead_letters = sink.messages_to("telemetry.metrics.dlq").len();
        assert!(
            dead_letters * 50 <= records,
            "{dead_letters} dead letters of {records}"
        );
    };
    let (floor_ms, full_ms, ratio) =
        interleaved(&json, &config, || floor_avro(&json, &schema), check);
    println!(
        "paired_avro (100 interleaved pairs, {records} records, {} bytes): floor {floor_ms:.2} ms, full path {full_ms:.2} ms, ratio {ratio:.3}; \
         full path {:.0} records/s",
        json.len(),
        records as f64 / (full_ms / 1e3),
    );
}

/// `floor` and the telemetry consumer's `invoke` of `json` alternated over 120 rounds (the first 20
/// warm up; `check` looks at the first round's sink): the median floor and full-path times (ms) and
/// the median of the per-pair ratios.
fn interleaved(
    json: &str,
    config: &TelemetryConfig,
    floor: impl Fn() -> usize,
    check: impl Fn(&MemorySink),
) -> (f64, f64, f64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut floors, mut fulls, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..120 {
        let sink = Arc::new(MemorySink::new());
        let consumer = telemetry_consumer(
            config,
            Arc::new(MemoryStore::new()),
            sink.clone(),
            sink.clone(),
        );
        let invocation = InvocationInfo::new(
            "bench",
            "bench",
            Deadline::after(Duration::from_secs(900), Duration::from_secs(2)),
        );
        let started = std::time::Instant::now();
        std::hint::black_box(floor());
        let floor_time = started.elapsed();
        let started = std::time::Instant::now();
        let result = runtime.block_on(consumer.invoke(json, &invocation));
        let full_time = started.elapsed();
        assert!(result.result.is_ok());
        if round == 0 {
            check(&sink);
        }
        drop((result, consumer));
        if round >= 20 {
            floors.push(floor_time.as_secs_f64());
            fulls.push(full_time.as_secs_f64());
            ratios.push(full_time.as_secs_f64() / floor_time.as_secs_f64());
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (
        median(&mut floors) * 1e3,
        median(&mut fulls) * 1e3,
        median(&mut ratios),
    )
}

criterion_group!(benches, bench, paired, paired_avro);
criterion_main!(benches);
