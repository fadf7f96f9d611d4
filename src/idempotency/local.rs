//! A persistent store in an embedded database file (redb), for local replay and tools:
//! replaying the same events twice finds the duplicates.

use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Claim, CompletedOutcome, Entry, IdempotencyStore, StoreError};

/// key → (state, until_ms); state 1 = in progress, 2 = processed, 3 = dead-lettered.
const KEYS: TableDefinition<&str, (u8, u64)> = TableDefinition::new("idempotency_keys");

/// Keeps keys in a redb file. Each write commits without an fsync; [`IdempotencyStore::flush`]
/// (called once per invocation) makes them durable, so a crash loses at most the current batch's
/// marks and those records are processed again (at least once, never lost).
pub struct LocalStore {
    db: Database,
    // redb allows one writer at a time; the mutex keeps claims atomic across tasks of this process.
    writer: Mutex<()>,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore").finish_non_exhaustive()
    }
}

impl LocalStore {
    /// Opens the database at `path`, creating it (and its directory) when missing.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::new("creating its directory", e))?;
        }
        let db = Database::create(path).map_err(|e| StoreError::new("opening its file", e))?;
        let txn = db
            .begin_write()
            .map_err(|e| StoreError::new("opening its file", e))?;
        txn.open_table(KEYS)
            .map_err(|e| StoreError::new("creating its table", e))?;
        txn.commit()
            .map_err(|e| StoreError::new("creating its table", e))?;
        Ok(Self {
            db,
            writer: Mutex::new(()),
        })
    }

    fn write<T>(
        &self,
        action: &'static str,
        durability: Durability,
        body: impl FnOnce(&mut redb::Table<'_, &str, (u8, u64)>) -> Result<T, redb::StorageError>,
    ) -> Result<T, StoreError> {
        let _guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| StoreError::new(action, e))?;
        txn.set_durability(durability)
            .map_err(|e| StoreError::new(action, e))?;
        let result = {
            let mut table = txn
                .open_table(KEYS)
                .map_err(|e| StoreError::new(action, e))?;
            body(&mut table).map_err(|e| StoreError::new(action, e))?
        };
        txn.commit().map_err(|e| StoreError::new(action, e))?;
        Ok(result)
    }
}

fn decode((state, until_ms): (u8, u64)) -> Entry {
    match state {
        2 => Entry::Completed {
            outcome: CompletedOutcome::Processed,
            until_ms,
        },
        3 => Entry::Completed {
            outcome: CompletedOutcome::DeadLettered,
            until_ms,
        },
        _ => Entry::InProgress { until_ms },
    }
}

#[async_trait]
impl IdempotencyStore for LocalStore {
    async fn completed(
        &self,
        keys: &[&str],
        now_ms: u64,
    ) -> Result<Vec<Option<CompletedOutcome>>, StoreError> {
        let action = "reading completed keys";
        let txn = self
            .db
            .begin_read()
            .map_err(|e| StoreError::new(action, e))?;
        let table = txn
            .open_table(KEYS)
            .map_err(|e| StoreError::new(action, e))?;
        keys.iter()
            .map(|key| {
                let entry = table.get(*key).map_err(|e| StoreError::new(action, e))?;
                Ok(entry.and_then(|v| decode(v.value()).completed(now_ms)))
            })
            .collect()
    }

    async fn try_claim(
        &self,
        key: &str,
        now_ms: u64,
        lock_until_ms: u64,
    ) -> Result<Claim, StoreError> {
        self.write("claiming a key", Durability::None, |table| {
            let current = table.get(key)?.map(|v| decode(v.value()));
            if let Some(claim) = current.and_then(|e| e.blocks(now_ms)) {
                return Ok(claim);
            }
            table.insert(key, (1, lock_until_ms))?;
            Ok(Claim::Acquired)
        })
    }

    async fn complete(
        &self,
        key: &str,
        outcome: CompletedOutcome,
        keep_until_ms: u64,
    ) -> Result<(), StoreError> {
        let state = match outcome {
            CompletedOutcome::Processed => 2,
            CompletedOutcome::DeadLettered => 3,
        };
        self.write("completing a key", Durability::None, |table| {
            table.insert(key, (state, keep_until_ms))?;
            Ok(())
        })
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.write("releasing a key", Durability::None, |table| {
            table.remove(key)?;
            Ok(())
        })
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.write("flushing to disk", Durability::Immediate, |_| Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&dir.path().join("state/keys.redb")).unwrap();
        super::super::contract::holds_for(&store).await;
    }

    #[tokio::test]
    async fn survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.redb");
        {
            let store = LocalStore::open(&path).unwrap();
            assert_eq!(store.try_claim("k", 10, 20).await.unwrap(), Claim::Acquired);
            store
                .complete("k", CompletedOutcome::Processed, 1_000)
                .await
                .unwrap();
            store.flush().await.unwrap();
        }
        let store = LocalStore::open(&path).unwrap();
        assert_eq!(
            store.try_claim("k", 11, 30).await.unwrap(),
            Claim::Completed(CompletedOutcome::Processed)
        );
    }
}
