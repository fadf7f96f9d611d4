//! Alert rules: `[database_type:]metric_name OP threshold`, several separated by `;` or `,`.

use std::fmt;

use super::MetricEvent;

/// A comparison of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `>`
    Above,
    /// `>=`
    AtLeast,
    /// `<`
    Below,
    /// `<=`
    AtMost,
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
}

impl Comparison {
    fn symbol(self) -> &'static str {
        match self {
            Self::Above => ">",
            Self::AtLeast => ">=",
            Self::Below => "<",
            Self::AtMost => "<=",
            Self::Equal => "==",
            Self::NotEqual => "!=",
        }
    }

    fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Above => value > threshold,
            Self::AtLeast => value >= threshold,
            Self::Below => value < threshold,
            Self::AtMost => value <= threshold,
            Self::Equal => value == threshold,
            Self::NotEqual => value != threshold,
        }
    }
}

/// When an alert fires.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRule {
    /// Only metrics of this database type, when set.
    pub database_type: Option<String>,
    /// The metric.
    pub metric_name: String,
    /// The comparison.
    pub comparison: Comparison,
    /// The threshold.
    pub threshold: f64,
}

impl AlertRule {
    /// True when `metric` breaks this rule.
    pub fn matches(&self, metric: &MetricEvent) -> bool {
        metric.metric_name == self.metric_name
            && self
                .database_type
                .as_deref()
                .is_none_or(|t| t == metric.database_type)
            && self.comparison.holds(metric.value, self.threshold)
    }
}

impl fmt::Display for AlertRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(t) = &self.database_type {
            write!(f, "{t}:")?;
        }
        write!(
            f,
            "{} {} {}",
            self.metric_name,
            self.comparison.symbol(),
            self.threshold
        )
    }
}

/// Rules that do not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The text holds no rule: it is blank, or only separators. No rule at all is written `none`,
    /// so that a value left blank by mistake does not silently turn every alert off.
    #[error("there is no rule: write `none` for no alert")]
    NoRule,
    /// A rule does not parse.
    #[error(
        "alert rule {rule:?} is not `[database_type:]metric_name OP number` with OP one of > >= < <= == != ({reason})"
    )]
    Invalid {
        /// The rule's text.
        rule: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The text that means "no alert rule" (in any case).
const NO_RULES: &str = "none";

/// Parses rules separated by `;` or `,`; `none` (alone, in any case) means no rule. A text with no
/// rule in it (blank, or separators only) is [`RuleError::NoRule`].
pub fn parse_rules(text: &str) -> Result<Vec<AlertRule>, RuleError> {
    if text.trim().eq_ignore_ascii_case(NO_RULES) {
        return Ok(Vec::new());
    }
    let rules = text
        .split([';', ','])
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(parse_rule)
        .collect::<Result<Vec<_>, _>>()?;
    if rules.is_empty() {
        return Err(RuleError::NoRule);
    }
    Ok(rules)
}

fn parse_rule(rule: &str) -> Result<AlertRule, RuleError> {
    let err = |reason| RuleError::Invalid {
        rule: rule.to_owned(),
        reason,
    };
    if rule.eq_ignore_ascii_case(NO_RULES) {
        return Err(err("`none` means no rule and goes alone"));
    }
    // Two-character operators first, so `>=` is not read as `>`.
    let (at, comparison, width) = [
        (">=", Comparison::AtLeast),
        ("<=", Comparison::AtMost),
        ("==", Comparison::Equal),
        ("!=", Comparison::NotEqual),
        (">", Comparison::Above),
        ("<", Comparison::Below),
    ]
    .iter()
    .find_map(|(symbol, c)| rule.find(symbol).map(|at| (at, *c, symbol.len())))
    .ok_or_else(|| err("no operator"))?;
    let subject = rule[..at].trim();
    let threshold: f64 = rule[at + width..]
        .trim()
        .parse()
        .map_err(|_| err("the threshold is not a number"))?;
    if !threshold.is_finite() {
        return Err(err("the threshold is not finite"));
    }
    let (database_type, metric_name) = match subject.split_once(':') {
        Some((t, m)) => (Some(t.trim().to_owned()), m.trim()),
        None => (None, subject),
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    if !valid(metric_name) || database_type.as_deref().is_some_and(|t| !valid(t)) {
        return Err(err("names are letters, digits, `_`, `-` and `.`"));
    }
    Ok(AlertRule {
        database_type,
        metric_name: metric_name.to_owned(),
        comparison,
        threshold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(db: &str, name: &str, value: f64) -> MetricEvent {
        serde_json::from_value(serde_json::json!({
            "timestamp": "2026-11-22T10:00:00Z", "database_type": db, "instance_id": "i",
            "metric_name": name, "value": value
        }))
        .unwrap()
    }

    #[test]
    fn the_default_rule() {
        let rules = parse_rules(super::super::DEFAULT_ALERT_RULES).unwrap();
        assert_eq!(rules.len(), 1);
        assert!(rules[0].matches(&metric("postgres", "cpu_usage_percent", 80.5)));
        assert!(!rules[0].matches(&metric("postgres", "cpu_usage_percent", 80.0)));
        assert!(!rules[0].matches(&metric("postgres", "memory_usage_percent", 99.0)));
        assert_eq!(rules[0].to_string(), "cpu_usage_percent > 80");
    }

    #[test]
    fn scoped_rules_and_every_operator() {
        let rules =
            parse_rules("postgres:replication_lag_seconds >= 30; a <= 1, b < 1; c == 2; d != 2")
                .unwrap();
        assert_eq!(rules.len(), 5);
        assert!(rules[0].matches(&metric("postgres", "replication_lag_seconds", 30.0)));
        assert!(!rules[0].matches(&metric("mysql", "replication_lag_seconds", 99.0)));
        assert!(rules[1].matches(&metric("x", "a", 1.0)));
        assert!(!rules[2].matches(&metric("x", "b", 1.0)));
        assert!(rules[3].matches(&metric("x", "c", 2.0)));
        assert!(rules[4].matches(&metric("x", "d", 3.0)));
        assert_eq!(
            rules[0].to_string(),
            "postgres:replication_lag_seconds >= 30"
        );
    }

    #[test]
    fn bad_rules_are_named() {
        for bad in ["cpu 80", "cpu > high", "> 3", "cpu usage > 3", "cpu > inf"] {
            let e = parse_rules(bad).unwrap_err();
            assert!(
                matches!(&e, RuleError::Invalid { rule, .. } if rule == bad),
                "{e:?}"
            );
        }
    }

    #[test]
    fn none_means_no_rule_and_a_text_without_rules_is_refused() {
        for none in ["none", " NONE ", "None"] {
            assert_eq!(parse_rules(none), Ok(Vec::new()), "{none:?}");
        }
        for empty in ["", "  ", ";", " , ; "] {
            assert_eq!(parse_rules(empty), Err(RuleError::NoRule), "{empty:?}");
        }
        assert_eq!(
            RuleError::NoRule.to_string(),
            "there is no rule: write `none` for no alert"
        );
        let e = parse_rules("none; cpu_usage_percent > 80").unwrap_err();
        assert!(
            e.to_string()
                .contains("`none` means no rule and goes alone"),
            "{e}"
        );
    }
}
