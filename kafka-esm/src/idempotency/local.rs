//! A persistent store in an embedded database file (redb), for local replay and tools:
//! replaying the same events twice finds the duplicates.

use std::any::Any;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use async_trait::async_trait;
use std::ops::Bound;

use redb::backends::FileBackend;
use redb::{
    BackendError, Builder, Database, Durability, ReadableDatabase, ReadableTable, StorageBackend,
    TableDefinition,
};
use tokio::sync::oneshot;

use super::{Claim, CompletedOutcome, Entry, IdempotencyStore, StoreError};

/// key → (state, since_ms, until_ms); state 1 = in progress (since = when claimed), 2 = processed,
/// 3 = dead-lettered. (The first layout, without the claim time, lived in `idempotency_keys`.)
const KEYS: TableDefinition<&str, (u8, u64, u64)> = TableDefinition::new("idempotency_keys_v2");

type Keys<'t> = redb::Table<'t, &'static str, (u8, u64, u64)>;

/// At most this many calls share one commit (a chunk is at most 100 keys: 25,600 keys).
const MAX_GROUP: usize = 256;

/// Keeps keys in a redb file. Every write is committed, and handed to the operating system, before
/// its call returns, so a claim or a completion survives a kill of the process right after it: a
/// kill between a claim and its completion is seen by the next claim as an interrupted attempt.
/// Commits are not `fsync`ed (5.6 ms each on this machine's disk, measured, against 0.2 ms): a power
/// cut may lose the last ones, and those records are then processed again.
///
/// Writes are group-committed: one writer thread owns every write transaction, and the calls that
/// arrive while it commits (the partitions of a batch, run concurrently, each with its chunk) are
/// applied together in the next transaction, in the order they arrived, each call getting its own
/// answer. Two calls that claim the same key in one commit therefore still get exactly one winner:
/// the first in line. A chunk of records costs at most one commit for its claims and one for its
/// completions, and usually shares them with the other partitions. The async callers only wait:
/// no redb write runs on the runtime's worker threads.
///
/// A call whose caller stops waiting (a deadline cut it short) is skipped if its commit has not
/// begun; otherwise it is applied all the same, as a DynamoDB request sent before a timeout is:
/// a claim left so expires with its lock.
pub struct LocalStore {
    db: Arc<Database>,
    /// Write transactions committed since the store was opened.
    commits: Arc<AtomicU64>,
    /// The writer thread's queue; `None` only while the store is dropped.
    queue: Option<mpsc::Sender<Box<dyn Pending>>>,
    /// Joined on drop, so that the file is closed (and can be opened again) once the store is gone.
    writer: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore").finish_non_exhaustive()
    }
}

impl Drop for LocalStore {
    fn drop(&mut self) {
        // The writer ends when its queue closes, after the calls already queued; joining it here
        // closes the database before the store is gone, so the next open of the file succeeds.
        drop(self.queue.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl LocalStore {
    /// Opens the database at `path`, creating it (and its directory) when missing, and starts its
    /// writer thread.
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
        let db = Arc::new(db);
        let commits = Arc::new(AtomicU64::new(0));
        let (queue, requests) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("local-store-writer".into())
            .spawn({
                let (db, commits) = (db.clone(), commits.clone());
                move || write_groups(&db, &commits, &requests)
            })
            .map_err(|e| {
                StoreError::new(
                    "starting its writer thread",
                    format!("{e}: the process is out of threads or memory"),
                )
            })?;
        Ok(Self {
            db,
            commits,
            queue: Some(queue),
            writer: Some(writer),
        })
    }

    /// Write transactions committed since the store was opened: with concurrent callers, fewer
    /// than the calls that wrote (for measurements and tests).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Queues `work` for the writer thread and waits for its answer: `work` runs inside a write
    /// transaction, in the order the calls were queued, and its answer comes back once that
    /// transaction is committed (`Immediate`: redb writes its commit, the backend skips the
    /// `fsync`). `work` may run more than once (again alone, when its group's transaction failed):
    /// only the run that is committed answers.
    async fn write<T: Send + 'static>(
        &self,
        action: &'static str,
        work: impl FnMut(&mut Keys<'_>) -> Result<T, redb::StorageError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let stopped = || {
            StoreError::new(
                action,
                "its writer thread has stopped (it failed earlier, see the log): restart the process",
            )
        };
        let (reply, answer) = oneshot::channel();
        let request = Box::new(Request {
            action,
            work,
            answer: None,
            reply,
        });
        self.queue
            .as_ref()
            .ok_or_else(stopped)?
            .send(request)
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// A queued write: applied inside a group's transaction, answered once it is committed.
trait Pending: Send {
    /// Applies the call to the open transaction's table, keeping its answer.
    fn apply(&mut self, table: &mut Keys<'_>) -> Result<(), redb::StorageError>;
    /// True when the caller stopped waiting: it need not be applied.
    fn caller_gone(&self) -> bool;
    /// Answers the caller: its kept answer when `failure` is `None`, else that failure.
    fn answer(self: Box<Self>, failure: Option<&str>);
}

struct Request<T, F> {
    action: &'static str,
    work: F,
    answer: Option<T>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Pending for Request<T, F>
where
    T: Send,
    F: FnMut(&mut Keys<'_>) -> Result<T, redb::StorageError> + Send,
{
    fn apply(&mut self, table: &mut Keys<'_>) -> Result<(), redb::StorageError> {
        self.answer = Some((self.work)(table)?);
        Ok(())
    }

    fn caller_gone(&self) -> bool {
        self.reply.is_closed()
    }

    fn answer(self: Box<Self>, failure: Option<&str>) {
        let answer = match (failure, self.answer) {
            (None, Some(answer)) => Ok(answer),
            (Some(message), _) => Err(StoreError::new(self.action, message)),
            (None, None) => Err(StoreError::new(
                self.action,
                "its write was committed without being applied (a bug in the local store)",
            )),
        };
        // A caller that stopped waiting no longer wants the answer.
        let _ = self.reply.send(answer);
    }
}

/// The writer thread: waits for a call, takes every call queued behind it (up to [`MAX_GROUP`]),
/// applies them in one transaction in their order, commits, and answers each. When the group's
/// transaction fails, each call is tried again alone, so one call's failure is not the others'.
/// Ends when the store is dropped.
fn write_groups(db: &Database, commits: &AtomicU64, requests: &mpsc::Receiver<Box<dyn Pending>>) {
    while let Ok(first) = requests.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match requests.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        group.retain(|request| !request.caller_gone());
        if group.is_empty() {
            continue;
        }
        match commit(db, &mut group) {
            Ok(()) => {
                commits.fetch_add(1, Ordering::Relaxed);
                group.into_iter().for_each(|request| request.answer(None));
            }
            Err(failure) if group.len() == 1 => {
                group.into_iter().for_each(|r| r.answer(Some(&failure)));
            }
            Err(_) => {
                for mut request in group {
                    let alone = commit(db, std::slice::from_mut(&mut request));
                    if alone.is_ok() {
                        commits.fetch_add(1, Ordering::Relaxed);
                    }
                    request.answer(alone.err().as_deref());
                }
            }
        }
    }
}

/// Applies `group` in order in one write transaction and commits it; on failure nothing of it is
/// written (the transaction is aborted), and the failure is described. A panic in redb (a damaged
/// file) is a failure too, so the writer keeps answering.
fn commit(db: &Database, group: &mut [Box<dyn Pending>]) -> Result<(), String> {
    let run = || -> Result<(), redb::Error> {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut table = txn.open_table(KEYS)?;
            for request in group.iter_mut() {
                request.apply(&mut table)?;
            }
        }
        txn.commit()?;
        Ok(())
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(format!(
            "redb failed unexpectedly ({}): the file may be damaged; stop the process and check it",
            panic_text(panic.as_ref())
        )),
    }
}

fn panic_text(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic")
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
        let key = key.to_owned();
        self.write("claiming a key", move |table| {
            claim(table, &key, now_ms, lock_until_ms)
        })
        .await
    }

    async fn try_claim_many(
        &self,
        keys: &[&str],
        now_ms: u64,
        lock_until_ms: u64,
    ) -> Result<Vec<Claim>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = owned(keys);
        self.write("claiming keys", move |table| {
            keys.iter()
                .map(|key| claim(table, key, now_ms, lock_until_ms))
                .collect()
        })
        .await
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
        if done.is_empty() {
            return Ok(());
        }
        let done: Vec<(String, u8)> = done
            .iter()
            .map(|(key, outcome)| ((*key).to_owned(), state(*outcome)))
            .collect();
        self.write("completing keys", move |table| {
            for (key, state) in &done {
                table.insert(key.as_str(), (*state, 0, keep_until_ms))?;
            }
            Ok(())
        })
        .await
    }

    async fn abandon(&self, key: &str, lock_until_ms: u64, now_ms: u64) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.write("abandoning a claim", move |table| {
            let current = table.get(key.as_str())?.map(|v| v.value());
            if let Some((1, since_ms, until_ms)) = current
                && until_ms == lock_until_ms
            {
                table.insert(key.as_str(), (1, since_ms, now_ms))?;
            }
            Ok(())
        })
        .await
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.release_many(&[key]).await
    }

    async fn release_many(&self, keys: &[&str]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys = owned(keys);
        self.write("releasing keys", move |table| {
            // Only claims: a completed key is never released.
            for key in &keys {
                let in_progress = table
                    .get(key.as_str())?
                    .is_some_and(|entry| matches!(decode(entry.value()), Entry::InProgress { .. }));
                if in_progress {
                    table.remove(key.as_str())?;
                }
            }
            Ok(())
        })
        .await
    }
}

/// The keys, owned, for the writer thread.
fn owned(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|key| (*key).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&dir.path().join("state/keys.redb")).unwrap();
        crate::testing::store_contract(&store).await;
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

    /// Holds the writer inside a transaction until the returned sender is dropped or sent to, so
    /// that the calls queued meanwhile are applied together in the next one.
    async fn hold_the_writer(store: &Arc<LocalStore>) -> std::sync::mpsc::Sender<()> {
        let (entered, entered_rx) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = store.clone();
        tokio::spawn(async move {
            holder
                .write("holding the writer", move |_| {
                    let _ = entered.send(());
                    let _ = release_rx.recv();
                    Ok(())
                })
                .await
                .unwrap()
        });
        tokio::task::spawn_blocking(move || entered_rx.recv().unwrap())
            .await
            .unwrap();
        release
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_queued_during_a_commit_share_the_next_one_and_answer_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::open(&dir.path().join("keys.redb")).unwrap());
        store.try_claim("held", 1, 50).await.unwrap();
        let release = hold_the_writer(&store).await;
        let before = store.commits();
        let mut first = std::pin::pin!(store.try_claim_many(&["k", "a"], 10, 100));
        let mut second = std::pin::pin!(store.try_claim_many(&["b", "k", "held"], 10, 200));
        let mut third = std::pin::pin!(store.complete_many(
            &[
                ("a", CompletedOutcome::Processed),
                ("c", CompletedOutcome::DeadLettered)
            ],
            1_000
        ));
        let mut fourth = std::pin::pin!(store.try_claim_many(&["a", "k", "c"], 11, 300));
        // Each call is queued at its first poll, in this order.
        assert!(futures::poll!(first.as_mut()).is_pending());
        assert!(futures::poll!(second.as_mut()).is_pending());
        assert!(futures::poll!(third.as_mut()).is_pending());
        assert!(futures::poll!(fourth.as_mut()).is_pending());
        drop(release);
        assert_eq!(
            first.await.unwrap(),
            [Claim::Acquired, Claim::Acquired],
            "first in line"
        );
        assert_eq!(
            second.await.unwrap(),
            [
                Claim::Acquired,
                Claim::Locked { until_ms: 100 },
                Claim::Locked { until_ms: 50 }
            ],
            "one winner for k: the call queued first"
        );
        third.await.unwrap();
        assert_eq!(
            fourth.await.unwrap(),
            [
                Claim::Completed(CompletedOutcome::Processed),
                Claim::Locked { until_ms: 100 },
                Claim::Completed(CompletedOutcome::DeadLettered)
            ],
            "sees the completions queued before it"
        );
        assert_eq!(
            store.commits() - before,
            2,
            "the held transaction, then one for the four calls"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_tasks_claiming_the_same_keys_get_exactly_one_winner_each() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::open(&dir.path().join("keys.redb")).unwrap());
        let keys: Vec<String> = (0..100).map(|n| format!("k{n}")).collect();
        let tasks: Vec<_> = (0..8)
            .map(|task| {
                let (store, keys) = (store.clone(), keys.clone());
                tokio::spawn(async move {
                    let mut won = Vec::new();
                    // Each task claims the keys in its own order, in chunks of 10.
                    let mut order: Vec<&str> = keys.iter().map(String::as_str).collect();
                    order.rotate_left(task * 13);
                    for chunk in order.chunks(10) {
                        let claims = store.try_claim_many(chunk, 10, 1_000).await.unwrap();
                        won.extend(
                            chunk
                                .iter()
                                .zip(claims)
                                .filter(|(_, c)| c.holds())
                                .map(|(k, _)| k.to_string()),
                        );
                    }
                    won
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            winners.extend(task.await.unwrap());
        }
        winners.sort();
        let mut expected = keys.clone();
        expected.sort();
        assert_eq!(winners, expected, "every key won once, by one task");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_call_fails_alone_and_the_others_of_its_commit_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::open(&dir.path().join("keys.redb")).unwrap());
        let release = hold_the_writer(&store).await;
        let before = store.commits();
        let mut good = std::pin::pin!(store.try_claim_many(&["x", "y"], 10, 100));
        let mut failing = std::pin::pin!(store.write("writing a bad key", |table| {
            table.insert("bad", (1, 0, 0))?;
            Err::<(), _>(redb::StorageError::Io(std::io::Error::other("disk full")))
        }));
        let mut panicking = std::pin::pin!(store.write("writing a worse key", |table| {
            table.insert("worse", (1, 0, 0))?;
            panic!("redb met a damaged page");
            #[allow(unreachable_code)]
            Ok(())
        }));
        let mut also_good = std::pin::pin!(store.try_claim("z", 10, 100));
        assert!(futures::poll!(good.as_mut()).is_pending());
        assert!(futures::poll!(failing.as_mut()).is_pending());
        assert!(futures::poll!(panicking.as_mut()).is_pending());
        assert!(futures::poll!(also_good.as_mut()).is_pending());
        drop(release);
        assert_eq!(good.await.unwrap(), [Claim::Acquired, Claim::Acquired]);
        let error = failing.await.unwrap_err();
        assert_eq!(
            (error.action, error.message.as_str()),
            ("writing a bad key", "I/O error: disk full")
        );
        let error = panicking.await.unwrap_err();
        assert_eq!(error.action, "writing a worse key");
        assert!(
            error
                .message
                .starts_with("redb failed unexpectedly (redb met a damaged page)"),
            "{}",
            error.message
        );
        assert_eq!(also_good.await.unwrap(), Claim::Acquired);
        assert_eq!(
            store.completed(&["bad", "worse"], 0).await.unwrap(),
            [None, None]
        );
        assert_eq!(
            store.try_claim("bad", 10, 100).await.unwrap(),
            Claim::Acquired,
            "nothing of a failed call is written"
        );
        assert_eq!(
            store.try_claim("x", 11, 100).await.unwrap(),
            Claim::Locked { until_ms: 100 }
        );
        // The held one, the two good calls alone, then the claims of "bad" and "x": the writer
        // still answers after a panic.
        assert_eq!(store.commits() - before, 5);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_whose_caller_stopped_waiting_before_its_commit_is_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::open(&dir.path().join("keys.redb")).unwrap());
        let release = hold_the_writer(&store).await;
        {
            let mut gone = std::pin::pin!(store.try_claim("k", 10, 100));
            assert!(futures::poll!(gone.as_mut()).is_pending());
        }
        drop(release);
        assert_eq!(
            store.try_claim("k", 11, 200).await.unwrap(),
            Claim::Acquired
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
