//! A real daemon for the load, scale and chaos suites: `godel serve` started
//! as its own process on a scratch `$GODEL_HOME` (so its RSS and CPU can be
//! read from `/proc` and it can be killed with SIGKILL), and [`Api`], a small
//! HTTP/1.1 client over its Unix socket that keeps one connection per caller
//! and reports status codes instead of turning them into errors.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use godel_core::{Error, Result};
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// A `godel serve` child process.
pub struct Daemon {
    pub bin: PathBuf,
    pub home: PathBuf,
    pub isolation: String,
    pub extra: Vec<String>,
    /// Every pid this daemon had (one per start), for the orphan check:
    /// its warm-pool jails are named after it.
    pub pids_seen: Vec<u32>,
    child: Option<tokio::process::Child>,
}

impl Daemon {
    /// Start `bin serve` on `home` and wait (up to 60 s) for its socket.
    pub async fn start(bin: &Path, home: &Path, isolation: &str, extra: &[&str]) -> Result<Daemon> {
        let mut d = Daemon {
            bin: bin.to_path_buf(),
            home: home.to_path_buf(),
            isolation: isolation.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            pids_seen: Vec::new(),
            child: None,
        };
        d.restart().await?;
        Ok(d)
    }

    /// The daemon's Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.home.join("godel.sock")
    }

    /// Its process id (None once it was killed).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Start it again (after [`Daemon::kill9`] or [`Daemon::stop`]).
    pub async fn restart(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.home)
            .map_err(|e| Error::io(format!("create {}", self.home.display()), &e))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home.join("serve.log"))
            .map_err(|e| Error::io("open serve.log", &e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::io("clone serve.log", &e))?;
        let child = tokio::process::Command::new(&self.bin)
            .arg("serve")
            .args(["--isolation", &self.isolation])
            .args(&self.extra)
            .env("GODEL_HOME", &self.home)
            .env("GODEL_LOG", "warn")
            .env_remove("GODEL_URL")
            .env_remove("GODEL_TOKEN")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::io(format!("start {} serve", self.bin.display()), &e))?;
        self.pids_seen.extend(child.id());
        self.child = Some(child);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                return Err(Error::unavailable(format!(
                    "godel serve exited ({st}) at start: {}",
                    self.log_tail()
                )));
            }
            if Api::new(&self.socket())
                .get("/v1/health")
                .await
                .is_ok_and(|(s, _)| s.is_success())
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(Error::timeout(format!(
            "godel serve did not answer within 60 s: {}",
            self.log_tail()
        )))
    }

    /// The last lines of the daemon's log.
    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.home.join("serve.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    /// SIGKILL, no cleanup.
    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// SIGTERM and wait (up to 120 s, then SIGKILL).
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                signal(pid, libc::SIGTERM);
            }
            if tokio::time::timeout(Duration::from_secs(120), c.wait())
                .await
                .is_err()
            {
                let _ = c.start_kill();
                let _ = c.wait().await;
            }
        }
    }

    /// Resident set size of the daemon process, bytes.
    pub fn rss_bytes(&self) -> u64 {
        self.pid().map(proc_rss_bytes).unwrap_or(0)
    }

    /// User + system CPU time of the daemon process, seconds.
    pub fn cpu_secs(&self) -> f64 {
        self.pid().map(proc_cpu_secs).unwrap_or(0.0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
    }
}

/// `VmRSS` of a process, bytes (0 when it is gone).
pub fn proc_rss_bytes(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:") * 1024
}

/// Peak RSS (`VmHWM`) of a process, bytes.
pub fn proc_peak_rss_bytes(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:") * 1024
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Proportional set size of a process (`Pss` of smaps_rollup), bytes.
pub fn proc_pss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Pss:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .unwrap_or(0)
        * 1024
}

/// utime + stime of a process, seconds.
pub fn proc_cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| f.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / clock_ticks()
}

#[allow(unsafe_code)]
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// Send `sig` to process `pid`; false when it is gone.
#[allow(unsafe_code)]
pub fn signal(pid: u32, sig: i32) -> bool {
    // SAFETY: kill(2) takes plain integers; a stale pid at worst signals
    // nothing (ESRCH). Callers pass pids they just read for this run.
    unsafe { libc::kill(pid as i32, sig) == 0 }
}

/// Open file descriptors of a process.
pub fn proc_fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// This machine: cores, memory, load average, accelerator.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
    pub cpu_model: String,
    pub load_avg: String,
    pub accelerator: String,
    pub kernel: String,
}

impl Machine {
    /// Read it from `/proc`.
    pub fn probe() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let meminfo = read("/proc/meminfo");
        let kib: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            .unwrap_or(0.0);
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let kvm = if Path::new("/dev/kvm").exists() {
            "/dev/kvm present (cannot boot Linux here: microVMs fall back to TCG)"
        } else {
            "no /dev/kvm (microVMs run under TCG)"
        };
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            cpu_model,
            load_avg: read("/proc/loadavg")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            accelerator: format!("none (no GPU); {kvm}"),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        }
    }
}

/// An HTTP/1.1 client over the daemon's Unix socket with one kept-alive
/// connection, reopened when it breaks.
pub struct Api {
    sock: PathBuf,
    conn: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Api {
    pub fn new(sock: &Path) -> Api {
        Api {
            sock: sock.to_path_buf(),
            conn: None,
        }
    }

    async fn connect(&mut self) -> Result<()> {
        let s = tokio::net::UnixStream::connect(&self.sock)
            .await
            .map_err(|e| Error::unavailable(format!("connect {}: {e}", self.sock.display())))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .map_err(|e| Error::unavailable(format!("handshake: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.conn = Some(sender);
        Ok(())
    }

    /// Send one request; the status and the whole body.
    pub async fn raw(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
        content_type: &str,
    ) -> Result<(StatusCode, Bytes)> {
        let ready = match self.conn.as_mut() {
            Some(c) => c.ready().await.is_ok(),
            None => false,
        };
        if !ready {
            self.connect().await?;
        }
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "localhost")
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .map_err(|e| Error::invalid(format!("bad request: {e}")))?;
        let Some(conn) = self.conn.as_mut() else {
            return Err(Error::unavailable("no connection"));
        };
        let resp = match conn.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.conn = None;
                return Err(Error::unavailable(format!("request failed: {e}")));
            }
        };
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| {
                Error::unavailable(format!("connection to the daemon broke mid-body: {e}"))
            })?
            .to_bytes();
        Ok((status, bytes))
    }

    /// JSON request; the status and the decoded body (`null` when empty).
    pub async fn json(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value)> {
        let b = body.map(|v| Bytes::from(v.to_string())).unwrap_or_default();
        let (s, out) = self.raw(method, path, b, "application/json").await?;
        let v = if out.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&out)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&out).into_owned()))
        };
        Ok((s, v))
    }

    pub async fn get(&mut self, path: &str) -> Result<(StatusCode, Value)> {
        self.json(Method::GET, path, None).await
    }

    /// JSON request that must succeed: the body, or the daemon's error.
    pub async fn ok(&mut self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let (s, v) = self.json(method.clone(), path, body).await?;
        if s.is_success() {
            return Ok(v);
        }
        match serde_json::from_value::<Error>(v.clone()) {
            Ok(e) => Err(e),
            Err(_) => Err(Error::internal(format!("{method} {path}: HTTP {s}: {v}"))),
        }
    }
}
