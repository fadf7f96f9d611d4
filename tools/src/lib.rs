//! The `esm` tools over any `kafka-esm` handler: [`replay`] event files through a consumer, [`poll`] a
//! real broker as a local event source mapping, [`redrive`] on-failure records, [`verify`] a load
//! run of the reference app, and [`decode`] event files' records as a handler sees them.
//!
//! The tools build the consumer themselves and ask a [`HandlerFactory`] for the handler, handing
//! it the sink they publish to; [`cli`] is the command line of `replay`, `poll`, `redrive` and `lag`
//! for any handler, in one call: `kafka_esm_tools::cli::run(factory).await`.
#![warn(missing_docs)]

pub mod cli;
pub mod decode;
pub mod handler;
pub mod poll;
pub mod redrive;
pub mod replay;
pub mod verify;

pub use handler::{HandlerFactory, read_config};
