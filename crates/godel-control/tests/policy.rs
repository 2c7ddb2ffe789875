//! The control plane's policy path with fault-injecting runtimes: fallback
//! order, retries, circuit breakers, quotas under 200 concurrent spawns from
//! 4 teams through the fair queue, cross-team isolation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use godel_control::{Caller, Control, Settings, SpawnOptions, event_channel};
use godel_core::{ErrorCode, SandboxState, SpawnSpec};
use godel_policy::{Config, config};
use godel_testkit::{FakeRuntime, Op};

fn cfg(toml: &str) -> Config {
    config::from_toml_str(toml, &HashMap::new()).expect("config")
}

async fn control_with(
    toml: &str,
    names: &[&str],
) -> (
    Arc<Control>,
    BTreeMap<String, Arc<FakeRuntime>>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        config: cfg(toml),
        ..Settings::default()
    };
    let c = Control::with_store(
        dir.path(),
        godel_control::Store::open_scratch().unwrap(),
        settings,
    )
    .unwrap();
    let (sink, rx) = event_channel();
    c.attach_event_receiver(rx);
    let _ = sink;
    let mut providers = BTreeMap::new();
    for n in names {
        let p = Arc::new(FakeRuntime::new(*n));
        c.register(p.clone());
        providers.insert(n.to_string(), p);
    }
    (c, providers, dir)
}

fn events_of(c: &Control, kind: &str) -> Vec<serde_json::Value> {
    c.events_since(&Caller::Admin, 0, 10_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.data)
        .collect()
}

/// Poll `cond` (every 5 ms, at most 10 s) until it holds.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Whether `godel_queue_depth` shows `n` spawns of `team` waiting.
fn queued(c: &Control, team: &str, n: usize) -> bool {
    c.metrics()
        .render()
        .contains(&format!("godel_queue_depth{{team=\"{team}\"}} {n}"))
}

const CHAIN: &str = r#"
[defaults]
runtime = "e2b"
fallback = ["e2b", "kata", "microvm", "worktree"]
[retry]
max_attempts = 2
base_delay_ms = 10
max_delay_ms = 20
"#;

#[tokio::test]
async fn fallback_follows_the_chain_and_skips_unavailable_runtimes() {
    let (c, p, _d) = control_with(CHAIN, &["e2b", "kata", "microvm", "worktree"]).await;
    p["e2b"].set_available(false, "no API key");
    p["kata"].fail_always(Op::Spawn, ErrorCode::Unavailable);
    p["microvm"].fail_always(Op::Spawn, ErrorCode::InvalidArgument);
    // microvm fails with a caller error: no further fallback, nothing left behind.
    let e = c
        .spawn(&Caller::Admin, SpawnSpec::default())
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert_eq!(
        p["kata"].count("spawn"),
        2,
        "kata retried max_attempts times"
    );
    assert_eq!(
        p["microvm"].count("spawn"),
        1,
        "caller errors are not retried"
    );
    assert_eq!(
        p["worktree"].count("spawn"),
        0,
        "caller errors do not fall back"
    );
    assert_eq!(
        p["e2b"].count("spawn"),
        0,
        "unavailable runtimes are skipped"
    );
    assert!(
        c.list(&Caller::Admin, true).unwrap().is_empty(),
        "a refused spawn leaves no record"
    );

    p["microvm"].fail_always(Op::Spawn, ErrorCode::SpawnError);
    let info = c.spawn(&Caller::Admin, SpawnSpec::default()).await.unwrap();
    assert_eq!(info.runtime, "worktree");
    assert_eq!(info.state, SandboxState::Running);
    let decisions = events_of(&c, "spawn_fallback");
    let runtimes: Vec<&str> = decisions
        .iter()
        .filter_map(|d| d["runtime"].as_str())
        .collect();
    assert!(
        runtimes.contains(&"e2b") && runtimes.contains(&"kata") && runtimes.contains(&"microvm"),
        "{decisions:?}"
    );
    // The record names the runtime that took it; exec works there.
    let out = c
        .exec_collect(
            &Caller::Admin,
            &info.id,
            godel_core::ExecRequest::new(["sh", "-c", "echo ok"]),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout, "ok\n");
    let metrics = c.metrics().render();
    assert!(metrics.contains("godel_fallback_total"), "{metrics}");
}

#[tokio::test]
async fn circuit_opens_after_five_failures_and_the_chain_moves_on() {
    let toml = r#"
[defaults]
runtime = "kata"
fallback = ["kata", "worktree"]
[retry]
max_attempts = 1
[circuit]
failure_threshold = 5
open_secs = 60
half_open_calls = 3
"#;
    let (c, p, _d) = control_with(toml, &["kata", "worktree"]).await;
    p["kata"].fail_always(Op::Spawn, ErrorCode::Unavailable);
    for _ in 0..5 {
        let r = c.spawn(&Caller::Admin, SpawnSpec::default()).await.unwrap();
        assert_eq!(r.runtime, "worktree");
    }
    assert_eq!(p["kata"].count("spawn"), 5);
    // Open: kata is not even tried now.
    let r = c.spawn(&Caller::Admin, SpawnSpec::default()).await.unwrap();
    assert_eq!(r.runtime, "worktree");
    assert_eq!(p["kata"].count("spawn"), 5, "an open circuit is skipped");
    // Circuit changes reach the event log through the control plane's bus.
    for _ in 0..200 {
        if !events_of(&c, "circuit_opened").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!events_of(&c, "circuit_opened").is_empty());
    assert!(c.metrics().render().contains("godel_circuit_state"));
    // Asking for kata explicitly while its circuit is open: UNAVAILABLE, retryable.
    let e = c
        .spawn(
            &Caller::Admin,
            SpawnSpec {
                runtime: Some("kata".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(e.message.contains("circuit open"), "{}", e.message);
}

#[tokio::test]
async fn two_hundred_spawns_from_four_teams_never_exceed_quotas() {
    let toml = r#"
[defaults]
runtime = "worktree"
fallback = ["worktree"]
[defaults.limits]
cpu = "1"
memory = "1Gi"
[teams.t0.quota]
max_agents = 3
[teams.t1.quota]
max_agents = 2
memory = "2Gi"
[teams.t2.quota]
max_agents = 4
cpu = "3"
[teams.t3.quota]
max_agents = 1
"#;
    let (c, p, _d) = control_with(toml, &["worktree"]).await;
    p["worktree"].slow(Op::Spawn, Duration::from_millis(2));
    let limits: HashMap<&str, u64> = [("t0", 3), ("t1", 2), ("t2", 3), ("t3", 1)].into();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let c = c.clone();
        let team = format!("t{}", i % 4);
        tasks.push(tokio::spawn(async move {
            let caller = Caller::Team(team.clone());
            let mut spec = SpawnSpec::default();
            spec.labels.insert("seq".into(), i.to_string());
            let opts = SpawnOptions {
                queue_wait: Some(Duration::from_secs(120)),
            };
            let info = c.spawn_with(&caller, spec, opts).await?;
            // Hold it briefly, then release it.
            tokio::time::sleep(Duration::from_millis(3)).await;
            c.terminate(&caller, &info.id).await?;
            Ok::<_, godel_core::Error>((team, i))
        }));
    }
    // Check the store while they run: no team ever above its quota.
    let checker = {
        let c = c.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let mut checks = 0;
            loop {
                for (t, max) in &limits {
                    let u = c.store().team_usage(t).unwrap();
                    assert!(
                        u.agents <= *max,
                        "team {t} holds {} agents, quota {max}",
                        u.agents
                    );
                }
                checks += 1;
                if checks > 100_000 {
                    break;
                }
                tokio::task::yield_now().await;
                if c.list(&Caller::Admin, false).unwrap().is_empty() && checks > 50 {
                    // keep checking until the spawners are done (aborted below)
                }
            }
        })
    };
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.unwrap().expect("every spawn eventually succeeds"));
    }
    checker.abort();
    assert_eq!(done.len(), 200);
    // Every state change ever recorded: replay admissions and check the quota after every step.
    let events = c.events_since(&Caller::Admin, 0, 100_000).unwrap();
    let mut live: HashMap<String, u64> = HashMap::new();
    let mut admitted_seq: HashMap<String, Vec<u64>> = HashMap::new();
    let by_id: HashMap<String, (String, u64)> = c
        .list(&Caller::Admin, true)
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.id.clone(),
                (r.team.clone(), r.spec.labels["seq"].parse().unwrap()),
            )
        })
        .collect();
    for e in events.iter().filter(|e| e.kind == "state_changed") {
        let team = e.team.clone().unwrap();
        match e.data["state"].as_str() {
            Some("creating") => {
                let n = live.entry(team.clone()).or_default();
                *n += 1;
                assert!(*n <= limits[team.as_str()], "replay: team {team} at {n}");
                let (_, seq) = &by_id[e.runtime_id.as_ref().unwrap()];
                admitted_seq.entry(team).or_default().push(*seq);
            }
            Some("terminated") | Some("error") => *live.get_mut(&team).unwrap() -= 1,
            _ => {}
        }
    }
    for (t, seqs) in &admitted_seq {
        assert_eq!(seqs.len(), 50, "team {t}");
        // FIFO within a team: requests are admitted in the order they arrived.
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "team {t} admitted out of order: {seqs:?}"
        );
    }
}

#[tokio::test]
async fn over_quota_fails_at_once_without_wait_and_teams_are_isolated() {
    let toml = r#"
[defaults]
runtime = "worktree"
fallback = ["worktree"]
[teams.alpha.quota]
max_agents = 1
"#;
    let (c, _p, _d) = control_with(toml, &["worktree"]).await;
    let alpha = Caller::Team("alpha".into());
    let beta = Caller::Team("beta".into());
    let a = c.spawn(&alpha, SpawnSpec::default()).await.unwrap();
    let e = c.spawn(&alpha, SpawnSpec::default()).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::ResourceExhausted);
    assert!(e.message.contains("agents"), "{}", e.message);
    // A waiting spawn is served when capacity frees up.
    let c2 = c.clone();
    let waiter = tokio::spawn(async move {
        c2.spawn_with(
            &Caller::Team("alpha".into()),
            SpawnSpec::default(),
            SpawnOptions {
                queue_wait: Some(Duration::from_secs(30)),
            },
        )
        .await
    });
    wait_until("alpha's spawn is queued", || queued(&c, "alpha", 1)).await;
    assert!(!waiter.is_finished());
    // beta sees nothing of alpha's.
    assert_eq!(
        c.status(&beta, &a.id).await.unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(
        c.terminate(&beta, &a.id).await.unwrap_err().code,
        ErrorCode::NotFound
    );
    assert!(c.list(&beta, false).unwrap().is_empty());
    c.terminate(&alpha, &a.id).await.unwrap();
    let b = waiter.await.unwrap().unwrap();
    assert_eq!(b.team, "alpha");
    // A queued spawn whose deadline passes fails with a clear error.
    let e = c
        .spawn_with(
            &alpha,
            SpawnSpec::default(),
            SpawnOptions {
                queue_wait: Some(Duration::from_millis(100)),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e.code, ErrorCode::ResourceExhausted | ErrorCode::Timeout),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_runtime_is_restarted_under_the_same_id() {
    let toml = r#"
[defaults]
runtime = "worktree"
fallback = ["worktree"]
[health]
interval_secs = 1
unhealthy_after = 1
dead_after = 1
restart = "never"
max_restarts = 2
backoff_secs = 1
"#;
    let (c, p, _d) = control_with(toml, &["worktree"]).await;
    c.start_health();
    let spec = SpawnSpec {
        restart: Some(godel_core::RestartPolicy::OnFailure),
        ..Default::default()
    };
    let a = c.spawn(&Caller::Admin, spec).await.unwrap();
    let plain = c.spawn(&Caller::Admin, SpawnSpec::default()).await.unwrap();
    c.write_file(
        &Caller::Admin,
        &a.id,
        "mark.txt",
        bytes::Bytes::from_static(b"x"),
    )
    .await
    .unwrap();
    let snap = c
        .snapshot(&Caller::Admin, &a.id, Default::default())
        .await
        .unwrap();
    assert!(p["worktree"].kill(&a.id, "simulated crash"));
    assert!(p["worktree"].kill(&plain.id, "simulated crash"));
    // Within a few probe intervals: `died`, then a restart from the snapshot, running again.
    let mut restarted = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !events_of(&c, "restart").is_empty()
            && c.status(&Caller::Admin, &a.id).await.map(|r| r.state) == Ok(SandboxState::Running)
        {
            restarted = true;
            break;
        }
    }
    assert!(
        restarted,
        "events: {:?}",
        c.events_since(&Caller::Admin, 0, 1000)
            .unwrap()
            .iter()
            .map(|e| &e.kind)
            .collect::<Vec<_>>()
    );
    let r = c.status(&Caller::Admin, &a.id).await.unwrap();
    assert_eq!(
        r.restored_from.as_deref(),
        Some(snap.id.as_str()),
        "restarted from its latest snapshot"
    );
    let data = c
        .read_file(&Caller::Admin, &a.id, "mark.txt")
        .await
        .unwrap();
    assert_eq!(&data[..], b"x");
    // The one without a restart policy stays dead, with the reason recorded.
    let r = c.status(&Caller::Admin, &plain.id).await.unwrap();
    assert_eq!(r.state, SandboxState::Error);
    assert!(!events_of(&c, "died").is_empty());
    assert!(c.metrics().render().contains("godel_restarts_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_pools_are_claimed_and_refilled_and_charged_only_once_claimed() {
    let toml = r#"
[defaults]
runtime = "worktree"
fallback = ["worktree"]
[teams.alpha.quota]
max_agents = 1
[[pool]]
runtime = "worktree"
repo = "/srv/repo"
size = 2
"#;
    let (c, p, _d) = control_with(toml, &["worktree"]).await;
    c.start_pools().unwrap();
    let warm = |c: &Control| {
        c.list(&Caller::Admin, false)
            .unwrap()
            .into_iter()
            .filter(|r| r.team == godel_control::POOL_TEAM)
            .count()
    };
    for _ in 0..200 {
        if warm(&c) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(warm(&c), 2, "the pool fills to its size");
    assert_eq!(
        c.store().team_usage("alpha").unwrap().agents,
        0,
        "warm runtimes are not charged to a team"
    );
    let spawns_before = p["worktree"].count("spawn");
    let alpha = Caller::Team("alpha".into());
    let spec = SpawnSpec {
        repo: Some("/srv/repo".into()),
        ..Default::default()
    };
    let got = c.spawn(&alpha, spec.clone()).await.unwrap();
    assert_eq!(got.team, "alpha");
    assert_eq!(
        got.spec.labels.get("godel.pool").map(String::as_str),
        Some("worktree:/srv/repo@HEAD")
    );
    assert_eq!(
        c.store().team_usage("alpha").unwrap().agents,
        1,
        "charged once claimed"
    );
    // The quota still holds for claims.
    let e = c.spawn(&alpha, spec.clone()).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::ResourceExhausted);
    // Refill in the background.
    for _ in 0..200 {
        if warm(&c) == 2 && p["worktree"].count("spawn") > spawns_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        p["worktree"].count("spawn") > spawns_before,
        "the pool refilled"
    );
    // A request that customises anything is not served from the pool.
    let mut custom = spec.clone();
    custom.env.insert("X".into(), "1".into());
    let other = c.spawn(&Caller::Team("beta".into()), custom).await.unwrap();
    assert!(!other.spec.labels.contains_key("godel.pool"));
    c.stop_pools().await;
}

/// The whole spawn path in the daemon's order (godel-policy's crate docs):
/// team policy and per-agent limits → warm pool → plan → quota through the
/// fair queue → fallback with retries and circuits → confirm.
#[tokio::test(start_paused = true)]
async fn the_spawn_path_end_to_end() {
    let toml = r#"
[defaults]
runtime = "worktree"
fallback = ["kata", "worktree"]
[teams.alpha]
queue_timeout_secs = 30
[teams.alpha.quota]
max_agents = 2
memory = "8Gi"
[teams.alpha.limits]
memory = "2Gi"
[[pool]]
runtime = "worktree"
template = "code-interpreter-v1"
size = 1
[retry]
max_attempts = 2
"#;
    let (c, p, _d) = control_with(toml, &["kata", "worktree"]).await;
    p["kata"].fail_always(Op::Spawn, ErrorCode::SpawnError);
    c.start_pools().unwrap();
    let warm = || -> Vec<String> {
        c.list(&Caller::Admin, false)
            .unwrap()
            .into_iter()
            .filter(|r| r.team == godel_control::POOL_TEAM && r.state == SandboxState::Running)
            .map(|r| r.id)
            .collect()
    };
    wait_until("the pool is filled", || warm().len() == 1).await;
    let alpha = Caller::Team("alpha".into());
    let spec = |json: &str| -> SpawnSpec { serde_json::from_str(json).unwrap() };
    let wait = SpawnOptions {
        queue_wait: Some(Duration::from_secs(60)),
    };

    // 1. A plain spawn matching the pool gets the warm runtime at once.
    let warm_ids = warm();
    let t0 = tokio::time::Instant::now();
    let got = c
        .spawn(&alpha, spec(r#"{"template":"code-interpreter-v1"}"#))
        .await
        .unwrap();
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(
        (got.runtime.as_str(), got.team.as_str()),
        ("worktree", "alpha")
    );
    assert!(
        warm_ids.contains(&got.id),
        "the warm runtime was handed over"
    );
    assert!(p["worktree"].live().contains(&got.id));

    // 2. A spawn with env cannot use the pool: kata fails twice (1 s apart), then worktree.
    let t0 = tokio::time::Instant::now();
    let b = c
        .spawn(
            &alpha,
            spec(r#"{"template":"code-interpreter-v1","env":{"A":"1"}}"#),
        )
        .await
        .unwrap();
    assert_eq!(b.runtime, "worktree");
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
    assert_eq!(p["kata"].count("spawn"), 2);
    let kinds = || -> Vec<String> {
        c.events_since(&Caller::Admin, 0, 10_000)
            .unwrap()
            .into_iter()
            .filter(|e| e.runtime_id.as_deref() == Some(b.id.as_str()))
            .filter(|e| e.kind.as_str().starts_with("spawn_"))
            .map(|e| e.kind.to_string())
            .collect()
    };
    wait_until("the decisions are stored", || kinds().len() == 3).await;
    assert_eq!(
        kinds(),
        ["spawn_attempt", "spawn_fallback", "spawn_attempt"]
    );

    // 3. alpha is at max_agents = 2: the next spawn waits until one ends.
    let c2 = c.clone();
    let (a2, w2) = (alpha.clone(), wait.clone());
    let waiting = tokio::spawn(async move { c2.spawn_with(&a2, SpawnSpec::default(), w2).await });
    wait_until("the spawn is queued", || queued(&c, "alpha", 1)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!waiting.is_finished());
    let text = c.metrics().render();
    c.terminate(&alpha, &b.id).await.unwrap();
    let third = waiting.await.unwrap().unwrap();
    assert_eq!(third.runtime, "worktree");

    // 4. A request above the per-agent limit is refused before queueing.
    let e = c
        .spawn_with(
            &alpha,
            spec(r#"{"resources":{"memory":"4Gi"}}"#),
            wait.clone(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);

    // 5. With both slots taken, a spawn gives up after the team's 30 s
    //    (the request asked for 60).
    let t0 = tokio::time::Instant::now();
    let e = c
        .spawn_with(&alpha, SpawnSpec::default(), wait)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ResourceExhausted);
    assert!(
        e.message.starts_with("team alpha: ")
            && e.message.contains("agents")
            && e.message.contains("gave up after waiting 30.0 s"),
        "{}",
        e.message
    );
    assert_eq!(t0.elapsed(), Duration::from_secs(30));

    // Steps 2 and 3 both fell back from kata to worktree; step 3 was counted
    // in the queue while it waited.
    let metrics = c.metrics().render();
    assert!(
        metrics.contains(
            "godel_fallback_total{from=\"kata\",to=\"worktree\",reason=\"spawn_error\"} 2"
        ),
        "{metrics}"
    );
    assert!(
        text.contains("godel_queue_depth{team=\"alpha\"} 1"),
        "{text}"
    );
    c.stop_pools().await;
}
