//! Helpers shared by the sandbox integration tests: an isolator wired to the
//! freshly built `godel-sandbox-init`, a per-test workspace, and a way to run
//! a command and collect everything it did.
#![allow(dead_code)]

use std::sync::Arc;

use godel_core::{Event, EventSink};
use godel_sandbox::{
    InitProgram, Isolator, Jail, JailConfig, JailLimits, NamespaceIsolator, NamespaceOptions,
    ProcessSpec,
};
use parking_lot::Mutex;
use tokio::io::AsyncReadExt;

/// Events received by the isolator's sink.
#[derive(Clone, Default)]
pub struct Events(pub Arc<Mutex<Vec<Event>>>);

impl Events {
    pub fn sink(&self) -> EventSink {
        let v = self.0.clone();
        Arc::new(move |e| v.lock().push(e))
    }
    pub fn all(&self) -> Vec<Event> {
        self.0.lock().clone()
    }
}

pub fn isolator(events: &Events) -> NamespaceIsolator {
    isolator_with(events, None)
}

/// `user_namespace: Some(false)` forces the fallback for kernels without user namespaces.
/// Cold jails only (no warm pool).
pub fn isolator_with(events: &Events, user_namespace: Option<bool>) -> NamespaceIsolator {
    NamespaceIsolator::new(options(events, user_namespace, 0))
}

/// The options of a test isolator with `warm_pool` jails made ahead.
pub fn options(
    events: &Events,
    user_namespace: Option<bool>,
    warm_pool: usize,
) -> NamespaceOptions {
    NamespaceOptions {
        init: Some(InitProgram::Path(
            env!("CARGO_BIN_EXE_godel-sandbox-init").into(),
        )),
        events: events.sink(),
        user_namespace,
        warm_pool,
        ..Default::default()
    }
}

/// An isolator with `warm_pool` jails made ahead that keeps its host state
/// in `run_dir` (not the host's shared run directory).
pub fn isolator_in(run_dir: &std::path::Path, warm_pool: usize) -> NamespaceIsolator {
    let mut opts = options(&Events::default(), None, warm_pool);
    opts.run_dir = run_dir.to_path_buf();
    NamespaceIsolator::new(opts)
}

/// An isolator whose warm pool holds `n` jails made ahead: its next `n`
/// creates claim them (the path most sandboxes take).
pub async fn warm_isolator(events: &Events, n: usize) -> NamespaceIsolator {
    let iso = NamespaceIsolator::new(options(events, None, n));
    assert_eq!(iso.prewarm().await, n, "the warm pool filled");
    iso
}

/// A unique id for this test.
pub fn id(name: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("t-{name}-{}-{n}", std::process::id())
}

/// A workspace + state dir under a temp dir that lives as long as the guard.
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub sb: Arc<dyn Jail>,
    pub cfg: JailConfig,
}

pub fn config(dir: &tempfile::TempDir, id: &str, limits: JailLimits) -> JailConfig {
    let workspace = dir.path().join("ws");
    std::fs::create_dir_all(&workspace).unwrap();
    JailConfig {
        id: id.to_string(),
        workspace,
        state_dir: dir.path().join("state"),
        limits,
        network: Default::default(),
        env: Default::default(),
        volumes: Vec::new(),
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        destroy_blocking(self.sb.clone());
    }
}

/// Destroys a sandbox when dropped (for sandboxes made without [`spawn`]).
pub struct Guard(pub Arc<dyn Jail>);

impl Drop for Guard {
    fn drop(&mut self) {
        destroy_blocking(self.0.clone());
    }
}

/// A failed assertion must not leak a sandbox: destroy it (idempotent) on a
/// helper thread with its own runtime.
fn destroy_blocking(sb: Arc<dyn Jail>) {
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            let _ = rt.block_on(sb.destroy());
        }
    })
    .join();
}

pub async fn spawn(iso: &NamespaceIsolator, name: &str, limits: JailLimits) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir, &id(name), limits);
    let sb = iso.create(cfg.clone()).await.expect("create sandbox");
    Agent { dir, sb, cfg }
}

/// The outcome of one command.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub pid: u32,
}

pub async fn run(sb: &dyn Jail, argv: &[&str]) -> Out {
    let mut p = sb
        .launch(ProcessSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await
        .expect("launch");
    let (mut o, mut e) = (String::new(), String::new());
    let (r1, r2) = tokio::join!(
        p.stdout.read_to_string(&mut o),
        p.stderr.read_to_string(&mut e)
    );
    r1.unwrap();
    r2.unwrap();
    let st = p.exit.await.unwrap();
    Out {
        code: st.code,
        signal: st.signal,
        stdout: o,
        stderr: e,
        pid: p.pid,
    }
}

pub async fn sh(sb: &dyn Jail, script: &str) -> Out {
    run(sb, &["bash", "-c", script]).await
}

/// Run a Python snippet that calls into libc and prints `<ret> <errno name>`.
pub async fn libc_call(sb: &dyn Jail, call: &str) -> String {
    let script = format!(
        "import ctypes, errno\nl = ctypes.CDLL(None, use_errno=True)\nr = {call}\nprint(r, errno.errorcode.get(ctypes.get_errno(), 'OK'))"
    );
    let out = run(sb, &["python3", "-c", &script]).await;
    assert_eq!(out.code, 0, "python failed: {out:?}");
    out.stdout.trim().to_string()
}
