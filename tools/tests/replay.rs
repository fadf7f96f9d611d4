//! `esm replay` over the sample events: counts per file, duplicates on a second replay, invalid
//! events, what lands in the dead-letter and alert topics, the command's exit codes, and the
//! idempotency store IDEMPOTENCY_STORE names.
//!
//! One test needs moto (`bash infra/local-stack.sh start && eval "$(bash infra/local-stack.sh
//! env)"`): it is `#[ignore = "needs moto (infra/local-stack.sh)"]`, run with `-- --include-ignored`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::servers::moto;
use kafka_esm::config::{ConsumerConfig, StoreChoice};
use kafka_esm::dead_letter::headers;
use kafka_esm::idempotency::DynamoDbStore;
use kafka_esm::kafka::{KafkaAuth, SaslCredentials, SaslMechanism, Secret};
use kafka_esm::sink::{DirectorySink, OutboundMessage};
use kafka_esm_telemetry::TelemetryHandler;
use kafka_esm_telemetry::app::telemetry_factory;
use kafka_esm_telemetry::config::AlertSettings;
use kafka_esm_tools::HandlerFactory;
use kafka_esm_tools::replay::{
    FileReport, ReplayError, ReplayOptions, Replayer, event_files, replay_config, replay_store,
};

fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../events")
}

fn defaults() -> ConsumerConfig {
    ConsumerConfig::from_lookup(&|_| None).unwrap()
}

/// The telemetry handler with the default alert settings.
fn telemetry() -> impl HandlerFactory<Handler = TelemetryHandler> {
    telemetry_factory(
        AlertSettings::from_lookup(&|_| None).unwrap(),
        Default::default(),
    )
}

fn options(state_dir: &Path, fresh: bool) -> ReplayOptions {
    ReplayOptions {
        state_dir: state_dir.to_owned(),
        store: None,
        fresh,
        brokers: None,
        timeout: Duration::from_secs(60),
    }
}

async fn replayer(state_dir: &Path) -> Replayer<TelemetryHandler> {
    Replayer::new(&defaults(), &options(state_dir, false), &telemetry())
        .await
        .unwrap()
}

async fn replay_all(replayer: &Replayer<TelemetryHandler>, dir: &Path) -> Vec<FileReport> {
    let mut reports = Vec::new();
    for (n, file) in event_files(&[dir.to_owned()]).unwrap().iter().enumerate() {
        reports.push(replayer.replay_file(file, n).await.unwrap());
    }
    reports
}

fn name(report: &FileReport) -> &str {
    Path::new(&report.file)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
}

/// (file, records, processed, duplicates, dead_lettered, failed, alerts)
const EXPECTED: [(&str, usize, usize, usize, usize, usize, u64); 8] = [
    ("duplicated-input.json", 3, 1, 2, 0, 0, 1),
    ("empty-batch.json", 0, 0, 0, 0, 0, 0),
    ("headers-edge-cases.json", 4, 4, 0, 0, 0, 1),
    ("keys-values-tombstones.json", 5, 5, 0, 0, 0, 1),
    ("msk-telemetry.json", 7, 7, 0, 0, 0, 3),
    ("poison-records.json", 10, 2, 0, 8, 0, 1),
    ("schema-registry.json", 2, 2, 0, 0, 0, 1),
    ("self-managed-telemetry.json", 4, 4, 0, 0, 0, 2),
];

#[tokio::test]
async fn every_sample_event_replays_with_the_expected_counts() {
    let state = tempfile::tempdir().unwrap();
    let reports = replay_all(&replayer(state.path()).await, &events_dir()).await;
    let actual: Vec<_> = reports
        .iter()
        .map(|r| {
            (
                name(r),
                r.records,
                r.processed,
                r.duplicates,
                r.dead_lettered,
                r.failed,
                r.alerts,
            )
        })
        .collect();
    assert_eq!(actual, EXPECTED.to_vec());
    for r in &reports {
        assert!(r.invocation_succeeded, "{}", r.file);
        assert_eq!(
            r.response,
            serde_json::json!({"batchItemFailures": []}),
            "{}",
            r.file
        );
    }
    let sources: Vec<_> = reports
        .iter()
        .map(|r| (name(r), r.event_source.as_str()))
        .collect();
    assert!(sources.contains(&("msk-telemetry.json", "aws:kafka")));
    assert!(sources.contains(&("self-managed-telemetry.json", "SelfManagedKafka")));
}

#[tokio::test]
async fn replaying_twice_reports_duplicates_and_publishes_no_second_alert() {
    let state = tempfile::tempdir().unwrap();
    let first = replay_all(&replayer(state.path()).await, &events_dir()).await;
    let alerts_after_first =
        DirectorySink::read_topic(&state.path().join("topics"), "telemetry.alerts").unwrap();
    let total_alerts: u64 = EXPECTED.iter().map(|e| e.6).sum();
    assert_eq!(alerts_after_first.len() as u64, total_alerts);

    // A new process (a new replayer on the same state directory) sees the same store.
    let second = replay_all(&replayer(state.path()).await, &events_dir()).await;
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(
            b.duplicates, a.records,
            "{}: every record is a duplicate",
            b.file
        );
        assert_eq!(
            (b.processed, b.dead_lettered, b.alerts),
            (0, 0, 0),
            "{}",
            b.file
        );
        assert!(b.invocation_succeeded);
    }
    let topics = state.path().join("topics");
    assert_eq!(
        DirectorySink::read_topic(&topics, "telemetry.alerts").unwrap(),
        alerts_after_first
    );
    assert_eq!(
        DirectorySink::read_topic(&topics, "telemetry.metrics-eu.dlq")
            .unwrap()
            .len(),
        8
    );
}

fn header<'a>(message: &'a OutboundMessage, name: &str) -> Option<&'a str> {
    message
        .headers
        .iter()
        .find(|h| h.name == name)
        .and_then(|h| std::str::from_utf8(h.value.as_deref()?).ok())
}

#[tokio::test]
async fn poison_records_reach_the_dead_letter_topic_with_provenance() {
    let state = tempfile::tempdir().unwrap();
    let replayer = replayer(state.path()).await;
    let report = replayer
        .replay_file(&events_dir().join("poison-records.json"), 0)
        .await
        .unwrap();
    assert_eq!(report.dead_lettered, 8);
    let dead = DirectorySink::read_topic(&state.path().join("topics"), "telemetry.metrics-eu.dlq")
        .unwrap();
    let described: Vec<_> = dead
        .iter()
        .map(|m| {
            (
                header(m, headers::ORIGINAL_OFFSET).unwrap(),
                header(m, headers::ERROR_KIND).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        described,
        [
            ("11", "deserialization"),
            ("12", "deserialization"),
            ("13", "deserialization"),
            ("14", "deserialization"),
            ("15", "deserialization"),
            ("16", "undecodable"),
            ("17", "undecodable"),
            ("18", "deserialization"),
        ]
    );
    for m in &dead {
        assert_eq!(
            header(m, headers::ORIGINAL_TOPIC),
            Some("telemetry.metrics-eu")
        );
        assert_eq!(header(m, headers::ORIGINAL_PARTITION), Some("3"));
        assert!(
            header(m, headers::REQUEST_ID)
                .unwrap()
                .starts_with("replay-")
        );
        assert!(header(m, headers::ERROR_MESSAGE).is_some_and(|e| !e.is_empty()));
    }
    // A decodable poison record keeps its key and exact bytes; an undecodable one travels as its raw ESM JSON.
    assert_eq!(dead[7].key.as_deref(), Some(&b"postgres:pg-p-1"[..]));
    assert_eq!(
        dead[7].value.as_deref(),
        Some(&b"\x89PNG\r\n\x1a\n\x00\x00binary"[..])
    );
    assert_eq!(
        header(&dead[5], headers::PAYLOAD_FORMAT),
        Some("esm-record-json")
    );
    assert!(
        String::from_utf8(dead[5].value.clone().unwrap())
            .unwrap()
            .contains("this is not base64!")
    );
}

#[tokio::test]
async fn invalid_events_fail_the_invocation_with_a_reason() {
    let state = tempfile::tempdir().unwrap();
    let reports = replay_all(&replayer(state.path()).await, &events_dir().join("invalid")).await;
    assert_eq!(reports.len(), 4);
    for r in &reports {
        assert!(!r.invocation_succeeded, "{}", r.file);
        assert_eq!(r.response["errorType"], "InvalidEvent", "{}", r.file);
        assert!(
            r.response["errorMessage"]
                .as_str()
                .unwrap()
                .contains("event"),
            "{}",
            r.file
        );
    }
}

/// The variables that name an idempotency store: removed, so that a test sees the default store
/// unless it sets them.
const STORE_VARIABLES: [&str; 4] = [
    "IDEMPOTENCY_STORE",
    "IDEMPOTENCY_LOCAL_PATH",
    "IDEMPOTENCY_TABLE",
    "AWS_ENDPOINT_URL",
];

fn esm_with(args: &[&str], vars: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_esm"));
    command.args(args).env_remove("RUST_LOG");
    for name in STORE_VARIABLES {
        command.env_remove(name);
    }
    command.envs(vars.iter().copied()).output().unwrap()
}

fn esm(args: &[&str]) -> std::process::Output {
    esm_with(args, &[])
}

#[test]
fn the_command_prints_one_json_line_per_file_and_sets_its_exit_code() {
    let state = tempfile::tempdir().unwrap();
    let state_arg = state.path().to_str().unwrap();
    let events = events_dir();
    let ok = esm(&[
        "replay",
        "--json",
        "--fresh",
        "--state-dir",
        state_arg,
        events.to_str().unwrap(),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(ok.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), EXPECTED.len());
    for key in [
        "file",
        "records",
        "processed",
        "duplicates",
        "dead_lettered",
        "failed",
        "alerts",
        "response",
    ] {
        assert!(lines.iter().all(|l| l.get(key).is_some()), "{key}");
    }

    let bad = esm(&[
        "replay",
        "--state-dir",
        state_arg,
        events.join("invalid").to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    let table = String::from_utf8(bad.stdout).unwrap();
    assert!(
        table.contains("FAILURE") && table.contains("4 invocation(s) failed"),
        "{table}"
    );

    let missing = esm(&["replay", "--state-dir", state_arg, "/no/such/file.json"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read /no/such/file.json"));
}

#[test]
fn a_generated_batch_replays_with_its_poison_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.json");
    let out = esm(&[
        "generate",
        "--records",
        "2000",
        "--partitions",
        "4",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let out = esm(&[
        "replay",
        "--json",
        "--state-dir",
        dir.path().join("s").to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["records"], 2000);
    assert_eq!(report["dead_lettered"], 20, "1% poison");
    assert_eq!(report["processed"], 1980);
    assert!(report["alerts"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_file_with_a_utf8_byte_order_mark_replays_like_the_file_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let plain = events_dir().join("msk-telemetry.json");
    let with_bom = dir.path().join("msk-telemetry-bom.json");
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend(std::fs::read(&plain).unwrap());
    std::fs::write(&with_bom, bytes).unwrap();

    let expected = replayer(&dir.path().join("a"))
        .await
        .replay_file(&plain, 0)
        .await
        .unwrap();
    let report = replayer(&dir.path().join("b"))
        .await
        .replay_file(&with_bom, 0)
        .await
        .unwrap();
    assert!(report.invocation_succeeded, "{}", report.response);
    assert_eq!(
        (report.records, report.processed, report.alerts),
        (expected.records, expected.processed, expected.alerts)
    );
    assert_eq!(report.event_source, "aws:kafka");
}

#[test]
fn a_file_that_is_not_utf8_fails_alone_and_the_others_are_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events");
    std::fs::create_dir(&events).unwrap();
    let sample = std::fs::read(events_dir().join("self-managed-telemetry.json")).unwrap();
    std::fs::write(events.join("a.json"), &sample).unwrap();
    // Behind a byte-order mark, which counts in the offset.
    std::fs::write(events.join("b.json"), b"\xEF\xBB\xBF{\"x\": \"caf\xE9\"}").unwrap();
    std::fs::write(events.join("c.json"), b"\xFF\xFE{\0}\0").unwrap();
    std::fs::write(events.join("d.json"), &sample).unwrap();
    let state = dir.path().join("state");
    let out = esm(&[
        "replay",
        "--json",
        "--state-dir",
        state.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let replayed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["file"].to_string())
        .collect();
    assert_eq!(replayed.len(), 2, "{replayed:?}");
    assert!(replayed[0].ends_with("a.json\"") && replayed[1].ends_with("d.json\""));
    let b = events.join("b.json");
    assert!(
        stderr.contains(&format!(
            "cannot read {}: not UTF-8: byte 0xE9 at offset 13",
            b.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "cannot read {}: not UTF-8",
            events.join("c.json").display()
        )) && stderr.contains("UTF-16"),
        "{stderr}"
    );

    let table = esm(&[
        "replay",
        "--state-dir",
        state.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    assert_eq!(table.status.code(), Some(1));
    let stdout = String::from_utf8(table.stdout).unwrap();
    assert!(
        stdout.contains(
            "2 event file(s) replayed, 0 invocation(s) failed. 2 file(s) could not be read"
        ),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_second_replay_of_the_same_state_directory_is_refused_while_the_first_runs() {
    let state = tempfile::tempdir().unwrap();
    let first = replayer(state.path()).await;
    let events = events_dir();
    let report = first
        .replay_file(&events.join("msk-telemetry.json"), 0)
        .await
        .unwrap();
    assert_eq!(report.processed, 7);

    for fresh in [true, false] {
        let refused = Replayer::new(&defaults(), &options(state.path(), fresh), &telemetry())
            .await
            .err()
            .expect("the state directory is in use");
        assert_eq!(
            refused.to_string(),
            format!(
                "another esm replay is using {}: wait for it to finish, or give this one another --state-dir",
                state.path().display()
            )
        );
    }
    // The refused --fresh deleted nothing: the running replay still finds its keys.
    let again = first
        .replay_file(&events.join("msk-telemetry.json"), 1)
        .await
        .unwrap();
    assert_eq!((again.processed, again.duplicates), (0, 7));
    assert_eq!(
        DirectorySink::read_topic(&state.path().join("topics"), "telemetry.alerts")
            .unwrap()
            .len(),
        3
    );
    drop(first);

    // Once it is done, --fresh starts over.
    let fresh = Replayer::new(&defaults(), &options(state.path(), true), &telemetry())
        .await
        .unwrap();
    let report = fresh
        .replay_file(&events.join("msk-telemetry.json"), 0)
        .await
        .unwrap();
    assert_eq!((report.processed, report.duplicates), (7, 0));
}

#[test]
fn fresh_deletes_only_the_state_and_nothing_when_an_input_is_missing() {
    let state = tempfile::tempdir().unwrap();
    let state_arg = state.path().to_str().unwrap();
    let sample = events_dir().join("msk-telemetry.json");
    let own_file = state.path().join("notes.txt");
    std::fs::write(&own_file, "mine").unwrap();
    let first = esm(&["replay", "--state-dir", state_arg, sample.to_str().unwrap()]);
    assert!(first.status.success());
    let store = state.path().join("idempotency.redb");
    let store_len = std::fs::metadata(&store).unwrap().len();

    let missing = esm(&[
        "replay",
        "--fresh",
        "--state-dir",
        state_arg,
        "/no/such/file.json",
    ]);
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(std::fs::metadata(&store).unwrap().len(), store_len);
    assert!(state.path().join("topics").is_dir());

    let fresh = esm(&[
        "replay",
        "--json",
        "--fresh",
        "--state-dir",
        state_arg,
        sample.to_str().unwrap(),
    ]);
    assert!(fresh.status.success());
    let report: serde_json::Value = serde_json::from_slice(&fresh.stdout).unwrap();
    assert_eq!(
        (report["processed"].as_u64(), report["duplicates"].as_u64()),
        (Some(7), Some(0))
    );
    assert_eq!(std::fs::read_to_string(&own_file).unwrap(), "mine");
}

#[tokio::test]
async fn an_empty_or_damaged_store_file_is_refused_with_what_to_do() {
    let state = tempfile::tempdir().unwrap();
    let store = state.path().join("idempotency.redb");
    for (content, problem) in [
        (&b""[..], "is empty (0 bytes)"),
        (
            &b"not a database"[..],
            "is not a readable idempotency store",
        ),
    ] {
        std::fs::write(&store, content).unwrap();
        let error = Replayer::new(&defaults(), &options(state.path(), false), &telemetry())
            .await
            .err()
            .expect("an unusable store file is refused")
            .to_string();
        for part in [
            &format!("{} {problem}", store.display()),
            "delete it to start over",
            "every record would be processed again",
            "--fresh",
        ] {
            assert!(error.contains(part), "{part:?} in {error}");
        }
        assert_eq!(std::fs::read(&store).unwrap(), content, "left as it was");
    }
    let fresh = Replayer::new(&defaults(), &options(state.path(), true), &telemetry())
        .await
        .unwrap();
    let report = fresh
        .replay_file(&events_dir().join("msk-telemetry.json"), 0)
        .await
        .unwrap();
    assert_eq!(report.processed, 7);
}

fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

#[test]
fn brokers_replace_only_the_bootstrap_servers_of_the_kafka_settings() {
    let sasl = [
        ("AWS_LAMBDA_FUNCTION_NAME", "consumer-fn"),
        ("KAFKA_AUTH", "scram-sha-512"),
        ("KAFKA_SASL_USERNAME", "alice"),
        ("KAFKA_SASL_PASSWORD", "secret"),
        ("KAFKA_PROPERTIES", "socket.timeout.ms=30000"),
        ("PUBLISH_TIMEOUT_MS", "2500"),
    ];
    let expected_auth = KafkaAuth::Sasl {
        mechanism: SaslMechanism::ScramSha512,
        credentials: SaslCredentials::Given {
            username: "alice".into(),
            password: Secret::new("secret"),
        },
        over_tls: true,
    };
    // Without KAFKA_BOOTSTRAP_SERVERS, and with it (replaced).
    for extra in [
        &[][..],
        &[("KAFKA_BOOTSTRAP_SERVERS", "elsewhere:9096")][..],
    ] {
        let vars: Vec<_> = sasl.iter().chain(extra).copied().collect();
        let config =
            replay_config(&lookup(&vars), Some("b-1:9096,b-2:9096"), &mut telemetry()).unwrap();
        let kafka = config.kafka.expect("Kafka settings for --brokers");
        assert_eq!(kafka.bootstrap_servers, "b-1:9096,b-2:9096");
        assert_eq!(kafka.auth, expected_auth);
        assert_eq!(
            kafka.properties,
            [("socket.timeout.ms".to_owned(), "30000".to_owned())]
        );
        assert_eq!(kafka.client_id, "consumer-fn");
        assert_eq!(kafka.delivery_timeout, Duration::from_millis(2500));
        let client = kafka.producer_config().unwrap();
        assert_eq!(client.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(client.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
    }
    // Without --brokers, the configuration is the Lambda's.
    assert_eq!(
        replay_config(&lookup(&sasl), None, &mut telemetry())
            .unwrap()
            .kafka,
        None
    );
}

/// A Secrets Manager that answers `GetSecretValue` with SASL credentials, and records the secret ids
/// asked for.
async fn fake_secrets_manager(asked: Arc<Mutex<Vec<String>>>) -> String {
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |body: axum::body::Bytes| async move {
            let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let arn = request["SecretId"].as_str().unwrap().to_owned();
            asked.lock().unwrap().push(arn.clone());
            let secret = serde_json::json!({"username": "alice", "password": "p"}).to_string();
            (
                [("content-type", "application/x-amz-json-1.1")],
                serde_json::json!({"ARN": arn, "Name": "kafka", "SecretString": secret})
                    .to_string(),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread")]
async fn brokers_with_credentials_from_a_secret_fetch_it_as_the_lambda_does() {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let endpoint = fake_secrets_manager(asked.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:AmazonMSK_replay";
    let mut command = Command::new(env!("CARGO_BIN_EXE_esm"));
    command
        .env_clear()
        .env("KAFKA_AUTH", "scram-sha-512")
        .env("KAFKA_SASL_SECRET_ARN", arn)
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_REGION", "eu-west-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_CONFIG_FILE", dir.path().join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args([
            "replay",
            "--json",
            "--brokers",
            "127.0.0.1:9",
            "--state-dir",
        ])
        .arg(dir.path().join("state"))
        // No records: nothing is published, so no broker needs to answer.
        .arg(events_dir().join("empty-batch.json"));
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(*asked.lock().unwrap(), [arn]);
}

#[test]
fn the_store_is_the_one_idempotency_store_names_and_the_state_directory_file_when_unset() {
    let config = |vars: &[(&str, &str)]| {
        let lookup = lookup(vars);
        let config = replay_config(&lookup, None, &mut telemetry()).unwrap();
        replay_store(&lookup, &config)
    };
    assert_eq!(config(&[]), None);
    assert_eq!(
        config(&[("IDEMPOTENCY_STORE", "  ")]),
        None,
        "blank is unset"
    );
    assert_eq!(
        config(&[("IDEMPOTENCY_STORE", "memory")]),
        Some(StoreChoice::Memory)
    );
    assert_eq!(
        config(&[
            ("IDEMPOTENCY_STORE", "local"),
            ("IDEMPOTENCY_LOCAL_PATH", "/var/keys.redb")
        ]),
        Some(StoreChoice::Local("/var/keys.redb".into()))
    );
    assert_eq!(
        config(&[
            ("IDEMPOTENCY_STORE", "dynamodb"),
            ("IDEMPOTENCY_TABLE", "kafka-esm-keys")
        ]),
        Some(StoreChoice::DynamoDb {
            table: "kafka-esm-keys".into(),
            claims: kafka_esm::idempotency::ClaimMode::Transaction,
        })
    );
    // Parsed and checked as the Lambda's configuration is.
    let problems = replay_config(
        &lookup(&[("IDEMPOTENCY_STORE", "dynamodb")]),
        None,
        &mut telemetry(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        problems.contains("IDEMPOTENCY_TABLE is not set"),
        "{problems}"
    );
}

#[tokio::test]
async fn a_memory_store_processes_again_what_the_default_finds_as_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let runs = |store: Option<StoreChoice>, state: PathBuf| async move {
        let mut runs = Vec::new();
        for _ in 0..2 {
            let options = ReplayOptions {
                store: store.clone(),
                ..options(&state, false)
            };
            let replayer = Replayer::new(&defaults(), &options, &telemetry())
                .await
                .unwrap();
            runs.push(replay_all(&replayer, &events_dir()).await);
        }
        runs
    };
    let default = runs(None, dir.path().join("default")).await;
    let memory = runs(Some(StoreChoice::Memory), dir.path().join("memory")).await;
    let total = |reports: &[FileReport], f: fn(&FileReport) -> usize| -> usize {
        reports.iter().map(f).sum()
    };
    let records = total(&default[0], |r| r.records);
    let first_processed = total(&default[0], |r| r.processed + r.dead_lettered);
    let counts = |reports: &[FileReport]| -> Vec<_> {
        reports
            .iter()
            .map(|r| {
                (
                    r.records,
                    r.processed,
                    r.duplicates,
                    r.dead_lettered,
                    r.alerts,
                )
            })
            .collect()
    };
    // The first runs agree; a second default run finds every record as a duplicate.
    assert_eq!(counts(&memory[0]), counts(&default[0]));
    assert_eq!(total(&default[1], |r| r.duplicates), records);
    assert_eq!(total(&default[1], |r| r.processed + r.dead_lettered), 0);
    // The memory store starts empty each time: its second run processes them all again.
    assert_eq!(counts(&memory[1]), counts(&memory[0]));
    assert_eq!(
        total(&memory[1], |r| r.processed + r.dead_lettered),
        first_processed
    );
    assert_eq!(
        total(&memory[1], |r| r.duplicates),
        total(&memory[0], |r| r.duplicates),
        "only the duplicates within a file"
    );
    assert!(first_processed > 0 && first_processed < records);
    assert!(!dir.path().join("memory/idempotency.redb").exists());
}

#[test]
fn the_command_uses_the_store_idempotency_store_names_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let sample = events_dir().join("msk-telemetry.json");
    let sample = sample.to_str().unwrap();
    let replay = |state: &str, vars: &[(&str, &str)]| {
        let state = dir.path().join(state);
        let out = esm_with(
            &["replay", "--state-dir", state.to_str().unwrap(), sample],
            vars,
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let total_row = |stdout: &str| -> String {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with("total"))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };

    let memory = [("IDEMPOTENCY_STORE", "memory")];
    for _ in 0..2 {
        let stdout = replay("memory", &memory);
        assert_eq!(total_row(&stdout), "total 7 7 0 0 0", "{stdout}");
        assert!(
            stdout.contains(
                "Idempotency store: memory (IDEMPOTENCY_STORE=memory: kept for this replay only)."
            ),
            "{stdout}"
        );
    }
    assert!(!dir.path().join("memory/idempotency.redb").exists());

    let file = dir.path().join("keys/shared.redb");
    let local = [
        ("IDEMPOTENCY_STORE", "local"),
        ("IDEMPOTENCY_LOCAL_PATH", file.to_str().unwrap()),
    ];
    assert_eq!(total_row(&replay("local-a", &local)), "total 7 7 0 0 0");
    // Another state directory, the same store file.
    let stdout = replay("local-b", &local);
    assert_eq!(total_row(&stdout), "total 7 0 7 0 0", "{stdout}");
    assert!(
        stdout.contains(&format!(
            "Idempotency store: local file {} (IDEMPOTENCY_STORE=local).",
            file.display()
        )),
        "{stdout}"
    );
    assert!(!dir.path().join("local-b/idempotency.redb").exists());

    let stdout = replay("default", &[]);
    assert!(
        stdout.contains(&format!(
            "Idempotency store: local file {} (the state directory's).",
            dir.path().join("default/idempotency.redb").display()
        )),
        "{stdout}"
    );
    // --json: the lines stay one per file, stderr holds log lines only; the store is named in a
    // log event.
    let state = dir.path().join("json");
    let mut logged = memory.to_vec();
    logged.push(("RUST_LOG", "info"));
    let out = esm_with(
        &[
            "replay",
            "--json",
            "--state-dir",
            state.to_str().unwrap(),
            sample,
        ],
        &logged,
    );
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("esm replay: the idempotency store store=memory (IDEMPOTENCY_STORE=memory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_named_store_that_cannot_be_used_is_refused_and_fresh_never_deletes_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.redb");
    std::fs::write(&file, b"").unwrap();
    let options = ReplayOptions {
        store: Some(StoreChoice::Local(file.clone())),
        ..options(&dir.path().join("state"), true)
    };
    let error = Replayer::new(&defaults(), &options, &telemetry())
        .await
        .err()
        .unwrap();
    assert!(matches!(error, ReplayError::Store { .. }), "{error:?}");
    let error = error.to_string();
    for part in [
        format!(
            "the idempotency store local file {} (IDEMPOTENCY_STORE=local) cannot be used: while opening its file: {} is empty (0 bytes)",
            file.display(),
            file.display()
        ),
        "unset IDEMPOTENCY_STORE to use a file in the state directory".into(),
    ] {
        assert!(error.contains(&part), "{part:?} in {error}");
    }
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"",
        "--fresh left it as it was"
    );

    // A DynamoDB endpoint that does not answer fails once, before any event.
    let out = esm_with(
        &[
            "replay",
            "--timeout-ms",
            "3000",
            "--state-dir",
            dir.path().join("dynamodb").to_str().unwrap(),
            events_dir().join("msk-telemetry.json").to_str().unwrap(),
        ],
        &[
            ("IDEMPOTENCY_STORE", "dynamodb"),
            ("IDEMPOTENCY_TABLE", "kafka-esm-keys"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("PUBLISH_TIMEOUT_MS", "1000"),
            ("SAFETY_MARGIN_MS", "0"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("esm replay: the idempotency store DynamoDB table kafka-esm-keys at http://127.0.0.1:9 (IDEMPOTENCY_STORE=dynamodb) cannot be used: "),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no event ran");
}

#[test]
#[ignore = "needs moto (infra/local-stack.sh)"]
fn a_second_replay_against_dynamodb_finds_every_record_a_duplicate() {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Region};
    let endpoint = moto();
    let aws = aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new("test", "test", None, None, "static-test"),
            ),
        )
        .endpoint_url(&endpoint)
        .build();
    let table = format!(
        "kafka-esm-replay-{}-{:x}",
        std::process::id(),
        fastrand::u64(..)
    );
    let store = DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&aws), table.clone());
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(store.create_table())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let replay = |run: &str| {
        // A new state directory each time: the duplicates can only come from the table.
        let state = dir.path().join(run);
        let vars = [
            ("IDEMPOTENCY_STORE", "dynamodb"),
            ("IDEMPOTENCY_TABLE", table.as_str()),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("RUST_LOG", "info"),
        ];
        let out = esm_with(
            &[
                "replay",
                "--json",
                "--state-dir",
                state.to_str().unwrap(),
                events_dir().to_str().unwrap(),
            ],
            &vars,
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "esm replay: the idempotency store store=DynamoDB table {table} at {endpoint}"
            )),
            "{stderr}"
        );
        assert!(!state.join("idempotency.redb").exists());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let count = |line: &serde_json::Value, key: &str| line[key].as_u64().unwrap();
    let first = replay("first");
    assert_eq!(first.len(), EXPECTED.len());
    for (line, expected) in first.iter().zip(EXPECTED) {
        assert_eq!(
            (
                count(line, "records") as usize,
                count(line, "processed") as usize,
                count(line, "duplicates") as usize,
                count(line, "dead_lettered") as usize,
                count(line, "failed") as usize,
            ),
            (expected.1, expected.2, expected.3, expected.4, expected.5),
            "{line}"
        );
    }
    let second = replay("second");
    for line in &second {
        assert_eq!(
            (
                count(line, "duplicates"),
                count(line, "processed"),
                count(line, "dead_lettered"),
                count(line, "alerts")
            ),
            (count(line, "records"), 0, 0, 0),
            "every record a duplicate: {line}"
        );
    }
}

/// `esm generate --format avro|protobuf --schema-id N` writes a batch the way the producer frames
/// it, and `esm replay` reads it back with `METRIC_FORMAT` and the schema under that id in
/// `SCHEMA_DIR`: only the generated poison is dead-lettered. The same batch read as JSON is all
/// poison; a schema format without an id is refused.
#[test]
fn generated_avro_and_protobuf_batches_replay_with_their_format() {
    let dir = tempfile::tempdir().unwrap();
    let schemas = dir.path().join("schemas");
    std::fs::create_dir(&schemas).unwrap();
    for (format, file, schema) in [
        (
            "avro",
            "41.avsc",
            kafka_esm_telemetry::metric_format::METRIC_AVSC,
        ),
        (
            "protobuf",
            "41.proto",
            kafka_esm_telemetry::metric_format::METRIC_PROTO,
        ),
    ] {
        std::fs::write(schemas.join(file), schema).unwrap();
        let batch = dir.path().join(format!("{format}.json"));
        let generated = esm(&[
            "generate",
            "--records",
            "300",
            "--format",
            format,
            "--schema-id",
            "41",
            "--out",
            batch.to_str().unwrap(),
        ]);
        assert!(generated.status.success(), "{generated:?}");
        let replay = |vars: &[(&str, &str)]| {
            let state = dir.path().join(format!("state-{format}-{}", vars.len()));
            let out = esm_with(
                &[
                    "replay",
                    "--json",
                    "--fresh",
                    "--state-dir",
                    state.to_str().unwrap(),
                    batch.to_str().unwrap(),
                ],
                vars,
            );
            assert!(out.status.success(), "{out:?}");
            let line: serde_json::Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
            line
        };
        let read = replay(&[
            ("METRIC_FORMAT", format),
            ("SCHEMA_DIR", schemas.to_str().unwrap()),
        ]);
        assert_eq!(read["records"], 300, "{read}");
        assert_eq!(
            read["dead_lettered"], 3,
            "{format}: the 1% poison only: {read}"
        );
        assert!(read["alerts"].as_u64().unwrap() > 0, "{read}");
        let as_json = replay(&[]);
        assert_eq!(
            as_json["dead_lettered"], 300,
            "{format} read as JSON: {as_json}"
        );
    }
    let refused = esm(&["generate", "--records", "1", "--format", "avro"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("METRIC_SCHEMA_ID"));
}
