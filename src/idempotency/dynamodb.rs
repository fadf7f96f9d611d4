//! The production store: a DynamoDB table shared by every Lambda container (and by `esm redrive`).
//!
//! One item per key, partition key `id` (S):
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `status` | S | `IN_PROGRESS` or `COMPLETED` |
//! | `outcome` | S | `processed` or `dead_lettered` (completed keys) |
//! | `lock_until_ms` | N | when an in-progress claim expires, epoch ms |
//! | `claimed_at_ms` | N | when the in-progress claim was made, epoch ms |
//! | `expires_at_ms` | N | when the item stops counting, epoch ms (the lock, or the completed window) |
//! | `expiration` | N | the table's TTL attribute, epoch **seconds**: the completed window's end; for an in-progress claim a day after its lock, so an interrupted claim is still known when it is retried |
//!
//! DynamoDB deletes expired items lazily (often hours later), so every decision compares the exact
//! `expires_at_ms` / `lock_until_ms` with the caller's clock and never relies on TTL having run.
//!
//! A claim is one conditional `PutItem`; when the condition fails, the old item comes back with the
//! error (`ReturnValuesOnConditionCheckFailure=ALL_OLD`) and says whether the key is completed or
//! locked without a second read. An item is free at `now` when its time is `<= now`, exactly as the
//! other stores decide ([`super::Entry::blocks`]). A claim that succeeds returns the item it
//! replaced (`ReturnValues=ALL_OLD`): an in-progress one is an interrupted attempt
//! ([`super::Claim::Resumed`]).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, KeysAndAttributes,
    ReturnValue, ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TimeToLiveSpecification,
};

use super::{Claim, CompletedOutcome, Entry, IdempotencyStore, StoreError};

/// Attribute names.
mod attr {
    pub const ID: &str = "id";
    pub const STATUS: &str = "status";
    pub const OUTCOME: &str = "outcome";
    pub const LOCK_UNTIL_MS: &str = "lock_until_ms";
    pub const CLAIMED_AT_MS: &str = "claimed_at_ms";
    pub const EXPIRES_AT_MS: &str = "expires_at_ms";
    pub const EXPIRATION: &str = "expiration";
}

const IN_PROGRESS: &str = "IN_PROGRESS";
const COMPLETED: &str = "COMPLETED";
const PROCESSED: &str = "processed";
const DEAD_LETTERED: &str = "dead_lettered";

/// `BatchGetItem` takes at most 100 keys per request.
const BATCH_GET_LIMIT: usize = 100;
/// Rounds of `UnprocessedKeys` retries before the batch read gives up (the processor then claims
/// one key at a time, which is still correct).
const UNPROCESSED_ROUNDS: u32 = 8;
/// A claim whose condition fails although the old item does not block (it changed in between) is
/// tried again this many times in all.
const CLAIM_ATTEMPTS: u32 = 3;

/// The longest a Lambda invocation runs (15 minutes): how long before its lock's end an
/// interrupted claim without a recorded claim time may have been made.
const LONGEST_INVOCATION_MS: u64 = 15 * 60 * 1000;

/// How long after its lock an in-progress item stays in the table for TTL: a retry within this
/// window learns that the earlier attempt was interrupted.
const INTERRUPTED_KEPT_MS: u64 = 24 * 3600 * 1000;

const CLAIM_CONDITION: &str = "attribute_not_exists(#id) \
     OR (#status = :in_progress AND #lock_until_ms <= :now) \
     OR (#status = :completed AND #expires_at_ms <= :now)";

/// Keeps keys in a DynamoDB table (see the module documentation for its schema).
#[derive(Debug, Clone)]
pub struct DynamoDbStore {
    client: Client,
    table: String,
}

impl DynamoDbStore {
    /// Runs `update` (where `:value` is `value`) on the in-progress item of `key` locked until
    /// `lock_until_ms`, and on no one else's.
    async fn update_claim(
        &self,
        key: &str,
        lock_until_ms: u64,
        update: &str,
        value: u64,
    ) -> Result<(), SdkError<UpdateItemError, HttpResponse>> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key)))
            .update_expression(update)
            .condition_expression("#status = :in_progress AND #lock_until_ms = :lock_until")
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_names("#lock_until_ms", attr::LOCK_UNTIL_MS)
            .expression_attribute_values(":in_progress", AttributeValue::S(IN_PROGRESS.into()))
            .expression_attribute_values(":lock_until", number(lock_until_ms))
            .expression_attribute_values(":value", number(value));
        // DynamoDB refuses names that no expression uses.
        for (placeholder, name) in [
            ("#claimed_at_ms", attr::CLAIMED_AT_MS),
            ("#expires_at_ms", attr::EXPIRES_AT_MS),
        ] {
            if update.contains(placeholder) {
                request = request.expression_attribute_names(placeholder, name);
            }
        }
        request.send().await.map(|_| ())
    }

    /// A store over an existing client and table.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// A store whose client comes from the usual AWS sources (environment, profile, Lambda role;
    /// `AWS_ENDPOINT_URL` points it elsewhere, e.g. at a local moto server).
    pub async fn from_env(table: impl Into<String>) -> Self {
        let config = aws_config::load_from_env().await;
        Self::new(Client::new(&config), table)
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

    fn key(id: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([(attr::ID.to_owned(), AttributeValue::S(id.to_owned()))])
    }

    /// Reads one item (strongly consistent): the fallback when a failed claim returned no old item.
    async fn get_entry(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let action = "reading a key";
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(action, e))?;
        output
            .item
            .as_ref()
            .map(|item| decode(item).map_err(|e| StoreError::new(action, e)))
            .transpose()
    }

    /// One `BatchGetItem` of at most 100 distinct keys, retrying `UnprocessedKeys`.
    async fn batch_get(
        &self,
        keys: &[&str],
    ) -> Result<HashMap<String, HashMap<String, AttributeValue>>, StoreError> {
        let action = "reading completed keys";
        let mut found = HashMap::with_capacity(keys.len());
        let mut pending: Vec<HashMap<String, AttributeValue>> =
            keys.iter().map(|k| Self::key(k)).collect();
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
fn decode(item: &HashMap<String, AttributeValue>) -> Result<Entry, String> {
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

fn sdk_error<E, R>(action: &'static str, error: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError::new(action, DisplayErrorContext(error))
}

#[async_trait]
impl IdempotencyStore for DynamoDbStore {
    async fn completed(
        &self,
        keys: &[&str],
        now_ms: u64,
    ) -> Result<Vec<Option<CompletedOutcome>>, StoreError> {
        // BatchGetItem refuses a request that names a key twice: read each distinct key once.
        let mut distinct: Vec<&str> = Vec::with_capacity(keys.len());
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        for key in keys {
            if seen.insert(*key) {
                distinct.push(key);
            }
        }
        let chunks = futures::future::try_join_all(
            distinct
                .chunks(BATCH_GET_LIMIT)
                .map(|chunk| self.batch_get(chunk)),
        )
        .await?;
        let mut items: HashMap<String, HashMap<String, AttributeValue>> =
            HashMap::with_capacity(distinct.len());
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
        let action = "claiming a key";
        for _ in 0..CLAIM_ATTEMPTS {
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item(attr::ID, AttributeValue::S(key.to_owned()))
                .item(attr::STATUS, AttributeValue::S(IN_PROGRESS.into()))
                .item(attr::LOCK_UNTIL_MS, number(lock_until_ms))
                .item(attr::CLAIMED_AT_MS, number(now_ms))
                .item(attr::EXPIRES_AT_MS, number(lock_until_ms))
                .item(
                    attr::EXPIRATION,
                    ttl_seconds(lock_until_ms.saturating_add(INTERRUPTED_KEPT_MS)),
                )
                .condition_expression(CLAIM_CONDITION)
                .return_values(ReturnValue::AllOld)
                .expression_attribute_names("#id", attr::ID)
                .expression_attribute_names("#status", attr::STATUS)
                .expression_attribute_names("#lock_until_ms", attr::LOCK_UNTIL_MS)
                .expression_attribute_names("#expires_at_ms", attr::EXPIRES_AT_MS)
                .expression_attribute_values(":in_progress", AttributeValue::S(IN_PROGRESS.into()))
                .expression_attribute_values(":completed", AttributeValue::S(COMPLETED.into()))
                .expression_attribute_values(":now", number(now_ms))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            let old = match put {
                Ok(output) => {
                    let replaced = match output.attributes {
                        Some(item) if !item.is_empty() => {
                            Some(decode(&item).map_err(|e| StoreError::new(action, e))?)
                        }
                        _ => None,
                    };
                    // The condition held, so whatever was replaced did not block at `now_ms`.
                    let claim = Entry::claim(replaced, now_ms);
                    if let Claim::Resumed(interrupted) = claim {
                        // Keep the first interrupted attempt's claim time: a second write, only
                        // after an interruption (if it fails, lookups start at this claim).
                        let kept = self
                            .update_claim(
                                key,
                                lock_until_ms,
                                "SET #claimed_at_ms = :value",
                                interrupted.claimed_at_ms,
                            )
                            .await;
                        if let Err(error) = kept {
                            tracing::warn!(error = %DisplayErrorContext(error), "the interrupted claim's time was not kept");
                        }
                    }
                    return Ok(claim);
                }
                Err(SdkError::ServiceError(service)) => match service.into_err() {
                    PutItemError::ConditionalCheckFailedException(failed) => failed.item,
                    other => return Err(StoreError::new(action, DisplayErrorContext(other))),
                },
                Err(other) => return Err(sdk_error(action, other)),
            };
            let entry = match old {
                Some(item) => Some(decode(&item).map_err(|e| StoreError::new(action, e))?),
                // The service did not return the old item: read it.
                None => self.get_entry(key).await?,
            };
            if let Some(claim) = entry.and_then(|e| e.blocks(now_ms)) {
                return Ok(claim);
            }
            // The item changed between the failed write and the read (released, or expired by the
            // other writer's clock): try again.
        }
        Err(StoreError::new(
            action,
            format!(
                "the condition kept failing on key {key:?} although no entry blocks it ({CLAIM_ATTEMPTS} attempts)"
            ),
        ))
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
            .item(attr::ID, AttributeValue::S(key.to_owned()))
            .item(attr::STATUS, AttributeValue::S(COMPLETED.into()))
            .item(
                attr::OUTCOME,
                AttributeValue::S(outcome_text(outcome).into()),
            )
            .item(attr::EXPIRES_AT_MS, number(keep_until_ms))
            .item(attr::EXPIRATION, ttl_seconds(keep_until_ms))
            .send()
            .await
            .map_err(|e| sdk_error("completing a key", e))?;
        Ok(())
    }

    async fn abandon(&self, key: &str, lock_until_ms: u64, now_ms: u64) -> Result<(), StoreError> {
        let updated = self
            .update_claim(
                key,
                lock_until_ms,
                "SET #lock_until_ms = :value, #expires_at_ms = :value",
                now_ms,
            )
            .await;
        match updated {
            Ok(_) => Ok(()),
            // Completed, claimed again by someone else, or gone: not ours to abandon.
            Err(SdkError::ServiceError(service))
                if matches!(
                    service.err(),
                    UpdateItemError::ConditionalCheckFailedException(_)
                ) =>
            {
                Ok(())
            }
            Err(other) => Err(sdk_error("abandoning a claim", other)),
        }
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
        match deleted {
            Ok(_) => Ok(()),
            // Completed (by us or another invocation) or already gone: nothing to release.
            Err(SdkError::ServiceError(service))
                if matches!(
                    service.err(),
                    DeleteItemError::ConditionalCheckFailedException(_)
                ) =>
            {
                Ok(())
            }
            Err(other) => Err(sdk_error("releasing a key", other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use aws_credential_types::Credentials;
    use aws_sdk_dynamodb::config::{BehaviorVersion, Region};

    use super::*;

    /// The value of the environment variable `name`; a panic that names it and says how to set it
    /// (`how`) when it is unset or empty. The integration tests' `tests/common/servers.rs` has the
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
                        let body = serde_json::from_slice(&body).unwrap_or_default();
                        requests.lock().unwrap().push((target.clone(), body));
                        let answer = script
                            .lock()
                            .unwrap()
                            .get_mut(&target)
                            .and_then(VecDeque::pop_front);
                        let (status, json) = answer.unwrap_or((
                            400,
                            serde_json::json!({"__type": "ValidationException", "message": format!("unscripted {target}")}),
                        ));
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

    #[tokio::test]
    #[ignore = "needs moto (infra/local-stack.sh)"]
    async fn keeps_the_store_contract() {
        let endpoint = moto_endpoint();
        let store = fresh_store(&endpoint, "contract").await;
        super::super::contract::holds_for(&store).await;
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
        // Releasing a key nobody holds is fine.
        store.release("never-claimed").await.unwrap();
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
