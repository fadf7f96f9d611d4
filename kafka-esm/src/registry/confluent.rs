//! A Confluent Schema Registry over its REST API (Confluent Cloud, Confluent Platform, and the
//! registries that serve the same API).
//!
//! A schema is `GET /schemas/ids/{id}`: `{"schema": "...", "schemaType": "PROTOBUF",
//! "references": [{"name", "subject", "version"}]}`, where an absent `schemaType` means Avro. Each
//! reference (a `.proto` the schema imports, an Avro named type defined elsewhere) is
//! `GET /subjects/{subject}/versions/{version}`, and its own references in turn; they are returned
//! as [`Schema::references`], each before the schemas that refer to it. An error is
//! `{"error_code": 40403, "message": "Schema not found"}` with the HTTP status; only that code (and,
//! for a reference, 40401 subject or 40402 version not found) makes a record poison.
//!
//! The client is hyper over rustls, the stack the AWS SDK already links: the system's root
//! certificates, or the registry's own root CA; optionally a client certificate (mutual TLS).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, LOCATION, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde_json::Value;

use super::RegistryError;
use super::config::{ConfluentConfig, DEFAULT_TIMEOUT, RegistryAuth, url_problem};
use crate::format::{Schema, SchemaError, SchemaId, SchemaKind, SchemaReference, SchemaSource};
use crate::kafka::{
    ClientCertificatePem, Secret, SecretError, TlsSecretProblem, fetch_secret_string,
    parse_client_certificate_secret, parse_root_ca_secret, parse_sasl_secret,
};

/// What the client accepts, most preferred first (the API reference's content types).
const ACCEPTED: &str = "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json; q=0.9, application/json; q=0.5";
/// The largest answer read: a schema and its metadata, never near this.
const MAX_BODY: usize = 8 << 20;
/// The most references one schema may pull in, transitively.
const MAX_REFERENCES: usize = 256;
/// The registry's "schema not found" error code.
const SCHEMA_NOT_FOUND: i64 = 40403;
/// The registry's "subject not found" and "version not found" error codes (a reference).
const SUBJECT_OR_VERSION_NOT_FOUND: [i64; 2] = [40401, 40402];
/// The bearer-token secret's format, for messages.
const BEARER_FORMAT: &str = r#"a bearer-token secret, JSON {"token": "..."} or the token alone"#;

/// A schema could not be registered ([`ConfluentRegistry::register`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot register the schema under subject {subject:?}: {message}")]
pub struct RegisterError {
    /// The subject.
    pub subject: String,
    /// What failed, and what to fix where something can be.
    pub message: String,
}

/// How requests authenticate: nothing, HTTP basic, or a bearer token. Never printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfluentAuth {
    /// No `Authorization` header.
    None,
    /// `Authorization: Basic base64(username:password)` (Confluent Cloud: the registry's API key
    /// and secret).
    Basic {
        /// The user name (API key).
        username: String,
        /// The password (API secret).
        password: Secret,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
}

/// Builds a [`ConfluentRegistry`]: [`ConfluentRegistry::builder`].
#[derive(Debug, Clone)]
pub struct ConfluentRegistryBuilder {
    url: String,
    auth: ConfluentAuth,
    root_ca_pem: Option<String>,
    client_certificate: Option<ClientCertificatePem>,
    timeout: Duration,
}

impl ConfluentRegistryBuilder {
    /// Authenticates with HTTP basic authentication.
    pub fn basic_auth(mut self, username: impl Into<String>, password: Secret) -> Self {
        self.auth = ConfluentAuth::Basic {
            username: username.into(),
            password,
        };
        self
    }

    /// Authenticates with a bearer token.
    pub fn bearer_token(mut self, token: Secret) -> Self {
        self.auth = ConfluentAuth::Bearer(token);
        self
    }

    /// Authenticates as `auth` says.
    pub fn auth(mut self, auth: ConfluentAuth) -> Self {
        self.auth = auth;
        self
    }

    /// Trusts this root CA (PEM, one or more certificates) instead of the system's roots.
    pub fn root_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.root_ca_pem = Some(pem.into());
        self
    }

    /// Presents this client certificate (mutual TLS). Its key must be unencrypted PKCS #8 (or
    /// PKCS #1, SEC1) PEM: rustls reads no encrypted key.
    pub fn client_certificate(mut self, pem: ClientCertificatePem) -> Self {
        self.client_certificate = Some(pem);
        self
    }

    /// How long one request may take, connection included (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The registry client; fails when the URL or the TLS material cannot be used.
    pub fn build(self) -> Result<ConfluentRegistry, RegistryError> {
        let url_error = |problem: &str| RegistryError::Url {
            url: redact_userinfo(&self.url),
            problem: problem.to_owned(),
        };
        if let Some(problem) = url_problem(&self.url) {
            return Err(url_error(problem));
        }
        let base = self.url.trim_end_matches('/').to_owned();
        base.parse::<hyper::Uri>()
            .map_err(|e| url_error(&e.to_string()))?;
        let https = base.starts_with("https://");
        if !https && (self.root_ca_pem.is_some() || self.client_certificate.is_some()) {
            return Err(url_error(
                "is plain http but TLS material is given: use https://",
            ));
        }
        let tls = tls_config(
            https,
            self.root_ca_pem.as_deref(),
            self.client_certificate.as_ref(),
        )?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let authorization = match &self.auth {
            ConfluentAuth::None => None,
            ConfluentAuth::Basic { username, password } => {
                let pair = format!("{username}:{}", password.expose());
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                Some(header_value(
                    &format!("Basic {encoded}"),
                    "the basic-auth credentials",
                )?)
            }
            ConfluentAuth::Bearer(token) => Some(header_value(
                &format!("Bearer {}", token.expose()),
                "the bearer token",
            )?),
        };
        Ok(ConfluentRegistry {
            base,
            client,
            authorization,
            auth_kind: match self.auth {
                ConfluentAuth::None => AuthKind::None,
                ConfluentAuth::Basic { .. } => AuthKind::Basic,
                ConfluentAuth::Bearer(_) => AuthKind::Bearer,
            },
            mutual_tls: self.client_certificate.is_some(),
            timeout: self.timeout,
        })
    }
}

/// A sensitive header value (never logged by hyper), or why the credentials cannot be one.
fn header_value(text: &str, what: &str) -> Result<HeaderValue, RegistryError> {
    let mut value = HeaderValue::from_str(text).map_err(|_| {
        RegistryError::Credentials(format!(
            "{what} hold characters an HTTP header cannot carry (a line break?)"
        ))
    })?;
    value.set_sensitive(true);
    Ok(value)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthKind {
    None,
    Basic,
    Bearer,
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A Confluent Schema Registry as a [`SchemaSource`]: schemas by their numeric id, with their
/// references. Build it with [`ConfluentRegistry::builder`], or from the environment's
/// configuration with [`ConfluentRegistry::from_config`]; put it behind a
/// [`SchemaCache`](crate::format::SchemaCache) so that each schema is fetched once.
pub struct ConfluentRegistry {
    base: String,
    client: HttpClient,
    authorization: Option<HeaderValue>,
    auth_kind: AuthKind,
    mutual_tls: bool,
    timeout: Duration,
}

impl fmt::Debug for ConfluentRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfluentRegistry")
            .field("url", &self.base)
            .field("auth", &self.auth_kind)
            .field("mutual_tls", &self.mutual_tls)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `GET /schemas/ids/{id}` and `GET /subjects/{subject}/versions/{version}` (the fields read).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaBody {
    schema: String,
    #[serde(default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Option<Vec<ReferenceBody>>,
}

#[derive(Deserialize)]
struct ReferenceBody {
    name: String,
    subject: String,
    version: Value,
}

/// An error answer: `{"error_code": 40403, "message": "Schema not found"}`.
#[derive(Deserialize)]
struct ErrorBody {
    error_code: Option<i64>,
    message: Option<String>,
}

/// One HTTP exchange's outcome.
struct Answer {
    status: StatusCode,
    body: Bytes,
    location: Option<String>,
}

impl Answer {
    fn error(&self) -> Option<ErrorBody> {
        serde_json::from_slice(&self.body).ok()
    }

    fn error_code(&self) -> Option<i64> {
        self.error().and_then(|e| e.error_code)
    }

    /// `": error_code 50001: message"` when the body is the registry's error, else nothing.
    fn error_text(&self) -> String {
        match self.error() {
            Some(ErrorBody {
                error_code,
                message,
            }) if error_code.is_some() || message.is_some() => {
                let mut text = String::new();
                if let Some(code) = error_code {
                    text.push_str(&format!(", error_code {code}"));
                }
                if let Some(message) = message {
                    let message: String = message.chars().take(300).collect();
                    text.push_str(&format!(": {message}"));
                }
                text
            }
            _ => String::new(),
        }
    }
}

impl ConfluentRegistry {
    /// A builder for the registry at `url` (`https://host[:port][/path]`; `http://` for a local
    /// one), with no authentication and a 10 s timeout.
    pub fn builder(url: impl Into<String>) -> ConfluentRegistryBuilder {
        ConfluentRegistryBuilder {
            url: url.into(),
            auth: ConfluentAuth::None,
            root_ca_pem: None,
            client_certificate: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The registry a configuration names, with its secrets fetched from Secrets Manager (in the
    /// event source mapping's formats; all of them at once).
    pub async fn from_config(config: &ConfluentConfig) -> Result<Self, RegistryError> {
        let auth = async {
            Ok::<_, SecretError>(match &config.auth {
                RegistryAuth::None => ConfluentAuth::None,
                RegistryAuth::Basic { secret_arn } => {
                    let text = fetch_secret_string(secret_arn).await?;
                    let (username, password) = parse_sasl_secret(secret_arn, &text)?;
                    ConfluentAuth::Basic { username, password }
                }
                RegistryAuth::Bearer { secret_arn } => {
                    let text = fetch_secret_string(secret_arn).await?;
                    ConfluentAuth::Bearer(parse_bearer_secret(secret_arn, &text)?)
                }
            })
        };
        let client_certificate = async {
            match &config.client_certificate_secret_arn {
                None => Ok(None),
                Some(arn) => {
                    let text = fetch_secret_string(arn).await?;
                    parse_client_certificate_secret(arn, &text).map(Some)
                }
            }
        };
        let root_ca = async {
            match &config.root_ca_secret_arn {
                None => Ok(None),
                Some(arn) => {
                    let text = fetch_secret_string(arn).await?;
                    parse_root_ca_secret(arn, &text).map(Some)
                }
            }
        };
        let (auth, client_certificate, root_ca) =
            tokio::try_join!(auth, client_certificate, root_ca)?;
        let mut builder = Self::builder(&config.url)
            .auth(auth)
            .timeout(config.timeout);
        if let Some(pem) = client_certificate {
            builder = builder.client_certificate(pem);
        }
        if let Some(pem) = root_ca {
            builder = builder.root_ca_pem(pem);
        }
        builder.build()
    }

    /// The registry's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// One GET of `path` (which starts with `/`) within the timeout; `Err` says why no answer came.
    async fn get(&self, path: &str) -> Result<Answer, String> {
        self.exchange(Method::GET, path, None).await
    }

    /// One request within the timeout: a GET, or a POST of a JSON `body`.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, String> {
        let uri = format!("{}{path}", self.base);
        let mut request = Request::builder()
            .method(method)
            .uri(&uri)
            .header(ACCEPT, ACCEPTED)
            .header(USER_AGENT, "kafka-esm");
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/vnd.schemaregistry.v1+json");
        }
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| format!("cannot request {uri}: {e}"))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("cannot reach {}: {}", self.base, error_chain(&e)))?;
            let status = response.status();
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("{uri} answered HTTP {status} but its body broke off: {e}"))?
                .to_bytes();
            Ok(Answer {
                status,
                body,
                location,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                format!(
                    "{} did not answer within {} ms",
                    self.base,
                    self.timeout.as_millis()
                )
            })?
    }

    /// Registers `text` (a schema of `kind`) under `subject` and returns its id, as a producer's
    /// serializer does before it frames its first record: `POST /subjects/{subject}/versions`
    /// with `{"schema", "schemaType"}` (no `schemaType` for Avro), answered `{"id": N}`. A schema
    /// the subject already has keeps its id. Subjects are usually `<topic>-value` and
    /// `<topic>-key` (the serializers' default naming strategy). The credentials need write access.
    pub async fn register(
        &self,
        subject: &str,
        kind: SchemaKind,
        text: &str,
    ) -> Result<u32, RegisterError> {
        let path = format!("/subjects/{}/versions", path_segment(subject));
        let mut body = serde_json::json!({ "schema": text });
        match kind {
            SchemaKind::Avro => {}
            SchemaKind::Protobuf => body["schemaType"] = "PROTOBUF".into(),
            SchemaKind::Json => body["schemaType"] = "JSON".into(),
        }
        let failed = |message: String| RegisterError {
            subject: subject.to_owned(),
            message,
        };
        let body = serde_json::to_vec(&body).map_err(|e| failed(e.to_string()))?;
        let answer = self
            .exchange(Method::POST, &path, Some(body))
            .await
            .map_err(failed)?;
        if answer.status != StatusCode::OK {
            return Err(failed(self.refusal(&path, &answer)));
        }
        #[derive(Deserialize)]
        struct Registered {
            id: u32,
        }
        serde_json::from_slice::<Registered>(&answer.body)
            .map(|r| r.id)
            .map_err(|e| {
                failed(format!(
                    "{}{path} answered HTTP 200 without a schema id ({e})",
                    self.base
                ))
            })
    }

    /// Why an answer that is neither the schema nor "not found" is no schema: a message that
    /// says what to fix where something can be.
    fn refusal(&self, path: &str, answer: &Answer) -> String {
        let status = answer.status;
        let detail = answer.error_text();
        let uri = format!("{}{path}", self.base);
        match status {
            StatusCode::UNAUTHORIZED if self.auth_kind == AuthKind::None => format!(
                "{uri} wants credentials (HTTP 401{detail}) and none are configured: set SCHEMA_REGISTRY_AUTH=basic (or bearer) and SCHEMA_REGISTRY_SECRET_ARN"
            ),
            StatusCode::UNAUTHORIZED => format!(
                "{uri} refused the credentials (HTTP 401{detail}): check the secret SCHEMA_REGISTRY_SECRET_ARN names ({}) and SCHEMA_REGISTRY_AUTH",
                if self.auth_kind == AuthKind::Basic {
                    "basic: the registry's user or API key as `username`, its password or API secret as `password`"
                } else {
                    "bearer: a token the registry accepts, not expired"
                }
            ),
            StatusCode::FORBIDDEN => format!(
                "{uri} denied access (HTTP 403{detail}): the credentials are accepted but may not read this schema: grant them read access to the registry's schemas and subjects"
            ),
            StatusCode::NOT_FOUND => format!(
                "{uri} answered HTTP 404 without the registry's error code{detail}: is {} the registry's base URL (SCHEMA_REGISTRY_URL)?",
                self.base
            ),
            StatusCode::TOO_MANY_REQUESTS => format!("{uri} is throttling (HTTP 429{detail})"),
            status if status.is_redirection() => format!(
                "{uri} answered a redirect (HTTP {status}) to {}: set the registry's URL to where it leads",
                answer.location.as_deref().unwrap_or("nowhere")
            ),
            status if status.is_server_error() => format!("{uri} failed (HTTP {status}{detail})"),
            status => format!("{uri} answered HTTP {status}{detail}"),
        }
    }

    /// A `200` answer's body as the registry's schema JSON.
    fn schema_body(&self, path: &str, answer: &Answer) -> Result<SchemaBody, String> {
        serde_json::from_slice(&answer.body).map_err(|e| {
            format!(
                "{}{path} answered HTTP 200 with something other than a registry's schema ({e}): is {} the registry's base URL?",
                self.base, self.base
            )
        })
    }

    async fn fetch(&self, number: u32, id: &SchemaId) -> Result<Schema, SchemaError> {
        let unavailable = |message| SchemaError::Unavailable { id: *id, message };
        let path = format!("/schemas/ids/{number}");
        let answer = self.get(&path).await.map_err(unavailable)?;
        if answer.status == StatusCode::NOT_FOUND && answer.error_code() == Some(SCHEMA_NOT_FOUND) {
            return Err(SchemaError::NotFound {
                id: *id,
                source_name: self.name(),
            });
        }
        if answer.status != StatusCode::OK {
            return Err(unavailable(self.refusal(&path, &answer)));
        }
        let body = self.schema_body(&path, &answer).map_err(unavailable)?;
        let kind = schema_kind(id, body.schema_type.as_deref())?;
        let references = self
            .resolve_references(id, body.references.unwrap_or_default())
            .await?;
        Ok(Schema {
            kind,
            text: body.schema,
            references,
        })
    }

    /// Fetches every schema the references name, transitively (each name once), and orders them
    /// so that a schema comes after those it refers to.
    async fn resolve_references(
        &self,
        id: &SchemaId,
        top: Vec<ReferenceBody>,
    ) -> Result<Vec<SchemaReference>, SchemaError> {
        let roots: Vec<String> = top.iter().map(|r| r.name.clone()).collect();
        let mut fetched: HashMap<String, (String, Vec<String>)> = HashMap::new();
        let mut queue: VecDeque<ReferenceBody> = top.into();
        while let Some(reference) = queue.pop_front() {
            if fetched.contains_key(&reference.name) {
                continue;
            }
            if fetched.len() == MAX_REFERENCES {
                return Err(SchemaError::Invalid {
                    id: *id,
                    message: format!("it refers to more than {MAX_REFERENCES} schemas"),
                });
            }
            let body = self.fetch_reference(id, &reference).await?;
            let children = body.references.unwrap_or_default();
            let names = children.iter().map(|c| c.name.clone()).collect();
            queue.extend(children);
            fetched.insert(reference.name, (body.schema, names));
        }
        let mut ordered = Vec::with_capacity(fetched.len());
        let mut placed = HashSet::new();
        for name in &roots {
            place(name, &fetched, &mut placed, &mut ordered);
        }
        Ok(ordered)
    }

    async fn fetch_reference(
        &self,
        id: &SchemaId,
        reference: &ReferenceBody,
    ) -> Result<SchemaBody, SchemaError> {
        let unavailable = |message| SchemaError::Unavailable { id: *id, message };
        let version = match &reference.version {
            Value::Number(n) => n.to_string(),
            Value::String(s) if !s.is_empty() => s.clone(),
            other => {
                return Err(SchemaError::Invalid {
                    id: *id,
                    message: format!(
                        "its reference {:?} has no usable version ({other})",
                        reference.name
                    ),
                });
            }
        };
        let path = format!(
            "/subjects/{}/versions/{}",
            path_segment(&reference.subject),
            path_segment(&version)
        );
        let answer = self.get(&path).await.map_err(unavailable)?;
        if answer.status == StatusCode::NOT_FOUND
            && answer
                .error_code()
                .is_some_and(|code| SUBJECT_OR_VERSION_NOT_FOUND.contains(&code))
        {
            return Err(SchemaError::Invalid {
                id: *id,
                message: format!(
                    "its reference {:?} (subject {:?}, version {version}) is not in {}{}",
                    reference.name,
                    reference.subject,
                    self.name(),
                    answer.error_text()
                ),
            });
        }
        if answer.status != StatusCode::OK {
            return Err(unavailable(self.refusal(&path, &answer)));
        }
        self.schema_body(&path, &answer).map_err(unavailable)
    }
}

/// Places `name` after the schemas it refers to (depth first; each once).
fn place(
    name: &str,
    fetched: &HashMap<String, (String, Vec<String>)>,
    placed: &mut HashSet<String>,
    ordered: &mut Vec<SchemaReference>,
) {
    if !placed.insert(name.to_owned()) {
        return;
    }
    let Some((text, children)) = fetched.get(name) else {
        return;
    };
    for child in children {
        place(child, fetched, placed, ordered);
    }
    ordered.push(SchemaReference {
        name: name.to_owned(),
        text: text.clone(),
    });
}

/// `schemaType` as a kind: absent is Avro (the API's default).
fn schema_kind(id: &SchemaId, schema_type: Option<&str>) -> Result<SchemaKind, SchemaError> {
    match schema_type {
        None | Some("") => Ok(SchemaKind::Avro),
        Some(name) => SchemaKind::from_data_format(name).ok_or_else(|| SchemaError::Invalid {
            id: *id,
            message: format!("its schemaType {name:?} is none of AVRO, PROTOBUF, JSON"),
        }),
    }
}

/// Percent-encodes a path segment (a subject may hold `/`, `:` or spaces).
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// An error and its sources, joined: hyper's own message alone says little ("client error
/// (Connect)").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn redact_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://<redacted>@{host}{path}"),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

/// Reads a bearer-token secret: `{"token": "..."}`, or the whole string when it is not a JSON
/// object.
pub(crate) fn parse_bearer_secret(arn: &str, text: &str) -> Result<Secret, SecretError> {
    let shape = |problem| SecretError::TlsShape {
        arn: arn.to_owned(),
        expected: BEARER_FORMAT,
        problem,
    };
    let trimmed = text.trim();
    if !trimmed.starts_with('{') {
        if trimmed.is_empty() {
            return Err(shape(TlsSecretProblem::Missing("token")));
        }
        return Ok(Secret::new(trimmed));
    }
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(trimmed) else {
        return Err(shape(TlsSecretProblem::NotJson));
    };
    match object.get("token") {
        Some(Value::String(token)) if !token.trim().is_empty() => Ok(Secret::new(token.trim())),
        None | Some(Value::Null) | Some(Value::String(_)) => {
            Err(shape(TlsSecretProblem::Missing("token")))
        }
        Some(_) => Err(shape(TlsSecretProblem::NotString("token"))),
    }
}

/// The TLS client configuration: the given root CA or the system's roots (for https only), and a
/// client certificate when given.
fn tls_config(
    https: bool,
    root_ca_pem: Option<&str>,
    client_certificate: Option<&ClientCertificatePem>,
) -> Result<rustls::ClientConfig, RegistryError> {
    let tls = |message: String| RegistryError::Tls(message);
    let mut roots = rustls::RootCertStore::empty();
    match root_ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| tls(format!("the root CA is not PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| tls(format!("the root CA cannot be used: {e}")))?;
            }
            if roots.is_empty() {
                return Err(tls("the root CA holds no certificate".into()));
            }
        }
        None if https => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(tls(format!(
                    "no system root certificate could be loaded{}: give the registry's root CA (SCHEMA_REGISTRY_CA_SECRET_ARN)",
                    native
                        .errors
                        .first()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                )));
            }
        }
        None => {}
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))?
        .with_root_certificates(roots);
    let Some(pem) = client_certificate else {
        return Ok(builder.with_no_client_auth());
    };
    if pem
        .key
        .expose()
        .contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    {
        return Err(tls(
            "the client certificate's privateKey is encrypted, which the registry client cannot read: store the key unencrypted (PKCS #8) in the secret".into(),
        ));
    }
    let chain = CertificateDer::pem_slice_iter(pem.certificate.expose().as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(format!("the client `certificate` is not PEM: {e}")))?;
    if chain.is_empty() {
        return Err(tls("the client `certificate` holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(pem.key.expose().as_bytes())
        .map_err(|_| tls("the client `privateKey` is not a PEM private key".into()))?;
    builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| tls(format!("the client certificate cannot be used: {e}")))
}

#[async_trait]
impl SchemaSource for ConfluentRegistry {
    async fn schema(&self, id: &SchemaId) -> Result<Schema, SchemaError> {
        match id {
            SchemaId::Confluent(number) => self.fetch(*number, id).await,
            SchemaId::Glue(_) => Err(SchemaError::NotFound {
                id: *id,
                source_name: format!(
                    "{} (its ids are numbers; this is an AWS Glue schema version id)",
                    self.name()
                ),
            }),
        }
    }

    fn name(&self) -> String {
        format!("the Confluent schema registry {}", self.base)
    }
}

#[cfg(test)]
mod tests;
