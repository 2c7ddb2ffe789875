//! The whole spawn path wired the way the daemon is expected to wire it
//! (see the crate docs): config → limits → quota + fair queue → warm pool →
//! fallback with retry and circuit → provider, with events and metrics. The
//! "store" is an in-memory map of per-team reservations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use godel_core::{ErrorCode, Event, Result, RuntimeProvider, SpawnSpec, new_runtime_id};
use godel_policy::config::from_toml_str_with;
use godel_policy::pool::{CreateFn, DestroyFn};
use godel_policy::quota::{QuotaUsage, admit, never_fits};
use godel_policy::{
    CircuitRegistry, Config, FairQueue, FaultProvider, Metrics, Op, PlanInput, WarmPools, plan,
    pool_key, spawn_with_fallback,
};
use tokio::time::Instant;

const CONFIG: &str = r#"
[defaults]
runtime = "good"
fallback = ["flaky", "good"]

[teams.alpha]
queue_timeout_secs = 30
[teams.alpha.quota]
max_agents = 2
memory = "8Gi"
[teams.alpha.limits]
memory = "2Gi"

[[pool]]
runtime = "good"
repo = "/srv/app"
size = 1

[retry]
max_attempts = 2
"#;

/// The store's reservations.
#[derive(Default)]
struct Store {
    /// team → reserved usage.
    by_team: HashMap<String, QuotaUsage>,
    /// runtime id → (team, usage).
    by_id: HashMap<String, (String, QuotaUsage)>,
}

struct Daemon {
    cfg: Config,
    providers: HashMap<String, FaultProvider>,
    circuits: CircuitRegistry,
    queue: FairQueue,
    pools: WarmPools,
    metrics: Metrics,
    store: Arc<Mutex<Store>>,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Daemon {
    fn new() -> Daemon {
        let cfg = from_toml_str_with(CONFIG, &HashMap::new(), &["flaky", "good"]).unwrap();
        let providers: HashMap<String, FaultProvider> = ["flaky", "good"]
            .iter()
            .map(|n| (n.to_string(), FaultProvider::new(*n).unwrap()))
            .collect();
        let good = providers["good"].clone();
        let create: CreateFn = Arc::new(move |key| {
            let p = good.clone();
            async move {
                let id = new_runtime_id();
                p.spawn(&id, &key.spec()).await?;
                Ok(id)
            }
            .boxed()
        });
        let good = providers["good"].clone();
        let destroy: DestroyFn = Arc::new(move |id: String| {
            let p = good.clone();
            async move { p.terminate(&id).await }.boxed()
        });
        let pools = WarmPools::from_config(&cfg.pools, create, destroy).unwrap();
        Daemon {
            circuits: CircuitRegistry::new(cfg.circuit.policy()),
            cfg,
            providers,
            queue: FairQueue::default(),
            pools,
            metrics: Metrics::new(),
            store: Arc::default(),
            events: Arc::default(),
        }
    }

    async fn spawn(&self, team: &str, mut spec: SpawnSpec) -> Result<(String, String)> {
        let started = Instant::now();
        let policy = self.cfg.team(team);
        let runtime = spec
            .runtime
            .clone()
            .unwrap_or_else(|| policy.runtime.clone());
        let pool = pool_key(&spec, &runtime);
        spec.resources = policy.limits.apply(&spec.resources)?;
        let need = QuotaUsage::of(&spec.resources);
        if let Some(why) = never_fits(team, &policy.quota, need) {
            return Err(godel_core::Error::exhausted(why));
        }
        let id = new_runtime_id();
        // Quota + fair queue: the closure is the store's check-and-reserve.
        let store = self.store.clone();
        let quota = policy.quota.clone();
        self.queue
            .acquire(
                team,
                || {
                    let mut st = store.lock().unwrap();
                    let used = st.by_team.get(team).copied().unwrap_or_default();
                    let a = admit(&quota, used, need);
                    if a == godel_policy::Admission::Granted {
                        st.by_team.insert(team.to_string(), used.plus(need));
                        st.by_id.insert(id.clone(), (team.to_string(), need));
                    }
                    Ok(a)
                },
                Instant::now() + policy.queue_timeout,
            )
            .await?;
        // Warm pool.
        if let Some((_, warm)) = pool
            .as_ref()
            .and_then(|k| self.pools.claim_for_team(k, Some(team)))
        {
            let mut st = self.store.lock().unwrap();
            let r = st.by_id.remove(&id).unwrap();
            st.by_id.insert(warm.clone(), r);
            return Ok((runtime, warm));
        }
        // Fallback with retry and circuit.
        let avail: HashMap<String, _> = {
            let mut m = HashMap::new();
            for (n, p) in &self.providers {
                m.insert(n.clone(), p.available().await);
            }
            m
        };
        let explicit = spec.runtime.clone();
        let plan = plan(
            PlanInput {
                chain: &policy.fallback,
                requested: explicit.as_deref(),
                allowed: &policy.allowed_runtimes,
            },
            |n| avail.get(n).cloned(),
            &self.circuits,
        );
        let res = match plan.require_candidates() {
            Ok(plan) => {
                spawn_with_fallback(
                    &plan,
                    &self.cfg.retry.policy(),
                    Some(Instant::now() + Duration::from_secs(60)),
                    &self.circuits,
                    |d| {
                        self.events
                            .lock()
                            .unwrap()
                            .push(d.to_event().runtime(&id).team(team));
                        self.metrics.record_decision(d);
                    },
                    |rt| {
                        let p = self.providers[rt].clone();
                        let (id, spec) = (id.clone(), spec.clone());
                        async move { p.spawn(&id, &spec).await }
                    },
                )
                .await
            }
            Err(e) => Err(e),
        };
        match res {
            Ok((rt, _)) => {
                self.metrics.observe_spawn(&rt, started.elapsed());
                Ok((rt, id))
            }
            Err(e) => {
                self.release(&id);
                Err(e)
            }
        }
    }

    fn release(&self, id: &str) {
        let mut st = self.store.lock().unwrap();
        if let Some((team, u)) = st.by_id.remove(id) {
            let cur = st.by_team.entry(team).or_default();
            *cur = QuotaUsage {
                agents: cur.agents - u.agents,
                cpu: godel_core::Cpu(cur.cpu.0 - u.cpu.0),
                memory: godel_core::ByteQuantity(cur.memory.0 - u.memory.0),
                disk: godel_core::ByteQuantity(cur.disk.0 - u.disk.0),
            };
        }
        drop(st);
        self.queue.notify_released();
    }

    async fn terminate(&self, runtime: &str, id: &str) {
        self.providers[runtime].terminate(id).await.unwrap();
        self.release(id);
    }
}

fn spec(json: &str) -> SpawnSpec {
    serde_json::from_str(json).unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_spawn_path_end_to_end() {
    let d = Daemon::new();
    d.providers["flaky"].fail_always(Op::Spawn, ErrorCode::SpawnError);
    d.pools.start();
    while d
        .pools
        .ready(&pool_key(&spec(r#"{"repo":"/srv/app"}"#), "good").unwrap())
        == 0
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    // 1. A plain spawn matching the pool gets the warm runtime at once.
    let t0 = Instant::now();
    let (rt, warm) = d
        .spawn("alpha", spec(r#"{"repo":"/srv/app"}"#))
        .await
        .unwrap();
    assert_eq!(rt, "good");
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert!(d.providers["good"].live().contains(&warm));

    // 2. A spawn with env cannot use the pool: flaky fails twice (1 s apart), then good.
    let t0 = Instant::now();
    let (rt, id2) = d
        .spawn("alpha", spec(r#"{"repo":"/srv/app","env":{"A":"1"}}"#))
        .await
        .unwrap();
    assert_eq!(rt, "good");
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
    assert_eq!(d.providers["flaky"].count("spawn"), 2);
    let kinds: Vec<String> = d
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.kind.clone())
        .collect();
    assert_eq!(kinds, ["spawn_attempt", "spawn_fallback", "spawn_attempt"]);

    // 3. alpha is at max_agents = 2: the next spawn waits until one ends.
    let d = Arc::new(d);
    let d2 = d.clone();
    let waiting = tokio::spawn(async move { d2.spawn("alpha", spec(r#"{"template":"x"}"#)).await });
    while d.queue.depth("alpha") == 0 {
        tokio::task::yield_now().await;
    }
    d.metrics.set_queue_depth("alpha", d.queue.depth("alpha"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!waiting.is_finished());
    d.terminate("good", &id2).await;
    let (rt, _) = waiting.await.unwrap().unwrap();
    assert_eq!(rt, "good");

    // 4. A request above the per-agent limit is refused before queueing;
    //    one above the whole quota too.
    let e = d
        .spawn("alpha", spec(r#"{"resources":{"memory":"4Gi"}}"#))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    // 5. With both slots taken, a spawn times out after the team's 30 s.
    let t0 = Instant::now();
    let e = d
        .spawn("alpha", spec(r#"{"template":"y"}"#))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ResourceExhausted);
    assert!(
        e.message
            .starts_with("team alpha: max_agents quota 2, 2 running; gave up after waiting 30.0 s"),
        "{}",
        e.message
    );
    assert_eq!(t0.elapsed(), Duration::from_secs(30));

    // Steps 2 and 3 both fell back from flaky to good.
    let text = d.metrics.render();
    assert!(
        text.contains("godel_fallback_total{from=\"flaky\",to=\"good\",reason=\"spawn_error\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("godel_queue_depth{team=\"alpha\"} 1"),
        "{text}"
    );
    d.pools.shutdown().await;
}
