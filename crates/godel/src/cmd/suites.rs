//! `godel bench exec|files|api|scale|report` and `godel chaos`: the suites
//! that start their own `godel serve` (this binary) on a scratch home. Each
//! prints a summary (or `--json`) and saves its JSON as the latest result
//! for `godel bench report`.

use godel_core::Result;

use crate::Ctx;
use crate::cli::{BenchCmd, ChaosArgs};

#[cfg(not(feature = "bench"))]
pub async fn run(_ctx: &Ctx, _cmd: BenchCmd) -> Result<i32> {
    Err(godel_core::Error::unavailable(
        "this godel was built without the `bench` feature; rebuild with default features",
    ))
}

#[cfg(not(feature = "bench"))]
pub async fn chaos(_ctx: &Ctx, _a: ChaosArgs) -> Result<i32> {
    Err(godel_core::Error::unavailable(
        "this godel was built without the `bench` feature; rebuild with default features",
    ))
}

#[cfg(feature = "bench")]
fn this_binary() -> Result<std::path::PathBuf> {
    std::env::current_exe().map_err(|e| godel_core::Error::io("find this binary", &e))
}

#[cfg(feature = "bench")]
fn daemon_opts(a: &crate::cli::BenchDaemonArgs) -> Result<godel_bench::load::DaemonOptions> {
    Ok(godel_bench::load::DaemonOptions {
        bin: this_binary()?,
        isolation: a.isolation.clone(),
        files: a.files,
        serve_args: Vec::new(),
    })
}

#[cfg(feature = "bench")]
fn emit(ctx: &Ctx, suite: &str, v: &serde_json::Value, text: impl FnOnce()) -> Result<()> {
    let saved = godel_bench::results::save(&ctx.home, suite, v)?;
    if ctx.json {
        crate::output::json(v);
    } else {
        text();
        eprintln!("… saved {}", saved.display());
    }
    Ok(())
}

#[cfg(feature = "bench")]
fn summary_text(v: &serde_json::Value) {
    let g: godel_bench::LatencySummary =
        serde_json::from_value(v["godel"].clone()).unwrap_or_default();
    let b: godel_bench::LatencySummary =
        serde_json::from_value(v["baseline"].clone()).unwrap_or_default();
    println!("godel bench {}", v["bench"].as_str().unwrap_or(""));
    println!("{}", g.line("godel (through the API)"));
    println!(
        "{}",
        b.line(&format!(
            "baseline: {}",
            v["baseline_is"].as_str().unwrap_or("")
        ))
    );
}

#[cfg(feature = "bench")]
pub async fn run(ctx: &Ctx, cmd: BenchCmd) -> Result<i32> {
    let json = ctx.json;
    let progress = move |m: &str| {
        if !json {
            eprintln!("… {m}");
        }
    };
    match cmd {
        BenchCmd::Exec(a) => {
            let v =
                godel_bench::load::exec(&daemon_opts(&a.daemon)?, a.iterations, &progress).await?;
            emit(ctx, "exec", &v, || summary_text(&v))?;
        }
        BenchCmd::Files(a) => {
            let v =
                godel_bench::load::files(&daemon_opts(&a.daemon)?, a.iterations, a.size, &progress)
                    .await?;
            emit(ctx, "files", &v, || {
                summary_text(&v);
                println!(
                    "write {:.1} MiB/s, read {:.1} MiB/s (host: {:.1} / {:.1})",
                    v["write_mib_s"].as_f64().unwrap_or(0.0),
                    v["read_mib_s"].as_f64().unwrap_or(0.0),
                    v["baseline_write_mib_s"].as_f64().unwrap_or(0.0),
                    v["baseline_read_mib_s"].as_f64().unwrap_or(0.0)
                );
            })?;
        }
        BenchCmd::Api(a) => {
            let v = godel_bench::load::api(
                &daemon_opts(&a.daemon)?,
                a.agents,
                a.rate,
                a.secs,
                &progress,
            )
            .await?;
            emit(ctx, "api", &v, || {
                summary_text(&v);
                println!(
                    "errors {} of {}; daemon RSS {:.1} MiB",
                    v["load"]["errors"],
                    v["load"]["sent"],
                    v["daemon_rss_bytes"].as_f64().unwrap_or(0.0) / 1048576.0
                );
            })?;
        }
        BenchCmd::Scale(a) => {
            let o = godel_bench::scale::ScaleOptions {
                daemon: daemon_opts(&a.daemon)?,
                runtime: a.runtime,
                agents: a.agents,
                concurrency: a.concurrency,
                rate: a.rate,
                load_secs: a.secs,
                spawn_timeout: std::time::Duration::from_secs(a.spawn_timeout),
                images: a.images,
            };
            let r = godel_bench::scale::run(&o, &progress).await?;
            let v =
                serde_json::to_value(&r).map_err(|e| godel_core::Error::internal(e.to_string()))?;
            emit(ctx, &format!("scale-{}", r.runtime), &v, || r.print())?;
        }
        BenchCmd::Report(a) => {
            let written = godel_bench::report::write(&ctx.home, &a.out, &a.name)?;
            for p in written {
                println!("{}", p.display());
            }
        }
        _ => unreachable!("handled in cmd::bench"),
    }
    Ok(0)
}

#[cfg(feature = "bench")]
pub async fn chaos(ctx: &Ctx, a: ChaosArgs) -> Result<i32> {
    let json = ctx.json;
    let progress = move |m: &str| {
        if !json {
            eprintln!("… {m}");
        }
    };
    let o = godel_bench::chaos::ChaosOptions {
        bin: this_binary()?,
        short: a.short,
        agents: a.agents.unwrap_or(if a.short { 12 } else { 60 }),
        isolation: a.isolation,
        images: a.images,
    };
    let tally = godel_bench::chaos::run(&o, &progress).await?;
    let v = serde_json::to_value(&tally).map_err(|e| godel_core::Error::internal(e.to_string()))?;
    emit(
        ctx,
        if a.short { "chaos-short" } else { "chaos" },
        &v,
        || tally.print(),
    )?;
    Ok(if tally.ok() { 0 } else { 1 })
}
