//! The `esm` tools over any `kafka-esm` handler: [`replay`] event files through a consumer, [`poll`] a
//! real broker as a local event source mapping, [`redrive`] on-failure records, and [`verify`] a load
//! run of the reference app.

pub mod poll;
pub mod redrive;
pub mod replay;
pub mod verify;
