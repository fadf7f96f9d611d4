//! `kafka_esm::lambda`, the one-call entry point, without AWS.
//!
//! The shipped example `examples/orders.rs` (the program of issue 13) runs as a Lambda function under
//! a stand-in Runtime API served here on 127.0.0.1: built in this workspace, and built as a crate of
//! its own outside it with only `kafka-esm`, `async-trait`, `serde_json` and `tokio`. The steps of the
//! builder (reading the configuration, building the parts, answering an event) are called one by one.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use kafka_esm::config::{ConfigError, ConsumerConfig};
use kafka_esm::encode::{Source, encode_event};
use kafka_esm::handler::{DeserializeError, HandlerError, InvocationInfo, RecordHandler};
use kafka_esm::idempotency::{IdempotencyStore, MemoryStore};
use kafka_esm::lambda::{Builder, Error, Lambda, Parts};
use kafka_esm::record::KafkaRecord;
use kafka_esm::sink::{MemorySink, MessageSink};
use rdkafka::mocking::MockCluster;

// ---------------------------------------------------------------------------------------------
// A stand-in for the Lambda Runtime API: hands out queued events, records the answers.

#[derive(Default)]
struct RuntimeApi {
    events: Mutex<VecDeque<(String, String)>>,
    /// (request id, "response" | "error", body)
    answers: Mutex<Vec<(String, String, serde_json::Value)>>,
}

async fn next(State(api): State<Arc<RuntimeApi>>) -> impl IntoResponse {
    loop {
        if let Some((id, body)) = api.events.lock().unwrap().pop_front() {
            let mut headers = HeaderMap::new();
            headers.insert(
                "Lambda-Runtime-Aws-Request-Id",
                HeaderValue::from_str(&id).unwrap(),
            );
            let deadline = kafka_esm::retry::now_ms() + 30_000;
            headers.insert(
                "Lambda-Runtime-Deadline-Ms",
                HeaderValue::from_str(&deadline.to_string()).unwrap(),
            );
            headers.insert(
                "Lambda-Runtime-Invoked-Function-Arn",
                HeaderValue::from_static("arn:aws:lambda:us-east-1:123456789012:function:orders"),
            );
            return (StatusCode::OK, headers, body);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn answer(
    State(api): State<Arc<RuntimeApi>>,
    UrlPath((id, kind)): UrlPath<(String, String)>,
    body: Bytes,
) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    api.answers.lock().unwrap().push((id, kind, value));
    StatusCode::ACCEPTED
}

/// Serves `api` on 127.0.0.1; returns its `host:port`.
async fn serve(api: Arc<RuntimeApi>) -> String {
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/{kind}", post(answer))
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

/// What a function process did under the stand-in Runtime API.
struct Run {
    answers: Vec<(String, String, serde_json::Value)>,
    stdout: String,
    stderr: String,
}

/// Runs `binary` as Lambda would (a clean environment with the runtime's variables, plus `env`)
/// until it answered every event (or 60 s passed), then stops it.
async fn run_as_lambda(binary: &Path, env: &[(&str, &str)], events: Vec<(&str, String)>) -> Run {
    let api = Arc::new(RuntimeApi::default());
    let expected = events.len();
    api.events
        .lock()
        .unwrap()
        .extend(events.into_iter().map(|(id, body)| (id.to_owned(), body)));
    let address = serve(api.clone()).await;
    // Files, not pipes: a process whose pipe is full would stop before it answers.
    let logs = tempfile::tempdir().unwrap();
    let (out, err) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let mut child = lambda_command(binary, &address)
        .envs(env.iter().copied())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while api.answers.lock().unwrap().len() < expected
        && started.elapsed() < Duration::from_secs(60)
        && child.try_wait().unwrap().is_none()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let answers = api.answers.lock().unwrap().clone();
    Run {
        answers,
        stdout: std::fs::read_to_string(out).unwrap(),
        stderr: std::fs::read_to_string(err).unwrap(),
    }
}

/// `binary` with only the variables Lambda sets for every function.
fn lambda_command(binary: &Path, runtime_api: &str) -> Command {
    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "orders")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST");
    command
}

// ---------------------------------------------------------------------------------------------
// Building the example, inside the workspace and as a crate of its own outside it.

/// Cargo, as this test's own cargo, without the variables it set for this test: build scripts
/// (ring's, for one) rerun when `CARGO_MANIFEST_DIR` or `CARGO_PKG_NAME` change, and would rebuild
/// half the dependency tree, in turn with the build that runs this test.
fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "OUT_DIR",
            ]
            .contains(&name.as_ref())
        {
            command.env_remove(name.as_ref());
        }
    }
    command
}

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// Builds `examples/orders.rs` with cargo (the same target directory as this test, so a warm build
/// only links) and returns the executable cargo reports; once for all the tests of this file.
fn build_orders_example() -> PathBuf {
    static EXAMPLE: OnceLock<PathBuf> = OnceLock::new();
    EXAMPLE.get_or_init(build_example_now).clone()
}

fn build_example_now() -> PathBuf {
    let output = cargo()
        .current_dir(MANIFEST_DIR)
        .args([
            "build",
            "--locked",
            // The workspace's features, as `cargo test` at its root (CI) resolves them: there, only
            // the example is left to build.
            "--workspace",
            "--example",
            "orders",
            "--message-format",
            "json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo build --example orders failed"
    );
    executable(&output.stdout, "orders")
}

/// The executable of target `name` in cargo's JSON messages.
fn executable(messages: &[u8], name: &str) -> PathBuf {
    String::from_utf8_lossy(messages)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo reported no executable for {name}"))
}

/// The workspace's target directory, as cargo resolves it (`CARGO_TARGET_DIR` included).
fn target_directory() -> PathBuf {
    let output = cargo()
        .current_dir(MANIFEST_DIR)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "cargo metadata failed");
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    PathBuf::from(metadata["target_directory"].as_str().unwrap())
}

// ---------------------------------------------------------------------------------------------
// Events.

fn record(offset: i64, value: &str) -> KafkaRecord {
    let mut record = KafkaRecord::new("orders", 0, offset);
    record.value = Some(value.as_bytes().to_vec());
    record
}

fn event(records: &[KafkaRecord]) -> String {
    encode_event(&Source::SelfManaged, "b-1.example:9092", records)
}

fn two_valid_orders() -> String {
    event(&[
        record(10, r#"{"id":"o-1","amount":5}"#),
        record(11, r#"{"id":"o-2","amount":7}"#),
    ])
}

/// A port on 127.0.0.1 with no broker behind it (bound, then released).
fn no_broker() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    address
}

/// The `batch` log line of request `id` (JSON logs, as on Lambda).
fn batch_line(stdout: &str, id: &str) -> serde_json::Value {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"] == "batch" && line["request_id"] == id)
        .unwrap_or_else(|| panic!("no batch line for {id} in {stdout}"))
}

/// The example answers as the issue says: two valid records, `{"batchItemFailures":[]}`; an event
/// that is not an ESM event, an error (the ESM retries).
fn assert_orders_answers(run: &Run) {
    let Run {
        answers,
        stdout,
        stderr,
    } = run;
    assert_eq!(answers.len(), 2, "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(
        answers[0],
        (
            "req-1".to_owned(),
            "response".to_owned(),
            serde_json::json!({"batchItemFailures": []})
        )
    );
    assert_eq!(
        (answers[1].0.as_str(), answers[1].1.as_str()),
        ("req-2", "error")
    );
    assert_eq!(
        answers[1].2["errorType"], "InvalidEvent",
        "{:?}",
        answers[1]
    );
    let batch = batch_line(stdout, "req-1");
    assert_eq!(
        (
            &batch["records"],
            &batch["processed"],
            &batch["dead_lettered"]
        ),
        (&2.into(), &2.into(), &0.into()),
        "{batch}"
    );
}

fn orders_events() -> Vec<(&'static str, String)> {
    vec![
        ("req-1", two_valid_orders()),
        (
            "req-2",
            r#"{"Records":[{"eventSource":"aws:sqs"}]}"#.to_owned(),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// The example as a Lambda function.

/// `KAFKA_BOOTSTRAP_SERVERS` names a port with no broker and every other variable is at its
/// default: the producer is created without connecting, and nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_example_answers_an_esm_event_as_a_lambda() {
    let binary = build_orders_example();
    let bootstrap = no_broker();
    let run = run_as_lambda(
        &binary,
        &[("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)],
        orders_events(),
    )
    .await;
    assert_orders_answers(&run);
}

/// A record that is not JSON and one without an `id` are dead-lettered to `orders.dlq` (the default
/// dead-letter topic) through the one producer, here on rdkafka's MockCluster; the batch succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_example_dead_letters_what_it_rejects() {
    let binary = build_orders_example();
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let poison = event(&[
        record(20, r#"{"id":"o-3"}"#),
        record(21, "not json"),
        record(22, r#"{"amount":1}"#),
    ]);
    let run = run_as_lambda(
        &binary,
        &[("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)],
        vec![("req-poison", poison)],
    )
    .await;
    assert_eq!(run.answers.len(), 1, "stderr: {}", run.stderr);
    assert_eq!(
        run.answers[0].2,
        serde_json::json!({"batchItemFailures": []})
    );
    let batch = batch_line(&run.stdout, "req-poison");
    assert_eq!(
        (&batch["processed"], &batch["dead_lettered"]),
        (&1.into(), &2.into()),
        "{batch}"
    );
    // A dead letter keeps the record's value byte for byte.
    let mut values = dead_letters(&bootstrap, "orders.dlq");
    values.sort();
    assert_eq!(values, [b"not json".to_vec(), br#"{"amount":1}"#.to_vec()]);
}

/// The messages in `topic`, from every partition (the mock cluster creates topics with several).
fn dead_letters(bootstrap: &str, topic: &str) -> Vec<Vec<u8>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "lambda-entry-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    let mut expected = 0;
    for partition in metadata.topics()[0].partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition.id(), Duration::from_secs(10))
            .unwrap();
        expected += high - low;
        assignment
            .add_partition_offset(topic, partition.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut messages = Vec::new();
    let started = Instant::now();
    while (messages.len() as i64) < expected && started.elapsed() < Duration::from_secs(10) {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            messages.push(message.payload().unwrap_or_default().to_vec());
        }
    }
    messages
}

/// Without `KAFKA_BOOTSTRAP_SERVERS` and with a wrong variable, the example exits with a failure
/// and prints every problem at once, readably (the error's `Debug` is its message: `main` returns
/// it).
#[tokio::test]
async fn the_orders_example_refuses_to_start_with_every_problem_at_once() {
    let binary = build_orders_example();
    let address = serve(Arc::new(RuntimeApi::default())).await;
    let output = lambda_command(&binary, &address)
        .env("RETRY_MAX_ATTEMPTS", "zero")
        .env("FUNCTION_TIMEOUT_SECONDS", "1.5")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("Error: the configuration is invalid:\n"),
        "{stderr}"
    );
    for problem in [
        "RETRY_MAX_ATTEMPTS=\"zero\" is not valid",
        "KAFKA_BOOTSTRAP_SERVERS is not set",
        "FUNCTION_TIMEOUT_SECONDS=\"1.5\" is not valid",
    ] {
        assert!(stderr.contains(problem), "{problem} missing from {stderr}");
    }
    assert!(!stderr.contains("ConfigError"), "{stderr}");
}

/// The program of issue 13, as its own crate outside the workspace with only `kafka-esm` (by path),
/// `async-trait`, `serde_json` and `tokio`, builds offline with the workspace's lock file and target
/// directory (so a warm build compiles only the program), and answers as a Lambda.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_program_builds_outside_the_workspace_and_answers_as_a_lambda() {
    let crate_dir = tempfile::tempdir().unwrap();
    let kafka_esm = Path::new(MANIFEST_DIR);
    let workspace = kafka_esm.parent().unwrap();
    std::fs::write(
        crate_dir.path().join("Cargo.toml"),
        format!(
            r#"[package]
name = "orders-outside"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
kafka-esm = {{ path = {path:?} }}
async-trait = "0.1"
serde_json = "1"
tokio = {{ version = "1", features = ["macros", "rt-multi-thread"] }}

[workspace]
"#,
            path = kafka_esm.display().to_string()
        ),
    )
    .unwrap();
    std::fs::copy(
        workspace.join("Cargo.lock"),
        crate_dir.path().join("Cargo.lock"),
    )
    .unwrap();
    std::fs::create_dir(crate_dir.path().join("src")).unwrap();
    std::fs::copy(
        kafka_esm.join("examples/orders.rs"),
        crate_dir.path().join("src/main.rs"),
    )
    .unwrap();

    let started = Instant::now();
    let output = cargo()
        .current_dir(crate_dir.path())
        .env("CARGO_TARGET_DIR", target_directory())
        .args(["build", "--offline", "--message-format", "json"])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    eprintln!(
        "the crate outside the workspace built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        output.status.success(),
        "cargo build outside the workspace failed"
    );
    let binary = executable(&output.stdout, "orders-outside");

    // What it depends on: kafka-esm by path, and the three crates the issue names.
    let manifest = std::fs::read_to_string(crate_dir.path().join("Cargo.toml")).unwrap();
    let dependencies: Vec<&str> = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_once(" = ").map(|(name, _)| name))
        .collect();
    assert_eq!(
        dependencies,
        ["kafka-esm", "async-trait", "serde_json", "tokio"]
    );

    let bootstrap = no_broker();
    let run = run_as_lambda(
        &binary,
        &[("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)],
        orders_events(),
    )
    .await;
    assert_orders_answers(&run);
}

// ---------------------------------------------------------------------------------------------
// The builder's steps, in process.

fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

/// The variables Lambda sets, and a cluster address.
const ON_LAMBDA: [(&str, &str); 5] = [
    ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
    ("AWS_LAMBDA_FUNCTION_NAME", "orders-fn"),
    ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
    ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
    ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9"),
];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut vars: Vec<_> = ON_LAMBDA.to_vec();
    vars.retain(|(name, _)| !extra.iter().any(|(n, _)| n == name));
    vars.extend_from_slice(extra);
    vars
}

fn builder(vars: &[(&str, &str)]) -> Result<Builder, Error> {
    Builder::from_lookup_with(&lookup(vars), |_| ()).map(|(builder, ())| builder)
}

fn problems(result: Result<Builder, Error>) -> Vec<String> {
    match result {
        Err(Error::Config(ConfigError { problems })) => problems,
        Err(other) => panic!("not a configuration error: {other}"),
        Ok(_) => panic!("the configuration was accepted"),
    }
}

#[test]
fn the_environment_of_a_lambda_is_read_with_its_defaults() {
    let builder = builder(&ON_LAMBDA).unwrap();
    let config = builder.config();
    assert_eq!(config.function_name, "orders-fn");
    assert!(!config.partial_batch_response);
    assert_eq!(
        config.kafka.as_ref().unwrap().bootstrap_servers,
        "127.0.0.1:9"
    );
    assert_eq!(
        config.processor.dead_letter_topic_for("orders"),
        "orders.dlq"
    );
}

#[test]
fn every_problem_is_reported_at_once_with_the_apps_own() {
    let vars = [
        ("RETRY_MAX_ATTEMPTS", "zero"),
        ("FUNCTION_TIMEOUT_SECONDS", "0"),
        ("ORDERS_TABLE", "no spaces please"),
    ];
    let result = Builder::from_lookup_with(&lookup(&vars), |r| {
        let table = r.text("ORDERS_TABLE");
        if table.as_deref().is_some_and(|t| t.contains(' ')) {
            r.problem("ORDERS_TABLE has spaces");
        }
        table
    });
    let Err(Error::Config(error)) = result else {
        panic!("accepted or not a configuration error")
    };
    let problems = &error.problems;
    assert_eq!(problems.len(), 5, "{error}");
    assert!(
        problems[0].starts_with("RETRY_MAX_ATTEMPTS=\"zero\""),
        "{error}"
    );
    assert!(
        problems[1].starts_with("KAFKA_BOOTSTRAP_SERVERS is not set"),
        "{error}"
    );
    assert_eq!(problems[2], "ORDERS_TABLE has spaces");
    assert_eq!(
        problems[3],
        "FUNCTION_TIMEOUT_SECONDS=\"0\" is not valid: expected the function's timeout, a whole number of seconds from 1 to 900"
    );
    assert!(
        problems[4].starts_with(
            "AWS_LAMBDA_RUNTIME_API, AWS_LAMBDA_FUNCTION_NAME, AWS_LAMBDA_FUNCTION_MEMORY_SIZE, AWS_LAMBDA_FUNCTION_VERSION are not set: Lambda sets them"
        ),
        "{error}"
    );

    let (_, table) =
        Builder::from_lookup_with(&lookup(&with(&[("ORDERS_TABLE", "orders")])), |r| {
            r.text("ORDERS_TABLE")
        })
        .unwrap();
    assert_eq!(table.as_deref(), Some("orders"));
}

#[test]
fn the_runtime_variables_are_named_one_by_one() {
    let mut vars = with(&[]);
    vars.retain(|(name, _)| *name != "AWS_LAMBDA_RUNTIME_API");
    assert_eq!(
        problems(builder(&vars)),
        [
            "AWS_LAMBDA_RUNTIME_API is not set: Lambda sets it for the Runtime API this program serves; run it as a Lambda function, or locally under an emulator that sets it (such as `cargo lambda watch`)"
        ]
    );
    assert_eq!(
        problems(builder(&with(&[(
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            "lots"
        )]))),
        [
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=\"lots\" is not valid: expected the function's memory in MB, a whole number (Lambda sets it)"
        ]
    );
}

#[test]
fn one_dead_letter_publish_must_fit_in_the_function_timeout() {
    // The defaults: a 10 s publish and a 2 s margin need 12 s.
    let problems_11 = problems(builder(&with(&[("FUNCTION_TIMEOUT_SECONDS", "11")])));
    assert_eq!(problems_11.len(), 1);
    assert!(
        problems_11[0].starts_with("PUBLISH_TIMEOUT_MS (10000 ms) does not fit in the function's time budget: its timeout of 11000 ms less SAFETY_MARGIN_MS (2000 ms) leaves 9000 ms"),
        "{problems_11:?}"
    );
    assert!(builder(&with(&[("FUNCTION_TIMEOUT_SECONDS", "12")])).is_ok());
    assert!(
        builder(&with(&[
            ("FUNCTION_TIMEOUT_SECONDS", "3"),
            ("PUBLISH_TIMEOUT_MS", "500")
        ]))
        .is_ok()
    );
    // A wrong PUBLISH_TIMEOUT_MS is named alone: the default standing in for it is not checked.
    let wrong = problems(builder(&with(&[
        ("FUNCTION_TIMEOUT_SECONDS", "3"),
        ("PUBLISH_TIMEOUT_MS", "soon"),
    ])));
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert!(
        wrong[0].starts_with("PUBLISH_TIMEOUT_MS=\"soon\""),
        "{wrong:?}"
    );
    // Unset: Lambda does not tell the function its timeout, so there is nothing to check.
    assert!(builder(&with(&[("PUBLISH_TIMEOUT_MS", "900000")])).is_ok());
}

/// Counts what it handles and remembers the invocation it ran in; `{"fail":true}` fails
/// transiently, a value without `id` permanently.
#[derive(Default)]
struct Recorder {
    handled: AtomicUsize,
    seen: Mutex<Vec<(String, String)>>,
    sink: Option<Arc<dyn MessageSink>>,
}

#[async_trait]
impl RecordHandler for Recorder {
    type Event = serde_json::Value;

    fn deserialize(&self, record: &KafkaRecord) -> Result<Self::Event, DeserializeError> {
        serde_json::from_slice(record.value.as_deref().unwrap_or_default())
            .map_err(|e| DeserializeError::new(e.to_string()))
    }

    async fn handle(
        &self,
        _: &KafkaRecord,
        event: &Self::Event,
        invocation: &InvocationInfo,
    ) -> Result<(), HandlerError> {
        self.seen.lock().unwrap().push((
            invocation.request_id.clone(),
            invocation.function_name.clone(),
        ));
        if event["fail"] == true {
            return Err(HandlerError::transient("try again"));
        }
        if event.get("id").is_none() {
            return Err(HandlerError::permanent("no id"));
        }
        self.handled.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn context(request_id: &str) -> lambda_runtime::Context {
    let mut context = lambda_runtime::Context::default();
    context.request_id = request_id.into();
    context.deadline = kafka_esm::retry::now_ms() + 30_000;
    context
}

/// The environment's parts, built without a broker (librdkafka connects on first send) and
/// without AWS (the memory store), answer two valid records with an empty partial batch response,
/// in the invocation's request id and the function's name.
#[tokio::test]
async fn built_from_the_environment_it_answers_without_a_broker() {
    let lambda = builder(&ON_LAMBDA)
        .unwrap()
        .build_with(|_| Recorder::default())
        .await
        .unwrap();
    let answer = lambda
        .invoke(&two_valid_orders(), &context("req-a"))
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&answer).unwrap(),
        serde_json::json!({"batchItemFailures": []})
    );
    let handler = lambda.consumer().processor().handler();
    assert_eq!(handler.handled.load(Ordering::Relaxed), 2);
    assert_eq!(
        handler.seen.lock().unwrap()[0],
        ("req-a".to_owned(), "orders-fn".to_owned())
    );

    // The same records again: duplicates, handled once.
    lambda
        .invoke(&two_valid_orders(), &context("req-b"))
        .await
        .unwrap();
    assert_eq!(handler.handled.load(Ordering::Relaxed), 2);

    let refused = lambda
        .invoke("{\"Records\":[]}", &context("req-c"))
        .await
        .unwrap_err();
    assert_eq!(refused.error_type, "InvalidEvent");
}

/// A store and a dead-letter sink of one's own replace the environment's, and the handler made by
/// `build_with` shares them through the parts.
#[tokio::test]
async fn a_store_and_a_sink_of_ones_own_are_used_and_shared() {
    let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::new());
    let sink = Arc::new(MemorySink::new());
    let build = || {
        builder(&ON_LAMBDA)
            .unwrap()
            .store(store.clone())
            .dead_letters(sink.clone())
            .build_with(|parts: &Parts| Recorder {
                sink: Some(parts.sink.clone()),
                ..Recorder::default()
            })
    };
    let first = build().await.unwrap();
    let handler = first.consumer().processor().handler();
    let shared = handler.sink.as_ref().unwrap();
    assert!(std::ptr::addr_eq(Arc::as_ptr(shared), Arc::as_ptr(&sink)));

    let with_poison = event(&[record(30, r#"{"id":"o-9"}"#), record(31, "{}")]);
    first.invoke(&with_poison, &context("req-1")).await.unwrap();
    assert_eq!(handler.handled.load(Ordering::Relaxed), 1);
    assert_eq!(sink.messages_to("orders.dlq").len(), 1);

    // A second function on the same store finds both records done.
    let second = build().await.unwrap();
    second
        .invoke(&with_poison, &context("req-2"))
        .await
        .unwrap();
    assert_eq!(
        second
            .consumer()
            .processor()
            .handler()
            .handled
            .load(Ordering::Relaxed),
        0
    );
    assert_eq!(sink.messages_to("orders.dlq").len(), 1);
}

/// `REPORT_BATCH_ITEM_FAILURES` decides the answer for an unfinished record: its partition and
/// offset in a partial batch response, else an error that makes the ESM retry the whole batch.
#[tokio::test]
async fn partial_batch_responses_follow_the_configuration() {
    let records = event(&[record(40, r#"{"id":"a"}"#), record(41, r#"{"fail":true}"#)]);
    let unfinished = [("RETRY_MAX_ATTEMPTS", "1")];
    let partial = builder(&with(&[
        unfinished[0],
        ("REPORT_BATCH_ITEM_FAILURES", "true"),
    ]))
    .unwrap()
    .build_with(|_| Recorder::default())
    .await
    .unwrap();
    let answer = partial.invoke(&records, &context("req-p")).await.unwrap();
    assert_eq!(
        serde_json::to_value(&answer).unwrap(),
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": {"partition": "orders-0", "offset": 41}}]})
    );

    let whole = builder(&with(&unfinished))
        .unwrap()
        .build_with(|_| Recorder::default())
        .await
        .unwrap();
    let error = whole.invoke(&records, &context("req-w")).await.unwrap_err();
    assert_eq!(error.error_type, "UnfinishedRecords");
}

/// Made in code without Kafka, the function needs a dead-letter sink of its own; given one, it
/// needs no Kafka. A function timeout given in code is checked as the environment's is.
#[tokio::test]
async fn a_configuration_made_in_code_needs_a_sink_without_kafka() {
    let config = ConsumerConfig::from_lookup(&lookup(&[])).unwrap();
    assert!(config.kafka.is_none());
    let Err(Error::Config(error)) = Builder::new(config.clone())
        .build_with(|_| Recorder::default())
        .await
    else {
        panic!("built without a sink")
    };
    assert_eq!(error.problems.len(), 1, "{error}");
    assert!(
        error.problems[0].contains("KAFKA_BOOTSTRAP_SERVERS is not set")
            && error.problems[0].contains("Builder::dead_letters"),
        "{error}"
    );

    let lambda = Builder::new(config.clone())
        .dead_letters(Arc::new(MemorySink::new()))
        .build_with(|_| Recorder::default())
        .await
        .unwrap();
    assert!(
        lambda
            .invoke(&two_valid_orders(), &context("req"))
            .await
            .unwrap()
            .batch_item_failures
            .is_empty()
    );

    let Err(Error::Config(error)) = Builder::new(config)
        .dead_letters(Arc::new(MemorySink::new()))
        .function_timeout(Duration::from_secs(5))
        .build_with(|_| Recorder::default())
        .await
    else {
        panic!("a 10 s publish was accepted in a 5 s function")
    };
    assert!(
        error.problems[0].starts_with("PUBLISH_TIMEOUT_MS"),
        "{error}"
    );
}

/// The function's parts can be made by hand: `Lambda::new` reads and opens nothing.
#[tokio::test]
async fn a_lambda_from_parts_made_by_hand() {
    let config =
        ConsumerConfig::from_lookup(&lookup(&[("AWS_LAMBDA_FUNCTION_NAME", "by-hand")])).unwrap();
    let lambda = Lambda::new(
        Recorder::default(),
        Parts {
            config,
            store: Arc::new(MemoryStore::new()),
            sink: Arc::new(MemorySink::new()),
            schemas: None,
        },
    );
    lambda
        .invoke(&two_valid_orders(), &context("req-h"))
        .await
        .unwrap();
    assert_eq!(
        lambda.consumer().processor().handler().seen.lock().unwrap()[0],
        ("req-h".to_owned(), "by-hand".to_owned())
    );
}

/// What cannot be opened or created says what failed and what to check; `Debug` shows the same
/// message, for `main` to print.
#[tokio::test]
async fn a_store_or_producer_that_cannot_be_made_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.redb");
    std::fs::write(&empty, b"").unwrap();
    let empty = empty.to_str().unwrap().to_owned();
    let vars = with(&[("IDEMPOTENCY_STORE", "local")]);
    let mut vars: Vec<(&str, &str)> = vars;
    vars.push(("IDEMPOTENCY_LOCAL_PATH", &empty));
    let error = builder(&vars)
        .unwrap()
        .build_with(|_| Recorder::default())
        .await
        .err()
        .expect("an empty store file was opened");
    let message = error.to_string();
    assert!(matches!(error, Error::Store(_)), "{message}");
    assert!(
        message.starts_with("cannot open the idempotency store ("),
        "{message}"
    );
    assert!(message.contains("empty.redb"), "{message}");
    assert!(
        message.contains("check IDEMPOTENCY_STORE and IDEMPOTENCY_LOCAL_PATH"),
        "{message}"
    );
    assert_eq!(format!("{error:?}"), message);

    let error = builder(&with(&[("KAFKA_PROPERTIES", "acks=1")]))
        .unwrap()
        .build_with(|_| Recorder::default())
        .await
        .err()
        .expect("librdkafka took acks=1 with the idempotent producer");
    let message = error.to_string();
    assert!(matches!(error, Error::Kafka(_)), "{message}");
    assert!(
        message.starts_with("cannot set up the Kafka producer for dead letters: ")
            && message.contains("acks")
            && message.ends_with("check the KAFKA_* variables (and KAFKA_PROPERTIES)"),
        "{message}"
    );
}
