//! Retry with exponential backoff (SPEC-002 §6.3: 1 s, 2 s, 4 s).
//!
//! Only errors with `retryable == true` are retried. A deadline caps the
//! whole loop: an attempt still running at the deadline is cancelled and the
//! loop returns `TIMEOUT`; a backoff sleep that would end past the deadline is
//! not taken and the last error is returned instead. Every attempt is reported
//! through a callback so the daemon can turn it into an event and a metric.

use std::future::Future;
use std::time::Duration;

use godel_core::{Error, Result};
use tokio::time::Instant;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total (1 = no retry).
    pub max_attempts: u32,
    /// Delay after the first failure; doubles after each further one.
    pub base_delay: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(4),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        }
    }

    /// The delay after failed attempt `attempt` (1-based): `base * 2^(attempt-1)`, capped.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// One finished attempt, as reported to the callback.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// 1-based.
    pub attempt: u32,
    /// `None` on success.
    pub error: Option<Error>,
    /// The delay before the next attempt, when there will be one.
    pub next_delay: Option<Duration>,
    /// How long this attempt took.
    pub took: Duration,
}

/// The error returned when the deadline passes during an attempt.
pub fn deadline_error(attempts: u32, last: Option<&Error>) -> Error {
    let mut msg = format!("deadline passed during attempt {attempts}");
    if let Some(e) = last {
        msg.push_str(&format!(" (previous error: {e})"));
    }
    Error::timeout(msg)
}

/// Run `op` until it succeeds, fails with a non-retryable error, runs out of
/// attempts or hits `deadline`.
pub async fn retry<T, F, Fut>(
    policy: &RetryPolicy,
    deadline: Option<Instant>,
    mut on_attempt: impl FnMut(&Attempt),
    mut op: F,
) -> Result<T>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let max = policy.max_attempts.max(1);
    let mut last: Option<Error> = None;
    for attempt in 1..=max {
        if let Some(d) = deadline
            && Instant::now() >= d
        {
            return Err(deadline_error(attempt, last.as_ref()));
        }
        let started = Instant::now();
        let res = match deadline {
            Some(d) => match tokio::time::timeout_at(d, op(attempt)).await {
                Ok(r) => r,
                Err(_) => {
                    let e = deadline_error(attempt, last.as_ref());
                    on_attempt(&Attempt {
                        attempt,
                        error: Some(e.clone()),
                        next_delay: None,
                        took: started.elapsed(),
                    });
                    return Err(e);
                }
            },
            None => op(attempt).await,
        };
        let took = started.elapsed();
        match res {
            Ok(v) => {
                on_attempt(&Attempt {
                    attempt,
                    error: None,
                    next_delay: None,
                    took,
                });
                return Ok(v);
            }
            Err(e) => {
                let delay = policy.delay_after(attempt);
                let fits = deadline.is_none_or(|d| Instant::now() + delay < d);
                let again = e.retryable && attempt < max && fits;
                on_attempt(&Attempt {
                    attempt,
                    error: Some(e.clone()),
                    next_delay: again.then_some(delay),
                    took,
                });
                if !again {
                    return Err(e);
                }
                last = Some(e);
                tokio::time::sleep(delay).await;
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::internal("retry loop ended without an attempt")))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::*;

    #[test]
    fn delays_double_and_cap() {
        let p = RetryPolicy::default();
        let d: Vec<u64> = (1..=5).map(|a| p.delay_after(a).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 4, 4]);
        assert_eq!(p.delay_after(200), Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_retryable_errors_with_backoff() {
        let start = Instant::now();
        let times = Arc::new(Mutex::new(Vec::new()));
        let t2 = times.clone();
        let mut reports = Vec::new();
        let out: Result<u32> = retry(
            &RetryPolicy::default(),
            None,
            |a| reports.push(a.clone()),
            |n| {
                t2.lock().push(start.elapsed());
                async move {
                    if n < 4 {
                        Err(Error::spawn("flaky"))
                    } else {
                        Ok(n)
                    }
                }
            },
        )
        .await;
        assert_eq!(out.unwrap(), 4);
        let secs: Vec<u64> = times.lock().iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, [0, 1, 3, 7]);
        assert_eq!(reports.len(), 4);
        assert_eq!(reports[0].next_delay, Some(Duration::from_secs(1)));
        assert_eq!(reports[2].next_delay, Some(Duration::from_secs(4)));
        assert!(reports[3].error.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn non_retryable_stops_at_once() {
        let mut n = 0;
        let out: Result<()> = retry(
            &RetryPolicy::default(),
            None,
            |_| {},
            |_| {
                n += 1;
                async { Err(Error::invalid("bad spec")) }
            },
        )
        .await;
        assert_eq!(
            out.unwrap_err().code,
            godel_core::ErrorCode::InvalidArgument
        );
        assert_eq!(n, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts_with_last_error() {
        let mut n = 0;
        let out: Result<()> = retry(
            &RetryPolicy::default(),
            None,
            |_| {},
            |a| {
                n += 1;
                async move { Err(Error::unavailable(format!("down {a}"))) }
            },
        )
        .await;
        assert_eq!(out.unwrap_err().message, "down 4");
        assert_eq!(n, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn never_sleeps_past_the_deadline() {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(2500);
        let mut n = 0;
        let out: Result<()> = retry(
            &RetryPolicy::default(),
            Some(deadline),
            |_| {},
            |_| {
                n += 1;
                async { Err(Error::spawn("nope")) }
            },
        )
        .await;
        // Attempts at 0 s and 1 s; the 2 s delay would end at 3 s > 2.5 s.
        assert_eq!(n, 2);
        assert_eq!(out.unwrap_err().message, "nope");
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn hanging_attempt_is_cut_at_the_deadline() {
        let start = Instant::now();
        let mut seen = Vec::new();
        let out: Result<()> = retry(
            &RetryPolicy::default(),
            Some(start + Duration::from_secs(5)),
            |a| seen.push(a.error.clone().map(|e| e.code)),
            |_| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            },
        )
        .await;
        assert_eq!(out.unwrap_err().code, godel_core::ErrorCode::Timeout);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(seen, [Some(godel_core::ErrorCode::Timeout)]);
    }
}
