//! Typed reading of environment variables that collects every problem instead of stopping at the first.

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

    /// The variable as is (not trimmed), for values where spaces matter.
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
