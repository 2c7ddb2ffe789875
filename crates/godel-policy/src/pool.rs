//! Warm pools: pre-created runtimes handed out to matching spawns.
//!
//! [`WarmPools`] keeps `size` ready runtime ids per [`PoolKey`] (runtime +
//! repo/ref or template, optionally reserved for one team). It is generic
//! over two async closures from the daemon: *create* (spawn a warm runtime for
//! a key, returning its id; the daemon writes its record with a `pool` label)
//! and *destroy* (terminate one). A claim is an O(1) pop; after it a
//! background task per pool refills it one creation at a time, backing off
//! (1 s doubling to 60 s) while creation fails. `shutdown` stops the refills
//! and destroys every ready runtime.
//!
//! ## Which spawns match a pool ([`pool_key`])
//! A warm runtime was created from the pool's settings only, so a request
//! matches when it asks for nothing a warm runtime lacks: the resolved runtime
//! is the pool's; it names a `template` (then no `repo`) or a `repo` (its `ref`
//! defaulting to `HEAD` on both sides); and it has no `image`, `env`,
//! `volumes`, explicit `resources`, non-default `network`, `isolation` or
//! `workspace` mode. Labels and the spawn timeout do not matter (labels live
//! in the record). A team's own pool is tried before a shared pool.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use godel_core::{
    Error, Isolation, NetworkConfig, ResourceLimits, Result, SpawnSpec, WorkspaceMode,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::PoolConfig;

/// Where a pool's workspaces come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolSource {
    Repo { repo: String, git_ref: String },
    Template { template: String },
}

/// What identifies a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PoolKey {
    pub runtime: String,
    pub source: PoolSource,
    /// Reserved for this team; `None` = shared.
    pub team: Option<String>,
}

impl std::fmt::Display for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:", self.runtime)?;
        match &self.source {
            PoolSource::Repo { repo, git_ref } => write!(f, "{repo}@{git_ref}")?,
            PoolSource::Template { template } => write!(f, "template={template}")?,
        }
        if let Some(t) = &self.team {
            write!(f, " (team {t})")?;
        }
        Ok(())
    }
}

const DEFAULT_REF: &str = "HEAD";

impl PoolKey {
    /// The key of a configured pool.
    pub fn from_config(p: &PoolConfig) -> Result<PoolKey> {
        let source = match (&p.template, &p.repo) {
            (Some(t), _) => PoolSource::Template {
                template: t.clone(),
            },
            (None, Some(r)) => PoolSource::Repo {
                repo: r.clone(),
                git_ref: p.git_ref.clone().unwrap_or_else(|| DEFAULT_REF.into()),
            },
            (None, None) => return Err(Error::invalid("a pool needs a repo or a template")),
        };
        Ok(PoolKey {
            runtime: p.runtime.clone(),
            source,
            team: p.team.clone(),
        })
    }

    /// The spec warm runtimes of this pool are created from (the daemon fills
    /// in team defaults such as resource limits).
    pub fn spec(&self) -> SpawnSpec {
        let mut s = SpawnSpec {
            runtime: Some(self.runtime.clone()),
            team: self.team.clone(),
            ..Default::default()
        };
        match &self.source {
            PoolSource::Repo { repo, git_ref } => {
                s.repo = Some(repo.clone());
                s.git_ref = Some(git_ref.clone());
            }
            PoolSource::Template { template } => s.template = Some(template.clone()),
        }
        s
    }

    /// The same pool, shared (no team).
    pub fn shared(&self) -> PoolKey {
        PoolKey {
            team: None,
            ..self.clone()
        }
    }
}

/// The shared pool key a spawn request could be served from, or `None` when
/// it asks for something a warm runtime does not have. `runtime` is the
/// resolved runtime (the request's or the team's default).
pub fn pool_key(spec: &SpawnSpec, runtime: &str) -> Option<PoolKey> {
    let plain = spec.image.is_none()
        && spec.env.is_empty()
        && spec.volumes.is_empty()
        && spec.resources == ResourceLimits::default()
        && spec.network == NetworkConfig::default()
        && spec.isolation == Isolation::default()
        && spec.workspace == WorkspaceMode::default()
        && spec.runtime.as_deref().is_none_or(|r| r == runtime);
    if !plain {
        return None;
    }
    let source = match (&spec.template, &spec.repo) {
        (Some(t), None) => PoolSource::Template {
            template: t.clone(),
        },
        (None, Some(r)) => PoolSource::Repo {
            repo: r.clone(),
            git_ref: spec.git_ref.clone().unwrap_or_else(|| DEFAULT_REF.into()),
        },
        _ => return None,
    };
    Some(PoolKey {
        runtime: runtime.to_string(),
        source,
        team: None,
    })
}

/// Creates one warm runtime for a key and returns its id.
pub type CreateFn = Arc<dyn Fn(PoolKey) -> BoxFuture<'static, Result<String>> + Send + Sync>;
/// Destroys one warm runtime by id.
pub type DestroyFn = Arc<dyn Fn(String) -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// What the pools did, for events and logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PoolEvent {
    Created {
        key: PoolKey,
        id: String,
    },
    CreateFailed {
        key: PoolKey,
        error: Error,
        retry_in_ms: u64,
    },
    Claimed {
        key: PoolKey,
        id: String,
    },
    Destroyed {
        id: String,
    },
    DestroyFailed {
        id: String,
        error: Error,
    },
}

impl PoolEvent {
    /// The event the daemon stores: `pool_created`, `pool_create_failed`,
    /// `pool_claimed`, `pool_destroyed` or `pool_destroy_failed`.
    pub fn to_event(&self) -> godel_core::Event {
        let (kind, id) = match self {
            PoolEvent::Created { id, .. } => (godel_core::EventKind::PoolCreated, Some(id)),
            PoolEvent::CreateFailed { .. } => (godel_core::EventKind::PoolCreateFailed, None),
            PoolEvent::Claimed { id, .. } => (godel_core::EventKind::PoolClaimed, Some(id)),
            PoolEvent::Destroyed { id } => (godel_core::EventKind::PoolDestroyed, Some(id)),
            PoolEvent::DestroyFailed { id, .. } => {
                (godel_core::EventKind::PoolDestroyFailed, Some(id))
            }
        };
        let mut ev =
            godel_core::Event::new(kind).data(serde_json::to_value(self).unwrap_or_default());
        if let Some(id) = id {
            ev = ev.runtime(id);
        }
        ev
    }
}

/// Listener for pool events.
pub type PoolListener = Arc<dyn Fn(&PoolEvent) + Send + Sync>;

struct Pool {
    size: usize,
    ready: VecDeque<String>,
    wake: Arc<Notify>,
}

struct Inner {
    pools: Mutex<HashMap<PoolKey, Pool>>,
    create: CreateFn,
    destroy: DestroyFn,
    listener: OnceLock<PoolListener>,
    closed: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Inner {
    fn emit(&self, ev: PoolEvent) {
        if let Some(l) = self.listener.get() {
            l(&ev);
        }
    }
}

/// The warm pools of the daemon. Cheap to clone.
#[derive(Clone)]
pub struct WarmPools {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WarmPools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPools")
            .field("ready", &self.ready_counts())
            .finish()
    }
}

const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl WarmPools {
    /// Pools of the given sizes. Nothing is created before [`WarmPools::start`].
    pub fn new(
        pools: impl IntoIterator<Item = (PoolKey, usize)>,
        create: CreateFn,
        destroy: DestroyFn,
    ) -> Self {
        let map = pools
            .into_iter()
            .map(|(k, size)| {
                (
                    k,
                    Pool {
                        size,
                        ready: VecDeque::new(),
                        wake: Arc::new(Notify::new()),
                    },
                )
            })
            .collect();
        WarmPools {
            inner: Arc::new(Inner {
                pools: Mutex::new(map),
                create,
                destroy,
                listener: OnceLock::new(),
                closed: AtomicBool::new(false),
                tasks: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Pools from the configuration's `[[pool]]` entries.
    pub fn from_config(pools: &[PoolConfig], create: CreateFn, destroy: DestroyFn) -> Result<Self> {
        let keys = pools
            .iter()
            .map(|p| PoolKey::from_config(p).map(|k| (k, p.size)))
            .collect::<Result<Vec<_>>>()?;
        Ok(WarmPools::new(keys, create, destroy))
    }

    /// Report events to `listener`. Only the first listener set is kept.
    pub fn set_listener(&self, listener: PoolListener) -> bool {
        self.inner.listener.set(listener).is_ok()
    }

    /// Start one refill task per pool.
    pub fn start(&self) {
        let keys: Vec<(PoolKey, Arc<Notify>)> = self
            .inner
            .pools
            .lock()
            .iter()
            .map(|(k, p)| (k.clone(), p.wake.clone()))
            .collect();
        let mut tasks = self.inner.tasks.lock();
        for (key, wake) in keys {
            tasks.push(tokio::spawn(refill(self.inner.clone(), key, wake)));
        }
    }

    /// Take a ready runtime of exactly this pool.
    pub fn claim(&self, key: &PoolKey) -> Option<String> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return None;
        }
        let id = {
            let mut map = self.inner.pools.lock();
            let pool = map.get_mut(key)?;
            let id = pool.ready.pop_front()?;
            pool.wake.notify_one();
            id
        };
        self.inner.emit(PoolEvent::Claimed {
            key: key.clone(),
            id: id.clone(),
        });
        Some(id)
    }

    /// Take a ready runtime for `team`: its own pool first, then the shared one.
    pub fn claim_for_team(&self, key: &PoolKey, team: Option<&str>) -> Option<(PoolKey, String)> {
        if let Some(t) = team {
            let own = PoolKey {
                team: Some(t.to_string()),
                ..key.clone()
            };
            if let Some(id) = self.claim(&own) {
                return Some((own, id));
            }
        }
        let shared = key.shared();
        self.claim(&shared).map(|id| (shared, id))
    }

    /// Ready runtimes of one pool.
    pub fn ready(&self, key: &PoolKey) -> usize {
        self.inner
            .pools
            .lock()
            .get(key)
            .map_or(0, |p| p.ready.len())
    }

    /// Ready runtimes per pool.
    pub fn ready_counts(&self) -> Vec<(PoolKey, usize, usize)> {
        let mut v: Vec<_> = self
            .inner
            .pools
            .lock()
            .iter()
            .map(|(k, p)| (k.clone(), p.ready.len(), p.size))
            .collect();
        v.sort();
        v
    }

    /// Whether `id` is a ready (unclaimed) warm runtime (reconciliation keeps those).
    pub fn is_ready(&self, id: &str) -> bool {
        self.inner
            .pools
            .lock()
            .values()
            .any(|p| p.ready.iter().any(|r| r == id))
    }

    /// Stop refilling, wait for creations in flight, destroy every ready runtime.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        for p in self.inner.pools.lock().values() {
            p.wake.notify_one();
        }
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.inner.tasks.lock());
        for t in tasks {
            let _ = t.await;
        }
        let ids: Vec<String> = self
            .inner
            .pools
            .lock()
            .values_mut()
            .flat_map(|p| p.ready.drain(..).collect::<Vec<_>>())
            .collect();
        for id in ids {
            destroy_one(&self.inner, id).await;
        }
    }
}

async fn destroy_one(inner: &Inner, id: String) {
    match (inner.destroy)(id.clone()).await {
        Ok(()) => inner.emit(PoolEvent::Destroyed { id }),
        Err(error) => {
            tracing::warn!(%id, %error, "destroying a warm runtime failed");
            inner.emit(PoolEvent::DestroyFailed { id, error })
        }
    }
}

async fn refill(inner: Arc<Inner>, key: PoolKey, wake: Arc<Notify>) {
    let mut failures = 0u32;
    loop {
        if inner.closed.load(Ordering::SeqCst) {
            return;
        }
        let need = inner
            .pools
            .lock()
            .get(&key)
            .is_some_and(|p| p.ready.len() < p.size);
        if !need {
            wake.notified().await;
            continue;
        }
        match (inner.create)(key.clone()).await {
            Ok(id) => {
                failures = 0;
                let kept = {
                    let mut map = inner.pools.lock();
                    match map.get_mut(&key) {
                        Some(p) if !inner.closed.load(Ordering::SeqCst) => {
                            p.ready.push_back(id.clone());
                            true
                        }
                        _ => false,
                    }
                };
                if kept {
                    inner.emit(PoolEvent::Created {
                        key: key.clone(),
                        id,
                    });
                } else {
                    destroy_one(&inner, id).await;
                    return;
                }
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(pool = %key, %error, failures, "creating a warm runtime failed");
                let delay = Duration::from_secs(1)
                    .checked_mul(1u32.checked_shl(failures - 1).unwrap_or(u32::MAX))
                    .unwrap_or(MAX_BACKOFF)
                    .min(MAX_BACKOFF);
                inner.emit(PoolEvent::CreateFailed {
                    key: key.clone(),
                    error,
                    retry_in_ms: delay.as_millis() as u64,
                });
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = wake.notified() => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> SpawnSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn matching_rule() {
        let k = pool_key(&spec(r#"{"repo":"/r"}"#), "worktree").unwrap();
        assert_eq!(
            k.source,
            PoolSource::Repo {
                repo: "/r".into(),
                git_ref: "HEAD".into()
            }
        );
        let k2 = pool_key(
            &spec(r#"{"runtime":"worktree","repo":"/r","ref":"HEAD","labels":{"a":"b"}}"#),
            "worktree",
        )
        .unwrap();
        assert_eq!(k, k2);
        let k3 = pool_key(&spec(r#"{"template":"py"}"#), "e2b").unwrap();
        assert_eq!(k3.to_string(), "e2b:template=py");
        for bad in [
            r#"{"repo":"/r","env":{"A":"1"}}"#,
            r#"{"repo":"/r","resources":{"memory":"1Gi"}}"#,
            r#"{"repo":"/r","network":{"mode":"nat"}}"#,
            r#"{"repo":"/r","isolation":"none"}"#,
            r#"{"repo":"/r","image":"python:3"}"#,
            r#"{"repo":"/r","template":"t"}"#,
            r#"{"runtime":"microvm","repo":"/r"}"#,
            r#"{}"#,
        ] {
            assert!(pool_key(&spec(bad), "worktree").is_none(), "{bad}");
        }
        let cfg = PoolConfig {
            runtime: "worktree".into(),
            repo: Some("/r".into()),
            git_ref: None,
            template: None,
            size: 2,
            team: Some("alpha".into()),
        };
        let ev = PoolEvent::Claimed {
            key: k.clone(),
            id: "rt-1".into(),
        }
        .to_event();
        assert_eq!(
            (ev.kind.as_str(), ev.runtime_id.as_deref()),
            ("pool_claimed", Some("rt-1"))
        );
        assert_eq!(ev.data["key"]["runtime"], "worktree");
        let pk = PoolKey::from_config(&cfg).unwrap();
        assert_eq!(pk.shared(), k);
        assert_eq!(pk.spec().git_ref.as_deref(), Some("HEAD"));
    }
}
