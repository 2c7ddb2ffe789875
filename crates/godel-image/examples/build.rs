//! Build an image from the command line, the way `godel image build` does:
//!
//! `cargo run -p godel-image --example build -- [--name NAME] [--from-dir DIR] [--no-git] [--force] [--json]`
//!
//! Progress goes to stderr (JSON lines with `--json`); the `ImageInfo` is
//! printed to stdout as JSON.

use godel_image::{ImageOptions, Progress, build_image};

fn main() -> std::process::ExitCode {
    let mut opts = ImageOptions::default();
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--name" => opts.name = args.next(),
            "--from-dir" => opts.from_dir = args.next().map(Into::into),
            "--no-git" => opts.no_git = true,
            "--force" => opts.force = true,
            "--rebuild-guest" => opts.rebuild_guest = true,
            "--json" => json = true,
            other => {
                eprintln!("unknown argument {other}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let progress = move |p: Progress| {
        if json {
            eprintln!("{}", serde_json::to_string(&p).unwrap_or_default());
        } else {
            match (p.done, p.total) {
                (Some(d), Some(t)) => eprintln!("{:>16}  {} ({d}/{t} bytes)", p.step, p.message),
                _ => eprintln!("{:>16}  {}", p.step, p.message),
            }
        }
    };
    match build_image(opts, &progress) {
        Ok(info) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&info).unwrap_or_default()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(e.code.exit_code() as u8)
        }
    }
}
