//! `godel bench spawn|sandbox|microvm|kube|usage|ports|replicas`: the command-line side of the
//! benchmarks in godel-bench (cargo feature `bench`, on by default; a build
//! without it says so instead of running them).

use godel_core::Result;

use crate::Ctx;
use crate::cli::BenchCmd;

#[cfg(not(feature = "bench"))]
pub async fn run(_ctx: &Ctx, _cmd: BenchCmd) -> Result<i32> {
    Err(godel_core::Error::unavailable(
        "this godel was built without the `bench` feature (no benchmarks, no fake Kubernetes API server); rebuild with default features",
    ))
}

#[cfg(feature = "bench")]
pub async fn run(ctx: &Ctx, cmd: BenchCmd) -> Result<i32> {
    use std::path::Path;

    use crate::client::Client;
    use crate::runtimes::{RuntimeOptions, register_all};

    let progress = |msg: &str| {
        if !ctx.json {
            eprintln!("… {msg}");
        }
    };
    match cmd {
        c @ (BenchCmd::Exec(_)
        | BenchCmd::Files(_)
        | BenchCmd::Api(_)
        | BenchCmd::Scale(_)
        | BenchCmd::Report(_)) => return super::suites::run(ctx, c).await,
        BenchCmd::Spawn(a) => {
            let opts = godel_bench::spawn::SpawnOptions {
                runtime: a.runtime,
                files: a.files,
                iterations: a.iterations,
                execs: a.execs,
                baseline: a.baseline,
                isolation: a.isolation,
                workspace: a.workspace,
                forks: a.forks,
            };
            let register = async |control: &_, home: &Path, isolation, sink| {
                let opts = RuntimeOptions {
                    isolation,
                    ..Default::default()
                };
                register_all(control, home, &opts, sink).await
            };
            let api = async |sock: &Path, method, path: &str, body: Option<serde_json::Value>| {
                let client = Client::new(None, None, sock.to_path_buf())?;
                client.json(method, path, body.as_ref()).await
            };
            let r = godel_bench::spawn::run(&opts, register, api, &progress).await?;
            r.print(ctx.json);
            let saved = godel_bench::results::save(&ctx.home, "spawn-worktree", &r.to_json())?;
            progress(&format!("saved {}", saved.display()));
        }
        BenchCmd::Sandbox { iterations } => {
            progress(&format!(
                "{iterations} iterations: sandbox vs bwrap vs no isolation"
            ));
            crate::output::json(&godel_bench::sandbox::run_benchmark(iterations).await?);
        }
        BenchCmd::Microvm {
            samples,
            forks,
            idle,
        } => {
            let mut o = godel_bench::microvm::BenchOptions::new(&ctx.home);
            o.samples = samples;
            o.forks = forks;
            o.idle_target = idle;
            let json = ctx.json;
            let log = move |m: &str| {
                if !json {
                    eprintln!("… {m}");
                }
            };
            godel_bench::microvm::run_benchmark(o, &log)
                .await?
                .print(json);
        }
        BenchCmd::Usage {
            agents,
            days,
            iterations,
        } => {
            progress(&format!(
                "{agents} agents × {days} days of usage, {iterations} queries per case"
            ));
            let api = async |sock: &Path, path: &str| {
                let client = Client::new(None, None, sock.to_path_buf())?;
                client.json(http::Method::GET, path, None::<&()>).await
            };
            let r = godel_bench::usage::run(agents, days, iterations, api).await?;
            if ctx.json {
                crate::output::json(&r);
            } else {
                println!("{} rows seeded in {:.0} ms", r.rows, r.seed_ms);
                for (name, s) in &r.cases {
                    println!("{}", s.line(name));
                }
            }
        }
        BenchCmd::Ports { iterations } => {
            let bin = std::env::current_exe().map_err(|e| godel_core::Error::io("own path", &e))?;
            let o = godel_bench::ports::PortsOptions { bin, iterations };
            let r = godel_bench::ports::run(&o, &progress).await?;
            if ctx.json {
                crate::output::json(&r);
            } else {
                godel_bench::ports::print(&r);
            }
        }
        BenchCmd::Template { iterations } => {
            let bin = std::env::current_exe().map_err(|e| godel_core::Error::io("own path", &e))?;
            let o = godel_bench::template::TemplateOptions { bin, iterations };
            let r = godel_bench::template::run(&o, &progress).await?;
            if ctx.json {
                crate::output::json(&r);
            } else {
                godel_bench::template::print(&r);
            }
        }
        BenchCmd::Replicas(a) => {
            let env = std::env::var("GODEL_TEST_POSTGRES_URL").ok();
            let database =
                godel_bench::replicas_report::database_url(a.database.as_deref(), env.as_deref())?;
            if !(a.lease_secs > 0.0 && a.lease_secs.is_finite()) {
                return Err(godel_core::Error::invalid(
                    "--lease-secs must be a positive number of seconds",
                ));
            }
            let o = godel_bench::replicas::ReplicasOptions {
                bin: std::env::current_exe().map_err(|e| godel_core::Error::io("own path", &e))?,
                samples: a.samples,
                database,
                lease_secs: a.lease_secs,
                rounds: a.rounds,
                isolation: a.isolation,
                build: if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                }
                .into(),
            };
            let r = godel_bench::replicas::run(&o, &progress).await?;
            let v =
                serde_json::to_value(&r).map_err(|e| godel_core::Error::internal(e.to_string()))?;
            let saved = godel_bench::results::save(&ctx.home, "replicas", &v)?;
            if ctx.json {
                crate::output::json(&v);
            } else {
                r.print();
            }
            progress(&format!("saved {}", saved.display()));
            return Ok(if r.ok() { 0 } else { 1 });
        }
        BenchCmd::Kube { pods, concurrency } => {
            progress(&format!(
                "{pods} pods, {concurrency} at once, against the in-repo fake API server (measures godel's own overhead)"
            ));
            let r = godel_bench::kube::run_benchmark(pods, concurrency).await?;
            crate::output::json(&r);
        }
    }
    Ok(0)
}
