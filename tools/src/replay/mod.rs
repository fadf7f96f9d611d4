//! `esm replay`: runs ESM event files through exactly the Lambda's code path ([`Consumer::invoke`] of
//! the same handler, built from the same configuration), on embedded defaults: a persistent redb
//! idempotency store in a state directory unless `IDEMPOTENCY_STORE` names another (as it does for
//! the Lambda: see [`replay_store`]), and dead letters and the handler's messages (the reference
//! app's alerts) written to JSON-lines files there, unless a broker is named.
//!
//! Any handler replays: [`Replayer::new`] builds it with a [`HandlerFactory`], handing it the sink
//! the replay publishes to. [`cli::run`] is the whole command.

pub mod cli;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use kafka_esm::config::{ConfigError, ConsumerConfig, StoreChoice};
use kafka_esm::consumer::Consumer;
use kafka_esm::handler::InvocationInfo;
use kafka_esm::idempotency::{IdempotencyStore, LocalStore};
use kafka_esm::kafka::KafkaSettings;
use kafka_esm::processor::Processor;
use kafka_esm::processor::RecordOutcome;
use kafka_esm::retry::Deadline;
use kafka_esm::sink::{DirectorySink, KafkaSink, MessageSink};

use crate::handler::{CountingSink, HandlerFactory, published_since, read_config};

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Where the topic files live, and the idempotency store unless `store` names another.
    pub state_dir: PathBuf,
    /// The idempotency store: `None` for a redb file in the state directory (the default), else
    /// the store `IDEMPOTENCY_STORE` names (see [`replay_store`]).
    pub store: Option<StoreChoice>,
    /// Delete the state first: the topic files, and the idempotency store when it is the state
    /// directory's (a store named by `IDEMPOTENCY_STORE` is never deleted).
    pub fresh: bool,
    /// Publish dead letters and the handler's messages to this Kafka cluster instead of files: the
    /// bootstrap servers, with every other Kafka setting from the configuration (see
    /// [`replay_config`]).
    pub brokers: Option<String>,
    /// The function timeout each event is given.
    pub timeout: Duration,
}

/// A replay could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The handler could not be built ([`HandlerFactory::build`]).
    #[error("the handler cannot be built: {0}")]
    Handler(String),
    /// One publish does not fit in the replay's function timeout.
    #[error("{0}")]
    Budget(String),
    /// The state directory could not be used.
    #[error("the state directory {path} cannot be used: {message}")]
    State {
        /// The directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The idempotency store named by `IDEMPOTENCY_STORE` could not be opened or does not answer.
    #[error(
        "the idempotency store {store} cannot be used: {message}; fix it, or unset IDEMPOTENCY_STORE to use a file in the state directory"
    )]
    Store {
        /// Which store ([`describe_store`]).
        store: String,
        /// What failed.
        message: String,
    },
    /// Another replay holds the state directory.
    #[error(
        "another esm replay is using {path}: wait for it to finish, or give this one another --state-dir"
    )]
    Busy {
        /// The directory.
        path: PathBuf,
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
    /// Messages the handler published, every topic together (the reference app's alerts: the name
    /// its scripts read). [`Self::published`] has them per topic.
    pub alerts: u64,
    /// Messages the handler published, per topic (handed to the sink: one whose acknowledgement
    /// fails is counted again when its record runs again). Dead letters are not among them.
    pub published: BTreeMap<String, u64>,
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

/// The file in the state directory that a replay holds locked for its whole run.
const LOCK_FILE: &str = "replay.lock";
/// How long a replay waits for that lock before it says another replay holds it.
///
/// A replay that has ended can still hold it for a moment: a `flock` belongs to the open file, and
/// a child process that another thread of the same program starts gets a copy of every open file
/// until it runs its own program. On a busy machine that moment lasted long enough to refuse a
/// replay started right after another (once in about 40 runs of the replay tests), so a replay
/// waits this long before it calls the directory busy.
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// How often a waiting replay tries the lock again.
const LOCK_POLL: Duration = Duration::from_millis(10);
/// The idempotency store in the state directory.
const STORE_FILE: &str = "idempotency.redb";
/// The topic files in the state directory.
const TOPICS_DIR: &str = "topics";

/// The consumer's configuration read through `lookup` (the process environment for `esm replay`),
/// with `brokers` (`--brokers`), when given, in place of `KAFKA_BOOTSTRAP_SERVERS`: every other
/// `KAFKA_*` setting (authentication, TLS, properties, client id) is read and checked exactly as
/// the Lambda reads it. The handler's own settings are read after it ([`read_config`]), so that
/// every problem is reported at once.
pub fn replay_config<F: HandlerFactory>(
    lookup: &dyn Fn(&str) -> Option<String>,
    brokers: Option<&str>,
    factory: &mut F,
) -> Result<ConsumerConfig, ConfigError> {
    read_config(
        &|name| match brokers {
            Some(brokers) if name == "KAFKA_BOOTSTRAP_SERVERS" => Some(brokers.to_owned()),
            _ => lookup(name),
        },
        factory,
    )
}

/// The idempotency store the environment names through `lookup`, as the Lambda reads it
/// (`IDEMPOTENCY_STORE=memory|local|dynamodb`, with `IDEMPOTENCY_LOCAL_PATH` or `IDEMPOTENCY_TABLE`,
/// parsed and checked by [`ConsumerConfig`] into `config.store`); `None` when `IDEMPOTENCY_STORE` is
/// unset or blank: a replay then keeps its keys in a file of its state directory.
pub fn replay_store(
    lookup: &dyn Fn(&str) -> Option<String>,
    config: &ConsumerConfig,
) -> Option<StoreChoice> {
    lookup("IDEMPOTENCY_STORE")
        .is_some_and(|v| !v.trim().is_empty())
        .then(|| config.store.clone())
}

/// The store, for people: what it is, and how long its keys last.
pub fn describe_store(choice: &StoreChoice) -> String {
    match choice {
        StoreChoice::Memory => {
            "memory (IDEMPOTENCY_STORE=memory: kept for this replay only)".into()
        }
        StoreChoice::Local(path) => {
            format!("local file {} (IDEMPOTENCY_STORE=local)", path.display())
        }
        StoreChoice::DynamoDb { table, .. } => {
            let at = std::env::var("AWS_ENDPOINT_URL_DYNAMODB")
                .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
                .ok()
                .filter(|e| !e.trim().is_empty())
                .map(|e| format!(" at {e}"))
                .unwrap_or_default();
            format!("DynamoDB table {table}{at} (IDEMPOTENCY_STORE=dynamodb)")
        }
    }
}

/// Runs event files through a consumer of handler `H`.
pub struct Replayer<H> {
    consumer: Consumer<H>,
    /// The sink the handler publishes through, counting per topic.
    handler_sink: Arc<CountingSink>,
    function_name: String,
    timeout: Duration,
    safety_margin: Duration,
    state_dir: PathBuf,
    store: String,
    uses_broker: bool,
    // Locked for as long as the replayer lives: no other replay uses or deletes the state meanwhile.
    _lock: std::fs::File,
}

impl<H: kafka_esm::handler::RecordHandler> Replayer<H> {
    /// A replayer with `config` (read from the environment, like the Lambda's: see
    /// [`replay_config`]) and `options`, running the handler `factory` builds. The handler publishes
    /// through the sink dead letters go to (files in the state directory, or the brokers of
    /// `options.brokers`); the reports count what it publishes there, per topic.
    ///
    /// With `options.brokers`, it publishes with `config.kafka` (secrets named by ARN are fetched
    /// here), its bootstrap servers replaced by the brokers; plaintext when `config` has no Kafka
    /// settings. It holds the state directory's lock until it is dropped, and fails with
    /// [`ReplayError::Busy`] when another replay still holds it after 2 s of waiting; with
    /// `options.fresh` it deletes the state only once it holds the lock. An idempotency store file
    /// that is empty or unreadable is an error, not a new store.
    ///
    /// With `options.store`, the idempotency store is that one, opened as the Lambda opens it (a
    /// DynamoDB client from the usual AWS settings: `AWS_ENDPOINT_URL`, region, credentials), and
    /// asked for one key before any event runs, so that a store that does not answer fails here
    /// ([`ReplayError::Store`], within the replay's timeout) rather than every record.
    pub async fn new<F: HandlerFactory<Handler = H>>(
        config: &ConsumerConfig,
        options: &ReplayOptions,
        factory: &F,
    ) -> Result<Self, ReplayError> {
        kafka_esm::processor::check_time_budget(
            options.timeout,
            config.safety_margin,
            config.processor.publish_timeout,
        )
        .map_err(|e| ReplayError::Budget(format!("--timeout-ms: {e}")))?;
        let dir = &options.state_dir;
        let state_error = |e: &dyn std::fmt::Display| ReplayError::State {
            path: dir.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| state_error(&e))?;
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(|e| state_error(&format!("{}: {e}", dir.join(LOCK_FILE).display())))?;
        let waited_enough = Instant::now() + LOCK_WAIT;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < waited_enough => {
                    tokio::time::sleep(LOCK_POLL).await;
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(ReplayError::Busy { path: dir.clone() });
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(state_error(&format!(
                        "cannot lock {}: {e}",
                        dir.join(LOCK_FILE).display()
                    )));
                }
            }
        }
        if options.fresh {
            // Only what a replay writes there: a mistaken --state-dir loses nothing else.
            let store = dir.join(STORE_FILE);
            match options.store {
                Some(_) => {}
                None => match std::fs::remove_file(&store) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(state_error(&format!("{}: {e}", store.display())));
                    }
                    _ => {}
                },
            }
            let topics = dir.join(TOPICS_DIR);
            match std::fs::remove_dir_all(&topics) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(state_error(&format!("{}: {e}", topics.display())));
                }
                _ => {}
            }
        }
        let (store, described): (Arc<dyn IdempotencyStore>, String) = match &options.store {
            None => {
                let path = dir.join(STORE_FILE);
                let store = LocalStore::open(&path).map_err(|e| {
                    let hint = if options.fresh {
                        ""
                    } else {
                        " (--fresh also starts over with an empty state)"
                    };
                    state_error(&format!("{}{hint}", e.message))
                })?;
                (
                    Arc::new(store),
                    format!("local file {} (the state directory's)", path.display()),
                )
            }
            Some(choice) => {
                let described = describe_store(choice);
                let store_error = |message: String| ReplayError::Store {
                    store: described.clone(),
                    message,
                };
                let store = choice
                    .open()
                    .await
                    .map_err(|e| store_error(format!("while {}: {}", e.action, e.message)))?;
                // One read, so that a store that is missing or unreachable fails once, here.
                match tokio::time::timeout(
                    options.timeout,
                    store.completed(&["esm-replay-probe"], kafka_esm::retry::now_ms()),
                )
                .await
                {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        return Err(store_error(format!("while {}: {}", e.action, e.message)));
                    }
                    Err(_) => {
                        return Err(store_error(format!(
                            "it did not answer one read within the replay's timeout ({} ms)",
                            options.timeout.as_millis()
                        )));
                    }
                }
                (store, described)
            }
        };
        let sink: Arc<dyn MessageSink> = match &options.brokers {
            Some(brokers) => {
                let kafka_error = |message: String| ReplayError::Kafka {
                    brokers: brokers.clone(),
                    message,
                };
                let mut settings = config
                    .kafka
                    .clone()
                    .unwrap_or_else(|| KafkaSettings::new(brokers.clone()));
                settings.bootstrap_servers = brokers.clone();
                let settings = settings
                    .resolve_secrets()
                    .await
                    .map_err(|e| kafka_error(e.to_string()))?;
                Arc::new(KafkaSink::new(&settings).map_err(|e| kafka_error(e.to_string()))?)
            }
            None => Arc::new(DirectorySink::new(dir.join(TOPICS_DIR))),
        };
        let handler_sink = Arc::new(CountingSink::new(sink.clone()));
        let handler = factory
            .build(config, handler_sink.clone())
            .map_err(ReplayError::Handler)?;
        let processor = Processor::new(handler, store, sink, config.processor.clone());
        Ok(Self {
            consumer: Consumer::new(processor, config.partial_batch_response),
            handler_sink,
            function_name: config.function_name.clone(),
            timeout: options.timeout,
            safety_margin: config.safety_margin,
            state_dir: dir.clone(),
            store: described,
            uses_broker: options.brokers.is_some(),
            _lock: lock,
        })
    }

    /// The idempotency store in use, for people: `local file <path> (the state directory's)`,
    /// or the one `IDEMPOTENCY_STORE` names ([`describe_store`]).
    pub fn store(&self) -> &str {
        &self.store
    }

    /// Where topic files are written (when no broker is named).
    pub fn topics_dir(&self) -> Option<PathBuf> {
        (!self.uses_broker).then(|| self.state_dir.join(TOPICS_DIR))
    }

    /// Replays one event file. A file that starts with a UTF-8 byte-order mark is read without it;
    /// a file that is not UTF-8 is an error that says where.
    pub async fn replay_file(
        &self,
        path: &Path,
        sequence: usize,
    ) -> Result<FileReport, ReplayError> {
        let input_error = |message: String| ReplayError::Input {
            path: path.to_owned(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| input_error(e.to_string()))?;
        let json = event_text(&bytes).map_err(input_error)?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("event");
        let invocation = InvocationInfo::new(
            format!("replay-{}-{sequence}-{stem}", std::process::id()),
            self.function_name.clone(),
            Deadline::after(self.timeout, self.safety_margin),
        );
        let published_before = self.handler_sink.counts();
        let started = Instant::now();
        let result = self.consumer.invoke(json, &invocation).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let counts = result.report.counts();
        let published = published_since(&published_before, self.handler_sink.counts());
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
            alerts: published.values().sum(),
            published,
            duration_ms,
            invocation_succeeded: result.result.is_ok(),
            response: result.answer_json(),
            partition_rows,
        })
    }
}

/// The text of an event file: UTF-8, without a leading byte-order mark; else what is wrong, with
/// the offset (from the file's start) of the first byte that is not UTF-8.
fn event_text(bytes: &[u8]) -> Result<&str, String> {
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
        return Err("not UTF-8: it starts with a UTF-16 byte-order mark; save it as UTF-8 (an event file is JSON in UTF-8)".into());
    }
    let skipped = if bytes.starts_with(BOM) { BOM.len() } else { 0 };
    std::str::from_utf8(&bytes[skipped..]).map_err(|e| {
        let offset = skipped + e.valid_up_to();
        format!(
            "not UTF-8: byte 0x{:02X} at offset {offset} cannot be decoded (an event file is JSON in UTF-8)",
            bytes[offset]
        )
    })
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

/// The human table for one file; `messages_name` is what the handler's messages are called
/// ([`HandlerFactory::messages_name`]: `alerts published: 2`). With messages to more than one topic,
/// the count of each follows the total.
pub fn render_table(report: &FileReport, messages_name: &str) -> String {
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
    let per_topic = if report.published.len() > 1 {
        let topics: Vec<String> = report
            .published
            .iter()
            .map(|(topic, n)| format!("{topic}: {n}"))
            .collect();
        format!(" ({})", topics.join(", "))
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "  {messages_name} published: {}{per_topic}   answer: {} {}",
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
