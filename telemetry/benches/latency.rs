//! The 6 MB batch when every store call and every acknowledgement is a network round trip away,
//! timed without a server's own time in the way.
//!
//! The telemetry consumer (`telemetry_consumer`, as the Lambda wires it) with the in-memory store
//! behind a fixed latency per call, and the in-memory sink with the same latency before each
//! acknowledgement. Each store call stands for one round trip of the DynamoDB store: the chunk's
//! batch read (`BatchGetItem`), its claims (`TransactWriteItems`), its completions (`BatchWriteItem`s
//! sent together). That the real store makes exactly those round trips is measured by the `io`
//! bench against moto (3.00 per chunk), whose own time (a Python server answering one request at a
//! time, 30-40 ms for 100 items) rules out timing the batch there.
//!
//! Two paths, each on a fresh store then again on the same store (every record a duplicate):
//!
//! - `batched`: as the Lambda runs (chunk calls, pipelined publishes: one acknowledgement wait per
//!   chunk);
//! - `today`: one call per key (the store implements only the single-key methods, so the trait's
//!   per-key defaults run) and each publish awaited on its own (`PIPELINE_PUBLISHES=false`).
//!
//! Run: `cargo bench -p kafka-esm-telemetry --bench latency` (`LATENCY_MS`, default 5; `RUNS` of the
//! batched path, default 3; `PATHS`, default `batched,today`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kafka_esm::handler::InvocationInfo;
use kafka_esm::idempotency::{Claim, CompletedOutcome, IdempotencyStore, MemoryStore, StoreError};
use kafka_esm::retry::Deadline;
use kafka_esm::sink::MemorySink;
use kafka_esm_telemetry::MetricEncoder;
use kafka_esm_telemetry::app::telemetry_consumer;
use kafka_esm_telemetry::config::TelemetryConfig;
use kafka_esm_telemetry::generate::{GenerateOptions, generate_event};

#[path = "support/one_at_a_time.rs"]
mod one_at_a_time;
use one_at_a_time::OneAtATime;
#[path = "support/settings.rs"]
mod settings;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The in-memory store a round trip away: every call waits `latency`, then answers.
struct Remote {
    store: MemoryStore,
    latency: Duration,
    /// Calls made, shared with the bench.
    calls: Arc<AtomicUsize>,
}

impl Remote {
    async fn round_trip(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(self.latency).await;
    }
}

#[async_trait]
impl IdempotencyStore for Remote {
    async fn completed(
        &self,
        keys: &[&str],
        now_ms: u64,
    ) -> Result<Vec<Option<CompletedOutcome>>, StoreError> {
        self.round_trip().await;
        self.store.completed(keys, now_ms).await
    }

    async fn try_claim(
        &self,
        key: &str,
        now_ms: u64,
        lock_until_ms: u64,
    ) -> Result<Claim, StoreError> {
        self.round_trip().await;
        self.store.try_claim(key, now_ms, lock_until_ms).await
    }

    async fn try_claim_many(
        &self,
        keys: &[&str],
        now_ms: u64,
        lock_until_ms: u64,
    ) -> Result<Vec<Claim>, StoreError> {
        self.round_trip().await;
        self.store.try_claim_many(keys, now_ms, lock_until_ms).await
    }

    async fn complete(
        &self,
        key: &str,
        outcome: CompletedOutcome,
        keep_until_ms: u64,
    ) -> Result<(), StoreError> {
        self.round_trip().await;
        self.store.complete(key, outcome, keep_until_ms).await
    }

    async fn complete_many(
        &self,
        done: &[(&str, CompletedOutcome)],
        keep_until_ms: u64,
    ) -> Result<(), StoreError> {
        self.round_trip().await;
        self.store.complete_many(done, keep_until_ms).await
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.round_trip().await;
        self.store.release(key).await
    }

    async fn release_many(&self, keys: &[&str]) -> Result<(), StoreError> {
        self.round_trip().await;
        self.store.release_many(keys).await
    }

    async fn abandon(&self, key: &str, lock_until_ms: u64, now_ms: u64) -> Result<(), StoreError> {
        self.round_trip().await;
        self.store.abandon(key, lock_until_ms, now_ms).await
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter naming another bench skips this one.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"latency".contains(a.as_str()))
    {
        return;
    }
    let env_number =
        |name, default| settings::env_number(name, default).unwrap_or_else(|e| panic!("{e}"));
    let latency = Duration::from_millis(env_number("LATENCY_MS", 5));
    let runs = env_number("RUNS", 3).max(1);
    let paths = settings::env_list("PATHS", "batched,today", &["batched", "today"])
        .unwrap_or_else(|e| panic!("{e}"));
    let options = GenerateOptions {
        records: None,
        max_bytes: Some(6_000_000),
        partitions: 4,
        poison_percent: 1.0,
        encoder: MetricEncoder::json(),
        ..GenerateOptions::default()
    };
    let json = generate_event(&options).0;
    let batch = kafka_esm::event::decode_event(&json).expect("the generated event decodes");
    let records = batch.record_count();
    let chunks: usize = batch
        .partitions
        .iter()
        .map(|p| p.records.len().div_ceil(kafka_esm::processor::READ_AHEAD))
        .sum();
    println!(
        "latency: {} bytes, {records} records in {chunks} chunks, {} ms per store call and per acknowledgement",
        json.len(),
        latency.as_millis()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for path in &paths {
        let one_at_a_time = path == "today";
        let mut config = TelemetryConfig::from_lookup(&|_| None).unwrap();
        config.consumer.processor.pipeline_publishes = !one_at_a_time;
        let runs = if one_at_a_time { 1 } else { runs };
        let mut lines = Vec::new();
        for _ in 0..runs {
            let calls = Arc::new(AtomicUsize::new(0));
            let remote = Remote {
                store: MemoryStore::new(),
                latency,
                calls: calls.clone(),
            };
            let store: Arc<dyn IdempotencyStore> = if one_at_a_time {
                Arc::new(OneAtATime(remote))
            } else {
                Arc::new(remote)
            };
            let sink = Arc::new(MemorySink::new());
            sink.set_ack_delay(latency);
            let consumer = telemetry_consumer(&config, store, sink.clone(), sink.clone());
            for round in ["fresh", "duplicates"] {
                let invocation = InvocationInfo::new(
                    "bench",
                    "bench",
                    Deadline::after(Duration::from_secs(900), Duration::from_secs(2)),
                );
                let before = calls.load(Ordering::Relaxed);
                let started = Instant::now();
                let result = runtime.block_on(consumer.invoke(&json, &invocation));
                let wall = started.elapsed();
                assert!(
                    result.result.is_ok(),
                    "{path} {round}: the invocation failed"
                );
                let made = calls.load(Ordering::Relaxed) - before;
                lines.push((round, wall, made));
            }
        }
        for round in ["fresh", "duplicates"] {
            let mut walls: Vec<Duration> = lines
                .iter()
                .filter(|(r, _, _)| *r == round)
                .map(|(_, wall, _)| *wall)
                .collect();
            walls.sort();
            let calls = lines.iter().find(|(r, _, _)| *r == round).unwrap().2;
            let median = walls[walls.len() / 2];
            println!(
                "latency {path} {round}: {:.2} s (min {:.2}, max {:.2}, {} runs), {:.0} records/s, {calls} store round trips ({:.2} per chunk)",
                median.as_secs_f64(),
                walls[0].as_secs_f64(),
                walls[walls.len() - 1].as_secs_f64(),
                walls.len(),
                records as f64 / median.as_secs_f64(),
                calls as f64 / chunks as f64,
            );
        }
    }
}
