//! Prints the sandbox benchmark (`godel bench sandbox`) as JSON.
//! Usage: `cargo run --release -p godel-sandbox --example sandbox_bench -- [ITERATIONS]`
//! (needs root; finds `godel-sandbox-init` next to the example or via
//! `GODEL_SANDBOX_INIT_BIN`).

#[tokio::main]
async fn main() {
    godel_sandbox::maybe_run_init();
    let iterations = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    match godel_sandbox::run_benchmark(iterations).await {
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
