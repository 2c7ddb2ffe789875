//! `cargo run --release -p godel-microvm --example microvm_bench -- [--samples N]
//! [--idle N] [--forks N] [--no-baseline] [--json]`
//!
//! Runs [`godel_microvm::run_benchmark`] against `$GODEL_HOME` (default
//! `~/.godel`), which must hold a built image (`godel image build`), and
//! prints every number with its target. `RUST_LOG=godel_microvm=debug`
//! shows per-restore phase timings.

use godel_microvm::{BenchOptions, run_benchmark};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut opts = BenchOptions::new(godel_image::godel_home());
    let mut json = false;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match a.as_str() {
            "--samples" => opts.samples = num("--samples"),
            "--idle" => opts.idle_target = num("--idle"),
            "--forks" => opts.forks = num("--forks"),
            "--no-baseline" => opts.baseline = false,
            "--json" => json = true,
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let report = match run_benchmark(opts, &|line| eprintln!("{line}")).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
        return;
    }
    println!("accelerator: {} ({})", report.accel, report.accel_reason);
    println!(
        "qemu {}, image {}, guest {} MiB",
        report.qemu_version, report.image, report.memory_mib
    );
    let row = |name: &str, s: &godel_microvm::bench::Stat| {
        println!(
            "{name:<28} p50 {:>8.1} ms  p95 {:>8.1} ms  (n={}, min {:.1}, max {:.1})",
            s.p50_ms, s.p95_ms, s.n, s.min_ms, s.max_ms
        )
    };
    row("cold boot to ready", &report.cold_boot);
    if let Some(b) = &report.baseline_boot {
        row("baseline plain QEMU boot", b);
    }
    row("restore to ready", &report.restore);
    row("warm-pool claim", &report.warm_claim);
    row("exec round trip", &report.exec_rtt);
    println!(
        "file write {:.1} MiB/s, read {:.1} MiB/s",
        report.file_write_mib_s, report.file_read_mib_s
    );
    println!(
        "snapshot {:.0} ms, {} bytes",
        report.snapshot_ms, report.snapshot_bytes
    );
    println!(
        "{} forks ready in {:.0} ms",
        report.forks, report.forks_ready_ms
    );
    println!(
        "idle fork PSS {:.1} MiB (RSS {:.1} MiB)",
        report.idle_fork_pss_mib, report.idle_fork_rss_mib
    );
    if let Some(d) = &report.density {
        println!(
            "idle density: {} of {} started VMs answered exec ({:.0} ms for all); idle CPU {:.0}% of one core; \
             PSS total {:.0} MiB; host MemAvailable drop {:.0} MiB{}",
            d.reached,
            d.started,
            d.exec_all_ms,
            d.idle_cpu_percent,
            d.total_pss_mib,
            d.host_mem_available_drop_mib,
            d.stopped_because
                .as_ref()
                .map(|s| format!("; stopped: {s}"))
                .unwrap_or_default()
        );
    }
    println!("baseline: {}", report.baseline);
    for t in &report.targets {
        println!(
            "[{}] {}: {} (target {})",
            if t.met { "met" } else { "MISSED" },
            t.metric,
            t.value,
            t.target
        );
    }
}
