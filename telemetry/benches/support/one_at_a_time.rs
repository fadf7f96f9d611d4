//! A store as it was before chunk calls: shared by the `io` and `latency` benches.

use async_trait::async_trait;
use kafka_esm::idempotency::{Claim, CompletedOutcome, IdempotencyStore, StoreError};

/// `S` with only its single-key methods (forwarded), so that the trait's default `try_claim_many`,
/// `complete_many` and `release_many` claim, complete and release one key per call. The batch read
/// of completed keys was already one call per chunk.
pub struct OneAtATime<S>(pub S);

#[async_trait]
impl<S: IdempotencyStore> IdempotencyStore for OneAtATime<S> {
    async fn completed(
        &self,
        keys: &[&str],
        now_ms: u64,
    ) -> Result<Vec<Option<CompletedOutcome>>, StoreError> {
        self.0.completed(keys, now_ms).await
    }

    async fn try_claim(
        &self,
        key: &str,
        now_ms: u64,
        lock_until_ms: u64,
    ) -> Result<Claim, StoreError> {
        self.0.try_claim(key, now_ms, lock_until_ms).await
    }

    async fn complete(
        &self,
        key: &str,
        outcome: CompletedOutcome,
        keep_until_ms: u64,
    ) -> Result<(), StoreError> {
        self.0.complete(key, outcome, keep_until_ms).await
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.0.release(key).await
    }

    async fn abandon(&self, key: &str, lock_until_ms: u64, now_ms: u64) -> Result<(), StoreError> {
        self.0.abandon(key, lock_until_ms, now_ms).await
    }
}
