//! Time to live through the CLI against a real daemon: `--ttl` with
//! `--on-timeout pause` parks the sandbox when its deadline passes (the
//! daemon's reaper), `godel resume` brings it back under its id with its
//! files, `godel ttl` moves or clears the deadline, and bad input is refused
//! with its code and changes nothing.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, stderr};

fn field(d: &Daemon, id: &str, key: &str) -> serde_json::Value {
    let out = d.ok(&["status", id, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
    v[key].clone()
}

#[test]
fn ttl_parks_and_resume_brings_it_back() {
    let d = Daemon::start(&[]);
    let id = d.last_line(&["spawn", "--ttl", "1", "--on-timeout", "pause"]);
    d.ok(&["exec", &id, "--", "sh", "-c", "echo kept > f.txt"]);
    assert!(field(&d, &id, "expires_at").is_string());
    // The reaper runs every second: the sandbox is parked soon after.
    let until = Instant::now() + Duration::from_secs(30);
    // The record says parked as soon as the snapshot is taken; the sandbox
    // then stops (terminating, then terminated).
    while field(&d, &id, "parked").is_null() || field(&d, &id, "state") != "terminated" {
        assert!(Instant::now() < until, "not parked: {}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(field(&d, &id, "parked")["reason"], "paused");
    assert!(d.ok(&["resume", &id]).contains("running"));
    assert_eq!(d.ok(&["read", &id, "f.txt"]), "kept\n");

    // Move the deadline far away, then clear it.
    assert!(d.ok(&["ttl", &id, "3600"]).contains("running"));
    assert!(field(&d, &id, "expires_at").is_string());
    assert!(d.ok(&["ttl", &id, "none"]).contains("no deadline"));
    assert!(field(&d, &id, "expires_at").is_null());

    // Bad input: a clear code, nothing changed.
    let o = d.run(&["ttl", &id, "soon"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).starts_with("INVALID_ARGUMENT"), "{}", stderr(&o));
    let o = d.run(&["spawn", "--on-timeout", "explode"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("on_timeout"), "{}", stderr(&o));
    assert!(field(&d, &id, "expires_at").is_null());
    d.ok(&["rm", &id]);
    let o = d.run(&["ttl", &id, "5"]);
    assert!(stderr(&o).starts_with("CONFLICT"), "{}", stderr(&o));
}
