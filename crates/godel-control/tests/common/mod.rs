//! Shared by the control plane's cost and rollout tests: a control plane
//! over `FakeRuntime` providers, its config from TOML and a manual clock.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use godel_control::{Caller, Control, ManualClock, Settings, event_channel};
use godel_core::SpawnSpec;
use godel_policy::{Config, config};
use godel_testkit::FakeRuntime;

pub const ADMIN: Caller = Caller::Admin;

pub fn cfg(toml: &str) -> Config {
    config::from_toml_str(toml, &HashMap::new()).expect("config")
}

pub struct Env {
    pub c: Arc<Control>,
    pub fakes: BTreeMap<String, Arc<FakeRuntime>>,
    pub clock: Arc<ManualClock>,
    pub dir: tempfile::TempDir,
}

pub async fn env(toml: &str, names: &[&str]) -> Env {
    let dir = tempfile::tempdir().unwrap();
    open(dir, toml, names, None)
}

/// The store of a test's home: SQLite in it, or — when the suite runs
/// against PostgreSQL — a schema of its own, the same one when reopened.
pub fn store_of(home: &std::path::Path) -> godel_control::Store {
    match std::env::var("GODEL_TEST_DATABASE_URL") {
        Ok(base) if !base.is_empty() => {
            let kept = home.join("test-database-url");
            let url = std::fs::read_to_string(&kept).unwrap_or_else(|_| {
                let url = godel_testkit::postgres_schema_url(&base, "control");
                std::fs::write(&kept, &url).unwrap();
                url
            });
            godel_control::Store::open_url(&url).unwrap()
        }
        _ => godel_control::Store::open(&home.join("godel.db")).unwrap(),
    }
}

pub fn open(
    dir: tempfile::TempDir,
    toml: &str,
    names: &[&str],
    clock: Option<Arc<ManualClock>>,
) -> Env {
    let settings = Settings {
        config: cfg(toml),
        ..Settings::default()
    };
    let c = Control::with_store(dir.path(), store_of(dir.path()), settings).unwrap();
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

pub fn spec(runtime: Option<&str>, team: &str) -> SpawnSpec {
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

pub fn events_of(c: &Control, kind: &str) -> Vec<godel_core::Event> {
    c.events_since(&ADMIN, 0, 100_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind)
        .collect()
}

pub fn secs(s: i64) -> chrono::Duration {
    chrono::Duration::seconds(s)
}

/// E2B's price of 2 vCPU + 4 GiB for one second.
pub const PER_SECOND: f64 = 2.0 * 0.000014 + 4.0 * 0.0000045;
