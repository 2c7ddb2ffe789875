//! The cost sections of the configuration: `[prices.RUNTIME]` (USD per
//! vCPU-second and GiB-second; a runtime without an entry costs what
//! `e2b` costs, E2B's public prices), `[metering]` (how often usage is
//! written) and `[budgets]` (alert threshold, webhook, default period).

use std::collections::BTreeMap;

use godel_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::cost::{Period, Price};

/// `[metering]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeteringConfig {
    /// Seconds between durable writes of usage (1..=10): a crash loses at most this much.
    #[serde(default = "d_flush")]
    pub flush_secs: u64,
}
fn d_flush() -> u64 {
    10
}
impl Default for MeteringConfig {
    fn default() -> Self {
        MeteringConfig {
            flush_secs: d_flush(),
        }
    }
}

/// `[budgets]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetsConfig {
    /// Percent of a budget at which the alert fires (once a period).
    #[serde(default = "d_alert")]
    pub alert_percent: u32,
    /// `http://HOST:PORT/PATH` that gets a JSON POST on alerts and on exhaustion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Attempts per webhook delivery (retries back off from `webhook_backoff_ms`, doubling).
    #[serde(default = "d_attempts")]
    pub webhook_attempts: u32,
    #[serde(default = "d_backoff")]
    pub webhook_backoff_ms: u64,
    /// Period of budgets set without one.
    #[serde(default)]
    pub period: Period,
}
fn d_alert() -> u32 {
    80
}
fn d_attempts() -> u32 {
    5
}
fn d_backoff() -> u64 {
    1000
}
impl Default for BudgetsConfig {
    fn default() -> Self {
        BudgetsConfig {
            alert_percent: d_alert(),
            webhook_url: None,
            webhook_attempts: d_attempts(),
            webhook_backoff_ms: d_backoff(),
            period: Period::default(),
        }
    }
}

/// The price of `runtime`: its `[prices.X]` entry, else E2B's.
pub fn price_of(prices: &BTreeMap<String, Price>, runtime: &str) -> Price {
    prices
        .get(runtime)
        .or_else(|| prices.get("e2b"))
        .copied()
        .unwrap_or(Price::E2B)
}

/// Split an `http://host:port/path` webhook URL; anything else is refused by name.
pub fn webhook_target(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        Error::invalid(format!(
            "budgets.webhook_url: {url:?} must start with http:// (https is not supported; put a TLS proxy on loopback)"
        ))
    })?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        return Err(Error::invalid(format!(
            "budgets.webhook_url: {url:?} has no host"
        )));
    }
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Ok((host, path.to_string()))
}

pub(super) fn validate(
    prices: &BTreeMap<String, Price>,
    metering: &MeteringConfig,
    budgets: &BudgetsConfig,
    known: &[&str],
) -> Result<()> {
    for (rt, p) in prices {
        if !known.contains(&rt.as_str()) {
            return Err(Error::invalid(format!(
                "prices.{rt}: unknown runtime {rt:?} (known: {})",
                known.join(", ")
            )));
        }
        for (k, v) in [("vcpu_second", p.vcpu_second), ("gib_second", p.gib_second)] {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::invalid(format!(
                    "prices.{rt}.{k}: {v} is not a price in USD (zero or more)"
                )));
            }
        }
    }
    if !(1..=10).contains(&metering.flush_secs) {
        return Err(Error::invalid(format!(
            "metering.flush_secs: {} is outside 1..=10",
            metering.flush_secs
        )));
    }
    if !(1..=99).contains(&budgets.alert_percent) {
        return Err(Error::invalid(format!(
            "budgets.alert_percent: {} is outside 1..=99",
            budgets.alert_percent
        )));
    }
    if budgets.webhook_attempts == 0 {
        return Err(Error::invalid(
            "budgets.webhook_attempts: must be above zero",
        ));
    }
    if let Some(u) = &budgets.webhook_url {
        webhook_target(u)?;
    }
    Ok(())
}
