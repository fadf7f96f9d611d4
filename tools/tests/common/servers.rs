//! The servers some integration tests need, and how to start each.
//!
//! A test that needs one is `#[ignore = "needs moto (infra/local-stack.sh)"]` (resp. `"needs a
//! broker (infra/broker.sh)"`, `"needs cargo-lambda (infra/cargo-lambda.sh)"`): a plain `cargo test`
//! reports it as ignored, never as passed. It runs only when asked for (`-- --include-ignored` or
//! `-- --ignored`, as `.ci/run` does where the servers run), and then a server that is not there
//! fails the test.

/// The value of the environment variable `name`; a panic that names it and says how to set it
/// (`how`) when it is unset or empty.
#[track_caller]
pub fn required_env(name: &str, how: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value,
        _ => panic!("{name} is not set: {how}"),
    }
}

/// moto's endpoint (DynamoDB, SQS, S3): `KAFKA_ESM_MOTO_ENDPOINT`.
#[track_caller]
pub fn moto() -> String {
    required_env(
        "KAFKA_ESM_MOTO_ENDPOINT",
        "start moto with `bash infra/local-stack.sh start && eval \"$(bash infra/local-stack.sh env)\"`",
    )
}

/// The Kafka broker (Tansu), host:port: `KAFKA_ESM_BROKER`.
#[track_caller]
pub fn broker() -> String {
    required_env(
        "KAFKA_ESM_BROKER",
        "start the broker with `bash infra/broker.sh start sqlite && eval \"$(bash infra/broker.sh env)\"`",
    )
}

/// The cargo-lambda binary: `KAFKA_ESM_CARGO_LAMBDA`.
#[track_caller]
pub fn cargo_lambda() -> String {
    required_env(
        "KAFKA_ESM_CARGO_LAMBDA",
        "install cargo-lambda with `bash infra/cargo-lambda.sh install && eval \"$(bash infra/cargo-lambda.sh env)\"`",
    )
}
