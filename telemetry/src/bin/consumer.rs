//! The consumer Lambda: the telemetry handler run by the library's entry point
//! ([`kafka_esm::lambda`]), which reads the generic configuration, checks the time budget, opens the
//! store and the schema source, creates the Kafka producer and serves the Runtime API. Only the
//! alert settings and the metrics' format (`METRIC_FORMAT`) are the app's own: they are read with
//! the rest, so every problem is reported at once, and the alerts go through the same producer as
//! the dead letters.

use kafka_esm::lambda::{Builder, Error, Lambda};
use kafka_esm_telemetry::TelemetryHandler;
use kafka_esm_telemetry::app::{metric_decoder, telemetry_handler};
use kafka_esm_telemetry::config::{AlertSettings, read_metric_format};

// The binaries allocate with mimalloc: a 6 MB batch makes ~100k small allocations that glibc would
// hand back to the kernel and fault in again on every invocation.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Everything built once per container (the SASL secret, if any, is fetched here, once).
async fn start() -> Result<Lambda<TelemetryHandler>, Error> {
    let (builder, (alerts, format)) =
        Builder::from_env_with(|env| (AlertSettings::read(env), read_metric_format(env)))?;
    builder
        .build_with(|parts| {
            telemetry_handler(&parts.config, &alerts, parts.sink.clone())
                .with_metrics(metric_decoder(format, &parts.config, parts.schemas.clone()))
        })
        .await
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let lambda = match start().await {
        Ok(lambda) => lambda,
        Err(error) => {
            // Lambda reports the exit as Runtime.ExitError with this in the function's log.
            eprintln!("the consumer cannot start: {error}");
            std::process::exit(1);
        }
    };
    lambda.serve().await
}
