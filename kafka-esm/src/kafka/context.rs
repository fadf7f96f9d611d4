//! The rdkafka client context: librdkafka's logs go to `tracing`, and for MSK IAM it answers
//! librdkafka's OAUTHBEARER token requests with a SigV4-signed token (librdkafka asks again at 80% of
//! the token's lifetime, so it is refreshed before it expires).

use std::error::Error;
use std::sync::Arc;

use aws_config::Region;
use aws_credential_types::provider::SharedCredentialsProvider;
use rdkafka::ClientContext;
use rdkafka::client::OAuthToken;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;

/// Signs MSK IAM tokens with a credentials provider.
#[derive(Clone)]
pub struct MskIamTokens {
    region: Region,
    credentials: Arc<tokio::sync::OnceCell<SharedCredentialsProvider>>,
    runtime: Option<tokio::runtime::Handle>,
}

impl std::fmt::Debug for MskIamTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MskIamTokens")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl MskIamTokens {
    /// Tokens for `region`, signed with the default AWS credentials chain (Lambda's role),
    /// loaded on first use.
    pub fn new(region: &str) -> Self {
        Self {
            region: Region::new(region.to_owned()),
            credentials: Arc::new(tokio::sync::OnceCell::new()),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Tokens signed with these credentials (tests, or a role assumed elsewhere).
    pub fn with_credentials(region: &str, credentials: SharedCredentialsProvider) -> Self {
        let tokens = Self::new(region);
        let _ = tokens.credentials.set(credentials);
        tokens
    }

    /// A fresh token and its expiry (epoch milliseconds).
    pub async fn generate(&self) -> Result<(String, i64), Box<dyn Error + Send + Sync>> {
        let region = self.region.clone();
        let credentials = self
            .credentials
            .get_or_init(|| async {
                let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(region.clone())
                    .load()
                    .await;
                config
                    .credentials_provider()
                    .expect("the default chain always has a provider")
            })
            .await
            .clone();
        aws_msk_iam_sasl_signer::generate_auth_token_from_credentials_provider(
            self.region.clone(),
            credentials,
        )
        .await
        .map_err(|e| format!("cannot sign an MSK IAM token for {}: {e}", self.region).into())
    }

    /// [`Self::generate`] from a thread that is not a tokio worker (librdkafka's).
    fn generate_blocking(&self) -> Result<(String, i64), Box<dyn Error + Send + Sync>> {
        let runtime = match &self.runtime {
            Some(handle) => handle.clone(),
            None => {
                return Err(
                    "MSK IAM tokens need a tokio runtime: create the client inside one".into(),
                );
            }
        };
        // A scoped thread: safe whether or not the caller is itself inside the runtime.
        std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(self.generate()))
                .join()
                .map_err(|_| -> Box<dyn Error + Send + Sync> {
                    "the token signer panicked".into()
                })?
        })
    }
}

/// The context of every Kafka client of this crate.
#[derive(Clone, Debug, Default)]
pub struct KafkaClientContext {
    iam: Option<MskIamTokens>,
}

impl KafkaClientContext {
    /// No OAUTHBEARER tokens.
    pub fn plain() -> Self {
        Self::default()
    }

    /// MSK IAM tokens for `region` from the default credentials chain.
    pub fn msk_iam(region: &str) -> Self {
        Self {
            iam: Some(MskIamTokens::new(region)),
        }
    }

    /// MSK IAM tokens from these signers.
    pub fn with_tokens(tokens: MskIamTokens) -> Self {
        Self { iam: Some(tokens) }
    }
}

impl ClientContext for KafkaClientContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn generate_oauth_token(&self, _config: Option<&str>) -> Result<OAuthToken, Box<dyn Error>> {
        let tokens = self
            .iam
            .as_ref()
            .ok_or("the brokers asked for an OAUTHBEARER token but KAFKA_AUTH is not iam")?;
        let (token, lifetime_ms) = tokens
            .generate_blocking()
            .map_err(|e| -> Box<dyn Error> { e.to_string().into() })?;
        Ok(OAuthToken {
            token,
            principal_name: "msk-iam".into(),
            lifetime_ms,
        })
    }
}

impl ConsumerContext for KafkaClientContext {}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;
    use base64::Engine as _;

    fn tokens() -> MskIamTokens {
        let credentials =
            Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG", None, None, "test");
        MskIamTokens::with_credentials("eu-west-1", SharedCredentialsProvider::new(credentials))
    }

    fn check(token: &str, lifetime_ms: i64) {
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .expect("base64url without padding");
        let url = String::from_utf8(url).unwrap();
        assert!(
            url.starts_with(
                "https://kafka.eu-west-1.amazonaws.com/?Action=kafka-cluster%3AConnect"
            ),
            "{url}"
        );
        for part in [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Credential=AKIDEXAMPLE%2F",
            "%2Feu-west-1%2Fkafka-cluster%2Faws4_request",
            "X-Amz-Expires=900",
            "X-Amz-SignedHeaders=host",
            "X-Amz-Signature=",
            "User-Agent=",
        ] {
            assert!(url.contains(part), "{part} missing from {url}");
        }
        let signature = url
            .split("X-Amz-Signature=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        assert_eq!(signature.len(), 64, "a hex SHA-256 signature");
        let now = crate::retry::now_ms() as i64;
        assert!(
            (now + 800_000..=now + 901_000).contains(&lifetime_ms),
            "expires in about 15 minutes: {lifetime_ms} vs {now}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_msk_iam_token_has_the_presigned_form_and_expiry() {
        let (token, lifetime_ms) = tokens().generate().await.unwrap();
        check(&token, lifetime_ms);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn librdkafka_gets_tokens_through_the_context_from_its_own_thread() {
        let context = KafkaClientContext::with_tokens(tokens());
        // librdkafka calls this from its background thread; call it from a plain thread likewise.
        let token = std::thread::spawn(move || {
            context
                .generate_oauth_token(None)
                .map_err(|e| e.to_string())
        })
        .join()
        .unwrap()
        .unwrap();
        assert_eq!(token.principal_name, "msk-iam");
        check(&token.token, token.lifetime_ms);
    }

    #[test]
    fn a_context_without_iam_refuses_to_make_tokens() {
        let Err(error) = KafkaClientContext::plain().generate_oauth_token(None) else {
            panic!("a token without MSK IAM")
        };
        assert!(error.to_string().contains("KAFKA_AUTH is not iam"));
    }
}
