//! Idempotency: a replayed or duplicated record never repeats its side effect.
//!
//! Each record has a key (its business id, else `topic/partition/offset`). Before the side effect the
//! processor *claims* the key: an atomic conditional write that succeeds only when the key is unknown,
//! its in-progress lock has expired, or its completed entry has expired. The lock expires with the
//! invocation's deadline, so a crashed invocation never blocks the retry for longer than its own
//! timeout. After the side effect the key is marked completed and kept for a configurable window.
//!
//! The trait is shaped for stores with conditional writes (DynamoDB's `ConditionExpression`), plus one
//! batch read ([`IdempotencyStore::completed`]) so duplicates are found without a round trip each.

mod dynamodb;
mod local;
mod memory;

use async_trait::async_trait;

pub use dynamodb::DynamoDbStore;
pub use local::LocalStore;
pub use memory::MemoryStore;

/// What a completed key did, so that a duplicate can say what it duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletedOutcome {
    /// The handler succeeded.
    Processed,
    /// The record was poison and went to the dead-letter topic.
    DeadLettered,
}

/// The answer to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The caller holds the key until its lock expires: go ahead with the side effect.
    Acquired,
    /// The key was completed before: the record is a duplicate.
    Completed(CompletedOutcome),
    /// Another invocation holds the key until this time (epoch milliseconds).
    Locked {
        /// When the other invocation's lock expires.
        until_ms: u64,
    },
}

/// An idempotency store failed. Nothing is lost: the record stays unfinished and is retried.
#[derive(Debug, thiserror::Error)]
#[error(
    "the idempotency store failed while {action}: {message}; the record stays unfinished and will be retried"
)]
pub struct StoreError {
    /// What the store was doing.
    pub action: &'static str,
    /// The store's own error.
    pub message: String,
}

impl StoreError {
    /// An error while doing `action`.
    pub fn new(action: &'static str, error: impl std::fmt::Display) -> Self {
        Self {
            action,
            message: error.to_string(),
        }
    }
}

/// A store of idempotency keys. Times are epoch milliseconds, passed in so every store and test
/// agrees on one clock.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// For each key, the outcome if it is completed and unexpired (one batch read).
    async fn completed(
        &self,
        keys: &[&str],
        now_ms: u64,
    ) -> Result<Vec<Option<CompletedOutcome>>, StoreError>;

    /// Atomically claims `key` until `lock_until_ms`, unless it is completed or locked by someone else.
    async fn try_claim(
        &self,
        key: &str,
        now_ms: u64,
        lock_until_ms: u64,
    ) -> Result<Claim, StoreError>;

    /// Marks a claimed key completed, kept until `keep_until_ms`.
    async fn complete(
        &self,
        key: &str,
        outcome: CompletedOutcome,
        keep_until_ms: u64,
    ) -> Result<(), StoreError>;

    /// Drops a claim whose side effect did not happen, so a retry may claim it at once.
    async fn release(&self, key: &str) -> Result<(), StoreError>;

    /// Makes everything written so far durable (stores that buffer do it here; the default does nothing).
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A stored entry, shared by the stores that keep their own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    InProgress {
        until_ms: u64,
    },
    Completed {
        outcome: CompletedOutcome,
        until_ms: u64,
    },
}

impl Entry {
    /// The claim this entry answers at `now_ms`; `None` when it has expired and may be taken.
    pub(crate) fn blocks(self, now_ms: u64) -> Option<Claim> {
        match self {
            Entry::InProgress { until_ms } if until_ms > now_ms => Some(Claim::Locked { until_ms }),
            Entry::Completed { outcome, until_ms } if until_ms > now_ms => {
                Some(Claim::Completed(outcome))
            }
            _ => None,
        }
    }

    pub(crate) fn completed(self, now_ms: u64) -> Option<CompletedOutcome> {
        match self.blocks(now_ms) {
            Some(Claim::Completed(outcome)) => Some(outcome),
            _ => None,
        }
    }
}

/// The behaviour every store must have, run against each implementation.
#[cfg(test)]
pub(crate) mod contract {
    use super::*;

    pub(crate) async fn holds_for(store: &dyn IdempotencyStore) {
        let now = 1_000_000;
        // A new key is claimed; a second claim sees the lock.
        assert_eq!(
            store.try_claim("a", now, now + 500).await.unwrap(),
            Claim::Acquired
        );
        assert_eq!(
            store.try_claim("a", now + 1, now + 600).await.unwrap(),
            Claim::Locked {
                until_ms: now + 500
            }
        );
        // An expired lock (a crashed invocation) can be taken over.
        assert_eq!(
            store.try_claim("a", now + 501, now + 900).await.unwrap(),
            Claim::Acquired
        );
        // Completed keys are duplicates until they expire.
        store
            .complete("a", CompletedOutcome::Processed, now + 10_000)
            .await
            .unwrap();
        assert_eq!(
            store.try_claim("a", now + 2, now + 600).await.unwrap(),
            Claim::Completed(CompletedOutcome::Processed)
        );
        assert_eq!(
            store
                .try_claim("a", now + 10_001, now + 20_000)
                .await
                .unwrap(),
            Claim::Acquired
        );
        // A released claim can be taken again at once.
        assert_eq!(
            store.try_claim("b", now, now + 500).await.unwrap(),
            Claim::Acquired
        );
        store.release("b").await.unwrap();
        assert_eq!(
            store.try_claim("b", now, now + 500).await.unwrap(),
            Claim::Acquired
        );
        store
            .complete("b", CompletedOutcome::DeadLettered, now + 10_000)
            .await
            .unwrap();
        // The batch read sees completed keys only.
        let found = store.completed(&["b", "a", "zzz"], now + 3).await.unwrap();
        assert_eq!(
            found,
            vec![Some(CompletedOutcome::DeadLettered), None, None]
        );
        store.flush().await.unwrap();
    }
}
