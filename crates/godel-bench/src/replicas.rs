//! `godel bench replicas`: three `godel serve` replicas (A, B, C) over one
//! PostgreSQL store (a fresh schema per run, dropped at the end), the kata
//! runtime against the in-process fake Kubernetes API server.
//!
//! Measured in one run, over HTTP with a team token on the replicas' TCP
//! listeners: spawn through A (a spawn is served by the replica called, so
//! A owns it); status and `exec true` on A's sandbox through A (owner) and
//! through B (forwarded to A), interleaved; every answer's
//! `x-godel-replica` header is checked (absent when the replica called
//! answered itself, the owner's id when it forwarded). Then the take-over:
//! A is killed with SIGKILL and one of its sandboxes is polled through C
//! every 50 ms until exec succeeds and its record names B or C; A is
//! restarted between rounds and spawns a new sandbox for the next one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use godel_core::{Error, Result};
use godel_fake_kube::{FakeApiServer, FakeOptions};
use http::Method;
use serde_json::{Value, json};

use crate::daemon::{Api, Daemon, Machine};
use crate::replicas_report::{
    PathPair, ReplicasReport, TakeoverRound, log_problems, schema_name, takeover_floor,
    with_schema, without_schema,
};
use crate::{LatencySummary, ms};

/// The `godel bench replicas` flags.
#[derive(Debug, Clone)]
pub struct ReplicasOptions {
    /// The `godel` binary to start as `godel serve`.
    pub bin: PathBuf,
    /// Samples per measured path.
    pub samples: usize,
    /// PostgreSQL URL (a `schema=` in it is replaced by the run's own).
    pub database: String,
    pub lease_secs: f64,
    /// Take-over rounds (A restarted between them).
    pub rounds: usize,
    /// Isolation of the replicas' local runtimes (unused by kata).
    pub isolation: String,
    /// `debug` or `release`, for the report.
    pub build: String,
}

const DEFINITION: &str = "Three godel serve replicas over one PostgreSQL store (fresh schema), kata runtime against the in-process fake Kubernetes API server, HTTP/1.1 keep-alive with a bearer token over loopback TCP. owner = request sent to the replica that owns the sandbox (A); forwarded = sent to B, which forwards it to A; added = forwarded P50 - owner P50. Take-over: A killed with SIGKILL, a sandbox of A's polled through C every 50 ms; times are after the kill.";

const POLL: Duration = Duration::from_millis(50);

/// One answer: status, who answered (`x-godel-replica`), body, wall time.
struct Answer {
    status: u16,
    replica: Option<String>,
    body: Value,
    elapsed: Duration,
}

impl Answer {
    fn describe(&self) -> String {
        let code = self.body["code"].as_str().unwrap_or("");
        format!("HTTP {} {code}", self.status)
    }
}

/// A bearer-token HTTP client of the replicas' TCP listeners.
struct Http {
    client: reqwest::Client,
    token: String,
}

impl Http {
    async fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Answer> {
        let mut req = self
            .client
            .request(method.clone(), url)
            .bearer_auth(&self.token)
            .timeout(timeout);
        if let Some(b) = body {
            req = req.json(b);
        }
        let t = Instant::now();
        let resp = req
            .send()
            .await
            .map_err(|e| Error::unavailable(format!("{method} {url}: {e}")))?;
        let status = resp.status().as_u16();
        let replica = resp
            .headers()
            .get("x-godel-replica")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Error::unavailable(format!("{method} {url}: body: {e}")))?;
        let elapsed = t.elapsed();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok(Answer {
            status,
            replica,
            body,
            elapsed,
        })
    }
}

/// One `godel serve` replica.
struct Replica {
    id: String,
    base: String,
    daemon: Daemon,
}

/// A free loopback port (bound, read, released).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("bind a free loopback port", &e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("read the free port", &e))
}

fn write_kubeconfig(dir: &Path, server: &str) -> Result<PathBuf> {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
         current-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
    );
    std::fs::write(&path, text).map_err(|e| Error::io(format!("write {}", path.display()), &e))?;
    Ok(path)
}

impl Replica {
    /// Start `godel serve` on its own home; the kata runtime reads the
    /// kubeconfig named in the home's `godel.toml` (`[kube] kubeconfig`,
    /// the file form of `KUBECONFIG`).
    async fn start(
        o: &ReplicasOptions,
        root: &Path,
        name: &str,
        db: &str,
        kubeconfig: &Path,
    ) -> Result<Replica> {
        let home = root.join(name);
        std::fs::create_dir_all(&home)
            .map_err(|e| Error::io(format!("create {}", home.display()), &e))?;
        let toml = format!(
            "[kube]\nkubeconfig = {:?}\n",
            kubeconfig.display().to_string()
        );
        std::fs::write(home.join("godel.toml"), toml)
            .map_err(|e| Error::io("write godel.toml", &e))?;
        let addr = format!("127.0.0.1:{}", free_port()?);
        let id = format!("bench-{name}");
        let lease = o.lease_secs.to_string();
        let extra = [
            "--database",
            db,
            "--listen",
            &addr,
            "--lease-secs",
            &lease,
            "--replica-id",
            &id,
        ];
        let daemon = Daemon::start(&o.bin, &home, &o.isolation, &extra).await?;
        Ok(Replica {
            id,
            base: format!("http://{addr}"),
            daemon,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// Drop the run's schema (a plain connection without godel's `schema=`).
async fn drop_schema(url: &str, schema: &str) -> Result<()> {
    let (client, conn) = tokio_postgres::connect(&without_schema(url), tokio_postgres::NoTls)
        .await
        .map_err(|e| Error::unavailable(format!("connect to PostgreSQL: {e}")))?;
    let task = tokio::spawn(conn);
    let r = client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await
        .map_err(|e| Error::internal(format!("drop schema {schema}: {e}")));
    drop(client);
    let _ = task.await;
    r
}

/// In a `/v1/replicas` answer: whether `dead` is listed as not live, and
/// whether its sandboxes moved to a survivor (`dead` shows `taken_over_by`
/// one of them, or a survivor's entry names sandbox `id`).
fn replicas_view(v: &Value, dead: &str, survivors: &[String], id: &str) -> (bool, bool) {
    let list = v["replicas"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let is_survivor = |x: &Value| x.as_str().is_some_and(|i| survivors.iter().any(|s| s == i));
    let not_live = list.iter().any(|x| x["id"] == dead && x["live"] == false);
    let moved = list.iter().any(|x| {
        (x["id"] == dead && is_survivor(&x["taken_over_by"]))
            || (is_survivor(&x["id"]) && x.to_string().contains(&format!("\"{id}\"")))
    });
    (not_live, moved)
}

/// Everything the run started, for the measurement and the clean-up.
struct Cluster {
    http: Http,
    a: Replica,
    b: Replica,
    c: Replica,
    /// Sandboxes alive at the end (terminated in the clean-up).
    live: Vec<String>,
    header_checks: usize,
    header_failures: Vec<String>,
    errors: Vec<String>,
}

impl Cluster {
    /// Check who answered: `expect` = None for a direct answer, the owner's id
    /// for a forwarded one.
    fn check_header(&mut self, what: &str, a: &Answer, expect: Option<&str>) {
        self.header_checks += 1;
        if a.replica.as_deref() != expect {
            self.header_failures.push(format!(
                "{what}: x-godel-replica {:?}, expected {:?}",
                a.replica, expect
            ));
        }
    }

    /// `POST /v1/runtimes {"runtime":"kata"}` through A; the id and the wall time.
    async fn spawn_on_a(&mut self) -> Result<(String, Duration)> {
        let spec = json!({"runtime": "kata"});
        let ans = self
            .http
            .call(
                Method::POST,
                &self.a.url("/v1/runtimes"),
                Some(&spec),
                Duration::from_secs(120),
            )
            .await?;
        if ans.status != 201 {
            return Err(Error::internal(format!(
                "spawn kata through A: {}: {}",
                ans.describe(),
                ans.body
            )));
        }
        self.check_header("spawn through A", &ans, None);
        let id = ans.body["id"]
            .as_str()
            .ok_or_else(|| Error::internal(format!("spawn answer without id: {}", ans.body)))?
            .to_string();
        Ok((id, ans.elapsed))
    }

    async fn terminate(&mut self, via: &str, id: &str) {
        match self
            .http
            .call(
                Method::DELETE,
                &format!("{via}/v1/runtimes/{id}"),
                None,
                Duration::from_secs(60),
            )
            .await
        {
            Ok(a) if a.status < 300 || a.status == 404 => {}
            Ok(a) => self
                .errors
                .push(format!("terminate {id}: {}: {}", a.describe(), a.body)),
            Err(e) => self.errors.push(format!("terminate {id}: {e}")),
        }
    }

    /// One status read or exec through `via`; the wall time of a good answer.
    async fn sample(
        &mut self,
        exec: bool,
        via: &str,
        id: &str,
        expect: Option<&str>,
    ) -> Option<Duration> {
        let (method, path, body) = if exec {
            (
                Method::POST,
                format!("/v1/runtimes/{id}/exec"),
                Some(json!({"cmd": ["true"]})),
            )
        } else {
            (Method::GET, format!("/v1/runtimes/{id}"), None)
        };
        let what = format!("{method} {path} via {via}");
        match self
            .http
            .call(
                method,
                &format!("{via}{path}"),
                body.as_ref(),
                Duration::from_secs(30),
            )
            .await
        {
            Ok(a) if a.status == 200 && (!exec || a.body["exit_code"] == 0) => {
                self.check_header(&what, &a, expect);
                Some(a.elapsed)
            }
            Ok(a) => {
                self.errors
                    .push(format!("{what}: {}: {}", a.describe(), a.body));
                None
            }
            Err(e) => {
                self.errors.push(format!("{what}: {e}"));
                None
            }
        }
    }

    /// Owner vs forwarded for one path, `n` interleaved pairs (after a warm-up).
    async fn pair(&mut self, exec: bool, id: &str, n: usize) -> PathPair {
        let (a, b) = (self.a.base.clone(), self.b.base.clone());
        let owner_id = self.a.id.clone();
        for _ in 0..5 {
            self.sample(exec, &a, id, None).await;
            self.sample(exec, &b, id, Some(&owner_id)).await;
        }
        let (mut direct, mut fwd) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for i in 0..n {
            // Alternate which goes first, so neither always follows the other.
            for via_b in [i % 2 == 1, i % 2 == 0] {
                if via_b {
                    fwd.extend(self.sample(exec, &b, id, Some(&owner_id)).await);
                } else {
                    direct.extend(self.sample(exec, &a, id, None).await);
                }
            }
        }
        let name = if exec { "exec `true`" } else { "status GET" };
        PathPair::new(name, LatencySummary::of(&direct), LatencySummary::of(&fwd))
    }

    /// Kill A, poll `id` through C until exec works and B or C owns it.
    async fn takeover_round(
        &mut self,
        round: usize,
        id: &str,
        deadline: Duration,
    ) -> TakeoverRound {
        let mut r = TakeoverRound {
            round,
            sandbox: id.to_string(),
            ..Default::default()
        };
        let (c, c_id) = (self.c.base.clone(), self.c.id.clone());
        let survivors = [self.b.id.clone(), self.c.id.clone()];
        // `/v1/replicas` is admin only: read it over C's Unix socket.
        let mut admin = Api::new(&self.c.daemon.socket());
        let mut replicas_api = true;
        let kill_wall = chrono::Utc::now();
        let t0 = Instant::now();
        self.a.daemon.kill9().await;
        let fail = |r: &mut TakeoverRound, key: String, msg: String| {
            *r.failed_polls.entry(key.clone()).or_default() += 1;
            r.failure_samples.entry(key).or_insert(msg);
        };
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while t0.elapsed() < deadline {
            tick.tick().await;
            r.polls += 1;
            let timeout = Duration::from_secs(5);
            if r.exec_ok_ms.is_none() {
                let body = json!({"cmd": ["true"]});
                let url = format!("{c}/v1/runtimes/{id}/exec");
                match self
                    .http
                    .call(Method::POST, &url, Some(&body), timeout)
                    .await
                {
                    Ok(a) if a.status == 200 && a.body["exit_code"] == 0 => {
                        r.exec_ok_ms = Some(ms(t0.elapsed()));
                        r.exec_answered_by = Some(a.replica.clone().unwrap_or(c_id.clone()));
                    }
                    Ok(a) => fail(
                        &mut r,
                        format!("exec: {}", a.describe()),
                        a.body.to_string(),
                    ),
                    Err(e) => fail(&mut r, "exec: no answer".into(), e.to_string()),
                }
            }
            if r.owner_moved_ms.is_none() {
                let url = format!("{c}/v1/runtimes/{id}");
                match self.http.call(Method::GET, &url, None, timeout).await {
                    Ok(a) if a.status == 200 => {
                        let owner = a.body["owner"].as_str().unwrap_or("").to_string();
                        if survivors.contains(&owner) {
                            r.owner_moved_ms = Some(ms(t0.elapsed()));
                            r.new_owner = Some(owner);
                        }
                    }
                    Ok(a) => fail(
                        &mut r,
                        format!("status: {}", a.describe()),
                        a.body.to_string(),
                    ),
                    Err(e) => fail(&mut r, "status: no answer".into(), e.to_string()),
                }
            }
            if replicas_api && (r.replicas_not_live_ms.is_none() || r.replicas_owner_ms.is_none()) {
                match admin.get("/v1/replicas").await {
                    Ok((s, v)) if s.is_success() => {
                        let (dead, owner) = replicas_view(&v, &self.a.id, &survivors, id);
                        if dead && r.replicas_not_live_ms.is_none() {
                            r.replicas_not_live_ms = Some(ms(t0.elapsed()));
                        }
                        if owner && r.replicas_owner_ms.is_none() {
                            r.replicas_owner_ms = Some(ms(t0.elapsed()));
                        }
                    }
                    _ => replicas_api = false,
                }
            }
            // `/v1/replicas` may list owners only as counts: give it a second.
            let replicas_done = !replicas_api
                || (r.replicas_not_live_ms.is_some()
                    && (r.replicas_owner_ms.is_some()
                        || r.owner_moved_ms
                            .is_some_and(|m| ms(t0.elapsed()) > m + 1000.0)));
            if r.exec_ok_ms.is_some() && r.owner_moved_ms.is_some() && replicas_done {
                break;
            }
        }
        if r.exec_ok_ms.is_none() || r.owner_moved_ms.is_none() {
            self.errors.push(format!(
                "take-over round {round}: {id} not taken over within {:.0} s (exec ok: {:?}, owner moved: {:?}); C's log:\n{}",
                deadline.as_secs_f64(),
                r.exec_ok_ms,
                r.owner_moved_ms,
                self.c.daemon.log_tail()
            ));
        }
        self.takeover_event(&mut r, kill_wall).await;
        r
    }

    /// The `replica_takeover` event of this round (read as admin over C's socket).
    async fn takeover_event(&mut self, r: &mut TakeoverRound, kill: chrono::DateTime<chrono::Utc>) {
        let mut api = Api::new(&self.c.daemon.socket());
        let Ok((s, v)) = api.get("/v1/events/log?kind=replica_takeover").await else {
            return;
        };
        if !s.is_success() {
            return;
        }
        let after = |t: &Value| {
            t.as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| {
                    (t.with_timezone(&chrono::Utc) - kill)
                        .num_microseconds()
                        .unwrap_or(0) as f64
                        / 1e3
                })
        };
        let ev = v.as_array().and_then(|l| {
            l.iter().rev().find(|e| {
                e["data"]["from"] == self.a.id.as_str()
                    && after(&e["time"]).is_some_and(|t| t >= 0.0)
            })
        });
        if let Some(e) = ev {
            r.takeover_event_ms = after(&e["time"]);
            r.lease_ran_out_ms = after(&e["data"]["lease_until"]);
            r.adopt_ms = e["data"]["ms"].as_f64();
        }
    }

    /// Terminate what is left (through B, which forwards), stop the
    /// replicas; their logs' WARN and ERROR lines.
    async fn shut_down(&mut self) -> Vec<String> {
        let via = self.b.base.clone();
        for id in std::mem::take(&mut self.live) {
            self.terminate(&via, &id).await;
        }
        let mut lines = Vec::new();
        for (who, r) in [("A", &mut self.a), ("B", &mut self.b), ("C", &mut self.c)] {
            r.daemon.stop().await;
            let log = std::fs::read_to_string(r.daemon.home.join("serve.log")).unwrap_or_default();
            lines.extend(log_problems(who, &log));
        }
        lines.truncate(40);
        lines
    }
}

/// Run the benchmark. The report's `ok()` says whether every header check
/// and request succeeded.
pub async fn run(o: &ReplicasOptions, progress: &dyn Fn(&str)) -> Result<ReplicasReport> {
    let load_avg_before = Machine::probe().load_avg;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        ^ ((std::process::id() as u128) << 64);
    let schema = schema_name(seed);
    let db = with_schema(&o.database, &schema);
    // Fail early, and with the server's own words, when PostgreSQL is not there.
    let (probe, conn) =
        tokio_postgres::connect(&without_schema(&o.database), tokio_postgres::NoTls)
            .await
            .map_err(|e| {
                Error::unavailable(format!(
                    "bench replicas: cannot connect to {}: {e}",
                    without_schema(&o.database)
                ))
            })?;
    drop(probe);
    let _ = conn.await;
    let fake = FakeApiServer::start(FakeOptions::default())
        .await
        .map_err(|e| Error::io("start the fake Kubernetes API server", &e))?;
    let tmp = tempfile::tempdir().map_err(|e| Error::io("temporary directory", &e))?;
    let kubeconfig = write_kubeconfig(tmp.path(), &fake.url())?;
    progress(&format!(
        "3 replicas over schema {schema}, lease {} s, kata against the fake API server at {}",
        o.lease_secs,
        fake.url()
    ));
    let result = async {
        let a = Replica::start(o, tmp.path(), "a", &db, &kubeconfig).await?;
        let b = Replica::start(o, tmp.path(), "b", &db, &kubeconfig).await?;
        let c = Replica::start(o, tmp.path(), "c", &db, &kubeconfig).await?;
        let created = Api::new(&a.daemon.socket())
            .ok(Method::POST, "/v1/tokens", Some(&json!({"team": "bench"})))
            .await?;
        let token = created["token"]
            .as_str()
            .ok_or_else(|| Error::internal(format!("token answer without token: {created}")))?
            .to_string();
        let client = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .build()
            .map_err(|e| Error::internal(format!("HTTP client: {e}")))?;
        Ok::<_, Error>(Cluster {
            http: Http { client, token },
            a,
            b,
            c,
            live: Vec::new(),
            header_checks: 0,
            header_failures: Vec::new(),
            errors: Vec::new(),
        })
    }
    .await;
    let mut cl = match result {
        Ok(c) => c,
        Err(e) => {
            let _ = drop_schema(&o.database, &schema).await;
            return Err(e);
        }
    };
    let measured = measure(&mut cl, o, progress).await;
    progress("clean-up: terminating sandboxes, stopping the replicas");
    let log_lines = cl.shut_down().await;
    let pods_left = fake.names("pods", None).len();
    drop(fake);
    let schema_dropped = match drop_schema(&o.database, &schema).await {
        Ok(()) => true,
        Err(e) => {
            cl.errors.push(e.to_string());
            false
        }
    };
    let (spawn, paths, takeover) = measured?;
    let headline = paths
        .iter()
        .find(|p| p.path.starts_with("exec"))
        .map(|p| p.forwarded.clone())
        .unwrap_or_default();
    Ok(ReplicasReport {
        bench: "replicas".into(),
        replicas: 3,
        runtime: "kata".into(),
        samples: o.samples,
        lease_secs: o.lease_secs,
        tick_secs: o.lease_secs / 3.0,
        definition: DEFINITION.into(),
        p50_ms: headline.p50_ms,
        p95_ms: headline.p95_ms,
        p99_ms: headline.p99_ms,
        spawn_owner: spawn,
        paths,
        takeover,
        takeover_floor: takeover_floor(o.lease_secs),
        header_failures: cl.header_failures,
        header_checks: cl.header_checks,
        errors: cl.errors,
        log_lines,
        pods_left,
        schema,
        schema_dropped,
        load_avg_before,
        build: o.build.clone(),
    })
}

type Measured = (LatencySummary, Vec<PathPair>, Vec<TakeoverRound>);

async fn measure(
    cl: &mut Cluster,
    o: &ReplicasOptions,
    progress: &dyn Fn(&str),
) -> Result<Measured> {
    let n = o.samples.max(1);
    progress(&format!(
        "{n} spawns through A (each terminated after it is timed)"
    ));
    let mut spawns = Vec::with_capacity(n);
    let (pinned, first) = cl.spawn_on_a().await?;
    cl.live.push(pinned.clone());
    spawns.push(first);
    let a_base = cl.a.base.clone();
    for _ in 1..n {
        let (id, t) = cl.spawn_on_a().await?;
        spawns.push(t);
        cl.terminate(&a_base, &id).await;
    }
    let owner = cl
        .http
        .call(
            Method::GET,
            &cl.b.url(&format!("/v1/runtimes/{pinned}")),
            None,
            Duration::from_secs(30),
        )
        .await?;
    if owner.body["owner"] != cl.a.id.as_str() {
        return Err(Error::internal(format!(
            "{pinned} spawned through A names owner {} (expected {})",
            owner.body["owner"], cl.a.id
        )));
    }
    progress(&format!(
        "{n} status reads and {n} execs of {pinned}, through A and through B"
    ));
    let status = cl.pair(false, &pinned, n).await;
    let exec = cl.pair(true, &pinned, n).await;
    let lease = Duration::from_secs_f64(o.lease_secs);
    let deadline = lease * 2 + Duration::from_secs(30);
    let mut rounds = Vec::new();
    for round in 1..=o.rounds.max(1) {
        let id = if round == 1 {
            pinned.clone()
        } else {
            cl.a.daemon.restart().await?;
            let (id, _) = cl.spawn_on_a().await?;
            cl.live.push(id.clone());
            id
        };
        // C reaches it through A before the kill (forwarded).
        let c_base = cl.c.base.clone();
        let a_id = cl.a.id.clone();
        if cl.sample(true, &c_base, &id, Some(&a_id)).await.is_none() {
            return Err(Error::internal(format!(
                "exec of {id} through C before the kill failed: {:?}",
                cl.errors.last()
            )));
        }
        progress(&format!(
            "take-over round {round}: SIGKILL A, polling {id} through C"
        ));
        let r = cl.takeover_round(round, &id, deadline).await;
        rounds.push(r);
    }
    Ok((LatencySummary::of(&spawns), vec![status, exec], rounds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replicas_view_names_the_dead_and_the_new_owner() {
        let survivors = ["bench-b".to_string(), "bench-c".to_string()];
        let before = json!({"replicas": [
            {"id": "bench-a", "live": false, "owns": 1},
            {"id": "bench-b", "live": true, "owns": 0},
        ]});
        assert_eq!(
            replicas_view(&before, "bench-a", &survivors, "rt-1"),
            (true, false)
        );
        let after = json!({"replicas": [
            {"id": "bench-a", "live": false, "owns": 0, "taken_over_by": "bench-b"},
            {"id": "bench-b", "live": true, "owns": 1},
        ]});
        assert_eq!(
            replicas_view(&after, "bench-a", &survivors, "rt-1"),
            (true, true)
        );
        let listed = json!({"replicas": [{"id": "bench-c", "live": true, "owns": ["rt-1"]}]});
        assert_eq!(
            replicas_view(&listed, "bench-a", &survivors, "rt-1"),
            (false, true)
        );
        assert_eq!(
            replicas_view(&listed, "bench-a", &survivors, "rt-10"),
            (false, false)
        );
        assert_eq!(
            replicas_view(&json!({}), "bench-a", &survivors, "rt-1"),
            (false, false)
        );
    }
}
