//! `godel chaos`: a real daemon on a size-limited `$GODEL_HOME` (a tmpfs the
//! run mounts, when root), agents under a steady API load, then the faults
//! of [`crate::chaos_faults`] in turn. Afterwards the tally: every agent is
//! running (answers exec), restarted, or reported lost with a reason; no
//! process of the run outlives it; every listed snapshot restores; the
//! store passes SQLite's integrity check and every published snapshot has
//! its manifest. [`Tally::ok`] is false when anything is unaccounted for.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use godel_core::{Error, Result};
use http::Method;
use serde::Serialize;
use serde_json::{Value, json};

use crate::chaos_faults::{self as faults, Fault};
use crate::daemon::{Api, Daemon};

/// The `godel chaos` flags.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub bin: PathBuf,
    pub short: bool,
    pub agents: usize,
    pub isolation: String,
    pub images: Option<PathBuf>,
}

/// What happened to one agent.
#[derive(Debug, Clone, Serialize)]
pub struct Fate {
    pub id: String,
    pub state: String,
    pub verdict: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Tally {
    pub bench: String,
    pub short: bool,
    pub secs: f64,
    pub home_limit: String,
    pub faults: Vec<Fault>,
    pub agents: usize,
    pub running: usize,
    pub restarted: usize,
    pub lost_with_reason: usize,
    pub unaccounted: usize,
    pub fates: Vec<Fate>,
    pub load_requests: usize,
    pub load_errors: usize,
    pub snapshots_listed: usize,
    pub snapshots_restored: usize,
    pub snapshot_failures: Vec<String>,
    pub orphans: Vec<String>,
    pub store_integrity: String,
    pub store_ok: bool,
}

impl Tally {
    /// Everything accounted for and nothing broken.
    pub fn ok(&self) -> bool {
        self.unaccounted == 0
            && self.orphans.is_empty()
            && self.snapshot_failures.is_empty()
            && self.store_ok
            && self.faults.iter().all(|f| f.failures.is_empty())
    }

    pub fn print(&self) {
        println!(
            "godel chaos{}: {:.0} s, $GODEL_HOME {}",
            if self.short { " --short" } else { "" },
            self.secs,
            self.home_limit
        );
        for f in &self.faults {
            let state = match (&f.skipped, f.failures.is_empty()) {
                (Some(s), _) => format!("SKIPPED: {s}"),
                (None, true) => "ok".into(),
                (None, false) => format!("FAILED: {}", f.failures.join("; ")),
            };
            println!("  fault {:<34} {state}\n      {}", f.name, f.detail);
        }
        println!(
            "agents {}: running {}, restarted {}, lost with a reason {}, UNACCOUNTED {}",
            self.agents, self.running, self.restarted, self.lost_with_reason, self.unaccounted
        );
        for f in self.fates.iter().filter(|f| f.verdict == "unaccounted") {
            println!("  unaccounted {} ({}): {:?}", f.id, f.state, f.reason);
        }
        println!(
            "load during faults: {} requests, {} errors",
            self.load_requests, self.load_errors
        );
        println!(
            "snapshots: {} listed, {} restored{}",
            self.snapshots_listed,
            self.snapshots_restored,
            if self.snapshot_failures.is_empty() {
                String::new()
            } else {
                format!(", FAILED: {}", self.snapshot_failures.join("; "))
            }
        );
        println!("orphan processes: {}", self.orphans.len());
        for o in &self.orphans {
            println!("  {o}");
        }
        println!("store integrity: {}", self.store_integrity);
        println!("verdict: {}", if self.ok() { "PASS" } else { "FAIL" });
    }
}

/// Mount a tmpfs of `size` on `dir` (root only); false when not possible.
fn mount_limited(dir: &Path, size: &str) -> bool {
    std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

/// Run the whole suite.
pub async fn run(o: &ChaosOptions, progress: &dyn Fn(&str)) -> Result<Tally> {
    let t0 = Instant::now();
    let scratch = tempfile::Builder::new()
        .prefix("godel-chaos-")
        .tempdir()
        .map_err(|e| Error::io("create scratch dir", &e))?;
    let home = scratch.path().join("home");
    std::fs::create_dir_all(&home).map_err(|e| Error::io("mkdir home", &e))?;
    let limit = if o.short { "768m" } else { "2g" };
    let mounted = mount_limited(&home, limit);
    let mut tally = Tally {
        bench: "chaos".into(),
        short: o.short,
        agents: 0,
        home_limit: if mounted {
            format!("on a {limit} tmpfs")
        } else {
            "on the host file system (mounting a tmpfs needs root)".into()
        },
        ..Default::default()
    };
    let r = run_in(o, scratch.path(), &home, mounted, &mut tally, progress).await;
    if mounted {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&home)
            .status();
    }
    r?;
    demand_required(
        &mut tally.faults,
        &std::env::var("GODEL_REQUIRE").unwrap_or_default(),
    );
    tally.secs = t0.elapsed().as_secs_f64();
    Ok(tally)
}

/// `n` distinct entries of `from` picked with a xorshift generator seeded
/// by `seed` (printed, so a run can be retold).
fn pick_random(from: &[String], n: usize, seed: u64) -> Vec<String> {
    let mut pool = from.to_vec();
    let mut x = seed.max(1);
    let mut out = Vec::new();
    while out.len() < n && !pool.is_empty() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(pool.swap_remove((x % pool.len() as u64) as usize));
    }
    out
}

/// Where `$GODEL_REQUIRE` demands what a skipped fault lacked (`qemu` for
/// the microVM fault, `root` for the size-limited mount; `all` for both),
/// the skip is a failure, as with `godel_testkit::require!` in the tests.
fn demand_required(faults: &mut [Fault], req: &str) {
    let wants = |key: &str| {
        req.split(',')
            .map(str::trim)
            .any(|k| k == key || k == "all")
    };
    for f in faults.iter_mut() {
        let key = if f.name.contains("microVM") {
            "qemu"
        } else {
            "root"
        };
        if wants(key)
            && let Some(why) = f.skipped.take()
        {
            f.failures.push(format!(
                "not injected, and GODEL_REQUIRE demands {key}: {why}"
            ));
        }
    }
}

async fn run_in(
    o: &ChaosOptions,
    scratch: &Path,
    home: &Path,
    mounted: bool,
    tally: &mut Tally,
    progress: &dyn Fn(&str),
) -> Result<()> {
    let repo = scratch.join("repo");
    {
        let r = repo.clone();
        tokio::task::spawn_blocking(move || crate::spawn::generate_repo(&r, 50))
            .await
            .map_err(|e| Error::internal(e.to_string()))??;
    }
    progress("starting the daemon");
    let mut d = Daemon::start(&o.bin, home, &o.isolation, &[]).await?;
    let mut api = Api::new(&d.socket());
    let spec = json!({"runtime": "worktree", "repo": repo.display().to_string()});
    let mut ids: Vec<String> = Vec::new();
    progress(&format!(
        "spawning {} agents (half restart on failure)",
        o.agents
    ));
    for i in 0..o.agents {
        let mut s = spec.clone();
        if i % 2 == 0 {
            s["restart"] = json!("on-failure");
        }
        let v = api.ok(Method::POST, "/v1/runtimes", Some(&s)).await?;
        let id = v["id"].as_str().unwrap_or_default().to_string();
        api.raw(
            Method::PUT,
            &format!("/v1/runtimes/{id}/files?path=chaos-marker"),
            bytes::Bytes::from(id.clone()),
            "application/octet-stream",
        )
        .await?;
        ids.push(id);
    }
    // A snapshot of the first two before any fault: they must restore at the end.
    for id in ids.iter().take(2) {
        api.ok(
            Method::POST,
            &format!("/v1/runtimes/{id}/snapshots"),
            Some(&json!({})),
        )
        .await?;
    }

    // Steady load for the whole fault phase.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, errs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, sent, errs, sock, ids) = (
            stop.clone(),
            sent.clone(),
            errs.clone(),
            d.socket(),
            ids.clone(),
        );
        tokio::spawn(async move {
            let mut api = Api::new(&sock);
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let id = &ids[i % ids.len()];
                let r = match i % 3 {
                    0 => api.get("/v1/runtimes").await,
                    1 => api.get(&format!("/v1/runtimes/{id}")).await,
                    _ => {
                        api.json(
                            Method::POST,
                            &format!("/v1/runtimes/{id}/exec"),
                            Some(&json!({"cmd": ["true"]})),
                        )
                        .await
                    }
                };
                sent.fetch_add(1, Ordering::Relaxed);
                if !r.is_ok_and(|(s, _)| s.is_success()) {
                    errs.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let mut killed: BTreeSet<String> = BTreeSet::new();
    // 1. SIGKILL a random quarter of the agents' processes (not the two
    // snapshotted first: their snapshots are checked at the end anyway).
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let victims = pick_random(&ids[2.min(ids.len())..], (o.agents / 4).max(1), seed);
    progress(&format!(
        "SIGKILL {} random agents' processes (seed {seed})",
        victims.len()
    ));
    let mut f = faults::kill_processes(&mut api, &victims, "SIGKILL agent processes").await;
    f.detail.push_str(&format!(" (random pick, seed {seed})"));
    tally.faults.push(f);
    killed.extend(victims.iter().cloned());

    // 2. VMs.
    progress("microVMs: spawn, then SIGKILL their VMMs");
    let vm_n = if o.short { 1 } else { 2 };
    match faults::spawn_vms(&d, o.images.as_deref(), vm_n).await? {
        Ok(vms) => {
            tally
                .faults
                .push(faults::kill_processes(&mut api, &vms, "SIGKILL microVM VMMs").await);
            killed.extend(vms.iter().cloned());
            ids.extend(vms);
        }
        Err(why) => tally.faults.push(Fault {
            name: "SIGKILL microVM VMMs".into(),
            skipped: Some(why),
            ..Default::default()
        }),
    }

    // 3. Daemon killed mid-spawn (twice, at two points of the spawn path).
    for after in [15u64, 60] {
        progress(&format!("SIGKILL the daemon {after} ms into 6 spawns"));
        let (f, got) =
            faults::kill_daemon_mid_spawn(&mut d, &spec, 6, Duration::from_millis(after)).await;
        tally.faults.push(f);
        ids.extend(got);
    }

    // 4. Daemon killed mid-snapshot.
    // Faults below act on agents not killed above (those may be gone).
    let alive: Vec<String> = ids
        .iter()
        .filter(|i| !killed.contains(*i))
        .cloned()
        .collect();
    let snap_ids: Vec<String> = alive.iter().skip(3).step_by(4).take(4).cloned().collect();
    progress("SIGKILL the daemon during 4 snapshots");
    tally
        .faults
        .push(faults::kill_daemon_mid_snapshot(&mut d, &snap_ids, Duration::from_millis(40)).await);

    // 5. Full disk.
    if mounted {
        progress("filling $GODEL_HOME");
        let (f, got) = faults::fill_disk(&d, &spec, &ids[1]).await;
        tally.faults.push(f);
        ids.extend(got);
    } else {
        tally.faults.push(Fault {
            name: "$GODEL_HOME file system full".into(),
            skipped: Some("needs root to mount a size-limited tmpfs".into()),
            ..Default::default()
        });
    }

    // 6. Connections dropped mid-exec.
    progress("dropping connections mid-exec");
    let drop_ids: Vec<String> = alive.iter().skip(1).step_by(5).take(4).cloned().collect();
    tally
        .faults
        .push(faults::drop_mid_exec(&d, &drop_ids).await);

    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    tally.load_requests = sent.load(Ordering::Relaxed);
    tally.load_errors = errs.load(Ordering::Relaxed);

    // Records of spawns cut off mid-request carry the label.
    let mut api = Api::new(&d.socket());
    let all = settle(&mut api, if o.short { 40 } else { 90 }, progress).await;
    for r in &all {
        let id = r["id"].as_str().unwrap_or_default().to_string();
        if r["spec"]["labels"]["chaos.mid_spawn"].is_string() && !ids.contains(&id) {
            ids.push(id);
        }
    }
    account(&mut api, &ids, &killed, &all, tally).await;
    progress("restoring every listed snapshot");
    check_snapshots(&mut api, tally).await;

    // Teardown, then look for leftovers.
    progress("terminating everything, stopping the daemon, looking for orphans");
    // Failed ones too: `rm` releases what their runtime still holds.
    let live: Vec<String> = api
        .ok(Method::GET, "/v1/runtimes?all=true", None)
        .await
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|r| r["state"] != "terminated")
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect();
    for id in &live {
        let _ = api
            .json(Method::DELETE, &format!("/v1/runtimes/{id}"), None)
            .await;
    }
    d.stop().await;
    let every: Vec<String> = all
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .chain(ids.iter().cloned())
        .collect();
    tally.orphans = orphans(home, &every, &d.pids_seen).await;
    let (ok, text) = store_integrity(home);
    tally.store_ok = ok;
    tally.store_integrity = text;
    Ok(())
}

/// Wait (up to `secs`) until no record is creating or terminating and every
/// running one answers; the full listing.
async fn settle(api: &mut Api, secs: u64, progress: &dyn Fn(&str)) -> Vec<Value> {
    progress(&format!("waiting up to {secs} s for the daemon to settle"));
    let t = Instant::now();
    loop {
        let all = api
            .ok(Method::GET, "/v1/runtimes?all=true", None)
            .await
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        let busy = all
            .iter()
            .filter(|r| {
                matches!(
                    r["state"].as_str(),
                    Some("creating" | "terminating" | "pending")
                )
            })
            .count();
        let mut dead = 0;
        for r in all.iter().filter(|r| r["state"] == "running") {
            let id = r["id"].as_str().unwrap_or_default();
            if !exec_ok(api, id).await {
                dead += 1;
            }
        }
        if (busy == 0 && dead == 0) || t.elapsed() > Duration::from_secs(secs) {
            return all;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn exec_ok(api: &mut Api, id: &str) -> bool {
    tokio::time::timeout(
        Duration::from_secs(20),
        api.ok(
            Method::POST,
            &format!("/v1/runtimes/{id}/exec"),
            Some(&json!({"cmd": ["true"]})),
        ),
    )
    .await
    .is_ok_and(|r| r.is_ok_and(|v| v["exit_code"] == 0))
}

/// Classify every agent of the run.
async fn account(
    api: &mut Api,
    ids: &[String],
    killed: &BTreeSet<String>,
    all: &[Value],
    tally: &mut Tally,
) {
    let by_id: BTreeMap<&str, &Value> = all
        .iter()
        .filter_map(|r| Some((r["id"].as_str()?, r)))
        .collect();
    let mut seen = BTreeSet::new();
    for id in ids {
        if !seen.insert(id.clone()) {
            continue;
        }
        let (state, reason) = match by_id.get(id.as_str()) {
            Some(r) => (
                r["state"].as_str().unwrap_or("?").to_string(),
                r["reason"].as_str().map(str::to_string),
            ),
            None => ("missing".into(), None),
        };
        let verdict = match state.as_str() {
            "running" if exec_ok(api, id).await => {
                if killed.contains(id) {
                    tally.restarted += 1;
                    "restarted"
                } else {
                    tally.running += 1;
                    "running"
                }
            }
            "error" | "terminated" if reason.as_deref().is_some_and(|r| !r.is_empty()) => {
                tally.lost_with_reason += 1;
                "lost with a reason"
            }
            _ => {
                tally.unaccounted += 1;
                "unaccounted"
            }
        };
        tally.fates.push(Fate {
            id: id.clone(),
            state,
            verdict: verdict.into(),
            reason,
        });
    }
    tally.agents = tally.fates.len();
}

/// Restore every listed snapshot, exec in the copy, terminate it.
async fn check_snapshots(api: &mut Api, tally: &mut Tally) {
    let snaps = api
        .ok(Method::GET, "/v1/snapshots", None)
        .await
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    tally.snapshots_listed = snaps.len();
    for s in snaps {
        let sid = s["id"].as_str().unwrap_or_default();
        let r = tokio::time::timeout(
            Duration::from_secs(120),
            api.ok(
                Method::POST,
                &format!("/v1/snapshots/{sid}/restore"),
                Some(&json!({})),
            ),
        )
        .await;
        match r {
            Ok(Ok(v)) => {
                let id = v["id"].as_str().unwrap_or_default().to_string();
                if exec_ok(api, &id).await {
                    tally.snapshots_restored += 1;
                } else {
                    tally
                        .snapshot_failures
                        .push(format!("{sid}: restored {id} does not answer exec"));
                }
                let _ = api
                    .json(Method::DELETE, &format!("/v1/runtimes/{id}"), None)
                    .await;
            }
            Ok(Err(e)) => tally.snapshot_failures.push(format!("{sid}: {e}")),
            Err(_) => tally
                .snapshot_failures
                .push(format!("{sid}: restore took over 120 s")),
        }
    }
}

/// Processes left behind: in a cgroup named after one of `ids` or after a
/// warm-pool jail of one of the `daemons` (`warm-<pid>-<n>`), or with
/// `home` on their command line. Waits up to 15 s for them to go.
pub async fn orphans(home: &Path, ids: &[String], daemons: &[u32]) -> Vec<String> {
    let home_s = home.display().to_string();
    let pools: Vec<String> = daemons.iter().map(|p| format!("/warm-{p}-")).collect();
    let me = std::process::id();
    let t = Instant::now();
    loop {
        let mut found = Vec::new();
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                if pid == me {
                    continue;
                }
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                    .unwrap_or_default();
                let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
                let in_cg = ids
                    .iter()
                    .any(|id| !id.is_empty() && cg.contains(id.as_str()))
                    || pools.iter().any(|w| cg.contains(w.as_str()));
                if in_cg || cmd.contains(&home_s) {
                    let group = cg.lines().next().unwrap_or_default();
                    found.push(format!("pid {pid}: {} (cgroup {group})", cmd.trim()));
                }
            }
        }
        if found.is_empty() || t.elapsed() > Duration::from_secs(15) {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// SQLite's integrity and foreign-key checks on the store, and every
/// published snapshot directory holding its manifest.
pub fn store_integrity(home: &Path) -> (bool, String) {
    let db = home.join("godel.db");
    let conn = match rusqlite::Connection::open_with_flags(
        &db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) {
        Ok(c) => c,
        Err(e) => return (false, format!("cannot open {}: {e}", db.display())),
    };
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap_or_else(|e| e.to_string());
    let fk: usize = conn
        .prepare("PRAGMA foreign_key_check")
        .and_then(|mut s| s.query_map([], |_| Ok(())).map(|r| r.count()))
        .unwrap_or(usize::MAX);
    let mut missing = Vec::new();
    if let Ok(rd) = std::fs::read_dir(home.join("snapshots")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !e.path().is_dir() {
                continue;
            }
            if !e.path().join("manifest.json").exists() {
                missing.push(name);
            }
        }
    }
    let ok = integrity == "ok" && fk == 0 && missing.is_empty();
    (
        ok,
        format!(
            "integrity_check {integrity}; foreign_key_check {fk} rows; snapshot dirs without manifest: {}",
            missing.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_pick_is_distinct_and_bounded() {
        let ids: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
        let got = pick_random(&ids, 4, 42);
        assert_eq!(got.len(), 4);
        assert_eq!(got.iter().collect::<BTreeSet<_>>().len(), 4);
        assert_eq!(got, pick_random(&ids, 4, 42), "same seed, same pick");
        assert_eq!(pick_random(&ids[..2], 5, 7).len(), 2);
    }

    #[test]
    fn a_skipped_fault_fails_the_run_only_when_required() {
        let mut tally = Tally {
            store_ok: true,
            faults: vec![Fault {
                name: "SIGKILL microVM VMMs".into(),
                skipped: Some("no images".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(tally.ok(), "a visible skip alone is not a failure");
        tally.unaccounted = 1;
        assert!(!tally.ok(), "an unaccounted agent fails the run");
        tally.unaccounted = 0;
        demand_required(&mut tally.faults, "nft");
        assert!(tally.ok(), "qemu not demanded");
        demand_required(&mut tally.faults, "root,qemu");
        assert!(tally.faults[0].skipped.is_none());
        assert!(!tally.ok(), "{:?}", tally.faults);
    }
}
