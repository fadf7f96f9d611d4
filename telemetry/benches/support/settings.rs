//! A bench's settings from the environment: shared by the `io` and `latency` benches.

/// The whole number in `name`, or `default` when it is unset or blank.
pub fn env_number(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a whole number")),
        _ => Ok(default),
    }
}

/// The comma-separated items in `name` (or `default` when it is unset or blank), each one of `known`.
pub fn env_list(name: &str, default: &str, known: &[&str]) -> Result<Vec<String>, String> {
    let text = std::env::var(name).unwrap_or_default();
    let text = if text.trim().is_empty() {
        default
    } else {
        &text
    };
    let items: Vec<String> = text.split(',').map(|s| s.trim().to_owned()).collect();
    for item in &items {
        if !known.contains(&item.as_str()) {
            return Err(format!(
                "{name}: {item:?} is not one of {}",
                known.join(", ")
            ));
        }
    }
    Ok(items)
}
