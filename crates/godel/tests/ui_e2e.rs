//! The web dashboard end to end: a real `godel serve` on TCP and Debian's
//! headless Chromium driven by playwright-core (`tests/ui/e2e.cjs`). It logs
//! in (a bad token first), sees an agent spawned through the CLI appear
//! live, opens it (commands with exit codes, state history, usage charts),
//! takes a snapshot and restores it from the page, sees the teams page's
//! quota bars and budget chart with its 80 % and 100 % lines, and the
//! benchmarks page without and with a saved result (`tests/ui/bench-fixture.json`,
//! shaped like `godel bench spawn --json`). Screenshots of every page go to
//! `target/ui-screenshots/`. The measured appearance delay is printed.
//!
//! Needs `chromium`, `node` and playwright-core (scripts/setup.d/50-ui.sh
//! installs them); skipped visibly without them, a failure in CI
//! (`GODEL_REQUIRE` lists `chromium` there).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{BIN, Daemon, make_repo};
use godel_testkit::skip::{Need, on_path};

const CONFIG: &str = r#"
[metering]
flush_secs = 1
[prices.worktree]
vcpu_second = 0.01
gib_second = 0.01
"#;

/// Where scripts/setup.d/50-ui.sh installs playwright-core.
fn playwright_core() -> PathBuf {
    let cache = std::env::var_os("GODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/godel")
        });
    cache.join("ui-test/node_modules/playwright-core")
}

#[test]
fn dashboard_in_headless_chromium() {
    let pw = playwright_core();
    godel_testkit::require!(Need::Other {
        key: "chromium",
        met: std::path::Path::new("/usr/bin/chromium").exists()
            && on_path("node")
            && pw.join("package.json").exists(),
        what: "/usr/bin/chromium, node and playwright-core",
        how: "run scripts/setup.d/50-ui.sh (apt-get install chromium; npm install playwright-core)",
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("godel.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let d = Daemon::start_tcp(&["--config", cfg.to_str().unwrap()]);
    let repo = make_repo(dir.path());
    let token = d.last_line(&["token", "create", "--admin"]);
    d.ok(&[
        "team",
        "create",
        "alpha",
        "--max-agents",
        "10",
        "--max-memory",
        "64G",
    ]);
    d.ok(&["budget", "set", "--team", "alpha", "--limit", "1"]);

    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shots = here.join("../../target/ui-screenshots");
    let out = Command::new("node")
        .arg(here.join("tests/ui/e2e.cjs"))
        .env(
            "GODEL_UI_URL",
            format!("http://{}", d.tcp.as_ref().unwrap()),
        )
        .env("GODEL_UI_TOKEN", &token)
        .env("GODEL_BIN", BIN)
        .env("GODEL_HOME", d.home())
        .env("GODEL_UI_REPO", &repo)
        .env("GODEL_UI_SHOTS", &shots)
        .env(
            "GODEL_UI_BENCH_FIXTURE",
            here.join("tests/ui/bench-fixture.json"),
        )
        .env("PLAYWRIGHT_CORE", &pw)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "dashboard test failed:\n{stdout}\n{stderr}\ndaemon log:\n{}",
        d.log()
    );
    eprintln!("{stderr}");
    println!("dashboard: {stdout}screenshots in {}", shots.display());
    let m: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(m["restored"].is_string());
}
