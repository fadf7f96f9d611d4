//! The producer Lambda: wiring and configuration only; the logic lives in `kafka_esm_telemetry::producer`.
//!
//! Input: an array of metric events, `{"metrics": [...]}`, `{"generate": N}`, or an EventBridge
//! scheduled event (which collects `GENERATE_COUNT` metrics). Output: the `ProduceReport` with one
//! result per input. The invocation fails (so the caller retries) when any valid metric could be
//! neither delivered nor dead-lettered.

use kafka_esm::observability;
use kafka_esm::retry::{Deadline, now_ms};
use kafka_esm_telemetry::config::ProducerConfig;
use kafka_esm_telemetry::generate::generate_metrics;
use kafka_esm_telemetry::producer::{MetricProducer, ProduceReport, ProducerRequest};
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::Value;

// See telemetry/src/bin/consumer.rs: mimalloc keeps large batches from faulting pages in on every invocation.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Built once per container: the configuration, and one producer reused across invocations.
async fn start() -> Result<(ProducerConfig, MetricProducer), Box<dyn std::error::Error>> {
    let config = ProducerConfig::from_env()?;
    observability::init(config.log_format);
    let kafka = config.kafka.clone().resolve_secrets().await?;
    // Avro and Protobuf metrics: the schema is registered now (or its id was given), once.
    let encoder = config.metrics.encoder().await?;
    let producer = MetricProducer::new(kafka.create_producer()?, config.producer.clone())
        .with_encoder(encoder);
    Ok((config, producer))
}

async fn handle(
    config: &ProducerConfig,
    producer: &MetricProducer,
    event: LambdaEvent<Value>,
) -> Result<ProduceReport, Diagnostic> {
    let deadline = Deadline::from_epoch_ms(event.context.deadline, config.safety_margin);
    let request =
        ProducerRequest::from_json(event.payload, config.scheduled_count).map_err(|e| {
            Diagnostic {
                error_type: "InvalidRequest".into(),
                error_message: e.to_string(),
            }
        })?;
    let metrics = match request {
        ProducerRequest::Metrics(metrics) => metrics,
        ProducerRequest::Generate(n) => generate_metrics(now_ms(), n)
            .iter()
            .map(|m| serde_json::to_value(m).expect("a metric serializes"))
            .collect(),
    };
    let report = producer.produce(metrics, &deadline).await;
    if report.all_accounted_for() {
        Ok(report)
    } else {
        Err(Diagnostic {
            error_type: "NotDelivered".into(),
            error_message: format!(
                "{} of {} metrics were neither delivered nor dead-lettered; retry the request (consumers deduplicate by event_id). Delivered {}, dead-lettered {}, rejected {}. First reason: {}",
                report.not_delivered,
                report.results.len(),
                report.delivered,
                report.dead_lettered,
                report.rejected,
                report
                    .results
                    .iter()
                    .find_map(|r| match &r.status {
                        kafka_esm_telemetry::producer::RecordStatus::NotDelivered { reason } =>
                            Some(reason.as_str()),
                        _ => None,
                    })
                    .unwrap_or_default()
            ),
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let (config, producer) = match start().await {
        Ok(started) => started,
        Err(error) => {
            eprintln!("the producer cannot start: {error}");
            std::process::exit(1);
        }
    };
    let (config, producer) = (&config, &producer);
    lambda_runtime::run(service_fn(move |event| handle(config, producer, event))).await
}
