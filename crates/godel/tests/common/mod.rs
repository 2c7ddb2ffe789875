//! Test harness: a real `godel serve` on a scratch `$GODEL_HOME`, driven
//! through the real `godel` binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_godel");

/// A daemon under test.
pub struct Daemon {
    pub home: tempfile::TempDir,
    pub child: Option<Child>,
    pub extra_args: Vec<String>,
    pub tcp: Option<String>,
    /// Extra environment of `godel serve` (e.g. `KUBECONFIG`).
    pub env: Vec<(String, String)>,
    /// The PostgreSQL schema this daemon keeps its state in when the suite
    /// runs against PostgreSQL (`$GODEL_TEST_DATABASE_URL`); kept across
    /// restarts of the same daemon.
    pub database: Option<String>,
}

/// Isolation the tests run with: the sandbox when we are root (CI), else none.
pub fn isolation() -> &'static str {
    if std::env::var("GODEL_TEST_ISOLATION").as_deref() == Ok("none") {
        return "none";
    }
    // SAFETY-free check: geteuid has no preconditions.
    if nix_is_root() { "sandbox" } else { "none" }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl Daemon {
    pub fn start(extra: &[&str]) -> Daemon {
        let home = tempfile::Builder::new()
            .prefix("godel-e2e-")
            .tempdir()
            .unwrap();
        let mut d = Daemon {
            home,
            child: None,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            tcp: None,
            env: Vec::new(),
            database: None,
        };
        d.spawn_serve();
        d
    }

    /// A daemon on TCP too, with extra environment for `godel serve`.
    pub fn start_tcp_env(extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr = format!("127.0.0.1:{port}");
        let mut args: Vec<&str> = extra.to_vec();
        args.push("--listen");
        args.push(&addr);
        let mut d = Daemon::start_deferred(&args);
        d.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        d.tcp = Some(addr);
        d.spawn_serve();
        d
    }

    /// `godel` talking to this daemon's TCP listener with `token`.
    pub fn tcp_cmd(&self, token: &str) -> Command {
        let mut c = Command::new(BIN);
        c.env("GODEL_HOME", self.home())
            .env(
                "GODEL_URL",
                format!("http://{}", self.tcp.as_deref().expect("a TCP listener")),
            )
            .env("GODEL_TOKEN", token)
            .stdin(Stdio::null());
        c
    }

    pub fn start_tcp(extra: &[&str]) -> Daemon {
        Daemon::start_tcp_env(extra, &[])
    }

    fn start_deferred(extra: &[&str]) -> Daemon {
        let home = tempfile::Builder::new()
            .prefix("godel-e2e-")
            .tempdir()
            .unwrap();
        Daemon {
            home,
            child: None,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            tcp: None,
            env: Vec::new(),
            database: None,
        }
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn spawn_serve(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home().join("serve.log"))
            .unwrap();
        if self.database.is_none()
            && !self.extra_args.iter().any(|a| a == "--database")
            && let Ok(base) = std::env::var("GODEL_TEST_DATABASE_URL")
            && !base.is_empty()
        {
            self.database = Some(godel_testkit::postgres_schema_url(&base, "e2e"));
        }
        let database: Vec<String> = match &self.database {
            Some(db) => vec!["--database".into(), db.clone()],
            None => Vec::new(),
        };
        let child = Command::new(BIN)
            .arg("serve")
            .args(["--isolation", isolation()])
            .args(&self.extra_args)
            .args(&database)
            .env("GODEL_HOME", self.home())
            .env_remove("GODEL_URL")
            .env_remove("GODEL_TOKEN")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let sock = self.home().join("godel.sock");
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                if let Some(addr) = &self.tcp
                    && std::net::TcpStream::connect(addr).is_err()
                {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("daemon did not start: {}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home().join("serve.log")).unwrap_or_default()
    }

    /// Kill the daemon with SIGKILL (no cleanup).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Stop with SIGTERM and wait.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        // SAFETY-free: send SIGTERM via the kill command.
        Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .unwrap();
        c.wait().unwrap()
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("GODEL_HOME", self.home())
            .env_remove("GODEL_URL")
            .env_remove("GODEL_TOKEN")
            .stdin(Stdio::null());
        c
    }

    /// Run `godel ARGS` and return its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Run with stdin bytes.
    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Run, require success, return stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "godel {args:?} failed ({}):\nstdout: {}\nstderr: {}\nlog:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Last line of stdout of a successful command.
    pub fn last_line(&self, args: &[&str]) -> String {
        self.ok(args)
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Remove every runtime so no mounts or processes outlive the test.
        if self.child.is_none() {
            self.spawn_serve();
        }
        if let Ok(out) = self.cmd().args(["ls", "--json"]).output()
            && let Ok(list) = serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
        {
            for r in list {
                if let Some(id) = r["id"].as_str() {
                    let _ = self.cmd().args(["rm", id]).output();
                }
            }
        }
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

/// A committed git repository with a few files.
pub fn make_repo(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("src")).unwrap();
    std::fs::write(repo.join("README.md"), "hello\n").unwrap();
    std::fs::write(repo.join("src/main.txt"), "main\n").unwrap();
    let git = |args: &[&str]| {
        let st = Command::new("git")
            .args(["-c", "user.email=t@example.com", "-c", "user.name=t"])
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "init"]);
    git(&["tag", "v1"]);
    std::fs::write(repo.join("later.txt"), "later\n").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-qm", "second"]);
    repo
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A kubeconfig in `dir` naming `server` (the fake API server: plain HTTP, no user credentials).
pub fn kubeconfig(dir: &std::path::Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
        ),
    )
    .unwrap();
    path
}
