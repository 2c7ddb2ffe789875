//! [`LatencySummary`]: the one latency summary every benchmark reports —
//! count, nearest-rank P50/P95/P99, min, max and mean of a list of
//! durations, in milliseconds rounded to the microsecond.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Latency of one measurement, milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub n: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Milliseconds, rounded to the microsecond.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl LatencySummary {
    /// Summarise `samples` (all zero when there are none).
    pub fn of(samples: &[Duration]) -> LatencySummary {
        let mut v = samples.to_vec();
        v.sort();
        let (Some(&min), Some(&max)) = (v.first(), v.last()) else {
            return LatencySummary::default();
        };
        // Nearest-rank percentile.
        let at = |q: f64| ms(v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]);
        LatencySummary {
            n: v.len(),
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            min_ms: ms(min),
            max_ms: ms(max),
            mean_ms: ms(v.iter().sum::<Duration>() / v.len() as u32),
        }
    }

    /// One table row: `name` padded to 40 columns, then the figures.
    pub fn line(&self, name: &str) -> String {
        format!("{name:<40} {self}")
    }
}

impl fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n={:<4} p50 {:>9.2} ms   p95 {:>9.2} ms   p99 {:>9.2} ms   max {:>9.2} ms",
            self.n, self.p50_ms, self.p95_ms, self.p99_ms, self.max_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = LatencySummary::of(&d);
        assert_eq!(
            (s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms),
            (50.0, 95.0, 99.0, 100.0)
        );
        assert_eq!((s.n, s.min_ms, s.mean_ms), (100, 1.0, 50.5));
        assert_eq!(LatencySummary::of(&[]), LatencySummary::default());
    }
}
