//! A sink that appends each topic's messages to `<dir>/<topic>.jsonl`: the local stand-in for Kafka.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Delivery, MessageSink, OutboundMessage, PublishWindow, SinkError, mark_found};
use crate::event::{decode_base64, encode_base64};
use crate::record::Header;

/// One line of a topic file. Text that is UTF-8 is written as text (readable with `cat`), other
/// bytes as base64 in the `*_base64` twin field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMessage {
    /// Destination topic.
    pub topic: String,
    /// Key as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Key as base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
    /// Value as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Value as base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
    /// Headers in order.
    #[serde(default)]
    pub headers: Vec<FileHeader>,
}

/// A header of a [`FileMessage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHeader {
    /// Name.
    pub name: String,
    /// Value as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Value as base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
}

fn split(bytes: Option<&[u8]>) -> (Option<String>, Option<String>) {
    match bytes {
        None => (None, None),
        Some(b) => match std::str::from_utf8(b) {
            Ok(text) => (Some(text.to_owned()), None),
            Err(_) => (None, Some(encode_base64(b))),
        },
    }
}

fn join(text: Option<&String>, base64: Option<&String>) -> Option<Vec<u8>> {
    match (text, base64) {
        (Some(t), _) => Some(t.as_bytes().to_vec()),
        (None, Some(b)) => decode_base64(b).ok(),
        (None, None) => None,
    }
}

impl FileMessage {
    /// The line for a message.
    pub fn from_message(message: &OutboundMessage) -> Self {
        let (key, key_base64) = split(message.key.as_deref());
        let (value, value_base64) = split(message.value.as_deref());
        let headers = message
            .headers
            .iter()
            .map(|h| {
                let (value, value_base64) = split(h.value.as_deref());
                FileHeader {
                    name: h.name.clone(),
                    value,
                    value_base64,
                }
            })
            .collect();
        Self {
            topic: message.topic.clone(),
            key,
            key_base64,
            value,
            value_base64,
            headers,
        }
    }

    /// The message a line holds.
    pub fn to_message(&self) -> OutboundMessage {
        OutboundMessage {
            topic: self.topic.clone(),
            key: join(self.key.as_ref(), self.key_base64.as_ref()),
            value: join(self.value.as_ref(), self.value_base64.as_ref()),
            headers: self
                .headers
                .iter()
                .map(|h| Header {
                    name: h.name.clone(),
                    value: join(h.value.as_ref(), h.value_base64.as_ref()),
                })
                .collect(),
        }
    }
}

/// Appends messages to one JSON-lines file per topic. A publish returns once the line is written.
#[derive(Debug)]
pub struct DirectorySink {
    dir: PathBuf,
    files: Mutex<HashMap<String, File>>,
}

impl DirectorySink {
    /// A sink writing under `dir` (created on first use).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            files: Mutex::new(HashMap::new()),
        }
    }

    /// The file that holds `topic`'s messages.
    pub fn topic_path(&self, topic: &str) -> PathBuf {
        topic_file(&self.dir, topic)
    }

    /// Reads back every message of `topic` (none when the file does not exist).
    pub fn read_topic(dir: &Path, topic: &str) -> std::io::Result<Vec<OutboundMessage>> {
        let text = match std::fs::read_to_string(topic_file(dir, topic)) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                serde_json::from_str::<FileMessage>(line)
                    .map(|m| m.to_message())
                    .map_err(std::io::Error::other)
            })
            .collect()
    }
}

fn topic_file(dir: &Path, topic: &str) -> PathBuf {
    // Kafka topic names are [a-zA-Z0-9._-]: safe as file names.
    let safe: String = topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("{safe}.jsonl"))
}

#[async_trait]
impl MessageSink for DirectorySink {
    async fn publish(
        &self,
        message: OutboundMessage,
        _timeout: Duration,
    ) -> Result<Delivery, SinkError> {
        let fail = |e: std::io::Error| {
            SinkError::new(
                message.topic.clone(),
                format!("writing {}: {e}", self.topic_path(&message.topic).display()),
            )
        };
        let mut line = serde_json::to_vec(&FileMessage::from_message(&message))
            .map_err(|e| fail(std::io::Error::other(e)))?;
        line.push(b'\n');
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if !files.contains_key(&message.topic) {
            std::fs::create_dir_all(&self.dir).map_err(fail)?;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.topic_path(&message.topic))
                .map_err(fail)?;
            files.insert(message.topic.clone(), file);
        }
        let file = files.get_mut(&message.topic).expect("inserted above");
        file.write_all(&line).map_err(fail)?;
        Ok(Delivery::default())
    }

    async fn find_published(
        &self,
        topic: &str,
        ids: &[&str],
        _window: PublishWindow,
        _timeout: Duration,
    ) -> Result<Vec<bool>, SinkError> {
        // Hold the writers' lock: no line is half written while the file is read.
        let _files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let messages = Self::read_topic(&self.dir, topic).map_err(|e| {
            SinkError::new(
                topic,
                format!("reading {}: {e}", self.topic_path(topic).display()),
            )
        })?;
        Ok(mark_found(
            ids,
            messages.iter().filter_map(OutboundMessage::message_id),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trips_text_and_binary() {
        let dir = tempfile::tempdir().unwrap();
        let sink = DirectorySink::new(dir.path());
        let message = OutboundMessage {
            topic: "orders.v1-eu".into(),
            key: Some(b"k".to_vec()),
            value: Some(vec![0xff, 0x00, 0x80]),
            headers: vec![
                Header::new("text", "hello"),
                Header::new("bin", vec![0xc3, 0x28]),
                Header {
                    name: "null".into(),
                    value: None,
                },
            ],
        };
        sink.publish(message.clone(), Duration::from_secs(1))
            .await
            .unwrap();
        sink.publish(message.clone(), Duration::from_secs(1))
            .await
            .unwrap();
        let back = DirectorySink::read_topic(dir.path(), "orders.v1-eu").unwrap();
        assert_eq!(back, vec![message.clone(), message]);
        assert!(
            DirectorySink::read_topic(dir.path(), "other")
                .unwrap()
                .is_empty()
        );
    }
}
