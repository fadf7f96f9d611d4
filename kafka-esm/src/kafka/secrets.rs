//! Kafka credentials from AWS Secrets Manager, in the formats the event source mapping reads:
//! SASL `{"username": "...", "password": "..."}` (`SASL_SCRAM_*_AUTH`, `BASIC_AUTH`), a client
//! certificate `{"certificate": "<PEM chain>", "privateKey": "<PEM>"[, "privateKeyPassword": "..."]}`
//! (`CLIENT_CERTIFICATE_TLS_AUTH`) and a root CA `{"certificate": "<PEM>"}`
//! (`SERVER_ROOT_CA_CERTIFICATE`). The endpoint follows the AWS SDK's usual settings
//! (`AWS_ENDPOINT_URL_SECRETS_MANAGER` or `AWS_ENDPOINT_URL` point it at a local server).

use std::fmt;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::settings::{ClientCertificatePem, Secret};

/// The SASL secret's format, for messages.
const SASL_FORMAT: &str = r#"JSON {"username": "...", "password": "..."}"#;
/// The client certificate secret's format, for messages.
const CLIENT_CERTIFICATE_FORMAT: &str = r#"a CLIENT_CERTIFICATE_TLS_AUTH secret, JSON {"certificate": "<PEM chain>", "privateKey": "<PEM>"[, "privateKeyPassword": "..."]}"#;
/// The root CA secret's format, for messages.
const ROOT_CA_FORMAT: &str =
    r#"a SERVER_ROOT_CA_CERTIFICATE secret, JSON {"certificate": "<PEM>"}"#;

/// A secret could not be used. The message never contains the secret's value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Secrets Manager refused or failed.
    #[error(
        "cannot read secret {arn} from Secrets Manager: {message}; check the ARN and that the function's role may call secretsmanager:GetSecretValue on it (and kms:Decrypt on its key)"
    )]
    Fetch {
        /// The secret.
        arn: String,
        /// What Secrets Manager said.
        message: String,
    },
    /// The SASL secret is not `{"username","password"}`.
    #[error("secret {arn} is not {SASL_FORMAT}: {problem}")]
    Shape {
        /// The secret.
        arn: String,
        /// What is wrong (never the value).
        problem: &'static str,
    },
    /// A TLS secret (client certificate or root CA) is not in the mapping's format.
    #[error("secret {arn} is not {expected}: {problem}")]
    TlsShape {
        /// The secret.
        arn: String,
        /// The format it should have.
        expected: &'static str,
        /// What is wrong, naming the field (never the value).
        problem: TlsSecretProblem,
    },
}

/// What is wrong with a TLS secret. It names a field, never holds a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsSecretProblem {
    /// The secret string is not a JSON object.
    NotJson,
    /// The field is absent, null or empty.
    Missing(&'static str),
    /// The field is not a string.
    NotString(&'static str),
    /// The field holds no PEM block (no `-----BEGIN`).
    NotPem(&'static str),
    /// `privateKey` is an encrypted PEM key but `privateKeyPassword` is missing.
    EncryptedKeyWithoutPassword,
}

impl fmt::Display for TlsSecretProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotJson => f.write_str("it is not a JSON object"),
            Self::Missing(field) => write!(f, "`{field}` is missing or empty"),
            Self::NotString(field) => write!(f, "`{field}` is not a string"),
            Self::NotPem(field) => write!(f, "`{field}` is not PEM (no \"-----BEGIN\" line)"),
            Self::EncryptedKeyWithoutPassword => f.write_str(
                "`privateKey` is encrypted (BEGIN ENCRYPTED PRIVATE KEY) but `privateKeyPassword` is missing",
            ),
        }
    }
}

#[derive(Deserialize)]
struct SaslSecret {
    username: Option<String>,
    password: Option<String>,
}

/// Reads `{"username","password"}` out of a secret string.
pub fn parse_sasl_secret(arn: &str, text: &str) -> Result<(String, Secret), SecretError> {
    let shape = |problem| SecretError::Shape {
        arn: arn.to_owned(),
        problem,
    };
    let secret: SaslSecret =
        serde_json::from_str(text).map_err(|_| shape("it is not a JSON object"))?;
    let username = secret
        .username
        .filter(|u| !u.is_empty())
        .ok_or_else(|| shape("`username` is missing or empty"))?;
    let password = secret
        .password
        .filter(|p| !p.is_empty())
        .ok_or_else(|| shape("`password` is missing or empty"))?;
    Ok((username, Secret::new(password)))
}

/// A string field of a JSON object: `None` when absent, null or empty.
fn text_field<'a>(
    object: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, TlsSecretProblem> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(TlsSecretProblem::NotString(field)),
    }
}

/// A required PEM field.
fn pem_field<'a>(
    object: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a str, TlsSecretProblem> {
    let text = text_field(object, field)?.ok_or(TlsSecretProblem::Missing(field))?;
    if text.contains("-----BEGIN") {
        Ok(text)
    } else {
        Err(TlsSecretProblem::NotPem(field))
    }
}

fn json_object(text: &str) -> Result<Map<String, Value>, TlsSecretProblem> {
    match serde_json::from_str(text) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(TlsSecretProblem::NotJson),
    }
}

/// Reads a `CLIENT_CERTIFICATE_TLS_AUTH` secret string: `certificate` (the PEM chain, client
/// certificate first), `privateKey` (PEM, PKCS #8) and, for an encrypted key, `privateKeyPassword`.
pub fn parse_client_certificate_secret(
    arn: &str,
    text: &str,
) -> Result<ClientCertificatePem, SecretError> {
    let parse = || {
        let object = json_object(text)?;
        let certificate = pem_field(&object, "certificate")?;
        let key = pem_field(&object, "privateKey")?;
        let key_password = text_field(&object, "privateKeyPassword")?;
        if key_password.is_none() && key.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            return Err(TlsSecretProblem::EncryptedKeyWithoutPassword);
        }
        Ok(ClientCertificatePem {
            certificate: Secret::new(certificate),
            key: Secret::new(key),
            key_password: key_password.map(Secret::new),
        })
    };
    parse().map_err(|problem| SecretError::TlsShape {
        arn: arn.to_owned(),
        expected: CLIENT_CERTIFICATE_FORMAT,
        problem,
    })
}

/// Reads a `SERVER_ROOT_CA_CERTIFICATE` secret string: `certificate`, the brokers' root CA (PEM).
pub fn parse_root_ca_secret(arn: &str, text: &str) -> Result<String, SecretError> {
    json_object(text)
        .and_then(|object| pem_field(&object, "certificate").map(str::to_owned))
        .map_err(|problem| SecretError::TlsShape {
            arn: arn.to_owned(),
            expected: ROOT_CA_FORMAT,
            problem,
        })
}

/// Fetches a secret's string value (also the schema registry's secrets: `crate::registry`).
pub(crate) async fn fetch_secret_string(arn: &str) -> Result<String, SecretError> {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let fetch = |message: String| SecretError::Fetch {
        arn: arn.to_owned(),
        message,
    };
    let output = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| fetch(aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string()))?;
    output
        .secret_string()
        .map(str::to_owned)
        .ok_or_else(|| fetch("the secret has no string value (a binary secret?)".into()))
}

/// Fetches and parses a SASL secret.
pub(super) async fn fetch_sasl_secret(arn: &str) -> Result<(String, Secret), SecretError> {
    parse_sasl_secret(arn, &fetch_secret_string(arn).await?)
}

/// Fetches and parses a client certificate secret.
pub(super) async fn fetch_client_certificate_secret(
    arn: &str,
) -> Result<ClientCertificatePem, SecretError> {
    parse_client_certificate_secret(arn, &fetch_secret_string(arn).await?)
}

/// Fetches and parses a root CA secret.
pub(super) async fn fetch_root_ca_secret(arn: &str) -> Result<String, SecretError> {
    parse_root_ca_secret(arn, &fetch_secret_string(arn).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_esm_secret_format() {
        let (user, password) =
            parse_sasl_secret("arn", r#"{"username":"alice","password":"s3cret"}"#).unwrap();
        assert_eq!(user, "alice");
        assert_eq!(password.expose(), "s3cret");
    }

    #[test]
    fn says_what_is_wrong_without_the_value() {
        for (text, expected) in [
            ("s3cret-plain-text", "not a JSON object"),
            (
                r#"{"user":"alice","password":"s3cret"}"#,
                "`username` is missing",
            ),
            (
                r#"{"username":"alice","password":""}"#,
                "`password` is missing or empty",
            ),
        ] {
            let error = parse_sasl_secret("arn:x", text).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
            assert!(!error.contains("s3cret"), "the secret leaked: {error}");
        }
    }

    // Not real keys: only their PEM framing matters here. The marker `s3cret` stands for the
    // key material, which must never appear in a message.
    const CHAIN: &str = "-----BEGIN CERTIFICATE-----\nMIIclient\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nMIIroot\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIs3cret\n-----END PRIVATE KEY-----\n";
    const ENCRYPTED_KEY: &str =
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIs3cret\n-----END ENCRYPTED PRIVATE KEY-----\n";

    fn secret_json(fields: &[(&str, serde_json::Value)]) -> String {
        let object: Map<String, Value> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        Value::Object(object).to_string()
    }

    #[test]
    fn reads_the_client_certificate_secret_with_and_without_a_password() {
        let text = secret_json(&[("certificate", CHAIN.into()), ("privateKey", KEY.into())]);
        let pem = parse_client_certificate_secret("arn:x", &text).unwrap();
        assert_eq!(pem.certificate.expose(), CHAIN, "the whole chain is kept");
        assert_eq!(pem.key.expose(), KEY);
        assert_eq!(pem.key_password, None);

        // The AWS guide's example: an encrypted key and its password; an empty password is none.
        let text = secret_json(&[
            ("privateKeyPassword", "s3cret-pass".into()),
            ("certificate", CHAIN.into()),
            ("privateKey", ENCRYPTED_KEY.into()),
        ]);
        let pem = parse_client_certificate_secret("arn:x", &text).unwrap();
        assert_eq!(pem.key.expose(), ENCRYPTED_KEY);
        assert_eq!(
            pem.key_password.as_ref().map(Secret::expose),
            Some("s3cret-pass")
        );
        let shown = format!("{pem:?}");
        assert!(!shown.contains("s3cret"), "Debug shows no key: {shown}");
        assert!(
            !shown.contains("MII"),
            "Debug shows no certificate: {shown}"
        );

        let text = secret_json(&[
            ("certificate", CHAIN.into()),
            ("privateKey", KEY.into()),
            ("privateKeyPassword", "".into()),
        ]);
        let pem = parse_client_certificate_secret("arn:x", &text).unwrap();
        assert_eq!(pem.key_password, None);
    }

    #[test]
    fn a_bad_client_certificate_secret_names_the_field_not_the_value() {
        for (text, expected) in [
            ("s3cret-plain-text".to_owned(), TlsSecretProblem::NotJson),
            (format!("[{:?}]", KEY), TlsSecretProblem::NotJson),
            (
                secret_json(&[("privateKey", KEY.into())]),
                TlsSecretProblem::Missing("certificate"),
            ),
            (
                secret_json(&[("certificate", CHAIN.into())]),
                TlsSecretProblem::Missing("privateKey"),
            ),
            (
                secret_json(&[("certificate", CHAIN.into()), ("private_key", KEY.into())]),
                TlsSecretProblem::Missing("privateKey"),
            ),
            (
                secret_json(&[
                    ("certificate", "MIIs3cret".into()),
                    ("privateKey", KEY.into()),
                ]),
                TlsSecretProblem::NotPem("certificate"),
            ),
            (
                secret_json(&[
                    ("certificate", CHAIN.into()),
                    ("privateKey", "MIIs3cret".into()),
                ]),
                TlsSecretProblem::NotPem("privateKey"),
            ),
            (
                secret_json(&[
                    ("certificate", CHAIN.into()),
                    ("privateKey", serde_json::json!({ "pem": KEY })),
                ]),
                TlsSecretProblem::NotString("privateKey"),
            ),
            (
                secret_json(&[
                    ("certificate", CHAIN.into()),
                    ("privateKey", KEY.into()),
                    ("privateKeyPassword", 1234.into()),
                ]),
                TlsSecretProblem::NotString("privateKeyPassword"),
            ),
            (
                secret_json(&[
                    ("certificate", CHAIN.into()),
                    ("privateKey", ENCRYPTED_KEY.into()),
                ]),
                TlsSecretProblem::EncryptedKeyWithoutPassword,
            ),
        ] {
            let error = parse_client_certificate_secret("arn:x", &text).unwrap_err();
            let SecretError::TlsShape { problem, .. } = &error else {
                panic!("{error:?}")
            };
            assert_eq!(*problem, expected, "{text}");
            let message = error.to_string();
            assert!(message.contains("CLIENT_CERTIFICATE_TLS_AUTH"), "{message}");
            assert!(!message.contains("s3cret"), "the key leaked: {message}");
            assert!(!message.contains("MII"), "the content leaked: {message}");
        }
    }

    #[test]
    fn reads_the_root_ca_secret() {
        let text = secret_json(&[("certificate", CHAIN.into())]);
        assert_eq!(parse_root_ca_secret("arn:x", &text).unwrap(), CHAIN);
        let error = parse_root_ca_secret("arn:x", r#"{"certificate":"MIIroot"}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("SERVER_ROOT_CA_CERTIFICATE"), "{error}");
        assert!(error.contains("`certificate` is not PEM"), "{error}");
        assert!(!error.contains("MII"), "{error}");
    }
}
