//! The SQS side of `esm redrive`: long-poll the on-failure queue in batches of 10, handle each
//! message, delete it only when every record it names is accounted for.

use std::collections::HashSet;
use std::time::Instant;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use tracing::warn;

use super::report::{MessageReport, MessageStatus, RunSummary};
use super::{RedriveError, Redriver};
use crate::handler::HandlerFactory;

impl<F: HandlerFactory> Redriver<F> {
    /// Drains `queue_url` until a receive comes back empty or `max_messages` were handled, calling
    /// `on_report` after each message. In a dry run nothing is deleted and every received message is
    /// made visible again at the end.
    pub async fn run_queue(
        &self,
        sqs: &Client,
        queue_url: &str,
        on_report: &mut dyn FnMut(&MessageReport),
    ) -> Result<RunSummary, RedriveError> {
        let started = Instant::now();
        let options = self.options();
        let mut summary = RunSummary::default();
        let mut seen: HashSet<String> = HashSet::new();
        let mut to_make_visible: Vec<String> = Vec::new();
        let result = loop {
            let remaining = options.max_messages.map_or(10, |max| {
                max.saturating_sub(summary.messages as usize).min(10)
            });
            if remaining == 0 {
                break Ok(());
            }
            let received = sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(remaining as i32)
                .wait_time_seconds(options.wait_seconds)
                .set_visibility_timeout(options.visibility_timeout)
                .send()
                .await;
            let messages = match received {
                Ok(output) => output.messages.unwrap_or_default(),
                Err(e) => {
                    break Err(RedriveError::Receive {
                        queue_url: queue_url.to_owned(),
                        message: DisplayErrorContext(e).to_string(),
                    });
                }
            };
            if messages.is_empty() {
                break Ok(());
            }
            let mut new_ones = 0;
            for message in messages {
                let id = message.message_id.clone().unwrap_or_default();
                let receipt = message.receipt_handle.clone().unwrap_or_default();
                if options.dry_run && !receipt.is_empty() {
                    to_make_visible.push(receipt.clone());
                }
                // A message left on the queue earlier in this run that became visible again.
                if !seen.insert(id.clone()) {
                    continue;
                }
                new_ones += 1;
                let mut report = match message.body.as_deref() {
                    Some(body) => self.handle_message(&id, body).await,
                    None => MessageReport::left(
                        &id,
                        options.mode.as_str(),
                        "the message has no body; left on the queue".into(),
                    ),
                };
                if report.status == MessageStatus::Done {
                    let deleted = sqs
                        .delete_message()
                        .queue_url(queue_url)
                        .receipt_handle(&receipt)
                        .send()
                        .await;
                    report.status = MessageStatus::Deleted;
                    if let Err(e) = deleted {
                        report.status = MessageStatus::Left;
                        report.reason = Some(format!(
                            "every record was handled, but deleting the message failed ({}); a new run finds them done (duplicates) and deletes it",
                            DisplayErrorContext(e)
                        ));
                    }
                }
                summary.add(&report);
                on_report(&report);
                if options
                    .max_messages
                    .is_some_and(|max| summary.messages as usize >= max)
                {
                    break;
                }
            }
            if new_ones == 0 {
                // Only messages already handled in this run came back: nothing new to do.
                break Ok(());
            }
        };
        for receipt in to_make_visible {
            if let Err(e) = sqs
                .change_message_visibility()
                .queue_url(queue_url)
                .receipt_handle(&receipt)
                .visibility_timeout(0)
                .send()
                .await
            {
                warn!(error = %DisplayErrorContext(e), "a dry-run message stays invisible until its visibility timeout ends");
            }
        }
        summary.duration_ms = started.elapsed().as_millis() as u64;
        result.map(|()| summary)
    }
}
