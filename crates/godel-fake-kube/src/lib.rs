//! godel-fake-kube: a fake Kubernetes API server for godel-kube's tests and
//! `godel bench kube`. It speaks real HTTP and the real WebSocket exec
//! protocol on 127.0.0.1, so godel's provider is tested through kube-rs
//! over the network, never by mocking kube-rs.
//!
//! 1. [`store`] keeps objects as JSON with one `resourceVersion` counter and
//!    a change history; list/watch (`watch=true` JSON lines) read from it.
//! 2. [`api`] routes `/api/v1/...` and `/apis/<group>/<version>/...`:
//!    create, get, list (selectors, paging), watch, delete, replace,
//!    server-side apply ([`apply`], 409 on conflicts without `force`).
//! 3. [`pods`] admits pods (RuntimeClass, LimitRange, ResourceQuota → 403
//!    `exceeded quota`) and drives them Pending → Running or to a failure.
//! 4. [`exec`] runs exec'd commands as local processes in a per-pod
//!    directory that stands for the pod's `/home/user`, streaming
//!    `v5.channel.k8s.io`/`v4.channel.k8s.io` frames and the exit status.

mod api;
mod apply;
mod exec;
mod pods;
mod status;
mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};

use self::store::Store;

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// Delay between a pod's creation and its outcome (Running, pull error ...).
    pub pod_startup: Duration,
    /// The one node's allocatable CPU (pods requesting more are Unschedulable).
    pub node_cpu_millis: u64,
    /// The one node's allocatable memory.
    pub node_memory_bytes: u64,
    /// RuntimeClasses that exist.
    pub runtime_classes: Vec<String>,
    /// Where pod directories live (a temporary directory when `None`).
    pub pods_root: Option<PathBuf>,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            pod_startup: Duration::ZERO,
            node_cpu_millis: 64_000,
            node_memory_bytes: 256 << 30,
            runtime_classes: vec!["kata".into()],
            pods_root: None,
        }
    }
}

/// State shared by the server's handlers.
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    pub opts: FakeOptions,
    pub pods_root: PathBuf,
    pub next_ip: AtomicU32,
    /// Server-side handling time of each pod create, for the benchmark.
    pub create_times: Mutex<Vec<Duration>>,
}

impl Shared {
    /// The directory standing for `/home/user` of a pod.
    pub fn pod_dir(&self, ns: &str, name: &str) -> PathBuf {
        self.pods_root.join(ns).join(name)
    }

    /// Modify a pod if it still exists with this uid.
    pub fn update_pod(&self, ns: &str, name: &str, uid: &str, f: impl FnOnce(&mut Value)) -> bool {
        let mut store = self.store.lock();
        let Some(entry) = store.get("pods", ns, name) else {
            return false;
        };
        if entry.obj["metadata"]["uid"] != uid {
            return false;
        }
        let (mut obj, owners) = (entry.obj.clone(), entry.owners.clone());
        f(&mut obj);
        store.put("pods", ns, name, obj, owners);
        true
    }
}

/// A running fake API server. Stops when dropped.
pub struct FakeApiServer {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    _tmp: Option<tempfile::TempDir>,
}

impl FakeApiServer {
    /// Start on 127.0.0.1 with a random port.
    pub async fn start(opts: FakeOptions) -> std::io::Result<Self> {
        let (root, tmp) = match &opts.pods_root {
            Some(p) => (p.clone(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("godel-fake-k8s-")
                    .tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let mut store = Store::new();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        for rc in &opts.runtime_classes {
            store.put(
                "runtimeclasses",
                "",
                rc,
                json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                       "metadata": {"name": rc, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now},
                       "handler": rc}),
                Default::default(),
            );
        }
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            opts,
            pods_root: root,
            next_ip: AtomicU32::new(2),
            create_times: Mutex::new(Vec::new()),
        });
        // A deep accept queue: a thousand concurrent clients must not see
        // dropped SYNs (and the kernel's 1 s, 3 s, 7 s ... retransmissions).
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let listener = socket.listen(4096)?;
        let addr = listener.local_addr()?;
        let app = api::router(shared.clone());
        let task = tokio::spawn(async move {
            // Like the real API server: no Nagle delay on small watch and exec frames.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!("fake apiserver stopped: {e}");
            }
        });
        Ok(FakeApiServer {
            addr,
            shared,
            task,
            _tmp: tmp,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube-rs client talking to this server over HTTP.
    pub fn client(&self) -> godel_core::Result<kube::Client> {
        let uri = self
            .url()
            .parse()
            .map_err(|e| godel_core::Error::internal(format!("fake apiserver url: {e}")))?;
        let cfg = kube::Config::new(uri);
        kube::Client::try_from(cfg)
            .map_err(|e| godel_core::Error::internal(format!("fake apiserver client: {e}")))
    }

    /// The directory standing for `/home/user` of a pod.
    pub fn pod_dir(&self, namespace: &str, pod: &str) -> PathBuf {
        self.shared.pod_dir(namespace, pod)
    }

    /// A stored object as JSON (`plural` like `pods`; `""` namespace for cluster objects).
    pub fn object(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let kind = store::KINDS.iter().find(|k| k.plural == plural)?;
        let store = self.shared.store.lock();
        let mut obj = store
            .get(kind.plural, namespace, name)
            .map(|e| e.obj.clone())?;
        if kind.plural == "resourcequotas" {
            pods::fill_quota_status(&store, &mut obj);
        }
        Some(obj)
    }

    /// Names of the stored objects of a kind in a namespace (all when `None`).
    pub fn names(&self, plural: &str, namespace: Option<&str>) -> Vec<String> {
        let Some(kind) = store::KINDS.iter().find(|k| k.plural == plural) else {
            return Vec::new();
        };
        self.shared
            .store
            .lock()
            .list(kind.plural, namespace)
            .iter()
            .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    }

    /// Simulate the kubelet restarting the container of a pod (its restart count goes up).
    pub fn restart_container(&self, namespace: &str, pod: &str, exit_code: i32) -> bool {
        let Some(uid) = self.pod_uid(namespace, pod) else {
            return false;
        };
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        self.shared.update_pod(namespace, pod, &uid, |p| {
            let cs = &mut p["status"]["containerStatuses"][0];
            let n = cs["restartCount"].as_i64().unwrap_or(0) + 1;
            cs["restartCount"] = json!(n);
            cs["lastState"] = json!({"terminated": {"exitCode": exit_code, "reason": if exit_code == 137 { "OOMKilled" } else { "Error" }, "startedAt": now, "finishedAt": now}});
        })
    }

    /// Simulate the pod failing (phase Failed with a reason), as after an eviction.
    pub fn fail_pod(&self, namespace: &str, pod: &str, reason: &str, message: &str) -> bool {
        let Some(uid) = self.pod_uid(namespace, pod) else {
            return false;
        };
        self.shared.update_pod(namespace, pod, &uid, |p| {
            p["status"]["phase"] = json!("Failed");
            p["status"]["reason"] = json!(reason);
            p["status"]["message"] = json!(message);
        })
    }

    /// Delete a pod behind godel's back (as an operator or the node would).
    pub fn delete_pod(&self, namespace: &str, pod: &str) -> bool {
        self.shared
            .store
            .lock()
            .remove("pods", namespace, pod)
            .is_some()
    }

    /// Server-side handling time of every pod create so far.
    pub fn create_times(&self) -> Vec<Duration> {
        self.shared.create_times.lock().clone()
    }

    fn pod_uid(&self, namespace: &str, pod: &str) -> Option<String> {
        self.shared
            .store
            .lock()
            .get("pods", namespace, pod)
            .and_then(|e| e.obj["metadata"]["uid"].as_str().map(str::to_string))
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
