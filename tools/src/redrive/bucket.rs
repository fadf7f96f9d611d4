//! `esm redrive --s3 s3://bucket/prefix`: the on-failure records an S3 destination wrote, one object
//! each (metadata plus the invoked event in `payload`). Objects are read in key order. An object whose
//! records are all accounted for is deleted only with `--delete`; otherwise it is left as it is and
//! reported [`MessageStatus::Done`] (a later run finds its records done, as duplicates).

use std::time::Instant;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;

use super::report::{MessageReport, MessageStatus, RunSummary};
use super::{RedriveError, Redriver};
use crate::handler::HandlerFactory;

/// `s3://bucket[/prefix]` split into bucket and prefix.
pub fn parse_s3_uri(uri: &str) -> Result<(String, String), String> {
    let rest = uri
        .strip_prefix("s3://")
        .ok_or_else(|| format!("{uri:?} is not an s3://bucket[/prefix] address"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!("{uri:?} names no bucket"));
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

impl<F: HandlerFactory> Redriver<F> {
    /// Redrives every object under `prefix` in `bucket`, calling `on_report` after each; with
    /// `delete`, objects whose records are all accounted for are deleted.
    pub async fn run_bucket(
        &self,
        s3: &Client,
        bucket: &str,
        prefix: &str,
        delete: bool,
        on_report: &mut dyn FnMut(&MessageReport),
    ) -> Result<RunSummary, RedriveError> {
        let started = Instant::now();
        let source_name = format!("s3://{bucket}/{prefix}");
        let failed = |message: String| RedriveError::Source {
            source_name: source_name.clone(),
            message,
        };
        let mut summary = RunSummary::default();
        let mut pages = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        'pages: while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                failed(format!(
                    "cannot list the objects: {}; check the bucket, the region, the endpoint and s3:ListBucket",
                    DisplayErrorContext(e)
                ))
            })?;
            for object in page.contents() {
                if self
                    .options()
                    .max_messages
                    .is_some_and(|max| summary.messages as usize >= max)
                {
                    break 'pages;
                }
                // Folder markers (`prefix/`) are not records.
                let Some(key) = object.key().filter(|k| !k.ends_with('/')) else {
                    continue;
                };
                let mut report = match read_object(s3, bucket, key).await {
                    Ok(body) => self.handle_message(key, &body).await,
                    Err(reason) => MessageReport::left(key, self.options().mode.as_str(), reason),
                };
                if report.status == MessageStatus::Done && delete {
                    match s3.delete_object().bucket(bucket).key(key).send().await {
                        Ok(_) => report.status = MessageStatus::Deleted,
                        Err(e) => {
                            report.status = MessageStatus::Left;
                            report.reason = Some(format!(
                                "every record was handled, but deleting the object failed ({}); a new run finds them done (duplicates) and deletes it",
                                DisplayErrorContext(e)
                            ));
                        }
                    }
                }
                summary.add(&report);
                on_report(&report);
            }
        }
        summary.duration_ms = started.elapsed().as_millis() as u64;
        Ok(summary)
    }
}

async fn read_object(s3: &Client, bucket: &str, key: &str) -> Result<String, String> {
    let object = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot read the object: {}; left in the bucket",
                DisplayErrorContext(e)
            )
        })?;
    let bytes = object
        .body
        .collect()
        .await
        .map_err(|e| format!("the object's body was cut off: {e}; left in the bucket"))?
        .into_bytes();
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        "the object is not UTF-8 JSON: not an on-failure record; left in the bucket".into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_addresses() {
        assert_eq!(
            parse_s3_uri("s3://b/aws/lambda/").unwrap(),
            ("b".into(), "aws/lambda/".into())
        );
        assert_eq!(parse_s3_uri("s3://b").unwrap(), ("b".into(), "".into()));
        assert!(parse_s3_uri("b/x").is_err());
        assert!(parse_s3_uri("s3:///x").is_err());
    }
}
