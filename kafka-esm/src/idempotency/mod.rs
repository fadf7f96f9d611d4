//! Idempotency: a replayed or duplicated record never repeats its side effect.
//!
//! Each record has a key ([`keys`]: `id:<business id>`, else `at:<topic>/<partition>/<offset>`).
//! Before the side effect the
//! processor *claims* the key: an atomic conditional write that succeeds only when the key is unknown,
//! its in-progress lock has expired, or its completed entry has expired. The lock expires with the
//! invocation's deadline, so a crashed invocation never blocks the retry for longer than its own
//! timeout. After the side effect the key is marked completed and kept for a configurable window.
//!
//! A claim that takes over an *expired in-progress* lock means an earlier attempt stopped between
//! its claim and its completion (a crash, a timeout): its side effect may have happened, wholly or
//! in part. The store says so ([`Claim::Resumed`], with when the earlier claim was made and when
//! its lock ran out), and the processor asks the handler to look for the effect before redoing it.
//!
//! The trait is shaped for stores with conditional writes (DynamoDB's `ConditionExpression`), plus one
//! batch read ([`IdempotencyStore::completed`]) so duplicates are found without a round trip each,
//! and batch claims/completions that stores able to write many keys atomically (the local file)
//! override, so a chunk of records costs one write each way.

#[cfg(feature = "dynamodb")]
mod dynamodb;
pub mod keys;
#[cfg(feature = "local-store")]
mod local;
mod memory;

use async_trait::async_trait;

#[cfg(feature = "dynamodb")]
pub use dynamodb::{DynamoDbStore, RequestCounts};
#[cfg(feature = "local-store")]
pub use local::LocalStore;
pub use memory::MemoryStore;

/// How the DynamoDB store claims a chunk of keys ([`IdempotencyStore::try_claim_many`]); its
/// documentation says what each costs. Here, not in the store's module, so that a configuration
/// can name it in a build without the `dynamodb` feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClaimMode {
    /// `TransactWriteItems`, up to 100 keys a request: 2 WCUs per key, one request per 100 keys.
    #[default]
    Transaction,
    /// One conditional `PutItem` per key: 1 WCU per key, one request per key.
    ConcurrentPuts {
        /// How many puts are in flight at once (0 counts as 1).
        concurrency: usize,
    },
}

/// What a completed key did, so that a duplicate can say what it duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletedOutcome {
    /// The handler succeeded.
    Processed,
    /// The record was poison and went to the dead-letter topic.
    DeadLettered,
}

/// An earlier claim on a key that expired without being completed or released: the attempt that
/// made it stopped somewhere between its claim and its completion. A claim that takes over an
/// interrupted one keeps its claim time, so after several interrupted attempts it is the first's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted {
    /// When the earlier claim was made (epoch ms): its side effect, if any, happened after this.
    pub claimed_at_ms: u64,
    /// When its lock ran out (epoch ms): the attempt was over by then.
    pub lock_until_ms: u64,
}

/// The answer to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The caller holds the key until its lock expires: go ahead with the side effect.
    Acquired,
    /// The caller holds the key, taken over from an interrupted attempt whose side effect may have
    /// happened: look for it before doing it again.
    Resumed(Interrupted),
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

    /// Claims each of `keys` (distinct) as [`IdempotencyStore::try_claim`] does, one answer per key.
    /// On error no key is left claimed. The default claims one at a time.
    async fn try_claim_many(
        &self,
        keys: &[&str],
        now_ms: u64,
        lock_until_ms: u64,
    ) -> Result<Vec<Claim>, StoreError> {
        let mut claims = Vec::with_capacity(keys.len());
        for key in keys {
            match self.try_claim(key, now_ms, lock_until_ms).await {
                Ok(claim) => claims.push(claim),
                Err(error) => {
                    let held: Vec<&str> = keys
                        .iter()
                        .zip(&claims)
                        .filter(|(_, c)| c.holds())
                        .map(|(k, _)| *k)
                        .collect();
                    // Best effort: a claim left behind expires with its lock.
                    let _ = self.release_many(&held).await;
                    return Err(error);
                }
            }
        }
        Ok(claims)
    }

    /// Marks a claimed key completed, kept until `keep_until_ms`.
    async fn complete(
        &self,
        key: &str,
        outcome: CompletedOutcome,
        keep_until_ms: u64,
    ) -> Result<(), StoreError>;

    /// Marks each claimed key completed with its outcome, kept until `keep_until_ms`. The default
    /// marks one at a time.
    async fn complete_many(
        &self,
        done: &[(&str, CompletedOutcome)],
        keep_until_ms: u64,
    ) -> Result<(), StoreError> {
        for (key, outcome) in done {
            self.complete(key, *outcome, keep_until_ms).await?;
        }
        Ok(())
    }

    /// Drops a claim whose side effect did not happen, so a retry may claim it at once.
    async fn release(&self, key: &str) -> Result<(), StoreError>;

    /// Ends the claim on `key` locked until `lock_until_ms` after an attempt whose side effect may
    /// have happened in part (it failed midway, or it took over an interrupted attempt and did not
    /// run): the key stays in progress with its lock expired at `now_ms`, so the next claim takes
    /// it over at once as [`Claim::Resumed`] and looks for the effect. Nothing happens when the key
    /// is completed or claimed by someone else since.
    async fn abandon(&self, key: &str, lock_until_ms: u64, now_ms: u64) -> Result<(), StoreError>;

    /// Drops these claims. The default drops one at a time.
    async fn release_many(&self, keys: &[&str]) -> Result<(), StoreError> {
        for key in keys {
            self.release(key).await?;
        }
        Ok(())
    }

    /// Makes everything written so far durable (stores that buffer do it here; the default does nothing).
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl Claim {
    /// True when the caller now holds the key.
    pub fn holds(&self) -> bool {
        matches!(self, Claim::Acquired | Claim::Resumed(_))
    }

    /// The claim time a store keeps for this claim made at `now_ms`: an interrupted attempt's, when
    /// it takes one over, so that a lookup covers every attempt since the first.
    pub(crate) fn since_ms(&self, now_ms: u64) -> u64 {
        match self {
            Claim::Resumed(interrupted) => interrupted.claimed_at_ms,
            _ => now_ms,
        }
    }
}

/// A stored entry, shared by the stores that keep their own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    InProgress {
        since_ms: u64,
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
            Entry::InProgress { until_ms, .. } if until_ms > now_ms => {
                Some(Claim::Locked { until_ms })
            }
            Entry::Completed { outcome, until_ms } if until_ms > now_ms => {
                Some(Claim::Completed(outcome))
            }
            _ => None,
        }
    }

    /// The answer to a claim at `now_ms` by a caller who, when it wins, takes the key over from
    /// this entry: [`Claim::Resumed`] when the entry is an expired lock.
    pub(crate) fn claim(entry: Option<Self>, now_ms: u64) -> Claim {
        match entry {
            None => Claim::Acquired,
            Some(entry) => entry.blocks(now_ms).unwrap_or(match entry {
                Entry::InProgress { since_ms, until_ms } => Claim::Resumed(Interrupted {
                    claimed_at_ms: since_ms,
                    lock_until_ms: until_ms,
                }),
                Entry::Completed { .. } => Claim::Acquired,
            }),
        }
    }

    pub(crate) fn completed(self, now_ms: u64) -> Option<CompletedOutcome> {
        match self.blocks(now_ms) {
            Some(Claim::Completed(outcome)) => Some(outcome),
            _ => None,
        }
    }
}
