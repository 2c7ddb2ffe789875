//! The faults `godel chaos` injects, one function each: SIGKILL of agent
//! processes and VMMs, the daemon killed mid-spawn and mid-snapshot, a full
//! `$GODEL_HOME`, connections dropped mid-exec. Each returns a [`Fault`]
//! saying what it did and what it saw; the accounting is in [`crate::chaos`].

use std::path::Path;
use std::time::{Duration, Instant};

use godel_core::Result;
use http::Method;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::daemon::{Api, Daemon, signal};

/// One injected fault.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Fault {
    pub name: String,
    pub detail: String,
    /// Why it was not injected, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Something that must not happen did (a hang, a dead daemon, a wrong answer).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

impl Fault {
    fn new(name: &str) -> Fault {
        Fault {
            name: name.into(),
            ..Default::default()
        }
    }
}

/// The pid a runtime's status reports (jail init or VMM).
pub async fn pid_of(api: &mut Api, id: &str) -> Option<u32> {
    let v = api
        .ok(Method::GET, &format!("/v1/runtimes/{id}"), None)
        .await
        .ok()?;
    v["pid"].as_u64().map(|p| p as u32)
}

/// SIGKILL the process behind each of `ids` (the jail's init or the VMM).
pub async fn kill_processes(api: &mut Api, ids: &[String], what: &str) -> Fault {
    let mut f = Fault::new(what);
    let mut killed = 0;
    for id in ids {
        match pid_of(api, id).await {
            Some(pid) if signal(pid, libc::SIGKILL) => killed += 1,
            Some(pid) => f
                .detail
                .push_str(&format!("{id}: pid {pid} already gone; ")),
            None => f.detail.push_str(&format!("{id}: no pid in status; ")),
        }
    }
    f.detail = format!("SIGKILL to {killed} of {} {}", ids.len(), f.detail);
    f
}

/// Fire `n` spawns at once (labelled `chaos.mid_spawn`), SIGKILL the daemon
/// `after` later, start it again. Ids the daemon answered before dying.
pub async fn kill_daemon_mid_spawn(
    d: &mut Daemon,
    spec: &Value,
    n: usize,
    after: Duration,
) -> (Fault, Vec<String>) {
    let mut f = Fault::new("daemon SIGKILL mid-spawn");
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let mut spec = spec.clone();
        spec["labels"] = json!({"chaos.mid_spawn": i.to_string()});
        let sock = d.socket();
        set.spawn(async move {
            let mut api = Api::new(&sock);
            api.ok(Method::POST, "/v1/runtimes", Some(&spec)).await
        });
    }
    tokio::time::sleep(after).await;
    d.kill9().await;
    let mut ids = Vec::new();
    let mut cut = 0;
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(v)) => ids.extend(v["id"].as_str().map(str::to_string)),
            _ => cut += 1,
        }
    }
    let t = Instant::now();
    if let Err(e) = d.restart().await {
        f.failures.push(format!("daemon did not come back: {e}"));
    }
    f.detail = format!(
        "{n} spawns in flight, daemon killed after {} ms: {} answered, {cut} cut off; restarted in {} ms",
        after.as_millis(),
        ids.len(),
        t.elapsed().as_millis()
    );
    (f, ids)
}

/// Snapshot each of `ids` at once, SIGKILL the daemon `after` later, start it again.
pub async fn kill_daemon_mid_snapshot(d: &mut Daemon, ids: &[String], after: Duration) -> Fault {
    let mut f = Fault::new("daemon SIGKILL mid-snapshot");
    let mut set = tokio::task::JoinSet::new();
    for id in ids {
        let (sock, id) = (d.socket(), id.clone());
        set.spawn(async move {
            let mut api = Api::new(&sock);
            api.ok(
                Method::POST,
                &format!("/v1/runtimes/{id}/snapshots"),
                Some(&json!({})),
            )
            .await
        });
    }
    tokio::time::sleep(after).await;
    d.kill9().await;
    let (mut done, mut cut) = (0, 0);
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(_)) => done += 1,
            _ => cut += 1,
        }
    }
    if let Err(e) = d.restart().await {
        f.failures.push(format!("daemon did not come back: {e}"));
    }
    f.detail = format!(
        "{} snapshots in flight, daemon killed after {} ms: {done} finished, {cut} cut off",
        ids.len(),
        after.as_millis()
    );
    f
}

/// Fill the file system of `home` (`fill` file until ENOSPC), check that a
/// spawn, a file write and a snapshot each fail with an error (not a hang,
/// not a dead daemon), free the space, check a spawn works again.
pub async fn fill_disk(d: &Daemon, spec: &Value, victim: &str) -> (Fault, Vec<String>) {
    let mut f = Fault::new("$GODEL_HOME file system full");
    let fill = d.home.join("chaos-fill");
    let written = match fill_until_full(&fill).await {
        Ok(n) => n,
        Err(e) => {
            f.skipped = Some(format!("could not fill the disk: {e}"));
            return (f, Vec::new());
        }
    };
    let mut api = Api::new(&d.socket());
    let mut seen = Vec::new();
    let mut new_ids = Vec::new();
    let limit = Duration::from_secs(60);
    let bigger = bytes::Bytes::from(vec![7u8; 4 << 20]);
    let probes: [(&str, Method, String, Option<bytes::Bytes>); 3] = [
        ("spawn", Method::POST, "/v1/runtimes".into(), None),
        (
            "write 4 MiB",
            Method::PUT,
            format!("/v1/runtimes/{victim}/files?path=chaos-big"),
            Some(bigger),
        ),
        (
            "snapshot",
            Method::POST,
            format!("/v1/runtimes/{victim}/snapshots"),
            None,
        ),
    ];
    for (what, m, path, raw) in probes {
        let body = match (&raw, what) {
            (Some(b), _) => b.clone(),
            (None, "spawn") => bytes::Bytes::from(spec.to_string()),
            _ => bytes::Bytes::from_static(b"{}"),
        };
        let ct = if raw.is_some() {
            "application/octet-stream"
        } else {
            "application/json"
        };
        match tokio::time::timeout(limit, api.raw(m, &path, body, ct)).await {
            Err(_) => f
                .failures
                .push(format!("{what} hung for 60 s on a full disk")),
            Ok(Err(e)) => f.failures.push(format!("{what}: daemon unreachable: {e}")),
            Ok(Ok((s, b))) => {
                let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
                if s.is_success() {
                    if let Some(id) = v["id"].as_str().filter(|_| what == "spawn") {
                        new_ids.push(id.to_string());
                    }
                    seen.push(format!("{what}: {s} (fit in what was left)"));
                } else {
                    seen.push(format!("{what}: {} {}", s.as_u16(), v["code"]));
                }
            }
        }
    }
    let _ = tokio::fs::remove_file(&fill).await;
    match api.ok(Method::POST, "/v1/runtimes", Some(spec)).await {
        Ok(v) => new_ids.extend(v["id"].as_str().map(str::to_string)),
        Err(e) => f
            .failures
            .push(format!("spawn after freeing the disk failed: {e}")),
    }
    f.detail = format!(
        "filled {} MiB; {}; space freed, spawn works again: {}",
        written >> 20,
        seen.join(", "),
        f.failures.is_empty()
    );
    (f, new_ids)
}

async fn fill_until_full(p: &Path) -> std::io::Result<u64> {
    let mut file = tokio::fs::File::create(p).await?;
    let chunk = vec![0xa5u8; 4 << 20];
    let mut n = 0u64;
    loop {
        match file.write_all(&chunk).await {
            Ok(()) => n += chunk.len() as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e),
        }
        if n > 64 << 30 {
            return Err(std::io::Error::other("no size limit (64 GiB written)"));
        }
    }
    // Top off the last bytes.
    let small = vec![0u8; 4096];
    while file.write_all(&small).await.is_ok() {
        n += 4096;
    }
    let _ = file.sync_all().await;
    Ok(n)
}

/// Start a long exec (buffered and streamed) in each of `ids` on a raw
/// connection and drop the connection 200 ms in; then the agent must still
/// answer an exec.
pub async fn drop_mid_exec(d: &Daemon, ids: &[String]) -> Fault {
    let mut f = Fault::new("connection dropped mid-exec");
    for (i, id) in ids.iter().enumerate() {
        let route = if i % 2 == 0 { "exec" } else { "exec/stream" };
        let body = r#"{"cmd":["sh","-c","sleep 3; echo late"]}"#;
        let req = format!(
            "POST /v1/runtimes/{id}/{route} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        match tokio::net::UnixStream::connect(d.socket()).await {
            Ok(mut s) => {
                let _ = s.write_all(req.as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                drop(s);
            }
            Err(e) => f.failures.push(format!("connect: {e}")),
        }
    }
    let mut api = Api::new(&d.socket());
    let mut ok = 0;
    for id in ids {
        let r = tokio::time::timeout(
            Duration::from_secs(30),
            api.ok(
                Method::POST,
                &format!("/v1/runtimes/{id}/exec"),
                Some(&json!({"cmd": ["true"]})),
            ),
        )
        .await;
        match r {
            Ok(Ok(v)) if v["exit_code"] == 0 => ok += 1,
            Ok(Ok(v)) => f.failures.push(format!("{id}: exec after drop: {v}")),
            Ok(Err(e)) => f.failures.push(format!("{id}: exec after drop: {e}")),
            Err(_) => f.failures.push(format!("{id}: exec after drop hung")),
        }
    }
    f.detail = format!(
        "{} execs (buffered and SSE) cut after 200 ms; {ok} agents answer exec afterwards",
        ids.len()
    );
    f
}

/// Spawn `n` microVM agents (the first with restart on failure), or say why not.
pub async fn spawn_vms(
    d: &Daemon,
    images: Option<&Path>,
    n: usize,
) -> Result<std::result::Result<Vec<String>, String>> {
    let src = images
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".godel/images")));
    let Some(src) = src.filter(|p| p.is_dir()) else {
        return Ok(Err(
            "no built microVM images (run `godel image build` or pass --images)".into(),
        ));
    };
    // The link lives in the daemon's home: a relative path would not resolve.
    let src = std::fs::canonicalize(&src).unwrap_or(src);
    let dst = d.home.join("images");
    if !dst.exists() {
        std::os::unix::fs::symlink(&src, &dst)
            .map_err(|e| godel_core::Error::io("link images", &e))?;
    }
    let mut api = Api::new(&d.socket());
    let mut ids = Vec::new();
    for i in 0..n {
        let mut spec = json!({"runtime": "microvm", "resources": {"cpu": "1", "memory": "128Mi"}});
        if i == 0 {
            spec["restart"] = json!("on-failure");
        }
        match tokio::time::timeout(
            Duration::from_secs(180),
            api.ok(Method::POST, "/v1/runtimes", Some(&spec)),
        )
        .await
        {
            Ok(Ok(v)) => ids.extend(v["id"].as_str().map(str::to_string)),
            Ok(Err(e)) => return Ok(Err(format!("microVM spawn failed: {e}"))),
            Err(_) => return Ok(Err("microVM spawn took over 180 s".into())),
        }
    }
    Ok(Ok(ids))
}
