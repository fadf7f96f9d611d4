//! The Confluent source against a stand-in registry on 127.0.0.1 that serves the documented REST
//! subset: `GET /schemas/ids/{id}` and `GET /subjects/{subject}/versions/{version}`, with the
//! registry's error bodies `{"error_code", "message"}` (40403 schema, 40401 subject, 40402 version
//! not found; 50001 a store failure). No Confluent-compatible registry installs on our machines
//! from the package registries alone, so this stand-in is what these tests run against; it serves
//! plain HTTP, or TLS with a private CA (`testdata/`, test-only keys) and optionally requires a
//! client certificate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode as AxumStatus, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::*;
use crate::format::SchemaCache;
use crate::registry::SchemaSourceConfig;

const CA: &str = include_str!("../testdata/ca.pem");
const OTHER_CA: &str = include_str!("../testdata/other-ca.pem");
const SERVER_CERT: &str = include_str!("../testdata/server.pem");
const SERVER_KEY: &str = include_str!("../testdata/server.key");
const CLIENT_CERT: &str = include_str!("../testdata/client.pem");
const CLIENT_KEY: &str = include_str!("../testdata/client.key");

/// What the stand-in saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    accept: Option<String>,
    authorization: Option<String>,
}

/// A forced answer: status, body, extra headers.
type Forced = (u16, String, Vec<(String, String)>);

/// The stand-in's state: what it holds, what it saw, and a forced answer for the failure tests.
#[derive(Default)]
struct Registry {
    /// The path prefix it is served under ("" or "/prefix").
    prefix: String,
    schemas: HashMap<u32, serde_json::Value>,
    versions: HashMap<(String, String), serde_json::Value>,
    seen: Mutex<Vec<Seen>>,
    forced: Mutex<Option<Forced>>,
    delay: Mutex<Option<Duration>>,
    /// Schemas registered through `POST /subjects/{subject}/versions`: (subject, body), the id is
    /// 1000 + the position.
    registered: Mutex<Vec<(String, serde_json::Value)>>,
}

impl Registry {
    fn with_schema(mut self, id: u32, body: serde_json::Value) -> Self {
        self.schemas.insert(id, body);
        self
    }

    fn with_version(mut self, subject: &str, version: u32, body: serde_json::Value) -> Self {
        self.versions
            .insert((subject.to_owned(), version.to_string()), body);
        self
    }

    /// Every later request gets this answer.
    fn force(&self, status: u16, body: &str, headers: &[(&str, &str)]) {
        *self.forced.lock().unwrap() = Some((
            status,
            body.to_owned(),
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn paths(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.path).collect()
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn registry_json(status: u16, body: serde_json::Value) -> Response {
    (
        AxumStatus::from_u16(status).unwrap(),
        [(
            header::CONTENT_TYPE,
            "application/vnd.schemaregistry.v1+json",
        )],
        body.to_string(),
    )
        .into_response()
}

async fn answer(
    State(registry): State<Arc<Registry>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    registry.seen.lock().unwrap().push(Seen {
        path: uri.path().to_owned(),
        accept: text(header::ACCEPT),
        authorization: text(header::AUTHORIZATION),
    });
    let delay = *registry.delay.lock().unwrap();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let forced = registry.forced.lock().unwrap().clone();
    if let Some((status, body, extra)) = forced {
        let mut response = (AxumStatus::from_u16(status).unwrap(), body).into_response();
        for (name, value) in extra {
            response.headers_mut().insert(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        return response;
    }
    let not_a_registry = || (AxumStatus::NOT_FOUND, "<html>Not Found</html>").into_response();
    let Some(path) = uri.path().strip_prefix(registry.prefix.as_str()) else {
        return not_a_registry();
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments[..] {
        ["schemas", "ids", id] => match id.parse().ok().and_then(|id| registry.schemas.get(&id)) {
            Some(body) => registry_json(200, body.clone()),
            None => registry_json(
                404,
                json!({"error_code": 40403, "message": format!("Schema {id} not found")}),
            ),
        },
        ["subjects", subject, "versions"] if method == Method::POST => {
            let subject = percent_decode(subject);
            let Ok(body) = serde_json::from_str::<serde_json::Value>(&body) else {
                return registry_json(
                    422,
                    json!({"error_code": 42201, "message": "Invalid schema"}),
                );
            };
            if headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                != Some("application/vnd.schemaregistry.v1+json")
            {
                return registry_json(
                    415,
                    json!({"error_code": 415, "message": "Unsupported Media Type"}),
                );
            }
            let mut registered = registry.registered.lock().unwrap();
            let at = match registered
                .iter()
                .position(|(s, b)| *s == subject && *b == body)
            {
                Some(at) => at,
                None => {
                    registered.push((subject, body));
                    registered.len() - 1
                }
            };
            registry_json(200, json!({"id": 1000 + at}))
        }
        ["subjects", subject, "versions", version] => {
            let subject = percent_decode(subject);
            let version = percent_decode(version);
            match registry.versions.get(&(subject.clone(), version.clone())) {
                Some(body) => registry_json(200, body.clone()),
                None if registry.versions.keys().any(|(s, _)| *s == subject) => registry_json(
                    404,
                    json!({"error_code": 40402, "message": format!("Version {version} not found.")}),
                ),
                None => registry_json(
                    404,
                    json!({"error_code": 40401, "message": format!("Subject '{subject}' not found.")}),
                ),
            }
        }
        _ => not_a_registry(),
    }
}

/// How the stand-in is served.
enum Serve {
    Http,
    Tls { require_client_certificate: bool },
}

/// Serves `registry` on 127.0.0.1; the base URL to give the client (with the registry's prefix).
async fn serve(registry: Arc<Registry>, how: Serve) -> String {
    let prefix = registry.prefix.clone();
    let app = Router::new().fallback(answer).with_state(registry);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    match how {
        Serve::Http => {
            tokio::spawn(async move { axum::serve(listener, app).await });
            format!("http://{address}{prefix}")
        }
        Serve::Tls {
            require_client_certificate,
        } => {
            let acceptor = tls_acceptor(require_client_certificate);
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    let acceptor = acceptor.clone();
                    let app = app.clone();
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service = hyper_util::service::TowerToHyperService::new(app);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                            .await;
                    });
                }
            });
            // The server certificate names 127.0.0.1 and localhost.
            format!("https://localhost:{}{prefix}", address.port())
        }
    }
}

fn tls_acceptor(require_client_certificate: bool) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = CertificateDer::pem_slice_iter(SERVER_CERT.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(SERVER_KEY.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if require_client_certificate {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(CA.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_single_cert(certs, key).unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

const AVRO: &str = r#"{"type":"record","name":"Metric","namespace":"example","fields":[{"name":"name","type":"string"},{"name":"value","type":"double"}]}"#;

fn client_certificate() -> ClientCertificatePem {
    ClientCertificatePem {
        certificate: Secret::new(CLIENT_CERT),
        key: Secret::new(CLIENT_KEY),
        key_password: None,
    }
}

#[tokio::test]
async fn a_producer_registers_its_schema_and_gets_the_same_id_again() {
    let registry = Arc::new(Registry::default());
    let url = serve(registry.clone(), Serve::Http).await;
    let client = ConfluentRegistry::builder(&url)
        .bearer_token(Secret::new("t0ken"))
        .build()
        .unwrap();
    let avsc = r#"{"type":"record","name":"M","fields":[{"name":"v","type":"double"}]}"#;
    let proto = "syntax = \"proto3\"; message M { double v = 1; }";
    let avro = client
        .register("metrics-value", SchemaKind::Avro, avsc)
        .await
        .unwrap();
    let protobuf = client
        .register("metrics-value", SchemaKind::Protobuf, proto)
        .await
        .unwrap();
    assert_eq!((avro, protobuf), (1000, 1001));
    assert_eq!(
        client
            .register("metrics-value", SchemaKind::Avro, avsc)
            .await
            .unwrap(),
        1000,
        "a schema the subject holds keeps its id"
    );
    let registered = registry.registered.lock().unwrap().clone();
    assert_eq!(
        registered[0].1,
        json!({"schema": avsc}),
        "Avro has no schemaType"
    );
    assert_eq!(
        registered[1].1,
        json!({"schema": proto, "schemaType": "PROTOBUF"})
    );
    let seen = registry.seen();
    assert_eq!(seen[0].path, "/subjects/metrics-value/versions");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer t0ken"));
    // A refusal says what failed.
    registry.force(401, r#"{"error_code":40101,"message":"Unauthorized"}"#, &[]);
    let error = client
        .register("metrics-value", SchemaKind::Avro, avsc)
        .await
        .unwrap_err();
    assert_eq!(error.subject, "metrics-value");
    assert!(error.message.contains("HTTP 401"), "{error}");
}

fn short(url: &str) -> ConfluentRegistry {
    ConfluentRegistry::builder(url)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test]
async fn an_avro_schema_without_schema_type_is_avro() {
    let registry = Arc::new(Registry::default().with_schema(1, json!({ "schema": AVRO })));
    let url = serve(registry.clone(), Serve::Http).await;
    let source = short(&url);
    let schema = source.schema(&SchemaId::Confluent(1)).await.unwrap();
    assert_eq!(schema, Schema::new(SchemaKind::Avro, AVRO));
    let seen = registry.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/schemas/ids/1");
    assert!(
        seen[0]
            .accept
            .as_deref()
            .unwrap()
            .starts_with("application/vnd.schemaregistry.v1+json"),
        "{seen:?}"
    );
    assert_eq!(seen[0].authorization, None);
    assert!(source.name().contains(&url), "{}", source.name());
}

const ORDER: &str = r#"syntax = "proto3";
package shop;
import "shop/money.proto";
import "acme tags/tag.proto";
message Order { shop.Money total = 1; repeated acme.Tag tags = 2; message Line { string sku = 1; } repeated Line lines = 3; }
"#;
const MONEY: &str = "syntax = \"proto3\";\npackage shop;\nimport \"shop/currency.proto\";\nmessage Money { int64 units = 1; shop.Currency currency = 2; }\n";
const CURRENCY: &str =
    "syntax = \"proto3\";\npackage shop;\nmessage Currency { string code = 1; }\n";
const TAG: &str = "syntax = \"proto3\";\npackage acme;\nimport \"shop/currency.proto\";\nmessage Tag { string key = 1; shop.Currency c = 2; }\n";

fn protobuf_registry() -> Registry {
    let currency =
        json!({"name": "shop/currency.proto", "subject": "shop/currency.proto", "version": 1});
    Registry::default()
        .with_schema(
            2,
            json!({
                "schemaType": "PROTOBUF",
                "schema": ORDER,
                "references": [
                    {"name": "shop/money.proto", "subject": "shop/money.proto", "version": 2},
                    {"name": "acme tags/tag.proto", "subject": ":.acme:tags value", "version": 1}
                ]
            }),
        )
        .with_version(
            "shop/money.proto",
            2,
            json!({"subject": "shop/money.proto", "version": 2, "id": 11, "schemaType": "PROTOBUF",
                   "schema": MONEY, "references": [currency]}),
        )
        .with_version(
            ":.acme:tags value",
            1,
            json!({"subject": ":.acme:tags value", "version": 1, "id": 12, "schemaType": "PROTOBUF",
                   "schema": TAG, "references": [currency]}),
        )
        .with_version(
            "shop/currency.proto",
            1,
            json!({"subject": "shop/currency.proto", "version": 1, "id": 10, "schemaType": "PROTOBUF",
                   "schema": CURRENCY}),
        )
}

#[tokio::test]
async fn protobuf_references_are_fetched_transitively_once_each_and_imports_come_first() {
    let registry = Arc::new(protobuf_registry());
    let url = serve(registry.clone(), Serve::Http).await;
    let schema = short(&url).schema(&SchemaId::Confluent(2)).await.unwrap();
    assert_eq!(schema.kind, SchemaKind::Protobuf);
    assert_eq!(schema.text, ORDER);
    let names: Vec<&str> = schema.references.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "shop/currency.proto",
            "shop/money.proto",
            "acme tags/tag.proto"
        ],
        "each import before the file that imports it, each once"
    );
    let texts: Vec<&str> = schema.references.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(texts, [CURRENCY, MONEY, TAG]);
    // Subjects are percent-encoded path segments; the shared import is fetched once.
    assert_eq!(
        registry.paths(),
        [
            "/schemas/ids/2",
            "/subjects/shop%2Fmoney.proto/versions/2",
            "/subjects/%3A.acme%3Atags%20value/versions/1",
            "/subjects/shop%2Fcurrency.proto/versions/1",
        ]
    );
}

#[tokio::test]
async fn an_avro_named_type_from_another_subject_is_a_reference() {
    let money = r#"{"type":"record","name":"Money","namespace":"shop","fields":[{"name":"units","type":"long"}]}"#;
    let order = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"total","type":"shop.Money"}]}"#;
    let registry = Arc::new(
        Registry::default()
            .with_schema(
                3,
                json!({"schema": order, "references": [{"name": "shop.Money", "subject": "money-value", "version": 4}]}),
            )
            .with_version("money-value", 4, json!({"schema": money})),
    );
    let url = serve(registry, Serve::Http).await;
    let schema = short(&url).schema(&SchemaId::Confluent(3)).await.unwrap();
    assert_eq!(schema.kind, SchemaKind::Avro);
    assert_eq!(
        schema.references,
        [SchemaReference {
            name: "shop.Money".into(),
            text: money.into()
        }]
    );
}

#[tokio::test]
async fn json_schema_and_an_unknown_schema_type() {
    let registry = Arc::new(
        Registry::default()
            .with_schema(
                4,
                json!({"schemaType": "JSON", "schema": "{\"type\":\"object\"}"}),
            )
            .with_schema(5, json!({"schemaType": "THRIFT", "schema": "struct X {}"})),
    );
    let url = serve(registry, Serve::Http).await;
    let source = short(&url);
    assert_eq!(
        source.schema(&SchemaId::Confluent(4)).await.unwrap().kind,
        SchemaKind::Json
    );
    let error = source.schema(&SchemaId::Confluent(5)).await.unwrap_err();
    assert!(matches!(error, SchemaError::Invalid { .. }), "{error}");
    assert!(!error.is_transient());
    assert!(error.to_string().contains("THRIFT"), "{error}");
}

#[tokio::test]
async fn schema_not_found_40403_is_poison() {
    let registry = Arc::new(Registry::default());
    let url = serve(registry, Serve::Http).await;
    let error = short(&url)
        .schema(&SchemaId::Confluent(404))
        .await
        .unwrap_err();
    assert!(matches!(error, SchemaError::NotFound { .. }), "{error}");
    assert!(!error.is_transient());
    assert!(!crate::DeserializeError::from(error.clone()).is_transient());
    assert_eq!(
        error.to_string(),
        format!("schema 404 was not found in the Confluent schema registry {url}")
    );
}

#[tokio::test]
async fn a_reference_the_registry_does_not_hold_is_poison() {
    let registry = Arc::new(Registry::default().with_schema(
        6,
        json!({"schemaType": "PROTOBUF", "schema": ORDER,
               "references": [{"name": "shop/money.proto", "subject": "shop/money.proto", "version": 9}]}),
    ));
    let url = serve(registry, Serve::Http).await;
    let error = short(&url)
        .schema(&SchemaId::Confluent(6))
        .await
        .unwrap_err();
    assert!(matches!(error, SchemaError::Invalid { .. }), "{error}");
    assert!(!error.is_transient());
    assert!(error.to_string().contains("40401"), "{error}");
    assert!(error.to_string().contains("shop/money.proto"), "{error}");
}

#[tokio::test]
async fn server_errors_throttling_and_odd_answers_are_transient() {
    let registry = Arc::new(Registry::default().with_schema(1, json!({ "schema": AVRO })));
    let url = serve(registry.clone(), Serve::Http).await;
    let source = short(&url);
    let id = SchemaId::Confluent(1);
    for (status, body, headers, expected) in [
        (
            500,
            r#"{"error_code":50001,"message":"Error in the backend data store"}"#,
            vec![],
            "failed (HTTP 500 Internal Server Error, error_code 50001: Error in the backend data store)",
        ),
        (
            503,
            "<html>busy</html>",
            vec![],
            "failed (HTTP 503 Service Unavailable)",
        ),
        (
            429,
            r#"{"error_code":42901,"message":"Rate limit"}"#,
            vec![],
            "throttling (HTTP 429",
        ),
        (
            404,
            "<html>Not Found</html>",
            vec![],
            "without the registry's error code",
        ),
        (
            302,
            "",
            vec![("location", "https://elsewhere.example/")],
            "redirect (HTTP 302 Found) to https://elsewhere.example/",
        ),
        (
            200,
            "<html>a login page</html>",
            vec![],
            "something other than a registry's schema",
        ),
        (
            400,
            r#"{"error_code":400,"message":"bad"}"#,
            vec![],
            "HTTP 400 Bad Request, error_code 400: bad",
        ),
    ] {
        registry.force(status, body, &headers);
        let error = source.schema(&id).await.unwrap_err();
        assert!(
            matches!(error, SchemaError::Unavailable { .. }),
            "HTTP {status}: {error}"
        );
        assert!(error.is_transient());
        assert!(crate::DeserializeError::from(error.clone()).is_transient());
        assert!(
            error.to_string().contains(expected),
            "{expected:?} missing from {error}"
        );
    }
}

#[tokio::test]
async fn credentials_refused_or_missing_say_what_to_fix() {
    let registry = Arc::new(Registry::default());
    let url = serve(registry.clone(), Serve::Http).await;
    let id = SchemaId::Confluent(1);
    registry.force(401, r#"{"error_code":401,"message":"Unauthorized"}"#, &[]);
    let error = short(&url).schema(&id).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(error.to_string().contains("none are configured"), "{error}");
    let basic = ConfluentRegistry::builder(&url)
        .basic_auth("alice", Secret::new("s3cret"))
        .build()
        .unwrap();
    let error = basic.schema(&id).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    let text = error.to_string();
    assert!(text.contains("refused the credentials (HTTP 401"), "{text}");
    assert!(text.contains("SCHEMA_REGISTRY_SECRET_ARN"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    registry.force(
        403,
        r#"{"error_code":40301,"message":"User is denied operation"}"#,
        &[],
    );
    let error = basic.schema(&id).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(
        error.to_string().contains("denied access (HTTP 403"),
        "{error}"
    );
    assert!(error.to_string().contains("read access"), "{error}");
}

#[tokio::test]
async fn connection_refused_and_a_timeout_are_transient() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let error = short(&format!("http://127.0.0.1:{port}"))
        .schema(&SchemaId::Confluent(1))
        .await
        .unwrap_err();
    assert!(matches!(error, SchemaError::Unavailable { .. }), "{error}");
    assert!(error.to_string().contains("cannot reach"), "{error}");
    assert!(
        error.to_string().to_lowercase().contains("refused"),
        "{error}"
    );

    let registry = Arc::new(Registry::default().with_schema(1, json!({ "schema": AVRO })));
    *registry.delay.lock().unwrap() = Some(Duration::from_secs(5));
    let url = serve(registry, Serve::Http).await;
    let slow = ConfluentRegistry::builder(&url)
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let error = slow.schema(&SchemaId::Confluent(1)).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(error.is_transient(), "{error}");
    assert!(
        error.to_string().contains("did not answer within 200 ms"),
        "{error}"
    );
}

#[tokio::test]
async fn basic_auth_and_bearer_tokens_are_sent() {
    let registry = Arc::new(Registry::default().with_schema(1, json!({ "schema": AVRO })));
    let url = serve(registry.clone(), Serve::Http).await;
    let id = SchemaId::Confluent(1);
    let basic = ConfluentRegistry::builder(&url)
        .basic_auth("API_KEY", Secret::new("api:secret/+="))
        .build()
        .unwrap();
    basic.schema(&id).await.unwrap();
    let bearer = ConfluentRegistry::builder(&url)
        .bearer_token(Secret::new("eyJhbGciOi.token"))
        .build()
        .unwrap();
    bearer.schema(&id).await.unwrap();
    let seen: Vec<Option<String>> = registry
        .seen()
        .into_iter()
        .map(|s| s.authorization)
        .collect();
    let expected_basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("API_KEY:api:secret/+=")
    );
    assert_eq!(
        seen,
        [Some(expected_basic), Some("Bearer eyJhbGciOi.token".into())]
    );
    let shown = format!("{basic:?} {bearer:?}");
    assert!(
        !shown.contains("secret") && !shown.contains("eyJ"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cache_fetches_each_schema_once_under_concurrency() {
    let registry = Arc::new(protobuf_registry().with_schema(1, json!({ "schema": AVRO })));
    *registry.delay.lock().unwrap() = Some(Duration::from_millis(50));
    let url = serve(registry.clone(), Serve::Http).await;
    let cache = Arc::new(SchemaCache::new(short(&url)));
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let cache = cache.clone();
            let id = SchemaId::Confluent(if i % 2 == 0 { 1 } else { 2 });
            tokio::spawn(async move { cache.get(&id).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let mut paths = registry.paths();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/schemas/ids/1",
            "/schemas/ids/2",
            "/subjects/%3A.acme%3Atags%20value/versions/1",
            "/subjects/shop%2Fcurrency.proto/versions/1",
            "/subjects/shop%2Fmoney.proto/versions/2",
        ],
        "one fetch per schema and per reference"
    );
    assert_eq!(cache.len(), 2);
    assert_eq!(
        cache
            .get_now(&SchemaId::Confluent(2))
            .unwrap()
            .references
            .len(),
        3
    );
}

#[tokio::test]
async fn a_base_url_with_a_path_and_a_trailing_slash() {
    let registry = Arc::new(
        Registry {
            prefix: "/apis/ccompat/v7".into(),
            ..Registry::default()
        }
        .with_schema(1, json!({ "schema": AVRO })),
    );
    let url = serve(registry.clone(), Serve::Http).await;
    let source = short(&format!("{url}/"));
    assert_eq!(source.url(), url);
    source.schema(&SchemaId::Confluent(1)).await.unwrap();
    assert_eq!(registry.paths(), ["/apis/ccompat/v7/schemas/ids/1"]);
}

#[tokio::test]
async fn a_glue_id_is_not_in_a_confluent_registry_and_is_not_asked_for() {
    let registry = Arc::new(Registry::default());
    let url = serve(registry.clone(), Serve::Http).await;
    let error = short(&url)
        .schema(&SchemaId::Glue(uuid::Uuid::from_u128(fastrand::u128(..))))
        .await
        .unwrap_err();
    assert!(matches!(error, SchemaError::NotFound { .. }), "{error}");
    assert!(
        error.to_string().contains("Glue schema version id"),
        "{error}"
    );
    assert!(registry.seen().is_empty());
}

#[tokio::test]
async fn tls_with_the_registrys_root_ca() {
    let registry = Arc::new(Registry::default().with_schema(1, json!({ "schema": AVRO })));
    let url = serve(
        registry.clone(),
        Serve::Tls {
            require_client_certificate: false,
        },
    )
    .await;
    let trusted = ConfluentRegistry::builder(&url)
        .root_ca_pem(CA)
        .bearer_token(Secret::new("t"))
        .build()
        .unwrap();
    assert_eq!(
        trusted.schema(&SchemaId::Confluent(1)).await.unwrap().text,
        AVRO
    );
    assert_eq!(
        registry.seen()[0].authorization.as_deref(),
        Some("Bearer t")
    );
    // Signed by a CA the client does not trust: no answer, transient.
    let untrusted = ConfluentRegistry::builder(&url)
        .root_ca_pem(OTHER_CA)
        .build()
        .unwrap();
    let error = untrusted.schema(&SchemaId::Confluent(1)).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(error.to_string().contains("cannot reach"), "{error}");
    assert!(
        error.to_string().to_lowercase().contains("certificate"),
        "{error}"
    );
    assert_eq!(
        registry.seen().len(),
        1,
        "the untrusted server saw no request"
    );
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    let registry = Arc::new(Registry::default().with_schema(1, json!({ "schema": AVRO })));
    let url = serve(
        registry.clone(),
        Serve::Tls {
            require_client_certificate: true,
        },
    )
    .await;
    let with = ConfluentRegistry::builder(&url)
        .root_ca_pem(CA)
        .client_certificate(client_certificate())
        .build()
        .unwrap();
    assert_eq!(
        with.schema(&SchemaId::Confluent(1)).await.unwrap().text,
        AVRO
    );
    let without = ConfluentRegistry::builder(&url)
        .root_ca_pem(CA)
        .build()
        .unwrap();
    let error = without.schema(&SchemaId::Confluent(1)).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert_eq!(registry.seen().len(), 1);
}

#[test]
fn unusable_urls_and_tls_material_are_refused_at_build() {
    let build_error = |builder: ConfluentRegistryBuilder| builder.build().unwrap_err().to_string();
    let error = build_error(ConfluentRegistry::builder("registry:8081"));
    assert!(error.contains("neither an https:// URL"), "{error}");
    let error = build_error(ConfluentRegistry::builder("https://key:s3cret@registry"));
    assert!(error.contains("holds credentials"), "{error}");
    assert!(!error.contains("s3cret"), "{error}");
    let error = build_error(ConfluentRegistry::builder("http://registry").root_ca_pem(CA));
    assert!(error.contains("plain http"), "{error}");
    let error =
        build_error(ConfluentRegistry::builder("https://registry").root_ca_pem("MIIs3cret"));
    assert!(error.contains("root CA holds no certificate"), "{error}");
    let mut encrypted = client_certificate();
    encrypted.key = Secret::new(
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIs3cret\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    encrypted.key_password = Some(Secret::new("pw"));
    let error = build_error(
        ConfluentRegistry::builder("https://registry")
            .root_ca_pem(CA)
            .client_certificate(encrypted),
    );
    assert!(error.contains("encrypted"), "{error}");
    assert!(!error.contains("s3cret"), "{error}");
    let mut not_a_key = client_certificate();
    not_a_key.key = Secret::new(CLIENT_CERT);
    let error = build_error(
        ConfluentRegistry::builder("https://registry")
            .root_ca_pem(CA)
            .client_certificate(not_a_key),
    );
    assert!(error.contains("not a PEM private key"), "{error}");
    let error = build_error(
        ConfluentRegistry::builder("https://registry").bearer_token(Secret::new("a\nb")),
    );
    assert!(error.contains("bearer token"), "{error}");
}

#[test]
fn bearer_secrets_are_json_or_the_token_alone() {
    let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:t";
    assert_eq!(
        parse_bearer_secret(arn, r#"{"token": "abc.def"}"#)
            .unwrap()
            .expose(),
        "abc.def"
    );
    assert_eq!(
        parse_bearer_secret(arn, " abc.def\n").unwrap().expose(),
        "abc.def"
    );
    for (text, expected) in [
        (r#"{"tok": "s3cret"}"#, "`token` is missing"),
        (r#"{"token": 5}"#, "`token` is not a string"),
        ("{s3cret", "not a JSON object"),
        ("  ", "`token` is missing"),
    ] {
        let error = parse_bearer_secret(arn, text).unwrap_err().to_string();
        assert!(
            error.contains(expected),
            "{expected:?} missing from {error}"
        );
        assert!(error.contains("bearer-token secret"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
    }
}

/// The variable that makes [`child_opens_the_source_the_environment_names`] do its work: set only
/// in the child process that [`open_fetches_the_mappings_secrets_from_secrets_manager`] starts.
const CHILD: &str = "KAFKA_ESM_REGISTRY_TEST_CHILD";

/// A Secrets Manager client for moto, and a secret with this value there; its ARN.
async fn moto_secret(client: &aws_sdk_secretsmanager::Client, name: &str, value: &str) -> String {
    let name = format!(
        "kafka-esm-registry-{name}-{}-{:x}",
        std::process::id(),
        fastrand::u32(..)
    );
    let created = client
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .expect("CreateSecret on moto");
    created.arn().expect("an ARN").to_owned()
}

/// The whole start-up path, as a function runs it: the environment names the registry and the
/// mapping's three secrets (`BASIC_AUTH`, `CLIENT_CERTIFICATE_TLS_AUTH`,
/// `SERVER_ROOT_CA_CERTIFICATE`, created on moto's Secrets Manager), [`SchemaSourceConfig::open`]
/// fetches them through the Kafka secrets' client and talks mutual TLS to the stand-in with basic
/// auth. The environment is the child process's own (the SDK reads `AWS_ENDPOINT_URL_SECRETS_MANAGER`
/// from it): this test sets no variable in its own process, where other tests run concurrently.
#[tokio::test]
#[ignore = "needs moto (infra/local-stack.sh)"]
async fn open_fetches_the_mappings_secrets_from_secrets_manager() {
    let endpoint = match std::env::var("KAFKA_ESM_MOTO_ENDPOINT") {
        Ok(value) if !value.trim().is_empty() => value,
        _ => panic!(
            "KAFKA_ESM_MOTO_ENDPOINT is not set: start moto with `bash infra/local-stack.sh start && eval \"$(bash infra/local-stack.sh env)\"`"
        ),
    };
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
        .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "test",
            "test",
            None,
            None,
            "static-test",
        ))
        .endpoint_url(&endpoint)
        .build();
    let secrets = aws_sdk_secretsmanager::Client::from_conf(config);
    let basic = moto_secret(
        &secrets,
        "basic",
        &json!({"username": "API_KEY", "password": "API_SECRET"}).to_string(),
    )
    .await;
    let client_certificate = moto_secret(
        &secrets,
        "mtls",
        &json!({"certificate": CLIENT_CERT, "privateKey": CLIENT_KEY}).to_string(),
    )
    .await;
    let root_ca = moto_secret(&secrets, "ca", &json!({ "certificate": CA }).to_string()).await;

    let registry = Arc::new(Registry::default().with_schema(1, json!({ "schema": AVRO })));
    let url = serve(
        registry.clone(),
        Serve::Tls {
            require_client_certificate: true,
        },
    )
    .await;
    let child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "registry::confluent::tests::child_opens_the_source_the_environment_names",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", &endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("SCHEMA_REGISTRY_URL", &url)
        .env("SCHEMA_REGISTRY_SECRET_ARN", &basic)
        .env("SCHEMA_REGISTRY_TLS_SECRET_ARN", &client_certificate)
        .env("SCHEMA_REGISTRY_CA_SECRET_ARN", &root_ca)
        .env_remove("SCHEMA_DIR")
        .env_remove("SCHEMA_REGISTRY_AUTH")
        .env_remove("SCHEMA_REGISTRY_TIMEOUT_SECONDS")
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .expect("the child test ends within 60 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "the child test did not run:\n{stdout}"
    );
    let seen = registry.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("API_KEY:API_SECRET")
    );
    assert_eq!(seen[0].authorization.as_deref(), Some(expected.as_str()));
}

/// The child half of [`open_fetches_the_mappings_secrets_from_secrets_manager`]: without its
/// variable (any other run) it has nothing to do and passes.
#[tokio::test]
async fn child_opens_the_source_the_environment_names() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    let config = SchemaSourceConfig::from_env()
        .expect("a valid configuration")
        .expect("a schema source");
    assert!(matches!(
        &config,
        SchemaSourceConfig::Confluent(ConfluentConfig {
            auth: RegistryAuth::Basic { .. },
            client_certificate_secret_arn: Some(_),
            root_ca_secret_arn: Some(_),
            ..
        })
    ));
    let cache = config.open().await.expect("the secrets are fetched");
    let schema = cache.get(&SchemaId::Confluent(1)).await.unwrap();
    assert_eq!(schema.text, AVRO);
}
