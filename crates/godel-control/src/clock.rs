//! The control plane's time source for metering, budgets and rollouts. The
//! daemon uses [`SystemClock`]; tests install a [`ManualClock`] and move it
//! by hand, so metered costs and rollout steps are exact and no test waits.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

/// Where "now" comes from.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Arc<ManualClock> {
        Arc::new(ManualClock(Mutex::new(start)))
    }

    pub fn set(&self, t: DateTime<Utc>) {
        *self.0.lock() = t;
    }

    pub fn advance(&self, d: chrono::Duration) {
        let mut t = self.0.lock();
        *t += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock()
    }
}

/// Milliseconds since the Unix epoch.
pub fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}
