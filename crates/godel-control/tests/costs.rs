//! Metering, budgets, migration and canary rollouts over the real control
//! plane (SQLite store, snapshot store) with `FakeRuntime` providers and a
//! manual clock, so every cost and every rollout step is exact and no test
//! waits on the wall clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use godel_control::control::{
    BudgetRequest, MigrateRequest, RolloutRequest, RolloutState, UsageRequest,
};
use godel_control::{Caller, Control, ManualClock, Settings, event_channel};
use godel_core::{ErrorCode, ExecRequest, SandboxState, SpawnSpec};
use godel_policy::{Config, config};
use godel_testkit::{FakeRuntime, Op};

const ADMIN: Caller = Caller::Admin;

fn cfg(toml: &str) -> Config {
    config::from_toml_str(toml, &HashMap::new()).expect("config")
}

struct Env {
    c: Arc<Control>,
    fakes: BTreeMap<String, Arc<FakeRuntime>>,
    clock: Arc<ManualClock>,
    dir: tempfile::TempDir,
}

async fn env(toml: &str, names: &[&str]) -> Env {
    let dir = tempfile::tempdir().unwrap();
    open(dir, toml, names, None)
}

fn open(
    dir: tempfile::TempDir,
    toml: &str,
    names: &[&str],
    clock: Option<Arc<ManualClock>>,
) -> Env {
    let settings = Settings {
        config: cfg(toml),
        ..Settings::default()
    };
    let c = Control::open(dir.path(), settings).unwrap();
    let clock = clock
        .unwrap_or_else(|| ManualClock::new(Utc.with_ymd_and_hms(2026, 12, 4, 23, 30, 0).unwrap()));
    c.set_clock(clock.clone());
    let (_sink, rx) = event_channel();
    c.attach_event_receiver(rx);
    let mut fakes = BTreeMap::new();
    for n in names {
        let p = Arc::new(FakeRuntime::new(*n));
        c.register(p.clone());
        fakes.insert(n.to_string(), p);
    }
    Env {
        c,
        fakes,
        clock,
        dir,
    }
}

fn spec(runtime: Option<&str>, team: &str) -> SpawnSpec {
    SpawnSpec {
        runtime: runtime.map(String::from),
        team: Some(team.into()),
        resources: godel_core::ResourceLimits {
            cpu: Some(godel_core::Cpu(2000)),
            memory: Some(godel_core::ByteQuantity(4 << 30)),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn events_of(c: &Control, kind: &str) -> Vec<godel_core::Event> {
    c.events_since(&ADMIN, 0, 100_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind)
        .collect()
}

fn secs(s: i64) -> chrono::Duration {
    chrono::Duration::seconds(s)
}

/// E2B's price of 2 vCPU + 4 GiB for one second.
const PER_SECOND: f64 = 2.0 * 0.000014 + 4.0 * 0.0000045;

#[tokio::test]
async fn metering_charges_running_seconds_only_and_matches_the_price_table() {
    let e = env("", &["worktree"]).await;
    let (c, clock) = (&e.c, &e.clock);
    let a = c.spawn(&ADMIN, spec(None, "alpha")).await.unwrap();
    // 1 h running (across midnight: 23:30 → 00:30), 1,000 s paused, 600 s
    // running, terminated, then 1,000 s more that cost nothing.
    clock.advance(secs(3600));
    c.meter_tick().await;
    c.pause(&ADMIN, &a.id).await.unwrap();
    clock.advance(secs(1000));
    c.resume(&ADMIN, &a.id).await.unwrap();
    let out = c
        .exec_collect(&ADMIN, &a.id, ExecRequest::new(["echo", "hello"]))
        .await
        .unwrap();
    assert_eq!(out.stdout, "hello\n");
    c.write_file(&ADMIN, &a.id, "f.txt", Bytes::from_static(b"12345"))
        .await
        .unwrap();
    clock.advance(secs(600));
    c.terminate(&ADMIN, &a.id).await.unwrap();
    clock.advance(secs(1000));
    c.meter_tick().await;

    let r = c
        .usage(
            &ADMIN,
            &UsageRequest {
                by: Some("agent".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(r.rows.len(), 1);
    let row = &r.rows[0];
    assert_eq!(row.run_ms, 4_200_000);
    assert_eq!(row.vcpu_seconds, 8400.0);
    assert_eq!(row.gib_seconds, 16800.0);
    let want = 4200.0 * PER_SECOND;
    let err = (row.cost - want).abs() / want;
    println!(
        "metering: cost {} USD, expected {want} USD, relative error {err:e}",
        row.cost
    );
    assert!(err < 0.001, "cost {} vs {want}", row.cost);
    assert_eq!(row.execs, 1);
    assert_eq!(row.bytes, 6 + 5, "exec output plus the written file");

    // By day: the midnight split, and totals reconcile with the rows exactly.
    let d = c
        .usage(
            &ADMIN,
            &UsageRequest {
                by: Some("day".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        d.rows
            .iter()
            .map(|r| (r.key.as_str(), r.run_ms))
            .collect::<Vec<_>>(),
        vec![("2026-12-04", 1_800_000), ("2026-12-05", 2_400_000)]
    );
    // The views come from different tables (rollups and day rows): they agree.
    let rt = c
        .usage(
            &ADMIN,
            &UsageRequest {
                by: Some("runtime".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let old = c
        .usage(
            &ADMIN,
            &UsageRequest {
                since: Some("2000-01-01".into()),
                ..Default::default()
            },
        )
        .unwrap();
    for other in [&d, &rt, &old] {
        assert_eq!(
            (
                other.total.run_ms,
                other.total.vcpu_milli_ms,
                other.total.mem_kib_ms,
                other.total.execs,
                other.total.bytes
            ),
            (
                r.total.run_ms,
                r.total.vcpu_milli_ms,
                r.total.mem_kib_ms,
                r.total.execs,
                r.total.bytes
            )
        );
    }
    for rep in [&r, &d] {
        assert_eq!(
            rep.total.cost_nanos,
            rep.rows.iter().map(|r| r.cost_nanos).sum::<i64>()
        );
        assert_eq!(
            rep.total.vcpu_milli_ms,
            rep.rows.iter().map(|r| r.vcpu_milli_ms).sum::<u64>()
        );
        assert_eq!(
            rep.total.mem_kib_ms,
            rep.rows.iter().map(|r| r.mem_kib_ms).sum::<u64>()
        );
    }
    let since = c
        .usage(
            &ADMIN,
            &UsageRequest {
                since: Some("2026-12-05".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(since.total.run_ms, 2_400_000);

    // Bad input is refused by name; a team sees only its own usage.
    for (req, key) in [
        (
            UsageRequest {
                by: Some("week".into()),
                ..Default::default()
            },
            "by",
        ),
        (
            UsageRequest {
                since: Some("yesterday".into()),
                ..Default::default()
            },
            "since",
        ),
    ] {
        let err = c.usage(&ADMIN, &req).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert!(err.message.starts_with(key), "{}", err.message);
    }
    let beta = Caller::Team("beta".into());
    assert!(
        c.usage(&beta, &UsageRequest::default())
            .unwrap()
            .rows
            .is_empty()
    );
    let err = c
        .usage(
            &beta,
            &UsageRequest {
                team: Some("alpha".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PermissionDenied);
}

#[tokio::test]
async fn a_crash_loses_at_most_the_flush_window() {
    let e = env("", &["worktree"]).await;
    let a = e.c.spawn(&ADMIN, spec(None, "alpha")).await.unwrap();
    e.clock.advance(secs(25));
    e.c.meter_tick().await;
    e.clock.advance(secs(7));
    // What the store holds (flushed) versus the live report, then a "kill -9":
    // the control plane goes away without its shutdown flush.
    let before =
        e.c.usage(&ADMIN, &UsageRequest::default())
            .unwrap()
            .total
            .run_ms;
    assert_eq!(before, 32_000);
    let (dir, clock) = (e.dir, e.clock.clone());
    drop(e.c);
    let again = open(dir, "", &["worktree"], Some(clock));
    let stored: u64 = again
        .c
        .store()
        .usage_parts(&godel_control::store::UsageQuery {
            by: "agent".into(),
            ..Default::default()
        })
        .unwrap()
        .iter()
        .map(|p| p.run_ms)
        .sum();
    assert!(before - stored <= 10_000, "lost {} ms", before - stored);
    // The open meter is durable too: nothing of the running time is lost.
    let after = again.c.usage(&ADMIN, &UsageRequest::default()).unwrap();
    assert_eq!(after.total.run_ms, 32_000);
    assert_eq!(after.rows[0].key, a.id);
}

/// A loopback HTTP server answering 500 to the first POST and 200 after;
/// every body goes into the channel.
async fn webhook_server() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let k = s.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..k]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(i) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() >= i + 4 + len {
                        let _ = tx.send(text[i + 4..].to_string());
                        break;
                    }
                }
                if k == 0 {
                    break;
                }
            }
            n += 1;
            let status = if n == 1 {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = s
                .write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await;
        }
    });
    (url, rx)
}

#[tokio::test]
async fn budgets_alert_once_refuse_spawns_and_apply_each_policy() {
    let (url, mut hooks) = webhook_server().await;
    let toml = format!("[budgets]\nwebhook_url = \"{url}\"\nwebhook_backoff_ms = 10\n");
    let e = env(&toml, &["worktree"]).await;
    let (c, clock) = (&e.c, &e.clock);
    clock.set(Utc.with_ymd_and_hms(2026, 12, 4, 12, 0, 0).unwrap());
    // One agent per team; an hour of it costs 0.1656 USD: the limit.
    let hour = 3600.0 * PER_SECOND;
    let mut agents = BTreeMap::new();
    for (team, policy) in [
        ("keep", "keep"),
        ("park", "snapshot-and-stop"),
        ("stop", "stop"),
    ] {
        c.set_budget(
            &ADMIN,
            BudgetRequest {
                team: team.into(),
                agent: None,
                limit_usd: hour,
                period: None,
                policy: Some(policy.into()),
            },
        )
        .unwrap();
        let a = c.spawn(&ADMIN, spec(None, team)).await.unwrap();
        c.write_file(&ADMIN, &a.id, "work.txt", Bytes::from_static(b"w"))
            .await
            .unwrap();
        agents.insert(team, a.id);
    }
    // Bad budgets change nothing and name the field.
    for (req, key) in [
        (
            BudgetRequest {
                team: "keep".into(),
                agent: None,
                limit_usd: -1.0,
                period: None,
                policy: None,
            },
            "limit",
        ),
        (
            BudgetRequest {
                team: "keep".into(),
                agent: None,
                limit_usd: 1.0,
                period: Some("yearly".into()),
                policy: None,
            },
            "period",
        ),
        (
            BudgetRequest {
                team: "keep".into(),
                agent: None,
                limit_usd: 1.0,
                period: None,
                policy: Some("pause".into()),
            },
            "policy",
        ),
    ] {
        let err = c.set_budget(&ADMIN, req).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert!(err.message.starts_with(key), "{}", err.message);
    }
    let err = c
        .set_budget(
            &Caller::Team("keep".into()),
            BudgetRequest {
                team: "keep".into(),
                agent: None,
                limit_usd: 9.0,
                period: None,
                policy: None,
            },
        )
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PermissionDenied);
    assert_eq!(c.budgets(&ADMIN, Some("keep")).unwrap()[0].limit_usd, hour);

    // 50 min: 83 % → one alert per team, once, however often we look.
    clock.advance(secs(3000));
    c.meter_tick().await;
    c.meter_tick().await;
    assert_eq!(events_of(c, "budget_alert").len(), 3);
    assert!(events_of(c, "budget_exceeded").is_empty());
    c.spawn(&ADMIN, spec(None, "keep"))
        .await
        .map(|i| agents.insert("keep-2", i.id))
        .unwrap();
    // The webhook got each alert; the first POST failed and was retried.
    let mut bodies = Vec::new();
    while bodies.len() < 4 {
        bodies.push(
            tokio::time::timeout(Duration::from_secs(20), hooks.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert!(
        bodies.iter().all(|b| b.contains("budget_alert")),
        "{bodies:?}"
    );
    for _ in 0..2000 {
        if events_of(c, "budget_webhook").len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let hooks_ev = events_of(c, "budget_webhook");
    assert_eq!(hooks_ev.len(), 3);
    assert!(hooks_ev.iter().all(|e| e.data["delivered"] == true));
    assert!(hooks_ev.iter().any(|e| e.data["attempts"] == 2));

    // 20 min more: past 100 %.
    clock.advance(secs(1200));
    c.meter_tick().await;
    c.meter_tick().await;
    assert_eq!(
        events_of(c, "budget_alert").len(),
        3,
        "the alert fired once"
    );
    assert_eq!(events_of(c, "budget_exceeded").len(), 3);
    for team in ["keep", "park", "stop"] {
        let err = c.spawn(&ADMIN, spec(None, team)).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::BudgetExceeded, "{team}");
        assert_eq!(err.code.http_status(), 402);
    }
    let state = |id: &str| c.visible_sandbox(&ADMIN, id).unwrap();
    assert_eq!(state(&agents["keep"]).state, SandboxState::Running);
    assert_eq!(state(&agents["keep-2"]).state, SandboxState::Running);
    let parked = state(&agents["park"]);
    assert_eq!(parked.state, SandboxState::Terminated);
    assert!(parked.parked.is_some(), "snapshot-and-stop parks");
    let stopped = state(&agents["stop"]);
    assert_eq!(
        (stopped.state, stopped.parked),
        (SandboxState::Terminated, None)
    );
    assert_eq!(events_of(c, "budget_enforced").len(), 2);
    // A bigger budget lets the team spawn again.
    c.set_budget(
        &ADMIN,
        BudgetRequest {
            team: "stop".into(),
            agent: None,
            limit_usd: 10.0,
            period: None,
            policy: None,
        },
    )
    .unwrap();
    c.spawn(&ADMIN, spec(None, "stop")).await.unwrap();
}

#[tokio::test]
async fn migration_moves_with_verified_content_and_a_failing_target_leaves_the_source() {
    let toml = "[retry]\nmax_attempts = 1\n[prices.microvm]\nvcpu_second = 0.00001\ngib_second = 0.000001\n";
    let e = env(toml, &["worktree", "microvm", "kata"]).await;
    let c = &e.c;
    let a = c
        .spawn(&ADMIN, spec(Some("worktree"), "alpha"))
        .await
        .unwrap();
    let b = c
        .spawn(&ADMIN, spec(Some("worktree"), "alpha"))
        .await
        .unwrap();
    for (id, text) in [(&a.id, "from a"), (&b.id, "from b")] {
        c.write_file(&ADMIN, id, "src/main.txt", Bytes::from(text.to_string()))
            .await
            .unwrap();
        c.write_file(&ADMIN, id, "README", Bytes::from_static(b"readme"))
            .await
            .unwrap();
    }

    // Dry run: the plan and its cost change, nothing moved.
    let dry = c
        .migrate(
            &ADMIN,
            MigrateRequest {
                team: Some("alpha".into()),
                from: Some("worktree".into()),
                to: "microvm".into(),
                dry_run: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(dry.moves.len(), 2);
    let per_agent = 3600.0 * (2.0 * 0.00001 + 4.0 * 0.000001) - 3600.0 * PER_SECOND;
    assert!(
        (dry.estimated_hourly_change_usd - 2.0 * per_agent).abs() < 1e-6,
        "{}",
        dry.estimated_hourly_change_usd
    );
    assert_eq!(
        c.visible_sandbox(&ADMIN, &a.id).unwrap().state,
        SandboxState::Running
    );

    // A target that fails to spawn, and one whose probe exec fails: the source stays.
    e.fakes["kata"].fail_always(Op::Spawn, ErrorCode::SpawnError);
    let failed = c
        .migrate(
            &ADMIN,
            MigrateRequest {
                agents: vec![a.id.clone()],
                to: "kata".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((failed.moved, failed.failed), (0, 1));
    assert!(failed.moves[0].new_id.is_none());
    e.fakes["microvm"].fail_always(Op::Exec, ErrorCode::ExecutionError);
    let failed = c
        .migrate(
            &ADMIN,
            MigrateRequest {
                agents: vec![a.id.clone()],
                to: "microvm".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.failed, 1);
    assert!(
        e.fakes["microvm"].live().is_empty(),
        "the half-made target is gone"
    );
    assert_eq!(
        c.visible_sandbox(&ADMIN, &a.id).unwrap().state,
        SandboxState::Running
    );
    assert_eq!(
        &c.read_file(&ADMIN, &a.id, "src/main.txt").await.unwrap()[..],
        b"from a"
    );
    assert_eq!(events_of(c, "migration_failed").len(), 2);
    e.fakes["microvm"].succeed(Op::Exec);

    // The real move: both agents, content verified, sources terminated.
    let done = c
        .migrate(
            &ADMIN,
            MigrateRequest {
                agents: vec![a.id.clone(), b.id.clone()],
                to: "microvm".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((done.moved, done.failed), (2, 0));
    for (m, text) in done.moves.iter().zip(["from a", "from b"]) {
        let new_id = m.new_id.clone().unwrap();
        let n = c.visible_sandbox(&ADMIN, &new_id).unwrap();
        assert_eq!(
            (n.runtime.as_str(), n.state, n.team.as_str()),
            ("microvm", SandboxState::Running, "alpha")
        );
        assert_eq!(
            &c.read_file(&ADMIN, &new_id, "src/main.txt").await.unwrap()[..],
            text.as_bytes()
        );
        assert_eq!(m.files, 2);
        assert_eq!(m.checksum.as_ref().map(|s| s.len()), Some(64));
        assert_eq!(
            c.visible_sandbox(&ADMIN, &m.id).unwrap().state,
            SandboxState::Terminated
        );
    }
    assert_eq!(events_of(c, "migrated").len(), 2);

    // Same runtime kind: snapshot → restore.
    let same = c
        .migrate(
            &ADMIN,
            MigrateRequest {
                agents: vec![done.moves[0].new_id.clone().unwrap()],
                to: "microvm".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(same.moved, 1);
    let id = same.moves[0].new_id.clone().unwrap();
    assert_eq!(
        &c.read_file(&ADMIN, &id, "src/main.txt").await.unwrap()[..],
        b"from a"
    );

    // Bad input: unknown runtime, nothing named, another team's agent.
    let err = c
        .migrate(
            &ADMIN,
            MigrateRequest {
                agents: vec![id.clone()],
                to: "nope".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.message.starts_with("to:"), "{}", err.message);
    let err = c
        .migrate(
            &ADMIN,
            MigrateRequest {
                to: "microvm".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    let err = c
        .migrate(
            &Caller::Team("beta".into()),
            MigrateRequest {
                agents: vec![id],
                to: "worktree".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
}

#[tokio::test]
async fn canary_routing_follows_the_steps_and_an_error_burst_rolls_back() {
    let toml = "[retry]\nmax_attempts = 1\n[defaults]\nfallback = [\"microvm\", \"worktree\"]\n";
    let e = env(toml, &["worktree", "microvm"]).await;
    let (c, clock) = (&e.c, &e.clock);
    let req = RolloutRequest {
        team: Some("alpha".into()),
        to: "microvm".into(),
        from: None,
        steps: "1,5,25,100".into(),
        interval: "10m".into(),
        max_error_rate: "2%".into(),
        min_samples: None,
    };
    let r = c.start_rollout(&ADMIN, req.clone()).unwrap();
    assert_eq!((r.from.as_str(), r.share()), ("worktree", 1));
    for want in [1u32, 5, 25, 100] {
        let mut on_target = 0;
        for _ in 0..1000 {
            let s = c.spawn(&ADMIN, spec(None, "alpha")).await.unwrap();
            if s.runtime == "microvm" {
                on_target += 1;
            }
            c.terminate(&ADMIN, &s.id).await.unwrap();
        }
        let share = on_target as f64 / 10.0;
        println!("canary step {want}%: {on_target} of 1000 spawns on microvm ({share}%)");
        assert!((share - want as f64).abs() <= 2.0, "step {want}: {share}%");
        clock.advance(secs(600));
    }
    let r = &c.rollouts(&ADMIN)[0];
    assert_eq!(r.state, RolloutState::Completed);
    assert_eq!(events_of(c, "rollout_step").len(), 3);

    // Again, with the target failing from the 25 % step on.
    let r = c.start_rollout(&ADMIN, req.clone()).unwrap();
    assert_eq!(r.state, RolloutState::Running);
    clock.advance(secs(1200));
    e.fakes["microvm"].fail_always(Op::Spawn, ErrorCode::SpawnError);
    for _ in 0..100 {
        let s = c.spawn(&ADMIN, spec(None, "alpha")).await.unwrap();
        assert_eq!(
            s.runtime, "worktree",
            "the spawn falls back and still works"
        );
        c.terminate(&ADMIN, &s.id).await.unwrap();
    }
    let r = &c.rollouts(&ADMIN)[0];
    assert_eq!(r.state, RolloutState::RolledBack);
    let ev = events_of(c, "rollout_rolled_back");
    assert_eq!(ev.len(), 1);
    assert!(
        ev[0].data["reason"]
            .as_str()
            .unwrap()
            .contains("error rate"),
        "{:?}",
        ev[0].data
    );
    println!("rollback: {}", ev[0].data["reason"]);
    e.fakes["microvm"].succeed(Op::Spawn);
    let before = e.fakes["microvm"].count("spawn");
    for _ in 0..50 {
        let s = c.spawn(&ADMIN, spec(None, "alpha")).await.unwrap();
        assert_eq!(s.runtime, "worktree");
    }
    assert_eq!(
        e.fakes["microvm"].count("spawn"),
        before,
        "routing returned to worktree"
    );

    // pause / resume / rollback by hand, and bad plans refused by name.
    c.start_rollout(&ADMIN, req.clone()).unwrap();
    assert_eq!(
        c.control_rollout(&ADMIN, "alpha", "pause").unwrap().state,
        RolloutState::Paused
    );
    clock.advance(secs(3600));
    assert_eq!(
        c.rollouts(&ADMIN)[0].step,
        0,
        "paused rollouts stay on their step"
    );
    assert_eq!(
        c.control_rollout(&ADMIN, "alpha", "resume").unwrap().state,
        RolloutState::Running
    );
    assert_eq!(
        c.control_rollout(&ADMIN, "alpha", "rollback")
            .unwrap()
            .state,
        RolloutState::RolledBack
    );
    assert_eq!(
        c.control_rollout(&ADMIN, "alpha", "pause")
            .unwrap_err()
            .code,
        ErrorCode::Conflict
    );
    assert_eq!(
        c.control_rollout(&ADMIN, "alpha", "dance")
            .unwrap_err()
            .code,
        ErrorCode::InvalidArgument
    );
    for (steps, rate, key) in [("5,1", "2%", "steps"), ("1,5", "300%", "max_error_rate")] {
        let err = c
            .start_rollout(
                &ADMIN,
                RolloutRequest {
                    steps: steps.into(),
                    max_error_rate: rate.into(),
                    ..req.clone()
                },
            )
            .unwrap_err();
        assert!(err.message.starts_with(key), "{}", err.message);
    }
    let err = c
        .start_rollout(
            &ADMIN,
            RolloutRequest {
                to: "nope".into(),
                ..req
            },
        )
        .unwrap_err();
    assert!(err.message.starts_with("to:"), "{}", err.message);
}

#[test]
fn agent_reports_since_a_day_agree_whichever_table_they_read() {
    use godel_control::store::{UsagePart, UsageQuery};
    let s = godel_control::Store::open_in_memory().unwrap();
    let part = |team: &str, ms: u64| UsagePart {
        team: team.into(),
        runtime: "worktree".into(),
        run_ms: ms,
        vcpu_milli_ms: ms * 1000,
        mem_kib_ms: ms * 1024,
        execs: 1,
        bytes: 10,
        ..Default::default()
    };
    let mut rows = Vec::new();
    for (i, day) in ["2026-12-01", "2026-12-02", "2026-12-03"]
        .iter()
        .enumerate()
    {
        rows.push((
            "rt-a".to_string(),
            day.to_string(),
            part("t", 1000 * (i as u64 + 1)),
        ));
    }
    rows.push(("rt-b".to_string(), "2026-12-01".to_string(), part("t", 7)));
    s.insert_usage(&rows).unwrap();
    let q = |since: &str| {
        let mut v = s
            .usage_parts(&UsageQuery {
                team: Some("t".into()),
                since: Some(chrono::NaiveDate::parse_from_str(since, "%Y-%m-%d").unwrap()),
                by: "agent".into(),
                ..Default::default()
            })
            .unwrap();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v.iter()
            .map(|p| (p.key.clone(), p.run_ms, p.execs))
            .collect::<Vec<_>>()
    };
    // 2 rows before and 2 after: the day rows; none before: the rollup.
    assert_eq!(q("2026-12-02"), vec![("rt-a".into(), 5000, 2)]);
    assert_eq!(
        q("2026-11-01"),
        vec![("rt-a".into(), 6000, 3), ("rt-b".into(), 7, 1)]
    );
    s.insert_usage(&[("rt-c".into(), "2026-12-03".into(), part("t", 5))])
        .unwrap();
    // Now 2 before and 3 after: all time minus the two earlier rows.
    assert_eq!(
        q("2026-12-02"),
        vec![("rt-a".into(), 5000, 2), ("rt-c".into(), 5, 1)]
    );
}
