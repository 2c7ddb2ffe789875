//! Health checks and the restart policy.
//!
//! [`HealthTracker`] is a pure decision engine for one runtime: it is fed
//! probe results ([`Probe`]: is the process/VM alive? does it answer an exec
//! probe?) and the clock, and answers with [`HealthAction`]s for the daemon to
//! carry out. The rules:
//! - alive and responsive: healthy (announced only after being unhealthy or
//!   restarted); healthy for `stable_for` and the restart count starts over;
//! - alive but not responsive `unhealthy_after` probes in a row: unhealthy;
//!   `dead_after` in a row: treated as dead (hung);
//! - not alive: dead at once;
//! - dead with `restart = "on-failure"`: restart after `backoff * 2^n`
//!   (capped by `max_backoff`), from the runtime's last snapshot when it has
//!   one, else by re-creating it from its spec; after `max_restarts` failed
//!   lives it gives up. With `restart = "never"` a dead runtime just is dead.
//!
//! [`HealthMonitor`] runs the tracker: one task per watched runtime calls the
//! daemon's probe closure every `interval` and sends [`HealthEvent`]s through a
//! channel; the daemon reports back with [`HealthMonitor::restart_finished`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use godel_core::RestartPolicy;

/// The tracker's settings (see `[health]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    pub interval: Duration,
    /// A probe still running after this counts as unresponsive.
    pub probe_timeout: Duration,
    pub unhealthy_after: u32,
    pub dead_after: u32,
    pub restart: RestartPolicy,
    pub max_restarts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub stable_for: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            interval: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(5),
            unhealthy_after: 2,
            dead_after: 6,
            restart: RestartPolicy::Never,
            max_restarts: 3,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            stable_for: Duration::from_secs(600),
        }
    }
}

impl HealthPolicy {
    /// The delay before restart number `n + 1` (n = restarts so far).
    pub fn backoff_for(&self, n: u32) -> Duration {
        let f = 1u32.checked_shl(n).unwrap_or(u32::MAX);
        self.backoff
            .checked_mul(f)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// The runtime's process, VM or pod exists (its status is not `error`/`terminated`).
    pub alive: bool,
    /// The exec probe answered (exit 0 within its timeout).
    pub responsive: bool,
    /// What was seen, for events.
    pub detail: String,
}

impl Probe {
    pub fn healthy() -> Self {
        Probe {
            alive: true,
            responsive: true,
            detail: String::new(),
        }
    }
    pub fn unresponsive(detail: impl Into<String>) -> Self {
        Probe {
            alive: true,
            responsive: false,
            detail: detail.into(),
        }
    }
    pub fn dead(detail: impl Into<String>) -> Self {
        Probe {
            alive: false,
            responsive: false,
            detail: detail.into(),
        }
    }
}

/// Where a runtime's health is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not probed yet (or just restarted).
    Unknown,
    Healthy,
    Unhealthy,
    /// Dead; a restart may be pending.
    Dead,
    /// The daemon is restarting it.
    Restarting,
    /// Dead for good (restarts exhausted, or `restart = "never"`).
    Failed,
}

/// How to bring a runtime back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum RestartSource {
    /// Restore from this snapshot (the runtime's latest).
    Snapshot { snapshot_id: String },
    /// Create it again from its spec.
    Recreate,
}

/// What the daemon should do (and record as an event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum HealthAction {
    /// Answering again after being unhealthy or restarted.
    Healthy,
    /// Mark unhealthy (no restart yet).
    Unhealthy { failures: u32, reason: String },
    /// It died. `restart_in_ms` is set when a restart will follow.
    Died {
        reason: String,
        restart_in_ms: Option<u64>,
    },
    /// Restart it now, then call `restart_finished`.
    Restart {
        attempt: u32,
        source: RestartSource,
        reason: String,
    },
    /// Restarts are exhausted: mark it `error` for good.
    GiveUp { restarts: u32, reason: String },
}

/// The decision engine of one runtime.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    policy: HealthPolicy,
    health: Health,
    failures: u32,
    restarts: u32,
    snapshot: Option<String>,
    restart_due: Option<Instant>,
    healthy_since: Option<Instant>,
    announce: bool,
    reason: String,
}

impl HealthTracker {
    pub fn new(policy: HealthPolicy) -> Self {
        HealthTracker {
            policy,
            health: Health::Unknown,
            failures: 0,
            restarts: 0,
            snapshot: None,
            restart_due: None,
            healthy_since: None,
            announce: false,
            reason: String::new(),
        }
    }

    pub fn health(&self) -> Health {
        self.health
    }

    /// Restarts so far in this unstable period.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// The runtime's latest snapshot (restarts restore from it).
    pub fn set_snapshot(&mut self, snapshot_id: Option<String>) {
        self.snapshot = snapshot_id;
    }

    /// When `tick` has something to do (a pending restart).
    pub fn next_due(&self) -> Option<Instant> {
        (self.health == Health::Dead)
            .then_some(self.restart_due)
            .flatten()
    }

    /// Whether probing is pointless (dead, restarting or failed).
    pub fn probing_paused(&self) -> bool {
        matches!(
            self.health,
            Health::Dead | Health::Restarting | Health::Failed
        )
    }

    /// Feed one probe result.
    pub fn observe(&mut self, now: Instant, probe: &Probe) -> Vec<HealthAction> {
        if self.probing_paused() {
            return Vec::new();
        }
        let mut out = Vec::new();
        if probe.alive && probe.responsive {
            self.failures = 0;
            if self.health != Health::Healthy {
                self.health = Health::Healthy;
                self.healthy_since = Some(now);
                if std::mem::take(&mut self.announce) {
                    out.push(HealthAction::Healthy);
                }
            }
            if self.restarts > 0
                && self
                    .healthy_since
                    .is_some_and(|t| now >= t + self.policy.stable_for)
            {
                self.restarts = 0;
            }
            return out;
        }
        self.failures += 1;
        if !probe.alive {
            return self.die(now, format!("runtime died: {}", probe.detail));
        }
        if self.failures >= self.policy.dead_after {
            return self.die(
                now,
                format!(
                    "unresponsive for {} probes: {}",
                    self.failures, probe.detail
                ),
            );
        }
        if self.failures >= self.policy.unhealthy_after && self.health != Health::Unhealthy {
            self.health = Health::Unhealthy;
            self.announce = true;
            out.push(HealthAction::Unhealthy {
                failures: self.failures,
                reason: probe.detail.clone(),
            });
        }
        out
    }

    fn die(&mut self, now: Instant, reason: String) -> Vec<HealthAction> {
        self.reason = reason.clone();
        self.failures = 0;
        match self.policy.restart {
            RestartPolicy::Never => {
                self.health = Health::Failed;
                vec![HealthAction::Died {
                    reason,
                    restart_in_ms: None,
                }]
            }
            RestartPolicy::OnFailure if self.restarts >= self.policy.max_restarts => {
                self.health = Health::Failed;
                vec![
                    HealthAction::Died {
                        reason: reason.clone(),
                        restart_in_ms: None,
                    },
                    HealthAction::GiveUp {
                        restarts: self.restarts,
                        reason,
                    },
                ]
            }
            RestartPolicy::OnFailure => {
                let delay = self.policy.backoff_for(self.restarts);
                self.health = Health::Dead;
                self.restart_due = Some(now + delay);
                let mut out = vec![HealthAction::Died {
                    reason,
                    restart_in_ms: Some(delay.as_millis() as u64),
                }];
                out.extend(self.tick(now));
                out
            }
        }
    }

    /// Advance the clock: emits `Restart` when a pending restart is due.
    pub fn tick(&mut self, now: Instant) -> Vec<HealthAction> {
        match (self.health, self.restart_due) {
            (Health::Dead, Some(due)) if now >= due => {
                self.health = Health::Restarting;
                self.restart_due = None;
                self.restarts += 1;
                let source = match &self.snapshot {
                    Some(s) => RestartSource::Snapshot {
                        snapshot_id: s.clone(),
                    },
                    None => RestartSource::Recreate,
                };
                vec![HealthAction::Restart {
                    attempt: self.restarts,
                    source,
                    reason: self.reason.clone(),
                }]
            }
            _ => Vec::new(),
        }
    }

    /// The daemon finished a `Restart` (successfully or not).
    pub fn restart_finished(
        &mut self,
        now: Instant,
        result: Result<(), String>,
    ) -> Vec<HealthAction> {
        if self.health != Health::Restarting {
            return Vec::new();
        }
        match result {
            Ok(()) => {
                self.health = Health::Unknown;
                self.failures = 0;
                self.announce = true;
                self.healthy_since = None;
                Vec::new()
            }
            Err(e) => self.die(now, format!("restart failed: {e}")),
        }
    }
}

/// A health action for one runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthEvent {
    pub id: String,
    pub action: HealthAction,
}

impl HealthEvent {
    /// The event the daemon stores: `health_healthy`, `health_unhealthy`,
    /// `died`, `restart` or `restart_gave_up`, for runtime `id`.
    pub fn to_event(&self) -> godel_core::Event {
        let kind = match self.action {
            HealthAction::Healthy => godel_core::EventKind::HealthHealthy,
            HealthAction::Unhealthy { .. } => godel_core::EventKind::HealthUnhealthy,
            HealthAction::Died { .. } => godel_core::EventKind::Died,
            HealthAction::Restart { .. } => godel_core::EventKind::Restart,
            HealthAction::GiveUp { .. } => godel_core::EventKind::RestartGaveUp,
        };
        godel_core::Event::new(kind)
            .runtime(&self.id)
            .data(serde_json::to_value(&self.action).unwrap_or_default())
    }
}

/// The daemon's probe: given a runtime id, check it (status + exec probe).
pub type ProbeFn = Arc<dyn Fn(String) -> BoxFuture<'static, Probe> + Send + Sync>;

struct Entry {
    tracker: HealthTracker,
    wake: Arc<Notify>,
    task: Option<JoinHandle<()>>,
}

struct Shared {
    policy: HealthPolicy,
    probe: ProbeFn,
    tx: mpsc::UnboundedSender<HealthEvent>,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Shared {
    fn send(&self, id: &str, actions: Vec<HealthAction>) {
        for action in actions {
            let _ = self.tx.send(HealthEvent {
                id: id.to_string(),
                action,
            });
        }
    }
}

/// Probes watched runtimes on an interval and emits actions.
#[derive(Clone)]
pub struct HealthMonitor {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthMonitor")
            .field("watched", &self.shared.entries.lock().len())
            .finish()
    }
}

impl HealthMonitor {
    /// A monitor and the receiving end of its actions.
    pub fn new(
        policy: HealthPolicy,
        probe: ProbeFn,
    ) -> (Self, mpsc::UnboundedReceiver<HealthEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            policy,
            probe,
            tx,
            entries: Mutex::new(HashMap::new()),
        });
        (HealthMonitor { shared }, rx)
    }

    /// Start probing `id` (first probe after one interval). Re-watching resets it.
    pub fn watch(&self, id: &str, snapshot: Option<String>) {
        self.unwatch(id);
        let mut tracker = HealthTracker::new(self.shared.policy);
        tracker.set_snapshot(snapshot);
        let wake = Arc::new(Notify::new());
        // The entry exists before its task starts (the task exits when it is gone).
        self.shared.entries.lock().insert(
            id.to_string(),
            Entry {
                tracker,
                wake: wake.clone(),
                task: None,
            },
        );
        let task = tokio::spawn(run(self.shared.clone(), id.to_string(), wake));
        match self.shared.entries.lock().get_mut(id) {
            Some(e) => e.task = Some(task),
            None => task.abort(),
        }
    }

    /// Stop probing `id` (it was terminated or paused).
    pub fn unwatch(&self, id: &str) {
        if let Some(mut e) = self.shared.entries.lock().remove(id)
            && let Some(t) = e.task.take()
        {
            t.abort();
        }
    }

    /// Record `id`'s latest snapshot (restarts restore from it).
    pub fn set_snapshot(&self, id: &str, snapshot: Option<String>) {
        if let Some(e) = self.shared.entries.lock().get_mut(id) {
            e.tracker.set_snapshot(snapshot);
        }
    }

    /// The daemon carried out a `Restart` for `id`.
    pub fn restart_finished(&self, id: &str, result: Result<(), String>) {
        let actions = {
            let mut map = self.shared.entries.lock();
            let Some(e) = map.get_mut(id) else {
                return;
            };
            e.wake.notify_one();
            e.tracker.restart_finished(Instant::now(), result)
        };
        self.shared.send(id, actions);
    }

    pub fn health(&self, id: &str) -> Option<Health> {
        self.shared
            .entries
            .lock()
            .get(id)
            .map(|e| e.tracker.health())
    }

    /// Ids being watched.
    pub fn watched(&self) -> Vec<String> {
        self.shared.entries.lock().keys().cloned().collect()
    }

    /// Stop every probe task.
    pub fn shutdown(&self) {
        let ids = self.watched();
        for id in ids {
            self.unwatch(&id);
        }
    }
}

async fn run(shared: Arc<Shared>, id: String, wake: Arc<Notify>) {
    let interval = shared.policy.interval;
    let mut next_probe = Instant::now() + interval;
    loop {
        let (due, paused, done) = {
            let map = shared.entries.lock();
            let Some(e) = map.get(&id) else { return };
            (
                e.tracker.next_due(),
                e.tracker.probing_paused(),
                e.tracker.health() == Health::Failed,
            )
        };
        if done {
            return;
        }
        let until = match (paused, due) {
            (_, Some(d)) => d,
            (true, None) => Instant::now() + Duration::from_secs(3600),
            (false, None) => next_probe,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = wake.notified() => {}
        }
        let now = Instant::now();
        let (mut actions, probe_now) = {
            let mut map = shared.entries.lock();
            let Some(e) = map.get_mut(&id) else { return };
            let actions = e.tracker.tick(now);
            let paused_now = e.tracker.probing_paused();
            if paused && !paused_now {
                // Back from a restart: give it one interval before probing.
                next_probe = now + interval;
            }
            (actions, !paused_now && now >= next_probe)
        };
        if probe_now {
            let fut = (shared.probe)(id.clone());
            let limit = shared.policy.probe_timeout;
            let result = match tokio::time::timeout(limit, fut).await {
                Ok(p) => p,
                Err(_) => Probe::unresponsive(format!(
                    "probe did not answer within {} ms",
                    limit.as_millis()
                )),
            };
            let now = Instant::now();
            next_probe = now + interval;
            let mut map = shared.entries.lock();
            let Some(e) = map.get_mut(&id) else { return };
            actions.extend(e.tracker.observe(now, &result));
        } else if now >= next_probe {
            next_probe = now + interval;
        }
        shared.send(&id, actions);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_failure() -> HealthPolicy {
        HealthPolicy {
            restart: RestartPolicy::OnFailure,
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unresponsive_then_unhealthy_then_dead_then_restart() {
        let mut t = HealthTracker::new(on_failure());
        let now = Instant::now();
        assert!(
            t.observe(now, &Probe::healthy()).is_empty(),
            "first healthy is silent"
        );
        assert!(
            t.observe(now, &Probe::unresponsive("exec timed out"))
                .is_empty()
        );
        let a = t.observe(now, &Probe::unresponsive("exec timed out"));
        assert_eq!(
            a,
            [HealthAction::Unhealthy {
                failures: 2,
                reason: "exec timed out".into()
            }]
        );
        for _ in 0..3 {
            assert!(t.observe(now, &Probe::unresponsive("x")).is_empty());
        }
        let a = t.observe(now, &Probe::unresponsive("x"));
        assert!(
            matches!(&a[0], HealthAction::Died { restart_in_ms: Some(1000), reason } if reason.starts_with("unresponsive for 6 probes")),
            "{a:?}"
        );
        assert_eq!(a.len(), 1);
        assert_eq!(t.health(), Health::Dead);
        assert!(t.tick(now + Duration::from_millis(999)).is_empty());
        let a = t.tick(now + Duration::from_secs(1));
        assert!(
            matches!(
                &a[0],
                HealthAction::Restart {
                    attempt: 1,
                    source: RestartSource::Recreate,
                    ..
                }
            ),
            "{a:?}"
        );
        assert!(t.restart_finished(now, Ok(())).is_empty());
        assert_eq!(t.observe(now, &Probe::healthy()), [HealthAction::Healthy]);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_restores_from_snapshot_and_gives_up() {
        let mut t = HealthTracker::new(on_failure());
        t.set_snapshot(Some("snap-1".into()));
        let mut now = Instant::now();
        let mut delays = Vec::new();
        for n in 1..=3 {
            let a = t.observe(now, &Probe::dead("exit 137"));
            let HealthAction::Died {
                restart_in_ms: Some(ms),
                ..
            } = a[0]
            else {
                panic!("{a:?}")
            };
            delays.push(ms);
            now += Duration::from_millis(ms);
            let a = t.tick(now);
            assert_eq!(
                a,
                [HealthAction::Restart {
                    attempt: n,
                    source: RestartSource::Snapshot {
                        snapshot_id: "snap-1".into()
                    },
                    reason: "runtime died: exit 137".into()
                }]
            );
            t.restart_finished(now, Ok(()));
        }
        assert_eq!(delays, [1000, 2000, 4000]);
        let a = t.observe(now, &Probe::dead("exit 137"));
        assert!(
            matches!(a.last(), Some(HealthAction::GiveUp { restarts: 3, .. })),
            "{a:?}"
        );
        assert_eq!(t.health(), Health::Failed);
        assert!(t.observe(now, &Probe::healthy()).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_restart_counts_and_stable_period_resets() {
        let mut t = HealthTracker::new(on_failure());
        let now = Instant::now();
        t.observe(now, &Probe::dead("gone"));
        t.tick(now + Duration::from_secs(1));
        let a = t.restart_finished(now + Duration::from_secs(1), Err("no capacity".into()));
        assert!(
            matches!(&a[0], HealthAction::Died { restart_in_ms: Some(2000), reason } if reason == "restart failed: no capacity"),
            "{a:?}"
        );
        let later = now + Duration::from_secs(3);
        assert_eq!(t.tick(later).len(), 1);
        t.restart_finished(later, Ok(()));
        t.observe(later, &Probe::healthy());
        assert_eq!(t.restarts(), 2);
        t.observe(later + Duration::from_secs(600), &Probe::healthy());
        assert_eq!(t.restarts(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_probe_counts_as_unresponsive() {
        use futures::FutureExt;
        let probe: ProbeFn = Arc::new(|_id| futures::future::pending::<Probe>().boxed());
        let (mon, mut rx) = HealthMonitor::new(HealthPolicy::default(), probe);
        let start = Instant::now();
        mon.watch("rt-9", None);
        let ev = rx.recv().await.unwrap();
        assert_eq!(ev.id, "rt-9");
        let stored = ev.to_event();
        assert_eq!(stored.kind, "health_unhealthy");
        assert_eq!(stored.runtime_id.as_deref(), Some("rt-9"));
        assert_eq!(stored.data["action"], "unhealthy");
        let HealthAction::Unhealthy {
            failures: 2,
            reason,
        } = ev.action
        else {
            panic!("{ev:?}")
        };
        assert_eq!(reason, "probe did not answer within 5000 ms");
        // Probes at 10 s (cut at 15 s) and 25 s (cut at 30 s).
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        assert_eq!(mon.health("rt-9"), Some(Health::Unhealthy));
        mon.unwatch("rt-9");
        assert_eq!(mon.health("rt-9"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn never_restart_only_reports_death() {
        let mut t = HealthTracker::new(HealthPolicy::default());
        let a = t.observe(Instant::now(), &Probe::dead("oom"));
        assert_eq!(
            a,
            [HealthAction::Died {
                reason: "runtime died: oom".into(),
                restart_in_ms: None
            }]
        );
        assert_eq!(t.health(), Health::Failed);
    }
}
