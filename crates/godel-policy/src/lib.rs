//! godel-policy: the control plane's policy pieces as a library, with no HTTP
//! and no SQLite, each tested on its own so `godel-control` can wire them in.
//!
//! | module | piece |
//! |---|---|
//! | [`config`] | `godel.toml` + `GODEL_*` overrides, validated with the key path in every error |
//! | [`fair_queue`] | spawns over quota wait: FIFO per team, round robin across teams, deadlines |
//! | [`pool`] | warm pools: O(1) claim, background refill, drain on shutdown |
//! | [`fallback`] | candidate planning (chain, availability, circuits) and the fallback executor |
//! | [`mod@retry`] | exponential backoff for retryable errors under a deadline |
//! | [`circuit`] | per-runtime circuit breakers |
//! | [`health`] | probe-driven health decisions and the restart policy, plus the probe loop |
//! | [`metrics`] | Prometheus/OpenMetrics registry with SPEC-002 §8.2 names |
//! | [`cost`] | prices, meter units → vCPU-s, GiB-s and USD, budget periods and thresholds |
//! | [`rollout`] | canary plans: steps, deterministic routing share, rollback threshold |
//!
//! # How the daemon wires them
//!
//! `godel-control` is the one place the pieces are wired; this describes
//! what its code does (`control/policy.rs`, `control/lifecycle.rs`,
//! `control/pools.rs`, `control/health.rs`) so the docs of each piece can
//! say where it fits. Quota arithmetic is not here: the store checks a
//! team's quota inside the transaction that inserts the runtime record
//! (`godel_control::store`), so concurrent spawns cannot overshoot.
//!
//! At start: `config::load(path, &env)?`; one `CircuitRegistry` (its
//! listener turns [`circuit::CircuitChange`]s into `circuit_*` events and
//! `Metrics::set_circuit_state`), one [`FairQueue`], one [`Metrics`], the
//! [`WarmPools`] from `cfg.pools` (create = the spawn path below with the
//! pool's spec under the internal pool team, destroy = terminate), and a
//! [`HealthMonitor`] from `cfg.health.policy()` probing `status` and
//! `exec_collect(cfg.health.probe)`.
//!
//! Each spawn request of team `T`, in this order:
//! 1. **Team policy**: `cfg.team(T)` merged with the team's stored
//!    settings; a runtime the team may not use is `PERMISSION_DENIED`;
//!    `team.limits.apply(&spec.resources)?` checks and fills per-agent limits
//!    (over the limit: `INVALID_ARGUMENT`, before any queueing).
//! 2. **Warm pool**: if [`pool_key`]`(&request, &runtime)` matches and
//!    `pools.claim_for_team(&key, Some(T))` yields a runtime, the store
//!    re-labels it to `T` in one transaction that also checks and charges
//!    `T`'s quota; the spawn is done (steps 3–6 are skipped).
//! 3. **Plan**: [`fallback::plan`] over the requested runtime (alone) or the
//!    team's chain, skipping unavailable runtimes and open circuits.
//! 4. **Quota + fair queue**: the store inserts the `creating` record only if
//!    the quota allows (same transaction); over quota the request fails at
//!    once with `RESOURCE_EXHAUSTED`, or, when it may wait, goes through
//!    `queue.acquire(T, try_reserve, deadline)` ([`Admission::Wait`] carries
//!    the store's reason) with the wait capped by `team.queue_timeout`.
//!    Every release calls `queue.notify_released()`; `godel_queue_depth` is
//!    set around the wait.
//! 5. **Fallback with retry and circuit**: [`spawn_with_fallback`] tries the
//!    candidates with [`RetryPolicy`] backoff within the spawn deadline,
//!    each decision stored as an event and `metrics.record_decision`.
//! 6. **Confirm**: the record becomes `running` (spawn/boot metrics,
//!    `health.watch`) or `error` (reservation released,
//!    `queue.notify_released()`); a caller error deletes the record.
//!
//! The health monitor's events are drained by one daemon task: `Died` →
//! record `error` unless a restart follows; `Restart { source }` →
//! terminate + `restore` from the snapshot or `spawn` from the stored spec
//! under the same id, then `health.restart_finished`; `GiveUp` → `error`
//! for good. On shutdown: `pools.shutdown().await`, `health.shutdown()`.
//!
//! `godel-control/tests/policy.rs` drives this path end to end with
//! `godel_testkit::FakeRuntime` providers.

pub mod circuit;
pub mod config;
pub mod cost;
pub mod fair_queue;
pub mod fallback;
pub mod health;
pub mod metrics;
pub mod pool;
pub mod retry;
pub mod rollout;

pub use circuit::{CircuitBreaker, CircuitChange, CircuitPolicy, CircuitRegistry, CircuitState};
pub use config::{Config, TeamPolicy, load};
pub use cost::{BudgetLevel, BudgetPolicy, Period, Price};
pub use fair_queue::{Admission, FairQueue};
pub use fallback::{
    FallbackDecision, FallbackPlan, Outcome, PlanInput, SkipReason, plan, spawn_with_fallback,
};
pub use health::{
    Health, HealthAction, HealthEvent, HealthMonitor, HealthPolicy, HealthTracker, Probe,
    RestartPolicy, RestartSource,
};
pub use metrics::Metrics;
pub use pool::{PoolEvent, PoolKey, PoolSource, WarmPools, pool_key};
pub use retry::{Attempt, RetryPolicy, retry};
pub use rollout::RolloutPlan;
