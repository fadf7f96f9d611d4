//! The Glue source against moto's Glue API (`CreateRegistry`, `CreateSchema`,
//! `RegisterSchemaVersion`, `GetSchemaVersion`: moto implements them), and against a scripted
//! endpoint on 127.0.0.1 for the failures moto never answers (throttling, a server error, a
//! denied role).

use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_glue::config::{BehaviorVersion, Region};
use aws_sdk_glue::types::{Compatibility, DataFormat, RegistryId, SchemaId as GlueSchemaId};
use uuid::Uuid;

use super::*;
use crate::format::SchemaCache;

/// moto's endpoint. The tests that need it are `#[ignore = "needs moto ..."]`: a plain
/// `cargo test` reports them as ignored; asked for (`-- --include-ignored`), they fail without it.
#[track_caller]
fn moto_endpoint() -> String {
    match std::env::var("KAFKA_ESM_MOTO_ENDPOINT") {
        Ok(value) if !value.trim().is_empty() => value,
        _ => panic!(
            "KAFKA_ESM_MOTO_ENDPOINT is not set: start moto with `bash infra/local-stack.sh start && eval \"$(bash infra/local-stack.sh env)\"`"
        ),
    }
}

/// A Glue client for `endpoint` with static test credentials, one attempt per call.
fn client(endpoint: &str) -> aws_sdk_glue::Client {
    let config = aws_sdk_glue::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "static-test"))
        .endpoint_url(endpoint)
        .retry_config(aws_sdk_glue::config::retry::RetryConfig::standard().with_max_attempts(1))
        .timeout_config(
            aws_sdk_glue::config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(5))
                .build(),
        )
        .build();
    aws_sdk_glue::Client::from_conf(config)
}

/// A new registry with a name no other test uses; its ARN.
async fn fresh_registry(client: &aws_sdk_glue::Client, test: &str) -> (String, String) {
    let name = format!(
        "kafka-esm-{test}-{}-{:x}",
        std::process::id(),
        fastrand::u32(..)
    );
    let created = client
        .create_registry()
        .registry_name(&name)
        .send()
        .await
        .expect("CreateRegistry on moto");
    (name, created.registry_arn().unwrap_or_default().to_owned())
}

/// Creates a schema (its first version) and returns that version's id.
async fn create_schema(
    client: &aws_sdk_glue::Client,
    registry: &str,
    name: &str,
    format: DataFormat,
    definition: &str,
) -> Uuid {
    let created = client
        .create_schema()
        .registry_id(RegistryId::builder().registry_name(registry).build())
        .schema_name(name)
        .data_format(format)
        .compatibility(Compatibility::None)
        .schema_definition(definition)
        .send()
        .await
        .expect("CreateSchema on moto");
    Uuid::parse_str(created.schema_version_id().expect("a schema version id")).unwrap()
}

const AVRO_V1: &str = r#"{"type":"record","name":"Metric","namespace":"example","fields":[{"name":"name","type":"string"},{"name":"value","type":"double"}]}"#;
const AVRO_V2: &str = r#"{"type":"record","name":"Metric","namespace":"example","fields":[{"name":"name","type":"string"},{"name":"value","type":"double"},{"name":"unit","type":["null","string"],"default":null}]}"#;
const PROTO: &str = "syntax = \"proto3\";\npackage example;\nmessage Metric {\n  string name = 1;\n  double value = 2;\n  message Tag { string key = 1; string value = 2; }\n  repeated Tag tags = 3;\n}\n";
const JSON_SCHEMA: &str = r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","properties":{"name":{"type":"string"}},"required":["name"]}"#;

#[tokio::test]
#[ignore = "needs moto (infra/local-stack.sh)"]
async fn schema_versions_are_read_by_their_uuid_in_each_data_format() {
    let client = client(&moto_endpoint());
    let (registry, arn) = fresh_registry(&client, "formats").await;
    assert!(arn.ends_with(&format!(":registry/{registry}")), "{arn}");
    let avro = create_schema(&client, &registry, "metric-avro", DataFormat::Avro, AVRO_V1).await;
    let proto = create_schema(
        &client,
        &registry,
        "metric-proto",
        DataFormat::Protobuf,
        PROTO,
    )
    .await;
    let json = create_schema(
        &client,
        &registry,
        "metric-json",
        DataFormat::Json,
        JSON_SCHEMA,
    )
    .await;
    let avro_v2 = client
        .register_schema_version()
        .schema_id(
            GlueSchemaId::builder()
                .registry_name(&registry)
                .schema_name("metric-avro")
                .build(),
        )
        .schema_definition(AVRO_V2)
        .send()
        .await
        .expect("RegisterSchemaVersion on moto");
    let avro_v2 = Uuid::parse_str(avro_v2.schema_version_id().unwrap()).unwrap();
    assert_ne!(avro, avro_v2);

    let source = GlueRegistry::new(client, &arn);
    for (uuid, kind, text) in [
        (avro, SchemaKind::Avro, AVRO_V1),
        (avro_v2, SchemaKind::Avro, AVRO_V2),
        (proto, SchemaKind::Protobuf, PROTO),
        (json, SchemaKind::Json, JSON_SCHEMA),
    ] {
        let schema = source.schema(&SchemaId::Glue(uuid)).await.unwrap();
        assert_eq!(schema, Schema::new(kind, text), "{uuid}");
    }
    assert!(source.name().contains(&arn), "{}", source.name());
}

#[tokio::test]
#[ignore = "needs moto (infra/local-stack.sh)"]
async fn an_unknown_schema_version_is_poison_and_a_cache_keeps_what_it_fetched() {
    let client = client(&moto_endpoint());
    let (registry, arn) = fresh_registry(&client, "unknown").await;
    let avro = create_schema(&client, &registry, "m", DataFormat::Avro, AVRO_V1).await;
    let cache = SchemaCache::new(GlueRegistry::new(client.clone(), &arn));
    let unknown = SchemaId::Glue(Uuid::from_u128(fastrand::u128(..)));
    let error = cache.get(&unknown).await.unwrap_err();
    assert!(
        matches!(error, SchemaError::NotFound { .. }),
        "EntityNotFoundException is NotFound: {error}"
    );
    assert!(!error.is_transient());
    assert!(error.to_string().contains(&arn), "{error}");

    let id = SchemaId::Glue(avro);
    assert_eq!(cache.get(&id).await.unwrap().text, AVRO_V1);
    // Deleting the schema in the registry does not change what the container already has.
    client
        .delete_schema()
        .schema_id(
            GlueSchemaId::builder()
                .registry_name(&registry)
                .schema_name("m")
                .build(),
        )
        .send()
        .await
        .expect("DeleteSchema on moto");
    assert_eq!(cache.get(&id).await.unwrap().text, AVRO_V1);
    assert_eq!(cache.get_now(&id).unwrap().kind, SchemaKind::Avro);
}

#[tokio::test]
async fn a_confluent_id_is_not_in_a_glue_registry() {
    let source = GlueRegistry::new(client("http://127.0.0.1:9"), "r");
    let error = source.schema(&SchemaId::Confluent(1)).await.unwrap_err();
    assert!(matches!(error, SchemaError::NotFound { .. }), "{error}");
    assert!(error.to_string().contains("Confluent schema id"), "{error}");
}

#[tokio::test]
async fn an_unreachable_registry_is_transient() {
    // Nothing listens on a port taken and released at once.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let source = GlueRegistry::new(client(&format!("http://127.0.0.1:{port}")), "r");
    let error = source
        .schema(&SchemaId::Glue(Uuid::from_u128(fastrand::u128(..))))
        .await
        .unwrap_err();
    assert!(matches!(error, SchemaError::Unavailable { .. }), "{error}");
    assert!(error.is_transient());
}

/// A Glue endpoint on 127.0.0.1 that answers every request with `status` and `body` (the JSON
/// protocol's error shape `{"__type", "message"}`).
async fn scripted(status: u16, body: serde_json::Value) -> String {
    use axum::http::{StatusCode, header};
    let app = axum::Router::new().fallback(move || {
        let body = body.to_string();
        async move {
            (
                StatusCode::from_u16(status).unwrap(),
                [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
                body,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn throttling_server_errors_and_a_denied_role_are_transient_not_found_is_poison() {
    let error = |kind: &str, message: &str| serde_json::json!({"__type": kind, "message": message});
    let id = SchemaId::Glue(Uuid::from_u128(fastrand::u128(..)));
    for (status, body, transient, expected) in [
        (
            400,
            error("ThrottlingException", "Rate exceeded"),
            true,
            "Rate exceeded",
        ),
        (500, error("InternalServiceException", "boom"), true, "boom"),
        (503, serde_json::json!({}), true, "GetSchemaVersion"),
        (
            400,
            error("AccessDeniedException", "not authorized"),
            true,
            "the function's role needs glue:GetSchemaVersion",
        ),
        (
            400,
            error("EntityNotFoundException", "Schema version is not found"),
            false,
            "was not found",
        ),
    ] {
        let source = GlueRegistry::new(client(&scripted(status, body.clone()).await), "r");
        let e = source.schema(&id).await.unwrap_err();
        assert_eq!(e.is_transient(), transient, "{body}: {e}");
        assert!(
            e.to_string().contains(expected),
            "{expected:?} missing from {e}"
        );
    }
}
