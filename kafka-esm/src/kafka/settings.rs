//! What a Kafka client needs to connect, read from the environment and validated at start.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;

use super::context::KafkaClientContext;
use crate::env::EnvReader;

/// A value that must never be printed: its `Debug` and `Display` show `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A SASL mechanism with a username and password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `PLAIN`.
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512` (MSK's SCRAM).
    ScramSha512,
}

impl SaslMechanism {
    /// librdkafka's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Where SASL credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslCredentials {
    /// Given directly.
    Given {
        /// Username.
        username: String,
        /// Password.
        password: Secret,
    },
    /// A Secrets Manager secret `{"username": ..., "password": ...}` (the format of the ESM's
    /// `SASL_SCRAM_*_AUTH`), fetched once per container by [`KafkaSettings::resolve_secrets`].
    FromSecret {
        /// The secret's ARN.
        arn: String,
    },
}

/// How the client authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaAuth {
    /// Plaintext, no authentication (local brokers).
    None,
    /// TLS; with a client certificate in [`TlsFiles`], mutual TLS.
    Tls,
    /// SASL with a username and password, over TLS unless `over_tls` is false.
    Sasl {
        /// The mechanism.
        mechanism: SaslMechanism,
        /// The credentials.
        credentials: SaslCredentials,
        /// `SASL_SSL` when true, `SASL_PLAINTEXT` when false.
        over_tls: bool,
    },
    /// MSK IAM: `SASL_SSL` + `OAUTHBEARER`, with a SigV4-signed token for this region.
    MskIam {
        /// The cluster's AWS region.
        region: String,
    },
}

/// A client certificate chain and its private key, in PEM, as a `CLIENT_CERTIFICATE_TLS_AUTH`
/// secret holds them. Never printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificatePem {
    /// The certificate chain: the client certificate first, then intermediates, then the root.
    pub certificate: Secret,
    /// The private key (PKCS #8), possibly encrypted.
    pub key: Secret,
    /// The encrypted key's password.
    pub key_password: Option<Secret>,
}

/// A value kept in a Secrets Manager secret: its ARN until [`KafkaSettings::resolve_secrets`]
/// fetches it (once per container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromSecret<T> {
    /// Not fetched yet: the secret's ARN.
    Arn(String),
    /// Fetched.
    Fetched(T),
}

/// TLS material read from the same Secrets Manager secrets as the event source mapping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSecrets {
    /// `KAFKA_TLS_SECRET_ARN`: the client certificate for mutual TLS (`KAFKA_AUTH=tls`), given to
    /// librdkafka as `ssl.certificate.pem`, `ssl.key.pem` and `ssl.key.password`.
    pub client_certificate: Option<FromSecret<ClientCertificatePem>>,
    /// `KAFKA_TLS_CA_SECRET_ARN`: the brokers' root CA (PEM), given to librdkafka as `ssl.ca.pem`.
    pub ca: Option<FromSecret<String>>,
}

/// TLS files (PEM).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA bundle; when absent librdkafka probes the system's usual locations.
    pub ca: Option<PathBuf>,
    /// Client certificate, for mutual TLS.
    pub certificate: Option<PathBuf>,
    /// Client private key, for mutual TLS.
    pub key: Option<PathBuf>,
    /// The private key's password.
    pub key_password: Option<Secret>,
}

/// Where and how to reach Kafka.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// `client.id` sent to the brokers.
    pub client_id: String,
    /// How long librdkafka keeps trying to deliver one message before reporting failure.
    pub delivery_timeout: Duration,
    /// Authentication.
    pub auth: KafkaAuth,
    /// TLS files.
    pub tls: TlsFiles,
    /// TLS material from Secrets Manager (the alternative to the files).
    pub tls_secrets: TlsSecrets,
    /// Extra librdkafka properties (`KAFKA_PROPERTIES`), applied last.
    pub properties: Vec<(String, String)>,
}

impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Properties may hold credentials: show their names only.
        f.debug_struct("KafkaSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("client_id", &self.client_id)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("tls_secrets", &self.tls_secrets)
            .field(
                "properties",
                &self.properties.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A Kafka client cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    /// A secret (SASL credentials, client certificate, root CA) could not be read.
    #[error(transparent)]
    Secret(#[from] super::SecretError),
    /// The settings still name a secret that was not fetched.
    #[error(
        "the {what} come from secret {arn}, which was not fetched: call KafkaSettings::resolve_secrets first"
    )]
    Unresolved {
        /// What the secret holds.
        what: &'static str,
        /// The secret's ARN.
        arn: String,
    },
    /// librdkafka refused the configuration. The value of a secret property
    /// ([`KafkaSettings::is_secret_property`]) is redacted from the error.
    #[error("librdkafka refused the client configuration: {0}")]
    Client(rdkafka::error::KafkaError),
}

impl From<KafkaError> for KafkaSetupError {
    fn from(error: KafkaError) -> Self {
        Self::Client(redact_kafka_error(error))
    }
}

/// Parts of a librdkafka property name (compared in lower case) that mark its value as secret.
const SECRET_NAME_PARTS: &[&str] = &[
    "password",
    "passphrase",
    "secret",
    "token",
    "private.key",
    "sasl.jaas",
    "sasl.oauthbearer.config",
    "ssl.key.pem",
    "ssl.keystore",
    "ssl_key",
];

/// What is shown instead of a secret value.
const REDACTED: &str = "<redacted>";

/// `KafkaError::ClientConfig` carries the refused value, and its `Display` prints it: redact it
/// (and any copy of it in librdkafka's description) when the property is secret.
fn redact_kafka_error(error: KafkaError) -> KafkaError {
    match error {
        KafkaError::ClientConfig(code, description, key, value)
            if KafkaSettings::is_secret_property(&key) =>
        {
            let description = redact_value(&description, &value);
            KafkaError::ClientConfig(code, description, key, REDACTED.to_owned())
        }
        other => other,
    }
}

/// `text` with every copy of `value` replaced by [`REDACTED`].
fn redact_value(text: &str, value: &str) -> String {
    if value.is_empty() {
        text.to_owned()
    } else {
        text.replace(value, REDACTED)
    }
}

/// Reads `KAFKA_PROPERTIES`: `key=value` pairs separated by `;` or new lines, each checked by
/// librdkafka. A problem never shows a value: it names the property, or, when a pair has no
/// property name that can be told apart (no `=`, or anything but `A-Za-z0-9._-` before it), only
/// the pair's position. librdkafka's own description is kept, with a secret property's value
/// redacted from it.
fn parse_properties(text: &str) -> (Vec<(String, String)>, Vec<String>) {
    let pairs: Vec<&str> = text
        .split([';', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let mut properties = Vec::new();
    let mut problems = Vec::new();
    for (n, pair) in pairs.iter().enumerate() {
        let key = pair.split_once('=').map(|(k, v)| (k.trim(), v.trim()));
        match key {
            Some((key, value))
                if !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) =>
            {
                if let Some(refusal) = librdkafka_refusal(key, value) {
                    problems.push(format!(
                        "KAFKA_PROPERTIES: librdkafka refuses {key}: {refusal}"
                    ));
                }
                properties.push((key.to_owned(), value.to_owned()));
            }
            _ => problems.push(format!(
                "KAFKA_PROPERTIES: pair {} of {} is not key=value{} (the pair is not shown: it may hold a secret; pairs are separated by `;`)",
                n + 1,
                pairs.len(),
                if pair.contains(':') && !pair.contains('=') {
                    ", `=` goes between key and value, not `:`"
                } else {
                    ""
                }
            )),
        }
    }
    (properties, problems)
}

/// Why librdkafka refuses `key=value` on its own (an unknown name, a value out of range), so that
/// the refusal is reported at start-up with every other problem; `None` when it accepts it.
fn librdkafka_refusal(key: &str, value: &str) -> Option<String> {
    // Setting `plugin.library.paths` loads the plugins: leave that to the client itself.
    if key == "plugin.library.paths" {
        return None;
    }
    let mut config = ClientConfig::new();
    config.set(key, value);
    match config.create_native_config().map_err(redact_kafka_error) {
        Ok(_) => None,
        Err(KafkaError::ClientConfig(_, description, _, _)) => Some(description),
        Err(other) => Some(other.to_string()),
    }
}

/// Why a `*_SECRET_ARN` value that is not an ARN is not printed.
const NOT_SHOWN: &str = "its value is not shown: it may be the secret itself";

const AUTH_VALUES: &str = "none, tls, plain, scram-sha-256, scram-sha-512 or iam";

/// The fetched value, or [`KafkaSetupError::Unresolved`] naming `what` the secret holds.
fn fetched<'a, T>(secret: &'a FromSecret<T>, what: &'static str) -> Result<&'a T, KafkaSetupError> {
    match secret {
        FromSecret::Fetched(value) => Ok(value),
        FromSecret::Arn(arn) => Err(KafkaSetupError::Unresolved {
            what,
            arn: arn.clone(),
        }),
    }
}

impl KafkaSettings {
    /// Settings for these bootstrap servers, plaintext, with defaults for the rest.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            client_id: "kafka-esm".into(),
            delivery_timeout: Duration::from_secs(10),
            auth: KafkaAuth::None,
            tls: TlsFiles::default(),
            tls_secrets: TlsSecrets::default(),
            properties: Vec::new(),
        }
    }

    /// True when the value of this librdkafka property must never be printed: its name, in any
    /// case, contains `password`, `passphrase`, `secret`, `token`, `private.key`, `sasl.jaas`,
    /// `sasl.oauthbearer.config`, `ssl.key.pem`, `ssl.keystore` or `ssl_key`.
    pub fn is_secret_property(name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        SECRET_NAME_PARTS.iter().any(|part| name.contains(part))
    }

    /// Reads `KAFKA_*` variables; `None` when `KAFKA_BOOTSTRAP_SERVERS` is unset. Problems go to `r`.
    ///
    /// `KAFKA_AUTH` (`none` | `tls` | `plain` | `scram-sha-256` | `scram-sha-512` | `iam`),
    /// `KAFKA_SASL_USERNAME` + `KAFKA_SASL_PASSWORD` or `KAFKA_SASL_SECRET_ARN`, `KAFKA_SASL_TLS`
    /// (default true), `KAFKA_TLS_CA_PATH` or `KAFKA_TLS_CA_SECRET_ARN`, `KAFKA_TLS_CERT_PATH` +
    /// `KAFKA_TLS_KEY_PATH` (+ `KAFKA_TLS_KEY_PASSWORD`) or, with `KAFKA_AUTH=tls`,
    /// `KAFKA_TLS_SECRET_ARN`, `AWS_REGION` for `iam`, `KAFKA_CLIENT_ID`, and `KAFKA_PROPERTIES`
    /// (`key=value` pairs separated by `;`, each checked by librdkafka here; a problem never shows
    /// a value).
    pub fn from_env(
        r: &mut EnvReader<'_>,
        default_client_id: &str,
        delivery_timeout: Duration,
    ) -> Option<Self> {
        let bootstrap_servers = r.text("KAFKA_BOOTSTRAP_SERVERS");
        let sasl_vars: Vec<&str> = [
            "KAFKA_SASL_USERNAME",
            "KAFKA_SASL_PASSWORD",
            "KAFKA_SASL_SECRET_ARN",
        ]
        .into_iter()
        .filter(|v| r.text(v).is_some())
        .collect();
        let auth_name = r.text("KAFKA_AUTH").map(|v| v.to_ascii_lowercase());
        let mechanism = match auth_name.as_deref() {
            Some("plain") => Some(SaslMechanism::Plain),
            Some("scram-sha-256") => Some(SaslMechanism::ScramSha256),
            Some("scram-sha-512") => Some(SaslMechanism::ScramSha512),
            _ => None,
        };
        let auth = match (auth_name.as_deref(), mechanism) {
            (_, Some(mechanism)) => {
                let credentials = match (
                    r.text("KAFKA_SASL_USERNAME"),
                    r.raw("KAFKA_SASL_PASSWORD").filter(|p| !p.is_empty()),
                    r.text("KAFKA_SASL_SECRET_ARN"),
                ) {
                    (Some(username), Some(password), None) => Some(SaslCredentials::Given {
                        username,
                        password: Secret::new(password),
                    }),
                    (None, None, Some(arn)) => {
                        if !arn.starts_with("arn:") {
                            r.problem(format!(
                                "KAFKA_SASL_SECRET_ARN is not an ARN ({NOT_SHOWN}): expected arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME"
                            ));
                        }
                        Some(SaslCredentials::FromSecret { arn })
                    }
                    (_, _, Some(_)) => {
                        r.problem("KAFKA_SASL_SECRET_ARN is set together with KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD: give the credentials one way only");
                        None
                    }
                    (username, _, None) => {
                        r.problem(format!(
                            "KAFKA_AUTH={} needs credentials: set KAFKA_SASL_SECRET_ARN (a secret {{\"username\",\"password\"}}) or both KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD{}",
                            auth_name.as_deref().unwrap_or_default(),
                            if username.is_some() { " (the password is missing)" } else { "" }
                        ));
                        None
                    }
                };
                let over_tls = r.flag("KAFKA_SASL_TLS", true);
                credentials.map(|credentials| KafkaAuth::Sasl {
                    mechanism,
                    credentials,
                    over_tls,
                })
            }
            (None | Some("none"), None) => Some(KafkaAuth::None),
            (Some("tls"), None) => Some(KafkaAuth::Tls),
            (Some("iam"), None) => {
                if r.text("KAFKA_SASL_TLS")
                    .is_some_and(|v| v.eq_ignore_ascii_case("false"))
                {
                    r.problem("KAFKA_SASL_TLS=false does not go with KAFKA_AUTH=iam: MSK IAM always uses TLS");
                }
                match r
                    .text("AWS_REGION")
                    .or_else(|| r.text("AWS_DEFAULT_REGION"))
                {
                    Some(region) => Some(KafkaAuth::MskIam { region }),
                    None => {
                        r.problem("KAFKA_AUTH=iam needs AWS_REGION (Lambda sets it): the token is signed for the cluster's region");
                        None
                    }
                }
            }
            (Some(other), None) => {
                r.problem(format!(
                    "KAFKA_AUTH={other:?} is not valid: expected {AUTH_VALUES}"
                ));
                None
            }
        };
        if mechanism.is_none() && !sasl_vars.is_empty() {
            r.problem(format!(
                "{} set, but KAFKA_AUTH={} does not use them: set KAFKA_AUTH to plain, scram-sha-256 or scram-sha-512, or unset them",
                sasl_vars.join(", "),
                auth_name.as_deref().unwrap_or("none")
            ));
        }
        let tls = TlsFiles {
            ca: r.text("KAFKA_TLS_CA_PATH").map(PathBuf::from),
            certificate: r.text("KAFKA_TLS_CERT_PATH").map(PathBuf::from),
            key: r.text("KAFKA_TLS_KEY_PATH").map(PathBuf::from),
            key_password: r
                .raw("KAFKA_TLS_KEY_PASSWORD")
                .filter(|p| !p.is_empty())
                .map(Secret::new),
        };
        for (name, path) in [
            ("KAFKA_TLS_CA_PATH", &tls.ca),
            ("KAFKA_TLS_CERT_PATH", &tls.certificate),
            ("KAFKA_TLS_KEY_PATH", &tls.key),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                r.problem(format!("{name}={} is not a readable file", path.display()));
            }
        }
        if tls.certificate.is_some() != tls.key.is_some() {
            r.problem("KAFKA_TLS_CERT_PATH and KAFKA_TLS_KEY_PATH go together: mutual TLS needs both the certificate and its key");
        }
        let uses_tls = match &auth {
            Some(KafkaAuth::Tls | KafkaAuth::MskIam { .. }) => true,
            Some(KafkaAuth::Sasl { over_tls, .. }) => *over_tls,
            _ => false,
        };
        if !uses_tls && (tls.ca.is_some() || tls.certificate.is_some()) {
            r.problem("KAFKA_TLS_* files are set but the connection is not TLS: set KAFKA_AUTH=tls (or a SASL mode over TLS)");
        }
        let client_secret = r.text("KAFKA_TLS_SECRET_ARN");
        let ca_secret = r.text("KAFKA_TLS_CA_SECRET_ARN");
        for (name, arn) in [
            ("KAFKA_TLS_SECRET_ARN", &client_secret),
            ("KAFKA_TLS_CA_SECRET_ARN", &ca_secret),
        ] {
            if let Some(arn) = arn
                && !arn.starts_with("arn:")
            {
                r.problem(format!(
                    "{name} is not an ARN ({NOT_SHOWN}): expected arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME"
                ));
            }
        }
        if client_secret.is_some() {
            let files: Vec<&str> = [
                "KAFKA_TLS_CERT_PATH",
                "KAFKA_TLS_KEY_PATH",
                "KAFKA_TLS_KEY_PASSWORD",
            ]
            .into_iter()
            .filter(|v| r.text(v).is_some())
            .collect();
            if !files.is_empty() {
                r.problem(format!(
                    "KAFKA_TLS_SECRET_ARN is set together with {}: give the client certificate one way only (the secret carries its own privateKeyPassword)",
                    files.join(", ")
                ));
            }
            if auth_name.as_deref() != Some("tls") {
                r.problem(format!(
                    "KAFKA_TLS_SECRET_ARN (a client certificate for mutual TLS) needs KAFKA_AUTH=tls, not KAFKA_AUTH={}; a SASL connection that also needs a certificate takes it from KAFKA_TLS_CERT_PATH and KAFKA_TLS_KEY_PATH",
                    auth_name.as_deref().unwrap_or("none")
                ));
            }
        }
        if ca_secret.is_some() {
            if tls.ca.is_some() {
                r.problem("KAFKA_TLS_CA_SECRET_ARN is set together with KAFKA_TLS_CA_PATH: give the CA one way only");
            }
            if !uses_tls {
                r.problem("KAFKA_TLS_CA_SECRET_ARN is set but the connection is not TLS: set KAFKA_AUTH=tls (or a SASL mode over TLS, or iam)");
            }
        }
        let tls_secrets = TlsSecrets {
            client_certificate: client_secret.map(FromSecret::Arn),
            ca: ca_secret.map(FromSecret::Arn),
        };
        let mut properties = Vec::new();
        if let Some(text) = r.raw("KAFKA_PROPERTIES") {
            let (read, problems) = parse_properties(&text);
            properties = read;
            for problem in problems {
                r.problem(problem);
            }
        }
        let client_id = r
            .text("KAFKA_CLIENT_ID")
            .unwrap_or_else(|| default_client_id.to_owned());
        Some(Self {
            bootstrap_servers: bootstrap_servers?,
            client_id,
            delivery_timeout,
            auth: auth?,
            tls,
            tls_secrets,
            properties,
        })
    }

    /// Fetches what the settings name by a secret ARN (once per container): SASL credentials,
    /// the client certificate, the root CA. Other settings are returned unchanged.
    pub async fn resolve_secrets(mut self) -> Result<Self, KafkaSetupError> {
        if let KafkaAuth::Sasl {
            credentials: SaslCredentials::FromSecret { arn },
            ..
        } = &self.auth
        {
            let (username, password) = super::secrets::fetch_sasl_secret(arn).await?;
            if let KafkaAuth::Sasl { credentials, .. } = &mut self.auth {
                *credentials = SaslCredentials::Given { username, password };
            }
        }
        if let Some(FromSecret::Arn(arn)) = &self.tls_secrets.client_certificate {
            let pem = super::secrets::fetch_client_certificate_secret(arn).await?;
            self.tls_secrets.client_certificate = Some(FromSecret::Fetched(pem));
        }
        if let Some(FromSecret::Arn(arn)) = &self.tls_secrets.ca {
            let pem = super::secrets::fetch_root_ca_secret(arn).await?;
            self.tls_secrets.ca = Some(FromSecret::Fetched(pem));
        }
        Ok(self)
    }

    /// The connection part of a librdkafka configuration: servers, client id, security.
    pub fn client_config(&self) -> Result<ClientConfig, KafkaSetupError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.client_id);
        let tls = match &self.auth {
            KafkaAuth::None => {
                config.set("security.protocol", "plaintext");
                false
            }
            KafkaAuth::Tls => {
                config.set("security.protocol", "ssl");
                true
            }
            KafkaAuth::Sasl {
                mechanism,
                credentials,
                over_tls,
            } => {
                let SaslCredentials::Given { username, password } = credentials else {
                    let SaslCredentials::FromSecret { arn } = credentials else {
                        unreachable!()
                    };
                    return Err(KafkaSetupError::Unresolved {
                        what: "SASL credentials",
                        arn: arn.clone(),
                    });
                };
                config
                    .set(
                        "security.protocol",
                        if *over_tls {
                            "sasl_ssl"
                        } else {
                            "sasl_plaintext"
                        },
                    )
                    .set("sasl.mechanism", mechanism.as_str())
                    .set("sasl.username", username)
                    .set("sasl.password", password.expose());
                *over_tls
            }
            KafkaAuth::MskIam { .. } => {
                config
                    .set("security.protocol", "sasl_ssl")
                    .set("sasl.mechanism", "OAUTHBEARER");
                true
            }
        };
        if tls {
            // Without a CA, probe the system's usual bundle locations: the OpenSSL default compiled
            // into librdkafka points at the build machine's paths, not Lambda's.
            match (&self.tls_secrets.ca, &self.tls.ca) {
                (Some(ca), _) => config.set("ssl.ca.pem", fetched(ca, "root CA certificates")?),
                (None, Some(ca)) => config.set("ssl.ca.location", ca.display().to_string()),
                (None, None) => config.set("ssl.ca.location", "probe"),
            };
            // Note: rdkafka's `Debug` for `ClientConfig` hides `ssl.key.password` but not
            // `ssl.key.pem`: never print a client configuration.
            if let Some(secret) = &self.tls_secrets.client_certificate {
                let pem = fetched(secret, "client certificate and key")?;
                config
                    .set("ssl.certificate.pem", pem.certificate.expose())
                    .set("ssl.key.pem", pem.key.expose());
                if let Some(password) = &pem.key_password {
                    config.set("ssl.key.password", password.expose());
                }
            } else if let (Some(cert), Some(key)) = (&self.tls.certificate, &self.tls.key) {
                config
                    .set("ssl.certificate.location", cert.display().to_string())
                    .set("ssl.key.location", key.display().to_string());
                if let Some(password) = &self.tls.key_password {
                    config.set("ssl.key.password", password.expose());
                }
            }
        }
        Ok(config)
    }

    /// A producer configuration that never loses or duplicates a message on its own retries:
    /// idempotence on, `acks=all`, lz4, a short linger for batching.
    pub fn producer_config(&self) -> Result<ClientConfig, KafkaSetupError> {
        let mut config = self.client_config()?;
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                self.delivery_timeout.as_millis().max(1).to_string(),
            )
            .set("linger.ms", "5")
            .set("compression.type", "lz4");
        self.apply_properties(&mut config);
        Ok(config)
    }

    /// A consumer configuration for tools that assign partitions themselves (no offsets committed).
    pub fn consumer_config(&self, group_id: &str) -> Result<ClientConfig, KafkaSetupError> {
        let mut config = self.client_config()?;
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true");
        self.apply_properties(&mut config);
        Ok(config)
    }

    /// A consumer configuration for a consumer group whose offsets move only when the caller commits
    /// what it settled: no automatic commits or offset stores, no end-of-partition events. A new
    /// group starts at `auto_offset_reset` (`earliest` or `latest`) unless `KAFKA_PROPERTIES` says
    /// otherwise.
    pub fn committing_consumer_config(
        &self,
        group_id: &str,
        auto_offset_reset: &str,
    ) -> Result<ClientConfig, KafkaSetupError> {
        let mut config = self.consumer_config(group_id)?;
        if !self
            .properties
            .iter()
            .any(|(k, _)| k == "auto.offset.reset")
        {
            config.set("auto.offset.reset", auto_offset_reset);
        }
        config
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        Ok(config)
    }

    fn apply_properties(&self, config: &mut ClientConfig) {
        for (key, value) in &self.properties {
            config.set(key, value);
        }
    }

    /// The client context: signs MSK IAM tokens when the settings say so.
    pub fn context(&self) -> KafkaClientContext {
        match &self.auth {
            KafkaAuth::MskIam { region } => KafkaClientContext::msk_iam(region),
            _ => KafkaClientContext::plain(),
        }
    }

    /// An idempotent producer for these settings.
    pub fn create_producer(&self) -> Result<FutureProducer<KafkaClientContext>, KafkaSetupError> {
        Ok(self
            .producer_config()?
            .create_with_context(self.context())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<KafkaSettings, Vec<String>> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| map.get(k).cloned();
        let mut r = EnvReader::new(&lookup);
        let s = KafkaSettings::from_env(&mut r, "fn", Duration::from_secs(5));
        if r.problems.is_empty() {
            Ok(s.expect("bootstrap servers given"))
        } else {
            Err(r.problems)
        }
    }

    fn get(config: &ClientConfig, key: &str) -> Option<String> {
        config.get(key).map(str::to_owned)
    }

    #[test]
    fn plaintext_by_default() {
        let s = settings(&[("KAFKA_BOOTSTRAP_SERVERS", "b:9092")]).unwrap();
        assert_eq!(s.auth, KafkaAuth::None);
        assert_eq!(s.client_id, "fn");
        let c = s.producer_config().unwrap();
        assert_eq!(get(&c, "security.protocol").as_deref(), Some("plaintext"));
        assert_eq!(get(&c, "enable.idempotence").as_deref(), Some("true"));
        assert_eq!(get(&c, "acks").as_deref(), Some("all"));
        assert_eq!(get(&c, "message.timeout.ms").as_deref(), Some("5000"));
    }

    #[test]
    fn scram_with_given_credentials_over_tls() {
        let s = settings(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "b:9096"),
            ("KAFKA_AUTH", "SCRAM-SHA-512"),
            ("KAFKA_SASL_USERNAME", "alice"),
            ("KAFKA_SASL_PASSWORD", " p w "),
        ])
        .unwrap();
        let c = s.producer_config().unwrap();
        assert_eq!(get(&c, "security.protocol").as_deref(), Some("sasl_ssl"));
        assert_eq!(get(&c, "sasl.mechanism").as_deref(), Some("SCRAM-SHA-512"));
        assert_eq!(get(&c, "sasl.username").as_deref(), Some("alice"));
        assert_eq!(
            get(&c, "sasl.password").as_deref(),
            Some(" p w "),
            "passwords are not trimmed"
        );
        assert_eq!(get(&c, "ssl.ca.location").as_deref(), Some("probe"));
        let shown = format!("{s:?}");
        assert!(!shown.contains("p w"), "the password never shows: {shown}");
        // librdkafka accepts the configuration (SCRAM needs the ssl feature compiled in).
        let _producer = s.create_producer().unwrap();
    }

    #[test]
    fn plain_without_tls_and_scram_256_from_a_secret() {
        let s = settings(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "b:9092"),
            ("KAFKA_AUTH", "plain"),
            ("KAFKA_SASL_USERNAME", "u"),
            ("KAFKA_SASL_PASSWORD", "p"),
            ("KAFKA_SASL_TLS", "false"),
        ])
        .unwrap();
        let c = s.client_config().unwrap();
        assert_eq!(
            get(&c, "security.protocol").as_deref(),
            Some("sasl_plaintext")
        );
        assert_eq!(get(&c, "ssl.ca.location"), None);

        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:AmazonMSK_x";
        let s = settings(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "b:9096"),
            ("KAFKA_AUTH", "scram-sha-256"),
            ("KAFKA_SASL_SECRET_ARN", arn),
        ])
        .unwrap();
        let error = s.client_config().unwrap_err().to_string();
        assert!(error.contains("resolve_secrets"), "{error}");
    }

    #[test]
    fn msk_iam_signs_for_the_region() {
        let s = settings(&[
            (
                "KAFKA_BOOTSTRAP_SERVERS",
                "b-1.c.kafka.eu-west-1.amazonaws.com:9098",
            ),
            ("KAFKA_AUTH", "iam"),
            ("AWS_REGION", "eu-west-1"),
        ])
        .unwrap();
        assert_eq!(
            s.auth,
            KafkaAuth::MskIam {
                region: "eu-west-1".into()
            }
        );
        let c = s.client_config().unwrap();
        assert_eq!(get(&c, "security.protocol").as_deref(), Some("sasl_ssl"));
        assert_eq!(get(&c, "sasl.mechanism").as_deref(), Some("OAUTHBEARER"));
    }

    #[test]
    fn mutual_tls_files() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::write(dir.path().join(f), "-----BEGIN-----").unwrap();
        }
        let p = |f: &str| dir.path().join(f).display().to_string();
        let (ca, cert, key) = (p("ca.pem"), p("cert.pem"), p("key.pem"));
        let s = settings(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "b:9094"),
            ("KAFKA_AUTH", "tls"),
            ("KAFKA_TLS_CA_PATH", &ca),
            ("KAFKA_TLS_CERT_PATH", &cert),
            ("KAFKA_TLS_KEY_PATH", &key),
            ("KAFKA_TLS_KEY_PASSWORD", "kp"),
            (
                "KAFKA_PROPERTIES",
                "socket.keepalive.enable=true; request.timeout.ms = 20000",
            ),
        ])
        .unwrap();
        let c = s.producer_config().unwrap();
        assert_eq!(get(&c, "security.protocol").as_deref(), Some("ssl"));
        assert_eq!(get(&c, "ssl.ca.location"), Some(ca));
        assert_eq!(get(&c, "ssl.certificate.location"), Some(cert));
        assert_eq!(get(&c, "ssl.key.password").as_deref(), Some("kp"));
        assert_eq!(get(&c, "request.timeout.ms").as_deref(), Some("20000"));
        assert!(!format!("{s:?}").contains("kp"));
    }

    const TLS_SECRET: &str =
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:kafka-client-AbCdEf";
    const CA_SECRET: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:kafka-ca-AbCdEf";
    // PEM framing only (librdkafka parses the content when a client is created, not here).
    const CHAIN: &str = "-----BEGIN CERTIFICATE-----\nMIIclient\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nMIIroot\n-----END CERTIFICATE-----\n";
    const KEY: &str =
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIk3y\n-----END ENCRYPTED PRIVATE KEY-----\n";

    #[test]
    fn mutual_tls_from_the_mappings_client_certificate_secret() {
        let mut s = settings(&[
            (
                "KAFKA_BOOTSTRAP_SERVERS",
                "b-1.c.kafka.eu-west-1.amazonaws.com:9094",
            ),
            ("KAFKA_AUTH", "tls"),
            ("KAFKA_TLS_SECRET_ARN", TLS_SECRET),
        ])
        .unwrap();
        assert_eq!(
            s.tls_secrets.client_certificate,
            Some(FromSecret::Arn(TLS_SECRET.into()))
        );
        let error = s.client_config().unwrap_err();
        assert!(
            matches!(&error, KafkaSetupError::Unresolved { arn, .. } if arn == TLS_SECRET),
            "{error:?}"
        );
        let error = error.to_string();
        assert!(
            error.contains("client certificate") && error.contains("resolve_secrets"),
            "{error}"
        );

        // What resolve_secrets does, without AWS: the secret's text, parsed.
        let text = serde_json::json!({
            "privateKeyPassword": "pa55",
            "certificate": CHAIN,
            "privateKey": KEY,
        })
        .to_string();
        let pem = crate::kafka::parse_client_certificate_secret(TLS_SECRET, &text).unwrap();
        s.tls_secrets.client_certificate = Some(FromSecret::Fetched(pem));
        let c = s.producer_config().unwrap();
        assert_eq!(get(&c, "security.protocol").as_deref(), Some("ssl"));
        assert_eq!(get(&c, "ssl.certificate.pem").as_deref(), Some(CHAIN));
        assert_eq!(get(&c, "ssl.key.pem").as_deref(), Some(KEY));
        assert_eq!(get(&c, "ssl.key.password").as_deref(), Some("pa55"));
        assert_eq!(get(&c, "ssl.ca.location").as_deref(), Some("probe"));
        assert_eq!(get(&c, "ssl.certificate.location"), None);
        assert_eq!(get(&c, "ssl.key.location"), None);
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("MII") && !shown.contains("pa55"),
            "no PEM or password shows: {shown}"
        );

        // An unencrypted key: no password property.
        let text = serde_json::json!({ "certificate": CHAIN, "privateKey": KEY.replace("ENCRYPTED ", "") })
            .to_string();
        let pem = crate::kafka::parse_client_certificate_secret(TLS_SECRET, &text).unwrap();
        s.tls_secrets.client_certificate = Some(FromSecret::Fetched(pem));
        let c = s.client_config().unwrap();
        assert!(get(&c, "ssl.key.pem").is_some());
        assert_eq!(get(&c, "ssl.key.password"), None);
    }

    #[test]
    fn the_client_certificate_secret_goes_alone_and_with_kafka_auth_tls() {
        let tls = [
            ("KAFKA_BOOTSTRAP_SERVERS", "b:9094"),
            ("KAFKA_TLS_SECRET_ARN", TLS_SECRET),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            settings(&[&tls[..], extra].concat())
                .unwrap_err()
                .join("\n")
        };

        let all = with(&[
            ("KAFKA_AUTH", "tls"),
            ("KAFKA_TLS_KEY_PASSWORD", "kp"),
            ("KAFKA_TLS_CERT_PATH", "/no/cert.pem"),
            ("KAFKA_TLS_KEY_PATH", "/no/key.pem"),
        ]);
        assert!(
            all.contains("KAFKA_TLS_SECRET_ARN is set together with KAFKA_TLS_CERT_PATH, KAFKA_TLS_KEY_PATH, KAFKA_TLS_KEY_PASSWORD: give the client certificate one way only"),
            "{all}"
        );
        assert!(!all.contains("kp"), "{all}");

        let all = with(&[]);
        assert!(
            all.contains("needs KAFKA_AUTH=tls, not KAFKA_AUTH=none"),
            "{all}"
        );
        let all = with(&[
            ("KAFKA_AUTH", "scram-sha-512"),
            (
                "KAFKA_SASL_SECRET_ARN",
                "arn:aws:secretsmanager:r:1:secret:s",
            ),
        ]);
        assert!(all.contains("not KAFKA_AUTH=scram-sha-512"), "{all}");
        assert!(all.contains("KAFKA_TLS_CERT_PATH"), "{all}");
        let all = with(&[("KAFKA_AUTH", "iam"), ("AWS_REGION", "eu-west-1")]);
        assert!(all.contains("not KAFKA_AUTH=iam"), "{all}");

        let problems = settings(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "b:9094"),
            ("KAFKA_AUTH", "tls"),
            ("KAFKA_TLS_SECRET_ARN", "kafka-client"),
        ])
        .unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("KAFKA_TLS_SECRET_ARN is not an ARN"),
            "{problems:?}"
        );
    }

    #[test]
    fn root_ca_from_the_mappings_secret_with_any_tls_connection() {
        let mut s = settings(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "b:9096"),
            ("KAFKA_AUTH", "scram-sha-512"),
            ("KAFKA_SASL_USERNAME", "u"),
            ("KAFKA_SASL_PASSWORD", "p"),
            ("KAFKA_TLS_CA_SECRET_ARN", CA_SECRET),
        ])
        .unwrap();
        let error = s.client_config().unwrap_err().to_string();
        assert!(
            error.contains("root CA") && error.contains(CA_SECRET),
            "{error}"
        );
        let text = serde_json::json!({ "certificate": CHAIN }).to_string();
        let ca = crate::kafka::parse_root_ca_secret(CA_SECRET, &text).unwrap();
        s.tls_secrets.ca = Some(FromSecret::Fetched(ca));
        let c = s.client_config().unwrap();
        assert_eq!(get(&c, "ssl.ca.pem").as_deref(), Some(CHAIN));
        assert_eq!(
            get(&c, "ssl.ca.location"),
            None,
            "the secret replaces the probe"
        );

        let problems = settings(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "b:9092"),
            ("KAFKA_AUTH", "plain"),
            ("KAFKA_SASL_USERNAME", "u"),
            ("KAFKA_SASL_PASSWORD", "p"),
            ("KAFKA_SASL_TLS", "false"),
            ("KAFKA_TLS_CA_SECRET_ARN", CA_SECRET),
            ("KAFKA_TLS_CA_PATH", "/etc/hostname"),
        ])
        .unwrap_err()
        .join("\n");
        assert!(
            problems.contains("KAFKA_TLS_CA_SECRET_ARN is set together with KAFKA_TLS_CA_PATH"),
            "{problems}"
        );
        assert!(
            problems.contains("KAFKA_TLS_CA_SECRET_ARN is set but the connection is not TLS"),
            "{problems}"
        );
    }

    /// Every way a secret could reach a problem, an error or `Debug`: `hunter2` never shows.
    #[test]
    fn a_property_problem_never_shows_a_secret() {
        let with = |properties: &str| {
            settings(&[
                ("KAFKA_BOOTSTRAP_SERVERS", "b:9092"),
                ("KAFKA_PROPERTIES", properties),
            ])
        };
        let jaas = r#"sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="hunter2""#;
        for (properties, expected) in [
            (
                "acks=all;sasl.password:hunter2",
                "pair 2 of 2 is not key=value, `=` goes between key and value, not `:`",
            ),
            // A `;` inside a password splits it: the tail has no name.
            ("sasl.password=hun;ter2", "pair 2 of 2 is not key=value"),
            ("sasl.password=x;hunter2", "pair 2 of 2 is not key=value"),
            ("=hunter2", "pair 1 of 1 is not key=value"),
            ("sasl.password hunter2=x", "pair 1 of 1 is not key=value"),
            ("sasl.password:hunter2=x", "pair 1 of 1 is not key=value"),
            (
                jaas,
                "librdkafka refuses sasl.jaas.config: Java JAAS configuration is not supported",
            ),
        ] {
            let problems = with(properties).unwrap_err().join("\n");
            assert!(problems.contains(expected), "{properties}: {problems}");
            for secret in ["hunter2", "hun", "ter2"] {
                assert!(!problems.contains(secret), "{properties}: {problems}");
            }
        }
        // A secret pasted where its ARN belongs.
        let problems = settings(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "b:9096"),
            ("KAFKA_AUTH", "scram-sha-512"),
            (
                "KAFKA_SASL_SECRET_ARN",
                r#"{"username":"u","password":"hunter2"}"#,
            ),
            ("KAFKA_TLS_CA_SECRET_ARN", "hunter2"),
        ])
        .unwrap_err()
        .join("\n");
        assert!(
            problems.contains("KAFKA_SASL_SECRET_ARN is not an ARN (its value is not shown")
                && problems.contains("KAFKA_TLS_CA_SECRET_ARN is not an ARN"),
            "{problems}"
        );
        assert!(!problems.contains("hunter2"), "{problems}");
        // Accepted secrets never show either.
        let s = with(
            "ssl.keystore.password=hunter2; sasl.password=hunter2; sasl.oauthbearer.config=principal=hunter2",
        )
        .unwrap();
        assert_eq!(s.properties.len(), 3);
        assert_eq!(s.properties[2].1, "principal=hunter2");
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("ssl.keystore.password"), "{shown}");

        // A property librdkafka refuses only when a client is created: the error names it and
        // redacts its value.
        let mut s = KafkaSettings::new("b:9092");
        s.properties = vec![(
            "sasl.jaas.config".into(),
            jaas.split_once('=').unwrap().1.into(),
        )];
        let error = s.create_producer().map(|_| ()).unwrap_err();
        for shown in [error.to_string(), format!("{error:?}")] {
            assert!(shown.contains("sasl.jaas.config"), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }

    #[test]
    fn a_refused_secret_value_is_redacted_from_librdkafkas_description() {
        let error = KafkaSetupError::from(KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            r#"Invalid value "hunter2" for configuration property "ssl.key.password""#.into(),
            "ssl.key.password".into(),
            "hunter2".into(),
        ));
        let shown = error.to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains(r#"Invalid value "<redacted>""#), "{shown}");
        // Other values stay: they say what is wrong.
        let error = KafkaSetupError::from(KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            r#"Invalid value "most" for configuration property "acks""#.into(),
            "acks".into(),
            "most".into(),
        ));
        assert!(error.to_string().contains("most"), "{error}");
        let problems = settings(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "b:9092"),
            ("KAFKA_PROPERTIES", "acks=most;linger.ms=5"),
        ])
        .unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("KAFKA_PROPERTIES: librdkafka refuses acks: Invalid value"),
            "{problems:?}"
        );
    }

    #[test]
    fn which_properties_are_secret() {
        for name in [
            "sasl.password",
            "SASL.PASSWORD",
            "ssl.key.password",
            "ssl.key.pem",
            "ssl_key",
            "ssl.keystore.location",
            "ssl.keystore.password",
            "sasl.jaas.config",
            "sasl.oauthbearer.config",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.client.credentials.client.secret",
            "sasl.oauthbearer.assertion.private.key.pem",
            "sasl.oauthbearer.assertion.private.key.passphrase",
            "sasl.oauthbearer.token.endpoint.url",
        ] {
            assert!(KafkaSettings::is_secret_property(name), "{name}");
        }
        for name in [
            "acks",
            "sasl.username",
            "sasl.mechanism",
            "ssl.certificate.pem",
            "ssl.ca.pem",
            "ssl.key.location",
            "client.id",
        ] {
            assert!(!KafkaSettings::is_secret_property(name), "{name}");
        }
    }

    #[test]
    fn every_inconsistency_is_named() {
        let problems = settings(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "b:9092"),
            ("KAFKA_AUTH", "kerberos"),
            ("KAFKA_SASL_USERNAME", "u"),
        ])
        .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("KAFKA_AUTH=\"kerberos\""));
        assert!(problems[1].contains("KAFKA_SASL_USERNAME set, but KAFKA_AUTH=kerberos"));

        let problems = settings(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "b"),
            ("KAFKA_AUTH", "scram-sha-512"),
            ("KAFKA_SASL_USERNAME", "u"),
        ])
        .unwrap_err();
        assert!(
            problems[0].contains("the password is missing"),
            "{problems:?}"
        );

        let problems = settings(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "b"),
            ("KAFKA_AUTH", "scram-sha-512"),
            ("KAFKA_SASL_USERNAME", "u"),
            ("KAFKA_SASL_PASSWORD", "p"),
            (
                "KAFKA_SASL_SECRET_ARN",
                "arn:aws:secretsmanager:r:1:secret:s",
            ),
        ])
        .unwrap_err();
        assert!(problems[0].contains("one way only"), "{problems:?}");

        let problems = settings(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "b"),
            ("KAFKA_AUTH", "iam"),
            ("KAFKA_SASL_TLS", "false"),
        ])
        .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[1].contains("AWS_REGION"));

        let problems = settings(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "b"),
            ("KAFKA_TLS_CERT_PATH", "/no/such/cert.pem"),
            ("KAFKA_PROPERTIES", "acks"),
        ])
        .unwrap_err();
        let all = problems.join("\n");
        assert!(all.contains("not a readable file"), "{all}");
        assert!(all.contains("go together"), "{all}");
        assert!(all.contains("not TLS"), "{all}");
        assert!(all.contains("not key=value"), "{all}");
    }
}
