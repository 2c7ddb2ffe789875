//! `KubeProvider`: construction (kubeconfig, context, in-cluster), the team
//! namespace set-up by server-side apply (once per team, cached), spawn
//! (create the pod, wait until it runs or fails), adopt, terminate, status
//! and availability. Exec, files and snapshots live in their own modules.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use godel_core::{
    Availability, Error, EventSink, Result, SandboxState, SandboxStatus, SpawnSpec, Spawned,
};
use k8s_openapi::api::core::v1::{LimitRange, Namespace, Pod, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::OnceCell;

use crate::config::{KubeConfig, TeamQuota};
use crate::errors::{chain, map_kube};
use crate::manifests;
use crate::names::{AGENT_LABEL, FIELD_MANAGER, team_namespace};
use crate::wait::{PodOutcome, classify, settled};

/// Where one agent lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AgentRef {
    pub namespace: String,
    pub pod: String,
    pub team: String,
}

/// Where a spawn's time went (see [`KubeProvider::record_spawn_timings`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpawnTiming {
    pub total: Duration,
    /// Awaiting API responses: team set-up, pod create, and the wait for Running.
    pub api_wait: Duration,
    pub create_rtt: Duration,
}

/// The provider's shared state.
pub(crate) struct Inner {
    pub client: Option<Client>,
    pub client_error: Option<String>,
    pub cfg: KubeConfig,
    pub events: EventSink,
    pub agents: RwLock<HashMap<String, AgentRef>>,
    teams: Mutex<HashMap<String, Arc<OnceCell<()>>>>,
    quotas: RwLock<HashMap<String, TeamQuota>>,
    /// `namespace/pod` keys godel itself is deleting (not reported as `died`).
    pub terminating: Mutex<HashSet<String>>,
    pub timings: Mutex<Option<Vec<SpawnTiming>>>,
}

/// The `kata` runtime: agents as Kubernetes pods.
pub struct KubeProvider {
    pub(crate) inner: Arc<Inner>,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for KubeProvider {
    fn drop(&mut self) {
        if let Some(w) = &self.watcher {
            w.abort();
        }
    }
}

async fn build_client(cfg: &KubeConfig) -> std::result::Result<Client, String> {
    let config = if cfg.in_cluster {
        kube::Config::incluster().map_err(|e| format!("in-cluster configuration: {}", chain(&e)))?
    } else {
        let opts = kube::config::KubeConfigOptions {
            context: cfg.context.clone(),
            ..Default::default()
        };
        match &cfg.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| format!("kubeconfig {}: {}", path.display(), chain(&e)))?;
                kube::Config::from_custom_kubeconfig(kc, &opts)
                    .await
                    .map_err(|e| format!("kubeconfig {}: {}", path.display(), chain(&e)))?
            }
            None if cfg.context.is_some() => kube::Config::from_kubeconfig(&opts)
                .await
                .map_err(|e| format!("kubeconfig: {}", chain(&e)))?,
            None => kube::Config::infer().await.map_err(|e| {
                format!("no Kubernetes configuration (set KUBECONFIG, kube.kubeconfig or kube.in_cluster): {}", chain(&e))
            })?,
        }
    };
    Client::try_from(config).map_err(|e| format!("Kubernetes client: {}", chain(&e)))
}

impl KubeProvider {
    /// Build from configuration. A missing or broken kubeconfig does not fail
    /// construction: `available()` then says why and calls return UNAVAILABLE.
    pub async fn new(cfg: KubeConfig, events: EventSink) -> Result<Self> {
        validate_config(&cfg)?;
        match build_client(&cfg).await {
            Ok(client) => Self::with_client(client, cfg, events),
            Err(why) => Ok(Self::build(None, Some(why), cfg, events)),
        }
    }

    /// Build around an existing client (tests use one pointing at the fake API server).
    pub fn with_client(client: Client, cfg: KubeConfig, events: EventSink) -> Result<Self> {
        validate_config(&cfg)?;
        let mut p = Self::build(Some(client), None, cfg, events);
        if tokio::runtime::Handle::try_current().is_ok() {
            p.watcher = Some(tokio::spawn(crate::watch::run(p.inner.clone())));
        }
        Ok(p)
    }

    fn build(
        client: Option<Client>,
        client_error: Option<String>,
        cfg: KubeConfig,
        events: EventSink,
    ) -> Self {
        KubeProvider {
            inner: Arc::new(Inner {
                client,
                client_error,
                cfg,
                events,
                agents: RwLock::new(HashMap::new()),
                teams: Mutex::new(HashMap::new()),
                quotas: RwLock::new(HashMap::new()),
                terminating: Mutex::new(HashSet::new()),
                timings: Mutex::new(None),
            }),
            watcher: None,
        }
    }

    /// Start (or stop) recording where each successful spawn's time goes.
    pub fn record_spawn_timings(&self, on: bool) {
        *self.inner.timings.lock() = on.then(Vec::new);
    }

    /// The timings recorded since the last call.
    pub fn take_spawn_timings(&self) -> Vec<SpawnTiming> {
        self.inner
            .timings
            .lock()
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The configuration in use.
    pub fn config(&self) -> &KubeConfig {
        &self.inner.cfg
    }

    /// Set a team's quota; applied to its namespace on the next spawn.
    pub fn set_team_quota(&self, team: &str, quota: TeamQuota) {
        self.inner.quotas.write().insert(team.to_string(), quota);
        self.inner.teams.lock().remove(team);
    }

    /// Apply the team's namespace, quota, limits, network policy and RBAC now
    /// (spawn does this on a team's first use).
    pub async fn ensure_team(&self, team: &str) -> Result<()> {
        self.inner.ensure_team(team).await
    }
}

fn validate_config(cfg: &KubeConfig) -> Result<()> {
    for e in &cfg.egress_allow {
        manifests::parse_egress(e)?;
    }
    if cfg.runtime_class.trim().is_empty() {
        return Err(Error::invalid("kube.runtime_class must not be empty"));
    }
    Ok(())
}

impl Inner {
    pub fn client(&self) -> Result<Client> {
        self.client.clone().ok_or_else(|| {
            Error::unavailable(format!(
                "kata runtime unavailable: {}",
                self.client_error
                    .as_deref()
                    .unwrap_or("no Kubernetes client")
            ))
        })
    }

    pub fn agent(&self, id: &str) -> Result<AgentRef> {
        self.agents.read().get(id).cloned().ok_or_else(|| {
            Error::not_found(format!("kata runtime {id} not found")).with_runtime(id)
        })
    }

    fn quota(&self, team: &str) -> TeamQuota {
        self.quotas
            .read()
            .get(team)
            .copied()
            .unwrap_or(self.cfg.default_quota)
    }

    async fn apply<K>(&self, api: Api<K>, obj: &K) -> Result<()>
    where
        K: Resource + Serialize + DeserializeOwned + Clone + Debug,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(&name, &params, &Patch::Apply(obj))
            .await
            .map(|_| ())
            .map_err(|e| {
                let kind = std::any::type_name::<K>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("object");
                map_kube(&format!("apply {kind} {name}"), e)
            })
    }

    async fn apply_team(&self, team: &str) -> Result<()> {
        let client = self.client()?;
        let cfg = &self.cfg;
        let quota = self.quota(team);
        let ns = team_namespace(team, cfg);
        self.apply(
            Api::<Namespace>::all(client.clone()),
            &manifests::namespace(team, cfg),
        )
        .await?;
        let netpol = manifests::network_policy(team, cfg);
        let egress = manifests::egress_policy(team, cfg)?;
        let c = || client.clone();
        let (rq, lr) = (
            manifests::resource_quota(team, cfg, &quota),
            manifests::limit_range(team, cfg, &quota),
        );
        let (sa, role) = (
            manifests::service_account(team, cfg),
            manifests::role(team, cfg),
        );
        futures::try_join!(
            self.apply(Api::<ResourceQuota>::namespaced(c(), &ns), &rq),
            self.apply(Api::<LimitRange>::namespaced(c(), &ns), &lr),
            self.apply(Api::<NetworkPolicy>::namespaced(c(), &ns), &netpol),
            self.apply(Api::<NetworkPolicy>::namespaced(c(), &ns), &egress),
            self.apply(Api::<ServiceAccount>::namespaced(c(), &ns), &sa),
            self.apply(Api::<Role>::namespaced(c(), &ns), &role),
        )?;
        self.apply(
            Api::<RoleBinding>::namespaced(c(), &ns),
            &manifests::role_binding(team, cfg),
        )
        .await?;
        (self.events)(
            godel_core::Event::new(godel_core::EventKind::TeamNamespaceApplied)
                .team(team)
                .data(json!({"namespace": ns})),
        );
        Ok(())
    }

    pub async fn ensure_team(&self, team: &str) -> Result<()> {
        godel_core::validate_name("team", team)?;
        let cell = self
            .teams
            .lock()
            .entry(team.to_string())
            .or_default()
            .clone();
        cell.get_or_try_init(|| self.apply_team(team))
            .await
            .map(|_| ())
    }

    fn forget_team(&self, team: &str) {
        self.teams.lock().remove(team);
    }

    /// Delete a pod godel owns (404 is fine).
    pub async fn delete_pod(&self, agent: &AgentRef) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client()?, &agent.namespace);
        let key = format!("{}/{}", agent.namespace, agent.pod);
        self.terminating.lock().insert(key.clone());
        let result = api
            .delete(&agent.pod, &DeleteParams::default().grace_period(5))
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                // No deletion event will come: forget the key.
                self.terminating.lock().remove(&key);
                match e {
                    kube::Error::Api(s) if s.code == 404 => Ok(()),
                    e => Err(map_kube(&format!("delete pod {key}"), e)),
                }
            }
        }
    }

    pub async fn spawn(&self, id: &str, spec: &SpawnSpec) -> Result<Spawned> {
        let t0 = Instant::now();
        spec.validate()?;
        if let Some(v) = spec.volumes.first() {
            return Err(Error::invalid(format!(
                "volume {:?}: runtime kata does not mount host directories; use the worktree runtime for volumes",
                v.name
            ))
            .with_runtime(id));
        }
        if !spec.network.allow.is_empty() || !spec.network.deny.is_empty() {
            return Err(Error::invalid(
                "network.allow/network.deny: runtime kata applies its team's network policy, not per-sandbox egress rules",
            )
            .with_runtime(id));
        }
        let client = self.client()?;
        let team = spec.team.clone().unwrap_or_else(|| "default".to_string());
        let t_team = Instant::now();
        self.ensure_team(&team)
            .await
            .map_err(|e| e.with_runtime(id))?;
        let mut api_wait = t_team.elapsed();
        let pod = manifests::agent_pod(&team, id, &self.cfg, spec)?;
        let ns = team_namespace(&team, &self.cfg);
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client, &ns);
        let t_create = Instant::now();
        let created = match api.create(&PostParams::default(), &pod).await {
            Err(kube::Error::Api(s)) if s.code == 404 => {
                // The namespace went away behind our back: set the team up again.
                self.forget_team(&team);
                self.ensure_team(&team).await?;
                api.create(&PostParams::default(), &pod).await
            }
            other => other,
        };
        let create_rtt = t_create.elapsed();
        api_wait += create_rtt;
        created.map_err(|e| map_kube(&format!("create pod {ns}/{name}"), e).with_runtime(id))?;
        let agent = AgentRef {
            namespace: ns.clone(),
            pod: name.clone(),
            team: team.clone(),
        };
        self.agents.write().insert(id.to_string(), agent.clone());
        let timeout = spec
            .timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(self.cfg.spawn_timeout);
        let t_wait = Instant::now();
        let waited = tokio::time::timeout(
            timeout,
            kube::runtime::wait::await_condition(api.clone(), &name, settled),
        )
        .await;
        api_wait += t_wait.elapsed();
        let outcome = match waited {
            Ok(Ok(p)) => classify(p.as_ref()),
            Ok(Err(e)) => PodOutcome::Failed {
                reason: "WatchFailed".into(),
                message: chain(&e),
            },
            Err(_) => {
                let last = api.get_opt(&name).await.ok().flatten();
                let state = match classify(last.as_ref()) {
                    PodOutcome::Pending(s) => s,
                    other => format!("{other:?}"),
                };
                self.abandon(id, &agent).await;
                return Err(Error::timeout(format!(
                    "pod {ns}/{name} not running after {} s ({state})",
                    timeout.as_secs()
                ))
                .with_runtime(id));
            }
        };
        match outcome {
            PodOutcome::Running => {}
            PodOutcome::Failed { reason, message } => {
                self.abandon(id, &agent).await;
                let permanent = matches!(
                    reason.as_str(),
                    "ErrImagePull"
                        | "ImagePullBackOff"
                        | "InvalidImageName"
                        | "ErrImageNeverPull"
                        | "CreateContainerConfigError"
                );
                return Err(Error::spawn(format!(
                    "pod {ns}/{name} failed to start: {reason}: {message}"
                ))
                .retryable(!permanent)
                .with_runtime(id));
            }
            PodOutcome::Gone | PodOutcome::Pending(_) => {
                self.abandon(id, &agent).await;
                return Err(
                    Error::spawn(format!("pod {ns}/{name} was deleted while starting"))
                        .with_runtime(id),
                );
            }
        }
        if let Some(t) = self.timings.lock().as_mut() {
            t.push(SpawnTiming {
                total: t0.elapsed(),
                api_wait,
                create_rtt,
            });
        }
        Ok(Spawned {
            handle: handle(&agent),
            pid: None,
        })
    }

    /// Forget a runtime whose spawn failed and delete its pod.
    async fn abandon(&self, id: &str, agent: &AgentRef) {
        self.agents.write().remove(id);
        if let Err(e) = self.delete_pod(agent).await {
            tracing::warn!(
                "kata: cleaning up pod {}/{}: {e}",
                agent.namespace,
                agent.pod
            );
        }
    }

    pub async fn adopt(&self, id: &str, h: &Spawned) -> Result<Option<Spawned>> {
        let get = |k: &str| h.handle.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let (Some(namespace), Some(pod)) = (get("namespace"), get("pod")) else {
            return Err(Error::invalid(format!(
                "kata runtime {id}: handle lacks namespace/pod"
            )));
        };
        let agent = AgentRef {
            namespace,
            pod,
            team: get("team").unwrap_or_else(|| "default".into()),
        };
        let api: Api<Pod> = Api::namespaced(self.client()?, &agent.namespace);
        let found = api
            .get_opt(&agent.pod)
            .await
            .map_err(|e| map_kube(&format!("get pod {}/{}", agent.namespace, agent.pod), e))?;
        match classify(found.as_ref()) {
            PodOutcome::Running | PodOutcome::Pending(_) => {
                self.agents.write().insert(id.to_string(), agent.clone());
                Ok(Some(Spawned {
                    handle: handle(&agent),
                    pid: None,
                }))
            }
            _ => Ok(None),
        }
    }

    pub async fn terminate(&self, id: &str) -> Result<()> {
        let known = self.agents.write().remove(id);
        let targets = match known {
            Some(a) => vec![a],
            None => {
                // Not in memory (e.g. not adopted): find it by label.
                let Ok(client) = self.client() else {
                    return Ok(());
                };
                let lp = ListParams::default()
                    .labels(&format!("{AGENT_LABEL}={}", crate::names::label_value(id)));
                let pods = Api::<Pod>::all(client)
                    .list(&lp)
                    .await
                    .map_err(|e| map_kube(&format!("find pod of {id}"), e))?;
                pods.items
                    .into_iter()
                    .filter_map(|p| {
                        Some(AgentRef {
                            namespace: p.metadata.namespace?,
                            pod: p.metadata.name?,
                            team: String::new(),
                        })
                    })
                    .collect()
            }
        };
        for a in targets {
            self.delete_pod(&a).await.map_err(|e| e.with_runtime(id))?;
        }
        Ok(())
    }

    pub async fn status(&self, id: &str) -> Result<SandboxStatus> {
        let agent = self.agent(id)?;
        let api: Api<Pod> = Api::namespaced(self.client()?, &agent.namespace);
        let pod = api.get_opt(&agent.pod).await.map_err(|e| {
            map_kube(&format!("get pod {}/{}", agent.namespace, agent.pod), e).with_runtime(id)
        })?;
        let mut st = match (&pod, classify(pod.as_ref())) {
            (Some(p), _) if p.metadata.deletion_timestamp.is_some() => {
                SandboxStatus::new(SandboxState::Terminating)
            }
            (_, PodOutcome::Running) => SandboxStatus::new(SandboxState::Running),
            (_, PodOutcome::Pending(_)) => SandboxStatus::new(SandboxState::Creating),
            (_, PodOutcome::Failed { reason, message }) => {
                let mut s = SandboxStatus::new(SandboxState::Error);
                s.reason = Some(format!("{reason}: {message}"));
                s
            }
            (_, PodOutcome::Gone) => {
                let mut s = SandboxStatus::new(SandboxState::Error);
                s.reason = Some(format!(
                    "pod {}/{} no longer exists",
                    agent.namespace, agent.pod
                ));
                s
            }
        };
        st.details
            .insert("namespace".into(), json!(agent.namespace));
        st.details.insert("pod".into(), json!(agent.pod));
        st.details.insert("team".into(), json!(agent.team));
        if let Some(status) = pod.as_ref().and_then(|p| p.status.as_ref()) {
            st.details.insert("phase".into(), json!(status.phase));
            if let Some(ip) = &status.pod_ip {
                st.details.insert("pod_ip".into(), json!(ip));
            }
            let restarts: i32 = status
                .container_statuses
                .iter()
                .flatten()
                .map(|c| c.restart_count)
                .sum();
            st.details.insert("restarts".into(), json!(restarts));
        }
        if let Some(node) = pod
            .as_ref()
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.node_name.clone())
        {
            st.details.insert("node".into(), json!(node));
        }
        Ok(st)
    }

    pub async fn available(&self) -> Availability {
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => return Availability::no(e.message),
        };
        let info =
            match tokio::time::timeout(Duration::from_secs(3), client.apiserver_version()).await {
                Err(_) => {
                    return Availability::no(
                        "the Kubernetes API server did not answer /version within 3 s",
                    );
                }
                Ok(Err(e)) => {
                    return Availability::no(map_kube("Kubernetes API server /version", e).message);
                }
                Ok(Ok(info)) => info,
            };
        let rcs = Api::<RuntimeClass>::all(client);
        let rc = rcs.get_opt(&self.cfg.runtime_class);
        match tokio::time::timeout(Duration::from_secs(3), rc).await {
            Ok(Ok(None)) => Availability::no(format!(
                "Kubernetes {} answers, but RuntimeClass {:?} does not exist: install Kata (kata-deploy) or set kube.runtime_class",
                info.git_version, self.cfg.runtime_class
            )),
            Ok(Ok(Some(_))) => Availability::yes(format!(
                "Kubernetes {} with RuntimeClass {:?}",
                info.git_version, self.cfg.runtime_class
            ))
            .detail("server_version", info.git_version.clone())
            .detail("runtime_class", self.cfg.runtime_class.clone()),
            _ => Availability::yes(format!(
                "Kubernetes {} (RuntimeClass {:?} could not be checked)",
                info.git_version, self.cfg.runtime_class
            ))
            .detail("server_version", info.git_version.clone()),
        }
    }

    pub fn list_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.agents.read().keys().cloned().collect();
        ids.sort();
        ids
    }
}

fn handle(a: &AgentRef) -> BTreeMap<String, serde_json::Value> {
    BTreeMap::from([
        ("namespace".to_string(), json!(a.namespace)),
        ("pod".to_string(), json!(a.pod)),
        ("team".to_string(), json!(a.team)),
    ])
}
