//! The daemon's Prometheus metrics, served on `/metrics`.
//!
//! Names follow SPEC-002 §8.2 (`godel_runtime_boot_duration_seconds`,
//! `godel_runtime_memory_usage_bytes`, `godel_cost_per_team_dollars` ...) plus
//! the control plane's own: spawn/exec histograms, queue depth, circuit state,
//! quota use and limits, runtimes by state, fallbacks, restarts and OOM kills.
//! Built on the `prometheus-client` crate; [`Metrics::render`] produces the
//! OpenMetrics text format (serve it with [`CONTENT_TYPE`]).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::circuit::CircuitState;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

fn duration_histogram() -> Histogram {
    // 5 ms … ~84 s.
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    ])
}

/// Every metric of the daemon. Cheap to clone; clones share the values.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    boot_duration: Family<Labels, Histogram, fn() -> Histogram>,
    execution_duration: Family<Labels, Histogram, fn() -> Histogram>,
    spawn_duration: Family<Labels, Histogram, fn() -> Histogram>,
    exec_duration: Family<Labels, Histogram, fn() -> Histogram>,
    memory_usage: Family<Labels, Gauge>,
    cpu_usage: Family<Labels, FloatGauge>,
    disk_usage: Family<Labels, Gauge>,
    network_rx: Family<Labels, Gauge>,
    network_tx: Family<Labels, Gauge>,
    cost_per_agent: Family<Labels, FloatGauge>,
    cost_per_team: Family<Labels, FloatGauge>,
    budget_remaining: Family<Labels, FloatGauge>,
    queue_depth: Family<Labels, Gauge>,
    circuit_state: Family<Labels, Gauge>,
    quota_used: Family<Labels, FloatGauge>,
    quota_limit: Family<Labels, FloatGauge>,
    runtimes: Family<Labels, Gauge>,
    fallback: Family<Labels, Counter>,
    spawns: Family<Labels, Counter>,
    restarts: Family<Labels, Counter>,
    oom: Family<Labels, Counter>,
    pool_ready: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn l1(k: &'static str, v: &str) -> Labels {
    vec![(k, v.to_string())]
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let hist = || {
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram as fn() -> Histogram,
            )
        };
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            boot_duration: hist(),
            execution_duration: hist(),
            spawn_duration: hist(),
            exec_duration: hist(),
            memory_usage: Family::default(),
            cpu_usage: Family::default(),
            disk_usage: Family::default(),
            network_rx: Family::default(),
            network_tx: Family::default(),
            cost_per_agent: Family::default(),
            cost_per_team: Family::default(),
            budget_remaining: Family::default(),
            queue_depth: Family::default(),
            circuit_state: Family::default(),
            quota_used: Family::default(),
            quota_limit: Family::default(),
            runtimes: Family::default(),
            fallback: Family::default(),
            spawns: Family::default(),
            restarts: Family::default(),
            oom: Family::default(),
            pool_ready: Family::default(),
        };
        r.register(
            "godel_runtime_boot_duration_seconds",
            "Time from spawn request to a running runtime, by runtime",
            m.boot_duration.clone(),
        );
        r.register(
            "godel_runtime_execution_duration_seconds",
            "Duration of commands run inside runtimes, by runtime",
            m.execution_duration.clone(),
        );
        r.register("godel_spawn_duration_seconds", "Duration of the whole spawn path (queue, fallback, retries), by the runtime that served it", m.spawn_duration.clone());
        r.register(
            "godel_exec_duration_seconds",
            "Duration of exec API calls, by runtime",
            m.exec_duration.clone(),
        );
        r.register(
            "godel_runtime_memory_usage_bytes",
            "Memory in use by a runtime",
            m.memory_usage.clone(),
        );
        r.register(
            "godel_runtime_cpu_usage_cores",
            "CPU cores in use by a runtime",
            m.cpu_usage.clone(),
        );
        r.register(
            "godel_runtime_disk_usage_bytes",
            "Disk in use by a runtime's workspace",
            m.disk_usage.clone(),
        );
        r.register(
            "godel_runtime_network_rx_bytes",
            "Bytes received by a runtime",
            m.network_rx.clone(),
        );
        r.register(
            "godel_runtime_network_tx_bytes",
            "Bytes sent by a runtime",
            m.network_tx.clone(),
        );
        r.register(
            "godel_cost_per_agent_dollars",
            "Accrued cost of one agent",
            m.cost_per_agent.clone(),
        );
        r.register(
            "godel_cost_per_team_dollars",
            "Accrued cost of a team",
            m.cost_per_team.clone(),
        );
        r.register(
            "godel_budget_remaining_percent",
            "Budget left of a team, percent",
            m.budget_remaining.clone(),
        );
        r.register(
            "godel_queue_depth",
            "Spawns waiting in the fair queue, by team",
            m.queue_depth.clone(),
        );
        r.register(
            "godel_circuit_state",
            "Circuit breaker state by runtime: 0 closed, 1 half-open, 2 open",
            m.circuit_state.clone(),
        );
        r.register(
            "godel_quota_used",
            "Quota in use by team and resource (cpu in cores, memory and disk in bytes, agents)",
            m.quota_used.clone(),
        );
        r.register(
            "godel_quota_limit",
            "Quota limit by team and resource",
            m.quota_limit.clone(),
        );
        r.register(
            "godel_runtimes",
            "Runtimes by provider and state",
            m.runtimes.clone(),
        );
        r.register(
            "godel_fallback",
            "Spawns that fell back from one runtime to another",
            m.fallback.clone(),
        );
        r.register(
            "godel_spawns",
            "Spawn attempts by runtime and outcome",
            m.spawns.clone(),
        );
        r.register(
            "godel_restarts",
            "Automatic restarts by runtime",
            m.restarts.clone(),
        );
        r.register(
            "godel_oom",
            "Processes killed for exceeding their memory limit, by runtime",
            m.oom.clone(),
        );
        r.register(
            "godel_pool_ready",
            "Ready warm runtimes by pool",
            m.pool_ready.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            ..m
        }
    }

    /// The whole registry in OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// A runtime reached `running` this long after its spawn began.
    pub fn observe_boot(&self, runtime: &str, d: Duration) {
        self.boot_duration
            .get_or_create(&l1("runtime", runtime))
            .observe(d.as_secs_f64());
    }

    /// A command inside a runtime finished after `d`.
    pub fn observe_execution(&self, runtime: &str, d: Duration) {
        self.execution_duration
            .get_or_create(&l1("runtime", runtime))
            .observe(d.as_secs_f64());
    }

    /// The whole spawn path took `d` (`runtime` = the one that served it, or `none`).
    pub fn observe_spawn(&self, runtime: &str, d: Duration) {
        self.spawn_duration
            .get_or_create(&l1("runtime", runtime))
            .observe(d.as_secs_f64());
    }

    /// An exec API call took `d`.
    pub fn observe_exec(&self, runtime: &str, d: Duration) {
        self.exec_duration
            .get_or_create(&l1("runtime", runtime))
            .observe(d.as_secs_f64());
    }

    /// Current usage of one runtime instance.
    pub fn set_usage(
        &self,
        runtime: &str,
        id: &str,
        usage: &godel_core::ResourceUsage,
        cpu_cores: f64,
    ) {
        let l: Labels = vec![("runtime", runtime.to_string()), ("id", id.to_string())];
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.memory_usage
            .get_or_create(&l)
            .set(clamp(usage.memory_bytes));
        self.cpu_usage.get_or_create(&l).set(cpu_cores);
        self.disk_usage
            .get_or_create(&l)
            .set(clamp(usage.disk_bytes));
        self.network_rx.get_or_create(&l).set(clamp(usage.rx_bytes));
        self.network_tx.get_or_create(&l).set(clamp(usage.tx_bytes));
    }

    /// Forget a runtime instance's usage series (it ended).
    pub fn remove_runtime(&self, runtime: &str, id: &str) {
        let l: Labels = vec![("runtime", runtime.to_string()), ("id", id.to_string())];
        self.memory_usage.remove(&l);
        self.cpu_usage.remove(&l);
        self.disk_usage.remove(&l);
        self.network_rx.remove(&l);
        self.network_tx.remove(&l);
    }

    /// Forget an agent's cost series.
    pub fn remove_agent_cost(&self, team: &str, id: &str) {
        self.cost_per_agent
            .remove(&vec![("team", team.to_string()), ("id", id.to_string())]);
    }

    pub fn set_agent_cost(&self, team: &str, id: &str, dollars: f64) {
        self.cost_per_agent
            .get_or_create(&vec![("team", team.to_string()), ("id", id.to_string())])
            .set(dollars);
    }

    pub fn set_team_cost(&self, team: &str, dollars: f64) {
        self.cost_per_team
            .get_or_create(&l1("team", team))
            .set(dollars);
    }

    pub fn set_budget_remaining(&self, team: &str, percent: f64) {
        self.budget_remaining
            .get_or_create(&l1("team", team))
            .set(percent);
    }

    pub fn set_queue_depth(&self, team: &str, depth: usize) {
        self.queue_depth
            .get_or_create(&l1("team", team))
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    pub fn set_circuit_state(&self, runtime: &str, state: CircuitState) {
        self.circuit_state
            .get_or_create(&l1("runtime", runtime))
            .set(state.gauge());
    }

    /// `resource` is `agents`, `cpu` (cores), `memory` or `disk` (bytes).
    pub fn set_quota(&self, team: &str, resource: &str, used: f64, limit: Option<f64>) {
        let l: Labels = vec![
            ("team", team.to_string()),
            ("resource", resource.to_string()),
        ];
        self.quota_used.get_or_create(&l).set(used);
        match limit {
            Some(v) => {
                self.quota_limit.get_or_create(&l).set(v);
            }
            None => {
                self.quota_limit.remove(&l);
            }
        }
    }

    /// Replace the `godel_runtimes` gauge with fresh counts `(runtime, state, count)`.
    pub fn set_runtime_counts<'a>(
        &self,
        counts: impl IntoIterator<Item = (&'a str, &'a str, u64)>,
    ) {
        self.runtimes.clear();
        for (rt, st, n) in counts {
            self.runtimes
                .get_or_create(&vec![
                    ("runtime", rt.to_string()),
                    ("state", st.to_string()),
                ])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// A spawn fell back from `from` to `to` because of `reason` (an error code or `circuit_open`).
    pub fn inc_fallback(&self, from: &str, to: &str, reason: &str) {
        self.fallback
            .get_or_create(&vec![
                ("from", from.to_string()),
                ("to", to.to_string()),
                ("reason", reason.to_string()),
            ])
            .inc();
    }

    /// One spawn attempt ended; `outcome` is `ok` or an error code.
    pub fn inc_spawn(&self, runtime: &str, outcome: &str) {
        self.spawns
            .get_or_create(&vec![
                ("runtime", runtime.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
    }

    pub fn inc_restart(&self, runtime: &str) {
        self.restarts.get_or_create(&l1("runtime", runtime)).inc();
    }

    pub fn inc_oom(&self, runtime: &str, kills: u64) {
        self.oom
            .get_or_create(&l1("runtime", runtime))
            .inc_by(kills);
    }

    /// Ready warm runtimes of a pool (`pool` = the `PoolKey`'s display form).
    pub fn set_pool_ready(&self, pool: &str, ready: usize) {
        self.pool_ready
            .get_or_create(&l1("pool", pool))
            .set(i64::try_from(ready).unwrap_or(i64::MAX));
    }

    /// Feed one fallback decision into the counters.
    pub fn record_decision(&self, d: &crate::fallback::FallbackDecision) {
        use crate::fallback::Outcome;
        match d.outcome {
            Outcome::Succeeded => self.inc_spawn(&d.runtime, "ok"),
            Outcome::Retrying | Outcome::FallingBack | Outcome::Failed => {
                if let Some(c) = d.code {
                    self.inc_spawn(&d.runtime, c.as_str());
                }
            }
            Outcome::Skipped => {}
        }
        if matches!(d.outcome, Outcome::FallingBack | Outcome::Skipped)
            && let Some(next) = &d.next
        {
            self.inc_fallback(&d.runtime, next, &d.metric_reason());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix} in\n{text}"))
    }

    #[test]
    fn renders_every_family_with_spec_names() {
        let m = Metrics::new();
        m.observe_boot("microvm", Duration::from_millis(300));
        m.observe_spawn("worktree", Duration::from_millis(40));
        m.observe_exec("worktree", Duration::from_millis(3));
        m.observe_execution("worktree", Duration::from_millis(3));
        m.set_queue_depth("alpha", 3);
        m.set_circuit_state("e2b", CircuitState::Open);
        m.set_quota("alpha", "memory", 1024.0, Some(4096.0));
        m.set_runtime_counts([("worktree", "running", 2), ("microvm", "paused", 1)]);
        m.inc_fallback("e2b", "kata", "unavailable");
        m.inc_restart("microvm");
        m.inc_oom("worktree", 2);
        m.set_pool_ready("worktree:/r@main", 2);
        m.set_team_cost("alpha", 1.5);
        m.set_budget_remaining("alpha", 80.0);
        let usage = godel_core::ResourceUsage {
            memory_bytes: 1 << 20,
            ..Default::default()
        };
        m.set_usage("worktree", "rt-1", &usage, 0.5);
        let t = m.render();
        assert!(
            t.contains("# TYPE godel_runtime_boot_duration_seconds histogram"),
            "{t}"
        );
        assert_eq!(
            line(&t, "godel_runtime_boot_duration_seconds_count{"),
            "godel_runtime_boot_duration_seconds_count{runtime=\"microvm\"} 1"
        );
        assert!(
            t.contains("godel_spawn_duration_seconds_bucket{le=\"0.05\",runtime=\"worktree\"} 1")
                || t.contains(
                    "godel_spawn_duration_seconds_bucket{runtime=\"worktree\",le=\"0.05\"} 1"
                ),
            "{t}"
        );
        assert_eq!(
            line(&t, "godel_queue_depth{"),
            "godel_queue_depth{team=\"alpha\"} 3"
        );
        assert_eq!(
            line(&t, "godel_circuit_state{"),
            "godel_circuit_state{runtime=\"e2b\"} 2"
        );
        assert_eq!(
            line(&t, "godel_quota_limit{"),
            "godel_quota_limit{team=\"alpha\",resource=\"memory\"} 4096.0"
        );
        assert_eq!(
            line(&t, "godel_fallback_total{"),
            "godel_fallback_total{from=\"e2b\",to=\"kata\",reason=\"unavailable\"} 1"
        );
        assert_eq!(
            line(&t, "godel_restarts_total{"),
            "godel_restarts_total{runtime=\"microvm\"} 1"
        );
        assert_eq!(
            line(&t, "godel_oom_total{"),
            "godel_oom_total{runtime=\"worktree\"} 2"
        );
        assert_eq!(
            line(&t, "godel_runtime_memory_usage_bytes{"),
            "godel_runtime_memory_usage_bytes{runtime=\"worktree\",id=\"rt-1\"} 1048576"
        );
        assert!(
            t.contains("godel_runtimes{runtime=\"microvm\",state=\"paused\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("godel_cost_per_team_dollars{team=\"alpha\"} 1.5"),
            "{t}"
        );
        assert!(
            t.contains("godel_pool_ready{pool=\"worktree:/r@main\"} 2"),
            "{t}"
        );
        assert!(t.trim_end().ends_with("# EOF"));
        // Stale series go away.
        m.set_runtime_counts([("worktree", "running", 1)]);
        m.remove_runtime("worktree", "rt-1");
        let t = m.render();
        assert!(!t.contains("state=\"paused\""), "{t}");
        assert!(!t.contains("id=\"rt-1\""), "{t}");
    }

    #[test]
    fn decisions_feed_counters() {
        use crate::fallback::{FallbackDecision, Outcome};
        let m = Metrics::new();
        m.record_decision(&FallbackDecision {
            runtime: "e2b".into(),
            attempt: 4,
            outcome: Outcome::FallingBack,
            reason: "down".into(),
            code: Some(godel_core::ErrorCode::Unavailable),
            delay_ms: None,
            next: Some("kata".into()),
        });
        let t = m.render();
        assert!(
            t.contains("godel_fallback_total{from=\"e2b\",to=\"kata\",reason=\"unavailable\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("godel_spawns_total{runtime=\"e2b\",outcome=\"UNAVAILABLE\"} 1"),
            "{t}"
        );
    }
}
