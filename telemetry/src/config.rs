//! The reference app's configuration: the generic consumer settings of [`kafka_esm::config`] plus
//! the alert settings, and the producer Lambda's. Every problem is reported at once, one line each.

use std::time::Duration;

use kafka_esm::config::{read_log_format, topic_problem};
use kafka_esm::env::EnvReader;
use kafka_esm::kafka::KafkaSettings;

pub use kafka_esm::config::{ConfigError, ConsumerConfig, LogFormat, StoreChoice};

use kafka_esm::format::SchemaId;
use kafka_esm::registry::{ConfluentConfig, ConfluentRegistry, SchemaSourceConfig};

use crate::metric_format::{MetricEncoder, MetricFormat};
use crate::producer::ProducerSettings;
use crate::{AlertRule, DEFAULT_ALERT_RULES, DEFAULT_ALERTS_TOPIC, RuleError, parse_rules};

/// Where alerts go and when they are raised.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSettings {
    /// `ALERTS_TOPIC` (default `telemetry.alerts`).
    pub topic: String,
    /// `ALERT_RULES` (default `cpu_usage_percent > 80`; `none` for no alert).
    pub rules: Vec<AlertRule>,
}

impl AlertSettings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut r = EnvReader::new(lookup);
        let alerts = Self::read(&mut r);
        ConfigError::from_reader(r, alerts)
    }

    /// Reads `ALERTS_TOPIC` and `ALERT_RULES` through `r`, which keeps the problems.
    pub fn read(r: &mut EnvReader<'_>) -> Self {
        let topic = r
            .text("ALERTS_TOPIC")
            .unwrap_or_else(|| DEFAULT_ALERTS_TOPIC.into());
        if let Some(problem) = topic_problem("ALERTS_TOPIC", &topic) {
            r.problem(problem);
        }
        let rules = read_alert_rules(r);
        Self { topic, rules }
    }
}

/// `METRIC_FORMAT`: `json` (the default), `avro` or `protobuf`.
pub fn read_metric_format(r: &mut EnvReader<'_>) -> MetricFormat {
    match r.text("METRIC_FORMAT").map(|text| text.parse()) {
        None => MetricFormat::Json,
        Some(Ok(format)) => format,
        Some(Err(problem)) => {
            r.problem(format!("METRIC_FORMAT={problem}"));
            MetricFormat::Json
        }
    }
}

/// The telemetry consumer's configuration: the generic settings, the alert settings and the
/// metrics' format.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// Store, dead letters, retries, Kafka, logging, schema source.
    pub consumer: ConsumerConfig,
    /// `ALERTS_TOPIC`, `ALERT_RULES`.
    pub alerts: AlertSettings,
    /// `METRIC_FORMAT`.
    pub metric_format: MetricFormat,
}

impl TelemetryConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Reads the process environment for the Lambda, which publishes: `KAFKA_BOOTSTRAP_SERVERS`
    /// is required and reported with every other problem.
    pub fn from_env_requiring_kafka() -> Result<Self, ConfigError> {
        Self::from_lookup_requiring_kafka(&|name| std::env::var(name).ok())
    }

    /// As [`Self::from_env`], through `lookup`.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::read_with(lookup, ConsumerConfig::read)
    }

    /// As [`Self::from_env_requiring_kafka`], through `lookup`.
    pub fn from_lookup_requiring_kafka(
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        Self::read_with(lookup, ConsumerConfig::read_requiring_kafka)
    }

    /// The generic settings as `consumer` reads them, then the app's, every problem at once.
    fn read_with(
        lookup: &dyn Fn(&str) -> Option<String>,
        consumer: fn(&mut EnvReader<'_>) -> ConsumerConfig,
    ) -> Result<Self, ConfigError> {
        let mut r = EnvReader::new(lookup);
        let consumer = consumer(&mut r);
        let alerts = AlertSettings::read(&mut r);
        let metric_format = read_metric_format(&mut r);
        ConfigError::from_reader(
            r,
            Self {
                consumer,
                alerts,
                metric_format,
            },
        )
    }
}

/// Everything the producer Lambda reads from its environment.
#[derive(Debug, Clone, PartialEq)]
pub struct ProducerConfig {
    /// `KAFKA_*`: where and how to produce (required).
    pub kafka: KafkaSettings,
    /// `METRICS_TOPIC` (default `telemetry.metrics`) and `PRODUCER_DLQ_TOPIC` (default `<topic>.dlq`).
    pub producer: ProducerSettings,
    /// `GENERATE_COUNT`: metrics collected per scheduled run (default 10).
    pub scheduled_count: usize,
    /// `SAFETY_MARGIN_MS`: time kept in reserve before the Lambda deadline.
    pub safety_margin: Duration,
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `METRIC_FORMAT`, and the schema id Avro and Protobuf metrics are framed with.
    pub metrics: MetricWriting,
}

/// Where the id of the schema a producer frames its metrics with comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricSchema {
    /// JSON metrics: written plain, no schema.
    None,
    /// `METRIC_SCHEMA_ID`: a Confluent schema id (a number; Confluent framing) or a Glue schema
    /// version (a UUID; Glue framing), registered beforehand.
    Id(SchemaId),
    /// `SCHEMA_REGISTRY_URL` (a Confluent registry): the app's schema is registered at start-up
    /// under the subject `<METRICS_TOPIC>-value`, and framed with the id the registry answers.
    Register(ConfluentConfig),
}

/// How the producer writes metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricWriting {
    /// `METRIC_FORMAT`.
    pub format: MetricFormat,
    /// Where the schema id comes from.
    pub schema: MetricSchema,
    /// The registry subject the schema is registered under: `<METRICS_TOPIC>-value`.
    pub subject: String,
}

impl MetricWriting {
    /// The encoder, after registering the schema when [`MetricSchema::Register`] says so (its
    /// secrets are fetched then: call it once, at start-up).
    pub async fn encoder(&self) -> Result<MetricEncoder, String> {
        let id = match &self.schema {
            MetricSchema::None => None,
            MetricSchema::Id(id) => Some(*id),
            MetricSchema::Register(config) => {
                let (kind, text) = self
                    .format
                    .schema()
                    .ok_or("JSON metrics have no schema to register")?;
                let registry = ConfluentRegistry::from_config(config)
                    .await
                    .map_err(|e| e.to_string())?;
                let id = registry
                    .register(&self.subject, kind, text)
                    .await
                    .map_err(|e| e.to_string())?;
                Some(SchemaId::Confluent(id))
            }
        };
        MetricEncoder::new(self.format, id)
    }
}

/// `METRIC_FORMAT`, `METRIC_SCHEMA_ID` and the registry the producer registers with.
fn read_metric_writing(r: &mut EnvReader<'_>, topic: &str) -> MetricWriting {
    let format = read_metric_format(r);
    let id = r.text("METRIC_SCHEMA_ID").and_then(|text| match text.parse::<SchemaId>() {
        Ok(id) => Some(id),
        Err(_) => {
            r.problem(format!(
                "METRIC_SCHEMA_ID={text:?} is not a schema id: expected a Confluent schema id (a number) or a Glue schema version (a UUID)"
            ));
            None
        }
    });
    let source = SchemaSourceConfig::read(r);
    let subject = format!("{topic}-value");
    // The schema file's extension, for messages (`avsc`, `proto`).
    let extension = format.schema().map_or("json", |(kind, _)| kind.extension());
    let schema = match (format, id, source) {
        (MetricFormat::Json, None, _) => MetricSchema::None,
        (MetricFormat::Json, Some(_), _) => {
            r.problem("METRIC_SCHEMA_ID is set but METRIC_FORMAT is json: JSON metrics are written plain; set METRIC_FORMAT=avro or protobuf, or unset METRIC_SCHEMA_ID");
            MetricSchema::None
        }
        (_, Some(id), _) => MetricSchema::Id(id),
        (_, None, Some(SchemaSourceConfig::Confluent(config))) => MetricSchema::Register(config),
        (format, None, Some(SchemaSourceConfig::Glue(_))) => {
            r.problem(format!(
                "METRIC_FORMAT={format} with a Glue registry: the producer does not register schemas with Glue; register events/schemas/metric.{} as a schema version and set METRIC_SCHEMA_ID to its UUID",
                extension
            ));
            MetricSchema::None
        }
        (format, None, _) => {
            r.problem(format!(
                "METRIC_FORMAT={format} frames each metric with its schema's id: set SCHEMA_REGISTRY_URL to a Confluent registry (the schema is registered under {subject:?}), or METRIC_SCHEMA_ID to the id of events/schemas/metric.{} in the consumer's registry",
                extension
            ));
            MetricSchema::None
        }
    };
    MetricWriting {
        format,
        schema,
        subject,
    }
}

impl ProducerConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut r = EnvReader::new(lookup);
        let on_lambda = r.text("AWS_LAMBDA_FUNCTION_NAME").is_some();
        let function_name = r
            .text("AWS_LAMBDA_FUNCTION_NAME")
            .unwrap_or_else(|| "kafka-esm-producer".into());
        let delivery_timeout =
            Duration::from_millis(r.number("PUBLISH_TIMEOUT_MS", 10_000, 100, 900_000));
        let kafka = KafkaSettings::from_env(&mut r, &function_name, delivery_timeout);
        if r.text("KAFKA_BOOTSTRAP_SERVERS").is_none() {
            r.problem("KAFKA_BOOTSTRAP_SERVERS is not set: the producer writes to Kafka; set it to the cluster's host:port list");
        }
        let topic = r
            .text("METRICS_TOPIC")
            .unwrap_or_else(|| "telemetry.metrics".into());
        let dead_letter_topic = r
            .text("PRODUCER_DLQ_TOPIC")
            .unwrap_or_else(|| format!("{topic}.dlq"));
        for (name, value) in [
            ("METRICS_TOPIC", &topic),
            ("PRODUCER_DLQ_TOPIC", &dead_letter_topic),
        ] {
            if let Some(problem) = topic_problem(name, value) {
                r.problem(problem);
            }
        }
        if topic == dead_letter_topic {
            r.problem("PRODUCER_DLQ_TOPIC must differ from METRICS_TOPIC");
        }
        let scheduled_count = r.number(
            "GENERATE_COUNT",
            10,
            0,
            crate::producer::MAX_GENERATE as u64,
        ) as usize;
        let safety_margin = Duration::from_millis(r.number("SAFETY_MARGIN_MS", 2_000, 0, 600_000));
        let log_format = read_log_format(&mut r, on_lambda);
        let metrics = read_metric_writing(&mut r, &topic);
        match (r.problems.is_empty(), kafka) {
            (true, Some(kafka)) => Ok(Self {
                kafka,
                producer: ProducerSettings {
                    topic,
                    dead_letter_topic,
                },
                scheduled_count,
                safety_margin,
                log_format,
                metrics,
            }),
            _ => Err(ConfigError {
                problems: r.problems,
            }),
        }
    }
}

/// `ALERT_RULES`: unset means the default rule, `none` no rule. Blank is refused, unlike other
/// variables where blank means unset: here the two plausible readings ("the default" and "no
/// alert") differ, so neither is guessed.
fn read_alert_rules(r: &mut EnvReader<'_>) -> Vec<AlertRule> {
    let Some(text) = r.raw("ALERT_RULES") else {
        return parse_rules(DEFAULT_ALERT_RULES).expect("the default rules parse");
    };
    let fix = format!(
        "set `none` to publish no alerts, or unset it for the default `{DEFAULT_ALERT_RULES}`"
    );
    match parse_rules(&text) {
        Ok(rules) => rules,
        Err(RuleError::NoRule) if text.trim().is_empty() => {
            r.problem(format!("ALERT_RULES is empty: {fix}"));
            Vec::new()
        }
        Err(RuleError::NoRule) => {
            r.problem(format!("ALERT_RULES={text:?} has no rule: {fix}"));
            Vec::new()
        }
        Err(e) => {
            r.problem(format!("ALERT_RULES: {e}"));
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<TelemetryConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TelemetryConfig::from_lookup(&move |k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.alerts.topic, "telemetry.alerts");
        assert_eq!(c.alerts.rules.len(), 1);
        assert_eq!(c.consumer, ConsumerConfig::from_lookup(&|_| None).unwrap());
    }

    #[test]
    fn reads_the_alert_settings_with_the_generic_ones() {
        let c = config(&[
            ("ALERT_RULES", "a > 1; b < 2"),
            ("ALERTS_TOPIC", "ops.alerts"),
            ("REPORT_BATCH_ITEM_FAILURES", "true"),
        ])
        .unwrap();
        assert_eq!(c.alerts.rules.len(), 2);
        assert_eq!(c.alerts.topic, "ops.alerts");
        assert!(c.consumer.partial_batch_response);
        let e = config(&[("ALERTS_TOPIC", "..")]).unwrap_err();
        assert!(
            e.problems[0]
                .starts_with("ALERTS_TOPIC=\"..\" is not a Kafka topic name (`..` is reserved)"),
            "{e}"
        );
    }

    #[test]
    fn an_app_problem_is_reported_with_the_generic_ones() {
        let e = config(&[
            ("ALERT_RULES", "cpu >> x"),
            ("IDEMPOTENCY_STORE", "redis"),
            ("LOG_FORMAT", "xml"),
        ])
        .unwrap_err();
        assert_eq!(e.problems.len(), 3, "{e}");
        let e = TelemetryConfig::from_lookup_requiring_kafka(&|k| {
            (k == "ALERT_RULES").then(|| "cpu >> x".to_owned())
        })
        .unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
        assert!(
            e.to_string().contains("KAFKA_BOOTSTRAP_SERVERS is not set"),
            "{e}"
        );
    }

    #[test]
    fn the_producer_configuration() {
        let lookup = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c =
            ProducerConfig::from_lookup(&lookup(&[("KAFKA_BOOTSTRAP_SERVERS", "b:9092")])).unwrap();
        assert_eq!(c.producer.topic, "telemetry.metrics");
        assert_eq!(c.producer.dead_letter_topic, "telemetry.metrics.dlq");
        assert_eq!(c.scheduled_count, 10);
        let e = ProducerConfig::from_lookup(&lookup(&[
            ("METRICS_TOPIC", "m"),
            ("PRODUCER_DLQ_TOPIC", "m"),
            ("KAFKA_AUTH", "scram-sha-512"),
        ]))
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("KAFKA_BOOTSTRAP_SERVERS is not set"),
            "{text}"
        );
        assert!(text.contains("must differ"), "{text}");
        assert!(text.contains("needs credentials"), "{text}");
    }

    #[test]
    fn the_metric_format_and_its_schema_id() {
        let producer = |vars: &[(&str, &str)]| {
            let mut map: HashMap<String, String> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            map.insert("KAFKA_BOOTSTRAP_SERVERS".into(), "b:9092".into());
            ProducerConfig::from_lookup(&move |k| map.get(k).cloned())
        };
        let c = producer(&[]).unwrap();
        assert_eq!(
            (c.metrics.format, &c.metrics.schema),
            (MetricFormat::Json, &MetricSchema::None)
        );
        let c = producer(&[("METRIC_FORMAT", "avro"), ("METRIC_SCHEMA_ID", "12")]).unwrap();
        assert_eq!(c.metrics.schema, MetricSchema::Id(SchemaId::Confluent(12)));
        let c = producer(&[
            ("METRIC_FORMAT", "protobuf"),
            ("SCHEMA_REGISTRY_URL", "https://registry.example:8081"),
            ("METRICS_TOPIC", "m"),
        ])
        .unwrap();
        assert!(matches!(c.metrics.schema, MetricSchema::Register(_)));
        assert_eq!(c.metrics.subject, "m-value");
        for (vars, says) in [
            (&[("METRIC_FORMAT", "avro")][..], "set SCHEMA_REGISTRY_URL"),
            (
                &[("METRIC_FORMAT", "xml")][..],
                "METRIC_FORMAT=\"xml\" is not a metric format",
            ),
            (&[("METRIC_SCHEMA_ID", "7")][..], "METRIC_FORMAT is json"),
            (
                &[("METRIC_FORMAT", "avro"), ("METRIC_SCHEMA_ID", "x")][..],
                "is not a schema id",
            ),
            (
                &[
                    ("METRIC_FORMAT", "avro"),
                    (
                        "SCHEMA_REGISTRY_URL",
                        "arn:aws:glue:eu-west-1:123456789012:registry/r",
                    ),
                ][..],
                "does not register schemas with Glue",
            ),
        ] {
            let e = producer(vars).unwrap_err().to_string();
            assert!(e.contains(says), "{vars:?}: {e}");
        }
        assert_eq!(
            config(&[("METRIC_FORMAT", "Protobuf")])
                .unwrap()
                .metric_format,
            MetricFormat::Protobuf
        );
    }

    #[test]
    fn alert_rules_none_means_no_alert_and_blank_is_refused() {
        assert_eq!(config(&[]).unwrap().alerts.rules.len(), 1);
        for none in ["none", " None "] {
            assert!(
                config(&[("ALERT_RULES", none)])
                    .unwrap()
                    .alerts
                    .rules
                    .is_empty()
            );
        }
        for blank in ["", "   "] {
            let e = config(&[("ALERT_RULES", blank)]).unwrap_err();
            assert_eq!(
                e.problems,
                [
                    "ALERT_RULES is empty: set `none` to publish no alerts, or unset it for the default `cpu_usage_percent > 80`"
                ],
                "{blank:?}"
            );
        }
        let e = config(&[("ALERT_RULES", " ; ")]).unwrap_err();
        assert_eq!(
            e.problems,
            [
                "ALERT_RULES=\" ; \" has no rule: set `none` to publish no alerts, or unset it for the default `cpu_usage_percent > 80`"
            ]
        );
    }

    #[test]
    fn a_producer_configuration_error_never_shows_a_secret_property() {
        for properties in [
            "sasl.password:hunter2",
            "sasl.password=x;hunter2",
            "ssl.key.pem=-----BEGIN PRIVATE KEY-----hunter2;acks",
            "sasl.jaas.config=PlainLoginModule required password=\"hunter2\"",
        ] {
            let e = ProducerConfig::from_lookup(&|k: &str| match k {
                "KAFKA_BOOTSTRAP_SERVERS" => Some("b:9092".into()),
                "KAFKA_PROPERTIES" => Some(properties.into()),
                _ => None,
            })
            .unwrap_err();
            for shown in [e.to_string(), format!("{e:?}")] {
                assert!(shown.contains("KAFKA_PROPERTIES"), "{shown}");
                assert!(!shown.contains("hunter2"), "{shown}");
            }
        }
    }
}
