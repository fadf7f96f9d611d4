//! The API a user implements for their own records.
//!
//! A [`RecordHandler`] turns a decoded record into its typed event ([`RecordHandler::deserialize`]),
//! may name the event's business id for idempotency ([`RecordHandler::idempotency_key`]) and performs
//! the side effect ([`RecordHandler::handle`]). The processor calls it in offset order within a
//! partition, retries [`HandlerError::Transient`] failures inside the time budget, dead-letters
//! [`HandlerError::Permanent`] ones and never calls it twice for an event it completed. When an
//! earlier attempt at a record was interrupted (its process crashed, its invocation timed out) after
//! the claim and before the completion, it calls [`RecordHandler::resume`] instead, which looks for
//! the effect the interrupted attempt may have left and does only what is missing.

use std::fmt;

use async_trait::async_trait;

use crate::idempotency::Interrupted;
use crate::record::{DecodedRecord, KafkaRecord};
use crate::retry::Deadline;

/// Why a record's value could not become the handler's event: the record is poison, unless the
/// error is [transient](DeserializeError::transient).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DeserializeError {
    /// What is wrong with the record, without its payload.
    pub message: String,
    /// True when decoding may succeed later: what it needs (a schema registry) could not be
    /// reached. Such a record is not poison and must not be dead-lettered.
    transient: bool,
}

impl DeserializeError {
    /// An error with this message: the record is poison.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: false,
        }
    }

    /// An error that may go away (a schema registry could not be reached): the record is not
    /// poison and should be retried. [`crate::format`] returns it for an unreachable schema source.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: true,
        }
    }

    /// True for an error made with [`DeserializeError::transient`].
    pub fn is_transient(&self) -> bool {
        self.transient
    }
}

/// How a record's handling failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Will never succeed (bad data, a rule the record breaks): the record is dead-lettered.
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// May succeed later (a dependency is down): the record is retried.
    #[error("transient failure: {0}")]
    Transient(String),
}

impl HandlerError {
    /// A permanent failure.
    pub fn permanent(message: impl fmt::Display) -> Self {
        Self::Permanent(message.to_string())
    }

    /// A transient failure.
    pub fn transient(message: impl fmt::Display) -> Self {
        Self::Transient(message.to_string())
    }
}

/// What a handler may know of the invocation it runs in.
#[derive(Debug, Clone)]
pub struct InvocationInfo {
    /// The Lambda request id (or the replay's own id).
    pub request_id: String,
    /// The function's name.
    pub function_name: String,
    /// When work must stop: bound every wait by [`Deadline::remaining`].
    pub deadline: Deadline,
}

impl InvocationInfo {
    /// An invocation with this id and function name, ending at `deadline`.
    pub fn new(
        request_id: impl Into<String>,
        function_name: impl Into<String>,
        deadline: Deadline,
    ) -> Self {
        Self {
            request_id: request_id.into(),
            function_name: function_name.into(),
            deadline,
        }
    }
}

/// The user's code for one kind of record.
#[async_trait]
pub trait RecordHandler: Send + Sync {
    /// The typed event a record's value becomes.
    type Event: Send + Sync;

    /// Called once per chunk (up to 100 records of one partition, in offset order) before its
    /// records are deserialized: the place to fetch what they need, such as the schemas a
    /// registry format decodes them with (`prefetch`). The default does nothing. An error is
    /// logged and the chunk goes on: each record's [`RecordHandler::deserialize`] decides.
    async fn prepare_chunk(
        &self,
        records: &[DecodedRecord],
        invocation: &InvocationInfo,
    ) -> Result<(), HandlerError> {
        let _ = (records, invocation);
        Ok(())
    }

    /// Reads the record (usually its value) into the typed event. An error makes the record poison:
    /// it is dead-lettered and never handled, unless the error is transient
    /// ([`DeserializeError::transient`]: a schema registry out of reach), which leaves the record
    /// unfinished so that it is retried. See [`crate::format`] for ready-made formats.
    fn deserialize(&self, record: &KafkaRecord) -> Result<Self::Event, DeserializeError>;

    /// The event's business id, when it has one: duplicates of the same id are skipped even at other
    /// offsets. `None` (the default) falls back to the record's topic/partition/offset.
    fn idempotency_key(&self, _event: &Self::Event) -> Option<String> {
        None
    }

    /// Performs the record's side effect. Called at most once per completed event, but may be called
    /// again after a transient failure or a crash in the middle, so make the side effect itself
    /// safe to repeat where it can be.
    async fn handle(
        &self,
        record: &KafkaRecord,
        event: &Self::Event,
        invocation: &InvocationInfo,
    ) -> Result<(), HandlerError>;

    /// Performs the side effect of a record whose earlier attempt was `interrupted` between its
    /// claim and its completion: the effect may have happened, wholly or in part, after
    /// `interrupted.claimed_at_ms` and before `interrupted.lock_until_ms`. Look for it (a message id
    /// in the output topic, a row's version) and do only what is missing. The default calls
    /// [`RecordHandler::handle`] again: at least once, which is exactly once only when the side
    /// effect is itself idempotent.
    async fn resume(
        &self,
        record: &KafkaRecord,
        event: &Self::Event,
        interrupted: &Interrupted,
        invocation: &InvocationInfo,
    ) -> Result<(), HandlerError> {
        let _ = interrupted;
        self.handle(record, event, invocation).await
    }
}

/// A shared handler is a handler: keep an `Arc` to read its state while the consumer owns it.
#[async_trait]
impl<H: RecordHandler + ?Sized> RecordHandler for std::sync::Arc<H> {
    type Event = H::Event;

    async fn prepare_chunk(
        &self,
        records: &[DecodedRecord],
        invocation: &InvocationInfo,
    ) -> Result<(), HandlerError> {
        (**self).prepare_chunk(records, invocation).await
    }

    fn deserialize(&self, record: &KafkaRecord) -> Result<Self::Event, DeserializeError> {
        (**self).deserialize(record)
    }

    fn idempotency_key(&self, event: &Self::Event) -> Option<String> {
        (**self).idempotency_key(event)
    }

    async fn handle(
        &self,
        record: &KafkaRecord,
        event: &Self::Event,
        invocation: &InvocationInfo,
    ) -> Result<(), HandlerError> {
        (**self).handle(record, event, invocation).await
    }

    async fn resume(
        &self,
        record: &KafkaRecord,
        event: &Self::Event,
        interrupted: &Interrupted,
        invocation: &InvocationInfo,
    ) -> Result<(), HandlerError> {
        (**self)
            .resume(record, event, interrupted, invocation)
            .await
    }
}
