//! Fallback, retry and circuit breaking against fault-injecting providers,
//! on paused time so the 1 s / 2 s / 4 s backoff and the 60 s open circuit
//! are checked exactly.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use godel_core::{ErrorCode, RuntimeProvider, SpawnSpec, new_sandbox_id};
use godel_policy::{
    CircuitPolicy, CircuitRegistry, CircuitState, FallbackDecision, FallbackPlan, Metrics, Outcome,
    PlanInput, RetryPolicy, SkipReason, plan, spawn_with_fallback,
};
use godel_testkit::{FakeRuntime, Op};
use tokio::time::Instant;

struct World {
    providers: HashMap<String, FakeRuntime>,
    circuits: CircuitRegistry,
    changes: Arc<Mutex<Vec<(String, CircuitState)>>>,
}

impl World {
    fn new(names: &[&str]) -> World {
        let changes = Arc::new(Mutex::new(Vec::new()));
        let c2 = changes.clone();
        World {
            providers: names
                .iter()
                .map(|n| (n.to_string(), FakeRuntime::new(*n)))
                .collect(),
            circuits: CircuitRegistry::new(CircuitPolicy::default())
                .with_listener(Arc::new(move |c| c2.lock().push((c.runtime.clone(), c.to)))),
            changes,
        }
    }

    fn p(&self, name: &str) -> &FakeRuntime {
        &self.providers[name]
    }

    async fn plan(&self, chain: &[&str], requested: Option<&str>) -> FallbackPlan {
        let chain: Vec<String> = chain.iter().map(|s| s.to_string()).collect();
        let mut avail = HashMap::new();
        for (n, p) in &self.providers {
            avail.insert(n.clone(), p.available().await);
        }
        plan(
            PlanInput {
                chain: &chain,
                requested,
                allowed: &[],
            },
            |n| avail.get(n).cloned(),
            &self.circuits,
        )
    }

    async fn spawn(
        &self,
        plan: &FallbackPlan,
        deadline: Option<Instant>,
    ) -> (godel_core::Result<(String, String)>, Vec<FallbackDecision>) {
        let mut decisions = Vec::new();
        let id = new_sandbox_id();
        let res = spawn_with_fallback(
            plan,
            &RetryPolicy::default(),
            deadline,
            &self.circuits,
            |d| decisions.push(d.clone()),
            |rt| {
                let p = self.providers[rt].clone();
                let id = id.clone();
                async move {
                    p.spawn(&id, &SpawnSpec::default()).await?;
                    Ok(id)
                }
            },
        )
        .await;
        (res, decisions)
    }
}

fn secs(start: Instant, times: Vec<Instant>) -> Vec<u64> {
    times.into_iter().map(|t| (t - start).as_secs()).collect()
}

#[tokio::test(start_paused = true)]
async fn falls_back_in_chain_order_with_exact_backoff() {
    let w = World::new(&["flaky-a", "flaky-b", "good"]);
    w.p("flaky-a").fail_always(Op::Spawn, ErrorCode::SpawnError);
    w.p("flaky-b").fail(Op::Spawn, ErrorCode::Unavailable, 1);
    let start = Instant::now();
    let plan = w.plan(&["flaky-a", "flaky-b", "good"], None).await;
    assert_eq!(plan.candidates, ["flaky-a", "flaky-b", "good"]);
    let (res, decisions) = w.spawn(&plan, None).await;
    let (runtime, id) = res.unwrap();
    assert_eq!(runtime, "flaky-b");
    assert_eq!(w.p("flaky-b").live(), [id]);
    // flaky-a: 4 attempts at 0, 1, 3, 7 s; flaky-b: at 7 s and, after 1 s, 8 s.
    assert_eq!(secs(start, w.p("flaky-a").times("spawn")), [0, 1, 3, 7]);
    assert_eq!(secs(start, w.p("flaky-b").times("spawn")), [7, 8]);
    assert_eq!(w.p("good").count("spawn"), 0);
    let steps: Vec<(&str, u32, Outcome)> = decisions
        .iter()
        .map(|d| (d.runtime.as_str(), d.attempt, d.outcome))
        .collect();
    assert_eq!(
        steps,
        [
            ("flaky-a", 1, Outcome::Retrying),
            ("flaky-a", 2, Outcome::Retrying),
            ("flaky-a", 3, Outcome::Retrying),
            ("flaky-a", 4, Outcome::FallingBack),
            ("flaky-b", 1, Outcome::Retrying),
            ("flaky-b", 2, Outcome::Succeeded),
        ]
    );
    assert_eq!(decisions[0].delay_ms, Some(1000));
    assert_eq!(decisions[2].delay_ms, Some(4000));
    assert_eq!(decisions[3].next.as_deref(), Some("flaky-b"));
    assert_eq!(decisions[3].code, Some(ErrorCode::SpawnError));
    // Decisions become events and metrics.
    let ev = decisions[3].to_event();
    assert_eq!(ev.kind, "spawn_fallback");
    assert_eq!(ev.data["runtime"], "flaky-a");
    let m = Metrics::new();
    decisions.iter().for_each(|d| m.record_decision(d));
    let text = m.render();
    assert!(
        text.contains(
            "godel_fallback_total{from=\"flaky-a\",to=\"flaky-b\",reason=\"spawn_error\"} 1"
        ),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn circuit_opens_skips_the_runtime_and_closes_after_trials() {
    let w = World::new(&["flaky-a", "good"]);
    w.p("flaky-a").fail_always(Op::Spawn, ErrorCode::SpawnError);
    let chain = ["flaky-a", "good"];
    // First spawn: 4 failures on flaky-a, then good.
    let (res, _) = w.spawn(&w.plan(&chain, None).await, None).await;
    assert_eq!(res.unwrap().0, "good");
    assert_eq!(w.circuits.get("flaky-a").state(), CircuitState::Closed);
    // Second spawn: the 5th failure opens the circuit; no further attempts there.
    let (res, decisions) = w.spawn(&w.plan(&chain, None).await, None).await;
    assert_eq!(res.unwrap().0, "good");
    assert_eq!(w.p("flaky-a").count("spawn"), 5);
    assert_eq!(w.circuits.get("flaky-a").state(), CircuitState::Open);
    assert_eq!(
        decisions[0].outcome,
        Outcome::FallingBack,
        "no retry once open"
    );
    assert_eq!(decisions[0].attempt, 1);
    // While open, the planner skips it with the time left.
    let p = w.plan(&chain, None).await;
    assert_eq!(p.candidates, ["good"]);
    assert_eq!(
        p.skipped[0].reason,
        SkipReason::CircuitOpen { retry_in_secs: 60 }
    );
    let (res, _) = w.spawn(&p, None).await;
    assert_eq!(res.unwrap().0, "good");
    assert_eq!(w.p("flaky-a").count("spawn"), 5);
    // After 60 s: half-open, three successful trials close it.
    tokio::time::advance(Duration::from_secs(60)).await;
    w.p("flaky-a").succeed(Op::Spawn);
    for _ in 0..3 {
        let (res, _) = w.spawn(&w.plan(&chain, None).await, None).await;
        assert_eq!(res.unwrap().0, "flaky-a");
    }
    assert_eq!(w.circuits.get("flaky-a").state(), CircuitState::Closed);
    assert_eq!(
        *w.changes.lock(),
        [
            ("flaky-a".to_string(), CircuitState::Open),
            ("flaky-a".to_string(), CircuitState::HalfOpen),
            ("flaky-a".to_string(), CircuitState::Closed),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_half_open_trial_reopens_the_circuit() {
    let w = World::new(&["flaky-a", "good"]);
    w.p("flaky-a").fail_always(Op::Spawn, ErrorCode::Timeout);
    for _ in 0..5 {
        w.circuits.get("flaky-a").record_failure();
    }
    tokio::time::advance(Duration::from_secs(60)).await;
    let (res, decisions) = w
        .spawn(&w.plan(&["flaky-a", "good"], None).await, None)
        .await;
    assert_eq!(res.unwrap().0, "good");
    // One trial, it failed, the circuit reopened: no retries on flaky-a.
    assert_eq!(w.p("flaky-a").count("spawn"), 1);
    assert_eq!(decisions[0].outcome, Outcome::FallingBack);
    assert_eq!(decisions[1].runtime, "good");
    assert_eq!(w.circuits.get("flaky-a").state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn explicit_runtime_never_falls_back_and_caller_errors_stop() {
    let w = World::new(&["flaky-a", "good"]);
    w.p("flaky-a").fail_always(Op::Spawn, ErrorCode::SpawnError);
    let plan = w.plan(&["flaky-a", "good"], Some("flaky-a")).await;
    assert_eq!(plan.candidates, ["flaky-a"]);
    let (res, _) = w.spawn(&plan, None).await;
    let e = res.unwrap_err();
    assert_eq!(e.code, ErrorCode::SpawnError, "the runtime's own error");
    assert_eq!(w.p("good").count("spawn"), 0);

    w.p("flaky-a").succeed(Op::Spawn);
    w.p("flaky-a")
        .fail(Op::Spawn, ErrorCode::InvalidArgument, 1);
    let before = w.p("flaky-a").count("spawn");
    let (res, decisions) = w
        .spawn(&w.plan(&["flaky-a", "good"], None).await, None)
        .await;
    assert_eq!(res.unwrap_err().code, ErrorCode::InvalidArgument);
    assert_eq!(w.p("flaky-a").count("spawn"), before + 1);
    assert_eq!(w.p("good").count("spawn"), 0);
    assert_eq!(decisions.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn unavailable_runtimes_are_skipped_and_all_failing_is_unavailable() {
    let w = World::new(&["flaky-a", "flaky-b"]);
    w.p("flaky-a").set_available(false, "no KVM");
    w.p("flaky-b").fail_always(Op::Spawn, ErrorCode::SpawnError);
    let plan = w.plan(&["e2b", "flaky-a", "flaky-b"], None).await;
    assert_eq!(plan.candidates, ["flaky-b"]);
    let why: Vec<String> = plan.skipped.iter().map(|s| s.reason.to_string()).collect();
    assert_eq!(why, ["not registered", "unavailable: no KVM"]);
    let (res, _) = w.spawn(&plan, None).await;
    assert_eq!(res.unwrap_err().code, ErrorCode::SpawnError);

    w.p("flaky-a").set_available(true, "ok");
    w.p("flaky-a")
        .fail_always(Op::Spawn, ErrorCode::Unavailable);
    w.circuits.get("flaky-b").reset();
    let plan = w.plan(&["flaky-a", "flaky-b"], None).await;
    let (res, _) = w.spawn(&plan, None).await;
    let e = res.unwrap_err();
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(
        e.message
            .starts_with("all runtimes failed: flaky-a: UNAVAILABLE"),
        "{}",
        e.message
    );
}

#[tokio::test(start_paused = true)]
async fn a_hanging_runtime_is_cut_at_the_deadline() {
    let w = World::new(&["slow", "good"]);
    w.p("slow").hang(Op::Spawn, None);
    let start = Instant::now();
    let plan = w.plan(&["slow", "good"], None).await;
    let (res, decisions) = w.spawn(&plan, Some(start + Duration::from_secs(30))).await;
    let e = res.unwrap_err();
    assert_eq!(e.code, ErrorCode::Timeout);
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    assert_eq!(decisions.last().unwrap().outcome, Outcome::Failed);
    // Latency below the deadline is fine.
    w.p("slow").succeed(Op::Spawn);
    w.p("slow").slow(Op::Spawn, Duration::from_secs(3));
    let start = Instant::now();
    let (res, _) = w.spawn(&plan, Some(start + Duration::from_secs(30))).await;
    assert_eq!(res.unwrap().0, "slow");
    assert_eq!(start.elapsed(), Duration::from_secs(3));
}
