//! `esm replay` over the sample events: counts per file, duplicates on a second replay, invalid
//! events, what lands in the dead-letter and alert topics, and the command's exit codes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kafka_esm::config::ConsumerConfig;
use kafka_esm::dead_letter::headers;
use kafka_esm::replay::{FileReport, ReplayOptions, Replayer, event_files};
use kafka_esm::sink::{DirectorySink, OutboundMessage};

fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("events")
}

fn defaults() -> ConsumerConfig {
    ConsumerConfig::from_lookup(&|_| None).unwrap()
}

fn replayer(state_dir: &Path) -> Replayer {
    let options = ReplayOptions {
        state_dir: state_dir.to_owned(),
        fresh: false,
        brokers: None,
        timeout: Duration::from_secs(60),
    };
    Replayer::new(&defaults(), &options).unwrap()
}

async fn replay_all(replayer: &Replayer, dir: &Path) -> Vec<FileReport> {
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
    let reports = replay_all(&replayer(state.path()), &events_dir()).await;
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
    let first = replay_all(&replayer(state.path()), &events_dir()).await;
    let alerts_after_first =
        DirectorySink::read_topic(&state.path().join("topics"), "telemetry.alerts").unwrap();
    let total_alerts: u64 = EXPECTED.iter().map(|e| e.6).sum();
    assert_eq!(alerts_after_first.len() as u64, total_alerts);

    // A new process (a new replayer on the same state directory) sees the same store.
    let second = replay_all(&replayer(state.path()), &events_dir()).await;
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
    let replayer = replayer(state.path());
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
    let reports = replay_all(&replayer(state.path()), &events_dir().join("invalid")).await;
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

fn esm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_esm"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
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
