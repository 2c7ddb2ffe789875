//! Prints the sandbox benchmark (`godel bench sandbox`) as JSON.
//! Usage: `cargo run --release -p godel-sandbox --example sandbox_bench -- [ITERATIONS]`
//! (needs root; finds `godel-sandbox-init` next to the example or via
//! `GODEL_SANDBOX_INIT_BIN`; with `GODEL_BENCH_SELF_EXE=1` it re-executes
//! itself as the init instead, the way the `godel` binary does).

#[tokio::main]
async fn main() {
    godel_sandbox::maybe_run_init();
    let iterations = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let mut opts = godel_sandbox::NamespaceOptions::default();
    if std::env::var_os("GODEL_BENCH_SELF_EXE").is_some() {
        opts.init = Some(godel_sandbox::InitProgram::SelfExe);
    }
    match godel_sandbox::bench::run_benchmark_with(opts, iterations).await {
        Ok(r) => match serde_json::to_string_pretty(&r) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("{e}"),
        },
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
