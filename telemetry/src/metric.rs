//! The metric event of the reference app.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Deserializer, Serialize};

use kafka_esm::handler::DeserializeError;

/// `{"event_id"?, "timestamp", "database_type", "instance_id", "metric_name", "value", "tags"?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricEvent {
    /// Business id: duplicates of it are skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// When the metric was taken (RFC 3339).
    #[serde(deserialize_with = "rfc3339")]
    pub timestamp: DateTime<FixedOffset>,
    /// Database engine, e.g. `postgres`.
    pub database_type: String,
    /// Instance id.
    pub instance_id: String,
    /// Metric name, e.g. `cpu_usage_percent`.
    pub metric_name: String,
    /// Observed value.
    pub value: f64,
    /// Free-form tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
}

fn rfc3339<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<FixedOffset>, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    DateTime::parse_from_rfc3339(&text)
        .map_err(|e| serde::de::Error::custom(format!("timestamp is not RFC 3339: {e}")))
}

impl MetricEvent {
    /// Checks what serde cannot: identifying fields are not empty.
    pub fn validate(&self) -> Result<(), DeserializeError> {
        for (field, value) in [
            ("database_type", &self.database_type),
            ("instance_id", &self.instance_id),
            ("metric_name", &self.metric_name),
        ] {
            if value.trim().is_empty() {
                return Err(DeserializeError::new(format!("`{field}` is empty")));
            }
        }
        if self
            .event_id
            .as_deref()
            .is_some_and(|id| id.trim().is_empty())
        {
            return Err(DeserializeError::new("`event_id` is empty"));
        }
        Ok(())
    }

    /// The alert's Kafka key: `database_type:instance_id`.
    pub fn alert_key(&self) -> String {
        format!("{}:{}", self.database_type, self.instance_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<MetricEvent, String> {
        let m: MetricEvent = serde_json::from_str(json).map_err(|e| e.to_string())?;
        m.validate().map_err(|e| e.to_string())?;
        Ok(m)
    }

    const GOOD: &str = r#"{"event_id":"e1","timestamp":"2026-11-22T10:00:00Z","database_type":"postgres","instance_id":"db-1","metric_name":"cpu_usage_percent","value":91.5,"tags":{"region":"eu-west-1"}}"#;

    #[test]
    fn reads_a_full_metric() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.event_id.as_deref(), Some("e1"));
        assert_eq!(m.value, 91.5);
        assert_eq!(m.alert_key(), "postgres:db-1");
        assert_eq!(m.tags.unwrap()["region"], "eu-west-1");
    }

    #[test]
    fn optional_fields_may_be_missing_and_integers_are_numbers() {
        let m = parse(r#"{"timestamp":"2026-11-22T10:00:00.123+02:00","database_type":"mysql","instance_id":"i","metric_name":"m","value":3}"#).unwrap();
        assert_eq!(m.event_id, None);
        assert_eq!(m.value, 3.0);
    }

    #[test]
    fn rejects_what_is_not_a_metric() {
        for bad in [
            r#"{"timestamp":"2026-11-22T10:00:00Z","database_type":"p","instance_id":"i","metric_name":"m"}"#,
            r#"{"timestamp":"yesterday","database_type":"p","instance_id":"i","metric_name":"m","value":1}"#,
            r#"{"timestamp":"2026-11-22T10:00:00Z","database_type":"p","instance_id":"i","metric_name":"m","value":"high"}"#,
            r#"{"timestamp":"2026-11-22T10:00:00Z","database_type":"","instance_id":"i","metric_name":"m","value":1}"#,
            r#"[1,2]"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
