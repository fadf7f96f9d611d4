//! The answer to the ESM: success, a partial batch response, or a failure that makes it retry.
//!
//! The partial batch response for Kafka, as the AWS Lambda developer guide documents it
//! ("Configuring error handling controls for Kafka event sources", section PartialBatchResponse):
//!
//! ```json
//! {"batchItemFailures":[{"itemIdentifier":{"partition":"mytopic-0","offset":100}}]}
//! ```
//!
//! `partition` is `"<topic>-<partition number>"` and `offset` a JSON number. An empty or null
//! `batchItemFailures` (or no body at all) means the whole batch succeeded. Any other shape, or an
//! identifier naming a partition or offset that was not in the invoked event, makes the ESM retry
//! the whole batch. [`parse_function_answer`] reads an answer exactly that way: the local ESM
//! (`esm poll`) uses it, so it and the consumer share one definition of the contract.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::processor::BatchReport;

/// The key naming the partition inside `itemIdentifier`.
pub const PARTITION_KEY: &str = "partition";

/// The function's answer when the invocation succeeds. An empty list means every record is done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaBatchResponse {
    /// One entry per partition the ESM must retry, from the given offset on.
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<BatchItemFailure>,
}

/// A partition to retry from an offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchItemFailure {
    /// Which record.
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: ItemIdentifier,
}

/// A record's identity in a partial batch response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemIdentifier {
    /// `"<topic>-<partition number>"`, the key of the record's group in the event.
    pub partition: String,
    /// The first offset to deliver again.
    pub offset: i64,
}

/// A function's successful answer that is not a Kafka partial batch response the ESM accepts: the
/// ESM treats it as a failure of the whole batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the function's answer is not a valid Kafka partial batch response ({reason}); the ESM retries the whole batch. Expected {{\"batchItemFailures\":[{{\"itemIdentifier\":{{\"partition\":\"<topic>-<partition>\",\"offset\":<number>}}}}]}}"
)]
pub struct InvalidBatchResponse {
    /// What is wrong with it.
    pub reason: String,
}

/// Reads a function's successful answer as the ESM does: no body, `null`, an object without
/// `batchItemFailures` or with an empty or null list mean success (`Ok(None)` or an empty
/// response); a list of items each with `itemIdentifier.partition` (a string) and
/// `itemIdentifier.offset` (a whole number) is a partial batch response; anything else is an
/// [`InvalidBatchResponse`]. Whether the identifiers name records of the invoked event is the
/// caller's check.
pub fn parse_function_answer(
    body: &[u8],
) -> Result<Option<KafkaBatchResponse>, InvalidBatchResponse> {
    let invalid = |reason: String| InvalidBatchResponse { reason };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("the body is not JSON: {e}")))?;
    let failures = match &value {
        Value::Null => return Ok(None),
        Value::Object(map) => match map.get("batchItemFailures") {
            None | Some(Value::Null) => return Ok(Some(KafkaBatchResponse::default())),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(invalid("`batchItemFailures` is not a list".into())),
        },
        // A function that returns a bare string or number answers nothing about the batch.
        Value::String(_) | Value::Number(_) | Value::Bool(_) => return Ok(None),
        Value::Array(_) => return Err(invalid("the body is a list, not an object".into())),
    };
    let mut batch_item_failures = Vec::with_capacity(failures.len());
    for (n, item) in failures.iter().enumerate() {
        let id = item
            .get("itemIdentifier")
            .and_then(Value::as_object)
            .ok_or_else(|| invalid(format!("item {n} has no `itemIdentifier` object")))?;
        let partition = match id.get(PARTITION_KEY) {
            Some(Value::String(p)) if !p.is_empty() => p.clone(),
            Some(other) => {
                return Err(invalid(format!(
                    "item {n}: `itemIdentifier.partition` must be a non-empty \"<topic>-<partition>\" string, found {other}"
                )));
            }
            None => {
                let keys: Vec<&str> = id.keys().map(String::as_str).collect();
                return Err(invalid(format!(
                    "item {n}: `itemIdentifier` has no `partition` key (it has {keys:?})"
                )));
            }
        };
        let offset = id.get("offset").and_then(Value::as_i64).ok_or_else(|| {
            invalid(format!(
                "item {n}: `itemIdentifier.offset` must be a whole JSON number, found {}",
                id.get("offset").map_or("nothing".into(), Value::to_string)
            ))
        })?;
        batch_item_failures.push(BatchItemFailure {
            item_identifier: ItemIdentifier { partition, offset },
        });
    }
    Ok(Some(KafkaBatchResponse {
        batch_item_failures,
    }))
}

/// The batch is not done and the invocation must fail so that the ESM retries it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{unfinished} of {records} records are unfinished (first in {first_partition}: {reason}); the invocation fails so the ESM retries the batch{hint}"
)]
pub struct BatchFailed {
    /// Records left for the retry.
    pub unfinished: usize,
    /// Records in the batch.
    pub records: usize,
    /// The first partition with an unfinished record.
    pub first_partition: String,
    /// Why that record is unfinished.
    pub reason: String,
    /// Advice on how to retry less.
    pub hint: &'static str,
}

/// The answer for a processed batch. With `partial` (the ESM's `ReportBatchItemFailures`), each
/// partition with an unfinished record is named at its first unfinished offset; without it, any
/// unfinished record fails the invocation. Done records are idempotent, so the retry is cheap either way.
pub fn respond(report: &BatchReport, partial: bool) -> Result<KafkaBatchResponse, BatchFailed> {
    let mut failures = Vec::new();
    let mut offsetless = None;
    for partition in &report.partitions {
        match partition.first_unfinished() {
            None => {}
            Some(Some(offset)) => failures.push(BatchItemFailure {
                item_identifier: ItemIdentifier {
                    partition: partition.key.clone(),
                    offset,
                },
            }),
            Some(None) => offsetless = offsetless.or(Some(partition)),
        }
    }
    if failures.is_empty() && offsetless.is_none() {
        return Ok(KafkaBatchResponse::default());
    }
    if partial && offsetless.is_none() {
        return Ok(KafkaBatchResponse {
            batch_item_failures: failures,
        });
    }
    let counts = report.counts();
    let first = report
        .partitions
        .iter()
        .find(|p| p.first_unfinished().is_some())
        .expect("a partition is unfinished");
    let reason = first
        .outcomes
        .iter()
        .find_map(|(_, o)| match o {
            crate::processor::RecordOutcome::Unfinished(reason) => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_default();
    Err(BatchFailed {
        unfinished: counts.unfinished,
        records: counts.records,
        first_partition: first.key.clone(),
        reason,
        hint: if partial {
            " (a record without an offset cannot be named in a partial batch response)"
        } else {
            "; set REPORT_BATCH_ITEM_FAILURES=true with FunctionResponseTypes ReportBatchItemFailures to retry only the unfinished partitions"
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::{PartitionReport, RecordOutcome};
    use crate::record::TopicPartition;

    fn partition(key: &str, outcomes: Vec<(Option<i64>, RecordOutcome)>) -> PartitionReport {
        PartitionReport {
            key: key.into(),
            topic_partition: TopicPartition::new(key, 0),
            outcomes,
        }
    }

    /// The example of the AWS Lambda developer guide, "Configuring error handling controls for
    /// Kafka event sources", section PartialBatchResponse, byte for byte (without its closing
    /// `...` line, which stands for more items).
    const GUIDE_EXAMPLE: &str = r#"{
  "batchItemFailures": [
    {
      "itemIdentifier": {
        "partition": "topic-partition_number",
        "offset": 100
      }
    }
  ]
}"#;

    /// The one-line form the issue and aws-lambda-rust-runtime pull request 1164 test with.
    const COMPACT_EXAMPLE: &str =
        r#"{"batchItemFailures":[{"itemIdentifier":{"partition":"mytopic-0","offset":100}}]}"#;

    fn one_failure(partition: &str, offset: i64) -> KafkaBatchResponse {
        KafkaBatchResponse {
            batch_item_failures: vec![BatchItemFailure {
                item_identifier: ItemIdentifier {
                    partition: partition.into(),
                    offset,
                },
            }],
        }
    }

    #[test]
    fn the_guides_partial_batch_response_byte_for_byte() {
        let response = one_failure("topic-partition_number", 100);
        assert_eq!(
            serde_json::to_string_pretty(&response).unwrap(),
            GUIDE_EXAMPLE
        );
        assert_eq!(
            parse_function_answer(GUIDE_EXAMPLE.as_bytes()).unwrap(),
            Some(response)
        );
        let response = one_failure("mytopic-0", 100);
        assert_eq!(serde_json::to_string(&response).unwrap(), COMPACT_EXAMPLE);
        assert_eq!(
            parse_function_answer(COMPACT_EXAMPLE.as_bytes()).unwrap(),
            Some(response)
        );
    }

    #[test]
    fn the_consumers_answer_is_the_guides_shape() {
        let report = BatchReport {
            partitions: vec![partition(
                "mytopic-0",
                vec![
                    (Some(99), RecordOutcome::Processed),
                    (Some(100), RecordOutcome::Unfinished("down".into())),
                ],
            )],
        };
        let answer = serde_json::to_string(&respond(&report, true).unwrap()).unwrap();
        assert_eq!(answer, COMPACT_EXAMPLE);
    }

    #[test]
    fn success_is_no_body_null_or_an_empty_list() {
        for body in [
            "",
            " ",
            "null",
            "{}",
            r#"{"batchItemFailures":null}"#,
            r#""ok""#,
        ] {
            let parsed = parse_function_answer(body.as_bytes()).unwrap();
            assert!(
                parsed.is_none_or(|r| r.batch_item_failures.is_empty()),
                "{body}"
            );
        }
        assert_eq!(
            parse_function_answer(br#"{"batchItemFailures":[]}"#).unwrap(),
            Some(KafkaBatchResponse::default())
        );
    }

    #[test]
    fn any_other_shape_fails_the_whole_batch() {
        for (body, says) in [
            (
                r#"{"batchItemFailures":[{"itemIdentifier":{"topic-partition":"t-0","offset":1}}]}"#,
                "no `partition` key",
            ),
            (
                r#"{"batchItemFailures":[{"itemIdentifier":{"partition":"t-0","offset":"1"}}]}"#,
                "whole JSON number",
            ),
            (
                r#"{"batchItemFailures":[{"itemIdentifier":{"partition":"t-0","offset":1.5}}]}"#,
                "whole JSON number",
            ),
            (
                r#"{"batchItemFailures":[{"itemIdentifier":{"partition":0,"offset":1}}]}"#,
                "non-empty",
            ),
            (
                r#"{"batchItemFailures":[{"itemIdentifier":{"partition":"","offset":1}}]}"#,
                "non-empty",
            ),
            (
                r#"{"batchItemFailures":[{"partition":"t-0","offset":1}]}"#,
                "no `itemIdentifier`",
            ),
            (
                r#"{"batchItemFailures":[{"itemIdentifier":null}]}"#,
                "no `itemIdentifier`",
            ),
            (r#"{"batchItemFailures":{}}"#, "not a list"),
            ("[]", "a list"),
            ("{", "not JSON"),
        ] {
            let e = parse_function_answer(body.as_bytes()).expect_err(body);
            assert!(e.to_string().contains(says), "{body}: {e}");
        }
    }

    #[test]
    fn names_the_first_unfinished_offset_of_each_partition() {
        let report = BatchReport {
            partitions: vec![
                partition(
                    "a-0",
                    vec![
                        (Some(1), RecordOutcome::Processed),
                        (Some(2), RecordOutcome::Duplicate),
                    ],
                ),
                partition(
                    "b.x-1",
                    vec![
                        (Some(7), RecordOutcome::Processed),
                        (Some(8), RecordOutcome::Unfinished("down".into())),
                        (Some(9), RecordOutcome::NotAttempted),
                    ],
                ),
            ],
        };
        let response = respond(&report, true).unwrap();
        assert_eq!(response.batch_item_failures.len(), 1);
        assert_eq!(
            response.batch_item_failures[0].item_identifier.partition,
            "b.x-1"
        );
        assert_eq!(response.batch_item_failures[0].item_identifier.offset, 8);

        let failed = respond(&report, false).unwrap_err();
        assert_eq!(failed.unfinished, 2);
        assert!(failed.to_string().contains("down"), "{failed}");
    }

    #[test]
    fn all_done_is_an_empty_list() {
        let report = BatchReport {
            partitions: vec![partition(
                "a-0",
                vec![(
                    Some(1),
                    RecordOutcome::DeadLettered(crate::dead_letter::PoisonKind::Rejected),
                )],
            )],
        };
        assert_eq!(
            respond(&report, false).unwrap(),
            KafkaBatchResponse::default()
        );
        assert_eq!(
            serde_json::to_string(&respond(&report, true).unwrap()).unwrap(),
            r#"{"batchItemFailures":[]}"#
        );
    }
}
