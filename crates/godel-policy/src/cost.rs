//! Costs and budgets as arithmetic: prices per runtime, the meter units the
//! store accumulates (integers, so sums are exact), their conversion to
//! vCPU-seconds, GiB-seconds and USD, budget periods and thresholds. No
//! clock and no I/O: the control plane passes times and totals in.
//!
//! Units: the store accumulates `vcpu_milli_ms` (milli-vCPUs × milliseconds
//! running) and `mem_kib_ms` (KiB × milliseconds running); costs are whole
//! nano-USD (`cost_nanos`), rounded once per report row, so a total is
//! exactly the sum of its rows.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use godel_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// E2B's public price of one vCPU-second, in USD.
pub const E2B_VCPU_SECOND: f64 = 0.000014;
/// E2B's public price of one GiB-second of memory, in USD.
pub const E2B_GIB_SECOND: f64 = 0.0000045;

/// What one runtime costs per allocated resource-second (USD).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub vcpu_second: f64,
    pub gib_second: f64,
}

impl Price {
    /// E2B's public prices.
    pub const E2B: Price = Price {
        vcpu_second: E2B_VCPU_SECOND,
        gib_second: E2B_GIB_SECOND,
    };

    /// Cost of metered usage in whole nano-USD (rounded to nearest).
    pub fn cost_nanos(&self, vcpu_milli_ms: u64, mem_kib_ms: u64) -> i64 {
        let usd = vcpu_seconds(vcpu_milli_ms) * self.vcpu_second
            + gib_seconds(mem_kib_ms) * self.gib_second;
        (usd * 1e9).round() as i64
    }

    /// Cost per hour of one agent with `cpu_millis` and `memory_bytes` allocated (USD).
    pub fn hourly(&self, cpu_millis: u64, memory_bytes: u64) -> f64 {
        let hour_ms = 3_600_000u64;
        nanos_to_usd(self.cost_nanos(cpu_millis * hour_ms, (memory_bytes / 1024) * hour_ms))
    }
}

/// milli-vCPU × ms → vCPU-seconds.
pub fn vcpu_seconds(vcpu_milli_ms: u64) -> f64 {
    vcpu_milli_ms as f64 / 1e6
}

/// KiB × ms → GiB-seconds.
pub fn gib_seconds(mem_kib_ms: u64) -> f64 {
    mem_kib_ms as f64 / (1024.0 * 1024.0 * 1000.0)
}

pub fn nanos_to_usd(n: i64) -> f64 {
    n as f64 / 1e9
}

/// USD → whole nano-USD; refuses negative, NaN and absurd amounts.
pub fn usd_to_nanos(key: &str, usd: f64) -> Result<i64> {
    if !usd.is_finite() || !(0.0..=1e9).contains(&usd) {
        return Err(Error::invalid(format!(
            "{key}: {usd} is not an amount in USD between 0 and 1e9"
        )));
    }
    Ok((usd * 1e9).round() as i64)
}

/// The window a budget counts spend over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Daily,
    Weekly,
    #[default]
    Monthly,
}

impl Period {
    pub fn parse(s: &str) -> Result<Period> {
        match s {
            "daily" => Ok(Period::Daily),
            "weekly" => Ok(Period::Weekly),
            "monthly" => Ok(Period::Monthly),
            _ => Err(Error::invalid(format!(
                "period: {s:?} is not one of daily, weekly, monthly"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
        }
    }

    /// The first day (UTC) of the period holding `t`.
    pub fn start(self, t: DateTime<Utc>) -> NaiveDate {
        let d = t.date_naive();
        match self {
            Period::Daily => d,
            Period::Weekly => d - Duration::days(d.weekday().num_days_from_monday() as i64),
            Period::Monthly => NaiveDate::from_ymd_opt(d.year(), d.month(), 1).unwrap_or(d),
        }
    }

    /// A stable name of the period holding `t` (`2026-12`, `2026-12-04`, `2026-W49`).
    pub fn key(self, t: DateTime<Utc>) -> String {
        let s = self.start(t);
        match self {
            Period::Daily => s.format("%Y-%m-%d").to_string(),
            Period::Weekly => format!("week-of-{}", s.format("%Y-%m-%d")),
            Period::Monthly => s.format("%Y-%m").to_string(),
        }
    }

    /// Start of the period as a UTC time.
    pub fn start_time(self, t: DateTime<Utc>) -> DateTime<Utc> {
        Utc.from_utc_datetime(&self.start(t).and_hms_opt(0, 0, 0).unwrap_or_default())
    }
}

/// What happens to a team's running agents when its budget is used up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BudgetPolicy {
    /// Keep them running (only new spawns are refused).
    #[default]
    #[serde(rename = "keep")]
    Keep,
    /// Snapshot and stop them (parked; `godel resume` brings one back).
    #[serde(rename = "snapshot-and-stop")]
    SnapshotAndStop,
    /// Terminate them.
    #[serde(rename = "stop")]
    Stop,
}

impl BudgetPolicy {
    pub fn parse(s: &str) -> Result<BudgetPolicy> {
        match s {
            "keep" => Ok(BudgetPolicy::Keep),
            "snapshot-and-stop" => Ok(BudgetPolicy::SnapshotAndStop),
            "stop" => Ok(BudgetPolicy::Stop),
            _ => Err(Error::invalid(format!(
                "policy: {s:?} is not one of keep, snapshot-and-stop, stop"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPolicy::Keep => "keep",
            BudgetPolicy::SnapshotAndStop => "snapshot-and-stop",
            BudgetPolicy::Stop => "stop",
        }
    }
}

/// Where spend stands against a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetLevel {
    Under,
    /// At or above the alert threshold, below the limit.
    Alert,
    /// At or above the limit.
    Exceeded,
}

/// The level of `spent` against `limit` with an alert at `alert_percent` %.
pub fn budget_level(spent_nanos: i64, limit_nanos: i64, alert_percent: u32) -> BudgetLevel {
    if spent_nanos >= limit_nanos {
        BudgetLevel::Exceeded
    } else if (spent_nanos as i128) * 100 >= (limit_nanos as i128) * alert_percent as i128 {
        BudgetLevel::Alert
    } else {
        BudgetLevel::Under
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e2b_prices_per_hour() {
        // 2 vCPU, 4 GiB for one hour at E2B's prices.
        let h = Price::E2B.hourly(2000, 4 << 30);
        let want = 2.0 * 3600.0 * 0.000014 + 4.0 * 3600.0 * 0.0000045;
        assert!((h - want).abs() < 1e-9, "{h} vs {want}");
    }

    #[test]
    fn units_convert_exactly() {
        assert_eq!(vcpu_seconds(1_000_000), 1.0);
        assert_eq!(gib_seconds(1024 * 1024 * 1000), 1.0);
        assert_eq!(Price::E2B.cost_nanos(1_000_000, 0), 14_000);
        assert_eq!(Price::E2B.cost_nanos(0, 1024 * 1024 * 1000), 4_500);
    }

    #[test]
    fn levels_and_periods() {
        assert_eq!(budget_level(79, 100, 80), BudgetLevel::Under);
        assert_eq!(budget_level(80, 100, 80), BudgetLevel::Alert);
        assert_eq!(budget_level(100, 100, 80), BudgetLevel::Exceeded);
        let t = Utc.with_ymd_and_hms(2026, 12, 4, 18, 0, 0).unwrap();
        assert_eq!(Period::Monthly.key(t), "2026-12");
        assert_eq!(Period::Daily.key(t), "2026-12-04");
        assert_eq!(Period::Weekly.key(t), "week-of-2026-11-30");
        assert!(Period::parse("yearly").is_err());
        assert!(BudgetPolicy::parse("pause").is_err());
        assert!(usd_to_nanos("limit", -1.0).is_err());
        assert!(usd_to_nanos("limit", f64::NAN).is_err());
    }
}
