//! `cargo run -p godel-kube --example kube_bench --release -- [PODS] [CONCURRENCY]`:
//! spawn and exec latency of the kata provider against the fake API server
//! (godel's own overhead; see `godel_kube::bench`). Prints a table and the
//! JSON report.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let pods: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let concurrency: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(pods);
    let r = godel_kube::bench::run_benchmark(pods, concurrency).await?;
    println!(
        "godel kube bench: {} pods, {} concurrent spawns",
        r.pods, r.concurrency
    );
    println!("{}", r.definition);
    println!(
        "{:<28} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "metric (ms)", "p50", "p95", "p99", "max", "n"
    );
    for (name, p) in [
        ("spawn added by godel", &r.spawn_added),
        ("spawn total", &r.spawn_total),
        ("pod create round trip", &r.create_round_trip),
        ("fake server create", &r.server_create),
        ("exec `true` round trip", &r.exec),
    ] {
        println!(
            "{name:<28} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8}",
            p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms, p.count
        );
    }
    println!(
        "errors: {}  wall: {:.2} s  spawns/s: {:.0}",
        r.errors, r.wall_seconds, r.spawns_per_second
    );
    for e in &r.error_samples {
        println!("  error: {e}");
    }
    println!("{}", serde_json::to_string_pretty(&r)?);
    Ok(())
}
