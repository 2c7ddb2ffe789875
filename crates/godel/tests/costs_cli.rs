//! Costs and moves through the CLI against a real daemon: `godel usage`
//! (table, JSON, CSV; totals reconcile with the rows; a team sees only its
//! own), usage surviving `kill -9`, `godel budget set` with the `stop`
//! policy (`budget_exceeded` in `godel events`, spawns refused with
//! `BUDGET_EXCEEDED`), `godel migrate` between two worktree sandboxes with
//! the content verified, and `godel rollout` rolling back on its own when
//! the target runtime (an `e2b` runtime pointed at a closed port) fails.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, stderr};
use serde_json::Value;

const CONFIG: &str = r#"
[defaults]
fallback = ["worktree"]
[metering]
flush_secs = 1
[retry]
max_attempts = 1
[prices.worktree]
vcpu_second = 0.001
gib_second = 0.001
[e2b]
api_key = "e2b_0123456789abcdef0123456789abcdef01234567"
api_url = "http://127.0.0.1:9"
sandbox_url = "http://127.0.0.1:9"
"#;

fn daemon(tcp: bool) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("godel.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let cfg = cfg.display().to_string();
    let d = if tcp {
        Daemon::start_tcp(&["--config", &cfg])
    } else {
        Daemon::start(&["--config", &cfg])
    };
    (d, dir)
}

fn json(d: &Daemon, args: &[&str]) -> Value {
    serde_json::from_str(&d.ok(args)).expect("JSON")
}

fn wait_for(d: &Daemon, what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(
            Instant::now() < until,
            "{what} never happened:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn events(d: &Daemon, team: &str, kind: &str) -> Vec<Value> {
    let v = json(d, &["events", "--team", team, "--kind", kind, "--json"]);
    v.as_array().unwrap().clone()
}

#[test]
fn usage_reports_reconcile_survive_kill9_and_are_scoped_per_team() {
    let (mut d, _cfg) = daemon(true);
    let a = d.last_line(&[
        "spawn", "--team", "alpha", "--cpu", "1", "--memory", "512Mi",
    ]);
    let b = d.last_line(&["spawn", "--team", "beta", "--cpu", "2", "--memory", "1Gi"]);
    for _ in 0..3 {
        d.ok(&["exec", &a, "--", "echo", "hi"]);
    }
    let r = json(&d, &["usage", "--json"]);
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{r}");
    for row in rows {
        for k in ["vcpu_seconds", "gib_seconds", "cost"] {
            assert!(row[k].is_number(), "{k} in {row}");
        }
    }
    for k in ["cost_nanos", "vcpu_milli_ms", "mem_kib_ms", "execs"] {
        let sum: i64 = rows.iter().map(|r| r[k].as_i64().unwrap()).sum();
        assert_eq!(r["total"][k].as_i64().unwrap(), sum, "total {k}");
    }
    let alpha = rows.iter().find(|r| r["key"] == a.as_str()).unwrap();
    assert_eq!(alpha["execs"], 3);
    assert_eq!(alpha["runtime"], "worktree");
    let table = d.ok(&["usage", "--by", "runtime"]);
    assert!(
        table.contains("worktree") && table.contains("COST_USD"),
        "{table}"
    );
    let csv = d.ok(&["usage", "--by", "day", "--format", "csv"]);
    assert!(
        csv.starts_with("day,team,runtime,run_seconds,vcpu_seconds"),
        "{csv}"
    );
    let o = d.run(&["usage", "--since", "last week"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("INVALID_ARGUMENT: since"),
        "{}",
        stderr(&o)
    );

    // A team token sees its own usage only.
    let token = d.last_line(&["token", "create", "--team", "beta"]);
    let url = format!("http://{}", d.tcp.clone().unwrap());
    let as_beta = |args: &[&str]| {
        d.cmd()
            .env("GODEL_URL", &url)
            .env("GODEL_TOKEN", &token)
            .args(args)
            .output()
            .unwrap()
    };
    let o = as_beta(&["usage", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let keys: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec![b.as_str()]);
    let o = as_beta(&["usage", "--team", "alpha"]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));

    // kill -9: the exec count and the running time are still there.
    let before = json(&d, &["usage", "--team", "alpha", "--json"])["total"].clone();
    d.kill9();
    d.spawn_serve();
    let after = json(&d, &["usage", "--team", "alpha", "--json"])["total"].clone();
    assert_eq!(after["execs"], 3);
    assert!(
        after["run_ms"].as_u64() >= before["run_ms"].as_u64(),
        "{before} then {after}"
    );
}

#[test]
fn budget_stop_policy_and_budget_exceeded() {
    let (d, _cfg) = daemon(false);
    let id = d.last_line(&[
        "spawn", "--team", "spend", "--cpu", "1", "--memory", "256Mi",
    ]);
    let v = json(
        &d,
        &[
            "budget", "set", "--team", "spend", "--limit", "0.000001", "--policy", "stop", "--json",
        ],
    );
    assert_eq!(v["policy"], "stop");
    assert_eq!(v["period"], "monthly");
    // Bad input: named, exit 2, nothing set.
    let o = d.run(&[
        "budget", "set", "--team", "other", "--limit", "5", "--policy", "pause",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("policy"), "{}", stderr(&o));
    assert_eq!(
        json(&d, &["budget", "ls", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    wait_for(&d, "budget_exceeded", || {
        !events(&d, "spend", "budget_exceeded").is_empty()
    });
    wait_for(&d, "the stop policy", || {
        json(&d, &["status", &id, "--json"])["state"] == "terminated"
    });
    assert_eq!(events(&d, "spend", "budget_alert").len(), 1);
    let o = d.run(&["spawn", "--team", "spend"]);
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    assert!(stderr(&o).starts_with("BUDGET_EXCEEDED"), "{}", stderr(&o));
    // Other teams are not affected.
    d.last_line(&["spawn", "--team", "free"]);
}

#[test]
fn migrate_between_worktree_sandboxes_verifies_content() {
    let (d, _cfg) = daemon(false);
    let id = d.last_line(&["spawn", "--team", "alpha"]);
    d.ok(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "mkdir -p src && echo body > src/a.txt && echo top > b.txt",
    ]);

    let plan = json(
        &d,
        &[
            "migrate",
            "--agents",
            &id,
            "--to",
            "worktree",
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["moves"][0]["id"], id.as_str());
    assert!(plan["estimated_hourly_change_usd"].is_number());
    assert_eq!(json(&d, &["status", &id, "--json"])["state"], "running");

    // A target that is not there: refused, the source keeps running.
    let o = d.run(&["migrate", "--agents", &id, "--to", "nope"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(json(&d, &["status", &id, "--json"])["state"], "running");

    let r = json(
        &d,
        &["migrate", "--agents", &id, "--to", "worktree", "--json"],
    );
    let m = &r["moves"][0];
    assert_eq!(m["id"], id.as_str());
    assert_eq!(m["ok"], true, "{r}");
    let new_id = m["new_id"].as_str().unwrap().to_string();
    assert_eq!(d.ok(&["read", &new_id, "src/a.txt"]), "body\n");
    assert_eq!(d.ok(&["read", &new_id, "b.txt"]), "top\n");
    assert_eq!(json(&d, &["status", &id, "--json"])["state"], "terminated");
    assert_eq!(events(&d, "alpha", "migrated").len(), 1);
}

#[test]
fn rollout_rolls_back_when_the_target_fails() {
    let (d, _cfg) = daemon(false);
    let r = json(
        &d,
        &[
            "rollout",
            "start",
            "--team",
            "alpha",
            "--to",
            "e2b",
            "--steps",
            "50,100",
            "--interval",
            "1h",
            "--max-error-rate",
            "2%",
            "--min-samples",
            "3",
            "--json",
        ],
    );
    assert_eq!(r["state"], "running");
    assert_eq!(r["from"], "worktree");
    let o = d.run(&[
        "rollout", "start", "--team", "alpha", "--to", "e2b", "--steps", "9,3",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    for _ in 0..6 {
        let id = d.last_line(&["spawn", "--team", "alpha"]);
        assert_eq!(json(&d, &["status", &id, "--json"])["runtime"], "worktree");
    }
    let s = json(&d, &["rollout", "status", "--team", "alpha", "--json"]);
    assert_eq!(s[0]["state"], "rolled_back", "{s}");
    assert_eq!(s[0]["steps"][0]["target"], 3);
    let ev = events(&d, "alpha", "rollout_rolled_back");
    assert_eq!(ev.len(), 1);
    assert!(
        ev[0]["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("error rate")
    );
    let o = d.run(&["rollout", "pause", "--team", "alpha"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));

    // By hand: start, pause, rollback.
    d.ok(&["rollout", "start", "--team", "alpha", "--to", "e2b"]);
    assert!(
        d.ok(&["rollout", "pause", "--team", "alpha"])
            .contains("paused")
    );
    assert!(
        d.ok(&["rollout", "rollback", "--team", "alpha"])
            .contains("rolled_back")
    );
}
