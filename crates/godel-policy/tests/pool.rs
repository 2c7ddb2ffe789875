//! Warm pools over a fault-injecting provider: fill on start, O(1) claims,
//! refill after claims, backoff while creation fails, drain on shutdown.

use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use futures::FutureExt;
use godel_core::{ErrorCode, RuntimeProvider, SpawnSpec, new_sandbox_id};
use godel_policy::pool::{CreateFn, DestroyFn};
use godel_policy::{PoolEvent, PoolKey, WarmPools, pool_key};
use godel_testkit::{FakeRuntime, Op};
use tokio::time::Instant;

fn closures(p: &FakeRuntime) -> (CreateFn, DestroyFn) {
    let (pc, pd) = (p.clone(), p.clone());
    let create: CreateFn = Arc::new(move |key: PoolKey| {
        let p = pc.clone();
        async move {
            let id = new_sandbox_id();
            p.spawn(&id, &key.spec()).await?;
            Ok(id)
        }
        .boxed()
    });
    let destroy: DestroyFn = Arc::new(move |id: String| {
        let p = pd.clone();
        async move { p.terminate(&id).await }.boxed()
    });
    (create, destroy)
}

fn spec(json: &str) -> SpawnSpec {
    serde_json::from_str(json).unwrap()
}

async fn settle(pools: &WarmPools, key: &PoolKey, n: usize) {
    for _ in 0..100_000 {
        if pools.ready(key) == n {
            return;
        }
        // A short sleep lets paused time advance to the pool's own timers.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!(
        "pool {key} never reached {n} ready (has {})",
        pools.ready(key)
    );
}

#[tokio::test(start_paused = true)]
async fn fills_claims_refills_and_drains() {
    let p = FakeRuntime::new("fault");
    p.slow(Op::Spawn, Duration::from_millis(500));
    let (create, destroy) = closures(&p);
    let key = pool_key(&spec(r#"{"repo":"/srv/app","ref":"main"}"#), "fault").unwrap();
    let pools = WarmPools::new([(key.clone(), 2)], create, destroy);
    let events = Arc::new(Mutex::new(Vec::new()));
    let e2 = events.clone();
    assert!(pools.set_listener(Arc::new(move |e: &PoolEvent| { e2.lock().push(e.clone()) })));
    assert_eq!(pools.claim(&key), None, "nothing before start");
    let start = Instant::now();
    pools.start();
    settle(&pools, &key, 2).await;
    // One creation at a time, each taking 500 ms.
    let ms: Vec<u128> = p
        .times("spawn")
        .iter()
        .map(|t| (*t - start).as_millis())
        .collect();
    assert_eq!(ms, [0, 500]);
    assert_eq!(p.live().len(), 2);

    // Claims are immediate and hand out distinct, live runtimes.
    let a = pools.claim(&key).unwrap();
    let b = pools.claim(&key).unwrap();
    assert_ne!(a, b);
    assert_eq!(pools.claim(&key), None, "empty until refilled");
    assert!(!pools.is_ready(&a));
    settle(&pools, &key, 2).await;
    assert_eq!(p.count("spawn"), 4);
    assert_eq!(p.live().len(), 4, "claimed runtimes stay alive");

    // Shutdown destroys the ready ones, not the claimed ones.
    pools.shutdown().await;
    let mut live = p.live();
    live.sort();
    let mut claimed = vec![a.clone(), b.clone()];
    claimed.sort();
    assert_eq!(live, claimed);
    assert_eq!(pools.claim(&key), None, "closed");
    let ev = events.lock();
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, PoolEvent::Created { .. }))
            .count(),
        4
    );
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, PoolEvent::Claimed { .. }))
            .count(),
        2
    );
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, PoolEvent::Destroyed { .. }))
            .count(),
        2
    );
}

#[tokio::test(start_paused = true)]
async fn failing_creation_backs_off_then_recovers() {
    let p = FakeRuntime::new("fault");
    p.fail(Op::Spawn, ErrorCode::SpawnError, 3);
    let (create, destroy) = closures(&p);
    let key = pool_key(&spec(r#"{"template":"python"}"#), "fault").unwrap();
    let pools = WarmPools::new([(key.clone(), 1)], create, destroy);
    let start = Instant::now();
    pools.start();
    settle(&pools, &key, 1).await;
    // Failures at 0, 1 and 3 s (1 s, 2 s backoff), success after 4 s more at 7 s.
    let secs: Vec<u64> = p
        .times("spawn")
        .iter()
        .map(|t| (*t - start).as_secs())
        .collect();
    assert_eq!(secs, [0, 1, 3, 7]);
    pools.shutdown().await;
    assert!(p.live().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_creation_in_flight_at_shutdown_is_destroyed() {
    let p = FakeRuntime::new("fault");
    p.slow(Op::Spawn, Duration::from_secs(5));
    let (create, destroy) = closures(&p);
    let key = pool_key(&spec(r#"{"template":"t"}"#), "fault").unwrap();
    let pools = WarmPools::new([(key.clone(), 1)], create, destroy);
    pools.start();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(p.count("spawn"), 1);
    pools.shutdown().await;
    assert_eq!(p.count("terminate"), 1);
    assert!(p.live().is_empty(), "no warm runtime left behind");
}

#[tokio::test(start_paused = true)]
async fn team_pools_come_first_then_shared() {
    let p = FakeRuntime::new("fault");
    let (create, destroy) = closures(&p);
    let shared = pool_key(&spec(r#"{"repo":"/r"}"#), "fault").unwrap();
    let alpha = PoolKey {
        team: Some("alpha".into()),
        ..shared.clone()
    };
    let pools = WarmPools::new([(shared.clone(), 1), (alpha.clone(), 1)], create, destroy);
    pools.start();
    settle(&pools, &shared, 1).await;
    settle(&pools, &alpha, 1).await;
    let (k, _) = pools.claim_for_team(&shared, Some("alpha")).unwrap();
    assert_eq!(k, alpha);
    let (k, _) = pools.claim_for_team(&shared, Some("alpha")).unwrap();
    assert_eq!(k, shared, "alpha's pool empty: the shared one");
    assert!(pools.claim_for_team(&shared, Some("beta")).is_none());
    pools.shutdown().await;
}
