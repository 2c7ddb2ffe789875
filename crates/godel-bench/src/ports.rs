//! `godel bench ports`: time to the first byte of an HTTP answer through a
//! port URL (`<port>-<id>.localhost` on the E2B listener of a real `godel
//! serve` child) against the same request sent straight to the server from
//! a socket made inside the sandbox's network namespace, interleaved in the
//! same run. Both sides time connect + request + first byte; the socket of
//! each sample is made before its clock starts. The server is a small
//! Python responder inside a worktree sandbox (isolation `sandbox`).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use godel_core::{Error, Result};
use http::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::daemon::{Api, Daemon};
use crate::{LatencySummary, ms};

/// The port the server listens on inside the sandbox.
const PORT: u16 = 8000;

/// Answers every request at once with a fixed 200 (one at a time: the
/// samples are sequential).
const SERVER: &str = r#"
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8000)); s.listen(128)
body = b"ok"
resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n" + body
while True:
    c, _ = s.accept()
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(4096)
        if not d: break
        buf += d
    c.sendall(resp); c.close()
"#;

/// How the run is made.
#[derive(Debug, Clone)]
pub struct PortsOptions {
    /// The `godel` binary to run as `godel serve`.
    pub bin: std::path::PathBuf,
    pub iterations: usize,
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("bind", &e))?;
    Ok(l.local_addr().map_err(|e| Error::io("addr", &e))?.port())
}

/// One sample: connect `sock` to `addr`, send `req`, wait for the first byte.
async fn first_byte(sock: TcpSocket, addr: SocketAddr, req: &[u8]) -> Result<Duration> {
    let t = Instant::now();
    let mut s = sock
        .connect(addr)
        .await
        .map_err(|e| Error::io(format!("connect {addr}"), &e))?;
    s.write_all(req).await.map_err(|e| Error::io("send", &e))?;
    let mut b = [0u8; 1];
    let n = s.read(&mut b).await.map_err(|e| Error::io("read", &e))?;
    let d = t.elapsed();
    if n == 0 || b[0] != b'H' {
        return Err(Error::internal(format!("{addr}: no HTTP answer")));
    }
    // Drain so the server's close is clean.
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
    Ok(d)
}

async fn netns_socket(pid: u32) -> Result<TcpSocket> {
    let fd = godel_sandbox::portfwd::socket_in_netns(pid)
        .await
        .map_err(|e| Error::io("socket in the sandbox's network", &e))?;
    Ok(TcpSocket::from_std_stream(std::net::TcpStream::from(fd)))
}

/// Run the benchmark; the JSON report.
pub async fn run(o: &PortsOptions, progress: &dyn Fn(&str)) -> Result<Value> {
    let scratch = tempfile::Builder::new()
        .prefix("godel-bench-ports-")
        .tempdir()
        .map_err(|e| Error::io("create scratch dir", &e))?;
    let e2b_port = free_port()?;
    let listen = format!("127.0.0.1:{e2b_port}");
    progress(&format!(
        "starting `godel serve --e2b-listen {listen}` on a scratch home"
    ));
    let mut daemon = Daemon::start(
        &o.bin,
        &scratch.path().join("home"),
        "sandbox",
        &["--e2b-listen", &listen],
    )
    .await?;
    let r = measure(o, &daemon, e2b_port, progress).await;
    if r.is_err() {
        eprintln!("{}", daemon.log_tail());
    }
    daemon.stop().await;
    r
}

async fn measure(
    o: &PortsOptions,
    daemon: &Daemon,
    e2b_port: u16,
    progress: &dyn Fn(&str),
) -> Result<Value> {
    let mut api = Api::new(&daemon.socket());
    progress("spawning a worktree sandbox and starting the server in it");
    let info = api
        .ok(
            Method::POST,
            "/v1/runtimes",
            Some(&json!({"runtime": "worktree"})),
        )
        .await?;
    let id = info["id"]
        .as_str()
        .ok_or_else(|| Error::internal(format!("spawn answered without an id: {info}")))?
        .to_string();
    let pid = info["handle"]["sandbox"]["init_pid"]
        .as_u64()
        .ok_or_else(|| {
            Error::unavailable(format!(
                "sandbox {id} has no init in its own network namespace (isolation sandbox needed): {info}"
            ))
        })? as u32;
    let exec = json!({"cmd": ["setsid", "-f", "python3", "-c", SERVER]});
    api.ok(
        Method::POST,
        &format!("/v1/runtimes/{id}/exec"),
        Some(&exec),
    )
    .await?;
    let direct = SocketAddr::from((Ipv4Addr::LOCALHOST, PORT));
    let proxy = SocketAddr::from((Ipv4Addr::LOCALHOST, e2b_port));
    let direct_req = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_vec();
    let proxy_req =
        format!("GET / HTTP/1.1\r\nHost: {PORT}-{id}.localhost\r\nConnection: close\r\n\r\n")
            .into_bytes();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match first_byte(netns_socket(pid).await?, direct, &direct_req).await {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    progress(&format!(
        "{} samples each, interleaved: port URL vs direct in the sandbox's namespace",
        o.iterations
    ));
    let (mut d, mut p) = (Vec::new(), Vec::new());
    let warmup = 20.min(o.iterations);
    for i in 0..o.iterations + warmup {
        let ds = first_byte(netns_socket(pid).await?, direct, &direct_req).await?;
        let sock = TcpSocket::new_v4().map_err(|e| Error::io("socket", &e))?;
        let ps = first_byte(sock, proxy, &proxy_req).await?;
        if i >= warmup {
            d.push(ds);
            p.push(ps);
        }
    }
    let _ = api
        .ok(Method::DELETE, &format!("/v1/runtimes/{id}"), None)
        .await;
    let direct_s = LatencySummary::of(&d);
    let proxy_s = LatencySummary::of(&p);
    let mut added: Vec<Duration> = p
        .iter()
        .zip(&d)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    added.sort();
    let added_p50 = direct_s_p50_diff(&proxy_s, &direct_s);
    Ok(json!({
        "benchmark": "ports",
        "what": "first byte of an HTTP answer: connect + request + first byte",
        "port_url": proxy_s,
        "baseline_direct_in_netns": direct_s,
        "added_p50_ms": added_p50,
        "added_paired_p50_ms": ms(added.get(added.len() / 2).copied().unwrap_or_default()),
        "target": "port URL adds < 1 ms at P50",
        "target_met": added_p50 < 1.0,
    }))
}

fn direct_s_p50_diff(proxy: &LatencySummary, direct: &LatencySummary) -> f64 {
    ((proxy.p50_ms - direct.p50_ms) * 1000.0).round() / 1000.0
}

/// The human-readable table.
pub fn print(v: &Value) {
    let row = |name: &str, s: &Value| {
        let s: LatencySummary = serde_json::from_value(s.clone()).unwrap_or_default();
        println!("{}", s.line(name));
    };
    row("port URL (E2B listener proxy)", &v["port_url"]);
    row(
        "baseline: direct in the sandbox netns",
        &v["baseline_direct_in_netns"],
    );
    println!(
        "proxy adds {:.3} ms at P50 (paired P50 {:.3} ms); target < 1 ms: {}",
        v["added_p50_ms"].as_f64().unwrap_or_default(),
        v["added_paired_p50_ms"].as_f64().unwrap_or_default(),
        if v["target_met"].as_bool() == Some(true) {
            "met"
        } else {
            "MISSED"
        }
    );
}
