//! Typed reading of environment variables that collects every problem instead of stopping at the first.
//!
//! A variable set to a blank value (empty or only spaces) is read as unset, so it takes its
//! default: [`EnvReader::text`] and everything built on it. [`EnvReader::raw`] is for the few
//! values read as given: passwords (where spaces count), `KAFKA_PROPERTIES` (blank: no property,
//! its default) and `ALERT_RULES`, whose blank value is refused because "the default rule" and
//! "no alert" are both plausible readings of it (`none` says the latter).

use std::fmt;

/// Reads variables through a lookup function and keeps one line per problem.
pub struct EnvReader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    /// One line per problem found so far.
    pub problems: Vec<String>,
}

impl<'a> EnvReader<'a> {
    /// A reader over `lookup` (the process environment, or a map in tests).
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            lookup,
            problems: Vec::new(),
        }
    }

    /// The variable, trimmed; `None` when unset or blank.
    pub fn text(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// The variable as is (not trimmed, blank kept), for values where spaces matter.
    pub fn raw(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    /// Records a problem.
    pub fn problem(&mut self, problem: impl Into<String>) {
        self.problems.push(problem.into());
    }

    /// The variable parsed as `T`, or `default`.
    pub fn parsed<T: std::str::FromStr>(&mut self, name: &str, default: T, accepts: &str) -> T {
        match self.text(name) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                self.problems
                    .push(format!("{name}={v:?} is not valid: expected {accepts}"));
                default
            }),
        }
    }

    /// A whole number within `min..=max`, or `default`.
    pub fn number(&mut self, name: &str, default: u64, min: u64, max: u64) -> u64 {
        let value = self.parsed(
            name,
            default,
            &format!("a whole number from {min} to {max}"),
        );
        if !(min..=max).contains(&value) {
            self.problems.push(format!(
                "{name}={value} is out of range: expected {min} to {max}"
            ));
            return default;
        }
        value
    }

    /// `true`/`false` (also 1/0, yes/no, on/off), or `default`.
    pub fn flag(&mut self, name: &str, default: bool) -> bool {
        match self.text(name).map(|v| v.to_ascii_lowercase()) {
            None => default,
            Some(v) if ["true", "1", "yes", "on"].contains(&v.as_str()) => true,
            Some(v) if ["false", "0", "no", "off"].contains(&v.as_str()) => false,
            Some(v) => {
                self.problems
                    .push(format!("{name}={v:?} is not valid: expected true or false"));
                default
            }
        }
    }
}

/// The configuration is not usable: every problem an [`EnvReader`] found, one line each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// One line per problem.
    pub problems: Vec<String>,
}

impl ConfigError {
    /// `value` when `reader` found no problem, else every problem it found.
    pub fn from_reader<T>(reader: EnvReader<'_>, value: T) -> Result<T, ConfigError> {
        if reader.problems.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError {
                problems: reader.problems,
            })
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the configuration is invalid:")?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}
