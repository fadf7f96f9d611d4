//! The tools as a command line over any handler: `replay`, `poll`, `redrive`, `lag` and `decode`, as the
//! `esm` binary has them for the reference app.
//!
//! A team's own binary gets them for its handler in a few lines:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use async_trait::async_trait;
//! # use kafka_esm::config::ConsumerConfig;
//! # use kafka_esm::handler::{DeserializeError, HandlerError, InvocationInfo, RecordHandler};
//! # use kafka_esm::record::KafkaRecord;
//! # use kafka_esm::sink::MessageSink;
//! # struct Orders { out: Arc<dyn MessageSink> }
//! # #[async_trait]
//! # impl RecordHandler for Orders {
//! #     type Event = ();
//! #     fn deserialize(&self, _: &KafkaRecord) -> Result<(), DeserializeError> { Ok(()) }
//! #     async fn handle(&self, _: &KafkaRecord, _: &(), _: &InvocationInfo) -> Result<(), HandlerError> { Ok(()) }
//! # }
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     // `orders-esm replay events/`, `orders-esm poll --topics orders`, `orders-esm redrive --file f.json`
//!     kafka_esm_tools::cli::run(|_: &ConsumerConfig, sink: Arc<dyn MessageSink>| {
//!         Ok::<_, String>(Orders { out: sink })
//!     })
//!     .await
//! }
//! ```
//!
//! A binary with commands of its own embeds [`Command`] in its `clap` parser (`#[command(flatten)]`)
//! and calls [`run_command`].

use std::process::ExitCode;

use clap::Parser;

use crate::decode::DecodeArgs;
use crate::handler::HandlerFactory;
use crate::poll::cli::{LagArgs, PollArgs};
use crate::redrive::cli::RedriveArgs;
use crate::replay::cli::ReplayArgs;

/// The commands every handler gets.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Replay ESM event files (or directories of them) through the consumer, as Lambda would run it.
    ///
    /// The configuration is the Lambda's (its environment variables). The idempotency store is the
    /// one IDEMPOTENCY_STORE names, as for the Lambda: `memory` (this replay only), `local` (the redb
    /// file IDEMPOTENCY_LOCAL_PATH), or `dynamodb` (the table IDEMPOTENCY_TABLE, with the usual AWS
    /// settings: AWS_ENDPOINT_URL, AWS_REGION, credentials). When IDEMPOTENCY_STORE is unset, it is
    /// the file idempotency.redb in --state-dir, so a second replay finds the first's records as
    /// duplicates. The summary says which store was used.
    Replay(ReplayArgs),
    /// A local event source mapping: poll Kafka in a consumer group and invoke the consumer with
    /// ESM-identical batches (in process, or over `cargo lambda watch`), committing after success.
    Poll(PollArgs),
    /// Recover batches the ESM gave up on: read its on-failure destination (SQS, S3, a Kafka topic
    /// or a file), read the failed offsets back from Kafka when only metadata was kept, and re-run
    /// the records through the consumer (or copy them to the dead-letter topic).
    Redrive(RedriveArgs),
    /// Committed offset, watermarks and lag per partition of a consumer group (the ESM's OffsetLag).
    Lag(LagArgs),
    /// Print each record of ESM event files decoded (Avro, Protobuf, JSON, JSON Schema; Confluent
    /// or Glue framing; schemas from files, a directory or a registry), one JSON line per record.
    Decode(DecodeArgs),
}

/// The command line of [`run`]: one of the [`Command`]s.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    version,
    about = "Kafka event source mapping tools: replay, a local ESM (poll), redrive, lag, decode"
)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Runs `command` with the handler `factory` builds; the exit code says how it went (0: done,
/// 1: something failed or was given up or left, 2: it could not start). `lag` and `decode` need no handler.
pub async fn run_command<F: HandlerFactory>(command: Command, factory: F) -> ExitCode {
    match command {
        Command::Replay(args) => crate::replay::cli::run(args, factory).await,
        Command::Poll(args) => crate::poll::cli::run_poll(args, factory).await,
        Command::Redrive(args) => crate::redrive::cli::run(args, factory).await,
        Command::Lag(args) => crate::poll::cli::run_lag(args).await,
        Command::Decode(args) => crate::decode::run(args).await,
    }
}

/// Parses the process's arguments ([`Cli`]) and runs the command with the handler `factory`
/// builds: the whole `main` of a team's own tools binary (see the module documentation).
pub async fn run<F: HandlerFactory>(factory: F) -> ExitCode {
    run_command(Cli::parse().command, factory).await
}
