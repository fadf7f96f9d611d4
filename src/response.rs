//! The answer to the ESM: success, a partial batch response, or a failure that makes it retry.
//!
//! The partial batch response for Kafka is
//! `{"batchItemFailures":[{"itemIdentifier":{"topic-partition":"mytopic-0","offset":100}}]}`
//! as the AWS Lambda developer guide documents it. Some sources (Powertools for Python's type, an
//! open aws-lambda-rust-runtime pull request) name the key `partition` instead; this is the one
//! place that spelling lives, so a correction is one line.

use serde::{Deserialize, Serialize};

use crate::processor::BatchReport;

/// The key naming the partition inside `itemIdentifier`.
pub const TOPIC_PARTITION_KEY: &str = "topic-partition";

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
    /// The `"<topic>-<partition>"` key as the event spelled it.
    #[serde(rename = "topic-partition")]
    pub topic_partition: String,
    /// The first offset to deliver again.
    pub offset: i64,
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
                    topic_partition: partition.key.clone(),
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

    #[test]
    fn the_documented_shape() {
        let response = KafkaBatchResponse {
            batch_item_failures: vec![BatchItemFailure {
                item_identifier: ItemIdentifier {
                    topic_partition: "mytopic-0".into(),
                    offset: 100,
                },
            }],
        };
        assert_eq!(
            serde_json::to_string(&response).unwrap(),
            r#"{"batchItemFailures":[{"itemIdentifier":{"topic-partition":"mytopic-0","offset":100}}]}"#
        );
        assert!(
            serde_json::to_string(&response)
                .unwrap()
                .contains(TOPIC_PARTITION_KEY)
        );
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
            response.batch_item_failures[0]
                .item_identifier
                .topic_partition,
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
