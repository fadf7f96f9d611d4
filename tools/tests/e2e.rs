//! The whole pipeline on a real Kafka-protocol broker (Tansu, started by `bash infra/broker.sh
//! start sqlite`): the producer Lambda's code → broker → `esm poll` (the real binary, in a child
//! process) → consumer → alerts and dead-letter topics, then the verifier proves that every input
//! record is accounted for exactly once, under faults.
//!
//! Every test is `#[ignore = "needs a broker (infra/broker.sh)"]`: a plain `cargo test` reports them
//! as ignored. Run them with `KAFKA_ESM_BROKER` (host:port) set, `-- --include-ignored` and one at a
//! time (`--test-threads=1`): one of them restarts the broker, and needs
//! `KAFKA_ESM_BROKER_RESTARTABLE=1`. A variable missing then fails the test. `.ci/run` starts the
//! broker and runs them so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::pipeline;
use kafka_esm::format::{LocalDirectory, SchemaCache, SchemaId};
use kafka_esm::kafka::KafkaSettings;
use kafka_esm_telemetry::generate::generate_metrics;
use kafka_esm_telemetry::{MetricDecoder, MetricEncoder, MetricFormat};
use kafka_esm_tools::verify::Verdict;

const RULES: &str = "cpu_usage_percent > 80";
/// The schema id Avro and Protobuf metrics are framed with.
const SCHEMA_ID: u32 = 41;
const PARTITIONS: i32 = 3;

/// The broker (`KAFKA_ESM_BROKER`); a panic that says how to start it when it is not set.
#[track_caller]
fn broker() -> String {
    common::servers::broker()
}

/// One pipeline: its own topics, consumer group and state directory.
struct Pipeline {
    broker: String,
    source: String,
    alerts: String,
    dlq: String,
    group: String,
    dir: tempfile::TempDir,
    /// How metrics are written and read (JSON unless [`Pipeline::in_format`] says otherwise).
    format: MetricFormat,
}

impl Pipeline {
    async fn new(broker: &str, name: &str, create_dlq: bool) -> Self {
        let unique = format!("{name}-{}-{}", std::process::id(), fastrand::u32(..));
        let pipeline = Self {
            broker: broker.to_owned(),
            source: format!("e2e.{unique}.metrics"),
            alerts: format!("e2e.{unique}.alerts"),
            dlq: format!("e2e.{unique}.metrics.dlq"),
            group: format!("e2e-{unique}"),
            dir: tempfile::tempdir().unwrap(),
            format: MetricFormat::Json,
        };
        pipeline.create_topic(&pipeline.source, PARTITIONS).await;
        pipeline.create_topic(&pipeline.alerts, PARTITIONS).await;
        if create_dlq {
            pipeline.create_topic(&pipeline.dlq, 1).await;
        }
        pipeline
    }

    /// Metrics in `format`, framed by the producer with the Confluent schema id [`SCHEMA_ID`],
    /// whose schema the consumer finds in the pipeline's schema directory (`SCHEMA_DIR`), as it
    /// would in a registry.
    fn in_format(mut self, format: MetricFormat) -> Self {
        self.format = format;
        let (kind, text) = format.schema().expect("a schema format");
        let dir = self.schema_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let file = LocalDirectory::new(&dir).path_of(&SchemaId::Confluent(SCHEMA_ID), kind);
        std::fs::write(file, text).unwrap();
        self
    }

    fn schema_dir(&self) -> PathBuf {
        self.dir.path().join("schemas")
    }

    /// How the producer writes metrics.
    fn encoder(&self) -> MetricEncoder {
        match self.format {
            MetricFormat::Json => MetricEncoder::json(),
            format => MetricEncoder::new(format, Some(SchemaId::Confluent(SCHEMA_ID))).unwrap(),
        }
    }

    /// How the consumer (and the verifier) read metrics.
    fn decoder(&self) -> MetricDecoder {
        let schemas = (self.format != MetricFormat::Json)
            .then(|| Arc::new(SchemaCache::new(LocalDirectory::new(self.schema_dir()))));
        MetricDecoder::new(self.format, schemas)
    }

    async fn create_topic(&self, topic: &str, partitions: i32) {
        pipeline::create_topic(&self.broker, topic, partitions).await;
    }

    fn settings(&self) -> KafkaSettings {
        KafkaSettings::new(self.broker.clone())
    }

    /// Produces `count` metrics through the producer Lambda's code; returns them.
    async fn produce_metrics(&self, seed: u64, count: usize) -> Vec<serde_json::Value> {
        let metrics: Vec<serde_json::Value> = generate_metrics(seed, count)
            .iter()
            .map(|m| serde_json::to_value(m).unwrap())
            .collect();
        self.produce_values(metrics.clone()).await;
        metrics
    }

    async fn produce_values(&self, metrics: Vec<serde_json::Value>) {
        pipeline::produce_values_with(&self.broker, &self.source, metrics, self.encoder()).await;
    }

    /// One poison value in every partition, produced around the producer's validation.
    async fn produce_poison(&self) {
        pipeline::produce_poison(&self.broker, &self.source, PARTITIONS).await;
    }

    fn store_path(&self) -> PathBuf {
        self.dir.path().join("idempotency.redb")
    }

    fn poll_command(&self, extra: &[&str]) -> Command {
        self.poll_command_with(extra, "")
    }

    /// `esm poll` with extra librdkafka properties (`key=value;...`).
    fn poll_command_with(&self, extra: &[&str], properties: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_esm"));
        command
            .args([
                "poll",
                "--topics",
                &self.source,
                "--brokers",
                &self.broker,
                "--group",
                &self.group,
                "--batch-size",
                "50",
                "--batch-window-ms",
                "50",
                "--progress-seconds",
                "1",
                "--json",
            ])
            .args(extra);
        if !extra.contains(&"--function-timeout-ms") {
            command.args(["--function-timeout-ms", "5000"]);
        }
        self.consumer_env(&mut command, properties);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        command
    }

    /// The consumer's configuration, as the Lambda's environment gives it, for an `esm` command.
    fn consumer_env(&self, command: &mut Command, properties: &str) {
        command
            .env("IDEMPOTENCY_STORE", "local")
            .env("IDEMPOTENCY_LOCAL_PATH", self.store_path())
            .env("ALERTS_TOPIC", &self.alerts)
            .env("DLQ_TOPIC", &self.dlq)
            .env("ALERT_RULES", RULES)
            .env("PUBLISH_TIMEOUT_MS", "2000")
            .env("RUST_LOG", "warn")
            // A killed member's partitions move after its session times out: keep that short.
            .env(
                "KAFKA_PROPERTIES",
                format!("session.timeout.ms=6000;heartbeat.interval.ms=500;{properties}"),
            )
            .env_remove("KAFKA_BOOTSTRAP_SERVERS")
            .env("METRIC_FORMAT", self.format.as_str());
        if self.format != MetricFormat::Json {
            command.env("SCHEMA_DIR", self.schema_dir());
        }
    }

    /// Starts `command` (an `esm poll`) with its log going to `<name>.log` in the pipeline's
    /// directory. A piped stderr that nobody reads fills up (64 KB) and then blocks the child.
    fn spawn_logged(&self, command: &mut Command, name: &str) -> Child {
        let log = std::fs::File::create(self.log_path(name)).unwrap();
        command.stdout(Stdio::null()).stderr(log).spawn().unwrap()
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// The end of a spawned run's log, for a failure message.
    fn log_tail(&self, name: &str) -> String {
        let log = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Runs `esm poll` until the source idles; returns its JSON summary.
    fn poll_until_idle(&self, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["--exit-when-idle-ms", "4000"];
        args.extend_from_slice(extra);
        let output = self.poll_command(&args).output().expect("esm poll runs");
        pipeline::poll_summary(&output, "")
    }

    async fn verify(&self) -> Verdict {
        pipeline::verify_pipeline(
            &self.broker,
            [&self.source, &self.alerts, &self.dlq],
            RULES,
            &self.store_path(),
            &self.decoder(),
        )
        .await
        .0
    }

    fn lag(&self) -> i64 {
        kafka_esm_tools::poll::group_lag(
            &self.settings(),
            &self.group,
            std::slice::from_ref(&self.source),
            Duration::from_secs(10),
        )
        .unwrap()
        .iter()
        .map(|l| l.lag)
        .sum()
    }
}

fn assert_exact(verdict: &Verdict, distinct: usize) {
    pipeline::assert_exact(verdict);
    assert_eq!(verdict.distinct_events, distinct);
    assert_eq!(verdict.poison_inputs, PARTITIONS as usize);
    assert_eq!(verdict.dead_letters_found, PARTITIONS as usize);
    assert!(verdict.alerts_expected > 0, "the rules make some alerts");
}

/// Waits until `topic` holds at least `n` messages (or `limit` passes).
fn wait_for_messages(pipeline: &Pipeline, topic: &str, n: i64, limit: Duration) -> bool {
    let started = Instant::now();
    let settings = pipeline.settings();
    while started.elapsed() < limit {
        let total: i64 = kafka_esm_tools::poll::group_lag(
            &settings,
            "e2e-watch",
            &[topic.to_owned()],
            Duration::from_secs(5),
        )
        .map(|lags| {
            lags.iter()
                .map(|l| l.high_watermark - l.low_watermark)
                .sum()
        })
        .unwrap_or(0);
        if total >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn kill(child: &mut Child) {
    // SIGKILL: no clean shutdown, no final commit.
    child.kill().unwrap();
    child.wait().unwrap();
}

fn broker_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/broker.sh")
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a broker (infra/broker.sh)"]
async fn every_record_is_accounted_for_once_with_poison_and_duplicated_inputs() {
    let broker = broker();
    let pipeline = Pipeline::new(&broker, "base", true).await;
    let metrics = pipeline.produce_metrics(1, 600).await;
    pipeline.produce_poison().await;
    // Every tenth metric produced again: same event id, a second record.
    pipeline
        .produce_values(metrics.iter().step_by(10).cloned().collect())
        .await;
    let summary = pipeline.poll_until_idle(&[]);
    assert_eq!(summary["records"], 600 + 60 + 3);
    assert_eq!(summary["given_up"], 0);
    assert_eq!(pipeline.lag(), 0, "every offset committed");
    let verdict = pipeline.verify().await;
    assert_exact(&verdict, 600);
    assert_eq!(verdict.duplicated_inputs, 60);

    // A second run finds nothing new: the group's offsets hold.
    let again = pipeline.poll_until_idle(&[]);
    assert_eq!(again["records"], 0);
}

/// Avro and Protobuf metrics, Confluent-framed by the producer, read by the consumer with the
/// schema the frame names: the same pipeline, the same exact accounting, poison and duplicates
/// included.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a broker (infra/broker.sh)"]
async fn avro_and_protobuf_metrics_run_end_to_end() {
    let broker = broker();
    for format in [MetricFormat::Avro, MetricFormat::Protobuf] {
        let pipeline = Pipeline::new(&broker, format.as_str(), true)
            .await
            .in_format(format);
        let metrics = pipeline.produce_metrics(7, 300).await;
        pipeline.produce_poison().await;
        pipeline
            .produce_values(metrics.iter().step_by(10).cloned().collect())
            .await;
        let summary = pipeline.poll_until_idle(&[]);
        assert_eq!(summary["records"], 300 + 30 + 3, "{format}: {summary}");
        assert_eq!(summary["given_up"], 0, "{format}");
        assert_eq!(pipeline.lag(), 0, "{format}: every offset committed");
        let verdict = pipeline.verify().await;
        assert_exact(&verdict, 300);
        assert_eq!(verdict.duplicated_inputs, 30, "{format}");
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a broker (infra/broker.sh)"]
async fn a_consumer_killed_mid_batch_and_restarted_loses_nothing() {
    let broker = broker();
    let pipeline = Pipeline::new(&broker, "kill", true).await;
    pipeline.produce_metrics(2, 3_000).await;
    pipeline.produce_poison().await;
    let mut killed = 0;
    for round in 1..=3 {
        let mut child =
            pipeline.spawn_logged(&mut pipeline.poll_command(&[]), &format!("poll-{round}"));
        // Once this run has published alerts of its own, kill it in the middle of whatever batch
        // runs then.
        assert!(wait_for_messages(
            &pipeline,
            &pipeline.alerts,
            round * 15,
            Duration::from_secs(60)
        ));
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..200)));
        kill(&mut child);
        killed += 1;
    }
    let summary = pipeline.poll_until_idle(&[]);
    assert_eq!(summary["given_up"], 0, "{summary}");
    assert_eq!(pipeline.lag(), 0);
    // Nothing lost and nothing repeated: the records a kill interrupted between their claim and
    // their completion are resumed, and their alerts and dead letters looked up before publishing.
    assert_exact(&pipeline.verify().await, 3_000);
    assert_eq!(killed, 3);
    let resumed: usize = (1..=3)
        .map(|round| {
            std::fs::read_to_string(pipeline.log_path(&format!("poll-{round}")))
                .unwrap()
                .matches("was interrupted; resuming it")
                .count()
        })
        .sum();
    println!("records resumed after the kills (by the runs that were killed next): {resumed}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a broker (infra/broker.sh)"]
async fn a_broker_restart_mid_run_loses_and_repeats_nothing() {
    let broker = broker();
    let restartable = common::servers::required_env(
        "KAFKA_ESM_BROKER_RESTARTABLE",
        "this test restarts the broker; set it to 1 if it may (started by `bash infra/broker.sh start sqlite`, which builds the patched Tansu), or leave the test out with `--skip a_broker_restart`",
    );
    assert_eq!(
        restartable, "1",
        "KAFKA_ESM_BROKER_RESTARTABLE must be 1 for the broker-restart test"
    );
    let storage = Command::new("bash")
        .arg(broker_script())
        .arg("storage")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&storage.stdout).trim(),
        "sqlite",
        "the restart test needs the broker started by `infra/broker.sh start sqlite`: memory storage loses every record on a restart"
    );
    let pipeline = Pipeline::new(&broker, "restart", true).await;
    pipeline.produce_metrics(3, 3_000).await;
    pipeline.produce_poison().await;
    // Publishes in flight when the broker goes away wait for it (librdkafka resends them) instead
    // of timing out: a timed-out batch makes an idempotent producer bump its epoch on its own, and
    // Tansu 0.6.0's SQLite storage panics on an epoch it did not hand out.
    // One publish must fit in the function's timeout (checked at start-up): 60 s in 65 s.
    let mut child = pipeline.spawn_logged(
        pipeline
            .poll_command(&[
                "--exit-when-idle-ms",
                "8000",
                "--function-timeout-ms",
                "65000",
            ])
            .env("PUBLISH_TIMEOUT_MS", "60000"),
        "poll-restart",
    );
    assert!(wait_for_messages(
        &pipeline,
        &pipeline.alerts,
        10,
        Duration::from_secs(30)
    ));
    let status = Command::new("bash")
        .arg(broker_script())
        .arg("restart")
        .status()
        .unwrap();
    assert!(status.success(), "the broker restarts");
    assert!(
        wait_with_timeout(&mut child, Duration::from_secs(180)),
        "esm poll finished after the restart; its log ends:\n{}",
        pipeline.log_tail("poll-restart")
    );
    // Whatever the restart interrupted is picked up by a second run.
    let summary = pipeline.poll_until_idle(&[]);
    assert_eq!(summary["given_up"], 0, "{summary}");
    assert_eq!(pipeline.lag(), 0);
    assert_exact(&pipeline.verify().await, 3_000);
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    kill(child);
    false
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a broker (infra/broker.sh)"]
async fn a_dead_letter_topic_unavailable_for_a_while_holds_the_records_until_it_returns() {
    let broker = broker();
    // No DLQ topic yet: publishing a dead letter fails, the record stays unfinished and the batch
    // is retried (never committed past the poison record) until the topic exists.
    let pipeline = Arc::new(Pipeline::new(&broker, "dlq-down", false).await);
    pipeline.produce_metrics(4, 300).await;
    pipeline.produce_poison().await;
    let mut child = pipeline.spawn_logged(
        &mut pipeline.poll_command(&["--exit-when-idle-ms", "6000"]),
        "poll-dlq-down",
    );
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        pipeline.lag() > 0,
        "the poison records hold their partitions while the DLQ is down"
    );
    pipeline.create_topic(&pipeline.dlq, 1).await;
    assert!(
        wait_with_timeout(&mut child, Duration::from_secs(120)),
        "esm poll finished once the DLQ topic exists; its log ends:\n{}",
        pipeline.log_tail("poll-dlq-down")
    );
    assert_eq!(pipeline.lag(), 0);
    assert_exact(&pipeline.verify().await, 300);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a broker (infra/broker.sh)"]
async fn batches_given_up_to_a_kafka_topic_are_redriven_from_it_exactly_once() {
    let broker = broker();
    // No DLQ topic: the poison records cannot be dead-lettered, their batches fail, and after one
    // retry the local ESM gives them up to a Kafka on-failure topic (one message per record, the
    // record in its payload), as AWS does with `kafka://TOPIC`.
    let pipeline = Pipeline::new(&broker, "kafka-dest", false).await;
    let failures = format!("{}.failures", pipeline.source);
    pipeline.create_topic(&failures, 1).await;
    pipeline.produce_metrics(5, 300).await;
    pipeline.produce_poison().await;
    let summary = pipeline.poll_until_idle(&[
        "--maximum-retry-attempts",
        "1",
        "--on-failure-kafka",
        &failures,
    ]);
    let given_up = summary["given_up"].as_u64().unwrap();
    assert!(
        given_up >= 3,
        "every poison record's batch is given up: {summary}"
    );
    assert_eq!(pipeline.lag(), 0, "given-up batches are committed past");

    // The DLQ returns; the redrive reads the records from the on-failure topic's payloads (never
    // from the source topic) with the consumer's idempotency store: what was done is a duplicate.
    pipeline.create_topic(&pipeline.dlq, 1).await;
    let redrive = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_esm"));
        command
            .args(["redrive", "--topic", &failures, "--brokers", &broker])
            .args(["--group", &format!("{}-redrive", pipeline.group), "--json"]);
        pipeline.consumer_env(&mut command, "");
        let output = command.output().expect("esm redrive runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let last: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
        last["summary"].clone()
    };
    let first = redrive();
    assert_eq!(first["messages"].as_u64(), Some(given_up), "{first}");
    assert_eq!(first["committed"].as_u64(), Some(given_up), "{first}");
    assert_eq!(first["fetched"].as_u64(), Some(given_up), "{first}");
    assert_eq!(first["dead_lettered"], 3, "{first}");
    assert_exact(&pipeline.verify().await, 300);

    // Everything was committed: a second run finds nothing.
    let again = redrive();
    assert_eq!(again["messages"], 0, "{again}");
}
