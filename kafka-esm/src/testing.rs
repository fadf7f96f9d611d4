//! Test support for code built on this crate (feature `testing`), as rdkafka's `mocking` module is.
//!
//! [`store_contract`] proves that an [`IdempotencyStore`] written elsewhere (Redis, Postgres, ...)
//! keeps the rules the processor relies on. Every store of this crate passes it:
//!
//! ```no_run
//! # async fn example() {
//! let store = kafka_esm::idempotency::MemoryStore::new();
//! kafka_esm::testing::store_contract(&store).await;
//! # }
//! ```

use crate::idempotency::{Claim, CompletedOutcome, IdempotencyStore, Interrupted};

/// Runs the rules every [`IdempotencyStore`] must keep against `store`, and panics (as a test
/// assertion does) at the first one it breaks: the assertion's message or the comment above its
/// line in this module says which.
///
/// The store must be empty of the keys used here (they all start with `a`..`e`, `held` or
/// `chunk-`): give it a fresh table, file or namespace. The rules:
/// - a new key is claimed once; a second claim sees the lock until it expires;
/// - an expired lock is taken over as [`Claim::Resumed`], with the first claim's time, even when
///   it was interrupted more than once;
/// - a completed key is a duplicate ([`Claim::Completed`]) until its window ends, then new again;
/// - a released claim is free at once; a release or an abandon never drops a completed key;
/// - an abandoned claim is taken over at once, as interrupted, and only the claim that holds the
///   lock can abandon it;
/// - [`IdempotencyStore::completed`] sees completed keys only;
/// - a chunk claim ([`IdempotencyStore::try_claim_many`]) answers every key as a claim of it alone
///   would, whatever state each is in, and completions and releases of many keys act as one each.
pub async fn store_contract(store: &dyn IdempotencyStore) {
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
    // An expired lock (a crashed invocation) is taken over, and says when it was claimed.
    assert_eq!(
        store.try_claim("a", now + 501, now + 900).await.unwrap(),
        Claim::Resumed(Interrupted {
            claimed_at_ms: now,
            lock_until_ms: now + 500
        })
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
    // A release never drops a completed key.
    store.release("b").await.unwrap();
    store.release_many(&["b"]).await.unwrap();
    // The batch read sees completed keys only.
    let found = store.completed(&["b", "a", "zzz"], now + 3).await.unwrap();
    assert_eq!(
        found,
        vec![Some(CompletedOutcome::DeadLettered), None, None],
        "a release never drops a completed key, and the batch read sees completed keys only"
    );
    // Many keys at once: each answered as alone, completed and released together.
    store.try_claim("held", now, now + 500).await.unwrap();
    let claims = store
        .try_claim_many(&["c", "b", "held", "d"], now + 4, now + 700)
        .await
        .unwrap();
    assert_eq!(
        claims,
        vec![
            Claim::Acquired,
            Claim::Completed(CompletedOutcome::DeadLettered),
            Claim::Locked {
                until_ms: now + 500
            },
            Claim::Acquired,
        ]
    );
    store
        .complete_many(&[("c", CompletedOutcome::DeadLettered)], now + 10_000)
        .await
        .unwrap();
    store.release_many(&["d"]).await.unwrap();
    assert_eq!(
        store.completed(&["c", "d"], now + 5).await.unwrap(),
        vec![Some(CompletedOutcome::DeadLettered), None]
    );
    assert_eq!(
        store.try_claim("d", now + 5, now + 700).await.unwrap(),
        Claim::Acquired
    );
    // An abandoned claim is taken over at once, as interrupted.
    assert_eq!(
        store.try_claim("e", now + 10, now + 700).await.unwrap(),
        Claim::Acquired
    );
    store.abandon("e", now + 699, now + 20).await.unwrap();
    assert_eq!(
        store.try_claim("e", now + 20, now + 700).await.unwrap(),
        Claim::Locked {
            until_ms: now + 700
        },
        "another claim's abandon does not touch this one"
    );
    store.abandon("e", now + 700, now + 20).await.unwrap();
    assert_eq!(
        store.try_claim("e", now + 21, now + 700).await.unwrap(),
        Claim::Resumed(Interrupted {
            claimed_at_ms: now + 10,
            lock_until_ms: now + 20
        })
    );
    store
        .complete("e", CompletedOutcome::Processed, now + 10_000)
        .await
        .unwrap();
    store.abandon("e", now + 10_000, now + 30).await.unwrap();
    assert_eq!(
        store.completed(&["e"], now + 31).await.unwrap(),
        vec![Some(CompletedOutcome::Processed)],
        "a completed key is never abandoned"
    );
    // A released key is new again, not an interrupted one.
    store.release("d").await.unwrap();
    assert_eq!(
        store
            .try_claim_many(&["d"], now + 801, now + 900)
            .await
            .unwrap(),
        vec![Claim::Acquired]
    );
    // An expired lock taken over in a batch is reported as interrupted too.
    assert_eq!(
        store
            .try_claim_many(&["held"], now + 501, now + 900)
            .await
            .unwrap(),
        vec![Claim::Resumed(Interrupted {
            claimed_at_ms: now,
            lock_until_ms: now + 500
        })]
    );
    // Interrupted again: the first interrupted attempt's claim time is kept.
    store.abandon("held", now + 900, now + 600).await.unwrap();
    assert_eq!(
        store.try_claim("held", now + 601, now + 990).await.unwrap(),
        Claim::Resumed(Interrupted {
            claimed_at_ms: now,
            lock_until_ms: now + 600
        })
    );
    chunk_claims(store).await;
    store.flush().await.unwrap();
}

/// A chunk claim answers every key as a claim of it alone would, whatever state each is in, and
/// completions and releases of many keys at once.
async fn chunk_claims(store: &dyn IdempotencyStore) {
    let t = 5_000_000;
    // One key in each state a claim can meet.
    store
        .complete("chunk-duplicate", CompletedOutcome::Processed, t + 10_000)
        .await
        .unwrap();
    assert_eq!(
        store
            .try_claim("chunk-locked", t - 10, t + 500)
            .await
            .unwrap(),
        Claim::Acquired
    );
    assert_eq!(
        store
            .try_claim("chunk-interrupted", t - 300, t - 100)
            .await
            .unwrap(),
        Claim::Acquired
    );
    store
        .complete("chunk-expired", CompletedOutcome::DeadLettered, t - 1)
        .await
        .unwrap();
    let keys = [
        "chunk-fresh",
        "chunk-duplicate",
        "chunk-locked",
        "chunk-interrupted",
        "chunk-expired",
    ];
    assert_eq!(
        store.try_claim_many(&keys, t, t + 700).await.unwrap(),
        vec![
            Claim::Acquired,
            Claim::Completed(CompletedOutcome::Processed),
            Claim::Locked { until_ms: t + 500 },
            Claim::Resumed(Interrupted {
                claimed_at_ms: t - 300,
                lock_until_ms: t - 100
            }),
            Claim::Acquired,
        ]
    );
    // The claims are held: another claim sees this call's lock, and the others are unchanged.
    for key in ["chunk-fresh", "chunk-interrupted", "chunk-expired"] {
        assert_eq!(
            store.try_claim(key, t + 1, t + 800).await.unwrap(),
            Claim::Locked { until_ms: t + 700 },
            "{key}"
        );
    }
    assert_eq!(
        store
            .try_claim("chunk-locked", t + 1, t + 800)
            .await
            .unwrap(),
        Claim::Locked { until_ms: t + 500 }
    );
    assert_eq!(
        store.completed(&keys, t + 1).await.unwrap(),
        vec![None, Some(CompletedOutcome::Processed), None, None, None]
    );

    // Interrupted a second time (the chunk's attempt stopped too): the next chunk claim takes it
    // over with the first interrupted attempt's claim time, and its own lock is the one that ran out.
    store
        .abandon("chunk-interrupted", t + 700, t + 20)
        .await
        .unwrap();
    assert_eq!(
        store
            .try_claim_many(&["chunk-new", "chunk-interrupted"], t + 21, t + 900)
            .await
            .unwrap(),
        vec![
            Claim::Acquired,
            Claim::Resumed(Interrupted {
                claimed_at_ms: t - 300,
                lock_until_ms: t + 20
            }),
        ]
    );
    // A third time, claimed alone: still the first claim time.
    store
        .abandon("chunk-interrupted", t + 900, t + 30)
        .await
        .unwrap();
    assert_eq!(
        store
            .try_claim("chunk-interrupted", t + 31, t + 990)
            .await
            .unwrap(),
        Claim::Resumed(Interrupted {
            claimed_at_ms: t - 300,
            lock_until_ms: t + 30
        })
    );

    // Completions of many keys, one of them twice: the last outcome counts.
    store
        .complete_many(
            &[
                ("chunk-fresh", CompletedOutcome::Processed),
                ("chunk-interrupted", CompletedOutcome::Processed),
                ("chunk-fresh", CompletedOutcome::DeadLettered),
            ],
            t + 10_000,
        )
        .await
        .unwrap();
    // Releases of many keys: the held ones are free again at once.
    store
        .release_many(&["chunk-new", "chunk-expired"])
        .await
        .unwrap();
    assert_eq!(
        store
            .completed(
                &[
                    "chunk-fresh",
                    "chunk-interrupted",
                    "chunk-new",
                    "chunk-expired"
                ],
                t + 40
            )
            .await
            .unwrap(),
        vec![
            Some(CompletedOutcome::DeadLettered),
            Some(CompletedOutcome::Processed),
            None,
            None
        ]
    );
    assert_eq!(
        store
            .try_claim_many(
                &["chunk-new", "chunk-expired", "chunk-fresh"],
                t + 41,
                t + 1_000
            )
            .await
            .unwrap(),
        vec![
            Claim::Acquired,
            Claim::Acquired,
            Claim::Completed(CompletedOutcome::DeadLettered)
        ]
    );
    assert_eq!(
        store.try_claim_many(&[], t + 42, t + 1_000).await.unwrap(),
        vec![]
    );
}
