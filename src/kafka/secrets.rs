//! SASL credentials from AWS Secrets Manager: the secret format of the ESM's `SASL_SCRAM_*_AUTH`
//! (`{"username": "...", "password": "..."}`). The endpoint follows the AWS SDK's usual settings
//! (`AWS_ENDPOINT_URL_SECRETS_MANAGER` or `AWS_ENDPOINT_URL` point it at a local server).

use serde::Deserialize;

use super::settings::Secret;

/// The SASL secret could not be used. The message never contains the secret's value.
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
    /// The secret is not `{"username","password"}`.
    #[error("secret {arn} is not JSON {{\"username\": \"...\", \"password\": \"...\"}}: {problem}")]
    Shape {
        /// The secret.
        arn: String,
        /// What is wrong (never the value).
        problem: &'static str,
    },
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

/// Fetches and parses the secret.
pub(super) async fn fetch_sasl_secret(arn: &str) -> Result<(String, Secret), SecretError> {
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
    let text = output
        .secret_string()
        .ok_or_else(|| fetch("the secret has no string value (a binary secret?)".into()))?;
    parse_sasl_secret(arn, text)
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
}
