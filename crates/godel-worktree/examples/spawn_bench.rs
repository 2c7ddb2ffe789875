//! Provider-level benchmark of the worktree runtime: generates a repository
//! of N files (default 10,000) and prints P50/P95/P99 of spawn+terminate in
//! `cow` and `git-worktree` modes and of an exec round trip of `true`.
//!
//! `cargo run --release -p godel-worktree --example spawn_bench -- [files] [cow iterations] [git-worktree iterations] [execs]`
//! (needs root for overlay mounts).

use godel_worktree::bench::{BenchOptions, run};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let files = args.next().transpose()?.unwrap_or(10_000);
    let iterations = args.next().transpose()?.unwrap_or(50);
    let worktree_iterations = args.next().transpose()?.unwrap_or(10);
    let execs = args.next().transpose()?.unwrap_or(200);
    let tmp = tempfile::tempdir()?;
    let opts = BenchOptions {
        home: tmp.path().to_path_buf(),
        files,
        iterations,
        worktree_iterations,
        execs,
    };
    let r = run(&opts).await?;
    println!(
        "repository: {} files, generated in {:.0} ms",
        r.files, r.generate_ms
    );
    println!(
        "cow first spawn+terminate (import + shared checkout): {:.1} ms",
        r.cow_first_spawn_ms
    );
    println!("cow spawn+terminate:          {}", r.cow);
    println!("  of which spawn:             {}", r.cow_spawn);
    println!("git-worktree spawn+terminate: {}", r.git_worktree);
    println!("  of which spawn:             {}", r.git_worktree_spawn);
    println!("exec `true` round trip:       {}", r.exec_true);
    println!(
        "snapshot (1 changed file): {:.1} ms; restore: first {:.1} ms (builds its checkout), then {:.1} ms",
        r.snapshot_ms, r.restore_first_ms, r.restore_ms
    );
    Ok(())
}
