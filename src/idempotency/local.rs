//! A persistent store in an embedded database file (redb), for local replay and tools:
//! replaying the same events twice finds the duplicates.

use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use std::ops::Bound;

use redb::backends::FileBackend;
use redb::{
    BackendError, Builder, Database, Durability, ReadableDatabase, ReadableTable, StorageBackend,
    TableDefinition,
};

use super::{Claim, CompletedOutcome, Entry, IdempotencyStore, StoreError};

/// key → (state, since_ms, until_ms); state 1 = in progress (since = when claimed), 2 = processed,
/// 3 = dead-lettered. (The first layout, without the claim time, lived in `idempotency_keys`.)
const KEYS: TableDefinition<&str, (u8, u64, u64)> = TableDefinition::new("idempotency_keys_v2");

type Keys<'t> = redb::Table<'t, &'static str, (u8, u64, u64)>;

/// Keeps keys in a redb file. Every write is one committed transaction, handed to the operating
/// system before it returns, so a claim or a completion survives a kill of the process right after
/// it: a kill between a claim and its completion is seen by the next claim as an interrupted
/// attempt. Commits are not `fsync`ed (5.6 ms each on this machine's disk, measured, against
/// 0.2 ms): a power cut may lose the last ones, and those records are then processed again. A
/// chunk of records costs one transaction for its claims and one for its completions.
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
    ///
    /// A file that exists must be a store: an empty (0-byte) or unreadable file is an error that
    /// names it, never a new store in its place, which would forget every key it held and repeat
    /// every side effect.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        const OPENING: &str = "opening its file";
        let io_error =
            |e: std::io::Error| StoreError::new(OPENING, format!("{}: {e}", path.display()));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::new("creating its directory", format!("{}: {e}", dir.display()))
            })?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true);
        // `create_new` tells a file made here (a new store) from one that was there before.
        let (file, created) = match options.clone().create_new(true).open(path) {
            Ok(file) => (file, true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                (options.open(path).map_err(io_error)?, false)
            }
            Err(e) => return Err(io_error(e)),
        };
        if !created && file.metadata().map_err(io_error)?.len() == 0 {
            return Err(unusable(path, "is empty (0 bytes)"));
        }
        let backend = FileBackend::new(file)
            .map_err(|e| StoreError::new(OPENING, format!("{}: {e}", path.display())))?;
        // redb answers some damaged files with a panic rather than an error (measured: a store whose
        // pages were overwritten).
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let db = Builder::new().create_with_backend(WithoutFsync(backend))?;
            let txn = db.begin_write()?;
            txn.open_table(KEYS)?;
            txn.commit()?;
            Ok::<_, redb::Error>(db)
        }));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch)) => {
                return Err(StoreError::new(
                    OPENING,
                    format!(
                        "{} is open in another process: wait for it to finish",
                        path.display()
                    ),
                ));
            }
            Ok(Err(
                e @ (redb::Error::Corrupted(_)
                | redb::Error::UpgradeRequired(_)
                | redb::Error::TableTypeMismatch { .. }),
            )) => {
                return Err(unusable(
                    path,
                    &format!("is not a readable idempotency store ({e})"),
                ));
            }
            Ok(Err(redb::Error::Io(e))) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(unusable(
                    path,
                    &format!("is not a readable idempotency store ({e})"),
                ));
            }
            Ok(Err(e)) => return Err(StoreError::new(OPENING, format!("{}: {e}", path.display()))),
            Err(_) => {
                return Err(unusable(
                    path,
                    "is not a readable idempotency store (its database is damaged)",
                ));
            }
        };
        Ok(Self {
            db,
            writer: Mutex::new(()),
        })
    }

    /// Runs `body` in one committed write transaction (`Immediate`: redb writes its commit, and the
    /// backend skips the `fsync`).
    fn write<T>(
        &self,
        action: &'static str,
        body: impl FnOnce(&mut Keys<'_>) -> Result<T, redb::StorageError>,
    ) -> Result<T, StoreError> {
        let _guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| StoreError::new(action, e))?;
        txn.set_durability(Durability::Immediate)
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

/// redb's file backend, less the `fsync`: writes reach the operating system, not always the disk.
#[derive(Debug)]
struct WithoutFsync(FileBackend);

impl StorageBackend for WithoutFsync {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.0.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.0.write(offset, data)
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.0.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.0.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.query_lock_range(start, end)
    }
}

/// `path` exists but holds no store: what is wrong, and what to do.
fn unusable(path: &Path, problem: &str) -> StoreError {
    StoreError::new(
        "opening its file",
        format!(
            "{} {problem}: delete it to start over with an empty store; the keys in it would be lost, so every record would be processed again",
            path.display()
        ),
    )
}

fn decode((state, since_ms, until_ms): (u8, u64, u64)) -> Entry {
    match state {
        2 => Entry::Completed {
            outcome: CompletedOutcome::Processed,
            until_ms,
        },
        3 => Entry::Completed {
            outcome: CompletedOutcome::DeadLettered,
            until_ms,
        },
        _ => Entry::InProgress { since_ms, until_ms },
    }
}

fn state(outcome: CompletedOutcome) -> u8 {
    match outcome {
        CompletedOutcome::Processed => 2,
        CompletedOutcome::DeadLettered => 3,
    }
}

/// Claims `key` inside a write transaction.
fn claim(
    table: &mut Keys<'_>,
    key: &str,
    now_ms: u64,
    lock_until_ms: u64,
) -> Result<Claim, redb::StorageError> {
    let current = table.get(key)?.map(|v| decode(v.value()));
    let claim = Entry::claim(current, now_ms);
    if claim.holds() {
        table.insert(key, (1, claim.since_ms(now_ms), lock_until_ms))?;
    }
    Ok(claim)
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
        self.write("claiming a key", |table| {
            claim(table, key, now_ms, lock_until_ms)
        })
    }

    async fn try_claim_many(
        &self,
        keys: &[&str],
        now_ms: u64,
        lock_until_ms: u64,
    ) -> Result<Vec<Claim>, StoreError> {
        self.write("claiming keys", |table| {
            keys.iter()
                .map(|key| claim(table, key, now_ms, lock_until_ms))
                .collect()
        })
    }

    async fn complete(
        &self,
        key: &str,
        outcome: CompletedOutcome,
        keep_until_ms: u64,
    ) -> Result<(), StoreError> {
        self.complete_many(&[(key, outcome)], keep_until_ms).await
    }

    async fn complete_many(
        &self,
        done: &[(&str, CompletedOutcome)],
        keep_until_ms: u64,
    ) -> Result<(), StoreError> {
        self.write("completing keys", |table| {
            for (key, outcome) in done {
                table.insert(*key, (state(*outcome), 0, keep_until_ms))?;
            }
            Ok(())
        })
    }

    async fn abandon(&self, key: &str, lock_until_ms: u64, now_ms: u64) -> Result<(), StoreError> {
        self.write("abandoning a claim", |table| {
            let current = table.get(key)?.map(|v| v.value());
            if let Some((1, since_ms, until_ms)) = current
                && until_ms == lock_until_ms
            {
                table.insert(key, (1, since_ms, now_ms))?;
            }
            Ok(())
        })
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.release_many(&[key]).await
    }

    async fn release_many(&self, keys: &[&str]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.write("releasing keys", |table| {
            for key in keys {
                table.remove(*key)?;
            }
            Ok(())
        })
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
            assert_eq!(
                store.try_claim("open", 10, 20).await.unwrap(),
                Claim::Acquired
            );
            // Dropped without a flush, as a killed process would leave it.
        }
        let store = LocalStore::open(&path).unwrap();
        assert_eq!(
            store.try_claim("k", 11, 30).await.unwrap(),
            Claim::Completed(CompletedOutcome::Processed)
        );
        // The claim that was never completed is an interrupted attempt once its lock runs out.
        assert_eq!(
            store.try_claim("open", 21, 30).await.unwrap(),
            Claim::Resumed(crate::idempotency::Interrupted {
                claimed_at_ms: 10,
                lock_until_ms: 20
            })
        );
    }

    fn refusal(path: &Path) -> String {
        LocalStore::open(path)
            .expect_err("the file is refused")
            .message
    }

    #[test]
    fn an_empty_file_is_refused_not_made_a_new_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.redb");
        std::fs::write(&path, b"").unwrap();
        assert_eq!(
            refusal(&path),
            format!(
                "{} is empty (0 bytes): delete it to start over with an empty store; the keys in it would be lost, so every record would be processed again",
                path.display()
            )
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "left as it was");
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_readable_store_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.redb");
        {
            let store = LocalStore::open(&good).unwrap();
            for n in 0..2_000 {
                store.try_claim(&format!("k{n}"), 1, 2).await.unwrap();
            }
        }
        let bytes = std::fs::read(&good).unwrap();
        let mut overwritten = bytes.clone();
        overwritten[4096..].iter_mut().for_each(|b| *b ^= 0xFF);
        for (name, content) in [
            ("text.redb", b"not a database".to_vec()),
            ("truncated.redb", bytes[..4096].to_vec()),
            // redb panics on this one: it must still be an error.
            ("overwritten.redb", overwritten),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, &content).unwrap();
            let message = refusal(&path);
            assert!(
                message.starts_with(&format!(
                    "{} is not a readable idempotency store (",
                    path.display()
                )) && message.ends_with(
                    "): delete it to start over with an empty store; the keys in it would be lost, so every record would be processed again"
                ),
                "{name}: {message}"
            );
            assert_eq!(
                std::fs::read(&path).unwrap(),
                content,
                "{name}: left as it was"
            );
        }
    }
}
