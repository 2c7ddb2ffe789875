//! The `e2b` runtime: a [`RuntimeProvider`] that creates and drives sandboxes
//! on a remote E2B-compatible endpoint (E2B's cloud, or another godel serving
//! the E2B API) through the same wire types the official SDKs use.
//!
//! - spawn: `POST /sandboxes` from `SpawnSpec::template` (or `image`, default
//!   `base`); the godel id ↔ E2B `sandboxID` mapping is kept in memory and in
//!   `Spawned::handle` so `adopt` re-attaches after a daemon restart;
//! - exec: envd `process.Process/Start` (Connect server-streaming, JSON), stdin
//!   through `SendInput`/`CloseStdin`, signals through `SendSignal`;
//! - files: envd `/files` and `filesystem.Filesystem` RPCs; tar up/down are
//!   packed and unpacked here, file by file;
//! - snapshot = pause (the memory snapshot stays with E2B under the sandbox
//!   id), restore = connect (the paused sandbox resumes and is bound to the
//!   new godel id); a snapshot can be restored once;
//! - status: `GET /sandboxes/{id}` plus the latest `/metrics` point.
//!
//! Errors are described in [`client`]: bad key → `UNAUTHENTICATED`, sandbox
//! gone → `NOT_FOUND`, endpoint down → `UNAVAILABLE` (retryable).

pub mod client;
mod exec;
mod files;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use godel_core::{
    Availability, Capabilities, Error, ErrorCode, EventSink, ExecHandle, ExecRequest, FileEntry,
    ResourceUsage, Result, RuntimeProvider, SandboxState, SandboxStatus, SnapshotArtifact,
    SnapshotInfo, SnapshotRequest, SnapshotTarget, SpawnSpec, Spawned,
};
use reqwest::Method;

use client::Client;
pub use client::{EnvdTarget, RetryPolicy};

use crate::wire::{
    ConnectSandbox, DEFAULT_TEMPLATE, E2bState, ENVD_PORT, NewSandbox, Sandbox, SandboxDetail,
    SandboxMetric,
};

/// E2B's own domains, served through one `sandbox.{domain}` host
/// (`e2b/sandbox_domains.py` in the Python SDK).
const E2B_SANDBOX_DOMAINS: [&str; 7] = [
    "e2b.app",
    "e2b.dev",
    "e2b.pro",
    "e2b-staging.dev",
    "e2b-tango.dev",
    "e2b-juliett.dev",
    "foxtrot-2.e2b.dev",
];

/// Configuration of the `e2b` runtime. `Debug` leaves the API key out.
#[derive(Clone)]
pub struct E2bConfig {
    /// API key; `None` reads `E2B_API_KEY`.
    pub api_key: Option<String>,
    /// Control-plane URL; `None` reads `E2B_API_URL`, else `https://api.{domain}`.
    pub api_url: Option<String>,
    /// One envd URL for every sandbox (routing by `E2b-Sandbox-Id`); `None`
    /// reads `E2B_SANDBOX_URL`, else `https://49983-{id}.{domain}`.
    pub sandbox_url: Option<String>,
    /// `None` reads `E2B_DOMAIN`, else `e2b.app`.
    pub domain: Option<String>,
    /// Lifetime asked for each sandbox (E2B kills it after this).
    pub sandbox_timeout: Duration,
    /// Per-request timeout of unary calls.
    pub request_timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Template used when the spec names none.
    pub default_template: String,
    pub retry: RetryPolicy,
    /// Extend every attached sandbox's timeout (to `sandbox_timeout` from
    /// now) this often, so a godel runtime lives until it is terminated
    /// rather than until E2B's deadline. `None` disables it. E2B still caps a
    /// sandbox's total life (1 h Hobby, 24 h Pro).
    pub keepalive: Option<Duration>,
}

impl std::fmt::Debug for E2bConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2bConfig")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api_url", &self.api_url)
            .field("sandbox_url", &self.sandbox_url)
            .field("domain", &self.domain)
            .field("sandbox_timeout", &self.sandbox_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("default_template", &self.default_template)
            .field("retry", &self.retry)
            .field("keepalive", &self.keepalive)
            .finish()
    }
}

impl Default for E2bConfig {
    fn default() -> Self {
        E2bConfig {
            api_key: None,
            api_url: None,
            sandbox_url: None,
            domain: None,
            sandbox_timeout: Duration::from_secs(3600),
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            default_template: DEFAULT_TEMPLATE.to_string(),
            retry: RetryPolicy::default(),
            keepalive: Some(Duration::from_secs(600)),
        }
    }
}

fn env_nonempty(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

/// One remote sandbox bound to a godel id.
#[derive(Debug, Clone)]
struct Remote {
    sandbox_id: String,
    token: Option<String>,
    domain: Option<String>,
    envd_version: String,
    /// Paused by `snapshot`: the id no longer owns it (terminate only forgets).
    detached: bool,
}

/// The `e2b` runtime provider.
pub struct E2bProvider {
    client: Client,
    sandbox_url: Option<String>,
    domain: String,
    cfg: E2bConfig,
    /// Whether an API key was configured (an empty one is kept to answer `available`).
    has_key: bool,
    remotes: Arc<Mutex<HashMap<String, Remote>>>,
    keepalive_started: std::sync::Once,
}

impl E2bProvider {
    /// Build the provider. Fails only when the HTTP client cannot be built.
    pub fn new(cfg: E2bConfig, events: EventSink) -> Result<Self> {
        let api_key = cfg.api_key.clone().or_else(|| env_nonempty("E2B_API_KEY"));
        let domain = cfg
            .domain
            .clone()
            .or_else(|| env_nonempty("E2B_DOMAIN"))
            .unwrap_or_else(|| "e2b.app".to_string());
        let api_url = cfg
            .api_url
            .clone()
            .or_else(|| env_nonempty("E2B_API_URL"))
            .unwrap_or_else(|| format!("https://api.{domain}"));
        let sandbox_url = cfg
            .sandbox_url
            .clone()
            .or_else(|| env_nonempty("E2B_SANDBOX_URL"));
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("godel-e2b/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(E2bProvider {
            client: Client {
                http,
                api_url,
                api_key: api_key.clone().unwrap_or_default(),
                retry: cfg.retry,
                events,
                request_timeout: cfg.request_timeout,
            },
            sandbox_url,
            domain,
            has_key: api_key.is_some(),
            cfg,
            remotes: Arc::default(),
            keepalive_started: std::sync::Once::new(),
        })
    }

    fn remotes(&self) -> parking_lot::MutexGuard<'_, HashMap<String, Remote>> {
        self.remotes.lock()
    }

    fn remote(&self, id: &str) -> Result<Remote> {
        self.remotes().get(id).cloned().ok_or_else(|| {
            Error::not_found(format!("runtime {id} is not an e2b sandbox here")).with_runtime(id)
        })
    }

    /// The E2B sandbox id behind a godel id.
    pub fn sandbox_id(&self, id: &str) -> Option<String> {
        self.remotes().get(id).map(|r| r.sandbox_id.clone())
    }

    /// envd's URL, chosen as the SDKs do: a configured sandbox URL; else
    /// E2B's shared `sandbox.{domain}` host for its own domains (routing by
    /// the `E2b-Sandbox-Id` header we always send); else `49983-{id}.{domain}`.
    fn target(&self, r: &Remote) -> EnvdTarget {
        let domain = r.domain.as_deref().unwrap_or(&self.domain);
        let base_url = match &self.sandbox_url {
            Some(u) => u.clone(),
            None if E2B_SANDBOX_DOMAINS.contains(&domain) => format!("https://sandbox.{domain}"),
            None => format!("https://{ENVD_PORT}-{}.{domain}", r.sandbox_id),
        };
        EnvdTarget {
            sandbox_id: r.sandbox_id.clone(),
            base_url,
            token: r.token.clone(),
        }
    }

    fn envd(&self, id: &str) -> Result<(Remote, EnvdTarget)> {
        let r = self.remote(id)?;
        if r.detached {
            return Err(Error::conflict(format!(
                "runtime {id} was snapshotted (paused); restore the snapshot to use it"
            )));
        }
        let t = self.target(&r);
        Ok((r, t))
    }

    fn need_key(&self) -> Result<()> {
        if self.has_key {
            Ok(())
        } else {
            Err(Error::unauthenticated(
                "no E2B API key: set E2B_API_KEY or the e2b runtime's api_key",
            ))
        }
    }

    /// Start the keepalive task (once, on the first bound sandbox). It holds
    /// the sandbox map weakly and stops when the provider is dropped.
    fn start_keepalive(&self) {
        let Some(every) = self.cfg.keepalive else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        self.keepalive_started.call_once(|| {
            let weak = Arc::downgrade(&self.remotes);
            let client = self.client.clone();
            let timeout = self.cfg.sandbox_timeout.as_secs() as i64;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(map) = weak.upgrade() else { return };
                    let ids: Vec<String> = map
                        .lock()
                        .values()
                        .filter(|r| !r.detached)
                        .map(|r| r.sandbox_id.clone())
                        .collect();
                    drop(map);
                    for sid in ids {
                        let path = format!("/sandboxes/{sid}/timeout");
                        let body = crate::wire::TimeoutRequest { timeout };
                        if let Err(e) = client
                            .rest_once::<_, serde_json::Value>(
                                Method::POST,
                                &path,
                                Some(&body),
                                None,
                            )
                            .await
                        {
                            tracing::debug!(sandbox = %sid, error = %e, "e2b: keepalive failed");
                        }
                    }
                }
            });
        });
    }

    fn bind(&self, id: &str, sb: &Sandbox) -> Spawned {
        self.start_keepalive();
        let r = Remote {
            sandbox_id: sb.sandbox_id.clone(),
            token: sb.envd_access_token.clone(),
            domain: sb.domain.clone(),
            envd_version: sb.envd_version.clone(),
            detached: false,
        };
        self.remotes().insert(id.to_string(), r.clone());
        spawned(&r)
    }

    /// `GET /sandboxes/{id}`.
    async fn detail(&self, sandbox_id: &str) -> Result<SandboxDetail> {
        let (_, d) = self
            .client
            .rest::<(), SandboxDetail>(Method::GET, &format!("/sandboxes/{sandbox_id}"), None, None)
            .await?;
        d.ok_or_else(|| Error::internal("empty sandbox info"))
    }

    async fn connect_remote(&self, sandbox_id: &str) -> Result<Sandbox> {
        let body = ConnectSandbox {
            timeout: Some(self.cfg.sandbox_timeout.as_secs() as i64),
        };
        let (_, sb) = self
            .client
            .rest::<_, Sandbox>(
                Method::POST,
                &format!("/sandboxes/{sandbox_id}/connect"),
                Some(&body),
                None,
            )
            .await?;
        sb.ok_or_else(|| Error::internal("empty connect response"))
    }

    /// `envdVersion` ≥ 0.5.7 takes raw octet-stream uploads.
    fn octet_stream(r: &Remote) -> bool {
        let v: Vec<u64> = r
            .envd_version
            .split('.')
            .map(|p| p.parse().unwrap_or(0))
            .collect();
        (
            v.first().copied().unwrap_or(0),
            v.get(1).copied().unwrap_or(0),
            v.get(2).copied().unwrap_or(0),
        ) >= (0, 5, 7)
    }
}

fn spawned(r: &Remote) -> Spawned {
    let mut handle = BTreeMap::new();
    handle.insert("sandbox_id".to_string(), serde_json::json!(r.sandbox_id));
    handle.insert(
        "envd_version".to_string(),
        serde_json::json!(r.envd_version),
    );
    if let Some(d) = &r.domain {
        handle.insert("domain".to_string(), serde_json::json!(d));
    }
    if let Some(t) = &r.token {
        handle.insert("envd_access_token".to_string(), serde_json::json!(t));
    }
    Spawned { handle, pid: None }
}

fn handle_str(h: &BTreeMap<String, serde_json::Value>, k: &str) -> Option<String> {
    h.get(k).and_then(|v| v.as_str()).map(str::to_string)
}

#[async_trait]
impl RuntimeProvider for E2bProvider {
    fn name(&self) -> &str {
        "e2b"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            memory_snapshots: true,
            workspace_snapshots: false,
            fork: false,
            pause: true,
            network_policy: false,
            streaming_exec: true,
            stdin: true,
            resource_limits: true,
            isolation: "vm".to_string(),
            survives_daemon_restart: true,
            host_bound: false,
        }
    }

    async fn available(&self) -> Availability {
        if !self.has_key {
            return Availability::no(
                "no E2B API key: set E2B_API_KEY or the e2b runtime's api_key",
            );
        }
        let res = self
            .client
            .rest_once::<(), serde_json::Value>(Method::GET, "/v2/sandboxes?limit=1", None, None)
            .await;
        match res {
            Ok(_) => Availability::yes(format!("E2B endpoint {} answers", self.client.api_url))
                .detail("api_url", self.client.api_url.clone()),
            Err(e)
                if matches!(
                    e.code,
                    ErrorCode::Unauthenticated | ErrorCode::PermissionDenied
                ) =>
            {
                Availability::no(format!("the E2B API key was rejected: {}", e.message))
            }
            Err(e) => Availability::no(format!(
                "E2B endpoint {} does not answer: {}",
                self.client.api_url, e.message
            )),
        }
    }

    async fn spawn(&self, id: &str, spec: &SpawnSpec) -> Result<Spawned> {
        self.need_key()?;
        let template = spec
            .template
            .clone()
            .or_else(|| spec.image.clone())
            .unwrap_or_else(|| self.cfg.default_template.clone());
        let mut metadata = spec.labels.clone();
        let hops = spec.hops;
        metadata.insert("godel_id".to_string(), id.to_string());
        let body = NewSandbox {
            template_id: template,
            timeout: Some(self.cfg.sandbox_timeout.as_secs() as i64),
            auto_pause: Some(false),
            secure: Some(true),
            allow_internet_access: None,
            metadata: Some(metadata),
            env_vars: Some(spec.env.clone()),
        };
        let key = uuid::Uuid::new_v4().to_string();
        let (_, sb) = self
            .client
            .create(&body, &key, hops + 1)
            .await
            .map_err(|e| {
                // A server-side failure to create is a (retryable) spawn error.
                let e = if e.code == ErrorCode::Internal {
                    Error::spawn(e.message)
                } else {
                    e
                };
                e.with_runtime(id)
            })?;
        let sb = sb.ok_or_else(|| Error::spawn("E2B returned no sandbox"))?;
        Ok(self.bind(id, &sb))
    }

    async fn adopt(
        &self,
        id: &str,
        _spec: &SpawnSpec,
        handle: &Spawned,
    ) -> Result<Option<Spawned>> {
        let Some(sid) = handle_str(&handle.handle, "sandbox_id") else {
            return Ok(None);
        };
        match self.detail(&sid).await {
            Ok(d) => {
                let r = Remote {
                    sandbox_id: sid,
                    token: d
                        .envd_access_token
                        .or_else(|| handle_str(&handle.handle, "envd_access_token")),
                    domain: d.domain.or_else(|| handle_str(&handle.handle, "domain")),
                    envd_version: d.envd_version,
                    detached: false,
                };
                self.remotes().insert(id.to_string(), r.clone());
                Ok(Some(spawned(&r)))
            }
            Err(e) if e.code == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn terminate(&self, id: &str) -> Result<()> {
        let Some(r) = self.remotes().get(id).cloned() else {
            return Ok(());
        };
        if !r.detached {
            let path = format!("/sandboxes/{}", r.sandbox_id);
            match self
                .client
                .rest::<(), serde_json::Value>(Method::DELETE, &path, None, None)
                .await
            {
                Ok(_) => {}
                Err(e) if e.code == ErrorCode::NotFound => {}
                Err(e) => return Err(e.with_runtime(id)),
            }
        }
        self.remotes().remove(id);
        Ok(())
    }

    async fn status(&self, id: &str) -> Result<SandboxStatus> {
        let r = self.remote(id)?;
        if r.detached {
            let mut st = SandboxStatus::new(SandboxState::Paused);
            st.details
                .insert("sandbox_id".into(), serde_json::json!(r.sandbox_id));
            return Ok(st);
        }
        let d = self
            .detail(&r.sandbox_id)
            .await
            .map_err(|e| e.with_runtime(id))?;
        let state = match d.state {
            E2bState::Running => SandboxState::Running,
            E2bState::Paused => SandboxState::Paused,
        };
        let mut st = SandboxStatus::new(state);
        st.details
            .insert("sandbox_id".into(), serde_json::json!(r.sandbox_id));
        st.details
            .insert("template".into(), serde_json::json!(d.template_id));
        st.details
            .insert("end_at".into(), serde_json::json!(d.end_at.to_rfc3339()));
        if state == SandboxState::Running {
            let path = format!("/sandboxes/{}/metrics", r.sandbox_id);
            if let Ok((_, Some(points))) = self
                .client
                .rest_once::<(), Vec<SandboxMetric>>(Method::GET, &path, None, None)
                .await
                && let Some(p) = points.last()
            {
                st.details
                    .insert("cpu_used_pct".into(), serde_json::json!(p.cpu_used_pct));
                st.usage = Some(ResourceUsage {
                    memory_bytes: p.mem_used.max(0) as u64,
                    memory_peak_bytes: p.mem_used.max(0) as u64,
                    disk_bytes: p.disk_used.max(0) as u64,
                    ..Default::default()
                });
            }
        }
        Ok(st)
    }

    async fn list(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self.remotes().keys().cloned().collect();
        ids.sort();
        Ok(ids)
    }

    async fn pause(&self, id: &str) -> Result<()> {
        let (r, _) = self.envd(id)?;
        let path = format!("/sandboxes/{}/pause", r.sandbox_id);
        match self
            .client
            .rest::<(), serde_json::Value>(Method::POST, &path, None, None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code == ErrorCode::Conflict => Ok(()),
            Err(e) => Err(e.with_runtime(id)),
        }
    }

    async fn resume(&self, id: &str) -> Result<()> {
        let r = self.remote(id)?;
        let sb = self
            .connect_remote(&r.sandbox_id)
            .await
            .map_err(|e| e.with_runtime(id))?;
        self.bind(id, &sb);
        Ok(())
    }

    async fn exec(&self, id: &str, req: ExecRequest) -> Result<ExecHandle> {
        req.validate()?;
        let (_, t) = self.envd(id)?;
        exec::start(&self.client, t, req)
            .await
            .map_err(|e| e.with_runtime(id))
    }

    async fn read_file(&self, id: &str, path: &str) -> Result<Bytes> {
        let (_, t) = self.envd(id)?;
        files::read(&self.client, &t, path).await
    }

    async fn write_file(&self, id: &str, path: &str, data: Bytes) -> Result<()> {
        let (r, t) = self.envd(id)?;
        files::write(&self.client, &t, path, data, Self::octet_stream(&r)).await
    }

    async fn list_dir(&self, id: &str, path: &str) -> Result<Vec<FileEntry>> {
        let (_, t) = self.envd(id)?;
        files::list(&self.client, &t, path).await
    }

    async fn stat(&self, id: &str, path: &str) -> Result<FileEntry> {
        let (_, t) = self.envd(id)?;
        files::stat(&self.client, &t, path).await
    }

    async fn make_dir(&self, id: &str, path: &str) -> Result<()> {
        let (_, t) = self.envd(id)?;
        files::make_dir(&self.client, &t, path).await
    }

    async fn rename(&self, id: &str, from: &str, to: &str) -> Result<()> {
        let (_, t) = self.envd(id)?;
        files::rename(&self.client, &t, from, to).await
    }

    async fn remove(&self, id: &str, path: &str, recursive: bool) -> Result<()> {
        let (_, t) = self.envd(id)?;
        files::remove(&self.client, &t, path, recursive).await
    }

    async fn upload_tar(&self, id: &str, path: &str, tar: Bytes) -> Result<()> {
        let (r, t) = self.envd(id)?;
        files::upload_tar(&self.client, &t, path, tar, Self::octet_stream(&r)).await
    }

    async fn download_tar(&self, id: &str, path: &str) -> Result<Bytes> {
        let (_, t) = self.envd(id)?;
        files::download_tar(&self.client, &t, path).await
    }

    async fn snapshot(
        &self,
        id: &str,
        _req: &SnapshotRequest,
        target: &SnapshotTarget,
    ) -> Result<SnapshotArtifact> {
        let (r, _) = self.envd(id)?;
        self.pause(id).await?;
        let manifest = serde_json::json!({
            "kind": "e2b-pause",
            "sandbox_id": r.sandbox_id,
            "domain": r.domain,
            "envd_version": r.envd_version,
        });
        let file = target.dir.join("e2b-snapshot.json");
        let text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::internal(format!("cannot encode the snapshot manifest: {e}")))?;
        tokio::fs::write(&file, &text)
            .await
            .map_err(|e| Error::io(format!("write {}", file.display()), &e))?;
        if let Some(rem) = self.remotes().get_mut(id) {
            rem.detached = true;
        }
        let mut data = BTreeMap::new();
        data.insert(
            "e2b_sandbox_id".to_string(),
            serde_json::json!(r.sandbox_id),
        );
        Ok(SnapshotArtifact {
            size_bytes: text.len() as u64,
            kind: "vm".to_string(),
            data,
        })
    }

    async fn restore(
        &self,
        id: &str,
        snapshot: &SnapshotInfo,
        _spec: &SpawnSpec,
    ) -> Result<Spawned> {
        self.need_key()?;
        let sid = snapshot
            .data
            .get("e2b_sandbox_id")
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                Error::invalid(format!("snapshot {} is not an e2b pause", snapshot.id))
            })?;
        let sb = self.connect_remote(sid).await.map_err(|e| {
            if e.code == ErrorCode::NotFound {
                Error::not_found(format!(
                    "the paused E2B sandbox {sid} of snapshot {} is gone (each e2b snapshot restores once)",
                    snapshot.id
                ))
            } else {
                e
            }
        })?;
        // The source id no longer owns the sandbox.
        self.remotes().retain(|_, r| r.sandbox_id != sid);
        Ok(self.bind(id, &sb))
    }

    async fn delete_snapshot(&self, snapshot: &SnapshotInfo) -> Result<()> {
        let Some(sid) = snapshot.data.get("e2b_sandbox_id").and_then(|v| v.as_str()) else {
            return Ok(());
        };
        let attached = self
            .remotes()
            .values()
            .any(|r| r.sandbox_id == sid && !r.detached);
        if attached {
            return Ok(());
        }
        self.remotes().retain(|_, r| r.sandbox_id != sid);
        let path = format!("/sandboxes/{sid}");
        match self
            .client
            .rest::<(), serde_json::Value>(Method::DELETE, &path, None, None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code == ErrorCode::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}
