//! Environment overrides of the configuration: `GODEL_<SECTION>_<KEY>`,
//! applied to the parsed TOML table before it is deserialized, so a bad value
//! is reported under its key path like one from the file.

use std::collections::HashMap;

use godel_core::{Error, Result};

/// Environment overrides: (variable, key path, kind).
pub const ENV_OVERRIDES: &[(&str, &str, EnvKind)] = &[
    ("GODEL_SERVER_LISTEN", "server.listen", EnvKind::Str),
    ("GODEL_SERVER_E2B_LISTEN", "server.e2b_listen", EnvKind::Str),
    ("GODEL_SERVER_ISOLATION", "server.isolation", EnvKind::Str),
    ("GODEL_DEFAULTS_RUNTIME", "defaults.runtime", EnvKind::Str),
    (
        "GODEL_DEFAULTS_FALLBACK",
        "defaults.fallback",
        EnvKind::List,
    ),
    (
        "GODEL_DEFAULTS_LIMITS_CPU",
        "defaults.limits.cpu",
        EnvKind::Str,
    ),
    (
        "GODEL_DEFAULTS_LIMITS_MEMORY",
        "defaults.limits.memory",
        EnvKind::Str,
    ),
    (
        "GODEL_DEFAULTS_LIMITS_DISK",
        "defaults.limits.disk",
        EnvKind::Str,
    ),
    (
        "GODEL_DEFAULTS_LIMITS_PIDS",
        "defaults.limits.pids",
        EnvKind::Int,
    ),
    (
        "GODEL_DEFAULTS_LIMITS_MAX_EXEC_TIMEOUT_SECS",
        "defaults.limits.max_exec_timeout_secs",
        EnvKind::Int,
    ),
    (
        "GODEL_DEFAULTS_QUEUE_TIMEOUT_SECS",
        "defaults.queue_timeout_secs",
        EnvKind::Int,
    ),
    (
        "GODEL_RETRY_MAX_ATTEMPTS",
        "retry.max_attempts",
        EnvKind::Int,
    ),
    (
        "GODEL_RETRY_BASE_DELAY_MS",
        "retry.base_delay_ms",
        EnvKind::Int,
    ),
    (
        "GODEL_RETRY_MAX_DELAY_MS",
        "retry.max_delay_ms",
        EnvKind::Int,
    ),
    (
        "GODEL_CIRCUIT_FAILURE_THRESHOLD",
        "circuit.failure_threshold",
        EnvKind::Int,
    ),
    ("GODEL_CIRCUIT_OPEN_SECS", "circuit.open_secs", EnvKind::Int),
    (
        "GODEL_CIRCUIT_HALF_OPEN_CALLS",
        "circuit.half_open_calls",
        EnvKind::Int,
    ),
    (
        "GODEL_HEALTH_INTERVAL_SECS",
        "health.interval_secs",
        EnvKind::Int,
    ),
    ("GODEL_HEALTH_PROBE", "health.probe", EnvKind::List),
    (
        "GODEL_HEALTH_PROBE_TIMEOUT_SECS",
        "health.probe_timeout_secs",
        EnvKind::Int,
    ),
    (
        "GODEL_HEALTH_UNHEALTHY_AFTER",
        "health.unhealthy_after",
        EnvKind::Int,
    ),
    ("GODEL_HEALTH_DEAD_AFTER", "health.dead_after", EnvKind::Int),
    ("GODEL_HEALTH_RESTART", "health.restart", EnvKind::Str),
    (
        "GODEL_HEALTH_MAX_RESTARTS",
        "health.max_restarts",
        EnvKind::Int,
    ),
    (
        "GODEL_HEALTH_BACKOFF_SECS",
        "health.backoff_secs",
        EnvKind::Int,
    ),
    (
        "GODEL_HEALTH_MAX_BACKOFF_SECS",
        "health.max_backoff_secs",
        EnvKind::Int,
    ),
    (
        "GODEL_HEALTH_STABLE_SECS",
        "health.stable_secs",
        EnvKind::Int,
    ),
];

/// Prefixes under which an unknown variable is an error.
const ENV_SECTIONS: &[&str] = &[
    "GODEL_SERVER_",
    "GODEL_DEFAULTS_",
    "GODEL_RETRY_",
    "GODEL_CIRCUIT_",
    "GODEL_HEALTH_",
];

/// How an environment value becomes a TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvKind {
    Str,
    Int,
    /// Comma-separated; blanks trimmed, empty items dropped.
    List,
}

pub(crate) fn apply_env(table: &mut toml::Table, env: &HashMap<String, String>) -> Result<()> {
    let mut keys: Vec<&String> = env.keys().collect();
    keys.sort();
    for var in keys {
        let value = &env[var];
        let Some((_, path, kind)) = ENV_OVERRIDES.iter().find(|(v, _, _)| v == var) else {
            if ENV_SECTIONS.iter().any(|p| var.starts_with(p)) {
                return Err(Error::invalid(format!(
                    "{var}: unknown configuration variable (see the list of GODEL_* overrides)"
                )));
            }
            continue;
        };
        let v = match kind {
            EnvKind::Str => toml::Value::String(value.clone()),
            EnvKind::Int => value
                .trim()
                .parse::<i64>()
                .map(toml::Value::Integer)
                .map_err(|_| {
                    Error::invalid(format!(
                        "{var} ({path}): expected an integer, got {value:?}"
                    ))
                })?,
            EnvKind::List => toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_string()))
                    .collect(),
            ),
        };
        let mut cur = &mut *table;
        let parts: Vec<&str> = path.split('.').collect();
        for p in &parts[..parts.len() - 1] {
            let entry = cur
                .entry(p.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cur = entry.as_table_mut().ok_or_else(|| {
                Error::invalid(format!("{var}: {p} in the config file is not a table"))
            })?;
        }
        if let Some(last) = parts.last() {
            cur.insert(last.to_string(), v);
        }
    }
    Ok(())
}
