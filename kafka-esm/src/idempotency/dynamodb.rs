//! The production store: a DynamoDB table shared by every Lambda container (and by `esm redrive`).
//!
//! One item per key, partition key `id` (S):
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `status` | S | `IN_PROGRESS` or `COMPLETED` |
//! | `outcome` | S | `processed` or `dead_lettered` (completed keys) |
//! | `lock_until_ms` | N | when an in-progress claim expires, epoch ms |
//! | `claimed_at_ms` | N | when the in-progress claim was made, epoch ms; a claim that took over an interrupted one keeps the interrupted claim's time, so after several interruptions it is the first's |
//! | `claim_token` | S | a random token naming the call that wrote the in-progress claim: how a claim recognises its own write when the SDK sent it twice, and what an error's roll-back is conditioned on |
//! | `expires_at_ms` | N | when the item stops counting, epoch ms (the lock, or the completed window) |
//! | `expiration` | N | the table's TTL attribute, epoch **seconds**: the completed window's end; for an in-progress claim a day after its lock, so an interrupted claim is still known when it is retried |
//!
//! DynamoDB deletes expired items lazily (often hours later), so every decision compares the exact
//! `expires_at_ms` / `lock_until_ms` with the caller's clock and never relies on TTL having run. An
//! item is free at `now` when its time is `<= now`, exactly as the other stores decide
//! ([`super::Entry::blocks`]).
//!
//! # Claims
//!
//! A claim is a conditional put of the in-progress item, in one of two forms:
//!
//! - *fresh*: `attribute_not_exists(id) OR (status = COMPLETED AND expires_at_ms <= now)`, for a key
//!   nobody holds; it answers [`Claim::Acquired`]. A fresh claim never replaces an in-progress item,
//!   so nothing about an interrupted attempt can be lost by it.
//! - *take-over*: `status = IN_PROGRESS AND lock_until_ms = <seen> AND claimed_at_ms = <seen>` (or
//!   `attribute_not_exists(claimed_at_ms)` for an item written before claim times were kept), pinned
//!   to exactly the expired in-progress item that a failed claim saw; it writes the interrupted
//!   claim's `claimed_at_ms` and answers [`Claim::Resumed`] with that item's times.
//!
//! A claim starts fresh. When its condition fails, the old item comes back with the failure
//! (`ReturnValuesOnConditionCheckFailure=ALL_OLD`; a `GetItem` when the service sends none) and
//! decides: completed and unexpired is a duplicate ([`Claim::Completed`]), in progress and unexpired
//! is [`Claim::Locked`], an expired in-progress item is taken over in the next write, anything else
//! (an expired completion, no item any more) is claimed fresh again. The number of writes is bounded.
//!
//! An old item that is in progress, with this call's `claim_token` and lock, is this call's own
//! write: the SDK sent the put again after a first attempt that committed but whose answer was lost
//! (a timeout, a dropped connection), and the second attempt found the first one's item. That claim
//! is ours, with the answer of the write that made it. The token, not the claim time, tells it apart:
//! two partitions of one invocation may claim the same business id in the same millisecond with the
//! same deadline, and only one of them may hold it.
//!
//! # Claiming a chunk
//!
//! [`IdempotencyStore::try_claim_many`] claims in one of two ways ([`ClaimMode`]):
//!
//! - [`ClaimMode::Transaction`] (the default): `TransactWriteItems` of up to 100 fresh claims (more
//!   keys: several transactions, sent concurrently), with a `ClientRequestToken` per transaction so
//!   that the SDK sending a committed transaction again changes nothing. A transaction commits all
//!   its claims or none: when one condition fails, the transaction is cancelled and its
//!   `CancellationReasons` (one per claim, in order) say which claim failed, with the old item, and
//!   which did not (`None`). A failed claim is decided as above; the others, and those cancelled by a
//!   `TransactionConflict` or throttling, go into the next round's transaction with the take-overs.
//!   After a bounded number of rounds, and for any failure that came back without its old item, the
//!   undecided keys are claimed one at a time.
//! - [`ClaimMode::ConcurrentPuts`]: one conditional `PutItem` per key, at most `concurrency` in
//!   flight.
//!
//! The trade-off: a transactional write costs **2 WCUs per item** (DynamoDB prepares and commits
//! each) but one request per 100 keys; a conditional put costs **1 WCU per item** but one request per
//! key. Both cost one round trip in sequence (as long as `concurrency` covers the chunk).
//!
//! Either way, on an error nothing is left claimed by the call: what it may have written (its
//! `claim_token`) is taken back, a fresh claim by a conditional delete, a take-over (or a write whose
//! outcome is unknown) by expiring its lock, so that the next claim still resumes the interrupted
//! attempt. A write that commits after its roll-back ran (a transaction still in progress when the SDK
//! gave up) stays claimed until its lock expires.
//!
//! Completions ([`IdempotencyStore::complete_many`]) are `BatchWriteItem` puts, 25 a request, every
//! request of a call sent at once, `UnprocessedItems` sent again with a bounded, jittered backoff.
//! Releases ([`IdempotencyStore::release_many`]) are conditional `DeleteItem`s, several in flight.
//!
//! # Requests and capacity per record
//!
//! A chunk is up to 100 records of one partition: one batch read of completed keys, one claim of the
//! keys not completed, the handler, one completion of what was done. Items are well under 1 KB.
//!
//! | chunk of 100 | claims | requests | round trips in sequence | WCUs per record | RCUs per record |
//! |---|---|---|---|---|---|
//! | fresh keys | `Transaction` | 6: 1 `BatchGetItem`, 1 `TransactWriteItems`, 4 `BatchWriteItem` | 3 | 3: 2 (claim) + 1 (completion) | 1 |
//! | fresh keys | `ConcurrentPuts { concurrency: 100 }` | 105: 1 `BatchGetItem`, 100 `PutItem`, 4 `BatchWriteItem` | 3 (⌈100 / concurrency⌉ + 2 with less concurrency) | 2: 1 + 1 | 1 |
//! | duplicates | either | 1 `BatchGetItem` | 1 | 0 | 1 |
//!
//! The read is strongly consistent: 1 RCU per key (up to 4 KB), found or not. What costs more, and
//! is rare: a chunk whose claims meet an interrupted (expired in-progress) key, a key locked by
//! another invocation or one completed since the read: with `Transaction`, the first transaction is
//! cancelled and the remaining claims go in a second one (one more request and round trip; count the
//! cancelled transaction's items at up to 2 WCUs each too); with `ConcurrentPuts`, that key's failed
//! put (1 WCU) and, for an interrupted key, its take-over put (1 WCU). [`DynamoDbStore::requests`]
//! counts every request sent, by operation.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, CancellationReason, KeySchemaElement,
    KeyType, KeysAndAttributes, Put, PutRequest, ReturnValuesOnConditionCheckFailure,
    ScalarAttributeType, TimeToLiveSpecification, TransactWriteItem, WriteRequest,
};
use futures::StreamExt;

use super::{Claim, ClaimMode, CompletedOutcome, Entry, IdempotencyStore, Interrupted, StoreError};

/// Attribute names.
mod attr {
    pub const ID: &str = "id";
    pub const STATUS: &str = "status";
    pub const OUTCOME: &str = "outcome";
    pub const LOCK_UNTIL_MS: &str = "lock_until_ms";
    pub const CLAIMED_AT_MS: &str = "claimed_at_ms";
    pub const CLAIM_TOKEN: &str = "claim_token";
    pub const EXPIRES_AT_MS: &str = "expires_at_ms";
    pub const EXPIRATION: &str = "expiration";
}

const IN_PROGRESS: &str = "IN_PROGRESS";
const COMPLETED: &str = "COMPLETED";
const PROCESSED: &str = "processed";
const DEAD_LETTERED: &str = "dead_lettered";

/// `BatchGetItem` takes at most 100 keys per request.
const BATCH_GET_LIMIT: usize = 100;
/// `TransactWriteItems` takes at most 100 actions per request.
const TRANSACT_LIMIT: usize = 100;
/// `BatchWriteItem` takes at most 25 puts per request.
const BATCH_WRITE_LIMIT: usize = 25;
/// Rounds of `UnprocessedKeys` / `UnprocessedItems` retries before a batch gives up (the processor
/// then reads or completes again, which is still correct).
const UNPROCESSED_ROUNDS: u32 = 8;
/// Writes of one claim before it gives up: a take-over needs two (the fresh write that sees the
/// interrupted item, then the take-over), and an item may change in between.
const CLAIM_ATTEMPTS: u32 = 4;
/// Rounds of transactions for a chunk of claims before the keys still undecided are claimed one at a
/// time.
const CLAIM_ROUNDS: u32 = 4;
/// Single-key requests in flight at once for one call (releases, claims one at a time, roll-backs).
const WRITE_CONCURRENCY: usize = 16;

/// The longest a Lambda invocation runs (15 minutes): how long before its lock's end an
/// interrupted claim without a recorded claim time may have been made.
const LONGEST_INVOCATION_MS: u64 = 15 * 60 * 1000;

/// How long after its lock an in-progress item stays in the table for TTL: a retry within this
/// window learns that the earlier attempt was interrupted.
const INTERRUPTED_KEPT_MS: u64 = 24 * 3600 * 1000;

const FRESH_CONDITION: &str =
    "attribute_not_exists(#id) OR (#status = :completed AND #expires_at_ms <= :now)";
const TAKEOVER_CONDITION: &str = "#status = :in_progress AND #lock_until_ms = :seen_lock \
     AND #claimed_at_ms = :seen_claimed";
const TAKEOVER_UNTIMED_CONDITION: &str = "#status = :in_progress AND #lock_until_ms = :seen_lock \
     AND attribute_not_exists(#claimed_at_ms)";
/// An in-progress claim written by the call whose token is `:token`.
const OURS_CONDITION: &str = "#status = :in_progress AND #claim_token = :token";

type Item = HashMap<String, AttributeValue>;

/// How many requests a [`DynamoDbStore`] (and its clones) has sent, by operation, since it was made.
/// Every attempt the SDK sends counts, its own retries included (of a throttled request, of an
/// answer lost to a timeout).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// `BatchGetItem`: reads of completed keys.
    pub batch_get_item: u64,
    /// `TransactWriteItems`: claims in [`ClaimMode::Transaction`].
    pub transact_write_items: u64,
    /// `PutItem`: single claims and completions.
    pub put_item: u64,
    /// `BatchWriteItem`: completions of several keys.
    pub batch_write_item: u64,
    /// `DeleteItem`: releases, and roll-backs of fresh claims.
    pub delete_item: u64,
    /// `UpdateItem`: abandons, and roll-backs of take-overs.
    pub update_item: u64,
    /// `GetItem`: reads after a failed claim that came back without the old item.
    pub get_item: u64,
    /// Any other operation (creating the table, for tests and local stacks).
    pub other: u64,
}

impl RequestCounts {
    /// Every request, whatever its operation.
    pub fn total(&self) -> u64 {
        self.batch_get_item
            + self.transact_write_items
            + self.put_item
            + self.batch_write_item
            + self.delete_item
            + self.update_item
            + self.get_item
            + self.other
    }

    /// The requests sent since `earlier`, a snapshot of the same store.
    pub fn since(&self, earlier: &RequestCounts) -> RequestCounts {
        RequestCounts {
            batch_get_item: self.batch_get_item.saturating_sub(earlier.batch_get_item),
            transact_write_items: self
                .transact_write_items
                .saturating_sub(earlier.transact_write_items),
            put_item: self.put_item.saturating_sub(earlier.put_item),
            batch_write_item: self
                .batch_write_item
                .saturating_sub(earlier.batch_write_item),
            delete_item: self.delete_item.saturating_sub(earlier.delete_item),
            update_item: self.update_item.saturating_sub(earlier.update_item),
            get_item: self.get_item.saturating_sub(earlier.get_item),
            other: self.other.saturating_sub(earlier.other),
        }
    }
}

/// The operations [`RequestCounts`] names, as the `X-Amz-Target` header spells them, in the order
/// of [`Counters::by_operation`] (its last counter is for any other operation).
const COUNTED: [&str; 7] = [
    "BatchGetItem",
    "TransactWriteItems",
    "PutItem",
    "BatchWriteItem",
    "DeleteItem",
    "UpdateItem",
    "GetItem",
];

#[derive(Debug, Default)]
struct Counters {
    by_operation: [AtomicU64; COUNTED.len() + 1],
}

impl Counters {
    fn count(&self, operation: &str) {
        let index = COUNTED
            .iter()
            .position(|counted| *counted == operation)
            .unwrap_or(COUNTED.len());
        self.by_operation[index].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> RequestCounts {
        let n = |i: usize| self.by_operation[i].load(Ordering::Relaxed);
        RequestCounts {
            batch_get_item: n(0),
            transact_write_items: n(1),
            put_item: n(2),
            batch_write_item: n(3),
            delete_item: n(4),
            update_item: n(5),
            get_item: n(6),
            other: n(7),
        }
    }
}

/// Counts each request just before it is sent (once per attempt), by its `X-Amz-Target`.
#[derive(Debug)]
struct CountRequests(Arc<Counters>);

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "kafka_esm::idempotency::DynamoDbStore request counter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let target = context.request().headers().get("x-amz-target");
        self.0
            .count(target.and_then(|t| t.rsplit('.').next()).unwrap_or(""));
        Ok(())
    }
}

/// Keeps keys in a DynamoDB table (see the module documentation for its schema).
#[derive(Debug, Clone)]
pub struct DynamoDbStore {
    client: Client,
    table: String,
    claims: ClaimMode,
    counters: Arc<Counters>,
}

/// What a claim write expects to find, and so what it answers when its condition holds.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// No item, or an expired completion: [`Claim::Acquired`].
    Fresh,
    /// Exactly this expired in-progress item (its lock and claim time as stored):
    /// [`Claim::Resumed`].
    Takeover {
        lock: AttributeValue,
        claimed: Option<AttributeValue>,
        interrupted: Interrupted,
    },
}

impl Expect {
    /// The answer when the write succeeds.
    fn wins(&self) -> Claim {
        match self {
            Expect::Fresh => Claim::Acquired,
            Expect::Takeover { interrupted, .. } => Claim::Resumed(*interrupted),
        }
    }

    /// How to take the write back.
    fn undo(&self) -> Undo {
        match self {
            Expect::Fresh => Undo::Delete,
            Expect::Takeover { .. } => Undo::Expire,
        }
    }
}

/// What a failed claim write learned from the item that failed its condition.
enum Next {
    /// The key is decided.
    Answer(Claim),
    /// Write again, expecting this.
    Retry(Expect),
}

/// How an error's roll-back takes back a claim this call may have written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Undo {
    /// A fresh claim (it replaced no in-progress item): delete it.
    Delete,
    /// A take-over, or a write whose outcome is unknown: expire its lock now, so that the next claim
    /// resumes it and looks for an effect (there may be none: a lookup, never a repeat).
    Expire,
}

/// A transaction's outcome.
enum Transacted {
    Committed,
    /// Cancelled: one reason per action, in order (possibly none when the service sent none).
    Cancelled(Vec<CancellationReason>),
    /// Failed otherwise: it may or may not have committed.
    Failed(StoreError),
}

/// The parts of a conditional claim put.
struct ClaimWrite {
    item: Item,
    condition: &'static str,
    names: HashMap<String, String>,
    values: Item,
}

impl DynamoDbStore {
    /// A store over an existing client and table, claiming chunks with [`ClaimMode::Transaction`].
    /// The store sends its requests through a copy of the client that counts them
    /// ([`DynamoDbStore::requests`]).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        let counters = Arc::<Counters>::default();
        let config = client
            .config()
            .to_builder()
            .interceptor(CountRequests(counters.clone()))
            .build();
        Self {
            client: Client::from_conf(config),
            table: table.into(),
            claims: ClaimMode::default(),
            counters,
        }
    }

    /// A store whose client comes from the usual AWS sources (environment, profile, Lambda role;
    /// `AWS_ENDPOINT_URL` points it elsewhere, e.g. at a local moto server).
    pub async fn from_env(table: impl Into<String>) -> Self {
        let config = aws_config::load_from_env().await;
        Self::new(Client::new(&config), table)
    }

    /// This store, claiming chunks of keys the way `mode` says.
    pub fn with_claims(mut self, mode: ClaimMode) -> Self {
        self.claims = mode;
        self
    }

    /// How this store claims chunks of keys.
    pub fn claims(&self) -> ClaimMode {
        self.claims
    }

    /// The requests sent so far by this store and its clones, by operation (a cheap snapshot of
    /// atomic counters; subtract two with [`RequestCounts::since`]).
    pub fn requests(&self) -> RequestCounts {
        self.counters.snapshot()
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table (on-demand billing, TTL on `expiration`) and returns once it is active.
    /// For local stacks and tests: production tables belong in the deployment template.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let action = "creating its table";
        let build = |e: aws_sdk_dynamodb::error::BuildError| StoreError::new(action, e);
        self.client
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(attr::ID)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(build)?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(attr::ID)
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(build)?,
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .map_err(|e| sdk_error(action, e))?;
        for _ in 0..100 {
            let described = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| sdk_error(action, e))?;
            let active = described
                .table()
                .and_then(|t| t.table_status())
                .is_some_and(|s| s.as_str() == "ACTIVE");
            if active {
                self.client
                    .update_time_to_live()
                    .table_name(&self.table)
                    .time_to_live_specification(
                        TimeToLiveSpecification::builder()
                            .attribute_name(attr::EXPIRATION)
                            .enabled(true)
                            .build()
                            .map_err(build)?,
                    )
                    .send()
                    .await
                    .map_err(|e| sdk_error(action, e))?;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(StoreError::new(
            action,
            format!("table {} did not become ACTIVE within 10 s", self.table),
        ))
    }

    fn key(id: &str) -> Item {
        HashMap::from([(attr::ID.to_owned(), AttributeValue::S(id.to_owned()))])
    }

    /// Reads one item (strongly consistent): the fallback when a failed claim returned no old item.
    async fn get_item(&self, key: &str) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("reading a key after a failed claim", e))?;
        Ok(output.item.filter(|item| !item.is_empty()))
    }

    /// One `BatchGetItem` of at most 100 distinct keys, retrying `UnprocessedKeys`.
    async fn batch_get(&self, keys: &[&str]) -> Result<HashMap<String, Item>, StoreError> {
        let action = "reading completed keys";
        let mut found = HashMap::with_capacity(keys.len());
        let mut pending: Vec<Item> = keys.iter().map(|k| Self::key(k)).collect();
        let mut round = 0;
        while !pending.is_empty() {
            round += 1;
            if round > 1 {
                if round > UNPROCESSED_ROUNDS {
                    return Err(StoreError::new(
                        action,
                        format!(
                            "{} keys stayed unprocessed after {UNPROCESSED_ROUNDS} rounds (the table is throttled)",
                            pending.len()
                        ),
                    ));
                }
                tokio::time::sleep(unprocessed_backoff(round - 1)).await;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(true)
                .projection_expression("#id, #status, #outcome, #lock_until_ms, #expires_at_ms")
                .expression_attribute_names("#id", attr::ID)
                .expression_attribute_names("#status", attr::STATUS)
                .expression_attribute_names("#outcome", attr::OUTCOME)
                .expression_attribute_names("#lock_until_ms", attr::LOCK_UNTIL_MS)
                .expression_attribute_names("#expires_at_ms", attr::EXPIRES_AT_MS)
                .build()
                .map_err(|e| StoreError::new(action, e))?;
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|e| sdk_error(action, e))?;
            if let Some(mut responses) = output.responses {
                for item in responses.remove(&self.table).unwrap_or_default() {
                    if let Some(AttributeValue::S(id)) = item.get(attr::ID) {
                        found.insert(id.clone(), item);
                    }
                }
            }
            if let Some(mut unprocessed) = output.unprocessed_keys
                && let Some(again) = unprocessed.remove(&self.table)
            {
                pending = again.keys;
            }
        }
        Ok(found)
    }

    /// Claims `key` with conditional `PutItem`s, for the call named by `token`.
    async fn claim_one(
        &self,
        key: &str,
        now_ms: u64,
        lock_until_ms: u64,
        token: &str,
    ) -> Result<Claim, StoreError> {
        let action = "claiming a key";
        let mut expect = Expect::Fresh;
        let mut last = "the condition kept failing although no entry blocks it";
        for attempt in 1..=CLAIM_ATTEMPTS {
            let write = claim_write(key, &expect, now_ms, lock_until_ms, token);
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(write.item))
                .condition_expression(write.condition)
                .set_expression_attribute_names(Some(write.names))
                .set_expression_attribute_values(Some(write.values))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            let old = match put {
                Ok(_) => return Ok(expect.wins()),
                Err(SdkError::ServiceError(service)) => match service.into_err() {
                    PutItemError::ConditionalCheckFailedException(failed) => {
                        failed.item.filter(|item| !item.is_empty())
                    }
                    // A transaction holds the item: wait for it, then try the same write again.
                    PutItemError::TransactionConflictException(_) => {
                        last = "a concurrent transaction kept conflicting with the claim";
                        tokio::time::sleep(unprocessed_backoff(attempt)).await;
                        continue;
                    }
                    other => return Err(StoreError::new(action, DisplayErrorContext(other))),
                },
                Err(other) => return Err(sdk_error(action, other)),
            };
            let old = match old {
                Some(item) => Some(item),
                // The service did not return the old item: read it.
                None => self.get_item(key).await?,
            };
            match after_failure(old.as_ref(), &expect, token, now_ms, lock_until_ms)
                .map_err(|e| StoreError::new(action, e))?
            {
                Next::Answer(claim) => return Ok(claim),
                // Taken over next, or changed since (released, expired by the other writer's clock).
                Next::Retry(next) => {
                    last = "the condition kept failing although no entry blocks it";
                    expect = next;
                }
            }
        }
        Err(StoreError::new(
            action,
            format!("no decision on key {key:?} after {CLAIM_ATTEMPTS} writes: {last}"),
        ))
    }

    /// One transaction of claim puts.
    async fn transact(&self, writes: Vec<TransactWriteItem>) -> Transacted {
        let action = "claiming keys in a transaction";
        let sent = self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            // The SDK sends the same token when it retries: a transaction that committed the first
            // time is not applied again, and the retry answers as the commit did.
            .client_request_token(random_token())
            .send()
            .await;
        match sent {
            Ok(_) => Transacted::Committed,
            Err(SdkError::ServiceError(service)) => match service.into_err() {
                TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                    Transacted::Cancelled(cancelled.cancellation_reasons.unwrap_or_default())
                }
                other => Transacted::Failed(StoreError::new(action, DisplayErrorContext(other))),
            },
            Err(other) => Transacted::Failed(sdk_error(action, other)),
        }
    }

    /// Claims distinct `keys` in rounds of transactions (see the module documentation).
    async fn claim_by_transactions(
        &self,
        keys: &[&str],
        now_ms: u64,
        lock_until_ms: u64,
        token: &str,
    ) -> Result<Vec<Claim>, StoreError> {
        let action = "claiming keys in a transaction";
        let mut answers: Vec<Option<Claim>> = vec![None; keys.len()];
        // What this call may hold, for a roll-back.
        let mut written: Vec<(usize, Undo)> = Vec::new();
        // Keys to claim one at a time after the rounds.
        let mut alone: Vec<usize> = Vec::new();
        let mut pending: Vec<(usize, Expect)> =
            (0..keys.len()).map(|i| (i, Expect::Fresh)).collect();
        for round in 1..=CLAIM_ROUNDS {
            if pending.is_empty() {
                break;
            }
            let chunks: Vec<&[(usize, Expect)]> = pending.chunks(TRANSACT_LIMIT).collect();
            let outcomes = futures::future::join_all(chunks.iter().map(|chunk| async {
                let writes: Result<Vec<TransactWriteItem>, StoreError> = chunk
                    .iter()
                    .map(|(i, expect)| {
                        let write = claim_write(keys[*i], expect, now_ms, lock_until_ms, token);
                        let put = Put::builder()
                            .table_name(&self.table)
                            .set_item(Some(write.item))
                            .condition_expression(write.condition)
                            .set_expression_attribute_names(Some(write.names))
                            .set_expression_attribute_values(Some(write.values))
                            .return_values_on_condition_check_failure(
                                ReturnValuesOnConditionCheckFailure::AllOld,
                            )
                            .build()
                            .map_err(|e| StoreError::new(action, e))?;
                        Ok(TransactWriteItem::builder().put(put).build())
                    })
                    .collect();
                match writes {
                    Ok(writes) => self.transact(writes).await,
                    Err(error) => Transacted::Failed(error),
                }
            }))
            .await;
            let mut next: Vec<(usize, Expect)> = Vec::new();
            let mut failure: Option<StoreError> = None;
            let mut contended = false;
            for (chunk, outcome) in chunks.iter().zip(outcomes) {
                match outcome {
                    Transacted::Committed => {
                        for (i, expect) in chunk.iter() {
                            answers[*i] = Some(expect.wins());
                            written.push((*i, expect.undo()));
                        }
                    }
                    Transacted::Failed(error) => {
                        // It may have committed: take it back with the rest.
                        written.extend(chunk.iter().map(|(i, expect)| (*i, expect.undo())));
                        failure.get_or_insert(error);
                    }
                    // Without one reason per claim, nobody can tell which claim failed.
                    Transacted::Cancelled(reasons) if reasons.len() != chunk.len() => {
                        alone.extend(chunk.iter().map(|(i, _)| *i));
                    }
                    Transacted::Cancelled(reasons) => {
                        for ((i, expect), reason) in chunk.iter().zip(&reasons) {
                            let i = *i;
                            match reason.code() {
                                // Cancelled because of another claim: again, as it was.
                                None | Some("None") => next.push((i, expect.clone())),
                                Some("ConditionalCheckFailed") => {
                                    let Some(old) = reason.item().filter(|item| !item.is_empty())
                                    else {
                                        // No old item: a claim alone reads it.
                                        alone.push(i);
                                        continue;
                                    };
                                    match after_failure(
                                        Some(old),
                                        expect,
                                        token,
                                        now_ms,
                                        lock_until_ms,
                                    ) {
                                        Ok(Next::Answer(claim)) => {
                                            if claim.holds() {
                                                written.push((i, expect.undo()));
                                            }
                                            answers[i] = Some(claim);
                                        }
                                        Ok(Next::Retry(expect)) => next.push((i, expect)),
                                        Err(problem) => {
                                            failure.get_or_insert(StoreError::new(action, problem));
                                        }
                                    }
                                }
                                // TransactionConflict, throttling: again, after a pause.
                                Some(_) => {
                                    contended = true;
                                    next.push((i, expect.clone()));
                                }
                            }
                        }
                    }
                }
            }
            if let Some(error) = failure {
                self.roll_back(keys, &written, now_ms, token).await;
                return Err(error);
            }
            pending = next;
            if contended && !pending.is_empty() {
                tokio::time::sleep(unprocessed_backoff(round)).await;
            }
        }
        alone.extend(pending.into_iter().map(|(i, _)| i));
        alone.sort_unstable();
        let claimed: Vec<Result<Claim, StoreError>> = futures::stream::iter(
            alone
                .iter()
                .map(|&i| self.claim_one(keys[i], now_ms, lock_until_ms, token))
                .collect::<Vec<_>>(),
        )
        .buffered(WRITE_CONCURRENCY)
        .collect()
        .await;
        let mut failure = None;
        for (&i, claim) in alone.iter().zip(claimed) {
            match claim {
                Ok(claim) => {
                    if let Some(undo) = undo_of(claim) {
                        written.push((i, undo));
                    }
                    answers[i] = Some(claim);
                }
                Err(error) => {
                    written.push((i, Undo::Expire));
                    failure.get_or_insert(error);
                }
            }
        }
        if let Some(error) = failure {
            self.roll_back(keys, &written, now_ms, token).await;
            return Err(error);
        }
        answers
            .into_iter()
            .zip(keys)
            .map(|(claim, key)| {
                claim.ok_or_else(|| StoreError::new(action, format!("key {key:?} was not decided")))
            })
            .collect()
    }

    /// Claims distinct `keys` with conditional puts, at most `concurrency` in flight.
    async fn claim_by_puts(
        &self,
        keys: &[&str],
        now_ms: u64,
        lock_until_ms: u64,
        token: &str,
        concurrency: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        // Every put runs to its end (none is dropped midway), so the roll-back knows what each did.
        let claimed: Vec<Result<Claim, StoreError>> = futures::stream::iter(
            keys.iter()
                .map(|key| self.claim_one(key, now_ms, lock_until_ms, token))
                .collect::<Vec<_>>(),
        )
        .buffered(concurrency.max(1))
        .collect()
        .await;
        let mut answers = Vec::with_capacity(keys.len());
        let mut written = Vec::new();
        let mut failure = None;
        for (i, claim) in claimed.into_iter().enumerate() {
            match claim {
                Ok(claim) => {
                    written.extend(undo_of(claim).map(|undo| (i, undo)));
                    answers.push(claim);
                }
                Err(error) => {
                    written.push((i, Undo::Expire));
                    failure.get_or_insert(error);
                }
            }
        }
        match failure {
            None => Ok(answers),
            Some(error) => {
                self.roll_back(keys, &written, now_ms, token).await;
                Err(error)
            }
        }
    }

    /// Takes back what the call named by `token` may have claimed (`written`: indexes into `keys`),
    /// after an error. Best effort: a claim left behind expires with its lock.
    async fn roll_back(&self, keys: &[&str], written: &[(usize, Undo)], now_ms: u64, token: &str) {
        let undone: Vec<Result<(), StoreError>> = futures::stream::iter(
            written
                .iter()
                .map(|&(i, undo)| self.undo_claim(keys[i], undo, now_ms, token))
                .collect::<Vec<_>>(),
        )
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
        for error in undone.into_iter().filter_map(Result::err) {
            tracing::warn!(%error, "a claim was not taken back after a failed batch claim; it expires with its lock");
        }
    }

    /// Deletes or expires `key`'s claim when it is still this call's (`token`).
    async fn undo_claim(
        &self,
        key: &str,
        undo: Undo,
        now_ms: u64,
        token: &str,
    ) -> Result<(), StoreError> {
        match undo {
            Undo::Delete => {
                let deleted = self
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(Self::key(key)))
                    .condition_expression(OURS_CONDITION)
                    .expression_attribute_names("#status", attr::STATUS)
                    .expression_attribute_names("#claim_token", attr::CLAIM_TOKEN)
                    .expression_attribute_values(
                        ":in_progress",
                        AttributeValue::S(IN_PROGRESS.into()),
                    )
                    .expression_attribute_values(":token", AttributeValue::S(token.into()))
                    .send()
                    .await;
                unless_condition_failed(
                    deleted,
                    |e| matches!(e, DeleteItemError::ConditionalCheckFailedException(_)),
                    "taking back a claim",
                )
            }
            Undo::Expire => {
                let expired = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(Self::key(key)))
                    .update_expression("SET #lock_until_ms = :now, #expires_at_ms = :now")
                    .condition_expression(OURS_CONDITION)
                    .expression_attribute_names("#status", attr::STATUS)
                    .expression_attribute_names("#claim_token", attr::CLAIM_TOKEN)
                    .expression_attribute_names("#lock_until_ms", attr::LOCK_UNTIL_MS)
                    .expression_attribute_names("#expires_at_ms", attr::EXPIRES_AT_MS)
                    .expression_attribute_values(
                        ":in_progress",
                        AttributeValue::S(IN_PROGRESS.into()),
                    )
                    .expression_attribute_values(":token", AttributeValue::S(token.into()))
                    .expression_attribute_values(":now", number(now_ms))
                    .send()
                    .await;
                unless_condition_failed(
                    expired,
                    |e| matches!(e, UpdateItemError::ConditionalCheckFailedException(_)),
                    "taking back a claim",
                )
            }
        }
    }

    /// One `BatchWriteItem` of at most 25 completions of distinct keys, retrying `UnprocessedItems`.
    async fn batch_complete(
        &self,
        done: &[(&str, CompletedOutcome)],
        keep_until_ms: u64,
    ) -> Result<(), StoreError> {
        let action = "completing keys";
        let mut pending = done
            .iter()
            .map(|(key, outcome)| {
                PutRequest::builder()
                    .set_item(Some(completed_item(key, *outcome, keep_until_ms)))
                    .build()
                    .map(|put| WriteRequest::builder().put_request(put).build())
                    .map_err(|e| StoreError::new(action, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut round = 0;
        while !pending.is_empty() {
            round += 1;
            if round > 1 {
                if round > UNPROCESSED_ROUNDS {
                    return Err(StoreError::new(
                        action,
                        format!(
                            "{} of {} completions stayed unprocessed after {UNPROCESSED_ROUNDS} rounds (the table is throttled)",
                            pending.len(),
                            done.len()
                        ),
                    ));
                }
                tokio::time::sleep(unprocessed_backoff(round - 1)).await;
            }
            let output = self
                .client
                .batch_write_item()
                .request_items(&self.table, std::mem::take(&mut pending))
                .send()
                .await
                .map_err(|e| sdk_error(action, e))?;
            if let Some(mut unprocessed) = output.unprocessed_items
                && let Some(again) = unprocessed.remove(&self.table)
            {
                pending = again;
            }
        }
        Ok(())
    }
}

/// A claim this call holds, and how to take it back.
fn undo_of(claim: Claim) -> Option<Undo> {
    match claim {
        Claim::Acquired => Some(Undo::Delete),
        Claim::Resumed(_) => Some(Undo::Expire),
        Claim::Completed(_) | Claim::Locked { .. } => None,
    }
}

/// A random token (32 hex digits): a call's `claim_token`, a transaction's `ClientRequestToken`.
fn random_token() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

fn names(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(placeholder, name)| (placeholder.to_string(), name.to_string()))
        .collect()
}

/// The conditional put that claims `key` for the call named by `token`, expecting `expect`.
fn claim_write(
    key: &str,
    expect: &Expect,
    now_ms: u64,
    lock_until_ms: u64,
    token: &str,
) -> ClaimWrite {
    let claimed_at_ms = match expect {
        Expect::Fresh => now_ms,
        // Keep the interrupted attempt's claim time: lookups cover every attempt since the first.
        Expect::Takeover { interrupted, .. } => interrupted.claimed_at_ms,
    };
    let item = HashMap::from([
        (attr::ID.to_owned(), AttributeValue::S(key.to_owned())),
        (
            attr::STATUS.to_owned(),
            AttributeValue::S(IN_PROGRESS.into()),
        ),
        (attr::LOCK_UNTIL_MS.to_owned(), number(lock_until_ms)),
        (attr::CLAIMED_AT_MS.to_owned(), number(claimed_at_ms)),
        (
            attr::CLAIM_TOKEN.to_owned(),
            AttributeValue::S(token.to_owned()),
        ),
        (attr::EXPIRES_AT_MS.to_owned(), number(lock_until_ms)),
        (
            attr::EXPIRATION.to_owned(),
            ttl_seconds(lock_until_ms.saturating_add(INTERRUPTED_KEPT_MS)),
        ),
    ]);
    let in_progress = || {
        (
            ":in_progress".to_owned(),
            AttributeValue::S(IN_PROGRESS.into()),
        )
    };
    match expect {
        Expect::Fresh => ClaimWrite {
            item,
            condition: FRESH_CONDITION,
            names: names(&[
                ("#id", attr::ID),
                ("#status", attr::STATUS),
                ("#expires_at_ms", attr::EXPIRES_AT_MS),
            ]),
            values: HashMap::from([
                (":completed".to_owned(), AttributeValue::S(COMPLETED.into())),
                (":now".to_owned(), number(now_ms)),
            ]),
        },
        Expect::Takeover { lock, claimed, .. } => {
            let mut values =
                HashMap::from([in_progress(), (":seen_lock".to_owned(), lock.clone())]);
            let condition = match claimed {
                Some(claimed) => {
                    values.insert(":seen_claimed".to_owned(), claimed.clone());
                    TAKEOVER_CONDITION
                }
                None => TAKEOVER_UNTIMED_CONDITION,
            };
            ClaimWrite {
                item,
                condition,
                names: names(&[
                    ("#status", attr::STATUS),
                    ("#lock_until_ms", attr::LOCK_UNTIL_MS),
                    ("#claimed_at_ms", attr::CLAIMED_AT_MS),
                ]),
                values,
            }
        }
    }
}

/// True when `item` is the in-progress claim that the call named by `token` wrote with this lock.
fn is_own(item: &Item, token: &str, lock_until_ms: u64) -> bool {
    matches!(item.get(attr::CLAIM_TOKEN), Some(AttributeValue::S(t)) if t == token)
        && matches!(item.get(attr::STATUS), Some(AttributeValue::S(s)) if s == IN_PROGRESS)
        && matches!(item.get(attr::LOCK_UNTIL_MS), Some(AttributeValue::N(n)) if n.parse() == Ok(lock_until_ms))
}

/// What a claim write that expected `expect` learns from `old`, the item that failed its condition
/// (`None`: there is no item any more).
fn after_failure(
    old: Option<&Item>,
    expect: &Expect,
    token: &str,
    now_ms: u64,
    lock_until_ms: u64,
) -> Result<Next, String> {
    let Some(old) = old else {
        return Ok(Next::Retry(Expect::Fresh));
    };
    // The SDK sent this write again after a first attempt that committed (see the module docs).
    if is_own(old, token, lock_until_ms) {
        return Ok(Next::Answer(expect.wins()));
    }
    let entry = decode(old)?;
    if let Some(blocking) = entry.blocks(now_ms) {
        return Ok(Next::Answer(blocking));
    }
    Ok(Next::Retry(match entry {
        Entry::InProgress { since_ms, until_ms } => Expect::Takeover {
            lock: old
                .get(attr::LOCK_UNTIL_MS)
                .cloned()
                .unwrap_or_else(|| number(until_ms)),
            claimed: old.get(attr::CLAIMED_AT_MS).cloned(),
            interrupted: Interrupted {
                claimed_at_ms: since_ms,
                lock_until_ms: until_ms,
            },
        },
        Entry::Completed { .. } => Expect::Fresh,
    }))
}

/// The item of a completed key.
fn completed_item(key: &str, outcome: CompletedOutcome, keep_until_ms: u64) -> Item {
    HashMap::from([
        (attr::ID.to_owned(), AttributeValue::S(key.to_owned())),
        (attr::STATUS.to_owned(), AttributeValue::S(COMPLETED.into())),
        (
            attr::OUTCOME.to_owned(),
            AttributeValue::S(outcome_text(outcome).into()),
        ),
        (attr::EXPIRES_AT_MS.to_owned(), number(keep_until_ms)),
        (attr::EXPIRATION.to_owned(), ttl_seconds(keep_until_ms)),
    ])
}

/// The wait before round `n` (1-based) of unprocessed keys: 25 ms doubling, at most 1 s, with jitter.
fn unprocessed_backoff(n: u32) -> Duration {
    let ceiling = 25u64.saturating_mul(1 << n.min(6)).min(1_000);
    Duration::from_millis(ceiling / 2 + fastrand::u64(0..=ceiling / 2))
}

fn number(ms: u64) -> AttributeValue {
    AttributeValue::N(ms.to_string())
}

/// Epoch milliseconds to the TTL attribute's epoch seconds, rounded up so TTL never removes an item
/// before its exact expiry.
fn ttl_seconds(ms: u64) -> AttributeValue {
    number(ms.div_ceil(1000))
}

fn outcome_text(outcome: CompletedOutcome) -> &'static str {
    match outcome {
        CompletedOutcome::Processed => PROCESSED,
        CompletedOutcome::DeadLettered => DEAD_LETTERED,
    }
}

/// The entry an item stands for; an error names what is wrong with an item this store did not write.
fn decode(item: &Item) -> Result<Entry, String> {
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(s)) => Ok(s.as_str()),
        Some(_) => Err(format!("attribute `{name}` is not a string")),
        None => Err(format!("attribute `{name}` is missing")),
    };
    let millis = |name: &str| match item.get(name) {
        Some(AttributeValue::N(n)) => n
            .parse::<u64>()
            .map_err(|_| format!("attribute `{name}`={n} is not a whole number of milliseconds")),
        Some(_) => Err(format!("attribute `{name}` is not a number")),
        None => Err(format!("attribute `{name}` is missing")),
    };
    let id = text(attr::ID).unwrap_or("?");
    let entry = match text(attr::STATUS)? {
        IN_PROGRESS => {
            let until_ms = millis(attr::LOCK_UNTIL_MS)?;
            Entry::InProgress {
                // Items written before the claim time was kept: assume the longest Lambda run.
                since_ms: millis(attr::CLAIMED_AT_MS)
                    .unwrap_or_else(|_| until_ms.saturating_sub(LONGEST_INVOCATION_MS)),
                until_ms,
            }
        }
        COMPLETED => Entry::Completed {
            outcome: match text(attr::OUTCOME)? {
                PROCESSED => CompletedOutcome::Processed,
                DEAD_LETTERED => CompletedOutcome::DeadLettered,
                other => {
                    return Err(format!(
                        "item {id:?}: outcome {other:?} is neither {PROCESSED} nor {DEAD_LETTERED}"
                    ));
                }
            },
            until_ms: millis(attr::EXPIRES_AT_MS)?,
        },
        other => {
            return Err(format!(
                "item {id:?}: status {other:?} is neither {IN_PROGRESS} nor {COMPLETED}"
            ));
        }
    };
    Ok(entry)
}

/// The end of a conditional write that changes nothing when its condition fails (the item is not,
/// or no longer, ours to change): `Ok` then, as on success; otherwise its error for `action`.
fn unless_condition_failed<O, E>(
    written: Result<O, SdkError<E, HttpResponse>>,
    condition_failed: fn(&E) -> bool,
    action: &'static str,
) -> Result<(), StoreError>
where
    E: std::error::Error + 'static,
{
    match written {
        Ok(_) => Ok(()),
        Err(SdkError::ServiceError(service)) if condition_failed(service.err()) => Ok(()),
        Err(other) => Err(sdk_error(action, other)),
    }
}

fn sdk_error<E, R>(action: &'static str, error: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError::new(action, DisplayErrorContext(error))
}

/// `keys` without repeats, in first-seen order, and for each key of `keys` its index in that list.
fn distinct<'k>(keys: &[&'k str]) -> (Vec<&'k str>, Vec<usize>) {
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(keys.len());
    let mut unique = Vec::with_capacity(keys.len());
    let slots = keys
        .iter()
        .map(|key| {
            *index.entry(key).or_insert_with(|| {
                unique.push(*key);
                unique.len() - 1
            })
        })
        .collect();
    (unique, slots)
}

#[async_trait]
impl IdempotencyStore for DynamoDbStore {
    async fn completed(
        &self,
        keys: &[&str],
        now_ms: u64,
    ) -> Result<Vec<Option<CompletedOutcome>>, StoreError> {
        // BatchGetItem refuses a request that names a key twice: read each distinct key once.
        let (unique, _) = distinct(keys);
        let chunks = futures::future::try_join_all(
            unique
                .chunks(BATCH_GET_LIMIT)
                .map(|chunk| self.batch_get(chunk)),
        )
        .await?;
        let mut items: HashMap<String, Item> = HashMap::with_capacity(unique.len());
        for chunk in chunks {
            items.extend(chunk);
        }
        keys.iter()
            .map(|key| match items.get(*key) {
                None => Ok(None),
                Some(item) => decode(item)
                    .map(|entry| entry.completed(now_ms))
                    .map_err(|e| StoreError::new("reading completed keys", e)),
            })
            .collect()
    }

    async fn try_claim(
        &self,
        key: &str,
        now_ms: u64,
        lock_until_ms: u64,
    ) -> Result<Claim, StoreError> {
        self.claim_one(key, now_ms, lock_until_ms, &random_token())
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
        // A transaction refuses two actions on one item, and a key claims once.
        let (unique, slots) = distinct(keys);
        let token = random_token();
        let claims = match self.claims {
            ClaimMode::Transaction => {
                self.claim_by_transactions(&unique, now_ms, lock_until_ms, &token)
                    .await?
            }
            ClaimMode::ConcurrentPuts { concurrency } => {
                self.claim_by_puts(&unique, now_ms, lock_until_ms, &token, concurrency)
                    .await?
            }
        };
        // A key named again answers as a second claim would: locked by the first when it holds.
        let mut answered = HashSet::with_capacity(unique.len());
        Ok(slots
            .into_iter()
            .map(|slot| match claims[slot] {
                claim if answered.insert(slot) => claim,
                claim if claim.holds() => Claim::Locked {
                    until_ms: lock_until_ms,
                },
                claim => claim,
            })
            .collect())
    }

    async fn complete(
        &self,
        key: &str,
        outcome: CompletedOutcome,
        keep_until_ms: u64,
    ) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(completed_item(key, outcome, keep_until_ms)))
            .send()
            .await
            .map_err(|e| sdk_error("completing a key", e))?;
        Ok(())
    }

    async fn complete_many(
        &self,
        done: &[(&str, CompletedOutcome)],
        keep_until_ms: u64,
    ) -> Result<(), StoreError> {
        // BatchWriteItem refuses two puts of one key in a request: the last outcome of a key wins,
        // as it would one completion after another.
        let keys: Vec<&str> = done.iter().map(|(key, _)| *key).collect();
        let (unique, slots) = distinct(&keys);
        let mut outcomes = vec![CompletedOutcome::Processed; unique.len()];
        for (slot, (_, outcome)) in slots.into_iter().zip(done) {
            outcomes[slot] = *outcome;
        }
        let unique: Vec<(&str, CompletedOutcome)> = unique.into_iter().zip(outcomes).collect();
        futures::future::try_join_all(
            unique
                .chunks(BATCH_WRITE_LIMIT)
                .map(|chunk| self.batch_complete(chunk, keep_until_ms)),
        )
        .await?;
        Ok(())
    }

    async fn abandon(&self, key: &str, lock_until_ms: u64, now_ms: u64) -> Result<(), StoreError> {
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key)))
            .update_expression("SET #lock_until_ms = :now, #expires_at_ms = :now")
            .condition_expression("#status = :in_progress AND #lock_until_ms = :lock_until")
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_names("#lock_until_ms", attr::LOCK_UNTIL_MS)
            .expression_attribute_names("#expires_at_ms", attr::EXPIRES_AT_MS)
            .expression_attribute_values(":in_progress", AttributeValue::S(IN_PROGRESS.into()))
            .expression_attribute_values(":lock_until", number(lock_until_ms))
            .expression_attribute_values(":now", number(now_ms))
            .send()
            .await;
        // Completed, claimed again by someone else, or gone: not ours to abandon.
        unless_condition_failed(
            updated,
            |e| matches!(e, UpdateItemError::ConditionalCheckFailedException(_)),
            "abandoning a claim",
        )
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key)))
            .condition_expression("#status = :in_progress")
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_values(":in_progress", AttributeValue::S(IN_PROGRESS.into()))
            .send()
            .await;
        // Completed (by us or another invocation) or already gone: nothing to release.
        unless_condition_failed(
            deleted,
            |e| matches!(e, DeleteItemError::ConditionalCheckFailedException(_)),
            "releasing a key",
        )
    }

    async fn release_many(&self, keys: &[&str]) -> Result<(), StoreError> {
        let (unique, _) = distinct(keys);
        // Every release runs to its end; the first error is the answer.
        let released: Vec<Result<(), StoreError>> = futures::stream::iter(
            unique
                .into_iter()
                .map(|key| self.release(key))
                .collect::<Vec<_>>(),
        )
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
        released.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use aws_credential_types::Credentials;
    use aws_sdk_dynamodb::config::{BehaviorVersion, Region};

    use super::*;

    /// The value of the environment variable `name`; a panic that names it and says how to set it
    /// (`how`) when it is unset or empty. The integration tests' `tools/tests/common/servers.rs` has the
    /// same function.
    #[track_caller]
    fn required_env(name: &str, how: &str) -> String {
        match std::env::var(name) {
            Ok(value) if !value.trim().is_empty() => value,
            _ => panic!("{name} is not set: {how}"),
        }
    }

    /// moto's endpoint. The tests that need it are `#[ignore = "needs moto ..."]`: a plain
    /// `cargo test` reports them as ignored; asked for (`-- --include-ignored`), they fail without it.
    #[track_caller]
    fn moto_endpoint() -> String {
        required_env(
            "KAFKA_ESM_MOTO_ENDPOINT",
            "start moto with `bash infra/local-stack.sh start && eval \"$(bash infra/local-stack.sh env)\"`",
        )
    }

    fn client(endpoint: &str) -> Client {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "static-test"))
            .endpoint_url(endpoint)
            .build();
        Client::from_conf(config)
    }

    /// A client whose SDK retries a failed attempt (3 attempts, 1 ms backoff).
    fn retrying_client(endpoint: &str) -> Client {
        let config = client(endpoint)
            .config()
            .to_builder()
            .retry_config(
                aws_sdk_dynamodb::config::retry::RetryConfig::standard()
                    .with_max_attempts(3)
                    .with_initial_backoff(Duration::from_millis(1)),
            )
            .build();
        Client::from_conf(config)
    }

    /// A store over a new table with a name no other test uses.
    async fn fresh_store(endpoint: &str, test: &str) -> DynamoDbStore {
        let table = format!(
            "kafka-esm-{test}-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        );
        let store = DynamoDbStore::new(client(endpoint), table);
        store.create_table().await.unwrap();
        store
    }

    #[test]
    fn decodes_items_and_names_what_is_wrong() {
        let item = |pairs: &[(&str, AttributeValue)]| -> HashMap<String, AttributeValue> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        };
        let s = |v: &str| AttributeValue::S(v.into());
        let n = |v: &str| AttributeValue::N(v.into());
        assert_eq!(
            decode(&item(&[
                ("id", s("k")),
                ("status", s("IN_PROGRESS")),
                ("lock_until_ms", n("5"))
            ])),
            Ok(Entry::InProgress {
                since_ms: 0,
                until_ms: 5
            })
        );
        assert_eq!(
            decode(&item(&[
                ("id", s("k")),
                ("status", s("COMPLETED")),
                ("outcome", s("dead_lettered")),
                ("expires_at_ms", n("9"))
            ])),
            Ok(Entry::Completed {
                outcome: CompletedOutcome::DeadLettered,
                until_ms: 9
            })
        );
        let e = decode(&item(&[("id", s("k")), ("status", s("COMPLETED"))])).unwrap_err();
        assert!(e.contains("outcome"), "{e}");
        let e = decode(&item(&[
            ("id", s("k")),
            ("status", s("IN_PROGRESS")),
            ("lock_until_ms", n("1.5")),
        ]))
        .unwrap_err();
        assert!(e.contains("lock_until_ms"), "{e}");
        let e = decode(&item(&[("id", s("k")), ("status", s("DONE"))])).unwrap_err();
        assert!(e.contains("DONE"), "{e}");
    }

    #[test]
    fn the_ttl_attribute_never_expires_before_the_exact_time() {
        assert_eq!(ttl_seconds(1_000), AttributeValue::N("1".into()));
        assert_eq!(ttl_seconds(1_001), AttributeValue::N("2".into()));
        assert_eq!(ttl_seconds(0), AttributeValue::N("0".into()));
        for n in 1..=10 {
            assert!(unprocessed_backoff(n) <= Duration::from_secs(1));
        }
    }

    /// A scripted DynamoDB endpoint on 127.0.0.1 for what moto never does (throttling, a failed
    /// condition without the old item): each request gets the next answer for its operation.
    mod scripted {
        use std::collections::{HashMap, VecDeque};
        use std::sync::{Arc, Mutex};

        use axum::Router;
        use axum::body::Bytes;
        use axum::extract::State;
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::IntoResponse;

        type Script = Arc<Mutex<HashMap<String, VecDeque<(u16, serde_json::Value)>>>>;

        /// An answer that fails the request's condition with the item it writes as the old item.
        pub const ECHO: serde_json::Value = serde_json::Value::Null;
        type Requests = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

        pub struct Endpoint {
            pub url: String,
            script: Script,
            pub requests: Requests,
        }

        impl Endpoint {
            pub async fn start() -> Self {
                let script: Script = Arc::default();
                let requests: Requests = Arc::default();
                let state = (script.clone(), requests.clone());
                let app = Router::new().fallback(
                    |State((script, requests)): State<(Script, Requests)>,
                     headers: HeaderMap,
                     body: Bytes| async move {
                        let target = headers
                            .get("x-amz-target")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.rsplit('.').next())
                            .unwrap_or("")
                            .to_owned();
                        let body: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or_default();
                        requests.lock().unwrap().push((target.clone(), body.clone()));
                        let answer = script
                            .lock()
                            .unwrap()
                            .get_mut(&target)
                            .and_then(VecDeque::pop_front);
                        let (status, mut json) = answer.unwrap_or((
                            400,
                            serde_json::json!({"__type": "ValidationException", "message": format!("unscripted {target}")}),
                        ));
                        // ECHO: the condition failed on the very item this request writes (as when
                        // an earlier attempt of it committed).
                        if json == ECHO {
                            json = serde_json::json!({
                                "__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
                                "message": "The conditional request failed",
                                "Item": body["Item"],
                            });
                        }
                        (
                            StatusCode::from_u16(status).unwrap(),
                            [("content-type", "application/x-amz-json-1.0")],
                            json.to_string(),
                        )
                            .into_response()
                    },
                );
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let url = format!("http://{}", listener.local_addr().unwrap());
                tokio::spawn(async move {
                    axum::serve(listener, app.with_state(state)).await.unwrap();
                });
                Self {
                    url,
                    script,
                    requests,
                }
            }

            pub fn answer(&self, operation: &str, status: u16, json: serde_json::Value) {
                self.script
                    .lock()
                    .unwrap()
                    .entry(operation.to_owned())
                    .or_default()
                    .push_back((status, json));
            }

            /// The bodies of the requests for `operation`, in the order they came.
            pub fn bodies(&self, operation: &str) -> Vec<serde_json::Value> {
                self.requests
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(op, _)| op == operation)
                    .map(|(_, body)| body.clone())
                    .collect()
            }

            pub fn operations(&self) -> Vec<String> {
                self.requests
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(op, _)| op.clone())
                    .collect()
            }
        }
    }

    /// A proxy in front of moto that forwards one request at a time. moto serves each request in a
    /// thread of its own, and its `TransactWriteItems` deep-copies the whole table to roll back:
    /// concurrent transactions on one table crash it (HTTP 500, "dictionary changed size during
    /// iteration") or erase each other's writes (a cancelled transaction restores its copy, taken
    /// before the other committed). DynamoDB applies each request atomically; behind this proxy
    /// moto does too, while the store's tasks still send their requests concurrently.
    mod one_at_a_time {
        use std::sync::Arc;

        use axum::Router;
        use axum::body::{Body, Bytes};
        use axum::extract::Request;
        use http_body_util::{BodyExt, Full};
        use hyper_util::client::legacy::Client;
        use hyper_util::rt::TokioExecutor;

        /// Starts the proxy to `upstream` (moto's endpoint) and returns its own endpoint.
        pub async fn start(upstream: &str) -> String {
            let upstream = upstream.trim_end_matches('/').to_owned();
            let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let turn = Arc::new(tokio::sync::Mutex::new(()));
            let app = Router::new().fallback(move |request: Request| {
                let (client, turn, upstream) = (client.clone(), turn.clone(), upstream.clone());
                async move {
                    let (mut parts, body) = request.into_parts();
                    let body = body.collect().await.unwrap().to_bytes();
                    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                    parts.uri = format!("{upstream}{path}").parse().unwrap();
                    let _turn = turn.lock().await;
                    let response = client
                        .request(hyper::Request::from_parts(parts, Full::new(body)))
                        .await
                        .unwrap();
                    let (parts, body) = response.into_parts();
                    let body = body.collect().await.unwrap().to_bytes();
                    axum::http::Response::from_parts(parts, Body::from(body))
                }
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            url
        }
    }

    #[tokio::test]
    async fn a_failed_claim_without_the_old_item_reads_it() {
        let endpoint = scripted::Endpoint::start().await;
        let failed = serde_json::json!({
            "__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
            "message": "The conditional request failed"
        });
        endpoint.answer("PutItem", 400, failed.clone());
        endpoint.answer(
            "GetItem",
            200,
            serde_json::json!({"Item": {"id": {"S": "k"}, "status": {"S": "COMPLETED"},
                "outcome": {"S": "dead_lettered"}, "expires_at_ms": {"N": "9000"}}}),
        );
        let store = DynamoDbStore::new(client(&endpoint.url), "t");
        assert_eq!(
            store.try_claim("k", 1_000, 2_000).await.unwrap(),
            Claim::Completed(CompletedOutcome::DeadLettered)
        );
        assert_eq!(endpoint.operations(), ["PutItem", "GetItem"]);
        let (_, put) = endpoint.requests.lock().unwrap()[0].clone();
        assert_eq!(put["ReturnValuesOnConditionCheckFailure"], "ALL_OLD");
        assert_eq!(put["ExpressionAttributeValues"][":now"]["N"], "1000");
        let (_, get) = endpoint.requests.lock().unwrap()[1].clone();
        assert_eq!(get["ConsistentRead"], true);

        // The item vanished between the two requests (released): the claim is tried again.
        endpoint.answer("PutItem", 400, failed.clone());
        endpoint.answer("GetItem", 200, serde_json::json!({}));
        endpoint.answer("PutItem", 200, serde_json::json!({}));
        assert_eq!(
            store.try_claim("k", 1_000, 2_000).await.unwrap(),
            Claim::Acquired
        );
        // A condition that keeps failing while nothing blocks is an error, not a loop.
        for _ in 0..CLAIM_ATTEMPTS {
            endpoint.answer("PutItem", 400, failed.clone());
            endpoint.answer("GetItem", 200, serde_json::json!({}));
        }
        let error = store.try_claim("k", 1_000, 2_000).await.unwrap_err();
        assert!(error.to_string().contains("kept failing"), "{error}");
    }

    #[tokio::test]
    async fn unprocessed_keys_are_read_again_and_bounded() {
        let endpoint = scripted::Endpoint::start().await;
        let store = DynamoDbStore::new(client(&endpoint.url), "t");
        let item = |id: &str| {
            serde_json::json!({"id": {"S": id}, "status": {"S": "COMPLETED"},
                "outcome": {"S": "processed"}, "expires_at_ms": {"N": "9000"}})
        };
        endpoint.answer(
            "BatchGetItem",
            200,
            serde_json::json!({"Responses": {"t": [item("a")]},
                "UnprocessedKeys": {"t": {"Keys": [{"id": {"S": "b"}}], "ConsistentRead": true}}}),
        );
        endpoint.answer(
            "BatchGetItem",
            200,
            serde_json::json!({"Responses": {"t": [item("b")]}, "UnprocessedKeys": {}}),
        );
        assert_eq!(
            store.completed(&["b", "a", "c", "a"], 1_000).await.unwrap(),
            vec![
                Some(CompletedOutcome::Processed),
                Some(CompletedOutcome::Processed),
                None,
                Some(CompletedOutcome::Processed)
            ]
        );
        let requests = endpoint.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 2);
        assert_eq!(
            requests[0].1["RequestItems"]["t"]["Keys"]
                .as_array()
                .unwrap()
                .len(),
            3,
            "each distinct key once"
        );
        assert_eq!(requests[0].1["RequestItems"]["t"]["ConsistentRead"], true);
        assert_eq!(
            requests[1].1["RequestItems"]["t"]["Keys"],
            serde_json::json!([{"id": {"S": "b"}}])
        );

        // Throttled for good: a bounded number of rounds, then an error naming the cause.
        for _ in 0..UNPROCESSED_ROUNDS {
            endpoint.answer(
                "BatchGetItem",
                200,
                serde_json::json!({"Responses": {"t": []},
                    "UnprocessedKeys": {"t": {"Keys": [{"id": {"S": "x"}}]}}}),
            );
        }
        let error = store.completed(&["x"], 1_000).await.unwrap_err();
        assert!(error.to_string().contains("unprocessed"), "{error}");
    }

    fn condition_failed(item: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
            "message": "The conditional request failed",
            "Item": item
        })
    }

    /// An in-progress item as another call wrote it.
    fn in_progress(
        id: &str,
        claimed_at_ms: u64,
        lock_until_ms: u64,
        token: &str,
    ) -> serde_json::Value {
        serde_json::json!({"id": {"S": id}, "status": {"S": "IN_PROGRESS"},
            "claimed_at_ms": {"N": claimed_at_ms.to_string()},
            "lock_until_ms": {"N": lock_until_ms.to_string()},
            "expires_at_ms": {"N": lock_until_ms.to_string()},
            "claim_token": {"S": token}})
    }

    fn completed_json(id: &str, until_ms: u64) -> serde_json::Value {
        serde_json::json!({"id": {"S": id}, "status": {"S": "COMPLETED"},
            "outcome": {"S": "processed"}, "expires_at_ms": {"N": until_ms.to_string()}})
    }

    #[tokio::test]
    async fn a_claim_sent_twice_by_the_sdk_knows_its_own_write() {
        let endpoint = scripted::Endpoint::start().await;
        let store = DynamoDbStore::new(retrying_client(&endpoint.url), "t");
        let lost = serde_json::json!({"__type": "InternalServerError", "message": "answer lost"});
        // The first attempt committed but its answer was lost; the SDK's second attempt fails the
        // condition on the claim the first one wrote: that claim is ours.
        endpoint.answer("PutItem", 500, lost.clone());
        endpoint.answer("PutItem", 400, scripted::ECHO);
        assert_eq!(
            store.try_claim("k", 1_000, 2_000).await.unwrap(),
            Claim::Acquired
        );
        let puts = endpoint.bodies("PutItem");
        assert_eq!(puts.len(), 2);
        assert_eq!(puts[0], puts[1], "the SDK sent the same request again");
        assert_eq!(puts[0]["ConditionExpression"], FRESH_CONDITION);
        assert_eq!(puts[0]["Item"]["claimed_at_ms"]["N"], "1000");
        assert_eq!(store.requests().put_item, 2, "every attempt counts");

        // A take-over sent twice answers as the take-over: resumed, with the interrupted times.
        endpoint.answer(
            "PutItem",
            400,
            condition_failed(in_progress("k", 500, 900, "a crashed call")),
        );
        endpoint.answer("PutItem", 500, lost.clone());
        endpoint.answer("PutItem", 400, scripted::ECHO);
        assert_eq!(
            store.try_claim("k", 1_000, 2_000).await.unwrap(),
            Claim::Resumed(Interrupted {
                claimed_at_ms: 500,
                lock_until_ms: 900
            })
        );
        let puts = endpoint.bodies("PutItem");
        let takeover = &puts[3];
        assert_eq!(takeover["ConditionExpression"], TAKEOVER_CONDITION);
        assert_eq!(
            takeover["ExpressionAttributeValues"][":seen_lock"]["N"],
            "900"
        );
        assert_eq!(
            takeover["ExpressionAttributeValues"][":seen_claimed"]["N"],
            "500"
        );
        assert_eq!(
            takeover["Item"]["claimed_at_ms"]["N"], "500",
            "the interrupted claim's time is kept in the same write"
        );
        assert_ne!(
            puts[0]["Item"]["claim_token"], takeover["Item"]["claim_token"],
            "a token per call"
        );

        // Another call's claim with the same lock and the same claim time (two partitions of one
        // invocation, one business id, one millisecond) is not ours.
        endpoint.answer(
            "PutItem",
            400,
            condition_failed(in_progress("k", 1_000, 2_000, "the other partition")),
        );
        assert_eq!(
            store.try_claim("k", 1_000, 2_000).await.unwrap(),
            Claim::Locked { until_ms: 2_000 }
        );
        // An item written before claim times were kept is taken over only while it still has none.
        endpoint.answer(
            "PutItem",
            400,
            condition_failed(
                serde_json::json!({"id": {"S": "k"}, "status": {"S": "IN_PROGRESS"},
                "lock_until_ms": {"N": "900000"}}),
            ),
        );
        endpoint.answer("PutItem", 200, serde_json::json!({}));
        assert_eq!(
            store.try_claim("k", 1_000_000, 1_100_000).await.unwrap(),
            Claim::Resumed(Interrupted {
                claimed_at_ms: 0,
                lock_until_ms: 900_000
            })
        );
        let untimed = endpoint.bodies("PutItem").pop().unwrap();
        assert_eq!(untimed["ConditionExpression"], TAKEOVER_UNTIMED_CONDITION);
    }

    #[tokio::test]
    async fn a_cancelled_transaction_decides_each_claim_from_its_reason() {
        let endpoint = scripted::Endpoint::start().await;
        let store = DynamoDbStore::new(client(&endpoint.url), "t");
        let now = 10_000;
        endpoint.answer(
            "TransactWriteItems",
            400,
            serde_json::json!({
                "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                "Message": "Transaction cancelled, please refer cancellation reasons for specific reasons",
                "CancellationReasons": [
                    {"Code": "None"},
                    {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed",
                     "Item": completed_json("done", now + 1)},
                    {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed",
                     "Item": in_progress("interrupted", 500, now, "a crashed call")},
                    {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item."},
                    {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"},
                    {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed",
                     "Item": in_progress("locked", now - 5, now + 5_000, "another invocation")},
                    {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed",
                     "Item": completed_json("expired", now)},
                ]
            }),
        );
        endpoint.answer("TransactWriteItems", 200, serde_json::json!({}));
        // The claim whose reason came without the old item is made alone.
        endpoint.answer("PutItem", 200, serde_json::json!({}));
        let keys = [
            "fresh",
            "done",
            "interrupted",
            "conflict",
            "no-item",
            "locked",
            "expired",
        ];
        assert_eq!(
            store.try_claim_many(&keys, now, now + 9_000).await.unwrap(),
            vec![
                Claim::Acquired,
                Claim::Completed(CompletedOutcome::Processed),
                Claim::Resumed(Interrupted {
                    claimed_at_ms: 500,
                    lock_until_ms: now
                }),
                Claim::Acquired,
                Claim::Acquired,
                Claim::Locked {
                    until_ms: now + 5_000
                },
                Claim::Acquired,
            ]
        );
        assert_eq!(
            endpoint.operations(),
            ["TransactWriteItems", "TransactWriteItems", "PutItem"]
        );
        let transactions = endpoint.bodies("TransactWriteItems");
        let puts = |t: &serde_json::Value| -> Vec<serde_json::Value> {
            t["TransactItems"]
                .as_array()
                .unwrap()
                .iter()
                .map(|action| action["Put"].clone())
                .collect()
        };
        let first = puts(&transactions[0]);
        assert_eq!(first.len(), 7);
        let token = first[0]["Item"]["claim_token"].clone();
        for put in &first {
            assert_eq!(put["ConditionExpression"], FRESH_CONDITION);
            assert_eq!(put["ReturnValuesOnConditionCheckFailure"], "ALL_OLD");
            assert_eq!(put["Item"]["claim_token"], token, "one token per call");
        }
        let second = puts(&transactions[1]);
        let ids: Vec<&str> = second
            .iter()
            .map(|put| put["Item"]["id"]["S"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["fresh", "interrupted", "conflict", "expired"]);
        assert_eq!(second[0]["ConditionExpression"], FRESH_CONDITION);
        assert_eq!(second[1]["ConditionExpression"], TAKEOVER_CONDITION);
        assert_eq!(
            second[1]["ExpressionAttributeValues"][":seen_lock"]["N"],
            now.to_string()
        );
        assert_eq!(
            second[1]["ExpressionAttributeValues"][":seen_claimed"]["N"],
            "500"
        );
        assert_eq!(second[1]["Item"]["claimed_at_ms"]["N"], "500");
        let tokens: Vec<&str> = transactions
            .iter()
            .map(|t| t["ClientRequestToken"].as_str().unwrap())
            .collect();
        assert!(
            tokens[0].len() == 32 && tokens[0] != tokens[1],
            "a request token per transaction: {tokens:?}"
        );
        let alone = &endpoint.bodies("PutItem")[0];
        assert_eq!(alone["Item"]["id"]["S"], "no-item");
        assert_eq!(alone["Item"]["claim_token"], token);
        assert_eq!(
            store.requests(),
            RequestCounts {
                transact_write_items: 2,
                put_item: 1,
                ..RequestCounts::default()
            }
        );
    }

    #[tokio::test]
    async fn a_key_named_twice_in_a_chunk_is_claimed_once() {
        let endpoint = scripted::Endpoint::start().await;
        let store = DynamoDbStore::new(client(&endpoint.url), "t");
        endpoint.answer("TransactWriteItems", 200, serde_json::json!({}));
        assert_eq!(
            store
                .try_claim_many(&["a", "b", "a"], 1_000, 2_000)
                .await
                .unwrap(),
            vec![
                Claim::Acquired,
                Claim::Acquired,
                Claim::Locked { until_ms: 2_000 }
            ]
        );
        let sent = endpoint.bodies("TransactWriteItems");
        assert_eq!(sent[0]["TransactItems"].as_array().unwrap().len(), 2);
        // Nothing to claim, complete or release: no request.
        assert_eq!(store.try_claim_many(&[], 1, 2).await.unwrap(), vec![]);
        store.complete_many(&[], 1).await.unwrap();
        store.release_many(&[]).await.unwrap();
        let counts = store.requests();
        assert_eq!(counts.total(), 1);
        assert_eq!(counts.since(&counts), RequestCounts::default());
        assert_eq!(
            counts.since(&RequestCounts::default()).transact_write_items,
            1
        );
    }

    #[tokio::test]
    async fn a_transaction_sent_twice_by_the_sdk_keeps_its_request_token() {
        let endpoint = scripted::Endpoint::start().await;
        let store = DynamoDbStore::new(retrying_client(&endpoint.url), "t");
        endpoint.answer(
            "TransactWriteItems",
            500,
            serde_json::json!({"__type": "InternalServerError", "message": "answer lost"}),
        );
        endpoint.answer("TransactWriteItems", 200, serde_json::json!({}));
        assert_eq!(
            store
                .try_claim_many(&["a", "b"], 1_000, 2_000)
                .await
                .unwrap(),
            vec![Claim::Acquired, Claim::Acquired]
        );
        let sent = endpoint.bodies("TransactWriteItems");
        assert_eq!(sent.len(), 2);
        assert_eq!(
            sent[0], sent[1],
            "same ClientRequestToken: DynamoDB applies a committed transaction once"
        );
    }

    #[tokio::test]
    async fn a_failed_batch_claim_takes_back_what_the_call_wrote() {
        let endpoint = scripted::Endpoint::start().await;
        let store = DynamoDbStore::new(client(&endpoint.url), "t");
        // 101 keys: two transactions, sent together; one commits, the other fails.
        endpoint.answer("TransactWriteItems", 200, serde_json::json!({}));
        endpoint.answer(
            "TransactWriteItems",
            400,
            serde_json::json!({"__type": "com.amazon.coral.validate#ValidationException", "message": "boom"}),
        );
        for _ in 0..101 {
            endpoint.answer("DeleteItem", 200, serde_json::json!({}));
        }
        let keys: Vec<String> = (0..101).map(|i| format!("k{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let error = store.try_claim_many(&refs, 1_000, 2_000).await.unwrap_err();
        assert_eq!(error.action, "claiming keys in a transaction");
        assert!(error.message.contains("boom"), "{error}");
        let token = endpoint.bodies("TransactWriteItems")[0]["TransactItems"][0]["Put"]["Item"]
            ["claim_token"]
            .clone();
        // Both transactions' keys: the failed one may have committed. Fresh claims are deleted, and
        // only while they are still this call's.
        let deletes = endpoint.bodies("DeleteItem");
        let mut deleted: Vec<String> = deletes
            .iter()
            .map(|d| d["Key"]["id"]["S"].as_str().unwrap().to_owned())
            .collect();
        deleted.sort();
        let mut expected = keys.clone();
        expected.sort();
        assert_eq!(deleted, expected);
        for delete in &deletes {
            assert_eq!(delete["ConditionExpression"], OURS_CONDITION);
            assert_eq!(delete["ExpressionAttributeValues"][":token"], token);
        }

        // Concurrent puts, one at a time: a fresh claim, a take-over, then an error.
        let store = store.with_claims(ClaimMode::ConcurrentPuts { concurrency: 1 });
        endpoint.answer("PutItem", 200, serde_json::json!({}));
        endpoint.answer(
            "PutItem",
            400,
            condition_failed(in_progress("b", 100, 500, "a crashed call")),
        );
        endpoint.answer("PutItem", 200, serde_json::json!({}));
        endpoint.answer(
            "PutItem",
            400,
            serde_json::json!({"__type": "com.amazon.coral.validate#ValidationException", "message": "bad c"}),
        );
        endpoint.answer("DeleteItem", 200, serde_json::json!({}));
        endpoint.answer("UpdateItem", 200, serde_json::json!({}));
        endpoint.answer("UpdateItem", 200, serde_json::json!({}));
        let error = store
            .try_claim_many(&["a", "b", "c"], 1_000, 2_000)
            .await
            .unwrap_err();
        assert!(error.message.contains("bad c"), "{error}");
        let deletes = endpoint.bodies("DeleteItem");
        assert_eq!(
            deletes[101]["Key"]["id"]["S"], "a",
            "the fresh claim is deleted"
        );
        let mut expired: Vec<String> = endpoint
            .bodies("UpdateItem")
            .iter()
            .map(|u| {
                assert_eq!(u["ConditionExpression"], OURS_CONDITION);
                assert_eq!(u["ExpressionAttributeValues"][":now"]["N"], "1000");
                u["Key"]["id"]["S"].as_str().unwrap().to_owned()
            })
            .collect();
        expired.sort();
        // The take-over keeps the interrupted attempt known; the failed put may have committed.
        assert_eq!(expired, ["b", "c"]);
    }

    #[tokio::test]
    async fn completions_go_25_a_request_and_unprocessed_ones_again() {
        let endpoint = scripted::Endpoint::start().await;
        let store = DynamoDbStore::new(client(&endpoint.url), "t");
        let left = serde_json::json!({"PutRequest": {"Item": {"id": {"S": "again"}}}});
        endpoint.answer(
            "BatchWriteItem",
            200,
            serde_json::json!({"UnprocessedItems": {"t": [left.clone()]}}),
        );
        for _ in 0..3 {
            endpoint.answer(
                "BatchWriteItem",
                200,
                serde_json::json!({"UnprocessedItems": {}}),
            );
        }
        // 52 keys, the first one twice: its last outcome counts.
        let keys: Vec<String> = (0..52).map(|i| format!("k{i}")).collect();
        let mut done: Vec<(&str, CompletedOutcome)> = keys
            .iter()
            .map(|k| (k.as_str(), CompletedOutcome::Processed))
            .collect();
        done.push(("k0", CompletedOutcome::DeadLettered));
        store.complete_many(&done, 86_400_000).await.unwrap();
        let requests = endpoint.bodies("BatchWriteItem");
        assert_eq!(requests.len(), 4);
        let puts: Vec<serde_json::Value> = requests[..3]
            .iter()
            .flat_map(|r| r["RequestItems"]["t"].as_array().unwrap().clone())
            .map(|w| w["PutRequest"]["Item"].clone())
            .collect();
        let mut sizes: Vec<usize> = requests[..3]
            .iter()
            .map(|r| r["RequestItems"]["t"].as_array().unwrap().len())
            .collect();
        sizes.sort();
        assert_eq!(sizes, [2, 25, 25]);
        let k0: Vec<&serde_json::Value> = puts.iter().filter(|p| p["id"]["S"] == "k0").collect();
        assert_eq!(k0.len(), 1, "one put per key");
        assert_eq!(
            *k0[0],
            serde_json::json!({"id": {"S": "k0"}, "status": {"S": "COMPLETED"},
                "outcome": {"S": "dead_lettered"}, "expires_at_ms": {"N": "86400000"},
                "expiration": {"N": "86400"}})
        );
        assert_eq!(requests[3]["RequestItems"]["t"], serde_json::json!([left]));
        assert_eq!(store.requests().batch_write_item, 4);

        // Throttled for good: a bounded number of rounds, then an error naming the cause.
        for _ in 0..UNPROCESSED_ROUNDS {
            endpoint.answer(
                "BatchWriteItem",
                200,
                serde_json::json!({"UnprocessedItems": {"t": [left.clone()]}}),
            );
        }
        let error = store
            .complete_many(&[("again", CompletedOutcome::Processed)], 86_400_000)
            .await
            .unwrap_err();
        assert_eq!(error.action, "completing keys");
        assert!(
            error
                .message
                .contains("1 of 1 completions stayed unprocessed"),
            "{error}"
        );
        assert_eq!(store.complete_many(&[], 1).await.unwrap(), ());
    }

    #[tokio::test]
    #[ignore = "needs moto (infra/local-stack.sh)"]
    async fn keeps_the_store_contract_with_concurrent_puts() {
        let endpoint = moto_endpoint();
        let store = fresh_store(&endpoint, "contract-puts")
            .await
            .with_claims(ClaimMode::ConcurrentPuts { concurrency: 4 });
        crate::testing::store_contract(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs moto (infra/local-stack.sh)"]
    async fn chunks_cost_the_documented_requests() {
        let endpoint = one_at_a_time::start(&moto_endpoint()).await;
        let store = fresh_store(&endpoint, "requests").await;
        let now = crate::retry::now_ms();
        let lock = now + 60_000;
        // 250 keys in one call: three transactions, nothing else.
        let keys: Vec<String> = (0..250).map(|i| format!("many-{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let before = store.requests();
        let claims = store.try_claim_many(&refs, now, lock).await.unwrap();
        assert!(claims.iter().all(|c| *c == Claim::Acquired), "{claims:?}");
        assert_eq!(
            store.requests().since(&before),
            RequestCounts {
                transact_write_items: 3,
                ..RequestCounts::default()
            }
        );
        for key in ["many-0", "many-99", "many-100", "many-249"] {
            assert_eq!(
                store.try_claim(key, now, lock + 1).await.unwrap(),
                Claim::Locked { until_ms: lock },
                "{key} is held"
            );
        }
        // 60 completions in one call: three BatchWriteItem requests.
        let done: Vec<(&str, CompletedOutcome)> = refs[..60]
            .iter()
            .map(|k| (*k, CompletedOutcome::Processed))
            .collect();
        let before = store.requests();
        store.complete_many(&done, now + 3_600_000).await.unwrap();
        assert_eq!(
            store.requests().since(&before),
            RequestCounts {
                batch_write_item: 3,
                ..RequestCounts::default()
            }
        );
        let found = store.completed(&refs[..61], now).await.unwrap();
        assert!(
            found[..60]
                .iter()
                .all(|f| *f == Some(CompletedOutcome::Processed))
        );
        assert_eq!(found[60], None);

        // A chunk of 100 fresh records, as the processor runs it: six requests.
        let chunk: Vec<String> = (0..100).map(|i| format!("fresh-{i}")).collect();
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let before = store.requests();
        assert!(
            store
                .completed(&chunk, now)
                .await
                .unwrap()
                .iter()
                .all(Option::is_none)
        );
        let claims = store.try_claim_many(&chunk, now, lock).await.unwrap();
        assert!(claims.iter().all(|c| *c == Claim::Acquired));
        let done: Vec<(&str, CompletedOutcome)> = chunk
            .iter()
            .map(|k| (*k, CompletedOutcome::Processed))
            .collect();
        store.complete_many(&done, now + 3_600_000).await.unwrap();
        let spent = store.requests().since(&before);
        assert_eq!(
            spent,
            RequestCounts {
                batch_get_item: 1,
                transact_write_items: 1,
                batch_write_item: 4,
                ..RequestCounts::default()
            }
        );
        assert_eq!(spent.total(), 6);
        // The same chunk again: 100 duplicates, one request.
        let before = store.requests();
        assert!(
            store
                .completed(&chunk, now + 1)
                .await
                .unwrap()
                .iter()
                .all(Option::is_some)
        );
        assert_eq!(store.requests().since(&before).total(), 1);

        // Concurrent puts: a request per key.
        let puts = store
            .clone()
            .with_claims(ClaimMode::ConcurrentPuts { concurrency: 100 });
        let chunk: Vec<String> = (0..100).map(|i| format!("put-{i}")).collect();
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let before = puts.requests();
        let claims = puts.try_claim_many(&chunk, now, lock).await.unwrap();
        assert!(claims.iter().all(|c| *c == Claim::Acquired));
        assert_eq!(
            puts.requests().since(&before),
            RequestCounts {
                put_item: 100,
                ..RequestCounts::default()
            }
        );
        // Releases: a delete per key.
        let before = puts.requests();
        puts.release_many(&chunk).await.unwrap();
        assert_eq!(puts.requests().since(&before).delete_item, 100);
        assert!(
            store.requests().other >= 2,
            "creating the table counts as other"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs moto (infra/local-stack.sh)"]
    async fn concurrent_chunk_claims_of_the_same_keys_acquire_each_once() {
        let endpoint = one_at_a_time::start(&moto_endpoint()).await;
        let base = fresh_store(&endpoint, "chunk-race").await;
        let now = crate::retry::now_ms();
        let keys: Arc<Vec<String>> = Arc::new((0..150).map(|i| format!("race-{i}")).collect());
        for (round, modes) in [
            [ClaimMode::Transaction, ClaimMode::Transaction],
            [
                ClaimMode::Transaction,
                ClaimMode::ConcurrentPuts { concurrency: 16 },
            ],
        ]
        .into_iter()
        .enumerate()
        {
            let tasks: Vec<_> = modes
                .into_iter()
                .enumerate()
                .map(|(task, mode)| {
                    let store = base.clone().with_claims(mode);
                    let keys = keys.clone();
                    let lock = now + 60_000 * (round as u64 + 1) + task as u64;
                    tokio::spawn(async move {
                        let refs: Vec<String> =
                            keys.iter().map(|k| format!("{k}-{round}")).collect();
                        let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
                        (lock, store.try_claim_many(&refs, now, lock).await.unwrap())
                    })
                })
                .collect();
            let mut results = Vec::new();
            for task in tasks {
                results.push(task.await.unwrap());
            }
            for i in 0..keys.len() {
                let answers: Vec<(u64, Claim)> = results
                    .iter()
                    .map(|(lock, claims)| (*lock, claims[i]))
                    .collect();
                let winners: Vec<u64> = answers
                    .iter()
                    .filter(|(_, c)| *c == Claim::Acquired)
                    .map(|(lock, _)| *lock)
                    .collect();
                assert_eq!(winners.len(), 1, "round {round}, key {i}: {answers:?}");
                for (_, claim) in &answers {
                    assert!(
                        *claim == Claim::Acquired
                            || *claim
                                == Claim::Locked {
                                    until_ms: winners[0]
                                },
                        "round {round}, key {i}: {answers:?}"
                    );
                }
            }
        }
    }

    #[tokio::test]
    #[ignore = "needs moto (infra/local-stack.sh)"]
    async fn keeps_the_store_contract() {
        let endpoint = moto_endpoint();
        let store = fresh_store(&endpoint, "contract").await;
        crate::testing::store_contract(&store).await;
    }

    #[tokio::test]
    #[ignore = "needs moto (infra/local-stack.sh)"]
    async fn writes_the_documented_item() {
        let endpoint = moto_endpoint();
        let store = fresh_store(&endpoint, "item").await;
        assert_eq!(
            store.try_claim("k", 1_000, 2_500).await.unwrap(),
            Claim::Acquired
        );
        let item = store
            .client
            .get_item()
            .table_name(store.table())
            .set_key(Some(DynamoDbStore::key("k")))
            .send()
            .await
            .unwrap()
            .item
            .unwrap();
        assert_eq!(item["status"], AttributeValue::S("IN_PROGRESS".into()));
        assert_eq!(item["lock_until_ms"], AttributeValue::N("2500".into()));
        assert_eq!(item["claimed_at_ms"], AttributeValue::N("1000".into()));
        // Kept a day after the lock, so a retry learns the claim was interrupted.
        assert_eq!(item["expiration"], AttributeValue::N("86403".into()));
        store
            .complete("k", CompletedOutcome::DeadLettered, 86_400_000)
            .await
            .unwrap();
        let item = store
            .client
            .get_item()
            .table_name(store.table())
            .set_key(Some(DynamoDbStore::key("k")))
            .send()
            .await
            .unwrap()
            .item
            .unwrap();
        assert_eq!(item["status"], AttributeValue::S("COMPLETED".into()));
        assert_eq!(item["outcome"], AttributeValue::S("dead_lettered".into()));
        assert_eq!(item["expires_at_ms"], AttributeValue::N("86400000".into()));
        assert_eq!(item["expiration"], AttributeValue::N("86400".into()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs moto (infra/local-stack.sh)"]
    async fn concurrent_claims_of_one_key_acquire_exactly_once() {
        let endpoint = moto_endpoint();
        let store = Arc::new(fresh_store(&endpoint, "race").await);
        let now = crate::retry::now_ms();
        let tasks: Vec<_> = (0..20u64)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.try_claim("hot", now, now + 60_000 + i).await })
            })
            .collect();
        let mut acquired = 0;
        let mut locked_until = Vec::new();
        for task in tasks {
            match task.await.unwrap().unwrap() {
                Claim::Acquired => acquired += 1,
                Claim::Locked { until_ms } => locked_until.push(until_ms),
                other => panic!("nobody held or completed the key before, got {other:?}"),
            }
        }
        assert_eq!(acquired, 1, "exactly one claim wins");
        assert_eq!(locked_until.len(), 19);
        // Every loser sees the winner's lock, the same one.
        assert!(locked_until.windows(2).all(|w| w[0] == w[1]));
        assert!((now + 60_000..now + 60_020).contains(&locked_until[0]));
    }

    #[tokio::test]
    #[ignore = "needs moto (infra/local-stack.sh)"]
    async fn batch_reads_of_250_keys_keep_the_input_order_with_repeats() {
        let endpoint = moto_endpoint();
        let store = fresh_store(&endpoint, "batch").await;
        let now = 5_000_000;
        // Every third key completed (alternating outcomes), every fifth only claimed.
        for i in 0..220 {
            let key = format!("key-{i}");
            if i % 3 == 0 {
                let outcome = if i % 2 == 0 {
                    CompletedOutcome::Processed
                } else {
                    CompletedOutcome::DeadLettered
                };
                store.complete(&key, outcome, now + 60_000).await.unwrap();
            } else if i % 5 == 0 {
                store.try_claim(&key, now, now + 60_000).await.unwrap();
            }
        }
        // An expired completion does not count.
        store
            .complete("key-expired", CompletedOutcome::Processed, now - 1)
            .await
            .unwrap();
        let mut keys: Vec<String> = (0..220).map(|i| format!("key-{i}")).collect();
        keys.extend((0..20).map(|i| format!("key-{}", i * 7))); // repeats, across chunks
        keys.extend((0..9).map(|i| format!("never-{i}")));
        keys.push("key-expired".into());
        assert_eq!(keys.len(), 250);
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let found = store.completed(&refs, now).await.unwrap();
        let expected: Vec<Option<CompletedOutcome>> = keys
            .iter()
            .map(|k| {
                let i: usize = k.strip_prefix("key-")?.parse().ok()?;
                i.is_multiple_of(3).then_some(if i.is_multiple_of(2) {
                    CompletedOutcome::Processed
                } else {
                    CompletedOutcome::DeadLettered
                })
            })
            .collect();
        assert_eq!(found, expected);
        assert_eq!(store.completed(&[], now).await.unwrap(), vec![]);
    }

    #[tokio::test]
    #[ignore = "needs moto (infra/local-stack.sh)"]
    async fn releasing_a_key_completed_by_someone_else_keeps_it() {
        let endpoint = moto_endpoint();
        let store = fresh_store(&endpoint, "release").await;
        let now = 1_000;
        assert_eq!(
            store.try_claim("k", now, now + 100).await.unwrap(),
            Claim::Acquired
        );
        // Our lock expired; another invocation took the key over (as an interrupted attempt) and
        // completed it.
        assert_eq!(
            store.try_claim("k", now + 200, now + 300).await.unwrap(),
            Claim::Resumed(crate::idempotency::Interrupted {
                claimed_at_ms: now,
                lock_until_ms: now + 100
            })
        );
        store
            .complete("k", CompletedOutcome::Processed, now + 10_000)
            .await
            .unwrap();
        // The first invocation gives up and releases: the completion stays.
        store.release("k").await.unwrap();
        assert_eq!(
            store.completed(&["k"], now + 400).await.unwrap(),
            vec![Some(CompletedOutcome::Processed)]
        );
        assert_eq!(
            store.try_claim("k", now + 400, now + 500).await.unwrap(),
            Claim::Completed(CompletedOutcome::Processed)
        );
        store.release_many(&["k", "k"]).await.unwrap();
        assert_eq!(
            store.completed(&["k"], now + 400).await.unwrap(),
            vec![Some(CompletedOutcome::Processed)],
            "nor does a release of many"
        );
        // Releasing a key nobody holds is fine.
        store.release("never-claimed").await.unwrap();
        store
            .release_many(&["never-claimed", "nor-this"])
            .await
            .unwrap();
    }

    #[tokio::test]
    #[ignore = "needs moto (infra/local-stack.sh)"]
    async fn a_missing_table_is_a_store_error_that_says_so() {
        let endpoint = moto_endpoint();
        let store = DynamoDbStore::new(client(&endpoint), "kafka-esm-no-such-table");
        let error = store.try_claim("k", 1, 2).await.unwrap_err();
        assert_eq!(error.action, "claiming a key");
        assert!(
            error.to_string().contains("ResourceNotFound")
                || error.to_string().contains("not found"),
            "{error}"
        );
    }
}
