//! Which schema source a function uses, from its environment (see the table in [`super`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::env::{ConfigError, EnvReader};
use crate::format::{LocalDirectory, Schema, SchemaCache, SchemaError, SchemaId, SchemaSource};

use super::RegistryError;

/// How long one registry request may take, connection included, unless
/// `SCHEMA_REGISTRY_TIMEOUT_SECONDS` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a function's schemas come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaSourceConfig {
    /// `SCHEMA_DIR`: files named after their ids ([`LocalDirectory`]).
    Directory(PathBuf),
    /// `SCHEMA_REGISTRY_URL=https://…`: a Confluent Schema Registry.
    Confluent(ConfluentConfig),
    /// `SCHEMA_REGISTRY_URL=arn:aws:glue:…:registry/…`: an AWS Glue Schema Registry.
    Glue(GlueConfig),
}

/// A Confluent Schema Registry and how to authenticate with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfluentConfig {
    /// The registry's base URL (`https://host[:port][/path]`), without a trailing `/`.
    pub url: String,
    /// How requests authenticate.
    pub auth: RegistryAuth,
    /// `SCHEMA_REGISTRY_TLS_SECRET_ARN`: a `CLIENT_CERTIFICATE_TLS_AUTH` secret, for mutual TLS.
    pub client_certificate_secret_arn: Option<String>,
    /// `SCHEMA_REGISTRY_CA_SECRET_ARN`: a `SERVER_ROOT_CA_CERTIFICATE` secret, the registry's root
    /// CA, trusted instead of the system's roots.
    pub root_ca_secret_arn: Option<String>,
    /// How long one request may take.
    pub timeout: Duration,
}

/// How requests to a Confluent registry authenticate (`SCHEMA_REGISTRY_AUTH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryAuth {
    /// No `Authorization` header (mutual TLS may still authenticate).
    None,
    /// HTTP basic authentication with a `BASIC_AUTH` secret's `username` and `password`.
    Basic {
        /// The secret's ARN.
        secret_arn: String,
    },
    /// A bearer token: a secret `{"token": "..."}`, or the token as the whole secret string.
    Bearer {
        /// The secret's ARN.
        secret_arn: String,
    },
}

/// An AWS Glue Schema Registry, named by its ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlueConfig {
    /// `arn:PARTITION:glue:REGION:ACCOUNT:registry/NAME`.
    pub registry_arn: String,
    /// The registry's region, from its ARN: the Glue client asks there.
    pub region: String,
    /// The registry's name, from its ARN.
    pub registry_name: String,
    /// How long one `GetSchemaVersion` may take, its retries included.
    pub timeout: Duration,
}

impl GlueConfig {
    /// Reads a Glue registry ARN: `arn:PARTITION:glue:REGION:ACCOUNT:registry/NAME`.
    pub fn from_arn(arn: &str, timeout: Duration) -> Result<Self, String> {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let expected = "expected arn:aws:glue:REGION:ACCOUNT:registry/NAME";
        let [scheme, partition, service, region, account, resource] = parts[..] else {
            return Err(format!("{arn:?} is not an ARN: {expected}"));
        };
        if scheme != "arn" || partition.is_empty() || service != "glue" {
            return Err(format!("{arn:?} is not a Glue ARN: {expected}"));
        }
        if region.is_empty() {
            return Err(format!("{arn:?} names no region: {expected}"));
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{arn:?} does not name a 12-digit account: {expected}"
            ));
        }
        let Some(name) = resource.strip_prefix("registry/").filter(|n| !n.is_empty()) else {
            return Err(format!(
                "{arn:?} is not a registry's ARN (a schema's ARN names schema/REGISTRY/NAME): {expected}"
            ));
        };
        Ok(Self {
            registry_arn: arn.to_owned(),
            region: region.to_owned(),
            registry_name: name.to_owned(),
            timeout,
        })
    }
}

/// The variables that only a Confluent registry reads.
const CONFLUENT_ONLY: [&str; 4] = [
    "SCHEMA_REGISTRY_AUTH",
    "SCHEMA_REGISTRY_SECRET_ARN",
    "SCHEMA_REGISTRY_TLS_SECRET_ARN",
    "SCHEMA_REGISTRY_CA_SECRET_ARN",
];

impl SchemaSourceConfig {
    /// Reads the process environment: `Ok(None)` when it names no schema source.
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (tests pass a map).
    pub fn from_lookup(
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let mut r = EnvReader::new(lookup);
        let config = Self::read(&mut r);
        ConfigError::from_reader(r, config)
    }

    /// Reads the variables through `r`, which keeps every problem found (read it after
    /// [`ConsumerConfig::read`](crate::ConsumerConfig::read) to report them with the others).
    /// `None` when no source is named, or when what is named cannot be used.
    pub fn read(r: &mut EnvReader<'_>) -> Option<Self> {
        let timeout = Duration::from_secs(r.number(
            "SCHEMA_REGISTRY_TIMEOUT_SECONDS",
            DEFAULT_TIMEOUT.as_secs(),
            1,
            120,
        ));
        let dir = r.text("SCHEMA_DIR");
        let Some(url) = r.text("SCHEMA_REGISTRY_URL") else {
            for name in CONFLUENT_ONLY {
                if r.text(name).is_some() {
                    r.problem(format!(
                        "{name} is set but SCHEMA_REGISTRY_URL is not: set the registry's URL, or unset {name}"
                    ));
                }
            }
            return dir.and_then(|dir| read_dir(r, dir));
        };
        if dir.is_some() {
            r.problem("SCHEMA_DIR and SCHEMA_REGISTRY_URL are both set: a function reads its schemas from one source; unset one");
            return None;
        }
        if url.starts_with("arn:") {
            return read_glue(r, &url, timeout);
        }
        read_confluent(r, &url, timeout)
    }

    /// The source behind a new per-container [`SchemaCache`]: fetches the secrets the
    /// configuration names (once: call it at start-up) and builds the registry's client.
    pub async fn open(&self) -> Result<Arc<SchemaCache>, RegistryError> {
        Ok(Arc::new(SchemaCache::from_boxed(self.source().await?)))
    }

    /// The source itself: the directory, or the registry's client (its secrets fetched).
    async fn source(&self) -> Result<Box<dyn SchemaSource>, RegistryError> {
        Ok(match self {
            Self::Directory(dir) => Box::new(LocalDirectory::new(dir)),
            #[cfg(feature = "confluent-registry")]
            Self::Confluent(config) => {
                Box::new(super::ConfluentRegistry::from_config(config).await?)
            }
            #[cfg(not(feature = "confluent-registry"))]
            Self::Confluent(_) => {
                return Err(RegistryError::FeatureMissing {
                    registry: "a Confluent schema registry",
                    feature: "confluent-registry",
                });
            }
            #[cfg(feature = "glue-registry")]
            Self::Glue(config) => Box::new(super::GlueRegistry::from_config(config).await),
            #[cfg(not(feature = "glue-registry"))]
            Self::Glue(_) => {
                return Err(RegistryError::FeatureMissing {
                    registry: "an AWS Glue schema registry",
                    feature: "glue-registry",
                });
            }
        })
    }

    /// A per-container [`SchemaCache`] at once, without waiting: a directory is opened now; a
    /// registry is set up ([`Self::open`]) on the first schema asked for, and a setup that fails
    /// then (a secret that cannot be read) makes that lookup, and the next, transient
    /// ([`SchemaError::Unavailable`]): the records are retried, never dead-lettered for it. For
    /// tools that build handlers synchronously; a Lambda opens at start-up, to fail fast.
    pub fn open_lazily(&self) -> Arc<SchemaCache> {
        match self {
            Self::Directory(dir) => Arc::new(SchemaCache::new(LocalDirectory::new(dir))),
            registry => Arc::new(SchemaCache::new(Lazy {
                config: registry.clone(),
                opened: tokio::sync::OnceCell::new(),
            })),
        }
    }

    /// What to call the source in messages: the directory, the registry's URL or ARN.
    pub fn name(&self) -> String {
        match self {
            Self::Directory(dir) => dir.display().to_string(),
            Self::Confluent(config) => config.url.clone(),
            Self::Glue(config) => config.registry_arn.clone(),
        }
    }
}

/// A registry set up on first use ([`SchemaSourceConfig::open_lazily`]); the cache around it
/// keeps what it answers.
struct Lazy {
    config: SchemaSourceConfig,
    opened: tokio::sync::OnceCell<Box<dyn SchemaSource>>,
}

#[async_trait::async_trait]
impl SchemaSource for Lazy {
    async fn schema(&self, id: &SchemaId) -> Result<Schema, SchemaError> {
        let source = self
            .opened
            .get_or_try_init(|| self.config.source())
            .await
            .map_err(|e| SchemaError::Unavailable {
                id: *id,
                message: format!("the schema registry cannot be set up: {e}"),
            })?;
        source.schema(id).await
    }

    fn name(&self) -> String {
        self.config.name()
    }
}

fn read_dir(r: &mut EnvReader<'_>, dir: String) -> Option<SchemaSourceConfig> {
    let path = PathBuf::from(&dir);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => Some(SchemaSourceConfig::Directory(path)),
        Ok(_) => {
            r.problem(format!(
                "SCHEMA_DIR={dir:?} is not a directory: expected a directory of schema files named <id>.avsc, <id>.proto or <id>.json"
            ));
            None
        }
        Err(e) => {
            r.problem(format!(
                "SCHEMA_DIR={dir:?} cannot be read ({e}): expected a directory of schema files named <id>.avsc, <id>.proto or <id>.json"
            ));
            None
        }
    }
}

fn read_glue(r: &mut EnvReader<'_>, arn: &str, timeout: Duration) -> Option<SchemaSourceConfig> {
    for name in CONFLUENT_ONLY {
        if r.text(name).is_some() {
            r.problem(format!(
                "{name} is set but SCHEMA_REGISTRY_URL names an AWS Glue registry, which takes no secret: the function's role needs glue:GetSchemaVersion instead; unset {name}"
            ));
        }
    }
    let config = match GlueConfig::from_arn(arn, timeout) {
        Ok(config) => config,
        Err(problem) => {
            r.problem(format!(
                "SCHEMA_REGISTRY_URL: {problem} (or https://… for a Confluent registry)"
            ));
            return None;
        }
    };
    if !cfg!(feature = "glue-registry") {
        r.problem("SCHEMA_REGISTRY_URL names an AWS Glue registry, but this build of kafka-esm has no `glue-registry` feature: enable it");
        return None;
    }
    Some(SchemaSourceConfig::Glue(config))
}

/// A secret's ARN from `name`, checked to look like one (its value is not shown: it may be the
/// secret itself).
fn secret_arn(r: &mut EnvReader<'_>, name: &str) -> Option<String> {
    let arn = r.text(name)?;
    if !arn.starts_with("arn:") || !arn.contains(":secretsmanager:") {
        r.problem(format!(
            "{name} is not a Secrets Manager ARN (its value is not shown: it may be the secret itself): expected arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME"
        ));
        return None;
    }
    Some(arn)
}

fn read_confluent(
    r: &mut EnvReader<'_>,
    url: &str,
    timeout: Duration,
) -> Option<SchemaSourceConfig> {
    // A URL with credentials in it is not repeated.
    let shown = if url_has_userinfo(url) {
        String::new()
    } else {
        format!("={url:?}")
    };
    let url_ok = match url_problem(url) {
        None => true,
        Some(problem) => {
            r.problem(format!(
                "SCHEMA_REGISTRY_URL{shown} {problem}: expected https://HOST[:PORT][/PATH] (a Confluent registry) or arn:aws:glue:REGION:ACCOUNT:registry/NAME"
            ));
            false
        }
    };
    let secret_set = r.text("SCHEMA_REGISTRY_SECRET_ARN").is_some();
    let secret = secret_arn(r, "SCHEMA_REGISTRY_SECRET_ARN");
    let mode = r
        .text("SCHEMA_REGISTRY_AUTH")
        .map(|v| v.to_ascii_lowercase());
    let auth = match mode.as_deref() {
        None if secret_set => secret.map(|secret_arn| RegistryAuth::Basic { secret_arn }),
        None | Some("none") => {
            if secret_set {
                r.problem("SCHEMA_REGISTRY_SECRET_ARN is set but SCHEMA_REGISTRY_AUTH=none: set SCHEMA_REGISTRY_AUTH=basic or bearer, or unset the secret");
                None
            } else {
                Some(RegistryAuth::None)
            }
        }
        Some(mode @ ("basic" | "bearer")) => match (secret, secret_set) {
            (Some(secret_arn), _) if mode == "basic" => Some(RegistryAuth::Basic { secret_arn }),
            (Some(secret_arn), _) => Some(RegistryAuth::Bearer { secret_arn }),
            (None, true) => None,
            (None, false) => {
                r.problem(format!(
                    "SCHEMA_REGISTRY_AUTH={mode} needs SCHEMA_REGISTRY_SECRET_ARN: {}",
                    if mode == "basic" {
                        r#"a BASIC_AUTH secret {"username": "...", "password": "..."}"#
                    } else {
                        r#"a secret {"token": "..."}"#
                    }
                ));
                None
            }
        },
        Some(other) => {
            r.problem(format!(
                "SCHEMA_REGISTRY_AUTH={other:?} is not valid: expected basic, bearer or none"
            ));
            None
        }
    };
    let client_certificate_secret_arn = secret_arn(r, "SCHEMA_REGISTRY_TLS_SECRET_ARN");
    let root_ca_secret_arn = secret_arn(r, "SCHEMA_REGISTRY_CA_SECRET_ARN");
    if url.starts_with("http://")
        && (client_certificate_secret_arn.is_some() || root_ca_secret_arn.is_some())
    {
        r.problem(format!(
            "SCHEMA_REGISTRY_URL{shown} is plain http but TLS secrets are set: use https://"
        ));
    }
    if !cfg!(feature = "confluent-registry") {
        r.problem("SCHEMA_REGISTRY_URL names a Confluent registry, but this build of kafka-esm has no `confluent-registry` feature: enable it");
        return None;
    }
    let auth = auth?;
    url_ok.then(|| {
        SchemaSourceConfig::Confluent(ConfluentConfig {
            url: url.trim_end_matches('/').to_owned(),
            auth,
            client_certificate_secret_arn,
            root_ca_secret_arn,
            timeout,
        })
    })
}

fn url_has_userinfo(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split('/').next().unwrap_or_default().contains('@')
}

/// What is wrong with a registry base URL, if anything.
pub(crate) fn url_problem(url: &str) -> Option<&'static str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let Some(rest) = rest else {
        return Some("is neither an https:// URL nor an ARN");
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if url_has_userinfo(url) {
        return Some(
            "holds credentials: put them in a secret (SCHEMA_REGISTRY_SECRET_ARN) instead",
        );
    }
    if authority.is_empty() {
        return Some("names no host");
    }
    if url.contains(['?', '#']) || url.chars().any(char::is_whitespace) {
        return Some("has a query, a fragment or spaces");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[tokio::test]
    async fn a_lazily_opened_source_is_a_directory_now_or_a_registry_on_first_use() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("7.avsc"), r#""string""#).unwrap();
        let cache = SchemaSourceConfig::Directory(dir.path().into()).open_lazily();
        assert!(
            cache.get_now(&SchemaId::Confluent(7)).is_ok(),
            "a directory answers at once"
        );
        // A registry whose client cannot be set up: each lookup is transient (retried), never
        // poison, and says why.
        let cache = SchemaSourceConfig::Confluent(ConfluentConfig {
            url: "ftp://registry.example".into(),
            auth: RegistryAuth::None,
            client_certificate_secret_arn: None,
            root_ca_secret_arn: None,
            timeout: Duration::from_secs(1),
        })
        .open_lazily();
        assert_eq!(cache.source_name(), "ftp://registry.example");
        for _ in 0..2 {
            let error = cache.get(&SchemaId::Confluent(7)).await.unwrap_err();
            assert!(error.is_transient(), "{error}");
            assert!(error.to_string().contains("cannot be set up"), "{error}");
        }
    }

    fn read(vars: &[(&str, &str)]) -> Result<Option<SchemaSourceConfig>, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SchemaSourceConfig::from_lookup(&|name| map.get(name).cloned())
    }

    const SECRET: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:registry-AbCdEf";
    const GLUE: &str = "arn:aws:glue:eu-west-1:123456789012:registry/payments";

    #[test]
    fn no_variable_names_no_source() {
        assert_eq!(read(&[]), Ok(None));
        assert_eq!(read(&[("SCHEMA_REGISTRY_URL", "  ")]), Ok(None));
    }

    #[test]
    fn a_directory_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap();
        assert_eq!(
            read(&[("SCHEMA_DIR", path)]),
            Ok(Some(SchemaSourceConfig::Directory(dir.path().into())))
        );
        let missing = format!("{path}/nowhere");
        let e = read(&[("SCHEMA_DIR", &missing)]).unwrap_err();
        assert!(e.problems[0].contains("SCHEMA_DIR"), "{e}");
    }

    #[cfg(feature = "confluent-registry")]
    #[test]
    fn a_confluent_url_with_basic_auth_by_default_when_a_secret_is_named() {
        let config = read(&[
            (
                "SCHEMA_REGISTRY_URL",
                "https://psrc-123.eu-west-1.aws.confluent.cloud/",
            ),
            ("SCHEMA_REGISTRY_SECRET_ARN", SECRET),
            ("SCHEMA_REGISTRY_TIMEOUT_SECONDS", "3"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            config,
            SchemaSourceConfig::Confluent(ConfluentConfig {
                url: "https://psrc-123.eu-west-1.aws.confluent.cloud".into(),
                auth: RegistryAuth::Basic {
                    secret_arn: SECRET.into()
                },
                client_certificate_secret_arn: None,
                root_ca_secret_arn: None,
                timeout: Duration::from_secs(3),
            })
        );
        let config = read(&[
            ("SCHEMA_REGISTRY_URL", "https://registry.internal:8081/sr"),
            ("SCHEMA_REGISTRY_AUTH", "Bearer"),
            ("SCHEMA_REGISTRY_SECRET_ARN", SECRET),
            ("SCHEMA_REGISTRY_TLS_SECRET_ARN", SECRET),
            ("SCHEMA_REGISTRY_CA_SECRET_ARN", SECRET),
        ])
        .unwrap()
        .unwrap();
        let SchemaSourceConfig::Confluent(config) = config else {
            panic!("{config:?}")
        };
        assert_eq!(
            config.auth,
            RegistryAuth::Bearer {
                secret_arn: SECRET.into()
            }
        );
        assert_eq!(config.url, "https://registry.internal:8081/sr");
        assert_eq!(config.timeout, DEFAULT_TIMEOUT);
        assert!(
            config.client_certificate_secret_arn.is_some() && config.root_ca_secret_arn.is_some()
        );
        let config = read(&[("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081")]).unwrap();
        assert!(matches!(
            config,
            Some(SchemaSourceConfig::Confluent(ConfluentConfig {
                auth: RegistryAuth::None,
                ..
            }))
        ));
    }

    #[cfg(feature = "glue-registry")]
    #[test]
    fn a_glue_arn_names_its_region_and_registry() {
        let config = read(&[("SCHEMA_REGISTRY_URL", GLUE)]).unwrap().unwrap();
        assert_eq!(
            config,
            SchemaSourceConfig::Glue(GlueConfig {
                registry_arn: GLUE.into(),
                region: "eu-west-1".into(),
                registry_name: "payments".into(),
                timeout: DEFAULT_TIMEOUT,
            })
        );
        let china = "arn:aws-cn:glue:cn-north-1:123456789012:registry/r";
        assert!(read(&[("SCHEMA_REGISTRY_URL", china)]).is_ok());
    }

    #[test]
    fn every_problem_is_reported_at_once_without_secret_values() {
        let e = read(&[
            ("SCHEMA_REGISTRY_URL", "ftp://registry"),
            ("SCHEMA_REGISTRY_AUTH", "digest"),
            ("SCHEMA_REGISTRY_SECRET_ARN", "hunter2-s3cret"),
            ("SCHEMA_REGISTRY_TLS_SECRET_ARN", "s3cret-pem"),
            ("SCHEMA_REGISTRY_TIMEOUT_SECONDS", "0"),
        ])
        .unwrap_err();
        let text = e.to_string();
        for expected in [
            "SCHEMA_REGISTRY_TIMEOUT_SECONDS=0 is out of range",
            "SCHEMA_REGISTRY_URL=\"ftp://registry\" is neither",
            "SCHEMA_REGISTRY_SECRET_ARN is not a Secrets Manager ARN",
            "SCHEMA_REGISTRY_AUTH=\"digest\" is not valid",
            "SCHEMA_REGISTRY_TLS_SECRET_ARN is not a Secrets Manager ARN",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from {text}");
        }
        assert!(!text.contains("s3cret"), "a secret leaked: {text}");
        let expected = if cfg!(feature = "confluent-registry") {
            5
        } else {
            6
        };
        assert_eq!(e.problems.len(), expected, "{text}");
    }

    #[test]
    fn contradictions_are_problems() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap();
        for (vars, expected) in [
            (
                vec![("SCHEMA_DIR", path), ("SCHEMA_REGISTRY_URL", "https://r")],
                "both set",
            ),
            (
                vec![("SCHEMA_REGISTRY_SECRET_ARN", SECRET)],
                "SCHEMA_REGISTRY_URL is not",
            ),
            (
                vec![
                    ("SCHEMA_REGISTRY_URL", GLUE),
                    ("SCHEMA_REGISTRY_SECRET_ARN", SECRET),
                ],
                "takes no secret",
            ),
            (
                vec![
                    ("SCHEMA_REGISTRY_URL", "https://r"),
                    ("SCHEMA_REGISTRY_AUTH", "basic"),
                ],
                "needs SCHEMA_REGISTRY_SECRET_ARN",
            ),
            (
                vec![
                    ("SCHEMA_REGISTRY_URL", "https://r"),
                    ("SCHEMA_REGISTRY_AUTH", "none"),
                    ("SCHEMA_REGISTRY_SECRET_ARN", SECRET),
                ],
                "SCHEMA_REGISTRY_AUTH=none",
            ),
            (
                vec![
                    ("SCHEMA_REGISTRY_URL", "http://r"),
                    ("SCHEMA_REGISTRY_CA_SECRET_ARN", SECRET),
                ],
                "plain http",
            ),
            (
                vec![("SCHEMA_REGISTRY_URL", "https://user:pw@r")],
                "holds credentials",
            ),
            (
                vec![(
                    "SCHEMA_REGISTRY_URL",
                    "arn:aws:glue:eu-west-1:123456789012:schema/r/s",
                )],
                "not a registry's ARN",
            ),
            (
                vec![(
                    "SCHEMA_REGISTRY_URL",
                    "arn:aws:glue::123456789012:registry/r",
                )],
                "names no region",
            ),
        ] {
            let e = read(&vars).unwrap_err();
            assert!(
                e.problems.iter().any(|p| p.contains(expected)),
                "{expected:?} missing from {e}"
            );
            assert!(!e.to_string().contains("pw@"), "{e}");
        }
    }

    #[cfg(not(feature = "confluent-registry"))]
    #[test]
    fn a_build_without_the_feature_says_which_to_enable() {
        let e = read(&[("SCHEMA_REGISTRY_URL", "https://r")]).unwrap_err();
        assert!(e.to_string().contains("`confluent-registry`"), "{e}");
    }

    #[tokio::test]
    async fn a_directory_opens_behind_a_cache() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("7.avsc"), r#""string""#).unwrap();
        let cache = SchemaSourceConfig::Directory(dir.path().into())
            .open()
            .await
            .unwrap();
        let id = crate::format::SchemaId::Confluent(7);
        assert_eq!(cache.get(&id).await.unwrap().text, r#""string""#);
        assert!(cache.source_name().contains("directory"));
    }
}
