//! `esm redrive --file PATH`: on-failure records saved to a file, one JSON document (an object, or a
//! list of them) or JSON lines. Any shape [`super::OnFailureRecord`] reads is accepted, SNS envelopes
//! included. The file is never changed: a handled record reports [`MessageStatus::Done`].

use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use super::report::{MessageReport, MessageStatus, RunSummary};
use super::{RedriveError, Redriver};
use crate::handler::HandlerFactory;

/// The on-failure messages of a file's text, each with an id naming where it was.
pub fn messages_of(name: &str, text: &str) -> Vec<(String, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(n, item)| (format!("{name}[{n}]"), item.to_string()))
            .collect(),
        Ok(_) => vec![(name.to_owned(), text.to_owned())],
        // Not one JSON document: JSON lines, blank lines skipped.
        Err(_) => text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(n, line)| (format!("{name}:{}", n + 1), line.to_owned()))
            .collect(),
    }
}

impl<F: HandlerFactory> Redriver<F> {
    /// Redrives every on-failure record in the file at `path`, calling `on_report` after each.
    pub async fn run_file(
        &self,
        path: &Path,
        on_report: &mut dyn FnMut(&MessageReport),
    ) -> Result<RunSummary, RedriveError> {
        let started = Instant::now();
        let bytes = std::fs::read(path).map_err(|e| RedriveError::Source {
            source_name: path.display().to_string(),
            message: format!("cannot read the file: {e}"),
        })?;
        let text = String::from_utf8(bytes).map_err(|e| RedriveError::Source {
            source_name: path.display().to_string(),
            message: format!(
                "the file is not UTF-8 text (byte {}): on-failure records are JSON",
                e.utf8_error().valid_up_to()
            ),
        })?;
        let mut summary = RunSummary::default();
        for (id, body) in messages_of(&path.display().to_string(), &text) {
            if self
                .options()
                .max_messages
                .is_some_and(|max| summary.messages as usize >= max)
            {
                break;
            }
            let report = self.handle_message(&id, &body).await;
            debug_assert_ne!(report.status, MessageStatus::Deleted);
            summary.add(&report);
            on_report(&report);
        }
        summary.duration_ms = started.elapsed().as_millis() as u64;
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_a_list_or_json_lines() {
        assert_eq!(
            messages_of("f", r#"{"a":1}"#),
            [("f".to_owned(), r#"{"a":1}"#.to_owned())]
        );
        assert_eq!(
            messages_of("f", "[{\"a\":1},\n {\"b\":2}]"),
            [
                ("f[0]".to_owned(), r#"{"a":1}"#.to_owned()),
                ("f[1]".to_owned(), r#"{"b":2}"#.to_owned())
            ]
        );
        assert_eq!(
            messages_of("f", "{\"a\":1}\n\n{\"b\":2}\nnot json\n"),
            [
                ("f:1".to_owned(), r#"{"a":1}"#.to_owned()),
                ("f:3".to_owned(), r#"{"b":2}"#.to_owned()),
                ("f:4".to_owned(), "not json".to_owned())
            ]
        );
        assert_eq!(messages_of("f", "\u{feff}{\"a\":1}").len(), 1);
    }
}
