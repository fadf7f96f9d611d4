//! The consumer's generic configuration from environment variables (Lambda's convention), validated
//! at start-up: every problem is reported at once, one line each, naming the variable and what it
//! accepts.
//!
//! An app with settings of its own reads them through the same [`EnvReader`] after
//! [`ConsumerConfig::read`], so that its problems are reported with these ones
//! ([`ConfigError::from_reader`]).

use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

pub use crate::env::ConfigError;
use crate::env::EnvReader;
#[cfg(feature = "dynamodb")]
use crate::idempotency::DynamoDbStore;
#[cfg(feature = "local-store")]
use crate::idempotency::LocalStore;
use crate::idempotency::{ClaimMode, IdempotencyStore, MemoryStore, StoreError};
use crate::kafka::KafkaSettings;
pub use crate::observability::LogFormat;
use crate::processor::{ProcessorSettings, READ_AHEAD};
use crate::registry::SchemaSourceConfig;
use crate::retry::Backoff;

/// Which idempotency store to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// In memory, per process (per Lambda container).
    Memory,
    /// A redb file at this path.
    Local(PathBuf),
    /// A DynamoDB table shared by every container (`IDEMPOTENCY_TABLE`).
    DynamoDb {
        /// The table's name.
        table: String,
        /// How a chunk's keys are claimed (`IDEMPOTENCY_CLAIMS`).
        claims: ClaimMode,
    },
}

impl StoreChoice {
    /// Opens the store. A DynamoDB client takes its region and credentials from the usual AWS
    /// sources (the Lambda's role); see [`Self::open_with`] to pass an AWS configuration.
    pub async fn open(&self) -> Result<Arc<dyn IdempotencyStore>, StoreError> {
        match self {
            #[cfg(feature = "dynamodb")]
            StoreChoice::DynamoDb { table, claims } => Ok(Arc::new(
                DynamoDbStore::from_env(table.clone())
                    .await
                    .with_claims(*claims),
            )),
            _ => self.open_without_aws(),
        }
    }

    /// As [`Self::open`], with a DynamoDB client built from `aws` (a region or endpoint set by a tool).
    pub fn open_with(
        &self,
        aws: &aws_config::SdkConfig,
    ) -> Result<Arc<dyn IdempotencyStore>, StoreError> {
        match self {
            #[cfg(feature = "dynamodb")]
            StoreChoice::DynamoDb { table, claims } => Ok(Arc::new(
                DynamoDbStore::new(aws_sdk_dynamodb::Client::new(aws), table.clone())
                    .with_claims(*claims),
            )),
            _ => {
                let _ = aws;
                self.open_without_aws()
            }
        }
    }

    /// The stores that need no AWS client, and the error for a store this build leaves out.
    fn open_without_aws(&self) -> Result<Arc<dyn IdempotencyStore>, StoreError> {
        let missing = |feature: &str| {
            StoreError::new(
                "opening the store",
                format!("this build has no {self:?} store: enable kafka-esm's `{feature}` feature"),
            )
        };
        match self {
            StoreChoice::Memory => Ok(Arc::new(MemoryStore::new())),
            #[cfg(feature = "local-store")]
            StoreChoice::Local(path) => Ok(Arc::new(LocalStore::open(path)?)),
            #[cfg(not(feature = "local-store"))]
            StoreChoice::Local(_) => Err(missing("local-store")),
            StoreChoice::DynamoDb { .. } => Err(missing("dynamodb")),
        }
    }
}

/// Everything the consumer reads from its environment.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerConfig {
    /// `REPORT_BATCH_ITEM_FAILURES`: answer with partial batch responses.
    pub partial_batch_response: bool,
    /// Retries, dead-letter topic, idempotency window, publish timeout.
    pub processor: ProcessorSettings,
    /// `SAFETY_MARGIN_MS`: time kept in reserve before the Lambda deadline.
    pub safety_margin: Duration,
    /// `IDEMPOTENCY_STORE` (+ `IDEMPOTENCY_LOCAL_PATH` or `IDEMPOTENCY_TABLE`).
    pub store: StoreChoice,
    /// `KAFKA_BOOTSTRAP_SERVERS` (+ `KAFKA_CLIENT_ID`): where dead letters (and the handler's messages) go.
    pub kafka: Option<KafkaSettings>,
    /// `AWS_LAMBDA_FUNCTION_NAME`, for provenance.
    pub function_name: String,
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `SCHEMA_DIR` or `SCHEMA_REGISTRY_URL` (+ `SCHEMA_REGISTRY_*`): where a schema format finds
    /// the schemas records name (see [`crate::registry`]); `None` when neither is set.
    pub schemas: Option<SchemaSourceConfig>,
}

impl ConsumerConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Reads the process environment for a function that publishes to Kafka: as [`Self::from_env`],
    /// with `KAFKA_BOOTSTRAP_SERVERS` required and reported with every other problem.
    pub fn from_env_requiring_kafka() -> Result<Self, ConfigError> {
        Self::from_lookup_requiring_kafka(&|name| std::env::var(name).ok())
    }

    /// As [`Self::from_env_requiring_kafka`], through `lookup`.
    pub fn from_lookup_requiring_kafka(
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut r = EnvReader::new(lookup);
        let config = Self::read_requiring_kafka(&mut r);
        ConfigError::from_reader(r, config)
    }

    /// As [`Self::read`], with `KAFKA_BOOTSTRAP_SERVERS` required: a consumer that publishes dead
    /// letters needs a cluster.
    pub fn read_requiring_kafka(r: &mut EnvReader<'_>) -> Self {
        let config = Self::read(r);
        if r.text("KAFKA_BOOTSTRAP_SERVERS").is_none() {
            r.problem("KAFKA_BOOTSTRAP_SERVERS is not set: the consumer publishes dead letters (and the handler's messages) to Kafka; set it to the cluster's host:port list");
        }
        config
    }

    /// Reads variables through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut r = EnvReader::new(lookup);
        let config = Self::read(&mut r);
        ConfigError::from_reader(r, config)
    }

    /// Reads the variables through `r`, which keeps every problem found; where a value is wrong,
    /// its default stands in, so that the caller can go on reading its own variables.
    pub fn read(r: &mut EnvReader<'_>) -> Self {
        let on_lambda = r.text("AWS_LAMBDA_FUNCTION_NAME").is_some();
        let function_name = r
            .text("AWS_LAMBDA_FUNCTION_NAME")
            .unwrap_or_else(|| "kafka-esm-local".into());
        let partial_batch_response = r.flag("REPORT_BATCH_ITEM_FAILURES", false);
        let backoff = Backoff {
            base: Duration::from_millis(r.number("RETRY_BASE_MS", 100, 1, 60_000)),
            max: Duration::from_millis(r.number("RETRY_MAX_MS", 5_000, 1, 300_000)),
            max_attempts: r.number("RETRY_MAX_ATTEMPTS", 8, 1, 1_000) as u32,
        };
        if backoff.max < backoff.base {
            r.problems.push(format!(
                "RETRY_MAX_MS ({}) is below RETRY_BASE_MS ({}): the cap must be at least the first delay",
                backoff.max.as_millis(),
                backoff.base.as_millis()
            ));
        }
        let processor = ProcessorSettings {
            dead_letter_topic: r.text("DLQ_TOPIC"),
            backoff,
            idempotency_ttl: Duration::from_secs(r.number(
                "IDEMPOTENCY_TTL_SECONDS",
                86_400,
                60,
                365 * 86_400,
            )),
            publish_timeout: Duration::from_millis(r.number(
                "PUBLISH_TIMEOUT_MS",
                10_000,
                100,
                900_000,
            )),
            pipeline_publishes: r.flag("PIPELINE_PUBLISHES", true),
        };
        if let Some(problem) = processor
            .dead_letter_topic
            .as_deref()
            .and_then(|topic| topic_problem("DLQ_TOPIC", topic))
        {
            r.problem(problem);
        }
        let safety_margin = Duration::from_millis(r.number("SAFETY_MARGIN_MS", 2_000, 0, 600_000));
        let store = match r.text("IDEMPOTENCY_STORE").as_deref() {
            None | Some("memory") => StoreChoice::Memory,
            Some("local") => StoreChoice::Local(
                r.text("IDEMPOTENCY_LOCAL_PATH")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("/tmp/kafka-esm/idempotency.redb")),
            ),
            Some("dynamodb") => match r.text("IDEMPOTENCY_TABLE") {
                Some(table) if valid_table(&table) => StoreChoice::DynamoDb {
                    table,
                    claims: read_claim_mode(r),
                },
                Some(table) => {
                    r.problems.push(format!(
                        "IDEMPOTENCY_TABLE={table:?} is not a DynamoDB table name: use 3 to 255 letters, digits, `_`, `-` and `.`"
                    ));
                    StoreChoice::Memory
                }
                None => {
                    r.problems.push(
                        "IDEMPOTENCY_TABLE is not set: IDEMPOTENCY_STORE=dynamodb needs the table's name"
                            .into(),
                    );
                    StoreChoice::Memory
                }
            },
            Some(other) => {
                r.problems.push(format!(
                    "IDEMPOTENCY_STORE={other:?} is not valid: expected memory, local or dynamodb"
                ));
                StoreChoice::Memory
            }
        };
        let kafka = KafkaSettings::from_env(r, &function_name, processor.publish_timeout);
        let log_format = read_log_format(r, on_lambda);
        let schemas = SchemaSourceConfig::read(r);
        Self {
            partial_batch_response,
            processor,
            safety_margin,
            store,
            kafka,
            function_name,
            log_format,
            schemas,
        }
    }
}

/// `LOG_FORMAT`: `json` or `text`; unset, JSON on Lambda and text elsewhere.
pub fn read_log_format(r: &mut EnvReader<'_>, on_lambda: bool) -> LogFormat {
    match r
        .text("LOG_FORMAT")
        .map(|v| v.to_ascii_lowercase())
        .as_deref()
    {
        None if on_lambda => LogFormat::Json,
        None => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some("text") => LogFormat::Text,
        Some(other) => {
            r.problem(format!(
                "LOG_FORMAT={other:?} is not valid: expected json or text"
            ));
            LogFormat::Text
        }
    }
}

/// `IDEMPOTENCY_CLAIMS`: `transaction` (default: one `TransactWriteItems` per chunk of 100 keys,
/// 2 WCUs a key) or `puts` (concurrent conditional `PutItem`s, 1 WCU a key, one request each).
fn read_claim_mode(r: &mut EnvReader<'_>) -> ClaimMode {
    match r.text("IDEMPOTENCY_CLAIMS").as_deref() {
        None | Some("transaction") => ClaimMode::Transaction,
        Some("puts") => ClaimMode::ConcurrentPuts {
            concurrency: READ_AHEAD,
        },
        Some(other) => {
            r.problems.push(format!(
                "IDEMPOTENCY_CLAIMS={other:?} is not valid: expected transaction or puts"
            ));
            ClaimMode::Transaction
        }
    }
}

/// DynamoDB's rule for table names.
pub fn valid_table(name: &str) -> bool {
    (3..=255).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Kafka's rule for topic names: 1 to 249 of `A-Za-z0-9._-`, and not `.` or `..`.
pub fn valid_topic(name: &str) -> bool {
    topic_name_fault(name).is_none()
}

/// What breaks Kafka's rule for topic names, if anything.
fn topic_name_fault(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".into());
    }
    if name == "." || name == ".." {
        return Some(format!("`{name}` is reserved"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!("{c:?} is not allowed"));
    }
    let length = name.len();
    (length > 249).then(|| format!("it is {length} characters long"))
}

/// The start-up problem of variable `variable` when `value` is not a Kafka topic name.
pub fn topic_problem(variable: &str, value: &str) -> Option<String> {
    topic_name_fault(value).map(|fault| {
        format!(
            "{variable}={value:?} is not a Kafka topic name ({fault}): use 1 to 249 letters, digits, `.`, `_` and `-`, other than `.` and `..`"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<ConsumerConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ConsumerConfig::from_lookup(&move |k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert!(!c.partial_batch_response);
        assert_eq!(c.store, StoreChoice::Memory);
        assert_eq!(c.kafka, None);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.processor.dead_letter_topic_for("a.b-c"), "a.b-c.dlq");
    }

    #[test]
    fn reads_every_setting() {
        let c = config(&[
            ("AWS_LAMBDA_FUNCTION_NAME", "consumer-fn"),
            ("REPORT_BATCH_ITEM_FAILURES", "true"),
            ("DLQ_TOPIC", "all.dlq"),
            ("KAFKA_BOOTSTRAP_SERVERS", "b1:9092,b2:9092"),
            ("IDEMPOTENCY_STORE", "local"),
            ("IDEMPOTENCY_LOCAL_PATH", "/tmp/x.redb"),
            ("RETRY_MAX_ATTEMPTS", "3"),
        ])
        .unwrap();
        assert!(c.partial_batch_response);
        assert_eq!(c.processor.dead_letter_topic_for("x"), "all.dlq");
        assert_eq!(c.kafka.as_ref().unwrap().client_id, "consumer-fn");
        assert_eq!(c.store, StoreChoice::Local("/tmp/x.redb".into()));
        assert_eq!(c.processor.backoff.max_attempts, 3);
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn the_dynamodb_store_needs_a_valid_table_reported_with_the_other_problems() {
        let c = config(&[
            ("IDEMPOTENCY_STORE", "dynamodb"),
            ("IDEMPOTENCY_TABLE", "kafka-esm.idempotency_keys"),
        ])
        .unwrap();
        assert_eq!(
            c.store,
            StoreChoice::DynamoDb {
                table: "kafka-esm.idempotency_keys".into(),
                claims: ClaimMode::Transaction,
            }
        );
        let puts = config(&[
            ("IDEMPOTENCY_STORE", "dynamodb"),
            ("IDEMPOTENCY_TABLE", "keys"),
            ("IDEMPOTENCY_CLAIMS", "puts"),
        ])
        .unwrap();
        assert!(matches!(
            puts.store,
            StoreChoice::DynamoDb {
                claims: ClaimMode::ConcurrentPuts { concurrency: 100 },
                ..
            }
        ));
        let e = config(&[
            ("IDEMPOTENCY_STORE", "dynamodb"),
            ("IDEMPOTENCY_TABLE", "keys"),
            ("IDEMPOTENCY_CLAIMS", "batch"),
        ])
        .unwrap_err();
        assert!(
            e.to_string().contains(
                "IDEMPOTENCY_CLAIMS=\"batch\" is not valid: expected transaction or puts"
            ),
            "{e}"
        );
        let e = config(&[("IDEMPOTENCY_STORE", "dynamodb"), ("LOG_FORMAT", "xml")]).unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
        assert!(
            e.to_string().contains("IDEMPOTENCY_TABLE is not set"),
            "{e}"
        );
        let e = config(&[
            ("IDEMPOTENCY_STORE", "dynamodb"),
            ("IDEMPOTENCY_TABLE", "no spaces"),
        ])
        .unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert!(e.to_string().contains("not a DynamoDB table name"), "{e}");
        assert!(!valid_table("ab"));
        assert!(!valid_table(&"a".repeat(256)));
    }

    #[test]
    fn a_function_that_publishes_requires_kafka_with_the_other_problems() {
        let lookup = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let e = ConsumerConfig::from_lookup_requiring_kafka(&lookup(&[("LOG_FORMAT", "xml")]))
            .unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
        assert!(e.to_string().contains("KAFKA_BOOTSTRAP_SERVERS is not set"));
        let e = ConsumerConfig::from_lookup_requiring_kafka(&lookup(&[])).unwrap_err();
        assert_eq!(e.problems.len(), 1);
        assert!(
            ConsumerConfig::from_lookup_requiring_kafka(&lookup(&[(
                "KAFKA_BOOTSTRAP_SERVERS",
                "b:9092"
            )]))
            .is_ok()
        );
    }

    #[test]
    fn a_topic_name_problem_says_what_is_wrong() {
        let long = "d".repeat(250);
        for (value, fault) in [
            (".", "(`.` is reserved)"),
            ("..", "(`..` is reserved)"),
            ("dead letters", "(' ' is not allowed)"),
            ("a/b", "('/' is not allowed)"),
            ("dlq€", "('€' is not allowed)"),
            (long.as_str(), "(it is 250 characters long)"),
        ] {
            let e = config(&[("DLQ_TOPIC", value)]).unwrap_err();
            assert_eq!(e.problems.len(), 1, "{e}");
            assert_eq!(
                e.problems[0],
                format!(
                    "DLQ_TOPIC={value:?} is not a Kafka topic name {fault}: use 1 to 249 letters, digits, `.`, `_` and `-`, other than `.` and `..`"
                )
            );
        }
        for value in ["d".repeat(249), "...".into(), "a.b_c-D9".into()] {
            let c = config(&[("DLQ_TOPIC", &value)]).unwrap();
            assert_eq!(c.processor.dead_letter_topic_for("src"), value);
        }
        // Blank means unset, as for every other variable: the default `<topic>.dlq`.
        let c = config(&[("DLQ_TOPIC", "  ")]).unwrap();
        assert_eq!(c.processor.dead_letter_topic_for("src"), "src.dlq");
    }

    #[test]
    fn a_configuration_error_never_shows_a_secret_property() {
        for properties in [
            "sasl.password:hunter2",
            "sasl.password=x;hunter2",
            "ssl.key.pem=-----BEGIN PRIVATE KEY-----hunter2;acks",
            "sasl.jaas.config=PlainLoginModule required password=\"hunter2\"",
        ] {
            let vars = [
                ("KAFKA_BOOTSTRAP_SERVERS", "b:9092"),
                ("KAFKA_PROPERTIES", properties),
            ];
            let e = config(&vars).unwrap_err();
            for shown in [e.to_string(), format!("{e:?}")] {
                assert!(shown.contains("KAFKA_PROPERTIES"), "{shown}");
                assert!(!shown.contains("hunter2"), "{shown}");
            }
        }
        let c = config(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "b:9092"),
            (
                "KAFKA_PROPERTIES",
                "sasl.oauthbearer.config=principal=hunter2;ssl.keystore.password=hunter2",
            ),
        ])
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn reports_every_problem_at_once() {
        let e = config(&[
            ("REPORT_BATCH_ITEM_FAILURES", "maybe"),
            ("RETRY_BASE_MS", "-5"),
            ("SAFETY_MARGIN_MS", "99999999"),
            ("DLQ_TOPIC", "bad topic"),
            ("IDEMPOTENCY_STORE", "redis"),
            ("LOG_FORMAT", "xml"),
        ])
        .unwrap_err();
        assert_eq!(e.problems.len(), 6, "{e}");
        let text = e.to_string();
        for name in [
            "REPORT_BATCH_ITEM_FAILURES",
            "RETRY_BASE_MS",
            "SAFETY_MARGIN_MS",
            "DLQ_TOPIC",
            "IDEMPOTENCY_STORE",
            "LOG_FORMAT",
        ] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
    }
}
