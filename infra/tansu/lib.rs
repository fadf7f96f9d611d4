// Empty: Cargo.toml here only pins the Tansu sources infra/broker.sh builds; cargo needs a target.
