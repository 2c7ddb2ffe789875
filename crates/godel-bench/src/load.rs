//! `godel bench exec|files|api`: latency through a real daemon (a `godel
//! serve` child process, [`crate::daemon`]) next to a baseline measured in
//! the same run: host `sh -c true` for exec, host file writes and reads for
//! files, and `GET /v1/health` interleaved at the same rate for the API mix.
//! Also the open-loop request generator [`mixed_load`] that `bench scale`
//! runs while its agents are alive.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use godel_core::{Error, Result};
use http::Method;
use serde::Serialize;
use serde_json::{Value, json};

use crate::daemon::{Api, Daemon};
use crate::{LatencySummary, ms};

/// What every daemon-backed benchmark needs: a scratch directory, a small
/// generated repository and the daemon.
pub struct Setup {
    pub scratch: tempfile::TempDir,
    pub repo: PathBuf,
    pub daemon: Daemon,
}

/// Flags shared by the daemon-backed benchmarks.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The `godel` binary to run as `godel serve` (normally this one).
    pub bin: PathBuf,
    /// `sandbox` or `none`.
    pub isolation: String,
    /// Files in the generated repository.
    pub files: usize,
    /// Extra `godel serve` flags.
    pub serve_args: Vec<String>,
}

impl Setup {
    /// Generate the repository and start the daemon.
    pub async fn start(o: &DaemonOptions, progress: &dyn Fn(&str)) -> Result<Setup> {
        let scratch = tempfile::Builder::new()
            .prefix("godel-bench-")
            .tempdir()
            .map_err(|e| Error::io("create scratch dir", &e))?;
        let repo = scratch.path().join("repo");
        progress(&format!("generating a {}-file repository", o.files));
        {
            let (r, n) = (repo.clone(), o.files);
            tokio::task::spawn_blocking(move || crate::spawn::generate_repo(&r, n))
                .await
                .map_err(|e| Error::internal(e.to_string()))??;
        }
        progress(&format!(
            "starting `godel serve --isolation {}` on a scratch home",
            o.isolation
        ));
        let extra: Vec<&str> = o.serve_args.iter().map(String::as_str).collect();
        let daemon =
            Daemon::start(&o.bin, &scratch.path().join("home"), &o.isolation, &extra).await?;
        Ok(Setup {
            scratch,
            repo,
            daemon,
        })
    }

    pub fn api(&self) -> Api {
        Api::new(&self.daemon.socket())
    }

    /// The spawn request for a worktree agent on the generated repository.
    pub fn worktree_spec(&self) -> Value {
        json!({"runtime": "worktree", "repo": self.repo.display().to_string()})
    }

    /// Terminate the suite's agents and stop the daemon (SIGTERM, so it
    /// drains its warm pool): jails outlive a killed daemon by design (a
    /// restarted one adopts them), so dropping it is not enough.
    pub async fn finish(&mut self, api: &mut Api, ids: &[String]) {
        for id in ids {
            let _ = api
                .json(Method::DELETE, &format!("/v1/runtimes/{id}"), None)
                .await;
        }
        self.daemon.stop().await;
    }

    /// Spawn one agent; its id.
    pub async fn spawn(&self, api: &mut Api, spec: &Value) -> Result<String> {
        let v = api.ok(Method::POST, "/v1/runtimes", Some(spec)).await?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::internal(format!("spawn answered without an id: {v}")))
    }
}

/// A godel figure next to its baseline; `p50_ms`/`p95_ms`/`p99_ms` at the
/// top are godel's.
#[derive(Debug, Clone, Serialize)]
pub struct Compared {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub godel: LatencySummary,
    pub baseline: LatencySummary,
    pub baseline_is: String,
}

impl Compared {
    pub fn new(godel: LatencySummary, baseline: LatencySummary, what: &str) -> Compared {
        Compared {
            p50_ms: godel.p50_ms,
            p95_ms: godel.p95_ms,
            p99_ms: godel.p99_ms,
            godel,
            baseline,
            baseline_is: what.to_string(),
        }
    }
}

/// `godel bench exec`: `true` through the API, against host `sh -c true`.
pub async fn exec(o: &DaemonOptions, n: usize, progress: &dyn Fn(&str)) -> Result<Value> {
    let mut s = Setup::start(o, progress).await?;
    let mut api = s.api();
    let id = s.spawn(&mut api, &s.worktree_spec()).await?;
    let path = format!("/v1/runtimes/{id}/exec");
    let req = json!({"cmd": ["true"]});
    progress(&format!("{n} exec round trips of `true` through the API"));
    let mut godel = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let v = api.ok(Method::POST, &path, Some(&req)).await?;
        godel.push(t.elapsed());
        if v["exit_code"] != 0 {
            return Err(Error::exec(format!("`true` answered {v}")));
        }
    }
    progress(&format!("{n} host runs of `sh -c true` (baseline)"));
    let mut base = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let st = tokio::process::Command::new("sh")
            .args(["-c", "true"])
            .status()
            .await
            .map_err(|e| Error::io("run sh", &e))?;
        base.push(t.elapsed());
        if !st.success() {
            return Err(Error::exec("host sh -c true failed"));
        }
    }
    let c = Compared::new(
        LatencySummary::of(&godel),
        LatencySummary::of(&base),
        "host fork+exec of `sh -c true`, no API, no sandbox",
    );
    let v = json!({
        "bench": "exec",
        "isolation": o.isolation,
        "p50_ms": c.p50_ms, "p95_ms": c.p95_ms, "p99_ms": c.p99_ms,
        "godel": c.godel, "baseline": c.baseline, "baseline_is": c.baseline_is,
        "daemon_rss_bytes": s.daemon.rss_bytes(),
    });
    s.finish(&mut api, &[id]).await;
    Ok(v)
}

/// `godel bench files`: write then read back a file of `size` bytes through
/// the API, against the same on the host file system.
pub async fn files(
    o: &DaemonOptions,
    n: usize,
    size: usize,
    progress: &dyn Fn(&str),
) -> Result<Value> {
    let mut s = Setup::start(o, progress).await?;
    let mut api = s.api();
    let id = s.spawn(&mut api, &s.worktree_spec()).await?;
    let data = Bytes::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    progress(&format!(
        "{n} writes and reads of {size} bytes through the API"
    ));
    let (mut w, mut r) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let p = format!("/v1/runtimes/{id}/files?path=bench/f{}", i % 8);
        let t = Instant::now();
        let (st, _) = api
            .raw(Method::PUT, &p, data.clone(), "application/octet-stream")
            .await?;
        w.push(t.elapsed());
        if !st.is_success() {
            return Err(Error::internal(format!("write answered {st}")));
        }
        let t = Instant::now();
        let (st, got) = api
            .raw(Method::GET, &p, Bytes::new(), "application/octet-stream")
            .await?;
        r.push(t.elapsed());
        if !st.is_success() || got.len() != size {
            return Err(Error::internal(format!(
                "read answered {st} with {} bytes",
                got.len()
            )));
        }
    }
    progress(&format!("{n} host writes and reads (baseline)"));
    let dir = s.scratch.path().join("baseline-files");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("mkdir", &e))?;
    let (mut bw, mut br) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let p = dir.join(format!("f{}", i % 8));
        let t = Instant::now();
        tokio::fs::write(&p, &data)
            .await
            .map_err(|e| Error::io("write", &e))?;
        bw.push(t.elapsed());
        let t = Instant::now();
        let got = tokio::fs::read(&p)
            .await
            .map_err(|e| Error::io("read", &e))?;
        br.push(t.elapsed());
        if got.len() != size {
            return Err(Error::internal("short host read"));
        }
    }
    let mibps = |v: &[Duration]| {
        let t: f64 = v.iter().map(Duration::as_secs_f64).sum();
        if t > 0.0 {
            (size * v.len()) as f64 / t / (1 << 20) as f64
        } else {
            0.0
        }
    };
    let rt: Vec<Duration> = w.iter().zip(&r).map(|(a, b)| *a + *b).collect();
    let brt: Vec<Duration> = bw.iter().zip(&br).map(|(a, b)| *a + *b).collect();
    let c = Compared::new(
        LatencySummary::of(&rt),
        LatencySummary::of(&brt),
        "host tokio::fs write + read of the same bytes",
    );
    let v = json!({
        "bench": "files",
        "size_bytes": size,
        "p50_ms": c.p50_ms, "p95_ms": c.p95_ms, "p99_ms": c.p99_ms,
        "godel": c.godel, "baseline": c.baseline, "baseline_is": c.baseline_is,
        "write": LatencySummary::of(&w), "read": LatencySummary::of(&r),
        "write_mib_s": mibps(&w), "read_mib_s": mibps(&r),
        "baseline_write_mib_s": mibps(&bw), "baseline_read_mib_s": mibps(&br),
    });
    s.finish(&mut api, &[id]).await;
    Ok(v)
}

/// What [`mixed_load`] measured.
#[derive(Debug, Clone, Serialize, Default)]
pub struct LoadReport {
    pub rate_per_s: f64,
    pub secs: f64,
    pub sent: usize,
    pub errors: usize,
    /// First few error messages.
    pub error_samples: Vec<String>,
    pub all: LatencySummary,
    pub list: LatencySummary,
    pub status: LatencySummary,
    pub exec: LatencySummary,
    /// `GET /v1/health` interleaved at the same rate (one in ten).
    pub baseline: LatencySummary,
    /// Achieved request rate (requests completed / wall time).
    pub achieved_per_s: f64,
}

/// Open loop: every `1/rate` s a request starts on its own task (list of
/// every agent 10 %, status 45 %, exec `true` 45 %, over `ids` round robin), plus a health
/// request every tenth tick; for `secs` seconds, then waits for stragglers
/// (30 s at most). Latency is from the request's scheduled start.
pub async fn mixed_load(sock: &Path, ids: &[String], rate: f64, secs: f64) -> LoadReport {
    #[derive(Clone, Copy)]
    enum Kind {
        List,
        Status,
        Exec,
        Health,
    }
    let ids: Arc<Vec<String>> = Arc::new(ids.to_vec());
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let total = (rate * secs).round() as usize;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // A pool of kept-alive connections, handed out per request.
    let pool: Arc<std::sync::Mutex<Vec<Api>>> = Arc::new(std::sync::Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut issued = 0usize;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..total {
        tick.tick().await;
        let kinds: &[Kind] = match (i % 20, i % 10 == 9) {
            (0 | 1, h) if h => &[Kind::List, Kind::Health],
            (0 | 1, _) => &[Kind::List],
            (2..=10, h) if h => &[Kind::Status, Kind::Health],
            (2..=10, _) => &[Kind::Status],
            (_, h) if h => &[Kind::Exec, Kind::Health],
            _ => &[Kind::Exec],
        };
        for &k in kinds {
            issued += 1;
            let (tx, ids, pool, sock) = (tx.clone(), ids.clone(), pool.clone(), sock.to_path_buf());
            let scheduled = Instant::now();
            tokio::spawn(async move {
                let mut api = pool
                    .lock()
                    .ok()
                    .and_then(|mut p| p.pop())
                    .unwrap_or_else(|| Api::new(&sock));
                let id = if ids.is_empty() {
                    String::new()
                } else {
                    ids[i % ids.len()].clone()
                };
                let r = match k {
                    Kind::List => api.get("/v1/runtimes").await,
                    Kind::Status => api.get(&format!("/v1/runtimes/{id}")).await,
                    Kind::Exec => {
                        api.json(
                            Method::POST,
                            &format!("/v1/runtimes/{id}/exec"),
                            Some(&json!({"cmd": ["true"]})),
                        )
                        .await
                    }
                    Kind::Health => api.get("/v1/health").await,
                };
                let took = scheduled.elapsed();
                let err = match r {
                    Ok((s, _)) if s.is_success() => None,
                    Ok((s, v)) => Some(format!("HTTP {s}: {v}")),
                    Err(e) => Some(e.to_string()),
                };
                if let Ok(mut p) = pool.lock() {
                    p.push(api);
                }
                let _ = tx.send((k as u8, took, err));
            });
        }
    }
    drop(tx);
    let mut by: [Vec<Duration>; 4] = Default::default();
    let mut rep = LoadReport {
        rate_per_s: rate,
        secs,
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(Some((k, took, err))) = tokio::time::timeout_at(deadline, rx.recv()).await {
        rep.sent += 1;
        if let Some(e) = err {
            rep.errors += 1;
            if rep.error_samples.len() < 5 {
                rep.error_samples.push(e);
            }
        }
        by[k as usize].push(took);
    }
    // Requests still unanswered 30 s after the last one started are errors.
    let unanswered = issued.saturating_sub(rep.sent);
    if unanswered > 0 {
        rep.errors += unanswered;
        rep.sent = issued;
        rep.error_samples.push(format!(
            "{unanswered} requests unanswered 30 s after the load ended"
        ));
    }
    let wall = start.elapsed().as_secs_f64();
    let all: Vec<Duration> = by[..3].iter().flatten().copied().collect();
    rep.achieved_per_s = all.len() as f64 / wall.max(1e-9);
    rep.all = LatencySummary::of(&all);
    rep.list = LatencySummary::of(&by[0]);
    rep.status = LatencySummary::of(&by[1]);
    rep.exec = LatencySummary::of(&by[2]);
    rep.baseline = LatencySummary::of(&by[3]);
    rep
}

/// `godel bench api`: [`mixed_load`] at `rate` for `secs` with `agents`
/// live worktree agents.
pub async fn api(
    o: &DaemonOptions,
    agents: usize,
    rate: f64,
    secs: f64,
    progress: &dyn Fn(&str),
) -> Result<Value> {
    let mut s = Setup::start(o, progress).await?;
    let mut api = s.api();
    progress(&format!("spawning {agents} agents"));
    let mut ids = Vec::with_capacity(agents);
    for _ in 0..agents {
        ids.push(s.spawn(&mut api, &s.worktree_spec()).await?);
    }
    let cpu0 = s.daemon.cpu_secs();
    progress(&format!(
        "{rate} req/s for {secs} s: list 10 %, status 45 %, exec 45 %, health 10 % on top"
    ));
    let t = Instant::now();
    let rep = mixed_load(&s.daemon.socket(), &ids, rate, secs).await;
    let cpu = (s.daemon.cpu_secs() - cpu0) / t.elapsed().as_secs_f64().max(1e-9);
    let v = json!({
        "bench": "api",
        "agents": agents,
        "p50_ms": rep.all.p50_ms, "p95_ms": rep.all.p95_ms, "p99_ms": rep.all.p99_ms,
        "godel": rep.all, "baseline": rep.baseline,
        "baseline_is": "GET /v1/health at one tenth of the rate, in the same run",
        "load": rep,
        "daemon_rss_bytes": s.daemon.rss_bytes(),
        "daemon_cpu_cores": cpu,
        "wall_ms": ms(t.elapsed()),
    });
    s.finish(&mut api, &ids).await;
    Ok(v)
}
