//! The `esm` tools log as the functions do: `LOG_FORMAT` is honoured, no ANSI colours when stderr
//! is not a terminal, and a `RUST_LOG` that does not parse is named in a warning.

use std::path::Path;
use std::process::{Command, Output};

/// `esm replay` of one event file, in a clean environment with these variables; stderr is a pipe.
fn replay(vars: &[(&str, &str)]) -> Output {
    let state = tempfile::tempdir().unwrap();
    let events = Path::new(env!("CARGO_MANIFEST_DIR")).join("../events/msk-telemetry.json");
    let output = Command::new(env!("CARGO_BIN_EXE_esm"))
        .args(["replay", "--json", "--fresh", "--state-dir"])
        .arg(state.path())
        .arg(events)
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn esm_replay_logs_json_lines_to_stderr_with_log_format_json() {
    let output = replay(&[("LOG_FORMAT", "json"), ("RUST_LOG", "info")]);
    let logs = lines(&output.stderr);
    assert!(!logs.is_empty());
    for line in &logs {
        let log: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(log["level"].is_string(), "{line}");
    }
    assert!(
        logs.iter().any(|l| l.contains(r#""message":"batch""#)),
        "{logs:?}"
    );
    // stdout keeps the replay's own output: one report per file.
    let reports = lines(&output.stdout);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(reports[0].starts_with(r#"{"file":"#), "{reports:?}");
}

#[test]
fn esm_replay_text_logs_have_no_colours_when_stderr_is_not_a_terminal() {
    let output = replay(&[("RUST_LOG", "info")]);
    let logs = String::from_utf8(output.stderr).unwrap();
    assert!(logs.contains("INFO batch"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "{logs:?}");
}

#[test]
fn esm_replay_names_a_rust_log_that_does_not_parse_and_uses_its_default() {
    let output = replay(&[("RUST_LOG", "info,kafka_esm=loud")]);
    let logs = lines(&output.stderr);
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(
        logs[0].contains(r#"WARN RUST_LOG="info,kafka_esm=loud" is not a valid log filter"#)
            && logs[0].ends_with("logging with the default filter `error` instead"),
        "{logs:?}"
    );
}
