//! Metering, budgets and usage reports over the real control plane (SQLite
//! store, snapshot store) with `FakeRuntime` providers and a manual clock,
//! so every cost is exact and no test waits on the wall clock. Migration and
//! rollouts: `rollout.rs`.

mod common;

use common::*;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use godel_control::Caller;
use godel_control::control::{BudgetRequest, UsageRequest};
use godel_core::{ErrorCode, ExecRequest, SandboxState};

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

#[test]
fn agent_reports_since_a_day_agree_whichever_table_they_read() {
    use godel_control::store::{UsagePart, UsageQuery};
    let s = godel_control::Store::open_scratch().unwrap();
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
