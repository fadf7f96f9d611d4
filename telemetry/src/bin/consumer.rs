//! The consumer Lambda: wiring and configuration only; the logic lives in the library.

use std::sync::Arc;
use std::time::Duration;

use kafka_esm::consumer::Consumer;
use kafka_esm::handler::InvocationInfo;
use kafka_esm::observability;
use kafka_esm::processor::check_time_budget;
use kafka_esm::retry::Deadline;
use kafka_esm::sink::KafkaSink;
use kafka_esm_telemetry::TelemetryHandler;
use kafka_esm_telemetry::app::telemetry_consumer;
use kafka_esm_telemetry::config::TelemetryConfig;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::value::RawValue;

// The binaries allocate with mimalloc: a 6 MB batch makes ~100k small allocations that glibc would
// hand back to the kernel and fault in again on every invocation.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Everything built once per container (the SASL secret, if any, is fetched here, once).
async fn start() -> Result<(TelemetryConfig, Consumer<TelemetryHandler>), Box<dyn std::error::Error>>
{
    let config = TelemetryConfig::from_env_requiring_kafka()?;
    observability::init(config.consumer.log_format);
    // Lambda does not tell a function its timeout: the template passes it (ConsumerTimeout).
    if let Some(seconds) = std::env::var("FUNCTION_TIMEOUT_SECONDS")
        .ok()
        .filter(|s| !s.trim().is_empty())
    {
        let seconds: u64 = seconds.trim().parse().map_err(|_| {
            format!("FUNCTION_TIMEOUT_SECONDS={seconds:?} is not a whole number of seconds")
        })?;
        check_time_budget(
            Duration::from_secs(seconds),
            config.consumer.safety_margin,
            config.consumer.processor.publish_timeout,
        )?;
    }
    let kafka = config
        .consumer
        .kafka
        .clone()
        .expect("required above")
        .resolve_secrets()
        .await?;
    // One producer per container, shared by dead letters and alerts, reused across invocations.
    let sink = Arc::new(KafkaSink::new(&kafka)?);
    let store = config.consumer.store.open().await?;
    let consumer = telemetry_consumer(&config, store, sink.clone(), sink);
    Ok((config, consumer))
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let (config, consumer) = match start().await {
        Ok(started) => started,
        Err(error) => {
            // Lambda reports the exit as Runtime.ExitError with this line in the function's log.
            eprintln!("the consumer cannot start: {error}");
            std::process::exit(1);
        }
    };
    let consumer = &consumer;
    let (function_name, margin) = (
        config.consumer.function_name.as_str(),
        config.consumer.safety_margin,
    );
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<Box<RawValue>>| async move {
            let invocation = InvocationInfo::new(
                event.context.request_id.clone(),
                function_name,
                Deadline::from_epoch_ms(event.context.deadline, margin),
            );
            consumer
                .invoke(event.payload.get(), &invocation)
                .await
                .result
                .map_err(Diagnostic::from)
        },
    ))
    .await
}
