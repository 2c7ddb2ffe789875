//! `godel bench report`: the latest saved results ([`crate::results`])
//! rendered as `<out>/<name>.md` with SVG plots drawn by `plotters`:
//! latency percentiles of godel next to each baseline, the scale curve
//! (agents alive against time, and each spawn's latency), and the chaos
//! tally. Every number is shown next to its target, met or not.
//! `<out>/<name>-notes.md`, when present, is appended as the notes.

use std::path::{Path, PathBuf};

use godel_core::{Error, Result};
use plotters::prelude::*;
use serde_json::Value;

use crate::results;

const SUITES: [&str; 10] = [
    "spawn-worktree",
    "exec",
    "files",
    "api",
    "scale-worktree",
    "scale-microvm",
    "chaos",
    "chaos-short",
    "fuzz",
    "replicas",
];

fn f(v: &Value, p: &str) -> f64 {
    v.pointer(p).and_then(Value::as_f64).unwrap_or(0.0)
}

fn mib(b: f64) -> f64 {
    b / (1 << 20) as f64
}

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("plot: {e}"))
}

/// Write the report; the paths written.
pub fn write(home: &Path, out: &Path, name: &str) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(format!("create {}", out.display()), &e))?;
    let got: Vec<(&str, Value)> = SUITES
        .iter()
        .filter_map(|s| results::load(home, s).map(|v| (*s, v)))
        .collect();
    if got.is_empty() {
        return Err(Error::not_found(format!(
            "no benchmark results in {} (run godel bench exec|files|api|scale or godel chaos first)",
            results::dir(home).display()
        )));
    }
    let get = |s: &str| got.iter().find(|(n, _)| *n == s).map(|(_, v)| v);
    let mut written = Vec::new();
    let mut md = String::new();
    md.push_str(&format!("# godel benchmarks: {name}\n\n"));
    md.push_str("Rendered by `godel bench report` from the latest result of each suite.\n\n");
    md.push_str("## Machine\n\n| suite | finished (UTC) | cores | memory | CPU | load average (1/5/15 min) at the end | accelerator |\n|---|---|---|---|---|---|---|\n");
    for (s, v) in &got {
        let m = &v["machine"];
        md.push_str(&format!(
            "| {s} | {} | {} | {} GiB | {} | {} | {} |\n",
            v["finished_at"]
                .as_str()
                .unwrap_or("?")
                .get(..19)
                .unwrap_or("?"),
            m["cores"],
            m["memory_gib"],
            m["cpu_model"].as_str().unwrap_or("?"),
            m["load_avg"].as_str().unwrap_or("?"),
            m["accelerator"].as_str().unwrap_or("?"),
        ));
    }
    md.push_str("\nOther engineers were compiling on the same machine while these ran; the load averages above say how busy it was.\n\n");

    // Latency table and plot.
    md.push_str("## Latency (godel through the API, baseline in the same run)\n\n| suite | godel P50 / P95 / P99 ms | baseline P50 / P95 / P99 ms | baseline is | target | |\n|---|---|---|---|---|---|\n");
    let mut series: Vec<(String, [f64; 3], [f64; 3])> = Vec::new();
    for s in [
        "spawn-worktree",
        "exec",
        "files",
        "api",
        "scale-worktree",
        "scale-microvm",
    ] {
        let Some(v) = get(s) else { continue };
        let g = [f(v, "/p50_ms"), f(v, "/p95_ms"), f(v, "/p99_ms")];
        let b = [
            f(v, "/baseline/p50_ms"),
            f(v, "/baseline/p95_ms"),
            f(v, "/baseline/p99_ms"),
        ];
        let what = match s {
            "spawn-worktree" => format!(
                "spawn worktree, one at a time ({} files, isolation {})",
                v["files"],
                v["isolation"].as_str().unwrap_or("?")
            ),
            "files" => format!("files (write+read {} KiB)", f(v, "/size_bytes") / 1024.0),
            "api" => format!(
                "api mix at {} req/s, {} agents",
                v["load"]["rate_per_s"], v["agents"]
            ),
            s if s.starts_with("scale") => format!("{s} spawn, concurrent"),
            s => s.to_string(),
        };
        let (target, ok) = match s {
            "spawn-worktree" => ("P95 < 100 ms (phase gate; 10 ms goal)", Some(g[1] < 100.0)),
            "api" => ("P95 < 200 ms (phase gate)", Some(g[1] < 200.0)),
            _ => ("—", None),
        };
        md.push_str(&format!(
            "| {what} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} | {} | {target} | {} |\n",
            g[0],
            g[1],
            g[2],
            b[0],
            b[1],
            b[2],
            v["baseline_is"].as_str().unwrap_or(""),
            ok.map_or("", met)
        ));
        series.push((what, g, b));
    }
    if !series.is_empty() {
        let p = out.join(format!("{name}-latency.svg"));
        plot_latency(&p, &series)?;
        md.push_str(&format!("\n![latency percentiles]({name}-latency.svg)\n\n"));
        written.push(p);
    }
    if let Some(v) = get("files") {
        md.push_str(&format!(
            "Files: write {:.1} MiB/s, read {:.1} MiB/s through the API; host {:.1} / {:.1} MiB/s.\n\n",
            f(v, "/write_mib_s"),
            f(v, "/read_mib_s"),
            f(v, "/baseline_write_mib_s"),
            f(v, "/baseline_read_mib_s")
        ));
    }

    for rt in ["worktree", "microvm"] {
        let Some(v) = get(&format!("scale-{rt}")) else {
            continue;
        };
        scale_section(&mut md, v, rt);
        let p = out.join(format!("{name}-scale-{rt}.svg"));
        if plot_scale(&p, v, rt)? {
            md.push_str(&format!("![scale curve]({name}-scale-{rt}.svg)\n\n"));
            written.push(p);
        }
    }
    for s in ["chaos", "chaos-short"] {
        let Some(v) = get(s) else { continue };
        chaos_section(&mut md, v, s);
        let p = out.join(format!("{name}-{s}.svg"));
        plot_chaos(&p, v)?;
        md.push_str(&format!("![chaos tally]({name}-{s}.svg)\n\n"));
        written.push(p);
    }
    if let Some(v) = get("replicas") {
        replicas_section(&mut md, v);
    }
    if let Some(v) = get("fuzz") {
        md.push_str(
            "## Fuzzing\n\n| target | seconds | executions | crashes |\n|---|---|---|---|\n",
        );
        for t in v["targets"].as_array().into_iter().flatten() {
            md.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                t["name"].as_str().unwrap_or("?"),
                t["secs"],
                t["execs"],
                t["crashes"]
            ));
        }
        md.push('\n');
    }
    // Notes by whoever ran the suites (earlier runs, why a number is what
    // it is), kept beside the report and appended as they are.
    let notes = out.join(format!("{name}-notes.md"));
    if let Ok(text) = std::fs::read_to_string(&notes) {
        md.push_str("## Notes\n\n");
        md.push_str(text.trim());
        md.push('\n');
    }
    let p = out.join(format!("{name}.md"));
    std::fs::write(&p, md).map_err(|e| Error::io(format!("write {}", p.display()), &e))?;
    written.insert(0, p);
    Ok(written)
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

fn scale_section(md: &mut String, v: &Value, rt: &str) {
    let agents = f(v, "/agents");
    let spawned = f(v, "/spawned");
    let p95 = f(v, "/load/all/p95_ms");
    let rss = mib(f(v, "/daemon/rss_peak_bytes"));
    let errors = f(v, "/spawn_errors") + f(v, "/load/errors") + f(v, "/exec_errors");
    md.push_str(&format!("## Scale: {agents} {rt} agents\n\n"));
    md.push_str("| figure | value | target | |\n|---|---|---|---|\n");
    let rows: Vec<(String, String, String, &str)> = vec![
        (
            "agents alive at once (spawned / listed running)".into(),
            format!("{spawned} / {}", v["live_listed"]),
            if rt == "worktree" {
                "1000".into()
            } else {
                "200".into()
            },
            met(spawned >= agents && f(v, "/live_listed") >= agents),
        ),
        (
            format!("time to spawn all ({} at once)", v["concurrency"]),
            format!("{:.1} s", f(v, "/spawn_total_ms") / 1000.0),
            "—".into(),
            "",
        ),
        (
            "spawn P50 / P95 / P99 (concurrent)".into(),
            format!(
                "{:.1} / {:.1} / {:.1} ms",
                f(v, "/p50_ms"),
                f(v, "/p95_ms"),
                f(v, "/p99_ms")
            ),
            "—".into(),
            "",
        ),
        (
            "baseline: host fork+exec P50 / P95 / P99".into(),
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                f(v, "/baseline/p50_ms"),
                f(v, "/baseline/p95_ms"),
                f(v, "/baseline/p99_ms")
            ),
            "—".into(),
            "",
        ),
        (
            format!(
                "API P50 / P95 / P99 at {} req/s mixed, all alive",
                v["load"]["rate_per_s"]
            ),
            format!(
                "{:.1} / {:.1} / {:.1} ms (achieved {:.0} req/s)",
                f(v, "/load/all/p50_ms"),
                p95,
                f(v, "/load/all/p99_ms"),
                f(v, "/load/achieved_per_s")
            ),
            "P95 < 50 ms".into(),
            met(p95 < 50.0),
        ),
        (
            "  of which list / status / exec P95".into(),
            format!(
                "{:.1} / {:.1} / {:.1} ms",
                f(v, "/load/list/p95_ms"),
                f(v, "/load/status/p95_ms"),
                f(v, "/load/exec/p95_ms")
            ),
            "—".into(),
            "",
        ),
        (
            "  baseline GET /v1/health P50 / P95 (same load)".into(),
            format!(
                "{:.1} / {:.1} ms",
                f(v, "/load/baseline/p50_ms"),
                f(v, "/load/baseline/p95_ms")
            ),
            "—".into(),
            "",
        ),
        (
            "errors (spawn + API + exec in all)".into(),
            format!("{errors}"),
            "0".into(),
            met(errors == 0.0),
        ),
        (
            "exec in every agent".into(),
            format!(
                "{} ok in {:.1} s",
                v["exec_ok"],
                f(v, "/exec_all_ms") / 1000.0
            ),
            "all".into(),
            met(f(v, "/exec_ok") >= spawned && spawned > 0.0),
        ),
        (
            "daemon RSS: start / all alive / peak".into(),
            format!(
                "{:.1} / {:.1} / {rss:.1} MiB",
                mib(f(v, "/daemon/rss_start_bytes")),
                mib(f(v, "/daemon/rss_all_live_bytes"))
            ),
            "< 300 MiB".into(),
            met(rss < 300.0),
        ),
        (
            "daemon CPU: spawning / under load / idle".into(),
            format!(
                "{:.2} / {:.2} / {:.3} cores",
                f(v, "/daemon/cpu_spawn_cores"),
                f(v, "/daemon/cpu_load_cores"),
                f(v, "/daemon/cpu_idle_cores")
            ),
            "—".into(),
            "",
        ),
        (
            "per agent: host memory / daemon RSS".into(),
            format!(
                "{:.2} MiB / {:.1} KiB",
                mib(f(v, "/host_memory_per_agent_bytes")),
                f(v, "/daemon_rss_per_agent_bytes") / 1024.0
            ),
            "—".into(),
            "",
        ),
        (
            "daemon open fds with all alive".into(),
            format!("{}", v["daemon"]["fds_all_live"]),
            "—".into(),
            "",
        ),
        (
            "terminate all".into(),
            format!(
                "{:.1} s, {} errors",
                f(v, "/terminate_all_ms") / 1000.0,
                v["terminate_errors"]
            ),
            "—".into(),
            "",
        ),
    ];
    for (a, b, c, d) in rows {
        md.push_str(&format!("| {a} | {b} | {c} | {d} |\n"));
    }
    if rt == "microvm" {
        md.push_str(&format!(
            "| VMMs' total PSS | {:.0} MiB | — | |\n",
            mib(f(v, "/vmm_pss_total_bytes"))
        ));
    }
    if let Some(e) = v["spawn_error_samples"]
        .as_array()
        .filter(|a| !a.is_empty())
    {
        md.push_str(&format!(
            "\nFirst spawn errors: {}\n",
            Value::Array(e.clone())
        ));
    }
    md.push('\n');
}

fn chaos_section(md: &mut String, v: &Value, s: &str) {
    md.push_str(&format!(
        "## Chaos (`godel chaos{}`), {:.0} s, $GODEL_HOME {}\n\n| fault | result | what happened |\n|---|---|---|\n",
        if s == "chaos-short" { " --short" } else { "" },
        f(v, "/secs"),
        v["home_limit"].as_str().unwrap_or("")
    ));
    for fault in v["faults"].as_array().into_iter().flatten() {
        let res = if let Some(sk) = fault["skipped"].as_str() {
            format!("skipped: {sk}")
        } else if fault["failures"].as_array().is_some_and(|a| !a.is_empty()) {
            format!("**failed**: {}", fault["failures"])
        } else {
            "ok".into()
        };
        md.push_str(&format!(
            "| {} | {res} | {} |\n",
            fault["name"].as_str().unwrap_or("?"),
            fault["detail"].as_str().unwrap_or("").replace('|', "/")
        ));
    }
    md.push_str(&format!(
        "\nTally: {} agents: {} running, {} restarted, {} lost with a reason, **{} unaccounted**; {} orphan processes; snapshots {} listed, {} restored, {} failed; store: {}; API load during the faults: {} requests, {} errors (expected while the daemon is down).\n\n",
        v["agents"],
        v["running"],
        v["restarted"],
        v["lost_with_reason"],
        v["unaccounted"],
        v["orphans"].as_array().map_or(0, Vec::len),
        v["snapshots_listed"],
        v["snapshots_restored"],
        v["snapshot_failures"].as_array().map_or(0, Vec::len),
        v["store_integrity"].as_str().unwrap_or("?"),
        v["load_requests"],
        v["load_errors"]
    ));
}

fn plot_latency(p: &Path, series: &[(String, [f64; 3], [f64; 3])]) -> Result<()> {
    let root = SVGBackend::new(p, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let max = series
        .iter()
        .flat_map(|(_, g, b)| g.iter().chain(b.iter()))
        .fold(0.01f64, |a, b| a.max(*b));
    let min = series
        .iter()
        .flat_map(|(_, g, b)| g.iter().chain(b.iter()))
        .filter(|v| **v > 0.0)
        .fold(max, |a, b| a.min(*b));
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Latency percentiles: godel (solid) vs baseline (dashed), ms, log scale",
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .right_y_label_area_size(0)
        .build_cartesian_2d(
            45f64..100f64,
            ((min / 2.0).max(0.001)..max * 2.0).log_scale(),
        )
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("ms")
        .draw()
        .map_err(plot_err)?;
    let xs = [50.0, 95.0, 99.0];
    for (i, (name, g, b)) in series.iter().enumerate() {
        let c = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                xs.iter().zip(g).map(|(x, y)| (*x, y.max(0.001))),
                c.stroke_width(3),
            ))
            .map_err(plot_err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
        chart
            .draw_series(
                xs.iter()
                    .zip(g)
                    .map(|(x, y)| Circle::new((*x, y.max(0.001)), 4, c.filled())),
            )
            .map_err(plot_err)?;
        chart
            .draw_series(DashedLineSeries::new(
                xs.iter().zip(b).map(|(x, y)| (*x, y.max(0.001))),
                6,
                4,
                c.stroke_width(1),
            ))
            .map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)
}

fn plot_scale(p: &Path, v: &Value, rt: &str) -> Result<bool> {
    let pts: Vec<(f64, f64, f64)> = v["curve"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| (f(c, "/live"), f(c, "/at_ms") / 1000.0, f(c, "/spawn_ms")))
        .collect();
    if pts.is_empty() {
        return Ok(false);
    }
    let root = SVGBackend::new(p, (900, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (top, bottom) = root.split_vertically(350);
    let n = pts.iter().map(|p| p.0).fold(1.0, f64::max);
    let tmax = pts.iter().map(|p| p.1).fold(0.1, f64::max);
    let lmax = pts.iter().map(|p| p.2).fold(1.0, f64::max);
    let mut c1 = ChartBuilder::on(&top)
        .caption(
            format!("{rt}: agents alive vs time since the first spawn"),
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..tmax * 1.05, 0f64..n * 1.05)
        .map_err(plot_err)?;
    c1.configure_mesh()
        .x_desc("seconds")
        .y_desc("agents alive")
        .draw()
        .map_err(plot_err)?;
    c1.draw_series(LineSeries::new(
        pts.iter().map(|p| (p.1, p.0)),
        BLUE.stroke_width(2),
    ))
    .map_err(plot_err)?;
    let mut c2 = ChartBuilder::on(&bottom)
        .caption(
            "each spawn's latency vs agents already alive",
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..n * 1.05, 0f64..lmax * 1.05)
        .map_err(plot_err)?;
    c2.configure_mesh()
        .x_desc("agents alive")
        .y_desc("spawn ms")
        .draw()
        .map_err(plot_err)?;
    c2.draw_series(
        pts.iter()
            .map(|p| Circle::new((p.0, p.2), 2, RED.mix(0.5).filled())),
    )
    .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(true)
}

fn plot_chaos(p: &Path, v: &Value) -> Result<()> {
    let bars: Vec<(&str, f64, RGBColor)> = vec![
        ("running", f(v, "/running"), GREEN),
        ("restarted", f(v, "/restarted"), BLUE),
        (
            "lost (reason)",
            f(v, "/lost_with_reason"),
            RGBColor(200, 150, 0),
        ),
        ("unaccounted", f(v, "/unaccounted"), RED),
        (
            "orphans",
            v["orphans"].as_array().map_or(0, Vec::len) as f64,
            RED,
        ),
        ("snaps restored", f(v, "/snapshots_restored"), GREEN),
        (
            "snap failures",
            v["snapshot_failures"].as_array().map_or(0, Vec::len) as f64,
            RED,
        ),
    ];
    let root = SVGBackend::new(p, (900, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let ymax = bars.iter().map(|b| b.1).fold(1.0, f64::max) * 1.15;
    let labels: Vec<String> = bars.iter().map(|b| b.0.to_string()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption("chaos tally", ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(45)
        .build_cartesian_2d(0f64..bars.len() as f64, 0f64..ymax)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.01 {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("count")
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            Rectangle::new(
                [(i as f64 + 0.15, 0.0), (i as f64 + 0.85, b.1)],
                b.2.filled(),
            )
        }))
        .map_err(plot_err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            Text::new(
                format!("{}", b.1),
                (i as f64 + 0.4, b.1 + ymax * 0.02),
                ("sans-serif", 14),
            )
        }))
        .map_err(plot_err)?;
    root.present().map_err(plot_err)
}

/// `godel bench replicas`: owner vs forwarded latency and take-over times.
fn replicas_section(md: &mut String, v: &Value) {
    md.push_str(&format!(
        "## Replicas over PostgreSQL\n\n{} replicas, runtime {}, {} samples per path, lease {} s ({} build). Spawn through the owner: P50 {:.2} / P95 {:.2} / P99 {:.2} ms.\n\n| path | owner P50 / P95 / P99 ms | forwarded P50 / P95 / P99 ms | added at P50 |\n|---|---|---|---|\n",
        v["replicas"],
        v["runtime"].as_str().unwrap_or("?"),
        v["samples"],
        v["lease_secs"],
        v["build"].as_str().unwrap_or("?"),
        f(v, "/spawn_owner/p50_ms"),
        f(v, "/spawn_owner/p95_ms"),
        f(v, "/spawn_owner/p99_ms"),
    ));
    for p in v["paths"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} | {:+.2} ms |\n",
            p["path"].as_str().unwrap_or("?"),
            f(p, "/owner/p50_ms"),
            f(p, "/owner/p95_ms"),
            f(p, "/owner/p99_ms"),
            f(p, "/forwarded/p50_ms"),
            f(p, "/forwarded/p95_ms"),
            f(p, "/forwarded/p99_ms"),
            f(p, "/added_p50_ms"),
        ));
    }
    md.push_str("\n| take-over round | lease ran out ms | first exec OK ms | adoption ms |\n|---|---|---|---|\n");
    for r in v["takeover"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} |\n",
            r["round"],
            f(r, "/lease_ran_out_ms"),
            f(r, "/exec_ok_ms"),
            f(r, "/adopt_ms"),
        ));
    }
    md.push('\n');
}
