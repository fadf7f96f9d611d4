//! `esm poll --invoke-endpoint` driving the real, unmodified `consumer` binary under `cargo lambda
//! watch`, on a real broker (Tansu): producer code → broker → `esm poll` → Lambda invoke API →
//! `consumer` → alerts and dead-letter topics, then the verifier accounts for every input once.
//!
//! Needs `KAFKA_ESM_BROKER` (`eval "$(bash infra/broker.sh env)"`) and `KAFKA_ESM_CARGO_LAMBDA`, the
//! cargo-lambda binary (`eval "$(bash infra/cargo-lambda.sh env)"`), so it is
//! `#[ignore = "needs cargo-lambda (infra/cargo-lambda.sh)"]`: a plain `cargo test` reports it as
//! ignored; with `-- --include-ignored` it runs, and fails without either variable.
//! `cargo lambda watch` builds `consumer` on the first invoke with `cargo run --bin consumer` in this
//! repository (dev profile, the same target directory: $CARGO_TARGET_DIR or target/), so a cold run
//! compiles; `KAFKA_ESM_WATCH_BUILD_TIMEOUT_S` bounds it (default 1800).
//! cargo lambda watch (1.9.2) sends `Lambda-Runtime-Deadline-Ms: 600000`, a duration where Lambda
//! sends an epoch time: a consumer that reads it as an epoch time has no budget and fails every batch.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{pipeline, servers};
use kafka_esm::dead_letter::headers;
use kafka_esm_telemetry::MetricDecoder;
use kafka_esm_telemetry::generate::generate_metrics;
use kafka_esm_tools::poll::{Answer, Invoke, RuntimeApi};

const RULES: &str = "cpu_usage_percent > 80";
const PARTITIONS: i32 = 3;
const METRICS: usize = 300;

/// `cargo lambda watch`, stopped (with the function it runs) on drop.
struct Watch {
    child: Child,
    endpoint: String,
    log: PathBuf,
}

impl Watch {
    fn start(cargo_lambda: &str, log: PathBuf, env: &[(&str, String)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = File::create(&log).unwrap();
        let mut command = Command::new(cargo_lambda);
        // The variables cargo sets for this test (CARGO_PKG_NAME, CARGO_MANIFEST_DIR, ...) must not
        // reach the `cargo run` watch starts: build scripts (ring's) rerun when they change, which
        // rebuilds ring, rustls and the AWS SDK here, and again in the next plain `cargo test`.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_BIN_")
                || name.starts_with("CARGO_MANIFEST_")
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "OUT_DIR",
                ]
                .contains(&name.as_ref())
            {
                command.env_remove(name.as_ref());
            }
        }
        let child = command
            .args([
                "lambda",
                "watch",
                "-A",
                "127.0.0.1",
                "-P",
                &port.to_string(),
            ])
            // No reload on file changes: an edit elsewhere must not restart the function mid-run.
            .arg("--ignore-changes")
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../telemetry"))
            // The function inherits watch's environment (cargo-lambda adds AWS_LAMBDA_*).
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("cargo lambda watch starts");
        let mut watch = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            watch.assert_running();
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "watch does not listen; {}",
                watch.tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        watch
    }

    fn tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "the last lines of {}:\n{}",
            self.log.display(),
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("cargo lambda watch exited ({status}); {}", self.tail());
        }
    }

    /// Invokes the function with an empty batch until it answers: the first invoke builds and starts it.
    async fn warm_up(&mut self, limit: Duration) -> Duration {
        let event = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../events/empty-batch.json"
        ))
        .unwrap();
        let api = RuntimeApi::new(&self.endpoint, "consumer", limit);
        let started = Instant::now();
        let invoke = api.invoke(&event, "warm-up");
        tokio::pin!(invoke);
        loop {
            tokio::select! {
                answer = &mut invoke => {
                    assert_eq!(answer, Answer::Success(Some(Default::default())), "{}", self.tail());
                    return started.elapsed();
                }
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    self.assert_running();
                    // watch logs a build failure or a function that exits, and keeps the invoke waiting.
                    let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                    assert!(!log.contains("command exited"), "the function did not start; {}", self.tail());
                }
            }
        }
    }

    /// SIGTERM (watch then stops the function, which runs in a session of its own), SIGKILL after 10 s.
    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `METRICS` metrics through the producer Lambda's code, then one poison value per partition.
async fn produce(broker: &str, topic: &str) {
    let metrics: Vec<serde_json::Value> = generate_metrics(7, METRICS)
        .iter()
        .map(|m| serde_json::to_value(m).unwrap())
        .collect();
    pipeline::produce_values(broker, topic, metrics).await;
    pipeline::produce_poison(broker, topic, PARTITIONS).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs cargo-lambda (infra/cargo-lambda.sh)"]
async fn esm_poll_drives_the_consumer_binary_under_cargo_lambda_watch() {
    let broker = servers::broker();
    let cargo_lambda = servers::cargo_lambda();
    let unique = format!("watch-{}-{}", std::process::id(), fastrand::u32(..));
    let (source, alerts, dlq) = (
        format!("e2e.{unique}.metrics"),
        format!("e2e.{unique}.alerts"),
        format!("e2e.{unique}.metrics.dlq"),
    );
    pipeline::create_topic(&broker, &source, PARTITIONS).await;
    pipeline::create_topic(&broker, &alerts, PARTITIONS).await;
    pipeline::create_topic(&broker, &dlq, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("idempotency.redb");

    // The consumer's configuration goes to watch (the function inherits it), none of it to esm poll:
    // an in-process consumer would publish elsewhere and keep no store, and the verdict would fail.
    let mut watch = Watch::start(
        &cargo_lambda,
        dir.path().join("watch.log"),
        &[
            ("KAFKA_BOOTSTRAP_SERVERS", broker.clone()),
            ("ALERTS_TOPIC", alerts.clone()),
            ("DLQ_TOPIC", dlq.clone()),
            ("ALERT_RULES", RULES.into()),
            ("IDEMPOTENCY_STORE", "local".into()),
            ("IDEMPOTENCY_LOCAL_PATH", store.display().to_string()),
            ("PUBLISH_TIMEOUT_MS", "2000".into()),
        ],
    );
    let limit = std::env::var("KAFKA_ESM_WATCH_BUILD_TIMEOUT_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1800);
    let ready = watch.warm_up(Duration::from_secs(limit)).await;
    let log = std::fs::read_to_string(&watch.log).unwrap_or_default();
    println!(
        "watch: the consumer answered the first invoke after {:.1} s ({} crates compiled; {})",
        ready.as_secs_f64(),
        log.matches("Compiling ").count(),
        log.lines()
            .find(|l| l.contains("Finished"))
            .unwrap_or("no build line")
            .trim()
    );

    produce(&broker, &source).await;
    let polled = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_esm"))
        .args([
            "poll",
            "--topics",
            &source,
            "--brokers",
            &broker,
            "--group",
            &format!("e2e-{unique}"),
        ])
        .args([
            "--invoke-endpoint",
            &watch.endpoint,
            "--function-name",
            "consumer",
        ])
        .args([
            "--batch-size",
            "50",
            "--batch-window-ms",
            "50",
            "--function-timeout-ms",
            "30000",
        ])
        // No function error is expected: give a failing invocation up after two retries, not never.
        .args(["--maximum-retry-attempts", "2"])
        .args(["--exit-when-idle-ms", "4000", "--json"])
        .env("RUST_LOG", "warn")
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env_remove("ALERTS_TOPIC")
        .env_remove("DLQ_TOPIC")
        .env_remove("IDEMPOTENCY_STORE")
        .output()
        .expect("esm poll runs");
    let summary = pipeline::poll_summary(&output, &watch.tail());
    println!(
        "esm poll ({:.1} s): {summary}",
        polled.elapsed().as_secs_f64()
    );
    let log = std::fs::read_to_string(&watch.log).unwrap_or_default();
    assert!(
        !log.contains("time budget ran out"),
        "the consumer found its time budget spent on arrival: cargo lambda watch (1.9.2) sends \
         Lambda-Runtime-Deadline-Ms: 600000, a duration, where Lambda sends an epoch time; {summary}\n{}",
        watch.tail()
    );
    assert!(output.status.success(), "{summary}\n{}", watch.tail());
    assert_eq!(
        summary["records"],
        METRICS + PARTITIONS as usize,
        "{summary}"
    );
    assert_eq!(summary["given_up"], 0, "{summary}");
    assert_eq!(summary["failed_invocations"], 0, "{summary}");
    assert!(
        summary["invocations"].as_u64().unwrap() >= (METRICS / 50) as u64,
        "{summary}"
    );

    // The function holds the redb store open: stop it before the verifier opens the store.
    watch.stop();
    let (verdict, dead_letters) = pipeline::verify_pipeline(
        &broker,
        [&source, &alerts, &dlq],
        RULES,
        &store,
        &MetricDecoder::json(),
    )
    .await;
    pipeline::assert_exact(&verdict);
    assert_eq!(verdict.distinct_events, METRICS);
    assert_eq!(verdict.poison_inputs, PARTITIONS as usize);
    assert_eq!(verdict.dead_letters_found, PARTITIONS as usize);
    assert!(verdict.alerts_expected > 0 && verdict.alerts_found == verdict.alerts_expected);

    // Invoked remotely: the dead letters name the function cargo lambda ran and its request ids,
    // not esm poll's in-process name (kafka-esm-local) and ids (esm-poll-<pid>-<n>).
    for letter in &dead_letters {
        let header = |name: &str| {
            letter
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| v.as_deref())
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(header(headers::FUNCTION_NAME).as_deref(), Some("consumer"));
        let request_id = header(headers::REQUEST_ID).unwrap_or_default();
        assert!(
            !request_id.is_empty() && !request_id.starts_with("esm-poll-"),
            "request id {request_id:?}"
        );
    }
}
