//! The AWS Glue Schema Registry: a schema version by its UUID, through `GetSchemaVersion`.
//!
//! A Glue-framed record (and the event source mapping's `schemaId` for a Glue registry) carries
//! the schema *version*'s id, a UUID unique in the account and region; `GetSchemaVersion` with
//! `SchemaVersionId` answers its `SchemaDefinition` and `DataFormat` (`AVRO`, `PROTOBUF`, `JSON`).
//! Glue schemas have no references. The function's role needs `glue:GetSchemaVersion` (the call
//! names no registry, and a statement scoped to the registry's ARN was reported not to match it:
//! awslabs/aws-glue-schema-registry#68, where `Resource: "*"` did); the
//! endpoint follows the AWS SDK's settings (`AWS_ENDPOINT_URL_GLUE` or `AWS_ENDPOINT_URL` point it
//! at a local server) in the registry's region.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_glue::error::{DisplayErrorContext, SdkError};
use aws_sdk_glue::operation::get_schema_version::GetSchemaVersionError;

use super::config::GlueConfig;
use crate::format::{Schema, SchemaError, SchemaId, SchemaKind, SchemaSource};

/// An AWS Glue Schema Registry as a [`SchemaSource`]: schemas by their schema version UUID. Put
/// it behind a [`SchemaCache`](crate::format::SchemaCache) so that each is fetched once.
#[derive(Debug, Clone)]
pub struct GlueRegistry {
    client: aws_sdk_glue::Client,
    name: String,
}

impl GlueRegistry {
    /// A source over this Glue client. `registry` names it in messages (its ARN or name).
    pub fn new(client: aws_sdk_glue::Client, registry: impl Into<String>) -> Self {
        Self {
            client,
            name: registry.into(),
        }
    }

    /// The registry a configuration names: a client in its region, with the SDK's credentials
    /// and retries, each call bounded by the configured timeout.
    pub async fn from_config(config: &GlueConfig) -> Self {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .operation_timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(3)))
            .build();
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(config.region.clone()))
            .timeout_config(timeouts)
            .load()
            .await;
        Self::new(aws_sdk_glue::Client::new(&sdk), &config.registry_arn)
    }

    async fn fetch(&self, id: &SchemaId, version: &str) -> Result<Schema, SchemaError> {
        let unavailable = |message| SchemaError::Unavailable { id: *id, message };
        let output = match self
            .client
            .get_schema_version()
            .schema_version_id(version)
            .send()
            .await
        {
            Ok(output) => output,
            Err(error) => return Err(self.failure(id, error)),
        };
        let Some(text) = output.schema_definition() else {
            // A version still being registered has no definition yet.
            return Err(unavailable(format!(
                "{} has no definition for it yet (status {})",
                self.name(),
                output.status().map_or("unknown", |s| s.as_str())
            )));
        };
        let kind = match output.data_format() {
            Some(format) => SchemaKind::from_data_format(format.as_str()).ok_or_else(|| {
                SchemaError::Invalid {
                    id: *id,
                    message: format!(
                        "its DataFormat {:?} is none of AVRO, PROTOBUF, JSON",
                        format.as_str()
                    ),
                }
            })?,
            None => {
                return Err(SchemaError::Invalid {
                    id: *id,
                    message: format!("{} gave it no DataFormat", self.name()),
                });
            }
        };
        Ok(Schema::new(kind, text))
    }

    /// `EntityNotFoundException` is an unknown schema (poison); anything else (throttling, a
    /// service or network failure, a timeout, missing permissions) is transient.
    fn failure<R>(&self, id: &SchemaId, error: SdkError<GetSchemaVersionError, R>) -> SchemaError
    where
        R: std::fmt::Debug,
    {
        if let SdkError::ServiceError(service) = &error {
            match service.err() {
                GetSchemaVersionError::EntityNotFoundException(_) => {
                    return SchemaError::NotFound {
                        id: *id,
                        source_name: self.name(),
                    };
                }
                GetSchemaVersionError::AccessDeniedException(e) => {
                    return SchemaError::Unavailable {
                        id: *id,
                        message: format!(
                            "{} denied GetSchemaVersion ({}): the function's role needs glue:GetSchemaVersion (asked by SchemaVersionId, which names no registry: a statement scoped to the registry's ARN may not match; see awslabs/aws-glue-schema-registry#68)",
                            self.name(),
                            e.message().unwrap_or("access denied")
                        ),
                    };
                }
                _ => {}
            }
        }
        SchemaError::Unavailable {
            id: *id,
            message: format!(
                "{} did not answer GetSchemaVersion: {}",
                self.name(),
                DisplayErrorContext(&error)
            ),
        }
    }
}

#[async_trait]
impl SchemaSource for GlueRegistry {
    async fn schema(&self, id: &SchemaId) -> Result<Schema, SchemaError> {
        match id {
            SchemaId::Glue(uuid) => self.fetch(id, &uuid.hyphenated().to_string()).await,
            SchemaId::Confluent(_) => Err(SchemaError::NotFound {
                id: *id,
                source_name: format!(
                    "{} (its ids are schema version UUIDs; this is a Confluent schema id)",
                    self.name()
                ),
            }),
        }
    }

    fn name(&self) -> String {
        format!("the AWS Glue schema registry {}", self.name)
    }
}

#[cfg(test)]
mod tests;
