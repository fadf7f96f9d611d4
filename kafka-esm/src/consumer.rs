//! One invocation, start to end: event JSON → [`Batch`] → [`Processor`] → answer to the ESM, with
//! one summary line per batch. The Lambda binary and `esm replay` both call [`Consumer::invoke`].

use std::time::Instant;

use tracing::{error, info};

use crate::event::{Batch, EventError, decode_event};
use crate::handler::{InvocationInfo, RecordHandler};
use crate::processor::{BatchReport, Processor};
use crate::response::{BatchFailed, KafkaBatchResponse, respond};

/// Why an invocation fails (and the ESM retries the batch).
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    /// The event is not a Kafka ESM event.
    #[error(transparent)]
    Event(#[from] EventError),
    /// Records are unfinished and partial batch responses are off.
    #[error(transparent)]
    Unfinished(#[from] BatchFailed),
}

impl InvocationError {
    /// The `errorType` Lambda reports for this failure.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Event(_) => "InvalidEvent",
            Self::Unfinished(_) => "UnfinishedRecords",
        }
    }
}

impl From<InvocationError> for lambda_runtime::Diagnostic {
    fn from(error: InvocationError) -> Self {
        Self {
            error_type: error.error_type().into(),
            error_message: error.to_string(),
        }
    }
}

impl From<&InvocationError> for lambda_runtime::Diagnostic {
    fn from(error: &InvocationError) -> Self {
        Self {
            error_type: error.error_type().into(),
            error_message: error.to_string(),
        }
    }
}

/// What an invocation did.
#[derive(Debug)]
pub struct Invocation {
    /// The decoded batch, when the event was an ESM event.
    pub batch: Option<Batch>,
    /// The outcome of each record.
    pub report: BatchReport,
    /// What the function answers.
    pub result: Result<KafkaBatchResponse, InvocationError>,
}

/// The consumer: a processor plus the answer policy.
pub struct Consumer<H> {
    processor: Processor<H>,
    partial_batch_response: bool,
}

impl Invocation {
    /// The JSON the function returns: the response, or Lambda's error payload.
    pub fn answer_json(&self) -> serde_json::Value {
        match &self.result {
            Ok(response) => serde_json::to_value(response),
            Err(error) => serde_json::to_value(lambda_runtime::Diagnostic::from(error)),
        }
        .expect("responses and diagnostics serialize")
    }
}

impl<H: RecordHandler> Consumer<H> {
    /// A consumer; `partial_batch_response` must match the ESM's `ReportBatchItemFailures`.
    pub fn new(processor: Processor<H>, partial_batch_response: bool) -> Self {
        Self {
            processor,
            partial_batch_response,
        }
    }

    /// The processor.
    pub fn processor(&self) -> &Processor<H> {
        &self.processor
    }

    /// Handles one ESM event.
    pub async fn invoke(&self, event_json: &str, invocation: &InvocationInfo) -> Invocation {
        let started = Instant::now();
        let batch = match decode_event(event_json) {
            Ok(batch) => batch,
            Err(e) => {
                error!(request_id = invocation.request_id.as_str(), error = %e, "event rejected");
                return Invocation {
                    batch: None,
                    report: BatchReport::default(),
                    result: Err(e.into()),
                };
            }
        };
        let decoded_us = started.elapsed().as_micros() as u64;
        let report = self.processor.process(&batch, invocation).await;
        let result = respond(&report, self.partial_batch_response).map_err(InvocationError::from);
        let counts = report.counts();
        let answer = match &result {
            Ok(r) if r.batch_item_failures.is_empty() => "success",
            Ok(_) => "partial",
            Err(_) => "failure",
        };
        info!(
            target: "esm::batch",
            request_id = invocation.request_id.as_str(),
            event_source = batch.event_source.as_deref().unwrap_or(""),
            partitions = batch.partitions.len(),
            records = counts.records,
            processed = counts.processed,
            duplicates = counts.duplicates,
            dead_lettered = counts.dead_lettered,
            unfinished = counts.unfinished,
            answer,
            decode_us = decoded_us,
            duration_ms = started.elapsed().as_millis() as u64,
            "batch"
        );
        if let Err(e) = &result {
            error!(request_id = invocation.request_id.as_str(), error = %e, "invocation fails");
        }
        Invocation {
            batch: Some(batch),
            report,
            result,
        }
    }
}
