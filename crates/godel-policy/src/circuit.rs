//! Circuit breaker per runtime (SPEC-002 §6.3: 5 failures, 60 s open, 3
//! half-open calls).
//!
//! - **closed**: calls pass; `failure_threshold` consecutive failures open it.
//! - **open**: calls are refused for `open_for`; the first `allow()` after
//!   that moves it to half-open.
//! - **half-open**: at most `half_open_calls` trial calls are admitted; when
//!   that many trials succeed it closes, any failure reopens it. If admitted
//!   trials never report back (a cancelled spawn), a new round of trials is
//!   admitted after another `open_for`, so the breaker cannot wedge.
//!
//! Time is `tokio::time::Instant`, so tests drive it with paused time. State
//! changes are reported through a callback, outside the breaker's lock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The breaker's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitPolicy {
    pub failure_threshold: u32,
    pub open_for: Duration,
    pub half_open_calls: u32,
}

impl Default for CircuitPolicy {
    fn default() -> Self {
        CircuitPolicy {
            failure_threshold: 5,
            open_for: Duration::from_secs(60),
            half_open_calls: 3,
        }
    }
}

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CircuitState {
    Closed,
    HalfOpen,
    Open,
}

impl CircuitState {
    /// The `godel_circuit_state` gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::HalfOpen => "half-open",
            CircuitState::Open => "open",
        }
    }
}

/// A state change, as reported to the callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitChange {
    pub runtime: String,
    pub from: CircuitState,
    pub to: CircuitState,
    /// Consecutive failures that led here (for `open`).
    pub failures: u32,
}

impl CircuitChange {
    /// The event the daemon stores: `circuit_opened`, `circuit_half_open` or `circuit_closed`.
    pub fn to_event(&self) -> godel_core::Event {
        let kind = match self.to {
            CircuitState::Open => godel_core::EventKind::CircuitOpened,
            CircuitState::HalfOpen => godel_core::EventKind::CircuitHalfOpen,
            CircuitState::Closed => godel_core::EventKind::CircuitClosed,
        };
        godel_core::Event::new(kind).data(serde_json::to_value(self).unwrap_or_default())
    }
}

/// Callback for state changes.
pub type CircuitListener = Arc<dyn Fn(&CircuitChange) + Send + Sync>;

#[derive(Debug)]
struct Inner {
    state: CircuitState,
    failures: u32,
    /// When it opened (open) or when the current trial round began (half-open).
    since: Instant,
    admitted: u32,
    succeeded: u32,
}

/// One runtime's breaker. Thread-safe; cheap to share behind an `Arc`.
pub struct CircuitBreaker {
    name: String,
    policy: CircuitPolicy,
    inner: Mutex<Inner>,
    listener: Option<CircuitListener>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("state", &self.state())
            .finish()
    }
}

impl CircuitBreaker {
    pub fn new(name: impl Into<String>, policy: CircuitPolicy) -> Self {
        CircuitBreaker {
            name: name.into(),
            policy,
            inner: Mutex::new(Inner {
                state: CircuitState::Closed,
                failures: 0,
                since: Instant::now(),
                admitted: 0,
                succeeded: 0,
            }),
            listener: None,
        }
    }

    /// Report state changes to `listener`.
    pub fn with_listener(mut self, listener: CircuitListener) -> Self {
        self.listener = Some(listener);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn emit(&self, change: Option<CircuitChange>) {
        let Some(c) = change else { return };
        tracing::info!(
            runtime = %c.runtime,
            from = c.from.as_str(),
            to = c.to.as_str(),
            failures = c.failures,
            "circuit breaker changed state"
        );
        if let Some(l) = &self.listener {
            l(&c);
        }
    }

    fn set(&self, inner: &mut Inner, to: CircuitState) -> Option<CircuitChange> {
        let from = inner.state;
        let failures = inner.failures;
        inner.state = to;
        inner.since = Instant::now();
        inner.admitted = 0;
        inner.succeeded = 0;
        if to == CircuitState::Closed {
            inner.failures = 0;
        }
        (from != to).then(|| CircuitChange {
            runtime: self.name.clone(),
            from,
            to,
            failures,
        })
    }

    /// The current state (an open breaker whose time is up still reads open
    /// until the next `allow()`; see [`CircuitBreaker::would_allow`]).
    pub fn state(&self) -> CircuitState {
        self.inner.lock().state
    }

    /// Whether `allow()` would admit a call now, without taking a trial slot.
    pub fn would_allow(&self) -> bool {
        let g = self.inner.lock();
        match g.state {
            CircuitState::Closed => true,
            CircuitState::Open => Instant::now() >= g.since + self.policy.open_for,
            CircuitState::HalfOpen => {
                g.admitted < self.policy.half_open_calls
                    || Instant::now() >= g.since + self.policy.open_for
            }
        }
    }

    /// When an open breaker will admit trial calls.
    pub fn retry_at(&self) -> Option<Instant> {
        let g = self.inner.lock();
        (g.state == CircuitState::Open).then(|| g.since + self.policy.open_for)
    }

    /// Ask to make a call. `true` admits it (in half-open it takes a trial slot);
    /// the caller must then report the outcome.
    pub fn allow(&self) -> bool {
        let (ok, change) = {
            let mut g = self.inner.lock();
            let now = Instant::now();
            match g.state {
                CircuitState::Closed => (true, None),
                CircuitState::Open => {
                    if now >= g.since + self.policy.open_for {
                        let c = self.set(&mut g, CircuitState::HalfOpen);
                        g.admitted = 1;
                        (true, c)
                    } else {
                        (false, None)
                    }
                }
                CircuitState::HalfOpen => {
                    if g.admitted >= self.policy.half_open_calls
                        && now >= g.since + self.policy.open_for
                    {
                        // Trials never reported back: start a new round.
                        g.since = now;
                        g.admitted = 0;
                        g.succeeded = 0;
                    }
                    if g.admitted < self.policy.half_open_calls {
                        g.admitted += 1;
                        (true, None)
                    } else {
                        (false, None)
                    }
                }
            }
        };
        self.emit(change);
        ok
    }

    /// A call succeeded.
    pub fn record_success(&self) {
        let change = {
            let mut g = self.inner.lock();
            match g.state {
                CircuitState::Closed => {
                    g.failures = 0;
                    None
                }
                CircuitState::HalfOpen => {
                    g.succeeded += 1;
                    if g.succeeded >= self.policy.half_open_calls {
                        self.set(&mut g, CircuitState::Closed)
                    } else {
                        None
                    }
                }
                // A late success of a call admitted before the breaker opened.
                CircuitState::Open => None,
            }
        };
        self.emit(change);
    }

    /// A call failed (only runtime faults count, not caller errors).
    pub fn record_failure(&self) {
        let change = {
            let mut g = self.inner.lock();
            match g.state {
                CircuitState::Closed => {
                    g.failures += 1;
                    if g.failures >= self.policy.failure_threshold {
                        self.set(&mut g, CircuitState::Open)
                    } else {
                        None
                    }
                }
                CircuitState::HalfOpen => {
                    g.failures += 1;
                    self.set(&mut g, CircuitState::Open)
                }
                CircuitState::Open => None,
            }
        };
        self.emit(change);
    }

    /// Force the breaker closed (an operator's reset).
    pub fn reset(&self) {
        let change = {
            let mut g = self.inner.lock();
            self.set(&mut g, CircuitState::Closed)
        };
        self.emit(change);
    }
}

/// Breakers keyed by runtime name, created on first use with one policy.
#[derive(Clone)]
pub struct CircuitRegistry {
    policy: CircuitPolicy,
    breakers: Arc<Mutex<BTreeMap<String, Arc<CircuitBreaker>>>>,
    listener: Option<CircuitListener>,
}

impl std::fmt::Debug for CircuitRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitRegistry")
            .field("policy", &self.policy)
            .field("states", &self.states())
            .finish()
    }
}

impl CircuitRegistry {
    pub fn new(policy: CircuitPolicy) -> Self {
        CircuitRegistry {
            policy,
            breakers: Arc::new(Mutex::new(BTreeMap::new())),
            listener: None,
        }
    }

    /// Report every breaker's state changes to `listener` (set before first use).
    pub fn with_listener(mut self, listener: CircuitListener) -> Self {
        self.listener = Some(listener);
        self
    }

    pub fn policy(&self) -> CircuitPolicy {
        self.policy
    }

    /// The breaker of `runtime`, created closed on first use.
    pub fn get(&self, runtime: &str) -> Arc<CircuitBreaker> {
        let mut map = self.breakers.lock();
        map.entry(runtime.to_string())
            .or_insert_with(|| {
                let mut b = CircuitBreaker::new(runtime, self.policy);
                if let Some(l) = &self.listener {
                    b = b.with_listener(l.clone());
                }
                Arc::new(b)
            })
            .clone()
    }

    /// Every known breaker's state, by runtime name.
    pub fn states(&self) -> BTreeMap<String, CircuitState> {
        let map = self.breakers.lock();
        map.iter().map(|(k, b)| (k.clone(), b.state())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Seen = Arc<Mutex<Vec<(CircuitState, CircuitState)>>>;

    fn breaker() -> (CircuitBreaker, Seen) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let b = CircuitBreaker::new("kata", CircuitPolicy::default())
            .with_listener(Arc::new(move |c| s2.lock().push((c.from, c.to))));
        (b, seen)
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_five_consecutive_failures() {
        let (b, seen) = breaker();
        for _ in 0..4 {
            assert!(b.allow());
            b.record_failure();
        }
        b.record_success(); // resets the streak
        for _ in 0..4 {
            b.record_failure();
        }
        assert_eq!(b.state(), CircuitState::Closed);
        b.record_failure();
        assert_eq!(b.state(), CircuitState::Open);
        assert!(!b.allow());
        assert_eq!(*seen.lock(), [(CircuitState::Closed, CircuitState::Open)]);
        let ev = CircuitChange {
            runtime: "kata".into(),
            from: CircuitState::Closed,
            to: CircuitState::Open,
            failures: 5,
        }
        .to_event();
        assert_eq!(ev.kind, "circuit_opened");
        assert_eq!(ev.data["to"], "open");
        assert_eq!(ev.data["failures"], 5);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_after_sixty_seconds_and_closes_on_three_successes() {
        let (b, seen) = breaker();
        for _ in 0..5 {
            b.record_failure();
        }
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!b.would_allow());
        assert!(!b.allow());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(b.would_allow());
        assert!(b.allow());
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert!(b.allow());
        assert!(b.allow());
        assert!(!b.allow(), "only three trial calls");
        b.record_success();
        b.record_success();
        assert_eq!(b.state(), CircuitState::HalfOpen);
        b.record_success();
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(
            *seen.lock(),
            [
                (CircuitState::Closed, CircuitState::Open),
                (CircuitState::Open, CircuitState::HalfOpen),
                (CircuitState::HalfOpen, CircuitState::Closed)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_reopens_for_another_minute() {
        let (b, _) = breaker();
        for _ in 0..5 {
            b.record_failure();
        }
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(b.allow());
        b.record_success();
        assert!(b.allow());
        b.record_failure();
        assert_eq!(b.state(), CircuitState::Open);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(!b.allow());
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(b.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_trials_do_not_wedge_the_breaker() {
        let (b, _) = breaker();
        for _ in 0..5 {
            b.record_failure();
        }
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..3 {
            assert!(b.allow());
        }
        assert!(!b.allow());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(b.allow());
    }

    #[test]
    fn registry_shares_breakers_across_threads() {
        let reg = CircuitRegistry::new(CircuitPolicy {
            failure_threshold: 1000,
            ..Default::default()
        });
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let r = reg.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        r.get("e2b").record_failure();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(reg.get("e2b").inner.lock().failures, 800);
        assert_eq!(reg.states()["e2b"], CircuitState::Closed);
        assert_eq!(CircuitState::Open.gauge(), 2);
    }
}
