//! Canary rollouts as arithmetic: parsing the plan (`--steps 1,5,25,100
//! --interval 10m --max-error-rate 2%`), which step a rollout is at after
//! some running time, whether the n-th spawn of a step goes to the target
//! (a deterministic spread, so the share over any run of spawns is within
//! one spawn of the step's percentage), and when the error rate calls for
//! a rollback. No clock and no state: the control plane keeps the counters.

use godel_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// Smallest number of spawns on the target in a step before its error rate is judged.
pub const DEFAULT_MIN_SAMPLES: u64 = 10;

/// A rollout's plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutPlan {
    /// Percent of new spawns routed to the target, per step (increasing, 1..=100).
    pub steps: Vec<u32>,
    /// Time spent on each step before the next (seconds).
    pub interval_secs: u64,
    /// Above this fraction of failed spawns on the target (0..1), roll back.
    pub max_error_rate: f64,
    /// Spawns on the target in a step before its error rate counts.
    pub min_samples: u64,
}

impl RolloutPlan {
    /// Build and check a plan from its command-line spellings.
    pub fn parse(steps: &str, interval: &str, max_error_rate: &str) -> Result<RolloutPlan> {
        let plan = RolloutPlan {
            steps: parse_steps(steps)?,
            interval_secs: parse_interval(interval)?,
            max_error_rate: parse_rate(max_error_rate)?,
            min_samples: DEFAULT_MIN_SAMPLES,
        };
        Ok(plan)
    }

    /// The step index after `elapsed_secs` of (unpaused) running.
    pub fn step_at(&self, elapsed_secs: u64) -> usize {
        let i = elapsed_secs / self.interval_secs.max(1);
        (i as usize).min(self.steps.len().saturating_sub(1))
    }

    /// Whether the rollback threshold is passed: `errors` of `attempts`
    /// target spawns in the current step.
    pub fn should_roll_back(&self, errors: u64, attempts: u64) -> bool {
        attempts >= self.min_samples
            && attempts > 0
            && (errors as f64) / (attempts as f64) > self.max_error_rate
    }
}

/// Whether spawn number `n` (0-based, counted within a step) goes to the
/// target at `percent` %: the k-th target spawn comes when the running
/// share first reaches k, so after m spawns exactly ⌊m·p/100⌋ went there.
pub fn routes_to_target(n: u64, percent: u32) -> bool {
    let p = percent.min(100) as u64;
    (n + 1) * p / 100 > n * p / 100
}

/// `1,5,25,100`: strictly increasing percentages in 1..=100.
pub fn parse_steps(s: &str) -> Result<Vec<u32>> {
    let mut out: Vec<u32> = Vec::new();
    for part in s.split(',') {
        let p = part.trim().trim_end_matches('%');
        let v: u32 = p.parse().map_err(|_| {
            Error::invalid(format!(
                "steps: {part:?} is not a percentage (like 1,5,25,100)"
            ))
        })?;
        if v == 0 || v > 100 {
            return Err(Error::invalid(format!("steps: {v} is outside 1..=100")));
        }
        if out.last().is_some_and(|l| *l >= v) {
            return Err(Error::invalid(format!(
                "steps: {s:?} must increase strictly"
            )));
        }
        out.push(v);
    }
    Ok(out)
}

/// `10m`, `30s`, `1h`, `90` (seconds); above zero.
pub fn parse_interval(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mul) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        _ => (s, 1),
    };
    match num.parse::<u64>() {
        Ok(v) if v > 0 => Ok(v.saturating_mul(mul)),
        _ => Err(Error::invalid(format!(
            "interval: {s:?} is not a duration above zero like 30s, 10m, 1h"
        ))),
    }
}

/// `2%` or `0.02`: a fraction in 0..=1.
pub fn parse_rate(s: &str) -> Result<f64> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    };
    match v {
        Ok(v) if v.is_finite() && (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(Error::invalid(format!(
            "max_error_rate: {s:?} is not a rate like 2% or 0.02 (0 to 100 %)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_is_exact_over_any_prefix() {
        for p in [1u32, 5, 25, 33, 100] {
            let routed = (0..1000).filter(|n| routes_to_target(*n, p)).count() as u64;
            assert_eq!(routed, 1000 * p as u64 / 100, "percent {p}");
        }
    }

    #[test]
    fn parses_and_refuses_by_name() {
        let p = RolloutPlan::parse("1,5,25,100", "10m", "2%").unwrap();
        assert_eq!(p.steps, vec![1, 5, 25, 100]);
        assert_eq!(p.interval_secs, 600);
        assert!((p.max_error_rate - 0.02).abs() < 1e-12);
        assert_eq!(p.step_at(0), 0);
        assert_eq!(p.step_at(1199), 1);
        assert_eq!(p.step_at(1_000_000), 3);
        for (s, i, r, key) in [
            ("5,1", "10m", "2%", "steps"),
            ("0,5", "10m", "2%", "steps"),
            ("1,x", "10m", "2%", "steps"),
            ("1", "0m", "2%", "interval"),
            ("1", "10m", "200%", "max_error_rate"),
        ] {
            let e = RolloutPlan::parse(s, i, r).unwrap_err();
            assert!(e.message.starts_with(key), "{}", e.message);
        }
        assert!(!p.should_roll_back(1, 9));
        assert!(p.should_roll_back(1, 10));
        assert!(!p.should_roll_back(0, 100));
    }
}
