//! The producer path against rdkafka's in-process `MockCluster`: 100,000 metric events validated,
//! keyed and produced with idempotence on (`acks=all`), every delivery report awaited.
//!
//! Run: `cargo bench --bench producer`.

use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kafka_esm::kafka::KafkaSettings;
use kafka_esm::retry::Deadline;
use kafka_esm_telemetry::generate::generate_metrics;
use kafka_esm_telemetry::producer::{MetricProducer, ProducerSettings};
use rdkafka::mocking::MockCluster;

// Same allocator as the binaries.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RECORDS: usize = 100_000;

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic("telemetry.metrics", 6, 1).unwrap();
    cluster.create_topic("telemetry.metrics.dlq", 1, 1).unwrap();
    let mut settings = KafkaSettings::new(cluster.bootstrap_servers());
    settings.delivery_timeout = Duration::from_secs(60);
    let producer = {
        let _guard = runtime.enter();
        MetricProducer::new(
            settings.create_producer().unwrap(),
            ProducerSettings {
                topic: "telemetry.metrics".into(),
                dead_letter_topic: "telemetry.metrics.dlq".into(),
            },
        )
    };
    let metrics: Vec<serde_json::Value> = generate_metrics(7, RECORDS)
        .iter()
        .map(|m| serde_json::to_value(m).unwrap())
        .collect();

    let mut group = c.benchmark_group("producer");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("100k_metrics_idempotent", |b| {
        b.iter_batched(
            || metrics.clone(),
            |inputs| {
                let report = runtime.block_on(producer.produce(
                    inputs,
                    &Deadline::after(Duration::from_secs(120), Duration::ZERO),
                ));
                assert_eq!(report.delivered, RECORDS);
                report
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
