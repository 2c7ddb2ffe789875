//! `godel bench template`: building a template from a small Dockerfile
//! (ENV, WORKDIR, two RUN, COPY) through a real `godel serve` child, cold
//! (a nonce in an `ENV` line makes every RUN and COPY key new) and cached
//! (the same Dockerfile again: no RUN runs), next to a baseline measured in
//! the same run: the same RUN commands as one `exec` in a plain sandbox.
//! Then a spawn from the template against a plain spawn.

use std::time::{Duration, Instant};

use godel_core::{Error, Result};
use http::Method;
use serde_json::{Value, json};

use crate::daemon::{Api, Daemon};
use crate::{LatencySummary, ms};

/// The RUN commands of the Dockerfile (also the baseline's script).
const RUN1: &str = "echo \"made by RUN\" > made-by-run && seq 1 2000 > numbers";
const RUN2: &str = "mkdir -p /usr/local/share/bench && cp numbers /usr/local/share/bench/";

fn dockerfile(nonce: &str) -> String {
    format!(
        "FROM host\nENV BENCH_NONCE={nonce}\nWORKDIR /opt/bench\nRUN {RUN1}\nCOPY hello.txt /opt/bench/\nRUN {RUN2}\n"
    )
}

/// How the run is made.
#[derive(Debug, Clone)]
pub struct TemplateOptions {
    /// The `godel` binary to run as `godel serve`.
    pub bin: std::path::PathBuf,
    pub iterations: usize,
}

/// The context as a tar (made with the system's `tar`).
fn context_tar(dir: &std::path::Path, dockerfile: &str) -> Result<bytes::Bytes> {
    std::fs::write(dir.join("Dockerfile"), dockerfile).map_err(|e| Error::io("write", &e))?;
    std::fs::write(dir.join("hello.txt"), "hello\n").map_err(|e| Error::io("write", &e))?;
    let out = std::process::Command::new("tar")
        .arg("-C")
        .arg(dir)
        .args(["-cf", "-", "."])
        .output()
        .map_err(|e| Error::io("run tar", &e))?;
    if !out.status.success() {
        return Err(Error::internal("tar failed"));
    }
    Ok(out.stdout.into())
}

async fn build(api: &mut Api, name: &str, tar: bytes::Bytes) -> Result<(Duration, Value)> {
    let t = Instant::now();
    let (s, body) = api
        .raw(
            Method::POST,
            &format!("/v1/templates?name={name}"),
            tar,
            "application/x-tar",
        )
        .await?;
    let d = t.elapsed();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !s.is_success() {
        return Err(Error::internal(format!("build failed ({s}): {v}")));
    }
    Ok((d, v))
}

async fn timed_spawn(api: &mut Api, spec: &Value) -> Result<Duration> {
    let t = Instant::now();
    let info = api.ok(Method::POST, "/v1/runtimes", Some(spec)).await?;
    let d = t.elapsed();
    let id = info["id"].as_str().unwrap_or_default().to_string();
    let _ = api
        .ok(Method::DELETE, &format!("/v1/runtimes/{id}"), None)
        .await;
    Ok(d)
}

/// Run the benchmark; the JSON report.
pub async fn run(o: &TemplateOptions, progress: &dyn Fn(&str)) -> Result<Value> {
    let scratch = tempfile::Builder::new()
        .prefix("godel-bench-template-")
        .tempdir()
        .map_err(|e| Error::io("create scratch dir", &e))?;
    progress("starting `godel serve` on a scratch home");
    let mut daemon = Daemon::start(&o.bin, &scratch.path().join("home"), "sandbox", &[]).await?;
    let r = measure(o, &daemon, scratch.path(), progress).await;
    if r.is_err() {
        eprintln!("{}", daemon.log_tail());
    }
    daemon.stop().await;
    r
}

async fn measure(
    o: &TemplateOptions,
    daemon: &Daemon,
    scratch: &std::path::Path,
    progress: &dyn Fn(&str),
) -> Result<Value> {
    let mut api = Api::new(&daemon.socket());
    let ctx = scratch.join("ctx");
    std::fs::create_dir_all(&ctx).map_err(|e| Error::io("mkdir", &e))?;
    let n = o.iterations.max(1);
    progress(&format!(
        "{n} cold builds, {n} cached builds, {n} baseline execs"
    ));
    let (mut cold, mut cached, mut base) = (Vec::new(), Vec::new(), Vec::new());
    let plain = json!({"runtime": "worktree", "isolation": "sandbox"});
    let info = api.ok(Method::POST, "/v1/runtimes", Some(&plain)).await?;
    let sb = info["id"].as_str().unwrap_or_default().to_string();
    let script = format!(
        "mkdir -p /tmp/b && cd /tmp/b && {RUN1} && mkdir -p /tmp/b2 && cp numbers /tmp/b2/"
    );
    for i in 0..n {
        let tar = context_tar(&ctx, &dockerfile(&format!("{i}-{}", std::process::id())))?;
        let (d, v) = build(&mut api, "bench", tar.clone()).await?;
        let ran = v["steps"]
            .as_array()
            .map(|s| s.iter().filter(|s| s["cached"] == false).count())
            .unwrap_or(0);
        if ran < 6 {
            return Err(Error::internal(format!(
                "a cold build took steps from the cache: {v}"
            )));
        }
        cold.push(d);
        let (d, v) = build(&mut api, "bench", tar).await?;
        let all_cached = v["steps"].as_array().is_some_and(|s| {
            s.iter()
                .filter(|s| {
                    s["instruction"]
                        .as_str()
                        .is_some_and(|i| i.starts_with("RUN"))
                })
                .all(|s| s["cached"] == true)
        });
        if !all_cached {
            return Err(Error::internal(format!("a cached build ran a step: {v}")));
        }
        cached.push(d);
        let t = Instant::now();
        let out = api
            .ok(
                Method::POST,
                &format!("/v1/runtimes/{sb}/exec"),
                Some(&json!({"cmd": ["sh", "-c", script]})),
            )
            .await?;
        base.push(t.elapsed());
        if out["exit_code"] != 0 {
            return Err(Error::internal(format!("baseline exec failed: {out}")));
        }
    }
    let _ = api
        .ok(Method::DELETE, &format!("/v1/runtimes/{sb}"), None)
        .await;
    progress(&format!("{n} spawns from the template, {n} plain spawns"));
    let (mut from_t, mut plain_s) = (Vec::new(), Vec::new());
    let tspec = json!({"runtime": "worktree", "isolation": "sandbox", "template": "bench"});
    for _ in 0..n {
        from_t.push(timed_spawn(&mut api, &tspec).await?);
        plain_s.push(timed_spawn(&mut api, &plain).await?);
    }
    let machine = crate::daemon::Machine::probe();
    let cold_s = LatencySummary::of(&cold);
    let cached_s = LatencySummary::of(&cached);
    Ok(json!({
        "benchmark": "template",
        "what": "POST /v1/templates of a 6-step Dockerfile (ENV, WORKDIR, 2 RUN, COPY) until it answers",
        "build_cold": cold_s,
        "build_cached": cached_s,
        "baseline_same_runs_as_one_exec": LatencySummary::of(&base),
        "spawn_from_template": LatencySummary::of(&from_t),
        "baseline_plain_spawn": LatencySummary::of(&plain_s),
        "cached_vs_cold_p50": if cold_s.p50_ms > 0.0 { cached_s.p50_ms / cold_s.p50_ms } else { 0.0 },
        "machine": machine,
        "mean_cold_ms": ms(cold.iter().sum::<Duration>() / n as u32),
    }))
}

/// The human-readable table.
pub fn print(v: &Value) {
    let row = |name: &str, s: &Value| {
        let s: LatencySummary = serde_json::from_value(s.clone()).unwrap_or_default();
        println!("{}", s.line(name));
    };
    row("build, cold (every RUN runs)", &v["build_cold"]);
    row("build, cached (no RUN runs)", &v["build_cached"]);
    row(
        "baseline: the RUNs as one exec",
        &v["baseline_same_runs_as_one_exec"],
    );
    row("spawn from the template", &v["spawn_from_template"]);
    row("baseline: plain spawn", &v["baseline_plain_spawn"]);
}
