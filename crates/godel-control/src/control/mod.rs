//! `Control`: the actions every surface (REST, CLI, E2B) calls. It owns the
//! store, the snapshot store, the registered providers and the event bus, and
//! enforces team scoping: a team caller sees only its own runtimes and
//! snapshots; anything else is `NOT_FOUND`, exactly as if it did not exist.

mod activity;
mod budget;
mod expiry;
mod health;
mod lifecycle;
mod metering;
mod migrate;
mod network;
mod ops;
mod park;
mod policy;
mod pools;
mod reconcile;
mod replicas;
mod rollout;
mod snapshots;
mod store_check;
mod teams;
pub mod templates;

pub use activity::{Activity, ExecRecord, PoolFill, SpawnRates, UsageSample};
pub use budget::{BudgetRequest, BudgetStatus};
pub use metering::{UsageReport, UsageRequest, UsageRow};
pub use migrate::{MigrateRequest, MigrationMove, MigrationReport};
pub use park::PreserveReport;
pub use policy::{PolicyState, SpawnOptions};
pub use pools::POOL_TEAM;
pub use reconcile::ReconcileReport;
pub use replicas::{Owner, ReplicaConfig, ReplicaView, ReplicasReport, Route};
pub use rollout::{Rollout, RolloutRequest, RolloutState, StepStats};
pub use store_check::{KIND_DATABASE, KIND_RUNTIME, StoreCheck};
pub use teams::CreatedToken;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock, RwLockWriteGuard};
use std::time::Duration;

use godel_core::{
    Availability, Capabilities, Error, Event, EventSink, Result, RuntimeProvider, SandboxInfo,
};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

use crate::snapshot_store::SnapshotStore;
use crate::store::{Store, TeamRecord};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The Unix socket's owner or an admin token: sees everything.
    Admin,
    /// A team token: sees only the team's runtimes and snapshots.
    Team(String),
}

impl Caller {
    /// The team a spawn is charged to.
    pub fn spawn_team(&self, requested: Option<&str>, default_team: &str) -> Result<String> {
        match (self, requested) {
            (Caller::Admin, Some(t)) => Ok(t.to_string()),
            (Caller::Admin, None) => Ok(default_team.to_string()),
            (Caller::Team(own), Some(t)) if t != own => Err(Error::denied(format!(
                "a token of team {own} cannot act for team {t}"
            ))),
            (Caller::Team(own), _) => Ok(own.clone()),
        }
    }

    /// The team filter for listings (`None` = all).
    pub fn team_filter(&self) -> Option<&str> {
        match self {
            Caller::Admin => None,
            Caller::Team(t) => Some(t),
        }
    }

    pub fn sees(&self, team: &str) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Team(t) => t == team,
        }
    }

    pub fn require_admin(&self, what: &str) -> Result<()> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Team(t) => Err(Error::denied(format!(
                "{what} needs an admin token (caller is team {t})"
            ))),
        }
    }
}

/// Settings of the control plane.
#[derive(Debug, Clone)]
pub struct Settings {
    pub default_runtime: String,
    pub default_team: String,
    pub spawn_timeout: Duration,
    /// Forced process isolation for every spawn (`godel serve --isolation none`).
    pub isolation_override: Option<godel_core::Isolation>,
    /// The validated configuration file (teams, quotas, fallback, retry, circuits ...).
    pub config: godel_policy::Config,
    /// This daemon's replica id when several share the store: recorded as
    /// the owner of every sandbox it creates; reconciliation and the
    /// reapers act only on sandboxes it owns. `None`: the only daemon.
    pub replica_id: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_runtime: "worktree".into(),
            default_team: "default".into(),
            spawn_timeout: Duration::from_secs(120),
            isolation_override: None,
            config: godel_policy::Config::default(),
            replica_id: None,
        }
    }
}

/// A runtime kind the daemon knows but could not register, and why.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RuntimeReport {
    pub name: String,
    /// `runtime`, or `database` for the store's entry (admin callers only).
    #[serde(default = "runtime_kind")]
    pub kind: String,
    pub registered: bool,
    pub availability: Availability,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// The store's check, on the `database` entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<StoreCheck>,
}

fn runtime_kind() -> String {
    KIND_RUNTIME.into()
}

/// The control plane.
pub struct Control {
    home: PathBuf,
    store: Store,
    snapshots: SnapshotStore,
    providers: RwLock<BTreeMap<String, Arc<dyn RuntimeProvider>>>,
    unregistered: RwLock<BTreeMap<String, String>>,
    events: broadcast::Sender<Event>,
    settings: Settings,
    policy: policy::PolicyState,
    internal_events: Mutex<Option<mpsc::UnboundedReceiver<Event>>>,
    health: std::sync::OnceLock<health::HealthMonitors>,
    pools: std::sync::OnceLock<godel_policy::WarmPools>,
    /// This control plane, for background work it starts (webhooks).
    me: Weak<Control>,
    /// Exec output bytes counted since the last flush, per sandbox.
    meter_pending: metering::Pending,
    /// Rollouts by team (mirrored in the store).
    rollouts: Mutex<BTreeMap<String, rollout::Rollout>>,
    /// Recent commands, usage samples and spawn outcomes (in memory).
    activity: Arc<activity::Activity>,
    /// The runtime that builds templates (see [`templates`]).
    templates: std::sync::OnceLock<Arc<dyn godel_core::TemplateBuilder>>,
    /// Failed spawns whose `error` state could not be stored (a full disk):
    /// id → reason, stored by the reaper once the store takes writes again.
    unrecorded: Mutex<BTreeMap<String, String>>,
    /// This replica's lease, once it joined ([`Control::join_replicas`]).
    lease: Mutex<Option<replicas::ReplicaConfig>>,
    /// This replica's own admin token, for requests it forwards on behalf
    /// of Unix-socket callers (who present none).
    forward_token: Mutex<Option<String>>,
}

/// A sink for providers plus the receiver the control plane drains.
pub fn event_channel() -> (EventSink, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Arc::new(move |ev| drop(tx.send(ev))), rx)
}

impl Control {
    /// Open the control plane on `$GODEL_HOME`.
    pub fn open(home: &Path, settings: Settings) -> Result<Arc<Control>> {
        std::fs::create_dir_all(home)
            .map_err(|e| Error::io(format!("create {}", home.display()), &e))?;
        let store = Store::open(&home.join("godel.db"))?;
        Control::with_store(home, store, settings)
    }

    pub fn with_store(home: &Path, store: Store, settings: Settings) -> Result<Arc<Control>> {
        let snapshots = SnapshotStore::new(home.join("snapshots"))?;
        let (events, _) = broadcast::channel(4096);
        let (itx, irx) = mpsc::unbounded_channel();
        let policy = policy::PolicyState::new(settings.config.clone(), itx);
        let rollouts = rollout::load(&store)?;
        Ok(Arc::new_cyclic(|me| Control {
            me: me.clone(),
            meter_pending: Default::default(),
            rollouts: Mutex::new(rollouts),
            activity: Default::default(),
            unrecorded: Mutex::default(),
            lease: Mutex::default(),
            forward_token: Mutex::default(),
            policy,
            internal_events: Mutex::new(Some(irx)),
            health: std::sync::OnceLock::new(),
            pools: std::sync::OnceLock::new(),
            templates: std::sync::OnceLock::new(),
            home: home.to_path_buf(),
            store,
            snapshots,
            providers: RwLock::new(BTreeMap::new()),
            unregistered: RwLock::new(BTreeMap::new()),
            events,
            settings,
        }))
    }

    /// Use `clock` for metering, budgets and rollouts (tests install a manual one).
    pub fn set_clock(&self, clock: Arc<dyn crate::clock::Clock>) {
        self.store.set_clock(clock);
    }

    /// Now, by the control plane's clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.store.now()
    }

    /// Forward events from providers' sinks into the log and the bus.
    pub fn attach_event_receiver(self: &Arc<Self>, mut rx: mpsc::UnboundedReceiver<Event>) {
        let me = Arc::downgrade(self);
        let internal = self.internal_events.lock().take();
        if let Some(mut irx) = internal {
            let me = Arc::downgrade(self);
            tokio::spawn(async move {
                while let Some(ev) = irx.recv().await {
                    let Some(me) = me.upgrade() else { break };
                    me.emit(ev);
                }
            });
        }
        tokio::spawn(async move {
            while let Some(mut ev) = rx.recv().await {
                let Some(me) = me.upgrade() else { break };
                if ev.team.is_none()
                    && let Some(id) = &ev.runtime_id
                    && let Ok(Some(rec)) = me.store.get_sandbox(id)
                {
                    ev.team = Some(rec.team);
                }
                me.on_provider_event(&ev).await;
                me.emit(ev);
            }
        });
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Register a provider under its name.
    pub fn register(&self, provider: Arc<dyn RuntimeProvider>) {
        let name = provider.name().to_string();
        self.unregistered_mut().remove(&name);
        self.providers.write().insert(name, provider);
    }

    /// Note a runtime kind that could not be registered, with the reason.
    pub fn note_unregistered(&self, name: &str, reason: impl Into<String>) {
        self.unregistered_mut()
            .insert(name.to_string(), reason.into());
    }

    fn unregistered_mut(&self) -> RwLockWriteGuard<'_, BTreeMap<String, String>> {
        self.unregistered.write()
    }

    pub fn provider(&self, name: &str) -> Result<Arc<dyn RuntimeProvider>> {
        if let Some(p) = self.providers.read().get(name) {
            return Ok(p.clone());
        }
        let why = self.unregistered.read().get(name).cloned();
        match why {
            Some(why) => Err(Error::unavailable(format!(
                "runtime {name} is not available here: {why}"
            ))),
            None => Err(Error::invalid(format!(
                "unknown runtime {name:?}; registered: {}",
                self.provider_names().join(", ")
            ))),
        }
    }

    pub fn provider_names(&self) -> Vec<String> {
        self.providers.read().keys().cloned().collect()
    }

    /// Every known runtime kind with its availability (for `godel doctor`).
    pub async fn doctor(&self) -> Vec<RuntimeReport> {
        let providers: Vec<_> = self.providers.read().values().cloned().collect();
        let mut out = Vec::new();
        for p in providers {
            out.push(RuntimeReport {
                name: p.name().to_string(),
                kind: KIND_RUNTIME.into(),
                registered: true,
                availability: p.available().await,
                capabilities: Some(p.capabilities()),
                database: None,
            });
        }
        for (name, why) in self.unregistered.read().iter() {
            out.push(RuntimeReport {
                name: name.clone(),
                kind: KIND_RUNTIME.into(),
                registered: false,
                availability: Availability::no(why.clone()),
                capabilities: None,
                database: None,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Record an event and publish it to subscribers.
    pub fn emit(&self, ev: Event) {
        match self.store.append_event(&ev) {
            Ok(stored) => {
                let _ = self.events.send(stored);
            }
            Err(e) => tracing::warn!(error = %e, kind = %ev.kind, "could not store event"),
        }
    }

    /// Record a `state_changed` event of one runtime.
    pub(crate) fn emit_state(&self, id: &str, team: &str, data: serde_json::Value) {
        self.emit(
            Event::new(godel_core::EventKind::StateChanged)
                .runtime(id)
                .team(team)
                .data(data),
        );
    }

    /// Live events (after those already stored).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Stored events visible to the caller.
    pub fn events_since(&self, caller: &Caller, since: i64, limit: usize) -> Result<Vec<Event>> {
        self.store
            .list_events(since, caller.team_filter(), None, limit)
    }

    /// Stored events the caller may see, of one team and kind when asked.
    pub fn event_log(
        &self,
        caller: &Caller,
        since: i64,
        team: Option<&str>,
        kind: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let team = match (caller, team) {
            (Caller::Team(own), Some(t)) if t != own => {
                return Err(Error::denied(format!(
                    "a token of team {own} cannot read the events of team {t}"
                )));
            }
            (Caller::Team(own), _) => Some(own.as_str()),
            (Caller::Admin, t) => t,
        };
        if let Some(k) = kind
            && godel_core::EventKind::parse(k) == godel_core::EventKind::Unknown
        {
            return Err(Error::invalid(format!("kind: unknown event kind {k:?}")));
        }
        let mut out = self
            .store
            .list_events(since, team, None, limit.min(100_000))?;
        if let Some(k) = kind {
            out.retain(|e| e.kind == k);
        }
        Ok(out)
    }

    /// A team's record, or an unlimited default for teams not yet created.
    pub fn team_or_default(&self, team: &str) -> Result<TeamRecord> {
        Ok(self.store.get_team(team)?.unwrap_or_else(|| TeamRecord {
            name: team.to_string(),
            ..Default::default()
        }))
    }

    /// The runtime record if the caller may see it; `NOT_FOUND` otherwise.
    pub fn visible_sandbox(&self, caller: &Caller, id: &str) -> Result<SandboxInfo> {
        match self.store.get_sandbox(id)? {
            Some(r) if caller.sees(&r.team) => Ok(r),
            _ => Err(Error::not_found(format!("runtime {id} not found")).with_runtime(id)),
        }
    }

    /// Recent commands, usage samples and spawn outcomes.
    pub fn activity(&self) -> &activity::Activity {
        &self.activity
    }

    pub fn snapshot_store(&self) -> &SnapshotStore {
        &self.snapshots
    }
}
