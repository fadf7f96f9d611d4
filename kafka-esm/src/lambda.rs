//! The Lambda entry point: one call turns a [`RecordHandler`] into a function the Kafka event source
//! mapping invokes.
//!
//! [`run`] reads the generic configuration from the environment ([`ConsumerConfig`]: store, dead
//! letters, partial batch responses, retries, Kafka, logging; `KAFKA_BOOTSTRAP_SERVERS` required),
//! installs the logs, checks that one dead-letter publish fits in the function's timeout, opens the
//! idempotency store, creates one Kafka producer for dead letters, builds the [`Consumer`] and serves
//! the Lambda Runtime API with it until the container stops.
//!
//! ```no_run
//! use async_trait::async_trait;
//! use kafka_esm::{DeserializeError, HandlerError, InvocationInfo, KafkaRecord, RecordHandler};
//!
//! struct Orders;
//!
//! #[async_trait]
//! impl RecordHandler for Orders {
//!     type Event = serde_json::Value;
//!
//!     fn deserialize(&self, record: &KafkaRecord) -> Result<Self::Event, DeserializeError> {
//!         serde_json::from_slice(record.value.as_deref().unwrap_or_default())
//!             .map_err(|e| DeserializeError::new(e.to_string()))
//!     }
//!
//!     async fn handle(
//!         &self,
//!         _: &KafkaRecord,
//!         event: &Self::Event,
//!         _: &InvocationInfo,
//!     ) -> Result<(), HandlerError> {
//!         match event.get("id") {
//!             Some(_) => Ok(()),
//!             None => Err(HandlerError::Permanent("no id".into())),
//!         }
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), kafka_esm::lambda::Error> {
//!     kafka_esm::lambda::run(Orders).await
//! }
//! ```
//!
//! A [`Builder`] covers what the environment cannot say: a store or a dead-letter sink of your own
//! ([`Builder::store`], [`Builder::dead_letters`]), settings of your own read with the generic ones
//! so that every problem is reported at once ([`Builder::from_env_with`]), and a handler built from
//! the parts, to publish through the same producer as the dead letters ([`Builder::run_with`]): one
//! producer per container, not two.
//!
//! Each step can run without AWS, so tests call them one by one: [`Builder::from_lookup_with`] reads
//! a map instead of the environment, [`Builder::build_with`] opens the store and creates the producer
//! (librdkafka connects when it first sends, so no broker is needed until a record is
//! dead-lettered), and [`Lambda::invoke`] answers one event. Only [`Lambda::serve`] talks to the
//! Runtime API.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lambda_runtime::{Context, Diagnostic, LambdaEvent, service_fn};
use serde_json::value::RawValue;

use crate::config::{ConfigError, ConsumerConfig};
use crate::consumer::Consumer;
use crate::env::EnvReader;
use crate::format::SchemaCache;
use crate::handler::{InvocationInfo, RecordHandler};
use crate::idempotency::{IdempotencyStore, StoreError};
use crate::kafka::KafkaSetupError;
use crate::observability;
use crate::processor::{Processor, check_time_budget};
use crate::registry::RegistryError;
use crate::response::KafkaBatchResponse;
use crate::retry::Deadline;
use crate::sink::{KafkaSink, MessageSink};

/// The variables the Lambda runtime reads to serve the Runtime API. Lambda sets them; a program run
/// without them would panic inside `lambda_runtime`, so they are checked first.
const RUNTIME_VARIABLES: [&str; 4] = [
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
];

/// Runs `handler` as the Lambda function: reads the configuration from the environment
/// ([`Builder::from_env`]), builds the consumer and serves the Lambda Runtime API until the container
/// stops. Returns only on an error: a start-up problem, or the Runtime API failing.
pub async fn run<H: RecordHandler>(handler: H) -> Result<(), Error> {
    Builder::from_env()?.run(handler).await
}

/// Why the function cannot start or stopped serving. Each message says what failed and what to do.
///
/// Its `Debug` is its message, so that `main` returning `Result<(), Error>` prints it readably.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is not usable: every problem, one line each.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The idempotency store could not be opened.
    #[error(
        "cannot open the idempotency store ({}: {}); check IDEMPOTENCY_STORE and IDEMPOTENCY_LOCAL_PATH (on Lambda only /tmp is writable), or choose another store",
        .0.action,
        .0.message
    )]
    Store(#[source] StoreError),
    /// The Kafka producer for dead letters could not be set up (a secret could not be read, or
    /// librdkafka refused the settings).
    #[error(
        "cannot set up the Kafka producer for dead letters: {0}; check the KAFKA_* variables (and KAFKA_PROPERTIES)"
    )]
    Kafka(#[from] KafkaSetupError),
    /// The schema source `SCHEMA_REGISTRY_URL` names could not be set up (a secret, TLS material).
    #[error(
        "cannot set up the schema registry: {0}; check the SCHEMA_REGISTRY_* variables and the secrets they name"
    )]
    Schemas(#[from] RegistryError),
    /// Serving the Lambda Runtime API failed.
    #[error(
        "the Lambda Runtime API at AWS_LAMBDA_RUNTIME_API failed: {0}; on Lambda the container is replaced, locally check that the emulator (such as `cargo lambda watch`) is running at that address"
    )]
    Runtime(#[source] lambda_runtime::Error),
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What the function is built from, handed to the closure of [`Builder::run_with`] and
/// [`Builder::build_with`] so that a handler can share them.
#[derive(Clone)]
pub struct Parts {
    /// The configuration the consumer runs with.
    pub config: ConsumerConfig,
    /// The idempotency store: the one `IDEMPOTENCY_STORE` names, unless [`Builder::store`] gave one.
    pub store: Arc<dyn IdempotencyStore>,
    /// Where dead letters go: a [`KafkaSink`] on the `KAFKA_*` settings (one producer per container),
    /// unless [`Builder::dead_letters`] gave another sink. A handler that publishes clones it, so
    /// that its messages and the dead letters share the producer.
    pub sink: Arc<dyn MessageSink>,
    /// Where schema formats find the schemas records name: the source `SCHEMA_DIR` or
    /// `SCHEMA_REGISTRY_URL` names, opened once (its secrets fetched), behind one cache for the
    /// container; `None` when neither is set. Give it to a format with its `schemas` setter.
    pub schemas: Option<Arc<SchemaCache>>,
}

/// Builds the function from the environment and what only code can give. Start with
/// [`Builder::from_env`] (or [`Builder::from_env_with`] to read settings of your own), or with
/// [`Builder::new`] for a configuration made in code; end with [`Builder::run`] or
/// [`Builder::run_with`].
///
/// A handler that copies each record to another topic, named by a variable of its own, through the
/// producer the dead letters use:
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use async_trait::async_trait;
/// use kafka_esm::lambda::Builder;
/// use kafka_esm::{
///     DeserializeError, HandlerError, InvocationInfo, KafkaRecord, MessageSink, OutboundMessage,
///     RecordHandler,
/// };
///
/// struct Forward {
///     topic: String,
///     sink: Arc<dyn MessageSink>,
///     timeout: Duration,
/// }
///
/// #[async_trait]
/// impl RecordHandler for Forward {
///     type Event = Vec<u8>;
///
///     fn deserialize(&self, record: &KafkaRecord) -> Result<Vec<u8>, DeserializeError> {
///         record.value.clone().ok_or_else(|| DeserializeError::new("no value"))
///     }
///
///     async fn handle(
///         &self,
///         record: &KafkaRecord,
///         value: &Vec<u8>,
///         _: &InvocationInfo,
///     ) -> Result<(), HandlerError> {
///         let message = OutboundMessage {
///             topic: self.topic.clone(),
///             key: record.key.clone(),
///             value: Some(value.clone()),
///             headers: Vec::new(),
///         }
///         // The same id on every attempt: a resume finds the copy an interrupted attempt made.
///         .with_message_id(format!("{}-{}-{}", record.topic, record.partition, record.offset));
///         self.sink
///             .publish(message, self.timeout)
///             .await
///             .map(|_| ())
///             .map_err(HandlerError::transient)
///     }
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), kafka_esm::lambda::Error> {
///     // FORWARD_TOPIC's problems are reported with those of the generic variables.
///     let (builder, topic) = Builder::from_env_with(|r| {
///         r.text("FORWARD_TOPIC").unwrap_or_else(|| "orders.copy".into())
///     })?;
///     builder
///         .run_with(|parts| Forward {
///             topic,
///             sink: parts.sink.clone(),
///             timeout: parts.config.processor.publish_timeout,
///         })
///         .await
/// }
/// ```
pub struct Builder {
    config: ConsumerConfig,
    function_timeout: Option<Duration>,
    store: Option<Arc<dyn IdempotencyStore>>,
    dead_letters: Option<Arc<dyn MessageSink>>,
    schemas: Option<Arc<SchemaCache>>,
}

impl Builder {
    /// Reads the process environment, as [`run`] does: the generic configuration with
    /// `KAFKA_BOOTSTRAP_SERVERS` required, the function's timeout (`FUNCTION_TIMEOUT_SECONDS`, which
    /// the template sets) and the variables Lambda sets for the Runtime API. Every problem is
    /// reported at once in [`Error::Config`].
    pub fn from_env() -> Result<Self, Error> {
        Self::from_env_with(|_| ()).map(|(builder, ())| builder)
    }

    /// As [`Self::from_env`], and `read` reads the app's own settings through the same
    /// [`EnvReader`], so that their problems are reported with the generic ones. Returns the builder
    /// and what `read` returned.
    pub fn from_env_with<T>(
        read: impl FnOnce(&mut EnvReader<'_>) -> T,
    ) -> Result<(Self, T), Error> {
        Self::from_lookup_with(&|name| std::env::var(name).ok(), read)
    }

    /// As [`Self::from_env_with`], through `lookup` instead of the process environment (tests pass
    /// a map).
    ///
    /// The time budget (one dead-letter publish, `PUBLISH_TIMEOUT_MS`, must fit in the function's
    /// timeout less `SAFETY_MARGIN_MS`) is checked when `FUNCTION_TIMEOUT_SECONDS` is set and none
    /// of the three is itself invalid: a default standing in for a wrong value would only confuse.
    pub fn from_lookup_with<T>(
        lookup: &dyn Fn(&str) -> Option<String>,
        read: impl FnOnce(&mut EnvReader<'_>) -> T,
    ) -> Result<(Self, T), Error> {
        let mut r = EnvReader::new(lookup);
        let config = ConsumerConfig::read_requiring_kafka(&mut r);
        let app = read(&mut r);
        let function_timeout = read_function_timeout(&mut r);
        let budget_inputs_valid = !r
            .problems
            .iter()
            .any(|p| p.starts_with("PUBLISH_TIMEOUT_MS") || p.starts_with("SAFETY_MARGIN_MS"));
        if let (Some(timeout), true) = (function_timeout, budget_inputs_valid)
            && let Err(problem) = budget(&config, timeout)
        {
            r.problem(problem);
        }
        if let Some(problem) = runtime_problem(lookup) {
            r.problem(problem);
        }
        let builder = Self {
            function_timeout,
            ..Self::new(config)
        };
        Ok((ConfigError::from_reader(r, builder)?, app))
    }

    /// A builder on a configuration made in code (for instance [`ConsumerConfig::from_env`], which
    /// does not require Kafka, with [`Self::dead_letters`] giving a sink of another kind). Nothing
    /// else is read from the environment except what the Lambda runtime itself reads when
    /// [`Lambda::serve`] starts.
    pub fn new(config: ConsumerConfig) -> Self {
        Self {
            config,
            function_timeout: None,
            store: None,
            dead_letters: None,
            schemas: None,
        }
    }

    /// The configuration the function will run with.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// The function's timeout, to check at build that one dead-letter publish fits in it less the
    /// safety margin ([`Self::from_env`] reads it from `FUNCTION_TIMEOUT_SECONDS`).
    pub fn function_timeout(mut self, timeout: Duration) -> Self {
        self.function_timeout = Some(timeout);
        self
    }

    /// Uses `store` for idempotency instead of the one `IDEMPOTENCY_STORE` names (a Redis or
    /// Postgres store of your own, for instance).
    pub fn store(mut self, store: Arc<dyn IdempotencyStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Sends dead letters to `sink` instead of a Kafka producer on the `KAFKA_*` settings; no
    /// producer is created then.
    pub fn dead_letters(mut self, sink: Arc<dyn MessageSink>) -> Self {
        self.dead_letters = Some(sink);
        self
    }

    /// Uses `schemas` as the schema source instead of the one `SCHEMA_DIR` or `SCHEMA_REGISTRY_URL`
    /// names (a source of your own, or schemas compiled into the binary).
    pub fn schemas(mut self, schemas: Arc<SchemaCache>) -> Self {
        self.schemas = Some(schemas);
        self
    }

    /// Builds the function ([`Self::build_with`]) around `handler` and serves the Lambda Runtime API
    /// with it ([`Lambda::serve`]).
    pub async fn run<H: RecordHandler>(self, handler: H) -> Result<(), Error> {
        self.run_with(|_| handler).await
    }

    /// As [`Self::run`], with the handler made by `make` from the [`Parts`]: the configuration, the
    /// store and the dead-letter sink, to share them.
    pub async fn run_with<H: RecordHandler>(
        self,
        make: impl FnOnce(&Parts) -> H,
    ) -> Result<(), Error> {
        self.build_with(make).await?.serve().await
    }

    /// Builds the function without serving it: checks what depends on the builder (the time
    /// budget; a dead-letter sink or Kafka settings to make one), installs the logs (`LOG_FORMAT`,
    /// `RUST_LOG`), creates the Kafka producer (after fetching its secrets, once), opens the store,
    /// and makes the handler with `make`.
    pub async fn build_with<H: RecordHandler>(
        self,
        make: impl FnOnce(&Parts) -> H,
    ) -> Result<Lambda<H>, Error> {
        let Self {
            config,
            function_timeout,
            store,
            dead_letters,
            schemas,
        } = self;
        let mut problems = Vec::new();
        if let Some(timeout) = function_timeout
            && let Err(problem) = budget(&config, timeout)
        {
            problems.push(problem);
        }
        if dead_letters.is_none() && config.kafka.is_none() {
            problems.push("KAFKA_BOOTSTRAP_SERVERS is not set: the consumer publishes dead letters to Kafka; set it to the cluster's host:port list, or give the builder a sink of its own (Builder::dead_letters)".into());
        }
        if !problems.is_empty() {
            return Err(ConfigError { problems }.into());
        }
        observability::init(config.log_format);
        let sink: Arc<dyn MessageSink> = match (dead_letters, &config.kafka) {
            (Some(sink), _) => sink,
            (None, Some(kafka)) => {
                let kafka = kafka.clone().resolve_secrets().await?;
                Arc::new(KafkaSink::new(&kafka)?)
            }
            (None, None) => unreachable!("refused above"),
        };
        let store = match store {
            Some(store) => store,
            None => config.store.open().await.map_err(Error::Store)?,
        };
        let schemas = match (schemas, &config.schemas) {
            (Some(schemas), _) => Some(schemas),
            (None, Some(source)) => Some(source.open().await?),
            (None, None) => None,
        };
        let parts = Parts {
            config,
            store,
            sink,
            schemas,
        };
        let handler = make(&parts);
        Ok(Lambda::new(handler, parts))
    }
}

/// The function, built: a [`Consumer`] and what an invocation needs to know of the function.
pub struct Lambda<H> {
    consumer: Consumer<H>,
    function_name: String,
    safety_margin: Duration,
}

impl<H: RecordHandler> Lambda<H> {
    /// The function for `handler` over `parts`, with nothing read or opened: its processor uses the
    /// parts' store, sink and settings, and answers with partial batch responses when the
    /// configuration says so (`REPORT_BATCH_ITEM_FAILURES`).
    pub fn new(handler: H, parts: Parts) -> Self {
        let Parts {
            config,
            store,
            sink,
            schemas: _,
        } = parts;
        let processor = Processor::new(handler, store, sink, config.processor);
        Self {
            consumer: Consumer::new(processor, config.partial_batch_response),
            function_name: config.function_name,
            safety_margin: config.safety_margin,
        }
    }

    /// The consumer, to reach its processor and handler.
    pub fn consumer(&self) -> &Consumer<H> {
        &self.consumer
    }

    /// Answers one invocation: the ESM event `payload` under the Lambda `context` (its request id,
    /// and its deadline less `SAFETY_MARGIN_MS` as the time budget). `Ok` is the batch response the
    /// function returns; `Err` the error Lambda reports, after which the ESM retries the batch.
    pub async fn invoke(
        &self,
        payload: &str,
        context: &Context,
    ) -> Result<KafkaBatchResponse, Diagnostic> {
        let invocation = InvocationInfo::new(
            context.request_id.clone(),
            self.function_name.as_str(),
            Deadline::from_epoch_ms(context.deadline, self.safety_margin),
        );
        self.consumer
            .invoke(payload, &invocation)
            .await
            .result
            .map_err(Diagnostic::from)
    }

    /// Serves the Lambda Runtime API (at `AWS_LAMBDA_RUNTIME_API`), one invocation after another,
    /// until the container stops. Refuses to start, with [`Error::Config`], when a variable the
    /// Lambda runtime needs is missing.
    pub async fn serve(self) -> Result<(), Error> {
        if let Some(problem) = runtime_problem(&|name| std::env::var(name).ok()) {
            return Err(ConfigError {
                problems: vec![problem],
            }
            .into());
        }
        let lambda = &self;
        lambda_runtime::run(service_fn(
            move |event: LambdaEvent<Box<RawValue>>| async move {
                lambda.invoke(event.payload.get(), &event.context).await
            },
        ))
        .await
        .map_err(Error::Runtime)
    }
}

/// `FUNCTION_TIMEOUT_SECONDS`: the function's timeout, which Lambda does not tell a function (the
/// template passes its `ConsumerTimeout`). Unset: no check.
fn read_function_timeout(r: &mut EnvReader<'_>) -> Option<Duration> {
    let value = r.text("FUNCTION_TIMEOUT_SECONDS")?;
    match value.parse::<u64>() {
        Ok(seconds @ 1..=900) => Some(Duration::from_secs(seconds)),
        _ => {
            r.problem(format!(
                "FUNCTION_TIMEOUT_SECONDS={value:?} is not valid: expected the function's timeout, a whole number of seconds from 1 to 900"
            ));
            None
        }
    }
}

/// One dead-letter publish must fit in the function's timeout less the safety margin.
fn budget(config: &ConsumerConfig, function_timeout: Duration) -> Result<(), String> {
    check_time_budget(
        function_timeout,
        config.safety_margin,
        config.processor.publish_timeout,
    )
}

/// What is missing for the Lambda runtime, if anything, in one line.
fn runtime_problem(lookup: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let missing: Vec<&str> = RUNTIME_VARIABLES
        .into_iter()
        .filter(|name| lookup(name).is_none())
        .collect();
    if !missing.is_empty() {
        let (them, are) = match missing.len() {
            1 => ("it", "is"),
            _ => ("them", "are"),
        };
        return Some(format!(
            "{} {are} not set: Lambda sets {them} for the Runtime API this program serves; run it as a Lambda function, or locally under an emulator that sets {them} (such as `cargo lambda watch`)",
            missing.join(", ")
        ));
    }
    let memory = lookup("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").unwrap_or_default();
    memory.parse::<i32>().is_err().then(|| {
        format!(
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE={memory:?} is not valid: expected the function's memory in MB, a whole number (Lambda sets it)"
        )
    })
}
