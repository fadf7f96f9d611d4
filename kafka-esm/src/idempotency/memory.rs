//! An in-process store: for tests, benchmarks, and a single Lambda container.

use std::sync::Mutex;

use async_trait::async_trait;
use hashbrown::hash_map::EntryRef;

use super::{Claim, CompletedOutcome, Entry, IdempotencyStore, StoreError};

/// Keeps keys in a map in memory. Lost with the process: a new Lambda container starts empty.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: Mutex<Entries>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many keys it holds (expired ones included).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when it holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic elsewhere while holding the lock leaves the map consistent: every write is one insert.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn completed(
        &self,
        keys: &[&str],
        now_ms: u64,
    ) -> Result<Vec<Option<CompletedOutcome>>, StoreError> {
        let entries = self.lock();
        Ok(keys
            .iter()
            .map(|k| entries.get(*k).and_then(|e| e.completed(now_ms)))
            .collect())
    }

    async fn try_claim(
        &self,
        key: &str,
        now_ms: u64,
        lock_until_ms: u64,
    ) -> Result<Claim, StoreError> {
        Ok(claim(&mut self.lock(), key, now_ms, lock_until_ms))
    }

    /// All the keys under one lock.
    async fn try_claim_many(
        &self,
        keys: &[&str],
        now_ms: u64,
        lock_until_ms: u64,
    ) -> Result<Vec<Claim>, StoreError> {
        let mut entries = self.lock();
        Ok(keys
            .iter()
            .map(|key| claim(&mut entries, key, now_ms, lock_until_ms))
            .collect())
    }

    async fn complete(
        &self,
        key: &str,
        outcome: CompletedOutcome,
        keep_until_ms: u64,
    ) -> Result<(), StoreError> {
        complete(&mut self.lock(), key, outcome, keep_until_ms);
        Ok(())
    }

    /// All the keys under one lock.
    async fn complete_many(
        &self,
        done: &[(&str, CompletedOutcome)],
        keep_until_ms: u64,
    ) -> Result<(), StoreError> {
        let mut entries = self.lock();
        for (key, outcome) in done {
            complete(&mut entries, key, *outcome, keep_until_ms);
        }
        Ok(())
    }

    async fn abandon(&self, key: &str, lock_until_ms: u64, now_ms: u64) -> Result<(), StoreError> {
        if let Some(Entry::InProgress { until_ms, .. }) = self.lock().get_mut(key)
            && *until_ms == lock_until_ms
        {
            *until_ms = now_ms;
        }
        Ok(())
    }

    /// Drops the key only while it is in progress: a completed key stays (as in every store).
    async fn release(&self, key: &str) -> Result<(), StoreError> {
        let mut entries = self.lock();
        if matches!(entries.get(key), Some(Entry::InProgress { .. })) {
            entries.remove(key);
        }
        Ok(())
    }
}

type Entries = hashbrown::HashMap<String, Entry, foldhash::fast::RandomState>;

fn claim(entries: &mut Entries, key: &str, now_ms: u64, lock_until_ms: u64) -> Claim {
    let held = |claim: &Claim| Entry::InProgress {
        since_ms: claim.since_ms(now_ms),
        until_ms: lock_until_ms,
    };
    // One hash and one lookup per key; the key is copied only when it is new.
    match entries.entry_ref(key) {
        EntryRef::Occupied(mut existing) => {
            let claim = Entry::claim(Some(*existing.get()), now_ms);
            if claim.holds() {
                existing.insert(held(&claim));
            }
            claim
        }
        EntryRef::Vacant(vacant) => {
            let claim = Entry::claim(None, now_ms);
            if claim.holds() {
                vacant.insert(held(&claim));
            }
            claim
        }
    }
}

fn complete(entries: &mut Entries, key: &str, outcome: CompletedOutcome, keep_until_ms: u64) {
    let entry = Entry::Completed {
        outcome,
        until_ms: keep_until_ms,
    };
    entries.entry_ref(key).insert(entry);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_store_contract() {
        crate::testing::store_contract(&MemoryStore::new()).await;
    }
}
