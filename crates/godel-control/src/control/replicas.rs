//! Several daemons ("replicas") over one shared store: joining, the lease
//! each renews, and taking over the sandboxes of a replica whose lease ran
//! out.
//!
//! A replica registers before it reconciles, claims records that name no
//! owner, and from then on renews its lease every third of the lease
//! period. On the same tick it looks for replicas whose lease ran out; the
//! first to claim one in the store ([`crate::Store::take_over`]) owns its
//! live sandboxes. Remote ones (kata, e2b: `Capabilities::host_bound` is
//! false) are re-adopted through their provider; host-bound ones (worktree,
//! microvm) live on the dead replica's machine, so they are marked lost with
//! the reason. A replica that comes back before anyone claimed it keeps
//! everything; one that comes back later re-registers and starts empty.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use godel_core::{Error, Event, EventKind, Result};
use serde::Serialize;
use serde_json::json;

use super::Control;
use super::reconcile::ReconcileReport;
use crate::store::{ReplicaRecord, ReplicaRegistration, StoreInfo, Takeover};

/// How this daemon takes part in a group of replicas.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub registration: ReplicaRegistration,
    /// How long a lease lasts without renewal.
    pub lease: Duration,
}

/// `/v1/replicas`: the store, this replica and every replica known.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicasReport {
    pub store: StoreInfo,
    /// This daemon's replica id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub me: Option<String>,
    pub lease_secs: f64,
    pub replicas: Vec<ReplicaView>,
}

/// One replica, with whether its lease runs now.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaView {
    #[serde(flatten)]
    pub record: ReplicaRecord,
    pub live: bool,
}

/// Who answers a request for a sandbox ([`Control::route`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This replica.
    Here,
    /// Another live replica.
    Owner(Owner),
    /// Nobody yet: this replica's lease ran out, no survivor claimed it.
    Orphaned(String),
}

/// Where to send a request for a sandbox another replica owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub replica: String,
    pub advertise: String,
    pub advertise_e2b: String,
}

impl Control {
    /// This daemon's replica id, if it has one.
    pub fn replica_id(&self) -> Option<&str> {
        self.settings.replica_id.as_deref()
    }

    /// Register this replica and claim records that name no owner. Call
    /// before [`Control::reconcile`].
    pub fn join_replicas(&self, cfg: &ReplicaConfig) -> Result<()> {
        let me = &cfg.registration.id;
        if self.replica_id() != Some(me.as_str()) {
            return Err(Error::internal(format!(
                "replica {me} joins, but the control plane runs as {:?}",
                self.replica_id()
            )));
        }
        self.store
            .register_replica(&cfg.registration, lease_end(cfg.lease))?;
        *self.lease.lock() = Some(cfg.clone());
        *self.forward_token.lock() = Some(self.replica_token()?);
        let claimed = self.store.claim_unowned(me)?;
        if !claimed.is_empty() {
            tracing::info!(replica = %me, sandboxes = claimed.len(), "claimed sandboxes that named no replica");
        }
        Ok(())
    }

    /// The admin token this replica forwards Unix-socket requests with:
    /// kept in `$GODEL_HOME/replica-token` (0600) and reused while the
    /// store still accepts it, so restarts do not pile up tokens.
    fn replica_token(&self) -> Result<String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.home.join("replica-token");
        if let Ok(t) = std::fs::read_to_string(&path)
            && let Ok(Some(rec)) = self.store.find_token(t.trim())
            && rec.admin
        {
            return Ok(t.trim().to_string());
        }
        let (_, token) = self.store.create_token(None, true)?;
        let tmp = self.home.join("replica-token.tmp");
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(token.as_bytes()))
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| Error::io(format!("write {}", path.display()), &e))?;
        Ok(token)
    }

    /// Renew the lease and take over dead replicas, every third of a lease.
    pub fn start_lease(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let cfg = self.lease.lock().clone()?;
        let me = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(cfg.lease / 3);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(me) = me.upgrade() else { return };
                me.lease_tick(&cfg).await;
            }
        }))
    }

    /// One renewal and take-over pass.
    pub async fn lease_tick(&self, cfg: &ReplicaConfig) {
        let id = &cfg.registration.id;
        match self.store.renew_lease(id, lease_end(cfg.lease)) {
            Ok(()) => {}
            Err(e) if e.code == godel_core::ErrorCode::Conflict => {
                tracing::error!(replica = %id, "{}; registering again with nothing owned", e.message);
                if let Err(e) = self
                    .store
                    .register_replica(&cfg.registration, lease_end(cfg.lease))
                {
                    tracing::warn!(error = %e, "cannot register again");
                }
            }
            Err(e) => tracing::warn!(replica = %id, error = %e, "cannot renew the lease"),
        }
        if let Err(e) = self.take_over_dead().await {
            tracing::warn!(error = %e, "take-over pass failed");
        }
    }

    /// Release what is left of this replica's host-bound sandboxes that a
    /// survivor marked lost while it was gone (their jails or VMs may still
    /// run on this machine). Called once at start, after reconciling.
    pub async fn release_lost_while_away(&self) -> Vec<String> {
        let Some(me) = self.replica_id() else {
            return Vec::new();
        };
        let Ok(all) = self.store.list_sandboxes(None, true) else {
            return Vec::new();
        };
        let mut released = Vec::new();
        for rec in all.into_iter().filter(|r| {
            r.owner.as_deref() == Some(me)
                && r.state == godel_core::SandboxState::Error
                && r.reason
                    .as_deref()
                    .is_some_and(|w| w.contains("lost its lease"))
        }) {
            if let Ok(p) = self.provider(&rec.runtime)
                && p.terminate(&rec.id).await.is_ok()
            {
                released.push(rec.id);
            }
        }
        released
    }

    /// Claim every replica whose lease ran out; adopt or lose what it owned.
    pub async fn take_over_dead(&self) -> Result<Vec<ReconcileReport>> {
        let Some(me) = self.settings.replica_id.clone() else {
            return Ok(Vec::new());
        };
        let now = Utc::now();
        let mut out = Vec::new();
        for r in self.store.list_replicas()? {
            if r.id == me || r.taken_over_by.is_some() || r.lease_until >= now {
                continue;
            }
            let started = Instant::now();
            let Some(t) = self.store.take_over(&r.id, &me, now)? else {
                continue;
            };
            let report = self.adopt_taken_over(&t).await?;
            let ms = started.elapsed().as_millis() as u64;
            tracing::warn!(
                from = %t.from,
                adopted = report.adopted.len(),
                lost = report.lost.len(),
                ms,
                "took over a replica whose lease ran out"
            );
            self.emit(Event::new(EventKind::ReplicaTakeover).data(json!({
                "from": t.from,
                "to": me,
                "lease_until": r.lease_until,
                "adopted": report.adopted,
                "lost": report.lost,
                "ms": ms,
            })));
            out.push(report);
        }
        Ok(out)
    }

    async fn adopt_taken_over(&self, t: &Takeover) -> Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        let after = format!("replica {} lost its lease", t.from);
        for rec in &t.sandboxes {
            if rec.team == super::POOL_TEAM {
                // Warm sandboxes belong to the dead replica's pools, which
                // are gone with it: release them (ours keep our own).
                let _ = self.terminate(&super::Caller::Admin, &rec.id).await;
                report.finished_terminating.push(rec.id.clone());
                continue;
            }
            let host_bound = self
                .provider(&rec.runtime)
                .map(|p| p.capabilities().host_bound)
                .unwrap_or(true);
            if host_bound {
                let reason = format!(
                    "lost: {after}; a {} sandbox lives on that replica's machine",
                    rec.runtime
                );
                self.lose(&rec.id, &rec.team, &reason, &mut report);
                // Its processes and files are on the dead replica's machine:
                // the record goes back to it, to be released when it returns.
                self.store.set_owner(&rec.id, &t.from)?;
                continue;
            }
            self.adopt_record(rec.clone(), &after, &mut report).await?;
        }
        Ok(report)
    }

    /// Who answers a request for sandbox `id`: this replica (it owns it,
    /// nobody does, or it does not exist), its live owner, or nobody yet —
    /// its owner's lease ran out and no survivor has claimed it.
    pub fn route(&self, id: &str) -> Result<Route> {
        let Some(me) = self.replica_id() else {
            return Ok(Route::Here);
        };
        let Some(rec) = self.store.get_sandbox(id)? else {
            return Ok(Route::Here);
        };
        let Some(owner) = rec.owner.filter(|o| o != me) else {
            return Ok(Route::Here);
        };
        if rec.state.is_terminal() {
            return Ok(Route::Here);
        }
        match self.store.get_replica(&owner)? {
            Some(r) if r.live_at(Utc::now()) => Ok(Route::Owner(Owner {
                replica: r.id,
                advertise: r.advertise,
                advertise_e2b: r.advertise_e2b,
            })),
            Some(r) if r.taken_over_by.is_none() => Ok(Route::Orphaned(r.id)),
            _ => Ok(Route::Here),
        }
    }

    /// A request found `id` orphaned: take over every expired replica now
    /// (instead of at the next lease tick), then route it again. Still
    /// orphaned (another survivor is mid-claim): a retryable `UNAVAILABLE`.
    pub async fn route_after_takeover(&self, id: &str) -> Result<Route> {
        self.take_over_dead().await?;
        match self.route(id)? {
            Route::Orphaned(r) => Err(Error::new(
                godel_core::ErrorCode::Unavailable,
                format!(
                    "sandbox {id}: its replica {r} lost its lease and is being taken over; retry"
                ),
            )
            .with_runtime(id)),
            route => Ok(route),
        }
    }

    /// Which engine holds the state, and where.
    pub fn store_info(&self) -> StoreInfo {
        self.store.info()
    }

    /// The admin token this replica forwards Unix-socket requests with.
    pub fn forward_token(&self) -> Option<String> {
        self.forward_token.lock().clone()
    }

    /// The store, this replica and every replica known.
    pub fn replicas(&self) -> Result<ReplicasReport> {
        let now = Utc::now();
        Ok(ReplicasReport {
            store: self.store.info(),
            me: self.settings.replica_id.clone(),
            lease_secs: self
                .lease
                .lock()
                .as_ref()
                .map(|c| c.lease.as_secs_f64())
                .unwrap_or(0.0),
            replicas: self
                .store
                .list_replicas()?
                .into_iter()
                .map(|record| ReplicaView {
                    live: record.live_at(now),
                    record,
                })
                .collect(),
        })
    }
}

fn lease_end(lease: Duration) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(10))
}
