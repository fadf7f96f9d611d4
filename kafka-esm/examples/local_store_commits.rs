//! Measures the local (redb) idempotency store under the processor's load: TASKS concurrent
//! partitions, each claiming then completing CHUNKS chunks of 100 random keys, as
//! `Processor::process` does for a batch. Prints the wall time, the store calls, the commits they cost, and the calls and
//! keys per commit.
//!
//! Two shapes: the partitions joined in one task (`join_all`, as the processor runs them), and as
//! spawned tasks on a two-worker runtime (several invocations at once, as `esm poll
//! --concurrency` runs them). Each is run ROUNDS times on a new store; the median is printed.
//!
//! Run: `cargo run --release --example local_store_commits [-- TASKS CHUNKS ROUNDS]` (defaults 4
//! 100 5). Nothing is timed in the tests: this is a measurement to read, not a pass/fail check.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use kafka_esm::idempotency::{CompletedOutcome, IdempotencyStore, LocalStore};

const CHUNK: usize = 100;

/// One partition's work: `chunks` chunks of 100 claims then 100 completions.
async fn partition(store: &LocalStore, task: usize, chunks: usize) {
    for chunk in 0..chunks {
        // Keys as the telemetry app's (`id:<event id>`): random, so each chunk's keys land on
        // pages all over the tree, as in a real run.
        let mut random = fastrand::Rng::with_seed((task * 1_000_003 + chunk) as u64);
        let keys: Vec<String> = (0..CHUNK)
            .map(|_| format!("id:{:032x}", random.u128(..)))
            .collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let claims = store
            .try_claim_many(&keys, 1_000, 2_000)
            .await
            .expect("claim");
        assert!(claims.iter().all(|c| c.holds()), "fresh keys are acquired");
        let done: Vec<(&str, CompletedOutcome)> = keys
            .iter()
            .map(|k| (*k, CompletedOutcome::Processed))
            .collect();
        store.complete_many(&done, 10_000).await.expect("complete");
    }
}

/// Wall time and commits of one round on a new store.
async fn round(tasks: usize, chunks: usize, spawned: bool) -> (Duration, u64) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Arc::new(LocalStore::open(&dir.path().join("keys.redb")).expect("open"));
    let before = store.commits();
    let started = Instant::now();
    if spawned {
        let handles: Vec<_> = (0..tasks)
            .map(|task| {
                let store = store.clone();
                tokio::spawn(async move { partition(&store, task, chunks).await })
            })
            .collect();
        for handle in handles {
            handle.await.expect("a task");
        }
    } else {
        join_all((0..tasks).map(|task| partition(&store, task, chunks))).await;
    }
    let elapsed = started.elapsed();
    (elapsed, store.commits() - before)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("TASKS CHUNKS ROUNDS are whole numbers"))
        .collect();
    let tasks = args.first().copied().unwrap_or(4);
    let chunks = args.get(1).copied().unwrap_or(100);
    let rounds = args.get(2).copied().unwrap_or(5).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let calls = (tasks * chunks * 2) as u64;
    for (shape, spawned) in [("joined (one task)", false), ("spawned tasks", true)] {
        let mut results: Vec<(Duration, u64)> = (0..rounds)
            .map(|_| runtime.block_on(round(tasks, chunks, spawned)))
            .collect();
        results.sort();
        let (wall, commits) = results[rounds / 2];
        println!(
            "{shape:<18} {tasks} x {chunks} chunks of {CHUNK}: {:>8.1} ms median of {rounds} (min {:.1}, max {:.1}); {calls} calls, {commits} commits ({:.2} calls, {:.0} keys per commit)",
            wall.as_secs_f64() * 1e3,
            results[0].0.as_secs_f64() * 1e3,
            results[rounds - 1].0.as_secs_f64() * 1e3,
            calls as f64 / commits.max(1) as f64,
            (calls as usize * CHUNK) as f64 / commits.max(1) as f64,
        );
    }
}
