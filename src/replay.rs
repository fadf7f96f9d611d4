//! `esm replay`: runs ESM event files through exactly the Lambda's code path ([`Consumer::invoke`] of
//! the same handler, built from the same configuration), on embedded defaults: a persistent redb
//! idempotency store in a state directory, and dead letters and alerts written to JSON-lines files
//! there, unless a broker is named.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::app::telemetry_consumer;
use crate::config::ConsumerConfig;
use crate::consumer::Consumer;
use crate::handler::InvocationInfo;
use crate::idempotency::LocalStore;
use crate::kafka::KafkaSettings;
use crate::processor::RecordOutcome;
use crate::retry::Deadline;
use crate::sink::{DirectorySink, KafkaSink, MessageSink};
use crate::telemetry::TelemetryHandler;

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Where the idempotency store and the topic files live.
    pub state_dir: PathBuf,
    /// Start from an empty state directory.
    pub fresh: bool,
    /// Publish dead letters and alerts to this Kafka cluster instead of files.
    pub brokers: Option<String>,
    /// The function timeout each event is given.
    pub timeout: Duration,
}

/// A replay could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The state directory could not be used.
    #[error("the state directory {path} cannot be used: {message}")]
    State {
        /// The directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The broker client could not be created.
    #[error("cannot create a Kafka producer for {brokers}: {message}")]
    Kafka {
        /// The brokers.
        brokers: String,
        /// What failed.
        message: String,
    },
    /// An input path could not be read.
    #[error("cannot read {path}: {message}")]
    Input {
        /// The path.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// What one event file did: one JSON line of `esm replay --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileReport {
    /// The file.
    pub file: String,
    /// `aws:kafka`, `SelfManagedKafka`, or empty when the event was rejected.
    pub event_source: String,
    /// Partitions in the batch.
    pub partitions: usize,
    /// Records in the batch.
    pub records: usize,
    /// Handled now.
    pub processed: usize,
    /// Skipped as done before.
    pub duplicates: usize,
    /// Sent to the dead-letter topic.
    pub dead_lettered: usize,
    /// Left for the ESM to retry.
    pub failed: usize,
    /// Alerts published.
    pub alerts: u64,
    /// Wall time of the invocation, milliseconds.
    pub duration_ms: u64,
    /// True when the invocation succeeds (a partial batch response is a success).
    pub invocation_succeeded: bool,
    /// Exactly what the Lambda returns: the response, or its error payload.
    pub response: serde_json::Value,
    /// Per partition: key and counts.
    #[serde(skip)]
    pub partition_rows: Vec<PartitionRow>,
}

/// One row of the human table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRow {
    /// `"<topic>-<partition>"`.
    pub key: String,
    /// Offsets covered, first..last.
    pub offsets: String,
    /// Records.
    pub records: usize,
    /// Processed.
    pub processed: usize,
    /// Duplicates.
    pub duplicates: usize,
    /// Dead-lettered.
    pub dead_lettered: usize,
    /// Unfinished.
    pub failed: usize,
}

/// Runs event files through the telemetry consumer.
pub struct Replayer {
    consumer: Consumer<TelemetryHandler>,
    function_name: String,
    timeout: Duration,
    safety_margin: Duration,
    state_dir: PathBuf,
    uses_broker: bool,
}

impl Replayer {
    /// A replayer with `config` (read from the environment, like the Lambda's) and `options`.
    pub fn new(config: &ConsumerConfig, options: &ReplayOptions) -> Result<Self, ReplayError> {
        let state_error = |e: &dyn std::fmt::Display| ReplayError::State {
            path: options.state_dir.clone(),
            message: e.to_string(),
        };
        if options.fresh && options.state_dir.exists() {
            std::fs::remove_dir_all(&options.state_dir).map_err(|e| state_error(&e))?;
        }
        std::fs::create_dir_all(&options.state_dir).map_err(|e| state_error(&e))?;
        let store = Arc::new(
            LocalStore::open(&options.state_dir.join("idempotency.redb"))
                .map_err(|e| state_error(&e))?,
        );
        let sink: Arc<dyn MessageSink> = match &options.brokers {
            Some(brokers) => {
                let mut settings = config
                    .kafka
                    .clone()
                    .unwrap_or_else(|| KafkaSettings::new(brokers.clone()));
                settings.bootstrap_servers = brokers.clone();
                Arc::new(KafkaSink::new(&settings).map_err(|e| ReplayError::Kafka {
                    brokers: brokers.clone(),
                    message: e.to_string(),
                })?)
            }
            None => Arc::new(DirectorySink::new(options.state_dir.join("topics"))),
        };
        Ok(Self {
            consumer: telemetry_consumer(config, store, sink.clone(), sink),
            function_name: config.function_name.clone(),
            timeout: options.timeout,
            safety_margin: config.safety_margin,
            state_dir: options.state_dir.clone(),
            uses_broker: options.brokers.is_some(),
        })
    }

    /// Where topic files are written (when no broker is named).
    pub fn topics_dir(&self) -> Option<PathBuf> {
        (!self.uses_broker).then(|| self.state_dir.join("topics"))
    }

    /// Replays one event file.
    pub async fn replay_file(
        &self,
        path: &Path,
        sequence: usize,
    ) -> Result<FileReport, ReplayError> {
        let json = std::fs::read_to_string(path).map_err(|e| ReplayError::Input {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("event");
        let invocation = InvocationInfo::new(
            format!("replay-{}-{sequence}-{stem}", std::process::id()),
            self.function_name.clone(),
            Deadline::after(self.timeout, self.safety_margin),
        );
        let alerts_before = self.consumer.processor().handler().alerts_published();
        let started = Instant::now();
        let result = self.consumer.invoke(&json, &invocation).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let counts = result.report.counts();
        let partition_rows = result
            .report
            .partitions
            .iter()
            .map(|p| {
                let count =
                    |f: fn(&RecordOutcome) -> bool| p.outcomes.iter().filter(|(_, o)| f(o)).count();
                let offsets: Vec<i64> = p.outcomes.iter().filter_map(|(o, _)| *o).collect();
                PartitionRow {
                    key: p.key.clone(),
                    offsets: match (offsets.first(), offsets.last()) {
                        (Some(a), Some(b)) => format!("{a}..{b}"),
                        _ => "-".into(),
                    },
                    records: p.outcomes.len(),
                    processed: count(|o| matches!(o, RecordOutcome::Processed)),
                    duplicates: count(|o| matches!(o, RecordOutcome::Duplicate)),
                    dead_lettered: count(|o| matches!(o, RecordOutcome::DeadLettered(_))),
                    failed: count(RecordOutcome::needs_retry),
                }
            })
            .collect();
        Ok(FileReport {
            file: path.display().to_string(),
            event_source: result
                .batch
                .as_ref()
                .and_then(|b| b.event_source.clone())
                .unwrap_or_default(),
            partitions: result.batch.as_ref().map_or(0, |b| b.partitions.len()),
            records: counts.records,
            processed: counts.processed,
            duplicates: counts.duplicates,
            dead_lettered: counts.dead_lettered,
            failed: counts.unfinished,
            alerts: self.consumer.processor().handler().alerts_published() - alerts_before,
            duration_ms,
            invocation_succeeded: result.result.is_ok(),
            response: result.answer_json(),
            partition_rows,
        })
    }
}

/// The event files named by `paths`: files as given, directories' `*.json` files (not recursive),
/// sorted by name.
pub fn event_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ReplayError> {
    let mut files = Vec::new();
    for path in paths {
        let input_error = |e: std::io::Error| ReplayError::Input {
            path: path.clone(),
            message: e.to_string(),
        };
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(input_error)?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "json"))
                .collect();
            found.sort();
            files.extend(found);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            return Err(input_error(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file or directory",
            )));
        }
    }
    Ok(files)
}

/// The human table for one file.
pub fn render_table(report: &FileReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}  [{}; {} partitions; {} records; {} ms]",
        report.file,
        if report.event_source.is_empty() {
            "rejected"
        } else {
            &report.event_source
        },
        report.partitions,
        report.records,
        report.duration_ms
    );
    if !report.partition_rows.is_empty() {
        let width = report
            .partition_rows
            .iter()
            .map(|r| r.key.len())
            .max()
            .unwrap_or(0)
            .max(15);
        let _ = writeln!(
            out,
            "  {:<width$}  {:>13}  {:>7}  {:>9}  {:>10}  {:>13}  {:>6}",
            "topic-partition",
            "offsets",
            "records",
            "processed",
            "duplicates",
            "dead-lettered",
            "failed"
        );
        for r in &report.partition_rows {
            let _ = writeln!(
                out,
                "  {:<width$}  {:>13}  {:>7}  {:>9}  {:>10}  {:>13}  {:>6}",
                r.key, r.offsets, r.records, r.processed, r.duplicates, r.dead_lettered, r.failed
            );
        }
        let _ = writeln!(
            out,
            "  {:<width$}  {:>13}  {:>7}  {:>9}  {:>10}  {:>13}  {:>6}",
            "total",
            "",
            report.records,
            report.processed,
            report.duplicates,
            report.dead_lettered,
            report.failed
        );
    }
    let _ = writeln!(
        out,
        "  alerts published: {}   answer: {} {}",
        report.alerts,
        if report.invocation_succeeded {
            "success"
        } else {
            "FAILURE"
        },
        report.response
    );
    out
}
