//! The store contract suite as a store written outside this crate uses it (feature `testing`): the
//! crate's own stores pass it through the public API, a store written here with only the single-key
//! methods passes it, and a store that breaks one rule fails it.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use kafka_esm::idempotency::{
    Claim, CompletedOutcome, IdempotencyStore, Interrupted, LocalStore, MemoryStore, StoreError,
};
use kafka_esm::testing::store_contract;

#[derive(Clone, Copy)]
enum Entry {
    InProgress {
        since_ms: u64,
        until_ms: u64,
    },
    Completed {
        outcome: CompletedOutcome,
        until_ms: u64,
    },
}

/// A store as a team would write one for its own database: a map behind a lock, only the
/// single-key methods (the trait's defaults do the batches). `drop_completed_on_release` breaks one
/// rule on purpose.
#[derive(Default)]
struct MapStore {
    entries: Mutex<HashMap<String, Entry>>,
    drop_completed_on_release: bool,
}

impl MapStore {
    fn live(entry: Option<Entry>, now_ms: u64) -> Option<Entry> {
        entry.filter(|e| match *e {
            Entry::InProgress { until_ms, .. } | Entry::Completed { until_ms, .. } => {
                until_ms > now_ms
            }
        })
    }
}

#[async_trait]
impl IdempotencyStore for MapStore {
    async fn completed(
        &self,
        keys: &[&str],
        now_ms: u64,
    ) -> Result<Vec<Option<CompletedOutcome>>, StoreError> {
        let entries = self.entries.lock().unwrap();
        Ok(keys
            .iter()
            .map(|key| match Self::live(entries.get(*key).copied(), now_ms) {
                Some(Entry::Completed { outcome, .. }) => Some(outcome),
                _ => None,
            })
            .collect())
    }

    async fn try_claim(
        &self,
        key: &str,
        now_ms: u64,
        lock_until_ms: u64,
    ) -> Result<Claim, StoreError> {
        let mut entries = self.entries.lock().unwrap();
        let previous = entries.get(key).copied();
        let claim = match (previous, Self::live(previous, now_ms)) {
            (_, Some(Entry::InProgress { until_ms, .. })) => return Ok(Claim::Locked { until_ms }),
            (_, Some(Entry::Completed { outcome, .. })) => {
                return Ok(Claim::Completed(outcome));
            }
            (Some(Entry::InProgress { since_ms, until_ms }), None) => Claim::Resumed(Interrupted {
                claimed_at_ms: since_ms,
                lock_until_ms: until_ms,
            }),
            _ => Claim::Acquired,
        };
        let since_ms = match claim {
            Claim::Resumed(interrupted) => interrupted.claimed_at_ms,
            _ => now_ms,
        };
        entries.insert(
            key.to_owned(),
            Entry::InProgress {
                since_ms,
                until_ms: lock_until_ms,
            },
        );
        Ok(claim)
    }

    async fn complete(
        &self,
        key: &str,
        outcome: CompletedOutcome,
        keep_until_ms: u64,
    ) -> Result<(), StoreError> {
        self.entries.lock().unwrap().insert(
            key.to_owned(),
            Entry::Completed {
                outcome,
                until_ms: keep_until_ms,
            },
        );
        Ok(())
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        let mut entries = self.entries.lock().unwrap();
        if self.drop_completed_on_release
            || matches!(entries.get(key), Some(Entry::InProgress { .. }))
        {
            entries.remove(key);
        }
        Ok(())
    }

    async fn abandon(&self, key: &str, lock_until_ms: u64, now_ms: u64) -> Result<(), StoreError> {
        let mut entries = self.entries.lock().unwrap();
        if let Some(Entry::InProgress { since_ms, until_ms }) = entries.get(key).copied()
            && until_ms == lock_until_ms
        {
            entries.insert(
                key.to_owned(),
                Entry::InProgress {
                    since_ms,
                    until_ms: now_ms,
                },
            );
        }
        Ok(())
    }
}

#[tokio::test]
async fn the_crates_own_stores_keep_the_contract() {
    store_contract(&MemoryStore::new()).await;
    let dir = tempfile::tempdir().unwrap();
    store_contract(&LocalStore::open(&dir.path().join("keys.redb")).unwrap()).await;
}

#[tokio::test]
async fn a_store_written_elsewhere_keeps_the_contract_with_the_default_batches() {
    store_contract(&MapStore::default()).await;
}

#[tokio::test]
#[should_panic(expected = "a release never drops a completed key")]
async fn a_store_that_drops_completed_keys_on_release_fails_the_contract() {
    let broken = MapStore {
        drop_completed_on_release: true,
        ..MapStore::default()
    };
    store_contract(&broken).await;
}
