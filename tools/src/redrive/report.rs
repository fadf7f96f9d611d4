//! What `esm redrive` did: one [`MessageReport`] per on-failure message (one `--json` line each) and
//! a [`RunSummary`] at the end.

use std::fmt::Write as _;

use serde::Serialize;

use super::fetch::{Incomplete, MissingOffsets};
use super::on_failure::FailureCondition;

/// What became of an on-failure message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Every record was accounted for and the message was deleted from its source (the SQS
    /// message, or the S3 object with `--delete`).
    Deleted,
    /// Every record was accounted for and the Kafka on-failure topic's offset committed past it.
    Committed,
    /// Every record was accounted for; the source keeps the message (a file, an S3 object
    /// without `--delete`).
    Done,
    /// Left at its source: `reason` says why (malformed, or records not all handled).
    Left,
    /// `--dry-run`: nothing was changed; `would_delete` says what a real run would expect.
    DryRun,
}

/// What happened to one partition's range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RangeReport {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset named by the on-failure record.
    pub first_offset: i64,
    /// Last offset, inclusive.
    pub last_offset: i64,
    /// The partition's low watermark (records below it are gone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub low_watermark: Option<i64>,
    /// The partition's high watermark.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub high_watermark: Option<i64>,
    /// Records read back from Kafka (a dry run: records that would be read).
    pub fetched: u64,
    /// Re-run through the handler: its side effect happened now.
    pub processed: u64,
    /// Re-run through the handler: done before (idempotency), skipped.
    pub duplicates: u64,
    /// Re-run through the handler: poison, sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// `--to-dlq`: copied to the dead-letter topic.
    pub copied: u64,
    /// Read but not handled (the handler, its store or its sinks failed).
    pub unfinished: u64,
    /// Offsets deleted by retention: reported, never silently skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<MissingOffsets>,
    /// Offsets with no record inside the readable span (compaction, transaction markers).
    pub gaps: u64,
    /// Offsets not read (past the partition's end, or the fetch timed out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<Incomplete>,
    /// Why this range is not fully handled, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A dry run over records carried in the payload: each record and what would be done with it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<PlannedRecord>,
}

/// One record of a dry run and what a real run would do with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset (absent for an undecodable record that had none).
    pub offset: Option<i64>,
    /// What a real run would do.
    pub action: String,
}

impl RangeReport {
    /// True when every offset of the range is handled or reported missing.
    pub fn accounted_for(&self) -> bool {
        self.error.is_none() && self.incomplete.is_none() && self.unfinished == 0
    }
}

/// One on-failure message: one `--json` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageReport {
    /// The SQS message id.
    pub message_id: String,
    /// What became of it.
    pub status: MessageStatus,
    /// Why it was left on the queue (or, in a dry run, why a real run would leave it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A dry run: whether a real run would expect to delete it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_delete: Option<bool>,
    /// `reprocess` or `to-dlq`.
    pub mode: &'static str,
    /// The failed invocation's request id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The function that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_arn: Option<String>,
    /// Why the ESM gave up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<FailureCondition>,
    /// The brokers the records were read from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brokers: Option<String>,
    /// One entry per partition range.
    pub ranges: Vec<RangeReport>,
    /// Wall time, milliseconds.
    pub duration_ms: u64,
}

impl MessageReport {
    /// A report for a message that could not be worked on at all.
    pub fn left(message_id: &str, mode: &'static str, reason: String) -> Self {
        Self {
            message_id: message_id.to_owned(),
            status: MessageStatus::Left,
            reason: Some(reason),
            would_delete: None,
            mode,
            request_id: None,
            function_arn: None,
            condition: None,
            brokers: None,
            ranges: Vec::new(),
            duration_ms: 0,
        }
    }

    /// Sum of a count over the ranges.
    pub fn total(&self, count: fn(&RangeReport) -> u64) -> u64 {
        self.ranges.iter().map(count).sum()
    }
}

/// Totals of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// Messages received and worked on.
    pub messages: u64,
    /// Deleted from the queue (or the bucket).
    pub deleted: u64,
    /// Committed past on the Kafka on-failure topic.
    pub committed: u64,
    /// Handled, the source kept as it is.
    pub done: u64,
    /// Left on the queue.
    pub left: u64,
    /// Dry run: examined only.
    pub dry_run: u64,
    /// Dry run: messages a real run would leave on the queue.
    pub would_be_left: u64,
    /// Records read back.
    pub fetched: u64,
    /// Re-run: processed now.
    pub processed: u64,
    /// Re-run: duplicates.
    pub duplicates: u64,
    /// Re-run: dead-lettered by the handler.
    pub dead_lettered: u64,
    /// `--to-dlq`: copied.
    pub copied: u64,
    /// Not handled.
    pub unfinished: u64,
    /// Deleted by retention (reported).
    pub missing: u64,
    /// Gaps in the readable spans.
    pub gaps: u64,
    /// Wall time, milliseconds.
    pub duration_ms: u64,
}

impl RunSummary {
    /// Adds one message's report.
    pub fn add(&mut self, report: &MessageReport) {
        self.messages += 1;
        match report.status {
            MessageStatus::Deleted => self.deleted += 1,
            MessageStatus::Committed => self.committed += 1,
            MessageStatus::Done => self.done += 1,
            MessageStatus::Left => self.left += 1,
            MessageStatus::DryRun => {
                self.dry_run += 1;
                if report.would_delete != Some(true) {
                    self.would_be_left += 1;
                }
            }
        }
        self.fetched += report.total(|r| r.fetched);
        self.processed += report.total(|r| r.processed);
        self.duplicates += report.total(|r| r.duplicates);
        self.dead_lettered += report.total(|r| r.dead_lettered);
        self.copied += report.total(|r| r.copied);
        self.unfinished += report.total(|r| r.unfinished);
        self.missing += report.total(|r| r.missing.map_or(0, |m| m.count));
        self.gaps += report.total(|r| r.gaps);
    }
}

/// The human lines for one message.
pub fn render_message(report: &MessageReport) -> String {
    let mut out = String::new();
    let status = match report.status {
        MessageStatus::Deleted => "deleted".to_owned(),
        MessageStatus::Committed => "committed".to_owned(),
        MessageStatus::Done => "done".to_owned(),
        MessageStatus::Left => "LEFT AT ITS SOURCE".to_owned(),
        MessageStatus::DryRun if report.would_delete == Some(true) => {
            "dry run: would redrive every record".to_owned()
        }
        MessageStatus::DryRun => "dry run: would be left at its source".to_owned(),
    };
    let _ = write!(out, "message {}  [{status}", report.message_id);
    if let Some(condition) = &report.condition {
        let _ = write!(out, "; {condition}");
    }
    if let Some(request_id) = &report.request_id {
        let _ = write!(out, "; request {request_id}");
    }
    let _ = writeln!(out, "; {} ms]", report.duration_ms);
    for r in &report.ranges {
        let _ = write!(
            out,
            "  {}-{} offsets {}..={}: {} {}",
            r.topic,
            r.partition,
            r.first_offset,
            r.last_offset,
            if report.status == MessageStatus::DryRun {
                "would read"
            } else {
                "fetched"
            },
            r.fetched
        );
        if report.mode == "to-dlq" {
            let _ = write!(out, ", copied {}", r.copied);
        } else if report.status != MessageStatus::DryRun {
            let _ = write!(
                out,
                ", processed {}, duplicates {}, dead-lettered {}",
                r.processed, r.duplicates, r.dead_lettered
            );
        }
        if r.unfinished > 0 {
            let _ = write!(out, ", UNFINISHED {}", r.unfinished);
        }
        if let Some(m) = r.missing {
            let _ = write!(
                out,
                ", MISSING {} (offsets {}..={} deleted by retention)",
                m.count, m.first, m.last
            );
        }
        if r.gaps > 0 {
            let _ = write!(out, ", gaps {}", r.gaps);
        }
        let _ = writeln!(out);
        if let Some(incomplete) = &r.incomplete {
            let _ = writeln!(out, "    not read: {incomplete}");
        }
        if let Some(error) = &r.error {
            let _ = writeln!(out, "    error: {error}");
        }
        for planned in &r.records {
            let _ = writeln!(
                out,
                "    {}-{} offset {}: would {}",
                planned.topic,
                planned.partition,
                planned.offset.map_or("?".into(), |o| o.to_string()),
                planned.action
            );
        }
    }
    if let Some(reason) = &report.reason {
        let _ = writeln!(out, "  reason: {reason}");
    }
    out
}

/// The closing human line.
pub fn render_summary(summary: &RunSummary) -> String {
    format!(
        "{} message(s): {} deleted, {} committed, {} done, {} left at their source, {} examined (dry run, {} would be left); records: {} fetched, {} processed, {} duplicates, {} dead-lettered, {} copied, {} unfinished, {} missing (retention), {} gaps; {} ms",
        summary.messages,
        summary.deleted,
        summary.committed,
        summary.done,
        summary.left,
        summary.dry_run,
        summary.would_be_left,
        summary.fetched,
        summary.processed,
        summary.duplicates,
        summary.dead_lettered,
        summary.copied,
        summary.unfinished,
        summary.missing,
        summary.gaps,
        summary.duration_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(status: MessageStatus) -> MessageReport {
        MessageReport {
            message_id: "m-1".into(),
            status,
            reason: None,
            would_delete: (status == MessageStatus::DryRun).then_some(false),
            mode: "reprocess",
            request_id: Some("req".into()),
            function_arn: None,
            condition: Some(FailureCondition::RetryAttemptsExhausted),
            brokers: None,
            ranges: vec![RangeReport {
                topic: "a-b".into(),
                partition: 2,
                first_offset: 0,
                last_offset: 9,
                fetched: 7,
                processed: 6,
                duplicates: 1,
                missing: Some(MissingOffsets {
                    first: 0,
                    last: 2,
                    count: 3,
                }),
                ..RangeReport::default()
            }],
            duration_ms: 5,
        }
    }

    #[test]
    fn schema_validation_conditions_are_reported() {
        for condition in [
            FailureCondition::SchemaNotFound,
            FailureCondition::DeserializationError,
        ] {
            let mut r = report(MessageStatus::Deleted);
            r.condition = Some(condition.clone());
            let text = render_message(&r);
            assert!(
                text.contains(&format!("[deleted; {condition}; request req")),
                "{text}"
            );
            let json = serde_json::to_value(&r).unwrap();
            assert_eq!(json["condition"], condition.as_str());
        }
    }

    #[test]
    fn the_human_lines_say_what_was_missing_and_what_a_dry_run_would_do() {
        let text = render_message(&report(MessageStatus::Deleted));
        assert!(
            text.contains("[deleted; RetryAttemptsExhausted; request req"),
            "{text}"
        );
        assert!(
            text.contains("a-b-2 offsets 0..=9: fetched 7, processed 6, duplicates 1"),
            "{text}"
        );
        assert!(
            text.contains("MISSING 3 (offsets 0..=2 deleted by retention)"),
            "{text}"
        );
        let text = render_message(&report(MessageStatus::DryRun));
        assert!(text.contains("would be left at its source"), "{text}");
        assert!(text.contains("would read 7"), "{text}");
        assert!(!text.contains("processed"), "{text}");
    }

    #[test]
    fn the_summary_adds_every_message() {
        let mut summary = RunSummary::default();
        summary.add(&report(MessageStatus::Deleted));
        summary.add(&report(MessageStatus::Left));
        summary.add(&report(MessageStatus::DryRun));
        assert_eq!(
            (
                summary.messages,
                summary.deleted,
                summary.left,
                summary.dry_run,
                summary.would_be_left
            ),
            (3, 1, 1, 1, 1)
        );
        assert_eq!(
            (summary.fetched, summary.processed, summary.missing),
            (21, 18, 9)
        );
        assert!(
            render_summary(&summary)
                .starts_with("3 message(s): 1 deleted, 0 committed, 0 done, 1 left")
        );
        let json = serde_json::to_value(report(MessageStatus::Left)).unwrap();
        assert_eq!(json["status"], "left");
        assert_eq!(json["condition"], "RetryAttemptsExhausted");
        assert_eq!(json["ranges"][0]["missing"]["count"], 3);
    }
}
