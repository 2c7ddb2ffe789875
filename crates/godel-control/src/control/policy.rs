//! The control plane's policy state and how a spawn uses it: team policy
//! (config file merged with teams created through the API), per-agent
//! limits, quota reservation through the fair queue, the fallback plan with
//! retries and circuit breakers, and the metrics every decision feeds.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use godel_core::{Availability, Event, Result};
use godel_policy::{CircuitRegistry, Config, FairQueue, Metrics, TeamPolicy};
use serde_json::json;

use super::Control;
use crate::store::Quota;

/// How long a provider's `available()` answer is reused by the planner.
const AVAILABILITY_TTL: Duration = Duration::from_secs(30);

/// Policy state shared by every request.
pub struct PolicyState {
    pub config: Config,
    pub circuits: CircuitRegistry,
    pub queue: FairQueue,
    pub metrics: Metrics,
    availability: Mutex<HashMap<String, (Instant, Availability)>>,
}

impl PolicyState {
    pub fn new(config: Config, events: tokio::sync::mpsc::UnboundedSender<Event>) -> PolicyState {
        let metrics = Metrics::new();
        let m = metrics.clone();
        let circuits = CircuitRegistry::new(config.circuit.policy()).with_listener(Arc::new(move |c| {
            m.set_circuit_state(&c.runtime, c.to);
            let kind = match c.to.as_str() {
                "open" => godel_core::EventKind::CircuitOpened,
                "closed" => godel_core::EventKind::CircuitClosed,
                _ => godel_core::EventKind::CircuitHalfOpen,
            };
            let _ = events.send(Event::new(kind).data(json!({
                "runtime": c.runtime, "from": c.from.as_str(), "to": c.to.as_str(), "failures": c.failures
            })));
        }));
        PolicyState {
            config,
            circuits,
            queue: FairQueue::new(1024),
            metrics,
            availability: Mutex::new(HashMap::new()),
        }
    }
}

/// Options of one spawn request.
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    /// Wait this long in the team's fair queue when the quota is full
    /// (`None`: fail at once with `RESOURCE_EXHAUSTED`).
    pub queue_wait: Option<Duration>,
}

impl Control {
    /// The effective policy of a team: the config file's, with fields set
    /// through `godel team create` taking precedence.
    pub fn team_policy(&self, team: &str) -> Result<(TeamPolicy, Quota)> {
        let mut tp = self.policy.config.team(team);
        let q = &tp.quota;
        let mut quota = Quota {
            max_agents: q.max_agents.map(u64::from),
            max_cpu_millis: q.cpu.map(|c| c.millis()),
            max_memory_bytes: q.memory.map(|m| m.get()),
            max_disk_bytes: q.disk.map(|d| d.get()),
        };
        if let Some(rec) = self.store.get_team(team)? {
            let r = rec.quota();
            quota.max_agents = r.max_agents.or(quota.max_agents);
            quota.max_cpu_millis = r.max_cpu_millis.or(quota.max_cpu_millis);
            quota.max_memory_bytes = r.max_memory_bytes.or(quota.max_memory_bytes);
            quota.max_disk_bytes = r.max_disk_bytes.or(quota.max_disk_bytes);
            if let Some(rt) = rec.runtime {
                tp.runtime = rt;
            }
            if !rec.fallback.is_empty() {
                tp.fallback = rec.fallback;
            }
        }
        Ok((tp, quota))
    }

    /// Whether a team's default runtime was set explicitly (config or API).
    pub(crate) fn team_runtime_is_set(&self, team: &str) -> Result<bool> {
        let in_config = self
            .policy
            .config
            .teams
            .get(team)
            .is_some_and(|t| t.runtime.is_some());
        let in_store = self
            .store
            .get_team(team)?
            .is_some_and(|t| t.runtime.is_some());
        Ok(in_config || in_store)
    }

    /// A provider's availability, cached for a short while.
    pub(crate) async fn cached_availability(&self, name: &str) -> Option<Availability> {
        let provider = self.provider(name).ok()?;
        if let Some((t, a)) = self.policy.availability.lock().get(name)
            && t.elapsed() < AVAILABILITY_TTL
        {
            return Some(a.clone());
        }
        let a = provider.available().await;
        self.policy
            .availability
            .lock()
            .insert(name.to_string(), (Instant::now(), a.clone()));
        Some(a)
    }

    /// Capacity was released: let waiting spawns try again.
    pub(crate) fn released(&self) {
        self.policy.queue.notify_released();
    }

    pub fn metrics(&self) -> &Metrics {
        &self.policy.metrics
    }

    pub fn config(&self) -> &Config {
        &self.policy.config
    }

    /// Refresh gauges derived from the store (before rendering metrics).
    pub fn refresh_gauges(&self) -> Result<()> {
        let m = &self.policy.metrics;
        for (team, depth) in self.policy.queue.depths() {
            m.set_queue_depth(&team, depth);
        }
        for (rt, st) in self.policy.circuits.states() {
            m.set_circuit_state(&rt, st);
        }
        let mut teams: Vec<String> = self
            .store
            .list_teams()?
            .into_iter()
            .map(|t| t.name)
            .collect();
        teams.extend(self.policy.config.teams.keys().cloned());
        teams.sort();
        teams.dedup();
        for t in teams {
            let (_, q) = self.team_policy(&t)?;
            let u = self.store.team_usage(&t)?;
            m.set_quota(
                &t,
                "agents",
                u.agents as f64,
                q.max_agents.map(|v| v as f64),
            );
            m.set_quota(
                &t,
                "cpu",
                u.cpu_millis as f64 / 1000.0,
                q.max_cpu_millis.map(|v| v as f64 / 1000.0),
            );
            m.set_quota(
                &t,
                "memory_bytes",
                u.memory_bytes as f64,
                q.max_memory_bytes.map(|v| v as f64),
            );
            m.set_quota(
                &t,
                "disk_bytes",
                u.disk_bytes as f64,
                q.max_disk_bytes.map(|v| v as f64),
            );
        }
        Ok(())
    }
}
