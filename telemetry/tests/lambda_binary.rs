//! The real `consumer` binary under the Lambda Runtime API, served here on 127.0.0.1, with Kafka from
//! rdkafka's `MockCluster`: what it answers, what it reports as errors, what it logs, and how it refuses
//! to start without its configuration.

use std::collections::VecDeque;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use kafka_esm::encode::{Source, encode_event};
use kafka_esm::record::KafkaRecord;
use rdkafka::mocking::MockCluster;

#[derive(Default)]
struct Api {
    events: Mutex<VecDeque<(String, String)>>,
    /// (request id, "response" | "error", body)
    answers: Mutex<Vec<(String, String, serde_json::Value)>>,
}

async fn next(State(api): State<Arc<Api>>) -> impl IntoResponse {
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
                HeaderValue::from_static("arn:aws:lambda:us-east-1:123456789012:function:consumer"),
            );
            return (StatusCode::OK, headers, body);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn answer(
    State(api): State<Arc<Api>>,
    Path((id, kind)): Path<(String, String)>,
    body: Bytes,
) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    api.answers.lock().unwrap().push((id, kind, value));
    StatusCode::ACCEPTED
}

async fn serve(api: Arc<Api>) -> String {
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/{kind}", post(answer))
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

fn consumer(runtime_api: &str, bootstrap: Option<&str>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_consumer"));
    command
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "telemetry-consumer")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("REPORT_BATCH_ITEM_FAILURES", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(bootstrap) = bootstrap {
        command.env("KAFKA_BOOTSTRAP_SERVERS", bootstrap);
    }
    command
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_answers_the_runtime_api_and_logs_json() {
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let api = Arc::new(Api::default());
    let mut good = KafkaRecord::new("telemetry.metrics", 0, 5);
    good.value = Some(br#"{"timestamp":"2026-11-22T10:00:00Z","database_type":"postgres","instance_id":"pg-1","metric_name":"cpu_usage_percent","value":97}"#.to_vec());
    let mut poison = KafkaRecord::new("telemetry.metrics", 0, 6);
    poison.value = Some(b"not json".to_vec());
    let event = encode_event(&Source::SelfManaged, &bootstrap, &[good, poison]);
    api.events.lock().unwrap().extend([
        ("req-good".to_owned(), event),
        (
            "req-bad".to_owned(),
            r#"{"Records":[{"eventSource":"aws:sqs"}]}"#.to_owned(),
        ),
    ]);
    let address = serve(api.clone()).await;
    let mut child = Killed(consumer(&address, Some(&bootstrap)).spawn().unwrap());

    let started = Instant::now();
    while api.answers.lock().unwrap().len() < 2 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.0.kill();
    let output = std::mem::replace(&mut child.0, Command::new("true").spawn().unwrap())
        .wait_with_output()
        .unwrap();
    let answers = api.answers.lock().unwrap().clone();
    assert_eq!(
        answers.len(),
        2,
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(answers[0].0, "req-good");
    assert_eq!(answers[0].1, "response");
    assert_eq!(answers[0].2, serde_json::json!({"batchItemFailures": []}));
    assert_eq!(answers[1].0, "req-bad");
    assert_eq!(answers[1].1, "error");
    assert_eq!(answers[1].2["errorType"], "InvalidEvent");
    assert!(
        answers[1].2["errorMessage"]
            .as_str()
            .unwrap()
            .contains("SQS")
    );

    // JSON logs on Lambda: one `batch` line per invocation with the counts; no payload anywhere.
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let batch = lines
        .iter()
        .find(|l| l["message"] == "batch")
        .unwrap_or_else(|| panic!("no batch line in {stdout}"));
    assert_eq!(batch["records"], 2);
    assert_eq!(batch["processed"], 1);
    assert_eq!(batch["dead_lettered"], 1);
    assert_eq!(batch["request_id"], "req-good");
    assert!(
        !stdout.contains("not json") && !stdout.contains("pg-1"),
        "payloads leaked into logs: {stdout}"
    );
}

#[tokio::test]
async fn the_binary_refuses_to_start_without_its_configuration() {
    let api = Arc::new(Api::default());
    let address = serve(api).await;
    let output = consumer(&address, None)
        .env("RETRY_MAX_ATTEMPTS", "zero")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("RETRY_MAX_ATTEMPTS"), "{stderr}");
    assert!(
        stderr.contains("KAFKA_BOOTSTRAP_SERVERS is not set"),
        "every problem at once: {stderr}"
    );

    let output = consumer(&address, None).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("KAFKA_BOOTSTRAP_SERVERS is not set"),
        "{stderr}"
    );
}
