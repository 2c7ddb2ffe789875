//! `godel replicas` and `godel doctor`'s database entry against one daemon:
//! a lone daemon is a replica of its own store (SQLite by default), it owns
//! what it spawns, and only an admin sees the replicas or the database.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Daemon, make_repo, stderr, stdout};
use serde_json::Value;

/// The engine the suite's daemons run on (`GODEL_TEST_DATABASE_URL`: PostgreSQL).
fn engine() -> &'static str {
    match std::env::var("GODEL_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => "postgres",
        _ => "sqlite",
    }
}

fn get(addr: &str, path: &str, token: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn replicas(d: &Daemon) -> Value {
    serde_json::from_str(&d.ok(&["replicas", "--json"])).unwrap()
}

#[test]
fn replicas_lists_this_daemon_as_the_one_live_replica() {
    let d = Daemon::start_tcp(&[]);
    let r = replicas(&d);
    assert_eq!(r["store"]["engine"], engine(), "{r}");
    assert!(r["store"]["schema_version"].as_i64().unwrap() > 0, "{r}");
    assert!(!r["store"]["location"].as_str().unwrap().is_empty(), "{r}");
    assert!(r["lease_secs"].as_f64().unwrap() > 0.0, "{r}");
    let me = r["me"].as_str().expect("me").to_string();
    let list = r["replicas"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{r}");
    assert_eq!(list[0]["id"], me.as_str(), "{r}");
    assert_eq!(list[0]["live"], true, "{r}");
    assert_eq!(list[0]["owns"], 0, "{r}");
    assert!(list[0].get("taken_over_by").is_none(), "{r}");

    let repo = make_repo(d.home());
    let id = d.last_line(&["spawn", "--repo", repo.to_str().unwrap()]);
    assert!(id.starts_with("rt-"), "{id}");
    let r = replicas(&d);
    assert_eq!(r["replicas"][0]["owns"], 1, "{r}");

    // The table: the store and who answered, then one line per replica.
    let table = d.ok(&["replicas"]);
    let mut lines = table.lines();
    let head = lines.next().unwrap();
    assert!(head.contains(engine()), "{table}");
    assert!(
        head.contains(&format!("answered by replica {me}")),
        "{table}"
    );
    let cols: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        cols,
        ["ID", "HOST", "ADVERTISE", "LEASE", "OWNS", "STARTED"],
        "{table}"
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[0], me, "{table}");
    assert_eq!(row[3], "live", "{table}");
    assert_eq!(row[4], "1", "{table}");
    assert!(row[2].starts_with("http://127.0.0.1:"), "{table}");
    assert!(lines.next().is_none(), "{table}");

    // A team token: refused, over HTTP and through the CLI.
    let tok = d.last_line(&["token", "create", "--team", "alpha"]);
    let (status, body) = get(d.tcp.as_deref().unwrap(), "/v1/replicas", &tok);
    assert_eq!(status, 403, "{body}");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["code"], "PERMISSION_DENIED", "{body}");
    let out = d.tcp_cmd(&tok).arg("replicas").output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("PERMISSION_DENIED:"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
}

#[test]
fn doctor_reports_the_database_to_an_admin() {
    let d = Daemon::start_tcp(&[]);
    let out: Vec<Value> = serde_json::from_str(&d.ok(&["doctor", "--json"])).unwrap();
    let db: Vec<&Value> = out.iter().filter(|r| r["kind"] == "database").collect();
    assert_eq!(db.len(), 1, "{out:?}");
    let db = db[0];
    assert_eq!(db["name"], "database", "{db}");
    assert_eq!(db["availability"]["available"], true, "{db}");
    let check = &db["database"];
    assert_eq!(check["engine"], engine(), "{db}");
    assert_eq!(check["answers"], true, "{db}");
    assert!(check["schema_version"].as_i64().unwrap() > 0, "{db}");
    let location = check["location"].as_str().unwrap();
    assert!(!location.is_empty(), "{db}");
    if engine() == "sqlite" {
        assert!(location.starts_with(d.home().to_str().unwrap()), "{db}");
    }
    assert!(!location.contains("password"), "{db}");
    // The runtimes' entries keep their shape and say what they are.
    let wt = out.iter().find(|r| r["name"] == "worktree").unwrap();
    assert_eq!(wt["kind"], "runtime", "{wt}");
    assert!(wt.get("database").is_none(), "{wt}");

    let human = d.ok(&["doctor"]);
    let line = human
        .lines()
        .find(|l| l.contains(" database "))
        .unwrap_or_else(|| panic!("{human}"));
    assert!(line.starts_with("ok "), "{human}");
    assert!(
        line.contains(engine()) && line.contains("answers"),
        "{human}"
    );

    // A team token gets the runtimes, not where the state lives.
    let tok = d.last_line(&["token", "create", "--team", "alpha"]);
    let o = d.tcp_cmd(&tok).args(["doctor", "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let team: Vec<Value> = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(team.iter().any(|r| r["name"] == "worktree"), "{team:?}");
    assert!(team.iter().all(|r| r["kind"] == "runtime"), "{team:?}");
    assert!(!stdout(&o).contains(location), "{team:?}");
}
