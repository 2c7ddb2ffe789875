//! godel-policy: the control plane's policy pieces as a library, with no HTTP
//! and no SQLite, each tested on its own so `godel-control` can wire them in.
//!
//! | module | piece |
//! |---|---|
//! | [`config`] | `godel.toml` + `GODEL_*` overrides, validated with the key path in every error |
//! | [`quota`] | does a spawn fit the team's quota, and which quota is full |
//! | [`fair_queue`] | spawns over quota wait: FIFO per team, round robin across teams, deadlines |
//! | [`pool`] | warm pools: O(1) claim, background refill, drain on shutdown |
//! | [`fallback`] | candidate planning (chain, availability, circuits) and the fallback executor |
//! | [`mod@retry`] | exponential backoff for retryable errors under a deadline |
//! | [`circuit`] | per-runtime circuit breakers |
//! | [`health`] | probe-driven health decisions and the restart policy, plus the probe loop |
//! | [`metrics`] | Prometheus/OpenMetrics registry with SPEC-002 §8.2 names |
//! | `fault` | (feature `fault`) a fault-injecting `RuntimeProvider` for tests |
//!
//! # Wiring into the daemon's spawn path
//!
//! At start: `let cfg = config::load(path, &env)?;` build one
//! `CircuitRegistry::new(cfg.circuit.policy())` (its listener turns
//! [`circuit::CircuitChange`]s into `circuit_opened`/`circuit_closed` events and
//! `Metrics::set_circuit_state`), one [`FairQueue`], one [`Metrics`], the
//! [`WarmPools`] from `cfg.pools` (create = the spawn path below with the
//! pool's spec and a `pool` label, destroy = terminate; then `start()`), and a
//! [`HealthMonitor`] from `cfg.health.policy()` whose probe calls
//! `provider.status(id)` (alive = not error/terminated; report a paused
//! runtime as healthy or `unwatch` it) and `exec_collect(cfg.health.probe)`
//! with `timeout_ms` = `probe_timeout_secs` (responsive = exit 0); the
//! monitor also cuts probes at that timeout.
//!
//! For each spawn request of team `T`:
//! 1. `let team = cfg.team(T)`; refuse runtimes the team may not use
//!    (`team.allows`), `team.limits.apply(&spec.resources)?` to check and
//!    fill per-agent limits.
//! 2. **Quota + fair queue**: `queue.acquire(T, || store.try_reserve(T,
//!    &limits), now + team.queue_timeout).await?` where `try_reserve` is the
//!    store's atomic check-and-insert of the `pending` record, answering
//!    `Admission::Wait(..)` naming the full quota: inside its transaction the
//!    store sums the team's reservations and calls `quota::admit(
//!    &team.quota, used, QuotaUsage::of(&limits))`. Check
//!    `quota::never_fits` first and fail at once when it says so.
//!    Whenever a runtime ends or its reservation is released, call
//!    `queue.notify_released()`. Export `queue.depths()` as `godel_queue_depth`.
//! 3. **Warm pool**: `if let Some(k) = pool::pool_key(&spec, &runtime)` and
//!    `pools.claim_for_team(&k, Some(T))` yields an id, hand that runtime over
//!    (re-label its record) and skip step 4.
//! 4. **Fallback with retry and circuit**: `fallback::plan(PlanInput { chain:
//!    &team.fallback, requested: spec.runtime.as_deref(), allowed:
//!    &team.allowed_runtimes }, |name| cached availability of the registered
//!    provider, &circuits).require_candidates()?`, then
//!    `fallback::spawn_with_fallback(&plan, &cfg.retry.policy(),
//!    Some(deadline), &circuits, on_decision, |rt| provider(rt).spawn(&id,
//!    &spec))`. `on_decision` stores `decision.to_event()` (with runtime id and
//!    team) and calls `metrics.record_decision(&decision)`.
//! 5. On success mark the record `running` with the returned runtime,
//!    `metrics.observe_boot/observe_spawn`, and `health.watch(&id, None)`; on
//!    failure mark it `error`, release the reservation and
//!    `queue.notify_released()`.
//!
//! The health monitor's receiver is drained by one daemon task: `Died` →
//! record `error` (with reason) unless a restart follows, `Restart { source }`
//! → terminate + `restore` from the snapshot or `spawn` from the stored spec
//! under the same id, then `health.restart_finished(id, result)` and
//! `metrics.inc_restart` (`result` is `Result<(), String>`); `GiveUp` →
//! record `error` for good. After each
//! snapshot call `health.set_snapshot(id, Some(snap))`; on terminate/pause
//! `health.unwatch(id)`. On shutdown: `pools.shutdown().await`,
//! `health.shutdown()`.
//!
//! `tests/spawn_path.rs` is a worked example of steps 1–5 over an in-memory
//! "store" and fault-injecting providers.

pub mod circuit;
pub mod config;
pub mod fair_queue;
pub mod fallback;
#[cfg(feature = "fault")]
pub mod fault;
pub mod health;
pub mod metrics;
pub mod pool;
pub mod quota;
pub mod retry;

pub use circuit::{CircuitBreaker, CircuitChange, CircuitPolicy, CircuitRegistry, CircuitState};
pub use config::{Config, TeamPolicy, load};
pub use fair_queue::{Admission, FairQueue};
pub use fallback::{
    FallbackDecision, FallbackPlan, Outcome, PlanInput, SkipReason, plan, spawn_with_fallback,
};
#[cfg(feature = "fault")]
pub use fault::{Behaviour, FaultProvider, Op};
pub use health::{
    Health, HealthAction, HealthEvent, HealthMonitor, HealthPolicy, HealthTracker, Probe,
    RestartPolicy, RestartSource,
};
pub use metrics::Metrics;
pub use pool::{PoolEvent, PoolKey, PoolSource, WarmPools, pool_key};
pub use quota::{QuotaUsage, admit};
pub use retry::{Attempt, RetryPolicy, retry};
